//! Collecting every shape error (unknown fields, wrong types, bad values) of a
//! file, not just the first.
//!
//! serde stops at the first error, and after an error inside a node the
//! parser's position is undefined, so each pass reads the whole document
//! again: sections and list items before the resume point are skipped
//! unread, everything after it is read with its real type, and the pass stops
//! at its first error. The next pass resumes after the item (or section) that
//! failed. So a file yields one error per bad list item and per bad section,
//! each with serde_yaml's own position and field path.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};

use super::model::{Adapter, App, Client, Expectation, Fabric, Fault, Firmware, Processors, Stack};
use super::units::Duration;

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Section {
    Name,
    Description,
    Seed,
    Duration,
    Fabric,
    Processors,
    Adapters,
    Stack,
    Firmware,
    Apps,
    Clients,
    Faults,
    Expect,
}

#[derive(Deserialize)]
#[serde(transparent)]
struct Name(#[serde(deserialize_with = "super::de::non_empty")] String);

/// Where a pass is: (section entry, list item, inside an item).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Cursor {
    entry: usize,
    item: usize,
    in_item: bool,
}

struct RootPass<'c> {
    resume: (usize, usize),
    at: &'c Cell<Cursor>,
}

impl<'de> DeserializeSeed<'de> for RootPass<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RootPass<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scenario: a map of sections")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut entry = 0usize;
        loop {
            self.at.set(Cursor {
                entry,
                item: 0,
                in_item: false,
            });
            if entry < self.resume.0 {
                if map.next_key::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
                map.next_value::<IgnoredAny>()?;
                entry += 1;
                continue;
            }
            let Some(section) = map.next_key::<Section>()? else {
                return Ok(());
            };
            let skip = if entry == self.resume.0 {
                self.resume.1
            } else {
                0
            };
            match section {
                Section::Name => drop(map.next_value::<Name>()?.0),
                Section::Description => drop(map.next_value::<Option<String>>()?),
                Section::Seed => drop(map.next_value::<u64>()?),
                Section::Duration => drop(map.next_value::<Duration>()?),
                Section::Fabric => drop(map.next_value::<Fabric>()?),
                Section::Processors => drop(map.next_value::<Processors>()?),
                Section::Stack => drop(map.next_value::<Stack>()?),
                Section::Firmware => drop(map.next_value::<Firmware>()?),
                Section::Adapters => {
                    map.next_value_seed(ListFrom::<Adapter>::new(skip, entry, self.at))?;
                }
                Section::Apps => {
                    map.next_value_seed(ListFrom::<App>::new(skip, entry, self.at))?;
                }
                Section::Clients => {
                    map.next_value_seed(ListFrom::<Client>::new(skip, entry, self.at))?;
                }
                Section::Faults => {
                    map.next_value_seed(ListFrom::<Fault>::new(skip, entry, self.at))?;
                }
                Section::Expect => {
                    map.next_value_seed(ListFrom::<Expectation>::new(skip, entry, self.at))?;
                }
            }
            entry += 1;
        }
    }
}

/// Reads a list, skipping the first `skip` items unread.
struct ListFrom<'c, T> {
    skip: usize,
    entry: usize,
    at: &'c Cell<Cursor>,
    ty: PhantomData<T>,
}

impl<'c, T> ListFrom<'c, T> {
    fn new(skip: usize, entry: usize, at: &'c Cell<Cursor>) -> Self {
        ListFrom {
            skip,
            entry,
            at,
            ty: PhantomData,
        }
    }
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for ListFrom<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ListFrom<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut item = 0usize;
        loop {
            self.at.set(Cursor {
                entry: self.entry,
                item,
                in_item: true,
            });
            let more = if item < self.skip {
                seq.next_element::<IgnoredAny>()?.is_some()
            } else {
                seq.next_element::<T>()?.is_some()
            };
            if !more {
                self.at.set(Cursor {
                    entry: self.entry,
                    item,
                    in_item: false,
                });
                return Ok(());
            }
            item += 1;
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Every shape error of `text`, in pass order, at most `max`. Empty when the
/// file deserializes.
pub(crate) fn shape_errors(text: &str, max: usize) -> Vec<serde_yaml::Error> {
    let mut errors = Vec::new();
    let mut resume = (0usize, 0usize);
    while errors.len() < max {
        let at = Cell::new(Cursor::default());
        let pass = RootPass { resume, at: &at };
        match pass.deserialize(serde_yaml::Deserializer::from_str(text)) {
            Ok(()) => break,
            Err(e) => {
                errors.push(e);
                let c = at.get();
                let next = if c.in_item {
                    (c.entry, c.item + 1)
                } else {
                    (c.entry + 1, 0)
                };
                if next <= resume {
                    break;
                }
                resume = next;
            }
        }
    }
    errors
}
