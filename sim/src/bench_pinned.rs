//! `fedra-sim bench pinned-memory`: how much memory certified but hostile connections can
//! pin in the coordinator, measured rather than argued.
//!
//! A raw HTTP/2 client (the `h2` crate over rustls, no tonic) connects with a client
//! certificate to a real `fedra-coordinator` process and, on each of its connections, opens
//! as many `PushUpdate` streams as the server allows. On every stream it announces a gRPC
//! message of the largest size the FleetService accepts and sends all of it but the last
//! byte, as fast as flow control lets it, then holds the stream open. Nothing it sent can
//! ever be decoded, so everything the coordinator buffered for it stays buffered. The
//! coordinator's VmRSS before and after, divided by the number of connections, is the
//! per-connection cost that SECURITY.md bounds (one HTTP/2 connection window plus one
//! partial message per stream). A second pass opens one connection more than the
//! per-identity limit and reports whether it got through.

use crate::bench_rounds::coordinator_process::{CoordinatorProcess, CoordinatorSettings, sample};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Streams one connection may hold open (the coordinator's `max_concurrent_streams`).
pub const STREAMS_PER_CONNECTION: usize = 16;
/// hyper's adaptive window never grows a connection window past this (its BDP limit).
pub const MAX_CONNECTION_WINDOW: u64 = 16 << 20;

/// Command-line flags.
#[derive(clap::Args, Debug, Clone)]
pub struct PinnedArgs {
    /// Hostile connections, all with one certified identity (at most the coordinator's
    /// per-identity limit, 8; at the limit, one more connection is tried and must be refused).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// The coordinator binary (default: `fedra-coordinator` next to this executable).
    #[arg(long)]
    pub coordinator: Option<PathBuf>,
    /// Stop pushing once no stream has made progress for this long.
    #[arg(long, default_value_t = 3.0)]
    pub stall_seconds: f64,
}

/// What one measurement found.
#[derive(Debug, Clone)]
pub struct PinnedReport {
    pub connections: usize,
    pub streams: usize,
    /// Bytes the hostile client got onto the wire (all of them partial messages).
    pub bytes_sent: u64,
    pub rss_before: u64,
    pub rss_pinned: u64,
    pub rss_after_close: u64,
    /// SECURITY.md's bound for one connection.
    pub bound_per_connection: u64,
    /// An honest caller's RPC still answered while the connections were pinned.
    pub honest_call_ok: bool,
    /// A connection beyond the per-identity limit got an RPC answered (it must not).
    pub over_limit_admitted: bool,
}

impl PinnedReport {
    pub fn per_connection(&self) -> u64 {
        self.rss_pinned.saturating_sub(self.rss_before) / self.connections.max(1) as u64
    }

    /// Markdown table rows (with header).
    pub fn table(&self) -> String {
        let mib = |b: u64| format!("{:.1}", b as f64 / f64::from(1 << 20));
        format!(
            "| connections × streams | partial bytes sent (MiB) | RSS before (MiB) | RSS pinned (MiB) | per connection (MiB) | bound per connection (MiB) | RSS after close (MiB) | honest RPC answered | connection over the identity limit admitted |\n\
             |---|---:|---:|---:|---:|---:|---:|---|---|\n\
             | {} × {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.connections,
            self.streams,
            mib(self.bytes_sent),
            mib(self.rss_before),
            mib(self.rss_pinned),
            mib(self.per_connection()),
            mib(self.bound_per_connection),
            mib(self.rss_after_close),
            if self.honest_call_ok { "yes" } else { "NO" },
            if self.over_limit_admitted { "YES" } else { "no" },
        )
    }
}

/// One hostile connection: its h2 handle (dropping it closes the connection) and streams.
struct Hostile {
    _client: h2::client::SendRequest<Bytes>,
    streams: Vec<h2::SendStream<Bytes>>,
    _responses: Vec<h2::client::ResponseFuture>,
}

async fn connect(port: u16, tls: std::sync::Arc<rustls::ClientConfig>) -> Result<h2::client::SendRequest<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.context("TLS handshake")?;
    let (client, connection) = h2::client::handshake(stream).await.context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Opens `STREAMS_PER_CONNECTION` PushUpdate streams and starts each partial message.
async fn open(port: u16, tls: std::sync::Arc<rustls::ClientConfig>, message: usize) -> Result<Hostile> {
    let mut client = connect(port, tls).await?;
    let mut streams = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..STREAMS_PER_CONNECTION {
        let request = http::Request::post(format!("https://127.0.0.1:{port}/fedra.v1.FleetService/PushUpdate"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        client = client.ready().await.context("stream slot")?;
        let (response, mut stream) = client.send_request(request, false)?;
        // The gRPC length prefix: uncompressed, `message` bytes follow (the service's limit).
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&u32::try_from(message)?.to_be_bytes());
        stream.send_data(Bytes::from(prefix), false)?;
        streams.push(stream);
        responses.push(response);
    }
    Ok(Hostile { _client: client, streams, _responses: responses })
}

/// Sends up to `remaining[i]` bytes on each stream, as flow control allows, until every
/// stream is done or none made progress for `stall`. Returns the bytes sent.
async fn push(hostiles: &mut [Hostile], remaining: &mut [usize], stall: Duration) -> Result<u64> {
    const PIECE: usize = 64 << 10;
    let zeros = Bytes::from(vec![0u8; PIECE]);
    let mut sent = 0u64;
    let mut last_progress = Instant::now();
    while remaining.iter().any(|&r| r > 0) && last_progress.elapsed() < stall {
        let mut progressed = false;
        for (stream, left) in hostiles.iter_mut().flat_map(|h| h.streams.iter_mut()).zip(remaining.iter_mut()) {
            if *left == 0 {
                continue;
            }
            stream.reserve_capacity((*left).min(PIECE));
            let granted = stream.capacity();
            if granted > 0 {
                let n = granted.min(*left).min(PIECE);
                stream.send_data(zeros.slice(..n), false)?;
                *left -= n;
                sent += n as u64;
                progressed = true;
            }
        }
        if progressed {
            last_progress = Instant::now();
        } else {
            // Capacity arrives when the server reads and releases window; give the
            // connection tasks a moment to process WINDOW_UPDATE frames.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(sent)
}

/// Runs the measurement against a fresh coordinator process.
///
/// # Errors
/// The coordinator does not start, or the hostile client cannot even connect.
pub async fn run(args: &PinnedArgs) -> Result<PinnedReport> {
    let binary = match &args.coordinator {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.parent().context("executable has no directory")?.join("fedra-coordinator"),
    };
    let limit = fedra_coordinator::config::DEFAULT_CONNECTIONS_PER_IDENTITY as usize;
    if args.connections == 0 || args.connections > limit {
        bail!("--connections must be in 1..={limit} (the coordinator's per-identity limit)");
    }
    let settings = CoordinatorSettings {
        binary,
        heartbeat_seconds: 5.0,
        // Long enough that no idle cut-off frees anything during the measurement.
        client_timeout_seconds: 600.0,
        max_concurrent_uploads: None,
        chunk_bytes: None,
        log_filter: "warn".into(),
        insecure: false,
        store_url: None,
    };
    let coordinator = CoordinatorProcess::start(&settings).await?;
    let pki = coordinator.pki.as_ref().context("mutual TLS coordinator")?;
    let hostile_dir = pki.identity_dir(&"fedra://client/eu/hostile".parse()?)?;
    let tls = fedra_pki::client::rustls_config(&hostile_dir)?;
    let honest = coordinator.control_tls()?;

    // Warm the coordinator's own allocations (one honest call) before the baseline.
    let honest_call = || async {
        let channel = honest.endpoint(&coordinator.endpoint())?.connect().await?;
        fedra_proto::pb::run_service_client::RunServiceClient::new(channel)
            .list_runs(fedra_proto::pb::ListRunsRequest::default())
            .await?;
        anyhow::Ok(())
    };
    honest_call().await?;
    let rss_before = sample(coordinator.pid())?.rss;

    let message = fedra_coordinator::grpc::limits::FLEET_MAX_MESSAGE_BYTES;
    let mut hostiles = Vec::new();
    for _ in 0..args.connections {
        hostiles.push(open(coordinator.port, std::sync::Arc::clone(&tls), message).await?);
    }
    let mut remaining = vec![message - 1; args.connections * STREAMS_PER_CONNECTION];
    let bytes_sent = push(&mut hostiles, &mut remaining, Duration::from_secs_f64(args.stall_seconds)).await?;
    let rss_pinned = sample(coordinator.pid())?.rss;
    let honest_call_ok = honest_call().await.is_ok();

    // One connection more than the identity may hold, while the others are still open.
    let mut over_limit_admitted = false;
    if args.connections == limit {
        let over = tls_channel(&hostile_dir, &coordinator.endpoint())?;
        // Any answer from a service (even a refusal of the empty request) means the
        // connection got through; a closed connection surfaces as UNAVAILABLE or similar.
        over_limit_admitted = match fedra_proto::pb::fleet_service_client::FleetServiceClient::new(over)
            .heartbeat(fedra_proto::pb::HeartbeatRequest::default())
            .await
        {
            Ok(_) => true,
            Err(e) => !matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled),
        };
    }

    drop(hostiles);
    // Give the coordinator the stall interval to notice the closed connections.
    tokio::time::sleep(Duration::from_secs_f64(args.stall_seconds)).await;
    let rss_after_close = sample(coordinator.pid())?.rss;
    coordinator.stop().await;
    let partial = (message + 5) as u64;
    Ok(PinnedReport {
        connections: args.connections,
        streams: STREAMS_PER_CONNECTION,
        bytes_sent,
        rss_before,
        rss_pinned,
        rss_after_close,
        bound_per_connection: MAX_CONNECTION_WINDOW + STREAMS_PER_CONNECTION as u64 * partial,
        honest_call_ok,
        over_limit_admitted,
    })
}

fn tls_channel(dir: &fedra_pki::IdentityDir, endpoint: &str) -> Result<tonic::transport::Channel> {
    Ok(fedra_pki::ClientTls::load(dir)?.endpoint(endpoint)?.connect_timeout(Duration::from_secs(5)).connect_lazy())
}
