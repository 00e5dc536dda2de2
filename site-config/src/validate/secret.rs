//! `[cluster] secret` / `secret_file`: the shared secret every node
//! presents on inter-node calls. It must be long, not the template's
//! placeholder, and readable by nobody but the file's owner.

use std::path::Path;

use crate::raw::RawCluster;

use super::Ctx;

/// Minimum length of the cluster secret, in bytes.
const MIN_SECRET_LEN: usize = 16;

/// How the template's placeholder secret starts (`change-me-…`): a
/// cluster running with it has a secret everybody knows.
const PLACEHOLDER_PREFIX: &str = "change-me";

/// `secret` or `secret_file`, exactly one, at least 16 bytes, not the
/// template's placeholder; the file it is read from (the config file for
/// an inline secret) must not be readable by group or others.
pub(super) fn secret(
    ctx: &mut Ctx<'_>,
    rc: &RawCluster,
    present: bool,
    config_file: Option<&Path>,
) -> String {
    let inline = ctx.get("cluster.secret", &rc.secret).cloned();
    let file = ctx.get("cluster.secret_file", &rc.secret_file).cloned();
    match (inline, file) {
        (Some(_), Some(_)) => {
            ctx.push(
                "cluster.secret",
                "both `secret` and `secret_file` are set (set exactly one)",
            );
            String::new()
        }
        (Some(s), None) => {
            if let Some(m) = weakness(&s) {
                ctx.push("cluster.secret", format!("the secret {m}"));
            }
            if let Some(path) = config_file {
                if let Some(m) = crate::readable_by_others(path) {
                    ctx.push(
                        "cluster.secret",
                        format!("{m}, and holds the secret inline: `chmod 600` it, or move the secret to a `secret_file` only its owner may read"),
                    );
                }
            }
            s
        }
        (None, Some(f)) => {
            let path = Path::new(&f);
            let path = match config_file.and_then(Path::parent) {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let s = text.trim().to_string();
                    if let Some(m) = weakness(&s) {
                        ctx.push(
                            "cluster.secret_file",
                            format!("the secret in {:?} {m}", path.display()),
                        );
                    }
                    if let Some(m) = crate::readable_by_others(&path) {
                        ctx.push("cluster.secret_file", format!("{m}: `chmod 600` it"));
                    }
                    s
                }
                Err(e) => {
                    ctx.push(
                        "cluster.secret_file",
                        format!("cannot read {:?}: {e}", path.display()),
                    );
                    String::new()
                }
            }
        }
        (None, None) => {
            if present && rc.secret.is_none() && rc.secret_file.is_none() {
                ctx.push(
                    "cluster.secret",
                    format!("missing: set `secret` (at least {MIN_SECRET_LEN} bytes) or `secret_file` (a file holding it)"),
                );
            }
            String::new()
        }
    }
}

/// Why `secret` is too weak to use, if it is.
fn weakness(secret: &str) -> Option<String> {
    if secret.len() < MIN_SECRET_LEN {
        return Some(format!(
            "is {} bytes long (needs at least {MIN_SECRET_LEN})",
            secret.len()
        ));
    }
    if secret.to_ascii_lowercase().starts_with(PLACEHOLDER_PREFIX) {
        return Some(
            "is the template's placeholder: generate one, e.g. with `openssl rand -hex 32`"
                .to_string(),
        );
    }
    None
}
