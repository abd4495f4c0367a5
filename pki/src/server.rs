//! The mutual-TLS 1.3 server side shared by every fedra endpoint.

use crate::files::{read_certs, read_key};
use crate::revocation::{ReloadingVerifier, Revocations};
use crate::{IdentityDir, PkiError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// A server's TLS setup: its certificate and key, the deployment CA, the revocation list.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    revocations: Arc<Revocations>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("revocations", &self.revocations).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// TLS 1.3 only, HTTP/2 only, client certificates mandatory and verified against the
    /// identity directory's `ca.pem` and the CRL at `crl` (reloaded when it changes).
    ///
    /// # Errors
    /// Unreadable or mismatched files, named.
    pub fn load(identity: &IdentityDir, crl: Option<&Path>) -> Result<Self, PkiError> {
        let revocations = Arc::new(Revocations::load(&identity.ca(), crl)?);
        let chain = read_certs(&identity.cert())?;
        let key = read_key(&identity.key())?;
        let mut config = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(Arc::new(ReloadingVerifier(Arc::clone(&revocations))))
            .with_single_cert(chain, key)
            .map_err(|e| PkiError::Tls(format!("{} / {}: {e}", identity.cert().display(), identity.key().display())))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { config: Arc::new(config), revocations })
    }

    /// The revocation state, for the per-request checks at the gRPC edge.
    pub fn revocations(&self) -> Arc<Revocations> {
        Arc::clone(&self.revocations)
    }

    /// Accepts TCP connections on `listener` and yields those whose TLS handshake completes
    /// within `handshake_timeout`. Handshakes run concurrently (at most `max_handshakes` at a
    /// time; more wait in the kernel's backlog), so a peer that connects and stays silent
    /// costs one slot for at most the timeout and never delays other peers. Failed
    /// handshakes (no certificate, another CA's, expired, revoked) are logged at debug and
    /// dropped: the peer sees the TLS alert.
    pub fn incoming(
        &self,
        listener: TcpListener,
        handshake_timeout: Duration,
        max_handshakes: usize,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(max_handshakes.max(1)));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}
