//! Multi-scale deformable registration: a dense model (greedy displacement field, stationary velocity
//! field or cubic B-spline) is optimized over a coarse-to-fine pyramid after a fixed linear transform,
//! with a similarity loss, a regularizer, and Gaussian smoothing of the update and of the field.
//!
//! The map from fixed to moving points is `x -> A(x + u(x))` (the dense stage first, then the linear
//! one, in the point order of `antsApplyTransforms -t affine -t warp` read right to left, i.e. ANTs'
//! `1Warp` then `0GenericAffine`), with `u` a `(3, Z, Y, X)` displacement in world mm on the fixed grid.
//! With a patience ([`DenseOptions::patience`]) a level stops after that many iterations without a
//! better loss and returns the best field it evaluated.
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

use super::convergence::WindowedSlope;
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
    /// Gaussian sigma (voxels of the level) applied to the field after each step (`Greedy`, `Svf`); 0:
    /// none.
    pub sigma_field: f64,
    /// Only fixed voxels inside this mask (non-zero, on the fixed grid) count.
    pub fixed_mask: Option<Image>,
    /// Windowed-slope convergence: window (iterations) and relative slope tolerance.
    pub convergence: (usize, f64),
    /// With a patience `n > 0` a level stops when `n` iterations in a row found no loss below its best,
    /// and returns the best field it evaluated (not its last); 0 (the default) runs every level to its
    /// iteration cap or the slope test and returns its last field.
    pub patience: usize,
    /// Set to true (e.g. by Ctrl-C) to stop; the field reached so far is kept.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Run `Greedy` levels on the fused path ([`greedy_level_fused`]: the field warp with its
    /// derivative, the fused LNCC, smoothing and the step on plain volumes) instead of tensors with
    /// autograd. The two compute the same iterations up to rounding; `false` (the tensor path) is
    /// the slow twin the tests compare against.
    pub fused: bool,
}

impl DenseOptions {
    /// Defaults for `model` with `metric`: 3 levels (factors 4, 2, 1) of 100, 100, 50 iterations, a largest
    /// step of half a fixed voxel (mm) decaying linearly to a tenth over each level, gradient sigma 3 and
    /// field sigma 1 voxel (no extra regularizer) for `Greedy` / `Svf`; bending energy 1e-2 for
    /// `BSpline` (a regularizer attached to `metric`, [`Metric::with_regularizer`], replaces these); no
    /// patience (every level runs to its cap or the slope test and returns its last field).
    /// Tuned on Colin27 at 2 mm with a known smooth deformation (see `tests/register.rs`).
    ///
    /// The field sigma and the patience, measured: on the main job's pair (avg152 T2 onto ICBM 2009a T1
    /// at 2 mm, MI) smoothing the field by 1 voxel after every step pulls it back each iteration while
    /// the step decays, so every level's loss climbs away from its best from about a fifth of the way in;
    /// without the smoothing the losses fall to the last iteration, but the field then fits MI past the
    /// truth: on avg152 moved by known deformations (T2-like contrast, `tests/learn_unet.rs`) MI ends
    /// above the true transform's, Dice 0.901 instead of 0.949 and the error above the identity's. With
    /// LNCC on Colin27 moved by a known smooth field the smoothing keeps the field regular too (AAL Dice
    /// 0.955, error 0.51 mm, no folding, against 0.930, 0.90 mm and folded voxels without it; 0.948 at
    /// 0.5 voxel; each level returning its best field). So the smoothing stays. Returning each MI level's best field instead of its last
    /// (patience 10) makes the main job 3x faster but is less accurate: grey / white matter Dice 0.820 /
    /// 0.781 against 0.819 / 0.788, and on the known deformations Dice 0.946 against 0.949 and 1.26 mm
    /// against 1.08 mm from the truth (MI again above the truth's): the rise of the loss late in a level
    /// is the smoothing regularizing a field that fits MI too closely, so the default keeps it.
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
            fixed_mask: None,
            convergence: (15, 1e-5),
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

impl Level<'_> {
    /// The learning rate of iteration `it`: a linear decay to a tenth (the step bounds the field's
    /// jitter, so it must end small).
    fn lr(&self, it: usize) -> f64 {
        self.lr0 * (1.0 - 0.9 * it as f64 / self.iters.max(1) as f64)
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

/// The best parameters a level has evaluated, and the patience test on them: the dense levels' step
/// decays while the field's smoothing does not, which can turn a level's loss back up (the MI levels of
/// the main job do, from a fifth of the way in); with a patience the level stops once that many
/// iterations in a row found nothing better and returns its best field.
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

    /// The run. With a patience, or after a non-finite loss: the best parameters (`start` when no loss
    /// was finite) and their loss. Without one: `current`, the parameters after the last step, and the
    /// last loss (every iteration ran, or the slope test or Ctrl-C ended the level).
    fn finish(self, start: P, current: P, losses: Vec<f64>, stop: Stop) -> DenseRun<P> {
        if self.patience == 0 && stop != Stop::NonFinite {
            let last = losses.last().copied().unwrap_or(f64::NAN);
            return DenseRun { params: current, best: last, losses, stop };
        }
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
/// (the fused kernel [`crate::ops::lncc::lncc_loss_grad`] for LNCC; autograd of [`Metric::loss`] on the
/// warped image for the others), the chain rule to the field, the regularizer's gradient (tensors),
/// the smoothing of the gradient, the normalized Adam step and the smoothing of the field: the same
/// iterations as [`dense_level_tensor`], with no autograd graph over the warp.
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
    let [z, y, x] = g.zyx();
    let regularized = opts.regularizer.as_ref().is_some_and(Regularizer::is_active);
    let mut u = init.to_vec();
    let mut best = Best::new(opts.patience);
    let mut step = FieldStep::new(3 * nv);
    let mut conv = WindowedSlope::new(opts.convergence.0, opts.convergence.1);
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
        if conv.push(loss) {
            stop = Stop::Converged(Criterion::Slope);
            break;
        }
        let gs = gaussian_smooth_volumes(&gu, shape, opts.sigma_grad);
        step.apply(&gs, &mut u, lv.lr(it));
        if opts.sigma_field > 0.0 {
            u = gaussian_smooth_volumes(&u, shape, opts.sigma_field);
        }
    }
    Ok(best.finish(init.to_vec(), u, losses, stop))
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
    let mut conv = WindowedSlope::new(opts.convergence.0, opts.convergence.1);
    let mut best = Best::new(opts.patience);
    let (mut losses, mut stop) = (Vec::with_capacity(lv.iters), Stop::Iterations);
    for it in 0..lv.iters {
        let lr = lv.lr(it);
        opt.set_lr(lr);
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
        if conv.push(value) {
            stop = Stop::Converged(Criterion::Slope);
            break;
        }
        let mut grads = loss.backward()?;
        if lattice {
            opt.step(std::slice::from_ref(&var), &grads)?;
        } else if let Some(gr) = grads.remove(var.as_tensor()) {
            let step = field_step_tensor(&mut opt, &gaussian_smooth(&gr, opts.sigma_grad)?, lr)?;
            let next = (var.as_tensor() - step)?;
            var.set(&if opts.sigma_field > 0.0 { gaussian_smooth(&next, opts.sigma_field)? } else { next })?;
        }
    }
    Ok(best.finish(init.clone(), var.as_tensor().detach().copy()?, losses, stop))
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
/// level by trilinear resampling (`Greedy`, `Svf`) or kept on one lattice (`BSpline`). With
/// `opts.patience > 0` each level stops after that many iterations without a better loss ("converged
/// (no improvement)") and carries its best field on; Ctrl-C stops the level and keeps the field
/// reached (the best one with a patience); a non-finite loss stops it and keeps the best finite field.
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
