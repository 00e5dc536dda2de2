//! [`MetaClient`]: calls meta-kvs on the leader, following leader hints,
//! rotating through endpoints with exponential backoff, within a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use geonfs_proto::meta::membership_request::Change;
use geonfs_proto::meta::meta_admin_client::MetaAdminClient;
use geonfs_proto::meta::meta_kv_client::MetaKvClient;
use geonfs_proto::meta::*;
use geonfs_rpc::{Network, RpcChannel};
use geonfs_site_config::ClusterConfig;
use tonic::{Code, Status};

use crate::error::{MetaError, LEADER_HEADER, OUTCOME_HEADER};

/// Default overall deadline of one call.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// A meta-kvs client. Clones share the leader hint and the connections.
#[derive(Clone, Debug)]
pub struct MetaClient {
    network: Network,
    from: IpAddr,
    endpoints: Vec<SocketAddr>,
    leader: Arc<Mutex<Option<SocketAddr>>>,
    /// One channel (one HTTP/2 connection, dialled lazily) per member,
    /// kept across calls; dropped after a transport failure so the next
    /// attempt dials afresh. (A cut link severs the connection, so fault
    /// injection still applies to a kept channel.)
    channels: Arc<Mutex<HashMap<SocketAddr, RpcChannel>>>,
    deadline: Duration,
    /// How long one attempt waits for its answer.
    attempt: Duration,
}

/// Whether a failed call certainly did not reach a handler.
fn not_sent(status: &Status) -> bool {
    if status.code() == Code::FailedPrecondition {
        return true; // NotLeader: nothing was proposed
    }
    if status.metadata().get(OUTCOME_HEADER).is_some() {
        return false;
    }
    let msg = status.message();
    status.code() == Code::Unavailable
        && (msg.contains("is cut")
            || msg.contains("request ") && msg.contains("dropped (fault injection)")
            || msg.contains("connect")
            || msg.contains("refused"))
}

impl MetaClient {
    /// A client calling from `from` to the meta members at `endpoints`.
    pub fn new(network: Network, from: IpAddr, endpoints: Vec<SocketAddr>) -> Self {
        MetaClient {
            network,
            from,
            endpoints,
            leader: Arc::new(Mutex::new(None)),
            channels: Arc::new(Mutex::new(HashMap::new())),
            deadline: DEFAULT_DEADLINE,
            attempt: ATTEMPT_TIMEOUT,
        }
    }

    /// A client calling from `from` to every meta node of `config`, its
    /// deadline and attempt timeout from the inter-site round trip
    /// ([`geonfs_site_config::MetaTiming`]).
    pub fn for_cluster(network: Network, from: IpAddr, config: &ClusterConfig) -> Self {
        let endpoints = config
            .nodes
            .iter()
            .filter(|n| n.roles.meta)
            .map(|n| n.address)
            .collect();
        let timing = config.meta_timing();
        let mut client = Self::new(network, from, endpoints);
        client.deadline = timing.call_deadline();
        client.attempt = timing.call_attempt();
        client
    }

    /// Sets the overall deadline of each call.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    fn leader(&self) -> Option<SocketAddr> {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_leader(&self, addr: Option<SocketAddr>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    /// The kept channel to `target`, made if there is none.
    fn channel(&self, target: SocketAddr) -> Result<RpcChannel, MetaError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&target) {
            return Ok(channel.clone());
        }
        let channel = self
            .network
            .channel(self.from, target)
            .map_err(|e| MetaError::Rpc(e.into()))?;
        channels.insert(target, channel.clone());
        Ok(channel)
    }

    /// Forgets the channel to `target` (its connection failed).
    fn drop_channel(&self, target: SocketAddr) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&target);
    }

    async fn call<T, F, Fut>(&self, idempotent: bool, f: F) -> Result<T, MetaError>
    where
        F: Fn(RpcChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        if self.endpoints.is_empty() {
            return Err(MetaError::InvalidArgument("no meta endpoints".into()));
        }
        let start = Instant::now();
        let mut rotate = 0usize;
        let mut backoff = Duration::from_millis(20);
        let mut last_error = String::from("no attempt");
        loop {
            let remaining = self.deadline.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                return Err(MetaError::Timeout(format!(
                    "no meta leader answered within {:?}; last error: {last_error}",
                    self.deadline
                )));
            }
            let target = self.leader().unwrap_or_else(|| {
                rotate += 1;
                self.endpoints[rotate % self.endpoints.len()]
            });
            let channel = self.channel(target)?;
            let result = tokio::time::timeout(remaining.min(self.attempt), f(channel)).await;
            let status = match result {
                Ok(Ok(reply)) => {
                    self.set_leader(Some(target));
                    return Ok(reply.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!("no answer from {target}")),
            };
            last_error = format!("{target}: {status}");
            match status.code() {
                Code::FailedPrecondition => {
                    let hint = status
                        .metadata()
                        .get(LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<SocketAddr>().ok());
                    self.set_leader(hint);
                    if hint == Some(target) || hint.is_none() {
                        tokio::time::sleep(backoff.min(remaining)).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Cancelled
                | Code::Aborted => {
                    if status.code() != Code::Aborted {
                        self.drop_channel(target);
                    }
                    if !idempotent && !not_sent(&status) {
                        return Err(MetaError::OutcomeUnknown(last_error));
                    }
                    self.set_leader(None);
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                _ => return Err(MetaError::Rpc(status)),
            }
        }
    }

    /// The value of `key`.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<KeyValue>, MetaError> {
        let key = key.into();
        let reply = self
            .call(true, |ch| {
                let key = key.clone();
                async move { MetaKvClient::new(ch).get(GetRequest { key }).await }
            })
            .await?;
        Ok(if reply.found { reply.kv } else { None })
    }

    /// Sets `key`; returns its new version. Not retried once it may have
    /// reached the leader (a re-applied put could overwrite a later write of
    /// another client): an unknown outcome is [`MetaError::OutcomeUnknown`].
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64, MetaError> {
        let (key, value) = (key.into(), value.into());
        let reply = self
            .call(false, |ch| {
                let req = PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                };
                async move { MetaKvClient::new(ch).put(req).await }
            })
            .await?;
        Ok(reply.version)
    }

    /// Removes `key`; returns whether it existed. Not retried once it may
    /// have reached the leader (a re-applied delete could remove a later
    /// write of another client): an unknown outcome is
    /// [`MetaError::OutcomeUnknown`].
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool, MetaError> {
        let key = key.into();
        let reply = self
            .call(false, |ch| {
                let key = key.clone();
                async move { MetaKvClient::new(ch).delete(DeleteRequest { key }).await }
            })
            .await?;
        Ok(reply.existed)
    }

    /// Up to `limit` entries of `[start, end)` (`end` empty = to the end).
    pub async fn scan(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: u32,
    ) -> Result<(Vec<KeyValue>, bool), MetaError> {
        let (start, end) = (start.into(), end.into());
        let reply = self
            .call(true, |ch| {
                let req = ScanRequest {
                    start: start.clone(),
                    end: end.clone(),
                    limit,
                };
                async move { MetaKvClient::new(ch).scan(req).await }
            })
            .await?;
        Ok((reply.kvs, reply.more))
    }

    /// A conditional transaction. Not retried once it may have reached the
    /// leader: an unknown outcome is [`MetaError::OutcomeUnknown`].
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnReply, MetaError> {
        self.call(false, |ch| {
            let req = req.clone();
            async move { MetaKvClient::new(ch).txn(req).await }
        })
        .await
    }

    /// Applies one membership change on the leader; the members after it.
    /// A change that may have been applied is not retried (its outcome is
    /// then [`MetaError::OutcomeUnknown`]).
    pub async fn change_membership(
        &self,
        change: Change,
        member: Member,
    ) -> Result<Vec<Member>, MetaError> {
        let reply = self
            .call(false, |ch| {
                let req = MembershipRequest {
                    change: change as i32,
                    member: Some(member.clone()),
                };
                async move { MetaAdminClient::new(ch).change_membership(req).await }
            })
            .await?;
        Ok(reply.members)
    }

    /// The current members, as the leader sees them.
    pub async fn members(&self) -> Result<Vec<Member>, MetaError> {
        let reply = self
            .call(true, |ch| async move {
                MetaAdminClient::new(ch).members(MembersRequest {}).await
            })
            .await?;
        Ok(reply.members)
    }
}
