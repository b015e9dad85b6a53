//! Engine and fabric figures.
//!
//! - `engine.events_per_s`, `engine.vs_bare_heap`: a hold model (a constant
//!   population of pending events; each one taken schedules another at a
//!   pseudo-random delay) run through the engine, against the same loop on a
//!   bare `BinaryHeap` of `(time, sequence)` keys.
//! - `fabric.dma_1mib_vs_memcpy`: wall-clock bandwidth of 1 MiB
//!   processor-to-processor DMA writes across two routers with 512-byte
//!   packets, against `memcpy` of 1 MiB in the same run. Also reported: the
//!   same transfer forced to packet level, and the modelled (virtual) bandwidth.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;

use snet_fabric::avt::Access;
use snet_fabric::engine::{ComponentId, Engine, Fired, Traced};
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::{DmaOp, DmaRequest, FabricConfig, FabricSim};
use snet_fabric::packet::Generation;
use snet_fabric::time::{Duration, Instant};
use snet_fabric::topology::{EndpointKind, LinkParams, shapes};
use snet_fabric::{EndpointId, FabricAddr, Plane};

use super::{Budget, Figure, best_rate};

/// Events kept pending in the hold model.
const HOLD: u64 = 4096;
/// Events per measured call.
const BATCH: u64 = 200_000;

#[derive(Clone, Copy)]
struct HoldEvent(u64);

impl Traced for HoldEvent {
    fn kind(&self) -> u16 {
        1
    }
    fn keys(&self) -> (u64, u64) {
        (self.0, 0)
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn engine_rate(budget: Budget) -> f64 {
    best_rate(budget, || {
        let mut e: Engine<HoldEvent> = Engine::new(1);
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..HOLD {
            e.schedule(
                Instant::from_ps(xorshift(&mut r) % 1_000_000),
                ComponentId((i % 64) as u32),
                HoldEvent(i),
            );
        }
        let mut n = 0;
        while n < BATCH {
            let Some((_, Fired::Event(c, HoldEvent(k)))) = e.pop() else {
                break;
            };
            e.schedule_in(
                Duration::from_ps(xorshift(&mut r) % 1_000_000),
                c,
                HoldEvent(k + 1),
            );
            n += 1;
        }
        black_box(e.trace_hash());
        n
    })
}

fn bare_heap_rate(budget: Budget) -> f64 {
    best_rate(budget, || {
        let mut h: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::with_capacity(1024);
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        let mut seq = 0u64;
        for _ in 0..HOLD {
            h.push(Reverse((xorshift(&mut r) % 1_000_000, seq)));
            seq += 1;
        }
        let mut n = 0;
        while n < BATCH {
            let Some(Reverse((t, _))) = h.pop() else {
                break;
            };
            h.push(Reverse((t + xorshift(&mut r) % 1_000_000, seq)));
            seq += 1;
            n += 1;
        }
        black_box(h.len() as u64);
        n
    })
}

const MIB: u64 = 1 << 20;

/// Two processors two routers apart (each on its own router of a two-router
/// line), ServerNet II packets (512-byte payload).
fn dma_sim(packet_level: bool) -> (FabricSim, EndpointId, EndpointId, FabricAddr) {
    let a = EndpointId::new(1).expect("valid id");
    let b = EndpointId::new(2).expect("valid id");
    let topo = shapes::chain(
        &Plane::BOTH,
        2,
        &[
            (a, EndpointKind::Processor, 0),
            (b, EndpointKind::Processor, 1),
        ],
        12,
        LinkParams::default(),
    )
    .expect("valid topology");
    let cfg = FabricConfig {
        limits: Generation::ServerNet2.into(),
        memory_size: 4 * MIB,
        ..FabricConfig::default()
    };
    let mut sim = FabricSim::new(topo, cfg, 1).expect("valid fabric");
    sim.fabric.set_packet_level(packet_level);
    let key = sim
        .register(b, a, ProcAddr(0), MIB as u32, Access::WRITE)
        .expect("window");
    let data: Vec<u8> = (0..MIB).map(|i| (i * 7) as u8).collect();
    sim.fabric
        .memory_mut(a)
        .expect("endpoint")
        .write(ProcAddr(0), &data)
        .expect("in range");
    (sim, a, b, FabricAddr::new(key, 0))
}

fn dma_once(sim: &mut FabricSim, a: EndpointId, b: EndpointId, remote: FabricAddr) -> Duration {
    let c = sim
        .dma(
            a,
            DmaRequest {
                target: b,
                op: DmaOp::Write {
                    local: ProcAddr(0),
                    remote,
                },
                len: MIB,
                plane: Some(Plane::X),
            },
        )
        .expect("transfer starts");
    assert!(
        c.result.is_ok(),
        "benchmark transfer failed: {:?}",
        c.result
    );
    c.finished - c.started
}

/// Bytes per wall-clock second of DMA, and the modelled duration of one transfer.
fn dma_rate(budget: Budget, packet_level: bool) -> (f64, Duration) {
    let (mut sim, a, b, remote) = dma_sim(packet_level);
    let virt = dma_once(&mut sim, a, b, remote); // touches every page once
    let rate = best_rate(budget, || {
        dma_once(&mut sim, a, b, remote);
        MIB
    });
    (rate, virt)
}

fn memcpy_rate(budget: Budget) -> f64 {
    let src: Vec<u8> = (0..MIB).map(|i| (i * 7) as u8).collect();
    let mut dst = vec![0u8; MIB as usize];
    best_rate(budget, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        MIB
    })
}

/// The engine and fabric figures.
pub fn figures(budget: Budget) -> Vec<Figure> {
    let engine = engine_rate(budget);
    let heap = bare_heap_rate(budget);
    let memcpy = memcpy_rate(budget);
    let (train_bw, virt) = dma_rate(budget, false);
    let (packet_bw, virt_packet) = dma_rate(budget, true);
    assert_eq!(
        virt, virt_packet,
        "train and packet-level timing must agree"
    );
    let virtual_bw = MIB as f64 / virt.as_secs_f64();
    vec![
        Figure::plain("engine.events_per_s", engine, "events/s"),
        Figure::versus("engine.vs_bare_heap", engine, "events/s", heap).with_target(0.33),
        Figure::versus("fabric.dma_1mib_vs_memcpy", train_bw, "B/s", memcpy).with_target(0.25),
        Figure::versus(
            "fabric.dma_1mib_packet_level_vs_memcpy",
            packet_bw,
            "B/s",
            memcpy,
        ),
        Figure::plain("fabric.dma_1mib_virtual_bandwidth", virtual_bw, "B/s"),
        Figure::versus(
            "fabric.dma_1mib_real_time_factor",
            virt.as_secs_f64(),
            "s",
            MIB as f64 / train_bw,
        ),
    ]
}
