//! `snet live` against the Linux kernel: in a network namespace of its
//! own, the built `snet` serves examples/live-http.yaml on a TAP device and
//! real `curl`s fetch from it; a processor fails mid-download through the
//! control socket; the session ends on SIGINT or `quit` with the report,
//! and the TAP device and the namespace are gone afterwards.
//!
//! These tests need root (network namespaces, TAP devices), `ip`
//! (iproute2) and `curl`; without them they say why on stderr and pass.
//! The usage errors at the end need nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use snet_testbench::run::http::ResponseReader;

fn snet() -> &'static str {
    env!("CARGO_BIN_EXE_snet")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/live-http.yaml")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Why these tests cannot run here, if they cannot (found out once).
fn missing() -> Option<String> {
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WHY.get_or_init(probe).clone()
}

fn probe() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        return Some("not root (network namespaces and TAP devices need root)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun (modprobe tun)".into());
    }
    for (tool, arg) in [("ip", "-V"), ("curl", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("no `{tool}` (install iproute2 and curl)"));
        }
    }
    // A container may refuse namespaces or TAP devices even to root.
    let probe = Netns {
        name: format!("snet-probe-{}", std::process::id()),
    };
    let run = |c: &mut Command| match c.output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(text(&o.stderr).trim().to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = run(Command::new("ip").args(["netns", "add", &probe.name])) {
        return Some(format!("cannot create a network namespace ({why})"));
    }
    if let Some(why) =
        run(probe
            .command("ip")
            .args(["tuntap", "add", "dev", "snetprobe", "mode", "tap"]))
    {
        return Some(format!("cannot create a TAP device ({why})"));
    }
    None
}

/// With `SNET_REQUIRE_SYSTEM_TESTS=1` (CI sets it) a test that would be
/// skipped fails instead: a machine that should run it does not.
fn require_not_set(test: &str, why: &str) {
    if std::env::var_os("SNET_REQUIRE_SYSTEM_TESTS").is_some_and(|v| v == "1") {
        panic!("{test} cannot run ({why}), and SNET_REQUIRE_SYSTEM_TESTS=1 requires it");
    }
}

/// Whether `test` cannot run here; if so says why on stderr, past the
/// test harness's capture, so a skipped test is seen in every run.
fn cannot_run(test: &str) -> bool {
    match missing() {
        Some(why) => {
            require_not_set(test, &why);
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {why}; run the tests as root with ip and curl installed to exercise snet live against the kernel"
            );
            true
        }
        None => false,
    }
}

/// A network namespace, deleted when dropped (whatever the test did).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("snet-test-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns add: {}", text(&out.stderr));
        Netns { name }
    }

    /// A command run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn exists(&self) -> bool {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        text(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(self.name.as_str()))
    }

    /// Whether interface `dev` exists in the namespace.
    fn has_link(&self, dev: &str) -> bool {
        self.command("ip")
            .args(["link", "show", "dev", dev])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A running `snet live`, killed when dropped if it still runs.
struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    control: PathBuf,
}

impl Live {
    fn start(ns: &Netns, tap: &str, extra: &[&str]) -> Live {
        let control = std::env::temp_dir().join(format!("{}.sock", ns.name));
        let _ = std::fs::remove_file(&control);
        let mut child = ns
            .command(snet())
            .arg("live")
            .arg(example())
            .args(["--tap", tap, "--tap-address", "198.18.0.1/15", "--control"])
            .arg(&control)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("snet runs");
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let stdin = child.stdin.take();
        let mut live = Live {
            child,
            stdin,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
            control,
        };
        live.wait_for_line("ready:", Duration::from_secs(60));
        live
    }

    /// Waits for a line of standard output starting with `prefix`.
    fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.stdout.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line `{prefix}…` from snet live within {limit:?}; stdout so far:\n{}",
                    self.stdout.join("\n")
                ),
            }
        }
    }

    /// Sends a command on the control socket; its answer (read until the
    /// connection has been quiet for a moment after the first bytes).
    fn control(&self, command: &str) -> String {
        let mut s = UnixStream::connect(&self.control).expect("the control socket");
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut answer = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) if !answer.is_empty() => break,
                Err(_) => assert!(Instant::now() < deadline, "no answer to {command}"),
            }
        }
        text(&answer)
    }

    /// Waits for the process to end; its exit code, the rest of its
    /// standard output, and its standard error.
    fn wait(mut self, limit: Duration) -> (Option<i32>, String, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("snet live did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at the end of the output.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(l);
        }
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status.code(), self.stdout.join("\n"), err)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.control);
    }
}

/// What one curl got: its exit code, and its header and body files read
/// as one answer (each body byte checked against the pattern).
#[derive(Debug)]
struct Got {
    exit: Option<i32>,
    answer: ResponseReader,
    body: u64,
}

impl Got {
    /// A whole `200` answer whose body follows the pattern.
    fn complete(&self) -> bool {
        self.exit == Some(0)
            && self.answer.status == Some(200)
            && self.answer.done()
            && self.answer.mismatches == 0
            && Some(self.body) == self.answer.length
    }
}

/// Reads curl's header and body files.
fn read_got(exit: Option<i32>, headers: &Path, body: &Path) -> Got {
    let head = std::fs::read(headers).unwrap_or_default();
    let body = std::fs::read(body).unwrap_or_default();
    let mut answer = ResponseReader::default();
    answer.feed(&head);
    answer.feed(&body);
    Got {
        exit,
        answer,
        body: body.len() as u64,
    }
}

/// Files of one curl run.
struct Files {
    headers: PathBuf,
    body: PathBuf,
}

impl Files {
    fn new(ns: &Netns, tag: &str) -> Files {
        let dir = std::env::temp_dir();
        Files {
            headers: dir.join(format!("{}-{tag}.headers", ns.name)),
            body: dir.join(format!("{}-{tag}.body", ns.name)),
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.headers);
        let _ = std::fs::remove_file(&self.body);
    }
}

/// A curl from inside the namespace; `extra` options before the URL.
fn curl(ns: &Netns, files: &Files, path: &str, extra: &[&str]) -> Command {
    let mut c = ns.command("curl");
    c.args(["-s", "--max-time", "30", "-D"])
        .arg(&files.headers)
        .arg("-o")
        .arg(&files.body)
        .args(extra)
        .arg(format!("http://198.18.0.10{path}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Fetches `path` and waits for the answer.
fn fetch(ns: &Netns, path: &str) -> Got {
    let files = Files::new(ns, "fetch");
    let exit = curl(ns, &files, path, &[]).status().unwrap().code();
    read_got(exit, &files.headers, &files.body)
}

/// Fetches `/` `n` times; the processors that answered, each answer
/// checked.
fn processors(ns: &Netns, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let g = fetch(ns, "/");
            assert!(g.complete(), "{g:?}");
            assert_eq!(g.body, 1024);
            g.answer.processor.expect("X-Snet-Processor")
        })
        .collect()
}

#[test]
fn real_clients_reach_the_cluster_and_survivors_keep_every_byte_when_a_processor_fails() {
    if cannot_run(
        "real_clients_reach_the_cluster_and_survivors_keep_every_byte_when_a_processor_fails",
    ) {
        return;
    }
    let ns = Netns::new("fail");
    let tap = "snet0";
    let live = Live::start(&ns, tap, &[]);
    assert!(ns.has_link(tap));

    // Four processors answer in strict turn.
    let seen = processors(&ns, 5);
    let mut distinct = seen[..4].to_vec();
    distinct.sort_unstable();
    assert_eq!(distinct, [0, 1, 2, 3], "round robin: {seen:?}");
    assert_eq!(seen[4], seen[0], "strict turn: {seen:?}");

    // A larger body, and a bad request.
    let big = fetch(&ns, "/bytes/1000000");
    assert!(big.complete() && big.body == 1_000_000, "{big:?}");
    let bad = fetch(&ns, "/bytes/many");
    assert_eq!(bad.answer.status, Some(400));

    // Four slow downloads, one per processor; processor 2 fails in the
    // middle of its own.
    let size = 2_000_000u64;
    let files: Vec<Files> = (0..4).map(|k| Files::new(&ns, &format!("dl{k}"))).collect();
    let mut downloads: Vec<Child> = files
        .iter()
        .map(|f| {
            let child = curl(
                &ns,
                f,
                &format!("/bytes/{size}"),
                &[
                    "--limit-rate",
                    "400k",
                    "--speed-limit",
                    "1000",
                    "--speed-time",
                    "3",
                ],
            )
            .spawn()
            .unwrap();
            // One connection after the other: they take the processors in
            // turn.
            std::thread::sleep(Duration::from_millis(100));
            child
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while files
        .iter()
        .any(|f| std::fs::metadata(&f.body).map_or(0, |m| m.len()) < 100_000)
    {
        assert!(Instant::now() < deadline, "the downloads did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in downloads.iter_mut() {
        assert!(d.try_wait().unwrap().is_none(), "a download ended early");
    }
    let answer = live.control("fail processor 2");
    assert!(answer.starts_with("ok: fail processor 2"), "{answer}");
    let answer = live.control("fail processor nine");
    assert!(answer.starts_with("error: "), "{answer}");
    let mut broken = 0;
    for (d, f) in downloads.iter_mut().zip(&files) {
        let exit = d.wait().unwrap().code();
        let g = read_got(exit, &f.headers, &f.body);
        if g.answer.processor == Some(2) {
            broken += 1;
            assert!(
                !g.complete(),
                "the failed processor's download cannot complete"
            );
        } else {
            assert!(
                g.complete() && g.body == size,
                "a survivor's download lost bytes: exit {:?}, processor {:?}, {} of {size} bytes, {} wrong",
                g.exit,
                g.answer.processor,
                g.body,
                g.answer.mismatches
            );
        }
    }
    assert_eq!(broken, 1, "one download was on processor 2");

    // New connections keep succeeding, on the survivors.
    let mut after = processors(&ns, 6);
    after.sort_unstable();
    after.dedup();
    assert_eq!(after, [0, 1, 3]);
    let status = live.control("status");
    assert!(status.contains("   2   NO"), "{status}");
    assert!(status.contains("requests"), "{status}");

    // Processor 2 comes back and takes connections again.
    let answer = live.control("restore processor 2");
    assert!(answer.starts_with("ok: restore processor 2"), "{answer}");
    assert!(processors(&ns, 8).contains(&2));

    // Ctrl-C: the report, exit code 0, and the TAP device is gone.
    let pid = live.child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let (code, out, err) = live.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(out.contains(" cpu   up    taken   served"), "{out}");
    assert!(out.contains("fail processor 2  (applied)"), "{out}");
    assert!(out.contains("PASSED"), "{out}");
    assert!(!ns.has_link(tap), "the TAP device is removed");
    let name = ns.name.clone();
    drop(ns);
    let list = text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(!list.contains(&name), "{list}");
}

#[test]
fn quit_ends_the_session_with_the_report_and_the_captures() {
    if cannot_run("quit_ends_the_session_with_the_report_and_the_captures") {
        return;
    }
    let ns = Netns::new("quit");
    let pcap = std::env::temp_dir().join(format!("{}-pcap", ns.name));
    let _ = std::fs::remove_dir_all(&pcap);
    let tap = "snetq";
    let mut live = Live::start(&ns, tap, &["--pcap", pcap.to_str().unwrap()]);
    let g = fetch(&ns, "/bytes/5000");
    assert!(g.complete(), "{g:?}");
    // A command on standard input, then quit there.
    let stdin = live.stdin.as_mut().unwrap();
    stdin.write_all(b"launch missiles\nstatus\nquit\n").unwrap();
    stdin.flush().unwrap();
    let (code, out, err) = live.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("error: unknown command `launch`"), "{out}");
    assert!(out.contains("virtual time"), "{out}");
    assert!(out.contains("bye"), "{out}");
    assert!(out.contains("PASSED"), "{out}");
    assert!(!ns.has_link(tap));
    for f in ["lan0.pcap", "fabric.pcap"] {
        let len = std::fs::metadata(pcap.join(f)).map_or(0, |m| m.len());
        assert!(len > 24 + 100, "{f}: {len} bytes");
    }
    let _ = std::fs::remove_dir_all(&pcap);
    assert!(ns.exists());
}

#[test]
fn without_privileges_the_tap_device_is_refused_with_exit_code_2() {
    if cannot_run("without_privileges_the_tap_device_is_refused_with_exit_code_2") {
        return;
    }
    let has_setpriv = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_setpriv {
        require_not_set(
            "without_privileges_the_tap_device_is_refused_with_exit_code_2",
            "no setpriv",
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED without_privileges_the_tap_device_is_refused_with_exit_code_2: no setpriv (util-linux) to drop root's privileges"
        );
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            snet(),
            "live",
        ])
        .arg(example())
        .args(["--tap", "snetnobody"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs root or CAP_NET_ADMIN"), "{err}");
}

fn snet_live(args: &[&str]) -> Output {
    Command::new(snet())
        .arg("live")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let ex = example();
    let ex = ex.to_str().unwrap();
    let out = snet_live(&["no-such-file.yaml", "--tap", "snet0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no-such-file.yaml"));
    let out = snet_live(&[ex, "--tap", "a-name-far-too-long"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("1 to 15 characters"));
    let out = snet_live(&[ex, "--tap", "snet0", "--tap-address", "198.18.0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("prefix length"));
    let out = snet_live(&[ex, "--tap", "snet0", "--tap-address", "198.18.0.10/15"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the cluster's own address"));
    let out = snet_live(&[ex]);
    assert_eq!(out.status.code(), Some(2), "--tap is required");
    let help = Command::new(snet())
        .args(["live", "--help"])
        .output()
        .unwrap();
    let h = text(&help.stdout);
    assert!(help.status.success());
    assert!(
        h.contains("Example") && h.contains("--tap-address 198.18.0.1/15"),
        "{h}"
    );
}
