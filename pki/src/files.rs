//! Reading and writing PEM files; secrets are created with mode 0600 before any byte is
//! written, so a key is never readable by others, not even for a moment.

use crate::PkiError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `ca.pem` + `cert.pem` + `key.pem`: one holder's identity as `fedra pki issue` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityDir {
    pub dir: PathBuf,
}

impl IdentityDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| PkiError::io(path, e))
}

/// Every certificate in a PEM file; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = std::fs::read(path).map_err(|e| PkiError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem { path: path.display().to_string(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(PkiError::Pem { path: path.display().to_string(), reason: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = std::fs::read(path).map_err(|e| PkiError::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| PkiError::Pem { path: path.display().to_string(), reason: format!("no private key: {e}") })
}

pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let bytes = std::fs::read(path).map_err(|e| PkiError::io(path, e))?;
    CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem { path: path.display().to_string(), reason: e.to_string() })
}

/// Writes a public file (certificates, CRLs), replacing it atomically so that a reader
/// (the coordinator reloading its CRL) never sees half a file.
pub fn write_public(path: &Path, text: &str) -> Result<(), PkiError> {
    write_atomic(path, text, 0o644)
}

/// Writes a private key with mode 0600.
pub fn write_secret(path: &Path, text: &str) -> Result<(), PkiError> {
    write_atomic(path, text, 0o600)
}

fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    // A leftover from an interrupted write keeps its old mode: start from nothing.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(&tmp).map_err(|e| PkiError::io(&tmp, e))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| PkiError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| PkiError::io(path, e))
}
