//! The table dump: the whole replicated state of an adapter, in a canonical
//! order, so that two adapters with the same state produce the same bytes.
//!
//! Body layout after the [`WireDumpHeader`]: a live bitmap (one bit per
//! processor, LSB first, `ceil(count / 8)` bytes); one big-endian `u32`
//! capacity per processor (`0xffff_ffff` = never reported); the listener
//! records, sorted by key, each a [`WireListener`], a `u16` member count and
//! the members in turn order; the connection records, sorted by tuple, each a
//! [`WireConnection`]. Provisional entries are local guesses of one adapter
//! and are not part of the dump; neither are round-robin cursors.

use zerocopy::byteorder::network_endian::{U16, U32};
use zerocopy::{FromBytes, IntoBytes};

use super::{ControlParseError, WireConnection, WireDumpHeader, WireListener, WireTuple};
use crate::conntable::EntryState;
use crate::listener::ListenerKey;
use crate::tuple::FiveTuple;
use crate::verdict::ProcessorId;

/// The replicated state of an adapter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSnapshot {
    /// The master processor.
    pub master: Option<ProcessorId>,
    /// Liveness of each processor (the length is the processor count).
    pub live: Vec<bool>,
    /// Last capacity report of each processor.
    pub capacity: Vec<Option<u32>>,
    /// Listener groups, sorted by key, members in turn order.
    pub listeners: Vec<(ListenerKey, Vec<ProcessorId>)>,
    /// Established and orphaned connections, sorted by tuple.
    pub connections: Vec<(FiveTuple, ProcessorId, EntryState)>,
}

const NO_CAPACITY: u32 = u32::MAX;
/// Smallest listener record: the [`WireListener`], the member count and one member.
const MIN_LISTENER_RECORD: usize = core::mem::size_of::<WireListener>() + 2 + 2;
/// Most records of one kind reserved up front; longer lists grow as they are read.
const PREALLOC_RECORDS: usize = 4096;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ControlParseError> {
        if self.buf.len() < n {
            return Err(ControlParseError::BadDump(what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ControlParseError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

impl TableSnapshot {
    /// Decodes and checks a dump body.
    pub fn parse(body: &[u8]) -> Result<Self, ControlParseError> {
        let mut r = Reader { buf: body };
        let h = WireDumpHeader::read_from_bytes(
            r.take(core::mem::size_of::<WireDumpHeader>(), "truncated header")?,
        )
        .map_err(|_| ControlParseError::BadDump("header"))?;
        let count = usize::from(h.processor_count.get());
        if count == 0 {
            return Err(ControlParseError::BadDump("no processors"));
        }
        let bitmap = r.take(count.div_ceil(8), "truncated live bitmap")?;
        let live: Vec<bool> = (0..count)
            .map(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
            .collect();
        if count % 8 != 0 && bitmap[count / 8] >> (count % 8) != 0 {
            return Err(ControlParseError::BadDump(
                "live bitmap has bits past the processor count",
            ));
        }
        let caps = r.take(count * 4, "truncated capacities")?;
        let capacity = caps
            .chunks_exact(4)
            .map(|c| match u32::from_be_bytes([c[0], c[1], c[2], c[3]]) {
                NO_CAPACITY => None,
                v => Some(v),
            })
            .collect();
        let master = match h.master.get() {
            0xffff => None,
            m if usize::from(m) < count && live[usize::from(m)] => Some(ProcessorId(m)),
            _ => return Err(ControlParseError::BadDump("master is not a live processor")),
        };
        let nl = h.listener_count.get() as usize;
        let nc = h.connection_count.get() as usize;
        // Both record lists together must fit in what is left of the body
        // before anything is allocated for them.
        let need = nl
            .checked_mul(MIN_LISTENER_RECORD)
            .zip(nc.checked_mul(core::mem::size_of::<WireConnection>()))
            .and_then(|(a, b)| a.checked_add(b));
        if need.is_none_or(|n| n > r.buf.len()) {
            return Err(ControlParseError::BadDump("record counts exceed the body"));
        }
        let mut listeners: Vec<(ListenerKey, Vec<ProcessorId>)> =
            Vec::with_capacity(nl.min(PREALLOC_RECORDS));
        // Processors seen in the current group, one bit each; cleared after
        // each group by walking its members, so the duplicate check is linear.
        let mut seen = vec![0u64; count.div_ceil(64)];
        for _ in 0..nl {
            let wl = WireListener::read_from_bytes(r.take(
                core::mem::size_of::<WireListener>(),
                "truncated listener record",
            )?)
            .map_err(|_| ControlParseError::BadDump("listener record"))?;
            let key = wl.key()?;
            let n = usize::from(r.u16("truncated member count")?);
            if n == 0 {
                return Err(ControlParseError::BadDump("listener group without members"));
            }
            let list = r.take(2 * n, "truncated member list")?;
            let mut members = Vec::with_capacity(n);
            for c in list.chunks_exact(2) {
                let p = u16::from_be_bytes([c[0], c[1]]);
                let i = usize::from(p);
                if i >= count || !live[i] {
                    return Err(ControlParseError::BadDump(
                        "listener member is not a live processor",
                    ));
                }
                let bit = 1u64 << (i % 64);
                if seen[i / 64] & bit != 0 {
                    return Err(ControlParseError::BadDump(
                        "processor listed twice in a group",
                    ));
                }
                seen[i / 64] |= bit;
                members.push(ProcessorId(p));
            }
            for m in &members {
                seen[usize::from(m.0) / 64] &= !(1u64 << (m.0 % 64));
            }
            if listeners.last().is_some_and(|(k, _)| *k >= key) {
                return Err(ControlParseError::BadDump(
                    "listener records not sorted or not unique",
                ));
            }
            listeners.push((key, members));
        }
        let mut connections: Vec<(FiveTuple, ProcessorId, EntryState)> =
            Vec::with_capacity(nc.min(PREALLOC_RECORDS));
        for _ in 0..nc {
            let wc = WireConnection::read_from_bytes(r.take(
                core::mem::size_of::<WireConnection>(),
                "truncated connection record",
            )?)
            .map_err(|_| ControlParseError::BadDump("connection record"))?;
            let tuple = wc.tuple.tuple()?;
            if wc.reserved != 0 {
                return Err(ControlParseError::Reserved("connection.reserved"));
            }
            let state = match wc.state {
                2 => EntryState::Established,
                3 => EntryState::Orphaned,
                _ => {
                    return Err(ControlParseError::BadDump(
                        "connection state must be 2 (established) or 3 (orphaned)",
                    ));
                }
            };
            let owner = wc.owner.get();
            if usize::from(owner) >= count {
                return Err(ControlParseError::BadDump(
                    "connection owner is not a processor",
                ));
            }
            if state == EntryState::Established && !live[usize::from(owner)] {
                return Err(ControlParseError::EstablishedOwnerDown(owner));
            }
            if connections.last().is_some_and(|(t, _, _)| *t >= tuple) {
                return Err(ControlParseError::BadDump(
                    "connection records not sorted or not unique",
                ));
            }
            connections.push((tuple, ProcessorId(owner), state));
        }
        if !r.buf.is_empty() {
            return Err(ControlParseError::BadDump("bytes after the last record"));
        }
        Ok(TableSnapshot {
            master,
            live,
            capacity,
            listeners,
            connections,
        })
    }

    /// Encodes the dump body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let count = self.live.len();
        let h = WireDumpHeader {
            master: U16::new(self.master.map(|p| p.0).unwrap_or(0xffff)),
            processor_count: U16::new(count as u16),
            listener_count: U32::new(self.listeners.len() as u32),
            connection_count: U32::new(self.connections.len() as u32),
        };
        out.extend_from_slice(h.as_bytes());
        let mut bitmap = vec![0u8; count.div_ceil(8)];
        for (i, l) in self.live.iter().enumerate() {
            if *l {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bitmap);
        for i in 0..count {
            let c = self
                .capacity
                .get(i)
                .copied()
                .flatten()
                .unwrap_or(NO_CAPACITY);
            out.extend_from_slice(&c.to_be_bytes());
        }
        for (k, members) in &self.listeners {
            out.extend_from_slice(WireListener::from_key(k).as_bytes());
            out.extend_from_slice(&(members.len() as u16).to_be_bytes());
            for m in members {
                out.extend_from_slice(&m.0.to_be_bytes());
            }
        }
        for (t, owner, state) in &self.connections {
            let wc = WireConnection {
                tuple: WireTuple::from_tuple(t),
                owner: U16::new(owner.0),
                state: if *state == EntryState::Orphaned { 3 } else { 2 },
                reserved: 0,
            };
            out.extend_from_slice(wc.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::{PROTO_TCP, v4_mapped};

    fn sample() -> TableSnapshot {
        let t = |n: u8| FiveTuple {
            protocol: PROTO_TCP,
            remote_addr: v4_mapped([198, 18, 5, n]),
            remote_port: 40000,
            local_addr: v4_mapped([198, 18, 0, 10]),
            local_port: 80,
        };
        TableSnapshot {
            master: Some(ProcessorId(1)),
            live: vec![false, true, true, true, true, true, true, true, true, true],
            capacity: vec![
                None,
                Some(5),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                Some(0),
            ],
            listeners: vec![(
                ListenerKey {
                    protocol: PROTO_TCP,
                    addr: None,
                    port: 80,
                },
                vec![ProcessorId(2), ProcessorId(1)],
            )],
            connections: vec![
                (t(1), ProcessorId(2), EntryState::Established),
                (t(2), ProcessorId(0), EntryState::Orphaned),
            ],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let mut b = Vec::new();
        s.emit(&mut b);
        assert_eq!(TableSnapshot::parse(&b).unwrap(), s);
    }

    #[test]
    fn established_connection_of_a_down_processor_is_rejected() {
        let mut bad = sample();
        // P0 is down in the sample; its connection may be orphaned, not established.
        bad.connections[1].2 = EntryState::Established;
        let mut b = Vec::new();
        bad.emit(&mut b);
        assert_eq!(
            TableSnapshot::parse(&b),
            Err(ControlParseError::EstablishedOwnerDown(0))
        );
    }

    #[test]
    fn inconsistent_dumps_are_rejected() {
        let mut unsorted = sample();
        unsorted.connections.swap(0, 1);
        let mut dead_master = sample();
        dead_master.master = Some(ProcessorId(0));
        let mut dead_member = sample();
        dead_member.listeners[0].1.push(ProcessorId(0));
        for bad in [unsorted, dead_master, dead_member] {
            let mut b = Vec::new();
            bad.emit(&mut b);
            assert!(
                matches!(TableSnapshot::parse(&b), Err(ControlParseError::BadDump(_))),
                "{bad:?}"
            );
        }
        let mut b = Vec::new();
        sample().emit(&mut b);
        for cut in 0..b.len() {
            assert!(TableSnapshot::parse(&b[..cut]).is_err());
        }
    }
}
