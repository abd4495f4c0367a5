-- fedra store schema, version 1, in PostgreSQL's dialect. coordinator/migrations/ holds the
-- SQLite schema; both directories carry the same versions and descriptions (a unit test in
-- store/postgres/tests.rs checks it), and each migration here means what its namesake there
-- means. Differences are of dialect only: timestamps are TIMESTAMPTZ (microseconds, as
-- SQLite's RFC 3339 text keeps them), integers BIGINT, and text that is a key or an order
-- sorts bytewise (COLLATE "C"), as SQLite's BINARY collation does, whatever the database's
-- default collation is.

CREATE TABLE runs (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    plan_json            TEXT NOT NULL,
    state                TEXT NOT NULL,
    completed_rounds     BIGINT NOT NULL DEFAULT 0,
    published_checkpoint TEXT COLLATE "C",
    failure              TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);

CREATE TABLE rounds (
    run_id        TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    round         BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    status        TEXT NOT NULL,
    selected      BIGINT NOT NULL,
    reported      BIGINT NOT NULL DEFAULT 0,
    samples       BIGINT NOT NULL DEFAULT 0,
    loss_before   DOUBLE PRECISION,
    loss_after    DOUBLE PRECISION,
    accuracy      DOUBLE PRECISION,
    checkpoint_id TEXT COLLATE "C",
    failure       TEXT,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    PRIMARY KEY (run_id, round, attempt)
);

CREATE TABLE clients (
    id            TEXT COLLATE "C" PRIMARY KEY,
    region        TEXT COLLATE "C" NOT NULL,
    datasets_json TEXT NOT NULL,
    devices       TEXT NOT NULL,
    samples       BIGINT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE participations (
    run_id      TEXT COLLATE "C" NOT NULL,
    round       BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    client_id   TEXT COLLATE "C" NOT NULL,
    region      TEXT COLLATE "C" NOT NULL,
    status      TEXT NOT NULL,
    samples     BIGINT NOT NULL DEFAULT 0,
    loss_before DOUBLE PRECISION,
    loss_after  DOUBLE PRECISION,
    accuracy    DOUBLE PRECISION,
    update_norm DOUBLE PRECISION,
    detail      TEXT,
    PRIMARY KEY (run_id, round, attempt, client_id),
    FOREIGN KEY (run_id, round, attempt) REFERENCES rounds (run_id, round, attempt)
);

CREATE TABLE checkpoints (
    id            TEXT COLLATE "C" PRIMARY KEY,
    run_id        TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    round         BIGINT NOT NULL,
    model_name    TEXT COLLATE "C" NOT NULL,
    sha256        TEXT NOT NULL,
    parent_id     TEXT COLLATE "C",
    manifest_json TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE checkpoint_locations (
    checkpoint_id TEXT COLLATE "C" NOT NULL REFERENCES checkpoints (id),
    region        TEXT COLLATE "C" NOT NULL,
    path          TEXT NOT NULL,
    PRIMARY KEY (checkpoint_id, region)
);

CREATE INDEX rounds_by_run ON rounds (run_id, round);
CREATE INDEX checkpoints_by_model ON checkpoints (model_name, run_id, round);
