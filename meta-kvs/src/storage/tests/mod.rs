//! `raft::Storage` semantics (mirroring raft-rs's own `MemStorage` tests),
//! persistence across reopen and corruption detection at open.

mod state_machine;

use std::path::Path;

use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{Error as RaftError, GetEntriesContext, Storage, StorageError};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use tempfile::TempDir;

use crate::error::StoreError;
use crate::storage::keys::{
    log_key, ALL_CFS, APPLIED_KEY, CF_KV, CF_META, CF_RAFT_LOG, CF_RAFT_STATE,
};
use crate::storage::keys::{HARD_STATE_KEY, TRUNCATED_KEY};
use crate::storage::snapshot_data::SnapshotWriter;
use crate::storage::{LogPoint, MetaStore};

pub(super) fn new_entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        ..Default::default()
    }
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

pub(super) fn open_temp() -> (TempDir, MetaStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open_in_data_dir(dir.path()).unwrap();
    (dir, store)
}

pub(super) fn conf(voters: &[u64]) -> ConfState {
    ConfState::from((voters.to_vec(), Vec::<u64>::new()))
}

/// An (empty) state machine snapshot at `index`/`term` with `voters`.
pub(super) fn empty_snapshot(index: u64, term: u64, voters: &[u64]) -> Snapshot {
    let mut s = Snapshot {
        data: SnapshotWriter::new(index, term).finish().into(),
        ..Default::default()
    };
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().set_conf_state(conf(voters));
    s
}

/// A store whose log is truncated at (first-1, first-1) and holds `ents`,
/// like MemStorage's tests that start the log at index 3.
fn store_with(ents: &[Entry]) -> (TempDir, MetaStore) {
    let (dir, store) = open_temp();
    let first = ents[0].index;
    store
        .apply_snapshot(&empty_snapshot(first - 1, first - 1, &[1, 2, 3]))
        .unwrap();
    store.append(ents).unwrap();
    (dir, store)
}

fn ents_3_to(last: u64) -> Vec<Entry> {
    (3..=last).map(|i| new_entry(i, i)).collect()
}

fn all_entries(store: &MetaStore) -> Vec<Entry> {
    let first = store.first_index().unwrap();
    let last = store.last_index().unwrap();
    store
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
}

fn size_of(e: &Entry) -> u64 {
    u64::from(e.compute_size())
}

fn err_of(e: StorageError) -> RaftError {
    RaftError::Store(e)
}

#[test]
fn storage_term() {
    let (_dir, store) = store_with(&ents_3_to(5));
    assert_eq!(store.term(1), Err(err_of(StorageError::Compacted)));
    // The truncation point keeps its term (MemStorage's snapshot metadata).
    assert_eq!(store.term(2), Ok(2));
    assert_eq!(store.term(3), Ok(3));
    assert_eq!(store.term(4), Ok(4));
    assert_eq!(store.term(5), Ok(5));
    assert_eq!(store.term(6), Err(err_of(StorageError::Unavailable)));
}

#[test]
fn storage_entries() {
    let ents = ents_3_to(6);
    let (_dir, store) = store_with(&ents);
    let max = u64::MAX;
    let s = |i: usize| size_of(&ents[i]);
    type Case = (u64, u64, u64, Result<Vec<Entry>, RaftError>);
    let tests: Vec<Case> = vec![
        (2, 6, max, Err(err_of(StorageError::Compacted))),
        (3, 4, max, Ok(vec![new_entry(3, 3)])),
        (4, 5, max, Ok(vec![new_entry(4, 4)])),
        (4, 6, max, Ok(vec![new_entry(4, 4), new_entry(5, 5)])),
        (4, 7, max, Ok(ents[1..].to_vec())),
        // even if max size is zero, the first entry is returned
        (4, 7, 0, Ok(vec![new_entry(4, 4)])),
        (4, 7, s(1) + s(2), Ok(ents[1..3].to_vec())),
        (4, 7, s(1) + s(2) + s(3) / 2, Ok(ents[1..3].to_vec())),
        (4, 7, s(1) + s(2) + s(3) - 1, Ok(ents[1..3].to_vec())),
        (4, 7, s(1) + s(2) + s(3), Ok(ents[1..].to_vec())),
        (4, 8, max, Err(err_of(StorageError::Unavailable))),
        (5, 5, max, Ok(vec![])),
    ];
    for (i, (lo, hi, max_size, want)) in tests.into_iter().enumerate() {
        let got = store.entries(lo, hi, max_size, GetEntriesContext::empty(false));
        assert_eq!(got, want, "#{i}: entries({lo}, {hi}, {max_size})");
    }
    assert_eq!(
        store.entries(3, 7, None, GetEntriesContext::empty(false)),
        Ok(ents)
    );
}

#[test]
fn storage_first_and_last_index() {
    let (_dir, store) = store_with(&ents_3_to(5));
    assert_eq!(store.first_index(), Ok(3));
    assert_eq!(store.last_index(), Ok(5));
    store.append(&[new_entry(6, 5)]).unwrap();
    assert_eq!(store.last_index(), Ok(6));
    store
        .apply_entries(&ents_3_to(4), |_| unreachable!())
        .unwrap();
    store.compact(4).unwrap();
    assert_eq!(store.first_index(), Ok(4));
    assert_eq!(store.last_index(), Ok(6));
}

#[test]
fn storage_compact() {
    // (compact index, want first index, want term of first, want entries)
    let tests = [(2, 3, 3, 3), (3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)];
    for (i, (idx, windex, wterm, wlen)) in tests.into_iter().enumerate() {
        let (_dir, store) = store_with(&ents_3_to(5));
        store
            .apply_entries(&ents_3_to(5), |_| unreachable!())
            .unwrap();
        store.compact(idx).unwrap();
        let index = store.first_index().unwrap();
        assert_eq!(index, windex, "#{i}");
        let first = store
            .entries(index, index + 1, 1, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(first[0].term, wterm, "#{i}");
        assert_eq!(all_entries(&store).len(), wlen, "#{i}");
        // The term of the entry before the first one is kept.
        assert_eq!(store.term(index - 1), Ok(index - 1), "#{i}");
        assert_eq!(
            store.term(index - 2),
            Err(err_of(StorageError::Compacted)),
            "#{i}"
        );
    }
}

#[test]
fn compact_refuses_unapplied_or_missing_entries() {
    let (_dir, store) = store_with(&ents_3_to(5));
    // Applied index is 2 (the snapshot point): entry 3 onwards is unapplied.
    let err = store.compact(4).unwrap_err();
    assert!(err.to_string().contains("unapplied"), "{err}");
    store
        .apply_entries(&ents_3_to(5), |_| unreachable!())
        .unwrap();
    let err = store.compact(7).unwrap_err();
    assert!(err.to_string().contains("beyond the log"), "{err}");
    // Compacting everything applied is fine: log empty, last = truncated.
    store.compact(6).unwrap();
    assert_eq!(store.first_index(), Ok(6));
    assert_eq!(store.last_index(), Ok(5));
    assert_eq!(store.term(5), Ok(5));
    assert!(all_entries(&store).is_empty());
}

#[test]
fn storage_append() {
    let e = new_entry;
    let tests: Vec<(Vec<Entry>, Option<Vec<Entry>>)> = vec![
        (ents_3_to(5), Some(ents_3_to(5))),
        (
            vec![e(3, 3), e(4, 6), e(5, 6)],
            Some(vec![e(3, 3), e(4, 6), e(5, 6)]),
        ),
        (
            vec![e(3, 3), e(4, 4), e(5, 5), e(6, 5)],
            Some(vec![e(3, 3), e(4, 4), e(5, 5), e(6, 5)]),
        ),
        // overwriting compacted entries is refused
        (vec![e(2, 3), e(3, 3), e(4, 5)], None),
        // truncate the existing entries and append
        (vec![e(4, 5)], Some(vec![e(3, 3), e(4, 5)])),
        // direct append
        (
            vec![e(6, 6)],
            Some(vec![e(3, 3), e(4, 4), e(5, 5), e(6, 6)]),
        ),
        // a gap is refused
        (vec![e(7, 6)], None),
        // non-contiguous input is refused
        (vec![e(4, 4), e(6, 6)], None),
    ];
    for (i, (entries, want)) in tests.into_iter().enumerate() {
        let (dir, store) = store_with(&ents_3_to(5));
        let res = store.append(&entries);
        match want {
            Some(want) => {
                res.unwrap();
                assert_eq!(all_entries(&store), want, "#{i}");
                // The truncated suffix is gone on disk too.
                drop(store);
                let store = MetaStore::open_in_data_dir(dir.path()).unwrap();
                assert_eq!(all_entries(&store), want, "#{i} after reopen");
                assert_eq!(store.last_index(), Ok(want.last().unwrap().index));
            }
            None => {
                assert!(matches!(res, Err(StoreError::Invalid(_))), "#{i}: {res:?}");
                assert_eq!(all_entries(&store), ents_3_to(5), "#{i} unchanged");
            }
        }
    }
}

#[test]
fn storage_create_snapshot() {
    let (_dir, store) = store_with(&ents_3_to(5));
    store
        .apply_entries(&ents_3_to(4), |_| unreachable!())
        .unwrap();
    let snap = store.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 4);
    assert_eq!(snap.get_metadata().term, 4);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
    assert_eq!(store.snapshot(4, 2).unwrap().get_metadata().index, 4);
    assert_eq!(
        store.snapshot(5, 2),
        Err(err_of(StorageError::SnapshotTemporarilyUnavailable))
    );
    // Nothing applied at all: no snapshot to give.
    let (_dir2, fresh) = open_temp();
    fresh.bootstrap(&conf(&[1])).unwrap();
    assert_eq!(
        fresh.snapshot(0, 2),
        Err(err_of(StorageError::SnapshotTemporarilyUnavailable))
    );
}

#[test]
fn storage_apply_snapshot() {
    let (_dir, store) = open_temp();
    store
        .apply_snapshot(&empty_snapshot(4, 4, &[1, 2, 3]))
        .unwrap();
    assert_eq!(store.first_index(), Ok(5));
    assert_eq!(store.last_index(), Ok(4));
    assert_eq!(store.term(4), Ok(4));
    assert_eq!(store.applied(), LogPoint::new(4, 4));
    let hs = store.hard_state();
    assert_eq!((hs.commit, hs.term), (4, 4));
    assert!(store.is_bootstrapped());
    let err = store
        .apply_snapshot(&empty_snapshot(3, 3, &[1, 2, 3]))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Raft(RaftError::Store(StorageError::SnapshotOutOfDate))
    ));
}

#[test]
fn bootstrap_mirrors_memstorage_new_with_conf_state() {
    let (dir, store) = open_temp();
    assert!(!store.is_bootstrapped());
    assert!(!store.initial_state().unwrap().initialized());
    store.bootstrap(&conf(&[1, 2, 3])).unwrap();
    assert!(store.is_bootstrapped());
    let state = store.initial_state().unwrap();
    assert!(state.initialized());
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!(store.first_index(), Ok(1));
    assert_eq!(store.last_index(), Ok(0));
    assert_eq!(store.term(0), Ok(0));
    assert!(matches!(
        store.bootstrap(&conf(&[1, 2, 3])),
        Err(StoreError::AlreadyBootstrapped(_))
    ));
    drop(store);
    let store = MetaStore::open_in_data_dir(dir.path()).unwrap();
    assert!(store.is_bootstrapped());
    assert!(store.bootstrap(&conf(&[1])).is_err());
    let (_dir2, other) = open_temp();
    assert!(matches!(
        other.bootstrap(&ConfState::default()),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn persist_ready_is_one_batch_of_snapshot_entries_and_hard_state() {
    let (_dir, store) = open_temp();
    let snap = empty_snapshot(10, 2, &[1, 2]);
    let hs = hard_state(3, 2, 11);
    let ents = vec![new_entry(11, 3), new_entry(12, 3)];
    store.persist_ready(&ents, Some(&hs), Some(&snap)).unwrap();
    assert_eq!(store.first_index(), Ok(11));
    assert_eq!(store.last_index(), Ok(12));
    assert_eq!(store.term(10), Ok(2));
    assert_eq!(store.hard_state(), hs);
    assert_eq!(store.applied_index(), 10);
    // An empty snapshot and nothing else is a no-op.
    store
        .persist_ready(&[], None, Some(&Snapshot::default()))
        .unwrap();
    assert_eq!(store.last_index(), Ok(12));
}

#[test]
fn reopen_keeps_log_states_applied_index_and_data() {
    let (dir, store) = open_temp();
    store.bootstrap(&conf(&[1, 2, 3])).unwrap();
    let mut ents: Vec<Entry> = (1..=4).map(|i| new_entry(i, 1)).collect();
    ents[1].data = crate::Command::put(7, "a".into(), "x".into())
        .unwrap()
        .encode()
        .into();
    let hs = hard_state(1, 1, 3);
    store.persist_ready(&ents, Some(&hs), None).unwrap();
    store.apply_entries(&ents[..3], |_| unreachable!()).unwrap();
    store.set_conf_state(&conf(&[1, 2, 3, 4])).unwrap();
    drop(store);

    let store = MetaStore::open_in_data_dir(dir.path()).unwrap();
    let state = store.initial_state().unwrap();
    assert_eq!(state.hard_state, hs);
    assert_eq!(state.conf_state.voters, vec![1, 2, 3, 4]);
    assert_eq!(all_entries(&store), ents);
    assert_eq!(store.applied(), LogPoint::new(3, 1));
    let kv = store.get(b"a").unwrap().unwrap();
    assert_eq!((&kv.value[..], kv.version), (&b"x"[..], 2));
}

// ----- corruption at open -----

fn raw_db(path: &Path) -> DB {
    let cfs = ALL_CFS
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
    DB::open_cf_descriptors(&Options::default(), path, cfs).unwrap()
}

/// A closed store with a bootstrapped log 1..=5, commit 5, applied 3.
fn populated_dir() -> TempDir {
    let (dir, store) = open_temp();
    store.bootstrap(&conf(&[1])).unwrap();
    let ents: Vec<Entry> = (1..=5).map(|i| new_entry(i, 1)).collect();
    let hs = hard_state(1, 0, 5);
    store.persist_ready(&ents, Some(&hs), None).unwrap();
    store.apply_entries(&ents[..3], |_| unreachable!()).unwrap();
    dir
}

fn corrupt_and_reopen(edit: impl FnOnce(&DB)) -> StoreError {
    let dir = populated_dir();
    let path = dir.path().join(crate::storage::DB_DIR);
    {
        let db = raw_db(&path);
        edit(&db);
    }
    let err = MetaStore::open(&path).unwrap_err();
    assert!(err.is_corruption(), "not corruption: {err}");
    err
}

#[test]
fn open_detects_a_garbled_hard_state() {
    let err = corrupt_and_reopen(|db| {
        let cf = db.cf_handle(CF_RAFT_STATE).unwrap();
        db.put_cf(cf, HARD_STATE_KEY, [0xff, 0xff, 0xff]).unwrap();
    });
    assert!(err.to_string().contains("raft_state/hard_state"), "{err}");
}

#[test]
fn open_detects_applied_beyond_commit() {
    let err = corrupt_and_reopen(|db| {
        let cf = db.cf_handle(CF_META).unwrap();
        db.put_cf(cf, APPLIED_KEY, LogPoint::new(7, 1).encode())
            .unwrap();
    });
    assert!(err.to_string().contains("meta/applied"), "{err}");
    assert!(err.to_string().contains("beyond the commit"), "{err}");
}

#[test]
fn open_detects_a_log_hole() {
    let err = corrupt_and_reopen(|db| {
        let cf = db.cf_handle(CF_RAFT_LOG).unwrap();
        db.delete_cf(cf, log_key(3)).unwrap();
    });
    assert!(
        err.to_string().contains("hole between entries 2 and 4"),
        "{err}"
    );
}

#[test]
fn open_detects_commit_beyond_the_log() {
    let err = corrupt_and_reopen(|db| {
        let cf = db.cf_handle(CF_RAFT_LOG).unwrap();
        db.delete_cf(cf, log_key(5)).unwrap();
        db.delete_cf(cf, log_key(4)).unwrap();
    });
    assert!(
        err.to_string().contains("commit index 5 is beyond"),
        "{err}"
    );
}

#[test]
fn open_detects_undecodable_entries_and_stale_truncation() {
    let err = corrupt_and_reopen(|db| {
        let cf = db.cf_handle(CF_RAFT_LOG).unwrap();
        db.put_cf(cf, log_key(5), b"\xff\xff garbage").unwrap();
    });
    assert!(err.to_string().contains("raft_log entry 5"), "{err}");
    let err = corrupt_and_reopen(|db| {
        let cf = db.cf_handle(CF_RAFT_STATE).unwrap();
        db.put_cf(cf, TRUNCATED_KEY, LogPoint::new(2, 1).encode())
            .unwrap();
    });
    assert!(err.to_string().contains("first entry is 1"), "{err}");
    let err = corrupt_and_reopen(|db| {
        let cf = db.cf_handle(CF_META).unwrap();
        db.put_cf(cf, APPLIED_KEY, b"short").unwrap();
    });
    assert!(err.to_string().contains("meta/applied"), "{err}");
}

#[test]
fn garbled_kv_record_is_reported_on_read() {
    let dir = populated_dir();
    let path = dir.path().join(crate::storage::DB_DIR);
    {
        let db = raw_db(&path);
        let cf = db.cf_handle(CF_KV).unwrap();
        db.put_cf(cf, b"k", b"\x07").unwrap();
    }
    let store = MetaStore::open(&path).unwrap();
    let err = store.get(b"k").unwrap_err();
    assert!(
        err.is_corruption() && err.to_string().contains("\"k\""),
        "{err}"
    );
    assert!(store.build_snapshot().unwrap_err().is_corruption());
    // raft sees corruption as an error, not "temporarily unavailable".
    assert!(matches!(
        store.snapshot(0, 2),
        Err(RaftError::Store(StorageError::Other(_)))
    ));
}

#[test]
fn store_errors_map_to_raft_errors() {
    let e: RaftError = StoreError::Raft(err_of(StorageError::Compacted)).into();
    assert_eq!(e, err_of(StorageError::Compacted));
    let e: RaftError = StoreError::corrupt("x", "y").into();
    assert!(e.to_string().contains("meta store corrupt: x: y"), "{e}");
}

#[test]
fn store_handle_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<MetaStore>();
}
