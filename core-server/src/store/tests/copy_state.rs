//! Tests of complete copies in the block store: markers of trimmed and
//! deleted blocks, the base rule of partial writes and replacing writes
//! (see `copy_state.rs`).

use bytes::Bytes;
use geonfs_proto::domain::{
    BlockId, BlockRange, BlockRead, BlockWrite, Durability, FileId, Version, WriteBase,
};

use crate::store::queue::{PutOutcome, ReplicaOffer};
use crate::store::{BlockStore, DeleteOutcome, Marker, WriteOutcome};
use crate::{CoreError, CoreMetrics};

const B: BlockId = BlockId {
    file_id: FileId(3),
    index: 1,
};

fn write(offset: u64, data: &[u8], version: u64, base: WriteBase) -> BlockWrite {
    BlockWrite {
        block: B,
        range: BlockRange::new(offset, data.len() as u64).unwrap(),
        data: Bytes::copy_from_slice(data),
        version: Version(version),
        durability: Durability::Durable,
        owner_epoch: None,
        base,
    }
}

fn replica(data: &[u8], version: u64) -> ReplicaOffer {
    ReplicaOffer {
        changes: None,
        block: B,
        version: Version(version),
        data: Bytes::copy_from_slice(data),
        repair: false,
        job: None,
        epoch: None,
        lost_below: None,
    }
}

fn open(dir: &std::path::Path) -> BlockStore {
    BlockStore::open(dir, 1 << 30, CoreMetrics::new()).unwrap()
}

async fn whole(store: &BlockStore, len: u64) -> Option<(u64, Vec<u8>)> {
    let read = BlockRead {
        block: B,
        range: BlockRange::new(0, len).unwrap(),
        owner_epoch: None,
    };
    let found = store.read(read).await.unwrap()?;
    Some((found.version.0, found.data.to_vec()))
}

async fn marker(store: &BlockStore) -> Option<Marker> {
    let read = BlockRead {
        block: B,
        range: BlockRange::new(0, 0).unwrap(),
        owner_epoch: None,
    };
    store.read_copy(read).await.unwrap().marker
}

/// A store under `dir` whose copy of `B`, 10 bytes at version 5, was
/// trimmed.
async fn trimmed_at_5(dir: &std::path::Path) -> BlockStore {
    let store = open(dir);
    store
        .write(write(0, &[5; 10], 5, WriteBase::Replace))
        .await
        .unwrap();
    store.trim(B, Version(5)).await.unwrap();
    store
}

fn is_mismatch(result: Result<crate::store::WriteOutcome, CoreError>) -> bool {
    matches!(result, Err(CoreError::BaseMismatch { .. }))
}

#[tokio::test]
async fn a_trimmed_copy_takes_no_partial_write_until_it_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let full = vec![7u8; 300_000];
    store
        .write(write(0, &full, 1, WriteBase::Replace))
        .await
        .unwrap();
    assert_eq!(
        store.trim(B, Version(1)).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(whole(&store, 10).await, None);
    assert_eq!(
        marker(&store).await,
        Some(Marker::Trimmed(Version(1))),
        "the trim leaves a marker"
    );
    assert_eq!(store.stats().used, 0);

    // The copy is complete at no version: a 4 KiB write is refused, with
    // the base it named or "absent"; nothing changes.
    assert!(is_mismatch(
        store
            .write(write(4096, &[9; 4096], 2, WriteBase::On(Version(1))))
            .await
    ));
    assert!(is_mismatch(
        store
            .write(write(4096, &[9; 4096], 2, WriteBase::On(Version::ZERO)))
            .await
    ));
    assert_eq!(whole(&store, 10).await, None);
    // Nothing below the trimmed version is taken; a retry of the trimmed
    // version itself (it shipped) is answered and changes nothing.
    assert!(matches!(
        store.write(write(0, &[1; 10], 1, WriteBase::Replace)).await,
        Ok(WriteOutcome {
            version: Version(1),
            ..
        })
    ));
    assert_eq!(whole(&store, 10).await, None);

    // Seeded (a whole replica of the trimmed version), it takes the write.
    assert_eq!(
        store.put_replica(replica(&full, 1)).await.unwrap(),
        PutOutcome::Applied
    );
    assert_eq!(marker(&store).await, None, "the seed removes the marker");
    store
        .write(write(4096, &[9; 4096], 2, WriteBase::On(Version(1))))
        .await
        .unwrap();
    let mut expected = full.clone();
    expected[4096..8192].fill(9);
    assert_eq!(whole(&store, 300_000).await, Some((2, expected)));
}

#[tokio::test]
async fn a_lagging_copy_refuses_a_write_on_a_newer_base_and_retries_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(write(100, &[1; 50], 1, WriteBase::On(Version::ZERO)))
        .await
        .unwrap();
    // The copy missed version 2 (its core was down): version 3 on 2 is refused.
    assert!(is_mismatch(
        store
            .write(write(0, &[3; 10], 3, WriteBase::On(Version(2))))
            .await
    ));
    let (version, data) = whole(&store, 200).await.unwrap();
    assert_eq!(version, 1);
    assert_eq!(&data[100..150], &[1; 50]);
    // On its real base it applies; sent again (same version), it is a retry.
    store
        .write(write(0, &[3; 10], 3, WriteBase::On(Version(1))))
        .await
        .unwrap();
    store
        .write(write(0, &[3; 10], 3, WriteBase::On(Version(2))))
        .await
        .unwrap();
    assert_eq!(whole(&store, 10).await, Some((3, vec![3; 10])));
}

#[tokio::test]
async fn a_replica_older_than_a_trim_marker_is_stale_and_the_marker_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = trimmed_at_5(dir.path()).await;
    store.close(false).await.unwrap();
    let store = open(dir.path());
    assert_eq!(marker(&store).await, Some(Marker::Trimmed(Version(5))));
    assert_eq!(
        store.put_replica(replica(&[4; 10], 4)).await.unwrap(),
        PutOutcome::SkippedStale { stored: Version(5) }
    );
    assert_eq!(whole(&store, 10).await, None);
}

#[tokio::test]
async fn a_delete_leaves_a_tombstone_nothing_older_comes_back_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = trimmed_at_5(dir.path()).await;
    // A truncate below the marker's version changes nothing.
    assert_eq!(
        store.delete(B, Version(4)).await.unwrap(),
        DeleteOutcome::Newer { stored: Version(5) }
    );
    assert_eq!(marker(&store).await, Some(Marker::Trimmed(Version(5))));
    // A truncate at 8 leaves a tombstone at 8, data or not.
    assert_eq!(
        store.delete(B, Version(8)).await.unwrap(),
        DeleteOutcome::Absent
    );
    assert_eq!(marker(&store).await, Some(Marker::Deleted(Version(8))));
    let other = BlockId {
        file_id: FileId(3),
        index: 9,
    };
    assert_eq!(
        store.delete(other, Version(6)).await.unwrap(),
        DeleteOutcome::Absent
    );
    assert_eq!(
        store.list_deleted(None, 10).await.unwrap(),
        (vec![(B, Version(8)), (other, Version(6))], false)
    );
    // Older copies and writes stay out; the tombstone is the empty block
    // at 8, which a partial write builds on.
    assert_eq!(
        store.put_replica(replica(&[4; 10], 6)).await.unwrap(),
        PutOutcome::SkippedStale { stored: Version(8) }
    );
    assert!(matches!(
        store.write(write(0, &[1; 10], 7, WriteBase::Replace)).await,
        Err(CoreError::StaleVersion {
            stored: Version(8),
            ..
        })
    ));
    assert!(is_mismatch(
        store
            .write(write(20, &[6; 10], 9, WriteBase::On(Version::ZERO)))
            .await
    ));
    store
        .write(write(20, &[6; 10], 9, WriteBase::On(Version(8))))
        .await
        .unwrap();
    let mut expected = vec![0u8; 30];
    expected[20..].fill(6);
    assert_eq!(whole(&store, 30).await, Some((9, expected)));
    assert_eq!(marker(&store).await, None, "data replaces the tombstone");
    assert_eq!(
        store.list_deleted(None, 10).await.unwrap().0,
        vec![(other, Version(6))]
    );
}

#[tokio::test]
async fn a_replacing_write_drops_the_old_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write(write(0, &[1; 200_000], 1, WriteBase::On(Version::ZERO)))
        .await
        .unwrap();
    assert_eq!(store.stats().used, 200_000);
    store
        .write(write(0, &[2; 20], 2, WriteBase::Replace))
        .await
        .unwrap();
    let mut expected = vec![0u8; 200_000];
    expected[..20].fill(2);
    assert_eq!(whole(&store, 200_000).await, Some((2, expected)));
    assert_eq!(store.stats().used, 20);
    assert_eq!(store.block_info(B).await.unwrap().unwrap().length, 20);
    store.close(false).await.unwrap();
    assert_eq!(open(dir.path()).stats().used, 20, "usage recounted at open");
}
