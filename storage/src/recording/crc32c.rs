//! CRC-32C (Castagnoli), the checksum of recording headers and chunks. This module owns the
//! checksum's tables and its software implementation (slicing-by-8, a few hundred MB/s
//! without CPU intrinsics, which `#![forbid(unsafe_code)]` rules out); it must never change
//! its output, which is part of the recording format.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// `TABLES[0]` is the classic byte-at-a-time table; `TABLES[k]` advances a byte through `k`
/// further zero bytes, so eight bytes can be folded in per step.
static TABLES: [[u32; 256]; 8] = make_tables();

const fn make_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    tables
}

/// The CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut crc = !0u32;
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let v = u64::from_le_bytes(eight) ^ u64::from(crc);
        let b = v.to_le_bytes().map(usize::from);
        crc = t[7][b[0]]
            ^ t[6][b[1]]
            ^ t[5][b[2]]
            ^ t[4][b[3]]
            ^ t[3][b[4]]
            ^ t[2][b[5]]
            ^ t[1][b[6]]
            ^ t[0][b[7]];
    }
    for &byte in words.remainder() {
        crc = t[0][usize::from((crc as u8) ^ byte)] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    #[test]
    fn known_vectors() {
        // RFC 3720, appendix B.4, and the usual check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn slicing_matches_bytewise() {
        let data: Vec<u8> = (0u32..1000).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..len] {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ super::POLY
                    } else {
                        crc >> 1
                    };
                }
            }
            assert_eq!(crc32c(&data[..len]), !crc, "len {len}");
        }
    }
}
