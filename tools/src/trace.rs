//! `snet trace`: the timeline of one connection (see
//! `snet_testbench::trace`).

use std::path::PathBuf;

use snet_testbench::trace::{Pick, TraceOptions, trace};

/// Arguments of `snet trace`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example: a connection of the processor that fails in the quickstart

  $ snet trace examples/quickstart.yaml --fabric
  connection 861 of 2099 in quickstart (seed 1, trace_hash …): 198.18.1.5:20069 → 198.18.0.10:2323, served by processor 2
  12 frames on the adapters' ports, 9 of them matched to the fabric packet that carried them (…)

            time  where        what
        32.776ms  client       starts connecting from 198.18.1.5:20069 to 198.18.0.10:2323
        32.778ms  lan0 port    in from the client: SYN seq 3918028700 ack 0 len 0 (66 B frame)
        32.779ms  fabric x     lan0 writes it into processor 2's buffer (address 0x5001000f7800, 66 B in this packet)
        33.190ms  fabric y     lan0 reads it from processor 2's buffer (read response, 66 B in this packet)
        33.192ms  lan0 port    out to the client: SYN|ACK seq 26179770 ack 3918028701 len 0 (66 B frame)
  …
        40.000ms  fault        fail processor 2 (applied)
        40.105ms  lan0 port    out to the client: RST seq 26181819 ack 0 len 0 (60 B frame)
  …

  $ snet trace examples/quickstart.yaml --connection 17
  $ snet trace examples/quickstart.yaml --client 198.18.1.5:20001 --json trace.json

Without --connection or --client it follows the first connection of a
failed processor that was reset (or else connection 0). Times are scenario
time. Without --fabric the run is the one `snet run` makes of the file and
seed (same trace_hash); with it, the one `snet run --pcap` makes. Captures
go to a temporary directory that is removed.

Exit codes: 0 the timeline was printed, 2 the file is invalid or the
connection does not exist.")]
pub struct TraceArgs {
    /// The scenario file (YAML; see docs/scenario-reference.md).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Follow connection N (numbered in the order clients opened them, from 0).
    #[arg(long, value_name = "N", conflicts_with = "client")]
    pub connection: Option<u32>,
    /// Follow the connection from this client address and port.
    #[arg(long, value_name = "ADDR:PORT")]
    pub client: Option<std::net::SocketAddr>,
    /// Use this seed instead of the file's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also show, for each frame, the fabric packet that carried it between
    /// the adapter and processor memory. The fabric is then timed packet by
    /// packet, as with `snet run --pcap`, and the run can differ in detail.
    #[arg(long)]
    pub fabric: bool,
    /// Also write the timeline as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Runs the scenario and prints the connection's timeline.
pub fn run(args: &TraceArgs) -> u8 {
    let Some(scenario) = crate::load_scenario(&args.file) else {
        return crate::EXIT_USAGE;
    };
    let which = match (args.connection, args.client) {
        (Some(n), _) => Pick::Number(n),
        (None, Some(a)) => Pick::Client(a),
        (None, None) => Pick::Auto,
    };
    let options = TraceOptions {
        seed: args.seed,
        pick: which,
        fabric: args.fabric,
        base_dir: args.file.parent().map(PathBuf::from),
    };
    let t = match trace(&scenario, &options) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return crate::EXIT_USAGE;
        }
    };
    print!("{}", t.text());
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, t.to_json())
    {
        eprintln!("--json {}: {e}", path.display());
        return crate::EXIT_USAGE;
    }
    crate::EXIT_OK
}
