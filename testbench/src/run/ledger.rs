//! What the run saw, connection by connection: written by the client
//! populations and the server models as things happen, read by the
//! expectations and the report.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use snet_fabric::time::Instant;

/// The ledger, shared by the applications and clients of one run (one
/// thread).
pub type Shared = Rc<RefCell<Ledger>>;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every request answered and closed in order.
    Completed,
    /// Reset (or closed under the client) after it was established.
    Reset,
    /// Never established: refused, reset or timed out during the handshake.
    Failed,
}

/// One client connection.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client population (index in `clients`).
    pub population: u16,
    /// The client's address and port.
    pub local: SocketAddr,
    /// The server address and port it connects to.
    pub remote: SocketAddr,
    /// When the client started connecting.
    pub opened: Instant,
    /// When the handshake completed.
    pub established: Option<Instant>,
    /// The processor serving it, once a server saw it.
    pub owner: Option<u32>,
    /// How and when it ended (`None`: still open at the end of the run).
    pub end: Option<(End, Instant)>,
    /// Requests answered.
    pub requests: u32,
    /// Request bytes the client wrote (headers included).
    pub bytes_sent: u64,
    /// Response bytes the client received.
    pub bytes_received: u64,
    /// Response bytes that did not match the pattern.
    pub corrupt: u64,
    /// Response bytes still owed when the connection was reset.
    pub owed: u64,
    /// While the client waits (for the handshake, an answer or the
    /// server's close): when something last arrived or left, or the wait
    /// began. `None` between requests.
    pub waiting_since: Option<Instant>,
}

/// Per-processor figures of the server side.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFigures {
    /// Connections it took from the adapter as a front end (accept, or
    /// accept_nw1 for a hand-off).
    pub taken: u64,
    /// Connections this processor served (it owned the socket).
    pub accepted: u64,
    /// Connections it took with accept_nw1 and handed to another process.
    pub handed: u64,
    /// Requests it answered (on its sockets, or as a back end).
    pub requests: u64,
    /// Bytes its applications received from clients.
    pub bytes_in: u64,
    /// Bytes its applications sent to clients.
    pub bytes_out: u64,
}

/// The run's record.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every connection, by number.
    pub conns: Vec<Conn>,
    /// Open connections by the client's address.
    by_local: BTreeMap<SocketAddr, u32>,
    /// Per processor.
    pub servers: Vec<ServerFigures>,
    /// Request latencies (ns), in completion order.
    pub latencies_ns: Vec<u64>,
    /// Requests answered, all clients together.
    pub requests: u64,
    /// Connections accepted by servers, all together.
    pub accepted: u64,
    /// Request payload bytes servers found corrupted.
    pub server_corrupt: u64,
    /// Datagrams clients sent.
    pub datagrams_sent: u64,
    /// Datagrams clients got an answer to.
    pub datagrams_answered: u64,
    /// Listening sockets (and bound UDP servers) that are up.
    pub listening: u64,
    /// Problems the applications met (a peer that does not speak the
    /// protocol, an unexpected socket error).
    pub errors: Vec<String>,
}

impl Ledger {
    /// A ledger for `processors` processors.
    pub fn new(processors: usize) -> Shared {
        Rc::new(RefCell::new(Ledger {
            servers: vec![ServerFigures::default(); processors],
            ..Ledger::default()
        }))
    }

    /// A client starts a connection from `local` to `remote`; returns its
    /// number.
    pub fn open(
        &mut self,
        population: u16,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> u32 {
        let id = self.conns.len() as u32;
        self.conns.push(Conn {
            population,
            local,
            remote,
            opened: now,
            established: None,
            owner: None,
            end: None,
            requests: 0,
            bytes_sent: 0,
            bytes_received: 0,
            corrupt: 0,
            owed: 0,
            waiting_since: Some(now),
        });
        self.by_local.insert(local, id);
        id
    }

    /// The connection ends (client side).
    pub fn close(&mut self, id: u32, local: SocketAddr, end: End, now: Instant) {
        if self.by_local.get(&local) == Some(&id) {
            self.by_local.remove(&local);
        }
        if let Some(c) = self.conns.get_mut(id as usize)
            && c.end.is_none()
        {
            c.end = Some((end, now));
        }
    }

    /// Processor `p` now serves the connection from `peer` (accept, or
    /// adoption after a hand-off).
    pub fn served_by(&mut self, peer: Option<SocketAddr>, p: usize) {
        self.accepted += 1;
        if let Some(s) = self.servers.get_mut(p) {
            s.accepted += 1;
        }
        if let Some(id) = peer.and_then(|a| self.by_local.get(&a).copied())
            && let Some(c) = self.conns.get_mut(id as usize)
        {
            c.owner = Some(p as u32);
        }
    }

    /// Processor `p` handed a connection to another process.
    pub fn handed(&mut self, p: usize) {
        if let Some(s) = self.servers.get_mut(p) {
            s.handed += 1;
        }
    }

    /// The server figures of processor `p`.
    pub fn server(&mut self, p: usize) -> &mut ServerFigures {
        if p >= self.servers.len() {
            self.servers.resize(p + 1, ServerFigures::default());
        }
        &mut self.servers[p]
    }
}
