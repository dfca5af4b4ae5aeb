//! Dense products for the fused convolutions: a strided matrix view and one call of the `gemm`
//! crate (the GEMM candle itself uses) on rayon's threads.

use std::mem::MaybeUninit;

use super::assume_init;

/// A matrix view into a slice: element `(r, c)` at `off + r * rs + c * cs`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    pub(super) data: &'a [f32],
    pub(super) off: usize,
    pub(super) rs: usize,
    pub(super) cs: usize,
}

impl Mat<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.off + (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `a (m x k) * b (k x n)` as a new row-major `m x n` matrix, with the `gemm` crate on rayon's
/// threads.
pub(super) fn matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> Vec<f32> {
    assert!(a.fits(m, k) && b.fits(k, n), "matmul shapes");
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k > 1 << 15 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut dst: Vec<MaybeUninit<f32>> = Vec::with_capacity(m * n);
    // SAFETY: every element the product reads lies inside `a` or `b` (checked by `fits`
    // above); `dst` has room for `m * n` elements and, with `read_dst` false, gemm writes each
    // of them without reading it (candle calls gemm the same way on uninitialised buffers).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr() as *mut f32,
            1,
            n as isize,
            false,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
        dst.set_len(m * n);
        assume_init(dst)
    }
}
