//! SentencePiece (`tokenizer.ggml.model = llama`) tokenizer tests against llama.cpp's
//! LLaMA-2 test vectors and bitnet.cpp's prompt tokens (shared/reference/tokenizer,
//! reference/README-more-models.md §6), plus synthetic vocabularies and malformed metadata.
//! Run with `cargo test -p gguf --release --test tokenizer_spm`.
//!
//! Round-trip rule checked here: with `tokenizer.ggml.add_space_prefix` (default true) the
//! tokenizer prepends one space to the first text fragment (and to every text fragment that
//! follows a special token), and `token_to_piece` strips nothing (llama.cpp's
//! `llama_token_to_piece` with `lstrip = 0`, as the CLI prints). So the pieces of
//! `tokenize(s, .., parse_special = false)` concatenate to `" " + s` for a non-empty `s`,
//! and to `""` for the empty string. A U+2581 (`▁`) already in `s` comes back as a space,
//! as in llama.cpp.

use std::sync::OnceLock;
use std::time::Instant;

mod common;

use common::{build, tok_err, vectors, with};
use gguf::tokenizer::{Detokenizer, TokenType, Tokenizer};
use gguf::{Array, GgufFile, Value};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/b1-spm-i2_s.gguf");
const PROMPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/tokenizer/prompts_tokenized_spm.json");

fn spm() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let file = GgufFile::open(MODEL).expect("open b1-spm-i2_s.gguf");
        Tokenizer::from_gguf(&file).expect("tokenizer")
    })
}

fn pieces(t: &Tokenizer, ids: &[u32], special: bool) -> Vec<u8> {
    ids.iter().flat_map(|&id| t.token_to_piece(id, special)).collect()
}

/// What the pieces of `tokenize(s, .., false)` concatenate to (see the module docs).
fn expected_round_trip(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" {s}")
    }
}

#[test]
fn vocabulary_facts() {
    let t = spm();
    assert_eq!(t.model_name(), "llama");
    assert_eq!(t.pre_tokenizer_name(), "default");
    assert_eq!(t.n_vocab(), 32000);
    assert_eq!(t.n_merges(), 0);
    assert_eq!((t.bos(), t.eos(), t.unk()), (1, 2, Some(0)));
    assert!(t.add_bos() && !t.add_eos() && t.add_space_prefix());
    assert_eq!(t.eot(), None);
    assert_eq!(t.eog_ids(), &[2]);
    assert!(t.is_eog(2) && !t.is_eog(1) && !t.is_eog(0) && !t.is_eog(13));
    // Types as README-more-models.md §6 lists them.
    assert_eq!(t.token_type(0), Some(TokenType::Unknown));
    assert_eq!(t.token_type(1), Some(TokenType::Control));
    assert_eq!(t.token_type(2), Some(TokenType::Control));
    for id in 3..=258 {
        assert_eq!(t.token_type(id), Some(TokenType::Byte));
        assert_eq!(t.token_text(id).unwrap(), format!("<0x{:02X}>", id - 3));
    }
    assert!((259..32000).all(|id| t.token_type(id) == Some(TokenType::Normal)));
    assert_eq!(t.token_text(15043), Some("\u{2581}Hello"));
    assert_eq!(t.token_id("\u{2581}world"), Some(3186));
    assert!(t.token_score(15043).unwrap() < 0.0);
    // Pieces: ▁ → space; byte tokens → the raw byte; control/unknown only with `special`.
    assert_eq!(t.token_to_piece(15043, false), b" Hello");
    assert_eq!(t.token_to_piece(259, false), b"  ");
    assert_eq!(t.token_to_piece(13, false), b"\n"); // <0x0A>
    assert_eq!(t.token_to_piece(3 + 0xF0, false), [0xF0]);
    assert_eq!(t.token_to_piece(1, false), b"");
    assert_eq!(t.token_to_piece(1, true), b"<s>");
    assert_eq!(t.token_to_piece(2, true), b"</s>");
    assert_eq!(t.token_to_piece(0, false), b"");
    assert_eq!(t.token_to_piece(0, true), b"<unk>");
    assert_eq!(t.token_to_piece(32000, true), b"");
    assert_eq!(t.token_text(32000), None);
}

#[test]
fn llama_spm_test_vectors_46_of_46() {
    let t = spm();
    let v = vectors("ggml-vocab-llama-spm.gguf");
    let mut failed = Vec::new();
    for (i, (text, want)) in v.iter().enumerate() {
        let got = t.tokenize(text, false, false);
        if &got != want {
            failed.push(format!("case {i} {text:?}: got {got:?}, want {want:?}"));
        }
        // With add_special only BOS is added in front.
        let mut with_bos = vec![1];
        with_bos.extend(want);
        assert_eq!(t.tokenize(text, true, false), with_bos, "case {i} with BOS");
    }
    eprintln!("llama-spm test vectors: {}/{} pass", v.len() - failed.len(), v.len());
    assert!(failed.is_empty(), "{} of 46 failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn bitnet_prompt_tokens_and_pieces() {
    let t = spm();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(PROMPTS).unwrap()).unwrap();
    assert_eq!(json["bos_token_id"], 1);
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(c["add_bos"], true);
        assert_eq!(c["parse_special"], false);
        assert_eq!(want.len() as u64, c["n_tokens"].as_u64().unwrap());
        let ids = t.tokenize(text, true, false);
        assert_eq!(ids, want, "prompt {}", c["id"]);
        // Pieces as printed with special = true (BOS shows as "<s>").
        let want_pieces: Vec<&str> = c["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let got_pieces: Vec<String> = ids.iter().map(|&id| String::from_utf8(t.token_to_piece(id, true)).unwrap()).collect();
        assert_eq!(got_pieces, want_pieces, "prompt {}", c["id"]);
        // Without special printing the text comes back with the prefixed space.
        assert_eq!(t.decode(&ids, false), format!(" {text}"));
    }
}

#[test]
fn round_trip_on_test_vectors() {
    let t = spm();
    let mut byte_tokens = 0;
    for (text, _) in vectors("ggml-vocab-llama-spm.gguf") {
        for add_special in [false, true] {
            let ids = t.tokenize(&text, add_special, false);
            byte_tokens += ids.iter().filter(|&&id| t.token_type(id) == Some(TokenType::Byte)).count();
            let bytes = pieces(t, &ids, false);
            assert_eq!(String::from_utf8(bytes).unwrap(), expected_round_trip(&text), "{text:?}");
            let mut d = Detokenizer::new();
            let mut s: String = ids.iter().map(|&id| d.push(&t.token_to_piece(id, false))).collect();
            s += &d.finish();
            assert_eq!(s, expected_round_trip(&text));
        }
    }
    assert!(byte_tokens > 0, "the vectors exercise the byte fallback");
}

#[test]
fn byte_fallback_streams_through_detokenizer() {
    let t = spm();
    // 🦙 and 😀 are not pieces of this vocabulary, nor are some of these CJK characters:
    // they fall back to <0xNN> tokens, one per UTF-8 byte.
    let text = "🦙 lamas 日本語のテキスト 😀😃 ក្នុង 鑫";
    let ids = t.tokenize(text, true, false);
    assert_eq!(ids[0], 1);
    let llama_bytes: Vec<u32> = "🦙".bytes().map(|b| 3 + b as u32).collect();
    assert!(ids.windows(4).any(|w| w == llama_bytes.as_slice()), "{ids:?}");
    let n_bytes = ids.iter().filter(|&&id| t.token_type(id) == Some(TokenType::Byte)).count();
    assert!(n_bytes >= 12, "{ids:?}");
    let mut d = Detokenizer::new();
    let mut streamed = String::new();
    let mut held_back = false;
    for &id in &ids {
        let out = d.push(&t.token_to_piece(id, false));
        held_back |= !d.pending().is_empty();
        streamed += &out;
    }
    streamed += &d.finish();
    assert!(held_back, "byte tokens end inside characters");
    assert_eq!(streamed, format!(" {text}"));
    // A byte token on its own: invalid UTF-8 until completed, U+FFFD at the end.
    let mut d = Detokenizer::new();
    assert_eq!(d.push(&t.token_to_piece(3 + 0xE6, false)), "");
    assert_eq!(d.finish(), "\u{FFFD}");
}

#[test]
fn special_token_parsing() {
    let t = spm();
    assert_eq!(t.tokenize("</s>", false, true), [2]);
    assert_eq!(t.tokenize("</s>", true, true), [1, 2]);
    assert_eq!(t.tokenize("<s>", false, true), [1]);
    assert_eq!(t.tokenize("<unk>", false, true), [0]);
    // Without parse_special the text is ordinary text (with the space prefix).
    let plain = t.tokenize("</s>", false, false);
    assert!(!plain.contains(&2) && plain.len() > 1, "{plain:?}");
    assert_eq!(t.decode(&plain, false), " </s>");
    // llama.cpp prefixes a space to every text fragment that follows a special token, not
    // only to the first one.
    let hello = t.tokenize("Hello", false, false);
    assert_eq!(hello, [15043]);
    assert_eq!(t.tokenize("</s>Hello", false, true), [2, 15043]);
    assert_eq!(t.tokenize("Hello</s>world", false, true), [15043, 2, 3186]);
    assert_eq!(t.tokenize("<s>Hello</s>", true, true), [1, 1, 15043, 2]);
    let ids = t.tokenize("Hello</s> world", false, true);
    assert_eq!(ids[..2], [15043, 2]);
    assert_eq!(ids[2..], t.tokenize(" world", false, false));
    assert_eq!(t.decode(&ids, true), " Hello</s>  world");
    assert_eq!(t.decode(&t.tokenize("a</s>b", false, true), true), " a</s> b");
    // Empty text: BOS only with add_special, else nothing.
    assert_eq!(t.tokenize("", true, true), [1]);
    assert_eq!(t.tokenize("", false, false), Vec::<u32>::new());
    // EOS appended when add_eos_token says so.
    let file = GgufFile::open(MODEL).unwrap();
    let mut meta: Vec<(String, Value)> =
        file.metadata().iter().filter(|(k, _)| k.starts_with("tokenizer.")).map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.retain(|(k, _)| k != "tokenizer.ggml.add_eos_token");
    meta.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(true)));
    let t2 = build(&meta).unwrap();
    assert_eq!(t2.tokenize("Hello", true, false), [1, 15043, 2]);
    assert_eq!(t2.tokenize("Hello", false, false), [15043]);
}

#[test]
fn load_and_tokenize_speed() {
    let file = GgufFile::open(MODEL).unwrap();
    let t0 = Instant::now();
    let t = Tokenizer::from_gguf(&file).unwrap();
    let load = t0.elapsed();
    let text: String = vectors("ggml-vocab-llama-spm.gguf").into_iter().map(|(s, _)| s).collect::<Vec<_>>().join("\n");
    let big = text.repeat(200);
    let t1 = Instant::now();
    let ids = t.tokenize(&big, false, false);
    let dt = t1.elapsed();
    assert_eq!(String::from_utf8(pieces(&t, &ids, false)).unwrap(), format!(" {big}"));
    eprintln!(
        "spm tokenizer: from_gguf {:.1} ms; tokenize {} bytes -> {} tokens in {:.1} ms ({:.1} MB/s)",
        load.as_secs_f64() * 1e3,
        big.len(),
        ids.len(),
        dt.as_secs_f64() * 1e3,
        big.len() as f64 / dt.as_secs_f64() / 1e6,
    );
    if !cfg!(debug_assertions) {
        assert!(load.as_secs_f64() < 1.0, "from_gguf took {load:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Small synthetic SentencePiece vocabularies built with the writer.

const UNK: i32 = 2;
const CONTROL: i32 = 3;
const USER: i32 = 4;
const BYTE: i32 = 6;

/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then `extra` (text, score, type).
fn spm_meta(extra: &[(&str, f32, i32)]) -> Vec<(String, Value)> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![UNK, CONTROL, CONTROL];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(BYTE);
    }
    for &(t, s, ty) in extra {
        tokens.push(t.to_string());
        scores.push(s);
        types.push(ty);
    }
    vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(Array::String(tokens))),
        ("tokenizer.ggml.scores".into(), Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type".into(), Value::Array(Array::I32(types))),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ]
}

/// id of the first extra token.
const X: u32 = 259;

fn small() -> Vec<(String, Value)> {
    spm_meta(&[
        ("\u{2581}", -1.0, 1),   // X
        ("a", -2.0, 1),          // X+1
        ("b", -2.0, 1),          // X+2
        ("ab", -5.0, 1),         // X+3
        ("bb", -4.0, 1),         // X+4
        ("\u{2581}a", -3.0, 1),  // X+5
        ("\u{2581}ab", -1.5, 1), // X+6
        ("<ud>", 0.0, USER),     // X+7
        ("<|im_end|>", 0.0, 1),  // X+8: an EOG text, forced to control
        ("é", -6.0, 1),          // X+9
        ("a\u{2581}b", -0.5, 1), // X+10: the space stays inside a piece
    ])
}

#[test]
fn synthetic_merges_by_score() {
    let t = build(&small()).unwrap();
    // "▁ab": ▁a (-3) beats ab (-5); then ▁a+b = ▁ab (-1.5).
    assert_eq!(t.tokenize("ab", false, false), [X + 6]);
    // "▁abb": ▁a first (-3 > -4 bb > -5 ab), then ▁ab (-1.5), leaving b.
    assert_eq!(t.tokenize("abb", false, false), [X + 6, X + 2]);
    // "bbb": the two "bb" bigrams tie: the leftmost merges.
    assert_eq!(t.tokenize("bbb", true, false)[1..], [X, X + 4, X + 2]);
    // "a▁b" is a piece but unreachable: neither "a▁" nor "▁b" is one (no pre-tokenizer,
    // only pairwise merges of pieces).
    assert_eq!(t.tokenize("a b", false, false), [X + 5, X, X + 2]);
    // Characters missing from the vocabulary: bytes; é is a piece.
    assert_eq!(t.tokenize("cé", false, false), [X, 3 + 0x63, X + 9]);
    assert_eq!(t.tokenize("ü", false, false), [X, 3 + 0xC3, 3 + 0xBC]);
    // Newlines and tabs are not escaped.
    assert_eq!(t.tokenize("\n\t", false, false), [X, 3 + 0x0A, 3 + 0x09]);
    // User-defined tokens are split out even without parse_special, and the next text
    // fragment gets the space prefix again.
    assert_eq!(t.tokenize("a<ud>a", false, false), [X + 5, X + 7, X + 5]);
    assert_eq!(t.token_to_piece(X + 7, false), b"<ud>");
    // EOG by text, and forced to control type.
    assert!(t.is_eog(X + 8) && t.is_eog(2));
    assert_eq!(t.eot(), Some(X + 8));
    assert_eq!(t.token_type(X + 8), Some(TokenType::Control));
    assert_eq!(t.tokenize("<|im_end|>", false, true), [X + 8]);
    assert_eq!(t.token_to_piece(X + 8, false), b"");
    // Round trip.
    for s in ["ab", "abb b", " a  b ", "cé ü\n", "a<ud>b"] {
        let ids = t.tokenize(s, false, false);
        let got = String::from_utf8(pieces(&t, &ids, false)).unwrap();
        if s.contains("<ud>") {
            assert_eq!(got, " a<ud> b");
        } else {
            assert_eq!(got, format!(" {s}"));
        }
    }
}

#[test]
fn synthetic_defaults_and_space_prefix_key() {
    // No add_bos/add_eos/add_space_prefix, no bos/eos/unk ids: llama.cpp's SPM defaults.
    let mut m = small();
    for k in
        ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.pre"]
    {
        m = with(&m, k, None);
    }
    let t = build(&m).unwrap();
    assert_eq!((t.bos(), t.eos(), t.unk()), (1, 2, Some(0)));
    assert!(t.add_bos() && !t.add_eos() && t.add_space_prefix());
    assert_eq!(t.pre_tokenizer_name(), "default");
    assert_eq!(t.tokenize("ab", true, false), [1, X + 6]);
    // add_space_prefix = false: no leading ▁, even after special tokens.
    let t = build(&with(&m, "tokenizer.ggml.add_space_prefix", Some(Value::Bool(false)))).unwrap();
    assert!(!t.add_space_prefix());
    assert_eq!(t.tokenize("ab", true, false), [1, X + 3]);
    assert_eq!(t.tokenize("a b", false, false), [X + 1, X, X + 2]);
    assert_eq!(t.tokenize("</s>a", false, true), [2, X + 1]);
    // The pre-tokenizer key is ignored for SPM, even an unknown one.
    assert!(build(&with(&m, "tokenizer.ggml.pre", Some(Value::String("qwen2".into())))).is_ok());
    // No byte tokens at all: a missing character falls back to the unknown token per byte,
    // or to a one-character token for an ASCII byte (llama.cpp's second try).
    let m = with(&small(), "tokenizer.ggml.token_type", None);
    let tokens: Vec<String> = ["<unk>", "<s>", "</s>", "\u{2581}", "a", "c"].iter().map(|s| s.to_string()).collect();
    let m = with(&m, "tokenizer.ggml.tokens", Some(Value::Array(Array::String(tokens))));
    let m = with(&m, "tokenizer.ggml.scores", Some(Value::Array(Array::F32(vec![0.0; 6]))));
    let t = build(&m).unwrap();
    assert_eq!(t.tokenize("aüc", false, false), [3, 4, 0, 0, 5]);
    // Malformed byte-token texts never panic.
    let m = with(&m, "tokenizer.ggml.token_type", Some(Value::Array(Array::I32(vec![2, 3, 3, 6, 6, 6]))));
    let t = build(&m).unwrap();
    // "▁" is 3 bytes long: llama.cpp's strtol("") gives byte 0; "a" is too short (llama.cpp
    // would throw): nothing.
    assert_eq!(t.token_to_piece(3, false), [0]);
    assert_eq!(t.token_to_piece(4, false), b"");
}

#[test]
fn malformed_metadata_is_an_error() {
    let base = small();
    let n = 259 + 11;
    // Scores: missing, wrong length, wrong type.
    let e = tok_err(&with(&base, "tokenizer.ggml.scores", None));
    assert!(e.contains("`tokenizer.ggml.scores` is missing"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.scores", Some(Value::Array(Array::F32(vec![0.0; n - 1])))));
    assert!(e.contains("scores") && e.contains(&format!("{} entries", n - 1)), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.scores", Some(Value::Array(Array::F32(vec![0.0; n + 1])))));
    assert!(e.contains("scores"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.scores", Some(Value::String("x".into()))));
    assert!(e.contains("scores") && e.contains("float array"), "{e}");
    // Token types of the wrong length.
    let e = tok_err(&with(&base, "tokenizer.ggml.token_type", Some(Value::Array(Array::I32(vec![1; 5])))));
    assert!(e.contains("token_type") && e.contains("5 entries"), "{e}");
    // Special ids out of range or of the wrong type.
    let e = tok_err(&with(&base, "tokenizer.ggml.unknown_token_id", Some(Value::U32(n as u32))));
    assert!(e.contains("unknown_token_id") && e.contains("out of range"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.unknown_token_id", Some(Value::I32(-1))));
    assert!(e.contains("unknown_token_id"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.bos_token_id", Some(Value::U32(100_000))));
    assert!(e.contains("bos_token_id") && e.contains("out of range"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.eos_token_id", Some(Value::String("2".into()))));
    assert!(e.contains("eos_token_id") && e.contains("must be an integer"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.add_space_prefix", Some(Value::U8(1))));
    assert!(e.contains("add_space_prefix") && e.contains("bool"), "{e}");
    // Tokens missing, empty, of the wrong type.
    let e = tok_err(&with(&base, "tokenizer.ggml.tokens", None));
    assert!(e.contains("tokens` is missing"), "{e}");
    let e = tok_err(&with(&base, "tokenizer.ggml.tokens", Some(Value::Array(Array::String(vec![])))));
    assert!(e.contains("empty"), "{e}");
    // A tiny vocabulary without bos/eos keys: llama.cpp's defaults 1 and 2 are out of range.
    let m = with(&with(&base, "tokenizer.ggml.bos_token_id", None), "tokenizer.ggml.eos_token_id", None);
    let m = with(&m, "tokenizer.ggml.unknown_token_id", None);
    let m = with(&m, "tokenizer.ggml.token_type", None);
    let m = with(&m, "tokenizer.ggml.tokens", Some(Value::Array(Array::String(vec!["a".into()]))));
    let m = with(&m, "tokenizer.ggml.scores", Some(Value::Array(Array::F32(vec![0.0]))));
    let e = tok_err(&m);
    assert!(e.contains("bos_token_id") && e.contains("default 1"), "{e}");
    let t = build(&with(
        &with(&m, "tokenizer.ggml.bos_token_id", Some(Value::U32(0))),
        "tokenizer.ggml.eos_token_id",
        Some(Value::U32(0)),
    ))
    .unwrap();
    // Only "a" exists; everything else is the unknown token 0, which is also "a" here.
    assert_eq!(t.tokenize("a b", false, false), [0, 0, 0, 0, 0, 0, 0, 0]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Any text (without U+2581) tokenizes without panicking and its pieces give the text
    /// back with the prefixed space.
    #[test]
    fn arbitrary_text_round_trips(text in "(\\PC|\\s|[ 0-9a-zA-Z<>/])*") {
        proptest::prop_assume!(!text.contains('\u{2581}'));
        let t = spm();
        let ids = t.tokenize(&text, false, false);
        proptest::prop_assert_eq!(String::from_utf8(pieces(t, &ids, false)).unwrap(), expected_round_trip(&text));
        let ids_sp = t.tokenize(&text, true, true);
        let _ = t.decode(&ids_sp, true);
    }
}
