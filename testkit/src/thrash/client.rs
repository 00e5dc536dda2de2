//! One thrasher client: a "VM" writing one file through the NFS access
//! servers, hopping between sites, and the model of what it was
//! acknowledged.
//!
//! # The model
//!
//! The client's file is `model`: every acknowledged WRITE applied, every
//! SETATTR of the size applied. A FILE_SYNC write is durable when
//! acknowledged; an UNSTABLE one is `pending` with the verifier of its
//! reply until a COMMIT answers the same verifier. A COMMIT answering
//! another verifier means the server may have lost them: the client sends
//! them again (their ranges' current contents, as a client's page cache
//! would) and commits again, until the verifiers agree. So once settled,
//! the file on the servers must be exactly `model`, at every site.
//!
//! Every call is retried (reconnecting, the server's address looked up
//! anew) until it succeeds or [`OP_DEADLINE`] passes: a fault may make a
//! call fail for a while (NFS3ERR_JUKEBOX, IO, a dead access server), and
//! a hard-mounted client keeps trying. WRITE, COMMIT and SETATTR of a size
//! are idempotent, so a retry of a call that did land changes nothing.
//! Reads and truncates settle first (a kernel client flushes before them),
//! so every read is checked against the model exactly.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::nfs_client::{nfs_fh3, stable_how, NfsConn};
use crate::rng::Rng;

/// How long one call keeps being retried before the run fails.
pub const OP_DEADLINE: Duration = Duration::from_secs(120);
/// How long one attempt of a call may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times a COMMIT may answer a new verifier in a row.
const SETTLE_ROUNDS: usize = 20;

/// Each site's NFS address now (an access server restarted elsewhere is
/// looked up again).
pub type Addresses = Arc<Mutex<BTreeMap<String, SocketAddr>>>;

/// What one client did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientStats {
    /// Calls made (each counted once, however many attempts it took).
    pub calls: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Bytes of acknowledged writes.
    pub bytes_written: u64,
    /// Bytes read and checked against the model.
    pub bytes_verified: u64,
    /// Unstable writes sent again after a verifier change.
    pub resent: u64,
    /// Times the client moved to another site (a handover on its next
    /// write).
    pub moves: u64,
}

/// One call of the client.
enum Call<'a> {
    Write(u64, &'a [u8], stable_how),
    Read(u64, u32),
    Commit,
    SetSize(u64),
    Size,
}

/// What a call answered.
enum Reply {
    Verifier([u8; 8]),
    Data(Vec<u8>),
    Size(u64),
    Done,
}

/// A client of one file.
pub struct FileClient {
    /// The file's name, for messages.
    pub name: String,
    fh: nfs_fh3,
    /// Client address per site (inside the site's subnet).
    from: BTreeMap<String, IpAddr>,
    addresses: Addresses,
    conns: BTreeMap<String, NfsConn>,
    /// The site the client talks to now.
    pub site: String,
    /// The file as acknowledged.
    pub model: Vec<u8>,
    /// Unstable writes not yet committed: (offset, length, verifier).
    pending: Vec<(u64, u64, [u8; 8])>,
    rng: Rng,
    max_size: u64,
    /// What the client did.
    pub stats: ClientStats,
    /// The client's acknowledged calls, in order, for the report of a
    /// failed check.
    history: Vec<String>,
}

impl FileClient {
    /// A client of `fh` starting at `site`, its choices drawn from `seed`.
    pub fn new(
        name: String,
        fh: nfs_fh3,
        from: BTreeMap<String, IpAddr>,
        addresses: Addresses,
        site: String,
        seed: u64,
        max_size: u64,
    ) -> Self {
        FileClient {
            name,
            fh,
            from,
            addresses,
            conns: BTreeMap::new(),
            site,
            model: Vec::new(),
            pending: Vec::new(),
            rng: Rng::new(seed),
            max_size,
            stats: ClientStats::default(),
            history: Vec::new(),
        }
    }

    /// The file's handle.
    pub fn handle(&self) -> &nfs_fh3 {
        &self.fh
    }

    /// Runs `ops` random operations; fails on a read that disagrees with
    /// the model or a call that never succeeds.
    pub async fn run(&mut self, ops: usize) -> anyhow::Result<()> {
        for _ in 0..ops {
            match self.rng.below(100) {
                0..=44 => self.random_write().await?,
                45..=59 => self.settle().await?,
                60..=67 => {
                    self.settle().await?;
                    let size = self.rng.below(self.max_size + 1);
                    self.call(&Call::SetSize(size)).await?;
                    self.model.resize(size as usize, 0);
                }
                68..=89 => self.random_read().await?,
                _ => {
                    let sites: Vec<String> = self.from.keys().cloned().collect();
                    let next = sites[self.rng.below(sites.len() as u64) as usize].clone();
                    if next != self.site {
                        self.stats.moves += 1;
                        self.site = next;
                    }
                }
            }
        }
        Ok(())
    }

    async fn random_write(&mut self) -> anyhow::Result<()> {
        let offset = self.rng.below(self.max_size);
        let len = match self.rng.below(4) {
            0 => 1 + self.rng.below(600),
            1 => 4096,
            2 => 4096 * (1 + self.rng.below(16)),
            _ => 1 + self.rng.below(300 * 1024),
        }
        .min(self.max_size - offset);
        let data = self.rng.bytes(len as usize);
        let stable = if self.rng.below(10) < 6 {
            stable_how::UNSTABLE
        } else {
            stable_how::FILE_SYNC
        };
        let Reply::Verifier(verifier) = self.call(&Call::Write(offset, &data, stable)).await?
        else {
            bail!("WRITE answered no verifier");
        };
        let end = (offset + len) as usize;
        if self.model.len() < end {
            self.model.resize(end, 0);
        }
        self.model[offset as usize..end].copy_from_slice(&data);
        if stable == stable_how::UNSTABLE {
            self.pending.push((offset, len, verifier));
        }
        self.stats.bytes_written += len;
        Ok(())
    }

    async fn random_read(&mut self) -> anyhow::Result<()> {
        self.settle().await?;
        let len = self.model.len() as u64;
        let offset = self.rng.below(len + 4096);
        let count = 1 + self.rng.below(256 * 1024) as u32;
        let Reply::Data(data) = self.call(&Call::Read(offset, count)).await? else {
            bail!("READ answered no data");
        };
        let site = self.site.clone();
        self.check(&site, offset, &data, count)
    }

    /// Checks `data`, read at `offset` (asked for `count` bytes) at `site`,
    /// against the model.
    fn check(&mut self, site: &str, offset: u64, data: &[u8], count: u32) -> anyhow::Result<()> {
        let len = self.model.len() as u64;
        let want: &[u8] = if offset >= len {
            &[]
        } else {
            &self.model[offset as usize..(offset + u64::from(count)).min(len) as usize]
        };
        self.stats.bytes_verified += data.len() as u64;
        if data == want {
            return Ok(());
        }
        let differ = data.iter().zip(want).filter(|(g, w)| g != w).count();
        let zeros = data
            .iter()
            .zip(want)
            .filter(|(g, w)| **g == 0 && **w != 0)
            .count();
        let first = data.iter().zip(want).position(|(g, w)| g != w);
        let last = data.iter().zip(want).rposition(|(g, w)| g != w);
        bail!(
            "{} at site {site}: READ of {count} bytes at {offset} returned {} bytes, the model \
             has {}; {differ} bytes differ ({zeros} of them zeros where data was acknowledged), \
             from offset {} to {}; the client's calls: {}",
            self.name,
            data.len(),
            want.len(),
            first.map_or_else(
                || "(length)".to_string(),
                |i| (offset + i as u64).to_string()
            ),
            last.map_or_else(
                || "(length)".to_string(),
                |i| (offset + i as u64).to_string()
            ),
            self.history.join("; ")
        )
    }

    /// COMMITs until every unstable write is covered: writes whose
    /// verifier the COMMIT does not answer are sent again.
    pub async fn settle(&mut self) -> anyhow::Result<()> {
        for _ in 0..SETTLE_ROUNDS {
            if self.pending.is_empty() {
                return Ok(());
            }
            let Reply::Verifier(now) = self.call(&Call::Commit).await? else {
                bail!("COMMIT answered no verifier");
            };
            if self.pending.iter().all(|&(_, _, v)| v == now) {
                self.pending.clear();
                return Ok(());
            }
            let pending = std::mem::take(&mut self.pending);
            for (offset, len, _) in pending {
                let end = (offset + len).min(self.model.len() as u64);
                if end <= offset {
                    continue;
                }
                let data = self.model[offset as usize..end as usize].to_vec();
                let Reply::Verifier(verifier) = self
                    .call(&Call::Write(offset, &data, stable_how::UNSTABLE))
                    .await?
                else {
                    bail!("WRITE answered no verifier");
                };
                self.stats.resent += 1;
                self.pending.push((offset, end - offset, verifier));
            }
        }
        bail!(
            "{}: COMMIT answered a new verifier {SETTLE_ROUNDS} times in a row",
            self.name
        )
    }

    /// Reads the whole file at `site` and checks it and its size against
    /// the model (the client must be settled).
    pub async fn verify_at(&mut self, site: &str) -> anyhow::Result<()> {
        let home = std::mem::replace(&mut self.site, site.to_string());
        let result = self.verify_here().await;
        self.site = home;
        result
    }

    async fn verify_here(&mut self) -> anyhow::Result<()> {
        let site = self.site.clone();
        let Reply::Size(size) = self.call(&Call::Size).await? else {
            bail!("GETATTR answered no size");
        };
        if size != self.model.len() as u64 {
            bail!(
                "{} at site {site}: size {size}, the model has {}",
                self.name,
                self.model.len()
            );
        }
        let mut offset = 0;
        while offset < size {
            let count = (size - offset).min(1 << 20) as u32;
            let Reply::Data(data) = self.call(&Call::Read(offset, count)).await? else {
                bail!("READ answered no data");
            };
            self.check(&site, offset, &data, count)?;
            if data.is_empty() {
                break;
            }
            offset += data.len() as u64;
        }
        Ok(())
    }

    /// Makes `call` at the current site until it succeeds, reconnecting
    /// after a failure, for at most [`OP_DEADLINE`].
    async fn call(&mut self, call: &Call<'_>) -> anyhow::Result<Reply> {
        self.stats.calls += 1;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(call)).await;
            let err = match attempt {
                Ok(Ok(reply)) => {
                    self.record(call, &reply);
                    return Ok(reply);
                }
                Ok(Err(err)) => err,
                Err(_) => anyhow::anyhow!("no answer within {ATTEMPT_TIMEOUT:?}"),
            };
            // A new connection next time: the old one may be dead.
            self.conns.remove(&self.site);
            self.stats.retries += 1;
            if started.elapsed() > OP_DEADLINE {
                return Err(err.context(format!(
                    "{} at site {}: a call kept failing for {OP_DEADLINE:?}",
                    self.name, self.site
                )));
            }
            tracing::debug!(file = %self.name, site = %self.site, "call failed, retrying: {err:#}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Adds an acknowledged call to the history.
    fn record(&mut self, call: &Call<'_>, reply: &Reply) {
        let what = match (call, reply) {
            (Call::Write(offset, data, stable), Reply::Verifier(v)) => format!(
                "WRITE {offset}+{} {} verf {:x}",
                data.len(),
                if *stable == stable_how::UNSTABLE {
                    "unstable"
                } else {
                    "sync"
                },
                u64::from_be_bytes(*v)
            ),
            (Call::Commit, Reply::Verifier(v)) => {
                format!("COMMIT verf {:x}", u64::from_be_bytes(*v))
            }
            (Call::SetSize(size), _) => format!("SETATTR size {size}"),
            (Call::Read(offset, count), Reply::Data(d)) => {
                format!("READ {offset}+{count} got {}", d.len())
            }
            (Call::Size, Reply::Size(size)) => format!("GETATTR size {size}"),
            _ => "?".to_string(),
        };
        self.history.push(format!("{}:{what}", self.site));
    }

    async fn attempt(&mut self, call: &Call<'_>) -> anyhow::Result<Reply> {
        let site = self.site.clone();
        if !self.conns.contains_key(&site) {
            let to = self
                .addresses
                .lock()
                .map_err(|_| anyhow::anyhow!("address book poisoned"))?
                .get(&site)
                .copied()
                .with_context(|| format!("no access server at site {site}"))?;
            let from = *self.from.get(&site).context("no client address")?;
            self.conns
                .insert(site.clone(), NfsConn::connect(from, to).await?);
        }
        let conn = self.conns.get_mut(&site).context("no connection")?;
        let fh = &self.fh;
        Ok(match *call {
            Call::Write(offset, data, stable) => {
                Reply::Verifier(conn.write(fh, offset, data, stable).await?)
            }
            Call::Read(offset, count) => Reply::Data(conn.read(fh, offset, count).await?),
            Call::Commit => Reply::Verifier(conn.commit(fh).await?),
            Call::SetSize(size) => {
                conn.set_size(fh, size).await?;
                Reply::Done
            }
            Call::Size => Reply::Size(conn.size(fh).await?),
        })
    }
}
