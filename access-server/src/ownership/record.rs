//! The owner record of a file in meta-kvs: which site and which of its
//! access servers write it, at which epoch, which sites may still hold
//! newer blocks, and the handover in progress (see [`super`] for the
//! protocol).
//!
//! ```text
//! fs/o/<file id u64 BE>  → OwnerRecord (prost)
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use geonfs_proto::domain::{Epoch, FileId};
use prost::Message;

/// The prefix of owner-record keys (inside the namespace's `fs/` space).
const OWNER: &[u8] = b"fs/o/";

/// The prefix of every owner record's key.
pub fn owner_prefix() -> Bytes {
    Bytes::from_static(OWNER)
}

/// The file id of an owner record's key (`None`: not such a key).
pub fn file_of_key(key: &[u8]) -> Option<FileId> {
    key.strip_prefix(OWNER)
        .and_then(|id| <[u8; 8]>::try_from(id).ok())
        .map(|id| FileId(u64::from_be_bytes(id)))
}

/// The meta-kvs key of `file_id`'s owner record.
pub fn owner_key(file_id: FileId) -> Bytes {
    let mut key = BytesMut::with_capacity(OWNER.len() + 8);
    key.put_slice(OWNER);
    key.put_u64(file_id.0);
    key.freeze()
}

/// A file's ownership as recorded in meta-kvs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OwnerRecord {
    /// The site whose writes the file's blocks accept (the owner). During
    /// a handover it is still the old owner: its data is the file's until
    /// the new owner completes.
    pub site: String,
    /// The access server of `site` that writes under `epoch` (its
    /// address): the only process that writes the file, so what it keeps
    /// in memory of the file (size, block versions) is never outdated by
    /// another writer. Empty in a record written before owners were
    /// access servers: then no one is the writer yet, and the first write
    /// takes the file over as from another access server of the site.
    pub writer: String,
    /// The owner's epoch: its block requests carry it, and a core fenced
    /// at a higher epoch refuses them.
    pub epoch: Epoch,
    /// Sites that may hold newer versions of some blocks than the owner's
    /// site (the previous owner, until the owner's catch-up completes).
    pub sources: Vec<String>,
    /// A handover in progress, if any.
    pub claim: Option<Claim>,
    /// The epoch of the file's latest takeover from an owner declared lost
    /// (`None`: none): every later fence carries it to the cores, so copies the
    /// lost owner never copied out are set aside wherever they are (the
    /// core server's `fence` module).
    pub lost_below: Option<Epoch>,
}

/// A handover in progress: `by` is taking the file over at `epoch`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Claim {
    /// The claiming site.
    pub by: String,
    /// The claiming access server of `by` (its address), the writer once
    /// the claim completes.
    pub writer: String,
    /// The epoch the claimant fences the old owner with and will own at.
    pub epoch: Epoch,
    /// When the claim was made (ms since the Unix epoch); a claim older
    /// than the claim timeout may be superseded (its claimant died).
    pub since_ms: u64,
    /// A random token identifying this claim (resolves unknown outcomes).
    pub token: u64,
}

impl OwnerRecord {
    /// A file written by `writer` of `site` at `epoch`, current there.
    pub fn owned(site: &str, writer: &str, epoch: Epoch) -> Self {
        OwnerRecord {
            site: site.to_string(),
            writer: writer.to_string(),
            epoch,
            sources: Vec::new(),
            claim: None,
            lost_below: None,
        }
    }

    /// The highest epoch this record has handed out (owner or claim).
    pub fn top_epoch(&self) -> Epoch {
        self.claim
            .as_ref()
            .map_or(self.epoch, |claim| claim.epoch.max(self.epoch))
    }
}

#[derive(Clone, PartialEq, Message)]
struct WireRecord {
    #[prost(string, tag = "1")]
    site: String,
    #[prost(uint64, tag = "2")]
    epoch: u64,
    #[prost(string, repeated, tag = "3")]
    sources: Vec<String>,
    #[prost(message, optional, tag = "4")]
    claim: Option<WireClaim>,
    #[prost(uint64, tag = "5")]
    lost_below: u64,
    #[prost(string, tag = "6")]
    writer: String,
}

#[derive(Clone, PartialEq, Message)]
struct WireClaim {
    #[prost(string, tag = "1")]
    by: String,
    #[prost(uint64, tag = "2")]
    epoch: u64,
    #[prost(uint64, tag = "3")]
    since_ms: u64,
    #[prost(fixed64, tag = "4")]
    token: u64,
    #[prost(string, tag = "5")]
    writer: String,
}

/// Encodes a record for meta-kvs.
pub fn encode(record: &OwnerRecord) -> Bytes {
    WireRecord {
        site: record.site.clone(),
        writer: record.writer.clone(),
        epoch: record.epoch.get(),
        sources: record.sources.clone(),
        claim: record.claim.as_ref().map(|c| WireClaim {
            by: c.by.clone(),
            writer: c.writer.clone(),
            epoch: c.epoch.get(),
            since_ms: c.since_ms,
            token: c.token,
        }),
        lost_below: Epoch::to_wire(record.lost_below),
    }
    .encode_to_vec()
    .into()
}

/// Decodes a stored record; `Err` names what is wrong.
pub fn decode(bytes: &[u8]) -> Result<OwnerRecord, String> {
    let wire = WireRecord::decode(bytes).map_err(|err| err.to_string())?;
    let invalid = || {
        format!(
            "owner site {:?} at epoch {} is not a valid owner",
            wire.site, wire.epoch
        )
    };
    let epoch = Epoch::from_wire(wire.epoch).ok_or_else(invalid)?;
    if wire.site.is_empty() {
        return Err(invalid());
    }
    let claim = match &wire.claim {
        Some(c) => Some(Claim {
            by: c.by.clone(),
            writer: c.writer.clone(),
            epoch: Epoch::from_wire(c.epoch)
                .ok_or_else(|| format!("a claim by {:?} at epoch 0", c.by))?,
            since_ms: c.since_ms,
            token: c.token,
        }),
        None => None,
    };
    Ok(OwnerRecord {
        site: wire.site,
        writer: wire.writer,
        epoch,
        sources: wire.sources,
        claim,
        lost_below: Epoch::from_wire(wire.lost_below),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let epoch = |n| Epoch::new(n).unwrap();
        let mut record = OwnerRecord::owned("a", "127.1.0.1", epoch(3));
        record.sources = vec!["b".into()];
        record.lost_below = Epoch::new(2);
        record.claim = Some(Claim {
            by: "c".into(),
            writer: "127.3.0.1".into(),
            epoch: epoch(4),
            since_ms: 17,
            token: 99,
        });
        assert_eq!(decode(&encode(&record)), Ok(record.clone()));
        assert_eq!(record.top_epoch(), epoch(4));
        assert!(decode(&encode(&OwnerRecord::owned("", "127.1.0.1", Epoch::FIRST))).is_err());
        // A record from before owners were access servers: no writer.
        let legacy = WireRecord {
            site: "a".into(),
            epoch: 2,
            ..WireRecord::default()
        };
        assert_eq!(
            decode(&legacy.encode_to_vec()),
            Ok(OwnerRecord::owned("a", "", epoch(2)))
        );
        let zero_epoch = WireRecord {
            site: "a".into(),
            ..WireRecord::default()
        };
        assert!(decode(&zero_epoch.encode_to_vec()).is_err());
        let mut claim_at_zero = WireRecord::decode(&encode(&record)[..]).unwrap();
        if let Some(claim) = claim_at_zero.claim.as_mut() {
            claim.epoch = 0;
        }
        assert!(decode(&claim_at_zero.encode_to_vec()).is_err());
        assert!(decode(b"\xff\xff").is_err());
        assert_eq!(&owner_key(FileId(1))[..], b"fs/o/\0\0\0\0\0\0\0\x01");
        assert_eq!(file_of_key(&owner_key(FileId(77))), Some(FileId(77)));
        assert_eq!(file_of_key(b"fs/o/short"), None);
        assert!(owner_key(FileId(5)).starts_with(&owner_prefix()));
    }
}
