//! `bitnet-graph dump`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use gguf::GgufFile;

use crate::cli::{DumpArgs, DumpFormat};
use crate::{load, out};

/// Runs `dump`.
pub fn run(a: &DumpArgs) -> Result<ExitCode> {
    let path = &load::model_path(&a.model)?;
    let (format, tensors, all_metadata) = (a.format, a.tensors, a.metadata);
    if tensors && format == DumpFormat::Dot {
        bail!("--tensors lists tensors as a table or as JSON, not as DOT");
    }
    if all_metadata && format != DumpFormat::Table {
        bail!("--metadata adds the metadata keys to the table format only");
    }
    let file = GgufFile::open(path)?;
    let mut stdout = out::stdout();
    if tensors {
        stdout.put(&tensor_listing(&file, format)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let opts = gguf::LowerOptions { requantize_head: runtime::LmHead::from(a.lm_head).requantize_to() };
    let model = gguf::lower_with(&file, opts).with_context(|| format!("lowering {}", path.display()))?;
    let g = &model.graph;
    // The plan: which backend and kernel each node will run on (nothing is bound or run).
    let backends = runtime::backends::resolve(&a.backend).map_err(|e| anyhow!("--backend: {e}"))?;
    let (kernels, plan) = graph::exec::describe_plan(g, &backends)?;
    let ann = Some(&kernels);
    match format {
        DumpFormat::Table => {
            stdout.put(&summary(&file, &model, path, all_metadata))?;
            stdout.line(&format!("plan: {plan}\n"))?;
            stdout.put(&graph::dump::table(g, ann))?;
        }
        DumpFormat::Dot => stdout.put(&graph::dump::dot(g, ann, None))?,
        DumpFormat::Json => {
            let doc = serde_json::json!({
                "model": {
                    "path": path.display().to_string(),
                    "architecture": model.hparams.arch,
                    "name": file.get("general.name").and_then(|v| v.as_str()),
                    "gguf_version": file.version,
                    "n_tensors": file.tensors().len(),
                    "n_kv": file.metadata().len(),
                },
                "hparams": model.hparams,
                "plan": plan,
                "nodes": graph::dump::json_nodes(g, ann),
                "outputs": g.outputs().iter().map(|&o| g.node(o).name.as_str()).collect::<Vec<_>>(),
            });
            stdout.line(&serde_json::to_string_pretty(&doc)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(file: &GgufFile, model: &gguf::Model, path: &Path, all_metadata: bool) -> String {
    let hp = &model.hparams;
    let mut s = String::new();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        s,
        "model: {} ({} bytes, GGUF v{}, {} metadata keys, {} tensors)",
        path.display(),
        size,
        file.version,
        file.metadata().len(),
        file.tensors().len()
    );
    if let Some(name) = file.get("general.name").and_then(|v| v.as_str()) {
        let _ = writeln!(s, "name: {name}");
    }
    let _ = writeln!(
        s,
        "architecture: {}  n_embd {}  n_ff {}  layers {}  heads {}/{} (head dim {})  vocab {}  ctx {}  rope base {}  eps {:e}",
        hp.arch,
        hp.n_embd,
        hp.n_ff,
        hp.n_layer,
        hp.n_head,
        hp.n_head_kv,
        hp.head_dim,
        hp.n_vocab,
        hp.n_ctx_train,
        hp.rope_base,
        hp.eps
    );
    let mut types: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let e = types.entry(t.dtype.name()).or_default();
        e.0 += 1;
        e.1 += t.nbytes;
    }
    let types: Vec<String> = types.iter().map(|(k, (n, b))| format!("{k} ×{n} ({b} bytes)")).collect();
    let _ = writeln!(s, "tensor types: {}", types.join(", "));
    if let Some(m) = file.get("tokenizer.ggml.model").and_then(|v| v.as_str()) {
        let pre = file.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("(absent: default)");
        let _ = writeln!(s, "tokenizer: {m}, pre-tokenizer {pre}");
    }
    if all_metadata {
        let _ = writeln!(s, "metadata:");
        for (k, v) in file.metadata() {
            let _ = writeln!(s, "  {k} = {}", v.summary());
        }
    }
    let _ = writeln!(s, "graph: {} nodes, verified", model.graph.len());
    s
}

fn tensor_listing(file: &GgufFile, format: DumpFormat) -> Result<String> {
    if format == DumpFormat::Json {
        let v: Vec<_> = file
            .tensors()
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "type": t.dtype.name(), "ggml_type": t.ggml_type,
                    "shape": t.shape(), "ne": t.ne, "offset": t.offset, "abs_offset": t.abs_offset, "bytes": t.nbytes,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut s = format!("{:<32} {:<6} {:<16} {:>12} {:>12}\n", "name", "type", "shape", "offset", "bytes");
    for t in file.tensors() {
        let shape = format!("{:?}", t.shape());
        let _ = writeln!(s, "{:<32} {:<6} {:<16} {:>12} {:>12}", t.name, t.dtype.name(), shape, t.offset, t.nbytes);
    }
    Ok(s)
}
