//! Registration pipelines: `init`, `iso`, `register`, `warp(state)` and the state's getters.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, Map};

use super::{floats, with_opts};
use crate::dsl::api::optim::schedule_from;
use crate::dsl::help::{o, Help, Opt};
use crate::dsl::options::{arg_error, Opts, OrHost, RhaiResult};
use crate::dsl::value::{OptimizerValue, StageValue, TransformValue};
use crate::dsl::Host;
use crate::image::Image;
use crate::metrics::Metric;
use crate::optim::init::Init;
use crate::optim::{Polish, Regularizer};
use crate::pipeline::recipes::dense_model;
use crate::pipeline::{
    self, DenseSettings, DenseStage, InitOptions, IsoStage, RegState, RegisterOptions, RunControl, StateTransform,
};
use crate::spatial::LinearKind;

fn metric_of(d: &Dynamic, func: &str) -> RhaiResult<Metric> {
    if let Some(m) = d.clone().try_cast::<Metric>() {
        return Ok(m);
    }
    if let Ok(s) = d.clone().into_string() {
        return Metric::new(&s).host();
    }
    Err(arg_error(
        func,
        format!("the metric must be a metric (e.g. mi, cr_patch) or its name, got {}", crate::dsl::options::type_of(d)),
    ))
}

fn iso_impl(host: &Host, state: &RegState, metric: Option<Metric>, o: &Opts) -> RhaiResult<RegState> {
    let metric = match (metric, o.metric("metric")?) {
        (Some(_), Some(_)) => return Err(arg_error("iso", "the metric is given twice (positional and metric=)")),
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) => Metric::new("mi").host()?,
    };
    let mut schedule = schedule_from(o, 3)?;
    let optimizer = o.typed::<OptimizerValue>("optimizer", "an optimizer, e.g. adam(lr=0.5), lbfgs(), powell()")?;
    if let Some(opt) = &optimizer {
        if opt.weight_decay != 0.0 || opt.momentum != 0.0 || opt.nesterov {
            return Err(arg_error(
                "iso",
                format!("{opt}: weight_decay, momentum and nesterov are for minimize, not iso"),
            ));
        }
    }
    if let Some(lr) = optimizer.as_ref().and_then(|opt| opt.lr) {
        schedule.lr = vec![lr; schedule.factors.len()];
    }
    let transform = o.string("transform")?;
    if let Some(model) = transform.as_deref().and_then(dense_model) {
        let mut settings = dense_settings(o, "iterations")?;
        settings.lr = o.numbers("lr")?;
        let (model, mut opts) = settings.apply(model, metric, state.fixed.grid()).host()?;
        opts.fixed_mask = o.image("mask")?;
        opts.cancel = Some(host.cancel.clone());
        return pipeline::iso_deformable(state, &DenseStage { model, options: opts }).host();
    }
    let mut stage = IsoStage::new(metric, schedule);
    if let Some(opt) = &optimizer {
        stage.optimizer = crate::optim::IsoOptimizer::parse(&opt.name).host_key("optimizer")?;
    }
    stage.seed = o.usize("seed")?.unwrap_or(0) as u64;
    if let Some(n) = o.usize("points")? {
        if stage.sampling.is_none() && (stage.metric.has_point_form() || !stage.metric.is_local()) {
            stage.sampling = Some(crate::optim::Sampling::Random(n.max(1)));
        }
    }
    stage.polish = polish_of(o, 0)?;
    stage.kind = transform.map(|k| LinearKind::parse(&k)).transpose().host_key("transform")?;
    stage.fixed_mask = o.image("mask")?;
    if let Some(t) = o.f64("tolerance")? {
        stage.convergence.1 = t;
    }
    stage.cancel = Some(host.cancel.clone());
    pipeline::iso(state, &stage).host()
}

/// The final refinement asked for by `polish` (points; 0: none; default `default_points`) and
/// `polish_iterations` (default 20).
fn polish_of(o: &Opts, default_points: usize) -> RhaiResult<Option<crate::optim::Polish>> {
    let d = Polish::default();
    let points = o.usize("polish")?.unwrap_or(default_points);
    let iterations = o.usize("polish_iterations")?.unwrap_or(d.iterations);
    Ok((points > 0 && iterations > 0).then_some(Polish { points, iterations }))
}

/// The `regularizer=` option: a Regularizer value (`0.1 * bending`), or a spec string (`bending:0.1`,
/// `none`); `None` when not given.
pub(crate) fn regularizer_option(o: &Opts) -> RhaiResult<Option<Option<Regularizer>>> {
    let Some(d) = o.get("regularizer") else { return Ok(None) };
    if let Some(r) = d.clone().try_cast::<Regularizer>() {
        return Ok(Some(Some(r)));
    }
    let spec = o.string("regularizer")?.unwrap_or_default();
    Regularizer::parse(&spec).host_key("regularizer").map(Some)
}

/// Dense-stage settings from keyword arguments: per-level iterations under `iterations_key`, smoothing
/// sigmas, regularizer, B-spline control spacing, SVF steps.
fn dense_settings(o: &Opts, iterations_key: &str) -> RhaiResult<DenseSettings> {
    Ok(DenseSettings {
        iterations: o.counts(iterations_key)?,
        lr: None,
        grad_sigma: o.f64("grad_sigma")?,
        field_sigma: o.f64("field_sigma")?,
        regularizer: regularizer_option(o)?,
        control_spacing: o.f64("control_spacing")?,
        steps: o.usize("steps")?,
        patience: o.usize("patience")?,
        plateau: o.f64("plateau")?,
    })
}

fn transform_value(s: &RegState) -> TransformValue {
    match &s.transform {
        StateTransform::Linear(l) => TransformValue::linear(l.clone()),
        other => TransformValue::other(other.to_transform()),
    }
}

fn stages_array(s: &RegState) -> Array {
    s.stages
        .iter()
        .map(|st| {
            let mut m = Map::new();
            m.insert("transform".into(), st.transform.clone().into());
            m.insert("seconds".into(), Dynamic::from_float(st.seconds));
            m.insert("params".into(), floats(st.params.clone()).into());
            let levels: Array = st
                .levels
                .iter()
                .map(|l| {
                    let mut lm = Map::new();
                    lm.insert("factor".into(), Dynamic::from_float(l.factor));
                    lm.insert("iterations".into(), Dynamic::from_int(l.iterations as i64));
                    lm.insert("best_loss".into(), Dynamic::from_float(l.best_loss));
                    lm.insert("final_loss".into(), Dynamic::from_float(l.final_loss));
                    lm.insert("stop".into(), l.stop.to_string().into());
                    lm.insert("losses".into(), floats(l.losses.clone()).into());
                    Dynamic::from_map(lm)
                })
                .collect();
            m.insert("levels".into(), levels.into());
            Dynamic::from_map(m)
        })
        .collect()
}

/// Registers the registration-state type and the pipeline builtins.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine
        .register_type_with_name::<RegState>("RegState")
        .register_get("warped", |s: &mut RegState| pipeline::warp(s).host())
        .register_get("transform", |s: &mut RegState| transform_value(s))
        .register_get("params", |s: &mut RegState| s.params().host().map(floats))
        .register_get("loss", |s: &mut RegState| floats(s.level_losses()))
        .register_get("seconds", |s: &mut RegState| s.seconds)
        .register_get("stages", |s: &mut RegState| stages_array(s))
        .register_get("fixed", |s: &mut RegState| s.fixed.clone())
        .register_get("moving", |s: &mut RegState| s.moving.clone())
        .register_fn("to_string", |s: &mut RegState| s.to_string())
        .register_fn("to_debug", |s: &mut RegState| s.to_string());

    with_opts!(engine, "init", |moving: Image, fixed: Image| o => {
        let kind = o.string("transform")?.map(|k| LinearKind::parse(&k)).transpose().host_key("transform")?;
        let method = o.string("method")?.map(|m| Init::parse(&m)).transpose().host_key("method")?;
        let d = InitOptions::default();
        let opts = InitOptions { kind: kind.unwrap_or(d.kind), method: method.unwrap_or(d.method) };
        pipeline::init(&moving, &fixed, &opts).host()
    });
    with_opts!(engine, [host], "iso", |state: RegState| o => iso_impl(&host, &state, None, &o));
    with_opts!(engine, [host], "iso", |state: RegState, metric: Dynamic| o => {
        let m = metric_of(&metric, "iso")?;
        iso_impl(&host, &state, Some(m), &o)
    });
    engine
        .register_type_with_name::<StageValue>("Stage")
        .register_fn("to_string", |s: &mut StageValue| s.to_string())
        .register_fn("to_debug", |s: &mut StageValue| s.to_string());
    let stage = |metric: Option<Metric>, options: Map| -> RhaiResult<StageValue> {
        // Unknown keys are refused now, not when the stage is applied.
        Opts::new("iso", options.clone())?;
        Ok(StageValue { metric, options })
    };
    engine.register_fn("iso", move |m: Metric| stage(Some(m), Map::new()));
    engine.register_fn("iso", move |m: Metric, o: Map| stage(Some(m), o));
    {
        let host = host.clone();
        engine.register_fn("|>", move |state: RegState, st: StageValue| -> RhaiResult<RegState> {
            let o = Opts::new("iso", st.options.clone())?;
            iso_impl(&host, &state, st.metric.clone(), &o)
        });
    }
    with_opts!(engine, [host], "register", |moving: Image, fixed: Image| o => {
        let d = RegisterOptions::default();
        let recipe = o.string("transform")?.unwrap_or(d.recipe);
        crate::pipeline::recipes::recipe(&recipe).host_key("transform")?;
        let opts = RegisterOptions {
            recipe,
            metric: o.metric("metric")?.unwrap_or(d.metric),
            linear_metric: None,
            schedule: schedule_from(&o, d.schedule.factors.len())?,
            init: o.string("init")?.map(|m| Init::parse(&m)).transpose().host_key("init")?.unwrap_or(d.init),
            fixed_mask: o.image("mask")?,
            control: RunControl {
                seed: o.usize("seed")?.unwrap_or(0) as u64,
                cancel: Some(host.cancel.clone()),
                points: o.usize("points")?,
                polish: polish_of(&o, Polish::default().points)?,
            },
            dense: dense_settings(&o, "dense_iterations")?,
        };
        pipeline::register(&moving, &fixed, &opts).host()
    });
    engine.register_fn("warp", |s: RegState| pipeline::warp(&s).host());
    with_opts!(engine, "snapshot", |s: RegState, path: &str| o => {
        let warped = pipeline::warp(&s).host()?;
        let losses: Vec<Vec<f64>> = s.stages.iter().flat_map(|st| st.levels.iter().map(|l| l.losses.clone())).collect();
        let opts = crate::snapshot::SnapshotOptions { edges: o.bool("edges")?.unwrap_or(false), ..Default::default() };
        crate::snapshot::save_snapshot(&s.fixed, &s.moving, Some(&warped), &losses, &opts, path).host()?;
        Ok(path.to_string())
    });
    engine.register_fn("montage", |images: Array, path: &str| -> RhaiResult<String> {
        let images = super::groupwise::image_list(&images, "montage")?;
        let picture = crate::snapshot::montage(&images, &Default::default()).host()?;
        crate::snapshot::write_png(&picture, path).host()?;
        Ok(path.to_string())
    });
}

const ISO_OPTS: [Opt; 21] = [
    o("metric", "mi", "similarity measure (a metric value or name)"),
    o("scales", "3", "pyramid levels, factors 2^(scales-1) .. 1"),
    o("iterations", "100,..,60,40", "iterations per level, coarse to fine (one number for all)"),
    o("sigmas", "factor/3", "Gaussian sigma per level, voxels of the full-resolution image"),
    o("lr", "0.25*factor+0.25", "Adam learning rate per level (one number for all), mm per step for translations"),
    o("optimizer", "adam()", "adam(lr=..) (its lr replaces the schedule's), lbfgs() or powell()"),
    o("schedule", "-", "a whole schedule(...) value instead of scales / iterations / sigmas / lr"),
    o(
        "transform",
        "the state's",
        "a linear kind to optimize, carrying the parameters over (rigid -> affine); or a dense model after \
         the linear part: syn (greedy field), svf, bspline (then iterations default 100,100,50 and lr is the \
         largest step in mm, default half a voxel)",
    ),
    o("mask", "-", "fixed-grid mask: only non-zero voxels count"),
    o("tolerance", "1e-5", "windowed-slope convergence tolerance (relative); 0 runs every iteration"),
    o("seed", "0", "seed of the random sample points (global measures)"),
    o("points", "5000", "random off-grid points per iteration, fresh each iteration (global measures; patch measures run on the jittered grid unless points= is given, 20000 a good start)"),
    o("polish", "0", "points of a final L-BFGS refinement at full resolution (global measures; patch measures on points=); 0: none"),
    o("polish_iterations", "20", "most L-BFGS iterations of the final refinement"),
    o("grad_sigma", "3", "dense: Gaussian sigma (voxels) applied to each gradient"),
    o("field_sigma", "1", "dense: Gaussian sigma (voxels) applied to the field after a step of a tenth of a voxel; a step of s voxels gets sigma * sqrt(10 s) (0: none)"),
    o("regularizer", "none (bspline: bending:0.01)", "dense: a Regularizer (0.1 * bending), or diffusion:W, bending:W, folding:W, none"),
    o("control_spacing", "10", "bspline: control point spacing, mm"),
    o("steps", "7", "svf: scaling-and-squaring steps"),
    o("patience", "0", "dense: a level also stops after this many iterations without a better loss (0: no such test); every level returns the best field it evaluated"),
    o("plateau", "0.05", "dense: a level cools its step down for 10 iterations and ends once its last 10 iterations added at most this share of its fall (0: runs to its cap)"),
];

/// The help of the pipeline builtins (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    Help {
        name: "init",
        domain: "pipeline",
        signature: "init(moving, fixed) -> RegState   (MOVING first)",
        summary: "Start a registration: the identity of a transform kind moved by an initialization",
        options: &[
            o("transform", "affine", "translation, rigid, similarity, affine"),
            o("method", "moments", "identity, centres (grid centres), moments (centres of mass) or search (moments, then the best of a coarse search over rotations by Parzen MI at 8 mm, as FSL FLIRT's: heads tilted up to about 30 degrees, full heads onto brain templates)"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([-6.0, 0.0, 0.0]), t1);\nlet s = init(moved, t1, transform=\"rigid\");\nassert(s.transform.kind == \"rigid\" && s.stages.len() == 0, \"no stage run yet\");\nassert(abs(s.params[0] - 6.0) < 1.0, \"centres of mass give the shift: moved(x) = t1(x - 6), so T(x) = x + 6\");\nlet tilted = warp(t1, rigid([0.0, 0.0, 0.0, 0.45, 0.0, 0.0], about=t1), t1);   // 26 degrees about x\nlet found = init(tilted, t1, transform=\"rigid\", method=\"search\");\nassert(abs(found.params[3] + 0.45) < 0.03, \"the rotation search finds the tilt (T rotates back by -0.45 rad)\");",
    },
    Help {
        name: "iso",
        domain: "pipeline",
        signature: "iso(state) -> RegState; iso(state, metric) -> RegState; iso(metric) -> Stage (apply later with |>)",
        summary: "Multi-scale instance-specific optimization of the state's transform (Adam over a Gaussian pyramid)",
        options: &ISO_OPTS,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([3.0, -2.0, 0.0]), t1);\nlet r = init(moved, t1, transform=\"translation\", method=\"identity\") |> iso(ssd, scales=2, iterations=[40, 20]);\nassert(displacement_error(r.transform, translation([-3.0, 2.0, 0.0]), t1) < 0.3, \"moved(x) = t1(x + t): recovered T(x) = x - t\");\nassert(r.loss.len() == 2 && r.loss[1] < 1.0, \"one loss per level\");\nlet refine = iso(ssd, scales=1, iterations=[5]);\nassert(type_of(refine) == \"Stage\", \"without a state, a stage to apply later\");\nassert((r |> refine).stages.len() == 2, \"applied by |>\");",
    },
    Help {
        name: "register",
        domain: "pipeline",
        signature: "register(moving, fixed) -> RegState   (MOVING first)",
        summary: "A recipe: translation, rigid, similarity, affine (rigid then affine), or affine then a dense stage: syn (greedy field), svf, bspline",
        options: &[
            o("transform", "affine", "translation, rigid, similarity, affine, syn, svf, bspline"),
            o("metric", "mi", "similarity measure (a metric value or name); in a dense recipe the linear stages use mi when it is local (lncc, *_patch), a linear recipe uses it as given"),
            o("scales", "3", "pyramid levels of the linear stages"),
            o("iterations", "100,..,60,40", "iterations per level of the linear stages, coarse to fine"),
            o("lr", "0.25*factor+0.25", "learning rate of the linear stages (one number for all levels), mm per step"),
            o("points", "5000", "linear stages: random off-grid points per Adam iteration (global measures; patch measures only when given)"),
            o("polish", "50000", "linear: points of the final L-BFGS refinement of the last stage (global measures; patch measures with points=); 0: none"),
            o("polish_iterations", "20", "linear: most L-BFGS iterations of the final refinement"),
            o("seed", "0", "seed of the random sample points"),
            o("init", "moments", "identity, centres, moments, or search (moments, then a coarse search over rotations by the linear measure at 8 mm, FLIRT-style: a wider capture range)"),
            o("mask", "-", "fixed-grid mask: only non-zero voxels count"),
            o("dense_iterations", "100,100,50", "iterations per level of the dense stage (factors 2^(n-1) .. 1)"),
            o("grad_sigma", "3", "dense: Gaussian sigma (voxels) applied to each gradient"),
            o("field_sigma", "1", "dense: Gaussian sigma (voxels) applied to the field after a step of a tenth of a voxel; a step of s voxels gets sigma * sqrt(10 s) (0: none)"),
            o("regularizer", "none (bspline: bending:0.01)", "dense: a Regularizer (0.1 * bending), or diffusion:W, bending:W, folding:W, none"),
            o("control_spacing", "10", "bspline: control point spacing, mm"),
            o("patience", "0", "dense: a level also stops after this many iterations without a better loss (0: no such test); every level returns the best field it evaluated"),
            o("plateau", "0.05", "dense: a level cools its step down for 10 iterations and ends once its last 10 iterations added at most this share of its fall (0: runs to its cap)"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet r = register(t2, t1, transform=\"rigid\", metric=mi, scales=2, iterations=[20, 10]);\nassert(r.stages.len() == 1 && r.transform.kind == \"rigid\", \"one rigid stage\");\nassert(displacement_error(r.transform, affine(), t1) < 1.0, \"T2 and T1 are aligned already\");",
    },
    Help {
        name: "montage",
        domain: "pipeline",
        signature: "montage(images, path) -> path",
        summary: "Write a PNG of images side by side: one column per image, rows axial / coronal / sagittal slices through the first image's grid centre (neurological convention); a one-channel image in grey, a multi-channel one (class probabilities, e.g. groupwise X-CoReg's posterior) as its most probable class in colour",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(montage([t1, t2], \"target/dsl_help_montage.png\") == \"target/dsl_help_montage.png\" && exists(\"target/dsl_help_montage.png\"), \"written\");",
    },
    Help {
        name: "snapshot",
        domain: "pipeline",
        signature: "snapshot(state, path) -> path",
        summary: "Write a PNG: axial / coronal / sagittal slices of fixed, moving, warped, a fixed/warped checkerboard, and the loss curve of every pyramid level",
        options: &[o("edges", "false", "add a column with the fixed image's edges over the warped image")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet r = init(t2, t1, transform=\"rigid\") |> iso(mi, scales=2, iterations=[10, 5]);\nsnapshot(r, \"target/dsl_help_snapshot.png\");\nassert(exists(\"target/dsl_help_snapshot.png\"), \"the picture is written\");",
    },
];
