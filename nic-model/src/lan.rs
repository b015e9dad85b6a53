//! The in-engine LAN segment: one store-and-forward Ethernet switch with a
//! full-duplex link to every station (adapter ports and emulated client
//! hosts).
//!
//! Timing of a frame sent by station `s` to station `d`:
//! 1. it leaves `s` after every earlier frame of `s`, taking
//!    [`LinkSpeed::frame_time`] at `s`'s speed (preamble and gap included);
//! 2. it is in the switch one propagation latency after its last bit left;
//! 3. it leaves the switch on `d`'s link after every frame already queued
//!    there, at `d`'s speed, and arrives one latency after its last bit left.
//!
//! The switch learns which station owns which source MAC; frames for a group
//! address or an address it has not learnt are flooded to every other
//! station. Each output queue holds at most `output_buffer` bytes: a frame
//! that would exceed it is dropped and counted (tail drop). Seeded loss and
//! corruption (one flipped bit, caught by the receiver's FCS check) model a
//! lossy segment.

use std::collections::BTreeMap;

/// Addresses the switch's table holds at most, like a real switch's: when
/// it is full, frames to an address it has not learnt are flooded. (A
/// station outside the model, such as a TAP device, can send from any
/// number of source addresses.)
pub const MAX_LEARNT: usize = 65_536;

use rand_core::RngCore;
use snet_fabric::engine::{ComponentId, Scheduler, SimRng, Traced};
use snet_fabric::time::{Duration, Instant};

use crate::capture::Capture;
use crate::mac::{FCS_LEN, LinkSpeed, MacAddr};

/// A station on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StationId(pub u32);

impl std::fmt::Display for StationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "station {}", self.0)
    }
}

/// Settings of the segment.
#[derive(Debug, Clone, PartialEq)]
pub struct LanConfig {
    /// Propagation latency of every link (cable and PHY).
    pub latency: Duration,
    /// Bytes each switch output queue holds.
    pub output_buffer: u64,
    /// Probability that a frame is lost in the switch.
    pub loss_rate: f64,
    /// Probability that a frame is corrupted (one bit) on the way.
    pub corrupt_rate: f64,
}

impl Default for LanConfig {
    fn default() -> Self {
        LanConfig {
            latency: Duration::from_ns(500),
            output_buffer: 1 << 20,
            loss_rate: 0.0,
            corrupt_rate: 0.0,
        }
    }
}

impl LanConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("loss_rate", self.loss_rate),
            ("corrupt_rate", self.corrupt_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be a probability in [0, 1], got {v}"));
            }
        }
        Ok(())
    }
}

/// Counters of one station's link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StationCounters {
    /// Frames the station sent.
    pub tx_frames: u64,
    /// Bytes the station sent (FCS included).
    pub tx_bytes: u64,
    /// Frames delivered to the station.
    pub rx_frames: u64,
    /// Bytes delivered to the station.
    pub rx_bytes: u64,
    /// Frames for the station dropped because its output queue was full.
    pub dropped_overflow: u64,
    /// Frames the station sent that were lost on purpose (seeded loss).
    pub dropped_loss: u64,
    /// Frames delivered to the station with a flipped bit.
    pub corrupted: u64,
}

#[derive(Debug)]
struct Station {
    mac: MacAddr,
    speed: LinkSpeed,
    up: bool,
    /// When the station's own link is free again.
    tx_free: Instant,
    /// When the switch's output towards the station is free again.
    out_free: Instant,
    counters: StationCounters,
    capture: Option<Capture>,
}

/// Events of the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanEvent {
    /// A frame's last bit reaches a station.
    Deliver {
        /// Slot of the frame.
        slot: u32,
    },
}

impl Traced for LanEvent {
    fn kind(&self) -> u16 {
        0x300
    }
    fn keys(&self) -> (u64, u64) {
        match *self {
            LanEvent::Deliver { slot } => (slot as u64, 0),
        }
    }
}

/// The segment.
#[derive(Debug)]
pub struct Lan {
    config: LanConfig,
    component: ComponentId,
    stations: Vec<Station>,
    learnt: BTreeMap<MacAddr, StationId>,
    in_flight: Vec<Option<(StationId, Vec<u8>)>>,
    free: Vec<u32>,
    rng: SimRng,
}

impl Lan {
    /// An empty segment; its events carry `component`.
    pub fn new(config: LanConfig, component: ComponentId, rng: SimRng) -> Result<Self, String> {
        config.validate()?;
        Ok(Lan {
            config,
            component,
            stations: Vec::new(),
            learnt: BTreeMap::new(),
            in_flight: Vec::new(),
            free: Vec::new(),
            rng,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LanConfig {
        &self.config
    }

    /// Changes the seeded loss rate (a fault, from now on).
    pub fn set_loss_rate(&mut self, p: f64) -> Result<(), String> {
        let mut c = self.config.clone();
        c.loss_rate = p;
        c.validate()?;
        self.config = c;
        Ok(())
    }

    /// Attaches a station with address `mac` at `speed`; the switch learns
    /// the address at once.
    pub fn attach(&mut self, mac: MacAddr, speed: LinkSpeed) -> StationId {
        let id = StationId(self.stations.len() as u32);
        self.stations.push(Station {
            mac,
            speed,
            up: true,
            tx_free: Instant::ZERO,
            out_free: Instant::ZERO,
            counters: StationCounters::default(),
            capture: None,
        });
        if !mac.is_group() {
            self.learnt.insert(mac, id);
        }
        id
    }

    /// Number of stations.
    pub fn stations(&self) -> usize {
        self.stations.len()
    }

    /// A station's address.
    pub fn mac(&self, s: StationId) -> Option<MacAddr> {
        self.stations.get(s.0 as usize).map(|st| st.mac)
    }

    /// A station's counters.
    pub fn counters(&self, s: StationId) -> Option<StationCounters> {
        self.stations.get(s.0 as usize).map(|st| st.counters)
    }

    /// Connects or disconnects a station's cable: a disconnected station
    /// neither sends nor receives (frames for it are lost).
    pub fn set_up(&mut self, s: StationId, up: bool) {
        if let Some(st) = self.stations.get_mut(s.0 as usize) {
            st.up = up;
        }
    }

    /// Records every frame `s` sends or receives into `capture` (frames
    /// without FCS; TX stamped when handed to the link, RX when complete).
    pub fn capture(&mut self, s: StationId, capture: Capture) {
        if let Some(st) = self.stations.get_mut(s.0 as usize) {
            st.capture = Some(capture);
        }
    }

    /// Stops capturing on `s` and returns the capture.
    pub fn take_capture(&mut self, s: StationId) -> Option<Capture> {
        self.stations.get_mut(s.0 as usize)?.capture.take()
    }

    /// When station `s` could start sending a new frame.
    pub fn tx_free_at(&self, s: StationId) -> Instant {
        self.stations
            .get(s.0 as usize)
            .map_or(Instant::ZERO, |st| st.tx_free)
    }

    /// Station `s` sends `frame` (FCS included) now. Returns when its last bit
    /// leaves the station (`None` if `s` is unknown or disconnected).
    pub fn transmit<S: Scheduler<LanEvent>>(
        &mut self,
        sched: &mut S,
        s: StationId,
        frame: Vec<u8>,
    ) -> Option<Instant> {
        let now = sched.now();
        let src = self.stations.get_mut(s.0 as usize)?;
        if !src.up {
            return None;
        }
        let start = src.tx_free.max(now);
        let done = start + src.speed.frame_time(frame.len());
        src.tx_free = done;
        src.counters.tx_frames += 1;
        src.counters.tx_bytes += frame.len() as u64;
        if let Some(c) = src.capture.as_mut() {
            c.frame(now, &frame[..frame.len().saturating_sub(FCS_LEN)]);
        }
        let src_mac = src.mac;
        // The switch learns where a source address lives (a station may
        // send from an address other than the one it attached with).
        if !src_mac.is_group() {
            let from = MacAddr::source(&frame).unwrap_or(src_mac);
            if !from.is_group()
                && self.learnt.get(&from) != Some(&s)
                && (self.learnt.len() < MAX_LEARNT || self.learnt.contains_key(&from))
            {
                self.learnt.insert(from, s);
            }
        }
        if self.config.loss_rate > 0.0 && self.chance(self.config.loss_rate) {
            self.stations[s.0 as usize].counters.dropped_loss += 1;
            return Some(done);
        }
        let in_switch = done + self.config.latency;
        let dst = MacAddr::destination(&frame).unwrap_or(MacAddr::BROADCAST);
        match (dst.is_group(), self.learnt.get(&dst).copied()) {
            (false, Some(d)) if d != s => self.forward(sched, d, in_switch, frame),
            (false, Some(_)) => {} // to itself: a switch does not send it back
            _ => {
                let targets: Vec<StationId> = (0..self.stations.len() as u32)
                    .map(StationId)
                    .filter(|&d| d != s && self.stations[d.0 as usize].mac != src_mac)
                    .collect();
                for d in targets {
                    self.forward(sched, d, in_switch, frame.clone());
                }
            }
        }
        Some(done)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn forward<S: Scheduler<LanEvent>>(
        &mut self,
        sched: &mut S,
        d: StationId,
        in_switch: Instant,
        mut frame: Vec<u8>,
    ) {
        let corrupt = self.config.corrupt_rate > 0.0 && self.chance(self.config.corrupt_rate);
        let bit = if corrupt {
            Some(self.rng.next_u64() % (frame.len() as u64 * 8).max(1))
        } else {
            None
        };
        let latency = self.config.latency;
        let limit = self.config.output_buffer;
        let st = &mut self.stations[d.0 as usize];
        if !st.up {
            return;
        }
        // Bytes still queued for this output when the frame arrives.
        let backlog_ps = st.out_free.saturating_since(in_switch).as_ps() as u128;
        let backlog = backlog_ps * st.speed.bits_per_s() as u128 / 8 / 1_000_000_000_000;
        if backlog + frame.len() as u128 > limit as u128 {
            st.counters.dropped_overflow += 1;
            return;
        }
        let start = st.out_free.max(in_switch);
        let last_bit = start + st.speed.frame_time(frame.len());
        st.out_free = last_bit;
        if let Some(b) = bit {
            if let Some(byte) = frame.get_mut((b / 8) as usize) {
                *byte ^= 1 << (b % 8);
            }
            st.counters.corrupted += 1;
        }
        let slot = match self.free.pop() {
            Some(s) => {
                self.in_flight[s as usize] = Some((d, frame));
                s
            }
            None => {
                self.in_flight.push(Some((d, frame)));
                (self.in_flight.len() - 1) as u32
            }
        };
        sched.schedule(
            last_bit + latency,
            self.component,
            LanEvent::Deliver { slot },
        );
    }

    /// Handles a delivery: returns the station and the frame (FCS included),
    /// or `None` if the station was disconnected meanwhile.
    pub fn deliver(&mut self, now: Instant, ev: LanEvent) -> Option<(StationId, Vec<u8>)> {
        let LanEvent::Deliver { slot } = ev;
        let (d, frame) = self.in_flight.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        let st = &mut self.stations[d.0 as usize];
        if !st.up {
            return None;
        }
        st.counters.rx_frames += 1;
        st.counters.rx_bytes += frame.len() as u64;
        if let Some(c) = st.capture.as_mut() {
            c.frame(now, &frame[..frame.len().saturating_sub(FCS_LEN)]);
        }
        Some((d, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snet_fabric::engine::{Engine, Fired};

    fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(len);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(len - FCS_LEN, 0x5A);
        crate::mac::append_fcs(&mut f);
        f
    }

    fn run(engine: &mut Engine<LanEvent>, lan: &mut Lan) -> Vec<(Instant, StationId, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((t, fired)) = engine.pop() {
            if let Fired::Event(_, ev) = fired {
                if let Some((s, f)) = lan.deliver(t, ev) {
                    out.push((t, s, f));
                }
            }
        }
        out
    }

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);

    fn lan(config: LanConfig) -> (Engine<LanEvent>, Lan) {
        let engine = Engine::new(5);
        let rng = engine.rng_stream(9);
        (engine, Lan::new(config, ComponentId(0), rng).unwrap())
    }

    #[test]
    fn unicast_timing_is_two_serializations_and_two_latencies() {
        let (mut e, mut lan) = lan(LanConfig::default());
        let a = lan.attach(A, LinkSpeed::GBIT_1);
        let b = lan.attach(B, LinkSpeed::GBIT_1);
        let _c = lan.attach(C, LinkSpeed::GBIT_1);
        let done = lan.transmit(&mut e, a, frame(B, A, 64)).unwrap();
        assert_eq!(done, Instant::from_ns(672));
        // Back to back: the second frame waits for the first.
        let done2 = lan.transmit(&mut e, a, frame(B, A, 64)).unwrap();
        assert_eq!(done2, Instant::from_ns(1344));
        let got = run(&mut e, &mut lan);
        assert_eq!(got.len(), 2, "only B gets unicast frames");
        assert!(got.iter().all(|(_, s, _)| *s == b));
        assert_eq!(got[0].0, Instant::from_ns(672 + 500 + 672 + 500));
        assert_eq!(got[1].0, Instant::from_ns(1344 + 500 + 672 + 500));
        assert_eq!(lan.counters(b).unwrap().rx_frames, 2);
        assert_eq!(lan.counters(a).unwrap().tx_bytes, 128);
    }

    #[test]
    fn the_switch_learns_source_addresses() {
        let (mut e, mut lan) = lan(LanConfig::default());
        let a = lan.attach(A, LinkSpeed::GBIT_1);
        let b = lan.attach(B, LinkSpeed::GBIT_1);
        let c = lan.attach(C, LinkSpeed::GBIT_1);
        // B sends from a second address (an address taken over by B).
        let moved = MacAddr([2, 0, 0, 0, 0, 0x42]);
        lan.transmit(&mut e, b, frame(A, moved, 64));
        run(&mut e, &mut lan);
        lan.transmit(&mut e, a, frame(moved, A, 64));
        let got = run(&mut e, &mut lan);
        assert_eq!(got.len(), 1, "learnt: no flooding");
        assert_eq!(got[0].1, b, "not flooded to {c}");
    }

    #[test]
    fn the_switch_table_is_bounded_and_floods_when_full() {
        let (mut e, mut lan) = lan(LanConfig::default());
        let a = lan.attach(A, LinkSpeed::GBIT_1);
        let b = lan.attach(B, LinkSpeed::GBIT_1);
        lan.attach(C, LinkSpeed::GBIT_1);
        // B sends from ever new source addresses.
        for i in 0..MAX_LEARNT as u32 + 100 {
            let [_, x, y, z] = i.to_be_bytes();
            lan.transmit(&mut e, b, frame(A, MacAddr([2, 1, 0, x, y, z]), 64));
            if i % 4096 == 0 {
                run(&mut e, &mut lan);
            }
        }
        run(&mut e, &mut lan);
        assert_eq!(lan.learnt.len(), MAX_LEARNT);
        // One learnt early is still known; one past the bound is flooded.
        lan.transmit(&mut e, a, frame(MacAddr([2, 1, 0, 0, 0, 5]), A, 64));
        assert_eq!(run(&mut e, &mut lan).len(), 1);
        let [_, x, y, z] = (MAX_LEARNT as u32 + 50).to_be_bytes();
        lan.transmit(&mut e, a, frame(MacAddr([2, 1, 0, x, y, z]), A, 64));
        assert_eq!(run(&mut e, &mut lan).len(), 2, "flooded to B and C");
    }

    #[test]
    fn broadcast_and_unknown_unicast_flood_to_everyone_else() {
        let (mut e, mut lan) = lan(LanConfig::default());
        let a = lan.attach(A, LinkSpeed::GBIT_1);
        lan.attach(B, LinkSpeed::GBIT_1);
        lan.attach(C, LinkSpeed::GBIT_10);
        lan.transmit(&mut e, a, frame(MacAddr::BROADCAST, A, 64));
        lan.transmit(&mut e, a, frame(MacAddr([2, 9, 9, 9, 9, 9]), A, 64));
        let got = run(&mut e, &mut lan);
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|(_, s, _)| *s != a));
    }

    #[test]
    fn a_full_output_queue_drops_and_counts() {
        let (mut e, mut lan) = lan(LanConfig {
            output_buffer: 3000,
            ..LanConfig::default()
        });
        // A fast sender into a slow receiver.
        let a = lan.attach(A, LinkSpeed::GBIT_10);
        let b = lan.attach(B, LinkSpeed::MBIT_100);
        for _ in 0..10 {
            lan.transmit(&mut e, a, frame(B, A, 1000));
        }
        let got = run(&mut e, &mut lan);
        let c = lan.counters(b).unwrap();
        assert!(c.dropped_overflow > 0);
        assert_eq!(got.len() as u64 + c.dropped_overflow, 10);
    }

    #[test]
    fn seeded_loss_and_corruption_are_reproducible() {
        let outcome = |seed: u64| {
            let mut e = Engine::new(seed);
            let rng = e.rng_stream(9);
            let mut lan = Lan::new(
                LanConfig {
                    loss_rate: 0.2,
                    corrupt_rate: 0.2,
                    ..LanConfig::default()
                },
                ComponentId(0),
                rng,
            )
            .unwrap();
            let a = lan.attach(A, LinkSpeed::GBIT_1);
            let b = lan.attach(B, LinkSpeed::GBIT_1);
            for _ in 0..200 {
                lan.transmit(&mut e, a, frame(B, A, 100));
            }
            let got = run(&mut e, &mut lan);
            let bad = got
                .iter()
                .filter(|(_, _, f)| crate::mac::check_fcs(f).is_none())
                .count() as u64;
            let cb = lan.counters(b).unwrap();
            let ca = lan.counters(a).unwrap();
            assert_eq!(bad, cb.corrupted, "every corrupted frame fails its FCS");
            assert_eq!(got.len() as u64 + ca.dropped_loss, 200);
            (ca.dropped_loss, cb.corrupted)
        };
        let (lost, bad) = outcome(1);
        assert!(lost > 10 && lost < 80, "lost {lost} of 200 at 20%");
        assert!(bad > 10, "corrupted {bad}");
        assert_eq!(outcome(1), (lost, bad));
        assert_ne!(outcome(2), (lost, bad));
    }

    #[test]
    fn disconnected_stations_neither_send_nor_receive() {
        let (mut e, mut lan) = lan(LanConfig::default());
        let a = lan.attach(A, LinkSpeed::GBIT_1);
        let b = lan.attach(B, LinkSpeed::GBIT_1);
        lan.set_up(b, false);
        lan.transmit(&mut e, a, frame(B, A, 64));
        assert!(run(&mut e, &mut lan).is_empty());
        assert_eq!(lan.transmit(&mut e, b, frame(A, B, 64)), None);
        assert!(
            Lan::new(
                LanConfig {
                    loss_rate: 1.5,
                    ..LanConfig::default()
                },
                ComponentId(0),
                e.rng_stream(1)
            )
            .unwrap_err()
            .contains("loss_rate")
        );
    }
}
