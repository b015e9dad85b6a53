//! Frame parsing: zero-copy views down to the transport ports, and the
//! summary ([`ParsedFrame`]) that filters decide on.
//!
//! Ethernet, ARP, IPv4, IPv6, TCP, UDP and ICMP use smoltcp's `wire` views;
//! VLAN tags ([`vlan`]) and IPv6 extension headers ([`ipv6ext`]) have views
//! here. Every check that can fail runs *before* an accessor is called, and
//! each failure is a distinct [`DropReason`], so a malformed frame is dropped
//! with its reason and never panics.
//!
//! ## Fragments
//! A first fragment (offset 0, more-fragments set) carries the ports and is
//! classified like any segment; the firmware records the verdict under the
//! fragment key (addresses, IPv4 protocol or IPv6 Fragment next header,
//! identification) for a short time, and later fragments (offset > 0, no
//! ports) follow it. A later fragment with no recorded decision (it overtook
//! the first, or the record expired) goes to the master processor, which
//! reassembles. A first fragment too short to hold the
//! whole TCP header, a TCP fragment at offset 8 (RFC 1858) and a fragment that
//! would end past 65535 bytes are dropped.

pub mod builder;
pub mod ipv6ext;
pub mod reset;
pub mod vlan;

use smoltcp::wire::{ArpPacket, EthernetFrame, Ipv4Packet, TcpPacket, UdpPacket};

use crate::tuple::{
    Addr16, FiveTuple, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, is_v4_mapped, v4_mapped,
};
use crate::verdict::DropReason;

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Most IPv6 extension headers the parser walks before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// TCP flag bits as they appear in [`TcpInfo::flags`].
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;

    /// Every flag and its name, in bit order.
    pub const NAMES: [(u8, &str); 6] = [
        (FIN, "fin"),
        (SYN, "syn"),
        (RST, "rst"),
        (PSH, "psh"),
        (ACK, "ack"),
        (URG, "urg"),
    ];

    /// A name that is not one of [`NAMES`].
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("`{0}` is not a TCP flag (fin, syn, rst, psh, ack, urg)")]
    pub struct UnknownFlag(pub String);

    /// The flags named in `text`, names separated by `sep` (`syn|ack` in
    /// filter trees, `syn,ack` in frame specs); spaces around a name are
    /// ignored.
    pub fn parse(text: &str, sep: char) -> Result<u8, UnknownFlag> {
        text.split(sep).try_fold(0, |flags, name| {
            let name = name.trim();
            NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(bit, _)| flags | bit)
                .ok_or_else(|| UnknownFlag(name.to_string()))
        })
    }

    /// tcpdump-style letters of `flags`: `S`, `F`, `R`, `P` and `.` (ACK),
    /// in that order.
    pub fn letters(flags: u8) -> String {
        [(SYN, 'S'), (FIN, 'F'), (RST, 'R'), (PSH, 'P'), (ACK, '.')]
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, c)| *c)
            .collect()
    }
}

/// What to do with VLAN-tagged frames.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VlanPolicy {
    /// Drop every tagged frame ([`DropReason::VlanTagged`]).
    #[default]
    Reject,
    /// Accept one tag; an empty list accepts every VLAN ID, otherwise only the
    /// listed ones ([`DropReason::VlanNotAllowed`]). Stacked tags are dropped.
    Accept(Vec<u16>),
}

/// Frame-level checks the adapter applies before any filter runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// VLAN handling.
    pub vlan: VlanPolicy,
    /// If set, unicast frames for another MAC are dropped.
    pub adapter_mac: Option<[u8; 6]>,
    /// Verify the IPv4 header checksum (the TCP/UDP checksum is left to the
    /// host stack, which sees the whole segment).
    pub verify_ipv4_checksum: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            vlan: VlanPolicy::Reject,
            adapter_mac: None,
            verify_ipv4_checksum: true,
        }
    }
}

/// Fragment information of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub ident: u32,
    /// Offset of this fragment's data in the original payload, in bytes.
    pub offset_bytes: u16,
    /// More fragments follow.
    pub more: bool,
    /// The protocol that identifies the fragmented packet: the IPv4 protocol
    /// field, or the next header of the IPv6 Fragment header (which may be
    /// another extension header rather than the upper-layer protocol; only
    /// the first fragment carries what follows it). The same in every
    /// fragment of a packet, unlike [`IpInfo::protocol`].
    pub next_header: u8,
}

/// TCP details the filter and the reset builder need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpInfo {
    /// Flags ([`tcp_flags`]).
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Payload bytes in this segment (0 for a first fragment: unknown).
    pub payload_len: u32,
}

impl TcpInfo {
    /// Whether every bit of `mask` is set.
    pub const fn has(&self, mask: u8) -> bool {
        self.flags & mask == mask
    }

    /// A connection request: SYN without ACK.
    pub const fn is_connection_request(&self) -> bool {
        self.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }
}

/// Transport ports (TCP or UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transport {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// TCP details (None for UDP).
    pub tcp: Option<TcpInfo>,
}

/// The IP layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpInfo {
    /// 4 or 6.
    pub version: u8,
    /// Source address (IPv4-mapped for IPv4).
    pub src: Addr16,
    /// Destination address (IPv4-mapped for IPv4).
    pub dst: Addr16,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// TTL / hop limit.
    pub hop_limit: u8,
    /// Fragment information, if the packet is a fragment.
    pub fragment: Option<Fragment>,
    /// Ports, for TCP and UDP packets that carry them.
    pub transport: Option<Transport>,
}

/// The summary of a well-formed frame, produced by [`parse_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedFrame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tag control information, if the frame was tagged.
    pub vlan_tci: Option<u16>,
    /// Ethertype (the encapsulated one for tagged frames).
    pub ethertype: u16,
    /// The IP layer, for IPv4 and IPv6 frames.
    pub ip: Option<IpInfo>,
}

impl ParsedFrame {
    /// The connection key for TCP and UDP segments that carry ports.
    #[inline]
    pub fn tuple(&self) -> Option<FiveTuple> {
        let ip = self.ip.as_ref()?;
        let t = ip.transport.as_ref()?;
        Some(FiveTuple {
            protocol: ip.protocol,
            remote_addr: ip.src,
            remote_port: t.src_port,
            local_addr: ip.dst,
            local_port: t.dst_port,
        })
    }

    /// TCP details, if this is a TCP segment with its header.
    pub fn tcp(&self) -> Option<&TcpInfo> {
        self.ip.as_ref()?.transport.as_ref()?.tcp.as_ref()
    }

    /// Whether this is a fragment after the first (no ports).
    pub fn is_later_fragment(&self) -> bool {
        matches!(self.ip, Some(IpInfo { fragment: Some(f), .. }) if f.offset_bytes > 0)
    }

    /// Whether this is the first fragment of a fragmented packet.
    pub fn is_first_fragment(&self) -> bool {
        matches!(self.ip, Some(IpInfo { fragment: Some(f), .. }) if f.offset_bytes == 0 && f.more)
    }

    /// VLAN ID, if tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci.map(|t| t & 0x0fff)
    }
}

/// Parses an Ethernet frame (without FCS) down to the transport ports.
pub fn parse_frame(frame: &[u8], opts: &ParseOptions) -> Result<ParsedFrame, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::TruncatedEthernet)?;
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    if let Some(mac) = opts.adapter_mac {
        // Group bit clear = unicast; unicast frames must be for us.
        if dst_mac[0] & 1 == 0 && dst_mac != mac {
            return Err(DropReason::NotForAdapter);
        }
    }
    let mut ethertype = u16::from(eth.ethertype());
    let mut payload = eth.payload();
    let mut vlan_tci = None;
    if ethertype == vlan::ETHERTYPE_VLAN || ethertype == vlan::ETHERTYPE_QINQ {
        let tag = vlan::VlanTag::new_checked(payload).map_err(|_| DropReason::TruncatedVlanTag)?;
        match &opts.vlan {
            VlanPolicy::Reject => return Err(DropReason::VlanTagged),
            VlanPolicy::Accept(list) => {
                if tag.inner_ethertype() == vlan::ETHERTYPE_VLAN
                    || tag.inner_ethertype() == vlan::ETHERTYPE_QINQ
                {
                    return Err(DropReason::StackedVlan);
                }
                if !list.is_empty() && !list.contains(&tag.vid()) {
                    return Err(DropReason::VlanNotAllowed);
                }
            }
        }
        vlan_tci = Some(tag.tci());
        ethertype = tag.inner_ethertype();
        payload = &payload[vlan::TAG_LEN..];
    }
    let ip = match ethertype {
        ETHERTYPE_ARP => {
            ArpPacket::new_checked(payload).map_err(|_| DropReason::MalformedArp)?;
            None
        }
        ETHERTYPE_IPV4 => Some(parse_ipv4(payload, opts)?),
        ETHERTYPE_IPV6 => Some(parse_ipv6(payload)?),
        _ => return Err(DropReason::UnsupportedEthertype),
    };
    Ok(ParsedFrame {
        dst_mac,
        src_mac,
        vlan_tci,
        ethertype,
        ip,
    })
}

fn parse_ipv4(buf: &[u8], opts: &ParseOptions) -> Result<IpInfo, DropReason> {
    if buf.len() < 20 {
        return Err(DropReason::TruncatedIpv4Header);
    }
    if buf[0] >> 4 != 4 {
        return Err(DropReason::BadIpVersion);
    }
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    if ihl < 20 || ihl > buf.len() {
        return Err(DropReason::BadIpv4HeaderLength);
    }
    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if total < ihl || total > buf.len() {
        return Err(DropReason::BadIpv4TotalLength);
    }
    // All of smoltcp's length checks hold now; accessors cannot panic.
    let pkt = Ipv4Packet::new_checked(buf).map_err(|_| DropReason::BadIpv4TotalLength)?;
    if opts.verify_ipv4_checksum && !pkt.verify_checksum() {
        return Err(DropReason::BadIpv4Checksum);
    }
    let src4 = pkt.src_addr().octets();
    if src4[0] >= 224 || src4 == [0, 0, 0, 0] {
        // 224/4 multicast, 240/4 reserved and 255.255.255.255, or unspecified.
        return Err(DropReason::BadSourceAddress);
    }
    let protocol = u8::from(pkt.next_header());
    let offset = usize::from(pkt.frag_offset());
    let more = pkt.more_frags();
    let l4 = pkt.payload();
    if offset + l4.len() > 65535 {
        return Err(DropReason::OverlappingFragment);
    }
    let fragment = (more || offset > 0).then(|| Fragment {
        ident: u32::from(pkt.ident()),
        offset_bytes: offset as u16,
        more,
        next_header: protocol,
    });
    let transport = transport(protocol, l4, fragment)?;
    Ok(IpInfo {
        version: 4,
        src: v4_mapped(src4),
        dst: v4_mapped(pkt.dst_addr().octets()),
        protocol,
        hop_limit: pkt.hop_limit(),
        fragment,
        transport,
    })
}

fn parse_ipv6(buf: &[u8]) -> Result<IpInfo, DropReason> {
    if buf.len() < 40 {
        return Err(DropReason::TruncatedIpv6Header);
    }
    if buf[0] >> 4 != 6 {
        return Err(DropReason::BadIpVersion);
    }
    let payload_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if 40 + payload_len > buf.len() {
        return Err(DropReason::BadIpv6PayloadLength);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&buf[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&buf[24..40]);
    if src[0] == 0xff || is_v4_mapped(&src) {
        return Err(DropReason::BadSourceAddress);
    }
    let hop_limit = buf[7];
    let mut next = buf[6];
    let mut rest = &buf[40..40 + payload_len];
    let mut fragment = None;
    let mut walked = 0usize;
    loop {
        match next {
            ipv6ext::HOP_BY_HOP | ipv6ext::ROUTING | ipv6ext::DEST_OPTIONS => {
                if next == ipv6ext::HOP_BY_HOP && walked > 0 {
                    return Err(DropReason::BadIpv6ExtHeaderOrder);
                }
                let h = ipv6ext::ExtHeader::new_checked(rest)
                    .map_err(|_| DropReason::TruncatedIpv6ExtHeader)?;
                next = h.next_header();
                rest = &rest[h.header_len()..];
            }
            ipv6ext::FRAGMENT => {
                let h = ipv6ext::FragmentHeader::new_checked(rest)
                    .map_err(|_| DropReason::TruncatedIpv6ExtHeader)?;
                next = h.next_header();
                let (off, more) = (h.offset_bytes(), h.more_fragments());
                // An atomic fragment (offset 0, no more) is a whole packet.
                if off > 0 || more {
                    fragment = Some(Fragment {
                        ident: h.ident(),
                        offset_bytes: off,
                        more,
                        next_header: next,
                    });
                }
                rest = &rest[ipv6ext::FRAGMENT_LEN..];
                if let Some(f) = fragment {
                    if usize::from(f.offset_bytes) + rest.len() > 65535 {
                        return Err(DropReason::OverlappingFragment);
                    }
                    if f.offset_bytes > 0 {
                        break;
                    }
                }
            }
            _ => break,
        }
        walked += 1;
        if walked > MAX_IPV6_EXT_HEADERS {
            return Err(DropReason::TooManyIpv6ExtHeaders);
        }
    }
    let transport = transport(next, rest, fragment)?;
    Ok(IpInfo {
        version: 6,
        src,
        dst,
        protocol: next,
        hop_limit,
        fragment,
        transport,
    })
}

fn transport(
    protocol: u8,
    l4: &[u8],
    fragment: Option<Fragment>,
) -> Result<Option<Transport>, DropReason> {
    let (first, later) = match fragment {
        None => (false, false),
        Some(f) if f.offset_bytes == 0 => (true, false),
        Some(f) => {
            // RFC 1858: a TCP fragment at offset 8 rewrites the header's flags.
            if protocol == PROTO_TCP && f.offset_bytes == 8 {
                return Err(DropReason::OverlappingFragment);
            }
            (false, true)
        }
    };
    if later {
        return Ok(None);
    }
    match protocol {
        PROTO_TCP => {
            if l4.len() < 20 {
                return Err(if first {
                    DropReason::TinyFragment
                } else {
                    DropReason::TruncatedTcpHeader
                });
            }
            let data_offset = usize::from(l4[12] >> 4) * 4;
            if data_offset < 20 {
                return Err(DropReason::BadTcpDataOffset);
            }
            if data_offset > l4.len() {
                return Err(if first {
                    DropReason::TinyFragment
                } else {
                    DropReason::BadTcpDataOffset
                });
            }
            let seg = TcpPacket::new_checked(l4).map_err(|_| DropReason::BadTcpDataOffset)?;
            let flags = l4[13] & 0x3f;
            if flags & tcp_flags::SYN != 0 && flags & (tcp_flags::RST | tcp_flags::FIN) != 0 {
                return Err(DropReason::InvalidTcpFlags);
            }
            let payload_len = if first {
                0
            } else {
                (l4.len() - data_offset) as u32
            };
            Ok(Some(Transport {
                src_port: seg.src_port(),
                dst_port: seg.dst_port(),
                tcp: Some(TcpInfo {
                    flags,
                    seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
                    ack: u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]),
                    payload_len,
                }),
            }))
        }
        PROTO_UDP => {
            if l4.len() < 8 {
                return Err(if first {
                    DropReason::TinyFragment
                } else {
                    DropReason::TruncatedUdpHeader
                });
            }
            let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            // A first fragment holds only part of the datagram its length covers.
            if len < 8 || (!first && len > l4.len()) {
                return Err(DropReason::BadUdpLength);
            }
            let dgram = UdpPacket::new_unchecked(l4);
            Ok(Some(Transport {
                src_port: dgram.src_port(),
                dst_port: dgram.dst_port(),
                tcp: None,
            }))
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if l4.len() < 4 {
                return Err(DropReason::TruncatedIcmp);
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::{self, ACK, FIN, PSH, RST, SYN, URG, UnknownFlag};

    #[test]
    fn flag_names_parse_with_either_separator_and_letters_name_them() {
        assert_eq!(tcp_flags::parse("syn|ack", '|'), Ok(SYN | ACK));
        assert_eq!(tcp_flags::parse("syn, ack", ','), Ok(SYN | ACK));
        assert_eq!(
            tcp_flags::parse("fin|syn|rst|psh|ack|urg", '|'),
            Ok(FIN | SYN | RST | PSH | ACK | URG)
        );
        assert_eq!(
            tcp_flags::parse("syn|xmas", '|'),
            Err(UnknownFlag("xmas".into()))
        );
        assert_eq!(tcp_flags::parse("", ','), Err(UnknownFlag(String::new())));
        assert_eq!(
            tcp_flags::parse("syn,ack", '|'),
            Err(UnknownFlag("syn,ack".into()))
        );
        assert_eq!(tcp_flags::letters(SYN | ACK), "S.");
        assert_eq!(tcp_flags::letters(FIN | PSH | ACK | RST), "FRP.");
        assert_eq!(tcp_flags::letters(URG), "");
    }
}
