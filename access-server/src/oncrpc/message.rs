//! Decoding ONC RPC call headers (RFC 5531 §9) and encoding replies.
//!
//! The call header is read field by field from the record rather than with
//! `nfs3_types`' `Unpack` for `call_body`: that decoder fails on credential
//! flavors it has no enum value for (RPCSEC_GSS, AUTH_TLS …), which must be
//! answered with an AUTH_ERROR, and it allocates whatever length a peer
//! announces for an opaque field. Here every length is checked against the
//! RFC limits and the bytes actually present first. Replies are packed with
//! the `nfs3_types::rpc` types.

use nfs3_types::rpc::{
    accept_stat_data, accepted_reply, auth_flavor, auth_stat, msg_body, opaque_auth,
    rejected_reply, reply_body, rpc_msg, RPC_VERSION_2,
};
use nfs3_types::xdr_codec::Pack;

use super::record::last_fragment_header;

/// RFC 5531: the body of a credential or verifier is at most 400 bytes.
const MAX_AUTH_BODY: usize = 400;
/// RFC 5531 appendix A: `string machinename<255>`.
const MAX_MACHINE_NAME: usize = 255;
/// RFC 5531 appendix A: `unsigned int gids<16>`.
const MAX_AUX_GIDS: usize = 16;
/// `msg_type` CALL.
const MSG_TYPE_CALL: u32 = 0;
/// `msg_type` REPLY.
const MSG_TYPE_REPLY: u32 = 1;
/// `auth_flavor` values (RFC 5531 and the IANA registry).
const FLAVOR_NONE: u32 = auth_flavor::AUTH_NULL as u32;
const FLAVOR_UNIX: u32 = auth_flavor::AUTH_UNIX as u32;
const FLAVOR_SHORT: u32 = auth_flavor::AUTH_SHORT as u32;

/// The AUTH_UNIX (AUTH_SYS) credentials of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixCredentials {
    /// Arbitrary id the client generated.
    pub stamp: u32,
    /// The client's host name, as the client sent it (invalid UTF-8 replaced).
    pub machine_name: String,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Supplementary group ids (at most 16).
    pub aux_gids: Vec<u32>,
}

/// The credentials a call carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerAuth {
    /// AUTH_NONE: no identity.
    None,
    /// AUTH_UNIX / AUTH_SYS.
    Unix(UnixCredentials),
}

/// The decoded header of a call whose credentials were accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallHeader {
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// Program number.
    pub program: u32,
    /// Program version.
    pub version: u32,
    /// Procedure number.
    pub procedure: u32,
    /// The caller's credentials.
    pub auth: CallerAuth,
    /// Where the procedure's arguments start in the record.
    pub args_offset: usize,
}

/// How a reply answers a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStatus {
    /// Accepted and executed; the procedure's results follow.
    Success,
    /// The program is not served here.
    ProgUnavail,
    /// The program is served, in versions `low..=high` only.
    ProgMismatch {
        /// Lowest version served.
        low: u32,
        /// Highest version served.
        high: u32,
    },
    /// The program has no such procedure.
    ProcUnavail,
    /// The arguments (or the call header) could not be decoded.
    GarbageArgs,
    /// The server failed to execute the call.
    SystemErr,
    /// Denied: the call was not ONC RPC version 2.
    RpcMismatch,
    /// Denied: the credentials or verifier were refused.
    AuthError(auth_stat),
}

/// What a record turned out to be.
#[derive(Debug)]
pub enum DecodedRecord {
    /// A call to dispatch.
    Call(CallHeader),
    /// A call answered right away without reaching a program.
    Refused {
        /// Transaction id of the call.
        xid: u32,
        /// The refusal.
        status: ReplyStatus,
    },
    /// A REPLY message, which a server ignores.
    NotACall {
        /// Transaction id of the message.
        xid: u32,
    },
}

/// A record that cannot be answered at all; the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UndecodableRecord {
    /// Fewer than 8 bytes: no transaction id and message type.
    #[error("record of {0} bytes is too short for an RPC message")]
    TooShort(usize),
    /// The message type is neither CALL nor REPLY.
    #[error("unknown RPC message type {0}")]
    UnknownMessageType(u32),
}

/// Reads XDR fields from a record, never past its end.
struct XdrCursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> XdrCursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn u32(&mut self) -> Option<u32> {
        let end = self.position.checked_add(4)?;
        let field = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(u32::from_be_bytes([field[0], field[1], field[2], field[3]]))
    }

    /// A variable-length opaque of at most `max` bytes, padding skipped.
    fn opaque(&mut self, max: usize) -> Option<&'a [u8]> {
        let length = usize::try_from(self.u32()?).ok()?;
        if length > max {
            return None;
        }
        let end = self.position.checked_add(length)?;
        let padded_end = end.checked_add((4 - length % 4) % 4)?;
        let data = self.bytes.get(self.position..end)?;
        if padded_end > self.bytes.len() {
            return None;
        }
        self.position = padded_end;
        Some(data)
    }
}

/// Decodes the RPC header of one record.
pub fn decode_record(record: &[u8]) -> Result<DecodedRecord, UndecodableRecord> {
    let mut cursor = XdrCursor::new(record);
    let (Some(xid), Some(message_type)) = (cursor.u32(), cursor.u32()) else {
        return Err(UndecodableRecord::TooShort(record.len()));
    };
    match message_type {
        MSG_TYPE_CALL => {}
        MSG_TYPE_REPLY => return Ok(DecodedRecord::NotACall { xid }),
        other => return Err(UndecodableRecord::UnknownMessageType(other)),
    }
    let refuse = |status| Ok(DecodedRecord::Refused { xid, status });
    let Some(rpc_version) = cursor.u32() else {
        return refuse(ReplyStatus::GarbageArgs);
    };
    if rpc_version != RPC_VERSION_2 {
        return refuse(ReplyStatus::RpcMismatch);
    }
    let (Some(program), Some(version), Some(procedure)) =
        (cursor.u32(), cursor.u32(), cursor.u32())
    else {
        return refuse(ReplyStatus::GarbageArgs);
    };
    let Some(credential_flavor) = cursor.u32() else {
        return refuse(ReplyStatus::GarbageArgs);
    };
    let Some(credential_body) = cursor.opaque(MAX_AUTH_BODY) else {
        return refuse(ReplyStatus::AuthError(auth_stat::AUTH_BADCRED));
    };
    // The verifier of AUTH_NONE and AUTH_UNIX calls carries nothing to
    // check; it must still be well formed.
    if cursor.u32().is_none() || cursor.opaque(MAX_AUTH_BODY).is_none() {
        return refuse(ReplyStatus::AuthError(auth_stat::AUTH_BADVERF));
    }
    let auth = match credential_flavor {
        FLAVOR_NONE => CallerAuth::None,
        FLAVOR_UNIX => match decode_unix_credentials(credential_body) {
            Some(credentials) => CallerAuth::Unix(credentials),
            None => return refuse(ReplyStatus::AuthError(auth_stat::AUTH_BADCRED)),
        },
        // We never hand out short-hand credentials: REJECTEDCRED makes the
        // client fall back to its full AUTH_UNIX credentials (RFC 5531 A.2).
        FLAVOR_SHORT => return refuse(ReplyStatus::AuthError(auth_stat::AUTH_REJECTEDCRED)),
        _ => return refuse(ReplyStatus::AuthError(auth_stat::AUTH_BADCRED)),
    };
    Ok(DecodedRecord::Call(CallHeader {
        xid,
        program,
        version,
        procedure,
        auth,
        args_offset: cursor.position,
    }))
}

/// Decodes an AUTH_UNIX credential body (`authsys_parms`).
fn decode_unix_credentials(body: &[u8]) -> Option<UnixCredentials> {
    let mut cursor = XdrCursor::new(body);
    let stamp = cursor.u32()?;
    let machine_name = String::from_utf8_lossy(cursor.opaque(MAX_MACHINE_NAME)?).into_owned();
    let uid = cursor.u32()?;
    let gid = cursor.u32()?;
    let count = usize::try_from(cursor.u32()?).ok()?;
    if count > MAX_AUX_GIDS {
        return None;
    }
    let aux_gids = (0..count)
        .map(|_| cursor.u32())
        .collect::<Option<Vec<u32>>>()?;
    Some(UnixCredentials {
        stamp,
        machine_name,
        uid,
        gid,
        aux_gids,
    })
}

/// The start of a reply: the record-marking header (one last fragment
/// covering the RPC header and `body_length` more bytes) and the RPC reply
/// header. `None` if the reply would not fit in one fragment.
pub fn encode_reply_head(xid: u32, status: ReplyStatus, body_length: usize) -> Option<Vec<u8>> {
    let accepted = |reply_data| {
        reply_body::MSG_ACCEPTED(accepted_reply {
            verf: opaque_auth::default(),
            reply_data,
        })
    };
    let body = match status {
        ReplyStatus::Success => accepted(accept_stat_data::SUCCESS),
        ReplyStatus::ProgUnavail => accepted(accept_stat_data::PROG_UNAVAIL),
        ReplyStatus::ProgMismatch { low, high } => {
            accepted(accept_stat_data::PROG_MISMATCH { low, high })
        }
        ReplyStatus::ProcUnavail => accepted(accept_stat_data::PROC_UNAVAIL),
        ReplyStatus::GarbageArgs => accepted(accept_stat_data::GARBAGE_ARGS),
        ReplyStatus::SystemErr => accepted(accept_stat_data::SYSTEM_ERR),
        ReplyStatus::RpcMismatch => {
            reply_body::MSG_DENIED(rejected_reply::rpc_mismatch(RPC_VERSION_2, RPC_VERSION_2))
        }
        ReplyStatus::AuthError(stat) => reply_body::MSG_DENIED(rejected_reply::auth_error(stat)),
    };
    let message = rpc_msg {
        xid,
        body: msg_body::REPLY(body),
    };
    let header_length = message.packed_size();
    let fragment_header = last_fragment_header(header_length.checked_add(body_length)?)?;
    let mut head = Vec::with_capacity(4 + header_length);
    head.extend_from_slice(&fragment_header);
    message.pack(&mut head).ok()?;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn decodes_auth_unix_call() {
        // xid, CALL, rpcvers 2, prog, vers, proc, AUTH_UNIX cred, AUTH_NONE verf, args
        let mut record = words(&[7, 0, 2, 100_003, 3, 1, 1]);
        let credential = words(&[
            42,
            5,
            u32::from_be_bytes(*b"host"),
            0x6100_0000,
            1000,
            100,
            2,
            4,
            27,
        ]);
        record.extend(words(&[credential.len() as u32]));
        record.extend(&credential);
        record.extend(words(&[0, 0, 0xdead_beef]));
        let DecodedRecord::Call(header) = decode_record(&record).unwrap() else {
            panic!("not a call");
        };
        assert_eq!(header.xid, 7);
        assert_eq!(
            (header.program, header.version, header.procedure),
            (100_003, 3, 1)
        );
        assert_eq!(
            header.auth,
            CallerAuth::Unix(UnixCredentials {
                stamp: 42,
                machine_name: "hosta".into(),
                uid: 1000,
                gid: 100,
                aux_gids: vec![4, 27],
            })
        );
        assert_eq!(&record[header.args_offset..], &words(&[0xdead_beef])[..]);
    }

    #[test]
    fn refuses_bad_headers_without_panicking() {
        let refused = |record: &[u8]| match decode_record(record) {
            Ok(DecodedRecord::Refused { status, .. }) => Some(status),
            _ => None,
        };
        assert_eq!(
            decode_record(&[0, 0, 0]).unwrap_err(),
            UndecodableRecord::TooShort(3)
        );
        assert_eq!(
            refused(&words(&[1, 0, 3, 1, 1, 0])),
            Some(ReplyStatus::RpcMismatch)
        );
        assert_eq!(
            refused(&words(&[1, 0, 2, 1, 1])),
            Some(ReplyStatus::GarbageArgs)
        );
        // credential length beyond the record
        assert_eq!(
            refused(&words(&[1, 0, 2, 1, 1, 0, 1, 0xffff_fff0])),
            Some(ReplyStatus::AuthError(auth_stat::AUTH_BADCRED))
        );
        // RPCSEC_GSS
        assert_eq!(
            refused(&words(&[1, 0, 2, 1, 1, 0, 6, 0, 0, 0])),
            Some(ReplyStatus::AuthError(auth_stat::AUTH_BADCRED))
        );
        // missing verifier
        assert_eq!(
            refused(&words(&[1, 0, 2, 1, 1, 0, 0, 0])),
            Some(ReplyStatus::AuthError(auth_stat::AUTH_BADVERF))
        );
        // 17 auxiliary groups
        let mut credential = words(&[0, 0, 0, 0, 17]);
        credential.extend(words(&[0; 17]));
        let mut record = words(&[1, 0, 2, 1, 1, 0, 1, credential.len() as u32]);
        record.extend(credential);
        record.extend(words(&[0, 0]));
        assert_eq!(
            refused(&record),
            Some(ReplyStatus::AuthError(auth_stat::AUTH_BADCRED))
        );
        assert!(matches!(
            decode_record(&words(&[1, 1, 0])),
            Ok(DecodedRecord::NotACall { xid: 1 })
        ));
        assert_eq!(
            decode_record(&words(&[1, 9])).unwrap_err(),
            UndecodableRecord::UnknownMessageType(9)
        );
    }

    #[test]
    fn reply_head_frames_header_and_body() {
        let head = encode_reply_head(9, ReplyStatus::Success, 8).unwrap();
        // fragment header, xid, REPLY, MSG_ACCEPTED, verf (flavor, len), SUCCESS
        assert_eq!(head.len(), 4 + 24);
        assert_eq!(head[..4], [0x80, 0, 0, 24 + 8]);
        assert_eq!(head[4..], words(&[9, 1, 0, 0, 0, 0])[..]);
        let head = encode_reply_head(9, ReplyStatus::RpcMismatch, 0).unwrap();
        assert_eq!(head[4..], words(&[9, 1, 1, 0, 2, 2])[..]);
    }
}
