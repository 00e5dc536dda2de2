//! Tests of replication by changes: a job's changed ranges, reading them
//! with the copy, applying them only on their base, rebasing after a ship.

use bytes::Bytes;
use geonfs_proto::domain::{
    BlockId, BlockRange, BlockRead, BlockWrite, Durability, FileId, Version, WriteBase,
};

use crate::store::changes::OfferChanges;
use crate::store::queue::{JobSpec, PutOutcome, ReplicaOffer};
use crate::store::BlockStore;
use crate::CoreMetrics;

const B: BlockId = BlockId {
    file_id: FileId(5),
    index: 2,
};

fn v(n: u64) -> Version {
    Version(n)
}

fn write(offset: u64, data: &[u8], version: u64, base: u64) -> BlockWrite {
    BlockWrite {
        block: B,
        range: BlockRange::new(offset, data.len() as u64).unwrap(),
        data: Bytes::copy_from_slice(data),
        version: v(version),
        durability: Durability::Durable,
        owner_epoch: None,
        base: WriteBase::On(v(base)),
    }
}

fn spec() -> Option<JobSpec> {
    Some(JobSpec {
        targets: vec!["b-core-1".into()],
        primary: true,
        peer: "a-core-2".into(),
    })
}

fn open(dir: &std::path::Path) -> BlockStore {
    BlockStore::open(dir, 1 << 30, CoreMetrics::new()).unwrap()
}

fn changes(base: u64, length: u64, pieces: &[(u64, &[u8])]) -> ReplicaOffer {
    ReplicaOffer {
        block: B,
        version: v(0),
        data: Bytes::new(),
        changes: Some(OfferChanges {
            base: v(base),
            length,
            pieces: pieces
                .iter()
                .map(|(offset, data)| (*offset, Bytes::copy_from_slice(data)))
                .collect(),
        }),
        repair: false,
        job: None,
        epoch: None,
        lost_below: None,
    }
}

fn whole(data: &[u8], version: u64) -> ReplicaOffer {
    ReplicaOffer {
        block: B,
        version: v(version),
        data: Bytes::copy_from_slice(data),
        changes: None,
        repair: false,
        job: None,
        epoch: None,
        lost_below: None,
    }
}

async fn read_all(store: &BlockStore, len: u64) -> (Version, Vec<u8>) {
    let read = BlockRead {
        block: B,
        range: BlockRange::new(0, len).unwrap(),
        owner_epoch: None,
    };
    let found = store.read(read).await.unwrap().unwrap();
    (found.version, found.data.to_vec())
}

#[tokio::test]
async fn the_primary_ships_only_the_bytes_written_since_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // A first write of a new block: the base is "exists nowhere".
    store
        .write_with_job(write(0, &[1; 300_000], 1, 0), spec())
        .await
        .unwrap();
    let first = store.read_changes(B).await.unwrap().unwrap();
    assert_eq!(
        (first.version, first.base, first.length),
        (v(1), v(0), 300_000)
    );
    assert_eq!(first.pieces.len(), 1);
    assert_eq!(first.pieces[0].data.len(), 300_000);
    store.job_shipped(B, v(1), None).await.unwrap();
    assert!(store.job(B).await.unwrap().is_none());

    // Three small writes, the third next to the first: changes are byte
    // ranges, whatever the store's chunk size.
    store
        .write_with_job(write(4096, &[2; 4096], 2, 1), spec())
        .await
        .unwrap();
    store
        .write_with_job(write(200_000, &[3; 100], 3, 2), spec())
        .await
        .unwrap();
    store
        .write_with_job(write(8192, &[4; 10], 4, 3), spec())
        .await
        .unwrap();
    let shipped = store.read_changes(B).await.unwrap().unwrap();
    assert_eq!((shipped.version, shipped.base), (v(4), v(1)));
    let pieces: Vec<(u64, u64, Vec<u8>)> = shipped
        .pieces
        .iter()
        .map(|piece| (piece.offset, piece.version.0, piece.data.to_vec()))
        .collect();
    assert_eq!(
        pieces,
        vec![
            (4096, 2, vec![2; 4096]),
            (8192, 4, vec![4; 10]),
            (200_000, 3, vec![3; 100])
        ]
    );
    // A target that got version 3 already needs only what 4 wrote.
    let rest = shipped.since(v(3)).unwrap();
    assert_eq!((rest.base, rest.pieces.len()), (v(3), 1));
    assert!(shipped.since(v(1)).is_none() && shipped.since(v(4)).is_none());

    // A ship of version 3 keeps only what version 4 wrote.
    store.job_shipped(B, v(3), None).await.unwrap();
    let rest = store.read_changes(B).await.unwrap().unwrap();
    assert_eq!(rest.base, v(3));
    assert_eq!(
        rest.pieces
            .iter()
            .map(|piece| (piece.offset, piece.data.len()))
            .collect::<Vec<_>>(),
        vec![(8192, 10)]
    );
}

#[tokio::test]
async fn a_replacing_write_or_a_restored_copy_ships_the_whole_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut replace = write(0, &[1; 1000], 1, 0);
    replace.base = WriteBase::Replace;
    store.write_with_job(replace, spec()).await.unwrap();
    assert!(store.read_changes(B).await.unwrap().is_none());
    // Later partial writes keep the job whole: its changes never started.
    store
        .write_with_job(write(0, &[2; 10], 2, 1), spec())
        .await
        .unwrap();
    assert!(store.read_changes(B).await.unwrap().is_none());
    assert!(store.job(B).await.unwrap().unwrap().changes.is_none());
}

#[tokio::test]
async fn changes_apply_only_on_a_copy_complete_at_their_base() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let base: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        store.put_replica(whole(&base, 5)).await.unwrap(),
        PutOutcome::Applied
    );

    // Another base: refused, nothing changes.
    let mut wrong = changes(4, 200_000, &[(0, &[9; 10])]);
    wrong.version = v(6);
    assert_eq!(
        store.put_replica(wrong).await.unwrap(),
        PutOutcome::BaseMismatch { held: Some(v(5)) }
    );
    assert_eq!(read_all(&store, 200_000).await, (v(5), base.clone()));

    // Shorter than the copy: refused.
    let mut shorter = changes(5, 100_000, &[(0, &[9; 10])]);
    shorter.version = v(6);
    assert!(matches!(
        store.put_replica(shorter).await.unwrap(),
        PutOutcome::BaseMismatch { .. }
    ));

    // On the base: two pieces in one chunk, one extending the block.
    let mut right = changes(
        5,
        210_000,
        &[(100, &[7; 50]), (1000, &[8; 20]), (205_000, &[6; 5000])],
    );
    right.version = v(6);
    assert_eq!(
        store.put_replica(right.clone()).await.unwrap(),
        PutOutcome::Applied
    );
    let mut expected = base.clone();
    expected[100..150].fill(7);
    expected[1000..1020].fill(8);
    expected.resize(210_000, 0);
    expected[205_000..].fill(6);
    assert_eq!(read_all(&store, 210_000).await, (v(6), expected.clone()));
    // Again: already held.
    assert_eq!(
        store.put_replica(right).await.unwrap(),
        PutOutcome::AlreadyHeld
    );

    // A trimmed copy is complete at no version.
    store.trim(B, v(6)).await.unwrap();
    let mut after_trim = changes(6, 210_000, &[(0, &[1; 1])]);
    after_trim.version = v(7);
    assert_eq!(
        store.put_replica(after_trim).await.unwrap(),
        PutOutcome::BaseMismatch { held: None }
    );
}

#[tokio::test]
async fn a_new_block_applies_changes_on_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut first = changes(0, 70_000, &[(65_000, &[3; 5000])]);
    first.version = v(2);
    assert_eq!(store.put_replica(first).await.unwrap(), PutOutcome::Applied);
    let mut expected = vec![0u8; 70_000];
    expected[65_000..].fill(3);
    assert_eq!(read_all(&store, 70_000).await, (v(2), expected));
}

#[tokio::test]
async fn a_shipped_job_waits_for_its_trim_and_a_new_write_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write_with_job(write(0, &[1; 5000], 1, 0), spec())
        .await
        .unwrap();
    let queued = store.job(B).await.unwrap().unwrap();
    store.job_shipped(B, v(1), Some(123_456)).await.unwrap();
    let shipped = store.job(B).await.unwrap().unwrap();
    assert!(shipped.shipped);
    assert_eq!((shipped.version, shipped.next_attempt_ms), (v(1), 123_456));
    assert_eq!(
        shipped.changes.as_ref().map(|c| (c.base, c.bytes())),
        Some((v(1), 0))
    );
    // A retry of the shipped write ships nothing new.
    store
        .write_with_job(write(0, &[1; 5000], 1, 0), spec())
        .await
        .unwrap();

    // The next write: a pending job again, its lag counted from now, only
    // its own bytes on top of the shipped version.
    store
        .write_with_job(write(100, &[2; 10], 2, 1), spec())
        .await
        .unwrap();
    let job = store.job(B).await.unwrap().unwrap();
    assert!(!job.shipped);
    assert!(job.first_enqueued_ms >= queued.first_enqueued_ms);
    let changes = store.read_changes(B).await.unwrap().unwrap();
    assert_eq!((changes.base, changes.version), (v(1), v(2)));
    assert_eq!(
        changes
            .pieces
            .iter()
            .map(|piece| (piece.offset, piece.data.len()))
            .collect::<Vec<_>>(),
        vec![(100, 10)]
    );
    // Shipped without a trim delay: gone.
    store.job_shipped(B, v(2), None).await.unwrap();
    assert!(store.job(B).await.unwrap().is_none());
}
