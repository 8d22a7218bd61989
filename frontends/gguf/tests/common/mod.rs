//! Helpers shared by the tokenizer test files.
#![allow(dead_code)]

use std::path::PathBuf;

use gguf::tokenizer::Tokenizer;
use gguf::{ErrorKind, GgufFile, Value};

/// `<workspace>/../shared/<rel>`.
pub fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(rel)
}

/// llama.cpp test vectors `<stem>.inp` / `<stem>.out` in `reference/tokenizer`:
/// (input, expected ids), 46 cases.
pub fn vectors(stem: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(shared(&format!("reference/tokenizer/{stem}.inp"))).unwrap();
    let out = std::fs::read_to_string(shared(&format!("reference/tokenizer/{stem}.out"))).unwrap();
    let mut cases: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(cases.pop(), Some(""), "the .inp file ends with a separator");
    let lines: Vec<&str> = out.split('\n').collect();
    assert!(lines.len() >= cases.len());
    assert_eq!(cases.len(), 46);
    cases.iter().zip(lines).map(|(c, l)| (c.to_string(), l.split_whitespace().map(|t| t.parse().unwrap()).collect())).collect()
}

/// A tokenizer from metadata alone (an in-memory GGUF without tensors).
pub fn build(meta: &[(String, Value)]) -> Result<Tokenizer, gguf::Error> {
    let mut buf = Vec::new();
    gguf::writer::write_gguf(&mut buf, meta, &[], 32).unwrap();
    let file = GgufFile::from_bytes(buf).expect("writer output parses");
    Tokenizer::from_gguf(&file)
}

/// `meta` with `key` replaced by `v` (or removed).
pub fn with(meta: &[(String, Value)], key: &str, v: Option<Value>) -> Vec<(String, Value)> {
    let mut m: Vec<_> = meta.iter().filter(|(k, _)| k != key).cloned().collect();
    if let Some(v) = v {
        m.push((key.to_string(), v));
    }
    m
}

/// The tokenizer error `meta` must give.
pub fn tok_err(meta: &[(String, Value)]) -> String {
    match build(meta) {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert!(matches!(e.kind(), ErrorKind::Tokenizer(_)), "{e}");
            e.to_string()
        }
    }
}
