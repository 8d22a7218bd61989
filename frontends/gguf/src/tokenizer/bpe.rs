//! Byte-level BPE (`tokenizer.ggml.model = gpt2`): merge table and the per-piece merge loop
//! (../shared/docs/format.md §6.1-6.2), as llama.cpp's `llm_tokenizer_bpe_session::tokenize`.
//!
//! llama.cpp works on strings: a symbol is a substring of the byte-level encoded piece, a
//! bigram's rank is looked up by its two strings, and the final symbols are looked up in the
//! vocabulary. We intern every string that can take part (vocabulary texts keep their token
//! id; merge operands and results that are not vocabulary texts get ids from `n_vocab` up),
//! so the loop works on integer pairs. The results are the same, including for malformed
//! vocabularies: a final symbol that is not a vocabulary text falls back to one token per
//! byte of its encoded text that is itself a token (llama.cpp's fallback), and a merge whose
//! operands never occur never fires.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::bytes::byte_to_char;
use super::{terr, PairBuild};
use crate::Result;

/// No interned string (a byte character that is neither a token nor a merge operand).
const NONE: u32 = u32::MAX;

/// The merge table and byte tables of a BPE vocabulary.
pub(super) struct Bpe {
    /// `(left, right)` symbol ids → `(rank, merged symbol id)`; the first entry wins on
    /// duplicate pairs, as llama.cpp's `bpe_ranks.emplace`.
    merges: HashMap<u64, (u32, u32), PairBuild>,
    /// The symbol id of each byte's character.
    byte_sym: [u32; 256],
    /// The token of each single ASCII character, for the fallback.
    ascii_tok: [u32; 128],
    /// Vocabulary size: symbol ids below it are token ids.
    n_vocab: u32,
    /// Emit a piece that is itself a vocabulary text without merging (llama3).
    pub(super) ignore_merges: bool,
}

fn pair(l: u32, r: u32) -> u64 {
    (l as u64) << 32 | r as u64
}

/// A queued bigram: `(rank, left index, right index, byte size, merged symbol id)`; the heap
/// pops the lowest rank, then the leftmost.
type Bigram = Reverse<(u32, u32, u32, u32, u32)>;

/// Reusable buffers for encoding.
#[derive(Default)]
pub(super) struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
    encoded: String,
}

#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    /// Byte offset of the symbol in the piece.
    start: u32,
    /// Length in raw bytes; 0 once merged into its left neighbour.
    len: u32,
    prev: i32,
    next: i32,
}

impl Bpe {
    /// Builds the merge table. `merges[r]` is `"left right"` with rank r.
    pub(super) fn new(token_to_id: &HashMap<String, u32>, n_vocab: u32, merges: &[String], ignore_merges: bool) -> Result<Bpe> {
        let mut extra: HashMap<String, u32> = HashMap::new();
        let mut next_id = n_vocab;
        let mut intern = |s: &str| -> Result<u32> {
            if let Some(&id) = token_to_id.get(s) {
                return Ok(id);
            }
            if let Some(&id) = extra.get(s) {
                return Ok(id);
            }
            let id = next_id;
            next_id = next_id.checked_add(1).filter(|&n| n != NONE).ok_or_else(|| terr("too many distinct merge strings"))?;
            extra.insert(s.to_owned(), id);
            Ok(id)
        };

        let mut table: HashMap<u64, (u32, u32), PairBuild> =
            HashMap::with_capacity_and_hasher(merges.len(), PairBuild::default());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            if m.is_empty() {
                return Err(terr(format!("`tokenizer.ggml.merges` entry {rank} is empty")));
            }
            // llama.cpp splits at the first space at byte index >= 1.
            let Some(sp) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                return Err(terr(format!("`tokenizer.ggml.merges` entry {rank} has no space: {m:?}")));
            };
            let (left, right) = (&m[..sp], &m[sp + 1..]);
            let rank = u32::try_from(rank).map_err(|_| terr("too many merges"))?;
            let l = intern(left)?;
            let r = intern(right)?;
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = intern(&joined)?;
            table.entry(pair(l, r)).or_insert((rank, merged));
        }

        let mut byte_sym = [NONE; 256];
        let mut buf = [0u8; 4];
        for (b, slot) in byte_sym.iter_mut().enumerate() {
            let s: &str = byte_to_char(b as u8).encode_utf8(&mut buf);
            *slot = token_to_id.get(s).or_else(|| extra.get(s)).copied().unwrap_or(NONE);
        }
        let mut ascii_tok = [NONE; 128];
        for (c, slot) in ascii_tok.iter_mut().enumerate() {
            let s: &str = (c as u8 as char).encode_utf8(&mut buf);
            *slot = token_to_id.get(s).copied().unwrap_or(NONE);
        }
        Ok(Bpe { merges: table, byte_sym, ascii_tok, n_vocab, ignore_merges })
    }

    /// Encodes one pre-tokenized piece (raw UTF-8 bytes), appending token ids to `out`.
    pub(super) fn encode_piece(&self, piece: &[u8], token_to_id: &HashMap<String, u32>, sc: &mut Scratch, out: &mut Vec<u32>) {
        if piece.is_empty() {
            return;
        }
        if self.ignore_merges {
            sc.encoded.clear();
            sc.encoded.extend(piece.iter().map(|&b| byte_to_char(b)));
            if let Some(&id) = token_to_id.get(sc.encoded.as_str()) {
                out.push(id);
                return;
            }
        }

        let syms = &mut sc.syms;
        syms.clear();
        let n = piece.len();
        for (i, &b) in piece.iter().enumerate() {
            let next = if i + 1 == n { -1 } else { i as i32 + 1 };
            syms.push(Sym { id: self.byte_sym[b as usize], start: i as u32, len: 1, prev: i as i32 - 1, next });
        }
        let heap = &mut sc.heap;
        heap.clear();
        let add_bigram = |syms: &[Sym], heap: &mut BinaryHeap<Bigram>, l: i32, r: i32| {
            if l < 0 || r < 0 {
                return;
            }
            let (ls, rs) = (syms[l as usize], syms[r as usize]);
            if let Some(&(rank, merged)) = self.merges.get(&pair(ls.id, rs.id)) {
                heap.push(Reverse((rank, l as u32, r as u32, ls.len + rs.len, merged)));
            }
        };
        for i in 1..n {
            add_bigram(syms, heap, i as i32 - 1, i as i32);
        }
        while let Some(Reverse((_rank, l, r, size, merged))) = heap.pop() {
            let (l, r) = (l as usize, r as usize);
            let (ls, rs) = (syms[l], syms[r]);
            // Outdated: one side was merged away or grew since the bigram was queued.
            if ls.len == 0 || rs.len == 0 || ls.len + rs.len != size {
                continue;
            }
            syms[l].id = merged;
            syms[l].len += rs.len;
            syms[r].len = 0;
            syms[l].next = rs.next;
            if rs.next >= 0 {
                syms[rs.next as usize].prev = l as i32;
            }
            add_bigram(syms, heap, syms[l].prev, l as i32);
            add_bigram(syms, heap, l as i32, syms[l].next);
        }

        // Symbols only merge into their left neighbour, so array order is chain order.
        for s in syms.iter().filter(|s| s.len > 0) {
            if s.id < self.n_vocab {
                out.push(s.id);
            } else {
                // Not a vocabulary text: llama.cpp looks up each byte of the encoded text on
                // its own; only ASCII byte characters (raw 0x21..=0x7E) can be found.
                for &b in &piece[s.start as usize..(s.start + s.len) as usize] {
                    if (0x21..=0x7E).contains(&b) && self.ascii_tok[b as usize] != NONE {
                        out.push(self.ascii_tok[b as usize]);
                    }
                }
            }
        }
    }

    /// Number of distinct merge pairs.
    pub(super) fn n_merges(&self) -> usize {
        self.merges.len()
    }
}
