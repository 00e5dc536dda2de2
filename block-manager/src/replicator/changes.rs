//! What a replication job ships: the byte ranges of a block written since a
//! version its remote copies are known to hold, not the whole block.
//!
//! A core that takes a partial write adds the written range to the block's
//! job ([`JobChanges::add`], in the same storage batch as the data). The
//! primary ships the bytes of those ranges at the copy's version together
//! with the job's **base**; a remote core applies them only on a copy
//! complete at exactly that base, else it answers "base mismatch" and the
//! primary ships the whole block instead. That check is what makes the
//! shipped ranges safe: a block's content at a version is the same on every
//! copy that holds the version, so base + every byte written after it is the
//! block at the new version.
//!
//! The ranges therefore must cover every byte written after the base: a
//! range keeps the newest version of the writes merged into it, and after a
//! ship of version `v` ([`JobChanges::shipped`]) the base becomes `v` and
//! only ranges with a newer write stay. A write that replaces the whole block
//! (a truncate's tail, a seed, a restored copy) makes the job ship the whole
//! block (`ReplicationJob::changes` is `None`).

use geonfs_proto::domain::Version;

/// Most ranges a job keeps; past this the two closest ranges are merged
/// (the gap between them is shipped too, still at most the block).
pub const MAX_CHANGED_RANGES: usize = 64;

/// Bytes of a block written since a job's base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangedRange {
    /// First byte, from the start of the block.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// The newest write merged into the range.
    pub version: Version,
    /// When the oldest write merged into it was queued (ms since the Unix
    /// epoch): the replication lag of these bytes.
    pub since_ms: u64,
}

impl ChangedRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    fn absorb(&mut self, other: &ChangedRange) {
        let end = self.end().max(other.end());
        self.offset = self.offset.min(other.offset);
        self.len = end - self.offset;
        self.version = self.version.max(other.version);
        self.since_ms = self.since_ms.min(other.since_ms);
    }
}

/// The changes a job ships on top of its base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobChanges {
    /// The version the remote copies are expected to hold (a block that
    /// exists nowhere yet: [`Version::ZERO`]).
    pub base: Version,
    /// Written ranges, sorted by offset, none overlapping.
    pub ranges: Vec<ChangedRange>,
}

impl JobChanges {
    /// No changes yet on top of `base`.
    pub fn new(base: Version) -> Self {
        JobChanges {
            base,
            ranges: Vec::new(),
        }
    }

    /// Adds a write of `len` bytes at `offset` at `version`, queued at
    /// `now_ms`. Overlapping ranges merge; past [`MAX_CHANGED_RANGES`] the
    /// two closest ranges merge as well.
    pub fn add(&mut self, offset: u64, len: u64, version: Version, now_ms: u64) {
        if len == 0 {
            return;
        }
        let mut merged = ChangedRange {
            offset,
            len,
            version,
            since_ms: now_ms,
        };
        // Ranges overlapping the new one (touching is not overlapping:
        // a range kept apart can be dropped by a ship on its own).
        let first = self.ranges.partition_point(|r| r.end() <= offset);
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].offset < merged.end() {
            merged.absorb(&self.ranges[last]);
            last += 1;
        }
        self.ranges.splice(first..last, [merged]);
        while self.ranges.len() > MAX_CHANGED_RANGES {
            self.merge_closest();
        }
    }

    fn merge_closest(&mut self) {
        let closest = (1..self.ranges.len()).min_by_key(|&i| {
            self.ranges[i]
                .offset
                .saturating_sub(self.ranges[i - 1].end())
        });
        if let Some(i) = closest {
            let next = self.ranges.remove(i);
            self.ranges[i - 1].absorb(&next);
        }
    }

    /// Every remote copy now holds `version`: it becomes the base and only
    /// the ranges written after it stay.
    pub fn shipped(&mut self, version: Version) {
        self.base = self.base.max(version);
        self.ranges.retain(|range| range.version > version);
    }

    /// Bytes the ranges cover.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|range| range.len).sum()
    }

    /// When the oldest change still to ship was queued.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.ranges.iter().map(|range| range.since_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(changes: &JobChanges) -> Vec<(u64, u64, u64)> {
        changes
            .ranges
            .iter()
            .map(|r| (r.offset, r.len, r.version.0))
            .collect()
    }

    #[test]
    fn overlapping_writes_merge_with_the_newest_version() {
        let mut changes = JobChanges::new(Version(1));
        changes.add(8192, 4096, Version(2), 10);
        changes.add(0, 4096, Version(3), 11);
        // Touching ranges stay apart; overlapping ones merge.
        changes.add(4096, 4096, Version(4), 12);
        assert_eq!(
            spans(&changes),
            vec![(0, 4096, 3), (4096, 4096, 4), (8192, 4096, 2)]
        );
        changes.add(2048, 8192, Version(5), 13);
        assert_eq!(spans(&changes), vec![(0, 12288, 5)]);
        assert_eq!(changes.ranges[0].since_ms, 10);
        assert_eq!(changes.bytes(), 12288);
        changes.add(100, 0, Version(6), 14);
        assert_eq!(changes.bytes(), 12288);
    }

    #[test]
    fn a_ship_keeps_only_what_was_written_after_it() {
        let mut changes = JobChanges::new(Version(1));
        changes.add(0, 4096, Version(2), 10);
        changes.add(65536, 4096, Version(3), 20);
        changes.add(131072, 4096, Version(4), 30);
        changes.shipped(Version(3));
        assert_eq!(changes.base, Version(3));
        assert_eq!(spans(&changes), vec![(131072, 4096, 4)]);
        assert_eq!(changes.oldest_ms(), Some(30));
        changes.shipped(Version(4));
        assert!(changes.ranges.is_empty());
        assert_eq!(changes.oldest_ms(), None);
    }

    #[test]
    fn past_the_limit_the_closest_ranges_merge_and_nothing_is_lost() {
        let mut changes = JobChanges::new(Version::ZERO);
        let mut written = Vec::new();
        for i in 0..(MAX_CHANGED_RANGES as u64 * 3) {
            // Scattered 4 KiB writes over a 4 MiB block.
            let offset = (i * 7919 % 1024) * 4096;
            changes.add(offset, 4096, Version(i + 1), i);
            written.push(offset);
        }
        assert!(changes.ranges.len() <= MAX_CHANGED_RANGES);
        for pair in changes.ranges.windows(2) {
            assert!(pair[0].end() <= pair[1].offset, "{:?}", pair);
        }
        for offset in written {
            assert!(
                changes
                    .ranges
                    .iter()
                    .any(|r| r.offset <= offset && offset + 4096 <= r.end()),
                "write at {offset} not covered"
            );
        }
    }
}
