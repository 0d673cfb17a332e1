//! Registration pipelines: `init`, `iso`, `register`, `warp(state)` and the state's getters.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, Map};

use super::{floats, with_opts};
use crate::dsl::api::optim::schedule_from;
use crate::dsl::options::{arg_error, Opts, OrHost, RhaiResult};
use crate::dsl::value::{OptimizerValue, TransformValue};
use crate::dsl::Host;
use crate::image::Image;
use crate::metrics::Metric;
use crate::optim::init::Init;
use crate::pipeline::{self, InitOptions, IsoStage, RegState, StateTransform};
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
    if let Some(opt) = o.typed::<OptimizerValue>("optimizer", "an optimizer, e.g. adam(lr=0.5)")? {
        if let Some(lr) = opt.lr {
            schedule.lr = vec![lr; schedule.factors.len()];
        }
    }
    let mut stage = IsoStage::new(metric, schedule);
    stage.kind = o.string("transform")?.map(|k| LinearKind::parse(&k)).transpose().host_key("transform")?;
    stage.fixed_mask = o.image("mask")?;
    if let Some(t) = o.f64("tolerance")? {
        stage.convergence.1 = t;
    }
    stage.cancel = Some(host.cancel.clone());
    pipeline::iso(state, &stage).host()
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
    with_opts!(engine, "register", |moving: Image, fixed: Image| o => {
        let recipe = o.string("transform")?.unwrap_or_else(|| "affine".into());
        crate::register::stages(&recipe).host_key("transform")?;
        let metric = match o.metric("metric")? {
            Some(m) => m,
            None => Metric::new("mi").host()?,
        };
        let schedule = schedule_from(&o, 3)?;
        let init = o.string("init")?.map(|m| Init::parse(&m)).transpose().host_key("init")?.unwrap_or(Init::Moments);
        let mask = o.image("mask")?;
        pipeline::register(&moving, &fixed, &recipe, &metric, &schedule, init, mask.as_ref()).host()
    });
    engine.register_fn("warp", |s: RegState| pipeline::warp(&s).host());
}
