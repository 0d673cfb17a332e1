//! Registration recipes: `translation`, `rigid`, `similarity`, `affine` (rigid, then affine from the
//! rigid result, as ANTs' `Affine` preset), and the deformable recipes `syn` (affine, then a greedy
//! displacement field, as FireANTs' greedy registration; not ANTs' symmetric SyN), `svf` (affine, then a
//! stationary velocity field) and `bspline` (affine, then a cubic B-spline).
//!
//! [`RegisterOptions`] holds everything a recipe takes, each default stated once in its `Default`;
//! [`register`] runs it. `regsh register` ([`crate::register`]) and the DSL's `register` both build
//! the options and call [`register`]: one registration path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::state::{RegState, StageReport, StateTransform};
use crate::error::{Error, Result};
use crate::image::smooth::pyramid;
use crate::image::{Grid, Image};
use crate::metrics::Metric;
use crate::optim::init::{initial_transform, Init};
use crate::optim::search::{rotation_search, RotationSearch};
use crate::optim::{
    iso_linear_pyramids, DenseModel, DenseOptions, IsoOptimizer, IsoOptions, Polish, Regularizer, Sampling, Schedule,
};
use crate::spatial::{Linear, LinearKind};

/// The recipe run when none is named.
pub const DEFAULT_RECIPE: &str = "affine";
/// The measure used when none is named (Parzen mutual information).
pub const DEFAULT_METRIC: &str = "mi";

/// The linear stages of a recipe and its dense stage (if any).
///
/// Errors: an unknown recipe (with "did you mean").
pub fn recipe(name: &str) -> Result<(Vec<LinearKind>, Option<DenseModel>)> {
    use LinearKind::{Affine, Rigid, Similarity, Translation};
    let ra = vec![Rigid, Affine];
    crate::names::lookup(
        "transform",
        name,
        &[
            ("translation", (vec![Translation], None)),
            ("rigid", (vec![Rigid], None)),
            ("similarity", (vec![Rigid, Similarity], None)),
            ("affine", (ra.clone(), None)),
            ("syn", (ra.clone(), Some(DenseModel::Greedy))),
            ("greedy", (ra.clone(), Some(DenseModel::Greedy))),
            ("svf", (ra.clone(), Some(DenseModel::Svf { steps: 7 }))),
            ("bspline", (ra, Some(DenseModel::BSpline { spacing: 10.0 }))),
        ],
    )
}

/// The linear stages of a linear recipe (`translation`, `rigid`, `similarity`, `affine`).
///
/// Errors: an unknown or dense recipe (with "did you mean").
pub fn stages(name: &str) -> Result<Vec<LinearKind>> {
    match recipe(name)? {
        (kinds, None) => Ok(kinds),
        (_, Some(model)) => Err(Error::arg("stages", format!("`{name}` has a dense stage ({})", model.name()))),
    }
}

/// The dense model a transform name asks for (`syn` / `greedy`, `svf`, `bspline`), if any.
pub fn dense_model(name: &str) -> Option<DenseModel> {
    recipe(name).ok().and_then(|(_, m)| m)
}

/// Default learning rates (mm per Adam step for translations) for pyramid factors: larger at coarse
/// levels.
pub fn default_lr(factors: &[f64]) -> Vec<f64> {
    factors.iter().map(|f| 0.25 * f + 0.25).collect()
}

/// Default iterations per level (coarse to fine) for `scales` levels: 100 at the coarse levels, then
/// 60 and 40 at the two finest (a level costs about 8 times the next coarser one).
pub fn default_iterations(scales: usize) -> Vec<usize> {
    (0..scales)
        .map(|l| match scales - 1 - l {
            0 => 40,
            1 => 60,
            _ => 100,
        })
        .collect()
}

/// The linear schedule for `scales` levels with `iterations` per level (`None`: [`default_iterations`])
/// and one learning rate for all levels (`None`: [`default_lr`]).
///
/// Errors: as [`Schedule::new`].
pub fn linear_schedule(scales: usize, iterations: Option<&[usize]>, lr: Option<f64>) -> Result<Schedule> {
    let its = iterations.map(<[usize]>::to_vec).unwrap_or_else(|| default_iterations(scales.clamp(1, 8)));
    let mut s = Schedule::new(scales, &its, 1.0)?;
    s.lr = match lr {
        Some(lr) => vec![lr; scales],
        None => default_lr(&s.factors),
    };
    Ok(s)
}

/// The parameters of `from` carried into `kind` ([`Linear::with_kind`]).
///
/// Errors: as [`Linear::from_params`].
pub fn promote(from: &Linear, kind: LinearKind) -> Result<Linear> {
    from.with_kind(kind)
}

/// How the linear stages run: random sampling seed, cancel flag, sample points and the final refinement.
#[derive(Clone, Debug)]
pub struct RunControl {
    /// Seed of every random choice (sample points).
    pub seed: u64,
    /// Set to true (Ctrl-C) to stop; the result so far is kept.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Random points per iteration for global measures (`None`: [`Sampling::default_for`] the measure,
    /// [`crate::optim::DEFAULT_POINTS`] for SSD, NCC, MI, NMI, CR); local measures use the jittered grid.
    pub points: Option<usize>,
    /// The L-BFGS refinement after the last level of the last stage (global measures only); `None`:
    /// none. Default [`Polish::default`].
    pub polish: Option<Polish>,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl { seed: 0, cancel: None, points: None, polish: Some(Polish::default()) }
    }
}

impl RunControl {
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// Runs the stages of a linear recipe: each stage starts from the previous one's result; with
/// [`Init::Search`] the first stage starts from the best of a coarse rotation search by `metric`
/// ([`rotation_search`]; MI when `metric` has no fused point form).
///
/// Errors: as [`crate::optim::iso_linear`], [`initial_transform`] and [`rotation_search`].
pub fn register_linear(
    fixed: &Image,
    moving: &Image,
    kinds: &[LinearKind],
    metric: &Metric,
    schedule: &Schedule,
    init: Init,
    fixed_mask: Option<&Image>,
) -> Result<(Linear, Vec<StageReport>)> {
    register_linear_with(fixed, moving, kinds, metric, schedule, init, fixed_mask, &RunControl::default())
}

/// [`register_linear`] with a seed, a cancel flag, the sample points and the polish.
///
/// Errors: as [`crate::optim::iso_linear`] and [`initial_transform`].
#[allow(clippy::too_many_arguments)]
pub fn register_linear_with(
    fixed: &Image,
    moving: &Image,
    kinds: &[LinearKind],
    metric: &Metric,
    schedule: &Schedule,
    init: Init,
    fixed_mask: Option<&Image>,
    control: &RunControl,
) -> Result<(Linear, Vec<StageReport>)> {
    let first = kinds.first().ok_or_else(|| Error::arg("register", "no stage"))?;
    let mut t = initial_transform(*first, fixed, moving, init)?;
    if init == Init::Search && *first != LinearKind::Translation {
        let search = RotationSearch { seed: control.seed, ..Default::default() };
        let (found, _) = rotation_search(fixed, moving, &t, metric, fixed_mask, &search, control.cancel.clone())?;
        t = promote(&found, *first)?;
    }
    let mut reports = Vec::new();
    // One pyramid of each image for every stage.
    schedule.check()?;
    let fpyr = pyramid(fixed, &schedule.factors, schedule.sigmas.as_deref())?;
    let mpyr = pyramid(moving, &schedule.factors, schedule.sigmas.as_deref())?;
    for (i, &kind) in kinds.iter().enumerate() {
        if t.kind() != kind {
            t = promote(&t, kind)?;
        }
        let opts = IsoOptions {
            schedule: schedule.clone(),
            metric: metric.clone(),
            fixed_mask: fixed_mask.cloned(),
            convergence: (10, 1e-5),
            cancel: control.cancel.clone(),
            sampling: match (Sampling::default_for(metric), control.points) {
                (Sampling::Random(_), Some(n)) => Sampling::Random(n.max(1)),
                // Patch measures on sample points when asked (else on the jittered grid).
                (_, Some(n)) if metric.has_point_form() => Sampling::Random(n.max(1)),
                (other, _) => other,
            },
            seed: control.seed.wrapping_mul(31).wrapping_add(i as u64),
            optimizer: IsoOptimizer::Adam,
            polish: if i + 1 == kinds.len() { control.polish } else { None },
        };
        let r = iso_linear_pyramids(fixed, moving, &fpyr, &mpyr, &t, &opts)?;
        t = r.transform;
        reports.push(StageReport {
            transform: kind.name().into(),
            levels: r.levels,
            polish: r.polish,
            seconds: r.seconds,
            params: t.param_values()?,
        });
        if control.cancelled() {
            break;
        }
    }
    Ok((t, reports))
}

/// The measure of the linear stages of a recipe whose (dense or only) measure is `metric`: `metric`
/// itself, except that a dense recipe (`with_dense`) with a local measure (LNCC, patch MI / CR) aligns
/// globally with Parzen MI first (ANTs' habit: MI for the affine stages, CC for SyN). A regularizer the
/// measure carries is for the dense stage only.
///
/// Errors: a regularizer on the measure of a recipe without a dense stage.
pub fn linear_metric_for(metric: &Metric, with_dense: bool) -> Result<Metric> {
    if let (false, Some(r)) = (with_dense, metric.regularizer()) {
        return Err(crate::error::Error::arg(
            "register",
            format!("the measure carries a regularizer ({r}), which needs a dense transform (syn, svf, bspline)"),
        ));
    }
    if with_dense && metric.is_local() {
        Metric::new(DEFAULT_METRIC)
    } else {
        Ok(metric.without_regularizer())
    }
}

/// Settings of a dense stage that replace [`DenseOptions::defaults`] where given (`None`: the default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DenseSettings {
    /// Iterations per level, coarse to fine (their count is the number of levels).
    pub iterations: Option<Vec<usize>>,
    /// Largest step per iteration, mm, one per level (or one for all).
    pub lr: Option<Vec<f64>>,
    /// Gaussian sigma (voxels) applied to each gradient.
    pub grad_sigma: Option<f64>,
    /// Gaussian sigma (voxels) applied to the field after each step.
    pub field_sigma: Option<f64>,
    /// The regularizer (`Some(None)`: none).
    pub regularizer: Option<Option<Regularizer>>,
    /// B-spline control point spacing, mm.
    pub control_spacing: Option<f64>,
    /// SVF scaling-and-squaring steps.
    pub steps: Option<usize>,
    /// Iterations without a better loss after which a level stops (0: none; every level still returns
    /// its best field).
    pub patience: Option<usize>,
    /// The plateau rule's fraction ([`crate::optim::Plateau`]: a level cools down and ends when its last
    /// 10 iterations added at most this share of its fall); 0: every level runs to its iteration cap.
    pub plateau: Option<f64>,
}

impl DenseSettings {
    /// The model (`model` with its spacing or steps replaced) and the options of a dense stage with
    /// `metric` on `fixed`'s grid: [`DenseOptions::defaults`] with these settings on top.
    ///
    /// Errors: a control spacing that is not a positive number of mm; a plateau fraction outside
    /// `[0, 1)`; an iteration or learning-rate list that does not fit the levels; a regularizer given
    /// both here and with the measure.
    pub fn apply(&self, mut model: DenseModel, metric: Metric, fixed: &Grid) -> Result<(DenseModel, DenseOptions)> {
        match &mut model {
            DenseModel::BSpline { spacing } => {
                if let Some(cs) = self.control_spacing {
                    if !(cs.is_finite() && cs > 0.0) {
                        return Err(Error::arg("register", format!("control spacing must be > 0 mm, got {cs}")));
                    }
                    *spacing = cs;
                }
            }
            DenseModel::Svf { steps } => *steps = self.steps.unwrap_or(*steps),
            DenseModel::Greedy => {}
        }
        if let (Some(_), Some(r)) = (&self.regularizer, metric.regularizer()) {
            return Err(Error::arg(
                "register",
                format!("the measure carries a regularizer ({r}) and a regularizer is given too: give one (add them: metric + regularizer)"),
            ));
        }
        let mut opts = DenseOptions::defaults(model, metric, fixed)?;
        if let Some(it) = &self.iterations {
            let lr = opts.schedule.lr[0];
            opts.schedule = Schedule::new(it.len(), it, lr)?;
        }
        if let Some(lr) = &self.lr {
            let n = opts.schedule.factors.len();
            opts.schedule.lr = if lr.len() == 1 { vec![lr[0]; n] } else { lr.clone() };
            opts.schedule.check()?;
        }
        opts.sigma_grad = self.grad_sigma.unwrap_or(opts.sigma_grad);
        opts.sigma_field = self.field_sigma.unwrap_or(opts.sigma_field);
        opts.patience = self.patience.unwrap_or(opts.patience);
        if let Some(f) = self.plateau {
            if !(0.0..1.0).contains(&f) {
                return Err(Error::arg("register", format!("plateau must be a fraction in [0, 1) (0: off), got {f}")));
            }
            opts.plateau = (f > 0.0).then(|| crate::optim::Plateau { fraction: f, ..Default::default() });
        }
        if let Some(r) = &self.regularizer {
            opts.regularizer = r.clone();
        }
        Ok((model, opts))
    }
}

/// Everything a registration recipe takes. `Default` states each default once: the `affine` recipe with
/// Parzen MI over 3 levels ([`default_iterations`], [`default_lr`]), centres of mass, the default
/// sampling and polish ([`RunControl::default`]), the dense stage's own defaults.
#[derive(Clone)]
pub struct RegisterOptions {
    /// The recipe: `translation`, `rigid`, `similarity`, `affine`, `syn`, `svf`, `bspline` ([`recipe`]).
    pub recipe: String,
    /// The measure: of every stage of a linear recipe, of the dense stage of a dense one.
    pub metric: Metric,
    /// The measure of the linear stages (`None`: [`linear_metric_for`] the measure and recipe).
    pub linear_metric: Option<Metric>,
    /// The pyramid of the linear stages.
    pub schedule: Schedule,
    /// How the first linear stage starts.
    pub init: Init,
    /// Only fixed voxels inside this mask (non-zero, on the fixed grid) count, in every stage.
    pub fixed_mask: Option<Image>,
    /// Seed, cancel flag (also the dense stage's), sample points, polish of the linear stages.
    pub control: RunControl,
    /// The dense stage's settings.
    pub dense: DenseSettings,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            recipe: DEFAULT_RECIPE.into(),
            // Infallible: the name is in the registry.
            metric: Metric::new(DEFAULT_METRIC).unwrap_or_else(|_| unreachable!("mi is a metric")),
            linear_metric: None,
            // Infallible: 3 levels with 3 iteration counts.
            schedule: linear_schedule(3, None, None).unwrap_or_else(|_| unreachable!("a valid schedule")),
            init: Init::Moments,
            fixed_mask: None,
            control: RunControl::default(),
            dense: DenseSettings::default(),
        }
    }
}

impl RegisterOptions {
    /// The measure the linear stages use.
    ///
    /// Errors: an unknown recipe.
    pub fn linear_metric(&self) -> Result<Metric> {
        match &self.linear_metric {
            Some(m) => Ok(m.clone()),
            None => linear_metric_for(&self.metric, recipe(&self.recipe)?.1.is_some()),
        }
    }
}

/// A whole recipe of `moving` onto `fixed` (MOVING first): the linear stages as [`register_linear_with`]
/// runs them with [`RegisterOptions::linear_metric`], then the dense stage with the measure and the
/// dense settings. A cancelled linear stage skips the dense one; the state holds what was reached.
///
/// Errors: an unknown recipe (with "did you mean"); as [`register_linear_with`] and
/// [`crate::optim::iso_dense`].
pub fn register(moving: &Image, fixed: &Image, o: &RegisterOptions) -> Result<RegState> {
    let (kinds, model) = recipe(&o.recipe)?;
    let t0 = Instant::now();
    let linear_metric = o.linear_metric()?;
    let (t, stages) = register_linear_with(
        fixed,
        moving,
        &kinds,
        &linear_metric,
        &o.schedule,
        o.init,
        o.fixed_mask.as_ref(),
        &o.control,
    )?;
    let state = RegState {
        fixed: fixed.clone(),
        moving: moving.clone(),
        fixed_mask: o.fixed_mask.clone(),
        transform: StateTransform::Linear(t),
        stages,
        seconds: t0.elapsed().as_secs_f64(),
    };
    let Some(model) = model.filter(|_| !o.control.cancelled()) else { return Ok(state) };
    let (model, mut options) = o.dense.apply(model, o.metric.clone(), fixed.grid())?;
    options.cancel = o.control.cancel.clone();
    super::iso_deformable(&state, &super::DenseStage { model, options })
}
