//! Listener groups: who listens on (address or any, port, protocol), and the
//! distribution policies that pick one member for each new connection.
//!
//! Rules (NonStop TCP/IPv6 manual, round-robin filtering):
//! - a port outside every shared range is exclusive: the first registrant owns
//!   it and a second registration is refused ([`RejectReason::PortOwnedExclusively`]);
//! - in a shared range, listeners in several processors share the port, one per
//!   processor ([`RejectReason::AlreadyListening`] for a second from the same one);
//! - members are kept in registration order; round robin takes them in strict
//!   turn. A member that leaves is skipped without disturbing the turn of the
//!   others; a member that joins takes its turn after the current last one.
//! - a specific-address group and an any-address group for the same port are
//!   distinct; lookups try the specific one first.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, Policy};
use crate::control::RejectReason;
use crate::tuple::{Addr16, FiveTuple};
use crate::verdict::ProcessorId;

/// The key of a listener group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    /// IP protocol (TCP or UDP).
    pub protocol: u8,
    /// The local address listened on; `None` for any address.
    pub addr: Option<Addr16>,
    /// The local port.
    pub port: u16,
}

/// The processors listening on one key, and the state of their policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerGroup {
    key: ListenerKey,
    shared: bool,
    policy: Policy,
    members: Vec<ProcessorId>,
    cursor: usize,
    current: Vec<i64>,
    maglev: Vec<u16>,
}

impl ListenerGroup {
    fn new(key: ListenerKey, shared: bool, policy: Policy) -> Self {
        ListenerGroup {
            key,
            shared,
            policy,
            members: Vec::new(),
            cursor: 0,
            current: Vec::new(),
            maglev: Vec::new(),
        }
    }

    /// The group's key.
    pub fn key(&self) -> ListenerKey {
        self.key
    }

    /// Members in registration (turn) order.
    pub fn members(&self) -> &[ProcessorId] {
        &self.members
    }

    /// Whether round-robin filtering is enabled for the port.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The distribution policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn membership_changed(&mut self, maglev_size: usize) {
        self.current = vec![0; self.members.len()];
        self.maglev = if self.policy == Policy::Maglev {
            maglev_table(&self.members, maglev_size)
        } else {
            Vec::new()
        };
    }

    /// Picks the member for a new connection or datagram. `capacity` gives
    /// each processor's last capacity report (indexed by processor ID).
    pub fn pick(
        &mut self,
        tuple: &FiveTuple,
        capacity: &[Option<u32>],
        seed: u64,
    ) -> Option<ProcessorId> {
        if self.members.is_empty() {
            return None;
        }
        let n = self.members.len();
        match self.policy {
            Policy::CapacityWeighted => {
                let weight = |p: ProcessorId| {
                    i64::from(
                        capacity
                            .get(usize::from(p.0))
                            .copied()
                            .flatten()
                            .unwrap_or(1),
                    )
                };
                let total: i64 = self.members.iter().map(|p| weight(*p)).sum();
                if total > 0 {
                    let mut best = 0usize;
                    for i in 0..n {
                        self.current[i] += weight(self.members[i]);
                        if self.current[i] > self.current[best] {
                            best = i;
                        }
                    }
                    self.current[best] -= total;
                    return Some(self.members[best]);
                }
                // Every member reported zero capacity: fall back to turn order.
                self.next_in_turn()
            }
            Policy::Maglev if !self.maglev.is_empty() => {
                // Hash the client side only, so it is stable across the table.
                let key = FiveTuple {
                    local_port: 0,
                    local_addr: [0; 16],
                    ..*tuple
                };
                let h = key.hash_with(seed ^ 0x6d61_676c_6576_0000);
                let slot = (h % self.maglev.len() as u64) as usize;
                self.members.get(usize::from(self.maglev[slot])).copied()
            }
            _ => self.next_in_turn(),
        }
    }

    fn next_in_turn(&mut self) -> Option<ProcessorId> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let i = self.cursor % n;
        self.cursor = (i + 1) % n;
        Some(self.members[i])
    }

    fn remove_member(&mut self, p: ProcessorId, maglev_size: usize) -> bool {
        let Some(i) = self.members.iter().position(|m| *m == p) else {
            return false;
        };
        self.members.remove(i);
        if i < self.cursor {
            self.cursor -= 1;
        }
        if self.cursor >= self.members.len() {
            self.cursor = 0;
        }
        self.membership_changed(maglev_size);
        true
    }
}

/// The Maglev lookup table (Eisenbud et al., NSDI 2016) for `members`: each
/// member fills slots along its own permutation of `0..size` in turn.
fn maglev_table(members: &[ProcessorId], size: usize) -> Vec<u16> {
    #[cfg(test)]
    tests::MAGLEV_BUILDS.with(|n| n.set(n.get() + 1));
    if members.is_empty() || size == 0 {
        return Vec::new();
    }
    let perm: Vec<(usize, usize)> = members
        .iter()
        .map(|p| {
            let t = FiveTuple {
                protocol: 0,
                remote_addr: [0; 16],
                remote_port: p.0,
                local_addr: [0; 16],
                local_port: 0,
            };
            let offset = (t.hash_with(0x6f66_6673_6574) % size as u64) as usize;
            let skip = (t.hash_with(0x736b_6970) % (size as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; members.len()];
    let mut table = vec![u16::MAX; size];
    let mut filled = 0;
    'fill: loop {
        for (i, (offset, skip)) in perm.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % size;
            while table[c] != u16::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % size;
            }
            table[c] = i as u16;
            next[i] += 1;
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    table
}

/// All listener groups of an adapter, ordered by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerTable {
    groups: BTreeMap<ListenerKey, ListenerGroup>,
}

impl ListenerTable {
    /// Registers `processor` as a listener on `key`.
    pub fn register(
        &mut self,
        key: ListenerKey,
        processor: ProcessorId,
        config: &Config,
    ) -> Result<(), RejectReason> {
        let shared = config.shared_range(key.protocol, key.port);
        if !self.groups.contains_key(&key) && self.groups.len() >= config.max_listener_groups {
            return Err(RejectReason::TooManyListenerGroups);
        }
        let group = self.groups.entry(key).or_insert_with(|| {
            ListenerGroup::new(
                key,
                shared.is_some(),
                shared.map(|r| r.policy).unwrap_or_default(),
            )
        });
        if group.members.contains(&processor) {
            return Err(RejectReason::AlreadyListening);
        }
        if !group.shared && !group.members.is_empty() {
            return Err(RejectReason::PortOwnedExclusively);
        }
        group.members.push(processor);
        group.membership_changed(config.maglev_table_size);
        Ok(())
    }

    /// Removes `processor` from the group of `key`.
    pub fn unregister(
        &mut self,
        key: ListenerKey,
        processor: ProcessorId,
        config: &Config,
    ) -> Result<(), RejectReason> {
        let group = self
            .groups
            .get_mut(&key)
            .ok_or(RejectReason::NoSuchListener)?;
        if !group.remove_member(processor, config.maglev_table_size) {
            return Err(RejectReason::NoSuchListener);
        }
        if group.members.is_empty() {
            self.groups.remove(&key);
        }
        Ok(())
    }

    /// Removes `processor` from every group (it failed). Returns how many
    /// listeners were purged.
    pub fn purge(&mut self, processor: ProcessorId, config: &Config) -> usize {
        let mut purged = 0;
        for g in self.groups.values_mut() {
            purged += usize::from(g.remove_member(processor, config.maglev_table_size));
        }
        self.groups.retain(|_, g| !g.members.is_empty());
        purged
    }

    /// The group for a frame to `addr`:`port`: the specific-address group if
    /// there is one, else the any-address group.
    pub fn lookup_mut(
        &mut self,
        protocol: u8,
        addr: &Addr16,
        port: u16,
    ) -> Option<&mut ListenerGroup> {
        #[cfg(test)]
        tests::LOOKUPS.with(|n| n.set(n.get() + 1));
        let specific = ListenerKey {
            protocol,
            addr: Some(*addr),
            port,
        };
        if self.groups.contains_key(&specific) {
            return self.groups.get_mut(&specific);
        }
        self.groups.get_mut(&ListenerKey {
            protocol,
            addr: None,
            port,
        })
    }

    /// The group of exactly `key`.
    pub fn get(&self, key: &ListenerKey) -> Option<&ListenerGroup> {
        self.groups.get(key)
    }

    /// Groups in key order.
    pub fn groups(&self) -> impl Iterator<Item = &ListenerGroup> {
        self.groups.values()
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Removes every group.
    pub fn clear(&mut self) {
        self.groups.clear();
    }

    /// Re-creates a group from a dump (members in turn order, policy from the
    /// configuration). Registration rules are checked as for registrations.
    pub(crate) fn restore_group(
        &mut self,
        key: ListenerKey,
        members: &[ProcessorId],
        config: &Config,
    ) -> Result<(), RejectReason> {
        // The same checks, in the same order, as registering the members one
        // by one; but the members are all added before the policy's state
        // (the Maglev table) is rebuilt, once.
        if members.is_empty() {
            return Ok(());
        }
        let shared = config.shared_range(key.protocol, key.port);
        let existing = self.groups.get(&key);
        if existing.is_none() && self.groups.len() >= config.max_listener_groups {
            return Err(RejectReason::TooManyListenerGroups);
        }
        let is_shared = existing.map_or(shared.is_some(), |g| g.shared);
        let mut seen: BTreeSet<ProcessorId> = existing
            .map(|g| g.members.iter().copied().collect())
            .unwrap_or_default();
        for m in members {
            if !seen.insert(*m) {
                return Err(RejectReason::AlreadyListening);
            }
            if !is_shared && seen.len() > 1 {
                return Err(RejectReason::PortOwnedExclusively);
            }
        }
        let group = self.groups.entry(key).or_insert_with(|| {
            ListenerGroup::new(
                key,
                shared.is_some(),
                shared.map(|r| r.policy).unwrap_or_default(),
            )
        });
        group.members.extend_from_slice(members);
        group.membership_changed(config.maglev_table_size);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tuple::{PROTO_TCP, v4_mapped};

    thread_local! {
        /// Maglev tables built by this thread.
        pub(super) static MAGLEV_BUILDS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Listener-group lookups made by this thread.
        pub(crate) static LOOKUPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn key(port: u16) -> ListenerKey {
        ListenerKey {
            protocol: PROTO_TCP,
            addr: None,
            port,
        }
    }

    fn tuple(n: u16) -> FiveTuple {
        FiveTuple {
            protocol: PROTO_TCP,
            remote_addr: v4_mapped([198, 18, 5, (n % 250) as u8]),
            remote_port: 10_000 + n,
            local_addr: v4_mapped([198, 18, 0, 10]),
            local_port: 23,
        }
    }

    #[test]
    fn leaving_member_keeps_the_turn_of_the_others() {
        let cfg = Config::default().share_ports(PROTO_TCP, 23, 23, Policy::RoundRobin);
        let mut t = ListenerTable::default();
        for p in [1, 2, 3] {
            t.register(key(23), ProcessorId(p), &cfg).unwrap();
        }
        let g = t
            .lookup_mut(PROTO_TCP, &v4_mapped([198, 18, 0, 10]), 23)
            .unwrap();
        assert_eq!(g.pick(&tuple(0), &[], 0), Some(ProcessorId(1)));
        assert_eq!(g.pick(&tuple(1), &[], 0), Some(ProcessorId(2)));
        // P3's turn is next; P1 leaving must not change that.
        t.unregister(key(23), ProcessorId(1), &cfg).unwrap();
        let g = t
            .lookup_mut(PROTO_TCP, &v4_mapped([198, 18, 0, 10]), 23)
            .unwrap();
        assert_eq!(g.pick(&tuple(2), &[], 0), Some(ProcessorId(3)));
        assert_eq!(g.pick(&tuple(3), &[], 0), Some(ProcessorId(2)));
    }

    #[test]
    fn capacity_weighted_follows_reports() {
        let cfg = Config::default().share_ports(PROTO_TCP, 23, 23, Policy::CapacityWeighted);
        let mut t = ListenerTable::default();
        for p in [0, 1, 2] {
            t.register(key(23), ProcessorId(p), &cfg).unwrap();
        }
        let caps = [Some(3), Some(1), Some(0)];
        let g = t.lookup_mut(PROTO_TCP, &[0; 16], 23).unwrap();
        let mut counts = [0; 3];
        for n in 0..400 {
            counts[usize::from(g.pick(&tuple(n), &caps, 0).unwrap().0)] += 1;
        }
        assert_eq!(counts, [300, 100, 0]);
    }

    #[test]
    fn maglev_is_stable_and_moves_few_on_change() {
        let cfg = Config::default().share_ports(PROTO_TCP, 23, 23, Policy::Maglev);
        let mut t = ListenerTable::default();
        for p in 0..5 {
            t.register(key(23), ProcessorId(p), &cfg).unwrap();
        }
        let pick_all = |t: &mut ListenerTable| -> Vec<ProcessorId> {
            let g = t.lookup_mut(PROTO_TCP, &[0; 16], 23).unwrap();
            (0..1000)
                .map(|n| g.pick(&tuple(n), &[], 9).unwrap())
                .collect()
        };
        let a = pick_all(&mut t);
        assert_eq!(a, pick_all(&mut t), "same tuples, same members");
        let mut counts = [0; 5];
        for p in &a {
            counts[usize::from(p.0)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 120), "spread: {counts:?}");
        t.unregister(key(23), ProcessorId(4), &cfg).unwrap();
        let b = pick_all(&mut t);
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y && x.0 != 4).count();
        assert!(
            moved < 150,
            "only P4's tuples should move much, moved {moved}"
        );
        assert!(b.iter().all(|p| p.0 != 4));
    }

    #[test]
    fn maglev_table_is_full_and_balanced() {
        let members: Vec<_> = (0..3).map(ProcessorId).collect();
        let t = maglev_table(&members, 1021);
        assert!(t.iter().all(|i| *i < 3));
        let mut c = [0; 3];
        for i in &t {
            c[usize::from(*i)] += 1;
        }
        assert!(c.iter().all(|n| (330..=350).contains(n)), "{c:?}");
    }

    #[test]
    fn restore_group_equals_registering_one_by_one_and_builds_maglev_once() {
        let cfg = Config {
            processor_count: 64,
            ..Config::default()
        }
        .share_ports(PROTO_TCP, 23, 23, Policy::Maglev)
        .share_ports(PROTO_TCP, 24, 24, Policy::RoundRobin);
        let members: Vec<_> = [7u16, 3, 40, 0, 12, 63, 5, 9, 33, 21]
            .into_iter()
            .map(ProcessorId)
            .collect();
        for port in [23, 24, 80] {
            let ms = if port == 80 {
                &members[..1]
            } else {
                &members[..]
            };
            let mut one_by_one = ListenerTable::default();
            let before = MAGLEV_BUILDS.with(|n| n.get());
            for m in ms {
                one_by_one.register(key(port), *m, &cfg).unwrap();
            }
            let by_register = MAGLEV_BUILDS.with(|n| n.get()) - before;
            let mut restored = ListenerTable::default();
            let before = MAGLEV_BUILDS.with(|n| n.get());
            restored.restore_group(key(port), ms, &cfg).unwrap();
            let by_restore = MAGLEV_BUILDS.with(|n| n.get()) - before;
            assert_eq!(restored, one_by_one, "port {port}");
            if port == 23 {
                assert_eq!(by_register, ms.len());
                assert_eq!(by_restore, 1, "the Maglev table is built once");
            }
            let picks = |t: &mut ListenerTable| -> Vec<_> {
                let g = t.lookup_mut(PROTO_TCP, &[0; 16], port).unwrap();
                (0..200).map(|n| g.pick(&tuple(n), &[], 9)).collect()
            };
            assert_eq!(picks(&mut restored), picks(&mut one_by_one));
        }
        // The same refusals as registering one by one.
        let refuse = |port: u16, ms: &[u16]| {
            let ms: Vec<_> = ms.iter().copied().map(ProcessorId).collect();
            let mut a = ListenerTable::default();
            let one = ms.iter().try_for_each(|m| a.register(key(port), *m, &cfg));
            let mut b = ListenerTable::default();
            (one, b.restore_group(key(port), &ms, &cfg))
        };
        for (port, ms, reason) in [
            (23, &[1u16, 2, 1][..], RejectReason::AlreadyListening),
            (80, &[1, 2][..], RejectReason::PortOwnedExclusively),
            (80, &[1, 1][..], RejectReason::AlreadyListening),
        ] {
            assert_eq!(refuse(port, ms), (Err(reason), Err(reason)));
        }
        let small = Config {
            max_listener_groups: 1,
            ..cfg.clone()
        };
        let mut t = ListenerTable::default();
        t.restore_group(key(23), &members, &small).unwrap();
        assert_eq!(
            t.restore_group(key(24), &members, &small),
            Err(RejectReason::TooManyListenerGroups)
        );
        assert_eq!(t.restore_group(key(25), &[], &small), Ok(()));
        assert_eq!(t.len(), 1);
    }
}
