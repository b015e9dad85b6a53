//! The shape of a fabric: endpoints (processors and adapters) with one port
//! on each plane, routers with a fixed number of ports, and full-duplex links.
//!
//! A [`TopologyBuilder`] checks every link as it is added (ports in range and
//! free, both ends on the same plane) and [`TopologyBuilder::build`] computes
//! the routing tables: for every router and destination endpoint, the output
//! port on a shortest path (ties go to the lowest port number, so tables are
//! deterministic). A topology in which some endpoint cannot reach another on
//! a configured plane is rejected with [`TopologyError::Unreachable`].
//!
//! X and Y are disjoint: a router belongs to one plane, an endpoint's port
//! `0` is its X port and port `1` its Y port, and a link may only join two
//! things of the same plane.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::ids::{EndpointId, Plane};
use crate::time::{Bandwidth, Duration};

/// Index of a router in its topology.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouterId(pub u32);

impl fmt::Display for RouterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "router{}", self.0)
    }
}

/// A node of the fabric graph.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeRef {
    /// A processor or adapter.
    Endpoint(EndpointId),
    /// A router.
    Router(RouterId),
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Endpoint(e) => write!(f, "{e}"),
            NodeRef::Router(r) => write!(f, "{r}"),
        }
    }
}

/// One port of one node. An endpoint's port number is its plane index
/// (0 = X, 1 = Y).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRef {
    /// The node.
    pub node: NodeRef,
    /// The port number on that node.
    pub port: u8,
}

impl PortRef {
    /// The port of endpoint `id` on `plane`.
    pub fn endpoint(id: EndpointId, plane: Plane) -> Self {
        PortRef {
            node: NodeRef::Endpoint(id),
            port: plane.index() as u8,
        }
    }

    /// Port `port` of router `id`.
    pub fn router(id: RouterId, port: u8) -> Self {
        PortRef {
            node: NodeRef::Router(id),
            port,
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            NodeRef::Endpoint(e) => write!(f, "{e}.{}", if self.port == 0 { "X" } else { "Y" }),
            NodeRef::Router(r) => write!(f, "{r}.p{}", self.port),
        }
    }
}

/// What an endpoint is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointKind {
    /// A processor with its own memory.
    Processor,
    /// An I/O adapter (the LAN adapter).
    Adapter,
}

/// An endpoint of the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Its fabric ID.
    pub id: EndpointId,
    /// Processor or adapter.
    pub kind: EndpointKind,
    /// A name for reports.
    pub name: String,
}

/// A router of the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterSpec {
    /// Its index.
    pub id: RouterId,
    /// The plane it belongs to.
    pub plane: Plane,
    /// Number of ports (6 for ServerNet I, 12 for II, 32 for 3; 2..=64 accepted).
    pub ports: u8,
    /// A name for reports.
    pub name: String,
}

/// Speed and length of a link, the same in both directions.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LinkParams {
    /// Bandwidth per direction.
    pub bandwidth: Bandwidth,
    /// Propagation latency per direction.
    pub latency: Duration,
}

impl Default for LinkParams {
    /// 125 MB/s per direction (ServerNet II) and 20 ns of cable.
    fn default() -> Self {
        LinkParams {
            bandwidth: Bandwidth::from_mb_per_s(125).expect("nonzero"),
            latency: Duration::from_ns(20),
        }
    }
}

/// A full-duplex link between two ports.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    /// One end.
    pub a: PortRef,
    /// The other end.
    pub b: PortRef,
    /// Speed and latency.
    pub params: LinkParams,
    /// The plane the link belongs to.
    pub plane: Plane,
}

/// The most endpoints one fabric holds: each requester's DMA transfers are
/// numbered under its 16-bit endpoint index (see
/// [`crate::network::TransferId`]).
pub const MAX_ENDPOINTS: usize = 1 << 16;

/// Why a topology was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Two endpoints with one ID.
    #[error("endpoint ID {0} is used twice")]
    DuplicateEndpoint(EndpointId),
    /// More endpoints than a fabric can number.
    #[error("a fabric holds at most {max} endpoints")]
    TooManyEndpoints {
        /// The most allowed.
        max: usize,
    },
    /// A link names an endpoint that was not added.
    #[error("{0} is not an endpoint of this topology")]
    UnknownEndpoint(EndpointId),
    /// A link names a router that was not added.
    #[error("{0} is not a router of this topology")]
    UnknownRouter(RouterId),
    /// A router port count outside 2..=64.
    #[error("a router must have 2 to 64 ports (6, 12 and 32 are the ServerNet sizes); got {0}")]
    BadPortCount(u8),
    /// A port number past the node's port count.
    #[error("port {port} does not exist: {node} has ports 0..{ports}")]
    PortOutOfRange {
        /// The node.
        node: NodeRef,
        /// The port asked for.
        port: u8,
        /// How many ports it has.
        ports: u8,
    },
    /// A port already carries a link.
    #[error("{0} is already connected")]
    PortInUse(PortRef),
    /// A link joins two planes.
    #[error(
        "a link may not join plane {a_plane} ({a}) to plane {b_plane} ({b}): X and Y are disjoint"
    )]
    PlaneMismatch {
        /// One end.
        a: PortRef,
        /// Its plane.
        a_plane: Plane,
        /// The other end.
        b: PortRef,
        /// Its plane.
        b_plane: Plane,
    },
    /// A router or link on a plane the topology does not have.
    #[error("plane {0} is not one of this topology's planes")]
    PlaneNotConfigured(Plane),
    /// A link from a port to itself or between two ports of one node.
    #[error("a link must join two different nodes ({0})")]
    SelfLink(NodeRef),
    /// An endpoint has no link on a configured plane.
    #[error("{endpoint} has no link on plane {plane}")]
    NotConnected {
        /// The endpoint.
        endpoint: EndpointId,
        /// The plane.
        plane: Plane,
    },
    /// Some endpoint cannot reach another on a plane.
    #[error("on plane {plane}, {from} cannot reach {to}")]
    Unreachable {
        /// The plane.
        plane: Plane,
        /// Source.
        from: EndpointId,
        /// Destination.
        to: EndpointId,
    },
    /// No planes given.
    #[error("a topology needs at least one plane")]
    NoPlanes,
    /// A bandwidth of zero or similar.
    #[error("invalid link parameters: {0}")]
    BadLink(String),
}

/// Builds a [`Topology`] step by step, checking each step.
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    planes: Vec<Plane>,
    endpoints: BTreeMap<EndpointId, EndpointSpec>,
    routers: Vec<RouterSpec>,
    links: Vec<LinkSpec>,
    used: BTreeMap<PortRef, usize>,
}

impl TopologyBuilder {
    /// A builder for a fabric with these planes (usually both).
    pub fn new(planes: &[Plane]) -> Self {
        let mut p = planes.to_vec();
        p.sort();
        p.dedup();
        TopologyBuilder {
            planes: p,
            endpoints: BTreeMap::new(),
            routers: Vec::new(),
            links: Vec::new(),
            used: BTreeMap::new(),
        }
    }

    /// Adds an endpoint.
    pub fn endpoint(
        &mut self,
        id: EndpointId,
        kind: EndpointKind,
        name: &str,
    ) -> Result<&mut Self, TopologyError> {
        if self.endpoints.contains_key(&id) {
            return Err(TopologyError::DuplicateEndpoint(id));
        }
        if self.endpoints.len() >= MAX_ENDPOINTS {
            return Err(TopologyError::TooManyEndpoints { max: MAX_ENDPOINTS });
        }
        self.endpoints.insert(
            id,
            EndpointSpec {
                id,
                kind,
                name: name.to_string(),
            },
        );
        Ok(self)
    }

    /// Adds a router on `plane` with `ports` ports; returns its ID.
    pub fn router(
        &mut self,
        plane: Plane,
        ports: u8,
        name: &str,
    ) -> Result<RouterId, TopologyError> {
        if !(2..=64).contains(&ports) {
            return Err(TopologyError::BadPortCount(ports));
        }
        if !self.planes.contains(&plane) {
            return Err(TopologyError::PlaneNotConfigured(plane));
        }
        let id = RouterId(self.routers.len() as u32);
        self.routers.push(RouterSpec {
            id,
            plane,
            ports,
            name: name.to_string(),
        });
        Ok(id)
    }

    fn port_plane(&self, p: PortRef) -> Result<Plane, TopologyError> {
        match p.node {
            NodeRef::Endpoint(e) => {
                if !self.endpoints.contains_key(&e) {
                    return Err(TopologyError::UnknownEndpoint(e));
                }
                match p.port {
                    0 => Ok(Plane::X),
                    1 => Ok(Plane::Y),
                    _ => Err(TopologyError::PortOutOfRange {
                        node: p.node,
                        port: p.port,
                        ports: 2,
                    }),
                }
            }
            NodeRef::Router(r) => {
                let spec = self
                    .routers
                    .get(r.0 as usize)
                    .ok_or(TopologyError::UnknownRouter(r))?;
                if p.port >= spec.ports {
                    return Err(TopologyError::PortOutOfRange {
                        node: p.node,
                        port: p.port,
                        ports: spec.ports,
                    });
                }
                Ok(spec.plane)
            }
        }
    }

    /// Joins two ports with a full-duplex link.
    pub fn link(
        &mut self,
        a: PortRef,
        b: PortRef,
        params: LinkParams,
    ) -> Result<&mut Self, TopologyError> {
        if a.node == b.node {
            return Err(TopologyError::SelfLink(a.node));
        }
        let a_plane = self.port_plane(a)?;
        let b_plane = self.port_plane(b)?;
        if a_plane != b_plane {
            return Err(TopologyError::PlaneMismatch {
                a,
                a_plane,
                b,
                b_plane,
            });
        }
        if !self.planes.contains(&a_plane) {
            return Err(TopologyError::PlaneNotConfigured(a_plane));
        }
        for p in [a, b] {
            if self.used.contains_key(&p) {
                return Err(TopologyError::PortInUse(p));
            }
        }
        let idx = self.links.len();
        self.used.insert(a, idx);
        self.used.insert(b, idx);
        self.links.push(LinkSpec {
            a,
            b,
            params,
            plane: a_plane,
        });
        Ok(self)
    }

    /// The first free port of a router, if any.
    pub fn free_port(&self, r: RouterId) -> Option<u8> {
        let spec = self.routers.get(r.0 as usize)?;
        (0..spec.ports).find(|&p| !self.used.contains_key(&PortRef::router(r, p)))
    }

    /// Checks the whole topology and computes the routing tables.
    pub fn build(&self) -> Result<Topology, TopologyError> {
        if self.planes.is_empty() {
            return Err(TopologyError::NoPlanes);
        }
        let endpoints: Vec<EndpointSpec> = self.endpoints.values().cloned().collect();
        // Endpoint IDs have 20 bits: a direct table (at most 4 MiB) makes
        // the lookup on every packet's path one load.
        let top = endpoints.iter().map(|e| e.id.raw()).max().unwrap_or(0) as usize;
        let mut ep_index = vec![u32::MAX; top + 1];
        for (i, e) in endpoints.iter().enumerate() {
            ep_index[e.id.raw() as usize] = i as u32;
        }
        // Port -> (link index, far end) lookup.
        let mut router_ports: Vec<Vec<Option<(usize, PortRef)>>> = self
            .routers
            .iter()
            .map(|r| vec![None; r.ports as usize])
            .collect();
        let mut endpoint_ports: Vec<[Option<(usize, PortRef)>; 2]> =
            vec![[None, None]; endpoints.len()];
        for (li, l) in self.links.iter().enumerate() {
            for (near, far) in [(l.a, l.b), (l.b, l.a)] {
                match near.node {
                    NodeRef::Router(r) => {
                        router_ports[r.0 as usize][near.port as usize] = Some((li, far))
                    }
                    NodeRef::Endpoint(e) => {
                        endpoint_ports[ep_index[e.raw() as usize] as usize][near.port as usize] =
                            Some((li, far))
                    }
                }
            }
        }
        for (i, e) in endpoints.iter().enumerate() {
            for &plane in &self.planes {
                if endpoint_ports[i][plane.index()].is_none() {
                    return Err(TopologyError::NotConnected {
                        endpoint: e.id,
                        plane,
                    });
                }
            }
        }
        // Routing tables: routes[router][dest index] = output port.
        let mut routes: Vec<Vec<Option<u8>>> =
            vec![vec![None; endpoints.len()]; self.routers.len()];
        for &plane in &self.planes {
            for di in 0..endpoints.len() {
                // BFS from the destination over routers of this plane.
                let mut dist: Vec<Option<u32>> = vec![None; self.routers.len()];
                let mut q = VecDeque::new();
                let Some((_, attached)) = endpoint_ports[di][plane.index()] else {
                    continue;
                };
                if let NodeRef::Router(r) = attached.node {
                    dist[r.0 as usize] = Some(1);
                    routes[r.0 as usize][di] = Some(attached.port);
                    q.push_back(r);
                }
                while let Some(r) = q.pop_front() {
                    let d = dist[r.0 as usize].expect("queued routers have a distance");
                    for (_, far) in router_ports[r.0 as usize].iter().flatten() {
                        if let NodeRef::Router(n) = far.node
                            && dist[n.0 as usize].is_none()
                        {
                            dist[n.0 as usize] = Some(d + 1);
                            q.push_back(n);
                        }
                    }
                }
                // Next hop: lowest port whose neighbour is one step closer.
                for (ri, spec) in self.routers.iter().enumerate() {
                    if spec.plane != plane || routes[ri][di].is_some() {
                        continue;
                    }
                    let Some(d) = dist[ri] else { continue };
                    for (port, slot) in router_ports[ri].iter().enumerate() {
                        if let Some((_, far)) = slot
                            && let NodeRef::Router(n) = far.node
                            && dist[n.0 as usize] == Some(d - 1)
                        {
                            routes[ri][di] = Some(port as u8);
                            break;
                        }
                    }
                }
            }
        }
        let topo = Topology {
            planes: self.planes.clone(),
            endpoints,
            ep_index,
            routers: self.routers.clone(),
            links: self.links.clone(),
            router_ports,
            endpoint_ports,
            routes,
        };
        // Every endpoint must reach every other on every plane.
        for &plane in &topo.planes {
            for from in &topo.endpoints {
                for to in &topo.endpoints {
                    if from.id != to.id && topo.path(plane, from.id, to.id).is_none() {
                        return Err(TopologyError::Unreachable {
                            plane,
                            from: from.id,
                            to: to.id,
                        });
                    }
                }
            }
        }
        Ok(topo)
    }
}

/// One step of a path: a link crossed in one direction.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// Index of the link in [`Topology::links`].
    pub link: usize,
    /// The port the packet leaves from.
    pub from: PortRef,
    /// The port it arrives at.
    pub to: PortRef,
}

/// A checked fabric topology with its routing tables.
#[derive(Debug, Clone)]
pub struct Topology {
    planes: Vec<Plane>,
    endpoints: Vec<EndpointSpec>,
    /// Endpoint index by raw endpoint ID (`u32::MAX`: no such endpoint).
    ep_index: Vec<u32>,
    routers: Vec<RouterSpec>,
    links: Vec<LinkSpec>,
    router_ports: Vec<Vec<Option<(usize, PortRef)>>>,
    endpoint_ports: Vec<[Option<(usize, PortRef)>; 2]>,
    routes: Vec<Vec<Option<u8>>>,
}

impl Topology {
    /// The planes of this fabric.
    pub fn planes(&self) -> &[Plane] {
        &self.planes
    }

    /// Endpoints, sorted by ID.
    pub fn endpoints(&self) -> &[EndpointSpec] {
        &self.endpoints
    }

    /// Routers, by index.
    pub fn routers(&self) -> &[RouterSpec] {
        &self.routers
    }

    /// Links, by index.
    pub fn links(&self) -> &[LinkSpec] {
        &self.links
    }

    /// Dense index (position in [`Topology::endpoints`]) of an endpoint.
    pub fn endpoint_index(&self, id: EndpointId) -> Option<usize> {
        match self.ep_index.get(id.raw() as usize) {
            Some(&i) if i != u32::MAX => Some(i as usize),
            _ => None,
        }
    }

    /// The link and far end attached to a port, if connected.
    pub fn attached(&self, port: PortRef) -> Option<(usize, PortRef)> {
        match port.node {
            NodeRef::Router(r) => *self
                .router_ports
                .get(r.0 as usize)?
                .get(port.port as usize)?,
            NodeRef::Endpoint(e) => *self
                .endpoint_ports
                .get(self.endpoint_index(e)?)?
                .get(port.port as usize)?,
        }
    }

    /// The output port a router uses towards `dest` (its routing table).
    pub fn route(&self, router: RouterId, dest: EndpointId) -> Option<u8> {
        let di = self.endpoint_index(dest)?;
        *self.routes.get(router.0 as usize)?.get(di)?
    }

    /// The links a packet from `from` to `to` crosses on `plane`, following
    /// the routing tables; `None` if the tables lead nowhere.
    pub fn path(&self, plane: Plane, from: EndpointId, to: EndpointId) -> Option<Vec<Hop>> {
        if !self.planes.contains(&plane) || from == to {
            return None;
        }
        self.endpoint_index(to)?;
        let mut hops = Vec::new();
        let mut at = PortRef::endpoint(from, plane);
        // A path can't be longer than the number of links.
        for _ in 0..=self.links.len() {
            let (link, far) = self.attached(at)?;
            hops.push(Hop {
                link,
                from: at,
                to: far,
            });
            match far.node {
                NodeRef::Endpoint(e) => return if e == to { Some(hops) } else { None },
                NodeRef::Router(r) => {
                    let out = self.route(r, to)?;
                    at = PortRef::router(r, out);
                }
            }
        }
        None
    }
}

/// Ready-made shapes.
pub mod shapes {
    use super::*;

    /// One router per plane, every endpoint attached to it.
    pub fn single_router(
        planes: &[Plane],
        endpoints: &[(EndpointId, EndpointKind)],
        ports: u8,
        params: LinkParams,
    ) -> Result<Topology, TopologyError> {
        let attach: Vec<_> = endpoints.iter().map(|&(id, k)| (id, k, 0usize)).collect();
        chain(planes, 1, &attach, ports, params)
    }

    /// `routers` routers per plane in a line (router i joined to router
    /// i+1), each endpoint attached to the router it names (0-based). Two
    /// endpoints on routers `i` and `j` are `|i - j| + 1` routers apart.
    pub fn chain(
        planes: &[Plane],
        routers: usize,
        endpoints: &[(EndpointId, EndpointKind, usize)],
        ports: u8,
        params: LinkParams,
    ) -> Result<Topology, TopologyError> {
        let mut b = TopologyBuilder::new(planes);
        for &(id, kind, _) in endpoints {
            b.endpoint(id, kind, &format!("{id}"))?;
        }
        for &plane in planes {
            let ids: Vec<RouterId> = (0..routers)
                .map(|i| b.router(plane, ports, &format!("{plane}{i}")))
                .collect::<Result<_, _>>()?;
            for w in ids.windows(2) {
                let pa = b
                    .free_port(w[0])
                    .ok_or(TopologyError::BadPortCount(ports))?;
                let pb = b
                    .free_port(w[1])
                    .ok_or(TopologyError::BadPortCount(ports))?;
                b.link(PortRef::router(w[0], pa), PortRef::router(w[1], pb), params)?;
            }
            for &(id, _, r) in endpoints {
                let rid = *ids
                    .get(r)
                    .ok_or(TopologyError::UnknownRouter(RouterId(r as u32)))?;
                let port = b.free_port(rid).ok_or(TopologyError::PortOutOfRange {
                    node: NodeRef::Router(rid),
                    port: ports,
                    ports,
                })?;
                b.link(
                    PortRef::endpoint(id, plane),
                    PortRef::router(rid, port),
                    params,
                )?;
            }
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(n: u32) -> EndpointId {
        EndpointId::new(n).unwrap()
    }

    #[test]
    fn chain_paths_have_the_expected_hops() {
        let t = shapes::chain(
            &Plane::BOTH,
            3,
            &[
                (ep(1), EndpointKind::Processor, 0),
                (ep(2), EndpointKind::Processor, 2),
                (ep(3), EndpointKind::Adapter, 0),
            ],
            6,
            LinkParams::default(),
        )
        .unwrap();
        for plane in Plane::BOTH {
            assert_eq!(t.path(plane, ep(1), ep(2)).unwrap().len(), 4); // 3 routers, 4 links
            assert_eq!(t.path(plane, ep(1), ep(3)).unwrap().len(), 2); // 1 router
            for hop in t.path(plane, ep(2), ep(1)).unwrap() {
                assert_eq!(t.links()[hop.link].plane, plane);
            }
        }
    }

    #[test]
    fn unreachable_is_reported() {
        let mut b = TopologyBuilder::new(&[Plane::X]);
        b.endpoint(ep(1), EndpointKind::Processor, "a").unwrap();
        b.endpoint(ep(2), EndpointKind::Processor, "b").unwrap();
        let r0 = b.router(Plane::X, 6, "r0").unwrap();
        let r1 = b.router(Plane::X, 6, "r1").unwrap();
        b.link(
            PortRef::endpoint(ep(1), Plane::X),
            PortRef::router(r0, 0),
            LinkParams::default(),
        )
        .unwrap();
        b.link(
            PortRef::endpoint(ep(2), Plane::X),
            PortRef::router(r1, 0),
            LinkParams::default(),
        )
        .unwrap();
        assert!(matches!(
            b.build(),
            Err(TopologyError::Unreachable {
                plane: Plane::X,
                ..
            })
        ));
    }

    #[test]
    fn planes_are_disjoint_and_ports_checked() {
        let mut b = TopologyBuilder::new(&Plane::BOTH);
        b.endpoint(ep(1), EndpointKind::Processor, "a").unwrap();
        let rx = b.router(Plane::X, 6, "x").unwrap();
        let ry = b.router(Plane::Y, 6, "y").unwrap();
        let p = LinkParams::default();
        assert!(matches!(
            b.link(
                PortRef::endpoint(ep(1), Plane::X),
                PortRef::router(ry, 0),
                p
            ),
            Err(TopologyError::PlaneMismatch { .. })
        ));
        assert!(matches!(
            b.link(PortRef::router(rx, 0), PortRef::router(ry, 0), p),
            Err(TopologyError::PlaneMismatch { .. })
        ));
        assert!(matches!(
            b.link(
                PortRef::endpoint(ep(1), Plane::X),
                PortRef::router(rx, 6),
                p
            ),
            Err(TopologyError::PortOutOfRange { .. })
        ));
        b.link(
            PortRef::endpoint(ep(1), Plane::X),
            PortRef::router(rx, 0),
            p,
        )
        .unwrap();
        assert!(matches!(
            b.link(
                PortRef::endpoint(ep(1), Plane::X),
                PortRef::router(rx, 1),
                p
            ),
            Err(TopologyError::PortInUse(_))
        ));
        // Y port left unconnected.
        assert!(matches!(
            b.build(),
            Err(TopologyError::NotConnected {
                plane: Plane::Y,
                ..
            })
        ));
        assert!(matches!(
            b.router(Plane::X, 1, "tiny"),
            Err(TopologyError::BadPortCount(1))
        ));
    }

    #[test]
    fn single_plane_topologies_are_allowed() {
        let t = shapes::single_router(
            &[Plane::X],
            &[
                (ep(1), EndpointKind::Processor),
                (ep(2), EndpointKind::Adapter),
            ],
            6,
            LinkParams::default(),
        )
        .unwrap();
        assert!(t.path(Plane::X, ep(1), ep(2)).is_some());
        assert!(t.path(Plane::Y, ep(1), ep(2)).is_none());
    }

    #[test]
    fn too_many_endpoints_for_one_router_is_an_error() {
        let eps: Vec<_> = (0..7).map(|i| (ep(i), EndpointKind::Processor)).collect();
        assert!(shapes::single_router(&Plane::BOTH, &eps, 6, LinkParams::default()).is_err());
    }
}
