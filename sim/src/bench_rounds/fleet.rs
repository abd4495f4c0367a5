//! The benchmark's sidecars: N real `fedra-client` sessions in this process, one gRPC
//! connection each (or one in-process link each, `--transport inproc`), started in batches
//! and stopped together.

use super::{CONNECT_BATCH, TrivialTrainer};
use anyhow::{Context, Result, bail};
use fedra_client::data::DatasetInfo;
use fedra_client::session::{Sidecar, SidecarSettings, SidecarStatus};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub(super) struct Fleet {
    pub(super) stops: Vec<oneshot::Sender<()>>,
    pub(super) joins: Vec<JoinHandle<()>>,
    pub(super) status: Vec<watch::Receiver<SidecarStatus>>,
}

impl Fleet {
    /// Starts `n` sidecars in batches, waiting for each batch to connect; their data has the
    /// model's `(input_dim, classes)`.
    pub(super) async fn start(
        endpoint: &str,
        ids: &[(String, String)],
        tls: Vec<fedra_pki::ClientTls>,
        shape: (usize, usize),
        seed: u64,
    ) -> Result<Self> {
        Self::start_via(endpoint, ids, tls, shape, seed, None).await
    }

    /// [`Fleet::start`], the sidecars reaching the coordinator through `inproc` when given
    /// (their endpoint and TLS are then unused).
    pub(super) async fn start_via(
        endpoint: &str,
        ids: &[(String, String)],
        tls: Vec<fedra_pki::ClientTls>,
        (input_dim, classes): (usize, usize),
        seed: u64,
        inproc: Option<&crate::inproc::Switchboard>,
    ) -> Result<Self> {
        let n = ids.len();
        let mut tls = tls.into_iter();
        let mut fleet = Fleet { stops: Vec::new(), joins: Vec::new(), status: Vec::new() };
        for start in (0..n).step_by(CONNECT_BATCH) {
            let end = (start + CONNECT_BATCH).min(n);
            for (i, (id, region)) in ids.iter().enumerate().take(end).skip(start) {
                let settings = SidecarSettings {
                    endpoints: vec![endpoint.to_string()],
                    tls: tls.next().context("one identity per sidecar")?,
                    client_id: id.clone(),
                    region: region.clone(),
                    devices: vec!["cpu".into()],
                    backoff_initial: Duration::from_millis(100),
                    backoff_max: Duration::from_secs(2),
                };
                let info = DatasetInfo {
                    name: "trivial".into(),
                    samples: 1,
                    features: input_dim as u32,
                    classes: classes as u32,
                };
                let client_seed = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (i as u64).wrapping_mul(0x9E37_79B9);
                let mut sidecar = Sidecar::new(settings, vec![info], Box::new(TrivialTrainer::new(client_seed)));
                if let Some(switchboard) = inproc {
                    sidecar = sidecar.with_connector(switchboard.connector(id, region));
                }
                fleet.status.push(sidecar.status());
                let (stop, stopped) = oneshot::channel::<()>();
                fleet.stops.push(stop);
                fleet.joins.push(tokio::spawn(async move {
                    let _ = sidecar
                        .run(async {
                            let _ = stopped.await;
                        })
                        .await;
                }));
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let missing = fleet.status[start..end].iter().filter(|s| !s.borrow().connected).count();
                if missing == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    let err = fleet.status[start..end].iter().find_map(|s| s.borrow().last_error.clone());
                    bail!("{missing} of sidecars {start}..{end} not connected after 120 s (last error: {err:?})");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(fleet)
    }

    pub(super) fn totals(&self) -> (u32, u32) {
        self.status.iter().fold((0, 0), |(sessions, failed), s| {
            let s = s.borrow();
            (sessions + s.sessions.saturating_sub(1), failed + s.tasks_failed)
        })
    }

    pub(super) async fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for j in self.joins {
            let _ = j.await;
        }
    }
}
