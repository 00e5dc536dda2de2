//! [`InodeCache`]: recently read inodes, so that the NFS hot path (every
//! READ, WRITE, COMMIT and GETATTR resolves its file handle) does not pay a
//! linearizable meta-kvs read, a Raft ReadIndex round across the voters'
//! sites, per call.
//!
//! # What a cached inode may miss
//!
//! Every change made through this [`Namespace`](super::Namespace) empties
//! the cache when it ends (whatever its outcome), and a read that started
//! before that is not cached afterwards (a generation check), so this access
//! server always sees its own changes at once. A change made elsewhere —
//! through another site's access server — is seen at the latest `ttl`
//! after it committed: the same contract as the NFS client's own attribute
//! cache (`acregmin`/`acdirmin`, 3 s and 30 s by default on Linux), which
//! every client already lives with. A `ttl` of zero turns the cache off.
//!
//! The changes themselves never trust the cache: every namespace change is
//! a meta-kvs transaction conditioned on the versions it read directly.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::record::Inode;

/// How many inodes are kept at most; past it expired entries are dropped,
/// then everything.
const MAX_ENTRIES: usize = 1 << 16;

/// Recently read inodes with their read time; see the module documentation.
#[derive(Debug)]
pub struct InodeCache {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every change: a read begun in an earlier generation is stale.
    generation: u64,
    entries: HashMap<u64, (Inode, Instant)>,
}

/// A read of an inode begun in some generation; see [`InodeCache::begin`].
#[derive(Clone, Copy, Debug)]
pub struct ReadTicket {
    generation: u64,
    started: Instant,
}

/// Empties the cache when dropped: hold one for the length of a change.
#[derive(Debug)]
pub struct ChangeGuard<'a> {
    cache: &'a InodeCache,
}

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.cache.state();
        state.generation = state.generation.wrapping_add(1);
        state.entries.clear();
    }
}

impl InodeCache {
    /// A cache keeping inodes for `ttl` (zero: nothing is cached).
    pub fn new(ttl: Duration) -> Self {
        InodeCache {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    /// How long an inode read is trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Inode `id` if it was read less than `ttl` ago and nothing changed
    /// through this namespace since.
    pub fn get(&self, id: u64) -> Option<Inode> {
        let state = self.state();
        let (inode, read_at) = state.entries.get(&id)?;
        (read_at.elapsed() < self.ttl).then(|| inode.clone())
    }

    /// Marks the start of a read whose result may be [`insert`](Self::insert)ed.
    pub fn begin(&self) -> ReadTicket {
        ReadTicket {
            generation: self.state().generation,
            started: Instant::now(),
        }
    }

    /// Keeps `inode`, read under `ticket`, unless a change ended since the
    /// read began. Its age counts from the start of the read.
    pub fn insert(&self, ticket: ReadTicket, inode: &Inode) {
        if self.ttl.is_zero() {
            return;
        }
        let mut state = self.state();
        if state.generation != ticket.generation {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            state.entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if state.entries.len() >= MAX_ENTRIES {
                state.entries.clear();
            }
        }
        state
            .entries
            .insert(inode.id, (inode.clone(), ticket.started));
    }

    /// Starts a change: the cache is emptied when the guard drops.
    pub fn change(&self) -> ChangeGuard<'_> {
        ChangeGuard { cache: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::record::{FileKind, Timestamp};

    fn inode(id: u64, mode: u32) -> Inode {
        let now = Timestamp::now();
        Inode {
            id,
            kind: FileKind::Regular,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            nlink: 1,
            symlink_target: Vec::new(),
            generation: 7,
            parent: 1,
            next_seq: 0,
            entries: 0,
            verifier: None,
            version: 1,
            change_token: 0,
        }
    }

    #[test]
    fn a_read_begun_before_a_change_is_not_kept() {
        let cache = InodeCache::new(Duration::from_secs(60));
        let before = cache.begin();
        drop(cache.change());
        cache.insert(before, &inode(5, 0o644));
        assert!(cache.get(5).is_none());
        let after = cache.begin();
        cache.insert(after, &inode(5, 0o600));
        assert_eq!(cache.get(5).map(|i| i.mode), Some(0o600));
    }

    #[test]
    fn a_change_empties_the_cache() {
        let cache = InodeCache::new(Duration::from_secs(60));
        cache.insert(cache.begin(), &inode(5, 0o644));
        {
            let _changing = cache.change();
            assert!(cache.get(5).is_some(), "emptied when the change ends");
        }
        assert!(cache.get(5).is_none());
    }

    #[test]
    fn entries_expire_and_a_zero_ttl_keeps_nothing() {
        let off = InodeCache::new(Duration::ZERO);
        off.insert(off.begin(), &inode(5, 0o644));
        assert!(off.get(5).is_none());

        let short = InodeCache::new(Duration::from_millis(20));
        let ticket = short.begin();
        short.insert(ticket, &inode(5, 0o644));
        let deadline = Instant::now() + Duration::from_secs(10);
        while short.get(5).is_some() {
            assert!(Instant::now() < deadline, "entry never expired");
            std::thread::yield_now();
        }
        assert!(ticket.started.elapsed() >= Duration::from_millis(20));
    }
}
