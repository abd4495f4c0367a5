-- Federated evaluation results: sample-weighted means of clients' held-out evaluations of
-- one round's checkpoint, overall (region = '') and per region.
CREATE TABLE evaluations (
    run_id   TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    round    BIGINT NOT NULL,
    region   TEXT COLLATE "C" NOT NULL,
    clients  BIGINT NOT NULL,
    samples  BIGINT NOT NULL,
    loss     DOUBLE PRECISION NOT NULL,
    accuracy DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, round, region)
);
