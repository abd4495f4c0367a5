-- Promotion gates from policy: what the policy's [[promotion]] rule required of a registry
-- entry (NULL policy_rule: no rule applied, the plan's gate alone), and the approvals of a
-- checkpoint going live in a region, one per approver.
ALTER TABLE model_registry ADD COLUMN policy_rule TEXT;
ALTER TABLE model_registry ADD COLUMN policy_passed BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE model_registry ADD COLUMN policy_allow_override BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE model_registry ADD COLUMN approvals_needed BIGINT NOT NULL DEFAULT 0;

CREATE TABLE model_approvals (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region        TEXT COLLATE "C" NOT NULL,
    model_name    TEXT COLLATE "C" NOT NULL,
    checkpoint_id TEXT COLLATE "C" NOT NULL,
    approver      TEXT COLLATE "C" NOT NULL,
    reason        TEXT NOT NULL,
    approved_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (region, model_name, checkpoint_id, approver)
);
-- Approvals are evidence: never changed or withdrawn through the store.
CREATE TRIGGER model_approvals_no_update BEFORE UPDATE ON model_approvals
    FOR EACH ROW EXECUTE FUNCTION fedra_append_only();
CREATE TRIGGER model_approvals_no_delete BEFORE DELETE ON model_approvals
    FOR EACH ROW EXECUTE FUNCTION fedra_append_only();
CREATE TRIGGER model_approvals_no_truncate BEFORE TRUNCATE ON model_approvals
    FOR EACH STATEMENT EXECUTE FUNCTION fedra_append_only();
