//! The socket API of the emulated processors, end to end: applications on
//! processors, client hosts on the LAN, every frame through the adapter's
//! firmware and the fabric — on the parallel library and on the
//! conventional stack.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;
use snet_fabric::time::{Duration, Instant};
use snet_firmware::tuple::PROTO_TCP;
use snet_firmware::{FiveTuple, Policy, SharedPortRange};
use snet_host_lib::app::{AppContext, Application, EchoServer};
use snet_host_lib::cpu::CpuCosts;
use snet_host_lib::net::{CLUSTER_IPV4, CLUSTER_IPV6, NetConfig, NetRig, StackMode};
use snet_host_lib::socket::{ListenMode, SocketApi, SocketError, SocketId, Ticket};

mod common;
use common::Exchange;

fn cluster_v4() -> IpAddr {
    IpAddr::V4(CLUSTER_IPV4)
}

/// Runs until every exchange is done (or `limit` of virtual time passed).
fn run(rig: &mut NetRig, xs: &mut [Exchange], limit: Duration) {
    let end = rig.now() + limit;
    while rig.now() < end {
        let mut all = true;
        for x in xs.iter_mut() {
            all &= x.step(rig);
        }
        if all {
            break;
        }
        rig.run_for(Duration::from_us(50));
    }
}

fn payload(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn echo_on_processor_two(remote: IpAddress) {
    let mut rig = NetRig::new(Default::default(), 1).unwrap();
    rig.spawn(2, Box::new(EchoServer::new(7, 4, 0))).unwrap();
    rig.run_for(Duration::from_ms(1));
    // listen registered the port with the adapter.
    let fw = rig.cluster.nics[0].firmware();
    assert_eq!(fw.listeners().len(), 1, "one listener registered");
    let data = payload(20_000, 1);
    let mut xs = [Exchange::open(&mut rig, 0, remote, 7, 40000, data.clone())];
    run(&mut rig, &mut xs, Duration::from_ms(100));
    assert!(
        xs[0].got == data,
        "the echo is byte-exact: got {} of {}, {}",
        xs[0].got.len(),
        data.len(),
        xs[0].state(&rig)
    );
    // Orderly close both ways; the filter goes once the server's side is
    // closed.
    rig.run_for(Duration::from_ms(5));
    assert!(matches!(
        xs[0].state(&rig),
        tcp::State::TimeWait | tcp::State::Closed
    ));
    let local = match remote {
        IpAddress::Ipv4(_) => cluster_v4(),
        IpAddress::Ipv6(_) => IpAddr::V6(CLUSTER_IPV6),
    };
    let client = match remote {
        IpAddress::Ipv4(_) => "198.18.1.1".parse().unwrap(),
        IpAddress::Ipv6(_) => "2001:db8::1:1".parse().unwrap(),
    };
    let tuple = FiveTuple::tcp(client, 40000, local, 7);
    assert_eq!(
        rig.cluster.nics[0].firmware().connection(&tuple),
        None,
        "close removed the connection's filter"
    );
    let s = rig.hosts.sockets[2].as_ref().unwrap().counters();
    assert_eq!((s.accepted, s.closed, s.reset), (1, 1, 0));
    assert_eq!(s.control_refused, 0);
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

#[test]
fn an_echo_application_on_processor_two_serves_a_client_over_ipv4() {
    echo_on_processor_two(IpAddress::Ipv4(CLUSTER_IPV4));
}

#[test]
fn an_echo_application_on_processor_two_serves_a_client_over_ipv6() {
    echo_on_processor_two(IpAddress::Ipv6(CLUSTER_IPV6));
}

#[test]
fn listen_registers_on_every_adapter_and_an_exclusive_port_is_refused_elsewhere() {
    let mut config = NetConfig::default();
    config.rig.adapters = 2;
    let mut rig = NetRig::build(config).unwrap();
    rig.spawn(1, Box::new(EchoServer::new(80, 4, 0))).unwrap();
    rig.run_for(Duration::from_ms(1));
    for a in 0..2 {
        assert_eq!(
            rig.cluster.nics[a].firmware().listeners().len(),
            1,
            "adapter {a} holds the listener"
        );
    }
    // Port 80 is not shared: processor 3 cannot listen on it too.
    let outcome = Rc::new(RefCell::new(None));
    rig.spawn(
        3,
        Box::new(Prober {
            listener: None,
            outcome: outcome.clone(),
        }),
    )
    .unwrap();
    rig.run_for(Duration::from_ms(1));
    rig.kick();
    rig.run_for(Duration::from_ms(1));
    assert_eq!(*outcome.borrow(), Some(Err(SocketError::AddressInUse(80))));
    let s = rig.hosts.sockets[3].as_ref().unwrap().counters();
    assert!(
        s.control_refused >= 1,
        "the adapters refused the second listener"
    );
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

/// Tries to listen on port 80 and records what accept says.
struct Prober {
    listener: Option<SocketId>,
    outcome: Rc<RefCell<Option<Result<SocketId, SocketError>>>>,
}

impl Application for Prober {
    fn name(&self) -> &str {
        "prober"
    }
    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let l = *self
            .listener
            .get_or_insert_with(|| cx.sockets().tcp_listen(80, 1, ListenMode::Serve).unwrap());
        match cx.sockets().accept(l) {
            Err(SocketError::WouldBlock) => {}
            other => *self.outcome.borrow_mut() = Some(other),
        }
        None
    }
}

#[test]
fn four_listeners_on_one_port_take_eight_clients_round_robin() {
    let mut config = NetConfig::default();
    config.rig.nic.firmware.shared_ports = vec![SharedPortRange {
        protocol: PROTO_TCP,
        first: 23,
        last: 23,
        policy: Policy::RoundRobin,
    }];
    config.clients = 8;
    let mut rig = NetRig::build(config).unwrap();
    // The listeners register one after the other: the adapter's round
    // robin follows the order they joined.
    for p in 0..4 {
        rig.spawn(p, Box::new(EchoServer::new(23, 8, 0))).unwrap();
        rig.run_for(Duration::from_us(200));
    }
    rig.run_for(Duration::from_ms(1));
    let mut xs = Vec::new();
    for c in 0..8 {
        xs.push(Exchange::open(
            &mut rig,
            c,
            IpAddress::Ipv4(CLUSTER_IPV4),
            23,
            41000 + c as u16,
            payload(3000, c as u32),
        ));
        rig.run_for(Duration::from_us(40));
    }
    // Connected, nothing sent yet: the firmware handed out connections
    // 1st, 2nd, 3rd, 4th, 1st, … — client c went to processor c % 4.
    rig.run_for(Duration::from_ms(2));
    let fw = rig.cluster.nics[0].firmware();
    let owners: Vec<usize> = xs
        .iter()
        .map(|x| {
            let t = FiveTuple::tcp(
                format!("198.18.1.{}", x.c + 1).parse().unwrap(),
                x.local_port,
                cluster_v4(),
                23,
            );
            usize::from(fw.connection(&t).expect("established").owner.0)
        })
        .collect();
    assert_eq!(owners, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    run(&mut rig, &mut xs, Duration::from_ms(100));
    for x in &xs {
        assert!(
            x.got == x.data,
            "client {}: got {} of {} bytes",
            x.c,
            x.got.len(),
            x.data.len()
        );
    }
    for p in 0..4 {
        let s = rig.hosts.sockets[p].as_ref().unwrap().counters();
        assert_eq!(s.accepted, 2, "P{p} accepted two");
    }
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

/// Listens with a backlog and never accepts.
struct Deaf {
    port: u16,
    backlog: usize,
    listener: Option<SocketId>,
}

impl Application for Deaf {
    fn name(&self) -> &str {
        "deaf"
    }
    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        if self.listener.is_none() {
            self.listener = cx
                .sockets()
                .tcp_listen(self.port, self.backlog, ListenMode::Serve)
                .ok();
        }
        None
    }
}

/// smoltcp sockets of processor `p` in the LISTEN state.
fn listening(rig: &NetRig, p: usize) -> usize {
    rig.hosts.sockets[p]
        .as_ref()
        .unwrap()
        .stack
        .sockets
        .iter()
        .filter(|(_, s)| {
            matches!(s, smoltcp::socket::Socket::Tcp(t) if t.state() == tcp::State::Listen)
        })
        .count()
}

#[test]
fn a_burst_of_connection_attempts_is_served_up_to_the_backlog_and_no_further() {
    let config = NetConfig {
        clients: 8,
        ..NetConfig::default()
    };
    let mut rig = NetRig::build(config).unwrap();
    rig.spawn(
        1,
        Box::new(Deaf {
            port: 80,
            backlog: 5,
            listener: None,
        }),
    )
    .unwrap();
    rig.run_for(Duration::from_ms(1));
    // One socket listens, not one per backlog slot.
    assert_eq!(listening(&rig, 1), 1);
    // Eight SYNs at once: they reach processor 1 in one interrupt.
    let mut xs: Vec<Exchange> = (0..8)
        .map(|c| {
            Exchange::open(
                &mut rig,
                c,
                IpAddress::Ipv4(CLUSTER_IPV4),
                80,
                42000 + c as u16,
                Vec::new(),
            )
        })
        .collect();
    rig.run_for(Duration::from_ms(5));
    let states: Vec<tcp::State> = xs.iter_mut().map(|x| x.state(&rig)).collect();
    let established = states
        .iter()
        .filter(|&&s| s == tcp::State::Established)
        .count();
    let refused = states.iter().filter(|&&s| s == tcp::State::Closed).count();
    assert_eq!(
        (established, refused),
        (5, 3),
        "five of eight fit the backlog, the rest are refused: {states:?}"
    );
    // The backlog is full: nothing is left listening. The poll stopped
    // before the second SYN (one socket was listening) and went on once
    // more were open.
    assert_eq!(listening(&rig, 1), 0);
    let waits = rig.hosts.sockets[1]
        .as_ref()
        .unwrap()
        .stack
        .counters()
        .syn_waits;
    assert!(waits >= 1, "no poll waited for a listening socket");
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

/// A UDP echo on processor 3.
#[derive(Default)]
struct UdpEcho {
    socket: Option<SocketId>,
    echoed: usize,
}

impl Application for UdpEcho {
    fn name(&self) -> &str {
        "udp-echo"
    }
    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let s = *self
            .socket
            .get_or_insert_with(|| cx.sockets().udp_bind(5353).unwrap());
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = cx.sockets().recv_from(s, &mut buf) {
            cx.sockets().send_to(s, &buf[..n], from).unwrap();
            self.echoed += 1;
        }
        None
    }
}

#[test]
fn udp_datagrams_reach_the_bound_processor_and_come_back() {
    use smoltcp::socket::udp;
    let mut rig = NetRig::new(Default::default(), 1).unwrap();
    rig.spawn(3, Box::new(UdpEcho::default())).unwrap();
    rig.run_for(Duration::from_ms(1));
    let h = {
        let host = &mut rig.hosts.clients[0];
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
        );
        s.bind(6000).unwrap();
        host.sockets.add(s)
    };
    let mut got = Vec::new();
    for i in 0..5u8 {
        rig.hosts.clients[0]
            .sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(&[i; 100], (IpAddress::Ipv4(CLUSTER_IPV4), 5353))
            .unwrap();
        rig.hosts.poll_client(&mut rig.cluster, 0);
        rig.run_for(Duration::from_ms(2));
        let s = rig.hosts.clients[0].sockets.get_mut::<udp::Socket>(h);
        while let Ok((d, _)) = s.recv() {
            got.push(d.to_vec());
        }
    }
    assert_eq!(got, (0..5u8).map(|i| vec![i; 100]).collect::<Vec<_>>());
    assert!(rig.hosts.stack(3).unwrap().counters().rx_frames >= 5);
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

/// The listener of the hand-off test: takes each connection with
/// accept_nw1 and passes the ticket to the worker service on `worker`.
struct HandOffListener {
    port: u16,
    worker: usize,
    listener: Option<SocketId>,
    handed: Vec<Ticket>,
}

const WORKER_SERVICE: u32 = 21;

/// A hand-off listener on processor 0, port 21, for a worker on processor 2.
fn spawn_handoff_listener(rig: &mut NetRig) {
    rig.spawn(
        0,
        Box::new(HandOffListener {
            port: 21,
            worker: 2,
            listener: None,
            handed: Vec::new(),
        }),
    )
    .unwrap();
}

impl Application for HandOffListener {
    fn name(&self) -> &str {
        "listener"
    }
    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let port = self.port;
        let l = *self.listener.get_or_insert_with(|| {
            cx.sockets()
                .tcp_listen(port, 8, ListenMode::HandOff)
                .unwrap()
        });
        while let Ok(ticket) = cx.sockets().accept_nw1(l) {
            cx.send(self.worker, WORKER_SERVICE, &ticket.to_bytes())
                .unwrap();
            self.handed.push(ticket);
        }
        while cx.take_reply().is_some() {}
        None
    }
}

/// The worker: adopts connections with accept_nw2 and echoes on them.
#[derive(Default)]
struct Worker {
    conns: Vec<(SocketId, Vec<u8>, bool)>,
    adopted: usize,
}

impl Application for Worker {
    fn name(&self) -> &str {
        "worker"
    }
    fn service(&self) -> Option<u32> {
        Some(WORKER_SERVICE)
    }
    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        while let Some(m) = cx.take_request() {
            let ticket = Ticket::from_bytes(&m.payload).unwrap();
            let s = cx.sockets().accept_nw2(&ticket).unwrap();
            self.adopted += 1;
            self.conns.push((s, Vec::new(), false));
            cx.reply(m.request().unwrap(), &[]).unwrap();
        }
        let mut buf = [0u8; 8192];
        for (s, pending, closed) in self.conns.iter_mut() {
            if *closed {
                continue;
            }
            loop {
                match cx.sockets().recv(*s, &mut buf) {
                    Ok(0) => {
                        if pending.is_empty() {
                            cx.sockets().close(*s).unwrap();
                            *closed = true;
                        }
                        break;
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            while !pending.is_empty() {
                match cx.sockets().send(*s, pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(_) => break,
                }
            }
        }
        None
    }
}

#[test]
fn a_listener_on_processor_zero_hands_a_connection_to_a_worker_on_processor_two() {
    let mut rig = NetRig::new(Default::default(), 1).unwrap();
    spawn_handoff_listener(&mut rig);
    rig.spawn(2, Box::new(Worker::default())).unwrap();
    rig.run_for(Duration::from_ms(1));
    let data = payload(50_000, 9);
    let mut xs = [Exchange::open(
        &mut rig,
        0,
        IpAddress::Ipv4(CLUSTER_IPV4),
        21,
        43000,
        data.clone(),
    )];
    // The handshake completes through processor 2.
    let until = rig.now() + Duration::from_ms(20);
    while xs[0].state(&rig) != tcp::State::Established && rig.now() < until {
        rig.run_for(Duration::from_us(20));
    }
    assert_eq!(xs[0].state(&rig), tcp::State::Established);
    let tuple = FiveTuple::tcp("198.18.1.1".parse().unwrap(), 43000, cluster_v4(), 21);
    assert_eq!(
        rig.cluster.nics[0]
            .firmware()
            .connection(&tuple)
            .map(|e| e.owner.0),
        Some(2),
        "the adapter's filter moved to processor 2"
    );
    let p0 = rig.processors[0];
    let delivered_to_p0 = |rig: &NetRig| {
        rig.cluster.nics[0]
            .queue_counters(p0, 0)
            .unwrap()
            .rx_delivered
    };
    let before = delivered_to_p0(&rig);
    run(&mut rig, &mut xs, Duration::from_ms(200));
    assert!(
        xs[0].got == data,
        "one uninterrupted connection, byte-exact"
    );
    rig.run_for(Duration::from_ms(5));
    // After the hand-off processor 0 got no segment of it.
    assert_eq!(delivered_to_p0(&rig), before, "nothing more reached P0");
    let p0s = rig.hosts.stack(0).unwrap().counters();
    assert_eq!(p0s.strays, 0);
    assert!(p0s.diverted >= 1, "P0 held the SYN");
    let p2 = rig.hosts.sockets[2].as_ref().unwrap().counters();
    assert_eq!(p2.adopted, 1);
    assert!(rig.hosts.stack(2).unwrap().counters().rx_frames > 10);
    assert_eq!(
        rig.hosts.sockets[0].as_ref().unwrap().counters().handed_off,
        1
    );
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

/// A worker that keeps its tickets until told to adopt, then reports what
/// the adopted sockets say.
struct LateWorker {
    go: Rc<RefCell<bool>>,
    tickets: Vec<Ticket>,
    seen: Rc<RefCell<Vec<Result<usize, SocketError>>>>,
    conns: Vec<SocketId>,
}

impl Application for LateWorker {
    fn name(&self) -> &str {
        "late-worker"
    }
    fn service(&self) -> Option<u32> {
        Some(WORKER_SERVICE)
    }
    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        while let Some(m) = cx.take_request() {
            self.tickets.push(Ticket::from_bytes(&m.payload).unwrap());
            cx.reply(m.request().unwrap(), &[]).unwrap();
        }
        if *self.go.borrow() {
            for t in self.tickets.drain(..) {
                self.conns.push(cx.sockets().accept_nw2(&t).unwrap());
            }
        }
        let mut buf = [0u8; 256];
        for s in &self.conns {
            match cx.sockets().recv(*s, &mut buf) {
                Err(SocketError::WouldBlock) => {}
                r => self.seen.borrow_mut().push(r),
            }
        }
        Some(cx.now() + Duration::from_us(100))
    }
}

#[test]
fn adopting_from_a_failed_owner_fails_the_socket_not_the_rig() {
    let mut rig = NetRig::new(Default::default(), 1).unwrap();
    spawn_handoff_listener(&mut rig);
    let go = Rc::new(RefCell::new(false));
    let seen = Rc::new(RefCell::new(Vec::new()));
    rig.spawn(
        2,
        Box::new(LateWorker {
            go: go.clone(),
            tickets: Vec::new(),
            seen: seen.clone(),
            conns: Vec::new(),
        }),
    )
    .unwrap();
    rig.run_for(Duration::from_ms(1));
    let _x = Exchange::open(
        &mut rig,
        0,
        IpAddress::Ipv4(CLUSTER_IPV4),
        21,
        43001,
        payload(100, 3),
    );
    rig.run_for(Duration::from_ms(2));
    // The ticket reached the worker; its owner fails before the adoption.
    rig.fail_processor(0);
    *go.borrow_mut() = true;
    rig.run_for(Duration::from_ms(2));
    let seen = seen.borrow();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|r| *r == Err(SocketError::ProcessorDown(0))),
        "the adopted socket reports the owner's failure: {seen:?}"
    );
    let p2 = rig.hosts.sockets[2].as_ref().unwrap().counters();
    assert_eq!((p2.system_undeliverable, p2.adopted), (1, 0));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

/// Runs the echo exchange of `clients` clients against echo servers on
/// every processor, on `stack`; returns what each client got back and the
/// messages (hops) the processors sent.
fn echo_on(stack: StackMode, clients: usize, cpu: CpuCosts) -> (Vec<Vec<u8>>, u64, u64, u64) {
    let mut config = NetConfig {
        stack,
        clients,
        cpu,
        ..Default::default()
    };
    config.rig.nic.firmware.shared_ports = vec![SharedPortRange {
        protocol: PROTO_TCP,
        first: 7,
        last: 7,
        policy: Policy::RoundRobin,
    }];
    let mut rig = NetRig::build(config).unwrap();
    let servers = match stack {
        StackMode::Parallel => vec![0, 1, 2, 3],
        // One listener per port on the one stack: the server runs on
        // processor 2, its TCP/IP on processor 0.
        StackMode::Conventional { .. } => vec![2],
    };
    for p in servers {
        rig.spawn(p, Box::new(EchoServer::new(7, 8, 0))).unwrap();
    }
    rig.run_for(Duration::from_ms(1));
    let mut xs = Vec::new();
    for c in 0..clients {
        xs.push(Exchange::open(
            &mut rig,
            c,
            IpAddress::Ipv4(CLUSTER_IPV4),
            7,
            44000 + c as u16,
            payload(10_000, 100 + c as u32),
        ));
    }
    run(&mut rig, &mut xs, Duration::from_ms(300));
    rig.run_for(Duration::from_ms(5));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
    let hops: u64 = (0..4).map(|p| rig.hosts.hops(p)).sum();
    let calls: u64 = (0..4)
        .map(|p| rig.hosts.cpus[p].counters().socket_calls)
        .sum();
    let busy: u64 = (0..4).map(|p| rig.hosts.cpus[p].busy().as_ps()).sum();
    (xs.into_iter().map(|x| x.got).collect(), hops, calls, busy)
}

#[test]
fn the_same_echo_application_gives_the_same_bytes_on_both_stacks() {
    let (parallel, hops_p, _, _) = echo_on(StackMode::Parallel, 4, CpuCosts::free());
    let (conventional, hops_c, calls_c, _) =
        echo_on(StackMode::Conventional { at: 0 }, 4, CpuCosts::free());
    for (c, got) in parallel.iter().enumerate() {
        assert!(
            got == &payload(10_000, 100 + c as u32),
            "parallel, client {c}: {} bytes",
            got.len()
        );
    }
    assert!(parallel == conventional, "the same bytes on both stacks");
    // No hop at all on the parallel library; on the conventional stack the
    // application's calls became messages to processor 0.
    assert_eq!(hops_p, 0);
    assert!(calls_c > 0);
    // At least a hop for the new connection, one for the request and one
    // for the echo, per client.
    assert!(hops_c >= 3 * 4, "{hops_c} hops");
}

#[test]
fn a_socket_call_on_an_unknown_socket_or_the_wrong_kind_is_a_typed_error() {
    struct Misuse {
        seen: Rc<RefCell<Vec<SocketError>>>,
    }
    impl Application for Misuse {
        fn name(&self) -> &str {
            "misuse"
        }
        fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
            let mut seen = self.seen.borrow_mut();
            if !seen.is_empty() {
                return None;
            }
            let mut api = cx.sockets();
            let bogus = SocketId(999);
            seen.push(api.send(bogus, b"x").unwrap_err());
            let s = api.tcp_socket().unwrap();
            seen.push(api.listen(s, 1, ListenMode::Serve).unwrap_err());
            api.bind(s, 9000).unwrap();
            let t = api.tcp_socket().unwrap();
            seen.push(api.bind(t, 9000).unwrap_err());
            let u = api.udp_bind(9001).unwrap();
            seen.push(api.accept(u).unwrap_err());
            let mut buf = [0u8; 4];
            seen.push(api.recv(s, &mut buf).unwrap_err());
            let addr = SocketAddr::new("198.18.1.1".parse().unwrap(), 0);
            let c = api.tcp_socket().unwrap();
            seen.push(api.connect(c, addr).unwrap_err());
            None
        }
    }
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut rig = NetRig::new(Default::default(), 1).unwrap();
    rig.spawn(1, Box::new(Misuse { seen: seen.clone() }))
        .unwrap();
    rig.run_for(Duration::from_ms(1));
    let seen = seen.borrow();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[0], SocketError::InvalidSocket(SocketId(999)));
    assert!(
        matches!(seen[1], SocketError::InvalidState { .. }),
        "{}",
        seen[1]
    );
    assert_eq!(seen[2], SocketError::AddressInUse(9000));
    assert!(
        matches!(seen[3], SocketError::InvalidState { .. }),
        "{}",
        seen[3]
    );
    assert!(matches!(seen[4], SocketError::WouldBlock), "{}", seen[4]);
    assert!(
        matches!(seen[5], SocketError::Unaddressable(_)),
        "{}",
        seen[5]
    );
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

#[test]
fn cpu_time_and_hops_per_transaction_are_higher_on_the_conventional_stack() {
    let costs = CpuCosts::default();
    let (p_got, p_hops, _, p_busy) = echo_on(StackMode::Parallel, 4, costs);
    let (c_got, c_hops, _, c_busy) = echo_on(StackMode::Conventional { at: 0 }, 4, costs);
    assert!(p_got == c_got, "the same bytes with CPU costs on");
    for (c, got) in p_got.iter().enumerate() {
        assert_eq!(got.len(), 10_000, "client {c} finished despite the costs");
    }
    // Each hop costs a message on both ends, on top of the same TCP/IP work.
    assert_eq!(p_hops, 0);
    assert!(
        c_busy > p_busy,
        "conventional {c_busy} ps vs parallel {p_busy} ps"
    );
    let floor = c_hops * 2 * costs.per_message.as_ps();
    assert!(c_busy >= floor, "{c_busy} ps covers {c_hops} hops");
}
