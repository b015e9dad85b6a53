//! Rings are untrusted memory: whatever a processor writes into its rings
//! and doorbells, the adapter neither panics nor reaches outside the
//! processor's windows, and every frame is accounted for.

use proptest::prelude::*;
use snet_fabric::FabricAddr;
use snet_fabric::engine::Lift;
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::DmaRequest;
use snet_fabric::time::Duration;
use snet_firmware::control::ControlMessage;
use snet_firmware::kit::PacketBuilder;
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::PROTO_TCP;
use snet_host_lib::QueueSetup;
use snet_host_lib::rig::{Rig, RigConfig};
use snet_nic_model::regs::Register;
use snet_nic_model::ring::Descriptor;
use zerocopy::IntoBytes;

fn descriptor() -> impl Strategy<Value = Descriptor> {
    (
        prop_oneof![0u32..40_000, any::<u32>()],
        prop_oneof![0u32..4096, any::<u32>()],
        any::<u32>(),
        prop_oneof![Just(0u32), 0u32..8, any::<u32>()],
    )
        .prop_map(|(o, l, c, f)| Descriptor::new(o, l, c, f))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn any_ring_contents_and_doorbells_are_survived(
        rx in prop::collection::vec(descriptor(), 16),
        tx in prop::collection::vec(descriptor(), 16),
        doorbells in prop::collection::vec((0u8..3, 0u32..40), 0..6),
        rx_tail in 0u32..15,
        frames in 1usize..12,
    ) {
        let mut rig = Rig::new(RigConfig {
            processors: 2,
            // 15 buffers: all posted at start, none left to repost.
            queue: QueueSetup { rx_ring: 16, tx_ring: 16, cq_ring: 32, buffers: 15, ..QueueSetup::default() },
            ..RigConfig::default()
        }).unwrap();
        let key = ListenerKey { protocol: PROTO_TCP, addr: None, port: 80 };
        rig.control(0, ControlMessage::RegisterListener(key));
        let frame = |i: usize| PacketBuilder::tcp(
            format!("198.18.0.1:{}", 1000 + i).parse().unwrap(),
            "198.18.0.10:80".parse().unwrap(),
        ).payload(&[7u8; 100]).build().unwrap();
        // Use up the library's own descriptors (the adapter has them cached),
        // so the frames below must take descriptors from the random ring.
        for i in 0..15 {
            rig.client_send(&frame(100 + i));
        }
        rig.run_for(Duration::from_us(500));
        prop_assert_eq!(rig.cluster.nics[0].counters().rx_delivered, 15);
        let ep = rig.processors[0];
        let qp = &rig.hosts.processors[0].queues()[0];
        let (rx_ring, tx_ring) = (qp.rx_ring_addr(), qp.tx_ring_addr());
        let windows = rig.cluster.nics[0].windows_for(ep).unwrap();
        let other = rig.processors[1];
        let other_before = rig.cluster.fabric.memory(other).unwrap().slice(ProcAddr(0), 1 << 20).unwrap().to_vec();
        // The adapter's next RX descriptor (slot 15) is surely bad.
        let mut rx = rx;
        rx[15].flags = 1.into();
        let before = *rig.cluster.nics[0].counters();
        {
            let m = rig.cluster.fabric.memory_mut(ep).unwrap();
            m.write(rx_ring, rx.as_bytes()).unwrap();
            m.write(tx_ring, tx.as_bytes()).unwrap();
        }
        let scratch = ProcAddr(rig.cluster.fabric.memory(ep).unwrap().len() - 64);
        let mut doorbells = doorbells;
        doorbells.push((0, rx_tail));
        for (i, &(which, value)) in doorbells.iter().enumerate() {
            let reg = match which { 0 => Register::RxTail(0), 1 => Register::TxTail(0), _ => Register::CqHead(0) };
            let at = ProcAddr(scratch.0 + 4 * i as u64);
            rig.cluster.fabric.memory_mut(ep).unwrap().write(at, &value.to_le_bytes()).unwrap();
            let mut lift = Lift::new(&mut rig.cluster.engine);
            rig.cluster.fabric.start_dma(&mut lift, ep, DmaRequest::write(
                windows.adapter, at, FabricAddr::new(windows.csr.key(), reg.offset()), 4)).unwrap();
        }
        for i in 0..frames {
            rig.client_send(&frame(i));
        }
        rig.run_for(Duration::from_ms(2));
        let mut c = *rig.cluster.nics[0].counters();
        c.rx_delivered -= before.rx_delivered;
        // The bad descriptor at the adapter's RX head was read and refused.
        prop_assert!(c.bad_descriptors > before.bad_descriptors, "{c:?}");
        // Every frame that reached the port is accounted for exactly once.
        let accounted = c.rx_delivered + c.rx_no_buffer + c.rx_truncated + c.rx_dma_errors
            + c.rx_backlog_full + c.rx_no_queue + c.rx_processor_down + c.rx_firmware_drops
            + c.rx_replies + c.rx_overflow;
        let waiting = frames as u64 - accounted.min(frames as u64);
        prop_assert!(accounted <= frames as u64, "{c:?}");
        // Frames may still wait for descriptors the adapter is fetching; at
        // most the queue's backlog.
        prop_assert!(waiting <= 16, "{waiting} frames unaccounted: {c:?}");
        // The other processor's memory is untouched by all this.
        let other_after = rig.cluster.fabric.memory(other).unwrap().slice(ProcAddr(0), 1 << 20).unwrap().to_vec();
        prop_assert!(other_before == other_after);
        // Nothing outside processor 0's windows was reached: the AVT refused
        // whatever the adapter aimed elsewhere, and the adapter's own checks
        // refused descriptors outside the pool before any DMA.
        let nacks = rig.cluster.fabric.avt(ep).unwrap().counters().total_nacks();
        prop_assert_eq!(nacks, 0, "the adapter checked every descriptor before using it");
    }
}
