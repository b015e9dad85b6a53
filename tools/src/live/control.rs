//! Where commands and signals come from: standard input, the optional
//! control socket (`--control PATH`, one command per line, one answer per
//! command), and SIGINT/SIGTERM. Each source is a thread that hands what
//! it gets to the session's channel.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crossbeam_channel::{Sender, bounded};

use super::Input;

/// Where the answer to a command goes.
#[derive(Debug)]
pub enum Reply {
    /// Printed on standard output.
    Stdout,
    /// Written back on a control-socket connection.
    Socket(Sender<String>),
}

impl Reply {
    /// Delivers `answer` (it ends with a newline when written).
    pub fn send(self, answer: &str) {
        let mut text = answer.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        match self {
            Reply::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Reply::Socket(tx) => {
                let _ = tx.send(text);
            }
        }
    }
}

/// Reads commands from standard input, one per line; at its end sends
/// [`Input::StdinClosed`].
pub fn spawn_stdin(to_session: Sender<Input>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            while let Ok(Some(line)) = read_command(&mut input) {
                let text = match line {
                    Ok(text) => text,
                    Err(too_long) => {
                        Reply::Stdout.send(&too_long);
                        continue;
                    }
                };
                if to_session
                    .send(Input::Line {
                        text,
                        reply: Reply::Stdout,
                    })
                    .is_err()
                {
                    return;
                }
            }
            let _ = to_session.send(Input::StdinClosed);
        })
        .map(|_| ())
}

/// The control socket; its file is removed when it is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Longest command line, bytes; a longer one is refused and skipped.
pub const MAX_LINE: usize = 4096;

/// Control connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 16;

/// Reads one command line of at most [`MAX_LINE`] bytes. `Ok(None)` at
/// the end of the input; `Ok(Some(Err(answer)))` for a line too long (it is
/// skipped up to its newline, without keeping it).
pub fn read_command<R: BufRead>(input: &mut R) -> std::io::Result<Option<Result<String, String>>> {
    let mut line = Vec::new();
    let n = Read::take(&mut *input, MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && line.len() > MAX_LINE {
        // Skip the rest of the line in bounded pieces.
        loop {
            let mut rest = Vec::new();
            let k = Read::take(&mut *input, MAX_LINE as u64).read_until(b'\n', &mut rest)?;
            if k == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(Err(format!(
            "error: a command line is at most {MAX_LINE} bytes"
        ))));
    }
    let text = String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    Ok(Some(Ok(text)))
}

/// Checks `--control PATH` before anything starts: a path that does not
/// exist is fine; a socket nobody listens on (left by a session that was
/// killed) is removed; anything else is refused.
pub fn check_path(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "--control {}: the file exists and is not a socket; choose another path",
            path.display()
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "--control {}: another session listens on it; choose another path",
            path.display()
        ));
    }
    std::fs::remove_file(path).map_err(|e| {
        format!(
            "--control {}: a stale socket that cannot be removed: {e}",
            path.display()
        )
    })
}

/// Listens on a Unix socket at `path` (checked with [`check_path`]) and
/// serves every connection in its own thread, at most
/// [`MAX_CONNECTIONS`] at once: each line is a command, answered on the
/// connection.
pub fn bind(path: &Path, to_session: Sender<Input>) -> Result<ControlSocket, String> {
    check_path(path)?;
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("--control {}: cannot listen: {e}", path.display()))?;
    let socket = ControlSocket {
        path: path.to_path_buf(),
    };
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if open.load(std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let _ = conn.write_all(
                        format!("error: at most {MAX_CONNECTIONS} control connections at once\n")
                            .as_bytes(),
                    );
                    continue;
                }
                open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tx = to_session.clone();
                let count = open.clone();
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        serve(conn, tx);
                        count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
        .map_err(|e| format!("--control: {e}"))?;
    Ok(socket)
}

/// One control connection: a command per line, its answer written back.
fn serve(conn: UnixStream, to_session: Sender<Input>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut input = BufReader::new(conn);
    while let Ok(Some(line)) = read_command(&mut input) {
        let text = match line {
            Ok(text) => text,
            Err(too_long) => {
                if out.write_all(format!("{too_long}\n").as_bytes()).is_err() {
                    return;
                }
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let (tx, rx) = bounded(1);
        if to_session
            .send(Input::Line {
                text,
                reply: Reply::Socket(tx),
            })
            .is_err()
        {
            return;
        }
        let Ok(answer) = rx.recv() else { return };
        if out.write_all(answer.as_bytes()).is_err() || out.flush().is_err() {
            return;
        }
    }
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`Input::Signal`]. Should the session
/// not end, another one a second or more later ends the process at once
/// (exit code 130); one sent to the process and its group at once (as
/// `timeout` does) counts once.
pub fn spawn_signals(to_session: Sender<Input>, control: Option<PathBuf>) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first: Option<std::time::Instant> = None;
            for sig in signals.forever() {
                match first {
                    Some(t) if t.elapsed() >= std::time::Duration::from_secs(1) => {
                        eprintln!("snet live: a second signal: ending now");
                        if let Some(p) = &control {
                            let _ = std::fs::remove_file(p);
                        }
                        std::process::exit(130);
                    }
                    Some(_) => {}
                    None => {
                        first = Some(std::time::Instant::now());
                        if to_session.send(Input::Signal(sig)).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_too_long_is_refused_without_being_kept() {
        let long = "x".repeat(MAX_LINE * 3 + 7);
        let text = format!("status\n{long}\nfail processor 2\r\nquit");
        let mut input = std::io::Cursor::new(text.into_bytes());
        let mut got = Vec::new();
        while let Some(l) = read_command(&mut input).unwrap() {
            got.push(l);
        }
        assert_eq!(
            got,
            [
                Ok("status".to_string()),
                Err(format!("error: a command line is at most {MAX_LINE} bytes")),
                Ok("fail processor 2".to_string()),
                Ok("quit".to_string()),
            ]
        );
        // Exactly MAX_LINE bytes is still a command.
        let edge = "y".repeat(MAX_LINE);
        let mut input = std::io::Cursor::new(format!("{edge}\n").into_bytes());
        assert_eq!(read_command(&mut input).unwrap(), Some(Ok(edge)));
    }

    #[test]
    fn a_stale_socket_is_removed_and_a_live_one_or_a_file_refused() {
        let dir = std::env::temp_dir().join(format!("snet-control-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("ctl");
        assert!(check_path(&path).is_ok(), "absent");
        // A listening socket: refused.
        let l = UnixListener::bind(&path).unwrap();
        assert!(check_path(&path).unwrap_err().contains("another session"));
        // Its listener gone, the file stays: stale, removed.
        drop(l);
        assert!(path.exists());
        check_path(&path).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(check_path(&path).unwrap_err().contains("not a socket"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
