//! The little language of `expect: - expr: "…"`: comparisons of report
//! fields and numbers, joined by `&&`.
//!
//! ```text
//! expr     := compare ( "&&" compare )*
//! compare  := operand op operand          op: == != < <= > >=
//! operand  := number | path
//! path     := name ( "." name | "[" digits "]" )*     name: [A-Za-z_][A-Za-z0-9_]*
//! number   := -? digits ( "." digits )? ( [eE] [+-]? digits )?
//! ```
//!
//! Example: `report.connections.reset == 0 && report.latency.p99_ns < 2000000`.

use std::fmt;
use std::str::FromStr;

use super::de::deserialize_from_str;

/// A comparison operator.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// Applies the operator.
    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
    fn text(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A number.
    Number(f64),
    /// A dotted path into the report, e.g. `report.connections.reset`.
    Path(String),
}

/// `left op right`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Left side.
    pub left: Operand,
    /// The operator.
    pub op: CmpOp,
    /// Right side.
    pub right: Operand,
}

/// A parsed expression: comparisons that must all hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// The text as written.
    pub text: String,
    /// The comparisons, all of which must hold.
    pub all: Vec<Comparison>,
}

impl Expr {
    /// Every path the expression reads.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.all
            .iter()
            .flat_map(|c| [&c.left, &c.right])
            .filter_map(|o| match o {
                Operand::Path(p) => Some(p.as_str()),
                Operand::Number(_) => None,
            })
    }

    /// Evaluates with `lookup` giving each path's value; an unknown path is an error.
    pub fn eval(&self, lookup: impl Fn(&str) -> Option<f64>) -> Result<bool, String> {
        let value = |o: &Operand| match o {
            Operand::Number(n) => Ok(*n),
            Operand::Path(p) => lookup(p).ok_or_else(|| format!("the report has no field `{p}`")),
        };
        for c in &self.all {
            if !c.op.apply(value(&c.left)?, value(&c.right)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        let found = match self.chars.get(self.pos) {
            None => "the end".to_string(),
            Some(_) => {
                let rest: String = self.chars[self.pos..].iter().take(12).collect();
                format!("`{rest}`")
            }
        };
        format!(
            "in expression `{}`, at character {}: expected {what}, found {found} (write comparisons like report.connections.reset == 0, joined by &&)",
            self.text,
            self.pos + 1
        )
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars.len() >= self.pos + n
            && self.chars[self.pos..self.pos + n]
                .iter()
                .copied()
                .eq(s.chars())
        {
            self.pos += n;
            true
        } else {
            false
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        self.skip_space();
        match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '-' || c == '.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => self.path(),
            _ => Err(self.err("a field path or a number")),
        }
    }

    fn number(&mut self) -> Result<Operand, String> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            p.pos > s
        };
        let mut any = digits(self);
        if self.peek() == Some('.') {
            self.pos += 1;
            any |= digits(self);
        }
        if !any {
            self.pos = start;
            return Err(self.err("a number"));
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.err("the digits of an exponent"));
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Operand::Number(n)),
            _ => {
                self.pos = start;
                Err(self.err("a number"))
            }
        }
    }

    fn name(&mut self) -> Result<(), String> {
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                Ok(())
            }
            _ => Err(self.err("a field name")),
        }
    }

    fn path(&mut self) -> Result<Operand, String> {
        let start = self.pos;
        self.name()?;
        loop {
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    self.name()?;
                }
                Some('[') => {
                    self.pos += 1;
                    let s = self.pos;
                    while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    if self.pos == s {
                        return Err(self.err("an index"));
                    }
                    if !self.eat("]") {
                        return Err(self.err("`]`"));
                    }
                }
                _ => break,
            }
        }
        Ok(Operand::Path(self.chars[start..self.pos].iter().collect()))
    }

    fn op(&mut self) -> Result<CmpOp, String> {
        self.skip_space();
        for (s, op) in [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ] {
            if self.eat(s) {
                return Ok(op);
            }
        }
        Err(self.err("a comparison (==, !=, <, <=, >, >=)"))
    }

    fn comparison(&mut self) -> Result<Comparison, String> {
        let start = self.pos;
        let left = self.operand()?;
        let op = self.op()?;
        let right = self.operand()?;
        if matches!((&left, &right), (Operand::Number(_), Operand::Number(_))) {
            self.pos = start;
            self.skip_space();
            return Err(self.err("a comparison that reads at least one field, not two numbers"));
        }
        Ok(Comparison { left, op, right })
    }
}

impl FromStr for Expr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let mut p = Parser {
            text,
            chars: text.chars().collect(),
            pos: 0,
        };
        let mut all = vec![p.comparison()?];
        loop {
            p.skip_space();
            if p.peek().is_none() {
                break;
            }
            if !p.eat("&&") {
                return Err(p.err("`&&` or the end"));
            }
            all.push(p.comparison()?);
        }
        Ok(Expr {
            text: text.to_string(),
            all,
        })
    }
}

deserialize_from_str!(
    Expr,
    "an expression such as \"report.connections.reset == 0\""
);

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |o: &Operand| match o {
            Operand::Number(n) => n.to_string(),
            Operand::Path(p) => p.clone(),
        };
        write!(
            f,
            "{} {} {}",
            side(&self.left),
            self.op.text(),
            side(&self.right)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comparisons_joined_by_and() {
        let e: Expr = "report.connections.reset == 0 && report.latency.p99_ns<2e6 && 3 <= a[2].b"
            .parse()
            .unwrap();
        assert_eq!(e.all.len(), 3);
        assert_eq!(
            e.all[0].left,
            Operand::Path("report.connections.reset".into())
        );
        assert_eq!(e.all[0].op, CmpOp::Eq);
        assert_eq!(e.all[1].right, Operand::Number(2e6));
        assert_eq!(e.all[2].right, Operand::Path("a[2].b".into()));
        assert_eq!(
            e.paths().collect::<Vec<_>>(),
            [
                "report.connections.reset",
                "report.latency.p99_ns",
                "a[2].b"
            ]
        );
        let v = |p: &str| match p {
            "report.connections.reset" => Some(0.0),
            "report.latency.p99_ns" => Some(1e6),
            "a[2].b" => Some(3.0),
            _ => None,
        };
        assert_eq!(e.eval(v), Ok(true));
        let e: Expr = "x.y != -1.5".parse().unwrap();
        assert!(e.eval(|_| None).is_err());
        assert_eq!(e.eval(|_| Some(-1.5)), Ok(false));
    }

    #[test]
    fn refuses_bad_expressions_with_the_position() {
        for (text, at, what) in [
            ("", 1, "a field path or a number"),
            ("a.b", 4, "a comparison"),
            ("a.b = 1", 5, "a comparison"),
            ("a.b == ", 8, "a field path or a number"),
            ("a.b == 1 || c < 2", 10, "`&&` or the end"),
            ("1 < 2", 1, "not two numbers"),
            ("a. == 1", 3, "a field name"),
            ("a[x] == 1", 3, "an index"),
            ("a == 1e", 8, "exponent"),
            ("a == 1 &&", 10, "a field path or a number"),
        ] {
            let e = text.parse::<Expr>().unwrap_err();
            assert!(e.contains(&format!("at character {at}:")), "{text}: {e}");
            assert!(e.contains(what), "{text}: {e}");
        }
    }
}
