//! geonfs access server: the NFSv3 export of the shared namespace, with the
//! namespace in meta-kvs and file data in blocks on core servers. Filled in
//! by the access-server work; the node runtime (`geonfs::node`) serves it on
//! nodes with the `access` role.
