-- fedra store schema, version 1. Portable SQL: the same file is meant to run on SQLite
-- (embedded default) and PostgreSQL. Timestamps are RFC 3339 text in UTC.

CREATE TABLE runs (
    id                   TEXT PRIMARY KEY,
    plan_json            TEXT NOT NULL,
    state                TEXT NOT NULL,
    completed_rounds     BIGINT NOT NULL DEFAULT 0,
    published_checkpoint TEXT,
    failure              TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);

CREATE TABLE rounds (
    run_id        TEXT NOT NULL REFERENCES runs(id),
    round         BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    status        TEXT NOT NULL,
    selected      BIGINT NOT NULL,
    reported      BIGINT NOT NULL DEFAULT 0,
    samples       BIGINT NOT NULL DEFAULT 0,
    loss_before   DOUBLE PRECISION,
    loss_after    DOUBLE PRECISION,
    accuracy      DOUBLE PRECISION,
    checkpoint_id TEXT,
    failure       TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    PRIMARY KEY (run_id, round, attempt)
);

CREATE TABLE clients (
    id            TEXT PRIMARY KEY,
    region        TEXT NOT NULL,
    datasets_json TEXT NOT NULL,
    devices       TEXT NOT NULL,
    samples       BIGINT NOT NULL,
    registered_at TEXT NOT NULL
);

CREATE TABLE participations (
    run_id      TEXT NOT NULL,
    round       BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    client_id   TEXT NOT NULL,
    region      TEXT NOT NULL,
    status      TEXT NOT NULL,
    samples     BIGINT NOT NULL DEFAULT 0,
    loss_before DOUBLE PRECISION,
    loss_after  DOUBLE PRECISION,
    accuracy    DOUBLE PRECISION,
    update_norm DOUBLE PRECISION,
    detail      TEXT,
    PRIMARY KEY (run_id, round, attempt, client_id),
    FOREIGN KEY (run_id, round, attempt) REFERENCES rounds(run_id, round, attempt)
);

CREATE TABLE checkpoints (
    id            TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES runs(id),
    round         BIGINT NOT NULL,
    model_name    TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    parent_id     TEXT,
    manifest_json TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE checkpoint_locations (
    checkpoint_id TEXT NOT NULL REFERENCES checkpoints(id),
    region        TEXT NOT NULL,
    path          TEXT NOT NULL,
    PRIMARY KEY (checkpoint_id, region)
);

CREATE INDEX rounds_by_run ON rounds(run_id, round);
CREATE INDEX checkpoints_by_model ON checkpoints(model_name, run_id, round);
