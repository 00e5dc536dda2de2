//! State machine tests: apply semantics, reads, snapshot round trips, and a
//! single-voter raft-rs node running on the store.

use bytes::Bytes;
use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState};
use raft::{GetEntriesContext, Storage};

use super::{conf, empty_snapshot, new_entry, open_temp};
use crate::command::{Command, CommandOp, TxnCondition, TxnOp, TxnTest};
use crate::error::StoreError;
use crate::storage::{ApplyOutcome, ApplyResult, ConfChangeCommand, LogPoint, MetaStore};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn cmd_entry(index: u64, cmd: &Command) -> Entry {
    let mut e = new_entry(index, 1);
    e.data = cmd.encode().into();
    e
}

fn put(id: u64, k: &str, v: &str) -> Command {
    Command::put(id, b(k), b(v)).unwrap()
}

fn txn(id: u64, conditions: Vec<(&str, TxnTest)>, operations: Vec<TxnOp>) -> Command {
    Command {
        proposal_id: id,
        op: CommandOp::Txn {
            conditions: conditions
                .into_iter()
                .map(|(k, test)| TxnCondition { key: b(k), test })
                .collect(),
            operations,
        },
    }
}

fn tput(k: &str, v: &str) -> TxnOp {
    TxnOp::Put {
        key: b(k),
        value: b(v),
    }
}

fn no_conf(_: &ConfChangeCommand) -> Result<ConfState, StoreError> {
    Err(StoreError::Invalid("no conf change expected".into()))
}

/// A bootstrapped store; `apply` applies commands as entries 1, 2, … in
/// order, one batch per call.
struct Sm {
    _dir: tempfile::TempDir,
    store: MetaStore,
    next: u64,
}

impl Sm {
    fn new() -> Self {
        let (dir, store) = open_temp();
        store.bootstrap(&conf(&[1])).unwrap();
        Sm {
            _dir: dir,
            store,
            next: 1,
        }
    }

    fn apply(&mut self, cmds: &[Command]) -> Vec<ApplyResult> {
        let ents: Vec<Entry> = cmds
            .iter()
            .map(|c| {
                let e = cmd_entry(self.next, c);
                self.next += 1;
                e
            })
            .collect();
        self.store.append(&ents).unwrap();
        self.store.apply_entries(&ents, no_conf).unwrap()
    }

    fn apply_one(&mut self, cmd: Command) -> ApplyOutcome {
        let mut r = self.apply(&[cmd]);
        r.remove(0).outcome
    }

    fn value(&self, k: &str) -> Option<(String, u64)> {
        self.store
            .get(k.as_bytes())
            .unwrap()
            .map(|kv| (String::from_utf8(kv.value.to_vec()).unwrap(), kv.version))
    }
}

#[test]
fn put_and_delete_set_versions_to_the_entry_index() {
    let mut sm = Sm::new();
    let res = sm.apply(&[put(10, "a", "1"), put(11, "b", "2"), put(12, "a", "3")]);
    assert_eq!(res.len(), 3);
    assert_eq!(res[0].proposal_id, Some(10));
    assert_eq!((res[2].index, res[2].term), (3, 1));
    assert_eq!(res[2].outcome, ApplyOutcome::Put { version: 3 });
    assert_eq!(sm.value("a"), Some(("3".into(), 3)));
    assert_eq!(sm.value("b"), Some(("2".into(), 2)));
    let del = Command::delete(13, b("a")).unwrap();
    assert_eq!(
        sm.apply_one(del.clone()),
        ApplyOutcome::Delete { existed: true }
    );
    assert_eq!(sm.apply_one(del), ApplyOutcome::Delete { existed: false });
    assert_eq!(sm.value("a"), None);
    assert_eq!(sm.store.applied(), LogPoint::new(5, 1));
    // Applying bumped the stored commit index with the applied index.
    assert_eq!(sm.store.hard_state().commit, 5);
}

#[test]
fn entries_of_one_batch_see_each_others_writes() {
    let mut sm = Sm::new();
    let res = sm.apply(&[
        put(1, "k", "v"),
        txn(
            2,
            vec![("k", TxnTest::VersionEquals(1))],
            vec![tput("k", "w")],
        ),
        Command::delete(3, b("k")).unwrap(),
        txn(4, vec![("k", TxnTest::Absent)], vec![tput("x", "y")]),
    ]);
    let outcomes: Vec<_> = res.into_iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            ApplyOutcome::Put { version: 1 },
            ApplyOutcome::Txn {
                succeeded: true,
                version: 2
            },
            ApplyOutcome::Delete { existed: true },
            ApplyOutcome::Txn {
                succeeded: true,
                version: 4
            },
        ]
    );
    assert_eq!(sm.value("k"), None);
    assert_eq!(sm.value("x"), Some(("y".into(), 4)));
}

#[test]
fn txn_conditions_all_or_nothing() {
    let mut sm = Sm::new();
    sm.apply(&[put(1, "a", "1"), put(2, "b", "2")]);
    let failed = ApplyOutcome::Txn {
        succeeded: false,
        version: 0,
    };
    let ops = || vec![tput("c", "new"), TxnOp::Delete { key: b("b") }];
    let cases: Vec<(Vec<(&str, TxnTest)>, bool)> = vec![
        (vec![("a", TxnTest::VersionEquals(2))], false),
        (vec![("a", TxnTest::ValueEquals(b("x")))], false),
        (vec![("zz", TxnTest::ValueEquals(b("")))], false),
        (vec![("a", TxnTest::Absent)], false),
        (vec![("zz", TxnTest::Present)], false),
        // one failing condition among holding ones fails the whole txn
        (
            vec![("a", TxnTest::Present), ("b", TxnTest::VersionEquals(9))],
            false,
        ),
        (
            vec![
                ("a", TxnTest::VersionEquals(1)),
                ("a", TxnTest::ValueEquals(b("1"))),
                ("b", TxnTest::Present),
                ("zz", TxnTest::Absent),
                ("zz", TxnTest::VersionEquals(0)),
            ],
            true,
        ),
    ];
    for (i, (conds, succeeds)) in cases.into_iter().enumerate() {
        let index = sm.next;
        let outcome = sm.apply_one(txn(100 + i as u64, conds, ops()));
        if succeeds {
            assert_eq!(
                outcome,
                ApplyOutcome::Txn {
                    succeeded: true,
                    version: index
                },
                "#{i}"
            );
            assert_eq!(sm.value("c"), Some(("new".into(), index)));
            assert_eq!(sm.value("b"), None);
        } else {
            assert_eq!(outcome, failed, "#{i}");
            // nothing applied, but the applied index moved on
            assert_eq!(sm.value("c"), None, "#{i}");
            assert_eq!(sm.value("b"), Some(("2".into(), 2)), "#{i}");
            assert_eq!(sm.store.applied_index(), index, "#{i}");
        }
    }
}

#[test]
fn noops_invalid_commands_and_misuse() {
    let mut sm = Sm::new();
    // A leader's empty entry is a no-op that only moves the applied index.
    let noop = new_entry(1, 2);
    sm.store.append(std::slice::from_ref(&noop)).unwrap();
    let res = sm.store.apply_entries(&[noop], no_conf).unwrap();
    assert_eq!(res[0].outcome, ApplyOutcome::Noop);
    assert_eq!(res[0].proposal_id, None);
    assert_eq!(sm.store.applied(), LogPoint::new(1, 2));
    sm.next = 2;

    // A command breaking the limits is rejected identically everywhere.
    let bad = Command {
        proposal_id: 5,
        op: CommandOp::Put {
            key: Bytes::new(),
            value: b("v"),
        },
    };
    match sm.apply_one(bad) {
        ApplyOutcome::Rejected { reason } => assert!(reason.contains("key"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // Skipping or repeating an index is refused and changes nothing.
    let e = cmd_entry(9, &put(1, "a", "1"));
    assert!(matches!(
        sm.store.apply_entries(&[e], no_conf),
        Err(StoreError::Invalid(_))
    ));
    let e = cmd_entry(2, &put(1, "a", "1"));
    assert!(sm.store.apply_entries(&[e], no_conf).is_err());

    // Undecodable command bytes: corruption, and nothing of the batch lands.
    let good = cmd_entry(3, &put(1, "a", "1"));
    let mut garbage = new_entry(4, 1);
    garbage.data = Bytes::from_static(b"\x01\x09junk");
    let err = sm
        .store
        .apply_entries(&[good, garbage], no_conf)
        .unwrap_err();
    assert!(
        err.is_corruption() && err.to_string().contains("entry 4"),
        "{err}"
    );
    assert_eq!(sm.value("a"), None);
    assert_eq!(sm.store.applied_index(), 2);
}

#[test]
fn conf_changes_are_stored_with_the_applied_index() {
    let (dir, store) = open_temp();
    store.bootstrap(&conf(&[1])).unwrap();
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddNode);
    cc.node_id = 2;
    cc.context = Bytes::from_static(b"127.1.0.12:7000");
    let mut e = new_entry(1, 1);
    e.set_entry_type(EntryType::EntryConfChange);
    e.data = cc.write_to_bytes().unwrap().into();
    let ents = vec![e, cmd_entry(2, &put(3, "k", "v"))];
    store.append(&ents).unwrap();
    let mut seen = Vec::new();
    let res = store
        .apply_entries(&ents, |cmd| {
            seen.push(cmd.context().to_vec());
            match cmd {
                ConfChangeCommand::V1(cc) => Ok(conf(&[1, cc.node_id])),
                ConfChangeCommand::V2(_) => panic!("v1 expected"),
            }
        })
        .unwrap();
    assert_eq!(seen, vec![b"127.1.0.12:7000".to_vec()]);
    assert_eq!(
        res[0].outcome,
        ApplyOutcome::ConfChange {
            conf_state: conf(&[1, 2])
        }
    );
    assert_eq!(store.conf_state(), conf(&[1, 2]));
    drop(store);
    let store = MetaStore::open_in_data_dir(dir.path()).unwrap();
    assert_eq!(store.conf_state().voters, vec![1, 2]);
    assert_eq!(store.applied_index(), 2);
    // The callback's failure aborts the batch.
    let mut e = new_entry(3, 1);
    e.set_entry_type(EntryType::EntryConfChangeV2);
    store.append(std::slice::from_ref(&e)).unwrap();
    assert!(store.apply_entries(&[e], no_conf).is_err());
    assert_eq!(store.applied_index(), 2);
}

#[test]
fn scan_respects_bounds_and_limit() {
    let mut sm = Sm::new();
    sm.apply(&[
        put(1, "a", "1"),
        put(2, "b/1", "2"),
        put(3, "b/2", "3"),
        put(4, "b/3", "4"),
        put(5, "c", "5"),
    ]);
    let keys = |kvs: &[geonfs_proto::meta::KeyValue]| -> Vec<String> {
        kvs.iter()
            .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
            .collect()
    };
    let (kvs, more) = sm.store.scan(b"b/", Some(b"b0"), 10).unwrap();
    assert_eq!(
        (keys(&kvs), more),
        (vec!["b/1".into(), "b/2".into(), "b/3".into()], false)
    );
    let (kvs, more) = sm.store.scan(b"b/", Some(b"b0"), 2).unwrap();
    assert_eq!((keys(&kvs), more), (vec!["b/1".into(), "b/2".into()], true));
    let (kvs, more) = sm.store.scan(b"b/", Some(b"b0"), 3).unwrap();
    assert_eq!((kvs.len(), more), (3, false));
    let (kvs, more) = sm.store.scan(b"", None, 100).unwrap();
    assert_eq!((kvs.len(), more), (5, false));
    assert_eq!(kvs[4].version, 5);
    let (kvs, more) = sm.store.scan(b"c", Some(b"a"), 100).unwrap();
    assert!(kvs.is_empty() && !more);
}

#[test]
fn snapshot_round_trip_into_a_fresh_store() {
    let mut a = Sm::new();
    a.store.set_conf_state(&conf(&[1, 2, 3])).unwrap();
    a.apply(&[put(1, "a", "1"), put(2, "b", "2"), put(3, "c", "3")]);
    a.apply(&[Command::delete(4, b("b")).unwrap()]);
    let snap = a.store.build_snapshot().unwrap();
    assert_eq!(snap.get_metadata().index, 4);
    assert_eq!(snap.get_metadata().term, 1);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);

    // B has its own older state (keys that must vanish) and a short log.
    let mut b_sm = Sm::new();
    b_sm.apply(&[put(1, "zzz", "old"), put(2, "a", "old")]);
    b_sm.store
        .append(&[new_entry(3, 1), new_entry(4, 1), new_entry(5, 1)])
        .unwrap();
    let dir = b_sm._dir;
    let store = b_sm.store;
    store.persist_ready(&[], None, Some(&snap)).unwrap();

    let check = |store: &MetaStore| {
        let (kvs, more) = store.scan(b"", None, 100).unwrap();
        let (akvs, _) = a.store.scan(b"", None, 100).unwrap();
        assert_eq!(kvs, akvs);
        assert!(!more);
        assert_eq!(store.applied(), LogPoint::new(4, 1));
        assert_eq!(store.first_index(), Ok(5));
        assert_eq!(store.last_index(), Ok(4));
        assert_eq!(store.term(4), Ok(1));
        assert_eq!(store.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(store.hard_state().commit, 4);
        assert_eq!(store.build_snapshot().unwrap().data, snap.data);
    };
    check(&store);
    drop(store);
    let store = MetaStore::open_in_data_dir(dir.path()).unwrap();
    check(&store);
    // Entries continue right after the snapshot.
    store.append(&[new_entry(5, 2)]).unwrap();
    let applied = store
        .apply_entries(&[cmd_entry(5, &put(9, "d", "4"))], no_conf)
        .unwrap();
    assert_eq!(applied[0].outcome, ApplyOutcome::Put { version: 5 });
}

#[test]
fn damaged_snapshots_are_rejected_and_change_nothing() {
    let mut a = Sm::new();
    a.apply(&[put(1, "a", "1"), put(2, "b", "2")]);
    let snap = a.store.build_snapshot().unwrap();

    let (_dir, b_store) = open_temp();
    let mut truncated = snap.clone();
    truncated.data = snap.data.slice(..snap.data.len() - 3);
    let err = b_store.apply_snapshot(&truncated).unwrap_err();
    assert!(matches!(err, StoreError::BadSnapshot(_)), "{err}");

    let mut garbled = snap.clone();
    let mut data = snap.data.to_vec();
    data[30] ^= 0x01;
    garbled.data = data.into();
    assert!(matches!(
        b_store.apply_snapshot(&garbled),
        Err(StoreError::BadSnapshot(_))
    ));

    let mut mismatched = snap.clone();
    mismatched.mut_metadata().index = 9;
    let err = b_store.apply_snapshot(&mismatched).unwrap_err();
    assert!(err.to_string().contains("metadata says index 9"), "{err}");

    let mut empty_data = empty_snapshot(2, 1, &[1]);
    empty_data.data = Bytes::new();
    assert!(b_store.apply_snapshot(&empty_data).is_err());

    assert!(!b_store.is_bootstrapped());
    assert_eq!(b_store.last_index(), Ok(0));
    assert_eq!(b_store.get(b"a").unwrap(), None);
    b_store.apply_snapshot(&snap).unwrap();
    assert_eq!(b_store.get(b"b").unwrap().unwrap().version, 2);
}

// ----- a single-voter raft-rs node on the store -----

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// One round of the raft-rs Ready protocol against the store.
fn on_ready(node: &mut raft::RawNode<MetaStore>, store: &MetaStore) -> Vec<ApplyResult> {
    let mut results = Vec::new();
    if !node.has_ready() {
        return results;
    }
    let mut ready = node.ready();
    store
        .persist_ready(ready.entries(), ready.hs(), Some(ready.snapshot()))
        .unwrap();
    let committed = ready.take_committed_entries();
    results.extend(store.apply_entries(&committed, no_conf).unwrap());
    let mut light = node.advance(ready);
    if let Some(commit) = light.commit_index() {
        let mut hs: HardState = store.hard_state();
        hs.commit = hs.commit.max(commit);
        store.set_hard_state(&hs).unwrap();
    }
    let committed = light.take_committed_entries();
    results.extend(store.apply_entries(&committed, no_conf).unwrap());
    node.advance_apply();
    results
}

#[test]
fn raft_node_runs_on_the_store_and_restarts() {
    let (dir, store) = open_temp();
    store.bootstrap(&conf(&[1])).unwrap();
    let cfg = |applied| raft::Config {
        id: 1,
        election_tick: 10,
        heartbeat_tick: 3,
        applied,
        ..Default::default()
    };
    let mut node = raft::RawNode::new(&cfg(0), store.clone(), &logger()).unwrap();
    node.campaign().unwrap();
    for _ in 0..3 {
        on_ready(&mut node, &store);
    }
    assert_eq!(node.raft.state, raft::StateRole::Leader);
    node.propose(vec![], put(42, "dir/x", "inode").encode())
        .unwrap();
    let mut results = Vec::new();
    for _ in 0..3 {
        results.extend(on_ready(&mut node, &store));
    }
    let mine: Vec<_> = results
        .iter()
        .filter(|r| r.proposal_id == Some(42))
        .collect();
    assert_eq!(mine.len(), 1);
    let version = mine[0].index;
    assert_eq!(mine[0].outcome, ApplyOutcome::Put { version });
    assert_eq!(store.get(b"dir/x").unwrap().unwrap().version, version);
    store.compact(store.applied_index()).unwrap();
    let applied = store.applied_index();
    drop(node);
    drop(store);

    let store = MetaStore::open_in_data_dir(dir.path()).unwrap();
    assert_eq!(store.applied_index(), applied);
    let mut node = raft::RawNode::new(&cfg(applied), store.clone(), &logger()).unwrap();
    node.campaign().unwrap();
    for _ in 0..3 {
        on_ready(&mut node, &store);
    }
    assert_eq!(node.raft.state, raft::StateRole::Leader);
    node.propose(vec![], put(43, "dir/y", "2").encode())
        .unwrap();
    for _ in 0..3 {
        on_ready(&mut node, &store);
    }
    assert!(store.get(b"dir/y").unwrap().is_some());
    assert!(store.get(b"dir/x").unwrap().is_some());
    let ents = store
        .entries(
            store.first_index().unwrap(),
            store.last_index().unwrap() + 1,
            None,
            GetEntriesContext::empty(false),
        )
        .unwrap();
    assert!(!ents.is_empty());
}
