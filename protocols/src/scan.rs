//! The framing engine behind the streaming message scanners
//! ([`crate::postgres::FrontendScanner`], [`crate::mysql::CommandScanner`]).
//!
//! This module owns one job: cutting a byte stream that arrives in arbitrary
//! chunks into `header + body` frames with bounded memory. A frame that lies
//! whole inside the current chunk is handed out in place (no copy); one that
//! straddles chunks is assembled in a buffer that never grows past the cap;
//! a body longer than the cap yields only its first `cap` bytes and the rest
//! is skipped as it streams by; a frame the protocol marks "skip" (bulk data)
//! is never buffered at all. It knows nothing of any protocol: the header is
//! decoded by a closure. The events are the same however the stream is split.

/// What the protocol decided from a complete header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameInfo {
    /// Bytes of body after the header.
    pub body_len: usize,
    /// Never buffer or expose the body (bulk data).
    pub skip: bool,
}

/// A frame, borrowing either the caller's chunk or the engine's buffer.
#[derive(Debug)]
pub(crate) enum RawEvent<'a, const H: usize> {
    /// The whole body (at most the cap).
    Whole { header: [u8; H], body: &'a [u8] },
    /// The first `cap` bytes of a longer body; the rest is being skipped.
    Head {
        header: [u8; H],
        body_len: usize,
        head: &'a [u8],
    },
    /// A skip-marked frame; its body is being skipped.
    Skipped { header: [u8; H], body_len: usize },
}

#[derive(Clone, Copy, Debug)]
enum Src {
    Input(usize, usize),
    Buf,
}

#[derive(Clone, Copy, Debug)]
enum Emit<const H: usize> {
    Whole([u8; H], Src),
    Head([u8; H], usize, Src),
    Skipped([u8; H], usize),
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Between frames (possibly with part of a header in `header`).
    Idle,
    /// Assembling a body of `body_len` bytes, keeping at most `cap` of them.
    Body { body_len: usize },
    /// Dropping `remaining` more body bytes.
    Skip { remaining: usize },
}

/// Chunk-by-chunk framing state with a bounded buffer.
#[derive(Clone, Debug)]
pub(crate) struct Engine<const H: usize> {
    cap: usize,
    header: [u8; H],
    have: usize,
    body: Vec<u8>,
    state: State,
    /// `body` was handed out by the previous step; clear it first.
    release: bool,
}

impl<const H: usize> Engine<H> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            header: [0; H],
            have: 0,
            body: Vec::new(),
            state: State::Idle,
            release: false,
        }
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes currently held (partial header + partial body).
    pub(crate) fn buffered(&self) -> usize {
        self.have + if self.release { 0 } else { self.body.len() }
    }

    /// True between frames with nothing held.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle) && self.have == 0
    }

    /// Consume bytes from `input` until one frame event is ready or the input
    /// runs out. Returns how many bytes were consumed and the event, if any.
    pub(crate) fn step<'x, E>(
        &'x mut self,
        input: &'x [u8],
        decode: impl Fn(&[u8; H]) -> Result<FrameInfo, E>,
    ) -> Result<(usize, Option<RawEvent<'x, H>>), E> {
        if self.release {
            self.body.clear();
            self.release = false;
        }
        let (pos, emit) = self.advance(input, decode)?;
        let event = emit.map(|e| {
            let src = |s: Src| match s {
                Src::Input(a, b) => input.get(a..b).unwrap_or_default(),
                Src::Buf => self.body.as_slice(),
            };
            match e {
                Emit::Whole(header, s) => RawEvent::Whole {
                    header,
                    body: src(s),
                },
                Emit::Head(header, body_len, s) => RawEvent::Head {
                    header,
                    body_len,
                    head: src(s),
                },
                Emit::Skipped(header, body_len) => RawEvent::Skipped { header, body_len },
            }
        });
        Ok((pos, event))
    }

    fn advance<E>(
        &mut self,
        input: &[u8],
        decode: impl Fn(&[u8; H]) -> Result<FrameInfo, E>,
    ) -> Result<(usize, Option<Emit<H>>), E> {
        let mut pos = 0;
        loop {
            let avail = input.len().saturating_sub(pos);
            match self.state {
                State::Skip { remaining } => {
                    let n = remaining.min(avail);
                    pos += n;
                    if n == remaining {
                        self.state = State::Idle;
                    } else {
                        self.state = State::Skip {
                            remaining: remaining - n,
                        };
                        return Ok((pos, None));
                    }
                }
                State::Idle if avail == 0 => return Ok((pos, None)),
                State::Idle if self.have == 0 && avail >= H => {
                    // Fast path: the whole header is in this chunk.
                    let Some(header) = crate::reader::array_at::<H>(input, pos) else {
                        return Ok((pos, None));
                    };
                    let info = decode(&header)?;
                    let body_at = pos + H;
                    let in_chunk = avail - H;
                    if info.skip {
                        pos = body_at;
                        self.state = State::Skip {
                            remaining: info.body_len,
                        };
                        return Ok((pos, Some(Emit::Skipped(header, info.body_len))));
                    }
                    let want = info.body_len.min(self.cap);
                    if in_chunk >= want {
                        pos = body_at + want;
                        let src = Src::Input(body_at, pos);
                        if want == info.body_len {
                            return Ok((pos, Some(Emit::Whole(header, src))));
                        }
                        self.state = State::Skip {
                            remaining: info.body_len - want,
                        };
                        return Ok((pos, Some(Emit::Head(header, info.body_len, src))));
                    }
                    // The body straddles chunks: assemble it.
                    self.header = header;
                    self.have = 0;
                    pos = body_at;
                    self.state = State::Body {
                        body_len: info.body_len,
                    };
                }
                State::Idle => {
                    let n = (H - self.have).min(avail);
                    if let (Some(dst), Some(src)) = (
                        self.header.get_mut(self.have..self.have + n),
                        input.get(pos..pos + n),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    self.have += n;
                    pos += n;
                    if self.have < H {
                        return Ok((pos, None));
                    }
                    self.have = 0;
                    let header = self.header;
                    let info = decode(&header)?;
                    if info.skip {
                        self.state = State::Skip {
                            remaining: info.body_len,
                        };
                        return Ok((pos, Some(Emit::Skipped(header, info.body_len))));
                    }
                    self.state = State::Body {
                        body_len: info.body_len,
                    };
                }
                State::Body { body_len } => {
                    let want = body_len.min(self.cap);
                    let n = want.saturating_sub(self.body.len()).min(avail);
                    self.body
                        .extend_from_slice(input.get(pos..pos + n).unwrap_or_default());
                    pos += n;
                    if self.body.len() < want {
                        return Ok((pos, None));
                    }
                    self.release = true;
                    let header = self.header;
                    if want == body_len {
                        self.state = State::Idle;
                        return Ok((pos, Some(Emit::Whole(header, Src::Buf))));
                    }
                    self.state = State::Skip {
                        remaining: body_len - want,
                    };
                    return Ok((pos, Some(Emit::Head(header, body_len, Src::Buf))));
                }
            }
        }
    }
}
