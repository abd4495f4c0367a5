//! The coordinator on PostgreSQL (`store_url = "postgres://…"`): a multi-round run over real
//! gRPC, the coordinator killed mid-run and restarted on the same database, the run
//! finished with every round once, and its rounds and checkpoints found in PostgreSQL (and
//! no SQLite file written).
//!
//! The server is `FEDRA_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! the test works in a schema of its own, dropped at the end. Without a server it fails,
//! saying how to start one.

use crate::sandbox::*;
use anyhow::Context;
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{OpenStore, RoundStatus, StoreLocation};
use futures::FutureExt;
use sqlx::{Connection, Executor, PgConnection};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

fn server_url() -> String {
    std::env::var("FEDRA_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let how = "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` and wait for \
               `pg_isready -h 127.0.0.1`, or point FEDRA_TEST_POSTGRES_URL at another (.ci/run starts it)";
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => anyhow::bail!("this test needs PostgreSQL at {url}: {e}; {how}"),
        Err(_) => anyhow::bail!("this test needs PostgreSQL at {url}: no answer within 10 s; {how}"),
    }
}

/// Runs `test` with the URL of a fresh schema of the test server (sessions named after
/// it) and an admin connection, then ends the schema's sessions and drops it, whatever the
/// outcome.
pub async fn in_fresh_schema<F>(test: F) -> anyhow::Result<()>
where
    F: for<'a> AsyncFnOnce(&'a str, &'a str, &'a mut PgConnection) -> anyhow::Result<()>,
{
    let server = server_url();
    let schema = format!("fedra_it_{:016x}", rand::random::<u64>());
    let mut admin = connect(&server).await?;
    admin.execute(format!("CREATE SCHEMA {schema}").as_str()).await?;
    let separator = if server.contains('?') { '&' } else { '?' };
    // Sessions named after the schema, so that the clean-up can end any a failure leaves.
    let url = format!("{server}{separator}options[search_path]={schema}&application_name={schema}");
    let outcome = AssertUnwindSafe(test(&url, &schema, &mut admin)).catch_unwind().await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
        .bind(&schema)
        .execute(&mut admin)
        .await?;
    admin.execute("SET lock_timeout = '10s'").await?;
    admin.execute(format!("DROP SCHEMA {schema} CASCADE").as_str()).await?;
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_postgres_survives_a_restart_and_is_on_record_there() -> anyhow::Result<()> {
    in_fresh_schema(run_on).await
}

async fn run_on(url: &str, schema: &str, admin: &mut PgConnection) -> anyhow::Result<()> {
    let specs: Vec<_> = (0..4).map(|i| blob_client(i, ["eu", "us"][i % 2], 10, 3, 200)).collect();
    // Round 2's training waits for the test, so that the kill finds it in progress.
    let hold = TrainingHold::round(2);
    let mut cluster = held_cluster(Cluster::builder().store_url(url), specs, &hold).await?;
    let mut control = cluster.control().await?;
    let run = control.submit(&plan(10, 3, 3, 4, 3)).await?;
    hold.wait_holding(4, Duration::from_secs(60)).await?;
    wait_published(&cluster, &run, 1, Duration::from_secs(60)).await?;
    cluster.restart_coordinator().await?;
    hold.release();
    let status = wait_for_end(&cluster, &run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);
    assert_eq!(status.completed_rounds, 3);
    let published = status.published_checkpoint.clone().context("a published checkpoint")?;
    assert!(!cluster.data_dir().join("fedra.db").exists(), "the store is PostgreSQL, not a SQLite file");

    // Through a second store on the same database, as an operator's tool would read it.
    let location = StoreLocation::parse(url).map_err(anyhow::Error::msg)?;
    let opened = OpenStore::open(&location).await?;
    let store = opened.shared();
    let run_id = RunId::new(run.clone())?;
    let rounds = store.list_rounds(&run_id).await?;
    for round in 1..=3u32 {
        let done = rounds.iter().filter(|r| r.round == round && r.status == RoundStatus::Done).count();
        assert_eq!(done, 1, "round {round} completed {done} times: {rounds:#?}");
    }
    let interrupted: Vec<_> = rounds.iter().filter(|r| r.status == RoundStatus::Interrupted).collect();
    assert_eq!(interrupted.len(), 1, "{rounds:#?}");
    assert_eq!((interrupted[0].round, interrupted[0].failure.as_deref()), (2, Some("coordinator restarted")));
    let checkpoints = store.list_checkpoints(&Default::default()).await?;
    assert_eq!(checkpoints.iter().map(|c| c.round).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(checkpoints[2].id.as_str(), published);
    assert!(!checkpoints[2].locations.is_empty());
    assert!(
        checkpoints[2].locations.iter().all(|(_, path)| path.file_path().is_some_and(|p| p.exists())),
        "{:?}",
        checkpoints[2].locations
    );
    opened.close().await;

    // And in the schema's tables themselves.
    let in_schema = |table: &str| format!("SELECT COUNT(*) FROM {schema}.{table} WHERE run_id = $1");
    let done: i64 = sqlx::query_scalar(&format!("{} AND status = 'done'", in_schema("rounds")))
        .bind(&run)
        .fetch_one(&mut *admin)
        .await?;
    assert_eq!(done, 3);
    let published_row: (String, String) =
        sqlx::query_as(&format!("SELECT state, published_checkpoint FROM {schema}.runs WHERE id = $1"))
            .bind(&run)
            .fetch_one(&mut *admin)
            .await?;
    assert_eq!(published_row, ("succeeded".to_string(), published));
    let audited: i64 = sqlx::query_scalar(&in_schema("audit_log")).bind(&run).fetch_one(&mut *admin).await?;
    assert!(audited > 0, "the run's audit entries are in PostgreSQL");
    cluster.shutdown().await;
    Ok(())
}
