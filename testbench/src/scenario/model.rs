//! The typed scenario: every section of a scenario file as a Rust type.
//!
//! Everything except `name` (and, inside list items, the fields documented as
//! required) has a default, so a ten-line file runs. Unknown fields are
//! refused everywhere. `docs/scenario-reference.md` documents every field.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::de::{checked_map, deserialize_from_str, non_empty, one_or_many};
use super::expr::Expr;
use super::units::{Bandwidth, Duration, Probability, Rate, Size};

/// Most processors a scenario may have.
pub const MAX_PROCESSORS: u32 = 4096;
/// Most processors in one node (a NonStop node holds up to 16).
pub const MAX_PROCESSORS_PER_NODE: u32 = 16;
/// Largest MTU accepted (jumbo frames).
pub const MAX_MTU: u32 = 9216;
/// Routers per plane at most.
pub const MAX_ROUTERS_PER_PLANE: u32 = 1024;

/// A whole scenario: the cluster, its workload, its faults and what must hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name for reports (required).
    #[serde(deserialize_with = "non_empty")]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Seed of the run's one random number generator (default 1).
    #[serde(default = "one_u64")]
    pub seed: u64,
    /// Virtual time the run lasts (default 100ms).
    #[serde(default = "default_duration")]
    pub duration: Duration,
    /// The ServerNet fabric.
    #[serde(default)]
    pub fabric: Fabric,
    /// The processors.
    #[serde(default)]
    pub processors: Processors,
    /// The LAN adapters (default: one, `lan0` at 198.18.0.10).
    #[serde(default)]
    pub adapters: Vec<Adapter>,
    /// Where TCP/IP runs (default: parallel, one instance per processor).
    #[serde(default)]
    pub stack: Stack,
    /// Adapter firmware settings.
    #[serde(default)]
    pub firmware: Firmware,
    /// Server applications.
    #[serde(default)]
    pub apps: Vec<App>,
    /// Client populations.
    #[serde(default)]
    pub clients: Vec<Client>,
    /// Faults and changes at set times or after events.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// What must hold at the end of the run.
    #[serde(default)]
    pub expect: Vec<Expectation>,
}

/// Names of the top-level sections, in the order of the struct.
pub(crate) const SECTIONS: &[&str] = &[
    "name",
    "description",
    "seed",
    "duration",
    "fabric",
    "processors",
    "adapters",
    "stack",
    "firmware",
    "apps",
    "clients",
    "faults",
    "expect",
];

fn one_u64() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_duration() -> Duration {
    Duration::from_ms(100)
}

// ---- fabric -----------------------------------------------------------------

/// The ServerNet generation: packet payload, link speed and router size.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Generation {
    /// ServerNet I: 64-byte payloads, 50 MB/s links, 6-port routers.
    #[serde(rename = "servernet1")]
    ServerNet1,
    /// ServerNet II: 512-byte payloads, 125 MB/s links, 12-port routers.
    #[default]
    #[serde(rename = "servernet2")]
    ServerNet2,
    /// ServerNet 3: 512-byte payloads, 250 MB/s links, 32-port routers.
    #[serde(rename = "servernet3")]
    ServerNet3,
}

impl Generation {
    /// Largest payload of one packet, in bytes.
    pub const fn max_payload(self) -> u32 {
        match self {
            Generation::ServerNet1 => 64,
            Generation::ServerNet2 | Generation::ServerNet3 => 512,
        }
    }
    /// Link speed per direction.
    pub const fn link_bandwidth(self) -> Bandwidth {
        let mb = match self {
            Generation::ServerNet1 => 50,
            Generation::ServerNet2 => 125,
            Generation::ServerNet3 => 250,
        };
        // Bits per second of 50/125/250 MB/s, never zero.
        Bandwidth::from_nonzero_bits(mb * 8_000_000)
    }
    /// Ports per router.
    pub const fn router_ports(self) -> u32 {
        match self {
            Generation::ServerNet1 => 6,
            Generation::ServerNet2 => 12,
            Generation::ServerNet3 => 32,
        }
    }
    /// The fabric crate's generation.
    pub const fn to_fabric(self) -> snet_fabric::packet::Generation {
        match self {
            Generation::ServerNet1 => snet_fabric::packet::Generation::ServerNet1,
            Generation::ServerNet2 => snet_fabric::packet::Generation::ServerNet2,
            Generation::ServerNet3 => snet_fabric::packet::Generation::ServerNet3,
        }
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Generation::ServerNet1 => "servernet1",
            Generation::ServerNet2 => "servernet2",
            Generation::ServerNet3 => "servernet3",
        })
    }
}

/// One of the two disjoint fabric planes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Plane {
    /// The X plane.
    #[serde(rename = "x")]
    X,
    /// The Y plane.
    #[serde(rename = "y")]
    Y,
}

impl Plane {
    /// The fabric crate's plane.
    pub const fn to_fabric(self) -> snet_fabric::Plane {
        match self {
            Plane::X => snet_fabric::Plane::X,
            Plane::Y => snet_fabric::Plane::Y,
        }
    }
}

impl fmt::Display for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Plane::X => "x",
            Plane::Y => "y",
        })
    }
}

impl FromStr for Plane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "x" => Ok(Plane::X),
            "y" => Ok(Plane::Y),
            other => Err(format!("unknown plane `{other}`: the planes are x and y")),
        }
    }
}

/// How the routers of each plane are laid out.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum Shape {
    /// One router per plane; every endpoint attaches to it.
    #[serde(rename = "single_router")]
    SingleRouter,
    /// `routers` routers per plane: router 0 is the hub, every other router
    /// has one link to it; endpoints are spread over all of them.
    #[serde(rename = "star")]
    Star,
    /// Two levels per plane: `spines` spine routers and `leaves` leaf
    /// routers, every leaf linked to every spine; endpoints on the leaves.
    #[serde(rename = "tree")]
    Tree,
    /// Routers and links listed one by one in `routers` and `links`.
    #[serde(rename = "explicit")]
    Explicit,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::SingleRouter => "single_router",
            Shape::Star => "star",
            Shape::Tree => "tree",
            Shape::Explicit => "explicit",
        })
    }
}

/// `routers`: a count per plane (star) or a list of routers (explicit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routers {
    /// Routers per plane.
    Count(u32),
    /// Every router, by name.
    List(Vec<RouterDef>),
}

impl<'de> Deserialize<'de> for Routers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Routers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of routers per plane, or a list of routers")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Routers, E> {
                u32::try_from(v)
                    .map(Routers::Count)
                    .map_err(|_| E::custom(format!("{v} routers is too many")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Routers, E> {
                Err(E::custom(format!(
                    "a router count cannot be negative (found {v})"
                )))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Routers, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Routers::List)
            }
        }
        d.deserialize_any(V)
    }
}

/// A router named by plane and index: `x0`, `y3`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouterName {
    /// Its plane.
    pub plane: Plane,
    /// Its index within the plane.
    pub index: u32,
}

impl FromStr for RouterName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad =
            || format!("`{t}` is not a router name: write the plane and the index, e.g. x0, y3");
        let mut chars = t.chars();
        let plane = match chars.next() {
            Some('x') => Plane::X,
            Some('y') => Plane::Y,
            _ => return Err(bad()),
        };
        let digits = chars.as_str();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let index = digits.parse().map_err(|_| bad())?;
        Ok(RouterName { plane, index })
    }
}

deserialize_from_str!(RouterName, "a router name such as x0 or y3");

impl fmt::Display for RouterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.plane, self.index)
    }
}

/// One router of an explicit fabric.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterDef {
    /// Its name, `x0`, `y1`, …: the plane and the index (required; the
    /// indices of a plane run 0, 1, 2, … without gaps).
    pub id: RouterName,
    /// Its port count (default: the generation's).
    #[serde(default)]
    pub ports: Option<u32>,
}

/// One end of an explicit link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// A router: `x0`.
    Router(RouterName),
    /// A processor: `processor 3`.
    Processor(u32),
    /// An adapter by name: `adapter lan0`.
    Adapter(String),
}

impl FromStr for LinkEnd {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            [r] => r
                .parse()
                .map(LinkEnd::Router)
                .map_err(|_| link_end_error(t)),
            ["processor", n] => n
                .parse()
                .map(LinkEnd::Processor)
                .map_err(|_| link_end_error(t)),
            ["adapter", name] => Ok(LinkEnd::Adapter((*name).to_string())),
            _ => Err(link_end_error(t)),
        }
    }
}

fn link_end_error(t: &str) -> String {
    format!("`{t}` is not a link end: write a router (x0), `processor N` or `adapter NAME`")
}

deserialize_from_str!(LinkEnd, "a link end: x0, processor N or adapter NAME");

impl fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkEnd::Router(r) => write!(f, "{r}"),
            LinkEnd::Processor(p) => write!(f, "processor {p}"),
            LinkEnd::Adapter(a) => write!(f, "adapter {a}"),
        }
    }
}

/// One link of an explicit fabric.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDef {
    /// One end (required).
    pub from: LinkEnd,
    /// The other end (required).
    pub to: LinkEnd,
    /// Speed of this link (default: `fabric.link.bandwidth`).
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// Latency of this link (default: `fabric.link.latency`).
    #[serde(default)]
    pub latency: Option<Duration>,
}

/// Speed and length of the fabric's links.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkParams {
    /// Bandwidth per direction (default: the generation's, 50/125/250 MB/s).
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// Propagation latency per direction (default 20ns).
    #[serde(default = "default_link_latency")]
    pub latency: Duration,
}

fn default_link_latency() -> Duration {
    Duration::from_ns(20)
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            bandwidth: None,
            latency: default_link_latency(),
        }
    }
}

/// The ServerNet fabric: generation, planes, router layout and timing.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fabric {
    /// `servernet1`, `servernet2` (default) or `servernet3`.
    pub generation: Generation,
    /// The planes present: `[x, y]` (default), `[x]` or `[y]`.
    #[serde(deserialize_with = "one_or_many")]
    pub planes: Vec<Plane>,
    /// The router layout; when absent it follows from the other fields (see
    /// [`Fabric::shape`]).
    pub shape: Option<Shape>,
    /// Star: routers per plane. Explicit: the list of routers.
    pub routers: Option<Routers>,
    /// Tree: leaf routers per plane (default 2).
    pub leaves: Option<u32>,
    /// Tree: spine routers per plane (default 1).
    pub spines: Option<u32>,
    /// Explicit: the links, numbered from 0 in this order.
    pub links: Vec<LinkDef>,
    /// Ports per router (default: the generation's, 6/12/32; 2..=64).
    pub router_ports: Option<u32>,
    /// Link speed and latency.
    pub link: LinkParams,
    /// Router path-formation delay (default 300ns).
    pub path_formation: Duration,
    /// Packet slots in every input buffer, i.e. credits per channel (default 2).
    pub buffer_slots: u32,
    /// Time a target takes to answer a request (default 100ns).
    pub turnaround: Duration,
    /// How long a requester waits for a response before retrying on the
    /// other plane (default 200us).
    pub transaction_timeout: Duration,
    /// Attempts per packet before a transfer fails (default 4).
    pub max_attempts: u32,
    /// Probability that a packet is corrupted crossing one link (default 0).
    pub crc_error_rate: Probability,
    /// Allow transaction-level trains for uncontended transfers (default true).
    pub trains: bool,
}

impl Default for Fabric {
    fn default() -> Self {
        Fabric {
            generation: Generation::ServerNet2,
            planes: vec![Plane::X, Plane::Y],
            shape: None,
            routers: None,
            leaves: None,
            spines: None,
            links: Vec::new(),
            router_ports: None,
            link: LinkParams::default(),
            path_formation: Duration::from_ns(300),
            buffer_slots: 2,
            turnaround: Duration::from_ns(100),
            transaction_timeout: Duration::from_us(200),
            max_attempts: 4,
            crc_error_rate: Probability::ZERO,
            trains: true,
        }
    }
}

impl Fabric {
    /// The layout: `shape` when given; otherwise `explicit` when `routers` is
    /// a list, `star` when it is a number above 1, `tree` when `leaves` or
    /// `spines` is given, else `single_router`.
    pub fn shape(&self) -> Shape {
        if let Some(s) = self.shape {
            return s;
        }
        match &self.routers {
            Some(Routers::List(_)) => Shape::Explicit,
            Some(Routers::Count(n)) if *n > 1 => Shape::Star,
            _ if self.leaves.is_some() || self.spines.is_some() => Shape::Tree,
            _ => Shape::SingleRouter,
        }
    }
    /// Ports per router.
    pub fn router_ports(&self) -> u32 {
        self.router_ports
            .unwrap_or_else(|| self.generation.router_ports())
    }
    /// Link bandwidth per direction.
    pub fn link_bandwidth(&self) -> Bandwidth {
        self.link
            .bandwidth
            .unwrap_or_else(|| self.generation.link_bandwidth())
    }
    /// Routers per plane of a star (default 2).
    pub fn star_routers(&self) -> u32 {
        match self.routers {
            Some(Routers::Count(n)) => n,
            _ => 2,
        }
    }
    /// Leaves per plane of a tree (default 2).
    pub fn tree_leaves(&self) -> u32 {
        self.leaves.unwrap_or(2)
    }
    /// Spines per plane of a tree (default 1).
    pub fn tree_spines(&self) -> u32 {
        self.spines.unwrap_or(1)
    }
    /// Whether the fabric has this plane.
    pub fn has_plane(&self, p: Plane) -> bool {
        self.planes.contains(&p)
    }
}

// ---- processors ---------------------------------------------------------------

/// The CPU cost model: how long each operation occupies a processor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuCosts {
    /// TCP/IP processing of one segment (default 10us).
    pub per_segment: Duration,
    /// Per byte of payload: checksum and socket copy (default 1ns).
    pub per_byte: Duration,
    /// One inter-processor message, the "hop" (default 10us).
    pub per_message: Duration,
    /// One socket call: send, receive, accept (default 2us).
    pub per_socket_call: Duration,
    /// One unit of application work, for apps whose `work` is a count (default 10us).
    pub per_app_unit: Duration,
}

impl Default for CpuCosts {
    fn default() -> Self {
        CpuCosts {
            per_segment: Duration::from_us(10),
            per_byte: Duration::from_ns(1),
            per_message: Duration::from_us(10),
            per_socket_call: Duration::from_us(2),
            per_app_unit: Duration::from_us(10),
        }
    }
}

/// The processors of the cluster.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Processors {
    /// How many (default 4, 1..=4096); numbered from 0.
    pub count: u32,
    /// Split into this many nodes of equal size, at most 16 processors each
    /// (for reports; default: one node, or as many as 16-processor nodes need).
    pub nodes: Option<u32>,
    /// Memory of each processor (default 64MiB, lazily touched).
    pub memory: Size,
    /// The CPU cost model.
    pub cpu: CpuCosts,
}

impl Default for Processors {
    fn default() -> Self {
        Processors {
            count: 4,
            nodes: None,
            memory: Size::from_bytes(64 << 20),
            cpu: CpuCosts::default(),
        }
    }
}

impl Processors {
    /// Number of nodes: `nodes`, or enough 16-processor nodes.
    pub fn node_count(&self) -> u32 {
        self.nodes
            .unwrap_or_else(|| self.count.div_ceil(MAX_PROCESSORS_PER_NODE).max(1))
    }
}

// ---- adapters -----------------------------------------------------------------

/// An Ethernet MAC address, written `02:00:00:00:00:10`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// All zero: never a valid address; stands for "not given" before loading ends.
    pub(crate) const UNSET: MacAddr = MacAddr([0; 6]);
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad =
            || format!("`{t}` is not a MAC address: write six hex bytes, e.g. 02:00:00:00:00:10");
        let parts: Vec<&str> = t.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (slot, part) in mac.iter_mut().zip(&parts) {
            if part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if mac == [0; 6] {
            return Err(format!(
                "`{t}` is the all-zero MAC address, which no adapter may use"
            ));
        }
        if mac[0] & 1 == 1 {
            return Err(format!(
                "`{t}` is a multicast MAC address (lowest bit of the first byte set); an adapter needs a unicast one"
            ));
        }
        Ok(MacAddr(mac))
    }
}

deserialize_from_str!(MacAddr, "a MAC address such as 02:00:00:00:00:10");

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An adapter's part in sharing an IP address with other adapters.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum Role {
    /// Serves the IP address.
    #[serde(rename = "primary")]
    Primary,
    /// Holds the same filters and takes the IP address over when the primary fails.
    #[serde(rename = "backup")]
    Backup,
}

/// Interrupt coalescing: raise an interrupt after `count` completions or
/// `time` after the first, whichever comes first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Coalesce {
    /// Completions per interrupt (default 1: an interrupt per frame).
    pub count: u32,
    /// Longest wait after the first completion (default 0).
    pub time: Duration,
}

impl Default for Coalesce {
    fn default() -> Self {
        Coalesce {
            count: 1,
            time: Duration::ZERO,
        }
    }
}

/// A smart LAN adapter.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adapter {
    /// Its name (required; unique), used by faults and reports.
    #[serde(deserialize_with = "non_empty")]
    pub name: String,
    /// The cluster IP address(es) it serves, IPv4 and/or IPv6 (required).
    #[serde(deserialize_with = "ip_list")]
    pub ip: Vec<IpAddr>,
    /// Its MAC address (default 02:00:00:00:00:10 for the first adapter,
    /// :11 for the second, …).
    #[serde(default)]
    pub mac: MacAddr,
    /// The fabric planes it is attached to (default: every plane of the fabric).
    #[serde(default, deserialize_with = "one_or_many")]
    pub fabric_ports: Vec<Plane>,
    /// Speed of its Ethernet port (default 1Gbit/s).
    #[serde(default = "default_link_speed")]
    pub link_speed: Bandwidth,
    /// Largest IP packet (default 1500; 68..=9216, at least 1280 with IPv6).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Primary or backup when several adapters serve one IP address.
    #[serde(default)]
    pub role: Option<Role>,
    /// Receive descriptors per queue (default 512; a power of two, 8..=32768).
    #[serde(default = "default_ring")]
    pub rx_ring: u32,
    /// Transmit descriptors per queue (default 512; a power of two, 8..=32768).
    #[serde(default = "default_ring")]
    pub tx_ring: u32,
    /// Returned receive buffers are reposted once this many wait (default
    /// 32, at most a quarter of `rx_ring`; 1 reposts at every poll).
    #[serde(default = "default_rx_refill")]
    pub rx_refill: u32,
    /// Interrupt coalescing.
    #[serde(default)]
    pub coalesce: Coalesce,
}

fn default_link_speed() -> Bandwidth {
    Generation::ServerNet2.link_bandwidth() // 125 MB/s = 1 Gbit/s
}
fn default_mtu() -> u32 {
    1500
}
fn default_ring() -> u32 {
    512
}
fn default_rx_refill() -> u32 {
    32
}

impl Adapter {
    /// The adapter used when a scenario lists none: `lan0` at 198.18.0.10.
    pub fn default_lan0() -> Adapter {
        Adapter {
            name: "lan0".into(),
            ip: vec![IpAddr::from([198, 18, 0, 10])],
            mac: MacAddr([0x02, 0, 0, 0, 0, 0x10]),
            fabric_ports: Vec::new(),
            link_speed: default_link_speed(),
            mtu: default_mtu(),
            role: None,
            rx_ring: default_ring(),
            tx_ring: default_ring(),
            rx_refill: default_rx_refill(),
            coalesce: Coalesce::default(),
        }
    }
}

struct Ip(IpAddr);

impl FromStr for Ip {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse().map(Ip).map_err(|_| {
            format!(
                "`{}` is not an IP address: write IPv4 like 198.18.0.10 or IPv6 like 2001:db8::10",
                s.trim()
            )
        })
    }
}

deserialize_from_str!(Ip, "an IP address such as 198.18.0.10 or 2001:db8::10");

fn ip_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    one_or_many::<D, Ip>(d).map(|v| v.into_iter().map(|ip| ip.0).collect())
}

// ---- stack ----------------------------------------------------------------------

/// Where TCP/IP runs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Stack {
    /// The parallel library: a TCP/IP instance in every processor, all
    /// sharing the cluster IP (the default).
    #[default]
    Parallel,
    /// One TCP/IP process in one processor; every other processor's socket
    /// calls are a hop away.
    Conventional {
        /// The processor running TCP/IP (default 0).
        processor: u32,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StackMap {
    kind: StackKind,
    #[serde(default)]
    processor: Option<u32>,
}

#[derive(Deserialize)]
enum StackKind {
    #[serde(rename = "parallel")]
    Parallel,
    #[serde(rename = "conventional")]
    Conventional,
}

impl<'de> Deserialize<'de> for Stack {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Stack;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`parallel`, `conventional`, or { kind: conventional, processor: N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stack, E> {
                match v {
                    "parallel" => Ok(Stack::Parallel),
                    "conventional" => Ok(Stack::Conventional { processor: 0 }),
                    other => Err(E::custom(format!(
                        "unknown stack `{other}`: write parallel or conventional"
                    ))),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Stack, A::Error> {
                let m = StackMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (m.kind, m.processor) {
                    (StackKind::Parallel, None) => Ok(Stack::Parallel),
                    (StackKind::Parallel, Some(_)) => Err(de::Error::custom(
                        "the parallel stack runs TCP/IP in every processor: `processor` applies only to kind: conventional",
                    )),
                    (StackKind::Conventional, p) => Ok(Stack::Conventional {
                        processor: p.unwrap_or(0),
                    }),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stack::Parallel => f.write_str("parallel"),
            Stack::Conventional { processor } => {
                write!(f, "conventional (TCP/IP in processor {processor})")
            }
        }
    }
}

// ---- firmware ---------------------------------------------------------------------

/// TCP or UDP.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(rename = "tcp")]
    Tcp,
    /// UDP.
    #[serde(rename = "udp")]
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// How connection requests on a shared port are spread over its listeners.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Policy {
    /// Strict turn: 1st, 2nd, 3rd, 1st, … (the default).
    #[default]
    #[serde(rename = "round-robin")]
    RoundRobin,
    /// By the capacity each processor reports.
    #[serde(rename = "capacity-weighted")]
    CapacityWeighted,
    /// Consistent hashing of the client's address and port.
    #[serde(rename = "maglev")]
    Maglev,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::RoundRobin => "round-robin",
            Policy::CapacityWeighted => "capacity-weighted",
            Policy::Maglev => "maglev",
        })
    }
}

/// An inclusive range of ports, written `23` or `"1-1023"`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port (≥ 1).
    pub first: u16,
    /// Last port (≥ first).
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ALL: PortRange = PortRange {
        first: 1,
        last: u16::MAX,
    };
    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
    /// Whether two ranges share a port.
    pub fn overlaps(self, other: PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) => Err("port 0 cannot be listened on: ports are 1..=65535".to_string()),
                Ok(n) => Ok(n),
                Err(_) => Err(format!(
                    "`{t}` is not a port range: write a port (23) or FIRST-LAST (\"1-1023\"), ports 1..=65535"
                )),
            }
        };
        let (first, last) = match t.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(t)?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!("the port range `{t}` ends before it starts"));
        }
        Ok(PortRange { first, last })
    }
}

deserialize_from_str!(PortRange, "a port (23) or a range (\"1-1023\")");

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A port range with round-robin (shared) listening enabled.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRange {
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The ports (required).
    pub ports: PortRange,
    /// The spreading policy (default round-robin).
    #[serde(default)]
    pub policy: Policy,
}

/// Which ports several processors may listen on together, and how new
/// connections are spread over them. Ports outside every range are
/// exclusive: the first processor to listen owns the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Every TCP and UDP port is shared with this policy (written as the
    /// policy alone, e.g. `distribution: round-robin`; the default).
    All(Policy),
    /// No port is shared (`distribution: exclusive`).
    Exclusive,
    /// Only these ranges are shared.
    Ranges(Vec<ShareRange>),
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution::All(Policy::RoundRobin)
    }
}

impl Distribution {
    /// The policy for a port, or `None` when the port is exclusive.
    pub fn policy_for(&self, protocol: Protocol, port: u16) -> Option<Policy> {
        match self {
            Distribution::All(p) => Some(*p),
            Distribution::Exclusive => None,
            Distribution::Ranges(r) => r
                .iter()
                .find(|r| r.protocol == protocol && r.ports.contains(port))
                .map(|r| r.policy),
        }
    }
    /// The shared ranges, with `All` spelled out for TCP and UDP.
    pub fn ranges(&self) -> Vec<ShareRange> {
        match self {
            Distribution::All(policy) => [Protocol::Tcp, Protocol::Udp]
                .into_iter()
                .map(|protocol| ShareRange {
                    protocol,
                    ports: PortRange::ALL,
                    policy: *policy,
                })
                .collect(),
            Distribution::Exclusive => Vec::new(),
            Distribution::Ranges(r) => r.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Distribution {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Distribution;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a policy (round-robin, capacity-weighted, maglev), `exclusive`, or a list of port ranges")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Distribution, E> {
                if v == "exclusive" {
                    return Ok(Distribution::Exclusive);
                }
                Policy::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(Distribution::All)
                    .map_err(|_| {
                        E::custom(format!(
                            "unknown distribution `{v}`: write round-robin, capacity-weighted, maglev or exclusive, or a list of {{ protocol, ports, policy }}"
                        ))
                    })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Distribution, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(Distribution::Ranges)
            }
        }
        d.deserialize_any(V)
    }
}

/// Adapter firmware settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Firmware {
    /// Shared ports and their policy (default: every port, round-robin).
    pub distribution: Distribution,
    /// A custom filter tree (YAML), relative to the scenario file; after
    /// loading, the path joined with the scenario file's folder.
    pub filter: Option<PathBuf>,
    /// Established connections the adapter's table holds (default 65536).
    pub connections: u32,
    /// The first master processor, which gets unmatched traffic (default 0).
    pub master: u32,
}

impl Default for Firmware {
    fn default() -> Self {
        Firmware {
            distribution: Distribution::default(),
            filter: None,
            connections: 65_536,
            master: 0,
        }
    }
}

// ---- apps -----------------------------------------------------------------------

/// The server models of the white paper, plus two simple ones.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum AppModel {
    /// Copies of one server share the port (round-robin).
    #[serde(rename = "monolithic")]
    Monolithic,
    /// An inetd-style spawner hands connections to workers (accept_nw1/accept_nw2).
    #[serde(rename = "listener")]
    Listener,
    /// A front end does all socket I/O and forwards data to back ends over IPC.
    #[serde(rename = "distributor")]
    Distributor,
    /// Distributors hand connections off so data bypasses them.
    #[serde(rename = "hybrid")]
    Hybrid,
    /// The client asks a broker, then connects to the server it names.
    #[serde(rename = "broker")]
    Broker,
    /// Sends every request back.
    #[serde(rename = "echo")]
    Echo,
    /// Reads and discards.
    #[serde(rename = "sink")]
    Sink,
    /// A small HTTP/1.1 server for real clients (`snet live`): answers
    /// every GET with a body of a checkable pattern.
    #[serde(rename = "http")]
    Http,
}

impl AppModel {
    /// Every model.
    pub const ALL: [AppModel; 8] = [
        AppModel::Monolithic,
        AppModel::Listener,
        AppModel::Distributor,
        AppModel::Hybrid,
        AppModel::Broker,
        AppModel::Echo,
        AppModel::Sink,
        AppModel::Http,
    ];
    /// The name used in scenario files.
    pub const fn name(self) -> &'static str {
        match self {
            AppModel::Monolithic => "monolithic",
            AppModel::Listener => "listener",
            AppModel::Distributor => "distributor",
            AppModel::Hybrid => "hybrid",
            AppModel::Broker => "broker",
            AppModel::Echo => "echo",
            AppModel::Sink => "sink",
            AppModel::Http => "http",
        }
    }
    /// Whether the model has back-end workers (`workers`).
    pub const fn has_workers(self) -> bool {
        matches!(
            self,
            AppModel::Listener | AppModel::Distributor | AppModel::Hybrid
        )
    }
    /// Whether the model needs TCP: it hands TCP connections over, or
    /// speaks HTTP.
    pub const fn needs_tcp(self) -> bool {
        matches!(
            self,
            AppModel::Listener | AppModel::Hybrid | AppModel::Broker | AppModel::Http
        )
    }
    /// Whether the model speaks the testbench's own protocol, so the
    /// built-in client populations can talk to it (`http` speaks HTTP to
    /// real clients instead).
    pub const fn speaks_wire(self) -> bool {
        !matches!(self, AppModel::Http)
    }
}

impl fmt::Display for AppModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of processors: `all`, a list `[0, 1, 2]`, a range `"0-3"`, or a
/// list mixing numbers and ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Selection {
    /// Every processor.
    #[default]
    All,
    /// These processors, in the order written.
    List(Vec<u32>),
}

impl Selection {
    /// The processors, given the processor count.
    pub fn resolve(&self, count: u32) -> Vec<u32> {
        match self {
            Selection::All => (0..count).collect(),
            Selection::List(l) => l.clone(),
        }
    }
    /// Whether processor `p` is selected.
    pub fn contains(&self, p: u32) -> bool {
        match self {
            Selection::All => true,
            Selection::List(l) => l.contains(&p),
        }
    }
}

fn selection_item(text: &str, out: &mut Vec<u32>) -> Result<(), String> {
    let t = text.trim();
    let num = |s: &str| -> Result<u32, String> {
        s.trim().parse::<u32>().map_err(|_| {
            format!("`{t}` is not a processor selection: write all, a number, a list [0, 1], or a range \"0-3\"")
        })
    };
    match t.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("the processor range `{t}` ends before it starts"));
            }
            if b >= MAX_PROCESSORS {
                return Err(format!(
                    "the processor range `{t}` goes beyond the largest cluster ({MAX_PROCESSORS} processors)"
                ));
            }
            out.extend(a..=b);
        }
        None => out.push(num(t)?),
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Selection;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("all, a processor number, a list [0, 1], or a range \"0-3\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Selection, E> {
                if v.trim() == "all" {
                    return Ok(Selection::All);
                }
                let mut out = Vec::new();
                for part in v.split(',') {
                    selection_item(part, &mut out).map_err(E::custom)?;
                    if out.len() > MAX_PROCESSORS as usize * 4 {
                        return Err(E::custom("the processor list is too long"));
                    }
                }
                Ok(Selection::List(out))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Selection, E> {
                u32::try_from(v)
                    .map(|p| Selection::List(vec![p]))
                    .map_err(|_| E::custom(format!("processor {v} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Selection, E> {
                Err(E::custom(format!(
                    "processor numbers start at 0 (found {v})"
                )))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Selection, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<SelItem>()? {
                    out.extend(item.0);
                    if out.len() > MAX_PROCESSORS as usize * 4 {
                        return Err(de::Error::custom("the processor list is too long"));
                    }
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "the processor list is empty: list at least one processor, or write all",
                    ));
                }
                Ok(Selection::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One element of a processor list: a number or a range string.
struct SelItem(Vec<u32>);

impl<'de> Deserialize<'de> for SelItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SelItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a processor number or a range \"0-3\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SelItem, E> {
                u32::try_from(v)
                    .map(|p| SelItem(vec![p]))
                    .map_err(|_| E::custom(format!("processor {v} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SelItem, E> {
                Err(E::custom(format!(
                    "processor numbers start at 0 (found {v})"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SelItem, E> {
                let mut out = Vec::new();
                selection_item(v, &mut out).map_err(E::custom)?;
                Ok(SelItem(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selection::All => f.write_str("all"),
            Selection::List(l) => {
                f.write_str("[")?;
                for (i, p) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// CPU time an application spends per request: a duration (`50us`) or a
/// number of units of `processors.cpu.per_app_unit` (`3`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// This long.
    Time(Duration),
    /// This many units of `per_app_unit`.
    Units(u64),
}

impl Default for Work {
    fn default() -> Self {
        Work::Time(Duration::ZERO)
    }
}

impl Work {
    /// The CPU time, given the cost model.
    pub fn time(self, cpu: &CpuCosts) -> Duration {
        match self {
            Work::Time(d) => d,
            Work::Units(n) => Duration::from_ps(cpu.per_app_unit.as_ps().saturating_mul(n)),
        }
    }
}

impl<'de> Deserialize<'de> for Work {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Work;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration (50us) or a number of work units (3)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Work, E> {
                v.parse().map(Work::Time).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Work, E> {
                Ok(Work::Units(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Work, E> {
                Err(E::custom(format!("work cannot be negative (found {v})")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Work, E> {
                Err(E::custom(format!(
                    "work is a duration (50us) or a whole number of units, not {v}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A server application.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Its name, unique (default: the model and the port, e.g. `monolithic-23`).
    #[serde(default, deserialize_with = "non_empty")]
    pub name: String,
    /// The server model (required).
    pub model: AppModel,
    /// The port it listens on (required; 1..=65535).
    pub port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Where the listening part runs (default all).
    #[serde(default)]
    pub processors: Selection,
    /// Where the back-end workers run (listener, distributor, hybrid;
    /// default: every processor).
    #[serde(default)]
    pub workers: Option<Selection>,
    /// CPU time per request (default 0).
    #[serde(default)]
    pub work: Work,
    /// Bytes sent back per request when the client does not say (default:
    /// the request size for echo, nothing for sink, 1KiB otherwise); for
    /// http, the body of a response.
    #[serde(default)]
    pub response: Option<Size>,
    /// Broker only: the app (by name) whose server the broker names (required for broker).
    #[serde(default)]
    pub backend: Option<String>,
}

// ---- clients ----------------------------------------------------------------------

/// How requests arrive when a rate is given.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Arrival {
    /// Exponential gaps (the default).
    #[default]
    #[serde(rename = "poisson")]
    Poisson,
    /// Equal gaps.
    #[serde(rename = "constant")]
    Constant,
}

struct Target(SocketAddr);

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse().map(Target).map_err(|_| {
            format!(
                "`{}` is not an address and port: write 198.18.0.10:23, or [2001:db8::10]:23 for IPv6",
                s.trim()
            )
        })
    }
}

deserialize_from_str!(Target, "an address and port such as 198.18.0.10:23");

fn target<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    Target::deserialize(d).map(|t| t.0)
}

/// A population of clients.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Its name, unique (default `clients0`, `clients1`, … by position).
    #[serde(default, deserialize_with = "non_empty")]
    pub name: String,
    /// How many clients (default 1; 1..=1000000).
    #[serde(default = "one_u32")]
    pub count: u32,
    /// The cluster address and port they connect to (required): an adapter's
    /// IP and a port some app listens on; the IP version follows from it.
    #[serde(deserialize_with = "target")]
    pub target: SocketAddr,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Bytes per request (default 64B).
    #[serde(default = "default_request")]
    pub request: Size,
    /// Bytes per response (default: the app's).
    #[serde(default)]
    pub response: Option<Size>,
    /// Requests sent on one connection before it is closed (default 1).
    #[serde(default = "one_u32")]
    pub requests_per_connection: u32,
    /// Request rate of the whole population (default: closed loop, the next
    /// request when the previous response arrives, after `think`).
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Gaps between requests when `rate` is given (default poisson).
    #[serde(default)]
    pub arrival: Arrival,
    /// Pause between a response and the next request (default 0).
    #[serde(default)]
    pub think: Duration,
    /// When the clients start (default 0).
    #[serde(default)]
    pub start: Duration,
    /// When they stop sending new requests (default: the end of the run).
    #[serde(default)]
    pub stop: Option<Duration>,
}

fn default_request() -> Size {
    Size::from_bytes(64)
}

// ---- faults ---------------------------------------------------------------------------

/// Something a fault fails or restores.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultTarget {
    /// `processor 2`.
    Processor(u32),
    /// `link 3`: a fabric link by number (see the reference for the numbering).
    Link(u32),
    /// `router x0`.
    Router {
        /// Its plane.
        plane: Plane,
        /// Its index in the plane.
        index: u32,
    },
    /// `plane y`: every router and link of a plane.
    Plane(Plane),
    /// `adapter lan0`.
    Adapter(String),
    /// `processor running distributor`: the lowest-numbered processor where
    /// an app of that model (or with that name) listens.
    AppSelector(String),
}

const FAULT_TARGET_FORMS: &str = "processor N, link N, router x0, plane x|y, adapter NAME, or processor running APP (an app model or name)";

impl FromStr for FaultTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        let bad = || format!("`{t}` is not a fault target: write {FAULT_TARGET_FORMS}");
        let number = |n: &str| n.parse::<u32>().map_err(|_| bad());
        match words.as_slice() {
            ["processor", "running", app] => Ok(FaultTarget::AppSelector((*app).to_string())),
            ["processor", n] => number(n).map(FaultTarget::Processor),
            ["link", n] => number(n).map(FaultTarget::Link),
            ["router", r] => r
                .parse::<RouterName>()
                .map(|r| FaultTarget::Router {
                    plane: r.plane,
                    index: r.index,
                })
                .map_err(|_| bad()),
            ["plane", p] => p.parse().map(FaultTarget::Plane).map_err(|_| bad()),
            ["adapter", a] => Ok(FaultTarget::Adapter((*a).to_string())),
            _ => Err(bad()),
        }
    }
}

deserialize_from_str!(FaultTarget, "a fault target such as `processor 2`");

impl fmt::Display for FaultTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultTarget::Processor(p) => write!(f, "processor {p}"),
            FaultTarget::Link(l) => write!(f, "link {l}"),
            FaultTarget::Router { plane, index } => write!(f, "router {plane}{index}"),
            FaultTarget::Plane(p) => write!(f, "plane {p}"),
            FaultTarget::Adapter(a) => write!(f, "adapter {a}"),
            FaultTarget::AppSelector(a) => write!(f, "processor running {a}"),
        }
    }
}

/// Events a fault can wait for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TriggerEvent {
    /// Connections accepted, all apps together.
    Connections,
    /// Requests answered, all apps together.
    Requests,
}

/// `after: "connections:100"`: when the count of an event reaches a number.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Trigger {
    /// What is counted.
    pub event: TriggerEvent,
    /// The count that fires the fault (≥ 1).
    pub count: u64,
}

impl FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "`{t}` is not an event: write connections:N or requests:N, e.g. connections:100"
            )
        };
        let (event, count) = t.split_once(':').ok_or_else(bad)?;
        let event = match event.trim() {
            "connections" => TriggerEvent::Connections,
            "requests" => TriggerEvent::Requests,
            _ => return Err(bad()),
        };
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("`{t}`: the count must be at least 1"));
        }
        Ok(Trigger { event, count })
    }
}

deserialize_from_str!(Trigger, "an event such as connections:100");

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = match self.event {
            TriggerEvent::Connections => "connections",
            TriggerEvent::Requests => "requests",
        };
        write!(f, "{e}:{}", self.count)
    }
}

/// When a fault happens.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum When {
    /// At this virtual time.
    At(Duration),
    /// When an event count is reached.
    After(Trigger),
}

/// Settings a fault can change during the run.
#[derive(Copy, Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Probability that the client network loses a frame.
    #[serde(default)]
    pub lan_loss: Option<Probability>,
    /// Probability that a fabric packet is corrupted crossing one link.
    #[serde(default)]
    pub fabric_crc_error_rate: Option<Probability>,
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Fail the target.
    Fail(FaultTarget),
    /// Restore the target.
    Restore(FaultTarget),
    /// Change settings.
    Set(Settings),
}

/// A fault or change: one of `at` / `after`, and one of `fail` / `restore` / `set`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When.
    pub when: When,
    /// What.
    pub action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(default)]
    at: Option<Duration>,
    #[serde(default)]
    after: Option<Trigger>,
    #[serde(default)]
    fail: Option<FaultTarget>,
    #[serde(default)]
    restore: Option<FaultTarget>,
    #[serde(default)]
    set: Option<Settings>,
}

fn check_fault(raw: RawFault) -> Result<Fault, String> {
    let when = match (raw.at, raw.after) {
        (Some(at), None) => When::At(at),
        (None, Some(t)) => When::After(t),
        (None, None) => {
            return Err("a fault needs a time: give `at: 20ms` or `after: connections:100`".into());
        }
        (Some(_), Some(_)) => {
            return Err("a fault has one time: give `at` or `after`, not both".into());
        }
    };
    let action = match (raw.fail, raw.restore, raw.set) {
        (Some(t), None, None) => Action::Fail(t),
        (None, Some(t), None) => Action::Restore(t),
        (None, None, Some(s)) => {
            if s.lan_loss.is_none() && s.fabric_crc_error_rate.is_none() {
                return Err("`set` changes nothing: give lan_loss or fabric_crc_error_rate".into());
            }
            Action::Set(s)
        }
        (None, None, None) => {
            return Err("a fault needs an action: give `fail`, `restore` or `set`".into());
        }
        _ => {
            return Err(
                "a fault does one thing: give only one of `fail`, `restore` and `set`".into(),
            );
        }
    };
    Ok(Fault { when, action })
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_map(d, "a fault: { at: 20ms, fail: processor 2 }", check_fault)
    }
}

// ---- expectations -----------------------------------------------------------------

/// Something that must hold at the end of a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Expectation {
    /// No byte acknowledged to or by a surviving processor is lost.
    NoDataLostOnSurvivors,
    /// Every connection owned by a surviving processor completes.
    AllSurvivorConnectionsComplete,
    /// After a processor fails, new connections go only to survivors.
    SurvivorsTakeNewConnections,
    /// No DMA request is refused by an AVT check.
    NoAvtViolations,
    /// Connections of a failed processor are reset within this time.
    ResetWithin(Duration),
    /// At the end of the run no connection has waited longer than this
    /// with nothing arriving (for its handshake, an answer or the close).
    NoStalledConnections(Duration),
    /// Connections per listening processor differ from the mean by at most
    /// `tolerance` (a fraction of the mean).
    EvenDistribution {
        /// Allowed deviation, a fraction of the mean (default 0.1).
        tolerance: Probability,
    },
    /// Goodput over the run is at least this.
    ThroughputAtLeast(Bandwidth),
    /// The given request latency percentile is at most this.
    Latency {
        /// The percentile, in (0, 100].
        percentile: f64,
        /// The bound.
        at_most: Duration,
    },
    /// A comparison over report fields.
    Expr(Expr),
}

/// Bare names an expectation can be.
pub(crate) const EXPECT_NAMES: &str = "no_data_lost_on_survivors, all_survivor_connections_complete, survivors_take_new_connections, no_stalled_connections, no_avt_violations, even_distribution";
/// Keys an expectation map can have.
pub(crate) const EXPECT_KEYS: &str = "reset_within, no_stalled_connections, even_distribution, throughput_at_least, latency, latency_pNN_at_most (e.g. latency_p99_at_most), expr";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvenRaw {
    #[serde(default = "default_tolerance")]
    tolerance: Probability,
}

/// How long a connection may wait with nothing arriving before
/// `no_stalled_connections` (written bare) calls it stalled: longer than a
/// TCP retransmission timeout, which is hundreds of milliseconds for a
/// young connection (smoltcp starts at 700 ms), so a segment lost and sent
/// again is not taken for a stall.
pub const DEFAULT_STALL: Duration = Duration::from_ms(1000);

fn default_tolerance() -> Probability {
    Probability::new(0.1).unwrap_or(Probability::ZERO)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyRaw {
    #[serde(default = "default_percentile")]
    percentile: f64,
    at_most: Duration,
}

fn default_percentile() -> f64 {
    99.0
}

fn check_percentile(p: f64) -> Result<f64, String> {
    if p > 0.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(format!("percentile {p} is outside (0, 100]"))
    }
}

impl<'de> Deserialize<'de> for Expectation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Expectation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expectation: a name such as no_data_lost_on_survivors, or a one-key map such as reset_within: 5ms")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expectation, E> {
                match v.trim() {
                    "no_data_lost_on_survivors" => Ok(Expectation::NoDataLostOnSurvivors),
                    "all_survivor_connections_complete" => {
                        Ok(Expectation::AllSurvivorConnectionsComplete)
                    }
                    "survivors_take_new_connections" => {
                        Ok(Expectation::SurvivorsTakeNewConnections)
                    }
                    "no_avt_violations" => Ok(Expectation::NoAvtViolations),
                    "no_stalled_connections" => {
                        Ok(Expectation::NoStalledConnections(DEFAULT_STALL))
                    }
                    "even_distribution" => Ok(Expectation::EvenDistribution {
                        tolerance: default_tolerance(),
                    }),
                    other => Err(E::custom(format!(
                        "unknown expectation `{other}`: the names are {EXPECT_NAMES}; the one-key maps are {EXPECT_KEYS}"
                    ))),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Expectation, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!(
                        "an empty map is no expectation: give one of {EXPECT_KEYS}"
                    )));
                };
                let e = match key.as_str() {
                    "reset_within" => Expectation::ResetWithin(map.next_value()?),
                    "no_stalled_connections" => {
                        Expectation::NoStalledConnections(map.next_value()?)
                    }
                    "even_distribution" => {
                        let raw: Option<EvenRaw> = map.next_value()?;
                        Expectation::EvenDistribution {
                            tolerance: raw.map_or_else(default_tolerance, |r| r.tolerance),
                        }
                    }
                    "throughput_at_least" => Expectation::ThroughputAtLeast(map.next_value()?),
                    "latency" => {
                        let raw: LatencyRaw = map.next_value()?;
                        Expectation::Latency {
                            percentile: check_percentile(raw.percentile)
                                .map_err(de::Error::custom)?,
                            at_most: raw.at_most,
                        }
                    }
                    "expr" => Expectation::Expr(map.next_value()?),
                    k => match k
                        .strip_prefix("latency_p")
                        .and_then(|r| r.strip_suffix("_at_most"))
                    {
                        Some(p) => {
                            let percentile: f64 = p.replace('_', ".").parse().map_err(|_| {
                                de::Error::custom(format!(
                                    "`{k}`: write the percentile as digits, e.g. latency_p99_at_most or latency_p99_9_at_most"
                                ))
                            })?;
                            Expectation::Latency {
                                percentile: check_percentile(percentile)
                                    .map_err(de::Error::custom)?,
                                at_most: map.next_value()?,
                            }
                        }
                        None => {
                            return Err(de::Error::custom(format!(
                                "unknown expectation `{k}`: the one-key maps are {EXPECT_KEYS}; the bare names are {EXPECT_NAMES}"
                            )));
                        }
                    },
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "an expectation has exactly one key; `{key}` is followed by `{extra}` (write each expectation as its own list item)"
                    )));
                }
                Ok(e)
            }
        }
        d.deserialize_any(V)
    }
}
