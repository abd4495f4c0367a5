//! Failover: two real `fedra-coordinator` processes on one PostgreSQL database. The first
//! leads; the second stands by (listening, but answering UNAVAILABLE and health NOT_SERVING). The leader is frozen (SIGSTOP, from the
//! crash point `checkpoint_written` in stop mode: its round-1 checkpoint files are written
//! and its store record is not) until its lease runs out; the standby takes over, the
//! sidecars move to it through their list of addresses, and it finishes the run. Then the
//! old leader is thawed in the middle of its round commit: the store refuses its writes by
//! the fencing token, it exits deposed (75), and nothing it did after losing the lease is on
//! record or on disk.

use crate::postgres::in_fresh_schema;
use crate::sandbox::*;
use anyhow::Context;
use fedra_coordinator::crash::{ENV, MODE_ENV};
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{OpenStore, RoundStatus, StoreLocation};
use fedra_sim::cluster_process::{ProcessSpec, log_text};
use sqlx::PgConnection;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_finishes_the_run_of_a_frozen_leader_whose_late_writes_are_refused() -> anyhow::Result<()> {
    in_fresh_schema(failover).await
}

async fn failover(url: &str, _schema: &str, _admin: &mut PgConnection) -> anyhow::Result<()> {
    let spec = ProcessSpec {
        binary: crate::cli::coordinator_binary(),
        env: vec![(ENV.into(), "checkpoint_written".into()), (MODE_ENV.into(), "stop".into())],
    };
    let clients: Vec<_> = (0..4).map(|i| blob_client(i, ["eu", "us"][i % 2], 4, 2, 120)).collect();
    let mut cluster = Cluster::builder().process(spec).store_url(url).with_standby().clients(clients).start().await?;
    let standby = cluster.standby_endpoint().context("a standby")?;
    let run = cluster.control().await?.submit(&plan(4, 2, crate::crash::ROUNDS, 4, 4)).await?;

    // The leader freezes with round 1's checkpoint on disk and not on record.
    cluster.wait_coordinator_frozen(WAIT).await?;
    let frozen = Instant::now();
    assert!(log_text(cluster.data_dir(), false).contains("fedra crash point checkpoint_written reached: stopping"));
    cluster.wait_standby_leading(WAIT).await?;
    let took_over = frozen.elapsed();
    eprintln!("failover: the standby leads {took_over:?} after the leader froze");
    let standby_log = log_text(cluster.data_dir(), true);
    assert!(standby_log.contains("leading: this coordinator holds the lease"), "{standby_log}");

    let mut control = cluster.control_at(&standby).await?;
    let end = tokio::time::timeout(WAIT, async {
        let mut events = control.watch(&run).await?;
        while let Some(e) = futures::StreamExt::next(&mut events).await {
            e?;
        }
        control.get(&run).await
    })
    .await
    .context("the standby did not finish the run")??;
    assert_succeeded(&end);
    assert_eq!(end.completed_rounds, crate::crash::ROUNDS);
    eprintln!("failover: run finished by the standby {:?} after the leader froze", frozen.elapsed());

    // Thawed, the old leader carries on with its round-1 commit: refused, and it steps down.
    cluster.freeze_coordinator(false)?;
    let status = cluster.wait_coordinator_exit(WAIT).await?;
    let log = log_text(cluster.data_dir(), false);
    assert_eq!(status.code(), Some(75), "the deposed leader ended with {status}; log:\n{log}");
    let refusal = "fencing token 1 is superseded by token 2";
    assert!(log.contains(&format!("deposed: write refused: this coordinator's {refusal}")), "{log}");
    for line in log.lines().filter(|l| l.contains(refusal)) {
        eprintln!("failover: deposed leader: {line}");
    }

    // On record: round 1 once, by the standby's attempt; the leader's attempt interrupted.
    let location = StoreLocation::parse(url).map_err(anyhow::Error::msg)?;
    let opened = OpenStore::open(&location).await?;
    let store = opened.shared();
    let run = RunId::new(run)?;
    let rounds = store.list_rounds(&run).await?;
    let attempts = |round: u32, status: RoundStatus| {
        rounds.iter().filter(|r| r.round == round && r.status == status).map(|r| r.attempt).collect::<Vec<_>>()
    };
    assert_eq!(attempts(1, RoundStatus::Done), [2], "{rounds:#?}");
    assert_eq!(attempts(1, RoundStatus::Interrupted), [1], "{rounds:#?}");
    for round in 2..=crate::crash::ROUNDS {
        assert_eq!(attempts(round, RoundStatus::Done).len(), 1, "{rounds:#?}");
    }
    let lease = store.lease().await?;
    assert_eq!(lease.token.0, 2, "{lease:?}");
    // On disk: exactly the recorded checkpoints, each verifying (the leader's unrecorded
    // round-1 files were removed by the standby's recovery and not written again).
    crate::crash::check_checkpoints(&cluster, store.as_ref(), &run, "failover").await?;
    opened.close().await;
    cluster.shutdown().await;
    Ok(())
}
