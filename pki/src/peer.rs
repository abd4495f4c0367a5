//! The certified identity of a connection's peer.
//!
//! The TLS handshake has already verified the chain against the deployment CA, the
//! validity period and the CRL current at handshake time; what is left for the gRPC edge is
//! to read *who* the certificate names and to re-check what can change during a long-lived
//! connection (expiry, revocation: see [`crate::Revocations::check`]).

use crate::provision::serial_hex;
use fedra_types::identity::{Identity, IdentityError, SCHEME};
use x509_parser::extensions::GeneralName;

/// What a verified peer certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub identity: Identity,
    /// Serial as [`serial_hex`] spells it.
    pub serial: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

/// Why a peer has no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("no client certificate was presented (this endpoint requires mutual TLS)")]
    NoCertificate,
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the client certificate carries no fedra:// SAN URI")]
    NoIdentity,
    #[error("the client certificate carries {0} fedra:// SAN URIs; exactly one is allowed")]
    AmbiguousIdentity(usize),
    #[error("the client certificate's identity is invalid: {0}")]
    BadIdentity(#[from] IdentityError),
    #[error("the client certificate (serial {serial}) has been revoked")]
    Revoked { serial: String },
    #[error("the client certificate expired at {not_after} (Unix seconds)")]
    Expired { not_after: i64 },
}

impl PeerCert {
    /// Reads the identity from a DER certificate (the end-entity one of the chain).
    ///
    /// # Errors
    /// Unparsable certificate, or not exactly one valid `fedra://` SAN URI.
    pub fn from_der(der: &[u8]) -> Result<Self, PeerError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PeerError::Unparsable(e.to_string()))?;
        let san = cert.subject_alternative_name().map_err(|e| PeerError::Unparsable(e.to_string()))?;
        let uris: Vec<&str> = san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) if u.starts_with(SCHEME) => Some(*u),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let uri = match uris.as_slice() {
            [] => return Err(PeerError::NoIdentity),
            [one] => *one,
            many => return Err(PeerError::AmbiguousIdentity(many.len())),
        };
        Ok(Self {
            identity: uri.parse()?,
            serial: serial_hex(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}
