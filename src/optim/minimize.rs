//! The optimizer loops over a flat f64 parameter vector, shared by every parameter optimization that is
//! not a network's weights: the pyramid levels of multi-scale ISO ([`super::iso`]), its final L-BFGS
//! refinement, and objectives written in the DSL (`adam(...).minimize(f, x0)`).
//!
//! An [`Objective`] gives the loss and its gradient at a point (and may draw fresh sample points before
//! each iteration); [`first_order`] runs a [`VecOptimizer`] (Adam, SGD) on it, [`lbfgs_run`] and
//! [`powell_run`] run [`lbfgs`] and [`powell`]. Each returns a [`Run`]: the parameters to carry on,
//! every loss, the best, and why it stopped ([`Stop`]). Every loop checks a cancel flag before each
//! evaluation and keeps the best finite point when the loss stops being finite.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::convergence::WindowedSlope;
use super::lbfgs::{lbfgs, LbfgsOptions};
use super::optimizer::VecOptimizer;
use super::powell::{powell, PowellOptions};
use super::stop::{Criterion, Stop};
use crate::error::Result;

/// The loss of an objective at a point, with its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Eval {
    /// The loss (lower is better).
    pub loss: f64,
    /// `d loss / d x`, one entry per parameter.
    pub grad: Vec<f64>,
    /// Whether the loss saw any data (false: no sample point mapped inside the moving image).
    pub overlap: bool,
}

/// A function of a flat f64 parameter vector that the loops of this module minimize.
pub trait Objective {
    /// The loss and its gradient at `x`.
    ///
    /// Errors: the objective's own (shapes, tensor errors, a script's error).
    fn eval(&mut self, x: &[f64]) -> Result<Eval>;

    /// The loss alone at `x` (Powell); by default [`Objective::eval`]'s.
    ///
    /// Errors: as [`Objective::eval`].
    fn value(&mut self, x: &[f64]) -> Result<f64> {
        Ok(self.eval(x)?.loss)
    }

    /// Draws fresh sample points for the next iteration of a first-order loop (random points, a
    /// jittered grid); deterministic objectives do nothing.
    ///
    /// Errors: the objective's own.
    fn redraw(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether [`Objective::redraw`] changes the objective: then a first-order loop skips the
    /// convergence test and carries its last iterate on (the minimum of a noisy loss marks a lucky draw,
    /// not the best parameters).
    fn noisy(&self) -> bool {
        false
    }
}

/// Any `FnMut(&[f64]) -> Result<(f64, Vec<f64>)>` is a deterministic objective with a gradient.
impl<F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>> Objective for F {
    fn eval(&mut self, x: &[f64]) -> Result<Eval> {
        let (loss, grad) = self(x)?;
        Ok(Eval { loss, grad, overlap: true })
    }
}

/// What a loop reached.
#[derive(Clone, Debug)]
pub struct Run {
    /// The parameters to carry on: the best point, or the last iterate of a noisy first-order loop.
    pub x: Vec<f64>,
    /// Every loss evaluated (per iteration for first-order loops, per evaluation for L-BFGS and Powell).
    pub losses: Vec<f64>,
    /// The best finite loss (NaN when none was finite; for L-BFGS and Powell the loss at `x`).
    pub best: f64,
    /// Why it stopped.
    pub stop: Stop,
}

/// Options of [`first_order`].
#[derive(Clone, Debug)]
pub struct FirstOrderOptions {
    /// At most this many iterations.
    pub iterations: usize,
    /// The learning rate of the first iteration.
    pub lr: f64,
    /// Decay the learning rate linearly to a tenth over the iterations (large early steps, a fine
    /// finish), as ISO's pyramid levels do; `false` keeps it constant.
    pub decay: bool,
    /// Windowed-slope convergence test: window (iterations) and relative slope tolerance; `None`: none.
    /// Not applied to noisy objectives.
    pub convergence: Option<(usize, f64)>,
    /// Checked before every iteration; when set, stop.
    pub cancel: Option<Arc<AtomicBool>>,
}

fn is_set(cancel: &Option<Arc<AtomicBool>>) -> bool {
    cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
}

/// Minimizes `obj` from `x0` with a first-order optimizer: per iteration, the learning rate (decayed
/// when asked), a fresh draw ([`Objective::redraw`]), the loss and gradient, the best point, the
/// convergence test, the step. `on_loss` sees each iteration's loss (a progress bar).
///
/// Stops at the iteration budget, convergence, the cancel flag ([`Stop::Cancelled`]), a non-finite loss
/// or gradient ([`Stop::NonFinite`]) or no overlap ([`Stop::NoOverlap`]); the last two carry the best
/// point on, a noisy objective otherwise its last iterate.
///
/// Errors: the objective's.
pub fn first_order(
    opt: &mut dyn VecOptimizer,
    obj: &mut dyn Objective,
    x0: &[f64],
    o: &FirstOrderOptions,
    on_loss: &mut dyn FnMut(f64),
) -> Result<Run> {
    let mut conv = o.convergence.map(|(w, tol)| WindowedSlope::new(w, tol));
    let noisy = obj.noisy();
    let mut x = x0.to_vec();
    let (mut best, mut best_x) = (f64::INFINITY, x.clone());
    let (mut losses, mut stop) = (Vec::with_capacity(o.iterations.min(1 << 16)), Stop::Iterations);
    for it in 0..o.iterations {
        let lr = if o.decay { o.lr * (1.0 - 0.9 * it as f64 / o.iterations.max(1) as f64) } else { o.lr };
        opt.set_lr(lr);
        if is_set(&o.cancel) {
            stop = Stop::Cancelled;
            break;
        }
        obj.redraw()?;
        let e = obj.eval(&x)?;
        if !e.loss.is_finite() || e.grad.iter().any(|v| !v.is_finite()) {
            stop = Stop::NonFinite;
            tracing::warn!("loss is {}; keeping the best parameters", e.loss);
            break;
        }
        if !e.overlap {
            stop = Stop::NoOverlap;
            tracing::warn!("no sample point maps inside the moving image; keeping the best parameters");
            break;
        }
        losses.push(e.loss);
        on_loss(e.loss);
        if e.loss < best {
            best = e.loss;
            best_x.clone_from(&x);
        }
        if !noisy && conv.as_mut().is_some_and(|c| c.push(e.loss)) {
            stop = Stop::Converged(Criterion::Slope);
            break;
        }
        opt.step(&mut x, &e.grad);
    }
    let keep_last = noisy && !matches!(stop, Stop::NonFinite | Stop::NoOverlap);
    let best = if best.is_finite() { best } else { f64::NAN };
    Ok(Run { x: if keep_last { x } else { best_x }, losses, best, stop })
}

/// Minimizes `obj` from `x0` with [`lbfgs`]; every evaluation's loss is recorded. An evaluation without
/// overlap counts as non-finite (the line search steps back from it).
///
/// Errors: as [`lbfgs`].
pub fn lbfgs_run(obj: &mut dyn Objective, x0: &[f64], opts: &LbfgsOptions) -> Result<Run> {
    let mut losses = Vec::new();
    let r = lbfgs(
        |x: &[f64]| {
            let e = obj.eval(x)?;
            losses.push(e.loss);
            Ok(if e.overlap { (e.loss, e.grad) } else { (f64::NAN, e.grad) })
        },
        x0,
        opts,
    )?;
    let best = if r.fval.is_finite() { r.fval } else { f64::NAN };
    Ok(Run { x: r.x, losses, best, stop: r.stop })
}

/// Minimizes `obj` from `x0` with [`powell`] (values only); every evaluation's loss is recorded.
///
/// Errors: as [`powell`].
pub fn powell_run(obj: &mut dyn Objective, x0: &[f64], opts: &PowellOptions) -> Result<Run> {
    let mut losses = Vec::new();
    let r = powell(
        |x: &[f64]| {
            let v = obj.value(x)?;
            losses.push(v);
            Ok(v)
        },
        x0,
        opts,
    )?;
    let best = if r.fval.is_finite() { r.fval } else { f64::NAN };
    Ok(Run { x: r.x, losses, best, stop: r.stop })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::optimizer::{AdamVec, SgdVec};

    fn bowl(x: &[f64]) -> Result<(f64, Vec<f64>)> {
        Ok(((x[0] - 3.0).powi(2) + 2.0 * (x[1] + 1.0).powi(2), vec![2.0 * (x[0] - 3.0), 4.0 * (x[1] + 1.0)]))
    }

    #[test]
    fn adam_and_sgd_reach_a_bowls_minimum() {
        let o = FirstOrderOptions { iterations: 3000, lr: 0.05, decay: false, convergence: None, cancel: None };
        let mut f = bowl;
        let r = first_order(&mut AdamVec::new(0.05, vec![1.0; 2]), &mut f, &[0.0, 0.0], &o, &mut |_| ()).unwrap();
        assert!((r.x[0] - 3.0).abs() < 1e-2 && (r.x[1] + 1.0).abs() < 1e-2, "{:?}", r.x);
        let mut sgd = SgdVec::new(0.05, 0.9, true, vec![1.0; 2]).unwrap();
        let r = first_order(&mut sgd, &mut f, &[0.0, 0.0], &o, &mut |_| ()).unwrap();
        assert!((r.x[0] - 3.0).abs() < 1e-6 && (r.x[1] + 1.0).abs() < 1e-6, "{:?}", r.x);
        assert_eq!((r.stop, r.losses.len()), (Stop::Iterations, 3000));
    }

    #[test]
    fn a_cancel_flag_stops_before_the_first_evaluation() {
        let cancel = Arc::new(AtomicBool::new(true));
        let o = FirstOrderOptions { iterations: 10, lr: 0.1, decay: true, convergence: None, cancel: Some(cancel) };
        let r = first_order(&mut AdamVec::new(0.1, vec![1.0; 2]), &mut bowl, &[1.0, 1.0], &o, &mut |_| ()).unwrap();
        assert_eq!((r.stop, r.losses.len(), r.x), (Stop::Cancelled, 0, vec![1.0, 1.0]));
    }

    #[test]
    fn a_non_finite_loss_keeps_the_best_point() {
        // Finite for x < 2 only: plain gradient steps cross the barrier.
        let mut f = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            Ok(if x[0] < 2.0 { ((x[0] - 5.0).powi(2), vec![2.0 * (x[0] - 5.0)]) } else { (f64::NAN, vec![0.0]) })
        };
        let o = FirstOrderOptions { iterations: 100, lr: 0.4, decay: false, convergence: None, cancel: None };
        let mut sgd = SgdVec::new(0.4, 0.0, false, vec![1.0]).unwrap();
        let r = first_order(&mut sgd, &mut f, &[0.0], &o, &mut |_| ()).unwrap();
        assert_eq!(r.stop, Stop::NonFinite);
        assert!(r.x[0] < 2.0 && r.best == (r.x[0] - 5.0).powi(2), "{r:?}");
    }
}
