//! Chat formats for `exec --chat`. bitnet.cpp does not run the GGUF's Jinja template: it
//! recognises known templates by substring and applies a hard-coded format (docs/format.md
//! §7). We do the same.

/// A chat format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatFormat {
    /// bitnet.cpp's "bitnet" format: `System: …`, `User: …<|eot_id|>Assistant: `.
    Bitnet,
    /// LLaMA-3 headers.
    Llama3,
    /// ChatML.
    ChatMl,
}

impl ChatFormat {
    /// Picks the format for a stored template, as bitnet.cpp's substring matching does;
    /// files without a template (the 2B-4T family) get the bitnet format.
    pub fn detect(template: Option<&str>) -> ChatFormat {
        match template {
            Some(t) if t.contains("<|im_start|>") => ChatFormat::ChatMl,
            Some(t) if t.contains("<|start_header_id|>") => ChatFormat::Llama3,
            _ => ChatFormat::Bitnet,
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
            ChatFormat::ChatMl => {
                if let Some(s) = system {
                    parts.push(format!("<|im_start|>system\n{s}<|im_end|>\n"));
                }
                parts.push(format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"));
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
        let f = ChatFormat::detect(Some("{% for message in messages %}… BITNETAssistant: …"));
        assert_eq!(f, ChatFormat::Bitnet);
        assert_eq!(ChatFormat::detect(None), ChatFormat::Bitnet);
        assert_eq!(
            f.render(Some("You are a helpful assistant"), "hi"),
            vec!["System: You are a helpful assistant".to_string(), "User: hi<|eot_id|>Assistant: ".to_string()]
        );
    }
}
