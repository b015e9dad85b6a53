//! Invariant checks shared by the fuzz targets and the property tests: feed a
//! frame or a control message to a firmware and check what must always hold.

use crate::control::Envelope;
use crate::firmware::Firmware;
use crate::time::Instant;
use crate::verdict::Verdict;
use crate::wire::{ParseOptions, VlanPolicy, parse_frame, tcp_flags};

/// Classifies `frame` and checks: exactly one frame counted; a delivery goes
/// to a live processor and an existing queue; a master verdict names the
/// current master; a reply is a well-formed TCP RST; table counts stay within
/// the configured capacities.
pub fn check_frame(fw: &mut Firmware, frame: &[u8], now: Instant) -> Result<Verdict, String> {
    let before = fw.counters().frames;
    let v = fw.classify(frame, now);
    if fw.counters().frames != before + 1 {
        return Err(format!(
            "frames counter moved by {}",
            fw.counters().frames - before
        ));
    }
    match &v {
        Verdict::Deliver { processor, queue } => {
            if !fw.is_live(*processor) {
                return Err(format!("delivered to {processor}, which is not live"));
            }
            if queue.0 >= fw.config().queues_per_processor {
                return Err(format!("queue {} does not exist", queue.0));
            }
        }
        Verdict::Master { processor } => {
            if fw.master() != Some(*processor) {
                return Err(format!(
                    "master verdict names {processor}, master is {:?}",
                    fw.master()
                ));
            }
        }
        Verdict::Reply { frame: rst } => {
            let opts = ParseOptions {
                vlan: VlanPolicy::Accept(Vec::new()),
                ..ParseOptions::default()
            };
            let p = parse_frame(rst, &opts).map_err(|r| format!("reply does not parse: {r}"))?;
            let tcp = p.tcp().ok_or("reply is not TCP")?;
            if tcp.flags & tcp_flags::RST == 0 {
                return Err("reply is not a RST".into());
            }
        }
        Verdict::Drop(_) => {}
    }
    check_tables(fw)?;
    Ok(v)
}

/// Applies `bytes` as a control message and checks: exactly one message
/// counted (accepted or rejected); an accepted message re-encodes to the same
/// bytes; the replicated state survives a dump and a parse unchanged.
pub fn check_control(fw: &mut Firmware, bytes: &[u8], now: Instant) -> Result<(), String> {
    let c = fw.counters();
    let before = c.control_accepted + c.rejected_total();
    let r = fw.apply(bytes, now);
    let c = fw.counters();
    if c.control_accepted + c.rejected_total() != before + 1 {
        return Err("control counters did not move by one".into());
    }
    if r.is_ok() {
        let env =
            Envelope::parse(bytes).map_err(|e| format!("accepted bytes do not parse: {e}"))?;
        if env.to_bytes() != bytes {
            return Err("accepted message is not in canonical encoding".into());
        }
    }
    let dump = fw.dump(crate::verdict::ProcessorId(0));
    let back = Envelope::parse(&dump).map_err(|e| format!("own dump does not parse: {e}"))?;
    match back.message {
        crate::control::ControlMessage::TableDump(s) if s == fw.snapshot() => {}
        _ => return Err("dump does not reproduce the snapshot".into()),
    }
    check_tables(fw)
}

fn check_tables(fw: &Firmware) -> Result<(), String> {
    let cfg = fw.config();
    if fw.established_count() > cfg.connection_capacity {
        return Err(format!(
            "{} established > capacity {}",
            fw.established_count(),
            cfg.connection_capacity
        ));
    }
    if fw.provisional_count() > cfg.provisional_capacity {
        return Err(format!(
            "{} provisional > capacity {}",
            fw.provisional_count(),
            cfg.provisional_capacity
        ));
    }
    if fw.connections().len() != fw.established_count() + fw.provisional_count() {
        return Err("table length disagrees with the counts".into());
    }
    if let Some(m) = fw.master() {
        if !fw.is_live(m) {
            return Err(format!("master {m} is not live"));
        }
    }
    for g in fw.listeners().groups() {
        if g.members().iter().any(|p| !fw.is_live(*p)) {
            return Err(format!(
                "listener group {:?} has a processor that is not live",
                g.key()
            ));
        }
        if !g.is_shared() && g.members().len() > 1 {
            return Err(format!(
                "exclusive group {:?} has {} members",
                g.key(),
                g.members().len()
            ));
        }
    }
    Ok(())
}
