//! Arbitrary bytes → a conversation → every chat format → tokens, with both shared
//! vocabularies. What the server and `exec --chat` do with a client's messages, where the text
//! may contain anything, special-token text included.
//!
//! The bytes are cut at each 0x00 into messages; a message's first byte picks its role (system,
//! user, assistant by its value mod 3), the rest is its content (lossy UTF-8). The whole input
//! is also offered to `ChatFormat::detect` as a stored template. Nothing may panic, every id is
//! in the vocabulary, the rendered parts are never empty strings (the list is empty only for an
//! empty LLaMA-2 conversation), and every message's content appears in the rendered text in
//! order (LLaMA-2's system prompt is folded into the first user message, so there only its
//! presence is checked).
#![no_main]

use std::sync::OnceLock;

use gguf::tokenizer::Tokenizer;
use gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use runtime::chat::{ChatFormat, ChatMessage, Role, FORMATS};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models/");

fn vocabs() -> &'static [Tokenizer; 2] {
    static V: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    V.get_or_init(|| {
        let load = |name: &str| Tokenizer::from_gguf(&GgufFile::open(format!("{MODELS}{name}")).expect("shared model")).expect("tokenizer");
        [load("tiny-i2_s.gguf"), load("b1-spm-i2_s.gguf")]
    })
}

fuzz_target!(|data: &[u8]| {
    let template = String::from_utf8_lossy(data);
    for arch in ["bitnet-b1.58", "llama", ""] {
        for llama3 in [false, true] {
            ChatFormat::detect(Some(&template), arch, llama3);
        }
    }
    let messages: Vec<ChatMessage> = data
        .split(|&b| b == 0)
        .filter_map(|m| m.split_first())
        .map(|(&r, content)| {
            let role = [Role::System, Role::User, Role::Assistant][usize::from(r) % 3];
            ChatMessage::new(role, String::from_utf8_lossy(content))
        })
        .collect();
    for &(_, format, _) in FORMATS {
        let parts = format.render_messages(&messages);
        // Nothing to say renders nothing only in LLaMA-2 (no assistant prefix); callers refuse
        // the empty prompt.
        assert!(!parts.is_empty() || messages.is_empty(), "{format:?}: {parts:?}");
        assert!(parts.iter().all(|p| !p.is_empty()), "{format:?}: {parts:?}");
        let text = parts.concat();
        let mut at = 0;
        for (i, m) in messages.iter().enumerate() {
            if format == ChatFormat::Llama2 && m.role == Role::System {
                // Folded into the first instruction (only the first system message is kept
                // then), or an instruction of its own when there is none: never dropped alone.
                let first = messages.iter().position(|m| m.role == Role::System) == Some(i);
                let has_user = messages.iter().any(|m| m.role == Role::User);
                assert!(!(first || !has_user) || text.contains(m.content.as_str()), "Llama2: system {i} dropped from {text:?}");
                continue;
            }
            let Some(found) = text[at..].find(m.content.as_str()) else {
                panic!("{format:?}: message {i} ({:?}) missing from {text:?}", m.content);
            };
            at += found + m.content.len();
        }
        for t in vocabs() {
            for part in &parts {
                let ids = t.tokenize(part, false, true);
                assert!(ids.iter().all(|&id| (id as usize) < t.n_vocab()), "{format:?}: id out of range for {part:?}");
            }
        }
    }
});
