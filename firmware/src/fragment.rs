//! First-fragment decisions, so later fragments (which carry no ports) reach
//! the same processor as the first. Bounded: when full, nothing new is
//! recorded and later fragments go to the master, which reassembles.

use std::collections::{HashMap, VecDeque};

use core::time::Duration;

use crate::time::Instant;
use crate::tuple::Addr16;
use crate::verdict::{ProcessorId, QueueId};

/// What identifies the fragments of one packet (RFC 791 / RFC 8200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragmentKey {
    /// Source address.
    pub src: Addr16,
    /// Destination address.
    pub dst: Addr16,
    /// Upper-layer protocol.
    pub protocol: u8,
    /// Identification.
    pub ident: u32,
}

/// Recorded first-fragment decisions with their expiry.
#[derive(Debug, Clone)]
pub struct FragmentTracker {
    decisions: HashMap<FragmentKey, (ProcessorId, QueueId, Instant)>,
    expiry: VecDeque<(Instant, FragmentKey)>,
    capacity: usize,
    timeout: Duration,
}

impl FragmentTracker {
    /// A tracker for at most `capacity` packets, each remembered for `timeout`.
    pub fn new(capacity: usize, timeout: Duration) -> Self {
        FragmentTracker {
            decisions: HashMap::new(),
            expiry: VecDeque::new(),
            capacity,
            timeout,
        }
    }

    /// Records the destination of the packet `key`. Returns false when full.
    pub fn record(&mut self, key: FragmentKey, p: ProcessorId, q: QueueId, now: Instant) -> bool {
        if !self.decisions.contains_key(&key) && self.decisions.len() >= self.capacity {
            return false;
        }
        let deadline = now.saturating_add(self.timeout);
        self.decisions.insert(key, (p, q, deadline));
        self.expiry.push_back((deadline, key));
        true
    }

    /// The recorded destination of `key`.
    pub fn lookup(&self, key: &FragmentKey) -> Option<(ProcessorId, QueueId)> {
        self.decisions.get(key).map(|(p, q, _)| (*p, *q))
    }

    /// Forgets decisions whose time is up.
    pub fn expire(&mut self, now: Instant) {
        while let Some((deadline, key)) = self.expiry.front().copied() {
            if deadline > now {
                break;
            }
            self.expiry.pop_front();
            if self.decisions.get(&key).is_some_and(|d| d.2 == deadline) {
                self.decisions.remove(&key);
            }
        }
    }

    /// The next deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiry.front().map(|e| e.0)
    }

    /// Decisions held.
    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let mut t = FragmentTracker::new(2, Duration::from_millis(10));
        let k = |i| FragmentKey {
            src: [1; 16],
            dst: [2; 16],
            protocol: 17,
            ident: i,
        };
        assert!(t.record(k(1), ProcessorId(1), QueueId(0), Instant::ZERO));
        assert!(t.record(k(2), ProcessorId(2), QueueId(0), Instant::from_millis(5)));
        assert!(!t.record(k(3), ProcessorId(3), QueueId(0), Instant::from_millis(5)));
        assert_eq!(t.lookup(&k(2)), Some((ProcessorId(2), QueueId(0))));
        t.expire(Instant::from_millis(10));
        assert_eq!(t.lookup(&k(1)), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_deadline(), Some(Instant::from_millis(15)));
    }
}
