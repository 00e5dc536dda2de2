//! [`SendGate`]: the sender's side of ownership (part of [`BlockClient`]).
//!
//! A core refuses a request whose ownership epoch is older than its fence
//! for the file; that protects every core a handover reached. The gate
//! protects the rest from the other end: an access server's block client
//! of its own site (the one it writes with, and reads the files it owns
//! with) has a gate, and every request it sends with an epoch must
//! pass it first:
//!
//! - **the lease**: the access server's ownership lease must be valid now
//!   (the owner renews it through meta-kvs; `access-server`'s
//!   `ownership::lease`). An owner that cannot renew stops sending by
//!   itself, so a site that took its files over after the lease ran out
//!   (plus a margin) never races it. Refused: [`BlockError::LeaseExpired`].
//! - **local fences**: a handover that could not fence every core of the
//!   old owner's site fences the old owner's access servers instead
//!   ([`SendGate::install_fences`]); a request below such a fence is
//!   refused here like a core would ([`BlockError::Fenced`]).
//!
//! A write, and a delete, holds a [`GatePass`] until its core answered
//! (a read is only checked: it leaves nothing behind);
//! [`SendGate::install_fences`] returns only when every request admitted
//! before the new fences has been answered, so no request of the old epoch
//! is in flight from this process once it acknowledges a revocation.
//! (A request already on the wire when its caller gave up is the one thing
//! no process can recall: the lease's safety margin covers its delivery.)
//!
//! A client without a gate (tools, the core servers' own clients, tests)
//! sends freely: its callers never acknowledge writes to NFS clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use geonfs_proto::domain::{Epoch, FileId};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::BlockError;

/// Admission of an access server's epoch-carrying block requests: its
/// ownership lease and the fences set on it. Cheap to clone; clones share
/// the state.
#[derive(Clone, Debug, Default)]
pub struct SendGate {
    inner: Arc<GateInner>,
}

#[derive(Debug, Default)]
struct GateInner {
    /// Until when the lease is valid (local monotonic clock); `None`:
    /// never renewed yet.
    valid_until: Mutex<Option<Instant>>,
    /// File id → the lowest epoch this process may still send for it.
    fences: Mutex<HashMap<FileId, Epoch>>,
    /// Read-held by each admitted request until it is answered; taken for
    /// writing by [`SendGate::install_fences`] to wait for them.
    in_flight: Arc<RwLock<()>>,
    /// Set by [`SendGate::close`]: nothing is admitted any more.
    closed: AtomicBool,
}

/// Held by an admitted request until it is answered.
#[derive(Debug)]
pub struct GatePass {
    _in_flight: OwnedRwLockReadGuard<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SendGate {
    /// A gate with no lease yet: every request with an epoch is refused
    /// until [`SendGate::renewed`] is called.
    pub fn new() -> Self {
        SendGate::default()
    }

    /// The lease is valid until `until` (a renewal succeeded).
    pub fn renewed(&self, until: Instant) {
        let mut valid_until = lock(&self.inner.valid_until);
        if valid_until.is_none_or(|current| until > current) {
            *valid_until = Some(until);
        }
    }

    /// Until when the lease is valid; `None`: it never was.
    pub fn valid_until(&self) -> Option<Instant> {
        *lock(&self.inner.valid_until)
    }

    /// Whether the lease is valid now.
    pub fn lease_is_valid(&self) -> bool {
        self.valid_until()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Raises the local fence of each `(file id, epoch)`, then waits until
    /// every request admitted under the old fences has been answered.
    pub async fn install_fences(&self, fences: impl IntoIterator<Item = (FileId, Epoch)>) {
        {
            let mut map = lock(&self.inner.fences);
            for (file_id, epoch) in fences {
                let fence = map.entry(file_id).or_insert(epoch);
                *fence = (*fence).max(epoch);
            }
        }
        drop(self.inner.in_flight.write().await);
    }

    /// Admits nothing from now on, and waits until every request admitted
    /// before has been answered (a stopping access server, before it
    /// gives its lease up).
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        drop(self.inner.in_flight.write().await);
    }

    /// The local fence of `file_id`, if any.
    pub fn fence_of(&self, file_id: FileId) -> Option<Epoch> {
        lock(&self.inner.fences).get(&file_id).copied()
    }

    /// Admits a write or delete for `file_id` at ownership `epoch`: `None`
    /// without an epoch (not checked); else a pass to hold until the
    /// request is answered, or why it may not be sent.
    pub async fn admit(
        &self,
        file_id: FileId,
        epoch: Option<Epoch>,
    ) -> Result<Option<GatePass>, BlockError> {
        let Some(epoch) = epoch else {
            return Ok(None);
        };
        let pass = GatePass {
            _in_flight: self.inner.in_flight.clone().read_owned().await,
        };
        self.check_epoch(file_id, epoch)?;
        Ok(Some(pass))
    }

    /// Whether a read for `file_id` at ownership `epoch` may be sent (a
    /// read leaves nothing behind, so none is waited for by
    /// [`SendGate::install_fences`]).
    pub fn check(&self, file_id: FileId, epoch: Option<Epoch>) -> Result<(), BlockError> {
        match epoch {
            Some(epoch) => self.check_epoch(file_id, epoch),
            None => Ok(()),
        }
    }

    fn check_epoch(&self, file_id: FileId, epoch: Epoch) -> Result<(), BlockError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BlockError::LeaseExpired {
                file_id,
                why: "this access server is stopping".into(),
            });
        }
        let now = Instant::now();
        match self.valid_until() {
            Some(until) if now < until => {}
            Some(until) => {
                return Err(BlockError::LeaseExpired {
                    file_id,
                    why: format!(
                        "the ownership lease ran out {} ms ago and has not been renewed",
                        now.duration_since(until).as_millis()
                    ),
                })
            }
            None => {
                return Err(BlockError::LeaseExpired {
                    file_id,
                    why: "no ownership lease has been obtained yet".into(),
                })
            }
        }
        let fence = self.fence_of(file_id);
        if let Some(fence) = fence.filter(|&fence| epoch < fence) {
            return Err(BlockError::Fenced {
                node: "this access server".into(),
                file_id,
                message: format!(
                    "ownership revoked here: epoch {epoch} offered, fence {fence} \
                     (a handover could not reach every core of this site)"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn epoch(n: u64) -> Epoch {
        Epoch::new(n).unwrap()
    }

    #[tokio::test]
    async fn requests_pass_only_under_a_valid_lease_and_above_the_fences() {
        let gate = SendGate::new();
        assert!(gate
            .admit(FileId(7), None)
            .await
            .is_ok_and(|pass| pass.is_none()));
        assert!(matches!(
            gate.admit(FileId(7), Epoch::new(3)).await,
            Err(BlockError::LeaseExpired {
                file_id: FileId(7),
                ..
            })
        ));
        gate.renewed(Instant::now() + Duration::from_secs(60));
        assert!(gate.lease_is_valid());
        assert!(gate
            .admit(FileId(7), Epoch::new(3))
            .await
            .is_ok_and(|pass| pass.is_some()));
        gate.install_fences([(FileId(7), epoch(4))]).await;
        assert!(gate
            .admit(FileId(7), Epoch::new(3))
            .await
            .is_err_and(|e| e.is_fenced()));
        assert!(gate.admit(FileId(7), Epoch::new(4)).await.is_ok());
        assert!(
            gate.admit(FileId(8), Epoch::new(3)).await.is_ok(),
            "other files are not fenced"
        );
        // A fence never goes down; an older renewal never shortens the lease.
        gate.install_fences([(FileId(7), epoch(2))]).await;
        assert_eq!(gate.fence_of(FileId(7)), Epoch::new(4));
        let until = gate.valid_until();
        gate.renewed(Instant::now());
        assert_eq!(gate.valid_until(), until);
        let expired = SendGate::new();
        expired.renewed(Instant::now());
        assert!(!expired.lease_is_valid());
        assert!(matches!(
            expired.admit(FileId(1), Epoch::new(1)).await,
            Err(BlockError::LeaseExpired { .. })
        ));
        gate.close().await;
        assert!(matches!(
            gate.admit(FileId(8), Epoch::new(3)).await,
            Err(BlockError::LeaseExpired { .. })
        ));
    }

    #[tokio::test]
    async fn installing_fences_waits_for_the_requests_in_flight() {
        let gate = SendGate::new();
        gate.renewed(Instant::now() + Duration::from_secs(60));
        let pass = gate.admit(FileId(1), Epoch::new(1)).await.ok().flatten();
        assert!(pass.is_some());
        let installing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.install_fences([(FileId(1), epoch(2))]).await }
        });
        // Poll: the install cannot finish while the pass is held.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!installing.is_finished());
        drop(pass);
        tokio::time::timeout(Duration::from_secs(10), installing)
            .await
            .expect("the install finishes once the request was answered")
            .expect("install task");
        assert!(gate
            .admit(FileId(1), Epoch::new(1))
            .await
            .is_err_and(|e| e.is_fenced()));
    }
}
