//! Tests of the set-aside of copies a takeover from a lost owner never saw,
//! and of the quarantine that keeps them.

use bytes::Bytes;
use geonfs_proto::domain::{
    BlockId, BlockRange, BlockRead, BlockWrite, Durability, Epoch, FileId, Version, WriteBase,
};

use crate::store::fence::{FenceRaise, FileFence};
use crate::store::queue::{JobSpec, PutOutcome, ReplicaOffer};
use crate::store::BlockStore;
use crate::CoreMetrics;

const FILE: u64 = 7;

fn epoch(n: u64) -> Epoch {
    Epoch::new(n).unwrap()
}

fn block(index: u64) -> BlockId {
    BlockId {
        file_id: FileId(FILE),
        index,
    }
}

fn open(dir: &std::path::Path) -> BlockStore {
    BlockStore::open(dir, 1 << 30, CoreMetrics::new()).unwrap()
}

fn job() -> JobSpec {
    JobSpec {
        targets: vec!["b-core-1".into()],
        primary: true,
        peer: "a-core-2".into(),
    }
}

/// A whole write of `fill` bytes at `version` by an owner at `epoch`,
/// with a replication job when `shipping`.
async fn write(store: &BlockStore, index: u64, version: u64, epoch: u64, fill: u8, shipping: bool) {
    let write = BlockWrite {
        block: block(index),
        range: BlockRange::new(0, 5000).unwrap(),
        data: vec![fill; 5000].into(),
        version: Version(version),
        durability: Durability::Durable,
        owner_epoch: Epoch::new(epoch),
        base: WriteBase::Replace,
    };
    store
        .write_with_job(write, shipping.then(job))
        .await
        .unwrap();
}

async fn version_of(store: &BlockStore, index: u64) -> Option<u64> {
    let read = BlockRead {
        block: block(index),
        range: BlockRange::new(0, 0).unwrap(),
        owner_epoch: None,
    };
    store.read(read).await.unwrap().map(|found| found.version.0)
}

fn lost_at(epoch: u64, adopt: bool) -> FenceRaise {
    FenceRaise {
        epoch: Epoch::new(epoch),
        lost_below: Epoch::new(epoch),
        adopt,
    }
}

fn offer(index: u64, version: u64, epoch: u64, lost_below: u64) -> ReplicaOffer {
    ReplicaOffer {
        changes: None,
        block: block(index),
        version: Version(version),
        data: Bytes::from(vec![9u8; 3000]),
        repair: false,
        job: None,
        epoch: Epoch::new(epoch),
        lost_below: Epoch::new(lost_below),
    }
}

#[tokio::test]
async fn learning_of_a_lost_owner_sets_aside_only_the_copies_never_copied_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Block 0: written at epoch 5, never shipped (job pending). Block 1:
    // written at epoch 5 and shipped (no job). Block 2: written at epoch 6.
    write(&store, 0, 100, 5, 0xa0, true).await;
    write(&store, 1, 101, 5, 0xa1, false).await;
    write(&store, 2, 102, 6, 0xa2, true).await;
    let fence = store
        .raise_fence(FileId(FILE), lost_at(6, false))
        .await
        .unwrap();
    assert_eq!(
        fence,
        FileFence {
            epoch: Epoch::new(6),
            lost_below: Epoch::new(6),
            adopted_below: Epoch::new(6)
        }
    );
    assert_eq!(
        version_of(&store, 0).await,
        None,
        "the unshipped copy is set aside"
    );
    assert!(store.job(block(0)).await.unwrap().is_none());
    assert_eq!(version_of(&store, 1).await, Some(101));
    assert_eq!(version_of(&store, 2).await, Some(102));
    assert_eq!(store.stats().blocks, 2);
    let (listed, more) = store.list_quarantine(None, 10).await.unwrap();
    assert!(!more);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].block, listed[0].version, listed[0].epoch),
        (block(0), Version(100), Epoch::new(5))
    );
    let (copy, data) = store
        .read_quarantined(block(0), Version(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copy.length, 5000);
    assert_eq!(data, Bytes::from(vec![0xa0u8; 5000]));
    assert_eq!(store.metrics().quarantined_blocks.get(), 1);
    assert_eq!(store.metrics().quarantined_bytes.get(), 5000);
    // Idempotent: a second learning changes nothing.
    store
        .raise_fence(FileId(FILE), lost_at(6, false))
        .await
        .unwrap();
    assert_eq!(store.list_quarantine(None, 10).await.unwrap().0.len(), 1);
    // The quarantine survives a restart; an operator drops the copy.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.metrics().quarantined_blocks.get(), 1);
    assert!(store
        .drop_quarantined(block(0), Version(100))
        .await
        .unwrap());
    assert!(!store
        .drop_quarantined(block(0), Version(100))
        .await
        .unwrap());
    assert!(store
        .read_quarantined(block(0), Version(100))
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.metrics().quarantined_blocks.get(), 0);
    assert_eq!(store.metrics().quarantined_bytes.get(), 0);
}

#[tokio::test]
async fn the_takeover_adopts_what_it_sees() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write(&store, 0, 100, 5, 0xa0, true).await;
    store
        .raise_fence(FileId(FILE), lost_at(6, true))
        .await
        .unwrap();
    assert_eq!(version_of(&store, 0).await, Some(100));
    assert!(store.list_quarantine(None, 10).await.unwrap().0.is_empty());
    // Shipped with the adopted epoch, so the other surviving sites take it.
    assert_eq!(
        store.file_fence(FileId(FILE)).shipped_epoch(Epoch::new(5)),
        Epoch::new(6)
    );
}

#[tokio::test]
async fn replicas_from_before_the_takeover_are_refused_unless_already_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write(&store, 0, 100, 5, 0xa0, false).await;
    store
        .raise_fence(FileId(FILE), lost_at(6, true))
        .await
        .unwrap();
    // The lost owner's later write of block 0, and of a block never seen.
    assert_eq!(
        store.put_replica(offer(0, 150, 5, 0)).await.unwrap(),
        PutOutcome::Superseded {
            lost_below: epoch(6)
        }
    );
    assert_eq!(
        store.put_replica(offer(3, 150, 5, 0)).await.unwrap(),
        PutOutcome::Superseded {
            lost_below: epoch(6)
        }
    );
    assert_eq!(version_of(&store, 0).await, Some(100));
    assert_eq!(version_of(&store, 3).await, None);
    // The version the takeover saw is no news; the new owner's goes in.
    assert_eq!(
        store.put_replica(offer(0, 100, 5, 0)).await.unwrap(),
        PutOutcome::AlreadyHeld
    );
    assert_eq!(
        store.put_replica(offer(0, 120, 6, 6)).await.unwrap(),
        PutOutcome::Applied
    );
    // Unchecked puts (tools, tests) are not refused.
    assert_eq!(
        store.put_replica(offer(4, 150, 0, 0)).await.unwrap(),
        PutOutcome::Applied
    );
}

#[tokio::test]
async fn a_replica_teaches_the_lost_owners_core_and_replaces_its_late_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // The lost owner's core: a late write at a version above the new
    // owner's (its clock ran ahead), never shipped.
    write(&store, 0, 500, 5, 0xa0, true).await;
    assert_eq!(
        store.put_replica(offer(0, 120, 6, 6)).await.unwrap(),
        PutOutcome::Applied
    );
    assert_eq!(version_of(&store, 0).await, Some(120));
    let (listed, _) = store.list_quarantine(None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.version.0).collect::<Vec<_>>(),
        vec![500]
    );
}

#[tokio::test]
async fn a_set_aside_cut_short_by_a_crash_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    write(&store, 0, 100, 5, 0xa0, true).await;
    // A fence record that says "learned, not yet set aside" (what a crash
    // between the fence and the set-aside leaves).
    let mut value = Vec::new();
    for word in [6u64, 6, 0] {
        value.extend_from_slice(&word.to_be_bytes());
    }
    let mut key = vec![b'f'];
    key.extend_from_slice(&FILE.to_be_bytes());
    store.raw_db().unwrap().put(key, value).unwrap();
    drop(store);
    let store = open(dir.path());
    assert!(store.file_fence(FileId(FILE)).set_aside_pending());
    store.resume_set_asides().await.unwrap();
    assert_eq!(version_of(&store, 0).await, None);
    assert!(!store.file_fence(FileId(FILE)).set_aside_pending());
    assert_eq!(store.list_quarantine(None, 10).await.unwrap().0.len(), 1);
}
