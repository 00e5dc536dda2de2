//! Loading the persisted Raft state at open, with the consistency checks
//! that turn damage into [`StoreError::Corrupt`] instead of a raft-rs panic.

use raft::eraftpb::{ConfState, Entry, HardState};
use rocksdb::DB;

use super::keys::{
    decode_log_key, decode_pb, log_key, APPLIED_KEY, CF_META, CF_RAFT_LOG, CF_RAFT_STATE,
    CONF_STATE_KEY, HARD_STATE_KEY, TRUNCATED_KEY,
};
use super::{cf, LogPoint, RaftMeta};
use crate::error::StoreError;

/// Reads and cross-checks the persisted Raft state at open.
pub(super) fn load_state(db: &DB) -> Result<RaftMeta, StoreError> {
    let state_cf = cf(db, CF_RAFT_STATE)?;
    let hard_state: HardState = match db.get_pinned_cf(state_cf, HARD_STATE_KEY)? {
        Some(v) => decode_pb("raft_state/hard_state", &v)?,
        None => HardState::default(),
    };
    let conf_state: ConfState = match db.get_pinned_cf(state_cf, CONF_STATE_KEY)? {
        Some(v) => decode_pb("raft_state/conf_state", &v)?,
        None => ConfState::default(),
    };
    let truncated = match db.get_pinned_cf(state_cf, TRUNCATED_KEY)? {
        Some(v) => LogPoint::decode("raft_state/truncated", &v)?,
        None => LogPoint::default(),
    };
    let applied = match db.get_pinned_cf(cf(db, CF_META)?, APPLIED_KEY)? {
        Some(v) => LogPoint::decode("meta/applied", &v)?,
        None => LogPoint::default(),
    };
    let meta = RaftMeta {
        hard_state,
        conf_state,
        truncated,
        last: last_entry(db, truncated)?,
        applied,
    };
    check_commit(&meta)?;
    check_applied(db, &meta)?;
    Ok(meta)
}

/// The log's last entry (`truncated` when the log is empty). Its keys
/// must run truncated+1 ..= last without holes. Walking the keys is cheap
/// (the driver keeps the log short by compacting); the first and last
/// entries are decoded and checked against their keys and terms.
fn last_entry(db: &DB, truncated: LogPoint) -> Result<LogPoint, StoreError> {
    let mut it = db.raw_iterator_cf(cf(db, CF_RAFT_LOG)?);
    it.seek_to_first();
    let mut first_key: Option<u64> = None;
    let mut prev: Option<u64> = None;
    while let Some(key) = it.key() {
        let idx = decode_log_key(key)?;
        match prev {
            None => {
                if idx != truncated.index + 1 {
                    return Err(StoreError::corrupt(
                        "raft_log",
                        format!(
                            "first entry is {idx} but the log is truncated at {}",
                            truncated.index
                        ),
                    ));
                }
                first_key = Some(idx);
            }
            Some(p) if idx != p + 1 => {
                return Err(StoreError::corrupt(
                    "raft_log",
                    format!("hole between entries {p} and {idx}"),
                ));
            }
            Some(_) => {}
        }
        prev = Some(idx);
        it.next();
    }
    it.status()?;
    drop(it);
    let (Some(first), Some(last)) = (first_key, prev) else {
        return Ok(truncated);
    };
    let first_entry = read_log_entry(db, first)?;
    let last_entry = read_log_entry(db, last)?;
    if first_entry.term < truncated.term || last_entry.term < first_entry.term {
        return Err(StoreError::corrupt(
            "raft_log",
            format!(
                "terms go backwards: truncated term {}, first entry term {}, last entry term {}",
                truncated.term, first_entry.term, last_entry.term
            ),
        ));
    }
    Ok(LogPoint::new(last, last_entry.term))
}

/// The commit index lies within the log (no snapshot covers more).
fn check_commit(meta: &RaftMeta) -> Result<(), StoreError> {
    let hs = &meta.hard_state;
    if hs.commit > meta.last.index {
        return Err(StoreError::corrupt(
            "raft_state/hard_state",
            format!(
                "commit index {} is beyond the last log index {} (no snapshot covers it)",
                hs.commit, meta.last.index
            ),
        ));
    }
    if hs.commit < meta.truncated.index {
        return Err(StoreError::corrupt(
            "raft_state/hard_state",
            format!(
                "commit index {} is below the truncation point {}",
                hs.commit, meta.truncated.index
            ),
        ));
    }
    Ok(())
}

/// The applied point lies between the truncation point and the commit
/// index, at the term its log entry has.
fn check_applied(db: &DB, meta: &RaftMeta) -> Result<(), StoreError> {
    let (applied, truncated) = (meta.applied, meta.truncated);
    if applied.index > meta.hard_state.commit {
        return Err(StoreError::corrupt(
            "meta/applied",
            format!(
                "applied index {} is beyond the commit index {}",
                applied.index, meta.hard_state.commit
            ),
        ));
    }
    if applied.index < truncated.index {
        return Err(StoreError::corrupt(
            "meta/applied",
            format!(
                "applied index {} is below the truncation point {}: entries needed for replay are gone",
                applied.index, truncated.index
            ),
        ));
    }
    let applied_term = if applied.index == truncated.index {
        truncated.term
    } else {
        read_log_entry(db, applied.index)?.term
    };
    if applied_term != applied.term {
        return Err(StoreError::corrupt(
            "meta/applied",
            format!(
                "applied entry {} has term {} in the log but {} in the applied record",
                applied.index, applied_term, applied.term
            ),
        ));
    }
    Ok(())
}

fn read_log_entry(db: &DB, idx: u64) -> Result<Entry, StoreError> {
    let what = format!("raft_log entry {idx}");
    let value = db
        .get_pinned_cf(cf(db, CF_RAFT_LOG)?, log_key(idx))?
        .ok_or_else(|| StoreError::corrupt(what.clone(), "missing"))?;
    let e: Entry = decode_pb(&what, &value)?;
    if e.index != idx {
        return Err(StoreError::corrupt(
            what,
            format!("holds entry {}", e.index),
        ));
    }
    Ok(e)
}
