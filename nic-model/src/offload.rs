//! Checksum offloads: the adapter fills in IPv4 header and TCP/UDP
//! checksums on send, and checks them on receive. Frames it cannot parse
//! (unknown EtherType, fragments, truncated headers) are left as they are:
//! an offload never makes a frame worse.

use crate::ring::{CompletionFlags, Offloads, TxFlags};

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86DD;
const ETH_VLAN: u16 = 0x8100;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Where the headers of a frame are.
struct Layout {
    l3: usize,
    v6: bool,
    l4: usize,
    proto: u8,
    /// End of the IP packet (frames may carry padding after it).
    end: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn parse(frame: &[u8]) -> Option<Layout> {
    let mut l3 = 14;
    let mut ty = be16(frame, 12)?;
    if ty == ETH_VLAN {
        ty = be16(frame, 16)?;
        l3 = 18;
    }
    match ty {
        ETH_IPV4 => {
            let vihl = *frame.get(l3)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = (vihl & 0xF) as usize * 4;
            let total = be16(frame, l3 + 2)? as usize;
            let frag = be16(frame, l3 + 6)?;
            if ihl < 20 || total < ihl || l3 + total > frame.len() {
                return None;
            }
            // A fragment's checksum covers the whole datagram: leave it.
            let fragmented = frag & 0x3FFF != 0;
            Some(Layout {
                l3,
                v6: false,
                l4: l3 + ihl,
                proto: if fragmented { 0 } else { frame[l3 + 9] },
                end: l3 + total,
            })
        }
        ETH_IPV6 => {
            if *frame.get(l3)? >> 4 != 6 {
                return None;
            }
            let payload = be16(frame, l3 + 4)? as usize;
            let end = l3 + 40 + payload;
            if end > frame.len() {
                return None;
            }
            // Extension headers are not walked: only TCP/UDP right after the header.
            Some(Layout {
                l3,
                v6: true,
                l4: l3 + 40,
                proto: frame[l3 + 6],
                end,
            })
        }
        _ => None,
    }
}

fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u32) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

fn pseudo(frame: &[u8], l: &Layout) -> u32 {
    let len = (l.end - l.l4) as u32;
    let mut acc = if l.v6 {
        sum(&frame[l.l3 + 8..l.l3 + 40], 0)
    } else {
        sum(&frame[l.l3 + 12..l.l3 + 20], 0)
    };
    acc += l.proto as u32;
    acc += len >> 16;
    acc += len & 0xFFFF;
    acc
}

fn l4_csum_at(l: &Layout) -> Option<usize> {
    match l.proto {
        PROTO_TCP => Some(l.l4 + 16),
        PROTO_UDP => Some(l.l4 + 6),
        _ => None,
    }
}

/// Fills in the checksums `flags` asks for.
pub fn fill(frame: &mut [u8], flags: TxFlags) {
    let Some(l) = parse(frame) else { return };
    if flags.contains(TxFlags::CSUM_IP) && !l.v6 {
        frame[l.l3 + 10] = 0;
        frame[l.l3 + 11] = 0;
        let c = !fold(sum(&frame[l.l3..l.l4], 0));
        frame[l.l3 + 10..l.l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    if flags.contains(TxFlags::CSUM_L4) {
        let Some(at) = l4_csum_at(&l) else { return };
        if at + 2 > l.end {
            return;
        }
        frame[at] = 0;
        frame[at + 1] = 0;
        let mut c = !fold(sum(&frame[l.l4..l.end], pseudo(frame, &l)));
        if c == 0 && l.proto == PROTO_UDP {
            c = 0xFFFF;
        }
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Checks the checksums the adapter can check; returns the OK flags.
pub fn check(frame: &[u8], offloads: Offloads) -> CompletionFlags {
    let mut out = CompletionFlags::empty();
    let Some(l) = parse(frame) else { return out };
    if offloads.contains(Offloads::CSUM_IP) && !l.v6 && fold(sum(&frame[l.l3..l.l4], 0)) == 0xFFFF {
        out |= CompletionFlags::CSUM_IP_OK;
    }
    if offloads.contains(Offloads::CSUM_L4) {
        if let Some(at) = l4_csum_at(&l) {
            let zero_udp = l.proto == PROTO_UDP && !l.v6 && be16(frame, at) == Some(0);
            if at + 2 <= l.end
                && !zero_udp
                && fold(sum(&frame[l.l4..l.end], pseudo(frame, &l))) == 0xFFFF
            {
                out |= CompletionFlags::CSUM_L4_OK;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use snet_firmware::kit::PacketBuilder;

    fn frames() -> Vec<Vec<u8>> {
        let c4 = "198.18.0.1:40000".parse().unwrap();
        let s4 = "198.18.0.10:80".parse().unwrap();
        let c6 = "[2001:db8::1]:40000".parse().unwrap();
        let s6 = "[2001:db8::10]:80".parse().unwrap();
        vec![
            PacketBuilder::tcp(c4, s4)
                .payload(b"hello")
                .build()
                .unwrap(),
            PacketBuilder::udp(c4, s4).payload(b"q").build().unwrap(),
            PacketBuilder::tcp(c6, s6)
                .payload(b"hi there")
                .build()
                .unwrap(),
            PacketBuilder::udp(c6, s6).payload(b"odd").build().unwrap(),
            PacketBuilder::tcp(c4, s4)
                .vlan(7)
                .payload(b"tagged")
                .build()
                .unwrap(),
        ]
    }

    #[test]
    fn fill_then_check_agrees_and_matches_the_builders_checksums() {
        for f in frames() {
            let all = Offloads::CSUM_IP | Offloads::CSUM_L4;
            let ok = check(&f, all);
            assert!(
                ok.contains(CompletionFlags::CSUM_L4_OK),
                "builder frames carry right checksums"
            );
            let mut g = f.clone();
            // Spoil the checksums, then let the adapter fill them in again.
            let l = parse(&g).unwrap();
            let at = l4_csum_at(&l).unwrap();
            g[at] ^= 0xFF;
            if !l.v6 {
                g[l.l3 + 10] ^= 0xFF;
            }
            assert!(!check(&g, all).contains(CompletionFlags::CSUM_L4_OK));
            fill(&mut g, TxFlags::CSUM_IP | TxFlags::CSUM_L4);
            assert_eq!(g, f);
            assert_eq!(check(&g, all), ok);
        }
    }

    #[test]
    fn unparsable_frames_are_left_alone() {
        let mut junk = vec![0u8; 60];
        junk[12] = 0x88;
        let before = junk.clone();
        fill(&mut junk, TxFlags::CSUM_IP | TxFlags::CSUM_L4);
        assert_eq!(junk, before);
        assert_eq!(check(&junk, Offloads::all()), CompletionFlags::empty());
        let mut short = vec![0u8; 20];
        short[12] = 0x08;
        fill(&mut short, TxFlags::all());
        assert_eq!(check(&short, Offloads::all()), CompletionFlags::empty());
    }
}
