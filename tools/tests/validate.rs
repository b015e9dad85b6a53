//! `snet validate` on a good and a bad scenario file: exit codes and messages.

use std::path::PathBuf;
use std::process::{Command, Output};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testbench/tests/data")
        .join(name)
}

fn snet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snet"))
        .args(args)
        .output()
        .expect("the snet binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_valid_file_exits_0_with_a_summary() {
    let good = data("minimal.yaml");
    let out = snet(&["validate", good.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(
        stdout.contains("minimal.yaml (4 processors, 1 adapter, 1 app"),
        "{stdout}"
    );
}

#[test]
fn an_invalid_file_exits_2_naming_line_and_field() {
    let bad = data("invalid.yaml");
    let out = snet(&["validate", bad.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid.yaml:10:26: clients[0].target: adapter IP 198.18.0.99 is not served by any adapter"),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid.yaml:6:41: adapters[0].mtu: mtu is 68 to 9216"),
        "{stderr}"
    );
    assert!(stderr.contains("(5 problems)"), "{stderr}");
}

#[test]
fn several_files_exit_2_when_any_is_invalid() {
    let good = data("failover.yaml");
    let bad = data("invalid.yaml");
    let missing = data("no-such-file.yaml");
    let out = snet(&[
        "validate",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("ok: "));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid.yaml:12:23: faults[0].fail"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no-such-file.yaml: cannot read"),
        "{stderr}"
    );
    let quiet = snet(&["validate", "--quiet", good.to_str().unwrap()]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(quiet.stdout.is_empty());
}

#[test]
fn help_shows_an_example() {
    let out = snet(&["validate", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("snet validate lab.yaml"), "{help}");
    assert!(help.contains("target: \"198.18.0.10:23\""), "{help}");
    assert!(help.contains("clients[0].target"), "{help}");
    let usage = snet(&["validate"]);
    assert_eq!(usage.status.code(), Some(2));
}
