//! The dashboard as a person sees it: Debian's headless Chromium, driven over WebDriver
//! (chromedriver), against a live federation. The test opens the dashboard with its token,
//! watches a run's round count advance on a page that updates itself, reads the training
//! chart's points and a privacy budget bar, finds the checkpoints per region and the audit
//! log verified, and saves a screenshot to
//! `target/dashboard.png` (the README's `docs/dashboard.png` is one such screenshot).
//!
//! The WebDriver client is the handful of W3C WebDriver commands the test uses, over plain
//! HTTP to a chromedriver child process. Without `/usr/bin/chromium` and
//! `/usr/bin/chromedriver` the test fails, naming the Debian packages to install.

use crate::sandbox::*;
use anyhow::{Context, Result, anyhow, bail, ensure};
use fedra_coordinator::config::web::{Token, WebConfig};
use fedra_coordinator::privacy::budget::RawBudgetRule;
use fedra_types::identity::Role;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const TOKEN: &str = "dashboard-test-token-0123456789abcdef";
/// How long the test waits for what a page should come to show.
const SHOWS_WITHIN: Duration = Duration::from_secs(60);

/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver child process and one headless Chromium session in it.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port, waits (bounded) until it is ready, and opens a
    /// headless Chromium session with a fresh profile.
    async fn start() -> Result<Self> {
        for path in [CHROMIUM, CHROMEDRIVER] {
            ensure!(
                Path::new(path).exists(),
                "{path} is missing: the dashboard test drives Debian's headless Chromium; install it with \
                 `apt-get install -y chromium chromium-driver`"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Driver(
            std::process::Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .with_context(|| format!("starting {CHROMEDRIVER}"))?,
        );
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => serde_json::from_slice::<Value>(&r.bytes().await?)?["value"]["ready"] == json!(true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            ensure!(Instant::now() < deadline, "chromedriver did not become ready on port {port} within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir()?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1280,1500", format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let reply = command(&http, reqwest::Method::POST, &format!("{base}/session"), Some(caps)).await?;
        let session = reply["sessionId"].as_str().ok_or_else(|| anyhow!("no session id in {reply}"))?;
        Ok(Self { http, session: format!("{base}/session/{session}"), _driver: driver, _profile: profile })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        command(&self.http, reqwest::Method::POST, &format!("{}/{path}", self.session), Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        command(&self.http, reqwest::Method::GET, &format!("{}/{path}", self.session), None).await
    }

    async fn goto(&self, url: &str) -> Result<()> {
        self.post("url", json!({ "url": url })).await.map(drop)
    }

    /// The element `css` matches now, if any.
    async fn find(&self, css: &str) -> Result<Option<String>> {
        match self.post("element", json!({"using": "css selector", "value": css})).await {
            Ok(v) => Ok(v[ELEMENT].as_str().map(str::to_string)),
            Err(e) if e.to_string().contains("no such element") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The rendered text of the element `css` matches, as a person reads it (`None`: none
    /// matches, or the page replaced it while it was read).
    async fn text(&self, css: &str) -> Result<Option<String>> {
        let Some(id) = self.find(css).await? else { return Ok(None) };
        match self.get(&format!("element/{id}/text")).await {
            Ok(v) => Ok(v.as_str().map(str::to_string)),
            Err(e) if e.to_string().contains("stale element") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The on-screen width of the element `css` matches, in CSS pixels.
    async fn width(&self, css: &str) -> Result<f64> {
        let id = self.find(css).await?.ok_or_else(|| anyhow!("nothing on the page matches {css}"))?;
        let rect = self.get(&format!("element/{id}/rect")).await?;
        rect["width"].as_f64().ok_or_else(|| anyhow!("no width in {rect}"))
    }

    async fn script(&self, script: &str) -> Result<Value> {
        self.post("execute/sync", json!({"script": script, "args": []})).await
    }

    /// Waits until the text of `css` satisfies `want` (re-reading the live page), bounded.
    async fn wait_text(&self, css: &str, what: &str, want: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + SHOWS_WITHIN;
        let mut last = None;
        loop {
            if let Some(text) = self.text(css).await? {
                if want(&text) {
                    return Ok(text);
                }
                last = Some(text);
            }
            if Instant::now() > deadline {
                bail!("the page did not come to show {what} within {SHOWS_WITHIN:?} ({css} last read {last:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session: Chromium quits (chromedriver goes when the browser is dropped).
    async fn close(self) -> Result<()> {
        command(&self.http, reqwest::Method::DELETE, &self.session, None).await.map(drop)
    }

    async fn screenshot(&self, to: &Path) -> Result<()> {
        use base64::Engine;
        let png = self.get("screenshot").await?;
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default())?;
        std::fs::create_dir_all(to.parent().expect("a file in a directory"))?;
        std::fs::write(to, png).with_context(|| format!("writing {}", to.display()))
    }
}

/// The chromedriver process in a process group of its own, with the Chromium it started:
/// the whole group is killed when the test is done with it, or fails.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// One WebDriver command; a WebDriver error comes back as an error naming it.
async fn command(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<Value>) -> Result<Value> {
    let mut req = http.request(method, url);
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body.to_string());
    }
    let resp = req.send().await.with_context(|| format!("WebDriver {url}"))?;
    let status = resp.status();
    let value: Value = serde_json::from_slice(&resp.bytes().await?)?;
    let value = value.get("value").cloned().unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("WebDriver {url}: {} ({})", value["error"], value["message"]);
    }
    Ok(value)
}

/// `target/` of the workspace (where the screenshot goes).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_a_run_progress_reads_its_charts_and_a_privacy_budget_in_chromium() -> Result<()> {
    let started = Instant::now();
    let browser = Browser::start().await?;
    let web = WebConfig {
        listen: "127.0.0.1:0".parse()?,
        token: Some(Token::new(TOKEN).map_err(|e| anyhow!(e))?),
        token_role: Role::Compliance,
    };
    let budget = RawBudgetRule { model: None, region: None, epsilon: 40.0, delta: 1e-6 };
    let specs: Vec<_> = (0..4).map(|i| blob_client(i, ["eu", "us"][i % 2], 10, 3, 120)).collect();
    // Round 2 of every run waits for the test, so the page is seen between rounds.
    let hold = TrainingHold::round(2);
    let builder = Cluster::builder().privacy_budget(budget).web(web);
    let cluster = held_cluster(builder, specs, &hold).await?;
    let base = format!("http://{}", cluster.web_addr().context("the cluster serves a dashboard")?);

    // Without the token the dashboard refuses, saying how to send one.
    let refused = reqwest::get(format!("{base}/")).await?;
    ensure!(refused.status() == 401, "without a token: {}", refused.status());
    let why = refused.text().await?;
    ensure!(why.starts_with("no token: send \"Authorization: Bearer <token>\""), "{why}");

    let mut control = cluster.control().await?;
    let run = control.submit(&plan(10, 3, 3, 4, 4)).await?;
    hold.wait_holding(4, Duration::from_secs(60)).await?;

    // Round 1 is done and round 2 is training: the run's row says so.
    browser.goto(&format!("{base}/?token={TOKEN}")).await?;
    let row = format!("tr.run[data-run='{run}']");
    browser.wait_text(&format!("{row} .rounds"), "1 of 3 rounds", |t| t == "1 / 3").await?;
    browser.wait_text(&row, "round 2 training", |t| t.contains("round 2: training")).await?;
    let url = browser.get("url").await?;
    ensure!(url == json!(format!("{base}/")), "the token left the address bar: {url}");
    // The page updates itself from here: a marker set now survives only without a reload.
    browser.script("window.stillThisPage = true;").await?;
    hold.release();
    browser.wait_text(&format!("{row} .rounds"), "3 of 3 rounds", |t| t == "3 / 3").await?;
    browser.wait_text(&format!("{row} .state"), "the run succeeded", |t| t == "succeeded").await?;
    ensure!(browser.script("return window.stillThisPage === true;").await? == json!(true), "the page reloaded");

    // The run's page: the training loss chart has a point per round overall and per region.
    browser.goto(&format!("{base}/runs/{run}")).await?;
    browser
        .wait_text("#chart-training-loss figcaption", "the training loss chart", |t| t.starts_with("Training loss"))
        .await?;
    let rounds = browser
        .script("return Array.from(document.querySelectorAll(\"#chart-training-loss circle.pt[data-series='all']\")).map(c => c.getAttribute('data-round'));")
        .await?;
    ensure!(rounds == json!(["1", "2", "3"]), "points of the overall series: {rounds}");
    for region in ["eu", "us"] {
        let n = browser
            .script(&format!(
                "return document.querySelectorAll(\"#chart-training-loss circle.pt[data-series='{region}']\").length;"
            ))
            .await?;
        ensure!(n == json!(3), "{region} has {n} points");
    }
    browser.screenshot(&target_dir().join("dashboard.png")).await?;

    // A private run spends budget; the privacy page's bar shows what the API reports.
    let mut private = plan(10, 3, 1, 4, 4);
    private.privacy = Some(central(1.0, 0.5, 4));
    let private_run = control.submit(&private).await?;
    wait_for_end(&cluster, &private_run, Duration::from_secs(60)).await?;
    let eu =
        control.privacy_status(None, None).await?.into_iter().find(|s| s.scope == "test-lr@eu").context("eu scope")?;
    browser.goto(&format!("{base}/privacy")).await?;
    let bar = "tr.scope[data-scope='test-lr@eu'] .budget";
    browser.wait_text("tr.scope[data-scope='test-lr@eu']", "the eu scope", |t| t.contains("1 charged")).await?;
    let spent: f64 = browser
        .script(&format!("return document.querySelector(\"{bar}\").getAttribute('data-spent');"))
        .await?
        .as_str()
        .context("data-spent")?
        .parse()?;
    ensure!((spent - eu.epsilon_spent).abs() < 1e-5, "the bar says ε {spent}, the API {}", eu.epsilon_spent);
    let (whole, filled) = (browser.width(bar).await?, browser.width(&format!("{bar} .spent")).await?);
    let want = whole * eu.epsilon_spent / 40.0;
    ensure!(
        filled > 0.0 && (filled - want).abs() <= 1.5,
        "the spent part is {filled}px of {whole}px, expected {want:.1}px"
    );
    browser.screenshot(&target_dir().join("dashboard-privacy.png")).await?;

    // The registry lists the run's checkpoint per region, and the audit log verifies.
    browser.goto(&format!("{base}/checkpoints")).await?;
    browser
        .wait_text("table.checkpoints", "the run's checkpoint", |t| t.contains(&format!("run {run} round 3")))
        .await?;
    browser.goto(&format!("{base}/audit")).await?;
    browser.wait_text(".verified", "the verified audit chain", |t| t.starts_with("✔ All")).await?;
    browser.goto(&format!("{base}/policy")).await?;
    browser.wait_text("main", "that no policy set is in force", |t| t.contains("No policy set is in force")).await?;

    eprintln!("dashboard browser test took {:.1} s", started.elapsed().as_secs_f64());
    browser.close().await?;
    cluster.shutdown().await;
    Ok(())
}
