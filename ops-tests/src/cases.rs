//! One generator of test cases per op: random shapes (awkward sizes included) and values,
//! evaluated on any backend through `Backend::eval` with exactly the executor's conventions.

use gguf::quantize::pack_i2s;
use graph::backend::{q8tok_row_bytes, Data, DataMut, KvLayer, TensorMut, TensorRef};
use graph::{Backend, DType, Op, OpKind, RopeStyle};
use half::f16;

pub use graph::rng::Rng;

/// Activation-like values, sometimes extreme (huge, tiny, zero, exact .5 multiples).
pub fn activations(rng: &mut Rng, n: usize) -> Vec<f32> {
    let style = rng.below(6);
    (0..n)
        .map(|i| match style {
            0 => rng.f32(-1.0, 1.0),
            1 => rng.f32(-1.0, 1.0) * 1e4,
            2 => rng.f32(-1.0, 1.0) * 1e-6,
            3 => (rng.below(9) as f32 - 4.0) * 0.5,
            4 => {
                if i % 7 == 0 {
                    0.0
                } else {
                    rng.f32(-3.0, 3.0)
                }
            }
            _ => [0.0, 0.0, 0.0][i % 3],
        })
        .collect()
}

/// Sequence ids for `t` rows: one sequence, or several in contiguous runs (so that some
/// rows are their sequence's only row, others share it).
pub fn seq_ids(rng: &mut Rng, t: usize) -> Vec<i32> {
    if rng.below(2) == 0 {
        return vec![0; t];
    }
    let mut ids = Vec::with_capacity(t);
    let mut s = 0;
    while ids.len() < t {
        let run = (1 + rng.below(3)).min(t - ids.len());
        ids.extend(std::iter::repeat_n(s, run));
        s += 1;
    }
    ids
}

/// An owned tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// dtype.
    pub dtype: DType,
    /// dims, outermost first.
    pub dims: Vec<usize>,
    /// f32 data (F32), or empty.
    pub f: Vec<f32>,
    /// i32 data (I32), or empty.
    pub i: Vec<i32>,
    /// bytes (everything else), or empty.
    pub b: Vec<u8>,
}

impl Tensor {
    /// An f32 tensor.
    pub fn f32(dims: &[usize], f: Vec<f32>) -> Tensor {
        Tensor { dtype: DType::F32, dims: dims.to_vec(), f, i: vec![], b: vec![] }
    }
    /// An i32 tensor.
    pub fn i32(dims: &[usize], i: Vec<i32>) -> Tensor {
        Tensor { dtype: DType::I32, dims: dims.to_vec(), f: vec![], i, b: vec![] }
    }
    /// A byte tensor of `dtype`.
    pub fn bytes(dtype: DType, dims: &[usize], b: Vec<u8>) -> Tensor {
        Tensor { dtype, dims: dims.to_vec(), f: vec![], i: vec![], b }
    }
    /// Borrowed view.
    pub fn view(&self) -> TensorRef<'_> {
        let data = match self.dtype {
            DType::F32 => Data::F32(&self.f),
            DType::I32 => Data::I32(&self.i),
            _ => Data::Bytes(&self.b),
        };
        TensorRef { dtype: self.dtype, dims: &self.dims, data }
    }
}

/// One evaluation of one op.
#[derive(Clone, Debug)]
pub struct OpCase {
    /// Case id, e.g. `MatMulI2S(m=12,k=2560,t=3,extreme)`.
    pub id: String,
    /// The op.
    pub op: Op,
    /// Inputs in the op's order.
    pub inputs: Vec<Tensor>,
    /// Output dtype and dims.
    pub out: (DType, Vec<usize>),
    /// KV cache (k, v, stride, slots) for attention.
    pub kv: Option<(Vec<f16>, Vec<f16>, usize, usize)>,
}

/// What a backend produced for a case: the output and, for attention, the KV cache after.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseResult {
    /// Output tensor.
    pub out: Tensor,
    /// KV cache after the op.
    pub kv: Option<(Vec<f16>, Vec<f16>)>,
}

impl OpCase {
    /// Runs the case on `backend`'s planned kernel, with guard sentinels around the output
    /// to catch stray writes. `None` if the backend does not plan it.
    pub fn run(&self, backend: &dyn Backend) -> Option<Result<CaseResult, String>> {
        let facts: Vec<graph::TensorFact> =
            self.inputs.iter().map(|t| graph::TensorFact::new(t.dtype, graph::Shape::fixed(&t.dims))).collect();
        let frefs: Vec<&graph::TensorFact> = facts.iter().collect();
        let kernel = backend.plan(&self.op, &frefs)?;
        let inputs: Vec<TensorRef<'_>> = self.inputs.iter().map(Tensor::view).collect();
        let (dtype, dims) = &self.out;
        let bytes = dtype.tensor_bytes(dims).expect("case output size");
        let n = if matches!(dtype, DType::F32 | DType::I32) { bytes / 4 } else { bytes };
        const GUARD: usize = 17;
        let mut kv = self.kv.clone();
        // The output between guard words: 4-byte words for f32/i32 outputs, bytes otherwise.
        let word = if matches!(dtype, DType::F32 | DType::I32) { 4 } else { 1 };
        // u32 storage: 4-byte aligned for the f32/i32 views.
        let mut words = vec![0xA5A5_A5A5u32; ((n + 2 * GUARD) * word).div_ceil(4)];
        let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        let r = {
            let out_bytes = &mut buf[GUARD * word..(GUARD + n) * word];
            let data = match dtype {
                DType::F32 => DataMut::F32(bytemuck::cast_slice_mut(out_bytes)),
                DType::I32 => DataMut::I32(bytemuck::cast_slice_mut(out_bytes)),
                _ => DataMut::Bytes(out_bytes),
            };
            let mut out = TensorMut { dtype: *dtype, dims, data };
            run(&kernel, &inputs, &mut out, kv.as_mut())
        };
        let guards_ok = buf[..GUARD * word].iter().chain(&buf[(GUARD + n) * word..]).all(|&x| x == 0xA5);
        let res = r.and_then(|_| if guards_ok { Ok(()) } else { Err("wrote outside the output".to_string()) }).map(|_| {
            let out = &buf[GUARD * word..(GUARD + n) * word];
            match dtype {
                DType::F32 => {
                    Tensor::f32(dims, out.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                }
                DType::I32 => {
                    Tensor::i32(dims, out.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                }
                _ => Tensor::bytes(*dtype, dims, out.to_vec()),
            }
        });
        Some(res.map(|out| CaseResult { out, kv: kv.map(|(k, v, _, _)| (k, v)) }))
    }
}

fn run(
    kernel: &graph::Kernel,
    inputs: &[TensorRef<'_>],
    out: &mut TensorMut<'_>,
    kv: Option<&mut (Vec<f16>, Vec<f16>, usize, usize)>,
) -> Result<(), String> {
    let r = match kv {
        Some((k, v, stride, slots)) => kernel.run(inputs, out, Some(&mut KvLayer { k, v, n_ctx: *stride, n_slots: *slots })),
        None => kernel.run(inputs, out, None),
    };
    r.map_err(|e| e.to_string())
}

/// Sizes that find tail bugs.
pub const AWKWARD: &[usize] = &[1, 7, 8, 31, 32, 33, 63, 64, 65, 255, 256, 257];
/// I2_S widths (multiples of 128: one group, a few, the 2B-4T widths 2560 and 6912).
pub const I2S_K: &[usize] = &[128, 256, 384, 2560, 6912];
/// Output rows of matmuls.
pub const ROWS: &[usize] = &[1, 4, 7, 12, 33];
/// Tokens per step.
pub const TOKENS: &[usize] = &[1, 2, 3, 5, 8, 17];

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect()
}

fn q8tok(rng: &mut Rng, t: usize, k: usize, extreme: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(t * q8tok_row_bytes(k));
    for _ in 0..t {
        let q: Vec<i8> = (0..k)
            .map(|_| if extreme { rng.pick(&[127i8, 127, -128, 126]) } else { (rng.below(256) as i32 - 128) as i8 })
            .collect();
        let sum: i32 = q.iter().map(|&x| i32::from(x)).sum();
        out.extend(q.iter().map(|&x| x as u8));
        out.extend(rng.f32(0.5, 300.0).to_le_bytes());
        out.extend(sum.to_le_bytes());
    }
    out
}

fn q8_0_rows(rng: &mut Rng, m: usize, k: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..m * k / 32 {
        out.extend(f16::from_f32(rng.f32(-0.05, 0.05)).to_le_bytes());
        out.extend((0..32).map(|_| (rng.below(255) as i32 - 127) as i8 as u8));
    }
    out
}

fn q4_0_rows(rng: &mut Rng, m: usize, k: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..m * k / 32 {
        out.extend(f16::from_f32(rng.f32(-0.05, 0.05)).to_le_bytes());
        out.extend((0..16).map(|_| rng.next_u64() as u8));
    }
    out
}

/// `m·k/256` Q6_K blocks: random 6-bit values and sub-block scales (any i8, −128 included),
/// a finite f16 `d` (sometimes 0).
pub fn q6k_rows(rng: &mut Rng, m: usize, k: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..m * k / 256 {
        out.extend((0..208).map(|_| rng.next_u64() as u8));
        let d = if rng.below(16) == 0 { 0.0 } else { rng.f32(-0.01, 0.01) };
        out.extend(f16::from_f32(d).to_le_bytes());
    }
    out
}

/// Generates one case of an op of `kind` from `rng`; `None` for the kinds that have no
/// kernel (graph inputs, weights, views). The match lists every kind, so an op added to the
/// graph without a case here does not compile.
pub fn case(kind: OpKind, rng: &mut Rng) -> Option<OpCase> {
    let name = kind.name();
    Some(match kind {
        OpKind::InputTokens
        | OpKind::InputPositions
        | OpKind::InputSeqs
        | OpKind::InputOutputRows
        | OpKind::Weight
        | OpKind::Reshape => return None,
        OpKind::Embedding => {
            let dtype = rng.pick(&[DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q6K]);
            let d = match dtype {
                DType::Q8_0 | DType::Q4_0 => 32 * (1 + rng.below(8)),
                DType::Q6K => 256 * (1 + rng.below(3)),
                _ => rng.pick(AWKWARD),
            };
            let v = 1 + rng.below(50);
            let t = rng.pick(TOKENS);
            let row = dtype.nbytes(d, 1).unwrap();
            let mut table: Vec<u8> = (0..v * row).map(|_| rng.next_u64() as u8).collect();
            if dtype == DType::F32 {
                table = (0..v * d).flat_map(|_| rng.f32(-2.0, 2.0).to_le_bytes()).collect();
            }
            if dtype == DType::BF16 {
                table = (0..v * d).flat_map(|_| half::bf16::from_f32(rng.f32(-2.0, 2.0)).to_le_bytes()).collect();
            }
            if dtype == DType::Q6K {
                table = q6k_rows(rng, v, d);
            }
            if matches!(dtype, DType::F16 | DType::Q8_0 | DType::Q4_0) {
                // keep scales finite: rewrite f16 values / block scales with random finite ones
                let (step, off) = match dtype {
                    DType::F16 => (2, 0),
                    DType::Q8_0 => (34, 0),
                    _ => (18, 0),
                };
                for o in (off..table.len()).step_by(step) {
                    table[o..o + 2].copy_from_slice(&f16::from_f32(rng.f32(-1.0, 1.0)).to_le_bytes());
                }
            }
            let ids: Vec<i32> = (0..t).map(|_| rng.below(v) as i32).collect();
            let table = if dtype == DType::F32 {
                Tensor::f32(&[v, d], table.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            } else {
                Tensor::bytes(dtype, &[v, d], table)
            };
            OpCase {
                id: format!("Embedding(table={dtype},v={v},d={d},t={t})"),
                op: Op::Embedding,
                inputs: vec![table, Tensor::i32(&[t], ids)],
                out: (DType::F32, vec![t, d]),
                kv: None,
            }
        }
        OpKind::RmsNorm => {
            let (t, d) = (rng.pick(TOKENS), rng.pick(AWKWARD));
            let x = activations(rng, t * d);
            let w: Vec<f32> = (0..d).map(|_| rng.f32(0.5, 1.5)).collect();
            let eps = rng.pick(&[1e-5f32, 1e-6]);
            OpCase {
                id: format!("RmsNorm(shape=[{t},{d}],eps={eps:e})"),
                op: Op::RmsNorm { eps },
                inputs: vec![Tensor::f32(&[t, d], x), Tensor::f32(&[d], w)],
                out: (DType::F32, vec![t, d]),
                kv: None,
            }
        }
        OpKind::QuantizeI8 => {
            let (t, k) = (rng.pick(TOKENS), rng.pick(&[1, 7, 31, 32, 33, 128, 257, 2560]));
            let x = activations(rng, t * k);
            OpCase {
                id: format!("QuantizeI8(shape=[{t},{k}])"),
                op: Op::QuantizeI8,
                inputs: vec![Tensor::f32(&[t, k], x)],
                out: (DType::Q8Tok, vec![t, k]),
                kv: None,
            }
        }
        OpKind::MatMulI2S => {
            let (m, k, t) = (rng.pick(ROWS), rng.pick(I2S_K), rng.pick(TOKENS));
            let m = if k >= 2560 { m.min(12) } else { m };
            let extreme = rng.below(3) == 0;
            let codes: Vec<u8> = (0..m * k).map(|_| if extreme { 2 } else { rng.below(3) as u8 }).collect();
            let w = pack_i2s(&codes, rng.f32(0.01, 2.0), &[0x5A; 28]);
            let xq = q8tok(rng, t, k, extreme);
            OpCase {
                id: format!("MatMulI2S(m={m},k={k},t={t}{})", if extreme { ",extreme" } else { "" }),
                op: Op::MatMulI2S,
                inputs: vec![Tensor::bytes(DType::I2S, &[m, k], w), Tensor::bytes(DType::Q8Tok, &[t, k], xq)],
                out: (DType::F32, vec![t, m]),
                kv: None,
            }
        }
        OpKind::MatMulF16 => {
            let (m, k, t) = (rng.pick(ROWS), rng.pick(&[32, 64, 96, 256, 2560]), rng.pick(TOKENS));
            let w: Vec<f32> = (0..m * k).map(|_| rng.f32(-0.1, 0.1)).collect();
            let x = activations(rng, t * k);
            let seqs = seq_ids(rng, t);
            OpCase {
                id: format!("MatMulF16(m={m},k={k},t={t},seqs={seqs:?})"),
                op: Op::MatMulF16,
                inputs: vec![Tensor::bytes(DType::F16, &[m, k], f16_bytes(&w)), Tensor::f32(&[t, k], x), Tensor::i32(&[t], seqs)],
                out: (DType::F32, vec![t, m]),
                kv: None,
            }
        }
        OpKind::MatMulQ8_0 => {
            let (m, k, t) = (rng.pick(ROWS), 32 * rng.pick(&[1, 3, 8, 12, 80]), rng.pick(TOKENS));
            let x = activations(rng, t * k);
            let (wty, w) =
                if rng.below(2) == 0 { (DType::Q8_0, q8_0_rows(rng, m, k)) } else { (DType::Q4_0, q4_0_rows(rng, m, k)) };
            OpCase {
                id: format!("MatMulQ8_0(w={wty},m={m},k={k},t={t})"),
                op: Op::MatMulQ8_0,
                inputs: vec![Tensor::bytes(wty, &[m, k], w), Tensor::f32(&[t, k], x)],
                out: (DType::F32, vec![t, m]),
                kv: None,
            }
        }
        OpKind::QuantizeQ8K => {
            let (t, k) = (rng.pick(TOKENS), 256 * rng.pick(&[1, 2, 10]));
            let x = activations(rng, t * k);
            OpCase {
                id: format!("QuantizeQ8K(shape=[{t},{k}])"),
                op: Op::QuantizeQ8K,
                inputs: vec![Tensor::f32(&[t, k], x)],
                out: (DType::Q8K, vec![t, k]),
                kv: None,
            }
        }
        OpKind::MatMulTQ => {
            let (m, k, t) = (rng.pick(ROWS), 256 * rng.pick(&[1, 2, 3, 10, 27]), rng.pick(TOKENS));
            let wty = rng.pick(&[DType::TQ2_0, DType::TQ1_0, DType::Q6K]);
            let mut w = Vec::new();
            if wty == DType::Q6K {
                w = q6k_rows(rng, m, k);
            }
            for _ in 0..if wty == DType::Q6K { 0 } else { m * k / 256 } {
                let codes: Vec<u8> = (0..256).map(|_| rng.below(3) as u8).collect();
                let d = f16::from_f32(rng.f32(0.001, 0.1));
                if wty == DType::TQ2_0 {
                    w.extend(gguf::quantize::pack_tq2_0(&codes, d));
                } else {
                    w.extend(gguf::quantize::pack_tq1_0(&codes, d));
                }
            }
            let mut xq = Vec::new();
            for _ in 0..t * k / 256 {
                let extreme = rng.below(4) == 0;
                xq.extend(rng.f32(1e-4, 0.1).to_le_bytes());
                xq.extend((0..256).map(|_| if extreme { 127u8 } else { (rng.below(255) as i32 - 127) as i8 as u8 }));
            }
            OpCase {
                id: format!("MatMulTQ(w={wty},m={m},k={k},t={t})"),
                op: Op::MatMulTQ,
                inputs: vec![Tensor::bytes(wty, &[m, k], w), Tensor::bytes(DType::Q8K, &[t, k], xq)],
                out: (DType::F32, vec![t, m]),
                kv: None,
            }
        }
        OpKind::Rope => {
            let (t, h, hd) = (rng.pick(TOKENS), rng.pick(&[1, 2, 5]), rng.pick(&[2, 8, 64, 100, 128]));
            let n_rot = if rng.below(4) == 0 && hd > 2 { hd / 2 / 2 * 2 } else { hd };
            let style = rng.pick(&[RopeStyle::Neox, RopeStyle::Norm]);
            let base = rng.pick(&[10000.0f32, 500000.0]);
            let pos0 = rng.below(3000) as i32;
            let x = activations(rng, t * h * hd);
            OpCase {
                id: format!("Rope({style:?},t={t},h={h},hd={hd},n_rot={n_rot},base={base},pos0={pos0})"),
                op: Op::Rope { n_rot, freq_base: base, style },
                inputs: vec![Tensor::f32(&[t, h, hd], x), Tensor::i32(&[t], (0..t as i32).map(|i| pos0 + i).collect())],
                out: (DType::F32, vec![t, h, hd]),
                kv: None,
            }
        }
        OpKind::Attention => {
            // Tokens of one or several sequences, each sequence in its own cache slot with
            // its own history (`pos0` earlier positions) and its tokens at consecutive positions.
            let (hkv, group, hd) = (rng.pick(&[1, 2, 5]), rng.pick(&[1, 2, 4]), rng.pick(&[32, 64, 100, 128]));
            let h = hkv * group;
            let t = rng.pick(TOKENS);
            let seqs = seq_ids(rng, t);
            let n_slots = 1 + *seqs.iter().max().unwrap_or(&0) as usize + rng.below(2);
            let starts: Vec<usize> = (0..n_slots).map(|_| rng.pick(&[0usize, 1, 5, 31, 32, 40, 100])).collect();
            let mut pos = Vec::with_capacity(t);
            let mut next = starts.clone();
            for &s in &seqs {
                pos.push(next[s as usize] as i32);
                next[s as usize] += 1;
            }
            let stride = next.iter().max().unwrap().div_ceil(32) * 32 + 32 * rng.below(2);
            let slot_len = hkv * stride * hd;
            let mut k = vec![f16::ZERO; n_slots * slot_len];
            let mut v = vec![f16::ZERO; n_slots * slot_len];
            for (slot, &p0) in starts.iter().enumerate() {
                for g in 0..hkv {
                    for p in 0..p0 {
                        for d in 0..hd {
                            k[slot * slot_len + (g * stride + p) * hd + d] = f16::from_f32(rng.f32(-1.0, 1.0));
                            v[slot * slot_len + (g * hd + d) * stride + p] = f16::from_f32(rng.f32(-1.0, 1.0));
                        }
                    }
                }
            }
            let q = (0..t * h * hd).map(|_| rng.f32(-2.0, 2.0)).collect();
            let kn = (0..t * hkv * hd).map(|_| rng.f32(-2.0, 2.0)).collect();
            let vn = (0..t * hkv * hd).map(|_| rng.f32(-2.0, 2.0)).collect();
            OpCase {
                id: format!("Attention(heads={h}/{hkv},hd={hd},t={t},seqs={seqs:?},starts={starts:?},stride={stride})"),
                op: Op::Attention { layer: 0, n_head: h, n_head_kv: hkv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() },
                inputs: vec![
                    Tensor::f32(&[t, h, hd], q),
                    Tensor::f32(&[t, hkv, hd], kn),
                    Tensor::f32(&[t, hkv, hd], vn),
                    Tensor::i32(&[t], pos),
                    Tensor::i32(&[t], seqs),
                ],
                out: (DType::F32, vec![t, h * hd]),
                kv: Some((k, v, stride, n_slots)),
            }
        }
        OpKind::Scale => {
            let (t, d) = (rng.pick(TOKENS), rng.pick(AWKWARD));
            let x = activations(rng, t * d);
            let sc = rng.f32(-2.0, 2.0);
            OpCase {
                id: format!("Scale(shape=[{t},{d}],s={sc})"),
                op: Op::Scale,
                inputs: vec![Tensor::f32(&[t, d], x), Tensor::f32(&[1], vec![sc])],
                out: (DType::F32, vec![t, d]),
                kv: None,
            }
        }
        OpKind::Add | OpKind::Mul => {
            let (t, d) = (rng.pick(TOKENS), rng.pick(AWKWARD));
            let (a, b) = (activations(rng, t * d), activations(rng, t * d));
            let op = if name == "Add" { Op::Add } else { Op::Mul };
            OpCase {
                id: format!("{name}(shape=[{t},{d}])"),
                op,
                inputs: vec![Tensor::f32(&[t, d], a), Tensor::f32(&[t, d], b)],
                out: (DType::F32, vec![t, d]),
                kv: None,
            }
        }
        OpKind::Relu | OpKind::Sqr | OpKind::Silu => {
            let (t, d) = (rng.pick(TOKENS), rng.pick(AWKWARD));
            let mut x = activations(rng, t * d);
            if name == "Silu" {
                // SiLU saturates; keep inputs where exp neither under- nor overflows everywhere
                for v in &mut x {
                    *v = v.clamp(-80.0, 80.0);
                }
            }
            let op = match name {
                "Relu" => Op::Relu,
                "Sqr" => Op::Sqr,
                _ => Op::Silu,
            };
            OpCase {
                id: format!("{name}(shape=[{t},{d}])"),
                op,
                inputs: vec![Tensor::f32(&[t, d], x)],
                out: (DType::F32, vec![t, d]),
                kv: None,
            }
        }
        OpKind::SelectOutputs => {
            // Rows of f32 activations, i32 ids or q8_tok bytes; increasing row indices.
            let (t, d) = (rng.pick(TOKENS), rng.pick(AWKWARD));
            let rows: Vec<i32> = (0..t as i32).filter(|_| rng.below(3) > 0).collect();
            let o = rows.len();
            let (x, out) = match rng.below(3) {
                0 => (Tensor::f32(&[t, d], activations(rng, t * d)), (DType::F32, vec![o, d])),
                1 => (Tensor::i32(&[t], (0..t).map(|_| rng.below(1000) as i32).collect()), (DType::I32, vec![o])),
                _ => (Tensor::bytes(DType::Q8Tok, &[t, d], q8tok(rng, t, d, false)), (DType::Q8Tok, vec![o, d])),
            };
            OpCase {
                id: format!("SelectOutputs(x={} {:?},rows={rows:?})", x.dtype, x.dims),
                op: Op::SelectOutputs,
                inputs: vec![x, Tensor::i32(&[o], rows)],
                out,
                kv: None,
            }
        }
    })
}

/// The kinds with a kernel for which `gen` yields no case of that kind (what the coverage
/// test asserts is empty for [`case`]).
pub fn uncovered(gen: impl Fn(OpKind, &mut Rng) -> Option<OpCase>) -> Vec<OpKind> {
    OpKind::ALL
        .iter()
        .copied()
        .filter(|k| k.has_kernel())
        .filter(|&k| (1..=8u64).any(|seed| gen(k, &mut Rng::new(seed)).is_none_or(|c| c.op.kind() != k)))
        .collect()
}
