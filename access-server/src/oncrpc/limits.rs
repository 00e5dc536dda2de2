//! How many connections a server holds: in all, and per client address,
//! so that one client (or one hostile host) cannot take every file
//! descriptor of the access server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The connections open now, counted per client address.
#[derive(Debug)]
pub(super) struct ConnectionCounts {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The server holds its maximum of connections.
    Total(usize),
    /// This client holds its maximum of connections.
    PerClient(usize),
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub(super) struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    client: IpAddr,
}

impl ConnectionCounts {
    /// Counts allowing `max_total` connections, `max_per_client` of them
    /// from one address (each at least 1).
    pub(super) fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(ConnectionCounts {
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            open: Mutex::default(),
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A slot for a new connection from `client`, or why there is none.
    pub(super) fn admit(self: &Arc<Self>, client: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let mut open = self.open();
        if open.total >= self.max_total {
            return Err(Refusal::Total(self.max_total));
        }
        let from_client = open.per_client.entry(client).or_insert(0);
        if *from_client >= self.max_per_client {
            return Err(Refusal::PerClient(self.max_per_client));
        }
        *from_client += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            counts: Arc::clone(self),
            client,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open();
        open.total = open.total.saturating_sub(1);
        if let Some(from_client) = open.per_client.get_mut(&self.client) {
            *from_client -= 1;
            if *from_client == 0 {
                open.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_client_and_in_all_and_given_back() {
        let counts = ConnectionCounts::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.1.0.9".parse().unwrap(), "127.2.0.9".parse().unwrap());
        let first = counts.admit(a).unwrap();
        let _second = counts.admit(a).unwrap();
        assert_eq!(counts.admit(a).unwrap_err(), Refusal::PerClient(2));
        let _third = counts.admit(b).unwrap();
        assert_eq!(counts.admit(b).unwrap_err(), Refusal::Total(3));
        drop(first);
        assert!(counts.admit(a).is_ok());
        assert!(counts.open().per_client.len() <= 2);
    }
}
