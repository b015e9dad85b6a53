//! Helpers shared by the integration tests that drive client hosts by hand.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::net::IpAddr;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;
use snet_firmware::FiveTuple;
use snet_host_lib::net::NetRig;

/// A client TCP socket with 64 KiB buffers each way.
pub fn client_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        tcp::SocketBuffer::new(vec![0; 64 * 1024]),
    )
}

/// A client connection that sends `data`, reads everything back and
/// closes once it has it all.
pub struct Exchange {
    pub c: usize,
    pub handle: SocketHandle,
    pub local_port: u16,
    pub remote: IpAddress,
    pub port: u16,
    pub data: Vec<u8>,
    pub sent: usize,
    pub got: Vec<u8>,
    pub closed: bool,
}

impl Exchange {
    /// Client `c` connects from `local_port` to `remote`:`port`.
    pub fn open(
        rig: &mut NetRig,
        c: usize,
        remote: IpAddress,
        port: u16,
        local_port: u16,
        data: Vec<u8>,
    ) -> Self {
        let host = &mut rig.hosts.clients[c];
        let mut s = client_socket();
        s.connect(host.iface.context(), (remote, port), local_port)
            .unwrap();
        let handle = host.sockets.add(s);
        rig.hosts.poll_client(&mut rig.cluster, c);
        Exchange {
            c,
            handle,
            local_port,
            remote,
            port,
            data,
            sent: 0,
            got: Vec::new(),
            closed: false,
        }
    }

    /// Moves data; returns true once everything came back.
    pub fn step(&mut self, rig: &mut NetRig) -> bool {
        let s = rig.hosts.clients[self.c]
            .sockets
            .get_mut::<tcp::Socket>(self.handle);
        if self.sent < self.data.len() && s.can_send() {
            self.sent += s.send_slice(&self.data[self.sent..]).unwrap_or(0);
        }
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = s.recv_slice(&mut buf) {
            if n == 0 {
                break;
            }
            self.got.extend_from_slice(&buf[..n]);
        }
        if self.got.len() >= self.data.len() && !self.closed {
            s.close();
            self.closed = true;
        }
        rig.hosts.poll_client(&mut rig.cluster, self.c);
        self.done()
    }

    /// Whether everything came back.
    pub fn done(&self) -> bool {
        self.got.len() >= self.data.len()
    }

    /// The client socket's state.
    pub fn state(&self, rig: &NetRig) -> tcp::State {
        rig.hosts.clients[self.c]
            .sockets
            .get::<tcp::Socket>(self.handle)
            .state()
    }

    /// The connection as the cluster's firmware sees it (IPv4 clients:
    /// client `c` is 198.18.1.`c+1`).
    pub fn tuple(&self) -> FiveTuple {
        FiveTuple::tcp(
            format!("198.18.1.{}", self.c + 1).parse().unwrap(),
            self.local_port,
            IpAddr::from(self.remote),
            self.port,
        )
    }
}
