//! The stages of a pipeline: `init`, `iso`, `warp`, and the linear recipes.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::recipes::promote;
use super::state::{RegState, StageReport, StateTransform};
use crate::error::{Error, Result};
use crate::image::resample::Padding;
use crate::image::Image;
use crate::metrics::Metric;
use crate::optim::init::{initial_transform, Init};
use crate::optim::search::{rotation_search, RotationSearch};
use crate::optim::{iso_dense, iso_linear, DenseModel, DenseOptions, IsoOptions, Sampling, Schedule};
use crate::spatial::{LinearKind, WarpInterpolation};

/// Options of [`init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// The kind of linear transform the state starts with (default affine).
    pub kind: LinearKind,
    /// How the starting translation is chosen (default: centres of mass, [`Init::Moments`]).
    pub method: Init,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { kind: LinearKind::Affine, method: Init::Moments }
    }
}

/// A registration state for `moving` onto `fixed` (MOVING first), with the identity of `opts.kind` moved
/// by `opts.method` ([`initial_transform`]; [`Init::Search`]: then the best of a coarse rotation search
/// by Parzen MI, [`rotation_search`]): no stage run yet.
///
/// Errors: as [`initial_transform`] (a constant image with `moments`) and [`rotation_search`].
pub fn init(moving: &Image, fixed: &Image, opts: &InitOptions) -> Result<RegState> {
    let t0 = Instant::now();
    let mut t = initial_transform(opts.kind, fixed, moving, opts.method)?;
    if opts.method == Init::Search && opts.kind != LinearKind::Translation {
        let mi = Metric::new("mi")?;
        let (found, _) = rotation_search(fixed, moving, &t, &mi, None, &RotationSearch::default(), None)?;
        t = promote(&found, opts.kind)?;
    }
    Ok(RegState {
        fixed: fixed.clone(),
        moving: moving.clone(),
        fixed_mask: None,
        transform: StateTransform::Linear(t),
        stages: Vec::new(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// One multi-scale ISO stage.
#[derive(Clone)]
pub struct IsoStage {
    /// The similarity measure whose loss is minimized.
    pub metric: Metric,
    /// Pyramid factors, iterations, sigmas and learning rates per level.
    pub schedule: Schedule,
    /// Optimize this kind of linear transform (the current parameters are carried over, e.g. rigid to
    /// affine); `None` keeps the state's kind.
    pub kind: Option<LinearKind>,
    /// A fixed mask for this stage (else the state's).
    pub fixed_mask: Option<Image>,
    /// Windowed-slope convergence: window (iterations) and relative tolerance.
    pub convergence: (usize, f64),
    /// Set to true to stop early, keeping the best parameters so far.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Which fixed points the measure sees per iteration (default: [`Sampling::default_for`] the metric).
    pub sampling: Option<Sampling>,
    /// Seed of the random sample points.
    pub seed: u64,
    /// The optimizer of each level (Adam, L-BFGS, Powell).
    pub optimizer: crate::optim::IsoOptimizer,
    /// The L-BFGS refinement after the last level (global measures only); default none.
    pub polish: Option<crate::optim::Polish>,
}

impl IsoStage {
    /// A stage with `metric` over `schedule`, convergence window 10 at 1e-5, the state's kind and mask.
    pub fn new(metric: Metric, schedule: Schedule) -> Self {
        IsoStage {
            metric,
            schedule,
            kind: None,
            fixed_mask: None,
            convergence: (10, 1e-5),
            cancel: None,
            sampling: None,
            optimizer: crate::optim::IsoOptimizer::Adam,
            seed: 0,
            polish: None,
        }
    }
}

/// Refines the state's linear transform with [`iso_linear`]; the result carries one more stage report.
/// (A dense stage after the linear part is [`iso_deformable`].)
///
/// Errors: a state whose transform has a dense part already (refine its linear part before the dense
/// stage); as [`iso_linear`].
pub fn iso(state: &RegState, stage: &IsoStage) -> Result<RegState> {
    let StateTransform::Linear(current) = &state.transform else {
        return Err(Error::arg(
            "iso",
            "the state has a dense part: a linear stage refines the linear part before any dense stage",
        ));
    };
    let start = match stage.kind {
        Some(k) if k != current.kind() => promote(current, k)?,
        _ => current.clone(),
    };
    let opts = IsoOptions {
        schedule: stage.schedule.clone(),
        metric: stage.metric.clone(),
        fixed_mask: stage.fixed_mask.clone().or_else(|| state.fixed_mask.clone()),
        convergence: stage.convergence,
        cancel: stage.cancel.clone(),
        sampling: stage.sampling.unwrap_or_else(|| Sampling::default_for(&stage.metric)),
        seed: stage.seed,
        optimizer: stage.optimizer,
        polish: stage.polish,
    };
    let r = iso_linear(&state.fixed, &state.moving, &start, &opts)?;
    let mut out = state.clone();
    out.stages.push(StageReport {
        transform: r.transform.kind().name().into(),
        levels: r.levels,
        polish: r.polish,
        seconds: r.seconds,
        params: r.transform.param_values()?,
    });
    out.seconds += r.seconds;
    out.transform = StateTransform::Linear(r.transform);
    Ok(out)
}

/// One multi-scale deformable stage: a dense model optimized after the state's linear transform.
#[derive(Clone)]
pub struct DenseStage {
    /// The dense model (greedy field `syn`, `svf`, `bspline`).
    pub model: DenseModel,
    /// Measure, schedule, smoothing, regularizer, mask and cancel flag of [`iso_dense`].
    pub options: DenseOptions,
}

/// Optimizes a dense model after the state's linear part with [`iso_dense`] (a dense part already in
/// the state is replaced, not refined); the result carries one more stage report.
///
/// Errors: as [`iso_dense`].
pub fn iso_deformable(state: &RegState, stage: &DenseStage) -> Result<RegState> {
    let linear = state.transform.linear().clone();
    let mut opts = stage.options.clone();
    if opts.fixed_mask.is_none() {
        opts.fixed_mask = state.fixed_mask.clone();
    }
    let r = iso_dense(&state.fixed, &state.moving, &linear, stage.model, &opts)?;
    let mut out = state.clone();
    out.stages.push(StageReport {
        transform: stage.model.name().into(),
        levels: r.levels,
        polish: None,
        seconds: r.seconds,
        params: vec![],
    });
    out.seconds += r.seconds;
    out.transform = StateTransform::LinearDense { linear, dense: r.field, model: stage.model.name().into() };
    Ok(out)
}

/// The moving image resampled through the state's transform onto the fixed grid (trilinear, zero
/// outside), float32 `(C, Z, Y, X)`.
///
/// Errors: tensor errors.
pub fn warp(state: &RegState) -> Result<Image> {
    crate::spatial::warp(
        &state.moving,
        state.transform().as_ref(),
        state.fixed.grid(),
        WarpInterpolation::Linear,
        Padding::Zero,
    )
}

/// The starting state of a registration from a network's prediction (the networks issue's `net(m, f)`):
/// the affine network's [`crate::spatial::Linear`] (affine kind, about the fixed centre), which `iso`
/// can refine, or the U-Net's displacement field after an identity affine. The state carries one stage
/// report named `KIND:NAME` (no levels; its seconds are the inference time).
///
/// Errors: as [`crate::train::Network::predict`].
pub fn net_init(net: &crate::train::Network, moving: &Image, fixed: &Image) -> Result<RegState> {
    let t0 = Instant::now();
    let pred = net.predict(moving, fixed)?;
    let seconds = t0.elapsed().as_secs_f64();
    let (transform, params) = match pred {
        crate::train::Prediction::Linear(l) => {
            let p = l.param_values()?;
            (StateTransform::Linear(l), p)
        }
        crate::train::Prediction::Field(dense) => {
            let linear = crate::spatial::Linear::identity(LinearKind::Affine, fixed.grid().centre());
            (StateTransform::LinearDense { linear, dense, model: net.kind().into() }, vec![])
        }
    };
    Ok(RegState {
        fixed: fixed.clone(),
        moving: moving.clone(),
        fixed_mask: None,
        transform,
        stages: vec![StageReport {
            transform: format!("{}:{}", net.kind(), net.name()),
            levels: vec![],
            seconds,
            params,
            polish: None,
        }],
        seconds,
    })
}
