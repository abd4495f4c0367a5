-- The policy set a run was admitted under, and how many distinct approvals it needs before
-- it leaves pending_approval (0: none); the approvals themselves, one per approver.
ALTER TABLE runs ADD COLUMN policy_sha256 TEXT;
ALTER TABLE runs ADD COLUMN approvals_needed BIGINT NOT NULL DEFAULT 0;
CREATE TABLE run_approvals (
    run_id      TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    approver    TEXT COLLATE "C" NOT NULL,
    approved_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, approver)
);
