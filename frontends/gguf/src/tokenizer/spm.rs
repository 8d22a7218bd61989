//! SentencePiece-style vocabularies (`tokenizer.ggml.model = llama`): llama.cpp's
//! `llm_tokenizer_spm` (reference/README-more-models.md §6).
//!
//! A raw text fragment is escaped (every U+0020 becomes `▁` U+2581; one space is prepended
//! first when the caller asks for the space prefix), split into UTF-8 characters, and
//! adjacent symbols are merged greedily: the bigram whose concatenated text is a vocabulary
//! token with the **highest score** merges first, the leftmost on ties. A final symbol that
//! is a vocabulary text is emitted as that token; any other symbol (a character missing from
//! the vocabulary) falls back to one token per UTF-8 byte: `<0xNN>` (uppercase hex), else
//! the one-character token with that byte, else (where llama.cpp throws) the unknown token.
//!
//! Bigram texts are looked up among **all** vocabulary texts whatever their type, as
//! llama.cpp's `token_to_id` lookup does. llama.cpp also keeps a `rev_merge` map to split
//! final symbols that are not tokens; since every merged symbol is itself a vocabulary text
//! (a bigram is only queued when its text is one), that map is never consulted and the
//! fallback is always bytes, which is what we implement.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// No token.
const NONE: u32 = u32::MAX;

/// The escaped form of U+0020.
pub(super) const SPACE_MARK: &str = "\u{2581}";

/// The SentencePiece-specific tables.
pub(super) struct Spm {
    /// The fallback token of each byte (`NONE` if the vocabulary has none).
    byte_tok: [u32; 256],
    /// The unknown token (`tokenizer.ggml.unknown_token_id`, default 0): used only for a byte
    /// that has no fallback token, where llama.cpp would throw.
    pub(super) unk: u32,
    /// `tokenizer.ggml.add_space_prefix` (default true).
    pub(super) add_space_prefix: bool,
}

/// A queued bigram. The heap pops the highest score, then the lowest left index
/// (llama.cpp's `llm_bigram_spm::comparator`).
#[derive(Clone, Copy)]
struct Bigram {
    /// The score with -0.0 folded into 0.0 and NaN made -inf, so that `total_cmp` orders
    /// like llama.cpp's `<` on ordinary scores and is still a total order.
    score: f32,
    left: u32,
    right: u32,
    /// Byte length of the merged text, to detect outdated entries.
    size: u32,
    /// The token whose text is the merged text.
    id: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then(other.left.cmp(&self.left)).then(other.right.cmp(&self.right))
    }
}

#[derive(Clone, Copy)]
struct Sym {
    /// Byte offset in the escaped text.
    start: u32,
    /// Byte length; 0 once merged into its left neighbour.
    len: u32,
    prev: i32,
    next: i32,
    /// The token of the symbol's text when known (merged symbols), else `NONE`.
    id: u32,
}

/// Reusable buffers for encoding.
#[derive(Default)]
pub(super) struct Scratch {
    text: String,
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
}

fn score_key(s: f32) -> f32 {
    if s.is_nan() {
        f32::NEG_INFINITY
    } else if s == 0.0 {
        0.0
    } else {
        s
    }
}

impl Spm {
    pub(super) fn new(token_to_id: &HashMap<String, u32>, unk: u32, add_space_prefix: bool) -> Spm {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut byte_tok = [NONE; 256];
        for (b, slot) in byte_tok.iter_mut().enumerate() {
            let hex = [b'<', b'0', b'x', HEX[b >> 4], HEX[b & 15], b'>'];
            let hex = std::str::from_utf8(&hex).unwrap_or_default();
            // llama.cpp's second try is the byte as a one-byte C string: "" for 0, and never a
            // valid UTF-8 text for bytes >= 0x80.
            let single = match b {
                0 => Some(String::new()),
                1..=0x7F => Some((b as u8 as char).to_string()),
                _ => None,
            };
            *slot = token_to_id.get(hex).or_else(|| single.as_deref().and_then(|s| token_to_id.get(s))).copied().unwrap_or(NONE);
        }
        Spm { byte_tok, unk, add_space_prefix }
    }

    /// Encodes one raw text fragment, appending token ids to `out`. `space_prefix`: prepend
    /// one space (before escaping), as llama.cpp does for a fragment at the start of the
    /// input or right after a special token when `add_space_prefix` is set.
    pub(super) fn encode(
        &self,
        raw: &str,
        space_prefix: bool,
        token_to_id: &HashMap<String, u32>,
        scores: &[f32],
        sc: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        let text = &mut sc.text;
        text.clear();
        if space_prefix {
            text.push_str(SPACE_MARK);
        }
        for (i, part) in raw.split(' ').enumerate() {
            if i > 0 {
                text.push_str(SPACE_MARK);
            }
            text.push_str(part);
        }
        if text.is_empty() {
            return;
        }
        let text = text.as_str();

        let syms = &mut sc.syms;
        syms.clear();
        let mut it = text.char_indices().peekable();
        while let Some((off, c)) = it.next() {
            let i = syms.len() as i32;
            let next = if it.peek().is_some() { i + 1 } else { -1 };
            syms.push(Sym { start: off as u32, len: c.len_utf8() as u32, prev: i - 1, next, id: NONE });
        }

        let heap = &mut sc.heap;
        heap.clear();
        let try_add = |syms: &[Sym], heap: &mut BinaryHeap<Bigram>, l: i32, r: i32| {
            if l < 0 || r < 0 {
                return;
            }
            let (ls, rs) = (syms[l as usize], syms[r as usize]);
            let size = ls.len + rs.len;
            let s = ls.start as usize;
            let Some(&id) = token_to_id.get(&text[s..s + size as usize]) else {
                return;
            };
            let Some(&score) = scores.get(id as usize) else {
                return;
            };
            heap.push(Bigram { score: score_key(score), left: l as u32, right: r as u32, size, id });
        };
        for i in 1..syms.len() {
            try_add(syms, heap, i as i32 - 1, i as i32);
        }

        while let Some(b) = heap.pop() {
            let (l, r) = (b.left as usize, b.right as usize);
            let (ls, rs) = (syms[l], syms[r]);
            // Outdated: one side was merged away or grew since the bigram was queued.
            if ls.len == 0 || rs.len == 0 || ls.len + rs.len != b.size {
                continue;
            }
            syms[l].len += rs.len;
            syms[l].id = b.id;
            syms[r].len = 0;
            syms[l].next = rs.next;
            if rs.next >= 0 {
                syms[rs.next as usize].prev = l as i32;
            }
            try_add(syms, heap, syms[l].prev, l as i32);
            try_add(syms, heap, l as i32, syms[l].next);
        }

        // Symbols only merge into their left neighbour, so array order is chain order.
        for s in syms.iter().filter(|s| s.len > 0) {
            let piece = &text[s.start as usize..(s.start + s.len) as usize];
            let id = if s.id != NONE { Some(s.id) } else { token_to_id.get(piece).copied() };
            match id {
                Some(id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        let t = self.byte_tok[b as usize];
                        out.push(if t == NONE { self.unk } else { t });
                    }
                }
            }
        }
    }
}

/// The byte of an SPM byte token, as llama.cpp's `llama_token_to_byte`:
/// `strtol(text.substr(3, 2), NULL, 16)` cast to a byte. `None` where llama.cpp would throw
/// (a text shorter than 3 bytes).
pub(super) fn byte_token_value(text: &str) -> Option<u8> {
    let t = text.as_bytes();
    if t.len() < 3 {
        return None;
    }
    let s = &t[3..t.len().min(5)];
    // strtol: leading white space, an optional sign, an optional "0x", then hex digits.
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    // (A "0x" prefix would need a digit after it: impossible within two characters.)
    let mut v: i64 = 0;
    while i < s.len() {
        let Some(d) = (s[i] as char).to_digit(16) else { break };
        v = v * 16 + d as i64;
        i += 1;
    }
    if neg {
        v = -v;
    }
    Some(v as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_token_values() {
        assert_eq!(byte_token_value("<0x0A>"), Some(0x0A));
        assert_eq!(byte_token_value("<0xff>"), Some(0xFF));
        assert_eq!(byte_token_value("<0xE3>"), Some(0xE3));
        assert_eq!(byte_token_value("<0x"), Some(0));
        assert_eq!(byte_token_value("<0x-1>"), Some(0xFF));
        assert_eq!(byte_token_value("abcZ"), Some(0));
        assert_eq!(byte_token_value("ab"), None);
    }

    #[test]
    fn merges_by_score_then_leftmost() {
        let vocab = ["a", "b", "ab", "bb", "zz", "\u{2581}", "\u{2581}a", "<0x63>"];
        let scores = [0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 5.0, 0.0];
        let map: HashMap<String, u32> = vocab.iter().enumerate().map(|(i, s)| (s.to_string(), i as u32)).collect();
        let spm = Spm::new(&map, 0, true);
        let mut sc = Scratch::default();
        let enc = |s: &str, prefix: bool, sc: &mut Scratch| {
            let mut out = Vec::new();
            spm.encode(s, prefix, &map, &scores, sc, &mut out);
            out
        };
        // "abb": bb (2) beats ab (1); "abb" is not a token: [a, bb].
        assert_eq!(enc("abb", false, &mut sc), [0, 3]);
        // "abab": ties between the two "ab" merges: leftmost first, both merge.
        assert_eq!(enc("abab", false, &mut sc), [2, 2]);
        // Space prefix and escaping: "▁a" (5) wins.
        assert_eq!(enc("a b", true, &mut sc), [6, 5, 1]);
        // Byte fallback: 'c' is <0x63>; 'd' has no token at all: unknown (0).
        assert_eq!(enc("cd", false, &mut sc), [7, 0]);
        assert_eq!(enc("", false, &mut sc), Vec::<u32>::new());
        assert_eq!(enc("", true, &mut sc), [5]);
    }
}
