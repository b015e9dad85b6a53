//! `snet filter`: test-run a filter on frames, like `BPF_PROG_TEST_RUN`.
//!
//! The filter is the built-in one or a YAML tree; the frames come from a pcap
//! file or from packet specs on the command line; listeners and shared port
//! ranges set up the tables the built-in stages consult. Each frame's verdict
//! is printed, then the mean nanoseconds per frame over `--repeat` passes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use snet_firmware::control::{ControlMessage, Envelope};
use snet_firmware::filter::FilterTree;
use snet_firmware::kit::{PacketBuilder, pcap, test_run};
use snet_firmware::listener::ListenerKey;
use snet_firmware::tuple::{PROTO_TCP, PROTO_UDP};
use snet_firmware::wire::builder::MAX_PAYLOAD;
use snet_firmware::wire::{VlanPolicy, tcp_flags};
use snet_firmware::{Config, Firmware, Instant, Policy, ProcessorId};

/// Arguments of `snet filter`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Frame specs: KIND SRC DST [OPTIONS], KIND one of tcp, udp, icmp, arp;
  IPv6 sockets as [2001:db8::7]:40000; options: flags=syn,ack  vlan=100  payload=64

Examples:
  snet filter --tree firmware/examples/lab-8080.yaml --listen 1:tcp:8080 \\
      --frame 'tcp 198.18.5.7:40000 198.18.0.10:8080 flags=syn' \\
      --frame 'tcp 198.18.6.7:40000 198.18.0.10:8080 flags=syn' \\
      --expect '0=deliver P3' --expect '1=deliver P1'
  snet filter --pcap capture.pcap --share tcp:23-23:round_robin --listen 1:tcp:23 --listen 2:tcp:23 --repeat 100000

Exit codes: 0 ok, 1 an --expect failed, 2 invalid input or usage.")]
pub struct FilterArgs {
    /// A YAML filter tree; without it the built-in filter runs.
    #[arg(long, value_name = "FILE")]
    pub tree: Option<PathBuf>,
    /// Frames from a pcap file (Ethernet link type).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// A frame built from a spec (repeatable; after the pcap frames).
    #[arg(long = "frame", value_name = "SPEC")]
    pub frames: Vec<String>,
    /// Register a listener: PROCESSOR:tcp|udp:PORT (repeatable).
    #[arg(long = "listen", value_name = "P:PROTO:PORT")]
    pub listens: Vec<String>,
    /// Enable round robin on a port range: tcp|udp:FIRST-LAST[:POLICY]
    /// (round_robin, capacity_weighted, maglev).
    #[arg(long = "share", value_name = "PROTO:RANGE[:POLICY]")]
    pub shares: Vec<String>,
    /// Processors in the cluster.
    #[arg(long, default_value_t = 4)]
    pub processors: u16,
    /// Accept VLAN-tagged frames (any VLAN ID) instead of dropping them.
    #[arg(long)]
    pub accept_vlan: bool,
    /// Timed passes over the frames.
    #[arg(long, default_value_t = 1000)]
    pub repeat: u32,
    /// Expected verdict of frame INDEX: INDEX=TEXT, where TEXT starts the
    /// verdict's description (`deliver P3`, `master`, `drop filtered`, `reply`).
    #[arg(long = "expect", value_name = "INDEX=TEXT")]
    pub expects: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn usage(msg: String) -> u8 {
    eprintln!("snet filter: {msg}");
    crate::EXIT_USAGE
}

fn proto(s: &str) -> Result<u8, String> {
    match s {
        "tcp" => Ok(PROTO_TCP),
        "udp" => Ok(PROTO_UDP),
        _ => Err(format!("protocol `{s}` is neither tcp nor udp")),
    }
}

fn parse_share(s: &str) -> Result<(u8, u16, u16, Policy), String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(format!("--share `{s}`: expected PROTO:FIRST-LAST[:POLICY]"));
    }
    let (a, b) = parts[1].split_once('-').unwrap_or((parts[1], parts[1]));
    let first = a
        .parse()
        .map_err(|_| format!("--share `{s}`: `{a}` is not a port"))?;
    let last = b
        .parse()
        .map_err(|_| format!("--share `{s}`: `{b}` is not a port"))?;
    let policy = match parts.get(2) {
        Some(p) => {
            Policy::from_name(p).ok_or_else(|| format!("--share `{s}`: unknown policy `{p}`"))?
        }
        None => Policy::RoundRobin,
    };
    Ok((proto(parts[0])?, first, last, policy))
}

fn parse_listen(s: &str) -> Result<(u16, ListenerKey), String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [p, pr, port] = parts.as_slice() else {
        return Err(format!("--listen `{s}`: expected PROCESSOR:PROTO:PORT"));
    };
    let p = p
        .parse()
        .map_err(|_| format!("--listen `{s}`: `{p}` is not a processor number"))?;
    let port = port
        .parse()
        .map_err(|_| format!("--listen `{s}`: `{port}` is not a port"))?;
    Ok((
        p,
        ListenerKey {
            protocol: proto(pr)?,
            addr: None,
            port,
        },
    ))
}

/// Builds a frame from a spec such as `tcp 198.18.5.7:40000 198.18.0.10:80 flags=syn`.
pub fn parse_frame_spec(spec: &str) -> Result<Vec<u8>, String> {
    let words: Vec<&str> = spec.split_whitespace().collect();
    if words.len() < 3 {
        return Err(format!("frame `{spec}`: expected KIND SRC DST [OPTIONS]"));
    }
    let sock = |w: &str| {
        w.parse::<SocketAddr>()
            .map_err(|_| format!("frame `{spec}`: `{w}` is not ADDRESS:PORT"))
    };
    let ip = |w: &str| {
        w.parse::<IpAddr>()
            .map_err(|_| format!("frame `{spec}`: `{w}` is not an address"))
    };
    let mut b = match words[0] {
        "tcp" => PacketBuilder::tcp(sock(words[1])?, sock(words[2])?),
        "udp" => PacketBuilder::udp(sock(words[1])?, sock(words[2])?),
        "icmp" => PacketBuilder::icmp_echo(ip(words[1])?, ip(words[2])?),
        "arp" => match (ip(words[1])?, ip(words[2])?) {
            (IpAddr::V4(s), IpAddr::V4(t)) => PacketBuilder::arp_request(s, t),
            _ => return Err(format!("frame `{spec}`: ARP needs IPv4 addresses")),
        },
        k => {
            return Err(format!(
                "frame `{spec}`: unknown kind `{k}` (tcp, udp, icmp, arp)"
            ));
        }
    };
    for opt in &words[3..] {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| format!("frame `{spec}`: option `{opt}` is not KEY=VALUE"))?;
        b = match k {
            "flags" => {
                b.flags(tcp_flags::parse(v, ',').map_err(|e| format!("frame `{spec}`: {e}"))?)
            }
            "vlan" => b.vlan(
                v.parse()
                    .map_err(|_| format!("frame `{spec}`: `{v}` is not a VLAN ID"))?,
            ),
            "payload" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("frame `{spec}`: `{v}` is not a length"))?;
                // Checked before the payload is allocated.
                if n > MAX_PAYLOAD {
                    return Err(format!(
                        "frame `{spec}`: payload of {n} bytes is longer than {MAX_PAYLOAD}"
                    ));
                }
                b.payload(&vec![0x5a; n])
            }
            other => {
                return Err(format!(
                    "frame `{spec}`: unknown option `{other}` (flags, vlan, payload)"
                ));
            }
        };
    }
    b.build().map_err(|e| format!("frame `{spec}`: {e}"))
}

/// Runs `snet filter`. Returns the exit code.
pub fn run(args: &FilterArgs) -> u8 {
    let mut config = Config {
        processor_count: args.processors,
        ..Config::default()
    };
    if args.accept_vlan {
        config.parse.vlan = VlanPolicy::Accept(Vec::new());
    }
    for s in &args.shares {
        match parse_share(s) {
            Ok((p, a, b, pol)) => config = config.share_ports(p, a, b, pol),
            Err(e) => return usage(e),
        }
    }
    let mut fw = match Firmware::new(config) {
        Ok(fw) => fw,
        Err(e) => return usage(format!("configuration: {e}")),
    };
    if let Some(path) = &args.tree {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return usage(format!("{}: {e}", path.display())),
        };
        match FilterTree::from_yaml(&text) {
            Ok(t) => fw.set_filter(Box::new(t)),
            Err(e) => return usage(format!("{}: {e}", path.display())),
        }
    }
    for l in &args.listens {
        let (p, key) = match parse_listen(l) {
            Ok(x) => x,
            Err(e) => return usage(e),
        };
        if let Err(e) = fw.apply_envelope(
            &Envelope::new(ProcessorId(p), ControlMessage::RegisterListener(key)),
            Instant::ZERO,
        ) {
            return usage(format!("--listen `{l}`: {e}"));
        }
    }
    let mut frames = Vec::new();
    if let Some(path) = &args.pcap {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return usage(format!("{}: {e}", path.display())),
        };
        match pcap::parse_pcap(&bytes) {
            Ok(recs) => frames.extend(recs.into_iter().map(|r| r.data)),
            Err(e) => return usage(format!("{}: {e}", path.display())),
        }
    }
    for spec in &args.frames {
        match parse_frame_spec(spec) {
            Ok(f) => frames.push(f),
            Err(e) => return usage(e),
        }
    }
    if frames.is_empty() {
        return usage("no frames: give --pcap FILE or --frame SPEC".into());
    }
    let mut expects = Vec::new();
    for e in &args.expects {
        let Some((i, text)) = e.split_once('=') else {
            return usage(format!("--expect `{e}`: expected INDEX=TEXT"));
        };
        match i.trim().parse::<usize>() {
            Ok(i) if i < frames.len() => expects.push((i, text.trim().to_string())),
            _ => {
                return usage(format!(
                    "--expect `{e}`: `{i}` is not a frame index (0..{})",
                    frames.len()
                ));
            }
        }
    }
    let report = test_run(&mut fw, &frames, args.repeat, Instant::ZERO);
    let failed: Vec<String> = expects
        .iter()
        .filter(|(i, text)| {
            !report.frames[*i]
                .verdict
                .describe()
                .starts_with(text.as_str())
        })
        .map(|(i, text)| {
            format!(
                "frame #{i}: expected `{text}`, got `{}`",
                report.frames[*i].verdict
            )
        })
        .collect();
    if args.json {
        let frames: Vec<_> = report
            .frames
            .iter()
            .map(|f| serde_json::json!({ "index": f.index, "len": f.len, "frame": f.summary, "verdict": f.verdict.describe() }))
            .collect();
        let out = serde_json::json!({
            "filter": args.tree.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "builtin".into()),
            "frames": frames,
            "repeats": report.repeats,
            "ns_per_frame": report.ns_per_frame,
            "failed": failed,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("{:>4} {:>5}  {:<56} verdict", "#", "bytes", "frame");
        for f in &report.frames {
            println!(
                "{:>4} {:>5}  {:<56} {}",
                f.index, f.len, f.summary, f.verdict
            );
        }
        println!(
            "{:.1} ns/frame over {} passes of {} frames",
            report.ns_per_frame,
            report.repeats,
            frames.len()
        );
        for f in &failed {
            println!("FAILED {f}");
        }
    }
    if failed.is_empty() {
        crate::EXIT_OK
    } else {
        crate::EXIT_CHECK_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_specs() {
        assert_eq!(
            parse_frame_spec("tcp 198.18.5.7:1 198.18.0.10:80 flags=syn")
                .unwrap()
                .len(),
            54
        );
        assert_eq!(
            parse_frame_spec("tcp [2001:db8::7]:1 [2001:db8::10]:80 flags=syn,ack vlan=5")
                .unwrap()
                .len(),
            78
        );
        assert_eq!(
            parse_frame_spec("udp 198.18.5.7:1 198.18.0.10:53 payload=10")
                .unwrap()
                .len(),
            52
        );
        assert!(parse_frame_spec("arp 198.18.5.7 198.18.0.10").is_ok());
        for bad in [
            "tcp",
            "sctp a b",
            "tcp 198.18.5.7:1 198.18.0.10:80 flags=xmas",
            "tcp 198.18.5.7:1 198.18.0.10:80 vlan=4095",
            "tcp 198.18.5.7:1 198.18.0.10:80 vlan=5000",
            "udp 198.18.5.7:1 [2001:db8::1]:2",
            "icmp x y",
        ] {
            assert!(parse_frame_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oversized_payload_is_refused_before_allocating() {
        let max = format!("udp 198.18.5.7:1 198.18.0.10:53 payload={MAX_PAYLOAD}");
        assert!(parse_frame_spec(&max).is_ok());
        for n in [MAX_PAYLOAD + 1, usize::MAX] {
            let spec = format!("udp 198.18.5.7:1 198.18.0.10:53 payload={n}");
            let e = parse_frame_spec(&spec).unwrap_err();
            assert!(
                e.contains(&format!(
                    "payload of {n} bytes is longer than {MAX_PAYLOAD}"
                )),
                "{e}"
            );
        }
        let args = FilterArgs {
            tree: None,
            pcap: None,
            frames: vec![format!(
                "udp 198.18.5.7:1 198.18.0.10:53 payload={}",
                usize::MAX
            )],
            listens: Vec::new(),
            shares: Vec::new(),
            processors: 4,
            accept_vlan: false,
            repeat: 0,
            expects: Vec::new(),
            json: false,
        };
        assert_eq!(run(&args), crate::EXIT_USAGE);
    }

    #[test]
    fn frame_spec_flags_read_like_tree_flags() {
        use snet_firmware::filter::Field;
        use snet_firmware::wire::{ParseOptions, parse_frame};
        let f = parse_frame_spec("tcp 198.18.5.7:1 198.18.0.10:80 flags=syn,ack,psh").unwrap();
        let p = parse_frame(&f, &ParseOptions::default()).unwrap();
        assert_eq!(
            Field::TcpFlags.value(&p),
            Field::TcpFlags.parse_literal(&"syn|ack|psh".into()).ok()
        );
        let e = parse_frame_spec("tcp 198.18.5.7:1 198.18.0.10:80 flags=syn,xmas").unwrap_err();
        assert!(
            e.ends_with("`xmas` is not a TCP flag (fin, syn, rst, psh, ack, urg)"),
            "{e}"
        );
    }

    #[test]
    fn shares_and_listens() {
        assert_eq!(
            parse_share("tcp:8000-8099:maglev").unwrap(),
            (6, 8000, 8099, Policy::Maglev)
        );
        assert_eq!(
            parse_share("udp:53").unwrap(),
            (17, 53, 53, Policy::RoundRobin)
        );
        assert!(parse_share("tcp:1-2:random").is_err());
        assert_eq!(parse_listen("3:tcp:8080").unwrap().0, 3);
        assert!(parse_listen("3:tcp").is_err());
    }
}
