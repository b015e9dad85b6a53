//! The adapter and the host library together: frames through the firmware,
//! the fabric and the queue pairs, byte for byte, with no host-side copy.

use snet_fabric::avt::Access;
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::DmaRequest;
use snet_fabric::time::Duration;
use snet_fabric::{FabricAddr, NackReason};
use snet_firmware::control::{ControlMessage, RejectReason};
use snet_firmware::kit::PacketBuilder;
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::{FiveTuple, PROTO_TCP};
use snet_host_lib::rig::{Rig, RigConfig, frame_digest};
use snet_host_lib::{ControlOutcome, QueueSetup};
use snet_nic_model::mac;
use snet_nic_model::regs::Register;
use snet_nic_model::ring::{CompletionFlags, Descriptor, TxFlags};
use zerocopy::IntoBytes;

fn syn(client_port: u16, port: u16, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::tcp(
        format!("198.18.0.1:{client_port}").parse().unwrap(),
        format!("198.18.0.10:{port}").parse().unwrap(),
    )
    .flags(snet_firmware::wire::tcp_flags::SYN)
    .payload(payload)
    .build()
    .unwrap()
}

fn segment(client_port: u16, port: u16, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::tcp(
        format!("198.18.0.1:{client_port}").parse().unwrap(),
        format!("198.18.0.10:{port}").parse().unwrap(),
    )
    .payload(payload)
    .build()
    .unwrap()
}

fn tcp_any(port: u16) -> ListenerKey {
    ListenerKey {
        protocol: PROTO_TCP,
        addr: None,
        port,
    }
}

fn listen(rig: &mut Rig, p: usize, port: u16) {
    let key = tcp_any(port);
    let out = rig.control(p, ControlMessage::RegisterListener(key));
    assert!(
        out.iter().all(|o| *o == ControlOutcome::Accepted),
        "{out:?}"
    );
}

fn rig(config: RigConfig) -> Rig {
    Rig::new(config).expect("rig")
}

#[test]
fn a_frame_lands_byte_exact_in_the_chosen_processors_buffer_without_a_host_copy() {
    let mut rig = rig(RigConfig::default());
    listen(&mut rig, 2, 80);
    let frame = syn(40000, 80, b"hello, processor two");
    rig.client_send(&frame);
    rig.run_for(Duration::from_us(200));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
    for p in [0, 1, 3] {
        assert_eq!(
            rig.hosts.processors[p].queues()[0].pending_rx(),
            0,
            "P{p} got nothing"
        );
    }
    let ep = rig.processors[2];
    let qp = rig.hosts.processors[2].queue_mut(0).unwrap();
    assert_eq!(qp.pending_rx(), 1);
    let buf = qp.recv(&rig.cluster.fabric).expect("one frame");
    assert_eq!(&buf[..frame.len()], &frame[..], "byte-exact");
    assert_eq!(buf.len(), 60.max(frame.len()));
    assert!(buf.flags().contains(CompletionFlags::CSUM_L4_OK));
    // The view points into the processor's mapped memory, at the chunk the
    // adapter wrote: no copy on the host side.
    let chunk = buf.chunk();
    let ptr = buf.as_ptr();
    drop(buf);
    let qp = &rig.hosts.processors[2].queues()[0];
    let in_memory = rig
        .cluster
        .fabric
        .memory(ep)
        .unwrap()
        .slice(qp.chunk_addr(chunk), 1)
        .unwrap()
        .as_ptr();
    assert_eq!(ptr, in_memory, "recv() lends the buffer in place");
    assert_eq!(qp.counters().payload_copy_bytes, 0);
    let c = *rig.cluster.nics[0].counters();
    assert_eq!(c.rx_delivered, 1);
    assert_eq!(c.rx_delivered_bytes, 60.max(frame.len()) as u64);
}

#[test]
fn a_frame_sent_from_a_chunk_leaves_the_port_byte_exact_with_offloaded_checksums() {
    let mut rig = rig(RigConfig::default());
    let mut reply = PacketBuilder::tcp(
        "198.18.0.10:80".parse().unwrap(),
        "198.18.0.1:40000".parse().unwrap(),
    )
    .macs(
        snet_firmware::kit::ADAPTER_MAC,
        snet_firmware::kit::CLIENT_MAC,
    )
    .payload(b"reply from processor one")
    .build()
    .unwrap();
    let expected = reply.clone();
    // Spoil the TCP checksum: the adapter fills it in (CSUM_L4 offload).
    let n = reply.len();
    reply[14 + 20 + 16] ^= 0x5A;
    let ep = rig.processors[1];
    let qp = rig.hosts.processors[1].queue_mut(0).unwrap();
    let buf = qp.tx_buffer().unwrap();
    let chunk = buf.chunk();
    let at = qp.chunk_addr(chunk);
    let dst = qp.buffer_mut(&mut rig.cluster.fabric, &buf);
    let dst_ptr = dst.as_ptr();
    dst[..n].copy_from_slice(&reply);
    // The writable view is the processor's memory itself.
    assert_eq!(
        dst_ptr,
        rig.cluster
            .fabric
            .memory(ep)
            .unwrap()
            .slice(at, 1)
            .unwrap()
            .as_ptr()
    );
    let free_before = qp.free_chunks();
    qp.send(&mut rig.cluster, buf, n as u32, TxFlags::CSUM_L4)
        .unwrap();
    rig.run_for(Duration::from_us(200));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
    assert_eq!(rig.hosts.client_frames.len(), 1);
    let (_, wire) = &rig.hosts.client_frames[0];
    let body = mac::check_fcs(wire).expect("valid FCS");
    assert_eq!(&body[..n], &expected[..], "byte-exact, checksum filled in");
    // The completion returned the chunk to the pool (after the interrupt).
    let qp = rig.hosts.processors[1].queue_mut(0).unwrap();
    qp.poll(&mut rig.cluster).unwrap();
    assert_eq!(qp.free_chunks(), free_before + 1);
    assert_eq!(qp.counters().tx_frames, 1);
    assert_eq!(qp.counters().payload_copy_bytes, 0);
}

#[test]
fn frames_leave_the_port_in_ring_order_even_when_their_reads_finish_out_of_order() {
    // Long and short frames alternate: the adapter reads them over both
    // planes in turn, so a short frame's read finishes before the long one
    // posted ahead of it. The wire still gets them in ring order.
    let mut rig = rig(RigConfig::default());
    let frames: Vec<Vec<u8>> = (0..8u8)
        .map(|i| {
            let len = if i % 2 == 0 { 1400 } else { 10 };
            PacketBuilder::tcp(
                "198.18.0.10:80".parse().unwrap(),
                "198.18.0.1:40000".parse().unwrap(),
            )
            .macs(
                snet_firmware::kit::ADAPTER_MAC,
                snet_firmware::kit::CLIENT_MAC,
            )
            .payload(&vec![i; len])
            .build()
            .unwrap()
        })
        .collect();
    let qp = rig.hosts.processors[1].queue_mut(0).unwrap();
    for f in &frames {
        let buf = qp.tx_buffer().unwrap();
        qp.buffer_mut(&mut rig.cluster.fabric, &buf)[..f.len()].copy_from_slice(f);
        qp.post(
            buf,
            f.len() as u32,
            TxFlags::empty(),
            &mut rig.cluster.fabric,
        )
        .unwrap();
    }
    qp.flush(&mut rig.cluster).unwrap();
    rig.run_for(Duration::from_us(500));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
    let sent: Vec<&[u8]> = rig
        .hosts
        .client_frames
        .iter()
        .map(|(_, w)| mac::check_fcs(w).expect("valid FCS"))
        .collect();
    assert_eq!(sent.len(), frames.len());
    for (i, (got, want)) in sent.iter().zip(&frames).enumerate() {
        assert!(
            got.get(..want.len()) == Some(&want[..]),
            "frame {i} out of ring order: {} bytes on the wire, {} posted",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn the_tx_ring_fills_and_refuses_with_the_buffer_back() {
    let mut rig = rig(RigConfig {
        queue: QueueSetup {
            tx_ring: 8,
            ..QueueSetup::default()
        },
        ..RigConfig::default()
    });
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    let mut frame = syn(1, 2, b"x");
    frame[..6].copy_from_slice(&snet_firmware::kit::CLIENT_MAC);
    frame[6..12].copy_from_slice(&snet_firmware::kit::ADAPTER_MAC);
    let mut sent = 0;
    loop {
        let buf = qp.tx_buffer().unwrap();
        qp.buffer_mut(&mut rig.cluster.fabric, &buf)[..frame.len()].copy_from_slice(&frame);
        match qp.post(
            buf,
            frame.len() as u32,
            TxFlags::empty(),
            &mut rig.cluster.fabric,
        ) {
            Ok(()) => sent += 1,
            Err(snet_host_lib::SendError::RingFull(b)) => {
                qp.release(b);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(sent, 7, "a ring of 8 holds 7");
    qp.flush(&mut rig.cluster).unwrap();
    rig.run_for(Duration::from_us(500));
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    qp.poll(&mut rig.cluster).unwrap();
    assert_eq!(rig.hosts.client_frames.len(), 7);
    let buf = qp.tx_buffer().unwrap();
    qp.post(buf, 60, TxFlags::empty(), &mut rig.cluster.fabric)
        .expect("room again after the completions");
}

#[test]
fn frames_with_no_buffer_posted_are_dropped_and_counted() {
    // A ring of 4 holds 3 posted buffers; nobody consumes.
    let mut rig = rig(RigConfig {
        queue: QueueSetup {
            rx_ring: 4,
            tx_ring: 4,
            cq_ring: 8,
            buffers: 3,
            ..QueueSetup::default()
        },
        ..RigConfig::default()
    });
    listen(&mut rig, 0, 80);
    for i in 0..10 {
        rig.client_send(&syn(1000 + i, 80, b"data"));
    }
    rig.run_for(Duration::from_us(500));
    let c = *rig.cluster.nics[0].counters();
    assert_eq!(c.rx_delivered, 3);
    assert_eq!(c.rx_no_buffer, 7);
    assert_eq!(rig.hosts.processors[0].queues()[0].pending_rx(), 3);
    // Still nothing posted: the next frame is dropped too.
    rig.client_send(&syn(1999, 80, b"dropped"));
    rig.run_for(Duration::from_us(200));
    assert_eq!(rig.cluster.nics[0].counters().rx_no_buffer, 8);
    assert_eq!(rig.cluster.nics[0].counters().rx_delivered, 3);
    // Once the frames are consumed, buffers are posted again and frames flow.
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    while qp.recv(&rig.cluster.fabric).is_some() {}
    qp.poll(&mut rig.cluster).unwrap();
    rig.client_send(&syn(2000, 80, b"again"));
    rig.run_for(Duration::from_us(200));
    assert_eq!(rig.cluster.nics[0].counters().rx_delivered, 4);
}

/// Plays a misbehaving driver: writes `descs` into processor 0's RX ring
/// from slot 0 and rings the RX doorbell with `tail`.
fn post_raw(rig: &mut Rig, descs: &[Descriptor], tail: u32) {
    let ep = rig.processors[0];
    let qp = &rig.hosts.processors[0].queues()[0];
    let ring = qp.rx_ring_addr();
    let windows = rig.cluster.nics[0].windows_for(ep).unwrap();
    let m = rig.cluster.fabric.memory_mut(ep).unwrap();
    if !descs.is_empty() {
        m.write(ring, descs.as_bytes()).unwrap();
    }
    // The doorbell value sits in a scratch spot of processor memory.
    let scratch = ProcAddr(m.len() - 64);
    m.write(scratch, &tail.to_le_bytes()).unwrap();
    let mut lift = snet_fabric::engine::Lift::new(&mut rig.cluster.engine);
    rig.cluster
        .fabric
        .start_dma(
            &mut lift,
            ep,
            DmaRequest::write(
                windows.adapter,
                scratch,
                FabricAddr::new(windows.csr.key(), Register::RxTail(0).offset()),
                4,
            ),
        )
        .unwrap();
}

#[test]
fn bad_descriptors_are_refused_counted_and_touch_nothing() {
    let mut rig = rig(RigConfig {
        queue: QueueSetup {
            rx_ring: 8,
            tx_ring: 8,
            cq_ring: 16,
            buffers: 8,
            ..QueueSetup::default()
        },
        ..RigConfig::default()
    });
    listen(&mut rig, 0, 80);
    // Use up the library's 8 buffers (7 posted at first, the 8th at the
    // first interrupt) without consuming them: its ring tail is back at 0.
    for i in 0..8 {
        rig.client_send(&syn(3000 + i, 80, b"fill"));
        rig.run_for(Duration::from_us(40));
    }
    assert_eq!(rig.cluster.nics[0].counters().rx_delivered, 8);
    assert_eq!(rig.hosts.processors[0].queues()[0].rx_posted(), 0);
    assert_eq!(rig.hosts.processors[0].queues()[0].free_chunks(), 0);
    let ep = rig.processors[0];
    let pool = rig.hosts.processors[0].queues()[0].buffers_base();
    let pool_len = 8 * 2048u32;
    let before = rig
        .cluster
        .fabric
        .memory(ep)
        .unwrap()
        .slice(ProcAddr(0), 16 << 20)
        .unwrap()
        .to_vec();
    let bad = [
        Descriptor::new(pool_len - 100, 2048, 9001, 0), // leaves the buffer area
        Descriptor::new(0, 0, 9002, 0),                 // zero length
        Descriptor::new(0, 2048, 9003, 0x80),           // flags on an RX descriptor
        Descriptor::new(4096, 32, 9004, 0),             // too small for the frame
    ];
    post_raw(&mut rig, &bad, 4);
    rig.client_send(&syn(4000, 80, b"to a bad buffer"));
    rig.run_for(Duration::from_us(300));
    let c = *rig.cluster.nics[0].counters();
    assert_eq!(c.bad_descriptors, 3, "outside, zero length, flags");
    assert_eq!(
        c.rx_truncated, 1,
        "the 32-byte buffer cannot hold the frame"
    );
    assert_eq!(c.rx_delivered, 8, "nothing more delivered");
    // Ring index out of range: ignored and counted.
    post_raw(&mut rig, &[], 8);
    rig.run_for(Duration::from_us(50));
    assert_eq!(rig.cluster.nics[0].counters().bad_doorbells, 1);
    // Memory outside the rings, the completion ring and the library's
    // scratch is untouched: compare the buffer pool and everything past it.
    let after = rig
        .cluster
        .fabric
        .memory(ep)
        .unwrap()
        .slice(ProcAddr(0), 16 << 20)
        .unwrap()
        .to_vec();
    let from = pool.0 as usize;
    let to = from + pool_len as usize;
    assert!(
        before[from..to] == after[from..to],
        "no byte of the buffer pool changed"
    );
    // The library saw completions for cookies it never posted: counted, ignored.
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    qp.poll(&mut rig.cluster).unwrap();
    assert_eq!(qp.counters().bad_completions, 4);
}

#[test]
fn interrupts_coalesce_by_count_and_by_time() {
    let mut rig = rig(RigConfig {
        queue: QueueSetup {
            coalesce_count: 4,
            coalesce_ns: 50_000,
            ..QueueSetup::default()
        },
        ..RigConfig::default()
    });
    listen(&mut rig, 3, 80);
    let ep = rig.processors[3];
    let irqs = |rig: &Rig| {
        rig.cluster.nics[0]
            .queue_counters(ep, 0)
            .unwrap()
            .interrupts
    };
    let base = irqs(&rig);
    // Three frames: below the count, so no interrupt before the timer.
    for i in 0..3 {
        rig.client_send(&syn(5000 + i, 80, b"c"));
    }
    rig.run_for(Duration::from_us(30));
    assert_eq!(rig.cluster.nics[0].counters().rx_delivered, 3);
    assert_eq!(irqs(&rig), base, "held back: 3 < 4 and 50 us not elapsed");
    rig.run_for(Duration::from_us(40));
    assert_eq!(irqs(&rig), base + 1, "the time threshold fired");
    // Eight frames at once: the count threshold fires without waiting for
    // the timer, and far fewer interrupts than frames are raised.
    for i in 0..8 {
        rig.client_send(&syn(6000 + i, 80, b"c"));
    }
    rig.run_for(Duration::from_us(30));
    let by_count = irqs(&rig) - base - 1;
    assert!(
        (1..=2).contains(&by_count),
        "{by_count} count-triggered interrupts for 8 frames"
    );
    rig.run_for(Duration::from_us(100));
    let total = irqs(&rig) - base - 1;
    assert!(
        total <= 3,
        "{total} interrupts for 8 frames with a threshold of 4"
    );
    // Every completion was signalled: the host saw all 11 frames.
    assert_eq!(rig.hosts.processors[3].queues()[0].pending_rx(), 11);
    let before = irqs(&rig);
    rig.run_for(Duration::from_us(200));
    assert_eq!(irqs(&rig), before, "no interrupt with nothing pending");
}

#[test]
fn an_adapter_writing_outside_the_registered_window_is_nacked_and_memory_untouched() {
    let mut rig = rig(RigConfig::default());
    let ep = rig.processors[1];
    let adapter = rig.adapters[0];
    let qp = &rig.hosts.processors[1].queues()[0];
    let pool = qp.buffers_base();
    let key = {
        // The buffer window's key, from the AVT (the only window at the pool).
        let avt = rig.cluster.fabric.avt(ep).unwrap();
        let e = avt
            .entries()
            .find(|e| e.local == pool)
            .expect("the pool window");
        (e.key, e.len)
    };
    let snapshot = rig
        .cluster
        .fabric
        .memory(ep)
        .unwrap()
        .slice(ProcAddr(0), 16 << 20)
        .unwrap()
        .to_vec();
    // A buggy adapter aims one byte past the end of the pool window.
    let mut lift = snet_fabric::engine::Lift::new(&mut rig.cluster.engine);
    let id = rig
        .cluster
        .fabric
        .start_dma(
            &mut lift,
            adapter,
            DmaRequest::write(ep, ProcAddr(0), FabricAddr::new(key.0, key.1 - 32), 64),
        )
        .unwrap();
    let _ = id;
    let nacks_before = rig
        .cluster
        .fabric
        .avt(ep)
        .unwrap()
        .counters()
        .nacks(NackReason::OutsideWindow);
    rig.run_for(Duration::from_us(100));
    let nacks = rig
        .cluster
        .fabric
        .avt(ep)
        .unwrap()
        .counters()
        .nacks(NackReason::OutsideWindow);
    assert_eq!(
        nacks,
        nacks_before + 1,
        "the AVT refused the packet that leaves the window"
    );
    let after = rig
        .cluster
        .fabric
        .memory(ep)
        .unwrap()
        .slice(ProcAddr(0), 16 << 20)
        .unwrap()
        .to_vec();
    assert!(snapshot == after, "processor memory untouched");
    // And a window with no write permission (the RX ring) refuses writes.
    let ring = rig.hosts.processors[1].queues()[0].rx_ring_addr();
    let e = *rig
        .cluster
        .fabric
        .avt(ep)
        .unwrap()
        .entries()
        .find(|e| e.local == ring)
        .unwrap();
    assert_eq!(e.access, Access::READ);
}

#[test]
fn a_failed_processor_loses_its_queues_while_the_others_keep_every_byte() {
    let mut rig = rig(RigConfig::default());
    rig.hosts.consume = true;
    // Each processor owns one established connection (its 5-tuple filter).
    for p in 0..4u16 {
        let t = FiveTuple::tcp(
            "198.18.0.1".parse().unwrap(),
            10_000 + p,
            "198.18.0.10".parse().unwrap(),
            8000 + p,
        );
        let out = rig.control(p as usize, ControlMessage::AddConnection(t));
        assert_eq!(out, vec![ControlOutcome::Accepted]);
    }
    // 200 segments per connection, interleaved, 1000 bytes of payload each:
    // about 6.8 ms of a 1 Gbit/s port.
    let payload = vec![0xC3u8; 1000];
    let mut sent = [0u64; 4];
    for _ in 0..200u16 {
        for p in 0..4u16 {
            rig.client_send(&segment(10_000 + p, 8000 + p, &payload));
            sent[p as usize] += 1;
        }
    }
    // Mid-stream, with transfers in flight to every processor.
    rig.run_for(Duration::from_ms(3));
    let delivered_before = rig.hosts.consumed.clone();
    assert!(
        delivered_before.iter().all(|&n| n > 50 && n < 150),
        "{delivered_before:?}"
    );
    rig.fail_processor(1);
    rig.run_for(Duration::from_ms(10));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
    let frame_len = segment(1, 8000, &payload).len() as u64;
    for p in [0usize, 2, 3] {
        assert_eq!(rig.hosts.consumed[p], sent[p], "P{p} got every frame");
        assert_eq!(rig.hosts.consumed_bytes[p], sent[p] * frame_len);
        let one = frame_digest(&segment(10_000 + p as u16, 8000 + p as u16, &payload));
        assert_eq!(
            rig.hosts.consumed_digest[p],
            one.wrapping_mul(sent[p]),
            "P{p}: every byte of every frame intact"
        );
    }
    assert!(rig.hosts.consumed[1] < sent[1]);
    // Segments of the dead processor's connection are answered with RST by
    // the adapter itself (fast connection reset).
    assert!(rig.cluster.nics[0].counters().rx_replies > 0);
    let c = *rig.cluster.nics[0].counters();
    assert_eq!(c.processors_failed, 1);
    assert!(!rig.cluster.nics[0].queue_ok(rig.processors[1], 0));
    // The firmware was told: P1's listener is gone.
    assert!(
        !rig.cluster.nics[0]
            .firmware()
            .is_live(snet_firmware::ProcessorId(1))
    );
}

#[test]
fn two_adapters_serving_one_ip_each_deliver_to_any_processor() {
    let mut rig = rig(RigConfig {
        adapters: 2,
        ..RigConfig::default()
    });
    // Registering reaches both adapters (the replicated filter).
    listen(&mut rig, 2, 80);
    listen(&mut rig, 3, 81);
    for (a, port, p) in [(0u16, 80u16, 2usize), (1, 80, 2), (0, 81, 3), (1, 81, 3)] {
        let mut f = syn(7000 + a * 10 + port, port, b"via an adapter");
        f[..6].copy_from_slice(&snet_host_lib::rig::adapter_mac(a).0);
        rig.client_send(&f);
        rig.run_for(Duration::from_us(200));
        let got = rig.hosts.processors[p]
            .queue_mut(a as usize)
            .unwrap()
            .pending_rx();
        assert_eq!(got, 1, "adapter {a} delivered port {port} to P{p}");
        while rig.hosts.processors[p]
            .queue_mut(a as usize)
            .unwrap()
            .recv(&rig.cluster.fabric)
            .is_some()
        {}
    }
    for a in 0..2 {
        assert_eq!(rig.cluster.nics[a].counters().rx_delivered, 2);
    }
}

#[test]
fn the_mailbox_carries_control_messages_and_a_processor_speaks_only_for_itself() {
    let mut rig = rig(RigConfig::default());
    listen(&mut rig, 1, 23);
    // The same port again from P1: the firmware says so.
    let out = rig.control(1, ControlMessage::RegisterListener(tcp_any(23)));
    assert_eq!(
        out,
        vec![ControlOutcome::Rejected(RejectReason::AlreadyListening)]
    );
    // P0's queue pair carrying a message signed by P2: refused by the adapter.
    let env = snet_firmware::control::Envelope::new(
        snet_firmware::ProcessorId(2),
        ControlMessage::RegisterListener(tcp_any(99)),
    );
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    let seq = qp.send_control(&mut rig.cluster, &env).unwrap();
    rig.run_for(Duration::from_us(100));
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    assert_eq!(
        qp.take_outcomes(),
        vec![(seq, ControlOutcome::Rejected(RejectReason::Unauthorised))]
    );
    // Garbage bytes are malformed.
    let seq = qp
        .send_control_bytes(&mut rig.cluster, &[0xFF; 40])
        .unwrap();
    rig.run_for(Duration::from_us(100));
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    assert_eq!(
        qp.take_outcomes(),
        vec![(seq, ControlOutcome::Rejected(RejectReason::Malformed))]
    );
    let c = rig.cluster.nics[0].counters();
    assert_eq!((c.mailbox_accepted, c.mailbox_rejected), (1, 3));
}

#[test]
fn same_seed_same_trace_hash() {
    let run = |seed| {
        let mut rig = rig(RigConfig {
            seed,
            ..RigConfig::default()
        });
        rig.hosts.consume = true;
        listen(&mut rig, 1, 80);
        for i in 0..50 {
            rig.client_send(&syn(100 + i, 80, &[i as u8; 300]));
        }
        rig.run_for(Duration::from_ms(1));
        (rig.cluster.engine.trace_hash(), rig.hosts.consumed[1])
    };
    let a = run(7);
    assert_eq!(a.1, 50);
    assert_eq!(a, run(7));
}

#[test]
fn the_mac_checks_fcs_size_and_address_and_takes_jumbo_frames_when_configured() {
    let mut config = RigConfig::default();
    config.nic.mac.mtu = 9000;
    config.queue.chunk = 9216;
    config.queue.buffers = 512;
    let mut rig = rig(config);
    listen(&mut rig, 0, 80);
    let nic = |rig: &Rig| *rig.cluster.nics[0].counters();
    // A corrupted FCS.
    let mut f = syn(1, 80, b"x");
    mac::pad_to_minimum(&mut f);
    mac::append_fcs(&mut f);
    f[20] ^= 1;
    rig.cluster.lan_transmit(rig.client, f);
    // A runt (shorter than 64 bytes with its FCS).
    let mut runt = vec![0u8; 40];
    runt[..6].copy_from_slice(&snet_firmware::kit::ADAPTER_MAC);
    mac::append_fcs(&mut runt);
    rig.cluster.lan_transmit(rig.client, runt);
    // Another station's address (flooded by the switch as unknown unicast).
    let mut foreign = syn(2, 80, b"x");
    foreign[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x77]);
    rig.client_send(&foreign);
    // A jumbo frame: 8000 bytes of payload.
    let jumbo = syn(3, 80, &vec![0x4Au8; 8000]);
    rig.client_send(&jumbo);
    // Longer than the MTU allows.
    rig.client_send(&syn(4, 80, &vec![0u8; 9100]));
    rig.run_for(Duration::from_us(300));
    let c = nic(&rig);
    assert_eq!(c.rx_fcs_errors, 1);
    assert_eq!(c.rx_runts, 1);
    assert_eq!(c.rx_filtered, 1);
    assert_eq!(c.rx_oversize, 1);
    assert_eq!(c.rx_delivered, 1);
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    let buf = qp.recv(&rig.cluster.fabric).unwrap();
    assert_eq!(&buf[..], &jumbo[..], "the jumbo frame, byte-exact");
}

#[test]
fn port_and_fabric_captures_open_as_pcap_files() {
    use snet_firmware::kit::pcap::parse_pcap;
    use snet_nic_model::capture::{Capture, LINKTYPE_ETHERNET, LINKTYPE_FABRIC};
    let dir = std::env::temp_dir().join(format!("snet-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lan_path = dir.join("lan0.pcap");
    let fabric_path = dir.join("fabric.pcap");
    let mut rig = rig(RigConfig::default());
    listen(&mut rig, 1, 80);
    rig.cluster
        .capture_port(0, Capture::create(&lan_path, LINKTYPE_ETHERNET).unwrap())
        .unwrap();
    rig.cluster
        .capture_fabric(Capture::create(&fabric_path, LINKTYPE_FABRIC).unwrap());
    let frame = syn(40000, 80, b"captured");
    rig.client_send(&frame);
    rig.run_for(Duration::from_us(200));
    rig.cluster.take_port_capture(0).unwrap().finish().unwrap();
    rig.cluster.take_fabric_capture().unwrap().finish().unwrap();
    let lan = parse_pcap(&std::fs::read(&lan_path).unwrap()).unwrap();
    assert_eq!(lan.len(), 1);
    assert_eq!(
        &lan[0].data[..frame.len()],
        &frame[..],
        "frames without FCS"
    );
    let bytes = std::fs::read(&fabric_path).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        LINKTYPE_FABRIC
    );
    // Every record: a 4-byte pseudo-header and a packet whose CRC checks.
    let mut at = 24;
    let mut packets = 0;
    while at < bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let rec = &bytes[at + 16..at + 16 + caplen];
        assert_eq!(rec[0], 1, "pseudo-header version");
        assert!(rec[1] <= 1, "plane");
        let pkt = snet_fabric::packet::Packet::new_checked(&rec[4..]).expect("a whole packet");
        snet_fabric::packet::PacketRepr::parse(
            &pkt,
            snet_fabric::packet::PacketLimits::from(snet_fabric::packet::Generation::ServerNet2),
        )
        .expect("CRC and fields check");
        packets += 1;
        at += 16 + caplen;
    }
    // The frame's write and its ack, the completion write and its ack, and
    // the interrupt and doorbell traffic around them.
    assert!(packets >= 4, "{packets} packets");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fetch_batch_of_one_still_fetches() {
    let mut config = RigConfig::default();
    config.nic.fetch_batch = 1;
    let mut rig = rig(config);
    listen(&mut rig, 0, 80);
    rig.client_send(&syn(1000, 80, b"x"));
    rig.run_for(Duration::from_us(200));
    assert_eq!(rig.cluster.nics[0].counters().rx_delivered, 1);
}

#[test]
fn a_restored_adapter_resumes_its_queues() {
    let mut rig = rig(RigConfig::default());
    rig.hosts.consume = true;
    listen(&mut rig, 0, 80);
    for i in 0..20 {
        rig.client_send(&syn(1000 + i, 80, b"x"));
    }
    rig.run_for(Duration::from_us(2));
    let adapter = rig.adapters[0];
    rig.cluster
        .fail(snet_fabric::network::FaultTarget::Endpoint(adapter))
        .unwrap();
    rig.run_for(Duration::from_us(200));
    rig.cluster
        .restore(snet_fabric::network::FaultTarget::Endpoint(adapter))
        .unwrap();
    rig.run_for(Duration::from_us(50));
    let before = rig.cluster.nics[0].counters().rx_delivered;
    for i in 0..5 {
        rig.client_send(&syn(5000 + i, 80, b"after"));
    }
    rig.run_for(Duration::from_us(300));
    let c = *rig.cluster.nics[0].counters();
    assert!(rig.cluster.nics[0].queue_ok(rig.processors[0], 0), "{c:?}");
    assert_eq!(c.queue_errors, 0);
    assert_eq!(c.rx_delivered, before + 5, "{c:?}");
    assert!(rig.hosts.consumed[0] >= 5);
}

#[test]
fn several_queues_of_one_processor_on_one_adapter_get_their_own_rings() {
    let mut rig = rig(RigConfig {
        processors: 1,
        ..RigConfig::default()
    });
    let setup = |q| QueueSetup {
        queue: q,
        buffers: 64,
        rx_ring: 32,
        tx_ring: 16,
        cq_ring: 64,
        ..QueueSetup::default()
    };
    // Created back to back: their configurations are staged at the same time.
    rig.hosts.processors[0]
        .add_queue(&mut rig.cluster, 0, setup(1))
        .unwrap();
    rig.hosts.processors[0]
        .add_queue(&mut rig.cluster, 0, setup(2))
        .unwrap();
    rig.run_for(Duration::from_us(200));
    assert!(rig.all_ready());
    for q in [1usize, 2] {
        let mut frame = syn(q as u16, 2, b"from a queue");
        frame[..6].copy_from_slice(&snet_firmware::kit::CLIENT_MAC);
        frame[6..12].copy_from_slice(&snet_firmware::kit::ADAPTER_MAC);
        let qp = rig.hosts.processors[0].queue_mut(q).unwrap();
        let buf = qp.tx_buffer().unwrap();
        qp.buffer_mut(&mut rig.cluster.fabric, &buf)[..frame.len()].copy_from_slice(&frame);
        qp.send(&mut rig.cluster, buf, frame.len() as u32, TxFlags::empty())
            .unwrap();
        rig.run_for(Duration::from_us(200));
        rig.hosts.processors[0]
            .queue_mut(q)
            .unwrap()
            .poll(&mut rig.cluster)
            .unwrap();
        assert_eq!(
            rig.hosts.processors[0].queues()[q].counters().tx_frames,
            1,
            "queue {q}"
        );
    }
    assert_eq!(rig.hosts.client_frames.len(), 2);
    assert_eq!(rig.cluster.nics[0].counters().bad_descriptors, 0);
}

#[test]
fn control_messages_sent_back_to_back_are_each_applied_once() {
    let mut rig = rig(RigConfig::default());
    let qp = rig.hosts.processors[0].queue_mut(0).unwrap();
    let env = |port| {
        snet_firmware::control::Envelope::new(
            snet_firmware::ProcessorId(0),
            ControlMessage::RegisterListener(tcp_any(port)),
        )
    };
    let a = qp.send_control(&mut rig.cluster, &env(1000)).unwrap();
    let b = qp.send_control(&mut rig.cluster, &env(2000)).unwrap();
    let c = qp.send_control(&mut rig.cluster, &env(1000)).unwrap();
    rig.run_for(Duration::from_us(300));
    let out = rig.hosts.processors[0]
        .queue_mut(0)
        .unwrap()
        .take_outcomes();
    assert_eq!(
        out,
        vec![
            (a, ControlOutcome::Accepted),
            (b, ControlOutcome::Accepted),
            (c, ControlOutcome::Rejected(RejectReason::AlreadyListening)),
        ]
    );
}

#[test]
fn written_completions_are_signalled_even_when_the_completion_ring_is_full() {
    // A completion ring smaller than the two rings together (legal for a
    // driver that polls), and a TX ring the adapter reads as nine bad
    // descriptors: seven entries fit. The processor must be told of those
    // seven (it polls only on interrupts), or the last two never get room.
    let mut rig = rig(RigConfig {
        queue: QueueSetup {
            rx_ring: 4,
            tx_ring: 4,
            cq_ring: 8,
            buffers: 8,
            coalesce_count: 32,
            coalesce_ns: 20_000,
            ..QueueSetup::default()
        },
        ..RigConfig::default()
    });
    let ep = rig.processors[0];
    let windows = rig.cluster.nics[0].windows_for(ep).unwrap();
    for tail in [3u32, 2, 1] {
        let m = rig.cluster.fabric.memory_mut(ep).unwrap();
        let scratch = ProcAddr(m.len() - 64);
        m.write(scratch, &tail.to_le_bytes()).unwrap();
        let mut lift = snet_fabric::engine::Lift::new(&mut rig.cluster.engine);
        rig.cluster
            .fabric
            .start_dma(
                &mut lift,
                ep,
                DmaRequest::write(
                    windows.adapter,
                    scratch,
                    FabricAddr::new(windows.csr.key(), Register::TxTail(0).offset()),
                    4,
                ),
            )
            .unwrap();
        rig.run_for(Duration::from_us(5));
    }
    rig.run_for(Duration::from_ms(1));
    let q = rig.cluster.nics[0].queue_counters(ep, 0).unwrap();
    assert_eq!(
        q.completions, 9,
        "the first seven were signalled and consumed, then the last two fit: {q:?}"
    );
    assert!(q.interrupts >= 2, "both parts were signalled: {q:?}");
    assert_eq!(q.bad_descriptors, 9);
}

#[test]
fn an_adapter_accepts_an_address_it_takes_over_until_it_forgets_it() {
    let mut rig = rig(RigConfig::default());
    listen(&mut rig, 1, 80);
    let taken = mac::MacAddr([0x02, 0, 0, 0, 0, 0x77]);
    let to_taken = |n: u16| {
        let mut f = syn(40000 + n, 80, b"x");
        f[..6].copy_from_slice(&taken.0);
        f
    };
    let nic = |rig: &Rig| *rig.cluster.nics[0].counters();
    // Not its address: filtered.
    rig.client_send(&to_taken(1));
    rig.run_for(Duration::from_us(100));
    assert_eq!((nic(&rig).rx_filtered, nic(&rig).rx_delivered), (1, 0));
    // Taken over: delivered like a frame for its own address.
    assert_eq!(rig.cluster.nics[0].accept_unicast(taken), Ok(true));
    assert_eq!(rig.cluster.nics[0].accept_unicast(taken), Ok(false));
    let group = mac::MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
    assert!(rig.cluster.nics[0].accept_unicast(group).is_err());
    rig.client_send(&to_taken(2));
    rig.run_for(Duration::from_us(100));
    assert_eq!((nic(&rig).rx_filtered, nic(&rig).rx_delivered), (1, 1));
    let qp = rig.hosts.processors[1].queue_mut(0).unwrap();
    let buf = qp.recv(&rig.cluster.fabric).unwrap();
    let sent = to_taken(2);
    assert_eq!(buf.len(), 60, "padded to the minimum frame");
    assert_eq!(&buf[..sent.len()], &sent[..], "byte-exact, to the listener");
    drop(buf);
    // Forgotten: filtered again; its own address still works.
    assert!(rig.cluster.nics[0].forget_unicast(taken));
    rig.client_send(&to_taken(3));
    rig.client_send(&syn(40004, 80, b"x"));
    rig.run_for(Duration::from_us(100));
    assert_eq!((nic(&rig).rx_filtered, nic(&rig).rx_delivered), (2, 2));
    assert!(rig.hosts.errors.is_empty(), "{:?}", rig.hosts.errors);
}
