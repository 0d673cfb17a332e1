//! Transforms: construction (affine, rigid, translation, svf, bspline), files, composition, inverse,
//! the warp, and the Jacobian determinant.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use rhai::{Array, Dynamic, Engine};

use super::{floats, rows, with_opts};
use crate::dsl::help::{o, Help};
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
        let v = Tensor::zeros((3, z, y, x), DType::F32, &crate::device::host()).map_err(crate::Error::from).host()?;
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

/// The help of the spatial builtins (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    Help {
        name: "affine",
        domain: "spatial",
        signature: "affine() -> Transform; affine(params) -> Transform   (12 params: tx ty tz mm, rx ry rz rad, sx sy sz, hxy hxz hyz)",
        summary: "A 12-parameter affine x' = M (x - c) + c + t, M = shear * scale * Rz Ry Rx (identity without params)",
        options: &[
            o("centre", "[0, 0, 0]", "centre of rotation and scaling, mm"),
            o("about", "-", "an image or grid whose centre is the centre"),
        ],
        example: "let a = affine([1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0]);\nassert(a.matrix[0][0] == 2.0 && a.matrix[0][3] == 1.0, \"x scaled by 2, moved by 1 mm\");\nassert(a.params.len() == 12, \"12 parameters\");",
    },
    Help {
        name: "rigid",
        domain: "spatial",
        signature: "rigid(params) -> Transform   (tx ty tz mm, rx ry rz rad)",
        summary: "A rigid transform (translation and Euler rotations about the centre)",
        options: &[o("centre", "[0, 0, 0]", "centre of rotation, mm"), o("about", "-", "an image or grid whose centre is the centre")],
        example: "let r = rigid([0.0, 0.0, 0.0, 0.0, 0.0, PI() / 2.0]);\nassert(abs(r.matrix[1][0] - 1.0) < 1e-6, \"rz = 90 degrees maps x to y\");\nassert(abs(r.inverse().matrix[0][1] - 1.0) < 1e-6, \"its inverse maps y to x\");",
    },
    Help {
        name: "translation",
        domain: "spatial",
        signature: "translation([tx, ty, tz]) -> Transform   (mm)",
        summary: "A translation in world mm (fixed points to moving points)",
        options: &[],
        example: "let t = translation([1.0, -2.0, 3.0]);\nassert(t.params == [1.0, -2.0, 3.0], \"params\");\nassert(compose(t, t).matrix[1][3] == -4.0, \"twice\");",
    },
    Help {
        name: "svf",
        domain: "spatial",
        signature: "svf(onto) -> Transform   (onto: an image or grid)",
        summary: "A zero stationary velocity field on a grid, integrated by scaling and squaring (deformable stages come later)",
        options: &[o("steps", "7", "scaling-and-squaring steps")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet v = svf(t1);\nassert(v.kind == \"svf\", \"an svf\");\nassert(folding(v, t1) == 0.0, \"the zero field does not fold\");",
    },
    Help {
        name: "bspline",
        domain: "spatial",
        signature: "bspline(onto) -> Transform   (onto: an image or grid)",
        summary: "A zero cubic B-spline free-form deformation on a grid's control lattice",
        options: &[o("spacing", "10", "control-point spacing, mm (a number or [x, y, z])")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet b = bspline(t1, spacing=20.0);\nassert(b.kind == \"bspline\", \"a bspline\");\nassert(jacobian(b, t1).min == 1.0, \"identity: det J = 1\");",
    },
    Help {
        name: "load_transform",
        domain: "spatial",
        signature: "load_transform(path) -> Transform",
        summary: "Read an ITK .tfm/.txt, ANTs .mat or displacement-field .nii(.gz) transform; \"[path,1]\" inverts",
        options: &[],
        example: "let a = translation([1.0, 2.0, 3.0]);\nsave_transform(a, \"target/dsl_help_t.tfm\");\nlet b = load_transform(\"target/dsl_help_t.tfm\");\nassert(abs(b.matrix[2][3] - 3.0) < 1e-6, \"round trip\");",
    },
    Help {
        name: "save_transform",
        domain: "spatial",
        signature: "save_transform(transform, path)",
        summary: "Write a transform: linear as ITK .tfm / ANTs .mat (LPS on disk), dense as a displacement field .nii.gz",
        options: &[o("grid", "-", "an image or grid to sample a dense transform on (needed for .nii / .nii.gz)")],
        example: "let r = rigid([2.0, 0.0, 0.0, 0.1, 0.0, 0.0], centre=[10.0, 0.0, 0.0]);\nsave_transform(r, \"target/dsl_help_r.mat\");\nlet back = load_transform(\"target/dsl_help_r.mat\");\nassert(abs(back.matrix[1][1] - r.matrix[1][1]) < 1e-6, \"same matrix\");",
    },
    Help {
        name: "compose",
        domain: "spatial",
        signature: "compose(a, b) -> Transform   (also a.compose(b))",
        summary: "The transform applying a then b to points: x -> b(a(x)) (the order of `regsh apply -t a -t b`)",
        options: &[],
        example: "let s = affine([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]);\nlet t = translation([1.0, 0.0, 0.0]);\nassert(compose(t, s).matrix[0][3] == 2.0, \"scale after the shift\");\nassert(compose(s, t).matrix[0][3] == 1.0, \"shift after the scale\");",
    },
    Help {
        name: "inverse",
        domain: "spatial",
        signature: "inverse(transform) -> Transform   (also t.inverse())",
        summary: "The inverse transform (exact for linear ones, fixed-point iteration for dense fields)",
        options: &[],
        example: "let a = affine([1.0, 2.0, 3.0, 0.1, 0.2, 0.3, 1.1, 0.9, 1.0, 0.05, 0.0, 0.0]);\nlet i = compose(a, inverse(a)).matrix;\nassert(abs(i[0][0] - 1.0) < 1e-5 && abs(i[0][3]) < 1e-4 && abs(i[1][2]) < 1e-5, \"a then its inverse is the identity\");",
    },
    Help {
        name: "warp",
        domain: "spatial",
        signature: "warp(image, transform, onto) -> Image; warp(state) -> Image",
        summary: "Resample a moving image through a transform onto a grid; warp(state) gives a registration's warped moving image",
        options: &[
            o("interpolation", "linear", "linear, nearest or label"),
            o("padding", "zero", "outside the moving image: zero or border"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet w = warp(t1, translation([0.0, 4.0, 0.0]), t1);\nassert(w.value(45, 50, 45) == t1.value(45, 52, 45), \"4 mm along y is 2 voxels\");",
    },
    Help {
        name: "jacobian",
        domain: "spatial",
        signature: "jacobian(transform, onto) -> Image",
        summary: "The Jacobian determinant of a transform at the voxels of a grid (det <= 0 marks folding)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet a = affine([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.5, 0.0, 0.0, 0.0]);\nassert(abs(jacobian(a, t1).mean - 3.0) < 1e-5, \"det = 2 * 1 * 1.5\");",
    },
    Help {
        name: "folding",
        domain: "metrics",
        signature: "folding(transform, onto) -> float",
        summary: "Folding penalty: the mean over the grid of relu(-det J) (0 without folding)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(folding(rigid([1.0, 2.0, 3.0, 0.1, 0.2, 0.3]), t1) == 0.0, \"a rigid map does not fold\");\nlet flip = affine([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);\nassert(abs(folding(flip, t1) - 1.0) < 1e-5, \"a reflection folds everywhere\");",
    },
];
