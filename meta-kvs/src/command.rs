//! The commands carried in the data of normal Raft entries, and their
//! compact binary encoding.
//!
//! # Encoding (format 1)
//!
//! All integers are big-endian; `bytes` is a `u32` length followed by that
//! many bytes.
//!
//! ```text
//! u8  format          = 1
//! u8  kind            1 = Put, 2 = Delete, 3 = Txn
//! u64 proposal_id
//! Put:    bytes key, bytes value
//! Delete: bytes key
//! Txn:    u32 n, n × condition, u32 m, m × operation
//!   condition: bytes key, u8 test
//!              (1 = version equals + u64, 2 = value equals + bytes,
//!               3 = absent, 4 = present)
//!   operation: u8 op (1 = put + bytes key + bytes value, 2 = delete + bytes key)
//! ```
//!
//! Decoding is strict: unknown formats, kinds or tags, lengths running past the
//! end and trailing bytes are all errors. A command that decodes but breaks
//! the key/value limits is *rejected* deterministically at apply time (see
//! [`crate::storage::ApplyOutcome::Rejected`]), never half-applied.

use bytes::Bytes;
use geonfs_proto::domain::{check_key, check_value};
use geonfs_proto::meta as wire;
use geonfs_proto::WireError;

/// The format byte written first in every encoded command.
pub const COMMAND_FORMAT_V1: u8 = 1;

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_TXN: u8 = 3;
const TEST_VERSION: u8 = 1;
const TEST_VALUE: u8 = 2;
const TEST_ABSENT: u8 = 3;
const TEST_PRESENT: u8 = 4;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// A state machine command with the proposer's id for matching results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Chosen by the proposing node; returned in the apply result so the
    /// driver can find the waiting caller by id.
    pub proposal_id: u64,
    /// What to do.
    pub op: CommandOp,
}

/// The operation of a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// If every condition holds, apply every operation in order; else nothing.
    Txn {
        /// All must hold.
        conditions: Vec<TxnCondition>,
        /// Applied in order when the conditions hold.
        operations: Vec<TxnOp>,
    },
}

/// A condition of a transaction, on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnCondition {
    /// The key tested.
    pub key: Bytes,
    /// The test.
    pub test: TxnTest,
}

/// What a [`TxnCondition`] checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnTest {
    /// The key's version equals this; an absent key has version 0, so
    /// `VersionEquals(0)` means "absent" (versions of present keys are ≥ 1).
    VersionEquals(u64),
    /// The key is present with exactly this value.
    ValueEquals(Bytes),
    /// The key is absent.
    Absent,
    /// The key is present.
    Present,
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Set a key.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Bytes,
    },
}

/// Why command bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable command: {0}")]
pub struct CommandDecodeError(pub String);

impl Command {
    /// A validated Put.
    pub fn put(proposal_id: u64, key: Bytes, value: Bytes) -> Result<Self, WireError> {
        check_key("key", &key)?;
        check_value("value", &value)?;
        Ok(Command {
            proposal_id,
            op: CommandOp::Put { key, value },
        })
    }

    /// A validated Delete.
    pub fn delete(proposal_id: u64, key: Bytes) -> Result<Self, WireError> {
        check_key("key", &key)?;
        Ok(Command {
            proposal_id,
            op: CommandOp::Delete { key },
        })
    }

    /// A validated Txn from its wire form. `absent: false` in a wire
    /// condition means "present".
    pub fn txn(proposal_id: u64, req: wire::TxnRequest) -> Result<Self, WireError> {
        let mut conditions = Vec::with_capacity(req.conditions.len());
        for cond in req.conditions {
            check_key("condition.key", &cond.key)?;
            let test = match cond.test {
                Some(wire::condition::Test::VersionEquals(v)) => TxnTest::VersionEquals(v),
                Some(wire::condition::Test::ValueEquals(v)) => {
                    check_value("condition.value_equals", &v)?;
                    TxnTest::ValueEquals(v)
                }
                Some(wire::condition::Test::Absent(true)) => TxnTest::Absent,
                Some(wire::condition::Test::Absent(false)) => TxnTest::Present,
                None => return Err(WireError::MissingField("condition.test")),
            };
            conditions.push(TxnCondition {
                key: cond.key,
                test,
            });
        }
        let mut operations = Vec::with_capacity(req.operations.len());
        for op in req.operations {
            match op.op {
                Some(wire::operation::Op::Put(kv)) => {
                    check_key("operation.put.key", &kv.key)?;
                    check_value("operation.put.value", &kv.value)?;
                    operations.push(TxnOp::Put {
                        key: kv.key,
                        value: kv.value,
                    });
                }
                Some(wire::operation::Op::Delete(key)) => {
                    check_key("operation.delete", &key)?;
                    operations.push(TxnOp::Delete { key });
                }
                None => return Err(WireError::MissingField("operation.op")),
            }
        }
        Ok(Command {
            proposal_id,
            op: CommandOp::Txn {
                conditions,
                operations,
            },
        })
    }

    /// Checks the key and value limits; `Err` holds the reason. Apply uses it
    /// so a command that slipped past validation is rejected identically on
    /// every replica.
    pub fn validate(&self) -> Result<(), String> {
        let err = |e: WireError| e.to_string();
        match &self.op {
            CommandOp::Put { key, value } => {
                check_key("key", key).map_err(err)?;
                check_value("value", value).map_err(err)
            }
            CommandOp::Delete { key } => check_key("key", key).map_err(err),
            CommandOp::Txn {
                conditions,
                operations,
            } => {
                for c in conditions {
                    check_key("condition.key", &c.key).map_err(err)?;
                    if let TxnTest::ValueEquals(v) = &c.test {
                        check_value("condition.value_equals", v).map_err(err)?;
                    }
                }
                for op in operations {
                    match op {
                        TxnOp::Put { key, value } => {
                            check_key("operation.put.key", key).map_err(err)?;
                            check_value("operation.put.value", value).map_err(err)?;
                        }
                        TxnOp::Delete { key } => {
                            check_key("operation.delete", key).map_err(err)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Encodes the command (format 1) for a Raft proposal.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(COMMAND_FORMAT_V1);
        match &self.op {
            CommandOp::Put { key, value } => {
                out.push(KIND_PUT);
                out.extend_from_slice(&self.proposal_id.to_be_bytes());
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            CommandOp::Delete { key } => {
                out.push(KIND_DELETE);
                out.extend_from_slice(&self.proposal_id.to_be_bytes());
                put_bytes(&mut out, key);
            }
            CommandOp::Txn {
                conditions,
                operations,
            } => {
                out.push(KIND_TXN);
                out.extend_from_slice(&self.proposal_id.to_be_bytes());
                put_len(&mut out, conditions.len());
                for c in conditions {
                    put_bytes(&mut out, &c.key);
                    match &c.test {
                        TxnTest::VersionEquals(v) => {
                            out.push(TEST_VERSION);
                            out.extend_from_slice(&v.to_be_bytes());
                        }
                        TxnTest::ValueEquals(v) => {
                            out.push(TEST_VALUE);
                            put_bytes(&mut out, v);
                        }
                        TxnTest::Absent => out.push(TEST_ABSENT),
                        TxnTest::Present => out.push(TEST_PRESENT),
                    }
                }
                put_len(&mut out, operations.len());
                for op in operations {
                    match op {
                        TxnOp::Put { key, value } => {
                            out.push(OP_PUT);
                            put_bytes(&mut out, key);
                            put_bytes(&mut out, value);
                        }
                        TxnOp::Delete { key } => {
                            out.push(OP_DELETE);
                            put_bytes(&mut out, key);
                        }
                    }
                }
            }
        }
        out
    }

    /// Decodes a command written by [`Command::encode`].
    pub fn decode(data: &[u8]) -> Result<Self, CommandDecodeError> {
        let mut r = Reader::new(data);
        let format = r.u8("format")?;
        if format != COMMAND_FORMAT_V1 {
            return Err(CommandDecodeError(format!(
                "unknown command format {format} (this build knows {COMMAND_FORMAT_V1})"
            )));
        }
        let kind = r.u8("kind")?;
        let proposal_id = r.u64("proposal id")?;
        let op = match kind {
            KIND_PUT => CommandOp::Put {
                key: r.bytes("key")?,
                value: r.bytes("value")?,
            },
            KIND_DELETE => CommandOp::Delete {
                key: r.bytes("key")?,
            },
            KIND_TXN => {
                let n = r.count("condition count")?;
                let mut conditions = Vec::new();
                for _ in 0..n {
                    let key = r.bytes("condition key")?;
                    let test = match r.u8("condition test")? {
                        TEST_VERSION => TxnTest::VersionEquals(r.u64("version")?),
                        TEST_VALUE => TxnTest::ValueEquals(r.bytes("condition value")?),
                        TEST_ABSENT => TxnTest::Absent,
                        TEST_PRESENT => TxnTest::Present,
                        other => {
                            return Err(CommandDecodeError(format!(
                                "unknown condition test {other}"
                            )))
                        }
                    };
                    conditions.push(TxnCondition { key, test });
                }
                let m = r.count("operation count")?;
                let mut operations = Vec::new();
                for _ in 0..m {
                    let op = match r.u8("operation")? {
                        OP_PUT => TxnOp::Put {
                            key: r.bytes("operation key")?,
                            value: r.bytes("operation value")?,
                        },
                        OP_DELETE => TxnOp::Delete {
                            key: r.bytes("operation key")?,
                        },
                        other => {
                            return Err(CommandDecodeError(format!("unknown operation {other}")))
                        }
                    };
                    operations.push(op);
                }
                CommandOp::Txn {
                    conditions,
                    operations,
                }
            }
            other => return Err(CommandDecodeError(format!("unknown command kind {other}"))),
        };
        if !r.is_empty() {
            return Err(CommandDecodeError(format!(
                "{} trailing bytes after the command",
                r.remaining()
            )));
        }
        Ok(Command { proposal_id, op })
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Keys, values and counts are far below 4 GiB (limits are checked before
    // proposing); saturate rather than wrap so an impossible length can never
    // decode as a different, valid command.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// A bounds-checked big-endian reader over a byte slice.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CommandDecodeError> {
        if n > self.remaining() {
            return Err(CommandDecodeError(format!(
                "{what}: needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, CommandDecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, CommandDecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_be_bytes(b))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, CommandDecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(b))
    }

    /// A `u32` count of items that each take at least one byte: bounded by
    /// what is left, so a garbled count cannot cause a huge allocation.
    pub(crate) fn count(&mut self, what: &str) -> Result<usize, CommandDecodeError> {
        let n = self.u32(what)? as usize;
        if n > self.remaining() {
            return Err(CommandDecodeError(format!(
                "{what} {n} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }

    pub(crate) fn slice(&mut self, what: &str) -> Result<&'a [u8], CommandDecodeError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    pub(crate) fn bytes(&mut self, what: &str) -> Result<Bytes, CommandDecodeError> {
        Ok(Bytes::copy_from_slice(self.slice(what)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn sample_txn() -> Command {
        Command {
            proposal_id: 0xdead_beef_0102,
            op: CommandOp::Txn {
                conditions: vec![
                    TxnCondition {
                        key: b("a"),
                        test: TxnTest::VersionEquals(7),
                    },
                    TxnCondition {
                        key: b("b"),
                        test: TxnTest::ValueEquals(b("x")),
                    },
                    TxnCondition {
                        key: b("c"),
                        test: TxnTest::Absent,
                    },
                    TxnCondition {
                        key: b("d"),
                        test: TxnTest::Present,
                    },
                ],
                operations: vec![
                    TxnOp::Put {
                        key: b("a"),
                        value: b("1"),
                    },
                    TxnOp::Delete { key: b("b") },
                ],
            },
        }
    }

    #[test]
    fn commands_round_trip() {
        let cmds = vec![
            Command::put(1, b("k"), b("v")).unwrap(),
            Command::put(2, b("k"), Bytes::new()).unwrap(),
            Command::delete(3, b("k")).unwrap(),
            sample_txn(),
            Command {
                proposal_id: u64::MAX,
                op: CommandOp::Txn {
                    conditions: vec![],
                    operations: vec![],
                },
            },
        ];
        for cmd in cmds {
            let data = cmd.encode();
            assert_eq!(data[0], COMMAND_FORMAT_V1);
            assert_eq!(Command::decode(&data).unwrap(), cmd);
        }
    }

    #[test]
    fn every_truncation_and_trailing_garbage_is_refused() {
        let data = sample_txn().encode();
        for len in 0..data.len() {
            assert!(
                Command::decode(&data[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(Command::decode(&longer).unwrap_err().0.contains("trailing"));
        let mut other_format = data;
        other_format[0] = 9;
        assert!(Command::decode(&other_format)
            .unwrap_err()
            .0
            .contains("format"));
        // A huge count does not allocate; it is refused.
        let mut huge = vec![COMMAND_FORMAT_V1, KIND_TXN];
        huge.extend_from_slice(&1u64.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Command::decode(&huge).is_err());
    }

    #[test]
    fn wire_txn_is_validated() {
        let ok = wire::TxnRequest {
            conditions: vec![wire::Condition {
                key: b("a"),
                test: Some(wire::condition::Test::Absent(false)),
            }],
            operations: vec![wire::Operation {
                op: Some(wire::operation::Op::Put(wire::KeyValue {
                    key: b("a"),
                    value: b("v"),
                    version: 0,
                })),
            }],
        };
        let cmd = Command::txn(5, ok).unwrap();
        match &cmd.op {
            CommandOp::Txn { conditions, .. } => assert_eq!(conditions[0].test, TxnTest::Present),
            other => panic!("{other:?}"),
        }
        let missing = wire::TxnRequest {
            conditions: vec![wire::Condition {
                key: b("a"),
                test: None,
            }],
            operations: vec![],
        };
        assert!(Command::txn(5, missing).is_err());
        let empty_key = wire::TxnRequest {
            conditions: vec![],
            operations: vec![wire::Operation {
                op: Some(wire::operation::Op::Delete(Bytes::new())),
            }],
        };
        assert!(Command::txn(5, empty_key).is_err());
        assert!(Command::put(1, Bytes::new(), b("v")).is_err());
        let unchecked = Command {
            proposal_id: 1,
            op: CommandOp::Delete { key: Bytes::new() },
        };
        assert!(unchecked.validate().is_err());
        assert!(sample_txn().validate().is_ok());
    }
}
