//! The host ↔ firmware control protocol.
//!
//! Hosts (the per-processor TCP/IP libraries) send these messages over the
//! fabric into the adapter's mailbox; every host sends every message to every
//! adapter serving the IP, so the adapters' tables stay identical.
//!
//! ## Wire format (version 1, all integers big-endian)
//! A 16-byte [`Header`] — magic `"SF"`, version, kind, sender processor, flags
//! (must be 0), sender's sequence number, body length — then a body whose
//! layout depends on the kind:
//!
//! | kind | message | body |
//! |---|---|---|
//! | 1 | register listener | [`WireListener`] (24 B) |
//! | 2 | unregister listener | [`WireListener`] |
//! | 3 | add connection | [`WireTuple`] (40 B) |
//! | 4 | remove connection | [`WireTuple`] |
//! | 5 | move connection | [`WireMove`] (44 B) |
//! | 6 | set master | [`WireProcessor`] (4 B) |
//! | 7 | capacity report | [`WireCapacity`] (4 B) |
//! | 8 | processor down | [`WireProcessor`] |
//! | 9 | processor up | [`WireProcessor`] |
//! | 10 | table dump | [`WireDumpHeader`], live bitmap, capacities, listener and connection records (see [`TableSnapshot`]) |
//!
//! Family codes: 0 = any address (listeners only), 4 = IPv4 (stored
//! IPv4-mapped), 6 = IPv6 (never IPv4-mapped). Reserved fields must be zero.
//!
//! ## Authorisation (checked by [`crate::Firmware::apply`])
//! The sender field is the fabric source of the message (the fabric's access
//! validation vouches for it). The rules keep one processor's library from
//! damaging another's state:
//! - register/unregister listener, add connection, capacity report: for the
//!   sender itself, which must be live;
//! - remove or move a connection: the owner, or the current master (which
//!   cleans up for the cluster, e.g. after an application crash);
//! - processor down: any live processor about another one; processor up: the
//!   processor itself (announcing its restart) or the master;
//! - set master: the current master only (a hand-over);
//! - table dump: any live processor (resynchronising a new adapter).

mod snapshot;

pub use snapshot::TableSnapshot;

use zerocopy::byteorder::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::listener::ListenerKey;
use crate::tuple::{Addr16, FiveTuple, PROTO_TCP, PROTO_UDP, is_v4_mapped};
use crate::verdict::ProcessorId;

/// First two bytes of every message.
pub const MAGIC: [u8; 2] = *b"SF";
/// The protocol version this firmware speaks.
pub const VERSION: u8 = 1;
/// Length of the header.
pub const HEADER_LEN: usize = 16;
/// Largest body accepted (a dump of a full 1M-entry table fits).
pub const MAX_BODY_LEN: usize = 256 << 20;

/// Message header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 2],
    /// [`VERSION`].
    pub version: u8,
    /// Message kind (1..=10).
    pub kind: u8,
    /// Sending processor.
    pub sender: U16,
    /// Flags; none defined, must be 0.
    pub flags: U16,
    /// The sender's sequence number (informational, for traces).
    pub seq: U32,
    /// Body length in bytes.
    pub body_len: U32,
}

/// Listener key on the wire.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireListener {
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// 0 (any), 4 or 6.
    pub family: u8,
    /// Local port.
    pub port: U16,
    /// Must be 0.
    pub reserved: U32,
    /// Local address (zero for any).
    pub addr: [u8; 16],
}

/// Connection 5-tuple on the wire (inbound orientation).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireTuple {
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// 4 or 6.
    pub family: u8,
    /// Client port.
    pub remote_port: U16,
    /// Cluster port.
    pub local_port: U16,
    /// Must be 0.
    pub reserved: U16,
    /// Client address.
    pub remote_addr: [u8; 16],
    /// Cluster address.
    pub local_addr: [u8; 16],
}

/// Move-connection body.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireMove {
    /// The connection.
    pub tuple: WireTuple,
    /// The new owner.
    pub to: U16,
    /// Must be 0.
    pub reserved: U16,
}

/// A body naming one processor.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireProcessor {
    /// The processor.
    pub processor: U16,
    /// Must be 0.
    pub reserved: U16,
}

/// Capacity-report body.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireCapacity {
    /// Relative capacity of the sender (0 = take it out of weighted rotation).
    pub capacity: U32,
}

/// Fixed part of a table dump.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireDumpHeader {
    /// Master processor, 0xffff for none.
    pub master: U16,
    /// Processors in the bitmap and capacity list.
    pub processor_count: U16,
    /// Listener records that follow.
    pub listener_count: U32,
    /// Connection records that follow.
    pub connection_count: U32,
}

/// A connection record of a dump.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireConnection {
    /// The connection.
    pub tuple: WireTuple,
    /// Its owner.
    pub owner: U16,
    /// 2 = established, 3 = orphaned.
    pub state: u8,
    /// Must be 0.
    pub reserved: u8,
}

/// Why bytes are not a control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlParseError {
    /// Fewer bytes than the header or the body needs.
    #[error("truncated: {got} bytes, need {need}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// More bytes than header + body length.
    #[error("{extra} bytes after the body")]
    TrailingBytes {
        /// Extra bytes.
        extra: usize,
    },
    /// Not `"SF"`.
    #[error("bad magic {0:02x?}, expected \"SF\"")]
    BadMagic([u8; 2]),
    /// A version this firmware does not speak.
    #[error("unsupported version {0}, this firmware speaks {VERSION}")]
    UnsupportedVersion(u8),
    /// Unknown message kind.
    #[error("unknown message kind {0} (known: 1..=10)")]
    UnknownKind(u8),
    /// Body length wrong for the kind, or too large.
    #[error("{kind}: body is {got} bytes, expected {expected}")]
    BodyLength {
        /// Message kind name.
        kind: &'static str,
        /// Expected length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A reserved field or the flags are not zero.
    #[error("reserved field {0} is not zero")]
    Reserved(&'static str),
    /// Protocol other than TCP/UDP.
    #[error("protocol {0} is neither TCP (6) nor UDP (17)")]
    BadProtocol(u8),
    /// Family code not 0/4/6 (or 0 where an address is needed).
    #[error("address family code {0} is not valid here")]
    BadFamily(u8),
    /// Address not of the family its code says.
    #[error("address does not match its family code {0}")]
    FamilyMismatch(u8),
    /// A dump's records are inconsistent.
    #[error("table dump: {0}")]
    BadDump(&'static str),
    /// A dump lists an established connection owned by a processor it marks
    /// down (a processor's connections are orphaned when it goes down).
    #[error("table dump: established connection owned by processor {0}, which the dump marks down")]
    EstablishedOwnerDown(u16),
}

macro_rules! reject_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Why a control message was rejected (each is counted).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum RejectReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl RejectReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [RejectReason] = &[$(RejectReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name.
            pub const fn as_str(self) -> &'static str {
                match self { $(RejectReason::$variant => $name,)* }
            }

            /// Index in [`RejectReason::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

reject_reasons! {
    /// The bytes are not a well-formed message.
    Malformed => "malformed",
    /// A protocol version this firmware does not speak.
    UnsupportedVersion => "unsupported_version",
    /// The sender may not do this (see the module documentation).
    Unauthorised => "unauthorised",
    /// A processor ID outside the configured processors.
    UnknownProcessor => "unknown_processor",
    /// The processor named (or the sender) is not live.
    ProcessorNotLive => "processor_not_live",
    /// The port is exclusive and already owned.
    PortOwnedExclusively => "port_owned_exclusively",
    /// The processor already listens on this port.
    AlreadyListening => "already_listening",
    /// No such listener.
    NoSuchListener => "no_such_listener",
    /// Too many listener groups.
    TooManyListenerGroups => "too_many_listener_groups",
    /// The connection table is at its configured size.
    TableFull => "table_full",
    /// The connection is already registered.
    ConnectionExists => "connection_exists",
    /// No such connection.
    NoSuchConnection => "no_such_connection",
    /// Processor down for a processor already down.
    AlreadyDown => "already_down",
    /// Processor up for a processor already up.
    AlreadyUp => "already_up",
    /// A dump that does not fit this adapter's configuration.
    BadDump => "bad_dump",
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&ControlParseError> for RejectReason {
    fn from(e: &ControlParseError) -> Self {
        match e {
            ControlParseError::UnsupportedVersion(_) => RejectReason::UnsupportedVersion,
            _ => RejectReason::Malformed,
        }
    }
}

/// A message was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The bytes are not a message.
    #[error("malformed control message: {0}")]
    Parse(#[from] ControlParseError),
    /// The message was understood and refused.
    #[error("control message from {sender} rejected: {reason}")]
    Rejected {
        /// Who sent it.
        sender: ProcessorId,
        /// Why it was refused.
        reason: RejectReason,
    },
}

impl ControlError {
    /// The counted reason.
    pub fn reason(&self) -> RejectReason {
        match self {
            ControlError::Parse(e) => e.into(),
            ControlError::Rejected { reason, .. } => *reason,
        }
    }
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// The sender listens on the key.
    RegisterListener(ListenerKey),
    /// The sender stops listening on the key.
    UnregisterListener(ListenerKey),
    /// The sender owns this connection: confirms a provisional entry (accept),
    /// or registers an outbound connection before its SYN leaves.
    AddConnection(FiveTuple),
    /// The connection is closed.
    RemoveConnection(FiveTuple),
    /// The connection now belongs to `to` (accept_nw2 hand-off).
    MoveConnection {
        /// The connection.
        tuple: FiveTuple,
        /// Its new owner.
        to: ProcessorId,
    },
    /// The master role goes to this processor.
    SetMaster(ProcessorId),
    /// The sender's relative capacity (for capacity-weighted ports).
    CapacityReport(u32),
    /// This processor failed.
    ProcessorDown(ProcessorId),
    /// This processor is running again (it rejoins groups as it re-registers).
    ProcessorUp(ProcessorId),
    /// The whole replicated state, for resynchronising an adapter.
    TableDump(TableSnapshot),
}

impl ControlMessage {
    /// The kind code.
    pub fn kind(&self) -> u8 {
        match self {
            ControlMessage::RegisterListener(_) => 1,
            ControlMessage::UnregisterListener(_) => 2,
            ControlMessage::AddConnection(_) => 3,
            ControlMessage::RemoveConnection(_) => 4,
            ControlMessage::MoveConnection { .. } => 5,
            ControlMessage::SetMaster(_) => 6,
            ControlMessage::CapacityReport(_) => 7,
            ControlMessage::ProcessorDown(_) => 8,
            ControlMessage::ProcessorUp(_) => 9,
            ControlMessage::TableDump(_) => 10,
        }
    }
}

/// Name of a kind code.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "register_listener",
        2 => "unregister_listener",
        3 => "add_connection",
        4 => "remove_connection",
        5 => "move_connection",
        6 => "set_master",
        7 => "capacity_report",
        8 => "processor_down",
        9 => "processor_up",
        10 => "table_dump",
        _ => "unknown",
    }
}

/// A message with its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sending processor.
    pub sender: ProcessorId,
    /// The sender's sequence number.
    pub seq: u32,
    /// The message.
    pub message: ControlMessage,
}

/// A zero-copy view of a control message: a checked header and its body.
#[derive(Debug, Clone, Copy)]
pub struct ControlView<'a> {
    header: &'a Header,
    body: &'a [u8],
}

impl<'a> ControlView<'a> {
    /// Checks the header (magic, version, flags, length) and splits off the body.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, ControlParseError> {
        let (header, rest) =
            Header::ref_from_prefix(bytes).map_err(|_| ControlParseError::Truncated {
                need: HEADER_LEN,
                got: bytes.len(),
            })?;
        if header.magic != MAGIC {
            return Err(ControlParseError::BadMagic(header.magic));
        }
        if header.version != VERSION {
            return Err(ControlParseError::UnsupportedVersion(header.version));
        }
        if header.flags.get() != 0 {
            return Err(ControlParseError::Reserved("flags"));
        }
        let body_len = header.body_len.get() as usize;
        if body_len > MAX_BODY_LEN {
            return Err(ControlParseError::BodyLength {
                kind: kind_name(header.kind),
                expected: MAX_BODY_LEN,
                got: body_len,
            });
        }
        if rest.len() < body_len {
            return Err(ControlParseError::Truncated {
                need: HEADER_LEN + body_len,
                got: bytes.len(),
            });
        }
        if rest.len() > body_len {
            return Err(ControlParseError::TrailingBytes {
                extra: rest.len() - body_len,
            });
        }
        Ok(ControlView { header, body: rest })
    }

    /// The header.
    pub fn header(&self) -> &'a Header {
        self.header
    }

    /// The body.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The sender.
    pub fn sender(&self) -> ProcessorId {
        ProcessorId(self.header.sender.get())
    }
}

fn fixed<T: FromBytes + KnownLayout + Immutable + Unaligned>(
    kind: u8,
    body: &[u8],
) -> Result<&T, ControlParseError> {
    T::ref_from_bytes(body).map_err(|_| ControlParseError::BodyLength {
        kind: kind_name(kind),
        expected: core::mem::size_of::<T>(),
        got: body.len(),
    })
}

fn check_proto(p: u8) -> Result<u8, ControlParseError> {
    if p == PROTO_TCP || p == PROTO_UDP {
        Ok(p)
    } else {
        Err(ControlParseError::BadProtocol(p))
    }
}

fn check_addr(family: u8, a: &Addr16) -> Result<(), ControlParseError> {
    match family {
        4 if is_v4_mapped(a) => Ok(()),
        6 if !is_v4_mapped(a) => Ok(()),
        4 | 6 => Err(ControlParseError::FamilyMismatch(family)),
        f => Err(ControlParseError::BadFamily(f)),
    }
}

fn family_of(a: &Addr16) -> u8 {
    if is_v4_mapped(a) { 4 } else { 6 }
}

impl WireListener {
    /// Decodes and checks a listener key.
    pub fn key(&self) -> Result<ListenerKey, ControlParseError> {
        let protocol = check_proto(self.protocol)?;
        if self.reserved.get() != 0 {
            return Err(ControlParseError::Reserved("listener.reserved"));
        }
        let addr = match self.family {
            0 if self.addr == [0; 16] => None,
            0 => return Err(ControlParseError::FamilyMismatch(0)),
            f => {
                check_addr(f, &self.addr)?;
                Some(self.addr)
            }
        };
        Ok(ListenerKey {
            protocol,
            addr,
            port: self.port.get(),
        })
    }

    /// Encodes a listener key.
    pub fn from_key(k: &ListenerKey) -> Self {
        WireListener {
            protocol: k.protocol,
            family: k.addr.as_ref().map(family_of).unwrap_or(0),
            port: U16::new(k.port),
            reserved: U32::new(0),
            addr: k.addr.unwrap_or([0; 16]),
        }
    }
}

impl WireTuple {
    /// Decodes and checks a tuple.
    pub fn tuple(&self) -> Result<FiveTuple, ControlParseError> {
        let protocol = check_proto(self.protocol)?;
        if self.reserved.get() != 0 {
            return Err(ControlParseError::Reserved("tuple.reserved"));
        }
        check_addr(self.family, &self.remote_addr)?;
        check_addr(self.family, &self.local_addr)?;
        Ok(FiveTuple {
            protocol,
            remote_addr: self.remote_addr,
            remote_port: self.remote_port.get(),
            local_addr: self.local_addr,
            local_port: self.local_port.get(),
        })
    }

    /// Encodes a tuple.
    pub fn from_tuple(t: &FiveTuple) -> Self {
        WireTuple {
            protocol: t.protocol,
            family: family_of(&t.remote_addr),
            remote_port: U16::new(t.remote_port),
            local_port: U16::new(t.local_port),
            reserved: U16::new(0),
            remote_addr: t.remote_addr,
            local_addr: t.local_addr,
        }
    }
}

fn processor_body(kind: u8, body: &[u8]) -> Result<ProcessorId, ControlParseError> {
    let w: &WireProcessor = fixed(kind, body)?;
    if w.reserved.get() != 0 {
        return Err(ControlParseError::Reserved("processor.reserved"));
    }
    Ok(ProcessorId(w.processor.get()))
}

impl Envelope {
    /// Parses a message (rejects malformed bytes with the reason).
    pub fn parse(bytes: &[u8]) -> Result<Self, ControlParseError> {
        let view = ControlView::new_checked(bytes)?;
        let kind = view.header().kind;
        let body = view.body();
        let message = match kind {
            1 => ControlMessage::RegisterListener(fixed::<WireListener>(kind, body)?.key()?),
            2 => ControlMessage::UnregisterListener(fixed::<WireListener>(kind, body)?.key()?),
            3 => ControlMessage::AddConnection(fixed::<WireTuple>(kind, body)?.tuple()?),
            4 => ControlMessage::RemoveConnection(fixed::<WireTuple>(kind, body)?.tuple()?),
            5 => {
                let m: &WireMove = fixed(kind, body)?;
                if m.reserved.get() != 0 {
                    return Err(ControlParseError::Reserved("move.reserved"));
                }
                ControlMessage::MoveConnection {
                    tuple: m.tuple.tuple()?,
                    to: ProcessorId(m.to.get()),
                }
            }
            6 => ControlMessage::SetMaster(processor_body(kind, body)?),
            7 => ControlMessage::CapacityReport(fixed::<WireCapacity>(kind, body)?.capacity.get()),
            8 => ControlMessage::ProcessorDown(processor_body(kind, body)?),
            9 => ControlMessage::ProcessorUp(processor_body(kind, body)?),
            10 => ControlMessage::TableDump(TableSnapshot::parse(body)?),
            k => return Err(ControlParseError::UnknownKind(k)),
        };
        Ok(Envelope {
            sender: view.sender(),
            seq: view.header().seq.get(),
            message,
        })
    }

    /// Encodes the message (header and body).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match &self.message {
            ControlMessage::RegisterListener(k) | ControlMessage::UnregisterListener(k) => {
                body.extend_from_slice(WireListener::from_key(k).as_bytes());
            }
            ControlMessage::AddConnection(t) | ControlMessage::RemoveConnection(t) => {
                body.extend_from_slice(WireTuple::from_tuple(t).as_bytes());
            }
            ControlMessage::MoveConnection { tuple, to } => {
                let m = WireMove {
                    tuple: WireTuple::from_tuple(tuple),
                    to: U16::new(to.0),
                    reserved: U16::new(0),
                };
                body.extend_from_slice(m.as_bytes());
            }
            ControlMessage::SetMaster(p)
            | ControlMessage::ProcessorDown(p)
            | ControlMessage::ProcessorUp(p) => {
                body.extend_from_slice(
                    WireProcessor {
                        processor: U16::new(p.0),
                        reserved: U16::new(0),
                    }
                    .as_bytes(),
                );
            }
            ControlMessage::CapacityReport(c) => body.extend_from_slice(
                WireCapacity {
                    capacity: U32::new(*c),
                }
                .as_bytes(),
            ),
            ControlMessage::TableDump(s) => s.emit(&mut body),
        }
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            kind: self.message.kind(),
            sender: U16::new(self.sender.0),
            flags: U16::new(0),
            seq: U32::new(self.seq),
            body_len: U32::new(body.len() as u32),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A message with sequence number 0.
    pub fn new(sender: ProcessorId, message: ControlMessage) -> Self {
        Envelope {
            sender,
            seq: 0,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::v4_mapped;

    fn samples() -> Vec<Envelope> {
        let t = FiveTuple {
            protocol: PROTO_TCP,
            remote_addr: v4_mapped([198, 18, 5, 7]),
            remote_port: 40000,
            local_addr: v4_mapped([198, 18, 0, 10]),
            local_port: 80,
        };
        let k = ListenerKey {
            protocol: PROTO_TCP,
            addr: None,
            port: 80,
        };
        let k6 = ListenerKey {
            protocol: PROTO_UDP,
            addr: Some(
                "2001:db8::10"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            ),
            port: 53,
        };
        let p = ProcessorId(2);
        [
            ControlMessage::RegisterListener(k),
            ControlMessage::UnregisterListener(k6),
            ControlMessage::AddConnection(t),
            ControlMessage::RemoveConnection(t),
            ControlMessage::MoveConnection {
                tuple: t,
                to: ProcessorId(3),
            },
            ControlMessage::SetMaster(p),
            ControlMessage::CapacityReport(70),
            ControlMessage::ProcessorDown(p),
            ControlMessage::ProcessorUp(p),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, m)| Envelope {
            sender: ProcessorId(1),
            seq: i as u32,
            message: m,
        })
        .collect()
    }

    #[test]
    fn every_kind_round_trips() {
        for e in samples() {
            let b = e.to_bytes();
            assert_eq!(Envelope::parse(&b).unwrap(), e);
        }
    }

    #[test]
    fn fixed_bytes_of_processor_down() {
        let b = Envelope {
            sender: ProcessorId(1),
            seq: 7,
            message: ControlMessage::ProcessorDown(ProcessorId(2)),
        }
        .to_bytes();
        assert_eq!(
            b,
            [
                b'S', b'F', 1, 8, 0, 1, 0, 0, 0, 0, 0, 7, 0, 0, 0, 4, 0, 2, 0, 0
            ]
        );
    }

    #[test]
    fn malformed_messages_have_reasons() {
        let good = samples()[2].to_bytes();
        assert!(matches!(
            Envelope::parse(&good[..10]),
            Err(ControlParseError::Truncated { .. })
        ));
        assert!(matches!(
            Envelope::parse(&good[..good.len() - 1]),
            Err(ControlParseError::Truncated { .. })
        ));
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            Envelope::parse(&extra),
            Err(ControlParseError::TrailingBytes { extra: 1 })
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(
            Envelope::parse(&b),
            Err(ControlParseError::BadMagic(_))
        ));
        let mut b = good.clone();
        b[2] = 2;
        assert_eq!(
            Envelope::parse(&b),
            Err(ControlParseError::UnsupportedVersion(2))
        );
        let mut b = good.clone();
        b[3] = 99;
        assert_eq!(Envelope::parse(&b), Err(ControlParseError::UnknownKind(99)));
        let mut b = good.clone();
        b[7] = 1;
        assert_eq!(
            Envelope::parse(&b),
            Err(ControlParseError::Reserved("flags"))
        );
        let mut b = good.clone();
        b[HEADER_LEN] = 1; // protocol ICMP
        assert_eq!(Envelope::parse(&b), Err(ControlParseError::BadProtocol(1)));
        let mut b = good.clone();
        b[HEADER_LEN + 1] = 6; // says IPv6, addresses are mapped IPv4
        assert_eq!(
            Envelope::parse(&b),
            Err(ControlParseError::FamilyMismatch(6))
        );
        let mut b = good.clone();
        b[HEADER_LEN + 1] = 5;
        assert_eq!(Envelope::parse(&b), Err(ControlParseError::BadFamily(5)));
        let mut b = samples()[5].to_bytes();
        b[3] = 3; // set-master body under the add-connection kind
        assert!(matches!(
            Envelope::parse(&b),
            Err(ControlParseError::BodyLength {
                expected: 40,
                got: 4,
                ..
            })
        ));
    }
}
