//! `fedra policy`: checks, explains and compares policy sets on local files (see
//! `fedra_policy`); it never contacts the coordinator, so a compliance officer can review
//! a change before it is deployed.
//!
//! Exit codes follow [`crate::commands`]: 0 done, 64 an invalid policy set or argument
//! (every problem printed on stderr, one per line, as `file:line:col: message`).
//!
//! Like `fedra pki`, it ignores the connection options the other commands share.

use clap::Subcommand;
use fedra_policy::{PolicySet, diff};
use fedra_types::ids::RegionId;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug, PartialEq)]
pub enum PolicyCommand {
    /// Load a policy set (every *.toml file directly in DIR): print its sha256 and counts,
    /// or every problem as file:line:col: message (exit 64).
    Check { dir: PathBuf },
    /// Explain a policy set in plain language: per origin region, where its data may go
    /// and under which conditions, then who may do what.
    Explain {
        dir: PathBuf,
        /// Only this region's section.
        #[arg(long)]
        region: Option<String>,
    },
    /// What changes in meaning from the set in OLD to the set in NEW (not a text diff:
    /// reordered rules and edited comments change nothing).
    Diff { old: PathBuf, new: PathBuf },
    /// Would this run plan be admitted, refused or parked for approval under a policy set,
    /// and by which rules? The same decision the coordinator takes at submit (exit 0
    /// admitted, 2 pending approval, 1 refused).
    Simulate {
        plan: PathBuf,
        /// The policy set.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// Where the coordinator runs (a region of the set).
        #[arg(long)]
        location: String,
        /// Who submits it.
        #[arg(long, default_value = "fedra://scientist/simulated")]
        submitter: String,
        /// Regions the model was trained in by earlier runs (default: none).
        #[arg(long, value_delimiter = ',')]
        trained_in: Vec<String>,
    },
    /// Ask the coordinator (admins) to re-read its policy directory and put the set in force;
    /// an invalid set is refused with every problem and the old one stays.
    Apply,
}

/// What a command prints, and its exit code; computed apart from printing so tests can
/// call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Self { stdout, stderr: String::new(), code: 0 }
    }

    fn invalid(stderr: String) -> Self {
        Self { stdout: String::new(), stderr, code: 64 }
    }
}

/// Loads a set, or the outcome that lists every problem.
fn load(dir: &Path) -> Result<PolicySet, Outcome> {
    PolicySet::load(dir).map_err(|errors| {
        let mut text = String::new();
        for e in errors.iter() {
            let _ = writeln!(text, "{e}");
        }
        let n = errors.0.len();
        let _ = writeln!(text, "fedra: {}: {n} problem{}", dir.display(), if n == 1 { "" } else { "s" });
        Outcome::invalid(text)
    })
}

/// Runs one `fedra policy` command.
pub fn run(cmd: PolicyCommand) -> Outcome {
    let result = match cmd {
        PolicyCommand::Check { dir } => {
            load(&dir).map(|set| Outcome::ok(format!("{}: {}\n", dir.display(), set.summary())))
        }
        PolicyCommand::Explain { dir, region } => explain(&dir, region.as_deref()),
        PolicyCommand::Diff { old, new } => load(&old).and_then(|a| {
            let b = load(&new)?;
            let changes = diff(&a, &b);
            let (from, to) = (old.display(), new.display());
            let (ha, hb) = (&a.sha256()[..12], &b.sha256()[..12]);
            if changes.is_empty() {
                return Ok(Outcome::ok(format!(
                    "no changes in meaning from {from} (sha256 {ha}…) to {to} (sha256 {hb}…)\n"
                )));
            }
            let mut text = format!("changes in meaning from {from} (sha256 {ha}…) to {to} (sha256 {hb}…):\n");
            for c in changes {
                let _ = writeln!(text, "  - {c}");
            }
            Ok(Outcome::ok(text))
        }),
        PolicyCommand::Simulate { plan, policies, location, submitter, trained_in } => {
            simulate(&plan, &policies, &location, &submitter, &trained_in)
        }
        // It needs the coordinator, so `commands` runs it; nothing to do offline.
        PolicyCommand::Apply => Err(Outcome::invalid("fedra policy apply talks to the coordinator\n".into())),
    };
    result.unwrap_or_else(|outcome| outcome)
}

/// `fedra policy simulate`: the plan is validated and decided on exactly as the coordinator
/// does at submit (`fedra_coordinator::governance`), offline.
fn simulate(
    plan: &Path,
    dir: &Path,
    location: &str,
    submitter: &str,
    trained_in: &[String],
) -> Result<Outcome, Outcome> {
    use fedra_coordinator::governance::{Admission, Governance, PolicyConfig};
    let bad = |m: String| Outcome::invalid(format!("{m}\n"));
    let file = crate::plan_file::PlanFile::load(plan).map_err(|e| bad(e.to_string()))?;
    let plan = fedra_coordinator::grpc::convert::plan_from_pb(crate::convert::plan_to_pb(&file))
        .map_err(|e| bad(format!("{}: {e}", plan.display())))?;
    let location = RegionId::new(location).map_err(|e| bad(format!("--location: {e}")))?;
    let submitter = submitter.parse().map_err(|e| bad(format!("--submitter: {e}")))?;
    let trained = trained_in
        .iter()
        .map(|r| RegionId::new(r.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let policy = Governance::load(PolicyConfig { dir: dir.to_path_buf(), location, aggregate_in_region: false })
        .map_err(|e| bad(e.to_string()))?
        .snapshot()
        .expect("a loaded policy is in force");
    let facts = policy
        .facts(&plan, submitter, trained, fedra_coordinator::privacy::mechanism::DEFAULT_LATTICE_SLACK)
        .map_err(|e| bad(e.to_string()))?;
    let hash = &policy.sha256()[..12];
    Ok(match policy.decide(&facts) {
        Ok(Admission::Queued { detail }) => Outcome::ok(format!("admitted (policy set {hash}…): {detail}\n")),
        Ok(Admission::PendingApproval { approvals, detail }) => Outcome {
            stdout: format!("pending approval: {approvals} approval(s) needed (policy set {hash}…): {detail}\n"),
            stderr: String::new(),
            code: 2,
        },
        Err(findings) => {
            Outcome { stdout: format!("refused (policy set {hash}…): {findings}\n"), stderr: String::new(), code: 1 }
        }
    })
}

fn explain(dir: &Path, region: Option<&str>) -> Result<Outcome, Outcome> {
    let set = load(dir)?;
    let region = match region.map(RegionId::new).transpose() {
        Ok(region) => region,
        Err(e) => return Err(Outcome::invalid(format!("fedra: {e}\n"))),
    };
    if let Some(r) = &region
        && set.region(r).is_none()
    {
        let declared: Vec<&str> = set.regions().iter().map(|r| r.name.as_str()).collect();
        let msg =
            format!("fedra: region {r} is not declared in {} (declared: {})\n", dir.display(), declared.join(", "));
        return Err(Outcome::invalid(msg));
    }
    let header = format!("Policy set {} (sha256 {})\n\n", dir.display(), set.sha256());
    Ok(Outcome::ok(header + &set.explain(region.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn policies() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    #[test]
    fn policy_joins_the_fedra_command_tree() {
        crate::commands::Cli::command().debug_assert();
        let help = crate::commands::Cli::command().render_long_help().to_string();
        assert!(help.contains("policy"), "{help}");
        let parse = |args: &[&str]| crate::commands::Cli::try_parse_from(args).map(|cli| format!("{cli:?}"));
        let cli = parse(&["fedra", "policy", "explain", "policies", "--region", "eu-west"]).unwrap();
        assert!(cli.contains(r#"Policy(Explain { dir: "policies", region: Some("eu-west") })"#), "{cli}");
        assert!(parse(&["fedra", "policy", "diff", "a"]).is_err(), "NEW is required");
    }

    #[test]
    fn check_prints_a_summary_or_every_problem() {
        let out = run(PolicyCommand::Check { dir: policies() });
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("policy set sha256 "), "{}", out.stdout);
        assert_eq!(out.stdout.lines().count(), 1);

        let out = run(PolicyCommand::Check { dir: policies().join("tests/duplicate-region") });
        assert_eq!(out.code, 64);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert!(lines[0].contains("b-more-regions.toml:5:1: region eu-west is declared twice"), "{lines:?}");
        assert!(lines[1].ends_with("1 problem"), "{lines:?}");
    }

    #[test]
    fn explain_and_diff() {
        let out = run(PolicyCommand::Explain { dir: policies(), region: Some("ap-south".into()) });
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("Data from ap-south (IN):\n  - raw updates may be aggregated only in: ap-south\n"));
        let out = run(PolicyCommand::Explain { dir: policies(), region: Some("mars".into()) });
        assert_eq!(out.code, 64);
        assert!(out.stderr.contains("region mars is not declared"), "{out:?}");

        let out = run(PolicyCommand::Diff { old: policies(), new: policies() });
        assert!(out.stdout.starts_with("no changes in meaning"), "{out:?}");
        let out = run(PolicyCommand::Diff { old: policies().join("permissive"), new: policies() });
        assert_eq!(out.code, 0);
        assert!(out.stdout.contains("  - region eu-west (EU) added\n"), "{}", out.stdout);
    }

    #[test]
    fn simulate_decides_as_the_coordinator_does() {
        let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/plans/quickstart.toml");
        let sim = |policies: PathBuf, location: &str, trained: Vec<String>| {
            run(PolicyCommand::Simulate {
                plan: quickstart.clone(),
                policies,
                location: location.into(),
                submitter: "fedra://scientist/alice".into(),
                trained_in: trained,
            })
        };
        // The permissive set admits the quickstart's plan (regions eu, us, apac).
        let out = sim(policies().join("permissive"), "eu", vec![]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.starts_with("admitted (policy set "), "{}", out.stdout);
        // The example set declares none of those regions: refused, naming why.
        let out = sim(policies(), "eu-west", vec![]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stdout.starts_with("refused (policy set "), "{}", out.stdout);
        assert!(out.stdout.contains("eu"), "{}", out.stdout);
        let out = sim(policies(), "mars", vec![]);
        assert_eq!(out.code, 64);
        assert!(out.stderr.contains("location mars is not a region"), "{out:?}");
    }
}
