//! Pre-tokenizers: split a raw text fragment into the pieces that BPE merges within
//! (../shared/docs/format.md §6.3).
//!
//! These are hand-written matchers that reproduce llama.cpp's `unicode_regex_split` for the
//! two regex sets we support, position for position:
//!
//! - **llama3** (`llama-bpe`, `llama3`, `llama-v3`): one regex, which llama.cpp runs through its
//!   hand-written `unicode_regex_split_custom_llama3`; ported rule for rule below.
//! - **default**: four regexes applied in sequence, each re-splitting every piece of the
//!   previous step and keeping both matches and the gaps between them. Regex 2 (GPT-2's) runs
//!   through llama.cpp's `unicode_regex_split_custom_gpt2`, ported below. Regexes 1, 3 and 4
//!   run through `std::regex` on a "collapsed" text where every non-ASCII code point becomes
//!   one byte standing for its class (whitespace, letter, number, punctuation, other), and
//!   `\p{P}`/`\p{N}` become that byte plus an ASCII list. The predicates below reproduce
//!   those classes: in particular `\p{P}` on ASCII is exactly ``!"#%&'()*,-./:;?@[\]_{}``
//!   (no backtick), and non-ASCII whitespace never matches a category.
//!
//! Positions are code-point indices into the fragment; a position outside the current piece
//! reads as "no code point" (flags 0), as in llama.cpp's `_get_flags`.

use super::unicode::{flags, DEFINED, LETTER, NUMBER, PUNCT, WHITESPACE};

/// Which pre-tokenizer a vocabulary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PreTokenizer {
    /// llama.cpp's "default" four-regex sequence (`tokenizer.ggml.pre` absent or `default`).
    Default,
    /// The LLaMA-3 regex (`llama-bpe`, `llama3`, `llama-v3`).
    Llama3,
}

impl PreTokenizer {
    /// Maps a `tokenizer.ggml.pre` value to a pre-tokenizer (`None` for unknown names).
    pub(super) fn from_name(name: Option<&str>) -> Option<PreTokenizer> {
        match name {
            None | Some("default") => Some(PreTokenizer::Default),
            Some("llama-bpe") | Some("llama3") | Some("llama-v3") => Some(PreTokenizer::Llama3),
            Some(_) => None,
        }
    }

    /// Splits `text` into pieces, appending their byte ranges to `out` (in order, covering
    /// the whole text, none empty).
    pub(super) fn split(self, text: &str, out: &mut Vec<std::ops::Range<usize>>) {
        if text.is_empty() {
            return;
        }
        let mut cpts = Vec::with_capacity(text.len());
        let mut offs = Vec::with_capacity(text.len() + 1);
        for (i, ch) in text.char_indices() {
            offs.push(i);
            cpts.push(ch as u32);
        }
        offs.push(text.len());
        let fl: Vec<u8> = cpts.iter().map(|&c| flags(c)).collect();
        let s = Cpts { cpts: &cpts, flags: &fl };

        let whole = [cpts.len()];
        let lens = match self {
            PreTokenizer::Llama3 => each(&whole, |a, b, o| s.llama3(a, b, o)),
            PreTokenizer::Default => {
                // 1. [\p{P}\$\+<=>\^~\|]+
                let l1 = each(&whole, |a, b, o| runs(a, b, o, |i| s.default_punct(i)));
                // 2. 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
                let l2 = each(&l1, |a, b, o| s.gpt2(a, b, o));
                // 3. \p{N}+
                let l3 = each(&l2, |a, b, o| runs(a, b, o, |i| s.default_number(i)));
                // 4. [0-9][0-9][0-9]
                each(&l3, |a, b, o| s.digit_triples(a, b, o))
            }
        };

        let mut start = 0;
        for len in lens {
            out.push(offs[start]..offs[start + len]);
            start += len;
        }
    }
}

/// Applies a splitter to every piece (given by length); returns the new piece lengths.
fn each(lens: &[usize], mut f: impl FnMut(usize, usize, &mut Vec<usize>)) -> Vec<usize> {
    let mut out = Vec::with_capacity(lens.len() * 2);
    let mut start = 0;
    for &len in lens {
        f(start, start + len, &mut out);
        start += len;
    }
    out
}

/// Splits `[ini, end)` on maximal runs of positions matching `pred` (a `[class]+` regex),
/// keeping matches and gaps.
fn runs(ini: usize, end: usize, out: &mut Vec<usize>, pred: impl Fn(usize) -> bool) {
    let mut prev = ini;
    let mut i = ini;
    while i < end {
        if pred(i) {
            let s = i;
            while i < end && pred(i) {
                i += 1;
            }
            if s > prev {
                out.push(s - prev);
            }
            out.push(i - s);
            prev = i;
        } else {
            i += 1;
        }
    }
    if prev < end {
        out.push(end - prev);
    }
}

const OUT_OF_RANGE: u32 = u32::MAX;

/// The fragment's code points and their flags.
struct Cpts<'a> {
    cpts: &'a [u32],
    flags: &'a [u8],
}

/// llama.cpp's `_add_token`: emits `[prev_end, end)` if non-empty and returns its length.
struct Emitter<'o> {
    prev_end: usize,
    out: &'o mut Vec<usize>,
}

impl Emitter<'_> {
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

impl Cpts<'_> {
    /// Default regex 1's class on the collapsed text.
    fn default_punct(&self, i: usize) -> bool {
        let c = self.cpts[i];
        if c < 128 {
            matches!(c as u8, b'!'..=b'#' | b'%'..=b'*' | b','..=b'/' | b':' | b';' | b'?' | b'@'
                | b'['..=b']' | b'_' | b'{' | b'}' | b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'~' | b'|')
        } else {
            let f = self.flags[i];
            f & WHITESPACE == 0 && f & PUNCT != 0
        }
    }

    /// Default regex 3's class (`\p{N}`) on the collapsed text.
    fn default_number(&self, i: usize) -> bool {
        let c = self.cpts[i];
        if c < 128 {
            (b'0' as u32..=b'9' as u32).contains(&c)
        } else {
            let f = self.flags[i];
            f & WHITESPACE == 0 && f & NUMBER != 0
        }
    }

    /// Default regex 4: leftmost non-overlapping runs of three ASCII digits.
    fn digit_triples(&self, ini: usize, end: usize, out: &mut Vec<usize>) {
        let digit = |i: usize| (b'0' as u32..=b'9' as u32).contains(&self.cpts[i]);
        let mut prev = ini;
        let mut i = ini;
        while i + 3 <= end {
            if digit(i) && digit(i + 1) && digit(i + 2) {
                if i > prev {
                    out.push(i - prev);
                }
                out.push(3);
                i += 3;
                prev = i;
            } else {
                i += 1;
            }
        }
        if prev < end {
            out.push(end - prev);
        }
    }

    /// Port of llama.cpp's `unicode_regex_split_custom_gpt2` for one piece `[ini, end)`.
    fn gpt2(&self, ini: usize, end: usize, out: &mut Vec<usize>) {
        let get_cpt = |pos: usize| if ini <= pos && pos < end { self.cpts[pos] } else { OUT_OF_RANGE };
        let get_flags = |pos: usize| if ini <= pos && pos < end { self.flags[pos] } else { 0 };
        let mut e = Emitter { prev_end: ini, out };
        let not_wln = |f: u8| f & (WHITESPACE | LETTER | NUMBER) == 0 && f != 0;

        let mut pos = ini;
        while pos < end {
            let cpt = get_cpt(pos);
            let fl = get_flags(pos);

            // 's|'t|'re|'ve|'m|'ll|'d
            if cpt == '\'' as u32 && pos + 1 < end {
                let next = get_cpt(pos + 1);
                if [b's', b't', b'm', b'd'].iter().any(|&c| next == c as u32) {
                    pos += e.add(pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let nn = get_cpt(pos + 2);
                    let pair = |a: u8, b: u8| next == a as u32 && nn == b as u32;
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += e.add(pos + 3);
                        continue;
                    }
                }
            }

            let space = cpt == ' ' as u32;
            let mut fl2 = if space { get_flags(pos + 1) } else { fl };
            // <space>?\p{L}+
            if fl2 & LETTER != 0 {
                pos += space as usize;
                while fl2 & LETTER != 0 {
                    pos += 1;
                    fl2 = get_flags(pos);
                }
                e.add(pos);
                continue;
            }
            // <space>?\p{N}+
            if fl2 & NUMBER != 0 {
                pos += space as usize;
                while fl2 & NUMBER != 0 {
                    pos += 1;
                    fl2 = get_flags(pos);
                }
                e.add(pos);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+
            if not_wln(fl2) {
                pos += space as usize;
                while not_wln(fl2) {
                    pos += 1;
                    fl2 = get_flags(pos);
                }
                e.add(pos);
                continue;
            }

            let mut n_ws = 0;
            while get_flags(pos + n_ws) & WHITESPACE != 0 {
                n_ws += 1;
            }
            // \s+(?!\S)
            if n_ws > 1 && get_cpt(pos + n_ws) != OUT_OF_RANGE {
                pos += n_ws - 1;
                e.add(pos);
                continue;
            }
            // \s+
            if n_ws > 0 {
                pos += n_ws;
                e.add(pos);
                continue;
            }
            // no match
            pos += 1;
            e.add(pos);
        }
    }

    /// Port of llama.cpp's `unicode_regex_split_custom_llama3` for one piece `[ini, end)`:
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    fn llama3(&self, ini: usize, end: usize, out: &mut Vec<usize>) {
        let get_cpt = |pos: usize| if ini <= pos && pos < end { self.cpts[pos] } else { OUT_OF_RANGE };
        let get_flags = |pos: usize| if ini <= pos && pos < end { self.flags[pos] } else { 0 };
        let mut e = Emitter { prev_end: ini, out };
        let is_rn = |c: u32| c == '\r' as u32 || c == '\n' as u32;
        // llama.cpp lower-cases with its Unicode table; the only code points whose lowercase
        // is one of the ASCII letters tested here are the ASCII capitals themselves (U+0130
        // and U+212A lower to 'i' and 'k'), so ASCII lower-casing is exact.
        let lower = |c: u32| if (b'A' as u32..=b'Z' as u32).contains(&c) { c + 32 } else { c };

        let mut pos = ini;
        while pos < end {
            let cpt = get_cpt(pos);
            let fl = get_flags(pos);

            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if cpt == '\'' as u32 && pos + 1 < end {
                let next = lower(get_cpt(pos + 1));
                if [b's', b't', b'm', b'd'].iter().any(|&c| next == c as u32) {
                    pos += e.add(pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let nn = lower(get_cpt(pos + 2));
                    let pair = |a: u8, b: u8| next == a as u32 && nn == b as u32;
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += e.add(pos + 3);
                        continue;
                    }
                }
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(is_rn(cpt) || fl & NUMBER != 0) && (fl & LETTER != 0 || get_flags(pos + 1) & LETTER != 0) {
                pos += 1;
                while get_flags(pos) & LETTER != 0 {
                    pos += 1;
                }
                e.add(pos);
                continue;
            }

            // \p{N}{1,3}
            if fl & NUMBER != 0 {
                let mut start = pos;
                while get_flags(pos) & NUMBER != 0 {
                    pos += 1;
                    if pos - start >= 3 {
                        e.add(pos);
                        start = pos;
                    }
                }
                e.add(pos);
                continue;
            }

            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            let space = cpt == ' ' as u32;
            let mut fl2 = if space { get_flags(pos + 1) } else { fl };
            // llama.cpp tests the current code point's flags (not fl2) for "defined" here.
            if fl2 & (WHITESPACE | LETTER | NUMBER) == 0 && fl & DEFINED != 0 {
                pos += space as usize;
                while fl2 & (WHITESPACE | LETTER | NUMBER) == 0 && fl2 != 0 {
                    pos += 1;
                    fl2 = get_flags(pos);
                }
                while is_rn(get_cpt(pos)) {
                    pos += 1;
                }
                e.add(pos);
                continue;
            }

            let mut n_ws = 0;
            let mut last_rn_end = 0;
            while get_flags(pos + n_ws) & WHITESPACE != 0 {
                if is_rn(get_cpt(pos + n_ws)) {
                    last_rn_end = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // \s*[\r\n]+
            if last_rn_end > 0 {
                pos = last_rn_end;
                e.add(pos);
                continue;
            }
            // \s+(?!\S)
            if n_ws > 1 && get_cpt(pos + n_ws) != OUT_OF_RANGE {
                pos += n_ws - 1;
                e.add(pos);
                continue;
            }
            // \s+
            if n_ws > 0 {
                pos += n_ws;
                e.add(pos);
                continue;
            }
            // no match
            pos += 1;
            e.add(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(p: PreTokenizer, text: &str) -> Vec<&str> {
        let mut r = Vec::new();
        p.split(text, &mut r);
        r.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn llama3_pieces() {
        let p = PreTokenizer::Llama3;
        assert_eq!(pieces(p, "Hello, world!"), ["Hello", ",", " world", "!"]);
        assert_eq!(pieces(p, "y'all"), ["y", "'all"]);
        assert_eq!(pieces(p, "I'LL 12345"), ["I", "'LL", " ", "123", "45"]);
        assert_eq!(pieces(p, " (\n ="), [" (\n", " ="]);
        assert_eq!(pieces(p, "a  \n\n  b"), ["a", "  \n\n", " ", " b"]);
        assert_eq!(pieces(p, "x   "), ["x", "   "]);
        assert_eq!(pieces(p, ""), Vec::<&str>::new());
    }

    #[test]
    fn default_pieces() {
        let p = PreTokenizer::Default;
        assert_eq!(pieces(p, " ("), [" ", "("]);
        assert_eq!(pieces(p, "\n ="), ["\n ", "="]);
        assert_eq!(pieces(p, "y'all"), ["y", "'", "all"]);
        assert_eq!(pieces(p, "12345 x`y"), ["123", "45", " x", "`", "y"]);
        assert_eq!(pieces(p, "a   b"), ["a", "  ", " b"]);
        assert_eq!(pieces(p, "I'm"), ["I", "'", "m"]);
    }
}
