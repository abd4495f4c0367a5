//! How a command prints what it read: the text tables people read, or with the global
//! `--output json` one JSON document for scripts.
//!
//! The JSON contract, for every command: exactly one document on stdout (an array for a
//! listing, an object for a record or for what an action did), written from the CLI's own
//! `serde::Serialize` view types ([`crate::status`]) so the keys are their snake_case
//! field names, absent values are `null` and numbers are numbers. Protobuf messages are
//! never printed. Errors do not change with the format: one line on stderr and the exit
//! code of [`crate::commands`].

use serde::Serialize;

/// The global `--output` flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Tables and lines for people (the default).
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// The JSON document for `value`, pretty-printed and newline-terminated.
///
/// # Errors
/// A value serde_json cannot write (a map with non-string keys, or a field's own
/// serializer refusing, e.g. a checkpoint manifest that is not JSON); the message names it.
pub fn json_document<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// Prints `value` as JSON when `format` is [`OutputFormat::Json`], else runs `text`, which
/// prints the human form.
///
/// # Errors
/// As [`json_document`]; nothing has been printed then.
pub fn emit<T: Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
    text: impl FnOnce(&T),
) -> Result<(), serde_json::Error> {
    match format {
        OutputFormat::Json => print!("{}", json_document(value)?),
        OutputFormat::Text => text(value),
    }
    Ok(())
}

/// What `fedra run submit` did (with `--watch`, the run's final snapshot is printed instead).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submitted {
    pub run_id: String,
}

/// A run's state after `fedra run cancel`, `approve` or `reject`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStateChange {
    pub run_id: String,
    pub state: fedra_types::run::RunState,
    /// For `approve`: the distinct approvals so far and how many are needed; `None` for
    /// the other actions.
    pub approvals: Option<u32>,
    pub approvals_needed: Option<u32>,
}

/// The policy set `fedra policy apply` put in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyApplied {
    pub policy_sha256: String,
}

/// The files `fedra checkpoint pull` wrote, after verifying them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pulled {
    pub checkpoint_id: String,
    pub weights: std::path::PathBuf,
    pub manifest: std::path::PathBuf,
}

/// What `fedra checkpoint verify` verified: the checkpoint and its ancestors, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verified {
    pub checkpoint_id: String,
    pub run_id: String,
    pub round: u32,
    /// Each ancestor's checkpoint id, parent first, back to the run's start.
    pub ancestors: Vec<String>,
}

/// `fedra audit verify`: the chain is intact up to this head (keep it elsewhere to detect a
/// truncated log later).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditHead {
    pub entries: usize,
    pub head_seq: i64,
    pub head_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn formats_parse_by_their_lowercase_names_only() {
        assert_eq!(OutputFormat::from_str("json", false), Ok(OutputFormat::Json));
        assert_eq!(OutputFormat::from_str("text", false), Ok(OutputFormat::Text));
        assert!(OutputFormat::from_str("yaml", false).is_err());
    }

    #[test]
    fn documents_are_one_newline_terminated_value() {
        let doc = json_document(&serde_json::json!({"run_id": "run-1", "rounds": [1, 2]})).unwrap();
        assert!(doc.ends_with("}\n"));
        let back: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(back["rounds"][1], 2);
    }
}
