//! meta-kvs system tests: replication, leader failover, isolation, restart.

use std::time::Duration;

use geonfs_meta_kvs::{MetaClient, MetaError, MetaOptions};
use geonfs_proto::meta::{condition, operation, Condition, KeyValue, Operation, TxnRequest};
use geonfs_testkit::cluster::TestCluster;

use crate::support::{eventually, init_logging};

const DEADLINE: Duration = Duration::from_secs(30);

async fn cluster(sites: u8, meta_per_site: u8, options: MetaOptions) -> TestCluster {
    init_logging();
    TestCluster::builder()
        .sites(sites)
        .cores_per_site(2)
        .access_per_site(0)
        .meta_per_site(meta_per_site)
        .meta_options(options)
        .start()
        .await
        .expect("cluster starts")
}

async fn leader(cluster: &TestCluster) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some(name) = cluster.meta_leader().await {
            return name;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no meta leader within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cas(key: &str, version: u64, value: &str) -> TxnRequest {
    TxnRequest {
        conditions: vec![Condition {
            key: key.as_bytes().to_vec().into(),
            test: Some(condition::Test::VersionEquals(version)),
        }],
        operations: vec![Operation {
            op: Some(operation::Op::Put(KeyValue {
                key: key.as_bytes().to_vec().into(),
                value: value.as_bytes().to_vec().into(),
                version: 0,
            })),
        }],
    }
}

async fn semantics(client: &MetaClient, client2: &MetaClient) {
    let v1 = client.put("k1", "one").await.expect("put");
    let got = client.get("k1").await.expect("get").expect("present");
    assert_eq!(&got.value[..], b"one");
    assert_eq!(got.version, v1);
    let v2 = client.put("k1", "two").await.expect("put again");
    assert!(v2 > v1, "versions are monotonic: {v1} then {v2}");
    client.put("k2", "x").await.expect("put k2");
    client.put("k3", "y").await.expect("put k3");
    let (kvs, more) = client.scan("k", "l", 2).await.expect("scan");
    assert_eq!(
        kvs.iter().map(|kv| &kv.key[..]).collect::<Vec<_>>(),
        vec![b"k1", b"k2"]
    );
    assert!(more);
    assert!(client.delete("k2").await.expect("delete"));
    assert!(client.get("k2").await.expect("get deleted").is_none());
    assert!(!client.delete("k2").await.expect("delete again"));
    // Invalid input is refused clearly.
    match client.put("", "v").await {
        Err(MetaError::Rpc(status)) => assert_eq!(status.code(), tonic::Code::InvalidArgument),
        other => panic!("empty key accepted: {other:?}"),
    }
    // Txn: condition on version.
    let reply = client.txn(cas("k1", v1, "stale")).await.expect("txn");
    assert!(!reply.succeeded);
    let reply = client.txn(cas("k1", v2, "three")).await.expect("txn");
    assert!(reply.succeeded && reply.version > v2);
    // Two clients race a conditional txn on one key: exactly one wins.
    let v = client.put("race", "0").await.expect("put race");
    let (a, b) = tokio::join!(
        client.txn(cas("race", v, "a")),
        client2.txn(cas("race", v, "b"))
    );
    let (a, b) = (a.expect("txn a"), b.expect("txn b"));
    assert!(
        a.succeeded ^ b.succeeded,
        "exactly one txn wins: {a:?} {b:?}"
    );
    let winner = client.get("race").await.expect("get").expect("present");
    assert_eq!(&winner.value[..], if a.succeeded { b"a" } else { b"b" });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_three_voters_semantics() {
    let cluster = cluster(3, 1, MetaOptions::default()).await;
    leader(&cluster).await;
    let c1 = cluster.meta_client("a-meta-1").unwrap();
    let c2 = cluster.meta_client("c-meta-1").unwrap();
    semantics(&c1, &c2).await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_five_voters_semantics() {
    let cluster = cluster(1, 5, MetaOptions::default()).await;
    leader(&cluster).await;
    let c1 = cluster.meta_client("a-meta-1").unwrap();
    let c2 = cluster.meta_client("a-meta-5").unwrap();
    semantics(&c1, &c2).await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_leader_kill_failover_and_snapshot_catch_up() {
    let mut cluster = cluster(3, 1, MetaOptions::default().with_compaction(20, 5)).await;
    let old = leader(&cluster).await;
    let from = cluster
        .meta_names()
        .into_iter()
        .find(|n| *n != old)
        .unwrap();
    let client = cluster.meta_client(&from).unwrap();
    let mut acked = Vec::new();
    for i in 0..10 {
        let key = format!("before-{i}");
        client.put(key.clone(), "v").await.expect("put before kill");
        acked.push(key);
    }
    cluster.kill_node(&old).await.unwrap();
    let new = leader(&cluster).await;
    assert_ne!(new, old);
    for i in 0..60 {
        let key = format!("after-{i}");
        client.put(key.clone(), "v").await.expect("put after kill");
        acked.push(key);
    }
    for key in &acked {
        assert!(
            client.get(key.clone()).await.expect("get").is_some(),
            "{key} lost"
        );
    }
    cluster.restart_node(&old).await.unwrap();
    let status = cluster
        .node(&new)
        .unwrap()
        .meta()
        .unwrap()
        .status()
        .await
        .unwrap();
    let target = status.commit;
    eventually(DEADLINE, "the restarted member catches up", || {
        let member = cluster.node(&old).unwrap().meta().unwrap();
        async move {
            member
                .status()
                .await
                .map(|s| s.applied >= target)
                .unwrap_or(false)
        }
    })
    .await;
    let member = cluster.node(&old).unwrap().meta().unwrap();
    assert!(
        member.metrics().snapshots_received.get() >= 1,
        "caught up by snapshot"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_isolated_leader_serves_no_stale_read() {
    let cluster = cluster(3, 1, MetaOptions::default()).await;
    let old = leader(&cluster).await;
    let others: Vec<String> = cluster
        .meta_names()
        .into_iter()
        .filter(|n| *n != old)
        .collect();
    let client = cluster.meta_client(&others[0]).unwrap();
    client.put("x", "old").await.expect("put");
    // Cut the leader off from the other voters only: clients can still
    // reach it, so a stale read would get through if Raft allowed one.
    for other in &others {
        cluster.cut_nodes(&old, other).unwrap();
    }
    let site = cluster.config().node(&old).unwrap().site;
    let site_name = cluster.config().site(site).name.clone();
    let direct = MetaClient::new(
        cluster.network().clone(),
        cluster.addr(&format!("{site_name}-core-1")).unwrap().ip(),
        vec![cluster.addr(&old).unwrap()],
    )
    .with_deadline(Duration::from_secs(4));
    let new_version = client
        .put("x", "new")
        .await
        .expect("the majority takes the write");
    // The cut-off leader cannot have committed it (nor anything after).
    let cut_off = cluster
        .node(&old)
        .unwrap()
        .meta()
        .unwrap()
        .status()
        .await
        .unwrap();
    assert!(
        cut_off.commit < new_version,
        "{old} committed index {} without a majority (write at {new_version})",
        cut_off.commit
    );
    // From now on "old" is stale. The cut-off leader cannot confirm its
    // leadership, so a read through it fails or (following a leader hint to
    // the new leader) returns the new value; never the old one.
    for _ in 0..3 {
        match direct.get("x").await {
            Err(err) => println!("read through the cut-off leader failed: {err}"),
            Ok(kv) => {
                let kv = kv.expect("x exists");
                assert_eq!(&kv.value[..], b"new", "stale read through {old}");
            }
        }
    }
    let got = client.get("x").await.expect("get").expect("present");
    assert_eq!(&got.value[..], b"new");
    let new = leader(&cluster).await;
    assert_ne!(new, old);
    cluster.heal_all();
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_full_stop_and_restart_keeps_acknowledged_writes() {
    let mut cluster = cluster(3, 1, MetaOptions::default().with_compaction(30, 10)).await;
    leader(&cluster).await;
    let client = cluster.meta_client("a-meta-1").unwrap();
    let mut acked = Vec::new();
    for i in 0..50 {
        let key = format!("k-{i:03}");
        let version = client.put(key.clone(), format!("v{i}")).await.expect("put");
        acked.push((key, version));
    }
    for name in cluster.meta_names() {
        cluster.stop_node(&name).await.unwrap();
    }
    for name in cluster.meta_names() {
        cluster.restart_node(&name).await.unwrap();
    }
    leader(&cluster).await;
    let client = cluster.meta_client("b-meta-1").unwrap();
    for (i, (key, version)) in acked.iter().enumerate() {
        let kv = client.get(key.clone()).await.expect("get").expect("kept");
        assert_eq!(kv.version, *version);
        assert_eq!(kv.value, format!("v{i}").into_bytes());
    }
    cluster.shutdown().await.unwrap();
}
