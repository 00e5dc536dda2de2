//! Tests of the block store (each on its own temporary directory).

mod changes;
mod copy_state;
mod delete;
mod disk_full;
mod fence;
mod quarantine;
mod queue;

use std::path::Path;

use geonfs_proto::domain::{
    BlockId, BlockRange, BlockRead, BlockWrite, Durability, FileId, Version, WriteBase,
};
use proptest::prelude::*;

use crate::codec::chunk_key;
use crate::codec::LEGACY_CHUNK_SIZE;
use crate::store::{BlockStore, DeleteOutcome, CHUNK_SIZE};
use crate::{CoreError, CoreMetrics};

const MIB: u64 = 1024 * 1024;

fn block(file_id: u64, index: u64) -> BlockId {
    BlockId {
        file_id: FileId(file_id),
        index,
    }
}

fn write(block: BlockId, offset: u64, data: Vec<u8>, version: u64, d: Durability) -> BlockWrite {
    BlockWrite {
        block,
        range: BlockRange::new(offset, data.len() as u64).unwrap(),
        data: data.into(),
        version: Version(version),
        durability: d,
        owner_epoch: None,
        base: WriteBase::Unchecked,
    }
}

fn read(block: BlockId, offset: u64, len: u64) -> BlockRead {
    BlockRead {
        block,
        range: BlockRange::new(offset, len).unwrap(),
        owner_epoch: None,
    }
}

fn open(dir: &Path, capacity: u64) -> BlockStore {
    BlockStore::open(dir, capacity, CoreMetrics::new()).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn read_all(store: &BlockStore, b: BlockId, offset: u64, len: u64) -> Vec<u8> {
    store
        .read(read(b, offset, len))
        .await
        .unwrap()
        .expect("block present")
        .data
        .to_vec()
}

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, len: u64, seed: u8 },
    Read { offset: u64, len: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0..MIB).prop_flat_map(|offset| (Just(offset), 0..=(MIB - offset).min(200_000)));
    prop_oneof![
        (range.clone(), any::<u8>()).prop_map(|((offset, len), seed)| Op::Write {
            offset,
            len,
            seed
        }),
        range.prop_map(|(offset, len)| Op::Read { offset, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random partial writes and reads of a 1 MiB block agree with an
    /// in-memory model, before and after a reopen.
    #[test]
    fn partial_writes_match_a_model(ops in proptest::collection::vec(op(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), 64 * MIB);
            let b = block(1, 0);
            let mut model = vec![0u8; MIB as usize];
            let mut length = 0u64;
            let mut version = 0u64;
            for op in &ops {
                match *op {
                    Op::Write { offset, len, seed } => {
                        version += 1;
                        let data = pattern(len as usize, seed);
                        model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
                        if len > 0 {
                            length = length.max(offset + len);
                        }
                        let out = store.write(write(b, offset, data, version, Durability::Held)).await.unwrap();
                        assert_eq!(out.version, Version(version));
                    }
                    Op::Read { offset, len } => {
                        match store.read(read(b, offset, len)).await.unwrap() {
                            None => assert_eq!(version, 0, "a written block must be found"),
                            Some(found) => {
                                assert_eq!(found.version, Version(version));
                                assert_eq!(found.length, length);
                                assert_eq!(&found.data[..], &model[offset as usize..(offset + len) as usize]);
                            }
                        }
                    }
                }
            }
            let used = store.stats().used;
            store.close(false).await.unwrap();
            let store = open(dir.path(), 64 * MIB);
            assert_eq!(store.stats().used, used);
            if version > 0 {
                assert_eq!(read_all(&store, b, 0, MIB).await, model);
            }
        });
    }
}

#[tokio::test]
async fn a_small_write_rewrites_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    assert_eq!(store.chunk_size(), CHUNK_SIZE, "a new store");
    assert_eq!(CHUNK_SIZE, 4096);
    let b = block(7, 3);
    let full = pattern(4 * MIB as usize, 1);
    store
        .write(write(b, 0, full.clone(), 1, Durability::Durable))
        .await
        .unwrap();
    assert_eq!(store.counters().chunk_puts, 4 * MIB / CHUNK_SIZE);
    // An aligned 4 KiB write (a VM's) puts one 4 KiB chunk.
    let before = store.counters();
    let small = pattern(4096, 99);
    let offset = MIB + 8192;
    store
        .write(write(b, offset, small.clone(), 2, Durability::Durable))
        .await
        .unwrap();
    let after = store.counters();
    assert_eq!(after.chunk_puts - before.chunk_puts, 1);
    assert_eq!(after.chunk_bytes_written - before.chunk_bytes_written, 4096);
    let mut expected = full;
    expected[offset as usize..offset as usize + 4096].copy_from_slice(&small);
    assert_eq!(read_all(&store, b, 0, 4 * MIB).await, expected);
    assert_eq!(store.stats().used, 4 * MIB);
    // A write across a chunk boundary touches exactly two chunks.
    store
        .write(write(b, CHUNK_SIZE - 10, vec![5; 20], 3, Durability::Held))
        .await
        .unwrap();
    assert_eq!(store.counters().chunk_puts - after.chunk_puts, 2);
    expected[CHUNK_SIZE as usize - 10..CHUNK_SIZE as usize + 10].fill(5);
    assert_eq!(read_all(&store, b, 0, 4 * MIB).await, expected);
}

/// A store made before the format record (64 KiB chunks, no record) keeps
/// its geometry when reopened: its chunks read back and take partial
/// writes; a new store gets 4 KiB chunks, recorded once; a damaged record
/// refuses to open with an error naming it.
/// Overwrites the store's format record (key `v`) with `value`.
fn put_format_record(store: &BlockStore, value: [u8; 8]) {
    store.raw_db().unwrap().put(b"v", value).unwrap();
}

#[tokio::test]
async fn a_store_keeps_the_chunk_size_it_was_made_with() {
    let dir = tempfile::tempdir().unwrap();
    let b = block(8, 0);
    let data = pattern(300_000, 4);
    {
        // The old geometry: 64 KiB chunks (the record is removed below, as
        // in a store made before records existed).
        let store = open(dir.path(), 64 * MIB);
        put_format_record(&store, [0, 0, 0, 1, 0, 1, 0, 0]);
        store.close(true).await.unwrap();
    }
    {
        let store = open(dir.path(), 64 * MIB);
        assert_eq!(store.chunk_size(), LEGACY_CHUNK_SIZE);
        store
            .write(write(b, 0, data.clone(), 1, Durability::Durable))
            .await
            .unwrap();
        assert_eq!(
            store.counters().chunk_puts,
            5,
            "300 000 bytes in 64 KiB chunks"
        );
        store.raw_db().unwrap().delete(b"v").unwrap();
        store.close(true).await.unwrap();
    }
    let store = open(dir.path(), 64 * MIB);
    assert_eq!(
        store.chunk_size(),
        LEGACY_CHUNK_SIZE,
        "records but no format: made before"
    );
    let mut expected = data;
    store
        .write(write(b, 70_000, vec![9; 4096], 2, Durability::Durable))
        .await
        .unwrap();
    expected[70_000..74_096].fill(9);
    assert_eq!(read_all(&store, b, 0, 300_000).await, expected);
    assert_eq!(store.stats().used, 300_000);
    store.close(true).await.unwrap();
    let store = open(dir.path(), 64 * MIB);
    assert_eq!(store.chunk_size(), LEGACY_CHUNK_SIZE, "now recorded");
    assert_eq!(read_all(&store, b, 0, 300_000).await, expected);
    put_format_record(&store, [0, 0, 0, 1, 0, 0, 12, 0]);
    store.close(true).await.unwrap();
    let err = BlockStore::open(dir.path(), 64 * MIB, CoreMetrics::new()).unwrap_err();
    assert!(err.to_string().contains("format record"), "{err}");

    let fresh = tempfile::tempdir().unwrap();
    let store = open(fresh.path(), 64 * MIB);
    assert_eq!(store.chunk_size(), CHUNK_SIZE);
    store.close(true).await.unwrap();
    assert_eq!(open(fresh.path(), 64 * MIB).chunk_size(), CHUNK_SIZE);
}

#[tokio::test]
async fn sparse_blocks_read_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let b = block(1, 1);
    assert!(store.read(read(b, 0, 10)).await.unwrap().is_none());
    store
        .write(write(b, MIB, vec![9; 10], 1, Durability::Held))
        .await
        .unwrap();
    // Only the one touched chunk is stored, from its start.
    assert_eq!(store.stats().used, 10);
    let found = store.read(read(b, MIB - 5, 30)).await.unwrap().unwrap();
    assert_eq!(found.length, MIB + 10);
    let mut expected = [0u8; 30];
    expected[5..15].fill(9);
    assert_eq!(&found.data[..], &expected[..]);
    assert_eq!(read_all(&store, b, 0, 100).await, vec![0; 100]);
    assert_eq!(read_all(&store, b, 2 * MIB, 100).await, vec![0; 100]);
}

#[tokio::test]
async fn older_versions_are_refused_equal_ones_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let b = block(2, 0);
    store
        .write(write(b, 0, vec![5; 100], 5, Durability::Durable))
        .await
        .unwrap();
    let err = store
        .write(write(b, 0, vec![3; 100], 3, Durability::Durable))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::StaleVersion {
                stored: Version(5),
                offered: Version(3),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(read_all(&store, b, 0, 100).await, vec![5; 100]);
    // Equal version: an idempotent retry.
    let out = store
        .write(write(b, 0, vec![5; 100], 5, Durability::Durable))
        .await
        .unwrap();
    assert_eq!(out.version, Version(5));
    let out = store
        .write(write(b, 50, vec![6; 10], 6, Durability::Durable))
        .await
        .unwrap();
    assert_eq!(out.version, Version(6));
    let found = store.read(read(b, 0, 100)).await.unwrap().unwrap();
    assert_eq!(found.version, Version(6));
    assert_eq!(&found.data[50..60], &[6; 10]);
}

#[tokio::test]
async fn delete_respects_up_to_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let b = block(3, 0);
    store
        .write(write(b, 0, vec![1; 300_000], 4, Durability::Durable))
        .await
        .unwrap();
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(
        store.delete(b, Version(3)).await.unwrap(),
        DeleteOutcome::Newer { stored: Version(4) }
    );
    assert!(store.read(read(b, 0, 1)).await.unwrap().is_some());
    assert_eq!(
        store.delete(b, Version(4)).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(store.read(read(b, 0, 1)).await.unwrap().is_none());
    assert_eq!(store.stats().used, 0);
    assert_eq!(store.stats().blocks, 0);
    assert_eq!(
        store.delete(b, Version(4)).await.unwrap(),
        DeleteOutcome::Absent
    );
    // The delete left a tombstone: nothing older than it is written.
    assert!(matches!(
        store
            .write(write(b, 0, vec![2; 10], 1, Durability::Durable))
            .await,
        Err(CoreError::StaleVersion {
            stored: Version(4),
            ..
        })
    ));
    // No chunk survives the delete: a newer write starts from zeros.
    store
        .write(write(b, 0, vec![2; 10], 5, Durability::Durable))
        .await
        .unwrap();
    let found = read_all(&store, b, 0, 100).await;
    assert_eq!(&found[..10], &[2; 10]);
    assert_eq!(&found[10..], &[0; 90]);
}

#[tokio::test]
async fn a_corrupt_chunk_is_detected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let b = block(4, 0);
    store
        .write(write(b, 0, pattern(200_000, 3), 1, Durability::Durable))
        .await
        .unwrap();
    // Damage chunk 1: keep the length, flip one data byte under the old crc.
    let db = store.raw_db().unwrap();
    let mut value = db.get(chunk_key(b, 1)).unwrap().unwrap();
    value[100] ^= 0xff;
    db.put(chunk_key(b, 1), &value).unwrap();
    drop(db);
    let err = store.read(read(b, 0, 200_000)).await.unwrap_err();
    assert!(
        matches!(err, CoreError::CorruptChunk { chunk: 1, .. }),
        "{err}"
    );
    assert_eq!(store.metrics().checksum_failures.get(), 1);
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), tonic::Code::DataLoss);
    // The good chunk still reads; a partial write into the bad one is refused.
    assert_eq!(
        read_all(&store, b, 0, 1000).await,
        pattern(200_000, 3)[..1000]
    );
    let err = store
        .write(write(b, CHUNK_SIZE + 5, vec![1; 5], 2, Durability::Held))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::CorruptChunk { chunk: 1, .. }));
    assert_eq!(store.metrics().checksum_failures.get(), 2);
}

#[tokio::test]
async fn writes_past_capacity_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 2 * CHUNK_SIZE);
    let a = block(5, 0);
    store
        .write(write(
            a,
            0,
            vec![1; 2 * CHUNK_SIZE as usize],
            1,
            Durability::Held,
        ))
        .await
        .unwrap();
    let err = store
        .write(write(block(5, 1), 0, vec![1; 1], 1, Durability::Held))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::OutOfSpace { needed: 1, free: 0 }),
        "{err}"
    );
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::ResourceExhausted
    );
    // Overwriting in place needs no space.
    store
        .write(write(a, 10, vec![2; 100], 2, Durability::Held))
        .await
        .unwrap();
    assert_eq!(store.stats().used, 2 * CHUNK_SIZE);
    assert_eq!(store.metrics().used_bytes.get(), 2 * CHUNK_SIZE as i64);
    assert_eq!(store.stats().blocks, 1);
}

#[tokio::test]
async fn reopen_keeps_data_versions_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    for i in 0..5u64 {
        let d = if i % 2 == 0 {
            Durability::Durable
        } else {
            Durability::Held
        };
        store
            .write(write(
                block(6, i),
                i * 1000,
                pattern(70_000, i as u8),
                i + 1,
                d,
            ))
            .await
            .unwrap();
    }
    let stats = store.stats();
    let incarnation = store.incarnation();
    // Like a kill: nothing synced at close (the page cache keeps held data).
    store.close(false).await.unwrap();
    assert!(matches!(
        store.read(read(block(6, 0), 0, 1)).await,
        Err(CoreError::Closed)
    ));
    let store = open(dir.path(), 64 * MIB);
    assert_ne!(store.incarnation(), incarnation);
    assert_eq!(store.stats(), stats);
    for i in 0..5u64 {
        let found = store
            .read(read(block(6, i), i * 1000, 70_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.version, Version(i + 1));
        assert_eq!(found.length, i * 1000 + 70_000);
        assert_eq!(&found.data[..], &pattern(70_000, i as u8)[..]);
    }
    let (listed, more) = store.list(None, 100).await.unwrap();
    assert!(!more);
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|info| info.durable));
}

#[tokio::test]
async fn held_writes_become_durable_at_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let (a, b) = (block(8, 0), block(8, 1));
    let out = store
        .write(write(a, 0, vec![1; 10], 1, Durability::Held))
        .await
        .unwrap();
    assert!(!out.durable);
    store
        .write(write(b, 0, vec![1; 10], 1, Durability::Durable))
        .await
        .unwrap();
    assert!(!store.block_info(a).await.unwrap().unwrap().durable);
    assert!(store.block_info(b).await.unwrap().unwrap().durable);
    let (listed, _) = store.list(None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|i| i.durable).collect::<Vec<_>>(),
        [false, true]
    );
    store.flush().await.unwrap();
    assert!(store.block_info(a).await.unwrap().unwrap().durable);
    assert_eq!(store.metrics().flushes.get(), 1);
    // A later synced write of a held block makes it durable too.
    store
        .write(write(a, 0, vec![2; 10], 2, Durability::Held))
        .await
        .unwrap();
    assert!(!store.block_info(a).await.unwrap().unwrap().durable);
    store
        .write(write(a, 5, vec![3; 10], 3, Durability::Durable))
        .await
        .unwrap();
    assert!(store.block_info(a).await.unwrap().unwrap().durable);
}

#[tokio::test]
async fn list_pages_in_block_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    for (f, i) in [(2, 1), (1, 5), (2, 0), (1, 300)] {
        store
            .write(write(block(f, i), 0, vec![1], 1, Durability::Held))
            .await
            .unwrap();
    }
    let (page, more) = store.list(None, 2).await.unwrap();
    assert!(more);
    assert_eq!(
        page.iter().map(|i| i.block).collect::<Vec<_>>(),
        [block(1, 5), block(1, 300)]
    );
    let (page, more) = store.list(Some(block(1, 300)), 2).await.unwrap();
    assert!(!more);
    assert_eq!(
        page.iter().map(|i| i.block).collect::<Vec<_>>(),
        [block(2, 0), block(2, 1)]
    );
    let (page, more) = store.list(Some(block(1, 6)), 10).await.unwrap();
    assert!(!more);
    assert_eq!(page.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_to_one_chunk_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let b = block(9, 0);
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(write(
                        b,
                        i * 100,
                        vec![i as u8 + 1; 100],
                        1,
                        Durability::Held,
                    ))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let data = read_all(&store, b, 0, 6400).await;
    for i in 0..64usize {
        assert_eq!(&data[i * 100..(i + 1) * 100], &[i as u8 + 1; 100][..]);
    }
}

/// Group commit: concurrent durable writers share WAL fsyncs (RocksDB's
/// `rocksdb.wal.synced` ticker counts fewer syncs than synced writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_durable_writes_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let before = store.counters();
    const ROUNDS: u64 = 4;
    const WRITERS: u64 = 64;
    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .write(write(
                            block(10, i),
                            0,
                            vec![1; 4096],
                            round + 1,
                            Durability::Durable,
                        ))
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().unwrap().durable);
        }
    }
    let after = store.counters();
    let writes = after.durable_writes - before.durable_writes;
    let syncs = after.wal_syncs - before.wal_syncs;
    println!("group commit: {writes} durable writes, {syncs} WAL syncs");
    assert_eq!(writes, ROUNDS * WRITERS);
    assert!(syncs > 0, "the statistics must count WAL syncs");
    assert!(
        syncs < writes,
        "{writes} durable writes needed {syncs} WAL syncs: no group commit"
    );
}
