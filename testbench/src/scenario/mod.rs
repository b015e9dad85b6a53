//! Scenario files: the YAML that describes a cluster, its workload, its faults
//! and what must hold, and the loader that reads and checks it.
//!
//! ```
//! use snet_testbench::scenario::Scenario;
//!
//! let s = Scenario::from_yaml_str(
//!     "name: telnet\n\
//!      apps: [{ model: monolithic, port: 23 }]\n\
//!      clients: [{ count: 200, target: \"198.18.0.10:23\", rate: 5k/s }]\n",
//!     "telnet.yaml",
//! )
//! .unwrap();
//! assert_eq!(s.processors.count, 4);
//! assert_eq!(s.adapters[0].name, "lan0");
//!
//! let e = Scenario::from_yaml_str("name: x\nprocesors: { count: 2 }\n", "x.yaml").unwrap_err();
//! assert!(e.to_string().starts_with("x.yaml:2:1: procesors: unknown field `procesors`"));
//! ```
//!
//! Loading runs in stages, and every stage reports all it finds:
//! 1. YAML syntax (and UTF-8), with the parser's position;
//! 2. shape: unknown fields, wrong types, values that cannot be read (units,
//!    names, addresses) — serde_yaml's position and field path, one error per
//!    bad list item or section;
//! 3. meaning: ranges, references between sections, contradictions — the
//!    field path, turned into a line by walking the document.
//!
//! A later stage runs only when the earlier ones found nothing. The format is
//! documented field by field in `docs/scenario-reference.md`.

use std::collections::BTreeSet;
use std::path::Path;

mod de;
pub mod error;
pub mod expr;
pub mod layout;
mod locate;
pub mod model;
mod shape;
pub mod units;
mod validate;

pub use error::{Issue, IssueKind, ScenarioError};
pub use expr::Expr;
pub use layout::Layout;
pub use model::*;
pub use units::{Bandwidth, Duration, Probability, Rate, Size, UnitError};

/// Most issues reported for one file.
pub const MAX_ISSUES: usize = 100;

impl Scenario {
    /// Reads and checks a scenario file. Relative paths inside it (the
    /// firmware filter) are taken from the file's folder.
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ScenarioError::Read {
            file: file.clone(),
            source,
        })?;
        Scenario::from_yaml_slice(&bytes, &file)
    }

    /// Reads and checks a scenario from text. `file_name` names it in errors,
    /// and its folder is where relative paths inside it are taken from.
    pub fn from_yaml_str(text: &str, file_name: &str) -> Result<Scenario, ScenarioError> {
        let base = Path::new(file_name).parent().unwrap_or(Path::new(""));
        load_text(text, file_name, base)
    }

    /// Like [`Scenario::from_yaml_str`], for bytes that may not be UTF-8.
    pub fn from_yaml_slice(bytes: &[u8], file_name: &str) -> Result<Scenario, ScenarioError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Scenario::from_yaml_str(text, file_name),
            Err(e) => {
                let good = &bytes[..e.valid_up_to()];
                let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
                let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
                Err(ScenarioError::Invalid {
                    file: file_name.to_string(),
                    issues: vec![Issue {
                        file: file_name.to_string(),
                        line,
                        column: Some(column),
                        path: String::new(),
                        kind: IssueKind::Syntax,
                        message: format!(
                            "the file is not UTF-8 text (byte 0x{:02x})",
                            bytes[e.valid_up_to()]
                        ),
                    }],
                })
            }
        }
    }

    /// The fabric's routers and links (see [`layout`] for the numbering).
    /// Always `Ok` for a loaded scenario; an error lists what is wrong with a
    /// scenario changed by hand.
    pub fn layout(&self) -> Result<Layout, String> {
        layout::build(self).map_err(|problems| {
            if problems.is_empty() {
                "the fabric or processor counts are out of range".to_string()
            } else {
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        })
    }

    /// The processor a fault target `processor running APP` stands for: the
    /// lowest-numbered processor where an app with that name or model listens.
    pub fn processor_running(&self, app: &str) -> Option<u32> {
        validate::selector_processor(self, app)
    }

    /// A one-line description: sizes of each section and the fabric.
    pub fn summary(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let clients: u64 = self.clients.iter().map(|c| u64::from(c.count)).sum();
        let links = self
            .layout()
            .map(|l| format!(", {}", plural(l.links.len(), "link", "links")))
            .unwrap_or_default();
        format!(
            "{}, {}, {}, {} in {}, {}, {}; {} fabric, planes {}, {}{}; {} stack; {}",
            plural(self.processors.count as usize, "processor", "processors"),
            plural(self.adapters.len(), "adapter", "adapters"),
            plural(self.apps.len(), "app", "apps"),
            plural(clients as usize, "client", "clients"),
            plural(self.clients.len(), "population", "populations"),
            plural(self.faults.len(), "fault", "faults"),
            plural(self.expect.len(), "expectation", "expectations"),
            self.fabric.generation,
            layout::plane_list(&self.fabric.planes),
            self.fabric.shape(),
            links,
            match self.stack {
                Stack::Parallel => "parallel",
                Stack::Conventional { .. } => "conventional",
            },
            self.duration,
        )
    }

    /// Fills the defaults that depend on other fields.
    fn resolve(&mut self, base: &Path) {
        if self.adapters.is_empty() {
            self.adapters.push(Adapter::default_lan0());
        }
        let mut planes = self.fabric.planes.clone();
        planes.sort();
        planes.dedup();
        let mut macs: BTreeSet<MacAddr> = self
            .adapters
            .iter()
            .map(|a| a.mac)
            .filter(|m| *m != MacAddr::UNSET)
            .collect();
        let mut next: u32 = 0x10;
        for a in &mut self.adapters {
            if a.fabric_ports.is_empty() {
                a.fabric_ports = planes.clone();
            }
            if a.mac == MacAddr::UNSET {
                while next <= 0xffff {
                    let m = MacAddr([0x02, 0, 0, 0, (next >> 8) as u8, next as u8]);
                    next += 1;
                    if macs.insert(m) {
                        a.mac = m;
                        break;
                    }
                }
            }
        }
        let mut names: BTreeSet<String> = self
            .apps
            .iter()
            .filter(|a| !a.name.is_empty())
            .map(|a| a.name.clone())
            .collect();
        for (i, a) in self.apps.iter_mut().enumerate() {
            if a.name.is_empty() {
                let base = format!("{}-{}", a.model, a.port);
                let name = if names.contains(&base) {
                    format!("{base}-{i}")
                } else {
                    base
                };
                names.insert(name.clone());
                a.name = name;
            }
        }
        let mut names: BTreeSet<String> = self
            .clients
            .iter()
            .filter(|c| !c.name.is_empty())
            .map(|c| c.name.clone())
            .collect();
        for (i, c) in self.clients.iter_mut().enumerate() {
            if c.name.is_empty() {
                let mut name = format!("clients{i}");
                while names.contains(&name) {
                    name.push('_');
                }
                names.insert(name.clone());
                c.name = name;
            }
        }
        if let Some(f) = &self.firmware.filter {
            self.firmware.filter = Some(base.join(f));
        }
    }
}

fn issue_at(file: &str, text: &str, path: String, kind: IssueKind, message: String) -> Issue {
    let pos = locate::locate(text, &path);
    Issue {
        file: file.to_string(),
        line: pos.map_or(1, |p| p.line.max(1)),
        column: pos.map(|p| p.column.max(1)),
        path,
        kind,
        message,
    }
}

fn issue_from_serde(file: &str, text: &str, e: &serde_yaml::Error, syntax: bool) -> Issue {
    let mut s = locate::split_serde_error(e, syntax);
    if s.kind == IssueKind::Duplicate {
        // Point at the repeated key, not at the start of its map.
        if let Some(key) = locate::first_quoted(&s.message) {
            if let Some(p) = locate::locate_repeated_key(text, &s.path, key) {
                s.pos = Some(p);
            }
            s.path = if s.path.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", s.path)
            };
        }
    }
    let (line, column) = match s.pos {
        Some(p) => (p.line.max(1), Some(p.column.max(1))),
        None if s.message.contains("more than one document") => {
            (locate::second_document_line(text).unwrap_or(1), None)
        }
        None => match locate::locate(text, &s.path) {
            Some(p) if !s.path.is_empty() => (p.line.max(1), Some(p.column.max(1))),
            _ => (1, None),
        },
    };
    let message = if s.message.contains("more than one document") {
        "a scenario file holds one YAML document: remove the second `---`".to_string()
    } else {
        s.message
    };
    Issue {
        file: file.to_string(),
        line,
        column,
        path: s.path,
        kind: s.kind,
        message,
    }
}

fn invalid(file: &str, mut issues: Vec<Issue>) -> ScenarioError {
    issues.sort_by_key(|a| (a.line, a.column));
    issues.dedup();
    issues.truncate(MAX_ISSUES);
    ScenarioError::Invalid {
        file: file.to_string(),
        issues,
    }
}

fn type_name(v: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value;
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

fn load_text(text: &str, file: &str, base: &Path) -> Result<Scenario, ScenarioError> {
    // 1. Syntax.
    let root: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(invalid(file, vec![issue_from_serde(file, text, &e, true)])),
    };
    let mut issues = Vec::new();
    match &root {
        serde_yaml::Value::Mapping(m) => {
            if m.get("name").is_none() {
                issues.push(Issue {
                    file: file.to_string(),
                    line: 1,
                    column: None,
                    path: "name".into(),
                    kind: IssueKind::MissingField,
                    message: "a scenario needs a name: add `name: my-scenario` at the top".into(),
                });
            }
        }
        serde_yaml::Value::Null => {
            issues.push(Issue {
                file: file.to_string(),
                line: 1,
                column: None,
                path: String::new(),
                kind: IssueKind::MissingField,
                message: "the file is empty: a scenario needs at least `name:`".into(),
            });
            return Err(invalid(file, issues));
        }
        other => {
            issues.push(issue_at(
                file,
                text,
                String::new(),
                IssueKind::WrongType,
                format!(
                    "a scenario is a map of sections ({}), not {}",
                    model::SECTIONS.join(", "),
                    type_name(other)
                ),
            ));
            return Err(invalid(file, issues));
        }
    }
    // 2. Shape.
    let mut scenario: Scenario = match serde_yaml::from_str(text) {
        Ok(s) => s,
        Err(first) => {
            let errors = shape::shape_errors(text, MAX_ISSUES);
            if errors.is_empty() && issues.is_empty() {
                issues.push(issue_from_serde(file, text, &first, false));
            }
            issues.extend(
                errors
                    .iter()
                    .map(|e| issue_from_serde(file, text, e, false)),
            );
            return Err(invalid(file, issues));
        }
    };
    // 3. Meaning.
    scenario.resolve(base);
    let (problems, _) = validate::validate(&scenario);
    issues.extend(
        problems
            .into_iter()
            .take(MAX_ISSUES)
            .map(|p| issue_at(file, text, p.path, p.kind, p.message)),
    );
    if issues.is_empty() {
        Ok(scenario)
    } else {
        Err(invalid(file, issues))
    }
}
