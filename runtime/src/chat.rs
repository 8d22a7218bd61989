//! Chat formats for `exec --chat`, the server's chat completions and Python's `chat=True`.
//! bitnet.cpp does not run the GGUF's Jinja template: it recognises known templates by
//! substring and applies a hard-coded format (../shared/docs/format.md §7). We do the same,
//! with the formats of the model families bitnet.cpp runs.

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The system prompt.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// By OpenAI's name (`system`, `user`, `assistant`; `developer` is OpenAI's newer name for
    /// `system`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role, content: content.into() }
    }
}

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
        let mut msgs: Vec<ChatMessage> = system.map(|s| ChatMessage::new(Role::System, s)).into_iter().collect();
        msgs.push(ChatMessage::new(Role::User, user));
        self.render_messages(&msgs)
    }

    /// The text parts of a conversation followed by the assistant's turn, one part per
    /// message (the assistant prompt joins the last one), each to be tokenized separately
    /// with special-token parsing, as llama-cli formats a conversation message by message.
    pub fn render_messages(self, messages: &[ChatMessage]) -> Vec<String> {
        let mut parts: Vec<String> = Vec::new();
        let mut first_user = true;
        let system = messages.iter().find(|m| m.role == Role::System).map(|m| m.content.as_str());
        let has_user = messages.iter().any(|m| m.role == Role::User);
        for m in messages {
            let c = &m.content;
            let part = match (self, m.role) {
                (ChatFormat::Bitnet, Role::System) => format!("System: {c}"),
                (ChatFormat::Bitnet, Role::User) => format!("User: {c}<|eot_id|>"),
                (ChatFormat::Bitnet, Role::Assistant) => format!("Assistant: {c}<|eot_id|>"),
                (ChatFormat::Llama3, r) => format!("<|start_header_id|>{}<|end_header_id|>\n\n{c}<|eot_id|>", r.name()),
                // LLaMA-2 folds the system prompt into the first instruction; without one, it
                // is an instruction of its own (it is never dropped).
                (ChatFormat::Llama2, Role::System) if has_user => continue,
                (ChatFormat::Llama2, Role::System) => format!("[INST] <<SYS>>\n{c}\n<</SYS>>\n\n [/INST]"),
                (ChatFormat::Llama2, Role::User) => {
                    let p = match (first_user, system) {
                        (true, Some(s)) => format!("[INST] <<SYS>>\n{s}\n<</SYS>>\n\n{c} [/INST]"),
                        (true, None) => format!("[INST] {c} [/INST]"),
                        (false, _) => format!("<s>[INST] {c} [/INST]"),
                    };
                    first_user = false;
                    p
                }
                (ChatFormat::Llama2, Role::Assistant) => format!(" {c} </s>"),
                (ChatFormat::ChatMl, r) => format!("<|im_start|>{}\n{c}<|im_end|>\n", r.name()),
                (ChatFormat::Falcon3, r) => format!("<|{}|>\n{c}\n", r.name()),
            };
            parts.push(part);
        }
        let assistant = match self {
            ChatFormat::Bitnet => "Assistant: ",
            ChatFormat::Llama3 => "<|start_header_id|>assistant<|end_header_id|>\n\n",
            ChatFormat::Llama2 => "",
            ChatFormat::ChatMl => "<|im_start|>assistant\n",
            ChatFormat::Falcon3 => "<|assistant|>\n",
        };
        match parts.last_mut() {
            Some(last) => last.push_str(assistant),
            None => parts.push(assistant.to_string()),
        }
        parts.retain(|p| !p.is_empty());
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
    fn multi_turn() {
        let msgs = [
            ChatMessage::new(Role::System, "s"),
            ChatMessage::new(Role::User, "a"),
            ChatMessage::new(Role::Assistant, "b"),
            ChatMessage::new(Role::User, "c"),
        ];
        assert_eq!(
            ChatFormat::Bitnet.render_messages(&msgs),
            ["System: s", "User: a<|eot_id|>", "Assistant: b<|eot_id|>", "User: c<|eot_id|>Assistant: "]
        );
        assert_eq!(
            ChatFormat::Llama2.render_messages(&msgs),
            ["[INST] <<SYS>>\ns\n<</SYS>>\n\na [/INST]", " b </s>", "<s>[INST] c [/INST]"]
        );
        assert_eq!(ChatFormat::ChatMl.render_messages(&msgs)[3], "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(Role::parse("developer"), Some(Role::System));
        assert_eq!(Role::parse("tool"), None);
    }

    #[test]
    fn llama2_keeps_a_system_prompt_without_instruction() {
        let msgs = [ChatMessage::new(Role::System, "be brief")];
        assert_eq!(ChatFormat::Llama2.render_messages(&msgs), vec!["[INST] <<SYS>>\nbe brief\n<</SYS>>\n\n [/INST]"]);
        // No message at all renders nothing (the caller's prompt check refuses it).
        assert!(ChatFormat::Llama2.render_messages(&[]).is_empty());
    }

    #[test]
    fn renders() {
        assert_eq!(ChatFormat::Llama2.render(None, "hi"), vec!["[INST] hi [/INST]"]);
        assert_eq!(ChatFormat::Falcon3.render(None, "hi"), vec!["<|user|>\nhi\n<|assistant|>\n"]);
        assert_eq!(ChatFormat::ChatMl.render(Some("s"), "hi").len(), 2);
    }
}
