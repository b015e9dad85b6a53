//! The captures of `snet run --pcap` and the Wireshark dissector
//! `tools/wireshark/snet-fabric.lua`.
//!
//! A small scenario runs with `--pcap`. Its fabric capture is read here with
//! a pcap reader of its own and every packet parsed with the project's packet
//! parser; tshark then decodes the same file with the dissector, and each
//! record's fields must agree with the parser's. Hand-made records (a flipped
//! payload byte, truncated and malformed packets, an unknown pseudo-header
//! version) must be flagged, and the LAN capture must open as clean Ethernet
//! with TCP in it.
//!
//! Without `tshark` on PATH the tshark parts are skipped, loudly on stderr;
//! CI (`.ci/run`) installs tshark.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use snet_fabric::packet::{Packet, PacketError, PacketKind, PacketLimits, PacketRepr};
use snet_fabric::time::Instant;
use snet_fabric::{EndpointId, FabricAddr, NackReason, Plane};
use snet_nic_model::capture::{
    FABRIC_PSEUDO_LEN, FABRIC_PSEUDO_VERSION, LINKTYPE_ETHERNET, LINKTYPE_FABRIC, PcapWriter,
    record_fabric,
};

/// A short run: two processors behind one adapter, eight clients.
const SCENARIO: &str = "\
name: wireshark-capture
seed: 3
duration: 20ms
processors: { count: 2 }
apps:
  - { model: monolithic, port: 2323 }
clients:
  - { count: 8, target: \"198.18.0.10:2323\", request: 64B, response: 1KiB, requests_per_connection: 4, think: 1ms }
";

/// The value of Wireshark's expert severity "warning" (`PI_WARN`).
const PI_WARN: &str = "0x00600000";

fn dissector() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wireshark/snet-fabric.lua")
}

/// The working directory, with the scenario's captures in `pcap/`; made
/// once per test binary.
fn workdir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wireshark");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the working directory can be made");
        let scenario = dir.join("capture.yaml");
        std::fs::write(&scenario, SCENARIO).expect("the scenario can be written");
        let out = Command::new(env!("CARGO_BIN_EXE_snet"))
            .arg("run")
            .arg(&scenario)
            .arg("--quiet")
            .arg("--pcap")
            .arg(dir.join("pcap"))
            .output()
            .expect("the snet binary runs");
        assert!(
            out.status.success(),
            "snet run failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn fabric_pcap() -> PathBuf {
    workdir().join("pcap/fabric.pcap")
}

/// A classic pcap file as `PcapWriter` writes it.
struct PcapFile {
    link_type: u32,
    records: Vec<Vec<u8>>,
}

/// Reads a little-endian, nanosecond pcap file; every record must be whole
/// (captured length = original length).
fn read_pcap(path: &Path) -> PcapFile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    assert!(bytes.len() >= 24, "{}: no file header", path.display());
    assert_eq!(u32_at(0), 0xa1b2_3c4d, "nanosecond pcap magic");
    assert_eq!(
        (u32_at(4) & 0xffff, u32_at(4) >> 16),
        (2, 4),
        "pcap version 2.4"
    );
    let link_type = u32_at(20);
    let mut records = Vec::new();
    let mut off = 24;
    while off < bytes.len() {
        assert!(bytes.len() - off >= 16, "record header cut at byte {off}");
        let (incl, orig) = (u32_at(off + 8) as usize, u32_at(off + 12) as usize);
        assert_eq!(incl, orig, "record at byte {off} is cut short");
        let start = off + 16;
        assert!(
            bytes.len() - start >= incl,
            "record data cut at byte {start}"
        );
        records.push(bytes[start..start + incl].to_vec());
        off = start + incl;
    }
    PcapFile { link_type, records }
}

fn parse(packet: &[u8]) -> Result<PacketRepr<'_>, PacketError> {
    let packet = Packet::new_checked(packet)?;
    PacketRepr::parse(&packet, PacketLimits::FORMAT_MAX)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether tshark runs; if not, says loudly on stderr what is skipped.
fn tshark_present(what: &str) -> bool {
    let found = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        // With SNET_REQUIRE_SYSTEM_TESTS=1 (CI sets it), a skip is a failure.
        assert!(
            std::env::var_os("SNET_REQUIRE_SYSTEM_TESTS").is_none_or(|v| v != "1"),
            "{what}: tshark is not on PATH, and SNET_REQUIRE_SYSTEM_TESTS=1 requires it"
        );
        // Straight to stderr: the test harness would swallow `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "\n==== SKIPPED: {what}\n==== tshark is not on PATH, so the Wireshark dissector is not \
             checked.\n==== Install it (Debian/Ubuntu: apt-get install tshark); CI does.\n"
        );
    }
    found
}

/// Runs tshark on `file` with the dissector loaded, a fresh home (no
/// personal preferences or plugins) and no name resolution; returns the
/// lines of its output. Fails on a tshark error or any Lua error.
fn tshark(file: &Path, args: &[&str]) -> Vec<String> {
    let home = workdir().join("tshark-home");
    std::fs::create_dir_all(&home).expect("tshark's home can be made");
    let script = format!("lua_script:{}", dissector().display());
    let out = Command::new("tshark")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", &home)
        .args(["-n", "-X", &script, "-r"])
        .arg(file)
        .args(args)
        .output()
        .expect("tshark runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tshark {args:?} on {} failed: {stderr}",
        file.display()
    );
    assert!(
        !stderr.contains("Lua") && !stdout.contains("Lua Error"),
        "Lua trouble in tshark {args:?}: {stderr}{stdout}"
    );
    stdout.lines().map(str::to_owned).collect()
}

/// The dissector fields the comparison reads, in this order.
const FIELDS: [&str; 17] = [
    "frame.number",
    "snet_fabric.pseudo.version",
    "snet_fabric.plane",
    "snet_fabric.direction",
    "snet_fabric.src",
    "snet_fabric.dst",
    "snet_fabric.type",
    "snet_fabric.rsp",
    "snet_fabric.tid",
    "snet_fabric.addr",
    "snet_fabric.len",
    "snet_fabric.payload.len",
    "snet_fabric.payload",
    "snet_fabric.nack_reason",
    "snet_fabric.crc",
    "snet_fabric.crc.status",
    "snet_fabric.kind",
];

/// The dissector's fields of every record of `file`, by field name.
fn decode(file: &Path, fields: &[&'static str]) -> Vec<HashMap<&'static str, String>> {
    let mut args = vec!["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"];
    for f in fields {
        args.extend(["-e", f]);
    }
    tshark(file, &args)
        .iter()
        .map(|line| {
            let values: Vec<&str> = line.split('\t').collect();
            assert_eq!(values.len(), fields.len(), "tshark line {line:?}");
            fields
                .iter()
                .zip(values)
                .map(|(f, v)| (*f, v.to_owned()))
                .collect()
        })
        .collect()
}

/// A tshark field value as a number: decimal, `0x` hex or a boolean; a
/// value shown as `4096 (0x01000)` counts by its first word.
fn number(value: &str) -> Option<u64> {
    let v = value.split_whitespace().next()?;
    match v {
        "True" | "true" => Some(1),
        "False" | "false" => Some(0),
        _ => match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        },
    }
}

fn kind_name(kind: PacketKind) -> &'static str {
    match kind {
        PacketKind::ReadRequest { .. } => "Read request",
        PacketKind::WriteRequest => "Write request",
        PacketKind::ReadResponse => "Read response",
        PacketKind::WriteAck => "Write ack",
        PacketKind::Nack(_) => "NACK",
    }
}

/// What the dissector must show for one record.
struct Expected {
    /// Numeric fields.
    numbers: Vec<(&'static str, u64)>,
    /// Text fields (`None`: the field must be absent).
    texts: Vec<(&'static str, Option<String>)>,
}

/// What the dissector must show for one record, from the project's parser.
fn expected(record: &[u8]) -> Expected {
    let (pseudo, bytes) = record.split_at(FABRIC_PSEUDO_LEN);
    let repr = parse(bytes).unwrap_or_else(|e| panic!("the capture holds a bad packet: {e}"));
    let packet = Packet::new_checked(bytes).expect("checked above");
    let wire_payload = &bytes[16..bytes.len() - 4];
    assert_eq!(wire_payload.len(), repr.wire_payload_len());
    let numbers = vec![
        ("snet_fabric.pseudo.version", u64::from(pseudo[0])),
        ("snet_fabric.plane", u64::from(pseudo[1])),
        ("snet_fabric.direction", u64::from(pseudo[2])),
        ("snet_fabric.src", u64::from(repr.src.raw())),
        ("snet_fabric.dst", u64::from(repr.dst.raw())),
        ("snet_fabric.type", u64::from(repr.kind.raw_type())),
        ("snet_fabric.rsp", u64::from(repr.kind.is_response())),
        ("snet_fabric.tid", u64::from(repr.tid)),
        ("snet_fabric.addr", repr.addr.0),
        ("snet_fabric.len", repr.data_len() as u64),
        ("snet_fabric.payload.len", repr.wire_payload_len() as u64),
        ("snet_fabric.crc", u64::from(packet.stored_crc())),
        ("snet_fabric.crc.status", 1),
    ];
    let nack = match repr.kind {
        PacketKind::Nack(reason) => Some(reason.code().to_string()),
        _ => None,
    };
    let texts = vec![
        (
            "snet_fabric.payload",
            (!wire_payload.is_empty()).then(|| hex(wire_payload)),
        ),
        ("snet_fabric.nack_reason", nack),
        ("snet_fabric.kind", Some(kind_name(repr.kind).to_owned())),
    ];
    Expected { numbers, texts }
}

/// Checks one decoded record against [`expected`].
fn check_record(frame: usize, record: &[u8], row: &HashMap<&'static str, String>) {
    let Expected { numbers, texts } = expected(record);
    for (field, want) in numbers {
        let got = &row[field];
        assert_eq!(
            number(got),
            Some(want),
            "frame {frame}: {field} is {got:?}, the packet parser says {want:#x}"
        );
    }
    for (field, want) in texts {
        let got = row[field].replace(':', "").to_lowercase();
        let want = want.map(|w| w.to_lowercase()).unwrap_or_default();
        assert_eq!(got, want, "frame {frame}: {field}");
    }
}

#[test]
fn the_fabric_capture_is_pcap_of_link_type_147_with_the_pseudo_header() {
    let pcap = read_pcap(&fabric_pcap());
    assert_eq!(pcap.link_type, LINKTYPE_FABRIC);
    assert!(pcap.records.len() > 100, "{} records", pcap.records.len());
    let mut kinds = HashMap::new();
    for (i, r) in pcap.records.iter().enumerate() {
        assert!(
            r.len() > FABRIC_PSEUDO_LEN,
            "record {i} is {} bytes",
            r.len()
        );
        assert_eq!(r[0], FABRIC_PSEUDO_VERSION, "record {i}");
        assert!(r[1] <= 1, "record {i}: plane {}", r[1]);
        assert_eq!((r[2], r[3]), (0, 0), "record {i}: direction, reserved");
        let repr = parse(&r[FABRIC_PSEUDO_LEN..])
            .unwrap_or_else(|e| panic!("record {i} does not parse: {e}"));
        *kinds.entry(kind_name(repr.kind)).or_insert(0) += 1;
    }
    for kind in [
        "Read request",
        "Read response",
        "Write request",
        "Write ack",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} in {kinds:?}");
    }
}

#[test]
fn tshark_decodes_every_fabric_packet_like_the_packet_parser() {
    if !tshark_present("tshark_decodes_every_fabric_packet_like_the_packet_parser") {
        return;
    }
    let file = fabric_pcap();
    let pcap = read_pcap(&file);
    let rows = decode(&file, &FIELDS);
    assert_eq!(rows.len(), pcap.records.len(), "one line per record");
    for (i, (record, row)) in pcap.records.iter().zip(&rows).enumerate() {
        assert_eq!(number(&row["frame.number"]), Some(i as u64 + 1));
        check_record(i + 1, record, row);
    }
    let flagged = tshark(
        &file,
        &[
            "-Y",
            &format!("_ws.malformed || _ws.expert.severity >= {PI_WARN}"),
        ],
    );
    assert!(
        flagged.is_empty(),
        "malformed or warned-about packets:\n{}",
        flagged.join("\n")
    );
    let info = tshark(&file, &["-c", "1", "-T", "fields", "-e", "_ws.col.Info"]);
    let repr = parse(&pcap.records[0][FABRIC_PSEUDO_LEN..]).expect("checked above");
    assert!(
        info[0].contains(&format!("{:#07x}→{:#07x}", repr.src.raw(), repr.dst.raw())),
        "Info column {:?}",
        info[0]
    );
}

/// A hand-made record for the checks of malformed input.
struct Crafted {
    what: &'static str,
    pseudo: [u8; FABRIC_PSEUDO_LEN],
    packet: Vec<u8>,
    /// Expert infos the dissector must raise (and no other of [`EXPERTS`]).
    experts: &'static [&'static str],
    /// The CRC status it must show, if any.
    crc_status: Option<u64>,
}

/// The dissector's expert infos the crafted records exercise.
const EXPERTS: [&str; 7] = [
    "snet_fabric.crc.bad",
    "snet_fabric.truncated",
    "snet_fabric.len.mismatch",
    "snet_fabric.type.bad",
    "snet_fabric.reserved.nonzero",
    "snet_fabric.nack.bad",
    "snet_fabric.pseudo.version.unknown",
];

fn ep(raw: u32) -> EndpointId {
    EndpointId::new(raw).expect("a 20-bit ID")
}

/// `packet` after `edit`, with its CRC recomputed.
fn edited(packet: &[u8], edit: impl FnOnce(&mut Packet<&mut [u8]>)) -> Vec<u8> {
    let mut bytes = packet.to_vec();
    let mut p = Packet::new_unchecked(&mut bytes[..]);
    edit(&mut p);
    p.fill_crc();
    bytes
}

#[test]
fn tshark_flags_a_bad_crc_and_malformed_packets() {
    let captured = read_pcap(&fabric_pcap());
    let original = captured
        .records
        .iter()
        .find(|r| {
            parse(&r[FABRIC_PSEUDO_LEN..])
                .is_ok_and(|p| p.kind == PacketKind::WriteRequest && !p.payload.is_empty())
        })
        .expect("the capture holds a write request with data");
    let (pseudo, packet) = original.split_at(FABRIC_PSEUDO_LEN);
    let pseudo: [u8; FABRIC_PSEUDO_LEN] = pseudo.try_into().expect("4 bytes");

    let mut corrupted = packet.to_vec();
    corrupted[16] ^= 0x01; // the first payload byte
    assert!(matches!(parse(&corrupted), Err(PacketError::BadCrc { .. })));

    let addr = FabricAddr(0x0000_4001_0000_0040);
    let nack = PacketRepr::nack(ep(0x1000), ep(3), 5, addr, NackReason::StaleKey)
        .and_then(|r| r.to_vec())
        .expect("a valid NACK");
    assert!(parse(&nack).is_ok());
    let ack = PacketRepr::write_ack(ep(3), ep(0x1000), 2, addr)
        .and_then(|r| r.to_vec())
        .expect("a valid write ack");
    let write = PacketRepr::write_request(ep(3), ep(0x1000), 2, addr, &[1, 2, 3, 4])
        .and_then(|r| r.to_vec())
        .expect("a valid write request");

    let mut longer = write.clone();
    longer.insert(20, 0xee); // a payload byte the header does not count
    let longer = edited(&longer, |_| {});
    assert_eq!(
        parse(&longer),
        Err(PacketError::LengthMismatch {
            declared: 24,
            actual: 25
        })
    );
    let bad_type = edited(&ack, |p| p.set_raw_type(0x3));
    assert_eq!(parse(&bad_type), Err(PacketError::BadType(0x3)));
    let reserved = edited(&ack, |p| p.set_reserved(0x05));
    assert_eq!(parse(&reserved), Err(PacketError::ReservedBits(0x05)));
    let nack_request = edited(&nack, |p| p.set_response(false));
    assert_eq!(parse(&nack_request), Err(PacketError::NackNotResponse));
    let truncated = packet[..12].to_vec();
    assert_eq!(parse(&truncated), Err(PacketError::Truncated { len: 12 }));

    let good = Some(1);
    let crafted = [
        Crafted {
            what: "the captured write request",
            pseudo,
            packet: packet.to_vec(),
            experts: &[],
            crc_status: good,
        },
        Crafted {
            what: "its copy with a payload byte flipped",
            pseudo,
            packet: corrupted,
            experts: &["snet_fabric.crc.bad"],
            crc_status: Some(0),
        },
        Crafted {
            what: "a NACK on plane Y",
            pseudo: [1, 1, 0, 0],
            packet: nack,
            experts: &[],
            crc_status: good,
        },
        Crafted {
            what: "a write request with a payload byte too many",
            pseudo,
            packet: longer,
            experts: &["snet_fabric.len.mismatch"],
            crc_status: good,
        },
        Crafted {
            what: "a packet of type 0x3",
            pseudo,
            packet: bad_type,
            experts: &["snet_fabric.type.bad"],
            crc_status: good,
        },
        Crafted {
            what: "a write ack with reserved bits set",
            pseudo,
            packet: reserved,
            experts: &["snet_fabric.reserved.nonzero"],
            crc_status: good,
        },
        Crafted {
            what: "a NACK with the response bit clear",
            pseudo,
            packet: nack_request,
            experts: &["snet_fabric.nack.bad"],
            crc_status: good,
        },
        Crafted {
            what: "12 bytes of a packet",
            pseudo,
            packet: truncated,
            experts: &["snet_fabric.truncated"],
            crc_status: None,
        },
        Crafted {
            what: "a pseudo-header and nothing else",
            pseudo,
            packet: Vec::new(),
            experts: &["snet_fabric.truncated"],
            crc_status: None,
        },
        Crafted {
            what: "pseudo-header version 2",
            pseudo: [2, 0, 0, 0],
            packet: packet.to_vec(),
            experts: &["snet_fabric.pseudo.version.unknown"],
            crc_status: None,
        },
    ];

    let file = workdir().join("crafted.pcap");
    let out = std::fs::File::create(&file).expect("crafted.pcap can be made");
    let mut w = PcapWriter::new(out, LINKTYPE_FABRIC).expect("pcap header written");
    for (i, c) in crafted.iter().enumerate() {
        let at = Instant::from_ns(1_000 * (i as u64 + 1));
        match c.pseudo {
            [1, plane, 0, 0] => {
                let plane = if plane == 0 { Plane::X } else { Plane::Y };
                record_fabric(&mut w, at, plane, &c.packet).expect("record written");
            }
            _ => w
                .record_parts(at.as_ns(), &[&c.pseudo, &c.packet])
                .expect("record written"),
        }
    }
    w.finish().expect("crafted.pcap written");

    if !tshark_present("tshark_flags_a_bad_crc_and_malformed_packets") {
        return;
    }
    let rows = decode(
        &file,
        &[
            "frame.number",
            "snet_fabric.src",
            "snet_fabric.crc.status",
            "_ws.col.Info",
        ],
    );
    assert_eq!(rows.len(), crafted.len(), "one line per record");
    let mut raised: HashMap<&str, Vec<u64>> = HashMap::new();
    for expert in EXPERTS {
        let frames = tshark(&file, &["-Y", expert, "-T", "fields", "-e", "frame.number"]);
        raised.insert(
            expert,
            frames
                .iter()
                .map(|f| number(f).expect("a number"))
                .collect(),
        );
    }
    for (i, (c, row)) in crafted.iter().zip(&rows).enumerate() {
        let frame = i as u64 + 1;
        let got: Vec<&str> = EXPERTS
            .into_iter()
            .filter(|e| raised[e].contains(&frame))
            .collect();
        assert_eq!(got, c.experts, "frame {frame} ({}): expert infos", c.what);
        assert_eq!(
            number(&row["snet_fabric.crc.status"]),
            c.crc_status,
            "frame {frame} ({}): CRC status {:?}",
            c.what,
            row["snet_fabric.crc.status"]
        );
    }
    // The flipped byte changes nothing but the CRC verdict.
    assert_eq!(rows[0]["snet_fabric.src"], rows[1]["snet_fabric.src"]);
    assert!(!rows[0]["_ws.col.Info"].contains("bad CRC"));
    assert!(
        rows[1]["_ws.col.Info"].contains("[bad CRC]"),
        "{}",
        rows[1]["_ws.col.Info"]
    );
    assert!(
        rows[9]["_ws.col.Info"].contains("Unknown pseudo-header version 2"),
        "{}",
        rows[9]["_ws.col.Info"]
    );
    // The well-formed records decode like the parser says.
    let full = decode(&file, &FIELDS);
    for i in [0, 2] {
        let record = [&crafted[i].pseudo[..], &crafted[i].packet].concat();
        check_record(i + 1, &record, &full[i]);
    }
}

#[test]
fn lan_captures_open_as_clean_ethernet_with_tcp() {
    let dir = workdir().join("pcap");
    let mut lan: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the capture directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n != "fabric.pcap"))
        .collect();
    lan.sort();
    assert_eq!(
        lan.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["lan0.pcap"]
    );
    let pcap = read_pcap(&lan[0]);
    assert_eq!(pcap.link_type, LINKTYPE_ETHERNET);
    assert!(!pcap.records.is_empty());
    if !tshark_present("lan_captures_open_as_clean_ethernet_with_tcp") {
        return;
    }
    // With Wireshark's default settings: no protocol is tied to port 2323,
    // so the clients' byte pattern is plain TCP payload.
    let plain: [&str; 0] = [];
    let protocols = tshark(
        &lan[0],
        &[&plain[..], &["-T", "fields", "-e", "frame.protocols"]].concat(),
    );
    assert_eq!(protocols.len(), pcap.records.len(), "one line per frame");
    assert!(
        protocols.iter().all(|p| p.starts_with("eth:ethertype:")),
        "{protocols:?}"
    );
    let tcp = protocols.iter().filter(|p| p.contains(":ip:tcp")).count();
    assert!(tcp > pcap.records.len() / 2, "{tcp} TCP frames");
    let bad = tshark(
        &lan[0],
        &[
            &plain[..],
            &[
                "-o",
                "ip.check_checksum:TRUE",
                "-o",
                "tcp.check_checksum:TRUE",
                "-o",
                "udp.check_checksum:TRUE",
                "-Y",
                "_ws.malformed || ip.checksum.status == 0 || tcp.checksum.status == 0 \
                 || udp.checksum.status == 0",
            ],
        ]
        .concat(),
    );
    assert!(bad.is_empty(), "malformed frames:\n{}", bad.join("\n"));
}
