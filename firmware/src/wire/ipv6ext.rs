//! IPv6 extension headers the firmware walks to reach the transport header.
//!
//! smoltcp's own extension-header view takes the fragment header's reserved
//! byte for a length; the firmware needs exact per-header errors, so the two
//! views it needs are written here: the generic options/routing layout (next
//! header, length in 8-octet units not counting the first 8) and the fixed
//! 8-byte fragment header (RFC 8200 §4.5).

/// Next-header value of the hop-by-hop options header.
pub const HOP_BY_HOP: u8 = 0;
/// Next-header value of the routing header.
pub const ROUTING: u8 = 43;
/// Next-header value of the fragment header.
pub const FRAGMENT: u8 = 44;
/// Next-header value of the destination options header.
pub const DEST_OPTIONS: u8 = 60;
/// Next-header value that says nothing follows.
pub const NO_NEXT_HEADER: u8 = 59;
/// Length of the fragment header.
pub const FRAGMENT_LEN: usize = 8;

/// Error of an extension-header view: the buffer is shorter than the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("IPv6 extension header truncated: {got} bytes, need {need}")]
pub struct Truncated {
    /// Bytes present.
    pub got: usize,
    /// Bytes the header needs.
    pub need: usize,
}

/// A view of an options or routing extension header.
#[derive(Debug, Clone, Copy)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// A view without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        ExtHeader { buffer }
    }

    /// A view, after checking that the whole header is present.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks that the fixed part and the length it announces are present.
    pub fn check_len(&self) -> Result<(), Truncated> {
        let b = self.buffer.as_ref();
        if b.len() < 8 {
            return Err(Truncated {
                got: b.len(),
                need: 8,
            });
        }
        let need = self.header_len();
        if b.len() < need {
            Err(Truncated { got: b.len(), need })
        } else {
            Ok(())
        }
    }

    /// The next header's protocol number.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Length of this header in bytes: `(len field + 1) * 8`.
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[1]) + 1) * 8
    }

    /// What follows this header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// A view of the fragment header.
#[derive(Debug, Clone, Copy)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    /// A view without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        FragmentHeader { buffer }
    }

    /// A view, after checking that 8 bytes are present.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let v = Self::new_unchecked(buffer);
        let got = v.buffer.as_ref().len();
        if got < FRAGMENT_LEN {
            Err(Truncated {
                got,
                need: FRAGMENT_LEN,
            })
        } else {
            Ok(v)
        }
    }

    /// The next header's protocol number.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Offset of this fragment's data, in bytes.
    pub fn offset_bytes(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]]) & 0xfff8
    }

    /// More-fragments flag.
    pub fn more_fragments(&self) -> bool {
        self.buffer.as_ref()[3] & 1 != 0
    }

    /// Identification of the fragmented packet.
    pub fn ident(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// What follows the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[FRAGMENT_LEN..]
    }
}

/// The parsed content of a fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentRepr {
    /// The next header's protocol number.
    pub next_header: u8,
    /// Offset in bytes (a multiple of 8; lower bits are dropped on emit).
    pub offset_bytes: u16,
    /// More-fragments flag.
    pub more_fragments: bool,
    /// Identification.
    pub ident: u32,
}

impl FragmentRepr {
    /// Reads a fragment header.
    pub fn parse<T: AsRef<[u8]>>(h: &FragmentHeader<T>) -> Result<Self, Truncated> {
        let got = h.buffer.as_ref().len();
        if got < FRAGMENT_LEN {
            return Err(Truncated {
                got,
                need: FRAGMENT_LEN,
            });
        }
        Ok(FragmentRepr {
            next_header: h.next_header(),
            offset_bytes: h.offset_bytes(),
            more_fragments: h.more_fragments(),
            ident: h.ident(),
        })
    }

    /// Bytes [`FragmentRepr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        FRAGMENT_LEN
    }

    /// Writes the header into the first 8 bytes of `buf` (which must hold 8).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.next_header;
        buf[1] = 0;
        let off = (self.offset_bytes & 0xfff8) | u16::from(self.more_fragments);
        buf[2..4].copy_from_slice(&off.to_be_bytes());
        buf[4..8].copy_from_slice(&self.ident.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_round_trip_and_fixed_bytes() {
        let r = FragmentRepr {
            next_header: 6,
            offset_bytes: 1448,
            more_fragments: true,
            ident: 0xdead_beef,
        };
        let mut buf = [0u8; 8];
        r.emit(&mut buf);
        assert_eq!(buf, [6, 0, 0x05, 0xa9, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            FragmentRepr::parse(&FragmentHeader::new_checked(&buf[..]).unwrap()).unwrap(),
            r
        );
        assert!(FragmentHeader::new_checked(&buf[..7]).is_err());
    }

    #[test]
    fn ext_header_lengths() {
        let mut buf = [0u8; 24];
        buf[0] = 6;
        buf[1] = 1; // 16 bytes
        let h = ExtHeader::new_checked(&buf[..]).unwrap();
        assert_eq!(
            (h.next_header(), h.header_len(), h.payload().len()),
            (6, 16, 8)
        );
        assert_eq!(
            ExtHeader::new_checked(&buf[..15]).unwrap_err(),
            Truncated { got: 15, need: 16 }
        );
        assert_eq!(
            ExtHeader::new_checked(&buf[..5]).unwrap_err(),
            Truncated { got: 5, need: 8 }
        );
    }
}
