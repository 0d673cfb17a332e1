//! Similarity measures as values and as functions, and the evaluation measures.

use candle_core::Tensor;
use rhai::{Dynamic, Engine, Map};

use super::with_opts;
use crate::dsl::help::{o, Help, Opt};
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
const METRIC_OPTS: [Opt; 8] = [
    PARZEN[0],
    PARZEN[1],
    PARZEN[2],
    PARZEN[3],
    o("patch", "16", "patch side, voxels (patch measures)"),
    o("shifted", "true", "second pass moved by half a patch (cr_patch)"),
    o("window", "9", "box window side, voxels (lncc)"),
    o("gaussian", "-", "Gaussian window sigma, voxels (lncc)"),
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
        signature: "metric(name) -> Metric",
        summary: "A similarity measure by name (aliases, \"did you mean\") with options, to pass to iso / register",
        options: &METRIC_OPTS,
        example: "let m = metric(\"mi\", bins=48);\nassert(m.name == \"mi\" && m.to_string() == \"mi(bins=48, sigma=0.5)\", \"configured\");\nassert(metric(\"mse\").name == \"ssd\", \"an alias\");",
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
