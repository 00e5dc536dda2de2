//! [`RpcChannel`]: a tonic channel to one node with the cluster secret, the
//! emulated WAN, the fault seam and TLS applied.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};

use crate::faults::LinkFaults;
use crate::network::Network;
use crate::stream::{ClientConn, GuardedStream, LinkStream};
use crate::{RpcError, SECRET_HEADER};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A channel from one node to another; use it with any generated client
/// (`CoreDataClient::new(channel)`). Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct RpcChannel {
    channel: Channel,
    network: Network,
    from: IpAddr,
    to: SocketAddr,
    remote: bool,
}

impl RpcChannel {
    pub(crate) fn new(network: Network, from: IpAddr, to: SocketAddr) -> Result<Self, RpcError> {
        let endpoint = Endpoint::from_shared(format!("http://{to}"))
            .map_err(|err| RpcError::BadEndpoint {
                addr: to,
                reason: err.to_string(),
            })?
            .connect_timeout(network.options().connect_timeout)
            .timeout(network.options().call_timeout)
            .tcp_nodelay(true);
        let connector_network = network.clone();
        let connector = tower::service_fn(move |_uri: http::Uri| {
            let network = connector_network.clone();
            async move { connect_secured(network, from, to).await.map(TokioIo::new) }
        });
        let channel = endpoint.connect_with_connector_lazy(connector);
        let remote = match (network.site_of(from), network.site_of(to.ip())) {
            (Some(a), Some(b)) => a != b,
            _ => true,
        };
        Ok(RpcChannel {
            channel,
            network,
            from,
            to,
            remote,
        })
    }

    /// The address this channel calls.
    pub fn target(&self) -> SocketAddr {
        self.to
    }
}

/// Opens one connection `from -> to` (see [`connect`]) and runs TLS over it
/// unless the cluster runs plain TCP. TLS sits above the WAN relay, so the
/// emulated WAN carries (and delays) the handshake as a real one would.
async fn connect_secured(
    network: Network,
    from: IpAddr,
    to: SocketAddr,
) -> std::io::Result<ClientConn> {
    let Some(tls) = network.tls() else {
        return Ok(ClientConn::Plain(connect(network, from, to).await?));
    };
    let (connector, name) = tls.client_for(from, to)?;
    let link = connect(network.clone(), from, to).await?;
    Ok(ClientConn::Tls(Box::new(
        connector.connect(name, link).await?,
    )))
}

/// Opens one connection `from -> to`, relayed through the WAN emulation when
/// the two are in different sites, and severed when the link is cut.
async fn connect(network: Network, from: IpAddr, to: SocketAddr) -> std::io::Result<LinkStream> {
    if network.faults().link(from, to.ip()).cut {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            RpcError::LinkCut { from, to }.to_string(),
        ));
    }
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if from.is_ipv4() == to.is_ipv4() && !from.is_unspecified() {
        socket.bind(SocketAddr::new(from, 0))?;
    }
    socket.set_nodelay(true)?;
    let tcp = socket.connect(to).await?;
    let faults = network.faults().clone();
    let until_cut = async move { faults.until_cut(from, to.ip()).await };
    match (network.site_of(from), network.site_of(to.ip())) {
        (Some(a), Some(b)) if network.relayed(a, b) => {
            let params_network = network.clone();
            let params = move || params_network.wan(a, b);
            let up = network.direction(a, b);
            let down = network.direction(b, a);
            Ok(LinkStream::Emulated(crate::wan::relay(
                tcp, params, up, down, until_cut,
            )))
        }
        _ => Ok(LinkStream::Direct(GuardedStream::new(tcp, until_cut))),
    }
}

fn injected(network: &Network, kind: &str, err: RpcError) -> BoxError {
    network
        .metrics()
        .injected_faults
        .with_label_values(&[kind])
        .inc();
    Box::new(tonic::Status::from(err))
}

impl tower::Service<http::Request<Body>> for RpcChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The ready channel is the one to call; leave a fresh clone behind.
        let fresh = self.channel.clone();
        let mut channel = std::mem::replace(&mut self.channel, fresh);
        request
            .headers_mut()
            .insert(SECRET_HEADER, self.network.secret().clone());
        let network = self.network.clone();
        let (from, to) = (self.from, self.to);
        let link = if self.remote { "remote" } else { "local" };
        network.metrics().calls.with_label_values(&[link]).inc();
        Box::pin(async move {
            let faults: LinkFaults = network.faults().link(from, to.ip());
            if faults.cut {
                return Err(injected(&network, "cut", RpcError::LinkCut { from, to }));
            }
            if !faults.delay.is_zero() {
                network
                    .metrics()
                    .injected_faults
                    .with_label_values(&["delay"])
                    .inc();
                tokio::time::sleep(faults.delay).await;
            }
            if faults.drop_requests > 0.0 && rand::random::<f64>() < faults.drop_requests {
                return Err(injected(
                    &network,
                    "drop_request",
                    RpcError::RequestDropped { from, to },
                ));
            }
            let response = channel.call(request).await.map_err(BoxError::from)?;
            if faults.drop_replies > 0.0 && rand::random::<f64>() < faults.drop_replies {
                return Err(injected(
                    &network,
                    "drop_reply",
                    RpcError::ReplyDropped { from, to },
                ));
            }
            Ok(response)
        })
    }
}
