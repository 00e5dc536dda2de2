//! The access server's file-data path ([`FileData`]) against a real
//! cluster: block splitting, sparse reads, the attribute record (size and
//! mtime durable on the cores, read back by a new instance, never shrunk by
//! concurrent writers), the COMMIT verifier across a core restart,
//! truncation and removal; plus [`BlockClient::delete`].

use std::time::Duration;

use bytes::Bytes;
use geonfs_access_server::data::{attr_block, FileData};
use geonfs_proto::domain::{Durability, FileId, Version};
use geonfs_testkit::cluster::TestCluster;

use crate::support::blocks::{block_client, holders, id, inventory, pattern, site_a_file_data};
use crate::support::{eventually, init_logging};

/// The smallest block size the configuration allows: many blocks per test.
const BS: u64 = 64 * 1024;

/// One site of three cores, without the geo-replication workers (they
/// would move copies under the inventory checks).
async fn start() -> TestCluster {
    TestCluster::builder()
        .sites(1)
        .cores_per_site(3)
        .block_size(BS)
        .without_replication()
        .start()
        .await
        .unwrap()
}

fn file_data(cluster: &TestCluster) -> FileData {
    site_a_file_data(cluster)
}

/// The blocks of `file_id` held by any core: (core, index).
async fn blocks_of(cluster: &TestCluster, file_id: u64) -> Vec<(String, u64)> {
    inventory(cluster)
        .await
        .into_iter()
        .flat_map(|(core, blocks)| {
            blocks
                .into_iter()
                .filter_map(|b| b.block)
                .filter(|b| b.file_id == file_id)
                .map(move |b| (core.clone(), b.index))
        })
        .collect()
}

/// The distinct block indexes of `file_id` held by any core, sorted.
async fn block_indexes(cluster: &TestCluster, file_id: u64) -> Vec<u64> {
    let mut indexes: Vec<u64> = blocks_of(cluster, file_id)
        .await
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    indexes.sort();
    indexes.dedup();
    indexes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_write_across_a_block_boundary_reads_back() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    let bytes = pattern(7, 10_000);
    let offset = BS - 5_000;
    let written = data
        .write(FileId(1), offset, bytes.clone(), true)
        .await
        .unwrap();
    assert!(written.durable);
    assert_eq!(written.size, offset + 10_000);
    assert_eq!(written.verifier, data.verifier());

    let (read, eof) = data
        .read(FileId(1), offset, 10_000, written.size)
        .await
        .unwrap();
    assert_eq!(read, bytes);
    assert!(eof);
    let (read, eof) = data
        .read(FileId(1), BS - 100, 200, written.size)
        .await
        .unwrap();
    assert_eq!(&read[..], &bytes[4_900..5_100]);
    assert!(!eof);
    // Clamped to the size.
    let (read, eof) = data
        .read(FileId(1), offset, 1 << 20, written.size)
        .await
        .unwrap();
    assert_eq!(read, bytes);
    assert!(eof);
    let (read, eof) = data
        .read(FileId(1), written.size, 10, written.size)
        .await
        .unwrap();
    assert!(read.is_empty() && eof);

    // Both blocks and the record are durable on two cores each.
    for index in [0, 1] {
        let held = holders(&cluster, id(1, index)).await;
        assert_eq!(held.len(), 2, "block {index}: {held:?}");
        assert!(held.values().all(|i| i.durable), "{held:?}");
    }
    let record = holders(&cluster, attr_block(FileId(1))).await;
    assert_eq!(record.len(), 2, "{record:?}");
    assert!(record.values().all(|i| i.durable), "{record:?}");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_unaligned_writes_match_a_model() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    let mut model = vec![0u8; 0];
    let writes: [(u64, usize); 6] = [
        (3, 1_000),
        (BS - 1, 2),
        (2 * BS + 12_345, 70_000),
        (500, 4_097),
        (BS * 3 - 7, 14),
        (BS + 1, BS as usize),
    ];
    let mut size = 0;
    for (n, (offset, len)) in writes.into_iter().enumerate() {
        let bytes = pattern(n as u8 + 1, len);
        let end = offset as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[offset as usize..end].copy_from_slice(&bytes);
        let written = data
            .write(FileId(2), offset, bytes, n % 2 == 0)
            .await
            .unwrap();
        size = written.size;
        assert_eq!(size, model.len() as u64);
    }
    data.commit(FileId(2)).await.unwrap();
    let (read, eof) = data.read(FileId(2), 0, u32::MAX, size).await.unwrap();
    assert!(eof);
    assert_eq!(read.len(), model.len());
    assert!(read[..] == model[..], "file content differs from the model");
    // Odd ranges.
    for (offset, len) in [
        (1u64, 3u32),
        (BS - 3, 9),
        (2 * BS + 12_340, 20),
        (BS * 3 - 10, 30),
    ] {
        let (read, _) = data.read(FileId(2), offset, len, size).await.unwrap();
        assert_eq!(
            &read[..],
            &model[offset as usize..offset as usize + len as usize]
        );
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_sparse_ranges_read_as_zeros() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    let offset = 3 * BS + 17;
    let bytes = pattern(9, 100);
    let written = data
        .write(FileId(3), offset, bytes.clone(), true)
        .await
        .unwrap();
    assert_eq!(written.size, offset + 100);
    let (read, eof) = data
        .read(FileId(3), 0, u32::MAX, written.size)
        .await
        .unwrap();
    assert!(eof);
    assert_eq!(read.len() as u64, written.size);
    assert!(read[..offset as usize].iter().all(|&b| b == 0));
    assert_eq!(&read[offset as usize..], &bytes[..]);
    // Never-written blocks take no space.
    assert_eq!(block_indexes(&cluster, 3).await, vec![3, u64::MAX]);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_attributes_survive_a_new_instance() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    assert_eq!(data.attributes(FileId(4)).await.unwrap(), None);
    data.write(FileId(4), 0, pattern(1, 5_000), true)
        .await
        .unwrap();
    let last = data
        .write(FileId(4), 2 * BS, pattern(2, 300), false)
        .await
        .unwrap();
    assert_eq!(last.size, 2 * BS + 300);
    assert_eq!(
        data.attributes(FileId(4)).await.unwrap(),
        Some((last.size, last.mtime))
    );
    data.commit(FileId(4)).await.unwrap();
    drop(data);

    let fresh = file_data(&cluster);
    assert_eq!(
        fresh.attributes(FileId(4)).await.unwrap(),
        Some((last.size, last.mtime)),
        "the attribute record read back from the cores"
    );
    // A write into the middle after reloading keeps the size.
    let mid = fresh
        .write(FileId(4), 10, pattern(3, 10), true)
        .await
        .unwrap();
    assert_eq!(mid.size, last.size);
    assert!(mid.mtime >= last.mtime);
    let again = file_data(&cluster);
    assert_eq!(
        again.attributes(FileId(4)).await.unwrap(),
        Some((mid.size, mid.mtime))
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_concurrent_writers_never_shrink_the_size() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    const WRITERS: u64 = 16;
    const ROUNDS: u64 = 4;
    const CHUNK: u64 = 4096;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let data = data.clone();
            tokio::spawn(async move {
                let mut sizes = Vec::new();
                for round in 0..ROUNDS {
                    // Interleaved: each round every writer extends the file.
                    let offset = (round * WRITERS + w) * CHUNK;
                    let stable = (w + round) % 3 == 0;
                    let written = data
                        .write(FileId(5), offset, pattern(w as u8, CHUNK as usize), stable)
                        .await
                        .unwrap();
                    assert!(written.size >= offset + CHUNK);
                    sizes.push(written.size);
                }
                sizes
            })
        })
        .collect();
    for task in tasks {
        let sizes = task.await.unwrap();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    }
    let expected = WRITERS * ROUNDS * CHUNK;
    data.commit(FileId(5)).await.unwrap();
    assert_eq!(
        data.attributes(FileId(5)).await.unwrap().unwrap().0,
        expected
    );
    // What the cores hold is the largest size, not the last to arrive.
    let fresh = file_data(&cluster);
    assert_eq!(
        fresh.attributes(FileId(5)).await.unwrap().unwrap().0,
        expected
    );
    let (read, _) = fresh.read(FileId(5), 0, u32::MAX, expected).await.unwrap();
    for (n, chunk) in read.chunks(CHUNK as usize).enumerate() {
        let w = n as u64 % WRITERS;
        assert_eq!(chunk, &pattern(w as u8, CHUNK as usize)[..], "chunk {n}");
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_commit_keeps_the_verifier_without_a_restart() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    let written = data
        .write(FileId(6), 100, pattern(4, 8_000), false)
        .await
        .unwrap();
    assert!(!written.durable);
    let held = holders(&cluster, id(6, 0)).await;
    assert!(held.values().all(|i| !i.durable), "{held:?}");
    let verifier = data.commit(FileId(6)).await.unwrap();
    assert_eq!(verifier, written.verifier);
    let held = holders(&cluster, id(6, 0)).await;
    assert_eq!(held.len(), 2);
    assert!(held.values().all(|i| i.durable), "{held:?}");
    assert!(holders(&cluster, attr_block(FileId(6)))
        .await
        .values()
        .all(|i| i.durable));
    // A commit with nothing pending returns it too.
    assert_eq!(data.commit(FileId(6)).await.unwrap(), verifier);
    assert_eq!(data.commit(FileId(999)).await.unwrap(), verifier);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_commit_after_a_core_restart_returns_a_new_verifier() {
    init_logging();
    let mut cluster = start().await;
    let data = file_data(&cluster);
    let written = data
        .write(FileId(7), 0, pattern(5, 4_096), false)
        .await
        .unwrap();
    let held = holders(&cluster, id(7, 0)).await;
    assert_eq!(held.len(), 2, "{held:?}");
    let victim = held.keys().next().unwrap().clone();
    cluster.kill_node(&victim).await.unwrap();
    cluster.restart_node(&victim).await.unwrap();
    // Wait until the restarted core answers again (so the new verifier
    // comes from its incarnation, not from an unreachable core).
    let client = block_client(&cluster);
    eventually(
        Duration::from_secs(30),
        "the restarted core answers a flush",
        || {
            let client = client.clone();
            let victim = victim.clone();
            async move { client.flush(&[victim.as_str()]).await.is_ok() }
        },
    )
    .await;

    let verifier = data.commit(FileId(7)).await.unwrap();
    assert_ne!(
        verifier, written.verifier,
        "a core that held the write restarted"
    );
    assert_eq!(data.verifier(), verifier);

    // The client resends under the new verifier; the next commit keeps it.
    let resent = data
        .write(FileId(7), 0, pattern(5, 4_096), false)
        .await
        .unwrap();
    assert_eq!(resent.verifier, verifier);
    assert_eq!(data.commit(FileId(7)).await.unwrap(), verifier);
    let (read, _) = data.read(FileId(7), 0, 4_096, resent.size).await.unwrap();
    assert_eq!(read, pattern(5, 4_096));
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_truncate_then_extend_reads_zeros() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    let full = 3 * BS;
    data.write(FileId(8), 0, Bytes::from(vec![0xAB; full as usize]), true)
        .await
        .unwrap();
    let cut = BS + 100;
    data.set_size(FileId(8), full, cut).await.unwrap();
    assert_eq!(data.attributes(FileId(8)).await.unwrap().unwrap().0, cut);
    assert_eq!(
        block_indexes(&cluster, 8).await,
        vec![0, 1, u64::MAX],
        "block 2 is deleted"
    );

    data.set_size(FileId(8), cut, full).await.unwrap();
    let fresh = file_data(&cluster);
    assert_eq!(fresh.attributes(FileId(8)).await.unwrap().unwrap().0, full);
    let (read, eof) = fresh.read(FileId(8), 0, u32::MAX, full).await.unwrap();
    assert!(eof);
    assert_eq!(read.len() as u64, full);
    assert!(read[..cut as usize].iter().all(|&b| b == 0xAB));
    assert!(
        read[cut as usize..].iter().all(|&b| b == 0),
        "the truncated range reads as zeros after extending"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_remove_deletes_every_block() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    data.write(FileId(9), BS / 2, pattern(6, 2 * BS as usize), false)
        .await
        .unwrap();
    data.write(FileId(10), 0, pattern(6, 10), true)
        .await
        .unwrap();
    assert!(!blocks_of(&cluster, 9).await.is_empty());
    data.remove(FileId(9)).await.unwrap();
    assert_eq!(blocks_of(&cluster, 9).await, vec![]);
    assert_eq!(data.attributes(FileId(9)).await.unwrap(), None);
    assert_eq!(
        file_data(&cluster).attributes(FileId(9)).await.unwrap(),
        None
    );
    // Another file is untouched.
    assert_eq!(blocks_of(&cluster, 10).await.len(), 4);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_block_delete_respects_up_to_version() {
    init_logging();
    let cluster = start().await;
    let client = block_client(&cluster);
    let block = id(11, 0);
    client
        .write(block, 0, pattern(1, 100), Version(5), Durability::Durable)
        .await
        .unwrap();
    assert_eq!(
        client.delete(block, Version(4)).await.unwrap(),
        0,
        "a newer copy is kept"
    );
    assert_eq!(holders(&cluster, block).await.len(), 2);
    assert_eq!(client.delete(block, Version(5)).await.unwrap(), 2);
    assert!(holders(&cluster, block).await.is_empty());
    assert_eq!(client.delete(block, Version(5)).await.unwrap(), 0);
    // The delete left tombstones: the block reads as zeros at version 5.
    let read = client.read(block, 0, 10).await.unwrap().unwrap();
    assert!(read.deleted && read.version == Version(5), "{read:?}");
    assert_eq!(&read.data[..], &[0; 10]);
    cluster.shutdown().await.unwrap();
}

/// A client streaming small writes at a high queue depth puts them all
/// into one block: they are sent in merged batches (not raced to the cores
/// and refused as stale), every one succeeds, later writes win where they
/// overlap, and far fewer block writes than NFS writes reach the cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_data_concurrent_writes_into_one_block_are_batched() {
    init_logging();
    let cluster = start().await;
    let data = file_data(&cluster);
    let client = data.ownership().local().clone();
    const WRITES: u64 = 64;
    const LEN: u64 = BS / WRITES;
    let mut model = vec![0u8; BS as usize];
    let mut writes = Vec::new();
    for n in 0..WRITES {
        // Every fourth write also overwrites half of the one before it.
        let offset = if n % 4 == 3 {
            n * LEN - LEN / 2
        } else {
            n * LEN
        };
        let bytes = pattern(n as u8, LEN as usize);
        model[offset as usize..(offset + LEN) as usize].copy_from_slice(&bytes);
        if n == 0 {
            // Loads the file's state: the others then queue in the order
            // they are issued (which the overlaps check).
            data.write(FileId(9), offset, bytes, true).await.unwrap();
        } else {
            writes.push(data.write(FileId(9), offset, bytes, n % 8 == 0));
        }
    }
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    data.commit(FileId(9)).await.unwrap();
    let sent = client.metrics().writes.get();
    assert!(
        sent <= WRITES / 2,
        "{sent} block writes (data and record) for {WRITES} concurrent writes"
    );
    let fresh = file_data(&cluster);
    let size = fresh.attributes(FileId(9)).await.unwrap().unwrap().0;
    assert_eq!(size, (WRITES - 1) * LEN + LEN / 2);
    let (read, _) = fresh.read(FileId(9), 0, BS as u32, size).await.unwrap();
    assert!(
        read[..] == model[..size as usize],
        "content differs from the model"
    );
    cluster.shutdown().await.unwrap();
}
