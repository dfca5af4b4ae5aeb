//! Times single ops at a typical MBConv activation shape `[32, 96, 32, 32]`.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p tofa-nn --example profile_ops`

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};

fn time(name: &str, mut f: impl FnMut() -> candle_core::Result<()>) -> candle_core::Result<()> {
    f()?;
    let t = Instant::now();
    for _ in 0..3 {
        f()?;
    }
    eprintln!("{name:40} {:8.1} ms", t.elapsed().as_secs_f64() * 1e3 / 3.0);
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (32, 96, 32, 32), &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (24, 96), &dev)?)?;
    let wd = Tensor::randn(0f32, 1.0, (96, 1, 3, 3), &dev)?;
    let g = Tensor::ones(96, DType::F32, &dev)?.reshape((1, 96, 1, 1))?;
    time("mean_keepdim (0,2,3)", || {
        x.mean_keepdim((0, 2, 3)).map(|_| ())
    })?;
    time("sum over (2,3) then 0", || {
        x.sum_keepdim((2, 3))?.sum_keepdim(0).map(|_| ())
    })?;
    time("broadcast_sub", || x.broadcast_sub(&g).map(|_| ()))?;
    time("broadcast_mul", || x.broadcast_mul(&g).map(|_| ()))?;
    time("sqr", || x.sqr().map(|_| ()))?;
    time("relu", || x.relu().map(|_| ()))?;
    time("clamp 0 6", || x.clamp(0f32, 6f32).map(|_| ()))?;
    time("add scalar", || (x.as_tensor() + 3.0).map(|_| ()))?;
    time("conv1x1 broadcast_matmul 96->24", || {
        w.broadcast_matmul(&x.reshape((32, 96, 1024))?).map(|_| ())
    })?;
    time("dwconv ours 3x3", || {
        tofa_nn::ops::reference::dwconv::depthwise_conv2d(&x, &wd, 1)
            .map(|_| ())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    })?;
    time("bn-like chain fwd+bwd", || {
        let m = x.mean_keepdim((0, 2, 3))?;
        let xc = x.broadcast_sub(&m)?;
        let v = xc.sqr()?.mean_keepdim((0, 2, 3))?;
        let y = xc.broadcast_mul(&(v + 1e-5)?.sqrt()?.recip()?)?;
        y.sum_all()?.backward().map(|_| ())
    })?;
    time("conv1x1 fwd+bwd", || {
        w.broadcast_matmul(&x.reshape((32, 96, 1024))?)?
            .sum_all()?
            .backward()
            .map(|_| ())
    })?;
    time("relu fwd+bwd", || {
        x.relu()?.sum_all()?.backward().map(|_| ())
    })?;
    time("clamp(0,6) fwd+bwd", || {
        x.clamp(0f32, 6f32)?.sum_all()?.backward().map(|_| ())
    })?;
    time("hswish fwd+bwd", || {
        let x = x.as_tensor();
        (x * ((x + 3.0)?.clamp(0f32, 6f32)? / 6.0)?)?
            .sum_all()?
            .backward()
            .map(|_| ())
    })?;
    time("bn op fwd+bwd", || {
        let g = Var::from_tensor(&Tensor::ones(96, DType::F32, &dev)?)?;
        let b = Var::from_tensor(&Tensor::zeros(96, DType::F32, &dev)?)?;
        tofa_nn::ops::reference::bn::batch_norm_train(&x, &g, &b, 1e-5)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .sum_all()?
            .backward()
            .map(|_| ())
    })?;
    time("dwconv fwd+bwd", || {
        let wd = Var::from_tensor(&wd)?;
        tofa_nn::ops::reference::dwconv::depthwise_conv2d(&x, &wd, 1)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .sum_all()?
            .backward()
            .map(|_| ())
    })?;
    time("fused hswish fwd+bwd", || {
        tofa_nn::ops::act::apply(&x, tofa_nn::ops::act::Fn1::Hswish)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .sum_all()?
            .backward()
            .map(|_| ())
    })?;
    time("conv1x1 via transpose fwd+bwd", || {
        let xt = x
            .reshape((32, 96, 1024))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((96, 32 * 1024))?;
        let y = w
            .matmul(&xt)?
            .reshape((24, 32, 1024))?
            .transpose(0, 1)?
            .contiguous()?;
        y.sum_all()?.backward().map(|_| ())
    })?;
    time("conv1x1 broadcast fwd only", || {
        w.broadcast_matmul(&x.reshape((32, 96, 1024))?)?
            .sum_all()
            .map(|_| ())
    })?;
    time("sum_all + backward only", || {
        x.sum_all()?.backward().map(|_| ())
    })?;
    Ok(())
}
