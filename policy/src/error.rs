//! What can be wrong with a policy set, each problem with the file, line and column where a
//! reviewer fixes it.
//!
//! Loading never stops at the first problem: [`crate::PolicySet::load`] returns every one it
//! found, as [`PolicyErrors`], so that `fedra policy check` lists them all in one pass (a
//! compliance officer should not fix files one error at a time). Each [`PolicyError`]
//! variant is one *kind* of problem; `policies/tests/` holds one fixture per kind and
//! `policies/README.md` documents them.

use std::fmt;

/// A place in a policy file: the path as the set was loaded (e.g.
/// `policies/residency.toml`), a 1-based line and a 1-based column counted in characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` of `text` (clamped to the text; a split UTF-8 sequence
    /// counts from its start).
    pub fn of_offset(file: &str, text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self { file: file.to_string(), line, column: text[line_start..offset].chars().count() + 1 }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem in a policy set. Messages are lowercase, name the offending value and say
/// what was expected; all but [`PolicyError::Read`] and [`PolicyError::EmptySet`] start
/// with `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The directory or one of its files could not be read (or is not UTF-8).
    #[error("{path}: cannot read: {message}")]
    Read { path: String, message: String },
    /// The directory holds no `*.toml` file: an empty set would deny everything, which is
    /// more likely a wrong path than an intent.
    #[error("{dir}: no *.toml policy files in this directory")]
    EmptySet { dir: String },
    /// Not TOML at all.
    #[error("{at}: invalid TOML: {message}")]
    Syntax { at: Location, message: String },
    /// A file without the top-level `version` key.
    #[error("{at}: missing `version = 1` (every policy file must declare its schema version)")]
    MissingVersion { at: Location },
    /// A `version` other than 1; the rest of that file is not read.
    #[error("{at}: unsupported version {found} (expected version = 1); the rest of this file was not read")]
    UnsupportedVersion { at: Location, found: String },
    /// A key or table the schema does not know (often a typo).
    #[error("{at}: unknown key `{key}` in {table} (expected one of: {expected})")]
    UnknownKey { at: Location, table: String, key: String, expected: String },
    /// A required key is absent.
    #[error("{at}: {table}: {message}")]
    MissingKey { at: Location, table: String, message: String },
    /// A value of the wrong TOML type (a string where a number belongs, `[t]` for `[[t]]`).
    #[error("{at}: {what}: {message}")]
    WrongType { at: Location, what: String, message: String },
    /// A number outside its documented range.
    #[error("{at}: {key} = {value} is out of range: expected {expected}")]
    OutOfRange { at: Location, key: &'static str, value: String, expected: &'static str },
    /// A word the schema does not accept at that place.
    #[error("{at}: {key} = {value:?} is not valid: expected {expected}")]
    InvalidValue { at: Location, key: String, value: String, expected: String },
    /// A list that must not be empty is.
    #[error("{at}: {key} is empty: list at least one {item}")]
    EmptyList { at: Location, key: &'static str, item: &'static str },
    /// A region, jurisdiction, model or approval name with characters outside its syntax.
    #[error("{at}: invalid {what} {value:?}: {reason}")]
    InvalidName { at: Location, what: &'static str, value: String, reason: String },
    /// A selector naming neither a declared region nor a declared jurisdiction.
    #[error(
        "{at}: {key}: unknown region or jurisdiction {name:?} (declared regions: {regions}; jurisdictions: {jurisdictions}; or \"*\" for any)"
    )]
    UnknownSelector { at: Location, key: &'static str, name: String, regions: String, jurisdictions: String },
    /// A role name `fedra_types::identity::Role` does not know.
    #[error(
        "{at}: unknown role {name:?} (expected client, coordinator, regional-aggregator, scientist, compliance, approver, inference or admin)"
    )]
    UnknownRole { at: Location, name: String },
    /// The same region declared twice, in one file or across files.
    #[error("{at}: region {name} is declared twice (first at {first})")]
    DuplicateRegion { at: Location, first: Location, name: String },
    /// Two rules of one table with the same selector (or two approval rules with one name,
    /// or one `[roles]` key set in two files): which should win would be ambiguous.
    #[error("{at}: a second {table} rule for {selector} (first at {first}): keep one")]
    DuplicateRule { at: Location, first: Location, table: &'static str, selector: String },
    /// An approval rule that could never match.
    #[error(
        "{at}: approval rule {name:?} has no condition: set at least one of epsilon_above, publish_outside_jurisdiction = true, new_region = true or rounds_above"
    )]
    NoCondition { at: Location, name: String },
    /// A promotion rule that requires nothing.
    #[error(
        "{at}: promotion rule for {selector} requires nothing: set at least one of tolerance, min_samples, max_region_gap or approvals (≥ 1)"
    )]
    NoRequirement { at: Location, selector: String },
}

impl PolicyError {
    /// The variant's name (`"UnknownKey"`): the kind of problem, as `policies/README.md`
    /// and the fixtures in `policies/tests/` name it.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Read { .. } => "Read",
            PolicyError::EmptySet { .. } => "EmptySet",
            PolicyError::Syntax { .. } => "Syntax",
            PolicyError::MissingVersion { .. } => "MissingVersion",
            PolicyError::UnsupportedVersion { .. } => "UnsupportedVersion",
            PolicyError::UnknownKey { .. } => "UnknownKey",
            PolicyError::MissingKey { .. } => "MissingKey",
            PolicyError::WrongType { .. } => "WrongType",
            PolicyError::OutOfRange { .. } => "OutOfRange",
            PolicyError::InvalidValue { .. } => "InvalidValue",
            PolicyError::EmptyList { .. } => "EmptyList",
            PolicyError::InvalidName { .. } => "InvalidName",
            PolicyError::UnknownSelector { .. } => "UnknownSelector",
            PolicyError::UnknownRole { .. } => "UnknownRole",
            PolicyError::DuplicateRegion { .. } => "DuplicateRegion",
            PolicyError::DuplicateRule { .. } => "DuplicateRule",
            PolicyError::NoCondition { .. } => "NoCondition",
            PolicyError::NoRequirement { .. } => "NoRequirement",
        }
    }

    /// Where the problem is, for all but read failures and an empty directory.
    pub fn location(&self) -> Option<&Location> {
        match self {
            PolicyError::Read { .. } | PolicyError::EmptySet { .. } => None,
            PolicyError::Syntax { at, .. }
            | PolicyError::MissingVersion { at }
            | PolicyError::UnsupportedVersion { at, .. }
            | PolicyError::UnknownKey { at, .. }
            | PolicyError::MissingKey { at, .. }
            | PolicyError::WrongType { at, .. }
            | PolicyError::OutOfRange { at, .. }
            | PolicyError::InvalidValue { at, .. }
            | PolicyError::EmptyList { at, .. }
            | PolicyError::InvalidName { at, .. }
            | PolicyError::UnknownSelector { at, .. }
            | PolicyError::UnknownRole { at, .. }
            | PolicyError::DuplicateRegion { at, .. }
            | PolicyError::DuplicateRule { at, .. }
            | PolicyError::NoCondition { at, .. }
            | PolicyError::NoRequirement { at, .. } => Some(at),
        }
    }
}

/// Every problem found while loading a policy set, in file order then position order.
/// Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    pub fn iter(&self) -> impl Iterator<Item = &PolicyError> {
        self.0.iter()
    }
}

/// One problem per line.
impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        let at = |o| {
            let l = Location::of_offset("f.toml", text, o);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(4), (1, 5));
        assert_eq!(at(6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(at(9), (2, 3));
        assert_eq!(at(8), (2, 2), "inside a UTF-8 sequence counts from its start");
        assert_eq!(at(1_000), (3, 1), "clamped to the end");
        assert_eq!(Location::of_offset("f.toml", text, 6).to_string(), "f.toml:2:1");
    }
}
