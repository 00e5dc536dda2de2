//! geonfs benchmarks and the in-process test cluster they and the tests use.
//!
//! [`cluster::TestCluster`] starts S sites × C core servers × M meta voters ×
//! A access servers in one process, each node on its own loopback address
//! (`127.<site>.0.<n>`, port 0, read back), and lets a test stop, kill and
//! restart nodes, cut and heal links, set the emulated WAN, and tear it all
//! down.
//!
//! Invariant numbers ("invariant 4") refer to `docs/ARCHITECTURE.md`.

pub mod cluster;
pub mod linearizability;
pub mod nfs_client;
pub mod peers;
pub mod plot;
pub mod replication;
pub mod report;
pub mod thrash;
