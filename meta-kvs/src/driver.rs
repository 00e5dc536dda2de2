//! The Raft driver: one tokio task per member owning the `RawNode`, fed
//! through an mpsc, handling `Ready`s in raft-rs's documented order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use geonfs_proto::domain::KeyScan;
use geonfs_proto::meta::KeyValue;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, Message, MessageType,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage};
use tokio::sync::{mpsc, oneshot};

use crate::error::{MetaError, StoreError};
use crate::ids::Directory;
use crate::metrics::MetaMetrics;
use crate::storage::{ApplyOutcome, ConfChangeCommand, MetaStore};
use crate::transport::Transport;
use crate::{Command, MetaOptions};

/// A linearizable read, served after ReadIndex.
#[derive(Debug)]
pub enum ReadOp {
    /// One key.
    Get(Bytes),
    /// A range.
    Scan(KeyScan),
}

/// The answer to a [`ReadOp`].
#[derive(Debug)]
pub enum ReadReply {
    /// For Get.
    Value(Option<KeyValue>),
    /// For Scan: entries and whether more follow.
    Range(Vec<KeyValue>, bool),
}

/// A membership change.
///
/// Every change is proposed alone, as a `ConfChangeV2` with exactly one
/// `ConfChangeSingle` and the `Auto` transition: raft-rs applies such a
/// change as a *simple* change and never enters a joint configuration, so no
/// `auto_leave` step is ever needed. Only one change may be in flight at a
/// time (a second is refused until the first is applied), and each is
/// validated against the leader's current configuration before it is
/// proposed (see [`validate_change`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a node that is not a member as a voter.
    AddVoter,
    /// Add a node that is not a member as a learner.
    AddLearner,
    /// Make a learner a voter.
    PromoteLearner,
    /// Remove a voter or learner.
    Remove,
}

/// Checks `change` of node `node_id` (`name` for messages) against the
/// configuration `cs`: adds need a non-member, a promotion a learner, a
/// removal a member, and the last voter is never removed.
pub fn validate_change(
    cs: &ConfState,
    change: MembershipChange,
    node_id: u64,
    name: &str,
) -> Result<(), MetaError> {
    let voter = cs.voters.contains(&node_id);
    let learner = cs.learners.contains(&node_id);
    let refuse = |why: String| Err(MetaError::InvalidArgument(why));
    match change {
        MembershipChange::AddVoter | MembershipChange::AddLearner if voter => {
            refuse(format!("{name} (id {node_id:#x}) is already a voter"))
        }
        MembershipChange::AddVoter | MembershipChange::AddLearner if learner => refuse(format!(
            "{name} (id {node_id:#x}) is already a learner (promote it instead)"
        )),
        MembershipChange::PromoteLearner if voter => refuse(format!(
            "{name} (id {node_id:#x}) is already a voter, not a learner"
        )),
        MembershipChange::PromoteLearner if !learner => {
            refuse(format!("{name} (id {node_id:#x}) is not a learner"))
        }
        MembershipChange::Remove if !voter && !learner => {
            refuse(format!("{name} (id {node_id:#x}) is not a member"))
        }
        MembershipChange::Remove if voter && cs.voters.len() == 1 => {
            refuse(format!("{name} (id {node_id:#x}) is the last voter"))
        }
        _ => Ok(()),
    }
}

/// The state a member reports.
#[derive(Clone, Debug, Default)]
pub struct StatusInfo {
    /// This member's Raft id.
    pub id: u64,
    /// Current term.
    pub term: u64,
    /// Known leader (0 = none).
    pub leader_id: u64,
    /// Leader address when known.
    pub leader_addr: Option<SocketAddr>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Voters.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
}

type Reply<T> = oneshot::Sender<Result<T, MetaError>>;

/// What the driver task receives.
pub enum DriverMsg {
    /// Propose a command (its proposal id is set by the driver).
    Propose(Command, Reply<ApplyOutcome>),
    /// A linearizable read.
    Read(ReadOp, Reply<ReadReply>),
    /// A message from a peer.
    Raft(Message),
    /// Change membership: (change, node name, address).
    ConfChange(
        MembershipChange,
        String,
        Option<SocketAddr>,
        Reply<ConfState>,
    ),
    /// The transport could not reach a peer.
    Unreachable(u64),
    /// The outcome of sending a snapshot.
    SnapshotStatus(u64, SnapshotStatus),
    /// Report the status.
    Status(oneshot::Sender<StatusInfo>),
    /// Stop gracefully.
    Shutdown,
}

struct Pending {
    term: u64,
    started: Instant,
    reply: Reply<ApplyOutcome>,
}

struct PendingRead {
    op: ReadOp,
    started: Instant,
    reply: Reply<ReadReply>,
}

/// The driver state, owned by its task.
pub struct Driver {
    raw: RawNode<MetaStore>,
    store: MetaStore,
    dir: Directory,
    transport: Transport,
    metrics: MetaMetrics,
    options: MetaOptions,
    next_proposal: u64,
    next_read: u64,
    proposals: HashMap<u64, Pending>,
    /// ReadIndex requests by context, waiting for their read state.
    reads: HashMap<Vec<u8>, PendingRead>,
    /// Reads with a known read index, waiting for apply.
    ready_reads: Vec<(u64, PendingRead)>,
    conf_change: Option<(u64, u64, Reply<ConfState>)>,
    term: u64,
    leader: u64,
    /// Ticks since this member last became leader (0 when not leading).
    leader_ticks: usize,
    /// Ticks since this member last knew a leader.
    leaderless_ticks: usize,
}

impl Driver {
    /// A driver over an opened (and bootstrapped if needed) store.
    pub fn new(
        id: u64,
        name: &str,
        store: MetaStore,
        dir: Directory,
        transport: Transport,
        metrics: MetaMetrics,
        options: MetaOptions,
    ) -> Result<Self, MetaError> {
        let config = raft::Config {
            id,
            election_tick: options.election_tick,
            heartbeat_tick: options.heartbeat_tick,
            applied: store.applied_index(),
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, store.clone(), &crate::logger::raft_logger(name))?;
        Ok(Driver {
            raw,
            store,
            dir,
            transport,
            metrics,
            options,
            next_proposal: rand::random::<u64>() >> 1,
            next_read: 0,
            proposals: HashMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            conf_change: None,
            term: 0,
            leader: 0,
            leader_ticks: 0,
            leaderless_ticks: 0,
        })
    }

    /// Says so, every five election timeouts, while no leader is known:
    /// elections that keep failing over a slow link look like nothing
    /// else from outside.
    fn watch_elections(&mut self) {
        if self.raw.raft.leader_id != raft::INVALID_ID {
            self.leaderless_ticks = 0;
            return;
        }
        self.leaderless_ticks = self.leaderless_ticks.saturating_add(1);
        let every = self.options.election_tick.saturating_mul(5).max(1);
        if self.leaderless_ticks.is_multiple_of(every) {
            let election =
                self.options.tick * u32::try_from(self.options.election_tick).unwrap_or(u32::MAX);
            let without =
                self.options.tick * u32::try_from(self.leaderless_ticks).unwrap_or(u32::MAX);
            tracing::warn!(
                id = self.raw.raft.id,
                term = self.raw.raft.term,
                ?without,
                ?election,
                "no meta-kvs leader: elections keep failing. A majority of the voters must reach \
                 each other; if they do, the sites may be further apart than the timing allows \
                 (set [meta] inter_site_rtt, or election_timeout, to a few round trips)"
            );
        }
    }

    /// Runs until shutdown, a fatal storage error, or `killed` is set
    /// (checked before every step; then nothing more is persisted).
    pub async fn run(mut self, mut rx: mpsc::Receiver<DriverMsg>, killed: Arc<AtomicBool>) {
        let mut ticker = tokio::time::interval(self.options.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let killed = || killed.load(Ordering::Acquire);
        loop {
            if killed() {
                return;
            }
            let msg = tokio::select! {
                _ = ticker.tick() => {
                    self.raw.tick();
                    self.expire_reads();
                    if self.is_leader() {
                        self.leader_ticks = self.leader_ticks.saturating_add(1);
                    } else {
                        self.leader_ticks = 0;
                    }
                    self.watch_elections();
                    if let Err(err) = self.check_empty_peers() {
                        tracing::warn!(error = %err, "cannot compact the log start");
                    }
                    None
                }
                msg = rx.recv() => match msg {
                    None | Some(DriverMsg::Shutdown) => break,
                    Some(msg) => Some(msg),
                },
            };
            if let Some(msg) = msg {
                self.handle(msg);
                let mut more = 0;
                while more < 256 {
                    match rx.try_recv() {
                        Ok(DriverMsg::Shutdown) => return self.fail_all(),
                        Ok(msg) => self.handle(msg),
                        Err(_) => break,
                    }
                    more += 1;
                }
            }
            if killed() {
                return;
            }
            if let Err(err) = self.on_ready() {
                tracing::error!(error = %err, id = self.raw.raft.id, "meta member stops: storage failure");
                break;
            }
            self.check_leadership();
        }
        self.fail_all();
    }

    fn leader_addr(&self) -> Option<SocketAddr> {
        match self.raw.raft.leader_id {
            0 => None,
            id => self.dir.address(id),
        }
    }

    fn not_leader(&self) -> MetaError {
        MetaError::NotLeader {
            leader: self.leader_addr(),
        }
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn handle(&mut self, msg: DriverMsg) {
        match msg {
            DriverMsg::Propose(mut cmd, reply) => {
                if !self.is_leader() {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                let id = self.next_proposal;
                self.next_proposal = self.next_proposal.wrapping_add(1);
                cmd.proposal_id = id;
                match self.raw.propose(vec![], cmd.encode()) {
                    Ok(()) => {
                        self.proposals.insert(
                            id,
                            Pending {
                                term: self.raw.raft.term,
                                started: Instant::now(),
                                reply,
                            },
                        );
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                    }
                }
            }
            DriverMsg::Read(op, reply) => {
                if !self.is_leader() {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                // raft-rs drops ReadIndex until the leader committed an entry
                // of its term: answer "retry here" instead of waiting.
                if !self.raw.raft.commit_to_current_term() {
                    let _ = reply.send(Err(MetaError::NotLeader {
                        leader: self.dir.address(self.raw.raft.id),
                    }));
                    return;
                }
                self.next_read += 1;
                let ctx = self.next_read.to_be_bytes().to_vec();
                self.raw.read_index(ctx.clone());
                self.reads.insert(
                    ctx,
                    PendingRead {
                        op,
                        started: Instant::now(),
                        reply,
                    },
                );
            }
            DriverMsg::Raft(msg) => {
                if self.drop_replay_from_start(&msg) {
                    return;
                }
                if let Err(err) = self.raw.step(msg) {
                    tracing::debug!(error = %err, "raft step refused a message");
                }
            }
            DriverMsg::ConfChange(change, name, address, reply) => {
                self.propose_conf_change(change, name, address, reply)
            }
            DriverMsg::Unreachable(peer) => self.raw.report_unreachable(peer),
            DriverMsg::SnapshotStatus(peer, status) => self.raw.report_snapshot(peer, status),
            DriverMsg::Status(reply) => {
                let _ = reply.send(self.status());
            }
            DriverMsg::Shutdown => {}
        }
    }

    fn propose_conf_change(
        &mut self,
        change: MembershipChange,
        name: String,
        address: Option<SocketAddr>,
        reply: Reply<ConfState>,
    ) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.conf_change.is_some() {
            let _ = reply.send(Err(MetaError::InvalidArgument(
                "another membership change is in progress".into(),
            )));
            return;
        }
        let node_id = crate::ids::raft_id(&name);
        let cs = self.raw.raft.prs().conf().to_conf_state();
        if let Err(err) = validate_change(&cs, change, node_id, &name) {
            let _ = reply.send(Err(err));
            return;
        }
        if change == MembershipChange::Remove && node_id == self.raw.raft.id {
            // A leader that removed itself would go on leading a group it is
            // not in: hand leadership to the most caught-up other voter
            // first; the client retries there.
            let target = self
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != node_id && cs.voters.contains(id))
                .max_by_key(|(_, pr)| pr.matched)
                .map(|(id, _)| *id);
            if let Some(target) = target {
                tracing::info!(
                    id = node_id,
                    target,
                    "transferring leadership before removing the leader"
                );
                self.raw.transfer_leader(target);
            }
            let _ = reply.send(Err(MetaError::NotLeader {
                leader: target.and_then(|t| self.dir.address(t)),
            }));
            return;
        }
        if matches!(
            change,
            MembershipChange::AddVoter | MembershipChange::AddLearner
        ) {
            // The newcomer must get its configuration by snapshot (see
            // `drop_replay_from_start`).
            if let Err(err) = self.forget_log_start() {
                let _ = reply.send(Err(err));
                return;
            }
        }
        let change_type = match change {
            MembershipChange::AddVoter | MembershipChange::PromoteLearner => {
                ConfChangeType::AddNode
            }
            MembershipChange::AddLearner => ConfChangeType::AddLearnerNode,
            MembershipChange::Remove => ConfChangeType::RemoveNode,
        };
        if let Some(addr) = address {
            self.dir.insert(name.clone(), addr);
        }
        let context = match address {
            Some(addr) => format!("{name}={addr}"),
            None => name.clone(),
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = node_id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        match self.raw.propose_conf_change(context.into_bytes(), cc) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                self.conf_change = Some((index, self.raw.raft.term, reply));
            }
            Err(err) => {
                let _ = reply.send(Err(err.into()));
            }
        }
    }

    /// Whether to drop `msg`, an append that would replay the log from index
    /// 1 into a store with no configuration.
    ///
    /// The initial voters bootstrap their configuration at index 0, outside
    /// the log, so the log only holds the changes made since. A node that is
    /// not an initial voter starts empty; replaying the log onto its empty
    /// configuration would give it a wrong one (e.g. "a group of just me"
    /// after its own promotion). It must receive a snapshot instead, which
    /// carries the full configuration: it refuses appends from index 1 until
    /// it has one, and leaders drop their entry 1 (see [`Self::forget_log_start`])
    /// so they answer its probe with a snapshot.
    fn drop_replay_from_start(&self, msg: &Message) -> bool {
        let drop = msg.get_msg_type() == MessageType::MsgAppend
            && msg.index == 0
            && !msg.entries.is_empty()
            && !self.store.is_bootstrapped();
        if drop {
            tracing::debug!(
                id = self.raw.raft.id,
                from = msg.from,
                "no configuration yet: waiting for a snapshot, not a log replay"
            );
        }
        drop
    }

    /// Compacts entry 1 away on a leader whose log still starts there, so a
    /// follower with an empty log is sent a snapshot. Needs entry 1 applied.
    fn forget_log_start(&mut self) -> Result<(), MetaError> {
        if self.store.first_index()? == 1 && self.store.applied_index() >= 1 {
            self.store.compact(2)?;
            tracing::info!(
                id = self.raw.raft.id,
                "dropped log entry 1: new members catch up by snapshot"
            );
        }
        Ok(())
    }

    /// On a leader that has led for an election timeout: if a peer still
    /// matches nothing (a newcomer added under an earlier leader, or a voter
    /// that never caught up), make sure it is sent a snapshot.
    fn check_empty_peers(&mut self) -> Result<(), MetaError> {
        if !self.is_leader() || self.leader_ticks < self.options.election_tick {
            return Ok(());
        }
        let id = self.raw.raft.id;
        let empty_peer = self
            .raw
            .raft
            .prs()
            .iter()
            .any(|(peer, pr)| *peer != id && pr.matched == 0);
        if empty_peer {
            self.forget_log_start()?;
        }
        Ok(())
    }

    /// The current status.
    pub fn status(&self) -> StatusInfo {
        let cs = self.raw.raft.prs().conf().to_conf_state();
        StatusInfo {
            id: self.raw.raft.id,
            term: self.raw.raft.term,
            leader_id: self.raw.raft.leader_id,
            leader_addr: self.leader_addr(),
            commit: self.raw.raft.raft_log.committed,
            applied: self.store.applied_index(),
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        for failed in self.transport.send(msgs) {
            if failed.snapshot {
                self.raw.report_snapshot(failed.to, SnapshotStatus::Failure);
            }
            self.raw.report_unreachable(failed.to);
        }
    }

    /// One `Ready`, in raft-rs's documented order.
    fn on_ready(&mut self) -> Result<(), MetaError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. messages that need no persistence (leader's appends, heartbeats).
        let msgs = ready.take_messages();
        self.send(msgs);
        // 2. a received snapshot.
        if !ready.snapshot().is_empty() {
            self.store.apply_snapshot(ready.snapshot())?;
            self.metrics.snapshots_received.inc();
            tracing::info!(
                id = self.raw.raft.id,
                index = ready.snapshot().get_metadata().index,
                "applied a snapshot"
            );
        }
        for rs in ready.take_read_states() {
            if let Some(read) = self.reads.remove(&rs.request_ctx) {
                self.ready_reads.push((rs.index, read));
            }
        }
        // 3. committed entries.
        let committed = ready.take_committed_entries();
        self.apply(committed)?;
        // 4. entries and hard state, one synced write.
        self.store
            .persist_ready(ready.entries(), ready.hs(), None)?;
        // 5. messages that must follow persistence.
        let persisted = ready.take_persisted_messages();
        self.send(persisted);
        // 6. advance, then the light ready.
        let mut light = self.raw.advance(ready);
        // Followers learn the commit index from the hard state, leaders from
        // the light ready: read it from the log either way.
        self.metrics
            .commit_index
            .set(self.raw.raft.raft_log.committed as i64);
        let msgs = light.take_messages();
        self.send(msgs);
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        self.serve_reads();
        self.maybe_compact()?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), MetaError> {
        if entries.is_empty() {
            return Ok(());
        }
        let raw = &mut self.raw;
        let dir = &self.dir;
        let results = self.store.apply_entries(&entries, |cc| {
            if let Ok(text) = std::str::from_utf8(cc.context()) {
                if let Some((name, addr)) = text.split_once('=') {
                    if let Ok(addr) = addr.parse() {
                        dir.insert(name.to_string(), addr);
                    }
                }
            }
            let cs = match cc {
                ConfChangeCommand::V1(c) => raw.apply_conf_change(c),
                ConfChangeCommand::V2(c) => raw.apply_conf_change(c),
            };
            cs.map_err(StoreError::from)
        })?;
        self.metrics
            .applied_index
            .set(self.store.applied_index() as i64);
        for result in results {
            if let ApplyOutcome::ConfChange { conf_state } = &result.outcome {
                if let Some((index, term, _)) = &self.conf_change {
                    if *index == result.index && *term == result.term {
                        if let Some((_, _, reply)) = self.conf_change.take() {
                            let _ = reply.send(Ok(conf_state.clone()));
                        }
                    }
                }
            }
            if let Some(id) = result.proposal_id {
                if let Some(pending) = self.proposals.remove(&id) {
                    self.metrics
                        .proposal_seconds
                        .observe(pending.started.elapsed().as_secs_f64());
                    let outcome = if pending.term != result.term {
                        Err(MetaError::OutcomeUnknown(format!(
                            "entry {} has term {}, proposed in term {}",
                            result.index, result.term, pending.term
                        )))
                    } else if let ApplyOutcome::Rejected { reason } = result.outcome {
                        Err(MetaError::InvalidArgument(reason))
                    } else {
                        Ok(result.outcome)
                    };
                    let _ = pending.reply.send(outcome);
                }
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self) {
        if self.ready_reads.is_empty() {
            return;
        }
        let applied = self.store.applied_index();
        let waiting = std::mem::take(&mut self.ready_reads);
        for (index, read) in waiting {
            if applied >= index {
                let result = match read.op {
                    ReadOp::Get(key) => self.store.get(&key).map(ReadReply::Value),
                    ReadOp::Scan(scan) => self
                        .store
                        .scan(&scan.start, scan.end.as_deref(), scan.limit as usize)
                        .map(|(kvs, more)| ReadReply::Range(kvs, more)),
                };
                let _ = read.reply.send(result.map_err(MetaError::from));
            } else {
                self.ready_reads.push((index, read));
            }
        }
    }

    fn expire_reads(&mut self) {
        let limit = self.options.request_timeout;
        let expired: Vec<Vec<u8>> = self
            .reads
            .iter()
            .filter(|(_, r)| r.started.elapsed() > limit)
            .map(|(k, _)| k.clone())
            .collect();
        for ctx in expired {
            if let Some(read) = self.reads.remove(&ctx) {
                let _ = read.reply.send(Err(MetaError::Timeout(
                    "no quorum confirmed the leader's read index".into(),
                )));
            }
        }
    }

    fn maybe_compact(&mut self) -> Result<(), MetaError> {
        let applied = self.store.applied_index();
        let first = self.store.first_index()?;
        if applied >= first + self.options.compact_threshold {
            let to = (applied + 1)
                .saturating_sub(self.options.compact_keep)
                .max(first);
            self.store.compact(to)?;
            tracing::debug!(id = self.raw.raft.id, to, "compacted the raft log");
        }
        Ok(())
    }

    fn check_leadership(&mut self) {
        let term = self.raw.raft.term;
        let leader = self.raw.raft.leader_id;
        self.metrics.term.set(term as i64);
        if leader != self.leader {
            if leader != 0 {
                self.metrics.leader_changes.inc();
            }
            self.leader = leader;
        }
        if term != self.term || !self.is_leader() {
            self.term = term;
            if !self.proposals.is_empty() || !self.reads.is_empty() || !self.ready_reads.is_empty()
            {
                self.fail_pending();
            }
        }
    }

    fn fail_pending(&mut self) {
        for (_, p) in self.proposals.drain() {
            let _ = p.reply.send(Err(MetaError::OutcomeUnknown(format!(
                "leadership lost (now term {}, leader {})",
                self.raw.raft.term, self.raw.raft.leader_id
            ))));
        }
        let not_leader = || MetaError::NotLeader {
            leader: match self.raw.raft.leader_id {
                0 => None,
                id => self.dir.address(id),
            },
        };
        for (_, r) in self.reads.drain() {
            let _ = r.reply.send(Err(not_leader()));
        }
        for (_, r) in self.ready_reads.drain(..) {
            let _ = r.reply.send(Err(not_leader()));
        }
        if let Some((_, _, reply)) = self.conf_change.take() {
            let _ = reply.send(Err(MetaError::OutcomeUnknown("leadership lost".into())));
        }
    }

    fn fail_all(&mut self) {
        for (_, p) in self.proposals.drain() {
            let _ = p.reply.send(Err(MetaError::OutcomeUnknown(
                "the member is shutting down".into(),
            )));
        }
        for (_, r) in self.reads.drain() {
            let _ = r.reply.send(Err(MetaError::ShuttingDown));
        }
        for (_, r) in self.ready_reads.drain(..) {
            let _ = r.reply.send(Err(MetaError::ShuttingDown));
        }
    }
}
