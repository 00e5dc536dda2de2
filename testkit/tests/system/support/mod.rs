//! Helpers the system tests share: waiting, logging and pings here; block
//! and core access in [`blocks`], NFS clients and servers in [`nfs`], one
//! NFS client per site of a cluster in [`sites`], written files under an
//! ownership lease in [`lease`].

pub mod blocks;
pub mod lease;
pub mod nfs;
pub mod sites;

use std::future::Future;
use std::time::{Duration, Instant};

use geonfs_meta_kvs::MetaOptions;
use geonfs_proto::node::node_client::NodeClient;
use geonfs_proto::node::{PingReply, PingRequest};
use geonfs_rpc::RpcChannel;
use geonfs_testkit::cluster::TestCluster;

/// Logs to the test's output when `GEONFS_LOG` is set.
pub(crate) fn init_logging() {
    if let Ok(filter) = std::env::var("GEONFS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// One ping over `channel`, with a deadline.
pub(crate) async fn ping(
    channel: &RpcChannel,
    payload: Vec<u8>,
) -> Result<PingReply, tonic::Status> {
    let mut request = tonic::Request::new(PingRequest {
        payload: payload.into(),
    });
    request.set_timeout(Duration::from_secs(10));
    NodeClient::new(channel.clone())
        .ping(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Median duration of `rounds` pings after one warm-up ping.
pub(crate) async fn median_ping(channel: &RpcChannel, payload: usize, rounds: usize) -> Duration {
    ping(channel, vec![0; payload]).await.expect("warm-up ping");
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let reply = ping(channel, vec![7; payload]).await.expect("ping");
        assert_eq!(reply.payload.len(), payload);
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Polls `check` until it returns true, failing the test after `deadline`.
pub(crate) async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One site, two cores, three meta voters and no access server, with a
/// meta leader elected: what namespace and NFS program tests run on.
pub(crate) async fn cluster() -> TestCluster {
    cluster_with_capacity(1 << 30).await
}

/// [`cluster`] with each core's block store capacity `core_capacity`.
pub(crate) async fn cluster_with_capacity(core_capacity: u64) -> TestCluster {
    init_logging();
    let cluster = TestCluster::builder()
        .core_capacity(core_capacity)
        .sites(1)
        .cores_per_site(2)
        .access_per_site(0)
        .meta_per_site(3)
        .meta_options(MetaOptions::default())
        .start()
        .await
        .expect("cluster starts");
    eventually(Duration::from_secs(30), "a meta leader", || async {
        cluster.meta_leader().await.is_some()
    })
    .await;
    cluster
}
