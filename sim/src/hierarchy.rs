//! A federation in tiers, in one process: a global coordinator, one regional aggregator
//! per region (each a [`Cluster`] with its clients) and a byte-counting relay in front of
//! the global coordinator, through which every aggregator reaches it. All of them share
//! one throw-away CA.

use crate::cluster::{ClientSpec, Cluster, TierSpec};
use crate::proxy::CountingProxy;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// A client with a caller-provided trainer (scripted, held, faulty…).
pub struct CustomClient {
    pub id: String,
    pub info: fedra_client::data::DatasetInfo,
    pub trainer: Box<dyn fedra_client::trainer::Trainer>,
}

/// Builds a [`Hierarchy`].
#[derive(Default)]
pub struct HierarchyBuilder {
    regions: Vec<(String, Vec<ClientSpec>, Vec<CustomClient>)>,
    client_timeout: Option<Duration>,
    data_dir: Option<PathBuf>,
    /// The global coordinator's policy set and location.
    policy: Option<(PathBuf, String)>,
    /// Every regional aggregator's privacy budgets (the regions charge private runs).
    privacy_budgets: Vec<fedra_coordinator::privacy::budget::RawBudgetRule>,
    /// Regions whose aggregator runs as a child process of this binary.
    processes: Vec<(String, crate::cluster_process::ProcessSpec)>,
}

impl HierarchyBuilder {
    /// A region, its aggregator and its clients (their `region` must be `name`).
    pub fn region(mut self, name: &str, clients: Vec<ClientSpec>) -> Self {
        self.regions.push((name.to_string(), clients, Vec::new()));
        self
    }

    /// A region whose clients bring their own trainers.
    pub fn region_with(mut self, name: &str, clients: Vec<CustomClient>) -> Self {
        self.regions.push((name.to_string(), Vec::new(), clients));
        self
    }

    /// How long any tier waits for a silent participant (default 3 s): a restarted regional
    /// aggregator must be back within it to deliver its region's aggregate.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = Some(timeout);
        self
    }

    /// Run the global coordinator under the policy set in `dir`, located in `location`.
    pub fn policy(mut self, dir: impl Into<PathBuf>, location: &str) -> Self {
        self.policy = Some((dir.into(), location.to_string()));
        self
    }

    /// A privacy budget rule for every regional aggregator: the tier that adds a private
    /// run's noise charges its own ledger (`hierarchy::private_cohorts`).
    pub fn privacy_budget(mut self, rule: fedra_coordinator::privacy::budget::RawBudgetRule) -> Self {
        self.privacy_budgets.push(rule);
        self
    }

    /// Run region `name`'s aggregator as a child process of `spec.binary` (the real
    /// `fedra-coordinator`), so that it can be killed for real (crash points).
    pub fn region_process(mut self, name: &str, spec: crate::cluster_process::ProcessSpec) -> Self {
        self.processes.push((name.to_string(), spec));
        self
    }

    /// Keep every tier's state under `dir` instead of a temp dir.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Starts the global coordinator, the relay, then every region (aggregator and
    /// clients), and waits until the global coordinator sees every aggregator online with
    /// all of its clients.
    ///
    /// # Errors
    /// A tier that does not start, or aggregators that do not register within 60 s.
    pub async fn start(self) -> Result<Hierarchy> {
        let (tmp, root) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let pki = root.join("pki");
        let timeout = self.client_timeout.unwrap_or(Duration::from_secs(3));
        let mut global = Cluster::builder()
            .data_dir(root.join("global"))
            .pki_root(&pki)
            .heartbeat(Duration::from_millis(250), timeout)
            .tier(TierSpec::Global);
        if let Some((dir, location)) = &self.policy {
            global = global.policy(dir, location);
        }
        let global = global.start().await.context("starting the global coordinator")?;
        let proxy = CountingProxy::start(global.addr()).await?;
        let mut regions = Vec::new();
        let mut expected = 0u32;
        for (name, clients, custom) in self.regions {
            expected += (clients.len() + custom.len()) as u32;
            let mut builder = Cluster::builder()
                .data_dir(root.join(&name))
                .pki_root(&pki)
                .heartbeat(Duration::from_millis(250), timeout)
                .tier(TierSpec::Regional { location: name.clone(), upstream: proxy.endpoint() })
                .clients(clients);
            for rule in &self.privacy_budgets {
                builder = builder.privacy_budget(rule.clone());
            }
            if let Some((_, spec)) = self.processes.iter().find(|(n, _)| *n == name) {
                builder = builder.process(spec.clone());
            }
            let mut cluster = builder.start().await.with_context(|| format!("starting region {name}"))?;
            for c in custom {
                cluster.add_client_with(&c.id, &name, vec![c.info], c.trainer);
            }
            cluster.wait_connected(Duration::from_secs(60)).await?;
            regions.push(Region { name, cluster });
        }
        let hierarchy = Hierarchy { global, regions, proxy, _tmp: tmp };
        hierarchy.wait_registered(expected, Duration::from_secs(60)).await?;
        Ok(hierarchy)
    }
}

/// One region: its aggregator and clients.
pub struct Region {
    pub name: String,
    pub cluster: Cluster,
}

/// A running federation in tiers.
pub struct Hierarchy {
    pub global: Cluster,
    pub regions: Vec<Region>,
    proxy: CountingProxy,
    _tmp: Option<tempfile::TempDir>,
}

impl Hierarchy {
    pub fn builder() -> HierarchyBuilder {
        HierarchyBuilder::default()
    }

    /// Bytes the global coordinator has received from the aggregators so far (through
    /// the relay: TLS records, all RPCs).
    pub fn global_received_bytes(&self) -> u64 {
        self.proxy.to_target()
    }

    /// Bytes the global coordinator has sent to the aggregators so far.
    pub fn global_sent_bytes(&self) -> u64 {
        self.proxy.from_target()
    }

    pub fn region_mut(&mut self, name: &str) -> Option<&mut Region> {
        self.regions.iter_mut().find(|r| r.name == name)
    }

    /// Waits until the global coordinator has every aggregator online, standing for
    /// `clients` clients in all.
    ///
    /// # Errors
    /// Timeout, naming what the global coordinator sees.
    pub async fn wait_registered(&self, clients: u32, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.global.inventory().await?;
            if seen.clients >= clients {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the global coordinator sees {seen:?} after {timeout:?}, expected {clients} clients");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every region, then the global coordinator.
    pub async fn shutdown(self) {
        for r in self.regions {
            r.cluster.shutdown().await;
        }
        self.global.shutdown().await;
    }
}
