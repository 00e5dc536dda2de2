//! TLS between nodes: only certificates from the cluster's CA that name
//! the node configured at the caller's address get a connection.

use std::path::Path;
use std::time::Duration;

use geonfs_proto::node::node_client::NodeClient;
use geonfs_proto::node::PingRequest;
use geonfs_rpc::tls::{self, OPERATOR};
use geonfs_rpc::{Network, NetworkOptions};
use geonfs_site_config::ClusterConfig;
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

/// The cluster's configuration with the addresses of nodes `a` and `b`
/// swapped.
fn swapped(cluster: &TestCluster, a: &str, b: &str) -> ClusterConfig {
    let mut config = (**cluster.config()).clone();
    let i = config.nodes.iter().position(|n| n.name == a).unwrap();
    let j = config.nodes.iter().position(|n| n.name == b).unwrap();
    let (at_i, at_j) = (config.nodes[i].address, config.nodes[j].address);
    config.nodes[i].address = at_j;
    config.nodes[j].address = at_i;
    config
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
    // from a-core-2's address: the impostor's configuration puts a-meta-1
    // there (a certificate file for a-core-2 naming a-meta-1 is refused
    // when loaded, see below).
    let moved = swapped(&cluster, "a-meta-1", "a-core-2");
    let impostor = Network::new(NetworkOptions::from_config(&moved, &["a-meta-1"])).unwrap();
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

    // A certificate file whose certificate names another node is refused
    // when loaded.
    let borrowed = tempfile::tempdir().unwrap();
    std::fs::copy(cluster_tls.join("ca.crt"), borrowed.path().join("ca.crt")).unwrap();
    copy_identity(&cluster_tls, "a-meta-1", borrowed.path(), "a-core-2");
    let mut options = NetworkOptions::from_config(cluster.config(), &["a-core-2"]);
    if let Some(tls) = options.tls.as_mut() {
        tls.dir = borrowed.path().to_path_buf();
    }
    let err = Network::new(options).unwrap_err().to_string();
    assert!(err.contains("does not name \"a-core-2\""), "{err}");

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
    let addr2 = cluster.addr("a-core-2").unwrap();
    let config = swapped(&cluster, "a-core-1", "a-core-2");
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
