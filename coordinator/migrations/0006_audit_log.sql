-- The audit log: append-only, hash-chained (fedra_types::audit). seq numbers entries
-- 1, 2, 3 … without gaps; hash covers prev_hash and every field, so an altered, inserted or
-- deleted row breaks the chain at or after it (`fedra audit verify`).
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    run_id TEXT,
    region TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_run ON audit_log (run_id, seq);

-- Rows are never updated or deleted through the store; these refuse it at the database too
-- (someone with write access to the file can drop them, which the hash chain then shows).
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
