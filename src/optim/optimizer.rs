//! First-order optimizers, with optional per-parameter scales (as ITK's physical-shift scales: a
//! parameter's step is multiplied by its scale, so millimetres and radians move sensibly together).
//!
//! Adam's arithmetic (moment estimates, bias correction, direction `m̂ / (sqrt(v̂) + eps)`) is written
//! once for plain numbers, [`AdamMoments`], generic over f32 and f64: [`AdamVec`] (flat f64 parameter
//! vectors: linear registration, script objectives) and the dense fields' normalized step
//! ([`super::dense`], f32 volumes) use it. [`Adam`] is its twin over candle tensors on any device, for
//! network weights and the tensor paths; `tests/optimizers.rs` checks the two agree. SGD likewise:
//! [`SgdVec`] on vectors, [`Sgd`] on tensors.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use num_traits::Float;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Adam's default first-moment decay.
pub const BETA1: f64 = 0.9;
/// Adam's default second-moment decay.
pub const BETA2: f64 = 0.999;
/// Adam's default denominator guard.
pub const EPS: f64 = 1e-8;

/// A first-order optimizer over candle [`Var`]s (network weights, tensor parameters on any device).
pub trait Optimizer {
    /// One update of `vars` from their gradients (variables without a gradient are left alone).
    fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<()>;
    /// Sets the learning rate.
    fn set_lr(&mut self, lr: f64);
    /// Forgets the moment estimates (at a new pyramid level).
    fn reset(&mut self);
}

/// A first-order optimizer over a flat f64 parameter vector: the core that multi-scale ISO of linear
/// transforms and script objectives (`minimize` in the DSL) share.
pub trait VecOptimizer {
    /// One update of `x` from its gradient `g` (same length).
    fn step(&mut self, x: &mut [f64], g: &[f64]);
    /// Sets the learning rate.
    fn set_lr(&mut self, lr: f64);
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Forgets the moment estimates.
    fn reset(&mut self);
}

/// Adam's moment estimates over `n` plain numbers (Kingma & Ba 2015, Algorithm 1): the one
/// implementation of its arithmetic on vectors. Large vectors (dense fields) are updated in parallel.
#[derive(Clone, Debug)]
pub struct AdamMoments<T> {
    beta1: T,
    beta2: T,
    eps: T,
    m: Vec<T>,
    v: Vec<T>,
    t: i32,
}

impl<T: Float + Send + Sync> AdamMoments<T> {
    /// Zero moments for `n` entries with the default betas (0.9, 0.999) and eps 1e-8.
    pub fn new(n: usize) -> Self {
        let c = |x: f64| T::from(x).unwrap_or_else(T::zero);
        AdamMoments {
            beta1: c(BETA1),
            beta2: c(BETA2),
            eps: c(EPS),
            m: vec![T::zero(); n],
            v: vec![T::zero(); n],
            t: 0,
        }
    }

    /// Updates the moments with the gradient `g` and writes the bias-corrected direction
    /// `m̂ / (sqrt(v̂) + eps)` into `dir` (both of the moments' length).
    pub fn direction(&mut self, g: &[T], dir: &mut [T]) {
        self.t += 1;
        let c = |x: f64| T::from(x).unwrap_or_else(T::one);
        // The constants in `T`: `1 - beta`, and the bias corrections as reciprocals `1 / (1 - beta^t)`.
        // The tensor twin [`Adam::direction`] forms the same constants and operations in the same order
        // (candle scales a tensor by a number as `x * (number as T)`), so the two agree to the bit.
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let (one_b1, one_b2) = (T::one() - b1, T::one() - b2);
        let c1 = T::one() / c(1.0 - BETA1.powi(self.t));
        let c2 = T::one() / c(1.0 - BETA2.powi(self.t));
        dir.par_iter_mut()
            .with_min_len(4096)
            .zip(self.m.par_iter_mut().with_min_len(4096))
            .zip(self.v.par_iter_mut().with_min_len(4096))
            .zip(g.par_iter().with_min_len(4096))
            .for_each(|(((d, m), v), &gv)| {
                *m = b1 * *m + one_b1 * gv;
                *v = b2 * *v + one_b2 * gv * gv;
                *d = (*m * c1) / ((*v * c2).sqrt() + eps);
            });
    }

    /// Forgets the moments and the step count.
    pub fn reset(&mut self) {
        self.m.iter_mut().for_each(|x| *x = T::zero());
        self.v.iter_mut().for_each(|x| *x = T::zero());
        self.t = 0;
    }
}

/// Adam on a flat f64 parameter vector: `x_i -= lr * scales_i * m̂_i / (sqrt(v̂_i) + eps)`.
#[derive(Clone, Debug)]
pub struct AdamVec {
    pub lr: f64,
    scales: Vec<f64>,
    moments: AdamMoments<f64>,
    dir: Vec<f64>,
}

impl AdamVec {
    /// Adam with `lr`, betas (0.9, 0.999), eps 1e-8, and one scale per parameter.
    pub fn new(lr: f64, scales: Vec<f64>) -> Self {
        let n = scales.len();
        AdamVec { lr, scales, moments: AdamMoments::new(n), dir: vec![0.0; n] }
    }
}

impl VecOptimizer for AdamVec {
    /// One update of `x` from its gradient `g` (both of the scales' length; extra entries are ignored).
    fn step(&mut self, x: &mut [f64], g: &[f64]) {
        let n = self.scales.len().min(x.len()).min(g.len());
        self.moments.direction(&g[..n], &mut self.dir[..n]);
        for ((xi, s), d) in x.iter_mut().zip(&self.scales).zip(&self.dir).take(n) {
            *xi -= self.lr * s * d;
        }
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn reset(&mut self) {
        self.moments.reset();
    }
}

/// Stochastic gradient descent with momentum (heavy ball, or Nesterov) on a flat f64 vector, as
/// PyTorch's `SGD`: `b = momentum * b + g`, `x -= lr * scales * (nesterov ? g + momentum * b : b)`.
#[derive(Clone, Debug)]
pub struct SgdVec {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    scales: Vec<f64>,
    velocity: Option<Vec<f64>>,
}

impl SgdVec {
    /// SGD with `lr`, `momentum` in `[0, 1)` and one scale per parameter. Errors: a momentum outside
    /// that range.
    pub fn new(lr: f64, momentum: f64, nesterov: bool, scales: Vec<f64>) -> Result<Self> {
        check_momentum(momentum)?;
        Ok(SgdVec { lr, momentum, nesterov, scales, velocity: None })
    }
}

fn check_momentum(momentum: f64) -> Result<()> {
    if !(0.0..1.0).contains(&momentum) {
        return Err(Error::arg("sgd", format!("momentum must be in [0, 1), got {momentum}")));
    }
    Ok(())
}

impl VecOptimizer for SgdVec {
    fn step(&mut self, x: &mut [f64], g: &[f64]) {
        let n = self.scales.len().min(x.len()).min(g.len());
        let vel = match self.velocity.take() {
            Some(mut b) if b.len() == n => {
                b.iter_mut().zip(g).for_each(|(bi, gi)| *bi = self.momentum * *bi + gi);
                b
            }
            _ => g[..n].to_vec(),
        };
        for i in 0..n {
            let d = if self.nesterov { g[i] + self.momentum * vel[i] } else { vel[i] };
            x[i] -= self.lr * self.scales[i] * d;
        }
        self.velocity = Some(vel);
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn reset(&mut self) {
        self.velocity = None;
    }
}

fn scaled(g: &Tensor, scale: Option<&Tensor>) -> Result<Tensor> {
    Ok(match scale {
        Some(s) => g.broadcast_mul(s)?,
        None => g.clone(),
    })
}

/// Adam (Kingma & Ba 2015) with bias correction over candle tensors on any device: the tensor twin of
/// [`AdamMoments`] / [`AdamVec`]. `scales[i]` (same shape as `vars[i]`, or `None`) multiplies the step of
/// each entry.
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
        Adam { lr, beta1: BETA1, beta2: BETA2, eps: EPS, scales, state: Vec::new(), t: 0 }
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

    /// Advances the step count (once per update of all variables).
    pub fn tick(&mut self) {
        self.t += 1;
    }

    /// Updates the moments of variable `i` with its gradient `g` and returns the bias-corrected
    /// direction `m̂ / (sqrt(v̂) + eps)` (unscaled, without the learning rate), at the current step count
    /// ([`Adam::tick`] first).
    ///
    /// Errors: tensor errors (a gradient of another shape than the moments).
    pub fn direction(&mut self, i: usize, g: &Tensor) -> Result<Tensor> {
        if self.state.len() <= i {
            self.state.resize(i + 1, None);
        }
        // The constants of [`AdamMoments::direction`] in f32 (exact as f64, so candle's `x * c` uses them
        // as they are), and its operations in its order.
        let (b1, b2, eps) = (self.beta1 as f32, self.beta2 as f32, self.eps as f32);
        let (one_b1, one_b2) = (1.0 - b1, 1.0 - b2);
        let t = self.t.max(1);
        let c1 = 1.0 / (1.0 - self.beta1.powi(t)) as f32;
        let c2 = 1.0 / (1.0 - self.beta2.powi(t)) as f32;
        let f = |x: f32| x as f64;
        let (m, s) = match &self.state[i] {
            Some((m, s)) => ((m * f(b1))?.add(&(g * f(one_b1))?)?, (s * f(b2))?.add(&((g * f(one_b2))? * g)?)?),
            None => ((g * f(one_b1))?, ((g * f(one_b2))? * g)?),
        };
        let dir = ((&m * f(c1))? / ((&s * f(c2))?.sqrt()? + f(eps))?)?;
        self.state[i] = Some((m.detach(), s.detach()));
        Ok(dir)
    }
}

impl Optimizer for Adam {
    fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<()> {
        self.tick();
        for (i, v) in vars.iter().enumerate() {
            let Some(g) = grads.get(v.as_tensor()) else { continue };
            let dir = self.direction(i, g)?;
            let upd = (scaled(&dir, self.scales.get(i).and_then(|s| s.as_ref()))? * self.lr)?;
            v.set(&(v.as_tensor() - upd)?.detach())?;
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

/// Stochastic gradient descent with momentum (heavy ball, or Nesterov) over candle tensors, per-parameter
/// scales: the tensor twin of [`SgdVec`].
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
        check_momentum(momentum)?;
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
