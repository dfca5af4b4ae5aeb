//! Process-wide settings that training on the CPU needs.

/// Tells glibc's allocator to keep freed memory in the process.
///
/// Why: a training step allocates and frees hundreds of activation-sized buffers. With glibc's
/// defaults, buffers above the (adaptive) mmap threshold are mapped and unmapped on every
/// allocation, so each step pays page faults on first touch, zeroing by the kernel, and TLB
/// shoot-downs across threads on unmap (10-20% of a step on this project's 2-core machine).
/// Raising the mmap threshold to its maximum (32 MiB) and the trim threshold to 1 GiB keeps
/// the pages mapped and reused. Peak memory is unchanged; the process keeps what it peaked at.
///
/// Call it first thing in `main`. Returns whether the settings were applied (only on Linux
/// with glibc; elsewhere it does nothing).
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
                && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The variable candle reads, when its CPU thread pool starts, for how long its workers spin
/// waiting for the next op.
const CANDLE_SPIN_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Sets `CANDLE_BARRIER_POOL_SPIN_LIMIT=0` unless the variable is set: candle's own CPU workers
/// (which split its elementwise ops, e.g. the gradient adds of its backward pass) then sleep
/// right after each op instead of spinning 25,000 rounds. Returns whether it set it.
///
/// Why: those workers are threads beside rayon's. Spinning, they take a core from the rayon
/// workers running our ops; on the 2-core machine a Lite0 training step at 2 threads was
/// 15-20% faster without the spin (`examples/profile_step.rs`, `BENCHMARKS.md`). Candle
/// reads the variable once, so this must run before its first op.
///
/// # Safety
/// Writes the process environment: call it first thing in `main`, before any other thread
/// exists (as for [`std::env::set_var`]).
pub unsafe fn tune_candle_pool() -> bool {
    if std::env::var_os(CANDLE_SPIN_VAR).is_some() {
        return false;
    }
    // SAFETY: the caller guarantees that no other thread runs yet.
    unsafe { std::env::set_var(CANDLE_SPIN_VAR, "0") };
    true
}

/// Both process-wide settings at once: [`tune_allocator`] and [`tune_candle_pool`]. Every
/// binary of the workspace calls it first thing in `main`.
///
/// # Safety
/// As for [`tune_candle_pool`]: before any other thread exists.
pub unsafe fn tune_process() {
    tune_allocator();
    // SAFETY: the caller guarantees that no other thread runs yet.
    unsafe { tune_candle_pool() };
}

/// The kernels the `gemm` crate picks on this CPU for f32 products (ours in `ops` and
/// candle's): `avx512` (only in a build with the `avx512-gemm` feature, on a CPU with
/// AVX-512F), `fma` (AVX2 + FMA) or `scalar`. Mirrors gemm-common 0.19's dispatch
/// (`init_gemm_fn`: AVX-512F when compiled in, else FMA, else scalar).
/// On other architectures: `default`.
pub fn gemm_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512-gemm") && std::arch::is_x86_feature_detected!("avx512f") {
            "avx512"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "fma"
        } else {
            "scalar"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "default"
    }
}

/// A tag for results that differ from the default build's in their last bits: `gemm-avx512`
/// when [`gemm_kernels`] is `avx512`, else `None`. The pipeline puts it in every cache key,
/// so entries of the two builds never mix.
pub fn numerics_tag() -> Option<String> {
    (gemm_kernels() == "avx512").then(|| "gemm-avx512".to_string())
}

/// Runs `f` on a worker thread of rayon's pool: inline when already on one (a pipeline stage
/// runs inside its job slot's pool), else handed to the global pool once, the caller waiting.
///
/// Why: every fused op splits its loops with rayon. Called from a thread outside the pool,
/// each of them injects its work into the pool and blocks on a latch until a worker has run
/// it, a futex wake and wait per op (a forward pass has a few hundred). On this project's
/// 2-core machine that was a third of an eval-mode forward of a Lite0 subnet at batch 1 and a
/// sixth of a training step. From a worker, the same loops fork and join inside the pool.
/// The work and its split are unchanged, so are the results.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        assert!(super::tune_allocator());
    }

    #[test]
    fn only_an_avx512_gemm_build_tags_its_numerics() {
        let avx512 = super::gemm_kernels() == "avx512";
        #[cfg(not(feature = "avx512-gemm"))]
        assert!(!avx512, "the default build must use gemm's default kernels");
        assert_eq!(super::numerics_tag().is_some(), avx512);
    }

    #[test]
    fn on_worker_runs_on_a_pool_thread_and_inline_inside_one() {
        assert_eq!(rayon::current_thread_index(), None);
        assert!(super::on_worker(rayon::current_thread_index).is_some());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (outer, inner) = pool.install(|| {
            let here = std::thread::current().id();
            (here, super::on_worker(|| std::thread::current().id()))
        });
        assert_eq!(outer, inner);
    }
}
