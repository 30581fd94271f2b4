//! Space made ready ahead of the writer. This module owns a thread that keeps the segment being
//! written zero-filled and fsynced some megabytes past the writer's end, so that the writer's
//! `fdatasync` flushes data only: overwriting blocks a file already has changes no metadata,
//! while appending makes every fsync commit the file system's journal too (about twice the time
//! and CPU per batch, measured on this machine's ext4). It must never write where the writer has
//! written or is writing: it only writes past `filled`, holding `extending` while it does, and
//! the writer takes `extending` before it writes past `filled` itself.
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
        if self.filled.load(Ordering::Acquire) < new_end + AHEAD {
            self.wake.notify_one();
        }
        out
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
