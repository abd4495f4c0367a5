//! PostgreSQL's run of the store contract, each case in a fresh schema of a real server,
//! plus what only PostgreSQL has: its migrations beside SQLite's, its stored texts and
//! triggers, and several processes (here: pools) writing at once (`tests/races.rs`).
//!
//! The server is `FEDRA_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Without one these tests fail, saying how to start it: they are never skipped.

use super::*;
use crate::plan::fixtures::raw_plan;
use sqlx::{Connection, Executor, PgConnection};

mod races;

/// The server the tests use.
fn server_url() -> String {
    std::env::var("FEDRA_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test (`fedra_t_<random>`), dropped when the test ends, even
/// when it fails.
pub(super) struct Schema {
    name: String,
    url: String,
}

impl Schema {
    /// Creates the schema.
    ///
    /// # Panics
    /// The server cannot be reached: the message says how to start one.
    pub(super) async fn create() -> Self {
        let url = server_url();
        let name = format!("fedra_t_{:016x}", rand::random::<u64>());
        let mut conn = connect(&url).await;
        conn.execute(format!("CREATE SCHEMA {name}").as_str()).await.expect("create a test schema");
        Self { name, url }
    }

    /// Connection options whose sessions work in this schema, named after it (so that the
    /// drop can end them).
    pub(super) fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url)
            .expect("a valid test URL")
            .options([("search_path", &self.name)])
            .application_name(&self.name)
    }

    /// A store (its own pool) on this schema; the first one migrates it.
    pub(super) async fn store(&self) -> PgStore {
        PgStore::connect_with(self.options(), &self.name).await.expect("open the test store")
    }

    /// A fresh schema and a store on it, as the contract suite wants them.
    pub(super) async fn with_store() -> (PgStore, Self) {
        let schema = Self::create().await;
        (schema.store().await, schema)
    }
}

async fn connect(url: &str) -> PgConnection {
    let attempt = tokio::time::timeout(std::time::Duration::from_secs(10), PgConnection::connect(url)).await;
    match attempt {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("{}", unreachable_server(url, &e.to_string())),
        Err(_) => panic!("{}", unreachable_server(url, "no answer within 10 s")),
    }
}

fn unreachable_server(url: &str, why: &str) -> String {
    format!(
        "the PostgreSQL store tests need a server at {} ({why}). Start the local one with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` and wait for \
         `pg_isready -h 127.0.0.1`, or point FEDRA_TEST_POSTGRES_URL at another (.ci/run starts it)",
        super::super::open::redacted(url)
    )
}

/// Drops the schema from a thread of its own (Drop cannot await), after ending the test's
/// sessions: the test's runtime is blocked here, so a session may still hold the locks of a
/// transaction whose rollback its pool has not sent yet (a refusal as the last call, a
/// panic mid-transaction).
impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
                    .bind(&name)
                    .execute(&mut conn)
                    .await?;
                conn.execute("SET lock_timeout = '10s'").await?;
                conn.execute(format!("DROP SCHEMA IF EXISTS {name} CASCADE").as_str()).await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("test schema {} was not dropped: {dropped:?}", self.name);
        }
    }
}

/// A second coordinator on the same schema opens a pool of its own.
#[async_trait]
impl crate::store::contract::OpenPeer for Schema {
    async fn open_peer(&self) -> Box<dyn Store> {
        Box::new(self.store().await)
    }
}

crate::store::contract::store_contract_tests!(postgres_contract, Schema::with_store());

/// Both schema directories hold the same migrations (version and description), so that a
/// migration is never added to one backend only.
#[test]
fn both_backends_have_the_same_migrations() {
    let files = |dir: &str| {
        let mut names: Vec<String> = std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let (sqlite, postgres) = (files("migrations"), files("migrations-postgres"));
    assert!(sqlite.len() >= 10, "{sqlite:?}");
    assert_eq!(sqlite, postgres, "coordinator/migrations and coordinator/migrations-postgres differ");
    // And what the binary embeds agrees.
    let embedded = |m: &sqlx::migrate::Migrator| -> Vec<(i64, String)> {
        m.iter().map(|m| (m.version, m.description.to_string())).collect()
    };
    let (sqlite, postgres) = (sqlx::migrate!("./migrations"), sqlx::migrate!("./migrations-postgres"));
    assert_eq!(embedded(&sqlite), embedded(&postgres));
    assert_eq!(embedded(&postgres).len(), files("migrations-postgres").len());
}

fn run_record(state: RunState) -> RunRecord {
    RunRecord {
        id: RunId::generate(),
        plan: crate::plan::RunPlan::new(raw_plan()).unwrap(),
        state,
        completed_rounds: 0,
        published_checkpoint: None,
        failure: None,
        created_at: Utc::now(),
        owner: None,
        policy_sha256: None,
        approvals_needed: 0,
    }
}

/// The states are stored as the same texts SQLite stores, so that data can move between
/// the backends and operators can read either with plain SQL.
#[tokio::test]
async fn states_are_stored_as_the_texts_sqlite_stores() {
    let (store, _schema) = Schema::with_store().await;
    for state in [RunState::Queued, RunState::Running, RunState::PendingApproval, RunState::Cancelled] {
        let run = run_record(state);
        store.create_run(&run).await.unwrap();
        let stored: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
            .bind(run.id.as_str())
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(stored, state.as_str());
    }
    let run = store.list_runs().await.unwrap().into_iter().find(|r| r.state == RunState::Running).unwrap().id;
    let clients = [(ClientId::new("c1").unwrap(), RegionId::new("eu").unwrap())];
    store.begin_round(&run, 1, 1, &clients).await.unwrap();
    store.fail_round(&run, 1, 1, "deadline").await.unwrap();
    let texts: (String, String) = sqlx::query_as(
        "SELECT r.status, p.status FROM rounds r JOIN participations p USING (run_id, round, attempt) WHERE r.run_id = $1",
    )
    .bind(run.as_str())
    .fetch_one(&store.pool)
    .await
    .unwrap();
    assert_eq!(texts, ("failed".to_string(), "dropped".to_string()));
}

/// A state text no version wrote is corruption, not a database failure.
#[tokio::test]
async fn an_unknown_state_text_reads_as_corrupt() {
    let (store, _schema) = Schema::with_store().await;
    let run = run_record(RunState::Queued);
    store.create_run(&run).await.unwrap();
    sqlx::query("UPDATE runs SET state = 'paused' WHERE id = $1")
        .bind(run.id.as_str())
        .execute(&store.pool)
        .await
        .unwrap();
    let err = store.get_run(&run.id).await.unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("paused")), "{err:?}");
}

/// The append-only tables refuse updates, deletes and truncation at the database, like
/// SQLite's RAISE(ABORT) triggers.
#[tokio::test]
async fn append_only_tables_refuse_changes_at_the_database() {
    let (store, _schema) = Schema::with_store().await;
    for seed in [
        "INSERT INTO audit_log (seq, at_ms, actor, action, detail, prev_hash, hash) VALUES (1, 1, 'a', 'b', 'd', 'p', 'h')",
        "INSERT INTO model_transitions (at, region, model_name, checkpoint_id, to_state, actor, reason)
         VALUES (now(), 'eu', 'lr', 'cp', 'candidate', 'a', 'r')",
        "INSERT INTO model_approvals (region, model_name, checkpoint_id, approver, reason, approved_at)
         VALUES ('eu', 'lr', 'cp', 'a', 'r', now())",
    ] {
        sqlx::query(seed).execute(&store.pool).await.unwrap();
    }
    for table in ["audit_log", "model_transitions", "model_approvals"] {
        for sql in
            [format!("UPDATE {table} SET region = 'us'"), format!("DELETE FROM {table}"), format!("TRUNCATE {table}")]
        {
            let err = sqlx::query(&sql).execute(&store.pool).await.unwrap_err();
            let db = err.as_database_error().expect("a database error");
            assert_eq!(db.code().as_deref(), Some("23001"), "{sql}: {db}");
            assert!(db.message().contains(&format!("{table} is append-only")), "{sql}: {db}");
        }
        let left: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&store.pool).await.unwrap();
        assert_eq!(left, 1, "{table}");
    }
}
