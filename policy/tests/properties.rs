//! Properties: the most specific matching rule decides whatever order rules are written
//! in, and the set hash depends on the files' names and bytes but not on read order.

use fedra_policy::{PolicySet, PolicySource, set_sha256};
use fedra_types::ids::RegionId;
use proptest::prelude::*;

/// Regions a1, a2 in jurisdiction A and b1 in B.
const REGIONS: &str = "version = 1\n[[region]]\nname = \"a1\"\njurisdiction = \"A\"\n[[region]]\nname = \"a2\"\njurisdiction = \"A\"\n[[region]]\nname = \"b1\"\njurisdiction = \"B\"\n";
const SELECTORS: [&str; 6] = ["*", "A", "B", "a1", "a2", "b1"];
const ORIGINS: [(&str, &str); 3] = [("a1", "A"), ("a2", "A"), ("b1", "B")];

fn specificity(selector: &str) -> u8 {
    match selector {
        "*" => 0,
        s if s.chars().all(|c| c.is_ascii_uppercase()) => 1,
        _ => 2,
    }
}

fn matches(selector: &str, (region, jurisdiction): (&str, &str)) -> bool {
    selector == "*" || selector == region || selector == jurisdiction
}

fn set_of(files: Vec<(String, String)>) -> PolicySet {
    let sources = files.into_iter().map(|(name, text)| PolicySource { path: name.clone(), name, text }).collect();
    PolicySet::from_sources(sources).unwrap_or_else(|e| panic!("{e}"))
}

/// Distinct selectors in a random order, each with a distinct tag.
fn rules() -> impl Strategy<Value = Vec<(usize, &'static str)>> {
    proptest::sample::subsequence(SELECTORS.to_vec(), 0..=SELECTORS.len())
        .prop_map(|s| s.into_iter().enumerate().map(|(i, sel)| (i + 1, sel)).collect::<Vec<_>>())
        .prop_shuffle()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_most_specific_residency_rule_wins_in_any_order(rules in rules(), split in 0usize..=6) {
        // Tag each rule by its export_min_clients; spread the rules over two files.
        let text = |rules: &[(usize, &str)]| {
            let mut t = String::from("version = 1\n");
            for (tag, sel) in rules {
                t.push_str(&format!("[[residency]]\norigin = \"{sel}\"\naggregate_at = [\"*\"]\nexport_min_clients = {tag}\npublish_to = []\n"));
            }
            t
        };
        let split = split.min(rules.len());
        let set = set_of(vec![
            ("0-regions.toml".into(), REGIONS.into()),
            ("1-a.toml".into(), text(&rules[..split])),
            ("2-b.toml".into(), text(&rules[split..])),
        ]);
        for origin in ORIGINS {
            let expected = rules.iter().filter(|(_, s)| matches(s, origin)).max_by_key(|(_, s)| specificity(s)).map(|(t, _)| *t as u32);
            let got = set.residency_rule(&RegionId::new(origin.0).unwrap()).map(|r| r.export.min_clients);
            prop_assert_eq!(got, expected, "origin {}", origin.0);
        }
    }

    #[test]
    fn the_most_specific_privacy_rule_wins_in_any_order(
        general in rules(),
        named in rules(),
    ) {
        // A named model's rules are tagged above 100; "*" rules below.
        let mut all: Vec<(usize, &str, &str)> = general.iter().map(|(t, s)| (*t, "*", *s)).collect();
        all.extend(named.iter().map(|(t, s)| (t + 100, "m", *s)));
        all.reverse();
        let mut text = String::from(REGIONS);
        for (tag, model, sel) in &all {
            text.push_str(&format!("[[privacy]]\nmodel = \"{model}\"\nregion = \"{sel}\"\nepsilon = {tag}\ndelta = 1e-6\n"));
        }
        let set = set_of(vec![("p.toml".into(), text)]);
        for origin in ORIGINS {
            for model in ["m", "other"] {
                let expected = all
                    .iter()
                    .filter(|(_, m, s)| (*m == "*" || *m == model) && matches(s, origin))
                    .max_by_key(|(_, m, s)| (*m != "*", specificity(s)))
                    .map(|(t, _, _)| *t as f64);
                let got = set.privacy_rule(model, &RegionId::new(origin.0).unwrap()).map(|r| r.terms.epsilon.get());
                prop_assert_eq!(got, expected, "model {} origin {}", model, origin.0);
            }
        }
    }

    #[test]
    fn the_set_hash_ignores_read_order_but_not_any_byte(
        files in proptest::collection::btree_map("[a-z]{1,8}\\.toml", "[ -~\n]{0,64}", 1..5),
        seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
    ) {
        let sources: Vec<PolicySource> = files
            .iter()
            .map(|(name, text)| PolicySource { name: name.clone(), path: name.clone(), text: text.clone() })
            .collect();
        let hash = set_sha256(&sources);
        let mut shuffled = sources.clone();
        shuffled.rotate_left((seed as usize) % sources.len());
        shuffled.reverse();
        prop_assert_eq!(&set_sha256(&shuffled), &hash);

        // Change one byte of one file's name or contents.
        let total: usize = sources.iter().map(|s| s.name.len() + s.text.len()).sum();
        let mut at = pick.index(total);
        let mut changed = sources.clone();
        for s in &mut changed {
            let target = if at < s.name.len() { &mut s.name } else if at < s.name.len() + s.text.len() { at -= s.name.len(); &mut s.text } else { at -= s.name.len() + s.text.len(); continue };
            let old = target.as_bytes()[at];
            let new = if old == b'a' { 'b' } else { 'a' };
            target.replace_range(at..=at, &new.to_string());
            break;
        }
        prop_assert_ne!(set_sha256(&changed), hash);
    }
}
