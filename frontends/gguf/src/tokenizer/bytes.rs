//! GPT-2's byte ↔ code-point map (`bytes_to_unicode`, ../shared/docs/format.md §6.1).
//!
//! Bytes `0x21..=0x7E`, `0xA1..=0xAC` and `0xAE..=0xFF` map to the code point of the same
//! value; the other 68 bytes, in increasing order, map to U+0100 + k.

/// The code point that stands for byte `b` in byte-level token texts.
pub(super) const fn byte_to_char(b: u8) -> char {
    let b32 = b as u32;
    let cp = if is_printable(b) {
        b32
    } else {
        // k = number of non-printable bytes below b.
        let mut k = 0;
        let mut x = 0u32;
        while x < b32 {
            if !is_printable(x as u8) {
                k += 1;
            }
            x += 1;
        }
        0x100 + k
    };
    match char::from_u32(cp) {
        Some(c) => c,
        None => '\u{FFFD}', // unreachable: cp < 0x144
    }
}

const fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The byte a byte-level code point stands for, if any.
pub(super) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x100 {
        let b = cp as u8;
        return is_printable(b).then_some(b);
    }
    if (0x100..0x100 + 68).contains(&cp) {
        return Some(NON_PRINTABLE[(cp - 0x100) as usize]);
    }
    None
}

/// The 68 non-printable bytes in increasing order (index k ↔ U+0100 + k).
const NON_PRINTABLE: [u8; 68] = {
    let mut t = [0u8; 68];
    let mut k = 0;
    let mut b = 0u32;
    while b < 256 {
        if !is_printable(b as u8) {
            t[k] = b as u8;
            k += 1;
        }
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips() {
        assert_eq!(byte_to_char(b' '), '\u{120}'); // Ġ
        assert_eq!(byte_to_char(b'\n'), '\u{10A}'); // Ċ
        assert_eq!(byte_to_char(b'\t'), '\u{109}'); // ĉ
        assert_eq!(byte_to_char(0xAD), '\u{143}'); // Ń
        assert_eq!(byte_to_char(b'A'), 'A');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
    }
}
