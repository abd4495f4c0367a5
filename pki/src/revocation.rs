//! Revocation that takes effect without a restart.
//!
//! The coordinator is given the CA's `crl.pem`. [`Revocations`] holds the serials it lists
//! and the rustls client verifier built with it; [`Revocations::reload_if_changed`] re-reads
//! the file when its modification time or size changes. It is called at every handshake and
//! at every request's identity check (one `stat`, about a microsecond), so a revocation
//! takes effect at the next handshake *and* on connections opened before it
//! ([`Revocations::check`]), with no restart and no polling delay.

use crate::PkiError;
use crate::files::{read_certs, read_crls};
use crate::peer::{PeerCert, PeerError};
use crate::provision::serial_hex;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tracing::{info, warn};

/// The deployment CA plus the current revocation list.
#[derive(Debug)]
pub struct Revocations {
    roots: Arc<RootCertStore>,
    crl_path: Option<PathBuf>,
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    /// (mtime, len) of the CRL file last loaded.
    stamp: Option<(SystemTime, u64)>,
    serials: HashSet<String>,
    verifier: Arc<dyn ClientCertVerifier>,
    generation: u64,
}

impl Revocations {
    /// Trusts the certificates in `ca` (PEM) and, if given, the CRL in `crl` (PEM).
    ///
    /// # Errors
    /// Unreadable CA or CRL, or a CRL rustls rejects.
    pub fn load(ca: &Path, crl: Option<&Path>) -> Result<Self, PkiError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots.add(cert).map_err(|e| PkiError::Tls(format!("{}: {e}", ca.display())))?;
        }
        let roots = Arc::new(roots);
        let (stamp, serials, verifier) = build(&roots, crl)?;
        Ok(Self {
            roots,
            crl_path: crl.map(Path::to_path_buf),
            state: RwLock::new(State { stamp, serials, verifier, generation: 0 }),
        })
    }

    /// The verifier current now (rustls asks at every handshake through [`ReloadingVerifier`]).
    pub(crate) fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.state.read().expect("revocation lock").verifier)
    }

    /// How many times the CRL has been (re)loaded since start; 0 = the initial load.
    pub fn generation(&self) -> u64 {
        self.state.read().expect("revocation lock").generation
    }

    /// Re-reads the CRL if its file changed. A CRL that fails to load keeps the previous one
    /// in force (and is logged): a half-written or corrupt file must not lift revocations.
    ///
    /// Returns whether a new list was loaded.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.crl_path else { return false };
        let stamp = file_stamp(path);
        if stamp == self.state.read().expect("revocation lock").stamp {
            return false;
        }
        match build(&self.roots, Some(path)) {
            Ok((stamp, serials, verifier)) => {
                let mut state = self.state.write().expect("revocation lock");
                state.stamp = stamp;
                state.serials = serials;
                state.verifier = verifier;
                state.generation += 1;
                info!(crl = %path.display(), revoked = state.serials.len(), generation = state.generation, "revocation list reloaded");
                true
            }
            Err(e) => {
                warn!(crl = %path.display(), error = %e, "revocation list not reloaded; the previous one stays in force");
                false
            }
        }
    }

    /// Whether a certificate accepted at handshake time is still good now: not revoked since,
    /// not expired since.
    ///
    /// # Errors
    /// [`PeerError::Revoked`] or [`PeerError::Expired`].
    pub fn check(&self, peer: &PeerCert) -> Result<(), PeerError> {
        self.reload_if_changed();
        if self.state.read().expect("revocation lock").serials.contains(&peer.serial) {
            return Err(PeerError::Revoked { serial: peer.serial.clone() });
        }
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        if now > peer.not_after {
            return Err(PeerError::Expired { not_after: peer.not_after });
        }
        Ok(())
    }
}

type Built = (Option<(SystemTime, u64)>, HashSet<String>, Arc<dyn ClientCertVerifier>);

fn build(roots: &Arc<RootCertStore>, crl: Option<&Path>) -> Result<Built, PkiError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), crate::provider());
    let mut serials = HashSet::new();
    let mut stamp = None;
    if let Some(path) = crl {
        stamp = file_stamp(path);
        let crls = read_crls(path)?;
        for der in &crls {
            let (_, parsed) = x509_parser::parse_x509_crl(der.as_ref())
                .map_err(|e| PkiError::Pem { path: path.display().to_string(), reason: e.to_string() })?;
            serials.extend(parsed.iter_revoked_certificates().map(|r| serial_hex(r.raw_serial())));
        }
        // A certificate whose status this CRL cannot tell (another CA's) is refused anyway by
        // the chain check; fedra has one CA per deployment.
        builder = builder.with_crls(crls).allow_unknown_revocation_status();
    }
    let verifier = builder.build().map_err(|e| PkiError::Tls(format!("client verifier: {e}")))?;
    Ok((stamp, serials, verifier))
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The rustls verifier that always delegates to the [`Revocations`]' current one.
#[derive(Debug)]
pub(crate) struct ReloadingVerifier(pub(crate) Arc<Revocations>);

impl ClientCertVerifier for ReloadingVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // Hints are optional; an empty list keeps this independent of reloads.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0.reload_if_changed();
        self.0.verifier().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.verifier().supported_verify_schemes()
    }
}
