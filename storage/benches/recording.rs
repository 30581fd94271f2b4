//! Session recording benchmarks: encoding typical PTY output with the default writer (bytes of
//! terminal output per second), reading it back (file bytes per second, every event decoded),
//! exporting it as asciicast, and the CRC-32C under both.
//!
//! The workload is 8 MiB of terminal output: colored `ls`-style lines and shell prompts written
//! in bursts of 1 to 4096 bytes, 40% of them one- or few-byte echoes, 20–2000 µs apart, with a
//! keystroke of input every 50 writes.
//!
//! Run: `cargo bench -p hop-storage --bench recording -- --warm-up-time 1 --measurement-time 3`

// reason: a benchmark that cannot set up or run should stop at once, and its helpers are not
// #[test] functions that clippy's allow-unwrap-in-tests would cover.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hop_storage::recording::{
    AsciicastOptions, Event, Recording, RecordingMeta, RecordingWriter, crc32c, export_asciicast,
};

const OUTPUT_BYTES: usize = 8 << 20;

struct Workload {
    /// (time since start, is input, bytes)
    writes: Vec<(Duration, bool, Vec<u8>)>,
    output_bytes: u64,
}

fn workload() -> Workload {
    let line = "\x1b[01;34mdrwxr-xr-x\x1b[0m  2 alice staff  4096 Nov 21 09:11 \x1b[01;32mrecordings\x1b[0m\r\n";
    let text: Vec<u8> = line.bytes().cycle().take(OUTPUT_BYTES).collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut writes = Vec::new();
    let mut at = Duration::ZERO;
    let mut pos = 0;
    let mut output_bytes = 0;
    while pos < text.len() {
        at += Duration::from_micros(20 + rand(1980));
        let len = if rand(10) < 4 {
            1 + rand(3) as usize
        } else {
            1 + rand(4096) as usize
        }
        .min(text.len() - pos);
        writes.push((at, false, text[pos..pos + len].to_vec()));
        output_bytes += len as u64;
        pos += len;
        if writes.len() % 50 == 0 {
            writes.push((at, true, b"l".to_vec()));
        }
    }
    Workload {
        writes,
        output_bytes,
    }
}

fn meta() -> RecordingMeta {
    RecordingMeta {
        session_id: "0190a5c4-7d2e-7b3a-9f10-3c5d2e8a4b61".to_owned(),
        kind: "ssh".to_owned(),
        cluster: "bench.example.com".to_owned(),
        user: "alice".to_owned(),
        login: "root".to_owned(),
        server_id: "node-1".to_owned(),
        server_name: "web-1".to_owned(),
        start_unix_us: 1_700_000_000_000_000,
        cols: 120,
        rows: 40,
        term: "xterm-256color".to_owned(),
    }
}

fn record(w: &Workload) -> Vec<u8> {
    let mut writer = RecordingWriter::new(meta()).unwrap();
    let mut file = writer.header_bytes().to_vec();
    for (at, input, bytes) in &w.writes {
        let done = if *input {
            writer.push_input(*at, bytes)
        } else {
            writer.push_output(*at, bytes)
        };
        if let Some(done) = done {
            file.extend_from_slice(&done);
        }
    }
    let end = w.writes.last().map_or(Duration::ZERO, |w| w.0);
    file.extend(writer.finish(end, Some(0)));
    file
}

fn benches(c: &mut Criterion) {
    let w = workload();
    let file = record(&w);
    eprintln!(
        "recording workload: {} writes, {} output bytes, {} file bytes ({:.3} of the output)",
        w.writes.len(),
        w.output_bytes,
        file.len(),
        file.len() as f64 / w.output_bytes as f64
    );

    let mut group = c.benchmark_group("recording");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(w.output_bytes));
    group.bench_function("write_pty_output", |b| b.iter(|| black_box(record(&w))));

    group.throughput(Throughput::Bytes(file.len() as u64));
    group.bench_function("read_all_events", |b| {
        b.iter(|| {
            let rec = Recording::parse(black_box(&file)).unwrap();
            let mut bytes = 0usize;
            for event in rec.events() {
                if let Event::Output(b) = event.unwrap().event {
                    bytes += b.len();
                }
            }
            black_box(bytes)
        })
    });
    group.bench_function("export_asciicast", |b| {
        let mut out = Vec::with_capacity(file.len() * 2);
        b.iter(|| {
            out.clear();
            let rec = Recording::parse(&file).unwrap();
            export_asciicast(&rec, &AsciicastOptions::default(), &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.bench_function("crc32c", |b| b.iter(|| black_box(crc32c(black_box(&file)))));
    group.finish();
}

criterion_group!(recording, benches);
criterion_main!(recording);
