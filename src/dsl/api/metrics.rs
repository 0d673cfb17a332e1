//! Similarity measures as values and as functions, and the evaluation measures.

use candle_core::Tensor;
use rhai::{Dynamic, Engine, Map};

use super::with_opts;
use crate::dsl::options::{arg_error, num, numbers, Opts, OrHost, RhaiResult};
use crate::dsl::value::TransformValue;
use crate::error::Error;
use crate::image::Image;
use crate::metrics::evaluation::{dice, dice_threshold, hd95, jacobian_stats, mean_displacement_error, psnr, ssim};
use crate::metrics::{Metric, OptionValue};

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
    let mask = o.image("mask")?.map(|i| i.channel(0).map(|c| c.data().clone())).transpose().host_key("mask")?;
    Ok((a.channel(0).host()?.data().clone(), b.channel(0).host()?.data().clone(), mask))
}

/// The value of `m` (configured by `o`) on `fixed` and `moving`.
fn value(m: &Metric, fixed: &Image, moving: &Image, o: &Opts) -> RhaiResult<f64> {
    let (f, mv, mask) = operands(m, fixed, moving, o)?;
    m.value(&f, &mv, mask.as_ref()).host()
}

fn labels(o: &Opts) -> RhaiResult<Option<Vec<i64>>> {
    Ok(o.numbers("labels")?.map(|v| v.into_iter().map(|x| x as i64).collect()))
}

/// Registers the metric type, the measure functions and the evaluation measures.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<Metric>("Metric")
        .register_get("name", |m: &mut Metric| m.name().to_string())
        .register_fn("to_string", |m: &mut Metric| m.to_string())
        .register_fn("to_debug", |m: &mut Metric| m.to_string());
    with_opts!(engine, "measure", |m: Metric, a: Image, b: Image| o => value(&m, &a, &b, &o));
    with_opts!(engine, "metric", |name: &str| o => configure(Metric::new(name).host()?, &o));

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
