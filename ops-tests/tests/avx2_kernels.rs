//! The AVX2 backend against the scalar reference, op by op and on the whole tiny model.
//!
//! Every supported op must reproduce the scalar backend bit for bit (NaN matches NaN).
//! Inputs are random over awkward sizes (tails of 1..31 elements, K = 128·m for I2_S
//! with one and two lane-wrap chunks, odd row and token counts), with extreme values
//! (i16 lane wrap, .5 ties, zeros, ±tiny, ±huge, ±inf, NaN), slices shifted by 1..31
//! bytes, and guard sentinels around every output. Hosts without AVX2/FMA/F16C (or with
//! `BITNET_DISABLE_AVX2=1`) skip with a note. Run with `--release`.
//!
//! Kernel throughput is measured by the criterion benches (`cargo bench -p benches`).

use std::sync::Arc;

use backend_avx2::Avx2Backend;
use backend_scalar::ScalarBackend;
use graph::backend::q8tok_row_bytes;
use graph::{Backend, DType, Data, DataMut, Dim, KvLayer, Op, Shape, TensorFact, TensorMut, TensorRef};
use half::f16;
use ops_tests::*;

// ---------------------------------------------------------------------------------------
// Harness

/// The AVX2 backend, or `None` with a printed note.
fn avx2() -> Option<Avx2Backend> {
    let b = Avx2Backend::new();
    if b.is_none() {
        println!("skipped: no AVX2+FMA+F16C on this CPU, or BITNET_DISABLE_AVX2 is set");
    }
    b
}

/// The project's PRNG ([`ops_tests::Rng`]) with the draws these tests use.
struct Rng(ops_tests::Rng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(ops_tests::Rng::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [lo, hi).
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        self.0.f32(lo, hi)
    }
    fn i8(&mut self) -> i8 {
        self.next() as u8 as i8
    }
}

/// How to fill an f32 input.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fill {
    /// Uniform in [−2, 2).
    Normal,
    /// Random sign and exponent over 2^±40.
    Wide,
    /// ±0, ±tiny, subnormals, ±huge, ±inf, .5 ties and normal values mixed.
    Special,
    /// Like `Special`, plus NaN.
    WithNan,
    /// All zeros.
    Zeros,
}

fn fill(rng: &mut Rng, n: usize, kind: Fill) -> Vec<f32> {
    const SPECIAL: [f32; 14] = [0.0, -0.0, 1e-38, -1e-38, 1e-45, -3e-42, 3e38, -3e38, 0.5, -2.5, 126.5, 1.0, -1.0, 1e-20];
    (0..n)
        .map(|_| match kind {
            Fill::Normal => rng.f32(-2.0, 2.0),
            Fill::Wide => {
                let e = rng.f32(-40.0, 40.0);
                let s = if rng.below(2) == 0 { 1.0 } else { -1.0 };
                s * rng.f32(1.0, 2.0) * e.exp2()
            }
            Fill::Special | Fill::WithNan => match rng.below(if kind == Fill::WithNan { 24 } else { 22 }) {
                0..=13 => SPECIAL[rng.below(14) as usize],
                14 => f32::INFINITY,
                15 => f32::NEG_INFINITY,
                16..=21 => rng.f32(-4.0, 4.0),
                _ => f32::NAN,
            },
            Fill::Zeros => 0.0,
        })
        .collect()
}

/// An owned input tensor, stored `off` elements (bytes for byte data) into its buffer so
/// that kernels see shifted, unaligned slices.
enum Buf {
    F32(Vec<f32>),
    I32(Vec<i32>),
    Bytes(Vec<u8>),
}

struct Input {
    dtype: DType,
    dims: Vec<usize>,
    buf: Buf,
    off: usize,
}

impl Input {
    fn f32(dims: &[usize], v: &[f32], off: usize) -> Input {
        let mut b = vec![f32::from_bits(0x7FC0_BEEF); off];
        b.extend_from_slice(v);
        Input { dtype: DType::F32, dims: dims.to_vec(), buf: Buf::F32(b), off }
    }
    fn i32(dims: &[usize], v: &[i32]) -> Input {
        Input { dtype: DType::I32, dims: dims.to_vec(), buf: Buf::I32(v.to_vec()), off: 0 }
    }
    fn bytes(dtype: DType, dims: &[usize], v: &[u8], off: usize) -> Input {
        let mut b = vec![0xA5u8; off];
        b.extend_from_slice(v);
        Input { dtype, dims: dims.to_vec(), buf: Buf::Bytes(b), off }
    }
    fn view(&self) -> TensorRef<'_> {
        let data = match &self.buf {
            Buf::F32(v) => Data::F32(&v[self.off..]),
            Buf::I32(v) => Data::I32(&v[self.off..]),
            Buf::Bytes(v) => Data::Bytes(&v[self.off..]),
        };
        TensorRef { dtype: self.dtype, dims: &self.dims, data }
    }
    fn fact(&self) -> TensorFact {
        TensorFact::new(self.dtype, Shape::new(self.dims.iter().map(|&d| Dim::Fixed(d))))
    }
}

/// A node output: f32 values or bytes.
#[derive(Debug)]
enum Out {
    F32(Vec<f32>),
    Bytes(Vec<u8>),
}

/// Guard elements on each side of an output.
const GUARD: usize = 40;
const SENTINEL_F32: u32 = 0x7FBA_D0D0;
const SENTINEL_U8: u8 = 0x5C;

/// Runs `op` on `b` with an output of `len` elements (bytes for q8_tok and q8_k), checking that the
/// backend supports it and wrote nothing outside the output.
fn run_op(b: &dyn Backend, id: &str, op: &Op, inputs: &[Input], out_dtype: DType, out_dims: &[usize], len: usize) -> Out {
    run_op_kv(b, id, op, inputs, out_dtype, out_dims, len, None)
}

#[allow(clippy::too_many_arguments)]
fn run_op_kv(
    b: &dyn Backend,
    id: &str,
    op: &Op,
    inputs: &[Input],
    out_dtype: DType,
    out_dims: &[usize],
    len: usize,
    kv: Option<&mut KvLayer<'_>>,
) -> Out {
    let facts: Vec<TensorFact> = inputs.iter().map(Input::fact).collect();
    let frefs: Vec<&TensorFact> = facts.iter().collect();
    let kernel = b.plan(op, &frefs).unwrap_or_else(|| panic!("{id}: {} does not plan it", b.name()));
    let views: Vec<TensorRef<'_>> = inputs.iter().map(Input::view).collect();
    if matches!(out_dtype, DType::Q8Tok | DType::Q8K) {
        let mut buf = vec![SENTINEL_U8; len + 2 * GUARD];
        let mut out = TensorMut { dtype: out_dtype, dims: out_dims, data: DataMut::Bytes(&mut buf[GUARD..GUARD + len]) };
        kernel.run(&views, &mut out, kv).unwrap_or_else(|e| panic!("{id} on {}: {e}", b.name()));
        assert!(
            buf[..GUARD].iter().chain(&buf[GUARD + len..]).all(|&x| x == SENTINEL_U8),
            "{id}: {} wrote outside its output",
            b.name()
        );
        Out::Bytes(buf[GUARD..GUARD + len].to_vec())
    } else {
        let mut buf = vec![f32::from_bits(SENTINEL_F32); len + 2 * GUARD];
        let mut out = TensorMut { dtype: out_dtype, dims: out_dims, data: DataMut::F32(&mut buf[GUARD..GUARD + len]) };
        kernel.run(&views, &mut out, kv).unwrap_or_else(|e| panic!("{id} on {}: {e}", b.name()));
        assert!(
            buf[..GUARD].iter().chain(&buf[GUARD + len..]).all(|x| x.to_bits() == SENTINEL_F32),
            "{id}: {} wrote outside its output",
            b.name()
        );
        Out::F32(buf[GUARD..GUARD + len].to_vec())
    }
}

/// Bit-for-bit equality (any NaN equals any NaN).
fn assert_same_f32(id: &str, want: &[f32], got: &[f32]) {
    assert_eq!(want.len(), got.len(), "{id}: lengths");
    for (i, (&w, &g)) in want.iter().zip(got).enumerate() {
        if w.to_bits() != g.to_bits() && !(w.is_nan() && g.is_nan()) {
            panic!("{id}: element {i}: scalar {w:e} ({:#010x}), avx2 {g:e} ({:#010x})", w.to_bits(), g.to_bits());
        }
    }
}

fn assert_same(id: &str, want: &Out, got: &Out) {
    match (want, got) {
        (Out::F32(w), Out::F32(g)) => assert_same_f32(id, w, g),
        (Out::Bytes(w), Out::Bytes(g)) => {
            if let Some(i) = w.iter().zip(g).position(|(a, b)| a != b) {
                panic!("{id}: byte {i}: scalar {:#04x}, avx2 {:#04x}", w[i], g[i]);
            }
            assert_eq!(w.len(), g.len(), "{id}: lengths");
        }
        _ => panic!("{id}: output kinds differ"),
    }
}

/// Runs `op` on both backends and compares the outputs bit for bit.
fn check(a: &Avx2Backend, id: &str, op: &Op, inputs: &[Input], out_dtype: DType, out_dims: &[usize], len: usize) {
    let want = run_op(&ScalarBackend::new(), id, op, inputs, out_dtype, out_dims, len);
    let got = run_op(a, id, op, inputs, out_dtype, out_dims, len);
    assert_same(id, &want, &got);
}

// ---------------------------------------------------------------------------------------
// Per-op cases

const LENGTHS: [usize; 9] = [1, 7, 31, 32, 33, 255, 256, 257, 2560];

#[test]
fn quantize_i8_bit_exact() {
    let Some(a) = avx2() else { return };
    let mut rng = Rng::new(1);
    let mut n = 0;
    for &k in &LENGTHS {
        for t in [1usize, 2, 3, 5] {
            for kind in [Fill::Normal, Fill::Wide, Fill::Special, Fill::WithNan, Fill::Zeros] {
                let mut x = fill(&mut rng, t * k, kind);
                if kind == Fill::Normal && k > 4 {
                    // Row maximum 127 gives s = 1 exactly: every .5 is a tie.
                    for row in x.chunks_mut(k) {
                        row[0] = 127.0;
                        for (i, v) in row.iter_mut().enumerate().skip(1) {
                            *v = (i as f32 % 200.0) - 99.5;
                        }
                    }
                }
                let off = n % 8;
                let id = format!("QuantizeI8(shape=[{t},{k}],fill={kind:?},off={off})");
                let inp = [Input::f32(&[t, k], &x, off)];
                check(&a, &id, &Op::QuantizeI8, &inp, DType::Q8Tok, &[t, k], t * q8tok_row_bytes(k));
                n += 1;
            }
        }
    }
    println!("QuantizeI8: {n} cases bit-exact");
}

/// Activations for MatMulI2S, as q8_tok rows.
#[derive(Clone, Copy, Debug)]
enum Acts {
    /// Random i8 over the whole range.
    Random,
    /// All 127: with codes 2 every i16 lane wraps.
    Max,
    /// All −128.
    Min,
    /// All 127 against codes 1: a lane's chunk total (≤ 32·8·127) fits i16 but two chunks
    /// together do not, so only per-chunk widening gives the exact sum.
    Chunked,
    /// All zero.
    Zero,
    /// Random in −40..=40: no i16 lane can wrap whatever the codes, so a CPU with AVX-VNNI
    /// takes its VNNI kernels even at the largest K.
    Small,
    /// Tokens alternate between `Small` and all 127: token tiles mix tokens that may take
    /// the VNNI kernels with tokens that must not.
    Mixed,
}

fn q8tok_rows(rng: &mut Rng, t: usize, k: usize, acts: Acts) -> Vec<u8> {
    let mut out = Vec::with_capacity(t * q8tok_row_bytes(k));
    for tok in 0..t {
        let q: Vec<i8> = (0..k)
            .map(|_| match acts {
                Acts::Random => rng.i8(),
                Acts::Max | Acts::Chunked => 127,
                Acts::Mixed if tok % 2 == 1 => 127,
                Acts::Min => -128,
                Acts::Zero => 0,
                Acts::Small | Acts::Mixed => (rng.below(81) as i32 - 40) as i8,
            })
            .collect();
        let s = rng.f32(0.5, 400.0);
        let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
        out.extend(q.iter().map(|&v| v as u8));
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&sum.to_le_bytes());
    }
    out
}

/// Both I2_S kernel families: the backend as detected (with AVX-VNNI where the CPU has it)
/// and without VNNI.
fn i2s_backends(a: Avx2Backend) -> Vec<Avx2Backend> {
    if a.uses_vnni() {
        vec![a, a.without_vnni()]
    } else {
        println!("note: no AVX-VNNI here (or BITNET_DISABLE_VNNI is set): the VNNI kernels are not tested");
        vec![a]
    }
}

#[test]
fn matmul_i2s_bit_exact() {
    let Some(a) = avx2() else { return };
    for a in i2s_backends(a) {
        matmul_i2s_cases(&a);
    }
}

fn matmul_i2s_cases(a: &Avx2Backend) {
    let mut rng = Rng::new(2);
    let mut n = 0;
    for mg in [1usize, 2, 3, 20, 33, 54] {
        let k = 128 * mg;
        for m in [4usize, 8, 12, 36, 7] {
            for t in [1usize, 2, 3, 5, 8, 17] {
                for acts in [Acts::Random, Acts::Max, Acts::Min, Acts::Chunked, Acts::Zero, Acts::Small, Acts::Mixed] {
                    if mg > 3 && m > 12 && t > 5 && !matches!(acts, Acts::Random | Acts::Mixed) {
                        continue; // keep the big shapes to one activation kind
                    }
                    let codes: Vec<u8> = (0..m * k)
                        .map(|_| match acts {
                            Acts::Max | Acts::Min => 2,
                            Acts::Chunked => 1,
                            _ => {
                                // Mostly ternary codes; code 3 (never written) now and then.
                                if rng.below(97) == 0 {
                                    3
                                } else {
                                    rng.below(3) as u8
                                }
                            }
                        })
                        .collect();
                    let mut trailer = [0u8; 28];
                    trailer.iter_mut().for_each(|b| *b = rng.next() as u8);
                    let w = gguf::quantize::pack_i2s(&codes, rng.f32(0.1, 3.0), &trailer);
                    let x = q8tok_rows(&mut rng, t, k, acts);
                    let (wo, xo) = (1 + n % 31, 1 + (n * 7) % 31);
                    let id = format!("MatMulI2S(w=[{m},{k}],t={t},acts={acts:?},off={wo}/{xo})");
                    let inp = [Input::bytes(DType::I2S, &[m, k], &w, wo), Input::bytes(DType::Q8Tok, &[t, k], &x, xo)];
                    check(a, &id, &Op::MatMulI2S, &inp, DType::F32, &[t, m], t * m);
                    n += 1;
                }
            }
        }
    }
    println!("MatMulI2S ({}): {n} cases bit-exact", if a.uses_vnni() { "vnni" } else { "avx2" });
}

#[test]
fn matmul_i2s_lane_wrap_matters() {
    // Against the scalar kernel's documented values (its unit tests), with s = 1, Σq = 0
    // and scale 1 so that the output is the integer dot product:
    // - codes 2 × q 127, K = 33 groups: the first chunk's lanes wrap → 24320 (exact sum
    //   1072896);
    // - codes 1 × q 127, K = 54 groups: no chunk wraps, one chunk of 54 would → exact
    //   54·128·127 = 877824 only with per-chunk widening.
    let Some(a) = avx2() else { return };
    for a in i2s_backends(a) {
        i2s_lane_wrap_cases(&a);
    }
}

fn i2s_lane_wrap_cases(a: &Avx2Backend) {
    for (code, groups, want) in [(2u8, 33usize, 24320.0f32), (1, 54, 877824.0)] {
        let k = groups * 128;
        let w = gguf::quantize::pack_i2s(&vec![code; 4 * k], 1.0, &[0; 28]);
        let mut x = vec![127u8; k];
        x.extend_from_slice(&1.0f32.to_le_bytes());
        x.extend_from_slice(&0i32.to_le_bytes());
        let inp = [Input::bytes(DType::I2S, &[4, k], &w, 3), Input::bytes(DType::Q8Tok, &[1, k], &x, 5)];
        let Out::F32(y) = run_op(a, "wrap", &Op::MatMulI2S, &inp, DType::F32, &[1, 4], 4) else { unreachable!() };
        assert_eq!(y, vec![want; 4], "codes {code}, {groups} groups");
    }
}

#[test]
fn rope_bit_exact() {
    let Some(a) = avx2() else { return };
    let mut rng = Rng::new(11);
    let mut n = 0;
    // Head dims with and without a vector tail (n_rot/2 % 8), partial rotation, both styles,
    // positions up to past the 2B context, both bases.
    for hd in [2usize, 8, 16, 24, 64, 100, 128] {
        for n_rot in [hd, hd / 2 / 2 * 2, 2] {
            if n_rot == 0 || n_rot > hd {
                continue;
            }
            for style in [graph::RopeStyle::Neox, graph::RopeStyle::Norm] {
                for (t, h) in [(1usize, 1usize), (3, 5), (7, 20), (2, 0)] {
                    let base = if n % 2 == 0 { 10000.0 } else { 500000.0 };
                    let x: Vec<f32> = (0..t * h * hd).map(|_| rng.f32(-4.0, 4.0)).collect();
                    let p0 = rng.below(5000) as i32;
                    let pos: Vec<i32> = (0..t as i32).map(|i| p0 + 7 * i).collect();
                    let op = Op::Rope { n_rot, freq_base: base, style };
                    let id = format!("Rope({style:?},t={t},h={h},hd={hd},n_rot={n_rot},base={base},pos0={p0})");
                    let inp = [Input::f32(&[t, h, hd], &x, 1 + n % 7), Input::i32(&[t], &pos)];
                    check(&a, &id, &op, &inp, DType::F32, &[t, h, hd], t * h * hd);
                    n += 1;
                }
            }
        }
    }
    println!("Rope: {n} cases bit-exact");
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect()
}

#[test]
fn matmul_f16_bit_exact() {
    let Some(a) = avx2() else { return };
    let mut rng = Rng::new(3);
    let mut n = 0;
    for k in [1usize, 7, 8, 31, 32, 33, 64, 255, 256, 257, 2560] {
        for m in [1usize, 3, 4, 8, 37] {
            for t in [1usize, 2, 3, 5, 8, 17] {
                for kind in [Fill::Normal, Fill::Wide, Fill::Special] {
                    let wv = fill(&mut rng, m * k, if kind == Fill::Wide { Fill::Normal } else { kind });
                    let x = fill(&mut rng, t * k, kind);
                    let (wo, xo) = (1 + n % 31, n % 8);
                    // One sequence (every row shares it: dotblas for t ≥ 2), or one per row
                    // (every row alone: dot16), or a mix.
                    for (si, seqs) in
                        [vec![0i32; t], (0..t as i32).collect(), (0..t as i32).map(|i| i / 2).collect()].iter().enumerate()
                    {
                        if si > 0 && t == 1 {
                            break;
                        }
                        let id = format!("MatMulF16(w=[{m},{k}],t={t},seqs={seqs:?},fill={kind:?},off={wo}/{xo})");
                        let inp = [
                            Input::bytes(DType::F16, &[m, k], &f16_bytes(&wv), wo),
                            Input::f32(&[t, k], &x, xo),
                            Input::i32(&[t], seqs),
                        ];
                        check(&a, &id, &Op::MatMulF16, &inp, DType::F32, &[t, m], t * m);
                        n += 1;
                    }
                }
            }
        }
    }
    println!("MatMulF16: {n} cases bit-exact");
}

fn q8_0_weights(rng: &mut Rng, m: usize, k: usize) -> Vec<u8> {
    let mut w = Vec::with_capacity(m * DType::Q8_0.row_bytes(k).unwrap());
    for _ in 0..m * k / 32 {
        w.extend_from_slice(&f16::from_f32(rng.f32(1e-4, 0.05)).to_le_bytes());
        w.extend((0..32).map(|_| rng.i8() as u8));
    }
    w
}

/// MatMulQ8_0 with block weights of `dtype` (made by `weights(rng, m, k)`) over the sizes,
/// fills and slice offsets of the head cases; returns the number of cases.
fn block_head_cases(
    a: &Avx2Backend,
    dtype: DType,
    seed: u64,
    rows: &[usize],
    weights: fn(&mut Rng, usize, usize) -> Vec<u8>,
) -> usize {
    let mut rng = Rng::new(seed);
    let mut n = 0;
    for k in [32usize, 64, 96, 384, 2560] {
        for &m in rows {
            for t in [1usize, 2, 3, 5] {
                for kind in [Fill::Normal, Fill::Wide, Fill::Special, Fill::WithNan, Fill::Zeros] {
                    let w = weights(&mut rng, m, k);
                    let mut x = fill(&mut rng, t * k, kind);
                    if kind == Fill::Normal {
                        // A zero block, and a block whose maximum is 127 (ties on every .5).
                        x[..32].fill(0.0);
                        if x.len() >= 64 {
                            x[32] = 127.0;
                            for (i, v) in x[33..64].iter_mut().enumerate() {
                                *v = i as f32 - 15.5;
                            }
                        }
                    }
                    let (wo, xo) = (1 + n % 31, n % 8);
                    let id = format!("MatMulQ8_0(w={dtype}[{m},{k}],t={t},fill={kind:?},off={wo}/{xo})");
                    let inp = [Input::bytes(dtype, &[m, k], &w, wo), Input::f32(&[t, k], &x, xo)];
                    check(a, &id, &Op::MatMulQ8_0, &inp, DType::F32, &[t, m], t * m);
                    n += 1;
                }
            }
        }
    }
    n
}

#[test]
fn matmul_q8_0_bit_exact() {
    let Some(a) = avx2() else { return };
    let n = block_head_cases(&a, DType::Q8_0, 4, &[1, 4, 5, 12, 33], q8_0_weights);
    println!("MatMulQ8_0: {n} cases bit-exact");
}

// ---------------------------------------------------------------------------------------
// Q8_K quantizer, TQ2_0 / TQ1_0 and Q4_0 products

/// K = 256·m for the Q8_K / TQ cases.
const TQ_BLOCKS: [usize; 5] = [1, 2, 3, 10, 27];

#[test]
fn quantize_q8k_bit_exact() {
    let Some(a) = avx2() else { return };
    let mut rng = Rng::new(11);
    let mut n = 0;
    for &mb in &TQ_BLOCKS {
        let k = 256 * mb;
        for t in [1usize, 2, 3, 5, 8] {
            for kind in [Fill::Normal, Fill::Wide, Fill::Special, Fill::WithNan, Fill::Zeros] {
                let mut x = fill(&mut rng, t * k, kind);
                if kind == Fill::Normal {
                    for (bi, blk) in x.chunks_mut(256).enumerate() {
                        match bi % 6 {
                            // Maximum −127: iscale = 1, every .5 a tie.
                            0 => {
                                blk[0] = -127.0;
                                for (i, v) in blk.iter_mut().enumerate().skip(1) {
                                    *v = (i as f32 % 200.0) - 99.5;
                                }
                            }
                            // Equal |max| of both signs: the first one's sign wins.
                            1 => {
                                blk[5] = 3.0;
                                blk[9] = -3.0;
                            }
                            2 => {
                                blk[5] = -3.0;
                                blk[200] = 3.0;
                            }
                            // A zero block (−0.0 too).
                            3 => blk.fill(if rng.below(2) == 0 { 0.0 } else { -0.0 }),
                            // Tiny maximum: iscale = ±inf.
                            4 => {
                                for v in blk.iter_mut() {
                                    *v = [0.0, 1e-45, -1e-45, 3e-42, -1e-39][rng.below(5) as usize];
                                }
                            }
                            // An infinite maximum: iscale = ∓0.
                            _ => blk[77] = if rng.below(2) == 0 { f32::INFINITY } else { f32::NEG_INFINITY },
                        }
                    }
                }
                let off = n % 8;
                let id = format!("QuantizeQ8K(shape=[{t},{k}],fill={kind:?},off={off})");
                let inp = [Input::f32(&[t, k], &x, off)];
                check(&a, &id, &Op::QuantizeQ8K, &inp, DType::Q8K, &[t, k], t * k / 256 * 260);
                n += 1;
            }
        }
    }
    println!("QuantizeQ8K: {n} cases bit-exact");
}

/// Q8_K activations for the TQ products.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Q8kActs {
    /// Random i8 over the whole range (incl. −128) and random scales.
    Random,
    /// All 127.
    Max,
    /// All −128.
    Min,
    /// Random, with every other block a zero block (d = 0, q = 0).
    ZeroBlocks,
    /// What the quantizer makes of random f32 (via the scalar backend).
    Quantized,
}

fn q8k_rows(rng: &mut Rng, t: usize, k: usize, acts: Q8kActs) -> Vec<u8> {
    if acts == Q8kActs::Quantized {
        let x = fill(rng, t * k, Fill::Normal);
        let inp = [Input::f32(&[t, k], &x, 0)];
        let Out::Bytes(b) = run_op(&ScalarBackend::new(), "q8k", &Op::QuantizeQ8K, &inp, DType::Q8K, &[t, k], t * k / 256 * 260)
        else {
            unreachable!()
        };
        return b;
    }
    let mut out = Vec::with_capacity(t * k / 256 * 260);
    for b in 0..t * k / 256 {
        let zero = acts == Q8kActs::ZeroBlocks && b % 2 == 0;
        let d = if zero { 0.0 } else { rng.f32(-0.1, 0.1) };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend((0..256).map(|_| match acts {
            _ if zero => 0u8,
            Q8kActs::Max => 127,
            Q8kActs::Min => 0x80,
            _ => rng.next() as u8,
        }));
    }
    out
}

/// `m` rows of TQ2_0 or TQ1_0 weights over `k`: random codes (sometimes all 2, all 0 or,
/// for TQ2_0, the never-written code 3), random scales (sometimes 0). `raw` TQ1_0 blocks
/// are random bytes (non-canonical trits).
fn tq_weights(rng: &mut Rng, wty: DType, m: usize, k: usize, raw: bool) -> Vec<u8> {
    let mut w = Vec::new();
    for _ in 0..m * k / 256 {
        let pattern = rng.below(8);
        let codes: Vec<u8> = (0..256)
            .map(|_| match pattern {
                0 => 2,
                1 => 0,
                2 if wty == DType::TQ2_0 => [0, 1, 2, 3][rng.below(4) as usize],
                _ => rng.below(3) as u8,
            })
            .collect();
        let d = f16::from_f32(if rng.below(16) == 0 { 0.0 } else { rng.f32(-0.2, 0.2) });
        if wty == DType::TQ2_0 {
            let mut blk = gguf::quantize::pack_tq2_0(&codes, d);
            if pattern == 2 {
                // pack_tq2_0 masks codes to 2 bits, so 3 survives.
                for (i, &c) in codes.iter().enumerate() {
                    debug_assert_eq!(graph::quant::tq2_code(&blk[..64], i), c);
                }
            }
            if raw {
                blk[..64].iter_mut().for_each(|b| *b = rng.next() as u8);
            }
            w.extend_from_slice(&blk);
        } else {
            let mut blk = gguf::quantize::pack_tq1_0(&codes, d);
            if raw {
                blk[..52].iter_mut().for_each(|b| *b = rng.next() as u8);
            }
            w.extend_from_slice(&blk);
        }
    }
    w
}

#[test]
fn matmul_tq_bit_exact() {
    let Some(a) = avx2() else { return };
    let mut rng = Rng::new(12);
    let mut n = 0;
    for wty in [DType::TQ2_0, DType::TQ1_0, DType::Q6K] {
        for &mb in &TQ_BLOCKS {
            let k = 256 * mb;
            for m in [1usize, 4, 7, 12, 33] {
                for t in [1usize, 2, 3, 5, 8] {
                    for acts in [Q8kActs::Random, Q8kActs::Max, Q8kActs::Min, Q8kActs::ZeroBlocks, Q8kActs::Quantized] {
                        let raw = n % 5 == 4;
                        let w = if wty == DType::Q6K {
                            ops_tests::cases::q6k_rows(&mut rng.0, m, k)
                        } else {
                            tq_weights(&mut rng, wty, m, k, raw)
                        };
                        let x = q8k_rows(&mut rng, t, k, acts);
                        let (wo, xo) = (1 + n % 31, (n * 7) % 31);
                        let id = format!("MatMulTQ(w={wty}[{m},{k}],raw={raw},t={t},acts={acts:?},off={wo}/{xo})");
                        let inp = [Input::bytes(wty, &[m, k], &w, wo), Input::bytes(DType::Q8K, &[t, k], &x, xo)];
                        check(&a, &id, &Op::MatMulTQ, &inp, DType::F32, &[t, m], t * m);
                        n += 1;
                    }
                }
            }
        }
    }
    println!("MatMulTQ: {n} cases bit-exact");
}

#[test]
fn matmul_tq_same_codes_same_bits() {
    // TQ1_0 and TQ2_0 blocks with the same codes and scales give identical bits (both
    // kernels put element i into lane (i mod 32) div 4), on the AVX2 backend too.
    let Some(a) = avx2() else { return };
    let mut rng = Rng::new(13);
    let (m, k, t) = (9usize, 256 * 3, 3usize);
    let (mut w2, mut w1) = (Vec::new(), Vec::new());
    for _ in 0..m * k / 256 {
        let codes: Vec<u8> = (0..256).map(|_| rng.below(3) as u8).collect();
        let d = f16::from_f32(rng.f32(0.01, 0.1));
        w2.extend_from_slice(&gguf::quantize::pack_tq2_0(&codes, d));
        w1.extend_from_slice(&gguf::quantize::pack_tq1_0(&codes, d));
    }
    let x = q8k_rows(&mut rng, t, k, Q8kActs::Quantized);
    let xin = Input::bytes(DType::Q8K, &[t, k], &x, 0);
    let xin2 = Input::bytes(DType::Q8K, &[t, k], &x, 0);
    let Out::F32(y2) =
        run_op(&a, "tq2", &Op::MatMulTQ, &[Input::bytes(DType::TQ2_0, &[m, k], &w2, 0), xin], DType::F32, &[t, m], t * m)
    else {
        unreachable!()
    };
    let Out::F32(y1) =
        run_op(&a, "tq1", &Op::MatMulTQ, &[Input::bytes(DType::TQ1_0, &[m, k], &w1, 0), xin2], DType::F32, &[t, m], t * m)
    else {
        unreachable!()
    };
    assert_same_f32("TQ1_0 vs TQ2_0", &y2, &y1);
}

fn q4_0_weights(rng: &mut Rng, m: usize, k: usize) -> Vec<u8> {
    let mut w = Vec::with_capacity(m * k / 32 * 18);
    for _ in 0..m * k / 32 {
        w.extend_from_slice(&f16::from_f32(rng.f32(-0.05, 0.05)).to_le_bytes());
        // Nibble extremes: all −8, all +7, alternating, or random.
        let pattern = rng.below(5);
        w.extend((0..16).map(|_| match pattern {
            0 => 0x00u8,
            1 => 0xFF,
            2 => 0x0F,
            _ => rng.next() as u8,
        }));
    }
    w
}

#[test]
fn matmul_q4_0_bit_exact() {
    let Some(a) = avx2() else { return };
    let n = block_head_cases(&a, DType::Q4_0, 14, &[1, 4, 5, 7, 12, 33], q4_0_weights);
    println!("MatMulQ8_0 (Q4_0 weights): {n} cases bit-exact");
}

#[test]
fn rms_norm_bit_exact() {
    let Some(a) = avx2() else { return };
    let mut rng = Rng::new(5);
    let mut n = 0;
    for &d in LENGTHS.iter().chain(&[6912]) {
        for rows in [1usize, 2, 3] {
            for kind in [Fill::Normal, Fill::Wide, Fill::Special, Fill::Zeros] {
                for eps in [1e-5f32, 1e-6] {
                    let x = fill(&mut rng, rows * d, kind);
                    let w = fill(&mut rng, d, Fill::Normal);
                    let off = n % 8;
                    let id = format!("RmsNorm(shape=[{rows},{d}],fill={kind:?},eps={eps:e},off={off})");
                    let inp = [Input::f32(&[rows, d], &x, off), Input::f32(&[d], &w, (off + 3) % 8)];
                    check(&a, &id, &Op::RmsNorm { eps }, &inp, DType::F32, &[rows, d], rows * d);
                    n += 1;
                }
            }
        }
    }
    println!("RmsNorm: {n} cases bit-exact");
}

#[test]
fn elementwise_bit_exact() {
    let Some(a) = avx2() else { return };
    let mut rng = Rng::new(6);
    let mut n = 0;
    for &len in LENGTHS.iter().chain(&[70001]) {
        for kind in [Fill::Normal, Fill::Wide, Fill::Special, Fill::WithNan] {
            let x = fill(&mut rng, len, kind);
            let y = fill(&mut rng, len, kind);
            // Silu's interesting range: vexp's special branches start near |x| ≈ 87.
            let s: Vec<f32> = x.iter().map(|&v| if kind == Fill::Normal { v * 60.0 } else { v }).collect();
            let off = n % 8;
            for op in [Op::Add, Op::Mul] {
                let id = format!("{}(len={len},fill={kind:?},off={off})", op.name());
                let inp = [Input::f32(&[len], &x, off), Input::f32(&[len], &y, 7 - off)];
                check(&a, &id, &op, &inp, DType::F32, &[len], len);
            }
            for op in [Op::Relu, Op::Sqr, Op::Silu] {
                let id = format!("{}(len={len},fill={kind:?},off={off})", op.name());
                let src = if op == Op::Silu { &s } else { &x };
                check(&a, &id, &op, &[Input::f32(&[len], src, off)], DType::F32, &[len], len);
            }
            n += 1;
        }
    }
    // SelectOutputs gathers rows: the last ones, a middle one, all of them, every other one.
    for (t, rows, d) in
        [(1usize, vec![0i32], 7usize), (5, vec![4], 33), (5, vec![2], 33), (5, (0..5).collect(), 33), (17, vec![1, 3, 16], 256)]
    {
        let x = fill(&mut rng, t * d, Fill::Special);
        let o = rows.len();
        let id = format!("SelectOutputs(t={t},rows={rows:?},d={d})");
        check(&a, &id, &Op::SelectOutputs, &[Input::f32(&[t, d], &x, 1), Input::i32(&[o], &rows)], DType::F32, &[o, d], o * d);
    }
    println!("Add, Mul, Relu, Sqr, Silu: {n} lengths × fills bit-exact; SelectOutputs too");
}

#[test]
fn vexp_special_branches_bit_exact() {
    // Silu(x) = x / (1 + vexp(−x)) over a dense sweep, including vexp's |n| > 126 and
    // |n| > 192 branches, subnormal results, ±inf and NaN.
    let Some(a) = avx2() else { return };
    let mut x: Vec<f32> = Vec::new();
    let mut v = -200.0f32;
    while v < 200.0 {
        x.push(v);
        v += 0.0173;
    }
    x.extend_from_slice(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0, 88.72, -88.72, 87.3, -103.9, 1e-40]);
    let len = x.len();
    check(&a, "Silu(sweep)", &Op::Silu, &[Input::f32(&[len], &x, 0)], DType::F32, &[len], len);
}

#[test]
fn attention_bit_exact() {
    let Some(a) = avx2() else { return };
    let s = ScalarBackend::new();
    let mut rng = Rng::new(7);
    // (H, Hkv, hd, n_ctx): GQA, MHA, hd with a tail (not a multiple of 32), a context that
    // is not a multiple of 32.
    for (h, hkv, hd, n_ctx) in
        [(4usize, 2usize, 32usize, 64usize), (2, 1, 64, 100), (4, 4, 128, 96), (3, 1, 40, 70), (8, 2, 16, 64)]
    {
        let stride = graph::exec::kv_stride(n_ctx);
        let (mut ks, mut vs) = (vec![f16::ZERO; hkv * hd * stride], vec![f16::ZERO; hkv * hd * stride]);
        let (mut ka, mut va) = (ks.clone(), vs.clone());
        let op = Op::Attention { layer: 0, n_head: h, n_head_kv: hkv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
        let mut pos0 = 0usize;
        // Prefill, single steps across the 32-position boundary, then batches.
        for (step, t) in [5usize, 1, 1, 17, 1, 8, 2, 3, 1].into_iter().enumerate() {
            if pos0 + t > n_ctx {
                break;
            }
            let kind = if step % 3 == 2 { Fill::Wide } else { Fill::Normal };
            let q = fill(&mut rng, t * h * hd, kind);
            let k = fill(&mut rng, t * hkv * hd, kind);
            let v = fill(&mut rng, t * hkv * hd, Fill::Normal);
            let pos: Vec<i32> = (pos0..pos0 + t).map(|p| p as i32).collect();
            let seqs = vec![0i32; t];
            let inputs = [
                Input::f32(&[t, h, hd], &q, step % 8),
                Input::f32(&[t, hkv, hd], &k, 1),
                Input::f32(&[t, hkv, hd], &v, 2),
                Input::i32(&[t], &pos),
                Input::i32(&[t], &seqs),
            ];
            let id = format!("Attention(H={h},Hkv={hkv},hd={hd},n_ctx={n_ctx},pos={pos0},t={t})");
            let mut kvs = KvLayer { k: &mut ks, v: &mut vs, n_ctx: stride, n_slots: 1 };
            let want = run_op_kv(&s, &id, &op, &inputs, DType::F32, &[t, h * hd], t * h * hd, Some(&mut kvs));
            let mut kva = KvLayer { k: &mut ka, v: &mut va, n_ctx: stride, n_slots: 1 };
            let got = run_op_kv(&a, &id, &op, &inputs, DType::F32, &[t, h * hd], t * h * hd, Some(&mut kva));
            assert_same(&id, &want, &got);
            assert!(ks.iter().zip(&ka).all(|(x, y)| x.to_bits() == y.to_bits()), "{id}: K caches differ");
            assert!(vs.iter().zip(&va).all(|(x, y)| x.to_bits() == y.to_bits()), "{id}: V caches differ");
            pos0 += t;
        }
    }
}

#[test]
fn plans_and_kernel_names() {
    let Some(a) = avx2() else { return };
    let f = |dt: DType, dims: &[usize]| TensorFact::new(dt, Shape::new(dims.iter().map(|&d| Dim::Fixed(d))));
    let name = |op: &Op, ins: &[&TensorFact]| a.plan(op, ins).map(|k| k.name().to_string());
    let (w, x) = (f(DType::I2S, &[8, 256]), f(DType::Q8Tok, &[1, 256]));
    assert!(name(&Op::MatMulI2S, &[&w, &x]).unwrap().starts_with("vec_dot_i2s_i8_"));
    let (xn, wn) = (f(DType::F32, &[1, 8]), f(DType::F32, &[8]));
    assert_eq!(name(&Op::RmsNorm { eps: 1e-5 }, &[&xn, &wn]).as_deref(), Some("rms_norm_f32_avx2"));
    let xf = f(DType::F32, &[1, 4, 8]);
    let pos = f(DType::I32, &[1]);
    let rope = Op::Rope { n_rot: 8, freq_base: 10000.0, style: graph::RopeStyle::Neox };
    assert_eq!(name(&rope, &[&xf, &pos]).as_deref(), Some("rope_neox_f32_avx2"));
    assert!(name(&rope, &[&xf, &f(DType::F32, &[1])]).is_none(), "positions must be i32");
    assert!(name(&Op::Embedding, &[&f(DType::F16, &[10, 8]), &pos]).is_none(), "Embedding stays on scalar");
    assert!(name(&Op::MatMulI2S, &[&f(DType::F16, &[8, 256]), &x]).is_none(), "wrong weight dtype");
    // Q4_0 heads, the Q8_K quantizer and the TQ products.
    let xf2 = f(DType::F32, &[1, 512]);
    for (wty, prefix) in [(DType::Q8_0, "vec_dot_q8_0_q8_0_"), (DType::Q4_0, "vec_dot_q4_0_q8_0_")] {
        let w = f(wty, &[8, 512]);
        assert!(name(&Op::MatMulQ8_0, &[&w, &xf2]).unwrap().starts_with(prefix), "{wty}");
    }
    assert!(name(&Op::MatMulQ8_0, &[&f(DType::TQ2_0, &[8, 512]), &xf2]).is_none());
    assert_eq!(name(&Op::QuantizeQ8K, &[&xf2]).as_deref(), Some("quantize_row_q8_k_avx2"));
    assert!(name(&Op::QuantizeQ8K, &[&f(DType::F32, &[1, 384])]).is_none(), "K % 256 != 0");
    assert!(name(&Op::QuantizeQ8K, &[&f(DType::F16, &[1, 512])]).is_none());
    let xk = f(DType::Q8K, &[1, 512]);
    for (wty, prefix) in
        [(DType::TQ2_0, "vec_dot_tq2_0_q8_k_"), (DType::TQ1_0, "vec_dot_tq1_0_q8_k_"), (DType::Q6K, "vec_dot_q6_k_q8_k_")]
    {
        let w = f(wty, &[8, 512]);
        assert!(name(&Op::MatMulTQ, &[&w, &xk]).unwrap().starts_with(prefix), "{wty}");
        assert!(name(&Op::MatMulTQ, &[&w, &xf2]).is_none(), "{wty} × f32");
    }
    assert!(name(&Op::MatMulTQ, &[&f(DType::Q4_0, &[8, 512]), &xk]).is_none());
    assert_eq!(a.name(), "avx2");
}

/// An executor of a shared model on `backends` (one sequence of `n_ctx` positions).
fn executor(name: &str, backends: Vec<Arc<dyn Backend>>, n_ctx: usize) -> graph::Executor {
    let file = open_model(name);
    let g = gguf::lower(&file).expect("lowering").graph;
    let w = Arc::new(gguf::lower::ModelWeights::new(file));
    graph::Executor::standalone(g, w, &backends, graph::ExecConfig::solo(n_ctx, n_ctx)).expect("executor")
}

fn scalar_only() -> Vec<Arc<dyn Backend>> {
    vec![Arc::new(ScalarBackend::new())]
}

fn avx2_first(a: Avx2Backend) -> Vec<Arc<dyn Backend>> {
    vec![Arc::new(a), Arc::new(ScalarBackend::new())]
}

// ---------------------------------------------------------------------------------------
// Whole model

#[test]
fn tiny_model_logits_bit_exact() {
    let Some(a) = avx2() else { return };
    let p1: [u32; 6] = [128000, 791, 6864, 315, 9822, 374];
    let mut exs = executor("tiny-i2_s.gguf", scalar_only(), 512);
    let mut exa = executor("tiny-i2_s.gguf", avx2_first(a), 512);
    println!("plan: {}", exa.program().plan_summary());
    // Batched: every position's logits (dotblas head), then two decode steps.
    let ls = exs.forward(&p1, 0, p1.len()).unwrap().to_vec();
    let la = exa.forward(&p1, 0, p1.len()).unwrap().to_vec();
    assert_same_f32("tiny batched", &ls, &la);
    for (i, tok) in [9822u32, 13].into_iter().enumerate() {
        let ls = exs.forward(&[tok], p1.len() + i, 1).unwrap().to_vec();
        let la = exa.forward(&[tok], p1.len() + i, 1).unwrap().to_vec();
        assert_same_f32(&format!("tiny batched + decode {i}"), &ls, &la);
    }
    // Token by token.
    exs.clear_kv();
    exa.clear_kv();
    for (pos, &tok) in p1.iter().enumerate() {
        let ls = exs.forward(&[tok], pos, 1).unwrap().to_vec();
        let la = exa.forward(&[tok], pos, 1).unwrap().to_vec();
        assert_same_f32(&format!("tiny token-by-token pos {pos}"), &ls, &la);
    }
    println!("tiny-i2_s p1: logits bit-identical to scalar, batched and token by token");
}

#[test]
fn other_shared_models_logits_bit_exact() {
    // The other shared models (arch bitnet and llama, SPM vocabularies, I2_S, TQ1_0 and
    // TQ2_0 weights, Q8_0 / Q4_0 heads): whatever runs on avx2 there must not change a bit.
    let Some(a) = avx2() else { return };
    for name in ["b1-spm-i2_s.gguf", "llama-tern-i2_s.gguf", "b158-spm-tq1_0.gguf", "b158-spm-tq2_0.gguf"] {
        let n_vocab = gguf::lower(&open_model(name)).expect("lowering").hparams.n_vocab;
        let toks: Vec<u32> = (0..7u32).map(|i| (1 + i * 7919) % n_vocab as u32).collect();
        let mut exs = executor(name, scalar_only(), 64);
        let mut exa = executor(name, avx2_first(a), 64);
        println!("{name}: {}", exa.program().plan_summary());
        let ls = exs.forward(&toks, 0, toks.len()).unwrap().to_vec();
        let la = exa.forward(&toks, 0, toks.len()).unwrap().to_vec();
        assert_same_f32(&format!("{name} batched"), &ls, &la);
        exs.clear_kv();
        exa.clear_kv();
        for (pos, &tok) in toks.iter().enumerate() {
            let ls = exs.forward(&[tok], pos, 1).unwrap().to_vec();
            let la = exa.forward(&[tok], pos, 1).unwrap().to_vec();
            assert_same_f32(&format!("{name} token-by-token pos {pos}"), &ls, &la);
        }
    }
}

#[test]
fn tq_models_logits_bit_exact() {
    // TQ2_0 / TQ1_0 weights: QuantizeQ8K and MatMulTQ now run on avx2 (not a fallback),
    // and the logits must not change a bit, batched and token by token.
    let Some(a) = avx2() else { return };
    let toks: [u32; 6] = [1, 450, 7483, 310, 3444, 338];
    for name in ["b158-spm-tq2_0.gguf", "b158-spm-tq1_0.gguf"] {
        let mut exs = executor(name, scalar_only(), 64);
        let mut exa = executor(name, avx2_first(a), 64);
        let plan = exa.program().plan_summary();
        println!("{name}: {plan}");
        let fallback = plan.split("scalar: ").nth(1).unwrap_or("");
        for op in ["MatMulTQ", "QuantizeQ8K"] {
            assert!(!fallback.contains(op), "{name}: {op} falls back to scalar: {plan}");
        }
        let ls = exs.forward(&toks, 0, toks.len()).unwrap().to_vec();
        let la = exa.forward(&toks, 0, toks.len()).unwrap().to_vec();
        assert_same_f32(&format!("{name} batched"), &ls, &la);
        exs.clear_kv();
        exa.clear_kv();
        for (pos, &tok) in toks.iter().enumerate() {
            let ls = exs.forward(&[tok], pos, 1).unwrap().to_vec();
            let la = exa.forward(&[tok], pos, 1).unwrap().to_vec();
            assert_same_f32(&format!("{name} token-by-token pos {pos}"), &ls, &la);
        }
        println!("{name}: logits bit-identical to scalar, batched and token by token");
    }
}

// The generic per-op suite of the AVX2 backend without its AVX-VNNI kernels (the registry's
// suite in `tests/backends.rs` runs it with them, where the CPU has them).
ops_tests::op_suite!(
    avx2_no_vnni,
    backend_avx2::Avx2Backend::new().map(|b| Arc::new(b.without_vnni()) as Arc<dyn Backend>).into_iter().collect::<Vec<_>>()
);
