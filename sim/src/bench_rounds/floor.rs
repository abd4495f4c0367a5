//! The machine's floor for a round: what moving the round's bytes costs with no protocol.
//!
//! Same shape as a benchmarked case, nothing else: a separate server process (the
//! coordinator's place) and N client tasks in this process (the sidecars' place), one
//! loopback TCP connection each. Per round the server writes the P·4 model bytes to every
//! client from one shared buffer; each client reads them and writes P·4 bytes back; the
//! server folds every upload into an `f64` sum as its 256 KiB pieces arrive (one pass, the
//! same `sum += w·x` the coordinator does). The round ends when the last upload is folded.
//! No framing, no digest, no checkpoint, no store, no training: 2·N·P·4 bytes through the
//! kernel, plus one fold pass. A fedra round is reported as a multiple of this.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes read and folded per step, as the coordinator's chunks.
const PIECE: usize = 256 << 10;
/// The hidden subcommand that runs the server side in a child process.
pub const PEER_COMMAND: [&str; 2] = ["bench", "floor-peer"];

/// Floor rounds of one case.
#[derive(Debug, Clone, Serialize)]
pub struct FloorReport {
    pub rounds_s: Vec<f64>,
    /// Median of the rounds after the first (the first when there is one round).
    pub round_s_median: f64,
}

/// Measures the floor of `clients` × `params` over `rounds` rounds.
///
/// # Errors
/// The server process cannot start, or a connection fails.
pub async fn measure(clients: usize, params: usize, rounds: u32) -> Result<FloorReport> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(PEER_COMMAND)
        .args(["--clients", &clients.to_string(), "--params", &params.to_string(), "--rounds", &rounds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the floor server process")?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("floor server stdout")?).lines();
    let (first, mut lines) = tokio::task::spawn_blocking(move || (lines.next(), lines)).await?;
    let port: u16 = first
        .transpose()?
        .and_then(|l| l.strip_prefix("listening ").and_then(|p| p.trim().parse().ok()))
        .context("the floor server did not say where it listens")?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        tasks.spawn(async move {
            let mut buf = vec![0u8; params * 4];
            for _ in 0..rounds {
                stream.read_exact(&mut buf).await?;
                stream.write_all(&buf).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let (line, status) = tokio::task::spawn_blocking(move || (lines.next(), child.wait())).await?;
    let line = line.transpose()?.context("the floor server ended without its report")?;
    let status = status?;
    if !status.success() {
        bail!("the floor server exited with {status}");
    }
    let rounds_s: Vec<f64> = serde_json::from_str(&line).context("the floor server's report")?;
    let mut steady: Vec<f64> = rounds_s.iter().skip(usize::from(rounds_s.len() > 1)).copied().collect();
    let round_s_median = super::summary::median(&mut steady).unwrap_or(f64::NAN);
    Ok(FloorReport { rounds_s, round_s_median })
}

/// The server side, run in its own process: prints `listening PORT`, serves `rounds`
/// rounds to `clients` connections and prints the round times as a JSON array.
///
/// # Errors
/// A connection fails.
pub async fn serve_peer(clients: usize, params: usize, rounds: u32) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    println!("listening {}", listener.local_addr()?.port());
    let mut conns = Vec::with_capacity(clients);
    while conns.len() < clients {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        conns.push(stream);
    }
    let model: Arc<[u8]> = (0..params).flat_map(|i| ((i % 1000) as f32 * 1e-3).to_le_bytes()).collect();
    let sum = Arc::new(Mutex::new(vec![0f64; params]));
    let mut times = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for mut stream in conns.drain(..) {
            let (model, sum) = (Arc::clone(&model), Arc::clone(&sum));
            tasks.spawn(async move {
                stream.write_all(&model).await?;
                let mut piece = vec![0u8; PIECE];
                let mut offset = 0;
                while offset < params {
                    let n = (params - offset).min(PIECE / 4);
                    stream.read_exact(&mut piece[..n * 4]).await?;
                    let mut sum = sum.lock().expect("sum lock");
                    for (s, b) in sum[offset..offset + n].iter_mut().zip(piece.chunks_exact(4)) {
                        *s += 3.0 * f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    }
                    offset += n;
                }
                anyhow::Ok(stream)
            });
        }
        while let Some(done) = tasks.join_next().await {
            conns.push(done??);
        }
        times.push(started.elapsed().as_secs_f64());
    }
    std::hint::black_box(&sum);
    println!("{}", serde_json::to_string(&times)?);
    Ok(())
}
