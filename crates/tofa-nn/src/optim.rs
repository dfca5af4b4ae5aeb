//! SGD with momentum, Nesterov and decoupled-from-BN weight decay over [`Param`]s.

use candle_core::Tensor;
use candle_core::backprop::GradStore;

use crate::error::Result;
use crate::supernet::Param;

/// SGD hyper-parameters (PyTorch semantics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0 for none).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay, applied only to params with `decay == true`.
    pub weight_decay: f64,
}

/// Stochastic gradient descent as PyTorch's `torch.optim.SGD` (dampening 0): a parameter with
/// no gradient (a block the subnet did not run) is left untouched, momentum included.
pub struct Sgd {
    params: Vec<Param>,
    bufs: Vec<Option<Tensor>>,
    cfg: SgdConfig,
}

impl Sgd {
    /// An optimiser over `params`.
    pub fn new(params: Vec<Param>, cfg: SgdConfig) -> Self {
        let bufs = vec![None; params.len()];
        Sgd { params, bufs, cfg }
    }

    /// Sets the learning rate (schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// The parameters, in the order of [`Sgd::momentum_buffers`].
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The momentum buffer of each parameter (`None` before its first gradient), for
    /// checkpoints.
    pub fn momentum_buffers(&self) -> &[Option<Tensor>] {
        &self.bufs
    }

    /// Restores momentum buffers saved from [`Sgd::momentum_buffers`] (same order and length;
    /// each buffer shaped like its parameter).
    pub fn set_momentum_buffers(&mut self, bufs: Vec<Option<Tensor>>) -> Result<()> {
        if bufs.len() != self.params.len() {
            return Err(crate::error::NnError::Input(format!(
                "{} momentum buffers for {} parameters",
                bufs.len(),
                self.params.len()
            )));
        }
        for (p, b) in self.params.iter().zip(&bufs) {
            if let Some(b) = b
                && b.dims() != p.var.as_tensor().dims()
            {
                return Err(crate::error::NnError::Weights {
                    name: p.name.clone(),
                    msg: format!(
                        "momentum shape {:?}, parameter shape {:?}",
                        b.dims(),
                        p.var.as_tensor().dims()
                    ),
                });
            }
        }
        // on the parameters' device (a checkpoint is read on the host)
        self.bufs = bufs
            .into_iter()
            .zip(&self.params)
            .map(|(b, p)| b.map(|b| b.to_device(p.var.device())).transpose())
            .collect::<candle_core::Result<_>>()?;
        Ok(())
    }

    /// One update from `grads`.
    ///
    /// The arithmetic runs on detached tensors: `w * weight_decay` on the variable itself
    /// would record an op, the momentum buffer built from it would record one on the previous
    /// buffer, and every iteration's buffers would stay alive through that chain (about 4x
    /// the parameters' size per iteration: 60 MB per iteration of the Lite0 space).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.cfg;
        for (p, buf) in self.params.iter().zip(self.bufs.iter_mut()) {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let w = p.var.as_tensor().detach();
            let mut g = g.detach();
            if p.decay && c.weight_decay != 0.0 {
                g = (g + (&w * c.weight_decay)?)?;
            }
            if c.momentum != 0.0 {
                let b = match buf.take() {
                    Some(b) => ((b * c.momentum)? + &g)?,
                    None => g.clone(),
                };
                g = if c.nesterov {
                    (g + (&b * c.momentum)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
            }
            p.var.set(&(&w - (g * c.lr)?)?)?;
        }
        Ok(())
    }

    /// One update from `loss.backward()`.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// `w0 = [1, 1]` with `loss = sum(w * x)`, `x = [1, 2]`, under SGD with lr 0.1, momentum
    /// 0.9, Nesterov and weight decay 0.1.
    fn one_param() -> (Var, Tensor, Sgd) {
        let var = Var::new(&[1f32, 1.0], &Device::Cpu).unwrap();
        let x = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let p = Param {
            name: "w".into(),
            var: var.clone(),
            decay: true,
        };
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.1,
        };
        (var, x, Sgd::new(vec![p], cfg))
    }

    #[test]
    fn matches_pytorch_sgd_by_hand() {
        // loss = sum(w * x), grad = x = [1, 2]; w0 = [1, 1], lr 0.1, momentum 0.9, wd 0.1, nesterov.
        // step 1: g = x + 0.1 w = [1.1, 2.1]; buf = g; g' = g + 0.9 buf = [2.09, 3.99];
        //         w = [1 - 0.209, 1 - 0.399] = [0.791, 0.601]
        // step 2: g = [1 + 0.0791, 2 + 0.0601] = [1.0791, 2.0601];
        //         buf = 0.9 [1.1, 2.1] + g = [2.0691, 3.9501]; g' = g + 0.9 buf = [2.94129, 5.61519];
        //         w = [0.791 - 0.294129, 0.601 - 0.561519] = [0.496871, 0.039481]
        let (var, x, mut sgd) = one_param();
        for _ in 0..2 {
            sgd.backward_step(&(var.as_tensor() * &x).unwrap().sum_all().unwrap())
                .unwrap();
        }
        let w: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!(
            (w[0] - 0.496871).abs() < 1e-5 && (w[1] - 0.039481).abs() < 1e-5,
            "{w:?}"
        );
    }

    /// The momentum buffers are plain tensors: no op links one iteration's buffer to the
    /// previous one's (such a chain kept every buffer alive, memory growing per iteration).
    #[test]
    fn momentum_buffers_hold_no_graph() {
        let (var, x, mut sgd) = one_param();
        for _ in 0..3 {
            sgd.backward_step(&(var.as_tensor() * &x).unwrap().sum_all().unwrap())
                .unwrap();
            let b = sgd.momentum_buffers()[0].as_ref().unwrap();
            assert!(!b.track_op(), "the momentum buffer records an op");
        }
        assert!(var.as_tensor().is_variable());
    }
}
