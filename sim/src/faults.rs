//! Fault injection for scenarios: dropouts, stragglers, crashes mid-upload and malicious
//! updates, each decided by a seeded draw per (client, round) so that runs reproduce.
//! Every injected fault is logged, so that the report can say what the coordinator did
//! with it. A crash mid-upload is logged only once the coordinator has answered the
//! cut-off upload, with that answer: the log proves the fault reached the coordinator.
//!
//! [`TrainingHold`] is a fault for tests rather than scenarios: clients that hold their
//! training of one round until the test releases them, so that "a round is in Training
//! and nobody can report yet" is a state a test waits for instead of a race it hopes to
//! win.

use fedra_client::session::UploadFaults;
use fedra_client::trainer::{EvalOutcome, TrainError, TrainOutcome, TrainSpec, Trainer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How a malicious client corrupts its update Δ = local − global.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Malice {
    /// One value becomes NaN (the coordinator must refuse the update).
    Nan,
    /// One value becomes +Inf (refused like NaN).
    Inf,
    /// Δ is multiplied by `factor` (a boosting attack).
    Scale,
    /// Δ is negated (a sign-flipping attack).
    SignFlip,
}

/// `[faults]` of a scenario. All probabilities are per selected client per round.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The client goes silent for the round (trains nothing, reports nothing).
    #[serde(default)]
    pub dropout: f64,
    /// Probability that a client is a straggler this round...
    #[serde(default)]
    pub straggler: f64,
    /// ...and the delay range (seconds) it adds before training.
    #[serde(default)]
    pub straggler_delay_seconds: Option<[f64; 2]>,
    /// The client crashes halfway through uploading: it sends the header and the first half
    /// of the values, and the stream ends without a trailer.
    #[serde(default)]
    pub crash_mid_upload: f64,
    /// How many clients (the first ones) are malicious, in every round they take part in.
    #[serde(default)]
    pub malicious_clients: usize,
    #[serde(default)]
    pub malice: Option<Malice>,
    /// Scale factor for `malice = "scale"` (default 100).
    #[serde(default)]
    pub malice_factor: Option<f64>,
}

impl FaultSpec {
    pub fn is_empty(&self) -> bool {
        self.dropout == 0.0 && self.straggler == 0.0 && self.crash_mid_upload == 0.0 && self.malicious_clients == 0
    }

    /// # Errors
    /// A probability outside [0, 1] or an incomplete setting, by key.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (k, p) in
            [("dropout", self.dropout), ("straggler", self.straggler), ("crash_mid_upload", self.crash_mid_upload)]
        {
            anyhow::ensure!((0.0..=1.0).contains(&p), "faults.{k} must be a probability in [0, 1], got {p}");
        }
        if self.straggler > 0.0 {
            let [lo, hi] = self.straggler_delay_seconds.unwrap_or([0.0, 0.0]);
            anyhow::ensure!(
                lo >= 0.0 && hi >= lo && hi > 0.0,
                "faults.straggler_delay_seconds must be [min, max] with 0 <= min <= max, max > 0"
            );
        }
        if self.malicious_clients > 0 {
            anyhow::ensure!(self.malice.is_some(), "faults.malice is required with malicious_clients");
        }
        Ok(())
    }
}

/// The fault kinds as logged.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    Dropout,
    Straggler {
        delay: Duration,
    },
    /// `sent` of `total` values went out before the stream ended without a trailer;
    /// `answer` is what the coordinator replied: `Err(refusal)`, or `Ok(reported)` if it
    /// counted the update (which it must never do).
    CrashMidUpload {
        sent: usize,
        total: usize,
        answer: Result<u32, String>,
    },
    Malicious(Malice),
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::Dropout => write!(f, "dropout"),
            FaultKind::Straggler { delay } => write!(f, "straggler (+{:.1}s)", delay.as_secs_f64()),
            FaultKind::CrashMidUpload { .. } => write!(f, "crash mid-upload"),
            FaultKind::Malicious(m) => write!(f, "malicious ({m:?})"),
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultEvent {
    pub client: String,
    pub round: u32,
    pub kind: FaultKind,
}

/// Shared log of injected faults.
pub type FaultLog = Arc<Mutex<Vec<FaultEvent>>>;

/// The seeded draw for (client, round, purpose).
fn draw(seed: u64, client: usize, round: u32, purpose: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ ((client as u64) << 40) ^ (u64::from(round) << 8) ^ purpose)
}

/// Wraps a client's real trainer with the scenario's faults.
pub struct FaultyTrainer {
    inner: Box<dyn Trainer>,
    spec: FaultSpec,
    client: String,
    index: usize,
    seed: u64,
    log: FaultLog,
    /// The round of the task being trained (from [`Trainer::begin_task`]).
    round: u32,
}

impl FaultyTrainer {
    pub fn new(
        inner: Box<dyn Trainer>,
        spec: FaultSpec,
        client: &str,
        index: usize,
        seed: u64,
        log: FaultLog,
    ) -> (Self, Arc<CrashInjector>) {
        let crash = Arc::new(CrashInjector {
            probability: spec.crash_mid_upload,
            client: client.to_string(),
            index,
            seed,
            log: Arc::clone(&log),
        });
        (Self { inner, spec, client: client.to_string(), index, seed, log, round: 0 }, crash)
    }

    fn record(&self, round: u32, kind: FaultKind) {
        self.log.lock().expect("fault log").push(FaultEvent { client: self.client.clone(), round, kind });
    }
}

impl Trainer for FaultyTrainer {
    fn train(&mut self, spec: &TrainSpec, global: &[f32]) -> Result<TrainOutcome, TrainError> {
        let round = self.round;
        let mut rng = draw(self.seed, self.index, round, 0xD5);
        if rng.random_bool(self.spec.dropout) {
            self.record(round, FaultKind::Dropout);
            return Err(TrainError::Interrupted("simulated dropout".into()));
        }
        if rng.random_bool(self.spec.straggler) {
            let [lo, hi] = self.spec.straggler_delay_seconds.unwrap_or([0.0, 0.0]);
            let delay = Duration::from_secs_f64(if hi > lo { rng.random_range(lo..hi) } else { hi });
            self.record(round, FaultKind::Straggler { delay });
            std::thread::sleep(delay);
        }
        let mut out = self.inner.train(spec, global)?;
        if self.index < self.spec.malicious_clients
            && let Some(malice) = self.spec.malice
        {
            self.record(round, FaultKind::Malicious(malice));
            let factor = self.spec.malice_factor.unwrap_or(100.0) as f32;
            match malice {
                Malice::Nan => out.params[0] = f32::NAN,
                Malice::Inf => out.params[0] = f32::INFINITY,
                Malice::Scale => out.params.iter_mut().zip(global).for_each(|(p, g)| *p = g + factor * (*p - g)),
                Malice::SignFlip => out.params.iter_mut().zip(global).for_each(|(p, g)| *p = g - (*p - g)),
            }
        }
        Ok(out)
    }

    fn evaluate(&self, spec: &TrainSpec, params: &[f32]) -> Result<(f64, f64), TrainError> {
        self.inner.evaluate(spec, params)
    }

    fn evaluate_holdout(&self, spec: &TrainSpec, params: &[f32]) -> Result<EvalOutcome, TrainError> {
        self.inner.evaluate_holdout(spec, params)
    }

    fn samples(&self) -> u64 {
        self.inner.samples()
    }

    fn begin_task(&mut self, run: &str, round: u32) {
        self.round = round;
        self.inner.begin_task(run, round);
    }
}

/// Decides, per (client, round), whether the upload crashes halfway, and logs the crash
/// with the coordinator's answer to it.
pub struct CrashInjector {
    probability: f64,
    client: String,
    index: usize,
    seed: u64,
    log: FaultLog,
}

impl UploadFaults for CrashInjector {
    fn crash_after_values(&self, _run: &str, round: u32, total: usize) -> Option<usize> {
        let mut rng = draw(self.seed, self.index, round, 0xC4A5);
        (self.probability > 0.0 && rng.random_bool(self.probability)).then_some(total / 2)
    }

    fn crashed(&self, _run: &str, round: u32, sent: usize, total: usize, answer: Result<u32, String>) {
        self.log.lock().expect("fault log").push(FaultEvent {
            client: self.client.clone(),
            round,
            kind: FaultKind::CrashMidUpload { sent, total, answer },
        });
    }
}

/// Holds every wrapped trainer's training of one round until [`TrainingHold::release`]
/// (or until the hold is dropped, so that a failing test never leaves training threads
/// blocked). [`TrainingHold::wait_holding`] is the event a test waits for: while `n`
/// clients hold, their tasks are assigned and their models fetched, and none of them can
/// report.
pub struct TrainingHold {
    state: Arc<HoldState>,
}

struct HoldState {
    round: u32,
    released: Mutex<bool>,
    opened: Condvar,
    /// Trainers blocked in `train` for the held round right now.
    holding: watch::Sender<usize>,
}

impl TrainingHold {
    /// Holds training of round `round` (every attempt of it, until released).
    pub fn round(round: u32) -> Self {
        let (holding, _) = watch::channel(0);
        Self { state: Arc::new(HoldState { round, released: Mutex::new(false), opened: Condvar::new(), holding }) }
    }

    /// Wraps a client's trainer so that it obeys this hold.
    pub fn wrap(&self, inner: Box<dyn Trainer>) -> HeldTrainer {
        HeldTrainer { inner, state: Arc::clone(&self.state), round: 0 }
    }

    /// Waits until at least `n` wrapped trainers are holding in the held round.
    ///
    /// # Errors
    /// `timeout` passed first (naming how many were holding).
    pub async fn wait_holding(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.state.holding.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|&h| h >= n)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => unreachable!("the hold owns the sender"),
            Err(_) => {
                let holding = *self.state.holding.borrow();
                anyhow::bail!("{holding} of {n} clients were holding round {} after {timeout:?}", self.state.round)
            }
        }
    }

    /// Lets every held trainer go on, and stops holding.
    pub fn release(&self) {
        *self.state.released.lock().expect("hold mutex") = true;
        self.state.opened.notify_all();
    }
}

impl Drop for TrainingHold {
    fn drop(&mut self) {
        self.release();
    }
}

/// A trainer under a [`TrainingHold`].
pub struct HeldTrainer {
    inner: Box<dyn Trainer>,
    state: Arc<HoldState>,
    round: u32,
}

impl Trainer for HeldTrainer {
    fn train(&mut self, spec: &TrainSpec, global: &[f32]) -> Result<TrainOutcome, TrainError> {
        if self.round == self.state.round {
            let mut released = self.state.released.lock().expect("hold mutex");
            if !*released {
                self.state.holding.send_modify(|h| *h += 1);
                while !*released {
                    released = self.state.opened.wait(released).expect("hold mutex");
                }
                self.state.holding.send_modify(|h| *h -= 1);
            }
        }
        self.inner.train(spec, global)
    }

    fn evaluate(&self, spec: &TrainSpec, params: &[f32]) -> Result<(f64, f64), TrainError> {
        self.inner.evaluate(spec, params)
    }

    fn evaluate_holdout(&self, spec: &TrainSpec, params: &[f32]) -> Result<EvalOutcome, TrainError> {
        self.inner.evaluate_holdout(spec, params)
    }

    fn samples(&self) -> u64 {
        self.inner.samples()
    }

    fn begin_task(&mut self, run: &str, round: u32) {
        self.round = round;
        self.inner.begin_task(run, round);
    }
}
