//! A processor opens a DMA window for an adapter, the adapter writes a frame
//! into it across two routers, then the X plane fails and a second transfer
//! completes over Y.
//!
//! Run with `cargo run -p snet-fabric --example dma`.

use snet_fabric::avt::Access;
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::{DmaRequest, FabricConfig, FabricSim, FaultTarget};
use snet_fabric::topology::{EndpointKind, LinkParams, shapes};
use snet_fabric::{EndpointId, FabricAddr, Plane};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cpu = EndpointId::new(1).ok_or("bad id")?;
    let nic = EndpointId::new(2).ok_or("bad id")?;
    // Two routers per plane; the processor hangs off the first, the adapter off the second.
    let topo = shapes::chain(
        &Plane::BOTH,
        2,
        &[
            (cpu, EndpointKind::Processor, 0),
            (nic, EndpointKind::Adapter, 1),
        ],
        12,
        LinkParams::default(),
    )?;
    let mut sim = FabricSim::new(topo, FabricConfig::default(), 7)?;

    // The processor lets the adapter write 64 KiB at 0x10000 of its memory.
    let key = sim.register(cpu, nic, ProcAddr(0x10000), 64 * 1024, Access::WRITE)?;
    let frame: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    sim.fabric.memory_mut(nic)?.write(ProcAddr(0), &frame)?;

    let write =
        |len| DmaRequest::write(cpu, ProcAddr(0), FabricAddr::new(key, 0), len).on_plane(Plane::X);
    let done = sim.dma(nic, write(1500))?;
    println!(
        "1500 B over X: {:?} in {} (virtual), {} retries",
        done.result,
        done.finished - done.started,
        done.retries
    );
    assert_eq!(
        sim.fabric.memory(cpu)?.slice(ProcAddr(0x10000), 1500)?,
        &frame[..]
    );

    sim.fail(FaultTarget::Plane(Plane::X))?;
    let done = sim.dma(nic, write(1500))?;
    println!(
        "after X failed: {:?} in {}, {} failover(s)",
        done.result,
        done.finished - done.started,
        done.failovers
    );

    let c = sim.fabric.counters();
    println!(
        "packets on X: {}, on Y: {}, DMA timeouts: {}",
        c.plane_total(Plane::X, |ch| ch.packets),
        c.plane_total(Plane::Y, |ch| ch.packets),
        c.dma_total(|d| d.timeouts)
    );
    println!("trace hash {:016x} (seed 7)", sim.trace_hash());
    Ok(())
}
