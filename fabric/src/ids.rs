//! Names shared by every part of the fabric: endpoint IDs, planes, fabric
//! addresses, window keys and NACK reasons.

use std::fmt;

/// Number of bits in a ServerNet-style endpoint ID.
pub const ENDPOINT_ID_BITS: u32 = 20;
/// Largest valid endpoint ID.
pub const MAX_ENDPOINT_ID: u32 = (1 << ENDPOINT_ID_BITS) - 1;

/// A 20-bit fabric endpoint ID (the destination/source ID of every packet).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(u32);

impl EndpointId {
    /// Builds an ID, or `None` if `raw` does not fit in 20 bits.
    pub const fn new(raw: u32) -> Option<Self> {
        if raw <= MAX_ENDPOINT_ID {
            Some(Self(raw))
        } else {
            None
        }
    }

    /// The raw 20-bit value.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ep{}", self.0)
    }
}

/// One of the two disjoint fabric planes. A packet never crosses between them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plane {
    /// The X plane.
    X = 0,
    /// The Y plane.
    Y = 1,
}

impl Plane {
    /// Both planes, X first.
    pub const BOTH: [Plane; 2] = [Plane::X, Plane::Y];

    /// The other plane.
    pub const fn other(self) -> Plane {
        match self {
            Plane::X => Plane::Y,
            Plane::Y => Plane::X,
        }
    }

    /// 0 for X, 1 for Y.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Plane::X => "X",
            Plane::Y => "Y",
        })
    }
}

/// Bits of a [`WindowKey`] that index the target's AVT.
pub const WINDOW_INDEX_BITS: u32 = 20;
/// Bits of a [`WindowKey`] that carry the registration generation.
pub const WINDOW_GENERATION_BITS: u32 = 12;

/// The key of one AVT window (like an RDMA rkey): a table index and a
/// generation tag. Re-registering a slot bumps the generation, so a key
/// handed out before stops working.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowKey {
    index: u32,
    generation: u16,
}

impl WindowKey {
    /// Builds a key; `None` if `index` exceeds 20 bits or `generation` 12 bits.
    pub const fn new(index: u32, generation: u16) -> Option<Self> {
        if index < (1 << WINDOW_INDEX_BITS) && (generation as u32) < (1 << WINDOW_GENERATION_BITS) {
            Some(Self { index, generation })
        } else {
            None
        }
    }

    /// The AVT slot index.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The generation tag.
    pub const fn generation(self) -> u16 {
        self.generation
    }

    /// Packed form: index in the high 20 bits, generation in the low 12.
    pub const fn to_bits(self) -> u32 {
        (self.index << WINDOW_GENERATION_BITS) | self.generation as u32
    }

    /// Inverse of [`WindowKey::to_bits`]; every 32-bit value is a valid key.
    pub const fn from_bits(bits: u32) -> Self {
        Self {
            index: bits >> WINDOW_GENERATION_BITS,
            generation: (bits & ((1 << WINDOW_GENERATION_BITS) - 1)) as u16,
        }
    }
}

impl fmt::Display for WindowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key{}.g{}", self.index, self.generation)
    }
}

/// A 64-bit fabric address as carried in a packet's address field: the
/// window key in the high 32 bits and a byte offset inside that window in
/// the low 32 bits (so one window spans at most 4 GiB).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FabricAddr(pub u64);

impl FabricAddr {
    /// The address of byte `offset` of the window named by `key`.
    pub const fn new(key: WindowKey, offset: u32) -> Self {
        Self(((key.to_bits() as u64) << 32) | offset as u64)
    }

    /// The window key part.
    pub const fn key(self) -> WindowKey {
        WindowKey::from_bits((self.0 >> 32) as u32)
    }

    /// The offset inside the window.
    pub const fn offset(self) -> u32 {
        self.0 as u32
    }

    /// `self + n` bytes, or `None` if that leaves the window's 32-bit offset space.
    pub fn checked_add(self, n: u64) -> Option<Self> {
        let off = (self.offset() as u64).checked_add(n)?;
        let off = u32::try_from(off).ok()?;
        Some(Self::new(self.key(), off))
    }
}

impl fmt::Display for FabricAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.key(), self.offset())
    }
}

/// Why a target refused a request. Carried in NACK packets and counted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum NackReason {
    /// No AVT entry at the key's index.
    NoWindow = 1,
    /// The AVT entry exists but belongs to another requester.
    WrongRequester = 2,
    /// Offset + length runs past the window.
    OutsideWindow = 3,
    /// A write to a window without write permission.
    NotWritable = 4,
    /// A read from a window without read permission.
    NotReadable = 5,
    /// The key's generation is not the entry's current one.
    StaleKey = 6,
    /// The request itself is malformed (length over the maximum, bad type).
    BadRequest = 7,
}

impl NackReason {
    /// Every reason, in code order.
    pub const ALL: [NackReason; 7] = [
        NackReason::NoWindow,
        NackReason::WrongRequester,
        NackReason::OutsideWindow,
        NackReason::NotWritable,
        NackReason::NotReadable,
        NackReason::StaleKey,
        NackReason::BadRequest,
    ];

    /// Decodes a wire code.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => NackReason::NoWindow,
            2 => NackReason::WrongRequester,
            3 => NackReason::OutsideWindow,
            4 => NackReason::NotWritable,
            5 => NackReason::NotReadable,
            6 => NackReason::StaleKey,
            7 => NackReason::BadRequest,
            _ => return None,
        })
    }

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Short stable name used in counters and reports.
    pub const fn name(self) -> &'static str {
        match self {
            NackReason::NoWindow => "no_window",
            NackReason::WrongRequester => "wrong_requester",
            NackReason::OutsideWindow => "outside_window",
            NackReason::NotWritable => "not_writable",
            NackReason::NotReadable => "not_readable",
            NackReason::StaleKey => "stale_key",
            NackReason::BadRequest => "bad_request",
        }
    }
}

impl fmt::Display for NackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_id_is_20_bits() {
        assert!(EndpointId::new(MAX_ENDPOINT_ID).is_some());
        assert!(EndpointId::new(MAX_ENDPOINT_ID + 1).is_none());
    }

    #[test]
    fn window_key_round_trips() {
        let k = WindowKey::new(0xABCDE, 0xFED).unwrap();
        assert_eq!(WindowKey::from_bits(k.to_bits()), k);
        let a = FabricAddr::new(k, 0x1234_5678);
        assert_eq!(a.key(), k);
        assert_eq!(a.offset(), 0x1234_5678);
        assert!(WindowKey::new(1 << 20, 0).is_none());
        assert!(WindowKey::new(0, 1 << 12).is_none());
    }

    #[test]
    fn fabric_addr_checked_add_stays_in_window() {
        let k = WindowKey::new(3, 1).unwrap();
        let a = FabricAddr::new(k, u32::MAX - 1);
        assert_eq!(a.checked_add(1).unwrap().offset(), u32::MAX);
        assert!(a.checked_add(2).is_none());
    }

    #[test]
    fn nack_codes_round_trip() {
        for r in NackReason::ALL {
            assert_eq!(NackReason::from_code(r.code()), Some(r));
        }
        assert_eq!(NackReason::from_code(0), None);
        assert_eq!(NackReason::from_code(8), None);
    }
}
