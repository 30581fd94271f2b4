//! Which statements a PostgreSQL session ran, from the client's bytes: sans-IO.
//!
//! [`QueryAuditor`] follows the client→database stream after start-up (the relay hands it every
//! chunk it forwards, unchanged) and reports one [`Statement`] per simple Query, per Execute of
//! an extended-protocol portal (with the text its statement was prepared from, and optionally
//! the parameters it was bound with), and per fast-path FunctionCall. COPY data is skipped
//! without being buffered. Memory is bounded: statement texts are cut at `max_statement` bytes,
//! and at most [`MAX_PREPARED`] named statements and portals are remembered.

use std::collections::HashMap;

use hop_protocols::postgres::{FrontendMessage, FrontendScanner, PgMessageError, Scanned, Target};

/// Named statements (and, separately, portals) remembered per session.
pub const MAX_PREPARED: usize = 1024;
/// Parameters kept per Execute when parameters are audited.
const MAX_PARAMS: usize = 64;

/// One statement the client ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL text, cut at the auditor's limit.
    pub text: String,
    /// The text was longer than the limit.
    pub truncated: bool,
    /// `query` (simple), `execute` (extended protocol) or `function_call`.
    pub via: &'static str,
    /// Bound parameters in text form, when parameters are audited.
    pub parameters: Option<Vec<Option<String>>>,
}

/// Bound parameter values in text form (`None` is SQL NULL).
type Parameters = Vec<Option<String>>;

#[derive(Debug, Clone)]
struct Prepared {
    text: String,
    truncated: bool,
}

/// Follows one session's client bytes; see the module docs.
#[derive(Debug)]
pub struct QueryAuditor {
    scanner: FrontendScanner,
    max_statement: usize,
    with_parameters: bool,
    statements: HashMap<Vec<u8>, Prepared>,
    portals: HashMap<Vec<u8>, (Prepared, Option<Parameters>)>,
}

impl QueryAuditor {
    pub fn new(max_statement: usize, with_parameters: bool) -> Self {
        Self {
            // Message bodies are buffered up to the statement limit only.
            scanner: FrontendScanner::new(
                hop_protocols::postgres::DEFAULT_MAX_MESSAGE_LEN,
                max_statement.max(64),
            ),
            max_statement,
            with_parameters,
            statements: HashMap::new(),
            portals: HashMap::new(),
        }
    }

    /// Reads one relayed chunk; appends what was run to `out`. An error means the stream is not
    /// PostgreSQL's protocol any more; auditing cannot go on.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Statement>) -> Result<(), PgMessageError> {
        let mut feed = self.scanner.feed(chunk);
        // The scanner borrows itself while a message is out, so collect owned results first.
        let mut seen: Vec<Seen> = Vec::new();
        while let Some(scanned) = feed.next()? {
            match scanned {
                Scanned::Message(m) => seen.push(Seen::from_message(&m, self.with_parameters)),
                Scanned::Truncated { tag, head, .. } => seen.push(Seen::Truncated {
                    tag,
                    head: head.to_vec(),
                }),
                Scanned::CopyData { .. } => {}
            }
        }
        for s in seen {
            self.apply(s, out);
        }
        Ok(())
    }

    fn cut(&self, sql: &[u8]) -> Prepared {
        let truncated = sql.len() > self.max_statement;
        let mut end = sql.len().min(self.max_statement);
        let text = loop {
            match std::str::from_utf8(sql.get(..end).unwrap_or_default()) {
                Ok(t) => break t.to_string(),
                // Cut inside a character: step back to its start.
                Err(e) if e.error_len().is_none() => end = e.valid_up_to(),
                Err(_) => {
                    break String::from_utf8_lossy(sql.get(..end).unwrap_or_default()).into_owned();
                }
            }
        };
        Prepared { text, truncated }
    }

    fn apply(&mut self, seen: Seen, out: &mut Vec<Statement>) {
        match seen {
            Seen::Query(sql) => {
                let p = self.cut(&sql);
                out.push(Statement {
                    text: p.text,
                    truncated: p.truncated,
                    via: "query",
                    parameters: None,
                });
            }
            Seen::Parse { name, sql } => {
                let p = self.cut(&sql);
                remember(&mut self.statements, name, p);
            }
            Seen::Bind {
                portal,
                statement,
                params,
            } => {
                let p = self
                    .statements
                    .get(&statement)
                    .cloned()
                    .unwrap_or(Prepared {
                        text: String::new(),
                        truncated: false,
                    });
                remember(&mut self.portals, portal, (p, params));
            }
            Seen::Execute { portal } => {
                let (p, params) = self.portals.get(&portal).cloned().unwrap_or((
                    Prepared {
                        text: String::new(),
                        truncated: false,
                    },
                    None,
                ));
                out.push(Statement {
                    text: p.text,
                    truncated: p.truncated,
                    via: "execute",
                    parameters: params,
                });
            }
            Seen::Close { target, name } => match target {
                Target::Statement => {
                    self.statements.remove(&name);
                }
                Target::Portal => {
                    self.portals.remove(&name);
                }
            },
            Seen::FunctionCall { oid } => out.push(Statement {
                text: format!("function call (oid {oid})"),
                truncated: false,
                via: "function_call",
                parameters: None,
            }),
            Seen::Truncated { tag, head } => match tag {
                b'Q' => out.push(Statement {
                    text: self.cut(&head).text,
                    truncated: true,
                    via: "query",
                    parameters: None,
                }),
                b'P' => {
                    // The statement's name ends at the first NUL; the text follows.
                    let mut parts = head.splitn(2, |b| *b == 0);
                    let name = parts.next().unwrap_or_default().to_vec();
                    let sql = parts.next().unwrap_or_default();
                    let mut p = self.cut(sql);
                    p.truncated = true;
                    remember(&mut self.statements, name, p);
                }
                _ => {}
            },
            Seen::Other => {}
        }
    }
}

/// Remembers `v` under `name`; the unnamed entry (empty name) is always replaced, named ones
/// only while fewer than [`MAX_PREPARED`] are kept.
fn remember<V>(map: &mut HashMap<Vec<u8>, V>, name: Vec<u8>, v: V) {
    if name.is_empty() || map.len() < MAX_PREPARED || map.contains_key(&name) {
        map.insert(name, v);
    }
}

/// An owned summary of one frontend message.
enum Seen {
    Query(Vec<u8>),
    Parse {
        name: Vec<u8>,
        sql: Vec<u8>,
    },
    Bind {
        portal: Vec<u8>,
        statement: Vec<u8>,
        params: Option<Vec<Option<String>>>,
    },
    Execute {
        portal: Vec<u8>,
    },
    Close {
        target: Target,
        name: Vec<u8>,
    },
    FunctionCall {
        oid: u32,
    },
    Truncated {
        tag: u8,
        head: Vec<u8>,
    },
    Other,
}

impl Seen {
    fn from_message(m: &FrontendMessage<'_>, with_parameters: bool) -> Self {
        match m {
            FrontendMessage::Query { sql } => Seen::Query(sql.to_vec()),
            FrontendMessage::Parse(p) => Seen::Parse {
                name: p.statement.to_vec(),
                sql: p.query.to_vec(),
            },
            FrontendMessage::Bind(b) => Seen::Bind {
                portal: b.portal.to_vec(),
                statement: b.statement.to_vec(),
                params: with_parameters.then(|| {
                    b.params()
                        .take(MAX_PARAMS)
                        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect()
                }),
            },
            FrontendMessage::Execute { portal, .. } => Seen::Execute {
                portal: portal.to_vec(),
            },
            FrontendMessage::Close { target, name } => Seen::Close {
                target: *target,
                name: name.to_vec(),
            },
            FrontendMessage::FunctionCall(f) => Seen::FunctionCall {
                oid: f.function_oid,
            },
            _ => Seen::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn query(sql: &str) -> Vec<u8> {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        msg(b'Q', &b)
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(sql.as_bytes());
        b.push(0);
        b.extend_from_slice(&0u16.to_be_bytes());
        msg(b'P', &b)
    }

    fn bind(portal: &str, stmt: &str, params: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(portal.as_bytes());
        b.push(0);
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            b.extend_from_slice(&(p.len() as u32).to_be_bytes());
            b.extend_from_slice(p.as_bytes());
        }
        b.extend_from_slice(&0u16.to_be_bytes());
        msg(b'B', &b)
    }

    fn execute(portal: &str) -> Vec<u8> {
        let mut b = portal.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(&0u32.to_be_bytes());
        msg(b'E', &b)
    }

    fn run(stream: &[u8], split: usize, params: bool, max: usize) -> Vec<Statement> {
        let mut a = QueryAuditor::new(max, params);
        let mut out = Vec::new();
        for chunk in stream.chunks(split.max(1)) {
            a.feed(chunk, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn simple_and_extended_statements_are_reported_however_the_stream_is_split() {
        let mut s = query("select 1");
        s.extend(parse("s1", "select $1::int"));
        s.extend(bind("", "s1", &["42"]));
        s.extend(execute(""));
        s.extend(msg(b'S', &[]));
        s.extend(msg(b'd', b"1\t2\n"));
        s.extend(query("BEGIN; COMMIT"));
        let whole = run(&s, s.len(), true, 4096);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].text, "select 1");
        assert_eq!(whole[1].text, "select $1::int");
        assert_eq!(whole[1].via, "execute");
        assert_eq!(whole[1].parameters, Some(vec![Some("42".into())]));
        assert_eq!(whole[2].text, "BEGIN; COMMIT");
        for split in 1..12 {
            assert_eq!(run(&s, split, true, 4096), whole, "split {split}");
        }
        assert_eq!(run(&s, 7, false, 4096)[1].parameters, None);
    }

    #[test]
    fn long_statements_are_cut_on_a_character_boundary() {
        let long = format!("select '{}'", "é".repeat(100));
        let out = run(&query(&long), 5, false, 16);
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated);
        assert!(out[0].text.len() <= 16);
        assert!(long.starts_with(&out[0].text));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut a = QueryAuditor::new(64, false);
        let mut out = Vec::new();
        assert!(a.feed(b"\x00\x00\x00\x00\x05", &mut out).is_err());
        assert!(a.feed(&query("select 1"), &mut out).is_err());
    }

    #[test]
    fn named_statements_are_bounded() {
        let mut a = QueryAuditor::new(64, false);
        let mut out = Vec::new();
        for i in 0..(MAX_PREPARED + 10) {
            a.feed(&parse(&format!("s{i}"), "select 1"), &mut out)
                .unwrap();
        }
        assert_eq!(a.statements.len(), MAX_PREPARED);
        a.feed(&parse("", "select 2"), &mut out).unwrap();
        assert!(a.statements.contains_key(&Vec::new()));
    }
}
