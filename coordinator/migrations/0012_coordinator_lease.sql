-- The coordinator lease: of several coordinator processes sharing this store, the one
-- holding the lease leads (runs rounds, writes); the others stand by until it expires.
-- Each acquisition increments `token`, the fencing token: every write transaction of a
-- leader checks that the token is still its own, so that a deposed leader's late writes
-- are refused, never applied. Times are the database's clock in milliseconds since the
-- epoch, so that coordinators on hosts with skewed clocks agree on expiry.
CREATE TABLE coordinator_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
INSERT INTO coordinator_lease (id, holder, token, expires_at_ms) VALUES (1, '', 0, 0);
