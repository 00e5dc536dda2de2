//! meta-kvs membership changes end to end, through the functions the
//! `geonfs meta …` subcommands call: learners, promotion, removal, growing
//! to five voters, refused changes; and the per-node metrics registry.

use std::time::Duration;

use geonfs::meta_cli;
use geonfs::node::Registry;
use geonfs_meta_kvs::{raft_id, MetaError, MetaOptions};
use geonfs_proto::meta::membership_request::Change;
use geonfs_proto::meta::Member;
use geonfs_testkit::cluster::TestCluster;

use crate::support::{eventually, init_logging};

const DEADLINE: Duration = Duration::from_secs(30);

/// 3 sites × 2 meta nodes; the `voters` first (`a-meta-1`, `b-meta-1`, …)
/// are initial voters, the others spares.
async fn cluster(voters: usize) -> TestCluster {
    init_logging();
    TestCluster::builder()
        .sites(3)
        .cores_per_site(2)
        .access_per_site(0)
        .meta_per_site(2)
        .meta_voters(voters)
        .meta_options(MetaOptions::default())
        .start()
        .await
        .expect("cluster starts")
}

async fn change(cluster: &TestCluster, change: Change, name: &str) -> anyhow::Result<Vec<Member>> {
    meta_cli::change_membership(cluster.config(), cluster.network(), change, name).await
}

async fn members(cluster: &TestCluster) -> Vec<Member> {
    meta_cli::members(cluster.config(), cluster.network())
        .await
        .expect("members")
}

fn role(members: &[Member], name: &str) -> Option<bool> {
    members.iter().find(|m| m.name == name).map(|m| m.voter)
}

async fn applied(cluster: &TestCluster, name: &str) -> u64 {
    let Ok(node) = cluster.node(name) else {
        return 0;
    };
    match node.meta().map(|m| m.status()) {
        Some(status) => status.await.map_or(0, |s| s.applied),
        None => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_catches_up_is_promoted_and_a_voter_is_removed() {
    let cluster = cluster(3).await;
    let client = cluster.meta_client("a-core-1").expect("client");
    let version = client.put("before", "learner").await.expect("put");

    // A spare is not a member until added.
    let start = members(&cluster).await;
    assert_eq!(start.len(), 3, "{start:?}");
    assert_eq!(role(&start, "a-meta-2"), None);

    let after = change(&cluster, Change::AddLearner, "a-meta-2")
        .await
        .expect("add learner");
    assert_eq!(role(&after, "a-meta-2"), Some(false), "{after:?}");
    // It catches up (by snapshot: it has no configuration of its own).
    eventually(
        DEADLINE,
        "the learner applies the earlier write",
        || async { applied(&cluster, "a-meta-2").await >= version },
    )
    .await;
    let learner = cluster
        .node("a-meta-2")
        .expect("learner")
        .meta()
        .expect("meta");
    let status = learner.status().await.expect("status");
    assert!(status.learners.contains(&raft_id("a-meta-2")), "{status:?}");
    assert!(!status.voters.contains(&raft_id("a-meta-2")), "{status:?}");

    let after = change(&cluster, Change::PromoteLearner, "a-meta-2")
        .await
        .expect("promote");
    assert_eq!(role(&after, "a-meta-2"), Some(true), "{after:?}");
    assert_eq!(role(&members(&cluster).await, "a-meta-2"), Some(true));

    // Remove an original voter that does not lead.
    let leader = cluster.meta_leader().await.expect("a leader");
    let removed = ["a-meta-1", "b-meta-1", "c-meta-1"]
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    let after = change(&cluster, Change::Remove, removed)
        .await
        .expect("remove");
    assert_eq!(role(&after, removed), None, "{after:?}");
    assert_eq!(after.iter().filter(|m| m.voter).count(), 3, "{after:?}");
    assert_eq!(role(&members(&cluster).await, removed), None);

    // Writes continue; the removed node no longer receives entries.
    let frozen = cluster
        .node(removed)
        .expect("removed node")
        .meta()
        .expect("meta")
        .status()
        .await
        .expect("status")
        .commit;
    let mut last = 0;
    for i in 0..5 {
        last = client
            .put(format!("after-{i}"), "v")
            .await
            .expect("put after removal");
    }
    assert!(last > frozen);
    eventually(
        DEADLINE,
        "the promoted member applies new writes",
        || async { applied(&cluster, "a-meta-2").await >= last },
    )
    .await;
    let status = cluster
        .node(removed)
        .expect("removed node")
        .meta()
        .expect("meta")
        .status()
        .await
        .expect("status");
    assert!(
        status.commit < last,
        "removed node still gets entries: {status:?}, last write {last}"
    );
    assert_ne!(
        status.leader_id, status.id,
        "the removed node leads: {status:?}"
    );
    let got = client.get("before").await.expect("get").expect("present");
    assert_eq!(&got.value[..], b"learner");

    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_to_five_voters_survive_two_failures() {
    let mut cluster = cluster(3).await;
    let client = cluster.meta_client("a-core-1").expect("client");
    client.put("k", "0").await.expect("put");
    for name in ["a-meta-2", "b-meta-2"] {
        let after = change(&cluster, Change::AddVoter, name)
            .await
            .unwrap_or_else(|err| panic!("add voter {name}: {err:#}"));
        assert_eq!(role(&after, name), Some(true), "{after:?}");
    }
    let now = members(&cluster).await;
    assert_eq!(now.iter().filter(|m| m.voter).count(), 5, "{now:?}");
    let version = client.put("k", "1").await.expect("put with 5 voters");
    // Both newcomers hold the data before two of the old voters die.
    eventually(DEADLINE, "the new voters catch up", || async {
        applied(&cluster, "a-meta-2").await >= version
            && applied(&cluster, "b-meta-2").await >= version
    })
    .await;
    cluster.kill_node("a-meta-1").await.expect("kill");
    cluster.kill_node("b-meta-1").await.expect("kill");
    // The put may meet the connection to a killed voter breaking: its
    // outcome is then unknown, and the same put is sent again (as any
    // client of meta-kvs does; it is idempotent).
    let deadline = std::time::Instant::now() + DEADLINE;
    let v2 = loop {
        match client.put("k", "2").await {
            Ok(v2) => break v2,
            Err(err @ MetaError::OutcomeUnknown(_)) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "3 of 5 voters commit: {err}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("3 of 5 voters commit: {err}"),
        }
    };
    assert!(v2 > version);
    let got = client.get("k").await.expect("get").expect("present");
    assert_eq!(&got.value[..], b"2");
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_changes_are_refused_clearly() {
    let cluster = cluster(3).await;
    let client = cluster.meta_client("a-core-1").expect("client");
    client.put("k", "v").await.expect("put");
    let refused = |result: anyhow::Result<Vec<Member>>, what: &str, expect: &str| {
        let err = format!("{:#}", result.expect_err(what));
        assert!(err.contains(expect), "{what}: {err}");
    };
    refused(
        change(&cluster, Change::Remove, "a-meta-2").await,
        "remove a non-member",
        "is not a member",
    );
    refused(
        change(&cluster, Change::PromoteLearner, "b-meta-1").await,
        "promote a voter",
        "already a voter, not a learner",
    );
    refused(
        change(&cluster, Change::PromoteLearner, "b-meta-2").await,
        "promote a non-member",
        "is not a learner",
    );
    refused(
        change(&cluster, Change::AddVoter, "c-meta-1").await,
        "add a voter twice",
        "already a voter",
    );
    refused(
        change(&cluster, Change::AddLearner, "nowhere-meta-9").await,
        "add an unknown name",
        "no node named \"nowhere-meta-9\"",
    );
    refused(
        change(&cluster, Change::AddLearner, "a-core-1").await,
        "add a node without the meta role",
        "does not have the meta role",
    );
    // Nothing changed, and the cluster still works.
    let now = members(&cluster).await;
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(now.iter().all(|m| m.voter));
    client.put("k", "w").await.expect("put after refusals");
    cluster.shutdown().await.expect("shutdown");
}

fn gauge(registry: &Registry, name: &str) -> Option<f64> {
    registry
        .gather()
        .iter()
        .find(|family| family.name() == name)
        .and_then(|family| {
            family
                .get_metric()
                .first()
                .map(|m| m.get_gauge().get_value())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_node_registry_has_its_meta_metrics() {
    let cluster = cluster(3).await;
    let client = cluster.meta_client("a-core-1").expect("client");
    let mut last = 0;
    for i in 0..3 {
        last = client.put(format!("m{i}"), "v").await.expect("put");
    }
    for name in ["a-meta-1", "b-meta-1", "c-meta-1"] {
        let registry = cluster.node(name).expect("node").registry().clone();
        eventually(DEADLINE, "metrics show the writes", || {
            let registry = registry.clone();
            async move {
                gauge(&registry, "geonfs_meta_commit_index").unwrap_or(0.0) >= last as f64
                    && gauge(&registry, "geonfs_meta_applied_index").unwrap_or(0.0) >= last as f64
            }
        })
        .await;
        let term = gauge(&registry, "geonfs_meta_term").expect("term gauge");
        assert!(term >= 1.0, "{name}: term {term}");
    }
    // RPC metrics are process-wide: not in a node's registry unless asked.
    let node = cluster.node("a-meta-1").expect("node");
    let has_rpc = |r: &Registry| {
        r.gather()
            .iter()
            .any(|f| f.name() == "geonfs_rpc_calls_total")
    };
    assert!(!has_rpc(node.registry()));
    node.register_network_metrics().expect("register once");
    assert!(has_rpc(node.registry()), "RPC calls were made");
    assert!(node.register_network_metrics().is_err(), "registered twice");
    // A core-only node has an (empty of meta) registry of its own.
    let core = cluster.node("a-core-1").expect("core");
    assert!(gauge(core.registry(), "geonfs_meta_term").is_none());
    // Every node says which build it runs.
    let build = core
        .registry()
        .gather()
        .into_iter()
        .find(|f| f.name() == "geonfs_build_info")
        .expect("geonfs_build_info");
    let labels: Vec<(String, String)> = build.get_metric()[0]
        .get_label()
        .iter()
        .map(|l| (l.name().to_string(), l.value().to_string()))
        .collect();
    assert!(
        labels.contains(&("version".to_string(), env!("CARGO_PKG_VERSION").to_string())),
        "{labels:?}"
    );
    assert!(
        labels.iter().any(|(n, v)| n == "commit" && !v.is_empty()),
        "{labels:?}"
    );
    assert_eq!(gauge(core.registry(), "geonfs_build_info"), Some(1.0));
    cluster.shutdown().await.expect("shutdown");
}
