//! The policy in force, as the coordinator uses it: the compliance-reviewed set from
//! `policy_dir` (see `fedra_policy`), where this coordinator runs (`location`), and the
//! decisions the engine asks for at submit, round start, selection and publication.
//!
//! The set is swapped whole on reload and every decision reads one snapshot, so a decision
//! never mixes two sets. A reload that fails keeps the old set. Without a `policy_dir`
//! ([`Governance::disabled`]) the coordinator behaves as before policies existed: the run
//! plan's own `regions` and the config's privacy budgets are all there is.

use crate::ids::RegionId;
use crate::plan::RunPlan;
use crate::privacy::{Budget, PrivacyScope, RoundMechanism, accountant};
use crate::store::{CheckpointFilter, RunRecord, Store, StoreError};
use fedra_policy::{Finding, PlanFacts, PolicySet, PrivacyFacts, Verdict};
use fedra_types::identity::Identity;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// `policy_dir` and `location` from the coordinator config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub dir: PathBuf,
    pub location: RegionId,
    /// A global coordinator: raw updates are aggregated in their origin region by its
    /// regional aggregator, and only aggregates come to `location`.
    pub aggregate_in_region: bool,
}

/// Why a policy set could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    #[error("policy set {dir}:\n{problems}")]
    Invalid { dir: String, problems: fedra_policy::PolicyErrors },
    #[error("location {location} is not a region of the policy set in {dir} (declared: {declared})")]
    UnknownLocation { location: RegionId, dir: String, declared: String },
    #[error("no policy_dir is configured, so there is no policy to reload")]
    Disabled,
}

/// One policy set and where this coordinator runs: what every decision reads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub set: Arc<PolicySet>,
    pub location: RegionId,
    /// See [`PolicyConfig::aggregate_in_region`].
    pub aggregate_in_region: bool,
}

impl Snapshot {
    pub fn sha256(&self) -> &str {
        self.set.sha256()
    }

    /// The budget of a privacy scope under this set (`None`: no rule covers it).
    pub fn budget(&self, scope: &PrivacyScope) -> Option<Budget> {
        self.set
            .privacy_rule(&scope.model, &scope.region)
            .map(|r| Budget { epsilon: r.terms.epsilon.get(), delta: r.terms.delta.get() })
    }

    /// Whether clients of `region` may take part in a run aggregated here: their raw
    /// updates may be aggregated at this coordinator's location.
    pub fn may_select(&self, region: &RegionId) -> bool {
        let at = if self.aggregate_in_region { region } else { &self.location };
        self.set.may_aggregate_at(region, at).is_ok()
    }

    /// Every region whose clients [`Self::may_select`] (undeclared regions never are):
    /// computed once per round so that scheduling looks regions up instead of re-deciding.
    pub fn selectable_regions(&self) -> std::collections::BTreeSet<RegionId> {
        self.set.regions().iter().map(|r| r.name.clone()).filter(|r| self.may_select(r)).collect()
    }

    /// The regions a checkpoint trained on `origins` may be written to, out of `targets`,
    /// and the refusal for each one withheld.
    pub fn publishable(&self, origins: &[RegionId], targets: &[RegionId]) -> (Vec<RegionId>, Vec<(RegionId, String)>) {
        let mut allowed = Vec::new();
        let mut withheld = Vec::new();
        for target in targets {
            match self.set.may_publish(origins, target) {
                Ok(()) => allowed.push(target.clone()),
                Err(refusal) => withheld.push((target.clone(), refusal.to_string())),
            }
        }
        (allowed, withheld)
    }

    /// Decides on a plan's facts (see [`PolicySet::admit`]).
    pub fn admit(&self, facts: &PlanFacts) -> Verdict {
        self.set.admit(facts)
    }
}

/// What the policy made of a submitted plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Queue it; `detail` names the rules that allowed it.
    Queued { detail: String },
    /// Park it until `approvals` distinct approvers approve; `detail` names the rules.
    PendingApproval { approvals: u32, detail: String },
}

impl Snapshot {
    /// The facts the policy decides a plan on. The projected ε is the whole run's, at the
    /// smallest δ of the privacy rules covering its regions (∞ when none covers them: the
    /// policy then refuses the plan for want of a budget).
    ///
    /// Publication: a run publishes to those of its regions that the policy allows for every
    /// origin it may train on (the others are withheld at publication and audited), so a
    /// plan is refused for publication only when no region at all may receive its model.
    ///
    /// # Errors
    /// The plan's privacy parameters do not make a mechanism.
    pub fn facts(
        &self,
        plan: &RunPlan,
        submitter: Identity,
        trained_before: Vec<RegionId>,
        lattice_slack: f64,
    ) -> Result<PlanFacts, crate::privacy::PrivacyError> {
        let regions: Vec<RegionId> = plan.regions.iter().cloned().collect();
        let covered: Vec<RegionId> = if regions.is_empty() {
            self.set.regions().iter().map(|r| r.name.clone()).collect()
        } else {
            regions.clone()
        };
        let privacy = match &plan.privacy {
            None => None,
            Some(p) => {
                let projected_epsilon = match self.set.strictest_delta(plan.model.name(), &covered) {
                    Some(delta) => {
                        let cost = RoundMechanism::new(
                            p,
                            plan.model.layout().total(),
                            p.clipping.initial_norm(),
                            lattice_slack,
                        )?
                        .cost;
                        accountant::epsilon(&vec![cost; plan.rounds as usize], delta)?.epsilon
                    }
                    None => f64::INFINITY,
                };
                Some(PrivacyFacts { noise_multiplier: p.noise_multiplier, projected_epsilon })
            }
        };
        let publish_to: Vec<RegionId> =
            covered.iter().filter(|target| self.set.may_publish(&covered, target).is_ok()).cloned().collect();
        Ok(PlanFacts {
            model: plan.model.name().to_string(),
            regions,
            location: self.location.clone(),
            aggregate_in_region: self.aggregate_in_region,
            rounds: plan.rounds,
            min_clients: plan.min_clients,
            privacy,
            // Empty (no region may receive it) makes the policy name every rule in the way.
            publish_to,
            trained_before,
            submitter,
        })
    }

    /// Decides on a plan: queued, parked for approval, or refused with every finding.
    ///
    /// # Errors
    /// The findings of a refusal, rendered (rule file:line, text, reason), one after another.
    pub fn decide(&self, facts: &PlanFacts) -> Result<Admission, String> {
        let hash = self.sha256();
        match self.admit(facts) {
            Verdict::Admit { rules } => {
                let rules = rules.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                Ok(Admission::Queued { detail: format!("admitted under policy set {hash} by {rules}") })
            }
            Verdict::PendingApproval { approvals_needed, findings } => Ok(Admission::PendingApproval {
                approvals: approvals_needed,
                detail: format!(
                    "waiting for {approvals_needed} approval(s) under policy set {hash}: {}",
                    render_all(&findings)
                ),
            }),
            Verdict::Refuse { findings } => Err(render_all(&findings)),
        }
    }
}

/// The regions a model (by name) has been published to by earlier runs: "a region the model
/// was never trained in before" is judged against these.
///
/// # Errors
/// Store failures.
pub async fn trained_regions(store: &dyn Store, model: &str) -> Result<Vec<RegionId>, StoreError> {
    let filter = CheckpointFilter { model_name: Some(model.to_string()), ..Default::default() };
    let mut regions: Vec<RegionId> = store
        .list_checkpoints(&filter)
        .await?
        .into_iter()
        .flat_map(|c| c.locations.into_iter().map(|(region, _)| region))
        .collect();
    regions.sort();
    regions.dedup();
    Ok(regions)
}

/// The policy's decision on `plan` submitted by `owner` (`None`: a coordinator without
/// identities), given the regions the model was trained in before (`trained_regions`):
/// queued, parked for approval, or (inner `Err`) refused with every finding rendered.
///
/// # Errors
/// A plan whose privacy mechanism cannot be built.
pub fn decide_plan(
    policy: &Snapshot,
    plan: &RunPlan,
    owner: Option<&Identity>,
    trained_before: Vec<RegionId>,
    lattice_slack: f64,
) -> Result<Result<Admission, String>, crate::privacy::PrivacyError> {
    let submitter = owner.cloned().unwrap_or_else(insecure_submitter);
    let facts = policy.facts(plan, submitter, trained_before, lattice_slack)?;
    Ok(policy.decide(&facts))
}

/// Whether the policy in force still allows a stored run: `Err` with the refusal's
/// findings when it would refuse it now. A run that would now need approval is still
/// allowed: it was admitted (and approved where needed) when submitted, and approvals are
/// asked for at submission only; which is also why the regions the model was trained in
/// (an approval condition only) need not be read here.
///
/// # Errors
/// The refusal, rendered.
pub fn still_allowed(policy: &Snapshot, run: &RunRecord, lattice_slack: f64) -> Result<(), String> {
    match decide_plan(policy, &run.plan, run.owner.as_ref(), Vec::new(), lattice_slack) {
        Ok(decision) => decision.map(drop),
        // A stored plan whose mechanism cannot be rebuilt cannot be allowed either.
        Err(e) => Err(e.to_string()),
    }
}

/// Who submitted a run to a coordinator without identities (`--insecure`): everyone may
/// do everything there, so an admin.
fn insecure_submitter() -> Identity {
    "fedra://admin/insecure".parse().expect("a valid identity")
}

/// Every finding as `fedra_policy` writes it (`reason; see file:line (rule)`), separated
/// by ` | `.
pub fn render_all(findings: &[Finding]) -> String {
    findings.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | ")
}

/// The policy in force, shared by the engine and the gRPC edge. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    config: Option<PolicyConfig>,
    current: Arc<RwLock<Option<Snapshot>>>,
}

impl Governance {
    /// No policy: the coordinator as before policies existed.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Loads `config.dir` and checks that `config.location` is one of its regions.
    ///
    /// # Errors
    /// Every problem of the set (file:line:col), or an undeclared location.
    pub fn load(config: PolicyConfig) -> Result<Self, GovernanceError> {
        let snapshot = read(&config)?;
        Ok(Self { config: Some(config), current: Arc::new(RwLock::new(Some(snapshot))) })
    }

    /// The set in force now (`None` when disabled).
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The budget of a privacy scope: the policy set's when one is in force (the only
    /// source then), else the coordinator config's `[[privacy.budgets]]`.
    pub fn budget(&self, config_budgets: &crate::privacy::Budgets, scope: &PrivacyScope) -> Option<Budget> {
        match self.snapshot() {
            Some(s) => s.budget(scope),
            None => config_budgets.for_scope(scope),
        }
    }

    /// Re-reads the policy directory and puts the new set in force. An invalid set is
    /// refused and the old one stays. Returns the old and new hashes.
    ///
    /// # Errors
    /// [`GovernanceError::Disabled`] without a policy_dir; the new set's problems.
    pub fn reload(&self) -> Result<(Option<String>, String), GovernanceError> {
        let config = self.config.as_ref().ok_or(GovernanceError::Disabled)?;
        let fresh = read(config)?;
        let new_hash = fresh.sha256().to_string();
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = current.replace(fresh).map(|s| s.sha256().to_string());
        Ok((old, new_hash))
    }
}

/// Puts a re-read policy set in force and records it (or its refusal) in the audit log.
#[derive(Clone)]
pub struct PolicyReloader {
    governance: Governance,
    store: Arc<dyn crate::store::Store>,
    engine: crate::round::EngineHandle,
}

impl PolicyReloader {
    pub fn new(
        governance: Governance,
        store: Arc<dyn crate::store::Store>,
        engine: crate::round::EngineHandle,
    ) -> Self {
        Self { governance, store, engine }
    }

    /// The policy in force.
    pub fn governance(&self) -> &Governance {
        &self.governance
    }

    /// Re-reads the policy directory. A valid set replaces the one in force (audited as
    /// `policy_applied` with both hashes); an invalid one is refused, the old set stays, and
    /// the refusal with every problem is audited as `policy_refused` and returned.
    ///
    /// # Errors
    /// The new set's problems, no policy configured, or the audit write failing.
    pub async fn reload(&self, actor: &str) -> Result<String, String> {
        let (action, detail, result) = match self.governance.reload() {
            Ok((old, new)) => {
                tracing::info!(old = ?old, new = %new, "policy set reloaded");
                let old = old.unwrap_or_else(|| "none".into());
                (
                    fedra_types::audit::AuditAction::PolicyApplied,
                    format!("policy set {new} in force (was {old})"),
                    Ok(new),
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy reload refused; the set in force stays");
                (fedra_types::audit::AuditAction::PolicyRefused, e.to_string(), Err(e.to_string()))
            }
        };
        crate::audit::record(self.store.as_ref(), crate::audit::draft(actor, action, detail))
            .await
            .map_err(|e| e.to_string())?;
        if result.is_ok() {
            // Runs the old set blocked may be allowed now; they go back to the queue.
            self.engine.policy_changed().await.map_err(|e| e.to_string())?;
        }
        result
    }
}

fn read(config: &PolicyConfig) -> Result<Snapshot, GovernanceError> {
    let dir = config.dir.display().to_string();
    let set =
        PolicySet::load(&config.dir).map_err(|problems| GovernanceError::Invalid { dir: dir.clone(), problems })?;
    if set.jurisdiction(&config.location).is_none() {
        let declared = set.regions().iter().map(|r| r.name.to_string()).collect::<Vec<_>>().join(", ");
        return Err(GovernanceError::UnknownLocation { location: config.location.clone(), dir, declared });
    }
    Ok(Snapshot {
        set: Arc::new(set),
        location: config.location.clone(),
        aggregate_in_region: config.aggregate_in_region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(sub: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies").join(sub)
    }

    fn id(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    #[test]
    fn the_example_set_loads_at_a_declared_location_only() {
        let g =
            Governance::load(PolicyConfig { dir: policies(""), location: id("eu-west"), aggregate_in_region: false })
                .unwrap();
        let s = g.snapshot().unwrap();
        assert_eq!(s.sha256().len(), 64);
        assert!(s.may_select(&id("eu-central")) && s.may_select(&id("us-east")));
        assert!(!s.may_select(&id("ap-south")), "IN data stays in ap-south");
        let e = Governance::load(PolicyConfig { dir: policies(""), location: id("mars"), aggregate_in_region: false })
            .unwrap_err();
        assert!(e.to_string().contains("location mars is not a region"), "{e}");
    }

    #[test]
    fn an_invalid_reload_keeps_the_set_in_force() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(policies("permissive/permissive.toml"), dir.path().join("p.toml")).unwrap();
        let g =
            Governance::load(PolicyConfig { dir: dir.path().into(), location: id("eu"), aggregate_in_region: false })
                .unwrap();
        let before = g.snapshot().unwrap().sha256().to_string();
        std::fs::write(dir.path().join("broken.toml"), "version = 1\n[[region]]\nname = 3\n").unwrap();
        let e = g.reload().unwrap_err();
        assert!(e.to_string().contains("broken.toml:"), "{e}");
        assert_eq!(g.snapshot().unwrap().sha256(), before);
        std::fs::remove_file(dir.path().join("broken.toml")).unwrap();
        let (old, new) = g.reload().unwrap();
        assert_eq!((old.as_deref(), new.as_str()), (Some(before.as_str()), before.as_str()));
        assert!(matches!(Governance::disabled().reload(), Err(GovernanceError::Disabled)));
    }
}
