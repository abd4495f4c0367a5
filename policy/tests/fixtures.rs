//! Every malformed fixture in `policies/tests/` fails to load with exactly the problems its
//! `# expect: <Kind> <file>:<line>:<column>` comments state, and each problem's message
//! starts with that `file:line:column`.

use fedra_policy::{PolicyError, PolicySet, PolicySource};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/tests")
}

/// `(kind, "file:line:column")` from a fixture's `# expect:` comments.
fn expectations(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let (kind, place) = rest.split_once(' ').expect("# expect: <Kind> <file>:<line>:<column>");
            (kind.to_string(), place.trim().to_string())
        })
        .collect()
}

fn file_name(path: &str) -> &str {
    Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path)
}

fn load(path: &Path) -> (Result<PolicySet, fedra_policy::PolicyErrors>, Vec<(String, String)>) {
    if path.is_dir() {
        let mut expected = Vec::new();
        for entry in std::fs::read_dir(path).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                expected.extend(expectations(&std::fs::read_to_string(&p).unwrap()));
            }
        }
        (PolicySet::load(path), expected)
    } else {
        let text = std::fs::read_to_string(path).unwrap();
        let expected = expectations(&text);
        let name = file_name(path.to_str().unwrap()).to_string();
        let source = PolicySource { name, path: path.display().to_string(), text };
        (PolicySet::from_sources(vec![source]), expected)
    }
}

#[test]
fn every_fixture_fails_with_exactly_its_documented_problems() {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(fixtures()).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    let mut kinds = BTreeSet::new();
    let mut fixtures = 0;
    for path in entries.iter().filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "toml")) {
        let (result, mut expected) = load(path);
        assert!(!expected.is_empty(), "{} has no `# expect:` comment", path.display());
        let errors = match result {
            Ok(_) => panic!("{} loaded without error", path.display()),
            Err(errors) => errors,
        };
        let mut got: Vec<(String, String)> = Vec::new();
        for e in errors.iter() {
            let at = e.location().unwrap_or_else(|| panic!("{}: {e} has no location", path.display()));
            let message = e.to_string();
            assert!(message.starts_with(&format!("{at}: ")), "message does not start with file:line:col: {message}");
            got.push((e.kind().to_string(), format!("{}:{}:{}", file_name(&at.file), at.line, at.column)));
        }
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "{}:\n{errors}", path.display());
        kinds.extend(got.into_iter().map(|(kind, _)| kind));
        fixtures += 1;
    }
    assert!(fixtures >= 12, "only {fixtures} fixtures");
    for kind in [
        "Syntax",
        "MissingVersion",
        "UnsupportedVersion",
        "UnknownKey",
        "MissingKey",
        "WrongType",
        "OutOfRange",
        "InvalidValue",
        "EmptyList",
        "InvalidName",
        "UnknownSelector",
        "UnknownRole",
        "DuplicateRegion",
        "DuplicateRule",
        "NoCondition",
    ] {
        assert!(kinds.contains(kind), "no fixture for {kind}");
    }
}

#[test]
fn a_duplicate_region_names_both_files() {
    let errors = PolicySet::load(&fixtures().join("duplicate-region")).unwrap_err();
    let message = errors.to_string();
    assert!(message.contains("b-more-regions.toml:5:1: region eu-west is declared twice"), "{message}");
    assert!(message.contains("a-regions.toml:3:1"), "{message}");
}

#[test]
fn an_empty_or_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.md"), "not a policy").unwrap();
    let errors = PolicySet::load(dir.path()).unwrap_err();
    assert!(matches!(errors.0[..], [PolicyError::EmptySet { .. }]), "{errors}");
    let errors = PolicySet::load(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(errors.0[..], [PolicyError::Read { .. }]), "{errors}");
}
