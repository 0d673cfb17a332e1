//! Multi-scale deformable registration: a dense model (greedy displacement field, stationary velocity
//! field or cubic B-spline) is optimized over a coarse-to-fine pyramid after a fixed linear transform,
//! with a similarity loss, a regularizer, and Gaussian smoothing of the update and of the field.
//!
//! The map from fixed to moving points is `x -> A(x + u(x))` (the dense stage first, then the linear
//! one, in the point order of `antsApplyTransforms -t affine -t warp` read right to left, i.e. ANTs'
//! `1Warp` then `0GenericAffine`), with `u` a `(3, Z, Y, X)` displacement in world mm on the fixed grid.
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
use super::optimizer::{Adam, Optimizer};
use crate::error::{Error, Result};
use crate::image::resample::{resample, Interpolation, Padding};
use crate::image::smooth::pyramid;
use crate::image::{DataType, Grid, Image};
use crate::metrics::regularizers::{bending_energy, diffusion};
use crate::metrics::Metric;
use crate::ops::local_filter::gaussian_kernel;
use crate::ops::{local_filter, warp_field};
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

/// The regularizer added to the similarity loss.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Regularizer {
    /// Mean squared first derivatives of the field (seed `001` eq. 8), times the weight.
    Diffusion(f64),
    /// Bending energy (1/mm^2), times the weight.
    Bending(f64),
}

/// Options of [`iso_dense`].
#[derive(Clone)]
pub struct DenseOptions {
    /// Factors, iterations, pyramid sigmas and Adam learning rates (mm per step) per level.
    pub schedule: Schedule,
    pub metric: Metric,
    pub regularizer: Option<Regularizer>,
    /// Gaussian sigma (voxels of the level) applied to the gradient before each step (`Greedy`, `Svf`).
    pub sigma_grad: f64,
    /// Gaussian sigma (voxels of the level) applied to the field after each step (`Greedy`, `Svf`).
    pub sigma_field: f64,
    /// Only fixed voxels inside this mask (non-zero, on the fixed grid) count.
    pub fixed_mask: Option<Image>,
    /// Windowed-slope convergence: window (iterations) and relative slope tolerance.
    pub convergence: (usize, f64),
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
    /// `BSpline`. Tuned on Colin27 at 2 mm with a known smooth deformation (see `tests/register.rs`).
    pub fn defaults(model: DenseModel, metric: Metric, fixed: &Grid) -> Result<Self> {
        let mut schedule = Schedule::new(3, &[100, 100, 50], 1.0)?;
        let vox = fixed.spacing().iter().sum::<f64>() / 3.0;
        schedule.lr = schedule.factors.iter().map(|_| 0.5 * vox).collect();
        let regularizer = match model {
            DenseModel::BSpline { .. } => Some(Regularizer::Bending(1e-2)),
            _ => None,
        };
        Ok(DenseOptions {
            schedule,
            metric,
            regularizer,
            sigma_grad: 3.0,
            sigma_field: 1.0,
            fixed_mask: None,
            convergence: (15, 1e-5),
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

/// Gaussian smoothing of a `(3, Z, Y, X)` field with `sigma` voxels (identity for `sigma <= 0`).
fn smooth_field(t: &Tensor, sigma: f64) -> Result<Tensor> {
    if sigma <= 0.0 {
        return Ok(t.clone());
    }
    let k = gaussian_kernel(sigma);
    Ok(local_filter(t, [k.clone(), k.clone(), k])?)
}

/// Adam on a dense field with the step normalized so that its largest vector moves `lr` mm (FireANTs'
/// warp optimizer): Adam alone moves every voxel with a gradient by about `lr`, however small the
/// gradient; normalizing by the largest step keeps the update's shape and bounds it, so a step never
/// folds a smooth field.
struct FieldAdam {
    lr: f64,
    t: i32,
    moments: Option<(Tensor, Tensor)>,
}

impl FieldAdam {
    fn new(lr: f64) -> Self {
        FieldAdam { lr, t: 0, moments: None }
    }

    /// The step (mm) to subtract from the field for the gradient `g` `(3, Z, Y, X)`.
    fn step(&mut self, g: &Tensor, _spacing: [f64; 3]) -> Result<Tensor> {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        self.t += 1;
        let (m, v) = match &self.moments {
            Some((m, v)) => (((m * b1)? + (g * (1.0 - b1))?)?, ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?),
            None => ((g * (1.0 - b1))?, (g.sqr()? * (1.0 - b2))?),
        };
        let mh = (&m / (1.0 - b1.powi(self.t)))?;
        let vh = (&v / (1.0 - b2.powi(self.t)))?;
        self.moments = Some((m, v));
        let dir = (mh / (vh.sqrt()? + eps)?)?;
        let norm = dir.sqr()?.sum_keepdim(0)?.sqrt()?.max_all()?.to_scalar::<f32>()? as f64;
        if !(norm > 0.0 && norm.is_finite()) {
            return Ok(dir.zeros_like()?);
        }
        Ok((dir * (self.lr / norm))?)
    }
}

/// [`FieldAdam`] on a plain `(3, Z, Y, X)` vector (component-major), for the fused greedy path: the
/// same moments, bias correction and normalization by the largest step vector, in f32.
struct FieldAdamVec {
    lr: f64,
    t: i32,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl FieldAdamVec {
    fn new(lr: f64, n: usize) -> Self {
        FieldAdamVec { lr, t: 0, m: vec![0.0; n], v: vec![0.0; n] }
    }

    /// Subtracts the step for the gradient `g` from `u` (both `3 n` values, component-major).
    fn step(&mut self, g: &[f32], u: &mut [f32]) {
        use rayon::prelude::*;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let c1 = 1.0 / (1.0 - 0.9f64.powi(self.t)) as f32;
        let c2 = 1.0 / (1.0 - 0.999f64.powi(self.t)) as f32;
        // The direction dir = mh / (sqrt(vh) + eps), with the moments updated in the same pass.
        let mut dir = vec![0f32; g.len()];
        dir.par_iter_mut().zip(self.m.par_iter_mut()).zip(self.v.par_iter_mut()).zip(g.par_iter()).for_each(
            |(((d, m), v), &gv)| {
                *m = b1 * *m + (1.0 - b1) * gv;
                *v = b2 * *v + (1.0 - b2) * gv * gv;
                *d = (*m * c1) / ((*v * c2).sqrt() + eps);
            },
        );
        let n = g.len() / 3;
        let (dx, rest) = dir.split_at(n);
        let (dy, dz) = rest.split_at(n);
        // The largest step vector; NaN if any is (then no step, as the tensor path's `max_all`).
        let norm = (0..n)
            .into_par_iter()
            .with_min_len(4096)
            .map(|i| dx[i] * dx[i] + dy[i] * dy[i] + dz[i] * dz[i])
            .reduce(|| 0f32, |a, b| if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) })
            .sqrt() as f64;
        if !(norm > 0.0 && norm.is_finite()) {
            return;
        }
        let s = (self.lr / norm) as f32;
        u.par_iter_mut().zip(dir.par_iter()).for_each(|(x, d)| *x -= d * s);
    }
}

/// Gaussian smoothing of a plain `(3, Z, Y, X)` field of `shape` `[nx, ny, nz]` with `sigma` voxels, as
/// [`smooth_field`] (identity for `sigma <= 0`).
fn smooth_field_vec(u: &[f32], shape: [usize; 3], sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return u.to_vec();
    }
    let k = gaussian_kernel(sigma);
    crate::ops::local_filter::filter_volumes(u, shape, &[k.clone(), k.clone(), k])
}

/// What one greedy level reached: the last good field (`(3, Z, Y, X)` values), the losses and why it
/// stopped.
struct GreedyRun {
    field: Vec<f32>,
    losses: Vec<f64>,
    stop: String,
}

/// One `Greedy` level on plain volumes: per iteration the fused field warp with its derivative
/// ([`crate::ops::warp::warp_field_with_grad`]), the measure's gradient with respect to the warped image
/// (the fused kernel [`crate::ops::lncc::lncc_loss_grad`] for LNCC; autograd of [`Metric::loss`] on the
/// warped image for the others), the chain rule to the field, the regularizer's gradient (tensors),
/// the smoothing of the gradient, the normalized Adam step and the smoothing of the field: the same
/// iterations as the tensor path of [`iso_dense`], with no autograd graph over the warp.
#[allow(clippy::too_many_arguments)]
fn greedy_level_fused(
    fixed: &Image,
    moving: &Image,
    init: &[f32],
    mvox: [f64; 12],
    r: [f64; 9],
    metric: &Metric,
    mask: Option<&Tensor>,
    opts: &DenseOptions,
    lr0: f64,
    iters: usize,
    bar: &indicatif::ProgressBar,
) -> Result<GreedyRun> {
    let g = fixed.grid().clone();
    let shape = g.shape();
    let nv = g.num_voxels();
    let mdata = moving.to_vec_f32()?;
    let mshape = moving.grid().shape();
    let mvec = mask.map(|m| m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
    let lncc = match metric.lncc_window() {
        Some(w) => Some(
            crate::ops::lncc::LnccFixed::new(&fixed.to_vec_f32()?, shape, w, mvec.as_deref())
                .map_err(|e| Error::arg("iso_dense", e))?,
        ),
        None => None,
    };
    let [z, y, x] = g.zyx();
    let mut u = init.to_vec();
    let mut good = u.clone();
    let mut adam = FieldAdamVec::new(lr0, 3 * nv);
    let mut conv = WindowedSlope::new(opts.convergence.0, opts.convergence.1);
    let (mut losses, mut stop) = (Vec::with_capacity(iters), "iterations".to_string());
    for it in 0..iters {
        adam.lr = lr0 * (1.0 - 0.9 * it as f64 / iters.max(1) as f64);
        if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            stop = "cancelled".into();
            break;
        }
        let (w, du) = crate::ops::warp::warp_field_with_grad(&mdata, mshape, &u, shape, mvox, r)
            .map_err(|e| Error::arg("iso_dense", e))?;
        let (sim, gw) = match &lncc {
            Some(fx) => {
                let l = crate::ops::lncc::lncc_loss_grad(fx, &w, true).map_err(|e| Error::arg("iso_dense", e))?;
                (l.loss, l.grad)
            }
            None => {
                let wv = Var::from_tensor(&Tensor::from_vec(w, (1, z, y, x), &candle_core::Device::Cpu)?)?;
                let loss = metric.loss(fixed.data(), wv.as_tensor(), mask)?;
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
        let mut lv = sim;
        if let Some(reg) = opts.regularizer {
            let (wt, is_diff) = match reg {
                Regularizer::Diffusion(w) => (w, true),
                Regularizer::Bending(w) => (w, false),
            };
            if wt != 0.0 {
                let uv = Var::from_tensor(&Tensor::from_slice(&u, (3, z, y, x), &candle_core::Device::Cpu)?)?;
                let term = if is_diff {
                    diffusion(uv.as_tensor(), g.spacing())?
                } else {
                    bending_energy(uv.as_tensor(), g.spacing())?
                };
                let term = (term.to_dtype(DType::F32)? * wt)?;
                lv += term.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if let Some(t) = term.backward()?.get(uv.as_tensor()) {
                    let tg = t.flatten_all()?.to_vec1::<f32>()?;
                    gu.iter_mut().zip(&tg).for_each(|(a, b)| *a += b);
                }
            }
        }
        if !lv.is_finite() {
            stop = "non-finite loss".into();
            tracing::warn!("dense level: loss is {lv} (similarity {sim}); keeping the last finite field");
            break;
        }
        losses.push(lv);
        super::progress::tick(bar, lv);
        good.copy_from_slice(&u);
        if conv.push(lv) {
            stop = "converged".into();
            break;
        }
        let gs = smooth_field_vec(&gu, shape, opts.sigma_grad);
        adam.step(&gs, &mut u);
        u = smooth_field_vec(&u, shape, opts.sigma_field);
    }
    if stop != "non-finite loss" {
        good = u;
    }
    Ok(GreedyRun { field: good, losses, stop })
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
/// level by trilinear resampling (`Greedy`, `Svf`) or kept on one lattice (`BSpline`). A non-finite loss
/// stops the level and keeps the last finite field.
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
                Tensor::zeros((3, z, y, x), DType::F32, &candle_core::Device::Cpu)?
            }
        };
        // Sample points in moving voxels: W2V_m A (V2W_f i + u) = M i + R u.
        let w2v = ml.image.grid().world_to_voxel();
        let mm = w2v * a * g.voxel_to_world();
        let rm = w2v * a;
        let mvox: [f64; 12] = std::array::from_fn(|i| mm[(i / 4, i % 4)]);
        let r: [f64; 9] = std::array::from_fn(|i| rm[(i / 3, i % 3)]);
        let mask = match &opts.fixed_mask {
            Some(m) => Some(super::iso::level_mask(m, &g)?),
            None => None,
        };
        let (mut losses, mut stop) = (Vec::new(), "iterations".to_string());
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
        let fused = opts.fused && model == DenseModel::Greedy && init.device().is_cpu();
        let good = if fused {
            let start = init.flatten_all()?.to_vec1::<f32>()?;
            let run = greedy_level_fused(
                &fl.image,
                &ml.image,
                &start,
                mvox,
                r,
                &metric,
                mask.as_ref(),
                opts,
                s.lr[l],
                iters,
                &bar,
            )?;
            losses = run.losses;
            stop = run.stop;
            Tensor::from_vec(run.field, init.shape(), init.device())?
        } else {
            let var = Var::from_tensor(&init)?;
            let mut opt = Adam::new(s.lr[l], vec![None]);
            let mut field_adam = FieldAdam::new(s.lr[l]);
            let mut conv = WindowedSlope::new(opts.convergence.0, opts.convergence.1);
            let mut good = var.as_tensor().detach().copy()?;
            for it in 0..iters {
                // Linear decay to a tenth: the step bounds the field's jitter, so it must end small.
                let lr = s.lr[l] * (1.0 - 0.9 * it as f64 / iters.max(1) as f64);
                opt.set_lr(lr);
                field_adam.lr = lr;
                if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                    stop = "cancelled".into();
                    break;
                }
                let u = field_of(var.as_tensor())?;
                let warped = warp_field(ml.image.data(), &u, mvox, r, false)?;
                // The slow twin of the fused greedy path computes LNCC from tensor ops too.
                let mut loss = match (opts.fused, metric.lncc_window()) {
                    (false, Some(w)) => {
                        crate::metrics::functional::lncc_slow(fl.image.data(), &warped, w, mask.as_ref())?.neg()?
                    }
                    _ => metric.loss(fl.image.data(), &warped, mask.as_ref())?,
                };
                let sim = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if let Some(reg) = opts.regularizer {
                    let (term, w) = match reg {
                        Regularizer::Diffusion(w) => (diffusion(&u, g.spacing())?, w),
                        Regularizer::Bending(w) => (bending_energy(&u, g.spacing())?, w),
                    };
                    if w != 0.0 {
                        let dt = loss.dtype();
                        loss = (loss + (term.to_dtype(dt)? * w)?)?;
                    }
                }
                let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !lv.is_finite() {
                    stop = "non-finite loss".into();
                    tracing::warn!("dense level {l}: loss is {lv} (similarity {sim}); keeping the last finite field");
                    break;
                }
                losses.push(lv);
                super::progress::tick(&bar, lv);
                good = var.as_tensor().detach().copy()?;
                if conv.push(lv) {
                    stop = "converged".into();
                    break;
                }
                let mut grads = loss.backward()?;
                if bspline.is_some() {
                    opt.step(std::slice::from_ref(&var), &grads)?;
                } else if let Some(gr) = grads.remove(var.as_tensor()) {
                    let step = field_adam.step(&smooth_field(&gr, opts.sigma_grad)?, g.spacing())?;
                    var.set(&smooth_field(&(var.as_tensor() - step)?, opts.sigma_field)?)?;
                }
            }
            if stop != "non-finite loss" {
                good = var.as_tensor().detach().copy()?;
            }
            good
        };
        last_field = Some(Ddf::new(field_of(&good)?, g.clone())?);
        bar.finish_and_clear();
        let path = if fused { ", fused" } else { "" };
        tracing::info!("dense level {l} (factor {}{path}): {} iterations, {stop}", s.factors[l], losses.len());
        levels.push(LevelReport {
            factor: s.factors[l],
            iterations: losses.len(),
            final_loss: losses.last().copied().unwrap_or(f64::NAN),
            best_loss: losses.iter().copied().fold(f64::INFINITY, f64::min),
            seconds: t0.elapsed().as_secs_f64(),
            losses,
            stop: stop.clone(),
        });
        param = Some((good, g));
        if stop == "cancelled" {
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
