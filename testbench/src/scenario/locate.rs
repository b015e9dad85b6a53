//! Finding the line of a field path such as `clients[0].target` in the text.
//!
//! serde_yaml's `Value` keeps no positions, but its deserializer attaches the
//! position of the node being read to every error raised while reading it. The
//! locator walks the document with a `DeserializeSeed` that follows the path
//! (skipping everything else unread) and raises an error on purpose at the
//! node the path names, or at the deepest node of the path that exists; the
//! error's location is the answer. So the real YAML parser does the work, and
//! every style (block, flow `{ }` / `[ ]` on one or several lines, quoted
//! keys, comments, anchors) is handled alike.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::IssueKind;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Splits `clients[0].target` into `[Key(clients), Index(0), Key(target)]`.
/// Anything unreadable ends the path there.
pub(crate) fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !key.is_empty() {
                    segs.push(Seg::Key(std::mem::take(&mut key)));
                }
            }
            '[' => {
                if !key.is_empty() {
                    segs.push(Seg::Key(std::mem::take(&mut key)));
                }
                let mut digits = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    digits.push(d);
                }
                match digits.parse() {
                    Ok(i) => segs.push(Seg::Index(i)),
                    Err(_) => return segs,
                }
            }
            c => key.push(c),
        }
    }
    if !key.is_empty() {
        segs.push(Seg::Key(key));
    }
    segs
}

const FOUND: &str = "\u{1}found";
const PARENT: &str = "\u{1}parent";

/// Follows `segs`; always ends in an error carrying the position found.
struct Finder<'a> {
    segs: &'a [Seg],
    /// When the last step is a key: stop at the key itself, not its value.
    at_key: bool,
    /// When the last step is a key: pass over this many keys of that name
    /// first (to find a repeated key).
    skip_matches: usize,
}

impl<'de> DeserializeSeed<'de> for Finder<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn here<E: de::Error>(found: bool) -> E {
    E::custom(if found { FOUND } else { PARENT })
}

impl<'de> Visitor<'de> for Finder<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.segs.split_first() else {
            return Err(here(true));
        };
        let Seg::Key(want) = first else {
            return Err(here(false));
        };
        let last = rest.is_empty();
        let mut skip = if last { self.skip_matches } else { 0 };
        loop {
            let probe = last && self.at_key && skip == 0;
            let Some(matched) = map.next_key_seed(KeyProbe { want, probe })? else {
                break;
            };
            if matched && skip == 0 {
                return map.next_value_seed(Finder {
                    segs: rest,
                    at_key: self.at_key,
                    skip_matches: self.skip_matches,
                });
            }
            if matched {
                skip -= 1;
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(here(false))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.segs.split_first() else {
            return Err(here(true));
        };
        let Seg::Index(want) = first else {
            return Err(here(false));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(here(false));
            }
        }
        seq.next_element_seed(Finder {
            segs: rest,
            at_key: self.at_key,
            skip_matches: self.skip_matches,
        })?;
        Err(here(false))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(here(self.segs.is_empty()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(here(self.segs.is_empty()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(here(self.segs.is_empty()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(here(self.segs.is_empty()))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(here(self.segs.is_empty()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(here(self.segs.is_empty()))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(here(self.segs.is_empty()))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(here(self.segs.is_empty()))
    }
}

/// Reads one map key and says whether it is `want`; with `probe`, a match is
/// reported as an error so that it carries the key's own position.
struct KeyProbe<'a> {
    want: &'a str,
    probe: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeyProbe<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        if key == self.want {
            if self.probe {
                Err(here(true))
            } else {
                Ok(true)
            }
        } else {
            Ok(false)
        }
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(IgnoredAny).map(|_| false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
        Ok(false)
    }
}

/// A position: 1-based line and column.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Runs the finder; the position and whether the whole path was found.
fn run(text: &str, segs: &[Seg], at_key: bool) -> Option<(Pos, bool)> {
    run_nth(text, segs, at_key, 0)
}

fn run_nth(text: &str, segs: &[Seg], at_key: bool, skip_matches: usize) -> Option<(Pos, bool)> {
    let err = Finder {
        segs,
        at_key,
        skip_matches,
    }
    .deserialize(serde_yaml::Deserializer::from_str(text))
    .err()?;
    let loc = err.location()?;
    let found = err.to_string().contains(FOUND);
    Some((
        Pos {
            line: loc.line(),
            column: loc.column(),
        },
        found,
    ))
}

/// The position of the node `path` names, or of the deepest part of the path
/// that exists. For a key whose value starts on a later line (a block list or
/// map), the key's own line. `None` only for text that is not YAML.
pub(crate) fn locate(text: &str, path: &str) -> Option<Pos> {
    let segs = parse_path(path);
    let (value, found) = run(text, &segs, false)?;
    if found && matches!(segs.last(), Some(Seg::Key(_))) {
        if let Some((key, true)) = run(text, &segs, true) {
            if key.line != value.line {
                return Some(key);
            }
        }
    }
    Some(value)
}

/// The position of the second `key` of the map at `map_path` (a repeated key).
pub(crate) fn locate_repeated_key(text: &str, map_path: &str, key: &str) -> Option<Pos> {
    let mut segs = parse_path(map_path);
    segs.push(Seg::Key(key.to_string()));
    match run_nth(text, &segs, true, 1) {
        Some((pos, true)) => Some(pos),
        _ => None,
    }
}

#[cfg(test)]
/// Whether the path names a node that exists.
pub(crate) fn exists(text: &str, path: &str) -> bool {
    run(text, &parse_path(path), false).is_some_and(|(_, found)| found)
}

/// The line where the second document of a stream starts (for the
/// "several documents" error, which serde_yaml reports without a position).
pub(crate) fn second_document_line(text: &str) -> Option<usize> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") {
            if seen_content {
                return Some(i + 1);
            }
            seen_content = true;
        } else if !t.is_empty() && !t.trim_start().starts_with('#') {
            seen_content = true;
        }
    }
    None
}

/// A serde_yaml error taken apart.
#[derive(Debug)]
pub(crate) struct SerdeIssue {
    pub pos: Option<Pos>,
    pub path: String,
    pub kind: IssueKind,
    pub message: String,
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']' | '?')
}

/// Removes every ` at line N column M` and ` at position N` from a message.
fn strip_marks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" at ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        if let Some(n) = skip_mark(after) {
            rest = &after[n..];
        } else {
            out.push_str(" at ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Length of `line N column M` or `position N` at the start of `s`.
fn skip_mark(s: &str) -> Option<usize> {
    let digits = |t: &str| t.chars().take_while(char::is_ascii_digit).count();
    if let Some(t) = s.strip_prefix("line ") {
        let a = digits(t);
        let t2 = t[a..].strip_prefix(" column ")?;
        let b = digits(t2);
        (a > 0 && b > 0).then_some(5 + a + 8 + b)
    } else if let Some(t) = s.strip_prefix("position ") {
        let a = digits(t);
        (a > 0).then_some(9 + a)
    } else {
        None
    }
}

/// The first `quoted` name in a message (backticks or double quotes).
pub(crate) fn first_quoted(msg: &str) -> Option<&str> {
    for q in ['`', '"'] {
        if let Some(start) = msg.find(q) {
            let rest = &msg[start + 1..];
            if let Some(end) = rest.find(q) {
                return Some(&rest[..end]);
            }
        }
    }
    None
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Splits serde_yaml's `path: message at line L column C` into its parts and
/// classifies it. `syntax` marks errors of the plain YAML parse.
pub(crate) fn split_serde_error(e: &serde_yaml::Error, syntax: bool) -> SerdeIssue {
    let pos = e.location().map(|l| Pos {
        line: l.line(),
        column: l.column(),
    });
    let text = strip_marks(&e.to_string());
    let (mut path, message) = match text.split_once(": ") {
        Some((p, m)) if !p.is_empty() && p.chars().all(is_path_char) => {
            (p.to_string(), m.to_string())
        }
        _ => (String::new(), text.clone()),
    };
    if path == "." {
        path.clear();
    }
    let kind = if message.starts_with("duplicate entry") {
        IssueKind::Duplicate
    } else if syntax {
        IssueKind::Syntax
    } else if message.starts_with("unknown field") {
        if let Some(k) = first_quoted(&message) {
            path = join(&path, k);
        }
        IssueKind::UnknownField
    } else if message.starts_with("missing field") {
        if let Some(k) = first_quoted(&message) {
            path = join(&path, k);
        }
        IssueKind::MissingField
    } else if message.starts_with("invalid type") || message.starts_with("invalid length") {
        IssueKind::WrongType
    } else if message.starts_with("invalid value: integer") {
        IssueKind::OutOfRange
    } else {
        IssueKind::InvalidValue
    };
    SerdeIssue {
        pos,
        path,
        kind,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\
name: t   # a comment
fabric:
  generation: servernet2
  planes: [x, y]
clients:
  - count: 200
    target: \"198.18.0.10:23\"
  # between items
  - name: second
    target: 198.18.0.11:80
apps:
  - { model: monolithic, port: 23, processors: [0, 1] }
  - {
      model: echo,
      port: 7
    }
";

    fn line(path: &str) -> usize {
        locate(BLOCK, path).unwrap().line
    }

    #[test]
    fn paths_split() {
        assert_eq!(
            parse_path("clients[0].target"),
            vec![
                Seg::Key("clients".into()),
                Seg::Index(0),
                Seg::Key("target".into())
            ]
        );
        assert_eq!(parse_path(""), vec![]);
        assert_eq!(parse_path("a[x].b"), vec![Seg::Key("a".into())]);
    }

    #[test]
    fn block_style() {
        assert_eq!(line("name"), 1);
        assert_eq!(line("fabric"), 2);
        assert_eq!(line("fabric.generation"), 3);
        assert_eq!(line("clients"), 5);
        assert_eq!(line("clients[0]"), 6);
        assert_eq!(line("clients[0].count"), 6);
        assert_eq!(line("clients[0].target"), 7);
        assert_eq!(line("clients[1]"), 9);
        assert_eq!(line("clients[1].target"), 10);
        assert_eq!(locate(BLOCK, "clients[1].target").unwrap().column, 13);
    }

    #[test]
    fn flow_style() {
        assert_eq!(line("fabric.planes"), 4);
        assert_eq!(line("fabric.planes[1]"), 4);
        assert_eq!(locate(BLOCK, "fabric.planes[1]").unwrap().column, 15);
        assert_eq!(line("apps[0]"), 12);
        assert_eq!(line("apps[0].port"), 12);
        assert_eq!(line("apps[0].processors[1]"), 12);
        assert_eq!(line("apps[1]"), 13);
        assert_eq!(line("apps[1].port"), 15);
    }

    #[test]
    fn missing_parts_fall_back_to_the_deepest_existing_node() {
        assert_eq!(line("clients[1].rate"), 9);
        assert_eq!(line("clients[7].target"), 6);
        assert_eq!(line("processors.count"), 1);
        assert_eq!(line("fabric.generation.x"), 3);
        assert!(exists(BLOCK, "clients[1].target"));
        assert!(!exists(BLOCK, "clients[1].rate"));
    }

    #[test]
    fn serde_errors_come_apart() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct C {
            count: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            clients: Vec<C>,
        }
        let e = serde_yaml::from_str::<T>("clients:\n  - count: 1\n  - cuont: 2\n").unwrap_err();
        let s = split_serde_error(&e, false);
        assert_eq!(s.path, "clients[1].cuont");
        assert_eq!(s.kind, IssueKind::UnknownField);
        assert_eq!(s.pos.unwrap().line, 3);
        assert!(
            s.message
                .starts_with("unknown field `cuont`, expected `count`"),
            "{}",
            s.message
        );
        let e = serde_yaml::from_str::<T>("clients:\n  - count: x\n").unwrap_err();
        let s = split_serde_error(&e, false);
        assert_eq!(s.path, "clients[0].count");
        assert_eq!(s.kind, IssueKind::WrongType);
        let e = serde_yaml::from_str::<serde_yaml::Value>("a: [1, 2\nb: 3\n").unwrap_err();
        let s = split_serde_error(&e, true);
        assert_eq!(s.kind, IssueKind::Syntax);
        assert!(!s.message.contains("line"), "{}", s.message);
        assert_eq!(second_document_line("a: 1\n---\nb: 2\n"), Some(2));
        let dup = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n";
        assert_eq!(locate_repeated_key(dup, "b", "c").unwrap().line, 5);
        assert_eq!(locate_repeated_key(dup, "b", "d"), None);
        assert_eq!(second_document_line("---\na: 1\n--- \nb: 2\n"), Some(3));
    }
}
