//! Filter trees: specification (Rust and YAML), compilation to an arena, and
//! evaluation.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Stages;
use crate::tuple::{addr16, ip_of, is_v4_mapped};
use crate::verdict::{DropReason, ProcessorId, QueueId, Verdict};
use crate::wire::{ParsedFrame, tcp_flags};

/// Deepest tree accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes accepted.
pub const MAX_NODES: usize = 100_000;

/// A header field a node can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Ethertype (after a VLAN tag). Names: `arp`, `ipv4`, `ipv6`.
    Ethertype,
    /// VLAN ID (absent if untagged).
    VlanId,
    /// 4 or 6.
    IpVersion,
    /// Upper-layer protocol. Names: `tcp`, `udp`, `icmp`, `icmpv6`.
    IpProtocol,
    /// Source address (IPv4 or IPv6 literal; prefixes allowed).
    SrcAddr,
    /// Destination address.
    DstAddr,
    /// Source port (TCP/UDP with ports).
    SrcPort,
    /// Destination port.
    DstPort,
    /// TCP flags. Names joined by `|`: `fin`, `syn`, `rst`, `psh`, `ack`, `urg`.
    TcpFlags,
    /// Fragment position: `none` (0), `first` (1), `later` (2).
    Fragment,
    /// TTL / hop limit.
    HopLimit,
    /// Source MAC (`02:00:00:00:00:01`).
    SrcMac,
    /// Destination MAC.
    DstMac,
}

impl Field {
    /// The field's value in `p`, if the frame has that field.
    #[inline]
    pub fn value(self, p: &ParsedFrame) -> Option<u128> {
        let ip = p.ip.as_ref();
        let tr = ip.and_then(|ip| ip.transport.as_ref());
        match self {
            Field::Ethertype => Some(u128::from(p.ethertype)),
            Field::VlanId => p.vlan_id().map(u128::from),
            Field::IpVersion => ip.map(|ip| u128::from(ip.version)),
            Field::IpProtocol => ip.map(|ip| u128::from(ip.protocol)),
            Field::SrcAddr => ip.map(|ip| u128::from_be_bytes(ip.src)),
            Field::DstAddr => ip.map(|ip| u128::from_be_bytes(ip.dst)),
            Field::SrcPort => tr.map(|t| u128::from(t.src_port)),
            Field::DstPort => tr.map(|t| u128::from(t.dst_port)),
            Field::TcpFlags => tr.and_then(|t| t.tcp).map(|t| u128::from(t.flags)),
            Field::Fragment => ip.map(|ip| match ip.fragment {
                None => 0,
                Some(f) if f.offset_bytes == 0 => 1,
                Some(_) => 2,
            }),
            Field::HopLimit => ip.map(|ip| u128::from(ip.hop_limit)),
            Field::SrcMac => Some(mac_value(&p.src_mac)),
            Field::DstMac => Some(mac_value(&p.dst_mac)),
        }
    }

    fn is_addr(self) -> bool {
        matches!(self, Field::SrcAddr | Field::DstAddr)
    }

    fn max(self) -> u128 {
        match self {
            Field::Ethertype | Field::SrcPort | Field::DstPort => 0xffff,
            Field::VlanId => 0x0fff,
            Field::IpVersion | Field::IpProtocol | Field::HopLimit => 0xff,
            Field::TcpFlags => 0x3f,
            Field::Fragment => 2,
            Field::SrcAddr | Field::DstAddr => u128::MAX,
            Field::SrcMac | Field::DstMac => (1 << 48) - 1,
        }
    }

    /// Reads a literal as a value of this field.
    pub fn parse_literal(self, lit: &Literal) -> Result<u128, String> {
        let v = match lit {
            Literal::Int(n) => u128::from(*n),
            Literal::Text(s) => self.parse_text(s.trim())?,
        };
        if v > self.max() {
            return Err(format!(
                "{v} is out of range for {} (max {})",
                self.name(),
                self.max()
            ));
        }
        if self == Field::IpVersion && v != 4 && v != 6 {
            return Err(format!("ip_version must be 4 or 6, not {v}"));
        }
        Ok(v)
    }

    fn parse_text(self, s: &str) -> Result<u128, String> {
        if let Some(hex) = s.strip_prefix("0x") {
            if !self.is_addr() {
                return u128::from_str_radix(hex, 16)
                    .map_err(|_| format!("`{s}` is not a hex number"));
            }
        }
        let named = match (self, s) {
            (Field::Ethertype, "arp") => Some(0x0806),
            (Field::Ethertype, "ipv4") => Some(0x0800),
            (Field::Ethertype, "ipv6") => Some(0x86dd),
            (Field::IpProtocol, "tcp") => Some(6),
            (Field::IpProtocol, "udp") => Some(17),
            (Field::IpProtocol, "icmp") => Some(1),
            (Field::IpProtocol, "icmpv6") => Some(58),
            (Field::Fragment, "none") => Some(0),
            (Field::Fragment, "first") => Some(1),
            (Field::Fragment, "later") => Some(2),
            _ => None,
        };
        if let Some(v) = named {
            return Ok(v);
        }
        match self {
            Field::SrcAddr | Field::DstAddr => s
                .parse::<IpAddr>()
                .map(|ip| u128::from_be_bytes(addr16(ip)))
                .map_err(|_| format!("`{s}` is not an IP address")),
            Field::SrcMac | Field::DstMac => parse_mac(s)
                .ok_or_else(|| format!("`{s}` is not a MAC address like 02:00:00:00:00:01")),
            Field::TcpFlags => tcp_flags::parse(s, '|')
                .map(u128::from)
                .map_err(|e| e.to_string()),
            _ => s
                .parse::<u128>()
                .map_err(|_| format!("`{s}` is not a value of {}", self.name())),
        }
    }

    /// The literal that writes `v` for this field.
    pub fn literal(self, v: u128) -> Literal {
        match self {
            Field::SrcAddr | Field::DstAddr => Literal::Text(ip_of(&v.to_be_bytes()).to_string()),
            Field::SrcMac | Field::DstMac => {
                let b = v.to_be_bytes();
                Literal::Text(
                    b[10..16]
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                )
            }
            _ => Literal::Int(v as u64),
        }
    }

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Field::Ethertype => "ethertype",
            Field::VlanId => "vlan_id",
            Field::IpVersion => "ip_version",
            Field::IpProtocol => "ip_protocol",
            Field::SrcAddr => "src_addr",
            Field::DstAddr => "dst_addr",
            Field::SrcPort => "src_port",
            Field::DstPort => "dst_port",
            Field::TcpFlags => "tcp_flags",
            Field::Fragment => "fragment",
            Field::HopLimit => "hop_limit",
            Field::SrcMac => "src_mac",
            Field::DstMac => "dst_mac",
        }
    }
}

fn mac_value(m: &[u8; 6]) -> u128 {
    m.iter().fold(0u128, |a, b| (a << 8) | u128::from(*b))
}

fn parse_mac(s: &str) -> Option<u128> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac_value(&m))
}

/// A value as written in YAML: a number or a text (name, address, flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// A number.
    Int(u64),
    /// A name, an address, a MAC, `syn|ack`, or `0x…`.
    Text(String),
}

impl From<u64> for Literal {
    fn from(v: u64) -> Self {
        Literal::Int(v)
    }
}

impl From<&str> for Literal {
    fn from(s: &str) -> Self {
        Literal::Text(s.to_string())
    }
}

/// The test of an if-node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// Field equals the value.
    Equals(u128),
    /// Field within `lo..=hi`.
    Range(u128, u128),
    /// Address field within a prefix (`len` counts bits of the 128-bit form;
    /// an IPv4 /24 is 96 + 24).
    Prefix {
        /// The network (host bits zero).
        network: u128,
        /// Prefix length in bits of the 128-bit form.
        len: u8,
    },
    /// `field & mask == value`.
    Mask {
        /// The mask.
        mask: u128,
        /// The value after masking.
        value: u128,
    },
}

impl Test {
    /// Whether `v` passes.
    #[inline]
    pub fn matches(&self, v: u128) -> bool {
        match *self {
            Test::Equals(x) => v == x,
            Test::Range(lo, hi) => (lo..=hi).contains(&v),
            Test::Prefix { network, len } => prefix_mask(len) & v == network,
            Test::Mask { mask, value } => v & mask == value,
        }
    }

    /// An address prefix such as `198.18.5.0/24` or `2001:db8::/32`.
    pub fn prefix(text: &str) -> Result<Test, String> {
        let (a, l) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a prefix like 198.18.5.0/24"))?;
        let ip: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let bits: u8 = l
            .trim()
            .parse()
            .map_err(|_| format!("`{l}` is not a prefix length"))?;
        let (len, max) = match ip {
            IpAddr::V4(_) => (bits.checked_add(96), 32),
            IpAddr::V6(_) => (Some(bits), 128),
        };
        let len = len
            .filter(|_| bits <= max)
            .ok_or_else(|| format!("prefix length {bits} is too long for {ip}"))?;
        let network = u128::from_be_bytes(addr16(ip)) & prefix_mask(len);
        Ok(Test::Prefix { network, len })
    }

    fn prefix_text(network: u128, len: u8) -> String {
        let a = network.to_be_bytes();
        if is_v4_mapped(&a) && len >= 96 {
            format!("{}/{}", ip_of(&a), len - 96)
        } else {
            format!("{}/{}", ip_of(&a), len)
        }
    }
}

fn prefix_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

/// `mask` test as written in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskSpec {
    /// Bits to keep.
    pub mask: Literal,
    /// Value they must have.
    pub value: Literal,
}

/// A node of a tree specification (also the YAML format).
///
/// In YAML a leaf is a word (`master`, `drop`, `host_controlled`) and every
/// other node is a map with exactly one key naming the kind (`if`, `case`,
/// `connections`, `listeners`, `fragments`, `deliver`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSpec {
    /// Test one field; two outcomes.
    If(Box<IfSpec>),
    /// Switch on one field; many outcomes.
    Case(Box<CaseSpec>),
    /// The connection table (exact 5-tuple, installed by hosts).
    Connections(Box<MissSpec>),
    /// The listener groups (address, port, protocol, registered by hosts).
    Listeners(Box<MissSpec>),
    /// Later fragments following their first fragment.
    Fragments(Box<MissSpec>),
    /// Leaf: deliver to a processor.
    Deliver(DeliverSpec),
    /// Leaf: to the master processor.
    Master,
    /// Leaf: drop (reason `filtered`).
    Drop,
    /// Leaf: the whole built-in host-controlled filter.
    HostControlled,
}

/// An if-node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawIf", into = "RawIf")]
pub struct IfSpec {
    /// The field tested.
    pub field: Field,
    /// The test.
    pub test: Test,
    /// Where a frame that passes goes.
    pub then: NodeSpec,
    /// Where the others go (also frames without the field).
    pub otherwise: NodeSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIf {
    field: Field,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    equals: Option<Literal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<(Literal, Literal)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mask: Option<MaskSpec>,
    then: NodeSpec,
    #[serde(rename = "else")]
    otherwise: NodeSpec,
}

impl TryFrom<RawIf> for IfSpec {
    type Error = String;

    fn try_from(r: RawIf) -> Result<Self, String> {
        let f = r.field;
        let given = [
            r.equals.is_some(),
            r.range.is_some(),
            r.prefix.is_some(),
            r.mask.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(format!(
                "if on `{}`: give exactly one of equals, range, prefix, mask",
                f.name()
            ));
        }
        let ctx = |e: String| format!("if on `{}`: {e}", f.name());
        let test = if let Some(v) = &r.equals {
            Test::Equals(f.parse_literal(v).map_err(ctx)?)
        } else if let Some((lo, hi)) = &r.range {
            let (lo, hi) = (
                f.parse_literal(lo).map_err(ctx)?,
                f.parse_literal(hi).map_err(ctx)?,
            );
            if lo > hi {
                return Err(ctx(format!("range start {lo} is after its end {hi}")));
            }
            Test::Range(lo, hi)
        } else if let Some(p) = &r.prefix {
            if !f.is_addr() {
                return Err(ctx("prefix applies only to src_addr and dst_addr".into()));
            }
            Test::prefix(p).map_err(ctx)?
        } else if let Some(m) = &r.mask {
            Test::Mask {
                mask: f.parse_literal(&m.mask).map_err(ctx)?,
                value: f.parse_literal(&m.value).map_err(ctx)?,
            }
        } else {
            return Err(ctx("no test".into()));
        };
        Ok(IfSpec {
            field: f,
            test,
            then: r.then,
            otherwise: r.otherwise,
        })
    }
}

impl From<IfSpec> for RawIf {
    fn from(s: IfSpec) -> Self {
        let f = s.field;
        let mut r = RawIf {
            field: f,
            equals: None,
            range: None,
            prefix: None,
            mask: None,
            then: s.then,
            otherwise: s.otherwise,
        };
        match s.test {
            Test::Equals(v) => r.equals = Some(f.literal(v)),
            Test::Range(lo, hi) => r.range = Some((f.literal(lo), f.literal(hi))),
            Test::Prefix { network, len } => r.prefix = Some(Test::prefix_text(network, len)),
            Test::Mask { mask, value } => {
                r.mask = Some(MaskSpec {
                    mask: f.literal(mask),
                    value: f.literal(value),
                })
            }
        }
        r
    }
}

/// A case-node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCase", into = "RawCase")]
pub struct CaseSpec {
    /// The field switched on.
    pub field: Field,
    /// One outcome per value (values distinct).
    pub arms: Vec<(u128, NodeSpec)>,
    /// Where other values (and frames without the field) go.
    pub default: NodeSpec,
}

/// One arm of a case-node as written in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseArm {
    /// The value.
    pub value: Literal,
    /// Where frames with that value go.
    pub then: NodeSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    field: Field,
    arms: Vec<CaseArm>,
    default: NodeSpec,
}

impl TryFrom<RawCase> for CaseSpec {
    type Error = String;

    fn try_from(r: RawCase) -> Result<Self, String> {
        let f = r.field;
        let values = r
            .arms
            .iter()
            .map(|a| {
                f.parse_literal(&a.value)
                    .map_err(|e| format!("case on `{}`: {e}", f.name()))
            })
            .collect::<Result<Vec<u128>, String>>()?;
        if let Some(i) = first_repeated(&values) {
            return Err(format!(
                "case on `{}`: value {:?} appears twice",
                f.name(),
                r.arms[i].value
            ));
        }
        let arms = values
            .into_iter()
            .zip(r.arms)
            .map(|(v, a)| (v, a.then))
            .collect();
        Ok(CaseSpec {
            field: f,
            arms,
            default: r.default,
        })
    }
}

/// The position of the first case value an earlier one repeats. Positions
/// are sorted by value (stably, so equal values keep their order), then
/// compared with their neighbours: linear after the sort.
fn first_repeated(values: &[u128]) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&i| values[i]);
    order
        .windows(2)
        .filter(|w| values[w[0]] == values[w[1]])
        .map(|w| w[1])
        .min()
}

impl From<CaseSpec> for RawCase {
    fn from(s: CaseSpec) -> Self {
        let f = s.field;
        RawCase {
            field: f,
            arms: s
                .arms
                .into_iter()
                .map(|(v, then)| CaseArm {
                    value: f.literal(v),
                    then,
                })
                .collect(),
            default: s.default,
        }
    }
}

const NODE_KINDS: &[&str] = &[
    "if",
    "case",
    "connections",
    "listeners",
    "fragments",
    "deliver",
];
const LEAF_WORDS: &[&str] = &["master", "drop", "host_controlled"];

impl Serialize for NodeSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = match self {
            NodeSpec::Master => return s.serialize_str("master"),
            NodeSpec::Drop => return s.serialize_str("drop"),
            NodeSpec::HostControlled => return s.serialize_str("host_controlled"),
            _ => s.serialize_map(Some(1))?,
        };
        match self {
            NodeSpec::If(x) => m.serialize_entry("if", x.as_ref())?,
            NodeSpec::Case(x) => m.serialize_entry("case", x.as_ref())?,
            NodeSpec::Connections(x) => m.serialize_entry("connections", x.as_ref())?,
            NodeSpec::Listeners(x) => m.serialize_entry("listeners", x.as_ref())?,
            NodeSpec::Fragments(x) => m.serialize_entry("fragments", x.as_ref())?,
            NodeSpec::Deliver(x) => m.serialize_entry("deliver", x)?,
            NodeSpec::Master | NodeSpec::Drop | NodeSpec::HostControlled => {}
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for NodeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NodeSpec;

            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("a leaf (master, drop, host_controlled) or a map with one key (if, case, connections, listeners, fragments, deliver)")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeSpec, E> {
                match v {
                    "master" => Ok(NodeSpec::Master),
                    "drop" => Ok(NodeSpec::Drop),
                    "host_controlled" => Ok(NodeSpec::HostControlled),
                    other => Err(E::unknown_variant(other, LEAF_WORDS)),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NodeSpec, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "empty map: a node needs one key (if, case, connections, listeners, fragments, deliver)",
                    ));
                };
                let node = match key.as_str() {
                    "if" => NodeSpec::If(Box::new(map.next_value()?)),
                    "case" => NodeSpec::Case(Box::new(map.next_value()?)),
                    "connections" => NodeSpec::Connections(Box::new(map.next_value()?)),
                    "listeners" => NodeSpec::Listeners(Box::new(map.next_value()?)),
                    "fragments" => NodeSpec::Fragments(Box::new(map.next_value()?)),
                    "deliver" => NodeSpec::Deliver(map.next_value()?),
                    other => return Err(A::Error::unknown_field(other, NODE_KINDS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "a node has exactly one key; `{key}` is followed by `{extra}` (indent it under `{key}`?)"
                    )));
                }
                Ok(node)
            }
        }

        d.deserialize_any(V)
    }
}

/// A dynamic node's miss branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissSpec {
    /// Where frames the table does not decide go.
    pub miss: NodeSpec,
}

/// A deliver leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverSpec {
    /// The processor.
    pub processor: u16,
    /// Its queue.
    #[serde(default)]
    pub queue: u16,
}

/// A tree file: a name and the root node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeFile {
    /// Name for reports.
    pub name: String,
    /// What the filter is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The root.
    pub root: NodeSpec,
}

impl NodeSpec {
    /// `if field == value then … else …`.
    pub fn if_equals(field: Field, value: u128, then: NodeSpec, otherwise: NodeSpec) -> Self {
        NodeSpec::If(Box::new(IfSpec {
            field,
            test: Test::Equals(value),
            then,
            otherwise,
        }))
    }

    /// `if field matches test then … else …`.
    pub fn if_test(field: Field, test: Test, then: NodeSpec, otherwise: NodeSpec) -> Self {
        NodeSpec::If(Box::new(IfSpec {
            field,
            test,
            then,
            otherwise,
        }))
    }

    /// A case-node.
    pub fn case(field: Field, arms: Vec<(u128, NodeSpec)>, default: NodeSpec) -> Self {
        NodeSpec::Case(Box::new(CaseSpec {
            field,
            arms,
            default,
        }))
    }

    /// A deliver leaf.
    pub fn deliver(processor: u16, queue: u16) -> Self {
        NodeSpec::Deliver(DeliverSpec { processor, queue })
    }

    /// The connections node.
    pub fn connections(miss: NodeSpec) -> Self {
        NodeSpec::Connections(Box::new(MissSpec { miss }))
    }

    /// The listeners node.
    pub fn listeners(miss: NodeSpec) -> Self {
        NodeSpec::Listeners(Box::new(MissSpec { miss }))
    }

    /// The fragments node.
    pub fn fragments(miss: NodeSpec) -> Self {
        NodeSpec::Fragments(Box::new(MissSpec { miss }))
    }
}

/// Why a tree cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// The YAML is invalid; the message names the field path.
    #[error("line {line}, column {column}: {message}")]
    Yaml {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (serde_yaml's message, with the field path).
        message: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("tree deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// More than [`MAX_NODES`] nodes.
    #[error("tree has more than {MAX_NODES} nodes")]
    TooManyNodes,
    /// A case-node lists a value twice.
    #[error("case on `{field}` lists value {value} twice")]
    DuplicateArm {
        /// The field.
        field: &'static str,
        /// The value.
        value: u128,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    If {
        field: Field,
        test: Test,
        then: u32,
        otherwise: u32,
    },
    Case {
        field: Field,
        arms: Vec<(u128, u32)>,
        default: u32,
    },
    Connections {
        miss: u32,
    },
    Listeners {
        miss: u32,
    },
    Fragments {
        miss: u32,
    },
    Deliver(ProcessorId, QueueId),
    Master,
    Drop,
    HostControlled,
}

/// A compiled filter tree. Children always follow their parent in the arena,
/// so evaluation only moves forward and always ends at a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterTree {
    name: String,
    nodes: Vec<Node>,
}

impl FilterTree {
    /// Compiles a specification.
    pub fn compile(name: &str, root: &NodeSpec) -> Result<Self, TreeError> {
        let mut t = FilterTree {
            name: name.to_string(),
            nodes: Vec::new(),
        };
        t.add(root, 0)?;
        Ok(t)
    }

    /// Loads a [`TreeFile`] from YAML.
    pub fn from_yaml(text: &str) -> Result<Self, TreeError> {
        let file: TreeFile = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            TreeError::Yaml {
                line,
                column,
                message: e.to_string(),
            }
        })?;
        Self::compile(&file.name, &file.root)
    }

    /// Writes a specification as a YAML tree file.
    pub fn to_yaml(name: &str, root: &NodeSpec) -> String {
        let file = TreeFile {
            name: name.to_string(),
            description: None,
            root: root.clone(),
        };
        serde_yaml::to_string(&file).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    /// The specification of the built-in filter: ARP to the master; for IP,
    /// later fragments follow their first fragment, TCP and UDP go through the
    /// connection table and then the listener groups; everything unmatched
    /// goes to the master.
    pub fn builtin_spec() -> NodeSpec {
        let tables = NodeSpec::connections(NodeSpec::listeners(NodeSpec::Master));
        let ip = NodeSpec::if_equals(
            Field::Fragment,
            2,
            NodeSpec::fragments(NodeSpec::Master),
            NodeSpec::case(
                Field::IpProtocol,
                vec![(6, tables.clone()), (17, tables)],
                NodeSpec::Master,
            ),
        );
        NodeSpec::case(
            Field::Ethertype,
            vec![
                (0x0806, NodeSpec::Master),
                (0x0800, ip.clone()),
                (0x86dd, ip),
            ],
            NodeSpec::Master,
        )
    }

    /// The built-in filter as a tree.
    pub fn builtin() -> Self {
        match Self::compile("builtin", &Self::builtin_spec()) {
            Ok(t) => t,
            // The built-in spec is small and well-formed; keep a master-only tree otherwise.
            Err(_) => FilterTree {
                name: "builtin".into(),
                nodes: vec![Node::Master],
            },
        }
    }

    /// The tree's name.
    pub fn tree_name(&self) -> &str {
        &self.name
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn add(&mut self, spec: &NodeSpec, depth: usize) -> Result<u32, TreeError> {
        if depth > MAX_DEPTH {
            return Err(TreeError::TooDeep);
        }
        if self.nodes.len() >= MAX_NODES {
            return Err(TreeError::TooManyNodes);
        }
        let at = self.nodes.len();
        self.nodes.push(Node::Master);
        let node = match spec {
            NodeSpec::If(s) => {
                let then = self.add(&s.then, depth + 1)?;
                let otherwise = self.add(&s.otherwise, depth + 1)?;
                Node::If {
                    field: s.field,
                    test: s.test,
                    then,
                    otherwise,
                }
            }
            NodeSpec::Case(s) => {
                let values: Vec<u128> = s.arms.iter().map(|a| a.0).collect();
                if let Some(i) = first_repeated(&values) {
                    return Err(TreeError::DuplicateArm {
                        field: s.field.name(),
                        value: s.arms[i].0,
                    });
                }
                let mut arms = Vec::with_capacity(s.arms.len());
                for (v, n) in &s.arms {
                    arms.push((*v, self.add(n, depth + 1)?));
                }
                arms.sort_unstable_by_key(|a| a.0);
                let default = self.add(&s.default, depth + 1)?;
                Node::Case {
                    field: s.field,
                    arms,
                    default,
                }
            }
            NodeSpec::Connections(m) => Node::Connections {
                miss: self.add(&m.miss, depth + 1)?,
            },
            NodeSpec::Listeners(m) => Node::Listeners {
                miss: self.add(&m.miss, depth + 1)?,
            },
            NodeSpec::Fragments(m) => Node::Fragments {
                miss: self.add(&m.miss, depth + 1)?,
            },
            NodeSpec::Deliver(d) => Node::Deliver(ProcessorId(d.processor), QueueId(d.queue)),
            NodeSpec::Master => Node::Master,
            NodeSpec::Drop => Node::Drop,
            NodeSpec::HostControlled => Node::HostControlled,
        };
        self.nodes[at] = node;
        Ok(at as u32)
    }

    /// Walks the tree for `frame`.
    pub fn evaluate(&self, frame: &ParsedFrame, stages: &mut Stages<'_>) -> Verdict {
        let mut i = 0usize;
        loop {
            let Some(node) = self.nodes.get(i) else {
                return stages.master();
            };
            let next = match node {
                Node::If {
                    field,
                    test,
                    then,
                    otherwise,
                } => {
                    if field.value(frame).is_some_and(|v| test.matches(v)) {
                        *then
                    } else {
                        *otherwise
                    }
                }
                Node::Case {
                    field,
                    arms,
                    default,
                } => field
                    .value(frame)
                    .and_then(|v| arms.binary_search_by_key(&v, |a| a.0).ok())
                    .map(|k| arms[k].1)
                    .unwrap_or(*default),
                Node::Connections { miss } => match stages.connections(frame) {
                    Some(v) => return v,
                    None => *miss,
                },
                Node::Listeners { miss } => match stages.listeners(frame) {
                    Some(v) => return v,
                    None => *miss,
                },
                Node::Fragments { miss } => match stages.fragments(frame) {
                    Some(v) => return v,
                    None => *miss,
                },
                Node::Deliver(p, q) => return stages.deliver(*p, *q),
                Node::Master => return stages.master(),
                Node::Drop => return Verdict::Drop(DropReason::Filtered),
                Node::HostControlled => return stages.host_controlled(frame),
            };
            // Children are always after their parent: the walk ends.
            if (next as usize) <= i {
                return stages.master();
            }
            i = next as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_tests() {
        let t = Test::prefix("198.18.5.0/24").unwrap();
        let v = |s: &str| u128::from_be_bytes(addr16(s.parse().unwrap()));
        assert!(t.matches(v("198.18.5.200")));
        assert!(!t.matches(v("198.18.6.1")));
        assert!(!t.matches(v("2001:db8::1")));
        assert!(Test::prefix("198.18.5.0/33").is_err());
        assert!(Test::prefix("nonsense").is_err());
        assert_eq!(Test::prefix_text(v("198.18.5.0"), 120), "198.18.5.0/24");
        let t6 = Test::prefix("2001:db8::/32").unwrap();
        assert!(t6.matches(v("2001:db8:1::1")));
    }

    #[test]
    fn literals() {
        assert_eq!(Field::Ethertype.parse_literal(&"arp".into()), Ok(0x0806));
        assert_eq!(Field::Ethertype.parse_literal(&"0x86dd".into()), Ok(0x86dd));
        assert_eq!(Field::TcpFlags.parse_literal(&"syn|ack".into()), Ok(0x12));
        assert!(Field::DstPort.parse_literal(&70000.into()).is_err());
        assert!(Field::TcpFlags.parse_literal(&"syn|nope".into()).is_err());
        assert!(Field::IpVersion.parse_literal(&5.into()).is_err());
        assert_eq!(
            Field::DstMac.parse_literal(&"02:00:00:00:00:10".into()),
            Ok(0x0200_0000_0010)
        );
        assert_eq!(
            Field::DstMac.literal(0x0200_0000_0010),
            Literal::Text("02:00:00:00:00:10".into())
        );
    }

    #[test]
    fn builtin_round_trips_through_yaml() {
        let yaml = FilterTree::to_yaml("builtin", &FilterTree::builtin_spec());
        let back = FilterTree::from_yaml(&yaml).unwrap();
        assert_eq!(back, FilterTree::builtin());
    }

    #[test]
    fn a_repeated_case_value_is_found_once_whatever_the_order() {
        assert_eq!(first_repeated(&[]), None);
        assert_eq!(first_repeated(&[5, 3, 9]), None);
        assert_eq!(first_repeated(&[1, 2, 3, 2, 1]), Some(3));
        assert_eq!(first_repeated(&[7, 4, 4, 7, 7]), Some(2));
        let many: Vec<u128> = (0..50_000u128).chain([49_999, 3]).collect();
        assert_eq!(first_repeated(&many), Some(50_000));
        let arms = |vs: &[u128]| -> Vec<(u128, NodeSpec)> {
            vs.iter().map(|v| (*v, NodeSpec::Master)).collect()
        };
        let spec = NodeSpec::case(Field::DstPort, arms(&[80, 23, 443, 23, 80]), NodeSpec::Drop);
        assert_eq!(
            FilterTree::compile("dup", &spec),
            Err(TreeError::DuplicateArm {
                field: "dst_port",
                value: 23
            })
        );
        let yaml = "name: dup\nroot:\n  case:\n    field: ip_protocol\n    arms:\n      - { value: 6, then: master }\n      - { value: udp, then: drop }\n      - { value: tcp, then: drop }\n    default: drop\n";
        let err = FilterTree::from_yaml(yaml).unwrap_err().to_string();
        assert!(
            err.contains("case on `ip_protocol`: value Text(\"tcp\") appears twice"),
            "{err}"
        );
    }

    #[test]
    fn too_deep_is_rejected() {
        let mut n = NodeSpec::Master;
        for _ in 0..=MAX_DEPTH {
            n = NodeSpec::connections(n);
        }
        assert_eq!(FilterTree::compile("deep", &n), Err(TreeError::TooDeep));
    }
}
