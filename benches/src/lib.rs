//! Inputs for the criterion benches: op cases at the 2B-4T shapes, built with the op tests'
//! one tensor harness ([`ops_tests::cases`]) and the project's one PRNG, and run through
//! each backend's planned kernel, so every backend is measured through the same interface.
#![deny(missing_docs)]

use std::sync::Arc;

use graph::backend::{q8tok_row_bytes, DataMut, KvLayer, TensorMut, TensorRef};
use graph::rng::Rng;
use graph::{Backend, DType, Kernel, Op, TensorFact};
use half::f16;
pub use ops_tests::cases::{OpCase, Tensor};

/// A prepared op call with what it moves and computes.
pub struct Call {
    /// The op and its inputs.
    pub case: OpCase,
    /// Bytes of weights read per call (for GB/s).
    pub weight_bytes: u64,
    /// Multiply-accumulates per call (for GOPS).
    pub macs: u64,
    /// Weights prepared for kernels with a layout of their own, by layout name (made once,
    /// as the executor does, so the timed calls do not include the preparation).
    pub prepared: Vec<(&'static str, Vec<u8>)>,
}

/// I2_S matmul `[m, k]` × `t` tokens of q8_tok activations.
pub fn i2s(m: usize, k: usize, t: usize) -> Call {
    let mut rng = Rng::new(7);
    let codes: Vec<u8> = (0..m * k).map(|_| rng.below(3) as u8).collect();
    let w = gguf::quantize::pack_i2s(&codes, 0.02, &[0; 28]);
    let mut x = Vec::with_capacity(t * q8tok_row_bytes(k));
    for _ in 0..t {
        // As QuantizeI8 makes them from a hidden state: bell-shaped values (a sum of four
        // uniforms) scaled so that the largest magnitude is 127. (Uniform i8 over the whole
        // range would be no activation's distribution, and would keep the AVX-VNNI kernels
        // out: its lanes could wrap.)
        let h: Vec<f32> = (0..k).map(|_| (0..4).map(|_| rng.f32(0.0, 1.0)).sum::<f32>() - 2.0).collect();
        let amax = h.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let q: Vec<i8> = h.iter().map(|&v| (v * 127.0 / amax).round() as i8).collect();
        let sum: i32 = q.iter().map(|&v| v as i32).sum();
        x.extend(q.iter().map(|&v| v as u8));
        x.extend(40.0f32.to_le_bytes());
        x.extend(sum.to_le_bytes());
    }
    Call {
        case: OpCase {
            id: format!("MatMulI2S(m={m},k={k},t={t})"),
            op: Op::MatMulI2S,
            inputs: vec![Tensor::bytes(DType::I2S, &[m, k], w), Tensor::bytes(DType::Q8Tok, &[t, k], x)],
            out: (DType::F32, vec![t, m]),
            kv: None,
        },
        weight_bytes: (m * k / 4) as u64,
        macs: (m * k * t) as u64,
        prepared: Vec::new(),
    }
}

/// F16 matmul `[m, k]` × `t` f32 rows, each its own sequence's only row when `alone` (the LM
/// head of `t` decoding sequences), else all of one sequence (a prompt's rows).
pub fn f16_matmul(m: usize, k: usize, t: usize, alone: bool) -> Call {
    let mut rng = Rng::new(3);
    let w: Vec<u8> = (0..m * k).flat_map(|_| f16::from_f32(rng.f32(-0.05, 0.05)).to_le_bytes()).collect();
    let x: Vec<f32> = (0..t * k).map(|_| rng.f32(-1.0, 1.0)).collect();
    let seqs: Vec<i32> = (0..t as i32).map(|i| if alone { i } else { 0 }).collect();
    Call {
        case: OpCase {
            id: format!("MatMulF16(m={m},k={k},t={t},alone={alone})"),
            op: Op::MatMulF16,
            inputs: vec![Tensor::bytes(DType::F16, &[m, k], w), Tensor::f32(&[t, k], x), Tensor::i32(&[t], seqs)],
            out: (DType::F32, vec![t, m]),
            kv: None,
        },
        weight_bytes: (m * k * 2) as u64,
        macs: (m * k * t) as u64,
        prepared: Vec::new(),
    }
}

/// Attention over `ctx` cached positions for `t` new tokens of one sequence (2B-4T heads:
/// 20/5, hd 128): `t = 1` is a decode step, larger `t` a prompt block.
pub fn attention(ctx: usize, t: usize) -> Call {
    let (h, hkv, hd) = (20, 5, 128);
    let stride = (ctx + t).div_ceil(32) * 32;
    let mut rng = Rng::new(5);
    let mut r = || rng.f32(-1.0, 1.0);
    let k: Vec<f16> = (0..hkv * stride * hd).map(|_| f16::from_f32(r())).collect();
    let v: Vec<f16> = (0..hkv * stride * hd).map(|_| f16::from_f32(r())).collect();
    let q: Vec<f32> = (0..t * h * hd).map(|_| r()).collect();
    let kn: Vec<f32> = (0..t * hkv * hd).map(|_| r()).collect();
    let vn: Vec<f32> = (0..t * hkv * hd).map(|_| r()).collect();
    let keys: usize = (0..t).map(|i| ctx + i + 1).sum();
    Call {
        case: OpCase {
            id: format!("Attention(ctx={ctx},t={t})"),
            op: Op::Attention { layer: 0, n_head: h, n_head_kv: hkv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() },
            inputs: vec![
                Tensor::f32(&[t, h, hd], q),
                Tensor::f32(&[t, hkv, hd], kn),
                Tensor::f32(&[t, hkv, hd], vn),
                Tensor::i32(&[t], (ctx..ctx + t).map(|p| p as i32).collect()),
                Tensor::i32(&[t], vec![0; t]),
            ],
            out: (DType::F32, vec![t, h * hd]),
            kv: Some((k, v, stride, 1)),
        },
        weight_bytes: (2 * hkv * (ctx + t) * hd * 2) as u64,
        macs: (2 * h * hd * keys) as u64,
        prepared: Vec::new(),
    }
}

impl Call {
    /// The kernel `backend` plans for this call, if any.
    pub fn kernel(&self, backend: &dyn Backend) -> Option<Kernel> {
        let facts: Vec<TensorFact> =
            self.case.inputs.iter().map(|t| TensorFact::new(t.dtype, graph::Shape::fixed(&t.dims))).collect();
        let frefs: Vec<&TensorFact> = facts.iter().collect();
        backend.plan(&self.case.op, &frefs)
    }

    /// Runs `kernel` once on the call's inputs into `out` (a weight the kernel takes in its
    /// own layout prepared on the first call only).
    pub fn run(&mut self, kernel: &Kernel, out: &mut [f32]) {
        if let Some(prep) = kernel.weight_prep() {
            if !self.prepared.iter().any(|p| p.0 == prep.layout) {
                let w = prep.prepare_tensor(&self.case.inputs[prep.input].view()).expect("bench weight preparation");
                self.prepared.push((prep.layout, w));
            }
        }
        let mut inputs: Vec<TensorRef<'_>> = self.case.inputs.iter().map(Tensor::view).collect();
        if let Some(prep) = kernel.weight_prep() {
            let w = &self.prepared.iter().find(|p| p.0 == prep.layout).expect("prepared above").1;
            inputs[prep.input].data = graph::Data::Bytes(w);
        }
        let mut o = TensorMut { dtype: DType::F32, dims: &self.case.out.1, data: DataMut::F32(out) };
        let r = match &mut self.case.kv {
            Some((k, v, stride, slots)) => {
                kernel.run_prepared(&inputs, &mut o, Some(&mut KvLayer { k, v, n_ctx: *stride, n_slots: *slots }))
            }
            None => kernel.run_prepared(&inputs, &mut o, None),
        };
        r.expect("bench call");
    }

    /// Output length.
    pub fn out_len(&self) -> usize {
        self.case.out.1.iter().product()
    }
}

/// The backends measured side by side, with their labels: every registered backend this CPU
/// runs and, where the CPU has AVX-VNNI, AVX2 without its VNNI I2_S kernels, and where it
/// has AMX-INT8, AVX-512 without its AMX GEMM.
pub fn backends() -> Vec<(String, Arc<dyn Backend>)> {
    let mut v: Vec<(String, Arc<dyn Backend>)> = Vec::new();
    for e in runtime::backends::REGISTRY {
        match (e.make)() {
            Some(b) => v.push((e.name.to_string(), b)),
            None => println!("SKIPPED: backend {} is not available on this machine (needs {})", e.name, e.requires),
        }
    }
    if let Some(b) = backend_avx2::Avx2Backend::new().filter(|b| b.uses_vnni()) {
        v.push(("avx2-no-vnni".into(), Arc::new(b.without_vnni())));
    }
    if let Some(b) = backend_avx512::Avx512Backend::new().filter(|b| b.uses_amx()) {
        v.push(("avx512-no-amx".into(), Arc::new(b.without_amx())));
    }
    v
}
