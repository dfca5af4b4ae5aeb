//! Reference ops in NCHW, composed of candle ops and our own simple kernels: readable, tested
//! against candle's and finite differences, and the yardstick the fused ops of [`super`] are
//! tested against. The supernet does not run on them.

pub mod bn;
pub mod dwconv;
