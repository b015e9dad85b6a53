//! Failures and restores of the cluster's parts under load: an adapter
//! fails mid-transfer and a backup adapter takes the cluster's address over
//! with every established connection intact; a processor fails, comes back
//! with a fresh host side, and takes new connections again.

use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;
use snet_fabric::time::Duration;
use snet_firmware::conntable::EntryState;
use snet_firmware::tuple::PROTO_TCP;
use snet_firmware::{Policy, ProcessorId, SharedPortRange};
use snet_host_lib::app::EchoServer;
use snet_host_lib::net::{CLUSTER_IPV4, NetConfig, NetRig};
use snet_host_lib::rig::adapter_mac;
use snet_nic_model::PortAttachment;

mod common;
use common::Exchange;

const PORT: u16 = 23;

fn open_exchange(rig: &mut NetRig, c: usize, local_port: u16, data: Vec<u8>) -> Exchange {
    Exchange::open(
        rig,
        c,
        IpAddress::Ipv4(CLUSTER_IPV4),
        PORT,
        local_port,
        data,
    )
}

/// Steps the exchanges every 50 µs until `stop` says so (or `limit` of
/// virtual time passed); returns whether `stop` was met.
fn run_until(
    rig: &mut NetRig,
    xs: &mut [Exchange],
    limit: Duration,
    stop: impl Fn(&NetRig, &[Exchange]) -> bool,
) -> bool {
    let end = rig.now() + limit;
    loop {
        for x in xs.iter_mut() {
            x.step(rig);
        }
        if stop(rig, xs) {
            return true;
        }
        if rig.now() >= end {
            return false;
        }
        rig.run_for(Duration::from_us(50));
    }
}

fn payload(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Two adapters, four processors each running an echo server on a port
/// shared round robin, `clients` client hosts.
fn cluster(clients: usize) -> NetRig {
    let mut config = NetConfig::default();
    config.rig.adapters = 2;
    config.rig.nic.firmware.shared_ports = vec![SharedPortRange {
        protocol: PROTO_TCP,
        first: PORT,
        last: PORT,
        policy: Policy::RoundRobin,
    }];
    config.clients = clients;
    let mut rig = NetRig::build(config).unwrap();
    // The listeners join one after the other: the round robin follows the
    // order they joined.
    for p in 0..4 {
        rig.spawn(p, Box::new(EchoServer::new(PORT, 8, 0))).unwrap();
        rig.run_for(Duration::from_us(200));
    }
    rig.run_for(Duration::from_ms(1));
    for a in 0..2 {
        let groups = &rig.cluster.nics[a].firmware().snapshot().listeners;
        assert_eq!(groups.len(), 1, "adapter {a} holds the port's group");
        assert_eq!(
            groups[0].1,
            (0..4).map(ProcessorId).collect::<Vec<_>>(),
            "adapter {a}: every processor listens"
        );
    }
    rig
}

/// The processor each exchange's connection belongs to, on adapter `a`.
fn owners(rig: &NetRig, a: usize, xs: &[Exchange]) -> Vec<Option<u16>> {
    let fw = rig.cluster.nics[a].firmware();
    xs.iter()
        .map(|x| fw.connection(&x.tuple()).map(|e| e.owner.0))
        .collect()
}

fn assert_byte_exact<'a>(xs: impl IntoIterator<Item = &'a Exchange>) {
    for x in xs {
        assert_eq!(x.got.len(), x.data.len(), "client {}: length", x.c);
        assert!(x.got == x.data, "client {}: the echo is byte-exact", x.c);
    }
}

#[test]
fn a_backup_adapter_takes_the_address_over_with_every_connection_intact() {
    let mut rig = cluster(8);
    assert_eq!(rig.hosts.active_adapter(), Some(0));
    const LEN: usize = 300_000;
    let mut xs: Vec<Exchange> = (0..4)
        .map(|c| open_exchange(&mut rig, c, 41000 + c as u16, payload(LEN, c as u32)))
        .collect();
    // Mid-transfer: every client has had part of its echo, none all of it.
    assert!(run_until(
        &mut rig,
        &mut xs,
        Duration::from_ms(200),
        |_, xs| xs.iter().all(|x| x.got.len() >= LEN / 5)
    ));
    assert!(
        xs.iter().all(|x| !x.done()),
        "the failure comes mid-transfer"
    );
    // The connections were confirmed (AddConnection) with both adapters:
    // the backup holds every filter although it has seen none of the
    // traffic.
    let before = owners(&rig, 0, &xs);
    assert_eq!(before, vec![Some(0), Some(1), Some(2), Some(3)]);
    assert_eq!(owners(&rig, 1, &xs), before, "the backup's filters agree");
    assert_eq!(
        rig.cluster.nics[1]
            .firmware()
            .counters()
            .provisional_created,
        0,
        "no connection attempt reached the backup: its entries come from the confirmations"
    );
    let nic1_rx = rig.cluster.nics[1].counters().rx_delivered;
    let nic0_tx = rig.cluster.nics[0].counters().tx_frames;
    let nic1_tx = rig.cluster.nics[1].counters().tx_frames;
    assert_eq!(nic1_tx, 0, "nothing left through the standby adapter");
    let port0 = match rig.cluster.port(0) {
        Some(PortAttachment::Lan(st)) => st,
        other => panic!("adapter 0's port: {other:?}"),
    };
    let port0_tx = rig.cluster.lan.counters(port0).unwrap().tx_frames;

    rig.fail_adapter(0).unwrap();
    assert_eq!(rig.hosts.active_adapter(), Some(1));
    assert_eq!(rig.hosts.takeovers, 1);
    assert!(rig.cluster.nics[1].config().mac.accepts(adapter_mac(0)));
    assert!(rig.fail_adapter(0).unwrap_err().contains("already down"));

    assert!(run_until(
        &mut rig,
        &mut xs,
        Duration::from_ms(3000),
        |_, xs| xs.iter().all(Exchange::done)
    ));
    assert_byte_exact(&xs);
    // Everything after the failure went through adapter 1, both ways.
    assert_eq!(rig.cluster.nics[0].counters().tx_frames, nic0_tx);
    let nic1 = *rig.cluster.nics[1].counters();
    assert!(nic1.tx_frames > 0, "the backup sends");
    assert!(
        nic1.rx_delivered > nic1_rx + (LEN as u64 * 4 / 2) / 1460,
        "the clients' frames reach the backup: {} delivered",
        nic1.rx_delivered - nic1_rx
    );

    // New connections work through the backup, round robin over all four.
    let mut ys: Vec<Exchange> = (4..8)
        .map(|c| {
            let x = open_exchange(
                &mut rig,
                c,
                42000 + c as u16,
                payload(20_000, 100 + c as u32),
            );
            rig.run_for(Duration::from_us(40));
            x
        })
        .collect();
    // Connected, nothing sent yet.
    rig.run_for(Duration::from_ms(2));
    let mut new_owners: Vec<u16> = owners(&rig, 1, &ys).into_iter().flatten().collect();
    new_owners.sort_unstable();
    assert_eq!(new_owners, vec![0, 1, 2, 3], "one new connection each");
    assert!(run_until(
        &mut rig,
        &mut ys,
        Duration::from_ms(500),
        |_, ys| ys.iter().all(Exchange::done)
    ));
    assert_byte_exact(&ys);

    // Orderly closes on every connection, through the backup.
    rig.run_for(Duration::from_ms(20));
    for x in xs.iter().chain(&ys) {
        assert!(
            matches!(x.state(&rig), tcp::State::TimeWait | tcp::State::Closed),
            "client {}: {}",
            x.c,
            x.state(&rig)
        );
    }
    for p in 0..4 {
        let s = rig.hosts.sockets[p].as_ref().unwrap().counters();
        assert_eq!((s.accepted, s.reset), (2, 0), "P{p}");
        assert_eq!(s.control_refused, 0, "P{p}");
        let echo: Vec<_> = rig.hosts.apps(p).collect();
        assert_eq!(echo.len(), 1);
    }
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);

    // Adapter 0 comes back as a standby, in step with adapter 1.
    rig.restore_adapter(0).unwrap();
    assert_eq!(rig.hosts.active_adapter(), Some(1), "no fail-back");
    assert_eq!(
        rig.cluster.nics[0].firmware().snapshot(),
        rig.cluster.nics[1].firmware().snapshot(),
        "the restored adapter holds the active one's tables"
    );
    // It had frames queued when it failed: they went nowhere.
    assert!(rig.cluster.nics[0].counters().tx_frames > nic0_tx);
    assert_eq!(rig.cluster.lan.counters(port0).unwrap().tx_frames, port0_tx);
    let nic0_tx = rig.cluster.nics[0].counters().tx_frames;
    let mut zs = vec![open_exchange(&mut rig, 0, 43000, payload(10_000, 7))];
    assert!(run_until(
        &mut rig,
        &mut zs,
        Duration::from_ms(200),
        |_, zs| zs.iter().all(Exchange::done)
    ));
    assert_byte_exact(&zs);
    rig.run_for(Duration::from_ms(5));
    assert_eq!(
        rig.cluster.nics[0].firmware().snapshot(),
        rig.cluster.nics[1].firmware().snapshot(),
        "both adapters got the new connection's registration and removal"
    );
    assert_eq!(
        rig.cluster.nics[0].counters().tx_frames,
        nic0_tx,
        "the standby sends nothing"
    );
    assert_eq!(rig.cluster.lan.counters(port0).unwrap().tx_frames, port0_tx);
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

#[test]
fn a_restored_processor_takes_new_connections_again() {
    let mut rig = cluster(8);
    const LEN: usize = 200_000;
    let mut xs: Vec<Exchange> = (0..4)
        .map(|c| {
            let x = open_exchange(&mut rig, c, 41000 + c as u16, payload(LEN, c as u32));
            rig.run_for(Duration::from_us(40));
            x
        })
        .collect();
    assert!(run_until(
        &mut rig,
        &mut xs,
        Duration::from_ms(200),
        |_, xs| xs.iter().all(|x| x.got.len() >= LEN / 5)
    ));
    assert!(
        xs.iter().all(|x| !x.done()),
        "the failure comes mid-transfer"
    );
    assert_eq!(
        owners(&rig, 0, &xs),
        vec![Some(0), Some(1), Some(2), Some(3)]
    );

    let windows = |rig: &NetRig| rig.cluster.fabric.avt(rig.processors[2]).unwrap().len();
    let windows_before = windows(&rig);
    assert_eq!(windows_before, 2 * 6, "six windows per queue pair");
    rig.fail_processor(2);
    assert!(rig.restore_processor(0).unwrap_err().contains("is up"));
    // The others carry on untouched.
    let survivors = [0usize, 1, 3];
    assert!(run_until(
        &mut rig,
        &mut xs,
        Duration::from_ms(3000),
        |_, xs| survivors.iter().all(|&c| xs[c].done())
    ));
    // Client 2's connection went with P2: both adapters hold it orphaned
    // (what reaches them of it is answered with a reset). The client itself
    // waits for a window that will not open (its TCP sends no window
    // probes), so it is not asked to notice.
    for a in 0..2 {
        let e = rig.cluster.nics[a].firmware().connection(&xs[2].tuple());
        assert_eq!(
            e.map(|e| (e.owner.0, e.state)),
            Some((2, EntryState::Orphaned)),
            "adapter {a}"
        );
    }
    assert!(!xs[2].done(), "P2's connection ended with it");
    assert_byte_exact(survivors.iter().map(|&c| &xs[c]));
    let members = |rig: &NetRig, a: usize| {
        rig.cluster.nics[a].firmware().snapshot().listeners[0]
            .1
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>()
    };
    for a in 0..2 {
        assert_eq!(members(&rig, a), vec![0, 1, 3], "adapter {a}");
        let fw = rig.cluster.nics[a].firmware();
        assert_eq!(fw.counters().connections_orphaned, 1, "adapter {a}");
        assert!(!fw.is_live(ProcessorId(2)), "adapter {a}");
    }

    rig.restore_processor(2).unwrap();
    assert!(rig.hosts.up[2]);
    assert_eq!(
        windows(&rig),
        windows_before,
        "the old queue pairs' windows were closed"
    );
    assert!(rig.restore_processor(2).unwrap_err().contains("is up"));
    assert!(
        rig.hosts.apps(2).next().is_none(),
        "applications are not respawned"
    );
    for a in 0..2 {
        assert!(
            rig.cluster.nics[a].firmware().is_live(ProcessorId(2)),
            "adapter {a}"
        );
        assert_eq!(
            members(&rig, a),
            vec![0, 1, 3],
            "adapter {a}: not listening yet"
        );
    }
    let fresh = rig.hosts.sockets[2].as_ref().unwrap();
    assert!(fresh.is_empty(), "a new TCP/IP instance");
    rig.spawn(2, Box::new(EchoServer::new(PORT, 8, 0))).unwrap();
    rig.run_for(Duration::from_ms(1));
    for a in 0..2 {
        assert_eq!(
            members(&rig, a),
            vec![0, 1, 3, 2],
            "adapter {a}: P2 joined again"
        );
    }

    // Four new connections: the round robin includes P2 again.
    let mut ys: Vec<Exchange> = (4..8)
        .map(|c| {
            let x = open_exchange(
                &mut rig,
                c,
                42000 + c as u16,
                payload(30_000, 100 + c as u32),
            );
            rig.run_for(Duration::from_us(40));
            x
        })
        .collect();
    // Connected, nothing sent yet.
    rig.run_for(Duration::from_ms(2));
    let mut new_owners: Vec<u16> = owners(&rig, 0, &ys).into_iter().flatten().collect();
    new_owners.sort_unstable();
    assert_eq!(new_owners, vec![0, 1, 2, 3], "one new connection each");
    assert_eq!(
        owners(&rig, 1, &ys),
        owners(&rig, 0, &ys),
        "both adapters agree"
    );
    assert!(run_until(
        &mut rig,
        &mut ys,
        Duration::from_ms(500),
        |_, ys| ys.iter().all(Exchange::done)
    ));
    assert_byte_exact(&ys);
    let s = rig.hosts.sockets[2].as_ref().unwrap().counters();
    assert_eq!((s.accepted, s.reset, s.control_refused), (1, 0, 0), "P2");
    for p in [0, 1, 3] {
        let s = rig.hosts.sockets[p].as_ref().unwrap().counters();
        assert_eq!((s.accepted, s.reset, s.control_refused), (2, 0, 0), "P{p}");
    }
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

#[test]
fn the_announcement_moves_the_address_before_any_processor_sends() {
    let mut rig = cluster(1);
    let mut xs = vec![open_exchange(&mut rig, 0, 41000, payload(1000, 3))];
    // Keep it open once the echo is back.
    xs[0].closed = true;
    assert!(run_until(
        &mut rig,
        &mut xs,
        Duration::from_ms(50),
        |_, xs| xs[0].done()
    ));
    // An idle connection: the client speaks next.
    let more = payload(1000, 4);
    xs[0].data.extend_from_slice(&more);
    rig.run_for(Duration::from_ms(1));
    let delivered = rig.cluster.nics[1].counters().rx_delivered;
    rig.fail_adapter(0).unwrap();
    // Only the takeover announcements leave the backup's port now.
    rig.run_for(Duration::from_us(20));
    assert_eq!(rig.cluster.nics[1].counters().tx_frames, 2);
    // The client's next frames reach the backup at once: the echo is back
    // well within one retransmission timeout.
    assert!(run_until(
        &mut rig,
        &mut xs,
        Duration::from_us(500),
        |_, xs| xs[0].done()
    ));
    assert_byte_exact(&xs);
    assert!(rig.cluster.nics[1].counters().rx_delivered > delivered);
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}

#[test]
fn the_takeover_announcements_name_the_cluster_address_from_its_mac() {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Address, Ipv6Packet, NdiscNeighborFlags,
        NdiscRepr, RawHardwareAddress,
    };
    use snet_host_lib::net::CLUSTER_IPV6;
    use snet_host_lib::stack::{ClusterAddress, takeover_announcements};

    let mac = EthernetAddress(adapter_mac(0).0);
    let mut address = ClusterAddress {
        mac: mac.0,
        ipv4: Some((CLUSTER_IPV4, 15)),
        ipv6: Some((CLUSTER_IPV6, 64)),
    };
    let frames = takeover_announcements(&address);
    assert_eq!(frames.len(), 2);
    // A gratuitous ARP request, broadcast.
    let eth = EthernetFrame::new_checked(&frames[0][..]).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
    assert_eq!(eth.src_addr(), mac);
    assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(
        arp,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: mac,
            source_protocol_addr: CLUSTER_IPV4,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: CLUSTER_IPV4,
        }
    );
    // An unsolicited neighbour advertisement to all nodes, overriding.
    let eth = EthernetFrame::new_checked(&frames[1][..]).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(eth.src_addr(), mac);
    let ip6 = Ipv6Packet::new_checked(eth.payload()).unwrap();
    let all_nodes = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    assert_eq!(
        (ip6.src_addr(), ip6.dst_addr(), ip6.hop_limit()),
        (CLUSTER_IPV6, all_nodes, 255)
    );
    assert_eq!(ip6.next_header(), IpProtocol::Icmpv6);
    let icmp = Icmpv6Packet::new_checked(ip6.payload()).unwrap();
    let nd = Icmpv6Repr::parse(
        &CLUSTER_IPV6,
        &all_nodes,
        &icmp,
        &ChecksumCapabilities::default(),
    )
    .unwrap();
    assert_eq!(
        nd,
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::OVERRIDE,
            target_addr: CLUSTER_IPV6,
            lladdr: Some(RawHardwareAddress::from(mac)),
        })
    );
    // Only the families the cluster has.
    address.ipv6 = None;
    assert_eq!(takeover_announcements(&address).len(), 1);
}

/// An echo exchange on the conventional stack (TCP/IP on processor 1):
/// returns whether it completed byte-exact.
fn echo_once(rig: &mut NetRig, c: usize, local_port: u16, port: u16) -> bool {
    let data = payload(5000, u32::from(local_port));
    let mut xs = [Exchange::open(
        rig,
        c,
        IpAddress::Ipv4(CLUSTER_IPV4),
        port,
        local_port,
        data.clone(),
    )];
    run_until(rig, &mut xs, Duration::from_ms(100), |_, xs| xs[0].done()) && xs[0].got == data
}

#[test]
fn on_the_conventional_stack_restored_processors_serve_again() {
    use snet_host_lib::net::StackMode;
    let mut config = NetConfig {
        stack: StackMode::Conventional { at: 1 },
        clients: 1,
        ..NetConfig::default()
    };
    config.rig.adapters = 2;
    // Unmatched frames (ARP) go to the processor that runs TCP/IP.
    config.rig.nic.firmware.initial_master = ProcessorId(1);
    let mut rig = NetRig::build(config).unwrap();
    rig.spawn(2, Box::new(EchoServer::new(7, 8, 0))).unwrap();
    rig.run_for(Duration::from_ms(1));
    assert!(echo_once(&mut rig, 0, 41000, 7));

    // A processor with applications (not the stack's) fails and returns;
    // its application, started again, listens on the same port again.
    rig.fail_processor(2);
    rig.run_for(Duration::from_ms(1));
    assert!(rig.cluster.nics[0].firmware().listeners().is_empty());
    rig.restore_processor(2).unwrap();
    assert!(
        rig.hosts.sockets[2].is_none(),
        "TCP/IP stays on processor 1"
    );
    rig.spawn(2, Box::new(EchoServer::new(7, 8, 0))).unwrap();
    rig.run_for(Duration::from_ms(1));
    assert!(echo_once(&mut rig, 0, 41001, 7));

    // The stack processor fails and returns with a new instance; the
    // proxies reconnect, and a new application on processor 3 serves.
    rig.fail_processor(1);
    rig.run_for(Duration::from_ms(1));
    rig.restore_processor(1).unwrap();
    let fresh = rig.hosts.sockets[1].as_ref().unwrap();
    assert!(fresh.is_empty(), "a new TCP/IP instance");
    rig.spawn(3, Box::new(EchoServer::new(8, 8, 0))).unwrap();
    rig.run_for(Duration::from_ms(1));
    for a in 0..2 {
        assert_eq!(
            rig.cluster.nics[a].firmware().listeners().len(),
            1,
            "adapter {a}: port 8 only (port 7's listener went with the old instance)"
        );
    }
    assert!(echo_once(&mut rig, 0, 41002, 8));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}
