//! A bounds-checked cursor over a byte slice (in the style of quinn-proto's
//! `coding.rs`). Every read returns `None` instead of panicking when the bytes
//! run out, so parsers can map "short" to either `NeedMore` or `Malformed`
//! depending on whether the enclosing length was already known. Positions are
//! absolute offsets into the slice the root reader was created over, so that
//! sub-readers can report ranges that stay valid for the whole message.

use core::ops::Range;

#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Absolute position of the next byte.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes, advancing past them.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Like [`Reader::take`] but returns the absolute range of the bytes.
    pub(crate) fn take_range(&mut self, n: usize) -> Option<Range<usize>> {
        let start = self.pos;
        self.take(n)?;
        Some(start..self.pos)
    }

    /// A reader over the next `n` bytes only (positions stay absolute); this
    /// reader advances past them.
    pub(crate) fn sub(&mut self, n: usize) -> Option<Reader<'a>> {
        let start = self.pos;
        let end = start.checked_add(n)?;
        let buf = self.buf.get(..end)?;
        self.pos = end;
        Some(Reader { buf, pos: start })
    }

    /// Everything that is left, advancing to the end.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        out
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

/// `N` bytes starting at `at`, if they are all there.
pub(crate) fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Position of the first `needle` in `hay`.
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}
