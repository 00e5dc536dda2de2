//! [`Network`]: the process's view of the cluster network (sites, emulated
//! WAN, faults, secret) and the factory of channels to other nodes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use geonfs_site_config::{ClusterConfig, SiteId, SiteMap};
use prometheus::{IntCounter, IntCounterVec, Registry};

use crate::metric::MetricSet;

use crate::channel::RpcChannel;
use crate::faults::Faults;
use crate::tls::{ClusterTls, TlsOptions};
use crate::wan::{Direction, WanParams};
use crate::RpcError;

/// The deadline of a new connection, besides its round trips.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`Network`] is set up.
#[derive(Clone)]
pub struct NetworkOptions {
    /// The cluster secret sent on, and required of, every inter-node call.
    pub secret: String,
    /// Which site every address belongs to.
    pub sites: SiteMap,
    /// Emulated WAN per unordered site pair.
    pub wan: Vec<(SiteId, SiteId, WanParams)>,
    /// Relay every cross-site connection through the WAN emulation even when
    /// no pair has parameters yet (tests set them later). When false, only
    /// pairs listed in `wan` are relayed.
    pub always_emulate: bool,
    /// Deadline of a call that sets none itself.
    pub call_timeout: Duration,
    /// Deadline of establishing a connection (TCP, then TLS).
    pub connect_timeout: Duration,
    /// TLS between nodes (`None`: plain TCP, `[tls] insecure = true`).
    pub tls: Option<TlsOptions>,
}

impl NetworkOptions {
    /// The options a process of `config` runs with, presenting the
    /// certificates of `identities` (its nodes' names, or
    /// [`crate::tls::OPERATOR`] for a command) when the cluster uses TLS.
    pub fn from_config(config: &ClusterConfig, identities: &[&str]) -> Self {
        NetworkOptions {
            secret: config.cluster.secret.clone(),
            sites: config.site_map(),
            wan: config
                .wan
                .iter()
                .map(|link| {
                    let params = WanParams {
                        rtt: link.rtt,
                        bandwidth_bytes_per_sec: link.bandwidth_bytes_per_sec,
                    };
                    (link.a, link.b, params)
                })
                .collect(),
            always_emulate: false,
            call_timeout: Duration::from_secs(30),
            // A TCP connect and a TLS handshake each take a round trip.
            connect_timeout: CONNECT_TIMEOUT + 2 * config.meta_timing().inter_site_rtt,
            tls: config.tls.dir.as_ref().map(|dir| TlsOptions {
                dir: dir.clone(),
                identities: identities.iter().map(ToString::to_string).collect(),
                nodes: config
                    .nodes
                    .iter()
                    .map(|node| (node.name.clone(), node.address))
                    .collect(),
            }),
        }
    }
}

impl std::fmt::Debug for NetworkOptions {
    /// Like a derived `Debug`, but never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkOptions")
            .field("secret", &"<redacted>")
            .field("sites", &self.sites)
            .field("wan", &self.wan)
            .field("always_emulate", &self.always_emulate)
            .field("call_timeout", &self.call_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Counters of the RPC layer, registered into a node's Prometheus registry.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    /// Calls made, by destination site relation (`local` / `remote`).
    pub calls: IntCounterVec,
    /// Faults the fault seam applied, by kind.
    pub injected_faults: IntCounterVec,
    /// Calls refused because of a missing or wrong cluster secret.
    pub auth_rejections: IntCounter,
    /// Incoming connections refused by TLS, by reason (`handshake`:
    /// no TLS, another CA, no certificate; `name`: the certificate names
    /// no node at the peer's address; `timeout`; `abandoned`: the caller
    /// hung up mid-handshake).
    pub tls_refusals: IntCounterVec,
    set: MetricSet,
}

impl RpcMetrics {
    fn new() -> Self {
        let mut set = MetricSet::default();
        RpcMetrics {
            calls: set.counter_vec(
                "geonfs_rpc_calls_total",
                "Outgoing inter-node RPCs",
                &["link"],
            ),
            injected_faults: set.counter_vec(
                "geonfs_rpc_injected_faults_total",
                "Faults applied by the fault-injection seam",
                &["kind"],
            ),
            auth_rejections: set.counter(
                "geonfs_rpc_auth_rejections_total",
                "Incoming RPCs refused for a missing or wrong cluster secret",
            ),
            tls_refusals: set.counter_vec(
                "geonfs_rpc_tls_refusals_total",
                "Incoming inter-node connections refused by TLS, by reason",
                &["reason"],
            ),
            set,
        }
    }

    /// Registers the counters into `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.set.register(registry)
    }
}

/// The cluster network as one process sees it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Network {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: NetworkOptions,
    secret: http::HeaderValue,
    tls: Option<ClusterTls>,
    faults: Faults,
    wan: RwLock<HashMap<(SiteId, SiteId), WanParams>>,
    directions: Mutex<HashMap<(SiteId, SiteId), Arc<Direction>>>,
    metrics: RpcMetrics,
}

fn unordered(a: SiteId, b: SiteId) -> (SiteId, SiteId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl Network {
    /// Builds the network; fails if the secret cannot travel as metadata.
    pub fn new(options: NetworkOptions) -> Result<Self, RpcError> {
        let mut secret = http::HeaderValue::from_str(&options.secret)
            .ok()
            .filter(|_| options.secret.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or(RpcError::BadSecret)?;
        // Never printed by `Debug` (of a channel, a network, a request),
        // and kept out of HTTP/2 header compression tables.
        secret.set_sensitive(true);
        let tls = options
            .tls
            .as_ref()
            .map(|tls| ClusterTls::load(&tls.dir, &tls.identities, &tls.nodes))
            .transpose()?;
        let wan = options
            .wan
            .iter()
            .map(|&(a, b, params)| (unordered(a, b), params))
            .collect();
        Ok(Network {
            inner: Arc::new(Inner {
                faults: Faults::new(options.sites.clone()),
                secret,
                tls,
                wan: RwLock::new(wan),
                directions: Mutex::new(HashMap::new()),
                metrics: RpcMetrics::new(),
                options,
            }),
        })
    }

    /// The fault seam.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// The RPC layer's counters.
    pub fn metrics(&self) -> &RpcMetrics {
        &self.inner.metrics
    }

    /// The options this network was built with.
    pub fn options(&self) -> &NetworkOptions {
        &self.inner.options
    }

    /// The site of an address, if it is in one.
    pub fn site_of(&self, ip: IpAddr) -> Option<SiteId> {
        self.inner.options.sites.site_of(ip).ok()
    }

    /// Sets the emulated WAN between two sites (both directions). Open
    /// relayed connections pick it up with their next chunk.
    pub fn set_wan(&self, a: SiteId, b: SiteId, params: WanParams) {
        let mut wan = match self.inner.wan.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        wan.insert(unordered(a, b), params);
    }

    /// The emulated WAN between two sites (zero when none is set).
    pub fn wan(&self, a: SiteId, b: SiteId) -> WanParams {
        let wan = match self.inner.wan.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        wan.get(&unordered(a, b)).copied().unwrap_or_default()
    }

    /// TLS between nodes, unless the cluster runs plain TCP.
    pub(crate) fn tls(&self) -> Option<&ClusterTls> {
        self.inner.tls.as_ref()
    }

    pub(crate) fn secret(&self) -> &http::HeaderValue {
        &self.inner.secret
    }

    /// Whether connections from `from` to `to` go through the WAN relay.
    pub(crate) fn relayed(&self, from: SiteId, to: SiteId) -> bool {
        if from == to {
            return false;
        }
        if self.inner.options.always_emulate {
            return true;
        }
        let wan = match self.inner.wan.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        wan.contains_key(&unordered(from, to))
    }

    /// The shared "wire" of one direction between two sites.
    pub(crate) fn direction(&self, from: SiteId, to: SiteId) -> Arc<Direction> {
        let mut directions = match self.inner.directions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        directions
            .entry((from, to))
            .or_insert_with(|| Arc::new(Direction::new()))
            .clone()
    }

    /// A channel from the node at `from` to the node listening at `to`.
    ///
    /// It connects lazily (so it can be made while `to` is down), binds
    /// `from` as its source address, and reconnects after failures.
    pub fn channel(&self, from: IpAddr, to: SocketAddr) -> Result<RpcChannel, RpcError> {
        RpcChannel::new(self.clone(), from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_secret_is_never_printed() {
        let secret = "the-cluster-secret-nobody-may-read";
        let config = ClusterConfig::from_toml_str(&format!(
            "[cluster]\nname = \"t\"\nreplication_factor = 1\nsecret = \"{secret}\"\n\n\
             [tls]\ninsecure = true\n\n\
             [[site]]\nname = \"a\"\nsubnets = [\"127.0.0.0/8\"]\ntakes_writes = false\n\n\
             [[node]]\nname = \"c\"\naddress = \"127.0.0.1:1\"\nroles = [\"core\", \"meta\"]\n\
             capacity = \"1GiB\"\ndata_dir = \"/nonexistent\"\n"
        ))
        .unwrap();
        let options = NetworkOptions::from_config(&config, &[]);
        assert_eq!(options.secret, secret);
        let network = Network::new(options.clone()).unwrap();
        let channel = network
            .channel("127.0.0.1".parse().unwrap(), "127.0.0.1:1".parse().unwrap())
            .unwrap();
        for shown in [
            format!("{options:?}"),
            format!("{network:?}"),
            format!("{channel:?}"),
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
