//! `[tls]`: how nodes authenticate and encrypt their calls to each other.
//! Either a directory of certificates (the cluster CA and one certificate
//! per node, made by `geonfs cert`), or plain TCP said out loud with
//! `insecure = true` — and, beyond loopback addresses, said twice.

use std::path::Path;

use crate::raw::RawTls;
use crate::{Node, TlsSettings, TLS_CA_CERT_FILE};

use super::Ctx;

/// `dir` or `insecure = true`, exactly one; `dir` must hold the CA
/// certificate; plain TCP between non-loopback addresses needs
/// `insecure_beyond_loopback = true` as well.
pub(super) fn tls(
    ctx: &mut Ctx<'_>,
    raw: Option<&RawTls>,
    nodes: &[Node],
    config_file: Option<&Path>,
) -> TlsSettings {
    let Some(raw) = raw else {
        ctx.push(
            "tls",
            "missing [tls] table: set `dir` (the cluster CA and node certificates, made by \
             `geonfs cert init` and `geonfs cert issue`) or `insecure = true` (plain TCP)",
        );
        return TlsSettings::default();
    };
    let dir = ctx.get("tls.dir", &raw.dir).cloned();
    let insecure = ctx.get("tls.insecure", &raw.insecure).copied();
    let beyond = ctx
        .get(
            "tls.insecure_beyond_loopback",
            &raw.insecure_beyond_loopback,
        )
        .copied()
        .unwrap_or(false);
    match (dir, insecure.unwrap_or(false)) {
        (Some(_), true) => {
            ctx.push(
                "tls.insecure",
                "both `dir` and `insecure = true` are set (set exactly one)",
            );
            TlsSettings::default()
        }
        (Some(dir), false) => {
            if beyond {
                ctx.push(
                    "tls.insecure_beyond_loopback",
                    "only means something with `insecure = true` (remove it)",
                );
            }
            let path = Path::new(&dir);
            let path = match config_file.and_then(Path::parent) {
                Some(base) if path.is_relative() => base.join(path),
                _ => path.to_path_buf(),
            };
            let ca = path.join(TLS_CA_CERT_FILE);
            if let Err(err) = std::fs::metadata(&ca) {
                ctx.push(
                    "tls.dir",
                    format!(
                        "cannot read the cluster CA certificate {:?}: {err} (make one with \
                         `geonfs cert init --dir {}`)",
                        ca.display(),
                        path.display()
                    ),
                );
            }
            TlsSettings {
                dir: Some(path),
                insecure_beyond_loopback: false,
            }
        }
        (None, true) => {
            let exposed = nodes.iter().find(|n| !n.address.ip().is_loopback());
            if let (Some(node), false) = (exposed, beyond) {
                ctx.push(
                    "tls.insecure",
                    format!(
                        "plain TCP between nodes at non-loopback addresses ({} at {}) carries \
                         VM data and the cluster secret in clear: set `dir` to use TLS, or add \
                         `insecure_beyond_loopback = true` if the network is protected \
                         otherwise",
                        node.name, node.address
                    ),
                );
            }
            TlsSettings {
                dir: None,
                insecure_beyond_loopback: beyond,
            }
        }
        (None, false) => {
            ctx.push(
                "tls.dir",
                "missing: set `dir` (the cluster CA and node certificates, made by \
                 `geonfs cert init` and `geonfs cert issue`) or `insecure = true` (plain TCP)",
            );
            TlsSettings::default()
        }
    }
}
