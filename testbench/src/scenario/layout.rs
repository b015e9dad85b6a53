//! The fabric's routers and links, as the `fabric` section describes them.
//!
//! Numbering (what `router x1` and `link 3` in a fault mean):
//! - planes in the order x, y;
//! - routers of a plane: `single_router` has `x0`; `star` has the hub `x0`
//!   and the other routers `x1`…; `tree` has the spines first (`x0`…) and then
//!   the leaves; `explicit` uses the names of the list;
//! - links: every link of plane x, then of plane y. Within a plane, the
//!   router-to-router links first (star: hub to `x1`, `x2`, …; tree: leaf by
//!   leaf, each to every spine in order), then one link per endpoint:
//!   processors in order, then adapters in order. `explicit` numbers the
//!   `links` list in its order.
//! - endpoints are spread over the routers (star: all routers; tree: the
//!   leaves) in contiguous blocks of equal size, processors first, then adapters.

use std::collections::BTreeMap;

use super::error::{IssueKind, Problem};
use super::model::{
    LinkEnd, MAX_PROCESSORS, MAX_ROUTERS_PER_PLANE, Plane, RouterName, Routers, Scenario, Shape,
};
use super::units::{Bandwidth, Duration};

/// A router of the layout.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LayoutRouter {
    /// Its name: plane and index.
    pub name: RouterName,
    /// Its port count.
    pub ports: u32,
}

/// One end of a link.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// A router.
    Router(RouterName),
    /// A processor, by number.
    Processor(u32),
    /// An adapter, by its index in `adapters`.
    Adapter(usize),
}

/// A link of the layout.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LayoutLink {
    /// Its plane.
    pub plane: Plane,
    /// One end (always a router).
    pub a: Node,
    /// The other end.
    pub b: Node,
    /// Bandwidth per direction.
    pub bandwidth: Bandwidth,
    /// Latency per direction.
    pub latency: Duration,
}

/// Every router and link of the fabric.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Routers, plane x first, by index.
    pub routers: Vec<LayoutRouter>,
    /// Links, numbered by position (see the module documentation).
    pub links: Vec<LayoutLink>,
}

impl Layout {
    /// The router `plane`/`index`, if it exists.
    pub fn router(&self, plane: Plane, index: u32) -> Option<&LayoutRouter> {
        self.routers
            .iter()
            .find(|r| r.name.plane == plane && r.name.index == index)
    }
    /// Routers on a plane.
    pub fn routers_on(&self, plane: Plane) -> usize {
        self.routers
            .iter()
            .filter(|r| r.name.plane == plane)
            .count()
    }
    /// What link `i` joins, e.g. `x: router x0 – processor 2`.
    pub fn link_ends(&self, s: &Scenario, i: usize) -> Option<String> {
        let l = self.links.get(i)?;
        Some(format!(
            "{}: {} – {}",
            l.plane,
            node_name(s, l.a),
            node_name(s, l.b)
        ))
    }
}

fn node_name(s: &Scenario, n: Node) -> String {
    match n {
        Node::Router(r) => format!("router {r}"),
        Node::Processor(p) => format!("processor {p}"),
        Node::Adapter(a) => format!(
            "adapter {}",
            s.adapters.get(a).map_or("?", |a| a.name.as_str())
        ),
    }
}

/// The endpoints attached to `plane`: processors, then adapters with a port there.
fn endpoints_on(s: &Scenario, plane: Plane) -> Vec<Node> {
    let mut v: Vec<Node> = (0..s.processors.count).map(Node::Processor).collect();
    v.extend(
        s.adapters
            .iter()
            .enumerate()
            .filter(|(_, a)| a.fabric_ports.contains(&plane))
            .map(|(i, _)| Node::Adapter(i)),
    );
    v
}

/// How many endpoints each router takes: equal blocks, then any spill-over
/// into routers with ports left. `None` when they do not fit.
fn spread(free: &[u32], endpoints: usize) -> Option<Vec<usize>> {
    if free.is_empty() {
        return (endpoints == 0).then(Vec::new);
    }
    let target = endpoints.div_ceil(free.len());
    let mut counts: Vec<usize> = free.iter().map(|&f| target.min(f as usize)).collect();
    let mut placed: usize = counts.iter().sum();
    for (c, &f) in counts.iter_mut().zip(free) {
        if placed >= endpoints {
            break;
        }
        let extra = (f as usize - *c).min(endpoints - placed);
        *c += extra;
        placed += extra;
    }
    if placed < endpoints {
        return None;
    }
    // Trim the excess of the equal blocks from the end.
    let mut excess = placed - endpoints;
    for c in counts.iter_mut().rev() {
        let cut = excess.min(*c);
        *c -= cut;
        excess -= cut;
    }
    Some(counts)
}

/// Builds the layout; the problems found otherwise. Expects the ranges of
/// counts and ports to have been checked (it refuses to build when they are off).
pub(crate) fn build(s: &Scenario) -> Result<Layout, Vec<Problem>> {
    let f = &s.fabric;
    let ports = f.router_ports();
    if !(2..=64).contains(&ports) || s.processors.count == 0 || s.processors.count > MAX_PROCESSORS
    {
        return Err(Vec::new());
    }
    let mut planes = f.planes.clone();
    planes.sort();
    planes.dedup();
    match f.shape() {
        Shape::Explicit => build_explicit(s, &planes),
        shape => build_generated(s, shape, &planes, ports),
    }
}

fn build_generated(
    s: &Scenario,
    shape: Shape,
    planes: &[Plane],
    ports: u32,
) -> Result<Layout, Vec<Problem>> {
    let f = &s.fabric;
    let bandwidth = f.link_bandwidth();
    let latency = f.link.latency;
    let mut layout = Layout::default();
    let mut problems = Vec::new();
    for &plane in planes {
        let r = |index: u32| RouterName { plane, index };
        let link = |a: Node, b: Node| LayoutLink {
            plane,
            a,
            b,
            bandwidth,
            latency,
        };
        // (router count, free ports of each endpoint router, first endpoint router, path)
        let (count, free, first, path): (u32, Vec<u32>, u32, &str) = match shape {
            Shape::SingleRouter => (1, vec![ports], 0, "fabric.shape"),
            Shape::Star => {
                let n = f.star_routers();
                if n == 0 || n > MAX_ROUTERS_PER_PLANE {
                    return Err(problems);
                }
                if n - 1 > ports {
                    problems.push(Problem::new(
                        "fabric.routers",
                        IssueKind::Conflict,
                        format!("a star of {n} routers needs {} ports on the hub router, but routers have {ports} (router_ports)", n - 1),
                    ));
                    return Err(problems);
                }
                let mut free = vec![ports - (n - 1)];
                free.extend((1..n).map(|_| ports - 1));
                for i in 1..n {
                    layout
                        .links
                        .push(link(Node::Router(r(i)), Node::Router(r(0))));
                }
                (n, free, 0, "fabric.routers")
            }
            Shape::Tree => {
                let (leaves, spines) = (f.tree_leaves(), f.tree_spines());
                if leaves == 0
                    || spines == 0
                    || leaves > MAX_ROUTERS_PER_PLANE
                    || spines > MAX_ROUTERS_PER_PLANE
                {
                    return Err(problems);
                }
                if leaves > ports {
                    problems.push(Problem::new(
                        "fabric.leaves",
                        IssueKind::Conflict,
                        format!("each spine router links to all {leaves} leaves, but routers have {ports} ports (router_ports)"),
                    ));
                    return Err(problems);
                }
                if spines >= ports {
                    problems.push(Problem::new(
                        "fabric.spines",
                        IssueKind::Conflict,
                        format!("each leaf router links to all {spines} spines and needs a port left for endpoints, but routers have {ports} ports (router_ports)"),
                    ));
                    return Err(problems);
                }
                for leaf in 0..leaves {
                    for spine in 0..spines {
                        layout
                            .links
                            .push(link(Node::Router(r(spines + leaf)), Node::Router(r(spine))));
                    }
                }
                (
                    spines + leaves,
                    vec![ports - spines; leaves as usize],
                    spines,
                    "fabric.leaves",
                )
            }
            Shape::Explicit => return Err(problems),
        };
        layout
            .routers
            .extend((0..count).map(|i| LayoutRouter { name: r(i), ports }));
        let endpoints = endpoints_on(s, plane);
        let Some(counts) = spread(&free, endpoints.len()) else {
            let capacity: u32 = free.iter().sum();
            let adapters = endpoints.len() - s.processors.count as usize;
            problems.push(Problem::new(
                path,
                IssueKind::Conflict,
                format!(
                    "{} endpoints ({} processors, {adapters} adapter{}) do not fit on plane {plane}: the {shape} layout has {capacity} free router ports; use more routers (shape: star or tree), or larger routers (router_ports, generation)",
                    endpoints.len(),
                    s.processors.count,
                    if adapters == 1 { "" } else { "s" },
                ),
            ));
            continue;
        };
        let mut next = endpoints.into_iter();
        for (i, &n) in counts.iter().enumerate() {
            for e in next.by_ref().take(n) {
                layout
                    .links
                    .push(link(Node::Router(r(first + i as u32)), e));
            }
        }
    }
    if problems.is_empty() {
        Ok(layout)
    } else {
        Err(problems)
    }
}

fn build_explicit(s: &Scenario, planes: &[Plane]) -> Result<Layout, Vec<Problem>> {
    let f = &s.fabric;
    let mut problems = Vec::new();
    let Some(Routers::List(defs)) = &f.routers else {
        problems.push(Problem::new(
            "fabric.routers",
            IssueKind::MissingField,
            "shape: explicit needs `routers`: a list like [{ id: x0 }, { id: y0 }]",
        ));
        return Err(problems);
    };
    if f.links.is_empty() {
        problems.push(Problem::new(
            "fabric.links",
            IssueKind::MissingField,
            "shape: explicit needs `links`: a list like [{ from: x0, to: processor 0 }, …]",
        ));
        return Err(problems);
    }
    let mut layout = Layout::default();
    let mut index_of: BTreeMap<RouterName, usize> = BTreeMap::new();
    for (i, d) in defs.iter().enumerate() {
        let path = format!("fabric.routers[{i}]");
        if !planes.contains(&d.id.plane) {
            problems.push(Problem::new(
                format!("{path}.id"),
                IssueKind::UnknownReference,
                format!(
                    "router {} is on plane {}, which this fabric does not have (planes: {})",
                    d.id,
                    d.id.plane,
                    plane_list(planes)
                ),
            ));
            continue;
        }
        let ports = d.ports.unwrap_or_else(|| f.router_ports());
        if !(2..=64).contains(&ports) {
            problems.push(Problem::new(
                format!("{path}.ports"),
                IssueKind::OutOfRange,
                format!("a router has 2 to 64 ports, not {ports}"),
            ));
        }
        if index_of.insert(d.id, layout.routers.len()).is_some() {
            problems.push(Problem::new(
                format!("{path}.id"),
                IssueKind::Duplicate,
                format!("router {} is listed twice", d.id),
            ));
            continue;
        }
        layout.routers.push(LayoutRouter { name: d.id, ports });
    }
    for &plane in planes {
        let mut idx: Vec<u32> = layout
            .routers
            .iter()
            .filter(|r| r.name.plane == plane)
            .map(|r| r.name.index)
            .collect();
        idx.sort_unstable();
        if idx.is_empty() {
            problems.push(Problem::new(
                "fabric.routers",
                IssueKind::MissingField,
                format!("plane {plane} has no router: list at least {plane}0"),
            ));
        } else if let Some(missing) = (0u32..)
            .zip(&idx)
            .find(|(want, have)| want != *have)
            .map(|(w, _)| w)
        {
            problems.push(Problem::new(
                "fabric.routers",
                IssueKind::Conflict,
                format!("router {plane}{missing} is missing: the routers of a plane are numbered from 0 without gaps"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    layout.routers.sort_by_key(|r| r.name);

    let mut used: BTreeMap<RouterName, u32> = BTreeMap::new();
    // (plane, endpoint) -> first link index
    let mut attached: BTreeMap<(Plane, Node), usize> = BTreeMap::new();
    let mut edges: Vec<(Plane, Node, Node)> = Vec::new();
    for (i, l) in f.links.iter().enumerate() {
        let path = format!("fabric.links[{i}]");
        let mut resolve = |end: &LinkEnd, which: &str| -> Option<Node> {
            let p = format!("{path}.{which}");
            match end {
                LinkEnd::Router(r) => {
                    if layout.router(r.plane, r.index).is_some() {
                        Some(Node::Router(*r))
                    } else {
                        problems.push(Problem::new(
                            p,
                            IssueKind::UnknownReference,
                            format!("router {r} is not in fabric.routers"),
                        ));
                        None
                    }
                }
                LinkEnd::Processor(n) => {
                    if *n < s.processors.count {
                        Some(Node::Processor(*n))
                    } else {
                        problems.push(Problem::new(p, IssueKind::UnknownReference, format!("processor {n} does not exist: processors are 0 to {} (processors.count is {})", s.processors.count - 1, s.processors.count)));
                        None
                    }
                }
                LinkEnd::Adapter(name) => match s.adapters.iter().position(|a| &a.name == name) {
                    Some(a) => Some(Node::Adapter(a)),
                    None => {
                        problems.push(Problem::new(
                            p,
                            IssueKind::UnknownReference,
                            format!(
                                "adapter {name} does not exist (adapters: {})",
                                adapter_names(s)
                            ),
                        ));
                        None
                    }
                },
            }
        };
        let (Some(a), Some(b)) = (resolve(&l.from, "from"), resolve(&l.to, "to")) else {
            continue;
        };
        let (plane, router, other) = match (a, b) {
            (Node::Router(ra), Node::Router(rb)) => {
                if ra.plane != rb.plane {
                    problems.push(Problem::new(&path, IssueKind::Conflict, format!("a link cannot join router {ra} (plane {}) and router {rb} (plane {}): the planes are disjoint", ra.plane, rb.plane)));
                    continue;
                }
                if ra == rb {
                    problems.push(Problem::new(
                        &path,
                        IssueKind::Conflict,
                        format!("a link cannot join router {ra} to itself"),
                    ));
                    continue;
                }
                (ra.plane, ra, b)
            }
            (Node::Router(r), e) | (e, Node::Router(r)) => (r.plane, r, e),
            _ => {
                problems.push(Problem::new(
                    &path,
                    IssueKind::Conflict,
                    format!(
                        "{} and {} are both endpoints: one end of a link must be a router",
                        node_name(s, a),
                        node_name(s, b)
                    ),
                ));
                continue;
            }
        };
        if let Node::Adapter(ai) = other {
            if !s.adapters[ai].fabric_ports.contains(&plane) {
                problems.push(Problem::new(
                    &path,
                    IssueKind::Conflict,
                    format!(
                        "{} has no port on plane {plane} (its fabric_ports: {})",
                        node_name(s, other),
                        plane_list(&s.adapters[ai].fabric_ports)
                    ),
                ));
                continue;
            }
        }
        if !matches!(other, Node::Router(_)) {
            if let Some(first) = attached.insert((plane, other), i) {
                problems.push(Problem::new(&path, IssueKind::Conflict, format!("{} is attached to plane {plane} twice (links {first} and {i}); an endpoint has one port per plane", node_name(s, other))));
                continue;
            }
        }
        for end in [a, b] {
            if let Node::Router(r) = end {
                *used.entry(r).or_default() += 1;
            }
        }
        edges.push((plane, Node::Router(router), other));
        layout.links.push(LayoutLink {
            plane,
            a: Node::Router(router),
            b: other,
            bandwidth: l.bandwidth.unwrap_or_else(|| f.link_bandwidth()),
            latency: l.latency.unwrap_or(f.link.latency),
        });
    }
    for (i, d) in defs.iter().enumerate() {
        let ports = d.ports.unwrap_or_else(|| f.router_ports());
        let n = used.get(&d.id).copied().unwrap_or(0);
        if n > ports {
            problems.push(Problem::new(
                format!("fabric.routers[{i}]"),
                IssueKind::Conflict,
                format!("router {} has {n} links but {ports} ports", d.id),
            ));
        }
    }
    for &plane in planes {
        let endpoints = endpoints_on(s, plane);
        let mut missing: Vec<String> = endpoints
            .iter()
            .filter(|e| !attached.contains_key(&(plane, **e)))
            .map(|e| node_name(s, *e))
            .collect();
        if !missing.is_empty() {
            let total = missing.len();
            missing.truncate(4);
            problems.push(Problem::new("fabric.links", IssueKind::Conflict, format!("{} {} no link on plane {plane}{}: every processor, and every adapter with a port there, needs one", missing.join(", "), if total == 1 { "has" } else { "have" }, if total > 4 { format!(" (and {} more)", total - 4) } else { String::new() })));
            continue;
        }
        // Every endpoint of the plane must reach every other.
        let plane_edges: Vec<(Node, Node)> = edges
            .iter()
            .filter(|e| e.0 == plane)
            .map(|e| (e.1, e.2))
            .collect();
        if let Some(start) = endpoints.first() {
            let mut seen = std::collections::BTreeSet::from([*start]);
            let mut todo = vec![*start];
            while let Some(n) = todo.pop() {
                for &(a, b) in &plane_edges {
                    let next = if a == n {
                        b
                    } else if b == n {
                        a
                    } else {
                        continue;
                    };
                    if seen.insert(next) {
                        todo.push(next);
                    }
                }
            }
            if let Some(cut) = endpoints.iter().find(|e| !seen.contains(e)) {
                problems.push(Problem::new("fabric.links", IssueKind::Conflict, format!("{} cannot reach {} on plane {plane}: the routers of the plane are not all joined", node_name(s, *cut), node_name(s, *start))));
            }
        }
    }
    if problems.is_empty() {
        Ok(layout)
    } else {
        Err(problems)
    }
}

pub(crate) fn plane_list(planes: &[Plane]) -> String {
    planes
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn adapter_names(s: &Scenario) -> String {
    s.adapters
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_fills_equal_blocks_then_spills() {
        assert_eq!(spread(&[10, 10], 6), Some(vec![3, 3]));
        assert_eq!(spread(&[10, 10], 7), Some(vec![4, 3]));
        assert_eq!(spread(&[2, 10], 8), Some(vec![2, 6]));
        assert_eq!(spread(&[2, 2], 5), None);
        assert_eq!(spread(&[5], 5), Some(vec![5]));
        assert_eq!(spread(&[], 0), Some(vec![]));
    }
}
