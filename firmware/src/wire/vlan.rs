//! IEEE 802.1Q VLAN tag (smoltcp has no view for it).
//!
//! The 4 bytes that follow an ethertype of 0x8100 (or 0x88a8 for a service
//! tag): 16-bit tag control information (PCP 3 bits, DEI 1 bit, VID 12 bits),
//! then the encapsulated ethertype.

/// Ethertype of a customer VLAN tag (802.1Q).
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethertype of a service VLAN tag (802.1ad, QinQ outer tag).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Length of a tag.
pub const TAG_LEN: usize = 4;

mod field {
    pub const TCI: core::ops::Range<usize> = 0..2;
    pub const INNER: core::ops::Range<usize> = 2..4;
}

/// Error of a VLAN view: the buffer is shorter than a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VLAN tag truncated: {got} bytes, need {TAG_LEN}")]
pub struct Truncated {
    /// Bytes present.
    pub got: usize,
}

/// A zero-copy view of a VLAN tag and what follows it.
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// A view without checking the length (accessors may panic on short buffers).
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// A view, after checking that a whole tag is present.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks that no accessor will panic.
    pub fn check_len(&self) -> Result<(), Truncated> {
        let got = self.buffer.as_ref().len();
        if got < TAG_LEN {
            Err(Truncated { got })
        } else {
            Ok(())
        }
    }

    /// Tag control information.
    pub fn tci(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TCI];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop-eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// The encapsulated ethertype.
    pub fn inner_ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::INNER];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// What follows the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[TAG_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the tag control information.
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the encapsulated ethertype.
    pub fn set_inner_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[field::INNER].copy_from_slice(&t.to_be_bytes());
    }
}

/// The parsed content of a VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanRepr {
    /// Priority code point (0..=7).
    pub pcp: u8,
    /// Drop-eligible indicator.
    pub dei: bool,
    /// VLAN identifier (0..=4095).
    pub vid: u16,
    /// The encapsulated ethertype.
    pub inner_ethertype: u16,
}

impl VlanRepr {
    /// Reads a tag.
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Result<Self, Truncated> {
        tag.check_len()?;
        Ok(VlanRepr {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vid: tag.vid(),
            inner_ethertype: tag.inner_ethertype(),
        })
    }

    /// Bytes [`VlanRepr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        TAG_LEN
    }

    /// Writes the tag (exactly [`VlanRepr::buffer_len`] bytes; out-of-range
    /// PCP and VID values are masked to their field widths).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        let tci =
            (u16::from(self.pcp & 7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff);
        tag.set_tci(tci);
        tag.set_inner_ethertype(self.inner_ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_bytes() {
        let bytes = [0xa0, 0x64, 0x08, 0x00, 0xde];
        let tag = VlanTag::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (tag.pcp(), tag.dei(), tag.vid(), tag.inner_ethertype()),
            (5, false, 100, 0x0800)
        );
        assert_eq!(tag.payload(), &[0xde]);
    }

    #[test]
    fn round_trip() {
        let r = VlanRepr {
            pcp: 3,
            dei: true,
            vid: 4094,
            inner_ethertype: 0x86dd,
        };
        let mut buf = [0u8; TAG_LEN];
        r.emit(&mut VlanTag::new_unchecked(&mut buf[..]));
        assert_eq!(
            VlanRepr::parse(&VlanTag::new_checked(&buf[..]).unwrap()).unwrap(),
            r
        );
    }

    #[test]
    fn truncated() {
        assert_eq!(
            VlanTag::new_checked(&[0u8; 3][..]).unwrap_err(),
            Truncated { got: 3 }
        );
    }
}
