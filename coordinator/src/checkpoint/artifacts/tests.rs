use super::*;
use object_store::memory::InMemory;

fn eu() -> RegionId {
    RegionId::new("eu").unwrap()
}

/// A directory default and an in-memory bucket for eu.
fn stores() -> (tempfile::TempDir, Arc<InMemory>, ArtifactStore) {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Arc::new(InMemory::new());
    let regions = BTreeMap::from([(eu(), StoreSpec::bucket(bucket.clone(), "memory://fedra-eu", "checkpoints"))]);
    let store = ArtifactStore::open(&StoreSpec::dir(dir.path()), &regions, StoreOptions::default()).unwrap();
    (dir, bucket, store)
}

#[tokio::test]
async fn locations_resolve_back_to_their_objects() {
    let (dir, _bucket, store) = stores();
    let us = RegionId::new("us").unwrap();
    let in_bucket = store.for_region(&eu()).object(&["eu", "m", "a.bin"]);
    assert_eq!(in_bucket.location().as_str(), "memory://fedra-eu/checkpoints/eu/m/a.bin");
    in_bucket.put(Bytes::from_static(b"eu bytes")).await.unwrap();
    let in_dir = store.for_region(&us).object(&["us", "m", "a.bin"]);
    assert_eq!(in_dir.location().file_path().unwrap(), dir.path().join("us/m/a.bin"));
    in_dir.put(Bytes::from_static(b"us bytes")).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("us/m/a.bin")).unwrap(), b"us bytes");
    for (location, expected) in [
        (in_bucket.location().clone(), &b"eu bytes"[..]),
        (in_dir.location().clone(), b"us bytes"),
        // A row an older version wrote: the plain path.
        (ArtifactLocation::from(dir.path().join("us/m/a.bin")), b"us bytes"),
        // The same file as a file URL.
        (ArtifactLocation::new(format!("file://{}", dir.path().join("us/m/a.bin").display())), b"us bytes"),
    ] {
        let object = store.resolve(&location).unwrap();
        assert_eq!(object.get().await.unwrap(), expected, "{location}");
        assert_eq!(object.location(), &location);
    }
    // A file outside every configured directory (the directory moved since) still reads.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("w.bin"), b"old").unwrap();
    let old = ArtifactLocation::from(elsewhere.path().join("w.bin"));
    assert_eq!(store.resolve(&old).unwrap().get().await.unwrap(), &b"old"[..]);
    // A bucket no store serves and no provider can open is an error naming it.
    let e = store.resolve(&ArtifactLocation::new("memory://gone/x")).unwrap_err().to_string();
    assert!(e.contains("memory://gone"), "{e}");
}

#[tokio::test]
async fn missing_objects_are_told_apart_and_deletes_are_idempotent() {
    let (_dir, _bucket, store) = stores();
    for object in [store.for_region(&eu()).object(&["x"]), store.default_store().object(&["x"])] {
        assert!(matches!(object.get().await, Err(CheckpointError::Missing { .. })), "{}", object.location());
        assert_eq!(object.get_if_exists().await.unwrap(), None);
        object.put(Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(object.get_if_exists().await.unwrap().as_deref(), Some(&b"1"[..]));
        object.delete().await.unwrap();
        object.delete().await.unwrap();
        assert_eq!(object.get_if_exists().await.unwrap(), None);
    }
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_stream_back_whole() {
    let (_dir, bucket, store) = stores();
    let object = store.for_region(&eu()).object(&["big.bin"]);
    let bytes: Bytes = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>().into();
    // Written as three buffers back to back (a checkpoint is its head, then the model's
    // buffer), in parts of 4 KiB above 16 KiB: ten parts, each but the last a full 4 KiB
    // whatever the buffers' boundaries (stores refuse small inner parts).
    let payload: PutPayload =
        [bytes.slice(..100), bytes.slice(100..20_000), bytes.slice(20_000..)].into_iter().collect();
    let parts = super::parts(&payload, 4 << 10);
    assert_eq!(
        parts.iter().map(PutPayload::content_length).collect::<Vec<_>>(),
        [[4096; 9].as_slice(), &[3136]].concat()
    );
    object.put_sized(payload, 16 << 10, 4 << 10).await.unwrap();
    assert_eq!(object.get().await.unwrap(), bytes);
    let streamed: Vec<Bytes> = object.stream().await.unwrap().try_collect().await.unwrap();
    assert_eq!(streamed.concat(), bytes.to_vec());
    let listed: Vec<_> = bucket.list(None).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1, "one object, whatever the parts");
    // A file streams back whole too, in pieces of at most FILE_PIECE_BYTES.
    let big: Bytes = (0..(FILE_PIECE_BYTES as u32 / 2 + 7)).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>().into();
    let file = store.default_store().object(&["big.bin"]);
    file.put(big.clone()).await.unwrap();
    let pieces: Vec<Bytes> = file.stream().await.unwrap().try_collect().await.unwrap();
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces.concat(), big.to_vec());
}

#[tokio::test]
async fn listings_are_relative_to_the_prefix_and_shared_stores_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let spec = StoreSpec::bucket(Arc::clone(&bucket), "memory://shared", "p");
    let regions = BTreeMap::from([(eu(), spec.clone()), (RegionId::new("us").unwrap(), spec)]);
    let store = ArtifactStore::open(&StoreSpec::dir(dir.path()), &regions, StoreOptions::default()).unwrap();
    assert_eq!(store.distinct().len(), 2, "the directory and the shared bucket");
    store.for_region(&eu()).object(&["eu", "f"]).put(Bytes::from_static(b"1")).await.unwrap();
    bucket.put_opts(&Key::from("outside/f"), PutPayload::from_static(b"2"), PutOptions::default()).await.unwrap();
    assert_eq!(store.for_region(&eu()).list().await.unwrap(), vec![vec!["eu".to_string(), "f".to_string()]]);
}

#[tokio::test]
async fn directories_under_a_location_are_listed() {
    let (dir, _bucket, store) = stores();
    let us = RegionId::new("us").unwrap();
    for (region, round) in [(eu(), "round-0001"), (eu(), "round-0002"), (us.clone(), "round-0001")] {
        let o = store.for_region(&region).object(&[region.as_str(), "m", "run", round, "manifest.json"]);
        o.put(Bytes::from_static(b"{}")).await.unwrap();
    }
    let run = ArtifactLocation::new("memory://fedra-eu/checkpoints/eu/m/run");
    let rounds: Vec<_> = store.list_dirs(&run).await.unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(
        rounds,
        ["memory://fedra-eu/checkpoints/eu/m/run/round-0001", "memory://fedra-eu/checkpoints/eu/m/run/round-0002"]
    );
    let run = ArtifactLocation::from(dir.path().join("us/m/run"));
    let rounds = store.list_dirs(&run).await.unwrap();
    assert_eq!(rounds, [ArtifactLocation::new(format!("{}/round-0001", run.as_str()))]);
}

#[test]
fn bucket_urls_are_opened_with_the_configured_options() {
    let options = StoreOptions::from_vars([
        ("AWS_ENDPOINT_URL".to_string(), "http://127.0.0.1:9".to_string()),
        ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
    ]);
    let spec = StoreSpec::parse("s3://fedra-eu/checkpoints", &options).unwrap();
    let store = ArtifactStore::open(&spec, &BTreeMap::new(), options).unwrap();
    let object = store.default_store().object(&["eu", "m.bin"]);
    assert_eq!(object.location().as_str(), "s3://fedra-eu/checkpoints/eu/m.bin");
    assert_eq!(store.resolve(object.location()).unwrap().key, object.key);
    // Another bucket (a row from before a configuration change) is opened on demand.
    let other = store.resolve(&ArtifactLocation::new("s3://fedra-old/eu/m.bin")).unwrap();
    assert_eq!(other.key.as_ref(), "eu/m.bin");
}
