//! A [`crate::cluster::Cluster`]'s coordinator as a child process: the real
//! `fedra-coordinator` binary, started with flags and `FEDRA_*` variables equivalent to the
//! in-process [`Config`], so that a test can kill it for real (`kill -9`, or a crash point
//! that kills itself) and start it again on the same data directory and port.

use crate::cluster::{Cluster, Running};
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
    /// and waits until it serves (it listens before it leads, answering UNAVAILABLE until
    /// then; the log line [`SERVING`] says it leads and serves).
    ///
    /// # Errors
    /// The binary cannot start, exits during start-up, or does not serve within 60 s.
    pub(crate) async fn spawn(spec: &ProcessSpec, config: &Config, tls: &ProcessTls) -> Result<Self> {
        // The log is appended to across restarts: wait for one more line than it has now.
        let served_before = serving_lines(&log_text(&config.data_dir, false));
        let mut child = Self::command(spec, config, tls, &log_path(&config.data_dir))?
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("coordinator exited during start-up ({status}); log:\n{}", log_tail(&config.data_dir));
            }
            if serving_lines(&log_text(&config.data_dir, false)) > served_before {
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

    /// Starts a second coordinator on the same store and directories, listening on
    /// `config.listen` (UNAVAILABLE and health NOT_SERVING until it leads), logging to `<data_dir>/coordinator-standby.log`, without
    /// the crash-point variables of `spec`; waits until it says it stands by.
    ///
    /// # Errors
    /// The binary cannot start, exits, or does not stand by within 60 s.
    pub(crate) async fn spawn_standby(spec: &ProcessSpec, config: &Config, tls: &ProcessTls) -> Result<Self> {
        let spec = ProcessSpec {
            binary: spec.binary.clone(),
            env: spec.env.iter().filter(|(k, _)| !k.starts_with("FEDRA_CRASH_")).cloned().collect(),
        };
        let log = standby_log_path(&config.data_dir);
        let child = Self::command(&spec, config, tls, &log)?
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        let mut standby = Self { child: Some(child) };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("standing by") {
                return Ok(standby);
            }
            if let Some(status) = standby.child.as_mut().expect("just started").try_wait()? {
                bail!("the standby coordinator exited ({status}); log:\n{text}");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the standby coordinator did not stand by within 60 s; log:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, …) to the process.
    ///
    /// # Errors
    /// The process is gone.
    pub(crate) fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.child.as_ref().context("the process was reaped")?.id();
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet (so not reused).
        if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process is stopped (SIGSTOP), from `/proc/<pid>/stat`.
    pub(crate) fn is_stopped(&self) -> bool {
        let Some(child) = self.child.as_ref() else { return false };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        // "pid (comm) S …": the state follows the last ')'.
        stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) == Some('T')
    }

    fn command(spec: &ProcessSpec, config: &Config, tls: &ProcessTls, log_path: &Path) -> Result<Command> {
        let artifact_dir = match config.artifacts.local_dir() {
            Some(dir) if config.artifacts.regions.is_empty() => dir,
            _ => bail!("a coordinator process publishes into a directory only (no [artifacts] stores)"),
        };
        std::fs::create_dir_all(&config.data_dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
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
            .env("FEDRA_LEASE_TTL_SECONDS", config.lease.ttl.as_secs_f64().to_string())
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
        if let fedra_coordinator::store::StoreLocation::Postgres(url) = &config.store {
            cmd.arg("--store-url").arg(url.expose());
        }
        // A regional aggregator: its tier and its session with the global coordinator.
        if let (fedra_coordinator::hierarchy::Tier::Regional { location }, Some(up)) =
            (&config.engine.tier, &config.upstream)
        {
            let mut file = format!("[upstream]\nurl = {:?}\nname = {:?}\n", up.url, up.name.as_str());
            if let Some(dir) = &up.tls_dir {
                file += &format!("tls_dir = {:?}\n", dir.dir);
            }
            let path = config.data_dir.join("regional.toml");
            std::fs::write(&path, file)?;
            cmd.arg("--config").arg(&path).env("FEDRA_ROLE", "regional").env("FEDRA_LOCATION", location.as_str());
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        Ok(cmd)
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

/// What a coordinator logs once it leads and its API answers.
pub const SERVING: &str = "coordinator serving";

fn serving_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains(SERVING)).count()
}

fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("coordinator.log")
}

fn standby_log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("coordinator-standby.log")
}

/// Everything the coordinator process (`standby: false`) or the standby has logged.
pub fn log_text(data_dir: &Path, standby: bool) -> String {
    let path = if standby { standby_log_path(data_dir) } else { log_path(data_dir) };
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last 30 lines of the coordinator's log (for error messages).
pub fn log_tail(data_dir: &Path) -> String {
    let text = std::fs::read_to_string(log_path(data_dir)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Controls of a cluster whose coordinator runs as a process ([`crate::cluster::ClusterBuilder::process`]).
impl Cluster {
    /// Sets (`Some`) or removes (`None`) a variable of the coordinator process's
    /// environment, for its next start.
    ///
    /// # Errors
    /// The coordinator does not run as a process.
    pub fn set_coordinator_env(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        let (spec, _) = self.process.as_mut().context("the coordinator does not run as a process")?;
        spec.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            spec.env.push((key.to_string(), v.to_string()));
        }
        Ok(())
    }

    /// Waits until the coordinator process exits by itself (a crash point killed it),
    /// returning how it ended; the cluster has no coordinator until the next
    /// [`Cluster::restart_coordinator`].
    ///
    /// # Errors
    /// The coordinator does not run as a process, or does not exit within `timeout`.
    pub async fn wait_coordinator_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        match self.coordinator.take() {
            Some(Running::Child(c)) => c.wait_exit(timeout).await,
            Some(other) => {
                self.coordinator = Some(other);
                anyhow::bail!("the coordinator does not run as a process")
            }
            None => anyhow::bail!("the coordinator is down"),
        }
    }

    /// Freezes (`true`: SIGSTOP) or thaws (`false`: SIGCONT) the coordinator process.
    ///
    /// # Errors
    /// The coordinator does not run as a process, or is gone.
    pub fn freeze_coordinator(&self, frozen: bool) -> Result<()> {
        match self.coordinator.as_ref() {
            Some(Running::Child(c)) => c.signal(if frozen { libc::SIGSTOP } else { libc::SIGCONT }),
            _ => anyhow::bail!("the coordinator does not run as a process"),
        }
    }

    /// Asks the coordinator process to stop as an orchestrator does (SIGTERM); see
    /// [`Self::wait_coordinator_exit`] for how it ended.
    ///
    /// # Errors
    /// The coordinator does not run as a process, or is gone.
    pub fn terminate_coordinator(&self) -> Result<()> {
        match self.coordinator.as_ref() {
            Some(Running::Child(c)) => c.signal(libc::SIGTERM),
            _ => anyhow::bail!("the coordinator does not run as a process"),
        }
    }

    /// Waits until the coordinator process is stopped (a crash point in `stop` mode froze
    /// it, or [`Self::freeze_coordinator`]).
    ///
    /// # Errors
    /// The coordinator does not run as a process, or is not stopped within `timeout`.
    pub async fn wait_coordinator_frozen(&self, timeout: Duration) -> Result<()> {
        let Some(Running::Child(c)) = self.coordinator.as_ref() else {
            anyhow::bail!("the coordinator does not run as a process")
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while !c.is_stopped() {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the coordinator process was not stopped within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until the standby coordinator leads and serves (its log says [`SERVING`]).
    ///
    /// # Errors
    /// No standby, or it does not lead within `timeout` (its log says why).
    pub async fn wait_standby_leading(&self, timeout: Duration) -> Result<()> {
        self.standby.as_ref().context("the cluster has no standby coordinator")?;
        let deadline = tokio::time::Instant::now() + timeout;
        while serving_lines(&crate::cluster_process::log_text(self.data_dir(), true)) == 0 {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the standby did not take over within {timeout:?}; its log:\n{}",
                    crate::cluster_process::log_text(self.data_dir(), true)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}
