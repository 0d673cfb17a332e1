//! Multi-scale deformable registration: a dense model (greedy displacement field, stationary velocity
//! field or cubic B-spline) is optimized over a coarse-to-fine pyramid after a fixed linear transform,
//! with a similarity loss, a regularizer, and Gaussian smoothing of the update and of the field.
//!
//! The map from fixed to moving points is `x -> A(x + u(x))` (the dense stage first, then the linear
//! one, in the point order of `antsApplyTransforms -t affine -t warp` read right to left, i.e. ANTs'
//! `1Warp` then `0GenericAffine`), with `u` a `(3, Z, Y, X)` displacement in world mm on the fixed grid.
//!
//! Each level's step decays linearly from its largest to a tenth, and the field smoothing after a step is
//! a diffusion whose duration is proportional to the step (sigma `sigma_field * sqrt(step /
//! sigma_field_step)`), so the balance between the measure's pull and the smoothing holds while the step
//! decays and the loss falls to the level's end. A level ends at its iteration cap or when its loss stops
//! paying ([`Plateau`]: the last 10 iterations added at most 5 % of the level's fall), after a cool-down
//! in which the step decays to its smallest; it returns the best field it evaluated.
//!
//! | model | parameters | update |
//! |---|---|---|
//! | `Greedy` | `u` on the level's grid | Adam on `u`, gradient smoothed by `sigma_grad`, `u` smoothed by `sigma_field` after each step (FireANTs' greedy registration; Demons' fluid / elastic smoothing, Vercauteren et al. 2009) |
//! | `Svf` | velocity `v` on the level's grid, `u = exp(v) - id` by scaling and squaring | as `Greedy`, on `v` (diffeomorphic: Arsigny et al. 2006, Ashburner 2007) |
//! | `BSpline` | coefficients on one lattice (control spacing in mm) for all levels | Adam on the coefficients (Rueckert et al. 1999) |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use serde::Serialize;

use super::convergence::Plateau;
use super::iso::{fix_ranges, LevelReport, Schedule};
use super::optimizer::{Adam, AdamMoments, Optimizer};
use super::stop::{Criterion, Stop};
use crate::error::{Error, Result};
use crate::image::resample::{resample, Interpolation, Padding};
use crate::image::smooth::pyramid;
use crate::image::{DataType, Grid, Image};
use crate::metrics::Metric;
use crate::ops::local_filter::{gaussian_smooth, gaussian_smooth_volumes};
use crate::ops::warp_field;
use crate::spatial::{BSpline, Ddf, Linear, Svf, Transform};

/// The dense model optimized by [`iso_dense`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum DenseModel {
    /// A displacement field updated greedily (no integration; smoothing keeps it invertible in practice).
    Greedy,
    /// A stationary velocity field integrated with `steps` squarings.
    Svf { steps: usize },
    /// A cubic B-spline with control points every `spacing` mm.
    BSpline { spacing: f64 },
}

impl DenseModel {
    /// The model's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            DenseModel::Greedy => "syn",
            DenseModel::Svf { .. } => "svf",
            DenseModel::BSpline { .. } => "bspline",
        }
    }
}

pub use crate::metrics::regularizers::Regularizer;

/// Options of [`iso_dense`].
#[derive(Clone)]
pub struct DenseOptions {
    /// Factors, iterations, pyramid sigmas and Adam learning rates (mm per step) per level.
    pub schedule: Schedule,
    pub metric: Metric,
    pub regularizer: Option<Regularizer>,
    /// Gaussian sigma (voxels of the level) applied to the gradient before each step (`Greedy`, `Svf`).
    pub sigma_grad: f64,
    /// Gaussian sigma (voxels of the level) applied to the field after a step of `sigma_field_step` mm
    /// (`Greedy`, `Svf`); a step of `s` mm is followed by `sigma_field * sqrt(s / sigma_field_step)` (a
    /// diffusion whose duration is proportional to the step). 0: none.
    pub sigma_field: f64,
    /// The step (mm; its largest vector) after which the field is smoothed by exactly `sigma_field`: a
    /// tenth of the fixed image's mean voxel size by default (the first step of a level, half a voxel,
    /// then gets `sqrt(5) sigma_field`, the last `sqrt(0.5) sigma_field`).
    pub sigma_field_step: f64,
    /// Only fixed voxels inside this mask (non-zero, on the fixed grid) count.
    pub fixed_mask: Option<Image>,
    /// The stopping rule: when it holds, the level's step cools down over `cooldown` iterations and the
    /// level ends; `None`: every level runs to its iteration cap.
    pub plateau: Option<Plateau>,
    /// With a patience `n > 0` a level also stops when `n` iterations in a row found no loss below its
    /// best; 0 (the default): no such test. Every level returns the best field it evaluated.
    pub patience: usize,
    /// Set to true (e.g. by Ctrl-C) to stop; the best field reached so far is kept.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Run `Greedy` levels on the fused path ([`greedy_level_fused`]: the field warp with its
    /// derivative, the fused LNCC, smoothing and the step on plain volumes) instead of tensors with
    /// autograd. The two compute the same iterations up to rounding; `false` (the tensor path) is
    /// the slow twin the tests compare against.
    pub fused: bool,
}

impl DenseOptions {
    /// Defaults for `model` with `metric`: 3 levels (factors 4, 2, 1) of at most 100, 100, 50
    /// iterations, a largest step of half a fixed voxel (mm) decaying linearly to a tenth over each
    /// level, gradient sigma 3 voxels and field sigma 1 voxel per tenth of a voxel of step (no extra
    /// regularizer) for `Greedy` / `Svf`; bending energy 1e-2 for `BSpline` (a regularizer attached to
    /// `metric`, [`Metric::with_regularizer`], replaces these); the plateau rule ([`Plateau::default`]);
    /// no patience.
    ///
    /// Why the field's smoothing follows the step, measured: with a fixed sigma (1 voxel after every
    /// step) the smoothing pulls the field back by the same amount each iteration while the step
    /// decays, so the smoothing's share grows tenfold over a level and every level's loss climbs away
    /// from its best from about a fifth of the way in (the main job's MI levels: half resolution best
    /// -0.587 at iteration 26, -0.551 after 100). Smoothing in proportion to the step keeps one balance,
    /// and the losses fall to the end of each level. Which balance (tried: sigma 1 per twentieth, tenth,
    /// sixth, quarter and half of a voxel of step, every level to its cap): per tenth, with the plateau
    /// rule, gave on Colin27 at 2 mm moved by a known smooth field (LNCC, `tests/register.rs`) AAL Dice
    /// 0.963 and 0.37 mm from the truth (a fixed sigma of 1 voxel: 0.958, 0.47 mm); on avg152 moved by
    /// known deformations with a T2-like contrast (MI, `tests/learn_unet.rs`) Dice 0.949, 1.06 mm (0.948,
    /// 1.04 mm); on the main job grey / white matter Dice 0.8190 / 0.7899 (0.8187 / 0.7885), each in less
    /// time. Weaker smoothing fits MI past the truth (main job white matter 0.7834 per quarter voxel,
    /// 0.7813 per half), stronger loses detail (per twentieth: LNCC Dice 0.948).
    ///
    pub fn defaults(model: DenseModel, metric: Metric, fixed: &Grid) -> Result<Self> {
        let mut schedule = Schedule::new(3, &[100, 100, 50], 1.0)?;
        let vox = fixed.spacing().iter().sum::<f64>() / 3.0;
        schedule.lr = schedule.factors.iter().map(|_| 0.5 * vox).collect();
        // A regularizer that comes with the measure (`lncc + 0.1 * bending`) replaces the model's default.
        let regularizer = match (metric.regularizer(), model) {
            (Some(r), _) => Some(r.clone()),
            (None, DenseModel::BSpline { .. }) => Some(Regularizer::Bending(1e-2)),
            (None, _) => None,
        };
        let metric = metric.without_regularizer();
        Ok(DenseOptions {
            schedule,
            metric,
            regularizer,
            sigma_grad: 3.0,
            sigma_field: 1.0,
            sigma_field_step: 0.1 * vox,
            fixed_mask: None,
            plateau: Some(Plateau::default()),
            patience: 0,
            cancel: None,
            fused: true,
        })
    }
}

/// The result of [`iso_dense`].
#[derive(Clone, Debug)]
pub struct DenseResult {
    /// The displacement `u` (mm) on the fixed grid: fixed point `x` maps to `A(x + u(x))`.
    pub field: Ddf,
    pub levels: Vec<LevelReport>,
    pub seconds: f64,
}

/// The largest length of the vectors of a `(3, Z, Y, X)` field stored component-major (`3 n` values); NaN
/// if any component is NaN.
fn largest_vector(dir: &[f32]) -> f64 {
    use rayon::prelude::*;
    let n = dir.len() / 3;
    let (dx, rest) = dir.split_at(n);
    let (dy, dz) = rest.split_at(n);
    (0..n)
        .into_par_iter()
        .with_min_len(4096)
        .map(|i| dx[i] * dx[i] + dy[i] * dy[i] + dz[i] * dz[i])
        .reduce(|| 0f32, |a, b| if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) })
        .sqrt() as f64
}

/// Adam on a dense field with the step normalized so that its largest vector moves `lr` mm (FireANTs'
/// warp optimizer): Adam alone moves every voxel with a gradient by about `lr`, however small the
/// gradient; normalizing by the largest step keeps the update's shape and bounds it, so a step never
/// folds a smooth field. On plain `(3, Z, Y, X)` volumes (component-major), with Adam's arithmetic from
/// [`AdamMoments`]; [`field_step_tensor`] is its tensor twin.
struct FieldStep {
    moments: AdamMoments<f32>,
    dir: Vec<f32>,
}

impl FieldStep {
    fn new(n: usize) -> Self {
        FieldStep { moments: AdamMoments::new(n), dir: vec![0.0; n] }
    }

    /// Subtracts the step of `lr` mm for the gradient `g` from `u` (both `3 n` values); no step when the
    /// direction is zero or not finite.
    fn apply(&mut self, g: &[f32], u: &mut [f32], lr: f64) {
        use rayon::prelude::*;
        self.moments.direction(g, &mut self.dir);
        let norm = largest_vector(&self.dir);
        if !(norm > 0.0 && norm.is_finite()) {
            return;
        }
        let s = (lr / norm) as f32;
        u.par_iter_mut().zip(self.dir.par_iter()).for_each(|(x, d)| *x -= d * s);
    }
}

/// The step (mm) of [`FieldStep`] for the gradient `g` `(3, Z, Y, X)` on tensors (any device), from the
/// tensor [`Adam`]'s direction: the slow twin the tests compare the fused path with.
fn field_step_tensor(adam: &mut Adam, g: &Tensor, lr: f64) -> Result<Tensor> {
    adam.tick();
    let dir = adam.direction(0, g)?;
    let norm = dir.sqr()?.sum_keepdim(0)?.sqrt()?.max_all()?.to_scalar::<f32>()? as f64;
    if !(norm > 0.0 && norm.is_finite()) {
        return Ok(dir.zeros_like()?);
    }
    Ok((dir * (lr / norm))?)
}

/// What a dense level works on: its images, the map of its voxels into the moving image, its mask and
/// learning rate, the iterations and the progress bar.
struct Level<'a> {
    /// The fixed and moving images at this level.
    fixed: &'a Image,
    moving: &'a Image,
    /// Sample points in moving voxels: `M i + R u` for fixed voxel `i` and displacement `u` (mm).
    mvox: [f64; 12],
    r: [f64; 9],
    /// The fixed mask on this level's grid.
    mask: Option<Tensor>,
    /// The largest step of the first iteration (mm); it decays linearly to a tenth.
    lr0: f64,
    iters: usize,
    bar: &'a indicatif::ProgressBar,
}

/// The steps (mm) of one dense level: a linear decay from the first step to a tenth over the level's
/// iterations (the step bounds the field's jitter, so it must end small); once the plateau rule holds,
/// a cool-down: from the step of that iteration linearly to the tenth over `cooldown` iterations, after
/// which the level ends.
struct Steps {
    lr0: f64,
    iters: usize,
    /// The stopping rule (its cool-down's length with it); `None`: the level runs to its cap.
    plateau: Option<Plateau>,
    /// The iteration the cool-down began at and its step then.
    cooling: Option<(usize, f64)>,
}

impl Steps {
    fn new(lr0: f64, iters: usize, plateau: Option<Plateau>) -> Self {
        Steps { lr0, iters: iters.max(1), plateau, cooling: None }
    }

    fn cooldown(&self) -> usize {
        self.plateau.map_or(0, |p| p.cooldown)
    }

    /// The step of iteration `it`.
    fn lr(&self, it: usize) -> f64 {
        let last = 0.1 * self.lr0;
        match self.cooling {
            Some((start, from)) => {
                let f = ((it + 1 - start) as f64 / self.cooldown().max(1) as f64).min(1.0);
                from + (last - from) * f
            }
            None => self.lr0 * (1.0 - 0.9 * it as f64 / self.iters as f64),
        }
    }

    /// Called after iteration `it`'s loss is known: whether the level ends now (its cool-down is over, or
    /// the plateau rule holds with no cool-down). Starts the cool-down when the rule first holds.
    fn done(&mut self, it: usize, losses: &[f64]) -> bool {
        if let Some((start, _)) = self.cooling {
            return it >= start + self.cooldown();
        }
        if self.plateau.is_some_and(|p| p.holds(losses)) {
            if self.cooldown() == 0 {
                return true;
            }
            self.cooling = Some((it, self.lr(it)));
        }
        false
    }
}

/// The field sigma (voxels) after a step of `lr` mm: `sigma_field * sqrt(lr / sigma_field_step)`.
fn field_sigma(opts: &DenseOptions, lr: f64) -> f64 {
    if opts.sigma_field > 0.0 && opts.sigma_field_step > 0.0 {
        opts.sigma_field * (lr / opts.sigma_field_step).sqrt()
    } else {
        0.0
    }
}

/// What one dense level reached: the parameters it returns, the losses (one per iteration) and why it
/// stopped.
struct DenseRun<P> {
    params: P,
    /// The loss reported as the level's final one: of the best parameters when the level returns them,
    /// else the last iteration's (NaN when there is none).
    best: f64,
    losses: Vec<f64>,
    stop: Stop,
}

/// The best parameters a level has evaluated (what the level returns), and the patience test on them:
/// with a patience the level stops once that many iterations in a row found nothing better.
struct Best<P> {
    params: Option<P>,
    loss: f64,
    since: usize,
    patience: usize,
}

impl<P> Best<P> {
    fn new(patience: usize) -> Self {
        Best { params: None, loss: f64::INFINITY, since: 0, patience }
    }

    /// Records the finite `loss` of the parameters `params` returns (called only for a new best); true
    /// when the level has now gone `patience` iterations without a better loss.
    fn push(&mut self, loss: f64, params: impl FnOnce() -> Result<P>) -> Result<bool> {
        if loss < self.loss {
            self.loss = loss;
            self.params = Some(params()?);
            self.since = 0;
        } else {
            self.since += 1;
        }
        Ok(self.patience > 0 && self.since >= self.patience)
    }

    /// The run: the best parameters evaluated (`start` when no loss was finite) and their loss.
    fn finish(self, start: P, losses: Vec<f64>, stop: Stop) -> DenseRun<P> {
        let best = if self.params.is_some() { self.loss } else { f64::NAN };
        DenseRun { params: self.params.unwrap_or(start), best, losses, stop }
    }
}

/// The regularizer's term (weight included) of the field `u` `(3, Z, Y, X)` mm on `grid`, or `None`
/// when there is none (or its weights are 0).
fn regularizer_term(reg: Option<&Regularizer>, u: &Tensor, grid: &Grid) -> Result<Option<Tensor>> {
    match reg {
        Some(r) => r.term(u, grid),
        None => Ok(None),
    }
}

/// One `Greedy` level on plain volumes: per iteration the fused field warp with its derivative
/// ([`crate::ops::warp::warp_field_with_grad`]), the measure's gradient with respect to the warped image
/// (the fused kernels [`crate::ops::lncc::lncc_loss_grad`] for LNCC and
/// [`crate::ops::point_metric::dense_loss_grad`] for global MI and NMI; autograd of [`Metric::loss`] on
/// the warped image for the others), the chain rule to the field, the regularizer's gradient (tensors),
/// the smoothing of the gradient, the normalized Adam step and the smoothing of the field (by
/// [`field_sigma`] of the step): the same iterations as [`dense_level_tensor`], with no autograd graph
/// over the warp.
fn greedy_level_fused(lv: &Level, init: &[f32], metric: &Metric, opts: &DenseOptions) -> Result<DenseRun<Vec<f32>>> {
    let g = lv.fixed.grid().clone();
    let shape = g.shape();
    let nv = g.num_voxels();
    let dev = lv.fixed.data().device();
    let mdata = lv.moving.to_vec_f32()?;
    let mshape = lv.moving.grid().shape();
    let mvec = lv.mask.as_ref().map(|m| m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
    let lncc = match metric.lncc_window() {
        Some(w) => Some(
            crate::ops::lncc::LnccFixed::new(&lv.fixed.to_vec_f32()?, shape, w, mvec.as_deref())
                .map_err(|e| Error::arg("iso_dense", e))?,
        ),
        None => None,
    };
    // Global MI and NMI on the fused dense form (the level's mask is 0 / 1); other measures through
    // autograd on the warped image.
    use crate::ops::point_metric::{dense_loss_grad, PointMeasure};
    let parzen = metric.point_measure().filter(|m| matches!(m, PointMeasure::Mi(_) | PointMeasure::Nmi(_)));
    let fdata = if parzen.is_some() { lv.fixed.to_vec_f32()? } else { Vec::new() };
    let [z, y, x] = g.zyx();
    let regularized = opts.regularizer.as_ref().is_some_and(Regularizer::is_active);
    let mut u = init.to_vec();
    let mut best = Best::new(opts.patience);
    let mut step = FieldStep::new(3 * nv);
    let mut steps = Steps::new(lv.lr0, lv.iters, opts.plateau);
    let (mut losses, mut stop) = (Vec::with_capacity(lv.iters), Stop::Iterations);
    for it in 0..lv.iters {
        if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            stop = Stop::Cancelled;
            break;
        }
        let (w, du) = crate::ops::warp::warp_field_with_grad(&mdata, mshape, &u, shape, lv.mvox, lv.r)
            .map_err(|e| Error::arg("iso_dense", e))?;
        let (sim, gw) = match &lncc {
            Some(fx) => {
                let l = crate::ops::lncc::lncc_loss_grad(fx, &w, true).map_err(|e| Error::arg("iso_dense", e))?;
                (l.loss, l.grad)
            }
            None if parzen.is_some() => {
                let pm = parzen.as_ref().ok_or_else(|| Error::arg("iso_dense", "no Parzen measure"))?;
                dense_loss_grad(pm, &fdata, &w, mvec.as_deref()).map_err(|e| Error::arg("iso_dense", e))?
            }
            None => {
                let wv = Var::from_tensor(&Tensor::from_vec(w, (1, z, y, x), dev)?)?;
                let loss = metric.loss(lv.fixed.data(), wv.as_tensor(), lv.mask.as_ref())?;
                let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                let gr = loss.backward()?;
                let gw = match gr.get(wv.as_tensor()) {
                    Some(t) => t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                    None => vec![0.0; nv],
                };
                (lv, gw)
            }
        };
        let mut gu = du;
        for c in 0..3 {
            gu[c * nv..(c + 1) * nv].iter_mut().zip(&gw).for_each(|(d, gv)| *d *= gv);
        }
        let mut loss = sim;
        if regularized {
            let uv = Var::from_tensor(&Tensor::from_slice(&u, (3, z, y, x), dev)?)?;
            if let Some(term) = regularizer_term(opts.regularizer.as_ref(), uv.as_tensor(), &g)? {
                let term = term.to_dtype(DType::F32)?;
                loss += term.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if let Some(t) = term.backward()?.get(uv.as_tensor()) {
                    let tg = t.flatten_all()?.to_vec1::<f32>()?;
                    gu.iter_mut().zip(&tg).for_each(|(a, b)| *a += b);
                }
            }
        }
        if !loss.is_finite() {
            stop = Stop::NonFinite;
            tracing::warn!("dense level: loss is {loss} (similarity {sim}); keeping the best finite field");
            break;
        }
        losses.push(loss);
        super::progress::tick(lv.bar, loss);
        if best.push(loss, || Ok(u.clone()))? {
            stop = Stop::Converged(Criterion::NoImprovement);
            break;
        }
        if steps.done(it, &losses) {
            stop = Stop::Converged(Criterion::Plateau);
            break;
        }
        let gs = gaussian_smooth_volumes(&gu, shape, opts.sigma_grad);
        let lr = steps.lr(it);
        step.apply(&gs, &mut u, lr);
        let sf = field_sigma(opts, lr);
        if sf > 0.0 {
            u = gaussian_smooth_volumes(&u, shape, sf);
        }
    }
    Ok(best.finish(init.to_vec(), losses, stop))
}

/// One dense level on tensors (any model, any device; the slow twin of [`greedy_level_fused`]): per
/// iteration the field of the parameters (`field_of`: the field itself, an SVF's exponential, or a
/// B-spline's field), the warp, the measure and the regularizer with autograd, then Adam on B-spline
/// coefficients, or for fields the smoothed gradient's normalized step and the smoothing of the field.
fn dense_level_tensor(
    lv: &Level,
    init: &Tensor,
    field_of: &dyn Fn(&Tensor) -> Result<Tensor>,
    lattice: bool,
    metric: &Metric,
    opts: &DenseOptions,
) -> Result<DenseRun<Tensor>> {
    let var = Var::from_tensor(init)?;
    let mut opt = Adam::new(lv.lr0, vec![None]);
    let mut steps = Steps::new(lv.lr0, lv.iters, opts.plateau);
    let mut best = Best::new(opts.patience);
    let (mut losses, mut stop) = (Vec::with_capacity(lv.iters), Stop::Iterations);
    for it in 0..lv.iters {
        if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            stop = Stop::Cancelled;
            break;
        }
        let u = field_of(var.as_tensor())?;
        let warped = warp_field(lv.moving.data(), &u, lv.mvox, lv.r, false)?;
        // The slow twin of the fused greedy path computes LNCC from tensor ops too.
        let mut loss = match (opts.fused, metric.lncc_window()) {
            (false, Some(w)) => {
                crate::metrics::functional::lncc_slow(lv.fixed.data(), &warped, w, lv.mask.as_ref())?.neg()?
            }
            _ => metric.loss(lv.fixed.data(), &warped, lv.mask.as_ref())?,
        };
        let sim = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if let Some(term) = regularizer_term(opts.regularizer.as_ref(), &u, lv.fixed.grid())? {
            loss = (&loss + term.to_dtype(loss.dtype())?)?;
        }
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            stop = Stop::NonFinite;
            tracing::warn!("dense level: loss is {value} (similarity {sim}); keeping the best finite field");
            break;
        }
        losses.push(value);
        super::progress::tick(lv.bar, value);
        if best.push(value, || Ok(var.as_tensor().detach().copy()?))? {
            stop = Stop::Converged(Criterion::NoImprovement);
            break;
        }
        if steps.done(it, &losses) {
            stop = Stop::Converged(Criterion::Plateau);
            break;
        }
        let lr = steps.lr(it);
        opt.set_lr(lr);
        let mut grads = loss.backward()?;
        if lattice {
            opt.step(std::slice::from_ref(&var), &grads)?;
        } else if let Some(gr) = grads.remove(var.as_tensor()) {
            let step = field_step_tensor(&mut opt, &gaussian_smooth(&gr, opts.sigma_grad)?, lr)?;
            let next = (var.as_tensor() - step)?;
            let sf = field_sigma(opts, lr);
            var.set(&if sf > 0.0 { gaussian_smooth(&next, sf)? } else { next })?;
        }
    }
    Ok(best.finish(init.clone(), losses, stop))
}

/// A `(3, Z, Y, X)` field on `from` resampled onto `to` (trilinear, border), values kept in mm.
fn carry_field(t: &Tensor, from: &Grid, to: &Grid) -> Result<Tensor> {
    if from.same_as(to, 1e-9) {
        return Ok(t.clone());
    }
    let img = Image::new(t.clone(), from.clone(), DataType::Float32)?;
    Ok(resample(&img, to, Interpolation::Linear, Padding::Border)?.data().clone())
}

/// Multi-scale deformable registration of `moving` to `fixed` after the fixed linear transform `affine`
/// (fixed to moving world points): returns the displacement `u` on the fixed grid such that the moving
/// image sampled at `affine(x + u(x))` matches the fixed image at `x`.
///
/// At each level both images are smoothed and resampled to the level's grid (as in [`super::iso_linear`]);
/// the loss is `metric.loss(fixed, warped) + regularizer(field)`; parameters are carried to the next
/// level by trilinear resampling (`Greedy`, `Svf`) or kept on one lattice (`BSpline`). Each level ends
/// at its iteration cap, after the plateau rule's cool-down ("converged (plateau)"), after `patience`
/// iterations without a better loss ("converged (no improvement)"), at Ctrl-C or at a non-finite loss,
/// and carries the best field it evaluated on.
///
/// Errors: an invalid schedule; images with several channels; a B-spline spacing not positive; tensor
/// errors.
pub fn iso_dense(
    fixed: &Image,
    moving: &Image,
    affine: &Linear,
    model: DenseModel,
    opts: &DenseOptions,
) -> Result<DenseResult> {
    opts.schedule.check()?;
    if fixed.channels() != 1 || moving.channels() != 1 {
        return Err(Error::arg("iso_dense", "fixed and moving must have one channel each"));
    }
    let start = Instant::now();
    let metric = fix_ranges(&opts.metric, fixed, moving)?;
    let s = &opts.schedule;
    let fpyr = pyramid(fixed, &s.factors, s.sigmas.as_deref())?;
    let mpyr = pyramid(moving, &s.factors, s.sigmas.as_deref())?;
    let a = crate::spatial::matrix44_of(&affine.matrix()?.detach())?;
    let bspline = match model {
        DenseModel::BSpline { spacing } => Some(BSpline::zeros(fixed.grid().clone(), [spacing; 3])?),
        _ => None,
    };
    // Parameters: the field (or velocity) on the current level's grid, or the B-spline coefficients.
    let mut param: Option<(Tensor, Grid)> = None;
    let mut levels = Vec::new();
    let mut last_field: Option<Ddf> = None;
    for (l, (fl, ml)) in fpyr.iter().zip(&mpyr).enumerate() {
        let t0 = Instant::now();
        let g = fl.image.grid().clone();
        let init = match (&bspline, &param) {
            (Some(_), Some((c, _))) => c.clone(),
            (Some(b), None) => b.coeffs().clone(),
            (None, Some((p, pg))) => carry_field(p, pg, &g)?,
            (None, None) => {
                let [z, y, x] = g.zyx();
                Tensor::zeros((3, z, y, x), DType::F32, fl.image.data().device())?
            }
        };
        // Sample points in moving voxels: W2V_m A (V2W_f i + u) = M i + R u.
        let w2v = ml.image.grid().world_to_voxel();
        let mm = w2v * a * g.voxel_to_world();
        let rm = w2v * a;
        let mvox: [f64; 12] = std::array::from_fn(|i| mm[(i / 4, i % 4)]);
        let r: [f64; 9] = std::array::from_fn(|i| rm[(i / 3, i % 3)]);
        let mask = opts.fixed_mask.as_ref().map(|m| super::iso::level_mask(m, &g)).transpose()?;
        let field_of = |p: &Tensor| -> Result<Tensor> {
            Ok(match model {
                DenseModel::Greedy => p.clone(),
                DenseModel::Svf { steps } => Svf::new(p.clone(), g.clone(), steps)?.to_ddf()?.field().clone(),
                DenseModel::BSpline { .. } => {
                    // Infallible: `bspline` is Some for this model.
                    let b = bspline.as_ref().ok_or_else(|| Error::arg("iso_dense", "no lattice"))?;
                    b.with_coeffs(p.clone())?.to_ddf_on(&g)?.field().clone()
                }
            })
        };
        let iters = s.iterations[l];
        let bar = super::progress::level_bar(model.name(), l, s.factors.len(), iters);
        let lv = Level { fixed: &fl.image, moving: &ml.image, mvox, r, mask, lr0: s.lr[l], iters, bar: &bar };
        let fused = opts.fused && model == DenseModel::Greedy && init.device().is_cpu();
        let (good, best, losses, stop) = if fused {
            let run = greedy_level_fused(&lv, &init.flatten_all()?.to_vec1::<f32>()?, &metric, opts)?;
            (Tensor::from_vec(run.params, init.shape(), init.device())?, run.best, run.losses, run.stop)
        } else {
            let run = dense_level_tensor(&lv, &init, &field_of, bspline.is_some(), &metric, opts)?;
            (run.params, run.best, run.losses, run.stop)
        };
        last_field = Some(Ddf::new(field_of(&good)?, g.clone())?);
        bar.finish_and_clear();
        let path = if fused { ", fused" } else { "" };
        tracing::info!("dense level {l} (factor {}{path}): {} iterations, {stop}", s.factors[l], losses.len());
        let mut report = LevelReport::of_losses(s.factors[l], losses, stop, t0.elapsed().as_secs_f64());
        // The final loss is that of the field the level returns.
        report.final_loss = best;
        levels.push(report);
        param = Some((good, g));
        if stop.is_cancelled() {
            break;
        }
    }
    let field = match last_field {
        Some(f) if f.grid().same_as(fixed.grid(), 1e-9) => f,
        Some(f) => Ddf::new(carry_field(f.field(), f.grid(), fixed.grid())?, fixed.grid().clone())?,
        None => Ddf::zeros(fixed.grid().clone())?,
    };
    Ok(DenseResult { field, levels, seconds: start.elapsed().as_secs_f64() })
}

/// The fixed-to-moving transform of a dense result after `affine`: `x -> affine(x + u(x))`, as a
/// composite in point order (`[field, affine]`).
pub fn dense_transform(field: &Ddf, affine: &Linear) -> crate::spatial::Composite {
    crate::spatial::Composite::new(vec![Arc::new(field.clone()) as Arc<dyn Transform>, Arc::new(affine.clone())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_decay_to_a_tenth_and_cool_down_from_where_the_plateau_held() {
        let p = Plateau { window: 2, fraction: 0.1, cooldown: 4 };
        let mut s = Steps::new(1.0, 10, Some(p));
        assert!((s.lr(0) - 1.0).abs() < 1e-12 && (s.lr(5) - 0.55).abs() < 1e-12 && (s.lr(10) - 0.1).abs() < 1e-12);
        // Falling, then flat: the rule first holds at iteration 4 (the window 2 -> 4 fell 0 of 8), where
        // the step is 0.64.
        let losses = [10.0, 5.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0];
        assert!((0..4).all(|i| !s.done(i, &losses[..=i])));
        assert!(!s.done(4, &losses[..5]));
        // The cool-down: 0.64 -> 0.1 linearly over the steps of iterations 4..=7, then the level ends at 8.
        for (i, f) in [0.25, 0.5, 0.75, 1.0].iter().enumerate() {
            let e = 0.64 + (0.1 - 0.64) * f;
            assert!((s.lr(4 + i) - e).abs() < 1e-12, "cool-down step {i}: {} vs {e}", s.lr(4 + i));
        }
        assert!((5..8).all(|i| !s.done(i, &losses[..=i])));
        assert!(s.done(8, &losses));
        // No cool-down: the level ends where the rule holds; no rule: never.
        let p0 = Plateau { cooldown: 0, ..p };
        let mut s0 = Steps::new(1.0, 10, Some(p0));
        assert!(!s0.done(3, &losses[..4]) && s0.done(4, &losses[..5]));
        let mut none = Steps::new(1.0, 10, None);
        assert!((0..9).all(|i| !none.done(i, &losses[..=i])));
    }

    #[test]
    fn the_field_sigma_grows_with_the_square_root_of_the_step() {
        let g = Grid::new([10, 10, 10], [2.0; 3], [0.0; 3], nalgebra::Matrix3::identity()).unwrap();
        let m = Metric::new("lncc").unwrap();
        let mut o = DenseOptions::defaults(DenseModel::Greedy, m, &g).unwrap();
        // Defaults: sigma 1 after a tenth of a voxel (0.2 mm), sqrt(5) after the first step (1 mm).
        assert!((o.sigma_field_step - 0.2).abs() < 1e-12 && (o.schedule.lr[0] - 1.0).abs() < 1e-12);
        assert!((field_sigma(&o, 0.2) - 1.0).abs() < 1e-12);
        assert!((field_sigma(&o, 1.0) - 5f64.sqrt()).abs() < 1e-12);
        o.sigma_field = 0.0;
        assert_eq!(field_sigma(&o, 1.0), 0.0);
    }
}
