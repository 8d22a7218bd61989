//! Criterion benches of the hot kernels at 2B-4T shapes, scalar and AVX2 side by side.
//! Groups are `{op}/{shape}`; throughput is bytes of weights (GEMV, LM head, attention KV)
//! or multiply-accumulates (GEMM). Run: `cargo bench -p benches`.

use std::time::Duration;

use benches::{attention, f16_matmul, i2s, Call};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use graph::Backend;

/// The backends side by side, with their labels: scalar, AVX2 and, where the CPU has
/// AVX-VNNI, AVX2 without its VNNI I2_S kernels.
fn backends() -> Vec<(&'static str, Box<dyn Backend>)> {
    let mut v: Vec<(&'static str, Box<dyn Backend>)> = vec![("scalar", Box::new(backend_scalar::ScalarBackend::new()))];
    if let Some(b) = backend_avx2::Avx2Backend::new() {
        if b.uses_vnni() {
            v.push(("avx2-no-vnni", Box::new(b.without_vnni())));
        }
        v.push(("avx2", Box::new(b)));
    }
    v
}

fn bench_call(c: &mut Criterion, group: &str, make: impl FnOnce() -> Call, by_macs: bool) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let mut call = make();
    g.throughput(if by_macs { Throughput::Elements(call.macs) } else { Throughput::Bytes(call.weight_bytes) });
    let mut out = vec![0f32; call.out_len()];
    for (label, b) in backends() {
        g.bench_function(label, |bencher| bencher.iter(|| call.run(b.as_ref(), &mut out)));
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    bench_call(c, "vec_dot_i2s_i8/2560x2560", || i2s(2560, 2560, 1), false);
    bench_call(c, "vec_dot_i2s_i8/6912x2560", || i2s(6912, 2560, 1), false);
    bench_call(c, "vec_dot_i2s_i8/2560x6912", || i2s(2560, 6912, 1), false);
    bench_call(c, "gemm_i2s_i8/6912x2560x128", || i2s(6912, 2560, 128), true);
    bench_call(c, "vec_dot_f16/128256x2560", || f16_matmul(128256, 2560, 1), false);
    bench_call(c, "attention/ctx1024", || attention(1024), false);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
