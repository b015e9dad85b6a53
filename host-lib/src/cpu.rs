//! The CPU cost model of an emulated processor.
//!
//! Each processor is one CPU that does one thing at a time. Every piece of
//! work the host side does costs virtual time, from a table of configurable
//! costs ([`CpuCosts`]); the CPU accounts its busy time, and work that
//! arrives while it is busy waits until it is free (the host model defers
//! the processor's next poll to [`Cpu::free_at`]). Reports then show busy
//! time per processor and, divided by transactions, CPU per transaction.
//!
//! What is charged:
//! - every frame the processor's TCP/IP instance receives or sends
//!   (`per_segment`);
//! - every byte moved between an application and a socket or a message
//!   (`per_byte`);
//! - every inter-processor message sent or received (`per_message`);
//! - every socket call that does something (`per_socket_call`; a call
//!   that would block costs nothing — the application would have waited
//!   for readiness instead);
//! - application work, in units the application declares
//!   (`per_work_unit`).
//!
//! The model is a single FIFO server per processor: no preemption, no
//! priorities, no caches. The defaults are round figures for a modern
//! server core running a user-space TCP/IP, not measurements of any
//! machine; a scenario sets its own.

use snet_fabric::time::{Duration, Instant};

/// Costs of host-side work, in virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuCosts {
    /// One frame through the TCP/IP instance (either way).
    pub per_segment: Duration,
    /// One byte between an application and a socket or message, in
    /// picoseconds.
    pub per_byte_ps: u64,
    /// One inter-processor message sent or received.
    pub per_message: Duration,
    /// One socket call.
    pub per_socket_call: Duration,
    /// One unit of application work.
    pub per_work_unit: Duration,
}

impl Default for CpuCosts {
    fn default() -> Self {
        CpuCosts {
            per_segment: Duration::from_ns(1_500),
            per_byte_ps: 250,
            per_message: Duration::from_ns(4_000),
            per_socket_call: Duration::from_ns(500),
            per_work_unit: Duration::from_ns(1_000),
        }
    }
}

impl CpuCosts {
    /// No cost at all (work takes no virtual time).
    pub fn free() -> Self {
        CpuCosts {
            per_segment: Duration::ZERO,
            per_byte_ps: 0,
            per_message: Duration::ZERO,
            per_socket_call: Duration::ZERO,
            per_work_unit: Duration::ZERO,
        }
    }
}

/// What a CPU did, by kind of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Frames through the TCP/IP instance.
    pub segments: u64,
    /// Bytes moved by applications.
    pub bytes: u64,
    /// Inter-processor messages sent or received.
    pub messages: u64,
    /// Socket calls.
    pub socket_calls: u64,
    /// Application work units.
    pub work_units: u64,
}

fn times(d: Duration, n: u64) -> Duration {
    Duration::from_ps(d.as_ps().saturating_mul(n))
}

/// One processor's CPU.
#[derive(Debug, Clone)]
pub struct Cpu {
    costs: CpuCosts,
    busy_until: Instant,
    busy: Duration,
    counters: CpuCounters,
}

impl Cpu {
    /// An idle CPU with these costs.
    pub fn new(costs: CpuCosts) -> Self {
        Cpu {
            costs,
            busy_until: Instant::ZERO,
            busy: Duration::ZERO,
            counters: CpuCounters::default(),
        }
    }

    /// The cost table.
    pub fn costs(&self) -> &CpuCosts {
        &self.costs
    }

    /// Adds `d` of work at `now`: it starts when the CPU is free.
    pub fn charge(&mut self, now: Instant, d: Duration) {
        if d == Duration::ZERO {
            return;
        }
        let start = self.busy_until.max(now);
        self.busy_until = start + d;
        self.busy += d;
    }

    /// Charges frames through the TCP/IP instance.
    pub fn segments(&mut self, now: Instant, n: u64) {
        self.counters.segments += n;
        self.charge(now, times(self.costs.per_segment, n));
    }

    /// Charges bytes moved by an application.
    pub fn bytes(&mut self, now: Instant, n: u64) {
        self.counters.bytes += n;
        self.charge(
            now,
            Duration::from_ps(n.saturating_mul(self.costs.per_byte_ps)),
        );
    }

    /// Charges inter-processor messages.
    pub fn messages(&mut self, now: Instant, n: u64) {
        self.counters.messages += n;
        self.charge(now, times(self.costs.per_message, n));
    }

    /// Charges socket calls.
    pub fn socket_calls(&mut self, now: Instant, n: u64) {
        self.counters.socket_calls += n;
        self.charge(now, times(self.costs.per_socket_call, n));
    }

    /// Charges application work.
    pub fn work(&mut self, now: Instant, units: u64) {
        self.counters.work_units += units;
        self.charge(now, times(self.costs.per_work_unit, units));
    }

    /// When the CPU is next free, if it is busy at `now`.
    pub fn free_at(&self, now: Instant) -> Option<Instant> {
        (self.busy_until > now).then_some(self.busy_until)
    }

    /// Total busy time so far.
    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// The counters.
    pub fn counters(&self) -> &CpuCounters {
        &self.counters
    }

    /// Busy time as a fraction of `elapsed`.
    pub fn utilisation(&self, elapsed: Duration) -> f64 {
        if elapsed == Duration::ZERO {
            0.0
        } else {
            self.busy.as_ps() as f64 / elapsed.as_ps() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_queues_behind_a_busy_cpu() {
        let mut cpu = Cpu::new(CpuCosts::default());
        let t0 = Instant::from_ns(1000);
        cpu.segments(t0, 2);
        assert_eq!(cpu.free_at(t0), Some(t0 + Duration::from_ns(3000)));
        // Arrives while busy: starts when the first finishes.
        cpu.work(t0 + Duration::from_ns(100), 1);
        assert_eq!(cpu.free_at(t0), Some(t0 + Duration::from_ns(4000)));
        assert_eq!(cpu.busy(), Duration::from_ns(4000));
        // Arrives after an idle gap: busy time excludes the gap.
        let later = t0 + Duration::from_ms(1);
        cpu.bytes(later, 4000);
        assert_eq!(cpu.busy(), Duration::from_ns(5000));
        assert_eq!(cpu.free_at(later + Duration::from_ns(1000)), None);
        assert_eq!(cpu.counters().segments, 2);
        let u = cpu.utilisation(Duration::from_ms(2));
        assert!((u - 0.0025).abs() < 1e-9, "{u}");
    }

    #[test]
    fn free_costs_take_no_time() {
        let mut cpu = Cpu::new(CpuCosts::free());
        cpu.segments(Instant::ZERO, 100);
        cpu.messages(Instant::ZERO, 100);
        assert_eq!(cpu.free_at(Instant::ZERO), None);
        assert_eq!(cpu.busy(), Duration::ZERO);
    }
}
