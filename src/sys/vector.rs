//! The tool's own numeric loops (processing, the float64 forward's few-row products) compiled
//! once more for AVX2 and AVX-512 and run in the widest the CPU has. Nothing is fused (Rust does
//! not contract a * b + c), so every width gives the same results.

/// A loop [`widest`] runs.
pub trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// `kernel` in the widest vector code the CPU has.
pub fn widest<K: Kernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has just been found to support AVX-512F.
            return unsafe { run_avx512(kernel) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has just been found to support AVX2.
            return unsafe { run_avx2(kernel) };
        }
    }
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}
