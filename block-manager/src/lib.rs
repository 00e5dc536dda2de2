//! geonfs block manager: placement of a block's copies inside a site and
//! across sites, the two-local-copies acknowledgement rule, the durable
//! asynchronous geo-replication queue, trimming and repair. Runs inside core
//! servers. Filled in by the block-pipeline work.
