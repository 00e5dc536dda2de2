//! A cluster whose sites are 3 s apart (a satellite link, a congested
//! WAN): meta-kvs's Raft timing follows the round trip (`[meta]`, see
//! `site-config`'s `MetaTiming`), so it elects a leader and the export
//! serves. With the LAN timing (a 1 s election timeout) no election could
//! complete and the export never came up.

use std::time::{Duration, Instant};

use geonfs_bench::cluster::TestCluster;
use geonfs_bench::report::Rng;
use geonfs_rpc::WanParams;
use nfs3_client::nfs3_types::nfs3::*;

use crate::nfs_data::write;
use crate::ownership::{read, small_blocks_with};
use crate::support::init_logging;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_a_3_s_round_trip_between_sites_elects_a_leader_and_serves() {
    init_logging();
    let started = Instant::now();
    let rtt = Duration::from_secs(3);
    let builder = TestCluster::builder().wan(WanParams {
        rtt,
        bandwidth_bytes_per_sec: None,
    });
    let (cluster, mut sites) = small_blocks_with(builder, true, &["a"]).await;
    let timing = cluster.config().meta_timing();
    assert_eq!(timing.inter_site_rtt, rtt);
    assert!(timing.election_timeout >= rtt * 3, "{timing:?}");
    assert!(cluster.config().cluster.ownership_lease >= rtt * 4);
    assert!(cluster.meta_leader().await.is_some(), "a leader");
    tracing::info!(elapsed = ?started.elapsed(), "export served over a 3 s round trip");

    // A file written and read back at site a (its namespace operations
    // are meta-kvs commits across the slow link).
    let fh = sites.create("a", "far.img").await;
    let data = Rng::new(0x736c_6f77).bytes(100_000);
    write(sites.at("a"), &fh, 0, &data, stable_how::FILE_SYNC).await;
    let got = read(sites.at("a"), &fh, 0, data.len() as u64).await;
    assert!(got == data, "read back at a");
}
