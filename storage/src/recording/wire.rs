//! The primitive encodings of the recording format: LEB128 varints and a bounds-checked byte
//! cursor. This module owns the rule that decoding never panics, never indexes past the end of
//! its input and never reads more than [`MAX_VARINT_LEN`] bytes for one integer.

/// The longest LEB128 encoding of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag-maps a signed integer onto an unsigned one (0, -1, 1, -2, … → 0, 1, 2, 3, …).
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A forward-only reader over untrusted bytes; every method returns `None` instead of reading
/// past the end.
#[derive(Debug, Clone)]
pub struct ByteCursor<'a> {
    rest: &'a [u8],
}

impl<'a> ByteCursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// The bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    /// An unsigned LEB128 varint; `None` if the input ends inside it or it overflows `u64`.
    pub fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.u8()?;
            let low = u64::from(byte & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if i == MAX_VARINT_LEN - 1 && low > 1 {
                return None;
            }
            v |= low << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= MAX_VARINT_LEN);
            let mut cur = ByteCursor::new(&out);
            assert_eq!(cur.varint(), Some(v));
            assert!(cur.is_empty());
            for cut in 0..out.len() {
                assert_eq!(ByteCursor::new(&out[..cut]).varint(), None);
            }
        }
    }

    #[test]
    fn overlong_varints_are_refused() {
        assert_eq!(ByteCursor::new(&[0xff; 11]).varint(), None);
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(ByteCursor::new(&max).varint(), Some(u64::MAX));
        max[9] = 0x02;
        assert_eq!(ByteCursor::new(&max).varint(), None);
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [
            0,
            -1,
            1,
            -2,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
