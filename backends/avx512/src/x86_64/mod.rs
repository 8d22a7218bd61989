//! The AVX-512 and AMX kernels: the only `unsafe` code of this crate.
//!
//! ## Layout of every kernel
//! As in the AVX2 backend:
//! - a **safe wrapper**, a method on [`Isa`] (or [`Amx`]), checks every length and offset
//!   with `assert!` (the backend's eval has already turned bad shapes into errors, so an
//!   assert firing is a bug in this crate), then calls
//! - the **entry point**, an `unsafe fn` with `#[target_feature(enable = "…,avx512f,
//!   avx512bw,avx512vl,avx512vnni")]` and nothing else in it, which calls
//! - the **body**, an `#[inline(always)] unsafe fn` without `#[target_feature]`, compiled
//!   with the entry point's features once inlined.
//!
//! Owning an [`Isa`] proves the CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI; owning
//! an [`Amx`] proves in addition that the CPU has AMX-TILE and AMX-INT8 and that the
//! kernel granted this process the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`). The AMX
//! instructions are reached through `asm!` (their intrinsics and target features are not
//! stable Rust); tile registers are declared as clobbers of every block that uses them.
//! All vector loads and stores are unaligned: weights come straight from the weight arena.
//!
//! Numerics: every kernel reproduces its scalar twin in `backend-scalar` (`kernels/*.rs`)
//! bit for bit; each file says how.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub(crate) mod amx;
pub(crate) mod f16;
pub(crate) mod i2s;
pub(crate) mod norm;
pub(crate) mod q8_0;
pub(crate) mod quant;

/// Proof that the running CPU supports AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI: the
/// only way to call a kernel. Built only by [`Isa::detect`] (checked once, cached).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Isa {
    _private: (),
}

impl Isa {
    /// The token, if this CPU has every feature listed on [`Isa`].
    pub(crate) fn detect() -> Option<Isa> {
        crate::cpu_has_avx512().then_some(Isa { _private: () })
    }
}

/// Proof that, on top of [`Isa`], the CPU has AMX-TILE and AMX-INT8 and this process may use
/// the tile registers. Built only by [`Amx::detect`] (checked and requested once, cached).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Amx {
    pub(crate) isa: Isa,
}

impl Amx {
    /// The token, if the CPU has AMX-INT8 and the OS grants the tile state (Linux only).
    pub(crate) fn detect() -> Option<Amx> {
        let isa = Isa::detect()?;
        crate::amx_permitted().then_some(Amx { isa })
    }
}

impl Isa {
    /// `out[n][r] = c[r][n]` for a 32 × 32 block of i32 (the AMX results, rows × tokens, as
    /// tokens × rows).
    pub(crate) fn transpose32(self, c: &[[i32; 32]; 32]) -> [[i32; 32]; 32] {
        let mut out = [[0i32; 32]; 32];
        // SAFETY: `self` proves AVX-512 F; both arrays are 32 × 32 i32, and the entry reads
        // and writes 16 × 16 quarters of them (64 bytes per row, rows 128 bytes apart).
        unsafe { transpose32_entry(c.as_ptr().cast(), out.as_mut_ptr().cast()) };
        out
    }
}

/// Entry point of [`Isa::transpose32`].
///
/// # Safety
/// The CPU must support AVX-512 F; `src` must be readable and `dst` writable for 32 × 32
/// i32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn transpose32_entry(src: *const i32, dst: *mut i32) {
    use std::arch::x86_64::*;
    // SAFETY: quarter (qr, qc) reads rows `16qr + i` at column `16qc` (16 i32) and writes
    // rows `16qc + i` at column `16qr`: inside the two 32 × 32 arrays.
    unsafe {
        for qr in 0..2 {
            for qc in 0..2 {
                let mut rows = [_mm512_setzero_si512(); 16];
                for (i, r) in rows.iter_mut().enumerate() {
                    *r = _mm512_loadu_si512(src.add((16 * qr + i) * 32 + 16 * qc).cast());
                }
                for (i, c) in transpose16(rows).iter().enumerate() {
                    _mm512_storeu_si512(dst.add((16 * qc + i) * 32 + 16 * qr).cast(), *c);
                }
            }
        }
    }
}

/// Transposes a 16 × 16 matrix of 32-bit elements held in registers (row `i` in `a[i]`):
/// 32-bit and 64-bit unpacks within 128-bit lanes, then two rounds of 128-bit lane
/// shuffles.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[inline(always)]
pub(crate) unsafe fn transpose16(a: [std::arch::x86_64::__m512i; 16]) -> [std::arch::x86_64::__m512i; 16] {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees AVX-512 F; register-only operations.
    unsafe {
        // t[2k], t[2k+1]: lane L holds rows 2k, 2k+1 interleaved at columns 4L, 4L+1 / 4L+2, 4L+3.
        let mut t = [_mm512_setzero_si512(); 16];
        for k in 0..8 {
            t[2 * k] = _mm512_unpacklo_epi32(a[2 * k], a[2 * k + 1]);
            t[2 * k + 1] = _mm512_unpackhi_epi32(a[2 * k], a[2 * k + 1]);
        }
        // u[4k + c]: lane L holds column 4L + c of rows 4k .. 4k+4.
        let mut u = [_mm512_setzero_si512(); 16];
        for k in 0..4 {
            u[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
            u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
            u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
            u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
        }
        // Row 4L + c of the result = lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
        let mut out = [_mm512_setzero_si512(); 16];
        for c in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0b10_00_10_00>(u[c], u[4 + c]);
            let v1 = _mm512_shuffle_i32x4::<0b11_01_11_01>(u[c], u[4 + c]);
            let v2 = _mm512_shuffle_i32x4::<0b10_00_10_00>(u[8 + c], u[12 + c]);
            let v3 = _mm512_shuffle_i32x4::<0b11_01_11_01>(u[8 + c], u[12 + c]);
            out[c] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v0, v2);
            out[8 + c] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v0, v2);
            out[4 + c] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v1, v3);
            out[12 + c] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v1, v3);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose32_transposes() {
        let Some(isa) = Isa::detect() else {
            println!("skipped: no AVX-512 F/BW/VL/VNNI on this CPU");
            return;
        };
        let mut c = [[0i32; 32]; 32];
        for (r, row) in c.iter_mut().enumerate() {
            for (n, v) in row.iter_mut().enumerate() {
                *v = (1000 * r + n) as i32;
            }
        }
        let t = isa.transpose32(&c);
        for (n, row) in t.iter().enumerate() {
            for (r, &v) in row.iter().enumerate() {
                assert_eq!(v, (1000 * r + n) as i32, "out[{n}][{r}]");
            }
        }
    }
}

/// Whether CPUID reports AMX-TILE and AMX-INT8 (leaf 7, sub-leaf 0, EDX bits 24 and 25).
/// (`is_x86_feature_detected!("amx-int8")` is not stable Rust.)
pub(crate) fn cpuid_has_amx_int8() -> bool {
    // CPUID leaf 7 exists on every CPU with AVX2 (leaf 7 is where AVX2 itself is reported).
    // (`__cpuid_count` is a safe function in recent Rust and an unsafe one before.)
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86-64 CPU and has no side effects.
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 25) != 0
}

/// Asks Linux for permission to use the AMX tile data state in this process
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); true when granted. The
/// permission is process-wide and lasts for the process's life.
#[cfg(target_os = "linux")]
pub(crate) fn request_amx_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the x86-64 Linux system call convention: number in rax, arguments in rdi and
    // rsi, result in rax; the kernel clobbers rcx and r11 and nothing else. This request
    // only changes the process's permitted extended-state features (or fails with a
    // negative errno on a kernel or CPU without AMX); it touches no memory of ours.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// AMX needs the kernel's permission, which this crate only knows how to ask Linux for.
#[cfg(not(target_os = "linux"))]
pub(crate) fn request_amx_permission() -> bool {
    false
}
