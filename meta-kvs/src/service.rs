//! The gRPC services of a meta member (`MetaKv`, `MetaAdmin`) and the handle
//! they use to talk to the driver.

use std::net::SocketAddr;
use std::time::Duration;

use geonfs_proto::domain::{check_key, KeyScan};
use geonfs_proto::meta::membership_request::Change;
use geonfs_proto::meta::meta_admin_server::MetaAdmin;
use geonfs_proto::meta::meta_kv_server::MetaKv;
use geonfs_proto::meta::*;
use raft::eraftpb::ConfState;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::driver::{DriverMsg, MembershipChange, ReadOp, ReadReply, StatusInfo};
use crate::error::MetaError;
use crate::ids::Directory;
use crate::storage::ApplyOutcome;
use crate::Command;

/// A handle to a member's driver.
#[derive(Clone)]
pub struct DriverHandle {
    tx: mpsc::Sender<DriverMsg>,
    timeout: Duration,
    dir: Directory,
}

impl DriverHandle {
    /// A handle over the driver's input.
    pub fn new(tx: mpsc::Sender<DriverMsg>, timeout: Duration, dir: Directory) -> Self {
        DriverHandle { tx, timeout, dir }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, MetaError>>) -> DriverMsg,
        on_timeout: impl FnOnce() -> MetaError,
    ) -> Result<T, MetaError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| MetaError::ShuttingDown)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(on_timeout()),
            Ok(Err(_)) => Err(MetaError::ShuttingDown),
            Ok(Ok(result)) => result,
        }
    }

    /// Proposes a command and waits until it is applied.
    pub async fn propose(&self, cmd: Command) -> Result<ApplyOutcome, MetaError> {
        self.call(
            |tx| DriverMsg::Propose(cmd, tx),
            || MetaError::OutcomeUnknown("no result before the request timeout".into()),
        )
        .await
    }

    /// A linearizable read.
    pub async fn read(&self, op: ReadOp) -> Result<ReadReply, MetaError> {
        self.call(
            |tx| DriverMsg::Read(op, tx),
            || MetaError::Timeout("read index not confirmed".into()),
        )
        .await
    }

    /// A membership change.
    pub async fn change(
        &self,
        change: MembershipChange,
        name: String,
        addr: Option<SocketAddr>,
    ) -> Result<ConfState, MetaError> {
        self.call(
            |tx| DriverMsg::ConfChange(change, name, addr, tx),
            || MetaError::OutcomeUnknown("membership change not applied in time".into()),
        )
        .await
    }

    /// The member's status.
    pub async fn status(&self) -> Result<StatusInfo, MetaError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::Status(tx))
            .await
            .map_err(|_| MetaError::ShuttingDown)?;
        rx.await.map_err(|_| MetaError::ShuttingDown)
    }

    fn members(&self, voters: &[u64], learners: &[u64]) -> Vec<Member> {
        let one = |id: u64, voter: bool| {
            let peer = self.dir.get(id);
            Member {
                id,
                name: peer.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                address: peer.map(|p| p.address.to_string()).unwrap_or_default(),
                voter,
            }
        };
        voters
            .iter()
            .map(|id| one(*id, true))
            .chain(learners.iter().map(|id| one(*id, false)))
            .collect()
    }
}

/// The `MetaKv` service.
pub struct MetaKvService {
    handle: DriverHandle,
}

impl MetaKvService {
    /// Over a driver handle.
    pub fn new(handle: DriverHandle) -> Self {
        MetaKvService { handle }
    }
}

fn unexpected(what: &str, outcome: ApplyOutcome) -> MetaError {
    MetaError::InvalidArgument(format!("unexpected outcome for {what}: {outcome:?}"))
}

#[tonic::async_trait]
impl MetaKv for MetaKvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let req = request.into_inner();
        check_key("key", &req.key).map_err(MetaError::from)?;
        match self.handle.read(ReadOp::Get(req.key)).await? {
            ReadReply::Value(kv) => Ok(Response::new(GetReply {
                found: kv.is_some(),
                kv,
            })),
            ReadReply::Range(..) => Err(MetaError::InvalidArgument("bad read reply".into()).into()),
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutReply>, Status> {
        let req = request.into_inner();
        let cmd = Command::put(0, req.key, req.value).map_err(MetaError::from)?;
        match self.handle.propose(cmd).await? {
            ApplyOutcome::Put { version } => Ok(Response::new(PutReply { version })),
            other => Err(unexpected("put", other).into()),
        }
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteReply>, Status> {
        let req = request.into_inner();
        let cmd = Command::delete(0, req.key).map_err(MetaError::from)?;
        match self.handle.propose(cmd).await? {
            ApplyOutcome::Delete { existed } => Ok(Response::new(DeleteReply { existed })),
            other => Err(unexpected("delete", other).into()),
        }
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanReply>, Status> {
        let scan = KeyScan::try_from(request.into_inner()).map_err(MetaError::from)?;
        match self.handle.read(ReadOp::Scan(scan)).await? {
            ReadReply::Range(kvs, more) => Ok(Response::new(ScanReply { kvs, more })),
            ReadReply::Value(_) => Err(MetaError::InvalidArgument("bad read reply".into()).into()),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnReply>, Status> {
        let cmd = Command::txn(0, request.into_inner()).map_err(MetaError::from)?;
        match self.handle.propose(cmd).await? {
            ApplyOutcome::Txn { succeeded, version } => {
                Ok(Response::new(TxnReply { succeeded, version }))
            }
            other => Err(unexpected("txn", other).into()),
        }
    }
}

/// The `MetaAdmin` service.
pub struct MetaAdminService {
    handle: DriverHandle,
}

impl MetaAdminService {
    /// Over a driver handle.
    pub fn new(handle: DriverHandle) -> Self {
        MetaAdminService { handle }
    }
}

fn status_reply(handle: &DriverHandle, s: &StatusInfo) -> StatusReply {
    StatusReply {
        id: s.id,
        term: s.term,
        leader_id: s.leader_id,
        commit_index: s.commit,
        applied_index: s.applied,
        members: handle.members(&s.voters, &s.learners),
    }
}

#[tonic::async_trait]
impl MetaAdmin for MetaAdminService {
    async fn change_membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let req = request.into_inner();
        let change = match req.change() {
            Change::AddVoter => MembershipChange::AddVoter,
            Change::PromoteLearner => MembershipChange::PromoteLearner,
            Change::AddLearner => MembershipChange::AddLearner,
            Change::Remove => MembershipChange::Remove,
            Change::Unspecified => {
                return Err(MetaError::InvalidArgument("change must be set".into()).into())
            }
        };
        let member = req
            .member
            .ok_or_else(|| MetaError::InvalidArgument("member must be set".into()))?;
        if member.name.is_empty() {
            return Err(MetaError::InvalidArgument("member.name must not be empty".into()).into());
        }
        let addr = if member.address.is_empty() {
            None
        } else {
            Some(member.address.parse::<SocketAddr>().map_err(|err| {
                MetaError::InvalidArgument(format!("member.address {:?}: {err}", member.address))
            })?)
        };
        if addr.is_none()
            && change != MembershipChange::Remove
            && self
                .handle
                .dir
                .get(crate::ids::raft_id(&member.name))
                .is_none()
        {
            return Err(MetaError::InvalidArgument(
                "member.address is required for a new member".into(),
            )
            .into());
        }
        let cs = self.handle.change(change, member.name, addr).await?;
        Ok(Response::new(MembershipReply {
            members: self.handle.members(&cs.voters, &cs.learners),
        }))
    }

    /// The members as the leader sees them (NotLeader elsewhere).
    async fn members(
        &self,
        _: Request<MembersRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let s = self.handle.status().await?;
        if s.leader_id != s.id {
            // Only the leader's view is current; clients follow the hint.
            return Err(MetaError::NotLeader {
                leader: s.leader_addr,
            }
            .into());
        }
        Ok(Response::new(MembershipReply {
            members: self.handle.members(&s.voters, &s.learners),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let s = self.handle.status().await?;
        Ok(Response::new(status_reply(&self.handle, &s)))
    }
}
