-- Signed manifests and the regional model registry.
-- manifest.sig beside each manifest.json, kept with the record so that FetchCheckpoint can
-- hand verifiers the signature ('' for checkpoints written before manifests were signed).
ALTER TABLE checkpoints ADD COLUMN signature_json TEXT NOT NULL DEFAULT '';

-- One row per (region, model, checkpoint) that entered the region's registry: a run's
-- published checkpoint, a candidate first. At most one serving and one canary per
-- (region, model), enforced here as well as by the registry task.
CREATE TABLE model_registry (
    region          TEXT COLLATE "C" NOT NULL,
    model_name      TEXT COLLATE "C" NOT NULL,
    checkpoint_id   TEXT COLLATE "C" NOT NULL REFERENCES checkpoints (id),
    run_id          TEXT COLLATE "C" NOT NULL,
    round           BIGINT NOT NULL,
    state           TEXT NOT NULL,
    gate_passed     BOOLEAN NOT NULL,
    gate_detail     TEXT NOT NULL,
    accuracy        DOUBLE PRECISION,
    loss            DOUBLE PRECISION,
    eval_samples    BIGINT NOT NULL,
    canary_fraction DOUBLE PRECISION NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (region, model_name, checkpoint_id)
);
CREATE UNIQUE INDEX model_registry_one_serving ON model_registry (region, model_name) WHERE state = 'serving';
CREATE UNIQUE INDEX model_registry_one_canary ON model_registry (region, model_name) WHERE state = 'canary';

-- Every state change, in order, with who made it and why. Append-only like the audit log.
CREATE TABLE model_transitions (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL,
    region        TEXT COLLATE "C" NOT NULL,
    model_name    TEXT COLLATE "C" NOT NULL,
    checkpoint_id TEXT COLLATE "C" NOT NULL,
    from_state    TEXT,
    to_state      TEXT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL
);
CREATE INDEX model_transitions_key ON model_transitions (region, model_name, seq);
CREATE TRIGGER model_transitions_no_update BEFORE UPDATE ON model_transitions
    FOR EACH ROW EXECUTE FUNCTION fedra_append_only();
CREATE TRIGGER model_transitions_no_delete BEFORE DELETE ON model_transitions
    FOR EACH ROW EXECUTE FUNCTION fedra_append_only();
CREATE TRIGGER model_transitions_no_truncate BEFORE TRUNCATE ON model_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION fedra_append_only();
