//! What one certified but hostile (or broken) peer cannot do to everyone else: hold the
//! coordinator's transfer slots with silent streams, or stall listings.

use crate::faults::DyingClient;
use crate::sandbox::*;
use fedra_proto::pb;
use std::time::Duration;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_streams_beyond_the_slots_do_not_stop_honest_clients() -> anyhow::Result<()> {
    // One upload slot and one download permit; clients silent for 3 s are cut off.
    let cluster = Cluster::builder()
        .max_concurrent_uploads(1)
        .max_concurrent_downloads(1)
        .heartbeat(Duration::from_millis(250), Duration::from_secs(3))
        .start()
        .await?;
    // Run A, region "silent": three selected clients that misbehave. One opens its model
    // download (8 MB, more than the HTTP/2 windows) and never reads it; two stall half-way
    // through their uploads. More silent streams than there are slots.
    let mut silent = Vec::new();
    for i in 0..3 {
        let mut c = DyingClient::connect_in(&cluster, &format!("silent-{i}"), "silent", 10).await?;
        c.keep_alive();
        silent.push(c);
    }
    let mut control = cluster.control().await?;
    let mut a = plan(200_000, 10, 1, 3, 3);
    a.regions = vec!["silent".into()];
    a.round_deadline_seconds = 60.0;
    let run_a = control.submit(&a).await?;
    let up1 = silent[1].upload_half(1 << 16).await?;
    let up2 = silent[2].upload_half(1 << 16).await?;
    let unread = silent[0].hold_download().await?;

    // Run B, region "eu": honest burn clients joining now must download and upload through
    // the same single permit and slot, and finish.
    let mut cluster = cluster;
    for i in 0..2 {
        cluster.add_client(blob_client(i, "eu", 6, 3, 40));
    }
    cluster.wait_connected(Duration::from_secs(30)).await?;
    let mut b = plan(6, 3, 1, 2, 2);
    b.regions = vec!["eu".into()];
    let run_b = control.submit(&b).await?;
    let status = wait_for_end(&cluster, &run_b, Duration::from_secs(60)).await?;
    assert_succeeded(&status);

    // The faults happened and were cut off by the coordinator, naming why.
    for upload in [up1, up2] {
        let answer = upload.wait_cut_off().await?;
        assert!(answer.message().contains("no data for 3s"), "{answer:?}");
    }
    let mut unread = unread;
    let mut parts = 0usize;
    let end = loop {
        match unread.next().await {
            Some(Ok(_)) => parts += 1,
            Some(Err(status)) => break Some(status),
            None => break None,
        }
    };
    let total_chunks = (200_000 * 10 + 10) * 4 / fedra_proto::chunking::DEFAULT_CHUNK_BYTES + 1;
    assert!(parts < total_chunks, "the unread download was abandoned ({parts} of {total_chunks} parts, end {end:?})");
    // Run A, whose clients all misbehaved, fails alone.
    let a = wait_for_end(&cluster, &run_a, Duration::from_secs(60)).await?;
    assert_eq!(a.state, fedra_types::run::RunState::Failed, "{a:?}");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_list_pages_through_thousands_of_runs_per_owner() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let alice: fedra_types::identity::Identity = "fedra://scientist/alice".parse()?;
    let bob: fedra_types::identity::Identity = "fedra://scientist/bob".parse()?;
    let p = plan(4, 3, 1, 1, 1);
    // 2,100 runs (three pages of 1,000), submitted concurrently by two scientists.
    let mut submitters = Vec::new();
    for (who, n) in [(alice.clone(), 1_400usize), (bob.clone(), 700)] {
        let mut c = cluster.control_as(&who).await?;
        let p = p.clone();
        submitters.push(tokio::spawn(async move {
            for _ in 0..n {
                c.submit(&p).await?;
            }
            anyhow::Ok(())
        }));
    }
    for s in submitters {
        s.await??;
    }
    let all = cluster.control().await?.list().await?;
    assert_eq!(all.len(), 2_100);
    let mut ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2_100, "every run once across pages");
    assert_eq!(cluster.control_as(&bob).await?.list().await?.len(), 700, "bob sees his own");
    // A page is bounded: asking for more than 1,000 at once is refused.
    let channel = cluster.connect_as(&cluster.pki().tls(&alice)?).await?;
    let e = pb::run_service_client::RunServiceClient::new(channel)
        .list_runs(pb::ListRunsRequest { page_size: 5_000, page_token: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    cluster.shutdown().await;
    Ok(())
}
