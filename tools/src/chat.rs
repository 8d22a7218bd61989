//! Chat formats for `exec --chat`. bitnet.cpp does not run the GGUF's Jinja template: it
//! recognises known templates by substring and applies a hard-coded format (docs/format.md
//! §7). We do the same, with the formats of the model families bitnet.cpp runs.

/// A chat format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatFormat {
    /// bitnet.cpp's "bitnet" format (BitNet b1.58 2B-4T): `System: …`,
    /// `User: …<|eot_id|>Assistant: `.
    Bitnet,
    /// LLaMA-3 headers (Llama3-8B-1.58).
    Llama3,
    /// LLaMA-2 `[INST]` (SentencePiece LLaMA-2 vocabularies).
    Llama2,
    /// ChatML (`<|im_start|>`), llama.cpp's fallback for unknown templates.
    ChatMl,
    /// Falcon3 (`<|user|>` / `<|assistant|>`), Falcon3-*-1.58bit.
    Falcon3,
}

/// Every format with its `--chat-template` name and what selects it automatically.
pub const FORMATS: &[(&str, ChatFormat, &str)] = &[
    ("bitnet", ChatFormat::Bitnet, "template containing BITNET; arch bitnet-b1.58/bitnet-25 without a template"),
    ("llama3", ChatFormat::Llama3, "template with <|start_header_id|>; a LLaMA-3 vocabulary without a template"),
    ("llama2", ChatFormat::Llama2, "template with [INST]"),
    ("chatml", ChatFormat::ChatMl, "template with <|im_start|>; any other model without a known template"),
    ("falcon3", ChatFormat::Falcon3, "template with <|user|> and <|assistant|>"),
];

impl ChatFormat {
    /// A format by `--chat-template` name.
    pub fn by_name(name: &str) -> Option<ChatFormat> {
        FORMATS.iter().find(|(n, _, _)| *n == name).map(|(_, f, _)| *f)
    }

    /// Picks the format from a stored template by substring, as bitnet.cpp does; without a
    /// template, from the model family (`arch`, and whether the vocabulary has LLaMA-3's
    /// header tokens).
    pub fn detect(template: Option<&str>, arch: &str, llama3_vocab: bool) -> ChatFormat {
        match template {
            Some(t) if t.contains("<|im_start|>") => ChatFormat::ChatMl,
            Some(t) if t.contains("<|start_header_id|>") => ChatFormat::Llama3,
            Some(t) if t.contains("[INST]") => ChatFormat::Llama2,
            Some(t) if t.contains("<|user|>") && t.contains("<|assistant|>") => ChatFormat::Falcon3,
            Some(t) if t.contains("BITNET") => ChatFormat::Bitnet,
            _ if arch == "bitnet-b1.58" || arch == "bitnet-25" => ChatFormat::Bitnet,
            _ if llama3_vocab => ChatFormat::Llama3,
            _ => ChatFormat::ChatMl,
        }
    }

    /// The text parts of a one-turn conversation, each to be tokenized separately with
    /// special-token parsing (BOS is added by the caller).
    pub fn render(self, system: Option<&str>, user: &str) -> Vec<String> {
        let mut parts = Vec::new();
        match self {
            ChatFormat::Bitnet => {
                if let Some(s) = system {
                    parts.push(format!("System: {s}"));
                }
                parts.push(format!("User: {user}<|eot_id|>Assistant: "));
            }
            ChatFormat::Llama3 => {
                if let Some(s) = system {
                    parts.push(format!("<|start_header_id|>system<|end_header_id|>\n\n{s}<|eot_id|>"));
                }
                parts.push(format!("<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
            }
            ChatFormat::Llama2 => match system {
                Some(s) => parts.push(format!("[INST] <<SYS>>\n{s}\n<</SYS>>\n\n{user} [/INST]")),
                None => parts.push(format!("[INST] {user} [/INST]")),
            },
            ChatFormat::ChatMl => {
                if let Some(s) = system {
                    parts.push(format!("<|im_start|>system\n{s}<|im_end|>\n"));
                }
                parts.push(format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"));
            }
            ChatFormat::Falcon3 => {
                if let Some(s) = system {
                    parts.push(format!("<|system|>\n{s}\n"));
                }
                parts.push(format!("<|user|>\n{user}\n<|assistant|>\n"));
            }
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitnet_format_matches_bitnet_cpp() {
        let f = ChatFormat::detect(Some("{% for message in messages %}… BITNETAssistant: …"), "bitnet-b1.58", true);
        assert_eq!(f, ChatFormat::Bitnet);
        assert_eq!(ChatFormat::detect(None, "bitnet-b1.58", true), ChatFormat::Bitnet);
        assert_eq!(
            f.render(Some("You are a helpful assistant"), "hi"),
            vec!["System: You are a helpful assistant".to_string(), "User: hi<|eot_id|>Assistant: ".to_string()]
        );
    }

    #[test]
    fn detection_by_template_and_family() {
        assert_eq!(ChatFormat::detect(Some("<|im_start|>{{ x }}"), "llama", false), ChatFormat::ChatMl);
        assert_eq!(ChatFormat::detect(Some("<|start_header_id|>"), "llama", true), ChatFormat::Llama3);
        assert_eq!(ChatFormat::detect(Some("[INST] x [/INST]"), "llama", false), ChatFormat::Llama2);
        assert_eq!(ChatFormat::detect(Some("<|user|>\n<|assistant|>\n"), "llama", false), ChatFormat::Falcon3);
        assert_eq!(ChatFormat::detect(None, "llama", true), ChatFormat::Llama3);
        assert_eq!(ChatFormat::detect(None, "bitnet", false), ChatFormat::ChatMl);
        for (name, f, _) in FORMATS {
            assert_eq!(ChatFormat::by_name(name), Some(*f));
        }
        assert_eq!(ChatFormat::by_name("nope"), None);
    }

    #[test]
    fn renders() {
        assert_eq!(ChatFormat::Llama2.render(None, "hi"), vec!["[INST] hi [/INST]"]);
        assert_eq!(ChatFormat::Falcon3.render(None, "hi"), vec!["<|user|>\nhi\n<|assistant|>\n"]);
        assert_eq!(ChatFormat::ChatMl.render(Some("s"), "hi").len(), 2);
    }
}
