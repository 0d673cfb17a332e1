//! `regsh register`: the command line's registration. Its arguments ([`RegisterArgs`], a clap `Args`
//! struct) become [`RegisterOptions`], and [`crate::pipeline::register`] runs the recipe, the same path
//! the DSL's `register` takes; this module loads the images and writes the outputs and the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::io::{load, save_with, SaveOptions};
use crate::image::resample::Padding;
use crate::metrics::Metric;
use crate::optim::init::Init;
use crate::optim::{Polish, Regularizer, Schedule};
use crate::pipeline::recipes::{linear_schedule, DEFAULT_METRIC, DEFAULT_RECIPE};
use crate::pipeline::{DenseSettings, RegState, RegisterOptions, RunControl, StageReport, StateTransform};
use crate::spatial::io::save_transform;
use crate::spatial::{warp, Transform, WarpInterpolation};

/// Arguments of `regsh register`.
#[derive(clap::Args, Clone, Debug)]
pub struct RegisterArgs {
    #[arg(long)]
    pub fixed: PathBuf,
    #[arg(long)]
    pub moving: PathBuf,
    /// Only fixed voxels inside this mask count.
    #[arg(long)]
    pub fixed_mask: Option<PathBuf>,
    /// translation, rigid, similarity, affine, syn, svf, bspline.
    #[arg(long, default_value = DEFAULT_RECIPE)]
    pub transform: String,
    /// Similarity measure with options, e.g. `mi`, `cr_patch[patch=8]`, `ncc`, `lncc[window=9]`.
    #[arg(long, default_value = DEFAULT_METRIC)]
    pub metric: String,
    /// Measure of the linear stages of a dense recipe (syn, svf, bspline) when --metric is local
    /// (lncc, *_patch); default mi. A linear recipe uses --metric itself unless this is given.
    #[arg(long)]
    pub linear_metric: Option<String>,
    /// Number of pyramid levels of the linear stages (factors 2^(scales-1) .. 1); with --iterations,
    /// ANTs' `Affine` preset, as the stdlib's register_affine.
    #[arg(long, default_value_t = 4)]
    pub scales: usize,
    /// Iterations per level of the linear stages, coarse to fine (one value, or one per level).
    #[arg(long, value_delimiter = ',', default_values_t = vec![100usize, 60, 30, 15])]
    pub iterations: Vec<usize>,
    /// Adam learning rate of the linear stages (mm per step for translations); default
    /// 0.25 * factor + 0.25 per level.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Random off-grid points per Adam iteration of the linear stages with a global measure (fresh
    /// each iteration; a level with fewer voxels uses all of them). Default 5000 (ssd, ncc, mi,
    /// nmi, cr: one fused kernel).
    #[arg(long)]
    pub points: Option<usize>,
    /// Points of the final L-BFGS refinement of the last linear stage (one fixed random draw at
    /// full resolution; global measures only). It removes the noise floor of Adam on random points
    /// (mono-modal affine: about 0.2 mm -> 0.02 mm). 0 turns it off.
    #[arg(long, default_value_t = Polish::default().points)]
    pub polish: usize,
    /// Most L-BFGS iterations of the final refinement.
    #[arg(long, default_value_t = Polish::default().iterations)]
    pub polish_iterations: usize,
    /// Initialization: identity, centres, moments, or search (moments, then the best of a coarse search
    /// over rotations by the linear measure at 8 mm, as FSL FLIRT's: heads tilted by up to about 30
    /// degrees, full heads onto brain-only templates; about a second more).
    #[arg(long, default_value = "moments")]
    pub init: String,
    /// Iterations per level of the dense stage, coarse to fine (factors 2^(n-1) .. 1). Default
    /// 100,100,50.
    #[arg(long, value_delimiter = ',')]
    pub dense_iterations: Option<Vec<usize>>,
    /// Dense stage: Gaussian sigma (voxels) applied to each gradient (fluid-like). Default 3.
    #[arg(long)]
    pub grad_sigma: Option<f64>,
    /// Dense stage: Gaussian sigma (voxels) applied to the field after a step of a tenth of a voxel
    /// (elastic-like); a step of s voxels gets sigma * sqrt(10 s), so the smoothing keeps pace with the
    /// decaying step. Default 1; 0: none.
    #[arg(long)]
    pub field_sigma: Option<f64>,
    /// Dense stage: a level ends when its last 10 iterations added at most this fraction of the
    /// level's fall, after 10 iterations of a cooling step. Default 0.05; 0: every level runs to its
    /// iteration cap.
    #[arg(long)]
    pub plateau: Option<f64>,
    /// Dense stage: a level also stops after this many iterations without a better loss. Default 0:
    /// no such test. Every level returns the best field it evaluated.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Dense stage regularizer: `diffusion:W`, `bending:W`, `folding:W` or `none` (default: none for syn / svf,
    /// bending:0.01 for bspline).
    #[arg(long)]
    pub regularizer: Option<String>,
    /// B-spline control point spacing in mm (default 10).
    #[arg(long)]
    pub control_spacing: Option<f64>,
    /// Dense stage: largest step per iteration in mm (default half a fixed voxel).
    #[arg(long)]
    pub dense_lr: Option<f64>,
    /// Seed of the random sample points.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output prefix.
    #[arg(long)]
    pub out: PathBuf,
}

impl RegisterArgs {
    /// The registration these arguments ask for (`cancel`: the flag Ctrl-C sets). The images and the
    /// mask are given separately (loaded by [`run`]).
    ///
    /// Errors: unknown recipe, measure, initialization or regularizer names (with suggestions); a
    /// schedule whose iterations do not fit its levels.
    pub fn options(&self, cancel: Option<Arc<AtomicBool>>) -> Result<RegisterOptions> {
        crate::pipeline::recipes::recipe(&self.transform)?;
        let polish = (self.polish > 0 && self.polish_iterations > 0)
            .then_some(Polish { points: self.polish, iterations: self.polish_iterations });
        Ok(RegisterOptions {
            recipe: self.transform.clone(),
            metric: Metric::parse(&self.metric)?,
            linear_metric: self.linear_metric.as_deref().map(Metric::parse).transpose()?,
            schedule: linear_schedule(self.scales, Some(&self.iterations), self.lr)?,
            init: Init::parse(&self.init)?,
            fixed_mask: None,
            control: RunControl { seed: self.seed, cancel, points: self.points, polish },
            dense: DenseSettings {
                iterations: self.dense_iterations.clone(),
                lr: self.dense_lr.map(|lr| vec![lr]),
                grad_sigma: self.grad_sigma,
                field_sigma: self.field_sigma,
                patience: self.patience,
                plateau: self.plateau,
                regularizer: self.regularizer.as_deref().map(Regularizer::parse).transpose()?,
                control_spacing: self.control_spacing,
                steps: None,
            },
        })
    }
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
    /// The registration alone (pyramids and every stage), as [`crate::pipeline::register`] takes it.
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

/// `regsh register`: registers, then writes `PREFIX_warped.nii.gz`, `PREFIX_affine.tfm` (ITK, LPS, fixed
/// to moving), for deformable recipes `PREFIX_warp.nii.gz` (displacement field, ITK / ANTs convention,
/// applied before the affine: `regsh apply -t PREFIX_warp.nii.gz -t PREFIX_affine.tfm`), and
/// `PREFIX_report.json`. Returns the report's path and the registration state.
///
/// The output locations are checked before anything is loaded ([`crate::outputs::prepare`]): a missing
/// directory in `--out` is created, an unwritable one or an output that is an input is refused at once.
///
/// Errors: output locations, load errors, unknown names (with suggestions), registration and write
/// errors.
pub fn run(a: &RegisterArgs, cancel: Option<Arc<AtomicBool>>) -> Result<(PathBuf, RegState)> {
    let start = std::time::Instant::now();
    let mut opts = a.options(cancel.clone())?;
    let (pw, pt, pd, pr) = (
        with_suffix(&a.out, "_warped.nii.gz"),
        with_suffix(&a.out, "_affine.tfm"),
        with_suffix(&a.out, "_warp.nii.gz"),
        with_suffix(&a.out, "_report.json"),
    );
    // Every output location is checked (missing directories made) before the work, not after it.
    let mut inputs = vec![a.fixed.as_path(), a.moving.as_path()];
    inputs.extend(a.fixed_mask.as_deref());
    crate::outputs::prepare(&[&pw, &pt, &pd, &pr], &inputs)?;
    let fixed = load(&a.fixed)?;
    let moving = load(&a.moving)?;
    opts.fixed_mask = a.fixed_mask.as_ref().map(load).transpose()?;
    let t0 = std::time::Instant::now();
    let state = crate::pipeline::register(&moving, &fixed, &opts)?;
    let register_seconds = t0.elapsed().as_secs_f64();
    let warped = warp(&moving, state.transform().as_ref(), fixed.grid(), WarpInterpolation::Linear, Padding::Zero)?;
    save_with(&warped, &pw, &SaveOptions::default())?;
    let affine = state.transform.linear();
    save_transform(affine as &dyn Transform, &pt, affine.centre(), None)?;
    let mut outputs = vec![pw.display().to_string(), pt.display().to_string()];
    if let StateTransform::LinearDense { dense, .. } = &state.transform {
        save_transform(dense as &dyn Transform, &pd, affine.centre(), Some(fixed.grid()))?;
        outputs.push(pd.display().to_string());
    }
    let report = Report {
        fixed: a.fixed.display().to_string(),
        moving: a.moving.display().to_string(),
        metric: a.metric.clone(),
        linear_metric: opts.linear_metric()?.to_string(),
        schedule: &opts.schedule,
        stages: &state.stages,
        seconds: start.elapsed().as_secs_f64(),
        register_seconds,
        threads: rayon::current_num_threads(),
        seed: a.seed,
        cancelled: cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)),
        outputs,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| Error::arg("register", e.to_string()))?;
    crate::outputs::write_bytes_atomically(&pr, text.as_bytes())?;
    Ok((pr, state))
}
