//! RMSNorm (ggml `rms_norm` followed by the separate weight `mul`), ../shared/docs/format.md §4.2.

/// RMSNorm of one row followed by the elementwise weight multiply:
/// `out[i] = f32(f32(x[i]·r)·w[i])`.
///
/// Arithmetic, exactly as ggml's `ggml_compute_forward_rms_norm_f32` plus the `MUL` node:
///
/// ```text
/// acc  = 0.0 (f64);  for i in index order: acc += f64(f32(x[i]·x[i]))   # square rounded to f32
/// mean = f32(acc / n)                                                    # f64 division, then f32
/// r    = 1.0f32 / sqrtf(mean + eps)                                      # f32 add, sqrt, division
/// y[i] = f32(x[i]·r);  out[i] = f32(y[i]·w[i])                           # two separate multiplies
/// ```
///
/// `n = x.len()`; an empty row gives no output (its mean would be NaN). The norm weights
/// are used verbatim.
///
/// # Panics
/// If `w` or `out` do not have the length of `x`.
pub fn rms_norm_f32(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(w.len(), x.len(), "rms_norm_f32: weight length");
    assert_eq!(out.len(), x.len(), "rms_norm_f32: output length");
    let mut acc = 0.0f64;
    for &v in x {
        let sq: f32 = v * v;
        acc += f64::from(sq);
    }
    let mean = (acc / x.len() as f64) as f32;
    let r: f32 = 1.0f32 / (mean + eps).sqrt();
    for ((o, &v), &wi) in out.iter_mut().zip(x).zip(w) {
        let y: f32 = v * r;
        *o = y * wi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::rng::Rng;

    #[test]
    fn unit_rms_with_unit_weight() {
        let mut rng = Rng::new(7);
        let x: Vec<f32> = (0..256).map(|_| rng.f32(-3.0, 3.0)).collect();
        let w = vec![1.0f32; 256];
        let mut out = vec![0.0f32; 256];
        rms_norm_f32(&x, &w, 1e-5, &mut out);
        let ms: f64 = out.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / 256.0;
        assert!((ms - 1.0).abs() < 1e-5, "mean square {ms}");
    }

    #[test]
    fn weight_is_a_separate_multiply() {
        // With w = 3 the output must be f32(f32(x·r)·3), not f32(x·f32(r·3)).
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let w = [3.0f32; 5];
        let mut out = [0.0f32; 5];
        rms_norm_f32(&x, &w, 1e-5, &mut out);
        let mean = ((1.0f64 + 4.0 + 9.0 + 16.0 + 25.0) / 5.0) as f32;
        let r = 1.0f32 / (mean + 1e-5f32).sqrt();
        for i in 0..5 {
            assert_eq!(out[i].to_bits(), ((x[i] * r) * 3.0f32).to_bits());
        }
    }
}
