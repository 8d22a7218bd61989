//! Arbitrary bytes → text (lossy UTF-8) → tokenize with both shared vocabularies → detokenize.
//! Nothing may panic or hang, every id is in the vocabulary, streamed detokenization equals
//! whole-string decoding, and the round trip holds where the tokenizer guarantees it:
//!
//! - LLaMA-3 byte-level BPE (`tiny-i2_s.gguf`): every byte has a token and nothing is
//!   normalized, so `decode(tokenize(s, add_special, false), false) == s` for any `s`
//!   (a BOS added by `add_special` is a control token, which `decode(.., false)` omits), and
//!   `decode(tokenize(s, false, true), true) == s` (special tokens split out of the text print
//!   as their text).
//! - SentencePiece (`b1-spm-i2_s.gguf`, `add_space_prefix` set, 256 byte tokens): spaces
//!   are escaped as U+2581 and one space is prefixed to the text, so
//!   `decode(tokenize(s, add_special, false), false) == " " + s` for a non-empty `s` that
//!   does not contain U+2581 itself (which decodes as a space) — with `parse_special` a space
//!   is also prefixed after every special token split out, so that case is only checked
//!   for panics. The vocabulary has no user-defined tokens (checked at start-up): those would
//!   be split out even without `parse_special` and add a prefix space too.
//!
//! The same bytes read as little-endian u32 ids (in range or not) are also decoded, streamed
//! and whole, which must agree.
#![no_main]

use std::sync::OnceLock;

use gguf::tokenizer::{Detokenizer, TokenType, Tokenizer};
use gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models/");

struct Vocabs {
    bpe: Tokenizer,
    spm: Tokenizer,
}

fn vocabs() -> &'static Vocabs {
    static V: OnceLock<Vocabs> = OnceLock::new();
    V.get_or_init(|| {
        let load = |name: &str| {
            let f = GgufFile::open(format!("{MODELS}{name}")).expect("shared model");
            let t = Tokenizer::from_gguf(&f).expect("tokenizer");
            let user_defined = (0..t.n_vocab() as u32).filter(|&i| t.token_type(i) == Some(TokenType::UserDefined)).count();
            assert_eq!(user_defined, 0, "{name}: the round-trip rules above assume no user-defined tokens");
            t
        };
        let (bpe, spm) = (load("tiny-i2_s.gguf"), load("b1-spm-i2_s.gguf"));
        assert_eq!(bpe.model_name(), "gpt2");
        assert!(spm.model_name() == "llama" && spm.add_space_prefix());
        Vocabs { bpe, spm }
    })
}

/// `decode(ids, special)`, checked against streaming the pieces through a [`Detokenizer`].
fn decode(t: &Tokenizer, ids: &[u32], special: bool) -> String {
    let whole = t.decode(ids, special);
    let mut d = Detokenizer::new();
    let mut streamed = String::new();
    for &id in ids {
        streamed += &d.push(&t.token_to_piece(id, special));
    }
    streamed += &d.finish();
    assert_eq!(streamed, whole, "streamed and whole decoding differ for {ids:?}");
    whole
}

fn tokenize(t: &Tokenizer, s: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
    let ids = t.tokenize(s, add_special, parse_special);
    assert!(ids.iter().all(|&id| (id as usize) < t.n_vocab()), "id out of range for {s:?}");
    ids
}

fuzz_target!(|data: &[u8]| {
    let v = vocabs();
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    for add_special in [false, true] {
        let ids = tokenize(&v.bpe, s, add_special, false);
        assert_eq!(decode(&v.bpe, &ids, false), s, "bpe, add_special {add_special}");
    }
    let ids = tokenize(&v.bpe, s, false, true);
    assert_eq!(decode(&v.bpe, &ids, true), s, "bpe, parse_special");

    for add_special in [false, true] {
        let ids = tokenize(&v.spm, s, add_special, false);
        let text = decode(&v.spm, &ids, false);
        if !s.contains('\u{2581}') {
            let want = if s.is_empty() { String::new() } else { format!(" {s}") };
            assert_eq!(text, want, "spm, add_special {add_special}");
        }
    }
    let ids = tokenize(&v.spm, s, true, true);
    decode(&v.spm, &ids, true);

    let ids: Vec<u32> = data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    for t in [&v.bpe, &v.spm] {
        decode(t, &ids, false);
        decode(t, &ids, true);
        // Ids folded into the vocabulary, so that most of them are real tokens.
        let real: Vec<u32> = ids.iter().map(|&id| id % t.n_vocab() as u32).collect();
        decode(t, &real, true);
    }
});
