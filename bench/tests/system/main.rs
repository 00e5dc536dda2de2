//! System tests: whole clusters in one process, through the real RPC layer.
//! One test binary for the whole suite (each binary links RocksDB).

mod block_support;
mod blocks;
mod cluster;
mod core;
mod failover;
mod fence;
mod file_data;
mod lease;
mod meta;
mod meta_jepsen;
mod meta_membership;
mod namespace;
mod nfs;
mod nfs_clients;
mod nfs_data;
mod nfs_readdir;
mod ownership;
mod quarantine;
mod repair;
mod replication;
mod rpc;
mod slow_wan;
mod thrash;
mod trimmed_copy;

/// Shared helpers.
mod support {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use geonfs_proto::node::node_client::NodeClient;
    use geonfs_proto::node::{PingReply, PingRequest};
    use geonfs_rpc::RpcChannel;

    /// Logs to the test's output when `GEONFS_LOG` is set.
    pub fn init_logging() {
        if let Ok(filter) = std::env::var("GEONFS_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    }

    /// One ping over `channel`, with a deadline.
    pub async fn ping(channel: &RpcChannel, payload: Vec<u8>) -> Result<PingReply, tonic::Status> {
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
    pub async fn median_ping(channel: &RpcChannel, payload: usize, rounds: usize) -> Duration {
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
    pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
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
}
