//! Deletes on every core of the client's site: one block, or a deleted
//! range (truncate, remove: one call per core whatever the file's size;
//! the core server's `store/delete.rs` has the rule).

use std::future::Future;

use geonfs_proto::core as wire;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::domain::{BlockId, DeletedRange, Epoch, FileId, Version};
use geonfs_rpc::RpcChannel;

use super::{classify, BlockClient, CopyError};
use crate::BlockError;

impl BlockClient {
    /// Deletes `block` from every core of this client's site (in parallel)
    /// where its stored version is at most `up_to_version`: a copy written
    /// later (a newer version) is kept. Each core's delete is durable when
    /// it answers. Returns how many cores deleted a copy.
    ///
    /// Every core of the site is asked, not only the block's pair: after a
    /// failover a copy may live on any of them. Fails if any core cannot be
    /// asked — a copy left on it could come back (a later read takes the
    /// site's newest copy), so the caller must retry. Copies in other sites
    /// are not touched here. Not checked against ownership fences
    /// ([`BlockClient::delete_as`] without an epoch).
    pub async fn delete(
        &self,
        block: BlockId,
        up_to_version: Version,
    ) -> Result<usize, BlockError> {
        self.delete_as(block, up_to_version, None).await
    }

    /// [`BlockClient::delete`] by a caller at ownership epoch `owner_epoch`
    /// of the block's file (`None`: not checked): fails with
    /// [`BlockError::Fenced`] when any core's fence for the file is newer.
    pub async fn delete_as(
        &self,
        block: BlockId,
        up_to_version: Version,
        owner_epoch: Option<Epoch>,
    ) -> Result<usize, BlockError> {
        let _pass = self.admit(block.file_id, owner_epoch).await?;
        self.forget_version(block);
        let request = wire::DeleteRequest {
            block: Some(block.into()),
            up_to_version: up_to_version.0,
            owner_epoch: Epoch::to_wire(owner_epoch),
            trim: false,
        };
        let deleted = self
            .on_every_core(block.file_id, |mut client| async move {
                Ok(client.delete(request).await?.into_inner().deleted)
            })
            .await?;
        Ok(deleted.into_iter().filter(|&deleted| deleted).count())
    }

    /// Deletes blocks `range.from..range.until` of `file_id` up to
    /// `range.version` on every core of this client's site and has each
    /// record the range, so that no older copy is ever written into it
    /// (see [`BlockClient::delete`] for why every core, and why any failure
    /// fails the call). Returns how many stored blocks the cores removed.
    /// `owner_epoch` as in [`BlockClient::delete_as`].
    pub async fn delete_range_as(
        &self,
        file_id: FileId,
        range: DeletedRange,
        owner_epoch: Option<Epoch>,
    ) -> Result<u64, BlockError> {
        if range.from >= range.until {
            return Ok(0);
        }
        let _pass = self.admit(file_id, owner_epoch).await?;
        self.forget_versions_in(file_id, range);
        let request = wire::DeleteRangeRequest {
            file_id: file_id.0,
            from_index: range.from,
            until_index: range.until,
            up_to_version: range.version.0,
            owner_epoch: Epoch::to_wire(owner_epoch),
        };
        let deleted = self
            .on_every_core(file_id, |mut client| async move {
                Ok(client.delete_range(request).await?.into_inner().deleted)
            })
            .await?;
        Ok(deleted.into_iter().sum())
    }

    /// Runs `call` against every core of this client's site in parallel
    /// and returns every answer, or the first failure (a fenced refusal
    /// before any other). Cores that answer are marked alive; cores whose
    /// failure looks like unreachability are marked suspect.
    async fn on_every_core<T, F, Fut>(&self, file_id: FileId, call: F) -> Result<Vec<T>, BlockError>
    where
        F: Fn(CoreDataClient<RpcChannel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let cores = self.inner.placement.cores(self.inner.site);
        let calls = cores.iter().map(|node| {
            let call = &call;
            async move {
                match call(self.client(node)?).await {
                    Ok(answer) => {
                        self.inner.liveness.alive(&node.name);
                        Ok(answer)
                    }
                    Err(status) => {
                        if let CopyError::Retry { suspect: true, .. } =
                            classify(&node.name, status.clone())
                        {
                            self.failed(&node.name, true);
                        }
                        Err(BlockError::from_status(&node.name, file_id, status))
                    }
                }
            }
        });
        let mut answers = Vec::with_capacity(cores.len());
        let mut first_error = None;
        for result in futures::future::join_all(calls).await {
            match result {
                Ok(answer) => answers.push(answer),
                // A fenced refusal is the answer that matters most.
                Err(err) if err.is_fenced() => return Err(err),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(answers),
        }
    }
}
