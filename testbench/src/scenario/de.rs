//! Small serde helpers that keep serde_yaml's error locations: every error is
//! raised inside a `deserialize_*` call of the node it is about, so serde_yaml
//! attaches that node's line, column and field path to it.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};

/// Deserializes a `FromStr` type from a string scalar (numbers are turned
/// into their text first, so `router: 3` and `router: "3"` read alike).
pub(crate) fn from_str<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    struct V<T>(&'static str, PhantomData<T>);
    impl<T> Visitor<'_> for V<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_any(V(expecting, PhantomData))
}

/// Implements `Deserialize` for a `FromStr` type.
macro_rules! deserialize_from_str {
    ($ty:ty, $expecting:expr) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                crate::scenario::de::from_str(d, $expecting)
            }
        }
    };
}
pub(crate) use deserialize_from_str;

/// One value or a list of values: `planes: x` or `planes: [x, y]`.
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("one value or a list of values")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            let list: Vec<T> = serde::Deserialize::deserialize(SeqAccessDeserializer::new(seq))?;
            if list.is_empty() {
                return Err(de::Error::custom(
                    "the list is empty: give at least one value",
                ));
            }
            Ok(list)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|t| vec![t])
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|t| vec![t])
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|t| vec![t])
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|t| vec![t])
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|t| vec![t])
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(|t| vec![t])
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// A string that is not empty (names).
pub(crate) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a name (a non-empty string)")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.trim().is_empty() {
                Err(E::custom("a name cannot be empty"))
            } else {
                Ok(v.to_string())
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

/// Reads a map as `Raw`, then converts it with `check`; a refusal is reported
/// at the map itself (its first line), with the map's field path.
pub(crate) fn checked_map<'de, D, Raw, Out>(
    d: D,
    expecting: &'static str,
    check: fn(Raw) -> Result<Out, String>,
) -> Result<Out, D::Error>
where
    D: Deserializer<'de>,
    Raw: serde::Deserialize<'de>,
{
    struct V<Raw, Out> {
        expecting: &'static str,
        check: fn(Raw) -> Result<Out, String>,
    }
    impl<'de, Raw: serde::Deserialize<'de>, Out> Visitor<'de> for V<Raw, Out> {
        type Value = Out;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Out, A::Error> {
            let raw = Raw::deserialize(MapAccessDeserializer::new(map))?;
            (self.check)(raw).map_err(de::Error::custom)
        }
    }
    d.deserialize_map(V { expecting, check })
}
