//! Virtual time. Nothing in the model reads the wall clock: time is a value
//! passed in. The unit is the picosecond, so serialization times of single
//! bytes on fast links (0.8 ns at 10 Gbit/s) stay exact integers.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// Picoseconds per nanosecond.
pub const PS_PER_NS: u64 = 1_000;

/// A point in virtual time, in picoseconds since the start of the run.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

/// A span of virtual time, in picoseconds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Instant {
    /// The start of every run.
    pub const ZERO: Instant = Instant(0);
    /// The end of time; used as "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// From picoseconds.
    pub const fn from_ps(ps: u64) -> Self {
        Self(ps)
    }
    /// From nanoseconds.
    pub const fn from_ns(ns: u64) -> Self {
        Self(ns * PS_PER_NS)
    }
    /// Picoseconds since the start.
    pub const fn as_ps(self) -> u64 {
        self.0
    }
    /// Whole nanoseconds since the start (rounded down).
    pub const fn as_ns(self) -> u64 {
        self.0 / PS_PER_NS
    }
    /// `self - earlier`, or zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);

    /// From picoseconds.
    pub const fn from_ps(ps: u64) -> Self {
        Self(ps)
    }
    /// From nanoseconds.
    pub const fn from_ns(ns: u64) -> Self {
        Self(ns * PS_PER_NS)
    }
    /// From microseconds.
    pub const fn from_us(us: u64) -> Self {
        Self(us * 1_000 * PS_PER_NS)
    }
    /// From milliseconds.
    pub const fn from_ms(ms: u64) -> Self {
        Self(ms * 1_000_000 * PS_PER_NS)
    }
    /// In picoseconds.
    pub const fn as_ps(self) -> u64 {
        self.0
    }
    /// In whole nanoseconds (rounded down).
    pub const fn as_ns(self) -> u64 {
        self.0 / PS_PER_NS
    }
    /// In seconds, for reports.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e12
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        self.0 = self.0.saturating_add(d.0);
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Panics in debug builds if `rhs` is later; use `saturating_since` when unsure.
    fn sub(self, rhs: Instant) -> Duration {
        Duration(self.0 - rhs.0)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, d: Duration) -> Duration {
        Duration(self.0.saturating_add(d.0))
    }
}

impl AddAssign for Duration {
    fn add_assign(&mut self, d: Duration) {
        self.0 = self.0.saturating_add(d.0);
    }
}

fn fmt_ps(ps: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if ps % PS_PER_NS == 0 {
        let ns = ps / PS_PER_NS;
        if ns >= 1_000_000 && ns % 1_000 == 0 {
            write!(f, "{}.{:03}ms", ns / 1_000_000, (ns / 1_000) % 1_000)
        } else if ns >= 1_000 {
            write!(f, "{}.{:03}us", ns / 1_000, ns % 1_000)
        } else {
            write!(f, "{ns}ns")
        }
    } else {
        write!(f, "{}.{:03}ns", ps / PS_PER_NS, ps % PS_PER_NS)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("t=")?;
        fmt_ps(self.0, f)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_ps(self.0, f)
    }
}

/// A link or port speed, in bytes per second.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bandwidth {
    bytes_per_s: u64,
}

impl Bandwidth {
    /// From bytes per second; `None` for zero.
    pub const fn from_bytes_per_s(bytes_per_s: u64) -> Option<Self> {
        if bytes_per_s == 0 {
            None
        } else {
            Some(Self { bytes_per_s })
        }
    }
    /// From MB/s (10^6 bytes per second), the unit ServerNet links are quoted in.
    pub const fn from_mb_per_s(mb: u64) -> Option<Self> {
        Self::from_bytes_per_s(mb * 1_000_000)
    }
    /// Bytes per second.
    pub const fn bytes_per_s(self) -> u64 {
        self.bytes_per_s
    }
    /// Time to serialize `bytes` onto the link, rounded up to the next picosecond.
    pub const fn serialization(self, bytes: u64) -> Duration {
        // ps = bytes * 1e12 / Bps, computed in u128 so nothing overflows.
        let num = bytes as u128 * 1_000_000_000_000u128;
        let den = self.bytes_per_s as u128;
        Duration(num.div_ceil(den) as u64)
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MB/s", self.bytes_per_s as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_is_exact_for_servernet_speeds() {
        let b = Bandwidth::from_mb_per_s(250).unwrap();
        assert_eq!(b.serialization(1), Duration::from_ns(4));
        assert_eq!(b.serialization(512), Duration::from_ns(2048));
        let ten_g = Bandwidth::from_bytes_per_s(1_250_000_000).unwrap();
        assert_eq!(ten_g.serialization(1), Duration::from_ps(800));
        let odd = Bandwidth::from_bytes_per_s(3).unwrap();
        assert_eq!(odd.serialization(1).as_ps(), 333_333_333_334);
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(Instant::from_ns(1_500).to_string(), "t=1.500us");
        assert_eq!(Duration::from_ns(300).to_string(), "300ns");
        assert_eq!(Duration::from_ps(800).to_string(), "0.800ns");
        assert_eq!(Duration::from_ms(2).to_string(), "2.000ms");
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_ns(1), Instant::MAX);
        assert_eq!(
            Instant::ZERO.saturating_since(Instant::from_ns(5)),
            Duration::ZERO
        );
    }
}
