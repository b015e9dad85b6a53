//! The Ethernet MAC: address filter, FCS, frame size limits and link speed.

use snet_fabric::time::Duration;

/// Bytes of the Ethernet header.
pub const ETH_HEADER: usize = 14;
/// Bytes of the frame check sequence.
pub const FCS_LEN: usize = 4;
/// Smallest frame on the wire, FCS included.
pub const MIN_FRAME: usize = 64;
/// Preamble, start delimiter and inter-frame gap: bytes of wire time every
/// frame costs besides its own.
pub const WIRE_OVERHEAD: u64 = 20;
/// Largest MTU (jumbo frames).
pub const MAX_MTU: u32 = 9216;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for a group (multicast or broadcast) address.
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The destination address of a frame (`None` if shorter than 6 bytes).
    pub fn destination(frame: &[u8]) -> Option<MacAddr> {
        frame
            .get(..6)
            .map(|b| MacAddr(b.try_into().expect("6 bytes")))
    }

    /// The source address of a frame.
    pub fn source(frame: &[u8]) -> Option<MacAddr> {
        frame
            .get(6..12)
            .map(|b| MacAddr(b.try_into().expect("6 bytes")))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (six hex bytes joined by ':')"
            ));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16)
                .ok()
                .filter(|_| p.len() == 2)
                .ok_or_else(|| format!("{s:?} is not a MAC address: {p:?} is not a hex byte"))?;
        }
        Ok(MacAddr(out))
    }
}

/// Ethernet link speeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkSpeed {
    bits_per_s: u64,
}

impl LinkSpeed {
    /// 100 Mbit/s.
    pub const MBIT_100: LinkSpeed = LinkSpeed::from_bits_per_s(100_000_000);
    /// 1 Gbit/s.
    pub const GBIT_1: LinkSpeed = LinkSpeed::from_bits_per_s(1_000_000_000);
    /// 10 Gbit/s.
    pub const GBIT_10: LinkSpeed = LinkSpeed::from_bits_per_s(10_000_000_000);
    /// 25 Gbit/s.
    pub const GBIT_25: LinkSpeed = LinkSpeed::from_bits_per_s(25_000_000_000);

    /// A speed in bits per second (at least 1).
    pub const fn from_bits_per_s(bits_per_s: u64) -> Self {
        LinkSpeed {
            bits_per_s: if bits_per_s == 0 { 1 } else { bits_per_s },
        }
    }

    /// Bits per second.
    pub fn bits_per_s(self) -> u64 {
        self.bits_per_s
    }

    /// Wire time of a frame of `len` bytes (FCS included), with preamble and
    /// inter-frame gap, exact to the picosecond.
    pub fn frame_time(self, len: usize) -> Duration {
        let bits = (len as u128 + WIRE_OVERHEAD as u128) * 8;
        Duration::from_ps((bits * 1_000_000_000_000 / self.bits_per_s as u128) as u64)
    }

    /// Frames per second at line rate for frames of `len` bytes (FCS included).
    pub fn line_rate_fps(self, len: usize) -> f64 {
        self.bits_per_s as f64 / ((len as u64 + WIRE_OVERHEAD) * 8) as f64
    }
}

impl std::fmt::Display for LinkSpeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.bits_per_s;
        if b % 1_000_000_000 == 0 {
            write!(f, "{} Gbit/s", b / 1_000_000_000)
        } else if b % 1_000_000 == 0 {
            write!(f, "{} Mbit/s", b / 1_000_000)
        } else {
            write!(f, "{b} bit/s")
        }
    }
}

/// The MAC's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacConfig {
    /// The adapter's own address.
    pub address: MacAddr,
    /// Further unicast addresses accepted besides `address`: an address the
    /// adapter took over from a failed one (see [`MacConfig::accept_unicast`]).
    pub unicast: Vec<MacAddr>,
    /// Multicast groups accepted besides broadcast.
    pub multicast: Vec<MacAddr>,
    /// Accept every frame regardless of its destination.
    pub promiscuous: bool,
    /// Largest IP packet (1500; up to [`MAX_MTU`] for jumbo frames).
    pub mtu: u32,
    /// Link speed.
    pub speed: LinkSpeed,
}

impl Default for MacConfig {
    fn default() -> Self {
        MacConfig {
            address: MacAddr([0x02, 0, 0, 0, 0, 0x10]),
            unicast: Vec::new(),
            multicast: Vec::new(),
            promiscuous: false,
            mtu: 1500,
            speed: LinkSpeed::GBIT_1,
        }
    }
}

impl MacConfig {
    /// Largest frame accepted or sent, FCS included (one VLAN tag allowed).
    pub fn max_frame(&self) -> usize {
        self.mtu as usize + ETH_HEADER + 4 + FCS_LEN
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(68..=MAX_MTU).contains(&self.mtu) {
            return Err(format!("mtu {} must be in 68..={MAX_MTU}", self.mtu));
        }
        if self.address.is_group() {
            return Err(format!(
                "adapter MAC {} is a group address (its first byte is odd)",
                self.address
            ));
        }
        if let Some(a) = self.unicast.iter().find(|a| a.is_group()) {
            return Err(format!(
                "extra unicast address {a} is a group address (its first byte is odd)"
            ));
        }
        Ok(())
    }

    /// Whether the address filter accepts a frame for `dst`.
    pub fn accepts(&self, dst: MacAddr) -> bool {
        self.promiscuous
            || dst == self.address
            || dst == MacAddr::BROADCAST
            || (dst.is_group() && self.multicast.contains(&dst))
            || (!dst.is_group() && self.unicast.contains(&dst))
    }

    /// Makes the filter accept frames for the unicast address `a` too (an
    /// address taken over from another adapter). Returns whether it was
    /// new; a group address is refused.
    pub fn accept_unicast(&mut self, a: MacAddr) -> Result<bool, String> {
        if a.is_group() {
            return Err(format!(
                "{a} is a group address (its first byte is odd), not a unicast one"
            ));
        }
        if a == self.address || self.unicast.contains(&a) {
            return Ok(false);
        }
        self.unicast.push(a);
        Ok(true)
    }

    /// Stops accepting the extra unicast address `a` (the adapter's own
    /// address stays). Returns whether it was accepted before.
    pub fn forget_unicast(&mut self, a: MacAddr) -> bool {
        let before = self.unicast.len();
        self.unicast.retain(|x| *x != a);
        self.unicast.len() != before
    }
}

/// The FCS (CRC-32 of IEEE 802.3) of `frame`, as its four wire bytes.
pub fn fcs(frame: &[u8]) -> [u8; 4] {
    crc32fast::hash(frame).to_le_bytes()
}

/// Appends the FCS to a frame.
pub fn append_fcs(frame: &mut Vec<u8>) {
    let f = fcs(frame);
    frame.extend_from_slice(&f);
}

/// Checks the FCS at the end of `frame` and returns the frame without it.
pub fn check_fcs(frame: &[u8]) -> Option<&[u8]> {
    let body_len = frame.len().checked_sub(FCS_LEN)?;
    let (body, tail) = frame.split_at(body_len);
    (fcs(body) == tail[..]).then_some(body)
}

/// Pads a frame (without FCS) to the 60-byte minimum.
pub fn pad_to_minimum(frame: &mut Vec<u8>) {
    if frame.len() < MIN_FRAME - FCS_LEN {
        frame.resize(MIN_FRAME - FCS_LEN, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcs_matches_the_ieee_check_value_and_detects_a_flipped_bit() {
        // CRC-32/IEEE of "123456789" is 0xCBF43926.
        assert_eq!(fcs(b"123456789"), 0xCBF4_3926u32.to_le_bytes());
        let mut f = vec![0xAAu8; 60];
        append_fcs(&mut f);
        assert_eq!(check_fcs(&f).map(<[u8]>::len), Some(60));
        f[10] ^= 0x04;
        assert_eq!(check_fcs(&f), None);
        assert_eq!(check_fcs(&[1, 2, 3]), None);
    }

    #[test]
    fn address_filter() {
        let mut m = MacConfig::default();
        let me = m.address;
        assert!(m.accepts(me));
        assert!(m.accepts(MacAddr::BROADCAST));
        let group = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        assert!(!m.accepts(group));
        assert!(!m.accepts(MacAddr([2, 0, 0, 0, 0, 0x99])));
        m.multicast.push(group);
        assert!(m.accepts(group));
        m.promiscuous = true;
        assert!(m.accepts(MacAddr([2, 0, 0, 0, 0, 0x99])));
    }

    #[test]
    fn extra_unicast_addresses_are_accepted_until_forgotten() {
        let mut m = MacConfig::default();
        let taken = MacAddr([2, 0, 0, 0, 0, 0x20]);
        let other = MacAddr([2, 0, 0, 0, 0, 0x21]);
        assert!(!m.accepts(taken));
        assert_eq!(m.accept_unicast(taken), Ok(true));
        assert_eq!(m.accept_unicast(taken), Ok(false), "already accepted");
        assert_eq!(m.accept_unicast(m.address), Ok(false), "its own address");
        assert!(m.accepts(taken));
        assert!(m.accepts(m.address), "the own address still works");
        assert!(!m.accepts(other));
        assert!(m.validate().is_ok());
        // A group address is no unicast address, in the call or the config.
        let group = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        assert!(m.accept_unicast(group).unwrap_err().contains("group"));
        assert!(!m.accepts(group));
        m.unicast.push(group);
        assert!(m.validate().unwrap_err().contains("group"));
        assert!(
            !m.accepts(group),
            "a group in the unicast list does not pass"
        );
        m.unicast.pop();
        assert!(m.forget_unicast(taken));
        assert!(!m.forget_unicast(taken));
        assert!(!m.accepts(taken));
        assert!(m.accepts(m.address));
    }

    #[test]
    fn line_rates() {
        // 64-byte frames at 1 Gbit/s: 672 ns each, 1.488 Mframes/s.
        assert_eq!(LinkSpeed::GBIT_1.frame_time(64), Duration::from_ns(672));
        assert!((LinkSpeed::GBIT_1.line_rate_fps(64) - 1_488_095.2).abs() < 1.0);
        // 1518-byte frames at 10 Gbit/s: 1230.4 ns.
        assert_eq!(LinkSpeed::GBIT_10.frame_time(1518).as_ps(), 1_230_400);
        assert_eq!(LinkSpeed::GBIT_10.to_string(), "10 Gbit/s");
    }

    #[test]
    fn config_checks_and_parsing() {
        let mut m = MacConfig::default();
        assert!(m.validate().is_ok());
        assert_eq!(m.max_frame(), 1522);
        m.mtu = 9000;
        assert!(m.validate().is_ok());
        m.mtu = 9217;
        assert!(m.validate().unwrap_err().contains("mtu"));
        m.mtu = 1500;
        m.address = MacAddr([1, 0, 0, 0, 0, 1]);
        assert!(m.validate().unwrap_err().contains("group"));
        assert_eq!(
            "02:00:00:00:00:10".parse::<MacAddr>(),
            Ok(MacAddr([2, 0, 0, 0, 0, 0x10]))
        );
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:zz".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:100".parse::<MacAddr>().is_err());
    }
}
