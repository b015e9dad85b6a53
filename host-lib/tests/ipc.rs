//! The inter-processor message system on the rig's four processors:
//! request/reply across the fabric, flow control, errors, untrusted slots,
//! processor failure and determinism.

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use snet_fabric::EndpointId;
use snet_fabric::avt::InterruptEntry;
use snet_fabric::engine::ComponentId;
use snet_fabric::memory::ProcAddr;
use snet_fabric::network::{DmaCompletion, FaultTarget};
use snet_fabric::time::Duration;
use snet_host_lib::Processor;
use snet_host_lib::ipc::{
    HEADER_LEN, HeaderRepr, Ipc, IpcConfig, IpcError, Message, MessageKind, RequestId, WireKind,
};
use snet_host_lib::rig::{NoEvent, Rig, RigConfig};
use snet_nic_model::{Cluster, HostModel, StationId};
use zerocopy::IntoBytes;

const ARENA: u64 = 4 << 20;

/// The answer a serving processor gives: the request's bytes reversed and
/// XORed, so a test can check every byte of both directions.
fn echo(payload: &[u8]) -> Vec<u8> {
    payload.iter().rev().map(|b| b ^ 0x5a).collect()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (seed
                .wrapping_mul(31)
                .wrapping_add(i as u64 * 7 + (i as u64 >> 8))) as u8
        })
        .collect()
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h = (*h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
}

/// Processors with their queue pairs, the message system, and what each
/// processor got.
struct World {
    processors: Vec<Processor>,
    ipc: Ipc,
    /// Keep requests for the test instead of answering them.
    hold: Vec<bool>,
    held: Vec<Vec<Message>>,
    /// Requests answered (their payloads), per server.
    served: Vec<Vec<Vec<u8>>>,
    replies: Vec<Vec<Message>>,
    failed: Vec<bool>,
    errors: Vec<String>,
    /// A hash of every message taken, in order, with its time.
    digest: u64,
}

impl World {
    fn serve(&mut self, cluster: &mut Cluster<NoEvent>, i: usize) {
        while let Some(m) = self.ipc.take(i) {
            fnv(&mut self.digest, &(i as u64).to_le_bytes());
            fnv(&mut self.digest, &(m.from as u64).to_le_bytes());
            fnv(&mut self.digest, &m.tag.to_le_bytes());
            fnv(&mut self.digest, &m.at.as_ps().to_le_bytes());
            fnv(&mut self.digest, &m.payload);
            match &m.kind {
                MessageKind::Request(r) if !self.hold[i] => {
                    if let Err(e) = self.ipc.reply(cluster, r, &echo(&m.payload)) {
                        self.errors.push(format!("P{i} reply: {e}"));
                    }
                    self.served[i].push(m.payload);
                }
                MessageKind::Request(_) => self.held[i].push(m),
                MessageKind::Reply { .. } => self.replies[i].push(m),
            }
        }
    }

    fn index(&self, ep: EndpointId) -> Option<usize> {
        self.processors.iter().position(|p| p.endpoint() == ep)
    }
}

impl HostModel<NoEvent> for World {
    fn event(&mut self, _: &mut Cluster<NoEvent>, _: ComponentId, _: NoEvent) {}
    fn wake(&mut self, _: &mut Cluster<NoEvent>, _: ComponentId) {}

    fn interrupt(&mut self, cluster: &mut Cluster<NoEvent>, processor: EndpointId) {
        let Some(i) = self.index(processor).filter(|&i| !self.failed[i]) else {
            return;
        };
        let ipc = &mut self.ipc;
        if let Err(e) =
            self.processors[i].on_interrupt_with(cluster, |c, e| ipc.on_interrupt(c, i, e))
        {
            self.errors.push(format!("P{i}: {e}"));
        }
        self.serve(cluster, i);
    }

    fn dma_done(&mut self, cluster: &mut Cluster<NoEvent>, done: DmaCompletion) {
        let Some(i) = self.index(done.requester).filter(|&i| !self.failed[i]) else {
            return;
        };
        if !self.ipc.on_dma_done(cluster, &done) {
            if let Err(e) = self.processors[i].on_dma_done(cluster, &done) {
                self.errors.push(format!("P{i}: {e}"));
            }
        }
        self.serve(cluster, i);
    }

    fn lan_frame(&mut self, _: &mut Cluster<NoEvent>, _: StationId, _: Vec<u8>) {}
}

fn build_with(
    config: IpcConfig,
    arena: u64,
    seed: u64,
) -> (Cluster<NoEvent>, World, Vec<EndpointId>) {
    let rig = Rig::new(RigConfig {
        seed,
        ..RigConfig::default()
    })
    .expect("rig");
    let Rig {
        cluster,
        hosts,
        processors,
        ..
    } = rig;
    let mut procs = hosts.processors;
    let arenas = procs
        .iter_mut()
        .map(|p| (p.endpoint(), p.reserve(arena), arena))
        .collect();
    let ipc = Ipc::new(config, arenas).expect("valid config");
    let n = procs.len();
    let world = World {
        processors: procs,
        ipc,
        hold: vec![false; n],
        held: vec![Vec::new(); n],
        served: vec![Vec::new(); n],
        replies: vec![Vec::new(); n],
        failed: vec![false; n],
        errors: Vec::new(),
        digest: 0xcbf2_9ce4_8422_2325,
    };
    let mut cluster = cluster;
    let mut world = world;
    // Let the queue pairs' last doorbells finish, so the fabric counters
    // below count the message system's transfers only.
    run(&mut cluster, &mut world, Duration::from_ms(1));
    (cluster, world, processors)
}

fn build() -> (Cluster<NoEvent>, World, Vec<EndpointId>) {
    build_with(IpcConfig::default(), ARENA, 1)
}

fn run(cluster: &mut Cluster<NoEvent>, world: &mut World, d: Duration) {
    let until = cluster.now() + d;
    cluster.run_until(until, world);
}

fn reply_result(m: &Message) -> (RequestId, Result<(), IpcError>) {
    match &m.kind {
        MessageKind::Reply { request, result } => (*request, result.clone()),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// The fabric's packet payload on the rig (ServerNet II): a message of
/// `32 + len ≤ 512` bytes goes in one write.
const INLINE: usize = 512;

#[test]
fn request_and_reply_cross_the_fabric_byte_exact() {
    let (mut cluster, mut w, eps) = build();
    let max = IpcConfig::default().max_payload();
    let sizes = [
        0,
        1,
        100,
        INLINE - HEADER_LEN,
        INLINE - HEADER_LEN + 1,
        4096,
        max,
    ];
    for (k, &size) in sizes.iter().enumerate() {
        let payload = pattern(k as u64 + 1, size);
        let tag = 0xa000 + k as u64;
        let before = cluster.fabric.counters();
        let t0 = cluster.now();
        let id = w
            .ipc
            .send_request(&mut cluster, 0, 3, tag, &payload)
            .expect("send");
        assert_eq!(w.ipc.outstanding(0, 3), 1);
        run(&mut cluster, &mut w, Duration::from_ms(1));
        assert!(w.errors.is_empty(), "{:?}", w.errors);
        // The server got exactly the bytes sent …
        assert_eq!(w.served[3].last(), Some(&payload), "size {size}");
        // … and the client exactly the server's answer, with its tag.
        assert_eq!(w.replies[0].len(), k + 1);
        let reply = w.replies[0].last().unwrap();
        assert_eq!(reply_result(reply), (id, Ok(())));
        assert_eq!(reply.from, 3);
        assert_eq!(reply.tag, tag);
        assert_eq!(reply.payload, echo(&payload), "size {size}");
        assert!(reply.at > t0, "virtual time must pass");
        assert_eq!(w.ipc.outstanding(0, 3), 0);
        // Both messages crossed the fabric as DMA writes that raised
        // interrupts: one write each when it fits a packet, two otherwise.
        let after = cluster.fabric.counters();
        let writes =
            |c: &snet_fabric::network::FabricCounters, ep| c.endpoint(ep).unwrap().0.dma.completed;
        let irqs =
            |c: &snet_fabric::network::FabricCounters, ep| c.endpoint(ep).unwrap().0.interrupts;
        let per_message = if HEADER_LEN + size <= INLINE { 1 } else { 2 };
        assert_eq!(
            writes(&after, eps[0]) - writes(&before, eps[0]),
            per_message
        );
        assert_eq!(
            writes(&after, eps[3]) - writes(&before, eps[3]),
            per_message
        );
        assert_eq!(
            irqs(&after, eps[3]) - irqs(&before, eps[3]),
            1,
            "one interrupt per message"
        );
        assert_eq!(irqs(&after, eps[0]) - irqs(&before, eps[0]), 1);
    }
    let bytes: u64 = sizes.iter().map(|&s| s as u64).sum();
    let c0 = w.ipc.counters(0);
    let c3 = w.ipc.counters(3);
    assert_eq!((c0.requests_sent, c0.replies_received), (7, 7));
    assert_eq!((c3.requests_received, c3.replies_sent), (7, 7));
    assert_eq!((c0.bytes_sent, c0.bytes_received), (bytes, bytes));
    assert_eq!((c3.bytes_sent, c3.bytes_received), (bytes, bytes));
    for c in [c0, c3] {
        assert_eq!((c.malformed, c.stale, c.failed), (0, 0, 0));
    }
    for p in &w.processors {
        assert_eq!(
            p.stray_interrupts, 0,
            "IPC claims its own interrupt entries"
        );
    }
    // The rings are where the arena is, and only P0 and P3 used theirs.
    // One connection: 4 KiB inline ring + 124 KiB bulk ring + 128 KiB
    // staging on each side.
    assert_eq!(w.ipc.arena_used(0), 256 << 10);
    assert_eq!(w.ipc.arena_used(3), 256 << 10);
    assert_eq!(w.ipc.arena_used(1), 0);
    let ring = w.ipc.request_ring(0, 3).unwrap();
    assert_eq!(
        (ring.owner, ring.writer, ring.stride),
        (eps[3], eps[0], INLINE as u32)
    );
}

#[test]
fn slots_bound_outstanding_requests_per_peer() {
    let (mut cluster, mut w, _) = build();
    w.hold[3] = true;
    let mut ids = Vec::new();
    for k in 0..8u64 {
        ids.push(
            w.ipc
                .send_request(&mut cluster, 0, 3, k, &pattern(k, 600 + k as usize))
                .expect("a free slot"),
        );
    }
    assert_eq!(w.ipc.outstanding(0, 3), 8);
    assert_eq!(
        w.ipc.send_request(&mut cluster, 0, 3, 99, b"one too many"),
        Err(IpcError::WouldBlock { peer: 3, slots: 8 })
    );
    // Other peers are independent: P0 → P1 and P2 → P3 still go.
    let to1 = w
        .ipc
        .send_request(&mut cluster, 0, 1, 50, b"to P1")
        .unwrap();
    w.ipc
        .send_request(&mut cluster, 2, 3, 60, b"P2 to P3")
        .unwrap();
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.held[3].len(), 9, "8 from P0, 1 from P2");
    assert_eq!(w.replies[0].len(), 1);
    assert_eq!(reply_result(&w.replies[0][0]), (to1, Ok(())));
    assert_eq!(w.ipc.outstanding(0, 3), 8, "still all busy");
    assert!(matches!(
        w.ipc.send_request(&mut cluster, 0, 3, 99, b"x"),
        Err(IpcError::WouldBlock { .. })
    ));
    // Answer in reverse order.
    let held: Vec<Message> = std::mem::take(&mut w.held[3]);
    for m in held.iter().rev() {
        let r = m.request().unwrap();
        w.ipc.reply(&mut cluster, r, &echo(&m.payload)).unwrap();
        assert_eq!(
            w.ipc.reply(&mut cluster, r, b"again"),
            Err(IpcError::StaleRequest),
            "a request is answered once"
        );
    }
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.ipc.outstanding(0, 3), 0);
    assert_eq!(w.replies[0].len(), 9);
    assert_eq!(w.replies[2].len(), 1);
    for m in &w.replies[0][1..] {
        let (id, result) = reply_result(m);
        let k = ids.iter().position(|&i| i == id).expect("one of ours") as u64;
        assert_eq!(result, Ok(()));
        assert_eq!(m.tag, k);
        assert_eq!(m.payload, echo(&pattern(k, 600 + k as usize)));
    }
    // Slots are free again.
    w.hold[3] = false;
    for k in 0..8 {
        w.ipc
            .send_request(&mut cluster, 0, 3, 100 + k, b"again")
            .unwrap();
    }
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.replies[0].len(), 17);
    assert!(w.errors.is_empty(), "{:?}", w.errors);
}

#[test]
fn bad_sends_are_refused() {
    let (mut cluster, mut w, _) = build();
    let max = IpcConfig::default().max_payload();
    assert_eq!(
        w.ipc.send_request(&mut cluster, 0, 1, 0, &vec![0; max + 1]),
        Err(IpcError::TooLarge { len: max + 1, max })
    );
    assert_eq!(
        w.ipc.send_request(&mut cluster, 2, 2, 0, b"me"),
        Err(IpcError::SelfSend)
    );
    assert_eq!(
        w.ipc.send_request(&mut cluster, 0, 4, 0, b"nobody"),
        Err(IpcError::NoSuchProcessor(4))
    );
    assert_eq!(
        w.ipc.send_request(&mut cluster, 9, 0, 0, b"nobody"),
        Err(IpcError::NoSuchProcessor(9))
    );
    assert!(!w.ipc.is_open(0, 1), "nothing opened by refused sends");
    // Configuration ranges.
    for (slots, slot_size) in [(0, 4096), (8, HEADER_LEN as u32), (8, (1 << 20) + 1)] {
        assert!(matches!(
            Ipc::new(IpcConfig { slots, slot_size }, Vec::new()),
            Err(IpcError::Config(_))
        ));
    }
    // An arena too small for a connection.
    let (mut cluster, mut w, _) = build_with(IpcConfig::default(), 64 << 10, 1);
    match w.ipc.send_request(&mut cluster, 1, 2, 0, b"hi") {
        Err(IpcError::ArenaFull {
            processor,
            need,
            free,
            arena,
        }) => {
            assert_eq!(processor, 1);
            assert_eq!(arena, 64 << 10);
            assert!(need > free);
        }
        other => panic!("expected ArenaFull, got {other:?}"),
    }
    // Small slots: every message fits inline, and still works.
    let (mut cluster, mut w, _) = build_with(
        IpcConfig {
            slots: 2,
            slot_size: 40,
        },
        ARENA,
        1,
    );
    w.ipc
        .send_request(&mut cluster, 1, 2, 5, &[1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    assert!(w.ipc.request_ring(1, 2).unwrap().bulk.is_none());
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.replies[1][0].payload, echo(&[1, 2, 3, 4, 5, 6, 7, 8]));
}

/// A valid header + payload for slot `slot`, as bytes.
fn forged(kind: WireKind, slot: u16, seq: u32, tag: u64, payload: &[u8]) -> Vec<u8> {
    let h = HeaderRepr {
        kind,
        slot,
        len: payload.len() as u32,
        seq,
        tag,
    };
    let mut v = h.emit().as_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn malformed_slots_and_entries_are_counted_and_dropped() {
    let (mut cluster, mut w, eps) = build();
    w.ipc.send_request(&mut cluster, 0, 3, 1, b"open").unwrap();
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.replies[0].len(), 1);
    let ring = w.ipc.request_ring(0, 3).unwrap();
    let stride = ring.stride as u64;
    let slot1 = ProcAddr(ring.base.0 + stride);
    let now = cluster.now();
    let entry = |requester, key, offset: u64, len: usize| InterruptEntry {
        at: now,
        requester,
        key,
        offset: offset as u32,
        len: len as u32,
    };
    let ep3 = eps[3];
    let write = |cluster: &mut Cluster<NoEvent>, at: ProcAddr, bytes: &[u8]| {
        cluster
            .fabric
            .memory_mut(ep3)
            .unwrap()
            .write(at, bytes)
            .unwrap();
    };
    let mut malformed = 0;
    let mut check =
        |w: &mut World, cluster: &mut Cluster<NoEvent>, e: InterruptEntry, why: &str| {
            assert!(w.ipc.on_interrupt(cluster, 3, &e), "{why}: an IPC window");
            malformed += 1;
            assert_eq!(w.ipc.counters(3).malformed, malformed, "{why}");
            assert!(!w.ipc.has_messages(3), "{why}: nothing delivered");
        };
    // Garbage in a slot.
    write(&mut cluster, slot1, &[0xee; 64]);
    check(
        &mut w,
        &mut cluster,
        entry(eps[0], ring.key, stride, 32),
        "garbage",
    );
    // A good header, but the entry lies.
    let good = forged(WireKind::Request, 1, 100, 77, b"four");
    write(&mut cluster, slot1, &good);
    let n = good.len();
    check(
        &mut w,
        &mut cluster,
        entry(eps[1], ring.key, stride, n),
        "wrong requester",
    );
    check(
        &mut w,
        &mut cluster,
        entry(eps[0], ring.key, stride + 8, n),
        "mid-slot offset",
    );
    check(
        &mut w,
        &mut cluster,
        entry(eps[0], ring.key, 8 * stride, n),
        "past the ring",
    );
    check(
        &mut w,
        &mut cluster,
        entry(eps[0], ring.key, stride, n - 1),
        "short write",
    );
    check(
        &mut w,
        &mut cluster,
        entry(eps[0], ring.key, stride, 8),
        "shorter than a header",
    );
    let (bulk_key, _, _) = ring.bulk.unwrap();
    check(
        &mut w,
        &mut cluster,
        entry(eps[0], bulk_key, 0, n),
        "bulk window",
    );
    // The entry is right, the header is not.
    for (bytes, why) in [
        (forged(WireKind::Request, 2, 100, 77, b"four"), "slot field"),
        (forged(WireKind::Reply, 1, 100, 77, b"four"), "kind"),
        (
            forged(WireKind::Request, 1, 100, 77, b"fiv"),
            "length vs entry",
        ),
    ] {
        write(&mut cluster, slot1, &bytes);
        check(
            &mut w,
            &mut cluster,
            entry(eps[0], ring.key, stride, n),
            why,
        );
    }
    let mut huge = forged(WireKind::Request, 1, 100, 77, b"four");
    huge[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
    write(&mut cluster, slot1, &huge);
    check(
        &mut w,
        &mut cluster,
        entry(eps[0], ring.key, stride, INLINE),
        "length too large",
    );
    let mut flags = forged(WireKind::Request, 1, 100, 77, b"four");
    flags[3] = 1;
    write(&mut cluster, slot1, &flags);
    check(
        &mut w,
        &mut cluster,
        entry(eps[0], ring.key, stride, n),
        "flags",
    );
    // A window that is not IPC's is not claimed.
    let qp_key = snet_fabric::WindowKey::new(0, 1).unwrap();
    let foreign = entry(eps[0], qp_key, 0, 32);
    if !w.processors[3]
        .queues()
        .iter()
        .any(|q| q.owns_interrupt(qp_key))
    {
        assert!(!w.ipc.on_interrupt(&mut cluster, 3, &foreign));
    }
    // Everything right: the checks do accept a genuine-looking message …
    write(&mut cluster, slot1, &good);
    let ok = entry(eps[0], ring.key, stride, n);
    assert!(w.ipc.on_interrupt(&mut cluster, 3, &ok));
    let m = w.ipc.take(3).expect("delivered");
    assert_eq!((m.from, m.tag, m.payload.as_slice()), (0, 77, &b"four"[..]));
    // … once: the same entry again is a duplicate.
    assert!(w.ipc.on_interrupt(&mut cluster, 3, &ok));
    assert_eq!(w.ipc.counters(3).stale, 1);
    assert!(!w.ipc.has_messages(3));
    // Its reply finds no request outstanding at P0: stale there, not delivered.
    w.ipc
        .reply(&mut cluster, m.request().unwrap(), b"to nobody")
        .unwrap();
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.ipc.counters(0).stale, 1);
    assert_eq!(w.replies[0].len(), 1);
    assert_eq!(w.ipc.counters(3).malformed, malformed);
    assert_eq!(w.ipc.counters(0).malformed, 0);
    // The connection still works.
    w.ipc
        .send_request(&mut cluster, 0, 3, 2, b"still fine")
        .unwrap();
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.replies[0].len(), 2);
    assert_eq!(w.replies[0][1].payload, echo(b"still fine"));
    assert!(w.errors.is_empty(), "{:?}", w.errors);
}

#[test]
fn random_slot_contents_never_panic() {
    let (mut cluster, mut w, eps) = build();
    w.hold = vec![true; 4];
    w.ipc.open(&mut cluster, 0, 3).unwrap();
    let ring = w.ipc.request_ring(0, 3).unwrap();
    let reply_ring = w.ipc.reply_ring(0, 3).unwrap();
    let state = RefCell::new((cluster, w));
    // Either raw bytes, or a header that is right for the entry's slot with
    // at most one byte changed, so that every check is reached both ways.
    let case = (
        any::<bool>(),                                         // reply ring?
        0u64..10,                                              // slot written (8 exist)
        prop::option::weighted(0.2, any::<u32>()),             // raw entry offset
        prop::option::weighted(0.2, 0usize..HEADER_LEN + 600), // raw entry length
        0usize..4,                                             // requester
        prop::option::weighted(0.3, prop::collection::vec(any::<u8>(), HEADER_LEN)),
        (1u8..3, prop::option::weighted(0.1, any::<u16>())), // kind, slot field
        prop_oneof![0u32..600, any::<u32>()],                // payload length
        (any::<u32>(), any::<u64>()),                        // seq, tag
        prop::option::weighted(0.3, (0usize..HEADER_LEN, any::<u8>())), // one byte changed
    );
    // A fixed stream of cases, so the counts checked below repeat.
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases: 2048,
            ..ProptestConfig::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    runner
        .run(
            &case,
            |(
                to_reply_ring,
                slot,
                raw_offset,
                raw_len,
                requester,
                raw,
                (kind, slot_field),
                len,
                (seq, tag),
                change,
            )| {
                let mut st = state.borrow_mut();
                let (cluster, w) = &mut *st;
                let (p, r) = if to_reply_ring {
                    (0, reply_ring)
                } else {
                    (3, ring)
                };
                let hdr = raw.unwrap_or_else(|| {
                    let kind = if kind == 1 {
                        WireKind::Request
                    } else {
                        WireKind::Reply
                    };
                    let slot = slot_field.unwrap_or(slot as u16);
                    let mut v = HeaderRepr {
                        kind,
                        slot,
                        len,
                        seq,
                        tag,
                    }
                    .emit()
                    .as_bytes()
                    .to_vec();
                    if let Some((at, byte)) = change {
                        v[at] = byte;
                    }
                    v
                });
                let offset = raw_offset.unwrap_or(slot as u32 * r.stride);
                let len = raw_len.unwrap_or((HEADER_LEN + len as usize).min(r.stride as usize));
                let at = ProcAddr(r.base.0 + (slot % r.slots as u64) * r.stride as u64);
                cluster
                    .fabric
                    .memory_mut(r.owner)
                    .unwrap()
                    .write(at, &hdr)
                    .unwrap();
                let e = InterruptEntry {
                    at: cluster.now(),
                    requester: eps[requester],
                    key: r.key,
                    offset,
                    len: len as u32,
                };
                let before = w.ipc.counters(p);
                prop_assert!(w.ipc.on_interrupt(cluster, p, &e));
                let after = w.ipc.counters(p);
                let outcomes = (after.malformed - before.malformed)
                    + (after.stale - before.stale)
                    + (after.requests_received - before.requests_received)
                    + (after.replies_received - before.replies_received);
                prop_assert_eq!(outcomes, 1, "each entry has exactly one outcome");
                while let Some(m) = w.ipc.take(p) {
                    prop_assert!(m.payload.len() <= IpcConfig::default().max_payload());
                    prop_assert!(m.request().is_some(), "no reply was outstanding");
                }
                Ok(())
            },
        )
        .unwrap();
    let (_, w) = state.into_inner();
    assert!(w.ipc.counters(3).malformed > 0);
    assert!(
        w.ipc.counters(3).requests_received > 0,
        "some forged requests pass the checks"
    );
    assert_eq!(w.ipc.counters(0).replies_received, 0);
}

#[test]
fn a_failed_processor_answers_its_outstanding_requests_with_peer_down() {
    let (mut cluster, mut w, eps) = build();
    w.hold[2] = true;
    w.hold[0] = true;
    let first = w
        .ipc
        .send_request(&mut cluster, 1, 2, 11, b"to P2")
        .unwrap();
    w.ipc
        .send_request(&mut cluster, 2, 0, 21, b"P2 asks P0")
        .unwrap();
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.held[2].len(), 1);
    assert_eq!(w.held[0].len(), 1);
    // A second request is still on its way when P2 fails.
    let second = w
        .ipc
        .send_request(&mut cluster, 1, 2, 12, &pattern(3, 9000))
        .unwrap();
    assert_eq!(w.ipc.outstanding(1, 2), 2);
    w.failed[2] = true;
    cluster.fail(FaultTarget::Endpoint(eps[2])).unwrap();
    let t = cluster.now();
    let told = w.ipc.processor_failed(&mut cluster, 2);
    assert_eq!(told, vec![1]);
    // Promptly: at the same instant, before the engine runs.
    let mut got = Vec::new();
    while let Some(m) = w.ipc.take(1) {
        assert_eq!(m.at, t);
        assert_eq!(m.from, 2);
        got.push((reply_result(&m), m.tag));
    }
    assert_eq!(
        got,
        vec![
            ((first, Err(IpcError::PeerDown(2))), 11),
            ((second, Err(IpcError::PeerDown(2))), 12)
        ]
    );
    assert_eq!(w.ipc.outstanding(1, 2), 0);
    assert_eq!(w.ipc.counters(1).failed, 2);
    // No more sends to or from P2; its request to P0 is forgotten.
    assert_eq!(
        w.ipc.send_request(&mut cluster, 1, 2, 13, b"x"),
        Err(IpcError::PeerDown(2))
    );
    assert_eq!(
        w.ipc.send_request(&mut cluster, 2, 1, 13, b"x"),
        Err(IpcError::ProcessorDown(2))
    );
    let held = w.held[0].pop().unwrap();
    assert_eq!(
        w.ipc.reply(&mut cluster, held.request().unwrap(), b"late"),
        Err(IpcError::PeerDown(2))
    );
    // P1 ↔ P3 are untouched.
    w.ipc
        .send_request(&mut cluster, 1, 3, 31, b"P1 to P3")
        .unwrap();
    w.ipc
        .send_request(&mut cluster, 3, 1, 32, b"P3 to P1")
        .unwrap();
    run(&mut cluster, &mut w, Duration::from_ms(5));
    assert_eq!(w.replies[1].len(), 1, "only the P3 reply, nothing late");
    assert_eq!(w.replies[1][0].payload, echo(b"P1 to P3"));
    assert_eq!(w.replies[3].len(), 1);
    assert_eq!(w.replies[3][0].payload, echo(b"P3 to P1"));
    assert!(w.errors.is_empty(), "{:?}", w.errors);
    for p in [0, 1, 3] {
        assert_eq!(w.ipc.counters(p).malformed, 0);
    }
    // Restored: P2 serves again, on fresh rings; P1 reuses its memory.
    cluster.restore(FaultTarget::Endpoint(eps[2])).unwrap();
    w.failed[2] = false;
    w.hold[2] = false;
    w.ipc.processor_restored(2);
    let used1 = w.ipc.arena_used(1);
    assert_eq!(w.ipc.arena_used(2), 0);
    w.ipc
        .send_request(&mut cluster, 1, 2, 14, b"welcome back")
        .unwrap();
    run(&mut cluster, &mut w, Duration::from_ms(1));
    assert_eq!(w.replies[1].len(), 2);
    assert_eq!(reply_result(&w.replies[1][1]).1, Ok(()));
    assert_eq!(w.replies[1][1].payload, echo(b"welcome back"));
    assert_eq!(w.ipc.arena_used(1), used1, "P1 reused its regions for P2");
    assert!(w.ipc.arena_used(2) > 0);
    assert!(w.errors.is_empty(), "{:?}", w.errors);
}

struct Xorshift(u64);
impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs `rounds` requests among all four processors in a seeded pattern;
/// returns the engine's trace hash, the digest of every message taken, and
/// the number of replies.
fn seeded_rounds(seed: u64, rounds: usize) -> (u64, u64, usize) {
    let (mut cluster, mut w, _) = build_with(IpcConfig::default(), ARENA, seed);
    let mut rng = Xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let max = IpcConfig::default().max_payload() as u64;
    let mut expect: BTreeMap<RequestId, Vec<u8>> = BTreeMap::new();
    for r in 0..rounds {
        let from = rng.below(4) as usize;
        let to = (from + 1 + rng.below(3) as usize) % 4;
        let len = match rng.below(4) {
            0 => rng.below(4),
            1 => rng.below(480),
            2 => rng.below(4096),
            _ => rng.below(max + 1),
        } as usize;
        let payload = pattern(rng.next(), len);
        loop {
            match w
                .ipc
                .send_request(&mut cluster, from, to, r as u64, &payload)
            {
                Ok(id) => {
                    expect.insert(id, echo(&payload));
                    break;
                }
                Err(IpcError::WouldBlock { .. }) => {
                    run(&mut cluster, &mut w, Duration::from_us(20))
                }
                Err(e) => panic!("round {r}: {e}"),
            }
        }
        run(&mut cluster, &mut w, Duration::from_ns(rng.below(5000)));
    }
    run(&mut cluster, &mut w, Duration::from_ms(5));
    assert!(w.errors.is_empty(), "{:?}", w.errors);
    let mut replies = 0;
    for (p, list) in w.replies.iter().enumerate() {
        for m in list {
            let (id, result) = reply_result(m);
            assert_eq!(result, Ok(()), "P{p}");
            assert_eq!(expect.remove(&id).as_ref(), Some(&m.payload), "P{p} {id}");
            replies += 1;
        }
    }
    assert!(expect.is_empty(), "every request answered");
    // Under this load the fabric retries timed-out packets, and a retried
    // write can land twice: the duplicate interrupt is dropped as stale
    // (never delivered twice, as the exact reply count above shows).
    let retries = cluster.fabric.counters().dma_total(|d| d.retries);
    let mut stale = 0;
    for p in 0..4 {
        let c = w.ipc.counters(p);
        assert_eq!((c.malformed, c.failed), (0, 0), "P{p}");
        stale += c.stale;
    }
    assert!(stale <= retries, "{stale} stale > {retries} retries");
    (cluster.engine.trace_hash(), w.digest, replies)
}

#[test]
fn seeded_rounds_are_deterministic() {
    let a = seeded_rounds(7, 200);
    let b = seeded_rounds(7, 200);
    assert_eq!(a, b);
    assert_eq!(a.2, 200);
    let c = seeded_rounds(8, 200);
    assert_ne!(a.0, c.0, "another seed, another trace");
    assert_ne!(a.1, c.1);
}
