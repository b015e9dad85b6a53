//! Connection keys: the 5-tuple of an inbound segment, and address helpers.
//!
//! Addresses are kept as 16 bytes; IPv4 addresses are stored IPv4-mapped
//! (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), so one key type serves both families.
//! A tuple is always written from the adapter's side of an *inbound* frame:
//! `remote` is the frame's source (the client), `local` its destination (the
//! cluster IP).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// A 16-byte address (IPv6, or IPv4-mapped IPv6).
pub type Addr16 = [u8; 16];

/// The IPv4-mapped form of an IPv4 address.
pub const fn v4_mapped(a: [u8; 4]) -> Addr16 {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Whether a 16-byte address is IPv4-mapped.
pub fn is_v4_mapped(a: &Addr16) -> bool {
    a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff
}

/// The 16-byte form of an address.
pub fn addr16(ip: IpAddr) -> Addr16 {
    match ip {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a 16-byte form stands for (mapped addresses become IPv4).
pub fn ip_of(a: &Addr16) -> IpAddr {
    if is_v4_mapped(a) {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

/// The key of a connection, from the point of view of an inbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FiveTuple {
    /// IP protocol ([`PROTO_TCP`] or [`PROTO_UDP`]).
    pub protocol: u8,
    /// The client's address (source of inbound frames).
    pub remote_addr: Addr16,
    /// The client's port.
    pub remote_port: u16,
    /// The cluster address (destination of inbound frames).
    pub local_addr: Addr16,
    /// The cluster port.
    pub local_port: u16,
}

impl FiveTuple {
    /// A TCP tuple from std addresses.
    pub fn tcp(remote: IpAddr, remote_port: u16, local: IpAddr, local_port: u16) -> Self {
        FiveTuple {
            protocol: PROTO_TCP,
            remote_addr: addr16(remote),
            remote_port,
            local_addr: addr16(local),
            local_port,
        }
    }

    /// A UDP tuple from std addresses.
    pub fn udp(remote: IpAddr, remote_port: u16, local: IpAddr, local_port: u16) -> Self {
        FiveTuple {
            protocol: PROTO_UDP,
            ..Self::tcp(remote, remote_port, local, local_port)
        }
    }

    /// Whether both addresses are IPv4 (mapped).
    pub fn is_ipv4(&self) -> bool {
        is_v4_mapped(&self.remote_addr) && is_v4_mapped(&self.local_addr)
    }

    /// The table hash: three 64×64→128-bit multiply-folds over the packed tuple,
    /// seeded so that an adversary cannot precompute colliding tuples without
    /// the adapter's seed. Deterministic for a given seed.
    ///
    /// Every factor of every fold is `input ^ seed part ^ constant`, the seed
    /// part being a different rotation of the seed: the input that makes a
    /// factor zero (and so the fold zero, whatever the other factor) depends
    /// on the seed, so no address chosen by a client collapses a fold for
    /// every seed.
    #[inline]
    pub fn hash_with(&self, seed: u64) -> u64 {
        let w = |a: &Addr16, lo: usize| {
            u64::from_le_bytes([
                a[lo],
                a[lo + 1],
                a[lo + 2],
                a[lo + 3],
                a[lo + 4],
                a[lo + 5],
                a[lo + 6],
                a[lo + 7],
            ])
        };
        let ports = (u64::from(self.remote_port) << 32)
            | (u64::from(self.local_port) << 16)
            | u64::from(self.protocol);
        let f1 = fold(
            w(&self.remote_addr, 0) ^ seed ^ K0,
            w(&self.remote_addr, 8) ^ seed.rotate_left(17) ^ K1,
        );
        let f2 = fold(
            w(&self.local_addr, 0) ^ seed.rotate_left(41) ^ K2,
            w(&self.local_addr, 8) ^ seed.rotate_left(29) ^ K3,
        );
        fold(
            f1 ^ ports ^ seed.rotate_left(53),
            f2 ^ seed.rotate_left(7) ^ K4,
        )
    }

    /// A short display form: `tcp 198.18.5.7:40000 -> 198.18.0.10:80`.
    pub fn describe(&self) -> String {
        let proto = match self.protocol {
            PROTO_TCP => "tcp".to_string(),
            PROTO_UDP => "udp".to_string(),
            p => format!("proto{p}"),
        };
        let sock = |a: &Addr16, p: u16| match ip_of(a) {
            IpAddr::V4(v4) => format!("{v4}:{p}"),
            IpAddr::V6(v6) => format!("[{v6}]:{p}"),
        };
        format!(
            "{proto} {} -> {}",
            sock(&self.remote_addr, self.remote_port),
            sock(&self.local_addr, self.local_port)
        )
    }
}

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xC2B2_AE3D_27D4_EB4F;
const K2: u64 = 0x1656_67B1_9E37_79F9;
const K3: u64 = 0x27D4_EB2F_1656_67C5;
const K4: u64 = 0x94D0_49BB_1331_11EB;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_round_trips() {
        let v4: IpAddr = "198.18.0.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(is_v4_mapped(&addr16(v4)));
        assert!(!is_v4_mapped(&addr16(v6)));
        assert_eq!(ip_of(&addr16(v4)), v4);
        assert_eq!(ip_of(&addr16(v6)), v6);
    }

    #[test]
    fn hash_depends_on_every_field_and_seed() {
        let t = FiveTuple::tcp(
            "198.18.5.7".parse().unwrap(),
            40000,
            "198.18.0.10".parse().unwrap(),
            80,
        );
        let h = t.hash_with(1);
        let variants = [
            FiveTuple {
                protocol: PROTO_UDP,
                ..t
            },
            FiveTuple {
                remote_port: 40001,
                ..t
            },
            FiveTuple {
                local_port: 81,
                ..t
            },
            FiveTuple {
                remote_addr: v4_mapped([198, 18, 5, 8]),
                ..t
            },
            FiveTuple {
                local_addr: v4_mapped([198, 18, 0, 11]),
                ..t
            },
        ];
        for v in variants {
            assert_ne!(v.hash_with(1), h, "{}", v.describe());
        }
        assert_ne!(t.hash_with(2), h);
        // Pinned: every adapter of a cluster must compute the same hash (Maglev
        // picks are replicated), whatever its byte order or build.
        assert_eq!(h, 0x0467_2665_7cbb_5f0c, "hash_with(1) = {h:#018x}");
        assert_eq!(
            t.hash_with(0x5eed_f11e_7e12_0001),
            0x6dcd_6494_8faf_0940,
            "hash_with(default) = {:#018x}",
            t.hash_with(0x5eed_f11e_7e12_0001)
        );
        assert_eq!(t.describe(), "tcp 198.18.5.7:40000 -> 198.18.0.10:80");
    }

    /// With the constants alone in a factor, a client whose IPv6 interface ID
    /// (address bytes 8..16, read little-endian) equals `K1` zeroed the first
    /// fold for every seed, so all such clients collided whatever the seed;
    /// likewise a local address whose first half equals `K2`.
    #[test]
    fn no_address_collapses_a_fold_for_every_seed() {
        let base = FiveTuple::tcp(
            "2001:db8::7".parse().unwrap(),
            40000,
            "2001:db8::10".parse().unwrap(),
            80,
        );
        for seed in [1u64, 0x5eed_f11e_7e12_0001] {
            let mut remote_side = std::collections::BTreeSet::new();
            let mut local_side = std::collections::BTreeSet::new();
            for n in 0..64u64 {
                let mut remote = base.remote_addr;
                remote[..8].copy_from_slice(&(0x2001_0db8_0000_0000 + n).to_be_bytes());
                remote[8..].copy_from_slice(&K1.to_le_bytes());
                remote_side.insert(
                    FiveTuple {
                        remote_addr: remote,
                        ..base
                    }
                    .hash_with(seed),
                );
                let mut local = base.local_addr;
                local[..8].copy_from_slice(&K2.to_le_bytes());
                local[8..].copy_from_slice(&(0x10 + n).to_be_bytes());
                local_side.insert(
                    FiveTuple {
                        local_addr: local,
                        ..base
                    }
                    .hash_with(seed),
                );
            }
            assert_eq!(remote_side.len(), 64, "seed {seed:#x}");
            assert_eq!(local_side.len(), 64, "seed {seed:#x}");
        }
    }
}
