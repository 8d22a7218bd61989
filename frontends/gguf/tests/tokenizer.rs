//! Tokenizer tests against llama.cpp's LLaMA-3 test vectors and bitnet.cpp's prompt tokens
//! (shared/reference/tokenizer, reference/README.md §6), plus malformed metadata.
//! Run with `cargo test -p gguf --release --test tokenizer` (the vocabulary is 128,256
//! tokens with 280,147 merges).

use std::sync::OnceLock;
use std::time::Instant;

mod common;

use common::{build, shared, tok_err, vectors, with};
use gguf::tokenizer::{Detokenizer, TokenType, Tokenizer};
use gguf::{Array, GgufFile, Value};

fn model_file() -> &'static GgufFile {
    static F: OnceLock<GgufFile> = OnceLock::new();
    F.get_or_init(|| GgufFile::open(shared("models/tiny-i2_s.gguf")).expect("open tiny-i2_s.gguf"))
}

/// The file's own tokenizer (`tokenizer.ggml.pre = llama-bpe`).
fn llama3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(model_file()).expect("tokenizer"))
}

/// The same vocabulary with the "default" pre-tokenizer forced.
fn default_pre() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf_with_pre(model_file(), "default").expect("tokenizer"))
}

#[test]
fn vocabulary_facts() {
    let t = llama3();
    assert_eq!(t.n_vocab(), 128256);
    assert_eq!(t.n_merges(), 280147);
    assert_eq!(t.bos(), 128000);
    assert_eq!(t.eos(), 128001);
    assert_eq!(t.eot(), Some(128009));
    assert!(t.add_bos());
    assert_eq!(t.pre_tokenizer_name(), "llama-bpe");
    assert_eq!(default_pre().pre_tokenizer_name(), "default");
    assert_eq!(t.eog_ids(), &[128001, 128009]);
    assert!(t.is_eog(128001) && t.is_eog(128009) && !t.is_eog(128000) && !t.is_eog(128008));
    assert_eq!(t.token_text(128009), Some("<|eot_id|>"));
    assert_eq!(t.token_id("<|eot_id|>"), Some(128009));
    assert_eq!(t.token_id("Ġworld"), Some(1917));
    assert_eq!(t.token_type(128000), Some(TokenType::Control));
    assert_eq!(t.token_type(1917), Some(TokenType::Normal));
    assert_eq!(t.token_text(128256), None);
    // Pieces: byte map undone for normal tokens; control tokens only on request.
    assert_eq!(t.token_to_piece(1917, false), b" world");
    assert_eq!(t.token_to_piece(198, false), b"\n");
    assert_eq!(t.token_to_piece(128009, false), b"");
    assert_eq!(t.token_to_piece(128009, true), b"<|eot_id|>");
    assert_eq!(t.token_to_piece(u32::MAX, true), b"");
}

#[test]
fn llama_bpe_test_vectors_46_of_46() {
    let t = llama3();
    let mut failed = Vec::new();
    for (i, (text, want)) in vectors("ggml-vocab-llama-bpe.gguf").iter().enumerate() {
        let got = t.tokenize(text, false, false);
        if &got != want {
            failed.push(format!("case {i} {text:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failed.is_empty(), "{} of 46 failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn bitnet_prompt_tokens() {
    let t = llama3();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared("reference/tokenizer/prompts_tokenized.json")).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(c["add_bos"], true);
        assert_eq!(c["parse_special"], false);
        assert_eq!(want.len() as u64, c["n_tokens"].as_u64().unwrap());
        assert_eq!(t.tokenize(text, true, false), want, "prompt {}", c["id"]);
    }
}

#[test]
fn default_pretokenizer_39_of_46() {
    let t = default_pre();
    assert_eq!(t.tokenize(" (", false, false), [220, 7]);
    assert_eq!(t.tokenize("\n =", false, false), [198, 220, 28]);
    // format.md §6.3 lists this case as `"y'all"`; the ids (379 = "Ġy") are those of
    // " y'all", with a leading space. Without it the first token is 88 = "y".
    assert_eq!(t.tokenize(" y'all", false, false), [379, 6, 543]);
    assert_eq!(t.tokenize("y'all", false, false), [88, 6, 543]);
    // The LLaMA-3 pre-tokenizer on the same three.
    assert_eq!(llama3().tokenize(" (", false, false), [320]);
    assert_eq!(llama3().tokenize("\n =", false, false), [198, 284]);
    assert_eq!(llama3().tokenize(" y'all", false, false), [379, 65948]);

    let mut failed = Vec::new();
    let v = vectors("ggml-vocab-llama-bpe.gguf");
    for (i, (text, want)) in v.iter().enumerate() {
        let got = t.tokenize(text, false, false);
        if &got != want {
            failed.push(format!("case {i} {text:?}: default {got:?}, llama-bpe {want:?}"));
        }
    }
    eprintln!("default pre-tokenizer: {}/46 pass; differing cases:\n{}", 46 - failed.len(), failed.join("\n"));
    assert_eq!(46 - failed.len(), 39, "bitnet.cpp's default pre-tokenizer passes exactly 39/46");
}

#[test]
fn special_token_parsing() {
    let t = llama3();
    assert_eq!(t.tokenize("<|eot_id|>", false, true), [128009]);
    let plain = t.tokenize("<|eot_id|>", false, false);
    assert!(!plain.contains(&128009) && plain.len() > 1, "{plain:?}");
    assert_eq!(t.decode(&plain, false), "<|eot_id|>");
    // Mixed text: the special token splits the text into separately tokenized fragments.
    let ids = t.tokenize("User: hi<|eot_id|>Assistant: ", true, true);
    let mut want = vec![128000];
    want.extend(t.tokenize("User: hi", false, false));
    want.push(128009);
    want.extend(t.tokenize("Assistant: ", false, false));
    assert_eq!(ids, want);
    assert_eq!(t.tokenize("<|begin_of_text|><|begin_of_text|>", false, true), [128000, 128000]);
    // add_special only adds BOS; an empty text gives BOS alone.
    assert_eq!(t.tokenize("", true, true), [128000]);
    assert_eq!(t.tokenize("", false, false), Vec::<u32>::new());
}

#[test]
fn detokenizer_streams_split_characters() {
    let t = llama3();
    // "€" is E2 82 AC; push it a byte at a time.
    let mut d = Detokenizer::new();
    assert_eq!(d.push(b"x\xe2"), "x");
    assert_eq!(d.push(b"\x82"), "");
    assert_eq!(d.push(b"\xac!"), "€!");
    assert_eq!(d.finish(), "");
    // A CJK/emoji text whose tokens end inside characters: streamed output equals the text,
    // and no push returns a partial character.
    let text = "🦙 lamas 日本語のテキスト 😀😃";
    let ids = t.tokenize(text, false, false);
    let mut d = Detokenizer::new();
    let mut streamed = String::new();
    let mut split_seen = false;
    for &id in &ids {
        let piece = t.token_to_piece(id, false);
        split_seen |= std::str::from_utf8(&piece).is_err();
        streamed += &d.push(&piece);
    }
    streamed += &d.finish();
    assert_eq!(streamed, text);
    assert!(split_seen, "expected at least one token ending inside a character");
}

#[test]
fn round_trip_on_test_vectors() {
    for t in [llama3(), default_pre()] {
        for (text, _) in vectors("ggml-vocab-llama-bpe.gguf") {
            let ids = t.tokenize(&text, false, false);
            let bytes: Vec<u8> = ids.iter().flat_map(|&id| t.token_to_piece(id, false)).collect();
            assert_eq!(String::from_utf8(bytes).unwrap(), text);
            let mut d = Detokenizer::new();
            let mut s: String = ids.iter().map(|&id| d.push(&t.token_to_piece(id, false))).collect();
            s += &d.finish();
            assert_eq!(s, text);
        }
    }
}

#[test]
fn load_and_tokenize_speed() {
    let file = model_file();
    let t0 = Instant::now();
    let t = Tokenizer::from_gguf(file).unwrap();
    let load = t0.elapsed();
    let text: String = vectors("ggml-vocab-llama-bpe.gguf").into_iter().map(|(s, _)| s).collect::<Vec<_>>().join("\n");
    let big = text.repeat(200);
    let t1 = Instant::now();
    let ids = t.tokenize(&big, false, false);
    let dt = t1.elapsed();
    let t2 = Instant::now();
    let ids_sp = t.tokenize(&big, false, true);
    let dt_sp = t2.elapsed();
    assert_eq!(ids, ids_sp);
    eprintln!(
        "tokenizer: from_gguf {:.1} ms; tokenize {} bytes -> {} tokens in {:.1} ms ({:.1} MB/s, {:.2} M tok/s); with parse_special {:.1} ms",
        load.as_secs_f64() * 1e3,
        big.len(),
        ids.len(),
        dt.as_secs_f64() * 1e3,
        big.len() as f64 / dt.as_secs_f64() / 1e6,
        ids.len() as f64 / dt.as_secs_f64() / 1e6,
        dt_sp.as_secs_f64() * 1e3,
    );
    if !cfg!(debug_assertions) {
        assert!(load.as_secs_f64() < 1.0, "from_gguf took {load:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Small synthetic vocabularies built with the writer.

fn strs(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

/// A tiny byte-level vocabulary: all 256 byte characters, a few merges, two specials.
fn tiny_meta() -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = (0..=255u8).map(byte_char).collect();
    for t in ["ab", "abc", "Ġab", "<sp>", "<ud>"] {
        tokens.push(t.to_string());
    }
    let n = tokens.len();
    let mut types = vec![1i32; n];
    types[n - 2] = 3; // <sp>: control
    types[n - 1] = 4; // <ud>: user-defined
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("llama-bpe".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(Array::String(tokens))),
        ("tokenizer.ggml.token_type".into(), Value::Array(Array::I32(types))),
        ("tokenizer.ggml.merges".into(), strs(&["a b", "ab c", "Ġ ab"])),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(256 + 3)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(256 + 3)),
    ]
}

/// GPT-2's byte character for `b`, as a string.
fn byte_char(b: u8) -> String {
    let printable = |x: u8| matches!(x, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from_u32(b as u32).unwrap().to_string();
    }
    let k = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + k).unwrap().to_string()
}

#[test]
fn synthetic_vocab_merges_and_specials() {
    let t = build(&tiny_meta()).unwrap();
    let id = |s: &str| t.token_id(s).unwrap();
    assert_eq!(t.tokenize("abc", false, false), [id("abc")]);
    assert_eq!(t.tokenize("abcab", false, false), [id("abc"), id("ab")]);
    assert_eq!(t.tokenize(" ab", false, false), [id("Ġab")]);
    assert_eq!(t.tokenize("ba", false, false), [id("b"), id("a")]);
    // User-defined tokens are split out even without parse_special; control ones are not.
    assert_eq!(t.tokenize("x<ud>y", false, false), [id("x"), id("<ud>"), id("y")]);
    assert_eq!(t.tokenize("<sp>", false, true), [id("<sp>")]);
    assert_ne!(t.tokenize("<sp>", false, false), [id("<sp>")]);
    assert_eq!(t.tokenize("", true, false), [id("<sp>")]);
    assert_eq!(t.token_to_piece(id("<ud>"), false), b"<ud>");
    assert_eq!(t.eot(), None);
    assert!(t.is_eog(id("<sp>")));
}

#[test]
fn synthetic_vocab_defaults() {
    // No token_type, scores, pre, add_bos: all normal, default pre-tokenizer, and (as
    // llama.cpp for a BPE vocabulary) no BOS unless the pre-tokenizer is llama3.
    let m = with(&tiny_meta(), "tokenizer.ggml.token_type", None);
    assert!(build(&m).unwrap().add_bos());
    let m = with(&m, "tokenizer.ggml.pre", None);
    let t = build(&m).unwrap();
    assert_eq!(t.pre_tokenizer_name(), "default");
    assert_eq!(t.token_type(0), Some(TokenType::Normal));
    assert!(!t.add_bos());
    assert_eq!(t.tokenize("ab", true, false), [t.token_id("ab").unwrap()]);
    let t = build(&with(&m, "tokenizer.ggml.add_bos_token", Some(Value::Bool(true)))).unwrap();
    assert!(t.add_bos());
    // bos/eos absent: llama.cpp's gpt2 default 11.
    let m = with(&with(&m, "tokenizer.ggml.bos_token_id", None), "tokenizer.ggml.eos_token_id", None);
    let t = build(&m).unwrap();
    assert_eq!((t.bos(), t.eos()), (11, 11));
}

#[test]
fn malformed_metadata_is_an_error() {
    let base = tiny_meta();
    let e = tok_err(&with(&base, "tokenizer.ggml.merges", Some(strs(&["a b", "abc"]))));
    assert!(e.contains("`tokenizer.ggml.merges` entry 1 has no space"), "{e}");
    // A leading space does not count (llama.cpp searches from index 1).
    let e = tok_err(&with(&base, "tokenizer.ggml.merges", Some(strs(&[" ab"]))));
    assert!(e.contains("entry 0 has no space"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.token_type", Some(Value::Array(Array::I32(vec![1; 10])))));
    assert!(e.contains("token_type") && e.contains("10 entries"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.scores", Some(Value::Array(Array::F32(vec![0.0; 3])))));
    assert!(e.contains("scores"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.model", Some(Value::String("bert".into()))));
    assert!(e.contains("unknown `tokenizer.ggml.model` \"bert\""), "{e}");
    // A SentencePiece model needs scores, which this BPE metadata lacks.
    let e = tok_err(&with(&base, "tokenizer.ggml.model", Some(Value::String("llama".into()))));
    assert!(e.contains("`tokenizer.ggml.scores` is missing"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.model", None));
    assert!(e.contains("`tokenizer.ggml.model` is missing"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.pre", Some(Value::String("qwen2".into()))));
    assert!(e.contains("\"qwen2\""), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.bos_token_id", Some(Value::U32(100_000))));
    assert!(e.contains("bos_token_id") && e.contains("out of range"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.eos_token_id", Some(Value::I32(-1))));
    assert!(e.contains("eos_token_id"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.eos_token_id", Some(Value::String("x".into()))));
    assert!(e.contains("must be an integer"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.tokens", Some(Value::Array(Array::U32(vec![1, 2])))));
    assert!(e.contains("must be an array of strings, found an array of u32"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.tokens", Some(strs(&[]))));
    assert!(e.contains("empty"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.merges", None));
    assert!(e.contains("merges` is missing"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.add_bos_token", Some(Value::U8(1))));
    assert!(e.contains("add_bos_token") && e.contains("bool"), "{e}");
    // A vocabulary missing the byte tokens is odd but loads; unknown bytes are dropped
    // (llama.cpp's fallback), never a panic.
    let m = with(&base, "tokenizer.ggml.tokens", Some(strs(&["a", "b", "ab", "Ġ"])));
    let m = with(&m, "tokenizer.ggml.token_type", None);
    let m =
        with(&with(&m, "tokenizer.ggml.bos_token_id", Some(Value::U32(0))), "tokenizer.ggml.eos_token_id", Some(Value::U32(0)));
    let t = build(&m).unwrap();
    assert_eq!(t.tokenize("ab ba!", false, false), [2, 3, 1, 0]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Any text tokenizes without panicking and decodes back to itself, with both
    /// pre-tokenizers (every byte is a token in this vocabulary).
    #[test]
    fn arbitrary_text_round_trips(text in "(\\PC|\\s|[ '0-9a-zA-Z<|>])*") {
        for t in [llama3(), default_pre()] {
            let ids = t.tokenize(&text, false, true);
            let bytes: Vec<u8> = ids.iter().flat_map(|&id| t.token_to_piece(id, true)).collect();
            proptest::prop_assert_eq!(String::from_utf8(bytes).unwrap(), text.clone());
        }
    }
}
