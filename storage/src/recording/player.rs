//! The timing of playback (`hop play`, the web player). This module owns
//! [`PlaybackSchedule`], which maps each event's recorded time to the moment, measured from
//! the start of playback, at which a player should show it: gaps between events are divided by
//! the speed factor and, like `asciinema play -i`, capped at an idle limit first. It does no IO
//! and never reads a clock: the player measures elapsed time and sleeps for
//! [`PlaybackSchedule::wait`]. It must never schedule an event before the one preceding it.

use std::time::Duration;

/// The slowest speed factor.
pub const MIN_SPEED: f64 = 1.0 / 64.0;
/// The fastest speed factor.
pub const MAX_SPEED: f64 = 1024.0;

/// How to pace playback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaybackOptions {
    /// Speed factor: 2.0 plays twice as fast. [`MIN_SPEED`] to [`MAX_SPEED`].
    pub speed: f64,
    /// Recorded pauses longer than this are shortened to it (before the speed applies).
    pub idle_limit: Option<Duration>,
}

impl Default for PlaybackOptions {
    fn default() -> Self {
        Self {
            speed: 1.0,
            idle_limit: None,
        }
    }
}

/// Everything setting up a playback can fail with (the caller's fault: a bad flag).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaybackError {
    /// The speed factor is not a number in range.
    #[error("playback speed {speed} is out of range: must be between {MIN_SPEED} and {MAX_SPEED}")]
    InvalidSpeed {
        /// The speed given.
        speed: f64,
    },
    /// The idle limit is zero.
    #[error("the playback idle limit must be longer than zero")]
    InvalidIdleLimit,
}

fn check_speed(speed: f64) -> Result<f64, PlaybackError> {
    if (MIN_SPEED..=MAX_SPEED).contains(&speed) {
        Ok(speed)
    } else {
        Err(PlaybackError::InvalidSpeed { speed })
    }
}

/// When each event of a recording is due during playback; see the module documentation.
/// Feed it the times of the events the player shows, in order.
#[derive(Debug, Clone)]
pub struct PlaybackSchedule {
    speed: f64,
    idle_limit: Option<Duration>,
    /// Recorded time of the previous event (the start of the recording before the first).
    prev_at: Duration,
    /// Playback time at which the previous event was due.
    prev_due: Duration,
}

impl PlaybackSchedule {
    /// A schedule for a playback starting at the beginning of the recording.
    pub fn new(opts: PlaybackOptions) -> Result<Self, PlaybackError> {
        if opts.idle_limit == Some(Duration::ZERO) {
            return Err(PlaybackError::InvalidIdleLimit);
        }
        Ok(Self {
            speed: check_speed(opts.speed)?,
            idle_limit: opts.idle_limit,
            prev_at: Duration::ZERO,
            prev_due: Duration::ZERO,
        })
    }

    /// The playback time (since playback started) at which the event recorded at `at` (since
    /// the session started) is due. Times earlier than the previous event's count as equal.
    pub fn due(&mut self, at: Duration) -> Duration {
        let mut gap = at.saturating_sub(self.prev_at);
        if let Some(limit) = self.idle_limit {
            gap = gap.min(limit);
        }
        // In whole microseconds, the recording's resolution (a float-to-int `as` saturates).
        let gap_us = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
        let scaled = Duration::from_micros((gap_us as f64 / self.speed).round() as u64);
        self.prev_at = self.prev_at.max(at);
        self.prev_due = self.prev_due.saturating_add(scaled);
        self.prev_due
    }

    /// Changes the speed from the next gap on (a player's `+`/`-` keys).
    pub fn set_speed(&mut self, speed: f64) -> Result<(), PlaybackError> {
        self.speed = check_speed(speed)?;
        Ok(())
    }

    /// The current speed factor.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Skips ahead: the next event's gap is measured from the recorded time `at`, so the events
    /// up to `at` (which the player shows at once, or not at all) take no playback time.
    pub fn skip_to(&mut self, at: Duration) {
        self.prev_at = self.prev_at.max(at);
    }

    /// Moves the whole remaining schedule later by `paused` (the time the player was paused).
    pub fn pause_for(&mut self, paused: Duration) {
        self.prev_due = self.prev_due.saturating_add(paused);
    }

    /// How long to sleep before showing an event due at `due` when `elapsed` has passed since
    /// playback started (zero if it is already late).
    pub fn wait(due: Duration, elapsed: Duration) -> Duration {
        due.saturating_sub(elapsed)
    }
}
