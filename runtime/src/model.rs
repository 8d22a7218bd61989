//! A loaded model: the file, the verified graph planned on the chosen backends with its
//! weights bound, the tokenizer and the chat format, held once and shared by every batch.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use gguf::lower::ModelWeights;
use gguf::tokenizer::Tokenizer;
use gguf::{GgufFile, HParams};
use graph::{Program, WeightSource};

use crate::chat::{ChatFormat, ChatMessage};
use crate::error::{Error, ErrorKind, Result};
use crate::options::ModelOptions;

/// What a loaded model is and how it runs (`dump`, the server's `/v1/models`, Python's
/// `model.info`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    /// The file.
    pub path: String,
    /// `general.architecture`.
    pub arch: String,
    /// Layers.
    pub n_layer: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Attention heads and KV heads.
    pub n_head: usize,
    /// KV heads.
    pub n_head_kv: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// The context the model was trained with.
    pub n_ctx_train: usize,
    /// Positions per sequence in this run.
    pub n_ctx: usize,
    /// Parameters (elements of all weight tensors).
    pub n_params: u64,
    /// Tensor types and how many tensors of each.
    pub tensor_types: Vec<(String, usize)>,
    /// The backends tried, in order.
    pub backends: Vec<String>,
    /// Which backend runs how many nodes.
    pub plan: String,
    /// Kernels in use (`backend:kernel`), each once.
    pub kernels: Vec<String>,
    /// Worker threads.
    pub threads: usize,
    /// The chat format `--chat` uses.
    pub chat_format: String,
    /// The LM head mode.
    pub lm_head: String,
    /// Milliseconds spent loading.
    pub load_ms: f64,
}

/// A loaded model.
///
/// ## Design
/// Everything here is immutable after [`Model::load`]: the weights (bound once into the
/// [`Program`]), the tokenizer, the chat format and the thread pool. Runs need mutable state
/// of their own (activations, a KV cache per sequence): a [`crate::Batch`] owns it, and any
/// number of batches can share one model from any thread.
pub struct Model {
    path: String,
    weights: Arc<ModelWeights>,
    hparams: HParams,
    tokenizer: Tokenizer,
    chat_format: ChatFormat,
    program: Arc<Program>,
    pool: Arc<rayon::ThreadPool>,
    options: ModelOptions,
    n_ctx: usize,
    load_ms: f64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.path).field("arch", &self.hparams.arch).finish_non_exhaustive()
    }
}

/// llama.cpp's `--check-tensors`: every weight scanned before anything runs; a file with a
/// non-finite float, a zero or non-finite scale or an invalid ternary code is a load error
/// whose message lists the tensors, elements and values found.
pub fn check_weights(file: &GgufFile, shown: &str) -> Result<()> {
    let report = gguf::check_tensors(file).map_err(|e| Error::load(format!("{shown}: {e}")))?;
    if report.is_ok() {
        Ok(())
    } else {
        Err(Error::load(format!("{shown}: {report}")))
    }
}

impl Model {
    /// Opens, checks and lowers a GGUF model, builds its tokenizer, plans it on the chosen
    /// backends and binds its weights. Unreadable or unsupported files are
    /// [`ErrorKind::Load`] errors; bad options [`ErrorKind::Invalid`].
    pub fn load(path: impl AsRef<Path>, options: &ModelOptions) -> Result<Model> {
        let t0 = Instant::now();
        options.validate()?;
        let path = path.as_ref();
        let shown = path.display().to_string();
        let file = GgufFile::open(path).map_err(|e| Error::load(e.to_string()))?;
        if options.check_tensors {
            check_weights(&file, &shown)?;
        }
        let opts = gguf::LowerOptions { requantize_head: options.lm_head.requantize_to() };
        let lowered = gguf::lower_with(&file, opts).map_err(|e| Error::load(format!("{shown}: {e}")))?;
        let tokenizer = Tokenizer::from_gguf(&file).map_err(|e| Error::load(format!("{shown}: tokenizer: {e}")))?;
        let template = file.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string);
        let hp = lowered.hparams;
        let chat_format = ChatFormat::detect(template.as_deref(), &hp.arch, tokenizer.token_id("<|start_header_id|>").is_some());
        let n_ctx = options.n_ctx.unwrap_or(hp.n_ctx_train);
        let mut weights = ModelWeights::new(file);
        if let Some(dtype) = options.lm_head.requantize_to() {
            let name = gguf::lower::requantized_head_name(dtype).unwrap_or_default();
            if lowered.graph.find(name).is_some() {
                let base = gguf::lower::requantized_head_base(&weights.file, &hp);
                let q = gguf::lower::quantize_head(&weights.file, base, dtype).map_err(|e| Error::load(e.to_string()))?;
                weights.add(name, q);
            }
        }
        let weights = Arc::new(weights);
        let backends = crate::backends::resolve(&options.backend).map_err(Error::invalid)?;
        let program = Program::new(lowered.graph, weights.clone() as Arc<dyn WeightSource>, &backends)
            .map_err(|e| Error::load(format!("{shown}: {e}")))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .thread_name(|i| format!("bitnet-{i}"))
            .build()
            .map_err(|e| Error::engine(format!("thread pool: {e}")))?;
        Ok(Model {
            path: shown,
            weights,
            hparams: hp,
            tokenizer,
            chat_format,
            program: Arc::new(program),
            pool: Arc::new(pool),
            options: options.clone(),
            n_ctx,
            load_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The hyperparameters.
    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model file.
    pub fn file(&self) -> &GgufFile {
        &self.weights.file
    }

    /// The planned program (graph, kernels, weights).
    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// Positions per sequence.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Vocabulary size (logit row length).
    pub fn n_vocab(&self) -> usize {
        self.hparams.n_vocab
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Milliseconds [`Model::load`] took.
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// Runs `f` on the model's thread pool (every step runs there; measurements that must
    /// use the same threads, like `bench`'s bandwidth probe, too).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Token ids of `text`, with BOS first when `add_bos` and the vocabulary adds one;
    /// `special` parses special-token text such as `<|eot_id|>`.
    pub fn tokenize(&self, text: &str, add_bos: bool, special: bool) -> Vec<u32> {
        self.tokenizer.tokenize(text, add_bos, special)
    }

    /// The text of `ids` (special tokens as their text when `special`). Ids outside the
    /// vocabulary are an error.
    pub fn detokenize(&self, ids: &[u32], special: bool) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.hparams.n_vocab) {
            return Err(Error::invalid(format!("token id {bad} is outside the vocabulary of {}", self.hparams.n_vocab)));
        }
        Ok(self.tokenizer.decode(ids, special))
    }

    /// The chat format detected from the file (or the architecture).
    pub fn chat_format(&self) -> ChatFormat {
        self.chat_format
    }

    /// Token ids of a conversation in `format` (the detected one when `None`), ready for the
    /// assistant's reply: BOS when `add_bos` and the vocabulary adds one, then each message
    /// tokenized on its own with special-token parsing, as bitnet.cpp does.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], format: Option<ChatFormat>, add_bos: bool) -> Vec<u32> {
        let format = format.unwrap_or(self.chat_format);
        let mut ids = Vec::new();
        if add_bos && self.tokenizer.add_bos() {
            ids.push(self.tokenizer.bos());
        }
        for part in format.render_messages(messages) {
            ids.extend(self.tokenizer.tokenize(&part, false, true));
        }
        ids
    }

    /// Checks that a prompt fits one sequence's context.
    pub fn check_prompt(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::invalid("the prompt is empty (no tokens and no BOS)"));
        }
        if tokens.len() > self.n_ctx {
            return Err(ErrorKind::PromptTooLong { tokens: tokens.len(), n_ctx: self.n_ctx }.into());
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= self.hparams.n_vocab) {
            return Err(Error::invalid(format!("token id {bad} is outside the vocabulary of {}", self.hparams.n_vocab)));
        }
        Ok(())
    }

    /// What the model is and how it runs.
    pub fn info(&self) -> ModelInfo {
        let hp = &self.hparams;
        let file = &self.weights.file;
        let mut types: Vec<(String, usize)> = Vec::new();
        let mut n_params = 0u64;
        for t in file.tensors() {
            n_params += t.shape().iter().product::<usize>() as u64;
            match types.iter_mut().find(|(n, _)| *n == t.dtype.name()) {
                Some(e) => e.1 += 1,
                None => types.push((t.dtype.name().to_string(), 1)),
            }
        }
        let mut kernels: Vec<String> = self.program.kernel_names().into_iter().flatten().collect();
        kernels.sort();
        kernels.dedup();
        let format_name = crate::chat::FORMATS.iter().find(|f| f.1 == self.chat_format).map_or("?", |f| f.0);
        ModelInfo {
            path: self.path.clone(),
            arch: hp.arch.clone(),
            n_layer: hp.n_layer,
            n_embd: hp.n_embd,
            n_ff: hp.n_ff,
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            n_vocab: hp.n_vocab,
            n_ctx_train: hp.n_ctx_train,
            n_ctx: self.n_ctx,
            n_params,
            tensor_types: types,
            backends: self.program.backends().iter().map(|b| b.name().to_string()).collect(),
            plan: self.program.plan_summary(),
            kernels,
            threads: self.threads(),
            chat_format: format_name.to_string(),
            lm_head: self.options.lm_head.name().into(),
            load_ms: self.load_ms,
        }
    }
}
