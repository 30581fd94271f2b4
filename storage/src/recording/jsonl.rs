//! Export of every recording event as JSON lines, for search and analysis tools. This module
//! owns that line format: a header line with the metadata, then one object per event with its
//! exact time in microseconds; byte payloads are `text` when they are valid UTF-8 on their own
//! and `hex` otherwise, so the export is lossless. It must never drop an event.

use std::io::Write;

use serde::Serialize;

use super::asciicast::{ExportError, ExportSummary};
use super::format::{Event, Recording, RecordingMeta};

#[derive(Serialize)]
struct HeaderLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    format_version: u16,
    meta: &'a RecordingMeta,
}

#[derive(Serialize)]
struct EventLine<'a> {
    at_us: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cols: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_status: Option<i32>,
}

impl EventLine<'_> {
    fn new(at_us: u64, kind: &'static str) -> Self {
        Self {
            at_us,
            kind,
            text: None,
            hex: None,
            cols: None,
            rows: None,
            event: None,
            exit_status: None,
        }
    }
}

/// Writes the header and every event of `recording` to `out` as JSON lines: `{"type":
/// "header", …}`, then `{"at_us", "type": "output" | "input" | "resize" | "event" | "end",
/// …}`. Truncation and corruption are handled as by [`super::export_asciicast`].
pub fn export_json_lines(
    recording: &Recording<'_>,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    write_line(
        out,
        &HeaderLine {
            kind: "header",
            format_version: recording.header().version,
            meta: recording.meta(),
        },
    )?;
    let mut summary = ExportSummary::default();
    for event in recording.events() {
        let event = match event {
            Ok(event) => event,
            Err(err) if err.is_truncation() => {
                summary.truncated = true;
                break;
            }
            Err(err) => return Err(err.into()),
        };
        let at_us = u64::try_from(event.at.as_micros()).unwrap_or(u64::MAX);
        let l = match event.event {
            Event::Output(bytes) => bytes_line(at_us, "output", bytes),
            Event::Input(bytes) => bytes_line(at_us, "input", bytes),
            Event::Resize { cols, rows } => EventLine {
                cols: Some(cols),
                rows: Some(rows),
                ..EventLine::new(at_us, "resize")
            },
            Event::Json(text) => match serde_json::from_str(text) {
                Ok(value) => EventLine {
                    event: Some(value),
                    ..EventLine::new(at_us, "event")
                },
                Err(_) => EventLine {
                    text: Some(text),
                    ..EventLine::new(at_us, "event")
                },
            },
            Event::End { exit_status } => EventLine {
                exit_status,
                ..EventLine::new(at_us, "end")
            },
        };
        write_line(out, &l)?;
        summary.lines += 1;
    }
    out.flush().map_err(ExportError::Write)?;
    Ok(summary)
}

fn bytes_line<'a>(at_us: u64, kind: &'static str, bytes: &'a [u8]) -> EventLine<'a> {
    let mut line = EventLine::new(at_us, kind);
    match std::str::from_utf8(bytes) {
        Ok(text) => line.text = Some(text),
        Err(_) => line.hex = Some(hex::encode(bytes)),
    }
    line
}

fn write_line<T: Serialize>(out: &mut dyn Write, line: &T) -> Result<(), ExportError> {
    serde_json::to_writer(&mut *out, line)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(ExportError::Write)
}
