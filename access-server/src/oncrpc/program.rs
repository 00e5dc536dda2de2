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

/// Which program a [`RpcProgram`] is: its number, its name for logs and
/// metric labels, and the versions it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramId {
    /// The program number (e.g. 100003 for NFS).
    pub number: u32,
    /// A short name for logs and metric labels (e.g. `"nfs"`).
    pub name: &'static str,
    /// The lowest version served.
    pub lowest: u32,
    /// The highest version served.
    pub highest: u32,
}

impl ProgramId {
    /// The versions served; calls to other versions get PROG_MISMATCH
    /// with this range.
    pub fn versions(&self) -> RangeInclusive<u32> {
        self.lowest..=self.highest
    }
}

/// One ONC RPC program served by an [`RpcServer`](super::RpcServer).
///
/// Calls are executed concurrently, several per connection, so
/// implementations take `&self` and synchronise internally.
pub trait RpcProgram: Send + Sync + 'static {
    /// Which program this is.
    fn id(&self) -> ProgramId;

    /// The name of a procedure for logs and metric labels, `None` for
    /// procedures the program does not know (labelled `"unknown"`, which
    /// keeps label cardinality bounded whatever clients send).
    fn procedure_name(&self, version: u32, procedure: u32) -> Option<&'static str>;

    /// Executes one call of `procedure` in `version` (which is within
    /// [`ProgramId::versions`]) with the XDR-encoded `args`.
    fn call<'a>(
        &'a self,
        context: &'a CallContext,
        version: u32,
        procedure: u32,
        args: &'a [u8],
    ) -> BoxFuture<'a, ProcResult>;
}
