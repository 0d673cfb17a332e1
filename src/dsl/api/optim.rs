//! Optimization settings: schedules, optimizers, seeding and the device.

use std::sync::Arc;

use rhai::Engine;

use super::{floats, ints, with_opts};
use crate::dsl::help::{o, Help};
use crate::dsl::options::{arg_error, Opts, OrHost, RhaiResult};
use crate::dsl::value::{schedule_string, OptimizerValue};
use crate::dsl::Host;
use crate::optim::Schedule;
use crate::pipeline::{default_iterations, default_lr};

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
    let h = host.clone();
    engine.register_fn("device", move || crate::device::device_name(&h.device));
}

/// The help of the optim builtins (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    Help {
        name: "schedule",
        domain: "optim",
        signature: "schedule() -> Schedule",
        summary: "A multi-scale schedule: pyramid factors 2^(scales-1)..1, iterations, sigmas and learning rates per level",
        options: &[
            o("scales", "3", "pyramid levels (1-8)"),
            o("iterations", "100,..,60,40", "iterations per level, coarse to fine (one number for all)"),
            o("sigmas", "factor/3", "Gaussian sigma per level, voxels of the full-resolution image"),
            o("lr", "0.25*factor+0.25", "learning rate per level (one number for all), mm per step"),
        ],
        example: "let s = schedule(scales=3, iterations=[50, 20, 10], lr=0.5);\nassert(s.factors == [4.0, 2.0, 1.0] && s.iterations == [50, 20, 10], \"levels\");\nassert(s.lr == [0.5, 0.5, 0.5], \"one rate for all\");",
    },
    Help {
        name: "adam",
        domain: "optim",
        signature: "adam() -> Optimizer",
        summary: "The Adam optimizer for iso (optimizer=adam(lr=0.5)); its lr replaces the schedule's",
        options: &[o("lr", "the schedule's", "learning rate, mm per step for translations")],
        example: "let a = adam(lr=0.5);\nassert(a.lr == 0.5 && a.to_string() == \"adam(lr=0.5)\", \"configured\");",
    },
    Help {
        name: "lbfgs",
        domain: "optim",
        signature: "lbfgs() -> Optimizer",
        summary: "L-BFGS with a strong-Wolfe line search for iso (optimizer=lbfgs()): one fixed objective per level (points drawn once), iterations bound its iterations",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([3.0, -2.0, 1.0]), t1);\nlet r = init(moved, t1, transform=\"translation\", method=\"identity\") |> iso(ssd, scales=2, iterations=[20, 10], optimizer=lbfgs());\nassert(displacement_error(r.transform, translation([-3.0, 2.0, -1.0]), t1) < 0.3, \"the shift is recovered\");\nassert(lbfgs().name == \"lbfgs\", \"named\");",
    },
    Help {
        name: "powell",
        domain: "optim",
        signature: "powell() -> Optimizer",
        summary: "Powell's derivative-free method (Brent line searches) for iso (optimizer=powell()), as Sedghi et al.'s deep metrics use it for measures without gradients; iterations bound its sweeps",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([3.0, -2.0, 1.0]), t1);\nlet r = init(moved, t1, transform=\"translation\", method=\"identity\") |> iso(ssd, scales=2, iterations=[4, 2], optimizer=powell());\nassert(displacement_error(r.transform, translation([-3.0, 2.0, -1.0]), t1) < 0.3, \"the shift is recovered without a gradient\");",
    },
    Help {
        name: "seed",
        domain: "optim",
        signature: "seed(n)",
        summary: "Seed the random generators of the compute device (for reproducible stochastic steps)",
        options: &[],
        example: "seed(42);\nassert(true, \"seeded\");",
    },
    Help {
        name: "device",
        domain: "optim",
        signature: "device() -> string",
        summary: "The compute device: cpu, or cuda:0 when built with the cuda feature on a GPU machine",
        options: &[],
        example: "let d = device();\nassert(d == \"cpu\" || d == \"cuda:0\", \"a device name\");",
    },
];
