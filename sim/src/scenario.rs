//! Scenario files and their runner: a dataset, a federation, a plan, faults and a sweep,
//! run against a real coordinator and real sidecars in this process, leaving a run
//! directory with per-round metrics (CSV, JSON), plots, a summary and a fault report.
//!
//! Metrics follow the FedProx paper: after every round the sim evaluates the published
//! checkpoint itself on the union of all clients' training data ("global training loss")
//! and of their test splits ("test accuracy"), reading the checkpoint the coordinator
//! wrote. Per-round counts come from the coordinator's own event stream.

use crate::cluster::Cluster;
use crate::datasets::{ClientData, FedProxSynthetic, digits_clients};
use crate::faults::{FaultEvent, FaultKind, FaultLog, FaultSpec, FaultyTrainer};
use crate::report::{self, Metric, RoundMetrics};
use anyhow::{Context, Result, bail, ensure};
use fedra_cli::plan_file::{ModelSection, PlanFile, deserialize_privacy};
use fedra_cli::status::WatchEvent;
use fedra_client::data::Dataset;
use fedra_client::data::partition::Partition;
use fedra_client::trainer::burn_logreg::BurnTrainer;
use fedra_client::trainer::{LocalHyperparams, Optimizer, TrainSpec, Trainer};
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{ParticipationStatus, SqliteStore, Store};
use fedra_types::model::TensorLayout;
use fedra_types::plan::{Aggregator, Compression, EvaluationPlan, LocalTraining, PrivacyPlan, Strategy};
use fedra_types::run::RunState;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

const REGIONS: [&str; 3] = ["eu", "us", "apac"];

/// `[dataset]` of a scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSection {
    /// Li et al.'s Synthetic(α, β): 30 devices, 60 features, 10 classes.
    FedproxSynthetic { alpha: f64, beta: f64 },
    /// Li et al.'s Synthetic-IID.
    FedproxSyntheticIid,
    /// smartcore's 8x8 digits split across `clients`.
    Digits {
        clients: usize,
        #[serde(default)]
        partition: PartitionName,
        #[serde(default)]
        alpha: Option<f64>,
        #[serde(default)]
        shards_per_client: Option<usize>,
        #[serde(default = "default_test_fraction")]
        test_fraction: f64,
    },
}

fn default_test_fraction() -> f64 {
    0.2
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionName {
    #[default]
    Iid,
    Dirichlet,
    Shards,
}

/// `[sweep]`: one configuration per listed value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    #[serde(default)]
    pub proximal_mu: Vec<f64>,
    /// With `[privacy]`: run each configuration without (`false`) and with (`true`) it,
    /// side by side. Empty = as the scenario says.
    #[serde(default)]
    pub private: Vec<bool>,
    /// Aggregation strategies, each `"fed_avg"` or a server optimizer table (`[[sweep.strategy]]`).
    #[serde(default)]
    pub strategy: Vec<Strategy>,
    /// Aggregation rules, each a name or a table as in a plan file.
    #[serde(default)]
    pub aggregator: Vec<Aggregator>,
    /// Numbers of malicious clients (the first ones), replacing `faults.malicious_clients`;
    /// 0 is the clean run. Needs `faults.malice`.
    #[serde(default)]
    pub malicious_clients: Vec<usize>,
    /// Update compressions, each a `[compression]` table (`{ kind = "int8" }`, …).
    #[serde(default)]
    pub compression: Vec<Compression>,
}

/// `[privacy_budget]`: the coordinator's budget for every scope of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    pub epsilon: f64,
    pub delta: f64,
}

/// A configuration of a scenario: its label, local training and privacy.
#[derive(Debug, Clone)]
pub struct Config {
    pub label: String,
    pub local: LocalTraining,
    pub privacy: Option<PrivacyPlan>,
    pub strategy: Strategy,
    pub aggregator: Aggregator,
    /// The faults of this configuration (the scenario's, with a swept attacker count).
    pub faults: FaultSpec,
    pub compression: Compression,
}

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub version: u32,
    pub name: String,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    pub rounds: u32,
    pub clients_per_round: u32,
    #[serde(default)]
    pub min_clients: Option<u32>,
    #[serde(default)]
    pub over_selection: f64,
    #[serde(default = "default_deadline")]
    pub round_deadline_seconds: f64,
    pub dataset: DatasetSection,
    pub model: ModelSection,
    pub local: LocalTraining,
    #[serde(default)]
    pub evaluation: EvaluationPlan,
    /// `"fed_avg"` (default) or a `[strategy]` server optimizer table, as in a plan file.
    #[serde(default)]
    pub strategy: Strategy,
    /// `"mean"` (default), `"median"` or an `[aggregator]` table, as in a plan file.
    #[serde(default)]
    pub aggregator: Aggregator,
    /// The plan file's `[compression]` (none by default).
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub sweep: Sweep,
    #[serde(default)]
    pub faults: FaultSpec,
    /// Client-level DP for the run (DP-FedAvg), written as a plan file's `[privacy]`; see
    /// `fedra_cli::plan_file::deserialize_privacy`.
    #[serde(default, deserialize_with = "deserialize_privacy")]
    pub privacy: Option<PrivacyPlan>,
    #[serde(default)]
    pub privacy_budget: Option<BudgetSection>,
    /// How the sidecars reach the coordinator (`fedra-sim run --transport`; not a key of
    /// the file: the same scenario runs over either).
    #[serde(skip)]
    pub transport: crate::inproc::Transport,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

fn default_deadline() -> f64 {
    600.0
}

impl Scenario {
    /// # Errors
    /// Unreadable file, unknown keys (with line and column) or invalid values.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// # Errors
    /// As [`Self::load`].
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let s: Scenario = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {}", e.to_string().trim()))?;
        ensure!(s.version == 1, "{origin}: version {} is not supported (expected 1)", s.version);
        ensure!(!s.seeds.is_empty(), "{origin}: seeds must not be empty");
        ensure!(s.rounds >= 1, "{origin}: rounds must be at least 1");
        s.faults.validate().with_context(|| origin.to_string())?;
        ensure!(
            s.sweep.malicious_clients.is_empty() || s.faults.malice.is_some(),
            "{origin}: sweep.malicious_clients needs faults.malice"
        );
        ensure!(s.sweep.private.is_empty() || s.privacy.is_some(), "{origin}: sweep.private needs a [privacy] section");
        ensure!(
            s.privacy.is_none()
                || s.sweep.private == [false]
                || (s.compression == Compression::None && s.sweep.compression.iter().all(|c| *c == Compression::None)),
            "{origin}: compression cannot be combined with [privacy] (the coordinator refuses such plans)"
        );
        ensure!(
            s.privacy.is_none() || s.privacy_budget.is_some(),
            "{origin}: a private scenario needs [privacy_budget] (epsilon, delta)"
        );
        Ok(s)
    }

    /// The configurations to run: one per swept value (attackers × μ × private × strategy ×
    /// aggregator), or the scenario itself.
    pub fn configs(&self) -> Vec<Config> {
        let locals: Vec<(String, LocalTraining)> = if self.sweep.proximal_mu.is_empty() {
            vec![(format!("mu={}", self.local.proximal_mu), self.local.clone())]
        } else {
            self.sweep
                .proximal_mu
                .iter()
                .map(|mu| (format!("mu={mu}"), LocalTraining { proximal_mu: *mu, ..self.local.clone() }))
                .collect()
        };
        let privates: Vec<bool> =
            if self.sweep.private.is_empty() { vec![self.privacy.is_some()] } else { self.sweep.private.clone() };
        let strategies: Vec<Strategy> =
            if self.sweep.strategy.is_empty() { vec![self.strategy] } else { self.sweep.strategy.clone() };
        let aggregators: Vec<Aggregator> =
            if self.sweep.aggregator.is_empty() { vec![self.aggregator] } else { self.sweep.aggregator.clone() };
        let attackers: Vec<Option<usize>> = if self.sweep.malicious_clients.is_empty() {
            vec![None]
        } else {
            self.sweep.malicious_clients.iter().copied().map(Some).collect()
        };
        let compressions: Vec<Compression> =
            if self.sweep.compression.is_empty() { vec![self.compression] } else { self.sweep.compression.clone() };
        let mut out = Vec::new();
        for (attackers, (label, local)) in attackers.iter().flat_map(|a| locals.iter().map(move |l| (a, l.clone()))) {
            let label = match attackers {
                Some(n) => format!("attackers={n} {label}"),
                None => label,
            };
            let mut faults = self.faults.clone();
            if let Some(n) = attackers {
                faults.malicious_clients = *n;
            }
            for &private in &privates {
                for ((&strategy, &aggregator), &compression) in strategies
                    .iter()
                    .flat_map(|s| aggregators.iter().map(move |a| (s, a)))
                    .flat_map(|sa| compressions.iter().map(move |c| (sa, c)))
                {
                    let privacy = if private { self.privacy.clone() } else { None };
                    let label = match (&privacy, self.privacy.is_some()) {
                        (Some(p), _) => format!("{label} dp(z={})", p.noise_multiplier),
                        (None, true) => format!("{label} non-private"),
                        (None, false) => label.clone(),
                    };
                    let label = match (strategy, strategies.len() > 1) {
                        (Strategy::Server(o), _) => format!("{label} {}(lr={})", o.name(), o.learning_rate()),
                        (Strategy::FedAvg, true) => format!("{label} fed_avg"),
                        (Strategy::FedAvg, false) => label,
                    };
                    let label = if aggregators.len() > 1 || aggregator.is_robust() {
                        format!("{label} {aggregator}")
                    } else {
                        label
                    };
                    let label = match (compression, compressions.len() > 1) {
                        (Compression::TopK { fraction }, _) => format!("{label} top_k({fraction})"),
                        (Compression::Int8, _) => format!("{label} int8"),
                        (Compression::None, true) => format!("{label} f32"),
                        (Compression::None, false) => label,
                    };
                    out.push(Config {
                        label,
                        local: local.clone(),
                        privacy,
                        strategy,
                        aggregator,
                        compression,
                        faults: faults.clone(),
                    });
                }
            }
        }
        out
    }

    fn plan(&self, cfg: &Config, seed: u64, clients: usize) -> PlanFile {
        let (local, privacy) = (cfg.local.clone(), cfg.privacy.clone());
        let per_round = self.clients_per_round.min(clients as u32).max(1);
        PlanFile {
            version: 1,
            model: self.model.clone(),
            initial_checkpoint: None,
            strategy: cfg.strategy,
            aggregator: cfg.aggregator,
            rounds: self.rounds,
            clients_per_round: per_round,
            min_clients: self.min_clients.unwrap_or(1).min(per_round),
            over_selection: self.over_selection,
            round_deadline_seconds: self.round_deadline_seconds,
            local,
            regions: Vec::new(),
            // The plan seed drives initialisation and client sampling.
            seed: seed.wrapping_mul(7919).wrapping_add(1),
            evaluation: self.evaluation,
            privacy,
            priority: 0,
            promotion: Default::default(),
            schedule: Default::default(),
            compression: cfg.compression,
        }
    }

    /// The clients' data for `seed`.
    ///
    /// # Errors
    /// Invalid dataset settings.
    pub fn data(&self, seed: u64) -> Result<Vec<ClientData>> {
        Ok(match &self.dataset {
            DatasetSection::FedproxSynthetic { alpha, beta } => {
                FedProxSynthetic::new(*alpha, *beta, seed).generate()?
            }
            DatasetSection::FedproxSyntheticIid => FedProxSynthetic::iid(seed).generate()?,
            DatasetSection::Digits { clients, partition, alpha, shards_per_client, test_fraction } => {
                let scheme = match partition {
                    PartitionName::Iid => Partition::Iid,
                    PartitionName::Dirichlet => Partition::Dirichlet {
                        alpha: alpha.context("dataset.alpha is required with partition = \"dirichlet\"")?,
                    },
                    PartitionName::Shards => Partition::Shards {
                        per_client: shards_per_client
                            .context("dataset.shards_per_client is required with partition = \"shards\"")?,
                    },
                };
                digits_clients(*clients, scheme, seed, *test_fraction)?.0
            }
        })
    }
}

/// What happened to one injected fault.
#[derive(Debug, Clone)]
pub struct FaultOutcome {
    pub config: String,
    pub seed: u64,
    pub event: FaultEvent,
    /// The coordinator's record of that client in that round.
    pub outcome: String,
}

/// Everything a scenario run produced.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub rows: Vec<RoundMetrics>,
    pub faults: Vec<FaultOutcome>,
    pub dir: PathBuf,
    pub failed_runs: Vec<String>,
    /// The final guarantee of each private run.
    pub privacy: Vec<PrivacyOutcome>,
}

fn concat(name: &str, parts: impl Iterator<Item = Dataset>) -> Result<Dataset> {
    let (mut features, mut labels, mut dim, mut classes) = (Vec::new(), Vec::new(), 0, 0);
    for d in parts {
        dim = d.dim;
        classes = classes.max(d.classes);
        features.extend_from_slice(&d.features);
        labels.extend_from_slice(&d.labels);
    }
    Ok(Dataset::new(name, features, labels, dim, classes)?)
}

/// The checkpoint's weights, checked against the layout by the coordinator's own decoder.
fn read_checkpoint(path: &Path, layout: &TensorLayout) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(fedra_coordinator::checkpoint::decode_safetensors(&bytes, layout, path)?)
}

/// Runs one (config, seed) and returns its rows and fault outcomes.
/// What one run of a private configuration ended with: the last checkpoint's guarantee.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyOutcome {
    pub config: String,
    pub seed: u64,
    pub epsilon: f64,
    pub delta: f64,
    pub accountant: String,
    pub noise_multiplier: f64,
    pub clip_norm: f64,
    pub sampling_rate: f64,
    pub rounds: u32,
}

async fn run_one(
    scenario: &Scenario,
    cfg: &Config,
    seed: u64,
    dir: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<(Vec<RoundMetrics>, Vec<FaultOutcome>, Option<RunState>, Option<PrivacyOutcome>)> {
    let config = cfg.label.as_str();
    let data = scenario.data(seed)?;
    let arch = scenario.model.architecture.clone();
    let spec = TrainSpec {
        layout: arch.layout(),
        architecture: arch.clone(),
        hyper: LocalHyperparams {
            epochs: 1,
            batch_size: 256,
            learning_rate: 0.01,
            optimizer: Optimizer::Sgd { momentum: 0.0 },
            proximal_mu: 0.0,
        },
        seed: 0,
    };
    let all_train = BurnTrainer::new(concat("all-train", data.iter().map(|c| c.train.clone()))?);
    let all_test = BurnTrainer::new(concat("all-test", data.iter().map(|c| c.test.clone()))?);

    let log: FaultLog = Arc::default();
    let mut builder = Cluster::builder().data_dir(dir.join("coordinator")).transport(scenario.transport);
    if let Some(b) = scenario.privacy_budget {
        builder = builder.privacy_budget(fedra_coordinator::privacy::budget::RawBudgetRule {
            model: None,
            region: None,
            epsilon: b.epsilon,
            delta: b.delta,
        });
    }
    let mut cluster = builder.start().await?;
    let clients = data.len();
    for (i, c) in data.into_iter().enumerate() {
        let id = format!("{}-{:02}", REGIONS[i % REGIONS.len()], i);
        let region = REGIONS[i % REGIONS.len()];
        let info = c.train.info();
        let inner: Box<dyn Trainer> = Box::new(BurnTrainer::with_holdout(c.train, Some(c.test)));
        let (trainer, crash) = FaultyTrainer::new(inner, cfg.faults.clone(), &id, i, seed, Arc::clone(&log));
        cluster.add_client_faulty(&id, region, vec![info], Box::new(trainer), crash);
    }
    cluster.wait_connected(Duration::from_secs(60)).await?;
    let plan = scenario.plan(cfg, seed, clients);
    let mut privacy = None;
    let params = arch.layout().total() as u64;
    let mut control = cluster.control().await?;
    let run = control.submit(&plan).await?;
    let mut events = control.watch(&run).await?;
    let mut rows: BTreeMap<u32, RoundMetrics> = BTreeMap::new();
    let mut started: BTreeMap<u32, Instant> = BTreeMap::new();
    // What a robust rule did in each round, from the manifests.
    let mut robust: BTreeMap<u32, fedra_coordinator::checkpoint::RobustProvenance> = BTreeMap::new();
    let mut state = None;
    progress.set_length(u64::from(scenario.rounds));
    progress.set_position(0);
    progress.set_message(format!("{config} seed {seed}"));
    while let Some(e) = events.next().await {
        match e? {
            WatchEvent::Selected { round, clients, .. } => {
                started.insert(round, Instant::now());
                let row = rows.entry(round).or_insert_with(|| RoundMetrics::empty(config, seed, round));
                // A retried attempt adds its selection to the round's.
                row.selected += clients.len() as u32;
                row.bytes_out += clients.len() as u64 * params * 4;
            }
            WatchEvent::Aggregated { round, clients, metrics, update_bytes, .. } => {
                if let Some(r) = rows.get_mut(&round) {
                    r.reported = clients;
                    r.dropped = r.selected.saturating_sub(clients);
                    r.train_loss = metrics.loss_after;
                    // The coordinator's count of the counted updates' encoded chunk bytes.
                    r.bytes_in = update_bytes;
                }
            }
            WatchEvent::Published { round, checkpoint: _, regions, .. } => {
                let region = regions.first().cloned().unwrap_or_default();
                let path = cluster
                    .artifact_dir()
                    .join(region)
                    .join(&scenario.model.name)
                    .join(&run)
                    .join(format!("round-{round:04}"))
                    .join("model.safetensors");
                let weights = read_checkpoint(&path, &spec.layout)?;
                let manifest: fedra_coordinator::checkpoint::Manifest =
                    serde_json::from_slice(&std::fs::read(path.with_file_name("manifest.json"))?)?;
                if let Some(r) = manifest.aggregation.clone() {
                    robust.insert(round, r);
                }
                if let Some(p) = manifest.privacy {
                    privacy = Some(PrivacyOutcome {
                        config: config.to_string(),
                        seed,
                        epsilon: p.epsilon,
                        delta: p.delta,
                        accountant: p.accountant,
                        noise_multiplier: p.noise_multiplier,
                        clip_norm: p.clip_norm,
                        sampling_rate: p.sampling_rate,
                        rounds: p.rounds,
                    });
                }
                let (train_loss, _) = all_train.evaluate(&spec, &weights)?;
                let (test_loss, test_acc) = all_test.evaluate(&spec, &weights)?;
                if let Some(r) = rows.get_mut(&round) {
                    r.global_train_loss = train_loss;
                    r.test_loss = test_loss;
                    r.test_accuracy = test_acc;
                    r.wall_seconds = started.get(&round).map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                }
                progress.set_position(u64::from(round));
            }
            WatchEvent::RoundFailed { round, reason } => {
                progress.println(format!("{config} seed {seed}: round {round} failed: {reason}"));
            }
            WatchEvent::Blocked { round, reason } => {
                progress.println(format!("{config} seed {seed}: blocked by policy after round {round}: {reason}"));
            }
            WatchEvent::RunFinished { state: s, .. } => {
                state = Some(s);
                break;
            }
            WatchEvent::UpdateReceived { .. } | WatchEvent::Evaluated { .. } => {}
        }
    }
    drop(events);

    // What the coordinator did with each injected fault, from its store.
    let store = SqliteStore::open(&cluster.data_dir().join("fedra.db")).await?;
    let parts = store.list_participations(&RunId::new(run.clone())?).await?;
    let injected = std::mem::take(&mut *log.lock().expect("fault log"));
    let faults = injected
        .into_iter()
        .map(|event| {
            let mine: Vec<_> =
                parts.iter().filter(|p| p.client.as_str() == event.client && p.round == event.round).collect();
            let outcome = if mine.is_empty() {
                "not selected in this round's recorded attempts".to_string()
            } else if let Some(p) = mine.iter().find(|p| p.status == ParticipationStatus::Reported) {
                let norm = p.update_norm.map(|n| format!(", update norm {n:.3}")).unwrap_or_default();
                match event.kind {
                    FaultKind::Malicious(_) => malice_outcome(robust.get(&event.round), &event.client, &norm),
                    _ => format!("counted (arrived before the round closed{norm})"),
                }
            } else {
                match &event.kind {
                    FaultKind::Malicious(crate::faults::Malice::Nan | crate::faults::Malice::Inf) => {
                        "refused: non-finite update rejected at upload; client recorded as dropped".to_string()
                    }
                    // The coordinator's own answer to the cut-off upload says what it did.
                    FaultKind::CrashMidUpload { answer: Err(refusal), .. } => {
                        if refusal.contains("without a trailer; update discarded") {
                            format!("discarded ({refusal}), running sum untouched; client recorded as dropped")
                        } else {
                            format!("refused ({refusal}); client recorded as dropped")
                        }
                    }
                    FaultKind::CrashMidUpload { answer: Ok(reported), .. } => {
                        format!("the coordinator accepted a cut-off upload ({reported} reported) but did not record it")
                    }
                    _ => "not counted: no update before the round closed; client recorded as dropped".to_string(),
                }
            };
            FaultOutcome { config: config.to_string(), seed, event, outcome }
        })
        .collect();
    store.close().await;
    cluster.shutdown().await;
    Ok((rows.into_values().collect(), faults, state, privacy))
}

/// Runs every configuration × seed of `scenario` and writes the run directory `out`.
///
/// # Errors
/// Setup failures; a run that ends failed is reported in [`ScenarioReport::failed_runs`].
pub async fn run(scenario: &Scenario, out: &Path) -> Result<ScenarioReport> {
    std::fs::create_dir_all(out)?;
    let progress = indicatif::ProgressBar::new(u64::from(scenario.rounds));
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:40}] round {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    let mut faults = Vec::new();
    let mut failed_runs = Vec::new();
    let mut privacy = Vec::new();
    for cfg in scenario.configs() {
        for &seed in &scenario.seeds {
            let dir = out.join("runs").join(format!("{}-seed{seed}", cfg.label.replace(['=', ' ', '(', ')'], "_")));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            let (r, f, state, p) = run_one(scenario, &cfg, seed, &dir, &progress).await?;
            if state != Some(RunState::Succeeded) {
                failed_runs.push(format!("{} seed {seed}: {}", cfg.label, state.map_or("unknown", RunState::as_str)));
            }
            rows.extend(r);
            faults.extend(f);
            privacy.extend(p);
        }
    }
    progress.finish_and_clear();
    write_outputs(scenario, &rows, &faults, &failed_runs, &privacy, out)?;
    Ok(ScenarioReport { rows, faults, dir: out.to_path_buf(), failed_runs, privacy })
}

fn write_outputs(
    scenario: &Scenario,
    rows: &[RoundMetrics],
    faults: &[FaultOutcome],
    failed_runs: &[String],
    privacy: &[PrivacyOutcome],
    out: &Path,
) -> Result<()> {
    report::write_csv(&out.join("metrics.csv"), rows)?;
    report::write_json(&out.join("metrics.json"), rows)?;
    for (metric, file, title) in [
        (Metric::TestAccuracy, "test_accuracy", "test accuracy"),
        (Metric::GlobalTrainLoss, "train_loss", "global training loss"),
        (Metric::TestLoss, "test_loss", "test loss"),
    ] {
        report::plot_metric(&out.join(format!("{file}.svg")), rows, metric, &format!("{}: {title}", scenario.name))?;
    }
    let mut md = format!("# {}\n\n{}\n", scenario.name, report::summary_table(rows));
    let configs = scenario.configs();
    if configs.iter().any(|c| c.compression != Compression::None) {
        let params = scenario.model.architecture.layout().total() as u64;
        let kinds: Vec<(String, bool)> =
            configs.iter().map(|c| (c.label.clone(), c.compression == Compression::None)).collect();
        md.push_str(&report::compression::table(rows, &kinds, params));
    }
    if !privacy.is_empty() {
        md.push_str("\n## Privacy guarantee of the final checkpoint (client-level DP)\n\n| config | seed | ε | δ | accountant | z | C (last round) | q | rounds |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n");
        for p in privacy {
            md.push_str(&format!(
                "| {} | {} | {:.3} | {:e} | {} | {} | {:.4} | {} | {} |\n",
                p.config,
                p.seed,
                p.epsilon,
                p.delta,
                p.accountant,
                p.noise_multiplier,
                p.clip_norm,
                p.sampling_rate,
                p.rounds
            ));
        }
    }
    if !failed_runs.is_empty() {
        md.push_str("\nRuns that did not succeed:\n\n");
        for f in failed_runs {
            md.push_str(&format!("- {f}\n"));
        }
    }
    if !faults.is_empty() {
        md.push_str("\n## Injected faults and what the coordinator did\n\n| config | seed | round | client | fault | outcome |\n|---|---:|---:|---|---|---|\n");
        for f in faults {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                f.config, f.seed, f.event.round, f.event.client, f.event.kind, f.outcome
            ));
        }
    }
    md.push_str("\nFiles: `metrics.csv`, `metrics.json`, `test_accuracy.svg`, `train_loss.svg`, `test_loss.svg`, `runs/*/coordinator/` (store and checkpoints).\n");
    std::fs::write(out.join("summary.md"), md)?;
    Ok(())
}

/// Compares two run directories (each with a `metrics.json`).
///
/// # Errors
/// Missing or unreadable metrics.
pub fn compare_dirs(a: &Path, b: &Path) -> Result<String> {
    let load = |d: &Path| {
        report::read_json(&d.join("metrics.json"))
            .with_context(|| format!("{} has no readable metrics.json", d.display()))
    };
    let (ra, rb) = (load(a)?, load(b)?);
    if ra.is_empty() || rb.is_empty() {
        bail!("nothing to compare: a run directory has no rounds");
    }
    Ok(report::compare(&ra, &rb, &a.display().to_string(), &b.display().to_string()))
}

/// What became of a malicious client's received update: FedAvg counts it in the mean; a
/// robust rule's manifest says whether it was left out or scaled down.
fn malice_outcome(rule: Option<&fedra_coordinator::checkpoint::RobustProvenance>, client: &str, norm: &str) -> String {
    let Some(r) = rule else {
        return format!("counted in the mean (FedAvg has no robust rule{norm})");
    };
    if r.excluded.iter().any(|c| c.as_str() == client) {
        return format!("received, left out of the aggregate by {}{norm}", r.rule);
    }
    match r.scaled.iter().find(|(c, _)| c.as_str() == client) {
        Some((_, factor)) => format!("received, delta scaled by {factor:.4} by {}{norm}", r.rule),
        None => format!("received, aggregated by {}{norm}", r.rule),
    }
}
