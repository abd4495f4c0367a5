-- The audit log: append-only, hash-chained (fedra_types::audit). seq numbers entries
-- 1, 2, 3 … without gaps; hash covers prev_hash and every field, so an altered, inserted or
-- deleted row breaks the chain at or after it (`fedra audit verify`). seq is assigned by the
-- store from the chain's head (under a lock on this table), not by a sequence: a sequence
-- leaves gaps when a transaction rolls back.
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    actor     TEXT COLLATE "C" NOT NULL,
    action    TEXT NOT NULL,
    run_id    TEXT COLLATE "C",
    region    TEXT COLLATE "C",
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_run ON audit_log (run_id, seq);

-- Rows are never updated or deleted through the store; these refuse it at the database too,
-- as SQLite's RAISE(ABORT) triggers do (TRUNCATE included, which skips row triggers).
-- Someone who can drop the triggers can still change rows, which the hash chain then shows.
CREATE FUNCTION fedra_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION fedra_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION fedra_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION fedra_append_only();
