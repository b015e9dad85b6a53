//! From a scenario to a running cluster: the topology, the rig's
//! configuration, the applications and the client populations.

use std::net::IpAddr;
use std::path::Path;

use snet_fabric::Plane as FabricPlane;
use snet_fabric::network::FabricConfig;
use snet_fabric::packet::PacketLimits;
use snet_fabric::time::{Duration, Instant};
use snet_fabric::topology::{
    EndpointKind, LinkParams, PortRef, RouterId, Topology, TopologyBuilder,
};
use snet_firmware::config::SharedPortRange;
use snet_host_lib::app::Application;
use snet_host_lib::cpu::CpuCosts as HostCpu;
use snet_host_lib::ipc::IpcConfig;
use snet_host_lib::net::{NetConfig, NetRig, StackMode};
use snet_host_lib::rig::{RigConfig, adapter_endpoint, processor_endpoint};
use snet_host_lib::socket::SocketConfig;
use snet_nic_model::mac::LinkSpeed;

use super::clients::{HostDriver, Plan};
use super::http::HttpServer;
use super::ledger::Shared;
use super::models::{Backend, Broker, DatagramServer, Distributor, Handoff, Pick, Server};
use crate::scenario::layout::{Layout, Node};
use crate::scenario::model::{AppModel, Arrival, Policy, Protocol, Scenario, Stack};

/// How often processors report their capacity when a port range uses the
/// capacity-weighted policy.
pub const CAPACITY_REPORTS: Duration = Duration::from_ms(1);

/// Clients of one population that share one emulated client host, at
/// least.
pub const MEMBERS_PER_HOST: u32 = 16;
/// Client hosts one population spreads over, at most (a larger population
/// puts more clients on each host, so the LAN does not carry thousands of
/// hosts' address resolution at once).
pub const MAX_HOSTS_PER_POPULATION: u32 = 2000;

/// Clients per host for a population of `count`.
pub fn members_per_host(count: u32) -> u32 {
    MEMBERS_PER_HOST.max(count.div_ceil(MAX_HOSTS_PER_POPULATION))
}
/// First service number of the applications' back ends (app `i` uses
/// `SERVICE_BASE + i`).
pub const SERVICE_BASE: u32 = 100;

fn plane(p: crate::scenario::model::Plane) -> FabricPlane {
    p.to_fabric()
}

/// The fabric's topology from the scenario's layout: routers and links in
/// layout order, so `router x1` and `link 3` of a fault name the same
/// parts in the fabric.
pub fn topology(s: &Scenario, layout: &Layout) -> Result<Topology, String> {
    let planes: Vec<FabricPlane> = s.fabric.planes.iter().map(|&p| plane(p)).collect();
    let mut b = TopologyBuilder::new(&planes);
    fn e<T>(r: Result<T, snet_fabric::topology::TopologyError>) -> Result<T, String> {
        r.map_err(|e| e.to_string())
    }
    for p in 0..s.processors.count {
        e(b.endpoint(
            processor_endpoint(p),
            EndpointKind::Processor,
            &format!("P{p}"),
        )
        .map(|_| ()))?;
    }
    for (i, a) in s.adapters.iter().enumerate() {
        e(
            b.endpoint(adapter_endpoint(i as u32), EndpointKind::Adapter, &a.name)
                .map(|_| ()),
        )?;
    }
    let mut ids: Vec<RouterId> = Vec::new();
    for r in &layout.routers {
        let ports = u8::try_from(r.ports).map_err(|_| {
            format!(
                "router {} has {} ports; the fabric takes at most 64",
                r.name, r.ports
            )
        })?;
        ids.push(e(b.router(
            plane(r.name.plane),
            ports,
            &r.name.to_string(),
        ))?);
    }
    let router = |name: &crate::scenario::model::RouterName| -> Result<RouterId, String> {
        layout
            .routers
            .iter()
            .position(|r| r.name == *name)
            .map(|i| ids[i])
            .ok_or_else(|| format!("unknown router {name}"))
    };
    for l in &layout.links {
        let params = LinkParams {
            bandwidth: l
                .bandwidth
                .to_fabric()
                .ok_or_else(|| format!("link bandwidth {} is too small", l.bandwidth))?,
            latency: l.latency.to_fabric(),
        };
        let end = |n: Node| -> Result<PortRef, String> {
            Ok(match n {
                Node::Router(r) => {
                    let id = router(&r)?;
                    let port = b
                        .free_port(id)
                        .ok_or_else(|| format!("router {r} has no free port left"))?;
                    PortRef::router(id, port)
                }
                Node::Processor(p) => PortRef::endpoint(processor_endpoint(p), plane(l.plane)),
                Node::Adapter(a) => PortRef::endpoint(adapter_endpoint(a as u32), plane(l.plane)),
            })
        };
        let a = end(l.a)?;
        let z = end(l.b)?;
        e(b.link(a, z, params).map(|_| ()))?;
    }
    b.build().map_err(|e| e.to_string())
}

/// The rig's configuration.
pub fn net_config(
    s: &Scenario,
    seed: u64,
    layout: &Layout,
) -> Result<(NetConfig, Vec<String>), String> {
    let mut notes = Vec::new();
    let lan0 = s.adapters.first().ok_or("the scenario has no adapter")?;
    for a in &s.adapters[1..] {
        if a.ip != lan0.ip {
            return Err(format!(
                "adapter {} serves {:?} but {} serves {:?}: every adapter of the single-IP cluster serves the same addresses",
                a.name, a.ip, lan0.name, lan0.ip
            ));
        }
    }
    let ipv4 = lan0.ip.iter().find_map(|ip| match ip {
        IpAddr::V4(v) => Some(*v),
        IpAddr::V6(_) => None,
    });
    let ipv6 = lan0.ip.iter().find_map(|ip| match ip {
        IpAddr::V6(v) => Some(*v),
        IpAddr::V4(_) => None,
    });
    if lan0.ip.len() > ipv4.iter().count() + ipv6.iter().count() {
        notes.push(format!(
            "adapter {} lists several addresses of one family; the cluster serves the first of each",
            lan0.name
        ));
    }
    if lan0.role == Some(crate::scenario::model::Role::Backup) {
        return Err(format!(
            "adapter {} is a backup but comes first: list the primary adapter first (it carries the cluster's MAC until it fails)",
            lan0.name
        ));
    }
    let mut rig = RigConfig {
        names: s
            .adapters
            .iter()
            .map(|a| (a.name.clone(), snet_nic_model::mac::MacAddr(a.mac.0)))
            .collect(),
        processors: u16::try_from(s.processors.count).map_err(|_| "too many processors")?,
        adapters: u16::try_from(s.adapters.len()).map_err(|_| "too many adapters")?,
        planes: s.fabric.planes.iter().map(|&p| plane(p)).collect(),
        seed,
        topology: Some(topology(s, layout)?),
        ..RigConfig::default()
    };
    let f = &s.fabric;
    rig.fabric = FabricConfig {
        limits: PacketLimits::new(f.generation.to_fabric().max_payload())
            .map_err(|e| e.to_string())?,
        path_formation: f.path_formation.to_fabric(),
        buffer_slots: u8::try_from(f.buffer_slots)
            .map_err(|_| "fabric.buffer_slots is too large")?,
        turnaround: f.turnaround.to_fabric(),
        transaction_timeout: f.transaction_timeout.to_fabric(),
        max_attempts: u8::try_from(f.max_attempts)
            .map_err(|_| "fabric.max_attempts is too large")?,
        crc_error_rate: f.crc_error_rate.get(),
        trains: f.trains,
        memory_size: s.processors.memory.bytes(),
        ..FabricConfig::default()
    };
    rig.nic.mac.speed = LinkSpeed::from_bits_per_s(lan0.link_speed.bits_per_s());
    rig.nic.mac.mtu = lan0.mtu;
    rig.queue.rx_ring = lan0.rx_ring;
    rig.queue.tx_ring = lan0.tx_ring;
    rig.queue.rx_refill_batch = lan0.rx_refill;
    // The completion ring holds a completion for every descriptor, the
    // buffer pool fills both rings, and a buffer holds a whole frame.
    rig.queue.cq_ring = (lan0.rx_ring + lan0.tx_ring).next_power_of_two();
    rig.queue.buffers = lan0.rx_ring + lan0.tx_ring;
    rig.queue.chunk = (lan0.mtu + 32).next_power_of_two().max(2048);
    rig.queue.coalesce_count = lan0.coalesce.count;
    rig.queue.coalesce_ns = u32::try_from(lan0.coalesce.time.as_ns()).unwrap_or(u32::MAX);
    rig.client_speed = LinkSpeed::GBIT_1;
    let fw = &mut rig.nic.firmware;
    fw.connection_capacity = s.firmware.connections as usize;
    fw.initial_master = snet_firmware::ProcessorId(s.firmware.master as u16);
    fw.shared_ports = s
        .firmware
        .distribution
        .ranges()
        .iter()
        .map(|r| SharedPortRange {
            protocol: match r.protocol {
                Protocol::Tcp => 6,
                Protocol::Udp => 17,
            },
            first: r.ports.first,
            last: r.ports.last,
            policy: match r.policy {
                Policy::RoundRobin => snet_firmware::config::Policy::RoundRobin,
                Policy::CapacityWeighted => snet_firmware::config::Policy::CapacityWeighted,
                Policy::Maglev => snet_firmware::config::Policy::Maglev,
            },
        })
        .collect();
    let c = &s.processors.cpu;
    let cpu = HostCpu {
        per_segment: c.per_segment.to_fabric(),
        per_byte_ps: c.per_byte.as_ps(),
        per_message: c.per_message.to_fabric(),
        per_socket_call: c.per_socket_call.to_fabric(),
        per_work_unit: c.per_app_unit.to_fabric(),
    };
    let stack = match s.stack {
        Stack::Parallel => StackMode::Parallel,
        Stack::Conventional { processor } => StackMode::Conventional {
            at: processor as usize,
        },
    };
    let buffer = socket_buffer(s);
    let sockets = SocketConfig {
        tcp_rx_buffer: buffer,
        tcp_tx_buffer: buffer,
        nodelay: true,
        ..SocketConfig::default()
    };
    Ok((
        NetConfig {
            rig,
            clients: client_hosts(s),
            stack,
            sockets,
            cpu,
            ipc: IpcConfig::default(),
            capacity_reports: s
                .firmware
                .distribution
                .ranges()
                .iter()
                .any(|r| r.policy == Policy::CapacityWeighted)
                .then_some(CAPACITY_REPORTS),
            ipv4,
            ipv6,
        },
        notes,
    ))
}

/// Socket buffer bytes per direction: enough for the largest request or
/// response (up to 64 KiB), at least 4 KiB, so a large cluster's many
/// connections stay small; 64 KiB with an http app (its clients may ask
/// for any size).
pub fn socket_buffer(s: &Scenario) -> usize {
    if s.apps.iter().any(|a| a.model == AppModel::Http) {
        return 65536;
    }
    let mut most = 0u64;
    for c in &s.clients {
        most = most
            .max(c.request.bytes())
            .max(c.response.map_or(0, |r| r.bytes()));
    }
    for a in &s.apps {
        most = most.max(a.response.map_or(0, |r| r.bytes()));
    }
    (most + 64).next_power_of_two().clamp(4096, 65536) as usize
}

/// Client hosts of every population.
pub fn client_hosts(s: &Scenario) -> usize {
    s.clients
        .iter()
        .map(|c| c.count.div_ceil(members_per_host(c.count)) as usize)
        .sum()
}

/// The response size a population asks for: its own, else its app's.
fn response_of(s: &Scenario, c: &crate::scenario::model::Client) -> u64 {
    if let Some(r) = c.response {
        return r.bytes();
    }
    let app = s.apps.iter().find(|a| a.port == c.target.port());
    match app {
        Some(a) => match (a.response, a.model) {
            (Some(r), _) => r.bytes(),
            (None, AppModel::Echo) => c.request.bytes(),
            (None, AppModel::Sink) => 0,
            (None, _) => 1024,
        },
        None => 1024,
    }
}

/// Gives every client host its members.
/// Scenario time 0 is `t0` of the engine's clock (after the servers
/// started listening).
pub fn attach_clients(
    s: &Scenario,
    seed: u64,
    rig: &mut NetRig,
    ledger: &Shared,
    t0: Instant,
) -> Result<(), String> {
    let end = t0 + s.duration.to_fabric();
    let buffer = socket_buffer(s);
    let mut host = 0usize;
    for (i, c) in s.clients.iter().enumerate() {
        let app = s
            .apps
            .iter()
            .find(|a| a.port == c.target.port() && a.protocol == c.protocol);
        let per_member_gap = c.rate.map(|r| {
            let mean = Duration::from_ps(
                ((c.count as f64 / r.as_per_second()) * 1e12).min(u64::MAX as f64 / 2.0) as u64,
            );
            (mean, c.arrival == Arrival::Poisson)
        });
        let plan = Plan {
            population: i as u16,
            target: c.target,
            udp: c.protocol == Protocol::Udp,
            broker: app.is_some_and(|a| a.model == AppModel::Broker),
            request: u32::try_from(c.request.bytes().max(super::wire::HEADER_LEN as u64))
                .map_err(|_| format!("clients[{i}].request is too large"))?,
            response: u32::try_from(response_of(s, c))
                .map_err(|_| format!("clients[{i}].response is too large"))?,
            per_connection: c.requests_per_connection.max(1),
            gap: per_member_gap,
            think: c.think.to_fabric(),
            start: t0 + c.start.to_fabric(),
            stop: c.stop.map_or(end, |t| t0 + t.to_fabric()).min(end),
            buffer,
        };
        let per_host = members_per_host(c.count);
        let hosts = c.count.div_ceil(per_host);
        for h in 0..hosts {
            let n = per_host.min(c.count - h * per_host);
            let members: Vec<(u64, Duration)> = (0..n)
                .map(|k| {
                    let member = u64::from(h * per_host + k);
                    let offset = Duration::from_ps(
                        (u128::from(plan.think.as_ps()) * u128::from(member)
                            / u128::from(c.count.max(1))) as u64,
                    );
                    (seed ^ (member << 20) ^ ((i as u64) << 52) ^ 0x5eed, offset)
                })
                .collect();
            let driver = HostDriver::new(plan, &members, ledger.clone());
            rig.attach_client(host, Box::new(driver))?;
            host += 1;
        }
    }
    Ok(())
}

/// Builds an application instance around the run's ledger.
pub type MakeApp = Box<dyn Fn(&Shared) -> Box<dyn Application>>;

/// One application instance to start.
pub struct Instance {
    /// The processor.
    pub processor: usize,
    /// It opens a listening socket (or binds a UDP port) the clients need.
    pub listens: bool,
    /// The scenario app it belongs to (index in `apps`).
    pub app: usize,
    /// Builds it (again after a restore).
    pub make: MakeApp,
}

/// Every application instance of the scenario, and notes on placements the
/// stack forced.
pub fn instances(s: &Scenario, max_payload: usize) -> Result<(Vec<Instance>, Vec<String>), String> {
    let n = s.processors.count;
    let mut out: Vec<Instance> = Vec::new();
    let mut notes = Vec::new();
    let conventional = matches!(s.stack, Stack::Conventional { .. });
    let cpu = s.processors.cpu;
    for (ai, a) in s.apps.iter().enumerate() {
        let name = app_name(a);
        let service = SERVICE_BASE + ai as u32;
        let work = a.work.time(&cpu).to_fabric();
        let mut front: Vec<u32> = a.processors.resolve(n);
        if conventional && front.len() > 1 && !is_backend(s, &name) {
            notes.push(format!(
                "{name}: the conventional stack has one listener per port, so the front end runs on processor {} only (not {})",
                front[0], a.processors
            ));
            front.truncate(1);
        }
        let workers: Vec<usize> = a
            .workers
            .as_ref()
            .map_or_else(|| (0..n).collect(), |w| w.resolve(n))
            .into_iter()
            .map(|p| p as usize)
            .collect();
        let port = a.port;
        match (a.model, a.protocol) {
            (AppModel::Monolithic | AppModel::Echo | AppModel::Sink, Protocol::Udp) => {
                for &p in &front {
                    let nm = name.clone();
                    out.push(Instance {
                        processor: p as usize,
                        listens: true,
                        app: ai,
                        make: Box::new(move |l| {
                            Box::new(DatagramServer::new(&nm, port, work, l.clone()))
                        }),
                    });
                }
            }
            (AppModel::Monolithic | AppModel::Echo | AppModel::Sink, Protocol::Tcp) => {
                let backend = is_backend(s, &name);
                for (k, &p) in front.iter().enumerate() {
                    let nm = name.clone();
                    let port = if backend {
                        backend_port(&name, port, k)?
                    } else {
                        port
                    };
                    out.push(Instance {
                        processor: p as usize,
                        listens: true,
                        app: ai,
                        make: Box::new(move |l| {
                            Box::new(Server::new(&nm, Some(port), None, work, l.clone()))
                        }),
                    });
                }
            }
            (AppModel::Listener | AppModel::Hybrid, _) => {
                let pick = if a.model == AppModel::Hybrid {
                    Pick::LeastLoaded
                } else {
                    Pick::RoundRobin
                };
                for &p in &front {
                    let nm = name.clone();
                    let w = workers.clone();
                    out.push(Instance {
                        processor: p as usize,
                        listens: true,
                        app: ai,
                        make: Box::new(move |l| {
                            Box::new(Handoff::new(&nm, port, service, w.clone(), pick, l.clone()))
                        }),
                    });
                }
                for &p in &workers {
                    let nm = format!("{name}-worker");
                    out.push(Instance {
                        processor: p,
                        listens: false,
                        app: ai,
                        make: Box::new(move |l| {
                            Box::new(Server::new(&nm, None, Some(service), work, l.clone()))
                        }),
                    });
                }
            }
            (AppModel::Distributor, _) => {
                for &p in &front {
                    let nm = name.clone();
                    let w = workers.clone();
                    out.push(Instance {
                        processor: p as usize,
                        listens: true,
                        app: ai,
                        make: Box::new(move |l| {
                            Box::new(Distributor::new(
                                &nm,
                                port,
                                service,
                                w.clone(),
                                max_payload,
                                l.clone(),
                            ))
                        }),
                    });
                }
                for &p in &workers {
                    let nm = format!("{name}-backend");
                    out.push(Instance {
                        processor: p,
                        listens: false,
                        app: ai,
                        make: Box::new(move |l| {
                            Box::new(Backend::new(&nm, service, work, max_payload, l.clone()))
                        }),
                    });
                }
            }
            (AppModel::Http, _) => {
                let body = a.response.map_or(1024, |r| r.bytes());
                for &p in &front {
                    let nm = name.clone();
                    out.push(Instance {
                        processor: p as usize,
                        listens: true,
                        app: ai,
                        make: Box::new(move |l| {
                            Box::new(HttpServer::new(&nm, port, work, body, l.clone()))
                        }),
                    });
                }
            }
            (AppModel::Broker, _) => {
                let servers: Vec<(u16, u32)> = a
                    .backend
                    .as_ref()
                    .and_then(|b| s.apps.iter().find(|x| x.name == *b))
                    .map(|b| {
                        b.processors
                            .resolve(n)
                            .into_iter()
                            .enumerate()
                            .map(|(k, p)| Ok((backend_port(&b.name, b.port, k)?, p)))
                            .collect::<Result<Vec<_>, String>>()
                    })
                    .transpose()?
                    .unwrap_or_default();
                for &p in &front {
                    let nm = name.clone();
                    let sv = servers.clone();
                    out.push(Instance {
                        processor: p as usize,
                        listens: true,
                        app: ai,
                        make: Box::new(move |l| {
                            Box::new(
                                Server::new(&nm, Some(port), None, work, l.clone())
                                    .broker(Broker::new(sv.clone())),
                            )
                        }),
                    });
                }
            }
        }
    }
    Ok((out, notes))
}

/// An app's name as reports use it: its `name`, else `MODEL-PORT`.
pub fn app_name(a: &crate::scenario::model::App) -> String {
    if a.name.is_empty() {
        format!("{}-{}", a.model, a.port)
    } else {
        a.name.clone()
    }
}

/// The client hosts (indices) of the population named `name` (its
/// `name`, else `clients<i>`).
pub fn population_hosts(s: &Scenario, name: &str) -> Option<std::ops::Range<usize>> {
    let mut first = 0usize;
    for (i, c) in s.clients.iter().enumerate() {
        let n = c.count.div_ceil(members_per_host(c.count)) as usize;
        let own = if c.name.is_empty() {
            format!("clients{i}")
        } else {
            c.name.clone()
        };
        if own == name {
            return Some(first..first + n);
        }
        first += n;
    }
    None
}

/// The port of a broker back end's `k`-th server: `port + k`.
fn backend_port(name: &str, port: u16, k: usize) -> Result<u16, String> {
    u16::try_from(k)
        .ok()
        .and_then(|k| port.checked_add(k))
        .ok_or_else(|| {
            format!(
                "app {name}: a broker's back end listens on port + k in its k-th processor, and port {port} + {k} is beyond 65535"
            )
        })
}

/// Whether the app named `name` is some broker's back end (its instances
/// then listen on `port + k`, one port each).
fn is_backend(s: &Scenario, name: &str) -> bool {
    s.apps
        .iter()
        .any(|a| a.model == AppModel::Broker && a.backend.as_deref() == Some(name))
}

/// Loads the custom filter tree, relative to the scenario's directory.
pub fn filter_tree(
    s: &Scenario,
    base: Option<&Path>,
) -> Result<Option<snet_firmware::filter::FilterTree>, String> {
    let Some(f) = &s.firmware.filter else {
        return Ok(None);
    };
    // The loader already resolves the path against the scenario file's
    // directory; a scenario built from text resolves it against `base`.
    let path = match base {
        Some(b) if f.is_relative() && !f.exists() => b.join(f),
        _ => f.clone(),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("firmware.filter: cannot read {}: {e}", path.display()))?;
    snet_firmware::filter::FilterTree::from_yaml(&text)
        .map(Some)
        .map_err(|e| format!("firmware.filter: {}: {e}", path.display()))
}
