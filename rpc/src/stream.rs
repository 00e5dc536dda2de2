//! Connections that can be severed from outside: by a cut in the fault seam
//! (client side) or by killing a node (server side).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

type Severed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A stream that fails every operation once its `severed` future resolves.
pub struct GuardedStream<S> {
    inner: S,
    severed: Severed,
    is_severed: bool,
}

impl<S> GuardedStream<S> {
    /// Wraps `inner`; it breaks when `severed` resolves.
    pub fn new(inner: S, severed: impl Future<Output = ()> + Send + 'static) -> Self {
        GuardedStream {
            inner,
            severed: Box::pin(severed),
            is_severed: false,
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.is_severed && self.severed.as_mut().poll(cx).is_ready() {
            self.is_severed = true;
        }
        if self.is_severed {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection severed (link cut or node killed)",
            ))
        } else {
            Ok(())
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A client connection: direct TCP inside a site, a WAN relay across sites.
pub enum LinkStream {
    /// Plain TCP (severed by a cut).
    Direct(GuardedStream<TcpStream>),
    /// Through the WAN delay lines (the relay closes it on a cut).
    Emulated(DuplexStream),
}

/// A client connection as the channel uses it: TLS over the link unless
/// the cluster runs plain TCP.
pub enum ClientConn {
    /// Plain TCP (`[tls] insecure = true`).
    Plain(LinkStream),
    /// TLS over the link.
    Tls(Box<tokio_rustls::client::TlsStream<LinkStream>>),
}

/// A server connection: plain or TLS, severed when the node is killed.
pub enum ServerConn {
    /// Plain TCP.
    Plain(GuardedStream<TcpStream>),
    /// TLS, with the verified name of the peer.
    Tls(
        Box<GuardedStream<tokio_rustls::server::TlsStream<TcpStream>>>,
        PeerInfo,
    ),
}

/// Who is at the other end of a server connection; tonic puts it in every
/// request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's address.
    pub addr: Option<std::net::SocketAddr>,
    /// The node (or operator) its TLS certificate names; `None` on plain TCP.
    pub name: Option<String>,
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            ServerConn::Plain(stream) => PeerInfo {
                addr: stream.inner.peer_addr().ok(),
                name: None,
            },
            ServerConn::Tls(_, peer) => peer.clone(),
        }
    }
}

/// Dispatches the I/O traits to whichever stream a two-variant enum holds.
macro_rules! either_io {
    ($type:ident, $a:ident, $b:ident) => {
        impl AsyncRead for $type {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::$a(s, ..) => Pin::new(s).poll_read(cx, buf),
                    $type::$b(s, ..) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }

        impl AsyncWrite for $type {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $type::$a(s, ..) => Pin::new(s).poll_write(cx, buf),
                    $type::$b(s, ..) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::$a(s, ..) => Pin::new(s).poll_flush(cx),
                    $type::$b(s, ..) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::$a(s, ..) => Pin::new(s).poll_shutdown(cx),
                    $type::$b(s, ..) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

either_io!(LinkStream, Direct, Emulated);
either_io!(ClientConn, Plain, Tls);
either_io!(ServerConn, Plain, Tls);
