//! The test-cluster builder itself: shape, addresses, stop/kill/restart,
//! teardown without leaks.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::nfs_client::{mount, nfs_fh3, NfsConn};

use crate::support::{eventually, init_logging, ping};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_cluster_has_the_documented_shape() {
    init_logging();
    let cluster = TestCluster::builder().start().await.unwrap();
    let names = cluster.node_names();
    assert_eq!(names.len(), 3 * (3 + 1 + 1), "{names:?}");
    let mut addresses = BTreeSet::new();
    for name in &names {
        let addr = cluster.addr(name).unwrap();
        assert_ne!(addr.port(), 0, "ports are read back");
        assert!(
            addresses.insert(addr.ip()),
            "every node has its own address"
        );
        let site = cluster.config().node(name).unwrap().site;
        let expected_octet = site.0 + 1;
        match addr.ip() {
            IpAddr::V4(ip) => {
                assert_eq!(u16::from(ip.octets()[1]), expected_octet, "{name} at {ip}")
            }
            IpAddr::V6(ip) => panic!("{name} has IPv6 address {ip}"),
        }
        // Every node answers, from a node of another site too.
        let reply = ping(&cluster.channel("c-core-3", name).unwrap(), vec![])
            .await
            .unwrap();
        let identity = reply.node.unwrap();
        assert_eq!(&identity.name, name);
        assert_eq!(
            identity.incarnation,
            cluster.node(name).unwrap().identity().incarnation
        );
    }
    assert_eq!(
        cluster.addr("a-access-1").unwrap().ip().to_string(),
        "127.1.0.1"
    );
    assert_eq!(
        cluster.addr("b-core-2").unwrap().ip().to_string(),
        "127.2.0.12"
    );
    assert_eq!(
        cluster.addr("c-meta-1").unwrap().ip().to_string(),
        "127.3.0.21"
    );
    assert_eq!(cluster.config().cluster.replication_factor, 3);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_stop_die_and_restart_on_the_same_address() {
    init_logging();
    let mut cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(3)
        .access_per_site(0)
        .start()
        .await
        .unwrap();
    let to_2 = cluster.channel("a-core-1", "a-core-2").unwrap();
    let first = ping(&to_2, vec![]).await.unwrap().node.unwrap().incarnation;

    cluster.kill_node("a-core-2").await.unwrap();
    assert!(!cluster.is_running("a-core-2"));
    // The open connection was reset: UNAVAILABLE or, when the reset races
    // the request, UNKNOWN ("connection reset") or CANCELLED ("connection
    // closed", seen on a fresh-clone CI run); either way no answer.
    let status = ping(&to_2, vec![]).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    assert!(
        cluster.kill_node("a-core-2").await.is_err(),
        "a dead node cannot be killed twice"
    );

    cluster.restart_node("a-core-2").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let second = loop {
        match ping(&to_2, vec![]).await {
            Ok(reply) => break reply.node.unwrap().incarnation,
            Err(status) => assert!(
                std::time::Instant::now() < deadline,
                "the restarted node never answered on the same channel: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(first, second, "a restart changes the incarnation");

    cluster.stop_node("a-core-3").await.unwrap();
    let status = ping(&cluster.channel("a-core-1", "a-core-3").unwrap(), vec![])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        cluster.restart_node("a-core-1").await.is_err(),
        "a running node cannot be restarted"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_leaves_no_tasks_and_no_files() {
    init_logging();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let mut cluster = TestCluster::builder().sites(2).start().await.unwrap();
    let data_dir = cluster.data_dir().to_path_buf();
    assert!(data_dir.exists());
    {
        // Traffic on every kind of link, then a kill, so teardown has
        // connections, relays and dead nodes to clean up.
        let across = cluster.channel("a-core-1", "b-core-1").unwrap();
        let inside = cluster.channel("a-core-1", "a-core-2").unwrap();
        ping(&across, vec![1; 100_000]).await.unwrap();
        ping(&inside, vec![1; 100_000]).await.unwrap();
        cluster.kill_node("b-core-1").await.unwrap();
        assert!(ping(&across, vec![]).await.is_err());
    }
    assert!(metrics.num_alive_tasks() > baseline);
    cluster.shutdown().await.unwrap();
    assert!(!data_dir.exists(), "the data directory is removed");
    eventually(
        Duration::from_secs(10),
        "every task of the cluster ends",
        || {
            let alive = metrics.num_alive_tasks();
            async move { alive == baseline }
        },
    )
    .await;
}

/// A one-site cluster and a connection to its access server from a client
/// of the site, with an empty file `f` created.
async fn one_site_with_a_file() -> anyhow::Result<(TestCluster, IpAddr, NfsConn, nfs_fh3)> {
    let cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(3)
        .start()
        .await?;
    let addr = cluster
        .ready_access("a-access-1", Duration::from_secs(60))
        .await?;
    let from = IpAddr::from([127, 1, 0, 9]);
    let root = mount(from, addr, "/geonfs").await?;
    let mut conn = NfsConn::connect(from, addr).await?;
    let file = conn.create(&root, "f").await?;
    Ok((cluster, from, conn, file))
}

/// A killed access server's NFS connections end, as a killed process's
/// do: the client's next call fails at once instead of waiting forever
/// (the harness's transport turns the end of the stream into an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_on_a_killed_access_servers_connection_fails() -> anyhow::Result<()> {
    init_logging();
    let (mut cluster, _, mut conn, file) = one_site_with_a_file().await?;
    anyhow::ensure!(conn.size(&file).await? == 0);
    cluster.kill_node("a-access-1").await?;
    let after = tokio::time::timeout(Duration::from_secs(20), conn.size(&file))
        .await
        .map_err(|_| anyhow::anyhow!("a call on the killed server's connection hung"))?;
    anyhow::ensure!(after.is_err(), "answered after the kill: {after:?}");
    cluster.kill_all().await
}

/// An NFS call made while a restarted access server is not yet connected
/// to the cluster waits for it instead of failing with JUKEBOX (which
/// libnfs, hence QEMU and fio, take as an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_before_the_access_server_is_ready_waits_for_it() -> anyhow::Result<()> {
    init_logging();
    let (mut cluster, from, _, file) = one_site_with_a_file().await?;
    // The access server restarts while meta-kvs is down: it cannot be
    // ready until the voter is back, and a call made now must wait for
    // that (before, it was answered JUKEBOX at once and failed here).
    cluster.kill_node("a-meta-1").await?;
    cluster.kill_node("a-access-1").await?;
    cluster.restart_node("a-access-1").await?;
    let addr = cluster
        .node("a-access-1")?
        .access()
        .context("an access server")?
        .nfs_addr();
    let mut conn = NfsConn::connect(from, addr).await?;
    let call = tokio::spawn(async move { conn.size(&file).await });
    cluster.restart_node("a-meta-1").await?;
    let size = tokio::time::timeout(Duration::from_secs(30), call).await???;
    anyhow::ensure!(size == 0, "size {size}");
    cluster.kill_all().await
}
