//! Checkpoints in S3-compatible object storage, region per bucket: a real federated run
//! whose eu and us copies land in their own buckets of a real S3 server on loopback (moto's
//! server mode, installed from PyPI into `target/py-moto` by [`crate::pyvenv`]), pulled back
//! over gRPC with their digests checked, and reconciled with the records on restart.

use crate::sandbox::*;
use anyhow::{Context, Result, ensure};
use fedra_coordinator::checkpoint::{Checkpoints, PublishRequest, StoreOptions};
use fedra_coordinator::config::{ArtifactsConfig, RawArtifacts};
use fedra_coordinator::ids::{CheckpointId, RegionId, RoundNumber, RunId};
use fedra_coordinator::store::{CheckpointFilter, Store};
use fedra_types::model::{Architecture, ModelSpec};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REQUIREMENTS: &str = include_str!("../../python/moto-requirements.txt");
const DIM: usize = 6;
const CLASSES: usize = 3;
const WAIT: Duration = Duration::from_secs(120);

/// A moto S3 server on a free loopback port, killed when dropped.
struct Moto {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Moto {
    /// Starts the server and waits for the line in which it names its port.
    fn start() -> Result<Self> {
        let python = crate::pyvenv::python_with("py-moto", REQUIREMENTS);
        let mut child = Command::new(python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting moto's server")?;
        let stderr = child.stderr.take().context("moto's stderr")?;
        // The server logs every request to stderr: the reader drains it for the server's
        // whole life, and reports the listening address (or everything said before an exit).
        let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("Running on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(Ok(addr.trim().to_string()));
                } else if tx.is_some() {
                    said.push(line);
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(said.join("\n")));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => addr,
            failed => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("moto did not start listening: {failed:?}");
            }
        };
        Ok(Self { child, addr })
    }

    /// Creates a bucket (moto takes unsigned requests).
    fn create_bucket(&self, name: &str) -> Result<()> {
        let mut s = std::net::TcpStream::connect(&self.addr)?;
        write!(s, "PUT /{name} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.addr)?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        ensure!(response.lines().next().is_some_and(|l| l.contains(" 200 ")), "creating bucket {name}: {response}");
        Ok(())
    }

    /// The provider settings a coordinator gets from its environment.
    fn options(&self) -> StoreOptions {
        StoreOptions::from_vars(
            [
                ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
                ("AWS_ACCESS_KEY_ID", "fedra-test".into()),
                ("AWS_SECRET_ACCESS_KEY", "fedra-test-secret".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ALLOW_HTTP", "true".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        )
    }

    /// A client of one bucket, as the test's own view of what is stored.
    fn bucket(&self, name: &str) -> Result<AmazonS3> {
        Ok(AmazonS3Builder::new()
            .with_endpoint(format!("http://{}", self.addr))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(name)
            .with_access_key_id("fedra-test")
            .with_secret_access_key("fedra-test-secret")
            .build()?)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every key in `bucket`, sorted.
async fn keys(bucket: &AmazonS3) -> Result<Vec<String>> {
    let mut keys: Vec<String> = bucket.list(None).map_ok(|m| m.location.to_string()).try_collect().await?;
    keys.sort();
    Ok(keys)
}

/// `[artifacts.regions]` eu and us, each in its own bucket of `moto`; the default store
/// stays the data directory's `artifacts`.
fn region_buckets(moto: &Moto, data_dir: &std::path::Path) -> Result<ArtifactsConfig> {
    let regions = ["eu", "us"].map(|r| (r.to_string(), format!("s3://fedra-{r}/checkpoints")));
    let raw = RawArtifacts { default: None, regions: BTreeMap::from(regions) };
    Ok(ArtifactsConfig::validate(Some(raw), None, data_dir, moto.options())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_regions_checkpoints_stay_in_its_own_bucket() -> Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket("fedra-eu")?;
    moto.create_bucket("fedra-us")?;
    let (eu, us) = (moto.bucket("fedra-eu")?, moto.bucket("fedra-us")?);
    let data = tempfile::tempdir()?;
    let specs: Vec<_> =
        ["eu", "eu", "us", "us"].iter().enumerate().map(|(i, r)| blob_client(i, r, DIM, CLASSES, 80)).collect();
    let builder = Cluster::builder().data_dir(data.path()).artifacts(region_buckets(&moto, data.path())?);
    let mut cluster = builder.clients(specs).start().await?;
    let mut control = cluster.control().await?;
    let run = control.submit(&plan(DIM as u32, CLASSES as u32, 2, 4, 4)).await?;
    assert_succeeded(&wait_for_end(&cluster, &run, WAIT).await?);

    // Each round is recorded in both regions, at URLs in the region's own bucket.
    let store = open_store(&cluster).await?;
    let run_id = RunId::new(run.clone())?;
    let records = store.list_checkpoints(&CheckpointFilter { run: Some(run_id), ..Default::default() }).await?;
    assert_eq!(records.len(), 2);
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for rec in &records {
        let regions: Vec<_> = rec.locations.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(regions, ["eu", "us"]);
        for (region, location) in &rec.locations {
            let region = region.as_str();
            let round = format!("checkpoints/{region}/test-lr/{run}/round-{:04}", rec.round);
            assert_eq!(location.as_str(), format!("s3://fedra-{region}/{round}/model.safetensors"));
            for file in ["manifest.json", "manifest.sig", "model.safetensors", "reference.json"] {
                expected.entry(region).or_default().insert(format!("{round}/{file}"));
            }
        }
    }
    // Each bucket holds its own region's objects and nothing else; the directory none.
    assert_eq!(keys(&eu).await?, expected["eu"].iter().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&us).await?, expected["us"].iter().cloned().collect::<Vec<_>>());
    let local = data.path().join("artifacts");
    assert!(!local.join("eu").exists() && !local.join("us").exists(), "no region copy in the directory");

    // Pull over gRPC: the stored bytes, their digest the manifest's, the signature valid.
    let trust = cluster.pki().trust()?;
    let last = records.last().context("a checkpoint")?;
    for (region, bucket) in [("eu", &eu), ("us", &us)] {
        let (info, weights) = control.fetch_checkpoint(last.id.as_str(), Some(region)).await?;
        let key = Key::from(format!("checkpoints/{region}/test-lr/{run}/round-0002/model.safetensors"));
        assert_eq!(weights, bucket.get(&key).await?.bytes().await?.to_vec(), "{region}: the stored bytes");
        let bundle = fedra_pki::checkpoint::Bundle {
            manifest: info.manifest_json.into_bytes(),
            signature: info.signature_json.into_bytes(),
            weights,
        };
        let view = fedra_pki::checkpoint::verify_bundle(last.id.as_str(), &bundle, &trust)?;
        assert_eq!(hex::encode(Sha256::digest(&bundle.weights)), view.file_sha256, "{region}");
        assert!(!info.reference_json.is_empty(), "{region}: the drift reference comes along");
    }
    // A flipped byte in the stored object: the pull refuses it.
    let key = Key::from(format!("checkpoints/eu/test-lr/{run}/round-0002/model.safetensors"));
    let mut bytes = eu.get(&key).await?.bytes().await?.to_vec();
    *bytes.last_mut().context("weights")? ^= 1;
    eu.put(&key, PutPayload::from(bytes)).await?;
    let refused = control.fetch_checkpoint(last.id.as_str(), Some("eu")).await.expect_err("a corrupt copy is refused");
    assert!(refused.to_string().contains("sha256"), "{refused}");
    control.fetch_checkpoint(last.id.as_str(), Some("us")).await.context("us's copy is intact")?;
    // `fedra checkpoint verify s3://…/round-0002` reads the same objects offline: us's chain
    // verifies back to round 1, eu's corrupt head does not.
    let offline = region_buckets(&moto, data.path())?.open()?;
    let round = |region: &str| format!("s3://fedra-{region}/checkpoints/{region}/test-lr/{run}/round-0002");
    let chain = fedra_cli::verify::verify_stored(&round("us"), &offline, &trust).await.map_err(anyhow::Error::msg)?;
    assert_eq!(chain.len(), 2);
    let e = fedra_cli::verify::verify_stored(&round("eu"), &offline, &trust).await.expect_err("eu's copy is corrupt");
    assert!(e.contains("sha256"), "{e}");

    // An object written before a crash and never recorded goes at the next start; keys
    // outside the layout and recorded objects stay.
    let stray = format!("checkpoints/eu/test-lr/{}/round-0001/model.safetensors", RunId::generate());
    eu.put(&Key::from(stray.as_str()), PutPayload::from_static(b"unrecorded")).await?;
    eu.put(&Key::from("checkpoints/README"), PutPayload::from_static(b"not ours")).await?;
    cluster.restart_coordinator().await?;
    let after = keys(&eu).await?;
    assert!(!after.contains(&stray), "the unrecorded object was removed: {after:?}");
    let mut kept: Vec<String> = expected["eu"].iter().cloned().collect();
    kept.push("checkpoints/README".into());
    kept.sort();
    assert_eq!(after, kept);
    assert_eq!(keys(&us).await?, expected["us"].iter().cloned().collect::<Vec<_>>());
    cluster.shutdown().await;
    Ok(())
}

/// A region's store outside the policy set, or a malformed store URL, stops the
/// coordinator binary at start-up: exit 64 and one line naming the key.
#[test]
fn artifact_stores_the_config_cannot_have_exit_64() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policies");
    std::fs::create_dir_all(&policy)?;
    std::fs::write(policy.join("policy.toml"), open_policy(1000, ""))?;
    for (regions, key) in [
        ("eu = \"s3://fedra-eu/checkpoints\"\napac = \"s3://fedra-apac/checkpoints\"\n", "artifacts.regions.apac"),
        ("eu = \"s3:/fedra-eu\"\n", "artifacts.regions.eu"),
    ] {
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\npolicy_dir = {:?}\nlocation = \"eu\"\n[artifacts.regions]\n{regions}",
                dir.path().join("data"),
                policy
            ),
        )?;
        let out =
            Command::new(crate::cli::coordinator_binary()).arg("--config").arg(&config).arg("--insecure").output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(&format!("fedra-coordinator: bad config: {key}: ")), "{stderr}");
    }
    Ok(())
}

/// Publication time of one model to a directory and to the S3 server (not a test: run it
/// with `--run-ignored only` to measure; BENCHMARKS.md has the numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn publication_time_directory_vs_s3() -> Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket("fedra-eu")?;
    let data = tempfile::tempdir()?;
    let in_bucket = Checkpoints::ephemeral(region_buckets(&moto, data.path())?.open()?);
    let in_dir = Checkpoints::with_ephemeral_key(data.path().join("dir"));
    for params in [1usize << 20, 1 << 24] {
        let model = ModelSpec::new("bench", Architecture::LogisticRegression { input_dim: params / 16, classes: 16 })?;
        let values = model.initialise(1);
        for (name, cps) in [("directory", &in_dir), ("s3 (moto)", &in_bucket)] {
            let run = RunId::generate();
            let req = PublishRequest {
                id: CheckpointId::for_round(&run, RoundNumber(1)),
                run,
                round: 1,
                attempt: 1,
                parent: None,
                model: model.clone(),
                contributors: vec![],
                metrics: Default::default(),
                regions: vec![RegionId::new("eu")?],
                privacy: None,
                policy_sha256: None,
                server_state: None,
                references: Default::default(),
                aggregation: None,
            };
            let started = Instant::now();
            let published = cps.publish(req, fedra_proto::chunking::SharedParams::new(values.clone())).await?;
            let took = started.elapsed();
            let (_, location) = &published.locations[0];
            let started = Instant::now();
            cps.load(location, &published.manifest.file_sha256, &model.layout()).await?;
            println!(
                "{name}: {} parameters ({} MiB): publish {took:.2?}, load {:.2?}",
                values.len(),
                (values.len() * 4) >> 20,
                started.elapsed()
            );
        }
    }
    Ok(())
}
