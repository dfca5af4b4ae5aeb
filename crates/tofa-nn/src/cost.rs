//! Analytic cost of a subnet: multiply-adds (the paper's "FLOPs") and parameters.
//!
//! Counted: every convolution and linear layer's multiply-adds at the config's resolution
//! (the SE multiply and activations are not, as in OFA's and the paper's FLOPs); parameters of
//! the active slices of every conv, linear (with bias) and BN (gamma and beta).

use crate::config::SubnetConfig;
use crate::error::Result;
use crate::space::{SearchSpace, se_channels};

/// Cost of one subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// Multiply-adds for one image.
    pub macs: u64,
    /// Parameters the subnet uses.
    pub params: u64,
}

impl Cost {
    /// Multiply-adds in millions (the paper's MFLOPs).
    pub fn mflops(&self) -> f64 {
        self.macs as f64 / 1e6
    }
}

fn out_size(h: usize, k: usize, stride: usize) -> usize {
    (h + 2 * (k / 2) - k) / stride + 1
}

/// The cost of `cfg` in `space` at `cfg.resolution`.
pub fn cost(space: &SearchSpace, cfg: &SubnetConfig) -> Result<Cost> {
    cfg.validate(space)?;
    let (mut macs, mut params) = (0u64, 0u64);
    let mut add = |m: usize, p: usize| {
        macs += m as u64;
        params += p as u64;
    };
    let k = space.stem.kernel;
    let mut h = out_size(cfg.resolution, k, space.stem.stride);
    let mut c = cfg.stem_width;
    add(
        c * space.in_channels * k * k * h * h,
        c * space.in_channels * k * k + 2 * c,
    );
    for (st, sc) in space.stages.iter().zip(&cfg.stages) {
        for j in 0..sc.depth {
            let stride = if j == 0 { st.stride } else { 1 };
            let mut mid = c;
            if sc.expand > 1 {
                mid = c * sc.expand;
                add(mid * c * h * h, mid * c + 2 * mid);
            }
            h = out_size(h, sc.kernel, stride);
            add(
                mid * sc.kernel * sc.kernel * h * h,
                mid * sc.kernel * sc.kernel + 2 * mid,
            );
            if st.se {
                let r = se_channels(mid);
                add(r * mid + mid * r, r * mid + r + mid * r + mid);
            }
            add(sc.width * mid * h * h, sc.width * mid + 2 * sc.width);
            c = sc.width;
        }
    }
    let conv_out = space.head.expand.map_or(cfg.head_width, |e| c * e);
    add(conv_out * c * h * h, conv_out * c + 2 * conv_out);
    if space.head.expand.is_some() {
        add(
            cfg.head_width * conv_out,
            cfg.head_width * conv_out + cfg.head_width,
        );
    }
    add(
        space.num_classes * cfg.head_width,
        space.num_classes * cfg.head_width + space.num_classes,
    );
    Ok(Cost { macs, params })
}
