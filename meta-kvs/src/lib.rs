//! geonfs meta-kvs: the Raft-replicated KV (tikv `raft` + RocksDB) that holds
//! the cluster's metadata. Filled in by the meta-kvs work.
