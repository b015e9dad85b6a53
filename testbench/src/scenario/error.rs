//! Errors of a scenario file: each names the file, the line and column, the
//! field path and what is allowed.

use std::fmt;

/// What kind of problem an [`Issue`] is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IssueKind {
    /// The text is not valid YAML (or not UTF-8, or several documents).
    Syntax,
    /// A field the schema does not have.
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A value of the wrong type (a list where a number belongs, …).
    WrongType,
    /// A value that cannot be read: a bad unit, an unknown name, a bad address.
    InvalidValue,
    /// A value outside its allowed range.
    OutOfRange,
    /// A name or number that refers to nothing (processor 9 of 4, an unknown adapter).
    UnknownReference,
    /// Two names, addresses or ports that must differ but do not.
    Duplicate,
    /// Settings that contradict each other.
    Conflict,
    /// A file the scenario names does not exist.
    MissingFile,
}

impl IssueKind {
    /// A short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            IssueKind::Syntax => "syntax",
            IssueKind::UnknownField => "unknown field",
            IssueKind::MissingField => "missing field",
            IssueKind::WrongType => "wrong type",
            IssueKind::InvalidValue => "invalid value",
            IssueKind::OutOfRange => "out of range",
            IssueKind::UnknownReference => "unknown reference",
            IssueKind::Duplicate => "duplicate",
            IssueKind::Conflict => "conflict",
            IssueKind::MissingFile => "missing file",
        }
    }
}

/// One problem in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// The file, as given to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field path, e.g. `clients[0].target`; empty for the whole file.
    pub path: String,
    /// The kind of problem.
    pub kind: IssueKind,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Why a scenario could not be loaded.
#[derive(Debug)]
pub enum ScenarioError {
    /// The file could not be read.
    Read {
        /// The file.
        file: String,
        /// The reason.
        source: std::io::Error,
    },
    /// The file was read but is not a valid scenario: every problem found,
    /// sorted by line.
    Invalid {
        /// The file.
        file: String,
        /// The problems, at least one, sorted by line and column.
        issues: Vec<Issue>,
    },
}

impl ScenarioError {
    /// The problems found (empty when the file could not be read).
    pub fn issues(&self) -> &[Issue] {
        match self {
            ScenarioError::Read { .. } => &[],
            ScenarioError::Invalid { issues, .. } => issues,
        }
    }
    /// The file.
    pub fn file(&self) -> &str {
        match self {
            ScenarioError::Read { file, .. } | ScenarioError::Invalid { file, .. } => file,
        }
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Read { file, source } => write!(f, "{file}: cannot read: {source}"),
            ScenarioError::Invalid { issues, .. } => {
                for (i, issue) in issues.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{issue}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ScenarioError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScenarioError::Read { source, .. } => Some(source),
            ScenarioError::Invalid { .. } => None,
        }
    }
}

/// A problem found after deserialization, before it is given a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The field path it is about.
    pub path: String,
    /// Its kind.
    pub kind: IssueKind,
    /// The message.
    pub message: String,
}

impl Problem {
    /// A problem.
    pub(crate) fn new(
        path: impl Into<String>,
        kind: IssueKind,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            path: path.into(),
            kind,
            message: message.into(),
        }
    }
}
