//! geonfs core server: the block store of one node (partial writes,
//! checksums, versions, group commit) and its gRPC data service
//! (`geonfs.core.CoreData`, `geonfs.replication.BlockReplication`). It hosts
//! the block manager. Filled in by the block-pipeline work; the node runtime
//! (`geonfs::node`) serves it on nodes with the `core` role.
