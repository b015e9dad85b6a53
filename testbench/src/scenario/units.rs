//! Values a person writes in a scenario file: durations (`250ns`, `1.5ms`),
//! sizes (`64B`, `1KiB`), bandwidths (`125MB/s`, `10Gbit/s`), rates
//! (`5000/s`, `5k/s`) and probabilities (`0.001`, `0.1%`).
//!
//! Every parser is exact: the number is read as a decimal, never through a
//! float, so `1.5ms` is exactly 1 500 000 000 ps. A value that does not come
//! out as a whole number of the base unit (`0.5ps`, `1.5B`) is refused, as are
//! negative values, overflow, unknown units and a missing unit. Every error
//! lists the accepted units.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{input}`: {problem}; {allowed}")]
pub struct UnitError {
    /// What kind of value was expected (`duration`, `size`, …).
    pub what: &'static str,
    /// The text as written.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
    /// The accepted forms and units.
    pub allowed: &'static str,
}

/// One unit: its spellings and its factor in the base unit.
struct Unit {
    names: &'static [&'static str],
    factor: u128,
}

/// A unit table and the words used in error messages.
struct Kind {
    what: &'static str,
    allowed: &'static str,
    units: &'static [Unit],
    /// The base unit's name, for "not a whole number of …".
    base: &'static str,
}

const DURATION: Kind = Kind {
    what: "duration",
    allowed: "write a number and a unit: ps, ns, us (or µs), ms or s, e.g. 250ns, 10us, 1.5ms, 2s",
    units: &[
        Unit {
            names: &["ps"],
            factor: 1,
        },
        Unit {
            names: &["ns"],
            factor: 1_000,
        },
        Unit {
            names: &["us", "µs", "μs"],
            factor: 1_000_000,
        },
        Unit {
            names: &["ms"],
            factor: 1_000_000_000,
        },
        Unit {
            names: &["s"],
            factor: 1_000_000_000_000,
        },
    ],
    base: "picoseconds",
};

const SIZE: Kind = Kind {
    what: "size",
    allowed: "write a number and a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 64B, 1KiB, 64MiB",
    units: &[
        Unit {
            names: &["B"],
            factor: 1,
        },
        Unit {
            names: &["KB", "kB"],
            factor: 1_000,
        },
        Unit {
            names: &["MB"],
            factor: 1_000_000,
        },
        Unit {
            names: &["GB"],
            factor: 1_000_000_000,
        },
        Unit {
            names: &["TB"],
            factor: 1_000_000_000_000,
        },
        Unit {
            names: &["KiB"],
            factor: 1 << 10,
        },
        Unit {
            names: &["MiB"],
            factor: 1 << 20,
        },
        Unit {
            names: &["GiB"],
            factor: 1 << 30,
        },
        Unit {
            names: &["TiB"],
            factor: 1 << 40,
        },
    ],
    base: "bytes",
};

const BANDWIDTH: Kind = Kind {
    what: "bandwidth",
    allowed: "write a number and a unit: bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s (also bps, kbps, Mbps, Gbps) or B/s, KB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s, e.g. 125MB/s, 1Gbit/s, 10Gbit/s",
    units: &[
        Unit {
            names: &["bit/s", "bps", "b/s"],
            factor: 1,
        },
        Unit {
            names: &["kbit/s", "Kbit/s", "kbps", "Kbps", "kb/s"],
            factor: 1_000,
        },
        Unit {
            names: &["Mbit/s", "Mbps", "Mb/s"],
            factor: 1_000_000,
        },
        Unit {
            names: &["Gbit/s", "Gbps", "Gb/s"],
            factor: 1_000_000_000,
        },
        Unit {
            names: &["Tbit/s", "Tbps", "Tb/s"],
            factor: 1_000_000_000_000,
        },
        Unit {
            names: &["B/s"],
            factor: 8,
        },
        Unit {
            names: &["KB/s", "kB/s"],
            factor: 8_000,
        },
        Unit {
            names: &["MB/s"],
            factor: 8_000_000,
        },
        Unit {
            names: &["GB/s"],
            factor: 8_000_000_000,
        },
        Unit {
            names: &["KiB/s"],
            factor: 8 << 10,
        },
        Unit {
            names: &["MiB/s"],
            factor: 8 << 20,
        },
        Unit {
            names: &["GiB/s"],
            factor: 8 << 30,
        },
    ],
    base: "bits per second",
};

/// Rates are kept in events per 1000 seconds (millihertz), so `0.5/s` is exact.
const RATE: Kind = Kind {
    what: "rate",
    allowed: "write a count per time: N/s, N/ms or N/us, where N may end in k (thousand) or M (million), e.g. 5000/s, 5k/s, 0.5/s",
    units: &[
        Unit {
            names: &["/s"],
            factor: 1_000,
        },
        Unit {
            names: &["k/s"],
            factor: 1_000_000,
        },
        Unit {
            names: &["M/s"],
            factor: 1_000_000_000,
        },
        Unit {
            names: &["/ms"],
            factor: 1_000_000,
        },
        Unit {
            names: &["k/ms"],
            factor: 1_000_000_000,
        },
        Unit {
            names: &["/us", "/µs", "/μs"],
            factor: 1_000_000_000,
        },
    ],
    base: "thousandths of an event per second",
};

/// Reads `<decimal number><optional spaces><unit>` exactly into the base unit.
fn parse_with_units(kind: &Kind, input: &str) -> Result<u64, UnitError> {
    let err = |problem: String| UnitError {
        what: kind.what,
        input: input.to_string(),
        problem,
        allowed: kind.allowed,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(err("it is empty".into()));
    }
    if text.starts_with('-') {
        return Err(err(format!("a {} cannot be negative", kind.what)));
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(err("it does not start with a number".into()));
    }
    let (mantissa, decimals) = parse_decimal(number).map_err(err)?;
    if unit.is_empty() {
        return Err(err("the unit is missing".into()));
    }
    let Some(found) = kind.units.iter().find(|u| u.names.contains(&unit)) else {
        return Err(err(format!("unknown unit `{unit}`")));
    };
    let scaled = mantissa
        .checked_mul(found.factor)
        .ok_or_else(|| err("the value is too large".into()))?;
    let divisor = 10u128.pow(decimals);
    if scaled % divisor != 0 {
        return Err(err(format!("it is not a whole number of {}", kind.base)));
    }
    u64::try_from(scaled / divisor).map_err(|_| err("the value is too large".into()))
}

/// A decimal `123.456` as (123456, 3). Underscores group digits.
fn parse_decimal(number: &str) -> Result<(u128, u32), String> {
    // Trailing zeros after the point change nothing.
    let number = if number.contains('.') {
        number.trim_end_matches(['0', '_'])
    } else {
        number
    };
    let mut mantissa: u128 = 0;
    let mut decimals: u32 = 0;
    let mut seen_point = false;
    let mut digits = 0usize;
    for c in number.chars() {
        match c {
            '_' => {}
            '.' if !seen_point => seen_point = true,
            '.' => return Err("the number has two decimal points".into()),
            d => {
                let v = u128::from(d.to_digit(10).unwrap_or(0));
                digits += 1;
                if mantissa == 0 && v == 0 && !seen_point {
                    continue;
                }
                if seen_point {
                    decimals += 1;
                }
                // 30 significant digits keep mantissa * factor inside u128.
                if decimals > 24 || mantissa >= 10u128.pow(24) {
                    return Err("the value is too large or too precise".into());
                }
                mantissa = mantissa * 10 + v;
            }
        }
    }
    if digits == 0 {
        return Err("it does not start with a number".into());
    }
    Ok((mantissa, decimals))
}

/// Formats `value` in the largest unit of the list (largest first, the last
/// of factor 1) in which it is exact with at most three decimals.
fn format_exact(value: u64, units: &[(&str, u64)], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for &(name, factor) in units {
        let thousandths = u128::from(value) * 1_000;
        let factor = u128::from(factor);
        if u128::from(value) >= factor && thousandths % factor == 0 {
            let t = thousandths / factor;
            let (whole, frac) = (t / 1_000, t % 1_000);
            if frac == 0 {
                return write!(f, "{whole}{name}");
            }
            let mut digits = format!("{frac:03}");
            while digits.ends_with('0') {
                digits.pop();
            }
            return write!(f, "{whole}.{digits}{name}");
        }
    }
    write!(f, "{value}{}", units.last().map_or("", |u| u.0))
}

/// A span of virtual time in picoseconds, written `250ns`, `10us`, `1.5ms`, `2s`.
/// A bare `0` is accepted (zero needs no unit).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);

    /// From picoseconds.
    pub const fn from_ps(ps: u64) -> Self {
        Duration(ps)
    }
    /// From nanoseconds.
    pub const fn from_ns(ns: u64) -> Self {
        Duration(ns * 1_000)
    }
    /// From microseconds.
    pub const fn from_us(us: u64) -> Self {
        Duration(us * 1_000_000)
    }
    /// From milliseconds.
    pub const fn from_ms(ms: u64) -> Self {
        Duration(ms * 1_000_000_000)
    }
    /// In picoseconds.
    pub const fn as_ps(self) -> u64 {
        self.0
    }
    /// In whole nanoseconds (rounded down).
    pub const fn as_ns(self) -> u64 {
        self.0 / 1_000
    }
    /// The same span as the fabric's virtual-time type.
    pub const fn to_fabric(self) -> snet_fabric::time::Duration {
        snet_fabric::time::Duration::from_ps(self.0)
    }
}

impl From<snet_fabric::time::Duration> for Duration {
    fn from(d: snet_fabric::time::Duration) -> Self {
        Duration(d.as_ps())
    }
}

impl From<Duration> for snet_fabric::time::Duration {
    fn from(d: Duration) -> Self {
        d.to_fabric()
    }
}

impl FromStr for Duration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        if s.trim() == "0" {
            return Ok(Duration::ZERO);
        }
        parse_with_units(&DURATION, s).map(Duration)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        format_exact(
            self.0,
            &[
                ("s", 1_000_000_000_000),
                ("ms", 1_000_000_000),
                ("us", 1_000_000),
                ("ns", 1_000),
                ("ps", 1),
            ],
            f,
        )
    }
}

/// An amount of memory or data in bytes, written `64B`, `1KiB`, `64MiB`,
/// `1GiB`, or `1KB` (= 1000 bytes). A bare `0` is accepted.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(u64);

impl Size {
    /// From bytes.
    pub const fn from_bytes(bytes: u64) -> Self {
        Size(bytes)
    }
    /// In bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        if s.trim() == "0" {
            return Ok(Size(0));
        }
        parse_with_units(&SIZE, s).map(Size)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0B");
        }
        format_exact(
            self.0,
            &[
                ("TiB", 1 << 40),
                ("GiB", 1 << 30),
                ("MiB", 1 << 20),
                ("KiB", 1 << 10),
                ("B", 1),
            ],
            f,
        )
    }
}

/// A data rate in bits per second, written `125MB/s`, `1Gbit/s`,
/// `10Gbit/s`, `100Mbit/s`. Never zero.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bandwidth(u64);

impl Bandwidth {
    /// From bits per second; `None` for zero.
    pub const fn from_bits_per_s(bits: u64) -> Option<Self> {
        if bits == 0 {
            None
        } else {
            Some(Bandwidth(bits))
        }
    }
    /// From bits per second, for constants known to be nonzero (zero becomes 1 bit/s).
    pub(crate) const fn from_nonzero_bits(bits: u64) -> Self {
        Bandwidth(if bits == 0 { 1 } else { bits })
    }
    /// From MB/s (10^6 bytes per second); `None` for zero or overflow.
    pub const fn from_mb_per_s(mb: u64) -> Option<Self> {
        match mb.checked_mul(8_000_000) {
            Some(bits) => Self::from_bits_per_s(bits),
            None => None,
        }
    }
    /// Bits per second.
    pub const fn bits_per_s(self) -> u64 {
        self.0
    }
    /// Bytes per second (rounded down).
    pub const fn bytes_per_s(self) -> u64 {
        self.0 / 8
    }
    /// The fabric's bandwidth type (bytes per second); `None` below 8 bit/s.
    pub const fn to_fabric(self) -> Option<snet_fabric::time::Bandwidth> {
        snet_fabric::time::Bandwidth::from_bytes_per_s(self.bytes_per_s())
    }
}

impl FromStr for Bandwidth {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let bits = parse_with_units(&BANDWIDTH, s)?;
        Bandwidth::from_bits_per_s(bits).ok_or_else(|| UnitError {
            what: BANDWIDTH.what,
            input: s.to_string(),
            problem: "a bandwidth must be more than zero".into(),
            allowed: BANDWIDTH.allowed,
        })
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.0;
        if bits % 1_000_000_000 == 0 {
            write!(f, "{}Gbit/s", bits / 1_000_000_000)
        } else if bits % 8_000_000 == 0 {
            write!(f, "{}MB/s", bits / 8_000_000)
        } else {
            format_exact(
                bits,
                &[("Mbit/s", 1_000_000), ("kbit/s", 1_000), ("bit/s", 1)],
                f,
            )
        }
    }
}

/// How often something happens, written `5000/s`, `5k/s`, `2/ms`, `0.5/s`.
/// Kept exactly, in thousandths of an event per second. Never zero.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// From events per second; `None` for zero or overflow.
    pub const fn per_second(n: u64) -> Option<Self> {
        match n.checked_mul(1_000) {
            Some(0) | None => None,
            Some(m) => Some(Rate(m)),
        }
    }
    /// In thousandths of an event per second.
    pub const fn millihertz(self) -> u64 {
        self.0
    }
    /// Events per second.
    pub fn as_per_second(self) -> f64 {
        self.0 as f64 / 1_000.0
    }
    /// The mean time between two events (rounded to the picosecond).
    pub const fn mean_interval(self) -> Duration {
        // 1 / (mhz / 1000) s = 1e15 / mhz ps
        Duration((1_000_000_000_000_000u128 / self.0 as u128) as u64)
    }
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let mhz = parse_with_units(&RATE, s)?;
        if mhz == 0 {
            return Err(UnitError {
                what: RATE.what,
                input: s.to_string(),
                problem: "a rate must be more than zero".into(),
                allowed: RATE.allowed,
            });
        }
        Ok(Rate(mhz))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mhz = self.0;
        if mhz % 1_000 == 0 {
            let n = mhz / 1_000;
            if n >= 1_000 && n % 1_000 == 0 {
                write!(f, "{}k/s", n / 1_000)
            } else {
                write!(f, "{n}/s")
            }
        } else {
            let mut frac = format!("{:03}", mhz % 1_000);
            while frac.ends_with('0') {
                frac.pop();
            }
            write!(f, "{}.{frac}/s", mhz / 1_000)
        }
    }
}

const PROBABILITY_ALLOWED: &str =
    "write a number from 0 to 1 or a percentage, e.g. 0.001, 1e-6, 0.1%";

/// A probability or fraction between 0 and 1, written `0.001`, `1e-6` or `0.1%`.
#[derive(Copy, Clone, Debug, Default, PartialEq, PartialOrd)]
pub struct Probability(f64);

impl Probability {
    /// Never.
    pub const ZERO: Probability = Probability(0.0);

    /// From a value in `0.0..=1.0`; `None` outside it or for NaN.
    pub fn new(p: f64) -> Option<Self> {
        if (0.0..=1.0).contains(&p) {
            Some(Probability(p))
        } else {
            None
        }
    }
    /// The value, in `0.0..=1.0`.
    pub const fn get(self) -> f64 {
        self.0
    }
    fn from_f64(input: &str, p: f64) -> Result<Self, UnitError> {
        Probability::new(p).ok_or_else(|| UnitError {
            what: "probability",
            input: input.to_string(),
            problem: if p.is_nan() {
                "it is not a number".into()
            } else if p < 0.0 {
                "a probability cannot be negative".into()
            } else {
                "a probability cannot be more than 1 (100%)".into()
            },
            allowed: PROBABILITY_ALLOWED,
        })
    }
}

impl FromStr for Probability {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let text = s.trim();
        let (number, scale) = match text.strip_suffix('%') {
            Some(n) => (n.trim_end(), 100.0),
            None => (text, 1.0),
        };
        let bad = |problem: &str| UnitError {
            what: "probability",
            input: s.to_string(),
            problem: problem.into(),
            allowed: PROBABILITY_ALLOWED,
        };
        if number.is_empty()
            || !number
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        {
            return Err(
                if number.chars().any(|c| c.is_alphabetic()) && scale == 1.0 {
                    bad("unknown unit (only % is accepted)")
                } else {
                    bad("it is not a number")
                },
            );
        }
        let p: f64 = number.parse().map_err(|_| bad("it is not a number"))?;
        Probability::from_f64(s, p / scale)
    }
}

impl fmt::Display for Probability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

// ---- serde ----------------------------------------------------------------

/// A visitor for unit values: strings are parsed, a bare integer 0 is
/// accepted when `zero_ok`, other bare numbers are refused as missing a unit.
struct UnitVisitor<T> {
    expecting: &'static str,
    zero: Option<T>,
}

impl<'de, T> Visitor<'de> for UnitVisitor<T>
where
    T: FromStr<Err = UnitError>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(|e: UnitError| E::custom(e))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        match self.zero {
            Some(zero) if v == 0 => Ok(zero),
            _ => self.visit_str(&v.to_string()),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        if v >= 0 {
            self.visit_u64(v as u64)
        } else {
            self.visit_str(&v.to_string())
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

macro_rules! serde_via_str {
    ($ty:ty, $expecting:expr, $zero:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(UnitVisitor {
                    expecting: $expecting,
                    zero: $zero,
                })
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

serde_via_str!(
    Duration,
    "a duration such as 250ns, 10us, 1.5ms or 2s",
    Some(Duration::ZERO)
);
serde_via_str!(Size, "a size such as 64B, 1KiB or 64MiB", Some(Size(0)));
serde_via_str!(Bandwidth, "a bandwidth such as 125MB/s or 1Gbit/s", None);
serde_via_str!(Rate, "a rate such as 5000/s or 5k/s", None);

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Probability;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a probability such as 0.001, 1e-6 or 0.1%")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Probability, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Probability, E> {
                Probability::from_f64(&v.to_string(), v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Probability, E> {
                Probability::from_f64(&v.to_string(), v as f64).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Probability, E> {
                Probability::from_f64(&v.to_string(), v as f64).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Probability {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> u64 {
        s.parse::<Duration>().unwrap().as_ps()
    }

    #[test]
    fn durations_parse_exactly() {
        assert_eq!(dur("250ns"), 250_000);
        assert_eq!(dur("10us"), 10_000_000);
        assert_eq!(dur("10µs"), 10_000_000);
        assert_eq!(dur("1.5ms"), 1_500_000_000);
        assert_eq!(dur("2s"), 2_000_000_000_000);
        assert_eq!(dur("800ps"), 800);
        assert_eq!(dur("0.8ns"), 800);
        assert_eq!(dur(" 3 ms "), 3_000_000_000);
        assert_eq!(dur("0"), 0);
        assert_eq!(dur("0ms"), 0);
        assert_eq!(dur("1_000ns"), 1_000_000);
        assert_eq!(Duration::from_ms(2).to_fabric().as_ps(), 2_000_000_000);
    }

    #[test]
    fn durations_refuse_bad_input_and_list_units() {
        for (input, problem) in [
            ("-5ms", "negative"),
            ("10", "unit is missing"),
            ("10 parsecs", "unknown unit `parsecs`"),
            ("ms", "does not start with a number"),
            ("", "empty"),
            ("0.5ps", "whole number of picoseconds"),
            ("1.2.3ms", "two decimal points"),
            ("99999999s", "too large"),
            ("1000000000000000000000000000000s", "too large"),
        ] {
            let e = input.parse::<Duration>().unwrap_err();
            assert!(e.problem.contains(problem), "{input}: {e}");
            assert!(e.to_string().contains("ps, ns, us"), "{e}");
        }
    }

    #[test]
    fn durations_display_in_the_largest_exact_unit() {
        assert_eq!(Duration::from_ps(1_500_000_000).to_string(), "1.5ms");
        assert_eq!(Duration::from_ns(250).to_string(), "250ns");
        assert_eq!(Duration::from_ps(800).to_string(), "800ps");
        assert_eq!(Duration::from_ms(2000).to_string(), "2s");
        assert_eq!(Duration::ZERO.to_string(), "0s");
        for s in ["1.5ms", "250ns", "800ps", "2s", "1.000001ms", "3.25us"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d, "{s}");
        }
    }

    #[test]
    fn sizes_parse() {
        let b = |s: &str| s.parse::<Size>().unwrap().bytes();
        assert_eq!(b("64B"), 64);
        assert_eq!(b("1KiB"), 1024);
        assert_eq!(b("1KB"), 1000);
        assert_eq!(b("1kB"), 1000);
        assert_eq!(b("64MiB"), 64 << 20);
        assert_eq!(b("1GiB"), 1 << 30);
        assert_eq!(b("1.5KiB"), 1536);
        assert_eq!(b("0"), 0);
        assert_eq!(Size::from_bytes(64 << 20).to_string(), "64MiB");
        assert_eq!(Size::from_bytes(1000).to_string(), "1000B");
        assert_eq!(Size::from_bytes(1536).to_string(), "1.5KiB");
    }

    #[test]
    fn sizes_refuse_bad_input() {
        for (input, problem) in [
            ("64", "unit is missing"),
            ("64b", "unknown unit `b`"),
            ("-1KiB", "negative"),
            ("1.5B", "whole number of bytes"),
            ("16777216TiB", "too large"),
            ("KiB", "does not start with a number"),
        ] {
            let e = input.parse::<Size>().unwrap_err();
            assert!(e.problem.contains(problem), "{input}: {e}");
            assert!(e.to_string().contains("KiB, MiB"), "{e}");
        }
    }

    #[test]
    fn bandwidths_parse() {
        let bw = |s: &str| s.parse::<Bandwidth>().unwrap().bits_per_s();
        assert_eq!(bw("125MB/s"), 1_000_000_000);
        assert_eq!(bw("1Gbit/s"), 1_000_000_000);
        assert_eq!(bw("10Gbit/s"), 10_000_000_000);
        assert_eq!(bw("100Mbit/s"), 100_000_000);
        assert_eq!(bw("100Mbps"), 100_000_000);
        assert_eq!(bw("1KiB/s"), 8192);
        assert_eq!(
            "50MB/s"
                .parse::<Bandwidth>()
                .unwrap()
                .to_fabric()
                .unwrap()
                .bytes_per_s(),
            50_000_000
        );
        assert_eq!(Bandwidth::from_mb_per_s(50).unwrap().to_string(), "50MB/s");
        assert_eq!(
            Bandwidth::from_bits_per_s(10_000_000_000)
                .unwrap()
                .to_string(),
            "10Gbit/s"
        );
        assert_eq!(
            Bandwidth::from_bits_per_s(100_000_000).unwrap().to_string(),
            "100Mbit/s"
        );
    }

    #[test]
    fn bandwidths_refuse_bad_input() {
        for (input, problem) in [
            ("0Gbit/s", "more than zero"),
            ("1G", "unknown unit `G`"),
            ("125", "unit is missing"),
            ("-1Mbit/s", "negative"),
            ("0.1bit/s", "whole number"),
            ("99999999999GB/s", "too large"),
        ] {
            let e = input.parse::<Bandwidth>().unwrap_err();
            assert!(e.problem.contains(problem), "{input}: {e}");
            assert!(e.to_string().contains("Gbit/s"), "{e}");
        }
    }

    #[test]
    fn rates_parse() {
        let r = |s: &str| s.parse::<Rate>().unwrap();
        assert_eq!(r("5000/s").millihertz(), 5_000_000);
        assert_eq!(r("5k/s"), r("5000/s"));
        assert_eq!(r("2/ms"), r("2000/s"));
        assert_eq!(r("1/us"), r("1M/s"));
        assert_eq!(r("0.5/s").millihertz(), 500);
        assert_eq!(r("5000/s").mean_interval(), Duration::from_us(200));
        assert_eq!(r("5000/s").to_string(), "5k/s");
        assert_eq!(r("0.25/s").to_string(), "0.25/s");
        assert_eq!(r("250/s").to_string(), "250/s");
    }

    #[test]
    fn rates_refuse_bad_input() {
        for (input, problem) in [
            ("5000", "unit is missing"),
            ("5000/h", "unknown unit `/h`"),
            ("0/s", "more than zero"),
            ("-3/s", "negative"),
            ("0.0001/s", "whole number"),
        ] {
            let e = input.parse::<Rate>().unwrap_err();
            assert!(e.problem.contains(problem), "{input}: {e}");
            assert!(e.to_string().contains("N/s"), "{e}");
        }
    }

    #[test]
    fn probabilities_parse() {
        let p = |s: &str| s.parse::<Probability>().unwrap().get();
        assert_eq!(p("0.001"), 0.001);
        assert_eq!(p("0.1%"), 0.001);
        assert_eq!(p("1e-6"), 1e-6);
        assert_eq!(p("1"), 1.0);
        assert_eq!(p("100%"), 1.0);
        assert_eq!(p("0"), 0.0);
        for (input, problem) in [
            ("-0.1", "negative"),
            ("1.5", "more than 1"),
            ("150%", "more than 1"),
            ("abc", "unknown unit"),
            ("", "not a number"),
            ("0.1 per mille", "unknown unit"),
            ("1e", "not a number"),
        ] {
            let e = input.parse::<Probability>().unwrap_err();
            assert!(e.problem.contains(problem), "{input}: {e}");
            assert!(e.to_string().contains("percentage"), "{e}");
        }
        assert!(Probability::new(f64::NAN).is_none());
    }

    #[test]
    fn serde_reads_strings_and_bare_zero() {
        #[derive(Deserialize)]
        struct T {
            d: Duration,
            s: Size,
            p: Probability,
            q: Probability,
        }
        let t: T = serde_yaml::from_str("{d: 0, s: 1KiB, p: 0.5, q: 1%}").unwrap();
        assert_eq!(t.d, Duration::ZERO);
        assert_eq!(t.s.bytes(), 1024);
        assert_eq!(t.p.get(), 0.5);
        assert_eq!(t.q.get(), 0.01);
        let e = serde_yaml::from_str::<T>("{d: 5, s: 1KiB, p: 0, q: 0}")
            .err()
            .unwrap();
        assert!(e.to_string().contains("unit is missing"), "{e}");
        assert!(e.location().is_some());
        let e = serde_yaml::from_str::<T>("{d: 1ms, s: 1KiB, p: 2, q: 0}")
            .err()
            .unwrap();
        assert!(e.to_string().contains("more than 1"), "{e}");
    }
}
