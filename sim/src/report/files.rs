//! Per-round metrics as files: CSV for spreadsheets and plotting tools, JSON for
//! programs.
//!
//! Contract:
//! - Both writers create missing parent directories and replace an existing file.
//! - CSV: the first line is the header, the field names of [`RoundMetrics`] in
//!   declaration order ([`CSV_HEADER`]), written even when `rows` is empty; one line per
//!   row after it, in the order given. Text is quoted as RFC 4180 wants (a config label may
//!   hold commas or quotes). A NaN float ("not measured") is written as an **empty cell**;
//!   other floats in their shortest round-tripping decimal form, so values read back
//!   bit for bit. [`read_csv`] matches columns by header name, reads an empty cell (or the
//!   text `NaN`) as NaN.
//! - JSON: one array of objects, keys = field names. NaN is written as `null` and `null`
//!   (or an absent float key) reads back as NaN; see [`super::serde_nan`]. Floats
//!   round-trip exactly (`serde_json`'s `float_roundtrip`).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use super::RoundMetrics;

/// The CSV header: [`RoundMetrics`]' field names in declaration order.
pub const CSV_HEADER: [&str; 13] = [
    "config",
    "seed",
    "round",
    "selected",
    "reported",
    "dropped",
    "train_loss",
    "global_train_loss",
    "test_loss",
    "test_accuracy",
    "bytes_out",
    "bytes_in",
    "wall_seconds",
];

fn create(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// Writes `rows` as CSV to `path` (header + one line per row; NaN as an empty cell).
pub fn write_csv(path: &Path, rows: &[RoundMetrics]) -> anyhow::Result<()> {
    let file = create(path)?;
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(BufWriter::new(file));
    writer.write_record(CSV_HEADER)?;
    for row in rows {
        writer.serialize(row).with_context(|| format!("writing {}", path.display()))?;
    }
    writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error()))?
        .flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a CSV written by [`write_csv`] (columns matched by header name).
pub fn read_csv(path: &Path) -> anyhow::Result<Vec<RoundMetrics>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    reader
        .deserialize()
        .collect::<Result<Vec<RoundMetrics>, _>>()
        .with_context(|| format!("reading {}", path.display()))
}

/// Writes `rows` as one pretty-printed JSON array to `path` (NaN as `null`).
pub fn write_json(path: &Path, rows: &[RoundMetrics]) -> anyhow::Result<()> {
    let mut out = BufWriter::new(create(path)?);
    serde_json::to_writer_pretty(&mut out, rows).with_context(|| format!("writing {}", path.display()))?;
    out.write_all(b"\n")?;
    out.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a JSON array written by [`write_json`] (`null` floats as NaN).
pub fn read_json(path: &Path) -> anyhow::Result<Vec<RoundMetrics>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    serde_json::from_reader(BufReader::new(file)).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(config: &str, seed: u64, round: u32) -> RoundMetrics {
        RoundMetrics {
            config: config.to_string(),
            seed,
            round,
            selected: 10,
            reported: 9,
            dropped: 1,
            train_loss: 0.1 + f64::from(round) / 3.0,
            global_train_loss: f64::NAN,
            test_loss: 1.0 / 3.0,
            test_accuracy: 0.875,
            bytes_out: 1 << 40,
            bytes_in: u64::MAX,
            wall_seconds: 0.000_123_456_789,
        }
    }

    /// Field-by-field equality where NaN equals NaN (bitwise for floats).
    fn same(a: &[RoundMetrics], b: &[RoundMetrics]) -> bool {
        fn f(x: f64, y: f64) -> bool {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        a.len() == b.len()
            && a.iter().zip(b).all(|(a, b)| {
                a.config == b.config
                    && a.seed == b.seed
                    && a.round == b.round
                    && a.selected == b.selected
                    && a.reported == b.reported
                    && a.dropped == b.dropped
                    && a.bytes_out == b.bytes_out
                    && a.bytes_in == b.bytes_in
                    && f(a.train_loss, b.train_loss)
                    && f(a.global_train_loss, b.global_train_loss)
                    && f(a.test_loss, b.test_loss)
                    && f(a.test_accuracy, b.test_accuracy)
                    && f(a.wall_seconds, b.wall_seconds)
            })
    }

    fn sample() -> Vec<RoundMetrics> {
        let mut rows = vec![row("mu=0", 1, 0), row("synthetic(1,1) mu=1, \"quoted\"", 2, 1), row("mu=0", 1, 2)];
        rows[1].train_loss = f64::NAN;
        rows[1].test_loss = f64::NAN;
        rows[1].test_accuracy = f64::NAN;
        rows[1].wall_seconds = f64::NAN;
        rows[2].global_train_loss = 0.25;
        rows[2].test_accuracy = -0.0;
        rows
    }

    #[test]
    fn csv_round_trip_with_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/metrics.csv");
        let rows = sample();
        write_csv(&path, &rows).unwrap();
        let back = read_csv(&path).unwrap();
        assert!(same(&rows, &back), "{rows:?}\n!=\n{back:?}");

        let text = fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), CSV_HEADER.join(","));
        // Row 0: global_train_loss is NaN -> empty cell between two commas.
        let first = lines.next().unwrap();
        let cells: Vec<&str> = first.split(',').collect();
        assert_eq!(cells[7], "", "{first}");
        assert!(!text.contains("NaN"), "{text}");
    }

    #[test]
    fn csv_header_matches_struct_fields() {
        // csv's own header, taken from the struct's serde field names.
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(row("x", 0, 0)).unwrap();
        let bytes = writer.into_inner().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().next().unwrap(), CSV_HEADER.join(","));
    }

    #[test]
    fn csv_empty_has_header_only_and_reads_nan_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.csv");
        write_csv(&path, &[]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().trim_end(), CSV_HEADER.join(","));
        assert!(read_csv(&path).unwrap().is_empty());

        // "NaN" text (as other tools write it) reads as NaN too.
        let text = format!("{}\nmu=0,1,0,1,1,0,NaN,,0.5,NaN,1,2,NaN\n", CSV_HEADER.join(","));
        fs::write(&path, text).unwrap();
        let back = read_csv(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].train_loss.is_nan());
        assert!(back[0].global_train_loss.is_nan());
        assert_eq!(back[0].test_loss, 0.5);
        assert!(back[0].test_accuracy.is_nan());
        assert!(back[0].wall_seconds.is_nan());
    }

    #[test]
    fn json_round_trip_with_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        let rows = sample();
        write_json(&path, &rows).unwrap();
        let back = read_json(&path).unwrap();
        assert!(same(&rows, &back), "{rows:?}\n!=\n{back:?}");

        let value: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let array = value.as_array().unwrap();
        assert_eq!(array.len(), 3);
        assert!(array[0]["global_train_loss"].is_null());
        assert_eq!(array[2]["global_train_loss"], 0.25);
        assert_eq!(array[0]["config"], "mu=0");
    }

    #[test]
    fn json_absent_float_reads_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        fs::write(
            &path,
            r#"[{"config":"a","seed":1,"round":0,"selected":1,"reported":1,"dropped":0,
                "train_loss":0.5,"test_loss":null,"test_accuracy":1,
                "bytes_out":1,"bytes_in":2,"wall_seconds":0.5}]"#,
        )
        .unwrap();
        let back = read_json(&path).unwrap();
        assert!(back[0].global_train_loss.is_nan());
        assert!(back[0].test_loss.is_nan());
        assert_eq!(back[0].test_accuracy, 1.0);
    }

    #[test]
    fn reading_a_missing_file_fails_with_its_path() {
        let err = read_json(Path::new("/nonexistent/m.json")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/m.json"));
        assert!(read_csv(Path::new("/nonexistent/m.csv")).is_err());
    }
}
