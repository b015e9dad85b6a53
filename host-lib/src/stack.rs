//! A TCP/IP instance per processor: smoltcp over the processor's queue pairs.
//!
//! Every processor runs its own instance with the cluster's single IP and
//! MAC. Its `phy::Device` lends the queue pairs' DMA buffers: a receive
//! token hands smoltcp the frame in place in processor memory (dropping it
//! reposts the buffer), a transmit token lets smoltcp build the frame
//! directly in a pool chunk, which is then posted to the TX ring. No payload
//! is copied on the host side.
//!
//! ## Several adapters
//! A processor has one queue pair per adapter. The instance reads frames
//! from every queue pair but sends only through the *active* adapter's
//! ([`QueueRole`]): the adapters hold the same filters, so whichever one the
//! LAN delivers a frame to hands it to the right processor, and every frame
//! leaves through the one port the LAN knows the cluster's MAC at.
//! Group-addressed frames (broadcast, multicast) reach every adapter's port;
//! only the active adapter's copy is used.
//!
//! ## Neighbours
//! The adapter sends unmatched traffic — ARP and neighbour discovery among
//! it — to the master processor only, so the other processors never see a
//! peer's ARP reply. Every processor instead learns a peer's link address
//! from the frames the adapter delivers to it (the adapter chose this
//! processor for the frame, so the peer is on the LAN): the first time a
//! source (IP, MAC) pair is seen, the library feeds its stack an equivalent
//! ARP reply (IPv4) or unsolicited neighbour advertisement (IPv6) just before
//! the frame itself.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr,
    RawHardwareAddress, TcpPacket,
};
use snet_fabric::engine::Traced;
use snet_fabric::network::Fabric;
use snet_fabric::time::{Duration, Instant};
use snet_firmware::FiveTuple;
use snet_nic_model::Cluster;
use snet_nic_model::ring::TxFlags;

use crate::queue::{HostError, QueuePair, TxBuffer};

/// How long a processor with no adapter to send through waits before it
/// polls its TCP/IP instance again.
const NO_ADAPTER_BACKOFF: Duration = Duration::from_ms(1);

/// smoltcp's time from virtual time (microseconds).
pub fn net_time(t: Instant) -> NetInstant {
    NetInstant::from_micros((t.as_ps() / 1_000_000) as i64)
}

/// Virtual time from smoltcp's.
pub fn virtual_time(t: NetInstant) -> Instant {
    Instant::from_ns(t.total_micros().max(0) as u64 * 1000)
}

/// The addresses of the cluster, shared by every processor's instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterAddress {
    /// The adapter's (and so every processor's) MAC.
    pub mac: [u8; 6],
    /// IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Address, u8)>,
    /// IPv6 address and prefix length.
    pub ipv6: Option<(Ipv6Address, u8)>,
}

/// Counters of a processor's instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackCounters {
    /// Frames handed to the instance.
    pub rx_frames: u64,
    /// Frames the instance sent.
    pub tx_frames: u64,
    /// Frames the instance wanted to send with no buffer or ring room free.
    pub tx_blocked: u64,
    /// Neighbour entries learnt from delivered frames.
    pub neighbours_learnt: u64,
    /// Frames held back for a connection being handed off.
    pub diverted: u64,
    /// Frames of a connection handed to another processor that still
    /// reached this one (dropped; zero once the adapter's filter moved).
    pub strays: u64,
    /// Frames fed to the instance from outside the queue pair (a handed-off
    /// connection's queued frames).
    pub injected: u64,
    /// Group-addressed frames dropped because they came through an adapter
    /// other than the active one (which delivers its own copy).
    pub standby_dropped: u64,
    /// Polls stopped before a connection attempt until a listening socket
    /// was opened for it (see [`ListenGate`]).
    pub syn_waits: u64,
}

/// How a poll of the instance uses one of the processor's queue pairs (one
/// per adapter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// Its adapter is down: frames it delivered before it failed are still
    /// read, but the queue pair is not polled (no doorbell would reach the
    /// adapter) and nothing is sent through it.
    Idle,
    /// A standby adapter's: polled and read, nothing sent through it;
    /// group-addressed frames are dropped.
    Standby,
    /// The active adapter's: polled, read, and the one every frame is sent
    /// through.
    Active,
}

/// What the library does with received TCP frames before its TCP/IP
/// instance sees them — the hooks of the SYN-time connection hand-off
/// (see [`crate::socket`]):
/// - a SYN to a port in `handoff_ports` opens a new *diverted* connection:
///   it and every later frame of its 5-tuple are copied out and held in
///   `diverted` instead of reaching the instance (which would answer);
/// - frames of a 5-tuple in `handed` (given to another processor) are
///   counted as strays and dropped;
/// - frames in `inject` are fed to the instance before the queue pair's.
#[derive(Debug, Default)]
pub struct Steering {
    /// Local TCP ports whose new connections are held for hand-off.
    pub handoff_ports: BTreeSet<u16>,
    /// Held frames, per connection, in arrival order.
    pub diverted: std::collections::BTreeMap<FiveTuple, Vec<Vec<u8>>>,
    /// Connections handed to another processor.
    pub handed: BTreeSet<FiveTuple>,
    /// Frames to feed to the instance first.
    pub inject: std::collections::VecDeque<Vec<u8>>,
}

impl Steering {
    fn active(&self) -> bool {
        !(self.handoff_ports.is_empty() && self.diverted.is_empty() && self.handed.is_empty())
    }

    /// What to do with a received frame.
    fn classify(&self, frame: &[u8]) -> Steer {
        let Some((tuple, syn_only)) = tcp_tuple(frame) else {
            return Steer::Pass;
        };
        if self.diverted.contains_key(&tuple) {
            Steer::Divert(tuple)
        } else if self.handed.contains(&tuple) {
            Steer::Stray
        } else if syn_only && self.handoff_ports.contains(&tuple.local_port) {
            Steer::Divert(tuple)
        } else {
            Steer::Pass
        }
    }
}

enum Steer {
    Pass,
    Divert(FiveTuple),
    Stray,
}

/// The 5-tuple of a TCP frame as seen by the receiving processor (remote =
/// source), and whether it is a bare SYN (a connection attempt).
pub fn tcp_tuple(frame: &[u8]) -> Option<(FiveTuple, bool)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src, dst, payload): (std::net::IpAddr, std::net::IpAddr, &[u8]) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let p = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if p.next_header() != IpProtocol::Tcp || p.more_frags() || p.frag_offset() != 0 {
                return None;
            }
            let body = &eth.payload()[usize::from(p.header_len())..usize::from(p.total_len())];
            (p.src_addr().into(), p.dst_addr().into(), body)
        }
        EthernetProtocol::Ipv6 => {
            let p = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if p.next_header() != IpProtocol::Tcp {
                return None;
            }
            let body = &eth.payload()[40..40 + usize::from(p.payload_len())];
            (p.src_addr().into(), p.dst_addr().into(), body)
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    let t = FiveTuple::tcp(src, tcp.src_port(), dst, tcp.dst_port());
    Some((t, tcp.syn() && !tcp.ack()))
}

/// Listening sockets opened on demand. A listener keeps one smoltcp socket
/// listening rather than one per backlog slot (every socket costs its
/// buffers and a look at each frame), so the device lets a connection
/// attempt (a bare SYN) reach the instance only while a listening socket
/// is left for it: the poll stops before a SYN that would find none, the
/// library opens more (up to the backlog), and polls again. A SYN beyond a
/// full backlog goes through, and the instance refuses it, as it would
/// with every backlog slot pre-opened.
#[derive(Debug, Default)]
pub struct ListenGate {
    /// The listening ports of this instance.
    pub ports: Vec<GatePort>,
    /// The port of a SYN the last poll stopped before.
    pub starved: Option<u16>,
}

/// One listening port of a [`ListenGate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePort {
    /// The TCP port.
    pub port: u16,
    /// Sockets in the LISTEN state, less the SYNs already let through.
    pub listening: u32,
    /// Let every SYN through (the backlog is full, or no more sockets can
    /// be opened).
    pub pass: bool,
}

impl ListenGate {
    /// Whether `frame` may reach the instance now.
    fn admit(&mut self, frame: &[u8]) -> bool {
        let Some((tuple, true)) = tcp_tuple(frame) else {
            return true;
        };
        let Some(p) = self.ports.iter_mut().find(|p| p.port == tuple.local_port) else {
            return true;
        };
        if p.listening > 0 {
            p.listening -= 1;
            true
        } else if p.pass {
            true
        } else {
            self.starved = Some(p.port);
            false
        }
    }
}

/// One processor's TCP/IP instance.
pub struct ProcessorStack {
    /// The smoltcp interface.
    pub iface: Interface,
    /// Its sockets (the applications on this processor use them).
    pub sockets: SocketSet<'static>,
    address: ClusterAddress,
    learnt: Neighbours,
    counters: StackCounters,
    /// Frames held back from the instance or fed to it (connection hand-off).
    pub steering: Steering,
    /// Connection attempts held until a listening socket is open for them.
    pub gate: ListenGate,
}

impl std::fmt::Debug for ProcessorStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorStack")
            .field("address", &self.address)
            .field("sockets", &self.sockets.iter().count())
            .field("counters", &self.counters)
            .finish()
    }
}

/// The device capabilities of a queue pair: Ethernet, the chunk size as
/// MTU bound, checksums computed in software on both sides (the adapter's
/// offloads stay available to applications that post frames themselves).
fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = mtu;
    caps.max_burst_size = Some(32);
    let mut cs = ChecksumCapabilities::default();
    cs.ipv4 = Checksum::Both;
    cs.tcp = Checksum::Both;
    cs.udp = Checksum::Both;
    cs.icmpv4 = Checksum::Both;
    cs.icmpv6 = Checksum::Both;
    caps.checksum = cs;
    caps
}

/// What the tokens of one poll did, applied to the queue pairs afterwards.
#[derive(Default)]
struct Log {
    /// RX chunks lent to smoltcp (given back after the poll), with their
    /// queue pair.
    received: Vec<(usize, u32)>,
    /// TX chunks of the active queue pair reserved for a token (posted if
    /// written, released if not).
    reserved: Vec<TxBuffer>,
    /// TX chunks written, with their length.
    written: Vec<(u32, usize)>,
    /// Frames built with no chunk to hold them (dropped).
    dropped: u64,
}

/// The queue pairs as one smoltcp device, for one poll. A receive token
/// lends the frame in place; its paired transmit token (smoltcp may answer
/// while it reads) writes into a chunk of the active queue pair reserved
/// beforehand, so both are views of disjoint parts of processor memory, and
/// nothing is copied.
struct QueueDevice<'a> {
    qps: &'a mut [QueuePair],
    roles: &'a [QueueRole],
    /// The active queue pair, if any adapter is up.
    tx: Option<usize>,
    fabric: &'a mut Fabric,
    processor: snet_fabric::EndpointId,
    log: RefCell<Log>,
    learnt: &'a mut Neighbours,
    address: ClusterAddress,
    counters: &'a mut StackCounters,
    steering: &'a mut Steering,
    gate: &'a mut ListenGate,
    mtu: usize,
}

enum Rx<'b> {
    /// A synthesized neighbour announcement, or an injected frame.
    Owned(Vec<u8>),
    /// A received frame, in place.
    InPlace(&'b [u8]),
}

struct Tx<'b> {
    chunk: Option<(u32, &'b mut [u8])>,
    log: &'b RefCell<Log>,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self {
            Rx::Owned(v) => f(&v),
            Rx::InPlace(b) => f(b),
        }
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.chunk {
            Some((chunk, buf)) if len <= buf.len() => {
                let r = f(&mut buf[..len]);
                self.log.borrow_mut().written.push((chunk, len));
                r
            }
            // No chunk was free, or the frame does not fit one: it is
            // built and dropped (counted; TCP sends it again).
            _ => {
                self.log.borrow_mut().dropped += 1;
                f(&mut vec![0u8; len])
            }
        }
    }
}

/// Reserves a TX chunk of the active queue pair `tx` for a token (logged,
/// so it is posted if written and released if not) and returns it as a
/// slice of processor memory.
fn reserve_slice<'s>(
    qps: &mut [QueuePair],
    tx: Option<usize>,
    fabric: &'s mut Fabric,
    processor: snet_fabric::EndpointId,
    log: &RefCell<Log>,
) -> Option<(u32, &'s mut [u8])> {
    let qp = qps.get_mut(tx?)?;
    let (chunk, at) = reserve(qp, log)?;
    let size = qp.setup().chunk as u64;
    let m = fabric.memory_mut(processor).ok()?;
    Some((chunk, m.slice_mut(at, size).ok()?))
}

impl QueueDevice<'_> {
    /// The queue pair whose next frame goes to smoltcp: the first, in
    /// adapter order, with a frame left once group-addressed frames of
    /// non-active queue pairs are dropped and frames held back or dropped
    /// for a hand-off are taken.
    fn next_rx(&mut self) -> Option<usize> {
        for q in 0..self.qps.len() {
            let active = self.roles.get(q) == Some(&QueueRole::Active);
            while let Some(frame) = self.qps[q].peek(self.fabric) {
                if !active && frame.first().is_some_and(|b| b & 1 == 1) {
                    self.counters.standby_dropped += 1;
                } else if self.steering.active() {
                    match self.steering.classify(frame) {
                        Steer::Pass => return Some(q),
                        Steer::Divert(t) => {
                            let copy = frame.to_vec();
                            self.steering.diverted.entry(t).or_default().push(copy);
                            self.counters.diverted += 1;
                        }
                        Steer::Stray => self.counters.strays += 1,
                    }
                } else {
                    return Some(q);
                }
                let Some((chunk, _, _)) = self.qps[q].take_received() else {
                    break;
                };
                self.log.get_mut().received.push((q, chunk));
            }
        }
        None
    }
}

fn reserve(qp: &mut QueuePair, log: &RefCell<Log>) -> Option<(u32, snet_fabric::memory::ProcAddr)> {
    if !qp.can_send() {
        return None;
    }
    let buf = qp.tx_buffer()?;
    let chunk = buf.chunk();
    let at = qp.chunk_addr(chunk);
    log.borrow_mut().reserved.push(buf);
    Some((chunk, at))
}

impl<'a> phy::Device for QueueDevice<'a> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, now: NetInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Frames handed over from another processor go first (after the
        // announcement of their sender, if it is new here).
        if let Some(front) = self.steering.inject.front()
            && let Some((ip, mac)) = source_of(front)
            && self.learnt.heard(ip, mac, now)
        {
            self.counters.neighbours_learnt += 1;
            if let Some(a) = announcement(&self.address, ip, mac) {
                let chunk =
                    reserve_slice(self.qps, self.tx, self.fabric, self.processor, &self.log);
                return Some((
                    Rx::Owned(a),
                    Tx {
                        chunk,
                        log: &self.log,
                    },
                ));
            }
        }
        if let Some(f) = self.steering.inject.pop_front() {
            self.counters.injected += 1;
            let chunk = reserve_slice(self.qps, self.tx, self.fabric, self.processor, &self.log);
            return Some((
                Rx::Owned(f),
                Tx {
                    chunk,
                    log: &self.log,
                },
            ));
        }
        // Frames held back or dropped for a hand-off, and copies of group
        // frames from adapters other than the active one, never reach smoltcp.
        let r = self.next_rx()?;
        // A peer seen for the first time: announce it before its frame.
        let frame = self.qps[r].peek(self.fabric)?;
        if let Some((ip, mac)) = source_of(frame) {
            if self.learnt.heard(ip, mac, now) {
                self.counters.neighbours_learnt += 1;
                if let Some(a) = announcement(&self.address, ip, mac) {
                    let chunk =
                        reserve_slice(self.qps, self.tx, self.fabric, self.processor, &self.log);
                    return Some((
                        Rx::Owned(a),
                        Tx {
                            chunk,
                            log: &self.log,
                        },
                    ));
                }
            }
        }
        // A connection attempt waits for a listening socket.
        if !self.gate.ports.is_empty() && !self.gate.admit(self.qps[r].peek(self.fabric)?) {
            self.counters.syn_waits += 1;
            return None;
        }
        let (rx_chunk, len, _) = self.qps[r].take_received()?;
        self.log.get_mut().received.push((r, rx_chunk));
        self.counters.rx_frames += 1;
        let rx_at = self.qps[r].chunk_addr(rx_chunk);
        let tx = match self.tx.and_then(|t| self.qps.get_mut(t)) {
            Some(qp) => reserve(qp, &self.log).map(|(c, at)| (c, at, qp.setup().chunk as u64)),
            None => None,
        };
        let m = self.fabric.memory_mut(self.processor).ok()?;
        match tx {
            Some((chunk, tx_at, size)) => {
                let (rx, txb) = m.split_pair((rx_at, len as u64), (tx_at, size)).ok()?;
                Some((
                    Rx::InPlace(rx),
                    Tx {
                        chunk: Some((chunk, txb)),
                        log: &self.log,
                    },
                ))
            }
            None => {
                let rx = m.slice(rx_at, len as u64).ok()?;
                Some((
                    Rx::InPlace(rx),
                    Tx {
                        chunk: None,
                        log: &self.log,
                    },
                ))
            }
        }
    }

    fn transmit(&mut self, _: NetInstant) -> Option<Self::TxToken<'_>> {
        let qp = self.qps.get_mut(self.tx?)?;
        let (chunk, at) = reserve(qp, &self.log)?;
        let size = qp.setup().chunk as u64;
        let m = self.fabric.memory_mut(self.processor).ok()?;
        Some(Tx {
            chunk: Some((chunk, m.slice_mut(at, size).ok()?)),
            log: &self.log,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}

/// Entries of the TCP/IP instance's neighbour cache (smoltcp's
/// `iface-neighbor-cache-count-128` feature, set in the workspace).
const NEIGHBOUR_CACHE: usize = 128;

/// How long smoltcp keeps a neighbour it has not heard from (its entry
/// lifetime is 60 s), less a margin.
const NEIGHBOUR_LIFETIME_US: i64 = 59_000_000;

/// The peers the TCP/IP instance surely has in its neighbour cache.
///
/// smoltcp learns a peer's MAC only from ARP and neighbour discovery,
/// while the cluster's peers are answered by the master processor alone,
/// so every processor is told of a peer with an announcement before the
/// peer's first frame. The cache is bounded: when it is full, smoltcp
/// evicts the entry heard from longest ago (every unicast IP frame from a
/// peer refreshes its entry), and a segment to an evicted peer is dropped
/// (smoltcp asks with ARP, whose answer goes to the master). So this
/// mirror keeps the peers heard from most recently, up to half the cache:
/// a peer in it is certainly in smoltcp's cache, and a peer not in it is
/// announced again before its frame.
#[derive(Debug, Default)]
struct Neighbours {
    /// Peer → (MAC, when last heard from, µs of smoltcp time).
    heard: BTreeMap<IpAddress, ([u8; 6], i64)>,
}

impl Neighbours {
    /// A frame from `ip` at `mac` is about to be handed to the instance at
    /// `now`: true if the instance must first be told of the peer.
    fn heard(&mut self, ip: IpAddress, mac: [u8; 6], now: NetInstant) -> bool {
        let t = now.total_micros();
        if let Some(e) = self.heard.get_mut(&ip)
            && e.0 == mac
            && t - e.1 < NEIGHBOUR_LIFETIME_US
        {
            e.1 = t;
            return false;
        }
        if !self.heard.contains_key(&ip) && self.heard.len() >= NEIGHBOUR_CACHE / 2 {
            // Least recently heard; ties to the lowest address (the map's
            // order), so the choice is deterministic.
            if let Some(oldest) = self
                .heard
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k)
            {
                self.heard.remove(&oldest);
            }
        }
        self.heard.insert(ip, (mac, t));
        true
    }
}

/// The unicast source (IP, MAC) of an IPv4 or IPv6 frame.
fn source_of(frame: &[u8]) -> Option<(IpAddress, [u8; 6])> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let mac = eth.src_addr();
    if !mac.is_unicast() {
        return None;
    }
    let ip = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let p = Ipv4Packet::new_checked(eth.payload()).ok()?;
            IpAddress::Ipv4(p.src_addr())
        }
        EthernetProtocol::Ipv6 => {
            let p = Ipv6Packet::new_checked(eth.payload()).ok()?;
            let a = p.src_addr();
            if a.is_unspecified() || a.is_multicast() {
                return None;
            }
            IpAddress::Ipv6(a)
        }
        _ => return None,
    };
    Some((ip, mac.0))
}

/// An ARP reply or neighbour advertisement telling this processor's stack
/// that `ip` is at `mac`.
fn announcement(us: &ClusterAddress, ip: IpAddress, mac: [u8; 6]) -> Option<Vec<u8>> {
    let peer = EthernetAddress(mac);
    let ours = EthernetAddress(us.mac);
    match ip {
        IpAddress::Ipv4(peer_ip) => {
            let (our_ip, _) = us.ipv4?;
            let arp = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: peer,
                source_protocol_addr: peer_ip,
                target_hardware_addr: ours,
                target_protocol_addr: our_ip,
            };
            Some(arp_frame(peer, ours, &arp))
        }
        IpAddress::Ipv6(peer_ip) => {
            let (our_ip, _) = us.ipv6?;
            Some(advert_frame((peer, peer_ip), (ours, our_ip), peer_ip, peer))
        }
    }
}

/// An Ethernet frame from `src` to `dst` carrying `arp`.
fn arp_frame(src: EthernetAddress, dst: EthernetAddress, arp: &ArpRepr) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

/// A neighbour advertisement (override flag) from `from` to `to` (each a
/// MAC and an IPv6 address) saying that `target` is at `lladdr`.
fn advert_frame(
    from: (EthernetAddress, Ipv6Address),
    to: (EthernetAddress, Ipv6Address),
    target: Ipv6Address,
    lladdr: EthernetAddress,
) -> Vec<u8> {
    let nd = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE,
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(lladdr)),
    });
    let ip6 = Ipv6Repr {
        src_addr: from.1,
        dst_addr: to.1,
        next_header: IpProtocol::Icmpv6,
        payload_len: nd.buffer_len(),
        hop_limit: 255,
    };
    let eth = EthernetRepr {
        src_addr: from.0,
        dst_addr: to.0,
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip6.buffer_len() + nd.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut pkt = Ipv6Packet::new_unchecked(frame.payload_mut());
    ip6.emit(&mut pkt);
    nd.emit(
        &from.1,
        &to.1,
        &mut Icmpv6Packet::new_unchecked(pkt.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// The frames an adapter taking over the cluster's MAC sends from its port
/// so the LAN learns where the address lives now: a gratuitous ARP request
/// (broadcast; sender and target the cluster's IPv4 address) and an
/// unsolicited neighbour advertisement to all nodes (override flag; target
/// the cluster's IPv6 address), each from the cluster's MAC, for the
/// address families the cluster has. Without FCS.
pub fn takeover_announcements(us: &ClusterAddress) -> Vec<Vec<u8>> {
    let ours = EthernetAddress(us.mac);
    let mut out = Vec::new();
    if let Some((ip, _)) = us.ipv4 {
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: ours,
            source_protocol_addr: ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ip,
        };
        out.push(arp_frame(ours, EthernetAddress::BROADCAST, &arp));
    }
    if let Some((ip, _)) = us.ipv6 {
        let all_nodes = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        out.push(advert_frame(
            (ours, ip),
            (EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), all_nodes),
            ip,
            ours,
        ));
    }
    out
}

impl ProcessorStack {
    /// An instance with the cluster's addresses, seeded with `seed` (from
    /// the engine, so runs repeat).
    pub fn new(address: ClusterAddress, seed: u64, mtu: usize, now: Instant) -> Self {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(address.mac)));
        config.random_seed = seed;
        let mut dev = NullDevice { mtu };
        let mut iface = Interface::new(config, &mut dev, net_time(now));
        iface.update_ip_addrs(|addrs| {
            if let Some((a, len)) = address.ipv4 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a), len));
            }
            if let Some((a, len)) = address.ipv6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(a), len));
            }
        });
        ProcessorStack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            address,
            learnt: Neighbours::default(),
            counters: StackCounters::default(),
            steering: Steering::default(),
            gate: ListenGate::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &StackCounters {
        &self.counters
    }

    /// Runs the instance at the current virtual time over queue pair `qp`
    /// alone: takes completions, processes every received frame, sends what
    /// the sockets have, reposts buffers and rings the doorbells. Returns
    /// when it next wants to be polled.
    pub fn poll<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        qp: &mut QueuePair,
    ) -> Result<Option<Instant>, HostError> {
        self.poll_queues(cluster, std::slice::from_mut(qp), &[QueueRole::Active])
    }

    /// Runs the instance at the current virtual time over the processor's
    /// queue pairs, each used as `roles` says (a queue pair without a role
    /// is [`QueueRole::Idle`]): takes the completions of every polled queue
    /// pair, processes every frame received on any of them, sends what the
    /// sockets have through the active one (with none, nothing leaves: the
    /// frames count as blocked and TCP sends them again), reposts buffers
    /// and rings the doorbells. Returns when it next wants to be polled.
    pub fn poll_queues<H: Traced>(
        &mut self,
        cluster: &mut Cluster<H>,
        qps: &mut [QueuePair],
        roles: &[QueueRole],
    ) -> Result<Option<Instant>, HostError> {
        let now = cluster.now();
        let Some(first) = qps.first() else {
            return Ok(self
                .iface
                .poll_at(net_time(now), &self.sockets)
                .map(virtual_time));
        };
        let mtu = (first.setup().chunk as usize - 14).min(9000 + 14);
        let processor = first.processor();
        let role = |q: usize| roles.get(q).copied().unwrap_or(QueueRole::Idle);
        let tx = (0..qps.len()).find(|&q| role(q) == QueueRole::Active);
        for (q, qp) in qps.iter_mut().enumerate() {
            if role(q) != QueueRole::Idle {
                qp.poll(cluster)?;
            }
        }
        let log = {
            let mut dev = QueueDevice {
                qps: &mut *qps,
                roles,
                tx,
                fabric: &mut cluster.fabric,
                processor,
                log: RefCell::new(Log::default()),
                learnt: &mut self.learnt,
                address: self.address,
                counters: &mut self.counters,
                steering: &mut self.steering,
                gate: &mut self.gate,
                mtu,
            };
            self.iface.poll(net_time(now), &mut dev, &mut self.sockets);
            dev.log.into_inner()
        };
        self.counters.tx_blocked += log.dropped;
        for (q, chunk) in log.received {
            qps[q].give_back(chunk);
        }
        if let Some(qp) = tx.map(|t| &mut qps[t]) {
            for buf in log.reserved {
                let chunk = buf.chunk();
                match log.written.iter().find(|(c, _)| *c == chunk) {
                    Some(&(_, len)) => {
                        match qp.post(buf, len as u32, TxFlags::empty(), &mut cluster.fabric) {
                            Ok(()) => self.counters.tx_frames += 1,
                            Err(e) => {
                                self.counters.tx_blocked += 1;
                                qp.release(e.into_buffer());
                            }
                        }
                    }
                    None => qp.release(buf),
                }
            }
        }
        for (q, qp) in qps.iter_mut().enumerate() {
            if role(q) != QueueRole::Idle {
                qp.flush(cluster)?;
                // Buffers smoltcp released go back to the RX ring.
                qp.poll(cluster)?;
            }
        }
        let at = self
            .iface
            .poll_at(net_time(now), &self.sockets)
            .map(virtual_time);
        // With no adapter to send through, whatever smoltcp has to send
        // stays pending and it asks to be polled again at once: wait
        // instead (restoring an adapter wakes every processor).
        Ok(match tx {
            Some(_) => at,
            None => at.map(|t| t.max(now + NO_ADAPTER_BACKOFF)),
        })
    }
}

/// A device with nothing to send or receive (to build an interface).
struct NullDevice {
    mtu: usize,
}

impl phy::Device for NullDevice {
    type RxToken<'a> = NullToken;
    type TxToken<'a> = NullToken;
    fn receive(&mut self, _: NetInstant) -> Option<(NullToken, NullToken)> {
        None
    }
    fn transmit(&mut self, _: NetInstant) -> Option<NullToken> {
        None
    }
    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}

struct NullToken;

impl phy::RxToken for NullToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&[])
    }
}

impl phy::TxToken for NullToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(&mut vec![0u8; len])
    }
}

#[cfg(test)]
mod neighbour_tests {
    use super::*;

    fn ip(i: u8) -> IpAddress {
        IpAddress::v4(198, 18, 1, i)
    }

    #[test]
    fn a_peer_is_announced_again_once_it_may_have_left_the_cache() {
        let mut n = Neighbours::default();
        let t = |us: i64| NetInstant::from_micros(us);
        let half = NEIGHBOUR_CACHE / 2;
        for i in 0..half as u8 {
            assert!(
                n.heard(ip(i), [2, 0, 0, 1, 0, i], t(i64::from(i))),
                "new peer {i}"
            );
        }
        // Heard again: known, and now the most recent.
        assert!(!n.heard(ip(0), [2, 0, 0, 1, 0, 0], t(100)));
        // One more peer evicts the least recently heard: peer 1, not 0.
        assert!(n.heard(ip(200), [2, 0, 0, 1, 0, 200], t(101)));
        assert_eq!(n.heard.len(), half);
        assert!(!n.heard(ip(0), [2, 0, 0, 1, 0, 0], t(102)));
        assert!(
            n.heard(ip(1), [2, 0, 0, 1, 0, 1], t(103)),
            "evicted: announced again"
        );
        // A peer whose MAC changed is announced again.
        assert!(n.heard(ip(0), [2, 0, 0, 1, 9, 9], t(104)));
        // Silent for longer than the cache keeps it: announced again.
        assert!(!n.heard(ip(0), [2, 0, 0, 1, 9, 9], t(105)));
        assert!(n.heard(ip(0), [2, 0, 0, 1, 9, 9], t(105 + NEIGHBOUR_LIFETIME_US)));
    }
}
