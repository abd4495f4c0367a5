//! Loading a labelled CSV file against a declared schema ([`CsvSchema`]).
//!
//! Format: one sample per line, comma-separated numbers, no quoting; blank lines and lines
//! starting with `#` are skipped. With `header`, the first other line names the columns. One
//! column is the integer label (by default the last; or a 0-based index; or, with a header,
//! a name) and every other column is a feature, in file order. Labels may be written as
//! integral floats (`3.0`, `3e0`) because NumPy's `savetxt` writes them that way.
//!
//! The schema is checked while the file's position is still known, so a bad file is rejected
//! at client start with `<file>:<line>: <problem>` (lines and columns are 1-based, as editors
//! show them): a missing or extra column (against the declared feature count or, without
//! one, the header or first row), a value that is not a number, a non-finite feature
//! (`nan`, `inf`), a label that is not an integer below `classes`, a label column that does
//! not exist.

use super::{DataError, Dataset};
use std::path::Path;

/// Which column holds the label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LabelColumn {
    /// The last column.
    #[default]
    Last,
    /// A 0-based column index.
    Index(usize),
    /// The column with this header name (needs `header`).
    Name(String),
}

/// What a CSV file must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvSchema {
    /// Number of classes: labels must be below it.
    pub classes: usize,
    /// The first non-comment line names the columns.
    pub header: bool,
    /// Where the label is.
    pub label_column: LabelColumn,
    /// Declared number of feature columns (the model's input size). `None` takes it from the
    /// header or the first data row; every row must then agree with it.
    pub features: Option<usize>,
}

impl CsvSchema {
    /// No header, label in the last column, feature count taken from the file.
    pub fn new(classes: usize) -> Self {
        Self { classes, header: false, label_column: LabelColumn::Last, features: None }
    }
}

/// A CSV file could not be turned into a dataset.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Line { path: String, line: usize, message: String },
    #[error("{path}: {message}")]
    Schema { path: String, message: String },
    #[error("{path}: {source}")]
    Data { path: String, source: DataError },
}

/// Loads `path` as a dataset of `classes` classes, label in the last column.
///
/// # Errors
/// As [`load_csv_with`].
pub fn load_csv(path: &Path, classes: usize, header: bool) -> Result<Dataset, CsvError> {
    load_csv_with(path, &CsvSchema { header, ..CsvSchema::new(classes) })
}

/// Loads `path` as described by `schema`; the dataset is named after the file's stem.
///
/// # Errors
/// [`CsvError::Read`] for an unreadable file; [`CsvError::Line`] naming the line and problem
/// (see the module doc); [`CsvError::Schema`] when the schema cannot apply to the file at all
/// (a label column name without a header, zero declared features); [`CsvError::Data`] when
/// the file has no data rows.
pub fn load_csv_with(path: &Path, schema: &CsvSchema) -> Result<Dataset, CsvError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CsvError::Read { path: p.clone(), source })?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "csv".into());
    parse(&text, &p, name, schema)
}

/// The column layout, fixed by the first content line.
struct Layout {
    columns: usize,
    label: usize,
    names: Option<Vec<String>>,
}

impl Layout {
    /// `column 3` or, with a header, `column 3 ("petal_width")`.
    fn describe(&self, c: usize) -> String {
        match &self.names {
            Some(names) => format!("column {} ({:?})", c + 1, names[c]),
            None => format!("column {}", c + 1),
        }
    }
}

fn parse(text: &str, path: &str, name: String, schema: &CsvSchema) -> Result<Dataset, CsvError> {
    let line_err = |line: usize, message: String| CsvError::Line { path: path.to_string(), line, message };
    let schema_err = |message: String| CsvError::Schema { path: path.to_string(), message };
    if schema.features == Some(0) {
        return Err(schema_err("the schema declares 0 feature columns".into()));
    }
    if let (LabelColumn::Name(label), false) = (&schema.label_column, schema.header) {
        return Err(schema_err(format!("label column {label:?} is a name, which needs a header line")));
    }
    let mut layout: Option<Layout> = None;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    for (line_no, line) in lines.filter(|(_, l)| !l.is_empty() && !l.starts_with('#')) {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if layout.is_none() {
            layout = Some(resolve_layout(&cols, schema).map_err(|m| line_err(line_no, m))?);
            if schema.header {
                continue;
            }
        }
        let layout = layout.as_ref().expect("set from the first content line");
        parse_row(&cols, layout, schema.classes, &mut features, &mut labels).map_err(|m| line_err(line_no, m))?;
    }
    let dim = layout.map_or(0, |l| l.columns - 1);
    Dataset::new(name, features, labels, dim, schema.classes)
        .map_err(|source| CsvError::Data { path: path.to_string(), source })
}

/// The layout from the first content line: the header if the schema has one, else the first
/// data row.
fn resolve_layout(cols: &[&str], schema: &CsvSchema) -> Result<Layout, String> {
    let columns = match schema.features {
        Some(f) => {
            if schema.header && cols.len() != f + 1 {
                return Err(format!(
                    "header has {} columns, the schema declares {f} features and a label ({} columns)",
                    cols.len(),
                    f + 1
                ));
            }
            f + 1
        }
        None if cols.len() < 2 => return Err("need at least one feature column and a label column".into()),
        None => cols.len(),
    };
    let names = schema.header.then(|| cols.iter().map(|c| (*c).to_string()).collect::<Vec<_>>());
    let label = match &schema.label_column {
        LabelColumn::Last => columns - 1,
        LabelColumn::Index(i) if *i < columns => *i,
        LabelColumn::Index(i) => {
            return Err(format!("label column {i} (0-based) does not exist: rows have {columns} columns"));
        }
        LabelColumn::Name(label) => {
            let names = names.as_deref().unwrap_or_default();
            let mut found = names.iter().enumerate().filter(|(_, n)| *n == label).map(|(i, _)| i);
            match (found.next(), found.next()) {
                (Some(i), None) => i,
                (Some(_), Some(_)) => return Err(format!("more than one column is named {label:?}")),
                (None, _) => {
                    return Err(format!("missing column: no column named {label:?} (header: {})", names.join(", ")));
                }
            }
        }
    };
    Ok(Layout { columns, label, names })
}

fn parse_row(
    cols: &[&str],
    layout: &Layout,
    classes: usize,
    features: &mut Vec<f32>,
    labels: &mut Vec<u32>,
) -> Result<(), String> {
    let expected = layout.columns;
    if cols.len() != expected {
        let what = if cols.len() < expected { "missing column" } else { "extra column" };
        return Err(format!(
            "{what}: {} columns, expected {expected} ({} features and a label)",
            cols.len(),
            expected - 1
        ));
    }
    for (c, v) in cols.iter().enumerate() {
        if c == layout.label {
            continue;
        }
        let x: f32 = v.parse().map_err(|_| format!("{}: {v:?} is not a number", layout.describe(c)))?;
        if !x.is_finite() {
            return Err(format!("{}: non-finite feature {v}", layout.describe(c)));
        }
        features.push(x);
    }
    let text = cols[layout.label];
    let label = parse_label(text)
        .ok_or_else(|| format!("{}: label {text:?} is not a non-negative integer", layout.describe(layout.label)))?;
    if label as usize >= classes {
        return Err(format!("{}: label {label} is not below {classes} classes", layout.describe(layout.label)));
    }
    labels.push(label);
    Ok(())
}

/// A non-negative integer label, also written as an integral float (`2.0`, `2e0`).
fn parse_label(text: &str) -> Option<u32> {
    text.parse::<u32>().ok().or_else(|| {
        let x: f64 = text.parse().ok()?;
        (x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&x)).then_some(x as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn loads_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(&dir, "good.csv", "a,b,label\n1,2,0\n# comment\n3.5,-1,2\n");
        let d = load_csv(&good, 3, true).unwrap();
        assert_eq!((d.len(), d.dim, d.name.as_str()), (2, 2, "good"));
        assert_eq!(d.row(1), &[3.5, -1.0]);
        assert_eq!(d.labels, [0, 2]);

        let bad = dir.path().join("bad.csv");
        let err = |text: &str| {
            std::fs::write(&bad, text).unwrap();
            load_csv(&bad, 3, false).unwrap_err().to_string()
        };
        let e = err("1,2,0\n3,x,1\n");
        assert!(e.ends_with("bad.csv:2: column 2: \"x\" is not a number"), "{e}");
        let e = err("1,2,0\n3,1\n");
        assert!(e.ends_with("bad.csv:2: missing column: 2 columns, expected 3 (2 features and a label)"), "{e}");
        let e = err("1,2,0\n\n3,1,1,1\n");
        assert!(e.ends_with("bad.csv:3: extra column: 4 columns, expected 3 (2 features and a label)"), "{e}");
        assert!(err("1,2,7\n").ends_with("bad.csv:1: column 3: label 7 is not below 3 classes"));
        assert!(err("1,2,-1\n").contains(":1: column 3: label \"-1\" is not a non-negative integer"));
        assert!(err("1,2,0.5\n").contains("label \"0.5\" is not a non-negative integer"));
        assert!(err("5\n").contains("bad.csv:1: need at least one feature column"));
        std::fs::write(&bad, "").unwrap();
        assert!(matches!(load_csv(&bad, 3, false), Err(CsvError::Data { source: DataError::Empty { .. }, .. })));
        let missing = dir.path().join("absent.csv");
        assert!(matches!(load_csv(&missing, 3, false), Err(CsvError::Read { .. })));
    }

    #[test]
    fn non_finite_features_are_rejected_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        for (value, shown) in [("nan", "nan"), ("NaN", "NaN"), ("inf", "inf"), ("-infinity", "-infinity")] {
            let path = write(&dir, "f.csv", &format!("x,y,label\n1,2,0\n3,{value},1\n"));
            let schema = CsvSchema { header: true, ..CsvSchema::new(2) };
            let e = load_csv_with(&path, &schema).unwrap_err().to_string();
            assert!(e.ends_with(&format!("f.csv:3: column 2 (\"y\"): non-finite feature {shown}")), "{e}");
        }
    }

    #[test]
    fn declared_schema_picks_the_label_and_checks_the_width() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "s.csv", "# exported\nlabel,x,y,z\n2,0.1,0.2,0.3\n0,1,2,3.0\n");
        let by_name = CsvSchema {
            header: true,
            label_column: LabelColumn::Name("label".into()),
            features: Some(3),
            ..CsvSchema::new(3)
        };
        let d = load_csv_with(&path, &by_name).unwrap();
        assert_eq!((d.len(), d.dim), (2, 3));
        assert_eq!(d.labels, [2, 0]);
        assert_eq!(d.row(1), &[1.0, 2.0, 3.0]);
        let by_index = CsvSchema { label_column: LabelColumn::Index(0), ..by_name.clone() };
        assert_eq!(load_csv_with(&path, &by_index).unwrap().labels, [2, 0]);

        // The model expects 4 features: the header (line 2) already says otherwise.
        let e = load_csv_with(&path, &CsvSchema { features: Some(4), ..by_name.clone() }).unwrap_err().to_string();
        assert!(
            e.ends_with("s.csv:2: header has 4 columns, the schema declares 4 features and a label (5 columns)"),
            "{e}"
        );
        // Without a header, the first mismatching data row is named.
        let path = write(&dir, "n.csv", "1,2,3,0\n1,2,3,4,0\n");
        let schema = CsvSchema { features: Some(4), ..CsvSchema::new(5) };
        let e = load_csv_with(&path, &schema).unwrap_err().to_string();
        assert!(e.ends_with("n.csv:1: missing column: 4 columns, expected 5 (4 features and a label)"), "{e}");

        let path = write(&dir, "s.csv", "a,b,c\n1,2,0\n");
        let e = load_csv_with(&path, &CsvSchema { label_column: LabelColumn::Name("label".into()), ..by_name.clone() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.csv:1: header has 3 columns"), "{e}");
        let schema = CsvSchema { label_column: LabelColumn::Name("label".into()), features: None, ..by_name.clone() };
        let e = load_csv_with(&path, &schema).unwrap_err().to_string();
        assert!(e.ends_with("s.csv:1: missing column: no column named \"label\" (header: a, b, c)"), "{e}");
        let schema = CsvSchema { label_column: LabelColumn::Index(3), features: None, ..by_name.clone() };
        let e = load_csv_with(&path, &schema).unwrap_err().to_string();
        assert!(e.ends_with("s.csv:1: label column 3 (0-based) does not exist: rows have 3 columns"), "{e}");
        let schema = CsvSchema { header: false, features: None, ..by_name.clone() };
        assert!(matches!(load_csv_with(&path, &schema), Err(CsvError::Schema { .. })));
        let path = write(&dir, "d.csv", "a,a\n1,0\n");
        let schema = CsvSchema { label_column: LabelColumn::Name("a".into()), features: None, ..by_name };
        assert!(load_csv_with(&path, &schema).unwrap_err().to_string().contains("more than one column is named \"a\""));
    }

    #[test]
    fn numpy_style_float_labels_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "np.csv", "1.000e+00,2.0,1.000000000000000000e+00\n3,4,0.0\n");
        assert_eq!(load_csv(&path, 2, false).unwrap().labels, [1, 0]);
    }
}
