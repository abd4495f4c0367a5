-- The privacy ledger: one row per (scope, round attempt) of a differentially private run.
-- Rows are written 'reserved' before a round's clients train and turned 'charged' when its
-- aggregate is released; both states count as spent and rows are never deleted, so a crash
-- can only make fedra over-count. cost_json holds the round's accountant cost (its zCDP rho
-- when no amplification is claimed, and its RDP curve).
CREATE TABLE privacy_ledger (
    scope              TEXT COLLATE "C" NOT NULL,
    model_name         TEXT COLLATE "C" NOT NULL,
    region             TEXT COLLATE "C" NOT NULL,
    run_id             TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    round              BIGINT NOT NULL,
    attempt            BIGINT NOT NULL,
    state              TEXT NOT NULL,
    accountant         TEXT NOT NULL,
    rho                DOUBLE PRECISION,
    cost_json          TEXT NOT NULL,
    noise_multiplier   DOUBLE PRECISION NOT NULL,
    clip_norm          DOUBLE PRECISION NOT NULL,
    sampling_rate      DOUBLE PRECISION NOT NULL,
    delta              DOUBLE PRECISION NOT NULL,
    epsilon_cumulative DOUBLE PRECISION NOT NULL,
    next_clip_norm     DOUBLE PRECISION,
    created_at         TIMESTAMPTZ NOT NULL,
    charged_at         TIMESTAMPTZ,
    PRIMARY KEY (scope, run_id, round, attempt)
);
CREATE INDEX privacy_ledger_run ON privacy_ledger (run_id, round, attempt);
