//! Multi-scale instance-specific optimization (ISO, seed `000` Algorithm 1): the parameters of a
//! transform are refined by gradient descent on a similarity loss over a coarse-to-fine image pyramid,
//! carried from each level to the next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::convergence::WindowedSlope;
use super::optimizer::AdamVec;
use super::optimizer::{Adam, Optimizer};
use super::sampled::{fixed_values, grid_samples, SampledObjective};
use crate::error::{Error, Result};
use crate::image::resample::{resample, Interpolation, Padding};
use crate::image::smooth::pyramid;
use crate::image::smooth::PyramidLevel;
use crate::image::Image;
use crate::metrics::{Metric, OptionValue};
use crate::ops::point_metric::PointSamples;
use crate::ops::{grid_sample, SampleMode};
use crate::spatial::{apply_matrix, matrix34, warp_tensor, Linear, LinearKind, Transform};

/// A pyramid schedule: per level, the downsampling factor, iterations, Gaussian sigma (voxels of the
/// full-resolution image; `None`: factor / 3) and learning rate (mm per step for translations; it decays
/// linearly to a tenth over the level's iterations).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schedule {
    pub factors: Vec<f64>,
    pub iterations: Vec<usize>,
    pub sigmas: Option<Vec<f64>>,
    pub lr: Vec<f64>,
}

impl Schedule {
    /// `scales` levels with factors `2^(scales-1), ..., 2, 1`, `iterations` per level and one learning
    /// rate for all. Errors: `scales` 0, or an iteration list of another length.
    pub fn new(scales: usize, iterations: &[usize], lr: f64) -> Result<Self> {
        if scales == 0 || scales > 8 {
            return Err(Error::arg("schedule", format!("scales must be 1 to 8, got {scales}")));
        }
        let factors: Vec<f64> = (0..scales).rev().map(|l| 2f64.powi(l as i32)).collect();
        let iterations = match iterations.len() {
            1 => vec![iterations[0]; scales],
            n if n == scales => iterations.to_vec(),
            n => return Err(Error::arg("schedule", format!("{n} iteration counts for {scales} levels"))),
        };
        let s = Schedule { factors, iterations, sigmas: None, lr: vec![lr; scales] };
        s.check()?;
        Ok(s)
    }

    /// Checks the lists agree and factors do not increase. Errors: [`Error::InvalidArgument`].
    pub fn check(&self) -> Result<()> {
        let n = self.factors.len();
        if n == 0
            || self.iterations.len() != n
            || self.lr.len() != n
            || self.sigmas.as_ref().is_some_and(|s| s.len() != n)
        {
            return Err(Error::arg("schedule", "factors, iterations, sigmas and lr must have one entry per level"));
        }
        if self.factors.windows(2).any(|w| w[1] > w[0]) || self.factors.iter().any(|f| *f < 1.0) {
            return Err(Error::arg(
                "schedule",
                format!("factors must be >= 1 and not increase, got {:?}", self.factors),
            ));
        }
        Ok(())
    }
}

/// Options of [`iso_linear`].
#[derive(Clone)]
pub struct IsoOptions {
    pub schedule: Schedule,
    pub metric: Metric,
    /// Only fixed voxels inside this mask (non-zero, on the fixed grid) count.
    pub fixed_mask: Option<Image>,
    /// Windowed-slope convergence: window (iterations) and relative slope tolerance.
    pub convergence: (usize, f64),
    /// Set to true (e.g. by Ctrl-C) to stop; the best parameters so far are kept.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Which fixed points the measure sees at each iteration.
    pub sampling: Sampling,
    /// Seed of the random sample points.
    pub seed: u64,
    /// The optimizer of each level.
    pub optimizer: IsoOptimizer,
    /// A final deterministic refinement after the last level (global measures only; `None`: none):
    /// see [`Polish`].
    pub polish: Option<Polish>,
}

/// A deterministic refinement after the last pyramid level: L-BFGS on one fixed draw of `points` random
/// points of the finest level (every voxel where the level has fewer), for at most `iterations`
/// iterations. Adam on fresh random points each iteration converges only to within its noise (the
/// steps keep a size of about the learning rate); minimizing one fixed, larger sample exactly removes
/// that floor. Global measures only ([`Metric::point_measure`]); for others it is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Polish {
    /// Sample points of the refinement.
    pub points: usize,
    /// At most this many L-BFGS iterations (and `3 * iterations + 10` evaluations).
    pub iterations: usize,
}

impl Default for Polish {
    /// 50 000 points, at most 20 iterations (it stops earlier, once a step moves no point by more than
    /// about 3 micrometres): about 0.01 s with NCC and 0.05-0.08 s with MI on 2 threads at 2 mm, and it
    /// brings a mono-modal affine from about 0.2 mm of the truth (Adam's noise) to about 0.015 mm.
    fn default() -> Self {
        Polish { points: 50_000, iterations: 20 }
    }
}

/// The optimizer [`iso_linear`] runs at each pyramid level.
///
/// Adam follows the schedule's learning rate (decayed linearly to a tenth over the level) for the
/// level's iterations, on a fresh draw of sample points each iteration. L-BFGS and Powell need one
/// fixed objective per level (line searches compare values), so their sample points are drawn once per
/// level (local measures use the level's whole grid); `iterations` bounds their iterations (Powell: one
/// sweep over all directions, each a Brent line search, i.e. tens of evaluations), and they stop
/// earlier when they converge. Powell uses no gradient (seed `003` optimizes a learned metric with it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum IsoOptimizer {
    Adam,
    Lbfgs,
    Powell,
}

impl IsoOptimizer {
    /// By name: `adam`, `lbfgs`, `powell`. Errors: an unknown name (with "did you mean").
    pub fn parse(name: &str) -> Result<Self> {
        crate::names::lookup(
            "optimizer",
            name,
            &[("adam", IsoOptimizer::Adam), ("lbfgs", IsoOptimizer::Lbfgs), ("powell", IsoOptimizer::Powell)],
        )
    }
}

/// Which fixed points a global measure is evaluated on at each iteration.
///
/// `Random(n)` draws `n` new points per iteration, uniformly in the level's fixed grid (inside the
/// fixed mask when there is one) at continuous, off-grid positions, and samples both images there by
/// trilinear interpolation; points that map outside the moving image are left out. This is elastix's
/// `RandomCoordinate` sampler (Klein et al. 2007, IEEE TIP 16(12)): each iteration costs `O(n)` instead
/// of `O(voxels)`, and since both images are interpolated at fresh positions the measure has no
/// grid-aligned interpolation artefacts (Pluim et al. 2000), which bias Parzen MI towards whole-voxel
/// shifts. Local measures (patches, LNCC windows) need the grid and always use `Full`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Sampling {
    /// Every voxel of the level's fixed grid.
    Full,
    /// `n` random points per iteration (the whole grid where it has fewer voxels).
    Random(usize),
    /// The whole grid shifted by a fresh random offset of up to half a voxel per axis at each iteration
    /// (both images interpolated there): keeps the grid that local measures need while removing the
    /// grid-aligned interpolation bias, as `Random` does for global measures.
    Jittered,
}

impl Sampling {
    /// The default for a measure: for global measures with a fused form ([`Metric::has_point_form`])
    /// [`DEFAULT_POINTS`] random points per iteration (elastix uses 2 048; Adam's steps average the
    /// noise of a draw over the next ones, and [`Polish`] removes what is left): SSD, NCC, MI, NMI and
    /// CR; 20 000 for any other global one (evaluated with tensors), the jittered grid for local ones.
    pub fn default_for(metric: &Metric) -> Sampling {
        if metric.is_local() {
            Sampling::Jittered
        } else if metric.has_point_form() {
            Sampling::Random(DEFAULT_POINTS)
        } else {
            Sampling::Random(20_000)
        }
    }
}

/// Random points per iteration of global measures with a fused form by default ([`Sampling::default_for`]).
pub const DEFAULT_POINTS: usize = 5_000;

/// A fixed mask (non-zero inside) on a pyramid level's `grid`: `(1, Z, Y, X)` f32, 1 inside. Nearest
/// resampling, as ITK evaluates a mask at a point; where that leaves no voxel (a small mask on a coarse
/// level), the mask spread by a Gaussian of half the level's spacing (mm) and sampled there counts
/// where it reaches half its peak (the level voxels nearest the region), so the level still sees it.
///
/// Errors: a mask with no voxel on `grid` even so (it lies outside the fixed image's field of view);
/// resampling errors.
pub fn level_mask(mask: &Image, grid: &crate::image::Grid) -> Result<Tensor> {
    let inside = |t: &Tensor| -> Result<f32> { Ok(t.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
    let near = resample(mask, grid, Interpolation::Nearest, Padding::Zero)?.data().ne(0f32)?.to_dtype(DType::F32)?;
    if inside(&near)? > 0.0 {
        return Ok(near);
    }
    // The mask spread over a level voxel (a Gaussian of half the level's spacing), then sampled.
    let ones =
        Image::new(mask.data().ne(0f32)?.to_dtype(DType::F32)?, mask.grid().clone(), crate::image::DataType::Float32)?;
    let sig = grid.spacing().map(|s| 0.5 * s);
    let spread = crate::image::smooth::smooth(&ones, sig, crate::image::smooth::SigmaUnit::Mm)?;
    let level = resample(&spread, grid, Interpolation::Linear, Padding::Zero)?;
    let top = level.data().max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if top > 0.0 {
        return Ok(level.data().ge(0.5 * top)?.to_dtype(DType::F32)?);
    }
    Err(Error::arg(
        "fixed mask",
        format!(
            "no voxel of the mask falls on the level grid of {:?} voxels ({:?} mm): the mask lies outside the fixed image",
            grid.shape(),
            grid.spacing()
        ),
    ))
}

/// Fresh random sample points of a level: fixed intensities `(1, 1, 1, n)` (no gradient), their world
/// positions `(n, 3)` (mm), drawn from `candidates` (flat voxel indices of the grid) with a uniform jitter
/// of up to half a voxel per axis, clamped to the grid.
struct PointSampler {
    rng: ChaCha8Rng,
    /// Flat voxel indices to draw from; `None`: every voxel (drawn directly, no lookup).
    candidates: Option<Vec<u32>>,
    /// How many voxels `candidates` holds (all of the grid's when `None`).
    count: usize,
    shape: [usize; 3],
    n: usize,
}

impl PointSampler {
    fn new(grid: &crate::image::Grid, mask: Option<&Tensor>, n: usize, seed: u64) -> Result<Self> {
        let [x, y, z] = grid.shape();
        let candidates: Option<Vec<u32>> = match mask {
            Some(m) => Some(
                m.flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(i, _)| i as u32)
                    .collect(),
            ),
            None => None,
        };
        let count = candidates.as_ref().map_or(x * y * z, Vec::len);
        if count == 0 {
            return Err(Error::arg("iso", "the fixed mask is empty at this pyramid level"));
        }
        Ok(PointSampler { rng: ChaCha8Rng::seed_from_u64(seed), candidates, count, shape: [x, y, z], n })
    }

    /// `(n, 3)` f32 voxel coordinates (x, y, z) of the fixed grid.
    fn draw(&mut self) -> Result<Tensor> {
        let v = self.draw_points();
        Ok(Tensor::from_vec(v, (self.n, 3), &Device::Cpu)?)
    }

    /// `n` voxel coordinates (x, y, z) of the fixed grid, `3 n` values.
    fn draw_points(&mut self) -> Vec<f32> {
        let [x, y, z] = self.shape;
        let mut v = Vec::with_capacity(3 * self.n);
        for _ in 0..self.n {
            let r = self.rng.random_range(0..self.count);
            let i = self.candidates.as_ref().map_or(r, |c| c[r] as usize);
            let idx = [i % x, (i / x) % y, i / (x * y)];
            for (a, &c) in idx.iter().enumerate() {
                let hi = [x, y, z][a] as f32 - 1.0;
                let j: f32 = self.rng.random_range(-0.5f32..0.5);
                v.push((c as f32 + j).clamp(0.0, hi));
            }
        }
        v
    }

    /// Fresh sample points with the fixed image's values there (trilinear, border padding).
    fn draw_samples(&mut self, fixed: &[f32]) -> PointSamples {
        let points = self.draw_points();
        let fixed = fixed_values(fixed, self.shape, &points);
        PointSamples { points, fixed }
    }
}

/// The loss at random points: fixed and moving are sampled at the same (mapped) points; points whose
/// image lies outside the moving grid are masked out.
fn sampled_loss(metric: &Metric, fixed: &Image, moving: &Image, t: &dyn Transform, fvox: &Tensor) -> Result<Tensor> {
    let n = fvox.dim(0)?;
    let fvals = grid_sample(fixed.data(), fvox, SampleMode::Linear, Padding::Border)?.reshape((1, 1, 1, n))?;
    let world = apply_matrix(&matrix34(&fixed.grid().voxel_to_world(), &Device::Cpu)?, fvox)?;
    let mvox = apply_matrix(&matrix34(&moving.grid().world_to_voxel(), &Device::Cpu)?, &t.map_points(&world)?)?;
    let [mx, my, mz] = moving.grid().shape();
    let hi = Tensor::new(&[mx as f32 - 1.0, my as f32 - 1.0, mz as f32 - 1.0], &Device::Cpu)?;
    let d = mvox.detach();
    let inside = d.ge(0f32)?.to_dtype(DType::F32)?.mul(&d.broadcast_le(&hi)?.to_dtype(DType::F32)?)?;
    let inside = inside.min_keepdim(1)?.reshape((1, 1, 1, n))?;
    let mvals = grid_sample(moving.data(), &mvox, SampleMode::Linear, Padding::Zero)?.reshape((1, 1, 1, n))?;
    metric.loss(&fvals, &mvals, Some(&inside))
}

/// What happened at one pyramid level.
#[derive(Clone, Debug, Serialize)]
pub struct LevelReport {
    pub factor: f64,
    pub iterations: usize,
    pub final_loss: f64,
    pub best_loss: f64,
    pub seconds: f64,
    pub losses: Vec<f64>,
    /// Why the level ended: `iterations`, `converged`, `non-finite loss`, `cancelled`.
    pub stop: String,
}

/// The result of [`iso_linear`].
#[derive(Clone, Debug)]
pub struct IsoResult {
    pub transform: Linear,
    /// One report per pyramid level, coarse to fine.
    pub levels: Vec<LevelReport>,
    /// The report of [`IsoOptions::polish`], when it ran (`iterations` counts its evaluations; `stop`
    /// is L-BFGS's reason).
    pub polish: Option<LevelReport>,
    pub seconds: f64,
}

/// Per-parameter step scales of a linear kind: 1 for translations (mm); `1 / radius` for rotations,
/// scales and shears, so a unit step moves points at the image's radius by about 1 mm.
fn param_scales(kind: LinearKind, radius: f64) -> Tensor {
    let n = kind.num_params();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let translation = match kind {
                LinearKind::Matrix => i % 4 == 3,
                _ => i < 3,
            };
            if translation {
                1.0
            } else {
                (1.0 / radius) as f32
            }
        })
        .collect();
    // Infallible: the vector has n entries.
    Tensor::from_vec(v, n, &Device::Cpu).unwrap_or_else(|_| unreachable!())
}

/// Fills the Parzen measures' intensity ranges from the full-resolution images (unless set), so the
/// bins do not move as the warped image changes.
pub(crate) fn fix_ranges(metric: &Metric, fixed: &Image, moving: &Image) -> Result<Metric> {
    let mut m = metric.clone();
    if m.option_names().contains(&"range_fixed") {
        let (f, mv) = (fixed.stats()?, moving.stats()?);
        if !m.has_range(true) && f.max > f.min {
            m.set("range_fixed", OptionValue::Range(f.min, f.max))?;
        }
        if !m.has_range(false) && mv.max > mv.min {
            m.set("range_moving", OptionValue::Range(mv.min, mv.max))?;
        }
    }
    Ok(m)
}

/// Multi-scale ISO of a linear transform (any kind) mapping `fixed` world points to `moving` ones,
/// starting from `init`, with Adam over the pyramid of `opts.schedule`. At each level both images are
/// smoothed and resampled to the level's grid, and the loss of `opts.metric` minimized (by Adam, L-BFGS
/// or Powell: [`IsoOptimizer`]); parameters carry over between levels, and [`IsoOptions::polish`]
/// refines the result of the last level. A non-finite loss stops the level (reported) and keeps the best
/// parameters so far.
///
/// With random sampling ([`Sampling::Random`]) a global measure ([`Metric::point_measure`]: SSD, NCC,
/// MI, NMI) is evaluated by the fused kernel [`crate::ops::point_metric`] with f64 parameters (Adam or
/// L-BFGS; no tensor per iteration); a level whose grid has fewer voxels than the points asked for uses
/// every voxel as a point (a deterministic loss, so the convergence test applies). Points that map
/// outside the moving image are left out. Other measures, sampling modes and Powell warp the moving
/// image with tensors (candle autograd).
///
/// Errors: an invalid schedule; images with several channels; tensor errors.
pub fn iso_linear(fixed: &Image, moving: &Image, init: &Linear, opts: &IsoOptions) -> Result<IsoResult> {
    opts.schedule.check()?;
    let s = &opts.schedule;
    let fpyr = pyramid(fixed, &s.factors, s.sigmas.as_deref())?;
    let mpyr = pyramid(moving, &s.factors, s.sigmas.as_deref())?;
    iso_linear_pyramids(fixed, moving, &fpyr, &mpyr, init, opts)
}

/// [`iso_linear`] on pyramids of `fixed` and `moving` built already by [`pyramid`] with the schedule's
/// factors and sigmas, so that several stages (rigid, then affine) share one pyramid.
///
/// Errors: pyramids whose factors are not the schedule's; as [`iso_linear`].
pub fn iso_linear_pyramids(
    fixed: &Image,
    moving: &Image,
    fpyr: &[PyramidLevel],
    mpyr: &[PyramidLevel],
    init: &Linear,
    opts: &IsoOptions,
) -> Result<IsoResult> {
    opts.schedule.check()?;
    if fixed.channels() != 1 || moving.channels() != 1 {
        return Err(Error::arg("iso", "fixed and moving must have one channel each"));
    }
    let s = &opts.schedule;
    let factors_of = |p: &[PyramidLevel]| p.iter().map(|l| l.factor).collect::<Vec<_>>();
    if factors_of(fpyr) != s.factors || factors_of(mpyr) != s.factors {
        return Err(Error::arg(
            "iso",
            format!(
                "the pyramids' factors {:?} / {:?} are not the schedule's {:?}",
                factors_of(fpyr),
                factors_of(mpyr),
                s.factors
            ),
        ));
    }
    let start = Instant::now();
    let metric = fix_ranges(&opts.metric, fixed, moving)?;
    let radius = {
        let c = fixed.grid().corners();
        let ctr = fixed.grid().centre();
        c.iter()
            .map(|p| ((p[0] - ctr[0]).powi(2) + (p[1] - ctr[1]).powi(2) + (p[2] - ctr[2]).powi(2)).sqrt())
            .fold(0.0, f64::max)
            / 2.0
    };
    let var = Var::from_tensor(&init.params().detach())?;
    let mut opt = Adam::new(s.lr[0], vec![Some(param_scales(init.kind(), radius.max(1.0)))]);
    let mut best = (f64::INFINITY, var.as_tensor().detach().copy()?);
    let mut levels = Vec::new();
    for (l, (fl, ml)) in fpyr.iter().zip(mpyr).enumerate() {
        let t0 = Instant::now();
        opt.reset();
        let mask = match &opts.fixed_mask {
            Some(m) => Some(level_mask(m, fl.image.grid())?),
            None => None,
        };
        let mut sampler = match opts.sampling {
            Sampling::Random(n) if !metric.is_local() && n < fl.image.grid().num_voxels() => {
                Some(PointSampler::new(fl.image.grid(), mask.as_ref(), n, opts.seed.wrapping_add(l as u64))?)
            }
            _ => None,
        };
        let mut jitter = match opts.sampling {
            Sampling::Jittered => Some(ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(1000 + l as u64))),
            _ => None,
        };
        let iters = s.iterations[l];
        let point_measure = match (opts.sampling, opts.optimizer) {
            (Sampling::Random(_), IsoOptimizer::Adam | IsoOptimizer::Lbfgs) => metric.point_measure(),
            _ => None,
        };
        if let Some(measure) = point_measure {
            let obj = SampledObjective::new(measure, fl.image.grid(), &ml.image, init.kind(), init.centre())?;
            let fdata = fl.image.to_vec_f32()?;
            let mvec = mask.as_ref().map(|m| m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
            let scales = super::objective::flatten(&param_scales(init.kind(), radius.max(1.0)))?;
            let x0 = super::objective::flatten(var.as_tensor())?;
            let run = FusedLevel { obj: &obj, scales: &scales };
            let fixed_set = match sampler {
                Some(_) => None,
                None => Some(grid_samples(&fl.image, mvec.as_deref())?),
            };
            let r = match opts.optimizer {
                IsoOptimizer::Lbfgs => {
                    let samples = match (sampler.as_mut(), &fixed_set) {
                        (Some(sm), _) => sm.draw_samples(&fdata),
                        (None, Some(set)) => set.clone(),
                        (None, None) => return Err(Error::arg("iso", "no sample points")),
                    };
                    run.lbfgs(&samples, &x0, iters, opts.cancel.clone())?
                }
                _ => {
                    let bar = super::progress::level_bar(init.kind().name(), l, s.factors.len(), iters);
                    let r = run.adam(&x0, sampler.as_mut(), &fdata, fixed_set.as_ref(), iters, s.lr[l], opts, &bar)?;
                    bar.finish_and_clear();
                    r
                }
            };
            var.set(&Tensor::from_vec(r.x.iter().map(|&v| v as f32).collect::<Vec<f32>>(), r.x.len(), &Device::Cpu)?)?;
            best.1 = var.as_tensor().detach().copy()?;
            tracing::info!(
                "iso level {l} (factor {}, fused {:?}): {} evaluations, best loss {:.6}, {}",
                s.factors[l],
                opts.optimizer,
                r.losses.len(),
                r.best,
                r.stop
            );
            let cancelled = r.stop == "cancelled";
            levels.push(LevelReport {
                factor: s.factors[l],
                iterations: r.losses.len(),
                final_loss: r.losses.last().copied().unwrap_or(f64::NAN),
                best_loss: r.best,
                seconds: t0.elapsed().as_secs_f64(),
                losses: r.losses,
                stop: r.stop,
            });
            if cancelled {
                break;
            }
            continue;
        }
        let noisy = sampler.is_some() || jitter.is_some();
        let mut conv = WindowedSlope::new(opts.convergence.0, opts.convergence.1);
        let (mut losses, mut stop) = (Vec::new(), "iterations".to_string());
        // Each level judges its own loss (the pyramid changes the loss's scale): best of this level.
        best.0 = f64::INFINITY;
        if opts.optimizer != IsoOptimizer::Adam {
            // One fixed objective for the level: the sample points of one draw, or the whole grid.
            let points = sampler.as_mut().map(|s| s.draw()).transpose()?;
            let lev_mask = mask.clone();
            let loss_at = |p: &Tensor| -> Result<Tensor> {
                let t = init.with_params(p.clone())?;
                match &points {
                    Some(pts) => sampled_loss(&metric, &fl.image, &ml.image, &t, pts),
                    None => {
                        let g = fl.image.grid();
                        let warped =
                            warp_tensor(ml.image.data(), ml.image.grid(), &t, g, SampleMode::Linear, Padding::Zero)?;
                        metric.loss(fl.image.data(), &warped, lev_mask.as_ref())
                    }
                }
            };
            let x0 = super::objective::flatten(var.as_tensor())?;
            let scales: Vec<f64> = super::objective::flatten(&param_scales(init.kind(), radius.max(1.0)))?;
            let seen = std::cell::RefCell::new(Vec::new());
            let (x, evals, why) = match opts.optimizer {
                IsoOptimizer::Powell => {
                    let mut f = super::objective::tensor_value(var.as_tensor(), loss_at);
                    let po = super::powell::PowellOptions {
                        scales: Some(scales),
                        max_iterations: iters,
                        cancel: opts.cancel.clone(),
                        ..Default::default()
                    };
                    let r = super::powell::powell(
                        |x| {
                            let v = f(x)?;
                            seen.borrow_mut().push(v);
                            Ok(v)
                        },
                        &x0,
                        &po,
                    )?;
                    (r.x, r.evaluations, r.stop)
                }
                _ => {
                    let mut f = super::objective::tensor_objective(var.as_tensor(), loss_at);
                    let lo = super::lbfgs::LbfgsOptions {
                        scales: Some(scales),
                        max_iterations: iters,
                        cancel: opts.cancel.clone(),
                        ..Default::default()
                    };
                    let r = super::lbfgs::lbfgs(
                        |x| {
                            let v = f(x)?;
                            seen.borrow_mut().push(v.0);
                            Ok(v)
                        },
                        &x0,
                        &lo,
                    )?;
                    (r.x, r.evaluations, r.stop)
                }
            };
            let losses = seen.into_inner();
            var.set(&super::objective::unflatten(&x, var.as_tensor())?)?;
            best.1 = var.as_tensor().detach().copy()?;
            let best_loss = losses.iter().copied().filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
            tracing::info!(
                "iso level {l} ({:?}): {evals} evaluations, best loss {best_loss:.6}, {why}",
                opts.optimizer
            );
            let cancelled = opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
            levels.push(LevelReport {
                factor: s.factors[l],
                iterations: evals,
                final_loss: best_loss,
                best_loss,
                seconds: t0.elapsed().as_secs_f64(),
                losses,
                stop: if cancelled { "cancelled".into() } else { why },
            });
            if cancelled {
                break;
            }
            continue;
        }
        let bar = super::progress::level_bar(init.kind().name(), l, s.factors.len(), iters);
        for it in 0..iters {
            // Linear decay to a tenth of the level's rate: large early steps, a fine finish.
            opt.set_lr(s.lr[l] * (1.0 - 0.9 * it as f64 / iters.max(1) as f64));
            if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                stop = "cancelled".into();
                break;
            }
            let t = init.with_params(var.as_tensor().clone())?;
            let loss = match sampler.as_mut() {
                Some(s) => sampled_loss(&metric, &fl.image, &ml.image, &t, &s.draw()?)?,
                None => {
                    // The fixed grid, or (jittered) the same grid moved by a random sub-voxel offset.
                    let shifted = match jitter.as_mut() {
                        Some(rng) => {
                            let off: [f64; 3] = std::array::from_fn(|_| rng.random_range(-0.5..0.5));
                            let g = fl.image.grid();
                            let g2 =
                                crate::image::Grid::new(g.shape(), g.spacing(), g.index_to_world(off), g.direction())?;
                            let f2 = resample(&fl.image, &g2, Interpolation::Linear, Padding::Border)?;
                            let m2 = match &opts.fixed_mask {
                                Some(m) => Some(level_mask(m, &g2)?),
                                None => None,
                            };
                            Some((g2, f2.data().clone(), m2))
                        }
                        None => None,
                    };
                    let (grid, fdata, fmask) = match &shifted {
                        Some((g2, f2, m2)) => (g2, f2, m2.as_ref()),
                        None => (fl.image.grid(), fl.image.data(), mask.as_ref()),
                    };
                    let warped =
                        warp_tensor(ml.image.data(), ml.image.grid(), &t, grid, SampleMode::Linear, Padding::Zero)?;
                    metric.loss(fdata, &warped, fmask)?
                }
            };
            let lv = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !lv.is_finite() {
                stop = "non-finite loss".into();
                tracing::warn!("iso level {l}: loss is {lv}; keeping the best parameters");
                break;
            }
            losses.push(lv);
            super::progress::tick(&bar, lv);
            if lv < best.0 {
                best = (lv, var.as_tensor().detach().copy()?);
            }
            // A loss from random points is noisy: no slope test, the schedule's iterations run.
            if !noisy && conv.push(lv) {
                stop = "converged".into();
                break;
            }
            let grads = loss.backward()?;
            opt.step(std::slice::from_ref(&var), &grads)?;
        }
        // Carry the best parameters of this level on. A loss from random points is noisy, so its minimum
        // marks a lucky draw, not the best parameters: there the last (finite) iterate carries on.
        if noisy && stop != "non-finite loss" {
            best.1 = var.as_tensor().detach().copy()?;
        }
        var.set(&best.1)?;
        bar.finish_and_clear();
        tracing::info!(
            "iso level {l} (factor {}): {} iterations, best loss {:.6}, {stop}",
            s.factors[l],
            losses.len(),
            best.0
        );
        levels.push(LevelReport {
            factor: s.factors[l],
            iterations: losses.len(),
            final_loss: losses.last().copied().unwrap_or(f64::NAN),
            best_loss: best.0,
            seconds: t0.elapsed().as_secs_f64(),
            losses,
            stop: stop.clone(),
        });
        if stop == "cancelled" {
            break;
        }
    }
    let cancelled = levels.last().is_some_and(|l| l.stop == "cancelled");
    let mut polish = None;
    if let (Some(p), Some(measure), false, Some(fl), Some(ml)) =
        (opts.polish, metric.point_measure(), cancelled, fpyr.last(), mpyr.last())
    {
        let t0 = Instant::now();
        let obj = SampledObjective::new(measure, fl.image.grid(), &ml.image, init.kind(), init.centre())?;
        let fdata = fl.image.to_vec_f32()?;
        let mask = match &opts.fixed_mask {
            Some(m) => Some(level_mask(m, fl.image.grid())?),
            None => None,
        };
        let mvec = mask.as_ref().map(|m| m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
        let candidates = mvec.as_ref().map(|m| m.iter().filter(|v| **v != 0.0).count()).unwrap_or(fdata.len());
        let samples = if p.points < candidates {
            PointSampler::new(fl.image.grid(), mask.as_ref(), p.points, opts.seed.wrapping_add(2000))?
                .draw_samples(&fdata)
        } else {
            grid_samples(&fl.image, mvec.as_deref())?
        };
        let scales = super::objective::flatten(&param_scales(init.kind(), radius.max(1.0)))?;
        let x0 = super::objective::flatten(&best.1)?;
        let run = FusedLevel { obj: &obj, scales: &scales };
        let r = run.lbfgs(&samples, &x0, p.iterations, opts.cancel.clone())?;
        best.1 = Tensor::from_vec(r.x.iter().map(|&v| v as f32).collect::<Vec<f32>>(), r.x.len(), &Device::Cpu)?;
        tracing::info!(
            "iso polish ({} points): {} evaluations, loss {:.8} -> {:.8}, {}",
            samples.len(),
            r.losses.len(),
            r.losses.first().copied().unwrap_or(f64::NAN),
            r.best,
            r.stop
        );
        polish = Some(LevelReport {
            factor: fl.factor,
            iterations: r.losses.len(),
            final_loss: r.best,
            best_loss: r.best,
            seconds: t0.elapsed().as_secs_f64(),
            losses: r.losses,
            stop: r.stop,
        });
    }
    Ok(IsoResult { transform: init.with_params(best.1)?, levels, polish, seconds: start.elapsed().as_secs_f64() })
}

/// One level of the fused path: the objective and the parameter scales.
struct FusedLevel<'a> {
    obj: &'a SampledObjective,
    scales: &'a [f64],
}

/// What a fused level reached: the parameters to carry on, every loss evaluated, the best, and why it
/// stopped.
struct FusedRun {
    x: Vec<f64>,
    losses: Vec<f64>,
    best: f64,
    stop: String,
}

impl FusedLevel<'_> {
    /// Adam for `iters` iterations (learning rate `lr` decayed linearly to a tenth) on fresh points from
    /// `sampler` at each iteration, or on `fixed_set` (every voxel) when there is no sampler; then the
    /// convergence test applies, and the best parameters carry on (the last ones for random points).
    #[allow(clippy::too_many_arguments)]
    fn adam(
        &self,
        x0: &[f64],
        mut sampler: Option<&mut PointSampler>,
        fixed: &[f32],
        fixed_set: Option<&PointSamples>,
        iters: usize,
        lr: f64,
        opts: &IsoOptions,
        bar: &indicatif::ProgressBar,
    ) -> Result<FusedRun> {
        let mut adam = AdamVec::new(lr, self.scales.to_vec());
        let mut conv = WindowedSlope::new(opts.convergence.0, opts.convergence.1);
        let noisy = sampler.is_some();
        let mut x = x0.to_vec();
        let (mut best, mut best_x) = (f64::INFINITY, x.clone());
        let (mut losses, mut stop) = (Vec::with_capacity(iters), "iterations".to_string());
        let mut drawn: Option<PointSamples> = None;
        for it in 0..iters {
            adam.set_lr(lr * (1.0 - 0.9 * it as f64 / iters.max(1) as f64));
            if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                stop = "cancelled".into();
                break;
            }
            let samples = match (sampler.as_mut(), fixed_set) {
                (Some(sm), _) => &*drawn.insert(sm.draw_samples(fixed)),
                (None, Some(set)) => set,
                (None, None) => return Err(Error::arg("iso", "no sample points")),
            };
            let (lv, g, inside) = self.obj.eval(&x, samples)?;
            if !lv.is_finite() || g.iter().any(|v| !v.is_finite()) {
                stop = "non-finite loss".into();
                tracing::warn!("iso: loss is {lv}; keeping the best parameters");
                break;
            }
            if inside == 0 {
                stop = "no overlap".into();
                tracing::warn!("iso: no sample point maps inside the moving image; keeping the best parameters");
                break;
            }
            losses.push(lv);
            super::progress::tick(bar, lv);
            if lv < best {
                best = lv;
                best_x.clone_from(&x);
            }
            if !noisy && conv.push(lv) {
                stop = "converged".into();
                break;
            }
            adam.step(&mut x, &g);
        }
        let keep_last = noisy && stop != "non-finite loss" && stop != "no overlap";
        Ok(FusedRun { x: if keep_last { x } else { best_x }, losses, best, stop })
    }

    /// L-BFGS on one fixed set of points for at most `iters` iterations (scaled by the parameter
    /// scales); the best point carries on.
    fn lbfgs(
        &self,
        samples: &PointSamples,
        x0: &[f64],
        iters: usize,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<FusedRun> {
        let losses = std::cell::RefCell::new(Vec::new());
        let lo = super::lbfgs::LbfgsOptions {
            scales: Some(self.scales.to_vec()),
            max_iterations: iters,
            cancel,
            gtol: 0.0,
            ftol: 1e-12,
            // A step under 3 micrometres: the polish is done (its last steps are line searches in the
            // sampled objective's rounding; stopping here moved the results by under 0.005 mm).
            step_tol: 3e-3,
            initial_step: 0.1,
            max_evals: 3 * iters + 10,
            ..Default::default()
        };
        let r = super::lbfgs::lbfgs(
            |x| {
                let (v, g, inside) = self.obj.eval(x, samples)?;
                losses.borrow_mut().push(v);
                // No overlap: not a valid value (the line search steps back from it).
                Ok(if inside == 0 { (f64::NAN, g) } else { (v, g) })
            },
            x0,
            &lo,
        )?;
        let losses = losses.into_inner();
        let best = if r.fval.is_finite() { r.fval } else { f64::NAN };
        Ok(FusedRun { x: r.x, losses, best, stop: r.stop })
    }
}
