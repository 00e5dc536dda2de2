//! `geonfs relocate PATH --to SITE`: moves a file's ownership to another
//! site ahead of a planned migration, and brings the file's data current
//! there, while the file stays in use.
//!
//! Three phases, each with a progress bar on stderr:
//!
//! 1. **pre-copy** — blocks whose newest version is at the owner (or a
//!    source) are copied to SITE while the owner keeps writing;
//! 2. **handover** — SITE claims the file, fences the old owner, lists
//!    what changed during the pre-copy and becomes the owner (see
//!    `geonfs_access_server::ownership`);
//! 3. **catch-up** — the blocks written during the pre-copy are copied;
//!    then every read and write at SITE is local.
//!
//! A write at the old site after the relocation takes the file back (one
//! more handover): relocate right before the VM moves.
//!
//! `--owner-lost` is for a site that is gone (docs/ARCHITECTURE.md#invariant-5): the file is
//! taken over without the old owner's fence or data — whatever it had not
//! copied out is lost — so that the other sites can read and write it
//! again. It waits until the lost site's access servers acknowledged the
//! file's revocation or their ownership lease ran out (see
//! `geonfs_access_server::ownership::lease`), so a site that is only cut
//! off has stopped writing the file before another site writes it.

use geonfs_proto::domain::FileId;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use geonfs_access_server::namespace::{FileKind, Namespace, ROOT_ID};
use geonfs_access_server::ownership::{CatchUpProgress, Ownership};
use geonfs_block_manager::BlockClient;
use geonfs_meta_kvs::MetaClient;
use geonfs_rpc::Network;
use geonfs_site_config::{ClusterConfig, SiteId};

/// What a relocation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relocated {
    /// The file.
    pub file_id: FileId,
    /// The site that owned it before.
    pub from: String,
    /// The epoch the target site owns it at.
    pub epoch: geonfs_proto::domain::Epoch,
    /// Bytes copied before the handover.
    pub precopied_bytes: u64,
    /// Blocks copied after it (written during the pre-copy).
    pub caught_up_blocks: u64,
    /// How long the handover took (the file's writes pause this long).
    pub handover: Duration,
}

/// The file id of `path` (relative to the export's root; a leading
/// export path is accepted too).
pub async fn resolve(ns: &Namespace, export: &str, path: &str) -> anyhow::Result<u64> {
    let below = path
        .strip_prefix(export)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .unwrap_or(path);
    let mut id = ROOT_ID;
    let mut kind = FileKind::Directory;
    for name in below.split('/').filter(|n| !n.is_empty()) {
        if kind != FileKind::Directory {
            bail!("{path}: a component before {name:?} is not a directory");
        }
        let inode = ns
            .lookup(id, name.as_bytes())
            .await
            .with_context(|| format!("{path}: cannot look up {name:?}"))?;
        id = inode.id;
        kind = inode.kind;
    }
    if kind != FileKind::Regular {
        bail!("{path} is not a regular file");
    }
    Ok(id)
}

/// The id of site `name` and an address in it to call from.
pub(crate) fn site_and_address(
    config: &ClusterConfig,
    name: &str,
) -> anyhow::Result<(SiteId, IpAddr)> {
    let index = config
        .sites
        .iter()
        .position(|s| s.name == name)
        .with_context(|| {
            let names: Vec<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
            format!("no site named {name:?} (sites: {})", names.join(", "))
        })?;
    let site = SiteId(u16::try_from(index).context("too many sites")?);
    if !config.site(site).takes_writes {
        bail!("site {name} does not take writes, so it cannot own a file");
    }
    let node = config
        .nodes
        .iter()
        .filter(|n| n.site == site)
        .max_by_key(|n| n.roles.access)
        .with_context(|| format!("site {name} has no node"))?;
    Ok((site, node.address.ip()))
}

/// Relocates the file at `path` to site `to`, reporting each phase's
/// progress to `progress` (phase name, progress). With `owner_lost` the
/// owning site is declared lost: no pre-copy, and the handover does not
/// wait for it ([`Ownership::take_over_lost`]; what it had not copied out
/// is lost).
pub async fn relocate(
    config: &ClusterConfig,
    network: Network,
    path: &str,
    to: &str,
    owner_lost: bool,
    mut progress: impl FnMut(&str, CatchUpProgress),
) -> anyhow::Result<Relocated> {
    let (site, from_ip) = site_and_address(config, to)?;
    let meta = MetaClient::for_cluster(network.clone(), from_ip, config);
    let ns = Namespace::new(meta.clone());
    let file_id = FileId(resolve(&ns, &config.nfs.export_path, path).await?);
    let local = BlockClient::new(network.clone(), config, from_ip, site)?;
    let ownership = Ownership::new(meta, config, network, from_ip, local)?;
    let before = ownership.load(file_id).await?;
    let from = before
        .as_ref()
        .map_or_else(|| "(none)".to_string(), |v| v.record.site.clone());
    let precopied_bytes = if owner_lost {
        0
    } else {
        ownership
            .precopy(file_id, |p| progress("pre-copy", p))
            .await?
    };
    let started = Instant::now();
    let already_there = before
        .as_ref()
        .filter(|v| v.record.site == to && v.record.claim.is_none())
        .map(|v| v.record.epoch);
    let epoch = if owner_lost {
        ownership.take_over_lost(file_id).await?
    } else if let Some(epoch) = already_there {
        // Which of the site's access servers writes it is theirs to settle
        // (the first write at another one takes it over).
        epoch
    } else {
        ownership.acquire(file_id, None).await?
    };
    let handover = started.elapsed();
    let mut caught_up_blocks = 0;
    ownership
        .wait_caught_up(file_id, |p| {
            caught_up_blocks = p.done_blocks;
            progress("catch-up", p);
        })
        .await?;
    Ok(Relocated {
        file_id,
        from,
        epoch,
        precopied_bytes,
        caught_up_blocks,
        handover,
    })
}

/// A one-line progress bar, redrawn in place on stderr.
pub fn draw_progress(phase: &str, p: CatchUpProgress) {
    const WIDTH: u64 = 30;
    let filled = (WIDTH * p.done_blocks)
        .checked_div(p.total_blocks)
        .unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{phase:>9} [{bar}] {}/{} blocks, {:.1} MiB",
        p.done_blocks,
        p.total_blocks,
        p.copied_bytes as f64 / (1024.0 * 1024.0)
    );
    if p.finished || p.abandoned {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}
