//! The process-wide version source, and the write verifier of one
//! access server.
//!
//! # Versions
//!
//! Every block write carries a version and a core refuses a write older
//! than what it stores (docs/ARCHITECTURE.md#invariant-8). [`next_version`] is a hybrid clock:
//! `max(now in microseconds since the Unix epoch, last + 1)`, shared by the
//! whole process, so every version it hands out is newer than every earlier
//! one of this process. An access server asks through its
//! [`VersionClock`], which tests can skew like a wall clock set wrong at
//! its site (`geonfs_rpc::Faults::set_clock_skew`); a skewed clock keeps
//! its own `last`. Across restarts it relies on the wall clock moving
//! forward: a new process starts at "now", which is past every version an
//! earlier process handed out unless that process issued more than one
//! version per microsecond on average for its whole life, or the clock was
//! set back. Both are also covered, after the fact: versions seen on the
//! cores (a stale-version refusal, an attribute record read back) are fed
//! to [`observe`], which moves the clock past them.
//!
//! # Verifier
//!
//! The NFSv3 write verifier (RFC 1813, WRITE and COMMIT) is one random
//! 8-byte value per access server ([`Verifier`]), new at every start of
//! one. It must change whenever uncommitted (UNSTABLE) data may have been
//! lost: an access-server restart changes it by construction (its record
//! of which cores hold the unstable writes is gone), and
//! [`Verifier::rotate`] changes it when a core that held unstable data
//! restarted before the commit. It is per server, not per process: two
//! access servers never answer one verifier, even in one process (a client
//! that moved from one to the other must not take one's COMMIT for the
//! other's writes).

use geonfs_proto::domain::Version;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

static LAST_VERSION: AtomicU64 = AtomicU64::new(0);

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `max(now, last + 1)`, stored in `last`.
fn tick(last_version: &AtomicU64, now: u64) -> u64 {
    let mut last = last_version.load(Ordering::SeqCst);
    loop {
        let next = now.max(last.saturating_add(1));
        match last_version.compare_exchange_weak(last, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// A version newer than every version this process handed out or
/// [`observe`]d before.
pub fn next_version() -> Version {
    Version(tick(&LAST_VERSION, now_micros()))
}

/// Moves the clock past `version` (seen on a core), so the next version
/// is newer than it.
pub fn observe(version: Version) {
    LAST_VERSION.fetch_max(version.0, Ordering::SeqCst);
}

/// The version clock of one access server: the process's clock, or, while
/// a test skews it, the wall clock plus the skew.
#[derive(Debug, Default)]
pub struct VersionClock {
    /// Microseconds added to the wall clock (0: the process's clock).
    skew: Arc<AtomicI64>,
    /// The last version handed out or observed while skewed.
    last: AtomicU64,
}

impl VersionClock {
    /// A clock reading `skew` (microseconds) at every version.
    pub fn new(skew: Arc<AtomicI64>) -> Self {
        VersionClock {
            skew,
            last: AtomicU64::new(0),
        }
    }

    /// A version newer than every version this clock handed out or
    /// observed before.
    pub fn next_version(&self) -> Version {
        match self.skew.load(Ordering::Relaxed) {
            0 => next_version(),
            skew => Version(tick(&self.last, now_micros().saturating_add_signed(skew))),
        }
    }

    /// Moves the clock past `version` (seen on a core).
    pub fn observe(&self, version: Version) {
        observe(version);
        self.last.fetch_max(version.0, Ordering::SeqCst);
    }
}

fn draw(not: u64) -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 && v != not {
            return v;
        }
    }
}

/// The write verifier of one access server.
#[derive(Debug)]
pub struct Verifier(AtomicU64);

impl Default for Verifier {
    fn default() -> Self {
        Verifier(AtomicU64::new(draw(0)))
    }
}

impl Verifier {
    /// The current write verifier.
    pub fn current(&self) -> [u8; 8] {
        self.0.load(Ordering::SeqCst).to_be_bytes()
    }

    /// Replaces the verifier with a new random value and returns it: every
    /// client holding unstable writes acknowledged under an earlier
    /// verifier resends them at its next COMMIT.
    pub fn rotate(&self) -> [u8; 8] {
        let old = self.0.load(Ordering::SeqCst);
        let fresh = draw(old);
        // A concurrent rotation may win; either way the value differs from
        // `old`, which is all a client needs to see.
        match self
            .0
            .compare_exchange(old, fresh, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => fresh.to_be_bytes(),
            Err(actual) => actual.to_be_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_pass_observed_ones() {
        let a = next_version();
        let b = next_version();
        assert!(b > a);
        let far = Version(b.0 + 1_000_000_000);
        observe(far);
        assert!(next_version() > far);
    }

    #[test]
    fn a_skewed_clock_runs_ahead_or_behind_and_still_passes_observed_versions() {
        let skew = Arc::new(AtomicI64::new(0));
        let clock = VersionClock::new(skew.clone());
        let plain = clock.next_version();
        skew.store(3_600_000_000, Ordering::SeqCst);
        let ahead = clock.next_version();
        assert!(ahead.0 > plain.0 + 3_000_000_000);
        skew.store(-3_600_000_000, Ordering::SeqCst);
        let behind = clock.next_version();
        assert!(behind > ahead, "a skewed clock never goes back");
        let seen = Version(behind.0 + 5);
        clock.observe(seen);
        assert!(clock.next_version() > seen);
    }

    #[test]
    fn rotation_changes_the_verifier_and_servers_have_their_own() {
        let verifier = Verifier::default();
        let a = verifier.current();
        assert_eq!(verifier.current(), a);
        let b = verifier.rotate();
        assert_ne!(a, b);
        assert_eq!(verifier.current(), b);
        assert_ne!(Verifier::default().current(), b);
    }
}
