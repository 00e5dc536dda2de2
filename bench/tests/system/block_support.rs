//! Helpers shared by the block-path system tests (`blocks`, `replication`):
//! a block client at site a, per-core data clients, and who holds what.

use std::collections::BTreeMap;

use bytes::Bytes;
use geonfs_bench::cluster::TestCluster;
use geonfs_block_manager::{BlockClient, ReplicatorMetrics, ReplicatorOptions};
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::core::{BlockInfo, ListRequest, ReadRequest};
use geonfs_proto::domain::BlockId;

/// A 3 sites × 3 cores cluster with n = 3 and these replicator options.
pub async fn three_sites(options: ReplicatorOptions) -> TestCluster {
    TestCluster::builder()
        .sites(3)
        .cores_per_site(3)
        .replication_factor(3)
        .replication(options)
        .start()
        .await
        .unwrap()
}

/// A block client writing at site a, from a-access-1's address.
pub fn block_client(cluster: &TestCluster) -> BlockClient {
    BlockClient::new(
        cluster.network().clone(),
        cluster.config(),
        cluster.addr("a-access-1").unwrap().ip(),
        cluster.site("a").unwrap(),
    )
    .unwrap()
}

/// A data client to `core` from its own site's access node (or, in a
/// cluster without one, from the core itself), so cuts between sites do not
/// stop the test from looking.
pub fn core_client(cluster: &TestCluster, core: &str) -> CoreDataClient<geonfs_rpc::RpcChannel> {
    let access = format!("{}-access-1", &core[..1]);
    let from = if cluster.addr(&access).is_ok() {
        access.as_str()
    } else {
        core
    };
    CoreDataClient::new(cluster.channel(from, core).unwrap())
        .max_decoding_message_size(8 * 1024 * 1024)
}

/// Every block each running core (of every site) holds.
pub async fn inventory(cluster: &TestCluster) -> BTreeMap<String, Vec<BlockInfo>> {
    let mut all = BTreeMap::new();
    for core in cluster.core_names() {
        if !cluster.is_running(&core) {
            continue;
        }
        let mut client = core_client(cluster, &core);
        let mut blocks = Vec::new();
        let mut start_after = None;
        loop {
            let page = client
                .list(ListRequest {
                    start_after,
                    limit: 1000,
                    deleted: false,
                })
                .await
                .unwrap()
                .into_inner();
            start_after = page.blocks.last().and_then(|b| b.block);
            blocks.extend(page.blocks);
            if !page.more {
                break;
            }
        }
        all.insert(core, blocks);
    }
    all
}

/// The cores (of every site) holding `block`, with its info there.
pub async fn holders(cluster: &TestCluster, block: BlockId) -> BTreeMap<String, BlockInfo> {
    inventory(cluster)
        .await
        .into_iter()
        .filter_map(|(core, blocks)| {
            blocks
                .into_iter()
                .find(|b| b.block == Some(block.into()))
                .map(|info| (core, info))
        })
        .collect()
}

/// Block `index` of file `file_id`.
pub fn id(file_id: u64, index: u64) -> BlockId {
    BlockId { file_id, index }
}

/// Reads `len` bytes of `core`'s copy of `block`: (version, data).
pub async fn read_copy(
    cluster: &TestCluster,
    core: &str,
    block: BlockId,
    len: u32,
) -> (u64, Bytes) {
    let reply = core_client(cluster, core)
        .read(ReadRequest {
            block: Some(block.into()),
            offset: 0,
            length: len,
            with_pending_job: false,
            owner_epoch: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.found, "{core} does not hold {block:?}");
    (reply.version, reply.data)
}

/// `len` bytes that differ by position and by `seed` (a misplaced or
/// stale range shows).
pub fn pattern(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Copies per site letter.
pub fn per_site(held: &BTreeMap<String, BlockInfo>) -> BTreeMap<char, usize> {
    let mut count = BTreeMap::new();
    for name in held.keys() {
        *count.entry(name.chars().next().unwrap()).or_default() += 1;
    }
    count
}

/// The replicator metrics of every running core whose name starts with
/// `prefix` (`""` for every site).
pub fn replicator_metrics(cluster: &TestCluster, prefix: &str) -> Vec<ReplicatorMetrics> {
    cluster
        .core_names()
        .iter()
        .filter(|n| n.starts_with(prefix) && cluster.is_running(n))
        .map(|n| {
            cluster
                .node(n)
                .unwrap()
                .core()
                .unwrap()
                .replicator_metrics()
                .clone()
        })
        .collect()
}

/// Copies restored of `kind` (`local_copy`, `remote_copy`) by the running
/// cores whose name starts with `prefix`.
pub fn repairs(cluster: &TestCluster, prefix: &str, kind: &str) -> u64 {
    replicator_metrics(cluster, prefix)
        .iter()
        .map(|m| m.repairs.with_label_values(&[kind]).get())
        .sum()
}

/// Cuts site a's `core` from every core of the other sites (it can no
/// longer ship its geo copies; its own site still reaches it).
pub fn cut_from_other_sites(cluster: &TestCluster, core: &str) {
    for other in cluster.core_names() {
        if !other.starts_with("a-") {
            cluster.cut_nodes(core, &other).unwrap();
        }
    }
}
