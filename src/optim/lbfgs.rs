//! Limited-memory BFGS over a flat parameter vector, with a strong-Wolfe line search.
//!
//! The method is Nocedal & Wright, *Numerical Optimization* (2nd ed. 2006): the two-loop recursion of
//! Algorithm 7.4 for the product of the inverse-Hessian approximation with the gradient, with the initial
//! matrix `gamma I`, `gamma = s'y / y'y` of the newest pair (eq. 7.20), in the loop of Algorithm 7.5; the
//! step length comes from the line search of Algorithm 3.5 with `zoom` (Algorithm 3.6), interpolating
//! with the cubic of eq. 3.59, so each step satisfies the strong Wolfe conditions (eq. 3.7) with
//! `c1 = 1e-4`, `c2 = 0.9`. A pair with `s'y <= 0` is not stored (the update would lose positive
//! definiteness).
//!
//! Per-parameter `scales` act as a diagonal preconditioner: the search runs in `y = x / scales`, so a unit
//! step moves each parameter by its scale (1 mm for translations, 1 mm / radius for rotations). The first
//! step (and the step after the memory is reset) moves the largest scaled coordinate by `initial_step`.
//!
//! Non-finite values or gradients are treated as `+inf` in the line search (its step shrinks away from
//! them); when no acceptable step remains the search stops with `non-finite` and returns the best point.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::powell::{check_scales, Halt};
use super::stop::{Criterion, Stop};
use crate::error::{Error, Result};

/// Options of [`lbfgs`].
#[derive(Clone, Debug)]
pub struct LbfgsOptions {
    /// Number of correction pairs kept (the history `m`). Default 10.
    pub memory: usize,
    /// Per-parameter scales (> 0; `None`: all 1); the search runs in `x / scales`.
    pub scales: Option<Vec<f64>>,
    /// Stop when the largest entry of the scaled gradient `|df/dx_i * scales_i|` is at most this.
    /// Default 1e-5.
    pub gtol: f64,
    /// Stop when an iteration lowers f by at most `ftol * max(|f_k|, |f_k+1|, 1)`. Default 1e-9.
    pub ftol: f64,
    /// Stop when no step longer than `xtol` (scaled units, largest coordinate) lowers f enough: the line
    /// search's interval has shrunk below it (f is flat, or its rounding noise dominates, at that
    /// resolution). Default 1e-9; about 1e-5 suits f32 objectives.
    pub xtol: f64,
    /// Stop when an accepted step moves no scaled coordinate by more than this (for a registration's
    /// scales: no point by more than about `step_tol` mm). Default 0 (off).
    pub step_tol: f64,
    /// At most this many iterations. Default 200.
    pub max_iterations: usize,
    /// At most this many objective (value and gradient) evaluations. Default 2000.
    pub max_evals: usize,
    /// Length of the first trial step, in scaled units along the largest gradient entry. Default 1.
    pub initial_step: f64,
    /// Sufficient-decrease constant `c1` of the Wolfe conditions. Default 1e-4.
    pub c1: f64,
    /// Curvature constant `c2` (strong Wolfe: `|phi'(a)| <= c2 |phi'(0)|`). Default 0.9.
    pub c2: f64,
    /// Most evaluations of one line search. Default 25.
    pub max_line_evals: usize,
    /// Checked before every evaluation; when set (e.g. by Ctrl-C), stop and return the best point.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            memory: 10,
            scales: None,
            gtol: 1e-5,
            ftol: 1e-9,
            xtol: 1e-9,
            step_tol: 0.0,
            max_iterations: 200,
            max_evals: 2000,
            initial_step: 1.0,
            c1: 1e-4,
            c2: 0.9,
            max_line_evals: 25,
            cancel: None,
        }
    }
}

/// The result of [`lbfgs`].
#[derive(Clone, Debug, Serialize)]
pub struct LbfgsResult {
    /// The best point seen (the start point when no evaluation was made).
    pub x: Vec<f64>,
    /// The objective at `x`; NaN when no finite value was seen.
    pub fval: f64,
    /// Objective evaluations made (each gives the value and the gradient).
    pub evaluations: usize,
    /// Iterations completed (accepted steps).
    pub iterations: usize,
    /// Evaluations whose value or gradient was not finite.
    pub non_finite: usize,
    /// Why it stopped: converged (gradient, f change, x change, or step: [`LbfgsOptions::step_tol`]),
    /// the iteration or evaluation budget, cancelled, [`Stop::NonFinite`] (no acceptable step: the line
    /// search met only non-finite values, or the start point is not finite) or
    /// [`Stop::LineSearchFailed`]. Non-finite values stepped around are counted in `non_finite`.
    pub stop: Stop,
    /// The objective at the start and after each iteration.
    pub history: Vec<f64>,
}

/// The objective in scaled coordinates, with its budget, cancel flag, non-finite guard and best point.
struct Scaled<'a, F> {
    f: F,
    scales: &'a [f64],
    evals: usize,
    max_evals: usize,
    cancel: Option<&'a AtomicBool>,
    non_finite: usize,
    best_x: Vec<f64>,
    best_f: f64,
}

impl<F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>> Scaled<'_, F> {
    /// `(f, df/dy)` at `y` (x = y * scales); `None` when the value or the gradient is not finite.
    fn eval(&mut self, y: &[f64]) -> std::result::Result<Option<(f64, Vec<f64>)>, Halt> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Halt::Cancelled);
        }
        if self.evals >= self.max_evals {
            return Err(Halt::MaxEvals);
        }
        self.evals += 1;
        let x: Vec<f64> = y.iter().zip(self.scales).map(|(a, s)| a * s).collect();
        let (v, g) = (self.f)(&x).map_err(Halt::Failed)?;
        if g.len() != x.len() {
            return Err(Halt::Failed(Error::Shape {
                op: "lbfgs objective".into(),
                expected: format!("a gradient of {} entries", x.len()),
                actual: format!("{} entries", g.len()),
            }));
        }
        if !v.is_finite() || g.iter().any(|d| !d.is_finite()) {
            self.non_finite += 1;
            return Ok(None);
        }
        if v < self.best_f || self.best_f.is_nan() {
            self.best_f = v;
            self.best_x = x;
        }
        Ok(Some((v, g.iter().zip(self.scales).map(|(d, s)| d * s).collect())))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn inf_norm(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn along(x: &[f64], d: &[f64], t: f64) -> Vec<f64> {
    x.iter().zip(d).map(|(a, b)| a + t * b).collect()
}

/// A point on the search line: step, value, directional derivative, gradient.
#[derive(Clone)]
struct Trial {
    a: f64,
    f: f64,
    d: f64,
    g: Vec<f64>,
}

/// What a line search ended with.
enum Line {
    Found(Trial),
    /// No acceptable step within the evaluation budget; `true` when non-finite values blocked it.
    Failed(bool),
    /// No acceptable step longer than `xtol`.
    Tiny,
}

/// The minimizer of the cubic interpolating `(a, fa, da)` and `(b, fb, db)` (N&W eq. 3.59), or `None`
/// when it does not exist.
fn cubic_min(a: f64, fa: f64, da: f64, b: f64, fb: f64, db: f64) -> Option<f64> {
    let d1 = da + db - 3.0 * (fa - fb) / (a - b);
    let disc = d1 * d1 - da * db;
    if disc.is_nan() || disc < 0.0 {
        return None;
    }
    let d2 = (b - a).signum() * disc.sqrt();
    let t = b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2);
    t.is_finite().then_some(t)
}

/// Strong-Wolfe line search along `p` from `y` (value `f0`, slope `d0 < 0`), first trial `a1`
/// (N&W Algorithms 3.5 and 3.6).
fn wolfe<F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>>(
    obj: &mut Scaled<'_, F>,
    y: &[f64],
    f0: f64,
    d0: f64,
    p: &[f64],
    a1: f64,
    opts: &LbfgsOptions,
) -> std::result::Result<Line, Halt> {
    let (c1, c2) = (opts.c1, opts.c2);
    let mut phi = |a: f64| -> std::result::Result<Option<Trial>, Halt> {
        Ok(obj.eval(&along(y, p, a))?.map(|(f, g)| Trial { a, f, d: dot(&g, p), g }))
    };
    let origin = Trial { a: 0.0, f: f0, d: d0, g: Vec::new() };
    let mut evals = 0;
    let mut blocked = false;
    // The smallest useful step length along p.
    let a_min = opts.xtol / inf_norm(p).max(1e-300);
    // Bracketing phase (Algorithm 3.5): `lo` satisfies sufficient decrease with the lowest value so far,
    // `hi` (value `+inf` when non-finite) lies on the other side of an acceptable step.
    let (mut lo, mut hi) = {
        let mut prev = origin.clone();
        let mut a = a1;
        loop {
            if evals >= opts.max_line_evals {
                return Ok(if prev.a > 0.0 { Line::Found(prev) } else { Line::Failed(blocked) });
            }
            evals += 1;
            let Some(t) = phi(a)? else {
                blocked = true;
                break (prev, Trial { a, f: f64::INFINITY, d: f64::NAN, g: Vec::new() });
            };
            if t.f > f0 + c1 * a * d0 || (prev.a > 0.0 && t.f >= prev.f) {
                break (prev, t);
            }
            if t.d.abs() <= -c2 * d0 {
                return Ok(Line::Found(t));
            }
            if t.d >= 0.0 {
                break (t, prev);
            }
            let next = a + 2.0 * (a - prev.a);
            prev = t;
            a = next;
        }
    };
    // Zoom (Algorithm 3.6) between lo and hi.
    while evals < opts.max_line_evals {
        let (l, h) = (lo.a, hi.a);
        let width = (h - l).abs();
        if width <= a_min || width <= 1e-14 * l.abs().max(h.abs()) {
            return Ok(if lo.a > 0.0 {
                Line::Found(lo)
            } else if blocked {
                Line::Failed(true)
            } else {
                Line::Tiny
            });
        }
        let (left, right) = (l.min(h), l.max(h));
        // Cubic interpolation, kept 10% inside the interval; bisection when the cubic is unusable.
        let a = match (hi.f.is_finite(), cubic_min(l, lo.f, lo.d, h, hi.f, hi.d)) {
            (true, Some(t)) => t.clamp(left + 0.1 * width, right - 0.1 * width),
            _ => 0.5 * (l + h),
        };
        evals += 1;
        let Some(t) = phi(a)? else {
            blocked = true;
            hi = Trial { a, f: f64::INFINITY, d: f64::NAN, g: Vec::new() };
            continue;
        };
        if t.f > f0 + c1 * a * d0 || t.f >= lo.f {
            hi = t;
        } else {
            if t.d.abs() <= -c2 * d0 {
                return Ok(Line::Found(t));
            }
            if t.d * (hi.a - lo.a) >= 0.0 {
                hi = lo;
            }
            lo = t;
        }
    }
    // Out of evaluations: a step with sufficient decrease (without the curvature condition) still helps.
    Ok(if lo.a > 0.0 { Line::Found(lo) } else { Line::Failed(blocked) })
}

/// Minimizes `f` from `x0` with L-BFGS (see the module documentation).
///
/// - `f`: value and gradient (same length as `x`) at a flat parameter vector (see
///   [`super::tensor_objective`] for candle losses); an error from it is returned as is.
/// - `x0`: the start point (finite).
/// - Returns the best point seen, its value, the counts, the stop reason and the loss history
///   ([`LbfgsResult`]).
///
/// Errors: an empty or non-finite `x0`; `scales` of the wrong length or not finite and positive;
/// `memory` 0; Wolfe constants outside `0 < c1 < c2 < 1`; a gradient of the wrong length; errors of `f`.
pub fn lbfgs<F>(f: F, x0: &[f64], opts: &LbfgsOptions) -> Result<LbfgsResult>
where
    F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>,
{
    let n = x0.len();
    if n == 0 {
        return Err(Error::arg("lbfgs", "no parameters to optimize"));
    }
    if let Some(v) = x0.iter().find(|v| !v.is_finite()) {
        return Err(Error::arg("lbfgs", format!("the start point must be finite, got {v}")));
    }
    if opts.memory == 0 {
        return Err(Error::arg("lbfgs", "memory must be >= 1"));
    }
    if !(0.0 < opts.c1 && opts.c1 < opts.c2 && opts.c2 < 1.0) {
        return Err(Error::arg("lbfgs", format!("need 0 < c1 < c2 < 1, got c1 {} and c2 {}", opts.c1, opts.c2)));
    }
    if !(opts.initial_step.is_finite() && opts.initial_step > 0.0) {
        return Err(Error::arg("lbfgs", format!("initial_step must be > 0, got {}", opts.initial_step)));
    }
    let scales = check_scales("lbfgs", opts.scales.as_deref(), n)?;
    let mut obj = Scaled {
        f,
        scales: &scales,
        evals: 0,
        max_evals: opts.max_evals,
        cancel: opts.cancel.as_deref(),
        non_finite: 0,
        best_x: x0.to_vec(),
        best_f: f64::NAN,
    };
    let (mut iterations, mut history) = (0, Vec::new());
    let outcome = run(&mut obj, x0, opts, &mut iterations, &mut history);
    let stop = match outcome {
        Ok(reason) => reason,
        Err(Halt::Cancelled) => Stop::Cancelled,
        Err(Halt::MaxEvals) => Stop::Evaluations,
        Err(Halt::Failed(e)) => return Err(e),
    };
    if obj.non_finite > 0 {
        tracing::warn!("lbfgs: {} non-finite evaluations; keeping the best point (f = {})", obj.non_finite, obj.best_f);
    }
    tracing::debug!("lbfgs: {stop} after {} evaluations, {iterations} iterations, f = {}", obj.evals, obj.best_f);
    Ok(LbfgsResult {
        x: obj.best_x,
        fval: obj.best_f,
        evaluations: obj.evals,
        iterations,
        non_finite: obj.non_finite,
        stop,
        history,
    })
}

/// The iterations of [`lbfgs`] (N&W Algorithm 7.5) in scaled coordinates.
fn run<F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>>(
    obj: &mut Scaled<'_, F>,
    x0: &[f64],
    opts: &LbfgsOptions,
    iterations: &mut usize,
    history: &mut Vec<f64>,
) -> std::result::Result<Stop, Halt> {
    let mut y: Vec<f64> = x0.iter().zip(obj.scales).map(|(a, s)| a / s).collect();
    let Some((mut f, mut g)) = obj.eval(&y)? else {
        return Ok(Stop::NonFinite);
    };
    history.push(f);
    if inf_norm(&g) <= opts.gtol {
        return Ok(Stop::Converged(Criterion::Gradient));
    }
    // Correction pairs (s, y, 1 / y's), oldest first.
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::new();
    for k in 1..=opts.max_iterations {
        // Two-loop recursion (Algorithm 7.4): r = H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, yv, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = pairs.back().map_or(1.0, |(s, yv, _)| dot(s, yv) / dot(yv, yv));
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, yv, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(yv, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut p: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut d0 = dot(&g, &p);
        if d0.is_nan() || d0 >= 0.0 || pairs.is_empty() {
            // No memory (or not a descent direction): steepest descent with the initial step length.
            pairs.clear();
            p = g.iter().map(|v| -v).collect();
            d0 = dot(&g, &p);
        }
        let a1 = if pairs.is_empty() { opts.initial_step / inf_norm(&p).max(1e-300) } else { 1.0 };
        let step = match wolfe(obj, &y, f, d0, &p, a1, opts)? {
            Line::Found(t) => t,
            Line::Failed(blocked) if pairs.is_empty() => {
                return Ok(if blocked { Stop::NonFinite } else { Stop::LineSearchFailed });
            }
            Line::Tiny => return Ok(Stop::Converged(Criterion::XChange)),
            Line::Failed(_) => {
                // Forget the curvature pairs and retry along the steepest descent next time round.
                pairs.clear();
                continue;
            }
        };
        let s: Vec<f64> = p.iter().map(|v| step.a * v).collect();
        let yv: Vec<f64> = step.g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 * dot(&yv, &yv) && sy > 0.0 {
            if pairs.len() == opts.memory {
                pairs.pop_front();
            }
            pairs.push_back((s.clone(), yv, 1.0 / sy));
        }
        y = along(&y, &s, 1.0);
        let f_old = f;
        (f, g) = (step.f, step.g);
        history.push(f);
        *iterations = k;
        if inf_norm(&g) <= opts.gtol {
            return Ok(Stop::Converged(Criterion::Gradient));
        }
        if f_old - f <= opts.ftol * f_old.abs().max(f.abs()).max(1.0) {
            return Ok(Stop::Converged(Criterion::FChange));
        }
        if inf_norm(&s) <= opts.step_tol {
            return Ok(Stop::Converged(Criterion::Step));
        }
    }
    Ok(Stop::Iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_interpolation_is_exact_on_a_cubic() {
        // phi(a) = (a - 2)^2 (a + 1) has its local minimum at a = 2.
        let phi = |a: f64| (a - 2.0).powi(2) * (a + 1.0);
        let dphi = |a: f64| 2.0 * (a - 2.0) * (a + 1.0) + (a - 2.0).powi(2);
        let t = cubic_min(0.0, phi(0.0), dphi(0.0), 3.0, phi(3.0), dphi(3.0)).unwrap_or(f64::NAN);
        assert!((t - 2.0).abs() < 1e-12, "{t}");
    }

    #[test]
    fn wolfe_step_satisfies_both_conditions() {
        // f(y) = y^4 - 3 y from 0 along +1 (slope -3).
        let mut obj = Scaled {
            f: |x: &[f64]| Ok((x[0].powi(4) - 3.0 * x[0], vec![4.0 * x[0].powi(3) - 3.0])),
            scales: &[1.0],
            evals: 0,
            max_evals: 100,
            cancel: None,
            non_finite: 0,
            best_x: vec![0.0],
            best_f: f64::NAN,
        };
        let opts = LbfgsOptions { c2: 0.1, ..Default::default() };
        let Ok(Line::Found(t)) = wolfe(&mut obj, &[0.0], 0.0, -3.0, &[1.0], 0.01, &opts) else {
            panic!("no step found");
        };
        assert!(t.f <= 1e-4 * t.a * -3.0, "sufficient decrease: {} at {}", t.f, t.a);
        assert!(t.d.abs() <= 0.1 * 3.0, "curvature: {} at {}", t.d, t.a);
    }

    #[test]
    fn quadratic_converges_to_its_minimum() {
        let f = |x: &[f64]| {
            let (a, b) = (x[0] - 3.0, x[1] + 1.0);
            Ok((a * a + 10.0 * b * b + a * b, vec![2.0 * a + b, 20.0 * b + a]))
        };
        let r = lbfgs(f, &[0.0, 0.0], &LbfgsOptions { gtol: 1e-10, ftol: 0.0, ..Default::default() }).unwrap();
        assert!((r.x[0] - 3.0).abs() < 1e-9 && (r.x[1] + 1.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.stop, Stop::Converged(Criterion::Gradient));
        assert_eq!(r.history.len(), r.iterations + 1);
    }

    #[test]
    fn step_tolerance_stops_once_steps_are_short() {
        // Rosenbrock: many short steps near the end. With `step_tol` the run stops at the first step
        // whose largest coordinate is at most the tolerance, and the point is already close.
        let f = |x: &[f64]| {
            let (a, b) = (1.0 - x[0], x[1] - x[0] * x[0]);
            Ok((a * a + 100.0 * b * b, vec![-2.0 * a - 400.0 * x[0] * b, 200.0 * b]))
        };
        let base = LbfgsOptions { gtol: 1e-12, ftol: 0.0, ..Default::default() };
        let full = lbfgs(f, &[-1.2, 1.0], &base).unwrap();
        let short = lbfgs(f, &[-1.2, 1.0], &LbfgsOptions { step_tol: 1e-3, ..base }).unwrap();
        assert_eq!(short.stop, Stop::Converged(Criterion::Step));
        assert!(short.evaluations < full.evaluations, "{} vs {}", short.evaluations, full.evaluations);
        assert!((short.x[0] - 1.0).abs() < 1e-2 && (short.x[1] - 1.0).abs() < 2e-2, "{short:?}");
        assert!((full.x[0] - 1.0).abs() < 1e-6, "{full:?}");
    }
}
