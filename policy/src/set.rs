//! A policy set: the directory a compliance officer reviews, loaded and compiled once.
//!
//! Every `*.toml` file directly in the directory belongs to the set, read in file-name
//! order; subdirectories (such as `policies/tests/`) and other files are not part of it.
//! The set's [`PolicySet::sha256`] covers exactly those files' names and bytes, so a run,
//! a round or a manifest that records it names the precise policy text it was decided
//! under.

use crate::compile::{Compiled, compile};
use crate::error::{PolicyError, PolicyErrors};
use crate::raw::{PolicySource, parse_file};
use crate::rules::{
    Action, ApprovalRule, CheckpointGrant, PrivacyRule, PromotionRule, Region, ResidencyRule, RoleGrant,
};
use fedra_types::identity::Role;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The `[roles]` tables of a set, merged across files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roles {
    /// Who may perform each action; an action without an entry is allowed to nobody.
    pub grants: BTreeMap<Action, RoleGrant>,
    /// Which checkpoints each role may read; a role without an entry reads none.
    pub checkpoints: BTreeMap<Role, CheckpointGrant>,
}

/// A compiled, validated policy set. Only [`PolicySet::load`] and
/// [`PolicySet::from_sources`] build one; decisions live in [`crate::decide`], the
/// plan-level verdict in [`crate::admit`].
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    pub(crate) sha256: String,
    pub(crate) files: Vec<String>,
    pub(crate) regions: Vec<Region>,
    pub(crate) residency: Vec<ResidencyRule>,
    pub(crate) privacy: Vec<PrivacyRule>,
    pub(crate) approvals: Vec<ApprovalRule>,
    pub(crate) promotions: Vec<PromotionRule>,
    pub(crate) roles: Roles,
}

impl PolicySet {
    /// Loads the set in `dir`: every `*.toml` file directly in it. Paths in errors and rule
    /// references are `dir` joined with the file name, as given.
    ///
    /// # Errors
    /// Every problem found, across all files ([`PolicyErrors`]): unreadable or non-UTF-8
    /// files, no policy file at all, and everything [`PolicySet::from_sources`] reports.
    pub fn load(dir: &Path) -> Result<Self, PolicyErrors> {
        let read_err = |path: &Path, e: &dyn std::fmt::Display| PolicyError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let entries = std::fs::read_dir(dir).map_err(|e| PolicyErrors(vec![read_err(dir, &e)]))?;
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    problems.push(read_err(dir, &e));
                    continue;
                }
            };
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "toml") || !path.is_file() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                problems.push(read_err(&path, &"the file name is not UTF-8"));
                continue;
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push(PolicySource { name, path: path.display().to_string(), text }),
                Err(e) => problems.push(read_err(&path, &e)),
            }
        }
        if !problems.is_empty() {
            return Err(PolicyErrors(problems));
        }
        if sources.is_empty() {
            return Err(PolicyErrors(vec![PolicyError::EmptySet { dir: dir.display().to_string() }]));
        }
        Self::from_sources(sources)
    }

    /// Compiles a set from file contents (in any order: they are sorted by name).
    ///
    /// # Errors
    /// Every problem found ([`PolicyErrors`], sorted by place): TOML syntax, missing or
    /// unsupported `version`, unknown keys, wrong types, values out of range, bad names,
    /// selectors naming no declared region or jurisdiction, unknown roles, duplicate
    /// regions or rules, approval rules without a condition.
    pub fn from_sources(mut sources: Vec<PolicySource>) -> Result<Self, PolicyErrors> {
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        let mut problems = Vec::new();
        let parsed: Vec<_> =
            sources.iter().filter_map(|src| parse_file(src, &mut problems).map(|f| (src, f))).collect();
        let Compiled { regions, residency, privacy, approvals, promotions, roles } = compile(&parsed, &mut problems);
        if !problems.is_empty() {
            problems.sort_by(|a, b| a.location().cmp(&b.location()));
            return Err(PolicyErrors(problems));
        }
        Ok(Self {
            sha256: set_sha256(&sources),
            files: sources.iter().map(|s| s.name.clone()).collect(),
            regions,
            residency,
            privacy,
            approvals,
            promotions,
            roles,
        })
    }

    /// Hex sha256 of the set's files; see [`set_sha256`].
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The file names of the set, sorted.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Declared regions, in declaration order (files by name, then position).
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn residency_rules(&self) -> &[ResidencyRule] {
        &self.residency
    }

    pub fn privacy_rules(&self) -> &[PrivacyRule] {
        &self.privacy
    }

    pub fn approval_rules(&self) -> &[ApprovalRule] {
        &self.approvals
    }

    pub fn promotion_rules(&self) -> &[PromotionRule] {
        &self.promotions
    }

    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// One line for `fedra policy check`: hash and counts.
    pub fn summary(&self) -> String {
        format!(
            "policy set sha256 {}: {} files, {} regions, {} residency, {} privacy, {} approval, {} promotion rules, {} role entries",
            self.sha256,
            self.files.len(),
            self.regions.len(),
            self.residency.len(),
            self.privacy.len(),
            self.approvals.len(),
            self.promotions.len(),
            self.roles.grants.len() + self.roles.checkpoints.len()
        )
    }
}

/// Hex sha256 over the files sorted by name, each framed as: name length (u64 little
/// endian), name, contents length (u64 little endian), contents. The framing keeps two
/// different sets from hashing alike by moving bytes between a name and a file; sorting
/// makes the hash independent of the order the directory lists files in.
pub fn set_sha256(sources: &[PolicySource]) -> String {
    let mut sorted: Vec<&PolicySource> = sources.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    for src in sorted {
        for part in [src.name.as_bytes(), src.text.as_bytes()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, text: &str) -> PolicySource {
        PolicySource { name: name.into(), path: format!("dir/{name}"), text: text.into() }
    }

    #[test]
    fn moving_bytes_between_a_name_and_its_contents_changes_the_hash() {
        assert_ne!(set_sha256(&[src("a.toml", "xy")]), set_sha256(&[src("a.tomlx", "y")]));
        assert_ne!(set_sha256(&[src("a", "b"), src("c", "")]), set_sha256(&[src("a", ""), src("bc", "")]));
    }

    #[test]
    fn problems_are_sorted_by_place_and_files_by_name() {
        let errors = PolicySet::from_sources(vec![src("b.toml", "version = 3"), src("a.toml", "x = 1")]).unwrap_err();
        let places: Vec<String> = errors.iter().map(|e| e.location().unwrap().to_string()).collect();
        assert_eq!(places, ["dir/a.toml:1:1", "dir/b.toml:1:11"]);
        let set = PolicySet::from_sources(vec![src("z.toml", "version = 1"), src("m.toml", "version = 1")]).unwrap();
        assert_eq!(set.files(), ["m.toml", "z.toml"]);
    }
}
