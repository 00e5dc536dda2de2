//! Deleted ranges: one call deletes the blocks a store holds in a range
//! of a file, and every index inside (stored or not) then acts as deleted
//! at the range's version.

use bytes::Bytes;
use geonfs_proto::domain::{DeletedRange, Durability, Epoch, FileId, Version, WriteBase};

use super::{block, open, read, write, MIB};
use crate::store::queue::{PutOutcome, ReplicaOffer};
use crate::store::Marker;
use crate::CoreError;

fn range(from: u64, until: u64, version: u64) -> DeletedRange {
    DeletedRange {
        from,
        until,
        version: Version(version),
    }
}

#[tokio::test]
async fn a_range_delete_removes_what_is_stored_and_covers_every_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let file = FileId(7);
    for (index, version) in [(0, 3), (2, 4), (5, 9), (40, 5)] {
        store
            .write(write(
                block(7, index),
                0,
                vec![index as u8 + 1; 5000],
                version,
                Durability::Held,
            ))
            .await
            .unwrap();
    }
    store
        .write(write(block(8, 3), 0, vec![8; 100], 2, Durability::Durable))
        .await
        .unwrap();
    // Blocks 2.. of file 7 up to version 6: 2 and 40 go, 5 (version 9) stays.
    let removed = store
        .delete_range_as(file, 2, u64::MAX, Version(6), None)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(store.stats().blocks, 3);
    assert!(store
        .read(read(block(7, 0), 0, 10))
        .await
        .unwrap()
        .is_some());
    assert!(store
        .read(read(block(7, 5), 0, 10))
        .await
        .unwrap()
        .is_some());
    assert!(store
        .read(read(block(8, 3), 0, 10))
        .await
        .unwrap()
        .is_some());
    // Stored or never stored, an index inside reads as deleted at 6.
    for index in [2, 3, 40, 1 << 50] {
        let copy = store.read_copy(read(block(7, index), 0, 10)).await.unwrap();
        assert_eq!(copy.found, None, "index {index}");
        assert_eq!(
            copy.marker,
            Some(Marker::Deleted(Version(6))),
            "index {index}"
        );
    }
    // Nothing at or below 6 comes back: a late write, an older replica.
    let late = store
        .write(write(
            block(7, 1 << 40),
            0,
            vec![1; 10],
            5,
            Durability::Durable,
        ))
        .await;
    assert!(
        matches!(
            late,
            Err(CoreError::StaleVersion {
                stored: Version(6),
                ..
            })
        ),
        "{late:?}"
    );
    let replica = store
        .put_replica(ReplicaOffer {
            changes: None,
            block: block(7, 3),
            version: Version(4),
            data: Bytes::from(vec![4; 10]),
            repair: false,
            job: None,
            epoch: None,
            lost_below: None,
        })
        .await
        .unwrap();
    assert_eq!(replica, PutOutcome::SkippedStale { stored: Version(6) });
    // A newer write lands, as a partial write on the deleted state (base 6).
    let mut newer = write(block(7, 3), 100, vec![7; 10], 10, Durability::Durable);
    newer.base = WriteBase::On(Version(6));
    store.write(newer).await.unwrap();
    let data = store
        .read(read(block(7, 3), 0, 110))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data.version, Version(10));
    assert!(data.data[..100].iter().all(|&b| b == 0));
    assert_eq!(&data.data[100..], &[7; 10]);
    assert_eq!(
        store.deleted_ranges(file).await.unwrap(),
        vec![range(2, u64::MAX, 6)]
    );
    assert!(store.deleted_ranges(FileId(8)).await.unwrap().is_empty());
}

#[tokio::test]
async fn ranges_survive_a_restart_and_a_wider_newer_one_replaces_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileId(3);
    {
        let store = open(dir.path(), 64 * MIB);
        store
            .delete_range_as(file, 10, 20, Version(5), None)
            .await
            .unwrap();
        store
            .delete_range_as(file, 30, 40, Version(6), None)
            .await
            .unwrap();
        // Included in the first: nothing new to keep.
        store
            .delete_range_as(file, 12, 15, Version(4), None)
            .await
            .unwrap();
        assert_eq!(
            store.deleted_ranges(file).await.unwrap(),
            vec![range(10, 20, 5), range(30, 40, 6)]
        );
        store.close(true).await.unwrap();
    }
    let store = open(dir.path(), 64 * MIB);
    assert_eq!(
        store.deleted_ranges(file).await.unwrap(),
        vec![range(10, 20, 5), range(30, 40, 6)]
    );
    let copy = store.read_copy(read(block(3, 35), 0, 1)).await.unwrap();
    assert_eq!(copy.marker, Some(Marker::Deleted(Version(6))));
    // Newer and wider than the second only.
    store
        .delete_range_as(file, 25, 45, Version(8), None)
        .await
        .unwrap();
    assert_eq!(
        store.deleted_ranges(file).await.unwrap(),
        vec![range(10, 20, 5), range(25, 45, 8)]
    );
    // An index under two ranges takes the newer one.
    store
        .delete_range_as(file, 0, 100, Version(7), None)
        .await
        .unwrap();
    for (index, deleted) in [(5, 7), (15, 7), (30, 8), (60, 7)] {
        let copy = store.read_copy(read(block(3, index), 0, 1)).await.unwrap();
        assert_eq!(
            copy.marker,
            Some(Marker::Deleted(Version(deleted))),
            "index {index}"
        );
    }
    assert_eq!(
        store.deleted_ranges(file).await.unwrap(),
        vec![range(0, 100, 7), range(25, 45, 8)]
    );
    assert!(matches!(
        store.delete_range_as(file, 9, 9, Version(9), None).await,
        Err(CoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn a_trimmed_copy_newer_than_a_range_keeps_its_marker_and_fences_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB);
    let b = block(4, 2);
    store
        .write(write(b, 0, vec![1; 10], 9, Durability::Durable))
        .await
        .unwrap();
    store.trim(b, Version(9)).await.unwrap();
    store
        .delete_range_as(FileId(4), 0, 10, Version(5), None)
        .await
        .unwrap();
    let copy = store.read_copy(read(b, 0, 1)).await.unwrap();
    assert_eq!(copy.marker, Some(Marker::Trimmed(Version(9))));
    // A range delete from an owner older than the file's fence is refused.
    store
        .fence(FileId(4), Epoch::new(3).unwrap())
        .await
        .unwrap();
    let refused = store
        .delete_range_as(FileId(4), 0, 10, Version(20), Epoch::new(2))
        .await;
    assert!(
        matches!(refused, Err(CoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.deleted_ranges(FileId(4)).await.unwrap(),
        vec![range(0, 10, 5)]
    );
}
