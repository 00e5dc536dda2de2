//! Tests of the block store's replication queue and replica puts.

use bytes::Bytes;
use geonfs_proto::domain::{
    BlockId, BlockRange, BlockRead, BlockWrite, Durability, FileId, Version, WriteBase,
};

use crate::codec::chunk_key;
use crate::store::queue::{JobSpec, PutOutcome, ReplicaOffer};
use crate::store::{BlockStore, DeleteOutcome};
use crate::CoreMetrics;

fn block(file_id: u64, index: u64) -> BlockId {
    BlockId {
        file_id: FileId(file_id),
        index,
    }
}

fn write(block: BlockId, offset: u64, data: Vec<u8>, version: u64) -> BlockWrite {
    BlockWrite {
        block,
        range: BlockRange::new(offset, data.len() as u64).unwrap(),
        data: data.into(),
        version: Version(version),
        durability: Durability::Durable,
        owner_epoch: None,
        base: WriteBase::Unchecked,
    }
}

fn spec(primary: bool) -> Option<JobSpec> {
    Some(JobSpec {
        targets: vec!["b-core-1".into(), "c-core-2".into()],
        primary,
        peer: "a-core-2".into(),
    })
}

fn open(dir: &std::path::Path) -> BlockStore {
    BlockStore::open(dir, 1 << 30, CoreMetrics::new()).unwrap()
}

#[tokio::test]
async fn a_write_queues_its_job_and_a_newer_write_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = block(1, 0);
    store.write(write(b, 0, vec![1; 10], 1)).await.unwrap();
    assert!(store.pending_jobs(10).await.unwrap().is_empty());
    store
        .write_with_job(write(b, 0, vec![1; 100], 2), spec(true))
        .await
        .unwrap();
    let jobs = store.pending_jobs(10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let first = jobs[0].clone();
    assert_eq!(first.version, Version(2));
    assert_eq!(first.length, 100);
    assert!(first.primary);
    assert_eq!(first.peer, "a-core-2");
    assert_eq!(first.targets, vec!["b-core-1", "c-core-2"]);

    store.reschedule_job(b, Version(2), 3, 42).await.unwrap();
    store.reschedule_job(b, Version(1), 9, 99).await.unwrap(); // not the job: ignored
    let job = store.job(b).await.unwrap().unwrap();
    assert_eq!((job.attempts, job.next_attempt_ms), (3, 42));

    store
        .write_with_job(write(b, 100, vec![2; 10], 3), spec(true))
        .await
        .unwrap();
    let job = store.job(b).await.unwrap().unwrap();
    assert_eq!(job.version, Version(3));
    assert_eq!(job.attempts, 0);
    assert_eq!(job.first_enqueued_ms, first.first_enqueued_ms);

    store.job_done(b, Version(2)).await.unwrap();
    assert!(
        store.job(b).await.unwrap().is_some(),
        "v3 is not covered by v2"
    );
    store.job_done(b, Version(3)).await.unwrap();
    assert!(store.job(b).await.unwrap().is_none());

    // The job survives a restart, like the write.
    store
        .write_with_job(write(b, 0, vec![3; 10], 4), spec(false))
        .await
        .unwrap();
    store.close(false).await.unwrap();
    let store = open(dir.path());
    let jobs = store.pending_jobs(10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].version, Version(4));
    assert!(!jobs[0].primary);
    // The block list is unaffected by the queue's keys.
    assert_eq!(store.list(None, 10).await.unwrap().0.len(), 1);
    assert_eq!(store.stats().blocks, 1);
}

#[tokio::test]
async fn a_trim_removes_the_job_unless_it_is_newer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = block(2, 0);
    store
        .write_with_job(write(b, 0, vec![1; 10], 5), spec(false))
        .await
        .unwrap();
    assert_eq!(
        store.delete(b, Version(4)).await.unwrap(),
        DeleteOutcome::Newer { stored: Version(5) }
    );
    assert!(store.job(b).await.unwrap().is_some());
    assert_eq!(
        store.delete(b, Version(5)).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(store.job(b).await.unwrap().is_none());
    assert!(store.pending_jobs(10).await.unwrap().is_empty());
}

fn offer(block: BlockId, version: u64, data: Bytes) -> ReplicaOffer {
    ReplicaOffer {
        changes: None,
        block,
        version: Version(version),
        data,
        repair: false,
        job: None,
        epoch: None,
        lost_below: None,
    }
}

#[tokio::test]
async fn a_replica_replaces_older_data_and_never_newer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = block(3, 0);
    store.write(write(b, 0, vec![9; 300_000], 1)).await.unwrap();
    let data = Bytes::from(vec![4; 100_000]);
    assert_eq!(
        store.put_replica(offer(b, 2, data.clone())).await.unwrap(),
        PutOutcome::Applied
    );
    let found = store
        .read(BlockRead {
            block: b,
            range: BlockRange::new(0, 300_000).unwrap(),
            owner_epoch: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.version, Version(2));
    assert_eq!(found.length, 100_000);
    assert!(found.data[..100_000].iter().all(|&x| x == 4));
    assert!(
        found.data[100_000..].iter().all(|&x| x == 0),
        "old tail gone"
    );
    assert_eq!(store.stats().used, 100_000);
    assert_eq!(
        store.put_replica(offer(b, 2, data.clone())).await.unwrap(),
        PutOutcome::AlreadyHeld
    );
    assert_eq!(
        store
            .put_replica(offer(b, 1, Bytes::from(vec![1; 10])))
            .await
            .unwrap(),
        PutOutcome::SkippedStale { stored: Version(2) }
    );
    assert_eq!(
        store.block_info(b).await.unwrap().unwrap().version,
        Version(2)
    );
    // An absent block is created; all-zero chunks stay sparse.
    let c = block(3, 1);
    let mut sparse = vec![0u8; 200_000];
    sparse[199_999] = 1;
    assert_eq!(
        store
            .put_replica(offer(c, 7, Bytes::from(sparse)))
            .await
            .unwrap(),
        PutOutcome::Applied
    );
    let info = store.block_info(c).await.unwrap().unwrap();
    assert_eq!((info.version, info.length), (Version(7), 200_000));
    assert!(info.stored < 200_000);
    assert_eq!(store.stats().blocks, 2);
}

#[tokio::test]
async fn a_repair_put_replaces_only_a_corrupt_copy_of_the_same_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = block(5, 0);
    let good = Bytes::from(vec![7u8; 200_000]);
    store.put_replica(offer(b, 3, good.clone())).await.unwrap();
    let repair = |data: Bytes| ReplicaOffer {
        changes: None,
        repair: true,
        ..offer(b, 3, data)
    };
    // An intact copy is kept, even when offered different bytes.
    assert_eq!(
        store
            .put_replica(repair(Bytes::from(vec![1u8; 10])))
            .await
            .unwrap(),
        PutOutcome::AlreadyHeld
    );
    let db = store.raw_db().unwrap();
    let mut value = db.get(chunk_key(b, 2)).unwrap().unwrap();
    value[50] ^= 0x01;
    db.put(chunk_key(b, 2), &value).unwrap();
    drop(db);
    // A plain put of the same version does not look; a repair put does.
    assert_eq!(
        store.put_replica(offer(b, 3, good.clone())).await.unwrap(),
        PutOutcome::AlreadyHeld
    );
    assert_eq!(
        store.put_replica(repair(good.clone())).await.unwrap(),
        PutOutcome::Repaired
    );
    assert_eq!(store.metrics().repairs.get(), 1);
    assert!(store.metrics().checksum_failures.get() >= 1);
    let found = store
        .read(BlockRead {
            block: b,
            range: BlockRange::new(0, 200_000).unwrap(),
            owner_epoch: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.version, &found.data[..]), (Version(3), &good[..]));
    // An older repair offer never replaces newer data.
    assert_eq!(
        store
            .put_replica(ReplicaOffer {
                changes: None,
                repair: true,
                ..offer(b, 2, good)
            })
            .await
            .unwrap(),
        PutOutcome::SkippedStale { stored: Version(3) }
    );
}

#[tokio::test]
async fn a_newer_replica_replaces_the_job_of_the_copy_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = block(7, 0);
    // A secondary's copy and job at version 5.
    store
        .write_with_job(write(b, 0, vec![1; 10], 5), spec(false))
        .await
        .unwrap();
    // Another site's newer version replaces the copy: the job goes.
    assert_eq!(
        store
            .put_replica(offer(b, 8, Bytes::from(vec![2u8; 10])))
            .await
            .unwrap(),
        PutOutcome::Applied
    );
    assert!(store.job(b).await.unwrap().is_none());
    // A newer copy put with a job of its own replaces an older job.
    store
        .write_with_job(write(b, 0, vec![3; 10], 9), spec(false))
        .await
        .unwrap();
    let put = ReplicaOffer {
        changes: None,
        job: Some(JobSpec {
            targets: vec!["c1".into()],
            primary: true,
            peer: "a9".into(),
        }),
        ..offer(b, 12, Bytes::from(vec![4u8; 10]))
    };
    assert_eq!(store.put_replica(put).await.unwrap(), PutOutcome::Applied);
    let job = store.job(b).await.unwrap().unwrap();
    assert_eq!(
        (job.version, job.primary, job.peer.as_str()),
        (Version(12), true, "a9")
    );
    // An older put changes neither the copy nor the job.
    assert!(matches!(
        store
            .put_replica(offer(b, 10, Bytes::from(vec![5u8; 10])))
            .await
            .unwrap(),
        PutOutcome::SkippedStale {
            stored: Version(12)
        }
    ));
    assert_eq!(store.job(b).await.unwrap().unwrap().version, Version(12));
}

#[tokio::test]
async fn a_put_with_a_job_records_it_and_retargeting_changes_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let b = block(6, 0);
    let job = JobSpec {
        targets: vec!["c1".into(), "c2".into()],
        primary: false,
        peer: "a1".into(),
    };
    let put = ReplicaOffer {
        changes: None,
        job: Some(job.clone()),
        ..offer(b, 4, Bytes::from(vec![3u8; 1000]))
    };
    assert_eq!(
        store.put_replica(put.clone()).await.unwrap(),
        PutOutcome::Applied
    );
    let recorded = store.job(b).await.unwrap().unwrap();
    assert_eq!(
        (recorded.version, recorded.primary, recorded.peer.as_str()),
        (Version(4), false, "a1")
    );
    assert_eq!(recorded.targets, job.targets);
    assert!(store
        .retarget_job(b, Version(4), true, "a3".into())
        .await
        .unwrap());
    let recorded = store.job(b).await.unwrap().unwrap();
    assert_eq!((recorded.primary, recorded.peer.as_str()), (true, "a3"));
    // The same put again keeps the existing (retargeted) job.
    assert_eq!(
        store.put_replica(put).await.unwrap(),
        PutOutcome::AlreadyHeld
    );
    assert_eq!(store.job(b).await.unwrap().unwrap().peer, "a3");
    // A retarget of another version changes nothing.
    assert!(!store
        .retarget_job(b, Version(3), false, "x".into())
        .await
        .unwrap());
}
