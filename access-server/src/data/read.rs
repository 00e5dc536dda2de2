//! READ's side of [`FileData`]: the bytes of a range, and at the owning
//! site a read that answers size and mtime from memory.
//!
//! # One in-site round trip per READ at the owner
//!
//! A READ needs the file's size (to clamp the range and for its post-op
//! attributes) and its bytes. At the owning site the size and mtime of
//! the writes this process issued are known in memory; reading the
//! attribute record only served to learn whether the file was taken over
//! meanwhile (a core refuses a request whose epoch is below its fence).
//! The data read carries the same epoch to the same cores
//! ([`crate::ownership::Ownership::read_block`]), so it is that check:
//! [`FileData::read_owned`] takes the remembered state, reads the bytes
//! with its epoch, and answers only if the state still belongs to that
//! epoch afterwards. A read past the remembered end reads no block, so it
//! goes the long way (record first) instead.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use geonfs_proto::domain::FileId;

use super::{DataError, FileData};

/// What [`FileData::read_owned`] read: the bytes, whether they reach the
/// end of the file, and the file's size and mtime they were read at.
#[derive(Clone, Debug)]
pub struct OwnedRead {
    /// The bytes read.
    pub data: Bytes,
    /// Whether they reach the end of the file.
    pub eof: bool,
    /// The file's size.
    pub size: u64,
    /// The file's mtime.
    pub mtime: SystemTime,
}

impl FileData {
    /// At the owning site, with the size and mtime known in memory: up to
    /// `count` bytes at `offset`, checked against ownership by the data
    /// read itself (see the module doc). `None` when the state is not
    /// known here, the range starts at or past the end, or ownership
    /// moved during the read: the caller reads the attribute record and
    /// then [`FileData::read`].
    pub async fn read_owned(
        &self,
        file_id: FileId,
        offset: u64,
        count: u32,
    ) -> Result<Option<OwnedRead>, DataError> {
        let Some((size, mtime, epoch)) = self.remembered(file_id) else {
            return Ok(None);
        };
        if offset >= size || count == 0 {
            return Ok(None);
        }
        let (data, eof) = self.read(file_id, offset, count, size).await?;
        if self.remembered(file_id).map(|(_, _, e)| e) != Some(epoch) {
            return Ok(None);
        }
        Ok(Some(OwnedRead {
            data,
            eof,
            size,
            mtime,
        }))
    }

    /// Reads up to `count` bytes at `offset` of a file of `file_size`
    /// bytes (the range is clamped to it): the blocks in parallel, absent
    /// blocks and never-written ranges as zeros. Returns the bytes and
    /// whether they reach the end of the file.
    pub async fn read(
        &self,
        file_id: FileId,
        offset: u64,
        count: u32,
        file_size: u64,
    ) -> Result<(Bytes, bool), DataError> {
        if offset >= file_size {
            return Ok((Bytes::new(), true));
        }
        let end = offset.saturating_add(u64::from(count)).min(file_size);
        let reads = self
            .pieces(file_id, offset, end)
            .into_iter()
            .map(|piece| async move {
                let len = piece.len as usize;
                let read = self.read_piece(piece.block, piece.within, piece.len as u32);
                let data = match read.await? {
                    Some(read) if read.data.len() == len => read.data,
                    Some(read) => {
                        let mut padded = BytesMut::zeroed(len);
                        let n = read.data.len().min(len);
                        padded[..n].copy_from_slice(&read.data[..n]);
                        padded.freeze()
                    }
                    None => Bytes::from(vec![0; len]),
                };
                Ok::<_, DataError>(data)
            });
        let mut parts = futures::future::try_join_all(reads).await?;
        let data = if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            let mut out = BytesMut::with_capacity((end - offset) as usize);
            for part in parts {
                out.extend_from_slice(&part);
            }
            out.freeze()
        };
        Ok((data, end == file_size))
    }
}
