//! The RPC layer on real RPCs: WAN emulation, the cluster secret, faults.

use std::time::Duration;

use geonfs_proto::node::node_client::NodeClient;
use geonfs_proto::node::PingRequest;
use geonfs_rpc::{Fault, FaultTarget, Network, NetworkOptions, WanParams};
use geonfs_testkit::cluster::TestCluster;

use crate::support::{eventually, init_logging, median_ping, ping};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_emulation_adds_rtt_between_sites_and_nothing_inside() {
    init_logging();
    let rtt = Duration::from_millis(100);
    let cluster = TestCluster::builder()
        .sites(2)
        .cores_per_site(2)
        .access_per_site(0)
        .wan(WanParams {
            rtt,
            bandwidth_bytes_per_sec: None,
        })
        .start()
        .await
        .unwrap();
    let inside = median_ping(&cluster.channel("a-core-1", "a-core-2").unwrap(), 16, 7).await;
    let across = median_ping(&cluster.channel("a-core-1", "b-core-1").unwrap(), 16, 7).await;
    let back = median_ping(&cluster.channel("b-core-2", "a-core-2").unwrap(), 16, 7).await;
    println!("ping median: inside a site {inside:?}, a->b {across:?}, b->a {back:?} (rtt {rtt:?})");
    // The delay lines guarantee at least the RTT; the slack is for a busy machine.
    assert!(across >= rtt && back >= rtt, "cross-site calls pay the RTT");
    assert!(across < rtt * 2 && back < rtt * 2, "and not much more");
    assert!(
        inside < rtt / 5,
        "calls inside a site pay no emulated latency"
    );

    // Changing the WAN applies to open connections.
    cluster.set_wan("a", "b", WanParams::default()).unwrap();
    let unshaped = median_ping(&cluster.channel("a-core-1", "b-core-1").unwrap(), 16, 5).await;
    assert!(
        unshaped < rtt / 5,
        "with RTT 0 the link is fast again: {unshaped:?}"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_emulation_limits_bandwidth() {
    init_logging();
    // 4 MB/s each way: a 1 MiB ping payload travels there and back, so at
    // least 2 × 262 ms on the wire.
    let bandwidth = 4_000_000u64;
    let cluster = TestCluster::builder()
        .sites(2)
        .cores_per_site(2)
        .access_per_site(0)
        .wan(WanParams {
            rtt: Duration::ZERO,
            bandwidth_bytes_per_sec: Some(bandwidth),
        })
        .start()
        .await
        .unwrap();
    let payload = 1 << 20;
    let wire = Duration::from_secs_f64(2.0 * payload as f64 / bandwidth as f64);
    let across = median_ping(
        &cluster.channel("a-core-1", "b-core-1").unwrap(),
        payload,
        3,
    )
    .await;
    let inside = median_ping(
        &cluster.channel("a-core-1", "a-core-2").unwrap(),
        payload,
        3,
    )
    .await;
    println!("1 MiB echo: across {across:?} (wire time {wire:?}), inside {inside:?}");
    assert!(
        across >= wire,
        "cross-site transfer is limited by the bandwidth"
    );
    assert!(inside < wire / 4, "inside a site it is not");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_secret_are_rejected() {
    init_logging();
    // Plain TCP, so that calls reach the secret check (with TLS, a caller
    // without a node certificate never gets that far: see tls.rs).
    let cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(2)
        .access_per_site(0)
        .plain_tcp()
        .start()
        .await
        .unwrap();
    let target = cluster.addr("a-core-1").unwrap();
    let rejections = || cluster.network().metrics().auth_rejections.get();
    assert_eq!(rejections(), 0);

    // The right secret passes.
    let reply = ping(
        &cluster.channel("a-core-2", "a-core-1").unwrap(),
        b"hi".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(reply.node.unwrap().name, "a-core-1");

    // A wrong secret: refused, no data returned.
    let mut options = NetworkOptions::from_config(cluster.config(), &[]);
    options.secret = "not-the-cluster-secret".into();
    let impostor = Network::new(options).unwrap();
    let channel = impostor
        .channel(cluster.addr("a-core-2").unwrap().ip(), target)
        .unwrap();
    let status = ping(&channel, b"hi".to_vec()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("wrong cluster secret"),
        "{status:?}"
    );

    // No secret at all: a plain tonic channel.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = NodeClient::new(plain)
        .ping(PingRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("missing cluster secret"),
        "{status:?}"
    );
    assert_eq!(rejections(), 2, "each refusal is counted");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_cut_drop_and_delay_then_heal() {
    init_logging();
    let cluster = TestCluster::builder()
        .sites(2)
        .cores_per_site(2)
        .access_per_site(0)
        .start()
        .await
        .unwrap();
    let a1_a2 = cluster.channel("a-core-1", "a-core-2").unwrap();
    let a1_b1 = cluster.channel("a-core-1", "b-core-1").unwrap();
    ping(&a1_a2, vec![]).await.unwrap();
    ping(&a1_b1, vec![]).await.unwrap();

    // A cut fails calls on the open connection, and only on that link.
    cluster.cut_nodes("a-core-1", "a-core-2").unwrap();
    let status = ping(&a1_a2, vec![]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    ping(&a1_b1, vec![]).await.unwrap();
    cluster.heal_all();
    eventually(
        Duration::from_secs(10),
        "a healed link carries calls again",
        || {
            let channel = a1_a2.clone();
            async move { ping(&channel, vec![]).await.is_ok() }
        },
    )
    .await;

    // A site cut fails every cross-site call but none inside a site.
    cluster.cut_sites("a", "b").unwrap();
    assert_eq!(
        ping(&a1_b1, vec![]).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );
    let b2_a2 = cluster.channel("b-core-2", "a-core-2").unwrap();
    assert_eq!(
        ping(&b2_a2, vec![]).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );
    ping(&a1_a2, vec![]).await.unwrap();
    cluster.heal_all();
    eventually(
        Duration::from_secs(10),
        "sites reconnect after heal",
        || {
            let (x, y) = (a1_b1.clone(), b2_a2.clone());
            async move { ping(&x, vec![]).await.is_ok() && ping(&y, vec![]).await.is_ok() }
        },
    )
    .await;

    // Dropped replies: the server ran the call, the caller sees UNAVAILABLE.
    let faults = cluster.network().faults();
    let (a1, a2) = (
        cluster.addr("a-core-1").unwrap().ip(),
        cluster.addr("a-core-2").unwrap().ip(),
    );
    faults.add(
        FaultTarget::Nodes { from: a1, to: a2 },
        Fault::DropReplies(1.0),
    );
    let status = ping(&a1_a2, vec![]).await.unwrap_err();
    assert!(status.message().contains("reply"), "{status:?}");
    faults.heal_all();
    faults.add(
        FaultTarget::Nodes { from: a1, to: a2 },
        Fault::DropRequests(1.0),
    );
    let status = ping(&a1_a2, vec![]).await.unwrap_err();
    assert!(status.message().contains("request"), "{status:?}");
    faults.heal_all();

    // Delay: every call waits at least that long.
    let delay = Duration::from_millis(150);
    faults.add(FaultTarget::Node(a2), Fault::Delay(delay));
    let slow = median_ping(&a1_a2, 0, 3).await;
    assert!(slow >= delay, "{slow:?}");
    faults.heal_all();
    let injected = |kind: &str| {
        cluster
            .network()
            .metrics()
            .injected_faults
            .with_label_values(&[kind])
            .get()
    };
    assert!(injected("cut") >= 2 && injected("drop_reply") == 1 && injected("drop_request") == 1);
    cluster.shutdown().await.unwrap();
}
