//! The coordinator under test as its own OS process (the real `fedra-coordinator`
//! binary), so that the CPU time and peak memory read from `/proc/<pid>` are the
//! coordinator's alone and not the benchmark's client sidecars'.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings passed to the coordinator through its `FEDRA_*` environment variables.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    pub binary: PathBuf,
    pub heartbeat_seconds: f64,
    pub client_timeout_seconds: f64,
    pub max_concurrent_uploads: Option<usize>,
    pub chunk_bytes: Option<usize>,
    /// `RUST_LOG` for the coordinator (its log goes to a file in the data directory).
    pub log_filter: String,
    /// Plain text without identities (`--insecure`) instead of mutual TLS.
    pub insecure: bool,
    /// `--store-url` (default: SQLite in the data directory).
    pub store_url: Option<String>,
}

/// Where and in which tier a coordinator process runs (the default: a standalone
/// coordinator on a free port with its own CA).
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Listen here instead of on a free port (an upstream address chosen in advance).
    pub port: Option<u16>,
    /// A CA shared with other processes (the tiers of one deployment).
    pub pki_root: Option<PathBuf>,
    /// The process's `role` (and a regional aggregator's upstream URL).
    pub tier: crate::cluster::TierSpec,
}

/// A running coordinator process with a fresh data directory; killed on drop.
pub struct CoordinatorProcess {
    child: Child,
    pub port: u16,
    pub data_dir: tempfile::TempDir,
    /// The throw-away CA of a mutual-TLS coordinator; `None` with `--insecure`.
    pub pki: Option<crate::pki::SimPki>,
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Current resident set (VmRSS), bytes.
    pub rss: u64,
    /// Peak resident set (VmHWM), bytes.
    pub peak_rss: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` 0 = this process).
///
/// # Errors
/// The process is gone or `/proc` is unreadable.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let base = if pid == 0 { PathBuf::from("/proc/self") } else { PathBuf::from(format!("/proc/{pid}")) };
    let stat = std::fs::read_to_string(base.join("stat")).context("reading /proc/<pid>/stat")?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_seconds = (ticks(14) + ticks(15)) as f64 / hz;
    let status = std::fs::read_to_string(base.join("status")).context("reading /proc/<pid>/status")?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcSample { cpu_seconds, rss: kib("VmRSS:"), peak_rss: kib("VmHWM:") })
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl CoordinatorProcess {
    /// Starts the binary on a free loopback port with a temporary data directory and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// The binary is missing, exits early, or does not listen within 30 s.
    pub async fn start(settings: &CoordinatorSettings) -> Result<Self> {
        Self::launch(settings, &Launch::default()).await
    }

    /// [`CoordinatorProcess::start`] with a chosen port, a shared CA and a tier; a regional
    /// aggregator gets a config file with its `[upstream]` and an aggregator certificate.
    ///
    /// # Errors
    /// As `start`, and certificate or config-file failures.
    pub async fn launch(settings: &CoordinatorSettings, launch: &Launch) -> Result<Self> {
        if !settings.binary.is_file() {
            bail!(
                "coordinator binary {} not found; build it with `cargo build --release -p fedra-coordinator` or pass --coordinator",
                settings.binary.display()
            );
        }
        let data_dir = tempfile::Builder::new().prefix("fedra-bench-rounds-").tempdir()?;
        let log = std::fs::File::create(data_dir.path().join("coordinator.log"))?;
        let port = match launch.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut cmd = Command::new(&settings.binary);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("FEDRA_HEARTBEAT_INTERVAL_SECONDS", settings.heartbeat_seconds.to_string())
            .env("FEDRA_CLIENT_TIMEOUT_SECONDS", settings.client_timeout_seconds.to_string())
            .env("RUST_LOG", &settings.log_filter)
            // The bench's largest case (a 1 GB model) is beyond the coordinator's default cap.
            .env("FEDRA_MAX_MODEL_PARAMETERS", (1u64 << 30).to_string())
            .args(settings.store_url.iter().flat_map(|u| ["--store-url", u.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(n) = settings.max_concurrent_uploads {
            cmd.env("FEDRA_MAX_CONCURRENT_UPLOADS", n.to_string());
        }
        if let Some(n) = settings.chunk_bytes {
            cmd.env("FEDRA_CHUNK_BYTES", n.to_string());
        }
        let pki = if settings.insecure {
            cmd.arg("--insecure");
            None
        } else {
            let root = launch.pki_root.clone().unwrap_or_else(|| data_dir.path().join("pki"));
            let pki = crate::pki::SimPki::create(&root)?;
            cmd.arg("--tls-dir").arg(&pki.coordinator().dir).arg("--tls-crl").arg(pki.crl());
            Some(pki)
        };
        match &launch.tier {
            crate::cluster::TierSpec::Standalone => {}
            crate::cluster::TierSpec::Global => {
                cmd.env("FEDRA_ROLE", "global");
            }
            crate::cluster::TierSpec::Regional { location, upstream } => {
                let name = format!("agg-{location}");
                let mut config = format!("[upstream]\nurl = {upstream:?}\nname = {name:?}\n");
                if let Some(pki) = &pki {
                    let identity = fedra_types::identity::Identity::new(
                        fedra_types::identity::Role::RegionalAggregator,
                        Some(fedra_types::ids::RegionId::new(location.as_str())?),
                        &name,
                    )?;
                    config += &format!("tls_dir = {:?}\n", pki.identity_dir(&identity)?.dir);
                }
                let path = data_dir.path().join("regional.toml");
                std::fs::write(&path, config)?;
                cmd.arg("--config").arg(&path).env("FEDRA_ROLE", "regional").env("FEDRA_LOCATION", location);
            }
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", settings.binary.display()))?;
        let mut me = Self { child, port, data_dir, pki };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = me.child.try_wait()? {
                bail!("coordinator exited during start-up ({status}); log:\n{}", me.log_tail());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(me);
            }
            if Instant::now() > deadline {
                bail!("coordinator not listening on 127.0.0.1:{port} after 30 s; log:\n{}", me.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.pki.is_some() { "https" } else { "http" }, self.port)
    }

    /// Client identities for sidecars `(id, region)`, or plain text with `--insecure`.
    ///
    /// # Errors
    /// Certificate generation failure.
    pub fn client_tls(&self, clients: &[(String, String)]) -> Result<Vec<fedra_pki::ClientTls>> {
        match &self.pki {
            Some(pki) => pki.clients(clients),
            None => Ok(vec![fedra_pki::ClientTls::Insecure; clients.len()]),
        }
    }

    /// The benchmark's own control-plane identity (a scientist).
    ///
    /// # Errors
    /// Certificate generation failure.
    pub fn control_tls(&self) -> Result<fedra_pki::ClientTls> {
        match &self.pki {
            Some(pki) => pki.tls(&"fedra://scientist/bench".parse()?),
            None => Ok(fedra_pki::ClientTls::Insecure),
        }
    }

    /// # Errors
    /// The process is gone.
    pub fn sample(&self) -> Result<ProcSample> {
        sample(self.pid())
    }

    /// The last lines of the coordinator's log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("coordinator.log")
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
