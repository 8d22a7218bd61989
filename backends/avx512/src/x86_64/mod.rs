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
pub(crate) mod lanes;
pub(crate) mod norm;
pub(crate) mod q8_0;
pub(crate) mod quant;
pub(crate) mod softmax;

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
