//! Code-point classes as llama.cpp's `unicode.cpp` sees them (../shared/docs/format.md §6.3).
//!
//! llama.cpp classifies code points with its own table (`unicode-data.cpp`, generated from
//! Unicode 15.1's UnicodeData.txt) and a fixed White_Space list. We ship the same data:
//! `unicode_tables.rs` is generated from Unicode 15.1 by `gen_unicode_tables.py` and keeps
//! the three classes the pre-tokenizers ask about (letter `\p{L}`, number `\p{N}`,
//! punctuation `\p{P}`). A crate's tables (regex-syntax, unicode-general-category) would
//! follow a newer Unicode version (16.0 at the time of writing) and so classify the code
//! points assigned since 15.1 differently from bitnet.cpp; a 27 KB generated table avoids
//! that and adds no dependency.

use super::unicode_tables::RANGES;

/// A code point's general-category class, reduced to what the tokenizer asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// Any other category (symbols, marks, separators, controls, unassigned).
    O,
    /// Letter (`Lu Ll Lt Lm Lo`).
    L,
    /// Number (`Nd Nl No`).
    N,
    /// Punctuation (`Pc Pd Ps Pe Pi Pf Po`).
    P,
}

/// Flag bits of one code point: llama.cpp's `unicode_cpt_flags` reduced to what we use.
pub(super) const LETTER: u8 = 1;
/// `\p{N}`.
pub(super) const NUMBER: u8 = 2;
/// `\p{P}`.
pub(super) const PUNCT: u8 = 4;
/// `\s` (Unicode White_Space).
pub(super) const WHITESPACE: u8 = 8;
/// Set for every code point; a position outside the current piece has flags 0. llama.cpp's
/// "symbol" rules test `flags != 0`, which is false only outside the piece.
pub(super) const DEFINED: u8 = 16;

/// Unicode's White_Space property, as llama.cpp's `unicode_set_whitespace`.
const WHITESPACE_CPTS: [u32; 25] = [
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007,
    0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
];

/// The class of a code point.
pub(super) fn class(cp: u32) -> Class {
    // Index of the last range starting at or before `cp` (RANGES[0] starts at 0).
    let i = RANGES.partition_point(|&(start, _)| start <= cp);
    RANGES[i.saturating_sub(1)].1
}

/// Whether `cp` is Unicode White_Space.
pub(super) fn is_whitespace(cp: u32) -> bool {
    match cp {
        0x09..=0x0D | 0x20 => true,
        _ if cp < 0x85 => false,
        _ => WHITESPACE_CPTS.contains(&cp),
    }
}

/// Flag bits of a code point (never 0).
pub(super) fn flags(cp: u32) -> u8 {
    let c = match class(cp) {
        Class::O => 0,
        Class::L => LETTER,
        Class::N => NUMBER,
        Class::P => PUNCT,
    };
    let ws = if is_whitespace(cp) { WHITESPACE } else { 0 };
    c | ws | DEFINED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_starts_at_zero() {
        assert_eq!(RANGES[0].0, 0);
        assert!(RANGES.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
    }

    #[test]
    fn known_classes() {
        // ASCII punctuation per Unicode: backtick, $, +, <, =, >, ^, |, ~ are symbols.
        for c in "!\"#%&'()*,-./:;?@[\\]_{}".chars() {
            assert_eq!(class(c as u32), Class::P, "{c:?}");
        }
        for c in "`$+<=>^|~".chars() {
            assert_eq!(class(c as u32), Class::O, "{c:?}");
        }
        assert_eq!(class('a' as u32), Class::L);
        assert_eq!(class('7' as u32), Class::N);
        assert_eq!(class(0x00B2), Class::N); // superscript two (No)
        assert_eq!(class(0x4E2D), Class::L); // CJK
        assert_eq!(class(0x2EBF0), Class::L); // CJK Ext. I, new in Unicode 15.1
        assert_eq!(class(0x1C89), Class::O); // assigned only in Unicode 16.0
        assert_eq!(class(0x3002), Class::P); // ideographic full stop
        assert_eq!(class(0x0301), Class::O); // combining mark
        assert_eq!(class(0x10FFFF), Class::O);
        assert!(is_whitespace(0x3000) && is_whitespace(0x85) && !is_whitespace(0x200B));
        assert_eq!(flags(' ' as u32), WHITESPACE | DEFINED);
    }
}
