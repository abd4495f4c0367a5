-- Promotion gates from policy: what the policy's [[promotion]] rule required of a registry
-- entry (NULL policy_rule: no rule applied, the plan's gate alone), and the approvals of a
-- checkpoint going live in a region, one per approver.
ALTER TABLE model_registry ADD COLUMN policy_rule TEXT;
ALTER TABLE model_registry ADD COLUMN policy_passed BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE model_registry ADD COLUMN policy_allow_override BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE model_registry ADD COLUMN approvals_needed BIGINT NOT NULL DEFAULT 0;

CREATE TABLE model_approvals (
    seq           INTEGER PRIMARY KEY,
    region        TEXT NOT NULL,
    model_name    TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    approver      TEXT NOT NULL,
    reason        TEXT NOT NULL,
    approved_at   TEXT NOT NULL,
    UNIQUE (region, model_name, checkpoint_id, approver)
);
-- Approvals are evidence: never changed or withdrawn through the store.
CREATE TRIGGER model_approvals_no_update BEFORE UPDATE ON model_approvals
BEGIN
    SELECT RAISE(ABORT, 'model_approvals is append-only');
END;
CREATE TRIGGER model_approvals_no_delete BEFORE DELETE ON model_approvals
BEGIN
    SELECT RAISE(ABORT, 'model_approvals is append-only');
END;
