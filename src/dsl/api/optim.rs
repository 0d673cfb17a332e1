//! Optimization settings: schedules, optimizers, seeding and the device.

use std::sync::Arc;

use rhai::Engine;

use super::{floats, ints, with_opts};
use crate::dsl::options::{arg_error, Opts, OrHost, RhaiResult};
use crate::dsl::value::{schedule_string, OptimizerValue};
use crate::dsl::Host;
use crate::optim::Schedule;
use crate::pipeline::default_iterations;
use crate::register::default_lr;

/// The schedule the `scales`, `iterations`, `sigmas` and `lr` options describe (a whole `schedule`
/// option wins), with `default_scales` levels when `scales` is not given.
pub fn schedule_from(o: &Opts, default_scales: usize) -> RhaiResult<Schedule> {
    if let Some(s) = o.typed::<Schedule>("schedule", "a schedule(...) value")? {
        for k in ["scales", "iterations", "sigmas", "lr"] {
            if o.get(k).is_some() {
                return Err(arg_error(o.func(), format!("give either schedule= or {k}=, not both")));
            }
        }
        return Ok(s);
    }
    let scales = o.usize("scales")?.unwrap_or(default_scales);
    let iterations = o.counts("iterations")?.unwrap_or_else(|| default_iterations(scales.clamp(1, 8)));
    let mut s = Schedule::new(scales, &iterations, 1.0).host_key(if o.get("iterations").is_some() {
        "iterations"
    } else {
        "scales"
    })?;
    let n = s.factors.len();
    let per_level = |key: &str, v: Vec<f64>| -> RhaiResult<Vec<f64>> {
        match v.len() {
            1 => Ok(vec![v[0]; n]),
            k if k == n => Ok(v),
            k => Err(crate::dsl::options::HostError::new(
                "regsh::dsl::argument",
                format!("{}: {key} has {k} values for {n} levels (give one, or one per level)", o.func()),
            )
            .at_key(key)
            .into_rhai()),
        }
    };
    s.lr = match o.numbers("lr")? {
        Some(v) => per_level("lr", v)?,
        None => default_lr(&s.factors),
    };
    s.sigmas = o.numbers("sigmas")?.map(|v| per_level("sigmas", v)).transpose()?;
    s.check().host()?;
    Ok(s)
}

/// Registers the schedule and optimizer types and builtins.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine
        .register_type_with_name::<Schedule>("Schedule")
        .register_get("factors", |s: &mut Schedule| floats(s.factors.clone()))
        .register_get("iterations", |s: &mut Schedule| ints(s.iterations.clone()))
        .register_get("lr", |s: &mut Schedule| floats(s.lr.clone()))
        .register_get("sigmas", |s: &mut Schedule| -> rhai::Dynamic {
            s.sigmas.clone().map(|v| floats(v).into()).unwrap_or(rhai::Dynamic::UNIT)
        })
        .register_fn("to_string", |s: &mut Schedule| schedule_string(s))
        .register_fn("to_debug", |s: &mut Schedule| schedule_string(s));
    engine
        .register_type_with_name::<OptimizerValue>("Optimizer")
        .register_get("lr", |a: &mut OptimizerValue| a.lr.map(rhai::Dynamic::from_float).unwrap_or(rhai::Dynamic::UNIT))
        .register_get("name", |a: &mut OptimizerValue| a.name.clone())
        .register_fn("to_string", |a: &mut OptimizerValue| a.to_string())
        .register_fn("to_debug", |a: &mut OptimizerValue| a.to_string());
    with_opts!(engine, "schedule", | | o => schedule_from(&o, 3));
    with_opts!(engine, "adam", | | o => Ok(OptimizerValue { name: "adam".into(), lr: o.f64("lr")? }));
    engine.register_fn("lbfgs", || OptimizerValue { name: "lbfgs".into(), lr: None });
    engine.register_fn("powell", || OptimizerValue { name: "powell".into(), lr: None });
    let h = host.clone();
    engine.register_fn("seed", move |n: i64| h.seed(n as u64));
    engine.register_fn("device", || crate::device::device_name(&crate::device::default_device()));
}
