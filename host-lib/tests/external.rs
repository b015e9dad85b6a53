//! A LAN station for the world outside the engine: a frame it sends (no
//! FCS, shorter than the minimum) reaches the cluster, and the cluster's
//! answer waits for it, FCS checked and stripped.

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
};
use snet_fabric::time::Duration;
use snet_firmware::wire::builder::PacketBuilder;
use snet_host_lib::net::{CLUSTER_IPV4, NetRig};
use snet_nic_model::{LinkSpeed, MacAddr, StationId};

#[test]
fn an_external_station_gets_the_clusters_arp_reply() {
    let mut rig = NetRig::new(Default::default(), 0).unwrap();
    let station = rig.attach_external_station(MacAddr([2, 0, 0, 0xfe, 0, 0]), LinkSpeed::GBIT_1);
    rig.run_for(Duration::from_ms(1));
    // The outside uses its own address; the switch learns it.
    let me = EthernetAddress([2, 0, 0, 0xfe, 0, 7]);
    let buf = PacketBuilder::arp_request(std::net::Ipv4Addr::new(198, 18, 0, 1), CLUSTER_IPV4)
        .macs(me.0, [0xff; 6])
        .build()
        .unwrap();
    assert_eq!(buf.len(), 42, "shorter than the 60-byte minimum");
    assert!(rig.external_transmit(station, &buf).is_some());
    // Only external stations send this way.
    assert!(rig.external_transmit(StationId(0), &buf).is_none());
    rig.run_for(Duration::from_ms(1));
    let mut out = Vec::new();
    assert_eq!(rig.take_external_frames(&mut out), 0, "no corrupted frame");
    let reply = out
        .iter()
        .filter(|(s, _)| *s == station)
        .find_map(|(_, f)| {
            let eth = EthernetFrame::new_checked(&f[..]).ok()?;
            if eth.ethertype() != EthernetProtocol::Arp || eth.dst_addr() != me {
                return None;
            }
            ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()
        })
        .expect("an ARP reply for the outside's own address");
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        ..
    } = reply
    else {
        panic!("{reply:?}");
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!(source_protocol_addr, CLUSTER_IPV4);
    assert_eq!(source_hardware_addr.0, rig.cluster.nics[0].mac().0);
    // Taken once.
    let mut again = Vec::new();
    rig.take_external_frames(&mut again);
    assert!(again.is_empty());
}
