//! Checks that need the whole scenario: ranges, references between sections,
//! and settings that contradict each other. Each problem names a field path;
//! the loader turns it into a line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::error::{IssueKind, Problem};
use super::layout::{self, Layout, adapter_names, plane_list};
use super::model::{
    Action, AppModel, Distribution, Expectation, FaultTarget, MAX_MTU, MAX_PROCESSORS,
    MAX_PROCESSORS_PER_NODE, MAX_ROUTERS_PER_PLANE, Protocol, Role, Routers, Scenario, Shape,
    Stack, When,
};
use super::units::{Bandwidth, Duration, Size};

/// Largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: u64 = 65_507;
/// Slowest adapter port.
const MIN_LAN_SPEED: Bandwidth = Bandwidth::from_nonzero_bits(10_000_000);
/// Fastest adapter port.
const MAX_LAN_SPEED: Bandwidth = Bandwidth::from_nonzero_bits(400_000_000_000);
/// Most clients in one population.
const MAX_CLIENTS: u32 = 1_000_000;

/// Records `key` as used by item `i`; the item that used it first, if another.
fn first_use<K: Ord>(seen: &mut BTreeMap<K, usize>, key: K, i: usize) -> Option<usize> {
    match seen.get(&key) {
        Some(&j) => Some(j),
        None => {
            seen.insert(key, i);
            None
        }
    }
}

struct Checker<'a> {
    s: &'a Scenario,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn push(&mut self, path: impl Into<String>, kind: IssueKind, message: impl Into<String>) {
        self.problems.push(Problem::new(path, kind, message));
    }

    fn count(&self) -> u32 {
        self.s.processors.count
    }

    /// Checks a processor number; true when it exists.
    fn processor(&mut self, p: u32, path: &str) -> bool {
        let count = self.count();
        if p < count || count == 0 || count > MAX_PROCESSORS {
            // An out-of-range count is reported once, not at every reference.
            return true;
        }
        self.push(
            path,
            IssueKind::UnknownReference,
            format!(
                "processor {p} does not exist: processors are 0 to {} (processors.count is {count})",
                count.saturating_sub(1)
            ),
        );
        false
    }
}

/// Every problem of a deserialized, resolved scenario, and its fabric layout
/// when that could be built.
pub(crate) fn validate(s: &Scenario) -> (Vec<Problem>, Option<Layout>) {
    let mut c = Checker {
        s,
        problems: Vec::new(),
    };
    if s.duration == Duration::ZERO {
        c.push(
            "duration",
            IssueKind::OutOfRange,
            "a run must last more than 0s",
        );
    }
    let ranges_ok = fabric(&mut c) & processors(&mut c);
    adapters(&mut c);
    stack(&mut c);
    firmware(&mut c);
    apps(&mut c);
    clients(&mut c);
    let layout = if ranges_ok {
        match layout::build(s) {
            Ok(l) => Some(l),
            Err(p) => {
                c.problems.extend(p);
                None
            }
        }
    } else {
        None
    };
    faults(&mut c, layout.as_ref());
    expectations(&mut c);
    (c.problems, layout)
}

/// Returns whether the counts the layout needs are in range.
fn fabric(c: &mut Checker<'_>) -> bool {
    let f = &c.s.fabric;
    let mut ok = true;
    for (i, p) in f.planes.iter().enumerate() {
        if f.planes[..i].contains(p) {
            c.push(
                format!("fabric.planes[{i}]"),
                IssueKind::Duplicate,
                format!("plane {p} is listed twice"),
            );
        }
    }
    if let Some(p) = f.router_ports {
        if !(2..=64).contains(&p) {
            ok = false;
            c.push(
                "fabric.router_ports",
                IssueKind::OutOfRange,
                format!("a router has 2 to 64 ports (ServerNet: 6, 12, 32), not {p}"),
            );
        }
    }
    if !(1..=255).contains(&f.buffer_slots) {
        c.push(
            "fabric.buffer_slots",
            IssueKind::OutOfRange,
            format!("buffer_slots is 1 to 255, not {}", f.buffer_slots),
        );
    }
    if !(1..=255).contains(&f.max_attempts) {
        c.push(
            "fabric.max_attempts",
            IssueKind::OutOfRange,
            format!("max_attempts is 1 to 255, not {}", f.max_attempts),
        );
    }
    if f.transaction_timeout == Duration::ZERO {
        c.push(
            "fabric.transaction_timeout",
            IssueKind::OutOfRange,
            "a transaction timeout must be more than 0s",
        );
    }
    let shape = f.shape();
    match (&f.routers, shape) {
        (Some(Routers::List(_)), s) if s != Shape::Explicit => {
            ok = false;
            c.push(
                "fabric.routers",
                IssueKind::Conflict,
                format!("a list of routers needs shape: explicit (shape is {s}); for a star write routers: N"),
            );
        }
        (Some(Routers::Count(_)), Shape::Explicit) => {
            ok = false;
            c.push(
                "fabric.routers",
                IssueKind::Conflict,
                "shape: explicit needs routers as a list, e.g. [{ id: x0 }, { id: y0 }]",
            );
        }
        (Some(Routers::Count(n)), Shape::SingleRouter) if *n != 1 => {
            ok = false;
            c.push(
                "fabric.routers",
                IssueKind::Conflict,
                format!(
                    "shape: single_router has one router per plane; routers: {n} needs shape: star"
                ),
            );
        }
        (Some(Routers::Count(_)), Shape::Tree) => {
            ok = false;
            c.push(
                "fabric.routers",
                IssueKind::Conflict,
                "shape: tree is sized by leaves and spines, not routers",
            );
        }
        (Some(Routers::Count(n)), Shape::Star) if *n == 0 || *n > MAX_ROUTERS_PER_PLANE => {
            ok = false;
            c.push(
                "fabric.routers",
                IssueKind::OutOfRange,
                format!("a star has 1 to {MAX_ROUTERS_PER_PLANE} routers per plane, not {n}"),
            );
        }
        _ => {}
    }
    for (field, value) in [("leaves", f.leaves), ("spines", f.spines)] {
        let Some(v) = value else { continue };
        if shape != Shape::Tree {
            ok = false;
            c.push(
                format!("fabric.{field}"),
                IssueKind::Conflict,
                format!("{field} applies to shape: tree (shape is {shape})"),
            );
        } else if v == 0 || v > MAX_ROUTERS_PER_PLANE {
            ok = false;
            c.push(
                format!("fabric.{field}"),
                IssueKind::OutOfRange,
                format!("a tree has 1 to {MAX_ROUTERS_PER_PLANE} {field} per plane, not {v}"),
            );
        }
    }
    if !f.links.is_empty() && shape != Shape::Explicit {
        ok = false;
        c.push(
            "fabric.links",
            IssueKind::Conflict,
            format!("links are listed only with shape: explicit (shape is {shape})"),
        );
    }
    ok
}

fn processors(c: &mut Checker<'_>) -> bool {
    let p = c.s.processors;
    let mut ok = true;
    if p.count == 0 || p.count > MAX_PROCESSORS {
        ok = false;
        c.push(
            "processors.count",
            IssueKind::OutOfRange,
            format!(
                "a cluster has 1 to {MAX_PROCESSORS} processors, not {}",
                p.count
            ),
        );
    }
    if let Some(nodes) = p.nodes {
        if nodes == 0 {
            c.push(
                "processors.nodes",
                IssueKind::OutOfRange,
                "a cluster has at least 1 node",
            );
        } else if p.count % nodes != 0 {
            c.push(
                "processors.nodes",
                IssueKind::Conflict,
                format!(
                    "{} processors cannot be split into {nodes} nodes of equal size",
                    p.count
                ),
            );
        } else if p.count / nodes > MAX_PROCESSORS_PER_NODE {
            c.push(
                "processors.nodes",
                IssueKind::OutOfRange,
                format!(
                    "a node holds at most {MAX_PROCESSORS_PER_NODE} processors: {} processors need at least {} nodes",
                    p.count,
                    p.count.div_ceil(MAX_PROCESSORS_PER_NODE)
                ),
            );
        }
    }
    let (lo, hi) = (Size::from_bytes(64 << 10), Size::from_bytes(64 << 30));
    if p.memory < lo || p.memory > hi {
        c.push(
            "processors.memory",
            IssueKind::OutOfRange,
            format!("processor memory is {lo} to {hi}, not {}", p.memory),
        );
    }
    ok
}

fn describe_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn adapters(c: &mut Checker<'_>) {
    let s = c.s;
    let (min_speed, max_speed) = (MIN_LAN_SPEED, MAX_LAN_SPEED);
    // ip -> adapters serving it
    let mut by_ip: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut macs = BTreeMap::new();
    for (i, a) in s.adapters.iter().enumerate() {
        let path = format!("adapters[{i}]");
        if let Some(j) = first_use(&mut names, a.name.as_str(), i) {
            c.push(
                format!("{path}.name"),
                IssueKind::Duplicate,
                format!("adapter name {} is also used by adapters[{j}]", a.name),
            );
        }
        if let Some(j) = first_use(&mut macs, a.mac, i) {
            c.push(
                format!("{path}.mac"),
                IssueKind::Duplicate,
                format!(
                    "MAC {} is also used by adapter {} (adapters[{j}])",
                    a.mac, s.adapters[j].name
                ),
            );
        }
        for (k, ip) in a.ip.iter().enumerate() {
            let ip_path = format!("{path}.ip[{k}]");
            let bad = match ip {
                IpAddr::V4(v4) => {
                    v4.is_unspecified()
                        || v4.is_multicast()
                        || v4.is_broadcast()
                        || v4.is_loopback()
                }
                IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast() || v6.is_loopback(),
            };
            if bad {
                c.push(
                    &ip_path,
                    IssueKind::InvalidValue,
                    format!("{ip} cannot be a cluster address (unspecified, loopback, multicast or broadcast); use a unicast address such as 198.18.0.10"),
                );
            }
            if a.ip[..k].contains(ip) {
                c.push(
                    &ip_path,
                    IssueKind::Duplicate,
                    format!("{ip} is listed twice"),
                );
                continue;
            }
            by_ip.entry(*ip).or_default().push(i);
        }
        if a.mtu > MAX_MTU || a.mtu < 68 {
            c.push(
                format!("{path}.mtu"),
                IssueKind::OutOfRange,
                format!(
                    "mtu is 68 to {MAX_MTU} (1500 standard, 9000 jumbo), not {}",
                    a.mtu
                ),
            );
        } else if a.mtu < 1280 && a.ip.iter().any(IpAddr::is_ipv6) {
            c.push(
                format!("{path}.mtu"),
                IssueKind::Conflict,
                format!("IPv6 needs an mtu of at least 1280, not {}", a.mtu),
            );
        }
        for (field, v) in [("rx_ring", a.rx_ring), ("tx_ring", a.tx_ring)] {
            if !v.is_power_of_two() || !(8..=32_768).contains(&v) {
                c.push(
                    format!("{path}.{field}"),
                    IssueKind::OutOfRange,
                    format!(
                        "{field} is a power of two from 8 to 32768 (e.g. 256, 512, 1024), not {v}"
                    ),
                );
            }
        }
        if a.rx_refill == 0 {
            c.push(
                format!("{path}.rx_refill"),
                IssueKind::OutOfRange,
                "rx_refill is at least 1 (1 reposts receive buffers at every poll)".to_string(),
            );
        }
        for (k, p) in a.fabric_ports.iter().enumerate() {
            if !s.fabric.has_plane(*p) {
                c.push(
                    format!("{path}.fabric_ports[{k}]"),
                    IssueKind::UnknownReference,
                    format!(
                        "the fabric has no plane {p} (fabric.planes: {})",
                        plane_list(&s.fabric.planes)
                    ),
                );
            } else if a.fabric_ports[..k].contains(p) {
                c.push(
                    format!("{path}.fabric_ports[{k}]"),
                    IssueKind::Duplicate,
                    format!("plane {p} is listed twice"),
                );
            }
        }
        if a.link_speed < min_speed || a.link_speed > max_speed {
            c.push(
                format!("{path}.link_speed"),
                IssueKind::OutOfRange,
                format!(
                    "link_speed is {min_speed} to {max_speed}, not {}",
                    a.link_speed
                ),
            );
        }
        if a.coalesce.count == 0 {
            c.push(
                format!("{path}.coalesce.count"),
                IssueKind::OutOfRange,
                "coalesce.count is at least 1 (1: an interrupt per completion)",
            );
        }
    }
    let mut lone_backups = BTreeSet::new();
    for (ip, users) in &by_ip {
        let roles: Vec<Option<Role>> = users.iter().map(|&i| s.adapters[i].role).collect();
        if users.len() == 1 {
            if roles[0] == Some(Role::Backup) && lone_backups.insert(users[0]) {
                let i = users[0];
                c.push(
                    format!("adapters[{i}].role"),
                    IssueKind::Conflict,
                    format!(
                        "adapter {} is a backup for {ip}, but no other adapter serves {ip}",
                        s.adapters[i].name
                    ),
                );
            }
            continue;
        }
        let primaries = roles.iter().filter(|r| **r == Some(Role::Primary)).count();
        let unset = roles.iter().filter(|r| r.is_none()).count();
        if primaries != 1 || unset > 0 {
            let names: Vec<&str> = users.iter().map(|&i| s.adapters[i].name.as_str()).collect();
            let last = users[users.len() - 1];
            let k = s.adapters[last]
                .ip
                .iter()
                .position(|x| x == ip)
                .unwrap_or(0);
            c.push(
                format!("adapters[{last}].ip[{k}]"),
                IssueKind::Duplicate,
                format!(
                    "{ip} is served by {}: adapters sharing an address need `role: primary` on exactly one and `role: backup` on the others",
                    names.join(" and ")
                ),
            );
        }
    }
}

fn stack(c: &mut Checker<'_>) {
    if let Stack::Conventional { processor } = c.s.stack {
        let count = c.count();
        if count == 1 {
            let needs: Vec<&str> =
                c.s.apps
                    .iter()
                    .map(|a| a.model.name())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
            let models = if needs.is_empty() {
                String::new()
            } else {
                format!(" (apps: {})", needs.join(", "))
            };
            c.push(
                "stack",
                IssueKind::Conflict,
                format!(
                    "the conventional stack runs TCP/IP in one processor and the apps a hop away in others: it needs at least 2 processors, but processors.count is {count}{models}"
                ),
            );
        } else {
            c.processor(processor, "stack.processor");
        }
    }
}

fn firmware(c: &mut Checker<'_>) {
    let fw = &c.s.firmware;
    if let Distribution::Ranges(ranges) = &fw.distribution {
        for (j, r) in ranges.iter().enumerate() {
            if let Some(i) = ranges[..j]
                .iter()
                .position(|q| q.protocol == r.protocol && q.ports.overlaps(r.ports))
            {
                c.push(
                    format!("firmware.distribution[{j}].ports"),
                    IssueKind::Conflict,
                    format!(
                        "{} ports {} overlap {} of firmware.distribution[{i}]: a port has one policy",
                        r.protocol, r.ports, ranges[i].ports
                    ),
                );
            }
        }
    }
    if let Some(full) = &fw.filter {
        if !full.is_file() {
            c.push(
                "firmware.filter",
                IssueKind::MissingFile,
                format!(
                    "the filter file {} does not exist (the path is relative to the scenario file)",
                    full.display()
                ),
            );
        }
    }
    let master = fw.master;
    c.processor(master, "firmware.master");
    if fw.connections == 0 {
        c.push(
            "firmware.connections",
            IssueKind::OutOfRange,
            "the connection table holds at least 1 connection",
        );
    }
}

fn apps(c: &mut Checker<'_>) {
    let s = c.s;
    let count = c.count();
    let mut names = BTreeMap::new();
    for (i, a) in s.apps.iter().enumerate() {
        let path = format!("apps[{i}]");
        if let Some(j) = first_use(&mut names, a.name.as_str(), i) {
            c.push(
                format!("{path}.name"),
                IssueKind::Duplicate,
                format!("app name {} is also used by apps[{j}]", a.name),
            );
        }
        if a.port == 0 {
            c.push(
                format!("{path}.port"),
                IssueKind::OutOfRange,
                "port 0 cannot be listened on: ports are 1 to 65535",
            );
        }
        for (field, sel) in [
            ("processors", Some(&a.processors)),
            ("workers", a.workers.as_ref()),
        ] {
            let Some(sel) = sel else { continue };
            let list = sel.resolve(count);
            let p = format!("{path}.{field}");
            let mut reported = false;
            for (k, &n) in list.iter().enumerate() {
                if n >= count && !reported {
                    reported = !c.processor(n, &p);
                }
                if list[..k].contains(&n) {
                    c.push(
                        &p,
                        IssueKind::Duplicate,
                        format!("processor {n} is listed twice"),
                    );
                    break;
                }
            }
        }
        if a.workers.is_some() && !a.model.has_workers() {
            c.push(
                format!("{path}.workers"),
                IssueKind::Conflict,
                format!(
                    "workers applies to listener, distributor and hybrid apps; {} apps have none",
                    a.model
                ),
            );
        }
        if a.model.needs_tcp() && a.protocol == Protocol::Udp {
            c.push(
                format!("{path}.protocol"),
                IssueKind::Conflict,
                if a.model == AppModel::Http {
                    "an http app speaks HTTP over TCP: it needs protocol: tcp".to_string()
                } else {
                    format!(
                        "a {} app hands TCP connections over: it needs protocol: tcp",
                        a.model
                    )
                },
            );
        }
        match (&a.backend, a.model) {
            (None, AppModel::Broker) => c.push(
                format!("{path}.backend"),
                IssueKind::MissingField,
                "a broker names the server clients connect to next: give backend: APP (an app name)",
            ),
            (Some(_), m) if m != AppModel::Broker => c.push(
                format!("{path}.backend"),
                IssueKind::Conflict,
                format!("backend applies to broker apps only, not {m}"),
            ),
            (Some(b), _) => match s.apps.iter().find(|x| &x.name == b) {
                None => c.push(
                    format!("{path}.backend"),
                    IssueKind::UnknownReference,
                    format!("no app is named {b} (apps: {})", app_names(s)),
                ),
                Some(x) if x.model == AppModel::Broker => c.push(
                    format!("{path}.backend"),
                    IssueKind::Conflict,
                    format!("the backend {b} is itself a broker: name a server app"),
                ),
                Some(x) if !x.model.speaks_wire() => c.push(
                    format!("{path}.backend"),
                    IssueKind::Conflict,
                    format!(
                        "the backend {b} is an {} app, which the broker's clients cannot speak to: name a server app of another model",
                        x.model
                    ),
                ),
                Some(_) => {}
            },
            (None, _) => {}
        }
        let shared = s
            .firmware
            .distribution
            .policy_for(a.protocol, a.port)
            .is_some();
        let listeners = a.processors.resolve(count);
        if !shared
            && matches!(a.model, AppModel::Monolithic | AppModel::Http)
            && listeners.len() > 1
        {
            c.push(
                format!("{path}.processors"),
                IssueKind::Conflict,
                format!(
                    "copies in {} processors share {} port {}, but the port is exclusive (no firmware.distribution range covers it): add a range for it or write distribution: round-robin",
                    listeners.len(),
                    a.protocol,
                    a.port
                ),
            );
        }
        for (j, b) in s.apps[..i].iter().enumerate() {
            if b.protocol != a.protocol || b.port != a.port {
                continue;
            }
            if let Some(p) = listeners.iter().find(|p| b.processors.contains(**p)) {
                c.push(
                    format!("{path}.port"),
                    IssueKind::Conflict,
                    format!(
                        "app {} (apps[{j}]) already listens on {} port {} in processor {p}: one listener per processor per port",
                        b.name, a.protocol, a.port
                    ),
                );
            } else if !shared {
                c.push(
                    format!("{path}.port"),
                    IssueKind::Conflict,
                    format!(
                        "app {} (apps[{j}]) already listens on {} port {}, which is exclusive (no firmware.distribution range covers it): only one app can listen on it",
                        b.name, a.protocol, a.port
                    ),
                );
            }
        }
    }
}

fn app_names(s: &Scenario) -> String {
    if s.apps.is_empty() {
        return "none".into();
    }
    s.apps
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn clients(c: &mut Checker<'_>) {
    let s = c.s;
    let mut names = BTreeMap::new();
    for (i, cl) in s.clients.iter().enumerate() {
        let path = format!("clients[{i}]");
        if let Some(j) = first_use(&mut names, cl.name.as_str(), i) {
            c.push(
                format!("{path}.name"),
                IssueKind::Duplicate,
                format!("client name {} is also used by clients[{j}]", cl.name),
            );
        }
        if cl.count == 0 || cl.count > MAX_CLIENTS {
            c.push(
                format!("{path}.count"),
                IssueKind::OutOfRange,
                format!("count is 1 to {MAX_CLIENTS}, not {}", cl.count),
            );
        }
        let ip = cl.target.ip();
        if !s.adapters.iter().any(|a| a.ip.contains(&ip)) {
            let served: Vec<String> = s
                .adapters
                .iter()
                .map(|a| format!("{} {}", a.name, describe_ips(&a.ip)))
                .collect();
            c.push(
                format!("{path}.target"),
                IssueKind::UnknownReference,
                format!(
                    "adapter IP {ip} is not served by any adapter (adapters: {})",
                    served.join(", ")
                ),
            );
        }
        let port = cl.target.port();
        if !s
            .apps
            .iter()
            .any(|a| a.port == port && a.protocol == cl.protocol)
        {
            let listening: Vec<String> = s
                .apps
                .iter()
                .map(|a| (a.protocol, a.port))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|(protocol, port)| format!("{protocol} {port}"))
                .collect();
            c.push(
                format!("{path}.target"),
                IssueKind::UnknownReference,
                format!(
                    "no app listens on {} port {port} (apps listen on: {})",
                    cl.protocol,
                    if listening.is_empty() {
                        "nothing".to_string()
                    } else {
                        listening.join(", ")
                    }
                ),
            );
        }
        if let Some(a) = s
            .apps
            .iter()
            .find(|a| a.port == port && a.protocol == cl.protocol && !a.model.speaks_wire())
        {
            c.push(
                format!("{path}.target"),
                IssueKind::Conflict,
                format!(
                    "port {port} is served by the {} app {}, which speaks HTTP to real clients (snet live, docs/live.md); the built-in clients speak the testbench's protocol: target another app",
                    a.model, a.name
                ),
            );
        }
        if cl.requests_per_connection == 0 {
            c.push(
                format!("{path}.requests_per_connection"),
                IssueKind::OutOfRange,
                "requests_per_connection is at least 1",
            );
        }
        if cl.request.bytes() == 0 {
            c.push(
                format!("{path}.request"),
                IssueKind::OutOfRange,
                "a request has at least 1 byte",
            );
        } else if cl.protocol == Protocol::Udp && cl.request.bytes() > MAX_UDP_PAYLOAD {
            c.push(
                format!("{path}.request"),
                IssueKind::OutOfRange,
                format!(
                    "a UDP datagram carries at most {MAX_UDP_PAYLOAD} bytes, not {}",
                    cl.request
                ),
            );
        }
        if cl.start >= s.duration {
            c.push(
                format!("{path}.start"),
                IssueKind::OutOfRange,
                format!(
                    "start {} is not before the end of the run (duration {})",
                    cl.start, s.duration
                ),
            );
        }
        if let Some(stop) = cl.stop {
            if stop <= cl.start {
                c.push(
                    format!("{path}.stop"),
                    IssueKind::Conflict,
                    format!("stop {stop} is not after start {}", cl.start),
                );
            } else if stop > s.duration {
                c.push(
                    format!("{path}.stop"),
                    IssueKind::OutOfRange,
                    format!(
                        "stop {stop} is after the end of the run (duration {})",
                        s.duration
                    ),
                );
            }
        }
    }
}

/// The processor a `processor running APP` selector names, if any.
pub(crate) fn selector_processor(s: &Scenario, app: &str) -> Option<u32> {
    s.apps
        .iter()
        .filter(|a| a.name == app || a.model.name() == app)
        .filter_map(|a| a.processors.resolve(s.processors.count).into_iter().min())
        .min()
}

fn faults(c: &mut Checker<'_>, layout: Option<&Layout>) {
    let s = c.s;
    for (i, f) in s.faults.iter().enumerate() {
        let path = format!("faults[{i}]");
        if let When::At(t) = f.when {
            if t >= s.duration {
                c.push(
                    format!("{path}.at"),
                    IssueKind::OutOfRange,
                    format!(
                        "at {t} is not before the end of the run (duration {})",
                        s.duration
                    ),
                );
            }
        }
        let (field, target) = match &f.action {
            Action::Fail(t) => ("fail", t),
            Action::Restore(t) => ("restore", t),
            Action::Set(_) => continue,
        };
        let tpath = format!("{path}.{field}");
        match target {
            FaultTarget::Processor(p) => {
                c.processor(*p, &tpath);
            }
            FaultTarget::Link(n) => {
                if let Some(l) = layout {
                    if *n as usize >= l.links.len() {
                        c.push(
                            &tpath,
                            IssueKind::UnknownReference,
                            format!(
                                "link {n} does not exist: the fabric has {} links, 0 to {} (numbered plane x first: router links, then processors, then adapters)",
                                l.links.len(),
                                l.links.len().saturating_sub(1)
                            ),
                        );
                    }
                }
            }
            FaultTarget::Router { plane, index } => {
                if !s.fabric.has_plane(*plane) {
                    c.push(
                        &tpath,
                        IssueKind::UnknownReference,
                        format!("router {plane}{index} is on plane {plane}, which this fabric does not have (planes: {})", plane_list(&s.fabric.planes)),
                    );
                } else if let Some(l) = layout {
                    let n = l.routers_on(*plane);
                    if l.router(*plane, *index).is_none() {
                        c.push(
                            &tpath,
                            IssueKind::UnknownReference,
                            format!(
                                "router {plane}{index} does not exist: plane {plane} has {n} router{} ({plane}0 to {plane}{})",
                                if n == 1 { "" } else { "s" },
                                n.saturating_sub(1)
                            ),
                        );
                    }
                }
            }
            FaultTarget::Plane(p) => {
                if !s.fabric.has_plane(*p) {
                    c.push(
                        &tpath,
                        IssueKind::UnknownReference,
                        format!(
                            "the fabric has no plane {p} (planes: {})",
                            plane_list(&s.fabric.planes)
                        ),
                    );
                }
            }
            FaultTarget::Adapter(name) => {
                if !s.adapters.iter().any(|a| &a.name == name) {
                    c.push(
                        &tpath,
                        IssueKind::UnknownReference,
                        format!(
                            "adapter {name} does not exist (adapters: {})",
                            adapter_names(s)
                        ),
                    );
                }
            }
            FaultTarget::AppSelector(app) => {
                if selector_processor(s, app).is_none() {
                    let models: Vec<&str> = AppModel::ALL.iter().map(|m| m.name()).collect();
                    c.push(
                        &tpath,
                        IssueKind::UnknownReference,
                        format!(
                            "no app is named {app} or has model {app} (apps: {}; models: {})",
                            app_names(s),
                            models.join(", ")
                        ),
                    );
                }
            }
        }
    }
    fault_order(c);
}

/// Fails and restores at set times must alternate per target. With a fault
/// that waits for an event, the order is unknown and not checked.
fn fault_order(c: &mut Checker<'_>) {
    let s = c.s;
    if s.faults.iter().any(|f| matches!(f.when, When::After(_))) {
        return;
    }
    let key = |t: &FaultTarget| match t {
        FaultTarget::AppSelector(app) => {
            selector_processor(s, app).map_or_else(|| t.clone(), FaultTarget::Processor)
        }
        other => other.clone(),
    };
    let mut timed: Vec<(Duration, usize)> = s
        .faults
        .iter()
        .enumerate()
        .filter_map(|(i, f)| match f.when {
            When::At(t) => Some((t, i)),
            When::After(_) => None,
        })
        .collect();
    timed.sort();
    // target -> (failed?, index of the fault that set it)
    let mut state: BTreeMap<FaultTarget, usize> = BTreeMap::new();
    for (t, i) in timed {
        match &s.faults[i].action {
            Action::Fail(target) => {
                let k = key(target);
                if let Some(&j) = state.get(&k) {
                    c.push(
                        format!("faults[{i}].fail"),
                        IssueKind::Conflict,
                        format!(
                            "{target} is already failed at {t} (by faults[{j}]); restore it first"
                        ),
                    );
                } else {
                    state.insert(k, i);
                }
            }
            Action::Restore(target) => {
                let k = key(target);
                if state.remove(&k).is_none() {
                    let later = s.faults.iter().enumerate().find(|(_, f)| {
                        matches!(&f.action, Action::Fail(x) if key(x) == k)
                            && matches!(f.when, When::At(ft) if ft > t)
                    });
                    let hint = match later {
                        Some((j, f)) => match f.when {
                            When::At(ft) => format!("; faults[{j}] fails it later, at {ft}"),
                            When::After(_) => String::new(),
                        },
                        None => String::new(),
                    };
                    c.push(
                        format!("faults[{i}].restore"),
                        IssueKind::Conflict,
                        format!("restore of {target} at {t} comes before its fail: {target} is not failed then{hint}"),
                    );
                }
            }
            Action::Set(_) => {}
        }
    }
}

fn expectations(c: &mut Checker<'_>) {
    for (i, e) in c.s.expect.iter().enumerate() {
        let path = format!("expect[{i}]");
        match e {
            Expectation::ResetWithin(d) if *d == Duration::ZERO => c.push(
                format!("{path}.reset_within"),
                IssueKind::OutOfRange,
                "reset_within must be more than 0s",
            ),
            Expectation::NoStalledConnections(d) if *d == Duration::ZERO => c.push(
                format!("{path}.no_stalled_connections"),
                IssueKind::OutOfRange,
                "no_stalled_connections must be more than 0s",
            ),
            Expectation::Latency { at_most, .. } if *at_most == Duration::ZERO => c.push(
                path,
                IssueKind::OutOfRange,
                "a latency bound must be more than 0s",
            ),
            _ => {}
        }
    }
}
