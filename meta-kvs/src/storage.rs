//! The meta-kvs storage layer: one RocksDB database per meta node holding the
//! Raft log, the Raft hard/conf state, the state machine and the applied
//! index, and implementing [`raft::Storage`] over it.
//!
//! # Layout
//!
//! Four column families (see [`keys`]): `raft_log`, `raft_state`, `kv` and
//! `meta`. The database lives in `<node data dir>/meta` ([`DB_DIR`]).
//!
//! # Durability
//!
//! Everything Raft needs persisted before messages are sent (entries, hard
//! state, conf state, an applied snapshot, log truncation) is written as one
//! `WriteBatch` with `sync = true`; [`MetaStore::persist_ready`] groups a whole
//! `Ready` into one batch so the driver pays one fsync per `Ready`.
//!
//! Applying committed entries ([`MetaStore::apply_entries`]) writes one batch
//! **without** sync; see that method for why this is safe.
//!
//! # Concurrency
//!
//! [`MetaStore`] is a cheap `Clone` handle. Writers are serialised by an
//! internal mutex; the cached Raft state (first/last index, hard state, …) is
//! swapped together with the RocksDB write so `raft::Storage` reads never see
//! the cache and the log disagree. `get`/`scan` read RocksDB directly.
//!
//! # Driver contract (raft-rs `Ready` order)
//!
//! 0. A new cluster's initial voters call [`MetaStore::bootstrap`] once; a
//!    joining node does not (it receives a snapshot). On every start, pass
//!    [`MetaStore::applied_index`] as `raft::Config::applied`.
//! 1. `persist_ready(ready.entries(), ready.hs(), Some(ready.snapshot()))` —
//!    one synced batch (snapshot first, then entries, then hard state) —
//!    before sending `persisted_messages`;
//! 2. `apply_entries(committed_entries, on_conf_change)` for committed entries
//!    of the `Ready` and of the `LightReady`;
//! 3. now and then `compact(applied_index + 1 - keep)` to bound the log.

pub mod keys;
pub mod snapshot_data;

mod apply;
mod load;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};

pub use self::apply::{ApplyOutcome, ApplyResult, ConfChangeCommand};
pub use self::keys::{LogPoint, ValueRecord};

use self::keys::{
    decode_log_key, decode_pb, encode_pb, log_key, ALL_CFS, APPLIED_KEY, CF_KV, CF_META,
    CF_RAFT_LOG, CF_RAFT_STATE, CONF_STATE_KEY, HARD_STATE_KEY, TRUNCATED_KEY,
};
use self::load::load_state;
use self::snapshot_data::{decode_snapshot, SnapshotWriter};
use crate::error::StoreError;

/// The directory of the meta database inside a node's data directory.
pub const DB_DIR: &str = "meta";

/// The meta store of one node: Raft log, Raft state and state machine in one
/// RocksDB database. Cloning gives another handle to the same store.
#[derive(Clone)]
pub struct MetaStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    path: PathBuf,
    /// Serialises writers (persist, apply, compact, snapshot apply).
    write_lock: Mutex<()>,
    /// The Raft state as on disk; replaced together with each write.
    state: RwLock<RaftMeta>,
}

/// The cached Raft-side state of the store.
#[derive(Clone, Debug, Default)]
struct RaftMeta {
    hard_state: HardState,
    conf_state: ConfState,
    /// The last entry removed from the log (the snapshot point); its term is
    /// kept for `term(first_index - 1)`.
    truncated: LogPoint,
    /// The last entry of the log, or `truncated` when the log is empty.
    last: LogPoint,
    /// The last applied entry.
    applied: LogPoint,
}

impl RaftMeta {
    fn first_index(&self) -> u64 {
        self.truncated.index + 1
    }
}

/// A batch being built together with the state it leads to.
struct Staged {
    batch: WriteBatch,
    meta: RaftMeta,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore")
            .field("path", &self.inner.path)
            .field("state", &*self.state())
            .finish()
    }
}

impl MetaStore {
    /// Opens (creating if needed) the store in `<data_dir>/meta`.
    pub fn open_in_data_dir(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open(data_dir.as_ref().join(DB_DIR))
    }

    /// Opens (creating if needed) the database at `path` and verifies that
    /// the persisted state is consistent; damage is [`StoreError::Corrupt`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf_opts = Options::default();
            cf_opts.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, &path, cfs)?;
        let meta = load_state(&db)?;
        tracing::info!(
            path = %path.display(),
            first_index = meta.first_index(),
            last_index = meta.last.index,
            commit = meta.hard_state.commit,
            term = meta.hard_state.term,
            applied = meta.applied.index,
            "meta store opened"
        );
        Ok(MetaStore {
            inner: Arc::new(Inner {
                db,
                path,
                write_lock: Mutex::new(()),
                state: RwLock::new(meta),
            }),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the store has a configuration, from [`MetaStore::bootstrap`] or
    /// from an applied snapshot. A node joining an existing cluster starts
    /// unbootstrapped and gets its configuration by snapshot from the leader.
    pub fn is_bootstrapped(&self) -> bool {
        self.state().conf_state != ConfState::default()
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.state().hard_state.clone()
    }

    /// The persisted conf state.
    pub fn conf_state(&self) -> ConfState {
        self.state().conf_state.clone()
    }

    /// Index and term of the last applied entry.
    pub fn applied(&self) -> LogPoint {
        self.state().applied
    }

    /// Index of the last applied entry (pass it as `raft::Config::applied`).
    pub fn applied_index(&self) -> u64 {
        self.state().applied.index
    }

    /// Index and term of the last entry removed from the log.
    pub fn truncated(&self) -> LogPoint {
        self.state().truncated
    }

    /// Initialises a brand-new store for a new cluster, like raft-rs's
    /// `MemStorage::new_with_conf_state`: the conf state is written with the
    /// log truncated at index 0, term 0 (snapshot metadata 0/0), so
    /// `first_index` = 1 and `last_index` = 0. Every initial voter calls it
    /// with the same voter set. Refused if the store has any Raft state.
    pub fn bootstrap(&self, conf_state: &ConfState) -> Result<(), StoreError> {
        let _w = self.write_guard();
        let meta = self.state().clone();
        if meta.conf_state != ConfState::default()
            || meta.hard_state != HardState::default()
            || meta.last.index != 0
            || meta.applied.index != 0
        {
            return Err(StoreError::AlreadyBootstrapped(format!(
                "{} has Raft state (term {}, last index {}, {} voters)",
                self.inner.path.display(),
                meta.hard_state.term,
                meta.last.index,
                meta.conf_state.voters.len()
            )));
        }
        if conf_state.voters.is_empty() {
            return Err(StoreError::Invalid(
                "bootstrap needs at least one voter".into(),
            ));
        }
        let mut st = self.stage(meta);
        st.batch.put_cf(
            self.cf(CF_RAFT_STATE)?,
            CONF_STATE_KEY,
            encode_pb("conf state", conf_state)?,
        );
        st.batch.put_cf(
            self.cf(CF_RAFT_STATE)?,
            TRUNCATED_KEY,
            LogPoint::default().encode(),
        );
        st.batch
            .put_cf(self.cf(CF_META)?, APPLIED_KEY, LogPoint::default().encode());
        st.meta.conf_state = conf_state.clone();
        self.commit(st, true)
    }

    /// Appends entries to the log (one synced batch), replacing any
    /// conflicting suffix: entries at `entries[0].index` and after that are
    /// not overwritten are deleted.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.persist_ready(entries, None, None)
    }

    /// Persists the hard state (one synced batch).
    pub fn set_hard_state(&self, hard_state: &HardState) -> Result<(), StoreError> {
        self.persist_ready(&[], Some(hard_state), None)
    }

    /// Persists the conf state (one synced batch). Conf changes applied
    /// through [`MetaStore::apply_entries`] already store it atomically with
    /// the applied index; this is for tools and tests.
    pub fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), StoreError> {
        let _w = self.write_guard();
        let mut st = self.stage(self.state().clone());
        st.batch.put_cf(
            self.cf(CF_RAFT_STATE)?,
            CONF_STATE_KEY,
            encode_pb("conf state", conf_state)?,
        );
        st.meta.conf_state = conf_state.clone();
        self.commit(st, true)
    }

    /// Persists what a raft-rs `Ready` asks for in ONE synced batch: the
    /// snapshot (if any and non-empty) first, then the entries, then the hard
    /// state. Does nothing when there is nothing to persist.
    pub fn persist_ready(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        snapshot: Option<&Snapshot>,
    ) -> Result<(), StoreError> {
        let snapshot = snapshot.filter(|s| !s.is_empty());
        if entries.is_empty() && hard_state.is_none() && snapshot.is_none() {
            return Ok(());
        }
        let _w = self.write_guard();
        let mut st = self.stage(self.state().clone());
        if let Some(snap) = snapshot {
            self.stage_snapshot(&mut st, snap)?;
        }
        self.stage_append(&mut st, entries)?;
        if let Some(hs) = hard_state {
            st.batch.put_cf(
                self.cf(CF_RAFT_STATE)?,
                HARD_STATE_KEY,
                encode_pb("hard state", hs)?,
            );
            st.meta.hard_state = hs.clone();
        }
        self.commit(st, true)
    }

    /// Replaces the whole state with `snapshot` in one synced batch: the `kv`
    /// column family becomes the snapshot's data, the applied index its
    /// index, the conf state its conf state, and the log is emptied and
    /// truncated at its index (as raft-rs's `MemStorage::apply_snapshot`; raft
    /// drops its own log on restore too). The hard state's commit becomes the
    /// snapshot index and its term at least the snapshot term.
    ///
    /// A snapshot older than the first log index or the applied index is
    /// `SnapshotOutOfDate`; damaged data is [`StoreError::BadSnapshot`]. In
    /// both cases nothing changes.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let _w = self.write_guard();
        let mut st = self.stage(self.state().clone());
        self.stage_snapshot(&mut st, snapshot)?;
        self.commit(st, true)
    }

    /// Deletes the log entries before `compact_index` (one synced batch),
    /// keeping the term of `compact_index - 1` for `term()`. A no-op if they
    /// are already gone; refused beyond the applied index (entries after the
    /// applied index are needed for replay after a restart) or beyond the
    /// log.
    pub fn compact(&self, compact_index: u64) -> Result<(), StoreError> {
        let _w = self.write_guard();
        let meta = self.state().clone();
        if compact_index <= meta.first_index() {
            return Ok(());
        }
        if compact_index > meta.last.index + 1 {
            return Err(StoreError::Invalid(format!(
                "compact to {compact_index} beyond the log (last index {})",
                meta.last.index
            )));
        }
        if compact_index - 1 > meta.applied.index {
            return Err(StoreError::Invalid(format!(
                "compact to {compact_index} would drop unapplied entries (applied index {})",
                meta.applied.index
            )));
        }
        let term = self.read_term(&meta, compact_index - 1)?;
        let mut st = self.stage(meta);
        st.batch.delete_range_cf(
            self.cf(CF_RAFT_LOG)?,
            log_key(st.meta.first_index()),
            log_key(compact_index),
        );
        st.meta.truncated = LogPoint::new(compact_index - 1, term);
        st.batch.put_cf(
            self.cf(CF_RAFT_STATE)?,
            TRUNCATED_KEY,
            st.meta.truncated.encode(),
        );
        self.commit(st, true)
    }

    /// Builds a snapshot of the state machine at the applied index from one
    /// consistent RocksDB snapshot: data = the whole `kv` column family
    /// (format in [`snapshot_data`]), metadata = applied index and term and
    /// the conf state stored with it.
    pub fn build_snapshot(&self) -> Result<Snapshot, StoreError> {
        let db = &self.inner.db;
        let view = db.snapshot();
        let applied = match view.get_cf(self.cf(CF_META)?, APPLIED_KEY)? {
            Some(v) => LogPoint::decode("meta/applied", &v)?,
            None => LogPoint::default(),
        };
        let conf_state: ConfState = match view.get_cf(self.cf(CF_RAFT_STATE)?, CONF_STATE_KEY)? {
            Some(v) => decode_pb("raft_state/conf_state", &v)?,
            None => ConfState::default(),
        };
        let mut writer = SnapshotWriter::new(applied.index, applied.term);
        for item in view.iterator_cf(self.cf(CF_KV)?, IteratorMode::Start) {
            let (key, value) = item?;
            let record = ValueRecord::decode(&key, &value)?;
            writer.push(&key, record.version, &record.value)?;
        }
        let mut snap = Snapshot {
            data: writer.finish().into(),
            ..Default::default()
        };
        let md = snap.mut_metadata();
        md.index = applied.index;
        md.term = applied.term;
        md.set_conf_state(conf_state);
        Ok(snap)
    }

    // ----- internals -----

    fn state(&self) -> RwLockReadGuard<'_, RaftMeta> {
        // No code panics while holding the lock; a poisoned lock still holds
        // a state that matches the disk, because it is swapped only after a
        // successful write.
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_guard(&self) -> MutexGuard<'_, ()> {
        self.inner
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        cf(&self.inner.db, name)
    }

    fn stage(&self, meta: RaftMeta) -> Staged {
        Staged {
            batch: WriteBatch::default(),
            meta,
        }
    }

    /// Writes a staged batch and swaps in its state, holding the state lock
    /// across the write so readers see both or neither.
    fn commit(&self, st: Staged, sync: bool) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.db.write_opt(st.batch, &opts)?;
        *state = st.meta;
        Ok(())
    }

    fn stage_append(&self, st: &mut Staged, entries: &[Entry]) -> Result<(), StoreError> {
        let (first, last) = match (entries.first(), entries.last()) {
            (Some(f), Some(l)) => (f, l),
            _ => return Ok(()),
        };
        for (i, e) in entries.iter().enumerate() {
            if e.index != first.index + i as u64 {
                return Err(StoreError::Invalid(format!(
                    "entries to append are not contiguous: {} follows {}",
                    e.index,
                    first.index + i as u64 - 1
                )));
            }
        }
        let meta = &mut st.meta;
        if first.index < meta.first_index() {
            return Err(StoreError::Invalid(format!(
                "append at {} would overwrite compacted entries (first index {})",
                first.index,
                meta.first_index()
            )));
        }
        if first.index > meta.last.index + 1 {
            return Err(StoreError::Invalid(format!(
                "append at {} leaves a gap after last index {}",
                first.index, meta.last.index
            )));
        }
        let log = cf(&self.inner.db, CF_RAFT_LOG)?;
        if last.index < meta.last.index {
            // The old suffix beyond the new last entry; the rest is overwritten.
            st.batch.delete_range_cf(
                log,
                log_key(last.index + 1),
                log_key(meta.last.index.saturating_add(1)),
            );
        }
        for e in entries {
            st.batch
                .put_cf(log, log_key(e.index), encode_pb("log entry", e)?);
        }
        meta.last = LogPoint::new(last.index, last.term);
        Ok(())
    }

    fn stage_snapshot(&self, st: &mut Staged, snap: &Snapshot) -> Result<(), StoreError> {
        let md = snap.get_metadata();
        let meta = &mut st.meta;
        if md.index < meta.first_index() || md.index < meta.applied.index {
            tracing::warn!(
                snapshot_index = md.index,
                first_index = meta.first_index(),
                applied = meta.applied.index,
                "refusing out-of-date snapshot"
            );
            return Err(StoreError::Raft(raft::Error::Store(
                StorageError::SnapshotOutOfDate,
            )));
        }
        let data = decode_snapshot(&snap.data)?;
        if (data.index, data.term) != (md.index, md.term) {
            return Err(StoreError::BadSnapshot(format!(
                "data is for index {} term {}, metadata says index {} term {}",
                data.index, data.term, md.index, md.term
            )));
        }
        let db = &self.inner.db;
        let kv = cf(db, CF_KV)?;
        // Clear the state machine: everything up to just past its last key.
        let mut it = db.raw_iterator_cf(kv);
        it.seek_to_last();
        if let Some(last_key) = it.key() {
            let mut end = last_key.to_vec();
            end.push(0);
            st.batch.delete_range_cf(kv, Vec::new(), end);
        }
        it.status()?;
        drop(it);
        for r in &data.records {
            let record = ValueRecord {
                version: r.version,
                value: bytes::Bytes::copy_from_slice(r.value),
            };
            st.batch.put_cf(kv, r.key, record.encode());
        }
        if meta.last.index > meta.truncated.index {
            st.batch.delete_range_cf(
                cf(db, CF_RAFT_LOG)?,
                log_key(meta.first_index()),
                log_key(meta.last.index.saturating_add(1)),
            );
        }
        let point = LogPoint::new(md.index, md.term);
        meta.truncated = point;
        meta.last = point;
        meta.applied = point;
        meta.conf_state = md.get_conf_state().clone();
        meta.hard_state.term = meta.hard_state.term.max(md.term);
        meta.hard_state.commit = md.index;
        let state_cf = cf(db, CF_RAFT_STATE)?;
        st.batch.put_cf(state_cf, TRUNCATED_KEY, point.encode());
        st.batch.put_cf(
            state_cf,
            CONF_STATE_KEY,
            encode_pb("conf state", &meta.conf_state)?,
        );
        st.batch.put_cf(
            state_cf,
            HARD_STATE_KEY,
            encode_pb("hard state", &meta.hard_state)?,
        );
        st.batch
            .put_cf(cf(db, CF_META)?, APPLIED_KEY, point.encode());
        tracing::info!(
            index = md.index,
            term = md.term,
            keys = data.records.len(),
            "applying snapshot"
        );
        Ok(())
    }

    /// The term of `idx`, which must be in `[truncated, last]`.
    fn read_term(&self, meta: &RaftMeta, idx: u64) -> Result<u64, StoreError> {
        if idx == meta.truncated.index {
            return Ok(meta.truncated.term);
        }
        if idx == meta.last.index {
            return Ok(meta.last.term);
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn read_entry(&self, idx: u64) -> Result<Entry, StoreError> {
        let db = &self.inner.db;
        match db.get_pinned_cf(cf(db, CF_RAFT_LOG)?, log_key(idx))? {
            Some(v) => {
                let e: Entry = decode_pb(&format!("raft_log entry {idx}"), &v)?;
                if e.index != idx {
                    return Err(StoreError::corrupt(
                        format!("raft_log entry {idx}"),
                        format!("holds entry {}", e.index),
                    ));
                }
                Ok(e)
            }
            None => Err(StoreError::corrupt(
                format!("raft_log entry {idx}"),
                "missing inside the log range",
            )),
        }
    }

    fn entries_inner(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let meta = self.state();
        if low < meta.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted).into());
        }
        if high > meta.last.index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable).into());
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let db = &self.inner.db;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(log_key(high).to_vec());
        let start = log_key(low);
        let iter = db.iterator_cf_opt(
            cf(db, CF_RAFT_LOG)?,
            opts,
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let max = max_size.filter(|m| *m != raft::NO_LIMIT);
        let mut out: Vec<Entry> = Vec::new();
        let mut size = 0u64;
        let mut expected = low;
        let mut stopped_early = false;
        for item in iter {
            let (key, value) = item?;
            let idx = decode_log_key(&key)?;
            let what = || format!("raft_log entry {idx}");
            if idx != expected {
                return Err(StoreError::corrupt(
                    what(),
                    format!("log hole: expected entry {expected}"),
                ));
            }
            let e: Entry = decode_pb(&what(), &value)?;
            if e.index != idx {
                return Err(StoreError::corrupt(
                    what(),
                    format!("holds entry {}", e.index),
                ));
            }
            size += u64::from(e.compute_size());
            if let Some(max) = max {
                if !out.is_empty() && size > max {
                    stopped_early = true;
                    break;
                }
            }
            out.push(e);
            expected += 1;
        }
        if !stopped_early && expected != high {
            return Err(StoreError::corrupt(
                format!("raft_log entry {expected}"),
                format!(
                    "missing inside the log range (last index {})",
                    meta.last.index
                ),
            ));
        }
        raft::util::limit_size(&mut out, max_size);
        Ok(out)
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::corrupt("column family", format!("`{name}` is missing")))
}

impl raft::Storage for MetaStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let meta = self.state();
        Ok(RaftState::new(
            meta.hard_state.clone(),
            meta.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        Ok(self.entries_inner(low, high, max_size.into())?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.state();
        if idx == meta.truncated.index {
            return Ok(meta.truncated.term);
        }
        if idx < meta.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > meta.last.index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.read_term(&meta, idx)?)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state().last.index)
    }

    /// The snapshot at the applied index. If that is below `request_index`
    /// (or nothing is applied yet), `SnapshotTemporarilyUnavailable` so raft
    /// retries later. Corruption is returned as an error (raft-rs treats it
    /// as fatal); other failures (I/O, size limit) are logged and reported as
    /// temporarily unavailable so a leader does not abort on them.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        match self.build_snapshot() {
            Ok(snap) => {
                let index = snap.get_metadata().index;
                if index == 0 || index < request_index {
                    tracing::debug!(index, request_index, to, "snapshot not ready yet");
                    return Err(unavailable());
                }
                tracing::info!(index, to, bytes = snap.data.len(), "built snapshot");
                Ok(snap)
            }
            Err(err) if err.is_corruption() => Err(err.into()),
            Err(err) => {
                tracing::error!(error = %err, to, "cannot build snapshot");
                Err(unavailable())
            }
        }
    }
}
