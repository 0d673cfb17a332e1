//! Images and grids: loading (through the session's cache), saving, resampling, smoothing,
//! normalization, crop / pad / threshold, getters, arithmetic and comparison masks.

use std::sync::Arc;

use candle_core::DType;
use rhai::{Array, Dynamic, Engine, Map};

use super::{floats, ints, rows, with_opts};
use crate::dsl::help::{o, Help};
use crate::dsl::options::{arg_error, grid_of, num, vec3, whole, OrHost, RhaiResult};
use crate::dsl::Host;
use crate::error::Error;
use crate::image::io::{save_with, SaveOptions};
use crate::image::ops::{crop, normalize, pad, threshold, Normalization};
use crate::image::resample::{resample, Interpolation, Padding};
use crate::image::smooth::{pyramid, smooth, SigmaUnit};
use crate::image::{DataType, Grid, Image};

/// Grid tolerance (mm) for voxel-wise operations on two images.
const GRID_TOL: f64 = 1e-4;

fn stats(i: &Image) -> RhaiResult<crate::image::Stats> {
    i.stats().host()
}

/// `a op b` voxel by voxel, for images on the same grid (float32 result).
fn binary(a: &Image, b: &Image, op: &str) -> crate::Result<Image> {
    if !a.grid().same_as(b.grid(), GRID_TOL) || a.channels() != b.channels() {
        return Err(Error::Shape {
            op: format!("image {op} image"),
            expected: format!("{} channel(s) on {}", a.channels(), a.grid()),
            actual: format!("{} channel(s) on {}", b.channels(), b.grid()),
        });
    }
    let (x, y) = (a.data().to_dtype(DType::F32)?, b.data().to_dtype(DType::F32)?);
    let d = match op {
        "+" => (x + y)?,
        "-" => (x - y)?,
        "*" => (x * y)?,
        _ => (x / y)?,
    };
    a.with_data(d)
}

/// `a * mul + add` voxel by voxel (float32 result).
fn affine(a: &Image, mul: f64, add: f64) -> crate::Result<Image> {
    a.with_data(a.data().to_dtype(DType::F32)?.affine(mul, add)?)
}

/// A 0 / 1 mask (uint8) of `value op x`.
fn compare(a: &Image, x: f64, op: &str) -> crate::Result<Image> {
    let d = a.data();
    let m = match op {
        ">" => d.gt(x)?,
        ">=" => d.ge(x)?,
        "<" => d.lt(x)?,
        _ => d.le(x)?,
    };
    Ok(a.with_data(m.to_dtype(DType::F32)?)?.with_dtype(DataType::Uint8))
}

/// The map `info(image)` returns.
pub fn info_map(i: &Image) -> RhaiResult<Map> {
    let g = i.grid();
    let s = stats(i)?;
    let mut m = Map::new();
    m.insert("shape".into(), ints(g.shape()).into());
    m.insert("spacing".into(), floats(g.spacing()).into());
    m.insert("origin".into(), floats(g.origin()).into());
    m.insert("direction".into(), direction(g).into());
    m.insert("orientation".into(), g.orientation().into());
    m.insert("dtype".into(), i.dtype().name().into());
    m.insert("channels".into(), (i.channels() as i64).into());
    m.insert("min".into(), s.min.into());
    m.insert("max".into(), s.max.into());
    m.insert("mean".into(), s.mean.into());
    Ok(m)
}

fn direction(g: &Grid) -> Array {
    let d = g.direction();
    rows((0..3).map(|r| [d[(r, 0)], d[(r, 1)], d[(r, 2)]]))
}

fn voxels3(d: &Dynamic, func: &str, what: &str) -> RhaiResult<[usize; 3]> {
    let v = vec3(d).ok_or_else(|| arg_error(func, format!("{what} must be a number or [x, y, z] voxels")))?;
    let w = v.map(whole);
    match w {
        [Some(a), Some(b), Some(c)] => Ok([a, b, c]),
        _ => Err(arg_error(func, format!("{what} must be whole numbers of voxels >= 0, got {v:?}"))),
    }
}

/// The finite voxel values of `img` (every channel) inside `mask` (non-zero voxels of a one-channel
/// image on the same grid; `None`: all voxels), for the reductions `max`, `mean`, `percentile`, ...
fn reduced(img: &Image, mask: Option<&Image>, func: &str) -> RhaiResult<Vec<f64>> {
    let v = img.to_vec_f64().host()?;
    let Some(m) = mask else {
        return Ok(v.into_iter().filter(|x| x.is_finite()).collect());
    };
    if m.channels() != 1 || !m.grid().same_as(img.grid(), GRID_TOL) {
        return Err(arg_error(
            func,
            format!(
                "the mask must be one channel on the image's grid ({}), got {} channel(s) on {}",
                img.grid(),
                m.channels(),
                m.grid()
            ),
        ));
    }
    let mv = m.to_vec_f64().host()?;
    let n = mv.len();
    Ok(v.into_iter().enumerate().filter(|(i, x)| x.is_finite() && mv[i % n] != 0.0).map(|(_, x)| x).collect())
}

/// A reduction of finite voxel values; NaN when there is none (as numpy's nan-functions warn and give).
fn reduce(v: &[f64], how: &str) -> f64 {
    if v.is_empty() {
        return if how == "sum" { 0.0 } else { f64::NAN };
    }
    let n = v.len() as f64;
    match how {
        "max" => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "min" => v.iter().copied().fold(f64::INFINITY, f64::min),
        "sum" => v.iter().sum(),
        "mean" => v.iter().sum::<f64>() / n,
        // Population standard deviation (numpy's default, ddof = 0), two passes.
        _ => {
            let mean = v.iter().sum::<f64>() / n;
            (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
        }
    }
}

/// Registers `name(img)` and `name(img, mask)` for a reduction.
fn register_reduction(engine: &mut Engine, name: &'static str) {
    engine.register_fn(name, move |img: Image| -> RhaiResult<f64> { Ok(reduce(&reduced(&img, None, name)?, name)) });
    engine.register_fn(name, move |img: Image, mask: Image| -> RhaiResult<f64> {
        Ok(reduce(&reduced(&img, Some(&mask), name)?, name))
    });
}

/// `percentile(img, q[, mask])`: numpy's default (linear) interpolation; NaN with no finite voxel.
fn percentile_of(img: &Image, q: f64, mask: Option<&Image>) -> RhaiResult<f64> {
    if !(0.0..=100.0).contains(&q) {
        return Err(arg_error("percentile", format!("q must be in [0, 100], got {q}")));
    }
    Ok(crate::image::ops::percentile(&reduced(img, mask, "percentile")?, q).unwrap_or(f64::NAN))
}

/// Registers the image and grid types and builtins.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    for name in ["max", "min", "mean", "sum", "std"] {
        register_reduction(engine, name);
    }
    engine.register_fn("percentile", |img: Image, q: f64| percentile_of(&img, q, None));
    engine.register_fn("percentile", |img: Image, q: i64| percentile_of(&img, q as f64, None));
    engine.register_fn("percentile", |img: Image, q: f64, mask: Image| percentile_of(&img, q, Some(&mask)));
    engine.register_fn("percentile", |img: Image, q: i64, mask: Image| percentile_of(&img, q as f64, Some(&mask)));
    engine
        .register_type_with_name::<Image>("Image")
        .register_get("shape", |i: &mut Image| ints(i.grid().shape()))
        .register_get("spacing", |i: &mut Image| floats(i.grid().spacing()))
        .register_get("origin", |i: &mut Image| floats(i.grid().origin()))
        .register_get("direction", |i: &mut Image| direction(i.grid()))
        .register_get("dtype", |i: &mut Image| i.dtype().name().to_string())
        .register_get("channels", |i: &mut Image| i.channels() as i64)
        .register_get("grid", |i: &mut Image| i.grid().clone())
        .register_get("min", |i: &mut Image| stats(i).map(|s| s.min))
        .register_get("max", |i: &mut Image| stats(i).map(|s| s.max))
        .register_get("mean", |i: &mut Image| stats(i).map(|s| s.mean))
        .register_fn("value", |i: &mut Image, x: i64, y: i64, z: i64| -> RhaiResult<f64> {
            let ijk = [x, y, z].map(|v| usize::try_from(v).unwrap_or(usize::MAX));
            i.value_at(0, ijk).host()
        })
        .register_fn("to_string", |i: &mut Image| i.to_string())
        .register_fn("to_debug", |i: &mut Image| i.to_string())
        .register_fn("grid", |i: Image| i.grid().clone());
    engine
        .register_type_with_name::<Grid>("Grid")
        .register_get("shape", |g: &mut Grid| ints(g.shape()))
        .register_get("spacing", |g: &mut Grid| floats(g.spacing()))
        .register_get("origin", |g: &mut Grid| floats(g.origin()))
        .register_get("direction", |g: &mut Grid| direction(g))
        .register_get("centre", |g: &mut Grid| floats(g.centre()))
        .register_fn("downsampled", |g: &mut Grid, f: f64| g.downsampled(f).host())
        .register_fn("downsampled", |g: &mut Grid, f: i64| g.downsampled(f as f64).host())
        .register_fn("to_string", |g: &mut Grid| g.to_string())
        .register_fn("to_debug", |g: &mut Grid| g.to_string());

    let h = host.clone();
    engine.register_fn("load", move |path: &str| h.load(path).host());
    with_opts!(engine, "save", |img: Image, path: &str| o => {
        let dtype = o.string("dtype")?.map(|d| DataType::parse(&d)).transpose().host_key("dtype")?;
        let overwrite_input = o.bool("overwrite")?.unwrap_or(false);
        save_with(&img, path, &SaveOptions { dtype, overwrite_input, vector: false }).host()
    });
    engine.register_fn("info", |img: Image| info_map(&img));
    with_opts!(engine, "resample", |img: Image, onto: Dynamic| o => {
        let g = grid_of(&onto).ok_or_else(|| arg_error("resample", "onto must be an image or a grid"))?;
        let interp = o.string("interpolation")?.map(|s| Interpolation::parse(&s)).transpose().host_key("interpolation")?;
        let padding = o.string("padding")?.map(|s| Padding::parse(&s)).transpose().host_key("padding")?;
        resample(&img, &g, interp.unwrap_or(Interpolation::Linear), padding.unwrap_or(Padding::Zero)).host()
    });
    with_opts!(engine, "smooth", |img: Image, sigma: Dynamic| o => {
        let s = vec3(&sigma).ok_or_else(|| arg_error("smooth", "sigma must be a number or [x, y, z]"))?;
        let unit = match o.string("unit")?.as_deref() {
            None => SigmaUnit::Mm,
            Some(u) => crate::names::lookup("unit", u, &[("mm", SigmaUnit::Mm), ("voxels", SigmaUnit::Voxels), ("vox", SigmaUnit::Voxels)]).host_key("unit")?,
        };
        smooth(&img, s, unit).host()
    });
    with_opts!(engine, "downsample", |img: Image, factor: Dynamic| o => {
        let f = num(&factor).filter(|f| f.is_finite() && *f >= 1.0).ok_or_else(|| arg_error("downsample", "factor must be a number >= 1"))?;
        let sigma = o.f64("sigma")?;
        if sigma.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
            return Err(arg_error("downsample", "sigma must be >= 0 voxels"));
        }
        let sigmas = sigma.map(|s| vec![s]);
        Ok(pyramid(&img, &[f], sigmas.as_deref()).host()?.remove(0).image)
    });
    with_opts!(engine, "normalize", |img: Image| o => {
        let mut method = o.string("method")?.map(|m| Normalization::parse(&m)).transpose().host_key("method")?.unwrap_or(Normalization::MinMax);
        if let Normalization::Percentile { lo, hi } = &mut method {
            *lo = o.f64("lo")?.unwrap_or(*lo);
            *hi = o.f64("hi")?.unwrap_or(*hi);
        }
        normalize(&img, method, o.image("mask")?.as_ref()).host()
    });
    engine.register_fn("crop", |img: Image, start: Dynamic, size: Dynamic| -> RhaiResult<Image> {
        crop(&img, voxels3(&start, "crop", "start")?, voxels3(&size, "crop", "size")?).host()
    });
    with_opts!(engine, "pad", |img: Image, before: Dynamic, after: Dynamic| o => {
        let value = o.f64("value")?.unwrap_or(0.0);
        pad(&img, voxels3(&before, "pad", "before")?, voxels3(&after, "pad", "after")?, value).host()
    });
    with_opts!(engine, "pad", |img: Image, both: Dynamic| o => {
        let n = voxels3(&both, "pad", "the padding")?;
        pad(&img, n, n, o.f64("value")?.unwrap_or(0.0)).host()
    });
    with_opts!(engine, "gradient_magnitude", |img: Image| o => {
        crate::image::ops::gradient_magnitude(&img, o.f64("sigma")?.unwrap_or(0.0)).host()
    });
    engine.register_fn("threshold", |img: Image, lo: Dynamic, hi: Dynamic| -> RhaiResult<Image> {
        let (lo, hi) = (num(&lo), num(&hi));
        match (lo, hi) {
            (Some(l), Some(h)) => threshold(&img, l, h).host(),
            _ => Err(arg_error("threshold", "lo and hi must be numbers")),
        }
    });

    // Arithmetic: image with image (one grid), image with number, number with image.
    for op in ["+", "-", "*", "/"] {
        engine.register_fn(op, move |a: Image, b: Image| binary(&a, &b, op).host());
        let scalar = move |a: &Image, x: f64, image_left: bool| -> RhaiResult<Image> {
            match (op, image_left) {
                ("+", _) => affine(a, 1.0, x),
                ("-", true) => affine(a, 1.0, -x),
                ("-", false) => affine(a, -1.0, x),
                ("*", _) => affine(a, x, 0.0),
                ("/", true) => affine(a, 1.0 / x, 0.0),
                _ => a
                    .data()
                    .to_dtype(DType::F32)
                    .and_then(|d| d.recip())
                    .map_err(Error::from)
                    .and_then(|d| a.with_data(d))
                    .and_then(|r| affine(&r, x, 0.0)),
            }
            .host()
        };
        engine.register_fn(op, move |a: Image, x: f64| scalar(&a, x, true));
        engine.register_fn(op, move |a: Image, x: i64| scalar(&a, x as f64, true));
        engine.register_fn(op, move |x: f64, a: Image| scalar(&a, x, false));
        engine.register_fn(op, move |x: i64, a: Image| scalar(&a, x as f64, false));
    }
    engine.register_fn("-", |a: Image| affine(&a, -1.0, 0.0).host());
    for op in [">", ">=", "<", "<="] {
        engine.register_fn(op, move |a: Image, x: f64| compare(&a, x, op).host());
        engine.register_fn(op, move |a: Image, x: i64| compare(&a, x as f64, op).host());
    }
}

/// The help of the image builtins (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    Help {
        name: "max",
        domain: "image",
        signature: "max(image) -> float; max(image, mask) -> float   (also image.max()); max(tensor) -> Tensor (all elements, or along dim=; differentiable)",
        summary: "The largest finite voxel value (every channel), inside `mask` if given; NaN when there is none",
        options: &crate::dsl::api::tensor::REDUCE,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(t1.max() == 1.0 && max(t1) == t1.max, \"a method, a function, and the property of the same value\");\nlet brain = t1 > 0.5;\nassert(t1.max(brain) == 1.0 && t1.min(brain) > 0.5, \"inside a mask\");\nassert(tensor([[1, 5], [7, 2]]).max(dim=1).to_array() == [5.0, 7.0], \"a tensor along a dim\");",
    },
    Help {
        name: "min",
        domain: "image",
        signature: "min(image) -> float; min(image, mask) -> float   (also image.min()); min(tensor) -> Tensor (all elements, or along dim=; differentiable)",
        summary: "The smallest finite voxel value (every channel), inside `mask` if given; NaN when there is none",
        options: &crate::dsl::api::tensor::REDUCE,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(t1.min() == 0.0, \"the background\");\nassert(t1.min(t1 > 0.5) > 0.5, \"inside a mask: only voxels above the threshold\");\nassert(tensor([[1, 5], [7, 2]]).min().item() == 1.0, \"a tensor\");",
    },
    Help {
        name: "mean",
        domain: "image",
        signature: "mean(image) -> float; mean(image, mask) -> float   (also image.mean()); mean(tensor) -> Tensor (all elements, or along dim=; differentiable)",
        summary: "The mean of the finite voxel values (every channel), inside `mask` if given; NaN when there is none",
        options: &crate::dsl::api::tensor::REDUCE,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(abs(t1.mean() - t1.sum() / (91 * 109 * 91)) < 1e-9, \"sum over the voxel count\");\nlet brain = t1 > 0.5;\nassert(t1.mean(brain) > t1.mean(), \"the brain is brighter than the whole image\");\nassert(abs(t1.tensor.mean().item() - t1.mean()) < 1e-3 * t1.mean(), \"the tensor of an image: a differentiable mean (f32 sums)\");\nassert(tensor([[1, 3], [5, 7]]).mean(dim=0, keepdim=true).shape == [1, 2], \"keepdim\");",
    },
    Help {
        name: "sum",
        domain: "image",
        signature: "sum(image) -> float; sum(image, mask) -> float   (also image.sum()); sum(tensor) -> Tensor (all elements, or along dim=; differentiable)",
        summary: "The sum of the finite voxel values (every channel), inside `mask` if given; 0 when there is none",
        options: &crate::dsl::api::tensor::REDUCE,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet brain = t1 > 0.5;\nassert(abs(brain.sum() - brain.mean() * 91 * 109 * 91) < 1e-6, \"a mask's sum counts its voxels\");\nassert(abs(t1.sum(brain) + t1.sum(1.0 - brain) - t1.sum()) < 1e-6 * t1.sum(), \"a mask and its complement split the sum\");\nassert(tensor([[1, 2], [3, 4]]).sum(dim=-1).to_array() == [3.0, 7.0], \"a tensor along its last dim\");",
    },
    Help {
        name: "std",
        domain: "image",
        signature: "std(image) -> float; std(image, mask) -> float   (also image.std()); std(tensor) -> Tensor (all elements, or along dim=; differentiable)",
        summary: "The standard deviation (population, numpy's default ddof 0) of the finite voxel values, inside `mask` if given; NaN when there is none",
        options: &crate::dsl::api::tensor::REDUCE_VAR,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet m = t1.mean();\nassert(abs(t1.std() - sqrt(((t1 - m) * (t1 - m)).mean())) < 1e-6, \"the root mean squared deviation\");\nassert((t1 * 2.0).std() > 1.99 * t1.std(), \"scales with the image\");\nassert(abs(tensor([1, 2, 3, 4]).std().item() - sqrt(5.0 / 3.0)) < 1e-6, \"a tensor: unbiased, as in PyTorch\");\nassert(abs(t1.tensor.std(unbiased=false).item() - t1.std()) < 1e-4, \"population, as the image\");",
    },
    Help {
        name: "percentile",
        domain: "image",
        signature: "percentile(image, q) -> float; percentile(image, q, mask) -> float   (q in 0-100; also image.percentile(q))",
        summary: "The q-th percentile of the finite voxel values (every channel), inside `mask` if given, with numpy's default linear interpolation between ranks; NaN when there is none",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(t1.percentile(0) == t1.min() && t1.percentile(100.0) == t1.max(), \"the ends are the extremes\");\nlet brain = t1 > 0.5;\nlet p = t1.percentile(50, brain);\nassert(p > 0.5 && p < 1.0, \"the median inside the brain\");",
    },
    Help {
        name: "load",
        domain: "image",
        signature: "load(path) -> Image",
        summary: "Read a NIfTI image (.nii, .nii.gz, .hdr/.img); a session caches it by path and modification time",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(t1.shape == [91, 109, 91], \"avg152 is 91 x 109 x 91\");\nassert(t1.spacing == [2.0, 2.0, 2.0], \"2 mm voxels\");",
    },
    Help {
        name: "save",
        domain: "image",
        signature: "save(image, path)",
        summary: "Write an image as NIfTI (atomically; never over a loaded input unless overwrite=true)",
        options: &[
            o("dtype", "the image's", "datatype on disk: uint8, int16, float32, ..."),
            o("overwrite", "false", "allow replacing a file loaded as an input"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nsave(t1 * 0.5, \"target/dsl_help_save.nii.gz\", dtype=\"float32\");\nlet back = load(\"target/dsl_help_save.nii.gz\");\nassert(back.dtype == \"float32\", \"saved as float32\");\nassert(abs(back.max - t1.max * 0.5) < 1e-3, \"values kept\");",
    },
    Help {
        name: "info",
        domain: "image",
        signature: "info(image) -> map",
        summary: "Grid, datatype and value statistics of an image as a map (shape, spacing, origin, direction, orientation, dtype, channels, min, max, mean)",
        options: &[],
        example: "let i = info(load(\"data/avg152/avg152T1.nii\"));\nassert(i.shape == [91, 109, 91] && i.orientation == \"LAS\", \"grid\");\nassert(i.dtype == \"float32\" && i.min == 0.0 && i.max == 1.0, \"uint8 on disk, scaled to [0, 1] by the header\");",
    },
    Help {
        name: "resample",
        domain: "image",
        signature: "resample(image, onto) -> Image   (onto: an image or a grid)",
        summary: "Resample an image onto another grid through world space",
        options: &[
            o("interpolation", "linear", "linear or nearest"),
            o("padding", "zero", "outside the image: zero or border"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet small = resample(t1, t1.grid.downsampled(2.0));\nassert(small.shape == [46, 55, 46], \"half the voxels per axis\");\nassert(abs(small.spacing[0] - 2.0 * 91.0 / 46.0) < 1e-9, \"the same extent\");",
    },
    Help {
        name: "smooth",
        domain: "image",
        signature: "smooth(image, sigma) -> Image   (sigma: a number or [x, y, z])",
        summary: "Gaussian smoothing (separable, border replicated, cut at 4 sigma)",
        options: &[o("unit", "mm", "unit of sigma: mm or voxels")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet s = smooth(t1, 4.0);\nassert(abs(s.mean - t1.mean) < 0.01, \"smoothing keeps the mean\");\nassert(s.max < t1.max, \"and lowers the peaks\");",
    },
    Help {
        name: "downsample",
        domain: "image",
        signature: "downsample(image, factor) -> Image",
        summary: "A pyramid level: the image smoothed with a Gaussian (sigma factor / 3 voxels of the input by default, as iso's levels; none at factor 1) and resampled trilinearly onto grid.downsampled(factor), the same field of view and centre",
        options: &[o("sigma", "factor / 3", "Gaussian sigma, voxels of the input (0: no smoothing)")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet h = downsample(t1, 2);\nassert(h.shape == [46, 55, 46] && h.grid.shape == t1.grid.downsampled(2).shape, \"a level of half the voxels\");\nassert(abs(h.mean - t1.mean) < 0.02 * t1.max, \"the same intensities, smoothed\");",
    },
    Help {
        name: "normalize",
        domain: "image",
        signature: "normalize(image) -> Image",
        summary: "Intensity normalization: min-max to [0, 1], percentiles clipped to [0, 1], or z-score",
        options: &[
            o("method", "minmax", "minmax, percentile or zscore"),
            o("lo", "1", "lower percentile (0-100) for method=\"percentile\""),
            o("hi", "99", "upper percentile (0-100) for method=\"percentile\""),
            o("mask", "-", "statistics over the non-zero voxels of this image only"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = normalize(t1);\nassert(n.min == 0.0 && n.max == 1.0, \"min-max\");\nlet z = normalize(t1, method=\"zscore\");\nassert(abs(z.mean) < 1e-4, \"z-score has mean 0\");",
    },
    Help {
        name: "crop",
        domain: "image",
        signature: "crop(image, start, size) -> Image   (voxels, [x, y, z])",
        summary: "Crop to a box of voxels; kept voxels keep their world positions",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet c = crop(t1, [10, 20, 30], [40, 50, 20]);\nassert(c.shape == [40, 50, 20], \"box size\");\nassert(c.origin[1] == t1.origin[1] + 40.0, \"origin moved by 20 voxels of 2 mm along y\");",
    },
    Help {
        name: "pad",
        domain: "image",
        signature: "pad(image, before, after) -> Image; pad(image, both) -> Image   (voxels: a number or [x, y, z])",
        summary: "Pad with a constant; original voxels keep their world positions",
        options: &[o("value", "0", "the padding value")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet p = pad(t1, 2, [0, 1, 3], value=-1);\nassert(p.shape == [93, 112, 96], \"padded shape\");\nassert(p.min == -1.0, \"padding value\");",
    },
    Help {
        name: "gradient_magnitude",
        domain: "image",
        signature: "gradient_magnitude(image) -> Image",
        summary: "|grad I| in intensity per mm (central differences, one-sided at the borders), after a Gaussian of sigma mm; Sedghi et al. register T2 against the gradient magnitude of T1",
        options: &[o("sigma", "0", "Gaussian smoothing first, mm")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet g = gradient_magnitude(t1, sigma=1.0);\nassert(g.shape == t1.shape && g.min >= 0.0, \"same grid, non-negative\");\nassert(gradient_magnitude(t1 * 0.0 + 5.0).max == 0.0, \"a constant has none\");",
    },
    Help {
        name: "threshold",
        domain: "image",
        signature: "threshold(image, lo, hi) -> Image",
        summary: "A 0 / 1 mask of the voxels with lo <= value <= hi (see also img > x)",
        options: &[],
        example: "let b = threshold(load(\"data/avg152/brainmask.nii\"), 0.5, 1e9);\nassert(b.max == 1.0 && b.min == 0.0, \"a mask\");\nassert(b.mean > 0.1 && b.mean < 0.5, \"the brain fills part of the box\");",
    },
    Help {
        name: "grid",
        domain: "image",
        signature: "grid(image) -> Grid   (also image.grid)",
        summary: "The image's grid: shape, spacing (mm), origin (mm), direction; grid.downsampled(f)",
        options: &[],
        example: "let g = grid(load(\"data/avg152/avg152T1.nii\"));\nassert(g.shape == [91, 109, 91] && g.spacing == [2.0, 2.0, 2.0], \"grid\");\nassert(g.direction[0][0] == -1.0, \"x runs right to left (LAS)\");",
    },
    Help {
        name: "value",
        domain: "image",
        signature: "image.value(x, y, z) -> float   (voxel indices)",
        summary: "The value of channel 0 at a voxel (x, y, z indices from 0, as NIfTI orders them)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(t1.value(45, 54, 45) > 0.3, \"brain at the centre\");\nassert(t1.value(0, 0, 0) < 0.1, \"dark in the corner\");",
    },
    Help {
        name: "downsampled",
        domain: "image",
        signature: "grid.downsampled(factor) -> Grid",
        summary: "The same field of view with about `factor` times fewer voxels per axis (a pyramid level's grid)",
        options: &[],
        example: "let g = load(\"data/avg152/avg152T1.nii\").grid;\nlet h = g.downsampled(2);\nassert(h.shape == [46, 55, 46], \"half the voxels\");\nassert(abs(h.centre[0] - g.centre[0]) < 1e-9, \"the same centre\");",
    },
    Help {
        name: "operators",
        domain: "image",
        signature: "a + b, a - b, a * b, a / b, -a (images on one grid, or an image and a number); a > x, a >= x, a < x, a <= x -> mask; image op tensor, tensor op image -> Tensor",
        summary: "Voxel-wise arithmetic on images, and masks (0 / 1 uint8 images) from comparisons. With a tensor, the image is its data img.tensor (C, Z, Y, X), broadcast as tensors are, and the result a tensor (image(t, grid) makes it an image again)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet d = t1 * 2.0 - t1;\nassert(d.max == t1.max && d.mean == t1.mean, \"2a - a = a\");\nlet m = t1 > 0.5;\nassert(m.max == 1.0 && m.dtype == \"uint8\", \"a mask\");\nassert(abs((t1 + 1).mean - t1.mean - 1.0) < 1e-4, \"plus a number\");\nlet w = ones([1, 1, 1, 91]) * 2.0;\nlet p = t1 * w;\nassert(p.shape == [1, 91, 109, 91] && abs(p.sum().item() - 2.0 * t1.sum()) < 1e-2 * t1.sum(), \"an image times a tensor along x\");\nassert(image(t1 - t1.tensor, t1).max() == 0.0, \"back to an image\");",
    },
];
