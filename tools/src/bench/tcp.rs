//! TCP figures through the whole path — client hosts on the LAN, the
//! adapter's firmware, the fabric, the queue pairs and a TCP/IP instance
//! in every processor: the real-time factor of bulk transfers, and full
//! connections per wall-clock second.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant as WallInstant;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;
use snet_fabric::time::{Bandwidth, Duration, Instant};
use snet_fabric::topology::LinkParams;
use snet_firmware::tuple::PROTO_TCP;
use snet_firmware::{Policy, SharedPortRange};
use snet_host_lib::app::RequestReply;
use snet_host_lib::client::ClientHost;
use snet_host_lib::net::{CLUSTER_IPV4, ClientBehaviour, NetConfig, NetRig};
use snet_nic_model::mac::LinkSpeed;

use super::{Budget, Figure};

const PROCESSORS: usize = 4;

/// A cluster of four processors sharing `port` round robin, one adapter
/// with a 1 Gbit/s port, `clients` client hosts.
fn cluster(clients: usize, port: u16) -> NetRig {
    let mut config = NetConfig {
        clients,
        ..NetConfig::default()
    };
    config.rig.processors = PROCESSORS as u16;
    config.rig.nic.mac.speed = LinkSpeed::GBIT_1;
    config.rig.link = LinkParams {
        bandwidth: Bandwidth::from_mb_per_s(125).expect("non-zero"),
        ..LinkParams::default()
    };
    config.rig.nic.firmware.shared_ports = vec![SharedPortRange {
        protocol: PROTO_TCP,
        first: port,
        last: port,
        policy: Policy::RoundRobin,
    }];
    NetRig::build(config).expect("the benchmark cluster builds")
}

fn client_socket(buffer: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer]),
        tcp::SocketBuffer::new(vec![0; buffer]),
    )
}

struct Bulk {
    rtf: f64,
    goodput_bits: f64,
}

/// Four clients stream to sinks on four processors for `virtual_time`.
fn bulk(virtual_time: Duration) -> Bulk {
    const PORT: u16 = 5001;
    let mut rig = cluster(PROCESSORS, PORT);
    for p in 0..PROCESSORS {
        rig.spawn(p, Box::new(RequestReply::new(PORT, 4, 1 << 20, 0, 0)))
            .expect("processor exists");
        rig.run_for(Duration::from_us(200));
    }
    let mut handles: Vec<SocketHandle> = Vec::new();
    for c in 0..PROCESSORS {
        let host = &mut rig.hosts.clients[c];
        let mut s = client_socket(256 * 1024);
        s.connect(
            host.iface.context(),
            (IpAddress::Ipv4(CLUSTER_IPV4), PORT),
            30000 + c as u16,
        )
        .expect("connect");
        handles.push(host.sockets.add(s));
        rig.hosts.poll_client(&mut rig.cluster, c);
    }
    rig.run_for(Duration::from_ms(2));
    let chunk = vec![0x3cu8; 64 * 1024];
    let step = Duration::from_us(200);
    let start = rig.now();
    let received_before = received(&rig);
    let wall = WallInstant::now();
    while rig.now() < start + virtual_time {
        for (c, &h) in handles.iter().enumerate() {
            let s = rig.hosts.clients[c].sockets.get_mut::<tcp::Socket>(h);
            while s.can_send() {
                if s.send_slice(&chunk).unwrap_or(0) == 0 {
                    break;
                }
            }
            rig.hosts.poll_client(&mut rig.cluster, c);
        }
        rig.run_for(step);
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let virtual_s = (rig.now() - start).as_secs_f64();
    let bytes = received(&rig) - received_before;
    if !rig.hosts.errors.is_empty() {
        eprintln!("warning: tcp bulk: {:?}", rig.hosts.errors);
    }
    Bulk {
        rtf: virtual_s / wall_s,
        goodput_bits: bytes as f64 * 8.0 / virtual_s,
    }
}

/// Bytes the processors' applications read.
fn received(rig: &NetRig) -> u64 {
    (0..PROCESSORS)
        .filter_map(|p| rig.hosts.sockets[p].as_ref())
        .map(|s| s.counters().bytes_received)
        .sum()
}

struct Setup {
    per_wall_s: f64,
    completed: u64,
    per_virtual_s: f64,
}

/// One client host opening connections one after the other: a handshake, a
/// 64-byte request, the 1 KiB reply, a close. It is polled with its host
/// (whenever a frame reaches it or a timer of its TCP/IP instance fires),
/// so it acts as soon as its connection moves on.
struct Connector {
    port: u16,
    next_port: u16,
    handle: Option<SocketHandle>,
    got: usize,
    sent: bool,
    completed: Rc<Cell<u64>>,
    /// Connections the client's instance refused to open.
    refused: Rc<Cell<u64>>,
}

impl ClientBehaviour for Connector {
    fn poll(&mut self, host: &mut ClientHost, _now: Instant) -> Option<Instant> {
        const REQUEST: [u8; 64] = [0x11; 64];
        loop {
            let Some(h) = self.handle else {
                let mut s = client_socket(4096);
                let local = self.next_port;
                self.next_port = if local == 60000 { 20000 } else { local + 1 };
                if s.connect(
                    host.iface.context(),
                    (IpAddress::Ipv4(CLUSTER_IPV4), self.port),
                    local,
                )
                .is_err()
                {
                    // Counted and reported; this client stops.
                    self.refused.set(self.refused.get() + 1);
                    return None;
                }
                self.handle = Some(host.sockets.add(s));
                self.got = 0;
                self.sent = false;
                return None;
            };
            let s = host.sockets.get_mut::<tcp::Socket>(h);
            if !self.sent && s.may_send() && s.send_queue() == 0 {
                self.sent = s.send_slice(&REQUEST).unwrap_or(0) == REQUEST.len();
            }
            // The reply is taken where it lies in the socket's buffer.
            while let Ok(n) = s.recv(|b| (b.len(), b.len())) {
                if n == 0 {
                    break;
                }
                self.got += n;
            }
            if self.got >= 1024 && s.is_open() && s.may_send() {
                s.close();
            }
            if !matches!(s.state(), tcp::State::TimeWait | tcp::State::Closed) {
                return None;
            }
            if self.got >= 1024 {
                self.completed.set(self.completed.get() + 1);
            }
            // The client forgets the connection (its TIME-WAIT would only
            // hold a port it will not reuse soon) and opens the next.
            host.sockets.remove(h);
            self.handle = None;
        }
    }
}

/// Eight clients open connections one after the other (handshake, a
/// 64-byte request, a 1 KiB reply, close) against servers on four
/// processors, for `wall_budget` seconds of wall time.
fn setups(wall_budget: f64) -> Setup {
    const PORT: u16 = 8080;
    const CLIENTS: usize = 8;
    let mut rig = cluster(CLIENTS, PORT);
    for p in 0..PROCESSORS {
        rig.spawn(p, Box::new(RequestReply::new(PORT, 64, 64, 1024, 0)))
            .expect("processor exists");
        rig.run_for(Duration::from_us(200));
    }
    let completed = Rc::new(Cell::new(0u64));
    let refused = Rc::new(Cell::new(0u64));
    for c in 0..CLIENTS {
        rig.attach_client(
            c,
            Box::new(Connector {
                port: PORT,
                next_port: 20000,
                handle: None,
                got: 0,
                sent: false,
                completed: completed.clone(),
                refused: refused.clone(),
            }),
        )
        .expect("client exists");
    }
    let start = rig.now();
    let wall = WallInstant::now();
    while wall.elapsed().as_secs_f64() < wall_budget {
        rig.run_for(Duration::from_us(200));
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let virtual_s = (rig.now() - start).as_secs_f64();
    if !rig.hosts.errors.is_empty() {
        eprintln!("warning: tcp setups: {:?}", rig.hosts.errors);
    }
    if refused.get() > 0 {
        eprintln!(
            "warning: tcp setups: {} clients could not open a connection",
            refused.get()
        );
    }
    let completed = completed.get();
    Setup {
        per_wall_s: completed as f64 / wall_s,
        completed,
        per_virtual_s: completed as f64 / virtual_s,
    }
}

pub fn figures(budget: Budget) -> Vec<Figure> {
    let ms = if budget.min_secs < 0.5 { 10 } else { 50 };
    let b = bulk(Duration::from_ms(ms));
    let s = setups(if budget.min_secs < 0.5 { 0.3 } else { 2.0 });
    if s.completed == 0 {
        eprintln!("warning: tcp.conn_setup_per_wall_s: no connection completed");
    }
    vec![
        Figure::plain("tcp.goodput_rtf_1gbe", b.rtf, "virtual s per wall s").with_target(1.0),
        Figure::plain(
            "tcp.goodput_mbit_s",
            b.goodput_bits / 1e6,
            "Mbit/s of application payload over the 1 Gbit/s port (virtual)",
        ),
        Figure::plain(
            "tcp.conn_setup_per_wall_s",
            s.per_wall_s,
            "connections (handshake, 64 B request, 1 KiB reply, close) per wall s",
        )
        .with_target(50_000.0),
        Figure::plain(
            "tcp.conn_setup_per_virtual_s",
            s.per_virtual_s,
            "the same connections per virtual s (8 sequential clients)",
        ),
    ]
}
