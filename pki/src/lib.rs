//! fedra's identities on the wire.
//!
//! - [`provision`]: a deployment CA, certificates whose SAN URI carries a
//!   [`fedra_types::identity::Identity`], and revocation (a CRL signed by the CA), with rcgen.
//!   Private keys are written with mode 0600.
//! - [`server`]: the mutual-TLS 1.3 server side (rustls): a client-certificate verifier that
//!   checks the chain, expiry and the current CRL, reloaded without a restart, and an
//!   accept loop whose handshakes run concurrently under a deadline, so that a silent peer
//!   cannot stall other connections.
//! - [`client`]: the client side: a tonic endpoint that presents an identity directory's
//!   certificate and trusts only the deployment's CA.
//! - [`peer`]: the certified identity of a connection's peer, read from its (already
//!   verified) certificate.
//!
//! - [`signing`] and [`checkpoint`]: the Ed25519 key that signs checkpoint manifests, the
//!   trusted public keys, and the verification every checkpoint consumer runs before use
//!   (signature, file digests, parent chain).
//!
//! An *identity directory* holds `ca.pem` (the deployment's CA certificate), `cert.pem` and
//! `key.pem`: what `fedra pki issue` writes and what every fedra binary takes as `--tls-dir`.

pub mod checkpoint;
pub mod client;
pub mod files;
pub mod peer;
pub mod provision;
pub mod revocation;
pub mod server;
pub mod signing;

pub use client::ClientTls;
pub use files::IdentityDir;
pub use peer::{PeerCert, PeerError};
pub use revocation::Revocations;
pub use server::{AcceptLimits, ServerTls};

/// Provisioning, loading or TLS setup failed. Every variant names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Identity(#[from] fedra_types::identity::IdentityError),
}

impl PkiError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        PkiError::Io { path: path.display().to_string(), source }
    }
}

/// The one rustls crypto provider fedra compiles in (ring). Passed explicitly to every
/// config builder so that no process-wide default has to be installed first.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
