//! geonfs access server: the NFSv3 export of the shared namespace, with the
//! namespace in meta-kvs and file data in blocks on core servers. Filled in
//! by the access-server work; the node runtime (`geonfs::node`) serves it on
//! nodes with the `access` role.
//!
//! [`data`] keeps file bytes (and each file's size and mtime record) in
//! blocks on the site's core servers.
//! [`namespace`] keeps directories and inodes in meta-kvs.
//! [`ownership`] records which site writes each file, hands files over
//! between sites and finds the newest bytes for a read anywhere.
//! [`nfs`] is the NFS v3 and MOUNT v3 programs over the namespace.
//! [`AccessServer`] is the access role of a node (NFS, MOUNT, portmapper).
//! [`oncrpc`] owns the ONC RPC transport (record marking, call decoding,
//! credentials, dispatch to programs) and the PORTMAP program.
//!
//! Invariants are cited as `docs/ARCHITECTURE.md#invariant-N`.

pub mod data;
pub mod error;
pub mod namespace;
pub mod nfs;
pub mod oncrpc;
pub mod ownership;
pub mod server;

pub use error::AccessError;
pub use server::AccessServer;
