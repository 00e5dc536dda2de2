//! `geonfs demo`: a whole 3-site cluster on loopback in one process.
//!
//! Site `a` is 127.1.0.0/16, `b` 127.2.0.0/16, `c` 127.3.0.0/16. Each site
//! has an access server at 127.S.0.1, three core servers at 127.S.0.11-13
//! and one meta voter at 127.S.0.21; n = 3. The configuration is written to
//! `DIR/geonfs.toml` the first time and reused afterwards, so a restarted
//! demo finds everything it had.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use geonfs_rpc::{Network, NetworkOptions};
use geonfs_site_config::ClusterConfig;

use crate::node::{NodeOptions, RunningNode};

/// The gRPC port every demo node listens on (each node has its own address).
pub const DEMO_RPC_PORT: u16 = 7100;
/// The port of every demo node's Prometheus `/metrics`.
pub const DEMO_METRICS_PORT: u16 = 9100;
/// Where, in the demo's directory, its CA and certificates live.
pub const DEMO_TLS_DIR: &str = "tls";

/// The demo's configuration, with data under `dir`, TLS certificates in
/// `dir/tls` and a fresh secret.
pub fn demo_config_text(dir: &Path, secret: &str) -> String {
    let mut text = format!(
        "# geonfs demo cluster, written by `geonfs demo`; edit freely.\n\
         [cluster]\nname = \"demo\"\nreplication_factor = 3\nblock_size = \"4MiB\"\nsecret = \"{secret}\"\n\n\
         # Nodes talk TLS, with certificates `geonfs demo` made for them.\n\
         [tls]\ndir = {tls:?}\n\n\
         # The hypervisors: every loopback address, with root kept as root\n\
         # (qemu-img, nfs-cp and the kernel client run as root).\n\
         [nfs]\nallowed_clients = [\"127.0.0.0/8\"]\nno_root_squash = [\"127.0.0.0/8\"]\n\n",
        tls = dir.join(DEMO_TLS_DIR).display().to_string()
    );
    for (index, site) in ["a", "b", "c"].iter().enumerate() {
        let s = index + 1;
        text += &format!("[[site]]\nname = \"{site}\"\nsubnets = [\"127.{s}.0.0/16\"]\n\n");
    }
    for (index, site) in ["a", "b", "c"].iter().enumerate() {
        let s = index + 1;
        let mut node = |name: String, host: u8, role: &str, capacity: Option<&str>| {
            let data_dir = dir.join("data").join(&name);
            text += &format!(
                "[[node]]\nname = \"{name}\"\naddress = \"127.{s}.0.{host}:{DEMO_RPC_PORT}\"\nroles = [\"{role}\"]\nmetrics_address = \"127.{s}.0.{host}:{DEMO_METRICS_PORT}\"\n"
            );
            if role != "access" {
                text += &format!("data_dir = \"{}\"\n", data_dir.display());
            }
            if let Some(capacity) = capacity {
                text += &format!("capacity = \"{capacity}\"\n");
            }
            text += "\n";
        };
        node(format!("{site}-access"), 1, "access", None);
        for core in 1..=3u8 {
            node(
                format!("{site}-core-{core}"),
                10 + core,
                "core",
                Some("10GiB"),
            );
        }
        node(format!("{site}-meta"), 21, "meta", None);
    }
    text
}

/// How to reach each site's export: the Linux mount line, the QEMU URL,
/// the libnfs URL, and the node's `/metrics`.
pub fn mount_lines(config: &ClusterConfig, nodes: &[RunningNode]) -> Vec<String> {
    let export = &config.nfs.export_path;
    let mut lines = Vec::new();
    for node in nodes {
        let Some(access) = node.access() else {
            continue;
        };
        let addr = access.nfs_addr();
        let (ip, port) = (addr.ip(), addr.port());
        let site = node.identity().site.clone();
        lines.push(format!(
            "  site {site}: NFSv3 export {ip}:{export} (NFS and MOUNT on port {port})"
        ));
        if access.has_portmapper() {
            lines.push(format!(
                "    linux:  mount -t nfs -o vers=3 {ip}:{export} /mnt/geonfs-{site}"
            ));
            lines.push(format!(
                "    qemu:   qemu-img create -f qcow2 nfs://{ip}{export}/disk.img 10G"
            ));
        } else {
            lines.push(format!(
                "    linux:  mount -t nfs -o vers=3,tcp,port={port},mountport={port} {ip}:{export} /mnt/geonfs-{site}"
            ));
            lines.push("    qemu:   needs the portmapper on port 111 (run as root)".to_string());
        }
        lines.push(format!(
            "    libnfs: nfs-ls 'nfs://{ip}{export}/?nfsport={port}&mountport={port}'"
        ));
        if let Some(metrics) = node.metrics_endpoint() {
            lines.push(format!(
                "    metrics: curl http://{}/metrics",
                metrics.addr()
            ));
        }
    }
    lines
}

/// The demo process's network: it presents every node's certificate, and
/// the operator's for its own status probe.
fn demo_network(config: &ClusterConfig) -> anyhow::Result<Network> {
    let names = crate::cert_cli::every_identity(config);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    Ok(Network::new(NetworkOptions::from_config(config, &names))?)
}

/// Makes the demo's CA in `tls_dir` and a certificate for every node of
/// the configuration `text` and for the operator (`geonfs status` and the
/// other commands).
fn make_certificates(tls_dir: &Path, text: &str) -> anyhow::Result<()> {
    geonfs_rpc::tls::init_ca(tls_dir)?;
    // The configuration validates only once the CA exists.
    let config = ClusterConfig::from_toml_str(text)?;
    for name in crate::cert_cli::every_identity(&config) {
        geonfs_rpc::tls::issue(tls_dir, &name, false)
            .with_context(|| format!("issuing the demo's certificate for {name}"))?;
    }
    Ok(())
}

/// Writes `text` to a new file at `path` that only its owner may read (it
/// holds the cluster secret).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// How long the demo waits for every export to be ready before it prints
/// the mount lines anyway.
const EXPORTS_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs the demo until Ctrl-C / SIGTERM.
pub async fn run(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let config_path = dir.join("geonfs.toml");
    if !config_path.exists() {
        let secret = format!("{:032x}", rand::random::<u128>());
        let text = demo_config_text(&dir, &secret);
        make_certificates(&dir.join(DEMO_TLS_DIR), &text)?;
        write_private(&config_path, &text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
    }
    let config = Arc::new(ClusterConfig::load(&config_path)?);
    let network = demo_network(&config)?;
    let mut nodes = Vec::new();
    for node in &config.nodes {
        let running = RunningNode::bind_and_start(
            config.clone(),
            &node.name,
            network.clone(),
            NodeOptions::default(),
        )
        .await
        .with_context(|| format!("starting {}", node.name))?;
        nodes.push(running);
    }
    // The mount lines below are only worth printing once every export can
    // answer (the access servers wait for a meta-kvs leader first).
    let exports = nodes.iter().filter_map(|node| node.access());
    let ready = futures::future::join_all(exports.map(|access| access.wait_ready()));
    if tokio::time::timeout(EXPORTS_READY_WAIT, ready)
        .await
        .is_err()
    {
        println!(
            "geonfs demo: the exports are not connected to the metadata store after {}s; NFS calls get JUKEBOX (retry) until they are",
            EXPORTS_READY_WAIT.as_secs()
        );
    }
    println!(
        "geonfs demo: {} nodes in {} sites, config {}",
        nodes.len(),
        config.sites.len(),
        config_path.display()
    );
    for health in crate::cli::probe_nodes(&config, &network).await {
        let state = match health.answer {
            Ok((latency, _)) => format!("up ({:.2} ms)", latency.as_secs_f64() * 1e3),
            Err(why) => format!("DOWN: {why}"),
        };
        println!("  site {:<3} {:<12} {state}", health.site, health.name);
    }
    println!(
        "  status:   geonfs status --config {}",
        config_path.display()
    );
    for line in mount_lines(&config, &nodes) {
        println!("{line}");
    }
    println!("geonfs demo: running; Ctrl-C stops it");
    crate::cli::shutdown_signal().await?;
    println!("geonfs demo: stopping");
    for node in nodes {
        node.stop().await?;
    }
    println!("geonfs demo: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let text = demo_config_text(dir.path(), "0123456789abcdef0123456789abcdef");
        make_certificates(&dir.path().join(DEMO_TLS_DIR), &text).unwrap();
        let config = ClusterConfig::from_toml_str(&text).unwrap();
        // TLS by default: a certificate and a private key for every node
        // and for the operator's commands, all of them loadable.
        assert_eq!(config.tls.dir, Some(dir.path().join(DEMO_TLS_DIR)));
        let names = crate::cert_cli::every_identity(&config);
        assert_eq!(names.len(), 16);
        for name in &names {
            let key = geonfs_rpc::tls::key_path(&dir.path().join(DEMO_TLS_DIR), name);
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&key).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        // The demo's own status probe has a certificate to present: with
        // no demo running, every node is down for want of a listener.
        let network = demo_network(&config).unwrap();
        let health = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::cli::probe_nodes(&config, &network));
        for node in health {
            if let Err(why) = node.answer {
                assert!(!why.contains("TLS"), "{}: {why}", node.name);
            }
        }
        assert_eq!(config.sites.len(), 3);
        assert_eq!(config.nodes.len(), 15);
        assert_eq!(config.cluster.replication_factor, 3);
        assert_eq!(config.nfs.export_path, "/geonfs");
        assert_eq!(config.nfs.port, 2049);
        // Root clients on loopback (qemu-img, nfs-cp, the kernel client)
        // keep working under the secure defaults.
        let shown = |nets: &[_]| nets.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(shown(&config.nfs.allowed_clients), ["127.0.0.0/8"]);
        assert!(config.nfs.root_squash);
        assert_eq!(shown(&config.nfs.no_root_squash), ["127.0.0.0/8"]);
        for (s, site) in ["a", "b", "c"].iter().enumerate() {
            let access = config.node(&format!("{site}-access")).unwrap();
            assert!(access.roles.access);
            assert_eq!(
                access.address.ip().to_string(),
                format!("127.{}.0.1", s + 1)
            );
        }
        // Every node serves /metrics on its own address.
        for node in &config.nodes {
            let metrics = node.metrics_address.unwrap();
            assert_eq!(metrics.ip(), node.address.ip(), "{}", node.name);
            assert_eq!(metrics.port(), DEMO_METRICS_PORT);
        }
    }

    #[test]
    fn the_demo_config_file_is_private_and_loads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geonfs.toml");
        let secret = format!("{:032x}", rand::random::<u128>());
        let text = demo_config_text(dir.path(), &secret);
        make_certificates(&dir.path().join(DEMO_TLS_DIR), &text).unwrap();
        write_private(&path, &text).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        ClusterConfig::load(&path).unwrap();
        // Opened by others, the inline secret is refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClusterConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("may be read by group or others"), "{err}");
    }
}
