//! Registration pipelines: `init`, `iso`, `register`, `warp(state)` and the state's getters.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, Map};

use super::{floats, with_opts};
use crate::dsl::api::optim::schedule_from;
use crate::dsl::options::{arg_error, Opts, OrHost, RhaiResult};
use crate::dsl::value::{OptimizerValue, StageValue, TransformValue};
use crate::dsl::Host;
use crate::image::Image;
use crate::metrics::Metric;
use crate::optim::init::Init;
use crate::optim::{DenseModel, DenseOptions, Schedule};
use crate::pipeline::{self, DenseStage, InitOptions, IsoStage, RegState, StateTransform};
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
    if let Some(lr) = optimizer.as_ref().and_then(|opt| opt.lr) {
        schedule.lr = vec![lr; schedule.factors.len()];
    }
    let transform = o.string("transform")?;
    if let Some(model) = transform.as_deref().and_then(dense_model) {
        let (model, mut opts) = dense_options(o, model, metric, state.fixed.grid(), "iterations")?;
        if let Some(lr) = o.numbers("lr")? {
            let n = opts.schedule.factors.len();
            opts.schedule.lr = if lr.len() == 1 { vec![lr[0]; n] } else { lr };
            opts.schedule.check().host_key("lr")?;
        }
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
        if stage.sampling.is_none() && !stage.metric.is_local() {
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
    let d = crate::optim::Polish::default();
    let points = o.usize("polish")?.unwrap_or(default_points);
    let iterations = o.usize("polish_iterations")?.unwrap_or(d.iterations);
    Ok((points > 0 && iterations > 0).then_some(crate::optim::Polish { points, iterations }))
}

/// The dense model a transform name asks for (`syn` / `greedy`, `svf`, `bspline`), if any.
fn dense_model(name: &str) -> Option<DenseModel> {
    crate::register::recipe(name).ok().and_then(|(_, m)| m)
}

/// Dense-stage options from keyword arguments: per-level iterations under `iterations_key`, smoothing
/// sigmas, regularizer, B-spline control spacing, SVF steps.
fn dense_options(
    o: &Opts,
    mut model: DenseModel,
    metric: Metric,
    grid: &crate::image::Grid,
    iterations_key: &str,
) -> RhaiResult<(DenseModel, DenseOptions)> {
    match &mut model {
        DenseModel::BSpline { spacing } => {
            if let Some(cs) = o.f64("control_spacing")? {
                *spacing = cs;
            }
        }
        DenseModel::Svf { steps } => {
            if let Some(n) = o.usize("steps")? {
                *steps = n;
            }
        }
        DenseModel::Greedy => {}
    }
    let mut opts = DenseOptions::defaults(model, metric, grid).host()?;
    if let Some(it) = o.counts(iterations_key)? {
        let lr = opts.schedule.lr[0];
        opts.schedule = Schedule::new(it.len(), &it, lr).host_key(iterations_key)?;
    }
    if let Some(v) = o.f64("grad_sigma")? {
        opts.sigma_grad = v;
    }
    if let Some(v) = o.f64("field_sigma")? {
        opts.sigma_field = v;
    }
    if let Some(r) = o.string("regularizer")? {
        opts.regularizer = crate::register::parse_regularizer(&r).host_key("regularizer")?;
    }
    Ok((model, opts))
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
                    lm.insert("stop".into(), l.stop.clone().into());
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
        let recipe = o.string("transform")?.unwrap_or_else(|| "affine".into());
        crate::register::recipe(&recipe).host_key("transform")?;
        let metric = match o.metric("metric")? {
            Some(m) => m,
            None => Metric::new("mi").host()?,
        };
        let schedule = schedule_from(&o, 3)?;
        let init = o.string("init")?.map(|m| Init::parse(&m)).transpose().host_key("init")?.unwrap_or(Init::Moments);
        let mask = o.image("mask")?;
        let dense = match dense_model(&recipe) {
            Some(model) => {
                let (model, mut d) = dense_options(&o, model, metric.clone(), fixed.grid(), "dense_iterations")?;
                d.cancel = Some(host.cancel.clone());
                Some((model, d))
            }
            None => None,
        };
        let control = crate::register::RunControl {
            seed: o.usize("seed")?.unwrap_or(0) as u64,
            cancel: Some(host.cancel.clone()),
            points: o.usize("points")?,
            polish: polish_of(&o, crate::optim::Polish::default().points)?,
        };
        pipeline::register(&moving, &fixed, &recipe, &metric, &schedule, init, mask.as_ref(), dense, &control).host()
    });
    engine.register_fn("warp", |s: RegState| pipeline::warp(&s).host());
    with_opts!(engine, "snapshot", |s: RegState, path: &str| o => {
        let warped = pipeline::warp(&s).host()?;
        let losses: Vec<Vec<f64>> = s.stages.iter().flat_map(|st| st.levels.iter().map(|l| l.losses.clone())).collect();
        let opts = crate::snapshot::SnapshotOptions { edges: o.bool("edges")?.unwrap_or(false), ..Default::default() };
        crate::snapshot::save_snapshot(&s.fixed, &s.moving, Some(&warped), &losses, &opts, path).host()?;
        Ok(path.to_string())
    });
}
