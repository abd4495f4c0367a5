//! The client side: a tonic endpoint presenting an identity directory's certificate.

use crate::PkiError;
use crate::files::{IdentityDir, read_text};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How a fedra client (sidecar, CLI, aggregator) reaches a server.
#[derive(Debug, Clone)]
pub enum ClientTls {
    /// Mutual TLS with this identity directory.
    Mutual(ClientTlsConfig),
    /// Plain text (the server runs with `--insecure`, loopback only).
    Insecure,
}

impl ClientTls {
    /// Loads `ca.pem`, `cert.pem` and `key.pem` from `dir`.
    ///
    /// # Errors
    /// Unreadable files, named.
    pub fn load(dir: &IdentityDir) -> Result<Self, PkiError> {
        Ok(Self::from_pem(&read_text(&dir.ca())?, &read_text(&dir.cert())?, &read_text(&dir.key())?))
    }

    /// From PEM text already in memory.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Self {
        let identity = Identity::from_pem(cert, key);
        ClientTls::Mutual(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).identity(identity))
    }

    /// `url` as an endpoint with this TLS setup. `https://` and `http://` are both accepted
    /// and set to what the setup needs, so that one address works in either mode.
    ///
    /// # Errors
    /// A malformed URL or TLS configuration.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, PkiError> {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or(url);
        match self {
            ClientTls::Mutual(config) => Endpoint::from_shared(format!("https://{rest}"))
                .and_then(|e| e.tls_config(config.clone()))
                .map_err(|e| PkiError::Invalid(format!("endpoint {url:?}: {e}"))),
            ClientTls::Insecure => Endpoint::from_shared(format!("http://{rest}"))
                .map_err(|e| PkiError::Invalid(format!("endpoint {url:?}: {e}"))),
        }
    }
}

/// A bare rustls client configuration (TLS 1.3, ALPN `h2`) that presents `dir`'s
/// certificate and trusts only its `ca.pem`: for tools that speak HTTP/2 themselves (the
/// hostile-peer benchmark drives frames tonic would never send), not for gRPC clients,
/// which use [`ClientTls`].
///
/// # Errors
/// Unreadable or mismatched files, named.
pub fn rustls_config(dir: &IdentityDir) -> Result<std::sync::Arc<rustls::ClientConfig>, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in crate::files::read_certs(&dir.ca())? {
        roots.add(ca).map_err(|e| PkiError::Tls(format!("{}: {e}", dir.ca().display())))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(crate::files::read_certs(&dir.cert())?, crate::files::read_key(&dir.key())?)
        .map_err(|e| PkiError::Tls(format!("{} / {}: {e}", dir.cert().display(), dir.key().display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(std::sync::Arc::new(config))
}
