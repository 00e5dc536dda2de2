//! Routing decoded calls to programs and turning outcomes into replies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use super::message::{
    decode_record, encode_reply_head, CallHeader, DecodedRecord, ReplyStatus, UndecodableRecord,
};
use super::metrics::RpcMetrics;
use super::program::{CallContext, Caller, ProcResult, RpcProgram};

/// Metric label for calls whose program is unknown or was never decoded.
const UNKNOWN: &str = "unknown";

/// A reply ready to be written: the fragment and RPC headers, then the
/// procedure's results (kept apart so large READ results are not copied).
#[derive(Debug)]
pub(crate) struct EncodedReply {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

impl EncodedReply {
    /// The reply to `xid` with `status` and results `body`; a reply too
    /// large for one fragment becomes SYSTEM_ERR.
    fn new(xid: u32, status: ReplyStatus, body: Vec<u8>) -> Self {
        if let Some(head) = encode_reply_head(xid, status, body.len()) {
            return Self { head, body };
        }
        tracing::error!(
            xid,
            body_len = body.len(),
            "reply too large for one fragment; answering SYSTEM_ERR"
        );
        let head = encode_reply_head(xid, ReplyStatus::SystemErr, 0).unwrap_or_default();
        Self {
            head,
            body: Vec::new(),
        }
    }
}

/// A call to execute, routed to its program.
pub(crate) struct Execution {
    program: Arc<dyn RpcProgram>,
    header: CallHeader,
    record: Vec<u8>,
    peer: SocketAddr,
}

/// What to do with one record.
pub(crate) enum RecordAction {
    /// Answer at once without running a program.
    Answer(EncodedReply),
    /// Run a program, then answer.
    Execute(Execution),
    /// Nothing to answer (a REPLY message).
    Ignore,
    /// The record cannot be answered; close the connection.
    Close(UndecodableRecord),
}

/// The programs served on one listener.
pub(crate) struct Dispatcher {
    programs: HashMap<u32, Arc<dyn RpcProgram>>,
    metrics: RpcMetrics,
}

impl Dispatcher {
    /// A dispatcher of `programs` (a later program with the same number
    /// replaces an earlier one).
    pub(crate) fn new(programs: Vec<Arc<dyn RpcProgram>>, metrics: RpcMetrics) -> Self {
        let programs = programs.into_iter().map(|p| (p.id().number, p)).collect();
        Self { programs, metrics }
    }

    /// Decodes `record` from `peer` and decides how to answer it.
    pub(crate) fn route(&self, record: Vec<u8>, peer: SocketAddr) -> RecordAction {
        let header = match decode_record(&record) {
            Ok(DecodedRecord::Call(header)) => header,
            Ok(DecodedRecord::Refused { xid, status }) => {
                tracing::debug!(%peer, xid, ?status, "call refused at the RPC header");
                self.metrics.error(UNKNOWN, status_kind(status));
                return RecordAction::Answer(EncodedReply::new(xid, status, Vec::new()));
            }
            Ok(DecodedRecord::NotACall { xid }) => {
                tracing::debug!(%peer, xid, "ignoring an RPC REPLY sent to the server");
                return RecordAction::Ignore;
            }
            Err(problem) => {
                self.metrics.error(UNKNOWN, "bad_record");
                return RecordAction::Close(problem);
            }
        };
        let Some(program) = self.programs.get(&header.program) else {
            tracing::debug!(%peer, xid = header.xid, program = header.program, "PROG_UNAVAIL");
            self.metrics
                .calls
                .with_label_values(&[UNKNOWN, UNKNOWN])
                .inc();
            self.metrics.error(UNKNOWN, "prog_unavail");
            return RecordAction::Answer(EncodedReply::new(
                header.xid,
                ReplyStatus::ProgUnavail,
                Vec::new(),
            ));
        };
        let id = program.id();
        let procedure_label = program
            .procedure_name(header.version, header.procedure)
            .unwrap_or(UNKNOWN);
        self.metrics
            .calls
            .with_label_values(&[id.name, procedure_label])
            .inc();
        let versions = id.versions();
        if !versions.contains(&header.version) {
            let status = ReplyStatus::ProgMismatch {
                low: *versions.start(),
                high: *versions.end(),
            };
            tracing::debug!(%peer, xid = header.xid, program = id.name, version = header.version, "PROG_MISMATCH");
            self.metrics.error(id.name, status_kind(status));
            return RecordAction::Answer(EncodedReply::new(header.xid, status, Vec::new()));
        }
        RecordAction::Execute(Execution {
            program: Arc::clone(program),
            header,
            record,
            peer,
        })
    }

    /// Runs a routed call and encodes its reply. A panicking procedure is
    /// answered with SYSTEM_ERR.
    pub(crate) async fn execute(&self, execution: Execution) -> EncodedReply {
        let Execution {
            program,
            header,
            record,
            peer,
        } = execution;
        let context = CallContext {
            caller: Caller {
                addr: peer,
                auth: header.auth,
            },
            xid: header.xid,
        };
        let args = record.get(header.args_offset..).unwrap_or_default();
        let name = program.id().name;
        let started = std::time::Instant::now();
        let outcome =
            AssertUnwindSafe(program.call(&context, header.version, header.procedure, args))
                .catch_unwind()
                .await;
        let (status, body) = match outcome {
            Ok(ProcResult::Success(body)) => (ReplyStatus::Success, body),
            Ok(ProcResult::ProcUnavail) => (ReplyStatus::ProcUnavail, Vec::new()),
            Ok(ProcResult::GarbageArgs) => (ReplyStatus::GarbageArgs, Vec::new()),
            Ok(ProcResult::SystemErr) => (ReplyStatus::SystemErr, Vec::new()),
            Ok(ProcResult::AuthTooWeak) => (
                ReplyStatus::AuthError(nfs3_types::rpc::auth_stat::AUTH_TOOWEAK),
                Vec::new(),
            ),
            Err(_) => {
                tracing::error!(%peer, xid = context.xid, program = name, procedure = header.procedure, "procedure panicked; answering SYSTEM_ERR");
                (ReplyStatus::SystemErr, Vec::new())
            }
        };
        let procedure = program
            .procedure_name(header.version, header.procedure)
            .unwrap_or(UNKNOWN);
        self.metrics
            .call_seconds
            .with_label_values(&[name, procedure])
            .observe(started.elapsed().as_secs_f64());
        if status != ReplyStatus::Success {
            tracing::debug!(%peer, xid = context.xid, program = name, procedure = header.procedure, ?status, "call failed");
            self.metrics.error(name, status_kind(status));
        }
        EncodedReply::new(context.xid, status, body)
    }
}

/// The `kind` label of a reply status.
fn status_kind(status: ReplyStatus) -> &'static str {
    match status {
        ReplyStatus::Success => "success",
        ReplyStatus::ProgUnavail => "prog_unavail",
        ReplyStatus::ProgMismatch { .. } => "prog_mismatch",
        ReplyStatus::ProcUnavail => "proc_unavail",
        ReplyStatus::GarbageArgs => "garbage_args",
        ReplyStatus::SystemErr => "system_err",
        ReplyStatus::RpcMismatch => "rpc_mismatch",
        ReplyStatus::AuthError(_) => "auth_error",
    }
}
