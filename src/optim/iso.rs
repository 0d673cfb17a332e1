//! Multi-scale instance-specific optimization (ISO, Chen et al. 2024, Algorithm 1): the parameters of a
//! transform are refined by gradient descent on a similarity loss over a coarse-to-fine image pyramid,
//! carried from each level to the next.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::lbfgs::LbfgsOptions;
pub use super::level::level_mask;
use super::level::{FusedLevel, PointSampler, Points, TensorLevel};
use super::minimize::{first_order, lbfgs_run, powell_run, FirstOrderOptions, Objective, Run};
use super::optimizer::AdamVec;
use super::powell::PowellOptions;
use super::stop::Stop;
use crate::error::{Error, Result};
use crate::image::smooth::{pyramid, PyramidLevel};
use crate::image::Image;
use crate::metrics::{Metric, MetricKind, OptionValue};
use crate::spatial::{Linear, LinearKind};

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
/// that floor. Global measures ([`Metric::point_measure`]), and measures written in the DSL (on the
/// finest level's whole grid, by autograd); for other local measures it is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Polish {
    /// Sample points of the refinement.
    pub points: usize,
    /// At most this many L-BFGS iterations (and `3 * iterations + 10` evaluations).
    pub iterations: usize,
}

impl Default for Polish {
    /// 50 000 points, at most 20 iterations (it stops earlier, once a step moves no point by more than
    /// about 3 micrometres); it brings a mono-modal affine from Adam's noise floor (tenths of a mm) to
    /// hundredths of a mm of the truth (`tests/register.rs`).
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
/// earlier when they converge. Powell uses no gradient (Sedghi et al. (deep metrics) optimizes a learned metric with it).
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
    /// CR; 20 000 for any other global one (evaluated with tensors), the jittered grid for local ones,
    /// the patch measures (MI-patch, CR-patch) included. The patch measures also run on random points
    /// grouped by patch ([`crate::ops::point_metric::PatchPoints`], `Random(n)`, e.g.
    /// [`DEFAULT_PATCH_POINTS`]): 3x the time of global CR instead of about 20x, but on the unsmoothed
    /// 2 mm templates CR-patch ends further from the truth there (seed 000's reduced table: 0.82 mm
    /// against 0.47 for MI-patch), so the grid stays the default.
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

/// Random points per iteration of the patch measures (MI-patch, CR-patch) on sample points where
/// `points=` does not say: each patch of a fine level (16^3 voxels: about 250 patches on a 2 mm brain)
/// needs its own Parzen statistics, so they see more points than a global measure.
pub const DEFAULT_PATCH_POINTS: usize = 20_000;

/// What happened at one pyramid level.
#[derive(Clone, Debug, Serialize)]
pub struct LevelReport {
    pub factor: f64,
    /// Iterations (first-order optimizers) or evaluations (L-BFGS, Powell).
    pub iterations: usize,
    /// The last iteration's loss (first-order optimizers), or the loss at the returned point (L-BFGS,
    /// Powell, dense levels).
    pub final_loss: f64,
    pub best_loss: f64,
    pub seconds: f64,
    pub losses: Vec<f64>,
    /// Why the level ended.
    pub stop: Stop,
}

impl LevelReport {
    /// The report of a level at `factor` whose iterations had `losses` (one each) and ended by `stop`,
    /// in `seconds`: the final loss is the last, the best the smallest.
    pub fn of_losses(factor: f64, losses: Vec<f64>, stop: Stop, seconds: f64) -> Self {
        LevelReport {
            factor,
            iterations: losses.len(),
            final_loss: losses.last().copied().unwrap_or(f64::NAN),
            best_loss: losses.iter().copied().fold(f64::INFINITY, f64::min),
            seconds,
            losses,
            stop,
        }
    }

    /// The report of a level at `factor` that ran `run` in `seconds`; `per_iteration`: its losses are
    /// one per iteration of a first-order optimizer (else one per evaluation of L-BFGS or Powell, whose
    /// final loss is the one at the point returned).
    pub fn of_run(factor: f64, run: Run, seconds: f64, per_iteration: bool) -> Self {
        let final_loss = if per_iteration { run.losses.last().copied().unwrap_or(f64::NAN) } else { run.best };
        LevelReport {
            factor,
            iterations: run.losses.len(),
            final_loss,
            best_loss: run.best,
            seconds,
            losses: run.losses,
            stop: run.stop,
        }
    }
}

/// The result of [`iso_linear`].
#[derive(Clone, Debug)]
pub struct IsoResult {
    pub transform: Linear,
    /// One report per pyramid level, coarse to fine.
    pub levels: Vec<LevelReport>,
    /// The report of [`IsoOptions::polish`], when it ran (`iterations` counts its evaluations).
    pub polish: Option<LevelReport>,
    pub seconds: f64,
}

impl IsoResult {
    /// Whether a level or the polish was cancelled.
    pub fn cancelled(&self) -> bool {
        self.levels.iter().chain(&self.polish).any(|l| l.stop.is_cancelled())
    }
}

/// Half the distance (mm) from `grid`'s centre to its farthest corner: the radius at which
/// [`param_scales`] makes a unit rotation step move points by about 1 mm.
pub(crate) fn grid_radius(grid: &crate::image::Grid) -> f64 {
    let ctr = grid.centre();
    grid.corners()
        .iter()
        .map(|p| ((p[0] - ctr[0]).powi(2) + (p[1] - ctr[1]).powi(2) + (p[2] - ctr[2]).powi(2)).sqrt())
        .fold(0.0, f64::max)
        / 2.0
}

/// Per-parameter step scales of a linear kind: 1 for translations (mm); `1 / radius` for rotations,
/// scales and shears, so a unit step moves points at the image's radius by about 1 mm.
pub(crate) fn param_scales(kind: LinearKind, radius: f64) -> Vec<f64> {
    (0..kind.num_params())
        .map(|i| {
            let translation = match kind {
                LinearKind::Matrix => i % 4 == 3,
                _ => i < 3,
            };
            // Parameters are f32: the scale is the f32 value (as the parameters' own precision).
            if translation {
                1.0
            } else {
                (1.0 / radius) as f32 as f64
            }
        })
        .collect()
}

/// Fills the Parzen measures' intensity ranges from the full-resolution images (unless set), so the
/// bins do not move as the warped image changes.
pub(crate) fn fix_ranges(metric: &Metric, fixed: &Image, moving: &Image) -> Result<Metric> {
    metric.map_terms(&mut |m| fix_term_ranges(m, fixed, moving))
}

fn fix_term_ranges(metric: &Metric, fixed: &Image, moving: &Image) -> Result<Metric> {
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
/// MI, NMI, CR) is evaluated by the fused kernel [`crate::ops::point_metric`] with f64 parameters (no
/// tensor per iteration); a level whose grid has fewer voxels than the points asked for uses every voxel
/// as a point (a deterministic loss, so the convergence test applies). Points that map outside the
/// moving image are left out. Other measures and sampling modes warp the moving image with tensors
/// (candle autograd). Every optimizer runs on the same objective ([`super::minimize`]).
///
/// Errors: an invalid schedule; images with several channels; tensor errors.
pub fn iso_linear(fixed: &Image, moving: &Image, init: &Linear, opts: &IsoOptions) -> Result<IsoResult> {
    opts.schedule.check()?;
    let s = &opts.schedule;
    let fpyr = pyramid(fixed, &s.factors, s.sigmas.as_deref())?;
    let mpyr = pyramid(moving, &s.factors, s.sigmas.as_deref())?;
    iso_linear_pyramids(fixed, moving, &fpyr, &mpyr, init, opts)
}

/// The objective of level `l` (images `fl`, `ml`) for `optimizer`: fused where the measure has a point
/// form and random points are asked for (L-BFGS and Powell draw once per level), else on tensors (the
/// jittered grid only for Adam: the deterministic optimizers see the plain grid).
fn level_objective<'a>(
    metric: &'a Metric,
    fl: &'a Image,
    ml: &'a Image,
    init: &'a Linear,
    opts: &'a IsoOptions,
    l: usize,
) -> Result<Box<dyn Objective + 'a>> {
    let mask = opts.fixed_mask.as_ref().map(|m| level_mask(m, fl.grid())).transpose()?;
    let first_order = opts.optimizer == IsoOptimizer::Adam;
    let seed = opts.seed.wrapping_add(l as u64);
    let random = match opts.sampling {
        Sampling::Random(n) if (metric.has_point_form() || !metric.is_local()) && n < fl.grid().num_voxels() => {
            let s = PointSampler::new(fl.grid(), mask.as_ref(), n, seed)?;
            Some(if first_order { Points::Fresh(s) } else { Points::Once(s) })
        }
        _ => None,
    };
    if matches!(opts.sampling, Sampling::Random(_)) && metric.point_measure_on(fl.grid().shape()).is_some() {
        let points = random.unwrap_or(Points::Grid);
        return Ok(Box::new(FusedLevel::new(metric, fl, ml, init, points, mask.as_ref())?));
    }
    let points = match (random, opts.sampling) {
        (Some(p), _) => p,
        (None, Sampling::Jittered) if first_order => {
            Points::Jittered(ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(1000 + l as u64)))
        }
        _ => Points::Grid,
    };
    Ok(Box::new(TensorLevel::new(metric, fl, ml, init, points, mask, opts.fixed_mask.as_ref())?))
}

/// L-BFGS options of a registration level or the polish: at most `iterations` iterations and
/// `3 * iterations + 10` evaluations, no gradient test (the sampled losses' gradients never vanish),
/// and a stop once an accepted step moves no point by more than about 3 micrometres (the last steps are
/// line searches in the objective's rounding; stopping there moved results by under 0.005 mm).
pub(crate) fn registration_lbfgs(scales: &[f64], iterations: usize, cancel: Option<Arc<AtomicBool>>) -> LbfgsOptions {
    LbfgsOptions {
        scales: Some(scales.to_vec()),
        max_iterations: iterations,
        cancel,
        gtol: 0.0,
        ftol: 1e-12,
        step_tol: 3e-3,
        initial_step: 0.1,
        max_evals: 3 * iterations + 10,
        ..Default::default()
    }
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
    if let Some(r) = opts.metric.regularizer() {
        return Err(Error::arg(
            "iso",
            format!("the measure carries a regularizer ({r}), which applies to dense transforms (syn, svf, bspline), not to a linear one"),
        ));
    }
    let start = Instant::now();
    let metric = fix_ranges(&opts.metric, fixed, moving)?;
    let scales = param_scales(init.kind(), grid_radius(fixed.grid()).max(1.0));
    let mut x = init.param_values()?;
    let mut levels = Vec::new();
    for (l, (fl, ml)) in fpyr.iter().zip(mpyr).enumerate() {
        let t0 = Instant::now();
        let mut obj = level_objective(&metric, &fl.image, &ml.image, init, opts, l)?;
        let iters = s.iterations[l];
        let (run, per_iteration) = match opts.optimizer {
            IsoOptimizer::Adam => {
                let bar = super::progress::level_bar(init.kind().name(), l, s.factors.len(), iters);
                let o = FirstOrderOptions {
                    iterations: iters,
                    lr: s.lr[l],
                    decay: true,
                    convergence: Some(opts.convergence),
                    cancel: opts.cancel.clone(),
                };
                let mut adam = AdamVec::new(s.lr[l], scales.clone());
                let r = first_order(&mut adam, obj.as_mut(), &x, &o, &mut |lv| super::progress::tick(&bar, lv))?;
                bar.finish_and_clear();
                (r, true)
            }
            IsoOptimizer::Lbfgs => {
                (lbfgs_run(obj.as_mut(), &x, &registration_lbfgs(&scales, iters, opts.cancel.clone()))?, false)
            }
            IsoOptimizer::Powell => {
                let po = PowellOptions {
                    scales: Some(scales.clone()),
                    max_iterations: iters,
                    cancel: opts.cancel.clone(),
                    ..Default::default()
                };
                (powell_run(obj.as_mut(), &x, &po)?, false)
            }
        };
        x.clone_from(&run.x);
        tracing::info!(
            "iso level {l} (factor {}, {:?}): {} evaluations, best loss {:.6}, {}",
            s.factors[l],
            opts.optimizer,
            run.losses.len(),
            run.best,
            run.stop
        );
        levels.push(LevelReport::of_run(s.factors[l], run, t0.elapsed().as_secs_f64(), per_iteration));
        if levels.last().is_some_and(|r| r.stop.is_cancelled()) {
            break;
        }
    }
    let cancelled = levels.last().is_some_and(|r| r.stop.is_cancelled());
    let mut polish = None;
    let custom = metric.kind() == MetricKind::Custom;
    if let (Some(p), true, false, Some(fl), Some(ml)) = (opts.polish, custom, cancelled, fpyr.last(), mpyr.last()) {
        // A measure supplied from outside (written in the DSL) has no point form: L-BFGS on the finest
        // level's whole grid, by autograd.
        let t0 = Instant::now();
        let mask = opts.fixed_mask.as_ref().map(|m| level_mask(m, fl.image.grid())).transpose()?;
        let mut obj =
            TensorLevel::new(&metric, &fl.image, &ml.image, init, Points::Grid, mask, opts.fixed_mask.as_ref())?;
        let run = lbfgs_run(&mut obj, &x, &registration_lbfgs(&scales, p.iterations, opts.cancel.clone()))?;
        tracing::info!(
            "iso polish (whole grid): {} evaluations, best loss {:.8}, {}",
            run.losses.len(),
            run.best,
            run.stop
        );
        x.clone_from(&run.x);
        polish = Some(LevelReport::of_run(fl.factor, run, t0.elapsed().as_secs_f64(), false));
    }
    // Patch measures are polished on sample points only when their levels ran on sample points.
    let on_points = !metric.is_local() || matches!(opts.sampling, Sampling::Random(_));
    let fused = fpyr.last().filter(|_| on_points).and_then(|fl| metric.point_measure_on(fl.image.grid().shape()));
    if let (Some(p), Some(_), false, Some(fl), Some(ml)) = (opts.polish, fused, cancelled, fpyr.last(), mpyr.last()) {
        let t0 = Instant::now();
        let mask = opts.fixed_mask.as_ref().map(|m| level_mask(m, fl.image.grid())).transpose()?;
        let candidates = match &mask {
            Some(m) => m.ne(0f32)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize,
            None => fl.image.grid().num_voxels(),
        };
        let points = if p.points < candidates {
            let seed = opts.seed.wrapping_add(2000);
            Points::Once(PointSampler::new(fl.image.grid(), mask.as_ref(), p.points, seed)?)
        } else {
            Points::Grid
        };
        let mut obj = FusedLevel::new(&metric, &fl.image, &ml.image, init, points, mask.as_ref())?;
        let n = obj.points();
        let run = lbfgs_run(&mut obj, &x, &registration_lbfgs(&scales, p.iterations, opts.cancel.clone()))?;
        tracing::info!(
            "iso polish ({n} points): {} evaluations, loss {:.8} -> {:.8}, {}",
            run.losses.len(),
            run.losses.first().copied().unwrap_or(f64::NAN),
            run.best,
            run.stop
        );
        x.clone_from(&run.x);
        polish = Some(LevelReport::of_run(fl.factor, run, t0.elapsed().as_secs_f64(), false));
    }
    let params: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let n = params.len();
    let transform = init.with_params(Tensor::from_vec(params, n, init.params().device())?)?;
    Ok(IsoResult { transform, levels, polish, seconds: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;
    use std::sync::atomic::Ordering;

    /// A blob and the same blob shifted by 2 voxels along x, 16^3 voxels of 2 mm.
    fn pair() -> (Image, Image) {
        let g = Grid::axis_aligned([16, 16, 16], [2.0; 3], [0.0; 3]).unwrap_or_else(|e| panic!("{e}"));
        let blob = |shift: f64| -> Vec<f32> {
            let mut v = Vec::with_capacity(4096);
            for z in 0..16 {
                for y in 0..16 {
                    for x in 0..16 {
                        let d2 = (x as f64 - 7.5 - shift).powi(2) + (y as f64 - 7.5).powi(2) + (z as f64 - 7.5).powi(2);
                        v.push((-d2 / 18.0).exp() as f32);
                    }
                }
            }
            v
        };
        let f = Image::from_vec(blob(0.0), 1, g.clone()).unwrap_or_else(|e| panic!("{e}"));
        let m = Image::from_vec(blob(2.0), 1, g).unwrap_or_else(|e| panic!("{e}"));
        (f, m)
    }

    fn options(cancel: Arc<AtomicBool>) -> IsoOptions {
        let metric = Metric::new("ssd").unwrap_or_else(|e| panic!("{e}"));
        IsoOptions {
            schedule: Schedule::new(1, &[30], 0.5).unwrap_or_else(|e| panic!("{e}")),
            sampling: Sampling::default_for(&metric),
            metric,
            fixed_mask: None,
            convergence: (10, 1e-5),
            cancel: Some(cancel),
            seed: 0,
            optimizer: IsoOptimizer::Adam,
            polish: Some(Polish { points: 1000, iterations: 20 }),
        }
    }

    #[test]
    fn a_cancel_during_the_polish_is_reported_as_cancelled() {
        let (f, m) = pair();
        let init = Linear::identity(LinearKind::Translation, f.grid().centre());
        let cancel = Arc::new(AtomicBool::new(false));
        let r = iso_linear(&f, &m, &init, &options(cancel.clone())).unwrap_or_else(|e| panic!("{e}"));
        assert!(!r.cancelled(), "runs to the end without a cancel");
        assert!(r.polish.as_ref().is_some_and(|p| !p.stop.is_cancelled() && p.iterations > 0), "and polishes");
        // No level iterations, so the level never looks at the flag: the polish is the first loop to see
        // it (as when Ctrl-C comes after the last level).
        let mut o = options(cancel.clone());
        o.schedule.iterations = vec![0];
        cancel.store(true, Ordering::Relaxed);
        let r = iso_linear(&f, &m, &init, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.levels[0].stop, Stop::Iterations);
        let p = r.polish.as_ref().unwrap_or_else(|| panic!("the polish ran"));
        assert_eq!((p.stop, p.iterations), (Stop::Cancelled, 0));
        assert!(r.cancelled(), "the result says it was cancelled");
        assert_eq!(r.transform.param_values().unwrap_or_default(), init.param_values().unwrap_or_default());
    }
}
