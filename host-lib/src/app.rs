//! Applications on emulated processors: the [`Application`] trait, the
//! context an application runs in, and the metering of its socket calls
//! on the processor's CPU.
//!
//! An application is polled when something happened on its processor (a
//! frame reached its TCP/IP instance, a message arrived, a control message
//! was answered) and at the time it asked for; it does what it can without
//! blocking and returns. It reaches the network through
//! [`AppContext::sockets`] — the same [`SocketApi`] on the parallel library
//! and on the conventional stack — and other processes through
//! inter-processor messages ([`AppContext::send`], [`AppContext::take_request`],
//! [`AppContext::reply`], [`AppContext::take_reply`]), addressed to a
//! *service* number on a processor.

use std::collections::VecDeque;
use std::net::SocketAddr;

use snet_fabric::time::{Duration, Instant};
use snet_nic_model::Cluster;

use crate::cpu::Cpu;
use crate::ipc::{Ipc, IpcError, Message, RequestId, RequestRef};
use crate::rig::NoEvent;
use crate::socket::{ListenMode, SocketApi, SocketError, SocketId, SocketState, Ticket};

/// Tag bit of messages between the libraries themselves.
pub const SYSTEM_TAG: u64 = 1 << 63;
/// Tag bit of the conventional stack's messages.
pub const STACK_TAG: u64 = 1 << 62;

/// An application on an emulated processor.
pub trait Application {
    /// A short name for reports.
    fn name(&self) -> &str;
    /// The service number requests to this application are addressed to,
    /// if it takes any.
    fn service(&self) -> Option<u32> {
        None
    }
    /// Does what can be done now; returns when it wants to run again
    /// regardless of events (`None`: only on events).
    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant>;
}

/// A reply to one of an application's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request answered.
    pub request: RequestId,
    /// Its outcome (the peer's processor may have failed).
    pub result: Result<(), IpcError>,
    /// The reply's bytes.
    pub payload: Vec<u8>,
}

/// An application's queues of messages, kept by the host model.
#[derive(Debug, Default)]
pub struct Mailbox {
    /// Requests addressed to the application's service.
    pub requests: VecDeque<Message>,
    /// Replies to its requests.
    pub replies: VecDeque<Reply>,
    /// Its requests still unanswered.
    pub sent: Vec<RequestId>,
}

/// What an application sees while it runs.
pub struct AppContext<'a> {
    pub(crate) api: &'a mut dyn SocketApi,
    pub(crate) cpu: &'a mut Cpu,
    pub(crate) ipc: &'a mut Ipc,
    pub(crate) cluster: &'a mut Cluster<NoEvent>,
    pub(crate) mailbox: &'a mut Mailbox,
    pub(crate) processors: usize,
}

impl std::fmt::Debug for AppContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppContext")
            .field("processor", &self.api.processor())
            .finish()
    }
}

impl<'a> AppContext<'a> {
    /// The processor the application runs on.
    pub fn processor(&self) -> usize {
        self.api.processor()
    }

    /// Processors in the cluster.
    pub fn processors(&self) -> usize {
        self.processors
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.api.now()
    }

    /// The socket calls, metered on the processor's CPU.
    pub fn sockets(&mut self) -> Metered<'_> {
        Metered {
            api: &mut *self.api,
            cpu: &mut *self.cpu,
        }
    }

    /// Spends `units` of application work on the processor's CPU.
    pub fn work(&mut self, units: u64) {
        let now = self.now();
        self.cpu.work(now, units);
    }

    /// Spends `d` of application CPU time on the processor's CPU.
    pub fn spend(&mut self, d: Duration) {
        let now = self.now();
        self.cpu.charge(now, d);
    }

    /// Sends a request to service `service` on processor `to`.
    pub fn send(&mut self, to: usize, service: u32, payload: &[u8]) -> Result<RequestId, IpcError> {
        let from = self.processor();
        let id = self
            .ipc
            .send_request(self.cluster, from, to, u64::from(service), payload)?;
        let now = self.now();
        self.cpu.messages(now, 1);
        self.cpu.bytes(now, payload.len() as u64);
        self.mailbox.sent.push(id);
        Ok(id)
    }

    /// The oldest request addressed to this application.
    pub fn take_request(&mut self) -> Option<Message> {
        let m = self.mailbox.requests.pop_front()?;
        let now = self.now();
        self.cpu.messages(now, 1);
        self.cpu.bytes(now, m.payload.len() as u64);
        Some(m)
    }

    /// Answers a request taken with [`AppContext::take_request`] (its
    /// [`Message::request`]).
    pub fn reply(&mut self, request: &RequestRef, payload: &[u8]) -> Result<(), IpcError> {
        self.ipc.reply(self.cluster, request, payload)?;
        let now = self.now();
        self.cpu.messages(now, 1);
        self.cpu.bytes(now, payload.len() as u64);
        Ok(())
    }

    /// The oldest reply to this application's requests.
    pub fn take_reply(&mut self) -> Option<Reply> {
        let r = self.mailbox.replies.pop_front()?;
        let now = self.now();
        self.cpu.messages(now, 1);
        self.cpu.bytes(now, r.payload.len() as u64);
        Some(r)
    }
}

/// A [`SocketApi`] whose every call and byte is charged to the processor's
/// CPU.
pub struct Metered<'a> {
    api: &'a mut dyn SocketApi,
    cpu: &'a mut Cpu,
}

impl std::fmt::Debug for Metered<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").finish_non_exhaustive()
    }
}

impl Metered<'_> {
    /// Charges a call that did something (one that would block costs
    /// nothing: the application would have waited in its poll loop), and
    /// the bytes it moved.
    fn charge<T>(
        &mut self,
        r: Result<T, SocketError>,
        bytes: impl Fn(&T) -> usize,
    ) -> Result<T, SocketError> {
        if !matches!(r, Err(SocketError::WouldBlock)) {
            let now = self.api.now();
            self.cpu.socket_calls(now, 1);
            if let Ok(v) = &r {
                self.cpu.bytes(now, bytes(v) as u64);
            }
        }
        r
    }
}

impl SocketApi for Metered<'_> {
    fn processor(&self) -> usize {
        self.api.processor()
    }
    fn now(&self) -> Instant {
        self.api.now()
    }
    fn tcp_socket(&mut self) -> Result<SocketId, SocketError> {
        let r = self.api.tcp_socket();
        self.charge(r, |_| 0)
    }
    fn bind(&mut self, s: SocketId, port: u16) -> Result<(), SocketError> {
        let r = self.api.bind(s, port);
        self.charge(r, |_| 0)
    }
    fn listen(&mut self, s: SocketId, backlog: usize, mode: ListenMode) -> Result<(), SocketError> {
        let r = self.api.listen(s, backlog, mode);
        self.charge(r, |_| 0)
    }
    fn accept(&mut self, listener: SocketId) -> Result<SocketId, SocketError> {
        let r = self.api.accept(listener);
        self.charge(r, |_| 0)
    }
    fn accept_nw1(&mut self, listener: SocketId) -> Result<Ticket, SocketError> {
        let r = self.api.accept_nw1(listener);
        self.charge(r, |_| 0)
    }
    fn accept_nw2(&mut self, ticket: &Ticket) -> Result<SocketId, SocketError> {
        let r = self.api.accept_nw2(ticket);
        self.charge(r, |_| 0)
    }
    fn connect(&mut self, s: SocketId, remote: SocketAddr) -> Result<(), SocketError> {
        let r = self.api.connect(s, remote);
        self.charge(r, |_| 0)
    }
    fn send(&mut self, s: SocketId, data: &[u8]) -> Result<usize, SocketError> {
        let r = self.api.send(s, data);
        self.charge(r, |n| *n)
    }
    fn recv(&mut self, s: SocketId, buf: &mut [u8]) -> Result<usize, SocketError> {
        let r = self.api.recv(s, buf);
        self.charge(r, |n| *n)
    }
    fn shutdown(&mut self, s: SocketId) -> Result<(), SocketError> {
        let r = self.api.shutdown(s);
        self.charge(r, |_| 0)
    }
    fn close(&mut self, s: SocketId) -> Result<(), SocketError> {
        let r = self.api.close(s);
        self.charge(r, |_| 0)
    }
    fn udp_bind(&mut self, port: u16) -> Result<SocketId, SocketError> {
        let r = self.api.udp_bind(port);
        self.charge(r, |_| 0)
    }
    fn send_to(&mut self, s: SocketId, data: &[u8], to: SocketAddr) -> Result<usize, SocketError> {
        let r = self.api.send_to(s, data, to);
        self.charge(r, |n| *n)
    }
    fn recv_from(
        &mut self,
        s: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), SocketError> {
        let r = self.api.recv_from(s, buf);
        self.charge(r, |(n, _)| *n)
    }
    fn state(&self, s: SocketId) -> Result<SocketState, SocketError> {
        self.api.state(s)
    }
    fn peer(&self, s: SocketId) -> Result<Option<SocketAddr>, SocketError> {
        self.api.peer(s)
    }
}

/// An echo server: listens on a port, accepts every connection, sends back
/// what it receives, and closes a connection once the peer closed and all
/// was echoed. Optionally spends `work` units of CPU per request it reads.
#[derive(Debug)]
pub struct EchoServer {
    port: u16,
    backlog: usize,
    work: u64,
    listener: Option<SocketId>,
    conns: Vec<(SocketId, Vec<u8>)>,
    /// Connections accepted.
    pub accepted: u64,
    /// Bytes echoed.
    pub echoed: u64,
    /// Errors met (other than would-block and resets).
    pub errors: Vec<String>,
}

impl EchoServer {
    /// An echo server on `port`.
    pub fn new(port: u16, backlog: usize, work: u64) -> Self {
        EchoServer {
            port,
            backlog,
            work,
            listener: None,
            conns: Vec::new(),
            accepted: 0,
            echoed: 0,
            errors: Vec::new(),
        }
    }
}

impl Application for EchoServer {
    fn name(&self) -> &str {
        "echo"
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let listener = match self.listener {
            Some(l) => l,
            None => match cx
                .sockets()
                .tcp_listen(self.port, self.backlog, ListenMode::Serve)
            {
                Ok(l) => {
                    self.listener = Some(l);
                    l
                }
                Err(e) => {
                    self.errors.push(format!("listen: {e}"));
                    return None;
                }
            },
        };
        loop {
            match cx.sockets().accept(listener) {
                Ok(s) => {
                    self.accepted += 1;
                    self.conns.push((s, Vec::new()));
                }
                Err(SocketError::WouldBlock) => break,
                Err(e) => {
                    self.errors.push(format!("accept: {e}"));
                    break;
                }
            }
        }
        let mut buf = [0u8; 16384];
        let mut done = Vec::new();
        for (i, (s, pending)) in self.conns.iter_mut().enumerate() {
            let mut eof = false;
            loop {
                if !pending.is_empty() {
                    match cx.sockets().send(*s, pending) {
                        Ok(n) => {
                            self.echoed += n as u64;
                            pending.drain(..n);
                        }
                        Err(SocketError::WouldBlock) => break,
                        Err(_) => {
                            done.push(i);
                            break;
                        }
                    }
                    if !pending.is_empty() {
                        break;
                    }
                }
                match cx.sockets().recv(*s, &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        cx.work(self.work);
                        pending.extend_from_slice(&buf[..n]);
                    }
                    Err(SocketError::WouldBlock) => break,
                    Err(_) => {
                        done.push(i);
                        break;
                    }
                }
            }
            if eof && pending.is_empty() {
                done.push(i);
            }
        }
        done.dedup();
        for i in done.into_iter().rev() {
            let (s, _) = self.conns.swap_remove(i);
            let _ = cx.sockets().close(s);
        }
        None
    }
}

/// A request/response server: reads a request of `request` bytes on each
/// connection, spends `work` units of CPU on it, answers with `response`
/// bytes, and so on until the peer closes; then it closes. With
/// `response == 0` it is a sink that reads and discards everything.
#[derive(Debug)]
pub struct RequestReply {
    port: u16,
    backlog: usize,
    request: usize,
    response: usize,
    work: u64,
    listener: Option<SocketId>,
    conns: Vec<Conn>,
    /// Connections accepted.
    pub accepted: u64,
    /// Requests answered.
    pub answered: u64,
    /// Bytes read.
    pub bytes_in: u64,
}

#[derive(Debug)]
struct Conn {
    socket: SocketId,
    /// Request bytes read towards the current request.
    got: usize,
    /// Response bytes still to send.
    owed: usize,
    eof: bool,
}

impl RequestReply {
    /// A server on `port` answering `request`-byte requests with
    /// `response` bytes.
    pub fn new(port: u16, backlog: usize, request: usize, response: usize, work: u64) -> Self {
        RequestReply {
            port,
            backlog,
            request: request.max(1),
            response,
            work,
            listener: None,
            conns: Vec::new(),
            accepted: 0,
            answered: 0,
            bytes_in: 0,
        }
    }
}

/// Bytes of a response (a fixed pattern).
const FILL: [u8; 4096] = [0x5a; 4096];

impl Application for RequestReply {
    fn name(&self) -> &str {
        if self.response == 0 {
            "sink"
        } else {
            "request-reply"
        }
    }

    fn poll(&mut self, cx: &mut AppContext<'_>) -> Option<Instant> {
        let listener = match self.listener {
            Some(l) => l,
            None => {
                let l = cx
                    .sockets()
                    .tcp_listen(self.port, self.backlog, ListenMode::Serve)
                    .ok()?;
                self.listener = Some(l);
                l
            }
        };
        while let Ok(s) = cx.sockets().accept(listener) {
            self.accepted += 1;
            self.conns.push(Conn {
                socket: s,
                got: 0,
                owed: 0,
                eof: false,
            });
        }
        let mut buf = [0u8; 16384];
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            let mut gone = false;
            loop {
                while c.owed > 0 {
                    let n = c.owed.min(FILL.len());
                    match cx.sockets().send(c.socket, &FILL[..n]) {
                        Ok(k) => c.owed -= k,
                        Err(SocketError::WouldBlock) => break,
                        Err(_) => {
                            gone = true;
                            break;
                        }
                    }
                }
                if c.owed > 0 || gone || c.eof {
                    break;
                }
                match cx.sockets().recv(c.socket, &mut buf) {
                    Ok(0) => c.eof = true,
                    Ok(n) => {
                        self.bytes_in += n as u64;
                        c.got += n;
                        while c.got >= self.request {
                            c.got -= self.request;
                            cx.work(self.work);
                            self.answered += 1;
                            c.owed += self.response;
                        }
                    }
                    Err(SocketError::WouldBlock) => break,
                    Err(_) => gone = true,
                }
            }
            if gone || (c.eof && c.owed == 0) {
                let s = c.socket;
                self.conns.swap_remove(i);
                let _ = cx.sockets().close(s);
            } else {
                i += 1;
            }
        }
        None
    }
}
