//! The audit log's rows, and run approvals. Appends lock the table against other writers
//! (`SHARE ROW EXCLUSIVE`: readers go on) before they read the head, so two appenders, even
//! in two processes, never chain onto the same head; the lock is the last one a transaction
//! takes. Listed oldest first.

use super::*;
use fedra_types::audit::AuditAction;

fn entry_of(r: &PgRow) -> Result<AuditEntry, StoreError> {
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

/// Appends `drafts` inside `tx`, chained onto the head it reads under the table lock.
/// Callers commit. Nothing to append takes no lock.
pub(super) async fn append_in(
    tx: &mut sqlx::PgConnection,
    drafts: &[AuditDraft],
) -> Result<Vec<AuditEntry>, StoreError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let head = sqlx::query("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
    let mut prev = head.as_ref().map(entry_of).transpose()?;
    let mut out = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let entry = AuditEntry::chain(prev.as_ref(), draft.clone());
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor, action, run_id, region, detail, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        .execute(&mut *tx)
        .await?;
        prev = Some(entry.clone());
        out.push(entry);
    }
    Ok(out)
}

impl PgStore {
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
             WHERE ($1::text IS NULL OR run_id = $1)
               AND ($2::text IS NULL OR region = $2)
               AND ($3::text IS NULL OR actor = $3)
               AND ($4::bigint IS NULL OR at_ms >= $4)
               AND ($5::bigint IS NULL OR seq > $5)
             ORDER BY seq
             LIMIT $6",
        )
        .bind(f.run.as_ref().map(RunId::as_str))
        .bind(f.region.as_ref().map(RegionId::as_str))
        .bind(f.actor.as_deref())
        .bind(f.since_ms)
        .bind(f.after_seq)
        // LIMIT NULL is no limit.
        .bind(f.limit.map(i64::from))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_of).collect()
    }

    /// The run row is locked first: two approvers count each other, and exactly the one
    /// that completes the count queues the run.
    pub(super) async fn approve(&self, run: &RunId, approver: &str) -> Result<ApprovalCount, StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT state, approvals_needed FROM runs WHERE id = $1 FOR UPDATE")
            .bind(run.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| refusal::no_run(run))?;
        let state: RunState = row.try_get("state")?;
        if state != RunState::PendingApproval {
            return Err(refusal::run_conflict(run, "approve", state));
        }
        let needed = u32_of(&row, "approvals_needed")?;
        sqlx::query("INSERT INTO run_approvals (run_id, approver, approved_at) VALUES ($1, $2, $3)")
            .bind(run.as_str())
            .bind(approver)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(insert_failed(
                || StoreError::AlreadyExists { what: "approval", id: format!("{run}/{approver}") },
                Some(run),
            ))?;
        let approvals: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_approvals WHERE run_id = $1")
            .bind(run.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let approvals = u32::try_from(approvals).map_err(corrupt("approval count"))?;
        let queued = approvals >= needed;
        if queued {
            sqlx::query("UPDATE runs SET state = $1, updated_at = $2 WHERE id = $3")
                .bind(RunState::Queued)
                .bind(Utc::now())
                .bind(run.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ApprovalCount { approvals, needed, queued })
    }
}
