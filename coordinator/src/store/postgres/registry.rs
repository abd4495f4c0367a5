//! The model registry's rows. A change locks every (region, model) it touches (advisory
//! locks, in key order) before it reads or writes: registry commands on one model serialise
//! across processes as the registry task serialises them in one, so a move's check of the
//! entry's state holds until it commits.

use super::*;
use crate::registry::{
    Approval, ModelState, PolicyGate, RegionEval, RegistryChange, RegistryEntry, RegistryFilter, Transition, Verdict,
};
use crate::store::registry::{RegistryStore, refusal};

fn state_of(row: &PgRow, col: &str) -> Result<ModelState, StoreError> {
    let text: String = row.try_get(col)?;
    ModelState::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{col}: unknown model state {text:?}")))
}

fn entry_of(row: &PgRow) -> Result<RegistryEntry, StoreError> {
    let accuracy: Option<f64> = row.try_get("accuracy")?;
    let loss: Option<f64> = row.try_get("loss")?;
    let samples: i64 = row.try_get("eval_samples")?;
    Ok(RegistryEntry {
        region: RegionId::new(row.try_get::<String, _>("region")?).map_err(corrupt("region"))?,
        model: row.try_get("model_name")?,
        checkpoint: CheckpointId::new(row.try_get::<String, _>("checkpoint_id")?).map_err(corrupt("checkpoint id"))?,
        run: RunId::new(row.try_get::<String, _>("run_id")?).map_err(corrupt("run id"))?,
        round: u32_of(row, "round")?,
        state: state_of(row, "state")?,
        gate: Verdict { passed: row.try_get("gate_passed")?, detail: row.try_get("gate_detail")? },
        eval: match (accuracy, loss) {
            (Some(accuracy), Some(loss)) => {
                Some(RegionEval { accuracy, loss, samples: u64::try_from(samples).map_err(corrupt("eval_samples"))? })
            }
            _ => None,
        },
        canary_fraction: row.try_get("canary_fraction")?,
        updated_at: row.try_get("updated_at")?,
        policy: match row.try_get::<Option<String>, _>("policy_rule")? {
            None => None,
            Some(rule) => Some(PolicyGate {
                rule,
                passed: row.try_get("policy_passed")?,
                allow_override: row.try_get("policy_allow_override")?,
                approvals_needed: u32_of(row, "approvals_needed")?,
            }),
        },
        approvers: Vec::new(),
    })
}

fn transition_of(row: &PgRow) -> Result<Transition, StoreError> {
    Ok(Transition {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        region: RegionId::new(row.try_get::<String, _>("region")?).map_err(corrupt("region"))?,
        model: row.try_get("model_name")?,
        checkpoint: CheckpointId::new(row.try_get::<String, _>("checkpoint_id")?).map_err(corrupt("checkpoint id"))?,
        from: row
            .try_get::<Option<String>, _>("from_state")?
            .is_some()
            .then(|| state_of(row, "from_state"))
            .transpose()?,
        to: state_of(row, "to_state")?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
    })
}

async fn record_transition(
    tx: &mut sqlx::PgConnection,
    at: DateTime<Utc>,
    (region, model, checkpoint): (&RegionId, &str, &CheckpointId),
    from: Option<ModelState>,
    to: ModelState,
    change: &RegistryChange,
) -> Result<Transition, StoreError> {
    let row = sqlx::query(
        "INSERT INTO model_transitions (at, region, model_name, checkpoint_id, from_state, to_state, actor, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
    )
    .bind(at)
    .bind(region.as_str())
    .bind(model)
    .bind(checkpoint.as_str())
    .bind(from.map(ModelState::as_str))
    .bind(to.as_str())
    .bind(&change.actor)
    .bind(&change.reason)
    .fetch_one(&mut *tx)
    .await?;
    transition_of(&row)
}

async fn insert_approval(tx: &mut sqlx::PgConnection, at: DateTime<Utc>, a: &Approval) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO model_approvals (region, model_name, checkpoint_id, approver, reason, approved_at)
         SELECT $1, $2, $3, $4, $5, $6
         WHERE EXISTS (SELECT 1 FROM model_registry WHERE region = $1 AND model_name = $2 AND checkpoint_id = $3)",
    )
    .bind(a.region.as_str())
    .bind(&a.model)
    .bind(a.checkpoint.as_str())
    .bind(&a.approver)
    .bind(&a.reason)
    .bind(at)
    .execute(&mut *tx)
    .await
    .map_err(insert_failed(|| refusal::approved(a), None))
    .and_then(|done| if done.rows_affected() == 0 { Err(refusal::unapproved(a)) } else { Ok(()) })
}

/// The (region, model) keys a change touches, sorted and distinct: the order its locks
/// are taken in.
fn models_of(change: &RegistryChange) -> Vec<String> {
    let mut keys: Vec<String> = change
        .inserts
        .iter()
        .map(|e| format!("{}/{}", e.region, e.model))
        .chain(change.approvals.iter().map(|a| format!("{}/{}", a.region, a.model)))
        .chain(change.moves.iter().map(|m| format!("{}/{}", m.region, m.model)))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[async_trait]
impl RegistryStore for PgStore {
    async fn registry_entries(&self, f: &RegistryFilter) -> Result<Vec<RegistryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM model_registry
             WHERE ($1::text IS NULL OR region = $1) AND ($2::text IS NULL OR model_name = $2)
               AND ($3 OR state IN ('candidate', 'canary', 'serving'))
             ORDER BY region, model_name, checkpoint_id",
        )
        .bind(f.region.as_ref().map(RegionId::as_str))
        .bind(f.model.as_deref())
        .bind(f.all)
        .fetch_all(&self.pool)
        .await?;
        let mut entries = rows.iter().map(entry_of).collect::<Result<Vec<_>, _>>()?;
        let approvals = sqlx::query(
            "SELECT region, model_name, checkpoint_id, approver FROM model_approvals
             WHERE ($1::text IS NULL OR region = $1) AND ($2::text IS NULL OR model_name = $2) ORDER BY seq",
        )
        .bind(f.region.as_ref().map(RegionId::as_str))
        .bind(f.model.as_deref())
        .fetch_all(&self.pool)
        .await?;
        for row in &approvals {
            let (region, model, checkpoint): (String, String, String) =
                (row.try_get("region")?, row.try_get("model_name")?, row.try_get("checkpoint_id")?);
            let approver: String = row.try_get("approver")?;
            if let Some(e) = entries
                .iter_mut()
                .find(|e| e.region.as_str() == region && e.model == model && e.checkpoint.as_str() == checkpoint)
            {
                e.approvers.push(approver);
            }
        }
        Ok(entries)
    }

    async fn registry_history(&self, f: &RegistryFilter) -> Result<Vec<Transition>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM model_transitions
             WHERE ($1::text IS NULL OR region = $1) AND ($2::text IS NULL OR model_name = $2) ORDER BY seq",
        )
        .bind(f.region.as_ref().map(RegionId::as_str))
        .bind(f.model.as_deref())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(transition_of).collect()
    }

    async fn apply_registry(&self, change: &RegistryChange) -> Result<Vec<Transition>, StoreError> {
        let mut tx = self.write_tx().await?;
        for key in models_of(change) {
            advisory_lock(&mut tx, &format!("model_registry/{key}")).await?;
        }
        let at = Utc::now();
        let mut out = Vec::new();
        for e in &change.inserts {
            sqlx::query(
                "INSERT INTO model_registry (region, model_name, checkpoint_id, run_id, round, state, gate_passed,
                     gate_detail, accuracy, loss, eval_samples, canary_fraction, updated_at, policy_rule,
                     policy_passed, policy_allow_override, approvals_needed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            )
            .bind(e.region.as_str())
            .bind(&e.model)
            .bind(e.checkpoint.as_str())
            .bind(e.run.as_str())
            .bind(i64::from(e.round))
            .bind(e.state.as_str())
            .bind(e.gate.passed)
            .bind(&e.gate.detail)
            .bind(e.eval.map(|v| v.accuracy))
            .bind(e.eval.map(|v| v.loss))
            .bind(e.eval.map_or(0, |v| i64::try_from(v.samples).unwrap_or(i64::MAX)))
            .bind(e.canary_fraction)
            .bind(at)
            .bind(e.policy.as_ref().map(|p| p.rule.as_str()))
            .bind(e.policy.as_ref().is_none_or(|p| p.passed))
            .bind(e.policy.as_ref().is_none_or(|p| p.allow_override))
            .bind(i64::from(e.approvals_needed()))
            .execute(&mut *tx)
            .await
            .map_err(insert_failed(|| refusal::exists(e), None))?;
            out.push(
                record_transition(&mut tx, at, (&e.region, &e.model, &e.checkpoint), None, e.state, change).await?,
            );
        }
        for a in &change.approvals {
            insert_approval(&mut tx, at, a).await?;
        }
        for m in &change.moves {
            let current: Option<String> = sqlx::query_scalar(
                "SELECT state FROM model_registry WHERE region = $1 AND model_name = $2 AND checkpoint_id = $3",
            )
            .bind(m.region.as_str())
            .bind(&m.model)
            .bind(m.checkpoint.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let current = current
                .map(|s| ModelState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown model state {s:?}"))))
                .transpose()?;
            match current {
                None => return Err(refusal::missing(m)),
                Some(state) if state != m.from => return Err(refusal::moved(m, state)),
                Some(_) => {}
            }
            sqlx::query(
                "UPDATE model_registry SET state = $1, canary_fraction = COALESCE($2, canary_fraction), updated_at = $3
                 WHERE region = $4 AND model_name = $5 AND checkpoint_id = $6",
            )
            .bind(m.to.as_str())
            .bind(m.canary_fraction)
            .bind(at)
            .bind(m.region.as_str())
            .bind(&m.model)
            .bind(m.checkpoint.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| if is_unique_violation(&e) { refusal::second(m) } else { e.into() })?;
            out.push(
                record_transition(&mut tx, at, (&m.region, &m.model, &m.checkpoint), Some(m.from), m.to, change)
                    .await?,
            );
        }
        append_in(&mut tx, &change.audit).await?;
        tx.commit().await?;
        Ok(out)
    }
}
