//! [`IdAllocator`]: file ids without a hot key per create.

use geonfs_meta_kvs::MetaClient;
use tokio::sync::Mutex;

use super::error::NamespaceError;
use super::keys::id_counter_key;
use super::record::decode_counter;
use super::txn::{commit, Attempts, Outcome, Txn};
use super::ROOT_ID;

/// How many ids one reservation takes by default.
pub const DEFAULT_RANGE: u64 = 4096;

/// Hands out file ids that are unique cluster-wide and never reused.
///
/// Ranges of ids are reserved with a compare-and-set transaction on one
/// counter key (`fs/id`, the first id not yet reserved) and handed out from
/// memory. Ids of a range not used before the process stops are skipped,
/// never reused. A reservation whose outcome is unknown is abandoned (its
/// range may be lost, never handed out twice).
#[derive(Debug)]
pub struct IdAllocator {
    client: MetaClient,
    range_len: u64,
    /// `[next, end)`: the ids reserved and not yet handed out.
    range: Mutex<(u64, u64)>,
}

impl IdAllocator {
    /// An allocator reserving `range_len` (at least 1) ids at a time.
    pub fn new(client: MetaClient, range_len: u64) -> Self {
        IdAllocator {
            client,
            range_len: range_len.max(1),
            range: Mutex::new((0, 0)),
        }
    }

    /// A fresh id.
    pub async fn next_id(&self) -> Result<u64, NamespaceError> {
        let mut range = self.range.lock().await;
        if range.0 >= range.1 {
            *range = self.reserve().await?;
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }

    /// Reserves the next range of ids.
    async fn reserve(&self) -> Result<(u64, u64), NamespaceError> {
        let mut attempts: Attempts<()> = Attempts::new();
        loop {
            attempts.begin().await?;
            let (start, version) = match self.client.get(id_counter_key()).await? {
                Some(kv) => (decode_counter(&kv.value)?, kv.version),
                None => (ROOT_ID + 1, 0),
            };
            let end = start
                .checked_add(self.range_len)
                .ok_or_else(|| NamespaceError::corrupt("id counter", "ids exhausted"))?;
            let mut txn = Txn::default();
            txn.version(id_counter_key(), version)
                .put(id_counter_key(), end.to_be_bytes().to_vec().into());
            match commit(&self.client, txn).await? {
                Outcome::Applied(_) => return Ok((start, end)),
                // Lost a race, or maybe reserved: either way take another
                // range (a lost range is never handed out).
                Outcome::Conflict | Outcome::Unknown(_) => continue,
            }
        }
    }
}
