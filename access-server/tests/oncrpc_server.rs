//! The ONC RPC server over real TCP connections on 127.0.0.1: record
//! marking, header errors, credentials, pipelining, client refusal, idle and
//! slow connections, connection caps, graceful stop, and PORTMAP through
//! `nfs3_client`.

// A failed `unwrap` is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use geonfs_access_server::oncrpc::{
    allow_networks, CallContext, CallerAuth, PortmapProgram, ProcResult, ProgramId, RpcProgram,
    RpcServer, ServerOptions,
};
use nfs3_client::tokio::TokioIo;
use nfs3_client::{PortmapError, PortmapperClient};
use nfs3_types::rpc::{
    accept_stat_data, auth_stat, auth_unix, msg_body, rejected_reply, reply_body, rpc_msg,
};
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

/// How long any single wait in these tests may take before it fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// The test program's number (in the user-defined range).
const ECHO_PROGRAM: u32 = 0x2000_1234;
/// AUTH_NONE answer of the credentials procedure.
const NO_CREDENTIALS: u32 = u32::MAX;

/// Procedures of the test program.
const PROC_NULL: u32 = 0;
/// Returns uid, gid, aux gid count, aux gids, the caller's port.
const PROC_CREDENTIALS: u32 = 1;
/// Waits until the gate named by its u32 argument opens, returns the name.
const PROC_GATED: u32 = 2;
const PROC_PANIC: u32 = 3;
/// Refuses every caller's credentials as too weak.
const PROC_TOO_WEAK: u32 = 4;

/// A program for the tests, versions 1 and 2.
struct EchoProgram {
    gates: Vec<Notify>,
    started: Semaphore,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl EchoProgram {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            gates: (0..8).map(|_| Notify::new()).collect(),
            started: Semaphore::new(0),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
        })
    }

    fn open_gate(&self, gate: usize) {
        self.gates[gate].notify_one();
    }

    /// Waits until `count` more gated calls have started.
    async fn wait_started(&self, count: u32) {
        let permits = tokio::time::timeout(DEADLINE, self.started.acquire_many(count))
            .await
            .expect("gated calls started in time")
            .expect("semaphore open");
        permits.forget();
    }

    async fn gated(&self, args: &[u8]) -> ProcResult {
        let Ok((gate, _)) = u32::unpack(&mut Cursor::new(args)) else {
            return ProcResult::GarbageArgs;
        };
        let Some(notify) = self.gates.get(gate as usize) else {
            return ProcResult::GarbageArgs;
        };
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(running, Ordering::SeqCst);
        self.started.add_permits(1);
        notify.notified().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        ProcResult::Success(gate.to_be_bytes().to_vec())
    }
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

impl RpcProgram for EchoProgram {
    fn id(&self) -> ProgramId {
        ProgramId {
            number: ECHO_PROGRAM,
            name: "echo",
            lowest: 1,
            highest: 2,
        }
    }

    fn procedure_name(&self, _version: u32, procedure: u32) -> Option<&'static str> {
        ["null", "credentials", "gated", "panic", "too_weak"]
            .get(procedure as usize)
            .copied()
    }

    fn call<'a>(
        &'a self,
        context: &'a CallContext,
        _version: u32,
        procedure: u32,
        args: &'a [u8],
    ) -> BoxFuture<'a, ProcResult> {
        Box::pin(async move {
            match procedure {
                PROC_NULL => ProcResult::Success(Vec::new()),
                PROC_CREDENTIALS => {
                    let mut answer = match &context.caller.auth {
                        CallerAuth::None => vec![NO_CREDENTIALS],
                        CallerAuth::Unix(unix) => {
                            let mut answer = vec![unix.uid, unix.gid, unix.aux_gids.len() as u32];
                            answer.extend(&unix.aux_gids);
                            answer
                        }
                    };
                    answer.push(u32::from(context.caller.addr.port()));
                    ProcResult::Success(words(&answer))
                }
                PROC_GATED => self.gated(args).await,
                PROC_PANIC => panic!("the test program panics on purpose"),
                PROC_TOO_WEAK => ProcResult::AuthTooWeak,
                _ => ProcResult::ProcUnavail,
            }
        })
    }
}

async fn start(program: Arc<EchoProgram>, options: ServerOptions) -> RpcServer {
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("address");
    RpcServer::bind(localhost, vec![program as Arc<dyn RpcProgram>], options)
        .await
        .expect("server binds")
}

async fn connect(server: &RpcServer) -> TcpStream {
    TcpStream::connect(server.local_addr())
        .await
        .expect("connects")
}

/// A credential: flavor and body.
type Credential = (u32, Vec<u8>);

fn no_credential() -> Credential {
    (0, Vec::new())
}

fn unix_credential(uid: u32, gid: u32, gids: Vec<u32>) -> Credential {
    let parameters = auth_unix {
        stamp: 1,
        machinename: Opaque::borrowed(b"client7"),
        uid,
        gid,
        gids,
    };
    let mut body = Vec::new();
    parameters.pack(&mut body).expect("packs");
    (1, body)
}

/// The bytes of a CALL message (without record marking).
fn call(
    xid: u32,
    rpc_version: u32,
    program: u32,
    version: u32,
    procedure: u32,
    credential: Credential,
    args: &[u8],
) -> Vec<u8> {
    let (flavor, body) = credential;
    let mut message = words(&[xid, 0, rpc_version, program, version, procedure, flavor]);
    Opaque::borrowed(&body).pack(&mut message).expect("packs");
    message.extend(words(&[0, 0]));
    message.extend_from_slice(args);
    message
}

fn echo_call(xid: u32, procedure: u32, args: &[u8]) -> Vec<u8> {
    call(xid, 2, ECHO_PROGRAM, 1, procedure, no_credential(), args)
}

/// Sends `message` as one record cut into fragments at `cuts`.
async fn send_fragments(stream: &mut TcpStream, message: &[u8], cuts: &[usize]) {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(message.len());
    let mut bytes = Vec::new();
    for (index, pair) in bounds.windows(2).enumerate() {
        let mut header = (pair[1] - pair[0]) as u32;
        if index == bounds.len() - 2 {
            header |= 0x8000_0000;
        }
        bytes.extend(header.to_be_bytes());
        bytes.extend_from_slice(&message[pair[0]..pair[1]]);
    }
    stream.write_all(&bytes).await.expect("sends");
}

/// `message` as one record of one fragment.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut bytes = (0x8000_0000u32 | message.len() as u32)
        .to_be_bytes()
        .to_vec();
    bytes.extend_from_slice(message);
    bytes
}

async fn send(stream: &mut TcpStream, message: &[u8]) {
    send_fragments(stream, message, &[]).await;
}

/// A reply as the tests see it.
#[derive(Debug, PartialEq)]
enum Answer {
    Success(Vec<u8>),
    ProgUnavail,
    ProgMismatch(u32, u32),
    ProcUnavail,
    GarbageArgs,
    SystemErr,
    RpcMismatch(u32, u32),
    AuthError(auth_stat),
}

/// Reads one reply record (it must be a single fragment) and decodes it.
async fn receive(stream: &mut TcpStream) -> (u32, Answer) {
    let record = tokio::time::timeout(DEADLINE, async {
        let header = stream.read_u32().await.expect("reply header");
        assert_ne!(header & 0x8000_0000, 0, "replies are one last fragment");
        let mut record = vec![0; (header & 0x7fff_ffff) as usize];
        stream.read_exact(&mut record).await.expect("reply body");
        record
    })
    .await
    .expect("reply in time");
    let mut cursor = Cursor::new(&record[..]);
    let (message, _) = rpc_msg::unpack(&mut cursor).expect("a reply message");
    let rest = record[cursor.position() as usize..].to_vec();
    let answer = match message.body {
        msg_body::REPLY(reply_body::MSG_ACCEPTED(accepted)) => match accepted.reply_data {
            accept_stat_data::SUCCESS => Answer::Success(rest),
            accept_stat_data::PROG_UNAVAIL => Answer::ProgUnavail,
            accept_stat_data::PROG_MISMATCH { low, high } => Answer::ProgMismatch(low, high),
            accept_stat_data::PROC_UNAVAIL => Answer::ProcUnavail,
            accept_stat_data::GARBAGE_ARGS => Answer::GarbageArgs,
            accept_stat_data::SYSTEM_ERR => Answer::SystemErr,
        },
        msg_body::REPLY(reply_body::MSG_DENIED(rejected_reply::RPC_MISMATCH { low, high })) => {
            Answer::RpcMismatch(low, high)
        }
        msg_body::REPLY(reply_body::MSG_DENIED(rejected_reply::AUTH_ERROR(stat))) => {
            Answer::AuthError(stat)
        }
        msg_body::CALL(_) => panic!("server sent a CALL"),
    };
    (message.xid, answer)
}

/// Asserts the server closes the connection (end of stream or reset).
async fn assert_closed(stream: &mut TcpStream) {
    let mut buffer = [0u8; 64];
    let outcome = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "connection still open");
}

#[tokio::test]
async fn portmap_answers_nfs3_client() {
    let localhost: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let portmap = Arc::new(PortmapProgram::new(2049, 20048));
    let server = RpcServer::bind(
        localhost,
        vec![portmap as Arc<dyn RpcProgram>],
        ServerOptions::default(),
    )
    .await
    .expect("server binds");
    let stream = TcpStream::connect(server.local_addr())
        .await
        .expect("connects");
    let mut client = PortmapperClient::new(TokioIo::new(stream));
    tokio::time::timeout(DEADLINE, async {
        client.null().await.expect("NULL");
        assert_eq!(client.getport(100_003, 3, 6).await.expect("NFS port"), 2049);
        assert_eq!(
            client.getport(100_005, 3, 6).await.expect("MOUNT port"),
            20048
        );
        assert!(matches!(
            client.getport(100_003, 3, 17).await,
            Err(PortmapError::ProgramUnavailable)
        ));
        assert!(matches!(
            client.getport(100_021, 4, 6).await,
            Err(PortmapError::ProgramUnavailable)
        ));
        let mut dump: Vec<_> = client
            .dump()
            .await
            .expect("DUMP")
            .into_iter()
            .map(|m| (m.prog, m.vers, m.prot, m.port))
            .collect();
        dump.sort_unstable();
        assert_eq!(dump, vec![(100_003, 3, 6, 2049), (100_005, 3, 6, 20048)]);
    })
    .await
    .expect("portmap answers in time");
    server.shutdown(DEADLINE).await.expect("stops");
}

#[tokio::test]
async fn joins_a_call_sent_in_several_fragments() {
    let server = start(EchoProgram::new(), ServerOptions::default()).await;
    let mut stream = connect(&server).await;
    let message = echo_call(77, PROC_CREDENTIALS, &[]);
    send_fragments(&mut stream, &message, &[3, 10, 10, 21]).await;
    let port = u32::from(stream.local_addr().expect("local address").port());
    assert_eq!(
        receive(&mut stream).await,
        (77, Answer::Success(words(&[NO_CREDENTIALS, port])))
    );
}

#[tokio::test]
async fn closes_the_connection_on_an_oversize_record() {
    let options = ServerOptions {
        max_record_size: 1024,
        ..ServerOptions::default()
    };
    let metrics = options.metrics.clone();
    let server = start(EchoProgram::new(), options).await;
    let mut stream = connect(&server).await;
    // A record of exactly the maximum is fine.
    let mut message = echo_call(1, PROC_NULL, &[]);
    message.resize(1024, 0);
    send(&mut stream, &message).await;
    assert_eq!(receive(&mut stream).await, (1, Answer::Success(Vec::new())));
    // Two fragments adding up to more are not.
    let mut bytes = 600u32.to_be_bytes().to_vec();
    bytes.extend(echo_call(2, PROC_NULL, &[]));
    bytes.resize(4 + 600, 0);
    bytes.extend((0x8000_0000u32 | 600).to_be_bytes());
    stream.write_all(&bytes).await.expect("sends");
    assert_closed(&mut stream).await;
    assert_eq!(
        metrics
            .errors
            .with_label_values(&["unknown", "bad_record"])
            .get(),
        1
    );
    // The server still serves other connections.
    let mut stream = connect(&server).await;
    send(&mut stream, &echo_call(3, PROC_NULL, &[])).await;
    assert_eq!(receive(&mut stream).await, (3, Answer::Success(Vec::new())));
    // Both calls that reached the program were timed.
    let timed = metrics.call_seconds.with_label_values(&["echo", "null"]);
    assert_eq!(timed.get_sample_count(), 2);
}

#[tokio::test]
async fn refuses_bad_calls_with_the_rfc_replies() {
    let server = start(EchoProgram::new(), ServerOptions::default()).await;
    let mut stream = connect(&server).await;
    let cases = [
        (
            call(10, 3, ECHO_PROGRAM, 1, PROC_NULL, no_credential(), &[]),
            Answer::RpcMismatch(2, 2),
        ),
        (
            call(11, 2, 0x2000_9999, 1, PROC_NULL, no_credential(), &[]),
            Answer::ProgUnavail,
        ),
        (
            call(12, 2, ECHO_PROGRAM, 3, PROC_NULL, no_credential(), &[]),
            Answer::ProgMismatch(1, 2),
        ),
        (
            call(13, 2, ECHO_PROGRAM, 2, 99, no_credential(), &[]),
            Answer::ProcUnavail,
        ),
        (echo_call(14, PROC_GATED, &[1, 2]), Answer::GarbageArgs),
        (
            call(15, 2, ECHO_PROGRAM, 1, PROC_NULL, (6, vec![0; 8]), &[]),
            Answer::AuthError(auth_stat::AUTH_BADCRED),
        ),
        (
            call(16, 2, ECHO_PROGRAM, 1, PROC_NULL, (1, vec![0; 8]), &[]),
            Answer::AuthError(auth_stat::AUTH_BADCRED),
        ),
        (echo_call(17, PROC_PANIC, &[]), Answer::SystemErr),
        (
            echo_call(19, PROC_TOO_WEAK, &[]),
            Answer::AuthError(auth_stat::AUTH_TOOWEAK),
        ),
        // AUTH_SHORT: the client must fall back to its full credentials.
        (
            call(20, 2, ECHO_PROGRAM, 1, PROC_NULL, (2, vec![0; 4]), &[]),
            Answer::AuthError(auth_stat::AUTH_REJECTEDCRED),
        ),
    ];
    for (message, expected) in cases {
        let xid = u32::from_be_bytes([message[0], message[1], message[2], message[3]]);
        send(&mut stream, &message).await;
        assert_eq!(receive(&mut stream).await, (xid, expected));
    }
    // The connection survived all of them.
    send(&mut stream, &echo_call(18, PROC_NULL, &[])).await;
    assert_eq!(
        receive(&mut stream).await,
        (18, Answer::Success(Vec::new()))
    );
}

#[tokio::test]
async fn auth_unix_credentials_reach_the_program() {
    let server = start(EchoProgram::new(), ServerOptions::default()).await;
    let mut stream = connect(&server).await;
    let port = u32::from(stream.local_addr().expect("local address").port());
    let credential = unix_credential(1000, 100, vec![4, 27, 1000]);
    send(
        &mut stream,
        &call(5, 2, ECHO_PROGRAM, 2, PROC_CREDENTIALS, credential, &[]),
    )
    .await;
    assert_eq!(
        receive(&mut stream).await,
        (
            5,
            Answer::Success(words(&[1000, 100, 3, 4, 27, 1000, port]))
        )
    );
}

#[tokio::test]
async fn refuses_clients_outside_the_allowed_networks() {
    let options = ServerOptions {
        client_filter: Some(allow_networks(vec!["10.0.0.0/8".parse().expect("network")])),
        ..ServerOptions::default()
    };
    let metrics = options.metrics.clone();
    let server = start(EchoProgram::new(), options).await;
    let mut stream = connect(&server).await;
    // The write may or may not fail depending on when the close arrives.
    let _ = stream.write_all(&[0x80, 0, 0, 0]).await;
    assert_closed(&mut stream).await;
    assert_eq!(metrics.refused_connections.get(), 1);
    assert_eq!(metrics.connections.get(), 0);
}

#[tokio::test]
async fn answers_pipelined_calls_as_they_complete() {
    let program = EchoProgram::new();
    let server = start(Arc::clone(&program), ServerOptions::default()).await;
    let mut stream = connect(&server).await;
    // All three in one write: the server reads them all before any answer.
    let mut calls = frame(&echo_call(1, PROC_GATED, &0u32.to_be_bytes()));
    calls.extend(frame(&echo_call(2, PROC_GATED, &1u32.to_be_bytes())));
    calls.extend(frame(&echo_call(3, PROC_NULL, &[])));
    stream.write_all(&calls).await.expect("sends");
    assert_eq!(receive(&mut stream).await, (3, Answer::Success(Vec::new())));
    program.wait_started(2).await;
    program.open_gate(1);
    assert_eq!(
        receive(&mut stream).await,
        (2, Answer::Success(words(&[1])))
    );
    program.open_gate(0);
    assert_eq!(
        receive(&mut stream).await,
        (1, Answer::Success(words(&[0])))
    );
}

#[tokio::test]
async fn bounds_the_calls_running_per_connection() {
    let program = EchoProgram::new();
    let options = ServerOptions {
        max_in_flight_per_connection: 2,
        ..ServerOptions::default()
    };
    let server = start(Arc::clone(&program), options).await;
    let mut stream = connect(&server).await;
    for gate in 0..4u32 {
        send(
            &mut stream,
            &echo_call(gate, PROC_GATED, &gate.to_be_bytes()),
        )
        .await;
    }
    program.wait_started(2).await;
    for gate in 0..4 {
        program.open_gate(gate);
    }
    let mut xids = Vec::new();
    for _ in 0..4 {
        let (xid, answer) = receive(&mut stream).await;
        assert_eq!(answer, Answer::Success(words(&[xid])));
        xids.push(xid);
    }
    xids.sort_unstable();
    assert_eq!(xids, vec![0, 1, 2, 3]);
    assert_eq!(program.most_running.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn shutdown_lets_calls_in_flight_finish() {
    let program = EchoProgram::new();
    let server = start(Arc::clone(&program), ServerOptions::default()).await;
    let address = server.local_addr();
    let mut stream = connect(&server).await;
    send(&mut stream, &echo_call(40, PROC_GATED, &5u32.to_be_bytes())).await;
    program.wait_started(1).await;
    let stopping = tokio::spawn(server.shutdown(DEADLINE));
    program.open_gate(5);
    assert_eq!(
        receive(&mut stream).await,
        (40, Answer::Success(words(&[5])))
    );
    assert_closed(&mut stream).await;
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("stops in time")
        .expect("shutdown task")
        .expect("no call abandoned");
    assert!(
        TcpStream::connect(address).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn shutdown_abandons_calls_at_the_deadline() {
    let program = EchoProgram::new();
    let server = start(Arc::clone(&program), ServerOptions::default()).await;
    let mut stream = connect(&server).await;
    send(&mut stream, &echo_call(41, PROC_GATED, &6u32.to_be_bytes())).await;
    program.wait_started(1).await;
    let outcome = server.shutdown(Duration::from_millis(100)).await;
    assert!(outcome.is_err(), "the gated call was still running");
    assert_closed(&mut stream).await;
}

/// A slowloris client cannot hold a connection: one that sends nothing
/// and one that stops halfway through a record are closed after the idle
/// and record timeouts, while a client with a call running longer than the
/// idle timeout keeps its connection, and the idle time counts from its
/// last reply, while others are served throughout.
#[tokio::test]
async fn closes_idle_and_half_sent_connections_but_not_busy_ones() {
    let program = EchoProgram::new();
    let timeout = Duration::from_millis(200);
    let options = ServerOptions {
        idle_timeout: timeout,
        record_timeout: timeout,
        ..ServerOptions::default()
    };
    let metrics = options.metrics.clone();
    let server = start(Arc::clone(&program), options).await;
    let mut silent = connect(&server).await;
    let mut half = connect(&server).await;
    let record = frame(&echo_call(7, PROC_NULL, &[]));
    half.write_all(&record[..10]).await.expect("sends");
    let mut busy = connect(&server).await;
    send(&mut busy, &echo_call(1, PROC_GATED, &0u32.to_be_bytes())).await;
    program.wait_started(1).await;

    assert_closed(&mut silent).await;
    assert_closed(&mut half).await;
    // What is under test is the time passing: the gated call has run for
    // well over the idle timeout when its gate opens.
    tokio::time::sleep(timeout * 3).await;
    program.open_gate(0);
    assert_eq!(receive(&mut busy).await, (1, Answer::Success(words(&[0]))));
    // Idle counts from the last reply, not from when the server last
    // started waiting for bytes: a call sent half the idle timeout after a
    // long call's reply is still served (the server used to close such a
    // connection whenever its idle timer happened to fire in between).
    tokio::time::sleep(timeout / 2).await;
    send(&mut busy, &echo_call(2, PROC_NULL, &[])).await;
    assert_eq!(receive(&mut busy).await, (2, Answer::Success(Vec::new())));
    let mut fresh = connect(&server).await;
    send(&mut fresh, &echo_call(3, PROC_NULL, &[])).await;
    assert_eq!(receive(&mut fresh).await, (3, Answer::Success(Vec::new())));
    assert!(metrics.connections.get() >= 4);
}

/// Connections beyond the cap of one client address are closed at once and
/// counted as refused; a slot comes back when a connection ends.
#[tokio::test]
async fn caps_the_connections_of_one_client() {
    let options = ServerOptions {
        max_connections_per_client: 2,
        ..ServerOptions::default()
    };
    let metrics = options.metrics.clone();
    let server = start(EchoProgram::new(), options).await;
    let mut first = connect(&server).await;
    let mut second = connect(&server).await;
    for (xid, stream) in [(1, &mut first), (2, &mut second)] {
        send(stream, &echo_call(xid, PROC_NULL, &[])).await;
        assert_eq!(receive(stream).await, (xid, Answer::Success(Vec::new())));
    }
    let mut third = connect(&server).await;
    let _ = third.write_all(&frame(&echo_call(3, PROC_NULL, &[]))).await;
    assert_closed(&mut third).await;
    assert_eq!(metrics.refused_connections.get(), 1);
    drop(first);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut again = connect(&server).await;
        let _ = again.write_all(&frame(&echo_call(4, PROC_NULL, &[]))).await;
        let mut header = [0u8; 4];
        if again.read_exact(&mut header).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
