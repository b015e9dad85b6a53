//! Fabric packets: the wire format, a zero-copy view ([`Packet`]) and a
//! validated high-level form ([`PacketRepr`]).
//!
//! Every transfer on the fabric is one packet:
//!
//! ```text
//!  byte  0       1       2       3       4       5       6       7
//!      +-------+-------+-------+-------+-------+-------+-------+-------+
//!    0 |        header word: big-endian u64, bit fields below          |
//!      +-------+-------+-------+-------+-------+-------+-------+-------+
//!    8 |        address: big-endian u64 FabricAddr                     |
//!      |        (window key in bits 63..32, offset in bits 31..0)      |
//!      +-------+-------+-------+-------+-------+-------+-------+-------+
//!   16 |        payload: 0..=max_payload bytes                         |
//!      |        ...                                                    |
//!      +-------+-------+-------+-------+
//! 16+p |   CRC-32, big-endian          |   (p = payload bytes on the wire)
//!      +-------+-------+-------+-------+
//! ```
//!
//! The header word (bit 63 is the most significant bit of byte 0):
//!
//! ```text
//!  63       44 43       24 23  20  19  18      11 10   9 8    5 4     0
//! +-----------+-----------+------+----+----------+------+------+-------+
//! | dst ID    | src ID    | type | rsp| length   | pad  | tid  | rsvd  |
//! | 20 bits   | 20 bits   | 4    | 1  | 8, words | 2    | 4    | 5 = 0 |
//! +-----------+-----------+------+----+----------+------+------+-------+
//! ```
//!
//! - **dst ID** comes first because routers decide on it alone.
//! - **type**: [`TYPE_READ`] (0x1), [`TYPE_WRITE`] (0x2) or [`TYPE_NACK`] (0xF);
//!   every other value is invalid. **rsp** is 0 for a request, 1 for a response.
//! - **length** counts 4-byte words, rounded up; **pad** (0..=3) is the number of
//!   unused bytes in the last word, so the data length is `n = words * 4 - pad`
//!   (at most [`MAX_DATA_LEN`] = 1020). `pad` must be 0 when `words` is 0, so every
//!   `n` has exactly one encoding.
//! - **tid**: transaction ID, 16 outstanding transactions per requester.
//! - **rsvd**: reserved, must be zero.
//!
//! The address field is a [`FabricAddr`]; responses echo the request's address.
//! The CRC is CRC-32 (IEEE 802.3, as computed by `crc32fast`) over header,
//! address and payload, stored big-endian in the last 4 bytes.
//!
//! The packet kinds ([`PacketKind`]) and what `n` means for each:
//!
//! | kind            | type  | rsp | `n`             | payload on the wire   |
//! |-----------------|-------|-----|-----------------|-----------------------|
//! | read request    | Read  | 0   | bytes requested | none                  |
//! | write request   | Write | 0   | data bytes      | `n` data bytes        |
//! | read response   | Read  | 1   | data bytes      | `n` data bytes        |
//! | write ack       | Write | 1   | 0               | none                  |
//! | nack            | Nack  | 1   | 1               | one [`NackReason`] code |
//!
//! A payload or requested read length larger than the generation's
//! [`PacketLimits::max_payload`] is rejected by [`PacketRepr::parse`].
//!
//! In the smoltcp style, [`Packet`] reads and writes fields in place over any
//! byte buffer (after [`Packet::check_len`] no getter panics), and
//! [`PacketRepr`] is the checked form: [`PacketRepr::parse`] rejects anything
//! malformed, and [`PacketRepr::emit`] writes exactly
//! [`PacketRepr::buffer_len`] bytes, CRC included. For every repr `r`,
//! `parse(emit(r), limits)` succeeds exactly when `r.check(limits)` does, and
//! gives back `r`; for every byte string `b` that parses, emitting the parsed
//! repr gives back `b` ([`fuzz_check`] asserts both directions).

use core::fmt;

use thiserror::Error;
use zerocopy::byteorder::{BigEndian, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::ids::{EndpointId, FabricAddr, MAX_ENDPOINT_ID, NackReason};

/// Bytes in the header word.
pub const HEADER_LEN: usize = 8;
/// Bytes in the address field.
pub const ADDRESS_LEN: usize = 8;
/// Bytes in the trailing CRC.
pub const CRC_LEN: usize = 4;
/// Bytes every packet carries besides its payload (header + address + CRC).
pub const OVERHEAD: usize = HEADER_LEN + ADDRESS_LEN + CRC_LEN;
/// The largest data length the 8-bit word count can express (255 words).
pub const MAX_DATA_LEN: usize = 255 * 4;

/// Transaction type code of reads (requests and responses).
pub const TYPE_READ: u8 = 0x1;
/// Transaction type code of writes (requests and acks).
pub const TYPE_WRITE: u8 = 0x2;
/// Transaction type code of NACKs (always responses).
pub const TYPE_NACK: u8 = 0xF;

/// Number of distinct transaction IDs (the `tid` field is 4 bits).
pub const TID_COUNT: u8 = 16;

/// Bytes on the wire of a packet carrying `payload_len` payload bytes
/// (`OVERHEAD + payload_len`). Note that read requests carry no payload
/// whatever length they ask for, and NACKs carry one byte.
pub const fn wire_len(payload_len: usize) -> usize {
    OVERHEAD + payload_len
}

/// Field positions: byte ranges of the packet and bit fields of the header word.
mod field {
    #![allow(dead_code)]
    use core::ops::Range;

    /// The header word.
    pub const HEADER: Range<usize> = 0..8;
    /// The address field.
    pub const ADDRESS: Range<usize> = 8..16;
    /// First payload byte; the payload runs up to the CRC.
    pub const PAYLOAD_START: usize = 16;

    /// Destination endpoint ID, bits 63..44.
    pub const DST_SHIFT: u32 = 44;
    /// Source endpoint ID, bits 43..24.
    pub const SRC_SHIFT: u32 = 24;
    /// Mask of a 20-bit endpoint ID (after shifting).
    pub const ID_MASK: u64 = 0xF_FFFF;
    /// Transaction type, bits 23..20.
    pub const TYPE_SHIFT: u32 = 20;
    /// Mask of the type field.
    pub const TYPE_MASK: u64 = 0xF;
    /// Response bit, bit 19.
    pub const RESPONSE_SHIFT: u32 = 19;
    /// Length in words, bits 18..11.
    pub const WORDS_SHIFT: u32 = 11;
    /// Mask of the length field.
    pub const WORDS_MASK: u64 = 0xFF;
    /// Pad bytes in the last word, bits 10..9.
    pub const PAD_SHIFT: u32 = 9;
    /// Mask of the pad field.
    pub const PAD_MASK: u64 = 0x3;
    /// Transaction ID, bits 8..5.
    pub const TID_SHIFT: u32 = 5;
    /// Mask of the tid field.
    pub const TID_MASK: u64 = 0xF;
    /// Reserved, bits 4..0.
    pub const RESERVED_SHIFT: u32 = 0;
    /// Mask of the reserved field.
    pub const RESERVED_MASK: u64 = 0x1F;
}

/// The first 16 bytes of every packet, as a zero-copy `#[repr(C)]` layout:
/// the header word and the address, both big-endian.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireHeader {
    /// The header word (bit fields described in the [module docs](self)).
    pub word: U64<BigEndian>,
    /// The address field, a [`FabricAddr`].
    pub address: U64<BigEndian>,
}

const _: () = assert!(size_of::<WireHeader>() == field::ADDRESS.end);
const _: () = assert!(field::HEADER.end == HEADER_LEN);
const _: () = assert!(field::ADDRESS.end - field::ADDRESS.start == ADDRESS_LEN);

/// A generation of the fabric hardware; it decides the largest payload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Generation {
    /// First generation: 64-byte payloads.
    ServerNet1,
    /// Second generation: 512-byte payloads.
    ServerNet2,
    /// Third generation: 512-byte payloads.
    ServerNet3,
}

impl Generation {
    /// Every generation, oldest first.
    pub const ALL: [Generation; 3] = [
        Generation::ServerNet1,
        Generation::ServerNet2,
        Generation::ServerNet3,
    ];

    /// The largest payload (or requested read length) in bytes.
    pub const fn max_payload(self) -> u16 {
        match self {
            Generation::ServerNet1 => 64,
            Generation::ServerNet2 | Generation::ServerNet3 => 512,
        }
    }
}

/// Size limits a parser enforces.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PacketLimits {
    /// The largest payload or requested read length, in bytes (1..=1020).
    pub max_payload: u16,
}

impl PacketLimits {
    /// Limits with the given maximum payload; it must be 1..=[`MAX_DATA_LEN`]
    /// (a NACK needs one byte, and the format cannot express more than 1020).
    pub const fn new(max_payload: u16) -> Result<Self, PacketError> {
        if max_payload == 0 || max_payload as usize > MAX_DATA_LEN {
            Err(PacketError::BadLimit { max_payload })
        } else {
            Ok(Self { max_payload })
        }
    }

    /// The widest limits the format allows (1020 bytes).
    pub const FORMAT_MAX: PacketLimits = PacketLimits {
        max_payload: MAX_DATA_LEN as u16,
    };
}

impl From<Generation> for PacketLimits {
    fn from(generation: Generation) -> Self {
        Self {
            max_payload: generation.max_payload(),
        }
    }
}

/// Everything that can be wrong with a packet, a packet buffer or a repr.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PacketError {
    /// The buffer cannot even hold header, address and CRC.
    #[error(
        "packet is {len} bytes, shorter than the {OVERHEAD}-byte minimum (header + address + CRC)"
    )]
    Truncated {
        /// Buffer length in bytes.
        len: usize,
    },
    /// The buffer length differs from what the header's length field implies.
    #[error(
        "packet is {actual} bytes but its header implies {declared} ({OVERHEAD} + payload length)"
    )]
    LengthMismatch {
        /// Bytes implied by the header.
        declared: usize,
        /// Bytes in the buffer.
        actual: usize,
    },
    /// A read request with payload bytes on the wire.
    #[error("read request carries {len} payload bytes; read requests carry none")]
    ReadRequestWithPayload {
        /// Payload bytes found.
        len: usize,
    },
    /// The payload (or requested read length) exceeds the limit.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Payload or requested length in bytes.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// The type field is none of Read (0x1), Write (0x2) or Nack (0xF).
    #[error("transaction type {0:#x} is invalid; allowed are 0x1 (read), 0x2 (write), 0xf (nack)")]
    BadType(u8),
    /// The reserved bits 4..0 of the header word are not zero.
    #[error("reserved header bits are {0:#04x}; they must be zero")]
    ReservedBits(u8),
    /// A non-zero pad with a zero word count.
    #[error("pad is non-zero although the length is 0 words; pad must be 0 for empty packets")]
    BadPad,
    /// The stored CRC does not match the computed one.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// CRC in the packet.
        stored: u32,
        /// CRC over the packet's bytes.
        computed: u32,
    },
    /// A NACK with the response bit clear.
    #[error("NACK with the response bit clear; a NACK is always a response")]
    NackNotResponse,
    /// A NACK whose data length is not 1.
    #[error("NACK with a data length of {len}; a NACK carries exactly 1 byte (the reason)")]
    NackLength {
        /// The data length found.
        len: usize,
    },
    /// A NACK whose reason code is unknown.
    #[error("NACK reason code {0} is unknown; allowed are 1..=7")]
    BadNackReason(u8),
    /// A write acknowledgement with a non-zero data length.
    #[error("write ack with a non-zero data length; write acks carry no data")]
    AckWithData,
    /// A transaction ID that does not fit in 4 bits.
    #[error("transaction ID {0} is out of range; allowed are 0..=15")]
    BadTid(u8),
    /// A repr whose kind carries no data (read request, write ack, NACK) has a payload.
    #[error("a {kind} carries no payload, but the repr has {len} bytes")]
    UnexpectedPayload {
        /// The kind's name.
        kind: &'static str,
        /// Payload length in the repr.
        len: usize,
    },
    /// The output buffer is too small for [`PacketRepr::emit`].
    #[error("buffer of {len} bytes is too short; the packet needs {needed}")]
    BufferTooShort {
        /// Buffer length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// A [`PacketLimits`] maximum outside 1..=1020.
    #[error("maximum payload {max_payload} is out of range; allowed are 1..={MAX_DATA_LEN}")]
    BadLimit {
        /// The rejected maximum.
        max_payload: u16,
    },
    /// A response helper was called on the wrong kind of packet.
    #[error("a {response} cannot answer a {request}")]
    NotAnswerable {
        /// Kind of the packet being answered.
        request: &'static str,
        /// Kind of response asked for.
        response: &'static str,
    },
    /// A read response whose length differs from the requested length.
    #[error("read response of {len} bytes answers a read request of {requested} bytes")]
    ResponseLength {
        /// Bytes requested.
        requested: usize,
        /// Bytes in the response.
        len: usize,
    },
}

/// A zero-copy view of a packet in a byte buffer.
///
/// Getters need `T: AsRef<[u8]>`, setters `T: AsMut<[u8]>`. A view made with
/// [`Packet::new_unchecked`] may panic on access if the buffer is shorter than
/// [`OVERHEAD`] bytes; after [`Packet::check_len`] succeeds (which
/// [`Packet::new_checked`] does) no getter panics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks its length ([`Packet::check_len`]); the CRC
    /// and the field values are not checked (that is [`PacketRepr::parse`]'s job).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, PacketError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds at least header, address and CRC, and
    /// exactly the payload implied by the header: none for a read request
    /// (type Read, response bit clear), [`Packet::data_len`] bytes otherwise.
    ///
    /// Errors: [`PacketError::Truncated`], [`PacketError::ReadRequestWithPayload`],
    /// [`PacketError::LengthMismatch`].
    pub fn check_len(&self) -> Result<(), PacketError> {
        let len = self.buffer.as_ref().len();
        if len < OVERHEAD {
            return Err(PacketError::Truncated { len });
        }
        if self.raw_type() == TYPE_READ && !self.is_response() {
            if len != OVERHEAD {
                return Err(PacketError::ReadRequestWithPayload {
                    len: len - OVERHEAD,
                });
            }
            return Ok(());
        }
        let declared = wire_len(self.data_len());
        if len != declared {
            return Err(PacketError::LengthMismatch {
                declared,
                actual: len,
            });
        }
        Ok(())
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn header(&self) -> &WireHeader {
        match WireHeader::ref_from_prefix(self.buffer.as_ref()) {
            Ok((header, _)) => header,
            Err(_) => panic!(
                "packet buffer shorter than the {}-byte header",
                field::ADDRESS.end
            ),
        }
    }

    fn bits(&self, shift: u32, mask: u64) -> u64 {
        (self.header_word() >> shift) & mask
    }

    /// The whole header word.
    pub fn header_word(&self) -> u64 {
        self.header().word.get()
    }

    /// Destination endpoint ID (20 bits).
    pub fn dst_id(&self) -> u32 {
        self.bits(field::DST_SHIFT, field::ID_MASK) as u32
    }

    /// Source endpoint ID (20 bits).
    pub fn src_id(&self) -> u32 {
        self.bits(field::SRC_SHIFT, field::ID_MASK) as u32
    }

    /// Raw transaction type (4 bits; see [`TYPE_READ`], [`TYPE_WRITE`], [`TYPE_NACK`]).
    pub fn raw_type(&self) -> u8 {
        self.bits(field::TYPE_SHIFT, field::TYPE_MASK) as u8
    }

    /// The response bit.
    pub fn is_response(&self) -> bool {
        self.bits(field::RESPONSE_SHIFT, 1) != 0
    }

    /// Length field: data length in 4-byte words, rounded up.
    pub fn length_words(&self) -> u8 {
        self.bits(field::WORDS_SHIFT, field::WORDS_MASK) as u8
    }

    /// Pad field: unused bytes in the last word (0..=3).
    pub fn pad(&self) -> u8 {
        self.bits(field::PAD_SHIFT, field::PAD_MASK) as u8
    }

    /// Data length `words * 4 - pad` (0 if the words are fewer than the pad,
    /// which [`PacketRepr::parse`] rejects). For a read request this is the
    /// requested length, not the payload on the wire.
    pub fn data_len(&self) -> usize {
        (usize::from(self.length_words()) * 4).saturating_sub(usize::from(self.pad()))
    }

    /// Transaction ID (4 bits).
    pub fn tid(&self) -> u8 {
        self.bits(field::TID_SHIFT, field::TID_MASK) as u8
    }

    /// Reserved bits 4..0 (zero in a valid packet).
    pub fn reserved(&self) -> u8 {
        self.bits(field::RESERVED_SHIFT, field::RESERVED_MASK) as u8
    }

    /// The address field.
    pub fn address(&self) -> FabricAddr {
        FabricAddr(self.header().address.get())
    }

    /// The bytes between the address field and the CRC.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[field::PAYLOAD_START..data.len() - CRC_LEN]
    }

    /// The CRC stored in the last 4 bytes.
    pub fn stored_crc(&self) -> u32 {
        let data = self.buffer.as_ref();
        let (_, tail) = data.split_at(data.len() - CRC_LEN);
        u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]])
    }

    /// The CRC-32 of everything before the last 4 bytes.
    pub fn compute_crc(&self) -> u32 {
        let data = self.buffer.as_ref();
        crc32fast::hash(&data[..data.len() - CRC_LEN])
    }

    /// Whether the stored CRC matches the computed one.
    pub fn verify_crc(&self) -> bool {
        self.stored_crc() == self.compute_crc()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn header_mut(&mut self) -> &mut WireHeader {
        match WireHeader::mut_from_prefix(self.buffer.as_mut()) {
            Ok((header, _)) => header,
            Err(_) => panic!(
                "packet buffer shorter than the {}-byte header",
                field::ADDRESS.end
            ),
        }
    }

    fn set_bits(&mut self, shift: u32, mask: u64, value: u64) {
        let word = (self.header_word() & !(mask << shift)) | ((value & mask) << shift);
        self.set_header_word(word);
    }

    /// Sets the whole header word.
    pub fn set_header_word(&mut self, word: u64) {
        self.header_mut().word.set(word);
    }

    /// Sets the destination endpoint ID; bits above the low 20 are ignored.
    pub fn set_dst_id(&mut self, id: u32) {
        self.set_bits(field::DST_SHIFT, field::ID_MASK, u64::from(id));
    }

    /// Sets the source endpoint ID; bits above the low 20 are ignored.
    pub fn set_src_id(&mut self, id: u32) {
        self.set_bits(field::SRC_SHIFT, field::ID_MASK, u64::from(id));
    }

    /// Sets the raw transaction type; bits above the low 4 are ignored.
    pub fn set_raw_type(&mut self, ty: u8) {
        self.set_bits(field::TYPE_SHIFT, field::TYPE_MASK, u64::from(ty));
    }

    /// Sets the response bit.
    pub fn set_response(&mut self, response: bool) {
        self.set_bits(field::RESPONSE_SHIFT, 1, u64::from(response));
    }

    /// Sets the length field (words).
    pub fn set_length_words(&mut self, words: u8) {
        self.set_bits(field::WORDS_SHIFT, field::WORDS_MASK, u64::from(words));
    }

    /// Sets the pad field; bits above the low 2 are ignored.
    pub fn set_pad(&mut self, pad: u8) {
        self.set_bits(field::PAD_SHIFT, field::PAD_MASK, u64::from(pad));
    }

    /// Sets the transaction ID; bits above the low 4 are ignored.
    pub fn set_tid(&mut self, tid: u8) {
        self.set_bits(field::TID_SHIFT, field::TID_MASK, u64::from(tid));
    }

    /// Sets the reserved bits (for fault injection and tests); bits above
    /// the low 5 are ignored.
    pub fn set_reserved(&mut self, reserved: u8) {
        self.set_bits(
            field::RESERVED_SHIFT,
            field::RESERVED_MASK,
            u64::from(reserved),
        );
    }

    /// Sets the address field.
    pub fn set_address(&mut self, addr: FabricAddr) {
        self.header_mut().address.set(addr.0);
    }

    /// The bytes between the address field and the CRC, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let data = self.buffer.as_mut();
        let end = data.len() - CRC_LEN;
        &mut data[field::PAYLOAD_START..end]
    }

    /// Stores `crc` in the last 4 bytes.
    pub fn set_crc(&mut self, crc: u32) {
        let data = self.buffer.as_mut();
        let start = data.len() - CRC_LEN;
        data[start..].copy_from_slice(&crc.to_be_bytes());
    }

    /// Computes the CRC over header, address and payload and stores it.
    pub fn fill_crc(&mut self) {
        let crc = self.compute_crc();
        self.set_crc(crc);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// What a packet is, with the kind-specific header values.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// Read request for `len` bytes; no payload on the wire.
    ReadRequest {
        /// Bytes requested.
        len: u16,
    },
    /// Write request; the payload is the data.
    WriteRequest,
    /// Read response; the payload is the data read.
    ReadResponse,
    /// Write acknowledgement; no payload.
    WriteAck,
    /// Negative acknowledgement of a request; one reason byte on the wire.
    Nack(NackReason),
}

impl PacketKind {
    /// The transaction type code.
    pub const fn raw_type(self) -> u8 {
        match self {
            PacketKind::ReadRequest { .. } | PacketKind::ReadResponse => TYPE_READ,
            PacketKind::WriteRequest | PacketKind::WriteAck => TYPE_WRITE,
            PacketKind::Nack(_) => TYPE_NACK,
        }
    }

    /// Whether the kind is a response (read response, write ack, NACK).
    pub const fn is_response(self) -> bool {
        !self.is_request()
    }

    /// Whether the kind is a request (read or write request).
    pub const fn is_request(self) -> bool {
        matches!(
            self,
            PacketKind::ReadRequest { .. } | PacketKind::WriteRequest
        )
    }

    /// Whether the repr of this kind carries its data in `payload`
    /// (write requests and read responses).
    pub const fn carries_data(self) -> bool {
        matches!(self, PacketKind::WriteRequest | PacketKind::ReadResponse)
    }

    /// Short stable name, e.g. `"read request"`.
    pub const fn name(self) -> &'static str {
        match self {
            PacketKind::ReadRequest { .. } => "read request",
            PacketKind::WriteRequest => "write request",
            PacketKind::ReadResponse => "read response",
            PacketKind::WriteAck => "write ack",
            PacketKind::Nack(_) => "nack",
        }
    }
}

impl fmt::Display for PacketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketKind::ReadRequest { len } => write!(f, "read request len {len}"),
            PacketKind::Nack(reason) => write!(f, "nack {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// An endpoint ID from a 20-bit header field.
fn endpoint_id(raw: u32) -> EndpointId {
    match EndpointId::new(raw & MAX_ENDPOINT_ID) {
        Some(id) => id,
        // Masked to 20 bits, which `EndpointId::new` always accepts.
        None => unreachable!("20-bit endpoint ID rejected"),
    }
}

/// A validated, high-level packet.
///
/// `payload` holds the data of write requests and read responses and must be
/// empty for the other kinds: the requested length of a read request and the
/// reason of a NACK live in [`PacketRepr::kind`] (emit writes the NACK's reason
/// byte itself).
///
/// Build reprs with the constructors ([`PacketRepr::read_request`] and so on),
/// which check the transaction ID and the format's size limit; a repr built
/// by hand is checked by [`PacketRepr::emit`] and [`PacketRepr::check`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PacketRepr<'a> {
    /// Destination endpoint.
    pub dst: EndpointId,
    /// Source endpoint.
    pub src: EndpointId,
    /// Transaction ID, 0..=15.
    pub tid: u8,
    /// Fabric address (echoed by responses).
    pub addr: FabricAddr,
    /// What the packet is.
    pub kind: PacketKind,
    /// Data of write requests and read responses; empty otherwise.
    pub payload: &'a [u8],
}

impl<'a> PacketRepr<'a> {
    fn build(
        dst: EndpointId,
        src: EndpointId,
        tid: u8,
        addr: FabricAddr,
        kind: PacketKind,
        payload: &'a [u8],
    ) -> Result<Self, PacketError> {
        let repr = PacketRepr {
            dst,
            src,
            tid,
            addr,
            kind,
            payload,
        };
        repr.check_format()?;
        Ok(repr)
    }

    /// A read request for `len` bytes at `addr`.
    ///
    /// Errors: [`PacketError::BadTid`], or [`PacketError::PayloadTooLarge`] if
    /// `len` exceeds [`MAX_DATA_LEN`].
    pub fn read_request(
        dst: EndpointId,
        src: EndpointId,
        tid: u8,
        addr: FabricAddr,
        len: u16,
    ) -> Result<Self, PacketError> {
        Self::build(dst, src, tid, addr, PacketKind::ReadRequest { len }, &[])
    }

    /// A write request of `data` to `addr`.
    ///
    /// Errors: [`PacketError::BadTid`], or [`PacketError::PayloadTooLarge`] if
    /// `data` exceeds [`MAX_DATA_LEN`].
    pub fn write_request(
        dst: EndpointId,
        src: EndpointId,
        tid: u8,
        addr: FabricAddr,
        data: &'a [u8],
    ) -> Result<Self, PacketError> {
        Self::build(dst, src, tid, addr, PacketKind::WriteRequest, data)
    }

    /// A read response carrying `data` (address echoed from the request).
    ///
    /// Errors as for [`PacketRepr::write_request`].
    pub fn read_response(
        dst: EndpointId,
        src: EndpointId,
        tid: u8,
        addr: FabricAddr,
        data: &'a [u8],
    ) -> Result<Self, PacketError> {
        Self::build(dst, src, tid, addr, PacketKind::ReadResponse, data)
    }

    /// A write acknowledgement (address echoed from the request).
    ///
    /// Errors: [`PacketError::BadTid`].
    pub fn write_ack(
        dst: EndpointId,
        src: EndpointId,
        tid: u8,
        addr: FabricAddr,
    ) -> Result<Self, PacketError> {
        Self::build(dst, src, tid, addr, PacketKind::WriteAck, &[])
    }

    /// A NACK with `reason` (address echoed from the request).
    ///
    /// Errors: [`PacketError::BadTid`].
    pub fn nack(
        dst: EndpointId,
        src: EndpointId,
        tid: u8,
        addr: FabricAddr,
        reason: NackReason,
    ) -> Result<Self, PacketError> {
        Self::build(dst, src, tid, addr, PacketKind::Nack(reason), &[])
    }

    fn not_answerable(&self, response: &'static str) -> PacketError {
        PacketError::NotAnswerable {
            request: self.kind.name(),
            response,
        }
    }

    /// The read response to this read request: source and destination
    /// swapped, same tid and address, carrying `data`.
    ///
    /// Errors: [`PacketError::NotAnswerable`] if `self` is not a read request,
    /// [`PacketError::ResponseLength`] if `data` is not the requested length.
    pub fn read_response_to<'b>(&self, data: &'b [u8]) -> Result<PacketRepr<'b>, PacketError> {
        let PacketKind::ReadRequest { len } = self.kind else {
            return Err(self.not_answerable("read response"));
        };
        if data.len() != usize::from(len) {
            return Err(PacketError::ResponseLength {
                requested: usize::from(len),
                len: data.len(),
            });
        }
        PacketRepr::read_response(self.src, self.dst, self.tid, self.addr, data)
    }

    /// The write acknowledgement of this write request.
    ///
    /// Errors: [`PacketError::NotAnswerable`] if `self` is not a write request.
    pub fn write_ack_to(&self) -> Result<PacketRepr<'static>, PacketError> {
        if self.kind != PacketKind::WriteRequest {
            return Err(self.not_answerable("write ack"));
        }
        PacketRepr::write_ack(self.src, self.dst, self.tid, self.addr)
    }

    /// A NACK of this request with `reason`.
    ///
    /// Errors: [`PacketError::NotAnswerable`] if `self` is not a request.
    pub fn nack_to(&self, reason: NackReason) -> Result<PacketRepr<'static>, PacketError> {
        if !self.kind.is_request() {
            return Err(self.not_answerable("nack"));
        }
        PacketRepr::nack(self.src, self.dst, self.tid, self.addr, reason)
    }

    /// The data length `n` the header carries: the requested length of a read
    /// request, 1 for a NACK, 0 for a write ack, the payload length otherwise.
    pub fn data_len(&self) -> usize {
        match self.kind {
            PacketKind::ReadRequest { len } => usize::from(len),
            PacketKind::Nack(_) => 1,
            PacketKind::WriteAck => 0,
            PacketKind::WriteRequest | PacketKind::ReadResponse => self.payload.len(),
        }
    }

    /// Payload bytes on the wire (0 for read requests and write acks, 1 for NACKs).
    pub fn wire_payload_len(&self) -> usize {
        match self.kind {
            PacketKind::ReadRequest { .. } | PacketKind::WriteAck => 0,
            PacketKind::Nack(_) => 1,
            PacketKind::WriteRequest | PacketKind::ReadResponse => self.payload.len(),
        }
    }

    /// Bytes [`PacketRepr::emit`] writes: `wire_len(self.wire_payload_len())`.
    pub fn buffer_len(&self) -> usize {
        wire_len(self.wire_payload_len())
    }

    /// Checks what the format itself requires: tid below 16, no payload on
    /// kinds that carry none, data length at most [`MAX_DATA_LEN`].
    fn check_format(&self) -> Result<(), PacketError> {
        if self.tid >= TID_COUNT {
            return Err(PacketError::BadTid(self.tid));
        }
        if !self.kind.carries_data() && !self.payload.is_empty() {
            return Err(PacketError::UnexpectedPayload {
                kind: self.kind.name(),
                len: self.payload.len(),
            });
        }
        let len = self.data_len();
        if len > MAX_DATA_LEN {
            return Err(PacketError::PayloadTooLarge {
                len,
                max: MAX_DATA_LEN,
            });
        }
        Ok(())
    }

    /// Checks that [`PacketRepr::parse`] with `limits` would accept what
    /// [`PacketRepr::emit`] writes for this repr.
    pub fn check(&self, limits: PacketLimits) -> Result<(), PacketError> {
        self.check_format()?;
        let len = self.data_len();
        let max = usize::from(limits.max_payload);
        if len > max {
            return Err(PacketError::PayloadTooLarge { len, max });
        }
        Ok(())
    }

    /// Parses and validates a packet: length, CRC, reserved bits, pad, type,
    /// response bit, kind-specific lengths, NACK reason and `limits`.
    ///
    /// Checks run in that order, so a packet with a good CRC reports its
    /// first structural defect and a corrupted one usually reports
    /// [`PacketError::BadCrc`] (or a length error, if the corruption hit the
    /// length field).
    pub fn parse(
        packet: &Packet<&'a [u8]>,
        limits: PacketLimits,
    ) -> Result<PacketRepr<'a>, PacketError> {
        packet.check_len()?;
        let (stored, computed) = (packet.stored_crc(), packet.compute_crc());
        if stored != computed {
            return Err(PacketError::BadCrc { stored, computed });
        }
        let reserved = packet.reserved();
        if reserved != 0 {
            return Err(PacketError::ReservedBits(reserved));
        }
        if packet.length_words() == 0 && packet.pad() != 0 {
            return Err(PacketError::BadPad);
        }
        let n = packet.data_len();
        let buffer: &'a [u8] = packet.buffer;
        let wire_payload = &buffer[field::PAYLOAD_START..buffer.len() - CRC_LEN];
        let (kind, payload) = match (packet.raw_type(), packet.is_response()) {
            // n <= MAX_DATA_LEN (8-bit word count), so it fits in a u16.
            (TYPE_READ, false) => (PacketKind::ReadRequest { len: n as u16 }, &[][..]),
            (TYPE_WRITE, false) => (PacketKind::WriteRequest, wire_payload),
            (TYPE_READ, true) => (PacketKind::ReadResponse, wire_payload),
            (TYPE_WRITE, true) => {
                if n != 0 {
                    return Err(PacketError::AckWithData);
                }
                (PacketKind::WriteAck, &[][..])
            }
            (TYPE_NACK, false) => return Err(PacketError::NackNotResponse),
            (TYPE_NACK, true) => match wire_payload {
                &[code] => match NackReason::from_code(code) {
                    Some(reason) => (PacketKind::Nack(reason), &[][..]),
                    None => return Err(PacketError::BadNackReason(code)),
                },
                _ => return Err(PacketError::NackLength { len: n }),
            },
            (ty, _) => return Err(PacketError::BadType(ty)),
        };
        let max = usize::from(limits.max_payload);
        if n > max {
            return Err(PacketError::PayloadTooLarge { len: n, max });
        }
        Ok(PacketRepr {
            dst: endpoint_id(packet.dst_id()),
            src: endpoint_id(packet.src_id()),
            tid: packet.tid(),
            addr: packet.address(),
            kind,
            payload,
        })
    }

    /// Writes the packet, CRC included, into the first
    /// [`PacketRepr::buffer_len`] bytes of `buf`; the rest of `buf` is untouched.
    ///
    /// Errors (and then nothing is written): [`PacketError::BufferTooShort`],
    /// or the format errors [`PacketRepr::check`] reports for
    /// [`PacketLimits::FORMAT_MAX`] ([`PacketError::BadTid`],
    /// [`PacketError::UnexpectedPayload`], [`PacketError::PayloadTooLarge`]
    /// above [`MAX_DATA_LEN`]). Reprs from the constructors and from
    /// [`PacketRepr::parse`] never have format errors; only editing the
    /// public fields can cause them. Generation limits are not checked here:
    /// call [`PacketRepr::check`] when the sizes come from outside.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), PacketError> {
        self.check_format()?;
        let needed = self.buffer_len();
        let len = buf.len();
        let Some(out) = buf.get_mut(..needed) else {
            return Err(PacketError::BufferTooShort { len, needed });
        };
        let n = self.data_len();
        let words = n.div_ceil(4);
        let pad = words * 4 - n;
        let word = (u64::from(self.dst.raw()) << field::DST_SHIFT)
            | (u64::from(self.src.raw()) << field::SRC_SHIFT)
            | (u64::from(self.kind.raw_type()) << field::TYPE_SHIFT)
            | (u64::from(self.kind.is_response()) << field::RESPONSE_SHIFT)
            | ((words as u64) << field::WORDS_SHIFT)
            | ((pad as u64) << field::PAD_SHIFT)
            | (u64::from(self.tid) << field::TID_SHIFT);
        let mut packet = Packet::new_unchecked(out);
        packet.set_header_word(word);
        packet.set_address(self.addr);
        match self.kind {
            PacketKind::Nack(reason) => packet.payload_mut().copy_from_slice(&[reason.code()]),
            _ => packet.payload_mut().copy_from_slice(self.payload),
        }
        packet.fill_crc();
        Ok(())
    }

    /// Emits into a new vector of exactly [`PacketRepr::buffer_len`] bytes.
    ///
    /// Errors: the format errors of [`PacketRepr::emit`].
    pub fn to_vec(&self) -> Result<Vec<u8>, PacketError> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut buf)?;
        Ok(buf)
    }
}

impl fmt::Display for PacketRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{} tid{} {} @{}",
            self.src, self.dst, self.tid, self.kind, self.addr
        )?;
        if self.kind.carries_data() {
            write!(f, " ({} bytes)", self.payload.len())?;
        }
        Ok(())
    }
}

/// Fuzzing oracle, shared by the cargo-fuzz target and the proptests.
///
/// Runs `data` through [`Packet::new_checked`], every getter, and
/// [`PacketRepr::parse`] with ServerNet2 limits. None of that may panic. If
/// parsing succeeds, the repr must pass [`PacketRepr::check`] and emit
/// exactly `data` again.
///
/// # Panics
///
/// Only if one of those properties fails, i.e. on a bug in this module.
pub fn fuzz_check(data: &[u8]) {
    let limits = PacketLimits::from(Generation::ServerNet2);
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let _ = (
        packet.dst_id(),
        packet.src_id(),
        packet.raw_type(),
        packet.is_response(),
        packet.length_words(),
        packet.pad(),
        packet.data_len(),
        packet.tid(),
        packet.reserved(),
        packet.address(),
        packet.payload(),
        packet.verify_crc(),
    );
    if let Ok(repr) = PacketRepr::parse(&packet, limits) {
        if let Err(e) = repr.check(limits) {
            panic!("parsed repr {repr:?} fails check: {e}");
        }
        assert_eq!(
            repr.buffer_len(),
            data.len(),
            "buffer_len of parsed repr {repr:?}"
        );
        match repr.to_vec() {
            Ok(out) => assert_eq!(out, data, "round trip changed the bytes of {repr:?}"),
            Err(e) => panic!("parsed repr {repr:?} does not emit: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WindowKey;
    use proptest::prelude::*;

    const LENGTHS: [usize; 9] = [0, 1, 3, 4, 5, 63, 64, 511, 512];

    fn ep(raw: u32) -> EndpointId {
        EndpointId::new(raw).unwrap()
    }

    fn addr() -> FabricAddr {
        FabricAddr::new(WindowKey::new(0x123, 0x456).unwrap(), 0x1000)
    }

    fn sn2() -> PacketLimits {
        Generation::ServerNet2.into()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// A raw packet with a valid CRC, whatever the header says.
    fn raw(word: u64, address: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; wire_len(payload.len())];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_header_word(word);
        p.set_address(FabricAddr(address));
        p.payload_mut().copy_from_slice(payload);
        p.fill_crc();
        buf
    }

    /// Header word from fields.
    fn word(ty: u8, response: bool, words: u8, pad: u8, tid: u8) -> u64 {
        (5u64 << field::DST_SHIFT)
            | (9u64 << field::SRC_SHIFT)
            | (u64::from(ty) << field::TYPE_SHIFT)
            | (u64::from(response) << field::RESPONSE_SHIFT)
            | (u64::from(words) << field::WORDS_SHIFT)
            | (u64::from(pad) << field::PAD_SHIFT)
            | (u64::from(tid) << field::TID_SHIFT)
    }

    fn parse(bytes: &[u8], limits: PacketLimits) -> Result<PacketRepr<'_>, PacketError> {
        PacketRepr::parse(&Packet::new_unchecked(bytes), limits)
    }

    fn all_kinds<'a>(payload: &'a [u8]) -> Vec<PacketRepr<'a>> {
        let (d, s, a) = (ep(0xABCDE), ep(0x12), addr());
        let len = payload.len() as u16;
        let mut v = vec![
            PacketRepr::read_request(d, s, 3, a, len).unwrap(),
            PacketRepr::write_request(d, s, 4, a, payload).unwrap(),
            PacketRepr::read_response(d, s, 15, a, payload).unwrap(),
            PacketRepr::write_ack(d, s, 0, a).unwrap(),
        ];
        for r in NackReason::ALL {
            v.push(PacketRepr::nack(d, s, 7, a, r).unwrap());
        }
        v
    }

    #[test]
    fn round_trip_every_kind_and_length() {
        for len in LENGTHS {
            let payload = data(len);
            for repr in all_kinds(&payload) {
                let bytes = repr.to_vec().unwrap();
                assert_eq!(bytes.len(), repr.buffer_len());
                let packet = Packet::new_checked(&bytes[..]).unwrap();
                assert!(packet.verify_crc());
                assert_eq!(packet.data_len(), repr.data_len());
                let parsed = PacketRepr::parse(&packet, sn2()).unwrap();
                assert_eq!(parsed, repr, "len {len}");
                fuzz_check(&bytes);
            }
        }
    }

    #[test]
    fn wire_len_and_payload_on_the_wire() {
        assert_eq!(OVERHEAD, 20);
        assert_eq!(wire_len(0), 20);
        assert_eq!(wire_len(512), 532);
        let payload = data(100);
        let lens: Vec<usize> = all_kinds(&payload).iter().map(|r| r.buffer_len()).collect();
        assert_eq!(&lens[..4], &[20, 120, 120, 20]);
        assert!(lens[4..].iter().all(|&l| l == 21));
    }

    // dst 0x12345, src 0x0abcd, write request, words 2, pad 3 (n = 5), tid 9,
    // key 0x123 gen 0x456, offset 0x1000, data de ad be ef 42.
    const WRITE_BYTES: [u8; 25] = [
        0x12, 0x34, 0x50, 0xab, 0xcd, 0x20, 0x17, 0x20, // header word
        0x00, 0x12, 0x34, 0x56, 0x00, 0x00, 0x10, 0x00, // address
        0xde, 0xad, 0xbe, 0xef, 0x42, // payload
        0x56, 0x7b, 0x9f, 0x37, // CRC-32
    ];

    #[test]
    fn fixed_bytes_write_request() {
        let p = Packet::new_checked(&WRITE_BYTES[..]).unwrap();
        assert_eq!(p.header_word(), 0x1234_50ab_cd20_1720);
        assert_eq!(p.dst_id(), 0x12345);
        assert_eq!(p.src_id(), 0x0abcd);
        assert_eq!(p.raw_type(), TYPE_WRITE);
        assert!(!p.is_response());
        assert_eq!(p.length_words(), 2);
        assert_eq!(p.pad(), 3);
        assert_eq!(p.data_len(), 5);
        assert_eq!(p.tid(), 9);
        assert_eq!(p.reserved(), 0);
        assert_eq!(p.address(), addr());
        assert_eq!(p.address().key(), WindowKey::new(0x123, 0x456).unwrap());
        assert_eq!(p.address().offset(), 0x1000);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef, 0x42]);
        assert_eq!(p.stored_crc(), 0x567b_9f37);
        assert_eq!(p.compute_crc(), 0x567b_9f37);
        assert!(p.verify_crc());

        let repr = PacketRepr::parse(&p, Generation::ServerNet1.into()).unwrap();
        let expected = PacketRepr::write_request(
            ep(0x12345),
            ep(0x0abcd),
            9,
            addr(),
            &[0xde, 0xad, 0xbe, 0xef, 0x42],
        )
        .unwrap();
        assert_eq!(repr, expected);
        assert_eq!(expected.to_vec().unwrap(), WRITE_BYTES);
    }

    // dst 1, src 0xfffff, nack (stale key), words 1, pad 3, tid 15,
    // address 0xffffffff_00000000.
    const NACK_BYTES: [u8; 21] = [
        0x00, 0x00, 0x1f, 0xff, 0xff, 0xf8, 0x0f, 0xe0, // header word
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, // address
        0x06, // reason: stale key
        0xcd, 0x6d, 0xe6, 0xa1, // CRC-32
    ];

    #[test]
    fn fixed_bytes_nack() {
        let p = Packet::new_checked(&NACK_BYTES[..]).unwrap();
        assert_eq!(p.dst_id(), 1);
        assert_eq!(p.src_id(), MAX_ENDPOINT_ID);
        assert_eq!(p.raw_type(), TYPE_NACK);
        assert!(p.is_response());
        assert_eq!(
            (p.length_words(), p.pad(), p.data_len(), p.tid()),
            (1, 3, 1, 15)
        );
        assert_eq!(p.address(), FabricAddr(0xffff_ffff_0000_0000));
        assert_eq!(p.payload(), &[6]);
        assert_eq!(p.stored_crc(), 0xcd6d_e6a1);
        let repr = PacketRepr::parse(&p, sn2()).unwrap();
        let expected = PacketRepr::nack(
            ep(1),
            ep(MAX_ENDPOINT_ID),
            15,
            FabricAddr(0xffff_ffff_0000_0000),
            NackReason::StaleKey,
        )
        .unwrap();
        assert_eq!(repr, expected);
        assert!(repr.payload.is_empty());
        assert_eq!(expected.to_vec().unwrap(), NACK_BYTES);
    }

    #[test]
    fn rejects_truncated() {
        for len in 0..OVERHEAD {
            let buf = vec![0; len];
            assert_eq!(
                Packet::new_checked(&buf[..]),
                Err(PacketError::Truncated { len })
            );
            assert_eq!(parse(&buf, sn2()), Err(PacketError::Truncated { len }));
        }
        // A cut-off valid packet.
        assert_eq!(
            Packet::new_checked(&WRITE_BYTES[..24]).unwrap_err(),
            PacketError::LengthMismatch {
                declared: 25,
                actual: 24
            }
        );
    }

    #[test]
    fn rejects_length_mismatch() {
        // Header says 5 bytes, buffer has 8.
        let bytes = raw(word(TYPE_WRITE, false, 2, 3, 0), 0, &data(8));
        assert_eq!(
            parse(&bytes, sn2()),
            Err(PacketError::LengthMismatch {
                declared: 25,
                actual: 28
            })
        );
        // Header says 8 bytes, buffer has none.
        let bytes = raw(word(TYPE_READ, true, 2, 0, 0), 0, &[]);
        assert_eq!(
            parse(&bytes, sn2()),
            Err(PacketError::LengthMismatch {
                declared: 28,
                actual: 20
            })
        );
        // A trailing byte after a valid packet.
        let mut long = WRITE_BYTES.to_vec();
        long.push(0);
        assert_eq!(
            parse(&long, sn2()),
            Err(PacketError::LengthMismatch {
                declared: 25,
                actual: 26
            })
        );
    }

    #[test]
    fn payload_limit_depends_on_generation() {
        let payload = data(65);
        let sn1 = PacketLimits::from(Generation::ServerNet1);
        for repr in [
            PacketRepr::write_request(ep(1), ep(2), 0, addr(), &payload).unwrap(),
            PacketRepr::read_response(ep(1), ep(2), 0, addr(), &payload).unwrap(),
            PacketRepr::read_request(ep(1), ep(2), 0, addr(), 65).unwrap(),
        ] {
            let bytes = repr.to_vec().unwrap();
            assert_eq!(
                parse(&bytes, sn1),
                Err(PacketError::PayloadTooLarge { len: 65, max: 64 })
            );
            assert_eq!(
                repr.check(sn1),
                Err(PacketError::PayloadTooLarge { len: 65, max: 64 })
            );
            assert_eq!(parse(&bytes, sn2()), Ok(repr));
            assert_eq!(parse(&bytes, Generation::ServerNet3.into()), Ok(repr));
        }
        let at_limit = PacketRepr::write_request(ep(1), ep(2), 0, addr(), &payload[..64]).unwrap();
        assert_eq!(parse(&at_limit.to_vec().unwrap(), sn1), Ok(at_limit));
        let big = data(513);
        let repr = PacketRepr::write_request(ep(1), ep(2), 0, addr(), &big).unwrap();
        assert_eq!(
            parse(&repr.to_vec().unwrap(), sn2()),
            Err(PacketError::PayloadTooLarge { len: 513, max: 512 })
        );
        assert_eq!(
            parse(&repr.to_vec().unwrap(), PacketLimits::FORMAT_MAX),
            Ok(repr)
        );
    }

    #[test]
    fn rejects_bad_type() {
        for ty in 0..16u8 {
            if [TYPE_READ, TYPE_WRITE, TYPE_NACK].contains(&ty) {
                continue;
            }
            for response in [false, true] {
                let bytes = raw(word(ty, response, 1, 0, 0), 0, &[1, 2, 3, 4]);
                assert_eq!(parse(&bytes, sn2()), Err(PacketError::BadType(ty)));
            }
        }
    }

    #[test]
    fn rejects_reserved_bits() {
        for bits in [1u8, 0x10, 0x1f] {
            let bytes = raw(word(TYPE_WRITE, true, 0, 0, 0) | u64::from(bits), 0, &[]);
            assert_eq!(parse(&bytes, sn2()), Err(PacketError::ReservedBits(bits)));
        }
    }

    #[test]
    fn rejects_bad_pad() {
        for pad in 1..=3 {
            for (ty, response) in [
                (TYPE_READ, false),
                (TYPE_WRITE, false),
                (TYPE_READ, true),
                (TYPE_WRITE, true),
            ] {
                let bytes = raw(word(ty, response, 0, pad, 0), 0, &[]);
                assert_eq!(parse(&bytes, sn2()), Err(PacketError::BadPad));
            }
        }
    }

    #[test]
    fn rejects_bad_crc_for_every_single_bit_flip() {
        let payload = data(5);
        for repr in all_kinds(&payload) {
            let good = repr.to_vec().unwrap();
            for bit in 0..good.len() * 8 {
                let mut bad = good.clone();
                bad[bit / 8] ^= 0x80 >> (bit % 8);
                let result = parse(&bad, sn2());
                assert!(
                    result.is_err(),
                    "{repr} with bit {bit} flipped parsed as {result:?}"
                );
                fuzz_check(&bad);
            }
            // A flip outside the header's length fields is always reported as a bad CRC.
            let mut bad = good.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(matches!(
                parse(&bad, sn2()),
                Err(PacketError::BadCrc { .. })
            ));
            bad = good.clone();
            bad[10] ^= 0x40;
            assert!(matches!(
                parse(&bad, sn2()),
                Err(PacketError::BadCrc { .. })
            ));
        }
    }

    #[test]
    fn rejects_nack_with_response_bit_clear() {
        let bytes = raw(word(TYPE_NACK, false, 1, 3, 0), 0, &[1]);
        assert_eq!(parse(&bytes, sn2()), Err(PacketError::NackNotResponse));
    }

    #[test]
    fn rejects_bad_nack_reason() {
        for code in [0u8, 8, 0xff] {
            let bytes = raw(word(TYPE_NACK, true, 1, 3, 0), 0, &[code]);
            assert_eq!(parse(&bytes, sn2()), Err(PacketError::BadNackReason(code)));
        }
    }

    #[test]
    fn rejects_nack_of_wrong_length() {
        let bytes = raw(word(TYPE_NACK, true, 0, 0, 0), 0, &[]);
        assert_eq!(
            parse(&bytes, sn2()),
            Err(PacketError::NackLength { len: 0 })
        );
        let bytes = raw(word(TYPE_NACK, true, 1, 2, 0), 0, &[1, 0]);
        assert_eq!(
            parse(&bytes, sn2()),
            Err(PacketError::NackLength { len: 2 })
        );
    }

    #[test]
    fn rejects_write_ack_with_data() {
        let bytes = raw(word(TYPE_WRITE, true, 1, 0, 0), 0, &[0; 4]);
        assert_eq!(parse(&bytes, sn2()), Err(PacketError::AckWithData));
    }

    #[test]
    fn rejects_read_request_carrying_payload() {
        let bytes = raw(word(TYPE_READ, false, 1, 0, 0), 0, &[0; 4]);
        assert_eq!(
            parse(&bytes, sn2()),
            Err(PacketError::ReadRequestWithPayload { len: 4 })
        );
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            PacketError::ReadRequestWithPayload { len: 4 }
        );
    }

    #[test]
    fn constructors_and_emit_reject_what_parse_would() {
        let a = addr();
        assert_eq!(
            PacketRepr::write_ack(ep(1), ep(2), 16, a),
            Err(PacketError::BadTid(16))
        );
        assert_eq!(
            PacketRepr::read_request(ep(1), ep(2), 0, a, 1021),
            Err(PacketError::PayloadTooLarge {
                len: 1021,
                max: 1020
            })
        );
        let big = data(1021);
        assert_eq!(
            PacketRepr::write_request(ep(1), ep(2), 0, a, &big),
            Err(PacketError::PayloadTooLarge {
                len: 1021,
                max: 1020
            })
        );
        let max = PacketRepr::write_request(ep(1), ep(2), 0, a, &big[..1020]).unwrap();
        assert_eq!(
            parse(&max.to_vec().unwrap(), PacketLimits::FORMAT_MAX),
            Ok(max)
        );

        // Hand-built reprs that break the format: check reports them, emit panics.
        let fmt = PacketLimits::FORMAT_MAX;
        let mut repr = PacketRepr::write_ack(ep(1), ep(2), 0, a).unwrap();
        repr.payload = &[1, 2];
        assert_eq!(
            repr.check(fmt),
            Err(PacketError::UnexpectedPayload {
                kind: "write ack",
                len: 2
            })
        );
        repr.kind = PacketKind::Nack(NackReason::NoWindow);
        assert!(matches!(
            repr.check(fmt),
            Err(PacketError::UnexpectedPayload { .. })
        ));
        repr.kind = PacketKind::ReadRequest { len: 2 };
        assert!(matches!(
            repr.check(fmt),
            Err(PacketError::UnexpectedPayload { .. })
        ));
        repr.payload = &[];
        repr.tid = 200;
        assert_eq!(repr.check(fmt), Err(PacketError::BadTid(200)));
        repr.tid = 0;
        repr.kind = PacketKind::ReadRequest { len: 1021 };
        assert_eq!(
            repr.check(fmt),
            Err(PacketError::PayloadTooLarge {
                len: 1021,
                max: 1020
            })
        );

        let repr = PacketRepr::write_request(ep(1), ep(2), 0, a, &[1, 2, 3]).unwrap();
        // A longer buffer: only the first buffer_len bytes are written.
        let mut buf = [0xaau8; 30];
        repr.emit(&mut buf).unwrap();
        assert_eq!(&buf[23..], &[0xaa; 7]);
        assert_eq!(parse(&buf[..23], sn2()), Ok(repr));
    }

    #[test]
    fn emit_rejects_what_check_rejects() {
        let mut repr = PacketRepr::write_ack(ep(1), ep(2), 0, addr()).unwrap();
        repr.tid = 16;
        assert_eq!(repr.to_vec(), Err(PacketError::BadTid(16)));
        repr.tid = 0;
        repr.payload = &[1];
        assert_eq!(
            repr.to_vec(),
            Err(PacketError::UnexpectedPayload {
                kind: "write ack",
                len: 1
            })
        );
        let repr = PacketRepr::write_request(ep(1), ep(2), 0, addr(), &[1, 2, 3]).unwrap();
        let mut buf = [0xaau8; 22];
        assert_eq!(
            repr.emit(&mut buf),
            Err(PacketError::BufferTooShort {
                len: 22,
                needed: 23
            })
        );
        assert_eq!(buf, [0xaa; 22], "nothing is written on error");
    }

    #[test]
    fn limits() {
        assert_eq!(
            PacketLimits::new(0),
            Err(PacketError::BadLimit { max_payload: 0 })
        );
        assert_eq!(
            PacketLimits::new(1021),
            Err(PacketError::BadLimit { max_payload: 1021 })
        );
        assert_eq!(PacketLimits::new(1020), Ok(PacketLimits::FORMAT_MAX));
        assert_eq!(PacketLimits::new(1).unwrap().max_payload, 1);
        let maxes: Vec<u16> = Generation::ALL
            .iter()
            .map(|g| PacketLimits::from(*g).max_payload)
            .collect();
        assert_eq!(maxes, [64, 512, 512]);
    }

    #[test]
    fn response_helpers() {
        let a = addr();
        let read = PacketRepr::read_request(ep(1), ep(2), 5, a, 3).unwrap();
        let resp = read.read_response_to(&[7, 8, 9]).unwrap();
        assert_eq!(
            (resp.dst, resp.src, resp.tid, resp.addr),
            (ep(2), ep(1), 5, a)
        );
        assert_eq!(resp.kind, PacketKind::ReadResponse);
        assert_eq!(
            read.read_response_to(&[7]),
            Err(PacketError::ResponseLength {
                requested: 3,
                len: 1
            })
        );
        assert!(matches!(
            read.write_ack_to(),
            Err(PacketError::NotAnswerable { .. })
        ));
        let nack = read.nack_to(NackReason::NotReadable).unwrap();
        assert_eq!(
            (nack.dst, nack.src, nack.kind),
            (ep(2), ep(1), PacketKind::Nack(NackReason::NotReadable))
        );
        assert!(matches!(
            nack.nack_to(NackReason::NoWindow),
            Err(PacketError::NotAnswerable { .. })
        ));

        let write = PacketRepr::write_request(ep(1), ep(2), 6, a, &[1]).unwrap();
        let ack = write.write_ack_to().unwrap();
        assert_eq!(
            (ack.dst, ack.src, ack.tid, ack.addr, ack.kind),
            (ep(2), ep(1), 6, a, PacketKind::WriteAck)
        );
        assert!(matches!(
            write.read_response_to(&[]),
            Err(PacketError::NotAnswerable { .. })
        ));
        assert_eq!(
            write.read_response_to(&[]).unwrap_err().to_string(),
            "a read response cannot answer a write request"
        );
    }

    #[test]
    fn setters_touch_only_their_field() {
        let mut buf = WRITE_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_dst_id(0xF_FFFF);
        p.set_src_id(0);
        p.set_raw_type(TYPE_READ);
        p.set_response(true);
        p.set_length_words(0xFF);
        p.set_pad(0);
        p.set_tid(0);
        p.set_reserved(0x1F);
        p.set_address(FabricAddr(1));
        assert_eq!(p.dst_id(), 0xF_FFFF);
        assert_eq!(p.src_id(), 0);
        assert_eq!(p.raw_type(), TYPE_READ);
        assert!(p.is_response());
        assert_eq!(p.length_words(), 0xFF);
        assert_eq!(p.pad(), 0);
        assert_eq!(p.tid(), 0);
        assert_eq!(p.reserved(), 0x1F);
        assert_eq!(p.address(), FabricAddr(1));
        // Values wider than the field are masked.
        p.set_tid(0x1F);
        p.set_dst_id(0x10_0001);
        assert_eq!(
            (p.tid(), p.dst_id(), p.src_id(), p.reserved()),
            (0xF, 1, 0, 0x1F)
        );
        p.payload_mut()[0] = 0;
        p.set_crc(0);
        assert!(!p.verify_crc());
        p.fill_crc();
        assert!(p.verify_crc());
        assert_eq!(p.into_inner()[16], 0);
    }

    #[test]
    fn getters_do_not_panic_after_check_len() {
        let buf = [0u8; OVERHEAD];
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), &[] as &[u8]);
        assert_eq!((p.data_len(), p.stored_crc()), (0, 0));
        // words 0, pad 3: data_len saturates instead of underflowing.
        let bytes = raw(word(TYPE_WRITE, false, 0, 3, 0), 0, &[]);
        assert_eq!(Packet::new_checked(&bytes[..]).unwrap().data_len(), 0);
    }

    #[test]
    fn errors_say_what_is_allowed() {
        assert_eq!(
            PacketError::Truncated { len: 3 }.to_string(),
            "packet is 3 bytes, shorter than the 20-byte minimum (header + address + CRC)"
        );
        assert_eq!(
            PacketError::BadType(3).to_string(),
            "transaction type 0x3 is invalid; allowed are 0x1 (read), 0x2 (write), 0xf (nack)"
        );
        assert_eq!(
            PacketError::PayloadTooLarge { len: 65, max: 64 }.to_string(),
            "payload of 65 bytes exceeds the maximum of 64"
        );
    }

    #[test]
    fn display() {
        let r = PacketRepr::write_request(ep(1), ep(2), 3, addr(), &[0; 4]).unwrap();
        assert_eq!(
            r.to_string(),
            "ep2->ep1 tid3 write request @key291.g1110+0x1000 (4 bytes)"
        );
    }

    #[derive(Debug, Clone)]
    enum KindSpec {
        Read(u16),
        Write,
        Response,
        Ack,
        Nack(NackReason),
    }

    fn kind_spec() -> impl Strategy<Value = KindSpec> {
        prop_oneof![
            (0u16..=1020).prop_map(KindSpec::Read),
            Just(KindSpec::Write),
            Just(KindSpec::Response),
            Just(KindSpec::Ack),
            prop::sample::select(NackReason::ALL.to_vec()).prop_map(KindSpec::Nack),
        ]
    }

    #[allow(clippy::type_complexity)]
    fn repr_parts() -> impl Strategy<Value = (u32, u32, u8, u64, KindSpec, Vec<u8>)> {
        (
            0..=MAX_ENDPOINT_ID,
            0..=MAX_ENDPOINT_ID,
            0..TID_COUNT,
            any::<u64>(),
            kind_spec(),
            prop::collection::vec(any::<u8>(), 0..=1020),
        )
    }

    fn build<'a>(parts: &'a (u32, u32, u8, u64, KindSpec, Vec<u8>)) -> PacketRepr<'a> {
        let (d, s, tid, a, kind, payload) = parts;
        let (d, s, a) = (ep(*d), ep(*s), FabricAddr(*a));
        match kind {
            KindSpec::Read(len) => PacketRepr::read_request(d, s, *tid, a, *len),
            KindSpec::Write => PacketRepr::write_request(d, s, *tid, a, payload),
            KindSpec::Response => PacketRepr::read_response(d, s, *tid, a, payload),
            KindSpec::Ack => PacketRepr::write_ack(d, s, *tid, a),
            KindSpec::Nack(r) => PacketRepr::nack(d, s, *tid, a, *r),
        }
        .unwrap()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            fuzz_check(&bytes);
        }

        #[test]
        fn arbitrary_bytes_with_valid_crc_never_panic(
            word in any::<u64>(),
            address in any::<u64>(),
            payload in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            // Fix the CRC and the length so that parse gets past the first checks.
            let mut bytes = raw(word, address, &payload);
            fuzz_check(&bytes);
            let p = Packet::new_unchecked(&bytes[..]);
            let wire = if p.raw_type() == TYPE_READ && !p.is_response() { 0 } else { p.data_len() };
            bytes = raw(word, address, &data(wire));
            fuzz_check(&bytes);
        }

        #[test]
        fn valid_reprs_round_trip(parts in repr_parts()) {
            let repr = build(&parts);
            let bytes = repr.to_vec().unwrap();
            prop_assert_eq!(bytes.len(), repr.buffer_len());
            for limits in [PacketLimits::FORMAT_MAX, Generation::ServerNet1.into(), sn2()] {
                match repr.check(limits) {
                    Ok(()) => prop_assert_eq!(parse(&bytes, limits), Ok(repr)),
                    Err(e) => prop_assert_eq!(parse(&bytes, limits), Err(e)),
                }
            }
            fuzz_check(&bytes);
        }

        #[test]
        fn single_bit_flips_never_parse(parts in repr_parts(), bit in any::<prop::sample::Index>()) {
            let repr = build(&parts);
            let mut bytes = repr.to_vec().unwrap();
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 0x80 >> (bit % 8);
            let result = parse(&bytes, PacketLimits::FORMAT_MAX);
            prop_assert!(result.is_err(), "bit {} flipped, parsed {:?}", bit, result);
            fuzz_check(&bytes);
        }
    }
}
