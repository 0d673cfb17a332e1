//! Powell's derivative-free conjugate-direction method, for objectives without a gradient (e.g. a
//! histogram NMI evaluated forward only, as Sedghi et al. (deep metrics) does).
//!
//! The method (Powell 1964, "An efficient method for finding the minimum of a function of several
//! variables without calculating derivatives", Comput. J. 7(2); as in Numerical Recipes 3rd ed. §10.7 and
//! scipy's `fmin_powell`): starting from `n` directions, each iteration minimizes the objective along every
//! direction in turn (a bracketing search, then Brent's parabolic / golden-section line minimization,
//! Brent 1973 ch. 5), then, unless the heuristic test of Acton / NR says it would make the set degenerate,
//! replaces the direction of largest decrease by the iteration's net displacement. On a quadratic the
//! directions become mutually conjugate.
//!
//! Per-parameter `scales` make the initial directions `scales[i] * e_i`, so one unit of search moves each
//! parameter by its scale (e.g. 1 mm for translations and 1 mm / radius for rotations, as ITK's
//! physical-shift scales); `xtol` is measured in the same scaled units.
//!
//! Non-finite objective values are treated as `+inf` (a barrier the line searches back away from) and
//! counted; the best finite point seen is what is returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::stop::{Criterion, Stop};
use crate::error::{Error, Result};

/// Options of [`powell`].
#[derive(Clone, Debug)]
pub struct PowellOptions {
    /// Per-parameter scales (> 0; `None`: all 1): the initial directions are `scales[i] * e_i`.
    pub scales: Option<Vec<f64>>,
    /// Convergence in x: stop when an iteration moves no parameter by more than `xtol` scaled units;
    /// also the absolute precision of each line minimization (scaled units). Default 1e-4.
    pub xtol: f64,
    /// Convergence in f: stop when an iteration lowers f by less than `ftol * (|f_start| + |f_end|) / 2`
    /// (plus 1e-25). Default 1e-8.
    pub ftol: f64,
    /// At most this many objective evaluations. Default 10000.
    pub max_evals: usize,
    /// At most this many iterations (each a sweep over all directions). Default 1000.
    pub max_iterations: usize,
    /// Checked before every evaluation; when set (e.g. by Ctrl-C), stop and return the best point.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for PowellOptions {
    fn default() -> Self {
        PowellOptions { scales: None, xtol: 1e-4, ftol: 1e-8, max_evals: 10_000, max_iterations: 1000, cancel: None }
    }
}

/// The result of [`powell`].
#[derive(Clone, Debug, Serialize)]
pub struct PowellResult {
    /// The best point found (the start point when nothing better was found or no evaluation was made).
    pub x: Vec<f64>,
    /// The objective at `x`; NaN when no finite value was seen (cancelled before the first evaluation,
    /// or non-finite at the start point).
    pub fval: f64,
    /// Objective evaluations made.
    pub evaluations: usize,
    /// Iterations completed (sweeps over all directions).
    pub iterations: usize,
    /// How many evaluations returned a non-finite value (treated as `+inf`).
    pub non_finite: usize,
    /// Why it stopped: converged (f change or x change), the evaluation or iteration budget,
    /// cancelled, or [`Stop::NonFinite`] (at the start point). Non-finite values met along the way are
    /// counted in `non_finite`.
    pub stop: Stop,
}

/// Golden ratio, the bracketing expansion factor.
const GOLD: f64 = 1.618_033_988_749_895;
/// `(3 - sqrt 5) / 2`: the golden-section fraction of Brent's method.
const CGOLD: f64 = 0.381_966_011_250_105_1;
/// Largest bracketing jump, in multiples of the last interval.
const GROW_LIMIT: f64 = 100.0;
/// Most expansions while bracketing (a line that keeps descending is taken as far as that).
const MAX_EXPANSIONS: usize = 60;
/// Most iterations of Brent's method per line.
const MAX_BRENT: usize = 100;

/// Why a search was interrupted.
pub(crate) enum Halt {
    Cancelled,
    MaxEvals,
    Failed(Error),
}

/// The objective with its evaluation budget, cancel flag, non-finite guard and best point.
struct Guarded<'a, F> {
    f: F,
    evals: usize,
    max_evals: usize,
    cancel: Option<&'a AtomicBool>,
    non_finite: usize,
    best_x: Vec<f64>,
    best_f: f64,
}

impl<F: FnMut(&[f64]) -> Result<f64>> Guarded<'_, F> {
    /// f(x), with non-finite values mapped to +inf.
    fn eval(&mut self, x: &[f64]) -> std::result::Result<f64, Halt> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Halt::Cancelled);
        }
        if self.evals >= self.max_evals {
            return Err(Halt::MaxEvals);
        }
        self.evals += 1;
        let v = (self.f)(x).map_err(Halt::Failed)?;
        if !v.is_finite() {
            self.non_finite += 1;
            return Ok(f64::INFINITY);
        }
        if v < self.best_f || self.best_f.is_nan() {
            self.best_f = v;
            self.best_x.clear();
            self.best_x.extend_from_slice(x);
        }
        Ok(v)
    }
}

/// `x + t d`.
fn along(x: &[f64], d: &[f64], t: f64) -> Vec<f64> {
    x.iter().zip(d).map(|(a, b)| a + t * b).collect()
}

/// Checks `scales` (length `n`, finite, > 0) and returns them (all 1 when `None`).
pub(crate) fn check_scales(op: &str, scales: Option<&[f64]>, n: usize) -> Result<Vec<f64>> {
    match scales {
        None => Ok(vec![1.0; n]),
        Some(s) if s.len() != n => Err(Error::Shape {
            op: op.to_string(),
            expected: format!("{n} scales (one per parameter)"),
            actual: format!("{} scales", s.len()),
        }),
        Some(s) => match s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            Some(v) => Err(Error::arg(op, format!("scales must be finite and > 0, got {v}"))),
            None => Ok(s.to_vec()),
        },
    }
}

/// Minimizes `phi(t) = f(x + t d)` starting from `t = 0` (where the value is `f0`): brackets a minimum
/// by expanding steps (golden ratio, or a parabolic extrapolation when it reaches further), then refines
/// it with Brent's method to within `tol` in `t`. Returns `(t, phi(t))` with `phi(t) <= f0`.
fn line_minimize<F: FnMut(&[f64]) -> Result<f64>>(
    g: &mut Guarded<'_, F>,
    x: &[f64],
    f0: f64,
    d: &[f64],
    tol: f64,
) -> std::result::Result<(f64, f64), Halt> {
    let mut phi = |t: f64| g.eval(&along(x, d, t));
    // Bracket: a < b < c (or reversed) with f(b) <= f(a), f(b) <= f(c).
    let (mut a, mut fa) = (0.0, f0);
    let (mut b, mut fb) = (1.0, phi(1.0)?);
    if fb > fa {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut fa, &mut fb);
    }
    let mut c = b + GOLD * (b - a);
    let mut fc = phi(c)?;
    let mut expansions = 0;
    while fc < fb {
        expansions += 1;
        if expansions > MAX_EXPANSIONS {
            // Still descending after a huge expansion: take the lowest point found.
            return Ok((c, fc));
        }
        let golden = c + GOLD * (c - b);
        // The vertex of the parabola through a, b, c, when it is a minimum and lies further out.
        let (r, q) = ((b - a) * (fb - fc), (b - c) * (fb - fa));
        let denom = 2.0 * (q - r);
        let mut u = golden;
        if denom.abs() > 1e-300 && fa.is_finite() {
            let vertex = b - ((b - c) * q - (b - a) * r) / denom;
            let limit = c + GROW_LIMIT * (c - b);
            // (c - b) has the direction of travel; the vertex must be beyond the golden step.
            if (vertex - golden) * (c - b) > 0.0 {
                u = if (vertex - limit) * (c - b) > 0.0 { limit } else { vertex };
            }
        }
        let fu = phi(u)?;
        (a, fa, b, fb, c, fc) = (b, fb, c, fc, u, fu);
    }
    // Brent's method on [lo, hi] around b.
    let (mut lo, mut hi) = if a < c { (a, c) } else { (c, a) };
    let (mut xm, mut fx) = (b, fb);
    let (mut w, mut fw, mut v, mut fv) = (b, fb, b, fb);
    let (mut d_step, mut e_prev) = (0.0f64, 0.0f64);
    for _ in 0..MAX_BRENT {
        let mid = 0.5 * (lo + hi);
        let tol1 = 1e-10 * xm.abs() + tol;
        let tol2 = 2.0 * tol1;
        if (xm - mid).abs() <= tol2 - 0.5 * (hi - lo) {
            break;
        }
        let mut take_golden = true;
        if e_prev.abs() > tol1 && fx.is_finite() && fw.is_finite() && fv.is_finite() {
            // Parabola through (xm, fx), (w, fw), (v, fv).
            let r = (xm - w) * (fx - fv);
            let q0 = (xm - v) * (fx - fw);
            let mut p = (xm - v) * q0 - (xm - w) * r;
            let mut q = 2.0 * (q0 - r);
            if q > 0.0 {
                p = -p;
            }
            q = q.abs();
            let older = e_prev;
            e_prev = d_step;
            // Accept if it moves less than half the step before last and stays inside (lo, hi).
            if p.abs() < (0.5 * q * older).abs() && p > q * (lo - xm) && p < q * (hi - xm) {
                d_step = p / q;
                let u = xm + d_step;
                if u - lo < tol2 || hi - u < tol2 {
                    d_step = tol1.copysign(mid - xm);
                }
                take_golden = false;
            }
        }
        if take_golden {
            e_prev = if xm >= mid { lo - xm } else { hi - xm };
            d_step = CGOLD * e_prev;
        }
        let u = if d_step.abs() >= tol1 { xm + d_step } else { xm + tol1.copysign(d_step) };
        let fu = phi(u)?;
        if fu <= fx {
            if u >= xm {
                lo = xm;
            } else {
                hi = xm;
            }
            (v, fv, w, fw, xm, fx) = (w, fw, xm, fx, u, fu);
        } else {
            if u < xm {
                lo = u;
            } else {
                hi = u;
            }
            if fu <= fw || w == xm {
                (v, fv, w, fw) = (w, fw, u, fu);
            } else if fu <= fv || v == xm || v == w {
                (v, fv) = (u, fu);
            }
        }
    }
    Ok((xm, fx))
}

/// Minimizes `f` from `x0` with Powell's conjugate-direction method (see the module documentation).
///
/// - `f`: the objective over a flat parameter vector; non-finite values are treated as `+inf`; an
///   error from it is returned as is.
/// - `x0`: the start point (finite).
/// - Returns the best point seen, its value, the counts and the stop reason ([`PowellResult`]).
///
/// Errors: an empty or non-finite `x0`; `scales` of the wrong length or not finite and positive;
/// negative tolerances; errors of `f`.
pub fn powell<F>(f: F, x0: &[f64], opts: &PowellOptions) -> Result<PowellResult>
where
    F: FnMut(&[f64]) -> Result<f64>,
{
    let n = x0.len();
    if n == 0 {
        return Err(Error::arg("powell", "no parameters to optimize"));
    }
    if let Some(v) = x0.iter().find(|v| !v.is_finite()) {
        return Err(Error::arg("powell", format!("the start point must be finite, got {v}")));
    }
    if !(opts.xtol >= 0.0 && opts.ftol >= 0.0) {
        return Err(Error::arg("powell", format!("xtol and ftol must be >= 0, got {} and {}", opts.xtol, opts.ftol)));
    }
    let scales = check_scales("powell", opts.scales.as_deref(), n)?;
    let mut g = Guarded {
        f,
        evals: 0,
        max_evals: opts.max_evals,
        cancel: opts.cancel.as_deref(),
        non_finite: 0,
        best_x: x0.to_vec(),
        best_f: f64::NAN,
    };
    let mut iterations = 0;
    let outcome = run(&mut g, x0, &scales, opts, &mut iterations);
    let stop = match outcome {
        Ok(reason) => reason,
        Err(Halt::Cancelled) => Stop::Cancelled,
        Err(Halt::MaxEvals) => Stop::Evaluations,
        Err(Halt::Failed(e)) => return Err(e),
    };
    if g.non_finite > 0 {
        tracing::warn!("powell: {} non-finite values treated as +inf (best f = {})", g.non_finite, g.best_f);
    }
    tracing::debug!("powell: {stop} after {} evaluations, {iterations} iterations, f = {}", g.evals, g.best_f);
    Ok(PowellResult { x: g.best_x, fval: g.best_f, evaluations: g.evals, iterations, non_finite: g.non_finite, stop })
}

/// The iterations of [`powell`]; returns the stop reason, or a [`Halt`].
fn run<F: FnMut(&[f64]) -> Result<f64>>(
    g: &mut Guarded<'_, F>,
    x0: &[f64],
    scales: &[f64],
    opts: &PowellOptions,
    iterations: &mut usize,
) -> std::result::Result<Stop, Halt> {
    let n = x0.len();
    let mut x = x0.to_vec();
    let mut fx = g.eval(&x)?;
    if !fx.is_finite() {
        return Ok(Stop::NonFinite);
    }
    let mut dirs: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut d = vec![0.0; n];
            d[i] = scales[i];
            d
        })
        .collect();
    // Line tolerance in t for direction d: xtol scaled units of displacement.
    let scaled_norm = |d: &[f64]| d.iter().zip(scales).map(|(a, s)| (a / s).powi(2)).sum::<f64>().sqrt();
    let line_tol = |d: &[f64]| opts.xtol.max(1e-12) / scaled_norm(d).max(1e-300);
    for it in 1..=opts.max_iterations {
        let (f_start, x_start) = (fx, x.clone());
        let (mut largest_drop, mut largest_i) = (0.0, 0);
        for (i, d) in dirs.iter().enumerate() {
            let before = fx;
            let (t, ft) = line_minimize(g, &x, fx, d, line_tol(d))?;
            if ft < fx {
                x = along(&x, d, t);
                fx = ft;
            }
            if before - fx > largest_drop {
                (largest_drop, largest_i) = (before - fx, i);
            }
        }
        *iterations = it;
        if 2.0 * (f_start - fx) <= opts.ftol * (f_start.abs() + fx.abs()) + 1e-25 {
            return Ok(Stop::Converged(Criterion::FChange));
        }
        let moved = x.iter().zip(&x_start).zip(scales).map(|((a, b), s)| ((a - b) / s).abs()).fold(0.0, f64::max);
        if moved <= opts.xtol {
            return Ok(Stop::Converged(Criterion::XChange));
        }
        // The net displacement of the iteration, and the extrapolated point one displacement further.
        let d_new: Vec<f64> = x.iter().zip(&x_start).map(|(a, b)| a - b).collect();
        let x_ext = along(&x, &d_new, 1.0);
        let f_ext = g.eval(&x_ext)?;
        if f_ext < f_start {
            // Acton's test (NR eq. 10.7.7): replace a direction only when it keeps the set independent.
            let t = 2.0 * (f_start - 2.0 * fx + f_ext) * (f_start - fx - largest_drop).powi(2)
                - largest_drop * (f_start - f_ext).powi(2);
            if t < 0.0 {
                let (s, fs) = line_minimize(g, &x, fx, &d_new, line_tol(&d_new))?;
                if fs < fx {
                    x = along(&x, &d_new, s);
                    fx = fs;
                }
                dirs[largest_i] = dirs[n - 1].clone();
                dirs[n - 1] = d_new;
            } else if f_ext < fx {
                x = x_ext;
                fx = f_ext;
            }
        }
    }
    Ok(Stop::Iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_minimize_finds_a_parabola_vertex() {
        // f(x) = (x - 7.3)^2 along d = 1 from 0: the bracket must expand, then Brent lands on 7.3.
        let mut g = Guarded {
            f: |x: &[f64]| Ok((x[0] - 7.3).powi(2)),
            evals: 0,
            max_evals: 1000,
            cancel: None,
            non_finite: 0,
            best_x: vec![0.0],
            best_f: f64::NAN,
        };
        let (t, ft) = line_minimize(&mut g, &[0.0], 7.3f64.powi(2), &[1.0], 1e-8).unwrap_or((f64::NAN, f64::NAN));
        assert!((t - 7.3).abs() < 1e-6, "t = {t}");
        assert!(ft < 1e-12);
        assert!(g.evals < 20, "{} evaluations", g.evals);
    }

    #[test]
    fn quadratic_in_two_iterations() {
        // A convex quadratic with a cross term: conjugate directions reach its minimum exactly.
        let f = |x: &[f64]| Ok(2.0 * (x[0] - 1.0).powi(2) + (x[1] + 2.0).powi(2) + (x[0] - 1.0) * (x[1] + 2.0));
        let opts = PowellOptions { xtol: 1e-10, ftol: 1e-14, ..Default::default() };
        let r = powell(f, &[5.0, 5.0], &opts).unwrap();
        assert!((r.x[0] - 1.0).abs() < 1e-7 && (r.x[1] + 2.0).abs() < 1e-7, "{r:?}");
        assert!(r.stop.is_converged(), "{}", r.stop);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let f = |x: &[f64]| Ok(x[0] * x[0]);
        assert!(powell(f, &[], &PowellOptions::default()).is_err());
        assert!(powell(f, &[f64::NAN], &PowellOptions::default()).is_err());
        let opts = PowellOptions { scales: Some(vec![1.0, 2.0]), ..Default::default() };
        assert!(powell(f, &[1.0], &opts).is_err());
        let opts = PowellOptions { scales: Some(vec![0.0]), ..Default::default() };
        assert!(powell(f, &[1.0], &opts).is_err());
    }
}
