//! A client host on the LAN, with its own TCP/IP, talks to a server on one
//! processor of the cluster: every frame of it crosses the LAN, the adapter's
//! firmware, the fabric and the processor's queue pair.

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;
use snet_fabric::time::Duration;
use snet_firmware::control::ControlMessage;
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::PROTO_TCP;
use snet_host_lib::ControlOutcome;
use snet_host_lib::net::{CLUSTER_IPV4, CLUSTER_IPV6, NetRig};
use snet_host_lib::rig::RigConfig;

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        tcp::SocketBuffer::new(vec![0; 64 * 1024]),
    )
}

fn server(rig: &mut NetRig, p: usize, port: u16) -> SocketHandle {
    let key = ListenerKey {
        protocol: PROTO_TCP,
        addr: None,
        port,
    };
    assert_eq!(
        rig.control(p, ControlMessage::RegisterListener(key)),
        ControlOutcome::Accepted
    );
    let stack = rig.hosts.stack_mut(p).unwrap();
    let mut s = tcp_socket();
    s.listen(port).unwrap();
    stack.sockets.add(s)
}

/// Appends everything `s` has received to `out`.
fn drain(s: &mut tcp::Socket, out: &mut Vec<u8>) {
    let mut chunk = vec![0u8; 32768];
    while let Ok(n) = s.recv_slice(&mut chunk) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn conversation(remote: IpAddress) {
    let mut rig = NetRig::new(RigConfig::default(), 1).unwrap();
    let srv = server(&mut rig, 2, 80);
    let cli = {
        let client = &mut rig.hosts.clients[0];
        let mut s = tcp_socket();
        s.connect(client.iface.context(), (remote, 80), 40000)
            .unwrap();
        client.sockets.add(s)
    };
    rig.kick();
    rig.run_for(Duration::from_ms(5));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
    let state = |rig: &NetRig| {
        let c = rig.hosts.clients[0].sockets.get::<tcp::Socket>(cli).state();
        let s = rig
            .hosts
            .stack(2)
            .unwrap()
            .sockets
            .get::<tcp::Socket>(srv)
            .state();
        (c, s)
    };
    assert_eq!(
        state(&rig),
        (tcp::State::Established, tcp::State::Established)
    );

    // Data both ways, more than one segment each.
    let request: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let reply: Vec<u8> = (0..20000u32).map(|i| (i * 13 + 1) as u8).collect();
    rig.hosts.clients[0]
        .sockets
        .get_mut::<tcp::Socket>(cli)
        .send_slice(&request)
        .unwrap();
    rig.kick();
    // The request's last segment may wait for the server's delayed ACK
    // (10 ms in smoltcp) when the client's congestion window is full.
    let mut got = Vec::new();
    for _ in 0..50 {
        rig.run_for(Duration::from_ms(1));
        let stack = rig.hosts.stack_mut(2).unwrap();
        drain(stack.sockets.get_mut::<tcp::Socket>(srv), &mut got);
        if got.len() >= request.len() {
            break;
        }
    }
    assert_eq!(got.len(), request.len());
    assert!(got == request, "the server got the request intact");
    {
        let stack = rig.hosts.stack_mut(2).unwrap();
        let s = stack.sockets.get_mut::<tcp::Socket>(srv);
        assert_eq!(s.send_slice(&reply).unwrap(), reply.len());
    }
    rig.kick();
    let mut back = Vec::new();
    for _ in 0..50 {
        rig.run_for(Duration::from_ms(1));
        drain(
            rig.hosts.clients[0].sockets.get_mut::<tcp::Socket>(cli),
            &mut back,
        );
        if back.len() >= reply.len() {
            break;
        }
    }
    assert_eq!(back.len(), reply.len(), "the whole reply arrived");
    assert!(back == reply, "the client got the reply intact");

    // Orderly close from both sides.
    rig.hosts.clients[0]
        .sockets
        .get_mut::<tcp::Socket>(cli)
        .close();
    rig.kick();
    rig.run_for(Duration::from_ms(2));
    rig.hosts
        .stack_mut(2)
        .unwrap()
        .sockets
        .get_mut::<tcp::Socket>(srv)
        .close();
    rig.kick();
    rig.run_for(Duration::from_ms(5));
    let (c, s) = state(&rig);
    assert!(
        matches!(c, tcp::State::TimeWait | tcp::State::Closed),
        "client {c}"
    );
    assert!(
        matches!(s, tcp::State::Closed | tcp::State::TimeWait),
        "server {s}"
    );

    // Only processor 2 saw the connection's segments; the master (P0) also
    // answered the client's address resolution.
    for p in [1usize, 3] {
        assert_eq!(rig.hosts.stack(p).unwrap().counters().rx_frames, 0, "P{p}");
    }
    assert!(rig.hosts.stack(2).unwrap().counters().rx_frames > 10);
    assert!(rig.hosts.stack(0).unwrap().counters().rx_frames >= 1);
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

#[test]
fn a_client_talks_to_a_server_on_processor_two_over_ipv4() {
    conversation(IpAddress::Ipv4(CLUSTER_IPV4));
}

#[test]
fn a_client_talks_to_a_server_on_processor_two_over_ipv6() {
    conversation(IpAddress::Ipv6(CLUSTER_IPV6));
}

#[test]
fn four_processors_share_port_23_round_robin_and_each_accepts_two_of_eight() {
    let mut config = RigConfig::default();
    config.nic.firmware.shared_ports = vec![snet_firmware::SharedPortRange {
        protocol: PROTO_TCP,
        first: 23,
        last: 23,
        policy: snet_firmware::Policy::RoundRobin,
    }];
    let mut rig = NetRig::new(config, 8).unwrap();
    // Each processor listens once with the adapter and keeps two listening
    // sockets (one per connection it will take).
    let mut servers = Vec::new();
    for p in 0..4 {
        let first = server(&mut rig, p, 23);
        let stack = rig.hosts.stack_mut(p).unwrap();
        let mut s = tcp_socket();
        s.listen(23).unwrap();
        let second = stack.sockets.add(s);
        servers.push([first, second]);
    }
    // Eight clients connect, 20 µs apart.
    let mut clients = Vec::new();
    for c in 0..8 {
        let host = &mut rig.hosts.clients[c];
        let mut s = tcp_socket();
        s.connect(
            host.iface.context(),
            (IpAddress::Ipv4(CLUSTER_IPV4), 23),
            41000 + c as u16,
        )
        .unwrap();
        clients.push(host.sockets.add(s));
        rig.hosts.poll_client(&mut rig.cluster, c);
        rig.run_for(Duration::from_us(20));
    }
    rig.run_for(Duration::from_ms(5));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
    for (c, &h) in clients.iter().enumerate() {
        let s = rig.hosts.clients[c].sockets.get::<tcp::Socket>(h);
        assert_eq!(s.state(), tcp::State::Established, "client {c}");
    }
    // Which client each processor took, by the client's port.
    let mut taken = Vec::new();
    for (p, pair) in servers.iter().enumerate() {
        let stack = rig.hosts.stack(p).unwrap();
        let mut ports: Vec<u16> = pair
            .iter()
            .map(|&h| stack.sockets.get::<tcp::Socket>(h))
            .filter(|s| s.state() == tcp::State::Established)
            .map(|s| s.remote_endpoint().unwrap().port)
            .collect();
        ports.sort();
        taken.push(ports);
    }
    // 1st, 2nd, 3rd, 4th, 1st, …: client c went to processor c % 4.
    assert_eq!(
        taken,
        vec![
            vec![41000, 41004],
            vec![41001, 41005],
            vec![41002, 41006],
            vec![41003, 41007]
        ]
    );
}

/// Streams `len` bytes from client `c` to processor `p`'s socket `srv`,
/// reading as it goes; returns what the server received.
fn stream(
    rig: &mut NetRig,
    c: usize,
    cli: SocketHandle,
    p: usize,
    srv: SocketHandle,
    data: &[u8],
    limit_ms: u64,
) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..limit_ms * 10 {
        {
            let s = rig.hosts.clients[c].sockets.get_mut::<tcp::Socket>(cli);
            if sent < data.len() && s.can_send() {
                sent += s.send_slice(&data[sent..]).unwrap_or(0);
            }
        }
        rig.hosts.poll_client(&mut rig.cluster, c);
        rig.run_for(Duration::from_us(100));
        if let Some(stack) = rig.hosts.stack_mut(p) {
            let s = stack.sockets.get_mut::<tcp::Socket>(srv);
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = s.recv_slice(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        if got.len() >= data.len() {
            break;
        }
    }
    got
}

fn connect(rig: &mut NetRig, c: usize, port: u16, local: u16) -> SocketHandle {
    let host = &mut rig.hosts.clients[c];
    let mut s = tcp_socket();
    s.connect(
        host.iface.context(),
        (IpAddress::Ipv4(CLUSTER_IPV4), port),
        local,
    )
    .unwrap();
    let h = host.sockets.add(s);
    rig.hosts.poll_client(&mut rig.cluster, c);
    h
}

#[test]
fn a_transfer_recovers_from_seeded_frame_loss_on_the_lan() {
    let mut config = RigConfig::default();
    config.lan.loss_rate = 0.02;
    config.seed = 11;
    let mut rig = NetRig::new(config, 1).unwrap();
    let srv = server(&mut rig, 1, 80);
    let cli = connect(&mut rig, 0, 80, 40100);
    rig.run_for(Duration::from_ms(20));
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let got = stream(&mut rig, 0, cli, 1, srv, &data, 4000);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "every byte, in order, despite the losses");
    let lost = rig
        .cluster
        .lan
        .counters(rig.hosts.clients[0].station)
        .unwrap()
        .dropped_loss;
    assert!(lost > 0, "frames were lost and sent again");
}

#[test]
fn clients_of_a_failed_processor_are_reset_and_the_others_finish_intact() {
    let mut rig = NetRig::new(RigConfig::default(), 4).unwrap();
    let mut conns = Vec::new();
    for p in 0..4usize {
        let srv = server(&mut rig, p, 9000 + p as u16);
        let cli = connect(&mut rig, p, 9000 + p as u16, 42000 + p as u16);
        conns.push((cli, srv));
    }
    rig.run_for(Duration::from_ms(5));
    for (c, &(cli, _)) in conns.iter().enumerate() {
        assert_eq!(
            rig.hosts.clients[c].sockets.get::<tcp::Socket>(cli).state(),
            tcp::State::Established
        );
        // The server accepts: its processor confirms the connection's filter.
        let t = snet_firmware::FiveTuple::tcp(
            format!("198.18.1.{}", c + 1).parse().unwrap(),
            42000 + c as u16,
            "198.18.0.10".parse().unwrap(),
            9000 + c as u16,
        );
        assert_eq!(
            rig.control(c, ControlMessage::AddConnection(t)),
            ControlOutcome::Accepted
        );
    }
    // Every client sends 100 kB; processor 1 fails a third of the way in.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let mut sent = [0usize; 4];
    let mut got = vec![Vec::new(); 4];
    let mut failed_at = None;
    for step in 0..2000 {
        for c in 0..4 {
            let (cli, srv) = conns[c];
            let s = rig.hosts.clients[c].sockets.get_mut::<tcp::Socket>(cli);
            if sent[c] < data.len() && s.can_send() {
                sent[c] += s.send_slice(&data[sent[c]..]).unwrap_or(0);
            }
            rig.hosts.poll_client(&mut rig.cluster, c);
            if let Some(stack) = rig.hosts.stack_mut(c) {
                let s = stack.sockets.get_mut::<tcp::Socket>(srv);
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.recv_slice(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got[c].extend_from_slice(&buf[..n]);
                }
            }
        }
        if step == 10 && failed_at.is_none() {
            assert!(got[1].len() < data.len(), "mid-transfer");
            rig.fail_processor(1);
            failed_at = Some(rig.now());
        }
        rig.run_for(Duration::from_us(100));
        if [0, 2, 3].iter().all(|&c| got[c].len() == data.len())
            && rig.hosts.clients[1]
                .sockets
                .get::<tcp::Socket>(conns[1].0)
                .state()
                == tcp::State::Closed
        {
            break;
        }
    }
    for c in [0usize, 2, 3] {
        assert!(got[c] == data, "client {c}: every byte intact");
    }
    // The dead processor's client was reset by the adapter, promptly.
    let s = rig.hosts.clients[1].sockets.get::<tcp::Socket>(conns[1].0);
    assert_eq!(s.state(), tcp::State::Closed, "reset");
    assert!(
        rig.cluster.nics[0].counters().rx_replies > 0,
        "the adapter sent the RST"
    );
    let reset_within = rig.now() - failed_at.unwrap();
    assert!(
        reset_within < Duration::from_ms(50),
        "reset after {reset_within}"
    );
}

/// A client that sent its request and waits for the answer sends nothing
/// more, so no segment of it would meet the adapter's reactive reset; when
/// its server's processor fails (`fail` makes the adapter learn it), the
/// adapter resets it anyway, at once, from what it remembered of the
/// connection's last acknowledgement.
fn idle_client_of_a_failed_processor_is_reset(
    remote: IpAddress,
    client: IpAddress,
    fail: fn(&mut NetRig),
) {
    let mut rig = NetRig::new(RigConfig::default(), 1).unwrap();
    let srv = server(&mut rig, 2, 80);
    let cli = {
        let host = &mut rig.hosts.clients[0];
        let mut s = tcp_socket();
        s.connect(host.iface.context(), (remote, 80), 40200)
            .unwrap();
        host.sockets.add(s)
    };
    rig.kick();
    rig.run_for(Duration::from_ms(5));
    // The server's processor confirms the connection's filter.
    let t = snet_firmware::FiveTuple::tcp(client.into(), 40200, remote.into(), 80);
    assert_eq!(
        rig.control(2, ControlMessage::AddConnection(t)),
        ControlOutcome::Accepted
    );
    // The request goes out and is read; no answer comes.
    rig.hosts.clients[0]
        .sockets
        .get_mut::<tcp::Socket>(cli)
        .send_slice(b"GET /slow")
        .unwrap();
    rig.kick();
    rig.run_for(Duration::from_ms(5));
    let mut buf = [0u8; 64];
    let n = rig
        .hosts
        .stack_mut(2)
        .unwrap()
        .sockets
        .get_mut::<tcp::Socket>(srv)
        .recv_slice(&mut buf)
        .unwrap();
    assert_eq!(&buf[..n], b"GET /slow");
    // The server's delayed acknowledgement (10 ms) reaches the client.
    rig.kick();
    rig.run_for(Duration::from_ms(20));
    let s = rig.hosts.clients[0].sockets.get::<tcp::Socket>(cli);
    assert_eq!(s.state(), tcp::State::Established);
    assert_eq!(s.send_queue(), 0, "the request was acknowledged");
    let replies = rig.cluster.nics[0].counters().rx_replies;

    let failed_at = rig.now();
    fail(&mut rig);
    for _ in 0..100 {
        rig.run_for(Duration::from_us(10));
        if rig.hosts.clients[0].sockets.get::<tcp::Socket>(cli).state() == tcp::State::Closed {
            break;
        }
    }
    let s = rig.hosts.clients[0].sockets.get::<tcp::Socket>(cli);
    assert_eq!(s.state(), tcp::State::Closed, "reset");
    let reset_within = rig.now() - failed_at;
    assert!(
        reset_within < Duration::from_us(100),
        "reset after {reset_within}"
    );
    let nic = &rig.cluster.nics[0];
    assert_eq!(nic.counters().tx_firmware_frames, 1, "one proactive RST");
    assert_eq!(nic.firmware().counters().proactive_resets, 1);
    assert_eq!(
        nic.counters().rx_replies,
        replies,
        "the client sent nothing to answer"
    );
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

/// The fabric reports the processor's endpoint down.
fn fabric_failure(rig: &mut NetRig) {
    rig.fail_processor(2);
}

/// Another processor declares it down in a control message.
fn declared_down(rig: &mut NetRig) {
    assert_eq!(
        rig.control(
            0,
            ControlMessage::ProcessorDown(snet_firmware::ProcessorId(2))
        ),
        ControlOutcome::Accepted
    );
}

#[test]
fn an_idle_client_of_a_failed_processor_is_reset_promptly_over_ipv4() {
    idle_client_of_a_failed_processor_is_reset(
        IpAddress::Ipv4(CLUSTER_IPV4),
        IpAddress::v4(198, 18, 1, 1),
        fabric_failure,
    );
}

#[test]
fn an_idle_client_of_a_failed_processor_is_reset_promptly_over_ipv6() {
    idle_client_of_a_failed_processor_is_reset(
        IpAddress::Ipv6(CLUSTER_IPV6),
        IpAddress::v6(0x2001, 0xdb8, 0, 0, 0, 0, 1, 1),
        fabric_failure,
    );
}

#[test]
fn an_idle_client_is_reset_when_its_processor_is_declared_down() {
    idle_client_of_a_failed_processor_is_reset(
        IpAddress::Ipv4(CLUSTER_IPV4),
        IpAddress::v4(198, 18, 1, 1),
        declared_down,
    );
}
