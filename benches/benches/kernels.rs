//! Criterion benches of the hot kernels at 2B-4T shapes, every backend side by side.
//! Groups are `{op}/{shape}`; throughput is bytes of weights (GEMV, LM head, attention KV)
//! or multiply-accumulates (GEMM, long-context attention). Run: `cargo bench -p benches`
//! (one group: `cargo bench -p benches -- attention/`).

use std::time::Duration;

use benches::{attention, backends, f16_matmul, i2s, Call};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_call(c: &mut Criterion, group: &str, make: impl FnOnce() -> Call, by_macs: bool) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let mut call = make();
    g.throughput(if by_macs { Throughput::Elements(call.macs) } else { Throughput::Bytes(call.weight_bytes) });
    let mut out = vec![0f32; call.out_len()];
    for (label, b) in backends() {
        let Some(kernel) = call.kernel(b.as_ref()) else { continue };
        g.bench_function(label, |bencher| bencher.iter(|| call.run(&kernel, &mut out)));
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    bench_call(c, "vec_dot_i2s_i8/2560x2560", || i2s(2560, 2560, 1), false);
    bench_call(c, "vec_dot_i2s_i8/6912x2560", || i2s(6912, 2560, 1), false);
    bench_call(c, "vec_dot_i2s_i8/2560x6912", || i2s(2560, 6912, 1), false);
    bench_call(c, "gemm_i2s_i8/6912x2560x128", || i2s(6912, 2560, 128), true);
    bench_call(c, "vec_dot_f16/128256x2560", || f16_matmul(128256, 2560, 1, true), false);
    bench_call(c, "vec_dot_f16/128256x2560x8seq", || f16_matmul(128256, 2560, 8, true), false);
    bench_call(c, "attention/ctx1024", || attention(1024, 1), false);
    // Long context (issue 16): one decoded query and a 512-token prompt block whose last
    // position is the 512th / 2048th / 4096th, every backend side by side.
    for n in [512, 2048, 4096] {
        bench_call(c, &format!("attention/ctx{n}x1"), || attention(n - 1, 1), true);
        bench_call(c, &format!("attention/ctx{n}x512"), || attention(n - 512, 512), true);
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
