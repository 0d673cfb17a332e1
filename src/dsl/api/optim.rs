//! Optimization settings: schedules, optimizers, seeding and the device.

use std::sync::Arc;

use candle_core::Tensor;
use rhai::{Dynamic, Engine, FnPtr, Map, NativeCallContext};

use super::tensor::TensorValue;
use super::{floats, ints, with_opts};
use crate::dsl::help::{o, Help};
use crate::dsl::options::{arg_error, callback, num, type_of, Opts, OrHost, RhaiResult};
use crate::dsl::value::{schedule_string, OptimizerValue};
use crate::dsl::Host;
use crate::error::Error;
use crate::optim::objective::scalar;
use crate::optim::{
    first_order, flatten, lbfgs_run, powell_run, tensor_objective, unflatten, AdamVec, Eval, FirstOrderOptions,
    LbfgsOptions, Objective, PowellOptions, Schedule, SgdVec,
};
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

fn positive(o: &Opts, key: &str) -> RhaiResult<Option<f64>> {
    match o.f64(key)? {
        Some(x) if !(x.is_finite() && x > 0.0) => Err(arg_error(o.func(), format!("{key} must be > 0, got {x}"))),
        x => Ok(x),
    }
}

fn non_negative(o: &Opts, key: &str) -> RhaiResult<f64> {
    match o.f64(key)?.unwrap_or(0.0) {
        x if x.is_finite() && x >= 0.0 => Ok(x),
        x => Err(arg_error(o.func(), format!("{key} must be >= 0, got {x}"))),
    }
}

/// A script function of a parameter tensor as an [`Objective`]: the function is called with a tensor
/// of `template`'s shape and dtype (a leaf that gradients flow to) and returns a one-element tensor
/// (or, for Powell, a number). `weight_decay` adds the L2 penalty `weight_decay / 2 * |x|^2` to the
/// objective: `weight_decay * x` to the gradient (as PyTorch's Adam and SGD do), and the penalty to
/// the losses (so the best point kept is the penalized objective's).
struct ScriptObjective<'a, 'b> {
    ctx: &'a NativeCallContext<'b>,
    f: &'a FnPtr,
    template: Tensor,
    weight_decay: f64,
}

impl ScriptObjective<'_, '_> {
    fn call(&self, x: Tensor) -> crate::Result<Dynamic> {
        self.f.call_within_context::<Dynamic>(self.ctx, (TensorValue(x),)).map_err(callback)
    }
    fn penalty(&self, x: &[f64]) -> f64 {
        0.5 * self.weight_decay * x.iter().map(|v| v * v).sum::<f64>()
    }
}

impl Objective for ScriptObjective<'_, '_> {
    fn eval(&mut self, x: &[f64]) -> crate::Result<Eval> {
        let call = |p: &Tensor| -> crate::Result<Tensor> {
            let out = self.call(p.clone())?;
            out.clone().try_cast::<TensorValue>().map(|t| t.0).ok_or_else(|| {
                Error::arg(
                    "minimize",
                    format!(
                        "the objective returned {}, not a Tensor: compute the loss with tensor operations on its argument so that it can be differentiated (powell() takes numbers)",
                        type_of(&out)
                    ),
                )
            })
        };
        let (value, mut grad) = tensor_objective(&self.template, call)(x)?;
        for (gi, xi) in grad.iter_mut().zip(x) {
            *gi += self.weight_decay * xi;
        }
        Ok(Eval { loss: value + self.penalty(x), grad, overlap: true })
    }
    fn value(&mut self, x: &[f64]) -> crate::Result<f64> {
        let out = self.call(unflatten(x, &self.template)?)?;
        let v = match out.clone().try_cast::<TensorValue>() {
            Some(t) => scalar(&t.0)?,
            None => num(&out).ok_or_else(|| {
                Error::arg("minimize", format!("the objective returned {}, not a number or a Tensor", type_of(&out)))
            })?,
        };
        Ok(v + self.penalty(x))
    }
}

/// `opt.minimize(f, x0)`: minimizes the script function `f` from `x0` (an array of numbers, nested
/// for a shape, or a tensor) with the optimizer loops `iso` uses ([`crate::optim::minimize`]).
fn minimize(
    ctx: &NativeCallContext,
    host: &Host,
    opt: &OptimizerValue,
    f: &FnPtr,
    x0: &Dynamic,
    o: &Opts,
) -> RhaiResult<Map> {
    let (template, as_tensor) = match x0.clone().try_cast::<TensorValue>() {
        Some(t) => (t.0.detach(), true),
        None => {
            let (shape, v) = super::tensor::nested(x0, "minimize")?;
            (Tensor::from_vec(v, shape, &host.device).map_err(Error::from).host()?, false)
        }
    };
    if template.elem_count() == 0 {
        return Err(arg_error("minimize", "x0 has no parameters"));
    }
    let x0v = flatten(&template).host()?;
    let n = x0v.len();
    let first_order_default = 1000;
    let iterations = o.usize("iterations")?.unwrap_or(if matches!(opt.name.as_str(), "adam" | "sgd") {
        first_order_default
    } else {
        100
    });
    if iterations > 100_000_000 {
        return Err(arg_error("minimize", format!("iterations must be at most 1e8, got {iterations}")));
    }
    let cancel = Some(host.cancel.clone());
    let mut obj = ScriptObjective { ctx, f, template: template.clone(), weight_decay: opt.weight_decay };
    let fo = |lr: f64| FirstOrderOptions { iterations, lr, decay: false, convergence: None, cancel: cancel.clone() };
    let run = match opt.name.as_str() {
        "adam" => {
            let lr = opt.lr.unwrap_or(1e-3);
            first_order(&mut AdamVec::new(lr, vec![1.0; n]), &mut obj, &x0v, &fo(lr), &mut |_| ())
        }
        "sgd" => {
            let lr = opt.lr.unwrap_or(1e-2);
            let mut sgd = SgdVec::new(lr, opt.momentum, opt.nesterov, vec![1.0; n]).host()?;
            first_order(&mut sgd, &mut obj, &x0v, &fo(lr), &mut |_| ())
        }
        "lbfgs" => lbfgs_run(
            &mut obj,
            &x0v,
            &LbfgsOptions { max_iterations: iterations, max_evals: 20 * iterations, cancel, ..Default::default() },
        ),
        "powell" => {
            powell_run(&mut obj, &x0v, &PowellOptions { max_iterations: iterations, cancel, ..Default::default() })
        }
        other => return Err(arg_error("minimize", format!("no minimize loop for optimizer `{other}`"))),
    }
    .host()?;
    let x = unflatten(&run.x, &template).host()?;
    let mut m = Map::new();
    m.insert("x".into(), if as_tensor { Dynamic::from(TensorValue(x)) } else { super::tensor::to_array(&x)? });
    m.insert("loss".into(), Dynamic::from_array(floats(run.losses.iter().copied())));
    m.insert("best".into(), Dynamic::from_float(run.best));
    // Adam and SGD evaluate once per iteration; L-BFGS and Powell several times (line searches).
    m.insert("evaluations".into(), Dynamic::from_int(run.losses.len() as i64));
    if matches!(opt.name.as_str(), "adam" | "sgd") {
        m.insert("iterations".into(), Dynamic::from_int(run.losses.len() as i64));
    }
    m.insert("stop".into(), Dynamic::from(run.stop.to_string()));
    Ok(m)
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
    with_opts!(engine, "adam", | | o => Ok(OptimizerValue {
        name: "adam".into(),
        lr: positive(&o, "lr")?,
        weight_decay: non_negative(&o, "weight_decay")?,
        ..Default::default()
    }));
    with_opts!(engine, "sgd", | | o => {
        let momentum = non_negative(&o, "momentum")?;
        if momentum >= 1.0 {
            return Err(arg_error("sgd", format!("momentum must be in [0, 1), got {momentum}")));
        }
        Ok(OptimizerValue {
            name: "sgd".into(),
            lr: positive(&o, "lr")?,
            momentum,
            nesterov: o.bool("nesterov")?.unwrap_or(false),
            weight_decay: non_negative(&o, "weight_decay")?,
        })
    });
    engine.register_fn("lbfgs", || OptimizerValue { name: "lbfgs".into(), ..Default::default() });
    engine.register_fn("powell", || OptimizerValue { name: "powell".into(), ..Default::default() });
    let h = host.clone();
    engine.register_fn("minimize", move |ctx: NativeCallContext, opt: OptimizerValue, f: FnPtr, x0: Dynamic| {
        minimize(&ctx, &h, &opt, &f, &x0, &Opts::none("minimize"))
    });
    let h = host.clone();
    engine.register_fn(
        "minimize",
        move |ctx: NativeCallContext, opt: OptimizerValue, f: FnPtr, x0: Dynamic, map: Map| -> RhaiResult<Map> {
            minimize(&ctx, &h, &opt, &f, &x0, &Opts::new("minimize", map)?)
        },
    );
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
        summary: "Adam (Kingma & Ba): for iso (optimizer=adam(lr=0.5); its lr replaces the schedule's, mm per step) and for adam(lr=0.01).minimize(f, x0) (lr a raw step, default 0.001)",
        options: &[
            o("lr", "the schedule's / 0.001", "learning rate: mm per step for translations in iso; a raw step in minimize"),
            o("weight_decay", "0", "L2 penalty weight_decay / 2 |x|^2: weight_decay * x added to the gradient, as PyTorch's Adam (minimize only)"),
        ],
        example: "let a = adam(lr=0.5);\nassert(a.lr == 0.5 && a.to_string() == \"adam(lr=0.5)\", \"configured\");\nlet r = adam(lr=0.1).minimize(|x| ((x - 3.0) ** 2).sum(), [0.0], iterations=300);\nassert(abs(r.x[0] - 3.0) < 0.01, \"the bowl's minimum\");",
    },
    Help {
        name: "sgd",
        domain: "optim",
        signature: "sgd() -> Optimizer",
        summary: "Stochastic gradient descent with (Nesterov) momentum, as PyTorch's SGD, for minimize",
        options: &[
            o("lr", "0.01", "learning rate (a raw step on the parameters)"),
            o("momentum", "0", "momentum in [0, 1)"),
            o("nesterov", "false", "Nesterov momentum"),
            o("weight_decay", "0", "L2 penalty weight_decay / 2 |x|^2 (weight_decay * x added to the gradient)"),
        ],
        example: "let r = sgd(lr=0.1, momentum=0.9).minimize(|x| ((x - tensor([1.0, -2.0])) ** 2).sum(), [0.0, 0.0], iterations=200);\nassert(abs(r.x[0] - 1.0) < 1e-3 && abs(r.x[1] + 2.0) < 1e-3, \"the minimum\");\nassert(r.iterations == 200 && r.stop == \"iterations\", \"ran its budget\");",
    },
    Help {
        name: "minimize",
        domain: "optim",
        signature: "optimizer.minimize(f, x0) -> map {x, loss, best, evaluations, iterations (adam, sgd), stop}   (f: a function of a parameter tensor returning a one-element tensor; Powell also takes a number)",
        summary: "Minimizes a script objective from x0 (an array, nested for a shape, or a tensor) with the loops iso uses: Adam / SGD (one loss per iteration), L-BFGS (strong-Wolfe line search), Powell (derivative-free), whose loss lists every evaluation; x is the best point, in x0's form",
        options: &[o("iterations", "1000 (adam, sgd) / 100 (lbfgs, powell)", "iterations; for Powell, sweeps over the directions")],
        example: "let rosenbrock = |p| { let x = p[0]; let y = p[1]; (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2 };\nlet r = lbfgs().minimize(rosenbrock, [-1.0, 1.0]);\nassert(abs(r.x[0] - 1.0) < 1e-3 && abs(r.x[1] - 1.0) < 1e-3, \"L-BFGS reaches (1, 1)\");\nlet p = powell().minimize(|v| { let x = v[0].item(); let y = v[1].item(); (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2 }, [-1.0, 1.0]);\nassert(abs(p.x[0] - 1.0) < 1e-3, \"Powell from plain numbers\");",
    },
    Help {
        name: "lbfgs",
        domain: "optim",
        signature: "lbfgs() -> Optimizer",
        summary: "L-BFGS with a strong-Wolfe line search, for iso (optimizer=lbfgs(): one fixed objective per level, points drawn once; iterations bound its iterations) and minimize",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([3.0, -2.0, 1.0]), t1);\nlet r = init(moved, t1, transform=\"translation\", method=\"identity\") |> iso(ssd, scales=2, iterations=[20, 10], optimizer=lbfgs());\nassert(displacement_error(r.transform, translation([-3.0, 2.0, -1.0]), t1) < 0.3, \"the shift is recovered\");\nassert(lbfgs().name == \"lbfgs\", \"named\");",
    },
    Help {
        name: "powell",
        domain: "optim",
        signature: "powell() -> Optimizer",
        summary: "Powell's derivative-free method (Brent line searches) for iso (optimizer=powell()), as Sedghi et al.'s deep metrics use it for measures without gradients; iterations bound its sweeps (also for minimize)",
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
