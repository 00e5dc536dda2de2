//! Building meta-kvs transactions and the bounded retry loop shared by every
//! namespace change, including how an ambiguous failure
//! ([`MetaError::OutcomeUnknown`]) is resolved.
//!
//! Every change writes a fresh random `change_token` into one *anchor* inode
//! (the directory for entry changes, the object itself for SETATTR) and is
//! conditioned on the anchor's version. After an ambiguous failure the next
//! attempt re-reads the anchor:
//!
//! * its token is ours → the change landed: report the result computed for
//!   that attempt;
//! * its version is still the one we conditioned on → the change has not
//!   landed yet and may still: decide again; the next transaction is
//!   conditioned on the same version, so at most one of them can apply;
//! * otherwise the change can no longer land but may have landed and been
//!   overwritten → unless the operation can tell from the rest of the state
//!   (a create recognises its own file id), report the ambiguity as
//!   [`MetaError::OutcomeUnknown`]; never success.

use std::time::Duration;

use bytes::Bytes;
use geonfs_meta_kvs::{MetaClient, MetaError};
use geonfs_proto::meta::{condition, operation, Condition, KeyValue, Operation, TxnRequest};
use rand::Rng;

use super::error::NamespaceError;

/// How many times a change is decided and attempted before giving up with
/// [`NamespaceError::Busy`].
pub const MAX_ATTEMPTS: u32 = 64;

/// A transaction under construction.
#[derive(Default)]
pub struct Txn {
    req: TxnRequest,
}

impl Txn {
    /// Requires `key` to be at `version` (0 = absent).
    pub fn version(&mut self, key: Bytes, version: u64) -> &mut Self {
        self.req.conditions.push(Condition {
            key,
            test: Some(condition::Test::VersionEquals(version)),
        });
        self
    }

    /// Requires `key` to be absent.
    pub fn absent(&mut self, key: Bytes) -> &mut Self {
        self.req.conditions.push(Condition {
            key,
            test: Some(condition::Test::Absent(true)),
        });
        self
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Bytes, value: Bytes) -> &mut Self {
        self.req.operations.push(Operation {
            op: Some(operation::Op::Put(KeyValue {
                key,
                value,
                version: 0,
            })),
        });
        self
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Bytes) -> &mut Self {
        self.req.operations.push(Operation {
            op: Some(operation::Op::Delete(key)),
        });
        self
    }
}

/// What became of a transaction.
pub enum Outcome {
    /// Applied, at this meta-kvs version.
    Applied(u64),
    /// A condition failed: nothing was applied.
    Conflict,
    /// It may or may not have been applied.
    Unknown(MetaError),
}

impl Outcome {
    /// The version of the writes when applied, else 0.
    pub fn version(&self) -> u64 {
        match self {
            Outcome::Applied(version) => *version,
            _ => 0,
        }
    }
}

/// Sends `txn`; other errors than an unknown outcome are returned as errors
/// (they certainly did not apply).
pub async fn commit(client: &MetaClient, txn: Txn) -> Result<Outcome, NamespaceError> {
    match client.txn(txn.req).await {
        Ok(reply) if reply.succeeded => Ok(Outcome::Applied(reply.version)),
        Ok(_) => Ok(Outcome::Conflict),
        Err(err @ MetaError::OutcomeUnknown(_)) => Ok(Outcome::Unknown(err)),
        Err(err) => Err(err.into()),
    }
}

/// A fresh random change token (never 0, the token of records written
/// before tokens existed).
pub fn new_token() -> u64 {
    rand::rng().random_range(1..=u64::MAX)
}

/// An attempt whose outcome is unknown.
struct Pending<R> {
    token: u64,
    anchor_version: u64,
    result: R,
}

/// What [`Attempts::check`] found out about earlier ambiguous attempts.
pub enum Check<R> {
    /// No ambiguous attempt can have landed unseen: decide afresh.
    Proceed,
    /// An earlier attempt landed; its result.
    Landed(R),
    /// An earlier attempt may have landed and been overwritten since.
    Ambiguous,
}

/// The attempts of one change: the bound, the backoff, and the attempts
/// whose outcome is unknown.
pub struct Attempts<R> {
    attempt: u32,
    pending: Vec<Pending<R>>,
    last_unknown: Option<MetaError>,
}

impl<R> Attempts<R> {
    /// No attempt yet.
    pub fn new() -> Self {
        Attempts {
            attempt: 0,
            pending: Vec::new(),
            last_unknown: None,
        }
    }

    /// Starts the next attempt (after a random exponential backoff from the
    /// second on: up to 1 ms, 2 ms, … 50 ms); `Err` once [`MAX_ATTEMPTS`]
    /// are used up.
    pub async fn begin(&mut self) -> Result<(), NamespaceError> {
        if self.attempt >= MAX_ATTEMPTS {
            return Err(self.give_up());
        }
        if self.attempt > 0 {
            let max_us = (500u64 << self.attempt.min(7)).min(50_000);
            let pause = rand::rng().random_range(0..=max_us);
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
        self.attempt += 1;
        Ok(())
    }

    /// The error to report when no attempt is known to have applied:
    /// the ambiguity if there was one, else contention.
    pub fn give_up(&mut self) -> NamespaceError {
        match self.last_unknown.take() {
            Some(err) => NamespaceError::Meta(err),
            None => NamespaceError::Busy,
        }
    }

    /// `err` as the caller should see it: once an attempt's outcome is
    /// unknown and still undecided, a meta-kvs failure (a read that timed
    /// out, …) leaves the change ambiguous, so it is reported as
    /// [`MetaError::OutcomeUnknown`].
    pub fn explain(&mut self, err: NamespaceError) -> NamespaceError {
        match (&err, &self.last_unknown) {
            (NamespaceError::Meta(MetaError::OutcomeUnknown(_)), _) | (_, None) => err,
            (NamespaceError::Meta(_) | NamespaceError::Busy, Some(first)) => {
                NamespaceError::Meta(MetaError::OutcomeUnknown(format!(
                    "an earlier attempt may have applied ({first}); then: {err}"
                )))
            }
            _ => err,
        }
    }

    /// Whether any attempt so far had an unknown outcome.
    pub fn had_unknown(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Checks the earlier ambiguous attempts against the anchor as just
    /// read (its version and change token).
    pub fn check(&mut self, anchor_version: u64, anchor_token: u64) -> Check<R> {
        if self.pending.is_empty() {
            return Check::Proceed;
        }
        if let Some(i) = self.pending.iter().position(|p| p.token == anchor_token) {
            return Check::Landed(self.pending.swap_remove(i).result);
        }
        if self
            .pending
            .iter()
            .any(|p| p.anchor_version == anchor_version)
        {
            return Check::Proceed;
        }
        Check::Ambiguous
    }

    /// Records the outcome of an attempt that wrote `token` into the anchor
    /// read at `anchor_version`: `Ok(Some(result))` when it applied,
    /// `Ok(None)` to try again.
    pub fn record(
        &mut self,
        outcome: Outcome,
        token: u64,
        anchor_version: u64,
        result: R,
    ) -> Option<R> {
        match outcome {
            Outcome::Applied(_) => Some(result),
            Outcome::Conflict => None,
            Outcome::Unknown(err) => {
                self.last_unknown = Some(err);
                self.pending.push(Pending {
                    token,
                    anchor_version,
                    result,
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown() -> Outcome {
        Outcome::Unknown(MetaError::OutcomeUnknown("lost reply".into()))
    }

    #[test]
    fn applied_and_conflicting_attempts() {
        let mut attempts: Attempts<&str> = Attempts::new();
        assert!(matches!(attempts.check(5, 9), Check::Proceed));
        assert_eq!(attempts.record(Outcome::Conflict, 1, 5, "a"), None);
        assert!(matches!(attempts.check(6, 9), Check::Proceed));
        assert_eq!(attempts.record(Outcome::Applied(7), 2, 6, "b"), Some("b"));
        assert!(matches!(attempts.give_up(), NamespaceError::Busy));
    }

    #[test]
    fn unknown_outcomes_are_resolved_by_the_anchor() {
        let mut attempts: Attempts<&str> = Attempts::new();
        assert_eq!(attempts.record(unknown(), 11, 5, "first"), None);
        assert!(attempts.had_unknown());
        // Anchor unchanged: not applied yet, decide again.
        assert!(matches!(attempts.check(5, 3), Check::Proceed));
        assert_eq!(attempts.record(unknown(), 12, 5, "second"), None);
        // The first one landed: its result.
        assert!(matches!(attempts.check(8, 11), Check::Landed("first")));
        // Anchor changed by someone else: cannot tell.
        assert!(matches!(attempts.check(9, 77), Check::Ambiguous));
        assert!(matches!(
            attempts.give_up(),
            NamespaceError::Meta(MetaError::OutcomeUnknown(_))
        ));
    }

    #[test]
    fn failures_after_an_unknown_outcome_stay_ambiguous() {
        let mut attempts: Attempts<()> = Attempts::new();
        let timeout = || NamespaceError::Meta(MetaError::Timeout("no leader".into()));
        assert!(matches!(
            attempts.explain(timeout()),
            NamespaceError::Meta(MetaError::Timeout(_))
        ));
        attempts.record(unknown(), 1, 1, ());
        assert!(matches!(
            attempts.explain(timeout()),
            NamespaceError::Meta(MetaError::OutcomeUnknown(_))
        ));
        // Decisions from a re-read state are kept.
        assert!(matches!(
            attempts.explain(NamespaceError::Exist),
            NamespaceError::Exist
        ));
    }
}
