//! Transforms: construction (affine, rigid, translation, svf, bspline), files, composition, inverse,
//! the warp, and the Jacobian determinant.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rhai::{Array, Dynamic, Engine};

use super::{floats, rows, with_opts};
use crate::dsl::options::{arg_error, grid_of, numbers, HostError, Opts, OrHost, RhaiResult};
use crate::dsl::value::TransformValue;
use crate::image::resample::Padding;
use crate::image::{Grid, Image};
use crate::metrics::regularizers;
use crate::spatial::io::{load_transform, save_transform};
use crate::spatial::{
    jacobian_determinant, warp, BSpline, Composite, Linear, LinearKind, Svf, Transform, WarpInterpolation,
};

fn centre(o: &Opts) -> RhaiResult<[f64; 3]> {
    if let Some(g) = o.grid("about")? {
        return Ok(g.centre());
    }
    Ok(o.vec3("centre")?.unwrap_or([0.0; 3]))
}

fn linear(kind: LinearKind, params: &Dynamic, o: &Opts) -> RhaiResult<TransformValue> {
    let func = o.func();
    let p = numbers(params).ok_or_else(|| arg_error(func, "params must be a list of numbers"))?;
    if p.len() != kind.num_params() {
        return Err(arg_error(func, format!("{} parameters expected, got {}", kind.num_params(), p.len())));
    }
    Linear::from_params(kind, &p, centre(o)?).host().map(TransformValue::linear)
}

fn not_linear(t: &TransformValue, what: &str) -> Box<rhai::EvalAltResult> {
    HostError::new(
        "regsh::dsl::not_linear",
        format!("{what} of a {} transform: only linear transforms have one", t.inner.name()),
    )
    .into_rhai()
}

/// The 4x4 world matrix (rows) of a linear transform.
fn matrix(t: &TransformValue) -> RhaiResult<Array> {
    let m = t.inner.linear_matrix().host()?.ok_or_else(|| not_linear(t, "matrix"))?;
    Ok(rows((0..4).map(|r| [m[(r, 0)], m[(r, 1)], m[(r, 2)], m[(r, 3)]])))
}

/// `a` then `b` on points.
pub fn compose(a: &TransformValue, b: &TransformValue) -> TransformValue {
    TransformValue::other(Arc::new(Composite::new(vec![a.inner.clone(), b.inner.clone()])))
}

fn inverse(t: &TransformValue) -> RhaiResult<TransformValue> {
    let inv = t.inner.inverse().host()?;
    Ok(TransformValue::other(inv))
}

fn onto(d: &Dynamic, func: &str) -> RhaiResult<Grid> {
    grid_of(d).ok_or_else(|| arg_error(func, "onto must be an image or a grid"))
}

/// Warps `img` through `t` onto `g` with the `interpolation` / `padding` options.
pub fn warp_with(img: &Image, t: &dyn Transform, g: &Grid, o: &Opts) -> RhaiResult<Image> {
    let interp =
        o.string("interpolation")?.map(|s| WarpInterpolation::parse(&s)).transpose().host_key("interpolation")?;
    let padding = o.string("padding")?.map(|s| Padding::parse(&s)).transpose().host_key("padding")?;
    warp(img, t, g, interp.unwrap_or(WarpInterpolation::Linear), padding.unwrap_or(Padding::Zero)).host()
}

/// Registers the transform type and builtins.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<TransformValue>("Transform")
        .register_get("kind", |t: &mut TransformValue| t.inner.name())
        .register_get("params", |t: &mut TransformValue| -> RhaiResult<Array> {
            let l = t.linear.as_ref().ok_or_else(|| not_linear(t, "params"))?;
            Ok(floats(l.param_values().host()?))
        })
        .register_get("centre", |t: &mut TransformValue| -> RhaiResult<Array> {
            let l = t.linear.as_ref().ok_or_else(|| not_linear(t, "centre"))?;
            Ok(floats(l.centre()))
        })
        .register_get("matrix", |t: &mut TransformValue| matrix(t))
        .register_fn("compose", |a: &mut TransformValue, b: TransformValue| compose(a, &b))
        .register_fn("inverse", |t: &mut TransformValue| inverse(t))
        .register_fn("to_string", |t: &mut TransformValue| t.to_string())
        .register_fn("to_debug", |t: &mut TransformValue| t.to_string());
    engine.register_fn("compose", |a: TransformValue, b: TransformValue| compose(&a, &b));
    engine.register_fn("inverse", |t: TransformValue| inverse(&t));

    with_opts!(engine, "affine", | | o => Ok(TransformValue::linear(Linear::identity(LinearKind::Affine, centre(&o)?))));
    with_opts!(engine, "affine", |p: Array| o => linear(LinearKind::Affine, &p.into(), &o));
    with_opts!(engine, "rigid", |p: Array| o => linear(LinearKind::Rigid, &p.into(), &o));
    engine
        .register_fn("translation", |p: Array| linear(LinearKind::Translation, &p.into(), &Opts::none("translation")));
    with_opts!(engine, "svf", |on: Dynamic| o => {
        let g = onto(&on, "svf")?;
        let steps = o.usize("steps")?.unwrap_or(7);
        let [z, y, x] = g.zyx();
        let v = Tensor::zeros((3, z, y, x), DType::F32, &Device::Cpu).map_err(crate::Error::from).host()?;
        Ok(TransformValue::other(Arc::new(Svf::new(v, g, steps).host()?)))
    });
    with_opts!(engine, "bspline", |on: Dynamic| o => {
        let g = onto(&on, "bspline")?;
        let spacing = o.vec3("spacing")?.unwrap_or([10.0; 3]);
        Ok(TransformValue::other(Arc::new(BSpline::zeros(g, spacing).host_key("spacing")?)))
    });
    engine.register_fn("load_transform", |path: &str| -> RhaiResult<TransformValue> {
        let t = load_transform(path).host()?;
        // A linear file comes back as a linear transform with params.
        match t.linear_matrix().host()? {
            Some(m) => {
                let l = crate::spatial::linear::from_world_matrix(&m).host()?;
                Ok(TransformValue { inner: t, linear: Some(l) })
            }
            None => Ok(TransformValue::other(t)),
        }
    });
    with_opts!(engine, "save_transform", |t: TransformValue, path: &str| o => {
        let c = t.linear.as_ref().map(|l| l.centre()).unwrap_or([0.0; 3]);
        let g = o.grid("grid")?;
        save_transform(t.inner.as_ref(), Path::new(path), c, g.as_ref()).host()
    });
    with_opts!(engine, "warp", |img: Image, t: TransformValue, on: Dynamic| o => {
        let g = onto(&on, "warp")?;
        warp_with(&img, t.inner.as_ref(), &g, &o)
    });
    engine.register_fn("jacobian", |t: TransformValue, on: Dynamic| -> RhaiResult<Image> {
        jacobian_determinant(t.inner.as_ref(), &onto(&on, "jacobian")?).host()
    });
    engine.register_fn("folding", |t: TransformValue, on: Dynamic| -> RhaiResult<f64> {
        let g = onto(&on, "folding")?;
        let f = (|| -> crate::Result<f64> {
            let u = t.inner.displacement_on(&g)?;
            Ok(regularizers::folding(&u, &g)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
        })();
        f.host()
    });
}
