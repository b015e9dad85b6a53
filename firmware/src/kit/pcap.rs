//! A reader (and writer) for classic pcap files with Ethernet link type, so
//! filters can be tried on captured traffic. pcapng is recognised and refused
//! with a hint (`editcap -F pcap in.pcapng out.pcap` converts it).

/// Link type of Ethernet.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record accepted.
pub const MAX_RECORD: usize = 262_144;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapRecord {
    /// Capture time, nanoseconds since the epoch of the capture.
    pub ts_nanos: u64,
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// The bytes captured.
    pub data: Vec<u8>,
}

/// Why a file is not a usable pcap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// Ended inside a header or a record.
    #[error("truncated at byte {offset}: {what}")]
    Truncated {
        /// Where.
        offset: usize,
        /// In what.
        what: &'static str,
    },
    /// Not a pcap magic number.
    #[error("not a pcap file (magic 0x{0:08x})")]
    BadMagic(u32),
    /// A pcapng file.
    #[error("pcapng is not supported; convert with `editcap -F pcap in.pcapng out.pcap`")]
    PcapNg,
    /// Not Ethernet.
    #[error("link type {0} is not Ethernet (1)")]
    UnsupportedLinkType(u32),
    /// A record claims more than [`MAX_RECORD`] bytes.
    #[error("record at byte {offset} claims {len} bytes (limit {MAX_RECORD})")]
    RecordTooLarge {
        /// Where.
        offset: usize,
        /// Claimed length.
        len: usize,
    },
}

/// Parses a whole classic pcap file of Ethernet frames.
pub fn parse_pcap(bytes: &[u8]) -> Result<Vec<PcapRecord>, PcapError> {
    let (link, records) = parse_pcap_any(bytes)?;
    if link != LINKTYPE_ETHERNET {
        return Err(PcapError::UnsupportedLinkType(link));
    }
    Ok(records)
}

/// Parses a whole classic pcap file of any link type: the link type and
/// the records.
pub fn parse_pcap_any(bytes: &[u8]) -> Result<(u32, Vec<PcapRecord>), PcapError> {
    if bytes.len() < 24 {
        return Err(PcapError::Truncated {
            offset: bytes.len(),
            what: "file header",
        });
    }
    let raw = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let (big, nanos) = match raw {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        0x0a0d_0d0a => return Err(PcapError::PcapNg),
        m => return Err(PcapError::BadMagic(m)),
    };
    let u32_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let link = u32_at(20);
    let mut out = Vec::new();
    let mut off = 24;
    while off < bytes.len() {
        if bytes.len() - off < 16 {
            return Err(PcapError::Truncated {
                offset: off,
                what: "record header",
            });
        }
        let (sec, frac, incl, orig) = (
            u32_at(off),
            u32_at(off + 4),
            u32_at(off + 8) as usize,
            u32_at(off + 12),
        );
        if incl > MAX_RECORD {
            return Err(PcapError::RecordTooLarge {
                offset: off,
                len: incl,
            });
        }
        let start = off + 16;
        if bytes.len() - start < incl {
            return Err(PcapError::Truncated {
                offset: start,
                what: "record data",
            });
        }
        let frac_ns = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        out.push(PcapRecord {
            ts_nanos: u64::from(sec) * 1_000_000_000 + frac_ns,
            orig_len: orig,
            data: bytes[start..start + incl].to_vec(),
        });
        off = start + incl;
    }
    Ok((link, out))
}

/// Writes a classic, little-endian, nanosecond-resolution pcap stream of any
/// link type, record by record.
#[derive(Debug)]
pub struct PcapWriter<W: std::io::Write> {
    out: W,
    records: u64,
}

impl<W: std::io::Write> PcapWriter<W> {
    /// Starts a capture of `link_type` and writes the file header.
    pub fn new(mut out: W, link_type: u32) -> std::io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&(MAX_RECORD as u32).to_le_bytes());
        h.extend_from_slice(&link_type.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, records: 0 })
    }

    /// Writes one record stamped `ts_nanos` after the capture's epoch.
    pub fn record(&mut self, ts_nanos: u64, data: &[u8]) -> std::io::Result<()> {
        self.record_parts(ts_nanos, &[data])
    }

    /// Writes one record made of several pieces (a pseudo-header and a
    /// packet, say), cut at [`MAX_RECORD`] bytes.
    pub fn record_parts(&mut self, ts_nanos: u64, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let caplen = len.min(MAX_RECORD);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_nanos / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_nanos % 1_000_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        self.out.write_all(&h)?;
        let mut left = caplen;
        for p in parts {
            let n = p.len().min(left);
            self.out.write_all(&p[..n])?;
            left -= n;
        }
        self.records += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes Ethernet frames as a little-endian, nanosecond-resolution pcap file.
pub fn write_pcap(frames: &[(u64, &[u8])]) -> Vec<u8> {
    let write = || -> std::io::Result<Vec<u8>> {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET)?;
        for (ts, data) in frames {
            w.record(*ts, data)?;
        }
        w.finish()
    };
    // Writing into a Vec cannot fail.
    write().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let f1 = vec![1u8; 60];
        let f2 = vec![2u8; 14];
        let file = write_pcap(&[(1_500_000_123, &f1), (2_000_000_000, &f2)]);
        let recs = parse_pcap(&file).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ts_nanos, 1_500_000_123);
        assert_eq!(recs[1].data, f2);
        for cut in 1..file.len() {
            if cut != 24 && cut != 24 + 16 + 60 {
                assert!(parse_pcap(&file[..cut]).is_err(), "cut at {cut}");
            }
        }
        let mut bad = file.clone();
        bad[20] = 101;
        assert_eq!(parse_pcap(&bad), Err(PcapError::UnsupportedLinkType(101)));
        assert_eq!(
            parse_pcap(&[0x0a, 0x0d, 0x0d, 0x0a].repeat(8)),
            Err(PcapError::PcapNg)
        );
    }

    #[test]
    fn big_endian_microsecond_files() {
        let mut b = Vec::new();
        b.extend_from_slice(&0xa1b2_c3d4u32.to_be_bytes());
        b.extend_from_slice(&[0, 2, 0, 4]);
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_be_bytes());
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&[9, 9]);
        let r = parse_pcap(&b).unwrap();
        assert_eq!(
            r,
            vec![PcapRecord {
                ts_nanos: 3_000_007_000,
                orig_len: 2,
                data: vec![9, 9]
            }]
        );
    }
}
