//! What the firmware decides for each inbound frame, and the counters it keeps.

use core::fmt;

/// A processor of the cluster (a small integer, `0..Config::processor_count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProcessorId(pub u16);

impl fmt::Display for ProcessorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// A receive queue of a processor (the NIC keeps one queue pair per queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QueueId(pub u16);

/// Declares [`DropReason`] with its stable snake_case names.
macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Why a frame was dropped. Every malformed-frame class has its own reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in declaration order (the index of a reason in this
            /// list is its index in [`Counters::dropped`]).
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name (used in YAML, reports and the CLI).
            pub const fn as_str(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// The reason with this name, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(DropReason::$variant),)* _ => None }
            }

            /// Index of this reason in [`DropReason::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header (14 bytes).
    TruncatedEthernet => "truncated_ethernet",
    /// A VLAN ethertype without the 4 bytes of tag that must follow.
    TruncatedVlanTag => "truncated_vlan_tag",
    /// VLAN-tagged frame while the configuration rejects tagged frames.
    VlanTagged => "vlan_tagged",
    /// VLAN ID not in the configured list.
    VlanNotAllowed => "vlan_not_allowed",
    /// Two or more VLAN tags (QinQ), which the adapter does not accept.
    StackedVlan => "stacked_vlan",
    /// Unicast frame for another MAC address.
    NotForAdapter => "not_for_adapter",
    /// Ethertype other than ARP, IPv4, IPv6.
    UnsupportedEthertype => "unsupported_ethertype",
    /// ARP packet shorter than its own address lengths say.
    MalformedArp => "malformed_arp",
    /// Shorter than the 20-byte IPv4 header.
    TruncatedIpv4Header => "truncated_ipv4_header",
    /// IP version field disagrees with the ethertype.
    BadIpVersion => "bad_ip_version",
    /// IHL below 5 or past the end of the frame.
    BadIpv4HeaderLength => "bad_ipv4_header_length",
    /// Total length shorter than the header or past the end of the frame.
    BadIpv4TotalLength => "bad_ipv4_total_length",
    /// IPv4 header checksum does not verify.
    BadIpv4Checksum => "bad_ipv4_checksum",
    /// Source address is multicast, broadcast or unspecified.
    BadSourceAddress => "bad_source_address",
    /// Shorter than the 40-byte IPv6 header.
    TruncatedIpv6Header => "truncated_ipv6_header",
    /// IPv6 payload length past the end of the frame.
    BadIpv6PayloadLength => "bad_ipv6_payload_length",
    /// An IPv6 extension header runs past the payload.
    TruncatedIpv6ExtHeader => "truncated_ipv6_ext_header",
    /// Hop-by-hop options header not directly after the IPv6 header.
    BadIpv6ExtHeaderOrder => "bad_ipv6_ext_header_order",
    /// More extension headers than the firmware walks (8).
    TooManyIpv6ExtHeaders => "too_many_ipv6_ext_headers",
    /// First fragment too short to hold the transport ports and header.
    TinyFragment => "tiny_fragment",
    /// Fragment offset that overlaps the transport header (RFC 1858) or
    /// runs past 65535 bytes.
    OverlappingFragment => "overlapping_fragment",
    /// Shorter than the 20-byte TCP header.
    TruncatedTcpHeader => "truncated_tcp_header",
    /// TCP data offset below 5 or past the end of the segment.
    BadTcpDataOffset => "bad_tcp_data_offset",
    /// SYN together with RST or FIN.
    InvalidTcpFlags => "invalid_tcp_flags",
    /// Shorter than the 8-byte UDP header.
    TruncatedUdpHeader => "truncated_udp_header",
    /// UDP length below 8 or past the end of the datagram.
    BadUdpLength => "bad_udp_length",
    /// ICMP or ICMPv6 message shorter than 4 bytes.
    TruncatedIcmp => "truncated_icmp",
    /// A SYN that needs a provisional entry while the table is full.
    ConnectionTableFull => "connection_table_full",
    /// A RST for a connection whose processor failed (never answer a RST).
    ResetForOrphan => "reset_for_orphan",
    /// No processor is live, so there is no master either.
    NoLiveProcessor => "no_live_processor",
    /// A filter tree or filter chose to drop the frame.
    Filtered => "filtered",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision for one inbound frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// DMA the frame into this processor's receive queue.
    Deliver {
        /// The processor that owns the socket.
        processor: ProcessorId,
        /// Its receive queue.
        queue: QueueId,
    },
    /// Unmatched traffic (ARP, ICMP, unknown): to the master processor.
    Master {
        /// The current master.
        processor: ProcessorId,
    },
    /// Drop the frame, with the reason.
    Drop(DropReason),
    /// Do not deliver; send this frame back out of the port instead (a TCP RST
    /// for a connection whose processor failed — the "fast connection reset").
    Reply {
        /// The complete Ethernet frame to transmit, checksums filled in.
        frame: Vec<u8>,
    },
}

impl Verdict {
    /// `Deliver` to `processor`, queue `queue`.
    pub const fn deliver(processor: u16, queue: u16) -> Self {
        Verdict::Deliver {
            processor: ProcessorId(processor),
            queue: QueueId(queue),
        }
    }

    /// The processor that receives the frame, for `Deliver` and `Master`.
    pub fn processor(&self) -> Option<ProcessorId> {
        match self {
            Verdict::Deliver { processor, .. } | Verdict::Master { processor } => Some(*processor),
            _ => None,
        }
    }

    /// Short one-line description (`deliver P3 q0`, `master P0`, `drop filtered`, `reply 54B`).
    pub fn describe(&self) -> String {
        match self {
            Verdict::Deliver { processor, queue } => format!("deliver {processor} q{}", queue.0),
            Verdict::Master { processor } => format!("master {processor}"),
            Verdict::Drop(r) => format!("drop {r}"),
            Verdict::Reply { frame } => format!("reply {}B", frame.len()),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Counters the firmware keeps; tests and reports read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Frames classified.
    pub frames: u64,
    /// Frames delivered to a processor by the filter.
    pub delivered: u64,
    /// Frames sent to the master processor.
    pub to_master: u64,
    /// Frames answered with a reply frame (fast resets).
    pub replies: u64,
    /// Frames dropped, indexed by [`DropReason::index`].
    pub dropped: [u64; DropReason::COUNT],
    /// Provisional entries created by SYNs.
    pub provisional_created: u64,
    /// Provisional entries confirmed by their owner.
    pub provisional_confirmed: u64,
    /// Provisional entries that expired unconfirmed.
    pub provisional_expired: u64,
    /// SYNs dropped because the table was full.
    pub syn_dropped_table_full: u64,
    /// Connections orphaned by processor failures.
    pub connections_orphaned: u64,
    /// Orphaned connections the adapter reset (first RST sent for each).
    pub connections_reset: u64,
    /// RST frames sent (a connection may be reset more than once), in
    /// answer to a segment or proactively.
    pub resets_sent: u64,
    /// RST frames queued on the firmware's own initiative when a processor
    /// went down, one per established connection of it whose client's last
    /// acknowledgement was remembered (also counted in `resets_sent`).
    pub proactive_resets: u64,
    /// Orphaned entries removed after their linger time.
    pub orphans_expired: u64,
    /// First-fragment decisions recorded.
    pub fragments_tracked: u64,
    /// Later fragments delivered by a recorded decision.
    pub fragments_followed: u64,
    /// Later fragments sent to the master (no recorded decision).
    pub fragments_to_master: u64,
    /// Control messages applied.
    pub control_accepted: u64,
    /// Control messages rejected, indexed by [`crate::control::RejectReason::index`].
    pub control_rejected: [u64; crate::control::RejectReason::COUNT],
    /// Times the master moved to another processor because it failed.
    pub master_failovers: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            frames: 0,
            delivered: 0,
            to_master: 0,
            replies: 0,
            dropped: [0; DropReason::COUNT],
            provisional_created: 0,
            provisional_confirmed: 0,
            provisional_expired: 0,
            syn_dropped_table_full: 0,
            connections_orphaned: 0,
            connections_reset: 0,
            resets_sent: 0,
            proactive_resets: 0,
            orphans_expired: 0,
            fragments_tracked: 0,
            fragments_followed: 0,
            fragments_to_master: 0,
            control_accepted: 0,
            control_rejected: [0; crate::control::RejectReason::COUNT],
            master_failovers: 0,
        }
    }
}

impl Counters {
    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Frames dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Control messages rejected for `reason`.
    pub fn rejected(&self, reason: crate::control::RejectReason) -> u64 {
        self.control_rejected[reason.index()]
    }

    /// Control messages rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.control_rejected.iter().sum()
    }

    /// Counts one verdict.
    pub(crate) fn count(&mut self, v: &Verdict) {
        self.frames += 1;
        match v {
            Verdict::Deliver { .. } => self.delivered += 1,
            Verdict::Master { .. } => self.to_master += 1,
            Verdict::Drop(r) => self.dropped[r.index()] += 1,
            Verdict::Reply { .. } => self.replies += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_name(r.as_str()), Some(*r));
            assert_eq!(DropReason::ALL[r.index()], *r);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert_eq!(DropReason::from_name("nonsense"), None);
    }

    #[test]
    fn counters_count_each_kind() {
        let mut c = Counters::default();
        c.count(&Verdict::deliver(1, 0));
        c.count(&Verdict::Master {
            processor: ProcessorId(0),
        });
        c.count(&Verdict::Drop(DropReason::Filtered));
        c.count(&Verdict::Reply { frame: vec![0; 54] });
        assert_eq!(
            (c.frames, c.delivered, c.to_master, c.replies),
            (4, 1, 1, 1)
        );
        assert_eq!(c.dropped(DropReason::Filtered), 1);
        assert_eq!(c.dropped_total(), 1);
        assert_eq!(Verdict::deliver(3, 1).describe(), "deliver P3 q1");
    }
}
