//! Tests of the per-file ownership fences of the block store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geonfs_proto::domain::{
    BlockId, BlockRange, BlockRead, BlockWrite, Durability, Epoch, FileId, Version, WriteBase,
};

use crate::store::fence::FileFence;
use crate::store::{BlockStore, DeleteOutcome};
use crate::{CoreError, CoreMetrics};

const MIB: u64 = 1024 * 1024;

fn block(file_id: u64, index: u64) -> BlockId {
    BlockId {
        file_id: FileId(file_id),
        index,
    }
}

fn write_as(b: BlockId, version: u64, owner_epoch: u64) -> BlockWrite {
    BlockWrite {
        block: b,
        range: BlockRange::new(0, 100).unwrap(),
        data: vec![version as u8; 100].into(),
        version: Version(version),
        durability: Durability::Durable,
        owner_epoch: Epoch::new(owner_epoch),
        base: WriteBase::Unchecked,
    }
}

fn read_as(b: BlockId, owner_epoch: u64) -> BlockRead {
    BlockRead {
        block: b,
        range: BlockRange::new(0, 10).unwrap(),
        owner_epoch: Epoch::new(owner_epoch),
    }
}

fn epoch(n: u64) -> Epoch {
    Epoch::new(n).unwrap()
}

fn open(dir: &std::path::Path) -> BlockStore {
    BlockStore::open(dir, 64 * MIB, CoreMetrics::new()).unwrap()
}

fn assert_fenced<T: std::fmt::Debug>(result: Result<T, CoreError>, offered: u64, fence: u64) {
    match result {
        Err(CoreError::Fenced {
            offered: o,
            fence: f,
            ..
        }) => assert_eq!((Some(o), Some(f)), (Epoch::new(offered), Epoch::new(fence))),
        other => panic!("expected a fenced refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn older_epochs_are_refused_and_fences_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = block(7, 0);
    store.write(write_as(b, 1, 3)).await.unwrap();
    assert_eq!(store.fence_of(FileId(7)), None);
    assert_eq!(
        store.fence(FileId(7), epoch(5)).await.unwrap(),
        Epoch::new(5)
    );
    assert_eq!(store.fence_of(FileId(7)), Epoch::new(5));
    // A lower epoch leaves the fence where it is.
    assert_eq!(
        store.fence(FileId(7), epoch(3)).await.unwrap(),
        Epoch::new(5)
    );

    assert_fenced(store.write(write_as(b, 2, 4)).await, 4, 5);
    assert_fenced(store.read(read_as(b, 4)).await, 4, 5);
    assert_fenced(store.delete_as(b, Version(9), Epoch::new(4)).await, 4, 5);
    assert_eq!(store.metrics().fenced_requests.get(), 3);
    let err = store.write(write_as(b, 2, 4)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("file 7 is fenced at ownership epoch 5; the caller's epoch 4 is older"),
        "{err}"
    );
    // Nothing changed.
    let found = store.read(read_as(b, 0)).await.unwrap().unwrap();
    assert_eq!(found.version, Version(1));

    // Equal, newer and unchecked epochs pass; other files are not fenced.
    store.write(write_as(b, 2, 5)).await.unwrap();
    store.write(write_as(b, 3, 6)).await.unwrap();
    store.write(write_as(b, 4, 0)).await.unwrap();
    assert_eq!(
        store.read(read_as(b, 5)).await.unwrap().unwrap().version,
        Version(4)
    );
    store.write(write_as(block(8, 0), 1, 1)).await.unwrap();
    assert_eq!(
        store
            .read(read_as(block(8, 0), 1))
            .await
            .unwrap()
            .unwrap()
            .version,
        Version(1)
    );
    assert_eq!(store.fence_of(FileId(8)), None);

    store.close(false).await.unwrap();
    let store = open(dir.path());
    assert_eq!(store.fence_of(FileId(7)), Epoch::new(5));
    assert_fenced(store.write(write_as(b, 5, 4)).await, 4, 5);
    assert_eq!(
        store.delete_as(b, Version(9), Epoch::new(5)).await.unwrap(),
        DeleteOutcome::Deleted
    );
    // Fence records are not blocks.
    assert_eq!(store.stats().blocks, 1);
    let (listed, more) = store.list(None, 100).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(!more);
}

/// Many writers at epoch 1 race a fence at epoch 2: once the fence has
/// returned, no epoch-1 write lands any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_write_admitted_under_an_older_fence_lands_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut overlapped = 0;
    // Many rounds: the race window of a broken fence is small.
    for file_id in 100.. {
        let b = block(file_id, 0);
        let next_version = Arc::new(AtomicU64::new(1));
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (store, next_version) = (store.clone(), next_version.clone());
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let mut refused = 0;
                    for _ in 0..40 {
                        let version = next_version.fetch_add(1, Ordering::SeqCst);
                        match store.write(write_as(b, version, 1)).await {
                            Ok(outcome) => acked.push(outcome.version),
                            Err(CoreError::Fenced { .. }) => refused += 1,
                            // Writers overtake each other.
                            Err(CoreError::StaleVersion { .. }) => {}
                            Err(err) => panic!("{err}"),
                        }
                    }
                    (acked, refused)
                })
            })
            .collect();
        // Let some writes through first.
        while next_version.load(Ordering::SeqCst) < 20 {
            tokio::task::yield_now().await;
        }
        store.fence(FileId(file_id), epoch(2)).await.unwrap();
        let at_fence = store
            .read(read_as(b, 0))
            .await
            .unwrap()
            .map_or(Version::ZERO, |f| f.version);
        let (mut acked, mut refused) = (Vec::new(), 0);
        for writer in writers {
            let (a, r) = writer.await.unwrap();
            acked.extend(a);
            refused += r;
        }
        let after = store
            .read(read_as(b, 0))
            .await
            .unwrap()
            .map_or(Version::ZERO, |f| f.version);
        assert_eq!(after, at_fence, "an epoch-1 write landed after the fence");
        assert!(
            acked.iter().all(|&v| v <= at_fence),
            "acked {acked:?} vs {at_fence}"
        );
        if !acked.is_empty() && refused > 0 {
            overlapped += 1;
            if overlapped == 25 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the fence overlapped the writes only {overlapped} times"
        );
    }
}

#[tokio::test]
async fn fences_are_listed_a_page_at_a_time_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for file_id in [9, 3, 7, 1] {
        store
            .fence(FileId(file_id), epoch(file_id * 10))
            .await
            .unwrap();
    }
    let epochs = |(fences, more): (Vec<(FileId, FileFence)>, bool)| {
        let epochs: Vec<(u64, u64)> = fences
            .into_iter()
            .map(|(f, e)| (f.0, Epoch::to_wire(e.epoch)))
            .collect();
        (epochs, more)
    };
    assert_eq!(
        epochs(store.list_fences(None, 3)),
        (vec![(1, 10), (3, 30), (7, 70)], true)
    );
    assert_eq!(
        epochs(store.list_fences(Some(FileId(7)), 3)),
        (vec![(9, 90)], false)
    );
    assert_eq!(store.list_fences(Some(FileId(9)), 3), (vec![], false));
}

#[tokio::test]
async fn a_store_waiting_for_its_peers_fences_refuses_every_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = block(40, 0);
    store.require_fence_sync();
    assert!(!store.fences_synced());
    for result in [
        store.write(write_as(b, 1, 3)).await.map(|_| ()),
        store.read(read_as(b, 3)).await.map(|_| ()),
        store
            .delete_as(b, Version(1), Epoch::new(3))
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(CoreError::FencesUnsynced)),
            "{result:?}"
        );
    }
    // Unchecked requests (replication, tools) and fences pass.
    store.write(write_as(b, 1, 0)).await.unwrap();
    assert_eq!(
        store.fence(FileId(40), epoch(2)).await.unwrap(),
        Epoch::new(2)
    );
    store.mark_fences_synced();
    store.write(write_as(b, 2, 3)).await.unwrap();
    let status: tonic::Status = CoreError::FencesUnsynced.into();
    assert_eq!(status.code(), tonic::Code::Unavailable);
}
