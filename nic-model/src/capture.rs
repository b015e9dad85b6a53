//! Packet captures a person can open: classic pcap files with nanosecond
//! timestamps (virtual time since the start of the run).
//!
//! - LAN frames use link type 1 (Ethernet) and are written without their
//!   FCS, as capture tools expect.
//! - Fabric packets use link type [`LINKTYPE_FABRIC`] (147, `USER0`): each
//!   record is a 4-byte pseudo-header followed by the packet exactly as it
//!   crossed the fabric (8-byte header, 8-byte address, payload, CRC-32):
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | pseudo-header version, 1 |
//! | 1 | plane: 0 = X, 1 = Y |
//! | 2 | direction: 0 = delivered to the destination endpoint |
//! | 3 | reserved, 0 |
//!
//! Wireshark and tshark open the LAN captures as they are; for the fabric
//! captures, `tools/wireshark/snet-fabric.lua` is a dissector (every header
//! field, the CRC check, malformed packets flagged) and
//! `tools/wireshark/README.md` says how to install it.

use std::io::{self, Write};

use snet_fabric::Plane;
use snet_fabric::time::Instant;

pub use snet_firmware::kit::pcap::{LINKTYPE_ETHERNET, PcapWriter};

/// Link type of fabric captures (`USER0`).
pub const LINKTYPE_FABRIC: u32 = 147;
/// Version byte of the fabric pseudo-header.
pub const FABRIC_PSEUDO_VERSION: u8 = 1;
/// Bytes of the fabric pseudo-header.
pub const FABRIC_PSEUDO_LEN: usize = 4;

/// Writes one fabric packet, after its pseudo-header, into a capture of
/// link type [`LINKTYPE_FABRIC`].
pub fn record_fabric<W: Write>(
    w: &mut PcapWriter<W>,
    at: Instant,
    plane: Plane,
    packet: &[u8],
) -> io::Result<()> {
    let pseudo = [
        FABRIC_PSEUDO_VERSION,
        match plane {
            Plane::X => 0,
            Plane::Y => 1,
        },
        0,
        0,
    ];
    w.record_parts(at.as_ns(), &[&pseudo, packet])
}

/// A capture target whose error is kept instead of aborting the run: the
/// first write error stops the capture and is reported by [`Capture::error`].
#[derive(Debug)]
pub struct Capture {
    writer: Option<PcapWriter<Box<dyn WriteDebug>>>,
    error: Option<String>,
}

/// `Write + Debug`, for boxed capture outputs.
pub trait WriteDebug: Write + std::fmt::Debug + Send {}
impl<T: Write + std::fmt::Debug + Send> WriteDebug for T {}

impl Capture {
    /// A capture of `link_type` into `out`.
    pub fn new(out: Box<dyn WriteDebug>, link_type: u32) -> io::Result<Self> {
        Ok(Capture {
            writer: Some(PcapWriter::new(out, link_type)?),
            error: None,
        })
    }

    /// A capture into a new file at `path` (buffered).
    pub fn create(path: &std::path::Path, link_type: u32) -> io::Result<Self> {
        let f = std::fs::File::create(path)?;
        Capture::new(Box::new(io::BufWriter::new(f)), link_type)
    }

    fn keep<T>(&mut self, r: io::Result<T>) {
        if let Err(e) = r {
            self.error = Some(e.to_string());
            self.writer = None;
        }
    }

    /// Records an Ethernet frame (without FCS).
    pub fn frame(&mut self, at: Instant, frame: &[u8]) {
        if let Some(w) = self.writer.as_mut() {
            let r = w.record(at.as_ns(), frame);
            self.keep(r);
        }
    }

    /// Records a fabric packet.
    pub fn fabric(&mut self, at: Instant, plane: Plane, packet: &[u8]) {
        if let Some(w) = self.writer.as_mut() {
            let r = record_fabric(w, at, plane, packet);
            self.keep(r);
        }
    }

    /// Records written.
    pub fn records(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.records())
    }

    /// The write error that stopped the capture, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Flushes the file.
    pub fn finish(self) -> io::Result<()> {
        if let Some(e) = self.error {
            return Err(io::Error::other(e));
        }
        if let Some(w) = self.writer {
            w.finish()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snet_firmware::kit::pcap::parse_pcap;

    #[test]
    fn ethernet_capture_reads_back_with_nanosecond_times() {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET).unwrap();
        w.record(1_500_000_123, &[1, 2, 3, 4]).unwrap();
        w.record(2_000_000_000, &[5; 60]).unwrap();
        assert_eq!(w.records(), 2);
        let bytes = w.finish().unwrap();
        let recs = parse_pcap(&bytes).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ts_nanos, 1_500_000_123);
        assert_eq!(recs[0].data, vec![1, 2, 3, 4]);
        assert_eq!(recs[1].data.len(), 60);
    }

    #[test]
    fn fabric_records_carry_the_pseudo_header() {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_FABRIC).unwrap();
        record_fabric(&mut w, Instant::from_ns(7), Plane::Y, &[9; 20]).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 147);
        let rec = &bytes[24..];
        assert_eq!(u32::from_le_bytes(rec[8..12].try_into().unwrap()), 24);
        assert_eq!(&rec[16..20], &[1, 1, 0, 0]);
        assert_eq!(&rec[20..], &[9; 20]);
    }

    /// Accepts `left` bytes, then fails.
    #[derive(Debug)]
    struct FailAfter {
        left: usize,
    }
    impl Write for FailAfter {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if b.len() > self.left {
                return Err(io::Error::other("disk full"));
            }
            self.left -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_stops_the_capture_and_is_reported() {
        assert!(Capture::new(Box::new(FailAfter { left: 3 }), LINKTYPE_ETHERNET).is_err());
        // Room for the file header and one 16+4-byte record.
        let mut c = Capture::new(Box::new(FailAfter { left: 44 }), LINKTYPE_ETHERNET).unwrap();
        c.frame(Instant::ZERO, &[1, 2, 3, 4]);
        assert_eq!(c.records(), 1);
        assert!(c.error().is_none());
        c.frame(Instant::ZERO, &[1, 2, 3, 4]);
        assert_eq!(c.error(), Some("disk full"));
        assert_eq!(c.records(), 0, "the stopped capture records nothing more");
        c.frame(Instant::ZERO, &[1]);
        assert!(c.finish().unwrap_err().to_string().contains("disk full"));
    }
}
