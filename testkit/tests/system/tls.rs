//! TLS between nodes: only certificates from the cluster's CA that name
//! the node configured at the caller's address get a connection.

use std::path::Path;
use std::time::Duration;

use geonfs_proto::node::node_client::NodeClient;
use geonfs_proto::node::PingRequest;
use geonfs_rpc::tls::{self, OPERATOR};
use geonfs_rpc::{Network, NetworkOptions};
use geonfs_testkit::cluster::{TestCluster, TEST_TLS_DIR};

use crate::support::{eventually, init_logging, ping};

/// A network like the cluster's, loading its TLS files from `dir` and
/// presenting the certificate stored there as `identity`.
fn network_with(cluster: &TestCluster, dir: &Path, identity: &str) -> Network {
    let mut options = NetworkOptions::from_config(cluster.config(), &[identity]);
    if let Some(tls) = options.tls.as_mut() {
        tls.dir = dir.to_path_buf();
    }
    Network::new(options).unwrap()
}

/// A one-site cluster of two cores and a meta node, talking TLS.
async fn one_site() -> TestCluster {
    init_logging();
    TestCluster::builder()
        .sites(1)
        .cores_per_site(2)
        .access_per_site(0)
        .start()
        .await
        .unwrap()
}

/// Copies `from`'s certificate and key in `src` to `to`'s names in `dst`.
fn copy_identity(src: &Path, from: &str, dst: &Path, to: &str) {
    std::fs::copy(tls::cert_path(src, from), tls::cert_path(dst, to)).unwrap();
    std::fs::copy(tls::key_path(src, from), tls::key_path(dst, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_another_ca_another_nodes_name_or_no_tls_are_refused() {
    let cluster = one_site().await;
    let cluster_tls = cluster.data_dir().join(TEST_TLS_DIR);
    let server = cluster.addr("a-core-1").unwrap();
    let caller_ip = cluster.addr("a-core-2").unwrap().ip();
    let refusals = |reason: &str| {
        cluster
            .network()
            .metrics()
            .tls_refusals
            .with_label_values(&[reason])
            .get()
    };

    // The cluster's own certificates pass, and say who answered.
    let reply = ping(&cluster.channel("a-core-2", "a-core-1").unwrap(), vec![])
        .await
        .unwrap();
    assert_eq!(reply.node.unwrap().name, "a-core-1");

    // A certificate for the right name from another CA (the caller trusts
    // the cluster's CA, so only the server's check can stop it).
    let foreign = tempfile::tempdir().unwrap();
    tls::init_ca(foreign.path()).unwrap();
    tls::issue(foreign.path(), "a-core-2", false).unwrap();
    std::fs::copy(cluster_tls.join("ca.crt"), foreign.path().join("ca.crt")).unwrap();
    let impostor = network_with(&cluster, foreign.path(), "a-core-2");
    let refused = ping(&impostor.channel(caller_ip, server).unwrap(), vec![]).await;
    assert!(refused.is_err(), "another CA's certificate was accepted");
    eventually(Duration::from_secs(10), "a handshake refusal", || async {
        refusals("handshake") >= 1
    })
    .await;

    // The cluster's certificate of another node (a-meta-1), presented
    // from a-core-2's address.
    let borrowed = tempfile::tempdir().unwrap();
    std::fs::copy(cluster_tls.join("ca.crt"), borrowed.path().join("ca.crt")).unwrap();
    copy_identity(&cluster_tls, "a-meta-1", borrowed.path(), "a-core-2");
    let impostor = network_with(&cluster, borrowed.path(), "a-core-2");
    let refused = ping(&impostor.channel(caller_ip, server).unwrap(), vec![]).await;
    assert!(refused.is_err(), "another node's certificate was accepted");
    eventually(Duration::from_secs(10), "a name refusal", || async {
        refusals("name") == 1
    })
    .await;

    // No TLS at all: a plain gRPC client, and a geonfs node configured
    // for plain TCP.
    let before = refusals("handshake");
    if let Ok(plain) = tonic::transport::Endpoint::from_shared(format!("http://{server}"))
        .unwrap()
        .connect()
        .await
    {
        let status = NodeClient::new(plain)
            .ping(PingRequest::default())
            .await
            .unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok);
    }
    let mut options = NetworkOptions::from_config(cluster.config(), &[]);
    options.tls = None;
    let plain = Network::new(options).unwrap();
    let refused = ping(&plain.channel(caller_ip, server).unwrap(), vec![]).await;
    assert!(refused.is_err(), "a plain TCP caller was accepted");
    eventually(
        Duration::from_secs(10),
        "two more handshake refusals",
        || async { refusals("handshake") >= before + 2 },
    )
    .await;

    // The operator's certificate is accepted from any address; and the
    // cluster still works for its own nodes.
    let operator = network_with(&cluster, &cluster_tls, OPERATOR);
    let unspecified = std::net::IpAddr::from([0, 0, 0, 0]);
    ping(&operator.channel(unspecified, server).unwrap(), vec![])
        .await
        .unwrap();
    ping(&cluster.channel("a-meta-1", "a-core-1").unwrap(), vec![])
        .await
        .unwrap();
    assert_eq!(refusals("name"), 1);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_refuses_a_server_whose_certificate_names_another_node() {
    let cluster = one_site().await;
    let cluster_tls = cluster.data_dir().join(TEST_TLS_DIR);
    // A rogue server at a-core-1's address would need its port; instead
    // the caller expects a-core-1 at a-core-2's address (as if a-core-2
    // had taken a-core-1's place): a-core-2's certificate does not name
    // a-core-1, so the caller hangs up.
    let mut config = (**cluster.config()).clone();
    let a1 = config
        .nodes
        .iter()
        .position(|n| n.name == "a-core-1")
        .unwrap();
    let a2 = config
        .nodes
        .iter()
        .position(|n| n.name == "a-core-2")
        .unwrap();
    let (addr1, addr2) = (config.nodes[a1].address, config.nodes[a2].address);
    config.nodes[a1].address = addr2;
    config.nodes[a2].address = addr1;
    let caller = Network::new(NetworkOptions::from_config(&config, &[OPERATOR])).unwrap();
    let unspecified = std::net::IpAddr::from([0, 0, 0, 0]);
    let refused = ping(&caller.channel(unspecified, addr2).unwrap(), vec![]).await;
    let status = refused.unwrap_err();
    assert!(
        format!("{status:?}").contains("certificate"),
        "not refused for its certificate: {status:?}"
    );
    // With the true addresses the same caller gets through.
    let caller = network_with(&cluster, &cluster_tls, OPERATOR);
    ping(&caller.channel(unspecified, addr2).unwrap(), vec![])
        .await
        .unwrap();
    cluster.shutdown().await.unwrap();
}
