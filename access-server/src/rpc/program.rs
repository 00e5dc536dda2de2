//! What an RPC program (NFS, MOUNT, PORTMAP …) implements to be served.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use futures::future::BoxFuture;

use super::message::CallerAuth;

/// Who sent a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The peer address of the connection the call came on.
    pub addr: SocketAddr,
    /// The credentials of the call.
    pub auth: CallerAuth,
}

/// Everything a program learns about a call besides its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// The caller.
    pub caller: Caller,
    /// The call's transaction id (for logs; replies are matched by the server).
    pub xid: u32,
}

/// The outcome of one procedure call.
#[derive(Debug, PartialEq, Eq)]
pub enum ProcResult {
    /// Executed; the XDR-encoded results.
    Success(Vec<u8>),
    /// The program has no such procedure (in this version).
    ProcUnavail,
    /// The arguments could not be decoded.
    GarbageArgs,
    /// The call could not be executed (an internal failure).
    SystemErr,
    /// The program refuses the call's credential flavor (for example NFS
    /// called with AUTH_NONE); answered as AUTH_ERROR / AUTH_TOOWEAK.
    AuthTooWeak,
}

/// One ONC RPC program served by an [`RpcServer`](super::RpcServer).
///
/// Calls are executed concurrently, several per connection, so
/// implementations take `&self` and synchronise internally.
pub trait RpcProgram: Send + Sync + 'static {
    /// The program number (e.g. 100003 for NFS).
    fn program(&self) -> u32;

    /// A short name for logs and metric labels (e.g. `"nfs"`).
    fn name(&self) -> &'static str;

    /// The versions served; calls to other versions get PROG_MISMATCH with
    /// this range.
    fn versions(&self) -> RangeInclusive<u32>;

    /// The name of a procedure for logs and metric labels, `None` for
    /// procedures the program does not know (labelled `"unknown"`, which
    /// keeps label cardinality bounded whatever clients send).
    fn procedure_name(&self, version: u32, procedure: u32) -> Option<&'static str>;

    /// Executes one call of `procedure` in `version` (which is within
    /// [`versions`](Self::versions)) with the XDR-encoded `args`.
    fn call<'a>(
        &'a self,
        context: &'a CallContext,
        version: u32,
        procedure: u32,
        args: &'a [u8],
    ) -> BoxFuture<'a, ProcResult>;
}
