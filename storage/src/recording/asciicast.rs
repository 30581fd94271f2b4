//! Export to asciicast v2, the format `asciinema play` reads. This module owns the mapping
//! from recording events to asciicast lines (output `"o"`, optional input `"i"`, resize `"r"`
//! as `"COLSxROWS"`; structured and end events are not exported) and the UTF-8 repair that
//! asciicast's JSON strings need: a multi-byte character split across two output events (or
//! chunks) is carried over whole to the next event, and only bytes that can never be UTF-8 are
//! replaced with U+FFFD. It must never lose or reorder output bytes that are valid UTF-8.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use super::error::RecordingError;
use super::format::{Event, Header, Recording, TimedEvent};

/// What an asciicast export contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsciicastOptions {
    /// Also export user input, as `"i"` events.
    pub include_input: bool,
    /// The cast's title; `None`: `"<login>@<server name>"`.
    pub title: Option<String>,
    /// Written as the header's `idle_time_limit`, which players apply to long pauses.
    pub idle_time_limit: Option<Duration>,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Event lines written (not counting the header line).
    pub lines: u64,
    /// Whether the recording stopped mid-chunk (its writer crashed): everything up to the last
    /// complete chunk was exported.
    pub truncated: bool,
}

/// Everything an export can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The recording is corrupt.
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// Writing to the sink failed.
    #[error("writing the recording export failed: {0}")]
    Write(#[source] std::io::Error),
}

/// Writes `recording` to `out` as an asciicast v2 file. A truncated recording is exported up
/// to its last complete chunk (see [`ExportSummary::truncated`]); a corrupt one fails after
/// the events before the corruption were written.
pub fn export_asciicast(
    recording: &Recording<'_>,
    opts: &AsciicastOptions,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    let mut cast =
        AsciicastWriter::new(out, recording.header(), opts).map_err(ExportError::Write)?;
    let mut truncated = false;
    for event in recording.events() {
        match event {
            Ok(event) => cast.write_event(&event).map_err(ExportError::Write)?,
            Err(err) if err.is_truncation() => truncated = true,
            Err(err) => return Err(err.into()),
        }
    }
    let lines = cast.finish().map_err(ExportError::Write)?;
    Ok(ExportSummary { lines, truncated })
}

#[derive(Serialize)]
struct CastHeader<'a> {
    version: u8,
    width: u16,
    height: u16,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_time_limit: Option<f64>,
    title: &'a str,
    env: CastEnv<'a>,
}

#[derive(Serialize)]
struct CastEnv<'a> {
    #[serde(rename = "TERM")]
    term: &'a str,
}

/// An asciicast v2 encoder over a sink, fed one event at a time.
#[derive(Debug)]
pub struct AsciicastWriter<W: Write> {
    out: W,
    include_input: bool,
    output: Utf8Carry,
    input: Utf8Carry,
    last: Duration,
    lines: u64,
    text: String,
}

impl<W: Write> AsciicastWriter<W> {
    /// Writes the header line for `header` to `out`.
    pub fn new(mut out: W, header: &Header, opts: &AsciicastOptions) -> std::io::Result<Self> {
        let meta = &header.meta;
        let default_title;
        let title = match &opts.title {
            Some(title) => title.as_str(),
            None => {
                default_title = format!("{}@{}", meta.login, meta.server_name);
                &default_title
            }
        };
        let line = CastHeader {
            version: 2,
            width: meta.cols,
            height: meta.rows,
            timestamp: meta.start_unix_us / 1_000_000,
            idle_time_limit: opts.idle_time_limit.map(|d| d.as_secs_f64()),
            title,
            env: CastEnv { term: &meta.term },
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        Ok(Self {
            out,
            include_input: opts.include_input,
            output: Utf8Carry::default(),
            input: Utf8Carry::default(),
            last: Duration::ZERO,
            lines: 0,
            text: String::new(),
        })
    }

    /// Writes the line (if any) for one event.
    pub fn write_event(&mut self, event: &TimedEvent<'_>) -> std::io::Result<()> {
        self.last = event.at;
        match event.event {
            Event::Output(bytes) => {
                self.text.clear();
                self.output.decode(bytes, &mut self.text);
                self.line(event.at, "o")
            }
            Event::Input(bytes) if self.include_input => {
                self.text.clear();
                self.input.decode(bytes, &mut self.text);
                self.line(event.at, "i")
            }
            Event::Resize { cols, rows } => {
                self.text = format!("{cols}x{rows}");
                self.line(event.at, "r")
            }
            Event::Input(_) | Event::Json(_) | Event::End { .. } => Ok(()),
        }
    }

    /// Writes out what is left of an incomplete character (as U+FFFD), flushes, and returns the
    /// number of event lines written.
    pub fn finish(mut self) -> std::io::Result<u64> {
        let at = self.last;
        if self.output.take_incomplete() {
            self.text = "\u{FFFD}".to_owned();
            self.line(at, "o")?;
        }
        if self.input.take_incomplete() && self.include_input {
            self.text = "\u{FFFD}".to_owned();
            self.line(at, "i")?;
        }
        self.out.flush()?;
        Ok(self.lines)
    }

    fn line(&mut self, at: Duration, code: &str) -> std::io::Result<()> {
        if self.text.is_empty() {
            return Ok(());
        }
        write!(
            self.out,
            "[{}.{:06}, \"{code}\", ",
            at.as_secs(),
            at.subsec_micros()
        )?;
        serde_json::to_writer(&mut self.out, &self.text)?;
        self.out.write_all(b"]\n")?;
        self.lines += 1;
        Ok(())
    }
}

/// The bytes of a UTF-8 character cut off at the end of one write, waiting for the rest.
#[derive(Debug, Default)]
pub(crate) struct Utf8Carry {
    held: Vec<u8>,
}

impl Utf8Carry {
    /// Appends the text of `bytes` (after any held bytes) to `out`, holding back an incomplete
    /// character at the end and replacing invalid bytes with U+FFFD.
    pub(crate) fn decode(&mut self, bytes: &[u8], out: &mut String) {
        if self.held.is_empty() {
            self.decode_fresh(bytes, out);
        } else {
            let mut joined = std::mem::take(&mut self.held);
            joined.extend_from_slice(bytes);
            self.decode_fresh(&joined, out);
        }
    }

    fn decode_fresh(&mut self, mut rest: &[u8], out: &mut String) {
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    return;
                }
                Err(err) => {
                    let (valid, after) =
                        rest.split_at_checked(err.valid_up_to()).unwrap_or_default();
                    if let Ok(text) = std::str::from_utf8(valid) {
                        out.push_str(text);
                    }
                    match err.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = after.get(bad..).unwrap_or_default();
                        }
                        None => {
                            self.held.clear();
                            self.held.extend_from_slice(after);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Drops held bytes; whether there were any.
    pub(crate) fn take_incomplete(&mut self) -> bool {
        let had = !self.held.is_empty();
        self.held.clear();
        had
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Carry;

    fn decode_all(pieces: &[&[u8]]) -> String {
        let mut carry = Utf8Carry::default();
        let mut out = String::new();
        for piece in pieces {
            carry.decode(piece, &mut out);
        }
        if carry.take_incomplete() {
            out.push('\u{FFFD}');
        }
        out
    }

    #[test]
    fn split_characters_are_rejoined() {
        let text = "héllo → 世界 🦀";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(decode_all(&[a, b]), text, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&singles), text);
    }

    #[test]
    fn invalid_bytes_match_lossy_decoding() {
        let samples: [&[u8]; 5] = [
            b"ok\xffok",
            b"\xe2\x82",
            b"\xf0\x9f\xa6\x80\x80",
            b"a\xc3(b",
            b"\xed\xa0\x80 surrogate",
        ];
        for sample in samples {
            assert_eq!(
                decode_all(&[sample]),
                String::from_utf8_lossy(sample),
                "{sample:?}"
            );
            for cut in 0..=sample.len() {
                let (a, b) = sample.split_at(cut);
                assert_eq!(
                    decode_all(&[a, b]),
                    String::from_utf8_lossy(sample),
                    "{sample:?} cut at {cut}"
                );
            }
        }
    }
}
