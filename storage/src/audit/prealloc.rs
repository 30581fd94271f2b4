//! Space made ready ahead of the writer. This module owns a thread that keeps the segment being
//! written zero-filled and fsynced some megabytes past the writer's end, so that the writer's
//! `fdatasync` flushes data only: overwriting blocks a file already has changes no metadata,
//! while appending makes every fsync commit the file system's journal too (about twice the time
//! and CPU per batch, measured on this machine's ext4). It must never write where the writer has
//! written or is writing: it only writes past `filled`, holding `extending` while it does, and
//! the writer takes `extending` before it writes past `filled` itself.
//!
//! Zero-filling costs about 1.4 ns per byte (on this machine: the zeros go through the page
//! cache and to disk too), so it pays only while batches are small: the journal commit it saves
//! (about 55 µs of CPU per batch) is worth the zeros of a batch of up to about 40 kB. The writer
//! says how large its batches run (each `write_at`); above [`WORTH_BELOW`] the filler
//! rests and the writer appends.
//!
//! Zeros past the last frame are not data: recovery cuts them off, and a sealed segment is cut
//! back to its last frame.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::segment::Segment;

/// Zeros written per step…
const STEP: u64 = 4 << 20;
/// …while fewer than this many bytes are ready past the writer's end.
const AHEAD: u64 = 16 << 20;
/// Zero-filling is worth it while the writer's batches average fewer bytes than this.
pub(crate) const WORTH_BELOW: u64 = 32 << 10;

/// What the filler and the writer share.
#[derive(Debug, Default)]
pub(crate) struct Prealloc {
    /// The segment being written, if any.
    target: Mutex<Option<Arc<Segment>>>,
    /// Held while bytes past `filled` are written (by the filler, or by the writer outrunning it).
    extending: Mutex<()>,
    /// Bytes of the target that exist on disk (frames, then zeros).
    filled: AtomicU64,
    /// Where the writer's frames end.
    end: AtomicU64,
    /// A moving average of the writer's batch sizes, in bytes.
    batch_bytes: AtomicU64,
    stop: AtomicBool,
    wake: Condvar,
    asleep: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Prealloc {
    /// Starts the filler thread.
    pub(crate) fn spawn() -> std::io::Result<(Arc<Self>, JoinHandle<()>)> {
        let shared = Arc::new(Self::default());
        let filler = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("hop-audit-alloc".to_owned())
            .spawn(move || filler.run())?;
        Ok((shared, thread))
    }

    /// The writer now appends to `segment`, whose frames end at `end`.
    pub(crate) fn follow(&self, segment: &Arc<Segment>, end: u64) {
        let _extending = lock(&self.extending);
        *lock(&self.target) = Some(Arc::clone(segment));
        self.filled.store(end, Ordering::Release);
        self.end.store(end, Ordering::Release);
        self.wake.notify_one();
    }

    /// Runs `write` for bytes `[end, end + len)` of the target: at once when they are already
    /// zero-filled, else while holding off the filler.
    pub(crate) fn write_at<T>(&self, end: u64, len: u64, write: impl FnOnce() -> T) -> T {
        let new_end = end + len;
        let out = if new_end <= self.filled.load(Ordering::Acquire) {
            write()
        } else {
            let _extending = lock(&self.extending);
            let out = write();
            self.filled.fetch_max(new_end, Ordering::AcqRel);
            out
        };
        self.end.store(new_end, Ordering::Release);
        self.batch_written(len);
        if self.worth_it() && self.filled.load(Ordering::Acquire) < new_end + AHEAD {
            self.wake.notify_one();
        }
        out
    }

    /// The writer wrote a batch of `bytes`: keeps the moving average the filler decides by.
    fn batch_written(&self, bytes: u64) {
        let average = self.batch_bytes.load(Ordering::Relaxed);
        self.batch_bytes
            .store((average * 7 + bytes) / 8, Ordering::Relaxed);
    }

    fn worth_it(&self) -> bool {
        self.batch_bytes.load(Ordering::Relaxed) < WORTH_BELOW
    }

    /// Cuts the zeros off `segment` (being left, or the log closing). The filler has moved on
    /// or stopped, so nothing writes there any more.
    pub(crate) fn trim(&self, segment: &Arc<Segment>, end: u64) {
        let _extending = lock(&self.extending);
        let mut target = lock(&self.target);
        if target.as_ref().is_some_and(|t| Arc::ptr_eq(t, segment)) {
            *target = None;
        }
        drop(target);
        let trimmed = segment
            .data
            .set_len(end)
            .and_then(|()| segment.data.sync_data());
        if let Err(err) = trimmed {
            tracing::warn!(segment = %segment.data_path.display(), error = %err, "audit segment's spare space not cut off; it is at the next open");
        }
    }

    /// Stops the filler after its current step.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _asleep = lock(&self.asleep);
        self.wake.notify_one();
    }

    fn run(&self) {
        while !self.stop.load(Ordering::Acquire) {
            if !self.step() {
                let asleep = lock(&self.asleep);
                if self.stop.load(Ordering::Acquire) {
                    break;
                }
                // Woken by the writer; the timeout only bounds a missed wake-up.
                let _ = self.wake.wait_timeout(asleep, Duration::from_millis(100));
            }
        }
    }

    /// Zero-fills one step if the writer is close to the end of what is ready. Returns whether
    /// it did (so there may be more to do).
    fn step(&self) -> bool {
        if !self.worth_it() {
            return false;
        }
        let _extending = lock(&self.extending);
        let Some(target) = lock(&self.target).clone() else {
            return false;
        };
        let filled = self.filled.load(Ordering::Acquire);
        if filled >= self.end.load(Ordering::Acquire) + AHEAD {
            return false;
        }
        let zeros = vec![0u8; STEP as usize];
        let done = target
            .data
            .write_all_at(&zeros, filled)
            .and_then(|()| target.data.sync_data());
        match done {
            Ok(()) => {
                self.filled.store(filled + STEP, Ordering::Release);
                true
            }
            Err(err) => {
                // The writer still works (appending costs it a journal commit per batch); a
                // full disk is left to the writer for a while.
                tracing::warn!(segment = %target.data_path.display(), error = %err, "audit segment space not made ready ahead of the writer");
                drop(_extending);
                std::thread::sleep(Duration::from_secs(1));
                false
            }
        }
    }
}
