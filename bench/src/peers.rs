//! The NFS servers benchmarks compare geonfs with, started and stopped for
//! one run: NFS-Ganesha from `shared/tools/ganesha-baseline` (a directory
//! of this disk), and the `nfs3_server` crate's in-memory file system
//! (`MemFs`, its own dispatcher over nothing but memory), plus a
//! per-address portmapper from `shared/tools/portmap` for servers that do
//! not answer port 111 themselves (QEMU always asks it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use nfs3_server::memfs::MemFs;
use nfs3_server::tcp::{NFSTcp, NFSTcpListener};

/// Runs `program args`, returning stdout+stderr, failing with them.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{program} {}: {text}", args.join(" "));
    }
    Ok(text)
}

/// NFS-Ganesha exporting a fresh directory under /var/tmp on `addr`.
#[derive(Debug)]
pub struct Ganesha {
    /// `nfs://ADDR/EXPORT`.
    pub url: String,
    /// The NFS port.
    pub nfs_port: u16,
    /// The MOUNT port.
    pub mount_port: u16,
    /// The exported directory (its path is the export path).
    pub export: PathBuf,
    tools: PathBuf,
    _dir: tempfile::TempDir,
}

/// A `KEY=VALUE` assignment of ganesha-baseline/start.sh's `GANESHA_*` line.
fn assignment(line: &str, key: &str) -> anyhow::Result<String> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .with_context(|| format!("no {key} in {line:?}"))
}

fn script(tools: &Path, path: &str) -> String {
    tools.join(path).display().to_string()
}

impl Ganesha {
    /// Starts Ganesha (and its portmapper) on `addr` with the tools in
    /// `tools` (`shared/tools`).
    pub fn start(tools: &Path, addr: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("gexport-")
            .tempdir_in("/var/tmp")?;
        let export = dir.path().to_path_buf();
        let out = run(
            &script(tools, "ganesha-baseline/start.sh"),
            &[&export.display().to_string(), addr],
        )?;
        let last = out
            .lines()
            .find(|line| line.contains("GANESHA_URL="))
            .context("ganesha-baseline/start.sh printed no GANESHA_* line")?;
        let port = |key| -> anyhow::Result<u16> {
            assignment(last, key)?
                .parse()
                .with_context(|| format!("{key} is not a port"))
        };
        Ok(Ganesha {
            url: assignment(last, "GANESHA_URL")?,
            nfs_port: port("GANESHA_NFS_PORT")?,
            mount_port: port("GANESHA_MOUNT_PORT")?,
            export,
            tools: tools.to_path_buf(),
            _dir: dir,
        })
    }

    /// Stops Ganesha and its portmapper.
    pub fn stop(self) {
        if let Err(err) = run(&script(&self.tools, "ganesha-baseline/stop.sh"), &[]) {
            eprintln!("stopping Ganesha: {err:#}");
        }
    }
}

/// A portmapper on `ip`:111 answering GETPORT with `port` for NFS and
/// MOUNT, stopped on drop.
#[derive(Debug)]
pub struct Portmap {
    tools: PathBuf,
    ip: String,
}

impl Portmap {
    /// Starts it.
    pub fn start(tools: &Path, ip: &str, port: u16) -> anyhow::Result<Self> {
        run(
            &script(tools, "portmap/start.sh"),
            &[&format!("{ip}={port}")],
        )?;
        Ok(Portmap {
            tools: tools.to_path_buf(),
            ip: ip.to_string(),
        })
    }
}

impl Drop for Portmap {
    fn drop(&mut self) {
        let _ = run(&script(&self.tools, "portmap/stop.sh"), &[&self.ip]);
    }
}

/// `nfs3_server`'s in-memory file system served by its own dispatcher on
/// `ip` (port chosen by the system), export `/memfs`; the NFS port (MOUNT
/// on the same port). Serves until the runtime ends.
pub async fn start_memfs(ip: &str) -> anyhow::Result<u16> {
    let mut listener = NFSTcpListener::bind(&format!("{ip}:0"), MemFs::default())
        .await
        .with_context(|| format!("nfs3_server cannot bind {ip}"))?;
    listener.with_export_name("/memfs");
    let port = listener.get_listen_port();
    tokio::spawn(async move {
        if let Err(err) = listener.handle_forever().await {
            eprintln!("nfs3_server stopped: {err}");
        }
    });
    Ok(port)
}

/// The three servers of a comparison, in the order of its columns.
pub const COMPARED: [&str; 3] = ["geonfs", "nfs3_server", "ganesha"];

/// A table for the medians of [`COMPARED`] and their ratios to Ganesha.
pub fn comparison_table() -> crate::report::Table {
    crate::report::Table::new(
        &[
            "metric",
            COMPARED[0],
            COMPARED[1],
            COMPARED[2],
            "geonfs/ganesha",
            "nfs3_server/ganesha",
        ],
        1,
    )
}

/// Adds `metric`'s medians (`[geonfs, nfs3_server, ganesha]`, printed with
/// `decimals`) and ratios to `table`; returns the same as a JSON object.
pub fn comparison_row(
    table: &mut crate::report::Table,
    metric: &str,
    medians: [f64; 3],
    decimals: usize,
) -> serde_json::Value {
    use crate::report::{json_num, ratio};
    let [geonfs, memfs, ganesha] = medians;
    table.row(vec![
        metric.to_string(),
        format!("{geonfs:.decimals$}"),
        format!("{memfs:.decimals$}"),
        format!("{ganesha:.decimals$}"),
        format!("{:.3}x", ratio(geonfs, ganesha)),
        format!("{:.3}x", ratio(memfs, ganesha)),
    ]);
    let mut row = serde_json::Map::new();
    row.insert("metric".into(), metric.into());
    for (peer, median) in COMPARED.iter().zip(medians) {
        row.insert((*peer).into(), json_num(median));
    }
    row.insert("geonfs_ratio".into(), json_num(ratio(geonfs, ganesha)));
    row.insert("nfs3_server_ratio".into(), json_num(ratio(memfs, ganesha)));
    row.into()
}
