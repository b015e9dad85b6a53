//! # snet-nic-model: the smart LAN adapter
//!
//! The adapter of a single-IP cluster: an Ethernet port with a MAC, the
//! replicated TCP filter firmware ([`snet_firmware`]) deciding which
//! processor gets each inbound frame, and a fabric endpoint ([`snet_fabric`])
//! through which it reaches per-processor queue pairs — descriptor rings,
//! completion rings and buffers that live in *processor* memory, reached only
//! through the windows each processor opened in its AVT.
//!
//! - [`ring`]: the `#[repr(C)]`, little-endian layouts in processor memory
//!   (descriptors, completions, interrupt messages) and ring arithmetic.
//! - [`regs`]: the adapter's register windows (doorbells, commands, mailbox).
//! - [`mac`]: addresses, FCS, frame limits, link speeds.
//! - [`nic`]: the adapter model ([`Nic`]).
//! - [`lan`]: the in-engine LAN segment that client hosts attach to.
//! - [`capture`]: pcap captures of LAN frames and fabric packets.
//! - [`cluster`]: the world joining fabric, adapters and LAN in one engine,
//!   and the [`HostModel`] trait through which processors take part.

/// Declares a fieldless enum whose variants have wire codes and stable
/// names, with `from_code` and `as_str`.
macro_rules! coded_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $code:literal => $str:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $( $(#[doc = $doc])* $variant = $code, )*
        }

        impl $name {
            /// The value with this code.
            pub fn from_code(code: $repr) -> Option<Self> {
                match code {
                    $( $code => Some($name::$variant), )*
                    _ => None,
                }
            }

            /// Stable name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $str, )*
                }
            }
        }
    };
}

pub mod capture;
pub mod cluster;
pub mod lan;
pub mod mac;
pub mod nic;
pub mod offload;
pub mod regs;
pub mod ring;

pub use cluster::{Cluster, ClusterError, Event, HostModel, PortAttachment};
pub use lan::{Lan, LanConfig, StationId};
pub use mac::{LinkSpeed, MacAddr, MacConfig};
pub use nic::{Nic, NicConfig, NicCounters, NicError, NicEvent, QueueCounters};
