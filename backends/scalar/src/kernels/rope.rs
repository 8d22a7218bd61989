//! Rotary position embedding (ggml `rope_f32`, no YaRN, freq_scale 1), ../shared/docs/format.md §4.2.

use graph::RopeStyle;

/// Rotates one token's heads in place: `x` is `[n_head, head_dim]`, contiguous.
///
/// Angles (all f32, ggml's iterative form, NOT `base^(−2i/n_rot)` evaluated per pair):
///
/// ```text
/// theta_scale = powf(freq_base, −2.0f32 / n_rot)          # platform libm powf
/// θ_0 = f32(pos);   θ_{i+1} = f32(θ_i · theta_scale)       # i = pair index, 0 .. n_rot/2
/// c_i = cosf(θ_i);  s_i = sinf(θ_i)                         # platform libm
/// ```
///
/// Pair `i` of each head is `(a, b) = (i, i + n_rot/2)` for [`RopeStyle::Neox`] and
/// `(2i, 2i+1)` for [`RopeStyle::Norm`]. Each pair is rotated with the fused form that
/// the reference binary computes (its compiler contracted `x0·c − x1·s` into one FMA):
///
/// ```text
/// out[a] = fma(x0, c_i, −f32(x1·s_i))
/// out[b] = fma(x0, s_i,  f32(x1·c_i))
/// ```
///
/// Dimensions `n_rot .. head_dim` are left unchanged.
///
/// # Panics
/// If `x.len() != n_head·head_dim`, `n_rot > head_dim` or `n_rot` is odd.
pub fn rope_f32(x: &mut [f32], n_head: usize, head_dim: usize, n_rot: usize, pos: i32, freq_base: f32, style: RopeStyle) {
    assert_eq!(x.len(), n_head * head_dim, "rope_f32: x must be [n_head, head_dim]");
    assert!(n_rot <= head_dim && n_rot.is_multiple_of(2), "rope_f32: n_rot = {n_rot} with head_dim = {head_dim}");
    let half = n_rot / 2;
    let theta_scale: f32 = freq_base.powf(-2.0f32 / n_rot as f32);
    let mut cos_sin = Vec::with_capacity(half);
    let mut theta = pos as f32;
    for _ in 0..half {
        cos_sin.push((theta.cos(), theta.sin()));
        theta *= theta_scale;
    }
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(c, s)) in cos_sin.iter().enumerate() {
            let (a, b) = match style {
                RopeStyle::Neox => (i, i + half),
                RopeStyle::Norm => (2 * i, 2 * i + 1),
            };
            let (x0, x1) = (head[a], head[b]);
            let x1s: f32 = x1 * s;
            let x1c: f32 = x1 * c;
            head[a] = x0.mul_add(c, -x1s);
            head[b] = x0.mul_add(s, x1c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::rng::Rng;

    fn random_heads(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.f32(-2.0, 2.0)).collect()
    }

    #[test]
    fn identity_at_position_zero() {
        for style in [RopeStyle::Neox, RopeStyle::Norm] {
            let x = random_heads(4 * 64, 3);
            let mut y = x.clone();
            rope_f32(&mut y, 4, 64, 64, 0, 500000.0, style);
            // θ = 0: c = 1, s = 0, so out = x0 ± 0 (equal values; a zero may change sign).
            assert_eq!(x, y);
        }
    }

    #[test]
    fn matches_f64_rotation() {
        let (n_head, hd, n_rot) = (3, 64, 48);
        for style in [RopeStyle::Neox, RopeStyle::Norm] {
            let x = random_heads(n_head * hd, 11);
            let mut y = x.clone();
            let pos = 17;
            rope_f32(&mut y, n_head, hd, n_rot, pos, 10000.0, style);
            for h in 0..n_head {
                let (xh, yh) = (&x[h * hd..(h + 1) * hd], &y[h * hd..(h + 1) * hd]);
                for i in 0..n_rot / 2 {
                    let (a, b) = match style {
                        RopeStyle::Neox => (i, i + n_rot / 2),
                        RopeStyle::Norm => (2 * i, 2 * i + 1),
                    };
                    let th = f64::from(pos) * 10000f64.powf(-2.0 * i as f64 / n_rot as f64);
                    let (x0, x1) = (f64::from(xh[a]), f64::from(xh[b]));
                    let (ra, rb) = (x0 * th.cos() - x1 * th.sin(), x0 * th.sin() + x1 * th.cos());
                    assert!((f64::from(yh[a]) - ra).abs() < 1e-5, "{style:?} h{h} i{i}");
                    assert!((f64::from(yh[b]) - rb).abs() < 1e-5, "{style:?} h{h} i{i}");
                }
                // Dimensions past n_rot are copied.
                assert_eq!(&xh[n_rot..], &yh[n_rot..]);
            }
        }
    }
}
