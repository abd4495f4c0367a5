//! A [`crate::cluster::Cluster`]'s coordinator as a child process: the real
//! `fedra-coordinator` binary, started with flags and `FEDRA_*` variables equivalent to the
//! in-process [`Config`], so that a test can kill it for real (`kill -9`, or a crash point
//! that kills itself) and start it again on the same data directory and port.

use anyhow::{Context, Result, bail};
use fedra_coordinator::config::Config;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Which binary to run and the extra environment it gets (e.g. `FEDRA_CRASH_AT`).
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
}

/// The identity files the process serves with.
#[derive(Debug, Clone)]
pub(crate) struct ProcessTls {
    pub dir: PathBuf,
    pub crl: PathBuf,
}

/// A running coordinator process; killed when dropped.
pub struct CoordinatorChild {
    child: Option<Child>,
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl CoordinatorChild {
    /// Starts `spec.binary` serving `config` (listen address, data and artifact
    /// directories, heartbeat and timeouts, chunk size, upload and download bounds, policy)
    /// with the identity in `tls`, appending its output to `<data_dir>/coordinator.log`,
    /// and waits until it accepts connections.
    ///
    /// # Errors
    /// The binary cannot start, exits during start-up, or does not listen within 60 s.
    pub(crate) async fn spawn(spec: &ProcessSpec, config: &Config, tls: &ProcessTls) -> Result<Self> {
        let artifact_dir = match config.artifacts.local_dir() {
            Some(dir) if config.artifacts.regions.is_empty() => dir,
            _ => bail!("a coordinator process publishes into a directory only (no [artifacts] stores)"),
        };
        let log_path = log_path(&config.data_dir);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut cmd = Command::new(&spec.binary);
        cmd.arg("--listen")
            .arg(config.listen.to_string())
            .arg("--data-dir")
            .arg(&config.data_dir)
            .arg("--artifact-dir")
            .arg(artifact_dir)
            .arg("--tls-dir")
            .arg(&tls.dir)
            .arg("--tls-crl")
            .arg(&tls.crl)
            .env("FEDRA_HEARTBEAT_INTERVAL_SECONDS", config.engine.heartbeat_interval.as_secs_f64().to_string())
            .env("FEDRA_CLIENT_TIMEOUT_SECONDS", config.engine.client_timeout.as_secs_f64().to_string())
            .env("FEDRA_CHUNK_BYTES", config.engine.chunk_bytes.to_string())
            .env("FEDRA_MAX_CONCURRENT_UPLOADS", config.max_concurrent_uploads.to_string())
            .env("FEDRA_MAX_CONCURRENT_DOWNLOADS", config.max_concurrent_downloads.to_string())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(c) = &config.engine.carbon {
            cmd.env("FEDRA_CARBON_FILE", c.path()).env("FEDRA_CLIENT_WATTS", config.engine.client_watts.to_string());
        }
        if let Some(p) = &config.policy {
            cmd.arg("--policy-dir").arg(&p.dir).arg("--location").arg(p.location.as_str());
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {}", spec.binary.display()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("coordinator exited during start-up ({status}); log:\n{}", log_tail(&config.data_dir));
            }
            if tokio::net::TcpStream::connect(config.listen).await.is_ok() {
                return Ok(Self { child: Some(child) });
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "coordinator not listening on {} after 60 s; log:\n{}",
                    config.listen,
                    log_tail(&config.data_dir)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit by itself (polling: the process is not ours to
    /// signal here, and a crash point ends it on its own).
    ///
    /// # Errors
    /// It is still running after `timeout` (it is killed then).
    pub(crate) async fn wait_exit(mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let child = self.child.as_mut().expect("present until dropped");
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the coordinator process did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for CoordinatorChild {
    fn drop(&mut self) {
        self.reap();
    }
}

fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("coordinator.log")
}

/// The last 30 lines of the coordinator's log (for error messages).
pub fn log_tail(data_dir: &Path) -> String {
    let text = std::fs::read_to_string(log_path(data_dir)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
