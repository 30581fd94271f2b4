//! Which statements a PostgreSQL session ran, from the client's bytes: sans-IO.
//!
//! [`QueryAuditor`] follows the client→database stream after start-up (the relay hands it every
//! chunk before forwarding it) and reports one [`Statement`] per simple Query, per Parse of a
//! named statement (`via: prepare`, with its text: a named statement's text is in the audit log
//! from the moment it is prepared, whatever the tables below keep), per Execute of an
//! extended-protocol portal (with the text its statement was prepared from when it is still
//! known, its statement's name, and optionally the parameters it was bound with), and per
//! fast-path FunctionCall. COPY data is skipped without being buffered.
//!
//! Memory is bounded: statement texts are cut at `max_statement` bytes, and at most
//! [`MAX_PREPARED`] named statements and portals are remembered. A named statement the table
//! cannot hold was audited when it was prepared; a named portal it cannot hold is audited when
//! it is bound (`via: bind`). An error from [`QueryAuditor::feed`] means that the stream cannot
//! be followed (not PostgreSQL's protocol, or a name longer than what is kept of a message): the
//! session must end, since nothing after it could be audited.

use std::collections::HashMap;

use hop_protocols::postgres::{
    FrontendMessage, FrontendScanner, PgMessageError, Scanned, Target, TruncatedHead,
    parse_truncated_head,
};

/// Named statements (and, separately, portals) remembered per session.
pub const MAX_PREPARED: usize = 1024;
/// Parameters kept per Execute when parameters are audited.
const MAX_PARAMS: usize = 64;

/// Why the auditor cannot follow the client's stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the client's stream cannot be followed: {0}")]
pub struct Unfollowable(#[from] pub PgMessageError);

/// One statement the client ran or prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL text, cut at the auditor's limit; `None` for an Execute whose statement the
    /// tables no longer hold (its text was audited when it was prepared: see `statement_name`).
    pub text: Option<String>,
    /// The text was longer than the limit.
    pub truncated: bool,
    /// `query` (simple), `prepare` (Parse of a named statement), `bind` (a named portal the
    /// table cannot hold), `execute` (extended protocol) or `function_call`.
    pub via: &'static str,
    /// Bound parameters in text form, when parameters are audited.
    pub parameters: Option<Vec<Option<String>>>,
    /// The prepared statement's name, for named statements.
    pub statement_name: Option<String>,
    /// The portal's name, for named portals.
    pub portal: Option<String>,
}

impl Statement {
    fn new(via: &'static str, p: Option<Prepared>) -> Self {
        let (text, truncated) = p.map_or((None, false), |p| (Some(p.text), p.truncated));
        Self {
            text,
            truncated,
            via,
            parameters: None,
            statement_name: None,
            portal: None,
        }
    }
}

/// Bound parameter values in text form (`None` is SQL NULL).
type Parameters = Vec<Option<String>>;

#[derive(Debug, Clone)]
struct Prepared {
    text: String,
    truncated: bool,
}

/// What a portal was bound to.
#[derive(Debug, Clone)]
struct Portal {
    statement: Vec<u8>,
    prepared: Option<Prepared>,
    params: Option<Parameters>,
}

/// Follows one session's client bytes; see the module docs.
#[derive(Debug)]
pub struct QueryAuditor {
    scanner: FrontendScanner,
    max_statement: usize,
    with_parameters: bool,
    statements: HashMap<Vec<u8>, Prepared>,
    portals: HashMap<Vec<u8>, Portal>,
    /// Set by the first error, which every later feed returns again.
    failed: Option<Unfollowable>,
}

fn lossy(name: &[u8]) -> Option<String> {
    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
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
            failed: None,
        }
    }

    /// Reads one chunk; appends what it runs or prepares to `out`. An error is final: the
    /// stream cannot be followed, and the session must end without forwarding the chunk.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Statement>) -> Result<(), Unfollowable> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let seen = self
            .scan(chunk)
            .inspect_err(|e| self.failed = Some(e.clone()))?;
        for s in seen {
            self.apply(s, out);
        }
        Ok(())
    }

    /// The messages of one chunk, owned.
    fn scan(&mut self, chunk: &[u8]) -> Result<Vec<Seen>, Unfollowable> {
        let mut feed = self.scanner.feed(chunk);
        // The scanner borrows itself while a message is out, so collect owned results first.
        let mut seen: Vec<Seen> = Vec::new();
        while let Some(scanned) = feed.next()? {
            match scanned {
                Scanned::Message(m) => seen.push(Seen::from_message(&m, self.with_parameters)),
                Scanned::Truncated { tag, head, .. } => {
                    seen.push(Seen::from_head(parse_truncated_head(tag, head)?));
                }
                Scanned::CopyData { .. } => {}
            }
        }
        Ok(seen)
    }

    fn cut(&self, sql: &[u8], cut_before: bool) -> Prepared {
        let truncated = cut_before || sql.len() > self.max_statement;
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
            Seen::Query { sql, truncated } => {
                out.push(Statement::new("query", Some(self.cut(&sql, truncated))));
            }
            Seen::Parse {
                name,
                sql,
                truncated,
            } => {
                let p = self.cut(&sql, truncated);
                if !name.is_empty() {
                    let mut s = Statement::new("prepare", Some(p.clone()));
                    s.statement_name = lossy(&name);
                    out.push(s);
                }
                remember(&mut self.statements, name, p);
            }
            Seen::Bind {
                portal,
                statement,
                params,
            } => self.bind(portal, statement, params, out),
            Seen::Execute { portal } => {
                let bound = self.portals.get(&portal).cloned();
                let mut s =
                    Statement::new("execute", bound.as_ref().and_then(|b| b.prepared.clone()));
                if let Some(b) = bound {
                    s.statement_name = lossy(&b.statement);
                    s.parameters = b.params;
                }
                s.portal = lossy(&portal);
                out.push(s);
            }
            Seen::Close { target, name } => match target {
                Target::Statement => {
                    self.statements.remove(&name);
                }
                Target::Portal => {
                    self.portals.remove(&name);
                }
            },
            Seen::FunctionCall { oid } => out.push(Statement::new(
                "function_call",
                Some(Prepared {
                    text: format!("function call (oid {oid})"),
                    truncated: false,
                }),
            )),
            Seen::Other => {}
        }
    }

    /// Remembers what a portal runs; a named portal the table cannot hold is audited now.
    fn bind(
        &mut self,
        portal: Vec<u8>,
        statement: Vec<u8>,
        params: Option<Parameters>,
        out: &mut Vec<Statement>,
    ) {
        let bound = Portal {
            prepared: self.statements.get(&statement).cloned(),
            statement,
            params,
        };
        if fits(&self.portals, &portal) {
            self.portals.insert(portal, bound);
            return;
        }
        let mut s = Statement::new("bind", bound.prepared);
        s.statement_name = lossy(&bound.statement);
        s.parameters = bound.params;
        s.portal = lossy(&portal);
        out.push(s);
    }
}

/// Whether `name` can be remembered: the unnamed entry (empty name) always, named ones while
/// fewer than [`MAX_PREPARED`] are kept or when replacing one.
fn fits<V>(map: &HashMap<Vec<u8>, V>, name: &[u8]) -> bool {
    name.is_empty() || map.len() < MAX_PREPARED || map.contains_key(name)
}

/// Remembers `v` under `name` when it [`fits`].
fn remember<V>(map: &mut HashMap<Vec<u8>, V>, name: Vec<u8>, v: V) {
    if fits(map, &name) {
        map.insert(name, v);
    }
}

/// An owned summary of one frontend message.
enum Seen {
    Query {
        sql: Vec<u8>,
        truncated: bool,
    },
    Parse {
        name: Vec<u8>,
        sql: Vec<u8>,
        truncated: bool,
    },
    Bind {
        portal: Vec<u8>,
        statement: Vec<u8>,
        params: Option<Parameters>,
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
    Other,
}

impl Seen {
    fn from_message(m: &FrontendMessage<'_>, with_parameters: bool) -> Self {
        match m {
            FrontendMessage::Query { sql } => Seen::Query {
                sql: sql.to_vec(),
                truncated: false,
            },
            FrontendMessage::Parse(p) => Seen::Parse {
                name: p.statement.to_vec(),
                sql: p.query.to_vec(),
                truncated: false,
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

    /// A message longer than the scanner keeps: what its head says.
    fn from_head(h: TruncatedHead<'_>) -> Self {
        match h {
            TruncatedHead::Query { sql } => Seen::Query {
                sql: sql.to_vec(),
                truncated: true,
            },
            TruncatedHead::Parse { statement, query } => Seen::Parse {
                name: statement.to_vec(),
                sql: query.to_vec(),
                truncated: true,
            },
            // The parameters are what is long: not kept.
            TruncatedHead::Bind { portal, statement } => Seen::Bind {
                portal: portal.to_vec(),
                statement: statement.to_vec(),
                params: None,
            },
            TruncatedHead::FunctionCall { function_oid } => {
                Seen::FunctionCall { oid: function_oid }
            }
            TruncatedHead::Other => Seen::Other,
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

    fn text(s: &Statement) -> &str {
        s.text.as_deref().unwrap_or("<none>")
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
        assert_eq!(whole.len(), 4);
        assert_eq!(text(&whole[0]), "select 1");
        // A named statement's text is audited when it is prepared…
        assert_eq!(whole[1].via, "prepare");
        assert_eq!(text(&whole[1]), "select $1::int");
        assert_eq!(whole[1].statement_name.as_deref(), Some("s1"));
        // …and its executions carry it, and its name.
        assert_eq!(text(&whole[2]), "select $1::int");
        assert_eq!(whole[2].via, "execute");
        assert_eq!(whole[2].statement_name.as_deref(), Some("s1"));
        assert_eq!(whole[2].portal, None);
        assert_eq!(whole[2].parameters, Some(vec![Some("42".into())]));
        assert_eq!(text(&whole[3]), "BEGIN; COMMIT");
        for split in 1..12 {
            assert_eq!(run(&s, split, true, 4096), whole, "split {split}");
        }
        assert_eq!(run(&s, 7, false, 4096)[2].parameters, None);
    }

    #[test]
    fn long_statements_are_cut_on_a_character_boundary() {
        let long = format!("select '{}'", "é".repeat(100));
        let out = run(&query(&long), 5, false, 16);
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated);
        assert!(text(&out[0]).len() <= 16);
        assert!(long.starts_with(text(&out[0])));
    }

    /// Messages longer than the scanner keeps (cap 64 here): a long Parse is prepared with its
    /// cut text, a Bind with long parameters still binds its portal to the right statement.
    #[test]
    fn long_messages_are_followed_by_their_heads() {
        let long = format!("select '{}'", "x".repeat(200));
        let mut s = parse("big", &long);
        let big_param = "p".repeat(300);
        s.extend(bind("", "big", &[&big_param]));
        s.extend(execute(""));
        s.extend(parse("", "select 2"));
        s.extend(bind("", "", &[&big_param]));
        s.extend(execute(""));
        for split in [1, 7, s.len()] {
            let out = run(&s, split, true, 64);
            assert_eq!(out.len(), 3, "{out:?}");
            assert_eq!(out[0].via, "prepare");
            assert!(out[0].truncated && long.starts_with(text(&out[0])));
            assert_eq!(out[1].via, "execute");
            assert!(out[1].truncated && long.starts_with(text(&out[1])));
            assert_eq!(out[1].statement_name.as_deref(), Some("big"));
            assert_eq!(out[1].parameters, None);
            assert_eq!(text(&out[2]), "select 2");
        }
    }

    /// What cannot be followed is an error, however the stream is split, and stays one.
    #[test]
    fn garbage_and_unfollowable_messages_are_errors_not_panics() {
        let huge_name = "n".repeat(100);
        let cases: Vec<Vec<u8>> = vec![
            b"\x00\x00\x00\x00\x05".to_vec(),
            msg(b'Q', b"no terminator"),
            msg(b'Z', b""),
            parse(&huge_name, "select 1"),
            bind("", &huge_name, &[]),
            execute(&huge_name),
        ];
        for case in cases {
            for split in [1, 3, case.len()] {
                let mut a = QueryAuditor::new(64, false);
                let mut out = Vec::new();
                let failed = case.chunks(split).any(|c| a.feed(c, &mut out).is_err());
                assert!(failed, "{case:?} split {split}");
                assert!(a.feed(&query("select 1"), &mut out).is_err());
            }
        }
    }

    /// However many named statements and portals a session makes, every text reaches the audit:
    /// at Parse for statements, at Bind for portals the table cannot hold.
    #[test]
    fn bounded_tables_never_lose_a_statements_text() {
        let mut a = QueryAuditor::new(64, false);
        let mut out = Vec::new();
        let n = MAX_PREPARED + 10;
        for i in 0..n {
            let mut s = parse(&format!("s{i}"), &format!("select {i}"));
            s.extend(bind(&format!("p{i}"), &format!("s{i}"), &[]));
            s.extend(bind("", &format!("s{i}"), &[]));
            s.extend(execute(""));
            a.feed(&s, &mut out).unwrap();
        }
        assert_eq!(a.statements.len(), MAX_PREPARED);
        // The unnamed portal takes one of the places.
        assert_eq!(a.portals.len(), MAX_PREPARED);
        for i in 0..n {
            let want = format!("select {i}");
            let name = format!("s{i}");
            let about = |s: &&Statement| s.statement_name.as_deref() == Some(name.as_str());
            let mine: Vec<&Statement> = out.iter().filter(about).collect();
            assert_eq!(mine[0].via, "prepare");
            assert_eq!(text(mine[0]), want);
            // Executions of statements the table holds carry their text.
            let execute = mine.iter().find(|s| s.via == "execute").unwrap();
            if i < MAX_PREPARED {
                assert_eq!(text(execute), want);
            } else {
                assert_eq!(execute.text, None);
                // The named portal the table could not hold was audited when bound.
                let bound = mine.iter().find(|s| s.via == "bind").unwrap();
                assert_eq!(bound.portal.as_deref(), Some(format!("p{i}").as_str()));
            }
        }
        a.feed(&parse("", "select 2"), &mut out).unwrap();
        assert!(a.statements.contains_key(&Vec::new()));
    }
}
