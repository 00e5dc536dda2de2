//! ONC RPC record marking over TCP (RFC 5531 §11).
//!
//! A record is a sequence of fragments, each preceded by a 4-byte
//! big-endian header: the top bit marks the last fragment of the record, the
//! other 31 bits give the fragment's length. Calls may arrive in several
//! fragments; replies are always written as one last fragment.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt};

/// The top bit of a fragment header: this fragment ends the record.
const LAST_FRAGMENT: u32 = 0x8000_0000;
/// The low 31 bits of a fragment header: the fragment's length.
const FRAGMENT_LENGTH_MASK: u32 = 0x7fff_ffff;

/// The default largest record accepted: a 4 MiB NFS WRITE plus room for the
/// RPC and NFS headers.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 4 * 1024 * 1024 + 64 * 1024;

/// What a fragment reserves before its bytes arrive (more as they do).
const INITIAL_RESERVE: usize = 64 * 1024;

/// Why a record could not be read. Every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The fragments announced more bytes than the configured maximum.
    #[error("record of at least {announced} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Bytes of the record so far, including the fragment just announced.
        announced: u64,
        /// The configured maximum record size.
        max: usize,
    },
    /// The peer closed the connection in the middle of a record.
    #[error("connection closed in the middle of a record ({received} bytes received)")]
    Truncated {
        /// Bytes of the record received before the end of the stream.
        received: usize,
    },
    /// Reading from the socket failed.
    #[error("reading a record failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads whole records (all fragments joined) from a byte stream.
#[derive(Debug)]
pub struct RecordReader<R> {
    input: R,
    max_record_size: usize,
}

impl<R: AsyncBufRead + Unpin> RecordReader<R> {
    /// Waits until bytes of the next record arrived or the peer closed
    /// the connection (cancel-safe: nothing is consumed).
    pub async fn wait_readable(&mut self) -> std::io::Result<()> {
        self.input.fill_buf().await.map(|_| ())
    }
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    /// A reader of records of at most `max_record_size` bytes from `input`.
    /// `input` should be buffered (e.g. a `tokio::io::BufReader`).
    pub fn new(input: R, max_record_size: usize) -> Self {
        Self {
            input,
            max_record_size,
        }
    }

    /// The next record, or `None` when the peer closed the connection
    /// cleanly between records.
    pub async fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordError> {
        let mut record = Vec::new();
        loop {
            let mut header = [0u8; 4];
            let got = read_fully(&mut self.input, &mut header).await?;
            if got == 0 && record.is_empty() {
                return Ok(None);
            }
            if got < header.len() {
                return Err(RecordError::Truncated {
                    received: record.len() + got,
                });
            }
            let header = u32::from_be_bytes(header);
            let fragment_length = header & FRAGMENT_LENGTH_MASK;
            let announced = record.len() as u64 + u64::from(fragment_length);
            if announced > self.max_record_size as u64 {
                return Err(RecordError::TooLarge {
                    announced,
                    max: self.max_record_size,
                });
            }
            // Memory follows the bytes that arrive, not what the peer
            // announced: a record of a few bytes announced 4 MiB long, on
            // each of thousands of connections, must not commit 4 MiB
            // each. A large WRITE grows the buffer a few times (copies of
            // well under its own size).
            record.reserve((fragment_length as usize).min(INITIAL_RESERVE));
            let before = record.len();
            (&mut self.input)
                .take(u64::from(fragment_length))
                .read_to_end(&mut record)
                .await?;
            if record.len() - before < fragment_length as usize {
                return Err(RecordError::Truncated {
                    received: record.len(),
                });
            }
            if header & LAST_FRAGMENT != 0 {
                return Ok(Some(record));
            }
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
async fn read_fully<R: AsyncRead + Unpin>(input: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = input.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// The header of a record sent as one last fragment of `length` bytes, or
/// `None` if `length` does not fit in 31 bits.
pub fn last_fragment_header(length: usize) -> Option<[u8; 4]> {
    let length = u32::try_from(length)
        .ok()
        .filter(|l| *l <= FRAGMENT_LENGTH_MASK)?;
    Some((length | LAST_FRAGMENT).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(last: bool, data: &[u8]) -> Vec<u8> {
        let mut header = data.len() as u32;
        if last {
            header |= LAST_FRAGMENT;
        }
        let mut out = header.to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    #[tokio::test]
    async fn joins_fragments_and_reports_clean_end() {
        let mut stream = fragment(false, b"abcd");
        stream.extend(fragment(false, b""));
        stream.extend(fragment(true, b"efgh"));
        stream.extend(fragment(true, b"ijkl"));
        let mut reader = RecordReader::new(&stream[..], 64);
        assert_eq!(reader.next_record().await.unwrap().unwrap(), b"abcdefgh");
        assert_eq!(reader.next_record().await.unwrap().unwrap(), b"ijkl");
        assert!(reader.next_record().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_oversize_records_across_fragments() {
        let mut stream = fragment(false, &[0; 40]);
        stream.extend(fragment(true, &[0; 40]));
        let mut reader = RecordReader::new(&stream[..], 64);
        assert!(matches!(
            reader.next_record().await,
            Err(RecordError::TooLarge {
                announced: 80,
                max: 64
            })
        ));
    }

    #[tokio::test]
    async fn reports_truncation_inside_header_and_body() {
        let stream = [0x80u8, 0];
        let mut reader = RecordReader::new(&stream[..], 64);
        assert!(matches!(
            reader.next_record().await,
            Err(RecordError::Truncated { received: 2 })
        ));
        let mut stream = fragment(true, b"abcdefgh");
        stream.truncate(8);
        let mut reader = RecordReader::new(&stream[..], 64);
        assert!(matches!(
            reader.next_record().await,
            Err(RecordError::Truncated { received: 4 })
        ));
    }

    #[test]
    fn last_fragment_header_sets_the_top_bit() {
        assert_eq!(last_fragment_header(8), Some([0x80, 0, 0, 8]));
        assert_eq!(last_fragment_header(1 << 31), None);
    }
}
