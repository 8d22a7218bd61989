//! Runs one kernel of one backend `REPS` times and nothing else after building its inputs:
//! the workload `benches/instr_count.py` counts instructions of under qemu (two runs with
//! different `REPS`; the difference is the kernel's own instructions).
//!
//! Run: `cargo run --release -p benches --example kernel_loop -- BACKEND CASE REPS`;
//! cases (rows × k at a size that keeps emulation quick): `i2s_gemv` (256 × 2560, one
//! token), `i2s_gemm4` (256 × 2560, four tokens of one sequence), `f16_gemv` (256 × 2560,
//! one row). Prints the weight bytes the case reads per call.
use benches::{backends, f16_matmul, i2s, Call};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: kernel_loop BACKEND i2s_gemv|i2s_gemm4|f16_gemv REPS";
    let [backend, case, reps] = &args[..] else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let Ok(reps) = reps.parse::<usize>() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mut call: Call = match case.as_str() {
        "i2s_gemv" => i2s(256, 2560, 1),
        "i2s_gemm4" => i2s(256, 2560, 4),
        "f16_gemv" => f16_matmul(256, 2560, 1, true),
        _ => {
            eprintln!("kernel_loop: unknown case `{case}`; {usage}");
            std::process::exit(2);
        }
    };
    let Some((_, b)) = backends().into_iter().find(|(l, _)| l == backend) else {
        let names: Vec<String> = backends().into_iter().map(|(l, _)| l).collect();
        eprintln!("kernel_loop: backend `{backend}` does not run here (here: {})", names.join(", "));
        std::process::exit(2);
    };
    let Some(kernel) = call.kernel(b.as_ref()) else {
        eprintln!("kernel_loop: {backend} plans no kernel for {case}");
        std::process::exit(2);
    };
    let mut out = vec![0f32; call.out_len()];
    for _ in 0..reps {
        call.run(&kernel, &mut out);
    }
    println!("{} {} weight_bytes {} checksum {}", kernel.name(), case, call.weight_bytes, out.iter().sum::<f32>());
}
