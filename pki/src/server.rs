//! The mutual-TLS 1.3 server side shared by every fedra endpoint.

use crate::files::{read_certs, read_key};
use crate::peer::PeerCert;
use crate::revocation::{ReloadingVerifier, Revocations};
use crate::{IdentityDir, PkiError};
use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

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
    /// within `limits.handshake_timeout` and whose certified identity holds fewer than
    /// `limits.max_connections_per_identity` connections already.
    ///
    /// Handshakes run concurrently (at most `limits.max_handshakes` at a time; more wait in
    /// the kernel's backlog), so a peer that connects and stays silent costs one slot for at
    /// most the timeout and never delays other peers. Failed handshakes (no certificate,
    /// another CA's, expired, revoked) are logged at debug and dropped: the peer sees the TLS
    /// alert. A connection beyond its identity's limit is closed right after the handshake
    /// (logged at warn, with the identity): every connection may buffer up to the
    /// per-connection bound, so without this one certificate could multiply that bound.
    pub fn incoming(
        &self,
        listener: TcpListener,
        limits: AcceptLimits,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Counted<TlsStream<TcpStream>>>> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_handshakes.max(1)));
        let per_identity = ConnectionCounts::new(limits.max_connections_per_identity);
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
                let per_identity = per_identity.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let key = identity_key(&tls);
                            match per_identity.admit(&key) {
                                Some(slot) => {
                                    let _ = tx.send(Ok(Counted { inner: tls, _slot: slot })).await;
                                }
                                None => warn!(
                                    %peer,
                                    identity = %key,
                                    limit = limits.max_connections_per_identity,
                                    "connection refused: this identity already holds its limit of connections"
                                ),
                            }
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

/// Bounds on [`ServerTls::incoming`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptLimits {
    /// A handshake not complete by then is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
    /// Open connections per certified identity (the certificate's `fedra://` URI; several
    /// certificates of one identity, e.g. during rotation, share the count).
    pub max_connections_per_identity: usize,
}

/// The identity a connection counts against: its leaf certificate's `fedra://` URI, or
/// `"<unidentified>"` for a certificate without a valid one (the gRPC edge refuses such
/// peers on their first request; until then they share one count).
fn identity_key(tls: &TlsStream<TcpStream>) -> String {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| PeerCert::from_der(leaf.as_ref()).ok())
        .map_or_else(|| "<unidentified>".to_string(), |peer| peer.identity.to_string())
}

/// Open connections per identity, shared by the accept loop and every connection's slot.
#[derive(Debug, Clone)]
struct ConnectionCounts {
    limit: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl ConnectionCounts {
    fn new(limit: usize) -> Self {
        Self { limit: limit.max(1), open: Arc::default() }
    }

    /// A slot for one more connection of `key`, or `None` at the limit.
    fn admit(&self, key: &str) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key.to_string()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot { key: key.to_string(), open: Arc::clone(&self.open) })
    }
}

/// One counted connection; dropping it (the connection closed) frees the slot.
#[derive(Debug)]
struct Slot {
    key: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A connection that holds its identity's slot for as long as it lives. Reads, writes and
/// the connection info (peer certificates) are the inner stream's.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for Counted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectionCounts;

    #[test]
    fn an_identity_gets_its_limit_of_slots_and_a_closed_one_back() {
        let counts = ConnectionCounts::new(2);
        let a1 = counts.admit("fedra://client/eu/a").expect("first");
        let _a2 = counts.admit("fedra://client/eu/a").expect("second");
        assert!(counts.admit("fedra://client/eu/a").is_none(), "third refused");
        let _b = counts.admit("fedra://client/eu/b").expect("another identity is counted apart");
        drop(a1);
        let _a3 = counts.admit("fedra://client/eu/a").expect("a closed connection frees its slot");
        assert!(counts.admit("fedra://client/eu/a").is_none());
    }

    #[test]
    fn the_last_slot_of_an_identity_removes_its_entry() {
        let counts = ConnectionCounts::new(1);
        drop(counts.admit("x").expect("slot"));
        assert!(counts.open.lock().expect("lock").is_empty());
    }
}
