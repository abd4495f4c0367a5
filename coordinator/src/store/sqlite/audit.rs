//! The audit log's rows: appended in one write transaction that takes the write lock before
//! it reads the head (`write_tx`), so two appenders, even in two processes, never chain
//! onto the same head; listed oldest first.

use super::*;
use fedra_types::audit::AuditAction;

fn entry_of(r: &SqliteRow) -> Result<AuditEntry, StoreError> {
    let action: String = r.try_get("action")?;
    Ok(AuditEntry {
        seq: r.try_get("seq")?,
        draft: AuditDraft {
            at_ms: r.try_get("at_ms")?,
            actor: r.try_get("actor")?,
            action: action.parse::<AuditAction>().map_err(corrupt("audit action"))?,
            run: r.try_get("run_id")?,
            region: r.try_get("region")?,
            detail: r.try_get("detail")?,
        },
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Appends `drafts` inside `tx` (which holds the write lock: see `write_tx`), chained onto
/// the head it reads. Callers commit.
pub(super) async fn append_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    drafts: &[AuditDraft],
) -> Result<Vec<AuditEntry>, StoreError> {
    let head = sqlx::query("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut **tx).await?;
    let mut prev = head.as_ref().map(entry_of).transpose()?;
    let mut out = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let entry = AuditEntry::chain(prev.as_ref(), draft.clone());
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor, action, run_id, region, detail, prev_hash, hash)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.seq)
        .bind(entry.draft.at_ms)
        .bind(&entry.draft.actor)
        .bind(entry.draft.action.as_str())
        .bind(entry.draft.run.as_deref())
        .bind(entry.draft.region.as_deref())
        .bind(&entry.draft.detail)
        .bind(&entry.prev_hash)
        .bind(&entry.hash)
        .execute(&mut **tx)
        .await?;
        prev = Some(entry.clone());
        out.push(entry);
    }
    Ok(out)
}

impl SqliteStore {
    pub(super) async fn append_audit_entries(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditEntry>, StoreError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        let out = append_in(&mut tx, drafts).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn list_audit_entries(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log
             WHERE (? IS NULL OR run_id = ?)
               AND (? IS NULL OR region = ?)
               AND (? IS NULL OR actor = ?)
               AND (? IS NULL OR at_ms >= ?)
               AND (? IS NULL OR seq > ?)
             ORDER BY seq
             LIMIT ?",
        )
        .bind(f.run.as_ref().map(RunId::as_str))
        .bind(f.run.as_ref().map(RunId::as_str))
        .bind(f.region.as_ref().map(RegionId::as_str))
        .bind(f.region.as_ref().map(RegionId::as_str))
        .bind(f.actor.as_deref())
        .bind(f.actor.as_deref())
        .bind(f.since_ms)
        .bind(f.since_ms)
        .bind(f.after_seq)
        .bind(f.after_seq)
        .bind(f.limit.map_or(-1, i64::from))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_of).collect()
    }
}

impl SqliteStore {
    pub(super) async fn approve(&self, run: &RunId, approver: &str) -> Result<ApprovalCount, StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT state, approvals_needed FROM runs WHERE id = ?")
            .bind(run.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| refusal::no_run(run))?;
        let state: RunState = row.try_get("state")?;
        if state != RunState::PendingApproval {
            return Err(refusal::run_conflict(run, "approve", state));
        }
        let needed = u32_of(&row, "approvals_needed")?;
        sqlx::query("INSERT INTO run_approvals (run_id, approver, approved_at) VALUES (?, ?, ?)")
            .bind(run.as_str())
            .bind(approver)
            .bind(ts(&Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(insert_failed(
                || StoreError::AlreadyExists { what: "approval", id: format!("{run}/{approver}") },
                Some(run),
            ))?;
        let approvals: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_approvals WHERE run_id = ?")
            .bind(run.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let approvals = u32::try_from(approvals).map_err(corrupt("approval count"))?;
        let queued = approvals >= needed;
        if queued {
            sqlx::query("UPDATE runs SET state = ?, updated_at = ? WHERE id = ?")
                .bind(RunState::Queued)
                .bind(ts(&Utc::now()))
                .bind(run.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ApprovalCount { approvals, needed, queued })
    }
}
