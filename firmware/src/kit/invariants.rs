//! Invariant checks shared by the fuzz targets and the property tests: feed a
//! frame or a control message to a firmware and check what must always hold.

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

use crate::control::Envelope;
use crate::firmware::Firmware;
use crate::time::Instant;
use crate::tuple::ip_of;
use crate::verdict::Verdict;
use crate::wire::{
    ETHERTYPE_IPV4, ParseOptions, ParsedFrame, VlanPolicy, parse_frame, tcp_flags, vlan,
};

/// Classifies `frame` and checks: exactly one frame counted; a delivery goes
/// to a live processor and an existing queue; a master verdict names the
/// current master; a reply is a well-formed TCP RST ([`check_reset`]); table
/// counts stay within the configured capacities.
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
            check_reset(rst).map_err(|e| format!("reply: {e}"))?;
        }
        Verdict::Drop(_) => {}
    }
    check_tables(fw)?;
    Ok(v)
}

/// Applies `bytes` as a control message and checks: exactly one message
/// counted (accepted or rejected); an accepted message re-encodes to the same
/// bytes; the replicated state survives a dump and a parse unchanged; the
/// frames the firmware queued meanwhile (taken here) are as many as the
/// proactive resets counted, each a well-formed TCP RST ([`check_reset`]).
pub fn check_control(fw: &mut Firmware, bytes: &[u8], now: Instant) -> Result<(), String> {
    let c = fw.counters();
    let before = c.control_accepted + c.rejected_total();
    let resets_before = c.proactive_resets;
    let earlier = fw.take_frames();
    let r = fw.apply(bytes, now);
    let c = fw.counters();
    if c.control_accepted + c.rejected_total() != before + 1 {
        return Err("control counters did not move by one".into());
    }
    let resets = c.proactive_resets - resets_before;
    let frames = fw.take_frames();
    if frames.len() as u64 != resets {
        return Err(format!(
            "{} frames queued for {resets} proactive resets",
            frames.len()
        ));
    }
    for f in earlier.iter().chain(&frames) {
        check_reset(f).map_err(|e| format!("queued frame: {e}"))?;
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

/// Checks that `frame` (Ethernet, without FCS) is a TCP RST the adapter may
/// send: it parses (one VLAN tag allowed), its IPv4 header checksum and its
/// TCP checksum verify, and RST is set. Returns the parsed frame.
pub fn check_reset(frame: &[u8]) -> Result<ParsedFrame, String> {
    let opts = ParseOptions {
        vlan: VlanPolicy::Accept(Vec::new()),
        ..ParseOptions::default()
    };
    let p = parse_frame(frame, &opts).map_err(|r| format!("does not parse: {r}"))?;
    let ip = p.ip.as_ref().ok_or("not IP")?;
    let tcp = p.tcp().ok_or("not TCP")?;
    if tcp.flags & tcp_flags::RST == 0 {
        return Err("not a RST".into());
    }
    let tag = if p.vlan_tci.is_some() {
        vlan::TAG_LEN
    } else {
        0
    };
    let l3 = &frame[14 + tag..];
    let l4 = if p.ethertype == ETHERTYPE_IPV4 {
        let v4 = Ipv4Packet::new_checked(l3).map_err(|e| format!("IPv4: {e}"))?;
        if !v4.verify_checksum() {
            return Err("bad IPv4 header checksum".into());
        }
        &l3[v4.header_len().into()..usize::from(v4.total_len())]
    } else {
        let v6 = Ipv6Packet::new_checked(l3).map_err(|e| format!("IPv6: {e}"))?;
        if v6.next_header() != IpProtocol::Tcp {
            return Err("IPv6 extension headers in a RST".into());
        }
        &l3[40..40 + usize::from(v6.payload_len())]
    };
    let seg = TcpPacket::new_checked(l4).map_err(|e| format!("TCP: {e}"))?;
    let (src, dst) = (
        IpAddress::from(ip_of(&ip.src)),
        IpAddress::from(ip_of(&ip.dst)),
    );
    if !seg.verify_checksum(&src, &dst) {
        return Err("bad TCP checksum".into());
    }
    Ok(p)
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
