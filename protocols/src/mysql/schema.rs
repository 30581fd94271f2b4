//! Which default schema one MySQL/MariaDB statement switches to, from its text.
//!
//! This module owns the little of MySQL's lexical grammar an access guard needs to find a
//! statement's first keyword: whitespace, `-- ` and `#` line comments, `/* … */` comments, and
//! executable comments (`/*! … */`, `/*!50000 … */`, MariaDB's `/*M! … */` and
//! `/*M!100100 … */`), whose contents the server runs as SQL and which are read here as SQL
//! too, whatever version they name. On that it recognises `USE schema` (bare, backquoted or
//! quoted), and a `PREPARE name FROM '…'` or `EXECUTE IMMEDIATE '…'` whose text is string
//! literals (adjacent literals concatenate, as the server does) and is itself a `USE`.
//!
//! It reads one statement: the agent keeps `CLIENT_MULTI_STATEMENTS` off toward the server, so
//! text after a `;` is the server's syntax error, never a second statement. Text built at run
//! time (`PREPARE s FROM @sql`) cannot be read here; what it reaches is governed by the
//! database's grants, as qualified names (`other.t`) are. When the text cannot be read with
//! certainty (cut by the caller's buffer limit, an unterminated comment, a backslash whose
//! meaning depends on `sql_mode`), the answer is an error, so that the caller can refuse.

/// What a statement does to the session's default schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaSwitch {
    /// Its first keyword is not `USE`, nor a `PREPARE`/`EXECUTE IMMEDIATE` of a literal `USE`.
    None,
    /// `USE schema`: the name, with its quotes removed.
    Use(Vec<u8>),
}

/// Why a statement's effect on the default schema cannot be told from its text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaSwitchError {
    /// The text given ends (it was cut, or is empty of SQL) before it is decided.
    #[error("the statement ends before what it does is clear (is it cut?)")]
    Undecided,
    /// A `/*` comment or a quoted name or literal without its end.
    #[error("unterminated {what}")]
    Unterminated { what: &'static str },
    /// `USE` not followed by one schema name and the statement's end.
    #[error("USE must name one schema and nothing else")]
    MalformedUse,
    /// A backslash in a quoted name or literal, whose meaning depends on `sql_mode`.
    #[error(
        "a backslash in a quoted name or literal cannot be read without the session's sql_mode"
    )]
    Backslash,
    /// Literals inside literals, deeper than the guard follows.
    #[error("prepared statement text nested too deeply")]
    TooDeep,
}

/// Prepared texts followed inside prepared texts (`PREPARE a FROM 'PREPARE b FROM …'`).
const MAX_DEPTH: usize = 4;

/// What `sql` does to the default schema. `complete` is false when `sql` is only the start of
/// the statement (a buffer limit cut it): then anything not decided within it is an error.
pub fn schema_switch(sql: &[u8], complete: bool) -> Result<SchemaSwitch, SchemaSwitchError> {
    switch_at_depth(sql, complete, 0)
}

fn switch_at_depth(
    sql: &[u8],
    complete: bool,
    depth: usize,
) -> Result<SchemaSwitch, SchemaSwitchError> {
    if depth > MAX_DEPTH {
        return Err(SchemaSwitchError::TooDeep);
    }
    let mut lx = Lexer::new(sql, complete);
    let Some(word) = lx.keyword()? else {
        // No word first: `(SELECT 1)`, `{CALL …}`, a stray symbol. Nothing switches the schema.
        return Ok(SchemaSwitch::None);
    };
    if word.eq_ignore_ascii_case(b"use") {
        return lx.use_target().map(SchemaSwitch::Use);
    }
    let text = if word.eq_ignore_ascii_case(b"prepare") {
        lx.expect_name()?;
        if !lx.expect_keyword(b"from")? {
            return Ok(SchemaSwitch::None);
        }
        lx.literals()?
    } else if word.eq_ignore_ascii_case(b"execute") {
        if !lx.expect_keyword(b"immediate")? {
            return Ok(SchemaSwitch::None);
        }
        lx.literals()?
    } else {
        return Ok(SchemaSwitch::None);
    };
    match text {
        Some(Literal::Whole(inner)) => switch_at_depth(&inner, true, depth + 1),
        // The text before a backslash reads the same in every sql_mode: enough when it decides.
        Some(Literal::UpToBackslash(inner)) => match switch_at_depth(&inner, false, depth + 1) {
            Err(SchemaSwitchError::Undecided) => Err(SchemaSwitchError::Backslash),
            decided => decided,
        },
        // From a variable or an expression: not readable here (see the module docs).
        None => Ok(SchemaSwitch::None),
    }
}

/// A quoted name or literal's contents.
enum Literal {
    Whole(Vec<u8>),
    /// Cut before a backslash, whose meaning depends on `sql_mode`.
    UpToBackslash(Vec<u8>),
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// A cursor over statement text that skips what the server skips.
struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
    complete: bool,
    /// Executable comments open around the cursor: their `*/` is skipped like a space.
    open_executable: usize,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a [u8], complete: bool) -> Self {
        Self {
            sql,
            pos: 0,
            complete,
            open_executable: 0,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.sql.get(self.pos.checked_add(ahead)?).copied()
    }

    fn starts_with(&self, s: &[u8]) -> bool {
        self.sql
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(s))
    }

    /// The end of the text reached while something was still open or undecided.
    fn ran_out(&self, what: &'static str) -> SchemaSwitchError {
        if self.complete {
            SchemaSwitchError::Unterminated { what }
        } else {
            SchemaSwitchError::Undecided
        }
    }

    /// Skips whitespace, comments and the markers of executable comments.
    fn skip_trivia(&mut self) -> Result<(), SchemaSwitchError> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if is_space(b) => self.pos += 1,
                (Some(b'#'), _) => self.skip_line(),
                (Some(b'-'), Some(b'-')) if self.peek(2).is_none_or(|c| c <= b' ') => {
                    self.skip_line();
                }
                (Some(b'*'), Some(b'/')) if self.open_executable > 0 => {
                    self.open_executable -= 1;
                    self.pos += 2;
                }
                (Some(b'*'), None) if self.open_executable > 0 && !self.complete => {
                    return Err(SchemaSwitchError::Undecided);
                }
                (Some(b'/'), Some(b'*')) => self.skip_block_comment()?,
                // A cut text may end inside what looks like a comment's start.
                (Some(b'-' | b'/'), None) if !self.complete => {
                    return Err(SchemaSwitchError::Undecided);
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.peek(0) {
            self.pos += 1;
            if b == b'\n' {
                return;
            }
        }
    }

    /// At `/*`: enters an executable comment, or skips a plain one.
    fn skip_block_comment(&mut self) -> Result<(), SchemaSwitchError> {
        self.pos += 2;
        let marker = if self.starts_with(b"!") {
            1
        } else if self.starts_with(b"M!") {
            2
        } else {
            0
        };
        if marker > 0 {
            self.pos += marker;
            // The version, whatever its length: the server reads at most as many digits, and
            // digits it leaves would start the code with a number, not a keyword.
            while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            if self.peek(0).is_none() && !self.complete {
                return Err(SchemaSwitchError::Undecided);
            }
            self.open_executable += 1;
            return Ok(());
        }
        while self.peek(0).is_some() {
            if self.starts_with(b"*/") {
                self.pos += 2;
                return Ok(());
            }
            self.pos += 1;
        }
        Err(self.ran_out("comment"))
    }

    /// The next bare word, if the next token is one.
    fn keyword(&mut self) -> Result<Option<&'a [u8]>, SchemaSwitchError> {
        self.skip_trivia()?;
        let start = self.pos;
        while self.peek(0).is_some_and(is_word_byte) {
            self.pos += 1;
        }
        if self.pos == self.sql.len() && !self.complete {
            // The word may go on past the cut, or nothing at all came.
            return Err(SchemaSwitchError::Undecided);
        }
        let word = self.sql.get(start..self.pos).unwrap_or_default();
        Ok((!word.is_empty()).then_some(word))
    }

    /// True when the next word is `kw`.
    fn expect_keyword(&mut self, kw: &[u8]) -> Result<bool, SchemaSwitchError> {
        Ok(self.keyword()?.is_some_and(|w| w.eq_ignore_ascii_case(kw)))
    }

    /// A name: a bare word or a quoted one. `None` when neither comes next.
    fn name(&mut self) -> Result<Option<Vec<u8>>, SchemaSwitchError> {
        self.skip_trivia()?;
        match self.peek(0) {
            Some(q @ (b'`' | b'"' | b'\'')) => match self.quoted(q)? {
                Literal::Whole(name) => Ok(Some(name)),
                Literal::UpToBackslash(_) => Err(SchemaSwitchError::Backslash),
            },
            _ => Ok(self.keyword()?.map(<[u8]>::to_vec)),
        }
    }

    fn expect_name(&mut self) -> Result<(), SchemaSwitchError> {
        match self.name()? {
            Some(_) => Ok(()),
            None => Err(SchemaSwitchError::Undecided),
        }
    }

    /// At an opening quote `q`: the contents, a doubled quote read as one.
    fn quoted(&mut self, q: u8) -> Result<Literal, SchemaSwitchError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return Err(self.ran_out("quoted name or literal")),
                (Some(b'\\'), _) if q != b'`' => return Ok(Literal::UpToBackslash(out)),
                (Some(a), Some(b)) if a == q && b == q => {
                    out.push(q);
                    self.pos += 2;
                }
                (Some(a), None) if a == q && !self.complete => {
                    // A doubled quote may be cut in half.
                    return Err(SchemaSwitchError::Undecided);
                }
                (Some(a), _) if a == q => {
                    self.pos += 1;
                    return Ok(Literal::Whole(out));
                }
                (Some(a), _) => {
                    out.push(a);
                    self.pos += 1;
                }
            }
        }
    }

    /// After `USE`: the one schema name, then nothing but an optional `;`.
    fn use_target(&mut self) -> Result<Vec<u8>, SchemaSwitchError> {
        let name = self.name()?.ok_or(SchemaSwitchError::MalformedUse)?;
        self.expect_end()?;
        Ok(name)
    }

    /// Nothing but trivia and an optional `;` until the end.
    fn expect_end(&mut self) -> Result<(), SchemaSwitchError> {
        self.skip_trivia()?;
        if self.peek(0) == Some(b';') {
            self.pos += 1;
            self.skip_trivia()?;
        }
        match self.peek(0) {
            None if self.complete => Ok(()),
            None => Err(SchemaSwitchError::Undecided),
            Some(_) => Err(SchemaSwitchError::MalformedUse),
        }
    }

    /// One or more adjacent string literals, concatenated; `None` when a literal does not come
    /// next (a variable, an expression).
    fn literals(&mut self) -> Result<Option<Literal>, SchemaSwitchError> {
        let mut text: Option<Vec<u8>> = None;
        loop {
            self.skip_trivia()?;
            match self.peek(0) {
                Some(q @ (b'\'' | b'"')) => {
                    let (part, whole) = match self.quoted(q)? {
                        Literal::Whole(part) => (part, true),
                        Literal::UpToBackslash(part) => (part, false),
                    };
                    let text = text.get_or_insert_with(Vec::new);
                    text.extend_from_slice(&part);
                    if !whole {
                        return Ok(Some(Literal::UpToBackslash(std::mem::take(text))));
                    }
                }
                None if !self.complete => return Err(SchemaSwitchError::Undecided),
                _ => return Ok(text.map(Literal::Whole)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(sql: &str) -> Result<SchemaSwitch, SchemaSwitchError> {
        schema_switch(sql.as_bytes(), true)
    }

    fn uses(sql: &str) -> Vec<u8> {
        match switch(sql) {
            Ok(SchemaSwitch::Use(s)) => s,
            other => panic!("{sql:?}: {other:?}"),
        }
    }

    #[test]
    fn use_in_its_forms() {
        for sql in [
            "USE other",
            "use other;",
            "  UsE\tother ; ",
            "USE `other`",
            "USE \"other\"",
            "USE 'other'",
            "-- a comment\nUSE other",
            "# a comment\nUSE other",
            "/* a comment */ USE /* another */ other",
            "/*!USE other*/",
            "/*!50000 USE other */",
            "/*!50000USE other*/",
            "/*M!100100 USE other */",
            "/*!*/ USE other",
            "/*!USE*/ other",
            "/*!50000 /* inner */ USE other */;",
            "PREPARE s FROM 'USE other'",
            "prepare `s` from 'US' \"E other\"",
            "EXECUTE IMMEDIATE 'USE other'",
            "EXECUTE IMMEDIATE 'PREPARE t FROM ''USE other'''",
        ] {
            assert_eq!(uses(sql), b"other", "{sql}");
        }
        assert_eq!(uses("USE `we``ird`"), b"we`ird");
        assert_eq!(uses("USE ``"), b"");
    }

    #[test]
    fn other_statements_switch_nothing() {
        for sql in [
            "SELECT 1",
            "select * from other.t",
            "SELECT 'USE other'",
            "/* USE other */ SELECT 1",
            "-- USE other\nSELECT 1",
            "USER()",
            "useful",
            "(SELECT 1)",
            "",
            "   ",
            "PREPARE s FROM @sql",
            "PREPARE s FROM 'SELECT 1'",
            "PREPARE s FROM 'SELECT \\'x\\''",
            "EXECUTE IMMEDIATE 'INSERT INTO t VALUES (''a\\\\b'')'",
            "EXECUTE s",
            "EXECUTE IMMEDIATE @sql",
            "--1",
        ] {
            assert_eq!(switch(sql), Ok(SchemaSwitch::None), "{sql}");
        }
    }

    #[test]
    fn unreadable_text_is_an_error() {
        for sql in [
            "/* never closed USE other",
            "USE",
            "USE other extra",
            "USE other; SELECT 1",
            "USE `other",
            "USE 'ot\\'her'",
            "PREPARE s FROM 'USE \\'x'",
            "PREPARE s FROM 'US\\E x'",
            "PREPARE s FROM 'unterminated",
        ] {
            assert!(switch(sql).is_err(), "{sql}: {:?}", switch(sql));
        }
        // Literals in literals: followed a few levels deep, then refused.
        let nest = |levels: usize| {
            let mut sql = "USE other".to_string();
            for _ in 0..levels {
                sql = format!("EXECUTE IMMEDIATE '{}'", sql.replace('\'', "''"));
            }
            sql
        };
        assert_eq!(uses(&nest(MAX_DEPTH)), b"other");
        assert_eq!(
            switch(&nest(MAX_DEPTH + 1)),
            Err(SchemaSwitchError::TooDeep)
        );
    }

    /// A cut text is decided only when what decides it lies within: every prefix of a statement
    /// is either the full statement's answer or undecided, never a different answer.
    #[test]
    fn every_prefix_is_the_answer_or_undecided() {
        for sql in [
            "USE other",
            "/*!50000 USE `o``ther` */ ;",
            "-- c\n# d\n/* e */ SELECT 1",
            "PREPARE s FROM 'US' 'E other'",
            "EXECUTE IMMEDIATE 'SELECT 1'",
            "SELECT 'USE other'",
            "/*M!100100 use other*/",
        ] {
            let whole = switch(sql);
            for cut in 0..=sql.len() {
                let part = schema_switch(&sql.as_bytes()[..cut], false);
                assert!(
                    part == whole || part == Err(SchemaSwitchError::Undecided),
                    "{sql:?} cut at {cut}: {part:?} vs {whole:?}"
                );
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let len = (seed % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let alphabet = b"USE ePRAM`'\"/*!-#;\\ \n0x\xff";
                    alphabet[seed as usize % alphabet.len()]
                })
                .collect();
            let _ = schema_switch(&bytes, true);
            let _ = schema_switch(&bytes, false);
        }
    }
}
