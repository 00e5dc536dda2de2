//! WAN emulation: cross-site connections pay the configured round-trip time
//! (half in each direction) and bandwidth.
//!
//! A connection between two sites is relayed through a pair of delay lines
//! inside the caller's process. Each chunk of bytes leaves the sender at once
//! but reaches the other end only after it has been serialised at the link's
//! bandwidth (shared by every connection between the two sites, per
//! direction) and has travelled for half the RTT. Calls inside a site are
//! never relayed and pay nothing.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The emulated properties of the link between two sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WanParams {
    /// Round-trip time; each direction pays half.
    pub rtt: Duration,
    /// Bytes per second in each direction; `None` = unlimited.
    pub bandwidth_bytes_per_sec: Option<u64>,
}

/// One direction of a site pair: when its "wire" is free again.
#[derive(Debug)]
pub(crate) struct Direction {
    busy_until: Mutex<Instant>,
}

impl Direction {
    pub(crate) fn new() -> Self {
        Direction {
            busy_until: Mutex::new(Instant::now()),
        }
    }

    /// When a chunk of `len` bytes sent now arrives at the other end.
    fn arrival(&self, params: WanParams, len: usize) -> Instant {
        let now = Instant::now();
        let sent = match params.bandwidth_bytes_per_sec {
            Some(bw) if bw > 0 => {
                let transmit = Duration::from_secs_f64(len as f64 / bw as f64);
                let mut busy = match self.busy_until.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let start = (*busy).max(now);
                *busy = start + transmit;
                *busy
            }
            _ => now,
        };
        sent + params.rtt / 2
    }
}

/// Largest chunk one read of a relay moves.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction of one connection before the sender waits.
const IN_FLIGHT: usize = 256;

/// Relays `tcp` through delay lines; returns the caller's end of the relay.
///
/// `params` is read for every chunk so a test may change the WAN while
/// connections are open. `until_cut` resolves when the link is cut; the relay
/// then drops both ends, which the caller sees as a closed connection.
pub(crate) fn relay<P, C>(
    tcp: TcpStream,
    params: P,
    up: std::sync::Arc<Direction>,
    down: std::sync::Arc<Direction>,
    until_cut: C,
) -> DuplexStream
where
    P: Fn() -> WanParams + Clone + Send + Sync + 'static,
    C: std::future::Future<Output = ()> + Send + 'static,
{
    let (caller_end, relay_end) = tokio::io::duplex(4 * CHUNK);
    let (relay_read, relay_write) = tokio::io::split(relay_end);
    let (tcp_read, tcp_write) = tcp.into_split();
    tokio::spawn(async move {
        let outbound = delay_line(relay_read, tcp_write, params.clone(), up);
        let inbound = delay_line(tcp_read, relay_write, params, down);
        tokio::select! {
            _ = until_cut => tracing::debug!("emulated WAN connection cut"),
            _ = futures::future::join(outbound, inbound) => {}
        }
    });
    caller_end
}

/// Moves bytes from `from` to `to`, each chunk delivered at its arrival time.
async fn delay_line<R, W, P>(
    mut from: R,
    mut to: W,
    params: P,
    direction: std::sync::Arc<Direction>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    P: Fn() -> WanParams,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let sender = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            match from.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    let at = direction.arrival(params(), chunk.len());
                    if tx.send((at, chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let receiver = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    futures::future::join(sender, receiver).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn arrival_pays_half_rtt_and_bandwidth() {
        let direction = Direction::new();
        let params = WanParams {
            rtt: Duration::from_millis(100),
            bandwidth_bytes_per_sec: Some(1_000_000),
        };
        let start = Instant::now();
        // 100 kB at 1 MB/s = 100 ms on the wire, then 50 ms of flight.
        let first = direction.arrival(params, 100_000);
        assert_eq!(first - start, Duration::from_millis(150));
        // A second chunk sent at once queues behind the first on the wire.
        let second = direction.arrival(params, 100_000);
        assert_eq!(second - start, Duration::from_millis(250));
        let unlimited = Direction::new().arrival(
            WanParams {
                rtt: Duration::from_millis(10),
                bandwidth_bytes_per_sec: None,
            },
            1 << 30,
        );
        assert_eq!(unlimited - start, Duration::from_millis(5));
    }
}
