//! bitnet-graph's AVX2 backend. Not written yet: its issue follows the scalar backend's.
//! `is_available()` reports whether this CPU could run it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// Whether the CPU has the features this backend will need (AVX2, FMA, F16C).
pub fn is_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
