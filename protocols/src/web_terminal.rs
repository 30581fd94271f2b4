//! The web terminal's WebSocket messages, as the page and the proxy exchange them.
//!
//! Binary frames carry terminal bytes both ways (keys from the page, output to it). Text
//! frames carry control: from the page, one command per frame ([`Control::parse`]: `resize
//! COLS ROWS`); to the page, a JSON status the proxy writes. Before a shell opens under
//! per-session MFA, the proxy's `{"type":"mfa",…}` status asks for a WebAuthn assertion and
//! the page answers with one text frame ([`MfaAnswer::parse`]: `mfa-assertion ID CLIENT_DATA
//! AUTHENTICATOR_DATA SIGNATURE`, each base64url, or `mfa-cancel REASON`). Output is cut at UTF-8 boundaries
//! ([`Utf8Boundary`]): a frame never ends inside a multi-byte sequence, so a page may decode
//! each frame on its own (xterm.js decodes across frames too).
//!
//! Pure functions and a carry of at most three bytes: no IO, no clock, no allocation but the
//! output buffer the caller asks for. A malformed command is an error that says what was wrong;
//! nothing here panics on peer bytes.

/// The most bytes a control frame may have (a resize is well under 32).
pub const MAX_CONTROL: usize = 64;

/// The largest terminal a page may ask for, each way (xterm.js itself allows far less in
/// practice; a bound keeps a `window-change` from carrying nonsense to the node).
pub const MAX_DIMENSION: u16 = 1000;

/// A control command from the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The terminal now has `cols` columns and `rows` rows.
    Resize { cols: u16, rows: u16 },
}

/// Why a control frame from the page is not a command (the page's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control frame over {MAX_CONTROL} bytes")]
    TooLong,
    #[error("empty control frame")]
    Empty,
    #[error("unknown control command {0:?}")]
    Unknown(String),
    #[error("resize needs two numbers, COLS and ROWS")]
    ResizeArity,
    #[error("terminal size {0:?} is not a number from 1 to {MAX_DIMENSION}")]
    BadDimension(String),
}

impl Control {
    /// Parses one control frame's text: `resize COLS ROWS` (single spaces, decimal digits, no
    /// sign, 1 to [`MAX_DIMENSION`]).
    pub fn parse(text: &str) -> Result<Self, ControlError> {
        if text.len() > MAX_CONTROL {
            return Err(ControlError::TooLong);
        }
        let mut words = text.split(' ');
        match words.next() {
            Some("") | None => Err(ControlError::Empty),
            Some("resize") => {
                let (Some(c), Some(r), None) = (words.next(), words.next(), words.next()) else {
                    return Err(ControlError::ResizeArity);
                };
                Ok(Self::Resize {
                    cols: dimension(c)?,
                    rows: dimension(r)?,
                })
            }
            Some(other) => Err(ControlError::Unknown(other.chars().take(16).collect())),
        }
    }

    /// The frame's text for this command (what the page sends).
    #[must_use]
    pub fn encode(&self) -> String {
        match self {
            Self::Resize { cols, rows } => format!("resize {cols} {rows}"),
        }
    }
}

/// The most bytes an MFA answer frame may have: a credential id is at most 1023 bytes (1364 in
/// base64url), client data and authenticator data a few hundred, a signature under 150.
pub const MAX_MFA_ANSWER: usize = 8 * 1024;

/// The most bytes of the reason a page gives for giving no assertion.
pub const MAX_MFA_REASON: usize = 256;

/// The page's answer to a per-session MFA prompt, borrowed from the frame's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaAnswer<'a> {
    /// What `navigator.credentials.get` gave, each field base64url (no padding).
    Assertion {
        credential_id: &'a str,
        client_data_json: &'a str,
        authenticator_data: &'a str,
        signature: &'a str,
    },
    /// The page got no assertion (the user cancelled, the key timed out, no WebAuthn here):
    /// the browser's words, printable, at most [`MAX_MFA_REASON`] bytes.
    Cancelled { reason: &'a str },
}

/// Why a frame is not an answer to the MFA prompt (the page's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MfaAnswerError {
    #[error("MFA answer over {MAX_MFA_ANSWER} bytes")]
    TooLong,
    #[error("the terminal is waiting for the security key's answer, not {0:?}")]
    NotAnAnswer(String),
    #[error("an assertion has four fields: ID CLIENT_DATA AUTHENTICATOR_DATA SIGNATURE")]
    AssertionArity,
    #[error("an assertion field is not base64url")]
    NotBase64Url,
    #[error(
        "the reason for no assertion is over {MAX_MFA_REASON} bytes or holds control characters"
    )]
    BadReason,
}

impl<'a> MfaAnswer<'a> {
    /// Parses one text frame from the page while the MFA prompt is open.
    pub fn parse(text: &'a str) -> Result<Self, MfaAnswerError> {
        if text.len() > MAX_MFA_ANSWER {
            return Err(MfaAnswerError::TooLong);
        }
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        match word {
            "mfa-assertion" => {
                let mut fields = rest.split(' ');
                let (Some(id), Some(cd), Some(ad), Some(sig), None) = (
                    fields.next(),
                    fields.next(),
                    fields.next(),
                    fields.next(),
                    fields.next(),
                ) else {
                    return Err(MfaAnswerError::AssertionArity);
                };
                if ![id, cd, ad, sig].iter().all(|f| base64url(f)) {
                    return Err(MfaAnswerError::NotBase64Url);
                }
                Ok(Self::Assertion {
                    credential_id: id,
                    client_data_json: cd,
                    authenticator_data: ad,
                    signature: sig,
                })
            }
            "mfa-cancel" => {
                if rest.len() > MAX_MFA_REASON || rest.chars().any(char::is_control) {
                    return Err(MfaAnswerError::BadReason);
                }
                Ok(Self::Cancelled { reason: rest })
            }
            other => Err(MfaAnswerError::NotAnAnswer(
                other.chars().take(16).collect(),
            )),
        }
    }

    /// The frame's text for this answer (what the page sends).
    #[must_use]
    pub fn encode(&self) -> String {
        match self {
            Self::Assertion {
                credential_id,
                client_data_json,
                authenticator_data,
                signature,
            } => format!(
                "mfa-assertion {credential_id} {client_data_json} {authenticator_data} {signature}"
            ),
            Self::Cancelled { reason: "" } => "mfa-cancel".into(),
            Self::Cancelled { reason } => format!("mfa-cancel {reason}"),
        }
    }
}

/// A non-empty base64url word without padding.
fn base64url(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn dimension(word: &str) -> Result<u16, ControlError> {
    let bad = || ControlError::BadDimension(word.chars().take(8).collect());
    // Canonical decimal only (no leading zero): one text per size, as `encode` writes it.
    if word.is_empty()
        || word.len() > 4
        || word.starts_with('0')
        || !word.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    match word.parse::<u16>() {
        Ok(n) if (1..=MAX_DIMENSION).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// Cuts a byte stream into chunks that never end inside a UTF-8 sequence: the bytes of a
/// sequence begun at a chunk's end are held (at most three) and lead the next chunk. Bytes that
/// are not UTF-8 pass through as they are (a terminal may print anything); only a trailing
/// *incomplete but so far valid* sequence is held.
#[derive(Debug, Default, Clone)]
pub struct Utf8Boundary {
    held: [u8; 3],
    len: usize,
}

impl Utf8Boundary {
    /// The bytes to send now for `input`: any held bytes, then `input` less a trailing
    /// incomplete sequence (kept for the next call).
    pub fn push(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len + input.len());
        out.extend_from_slice(self.held.get(..self.len).unwrap_or_default());
        out.extend_from_slice(input);
        let keep = incomplete_tail(&out);
        let cut = out.len() - keep;
        self.len = keep;
        if let Some(tail) = out.get(cut..) {
            for (slot, b) in self.held.iter_mut().zip(tail) {
                *slot = *b;
            }
        }
        out.truncate(cut);
        out
    }

    /// What is still held (at the stream's end: send it as it is).
    pub fn flush(&mut self) -> Vec<u8> {
        let out = self.held.get(..self.len).unwrap_or_default().to_vec();
        self.len = 0;
        out
    }

    /// How many bytes are held.
    #[must_use]
    pub fn held(&self) -> usize {
        self.len
    }
}

/// How many bytes at the end of `bytes` begin a UTF-8 sequence that is not complete yet (and
/// could still be completed): 0 to 3.
#[must_use]
pub fn incomplete_tail(bytes: &[u8]) -> usize {
    // A sequence is at most 4 bytes: its lead is among the last 3 if it is incomplete.
    for back in 1..=bytes.len().min(3) {
        let Some(&b) = bytes.get(bytes.len() - back) else {
            return 0;
        };
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead
        }
        let need = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0, // ASCII or not a lead: nothing to hold
        };
        return if back < need { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mfa_assertion_round_trips_and_every_prefix_is_refused_or_shorter() {
        let a = MfaAnswer::Assertion {
            credential_id: "q83v",
            client_data_json: "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0",
            authenticator_data: "SZYN5YgO-_a",
            signature: "MEUCIQ",
        };
        let text = a.encode();
        assert_eq!(MfaAnswer::parse(&text), Ok(a));
        for cut in 0..text.len() {
            let prefix = &text[..cut];
            match MfaAnswer::parse(prefix) {
                Err(_) => {}
                Ok(MfaAnswer::Assertion { signature, .. }) => {
                    assert!(signature.len() < "MEUCIQ".len(), "{prefix:?}");
                }
                Ok(other) => panic!("{prefix:?} read as {other:?}"),
            }
        }
        let cancel = MfaAnswer::Cancelled {
            reason: "NotAllowedError: the user cancelled",
        };
        assert_eq!(MfaAnswer::parse(&cancel.encode()), Ok(cancel));
        assert_eq!(
            MfaAnswer::parse("mfa-cancel"),
            Ok(MfaAnswer::Cancelled { reason: "" })
        );
    }

    #[test]
    fn malformed_mfa_answers_say_what_was_wrong() {
        let long = format!("mfa-assertion {} b c d", "a".repeat(MAX_MFA_ANSWER));
        assert_eq!(MfaAnswer::parse(&long), Err(MfaAnswerError::TooLong));
        for (text, want) in [
            ("", MfaAnswerError::NotAnAnswer(String::new())),
            ("resize 80 24", MfaAnswerError::NotAnAnswer("resize".into())),
            (
                "MFA-ASSERTION a b c d",
                MfaAnswerError::NotAnAnswer("MFA-ASSERTION".into()),
            ),
            ("mfa-assertion", MfaAnswerError::AssertionArity),
            ("mfa-assertion a b c", MfaAnswerError::AssertionArity),
            ("mfa-assertion a b c d e", MfaAnswerError::AssertionArity),
            ("mfa-assertion a  b c", MfaAnswerError::NotBase64Url),
            ("mfa-assertion a b c d=", MfaAnswerError::NotBase64Url),
            ("mfa-assertion a+ b c d", MfaAnswerError::NotBase64Url),
            ("mfa-assertion a b/ c d", MfaAnswerError::NotBase64Url),
            ("mfa-assertion a b c\n d", MfaAnswerError::NotBase64Url),
            ("mfa-cancel a\u{7}b", MfaAnswerError::BadReason),
        ] {
            assert_eq!(MfaAnswer::parse(text), Err(want), "{text:?}");
        }
        let reason = format!("mfa-cancel {}", "x".repeat(MAX_MFA_REASON + 1));
        assert_eq!(MfaAnswer::parse(&reason), Err(MfaAnswerError::BadReason));
    }

    #[test]
    fn resize_round_trips_and_every_prefix_is_refused_or_a_smaller_size() {
        let c = Control::Resize {
            cols: 132,
            rows: 43,
        };
        let text = c.encode();
        assert_eq!(Control::parse(&text), Ok(c));
        for n in 0..text.len() {
            let prefix = &text[..n];
            match Control::parse(prefix) {
                Err(_) => {}
                Ok(Control::Resize { cols, rows }) => {
                    assert!(cols <= 132 && rows <= 43, "{prefix:?}");
                }
            }
        }
    }

    #[test]
    fn malformed_commands_are_refused_with_the_reason() {
        use ControlError::*;
        let cases: &[(&str, ControlError)] = &[
            ("", Empty),
            (" resize 1 1", Empty),
            ("resize", ResizeArity),
            ("resize 80", ResizeArity),
            ("resize 80 24 1", ResizeArity),
            ("resize  80 24", ResizeArity),
            ("resize 80 ", BadDimension(String::new())),
            ("resize 0 24", BadDimension("0".into())),
            ("resize 80 1001", BadDimension("1001".into())),
            ("resize +80 24", BadDimension("+80".into())),
            ("resize 06 1", BadDimension("06".into())),
            ("resize -1 24", BadDimension("-1".into())),
            ("resize 80 99999", BadDimension("99999".into())),
            ("resize ８０ 24", BadDimension("８０".into())),
            ("RESIZE 80 24", Unknown("RESIZE".into())),
            ("exec rm", Unknown("exec".into())),
        ];
        for (text, want) in cases {
            assert_eq!(Control::parse(text).as_ref(), Err(want), "{text:?}");
        }
        assert_eq!(Control::parse(&"x".repeat(65)), Err(TooLong));
        assert_eq!(
            Control::parse("resize 1000 1"),
            Ok(Control::Resize {
                cols: 1000,
                rows: 1
            })
        );
    }

    /// Every way of cutting `text` into two chunks yields whole sequences only, and the
    /// concatenation is the input.
    #[test]
    fn every_split_of_multibyte_text_gives_whole_sequences() {
        let text = "héllo → 世界 🎉 ok".as_bytes();
        for cut in 0..=text.len() {
            let mut b = Utf8Boundary::default();
            let first = b.push(&text[..cut]);
            assert!(std::str::from_utf8(&first).is_ok(), "cut {cut}");
            let second = b.push(&text[cut..]);
            assert!(std::str::from_utf8(&second).is_ok(), "cut {cut}");
            assert_eq!(b.held(), 0);
            assert_eq!([first, second].concat(), text);
        }
    }

    #[test]
    fn byte_by_byte_holds_at_most_three_and_loses_nothing() {
        let text = "a🎉b世".as_bytes();
        let mut b = Utf8Boundary::default();
        let mut out = Vec::new();
        for byte in text {
            out.extend(b.push(std::slice::from_ref(byte)));
            assert!(b.held() <= 3);
        }
        assert_eq!(out, text);
    }

    #[test]
    fn bytes_that_are_not_utf8_pass_through_and_a_dangling_lead_is_flushed() {
        let mut b = Utf8Boundary::default();
        assert_eq!(b.push(&[0xff, 0x80, b'x']), vec![0xff, 0x80, b'x']);
        assert_eq!(b.push(&[b'y', 0xe4, 0xb8]), vec![b'y']);
        assert_eq!(b.flush(), vec![0xe4, 0xb8]);
        assert_eq!(b.held(), 0);
        // A lead followed by too many continuations is not held (it cannot complete).
        assert_eq!(incomplete_tail(&[0xc3, 0xa9, 0x80]), 0);
        assert_eq!(incomplete_tail(&[0xf0, 0x9f, 0x8e]), 3);
        assert_eq!(incomplete_tail(&[0xf0, 0x9f, 0x8e, 0x89]), 0);
        assert_eq!(incomplete_tail(&[]), 0);
        assert_eq!(incomplete_tail(&[0xc0]), 0);
    }
}
