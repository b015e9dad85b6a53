//! The command line as a person meets it: help with real examples, shell
//! completions, exit codes for bad usage and bad input.

use std::process::{Command, Output};

fn snet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snet"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("snet runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const COMMANDS: [&str; 9] = [
    "bench",
    "compare",
    "filter",
    "live",
    "run",
    "spof",
    "trace",
    "completions",
    "validate",
];

#[test]
fn every_command_has_help_with_an_example() {
    let top = snet(&["--help"]);
    assert_eq!(top.status.code(), Some(0));
    let t = text(&top);
    for c in COMMANDS {
        assert!(t.contains(c), "`snet --help` lists {c}:\n{t}");
        let o = snet(&[c, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{c} --help");
        let h = text(&o);
        assert!(
            h.contains("Example") && h.contains(&format!("snet {c}")),
            "`snet {c} --help` shows an example:\n{h}"
        );
    }
}

#[test]
fn completions_for_three_shells_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let o = snet(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&o.stdout);
        for c in COMMANDS {
            assert!(script.contains(c), "{shell} completion names {c}");
        }
    }
    let o = snet(&["completions", "powershell2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("possible values: bash, zsh, fish"));
}

#[test]
fn bad_usage_and_bad_input_exit_with_2_and_say_why() {
    let cases: [(&[&str], &str); 6] = [
        (&["frobnicate"], "unrecognized subcommand"),
        (&["run"], "FILE"),
        (&["run", "no/such/file.yaml"], "no/such/file.yaml"),
        (
            &["spof", "examples/spof/single.yaml", "--only", "switch"],
            "`switch` is not a kind of component",
        ),
        (
            &["spof", "examples/spof/single.yaml", "--at", "5 parsecs"],
            "--at",
        ),
        (
            &[
                "trace",
                "examples/quickstart.yaml",
                "--connection",
                "999999",
            ],
            "connection 999999 does not exist",
        ),
    ];
    for (args, why) in cases {
        let o = snet(args);
        assert_eq!(o.status.code(), Some(2), "snet {args:?}: {}", text(&o));
        assert!(
            text(&o).contains(why),
            "snet {args:?} says {why:?}:\n{}",
            text(&o)
        );
    }
}

#[test]
fn logging_is_quiet_by_default() {
    // A sweep fails adapters, links and planes: the model notes each
    // stopped queue at info level, which is not shown unless asked for.
    let o = snet(&[
        "spof",
        "examples/spof/single.yaml",
        "--only",
        "adapter",
        "-q",
        "--at",
        "1500ms",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("WARN") && !err.contains("INFO"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("adapter lan0  YES"));
}
