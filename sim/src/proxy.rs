//! A TCP relay that counts the bytes flowing through it, one way each: the measuring tape
//! in front of a global coordinator. It sees TLS records (it cannot read them), so what it
//! counts is what the network carries, protocol overhead included.

use anyhow::Result;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes relayed so far, per direction.
#[derive(Debug, Default)]
pub struct Counts {
    /// From the connecting side to the target (what the target receives).
    pub to_target: AtomicU64,
    /// From the target back.
    pub from_target: AtomicU64,
}

/// A running relay; dropped, it stops accepting.
pub struct CountingProxy {
    addr: SocketAddr,
    counts: Arc<Counts>,
    accept: JoinHandle<()>,
}

impl CountingProxy {
    /// Listens on an ephemeral loopback port and relays every connection to `target`.
    ///
    /// # Errors
    /// Bind failure.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let up = pump(ri, wo, Arc::clone(&c), true);
                    let down = pump(ro, wi, c, false);
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(Self { addr, counts, accept })
    }

    /// `https://<proxy address>`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Bytes the target has received through the relay so far.
    pub fn to_target(&self) -> u64 {
        self.counts.to_target.load(Ordering::Relaxed)
    }

    pub fn from_target(&self) -> u64 {
        self.counts.from_target.load(Ordering::Relaxed)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counts: Arc<Counts>,
    up: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let counter = if up { &counts.to_target } else { &counts.from_target };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
