//! Loading a labelled CSV file: one sample per line, feature columns then the integer
//! label in the last column; an optional header line; `#` starts a comment line.

use super::{DataError, Dataset};
use std::path::Path;

/// A CSV file could not be turned into a dataset.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Line { path: String, line: usize, message: String },
    #[error("{path}: {source}")]
    Data { path: String, source: DataError },
}

/// Loads `path` as a dataset of `classes` classes.
///
/// # Errors
/// [`CsvError::Line`] names the line and problem (wrong column count, a value that is not
/// a number, a label that is not an integer below `classes`).
pub fn load_csv(path: &Path, classes: usize, header: bool) -> Result<Dataset, CsvError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CsvError::Read { path: p.clone(), source })?;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut dim: Option<usize> = None;
    let line_err = |line: usize, message: String| CsvError::Line { path: p.clone(), line, message };
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || (header && i == 0) {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if cols.len() < 2 {
            return Err(line_err(line_no, "need at least one feature and a label".into()));
        }
        let d = cols.len() - 1;
        match dim {
            None => dim = Some(d),
            Some(expected) if expected != d => {
                return Err(line_err(line_no, format!("{d} features, earlier lines have {expected}")));
            }
            Some(_) => {}
        }
        for (c, v) in cols[..d].iter().enumerate() {
            let x: f32 =
                v.parse().map_err(|_| line_err(line_no, format!("column {}: {v:?} is not a number", c + 1)))?;
            features.push(x);
        }
        let label_text = cols[d];
        let label: u32 = label_text
            .parse()
            .map_err(|_| line_err(line_no, format!("label {label_text:?} is not a non-negative integer")))?;
        if label as usize >= classes {
            return Err(line_err(line_no, format!("label {label} is not below {classes} classes")));
        }
        labels.push(label);
    }
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "csv".into());
    Dataset::new(name, features, labels, dim.unwrap_or(0), classes).map_err(|source| CsvError::Data { path: p, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.csv");
        std::fs::write(&good, "a,b,label\n1,2,0\n# comment\n3.5,-1,2\n").unwrap();
        let d = load_csv(&good, 3, true).unwrap();
        assert_eq!((d.len(), d.dim), (2, 2));
        assert_eq!(d.row(1), &[3.5, -1.0]);

        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "1,2,0\n3,x,1\n").unwrap();
        let e = load_csv(&bad, 3, false).unwrap_err().to_string();
        assert!(e.ends_with("bad.csv:2: column 2: \"x\" is not a number"), "{e}");
        std::fs::write(&bad, "1,2,0\n3,1\n").unwrap();
        assert!(load_csv(&bad, 3, false).unwrap_err().to_string().contains(":2: 1 features, earlier lines have 2"));
        std::fs::write(&bad, "1,2,7\n").unwrap();
        assert!(load_csv(&bad, 3, false).unwrap_err().to_string().contains("label 7 is not below 3"));
        std::fs::write(&bad, "").unwrap();
        assert!(matches!(load_csv(&bad, 3, false), Err(CsvError::Data { .. })));
    }
}
