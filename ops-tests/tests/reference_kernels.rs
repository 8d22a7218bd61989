//! Bit-exact checks of `backend_scalar::kernels` against bitnet.cpp's own intermediate
//! tensors (shared/reference/README.md §2.5 and §4.4; ../shared/docs/format.md §4).
//!
//! Every test walks the dumped graph nodes of every reference pass, recomputes each node
//! of its op family from that node's dumped inputs and the model's weights with the scalar
//! kernels, and requires identical f32 bits. Passes:
//!
//! - `tiny/tensors`: batched pass over `p1_capital` (6 tokens, positions 0–5);
//! - `tiny/gen0`: first generation step (1 token at position 6);
//! - `tiny/seq#i`: the six single-token passes of token-by-token mode (position i);
//! - `<model>/tensors` of the extra models (`b1-spm-i2_s`: arch `bitnet`, Q8_0 head, NEOX
//!   base 10000; `llama-tern-i2_s`: NORM RoPE, Q8_0 head; `b158-spm-tq2_0`: its norms,
//!   RoPE and attention only, TQ2_0/Q4_0 products are not scalar kernels here).
//!
//! Inputs are the nodes named by a node's `src0`/`src1` (the latest earlier node of that
//! name in the same pass) or GGUF weights. On a mismatch the report gives the number of
//! differing values, the max |Δ| and the first differing index.
//!
//! Run with `cargo test -p ops-tests --release --test reference_kernels -- --nocapture`
//! to see one line per checked node.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use backend_scalar::kernels as k;
use gguf::{GgufFile, Value};
use graph::RopeStyle;
use half::f16;
use ops_tests::bitexact::{par_fill, BitReport};
use ops_tests::dump::{read_index, DumpNode as Node};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

/// GGUF type ids (../shared/docs/format.md §2.1).
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_Q8_0: u32 = 8;
const GGML_I2_S: u32 = 36;

// ---------------------------------------------------------------------------------------
// Reference data
// ---------------------------------------------------------------------------------------

/// A model file with the hyperparameters the kernels need.
struct Model {
    name: &'static str,
    file: GgufFile,
    rope_base: f32,
    n_rot: usize,
    eps: f32,
    style: RopeStyle,
    embd_f16: OnceLock<Vec<f16>>,
}

impl Model {
    fn open(name: &'static str) -> Model {
        let path = format!("{SHARED}/models/{name}.gguf");
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let arch = match file.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            other => panic!("{name}: general.architecture = {other:?}"),
        };
        let f32_key = |key: &str| match file.get(&format!("{arch}.{key}")) {
            Some(Value::F32(v)) => *v,
            other => panic!("{name}: {arch}.{key} = {other:?}"),
        };
        let rope_base = f32_key("rope.freq_base");
        let eps = f32_key("attention.layer_norm_rms_epsilon");
        let n_rot = match file.get(&format!("{arch}.rope.dimension_count")) {
            Some(v) => v.as_int().expect("rope.dimension_count") as usize,
            None => panic!("{name}: no rope.dimension_count"),
        };
        // llama.cpp: `llama` uses the NORM pairing, the bitnet archs NEOX.
        let style = if arch == "llama" { RopeStyle::Norm } else { RopeStyle::Neox };
        Model { name, file, rope_base, n_rot, eps, style, embd_f16: OnceLock::new() }
    }

    /// A tensor's info and bytes.
    fn tensor(&self, name: &str) -> Option<(&gguf::TensorInfo, &[u8])> {
        let info = self.file.tensor(name)?;
        Some((info, self.file.tensor_data(info)))
    }

    /// An F32 weight.
    fn f32_weight(&self, name: &str) -> Option<Vec<f32>> {
        let (info, _) = self.tensor(name)?;
        (info.ggml_type == GGML_F32).then(|| self.file.tensor_f32(name).expect("f32 tensor"))
    }

    /// `token_embd` as f16 values (F16 heads only).
    fn embd_f16(&self) -> &[f16] {
        self.embd_f16.get_or_init(|| {
            let (info, data) = self.tensor("token_embd.weight").expect("token_embd");
            assert_eq!(info.ggml_type, GGML_F16);
            data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()
        })
    }
}

/// One forward pass of the reference: its nodes (in execution order) and token positions.
struct Pass {
    label: String,
    model: &'static Model,
    nodes: Vec<Node>,
    positions: Vec<i32>,
}

impl Pass {
    fn tokens(&self) -> usize {
        self.positions.len()
    }

    /// The latest node before `before` called `name`.
    fn src(&self, before: usize, name: &str) -> Option<&Node> {
        self.nodes.iter().take(before).rev().find(|n| n.name == name)
    }

    /// The node an input of node `i` names, if it is a dumped node.
    fn input(&self, i: usize, which: &Option<String>) -> Option<&Node> {
        self.src(i, which.as_deref()?)
    }
}

fn models() -> &'static [Model] {
    static MODELS: OnceLock<Vec<Model>> = OnceLock::new();
    MODELS
        .get_or_init(|| ["tiny-i2_s", "b1-spm-i2_s", "llama-tern-i2_s", "b158-spm-tq2_0"].into_iter().map(Model::open).collect())
}

fn model(name: &str) -> &'static Model {
    models().iter().find(|m| m.name == name).expect("model")
}

/// Reads a dump folder's `index.json` and cuts it into passes of `per_pass` nodes.
fn read_dump(
    model: &'static Model,
    dir: &Path,
    label: &str,
    per_pass: Option<usize>,
    positions: &dyn Fn(usize) -> Vec<i32>,
) -> Vec<Pass> {
    let nodes = read_index(dir);
    let per_pass = per_pass.unwrap_or(nodes.len());
    assert_eq!(nodes.len() % per_pass, 0, "{}: node count", dir.display());
    let n_pass = nodes.len() / per_pass;
    let mut nodes = nodes.into_iter();
    (0..n_pass)
        .map(|p| Pass {
            label: if n_pass == 1 { label.to_owned() } else { format!("{label}#{p}") },
            model,
            nodes: nodes.by_ref().take(per_pass).collect(),
            positions: positions(p),
        })
        .collect()
}

fn passes() -> &'static [Pass] {
    static PASSES: OnceLock<Vec<Pass>> = OnceLock::new();
    PASSES.get_or_init(|| {
        let r = PathBuf::from(format!("{SHARED}/reference"));
        let tiny = model("tiny-i2_s");
        let mut v = Vec::new();
        v.extend(read_dump(tiny, &r.join("tiny-i2_s/tensors"), "tiny/tensors", None, &|_| (0..6).collect()));
        v.extend(read_dump(tiny, &r.join("tiny-i2_s/tensors_gen0"), "tiny/gen0", None, &|_| vec![6]));
        v.extend(read_dump(tiny, &r.join("tiny-i2_s/seq/tensors"), "tiny/seq", Some(80), &|p| vec![p as i32]));
        for m in ["b1-spm-i2_s", "llama-tern-i2_s", "b158-spm-tq2_0"] {
            v.extend(read_dump(model(m), &r.join(m).join("tensors"), &format!("{m}/tensors"), None, &|_| (0..6).collect()));
        }
        assert_eq!(v.len(), 1 + 1 + 6 + 3);
        v
    })
}

// ---------------------------------------------------------------------------------------
// Comparison and reporting
// ---------------------------------------------------------------------------------------

/// Records one node's comparison under the key `pass: name` (what the required lists use).
fn compare(rep: &mut BitReport, pass: &Pass, node: &Node, got: &[f32], want: &[f32]) {
    rep.compare(format!("{}: {}", pass.label, node.name), &format!("{}: {}", pass.label, node.label()), got, want);
}

/// `(pass, node)` pairs that must be checked in both tiny passes named in the brief.
fn required_both(names: &[&'static str]) -> Vec<String> {
    let mut v = Vec::new();
    for pass in ["tiny/tensors", "tiny/gen0"] {
        for &n in names {
            v.push(format!("{pass}: {n}"));
        }
    }
    v
}

fn to_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

/// Last dimension of a dumped node (its row length).
fn last_dim(node: &Node) -> usize {
    *node.load().0.last().expect("shape")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// RMSNorm: every `RMS_NORM` node (weight 1) and every weight `MUL` that follows one
/// (norm then weight multiply, computed by `rms_norm_f32` from the norm's input).
#[test]
fn rms_norm_bit_exact() {
    let mut rep = BitReport::default();
    for pass in passes() {
        let eps = pass.model.eps;
        for (i, node) in pass.nodes.iter().enumerate() {
            let (input, weight) = match node.op.as_str() {
                "RMS_NORM" => (pass.input(i, &node.src0), None),
                "MUL" => {
                    let Some(norm) = pass.input(i, &node.src0).filter(|n| n.op == "RMS_NORM") else { continue };
                    let Some(w) = node.src1.as_deref().and_then(|w| pass.model.f32_weight(w)) else { continue };
                    (pass.input(norm.idx - pass.nodes[0].idx, &norm.src0), Some(w))
                }
                _ => continue,
            };
            let input = input.unwrap_or_else(|| panic!("{}: input of {}", pass.label, node.label()));
            let x = input.data();
            let n = last_dim(node);
            let w = weight.unwrap_or_else(|| vec![1.0; n]);
            assert_eq!(w.len(), n, "{}: weight length", node.label());
            let mut got = vec![0.0f32; x.len()];
            for (o, r) in got.chunks_mut(n).zip(x.chunks(n)) {
                k::rms_norm_f32(r, &w, eps, o);
            }
            compare(&mut rep, pass, node, &got, &node.data());
        }
    }
    rep.finish(
        "rms_norm",
        &required_both(&["norm-0", "attn_norm-0", "attn_sub_norm-0", "ffn_norm-0", "ffn_sub_norm-0", "result_norm"]),
    );
}

/// I2_S matmul: every `MUL_MAT` whose weight is I2_S, from its dumped input row(s):
/// `quantize_row_i8`, `vec_dot_i2s_i8` per output row, `i2s_output`.
#[test]
fn i2s_matmul_bit_exact() {
    let mut rep = BitReport::default();
    for pass in passes() {
        for (i, node) in pass.nodes.iter().enumerate() {
            if node.op != "MUL_MAT" {
                continue;
            }
            let Some((info, data)) = node.src0.as_deref().and_then(|w| pass.model.tensor(w)) else { continue };
            if info.ggml_type != GGML_I2_S {
                continue;
            }
            let (kk, m) = (info.ne[0] as usize, info.ne[1] as usize);
            let codes = &data[..kk * m / 4];
            let scale = graph::quant::i2s_scale(data, kk * m).expect("scale");
            let x = pass.input(i, &node.src1).expect("I2_S input").data();
            let mut got = vec![0.0f32; x.len() / kk * m];
            let mut q = vec![0i8; kk];
            for (orow, xrow) in got.chunks_mut(m).zip(x.chunks(kk)) {
                let (s, qsum) = k::quantize_row_i8(xrow, &mut q);
                for (r, y) in orow.iter_mut().enumerate() {
                    let acc = k::vec_dot_i2s_i8(&codes[r * kk / 4..(r + 1) * kk / 4], &q);
                    *y = k::i2s_output(acc, qsum, s, scale);
                }
            }
            compare(&mut rep, pass, node, &got, &node.data());
        }
    }
    rep.finish(
        "i2s_matmul",
        &required_both(&["Qcur-0", "Kcur-0", "Vcur-0", "attn_o_out-0", "ffn_gate-0", "ffn_up-0", "ffn_down-0"]),
    );
}

/// RoPE: every `ROPE` node from its reshaped input, one token at a time at the pass's
/// positions, with the model's base, n_rot and pairing.
#[test]
fn rope_bit_exact() {
    let mut rep = BitReport::default();
    for pass in passes() {
        let m = pass.model;
        for (i, node) in pass.nodes.iter().enumerate() {
            if node.op != "ROPE" {
                continue;
            }
            let input = pass.input(i, &node.src0).expect("rope input");
            let (shape, mut x) = input.load();
            let hd = *shape.last().unwrap();
            let per_token = x.len() / pass.tokens();
            for (row, &p) in x.chunks_mut(per_token).zip(&pass.positions) {
                k::rope_f32(row, per_token / hd, hd, m.n_rot, p, m.rope_base, m.style);
            }
            compare(&mut rep, pass, node, &x, &node.data());
        }
    }
    rep.finish("rope", &required_both(&["Qcur-0", "Kcur-0"]));
}

/// KQ: `kq-L[h][t][j] = vec_dot_f16(K16[h / (H/Hkv)][j], f16(q[h][t]))` over all cache
/// slots of the view (unwritten slots are zeros), both modes.
#[test]
fn kq_bit_exact() {
    let mut rep = BitReport::default();
    for pass in passes() {
        for (i, node) in pass.nodes.iter().enumerate() {
            if node.op != "MUL_MAT" || !node.src0.as_deref().is_some_and(|s| s.starts_with("k-")) {
                continue;
            }
            let (kshape, kc) = pass.input(i, &node.src0).expect("k view").load();
            let q = pass.input(i, &node.src1).expect("q").data();
            let (n_kv, hd) = (kshape[kshape.len() - 2], kshape[kshape.len() - 1]);
            let n_head_kv = kc.len() / (n_kv * hd);
            let t = pass.tokens();
            let n_head = q.len() / (t * hd);
            let k16 = to_f16(&kc); // exact: the cache holds f16 values
            let mut got = vec![0.0f32; n_head * t * n_kv];
            for h in 0..n_head {
                let g = h / (n_head / n_head_kv);
                for tok in 0..t {
                    let q16 = to_f16(&q[(h * t + tok) * hd..(h * t + tok + 1) * hd]);
                    for j in 0..n_kv {
                        let krow = &k16[(g * n_kv + j) * hd..(g * n_kv + j + 1) * hd];
                        got[(h * t + tok) * n_kv + j] = k::vec_dot_f16(krow, &q16);
                    }
                }
            }
            compare(&mut rep, pass, node, &got, &node.data());
        }
    }
    rep.finish("kq", &required_both(&["kq-0"]));
}

/// Softmax: `w = f32(kq·(1/sqrtf(hd))) + mask` (slot j masked when j > the token's
/// position; every slot holds the position of its index), then `softmax_f32` per row.
#[test]
fn softmax_bit_exact() {
    let mut rep = BitReport::default();
    for pass in passes() {
        for (i, node) in pass.nodes.iter().enumerate() {
            if node.op != "SOFT_MAX" {
                continue;
            }
            let kq_node = pass.input(i, &node.src0).expect("kq");
            let k_view = pass.input(kq_node.idx - pass.nodes[0].idx, &kq_node.src0).expect("k view");
            let hd = last_dim(k_view);
            let scale = 1.0f32 / (hd as f32).sqrt();
            let (shape, kq) = kq_node.load();
            let n_kv = *shape.last().unwrap();
            let t = pass.tokens();
            let mut got = vec![0.0f32; kq.len()];
            for (r, (orow, krow)) in got.chunks_mut(n_kv).zip(kq.chunks(n_kv)).enumerate() {
                let pos = pass.positions[r % t];
                for (j, (o, &s)) in orow.iter_mut().zip(krow).enumerate() {
                    let mask = if j as i32 > pos { f32::NEG_INFINITY } else { 0.0 };
                    let scaled: f32 = s * scale;
                    *o = scaled + mask;
                }
                k::softmax_f32(orow);
            }
            compare(&mut rep, pass, node, &got, &node.data());
        }
    }
    rep.finish("softmax", &required_both(&["kq_soft_max_ext-0"]));
}

/// KQV: `kqv-L[h][t][d] = Σ_j P[h][t][j]·V16[g][d][j]`. Several tokens: `vec_dot_f16_f32`
/// with P in f32; one token: P rounded to f16, `vec_dot_f16`.
#[test]
fn kqv_bit_exact() {
    let mut rep = BitReport::default();
    for pass in passes() {
        for (i, node) in pass.nodes.iter().enumerate() {
            if node.op != "MUL_MAT" || !node.src0.as_deref().is_some_and(|s| s.starts_with("v-")) {
                continue;
            }
            let (vshape, vc) = pass.input(i, &node.src0).expect("v view").load();
            let p = pass.input(i, &node.src1).expect("P").data();
            let (hd, n_kv) = (vshape[vshape.len() - 2], vshape[vshape.len() - 1]);
            let n_head_kv = vc.len() / (n_kv * hd);
            let t = pass.tokens();
            let n_head = p.len() / (t * n_kv);
            let v16 = to_f16(&vc);
            let mut got = vec![0.0f32; n_head * t * hd];
            for h in 0..n_head {
                let g = h / (n_head / n_head_kv);
                for tok in 0..t {
                    let prow = &p[(h * t + tok) * n_kv..(h * t + tok + 1) * n_kv];
                    let p16 = to_f16(prow);
                    for d in 0..hd {
                        let vrow = &v16[(g * hd + d) * n_kv..(g * hd + d + 1) * n_kv];
                        got[(h * t + tok) * hd + d] =
                            if t == 1 { k::vec_dot_f16(vrow, &p16) } else { k::vec_dot_f16_f32(vrow, prow) };
                    }
                }
            }
            compare(&mut rep, pass, node, &got, &node.data());
        }
    }
    rep.finish("kqv", &required_both(&["kqv-0"]));
}

/// LM head over the full vocabulary. F16 `token_embd`: several columns → `vec_dot_f16_f32`
/// with f32 `result_norm`; one column → `result_norm` rounded to f16, `vec_dot_f16`.
/// Q8_0 `token_embd` (the extra I2_S models): activation quantizer + Q8_0 block dot in
/// every mode.
#[test]
fn lm_head_bit_exact() {
    let mut rep = BitReport::default();
    for pass in passes() {
        for (i, node) in pass.nodes.iter().enumerate() {
            if node.op != "MUL_MAT" || node.src0.as_deref() != Some("token_embd.weight") {
                continue;
            }
            let (info, data) = pass.model.tensor("token_embd.weight").unwrap();
            let (d, n_vocab) = (info.ne[0] as usize, info.ne[1] as usize);
            let z = pass.input(i, &node.src1).expect("result_norm").data();
            let t = z.len() / d;
            assert_eq!(t, pass.tokens());
            let mut got = vec![0.0f32; t * n_vocab];
            for (orow, zrow) in got.chunks_mut(n_vocab).zip(z.chunks(d)) {
                match info.ggml_type {
                    GGML_F16 => {
                        let w = pass.model.embd_f16();
                        if t == 1 {
                            let z16 = to_f16(zrow);
                            par_fill(orow, |r| k::vec_dot_f16(&w[r * d..(r + 1) * d], &z16));
                        } else {
                            par_fill(orow, |r| k::vec_dot_f16_f32(&w[r * d..(r + 1) * d], zrow));
                        }
                    }
                    GGML_Q8_0 => {
                        let rb = d / k::Q8_0_BLOCK * k::Q8_0_BLOCK_BYTES;
                        let mut a = vec![0u8; rb];
                        k::quantize_row_q8_0_act(zrow, &mut a);
                        par_fill(orow, |r| k::vec_dot_q8_0_q8_0(&data[r * rb..(r + 1) * rb], &a));
                    }
                    other => {
                        println!(
                            "[skipped] {}: {} (token_embd type {other} has no scalar kernel here)",
                            pass.label,
                            node.label()
                        );
                        break;
                    }
                }
            }
            if matches!(info.ggml_type, GGML_F16 | GGML_Q8_0) {
                compare(&mut rep, pass, node, &got, &node.data());
            }
        }
    }
    let mut req = required_both(&["result_output"]);
    req.extend((0..6).map(|p| format!("tiny/seq#{p}: result_output")));
    req.push("b1-spm-i2_s/tensors: result_output".into());
    req.push("llama-tern-i2_s/tensors: result_output".into());
    rep.finish("lm_head", &req);
}

/// The batched dump's logits are the shipped full-logit file (README §4.4), so the LM-head
/// check above is also a check against `p1_capital_logits.npy`.
#[test]
fn batched_logits_file_matches_dump() {
    let pass = &passes()[0];
    let node = pass.nodes.iter().find(|n| n.name == "result_output").unwrap();
    let file = gguf::npy::read_f32(format!("{SHARED}/reference/tiny-i2_s/p1_capital_logits.npy")).unwrap();
    let dump = node.data();
    assert_eq!(file.data.len(), dump.len());
    assert!(file.data.iter().zip(&dump).all(|(a, b)| a.to_bits() == b.to_bits()));
}
