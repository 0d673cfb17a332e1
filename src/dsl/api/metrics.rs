//! Similarity measures as values and as functions, and the evaluation measures.

use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position};

use super::tensor::TensorValue;
use super::{floats, with_opts};
use crate::dsl::help::{o, Help, Opt};
use crate::dsl::options::{arg_error, num, numbers, type_of, Opts, OrHost, RhaiResult};
use crate::dsl::value::TransformValue;
use crate::dsl::Host;
use crate::error::Error;
use crate::image::Image;
use crate::metrics::evaluation::{dice, dice_threshold, hd95, jacobian_stats, mean_displacement_error, psnr, ssim};
use crate::metrics::regularizers::{CustomRegularizer, CustomTerm, Regularizer};
use crate::metrics::response::{peak, response, steps, SweepAxis};
use crate::metrics::similarity::{Custom, CustomMeasure};
use crate::metrics::{Metric, OptionValue};
use crate::plot::{save_plot, Curve, PlotOptions};

/// The metric names scripts can use bare (as values) and call (as functions).
pub const METRICS: [&str; 8] = ["mi", "nmi", "cr", "cr_patch", "mi_patch", "lncc", "ncc", "ssd"];

/// Applies the metric options present in `o` (all but `mask`) to `m`. Errors: options the measure does
/// not take (with "did you mean"), values of the wrong type.
pub fn configure(mut m: Metric, o: &Opts) -> RhaiResult<Metric> {
    for key in ["bins", "sigma", "patch", "shifted", "window", "gaussian", "range_fixed", "range_moving"] {
        let Some(d) = o.get(key) else { continue };
        let value = if let Ok(b) = d.as_bool() {
            OptionValue::Bool(b)
        } else if let Some(x) = num(d) {
            OptionValue::Number(x)
        } else if let Some(v) = numbers(d).filter(|v| v.len() == 2) {
            OptionValue::Range(v[0], v[1])
        } else {
            return Err(arg_error(o.func(), format!("keyword argument `{key}` must be a number, a bool or [lo, hi]")));
        };
        m.set(key, value).host_key(key)?;
    }
    Ok(m)
}

/// The 0-th channels of two images on one grid and an optional mask, as tensors for a measure.
fn operands(m: &Metric, a: &Image, b: &Image, o: &Opts) -> RhaiResult<(Tensor, Tensor, Option<Tensor>)> {
    if !a.grid().same_as(b.grid(), 1e-4) {
        return Err(Error::Shape {
            op: m.name().to_string(),
            expected: format!("the moving image on the fixed grid {}", a.grid()),
            actual: b.grid().to_string(),
        })
        .host();
    }
    let mask = mask_data(o)?;
    Ok((a.channel(0).host()?.data().clone(), b.channel(0).host()?.data().clone(), mask))
}

/// Channel 0 of the `mask=` keyword argument, as a `(1, Z, Y, X)` tensor, if given.
fn mask_data(o: &Opts) -> RhaiResult<Option<Tensor>> {
    o.image("mask")?.map(|i| i.channel(0).map(|c| c.data().clone())).transpose().host_key("mask")
}

/// The value of `m` (configured by `o`) on `fixed` and `moving`.
fn value(m: &Metric, fixed: &Image, moving: &Image, o: &Opts) -> RhaiResult<f64> {
    let (f, mv, mask) = operands(m, fixed, moving, o)?;
    m.value(&f, &mv, mask.as_ref()).host()
}

/// `response(metric, fixed, moving)`: the measure along a sweep of one rigid degree of freedom.
fn response_impl(m: &Metric, fixed: &Image, moving: &Image, o: &Opts) -> RhaiResult<Map> {
    let axis_name = o.string("axis")?.unwrap_or_else(|| "x".to_string());
    let axis = SweepAxis::parse(&axis_name).host_key("axis")?;
    let range = o.numbers("range")?.unwrap_or_else(|| vec![-20.0, 20.0]);
    let [lo, hi] = range[..] else {
        return Err(arg_error("response", "range must be [lo, hi]"));
    };
    let shifts = steps(lo, hi, o.f64("step")?.unwrap_or(1.0)).host_key("step")?;
    let mask = mask_data(o)?;
    if let Some(mk) = &mask {
        if mk.dims() != fixed.data().dims() {
            return Err(arg_error("response", format!("the mask must be on the fixed grid {}", fixed.grid())));
        }
    }
    let values = response(m, fixed, moving, axis, &shifts, mask.as_ref()).host()?;
    let mut out = Map::new();
    let better = m.higher_is_better();
    out.insert("peak".into(), peak(&shifts, &values, better).map_or(Dynamic::UNIT, Dynamic::from_float));
    out.insert("higher_is_better".into(), better.into());
    out.insert("shift".into(), floats(shifts).into());
    out.insert("value".into(), floats(values).into());
    out.insert("axis".into(), axis_name.into());
    out.insert("unit".into(), axis.unit().into());
    out.insert("metric".into(), m.to_string().into());
    Ok(out)
}

/// One curve of `plot`: a map with `x` and `y` (or a response's `shift` and `value`) and an optional `label`.
fn curve(d: &Dynamic, i: usize) -> RhaiResult<Curve> {
    let bad = || {
        arg_error(
            "plot",
            format!("curve {i}: a map with x and y (or a response's shift and value), got {}", type_of(d)),
        )
    };
    let m = d.read_lock::<Map>().ok_or_else(bad)?;
    let pick = |a: &str, b: &str| m.get(a).or_else(|| m.get(b)).and_then(numbers);
    let (Some(x), Some(y)) = (pick("x", "shift"), pick("y", "value")) else { return Err(bad()) };
    let higher_is_better = m.get("higher_is_better").and_then(|b| b.as_bool().ok()).unwrap_or(true);
    let label = match m.get("label") {
        Some(l) => l.to_string(),
        None => m.get("metric").map(|l| l.to_string()).unwrap_or_default(),
    };
    Ok(Curve { label, x, y, higher_is_better })
}

/// `plot(curves, path)`: a PNG line plot of one curve or an array of them.
fn plot_impl(curves: &Dynamic, path: &str, o: &Opts) -> RhaiResult<String> {
    let items: Vec<Dynamic> = match curves.read_lock::<Array>() {
        Some(a) => a.iter().cloned().collect(),
        None => vec![curves.clone()],
    };
    let mut cs = items.iter().enumerate().map(|(i, d)| curve(d, i)).collect::<RhaiResult<Vec<_>>>()?;
    if let Some(labels) = o.get("labels") {
        let labels = labels.read_lock::<Array>().map(|a| a.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        match labels {
            Some(l) if l.len() == cs.len() => cs.iter_mut().zip(l).for_each(|(c, l)| c.label = l),
            _ => {
                return Err(arg_error("plot", format!("labels must be an array of {} names, one per curve", cs.len())))
            }
        }
    }
    let d = PlotOptions::default();
    let unit = items.first().and_then(|c| c.read_lock::<Map>().and_then(|m| m.get("unit").map(|u| u.to_string())));
    let x_default = match unit {
        Some(u) => format!("shift ({u})"),
        None => String::new(),
    };
    let opts = PlotOptions {
        width: o.usize("width")?.map_or(d.width, |w| w.min(u32::MAX as usize) as u32),
        height: o.usize("height")?.map_or(d.height, |h| h.min(u32::MAX as usize) as u32),
        title: o.string("title")?.unwrap_or_default(),
        x_label: o.string("xlabel")?.unwrap_or(x_default),
        y_label: o.string("ylabel")?.unwrap_or_default(),
        normalize: o.bool("normalize")?.unwrap_or(false),
    };
    save_plot(&cs, &opts, path).host()?;
    Ok(path.to_string())
}

fn labels(o: &Opts) -> RhaiResult<Option<Vec<i64>>> {
    Ok(o.numbers("labels")?.map(|v| v.into_iter().map(|x| x as i64).collect()))
}

/// A script function (a closure or `Fn("name")`) callable wherever the library evaluates it (inside
/// `iso`, `register`, `train`), also outside the builtin call that made it: it runs on an engine of its
/// own with the session's host (made on first use) and the script functions that were visible where it
/// was made, so the closure's captured variables and the script's functions are there.
pub(crate) struct ScriptFn {
    f: FnPtr,
    /// The script functions in scope where the value was made.
    namespaces: Vec<Arc<rhai::Module>>,
    /// The function's parameter count without curried (captured) values.
    arity: usize,
    host: Arc<Host>,
    engine: Mutex<Option<Arc<Engine>>>,
    name: String,
}

impl ScriptFn {
    /// `f` as a callable of the library, named `name` in errors; its arity must be one of `arities`.
    ///
    /// Errors: a function that does not exist or takes another number of arguments (`what` names
    /// what it is for).
    pub(crate) fn new(
        ctx: &NativeCallContext,
        host: &Arc<Host>,
        f: FnPtr,
        name: String,
        arities: &[usize],
        what: &str,
    ) -> RhaiResult<Self> {
        let curried = f.curry().len();
        // Among overloads of the name, one with an arity that fits, else any (for the error).
        let counts: Vec<usize> = ctx
            .iter_namespaces()
            .flat_map(|m| m.iter_script_fn_info())
            .filter(|fi| fi.2 == f.fn_name())
            .map(|fi| fi.3.saturating_sub(curried))
            .collect();
        let params = counts.iter().copied().find(|n| arities.contains(n)).or(counts.first().copied());
        let func = ctx.fn_name().to_string();
        let arity = match params {
            Some(n) if arities.contains(&n) => n,
            Some(n) => {
                return Err(arg_error(&func, format!("{what}; `{}` takes {n} arguments", f.fn_name())));
            }
            None => return Err(arg_error(&func, format!("no script function `{}`", f.fn_name()))),
        };
        Ok(ScriptFn {
            f,
            namespaces: ctx.namespaces().to_vec(),
            arity,
            host: host.clone(),
            engine: Mutex::new(None),
            name,
        })
    }

    fn engine(&self) -> crate::Result<Arc<Engine>> {
        let mut slot = self.engine.lock().map_err(|_| crate::Error::arg(self.name.clone(), "engine lock poisoned"))?;
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let (e, _) = crate::dsl::engine_with(self.host.clone())
            .map_err(|e| crate::Error::arg(self.name.clone(), format!("cannot make an engine: {e:?}")))?;
        let e = Arc::new(e);
        *slot = Some(e.clone());
        Ok(e)
    }

    /// Calls the function with `args`; a script error is passed on as [`crate::Error::Callback`].
    pub(crate) fn call(&self, args: Vec<Dynamic>) -> crate::Result<Dynamic> {
        let engine = self.engine()?;
        let mut global = engine.new_global_runtime_state();
        global.lib = self.namespaces.iter().cloned().collect();
        let ctx = NativeCallContext::new_with_all_fields(&engine, &self.name, None, &global, Position::NONE);
        let out: Result<Dynamic, Box<EvalAltResult>> = self.f.call_within_context(&ctx, args);
        out.map_err(crate::dsl::options::callback)
    }

    /// The tensor a call returned, or a named error.
    pub(crate) fn tensor(&self, out: Dynamic, what: &str) -> crate::Result<Tensor> {
        match out.clone().try_cast::<TensorValue>() {
            Some(t) => Ok(t.0),
            None => Err(crate::Error::arg(
                self.name.clone(),
                format!(
                    "the {what} returned {}, not a Tensor: compute it with tensor operations on its arguments (not .item()) so that it can be differentiated",
                    type_of(&out)
                ),
            )),
        }
    }
}

/// A measure written in the DSL: `|fixed, warped|` or `|fixed, warped, mask|` on `(1, Z, Y, X)` tensors
/// (the mask is all ones when none is given).
struct ScriptMeasure(ScriptFn);

impl CustomMeasure for ScriptMeasure {
    fn measure(&self, fixed: &Tensor, moving: &Tensor, mask: Option<&Tensor>) -> crate::Result<Tensor> {
        let f = &self.0;
        let (a, b) = (Dynamic::from(TensorValue(fixed.clone())), Dynamic::from(TensorValue(moving.clone())));
        let args = match (mask, f.arity) {
            (None, 2) => vec![a, b],
            (Some(m), 3) => vec![a, b, Dynamic::from(TensorValue(m.clone()))],
            // A measure written for masks sees every voxel when none is given.
            (None, _) => vec![a, b, Dynamic::from(TensorValue(fixed.ones_like()?))],
            (Some(_), _) => {
                return Err(crate::Error::arg(
                    f.name.clone(),
                    "a mask was given, but the measure takes none: write it as |fixed, warped, mask| to use masks",
                ))
            }
        };
        let out = f.call(args)?;
        f.tensor(out, "measure")
    }
}

/// A regularizer written in the DSL: `|field|` on the `(3, Z, Y, X)` displacement field in mm.
struct ScriptRegularizer(ScriptFn);

impl CustomRegularizer for ScriptRegularizer {
    fn value(&self, field: &Tensor, _grid: &crate::image::Grid) -> crate::Result<Tensor> {
        let out = self.0.call(vec![Dynamic::from(TensorValue(field.clone()))])?;
        self.0.tensor(out, "regularizer")
    }
}

/// Where a builtin was called, for help and reports (`recipe.rhai line 3`).
fn call_site(ctx: &NativeCallContext) -> String {
    match (ctx.call_source(), ctx.call_position().line()) {
        (Some(s), Some(l)) => format!("{s} line {l}"),
        (None, Some(l)) => format!("line {l}"),
        _ => "a script".to_string(),
    }
}

/// The name of a value made from a script function: `name=`, else the function's name (`fallback` for
/// a closure).
fn fn_value_name(f: &FnPtr, o: &Opts, fallback: &str) -> RhaiResult<String> {
    Ok(match o.string("name")? {
        Some(n) => n,
        None if f.fn_name().starts_with("anon$") => fallback.to_string(),
        None => f.fn_name().to_string(),
    })
}

/// `metric(|fixed, warped| ...)`: a measure written in the DSL (see [`ScriptMeasure`]).
fn script_metric(ctx: &NativeCallContext, host: &Arc<Host>, f: FnPtr, o: &Opts) -> RhaiResult<Metric> {
    let name = fn_value_name(&f, o, "script measure")?;
    let sf =
        ScriptFn::new(ctx, host, f, name.clone(), &[2, 3], "a measure takes (fixed, warped) or (fixed, warped, mask)")?;
    let custom = Custom {
        measure: Arc::new(ScriptMeasure(sf)),
        higher_is_better: o.bool("higher_is_better")?.unwrap_or(true),
        source: call_site(ctx),
    };
    Ok(Metric::custom(&name, custom))
}

/// `regularizer(|field| ...)`: a regularizer written in the DSL (see [`ScriptRegularizer`]).
fn script_regularizer(ctx: &NativeCallContext, host: &Arc<Host>, f: FnPtr, o: &Opts) -> RhaiResult<Regularizer> {
    let name = fn_value_name(&f, o, "script regularizer")?;
    let sf = ScriptFn::new(ctx, host, f, name.clone(), &[1], "a regularizer takes the displacement field")?;
    let weight = o.f64("weight")?.unwrap_or(1.0);
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(arg_error("regularizer", format!("weight must be >= 0, got {weight}")));
    }
    Ok(Regularizer::Custom(CustomTerm { regularizer: Arc::new(ScriptRegularizer(sf)), name }, weight))
}

/// A regularizer by name (`diffusion`, `bending`, `folding`), with a weight.
fn named_regularizer(name: &str, o: &Opts) -> RhaiResult<Regularizer> {
    let w = o.f64("weight")?.unwrap_or(1.0);
    if !(w.is_finite() && w >= 0.0) {
        return Err(arg_error("regularizer", format!("weight must be >= 0, got {w}")));
    }
    match Regularizer::parse(name).host()? {
        Some(r) => Ok(r.scaled(w)),
        None => Err(arg_error("regularizer", "`none` is not a regularizer value")),
    }
}

/// Registers the metric type, the measure functions and the evaluation measures.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine
        .register_type_with_name::<Metric>("Metric")
        .register_get("name", |m: &mut Metric| m.name().to_string())
        .register_fn("to_string", |m: &mut Metric| m.to_string())
        .register_fn("to_debug", |m: &mut Metric| m.to_string());
    with_opts!(engine, "measure", |m: Metric, a: Image, b: Image| o => value(&m, &a, &b, &o));
    with_opts!(engine, "response", |m: Metric, fixed: Image, moving: Image| o => response_impl(&m, &fixed, &moving, &o));
    with_opts!(engine, "plot", |curves: Dynamic, path: &str| o => plot_impl(&curves, path, &o));
    with_opts!(engine, "metric", |name: &str| o => {
        for key in ["name", "higher_is_better"] {
            if o.get(key).is_some() {
                return Err(arg_error("metric", format!("{key}= is for measures written in the DSL (metric(|fixed, warped| ...))")));
            }
        }
        configure(Metric::new(name).host()?, &o)
    });
    // Measure algebra, on losses: `0.5 * ncc + 0.5 * mi`, `-m`.
    let sum = |terms: Vec<(f64, Metric)>| Metric::weighted_sum(terms).host();
    engine.register_fn("+", move |a: Metric, b: Metric| sum(vec![(1.0, a), (1.0, b)]));
    engine.register_fn("-", move |a: Metric, b: Metric| sum(vec![(1.0, a), (-1.0, b)]));
    engine.register_fn("-", move |a: Metric| sum(vec![(-1.0, a)]));
    engine.register_fn("*", move |a: Metric, w: f64| sum(vec![(w, a)]));
    engine.register_fn("*", move |w: f64, a: Metric| sum(vec![(w, a)]));
    engine.register_fn("*", move |a: Metric, w: i64| sum(vec![(w as f64, a)]));
    engine.register_fn("*", move |w: i64, a: Metric| sum(vec![(w as f64, a)]));
    let divide = move |a: Metric, w: f64| {
        if w == 0.0 {
            return Err(arg_error("measure sum", format!("{a} / 0: division by zero")));
        }
        sum(vec![(1.0 / w, a)])
    };
    engine.register_fn("/", move |a: Metric, w: f64| divide(a, w));
    engine.register_fn("/", move |a: Metric, w: i64| divide(a, w as f64));
    engine.register_get("terms", |m: &mut Metric| -> rhai::Array {
        m.terms()
            .iter()
            .map(|(w, t)| {
                let mut e = Map::new();
                e.insert("weight".into(), Dynamic::from_float(*w));
                e.insert("metric".into(), Dynamic::from(t.clone()));
                Dynamic::from_map(e)
            })
            .collect()
    });
    // Regularizers as values: `lncc + 0.1 * bending` is one objective for the dense stages.
    engine
        .register_type_with_name::<Regularizer>("Regularizer")
        .register_fn("to_string", |r: &mut Regularizer| r.to_string())
        .register_fn("to_debug", |r: &mut Regularizer| r.to_string());
    let scaled = |r: Regularizer, w: f64| -> RhaiResult<Regularizer> {
        if !(w.is_finite() && w >= 0.0) {
            return Err(arg_error("regularizer", format!("a regularizer's weight must be >= 0, got {w}")));
        }
        Ok(r.scaled(w))
    };
    engine.register_fn("*", move |w: f64, r: Regularizer| scaled(r, w));
    engine.register_fn("*", move |r: Regularizer, w: f64| scaled(r, w));
    engine.register_fn("*", move |w: i64, r: Regularizer| scaled(r, w as f64));
    engine.register_fn("*", move |r: Regularizer, w: i64| scaled(r, w as f64));
    engine.register_fn("+", |a: Regularizer, b: Regularizer| a.plus(&b));
    engine.register_fn("+", |m: Metric, r: Regularizer| m.with_regularizer(&r));
    engine.register_fn("+", |r: Regularizer, m: Metric| m.with_regularizer(&r));
    with_opts!(engine, "regularizer", |name: &str| o => {
        if o.get("name").is_some() {
            return Err(arg_error("regularizer", "name= is for regularizers written in the DSL"));
        }
        named_regularizer(name, &o)
    });
    let h = host.clone();
    engine.register_fn("regularizer", move |ctx: NativeCallContext, f: FnPtr| {
        script_regularizer(&ctx, &h, f, &Opts::none("regularizer"))
    });
    let h = host.clone();
    engine.register_fn("regularizer", move |ctx: NativeCallContext, f: FnPtr, map: Map| -> RhaiResult<Regularizer> {
        script_regularizer(&ctx, &h, f, &Opts::new("regularizer", map)?)
    });
    engine.register_fn("penalty", |r: Regularizer, field: TensorValue, on: Dynamic| -> RhaiResult<TensorValue> {
        let g = crate::dsl::options::grid_of(&on).ok_or_else(|| {
            arg_error("penalty", format!("the third argument is an image or a grid, not {}", type_of(&on)))
        })?;
        let d = field.0.dims();
        let [z, y, x] = g.zyx();
        if d != [3, z, y, x] {
            return Err(arg_error("penalty", format!("the field must be (3, {z}, {y}, {x}) on that grid, got {d:?}")));
        }
        match r.term(&field.0, &g).host()? {
            Some(t) => Ok(TensorValue(t)),
            None => crate::dsl::api::tensor::zero_like(&field.0),
        }
    });
    let h = host.clone();
    engine.register_fn("metric", move |ctx: NativeCallContext, f: FnPtr| {
        script_metric(&ctx, &h, f, &Opts::none("metric"))
    });
    let h = host.clone();
    engine.register_fn("metric", move |ctx: NativeCallContext, f: FnPtr, map: Map| -> RhaiResult<Metric> {
        script_metric(&ctx, &h, f, &Opts::new("metric", map)?)
    });

    macro_rules! metric_fns {
        ($($name:literal),*) => {$(
            with_opts!(engine, $name, |a: Image, b: Image| o => {
                let m = configure(Metric::new($name).host()?, &o)?;
                value(&m, &a, &b, &o)
            });
            engine.register_fn($name, |map: Map| -> RhaiResult<Metric> {
                let o = Opts::new($name, map)?;
                if o.get("mask").is_some() {
                    return Err(arg_error($name, "a mask goes with the images: iso(..., mask=m) or mi(a, b, mask=m)"));
                }
                configure(Metric::new($name).host()?, &o)
            });
        )*};
    }
    metric_fns!("mi", "nmi", "cr", "cr_patch", "mi_patch", "lncc", "ncc", "ssd");

    with_opts!(engine, "dice", |a: Image, b: Image| o => {
        match o.f64("threshold")? {
            Some(t) => dice_threshold(&a, &b, t).host(),
            None => dice(&a, &b, labels(&o)?.as_deref()).host().map(|s| s.mean),
        }
    });
    with_opts!(engine, "hd95", |a: Image, b: Image| o => hd95(&a, &b, labels(&o)?.as_deref()).host().map(|s| s.mean));
    with_opts!(engine, "ssim", |a: Image, b: Image| o => ssim(&a, &b, o.f64("data_range")?).host());
    with_opts!(engine, "psnr", |a: Image, b: Image| o => psnr(&a, &b, o.f64("data_range")?).host());
    with_opts!(engine, "displacement_error", |a: TransformValue, b: TransformValue, on: Dynamic| o => {
        let g = crate::dsl::options::grid_of(&on).ok_or_else(|| arg_error("displacement_error", "onto must be an image or a grid"))?;
        mean_displacement_error(a.inner.as_ref(), b.inner.as_ref(), &g, o.image("mask")?.as_ref()).host()
    });
    with_opts!(engine, "jacobian_stats", |det: Image| o => {
        let s = jacobian_stats(&det, o.image("mask")?.as_ref()).host()?;
        let mut m = Map::new();
        m.insert("fraction_nonpositive".into(), Dynamic::from_float(s.fraction_nonpositive));
        m.insert("std_log_det".into(), Dynamic::from_float(s.std_log_det));
        m.insert("min".into(), Dynamic::from_float(s.min));
        m.insert("max".into(), Dynamic::from_float(s.max));
        m.insert("mean".into(), Dynamic::from_float(s.mean));
        Ok(m)
    });
}

const PARZEN: [Opt; 5] = [
    o("bins", "32", "histogram bins (integer, 2-1024)"),
    o("sigma", "0.5", "Parzen window width, in bin widths"),
    o("range_fixed", "min..max", "[lo, hi] intensities of the fixed image mapped onto the bins"),
    o("range_moving", "min..max", "[lo, hi] intensities of the moving image mapped onto the bins"),
    o("mask", "-", "image on the fixed grid: only non-zero voxels count"),
];
const PARZEN_PATCH: [Opt; 6] =
    [PARZEN[0], PARZEN[1], PARZEN[2], PARZEN[3], o("patch", "16", "patch side, voxels"), PARZEN[4]];
const CR_PATCH: [Opt; 7] = [
    PARZEN[0],
    PARZEN[1],
    PARZEN[2],
    PARZEN[3],
    o("patch", "16", "patch side, voxels"),
    o("shifted", "true", "add a second pass moved by half a patch"),
    PARZEN[4],
];
const LNCC: [Opt; 3] = [
    o("window", "9", "box window side, voxels (odd)"),
    o("gaussian", "-", "Gaussian window sigma, voxels (instead of the box)"),
    PARZEN[4],
];
const MASK_ONLY: [Opt; 1] = [PARZEN[4]];
const METRIC_OPTS: [Opt; 10] = [
    PARZEN[0],
    PARZEN[1],
    PARZEN[2],
    PARZEN[3],
    o("patch", "16", "patch side, voxels (patch measures)"),
    o("shifted", "true", "second pass moved by half a patch (cr_patch)"),
    o("window", "9", "box window side, voxels (lncc)"),
    o("gaussian", "-", "Gaussian window sigma, voxels (lncc)"),
    o("name", "the function's", "name of a measure written in the DSL (reports, :help)"),
    o("higher_is_better", "true", "for a measure written in the DSL: its loss is -value (true) or value (false)"),
];

macro_rules! metric_help {
    ($name:literal, $summary:literal, $opts:expr, $example:literal) => {
        Help {
            name: $name,
            domain: "metrics",
            signature: concat!(
                $name,
                "(fixed, moving) -> float; ",
                $name,
                "(keyword arguments) -> Metric; bare `",
                $name,
                "` is the Metric value"
            ),
            summary: $summary,
            options: &$opts,
            example: $example,
        }
    };
}

/// The help of the metrics builtins (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    metric_help!(
        "mi",
        "Parzen-window mutual information (nats) of the fixed and moving images on one grid",
        PARZEN,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(mi(t1, t1) > mi(t1, t2), \"an image shares most information with itself\");\nassert(mi(t1, t2, bins=16) > 0.3, \"T1 and T2 are aligned\");\nassert(mi(bins=64).to_string() == \"mi(bins=64, sigma=0.5)\", \"a configured metric value\");"
    ),
    metric_help!(
        "nmi",
        "Normalized mutual information (H(F) + H(M)) / H(F, M), in [1, 2]",
        PARZEN,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet v = nmi(t1, t1);\nassert(v > 1.4 && v <= 2.0, \"in [1, 2], high for an image with itself\");\nassert(v > nmi(t1, load(\"data/avg152/avg152T2.nii\")), \"higher than with another modality\");"
    ),
    metric_help!(
        "cr",
        "Symmetric Parzen correlation ratio (eta(M|F) + eta(F|M)) / 2, in [0, 1]",
        PARZEN,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(cr(t1, t1) > 0.95, \"near 1 for an image with itself\");\nassert(cr(t1, t2) > cr(t1, warp(t2, translation([6.0, 0.0, 0.0]), t1)), \"misalignment lowers it\");"
    ),
    metric_help!(
        "cr_patch",
        "Mean of per-patch symmetric correlation ratios (two passes), in [0, 1]",
        CR_PATCH,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet v = cr_patch(t1, t2, patch=8);\nassert(v > 0.0 && v <= 1.0, \"in [0, 1]\");\nassert(cr_patch(t1, t1) > v, \"highest for identical images\");"
    ),
    metric_help!(
        "mi_patch",
        "Mean of per-patch Parzen mutual information (nats)",
        PARZEN_PATCH,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(mi_patch(t1, t1) > mi_patch(t1, t2), \"highest for identical images\");"
    ),
    metric_help!(
        "lncc",
        "Local normalized cross-correlation squared (VoxelMorph form), in [0, 1]",
        LNCC,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet same = lncc(t1, t1, window=5);\nassert(same > 0.6 && same <= 1.0, \"1 in windows with structure, 0 in the flat background\");\nassert(same > lncc(t1, load(\"data/avg152/avg152T2.nii\"), window=5), \"highest for identical images\");"
    ),
    metric_help!(
        "ncc",
        "Global normalized cross-correlation (Pearson), in [-1, 1]",
        MASK_ONLY,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(abs(ncc(t1, t1 * 2.0 + 5.0) - 1.0) < 1e-4, \"1 under a linear intensity map (f32 sums)\");\nassert(abs(ncc(t1, -t1) + 1.0) < 1e-4, \"-1 when inverted\");"
    ),
    metric_help!(
        "ssd",
        "Mean squared difference (also `mse`)",
        MASK_ONLY,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(ssd(t1, t1) == 0.0, \"0 for identical images\");\nassert(abs(ssd(t1, t1 + 2.0) - 4.0) < 1e-4, \"a constant offset of 2 gives 4\");"
    ),
    Help {
        name: "metric",
        domain: "metrics",
        signature: "metric(name) -> Metric;  metric(|fixed, warped| ...) or metric(|fixed, warped, mask| ...) -> Metric",
        summary: "A similarity measure by name (aliases, \"did you mean\") with options, or one written in the DSL: a function of the fixed and warped data tensors (1, Z, Y, X) returning a one-element tensor; usable in iso, register and measure like the built-ins (gradient by autograd through the warp, on the full grid). Measures combine on their losses: 0.5 * ncc + 0.5 * mi has the loss 0.5 * (-ncc) + 0.5 * (-mi), and measure() reports that loss; -m flips a measure",
        options: &METRIC_OPTS,
        example: "let m = metric(\"mi\", bins=48);\nassert(m.name == \"mi\" && m.to_string() == \"mi(bins=48, sigma=0.5)\", \"configured\");\nassert(metric(\"mse\").name == \"ssd\", \"an alias\");\nlet my_ncc = metric(|f, w| {\n    let a = f - f.mean();\n    let b = w - w.mean();\n    (a * b).mean() / sqrt((a * a).mean() * (b * b).mean())\n}, name=\"my_ncc\");\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(abs(measure(my_ncc, t1, t2) - ncc(t1, t2)) < 1e-4, \"the script NCC is the built-in's\");\nlet both = 0.5 * ncc + 0.5 * mi;\nassert(both.to_string() == \"0.5 * ncc + 0.5 * mi(bins=32, sigma=0.5)\" && both.terms.len() == 2, \"a sum of two measures\");\nassert(abs(measure(both, t1, t2) + 0.5 * ncc(t1, t2) + 0.5 * mi(t1, t2)) < 1e-4, \"its value is the combined loss\");",
    },
    Help {
        name: "regularizer",
        domain: "metrics",
        signature: "regularizer(name) -> Regularizer;  regularizer(|field| ...) -> Regularizer   (bare `diffusion` and `bending` are values too)",
        summary: "A regularizer of the displacement field for dense stages and training: diffusion (Wang et al. eq. 8), bending (Rueckert et al. 1999, 1/mm^2), folding (mean relu(-det J)), or one written in the DSL on the (3, Z, Y, X) field in mm; weights multiply (0.1 * bending), terms add, and measure + regularizer is one objective (register(m, f, metric=lncc + 0.1 * bending, transform=\"syn\"))",
        options: &[
            o("weight", "1", "the penalty's weight"),
            o("name", "the function's", "name of a regularizer written in the DSL"),
        ],
        example: "let r = lncc + 0.1 * bending;\nassert(r.to_string() == \"lncc(Box(9)) + 0.1 * bending\", \"a measure with a regularizer\");\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nlet u = zeros([3, 91, 109, 91]);\nassert(penalty(diffusion + regularizer(\"folding\"), u, t1).item() == 0.0, \"the identity has no penalty\");\nlet l2 = regularizer(|u| (u * u).mean(), name=\"l2\");\nassert(penalty(2 * l2, ones([3, 91, 109, 91]), t1).item() == 2.0, \"a script regularizer, weighted\");",
    },
    Help {
        name: "penalty",
        domain: "metrics",
        signature: "penalty(regularizer, field, onto) -> Tensor   (field (3, Z, Y, X) mm on the grid of `onto`, an image or a grid)",
        summary: "The weighted penalty of a displacement field, differentiable in the field",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet u = zeros([3, 91, 109, 91]).requires_grad();\nlet p = penalty(bending, u, t1);\nassert(p.item() == 0.0 && grad(p + (u * u).sum(), u).shape == [3, 91, 109, 91], \"zero for no displacement; differentiable\");",
    },
    Help {
        name: "measure",
        domain: "metrics",
        signature: "measure(metric, fixed, moving) -> float   (also metric.measure(fixed, moving))",
        summary: "The value of a Metric value on two images on one grid",
        options: &MASK_ONLY,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(measure(mi, t1, t2) == mi(t1, t2), \"the same measure\");\nassert(cr_patch.measure(t1, t1) == cr_patch(t1, t1), \"method form\");",
    },
    Help {
        name: "response",
        domain: "metrics",
        signature: "response(metric, fixed, moving) -> #{shift, value, peak, higher_is_better, axis, unit, metric}",
        summary: "A response function (Sedghi et al. Fig. 2): the measure of fixed against moving moved step by step along one rigid degree of freedom, moving sampled at T(x) on the fixed grid, so a moving image made by warp(fixed, translation([8, 0, 0]), fixed) peaks at -8, the shift that undoes it; `peak` is the step of the best value (the largest, or the smallest for ssd and combined measures' losses). Plot one or several with plot(...)",
        options: &[
            o("axis", "x", "x, y, z (translation, mm) or rx, ry, rz (rotation about the fixed grid's centre, degrees)"),
            o("range", "[-20, 20]", "first and last step, mm or degrees"),
            o("step", "1", "step, mm or degrees"),
            PARZEN[4],
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet moved = warp(t2, translation([6.0, 0.0, 0.0]), t1);\nlet r = response(mi, t1, moved, axis=\"x\", range=[-12, 12], step=2);\nassert(r.shift.len() == 13 && r.peak == -6.0, \"moved by +6 mm: mi peaks where the shift undoes it\");\nassert(response(ncc, t1, t1, axis=\"rz\", range=[-10, 10], step=5).peak == 0.0, \"an image against itself peaks at no rotation\");",
    },
    Help {
        name: "plot",
        domain: "metrics",
        signature: "plot(curves, path) -> path   (curves: a response, a map #{x, y, label, higher_is_better}, or an array of them)",
        summary: "A PNG line plot (ticks and labels on both axes, a legend, each curve's best point marked: its maximum, its minimum when higher_is_better is false), written atomically; for response functions the x label defaults to the shift's unit",
        options: &[
            o("labels", "each curve's label or metric", "legend names, one per curve"),
            o("title", "-", "text above the plot"),
            o("xlabel", "shift (unit) for responses", "text below the x axis"),
            o("ylabel", "-", "text above the y axis"),
            o("normalize", "false", "map each curve to [0, 1] by its own min and max (curves of different scales on one axis)"),
            o("width", "640", "pixels"),
            o("height", "420", "pixels"),
        ],
        example: "let x = [];\nlet y = [];\nfor i in range(-10, 11) { x.push(i.to_float()); y.push(-(i - 3.0) * (i - 3.0)); }\nlet p = plot(#{x: x, y: y, label: \"parabola\"}, \"target/plot_example.png\", title=\"-(x - 3)^2\");\nassert(p == \"target/plot_example.png\", \"written\");\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nlet rs = [response(mi, t1, t1, range=[-6, 6], step=3), response(ncc, t1, t1, range=[-6, 6], step=3)];\nplot(rs, \"target/plot_responses.png\", normalize=true, title=\"T1 against itself\");",
    },
    Help {
        name: "dice",
        domain: "metrics",
        signature: "dice(a, b) -> float   (label maps on one grid)",
        summary: "Mean Dice overlap over the labels present (or of masks above a threshold)",
        options: &[
            o("labels", "all non-zero", "the labels to score (a list of integers)"),
            o("threshold", "-", "score the masks a > threshold and b > threshold instead of labels"),
        ],
        example: "let wm = load(\"data/avg152/white.nii\");\nlet gm = load(\"data/avg152/grey.nii\");\nassert(dice(wm > 0.5, wm > 0.5) == 1.0, \"identical masks\");\nassert(dice(wm, gm, threshold=0.5) < 0.2, \"white and grey matter barely overlap\");",
    },
    Help {
        name: "hd95",
        domain: "metrics",
        signature: "hd95(a, b) -> float   (label maps on one grid; mm)",
        summary: "Mean over labels of the 95th percentile symmetric surface distance (medpy's HD95), mm",
        options: &[o("labels", "all non-zero", "the labels to score (a list of integers)")],
        example: "let b = threshold(load(\"data/avg152/brainmask.nii\"), 0.5, 1e9);\nassert(hd95(b, b) == 0.0, \"0 for identical masks\");\nlet moved = warp(b, translation([4.0, 0.0, 0.0]), b, interpolation=\"nearest\");\nassert(abs(hd95(b, moved) - 4.0) < 1e-6, \"a 4 mm shift\");",
    },
    Help {
        name: "ssim",
        domain: "metrics",
        signature: "ssim(a, b) -> float",
        summary: "Mean structural similarity (Gaussian window sigma 1.5 voxels, scikit-image's definition)",
        options: &[o("data_range", "max(a) - min(a)", "the intensity range R")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(abs(ssim(t1, t1) - 1.0) < 1e-9, \"1 for identical images\");\nassert(ssim(t1, smooth(t1, 4.0), data_range=1.0) < 0.95, \"blurring lowers it\");",
    },
    Help {
        name: "psnr",
        domain: "metrics",
        signature: "psnr(reference, test) -> float   (dB)",
        summary: "Peak signal-to-noise ratio 10 log10(R^2 / MSE), dB",
        options: &[o("data_range", "max(reference) - min(reference)", "the intensity range R")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet v = psnr(t1, t1 + 0.01, data_range=1.0);\nassert(abs(v - 40.0) < 1e-3, \"R 1, MSE 1e-4: 40 dB\");",
    },
    Help {
        name: "displacement_error",
        domain: "metrics",
        signature: "displacement_error(a, b, onto) -> float   (mm)",
        summary: "Mean over the voxels of a grid of |a(x) - b(x)|: how far two transforms disagree, mm",
        options: &[o("mask", "-", "only the non-zero voxels of this image (on the grid)")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet e = displacement_error(translation([3.0, 4.0, 0.0]), affine(), t1);\nassert(abs(e - 5.0) < 1e-5, \"a 3-4-5 shift\");",
    },
    Help {
        name: "jacobian_stats",
        domain: "metrics",
        signature: "jacobian_stats(det) -> map   (det: a Jacobian determinant image)",
        summary: "Folding fraction, std of log det, min, max, mean of a Jacobian determinant image",
        options: &[o("mask", "-", "only the non-zero voxels of this image")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet s = jacobian_stats(jacobian(affine(), t1));\nassert(s.fraction_nonpositive == 0.0 && s.mean == 1.0, \"identity\");",
    },
];
