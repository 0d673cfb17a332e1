//! Groupwise registration: the groupwise measures as values (`xmetric(classes=4)`, `ape()`, `cte()`,
//! `congealing()`, `gmm()`), `groupwise(images, ...)`, and the groupwise registration error `gre`.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, Map};

use super::optim::schedule_from;
use super::with_opts;
use crate::dsl::help::{o, Help, Opt};
use crate::dsl::options::{arg_error, grid_of, type_of, Opts, OrHost, RhaiResult};
use crate::dsl::value::TransformValue;
use crate::dsl::Host;
use crate::image::resample::Padding;
use crate::image::Image;
use crate::metrics::groupwise::{gre, GroupMetric};
use crate::optim::groupwise::{groupwise_linear, GroupwiseOptions};
use crate::optim::init::Init;
use crate::spatial::{warp, WarpInterpolation};
use crate::spatial::{LinearKind, Transform};

/// A groupwise measure from its name and the keyword arguments it takes.
fn group_metric(name: &str, o: &Opts) -> RhaiResult<GroupMetric> {
    let mut m = GroupMetric::new(name).host()?;
    if let Some(k) = o.usize("classes")? {
        m.classes = k;
    }
    if let Some(b) = o.usize("bins")? {
        m.bins = b;
    }
    if let Some(s) = o.f64("sigma")? {
        m.sigma = s;
    }
    m.check().host()?;
    Ok(m)
}

/// The `metric=` of `groupwise`: a groupwise measure value or its name (default X-CoReg).
fn metric_option(o: &Opts) -> RhaiResult<GroupMetric> {
    match o.get("metric") {
        None => GroupMetric::new("xmetric").host(),
        Some(d) => {
            if let Some(m) = d.clone().try_cast::<GroupMetric>() {
                return Ok(m);
            }
            if let Ok(s) = d.clone().into_string() {
                return GroupMetric::new(&s).host_key("metric");
            }
            Err(arg_error(
                "groupwise",
                format!("metric must be a groupwise measure (xmetric(), ape(), cte(), congealing(), gmm()) or its name, got {}", type_of(d)),
            ))
        }
    }
}

/// The images of an array. Errors: an item that is not an image (named by its index).
pub(crate) fn image_list(d: &Array, func: &str) -> RhaiResult<Vec<Image>> {
    d.iter()
        .enumerate()
        .map(|(i, x)| {
            x.clone()
                .try_cast::<Image>()
                .ok_or_else(|| arg_error(func, format!("item {i} is a {}, not an image", type_of(x))))
        })
        .collect()
}

/// The transforms of an array.
fn transform_list(d: &Array, func: &str, what: &str) -> RhaiResult<Vec<TransformValue>> {
    d.iter()
        .enumerate()
        .map(|(i, x)| {
            x.clone()
                .try_cast::<TransformValue>()
                .ok_or_else(|| arg_error(func, format!("{what}: item {i} is a {}, not a transform", type_of(x))))
        })
        .collect()
}

fn groupwise_impl(host: &Host, images: &Array, o: &Opts) -> RhaiResult<Map> {
    let images = image_list(images, "groupwise")?;
    let metric = metric_option(o)?;
    let grid = match o.get("grid") {
        None => images.first().map(|i| i.grid().clone()).ok_or_else(|| arg_error("groupwise", "no images"))?,
        Some(d) => grid_of(d)
            .ok_or_else(|| arg_error("groupwise", format!("grid must be an image or a grid, got {}", type_of(d))))?,
    };
    let kind = LinearKind::parse(&o.string("transform")?.unwrap_or_else(|| "rigid".into())).host_key("transform")?;
    let opts = GroupwiseOptions {
        kind,
        schedule: schedule_from(o, 3)?,
        points: o.usize("points")?.unwrap_or(10_000),
        seed: o.usize("seed")?.unwrap_or(0) as u64,
        cancel: Some(host.cancel.clone()),
        init: Init::parse(&o.string("init")?.unwrap_or_else(|| "moments".into())).host_key("init")?,
        polish: {
            let points = o.usize("polish")?.unwrap_or(50_000);
            let iterations = o.usize("polish_iterations")?.unwrap_or(20);
            (points > 0 && iterations > 0).then_some(crate::optim::Polish { points, iterations })
        },
    };
    let r = groupwise_linear(&images, &grid, &metric, &opts).host()?;
    let warped: Array = images
        .iter()
        .zip(&r.transforms)
        .map(|(im, t)| warp(im, t, &r.grid, WarpInterpolation::Linear, Padding::Zero).map(Dynamic::from))
        .collect::<crate::Result<_>>()
        .host()?;
    let mut out = Map::new();
    out.insert(
        "transforms".into(),
        r.transforms.iter().map(|t| Dynamic::from(TransformValue::linear(t.clone()))).collect::<Array>().into(),
    );
    out.insert("warped".into(), warped.into());
    out.insert("grid".into(), Dynamic::from(r.grid.clone()));
    out.insert("loss".into(), super::floats(r.levels.iter().map(|l| l.final_loss)).into());
    out.insert(
        "losses".into(),
        r.levels.iter().map(|l| Dynamic::from(super::floats(l.losses.iter().copied()))).collect::<Array>().into(),
    );
    out.insert("seconds".into(), Dynamic::from_float(r.seconds));
    out.insert("cancelled".into(), r.cancelled().into());
    out.insert("metric".into(), metric.to_string().into());
    out.insert("posterior".into(), r.posterior.map_or(Dynamic::UNIT, Dynamic::from));
    Ok(out)
}

fn gre_impl(transforms: &Array, truths: &Array, on: &Dynamic, o: &Opts) -> RhaiResult<f64> {
    let ts = transform_list(transforms, "gre", "transforms")?;
    let truths = transform_list(truths, "gre", "truths")?;
    let grid = grid_of(on)
        .ok_or_else(|| arg_error("gre", format!("the grid must be an image or a grid, got {}", type_of(on))))?;
    let mask = match o.image("mask")? {
        Some(m) if !m.grid().same_as(&grid, 1e-4) => {
            return Err(arg_error("gre", format!("the mask must be on the grid {grid}")));
        }
        Some(m) => Some(m.channel(0).host()?.to_vec_f32().host()?),
        None => None,
    };
    let a: Vec<&dyn Transform> = ts.iter().map(|t| t.inner.as_ref()).collect();
    let b: Vec<&dyn Transform> = truths.iter().map(|t| t.inner.as_ref()).collect();
    gre(&a, &b, &grid, mask.as_deref()).host()
}

/// Registers the groupwise measure type and builtins.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine
        .register_type_with_name::<GroupMetric>("GroupMetric")
        .register_fn("to_string", |m: &mut GroupMetric| m.to_string())
        .register_fn("to_debug", |m: &mut GroupMetric| m.to_string())
        .register_get("name", |m: &mut GroupMetric| m.name().to_string());
    with_opts!(engine, "xmetric", | | o => group_metric("xmetric", &o));
    with_opts!(engine, "ape", | | o => group_metric("ape", &o));
    with_opts!(engine, "cte", | | o => group_metric("cte", &o));
    with_opts!(engine, "congealing", | | o => group_metric("congealing", &o));
    with_opts!(engine, "gmm", | | o => group_metric("gmm", &o));
    let h = host.clone();
    with_opts!(engine, [h], "groupwise", |images: Array| o => groupwise_impl(&h, &images, &o));
    with_opts!(engine, "gre", |transforms: Array, truths: Array, on: Dynamic| o => gre_impl(&transforms, &truths, &on, &o));
}

const PARZEN_GROUP: [Opt; 2] = [
    o("bins", "32", "Parzen bins over each image's 0.5th to 99.5th percentile"),
    o("sigma", "0.5", "Parzen kernel sigma, bins (at most 7.5)"),
];

const GROUPWISE_OPTS: [Opt; 12] = [
    o("metric", "xmetric()", "groupwise measure: xmetric(...), ape(), cte(), congealing(), gmm() or a name"),
    o("transform", "rigid", "translation, rigid, similarity, affine (one per image)"),
    o("grid", "the first image's", "the common grid (an image or a grid), moved to centre on the group's mean centre unless init=\"identity\""),
    o("init", "moments", "identity (world coordinates as they are), centres (grid centres) or moments (intensity centres of mass): each image starts translated by its centre's offset from the group's mean"),
    o("scales", "3", "pyramid levels"),
    o("iterations", "100,..,60,40", "Adam iterations per level, coarse to fine"),
    o(
        "lr",
        "0.25*factor+0.25",
        "learning rate per level (one number for all), mm per step; rotations by lr / half-radius of the grid",
    ),
    o("sigmas", "factor-based", "Gaussian sigma per level, voxels of each image"),
    o("points", "10000", "random points of the common grid per iteration"),
    o("seed", "0", "seed of the point draws"),
    o(
        "polish",
        "50000",
        "points of a final L-BFGS refinement at the finest level (the model refitted there, then held); 0: none",
    ),
    o("polish_iterations", "20", "most L-BFGS iterations of the refinement"),
];

/// The help of the groupwise builtins (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    Help {
        name: "xmetric",
        domain: "metrics",
        signature: "xmetric() -> GroupMetric",
        summary: "X-metric (X-CoReg; Luo & Zhuang, seed 004): the sum over images of the mutual information between each image and a common latent anatomy of K classes, fitted by EM (posteriors, mixing weights and each image's class-conditional Parzen densities in closed form) before each gradient step on the transforms; cost O(K L N) per point",
        options: &[o("classes", "4", "latent classes K (tissues)"), PARZEN_GROUP[0], PARZEN_GROUP[1]],
        example: "let x = xmetric(classes=3);\nassert(x.to_string() == \"xmetric(classes=3, bins=32)\" && type_of(x) == \"GroupMetric\", \"a groupwise measure\");",
    },
    Help {
        name: "ape",
        domain: "metrics",
        signature: "ape() -> GroupMetric",
        summary: "Accumulated pairwise estimates (Wachinger & Navab 2013): the sum of the Parzen mutual information of every pair of images; cost O(L^2 N^2) per point",
        options: &PARZEN_GROUP,
        example: "assert(ape(bins=16).to_string() == \"ape(bins=16)\", \"a groupwise measure\");",
    },
    Help {
        name: "cte",
        domain: "metrics",
        signature: "cte() -> GroupMetric",
        summary: "Conditional template entropy (Polfliet et al. 2018): the sum over images of H(image | template), the template the first principal component of the standardised intensities (its weights held during each gradient step)",
        options: &PARZEN_GROUP,
        example: "assert(cte().name == \"cte\", \"a groupwise measure\");",
    },
    Help {
        name: "congealing",
        domain: "metrics",
        signature: "congealing() -> GroupMetric",
        summary: "Congealing (Learned-Miller 2006): the mean over points of the Parzen entropy of the group's intensities at a point; for images of one modality",
        options: &PARZEN_GROUP,
        example: "assert(congealing().name == \"congealing\", \"a groupwise measure\");",
    },
    Help {
        name: "gmm",
        domain: "metrics",
        signature: "gmm() -> GroupMetric",
        summary: "Gaussian mixture likelihood (Orchard & Mann 2010): the negative log-likelihood of each point's N-vector of intensities under a K-component mixture with full covariances, fitted by EM before each gradient step",
        options: &[o("classes", "3", "mixture components K")],
        example: "assert(gmm(classes=5).to_string() == \"gmm(classes=5)\", \"a groupwise measure\");",
    },
    Help {
        name: "groupwise",
        domain: "pipeline",
        signature: "groupwise(images) -> #{transforms, warped, grid, loss, losses, seconds, cancelled, metric, posterior}",
        summary: "Groupwise registration of N images (any grids, any modalities) onto a common space: one linear transform per image (common-space mm to the image's mm, so warp(images[j], r.transforms[j], r.grid) brings image j there), their parameters' mean held at the identity so the group does not drift; Adam over the ISO pyramid with fresh random points each iteration; with xmetric, `posterior` is the K-class posterior segmentation on the grid (a K-channel image); Ctrl-C keeps what was reached",
        options: &GROUPWISE_OPTS,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet truth = translation([4.0, 0.0, 0.0]);\nlet moved = warp(t2, truth, t1);\nlet r = groupwise([t1, moved], metric=xmetric(classes=4), transform=\"translation\", scales=2, iterations=[40, 20], points=4000);\nassert(r.transforms.len() == 2 && r.warped.len() == 2 && r.loss.len() == 2, \"one transform and image per member, one loss per level\");\nlet relative = r.transforms[1].params[0] - r.transforms[0].params[0];\nassert(abs(relative + 4.0) < 0.5, \"moved(x) = t2(x + 4): the relative x shift is -4 mm\");\nassert(r.posterior.channels == 4, \"the posterior segmentation\");\nassert(gre(r.transforms, [affine(), truth], t1, mask=t1 > 0.2) < 1.0, \"aligned to within the T1-T2 misalignment of avg152 (about 0.5 mm): moved was made by truth\");",
    },
    Help {
        name: "gre",
        domain: "metrics",
        signature: "gre(transforms, truths, grid) -> float   (mm)",
        summary: "The groupwise registration error (Luo & Zhuang, seed 004): image j made as moved_j(x) = original_j(A_j(x)) from aligned originals is aligned by T_j when A_j(T_j(c)) is one point for all j; gRE is the mean over pairs j < k of the mean over the grid's voxel centres c (inside the mask) of |A_j(T_j(c)) - A_k(T_k(c))|",
        options: &[o("mask", "-", "only the voxels where this image (on the grid) is non-zero")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet a = [translation([2.0, 0.0, 0.0]), translation([-1.0, 0.0, 0.0])];\nassert(abs(gre([affine(), affine()], a, t1) - 3.0) < 1e-4, \"identity estimates: the truths' own disagreement, 3 mm\");\nassert(gre([inverse(a[0]), inverse(a[1])], a, t1) < 1e-4, \"the inverse truths align the group\");",
    },
];
