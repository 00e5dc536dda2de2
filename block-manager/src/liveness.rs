//! [`Liveness`]: a small cache of core servers suspected dead, with expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Core servers this process recently failed to reach. A suspect is left
/// out of placement until its mark expires (or a call to it succeeds), so
/// writes stop paying a failed attempt for every block. Marks are local
/// beliefs, not membership: placement falls back to them when it must.
#[derive(Debug)]
pub struct Liveness {
    ttl: Duration,
    suspects: Mutex<HashMap<String, Instant>>,
}

impl Liveness {
    /// A cache whose marks last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Liveness {
            ttl,
            suspects: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        match self.suspects.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Marks `node` suspect for the cache's ttl from now.
    pub fn suspect(&self, node: &str) {
        self.map()
            .insert(node.to_string(), Instant::now() + self.ttl);
    }

    /// Clears `node`'s mark (a call to it succeeded).
    pub fn alive(&self, node: &str) {
        let mut map = self.map();
        if !map.is_empty() {
            map.remove(node);
        }
    }

    /// Whether `node` is believed live (not marked, or its mark expired).
    pub fn is_live(&self, node: &str) -> bool {
        let mut map = self.map();
        match map.get(node) {
            Some(until) if *until > Instant::now() => false,
            Some(_) => {
                map.remove(node);
                true
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_expire_and_clear() {
        let live = Liveness::new(Duration::from_millis(30));
        assert!(live.is_live("x"));
        live.suspect("x");
        assert!(!live.is_live("x"));
        assert!(live.is_live("y"));
        live.alive("x");
        assert!(live.is_live("x"));
        live.suspect("x");
        // The suspicion expires after its TTL (30 ms): poll for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !live.is_live("x") {
            assert!(
                std::time::Instant::now() < deadline,
                "suspicion never expired"
            );
            std::thread::yield_now();
        }
    }
}
