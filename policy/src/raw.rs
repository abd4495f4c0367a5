//! The policy file syntax as written: one serde struct per table, every field spanned so
//! that a later check can point at it, and `deny_unknown_fields` everywhere. Nothing here is
//! a domain type; `compile` turns these into [`crate::rules`] values.
//!
//! A file is walked table by table (through `toml::de::DeTable`, which keeps spans) rather
//! than deserialized in one go, so that one bad `[[residency]]` does not hide the problems
//! of the next: every unknown key of every table is reported, and each table element gets
//! its own serde error at most.

use crate::error::{Location, PolicyError};
use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// The schema version this crate reads.
pub const VERSION: i64 = 1;

/// One policy file's name and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// The file name within the set (`residency.toml`): what the set's hash covers and what
    /// orders the files.
    pub name: String,
    /// The path shown in errors and rule references (`policies/residency.toml`).
    pub path: String,
    pub text: String,
}

impl PolicySource {
    pub(crate) fn location(&self, offset: usize) -> Location {
        Location::of_offset(&self.path, &self.text, offset)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    pub name: Spanned<String>,
    pub jurisdiction: Spanned<String>,
}

pub(crate) type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResidency {
    pub origin: Spanned<String>,
    pub aggregate_at: SpannedList,
    pub export_min_clients: Spanned<i64>,
    #[serde(default)]
    pub export_requires_dp: bool,
    pub export_min_noise_multiplier: Option<Spanned<f64>>,
    pub publish_to: SpannedList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrivacy {
    pub model: Spanned<String>,
    pub region: Spanned<String>,
    pub epsilon: Spanned<f64>,
    pub delta: Spanned<f64>,
    pub min_noise_multiplier: Option<Spanned<f64>>,
    #[serde(default)]
    pub allow_non_private: bool,
    #[serde(default)]
    pub per_client_metrics: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApproval {
    pub name: Spanned<String>,
    pub approvals: Spanned<i64>,
    pub epsilon_above: Option<Spanned<f64>>,
    pub publish_outside_jurisdiction: Option<bool>,
    pub new_region: Option<bool>,
    pub rounds_above: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPromotion {
    pub model: Spanned<String>,
    pub region: Spanned<String>,
    #[serde(default)]
    pub metric: fedra_types::plan::GateMetric,
    pub tolerance: Option<Spanned<f64>>,
    pub min_samples: Option<Spanned<i64>>,
    pub max_region_gap: Option<Spanned<f64>>,
    pub approvals: Option<Spanned<i64>>,
    #[serde(default)]
    pub allow_override: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoles {
    pub submit: Option<SpannedList>,
    pub approve: Option<SpannedList>,
    pub cancel_any: Option<SpannedList>,
    pub read_audit: Option<SpannedList>,
    pub read_checkpoints: Option<BTreeMap<Spanned<String>, Spanned<RawScope>>>,
}

/// A `read_checkpoints` value: `"own"`, `"all"` or a list of selectors.
#[derive(Debug)]
pub(crate) enum RawScope {
    Word(String),
    List(Vec<Spanned<String>>),
}

// By hand rather than `#[serde(untagged)]`: untagged buffers the value and loses the spans
// the list items need.
impl<'de> Deserialize<'de> for RawScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScopeVisitor;
        impl<'de> Visitor<'de> for ScopeVisitor {
            type Value = RawScope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"own\", \"all\" or a list of regions and jurisdictions")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawScope, E> {
                Ok(RawScope::Word(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawScope, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawScope::List(items))
            }
        }
        d.deserialize_any(ScopeVisitor)
    }
}

/// One file's tables, each element with the span of its header.
#[derive(Debug, Default)]
pub(crate) struct RawFile {
    pub regions: Vec<(Range<usize>, RawRegion)>,
    pub residency: Vec<(Range<usize>, RawResidency)>,
    pub privacy: Vec<(Range<usize>, RawPrivacy)>,
    pub approvals: Vec<(Range<usize>, RawApproval)>,
    pub promotions: Vec<(Range<usize>, RawPromotion)>,
    pub roles: Option<RawRoles>,
}

const TOP_LEVEL: &str = "version, region, residency, privacy, approval, promotion, roles";

/// Reads one file, pushing every problem found onto `problems`. Returns what could be read
/// (elements with problems are left out), or `None` when the file is not TOML or declares
/// another version.
pub(crate) fn parse_file(src: &PolicySource, problems: &mut Vec<PolicyError>) -> Option<RawFile> {
    let (table, errors) = DeTable::parse_recoverable(&src.text);
    if !errors.is_empty() {
        for e in errors {
            let at = src.location(e.span().map_or(0, |s| s.start));
            problems.push(PolicyError::Syntax { at, message: e.message().trim().to_string() });
        }
        return None;
    }
    let table = table.into_inner();
    let version = table.iter().find(|(k, _)| k.get_ref() == "version");
    match version.map(|(_, v)| v) {
        None => {
            problems.push(PolicyError::MissingVersion { at: src.location(0) });
            return None;
        }
        Some(v)
            if v.get_ref().as_integer().and_then(|i| i64::from_str_radix(i.as_str(), i.radix()).ok())
                == Some(VERSION) => {}
        Some(v) => {
            let found = src.text[v.span()].to_string();
            problems.push(PolicyError::UnsupportedVersion { at: src.location(v.span().start), found });
            return None;
        }
    }
    let mut file = RawFile::default();
    for (key, value) in table {
        match key.get_ref().as_ref() {
            "version" => {}
            "region" => file.regions = elements(src, "region", value, problems),
            "residency" => file.residency = elements(src, "residency", value, problems),
            "privacy" => file.privacy = elements(src, "privacy", value, problems),
            "approval" => file.approvals = elements(src, "approval", value, problems),
            "promotion" => file.promotions = elements(src, "promotion", value, problems),
            "roles" => {
                if value.get_ref().is_table() {
                    file.roles = element(src, "roles", value, problems).map(|(_, roles)| roles);
                } else {
                    problems.push(PolicyError::WrongType {
                        at: src.location(value.span().start),
                        what: "roles".into(),
                        message: format!("expected a table ([roles]), found {}", value.get_ref().type_str()),
                    });
                }
            }
            other => problems.push(PolicyError::UnknownKey {
                at: src.location(key.span().start),
                table: "the file".into(),
                key: other.to_string(),
                expected: TOP_LEVEL.into(),
            }),
        }
    }
    Some(file)
}

/// The elements of an array of tables (`[[name]]`).
fn elements<T: DeserializeOwned>(
    src: &PolicySource,
    name: &str,
    value: Spanned<DeValue<'_>>,
    problems: &mut Vec<PolicyError>,
) -> Vec<(Range<usize>, T)> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items.into_iter().filter_map(|item| element(src, name, item, problems)).collect(),
        other => {
            problems.push(PolicyError::WrongType {
                at: src.location(span.start),
                what: name.to_string(),
                message: format!("expected an array of tables (write [[{name}]]), found {}", other.type_str()),
            });
            Vec::new()
        }
    }
}

/// One table, checked for unknown keys (all of them reported) before serde reads it.
fn element<T: DeserializeOwned>(
    src: &PolicySource,
    name: &str,
    value: Spanned<DeValue<'_>>,
    problems: &mut Vec<PolicyError>,
) -> Option<(Range<usize>, T)> {
    let span = value.span();
    let Some(table) = value.get_ref().as_table() else {
        problems.push(PolicyError::WrongType {
            at: src.location(span.start),
            what: name.to_string(),
            message: format!("expected a table, found {}", value.get_ref().type_str()),
        });
        return None;
    };
    let fields = field_names::<T>();
    let mut unknown = false;
    for key in table.keys().filter(|k| !fields.contains(&k.get_ref().as_ref())) {
        unknown = true;
        problems.push(PolicyError::UnknownKey {
            at: src.location(key.span().start),
            table: format!("[{name}]"),
            key: key.get_ref().to_string(),
            expected: fields.join(", "),
        });
    }
    if unknown {
        return None;
    }
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some((span, v)),
        Err(e) => {
            let at = src.location(e.span().unwrap_or(span).start);
            let message = e.message().to_string();
            // Unknown keys were caught above, so serde can only report a missing key or a
            // wrong type; its message says which.
            problems.push(if message.starts_with("missing field") {
                PolicyError::MissingKey { at, table: format!("[{name}]"), message: message.replace("field", "key") }
            } else {
                PolicyError::WrongType { at, what: format!("[{name}]"), message }
            });
            None
        }
    }
}

/// The field names a derived `Deserialize` struct accepts, read from the list serde hands to
/// `deserialize_struct`, so the unknown-key check can never drift from the structs.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::value::Error;
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Option<RawFile>, Vec<PolicyError>) {
        let src = PolicySource { name: "p.toml".into(), path: "p.toml".into(), text: text.into() };
        let mut problems = Vec::new();
        (parse_file(&src, &mut problems), problems)
    }

    #[test]
    fn field_names_come_from_serde() {
        assert_eq!(field_names::<RawRegion>(), ["name", "jurisdiction"]);
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_position() {
        let (_, problems) = parse(
            "version = 1\n[[region]]\nname = \"a\"\njurisdiction = \"EU\"\nnmae = 1\n[[region]]\nname = \"b\"\njurisdiction = \"EU\"\nzone = 2\n[polcy]\n",
        );
        let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        assert!(msgs[0].starts_with("p.toml:10:2: unknown key `polcy` in the file"), "{msgs:#?}");
        assert!(msgs[1].starts_with("p.toml:5:1: unknown key `nmae` in [region]"), "{msgs:#?}");
        assert!(msgs[2].starts_with("p.toml:9:1: unknown key `zone`"), "{msgs:#?}");
    }

    #[test]
    fn version_must_be_one() {
        let (file, problems) = parse("[[region]]\nname = \"a\"\njurisdiction = \"EU\"\n");
        assert!(file.is_none());
        assert!(matches!(problems[..], [PolicyError::MissingVersion { .. }]));
        let (_, problems) = parse("version = 2\n");
        assert_eq!(problems[0].to_string().split(": ").next(), Some("p.toml:1:11"));
        assert!(matches!(&problems[0], PolicyError::UnsupportedVersion { found, .. } if found == "2"));
    }

    #[test]
    fn a_single_table_where_an_array_belongs_is_a_wrong_type() {
        let (_, problems) = parse("version = 1\n[residency]\norigin = \"*\"\n");
        assert!(matches!(&problems[..], [PolicyError::WrongType { message, .. }] if message.contains("[[residency]]")));
    }

    #[test]
    fn checkpoint_scopes_keep_their_spans() {
        let (file, problems) = parse(
            "version = 1\n[roles]\nsubmit = [\"admin\"]\nread_checkpoints = { inference = \"own\", admin = [\"eu\"] }\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let roles = file.unwrap().roles.unwrap();
        let scopes = roles.read_checkpoints.unwrap();
        assert!(
            scopes
                .iter()
                .any(|(k, v)| k.get_ref() == "admin" && matches!(v.get_ref(), RawScope::List(l) if l.len() == 1))
        );
    }
}
