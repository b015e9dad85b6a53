//! An emulated client host on the LAN with its own TCP/IP instance
//! (smoltcp), as the testbench's client populations and the tests use it.

use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv6Address,
};
use snet_fabric::engine::Traced;
use snet_fabric::time::Instant;
use snet_nic_model::mac;
use snet_nic_model::{Cluster, StationId};

use crate::stack::{net_time, virtual_time};

/// Counters of a client host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Frames received.
    pub rx_frames: u64,
    /// Frames dropped for a bad FCS.
    pub rx_fcs_errors: u64,
    /// Frames sent.
    pub tx_frames: u64,
}

/// A host on the LAN.
pub struct ClientHost {
    /// Its LAN station.
    pub station: StationId,
    /// The smoltcp interface.
    pub iface: Interface,
    /// Its sockets.
    pub sockets: SocketSet<'static>,
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    counters: ClientCounters,
}

impl std::fmt::Debug for ClientHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHost")
            .field("station", &self.station)
            .field("counters", &self.counters)
            .finish()
    }
}

fn caps() -> DeviceCapabilities {
    let mut c = DeviceCapabilities::default();
    c.medium = Medium::Ethernet;
    c.max_transmission_unit = 1514;
    c
}

struct Lan<'a> {
    rx: &'a mut VecDeque<Vec<u8>>,
    tx: &'a mut Vec<Vec<u8>>,
}

struct RxTok(Vec<u8>);
struct TxTok<'b>(&'b mut Vec<Vec<u8>>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl phy::Device for Lan<'_> {
    type RxToken<'b>
        = RxTok
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b>
    where
        Self: 'b;
    fn receive(&mut self, _: NetInstant) -> Option<(RxTok, TxTok<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxTok(f), TxTok(self.tx)))
    }
    fn transmit(&mut self, _: NetInstant) -> Option<TxTok<'_>> {
        Some(TxTok(self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        caps()
    }
}

impl ClientHost {
    /// A host on LAN station `station` (attached with address `mac`).
    pub fn new(
        station: StationId,
        mac: [u8; 6],
        ipv4: Option<(Ipv4Address, u8)>,
        ipv6: Option<(Ipv6Address, u8)>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let (mut rx, mut tx) = (VecDeque::new(), Vec::new());
        let mut dev = Lan {
            rx: &mut rx,
            tx: &mut tx,
        };
        let mut iface = Interface::new(config, &mut dev, net_time(now));
        iface.update_ip_addrs(|addrs| {
            if let Some((a, len)) = ipv4 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a), len));
            }
            if let Some((a, len)) = ipv6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(a), len));
            }
        });
        ClientHost {
            station,
            iface,
            sockets: SocketSet::new(Vec::new()),
            rx,
            tx,
            counters: ClientCounters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &ClientCounters {
        &self.counters
    }

    /// A frame (FCS included) reached the host's station.
    pub fn deliver(&mut self, frame: Vec<u8>) {
        match mac::check_fcs(&frame) {
            Some(body) => {
                self.counters.rx_frames += 1;
                let n = body.len();
                let mut f = frame;
                f.truncate(n);
                self.rx.push_back(f);
            }
            None => self.counters.rx_fcs_errors += 1,
        }
    }

    /// Runs the host's stack now and puts what it sends on the LAN; returns
    /// when it next wants to be polled.
    pub fn poll<H: Traced>(&mut self, cluster: &mut Cluster<H>) -> Option<Instant> {
        let next = self.poll_stack(cluster.now());
        let station = self.station;
        for mut f in self.take_sent() {
            mac::pad_to_minimum(&mut f);
            mac::append_fcs(&mut f);
            cluster.lan_transmit(station, f);
        }
        next
    }

    /// Runs the host's stack at `now` without a cluster: what it sends
    /// waits in [`ClientHost::take_sent`] (for a host outside the engine,
    /// such as a test's client of a live session). Returns when it next
    /// wants to be polled.
    pub fn poll_stack(&mut self, now: Instant) -> Option<Instant> {
        let mut dev = Lan {
            rx: &mut self.rx,
            tx: &mut self.tx,
        };
        self.iface.poll(net_time(now), &mut dev, &mut self.sockets);
        self.iface
            .poll_at(net_time(now), &self.sockets)
            .map(virtual_time)
    }

    /// The frames the stack sent since the last call (Ethernet, without
    /// padding or FCS), in order.
    pub fn take_sent(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.counters.tx_frames += self.tx.len() as u64;
        self.tx.drain(..)
    }
}
