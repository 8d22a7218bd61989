//! The per-op suite on the scalar backend itself (it must agree with itself, guard its
//! outputs, and cover every op), plus scalar against plain f64 formulas.

ops_tests::op_suite!(scalar_against_itself, vec![runtime::backends::reference()]);

use backend_scalar::ScalarBackend;
use graph::backend::q8tok_row_bytes;
use graph::{Op, OpKind, RopeStyle};
use half::f16;
use ops_tests::cases::{case, uncovered, Rng, Tensor};

/// Every op kind with a kernel has a case generator (a kind without one does not compile:
/// `cases::case` matches every kind), and the generator gives ops of that kind; kinds
/// without a kernel give none.
#[test]
fn every_op_kind_has_a_case() {
    assert_eq!(uncovered(case), Vec::<OpKind>::new());
    for &k in OpKind::ALL {
        assert_eq!(case(k, &mut Rng::new(1)).is_some(), k.has_kernel(), "{}", k.name());
    }
}

/// The coverage check itself catches a kind without a case: a generator that forgets
/// MatMulTQ (or answers it with another op) is reported.
#[test]
fn the_coverage_check_catches_a_missing_case() {
    let forgetful = |k: OpKind, rng: &mut Rng| if k == OpKind::MatMulTQ { None } else { case(k, rng) };
    assert_eq!(uncovered(forgetful), vec![OpKind::MatMulTQ]);
    let confused = |k: OpKind, rng: &mut Rng| case(if k == OpKind::Silu { OpKind::Relu } else { k }, rng);
    assert_eq!(uncovered(confused), vec![OpKind::Silu]);
}

/// Runs `n` cases of `kind` on scalar and hands (case, output) to `check`.
fn each(kind: OpKind, n: u64, mut check: impl FnMut(&ops_tests::cases::OpCase, &Tensor)) {
    for seed in 1..=n {
        let mut rng = Rng::new(seed * 0x9E37_79B9);
        let c = case(kind, &mut rng).expect("a kind with a kernel");
        let out = c.run(&ScalarBackend::new()).unwrap().unwrap_or_else(|e| panic!("{}: {e}", c.id)).out;
        check(&c, &out);
    }
}

fn close(id: &str, got: f32, want: f64, abs: f64, rel: f64) {
    let d = (f64::from(got) - want).abs();
    assert!(d <= abs + rel * want.abs(), "{id}: {got} vs f64 {want} (|Δ| {d:e})");
}

#[test]
fn rms_norm_vs_f64() {
    each(OpKind::RmsNorm, 60, |c, out| {
        let (x, w) = (&c.inputs[0].f, &c.inputs[1].f);
        let Op::RmsNorm { eps } = c.op else { unreachable!() };
        let d = w.len();
        for (r, row) in x.chunks(d).enumerate() {
            let ms: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            for i in 0..d {
                close(&c.id, out.f[r * d + i], f64::from(row[i]) * inv * f64::from(w[i]), 1e-6, 1e-5);
            }
        }
    });
}

#[test]
fn quantize_i8_properties() {
    each(OpKind::QuantizeI8, 60, |c, out| {
        let k = c.inputs[0].dims[1];
        for (x, row) in c.inputs[0].f.chunks(k).zip(out.b.chunks(q8tok_row_bytes(k))) {
            let (q, s, sum) = backend_scalar::q8tok_row(row, k);
            let m = x.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs())).max(1e-5);
            assert_eq!(s, (127.0 / m) as f32, "{}: scale", c.id);
            assert_eq!(sum, q.iter().map(|&v| i32::from(v)).sum::<i32>(), "{}: sum", c.id);
            for (&v, &qi) in x.iter().zip(q) {
                let exact = f64::from(v * s);
                assert!((f64::from(qi) - exact).abs() <= 0.5, "{}: {v} → {qi}", c.id);
                if (exact - exact.trunc()).abs() == 0.5 {
                    assert_eq!(qi % 2, 0, "{}: tie {exact} must round to even", c.id);
                }
            }
        }
    });
}

#[test]
fn matmul_i2s_vs_f64() {
    each(OpKind::MatMulI2S, 40, |c, out| {
        if c.id.contains("extreme") {
            return; // i16 lane wrap: covered by the kernel's own tests
        }
        let (m, k) = (c.inputs[0].dims[0], c.inputs[0].dims[1]);
        let w = graph::quant::i2s_scale(&c.inputs[0].b, m * k).unwrap();
        for (t, row) in c.inputs[1].b.chunks(q8tok_row_bytes(k)).enumerate() {
            let (q, s, _) = backend_scalar::q8tok_row(row, k);
            for r in 0..m {
                let dot: i64 = (0..k)
                    .map(|i| {
                        i64::from(graph::quant::ternary(graph::quant::i2s_code(&c.inputs[0].b, r * k + i))) * i64::from(q[i])
                    })
                    .sum();
                close(&c.id, out.f[t * m + r], dot as f64 * f64::from(w) / f64::from(s), 1e-6, 1e-6);
            }
        }
    });
}

#[test]
fn matmul_f16_vs_f64() {
    each(OpKind::MatMulF16, 40, |c, out| {
        let (m, k, t) = (c.inputs[0].dims[0], c.inputs[0].dims[1], c.inputs[1].dims[0]);
        let w: Vec<f32> = c.inputs[0].b.chunks(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        let seqs = &c.inputs[2].i;
        for tt in 0..t {
            // A sequence's only row is rounded to f16 (the one-column form).
            let alone = seqs.iter().filter(|&&s| s == seqs[tt]).count() == 1;
            let x: Vec<f64> = c.inputs[1].f[tt * k..(tt + 1) * k]
                .iter()
                .map(|&v| if alone { f64::from(f16::from_f32(v).to_f32()) } else { f64::from(v) })
                .collect();
            for r in 0..m {
                let want: f64 = (0..k).map(|i| f64::from(w[r * k + i]) * x[i]).sum();
                let scale: f64 = (0..k).map(|i| (f64::from(w[r * k + i]) * x[i]).abs()).sum();
                close(&c.id, out.f[tt * m + r], want, 1e-6 * scale + 1e-30, 0.0);
            }
        }
    });
}

#[test]
fn matmul_q8_0_vs_f64() {
    each(OpKind::MatMulQ8_0, 40, |c, out| {
        let (m, k, t) = (c.inputs[0].dims[0], c.inputs[0].dims[1], c.inputs[1].dims[0]);
        let w = gguf::types::decode_to_f32(c.inputs[0].dtype, &c.inputs[0].b, m * k);
        for tt in 0..t {
            let x = &c.inputs[1].f[tt * k..(tt + 1) * k];
            if x.chunks(32).any(|b| b.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0 < 6.1e-5) {
                continue; // a block scale below f16's normal range: bitnet.cpp flushes it too (§4.6.2)
            }
            for r in 0..m {
                let want: f64 = (0..k).map(|i| f64::from(w[r * k + i]) * f64::from(x[i])).sum();
                let scale: f64 = (0..k).map(|i| (f64::from(w[r * k + i]) * f64::from(x[i])).abs()).sum();
                // activations are quantized to 8 bits per 32-block: ≤ 1/254 relative error each
                close(&c.id, out.f[tt * m + r], want, scale / 100.0 + 1e-30, 0.0);
            }
        }
    });
}

#[test]
fn rope_vs_f64() {
    each(OpKind::Rope, 60, |c, out| {
        let Op::Rope { n_rot, freq_base, style } = c.op else { unreachable!() };
        let (h, hd) = (c.inputs[0].dims[1], c.inputs[0].dims[2]);
        for (t, &p) in c.inputs[1].i.iter().enumerate() {
            for hh in 0..h {
                let x = &c.inputs[0].f[(t * h + hh) * hd..(t * h + hh + 1) * hd];
                let o = &out.f[(t * h + hh) * hd..(t * h + hh + 1) * hd];
                let mag = x.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
                for i in 0..n_rot / 2 {
                    let theta = f64::from(p) * f64::from(freq_base).powf(-2.0 * i as f64 / n_rot as f64);
                    let (a, b) = match style {
                        RopeStyle::Neox => (i, i + n_rot / 2),
                        RopeStyle::Norm => (2 * i, 2 * i + 1),
                    };
                    let (x0, x1) = (f64::from(x[a]), f64::from(x[b]));
                    // f32 iterative angles drift with the position: allow 2e-6·pos radians
                    let tol = mag * (1e-5 + 2e-6 * f64::from(p));
                    close(&c.id, o[a], x0 * theta.cos() - x1 * theta.sin(), tol, 0.0);
                    close(&c.id, o[b], x0 * theta.sin() + x1 * theta.cos(), tol, 0.0);
                }
                for i in n_rot..hd {
                    assert_eq!(o[i], x[i], "{}: unrotated dim {i}", c.id);
                }
            }
        }
    });
}

#[test]
fn attention_vs_f64() {
    each(OpKind::Attention, 40, |c, out| {
        let Op::Attention { n_head, n_head_kv, head_dim: hd, scale, .. } = c.op else { unreachable!() };
        let (q, kn, vn, pos, seqs) = (&c.inputs[0].f, &c.inputs[1].f, &c.inputs[2].f, &c.inputs[3].i, &c.inputs[4].i);
        let (k0, v0, stride, _) = c.kv.as_ref().unwrap();
        let slot_len = n_head_kv * stride * hd;
        let r16 = |v: f32| f64::from(f16::from_f32(v).to_f32());
        let t = pos.len();
        // The token of sequence `s` at position `j` in this step, if any.
        let here = |s: i32, j: usize| (0..t).find(|&i| seqs[i] == s && pos[i] as usize == j);
        let key = |s: i32, g: usize, j: usize, d: usize| -> f64 {
            match here(s, j) {
                Some(i) => r16(kn[(i * n_head_kv + g) * hd + d]),
                None => f64::from(k0[s as usize * slot_len + (g * stride + j) * hd + d].to_f32()),
            }
        };
        let val = |s: i32, g: usize, j: usize, d: usize| -> f64 {
            match here(s, j) {
                Some(i) => r16(vn[(i * n_head_kv + g) * hd + d]),
                None => f64::from(v0[s as usize * slot_len + (g * hd + d) * stride + j].to_f32()),
            }
        };
        for i in 0..t {
            let (p, sq) = (pos[i] as usize, seqs[i]);
            for hq in 0..n_head {
                let g = hq / (n_head / n_head_kv);
                let s: Vec<f64> = (0..=p)
                    .map(|j| {
                        (0..hd).map(|d| key(sq, g, j, d) * r16(q[(i * n_head + hq) * hd + d])).sum::<f64>() * f64::from(scale)
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let want: f64 = (0..=p).map(|j| e[j] / z * val(sq, g, j, d)).sum();
                    // P is rounded to f16 for a sequence's only token (rel 2^-11 per weight)
                    close(&c.id, out.f[i * n_head * hd + hq * hd + d], want, 2e-3, 0.0);
                }
            }
        }
    });
}

#[test]
fn elementwise_vs_formula() {
    for op in [OpKind::Add, OpKind::Mul, OpKind::Relu, OpKind::Sqr, OpKind::Silu] {
        each(op, 30, |c, out| {
            for (i, &o) in out.f.iter().enumerate() {
                let x = c.inputs[0].f[i];
                match op {
                    OpKind::Add => assert_eq!(o, x + c.inputs[1].f[i]),
                    OpKind::Mul => assert_eq!(o, x * c.inputs[1].f[i]),
                    OpKind::Relu => assert_eq!(o, x.max(0.0)),
                    OpKind::Sqr => assert_eq!(o, x * x),
                    _ => close(&c.id, o, f64::from(x) / (1.0 + (-f64::from(x)).exp()), 1e-30, 1e-6),
                }
            }
        });
    }
}

#[test]
fn data_movement_ops_copy_exactly() {
    each(OpKind::Embedding, 40, |c, out| {
        let (v, d) = (c.inputs[0].dims[0], c.inputs[0].dims[1]);
        let all = if c.inputs[0].dtype == graph::DType::F32 {
            c.inputs[0].f.clone()
        } else {
            gguf::types::decode_to_f32(c.inputs[0].dtype, &c.inputs[0].b, v * d)
        };
        for (t, &id) in c.inputs[1].i.iter().enumerate() {
            assert_eq!(&out.f[t * d..(t + 1) * d], &all[id as usize * d..(id as usize + 1) * d], "{}", c.id);
        }
    });
    each(OpKind::SelectOutputs, 20, |c, out| {
        let (x, rows) = (&c.inputs[0], &c.inputs[1].i);
        let t = x.dims[0];
        for (o, &r) in rows.iter().enumerate() {
            let r = r as usize;
            match x.dtype {
                graph::DType::F32 => {
                    let d = x.f.len() / t;
                    assert_eq!(out.f[o * d..(o + 1) * d], x.f[r * d..(r + 1) * d], "{}", c.id)
                }
                graph::DType::I32 => assert_eq!(out.i[o], x.i[r], "{}", c.id),
                _ => {
                    let d = x.b.len() / t;
                    assert_eq!(out.b[o * d..(o + 1) * d], x.b[r * d..(r + 1) * d], "{}", c.id)
                }
            }
        }
    });
}

#[test]
fn matmul_tq_vs_f64() {
    each(OpKind::MatMulTQ, 40, |c, out| {
        let (m, k, t) = (c.inputs[0].dims[0], c.inputs[0].dims[1], c.inputs[1].dims[0]);
        let w = gguf::types::decode_to_f32(c.inputs[0].dtype, &c.inputs[0].b, m * k);
        let row = k / 256 * 260;
        for tt in 0..t {
            let a = &c.inputs[1].b[tt * row..(tt + 1) * row];
            // dequantized Q8_K activation: d · q per block
            let x: Vec<f64> = a
                .chunks(260)
                .flat_map(|b| {
                    let d = f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    b[4..].iter().map(move |&q| d * f64::from(q as i8))
                })
                .collect();
            for r in 0..m {
                let want: f64 = (0..k).map(|i| f64::from(w[r * k + i]) * x[i]).sum();
                let scale: f64 = (0..k).map(|i| (f64::from(w[r * k + i]) * x[i]).abs()).sum();
                close(&c.id, out.f[tt * m + r], want, 1e-6 * scale + 1e-30, 0.0);
            }
        }
    });
}

#[test]
fn quantize_q8k_properties() {
    each(OpKind::QuantizeQ8K, 40, |c, out| {
        for (x, b) in c.inputs[0].f.chunks(256).zip(out.b.chunks(260)) {
            let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            if amax == 0.0 {
                assert!(d == 0.0 && b[4..].iter().all(|&q| q == 0), "{}: zero block", c.id);
                continue;
            }
            for (&v, &q) in x.iter().zip(&b[4..]) {
                let q = f64::from(q as i8);
                assert!((q * f64::from(d) - f64::from(v)).abs() <= 0.5001 * f64::from(d).abs(), "{}: {v} → {q}·{d}", c.id);
            }
        }
    });
}
