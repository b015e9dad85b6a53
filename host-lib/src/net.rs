//! A cluster whose processors run TCP/IP: the [`rig`](crate::rig) cluster
//! with a [`ProcessorStack`] on every processor and [`ClientHost`]s on the
//! LAN, driven by one [`HostModel`] that polls each instance when a frame,
//! an interrupt or its own timer says so.

use smoltcp::wire::{Ipv4Address, Ipv6Address};
use snet_fabric::EndpointId;
use snet_fabric::engine::ComponentId;
use snet_fabric::network::DmaCompletion;
use snet_fabric::time::{Duration, Instant};
use snet_nic_model::mac::{LinkSpeed, MacAddr};
use snet_nic_model::{Cluster, HostModel, StationId};

use crate::client::ClientHost;
use crate::processor::Processor;
use crate::rig::{NoEvent, Rig, RigConfig, adapter_mac, control_and_wait};
use crate::stack::{ClusterAddress, ProcessorStack};

/// The cluster's IPv4 address in the examples and tests.
pub const CLUSTER_IPV4: Ipv4Address = Ipv4Address::new(198, 18, 0, 10);
/// The cluster's IPv6 address in the examples and tests.
pub const CLUSTER_IPV6: Ipv6Address = Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

/// The multicast groups an adapter serving `ipv6` must accept: all nodes,
/// and the solicited-node group of the address (for neighbour discovery).
pub fn ipv6_groups(ipv6: Ipv6Address) -> [MacAddr; 2] {
    let o = ipv6.octets();
    [
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        MacAddr([0x33, 0x33, 0xff, o[13], o[14], o[15]]),
    ]
}

/// The processors' and clients' side of a [`NetRig`].
#[derive(Debug)]
pub struct NetHosts {
    /// One per processor.
    pub processors: Vec<Processor>,
    /// Each processor's TCP/IP instance (`None` once the processor failed).
    pub stacks: Vec<Option<ProcessorStack>>,
    stack_components: Vec<ComponentId>,
    /// The client hosts.
    pub clients: Vec<ClientHost>,
    client_components: Vec<ComponentId>,
    /// Errors met on the host side (a test asserts this stays empty).
    pub errors: Vec<String>,
}

impl NetHosts {
    fn processor_index(&self, ep: EndpointId) -> Option<usize> {
        self.processors.iter().position(|p| p.endpoint() == ep)
    }

    /// Polls processor `i`'s instance now and schedules its next poll.
    pub fn poll_processor(&mut self, cluster: &mut Cluster<NoEvent>, i: usize) {
        let Some(stack) = self.stacks.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let Some(qp) = self.processors[i].queue_mut(0) else {
            return;
        };
        match stack.poll(cluster, qp) {
            Ok(Some(at)) => cluster.wake_host(self.stack_components[i], at.max(cluster.now())),
            Ok(None) => {}
            Err(e) => self.errors.push(format!("P{i}: {e}")),
        }
    }

    /// Polls client `c` now and schedules its next poll.
    pub fn poll_client(&mut self, cluster: &mut Cluster<NoEvent>, c: usize) {
        if let Some(at) = self.clients[c].poll(cluster) {
            cluster.wake_host(self.client_components[c], at.max(cluster.now()));
        }
    }
}

impl HostModel<NoEvent> for NetHosts {
    fn event(&mut self, _: &mut Cluster<NoEvent>, _: ComponentId, _: NoEvent) {}

    fn wake(&mut self, cluster: &mut Cluster<NoEvent>, component: ComponentId) {
        if let Some(i) = self.stack_components.iter().position(|&c| c == component) {
            self.poll_processor(cluster, i);
        } else if let Some(c) = self.client_components.iter().position(|&c| c == component) {
            self.poll_client(cluster, c);
        }
    }

    fn interrupt(&mut self, cluster: &mut Cluster<NoEvent>, processor: EndpointId) {
        let Some(i) = self.processor_index(processor) else {
            return;
        };
        if self.stacks[i].is_none() {
            return;
        }
        if let Err(e) = self.processors[i].on_interrupt(cluster) {
            self.errors.push(format!("P{i}: {e}"));
        }
        self.poll_processor(cluster, i);
    }

    fn dma_done(&mut self, cluster: &mut Cluster<NoEvent>, done: DmaCompletion) {
        if let Some(i) = self.processor_index(done.requester) {
            if self.stacks[i].is_none() {
                return;
            }
            if let Err(e) = self.processors[i].on_dma_done(cluster, &done) {
                self.errors.push(format!("P{i}: {e}"));
            }
        }
    }

    fn lan_frame(&mut self, cluster: &mut Cluster<NoEvent>, station: StationId, frame: Vec<u8>) {
        if let Some(c) = self.clients.iter().position(|h| h.station == station) {
            self.clients[c].deliver(frame);
            self.poll_client(cluster, c);
        }
    }
}

/// A cluster of processors running TCP/IP, one adapter, and client hosts.
#[derive(Debug)]
pub struct NetRig {
    /// The world.
    pub cluster: Cluster<NoEvent>,
    /// Processors, stacks and clients.
    pub hosts: NetHosts,
    /// Processor endpoints.
    pub processors: Vec<EndpointId>,
}

impl NetRig {
    /// Builds the rig with `clients` client hosts (client `c` at
    /// 198.18.1.`c+1` and 2001:db8::1:`c+1`), every processor's instance at
    /// the cluster address.
    pub fn new(mut config: RigConfig, clients: usize) -> Result<NetRig, String> {
        config.nic.mac.multicast.extend(ipv6_groups(CLUSTER_IPV6));
        let seed = config.seed;
        let rig = Rig::new(config)?;
        let Rig {
            mut cluster,
            hosts,
            processors,
            ..
        } = rig;
        let now = cluster.now();
        let address = ClusterAddress {
            mac: adapter_mac(0).0,
            ipv4: Some((CLUSTER_IPV4, 15)),
            ipv6: Some((CLUSTER_IPV6, 64)),
        };
        let mut stacks = Vec::new();
        let mut stack_components = Vec::new();
        for (i, p) in hosts.processors.iter().enumerate() {
            let mtu = p.queues()[0].setup().chunk as usize;
            stacks.push(Some(ProcessorStack::new(
                address,
                seed.wrapping_mul(1000).wrapping_add(i as u64),
                mtu,
                now,
            )));
            stack_components.push(cluster.host_component());
        }
        let mut hosts = NetHosts {
            processors: hosts.processors,
            stacks,
            stack_components,
            clients: Vec::new(),
            client_components: Vec::new(),
            errors: Vec::new(),
        };
        for c in 0..clients {
            let n = c as u8 + 1;
            let mac = [0x02, 0, 0, 1, 0, n];
            let station = cluster.lan.attach(MacAddr(mac), LinkSpeed::GBIT_1);
            hosts.clients.push(ClientHost::new(
                station,
                mac,
                Some((Ipv4Address::new(198, 18, 1, n), 15)),
                Some((Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, n as u16), 64)),
                seed.wrapping_mul(7919).wrapping_add(c as u64),
                now,
            ));
            hosts.client_components.push(cluster.host_component());
        }
        Ok(NetRig {
            cluster,
            hosts,
            processors,
        })
    }

    /// Sends a control message from processor `p` (index) to the adapter
    /// and waits for the answer.
    pub fn control(
        &mut self,
        p: usize,
        message: snet_firmware::control::ControlMessage,
    ) -> crate::ControlOutcome {
        let out = control_and_wait(
            &mut self.cluster,
            &mut self.hosts,
            |h| &mut h.processors[p],
            |h, e| h.errors.push(e),
            1,
            p,
            message,
        );
        out[0]
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.cluster.now() + d;
        self.cluster.run_until(until, &mut self.hosts);
    }

    /// Polls every instance now (after an application changed its sockets).
    pub fn kick(&mut self) {
        for i in 0..self.hosts.processors.len() {
            self.hosts.poll_processor(&mut self.cluster, i);
        }
        for c in 0..self.hosts.clients.len() {
            self.hosts.poll_client(&mut self.cluster, c);
        }
    }

    /// Fails processor `p` (index) now: its instance and applications
    /// vanish with it, and the adapter is told.
    pub fn fail_processor(&mut self, p: usize) {
        self.hosts.stacks[p] = None;
        let ep = self.processors[p];
        if let Err(e) = self
            .cluster
            .fail(snet_fabric::network::FaultTarget::Endpoint(ep))
        {
            self.hosts.errors.push(e.to_string());
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.cluster.now()
    }
}
