//! Export. This module owns writing a time range of the log as JSON lines, oldest event time
//! first, each line the stored event with its chain fields (`seq`, `chain`, `prev_hash`,
//! `hash`) so an external tool can re-check the chain. It lists what the time index holds (the
//! log indexes every event queued before an export first) and must never write to the log.

use std::io::Write;
use std::time::SystemTime;

use redb::ReadableDatabase;

use super::chain::decode_record;
use super::error::AuditError;
use super::event::{json_line, system_time_to_us};
use super::index::DIM_TIME;
use super::search::{Window, blocks, indexed_through, merge, tail_positions};
use super::tables::BLOCKS;
use super::writer::Shared;

pub(crate) fn export(
    shared: &Shared,
    from: Option<SystemTime>,
    to: Option<SystemTime>,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let lo = (from.map_or(0, system_time_to_us), 0);
    let hi = (to.map_or(u64::MAX, system_time_to_us), 0);
    if lo >= hi {
        return Ok(0);
    }
    let txn = shared.db.begin_read().map_err(|e| shared.err(e))?;
    let window = Window {
        lo,
        hi,
        newest_first: false,
        indexed_through: indexed_through(shared, &txn)?,
    };
    let table = txn.open_table(BLOCKS).map_err(|e| shared.err(e))?;
    let indexed = blocks(&table, DIM_TIME, "", &window).map_err(|e| shared.err(e))?;
    let tail = tail_positions(shared, &window, &[], |_| true)?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    let mut written = 0;
    for position in merge(vec![indexed, tail], false) {
        let (_, seq) = position.map_err(|e| shared.err(e))?;
        let Some(bytes) = shared.segments.record(seq)? else {
            continue;
        };
        let record = decode_record(&bytes)
            .map_err(|detail| shared.corrupt(format!("audit event {seq}: {detail}")))?;
        out.write_all(&json_line(record.canonical, record.hash))
            .and_then(|()| out.write_all(b"\n"))
            .map_err(AuditError::Export)?;
        written += 1;
    }
    out.flush().map_err(AuditError::Export)?;
    Ok(written)
}
