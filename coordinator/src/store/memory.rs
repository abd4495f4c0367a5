//! [`MemoryStore`]: the [`Store`] contract kept in process memory, for engine unit tests
//! that run on a paused tokio clock (no file, no blocking I/O, no real time spent).
//!
//! It is a model of [`SqliteStore`](super::SqliteStore), not a cache: the same refusals in
//! the same order of checks, the same orderings, timestamps kept to the microsecond like
//! the database's text columns. The shared contract suite runs against both, so a
//! difference is a failing test. Every method checks all it refuses before it changes
//! anything, which is how it stays atomic without transactions.

use super::*;
use crate::privacy::LedgerState;
use chrono::SubsecRound;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

mod lease;
mod registry;

/// A [`Store`] in memory. Cheap to clone; clones share the data.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    data: std::sync::Arc<Mutex<Data>>,
    /// Injected infrastructure failures: how many of the next `record_updates` calls fail.
    failing_update_writes: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// The lease token this handle's writes are checked against (`store/lease.rs`).
    fence: super::lease::Fence,
}

type AttemptKey = (RunId, u32, u32);
type ParticipationKey = (RunId, u32, u32, ClientId);

#[derive(Debug, Default)]
struct Data {
    runs: BTreeMap<RunId, RunRecord>,
    rounds: BTreeMap<AttemptKey, RoundRecord>,
    participations: BTreeMap<ParticipationKey, ParticipationRecord>,
    clients: BTreeMap<ClientId, ClientRecord>,
    checkpoints: BTreeMap<CheckpointId, CheckpointRecord>,
    /// `None` region = the overall mean, which sorts first like SQLite's `''`.
    evaluations: BTreeMap<(RunId, u32, Option<RegionId>), EvaluationRecord>,
    ledger: Vec<LedgerEntry>,
    audit: Vec<AuditEntry>,
    approvals: BTreeSet<(RunId, String)>,
    upstream: Vec<UpstreamTask>,
    registry: registry::RegistryData,
    lease: super::lease::LeaseState,
}

/// What the database keeps of a timestamp: microseconds.
fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn now() -> DateTime<Utc> {
    stored(Utc::now())
}

/// The ledger's primary key.
fn ledger_key(e: &LedgerEntry) -> (String, RunId, u32, u32) {
    (e.scope.to_string(), e.run.clone(), e.round, e.attempt)
}

/// The ledger's order, SQLite's `ORDER BY created_at, run_id, round, attempt, scope`.
fn sort_ledger(entries: &mut [LedgerEntry]) {
    entries.sort_by_cached_key(|e| {
        let (scope, run, round, attempt) = ledger_key(e);
        (e.created_at, run, round, attempt, scope)
    });
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fault injection: the next `n` calls of `record_updates` fail as a database outage
    /// would, writing nothing.
    pub fn fail_update_writes(&self, n: u32) {
        self.failing_update_writes.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Injected `record_updates` failures not yet consumed.
    pub fn update_write_failures_left(&self) -> u32 {
        self.failing_update_writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Another handle on the same data with a fence of its own, as a second coordinator
    /// process on one database has (the lease's contract tests).
    pub fn peer(&self) -> Self {
        Self { fence: super::lease::Fence::default(), ..self.clone() }
    }

    /// The data, for a write: refused once another handle took the lease over this one's.
    fn write(&self) -> Result<MutexGuard<'_, Data>, StoreError> {
        let d = self.data();
        self.fence.check(d.lease.token, &d.lease.holder)?;
        Ok(d)
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // Poisoned only by a panic under the lock, which already fails that test; other
        // clones keep working on the data as it was left.
        self.data.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Data {
    fn run_mut(&mut self, run: &RunId) -> Result<&mut RunRecord, StoreError> {
        self.runs.get_mut(run).ok_or_else(|| refusal::no_run(run))
    }

    /// The run, if it may still change (not terminal).
    fn open_run_mut(&mut self, run: &RunId, action: &str) -> Result<&mut RunRecord, StoreError> {
        let r = self.run_mut(run)?;
        if r.state.is_terminal() {
            return Err(refusal::run_conflict(run, action, r.state));
        }
        Ok(r)
    }

    /// The attempt, if it is in progress.
    fn open_round(&self, run: &RunId, round: u32, attempt: u32, action: &str) -> Result<&RoundRecord, StoreError> {
        let r =
            self.rounds.get(&(run.clone(), round, attempt)).ok_or_else(|| refusal::no_attempt(run, round, attempt))?;
        if r.status != RoundStatus::InProgress {
            return Err(refusal::attempt_conflict(run, round, attempt, action, r.status));
        }
        Ok(r)
    }

    /// Selected participations of one attempt become dropped, with `detail` when given.
    /// Marks an attempt's reservations charged; how many it changed.
    fn charge(&mut self, run: &RunId, round: u32, attempt: u32, next_clip_norm: Option<f64>) -> u64 {
        let mut n = 0;
        for e in self.ledger.iter_mut() {
            if e.run == *run && e.round == round && e.attempt == attempt && e.state == LedgerState::Reserved {
                e.state = LedgerState::Charged;
                e.next_clip_norm = next_clip_norm;
                n += 1;
            }
        }
        n
    }

    fn drop_selected(&mut self, run: &RunId, round: u32, attempt: u32, detail: Option<&str>) {
        for p in self.participations.values_mut() {
            if p.run == *run && p.round == round && p.attempt == attempt && p.status == ParticipationStatus::Selected {
                p.status = ParticipationStatus::Dropped;
                if let Some(d) = detail {
                    p.detail = Some(d.to_string());
                }
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut d = self.write()?;
        if d.runs.contains_key(&run.id) {
            return Err(refusal::run_exists(&run.id));
        }
        d.runs.insert(run.id.clone(), RunRecord { created_at: stored(run.created_at), ..run.clone() });
        Ok(())
    }

    async fn set_run_state(&self, run: &RunId, state: RunState, failure: Option<&str>) -> Result<(), StoreError> {
        let mut d = self.write()?;
        let r = d.open_run_mut(run, "set the state of")?;
        r.state = state;
        if let Some(f) = failure {
            r.failure = Some(f.to_string());
        }
        Ok(())
    }

    async fn get_run(&self, run: &RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.data().runs.get(run).cloned())
    }

    async fn list_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs: Vec<RunRecord> = self.data().runs.values().cloned().collect();
        runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(runs)
    }

    async fn list_runs_page(
        &self,
        owner: Option<&Identity>,
        after: Option<&RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let all = self.list_runs().await?;
        let start = match after {
            None => 0,
            Some(id) => match all.iter().position(|r| &r.id == id) {
                Some(i) => i + 1,
                None => return Ok(Vec::new()),
            },
        };
        Ok(all
            .into_iter()
            .skip(start)
            .filter(|r| owner.is_none_or(|o| r.owner.as_ref() == Some(o)))
            .take(limit)
            .collect())
    }

    async fn next_attempt(&self, run: &RunId, round: u32) -> Result<u32, StoreError> {
        let d = self.data();
        let rounds = d.rounds.keys().filter(|(r, n, _)| r == run && *n == round).map(|(_, _, a)| *a);
        let ledger = d.ledger.iter().filter(|e| &e.run == run && e.round == round).map(|e| e.attempt);
        Ok(rounds.chain(ledger).max().unwrap_or(0) + 1)
    }

    async fn begin_round(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        selected: &[(ClientId, RegionId)],
    ) -> Result<(), StoreError> {
        let mut d = self.write()?;
        d.open_run_mut(run, "begin a round of")?;
        let key = (run.clone(), round, attempt);
        if d.rounds.contains_key(&key) {
            return Err(refusal::attempt_exists(run, round, attempt));
        }
        let mut seen = BTreeSet::new();
        if let Some((client, _)) = selected.iter().find(|(c, _)| !seen.insert(c)) {
            return Err(refusal::participation_exists(run, round, attempt, client));
        }
        d.rounds.insert(
            key,
            RoundRecord {
                run: run.clone(),
                round,
                attempt,
                status: RoundStatus::InProgress,
                selected: selected.len() as u32,
                reported: 0,
                samples: 0,
                metrics: None,
                checkpoint: None,
                failure: None,
                started_at: now(),
                finished_at: None,
                energy: Vec::new(),
                cost: Vec::new(),
            },
        );
        for (client, region) in selected {
            d.participations.insert(
                (run.clone(), round, attempt, client.clone()),
                ParticipationRecord {
                    run: run.clone(),
                    round,
                    attempt,
                    client: client.clone(),
                    region: region.clone(),
                    status: ParticipationStatus::Selected,
                    samples: 0,
                    metrics: None,
                    update_norm: None,
                    detail: None,
                },
            );
        }
        Ok(())
    }

    async fn record_updates(&self, updates: &[ParticipationRecord]) -> Result<UpdatesOutcome, StoreError> {
        use std::sync::atomic::Ordering;
        if self.failing_update_writes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        let mut guard = self.write()?;
        let d = &mut *guard;
        let mut outcome = UpdatesOutcome::default();
        for u in updates {
            let key = (u.run.clone(), u.round, u.attempt, u.client.clone());
            let reason = match d.participations.get_mut(&key) {
                None => UpdateRefusal::NotSelected,
                Some(p) if p.status != ParticipationStatus::Selected => UpdateRefusal::Closed(p.status),
                Some(p) => {
                    p.status = ParticipationStatus::Reported;
                    p.samples = u.samples;
                    p.metrics = u.metrics;
                    p.update_norm = u.update_norm;
                    p.detail = u.detail.clone();
                    let r =
                        d.rounds.get_mut(&(u.run.clone(), u.round, u.attempt)).expect("a participation has its round");
                    r.reported += 1;
                    r.samples += u.samples;
                    outcome.recorded += 1;
                    continue;
                }
            };
            outcome.refused.push(RefusedUpdate {
                run: u.run.clone(),
                round: u.round,
                attempt: u.attempt,
                client: u.client.clone(),
                reason,
            });
        }
        Ok(outcome)
    }

    async fn fail_round(&self, run: &RunId, round: u32, attempt: u32, reason: &str) -> Result<(), StoreError> {
        let mut d = self.write()?;
        d.open_round(run, round, attempt, "fail")?;
        let r = d.rounds.get_mut(&(run.clone(), round, attempt)).expect("checked");
        r.status = RoundStatus::Failed;
        r.failure = Some(reason.to_string());
        r.finished_at = Some(now());
        d.drop_selected(run, round, attempt, None);
        Ok(())
    }

    async fn complete_round(&self, c: &RoundCompletion) -> Result<(), StoreError> {
        let mut d = self.write()?;
        d.open_round(&c.run, c.round, c.attempt, "complete")?;
        let run = d.open_run_mut(&c.run, "complete a round of")?;
        if u64::from(c.round) != u64::from(run.completed_rounds) + 1 {
            return Err(refusal::out_of_order(&c.run, c.round, run.completed_rounds));
        }
        let cp = &c.checkpoint;
        if d.checkpoints.contains_key(&cp.id) {
            return Err(refusal::checkpoint_exists(&cp.id));
        }
        if !d.runs.contains_key(&cp.run) {
            return Err(refusal::no_run(&cp.run));
        }
        let mut regions = BTreeSet::new();
        if let Some((region, _)) = cp.locations.iter().find(|(r, _)| !regions.insert(r)) {
            return Err(refusal::location_exists(&cp.id, region));
        }

        let finished = now();
        let r = d.rounds.get_mut(&(c.run.clone(), c.round, c.attempt)).expect("checked");
        r.status = RoundStatus::Done;
        r.reported = c.reported;
        r.samples = c.samples;
        r.metrics = Some(c.metrics);
        r.checkpoint = Some(cp.id.clone());
        r.finished_at = Some(finished);
        r.energy = c.energy.clone();
        r.cost = c.cost.clone();
        let mut locations = cp.locations.clone();
        locations.sort_by(|a, b| a.0.cmp(&b.0));
        d.checkpoints
            .insert(cp.id.clone(), CheckpointRecord { created_at: stored(cp.created_at), locations, ..cp.clone() });
        d.drop_selected(&c.run, c.round, c.attempt, None);
        let run = d.run_mut(&c.run)?;
        run.completed_rounds = c.round;
        if c.final_round {
            run.state = RunState::Succeeded;
            run.published_checkpoint = Some(cp.id.clone());
        } else {
            run.state = RunState::Running;
        }
        if let Some(charge) = c.charge {
            d.charge(&c.run, c.round, c.attempt, charge.next_clip_norm);
        }
        for draft in &c.audit {
            let entry = AuditEntry::chain(d.audit.last(), draft.clone());
            d.audit.push(entry);
        }
        Ok(())
    }

    async fn interrupt_open_rounds(&self) -> Result<u64, StoreError> {
        let mut d = self.write()?;
        let finished = now();
        let mut open = Vec::new();
        for r in d.rounds.values_mut().filter(|r| r.status == RoundStatus::InProgress) {
            r.status = RoundStatus::Interrupted;
            r.failure = Some(RESTARTED.to_string());
            r.finished_at = Some(finished);
            open.push((r.run.clone(), r.round, r.attempt));
        }
        for (run, round, attempt) in &open {
            d.drop_selected(run, *round, *attempt, Some(RESTARTED));
        }
        Ok(open.len() as u64)
    }

    async fn list_rounds(&self, run: &RunId) -> Result<Vec<RoundRecord>, StoreError> {
        // Keys sort by run, round, attempt.
        Ok(self.data().rounds.values().filter(|r| r.run == *run).cloned().collect())
    }

    async fn list_participations(&self, run: &RunId) -> Result<Vec<ParticipationRecord>, StoreError> {
        // Keys sort by run, round, attempt, client.
        Ok(self.data().participations.values().filter(|p| p.run == *run).cloned().collect())
    }

    async fn finish_run(&self, run: &RunId, published: &CheckpointId) -> Result<(), StoreError> {
        let mut d = self.write()?;
        let r = d.open_run_mut(run, "finish")?;
        r.state = RunState::Succeeded;
        r.published_checkpoint = Some(published.clone());
        Ok(())
    }

    async fn record_evaluations(&self, results: &[EvaluationRecord]) -> Result<(), StoreError> {
        let mut d = self.write()?;
        let mut batch = BTreeSet::new();
        for e in results {
            let key = (e.run.clone(), e.round, e.region.clone());
            // The same order of checks as one INSERT after the other.
            if d.evaluations.contains_key(&key) || !batch.insert(key) {
                return Err(refusal::evaluation_exists(e));
            }
            if !d.runs.contains_key(&e.run) {
                return Err(refusal::no_run(&e.run));
            }
        }
        for e in results {
            d.evaluations.insert((e.run.clone(), e.round, e.region.clone()), e.clone());
        }
        Ok(())
    }

    async fn list_evaluations(&self, run: &RunId) -> Result<Vec<EvaluationRecord>, StoreError> {
        Ok(self.data().evaluations.values().filter(|e| e.run == *run).cloned().collect())
    }

    async fn reject_update(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        client: &ClientId,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut d = self.write()?;
        let key = (run.clone(), round, attempt, client.clone());
        let p = d.participations.get_mut(&key).ok_or_else(|| refusal::no_participation(run, round, attempt, client))?;
        if p.status != ParticipationStatus::Selected {
            return Err(refusal::participation_conflict(run, round, attempt, client, "reject the update of", p.status));
        }
        p.status = ParticipationStatus::Rejected;
        p.detail = Some(reason.to_string());
        Ok(())
    }

    async fn reserve_privacy(&self, entries: &[LedgerEntry]) -> Result<(), StoreError> {
        let mut d = self.write()?;
        let stored_keys: BTreeSet<_> = d.ledger.iter().map(ledger_key).collect();
        let mut batch = BTreeSet::new();
        for e in entries {
            let key = ledger_key(e);
            if stored_keys.contains(&key) || !batch.insert(key) {
                return Err(refusal::ledger_entry_exists(e));
            }
            if !d.runs.contains_key(&e.run) {
                return Err(refusal::no_run(&e.run));
            }
        }
        let mut scopes: Vec<LedgerEntry> =
            d.ledger.iter().filter(|s| entries.iter().any(|e| e.scope == s.scope)).cloned().collect();
        sort_ledger(&mut scopes);
        super::reservations::check_claims(&scopes, entries)?;
        d.ledger.extend(entries.iter().map(|e| LedgerEntry { created_at: stored(e.created_at), ..e.clone() }));
        Ok(())
    }

    async fn charge_privacy(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        next_clip_norm: Option<f64>,
    ) -> Result<u64, StoreError> {
        Ok(self.write()?.charge(run, round, attempt, next_clip_norm))
    }

    async fn list_ledger(&self, filter: &LedgerFilter) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut entries: Vec<LedgerEntry> = self
            .data()
            .ledger
            .iter()
            .filter(|e| filter.scope.as_ref().is_none_or(|s| *s == e.scope))
            .filter(|e| filter.run.as_ref().is_none_or(|r| *r == e.run))
            .cloned()
            .collect();
        sort_ledger(&mut entries);
        Ok(entries)
    }

    async fn upsert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let record = ClientRecord { registered_at: stored(client.registered_at), ..client.clone() };
        self.write()?.clients.insert(client.id.clone(), record);
        Ok(())
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        Ok(self.data().clients.values().cloned().collect())
    }

    async fn get_checkpoint(&self, id: &CheckpointId) -> Result<Option<CheckpointRecord>, StoreError> {
        Ok(self.data().checkpoints.get(id).cloned())
    }

    async fn list_checkpoints(&self, filter: &CheckpointFilter) -> Result<Vec<CheckpointRecord>, StoreError> {
        let d = self.data();
        let mut out: Vec<(DateTime<Utc>, CheckpointRecord)> = d
            .checkpoints
            .values()
            .filter(|c| filter.model_name.as_ref().is_none_or(|m| *m == c.model_name))
            .filter(|c| filter.run.as_ref().is_none_or(|r| *r == c.run))
            .filter(|c| filter.region.as_ref().is_none_or(|r| c.locations.iter().any(|(l, _)| l == r)))
            .filter_map(|c| Some((d.runs.get(&c.run)?.created_at, c.clone())))
            .collect();
        out.sort_by(|(ta, a), (tb, b)| (ta, &a.run, a.round).cmp(&(tb, &b.run, b.round)));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn approve_run(&self, run: &RunId, approver: &str) -> Result<ApprovalCount, StoreError> {
        let mut d = self.write()?;
        let r = d.run_mut(run)?;
        if r.state != RunState::PendingApproval {
            return Err(refusal::run_conflict(run, "approve", r.state));
        }
        let needed = r.approvals_needed;
        if !d.approvals.insert((run.clone(), approver.to_string())) {
            return Err(StoreError::AlreadyExists { what: "approval", id: format!("{run}/{approver}") });
        }
        let approvals = d.approvals.iter().filter(|(r, _)| r == run).count() as u32;
        let queued = approvals >= needed;
        if queued {
            d.run_mut(run)?.state = RunState::Queued;
        }
        Ok(ApprovalCount { approvals, needed, queued })
    }

    async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditEntry>, StoreError> {
        let mut d = self.write()?;
        let mut out = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let entry = AuditEntry::chain(out.last().or(d.audit.last()), draft.clone());
            out.push(entry);
        }
        d.audit.extend(out.iter().cloned());
        Ok(out)
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let d = self.data();
        Ok(d.audit
            .iter()
            .filter(|e| f.run.as_ref().is_none_or(|r| e.draft.run.as_deref() == Some(r.as_str())))
            .filter(|e| f.region.as_ref().is_none_or(|r| e.draft.region.as_deref() == Some(r.as_str())))
            .filter(|e| f.actor.as_ref().is_none_or(|a| e.draft.actor == *a))
            .filter(|e| f.since_ms.is_none_or(|t| e.draft.at_ms >= t))
            .filter(|e| f.after_seq.is_none_or(|s| e.seq > s))
            .take(f.limit.map_or(usize::MAX, |n| n as usize))
            .cloned()
            .collect())
    }

    async fn create_cohort_run(
        &self,
        run: &RunRecord,
        initial: &CheckpointRecord,
        task: &UpstreamTask,
    ) -> Result<(), StoreError> {
        let mut d = self.write()?;
        if d.upstream.iter().any(|t| t.task == task.task) {
            return Err(upstream::refusal::exists(&task.task));
        }
        if d.runs.contains_key(&run.id) {
            return Err(refusal::run_exists(&run.id));
        }
        if d.checkpoints.contains_key(&initial.id) {
            return Err(refusal::checkpoint_exists(&initial.id));
        }
        if initial.run != run.id || task.run != run.id {
            return Err(refusal::no_run(&initial.run));
        }
        d.runs.insert(run.id.clone(), RunRecord { created_at: stored(run.created_at), ..run.clone() });
        d.checkpoints
            .insert(initial.id.clone(), CheckpointRecord { created_at: stored(initial.created_at), ..initial.clone() });
        d.upstream.push(UpstreamTask { created_at: stored(task.created_at), ..task.clone() });
        Ok(())
    }

    async fn list_upstream_tasks(&self) -> Result<Vec<UpstreamTask>, StoreError> {
        Ok(self.data().upstream.clone())
    }

    async fn end_upstream_task(
        &self,
        task: &crate::ids::TaskId,
        state: UpstreamState,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut d = self.write()?;
        let t = d.upstream.iter_mut().find(|t| t.task == *task).ok_or_else(|| upstream::refusal::missing(task))?;
        if t.state != UpstreamState::Training {
            return Err(upstream::refusal::ended(task, t.state));
        }
        t.state = state;
        t.detail = detail.map(str::to_string);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract guard: a handle to make peers of.
    struct Peers(MemoryStore);

    #[async_trait]
    impl crate::store::contract::OpenPeer for Peers {
        async fn open_peer(&self) -> Box<dyn Store> {
            Box::new(self.0.peer())
        }
    }

    crate::store::contract::store_contract_tests!(memory_contract, async {
        let store = MemoryStore::new();
        let peers = Peers(store.clone());
        (store, peers)
    });
}
