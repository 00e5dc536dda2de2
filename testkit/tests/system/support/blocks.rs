//! Helpers shared by the block-path system tests (`blocks`, `replication`):
//! a block client at site a, per-core data clients, and who holds what.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use bytes::Bytes;
use geonfs_access_server::data::FileData;
use geonfs_access_server::ownership::Ownership;
use geonfs_block_manager::{BlockClient, ReplicatorMetrics, ReplicatorOptions};
use geonfs_meta_kvs::MetaClient;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::core::{BlockInfo, ListRequest, ReadRequest};
use geonfs_proto::domain::{BlockId, FileId};
use geonfs_testkit::cluster::TestCluster;

/// A 3 sites × 3 cores cluster with n = 3 and these replicator options.
pub(crate) async fn three_sites(options: ReplicatorOptions) -> TestCluster {
    TestCluster::builder()
        .sites(3)
        .cores_per_site(3)
        .replication_factor(3)
        .replication(options)
        .start()
        .await
        .unwrap()
}

/// The default replicator options, but trimming the extra local copy as
/// soon as the remote copies are durable (no trim delay): for the tests
/// that watch copies per site.
pub(crate) fn prompt_trims() -> ReplicatorOptions {
    ReplicatorOptions {
        trim_delay: std::time::Duration::ZERO,
        ..ReplicatorOptions::default()
    }
}

/// A block client writing at site a, from a-access-1's address.
pub(crate) fn block_client(cluster: &TestCluster) -> BlockClient {
    BlockClient::new(
        cluster.network().clone(),
        cluster.config(),
        cluster.addr("a-access-1").unwrap().ip(),
        cluster.site("a").unwrap(),
    )
    .unwrap()
}

/// The data path an access server at `from` builds (ownership over
/// meta-kvs, `from`'s site's block client, ungated), for a test to call
/// directly; `from` is any address of the site, a node's or not.
pub(crate) fn file_data_from(cluster: &TestCluster, from: IpAddr) -> FileData {
    let site = cluster.config().site_of(from).unwrap();
    let client = BlockClient::new(cluster.network().clone(), cluster.config(), from, site).unwrap();
    let meta = MetaClient::for_cluster(cluster.network().clone(), from, cluster.config());
    let ownership = Ownership::new(
        meta,
        cluster.config(),
        cluster.network().clone(),
        from,
        client,
    )
    .unwrap();
    FileData::new(ownership, cluster.config().cluster.block_size)
}

/// [`file_data_from`] a-access-1's address (site a).
pub(crate) fn site_a_file_data(cluster: &TestCluster) -> FileData {
    file_data_from(cluster, cluster.addr("a-access-1").unwrap().ip())
}

/// A data client to `core` from its own site's access node (or, in a
/// cluster without one, from the core itself), so cuts between sites do not
/// stop the test from looking.
pub(crate) fn core_client(
    cluster: &TestCluster,
    core: &str,
) -> CoreDataClient<geonfs_rpc::RpcChannel> {
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
pub(crate) async fn inventory(cluster: &TestCluster) -> BTreeMap<String, Vec<BlockInfo>> {
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
pub(crate) async fn holders(cluster: &TestCluster, block: BlockId) -> BTreeMap<String, BlockInfo> {
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
pub(crate) fn id(file_id: u64, index: u64) -> BlockId {
    BlockId {
        file_id: FileId(file_id),
        index,
    }
}

/// Reads `len` bytes of `core`'s copy of `block`: (version, data).
pub(crate) async fn read_copy(
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
pub(crate) fn pattern(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Copies per site letter.
pub(crate) fn per_site(held: &BTreeMap<String, BlockInfo>) -> BTreeMap<char, usize> {
    let mut count = BTreeMap::new();
    for name in held.keys() {
        *count.entry(name.chars().next().unwrap()).or_default() += 1;
    }
    count
}

/// The replicator metrics of every running core whose name starts with
/// `prefix` (`""` for every site).
pub(crate) fn replicator_metrics(cluster: &TestCluster, prefix: &str) -> Vec<ReplicatorMetrics> {
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
pub(crate) fn repairs(cluster: &TestCluster, prefix: &str, kind: &str) -> u64 {
    replicator_metrics(cluster, prefix)
        .iter()
        .map(|m| m.repairs.with_label_values(&[kind]).get())
        .sum()
}

/// Cuts site a's `core` from every core of the other sites (it can no
/// longer ship its geo copies; its own site still reaches it).
pub(crate) fn cut_from_other_sites(cluster: &TestCluster, core: &str) {
    for other in cluster.core_names() {
        if !other.starts_with("a-") {
            cluster.cut_nodes(core, &other).unwrap();
        }
    }
}

/// Flips one byte of the first stored chunk of `block` in the block store
/// under `data_dir` (the node must be stopped). The chunk key layout is
/// the store's on-disk format: `c | file_id BE | index BE | chunk BE`.
pub(crate) fn damage_first_chunk(data_dir: &Path, block: BlockId) {
    let db = rocksdb::DB::open_default(data_dir.join("blocks")).unwrap();
    let mut prefix = vec![b'c'];
    prefix.extend_from_slice(&block.file_id.0.to_be_bytes());
    prefix.extend_from_slice(&block.index.to_be_bytes());
    let (key, mut value) = db
        .prefix_iterator(&prefix)
        .map(Result::unwrap)
        .find(|(key, _)| key.starts_with(&prefix))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .expect("the block has a stored chunk");
    // Past the 4-byte checksum header: a data byte.
    value[100] ^= 0x5a;
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    db.put_opt(&key, &value, &options).unwrap();
}

/// Stops `core`, damages its copy of `block` on disk, starts it again.
pub(crate) async fn corrupt_on_disk(cluster: &mut TestCluster, core: &str, block: BlockId) {
    let data_dir = cluster
        .config()
        .node(core)
        .and_then(|n| n.data_dir.clone())
        .unwrap();
    cluster.stop_node(core).await.unwrap();
    damage_first_chunk(&data_dir, block);
    cluster.restart_node(core).await.unwrap();
}

/// Whether `core`'s copy of `block` reads back whole as `data`.
pub(crate) async fn copy_is_good(
    cluster: &TestCluster,
    core: &str,
    block: BlockId,
    data: &[u8],
) -> bool {
    let reply = core_client(cluster, core)
        .read(ReadRequest {
            block: Some(block.into()),
            offset: 0,
            length: data.len() as u32,
            with_pending_job: false,
            owner_epoch: 0,
        })
        .await;
    matches!(reply, Ok(r) if r.get_ref().found && r.get_ref().data == data)
}
