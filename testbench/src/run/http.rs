//! The `http` server model: a small HTTP/1.1 server on every selected
//! processor, for real clients (`curl`, `nc`, a browser) that reach the
//! cluster through `snet live` (see `docs/live.md`).
//!
//! It reads each request's line and headers up to the blank line, answers
//! `GET` and `HEAD` with `200 OK`, and keeps the connection open for the
//! next request unless the client asked to close it (`Connection: close`,
//! or HTTP/1.0 without `Connection: keep-alive`). Pipelined requests are
//! answered in order. The body follows a pattern a client can check
//! ([`body_byte`]): 64-byte lines, each the hexadecimal offset of its
//! first byte, a space, 54 letters and a newline:
//!
//! ```text
//! 00000000 abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzab
//! 00000040 bcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabc
//! ```
//!
//! The target `/bytes/N` asks for N body bytes (at most [`MAX_BODY`]);
//! any other target gets the app's `response` size. Every answer names the
//! processor that served it in `X-Snet-Processor`.
//!
//! Answered requests count in the report (`requests`, and the fault
//! trigger `after: requests:N`) like those of the built-in clients; the
//! connections do not (the report's connection lines are the built-in
//! clients').
//!
//! A request that cannot be read gets `400 Bad Request` (a head over
//! [`MAX_HEAD`] bytes `431`, another HTTP version `505`, a transfer coding
//! `501`, a method other than GET and HEAD `405`), and the connection is
//! closed after the answer. Nothing a client sends makes it panic.

use std::net::SocketAddr;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use snet_fabric::time::{Duration, Instant};
use snet_host_lib::app::{AppContext, Application};
use snet_host_lib::client::ClientHost;
use snet_host_lib::socket::{ListenMode, SocketApi, SocketId};

use super::ledger::Shared;
use super::models::{Listening, Pumped, accept_all, ensure_listener, pump};
use super::wire::Outbox;

/// Longest request head (request line and headers) read, in bytes.
pub const MAX_HEAD: usize = 8192;
/// Largest body `/bytes/N` may ask for (1 GiB).
pub const MAX_BODY: u64 = 1 << 30;
/// Length of one line of the body pattern.
pub const LINE: u64 = 64;

/// Byte `offset` of every response body: 64-byte lines, each the offset of
/// its first byte in eight hexadecimal digits, a space, 54 letters of the
/// alphabet starting one letter later on each line, and a newline.
pub fn body_byte(offset: u64) -> u8 {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let line = offset / LINE;
    let col = offset % LINE;
    match col {
        0..=7 => {
            let start = (line * LINE) as u32;
            HEX[((start >> (4 * (7 - col))) & 0xf) as usize]
        }
        8 => b' ',
        63 => b'\n',
        _ => b'a' + ((line + col - 9) % 26) as u8,
    }
}

/// An HTTP status this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the body follows.
    Ok,
    /// 400: the request cannot be read.
    BadRequest,
    /// 405: a method other than GET and HEAD.
    MethodNotAllowed,
    /// 431: the request head is longer than [`MAX_HEAD`].
    HeadTooLarge,
    /// 501: a request body with a transfer coding.
    NotImplemented,
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl Status {
    /// The code and the reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Status::NotImplemented => (501, "Not Implemented"),
            Status::VersionNotSupported => (505, "HTTP Version Not Supported"),
        }
    }
}

/// A request read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `HEAD`: the answer has headers only.
    pub head_only: bool,
    /// The request target as written (`/`, `/bytes/4096`).
    pub target: String,
    /// The minor HTTP version: 0 or 1.
    pub minor: u8,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// Body bytes the request announced (`Content-Length`); they are read
    /// and skipped.
    pub content_length: u64,
}

impl Request {
    /// Body bytes the answer carries, given the app's default; `Err` for a
    /// `/bytes/N` target whose N is not a number up to [`MAX_BODY`].
    pub fn body_len(&self, default: u64) -> Result<u64, String> {
        let path = self.target.split(['?', '#']).next().unwrap_or("");
        match path.strip_prefix("/bytes/") {
            Some(n) => match n.parse::<u64>() {
                Ok(n) if n <= MAX_BODY => Ok(n),
                _ => Err(format!(
                    "/bytes/N takes a number of bytes from 0 to {MAX_BODY}, not `{n}`"
                )),
            },
            None => Ok(default),
        }
    }
}

/// What [`RequestParser::feed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request.
    Request(Request),
    /// A request that cannot be served: answer with this status and the
    /// reason, then close the connection.
    Bad(Status, String),
}

/// Reads requests from a connection's byte stream.
#[derive(Debug, Default)]
pub struct RequestParser {
    buf: Vec<u8>,
    /// Body bytes of the last request still to skip.
    skip: u64,
    /// A bad request was found: the rest of the stream is ignored.
    done: bool,
}

impl RequestParser {
    /// Takes `data`; appends the requests completed in it to `out`, in
    /// order. After a [`Parsed::Bad`], everything is ignored.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Parsed>) {
        while !self.done && !data.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            // Look for the end of the head in what is buffered plus the
            // new bytes (a blank line ends it: CRLF CRLF, or LF LF).
            let before = self.buf.len();
            let room = (MAX_HEAD + 4).saturating_sub(before);
            let take = data.len().min(room);
            self.buf.extend_from_slice(&data[..take]);
            match head_end(&self.buf, before) {
                Some(end) => {
                    // The end is in the new bytes (the buffered ones had
                    // none), so `end > before`.
                    let used = end.saturating_sub(before);
                    data = &data[used..];
                    let head: Vec<u8> = self.buf.drain(..end).collect();
                    self.buf.clear();
                    let parsed = parse_head(&head);
                    match &parsed {
                        Parsed::Request(r) => self.skip = r.content_length,
                        Parsed::Bad(..) => self.done = true,
                    }
                    out.push(parsed);
                }
                None if self.buf.len() > MAX_HEAD => {
                    self.done = true;
                    out.push(Parsed::Bad(
                        Status::HeadTooLarge,
                        format!("the request head is longer than {MAX_HEAD} bytes"),
                    ));
                }
                None => data = &data[take..],
            }
        }
    }
}

/// The length of the head in `buf` up to and including the blank line
/// that ends it, looking at the bytes from `from` on (and the three before,
/// where a line ending may have started). Empty lines before the request
/// line are skipped (RFC 9112, 2.2) by counting them into the head.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    // Leading empty lines are not the end of a head.
    let mut lead = 0;
    while lead < buf.len() {
        match buf[lead..] {
            [b'\r', b'\n', ..] => lead += 2,
            [b'\n', ..] => lead += 1,
            _ => break,
        }
    }
    let start = from.saturating_sub(3).max(lead);
    let mut i = start;
    while i < buf.len() {
        if buf[i] == b'\n' {
            // A line ending at i; is the next line empty?
            match buf.get(i + 1..) {
                Some([b'\n', ..]) => return Some(i + 2),
                Some([b'\r', b'\n', ..]) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn bad(why: impl Into<String>) -> Parsed {
    Parsed::Bad(Status::BadRequest, why.into())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a head (it ends with its blank line).
fn parse_head(head: &[u8]) -> Parsed {
    let Ok(text) = std::str::from_utf8(head) else {
        return bad("the request head is not text");
    };
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let Some(request_line) = lines.next() else {
        return bad("the request has no request line");
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("the request line is not METHOD TARGET HTTP/1.1");
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return bad("the method is not a token");
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("the request target is empty or not visible ASCII");
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        v if v.len() == 8
            && v.starts_with("HTTP/")
            && v.as_bytes()[5].is_ascii_digit()
            && v.as_bytes()[6] == b'.'
            && v.as_bytes()[7].is_ascii_digit() =>
        {
            return Parsed::Bad(
                Status::VersionNotSupported,
                format!("{v} is not served: this server speaks HTTP/1.0 and HTTP/1.1"),
            );
        }
        _ => return bad("the request line does not end with HTTP/1.0 or HTTP/1.1"),
    };
    let mut close = false;
    let mut keep = false;
    let mut content_length: Option<u64> = None;
    let mut coded = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            return bad("folded header lines are not accepted");
        }
        let Some((name, value)) = line.split_once(':') else {
            return bad(format!("the header line `{}` has no colon", shorten(line)));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return bad(format!("`{}` is not a header name", shorten(name)));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                close |= option.eq_ignore_ascii_case("close");
                keep |= option.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let Ok(n) = value.parse::<u64>() else {
                return bad(format!(
                    "Content-Length `{}` is not a number",
                    shorten(value)
                ));
            };
            if content_length.is_some_and(|m| m != n) {
                return bad("two different Content-Length headers");
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
        }
    }
    if coded {
        return Parsed::Bad(
            Status::NotImplemented,
            "request bodies with a Transfer-Encoding are not read; send Content-Length".into(),
        );
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        m => {
            return Parsed::Bad(
                Status::MethodNotAllowed,
                format!(
                    "{} is not served: this server answers GET and HEAD",
                    shorten(m)
                ),
            );
        }
    };
    Parsed::Request(Request {
        head_only,
        target: target.to_string(),
        minor,
        keep_alive: !close && (minor == 1 || keep),
        content_length: content_length.unwrap_or(0),
    })
}

/// At most 40 characters of `s`, for error messages.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// The head of an answer with `status` and `length` body bytes.
pub fn response_head(status: Status, length: u64, processor: usize, keep_alive: bool) -> Vec<u8> {
    let (code, reason) = status.line();
    let mut h = format!(
        "HTTP/1.1 {code} {reason}\r\nServer: snet\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\nX-Snet-Processor: {processor}\r\n"
    );
    if status == Status::MethodNotAllowed {
        h.push_str("Allow: GET, HEAD\r\n");
    }
    h.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    h.into_bytes()
}

/// Reads one answer of this server on the client side and checks its
/// body against [`body_byte`] (for tests and for clients that check what
/// they got).
#[derive(Debug, Default, Clone)]
pub struct ResponseReader {
    head: Vec<u8>,
    /// The status code, once the head is read.
    pub status: Option<u16>,
    /// `X-Snet-Processor`: the processor that answered.
    pub processor: Option<u32>,
    /// `Content-Length`.
    pub length: Option<u64>,
    /// Body bytes read so far.
    pub received: u64,
    /// Body bytes that did not follow the pattern (a `200` answer's).
    pub mismatches: u64,
    /// The head could not be read.
    pub malformed: bool,
}

impl ResponseReader {
    /// Takes bytes of the stream; returns how many belong to this answer
    /// (the rest are the next answer's).
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        if self.status.is_none() && !self.malformed {
            let before = self.head.len();
            self.head.extend_from_slice(data);
            let Some(end) = self
                .head
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 4)
            else {
                self.malformed = self.head.len() > MAX_HEAD;
                return data.len();
            };
            used = end - before;
            self.head.truncate(end);
            self.read_head();
            if self.malformed {
                return data.len();
            }
        }
        let want = self.length.unwrap_or(0).saturating_sub(self.received);
        let take = (want.min((data.len() - used) as u64)) as usize;
        let body = &data[used..used + take];
        if self.status == Some(200) {
            self.mismatches += super::wire::mismatches(body, self.received, body_byte);
        }
        self.received += take as u64;
        used + take
    }

    fn read_head(&mut self) {
        let text = String::from_utf8_lossy(&self.head).into_owned();
        let mut lines = text.split("\r\n");
        self.status = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse().ok());
        if self.status.is_none() {
            self.malformed = true;
            return;
        }
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                self.length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("x-snet-processor") {
                self.processor = value.parse().ok();
            }
        }
        self.malformed = self.length.is_none();
    }

    /// Whether the whole answer arrived.
    pub fn done(&self) -> bool {
        self.status.is_some() && Some(self.received) == self.length
    }
}

/// One `GET` on a connection of its own from an emulated client host (a
/// test's client, the outside of a live session): it sends the request
/// with `Connection: close` and reads the answer with a
/// [`ResponseReader`]. [`Fetch::pump`] moves it forward between polls of
/// the host's stack.
#[derive(Debug)]
pub struct Fetch {
    socket: SocketHandle,
    request: Vec<u8>,
    sent: usize,
    /// The answer so far.
    pub answer: ResponseReader,
    /// The connection closed or was reset before the answer was complete.
    pub broken: bool,
}

impl Fetch {
    /// Connects from `host`'s port `local_port` to `to` and queues
    /// `GET path`.
    pub fn start(
        host: &mut ClientHost,
        to: SocketAddr,
        path: &str,
        local_port: u16,
    ) -> Result<Fetch, String> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        s.connect(
            host.iface.context(),
            IpEndpoint::new(IpAddress::from(to.ip()), to.port()),
            local_port,
        )
        .map_err(|e| format!("connect to {to}: {e}"))?;
        Ok(Fetch {
            socket: host.sockets.add(s),
            request: format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                match to {
                    SocketAddr::V4(a) => a.ip().to_string(),
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                }
            )
            .into_bytes(),
            sent: 0,
            answer: ResponseReader::default(),
            broken: false,
        })
    }

    /// Sends what it can of the request and reads what arrived.
    pub fn pump(&mut self, host: &mut ClientHost) {
        let s = host.sockets.get_mut::<tcp::Socket>(self.socket);
        if s.may_send() && self.sent < self.request.len() {
            self.sent += s.send_slice(&self.request[self.sent..]).unwrap_or(0);
        }
        while s.can_recv() && !self.answer.done() {
            let answer = &mut self.answer;
            if s.recv(|b| (answer.feed(b), ())).is_err() {
                break;
            }
        }
        if !self.answer.done() && self.sent > 0 && !s.is_open() {
            self.broken = true;
        }
    }

    /// Whether it is over: the whole answer arrived, or the connection
    /// broke.
    pub fn over(&self) -> bool {
        self.answer.done() || self.broken
    }
}

/// One connection.
#[derive(Debug)]
struct Session {
    sock: SocketId,
    parser: RequestParser,
    outbox: Outbox,
    /// The client closed its side.
    eof: bool,
    /// Close once the outbox is sent.
    closing: bool,
}

/// What one poll did to a session.
enum Served {
    Open,
    Done,
}

/// The `http` model on one processor.
pub struct HttpServer {
    name: String,
    port: u16,
    work: Duration,
    /// Body bytes of an answer whose target does not say.
    body: u64,
    listening: Listening,
    sessions: Vec<Session>,
    ledger: Shared,
}

impl HttpServer {
    /// A server on TCP `port`, spending `work` per request and answering
    /// with `body` bytes unless the target says otherwise.
    pub fn new(name: &str, port: u16, work: Duration, body: u64, ledger: Shared) -> Self {
        HttpServer {
            name: name.to_string(),
            port,
            work,
            body,
            listening: Listening::default(),
            sessions: Vec::new(),
            ledger,
        }
    }

    /// Queues the answers to what `s` asked for.
    fn answer(&self, cx: &mut AppContext<'_>, s: &mut Session, found: Vec<Parsed>) {
        let p = cx.processor();
        for r in found {
            if s.closing {
                break;
            }
            match r {
                Parsed::Request(r) => match r.body_len(self.body) {
                    Ok(n) => {
                        cx.spend(self.work);
                        s.outbox
                            .bytes(response_head(Status::Ok, n, p, r.keep_alive));
                        if !r.head_only {
                            s.outbox.generated(body_byte, n);
                        }
                        s.closing = !r.keep_alive;
                        // No built-in client speaks HTTP, so the server
                        // counts the run's answered requests itself.
                        let mut l = self.ledger.borrow_mut();
                        l.server(p).requests += 1;
                        l.requests += 1;
                    }
                    Err(why) => refuse(s, Status::BadRequest, &why, p),
                },
                Parsed::Bad(status, why) => refuse(s, status, &why, p),
            }
        }
    }

    /// Moves one session forward: sends what is queued, reads what
    /// arrived, answers complete requests.
    fn serve(&self, cx: &mut AppContext<'_>, s: &mut Session) -> Served {
        let mut buf = [0u8; 8192];
        let mut found = Vec::new();
        loop {
            let finished = s.closing || s.eof;
            match pump(cx, s.sock, &mut s.outbox, finished, &mut buf, &self.ledger) {
                Pumped::Done => return Served::Done,
                Pumped::Wait => return Served::Open,
                Pumped::Eof => s.eof = true,
                Pumped::Data(n) => {
                    s.parser.feed(&buf[..n], &mut found);
                    self.answer(cx, s, std::mem::take(&mut found));
                }
            }
        }
    }
}

/// Queues a refusal and closes after it.
fn refuse(s: &mut Session, status: Status, why: &str, p: usize) {
    let body = format!("{why}\n");
    s.outbox
        .bytes(response_head(status, body.len() as u64, p, false));
    s.outbox.bytes(body.into_bytes());
    s.closing = true;
}

impl Application for HttpServer {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        if let Some(l) = ensure_listener(
            cx,
            &mut self.listening,
            self.port,
            ListenMode::Serve,
            &self.ledger,
            &self.name,
        ) {
            accept_all(cx, l, &self.ledger, &self.name, |s| {
                self.sessions.push(Session {
                    sock: s,
                    parser: RequestParser::default(),
                    outbox: Outbox::default(),
                    eof: false,
                    closing: false,
                })
            });
        }
        let mut sessions = std::mem::take(&mut self.sessions);
        let mut i = 0;
        while i < sessions.len() {
            match self.serve(cx, &mut sessions[i]) {
                Served::Open => i += 1,
                Served::Done => {
                    let s = sessions.swap_remove(i);
                    let _ = cx.sockets().close(s.sock);
                }
            }
        }
        self.sessions = sessions;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> Vec<Parsed> {
        let mut p = RequestParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        out
    }

    fn request(out: &Parsed) -> &Request {
        match out {
            Parsed::Request(r) => r,
            Parsed::Bad(s, why) => panic!("{s:?}: {why}"),
        }
    }

    fn status(out: &Parsed) -> Status {
        match out {
            Parsed::Request(_) => Status::Ok,
            Parsed::Bad(s, _) => *s,
        }
    }

    const CURL: &[u8] =
        b"GET / HTTP/1.1\r\nHost: 198.18.0.10\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

    #[test]
    fn a_request_split_anywhere_is_read_once_complete() {
        for split in 1..CURL.len() {
            let out = feed_all(&[&CURL[..split], &CURL[split..]]);
            assert_eq!(out.len(), 1, "split at {split}");
            let r = request(&out[0]);
            assert_eq!(r.target, "/");
            assert!(r.keep_alive && !r.head_only);
            assert_eq!(r.minor, 1);
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = CURL.chunks(1).collect();
        assert_eq!(feed_all(&bytes).len(), 1);
        // A partial request is nothing yet.
        assert!(feed_all(&[&CURL[..CURL.len() - 1]]).is_empty());
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.extend_from_slice(b"HEAD /a HTTP/1.1\nHost: x\n\n");
        stream.extend_from_slice(b"\r\nGET /c HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        stream.extend_from_slice(b"GET /d HTTP/1.1\r\nConnection: close\r\n\r\n");
        for split in [1usize, 3, 17, 64, stream.len()] {
            let chunks: Vec<&[u8]> = stream.chunks(split).collect();
            let out = feed_all(&chunks);
            assert_eq!(out.len(), 4, "split {split}: {out:?}");
            let r: Vec<&Request> = out.iter().map(request).collect();
            assert_eq!(r[0].body_len(7), Ok(10));
            assert!(r[1].head_only);
            assert_eq!(r[1].body_len(7), Ok(7));
            assert_eq!(r[2].target, "/c");
            assert_eq!(r[2].content_length, 5);
            assert_eq!(r[3].target, "/d", "the body `hello` was skipped");
            assert!(!r[3].keep_alive);
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let one = |t: &[u8]| request(&feed_all(&[t])[0]).keep_alive;
        assert!(one(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!one(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!one(
            b"GET / HTTP/1.1\r\nconnection: Upgrade, Close\r\n\r\n"
        ));
        assert!(!one(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn bad_requests_get_an_error_status_and_end_the_stream() {
        let cases: &[(&[u8], Status)] = &[
            (b"GARBAGE\r\n\r\n", Status::BadRequest),
            (b"GET /\r\n\r\n", Status::BadRequest),
            (b"GET  / HTTP/1.1\r\n\r\n", Status::BadRequest),
            (b"GET / HTTP/1.1 extra\r\n\r\n", Status::BadRequest),
            (b"G(T / HTTP/1.1\r\n\r\n", Status::BadRequest),
            (b"GET / FTP/1.1\r\n\r\n", Status::BadRequest),
            (b"GET / HTTP/2.0\r\n\r\n", Status::VersionNotSupported),
            (
                b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
                Status::BadRequest,
            ),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", Status::BadRequest),
            (
                b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
                Status::BadRequest,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                Status::BadRequest,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Status::BadRequest,
            ),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Status::NotImplemented,
            ),
            (b"POST / HTTP/1.1\r\n\r\n", Status::MethodNotAllowed),
            (b"GET / HTTP/1.1\r\n\xff\xfe\r\n\r\n", Status::BadRequest),
        ];
        for (text, want) in cases {
            let mut p = RequestParser::default();
            let mut out = Vec::new();
            p.feed(text, &mut out);
            assert_eq!(out.len(), 1, "{}", String::from_utf8_lossy(text));
            assert_eq!(status(&out[0]), *want, "{}", String::from_utf8_lossy(text));
            // Whatever follows is ignored.
            p.feed(CURL, &mut out);
            assert_eq!(out.len(), 1);
        }
        let r = request(&feed_all(&[b"GET /bytes/xyz HTTP/1.1\r\n\r\n"])[0]).clone();
        assert!(r.body_len(1).is_err());
        let huge = format!("GET /bytes/{} HTTP/1.1\r\n\r\n", MAX_BODY + 1);
        assert!(
            request(&feed_all(&[huge.as_bytes()])[0])
                .body_len(1)
                .is_err()
        );
    }

    #[test]
    fn an_endless_head_is_refused_at_the_limit() {
        let mut p = RequestParser::default();
        let mut out = Vec::new();
        p.feed(b"GET / HTTP/1.1\r\n", &mut out);
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for _ in 0..1000 {
            p.feed(line, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(status(&out[0]), Status::HeadTooLarge);
        assert!(p.buf.len() <= MAX_HEAD + 4, "the buffer stays bounded");
    }

    #[test]
    fn random_bytes_never_panic() {
        // A fixed pseudo-random stream (xorshift), fed in odd-sized chunks,
        // with and without line endings mixed in.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200 {
            let mut p = RequestParser::default();
            let mut out = Vec::new();
            let mut data = Vec::new();
            for _ in 0..(round * 37 % 3000) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(match x % 8 {
                    0 => b'\n',
                    1 => b'\r',
                    2 => b' ',
                    3 => b':',
                    _ => (x >> 8) as u8,
                });
            }
            for c in data.chunks(1 + round % 13) {
                p.feed(c, &mut out);
            }
        }
    }

    #[test]
    fn the_body_pattern_is_lines_of_offsets_and_letters() {
        let body: Vec<u8> = (0..192).map(body_byte).collect();
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "00000000 abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzab",
                "00000040 bcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabc",
                "00000080 cdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcd",
            ]
        );
        assert_eq!(body_byte(0x1234_5640 + 3), b'4');
        assert_eq!(body_byte(0x1234_5640 + 8), b' ');
    }

    #[test]
    fn the_response_reader_checks_every_body_byte() {
        let mut stream = response_head(Status::Ok, 300, 2, true);
        let mut body: Vec<u8> = (0..300).map(body_byte).collect();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(b"next");
        for split in [1usize, 5, 100, stream.len()] {
            let mut r = ResponseReader::default();
            let mut used = 0;
            for c in stream.chunks(split) {
                if r.done() {
                    break;
                }
                used += r.feed(c);
            }
            assert!(r.done(), "split {split}");
            assert_eq!(used, stream.len() - 4, "split {split}");
            assert_eq!(
                (r.status, r.processor, r.mismatches),
                (Some(200), Some(2), 0)
            );
        }
        body[77] ^= 1;
        let mut stream = response_head(Status::Ok, 300, 2, true);
        stream.extend_from_slice(&body);
        let mut r = ResponseReader::default();
        r.feed(&stream);
        assert_eq!(r.mismatches, 1);
        let mut r = ResponseReader::default();
        r.feed(b"SSH-2.0-OpenSSH\r\n\r\n");
        assert!(r.malformed && !r.done());
    }

    #[test]
    fn answers_carry_length_processor_and_connection() {
        let h = String::from_utf8(response_head(Status::Ok, 1024, 3, true)).unwrap();
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
        assert!(h.contains("\r\nContent-Length: 1024\r\n"), "{h}");
        assert!(h.contains("\r\nX-Snet-Processor: 3\r\n"), "{h}");
        assert!(h.ends_with("Connection: keep-alive\r\n\r\n"), "{h}");
        let h = String::from_utf8(response_head(Status::MethodNotAllowed, 5, 0, false)).unwrap();
        assert!(h.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{h}");
        assert!(h.contains("Allow: GET, HEAD"), "{h}");
        assert!(h.ends_with("Connection: close\r\n\r\n"), "{h}");
    }
}
