//! TLS between nodes: TLS 1.3 with mutual authentication on every
//! inter-node connection (see docs/ARCHITECTURE.md, "Security").
//!
//! Every node holds a certificate from the cluster's own CA whose DNS name
//! is the node's name. A connection stands only when each end's
//! certificate chains to that CA *and* names a node the configuration
//! places at the other end's address:
//! - the client expects the name of the node configured at the address it
//!   dials (rustls's webpki server verifier checks chain and name);
//! - the server checks the client's chain with webpki's client verifier,
//!   then its name against the nodes configured at the connection's source
//!   address. The [`OPERATOR`] certificate (what `geonfs` commands present)
//!   is accepted from any address.

mod issue;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

pub use issue::{cert_path, init_ca, issue, key_path, CA_KEY_FILE};

use crate::RpcError;

/// The name of the certificate `geonfs` commands present (status,
/// failover, relocate, …): accepted by every node from any address.
pub const OPERATOR: &str = geonfs_site_config::TLS_OPERATOR_NAME;

/// How long a server waits for a client to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The identities a process holds and whom it accepts: built once per
/// process by [`crate::Network::new`] when the configuration has a `[tls]
/// dir`.
#[derive(Debug)]
pub struct ClusterTls {
    clients: HashMap<String, Arc<ClientConfig>>,
    servers: HashMap<String, Arc<ServerConfig>>,
    /// Node names by configured address.
    node_at: HashMap<SocketAddr, String>,
    /// Node names by configured IP (several nodes may share a host).
    nodes_on: HashMap<IpAddr, Vec<String>>,
}

/// Why a TLS connection was refused, as the refusal metric labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The handshake failed: no TLS, another CA, no client certificate.
    Handshake,
    /// The handshake did not finish in time.
    Timeout,
    /// The caller hung up during the handshake (it gave up, its link was
    /// cut, it died): no verdict on its certificate.
    Abandoned,
    /// The certificate is the CA's but names no node at the peer's address.
    Name,
}

impl Refusal {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Handshake => "handshake",
            Refusal::Timeout => "timeout",
            Refusal::Name => "name",
            Refusal::Abandoned => "abandoned",
        }
    }
}

impl ClusterTls {
    /// Loads the CA certificate from `dir` and each of `identities`'s
    /// certificate and key; `nodes` are the configured (name, address)
    /// pairs.
    pub fn load(
        dir: &Path,
        identities: &[String],
        nodes: &[(String, SocketAddr)],
    ) -> Result<Self, RpcError> {
        let provider = Arc::new(provider());
        let ca_file = dir.join(geonfs_site_config::TLS_CA_CERT_FILE);
        let mut roots = RootCertStore::empty();
        for cert in read_certs(&ca_file)? {
            roots.add(cert).map_err(|err| RpcError::TlsFile {
                path: ca_file.clone(),
                reason: format!("not a usable CA certificate: {err}"),
            })?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|err| RpcError::TlsSetup(err.to_string()))?;
        let mut clients = HashMap::new();
        let mut servers = HashMap::new();
        for name in identities {
            let chain = read_certs(&cert_path(dir, name))?;
            if let Some(leaf) = chain.first() {
                check_names(&cert_path(dir, name), leaf, name)?;
            }
            let key = read_key(&key_path(dir, name))?;
            let mut client = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(setup)?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|err| key_mismatch(dir, name, err))?;
            let mut server = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(setup)?
                .with_client_cert_verifier(verifier.clone())
                .with_single_cert(chain, key)
                .map_err(|err| key_mismatch(dir, name, err))?;
            // gRPC runs HTTP/2 on these connections.
            client.alpn_protocols = vec![b"h2".to_vec()];
            server.alpn_protocols = vec![b"h2".to_vec()];
            clients.insert(name.clone(), Arc::new(client));
            servers.insert(name.clone(), Arc::new(server));
        }
        let mut nodes_on: HashMap<IpAddr, Vec<String>> = HashMap::new();
        for (name, addr) in nodes {
            nodes_on.entry(addr.ip()).or_default().push(name.clone());
        }
        Ok(ClusterTls {
            clients,
            servers,
            node_at: nodes.iter().map(|(n, a)| (*a, n.clone())).collect(),
            nodes_on,
        })
    }

    /// How a client connection `from -> to` is wrapped in TLS: presenting
    /// the certificate of a node at `from` (else the operator's), expecting
    /// the node configured at `to`. Asked before dialling, so that a
    /// process without the certificate never opens the connection.
    pub(crate) fn client_for(
        &self,
        from: IpAddr,
        to: SocketAddr,
    ) -> std::io::Result<(tokio_rustls::TlsConnector, ServerName<'static>)> {
        let config = self.client_config(from).map_err(refused)?;
        let expected = self.node_at.get(&to).ok_or_else(|| {
            refused(RpcError::NoTlsIdentity(format!(
                "no node is configured at {to}: there is no name to expect in its certificate"
            )))
        })?;
        let name = ServerName::try_from(expected.clone())
            .map_err(|err| refused(RpcError::TlsSetup(format!("node name {expected:?}: {err}"))))?;
        Ok((tokio_rustls::TlsConnector::from(config), name))
    }

    /// The client configuration for a connection from `from`.
    fn client_config(&self, from: IpAddr) -> Result<Arc<ClientConfig>, RpcError> {
        let local = self
            .nodes_on
            .get(&from)
            .into_iter()
            .flatten()
            .find_map(|name| self.clients.get(name));
        local
            .or_else(|| self.clients.get(OPERATOR))
            .cloned()
            .ok_or_else(|| {
                RpcError::NoTlsIdentity(format!(
                    "this process holds no certificate of a node at {from} nor the {OPERATOR:?} one"
                ))
            })
    }

    /// The server configuration of the node listening on `local`.
    pub(crate) fn server_config(&self, local: SocketAddr) -> Result<Arc<ServerConfig>, RpcError> {
        let name = self
            .node_at
            .get(&local)
            .ok_or_else(|| RpcError::NoTlsIdentity(format!("no node is configured at {local}")))?;
        self.servers.get(name).cloned().ok_or_else(|| {
            RpcError::NoTlsIdentity(format!(
                "this process holds no certificate for {name} (listening on {local})"
            ))
        })
    }

    /// Completes a server-side handshake on `tcp` from `peer` and checks
    /// the client's name: the verified node (or operator) name.
    pub(crate) async fn accept(
        &self,
        config: Arc<ServerConfig>,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, String), (Refusal, String)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Err(_) => return Err((Refusal::Timeout, "TLS handshake timed out".into())),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err((Refusal::Abandoned, format!("TLS handshake: {err}")))
            }
            Ok(Err(err)) => return Err((Refusal::Handshake, format!("TLS handshake: {err}"))),
            Ok(Ok(tls)) => tls,
        };
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or((Refusal::Handshake, "no client certificate".to_string()))?;
        let leaf = webpki::EndEntityCert::try_from(leaf)
            .map_err(|err| (Refusal::Handshake, format!("client certificate: {err}")))?;
        let candidates = self
            .nodes_on
            .get(&peer.ip())
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain([OPERATOR]);
        for name in candidates {
            let Ok(server_name) = ServerName::try_from(name) else {
                continue;
            };
            if leaf.verify_is_valid_for_subject_name(&server_name).is_ok() {
                return Ok((tls, name.to_string()));
            }
        }
        Err((
            Refusal::Name,
            format!(
                "the client certificate names no node configured at {} (nor {OPERATOR:?})",
                peer.ip()
            ),
        ))
    }
}

/// rustls with *ring*, key exchange pinned to X25519 then P-256: the
/// default list adds a post-quantum hybrid that triples the handshake's
/// cost here (measured: 2.1 ms against 0.7 ms).
fn provider() -> CryptoProvider {
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
    ];
    provider
}

fn setup(err: rustls::Error) -> RpcError {
    RpcError::TlsSetup(err.to_string())
}

fn key_mismatch(dir: &Path, name: &str, err: rustls::Error) -> RpcError {
    RpcError::TlsFile {
        path: key_path(dir, name),
        reason: format!(
            "cannot be used with {}: {err}",
            cert_path(dir, name).display()
        ),
    }
}

fn refused(err: RpcError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, err.to_string())
}

/// Refuses a certificate file for `name` whose leaf names another node:
/// every peer would refuse it, each with a less telling error.
fn check_names(path: &Path, leaf: &CertificateDer<'_>, name: &str) -> Result<(), RpcError> {
    let bad = |reason: String| RpcError::TlsFile {
        path: path.to_path_buf(),
        reason,
    };
    let leaf = webpki::EndEntityCert::try_from(leaf)
        .map_err(|err| bad(format!("not a usable certificate: {err}")))?;
    let expected = ServerName::try_from(name)
        .map_err(|err| bad(format!("{name:?} cannot be a certificate's name: {err}")))?;
    leaf.verify_is_valid_for_subject_name(&expected)
        .map_err(|_| {
            bad(format!(
                "does not name {name:?} (a certificate issued for another node?)"
            ))
        })
}

/// Every certificate in a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RpcError> {
    let bad = |reason: String| RpcError::TlsFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| bad(pem_reason(err)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(pem_reason(err)))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// A private key file, refused when group or others may read it.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, RpcError> {
    let bad = |reason: String| RpcError::TlsFile {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(exposed) = geonfs_site_config::readable_by_others(path) {
        return Err(bad(format!("{exposed}: `chmod 600` it")));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|err| bad(pem_reason(err)))
}

fn pem_reason(err: rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(err) => err.to_string(),
        other => format!("not a PEM file as expected: {other:?}"),
    }
}

/// The directory and identities a [`crate::Network`] loads TLS from.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// `[tls] dir`.
    pub dir: PathBuf,
    /// The certificates this process presents: its nodes' names, or
    /// [`OPERATOR`] for a command.
    pub identities: Vec<String>,
    /// Every configured node: name and address.
    pub nodes: Vec<(String, SocketAddr)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_others_may_read_is_refused_and_a_reissue_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path()).unwrap();
        issue(dir.path(), "n1", false).unwrap();
        let nodes = [("n1".to_string(), SocketAddr::from(([127, 0, 0, 1], 1)))];
        let me = ["n1".to_string()];
        ClusterTls::load(dir.path(), &me, &nodes).unwrap();

        let key = key_path(dir.path(), "n1");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClusterTls::load(dir.path(), &me, &nodes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("may be read by group or others"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");

        let again = issue(dir.path(), "n1", false).unwrap_err().to_string();
        assert!(again.contains("already exists"), "{again}");
        issue(dir.path(), "n1", true).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        ClusterTls::load(dir.path(), &me, &nodes).unwrap();
        let ca_again = init_ca(dir.path()).unwrap_err().to_string();
        assert!(ca_again.contains("already exists"), "{ca_again}");
    }
}
