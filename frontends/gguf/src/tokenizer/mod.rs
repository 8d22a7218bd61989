//! The tokenizer built from GGUF metadata (../shared/docs/format.md §6), reproducing bitnet.cpp's
//! (llama.cpp's) `llama_tokenize` and `llama_token_to_piece`.
//!
//! Supported: byte-level BPE (`tokenizer.ggml.model = gpt2`) with the "default" and the
//! LLaMA-3 pre-tokenizers, and SentencePiece-style vocabularies (`tokenizer.ggml.model =
//! llama`, llama.cpp's `llm_tokenizer_spm`: see the space-prefix notes on
//! [`Tokenizer::tokenize`] and [`Tokenizer::token_to_piece`]). The vocabulary kind sits
//! behind an internal enum.
//!
//! ```no_run
//! # fn main() -> Result<(), gguf::Error> {
//! let file = gguf::GgufFile::open("model.gguf")?;
//! let tok = gguf::tokenizer::Tokenizer::from_gguf(&file)?;
//! let ids = tok.tokenize("Hello, world!", true, false);
//! let mut detok = gguf::tokenizer::Detokenizer::new();
//! let mut text = String::new();
//! for &id in &ids {
//!     text += &detok.push(&tok.token_to_piece(id, false));
//! }
//! text += &detok.finish();
//! # Ok(()) }
//! ```

mod bpe;
mod bytes;
mod detok;
mod pretok;
mod spm;
mod unicode;
#[rustfmt::skip]
mod unicode_tables;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

pub use detok::Detokenizer;

use crate::{Array, Error, ErrorKind, GgufFile, Result, Value};
use bpe::Bpe;
use pretok::PreTokenizer;
use spm::Spm;

/// A token's type (`tokenizer.ggml.token_type`, llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// 0, or any value outside 1..=6.
    Undefined,
    /// 1: an ordinary vocabulary entry.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a control token (BOS, EOS, `<|eot_id|>`, …): printed only on request.
    Control,
    /// 4: a user-defined token: always split out of raw text, printed verbatim.
    UserDefined,
    /// 5: unused.
    Unused,
    /// 6: a byte token (SentencePiece `<0xNN>`).
    Byte,
}

impl TokenType {
    fn from_raw(v: i64) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Control, user-defined and unknown tokens are matched as whole strings before
    /// pre-tokenization (llama.cpp's `cache_special_tokens`).
    fn is_special(self) -> bool {
        matches!(self, TokenType::Control | TokenType::UserDefined | TokenType::Unknown)
    }
}

/// Texts that make a token end-of-generation (llama.cpp's `special_eog_ids` detection).
const EOG_TEXTS: [&str; 7] = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"];
/// Texts that identify the EOT token when `tokenizer.ggml.eot_token_id` is absent, in order.
const EOT_TEXTS: [&str; 6] = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>"];
/// llama.cpp's BOS/EOS default for `gpt2` vocabularies when the keys are absent.
const GPT2_DEFAULT_BOS_EOS: u32 = 11;
/// llama.cpp's BOS / EOS / unknown defaults for `llama` (SentencePiece) vocabularies.
const SPM_DEFAULT_BOS: u32 = 1;
const SPM_DEFAULT_EOS: u32 = 2;
const SPM_DEFAULT_UNK: u32 = 0;

/// The vocabulary kind.
// One per tokenizer: the byte tables inline are fine.
#[allow(clippy::large_enum_variant)]
enum Model {
    /// Byte-level BPE (`gpt2`).
    Bpe { bpe: Bpe, pre: PreTokenizer },
    /// SentencePiece-style (`llama`).
    Spm(Spm),
}

/// A tokenizer built from a GGUF file's `tokenizer.ggml.*` metadata.
pub struct Tokenizer {
    model: Model,
    /// The `tokenizer.ggml.model` value.
    model_name: String,
    /// The pre-tokenizer name in effect (`tokenizer.ggml.pre`, or `default`).
    pre_name: String,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    scores: Vec<f32>,
    /// Text → id; on duplicate texts the last id wins (as llama.cpp's `token_to_id`).
    token_to_id: HashMap<String, u32>,
    /// Special tokens, longest text first, then lowest id.
    special: Vec<u32>,
    bos: u32,
    eos: u32,
    unk: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    pad: Option<u32>,
    /// Sorted end-of-generation ids.
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model_name)
            .field("pre", &self.pre_name)
            .field("n_vocab", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("unk", &self.unk)
            .field("eot", &self.eot)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

/// A piece of the input after the special-token split.
enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata. Errors (never panics) on
    /// missing or inconsistent metadata, an unknown `tokenizer.ggml.model`, or an unknown
    /// `tokenizer.ggml.pre` (BPE only: SentencePiece vocabularies have no pre-tokenizer and
    /// llama.cpp ignores the key for them). Where llama.cpp only warns, this is stricter: a
    /// special-token id out of range is an error, and so is a `llama` vocabulary without
    /// `tokenizer.ggml.scores` (llama.cpp would use 0 for every score).
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        Self::build(file, None)
    }

    /// As [`Tokenizer::from_gguf`], but with the pre-tokenizer named by `pre` (a
    /// `tokenizer.ggml.pre` value: `default`, `llama-bpe`, `llama3`, `llama-v3`) instead of
    /// the file's. This is the explicit opt-in for files whose key is wrong or unknown.
    /// Ignored for SentencePiece (`llama`) vocabularies.
    pub fn from_gguf_with_pre(file: &GgufFile, pre: &str) -> Result<Tokenizer> {
        Self::build(file, Some(pre))
    }

    fn build(file: &GgufFile, pre_override: Option<&str>) -> Result<Tokenizer> {
        let model_name = get_str(file, "tokenizer.ggml.model")?.ok_or_else(|| terr("`tokenizer.ggml.model` is missing"))?;
        let is_spm = match model_name {
            "gpt2" => false,
            "llama" => true,
            other => return Err(terr(format!("unknown `tokenizer.ggml.model` {other:?} (supported: gpt2, llama)"))),
        };

        let tokens = get_str_array(file, "tokenizer.ggml.tokens")?.ok_or_else(|| terr("`tokenizer.ggml.tokens` is missing"))?;
        let n = tokens.len();
        if n == 0 {
            return Err(terr("`tokenizer.ggml.tokens` is empty"));
        }
        let n_vocab = u32::try_from(n)
            .ok()
            .filter(|&v| v <= i32::MAX as u32)
            .ok_or_else(|| terr(format!("`tokenizer.ggml.tokens` has {n} entries, too many")))?;

        let mut types = match file.get("tokenizer.ggml.token_type") {
            None => vec![TokenType::Normal; n],
            Some(v) => {
                let raw = v
                    .as_array()
                    .and_then(Array::to_i64_vec)
                    .ok_or_else(|| type_err("tokenizer.ggml.token_type", "an integer array", v))?;
                if raw.len() != n {
                    return Err(terr(format!(
                        "`tokenizer.ggml.token_type` has {} entries, `tokenizer.ggml.tokens` has {n}",
                        raw.len()
                    )));
                }
                raw.into_iter().map(TokenType::from_raw).collect()
            }
        };
        let scores = match file.get("tokenizer.ggml.scores") {
            None if is_spm => {
                return Err(terr("`tokenizer.ggml.scores` is missing: a SentencePiece (`llama`) vocabulary needs merge scores"))
            }
            None => vec![0.0; n],
            Some(v) => {
                let s = v.as_array().and_then(float_vec).ok_or_else(|| type_err("tokenizer.ggml.scores", "a float array", v))?;
                if s.len() != n {
                    return Err(terr(format!(
                        "`tokenizer.ggml.scores` has {} entries, `tokenizer.ggml.tokens` has {n}",
                        s.len()
                    )));
                }
                s
            }
        };

        let mut token_to_id: HashMap<String, u32> = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            token_to_id.insert(t.clone(), i as u32);
        }

        let id = |key: &str| get_id(file, key, n_vocab);
        // A default id used when its key is absent (llama.cpp's per-vocabulary defaults).
        let default_id = |key: &str, v: u32| {
            if v < n_vocab {
                Ok(v)
            } else {
                Err(terr(format!("`{key}` is missing and llama.cpp's default {v} is out of range (n_vocab {n_vocab})")))
            }
        };
        let with_default = |key: &str, v: u32| -> Result<u32> {
            match id(key)? {
                Some(i) => Ok(i),
                None => default_id(key, v),
            }
        };

        let (model, pre_name, bos, eos, unk, add_bos_default) = if is_spm {
            let bos = with_default("tokenizer.ggml.bos_token_id", SPM_DEFAULT_BOS)?;
            let eos = with_default("tokenizer.ggml.eos_token_id", SPM_DEFAULT_EOS)?;
            let unk = with_default("tokenizer.ggml.unknown_token_id", SPM_DEFAULT_UNK)?;
            let add_space_prefix = get_bool(file, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
            let spm = Spm::new(&token_to_id, unk, add_space_prefix);
            // llama.cpp sets type_pre = DEFAULT for SPM whatever the key says.
            (Model::Spm(spm), "default".to_owned(), bos, eos, Some(unk), true)
        } else {
            let pre_name = match pre_override {
                Some(p) => p.to_owned(),
                None => get_str(file, "tokenizer.ggml.pre")?.unwrap_or("default").to_owned(),
            };
            let pre = PreTokenizer::from_name(Some(&pre_name)).ok_or_else(|| {
                terr(format!(
                    "unknown pre-tokenizer `tokenizer.ggml.pre` = {pre_name:?} (supported: default, llama-bpe, llama3, llama-v3)"
                ))
            })?;
            let merges =
                get_str_array(file, "tokenizer.ggml.merges")?.ok_or_else(|| terr("`tokenizer.ggml.merges` is missing"))?;
            let bpe = Bpe::new(&token_to_id, n_vocab, merges, pre == PreTokenizer::Llama3)?;
            let bos = with_default("tokenizer.ggml.bos_token_id", GPT2_DEFAULT_BOS_EOS)?;
            let eos = with_default("tokenizer.ggml.eos_token_id", GPT2_DEFAULT_BOS_EOS)?;
            let unk = id("tokenizer.ggml.unknown_token_id")?;
            // Without the key llama.cpp adds BOS for the llama3 pre-tokenizer only
            // (`tokenizer_add_bos` defaults to false for BPE and the llama3 branch sets it).
            let add_bos_default = pre == PreTokenizer::Llama3;
            (Model::Bpe { bpe, pre }, pre_name, bos, eos, unk, add_bos_default)
        };
        let pad = id("tokenizer.ggml.padding_token_id")?;
        let mut eot = id("tokenizer.ggml.eot_token_id")?;
        let mut eom = id("tokenizer.ggml.eom_token_id")?;
        let add_bos = get_bool(file, "tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default);
        let add_eos = get_bool(file, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);

        // EOT/EOM found by text are forced to control type, as are all EOG-text tokens
        // (llama.cpp does this before building its special-token cache).
        if eot.is_none() {
            eot = EOT_TEXTS.iter().find_map(|t| token_to_id.get(*t).copied());
            if let Some(e) = eot {
                types[e as usize] = TokenType::Control;
            }
        }
        if eom.is_none() {
            eom = token_to_id.get("<|eom_id|>").copied();
            if let Some(e) = eom {
                types[e as usize] = TokenType::Control;
            }
        }
        let mut eog: Vec<u32> = EOG_TEXTS.iter().filter_map(|t| token_to_id.get(*t).copied()).collect();
        for &e in &eog {
            types[e as usize] = TokenType::Control;
        }
        eog.extend([Some(eos), eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let mut special: Vec<u32> =
            (0..n_vocab).filter(|&i| types[i as usize].is_special() && !tokens[i as usize].is_empty()).collect();
        special.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()).then(a.cmp(&b)));

        Ok(Tokenizer {
            model,
            model_name: model_name.to_owned(),
            pre_name,
            tokens: tokens.to_vec(),
            types,
            scores,
            token_to_id,
            special,
            bos,
            eos,
            unk,
            eot,
            eom,
            pad,
            eog,
            add_bos,
            add_eos,
        })
    }

    /// Tokenizes `text` as llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// special-token split (control and unknown tokens only when `parse_special`;
    /// user-defined tokens always), BOS first when `add_special` and `add_bos()`, then each
    /// raw fragment tokenized on its own: for BPE pre-tokenized and merged; for SentencePiece
    /// escaped (U+0020 → `▁`) and merged by score (see `spm.rs`), EOS last when `add_special`
    /// and `add_eos()`.
    ///
    /// **SentencePiece space prefix** (llama.cpp's `is_prev_special` rule): when
    /// `tokenizer.ggml.add_space_prefix` is true (the default), one space is prepended to a
    /// raw text fragment that is the first fragment of the input or that directly follows a
    /// special-token fragment (a control/unknown token split out under `parse_special`, or a
    /// user-defined token). BOS added by `add_special` does not change this (the first
    /// fragment gets the space either way). So `"Hello"` gives `▁Hello`, and with
    /// `parse_special` `"</s>Hello"` gives `</s>`, `▁Hello`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.push(self.bos);
        }
        let mut scratch = bpe::Scratch::default();
        let mut spm_scratch = spm::Scratch::default();
        let mut pieces = Vec::new();
        // SentencePiece: "prefix with space if first token" or if the previous fragment
        // was a special token.
        let mut is_prev_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    is_prev_special = true;
                }
                Fragment::Text(r) => {
                    match &self.model {
                        Model::Bpe { bpe, pre } => {
                            let raw = &text[r];
                            pieces.clear();
                            pre.split(raw, &mut pieces);
                            for p in &pieces {
                                bpe.encode_piece(raw[p.clone()].as_bytes(), &self.token_to_id, &mut scratch, &mut out);
                            }
                        }
                        Model::Spm(spm) => {
                            let prefix = spm.add_space_prefix && is_prev_special;
                            spm.encode(&text[r], prefix, &self.token_to_id, &self.scores, &mut spm_scratch, &mut out);
                        }
                    }
                    is_prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.push(self.eos);
        }
        out
    }

    /// llama.cpp's `tokenizer_st_partition`: for each special token, longest first, split
    /// every occurrence out of the remaining raw text.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(0..text.len()));
        for &id in &self.special {
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if !text.contains(needle) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(r) = f else {
                    next.push(f);
                    continue;
                };
                let mut base = r.start;
                while let Some(off) = text[base..r.end].find(needle) {
                    let m = base + off;
                    if m > base {
                        next.push(Fragment::Text(base..m));
                    }
                    next.push(Fragment::Token(id));
                    base = m + needle.len();
                }
                if base < r.end {
                    next.push(Fragment::Text(base..r.end));
                }
            }
            frags = next;
        }
        frags
    }

    /// The raw bytes of token `id`, as llama.cpp's `llama_token_to_piece(.., lstrip = 0,
    /// special)`: a normal token's text mapped back through the byte map (BPE) or with
    /// every `▁` replaced by a space (SentencePiece); a SentencePiece byte token `<0xNN>` as
    /// the raw byte 0xNN; a control or unknown token's text only when `special` (else
    /// nothing); a user-defined token's text verbatim; nothing for other types or an
    /// out-of-range id.
    ///
    /// No space is ever stripped here (llama.cpp strips only when a caller passes `lstrip`,
    /// which the CLI's streamed output does not; its whole-string `llama_detokenize` drops
    /// the first space of a SentencePiece text). So for a SentencePiece vocabulary the
    /// pieces of `tokenize(s, ..)` concatenate to `" " + s` when `add_space_prefix()` is set
    /// and `s` is not empty (plus one more space after each special token the text
    /// contained, see [`Tokenizer::tokenize`]).
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(ty) = self.types.get(id as usize).copied() else {
            return Vec::new();
        };
        let text = &self.tokens[id as usize];
        match ty {
            TokenType::Control | TokenType::Unknown if !special => Vec::new(),
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => text.as_bytes().to_vec(),
            TokenType::Normal if matches!(self.model, Model::Spm(_)) => text.replace(spm::SPACE_MARK, " ").into_bytes(),
            TokenType::Byte if matches!(self.model, Model::Spm(_)) => {
                spm::byte_token_value(text).map(|b| vec![b]).unwrap_or_default()
            }
            TokenType::Normal => {
                let mut out = Vec::with_capacity(text.len());
                let mut buf = [0u8; 4];
                for c in text.chars() {
                    match bytes::char_to_byte(c) {
                        Some(b) => out.push(b),
                        // Not a byte character (llama.cpp would throw): keep it as UTF-8.
                        None => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
                    }
                }
                out
            }
            TokenType::Byte | TokenType::Unused | TokenType::Undefined => Vec::new(),
        }
    }

    /// The text of `ids`: the pieces concatenated (no space clean-up and, for
    /// SentencePiece, no removal of the leading space, as bitnet.cpp's CLI prints them),
    /// invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_to_piece(id, special)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Unknown token: `tokenizer.ggml.unknown_token_id`; for SentencePiece vocabularies
    /// llama.cpp's default 0 when the key is absent.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// Whether SentencePiece tokenization prepends a space to the text
    /// (`tokenizer.ggml.add_space_prefix`, default true); always false for BPE, which never
    /// reads the key.
    pub fn add_space_prefix(&self) -> bool {
        match &self.model {
            Model::Spm(spm) => spm.add_space_prefix,
            Model::Bpe { .. } => false,
        }
    }

    /// End-of-turn token: `tokenizer.ggml.eot_token_id`, else the first of `<|eot_id|>`,
    /// `<|im_end|>`, `<|end|>`, `<end_of_turn>`, `<|endoftext|>`, `<EOT>` in the vocabulary.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// End-of-message token: `tokenizer.ggml.eom_token_id`, else `<|eom_id|>` if present.
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }

    /// Padding token (`tokenizer.ggml.padding_token_id`).
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `id` ends generation: EOS, EOT, EOM, or a token whose text is one of
    /// `<|eot_id|>`, `<|im_end|>`, `<|end|>`, `<end_of_turn>`, `<|endoftext|>`,
    /// `<|eom_id|>`, `<EOT>`.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `tokenize(.., add_special = true, ..)` prepends BOS
    /// (`tokenizer.ggml.add_bos_token`; without the key, as llama.cpp: true for the llama3
    /// pre-tokenizer, false for the default one; true for SentencePiece).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `tokenize(.., add_special = true, ..)` appends EOS
    /// (`tokenizer.ggml.add_eos_token`, default false).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// The stored text of token `id` (byte-level form for BPE tokens, `▁` for spaces in
    /// SentencePiece tokens).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of the token whose stored text is `text` (the last one on duplicates).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// The type of token `id` (after llama.cpp's adjustments: EOG tokens become control).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The score of token `id` (`tokenizer.ggml.scores`, 0 when absent).
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The `tokenizer.ggml.model` value (`gpt2` or `llama`).
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The pre-tokenizer in effect: the `tokenizer.ggml.pre` value (or the override), or
    /// `default` when the key is absent. Always `default` for SentencePiece (llama.cpp's
    /// `type_pre` for SPM; there is no pre-tokenizer).
    pub fn pre_tokenizer_name(&self) -> &str {
        &self.pre_name
    }

    /// Number of distinct BPE merge pairs (0 for SentencePiece, which merges by score).
    pub fn n_merges(&self) -> usize {
        match &self.model {
            Model::Bpe { bpe, .. } => bpe.n_merges(),
            Model::Spm(_) => 0,
        }
    }
}

pub(crate) fn terr(msg: impl Into<String>) -> Error {
    ErrorKind::Tokenizer(msg.into()).into()
}

fn type_err(key: &str, want: &str, v: &Value) -> Error {
    let found = match v {
        Value::Array(a) => format!("an array of {}", a.elem_type().name()),
        other => other.value_type().name().to_owned(),
    };
    terr(format!("`{key}` must be {want}, found {found}"))
}

fn get_str<'a>(file: &'a GgufFile, key: &str) -> Result<Option<&'a str>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| type_err(key, "a string", v)),
    }
}

fn get_bool(file: &GgufFile, key: &str) -> Result<Option<bool>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| type_err(key, "a bool", v)),
    }
}

fn get_str_array<'a>(file: &'a GgufFile, key: &str) -> Result<Option<&'a [String]>> {
    match file.get(key) {
        None => Ok(None),
        Some(Value::Array(Array::String(v))) => Ok(Some(v.as_slice())),
        Some(v) => Err(type_err(key, "an array of strings", v)),
    }
}

/// A token id key: an integer in `0..n_vocab`.
fn get_id(file: &GgufFile, key: &str, n_vocab: u32) -> Result<Option<u32>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => {
            let i = v.as_int().ok_or_else(|| type_err(key, "an integer", v))?;
            if i < 0 || i >= n_vocab as i128 {
                return Err(terr(format!("`{key}` = {i} is out of range (n_vocab {n_vocab})")));
            }
            Ok(Some(i as u32))
        }
    }
}

fn float_vec(a: &Array) -> Option<Vec<f32>> {
    match a {
        Array::F32(v) => Some(v.clone()),
        Array::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
        other => other.to_i64_vec().map(|v| v.into_iter().map(|x| x as f32).collect()),
    }
}

/// Hasher for the merge table's `u64` pair keys: murmur3's 64-bit finalizer, so every key
/// bit reaches both the bucket index (low bits) and hashbrown's tag (high bits). String maps
/// use the standard SipHash, which measured faster here than an Fx-style string hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        let mut h = self.0 ^ i;
        h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        self.0 = h ^ (h >> 33);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`PairHasher`]s.
pub(crate) type PairBuild = BuildHasherDefault<PairHasher>;
