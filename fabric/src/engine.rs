//! The deterministic discrete-event engine.
//!
//! - Events are ordered by `(time, sequence)`: ties at one instant run in the
//!   order they were scheduled, so a run never depends on heap internals or
//!   on hash-map iteration order.
//! - Components are addressed by [`ComponentId`]. Besides plain events, a
//!   component can ask to be *woken* at a time ([`Engine::wake_at`]), the
//!   smoltcp `poll_at()` pattern: only the earliest pending wake-up counts,
//!   superseded ones are dropped when they come up.
//! - One seeded RNG belongs to the engine; every component draws from its own
//!   stream derived from the seed ([`Engine::rng_stream`]), so adding draws
//!   in one component never shifts the numbers another one sees.
//! - Every executed event is folded into a running [`Engine::trace_hash`]
//!   (time, component, kind and the event's key fields), so two runs can be
//!   compared with one number.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::time::{Duration, Instant};

/// The RNG type handed to components: ChaCha8, whose output is fixed by its
/// seed and stream on every platform and release.
pub type SimRng = ChaCha8Rng;

/// Names one component (a router, a link, an endpoint, an application...).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId(pub u32);

/// What the trace hash records of an event: a small kind code and up to two
/// key fields (a packet's endpoints and transaction, a channel index...).
pub trait Traced {
    /// A stable code for the event's kind.
    fn kind(&self) -> u16;
    /// Key fields that identify what the event is about.
    fn keys(&self) -> (u64, u64);
}

/// An event taken off the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired<E> {
    /// An event that was scheduled for `component`.
    Event(ComponentId, E),
    /// The component asked to be polled now (see [`Engine::wake_at`]).
    Wake(ComponentId),
}

#[derive(Debug)]
enum Payload<E> {
    Event(E),
    Wake,
}

#[derive(Debug)]
struct Entry<E> {
    time: Instant,
    seq: u64,
    component: ComponentId,
    payload: Payload<E>,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.time == other.time && self.seq == other.seq
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest (time, seq) is on top.
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// A running 64-bit hash of the event trace. Stable across platforms and
/// releases (it is defined here, not borrowed from `std`'s unspecified hasher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }
}

impl TraceHash {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    /// Folds one word in.
    #[inline]
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(23) ^ w).wrapping_mul(Self::K);
    }

    /// Folds one record (time, component, kind, keys) in.
    #[inline]
    pub fn record(&mut self, time: Instant, component: ComponentId, kind: u16, keys: (u64, u64)) {
        self.word(time.as_ps());
        self.word(((component.0 as u64) << 16) | kind as u64);
        self.word(keys.0);
        self.word(keys.1);
    }

    /// The current value, finalised so that close inputs give far-apart outputs.
    pub fn value(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Where models put events: the [`Engine`] itself, or an adapter that wraps
/// one model's events into a larger world's event type.
pub trait Scheduler<E> {
    /// The current virtual time.
    fn now(&self) -> Instant;
    /// Schedules `event` for `component` at `at` (clamped to now if earlier).
    fn schedule(&mut self, at: Instant, component: ComponentId, event: E);
    /// Folds a happening that is not a queued event (for example the packets
    /// of a transaction-level burst) into the trace hash.
    fn note(&mut self, component: ComponentId, kind: u16, keys: (u64, u64));
    /// Asks for `component` to be woken at `at` (see [`Engine::wake_at`]).
    fn wake_at(&mut self, component: ComponentId, at: Instant);
}

/// A scheduler for one model's events inside a larger world whose event type
/// `W` wraps them (`W: From<E>`): the fabric, the adapters and the hosts each
/// keep their own event enum, and the world that joins them passes
/// `Lift::new(&mut engine)` where a model expects a `Scheduler<ItsEvent>`.
pub struct Lift<'a, S, W> {
    inner: &'a mut S,
    _world: core::marker::PhantomData<fn(W)>,
}

impl<'a, S, W> Lift<'a, S, W> {
    /// Wraps the world's scheduler.
    pub fn new(inner: &'a mut S) -> Self {
        Lift {
            inner,
            _world: core::marker::PhantomData,
        }
    }
}

impl<E, W: From<E>, S: Scheduler<W>> Scheduler<E> for Lift<'_, S, W> {
    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn schedule(&mut self, at: Instant, component: ComponentId, event: E) {
        self.inner.schedule(at, component, W::from(event))
    }
    fn note(&mut self, component: ComponentId, kind: u16, keys: (u64, u64)) {
        self.inner.note(component, kind, keys)
    }
    fn wake_at(&mut self, component: ComponentId, at: Instant) {
        self.inner.wake_at(component, at)
    }
}

/// The discrete-event engine: a queue ordered by `(time, sequence)`, virtual
/// time, the seeded RNG and the trace hash.
#[derive(Debug)]
pub struct Engine<E> {
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Entry<E>>,
    trace: TraceHash,
    seed: u64,
    executed: u64,
    /// Earliest pending wake-up per component (indexed by `ComponentId.0`):
    /// its time and the sequence number of its queue entry. Any other wake-up
    /// entry of the component is stale, even one at the same time (a timer
    /// asked for again after an early wake-up superseded it).
    wakes: Vec<Option<(Instant, u64)>>,
    /// Queued wake-ups superseded by an earlier one (left in the heap and
    /// skipped when they come up). When they outnumber the live entries the
    /// heap is swept, so a component that is woken early again and again
    /// (and then asks for its far-off timer once more) cannot grow it.
    stale_wakes: usize,
}

/// Kind code recorded in the trace for wake-ups.
pub const WAKE_KIND: u16 = 0xFFFF;

impl<E: Traced> Engine<E> {
    /// A new engine at time zero, with the run's one seed.
    pub fn new(seed: u64) -> Self {
        Engine {
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::with_capacity(1024),
            trace: TraceHash::default(),
            seed,
            executed: 0,
            wakes: Vec::new(),
            stale_wakes: 0,
        }
    }

    /// The current virtual time: the time of the last event taken.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seed of the run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// An independent RNG stream for one component, derived from the run's
    /// seed. The same `(seed, stream)` always gives the same numbers.
    pub fn rng_stream(&self, stream: u64) -> SimRng {
        let mut rng = SimRng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }

    /// Schedules `event` for `component` at `at`. A time in the past is a
    /// model bug; in release builds it is clamped to now so time never runs
    /// backwards.
    pub fn schedule(&mut self, at: Instant, component: ComponentId, event: E) {
        debug_assert!(
            at >= self.now,
            "event scheduled in the past: {at} < {}",
            self.now
        );
        let time = at.max(self.now);
        self.push(time, component, Payload::Event(event));
    }

    /// Schedules `event` `after` from now.
    pub fn schedule_in(&mut self, after: Duration, component: ComponentId, event: E) {
        let at = self.now + after;
        self.push(at, component, Payload::Event(event));
    }

    /// Asks for `component` to be woken at `at` (the smoltcp `poll_at()`
    /// pattern). Only the earliest pending wake-up counts: asking again for
    /// a later time while an earlier one is pending does nothing, and an
    /// earlier request supersedes a later one.
    pub fn wake_at(&mut self, component: ComponentId, at: Instant) {
        let at = at.max(self.now);
        let idx = component.0 as usize;
        if self.wakes.len() <= idx {
            self.wakes.resize(idx + 1, None);
        }
        match self.wakes[idx] {
            Some((t, _)) if t <= at => {}
            previous => {
                if previous.is_some() {
                    self.stale_wakes += 1;
                    if self.stale_wakes > 128 && self.stale_wakes > self.queue.len() / 2 {
                        self.sweep_stale_wakes();
                    }
                }
                self.wakes[idx] = Some((at, self.seq));
                self.push(at, component, Payload::Wake);
            }
        }
    }

    /// Drops superseded wake-ups from the heap. Entries are ordered by
    /// `(time, sequence)` alone, so the order of what remains is unchanged.
    fn sweep_stale_wakes(&mut self) {
        let wakes = &self.wakes;
        self.queue.retain(|e| match e.payload {
            Payload::Event(_) => true,
            Payload::Wake => {
                wakes.get(e.component.0 as usize).copied().flatten() == Some((e.time, e.seq))
            }
        });
        self.stale_wakes = 0;
    }

    fn push(&mut self, time: Instant, component: ComponentId, payload: Payload<E>) {
        let seq = self.seq;
        self.seq += 1;
        self.queue.push(Entry {
            time,
            seq,
            component,
            payload,
        });
    }

    /// The time of the next queued entry, if any (may be a superseded wake-up).
    pub fn peek_time(&self) -> Option<Instant> {
        self.queue.peek().map(|e| e.time)
    }

    /// Number of queued entries.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Takes the next event, advances virtual time to it and folds it into
    /// the trace hash. `None` when the queue is empty.
    pub fn pop(&mut self) -> Option<(Instant, Fired<E>)> {
        self.pop_until(Instant::MAX)
    }

    /// Like [`Engine::pop`], but leaves events later than `limit` queued
    /// (and then advances time to `limit` if the queue has nothing earlier).
    pub fn pop_until(&mut self, limit: Instant) -> Option<(Instant, Fired<E>)> {
        loop {
            match self.queue.peek() {
                Some(e) if e.time <= limit => {}
                _ => {
                    if limit != Instant::MAX && limit > self.now {
                        self.now = limit;
                    }
                    return None;
                }
            }
            let entry = self.queue.pop()?;
            match entry.payload {
                Payload::Event(ev) => {
                    self.now = entry.time;
                    self.executed += 1;
                    self.trace
                        .record(entry.time, entry.component, ev.kind(), ev.keys());
                    return Some((entry.time, Fired::Event(entry.component, ev)));
                }
                Payload::Wake => {
                    let idx = entry.component.0 as usize;
                    if self.wakes.get(idx).copied().flatten() != Some((entry.time, entry.seq)) {
                        self.stale_wakes = self.stale_wakes.saturating_sub(1);
                        continue; // superseded
                    }
                    self.wakes[idx] = None;
                    self.now = entry.time;
                    self.executed += 1;
                    self.trace
                        .record(entry.time, entry.component, WAKE_KIND, (0, 0));
                    return Some((entry.time, Fired::Wake(entry.component)));
                }
            }
        }
    }

    /// Folds a happening that is not a queued event into the trace hash.
    pub fn note(&mut self, component: ComponentId, kind: u16, keys: (u64, u64)) {
        self.trace.record(self.now, component, kind, keys);
    }

    /// The trace hash of everything executed so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.value()
    }

    /// Number of events (and wake-ups) executed so far.
    pub fn events_executed(&self) -> u64 {
        self.executed
    }
}

impl<E: Traced> Scheduler<E> for Engine<E> {
    fn now(&self) -> Instant {
        self.now
    }
    fn schedule(&mut self, at: Instant, component: ComponentId, event: E) {
        Engine::schedule(self, at, component, event)
    }
    fn note(&mut self, component: ComponentId, kind: u16, keys: (u64, u64)) {
        Engine::note(self, component, kind, keys)
    }
    fn wake_at(&mut self, component: ComponentId, at: Instant) {
        Engine::wake_at(self, component, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Ev(u64);
    impl Traced for Ev {
        fn kind(&self) -> u16 {
            1
        }
        fn keys(&self) -> (u64, u64) {
            (self.0, 0)
        }
    }

    #[test]
    fn ties_run_in_schedule_order() {
        let mut e = Engine::new(1);
        let t = Instant::from_ns(10);
        for i in 0..100 {
            e.schedule(t, ComponentId(0), Ev(i));
        }
        e.schedule(Instant::from_ns(5), ComponentId(0), Ev(999));
        let (t0, f0) = e.pop().unwrap();
        assert_eq!(t0, Instant::from_ns(5));
        assert_eq!(f0, Fired::Event(ComponentId(0), Ev(999)));
        for i in 0..100 {
            assert_eq!(e.pop().unwrap().1, Fired::Event(ComponentId(0), Ev(i)));
        }
        assert!(e.pop().is_none());
        assert_eq!(e.now(), t);
    }

    #[test]
    fn wakeups_keep_only_the_earliest() {
        let mut e: Engine<Ev> = Engine::new(1);
        e.wake_at(ComponentId(3), Instant::from_ns(50));
        e.wake_at(ComponentId(3), Instant::from_ns(20));
        e.wake_at(ComponentId(3), Instant::from_ns(70)); // later than pending: ignored
        assert_eq!(
            e.pop(),
            Some((Instant::from_ns(20), Fired::Wake(ComponentId(3))))
        );
        // The 50 ns entry was superseded and is skipped.
        assert_eq!(e.pop(), None);
        e.wake_at(ComponentId(3), Instant::from_ns(40));
        assert_eq!(
            e.pop(),
            Some((Instant::from_ns(40), Fired::Wake(ComponentId(3))))
        );
    }

    #[test]
    fn a_component_woken_early_again_and_again_does_not_grow_the_queue() {
        // The smoltcp pattern: a far-off timer (3 s), and an early wake-up
        // at every event; each early one supersedes the pending timer.
        let mut e: Engine<Ev> = Engine::new(1);
        let c = ComponentId(7);
        let mut woken = Vec::new();
        for i in 0..20_000u64 {
            e.schedule(e.now() + Duration::from_ns(10), ComponentId(1), Ev(i));
            e.wake_at(c, e.now() + Duration::from_ms(3_000));
            e.wake_at(c, e.now() + Duration::from_ns(5));
            while let Some((at, f)) = e.pop_until(e.now() + Duration::from_ns(10)) {
                if f == Fired::Wake(c) {
                    woken.push(at);
                }
            }
            assert!(e.pending() < 300, "{} entries queued", e.pending());
        }
        assert_eq!(woken.len(), 20_000, "every early wake-up fired once");
        assert!(woken.windows(2).all(|w| w[0] < w[1]));
        // The far-off timer asked for last still fires.
        e.wake_at(c, e.now() + Duration::from_ms(3_000));
        let last = e.now() + Duration::from_ms(3_000);
        assert_eq!(e.pop(), Some((last, Fired::Wake(c))));
        assert_eq!(e.pop(), None);
    }

    #[test]
    fn a_timer_asked_for_again_after_an_early_wake_up_stays_one_entry() {
        // The same absolute timer (a TCP timeout at 3 s) asked for again
        // after every early wake-up: the superseded copies at the very same
        // time are stale too, are swept, and the timer fires once.
        let mut e: Engine<Ev> = Engine::new(1);
        let c = ComponentId(7);
        let far = Instant::from_ns(3_000_000_000);
        for i in 0..20_000u64 {
            e.schedule(e.now() + Duration::from_ns(10), ComponentId(1), Ev(i));
            e.wake_at(c, far);
            e.wake_at(c, e.now() + Duration::from_ns(5));
            while e.pop_until(e.now() + Duration::from_ns(10)).is_some() {}
            assert!(e.pending() < 300, "{} entries queued", e.pending());
        }
        e.wake_at(c, far);
        let fired: Vec<_> = std::iter::from_fn(|| e.pop()).collect();
        assert_eq!(fired, vec![(far, Fired::Wake(c))]);
    }

    #[test]
    fn pop_until_advances_time_to_the_limit() {
        let mut e = Engine::new(1);
        e.schedule(Instant::from_ns(100), ComponentId(0), Ev(1));
        assert!(e.pop_until(Instant::from_ns(60)).is_none());
        assert_eq!(e.now(), Instant::from_ns(60));
        assert!(e.pop_until(Instant::from_ns(100)).is_some());
    }

    fn run(seed: u64, n: u64) -> u64 {
        let mut e = Engine::new(seed);
        let mut rng = e.rng_stream(7);
        for i in 0..16 {
            e.schedule(
                Instant::from_ns(rng.next_u64() % 1000),
                ComponentId(i),
                Ev(i as u64),
            );
        }
        let mut count = 0;
        while let Some((_, Fired::Event(c, Ev(k)))) = e.pop() {
            count += 1;
            if count >= n {
                break;
            }
            e.schedule_in(Duration::from_ns(rng.next_u64() % 1000), c, Ev(k + 1));
        }
        e.trace_hash()
    }

    #[test]
    fn trace_hash_is_reproducible_and_seed_sensitive() {
        assert_eq!(run(42, 10_000), run(42, 10_000));
        assert_ne!(run(42, 10_000), run(43, 10_000));
        assert_ne!(run(42, 10_000), run(42, 9_999));
    }

    #[test]
    fn rng_streams_are_independent_and_stable() {
        let e: Engine<Ev> = Engine::new(5);
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = e.rng_stream(1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = e.rng_stream(1);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut r = e.rng_stream(2);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
