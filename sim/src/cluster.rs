//! An in-process federation: one coordinator plus N client sidecars, each a tokio task
//! with its own gRPC connection to the coordinator's loopback port, or with
//! [`Transport::Inproc`] an in-process link to it ([`crate::inproc`]).

use crate::cluster_process::{CoordinatorChild, ProcessSpec, ProcessTls, free_port};
use crate::inproc::{Switchboard, Transport};
use crate::pki::SimPki;
use anyhow::{Context, Result};
use fedra_cli::control::ControlClient;
use fedra_client::data::{Dataset, DatasetInfo};
use fedra_client::session::{Sidecar, SidecarSettings, SidecarStatus, UploadFaults};
use fedra_client::trainer::Trainer;
use fedra_client::trainer::burn_logreg::{BurnTrainer, DeviceChoice, DeviceError};
use fedra_coordinator::Coordinator;
use fedra_coordinator::config::Config;
use fedra_coordinator::privacy::Budgets;
use fedra_coordinator::privacy::budget::RawBudgetRule;
use fedra_types::identity::{Identity, Role};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// One client to start: identity plus its local data.
pub struct ClientSpec {
    pub id: String,
    pub region: String,
    pub dataset: Dataset,
    /// Local held-out split for federated evaluation, if any.
    pub holdout: Option<Dataset>,
}

/// A change to the coordinator's config before it starts ([`ClusterBuilder::configure`]).
type Configure = Box<dyn FnOnce(&mut Config) + Send>;

/// Builds a [`Cluster`].
pub struct ClusterBuilder {
    data_dir: Option<PathBuf>,
    clients: Vec<ClientSpec>,
    heartbeat: Duration,
    client_timeout: Duration,
    chunk_bytes: Option<usize>,
    max_concurrent_uploads: Option<usize>,
    max_concurrent_downloads: Option<usize>,
    max_connections_per_identity: Option<usize>,
    policy: Option<fedra_coordinator::governance::PolicyConfig>,
    privacy_budgets: Vec<RawBudgetRule>,
    device: DeviceChoice,
    pki_root: Option<PathBuf>,
    tier: TierSpec,
    process: Option<ProcessSpec>,
    carbon_file: Option<PathBuf>,
    store_url: Option<String>,
    standby: bool,
    artifacts: Option<fedra_coordinator::config::ArtifactsConfig>,
    configure: Option<Configure>,
    web: Option<fedra_coordinator::config::web::WebConfig>,
    transport: Transport,
}

/// Which tier a cluster's coordinator serves (see `fedra_coordinator::hierarchy`).
#[derive(Debug, Clone, Default)]
pub enum TierSpec {
    #[default]
    Standalone,
    Global,
    /// A regional aggregator of `location` under the global coordinator at `upstream`.
    Regional {
        location: String,
        upstream: String,
    },
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            data_dir: None,
            clients: Vec::new(),
            heartbeat: Duration::from_millis(250),
            client_timeout: Duration::from_secs(3),
            chunk_bytes: None,
            max_concurrent_uploads: None,
            max_concurrent_downloads: None,
            max_connections_per_identity: None,
            policy: None,
            privacy_budgets: Vec::new(),
            device: DeviceChoice::Cpu,
            pki_root: None,
            tier: TierSpec::Standalone,
            process: None,
            carbon_file: None,
            store_url: None,
            standby: false,
            artifacts: None,
            configure: None,
            web: None,
            transport: Transport::Grpc,
        }
    }
}

impl ClusterBuilder {
    /// Where the builder's clients train (`fedra-client --device`); a GPU needs a build with
    /// fedra-sim's `cuda` or `wgpu` feature, and `start` fails naming the device otherwise.
    pub fn device(mut self, device: DeviceChoice) -> Self {
        self.device = device;
        self
    }

    /// Keep coordinator state (SQLite file, artifacts) in `dir` instead of a temp dir.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
    pub fn client(mut self, spec: ClientSpec) -> Self {
        self.clients.push(spec);
        self
    }
    pub fn clients(mut self, specs: impl IntoIterator<Item = ClientSpec>) -> Self {
        self.clients.extend(specs);
        self
    }
    pub fn heartbeat(mut self, every: Duration, timeout: Duration) -> Self {
        self.heartbeat = every;
        self.client_timeout = timeout;
        self
    }
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = Some(bytes);
        self
    }
    pub fn max_concurrent_uploads(mut self, n: usize) -> Self {
        self.max_concurrent_uploads = Some(n);
        self
    }
    pub fn max_concurrent_downloads(mut self, n: usize) -> Self {
        self.max_concurrent_downloads = Some(n);
        self
    }
    /// Run under the policy set in `dir` (`policy_dir`), the coordinator located in
    /// `location`. Privacy budgets then come from the set only.
    ///
    /// # Panics
    /// `location` is not a valid region name.
    pub fn policy(mut self, dir: impl Into<PathBuf>, location: &str) -> Self {
        let location = fedra_types::ids::RegionId::new(location).expect("valid region name");
        self.policy =
            Some(fedra_coordinator::governance::PolicyConfig { dir: dir.into(), location, aggregate_in_region: false });
        self
    }

    /// Open connections one certified identity may hold (`tls.max_connections_per_identity`).
    pub fn max_connections_per_identity(mut self, n: usize) -> Self {
        self.max_connections_per_identity = Some(n);
        self
    }

    /// Keep the throw-away CA in `dir` instead of `<data_dir>/pki`: clusters built on one
    /// root trust each other (the tiers of a hierarchy).
    pub fn pki_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pki_root = Some(dir.into());
        self
    }

    /// The coordinator's tier (`role`, and `[upstream]` for a regional aggregator, whose
    /// certificate `regional-aggregator/<location>/agg-<location>` the cluster's CA issues).
    pub fn tier(mut self, tier: TierSpec) -> Self {
        self.tier = tier;
        self
    }

    /// Run the coordinator as a child process of `spec.binary` (the real
    /// `fedra-coordinator`) instead of in this process, so that it can be killed for real.
    /// Standalone tier only, without config-file privacy budgets (use a policy set) or
    /// connection limits.
    pub fn process(mut self, spec: ProcessSpec) -> Self {
        self.process = Some(spec);
        self
    }

    /// Adjusts the coordinator's validated config before it starts, for settings without a
    /// method of their own (e.g. `engine.prices`).
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// The coordinator's carbon-intensity feed (`carbon_file`, see `fedra_coordinator::carbon`).
    pub fn carbon_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.carbon_file = Some(path.into());
        self
    }

    /// Keep the coordinator's store at `url` (the `store_url` setting: `sqlite://PATH` or
    /// `postgres://…`) instead of `<data_dir>/fedra.db`; `start` fails on a URL the
    /// coordinator would refuse. Restarts reopen the same store.
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store_url = Some(url.into());
        self
    }

    /// A second coordinator process on the same store and directories, standing by while
    /// the first leads (see `fedra_coordinator::leadership`); the clients know both
    /// addresses. Needs [`Self::process`] and a store both can open ([`Self::store_url`]).
    pub fn with_standby(mut self) -> Self {
        self.standby = true;
        self
    }

    /// Publish checkpoints into `artifacts` (the `[artifacts]` setting: a default store and
    /// one per region) instead of `<data_dir>/artifacts`. In-process coordinators only.
    pub fn artifacts(mut self, artifacts: fedra_coordinator::config::ArtifactsConfig) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// Serves the dashboard (`[web]`) of an in-process coordinator; port 0 picks one, kept
    /// across restarts ([`Cluster::web_addr`]).
    pub fn web(mut self, web: fedra_coordinator::config::web::WebConfig) -> Self {
        self.web = Some(web);
        self
    }

    /// How the sidecars reach the coordinator (gRPC by default); in-process needs the
    /// coordinator in this process. The control API stays gRPC either way.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Privacy budgets, as the `[[privacy.budgets]]` rules of a coordinator config.
    pub fn privacy_budget(mut self, rule: RawBudgetRule) -> Self {
        self.privacy_budgets.push(rule);
        self
    }

    /// Starts the coordinator, then every client, and waits until all clients have
    /// registered.
    ///
    /// # Errors
    /// Coordinator start failures or clients that do not connect within 30 s.
    pub async fn start(self) -> Result<Cluster> {
        let (tmp, data_dir) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        // A throw-away CA: the cluster runs mutual TLS like a deployment does.
        let pki = SimPki::create(&self.pki_root.clone().unwrap_or_else(|| data_dir.join("pki")))?;
        let mut config = Config::local(&data_dir, &pki.coordinator().dir, Some(&pki.crl()));
        match &self.tier {
            TierSpec::Standalone => {}
            TierSpec::Global => config.engine.tier = fedra_coordinator::hierarchy::Tier::Global,
            TierSpec::Regional { location, upstream } => {
                let region = fedra_types::ids::RegionId::new(location.as_str())?;
                let name = format!("agg-{location}");
                let identity = Identity::new(Role::RegionalAggregator, Some(region.clone()), &name)?;
                config.engine.tier = fedra_coordinator::hierarchy::Tier::Regional { location: region };
                config.upstream = Some(fedra_coordinator::config::topology::UpstreamConfig {
                    url: upstream.clone(),
                    name: fedra_types::ids::ClientId::new(name)?,
                    tls_dir: Some(pki.identity_dir(&identity)?),
                });
            }
        }
        if let Some(url) = &self.store_url {
            config.store =
                fedra_coordinator::store::StoreLocation::parse(url).map_err(|e| anyhow::anyhow!("store_url: {e}"))?;
        }
        if let Some(artifacts) = self.artifacts {
            config.artifacts = artifacts;
        }
        config.engine.heartbeat_interval = self.heartbeat;
        config.engine.client_timeout = self.client_timeout;
        if let Some(c) = self.chunk_bytes {
            config.engine.chunk_bytes = c;
        }
        if let Some(n) = self.max_concurrent_uploads {
            config.max_concurrent_uploads = n;
        }
        if let Some(n) = self.max_concurrent_downloads {
            config.max_concurrent_downloads = n;
        }
        if let (Some(n), fedra_coordinator::config::Transport::Mutual { max_connections_per_identity, .. }) =
            (self.max_connections_per_identity, &mut config.transport)
        {
            *max_connections_per_identity = n;
        }
        config.engine.privacy.budgets = Budgets::new(self.privacy_budgets).context("privacy budgets")?;
        if let Some(path) = &self.carbon_file {
            config.engine.carbon = Some(Arc::new(fedra_coordinator::carbon::CarbonSignal::open(path)?));
        }
        if let Some(f) = self.configure {
            f(&mut config);
        }
        config.web = self.web;
        config.policy = self.policy.map(|mut p| {
            p.aggregate_in_region = config.engine.tier.is_global();
            p
        });
        let tls = ProcessTls { dir: pki.coordinator().dir.clone(), crl: pki.crl() };
        if self.transport == Transport::Inproc && self.process.is_some() {
            anyhow::bail!("in-process sidecars need the coordinator in this process, not a child process");
        }
        let switchboard = Switchboard::default();
        let coordinator = match &self.process {
            None => {
                let c = Coordinator::start(&config).await.context("starting coordinator")?;
                switchboard.set(Some(c.in_process_fleet()));
                // Restarts must come back on the same port so that clients reconnect to it.
                config.listen = c.addr();
                if let (Some(web), Some(addr)) = (&mut config.web, c.web_addr()) {
                    web.listen = addr;
                }
                Running::InProcess(Box::new(c))
            }
            Some(spec) => {
                if matches!(self.tier, TierSpec::Global)
                    || !config.engine.privacy.budgets.is_empty()
                    || self.max_connections_per_identity.is_some()
                    || config.web.is_some()
                {
                    anyhow::bail!(
                        "a coordinator process supports the standalone and regional tiers, without config budgets, connection limits or a dashboard"
                    );
                }
                config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
                Running::Child(CoordinatorChild::spawn(spec, &config, &tls).await?)
            }
        };
        let standby = match (&self.process, self.standby) {
            (_, false) => None,
            (None, true) => anyhow::bail!("a standby coordinator needs the coordinator to run as a process"),
            (Some(spec), true) => {
                let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
                let standby_config = Config { listen, ..config.clone() };
                Some((listen, Some(CoordinatorChild::spawn_standby(spec, &standby_config, &tls).await?)))
            }
        };
        let mut cluster = Cluster {
            coordinator: Some(coordinator),
            standby,
            config,
            clients: Vec::new(),
            pki,
            process: self.process.map(|spec| (spec, tls)),
            transport: self.transport,
            switchboard,
            _tmp: tmp,
        };
        for spec in self.clients {
            cluster.add_client_on(spec, self.device)?;
        }
        cluster.wait_connected(Duration::from_secs(30)).await?;
        Ok(cluster)
    }
}

/// A running client sidecar.
pub struct ClientHandle {
    pub id: String,
    pub region: String,
    pub status: watch::Receiver<SidecarStatus>,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
}

impl ClientHandle {
    /// Stops the sidecar (as if its process exited); stopping it again does nothing.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
            let _ = (&mut self.join).await;
        }
    }
}

/// The cluster's coordinator: in this process, or a child process.
pub(crate) enum Running {
    InProcess(Box<Coordinator>),
    Child(CoordinatorChild),
}

impl Running {
    async fn kill(self) {
        match self {
            Running::InProcess(c) => c.kill().await,
            Running::Child(c) => c.kill(),
        }
    }
}

/// A coordinator plus clients, in this process (the coordinator may be a child process).
pub struct Cluster {
    pub(crate) coordinator: Option<Running>,
    /// The standby coordinator's address and process ([`ClusterBuilder::with_standby`]).
    pub(crate) standby: Option<(std::net::SocketAddr, Option<CoordinatorChild>)>,
    config: Config,
    clients: Vec<ClientHandle>,
    pki: SimPki,
    /// How to start the coordinator as a process, when it runs as one.
    pub(crate) process: Option<(ProcessSpec, ProcessTls)>,
    transport: Transport,
    /// The in-process coordinator's fleet API, for [`Transport::Inproc`] sidecars.
    pub(crate) switchboard: Switchboard,
    _tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.config.listen)
    }

    /// The standby coordinator's endpoint, if the cluster has one.
    pub fn standby_endpoint(&self) -> Option<String> {
        self.standby.as_ref().map(|(addr, _)| format!("https://{addr}"))
    }

    /// What the sidecars connect to: the coordinator, then the standby.
    fn client_endpoints(&self) -> Vec<String> {
        std::iter::once(self.endpoint()).chain(self.standby_endpoint()).collect()
    }

    /// The coordinator's listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.config.listen
    }

    /// Where the dashboard listens, when the builder asked for one.
    pub fn web_addr(&self) -> Option<std::net::SocketAddr> {
        self.config.web.as_ref().map(|w| w.listen)
    }

    /// The cluster's throw-away CA: issue identities for any role, revoke them.
    pub fn pki(&self) -> &SimPki {
        &self.pki
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The directory checkpoints are published into.
    ///
    /// # Panics
    /// The cluster publishes into an object store ([`ClusterBuilder::artifacts`]).
    pub fn artifact_dir(&self) -> &Path {
        self.config.artifacts.local_dir().expect("the cluster's default artifact store is a directory")
    }

    pub fn clients(&self) -> &[ClientHandle] {
        &self.clients
    }

    pub fn clients_mut(&mut self) -> &mut [ClientHandle] {
        &mut self.clients
    }

    /// A control-plane client as an admin (sees and may do everything), as the `fedra` CLI
    /// uses.
    ///
    /// # Errors
    /// Connection failure.
    pub async fn control(&self) -> Result<ControlClient> {
        self.control_as(&Identity::new(Role::Admin, None, "sim")?).await
    }

    /// A control-plane client certified as `identity`.
    ///
    /// # Errors
    /// Connection failure.
    pub async fn control_as(&self, identity: &Identity) -> Result<ControlClient> {
        self.control_at_as(&self.endpoint(), identity).await
    }

    /// A control-plane client as an admin of the coordinator at `endpoint` (the standby).
    ///
    /// # Errors
    /// Connection failure.
    pub async fn control_at(&self, endpoint: &str) -> Result<ControlClient> {
        self.control_at_as(endpoint, &Identity::new(Role::Admin, None, "sim")?).await
    }

    async fn control_at_as(&self, endpoint: &str, identity: &Identity) -> Result<ControlClient> {
        Ok(ControlClient::connect(endpoint, &self.pki.tls(identity)?).await?.trusting(self.pki.trust()?))
    }

    /// An inference node (the code `fedra-infer` runs) for `model` in `region`, certified
    /// as `inference/<region>/<name>`, trusting the cluster's signing key, listening on an
    /// ephemeral loopback port.
    ///
    /// # Errors
    /// Invalid region or name, or a port that cannot be bound.
    pub async fn inference_node(
        &self,
        settings: fedra_client::infer::node::NodeSettings,
    ) -> Result<fedra_client::infer::RunningNode> {
        let region = fedra_types::ids::RegionId::new(settings.region.as_str())?;
        let identity = Identity::new(Role::Inference, Some(region), &settings.name)?;
        fedra_client::infer::RunningNode::start(
            &self.endpoint(),
            &self.pki.tls(&identity)?,
            self.pki.trust()?,
            fedra_client::infer::cpu(),
            settings,
            "127.0.0.1:0".parse()?,
        )
        .await
    }

    /// Starts one more sidecar with a burn trainer on `spec.dataset`, on the CPU.
    pub fn add_client(&mut self, spec: ClientSpec) {
        self.add_client_on(spec, DeviceChoice::Cpu).expect("the CPU device always opens");
    }

    /// Starts one more sidecar with a burn trainer on `spec.dataset`, training on `device`.
    ///
    /// # Errors
    /// The device is not compiled into this build or does not open.
    pub fn add_client_on(&mut self, spec: ClientSpec, device: DeviceChoice) -> Result<(), DeviceError> {
        let trainer = BurnTrainer::with_holdout(spec.dataset.clone(), spec.holdout.clone()).with_device(device)?;
        let info = spec.dataset.info();
        self.add_client_with(&spec.id, &spec.region, vec![info], Box::new(trainer));
        Ok(())
    }

    /// Starts one more sidecar whose uploads may crash (fault injection).
    pub fn add_client_faulty(
        &mut self,
        id: &str,
        region: &str,
        datasets: Vec<DatasetInfo>,
        trainer: Box<dyn Trainer>,
        faults: Arc<dyn UploadFaults>,
    ) {
        self.spawn_client(id, region, datasets, trainer, Some(faults));
    }

    /// Starts one more sidecar with a caller-provided trainer and dataset descriptions.
    pub fn add_client_with(&mut self, id: &str, region: &str, datasets: Vec<DatasetInfo>, trainer: Box<dyn Trainer>) {
        self.spawn_client(id, region, datasets, trainer, None);
    }

    fn spawn_client(
        &mut self,
        id: &str,
        region: &str,
        datasets: Vec<DatasetInfo>,
        trainer: Box<dyn Trainer>,
        faults: Option<Arc<dyn UploadFaults>>,
    ) {
        // An in-process sidecar presents no certificate: its link is bound to its id.
        let tls = match self.transport {
            Transport::Inproc => fedra_pki::ClientTls::Insecure,
            Transport::Grpc => self
                .pki
                .clients(&[(id.to_string(), region.to_string())])
                .expect("the sim CA issues client certificates for valid ids")
                .remove(0),
        };
        let settings = SidecarSettings {
            endpoints: self.client_endpoints(),
            tls,
            client_id: id.to_string(),
            region: region.to_string(),
            devices: vec!["cpu".into()],
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        };
        let mut sidecar = Sidecar::new(settings, datasets, trainer);
        if self.transport == Transport::Inproc {
            sidecar = sidecar.with_connector(self.switchboard.connector(id, region));
        }
        if let Some(f) = faults {
            sidecar = sidecar.with_upload_faults(f);
        }
        let status = sidecar.status();
        let (stop, stopped) = oneshot::channel::<()>();
        // A refused identity ends the sidecar; its status keeps the reason (last_error).
        let join = tokio::spawn(async move {
            let _ = sidecar
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.clients.push(ClientHandle {
            id: id.to_string(),
            region: region.to_string(),
            status,
            stop: Some(stop),
            join,
        });
    }

    /// Waits until every client has an open session.
    ///
    /// # Errors
    /// Timeout, naming the clients that are not connected.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing: Vec<&str> =
                self.clients.iter().filter(|c| !c.status.borrow().connected).map(|c| c.id.as_str()).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("clients not connected after {timeout:?}: {}", missing.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the coordinator as a crash would and starts a new one on the same data
    /// directory and port. Clients reconnect by themselves.
    ///
    /// # Errors
    /// The new coordinator fails to start.
    pub async fn restart_coordinator(&mut self) -> Result<()> {
        self.switchboard.set(None);
        if let Some(c) = self.coordinator.take() {
            c.kill().await;
        }
        // The port may take a moment to be free again.
        let mut last = None;
        for _ in 0..50 {
            let started = match &self.process {
                None => Coordinator::start(&self.config)
                    .await
                    .map(|c| Running::InProcess(Box::new(c)))
                    .map_err(anyhow::Error::from),
                Some((spec, tls)) => CoordinatorChild::spawn(spec, &self.config, tls).await.map(Running::Child),
            };
            match started {
                Ok(c) => {
                    if let Running::InProcess(c) = &c {
                        self.switchboard.set(Some(c.in_process_fleet()));
                    }
                    self.coordinator = Some(c);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow::anyhow!("coordinator did not restart: {:?}", last))
    }

    /// The participants online at the coordinator and the clients behind them.
    ///
    /// # Errors
    /// The coordinator is down.
    pub async fn inventory(&self) -> Result<fedra_coordinator::hierarchy::Inventory> {
        match self.coordinator.as_ref().context("the coordinator is down")? {
            Running::InProcess(c) => Ok(c.inventory().await?),
            Running::Child(_) => anyhow::bail!("the inventory of a coordinator process is not readable from here"),
        }
    }

    /// Stops every client, then the coordinator.
    pub async fn shutdown(mut self) {
        for c in &mut self.clients {
            c.stop().await;
        }
        match self.coordinator.take() {
            Some(Running::InProcess(c)) => c.shutdown().await,
            Some(Running::Child(c)) => c.kill(),
            None => {}
        }
        if let Some((_, Some(standby))) = self.standby.take() {
            standby.kill();
        }
    }
}
