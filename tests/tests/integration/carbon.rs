//! Carbon-aware scheduling over real gRPC: a plan that prefers low carbon waits for the
//! clean window of the coordinator's carbon feed (within its allowed delay), the deferral
//! is audited, and each round's estimated energy and carbon per region is recorded and shown
//! by `fedra run show`.

use crate::sandbox::*;
use chrono::{Duration as Span, SecondsFormat, Utc};
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{RoundStatus, Store};
use fedra_types::plan::SchedulePlan;
use std::time::Duration;

const WATTS: f64 = fedra_coordinator::carbon::DEFAULT_CLIENT_WATTS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_carbon_plan_waits_for_the_clean_window_and_reports_its_carbon() -> anyhow::Result<()> {
    // eu is dirty now and clean from two seconds on; the plan may wait up to an hour.
    let now = Utc::now();
    let window = now + Span::seconds(2);
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let feed = tempfile::NamedTempFile::new()?;
    std::fs::write(
        feed.path(),
        format!(
            "[[region]]\nname = \"eu\"\nintensity = [\n  {{ from = \"{}\", g_per_kwh = 420 }},\n  {{ from = \"{}\", g_per_kwh = 40 }},\n]\n",
            at(now - Span::hours(1)),
            at(window)
        ),
    )?;
    let specs: Vec<_> = (0..2).map(|i| blob_client(i, "eu", 4, 2, 200)).collect();
    let cluster = Cluster::builder().carbon_file(feed.path()).clients(specs).start().await?;
    let mut control = cluster.control().await?;
    let mut p = plan(4, 2, 2, 2, 2);
    p.regions = vec!["eu".into()];
    p.schedule = SchedulePlan { prefer_low_carbon: true, max_delay_seconds: 3600.0 };
    let run = control.submit(&p).await?;
    let end = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_succeeded(&end);

    // Round 1 started only once the window opened; nothing was recorded before it.
    let store = open_store(&cluster).await?;
    let rounds = store.list_rounds(&RunId::new(run.clone())?).await?;
    let first = rounds.iter().find(|r| r.round == 1 && r.status == RoundStatus::Done).expect("round 1");
    assert!(first.started_at >= window, "round 1 started at {} before the window at {window}", first.started_at);
    let audit = control.audit(Default::default()).await?;
    let deferrals: Vec<_> = audit.iter().filter(|e| e.draft.action.as_str() == "round_deferred").collect();
    assert_eq!(deferrals.len(), 1, "only round 1 waited: {deferrals:#?}");
    assert!(deferrals[0].draft.detail.contains("420.0 → 40.0 g CO2e/kWh over eu"), "{}", deferrals[0].draft.detail);

    // Each round's energy: the clients' reported seconds at the configured watts, and the
    // window's intensity.
    let shown = control.get(&run).await?;
    for row in &shown.rounds {
        let [(region, seconds, kwh, carbon)] = row.energy.as_slice() else { panic!("one region: {:?}", row.energy) };
        assert_eq!(region, "eu");
        assert!(*seconds > 0.0, "clients reported training time");
        assert!((kwh - seconds * WATTS / 3.6e6).abs() < 1e-12, "{kwh} kWh for {seconds} s");
        assert!((carbon.expect("the feed covers eu") - kwh * 40.0).abs() < 1e-9);
    }
    let alice = cluster.pki().identity_dir(&"fedra://admin/alice".parse()?)?;
    let args = ["--coordinator", &cluster.endpoint(), "--tls-dir", alice.dir.to_str().unwrap(), "run", "show", &run];
    let out = crate::cli::fedra(args.iter().map(ToString::to_string).collect()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("energy and carbon (estimated):"), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("eu ")), "{stdout}");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_carbon_plan_is_refused_without_a_carbon_feed() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let mut p = plan(4, 2, 1, 1, 1);
    p.schedule = SchedulePlan { prefer_low_carbon: true, max_delay_seconds: 60.0 };
    let e = cluster.control().await?.submit(&p).await.unwrap_err();
    assert!(e.to_string().contains("needs a carbon-intensity feed"), "{e}");
    cluster.shutdown().await;
    Ok(())
}
