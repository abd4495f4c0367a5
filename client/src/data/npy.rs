//! Loading a dataset from a pair of NumPy `.npy` files, as written by `numpy.save`.
//!
//! - features: a 2-D array of shape `[n, d]`, dtype float32 or float64 (either byte order),
//!   C or Fortran order (Fortran is transposed on load); float64 values are narrowed to f32;
//! - labels: a 1-D array of shape `[n]` of any integer dtype (`int8`..`int64`,
//!   `uint8`..`uint64`), each in `0..classes`.
//!
//! Parsing is done by the `npyz` crate; this module checks the arrays against the schema
//! ([`NpySchema`]) before building the [`Dataset`], so a bad pair is rejected at client start
//! with an error that names the file and, for bad values, the 0-based row (as NumPy indexes
//! it): wrong number of dimensions, unsupported dtype (including pickled object arrays),
//! row-count mismatch between the two files, feature count different from the declared one,
//! non-finite feature (or a float64 beyond f32's range), label out of range, truncated file.

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar};
use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;

use super::{DataError, Dataset};

/// What a pair of `.npy` files must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpySchema {
    /// Number of classes: labels must be below it.
    pub classes: usize,
    /// Declared number of features (the model's input size); `None` accepts the file's.
    pub features: Option<usize>,
}

/// A `.npy` pair could not be turned into a dataset.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a valid .npy file: {message}")]
    Format { path: String, message: String },
    #[error("{path}: expected a {expected}-D array ({what}), found shape {shape:?}")]
    Ndim { path: String, expected: usize, what: &'static str, shape: Vec<u64> },
    #[error("{path}: dtype {dtype} is not supported (expected {expected})")]
    Dtype { path: String, dtype: String, expected: &'static str },
    #[error("{features_path} has {feature_rows} rows but {labels_path} has {label_rows} labels")]
    Rows { features_path: String, feature_rows: u64, labels_path: String, label_rows: u64 },
    #[error("{path}: {found} features per row, the schema declares {declared}")]
    Width { path: String, found: u64, declared: usize },
    #[error("{path}: row {row}, column {column}: non-finite feature {value}")]
    NonFinite { path: String, row: usize, column: usize, value: f64 },
    #[error("{path}: row {row}: label {label} is not in 0..{classes}")]
    Label { path: String, row: usize, label: i128, classes: usize },
    #[error("{path}: {source}")]
    Data { path: String, source: DataError },
}

const FEATURE_DTYPES: &str = "float32 or float64";
const LABEL_DTYPES: &str = "an integer dtype: int8..int64 or uint8..uint64";

/// Loads features from `features_path` and labels from `labels_path`; the dataset is named
/// after the features file's stem.
///
/// # Errors
/// An [`NpyError`] naming the offending file (and row, for bad values), as listed in the
/// module doc.
pub fn load_npy(features_path: &Path, labels_path: &Path, schema: &NpySchema) -> Result<Dataset, NpyError> {
    let fp = features_path.display().to_string();
    let lp = labels_path.display().to_string();

    let (x, x_data) = open(features_path)?;
    let (y, y_data) = open(labels_path)?;
    let &[rows, dim] = x.shape() else {
        return Err(NpyError::Ndim { path: fp, expected: 2, what: "samples x features", shape: x.shape().to_vec() });
    };
    let &[label_rows] = y.shape() else {
        return Err(NpyError::Ndim { path: lp, expected: 1, what: "one label per sample", shape: y.shape().to_vec() });
    };
    if rows != label_rows {
        return Err(NpyError::Rows { features_path: fp, feature_rows: rows, labels_path: lp, label_rows });
    }
    if let Some(declared) = schema.features
        && dim != declared as u64
    {
        return Err(NpyError::Width { path: fp, found: dim, declared });
    }
    let x_size = item_size(&x, &[TypeChar::Float], &[4, 8], &fp, FEATURE_DTYPES)?;
    let y_size = item_size(&y, &[TypeChar::Int, TypeChar::Uint], &[1, 2, 4, 8], &lp, LABEL_DTYPES)?;
    check_length(&x, x_size, x_data, &fp)?;
    check_length(&y, y_size, y_data, &lp)?;

    let (rows, dim) = (usize::try_from(rows).unwrap_or(usize::MAX), usize::try_from(dim).unwrap_or(usize::MAX));
    let fortran = x.order() == Order::Fortran && rows > 1 && dim > 1;
    let values: Vec<f32> = match x_size {
        4 => read::<f32>(x, &fp)?,
        _ => read::<f64>(x, &fp)?.into_iter().map(|v| v as f32).collect(),
    };
    let features = if fortran { transpose(&values, rows, dim) } else { values };
    if let Some(pos) = features.iter().position(|v| !v.is_finite()) {
        // A float64 beyond f32's range was narrowed to an infinity and is reported as such.
        return Err(NpyError::NonFinite {
            path: fp,
            row: pos / dim,
            column: pos % dim,
            value: f64::from(features[pos]),
        });
    }

    let labels = read_labels(y, y_size, &lp)?;
    let labels = labels
        .into_iter()
        .enumerate()
        .map(|(row, label)| match u32::try_from(label) {
            Ok(l) if (l as usize) < schema.classes => Ok(l),
            _ => Err(NpyError::Label { path: lp.clone(), row, label, classes: schema.classes }),
        })
        .collect::<Result<Vec<u32>, NpyError>>()?;

    let name = features_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "npy".into());
    Dataset::new(name, features, labels, dim, schema.classes).map_err(|source| NpyError::Data { path: fp, source })
}

type Reader = NpyFile<BufReader<File>>;

/// Opens `path` and parses its header; also returns the number of data bytes after it.
fn open(path: &Path) -> Result<(Reader, u64), NpyError> {
    let p = || path.display().to_string();
    let read_err = |source| NpyError::Read { path: p(), source };
    let file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let mut reader = BufReader::new(file);
    let header =
        NpyHeader::from_reader(&mut reader).map_err(|e| NpyError::Format { path: p(), message: e.to_string() })?;
    let data_start = reader.stream_position().map_err(read_err)?;
    Ok((NpyFile::with_header(header, reader), len.saturating_sub(data_start)))
}

/// The size in bytes of one element, if the dtype is a plain scalar of an accepted kind and
/// size.
fn item_size(
    npy: &Reader,
    kinds: &[TypeChar],
    sizes: &[u64],
    path: &str,
    expected: &'static str,
) -> Result<u64, NpyError> {
    let dtype = npy.dtype();
    match &dtype {
        DType::Plain(ts) if kinds.contains(&ts.type_char()) && sizes.contains(&ts.size_field()) => Ok(ts.size_field()),
        DType::Plain(ts) => Err(NpyError::Dtype { path: path.into(), dtype: ts.to_string(), expected }),
        other => Err(NpyError::Dtype { path: path.into(), dtype: other.descr(), expected }),
    }
}

/// Rejects a file too short for its declared shape before reading (and allocating) anything.
fn check_length(npy: &Reader, item: u64, data_len: u64, path: &str) -> Result<(), NpyError> {
    let needed = npy.len().checked_mul(item);
    match needed {
        Some(needed) if needed <= data_len => Ok(()),
        _ => Err(NpyError::Format {
            path: path.into(),
            message: format!(
                "truncated: shape {:?} needs {} data bytes, the file has {data_len}",
                npy.shape(),
                needed.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
            ),
        }),
    }
}

fn read<T: npyz::Deserialize>(npy: Reader, path: &str) -> Result<Vec<T>, NpyError> {
    npy.into_vec::<T>().map_err(|source| NpyError::Read { path: path.into(), source })
}

/// Labels widened to `i128`, which holds every int64 and uint64 value.
fn read_labels(npy: Reader, size: u64, path: &str) -> Result<Vec<i128>, NpyError> {
    let signed = matches!(npy.dtype(), DType::Plain(ts) if ts.type_char() == TypeChar::Int);
    fn widen<T: Into<i128>>(v: Vec<T>) -> Vec<i128> {
        v.into_iter().map(Into::into).collect()
    }
    Ok(match (signed, size) {
        (true, 1) => widen(read::<i8>(npy, path)?),
        (true, 2) => widen(read::<i16>(npy, path)?),
        (true, 4) => widen(read::<i32>(npy, path)?),
        (true, _) => widen(read::<i64>(npy, path)?),
        (false, 1) => widen(read::<u8>(npy, path)?),
        (false, 2) => widen(read::<u16>(npy, path)?),
        (false, 4) => widen(read::<u32>(npy, path)?),
        (false, _) => widen(read::<u64>(npy, path)?),
    })
}

/// Column-major `[rows, dim]` values to row-major.
fn transpose(values: &[f32], rows: usize, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    for r in 0..rows {
        out.extend((0..dim).map(|c| values[c * rows + r]));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Writes a version 1.0 `.npy` file by hand, so tests can also make files NumPy would not.
    pub(crate) fn write_npy(path: &Path, descr: &str, fortran: bool, shape: &[u64], data: &[u8]) {
        let shape = match shape {
            [one] => format!("({one},)"),
            dims => format!("({})", dims.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
        };
        let order = if fortran { "True" } else { "False" };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
        // Pad with spaces so that magic (6) + version (2) + length (2) + header ends on 64 bytes.
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn i64s(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    struct Pair {
        _dir: tempfile::TempDir,
        x: PathBuf,
        y: PathBuf,
    }

    /// A valid pair: 3 samples x 2 features (row r = [r, 10 r]), labels [0, 1, 2].
    fn pair() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let (x, y) = (dir.path().join("features.npy"), dir.path().join("labels.npy"));
        write_npy(&x, "<f4", false, &[3, 2], &f32s(&[0.0, 0.0, 1.0, 10.0, 2.0, 20.0]));
        write_npy(&y, "<i8", false, &[3], &i64s(&[0, 1, 2]));
        Pair { _dir: dir, x, y }
    }

    fn schema() -> NpySchema {
        NpySchema { classes: 3, features: Some(2) }
    }

    fn load_err(p: &Pair) -> String {
        load_npy(&p.x, &p.y, &schema()).unwrap_err().to_string()
    }

    #[test]
    fn loads_c_and_fortran_order_and_all_label_dtypes() {
        let p = pair();
        let d = load_npy(&p.x, &p.y, &schema()).unwrap();
        assert_eq!((d.len(), d.dim, d.classes, d.name.as_str()), (3, 2, 3, "features"));
        assert_eq!(d.row(2), &[2.0, 20.0]);
        assert_eq!(d.labels, [0, 1, 2]);

        // The same matrix stored column-major, as float64 big-endian.
        let be: Vec<u8> = [0.0f64, 1.0, 2.0, 0.0, 10.0, 20.0].iter().flat_map(|x| x.to_be_bytes()).collect();
        write_npy(&p.x, ">f8", true, &[3, 2], &be);
        let d = load_npy(&p.x, &p.y, &NpySchema { features: None, ..schema() }).unwrap();
        assert_eq!(d.features, [0.0, 0.0, 1.0, 10.0, 2.0, 20.0]);

        for (descr, bytes) in [
            ("|u1", vec![0u8, 1, 2]),
            ("|i1", vec![0u8, 1, 2]),
            ("<i4", [0i32, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("<u2", [0u16, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect()),
            (">u8", [0u64, 1, 2].iter().flat_map(|v| v.to_be_bytes()).collect()),
        ] {
            write_npy(&p.y, descr, false, &[3], &bytes);
            assert_eq!(load_npy(&p.x, &p.y, &schema()).unwrap().labels, [0, 1, 2], "{descr}");
        }
    }

    #[test]
    fn bad_shapes_are_rejected_naming_the_file() {
        let p = pair();
        write_npy(&p.y, "<i8", false, &[2], &i64s(&[0, 1]));
        let e = load_err(&p);
        assert!(e.contains("features.npy has 3 rows but") && e.ends_with("labels.npy has 2 labels"), "{e}");

        write_npy(&p.y, "<i8", false, &[3, 1], &i64s(&[0, 1, 2]));
        let e = load_err(&p);
        assert!(e.contains("labels.npy: expected a 1-D array (one label per sample), found shape [3, 1]"), "{e}");

        let p = pair();
        write_npy(&p.x, "<f4", false, &[6], &f32s(&[0.0; 6]));
        let e = load_err(&p);
        assert!(e.contains("features.npy: expected a 2-D array (samples x features), found shape [6]"), "{e}");

        let p = pair();
        let e = load_npy(&p.x, &p.y, &NpySchema { features: Some(3), ..schema() }).unwrap_err().to_string();
        assert!(e.ends_with("features.npy: 2 features per row, the schema declares 3"), "{e}");

        write_npy(&p.x, "<f4", false, &[3, 2], &f32s(&[0.0; 5]));
        let e = load_err(&p);
        assert!(
            e.contains(
                "features.npy: not a valid .npy file: truncated: shape [3, 2] needs 24 data bytes, the file has 20"
            ),
            "{e}"
        );

        write_npy(&p.x, "<f4", false, &[0, 2], &[]);
        write_npy(&p.y, "<i8", false, &[0], &[]);
        assert!(matches!(load_npy(&p.x, &p.y, &schema()), Err(NpyError::Data { source: DataError::Empty { .. }, .. })));
    }

    #[test]
    fn unsupported_dtypes_and_bad_files_are_rejected() {
        let p = pair();
        write_npy(&p.x, "<i4", false, &[3, 2], &[0; 24]);
        let e = load_err(&p);
        assert!(e.ends_with("features.npy: dtype <i4 is not supported (expected float32 or float64)"), "{e}");
        write_npy(&p.x, "<f2", false, &[3, 2], &[0; 12]);
        assert!(load_err(&p).contains("dtype <f2 is not supported"));
        write_npy(&p.x, "|O", false, &[3, 2], &[0; 48]);
        assert!(load_err(&p).contains("features.npy: dtype"), "{}", load_err(&p));

        let p = pair();
        write_npy(&p.y, "<f8", false, &[3], &f64s(&[0.0, 1.0, 2.0]));
        let e = load_err(&p);
        assert!(
            e.ends_with(
                "labels.npy: dtype <f8 is not supported (expected an integer dtype: int8..int64 or uint8..uint64)"
            ),
            "{e}"
        );
        write_npy(&p.y, "|b1", false, &[3], &[0, 1, 1]);
        assert!(load_err(&p).contains("labels.npy: dtype |b1 is not supported"));

        std::fs::write(&p.y, b"label\n0\n1\n2\n").unwrap();
        let e = load_err(&p);
        assert!(e.contains("labels.npy: not a valid .npy file"), "{e}");
        std::fs::remove_file(&p.y).unwrap();
        assert!(matches!(load_npy(&p.x, &p.y, &schema()), Err(NpyError::Read { .. })));
    }

    #[test]
    fn bad_values_are_rejected_naming_the_row() {
        let p = pair();
        write_npy(&p.x, "<f4", false, &[3, 2], &f32s(&[0.0, 0.0, 1.0, f32::NAN, 2.0, 20.0]));
        let e = load_err(&p);
        assert!(e.ends_with("features.npy: row 1, column 1: non-finite feature NaN"), "{e}");
        write_npy(&p.x, "<f8", false, &[3, 2], &f64s(&[0.0, 0.0, 1.0, 1.0, 1e300, 20.0]));
        assert!(load_err(&p).ends_with("features.npy: row 2, column 0: non-finite feature inf"));
        // Fortran order reports the logical row and column, not the storage position.
        write_npy(&p.x, "<f4", true, &[3, 2], &f32s(&[0.0, 1.0, 2.0, 0.0, f32::INFINITY, 20.0]));
        assert!(load_err(&p).ends_with("features.npy: row 1, column 1: non-finite feature inf"));

        let p = pair();
        write_npy(&p.y, "<i8", false, &[3], &i64s(&[0, 3, 1]));
        assert!(load_err(&p).ends_with("labels.npy: row 1: label 3 is not in 0..3"));
        write_npy(&p.y, "<i8", false, &[3], &i64s(&[0, 1, -1]));
        assert!(load_err(&p).ends_with("labels.npy: row 2: label -1 is not in 0..3"));
    }
}
