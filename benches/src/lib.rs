//! Inputs for the criterion benches: tensors at the 2B-4T shapes and a one-call runner
//! over `Backend::eval`, so every backend is measured through the same interface.
#![deny(missing_docs)]

use graph::backend::{q8tok_row_bytes, Data, DataMut, KvLayer, TensorMut, TensorRef};
use graph::{Backend, DType, Op};
use half::f16;

/// One input tensor: dtype, dims and its data (bytes, f32 or i32 by dtype).
pub struct Input(pub DType, pub Vec<usize>, pub Vec<u8>, pub Vec<f32>, pub Vec<i32>);

/// A prepared op call: inputs, output size, optional KV cache.
pub struct Call {
    /// The op.
    pub op: Op,
    /// Inputs in the op's order.
    pub inputs: Vec<Input>,
    /// Output dims (f32 output).
    pub out_dims: Vec<usize>,
    /// KV cache (k, v, stride).
    pub kv: Option<(Vec<f16>, Vec<f16>, usize)>,
    /// Bytes of weights read per call (for GB/s).
    pub weight_bytes: u64,
    /// Multiply-accumulates per call (for GOPS).
    pub macs: u64,
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

/// I2_S matmul `[m, k]` × `t` tokens of q8_tok activations.
pub fn i2s(m: usize, k: usize, t: usize) -> Call {
    let mut s = 7u64;
    let mut w: Vec<u8> = (0..m * k / 4).map(|_| {
        let mut b = 0u8;
        for _ in 0..4 {
            b = (b << 2) | (lcg(&mut s) % 3) as u8;
        }
        b
    }).collect();
    w.extend_from_slice(&0.02f32.to_le_bytes());
    w.extend_from_slice(&[0u8; 28]);
    let mut x = Vec::with_capacity(t * q8tok_row_bytes(k));
    for _ in 0..t {
        // As QuantizeI8 makes them from a hidden state: bell-shaped values (a sum of four
        // uniforms) scaled so that the largest magnitude is 127. (Uniform i8 over the whole
        // range would be no activation's distribution, and would keep the AVX-VNNI kernels
        // out: its lanes could wrap.)
        let h: Vec<f32> = (0..k).map(|_| (0..4).map(|_| (lcg(&mut s) % 1000) as f32 / 1000.0).sum::<f32>() - 2.0).collect();
        let amax = h.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let q: Vec<i8> = h.iter().map(|&v| (v * 127.0 / amax).round() as i8).collect();
        let sum: i32 = q.iter().map(|&v| v as i32).sum();
        x.extend(q.iter().map(|&v| v as u8));
        x.extend(40.0f32.to_le_bytes());
        x.extend(sum.to_le_bytes());
    }
    Call {
        op: Op::MatMulI2S,
        inputs: vec![Input(DType::I2S, vec![m, k], w, vec![], vec![]), Input(DType::Q8Tok, vec![t, k], x, vec![], vec![])],
        out_dims: vec![t, m],
        kv: None,
        weight_bytes: (m * k / 4) as u64,
        macs: (m * k * t) as u64,
    }
}

/// F16 matmul `[m, k]` × `t` f32 tokens (the LM head at m = 128256).
pub fn f16_matmul(m: usize, k: usize, t: usize) -> Call {
    let mut s = 3u64;
    let w: Vec<u8> = (0..m * k).flat_map(|_| f16::from_f32((lcg(&mut s) % 1000) as f32 / 1e4 - 0.05).to_le_bytes()).collect();
    let x: Vec<f32> = (0..t * k).map(|_| (lcg(&mut s) % 1000) as f32 / 500.0 - 1.0).collect();
    Call {
        op: Op::MatMulF16,
        inputs: vec![Input(DType::F16, vec![m, k], w, vec![], vec![]), Input(DType::F32, vec![t, k], vec![], x, vec![])],
        out_dims: vec![t, m],
        kv: None,
        weight_bytes: (m * k * 2) as u64,
        macs: (m * k * t) as u64,
    }
}

/// One decode step of attention at `ctx` cached positions (2B-4T heads: 20/5, hd 128).
pub fn attention(ctx: usize) -> Call {
    let (h, hkv, hd) = (20, 5, 128);
    let stride = (ctx + 1).div_ceil(32) * 32;
    let mut s = 5u64;
    let mut r = || (lcg(&mut s) % 1000) as f32 / 500.0 - 1.0;
    let k: Vec<f16> = (0..hkv * stride * hd).map(|_| f16::from_f32(r())).collect();
    let v: Vec<f16> = (0..hkv * stride * hd).map(|_| f16::from_f32(r())).collect();
    let q: Vec<f32> = (0..h * hd).map(|_| r()).collect();
    let kn: Vec<f32> = (0..hkv * hd).map(|_| r()).collect();
    let vn: Vec<f32> = (0..hkv * hd).map(|_| r()).collect();
    Call {
        op: Op::Attention { layer: 0, n_head: h, n_head_kv: hkv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() },
        inputs: vec![
            Input(DType::F32, vec![1, h, hd], vec![], q, vec![]),
            Input(DType::F32, vec![1, hkv, hd], vec![], kn, vec![]),
            Input(DType::F32, vec![1, hkv, hd], vec![], vn, vec![]),
            Input(DType::I32, vec![1], vec![], vec![], vec![ctx as i32]),
        ],
        out_dims: vec![1, h * hd],
        kv: Some((k, v, stride)),
        weight_bytes: (2 * hkv * (ctx + 1) * hd * 2) as u64,
        macs: (2 * h * (ctx + 1) * hd) as u64,
    }
}

impl Call {
    /// Evaluates the call once on `backend` into `out`.
    pub fn run(&mut self, backend: &dyn Backend, out: &mut [f32]) {
        let inputs: Vec<TensorRef<'_>> = self
            .inputs
            .iter()
            .map(|Input(dt, dims, b, f, i)| {
                let data = match dt {
                    DType::F32 => Data::F32(f),
                    DType::I32 => Data::I32(i),
                    _ => Data::Bytes(b),
                };
                TensorRef { dtype: *dt, dims, data }
            })
            .collect();
        let mut o = TensorMut { dtype: DType::F32, dims: &self.out_dims, data: DataMut::F32(out) };
        let r = match &mut self.kv {
            Some((k, v, stride)) => backend.eval(&self.op, &inputs, &mut o, Some(&mut KvLayer { k, v, n_ctx: *stride })),
            None => backend.eval(&self.op, &inputs, &mut o, None),
        };
        r.expect("bench call");
    }

    /// Output length.
    pub fn out_len(&self) -> usize {
        self.out_dims.iter().product()
    }
}
