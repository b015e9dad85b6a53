//! Where commands and signals come from: standard input, the optional
//! control socket (`--control PATH`, one command per line, one answer per
//! command), and SIGINT/SIGTERM. Each source is a thread that hands what
//! it gets to the session's channel.

use std::io::{BufRead, BufReader, Write};
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
            for line in stdin.lock().lines() {
                let Ok(text) = line else { break };
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

/// Listens on a Unix socket at `path` (which must not exist) and serves
/// every connection in its own thread: each line is a command, answered
/// on the connection.
pub fn bind(path: &Path, to_session: Sender<Input>) -> Result<ControlSocket, String> {
    if path.exists() {
        return Err(format!(
            "--control {}: the file exists; remove it (an old session's socket?) or choose another path",
            path.display()
        ));
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("--control {}: cannot listen: {e}", path.display()))?;
    let socket = ControlSocket {
        path: path.to_path_buf(),
    };
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = to_session.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || serve(conn, tx));
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
    for line in BufReader::new(conn).lines() {
        let Ok(text) = line else { return };
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

/// Turns SIGINT and SIGTERM into [`Input::Signal`]. Should the session
/// not end, another one a second or more later ends the process at once
/// (exit code 130); one sent to the process and its group at once (as
/// `timeout` does) counts once.
pub fn spawn_signals(to_session: Sender<Input>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first: Option<std::time::Instant> = None;
            for sig in signals.forever() {
                match first {
                    Some(t) if t.elapsed() >= std::time::Duration::from_secs(1) => {
                        eprintln!("snet live: a second signal: ending now");
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
