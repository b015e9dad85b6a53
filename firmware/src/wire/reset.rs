//! The adapter's own TCP RST (the "fast connection reset" of OS/390 and the
//! NonStop adapter): sent when a segment arrives for a connection whose
//! processor has failed, so the client learns at once instead of timing out.
//!
//! RFC 9293 §3.10.7.1: if the offending segment has ACK set, the reset takes
//! its sequence number from the segment's acknowledgement number and carries
//! no ACK; otherwise the reset has sequence number zero and acknowledges the
//! segment's sequence number plus its length (SYN and FIN count one each).
//!
//! [`build_reset_to`] builds the proactive reset, sent when the processor
//! fails with no segment to answer: the same frame as the answer to the
//! connection's last segment with ACK set, from what the connection table
//! remembered of it.

use std::net::SocketAddr;

use super::builder::PacketBuilder;
use super::{ParsedFrame, tcp_flags};
use crate::conntable::ResetInfo;
use crate::tuple::{FiveTuple, PROTO_TCP, ip_of};

/// Builds the RST answering `frame`, or `None` if `frame` is not a TCP segment
/// with its header or is itself a RST (never answer a reset).
pub fn build_reset(frame: &ParsedFrame) -> Option<Vec<u8>> {
    let ip = frame.ip.as_ref()?;
    let t = ip.transport.as_ref()?;
    let tcp = t.tcp.as_ref()?;
    if tcp.has(tcp_flags::RST) {
        return None;
    }
    let (seq, ack, flags) = if tcp.has(tcp_flags::ACK) {
        (tcp.ack, 0, tcp_flags::RST)
    } else {
        let len = tcp
            .payload_len
            .wrapping_add(u32::from(tcp.has(tcp_flags::SYN)))
            .wrapping_add(u32::from(tcp.has(tcp_flags::FIN)));
        (
            0,
            tcp.seq.wrapping_add(len),
            tcp_flags::RST | tcp_flags::ACK,
        )
    };
    PacketBuilder::tcp(
        SocketAddr::new(ip_of(&ip.dst), t.dst_port),
        SocketAddr::new(ip_of(&ip.src), t.src_port),
    )
    .flags(flags)
    .seq(seq)
    .ack_number(ack)
    .macs(frame.dst_mac, frame.src_mac)
    .vlan_tci(frame.vlan_tci)
    .hop_limit(64)
    .ident(0)
    .build()
    .ok()
}

/// Builds the RST the adapter sends on its own to the client of TCP
/// connection `t` (keyed as inbound: `remote` is the client): from the
/// cluster address and port to the client's, with the MACs and VLAN tag of
/// `info.link` mirrored, sequence number `info.ack`, RST alone. `None` if
/// `t` is not TCP or the frame cannot be built.
pub fn build_reset_to(t: &FiveTuple, info: &ResetInfo) -> Option<Vec<u8>> {
    reset_to(t, info, tcp_flags::RST, info.ack, 0)
}

/// The RST that ends a client's connection attempt with no inbound frame to
/// answer: for a provisional entry, `info.ack` holds the client's initial
/// sequence number + 1 (what its SYN asked to be acknowledged), so an
/// RST|ACK acknowledging exactly that is accepted by a client in SYN-SENT
/// (RFC 9293, 3.10.7.3).
pub fn build_reset_to_syn(t: &FiveTuple, info: &ResetInfo) -> Option<Vec<u8>> {
    reset_to(t, info, tcp_flags::RST | tcp_flags::ACK, 0, info.ack)
}

/// A reset from the cluster's side of `t` to its client, addressed as
/// `info.link` remembers (MACs mirrored, VLAN tag kept).
fn reset_to(t: &FiveTuple, info: &ResetInfo, flags: u8, seq: u32, ack: u32) -> Option<Vec<u8>> {
    if t.protocol != PROTO_TCP {
        return None;
    }
    PacketBuilder::tcp(
        SocketAddr::new(ip_of(&t.local_addr), t.local_port),
        SocketAddr::new(ip_of(&t.remote_addr), t.remote_port),
    )
    .flags(flags)
    .seq(seq)
    .ack_number(ack)
    .macs(info.link.adapter_mac, info.link.client_mac)
    .vlan_tci(info.link.vlan_tci)
    .hop_limit(64)
    .ident(0)
    .build()
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ParseOptions, VlanPolicy, parse_frame};
    use smoltcp::wire::{IpAddress, TcpPacket};

    fn parse(f: &[u8]) -> ParsedFrame {
        parse_frame(
            f,
            &ParseOptions {
                vlan: VlanPolicy::Accept(vec![]),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn reset_for_ack_segment_takes_its_ack_number() {
        for (c, s) in [
            ("198.18.5.7:40000", "198.18.0.10:80"),
            ("[2001:db8::7]:40000", "[2001:db8::10]:80"),
        ] {
            let seg = PacketBuilder::tcp(c.parse().unwrap(), s.parse().unwrap())
                .flags(tcp_flags::ACK | tcp_flags::PSH)
                .seq(500)
                .ack_number(9000)
                .payload(b"data")
                .vlan(7)
                .build()
                .unwrap();
            let p = parse(&seg);
            let rst = build_reset(&p).unwrap();
            let r = parse(&rst);
            assert_eq!(r.src_mac, p.dst_mac);
            assert_eq!(r.dst_mac, p.src_mac);
            assert_eq!(r.vlan_id(), Some(7));
            let (ri, pi) = (r.ip.unwrap(), p.ip.unwrap());
            assert_eq!((ri.src, ri.dst), (pi.dst, pi.src));
            let rt = r.tcp().unwrap();
            assert_eq!((rt.flags, rt.seq, rt.ack), (tcp_flags::RST, 9000, 0));
            let t = ri.transport.unwrap();
            assert_eq!((t.src_port, t.dst_port), (80, 40000));
            let l4 = &rst[rst.len() - 20..];
            let (a, b) = (
                IpAddress::from(ip_of(&ri.src)),
                IpAddress::from(ip_of(&ri.dst)),
            );
            assert!(TcpPacket::new_checked(l4).unwrap().verify_checksum(&a, &b));
        }
    }

    #[test]
    fn reset_for_syn_acknowledges_it() {
        let seg = PacketBuilder::tcp(
            "198.18.5.7:40000".parse().unwrap(),
            "198.18.0.10:80".parse().unwrap(),
        )
        .flags(tcp_flags::SYN)
        .seq(41)
        .build()
        .unwrap();
        let r = parse(&build_reset(&parse(&seg)).unwrap());
        let rt = r.tcp().unwrap();
        assert_eq!(
            (rt.flags, rt.seq, rt.ack),
            (tcp_flags::RST | tcp_flags::ACK, 0, 42)
        );
    }

    #[test]
    fn never_reset_a_reset() {
        let seg = PacketBuilder::tcp(
            "198.18.5.7:40000".parse().unwrap(),
            "198.18.0.10:80".parse().unwrap(),
        )
        .flags(tcp_flags::RST)
        .build()
        .unwrap();
        assert!(build_reset(&parse(&seg)).is_none());
    }
}
