//! Which of several coordinator processes sharing one store leads.
//!
//! Every coordinator takes the store's lease (`store/lease.rs`) before its first write:
//! one that finds it held by a live leader *stands by* (no listener, no engine, no write)
//! and tries again every third of the lease's length; the leader renews at the same pace.
//! When the leader dies, its lease runs out and a standby takes over within
//! `ttl + ttl/3`, recovering the leader's unfinished runs from the store exactly as a
//! restart would. Sidecars and CLIs find the new leader through their list of coordinator
//! addresses (or a stable address in front of all of them).
//!
//! A leader that loses the lease (another holds it: it stalled past its expiry) is
//! *deposed*: its store already refuses its writes by the fencing token, and
//! [`Leadership::deposed`] resolves so that the process stops serving. A leader that cannot
//! reach the store to renew gives up once its lease has run out by its own clock, since by
//! then a standby may lead.

use crate::store::lease::{Acquired, FencingToken, LeaseState};
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// The default lease length: a standby takes over within about 13 s of the leader's death.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Shortest lease allowed: renewals every third of it must fit the store's latency.
const MIN_TTL: Duration = Duration::from_millis(300);
/// Longest lease allowed (a standby waits up to this long after the leader's death).
const MAX_TTL: Duration = Duration::from_secs(600);

/// This coordinator's claim: its name in the lease and the lease's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Unique per process (a restarted process is a new holder).
    pub holder: String,
    pub ttl: Duration,
}

impl LeaseSettings {
    /// Validates the configured name and length; the name defaults to
    /// `<hostname>-<pid>-<random>`, the length to [`DEFAULT_TTL`].
    ///
    /// # Errors
    /// The offending key and why.
    pub fn new(node_name: Option<String>, ttl_seconds: Option<f64>) -> Result<Self, (&'static str, String)> {
        let ttl = match ttl_seconds {
            None => DEFAULT_TTL,
            Some(s) if s.is_finite() && (MIN_TTL.as_secs_f64()..=MAX_TTL.as_secs_f64()).contains(&s) => {
                Duration::from_secs_f64(s)
            }
            Some(s) => {
                return Err((
                    "lease_ttl_seconds",
                    format!("must be in [{}, {}] seconds, got {s}", MIN_TTL.as_secs_f64(), MAX_TTL.as_secs()),
                ));
            }
        };
        let holder = match node_name {
            Some(n) if !n.is_empty() && n.len() <= 128 && !n.chars().any(char::is_control) => n,
            Some(n) => return Err(("node_name", format!("{n:?} must be 1..=128 printable characters"))),
            None => {
                let host =
                    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "coordinator".into());
                format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
            }
        };
        Ok(Self { holder, ttl })
    }

    /// How often the leader renews and a standby asks again.
    pub fn interval(&self) -> Duration {
        self.ttl / 3
    }
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self::new(None, None).expect("the defaults are valid")
    }
}

/// The lease this process holds, kept renewed by a task of its own.
pub struct Leadership {
    store: Arc<dyn Store>,
    lease: LeaseState,
    /// `Some(reason)` once deposed.
    deposed: watch::Receiver<Option<String>>,
    /// Aborted when the leadership is dropped (a start that failed after acquiring).
    renewals: Option<JoinHandle<()>>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.renewals.take() {
            task.abort();
        }
    }
}

impl Leadership {
    /// Waits until this process holds the lease, standing by while another coordinator's
    /// is alive, then keeps it renewed. The store object is fenced from then on.
    ///
    /// # Errors
    /// Never for a held lease (it waits); store failures are retried, since a database
    /// that is briefly unreachable should not stop a standby.
    pub async fn acquire(store: Arc<dyn Store>, settings: &LeaseSettings) -> Result<Self, StoreError> {
        let mut last_seen: Option<LeaseState> = None;
        let (lease, asked) = loop {
            let asked = Instant::now();
            match store.acquire_lease(&settings.holder, settings.ttl).await {
                Ok(Acquired::Granted(lease)) => break (lease, asked),
                Ok(Acquired::HeldBy(held)) => {
                    if last_seen.as_ref().is_none_or(|l| l.token != held.token) {
                        info!(
                            leader = %held.holder,
                            token = %held.token,
                            until = %held.expires_at,
                            "standing by: another coordinator leads; taking over when its lease runs out"
                        );
                    }
                    last_seen = Some(held);
                }
                Err(e) => warn!(error = %e, "coordinator lease: the store is unreachable; retrying"),
            }
            tokio::time::sleep(settings.interval()).await;
        };
        info!(holder = %lease.holder, token = %lease.token, until = %lease.expires_at, "leading: this coordinator holds the lease");
        let (deposed_tx, deposed) = watch::channel(None);
        let renewals = tokio::spawn(renew(Arc::clone(&store), settings.clone(), lease.token, asked, deposed_tx));
        Ok(Self { store, lease, deposed, renewals: Some(renewals) })
    }

    /// The fencing token this process writes with.
    pub fn token(&self) -> FencingToken {
        self.lease.token
    }

    /// Resolves with the reason once this process no longer leads (never, while it does).
    pub fn deposed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.deposed.clone();
        async move {
            loop {
                if let Some(reason) = rx.borrow_and_update().clone() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    // The renewal task ended without a verdict: released on shutdown.
                    return std::future::pending().await;
                }
            }
        }
    }

    /// Stops renewing and ends the lease now, so that a standby takes over at once
    /// (graceful shutdown). A deposed leader's release changes nothing.
    pub async fn release(mut self) {
        if let Some(task) = self.renewals.take() {
            task.abort();
            let _ = task.await;
        }
        match self.store.release_lease(self.lease.token).await {
            Ok(()) => info!(token = %self.lease.token, "coordinator lease released"),
            Err(e) => {
                warn!(error = %e, "could not release the coordinator lease; a standby takes over when it expires")
            }
        }
    }

    /// Stops renewing without releasing (a crash, in tests: the lease runs out).
    pub fn abandon(self) {
        drop(self);
    }
}

/// Renews every third of the lease until deposed. `asked` is when the current lease was
/// requested by the local clock: the lease is surely valid until `asked + ttl`.
async fn renew(
    store: Arc<dyn Store>,
    settings: LeaseSettings,
    token: FencingToken,
    mut asked: Instant,
    deposed: watch::Sender<Option<String>>,
) {
    loop {
        tokio::time::sleep(settings.interval()).await;
        let now = Instant::now();
        match store.renew_lease(token, settings.ttl).await {
            Ok(_) => asked = now,
            Err(e @ StoreError::Fenced { .. }) => {
                error!(error = %e, "deposed: another coordinator took the lease");
                let _ = deposed.send(Some(e.to_string()));
                return;
            }
            Err(e) if Instant::now() >= asked + settings.ttl => {
                let reason = format!(
                    "the coordinator lease (token {token}) ran out without a renewal ({e}); a standby may lead now"
                );
                error!(%reason, "deposed");
                let _ = deposed.send(Some(reason));
                return;
            }
            Err(e) => warn!(error = %e, "could not renew the coordinator lease; retrying before it runs out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::store::lease::LeaseStore;

    fn settings(holder: &str) -> LeaseSettings {
        LeaseSettings::new(Some(holder.into()), Some(0.3)).unwrap()
    }

    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn settings_are_validated_with_the_key_named() {
        let d = LeaseSettings::new(None, None).unwrap();
        assert_eq!(d.ttl, DEFAULT_TTL);
        assert!(d.holder.contains(&std::process::id().to_string()), "{}", d.holder);
        assert_ne!(d.holder, LeaseSettings::new(None, None).unwrap().holder, "holders are unique per start");
        assert_eq!(LeaseSettings::new(None, Some(0.1)).unwrap_err().0, "lease_ttl_seconds");
        assert_eq!(LeaseSettings::new(None, Some(f64::NAN)).unwrap_err().0, "lease_ttl_seconds");
        assert_eq!(LeaseSettings::new(None, Some(601.0)).unwrap_err().0, "lease_ttl_seconds");
        assert_eq!(LeaseSettings::new(Some(String::new()), None).unwrap_err().0, "node_name");
        assert_eq!(LeaseSettings::new(Some("a\nb".into()), None).unwrap_err().0, "node_name");
        assert_eq!(settings("x").interval(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_standby_leads_once_the_leader_releases_and_fences_it() {
        let data = MemoryStore::new();
        let leader = Leadership::acquire(Arc::new(data.clone()), &settings("a")).await.unwrap();
        let peer = data.peer();
        let standby = tokio::spawn({
            let peer = peer.clone();
            async move { Leadership::acquire(Arc::new(peer), &settings("b")).await.unwrap() }
        });
        // The standby waits while the leader renews (several renewal intervals pass).
        let lease = data.lease().await.unwrap();
        assert_eq!(lease.holder, "a");
        assert!(!standby.is_finished());
        leader.release().await;
        let standby = tokio::time::timeout(BOUND, standby).await.unwrap().unwrap();
        assert_eq!(standby.token(), FencingToken(lease.token.0 + 1));
        // The old leader's handle is fenced.
        let run = crate::store::contract::run_record(crate::store::RunState::Queued);
        assert!(matches!(data.create_run(&run).await, Err(StoreError::Fenced { .. })));
        peer.create_run(&run).await.unwrap();
    }

    #[tokio::test]
    async fn a_leader_whose_lease_is_taken_over_is_deposed() {
        let data = MemoryStore::new();
        let leader = Leadership::acquire(Arc::new(data.clone()), &settings("a")).await.unwrap();
        let deposed = leader.deposed();
        // As if its lease had run out while it stalled: another coordinator takes it.
        data.release_lease(leader.token()).await.unwrap();
        let peer = data.peer();
        assert!(matches!(peer.acquire_lease("b", DEFAULT_TTL).await.unwrap(), Acquired::Granted(_)));
        let reason = tokio::time::timeout(BOUND, deposed).await.expect("deposed at its next renewal");
        assert!(reason.contains("superseded by token 2") && reason.contains("\"b\""), "{reason}");
    }
}
