//! Classical registration recipes built from the ISO runners: `translation`, `rigid`, `similarity`,
//! `affine` (rigid, then affine from the rigid result, as ANTs' `Affine` preset), and the deformable
//! recipes `syn` (affine, then a greedy displacement field, as FireANTs' greedy registration; not
//! ANTs' symmetric SyN), `svf` (affine, then a stationary velocity field) and `bspline` (affine, then a
//! cubic B-spline), with sensible defaults.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::io::{load, save_with, SaveOptions};
use crate::image::resample::Padding;
use crate::image::smooth::pyramid;
use crate::image::Image;
use crate::metrics::Metric;
use crate::optim::init::{initial_transform, Init};
use crate::optim::{
    dense_transform, iso_dense, iso_linear_pyramids, DenseModel, DenseOptions, IsoOptions, LevelReport, Polish,
    Regularizer, Sampling, Schedule,
};
use crate::spatial::io::save_transform;
use crate::spatial::{warp, Ddf, Linear, LinearKind, Transform, WarpInterpolation};

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

/// The linear stages of a linear recipe.
pub fn stages(recipe: &str) -> Result<Vec<LinearKind>> {
    crate::names::lookup(
        "transform",
        recipe,
        &[
            ("translation", vec![LinearKind::Translation]),
            ("rigid", vec![LinearKind::Rigid]),
            ("similarity", vec![LinearKind::Rigid, LinearKind::Similarity]),
            ("affine", vec![LinearKind::Rigid, LinearKind::Affine]),
        ],
    )
}

/// One stage's report.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub transform: String,
    /// One report per pyramid level, coarse to fine.
    pub levels: Vec<LevelReport>,
    /// The final L-BFGS refinement of a linear stage ([`crate::optim::Polish`]), when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polish: Option<LevelReport>,
    pub seconds: f64,
    pub params: Vec<f64>,
}

/// Default learning rates (mm per Adam step for translations) for pyramid factors: larger at coarse
/// levels.
pub fn default_lr(factors: &[f64]) -> Vec<f64> {
    factors.iter().map(|f| 0.25 * f + 0.25).collect()
}

/// The parameters of `from` carried into `kind` (a prefix of the 12-parameter form, identity for the
/// rest), about the same centre.
///
/// Errors: as [`Linear::from_params`].
pub fn promote(from: &Linear, kind: LinearKind) -> Result<Linear> {
    let p = from.param_values()?;
    let mut q: Vec<f64> = kind.identity_params().iter().map(|&v| v as f64).collect();
    let keep = p.len().min(q.len());
    q[..keep].copy_from_slice(&p[..keep]);
    if from.kind() == LinearKind::Similarity && kind == LinearKind::Affine {
        q[6..9].copy_from_slice(&[p[6]; 3]);
    }
    Linear::from_params(kind, &q, from.centre())
}

/// How the stages run: random sampling seed, cancel flag, sample points and the final refinement.
#[derive(Clone, Debug)]
pub struct RunControl {
    /// Seed of every random choice (sample points).
    pub seed: u64,
    /// Set to true (Ctrl-C) to stop; the result so far is kept.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Random points per iteration for global measures (`None`: [`Sampling::default_for`] the measure,
    /// [`DEFAULT_POINTS`] for SSD, NCC, MI, NMI, CR); local measures use the jittered grid.
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

/// Runs the stages of a linear recipe: each stage starts from the previous one's result.
///
/// Errors: as [`iso_linear`] and [`initial_transform`].
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

/// [`register_linear`] with a seed and a cancel flag.
///
/// Errors: as [`iso_linear`] and [`initial_transform`].
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
                (other, _) => other,
            },
            seed: control.seed.wrapping_mul(31).wrapping_add(i as u64),
            optimizer: crate::optim::IsoOptimizer::Adam,
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
        if cancelled(control) {
            break;
        }
    }
    Ok((t, reports))
}

fn cancelled(control: &RunControl) -> bool {
    control.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
}

/// Arguments of `regsh register` (see the CLI help).
#[derive(Clone, Debug)]
pub struct RegisterArgs {
    pub fixed: PathBuf,
    pub moving: PathBuf,
    pub fixed_mask: Option<PathBuf>,
    pub transform: String,
    pub metric: String,
    /// The measure of the linear stages (default: [`linear_metric_for`] the metric and recipe).
    pub linear_metric: Option<String>,
    pub scales: usize,
    pub iterations: Vec<usize>,
    pub lr: Option<f64>,
    /// Random points per iteration of the linear stages with a global measure (`None`: the measure's
    /// default, [`crate::optim::Sampling::default_for`]).
    pub points: Option<usize>,
    /// Points and most iterations of the final L-BFGS refinement of the last linear stage
    /// ([`Polish`]; 0 points or 0 iterations: none).
    pub polish_points: usize,
    pub polish_iterations: usize,
    pub init: String,
    /// Iterations per level of the dense stage (its number of levels).
    pub dense_iterations: Vec<usize>,
    /// Dense stage: gradient and field smoothing sigmas (voxels), regularizer `diffusion:W` /
    /// `bending:W`, B-spline control spacing (mm), learning rate (mm).
    pub grad_sigma: Option<f64>,
    pub field_sigma: Option<f64>,
    pub regularizer: Option<String>,
    pub control_spacing: Option<f64>,
    pub dense_lr: Option<f64>,
    pub seed: u64,
    pub out: PathBuf,
    pub cancel: Option<Arc<AtomicBool>>,
}

/// The report written beside the outputs.
#[derive(Serialize)]
struct Report<'a> {
    fixed: String,
    moving: String,
    metric: String,
    linear_metric: String,
    schedule: &'a Schedule,
    stages: &'a [StageReport],
    /// The whole run: loading, registration, warping and writing.
    seconds: f64,
    /// The registration alone (pyramids and every stage), as [`register_images`] takes it.
    register_seconds: f64,
    threads: usize,
    seed: u64,
    cancelled: bool,
    outputs: Vec<String>,
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Parses `diffusion:W` / `bending:W` (`W` a non-negative weight; `none` for no regularizer).
///
/// Errors: an unknown name (with "did you mean") or a bad weight.
pub fn parse_regularizer(spec: &str) -> Result<Option<Regularizer>> {
    let (name, w) = spec.split_once(':').unwrap_or((spec, "1"));
    let w: f64 = w
        .trim()
        .parse()
        .ok()
        .filter(|w: &f64| w.is_finite() && *w >= 0.0)
        .ok_or_else(|| Error::arg("regularizer", format!("weight must be a number >= 0, got '{w}'")))?;
    crate::names::lookup(
        "regularizer",
        name.trim(),
        &[("diffusion", Some(Regularizer::Diffusion(w))), ("bending", Some(Regularizer::Bending(w))), ("none", None)],
    )
}

/// Everything a registration produced.
pub struct Registration {
    /// The linear part (fixed to moving world points).
    pub affine: Linear,
    /// The dense part, if the recipe has one: `x -> affine(x + u(x))`.
    pub field: Option<Ddf>,
    pub stages: Vec<StageReport>,
    /// The measure of the linear stages, as written (e.g. `mi[bins=32]`).
    pub linear_metric: String,
}

impl Registration {
    /// The whole fixed-to-moving transform.
    pub fn transform(&self) -> Arc<dyn Transform> {
        match &self.field {
            Some(f) => Arc::new(dense_transform(f, &self.affine)),
            None => Arc::new(self.affine.clone()),
        }
    }
}

/// The measure of the linear stages of a recipe whose (dense or only) measure is `metric`: `metric`
/// itself, except that a dense recipe (`with_dense`) with a local measure (LNCC, patch MI / CR) aligns
/// globally with Parzen MI first (ANTs' habit: MI for the affine stages, CC for SyN).
///
/// Errors: none in practice (the name `mi` is known).
pub fn linear_metric_for(metric: &Metric, with_dense: bool) -> Result<Metric> {
    if with_dense && metric.is_local() {
        Metric::new("mi")
    } else {
        Ok(metric.clone())
    }
}

/// Registers `moving` to `fixed` as `a` asks (images already loaded).
///
/// Errors: unknown names (with suggestions), bad options, registration errors.
pub fn register_images(fixed: &Image, moving: &Image, mask: Option<&Image>, a: &RegisterArgs) -> Result<Registration> {
    let (kinds, dense) = recipe(&a.transform)?;
    let metric = crate::measure::parse_metric(&a.metric)?;
    let linear_metric = match &a.linear_metric {
        Some(m) => crate::measure::parse_metric(m)?,
        None => linear_metric_for(&metric, dense.is_some())?,
    };
    let mut schedule = Schedule::new(a.scales, &a.iterations, 1.0)?;
    schedule.lr = match a.lr {
        Some(lr) => vec![lr; a.scales],
        None => default_lr(&schedule.factors),
    };
    let init = Init::parse(&a.init)?;
    let polish = (a.polish_points > 0 && a.polish_iterations > 0)
        .then_some(Polish { points: a.polish_points, iterations: a.polish_iterations });
    let control = RunControl { seed: a.seed, cancel: a.cancel.clone(), points: a.points, polish };
    let (affine, mut stages) =
        register_linear_with(fixed, moving, &kinds, &linear_metric, &schedule, init, mask, &control)?;
    let Some(mut model) = dense else {
        return Ok(Registration { affine, field: None, stages, linear_metric: linear_metric.to_string() });
    };
    if let (DenseModel::BSpline { spacing }, Some(cs)) = (&mut model, a.control_spacing) {
        if !(cs.is_finite() && cs > 0.0) {
            return Err(Error::arg("register", format!("control spacing must be > 0 mm, got {cs}")));
        }
        *spacing = cs;
    }
    let mut opts = DenseOptions::defaults(model, metric, fixed.grid())?;
    if !a.dense_iterations.is_empty() {
        let lr = opts.schedule.lr[0];
        opts.schedule = Schedule::new(a.dense_iterations.len(), &a.dense_iterations, lr)?;
    }
    if let Some(lr) = a.dense_lr {
        opts.schedule.lr = vec![lr; opts.schedule.factors.len()];
    }
    if let Some(s) = a.grad_sigma {
        opts.sigma_grad = s;
    }
    if let Some(s) = a.field_sigma {
        opts.sigma_field = s;
    }
    if let Some(r) = &a.regularizer {
        opts.regularizer = parse_regularizer(r)?;
    }
    opts.fixed_mask = mask.cloned();
    opts.cancel = a.cancel.clone();
    if cancelled(&control) {
        return Ok(Registration { affine, field: None, stages, linear_metric: linear_metric.to_string() });
    }
    let r = iso_dense(fixed, moving, &affine, model, &opts)?;
    stages.push(StageReport {
        transform: model.name().into(),
        levels: r.levels,
        polish: None,
        seconds: r.seconds,
        params: vec![],
    });
    Ok(Registration { affine, field: Some(r.field), stages, linear_metric: linear_metric.to_string() })
}

/// `regsh register`: registers, then writes `PREFIX_warped.nii.gz`, `PREFIX_affine.tfm` (ITK, LPS, fixed
/// to moving), for deformable recipes `PREFIX_warp.nii.gz` (displacement field, ITK / ANTs convention,
/// applied before the affine: `regsh apply -t PREFIX_warp.nii.gz -t PREFIX_affine.tfm`), and
/// `PREFIX_report.json`. Returns the report's path and the registration.
///
/// Errors: load errors, unknown names (with suggestions), registration and write errors.
pub fn run(a: &RegisterArgs) -> Result<(PathBuf, Registration)> {
    let start = std::time::Instant::now();
    let fixed = load(&a.fixed)?;
    let moving = load(&a.moving)?;
    let mask = a.fixed_mask.as_ref().map(load).transpose()?;
    let t0 = std::time::Instant::now();
    let reg = register_images(&fixed, &moving, mask.as_ref(), a)?;
    let register_seconds = t0.elapsed().as_secs_f64();
    let t = reg.transform();
    let warped = warp(&moving, t.as_ref(), fixed.grid(), WarpInterpolation::Linear, Padding::Zero)?;
    let (pw, pt, pd, pr) = (
        with_suffix(&a.out, "_warped.nii.gz"),
        with_suffix(&a.out, "_affine.tfm"),
        with_suffix(&a.out, "_warp.nii.gz"),
        with_suffix(&a.out, "_report.json"),
    );
    save_with(&warped, &pw, &SaveOptions::default())?;
    save_transform(&reg.affine as &dyn Transform, &pt, reg.affine.centre(), None)?;
    let mut outputs = vec![pw.display().to_string(), pt.display().to_string()];
    if let Some(f) = &reg.field {
        save_transform(f as &dyn Transform, &pd, reg.affine.centre(), Some(fixed.grid()))?;
        outputs.push(pd.display().to_string());
    }
    let report = Report {
        fixed: a.fixed.display().to_string(),
        moving: a.moving.display().to_string(),
        metric: a.metric.clone(),
        linear_metric: reg.linear_metric.clone(),
        schedule: &Schedule::new(a.scales, &a.iterations, 1.0)?,
        stages: &reg.stages,
        seconds: start.elapsed().as_secs_f64(),
        register_seconds,
        threads: rayon::current_num_threads(),
        seed: a.seed,
        cancelled: a.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)),
        outputs,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| Error::arg("register", e.to_string()))?;
    let dir = pr.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|source| Error::Io { path: pr.clone(), source })?;
    tmp.persist(&pr).map_err(|e| Error::Io { path: pr.clone(), source: e.error })?;
    Ok((pr, reg))
}
