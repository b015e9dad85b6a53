//! A small ready-made cluster for tests, examples and benchmarks:
//! processors and adapters on one router per plane, the adapters' ports on
//! the in-engine LAN with one client station, and a [`HostModel`] that
//! drives each processor's queue pairs.

use snet_fabric::engine::Traced;
use snet_fabric::network::{DmaCompletion, FabricConfig, FaultTarget};
use snet_fabric::time::{Duration, Instant};
use snet_fabric::topology::{EndpointKind, LinkParams, Topology, shapes};
use snet_fabric::{EndpointId, Plane};
use snet_firmware::ProcessorId;
use snet_firmware::control::{ControlMessage, Envelope};
use snet_nic_model::mac::{self, LinkSpeed, MacAddr};
use snet_nic_model::{Cluster, HostModel, LanConfig, NicConfig, StationId};

use crate::processor::Processor;
use crate::queue::{ControlOutcome, QueueSetup, QueueState};

/// The rig's host events (it has none of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoEvent;

impl Traced for NoEvent {
    fn kind(&self) -> u16 {
        0
    }
    fn keys(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct RigConfig {
    /// Processors.
    pub processors: u16,
    /// Adapters (all serving every processor, the same MAC base + index).
    pub adapters: u16,
    /// Fabric planes.
    pub planes: Vec<Plane>,
    /// Fabric link parameters.
    pub link: LinkParams,
    /// Fabric settings.
    pub fabric: FabricConfig,
    /// LAN settings.
    pub lan: LanConfig,
    /// Adapter settings (name, MAC and processors are filled in per adapter).
    pub nic: NicConfig,
    /// Each processor's queue pair with each adapter.
    pub queue: QueueSetup,
    /// Speed of the client station.
    pub client_speed: LinkSpeed,
    /// Seed.
    pub seed: u64,
    /// The fabric's topology, built by the caller with the endpoints of
    /// [`processor_endpoint`] and [`adapter_endpoint`]; `None`: one router
    /// per plane.
    pub topology: Option<Topology>,
    /// Each adapter's name and MAC, in adapter order (missing entries:
    /// `lan<i>` and [`adapter_mac`]`(i)`).
    pub names: Vec<(String, MacAddr)>,
}

impl Default for RigConfig {
    fn default() -> Self {
        RigConfig {
            processors: 4,
            adapters: 1,
            planes: vec![Plane::X, Plane::Y],
            link: LinkParams::default(),
            fabric: FabricConfig {
                memory_size: 16 << 20,
                ..FabricConfig::default()
            },
            lan: LanConfig::default(),
            nic: NicConfig::default(),
            queue: QueueSetup::default(),
            client_speed: LinkSpeed::GBIT_10,
            seed: 1,
            topology: None,
            names: Vec::new(),
        }
    }
}

/// The fabric endpoint of processor `i` (0-based): `i + 1`.
pub fn processor_endpoint(i: u32) -> EndpointId {
    EndpointId::new(i + 1).expect("processor numbers are small")
}

/// The fabric endpoint of adapter `i` (0-based): `0x1000 + i`, above every
/// processor, so the two never meet.
pub fn adapter_endpoint(i: u32) -> EndpointId {
    EndpointId::new(0x1000 + i).expect("adapter numbers are small")
}

/// The client station's MAC.
pub const CLIENT_MAC: MacAddr = MacAddr(snet_firmware::kit::CLIENT_MAC);

/// MAC of adapter `i`: `02:00:00:00:00:10 + i`.
pub fn adapter_mac(i: u16) -> MacAddr {
    let mut m = snet_firmware::kit::ADAPTER_MAC;
    m[5] = m[5].wrapping_add(i as u8);
    MacAddr(m)
}

/// The processors' side: their queue pairs, and what the client station got.
#[derive(Debug, Default)]
pub struct Hosts {
    /// One per processor, in endpoint order.
    pub processors: Vec<Processor>,
    /// Frames (FCS included) the client station received, with their time.
    pub client_frames: Vec<(Instant, Vec<u8>)>,
    /// Take every received frame at once and repost its buffer (a sink).
    pub consume: bool,
    /// Frames consumed per processor (when `consume`).
    pub consumed: Vec<u64>,
    /// Bytes consumed per processor.
    pub consumed_bytes: Vec<u64>,
    /// Per processor, the wrapping sum of the CRC-32 of every frame consumed
    /// (so a test can check contents, not just counts).
    pub consumed_digest: Vec<u64>,
    /// Processors that failed: their side does nothing any more.
    pub failed: Vec<bool>,
    /// Errors the host side met (a test asserts this stays empty).
    pub errors: Vec<String>,
}

impl Hosts {
    fn index(&self, p: EndpointId) -> Option<usize> {
        self.processors.iter().position(|x| x.endpoint() == p)
    }
}

impl HostModel<NoEvent> for Hosts {
    fn event(&mut self, _: &mut Cluster<NoEvent>, _: snet_fabric::engine::ComponentId, _: NoEvent) {
    }
    fn wake(&mut self, _: &mut Cluster<NoEvent>, _: snet_fabric::engine::ComponentId) {}

    fn interrupt(&mut self, cluster: &mut Cluster<NoEvent>, processor: EndpointId) {
        let Some(i) = self.index(processor) else {
            return;
        };
        if self.failed[i] {
            return;
        }
        if let Err(e) = self.processors[i].on_interrupt(cluster) {
            self.errors.push(e.to_string());
        }
        if self.consume {
            for q in 0..self.processors[i].queues().len() {
                let qp = self.processors[i].queue_mut(q).expect("index in range");
                let mut n = 0;
                let mut bytes = 0;
                let mut digest = 0u64;
                while let Some(buf) = qp.recv(&cluster.fabric) {
                    n += 1;
                    bytes += buf.len() as u64;
                    digest = digest.wrapping_add(frame_digest(&buf));
                }
                if n > 0 {
                    self.consumed[i] += n;
                    self.consumed_bytes[i] += bytes;
                    self.consumed_digest[i] = self.consumed_digest[i].wrapping_add(digest);
                    if let Err(e) = qp.poll(cluster) {
                        self.errors.push(e.to_string());
                    }
                }
            }
        }
    }

    fn dma_done(&mut self, cluster: &mut Cluster<NoEvent>, done: DmaCompletion) {
        if let Some(i) = self.index(done.requester).filter(|&i| !self.failed[i]) {
            if let Err(e) = self.processors[i].on_dma_done(cluster, &done) {
                self.errors.push(e.to_string());
            }
        }
    }

    fn lan_frame(&mut self, cluster: &mut Cluster<NoEvent>, _: StationId, frame: Vec<u8>) {
        self.client_frames.push((cluster.now(), frame));
    }
}

/// What [`Hosts::consumed_digest`] adds up for one frame: its CRC-32.
pub fn frame_digest(frame: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes(mac::fcs(frame)))
}

/// The rig.
#[derive(Debug)]
pub struct Rig {
    /// The world.
    pub cluster: Cluster<NoEvent>,
    /// The processors' side.
    pub hosts: Hosts,
    /// Processor endpoints, `P0..`.
    pub processors: Vec<EndpointId>,
    /// Adapter endpoints, in adapter order.
    pub adapters: Vec<EndpointId>,
    /// The client station on the LAN.
    pub client: StationId,
}

impl Rig {
    /// Builds the rig and creates every queue pair (running the engine until
    /// the adapters accepted them).
    pub fn new(config: RigConfig) -> Result<Rig, String> {
        let n = config.processors as u32;
        let processors: Vec<EndpointId> = (0..n).map(processor_endpoint).collect();
        let adapters: Vec<EndpointId> = (0..config.adapters as u32).map(adapter_endpoint).collect();
        let mut eps: Vec<(EndpointId, EndpointKind)> = processors
            .iter()
            .map(|&p| (p, EndpointKind::Processor))
            .collect();
        eps.extend(adapters.iter().map(|&a| (a, EndpointKind::Adapter)));
        let topo = match config.topology.clone() {
            Some(t) => {
                for &(ep, _) in &eps {
                    if t.endpoint_index(ep).is_none() {
                        return Err(format!("the topology lacks endpoint {ep}"));
                    }
                }
                t
            }
            None => {
                let ports = u8::try_from(eps.len()).unwrap_or(u8::MAX).clamp(6, 64);
                shapes::single_router(&config.planes, &eps, ports, config.link)
                    .map_err(|e| e.to_string())?
            }
        };
        let mut cluster =
            Cluster::new(topo, config.fabric.clone(), config.lan.clone(), config.seed)
                .map_err(|e| e.to_string())?;
        for (i, &a) in adapters.iter().enumerate() {
            let mut nc = config.nic.clone();
            (nc.name, nc.mac.address) = config
                .names
                .get(i)
                .cloned()
                .unwrap_or_else(|| (format!("lan{i}"), adapter_mac(i as u16)));
            nc.processors = processors.clone();
            nc.firmware.processor_count = config.processors;
            let idx = cluster.add_nic(nc, a).map_err(|e| e.to_string())?;
            cluster.attach_lan(idx).map_err(|e| e.to_string())?;
        }
        let client = cluster.lan.attach(CLIENT_MAC, config.client_speed);
        let mut hosts = Hosts {
            consumed: vec![0; processors.len()],
            consumed_bytes: vec![0; processors.len()],
            consumed_digest: vec![0; processors.len()],
            failed: vec![false; processors.len()],
            ..Hosts::default()
        };
        for &p in &processors {
            let mut proc_ = Processor::new(p, snet_fabric::memory::ProcAddr(0));
            for a in 0..adapters.len() {
                proc_
                    .add_queue(&mut cluster, a, config.queue)
                    .map_err(|e| e.to_string())?;
            }
            hosts.processors.push(proc_);
        }
        let mut rig = Rig {
            cluster,
            hosts,
            processors,
            adapters,
            client,
        };
        let deadline = rig.cluster.now() + Duration::from_ms(10);
        while !rig.all_ready() {
            if rig.cluster.now() >= deadline || !rig.cluster.step(deadline, &mut rig.hosts) {
                let pending: Vec<String> = rig
                    .hosts
                    .processors
                    .iter()
                    .enumerate()
                    .flat_map(|(i, p)| {
                        p.queues()
                            .iter()
                            .enumerate()
                            .filter(|(_, q)| q.state() != QueueState::Ready)
                            .map(move |(a, q)| format!("P{i} with adapter {a}: {:?}", q.state()))
                    })
                    .collect();
                return Err(format!(
                    "{} queue pairs not ready after 10 ms: {}{}",
                    pending.len(),
                    pending[..pending.len().min(8)].join(", "),
                    if pending.len() > 8 { ", …" } else { "" }
                ));
            }
        }
        Ok(rig)
    }

    /// Whether every queue pair is ready.
    pub fn all_ready(&self) -> bool {
        self.hosts
            .processors
            .iter()
            .all(|p| p.queues().iter().all(|q| q.state() == QueueState::Ready))
    }

    /// Runs the engine for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.cluster.now() + d;
        self.cluster.run_until(until, &mut self.hosts);
    }

    /// The client station sends `frame` (without FCS; padded and given one).
    pub fn client_send(&mut self, frame: &[u8]) -> Option<Instant> {
        let mut f = frame.to_vec();
        mac::pad_to_minimum(&mut f);
        mac::append_fcs(&mut f);
        self.cluster.lan_transmit(self.client, f)
    }

    /// Sends a control message from processor `p` (index) to every adapter
    /// and runs until each answered; returns the outcomes in adapter order.
    pub fn control(&mut self, p: usize, message: ControlMessage) -> Vec<ControlOutcome> {
        let adapters = self.adapters.len();
        control_and_wait(
            &mut self.cluster,
            &mut self.hosts,
            |h| &mut h.processors[p],
            |h, e| h.errors.push(e),
            adapters,
            p,
            message,
        )
    }

    /// Fails processor `p` (index) now.
    pub fn fail_processor(&mut self, p: usize) {
        let ep = self.processors[p];
        self.hosts.failed[p] = true;
        if let Err(e) = self.cluster.fail(FaultTarget::Endpoint(ep)) {
            self.hosts.errors.push(e.to_string());
        }
    }
}

/// Sends a control message from processor `p` (index) to each of the first
/// `adapters` adapters (through its queue pair `q` with adapter `q`) and runs
/// the world until every adapter answered (at most 1 ms of virtual time);
/// returns the outcomes in adapter order.
pub fn control_and_wait<M: HostModel<NoEvent>>(
    cluster: &mut Cluster<NoEvent>,
    model: &mut M,
    processor: impl Fn(&mut M) -> &mut Processor,
    error: impl Fn(&mut M, String),
    adapters: usize,
    p: usize,
    message: ControlMessage,
) -> Vec<ControlOutcome> {
    let env = Envelope::new(ProcessorId(p as u16), message);
    let mut seqs = Vec::new();
    for q in 0..adapters {
        let qp = processor(model)
            .queue_mut(q)
            .expect("one queue per adapter");
        match qp.send_control(cluster, &env) {
            Ok(s) => seqs.push(s),
            Err(e) => error(model, e.to_string()),
        }
    }
    let mut out = vec![None; adapters];
    let deadline = cluster.now() + Duration::from_ms(1);
    while out.iter().any(Option::is_none) && cluster.now() < deadline {
        if !cluster.step(deadline, model) {
            break;
        }
        for (q, slot) in out.iter_mut().enumerate() {
            let qp = processor(model).queue_mut(q).expect("exists");
            for (seq, o) in qp.take_outcomes() {
                if seqs.get(q) == Some(&seq) {
                    *slot = Some(o);
                }
            }
        }
    }
    out.into_iter()
        .map(|o| {
            o.unwrap_or(ControlOutcome::Refused(
                snet_nic_model::regs::StatusCode::NoResources,
            ))
        })
        .collect()
}
