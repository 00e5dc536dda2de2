//! The state machine side of the store: applying committed entries, and
//! reads.

use std::collections::BTreeMap;

use bytes::Bytes;
use geonfs_proto::meta::KeyValue;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType};
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::keys::{decode_pb, encode_pb, APPLIED_KEY, CF_KV, CF_META, CF_RAFT_STATE};
use super::keys::{CONF_STATE_KEY, HARD_STATE_KEY};
use super::{cf, LogPoint, MetaStore, ValueRecord};
use crate::command::{Command, CommandOp, TxnOp, TxnTest};
use crate::error::StoreError;

/// What applying one committed entry did.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyResult {
    /// The entry's index.
    pub index: u64,
    /// The entry's term (lets the driver check that a result belongs to the
    /// proposal it holds, not to another leader's entry at that index).
    pub term: u64,
    /// The command's proposal id; `None` for leader no-ops and conf changes.
    pub proposal_id: Option<u64>,
    /// The outcome.
    pub outcome: ApplyOutcome,
}

/// The outcome of one applied entry.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyOutcome {
    /// An empty entry (a new leader's no-op): only the applied index moved.
    Noop,
    /// A Put; the key's new version (= the entry index).
    Put {
        /// The new version.
        version: u64,
    },
    /// A Delete.
    Delete {
        /// Whether the key existed.
        existed: bool,
    },
    /// A Txn.
    Txn {
        /// Whether every condition held (and so every operation applied).
        succeeded: bool,
        /// The version of its writes (the entry index) when it succeeded, else 0.
        version: u64,
    },
    /// A conf change, applied to raft by the driver's callback; the
    /// resulting conf state is stored with the applied index.
    ConfChange {
        /// The conf state after the change.
        conf_state: ConfState,
    },
    /// A command that breaks the key/value limits; nothing was written. The
    /// decision depends only on the command, so every replica agrees.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// A decoded conf change entry, handed to the driver's callback.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfChangeCommand {
    /// From an `EntryConfChange` entry.
    V1(ConfChange),
    /// From an `EntryConfChangeV2` entry (an empty one means "leave the joint
    /// configuration").
    V2(ConfChangeV2),
}

impl ConfChangeCommand {
    /// The change's context (whatever the proposer put there, e.g. the new
    /// member's address).
    pub fn context(&self) -> &[u8] {
        match self {
            ConfChangeCommand::V1(cc) => &cc.context,
            ConfChangeCommand::V2(cc) => &cc.context,
        }
    }
}

/// Writes of the entries being applied, not yet in RocksDB: later entries of
/// the same batch must see them. `None` = deleted.
type Overlay = BTreeMap<Bytes, Option<ValueRecord>>;

impl MetaStore {
    /// Applies committed entries, in order, starting right after the applied
    /// index, and returns one result per entry.
    ///
    /// * Normal entries with data carry a [`Command`]; each write sets the
    ///   key's version to the entry index. Empty entries are no-ops.
    /// * Conf change entries are decoded and passed to `on_conf_change`, which
    ///   must apply them to raft (`RawNode::apply_conf_change`) and return the
    ///   new `ConfState`; the store saves that conf state **in the same batch
    ///   as the applied index**, so after a crash the two always agree (raft
    ///   will not replay entries at or below the applied index). The callback
    ///   may read the store but must not write to it (it would deadlock).
    ///
    /// All state machine changes, the conf state and the new applied index
    /// go into ONE `WriteBatch`, written **without sync**. That is safe: the
    /// entries are already in the synced Raft log, the RocksDB WAL keeps each
    /// batch atomic and recovers a prefix of batches, and a later synced
    /// write (the next `persist_ready`) syncs the same WAL. After a crash the
    /// applied index is at worst older than it was, and raft replays the
    /// committed entries after it; replay is deterministic. Durability
    /// towards clients comes from the Raft commit (a synced quorum), not from
    /// this write.
    ///
    /// raft-rs may hand out committed entries before the `Ready`'s hard state
    /// (with the new commit index) is persisted; to keep `applied ≤ commit` on
    /// disk (raft-rs refuses to start otherwise), the batch raises the stored
    /// commit index to the applied index when needed.
    ///
    /// An entry that is not the next one is [`StoreError::Invalid`]; command
    /// bytes that do not decode are [`StoreError::Corrupt`] and nothing of
    /// the batch is written.
    pub fn apply_entries<F>(
        &self,
        entries: &[Entry],
        mut on_conf_change: F,
    ) -> Result<Vec<ApplyResult>, StoreError>
    where
        F: FnMut(&ConfChangeCommand) -> Result<ConfState, StoreError>,
    {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let _w = self.write_guard();
        let mut meta = self.state().clone();
        let mut overlay = Overlay::new();
        let mut new_conf: Option<ConfState> = None;
        let mut results = Vec::with_capacity(entries.len());
        for e in entries {
            if e.index != meta.applied.index + 1 {
                return Err(StoreError::Invalid(format!(
                    "apply of entry {} but the applied index is {}",
                    e.index, meta.applied.index
                )));
            }
            let what = || format!("raft_log entry {}", e.index);
            let (proposal_id, outcome) = match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => (None, ApplyOutcome::Noop),
                EntryType::EntryNormal => {
                    let cmd = Command::decode(&e.data)
                        .map_err(|err| StoreError::corrupt(what(), err.to_string()))?;
                    let outcome = self.execute(&cmd, e.index, &mut overlay)?;
                    (Some(cmd.proposal_id), outcome)
                }
                EntryType::EntryConfChange => {
                    let cc: ConfChange = decode_pb(&what(), &e.data)?;
                    let cs = on_conf_change(&ConfChangeCommand::V1(cc))?;
                    new_conf = Some(cs.clone());
                    (None, ApplyOutcome::ConfChange { conf_state: cs })
                }
                EntryType::EntryConfChangeV2 => {
                    let cc: ConfChangeV2 = decode_pb(&what(), &e.data)?;
                    let cs = on_conf_change(&ConfChangeCommand::V2(cc))?;
                    new_conf = Some(cs.clone());
                    (None, ApplyOutcome::ConfChange { conf_state: cs })
                }
            };
            meta.applied = LogPoint::new(e.index, e.term);
            results.push(ApplyResult {
                index: e.index,
                term: e.term,
                proposal_id,
                outcome,
            });
        }

        let db = &self.inner.db;
        let mut st = self.stage(meta);
        let kv = cf(db, CF_KV)?;
        for (key, value) in &overlay {
            match value {
                Some(record) => st.batch.put_cf(kv, key, record.encode()),
                None => st.batch.delete_cf(kv, key),
            }
        }
        let state_cf = cf(db, CF_RAFT_STATE)?;
        if let Some(cs) = new_conf {
            st.batch
                .put_cf(state_cf, CONF_STATE_KEY, encode_pb("conf state", &cs)?);
            st.meta.conf_state = cs;
        }
        if st.meta.applied.index > st.meta.hard_state.commit {
            st.meta.hard_state.commit = st.meta.applied.index;
            st.batch.put_cf(
                state_cf,
                HARD_STATE_KEY,
                encode_pb("hard state", &st.meta.hard_state)?,
            );
        }
        st.batch
            .put_cf(cf(db, CF_META)?, APPLIED_KEY, st.meta.applied.encode());
        self.commit(st, false)?;
        Ok(results)
    }

    /// The value and version of `key`, read from RocksDB (the driver makes it
    /// linearizable with ReadIndex before calling).
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.read_record(key)?.map(|r| KeyValue {
            key: Bytes::copy_from_slice(key),
            value: r.value,
            version: r.version,
        }))
    }

    /// Up to `limit` keys from `start` (inclusive) to `end` (exclusive; `None`
    /// = the end of the key space) in key order, from one consistent view,
    /// and whether more keys follow in the range.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, bool), StoreError> {
        let db = &self.inner.db;
        let mut opts = ReadOptions::default();
        if let Some(end) = end {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        let iter = db.iterator_cf_opt(
            cf(db, CF_KV)?,
            opts,
            IteratorMode::From(start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if out.len() >= limit {
                return Ok((out, true));
            }
            let record = ValueRecord::decode(&key, &value)?;
            out.push(KeyValue {
                key: Bytes::copy_from_slice(&key),
                value: record.value,
                version: record.version,
            });
        }
        Ok((out, false))
    }

    fn read_record(&self, key: &[u8]) -> Result<Option<ValueRecord>, StoreError> {
        let db = &self.inner.db;
        match db.get_pinned_cf(cf(db, CF_KV)?, key)? {
            Some(v) => Ok(Some(ValueRecord::decode(key, &v)?)),
            None => Ok(None),
        }
    }

    fn lookup(&self, overlay: &Overlay, key: &[u8]) -> Result<Option<ValueRecord>, StoreError> {
        match overlay.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.read_record(key),
        }
    }

    fn delete_key(&self, overlay: &mut Overlay, key: &Bytes) -> Result<bool, StoreError> {
        let existed = self.lookup(overlay, key)?.is_some();
        if existed {
            overlay.insert(key.clone(), None);
        }
        Ok(existed)
    }

    fn execute(
        &self,
        cmd: &Command,
        index: u64,
        overlay: &mut Overlay,
    ) -> Result<ApplyOutcome, StoreError> {
        if let Err(reason) = cmd.validate() {
            tracing::warn!(index, proposal_id = cmd.proposal_id, %reason, "rejected command");
            return Ok(ApplyOutcome::Rejected { reason });
        }
        let record = |value: &Bytes| {
            Some(ValueRecord {
                version: index,
                value: value.clone(),
            })
        };
        match &cmd.op {
            CommandOp::Put { key, value } => {
                overlay.insert(key.clone(), record(value));
                Ok(ApplyOutcome::Put { version: index })
            }
            CommandOp::Delete { key } => Ok(ApplyOutcome::Delete {
                existed: self.delete_key(overlay, key)?,
            }),
            CommandOp::Txn {
                conditions,
                operations,
            } => {
                for c in conditions {
                    let current = self.lookup(overlay, &c.key)?;
                    let holds = match (&c.test, &current) {
                        (TxnTest::VersionEquals(v), cur) => {
                            cur.as_ref().map_or(0, |r| r.version) == *v
                        }
                        (TxnTest::ValueEquals(v), Some(r)) => r.value == *v,
                        (TxnTest::ValueEquals(_), None) => false,
                        (TxnTest::Absent, cur) => cur.is_none(),
                        (TxnTest::Present, cur) => cur.is_some(),
                    };
                    if !holds {
                        return Ok(ApplyOutcome::Txn {
                            succeeded: false,
                            version: 0,
                        });
                    }
                }
                for op in operations {
                    match op {
                        TxnOp::Put { key, value } => {
                            overlay.insert(key.clone(), record(value));
                        }
                        TxnOp::Delete { key } => {
                            self.delete_key(overlay, key)?;
                        }
                    }
                }
                Ok(ApplyOutcome::Txn {
                    succeeded: true,
                    version: index,
                })
            }
        }
    }
}
