//! A read-only PORTMAP version 2 program (RFC 1833 §3) answering for the
//! NFS and MOUNT services of this server.
//!
//! QEMU's NFS driver and `mount -t nfs` without `port=`/`mountport=` ask the
//! portmapper on port 111 where NFS and MOUNT listen. This one knows only
//! its own server's two TCP ports; SET and UNSET are refused.

use std::io::Cursor;

use futures::future::{self, BoxFuture};
use nfs3_types::portmap::{mapping, pmaplist, IPPROTO_TCP, PMAP_PROG, PROGRAM, VERSION};
use nfs3_types::xdr_codec::{List, Pack, Unpack};

use super::program::{CallContext, ProcResult, ProgramId, RpcProgram};

/// The NFS program number.
pub const NFS_PROGRAM: u32 = 100_003;
/// The NFS version served.
pub const NFS_VERSION: u32 = 3;
/// The MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// The MOUNT version served.
pub const MOUNT_VERSION: u32 = 3;
/// The NFS program as served here.
pub const NFS_ID: ProgramId = ProgramId {
    number: NFS_PROGRAM,
    name: "nfs",
    lowest: NFS_VERSION,
    highest: NFS_VERSION,
};
/// The MOUNT program as served here.
pub const MOUNT_ID: ProgramId = ProgramId {
    number: MOUNT_PROGRAM,
    name: "mount",
    lowest: MOUNT_VERSION,
    highest: MOUNT_VERSION,
};

/// PORTMAP v2 over the fixed registrations of this server.
#[derive(Clone, Debug)]
pub struct PortmapProgram {
    registrations: Vec<mapping>,
}

impl PortmapProgram {
    /// A portmapper announcing NFS v3 on `nfs_port` and MOUNT v3 on
    /// `mount_port`, both over TCP (they may be the same port).
    pub fn new(nfs_port: u16, mount_port: u16) -> Self {
        let tcp = |prog, vers, port: u16| mapping {
            prog,
            vers,
            prot: IPPROTO_TCP,
            port: u32::from(port),
        };
        Self {
            registrations: vec![
                tcp(NFS_PROGRAM, NFS_VERSION, nfs_port),
                tcp(MOUNT_PROGRAM, MOUNT_VERSION, mount_port),
            ],
        }
    }

    /// The port registered for `query`'s program, version and protocol; 0
    /// when there is none (the PORTMAP convention for "not registered").
    fn port_of(&self, query: &mapping) -> u32 {
        self.registrations
            .iter()
            .find(|r| r.prog == query.prog && r.vers == query.vers && r.prot == query.prot)
            .map_or(0, |r| r.port)
    }

    fn getport(&self, context: &CallContext, args: &[u8]) -> ProcResult {
        let Ok((query, _)) = mapping::unpack(&mut Cursor::new(args)) else {
            return ProcResult::GarbageArgs;
        };
        let port = self.port_of(&query);
        tracing::debug!(
            peer = %context.caller.addr,
            prog = query.prog,
            vers = query.vers,
            prot = query.prot,
            port,
            "PMAPPROC_GETPORT"
        );
        encode(&port)
    }

    fn dump(&self) -> ProcResult {
        let list: pmaplist = List(self.registrations.clone());
        encode(&list)
    }
}

/// The XDR encoding of a procedure's results.
fn encode(results: &impl Pack) -> ProcResult {
    let mut body = Vec::with_capacity(results.packed_size());
    match results.pack(&mut body) {
        Ok(_) => ProcResult::Success(body),
        Err(error) => {
            tracing::error!(%error, "encoding PORTMAP results failed");
            ProcResult::SystemErr
        }
    }
}

impl RpcProgram for PortmapProgram {
    fn id(&self) -> ProgramId {
        ProgramId {
            number: PROGRAM,
            name: "portmap",
            lowest: VERSION,
            highest: VERSION,
        }
    }

    fn procedure_name(&self, _version: u32, procedure: u32) -> Option<&'static str> {
        Some(match PMAP_PROG::try_from(procedure).ok()? {
            PMAP_PROG::PMAPPROC_NULL => "null",
            PMAP_PROG::PMAPPROC_SET => "set",
            PMAP_PROG::PMAPPROC_UNSET => "unset",
            PMAP_PROG::PMAPPROC_GETPORT => "getport",
            PMAP_PROG::PMAPPROC_DUMP => "dump",
            PMAP_PROG::PMAPPROC_CALLIT => "callit",
        })
    }

    fn call<'a>(
        &'a self,
        context: &'a CallContext,
        _version: u32,
        procedure: u32,
        args: &'a [u8],
    ) -> BoxFuture<'a, ProcResult> {
        let result = match PMAP_PROG::try_from(procedure) {
            Ok(PMAP_PROG::PMAPPROC_NULL) => ProcResult::Success(Vec::new()),
            Ok(PMAP_PROG::PMAPPROC_GETPORT) => self.getport(context, args),
            Ok(PMAP_PROG::PMAPPROC_DUMP) => self.dump(),
            Ok(PMAP_PROG::PMAPPROC_SET | PMAP_PROG::PMAPPROC_UNSET) => {
                tracing::info!(peer = %context.caller.addr, procedure, "refusing a PORTMAP registration change");
                encode(&false)
            }
            // CALLIT is the UDP broadcast relay; it is not offered.
            Ok(PMAP_PROG::PMAPPROC_CALLIT) | Err(_) => ProcResult::ProcUnavail,
        };
        Box::pin(future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oncrpc::{Caller, CallerAuth};

    fn context() -> CallContext {
        CallContext {
            caller: Caller {
                addr: "127.0.0.1:700".parse().unwrap(),
                auth: CallerAuth::None,
            },
            xid: 1,
        }
    }

    fn query(prog: u32, vers: u32, prot: u32) -> Vec<u8> {
        let mut args = Vec::new();
        mapping {
            prog,
            vers,
            prot,
            port: 0,
        }
        .pack(&mut args)
        .unwrap();
        args
    }

    #[tokio::test]
    async fn getport_answers_only_registered_tcp_services() {
        let portmap = PortmapProgram::new(2049, 20048);
        let context = context();
        let port = |args: Vec<u8>| {
            let portmap = portmap.clone();
            let context = context.clone();
            async move { portmap.call(&context, 2, 3, &args).await }
        };
        assert_eq!(
            port(query(NFS_PROGRAM, 3, 6)).await,
            ProcResult::Success(2049u32.to_be_bytes().to_vec())
        );
        assert_eq!(
            port(query(MOUNT_PROGRAM, 3, 6)).await,
            ProcResult::Success(20048u32.to_be_bytes().to_vec())
        );
        assert_eq!(
            port(query(NFS_PROGRAM, 3, 17)).await,
            ProcResult::Success(vec![0; 4])
        );
        assert_eq!(
            port(query(NFS_PROGRAM, 4, 6)).await,
            ProcResult::Success(vec![0; 4])
        );
        assert_eq!(port(vec![0; 3]).await, ProcResult::GarbageArgs);
        assert_eq!(
            portmap.call(&context, 2, 1, &query(1, 1, 6)).await,
            ProcResult::Success(vec![0; 4])
        );
        assert_eq!(
            portmap.call(&context, 2, 5, &[]).await,
            ProcResult::ProcUnavail
        );
    }
}
