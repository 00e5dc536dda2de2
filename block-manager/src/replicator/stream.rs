//! One `Replicate` stream per target core: every put the replicator sends
//! to that core (from any number of jobs running concurrently) goes on the
//! same stream, up to [`MAX_IN_FLIGHT`] unanswered, and the core answers
//! in order. A stream that breaks fails its unanswered puts as
//! `UNAVAILABLE` (the jobs retry with backoff, or switch core) and the next
//! put opens a new one; an idle stream closes after [`IDLE_CLOSE`]. A
//! stream with puts outstanding that gets no answer for
//! [`super::ReplicatorOptions::stream_stall`] (a half-open connection, a
//! reply lost on the way) is broken off the same way: without it, one lost
//! reply would hold its job, and the worker's round with it, forever.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use futures::channel::mpsc as stream_channel;
use futures::StreamExt;
use geonfs_proto::replication::block_replication_client::BlockReplicationClient;
use geonfs_proto::replication::{ReplicaPut, ReplicaPutReply};
use geonfs_rpc::RpcChannel;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

use super::Worker;

/// Puts sent on one stream and not yet answered.
pub(super) const MAX_IN_FLIGHT: usize = 32;
/// An unused stream is closed after this long.
pub(super) const IDLE_CLOSE: Duration = Duration::from_secs(30);

type Reply = Result<ReplicaPutReply, Status>;

/// A put waiting for its turn on a stream. Its answer is `None` when it
/// was never sent (the stream closed first): the caller tries a new one.
pub(super) struct Pending {
    put: ReplicaPut,
    reply: oneshot::Sender<Option<Reply>>,
}

/// The open streams of one worker, by target core name.
pub(super) type Streams = std::sync::Mutex<HashMap<String, mpsc::Sender<Pending>>>;

impl Worker {
    /// Sends `put` to `target` on its stream and waits for the answer, at
    /// most twice [`super::ReplicatorOptions::stream_stall`] (a stream
    /// that cannot even be opened, a queue that does not move): then the
    /// stream is dropped for a new one and the put fails (its job
    /// retries).
    pub(super) async fn put_streamed(&self, target: &str, put: ReplicaPut) -> Reply {
        let limit = self.options.stream_stall.saturating_mul(2);
        match tokio::time::timeout(limit, self.put_on_stream(target, put)).await {
            Ok(reply) => reply,
            Err(_) => {
                self.drop_stream(target);
                Err(Status::deadline_exceeded(format!(
                    "no answer from {target} within {limit:?}"
                )))
            }
        }
    }

    /// [`Worker::put_streamed`] without its time limit.
    async fn put_on_stream(&self, target: &str, put: ReplicaPut) -> Reply {
        // A stream that closed (idle, broken) before sending the put is
        // replaced; a put it did send and lost fails (the job retries).
        for _ in 0..3 {
            let inbox = self.stream_to(target)?;
            let (reply, answer) = oneshot::channel();
            let pending = Pending {
                put: put.clone(),
                reply,
            };
            if inbox.send(pending).await.is_err() {
                self.forget_stream(target);
                continue;
            }
            match answer.await {
                Ok(Some(reply)) => return reply,
                Ok(None) | Err(_) => self.forget_stream(target),
            }
        }
        Err(Status::unavailable(format!(
            "no replication stream to {target}"
        )))
    }

    fn stream_to(&self, target: &str) -> Result<mpsc::Sender<Pending>, Status> {
        let mut streams = match self.streams.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(inbox) = streams.get(target).filter(|inbox| !inbox.is_closed()) {
            return Ok(inbox.clone());
        }
        let client =
            BlockReplicationClient::new(self.channel(target).map_err(Status::unavailable)?)
                .max_decoding_message_size(self.max_message)
                .max_encoding_message_size(self.max_message);
        let (inbox, receiver) = mpsc::channel(MAX_IN_FLIGHT);
        tokio::spawn(run_stream(
            client,
            receiver,
            target.to_string(),
            self.options.stream_stall,
        ));
        streams.insert(target.to_string(), inbox.clone());
        Ok(inbox)
    }

    /// Forgets `target`'s stream, open or not: the next put opens another.
    fn drop_stream(&self, target: &str) {
        let mut streams = match self.streams.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        streams.remove(target);
    }

    fn forget_stream(&self, target: &str) {
        let mut streams = match self.streams.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if streams.get(target).is_some_and(mpsc::Sender::is_closed) {
            streams.remove(target);
        }
    }
}

/// A reply of the stream as the caller's result.
fn outcome(reply: ReplicaPutReply) -> Reply {
    if reply.error_code == 0 && reply.error.is_empty() {
        Ok(reply)
    } else {
        Err(Status::new(Code::from(reply.error_code), reply.error))
    }
}

/// Runs one stream until it breaks, stalls for `stall` with puts
/// outstanding, idles out, or the worker is gone.
async fn run_stream(
    mut client: BlockReplicationClient<RpcChannel>,
    mut inbox: mpsc::Receiver<Pending>,
    target: String,
    stall: Duration,
) {
    let (requests, outbound) = stream_channel::unbounded::<ReplicaPut>();
    let mut unanswered: VecDeque<oneshot::Sender<Option<Reply>>> = VecDeque::new();
    // The last answer, or the first put sent after none was outstanding.
    let mut progress = Instant::now();
    let failure = match client.replicate(outbound).await {
        Ok(response) => {
            let mut replies = response.into_inner();
            loop {
                tokio::select! {
                    next = inbox.recv(), if unanswered.len() < MAX_IN_FLIGHT => {
                        let Some(pending) = next else {
                            break Status::cancelled("replicator stopped");
                        };
                        if requests.unbounded_send(pending.put).is_err() {
                            let _ = pending.reply.send(None);
                            break Status::unavailable(format!("replication stream to {target} closed"));
                        }
                        if unanswered.is_empty() {
                            progress = Instant::now();
                        }
                        unanswered.push_back(pending.reply);
                    }
                    _ = tokio::time::sleep_until(progress + stall), if !unanswered.is_empty() => {
                        break Status::deadline_exceeded(format!(
                            "{target} answered none of {} outstanding puts for {stall:?}",
                            unanswered.len()
                        ));
                    }
                    reply = replies.next() => match reply {
                        Some(Ok(reply)) => match unanswered.pop_front() {
                            Some(waiting) => {
                                progress = Instant::now();
                                let _ = waiting.send(Some(outcome(reply)));
                            }
                            None => break Status::internal(format!(
                                "{target} answered a put that was not sent"
                            )),
                        },
                        Some(Err(status)) => break status,
                        None => break Status::unavailable(format!(
                            "{target} ended the replication stream"
                        )),
                    },
                    _ = tokio::time::sleep(IDLE_CLOSE), if unanswered.is_empty() => {
                        break Status::unavailable("idle replication stream closed");
                    }
                }
            }
        }
        Err(status) => status,
    };
    tracing::debug!(%target, %failure, unanswered = unanswered.len(), "replication stream closed");
    inbox.close();
    for reply in unanswered {
        let _ = reply.send(Some(Err(Status::new(
            failure.code(),
            failure.message().to_string(),
        ))));
    }
    // Never sent: their callers open a new stream.
    while let Some(pending) = inbox.recv().await {
        let _ = pending.reply.send(None);
    }
}
