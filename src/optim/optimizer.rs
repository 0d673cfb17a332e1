//! First-order optimizers over candle [`Var`]s, with optional per-parameter scales (as ITK's
//! physical-shift scales: a parameter's step is multiplied by its scale, so millimetres and radians
//! move sensibly together).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

/// A first-order optimizer.
pub trait Optimizer {
    /// One update of `vars` from their gradients (variables without a gradient are left alone).
    fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<()>;
    /// Sets the learning rate.
    fn set_lr(&mut self, lr: f64);
    /// Forgets the moment estimates (at a new pyramid level).
    fn reset(&mut self);
}

fn scaled(g: &Tensor, scale: Option<&Tensor>) -> Result<Tensor> {
    Ok(match scale {
        Some(s) => g.broadcast_mul(s)?,
        None => g.clone(),
    })
}

/// Adam (Kingma & Ba 2015) with bias correction; `scales[i]` (same shape as `vars[i]`, or `None`)
/// multiplies the step of each entry.
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    scales: Vec<Option<Tensor>>,
    state: Vec<Option<(Tensor, Tensor)>>,
    t: i32,
}

impl Adam {
    /// Adam with `lr` and the usual betas (0.9, 0.999), eps 1e-8; `scales` per variable.
    pub fn new(lr: f64, scales: Vec<Option<Tensor>>) -> Self {
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, scales, state: Vec::new(), t: 0 }
    }

    /// The step count and the first / second moment estimates per variable (in the order of the
    /// variables passed to `step`; `None` where a variable has had no gradient yet), for checkpoints.
    pub fn moments(&self) -> (i32, &[Option<(Tensor, Tensor)>]) {
        (self.t, &self.state)
    }

    /// Restores the step count and moments [`Adam::moments`] returned, so training resumes where it
    /// stopped.
    pub fn restore(&mut self, t: i32, state: Vec<Option<(Tensor, Tensor)>>) {
        self.t = t;
        self.state = state;
    }
}

impl Optimizer for Adam {
    fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<()> {
        self.t += 1;
        if self.state.len() < vars.len() {
            self.state.resize(vars.len(), None);
        }
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for (i, v) in vars.iter().enumerate() {
            let Some(g) = grads.get(v.as_tensor()) else { continue };
            let (m, s) = match &self.state[i] {
                Some((m, s)) => ((m * b1)?.add(&(g * (1.0 - b1))?)?, (s * b2)?.add(&(g.sqr()? * (1.0 - b2))?)?),
                None => ((g * (1.0 - b1))?, (g.sqr()? * (1.0 - b2))?),
            };
            let upd = ((&m / c1)? / ((&s / c2)?.sqrt()? + self.eps)?)?;
            let upd = (scaled(&upd, self.scales.get(i).and_then(|s| s.as_ref()))? * self.lr)?;
            v.set(&(v.as_tensor() - upd)?.detach())?;
            self.state[i] = Some((m.detach(), s.detach()));
        }
        Ok(())
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn reset(&mut self) {
        self.state.clear();
        self.t = 0;
    }
}

/// Stochastic gradient descent with momentum (heavy ball, or Nesterov), per-parameter scales.
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    scales: Vec<Option<Tensor>>,
    velocity: Vec<Option<Tensor>>,
}

impl Sgd {
    /// SGD with `lr` and `momentum` in `[0, 1)`. Errors: a momentum outside that range.
    pub fn new(lr: f64, momentum: f64, nesterov: bool, scales: Vec<Option<Tensor>>) -> Result<Self> {
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::arg("sgd", format!("momentum must be in [0, 1), got {momentum}")));
        }
        Ok(Sgd { lr, momentum, nesterov, scales, velocity: Vec::new() })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<()> {
        if self.velocity.len() < vars.len() {
            self.velocity.resize(vars.len(), None);
        }
        for (i, v) in vars.iter().enumerate() {
            let Some(g) = grads.get(v.as_tensor()) else { continue };
            let g = scaled(g, self.scales.get(i).and_then(|s| s.as_ref()))?;
            let vel = match &self.velocity[i] {
                Some(b) => ((b * self.momentum)? + &g)?,
                None => g.clone(),
            };
            let dir = if self.nesterov { (&g + (&vel * self.momentum)?)? } else { vel.clone() };
            v.set(&(v.as_tensor() - (dir * self.lr)?)?.detach())?;
            self.velocity[i] = Some(vel.detach());
        }
        Ok(())
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn reset(&mut self) {
        self.velocity.clear();
    }
}

/// Adam on a flat f64 parameter vector (the same update as [`Adam`], without tensors): for optimizers
/// whose objective returns its gradient as numbers, e.g. the fused sampled loss of
/// [`crate::optim::sampled`]. `scales[i]` multiplies the step of parameter `i`.
#[derive(Clone, Debug)]
pub struct AdamVec {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    scales: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl AdamVec {
    /// Adam with `lr`, betas (0.9, 0.999), eps 1e-8, and one scale per parameter.
    pub fn new(lr: f64, scales: Vec<f64>) -> Self {
        let n = scales.len();
        AdamVec { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, scales, m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    /// One update of `x` from its gradient `g` (both of the scales' length; extra entries are ignored).
    pub fn step(&mut self, x: &mut [f64], g: &[f64]) {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for i in 0..self.scales.len().min(x.len()).min(g.len()) {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            let upd = (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + self.eps);
            x[i] -= self.lr * self.scales[i] * upd;
        }
    }

    /// Sets the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Forgets the moment estimates.
    pub fn reset(&mut self) {
        self.m.iter_mut().for_each(|v| *v = 0.0);
        self.v.iter_mut().for_each(|v| *v = 0.0);
        self.t = 0;
    }
}
