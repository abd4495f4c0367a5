-- Regional aggregators.
-- On a global coordinator a participant may be a region's aggregator: `members` is how many
-- clients it can draw a cohort from (its inventory; 1 for a client sidecar).
ALTER TABLE clients ADD COLUMN members BIGINT NOT NULL DEFAULT 1;
-- On a regional aggregator: each cohort task received from the global coordinator, the
-- local one-round run that serves it (whose initial checkpoint is the global model it was
-- sent), and whether its aggregate has been accepted upstream. It lets a restarted
-- aggregator finish and resend what it owes, and never serve one task twice.
CREATE TABLE upstream_tasks (
    task_id        TEXT COLLATE "C" PRIMARY KEY,
    run_id         TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES runs (id),
    upstream_run   TEXT COLLATE "C" NOT NULL,
    upstream_round BIGINT NOT NULL,
    state          TEXT NOT NULL,
    detail         TEXT,
    created_at     TIMESTAMPTZ NOT NULL
);
