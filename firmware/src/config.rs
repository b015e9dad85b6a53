//! Firmware configuration: the same on every adapter serving one IP (the
//! replicated tables only agree if the configurations do).

use core::time::Duration;

use crate::tuple::{PROTO_TCP, PROTO_UDP};
use crate::verdict::ProcessorId;
use crate::wire::ParseOptions;

/// How a shared (round-robin-enabled) port picks a listener for a new
/// connection (TCP) or a datagram (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Policy {
    /// Strict turn order over the group's members: 1st, 2nd, 3rd, 1st, …
    /// (the NonStop adapter's round-robin filtering).
    #[default]
    RoundRobin,
    /// By reported capacity (OS/390 Sysplex Distributor with WLM): smooth
    /// weighted round robin over members, weight = the processor's last
    /// capacity report (1 until it reports; 0 takes it out of the rotation).
    CapacityWeighted,
    /// Consistent hashing of the client's address and port (Maglev): the same
    /// client tuple lands on the same member while membership is unchanged,
    /// and a membership change moves few tuples.
    Maglev,
}

impl Policy {
    /// Stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::CapacityWeighted => "capacity_weighted",
            Policy::Maglev => "maglev",
        }
    }

    /// The policy with this name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "round_robin" | "round-robin" => Some(Policy::RoundRobin),
            "capacity_weighted" | "capacity-weighted" => Some(Policy::CapacityWeighted),
            "maglev" => Some(Policy::Maglev),
            _ => None,
        }
    }
}

/// A port range with round-robin filtering enabled: listeners in several
/// processors may share each port of it (one per processor), distributed by
/// `policy`. Ports outside every range are exclusive: the first registrant
/// owns the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedPortRange {
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub protocol: u8,
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
    /// How connections are spread.
    pub policy: Policy,
}

impl SharedPortRange {
    /// Whether `port` of `protocol` is in the range.
    pub fn contains(&self, protocol: u8, port: u16) -> bool {
        self.protocol == protocol && (self.first..=self.last).contains(&port)
    }
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No processors, or more than the control protocol can name.
    #[error("processor_count is {0}; it must be in 1..=4096")]
    ProcessorCount(u16),
    /// Initial master outside the processors.
    #[error("initial_master {master} is not a processor (0..{count})")]
    InitialMaster {
        /// The master asked for.
        master: u16,
        /// Number of processors.
        count: u16,
    },
    /// Connection capacity zero or too large.
    #[error("connection_capacity {0} must be in 1..=1000000000")]
    ConnectionCapacity(usize),
    /// Provisional capacity too large.
    #[error("provisional_capacity {0} must be at most 100000000")]
    ProvisionalCapacity(usize),
    /// Queues per processor zero.
    #[error("queues_per_processor must be at least 1")]
    Queues,
    /// A shared range with first > last or a protocol other than TCP/UDP.
    #[error("shared port range {index}: {why}")]
    SharedRange {
        /// Position in `shared_ports`.
        index: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// Maglev table size not a prime in range.
    #[error("maglev_table_size {0} must be a prime in 7..=65537")]
    MaglevSize(usize),
}

/// Configuration of one firmware instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Processors of the cluster: IDs `0..processor_count`, all live at start.
    pub processor_count: u16,
    /// The first master processor (gets unmatched traffic).
    pub initial_master: ProcessorId,
    /// Established connections the table holds (the configured size).
    pub connection_capacity: usize,
    /// Provisional (SYN-created, unconfirmed) entries the table holds besides.
    pub provisional_capacity: usize,
    /// How long a provisional entry waits for its owner's confirmation.
    pub syn_timeout: Duration,
    /// How long a failed processor's connections keep answering with RST.
    pub orphan_linger: Duration,
    /// First-fragment decisions remembered at most.
    pub fragment_capacity: usize,
    /// How long a first-fragment decision is remembered.
    pub fragment_timeout: Duration,
    /// Receive queues per processor; a connection's queue is chosen by its hash.
    pub queues_per_processor: u16,
    /// Port ranges with round-robin filtering enabled.
    pub shared_ports: Vec<SharedPortRange>,
    /// Frame-level checks.
    pub parse: ParseOptions,
    /// Seed of the connection-table hash (keep it secret from clients).
    pub hash_seed: u64,
    /// Size of each Maglev lookup table (a prime).
    pub maglev_table_size: usize,
    /// Listener groups at most.
    pub max_listener_groups: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            processor_count: 4,
            initial_master: ProcessorId(0),
            connection_capacity: 65_536,
            provisional_capacity: 4_096,
            syn_timeout: Duration::from_secs(3),
            orphan_linger: Duration::from_secs(30),
            fragment_capacity: 1_024,
            fragment_timeout: Duration::from_secs(2),
            queues_per_processor: 1,
            shared_ports: Vec::new(),
            parse: ParseOptions::default(),
            hash_seed: 0x5eed_f11e_7e12_0001,
            maglev_table_size: 1_021,
            max_listener_groups: 4_096,
        }
    }
}

impl Config {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.processor_count == 0 || self.processor_count > 4096 {
            return Err(ConfigError::ProcessorCount(self.processor_count));
        }
        if self.initial_master.0 >= self.processor_count {
            return Err(ConfigError::InitialMaster {
                master: self.initial_master.0,
                count: self.processor_count,
            });
        }
        if self.connection_capacity == 0 || self.connection_capacity > 1_000_000_000 {
            return Err(ConfigError::ConnectionCapacity(self.connection_capacity));
        }
        if self.provisional_capacity > 100_000_000 {
            return Err(ConfigError::ProvisionalCapacity(self.provisional_capacity));
        }
        if self.queues_per_processor == 0 {
            return Err(ConfigError::Queues);
        }
        for (index, r) in self.shared_ports.iter().enumerate() {
            if r.first > r.last {
                return Err(ConfigError::SharedRange {
                    index,
                    why: "first port is after last port",
                });
            }
            if r.protocol != PROTO_TCP && r.protocol != PROTO_UDP {
                return Err(ConfigError::SharedRange {
                    index,
                    why: "protocol must be TCP (6) or UDP (17)",
                });
            }
        }
        let m = self.maglev_table_size;
        if !(7..=65_537).contains(&m) || !is_prime(m) {
            return Err(ConfigError::MaglevSize(m));
        }
        Ok(())
    }

    /// The shared range holding `port` of `protocol` (the first that matches).
    pub fn shared_range(&self, protocol: u8, port: u16) -> Option<&SharedPortRange> {
        self.shared_ports
            .iter()
            .find(|r| r.contains(protocol, port))
    }

    /// Enables round-robin filtering on `first..=last` for `protocol`.
    pub fn share_ports(mut self, protocol: u8, first: u16, last: u16, policy: Policy) -> Self {
        self.shared_ports.push(SharedPortRange {
            protocol,
            first,
            last,
            policy,
        });
        self
    }
}

fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_errors_are_typed() {
        Config::default().validate().unwrap();
        let bad = Config {
            processor_count: 0,
            ..Config::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::ProcessorCount(0)));
        let bad = Config {
            maglev_table_size: 1000,
            ..Config::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::MaglevSize(1000)));
        let bad = Config::default().share_ports(PROTO_TCP, 90, 80, Policy::RoundRobin);
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::SharedRange { index: 0, .. })
        ));
        let bad = Config {
            initial_master: ProcessorId(4),
            ..Config::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::InitialMaster { .. })
        ));
    }

    #[test]
    fn policies_have_names() {
        for p in [Policy::RoundRobin, Policy::CapacityWeighted, Policy::Maglev] {
            assert_eq!(Policy::from_name(p.as_str()), Some(p));
        }
        assert_eq!(Policy::from_name("random"), None);
    }
}
