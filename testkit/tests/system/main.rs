//! System tests: whole clusters in one process, through the real RPC layer.
//! One test binary for the whole suite (each binary links RocksDB).

// A failed `unwrap` is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blocks;
mod cluster;
mod core;
mod failover;
mod fence;
mod file_data;
mod lease;
mod meta;
mod meta_jepsen;
mod meta_membership;
mod namespace;
mod nfs;
mod nfs_clients;
mod nfs_data;
mod nfs_mount_root;
mod nfs_readdir;
mod ownership;
mod partition;
mod permissions;
mod quarantine;
mod repair;
mod replication;
mod replication_changes;
mod rpc;
mod rpc_fuzz;
mod site_writers;
mod slow_wan;
mod support;
mod thrash;
mod tls;
mod trimmed_copy;
