//! The world that joins the fabric, the adapters and the LAN in one engine,
//! and hands what concerns the processors to a [`HostModel`].
//!
//! Every model keeps its own event enum; [`Event`] wraps them, and the
//! models schedule through [`Lift`], so the fabric never learns about
//! adapters and the adapters never learn about hosts. After each event the
//! cluster routes what it produced: interrupts and DMA completions of the
//! adapters go to the adapters, those of processors to the host model;
//! frames an adapter put on the wire go to its port's attachment (the LAN
//! or the host model, for an external port such as a TAP device).

use snet_fabric::EndpointId;
use snet_fabric::engine::{ComponentId, Engine, Fired, Lift, Scheduler, Traced};
use snet_fabric::network::{
    DmaCompletion, Fabric, FabricConfig, FabricError, FabricEvent, FaultTarget, RNG_STREAM_FABRIC,
};
use snet_fabric::time::Instant;
use snet_fabric::topology::Topology;

use crate::capture::Capture;
use crate::lan::{Lan, LanConfig, LanEvent, StationId};
use crate::nic::{Nic, NicConfig, NicError, NicEvent};

/// RNG stream of the LAN (loss and corruption).
pub const RNG_STREAM_LAN: u64 = 0x1A4;

/// Events of the whole world: each model's own, and the host model's `H`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<H> {
    /// The fabric's.
    Fabric(FabricEvent),
    /// An adapter's.
    Nic(NicEvent),
    /// The LAN's.
    Lan(LanEvent),
    /// The host model's.
    Host(H),
}

impl<H> From<FabricEvent> for Event<H> {
    fn from(e: FabricEvent) -> Self {
        Event::Fabric(e)
    }
}
impl<H> From<NicEvent> for Event<H> {
    fn from(e: NicEvent) -> Self {
        Event::Nic(e)
    }
}
impl<H> From<LanEvent> for Event<H> {
    fn from(e: LanEvent) -> Self {
        Event::Lan(e)
    }
}

impl<H: Traced> Traced for Event<H> {
    fn kind(&self) -> u16 {
        match self {
            Event::Fabric(e) => e.kind(),
            Event::Nic(e) => e.kind(),
            Event::Lan(e) => e.kind(),
            Event::Host(e) => 0x1000 | e.kind(),
        }
    }
    fn keys(&self) -> (u64, u64) {
        match self {
            Event::Fabric(e) => e.keys(),
            Event::Nic(e) => e.keys(),
            Event::Lan(e) => e.keys(),
            Event::Host(e) => e.keys(),
        }
    }
}

/// The processors' side of the world: what the cluster hands over.
pub trait HostModel<H> {
    /// One of the host model's own events.
    fn event(&mut self, cluster: &mut Cluster<H>, component: ComponentId, event: H);
    /// A wake-up of a component the host model allocated.
    fn wake(&mut self, cluster: &mut Cluster<H>, component: ComponentId);
    /// A write landed in an interrupt window of processor `processor`
    /// (entries are read with `cluster.fabric.pop_interrupt`).
    fn interrupt(&mut self, cluster: &mut Cluster<H>, processor: EndpointId);
    /// A DMA transfer a processor started has ended.
    fn dma_done(&mut self, cluster: &mut Cluster<H>, done: DmaCompletion);
    /// A frame (FCS included) reached a LAN station that no adapter owns
    /// (an emulated client host).
    fn lan_frame(&mut self, cluster: &mut Cluster<H>, station: StationId, frame: Vec<u8>);
    /// A frame (FCS included) left adapter `nic` on an external port.
    fn port_frame(&mut self, cluster: &mut Cluster<H>, nic: usize, frame: Vec<u8>) {
        let _ = (cluster, nic, frame);
    }
}

/// Where an adapter's port leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAttachment {
    /// A station of the in-engine LAN.
    Lan(StationId),
    /// Outside the engine: frames go to [`HostModel::port_frame`] and come
    /// in through [`Cluster::port_receive`].
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Lan,
    Nic(usize),
    Host,
}

/// The world: engine, fabric, adapters and LAN.
#[derive(Debug)]
pub struct Cluster<H> {
    /// The engine.
    pub engine: Engine<Event<H>>,
    /// The fabric.
    pub fabric: Fabric,
    /// The adapters, in the order they were added.
    pub nics: Vec<Nic>,
    /// The LAN segment.
    pub lan: Lan,
    ports: Vec<Option<PortAttachment>>,
    port_captures: Vec<Option<Capture>>,
    station_nic: Vec<Option<usize>>,
    fabric_capture: Option<Capture>,
    owners: Vec<Owner>,
    first_component: u32,
    signals: Vec<EndpointId>,
    done: Vec<DmaCompletion>,
    frames: Vec<Vec<u8>>,
}

/// Why a cluster could not be built or changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// The fabric refused.
    #[error("fabric: {0}")]
    Fabric(#[from] FabricError),
    /// An adapter could not be built.
    #[error(transparent)]
    Nic(#[from] NicError),
    /// A LAN setting is out of range.
    #[error("LAN: {0}")]
    Lan(String),
    /// An endpoint serves as an adapter twice, or an unknown adapter index.
    #[error("{0}")]
    Usage(String),
}

impl<H: Traced> Cluster<H> {
    /// A world with a fabric for `topology` and an empty LAN, seeded with `seed`.
    pub fn new(
        topology: Topology,
        fabric: FabricConfig,
        lan: LanConfig,
        seed: u64,
    ) -> Result<Self, ClusterError> {
        let engine = Engine::new(seed);
        let fabric = Fabric::new(topology, fabric, engine.rng_stream(RNG_STREAM_FABRIC))?;
        let first = fabric.component_count();
        let lan = Lan::new(lan, ComponentId(first), engine.rng_stream(RNG_STREAM_LAN))
            .map_err(ClusterError::Lan)?;
        Ok(Cluster {
            engine,
            fabric,
            nics: Vec::new(),
            lan,
            ports: Vec::new(),
            port_captures: Vec::new(),
            station_nic: Vec::new(),
            fabric_capture: None,
            owners: vec![Owner::Lan],
            first_component: first,
            signals: Vec::new(),
            done: Vec::new(),
            frames: Vec::new(),
        })
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.engine.now()
    }

    fn allocate(&mut self, owner: Owner) -> ComponentId {
        self.owners.push(owner);
        ComponentId(self.first_component + self.owners.len() as u32 - 1)
    }

    /// A new engine component for the host model's events and wake-ups.
    pub fn host_component(&mut self) -> ComponentId {
        self.allocate(Owner::Host)
    }

    /// Adds an adapter on fabric endpoint `endpoint`; returns its index.
    /// Its port is not attached yet.
    pub fn add_nic(
        &mut self,
        config: NicConfig,
        endpoint: EndpointId,
    ) -> Result<usize, ClusterError> {
        if self.nics.iter().any(|n| n.endpoint() == endpoint) {
            return Err(ClusterError::Usage(format!(
                "{endpoint} is already an adapter"
            )));
        }
        let index = self.nics.len();
        let component = self.allocate(Owner::Nic(index));
        let mut lift = Lift::new(&mut self.engine);
        let nic = Nic::new(
            config,
            index as u16,
            endpoint,
            component,
            &mut self.fabric,
            &mut lift,
        );
        match nic {
            Ok(n) => {
                self.nics.push(n);
                self.ports.push(None);
                self.port_captures.push(None);
                Ok(index)
            }
            Err(e) => {
                self.owners.pop();
                Err(e.into())
            }
        }
    }

    fn nic_index(&self, nic: usize) -> Result<(), ClusterError> {
        if nic < self.nics.len() {
            Ok(())
        } else {
            Err(ClusterError::Usage(format!(
                "adapter {nic} does not exist (the cluster has {})",
                self.nics.len()
            )))
        }
    }

    /// Attaches adapter `nic`'s port to a new LAN station at the port's speed.
    pub fn attach_lan(&mut self, nic: usize) -> Result<StationId, ClusterError> {
        self.nic_index(nic)?;
        let n = &self.nics[nic];
        let st = self.lan.attach(n.mac(), n.config().mac.speed);
        if self.station_nic.len() <= st.0 as usize {
            self.station_nic.resize(st.0 as usize + 1, None);
        }
        self.station_nic[st.0 as usize] = Some(nic);
        self.ports[nic] = Some(PortAttachment::Lan(st));
        Ok(st)
    }

    /// Makes adapter `nic`'s port external (frames out go to the host model).
    pub fn attach_external(&mut self, nic: usize) -> Result<(), ClusterError> {
        self.nic_index(nic)?;
        self.ports[nic] = Some(PortAttachment::External);
        Ok(())
    }

    /// Where adapter `nic`'s port leads.
    pub fn port(&self, nic: usize) -> Option<PortAttachment> {
        self.ports.get(nic).copied().flatten()
    }

    /// Records every frame adapter `nic` sends or receives on its port.
    pub fn capture_port(&mut self, nic: usize, capture: Capture) -> Result<(), ClusterError> {
        self.nic_index(nic)?;
        self.port_captures[nic] = Some(capture);
        Ok(())
    }

    /// Stops capturing adapter `nic`'s port and returns the capture.
    pub fn take_port_capture(&mut self, nic: usize) -> Option<Capture> {
        self.port_captures.get_mut(nic)?.take()
    }

    /// Records every fabric packet delivered to an endpoint (this turns the
    /// fabric's transaction-level fast path off: captures need packets).
    pub fn capture_fabric(&mut self, capture: Capture) {
        self.fabric.set_capture(true);
        self.fabric_capture = Some(capture);
    }

    /// Stops the fabric capture and returns it.
    pub fn take_fabric_capture(&mut self) -> Option<Capture> {
        self.fabric.set_capture(false);
        self.fabric_capture.take()
    }

    /// The adapter on `endpoint`, if any.
    pub fn nic_on(&self, endpoint: EndpointId) -> Option<usize> {
        self.nics.iter().position(|n| n.endpoint() == endpoint)
    }

    /// A frame (FCS included) arrives now at adapter `nic`'s port from outside.
    pub fn port_receive(&mut self, nic: usize, frame: &[u8], host: &mut impl HostModel<H>) {
        if nic >= self.nics.len() {
            return;
        }
        if let Some(c) = self.port_captures[nic].as_mut() {
            c.frame(self.engine.now(), strip_fcs(frame));
        }
        let mut lift = Lift::new(&mut self.engine);
        self.nics[nic].receive(&mut lift, &mut self.fabric, frame);
        self.after_nic(nic, host);
    }

    /// Fails a component now. A failed processor endpoint is reported to
    /// every adapter; a failed adapter endpoint also silences its port.
    pub fn fail(&mut self, target: FaultTarget) -> Result<(), ClusterError> {
        let mut lift = Lift::new(&mut self.engine);
        self.fabric.fail(&mut lift, target)?;
        if let FaultTarget::Endpoint(ep) = target {
            if let Some(i) = self.nic_on(ep) {
                self.nics[i].fail();
                if let Some(PortAttachment::Lan(st)) = self.ports[i] {
                    self.lan.set_up(st, false);
                }
            } else {
                for n in &mut self.nics {
                    let mut lift = Lift::new(&mut self.engine);
                    n.processor_down(&mut lift, ep);
                }
            }
        }
        Ok(())
    }

    /// Restores a failed component now.
    pub fn restore(&mut self, target: FaultTarget) -> Result<(), ClusterError> {
        let mut lift = Lift::new(&mut self.engine);
        self.fabric.restore(&mut lift, target)?;
        if let FaultTarget::Endpoint(ep) = target {
            if let Some(i) = self.nic_on(ep) {
                let mut lift = Lift::new(&mut self.engine);
                self.nics[i].restore(&mut lift, &mut self.fabric);
                if let Some(PortAttachment::Lan(st)) = self.ports[i] {
                    self.lan.set_up(st, true);
                }
            } else {
                for n in &mut self.nics {
                    n.processor_up(ep);
                }
            }
        }
        Ok(())
    }

    /// Copies adapter `from`'s replicated firmware state (liveness, master,
    /// listener groups, established and orphaned connections) into adapter
    /// `target`'s firmware now, as a table dump: the way an adapter that
    /// missed control messages while it was down is brought back in step
    /// with the one that carried on. Provisional entries and round-robin
    /// cursors are not part of a dump.
    pub fn resync_nic(&mut self, target: usize, from: usize) -> Result<(), ClusterError> {
        self.nic_index(target)?;
        self.nic_index(from)?;
        if target == from {
            return Ok(());
        }
        let snapshot = self.nics[from].firmware().snapshot();
        let now = self.engine.now();
        self.nics[target]
            .apply_table_dump(snapshot, now)
            .map_err(|r| {
                ClusterError::Usage(format!(
                    "adapter {target} refused the table dump of adapter {from}: {}",
                    r.as_str()
                ))
            })
    }

    /// Runs events up to and including `until`, then sets the clock to `until`.
    pub fn run_until(&mut self, until: Instant, host: &mut impl HostModel<H>) {
        while self.step(until, host) {}
    }

    /// Runs one event no later than `until`; false when there is none.
    pub fn step(&mut self, until: Instant, host: &mut impl HostModel<H>) -> bool {
        let Some((now, fired)) = self.engine.pop_until(until) else {
            return false;
        };
        match fired {
            Fired::Event(_, Event::Fabric(ev)) => {
                let mut lift = Lift::new(&mut self.engine);
                self.fabric.handle(&mut lift, ev);
                self.after_fabric(host);
            }
            Fired::Event(_, Event::Nic(ev)) => {
                let NicEvent::IrqTimer { nic, .. } = ev;
                let i = nic as usize;
                if i < self.nics.len() {
                    let mut lift = Lift::new(&mut self.engine);
                    self.nics[i].on_event(&mut lift, &mut self.fabric, ev);
                    self.after_nic(i, host);
                }
            }
            Fired::Event(_, Event::Lan(ev)) => {
                if let Some((st, frame)) = self.lan.deliver(now, ev) {
                    match self.station_nic.get(st.0 as usize).copied().flatten() {
                        Some(i) => {
                            if let Some(c) = self.port_captures[i].as_mut() {
                                c.frame(now, strip_fcs(&frame));
                            }
                            let mut lift = Lift::new(&mut self.engine);
                            self.nics[i].receive(&mut lift, &mut self.fabric, &frame);
                            self.after_nic(i, host);
                        }
                        None => host.lan_frame(self, st, frame),
                    }
                }
            }
            Fired::Event(c, Event::Host(ev)) => host.event(self, c, ev),
            Fired::Wake(c) => {
                let owner =
                    c.0.checked_sub(self.first_component)
                        .and_then(|i| self.owners.get(i as usize).copied());
                match owner {
                    Some(Owner::Nic(i)) => {
                        let mut lift = Lift::new(&mut self.engine);
                        self.nics[i].poll(&mut lift, &mut self.fabric);
                        self.after_nic(i, host);
                    }
                    Some(Owner::Host) => host.wake(self, c),
                    Some(Owner::Lan) | None => {}
                }
            }
        }
        true
    }

    /// Routes what the fabric produced: captured packets, interrupts and
    /// completions.
    fn after_fabric(&mut self, host: &mut impl HostModel<H>) {
        if let Some(cap) = self.fabric_capture.as_mut() {
            for p in self.fabric.take_captured() {
                cap.fabric(p.at, p.plane, &p.bytes);
            }
        }
        while self.fabric.has_news() {
            let mut signals = std::mem::take(&mut self.signals);
            self.fabric.take_signals(&mut signals);
            signals.dedup();
            for &ep in &signals {
                match self.nic_on(ep) {
                    Some(i) => {
                        let mut lift = Lift::new(&mut self.engine);
                        self.nics[i].on_interrupts(&mut lift, &mut self.fabric);
                        self.after_nic(i, host);
                    }
                    None => host.interrupt(self, ep),
                }
            }
            signals.clear();
            self.signals = signals;
            let mut done = std::mem::take(&mut self.done);
            self.fabric.take_completions_into(&mut done);
            for c in done.drain(..) {
                match self.nic_on(c.requester) {
                    Some(i) => {
                        let mut lift = Lift::new(&mut self.engine);
                        self.nics[i].on_dma_done(&mut lift, &mut self.fabric, &c);
                        self.after_nic(i, host);
                    }
                    None => host.dma_done(self, c),
                }
            }
            self.done = done;
        }
    }

    /// Sends the frames adapter `i` put on the wire to its port's attachment.
    fn after_nic(&mut self, i: usize, host: &mut impl HostModel<H>) {
        if !self.nics[i].has_outbox() {
            return;
        }
        let mut frames = std::mem::take(&mut self.frames);
        self.nics[i].take_outbox(&mut frames);
        let now = self.engine.now();
        for f in frames.drain(..) {
            if let Some(c) = self.port_captures[i].as_mut() {
                c.frame(now, strip_fcs(&f));
            }
            match self.ports[i] {
                Some(PortAttachment::Lan(st)) => {
                    let mut lift = Lift::new(&mut self.engine);
                    self.lan.transmit(&mut lift, st, f);
                }
                Some(PortAttachment::External) => host.port_frame(self, i, f),
                None => {}
            }
        }
        self.frames = frames;
    }

    /// Sends a frame (FCS included) from LAN station `station` now.
    pub fn lan_transmit(&mut self, station: StationId, frame: Vec<u8>) -> Option<Instant> {
        let mut lift = Lift::new(&mut self.engine);
        self.lan.transmit(&mut lift, station, frame)
    }

    /// Schedules one of the host model's events.
    pub fn schedule_host(&mut self, at: Instant, component: ComponentId, event: H) {
        self.engine.schedule(at, component, Event::Host(event));
    }

    /// Asks for a host component's wake-up at `at`.
    pub fn wake_host(&mut self, component: ComponentId, at: Instant) {
        Scheduler::wake_at(&mut self.engine, component, at);
    }
}

fn strip_fcs(frame: &[u8]) -> &[u8] {
    &frame[..frame.len().saturating_sub(crate::mac::FCS_LEN)]
}
