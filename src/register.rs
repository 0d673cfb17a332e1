//! Classical registration recipes built from the ISO runner: `rigid`, and `affine` (rigid, then
//! affine from the rigid result, as ANTs' `Affine` preset), with sensible defaults.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::io::{load, save_with, SaveOptions};
use crate::image::resample::Padding;
use crate::image::Image;
use crate::metrics::Metric;
use crate::optim::init::{initial_transform, Init};
use crate::optim::{iso_linear, IsoOptions, LevelReport, Schedule};
use crate::spatial::io::save_transform;
use crate::spatial::{warp, Linear, LinearKind, Transform, WarpInterpolation};

/// The stages of a recipe.
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
    pub levels: Vec<LevelReport>,
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
    let first = kinds.first().ok_or_else(|| Error::arg("register", "no stage"))?;
    let mut t = initial_transform(*first, fixed, moving, init)?;
    let mut reports = Vec::new();
    for &kind in kinds {
        if t.kind() != kind {
            t = promote(&t, kind)?;
        }
        let opts = IsoOptions {
            schedule: schedule.clone(),
            metric: metric.clone(),
            fixed_mask: fixed_mask.cloned(),
            convergence: (10, 1e-5),
            cancel: None,
        };
        let r = iso_linear(fixed, moving, &t, &opts)?;
        t = r.transform;
        reports.push(StageReport {
            transform: kind.name().into(),
            levels: r.levels,
            seconds: r.seconds,
            params: t.param_values()?,
        });
    }
    Ok((t, reports))
}

/// Arguments of `regsh register` (see the CLI help).
#[derive(Clone, Debug)]
pub struct RegisterArgs {
    pub fixed: PathBuf,
    pub moving: PathBuf,
    pub fixed_mask: Option<PathBuf>,
    pub transform: String,
    pub metric: String,
    pub scales: usize,
    pub iterations: Vec<usize>,
    pub lr: Option<f64>,
    pub init: String,
    pub out: PathBuf,
}

/// The report written beside the outputs.
#[derive(Serialize)]
struct Report<'a> {
    fixed: String,
    moving: String,
    metric: String,
    schedule: &'a Schedule,
    stages: &'a [StageReport],
    seconds: f64,
    threads: usize,
    outputs: Vec<String>,
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `regsh register`: registers, then writes `PREFIX_warped.nii.gz`, `PREFIX_affine.tfm` (ITK, LPS, fixed
/// to moving) and `PREFIX_report.json`. Returns the report's path.
///
/// Errors: load errors, unknown names (with suggestions), registration and write errors.
pub fn run(a: &RegisterArgs) -> Result<PathBuf> {
    let start = std::time::Instant::now();
    let fixed = load(&a.fixed)?;
    let moving = load(&a.moving)?;
    let mask = a.fixed_mask.as_ref().map(load).transpose()?;
    let kinds = stages(&a.transform)?;
    let metric = crate::measure::parse_metric(&a.metric)?;
    let mut schedule = Schedule::new(a.scales, &a.iterations, 1.0)?;
    schedule.lr = match a.lr {
        Some(lr) => vec![lr; a.scales],
        None => default_lr(&schedule.factors),
    };
    let init = Init::parse(&a.init)?;
    let (t, stages) = register_linear(&fixed, &moving, &kinds, &metric, &schedule, init, mask.as_ref())?;
    let warped = warp(&moving, &t, fixed.grid(), WarpInterpolation::Linear, Padding::Zero)?;
    let (pw, pt, pr) = (
        with_suffix(&a.out, "_warped.nii.gz"),
        with_suffix(&a.out, "_affine.tfm"),
        with_suffix(&a.out, "_report.json"),
    );
    save_with(&warped, &pw, &SaveOptions::default())?;
    save_transform(&t as &dyn Transform, &pt, t.centre(), None)?;
    let report = Report {
        fixed: a.fixed.display().to_string(),
        moving: a.moving.display().to_string(),
        metric: metric.to_string(),
        schedule: &schedule,
        stages: &stages,
        seconds: start.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
        outputs: vec![pw.display().to_string(), pt.display().to_string()],
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| Error::arg("register", e.to_string()))?;
    let dir = pr.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|source| Error::Io { path: pr.clone(), source })?;
    tmp.persist(&pr).map_err(|e| Error::Io { path: pr.clone(), source: e.error })?;
    Ok(pr)
}
