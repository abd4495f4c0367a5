//! `fedra run watch` (and `run submit --watch`): following a run until it ends.
//!
//! Two renderings of the same event stream, chosen by whether stdout is a terminal:
//! - **plain** (pipes, CI, tests): one line per event ([`describe`]), exactly as before
//!   this module existed, so scripts that read those lines keep working;
//! - **live** (a terminal): an `indicatif` bar of rounds completed / total, with the
//!   current round's phase, clients reporting / target, the latest loss and accuracy and,
//!   for a private run, the ε its privacy scopes have spent; the round-level events
//!   (aggregated, published, failed, evaluated, blocked) are still printed above the bar
//!   so the history stays on screen.
//!
//! Both end the same way: exit 0 when the run succeeded, 2 when it failed or was
//! cancelled, and an error when the stream closes before the run ends. [`Progress`] holds
//! what the bar shows and is folded from events without any I/O, so it is unit-tested.

use crate::control::{ControlClient, ControlError};
use crate::status::{RunStatus, WatchEvent};
use fedra_types::run::RunState;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use tokio_stream::StreamExt;

/// How a watch ended: the run's final state, or the stream closing before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    Finished(RunState),
    /// The coordinator closed the event stream before the run ended.
    StreamClosed,
}

/// Follows `run` until it ends, live when stdout is a terminal, else one plain line per
/// event.
///
/// # Errors
/// The watch call or the stream failed (unknown run, no permission, connection lost).
pub async fn watch(client: &mut ControlClient, run: &str) -> Result<WatchEnd, ControlError> {
    if std::io::stdout().is_terminal() { watch_live(client, run).await } else { watch_plain(client, run).await }
}

/// Follows `run` until it ends without printing anything (for `--output json`, which
/// prints the final snapshot instead).
///
/// # Errors
/// As [`watch`].
pub async fn wait(client: &mut ControlClient, run: &str) -> Result<WatchEnd, ControlError> {
    let mut events = client.watch(run).await?;
    while let Some(e) = events.next().await {
        if let WatchEvent::RunFinished { state, .. } = e? {
            return Ok(WatchEnd::Finished(state));
        }
    }
    Ok(WatchEnd::StreamClosed)
}

async fn watch_plain(client: &mut ControlClient, run: &str) -> Result<WatchEnd, ControlError> {
    let mut events = client.watch(run).await?;
    while let Some(e) = events.next().await {
        let e = e?;
        println!("{}", describe(&e));
        if let WatchEvent::RunFinished { state, .. } = e {
            return Ok(WatchEnd::Finished(state));
        }
    }
    Ok(WatchEnd::StreamClosed)
}

async fn watch_live(client: &mut ControlClient, run: &str) -> Result<WatchEnd, ControlError> {
    // The total round count and whether the run is private are not in the events.
    let status = client.get(run).await?;
    let mut progress = Progress::new(&status);
    let mut events = client.watch(run).await?;
    let mut side = client.clone();
    let bar = ProgressBar::with_draw_target(Some(u64::from(progress.total_rounds)), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} rounds {elapsed:>4}  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(status.id.clone());
    bar.set_position(u64::from(progress.completed_rounds));
    bar.set_message(progress.message());
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    while let Some(e) = events.next().await {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                bar.abandon();
                return Err(err);
            }
        };
        progress.apply(&e);
        if status.private && matches!(e, WatchEvent::Published { .. }) {
            progress.epsilon = epsilon_spent(&mut side, &status).await;
        }
        if let WatchEvent::RunFinished { state, .. } = e {
            bar.set_position(u64::from(progress.completed_rounds));
            bar.set_message(progress.message());
            bar.finish();
            println!("{}", describe(&e));
            return Ok(WatchEnd::Finished(state));
        }
        if printed_above_the_bar(&e) {
            bar.println(describe(&e));
        }
        bar.set_position(u64::from(progress.completed_rounds));
        bar.set_message(progress.message());
    }
    bar.abandon();
    Ok(WatchEnd::StreamClosed)
}

/// The round-level events: they stay on screen above the bar. Client-level ones
/// (selection, each update) only move the bar.
fn printed_above_the_bar(e: &WatchEvent) -> bool {
    !matches!(e, WatchEvent::Selected { .. } | WatchEvent::UpdateReceived { .. })
}

/// The ε the run's privacy scopes (its model in each region) have spent, the largest over
/// regions, with that scope's budget. Scopes another run charged last are left out. `None`
/// when the coordinator does not say (no scope charged yet, or no permission to read the
/// ledger): the display then shows no ε rather than failing the watch.
async fn epsilon_spent(client: &mut ControlClient, run: &RunStatus) -> Option<Epsilon> {
    let scopes = client.privacy_status(Some(&run.model_name), None).await.ok()?;
    scopes
        .iter()
        .filter(|s| s.last_run == run.id)
        .map(|s| Epsilon { spent: s.epsilon_spent, budget: s.epsilon_budget })
        .max_by(|a, b| a.spent.total_cmp(&b.spent))
}

/// ε spent by a scope, and its budget when one is configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epsilon {
    pub spent: f64,
    pub budget: Option<f64>,
}

/// What the live display shows, folded from the run's snapshot and its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub total_rounds: u32,
    pub completed_rounds: u32,
    /// The round the latest event was about.
    pub round: Option<u32>,
    /// Where that round (or the run) stands, in the coordinator's words.
    pub phase: &'static str,
    pub reported: u32,
    pub target: u32,
    /// Training loss and accuracy after local training, as of the latest aggregated round.
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    /// Held-out accuracy over all regions, as of the latest evaluation.
    pub eval_accuracy: Option<f64>,
    /// For a private run, once a scope has been charged.
    pub epsilon: Option<Epsilon>,
}

impl Progress {
    /// The display before any event: the snapshot's completed rounds and state.
    pub fn new(run: &RunStatus) -> Self {
        Self {
            total_rounds: run.total_rounds,
            completed_rounds: run.completed_rounds,
            round: None,
            phase: run.state.as_str(),
            reported: 0,
            target: 0,
            loss: None,
            accuracy: None,
            eval_accuracy: None,
            epsilon: None,
        }
    }

    /// Folds one event in.
    pub fn apply(&mut self, e: &WatchEvent) {
        match e {
            WatchEvent::Selected { round, target, .. } => {
                self.at(*round, "training");
                (self.reported, self.target) = (0, *target);
            }
            WatchEvent::UpdateReceived { round, reported, target, .. } => {
                self.at(*round, "training");
                (self.reported, self.target) = (*reported, *target);
            }
            WatchEvent::Aggregated { round, clients, metrics, .. } => {
                self.at(*round, "publishing");
                self.reported = *clients;
                (self.loss, self.accuracy) = (Some(metrics.loss_after), Some(metrics.accuracy_after));
            }
            WatchEvent::Published { round, .. } => {
                // A round's checkpoint may be recorded while the next round already trains:
                // the bar keeps showing the newer round.
                if self.round.is_none_or(|r| *round >= r) {
                    self.at(*round, "done");
                }
                self.completed_rounds = self.completed_rounds.max(*round);
            }
            WatchEvent::RoundFailed { round, .. } => self.at(*round, "failed"),
            WatchEvent::Evaluated { round, results } => {
                self.at(*round, "evaluated");
                if let Some(all) = results.iter().find(|r| r.region.is_none()) {
                    self.eval_accuracy = Some(all.accuracy);
                }
            }
            WatchEvent::Blocked { round, .. } => self.at(*round, "blocked_by_policy"),
            WatchEvent::RunFinished { state, .. } => self.phase = state.as_str(),
        }
    }

    fn at(&mut self, round: u32, phase: &'static str) {
        self.round = Some(round);
        self.phase = phase;
    }

    /// The text beside the bar, e.g.
    /// `round 3 training 2/3 clients | loss 0.4312 acc 0.8123 | eval acc 0.8011 | ε 1.23 of 20`.
    pub fn message(&self) -> String {
        let mut parts = vec![match self.round {
            Some(r) if self.target > 0 => format!("round {r} {} {}/{} clients", self.phase, self.reported, self.target),
            Some(r) => format!("round {r} {}", self.phase),
            None => self.phase.to_string(),
        }];
        if let (Some(loss), Some(acc)) = (self.loss, self.accuracy) {
            parts.push(format!("loss {loss:.4} acc {acc:.4}"));
        }
        if let Some(acc) = self.eval_accuracy {
            parts.push(format!("eval acc {acc:.4}"));
        }
        match self.epsilon {
            Some(Epsilon { spent, budget: Some(b) }) => parts.push(format!("ε {spent:.2} of {b}")),
            Some(Epsilon { spent, budget: None }) => parts.push(format!("ε {spent:.2}")),
            None => {}
        }
        parts.join(" | ")
    }
}

/// One human-readable line per event: what `fedra run watch` prints when stdout is not a
/// terminal (and above the live bar for round-level events).
pub fn describe(e: &WatchEvent) -> String {
    match e {
        WatchEvent::Selected { round, clients, target } => {
            format!("round {round}: selected {} clients (target {target})", clients.len())
        }
        WatchEvent::UpdateReceived { round, client, region, samples, reported, target, metrics } => format!(
            "round {round}: update {reported}/{target} from {client} ({region}), {samples} samples, loss {:.4} -> {:.4}",
            metrics.loss_before, metrics.loss_after
        ),
        WatchEvent::Aggregated { round, clients, samples, metrics, .. } => format!(
            "round {round}: aggregated {clients} updates ({samples} samples), loss {:.4} -> {:.4}, accuracy {:.4}",
            metrics.loss_before, metrics.loss_after, metrics.accuracy_after
        ),
        WatchEvent::Published { round, checkpoint, regions, sha256 } => {
            format!(
                "round {round}: published {checkpoint} to {} (sha256 {})",
                regions.join(","),
                sha256.get(..12).unwrap_or(sha256)
            )
        }
        WatchEvent::RoundFailed { round, reason } => format!("round {round}: failed: {reason}"),
        WatchEvent::Evaluated { round, results } => {
            let parts: Vec<String> = results
                .iter()
                .map(|r| {
                    format!(
                        "{} loss {:.4} accuracy {:.4} ({} clients, {} samples)",
                        r.region.as_deref().unwrap_or("all"),
                        r.loss,
                        r.accuracy,
                        r.clients,
                        r.samples
                    )
                })
                .collect();
            format!("round {round}: evaluated on held-out data: {}", parts.join("; "))
        }
        WatchEvent::Blocked { round, reason } => {
            format!("after round {round}: blocked by policy (waits for a policy that allows it): {reason}")
        }
        WatchEvent::RunFinished { state, reason } => match reason {
            Some(r) => format!("run {}: {r}", state.as_str()),
            None => format!("run {}", state.as_str()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::EvalSummary;
    use fedra_types::metrics::TrainingMetrics;

    fn run(total: u32, completed: u32) -> RunStatus {
        RunStatus {
            id: "run-1".into(),
            model_name: "m".into(),
            state: RunState::Running,
            total_rounds: total,
            completed_rounds: completed,
            published_checkpoint: None,
            failure: None,
            created_at: "2026-12-01T00:00:00Z".into(),
            rounds: vec![],
            evaluations: vec![],
            policy_sha256: None,
            approvals_needed: 0,
            private: false,
        }
    }

    fn metrics(loss: f64, acc: f64) -> TrainingMetrics {
        TrainingMetrics { loss_before: 1.0, loss_after: loss, accuracy_after: acc, train_seconds: 0.1 }
    }

    #[test]
    fn a_round_moves_the_bar_through_its_phases() {
        let mut p = Progress::new(&run(3, 1));
        assert_eq!((p.completed_rounds, p.message().as_str()), (1, "running"));
        p.apply(&WatchEvent::Selected { round: 2, clients: vec!["a".into(), "b".into(), "c".into()], target: 3 });
        assert_eq!(p.message(), "round 2 training 0/3 clients");
        p.apply(&WatchEvent::UpdateReceived {
            round: 2,
            client: "a".into(),
            region: "eu".into(),
            samples: 10,
            reported: 1,
            target: 3,
            metrics: metrics(0.9, 0.5),
        });
        assert_eq!(p.message(), "round 2 training 1/3 clients");
        p.apply(&WatchEvent::Aggregated {
            round: 2,
            clients: 3,
            samples: 30,
            metrics: metrics(0.4312, 0.8123),
            fold_seconds: 0.0,
            update_bytes: 0,
        });
        assert_eq!(p.message(), "round 2 publishing 3/3 clients | loss 0.4312 acc 0.8123");
        p.apply(&WatchEvent::Published { round: 2, checkpoint: "c".into(), regions: vec![], sha256: "x".into() });
        assert_eq!(p.completed_rounds, 2);
        let all = EvalSummary { round: 2, region: None, clients: 2, samples: 9, loss: 0.5, accuracy: 0.8011 };
        let eu = EvalSummary { region: Some("eu".into()), accuracy: 0.1, ..all.clone() };
        p.apply(&WatchEvent::Evaluated { round: 2, results: vec![all, eu] });
        p.epsilon = Some(Epsilon { spent: 1.234, budget: Some(20.0) });
        assert_eq!(
            p.message(),
            "round 2 evaluated 3/3 clients | loss 0.4312 acc 0.8123 | eval acc 0.8011 | ε 1.23 of 20"
        );
        p.apply(&WatchEvent::RunFinished { state: RunState::Succeeded, reason: None });
        assert_eq!(p.phase, "succeeded");
    }

    #[test]
    fn a_replayed_older_round_never_moves_the_bar_back() {
        let mut p = Progress::new(&run(5, 4));
        p.apply(&WatchEvent::Published { round: 2, checkpoint: "c".into(), regions: vec![], sha256: "x".into() });
        assert_eq!(p.completed_rounds, 4);
    }

    #[test]
    fn a_round_recorded_while_the_next_one_trains_counts_without_moving_the_bar_back() {
        let mut p = Progress::new(&run(3, 0));
        p.apply(&WatchEvent::Selected { round: 2, clients: vec![], target: 3 });
        p.apply(&WatchEvent::Published { round: 1, checkpoint: "c".into(), regions: vec![], sha256: "x".into() });
        assert_eq!(p.completed_rounds, 1);
        assert_eq!(p.message(), "round 2 training 0/3 clients");
    }

    #[test]
    fn only_round_level_events_are_printed_above_the_bar() {
        assert!(!printed_above_the_bar(&WatchEvent::Selected { round: 1, clients: vec![], target: 1 }));
        assert!(printed_above_the_bar(&WatchEvent::RoundFailed { round: 1, reason: "deadline".into() }));
    }

    #[test]
    fn plain_lines_are_unchanged() {
        let e = WatchEvent::RunFinished { state: RunState::Failed, reason: Some("too few clients".into()) };
        assert_eq!(describe(&e), "run failed: too few clients");
        let e = WatchEvent::Published {
            round: 2,
            checkpoint: "run-1.r0002".into(),
            regions: vec!["eu".into(), "us".into()],
            sha256: "0123456789abcdef".into(),
        };
        assert_eq!(describe(&e), "round 2: published run-1.r0002 to eu,us (sha256 0123456789ab)");
    }
}
