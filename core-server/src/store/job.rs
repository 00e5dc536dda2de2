//! The encoding of a replication job (one per block).
//!
//! Key `q | file_id BE | index BE`; value `version | primary u8 |
//! first_enqueued_ms | attempts u32 | next_attempt_ms | peer | targets`
//! (integers BE; the peer and each target as `u16 BE length | UTF-8`, the
//! targets preceded by their `u16 BE` count), then the job's changes
//! ([`JobChanges`]): `1 u8 | base u64 | count u16 | count × (offset u32 |
//! len u32 | version u64 | since_ms u64)`, then `2 u8` if the job is
//! shipped (only the peer's trim left). A value without changes (written
//! before they existed, or with a range that does not fit) ships the whole
//! block.

use geonfs_block_manager::replicator::{ChangedRange, JobChanges};
use geonfs_block_manager::ReplicationJob;
use geonfs_proto::domain::{BlockId, FileId, Version};

use crate::CoreError;

/// Key prefix of replication jobs.
pub(super) const QUEUE_TAG: u8 = b'q';

/// Tag of the changes section of a job value.
const CHANGES_TAG: u8 = 1;
/// Tag of a shipped job.
const SHIPPED_TAG: u8 = 2;

/// `q | file_id BE | index BE`.
pub(super) fn job_key(block: BlockId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = QUEUE_TAG;
    key[1..9].copy_from_slice(&block.file_id.0.to_be_bytes());
    key[9..17].copy_from_slice(&block.index.to_be_bytes());
    key
}

/// The block of a job key, `None` if `key` is not one.
pub(super) fn block_of_job_key(key: &[u8]) -> Option<BlockId> {
    if key.len() != 17 || key[0] != QUEUE_TAG {
        return None;
    }
    Some(BlockId {
        file_id: FileId(u64::from_be_bytes(key[1..9].try_into().ok()?)),
        index: u64::from_be_bytes(key[9..17].try_into().ok()?),
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The changes section, `None` if a range does not fit its fields (the
/// job then ships the whole block).
fn encode_changes(changes: &JobChanges) -> Option<Vec<u8>> {
    let count = u16::try_from(changes.ranges.len()).ok()?;
    let mut out = Vec::with_capacity(11 + changes.ranges.len() * 24);
    out.push(CHANGES_TAG);
    out.extend_from_slice(&changes.base.0.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for range in &changes.ranges {
        out.extend_from_slice(&u32::try_from(range.offset).ok()?.to_be_bytes());
        out.extend_from_slice(&u32::try_from(range.len).ok()?.to_be_bytes());
        out.extend_from_slice(&range.version.0.to_be_bytes());
        out.extend_from_slice(&range.since_ms.to_be_bytes());
    }
    Some(out)
}

/// A job's stored value.
pub(super) fn encode_job(job: &ReplicationJob) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&job.version.0.to_be_bytes());
    out.push(u8::from(job.primary));
    out.extend_from_slice(&job.first_enqueued_ms.to_be_bytes());
    out.extend_from_slice(&job.attempts.to_be_bytes());
    out.extend_from_slice(&job.next_attempt_ms.to_be_bytes());
    put_str(&mut out, &job.peer);
    let count = job.targets.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for target in job.targets.iter().take(count) {
        put_str(&mut out, target);
    }
    if let Some(changes) = job.changes.as_ref().and_then(encode_changes) {
        out.extend_from_slice(&changes);
    }
    if job.shipped {
        out.push(SHIPPED_TAG);
    }
    out
}

/// A cursor over an encoded job.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    /// The changes section, if the value has one next.
    fn changes(&mut self) -> Option<Option<JobChanges>> {
        if self.0.first() != Some(&CHANGES_TAG) {
            return Some(None);
        }
        self.take(1)?;
        let base = Version(self.u64()?);
        let count = self.u16()?;
        let ranges = (0..count)
            .map(|_| {
                Some(ChangedRange {
                    offset: u64::from(self.u32()?),
                    len: u64::from(self.u32()?),
                    version: Version(self.u64()?),
                    since_ms: self.u64()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let sorted = ranges.windows(2).all(|w| w[0].end() <= w[1].offset);
        sorted.then_some(Some(JobChanges { base, ranges }))
    }

    /// The shipped tag, then nothing: true if there.
    fn shipped(&mut self) -> Option<bool> {
        let shipped = match self.0 {
            [] => false,
            [SHIPPED_TAG] => true,
            _ => return None,
        };
        self.0 = &[];
        Some(shipped)
    }
}

/// The job a stored value of `block`'s job key holds.
pub(super) fn decode_job(block: BlockId, value: &[u8]) -> Result<ReplicationJob, CoreError> {
    let parse = || {
        let mut r = Reader(value);
        let version = r.u64()?;
        let primary = r.take(1)?[0] != 0;
        let first_enqueued_ms = r.u64()?;
        let attempts = r.u32()?;
        let next_attempt_ms = r.u64()?;
        let peer = r.string()?;
        let count = r.u16()?;
        let targets = (0..count).map(|_| r.string()).collect::<Option<Vec<_>>>()?;
        let changes = r.changes()?;
        let shipped = r.shipped()?;
        Some(ReplicationJob {
            block,
            version: Version(version),
            targets,
            primary,
            peer,
            first_enqueued_ms,
            attempts,
            next_attempt_ms,
            length: 0,
            changes,
            shipped,
        })
    };
    parse().ok_or_else(|| CoreError::Corrupt {
        what: format!("replication job of block {block}"),
        detail: format!("{} bytes do not decode", value.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(changes: Option<JobChanges>) -> ReplicationJob {
        job_shipped(changes, false)
    }

    fn job_shipped(changes: Option<JobChanges>, shipped: bool) -> ReplicationJob {
        ReplicationJob {
            block: BlockId {
                file_id: FileId(7),
                index: 3,
            },
            version: Version(42),
            targets: vec!["b-core-1".into(), "c-core-2".into()],
            primary: true,
            peer: "a-core-2".into(),
            first_enqueued_ms: 1000,
            attempts: 2,
            next_attempt_ms: 2000,
            length: 0,
            changes,
            shipped,
        }
    }

    #[test]
    fn jobs_with_and_without_changes_round_trip() {
        let mut changes = JobChanges::new(Version(40));
        changes.add(4096, 4096, Version(41), 900);
        changes.add(65536, 512, Version(42), 950);
        for job in [
            job(None),
            job(Some(changes)),
            job(Some(JobChanges::new(Version::ZERO))),
        ] {
            let decoded = decode_job(job.block, &encode_job(&job));
            assert_eq!(decoded.ok(), Some(job));
        }
    }

    #[test]
    fn a_job_written_before_changes_existed_ships_the_whole_block() {
        let mut changes = JobChanges::new(Version(40));
        changes.add(0, 4096, Version(42), 900);
        let with = encode_job(&job(Some(changes)));
        let without = encode_job(&job(None));
        assert!(with.starts_with(&without));
        let decoded = decode_job(job(None).block, &without).map(|job| job.changes);
        assert_eq!(decoded.ok(), Some(None));
        // Truncated, or followed by garbage: corrupt, never a partial list.
        for bad in [
            &with[..with.len() - 1],
            &[with.as_slice(), &[0]].concat()[..],
        ] {
            assert!(matches!(
                decode_job(job(None).block, bad),
                Err(CoreError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn a_range_past_the_encoding_ships_the_whole_block() {
        let mut changes = JobChanges::new(Version(40));
        changes.add(1 << 33, 4096, Version(42), 900);
        let decoded = decode_job(job(None).block, &encode_job(&job(Some(changes))));
        assert_eq!(decoded.map(|job| job.changes).ok(), Some(None));
    }
}
