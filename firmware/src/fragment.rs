//! First-fragment decisions, so later fragments (which carry no ports) reach
//! the same processor as the first. Bounded: when full, nothing new is
//! recorded and later fragments go to the master, which reassembles.

use std::collections::{HashMap, VecDeque};

use core::time::Duration;

use crate::time::Instant;
use crate::tuple::Addr16;
use crate::verdict::{ProcessorId, QueueId};
use crate::wire::IpInfo;

/// What identifies the fragments of one packet (RFC 791 / RFC 8200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragmentKey {
    /// Source address.
    pub src: Addr16,
    /// Destination address.
    pub dst: Addr16,
    /// The protocol that identifies the packet ([`crate::wire::Fragment::next_header`]).
    pub protocol: u8,
    /// Identification.
    pub ident: u32,
}

impl FragmentKey {
    /// The key of a fragment, or `None` if `ip` is not a fragment. Built from
    /// the fields every fragment of a packet shares: for IPv6 the protocol is
    /// the Fragment header's next header, not the upper-layer protocol a first
    /// fragment reveals past further extension headers, so first and later
    /// fragments get the same key.
    pub fn of(ip: &IpInfo) -> Option<FragmentKey> {
        let f = ip.fragment?;
        Some(FragmentKey {
            src: ip.src,
            dst: ip.dst,
            protocol: f.next_header,
            ident: f.ident,
        })
    }
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
    /// A key already recorded (a replayed first fragment) gets the new
    /// destination but keeps its deadline and its one place in the expiry
    /// queue, so the tracker never holds more than `capacity` of either.
    pub fn record(&mut self, key: FragmentKey, p: ProcessorId, q: QueueId, now: Instant) -> bool {
        if let Some(d) = self.decisions.get_mut(&key) {
            d.0 = p;
            d.1 = q;
            return true;
        }
        if self.decisions.len() >= self.capacity {
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

    #[test]
    fn replays_do_not_grow_the_expiry_queue() {
        let mut t = FragmentTracker::new(4, Duration::from_millis(10));
        let k = |i| FragmentKey {
            src: [1; 16],
            dst: [2; 16],
            protocol: 17,
            ident: i,
        };
        for n in 0..100_000u64 {
            let now = Instant::from_millis(n / 1000);
            let p = ProcessorId((n % 3) as u16);
            assert!(t.record(k((n % 4) as u32), p, QueueId(0), now));
            assert!(t.len() <= 4);
            assert!(t.expiry.len() <= 4, "{} expiry entries", t.expiry.len());
            t.expire(now);
        }
        // A replay takes the new destination and keeps the first deadline.
        let mut t = FragmentTracker::new(4, Duration::from_millis(10));
        assert!(t.record(k(1), ProcessorId(1), QueueId(0), Instant::ZERO));
        assert!(t.record(k(1), ProcessorId(2), QueueId(1), Instant::from_millis(5)));
        assert_eq!(t.lookup(&k(1)), Some((ProcessorId(2), QueueId(1))));
        assert_eq!(t.next_deadline(), Some(Instant::from_millis(10)));
        t.expire(Instant::from_millis(10));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }
}
