//! The geonfs test kit: what the system tests, the thrasher and the
//! benchmarks build on.
//!
//! - [`cluster::TestCluster`] starts S sites × C core servers × M meta
//!   voters × A access servers in one process, each node on its own
//!   loopback address (`127.<site>.0.<n>`, port 0, read back), and lets a
//!   test stop, kill and restart nodes, cut and heal links, set the emulated
//!   WAN, and tear it all down.
//! - [`nfs_client`]: NFSv3 clients bound to a client address of a site.
//! - [`linearizability`]: a checker of histories against a register model.
//! - [`thrash`]: the data-path thrasher (random NFS I/O under faults).
//! - [`replication`]: reading replication metrics and waiting for drains.
//! - [`process`]: limits a test process sets on itself.
//! - [`rng`]: the seeded random source.
//! - [`rpc_fuzz`]: a mutation fuzzer of the access server's RPC front door.
//!
//! The system tests themselves are in `testkit/tests/system/`.
//! Invariants are cited as `docs/ARCHITECTURE.md#invariant-N`.

// Test harness: a failed `unwrap` ends the run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod linearizability;
pub mod nfs_client;
pub mod process;
pub mod replication;
pub mod rng;
pub mod rpc_fuzz;
pub mod thrash;
