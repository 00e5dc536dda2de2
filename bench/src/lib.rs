//! geonfs benchmarks (the binaries in `src/bin/`, each comparing against a
//! peer in the same run) and what they share: the peers they start
//! ([`peers`]), plots ([`plot`]) and reports ([`report`]). The clusters
//! they measure come from `geonfs_testkit`.
//!
//! Invariants are cited as `docs/ARCHITECTURE.md#invariant-N`.

// Benchmarks: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod peers;
pub mod plot;
pub mod report;
