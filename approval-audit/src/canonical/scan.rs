//! Finding the bytes that end a JSON string's plain run, eight at a time.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Marks (high bit) every byte below `n` (n ≤ 128); exact for the lowest
/// marked byte, which is all the callers use.
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

fn equal(x: u64, b: u8) -> u64 {
    below(x ^ (ONES * u64::from(b)), 1)
}

/// Index of the first `"`, `\` or control character (below U+0020) in
/// `bytes`: the bytes a JSON string cannot hold literally.
#[inline]
pub(crate) fn find_special(bytes: &[u8]) -> Option<usize> {
    find::<false>(bytes)
}

/// Like [`find_special`], but also stops at any byte of 0x80 or above (the
/// start of a non-ASCII character), so a checker validates UTF-8 only in the
/// strings that need it.
#[inline]
pub(crate) fn find_special_or_high(bytes: &[u8]) -> Option<usize> {
    find::<true>(bytes)
}

#[inline]
fn find<const HIGH: bool>(bytes: &[u8]) -> Option<usize> {
    let stops = |b: u8| b == b'"' || b == b'\\' || b < 0x20 || (HIGH && b >= 0x80);
    let mut i = 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut lanes = [0u8; 8];
        lanes.copy_from_slice(word);
        let x = u64::from_le_bytes(lanes);
        let mut marks = equal(x, b'"') | equal(x, b'\\') | below(x, 0x20);
        if HIGH {
            marks |= x & HIGHS;
        }
        if marks != 0 {
            // Little-endian: the lowest marked lane is the first byte.
            return Some(i + (marks.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| stops(b))
        .map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{find_special, find_special_or_high};

    proptest! {
        #[test]
        fn agrees_with_a_byte_loop(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(find_special(&bytes), expected);
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b));
            prop_assert_eq!(find_special_or_high(&bytes), expected);
        }
    }
}
