//! The example set (`policies/*.toml`) and the permissive quickstart set
//! (`policies/permissive/`) load, and decide, explain and diff as their comments promise.

use fedra_policy::{Action, PlanFacts, PolicySet, PrivacyFacts, Verdict, diff};
use fedra_types::identity::{Identity, Role};
use fedra_types::ids::RegionId;
use std::path::{Path, PathBuf};

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn example() -> PolicySet {
    PolicySet::load(&policies()).unwrap_or_else(|e| panic!("{e}"))
}

fn r(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

fn id(uri: &str) -> Identity {
    uri.parse().unwrap()
}

/// The 1-based line of the table header just above the first line containing `needle`.
fn header_line(file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(policies().join(file)).unwrap();
    let at = text.lines().position(|l| l.contains(needle)).unwrap();
    text.lines().take(at).collect::<Vec<_>>().iter().rposition(|l| l.starts_with("[[")).unwrap() + 1
}

/// An EU run on both EU regions, coordinated from eu-west, ε 3 at z = 1.
fn eu_plan() -> PlanFacts {
    PlanFacts {
        model: "digits".into(),
        regions: vec![r("eu-west"), r("eu-central")],
        location: r("eu-west"),
        aggregate_in_region: false,
        rounds: 50,
        min_clients: 10,
        privacy: Some(PrivacyFacts { noise_multiplier: 1.0, projected_epsilon: 3.0 }),
        publish_to: vec![],
        trained_before: vec![r("eu-west"), r("eu-central")],
        submitter: id("fedra://scientist/alice"),
    }
}

fn refusals(v: Verdict) -> Vec<String> {
    match v {
        Verdict::Refuse { findings } => findings.iter().map(ToString::to_string).collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_example_set_loads_in_file_name_order() {
    let set = example();
    assert_eq!(
        set.files(),
        ["approvals.toml", "privacy.toml", "promotion.toml", "regions.toml", "residency.toml", "roles.toml"]
    );
    let regions: Vec<&str> = set.regions().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(regions, ["eu-west", "eu-central", "us-east", "ap-south"], "tests/ and permissive/ are not part of it");
    assert_eq!(set.sha256().len(), 64);
    assert!(
        set.summary().contains("6 files, 4 regions, 3 residency, 4 privacy, 4 approval, 3 promotion rules"),
        "{}",
        set.summary()
    );
}

#[test]
fn residency_decisions_name_the_rule() {
    let set = example();
    let refusal = set.may_aggregate_at(&r("eu-west"), &r("us-east")).unwrap_err();
    let rule = refusal.rule.clone().unwrap();
    assert!(rule.file.ends_with("residency.toml"), "{rule}");
    assert_eq!(rule.line, header_line("residency.toml", "origin = \"EU\""));
    assert_eq!(
        refusal.to_string(),
        format!(
            "raw updates from eu-west (EU) may be aggregated only in eu-west, eu-central, not in us-east; see {}:{} (residency origin=EU aggregate_at=[EU] publish_to=[EU] export_min_clients=10 export_requires_dp=true export_min_noise_multiplier=0.8)",
            rule.file, rule.line
        )
    );
    assert!(set.may_aggregate_at(&r("us-east"), &r("eu-west")).is_ok());
    assert!(set.may_aggregate_at(&r("ap-south"), &r("eu-west")).is_err());
    assert!(set.may_aggregate_at(&r("ap-south"), &r("ap-south")).is_ok());
    assert!(set.export_allowed(&r("eu-central"), 10, Some(0.8)).is_ok());
    assert!(set.export_allowed(&r("eu-central"), 9, Some(1.0)).is_err());
    assert!(set.export_allowed(&r("eu-central"), 12, None).is_err());
    assert!(set.export_allowed(&r("us-east"), 5, None).is_ok());
    assert!(set.may_publish(&[r("us-east")], &r("ap-south")).is_ok());
    let e = set.may_publish(&[r("us-east"), r("eu-west")], &r("us-east")).unwrap_err();
    assert_eq!(e.reason, "models trained on eu-west data may be published only to eu-west, eu-central, not to us-east");
    assert_eq!(set.jurisdiction(&r("ap-south")).unwrap().as_str(), "IN");
}

#[test]
fn privacy_and_role_decisions() {
    let set = example();
    assert_eq!(set.privacy_rule("sepsis-risk", &r("eu-west")).unwrap().terms.epsilon.get(), 2.0);
    assert_eq!(set.privacy_rule("digits", &r("eu-west")).unwrap().terms.epsilon.get(), 8.0);
    assert!(set.privacy_rule("digits", &r("us-east")).unwrap().terms.allow_non_private);
    let e = set.role_may(Role::Scientist, Action::Approve).unwrap_err();
    assert_eq!(e.reason, "role scientist may not approve runs (only: approver, admin)");
    assert!(e.rule.unwrap().file.ends_with("roles.toml"));
    assert!(set.role_may(Role::Approver, Action::Approve).is_ok());
    assert!(set.role_may(Role::Compliance, Action::ReadAudit).is_ok());
    assert!(set.may_read_checkpoint(&id("fedra://scientist/alice"), &r("ap-south")).is_err());
    assert!(set.may_read_checkpoint(&id("fedra://scientist/alice"), &r("eu-central")).is_ok());
    assert!(set.may_read_checkpoint(&id("fedra://inference/us-east/n1"), &r("us-east")).is_ok());
    assert!(set.may_read_checkpoint(&id("fedra://inference/us-east/n1"), &r("eu-west")).is_err());
}

#[test]
fn admission_admits_parks_and_refuses() {
    let set = example();
    let Verdict::Admit { rules } = set.admit(&eu_plan()) else { panic!("{:?}", set.admit(&eu_plan())) };
    assert!(rules.iter().any(|r| r.file.ends_with("residency.toml")));
    assert!(rules.iter().any(|r| r.file.ends_with("privacy.toml")));

    let mut plan = eu_plan();
    plan.privacy = Some(PrivacyFacts { noise_multiplier: 1.0, projected_epsilon: 6.0 });
    match set.admit(&plan) {
        Verdict::PendingApproval { approvals_needed: 1, findings } => {
            assert_eq!(findings.len(), 1, "{findings:?}");
            assert!(
                findings[0]
                    .message
                    .starts_with("approval rule high-epsilon requires 1 approval: projected ε 6 is above 4")
            );
            assert_eq!(findings[0].rule.as_ref().unwrap().line, header_line("approvals.toml", "high-epsilon"));
        }
        other => panic!("{other:?}"),
    }

    let mut plan = eu_plan();
    plan.trained_before = vec![r("eu-west")];
    plan.rounds = 500;
    match set.admit(&plan) {
        Verdict::PendingApproval { approvals_needed: 1, findings } => {
            let names: Vec<&str> = findings.iter().map(|f| f.rule.as_ref().unwrap().text.as_str()).collect();
            assert_eq!(
                names,
                [
                    "approval name=new-region approvals=1 new_region=true",
                    "approval name=long-run approvals=1 rounds_above=200"
                ]
            );
        }
        other => panic!("{other:?}"),
    }

    // US data at the EU coordinator, published in the EU: a cross-border publication.
    let mut plan = eu_plan();
    plan.regions = vec![r("us-east")];
    plan.publish_to = vec![r("eu-west")];
    plan.trained_before = vec![r("us-east")];
    plan.privacy = None;
    match set.admit(&plan) {
        Verdict::PendingApproval { approvals_needed: 2, findings } => assert_eq!(findings.len(), 2, "{findings:?}"),
        other => panic!("{other:?}"),
    }

    let mut plan = eu_plan();
    plan.privacy = Some(PrivacyFacts { noise_multiplier: 1.0, projected_epsilon: 9.0 });
    let r2 = refusals(set.admit(&plan));
    assert_eq!(r2.len(), 2, "one per EU region: {r2:#?}");
    assert!(r2[0].starts_with(
        "model digits on eu-west data has a privacy budget of ε ≤ 8 at δ = 1e-6; this run would spend ε = 9; see "
    ));

    let mut plan = eu_plan();
    plan.privacy = None;
    let r3 = refusals(set.admit(&plan));
    assert!(
        r3.iter().any(|f| f.starts_with(
            "an aggregate of eu-central data may leave eu-central only as a differentially private release"
        )),
        "{r3:#?}"
    );
    assert!(
        r3.iter().any(|f| f.starts_with("model digits may be trained on eu-west data only with differential privacy")),
        "{r3:#?}"
    );

    let mut plan = eu_plan();
    plan.privacy = Some(PrivacyFacts { noise_multiplier: 0.5, projected_epsilon: 3.0 });
    assert!(refusals(set.admit(&plan)).iter().any(|f| f.contains("noise multiplier ≥ 0.8; this one has 0.5")));

    let mut plan = eu_plan();
    plan.min_clients = 5;
    assert!(
        refusals(set.admit(&plan))[0].contains("at least 10 contributors; this run's rounds may aggregate as few as 5")
    );

    let mut plan = eu_plan();
    plan.submitter = id("fedra://approver/bob");
    assert!(refusals(set.admit(&plan))[0].starts_with("role approver may not submit runs"));

    let mut plan = eu_plan();
    plan.regions = vec![]; // every declared region, ap-south included
    let r4 = refusals(set.admit(&plan));
    assert!(r4.iter().any(|f| f.starts_with("raw updates from ap-south (IN) may be aggregated only in ap-south, not in eu-west")), "{r4:#?}");

    let mut plan = eu_plan();
    plan.regions = vec![r("eu-north")];
    assert!(refusals(set.admit(&plan))[0].contains("region eu-north is not declared"));
}

#[test]
fn the_permissive_set_allows_everything_but_keeps_roles() {
    let set = PolicySet::load(&policies().join("permissive")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.regions().len(), 3);
    let plan = PlanFacts {
        model: "digits".into(),
        regions: vec![],
        location: r("us"),
        aggregate_in_region: false,
        rounds: 1_000,
        min_clients: 1,
        privacy: None,
        publish_to: vec![],
        trained_before: vec![],
        submitter: id("fedra://scientist/alice"),
    };
    assert!(matches!(set.admit(&plan), Verdict::Admit { .. }), "{:?}", set.admit(&plan));
    let mut private = plan.clone();
    private.privacy = Some(PrivacyFacts { noise_multiplier: 0.3, projected_epsilon: 11.0 });
    assert!(matches!(set.admit(&private), Verdict::Refuse { .. }), "ε 11 is over the budget of 10");
    assert!(set.role_may(Role::Scientist, Action::Approve).is_err());
    assert!(set.may_read_checkpoint(&id("fedra://inference/apac/n1"), &r("apac")).is_ok());
    assert!(set.may_read_checkpoint(&id("fedra://inference/apac/n1"), &r("eu")).is_err());
}

#[test]
fn explain_eu_west_in_plain_language() {
    let text = example().explain(Some(&r("eu-west")));
    assert_eq!(text, EXPLAIN_EU_WEST);
}

const EXPLAIN_EU_WEST: &str = "\
Data from eu-west (EU):
  - raw updates may be aggregated only in: eu-west, eu-central
  - an aggregate may leave eu-west only with at least 10 contributors and as a differentially private release with noise multiplier ≥ 0.8
  - models trained on it may be published to: eu-west, eu-central
  - privacy budget: ε ≤ 8 at δ = 1e-6 per model (minimum noise multiplier 0.8); non-private runs are not allowed; per-client metrics stay in the coordinator
  - privacy budget for model sepsis-risk: ε ≤ 2 at δ = 1e-6 (minimum noise multiplier 1.1); non-private runs are not allowed; per-client metrics stay in the coordinator
  - a model serves here only when its accuracy is at most 0.01 below the serving checkpoint's, it was evaluated on at least 200 held-out samples here, its best and worst region accuracies differ by at most 0.1 and 1 approver approved it; a failed gate cannot be overridden
  - model sepsis-risk serves here only when its accuracy is at most 0 below the serving checkpoint's, it was evaluated on at least 500 held-out samples here and 2 approvers approved it; a failed gate cannot be overridden
  - a run on this data waits for approval when:
      - its projected ε is above 4: 1 approval (rule high-epsilon)
      - it publishes a model outside EU: 2 approvals (rule cross-border-publication)
      - the model was never trained on eu-west data before: 1 approval (rule new-region)
      - it has more than 200 rounds: 1 approval (rule long-run)
";

#[test]
fn explain_lists_every_region_then_roles() {
    let text = example().explain(None);
    let headers: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        headers,
        [
            "Data from ap-south (IN):",
            "",
            "Data from eu-central (EU):",
            "",
            "Data from eu-west (EU):",
            "",
            "Data from us-east (US):",
            "",
            "Roles:"
        ]
    );
    assert!(text.contains("  - read checkpoints: scientist (eu-west, eu-central, us-east), compliance (all regions), approver (all regions), inference (own region only), admin (all regions)\n"), "{text}");
}

/// Copies the example set into a temporary directory, applying `edit` to each file's text.
fn edited_copy(edit: impl Fn(&str, String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in example().files() {
        let text = std::fs::read_to_string(policies().join(name)).unwrap();
        std::fs::write(dir.path().join(name), edit(name, text)).unwrap();
    }
    dir
}

#[test]
fn reordering_rules_and_editing_comments_changes_nothing() {
    let dir = edited_copy(|name, text| {
        let text = text.replace("# ", "# (reviewed) ");
        if name != "approvals.toml" {
            return text;
        }
        // Reverse the order of the four approval rules.
        let (head, rules) = text.split_once("\n[[approval]]").unwrap();
        let mut blocks: Vec<String> = format!("[[approval]]{rules}")
            .split("[[approval]]")
            .skip(1)
            .map(|b| format!("[[approval]]{}", b.trim_end()))
            .collect();
        blocks.reverse();
        format!("{head}\n{}\n", blocks.join("\n\n"))
    });
    let edited = PolicySet::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(edited.sha256(), example().sha256(), "the text changed");
    assert_eq!(diff(&example(), &edited), vec![]);
}

#[test]
fn diff_names_changes_in_plain_language() {
    let dir = edited_copy(|name, text| match name {
        "residency.toml" => text.replacen("export_min_clients = 10", "export_min_clients = 20", 1),
        "privacy.toml" => text.replace("epsilon = 10", "epsilon = 12"),
        "roles.toml" => {
            text.replace("approve = [\"approver\", \"admin\"]", "approve = [\"approver\", \"admin\", \"compliance\"]")
        }
        "approvals.toml" => text.replace("rounds_above = 200", "rounds_above = 500"),
        "promotion.toml" => text.replace("min_samples = 50\n", "min_samples = 50\napprovals = 1\n"),
        _ => text,
    });
    let edited = PolicySet::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let changes: Vec<String> = diff(&example(), &edited).iter().map(ToString::to_string).collect();
    assert_eq!(changes, DIFF);
}

const DIFF: [&str; 7] = [
    "data from eu-central: export tightened: an aggregate now needs at least 20 contributors to leave eu-central (before: 10)",
    "data from eu-west: export tightened: an aggregate now needs at least 20 contributors to leave eu-west (before: 10)",
    "privacy for models without a rule of their own on us-east data: budget raised from ε ≤ 10 at δ = 1e-5 to ε ≤ 12 at δ = 1e-5",
    "approval rule long-run changed: 1 approval when it has more than 500 rounds (before: 1 approval when it has more than 200 rounds)",
    "promotion of models without a rule of their own to serve in ap-south tightened: now only when its accuracy is at most 0.02 below the serving checkpoint's, it was evaluated on at least 50 held-out samples here and 1 approver approved it; an approver may override a failed gate, with a reason (before: only when its accuracy is at most 0.02 below the serving checkpoint's and it was evaluated on at least 50 held-out samples here; an approver may override a failed gate, with a reason)",
    "promotion of models without a rule of their own to serve in us-east tightened: now only when its accuracy is at most 0.02 below the serving checkpoint's, it was evaluated on at least 50 held-out samples here and 1 approver approved it; an approver may override a failed gate, with a reason (before: only when its accuracy is at most 0.02 below the serving checkpoint's and it was evaluated on at least 50 held-out samples here; an approver may override a failed gate, with a reason)",
    "role compliance may now approve runs",
];

#[test]
fn promotion_rules_pick_the_most_specific_and_name_the_rule() {
    let set = example();
    let eu = set.promotion_rule("credit-risk", &r("eu-central")).unwrap();
    assert_eq!(eu.terms.approvals, 1);
    assert_eq!(eu.terms.min_samples, Some(200));
    assert!(!eu.terms.allow_override);
    assert_eq!(eu.rule.line, header_line("promotion.toml", "tolerance = 0.01"));
    assert_eq!(
        eu.rule.text,
        "promotion model=* region=EU metric=accuracy tolerance=0.01 min_samples=200 max_region_gap=0.1 approvals=1"
    );
    // A named model beats a region: sepsis-risk's rule ("*" regions) applies in the EU too.
    let sepsis = set.promotion_rule("sepsis-risk", &r("eu-west")).unwrap();
    assert_eq!((sepsis.terms.approvals, sepsis.terms.min_samples), (2, Some(500)));
    let us = set.promotion_rule("credit-risk", &r("us-east")).unwrap();
    assert!(us.terms.allow_override && us.terms.approvals == 0, "{us:?}");
    assert!(set.promotion_rule("credit-risk", &r("mars")).is_none(), "undeclared regions have no rule");
}

#[test]
fn regional_aggregators_keep_raw_updates_in_their_origin() {
    let set = example();
    // US data may be aggregated only in the US or the EU: a flat run coordinated from
    // ap-south would send its raw updates there.
    let plan = PlanFacts {
        regions: vec![r("us-east")],
        location: r("ap-south"),
        privacy: None,
        trained_before: vec![],
        ..eu_plan()
    };
    let flat = refusals(set.admit(&plan)).join("\n");
    assert!(flat.contains("raw updates from us-east") && flat.contains("not in ap-south"), "{flat}");
    // Through regional aggregators the raw updates stay in us-east; only what the export
    // rules say about the aggregate may still refuse the run.
    let tiers = PlanFacts { aggregate_in_region: true, ..plan };
    let found = match set.admit(&tiers) {
        Verdict::Refuse { findings } => findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    };
    assert!(!found.contains("raw updates from us-east"), "{found}");
}
