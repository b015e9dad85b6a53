//! A PTF-style harness: send a frame, expect a verdict, or expect that no
//! processor receives it. Control messages go through the binary protocol, so
//! a test exercises the same path a host does.

use core::time::Duration;

use crate::config::{Config, ConfigError};
use crate::control::{ControlError, ControlMessage, Envelope};
use crate::filter::Filter;
use crate::firmware::Firmware;
use crate::listener::ListenerKey;
use crate::time::Instant;
use crate::verdict::{ProcessorId, Verdict};

/// An expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame #{frame}: expected {expected}, got {got}")]
pub struct Mismatch {
    /// Index of the frame in the harness's sequence (0-based).
    pub frame: usize,
    /// What was expected.
    pub expected: String,
    /// What the firmware decided.
    pub got: Verdict,
}

/// A firmware instance with a clock and a log of what was sent.
///
/// ```
/// use snet_firmware::kit::{Harness, PacketBuilder};
/// use snet_firmware::wire::tcp_flags;
/// use snet_firmware::{Config, Policy};
///
/// let mut h = Harness::new(Config::default().share_ports(6, 23, 23, Policy::RoundRobin)).unwrap();
/// for p in [1, 2, 3] {
///     h.listen(p, 6, 23).unwrap();
/// }
/// for (n, p) in [1, 2, 3, 1, 2].into_iter().enumerate() {
///     let client = format!("198.18.5.{}:40000", n + 1);
///     let syn = PacketBuilder::tcp(client.parse().unwrap(), "198.18.0.10:23".parse().unwrap())
///         .flags(tcp_flags::SYN)
///         .build()
///         .unwrap();
///     h.expect_delivered_to(&syn, p).unwrap();
/// }
/// ```
#[derive(Debug)]
pub struct Harness {
    fw: Firmware,
    now: Instant,
    sent: usize,
    seq: u32,
}

impl Harness {
    /// A harness around a new firmware with `config`.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Self::with_firmware(Firmware::new(config)?))
    }

    /// A harness around `fw`.
    pub fn with_firmware(fw: Firmware) -> Self {
        Harness {
            fw,
            now: Instant::ZERO,
            sent: 0,
            seq: 0,
        }
    }

    /// Installs a filter (Rust or tree).
    pub fn with_filter(mut self, filter: Box<dyn Filter + Send>) -> Self {
        self.fw.set_filter(filter);
        self
    }

    /// The firmware.
    pub fn firmware(&mut self) -> &mut Firmware {
        &mut self.fw
    }

    /// The harness's current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves the clock forward and lets the firmware expire what is due.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        self.fw.poll(self.now);
    }

    /// Sends a control message from processor `sender` (encoded and parsed).
    pub fn control(&mut self, sender: u16, message: ControlMessage) -> Result<(), ControlError> {
        self.seq += 1;
        let bytes = Envelope {
            sender: ProcessorId(sender),
            seq: self.seq,
            message,
        }
        .to_bytes();
        self.fw.apply(&bytes, self.now)
    }

    /// Processor `p` listens on `port` of `protocol`, any address.
    pub fn listen(&mut self, p: u16, protocol: u8, port: u16) -> Result<(), ControlError> {
        self.control(
            p,
            ControlMessage::RegisterListener(ListenerKey {
                protocol,
                addr: None,
                port,
            }),
        )
    }

    /// Sends a frame; returns the verdict.
    pub fn send(&mut self, frame: &[u8]) -> Verdict {
        self.sent += 1;
        self.fw.classify(frame, self.now)
    }

    /// Sends a frame and expects exactly `expected`.
    pub fn expect(&mut self, frame: &[u8], expected: &Verdict) -> Result<(), Mismatch> {
        let got = self.send(frame);
        if &got == expected {
            Ok(())
        } else {
            Err(Mismatch {
                frame: self.sent - 1,
                expected: expected.describe(),
                got,
            })
        }
    }

    /// Sends a frame and expects it delivered to processor `p` (any queue).
    pub fn expect_delivered_to(&mut self, frame: &[u8], p: u16) -> Result<(), Mismatch> {
        let got = self.send(frame);
        match got {
            Verdict::Deliver { processor, .. } if processor == ProcessorId(p) => Ok(()),
            got => Err(Mismatch {
                frame: self.sent - 1,
                expected: format!("deliver P{p}"),
                got,
            }),
        }
    }

    /// Sends a frame and expects it to go to the master.
    pub fn expect_master(&mut self, frame: &[u8]) -> Result<(), Mismatch> {
        let got = self.send(frame);
        match got {
            Verdict::Master { .. } => Ok(()),
            got => Err(Mismatch {
                frame: self.sent - 1,
                expected: "master".into(),
                got,
            }),
        }
    }

    /// Sends a frame and expects no processor to receive it (a drop or a
    /// reply). Returns the verdict for further checks.
    pub fn expect_no_delivery(&mut self, frame: &[u8]) -> Result<Verdict, Mismatch> {
        let got = self.send(frame);
        match got {
            Verdict::Drop(_) | Verdict::Reply { .. } => Ok(got),
            got => Err(Mismatch {
                frame: self.sent - 1,
                expected: "no delivery".into(),
                got,
            }),
        }
    }
}
