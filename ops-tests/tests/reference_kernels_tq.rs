//! Bit-exact checks of the TQ2_0 / TQ1_0 and Q4_0 scalar kernels (`backend_scalar::kernels::
//! {quantize_row_q8_k, vec_dot_tq2_0_q8_k, vec_dot_tq1_0_q8_k, vec_dot_q4_0_q8_0}`) against
//! bitnet.cpp's dumped graph nodes of `b158-spm-tq2_0` (shared/reference/README-more-models.md
//! §4.2, §4.3, §5.4).
//!
//! The batched pass over `p1_capital` (6 tokens, `reference/b158-spm-tq2_0/tensors/`) is
//! recomputed node by node from each node's dumped input (`src1`) and the weights:
//!
//! - all 14 ternary products of layers 0 and 1 (`Qcur`, `Kcur`, `Vcur`, `attn_o_out`,
//!   `ffn_gate`, `ffn_up`, `ffn_down`) with the TQ2_0 weights of `b158-spm-tq2_0.gguf` and,
//!   separately, with the TQ1_0 weights of `b158-spm-tq1_0.gguf` (same weights, so the
//!   reference's outputs are bit-identical for both files);
//! - the Q4_0 LM head `result_output` (6 × 32000 logits, stored as `../p1_capital_logits.npy`)
//!   from `result_norm`, with the `token_embd` of both files.
//!
//! On a mismatch the report gives the number of differing values, the max |Δ| and the first
//! differing index. Run with
//! `cargo test --release -p ops-tests --test reference_kernels_tq -- --nocapture`
//! to see one line per checked node.

use std::path::PathBuf;
use std::sync::OnceLock;

use backend_scalar::kernels as k;
use gguf::GgufFile;
use ops_tests::bitexact::{par_fill, BitReport};
use ops_tests::dump::{read_index, DumpNode as Node};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

/// GGUF type ids (../shared/docs/format.md §2.1).
const GGML_Q4_0: u32 = 2;
const GGML_TQ1_0: u32 = 34;
const GGML_TQ2_0: u32 = 35;

const TQ2: &str = "b158-spm-tq2_0";
const TQ1: &str = "b158-spm-tq1_0";

/// The seven ternary products per layer, by node name prefix.
const PRODUCTS: [&str; 7] = ["Qcur", "Kcur", "Vcur", "attn_o_out", "ffn_gate", "ffn_up", "ffn_down"];

// ---------------------------------------------------------------------------------------
// Reference data
// ---------------------------------------------------------------------------------------

fn open_model(name: &str) -> GgufFile {
    let path = format!("{SHARED}/models/{name}.gguf");
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The two TQ model files, opened once: `(b158-spm-tq2_0, b158-spm-tq1_0)`.
fn models() -> &'static (GgufFile, GgufFile) {
    static MODELS: OnceLock<(GgufFile, GgufFile)> = OnceLock::new();
    MODELS.get_or_init(|| (open_model(TQ2), open_model(TQ1)))
}

/// A tensor's info and bytes.
fn tensor<'a>(file: &'a GgufFile, name: &str) -> (&'a gguf::TensorInfo, &'a [u8]) {
    let info = file.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
    (info, file.tensor_data(info))
}

/// The nodes of `reference/b158-spm-tq2_0/tensors/index.json`, in execution order.
fn nodes() -> &'static [Node] {
    static NODES: OnceLock<Vec<Node>> = OnceLock::new();
    NODES.get_or_init(|| {
        let dir = PathBuf::from(format!("{SHARED}/reference/{TQ2}/tensors"));
        read_index(&dir)
    })
}

/// The latest node before position `before` called `name`.
fn src(before: usize, name: &str) -> Option<&'static Node> {
    nodes().iter().take(before).rev().find(|n| n.name == name)
}

// ---------------------------------------------------------------------------------------
// Comparison and reporting
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Products
// ---------------------------------------------------------------------------------------

/// A ternary weight: its bytes, K (ne0), M (ne1) and bytes per 256-block.
struct TqWeight<'a> {
    data: &'a [u8],
    k: usize,
    m: usize,
    block_bytes: usize,
    ggml_type: u32,
}

fn tq_weight<'a>(file: &'a GgufFile, name: &str, want_type: u32) -> TqWeight<'a> {
    let (info, data) = tensor(file, name);
    assert_eq!(info.ggml_type, want_type, "{name}: type");
    let block_bytes = match want_type {
        GGML_TQ2_0 => k::TQ2_0_BLOCK_BYTES,
        GGML_TQ1_0 => k::TQ1_0_BLOCK_BYTES,
        t => panic!("{name}: type {t} is not ternary"),
    };
    let (kk, m) = (info.ne[0] as usize, info.ne[1] as usize);
    assert_eq!(kk % k::Q8K_BLOCK, 0, "{name}: K = {kk} is not a multiple of 256");
    assert_eq!(data.len(), kk / k::Q8K_BLOCK * block_bytes * m, "{name}: size");
    TqWeight { data, k: kk, m, block_bytes, ggml_type: want_type }
}

/// `y[t][r] = W[r] · x[t]` with Q8_K activations, for every token row of `x`.
fn tq_matmul(w: &TqWeight, x: &[f32]) -> Vec<f32> {
    assert_eq!(x.len() % w.k, 0);
    let rb = w.k / k::Q8K_BLOCK * w.block_bytes;
    let mut got = vec![0.0f32; x.len() / w.k * w.m];
    let mut a = vec![0u8; w.k / k::Q8K_BLOCK * k::Q8K_BLOCK_BYTES];
    for (orow, xrow) in got.chunks_mut(w.m).zip(x.chunks(w.k)) {
        k::quantize_row_q8_k(xrow, &mut a);
        for (r, y) in orow.iter_mut().enumerate() {
            let row = &w.data[r * rb..(r + 1) * rb];
            *y = match w.ggml_type {
                GGML_TQ2_0 => k::vec_dot_tq2_0_q8_k(row, &a),
                _ => k::vec_dot_tq1_0_q8_k(row, &a),
            };
        }
    }
    got
}

/// The same product written independently from the decoded weights (README §4.2), with
/// `fused` choosing `fma` instead of the reference's separate multiply and add.
fn tq_matmul_formula(file: &GgufFile, name: &str, x: &[f32], fused: bool) -> Vec<f32> {
    let (info, data) = tensor(file, name);
    let (kk, m) = (info.ne[0] as usize, info.ne[1] as usize);
    let (codes, scales) = tq_codes(info.ggml_type, data, kk * m);
    let mut got = vec![0.0f32; x.len() / kk * m];
    let mut a = vec![0u8; kk / 256 * k::Q8K_BLOCK_BYTES];
    for (orow, xrow) in got.chunks_mut(m).zip(x.chunks(kk)) {
        k::quantize_row_q8_k(xrow, &mut a);
        for (r, y) in orow.iter_mut().enumerate() {
            let mut acc = [0.0f32; 8];
            for b in 0..kk / 256 {
                let ab = &a[b * 260..(b + 1) * 260];
                let da = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
                let d: f32 = da * scales[(r * kk) / 256 + b];
                for (l, lane) in acc.iter_mut().enumerate() {
                    let mut s = 0i32;
                    for i in 0..256 {
                        let q = i32::from(ab[4 + i] as i8);
                        if (i % 32) / 4 == l {
                            s += i32::from(codes[r * kk + 256 * b + i]) * q;
                        }
                        if i / 32 == l {
                            s -= q;
                        }
                    }
                    *lane = if fused { (s as f32).mul_add(d, *lane) } else { *lane + s as f32 * d };
                }
            }
            *y = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        }
    }
    got
}

/// Codes (0/1/2) of every element and the f32 value of every block scale of a TQ tensor.
fn tq_codes(ggml_type: u32, data: &[u8], n: usize) -> (Vec<u8>, Vec<f32>) {
    let (bb, d_at) = match ggml_type {
        GGML_TQ2_0 => (66, 64),
        GGML_TQ1_0 => (54, 52),
        t => panic!("type {t}"),
    };
    let mut codes = Vec::with_capacity(n);
    let mut scales = Vec::with_capacity(n / 256);
    for blk in data.chunks_exact(bb).take(n / 256) {
        for i in 0..256 {
            codes.push(match ggml_type {
                GGML_TQ2_0 => graph::quant::tq2_code(&blk[..64], i),
                _ => graph::quant::tq1_code(blk, i),
            });
        }
        scales.push(graph::quant::f16_at(blk, d_at));
    }
    (codes, scales)
}

/// The Q4_0 LM head: `logits[t][v] = token_embd[v] · z[t]`, Q8_0 activations.
fn q4_0_head(file: &GgufFile, z: &[f32]) -> Vec<f32> {
    let (info, data) = tensor(file, "token_embd.weight");
    assert_eq!(info.ggml_type, GGML_Q4_0, "token_embd type");
    let (d, n_vocab) = (info.ne[0] as usize, info.ne[1] as usize);
    let rb = d / k::Q4_0_BLOCK * k::Q4_0_BLOCK_BYTES;
    assert_eq!(data.len(), rb * n_vocab);
    let mut got = vec![0.0f32; z.len() / d * n_vocab];
    let mut a = vec![0u8; d / k::Q8_0_BLOCK * k::Q8_0_BLOCK_BYTES];
    for (orow, zrow) in got.chunks_mut(n_vocab).zip(z.chunks(d)) {
        k::quantize_row_q8_0_act(zrow, &mut a);
        par_fill(orow, |r| k::vec_dot_q4_0_q8_0(&data[r * rb..(r + 1) * rb], &a));
    }
    got
}

/// The LM head written independently from the decoded Q4_0 nibbles (README §4.3), exact
/// integer lane sums, `fused` choosing the reference's `fma` or a separate multiply and add.
fn q4_0_head_formula(file: &GgufFile, z: &[f32], fused: bool) -> Vec<f32> {
    let (info, data) = tensor(file, "token_embd.weight");
    let (d, n_vocab) = (info.ne[0] as usize, info.ne[1] as usize);
    let nb = d / 32;
    let mut got = vec![0.0f32; z.len() / d * n_vocab];
    let mut a = vec![0u8; nb * 34];
    for (orow, zrow) in got.chunks_mut(n_vocab).zip(z.chunks(d)) {
        k::quantize_row_q8_0_act(zrow, &mut a);
        par_fill(orow, |r| {
            let mut acc = [0.0f32; 8];
            for b in 0..nb {
                let wb = &data[(r * nb + b) * 18..(r * nb + b + 1) * 18];
                let ab = &a[b * 34..(b + 1) * 34];
                let dd: f32 = graph::quant::f16_at(wb, 0) * graph::quant::f16_at(ab, 0);
                for (l, lane) in acc.iter_mut().enumerate() {
                    let s: i32 = (4 * l..4 * l + 4)
                        .map(|i| {
                            let nib = if i < 16 { wb[2 + i] & 15 } else { wb[2 + i - 16] >> 4 };
                            (i32::from(nib) - 8) * i32::from(ab[2 + i] as i8)
                        })
                        .sum();
                    *lane = if fused { dd.mul_add(s as f32, *lane) } else { *lane + dd * s as f32 };
                }
            }
            ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
        });
    }
    got
}

/// The ternary `MUL_MAT` nodes: `(node, its position, weight name)`.
fn tq_nodes() -> Vec<(usize, &'static Node, String)> {
    let (tq2, _) = models();
    nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op == "MUL_MAT")
        .filter_map(|(i, n)| {
            let w = n.src0.clone()?;
            let info = tq2.tensor(&w)?;
            (info.ggml_type == GGML_TQ2_0).then_some((i, n, w))
        })
        .collect()
}

fn required_products() -> Vec<String> {
    let mut v = Vec::new();
    for file in [TQ2, TQ1] {
        for l in 0..2 {
            for p in PRODUCTS {
                v.push(format!("{file}: {p}-{l}"));
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// All ternary products of both layers, with the TQ2_0 and the TQ1_0 weights.
#[test]
fn tq_matmul_bit_exact() {
    let (tq2, tq1) = models();
    let mut rep = BitReport::default();
    let list = tq_nodes();
    assert_eq!(list.len(), 14, "expected 7 ternary products per layer");
    for (i, node, w) in list {
        let input = src(i, node.src1.as_deref().expect("src1")).unwrap_or_else(|| panic!("input of {}", node.label()));
        let x = input.data();
        let want = node.data();
        for (file, label, ty) in [(tq2, TQ2, GGML_TQ2_0), (tq1, TQ1, GGML_TQ1_0)] {
            let weight = tq_weight(file, &w, ty);
            let got = tq_matmul(&weight, &x);
            println!("  {label}: {} [{}×{}] × {} ({} tokens)", w, weight.m, weight.k, input.name, x.len() / weight.k);
            let key = format!("{label}: {}", node.name);
            rep.compare(key.clone(), &key, &got, &want);
        }
    }
    rep.finish("tq_matmul", &required_products());
}

/// The two files encode the same ternary weights and scales (README §2.2, §5.4): decoded
/// codes and block scales agree for all 14 tensors.
#[test]
fn tq1_and_tq2_weights_identical() {
    let (tq2, tq1) = models();
    let mut n = 0;
    for t in tq2.tensors().iter().filter(|t| t.ggml_type == GGML_TQ2_0) {
        let count = t.n_elements() as usize;
        let (c2, s2) = tq_codes(GGML_TQ2_0, tq2.tensor_data(t), count);
        let (i1, d1) = tensor(tq1, &t.name);
        assert_eq!(i1.ggml_type, GGML_TQ1_0, "{}", t.name);
        assert_eq!(i1.ne, t.ne, "{}", t.name);
        let (c1, s1) = tq_codes(GGML_TQ1_0, d1, count);
        assert!(c1 == c2, "{}: codes differ", t.name);
        assert!(s1.iter().zip(&s2).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: scales differ", t.name);
        assert!(c2.iter().all(|&c| c <= 2), "{}: code 3", t.name);
        n += 1;
    }
    assert_eq!(n, 14);
    let (_, e2) = tensor(tq2, "token_embd.weight");
    let (_, e1) = tensor(tq1, "token_embd.weight");
    assert!(e1 == e2, "token_embd differs between the files");
}

/// The kernels agree bit for bit with an independent rendering of README §4.2 on the dumped
/// inputs, and the absence of FMA matters: with `fma` some `ffn_down` outputs (K = 512) change.
#[test]
fn tq_formula_cross_check_and_fma_sensitivity() {
    let (tq2, tq1) = models();
    let mut fma_diffs = 0usize;
    for (i, node, w) in tq_nodes() {
        let x = src(i, node.src1.as_deref().unwrap()).unwrap().data();
        let want = node.data();
        let plain = tq_matmul_formula(tq2, &w, &x, false);
        let plain1 = tq_matmul_formula(tq1, &w, &x, false);
        assert!(plain.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: formula (TQ2_0)", node.name);
        assert!(plain1.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: formula (TQ1_0)", node.name);
        let fused = tq_matmul_formula(tq2, &w, &x, true);
        let d = fused.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        println!("  {}: with fma {d}/{} values differ", node.name, want.len());
        if node.name.starts_with("ffn_down") {
            fma_diffs += d;
        } else {
            assert_eq!(d, 0, "{}: K = 256 must be exact either way", node.name);
        }
    }
    assert!(fma_diffs > 0, "an fma variant should differ on ffn_down (README §4.2)");
}

/// The Q4_0 LM head: all 6 × 32000 logits from `result_norm`, with the `token_embd` of both
/// files; the node is stored as `../p1_capital_logits.npy`.
#[test]
fn q4_0_lm_head_bit_exact() {
    let (tq2, tq1) = models();
    let (i, node) = nodes().iter().enumerate().find(|(_, n)| n.name == "result_output").expect("result_output");
    assert_eq!(node.op, "MUL_MAT");
    assert_eq!(node.src0.as_deref(), Some("token_embd.weight"));
    assert!(node.file.ends_with("../p1_capital_logits.npy"), "{}", node.file.display());
    let z = src(i, node.src1.as_deref().expect("src1")).expect("result_norm");
    assert_eq!(z.name, "result_norm");
    let (shape, want) = node.load();
    assert_eq!(shape, [6, 32000]);
    let zd = z.data();
    let mut rep = BitReport::default();
    for (file, label) in [(tq2, TQ2), (tq1, TQ1)] {
        let got = q4_0_head(file, &zd);
        let key = format!("{label}: result_output");
        rep.compare(key.clone(), &key, &got, &want);
    }
    rep.finish("q4_0_lm_head", &[format!("{TQ2}: result_output"), format!("{TQ1}: result_output")]);
}

/// The LM head kernel agrees with an independent rendering of README §4.3, and the FMA
/// matters there: without it some logits change (README: by up to 1.9e-6).
#[test]
fn q4_0_formula_cross_check_and_fma_sensitivity() {
    let (tq2, _) = models();
    let (i, node) = nodes().iter().enumerate().find(|(_, n)| n.name == "result_output").unwrap();
    let z = src(i, node.src1.as_deref().unwrap()).unwrap().data();
    let want = node.data();
    let fused = q4_0_head_formula(tq2, &z, true);
    assert!(fused.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "formula with fma");
    let plain = q4_0_head_formula(tq2, &z, false);
    let (mut n, mut max) = (0usize, 0.0f64);
    for (a, b) in plain.iter().zip(&want) {
        if a.to_bits() != b.to_bits() {
            n += 1;
            max = max.max((f64::from(*a) - f64::from(*b)).abs());
        }
    }
    println!("  result_output without fma: {n}/{} values differ, max |Δ| = {max:.3e}", want.len());
    assert!(n > 0, "a variant without fma should differ (README §4.3)");
}
