//! Parsing a rule's `where` clause: the subset of Teleport's predicate language that roles use,
//! such as `contains(session.participants, user.metadata.name)`.
//!
//! This module owns the grammar and the syntax tree. It is sans-IO and total: any input yields a
//! [`Predicate`] or a [`PredicateError`] naming the byte offset and what was expected there; it
//! must never panic, recurse without bound, or decide what a field means (that is
//! [`crate::rule_context`], at evaluation).
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | "(" expr ")" | call | "true" | "false"
//! call    := NAME "(" value ( "," value )* ")"
//! value   := STRING | field | call
//! field   := NAME ( "." NAME )* ( "[" STRING "]" )?
//! ```
//!
//! Strings are double-quoted with `\"` and `\\` escapes (or single-quoted, no escapes).

/// The longest `where` clause accepted, in bytes.
pub const MAX_PREDICATE_LEN: usize = 4096;
/// How deeply parentheses, `!` and calls may nest.
const MAX_DEPTH: usize = 32;

/// Why a `where` clause does not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: expected {expected}, found {found}")]
pub struct PredicateError {
    /// Byte offset into the clause.
    pub offset: usize,
    /// What the grammar allows there.
    pub expected: &'static str,
    /// What is there instead (a quoted token, or `the end`).
    pub found: String,
}

/// A parsed `where` clause: a boolean expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    /// `a || b`.
    Or(Box<Predicate>, Box<Predicate>),
    /// `a && b`.
    And(Box<Predicate>, Box<Predicate>),
    /// `!a`.
    Not(Box<Predicate>),
    /// `true` / `false`.
    Literal(bool),
    /// A function whose value is a boolean: `contains(list, item)`, `equals(a, b)`, or one Hop
    /// does not know (it fails at evaluation).
    Call(Call),
}

/// `name(args…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The function's name as written (`contains`).
    pub name: String,
    /// Its arguments.
    pub args: Vec<Value>,
}

/// A function argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `"text"`.
    Str(String),
    /// `user.metadata.name`, `user.spec.traits["logins"]`: the dotted path and the optional key.
    Field {
        /// The dotted names.
        path: Vec<String>,
        /// The `["key"]` after them.
        key: Option<String>,
    },
    /// A nested call (its value is decided at evaluation).
    Call(Call),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    Str(String),
    Punct(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Self::Name(n) => format!("{n:?}"),
            Self::Str(s) => format!("string {s:?}"),
            Self::Punct(p) => format!("{p:?}"),
        }
    }
}

const PUNCTS: &[&str] = &["&&", "||", "!", "(", ")", ",", ".", "[", "]"];

fn lex(src: &str) -> Result<Vec<(usize, Token)>, PredicateError> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if b == b'"' || b == b'\'' {
            let (s, end) = lex_string(src, i)?;
            out.push((start, Token::Str(s)));
            i = end;
        } else if b.is_ascii_alphabetic() || b == b'_' {
            while bytes
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            {
                i += 1;
            }
            out.push((start, Token::Name(src[start..i].to_owned())));
        } else if let Some(p) = PUNCTS.iter().find(|p| src[i..].starts_with(**p)) {
            out.push((start, Token::Punct(p)));
            i += p.len();
        } else {
            let c = src[i..].chars().next().unwrap_or('?');
            return Err(PredicateError {
                offset: i,
                expected: "a name, a string, an operator or a parenthesis",
                found: format!("{c:?}"),
            });
        }
    }
    Ok(out)
}

/// A string literal starting at `start` (its quote): its text and the offset after it.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), PredicateError> {
    let quote = src[start..].chars().next().unwrap_or('"');
    let mut text = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((text, start + 1 + i + 1));
        }
        if c == '\\' && quote == '"' {
            match chars.next() {
                Some((_, e @ ('"' | '\\'))) => text.push(e),
                Some((j, e)) => {
                    return Err(PredicateError {
                        offset: start + 1 + j,
                        expected: "an escape \\\" or \\\\",
                        found: format!("{e:?}"),
                    });
                }
                None => break,
            }
        } else {
            text.push(c);
        }
    }
    Err(PredicateError {
        offset: src.len(),
        expected: "the string's closing quote",
        found: "the end".into(),
    })
}

/// Parses a `where` clause.
pub fn parse(src: &str) -> Result<Predicate, PredicateError> {
    if src.len() > MAX_PREDICATE_LEN {
        return Err(PredicateError {
            offset: MAX_PREDICATE_LEN,
            expected: "the end (a where clause has at most 4096 bytes)",
            found: "more".into(),
        });
    }
    let tokens = lex(src)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        end: src.len(),
        depth: 0,
    };
    let expr = p.or()?;
    match p.peek() {
        None => Ok(expr),
        Some(_) => Err(p.error("\"&&\", \"||\" or the end")),
    }
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn error(&self, expected: &'static str) -> PredicateError {
        match self.tokens.get(self.pos) {
            Some((offset, t)) => PredicateError {
                offset: *offset,
                expected,
                found: t.describe(),
            },
            None => PredicateError {
                offset: self.end,
                expected,
                found: "the end".into(),
            },
        }
    }

    fn eat(&mut self, punct: &str) -> bool {
        if matches!(self.peek(), Some(Token::Punct(p)) if *p == punct) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, punct: &str, expected: &'static str) -> Result<(), PredicateError> {
        if self.eat(punct) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn name(&mut self, expected: &'static str) -> Result<String, PredicateError> {
        match self.peek() {
            Some(Token::Name(n)) => {
                let n = n.clone();
                self.pos += 1;
                Ok(n)
            }
            _ => Err(self.error(expected)),
        }
    }

    fn deeper(&mut self) -> Result<(), PredicateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("less nesting (at most 32 levels)"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Predicate, PredicateError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Predicate::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Predicate, PredicateError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Predicate::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Predicate, PredicateError> {
        const WHAT: &str = "\"!\", \"(\", a function call, true or false";
        self.deeper()?;
        let out = if self.eat("!") {
            Predicate::Not(Box::new(self.unary()?))
        } else if self.eat("(") {
            let inner = self.or()?;
            self.expect(")", "\")\", \"&&\" or \"||\"")?;
            inner
        } else {
            let name = self.name(WHAT)?;
            match name.as_str() {
                "true" => Predicate::Literal(true),
                "false" => Predicate::Literal(false),
                _ => {
                    self.pos -= 1;
                    let name = self.dotted(WHAT)?.join(".");
                    Predicate::Call(self.call(name)?)
                }
            }
        };
        self.depth -= 1;
        Ok(out)
    }

    /// `a.b.c` (at least one name).
    fn dotted(&mut self, expected: &'static str) -> Result<Vec<String>, PredicateError> {
        let mut path = vec![self.name(expected)?];
        while self.eat(".") {
            path.push(self.name("a name after \".\"")?);
        }
        Ok(path)
    }

    /// The argument list after a function's name.
    fn call(&mut self, name: String) -> Result<Call, PredicateError> {
        self.expect("(", "\"(\" after a function's name")?;
        let mut args = vec![self.value()?];
        while self.eat(",") {
            args.push(self.value()?);
        }
        self.expect(")", "\",\" or \")\"")?;
        Ok(Call { name, args })
    }

    fn value(&mut self) -> Result<Value, PredicateError> {
        const WHAT: &str = "a string, a field or a function call";
        if let Some(Token::Str(s)) = self.peek() {
            let s = s.clone();
            self.pos += 1;
            return Ok(Value::Str(s));
        }
        self.deeper()?;
        let path = self.dotted(WHAT)?;
        let out = if matches!(self.peek(), Some(Token::Punct("("))) {
            Value::Call(self.call(path.join("."))?)
        } else {
            let key = if self.eat("[") {
                let key = match self.peek() {
                    Some(Token::Str(s)) => s.clone(),
                    _ => return Err(self.error("a quoted key after \"[\"")),
                };
                self.pos += 1;
                self.expect("]", "\"]\"")?;
                Some(key)
            } else {
                None
            };
            Value::Field { path, key }
        };
        self.depth -= 1;
        Ok(out)
    }
}

/// The invariants the `rbac_predicate` fuzz target checks on arbitrary bytes: parsing never
/// panics; an error's offset is within the input; a clause that parses evaluates (to an answer
/// or to "undecidable") in a full and in an empty context without panicking, and the same text
/// parses to the same tree again.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match parse(src) {
        Err(e) => assert!(e.offset <= src.len()),
        Ok(p) => {
            assert_eq!(parse(src).ok(), Some(p.clone()));
            let _ = crate::rule_context::unsupported(&p);
            let _ = crate::rule_context::evaluate(&p, &crate::RuleContext::default());
        }
    }
}

#[cfg(test)]
#[path = "predicate_tests.rs"]
mod tests;
