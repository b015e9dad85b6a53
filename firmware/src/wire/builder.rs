//! A packet builder for test frames: TCP, UDP, ICMP echo and ARP over IPv4 or
//! IPv6, optionally VLAN-tagged or split into fragments, with every checksum
//! filled in. The same code builds the adapter's fast-reset frames.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet,
    Icmpv6Packet, IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

use super::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ipv6ext, tcp_flags, vlan};

/// Why a frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Source and destination addresses of different families.
    #[error("source {src} and destination {dst} are not of the same IP family")]
    FamilyMismatch {
        /// The source.
        src: IpAddr,
        /// The destination.
        dst: IpAddr,
    },
    /// The IP packet would exceed 65535 bytes.
    #[error("payload of {len} bytes makes the IP packet exceed 65535 bytes")]
    PayloadTooLarge {
        /// Payload length asked for.
        len: usize,
    },
    /// Fragment size not a positive multiple of 8.
    #[error("fragment size {size} is not a positive multiple of 8")]
    BadFragmentSize {
        /// Size asked for.
        size: usize,
    },
    /// ARP is IPv4 only.
    #[error("ARP needs IPv4 addresses")]
    ArpNeedsIpv4,
    /// VLAN ID out of range (4095 is reserved).
    #[error("VLAN ID {vid} is outside 0..=4094")]
    BadVlanId {
        /// The VLAN ID.
        vid: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Tcp {
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
    },
    Udp,
    IcmpEcho,
    ArpRequest,
}

/// Builds one Ethernet frame (or a list of fragments).
///
/// ```
/// use snet_firmware::kit::PacketBuilder;
/// use snet_firmware::wire::tcp_flags;
/// let frame = PacketBuilder::tcp("198.18.5.7:40000".parse().unwrap(), "198.18.0.10:8080".parse().unwrap())
///     .flags(tcp_flags::SYN)
///     .build()
///     .unwrap();
/// assert_eq!(frame.len(), 14 + 20 + 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketBuilder {
    kind: Kind,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan_tci: Option<u16>,
    /// A VLAN ID given to [`PacketBuilder::vlan`] that is not one (≥ 4095).
    bad_vid: Option<u16>,
    hop_limit: u8,
    ident: u32,
    payload: Vec<u8>,
}

/// Longest payload a built frame may carry (its IP packet stays under 65535
/// bytes whatever the headers).
pub const MAX_PAYLOAD: usize = 65_000;

/// Default client-side MAC of built frames.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Default adapter MAC of built frames.
pub const ADAPTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

impl PacketBuilder {
    fn new(kind: Kind, src: SocketAddr, dst: SocketAddr) -> Self {
        PacketBuilder {
            kind,
            src: src.ip(),
            dst: dst.ip(),
            src_port: src.port(),
            dst_port: dst.port(),
            src_mac: CLIENT_MAC,
            dst_mac: ADAPTER_MAC,
            vlan_tci: None,
            bad_vid: None,
            hop_limit: 64,
            ident: 1,
            payload: Vec::new(),
        }
    }

    /// A TCP segment (flags default to ACK; sequence numbers to 1000 / 0).
    pub fn tcp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(
            Kind::Tcp {
                flags: tcp_flags::ACK,
                seq: 1000,
                ack: 0,
                window: 65535,
            },
            src,
            dst,
        )
    }

    /// A UDP datagram.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(Kind::Udp, src, dst)
    }

    /// An ICMP (IPv4) or ICMPv6 echo request.
    pub fn icmp_echo(src: IpAddr, dst: IpAddr) -> Self {
        Self::new(
            Kind::IcmpEcho,
            SocketAddr::new(src, 0),
            SocketAddr::new(dst, 0),
        )
    }

    /// An ARP request from `sender` asking for `target`, broadcast.
    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        let mut b = Self::new(
            Kind::ArpRequest,
            SocketAddr::new(sender.into(), 0),
            SocketAddr::new(target.into(), 0),
        );
        b.dst_mac = [0xff; 6];
        b
    }

    /// Sets the TCP flags ([`tcp_flags`]); ignored for other kinds.
    pub fn flags(mut self, flags: u8) -> Self {
        if let Kind::Tcp { flags: f, .. } = &mut self.kind {
            *f = flags;
        }
        self
    }

    /// Sets the TCP sequence number.
    pub fn seq(mut self, n: u32) -> Self {
        if let Kind::Tcp { seq, .. } = &mut self.kind {
            *seq = n;
        }
        self
    }

    /// Sets the TCP acknowledgement number.
    pub fn ack_number(mut self, n: u32) -> Self {
        if let Kind::Tcp { ack, .. } = &mut self.kind {
            *ack = n;
        }
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Tags the frame with VLAN `vid` (priority 0). A VID of 4095 or more
    /// is not taken as a tag: building then fails with
    /// [`BuildError::BadVlanId`].
    pub fn vlan(mut self, vid: u16) -> Self {
        if vid >= 0x0fff {
            self.bad_vid = Some(vid);
            self.vlan_tci = None;
        } else {
            self.bad_vid = None;
            self.vlan_tci = Some(vid);
        }
        self
    }

    /// Sets the whole VLAN tag control information (or removes the tag).
    pub fn vlan_tci(mut self, tci: Option<u16>) -> Self {
        self.bad_vid = None;
        self.vlan_tci = tci;
        self
    }

    /// Sets source and destination MACs.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Sets the TTL / hop limit.
    pub fn hop_limit(mut self, h: u8) -> Self {
        self.hop_limit = h;
        self
    }

    /// Sets the IP identification (used by fragments; IPv4 keeps 16 bits).
    pub fn ident(mut self, ident: u32) -> Self {
        self.ident = ident;
        self
    }

    /// Builds the frame.
    pub fn build(&self) -> Result<Vec<u8>, BuildError> {
        let l4 = self.transport_bytes()?;
        if let Kind::ArpRequest = self.kind {
            return Ok(self.ethernet(ETHERTYPE_ARP, &l4));
        }
        let ip = self.ip_packet(&l4, 0, l4.len(), false)?;
        Ok(self.ethernet(self.ethertype(), &ip))
    }

    /// Builds the packet split into IP fragments of at most `size` payload
    /// bytes (a positive multiple of 8); one frame if it fits.
    pub fn build_fragments(&self, size: usize) -> Result<Vec<Vec<u8>>, BuildError> {
        if size == 0 || size % 8 != 0 {
            return Err(BuildError::BadFragmentSize { size });
        }
        if let Kind::ArpRequest = self.kind {
            return Ok(vec![self.build()?]);
        }
        let l4 = self.transport_bytes()?;
        if l4.len() <= size {
            return Ok(vec![self.build()?]);
        }
        let mut out = Vec::new();
        let mut off = 0;
        while off < l4.len() {
            let len = size.min(l4.len() - off);
            let ip = self.ip_packet(&l4, off, len, true)?;
            out.push(self.ethernet(self.ethertype(), &ip));
            off += len;
        }
        Ok(out)
    }

    /// Builds exactly one fragment: bytes `offset..offset+len` of the
    /// transport data, with the more-fragments flag `more` (for crafting
    /// overlapping or out-of-order fragments).
    pub fn build_fragment(
        &self,
        offset: usize,
        len: usize,
        more: bool,
    ) -> Result<Vec<u8>, BuildError> {
        if offset % 8 != 0 {
            return Err(BuildError::BadFragmentSize { size: offset });
        }
        let l4 = self.transport_bytes()?;
        let mut data = l4;
        if data.len() < offset + len {
            data.resize(offset + len, 0);
        }
        let ip = self.ip_packet(&data, offset, len, true)?;
        let ip = if self.is_v4() {
            let mut ip = ip;
            let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
            p.set_more_frags(more);
            p.fill_checksum();
            ip
        } else {
            let mut ip = ip;
            ip[42..44]
                .copy_from_slice(&(((offset as u16) & 0xfff8) | u16::from(more)).to_be_bytes());
            ip
        };
        Ok(self.ethernet(self.ethertype(), &ip))
    }

    fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    fn ethertype(&self) -> u16 {
        if self.is_v4() {
            ETHERTYPE_IPV4
        } else {
            ETHERTYPE_IPV6
        }
    }

    fn check(&self) -> Result<(), BuildError> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(BuildError::FamilyMismatch {
                src: self.src,
                dst: self.dst,
            });
        }
        if let Some(vid) = self.bad_vid {
            return Err(BuildError::BadVlanId { vid });
        }
        if let Some(tci) = self.vlan_tci {
            if tci & 0x0fff == 0x0fff {
                return Err(BuildError::BadVlanId { vid: tci & 0x0fff });
            }
        }
        if self.payload.len() > MAX_PAYLOAD {
            return Err(BuildError::PayloadTooLarge {
                len: self.payload.len(),
            });
        }
        Ok(())
    }

    fn transport_bytes(&self) -> Result<Vec<u8>, BuildError> {
        self.check()?;
        let (src, dst) = (IpAddress::from(self.src), IpAddress::from(self.dst));
        Ok(match self.kind {
            Kind::Tcp {
                flags,
                seq,
                ack,
                window,
            } => {
                let mut b = vec![0u8; 20 + self.payload.len()];
                b[20..].copy_from_slice(&self.payload);
                b[0..2].copy_from_slice(&self.src_port.to_be_bytes());
                b[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                b[4..8].copy_from_slice(&seq.to_be_bytes());
                b[8..12].copy_from_slice(&ack.to_be_bytes());
                b[12] = 5 << 4;
                b[13] = flags;
                b[14..16].copy_from_slice(&window.to_be_bytes());
                TcpPacket::new_unchecked(&mut b[..]).fill_checksum(&src, &dst);
                b
            }
            Kind::Udp => {
                let len = 8 + self.payload.len();
                let mut b = vec![0u8; len];
                b[8..].copy_from_slice(&self.payload);
                b[0..2].copy_from_slice(&self.src_port.to_be_bytes());
                b[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                b[4..6].copy_from_slice(&(len as u16).to_be_bytes());
                UdpPacket::new_unchecked(&mut b[..]).fill_checksum(&src, &dst);
                b
            }
            Kind::IcmpEcho => {
                let mut b = vec![0u8; 8 + self.payload.len()];
                b[8..].copy_from_slice(&self.payload);
                b[4..6].copy_from_slice(&0x5e7eu16.to_be_bytes());
                b[6..8].copy_from_slice(&1u16.to_be_bytes());
                match (self.src, self.dst) {
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        b[0] = 128;
                        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(&s, &d);
                    }
                    _ => {
                        b[0] = 8;
                        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
                    }
                }
                b
            }
            Kind::ArpRequest => {
                let (IpAddr::V4(s), IpAddr::V4(t)) = (self.src, self.dst) else {
                    return Err(BuildError::ArpNeedsIpv4);
                };
                let mut b = vec![0u8; 28];
                let mut p = ArpPacket::new_unchecked(&mut b[..]);
                p.set_hardware_type(smoltcp::wire::ArpHardware::Ethernet);
                p.set_protocol_type(EthernetProtocol::Ipv4);
                p.set_hardware_len(6);
                p.set_protocol_len(4);
                p.set_operation(ArpOperation::Request);
                p.set_source_hardware_addr(&self.src_mac);
                p.set_source_protocol_addr(&s.octets());
                p.set_target_hardware_addr(&[0; 6]);
                p.set_target_protocol_addr(&t.octets());
                b
            }
        })
    }

    fn protocol(&self) -> u8 {
        match (&self.kind, self.is_v4()) {
            (Kind::Tcp { .. }, _) => 6,
            (Kind::Udp, _) => 17,
            (Kind::IcmpEcho, true) => 1,
            (Kind::IcmpEcho, false) => 58,
            (Kind::ArpRequest, _) => 0,
        }
    }

    /// The IP packet carrying `l4[off..off+len]`; `fragment` adds fragment
    /// fields (IPv4 flags/offset or an IPv6 fragment header).
    fn ip_packet(
        &self,
        l4: &[u8],
        off: usize,
        len: usize,
        fragment: bool,
    ) -> Result<Vec<u8>, BuildError> {
        let data = &l4[off..off + len];
        let more = off + len < l4.len();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = 20 + data.len();
                if total > 65535 {
                    return Err(BuildError::PayloadTooLarge { len: data.len() });
                }
                let mut b = vec![0u8; total];
                b[20..].copy_from_slice(data);
                let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
                p.set_version(4);
                p.set_header_len(20);
                p.set_total_len(total as u16);
                p.set_ident(self.ident as u16);
                p.clear_flags();
                p.set_dont_frag(!fragment);
                p.set_more_frags(fragment && more);
                p.set_frag_offset(off as u16);
                p.set_hop_limit(self.hop_limit);
                p.set_next_header(IpProtocol::from(self.protocol()));
                p.set_src_addr(s);
                p.set_dst_addr(d);
                p.fill_checksum();
                Ok(b)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ext = if fragment { ipv6ext::FRAGMENT_LEN } else { 0 };
                let plen = ext + data.len();
                if plen > 65535 {
                    return Err(BuildError::PayloadTooLarge { len: data.len() });
                }
                let mut b = vec![0u8; 40 + plen];
                b[0] = 0x60;
                b[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
                b[6] = if fragment {
                    ipv6ext::FRAGMENT
                } else {
                    self.protocol()
                };
                b[7] = self.hop_limit;
                b[8..24].copy_from_slice(&s.octets());
                b[24..40].copy_from_slice(&d.octets());
                if fragment {
                    ipv6ext::FragmentRepr {
                        next_header: self.protocol(),
                        offset_bytes: off as u16,
                        more_fragments: more,
                        ident: self.ident,
                    }
                    .emit(&mut b[40..48]);
                }
                b[40 + ext..].copy_from_slice(data);
                Ok(b)
            }
            (s, d) => Err(BuildError::FamilyMismatch { src: s, dst: d }),
        }
    }

    fn ethernet(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let tag = if self.vlan_tci.is_some() {
            vlan::TAG_LEN
        } else {
            0
        };
        let mut b = vec![0u8; 14 + tag + payload.len()];
        let mut f = EthernetFrame::new_unchecked(&mut b[..]);
        f.set_dst_addr(EthernetAddress(self.dst_mac));
        f.set_src_addr(EthernetAddress(self.src_mac));
        match self.vlan_tci {
            Some(tci) => {
                f.set_ethertype(EthernetProtocol::from(vlan::ETHERTYPE_VLAN));
                let mut t = vlan::VlanTag::new_unchecked(&mut b[14..18]);
                t.set_tci(tci);
                t.set_inner_ethertype(ethertype);
            }
            None => f.set_ethertype(EthernetProtocol::from(ethertype)),
        }
        b[14 + tag..].copy_from_slice(payload);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ParseOptions, VlanPolicy, parse_frame};

    #[test]
    fn tcp_v4_and_v6_parse_back_with_valid_checksums() {
        for (s, d) in [
            ("198.18.5.7:40000", "198.18.0.10:80"),
            ("[2001:db8::7]:40000", "[2001:db8::10]:80"),
        ] {
            let f = PacketBuilder::tcp(s.parse().unwrap(), d.parse().unwrap())
                .flags(tcp_flags::SYN)
                .seq(7)
                .payload(b"hello")
                .build()
                .unwrap();
            let p = parse_frame(&f, &ParseOptions::default()).unwrap();
            let t = p.tuple().unwrap();
            assert_eq!((t.remote_port, t.local_port, t.protocol), (40000, 80, 6));
            let tcp = p.tcp().unwrap();
            assert_eq!(
                (tcp.flags, tcp.seq, tcp.payload_len),
                (tcp_flags::SYN, 7, 5)
            );
            let ip = p.ip.unwrap();
            let l4 = &f[f.len() - 25..];
            let (src, dst) = (
                IpAddress::from(crate::tuple::ip_of(&ip.src)),
                IpAddress::from(crate::tuple::ip_of(&ip.dst)),
            );
            assert!(
                TcpPacket::new_checked(l4)
                    .unwrap()
                    .verify_checksum(&src, &dst)
            );
        }
    }

    #[test]
    fn family_mismatch_is_an_error() {
        let b = PacketBuilder::udp(
            "198.18.5.7:1".parse().unwrap(),
            "[2001:db8::1]:2".parse().unwrap(),
        );
        assert!(matches!(b.build(), Err(BuildError::FamilyMismatch { .. })));
    }

    #[test]
    fn fragments_reassemble_to_the_original_payload() {
        for (s, d) in [
            ("198.18.5.7:5000", "198.18.0.10:53"),
            ("[2001:db8::7]:5000", "[2001:db8::10]:53"),
        ] {
            let payload: Vec<u8> = (0..100u8).collect();
            let b = PacketBuilder::udp(s.parse().unwrap(), d.parse().unwrap())
                .payload(&payload)
                .ident(77);
            let frags = b.build_fragments(48).unwrap();
            assert_eq!(frags.len(), 3);
            let parsed: Vec<_> = frags
                .iter()
                .map(|f| parse_frame(f, &ParseOptions::default()).unwrap())
                .collect();
            assert!(parsed[0].is_first_fragment());
            assert!(parsed[0].tuple().is_some());
            assert!(parsed[1].is_later_fragment() && parsed[2].is_later_fragment());
            assert!(parsed[1].tuple().is_none());
            let last = parsed[2].ip.unwrap().fragment.unwrap();
            assert!(!last.more);
            assert_eq!(last.offset_bytes, 96);
            assert_eq!(last.ident, 77);
        }
    }

    #[test]
    fn vlan_ids_from_4095_are_refused_not_changed() {
        let b = PacketBuilder::tcp(
            "198.18.5.7:1".parse().unwrap(),
            "198.18.0.10:2".parse().unwrap(),
        );
        let opts = ParseOptions {
            vlan: VlanPolicy::Accept(Vec::new()),
            ..Default::default()
        };
        for vid in [0u16, 1, 4094] {
            let f = b.clone().vlan(vid).build().unwrap();
            assert_eq!(parse_frame(&f, &opts).unwrap().vlan_id(), Some(vid));
        }
        for vid in [4095u16, 4096, 0x1064, u16::MAX] {
            assert_eq!(
                b.clone().vlan(vid).build(),
                Err(BuildError::BadVlanId { vid })
            );
            assert_eq!(
                b.clone().vlan(vid).build_fragments(8),
                Err(BuildError::BadVlanId { vid })
            );
            // A later valid tag replaces the bad one.
            assert!(b.clone().vlan(vid).vlan(7).build().is_ok());
        }
        // The whole TCI, priority bits included, is still settable.
        let f = b.clone().vlan_tci(Some(0xe064)).build().unwrap();
        assert_eq!(parse_frame(&f, &opts).unwrap().vlan_id(), Some(100));
    }

    #[test]
    fn vlan_and_arp_and_icmp() {
        let f = PacketBuilder::udp(
            "198.18.5.7:1".parse().unwrap(),
            "198.18.0.10:2".parse().unwrap(),
        )
        .vlan(100)
        .build()
        .unwrap();
        let p = parse_frame(
            &f,
            &ParseOptions {
                vlan: VlanPolicy::Accept(vec![100]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.vlan_id(), Some(100));
        let arp = PacketBuilder::arp_request([198, 18, 5, 7].into(), [198, 18, 0, 10].into())
            .build()
            .unwrap();
        assert_eq!(
            parse_frame(&arp, &ParseOptions::default())
                .unwrap()
                .ethertype,
            ETHERTYPE_ARP
        );
        for (s, d) in [
            ("198.18.5.7", "198.18.0.10"),
            ("2001:db8::7", "2001:db8::10"),
        ] {
            let f = PacketBuilder::icmp_echo(s.parse().unwrap(), d.parse().unwrap())
                .build()
                .unwrap();
            let p = parse_frame(&f, &ParseOptions::default()).unwrap();
            assert!(p.ip.unwrap().transport.is_none());
        }
    }
}
