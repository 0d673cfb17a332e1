//! Registration networks in scripts: `affine_net`, `unet`, training pairs (`pairs`,
//! `synthetic_pairs`, `pair`), `train`, `evaluate_net`, `load_net`, `save_net`, `use_net`, and
//! `net(m, f)`, the starting state of a pipeline from the active network's prediction.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, Map};

use super::{floats, with_opts};
use crate::dsl::help::{o, Help};
use crate::dsl::options::{arg_error, Opts, OrHost, RhaiResult};
use crate::dsl::value::{net_string, pairs_string, NetValue, PairsValue, TransformValue};
use crate::dsl::Host;
use crate::image::Image;
use crate::metrics::Metric;
use crate::nn::{AffineNet, AffineNetConfig, Dim3, UNet, UNetConfig, UpsampleMode};
use crate::pipeline::{self, RegState};
use crate::train::{
    self, AffineBounds, Deformation, IntensityAugmentation, LrSchedule, Network, Pair, PairSource, SyntheticPairs,
    TrainOptions,
};

fn dim3(o: &Opts, key: &str, default: [usize; 3]) -> RhaiResult<Dim3> {
    Ok(match o.counts(key)? {
        None => Dim3(default),
        Some(v) if v.len() == 1 => Dim3([v[0]; 3]),
        Some(v) if v.len() == 3 => Dim3([v[0], v[1], v[2]]),
        Some(v) => return Err(arg_error(o.func(), format!("{key} takes one size or three (D, H, W), got {v:?}"))),
    })
}

fn seeded(host: &Host, net: Network, o: &Opts) -> RhaiResult<NetValue> {
    if let Some(seed) = o.usize("seed")? {
        net.reseed(seed as u64).host_key("seed")?;
    }
    let n = Arc::new(net);
    host.set_net(n.clone());
    Ok(n)
}

fn affine_net(host: &Host, o: &Opts) -> RhaiResult<NetValue> {
    let d = AffineNetConfig::default();
    let cfg = AffineNetConfig {
        input_size: dim3(o, "input_size", d.input_size.0)?,
        channels: o.counts("channels")?.unwrap_or(d.channels),
        hidden: o.usize("hidden")?.unwrap_or(d.hidden),
        max_translation_mm: o.f64("max_translation")?.unwrap_or(d.max_translation_mm),
        max_rotation: o.f64("max_rotation")?.map(f64::to_radians).unwrap_or(d.max_rotation),
        max_scale: o.f64("max_scale")?.unwrap_or(d.max_scale),
        max_shear: o.f64("max_shear")?.unwrap_or(d.max_shear),
        coordinates: o.bool("coordinates")?.unwrap_or(d.coordinates),
        ..d
    };
    let name = o.string("name")?.unwrap_or_else(|| "affine_net".into());
    let net = AffineNet::new(&name, cfg, &host.device).host()?;
    seeded(host, Network::Affine(net), o)
}

fn unet(host: &Host, o: &Opts) -> RhaiResult<NetValue> {
    let d = UNetConfig::default();
    let upsample = match o.string("upsample")?.as_deref() {
        None => d.upsample,
        Some("nearest") => UpsampleMode::Nearest,
        Some("trilinear" | "linear") => UpsampleMode::Trilinear { align_corners: false },
        Some(other) => {
            let s = crate::names::suggest(other, ["nearest", "trilinear"]).unwrap_or_else(|| "nearest".into());
            return Err(arg_error("unet", format!("unknown upsample `{other}`, did you mean `{s}`?")));
        }
    };
    let cfg = UNetConfig {
        input_size: dim3(o, "input_size", d.input_size.0)?,
        integration_steps: o.usize("steps")?.unwrap_or(d.integration_steps),
        encoder: o.counts("encoder")?.unwrap_or(d.encoder),
        decoder: o.counts("decoder")?.unwrap_or(d.decoder),
        full_res: o.counts("full_res")?.unwrap_or(d.full_res),
        upsample,
        ..d
    };
    let steps = cfg.integration_steps;
    let name = o.string("name")?.unwrap_or_else(|| "unet".into());
    let net = UNet::new(&name, cfg, &host.device).host()?;
    seeded(host, Network::Dense { unet: net, steps }, o)
}

fn images_of(d: &Dynamic, what: &str) -> RhaiResult<Vec<Image>> {
    if let Some(i) = d.clone().try_cast::<Image>() {
        return Ok(vec![i]);
    }
    if let Some(a) = d.clone().try_cast::<Array>() {
        return a
            .iter()
            .map(|x| {
                x.clone()
                    .try_cast::<Image>()
                    .ok_or_else(|| arg_error("synthetic_pairs", format!("{what}: images only")))
            })
            .collect();
    }
    Err(arg_error("synthetic_pairs", format!("{what} must be an image or a list of images")))
}

fn synthetic(fixed: Image, moving: &Dynamic, o: &Opts) -> RhaiResult<PairsValue> {
    let moving = images_of(moving, "moving")?;
    let d = AffineBounds::default();
    let deformation = match o.string("deformation")?.as_deref().unwrap_or("affine") {
        "affine" => Deformation::Affine(AffineBounds {
            translation: o.f64("translation")?.unwrap_or(d.translation),
            rotation_deg: o.f64("rotation")?.unwrap_or(d.rotation_deg),
            scale: o.f64("scale")?.unwrap_or(d.scale),
            shear: o.f64("shear")?.unwrap_or(d.shear),
        }),
        "smooth" => Deformation::Smooth {
            max_mm: o.f64("max_mm")?.unwrap_or(5.0),
            sigma_mm: o.f64("sigma_mm")?.unwrap_or(10.0),
        },
        other => {
            let s = crate::names::suggest(other, ["affine", "smooth"]).unwrap_or_else(|| "affine".into());
            return Err(arg_error("synthetic_pairs", format!("unknown deformation `{other}`, did you mean `{s}`?")));
        }
    };
    let intensity = IntensityAugmentation {
        gamma: o.f64("gamma")?.unwrap_or(0.0),
        scale: o.f64("contrast")?.unwrap_or(0.0),
        noise: o.f64("noise")?.unwrap_or(0.0),
    };
    Ok(Arc::new(PairSource::Synthetic(Box::new(SyntheticPairs {
        fixed,
        moving,
        labels: o.image("labels")?,
        deformation,
        intensity,
        seed: o.usize("seed")?.unwrap_or(0) as u64,
        margin: o.usize("margin")?.unwrap_or(0),
    }))))
}

fn pair_list(list: Array) -> RhaiResult<PairsValue> {
    let mut v = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        let bad = || {
            arg_error(
                "pairs",
                format!("item {i}: expected [moving, fixed] or [moving, fixed, moving_labels, fixed_labels]"),
            )
        };
        let a = item.try_cast::<Array>().ok_or_else(bad)?;
        let im = |k: usize| a.get(k).and_then(|d| d.clone().try_cast::<Image>());
        match a.len() {
            2 | 4 => {
                let (Some(m), Some(f)) = (im(0), im(1)) else { return Err(bad()) };
                let (ml, fl) = if a.len() == 4 {
                    (Some(im(2).ok_or_else(bad)?), Some(im(3).ok_or_else(bad)?))
                } else {
                    (None, None)
                };
                v.push(Pair { moving: m, fixed: f, moving_labels: ml, fixed_labels: fl, truth: None });
            }
            _ => return Err(bad()),
        }
    }
    if v.is_empty() {
        return Err(arg_error("pairs", "the list of pairs is empty"));
    }
    Ok(Arc::new(PairSource::List(v)))
}

fn pair_map(p: &Pair) -> Map {
    let mut m = Map::new();
    m.insert("moving".into(), Dynamic::from(p.moving.clone()));
    m.insert("fixed".into(), Dynamic::from(p.fixed.clone()));
    let opt = |i: &Option<Image>| i.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT);
    m.insert("moving_labels".into(), opt(&p.moving_labels));
    m.insert("fixed_labels".into(), opt(&p.fixed_labels));
    m.insert("truth".into(), p.truth.clone().map(|t| Dynamic::from(TransformValue::other(t))).unwrap_or(Dynamic::UNIT));
    m
}

fn report_map(r: &train::TrainReport) -> Map {
    let opt = |v: Option<f64>| v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT);
    let epochs: Array = r
        .epochs
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("epoch".into(), Dynamic::from_int(e.epoch as i64));
            m.insert("train_loss".into(), Dynamic::from_float(e.train_loss));
            m.insert("val_loss".into(), opt(e.val_loss));
            m.insert("val_dice".into(), opt(e.val_dice));
            m.insert("val_error_mm".into(), opt(e.val_error_mm));
            m.insert("lr".into(), Dynamic::from_float(e.lr));
            m.insert("seconds".into(), Dynamic::from_float(e.seconds));
            Dynamic::from_map(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("epochs".into(), epochs.into());
    m.insert("steps".into(), Dynamic::from_int(r.steps as i64));
    m.insert("seconds".into(), Dynamic::from_float(r.seconds));
    m.insert("stop".into(), r.stop.to_string().into());
    m.insert("train_loss".into(), floats(r.epochs.iter().map(|e| e.train_loss)).into());
    m
}

fn train_impl(host: &Host, net: &NetValue, pairs: &PairsValue, o: &Opts) -> RhaiResult<Map> {
    let loss = match o.metric("loss")? {
        Some(m) => m,
        None => Metric::new(if matches!(**net, Network::Affine(_)) { "cr" } else { "mi" }).host()?,
    };
    let mut t = TrainOptions::new(
        loss,
        o.usize("epochs")?.unwrap_or(10),
        o.usize("steps")?.unwrap_or(100),
        o.f64("lr")?.unwrap_or(1e-3),
    );
    // A regularizer given with the loss (`loss=mi + 0.1 * diffusion`) unless regularizer= is given.
    t.regularizer = match (super::pipeline::regularizer_option(o)?, t.loss.regularizer()) {
        (Some(_), Some(r)) => {
            return Err(arg_error(
                "train",
                format!("the loss carries a regularizer ({r}) and regularizer= is given too: give one"),
            ))
        }
        (Some(r), None) => r,
        (None, r) => r.cloned(),
    };
    t.batch = o.usize("batch")?.unwrap_or(1);
    t.schedule = match o.string("schedule")?.as_deref().unwrap_or("cosine") {
        "cosine" => LrSchedule::Cosine { final_fraction: 0.05 },
        "constant" => LrSchedule::Constant,
        other => {
            let s = crate::names::suggest(other, ["cosine", "constant"]).unwrap_or_else(|| "cosine".into());
            return Err(arg_error("train", format!("unknown schedule `{other}`, did you mean `{s}`?")));
        }
    };
    t.validation = o.typed::<PairsValue>("validation", "pairs, e.g. synthetic_pairs(...)")?.map(|p| (*p).clone());
    t.validation_pairs = o.usize("validation_pairs")?.unwrap_or(4);
    t.checkpoint = o.string("checkpoint")?.map(std::path::PathBuf::from);
    t.resume = o.bool("resume")?.unwrap_or(false);
    t.cancel = Some(host.cancel.clone());
    let r = train::train(net, pairs, &t).host()?;
    host.set_net(net.clone());
    Ok(report_map(&r))
}

fn net_state(host: &Host, m: Image, f: Image, o: &Opts) -> RhaiResult<RegState> {
    let net = match o.typed::<NetValue>("model", "a network, e.g. load_net(path)")? {
        Some(n) => n,
        None => host.net().ok_or_else(|| {
            arg_error("net", "no network yet: make one (affine_net, unet), load_net(path), or pass model=")
        })?,
    };
    pipeline::net_init(&net, &m, &f).host()
}

/// Registers the network and pairs types and their builtins.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine
        .register_type_with_name::<NetValue>("Network")
        .register_get("name", |n: &mut NetValue| n.name().to_string())
        .register_get("kind", |n: &mut NetValue| n.kind().to_string())
        .register_get("params", |n: &mut NetValue| n.num_params() as i64)
        .register_get("input_size", |n: &mut NetValue| {
            n.input_size().0.iter().map(|&v| Dynamic::from_int(v as i64)).collect::<Array>()
        })
        .register_fn("to_string", |n: &mut NetValue| net_string(n))
        .register_fn("to_debug", |n: &mut NetValue| net_string(n));
    engine
        .register_type_with_name::<PairsValue>("Pairs")
        .register_get("len", |p: &mut PairsValue| p.len().map(|n| n as i64).unwrap_or(-1))
        .register_fn("to_string", |p: &mut PairsValue| pairs_string(p))
        .register_fn("to_debug", |p: &mut PairsValue| pairs_string(p));
    with_opts!(engine, [host], "affine_net", | | o => affine_net(&host, &o));
    with_opts!(engine, [host], "unet", | | o => unet(&host, &o));
    with_opts!(engine, "synthetic_pairs", |fixed: Image, moving: Dynamic| o => synthetic(fixed, &moving, &o));
    engine.register_fn("pairs", |list: Array| pair_list(list));
    engine.register_fn("pair", |p: PairsValue, i: i64| -> RhaiResult<Map> {
        let i = u64::try_from(i).map_err(|_| arg_error("pair", format!("the index must be >= 0, got {i}")))?;
        p.pair(i).host().map(|p| pair_map(&p))
    });
    with_opts!(engine, [host], "train", |net: NetValue, pairs: PairsValue| o => train_impl(&host, &net, &pairs, &o));
    with_opts!(engine, "evaluate_net", |net: NetValue, pairs: PairsValue| o => {
        let metric = match o.metric("metric")? {
            Some(m) => m,
            None => Metric::new("ncc").host()?,
        };
        let n = o.usize("pairs")?.unwrap_or_else(|| pairs.len().unwrap_or(4));
        let (loss, dice, err) = train::evaluate(&net, &pairs, n, &metric).host()?;
        let mut m = Map::new();
        let opt = |v: Option<f64>| v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT);
        m.insert("loss".into(), Dynamic::from_float(loss));
        m.insert("dice".into(), opt(dice));
        m.insert("error_mm".into(), opt(err));
        Ok(m)
    });
    {
        let host = host.clone();
        engine.register_fn("load_net", move |path: &str| -> RhaiResult<NetValue> {
            let n = Arc::new(Network::load(std::path::Path::new(path), &host.device).host()?);
            host.set_net(n.clone());
            Ok(n)
        });
    }
    engine.register_fn("save_net", |net: NetValue, path: &str| -> RhaiResult<String> {
        net.save(std::path::Path::new(path)).host()?;
        Ok(path.to_string())
    });
    {
        let host = host.clone();
        engine.register_fn("use_net", move |net: NetValue| host.set_net(net));
    }
    with_opts!(engine, [host], "net", |m: Image, f: Image| o => net_state(&host, m, f, &o));
}

/// The help of the nn builtins (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    Help {
        name: "affine_net",
        domain: "nn",
        signature: "affine_net() -> Network",
        summary: "The affine network of Chen et al. 2024 (PET/CT): a CNN encoder of the moving / fixed pair on its input grid, pooled, MLP heads for 3 translations (mm), 3 rotations, 3 scales, 3 shears, bounded by tanh; starts at the identity. Becomes the active network",
        options: &[
            o("input_size", "64", "network grid voxels (one size, or [D, H, W]); the pair is resampled onto the fixed image's field of view"),
            o("channels", "[16, 32, 64, 64]", "output channels of the stride-2 convolutions"),
            o("hidden", "64", "hidden width of each MLP head"),
            o("max_translation", "40", "bound of the translations, mm"),
            o("max_rotation", "28.6", "bound of the rotations, degrees"),
            o("max_scale", "1.25", "scales lie in [1/max_scale, max_scale]"),
            o("max_shear", "0.2", "bound of the shears"),
            o("coordinates", "false", "append x, y, z coordinate channels (CoordConv)"),
            o("name", "affine_net", "the network's name"),
            o("seed", "-", "draw the initial weights reproducibly from this seed"),
        ],
        example: "let n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nassert(n.kind == \"affine_net\" && n.input_size == [16, 16, 16], \"configured\");\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nassert(displacement_error(net(t1, t1).transform, affine(), t1) < 0.5, \"a new network predicts about the identity\");",
    },
    Help {
        name: "unet",
        domain: "nn",
        signature: "unet() -> Network",
        summary: "The VoxelMorph U-Net of Wang et al. (unsupervised mono/multi-modal registration): strided-conv encoder, decoder with skip connections, Leaky ReLU; outputs a displacement field (mm, fixed to moving) or a velocity field integrated by scaling and squaring. Becomes the active network",
        options: &[
            o("input_size", "64", "network grid voxels (multiples of 2^levels)"),
            o("encoder", "[16, 32, 32, 32]", "channels of the stride-2 encoder convolutions"),
            o("decoder", "[32, 32, 32, 32]", "channels of the decoder convolutions, coarsest first"),
            o("full_res", "[32, 16, 16]", "channels of the full-resolution convolutions"),
            o("upsample", "nearest", "nearest or trilinear"),
            o("steps", "0", "0: a displacement; n: a stationary velocity field with n squarings"),
            o("name", "unet", "the network's name"),
            o("seed", "-", "draw the initial weights reproducibly from this seed"),
        ],
        example: "let n = unet(input_size=16, encoder=[4, 8], decoder=[8, 8], full_res=[4], seed=1);\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nassert(n.kind == \"unet\" && n.params > 1000, \"a U-Net\");\nassert(displacement_error(net(t1, t1).transform, affine(), t1) < 0.1, \"a new U-Net barely moves anything\");",
    },
    Help {
        name: "synthetic_pairs",
        domain: "nn",
        signature: "synthetic_pairs(fixed, moving) -> Pairs   (moving: an image or a list, aligned with fixed)",
        summary: "Training pairs made on the fly: a random affine or smooth deformation of an aligned moving image (its truth kept), an optional intensity augmentation; pair i comes from seed + i",
        options: &[
            o("deformation", "affine", "affine or smooth"),
            o("translation", "15", "affine: translations up to, mm"),
            o("rotation", "15", "affine: rotations up to, degrees"),
            o("scale", "0.1", "affine: scales in 1 +- scale"),
            o("shear", "0.05", "affine: shears up to"),
            o("margin", "0", "affine: voxels added on every side of the moving grid, so the moved image is not cropped"),
            o("max_mm", "5", "smooth: largest displacement in the foreground, mm"),
            o("sigma_mm", "10", "smooth: Gaussian smoothing of the noise, mm"),
            o("labels", "-", "a label map of fixed, carried to the moving side"),
            o("gamma", "0", "intensity: gamma in [1/(1+g), 1+g]"),
            o("contrast", "0", "intensity: scale in 1 +- c"),
            o("noise", "0", "intensity: Gaussian noise, fraction of the maximum"),
            o("seed", "0", "seed of the pairs"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet p = synthetic_pairs(t1, [t2], translation=10.0, rotation=0.0, scale=0.0, shear=0.0, seed=3);\nlet e = displacement_error(pair(p, 0).truth, affine(), t1);\nassert(p.len == -1 && e > 0.5 && e < 17.4, \"a random shift of up to 10 mm per axis\");",
    },
    Help {
        name: "pairs",
        domain: "nn",
        signature: "pairs([[moving, fixed], ...]) -> Pairs   (or [moving, fixed, moving_labels, fixed_labels])",
        summary: "Training or validation pairs from given images, used in turn",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet p = pairs([[t2, t1], [t1, t1]]);\nassert(p.len == 2 && pair(p, 3).moving.mean == t1.mean, \"pair 3 is the second one again\");",
    },
    Help {
        name: "pair",
        domain: "nn",
        signature: "pair(pairs, i) -> map   (moving, fixed, moving_labels, fixed_labels, truth)",
        summary: "Pair number i of a pair source (the truth is the known transform of a synthetic pair, fixed to moving)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet p = synthetic_pairs(t1, t1, translation=4.0, rotation=0.0, scale=0.0, shear=0.0);\nlet a = pair(p, 5);\nassert(warp(a.moving, a.truth, t1).value(45, 54, 45) - t1.value(45, 54, 45) < 0.05, \"the truth pulls the moving image back\");",
    },
    Help {
        name: "train",
        domain: "nn",
        signature: "train(net, pairs) -> map   (epochs: [..], steps, seconds, stop)",
        summary: "Unsupervised training: Adam on the weights, loss = a similarity measure of the warped pair on the network grid (plus a regularizer of dense fields); validation, checkpoints (safetensors + JSON) and resume; Ctrl-C stops after the step and writes the checkpoint",
        options: &[
            o("loss", "cr (affine_net) / mi (unet)", "the similarity measure"),
            o("regularizer", "none (the loss's, if it carries one)", "dense: a Regularizer (0.1 * diffusion), or diffusion:W, bending:W, folding:W"),
            o("epochs", "10", "epochs to reach (a resumed run does the rest)"),
            o("steps", "100", "optimizer steps per epoch"),
            o("batch", "1", "pairs per step"),
            o("lr", "0.001", "Adam's learning rate"),
            o("schedule", "cosine", "cosine (to 5 %) or constant"),
            o("validation", "-", "held-out pairs evaluated after each epoch"),
            o("validation_pairs", "4", "how many"),
            o("checkpoint", "-", "weights path (.safetensors) written after each epoch"),
            o("resume", "false", "continue from the checkpoint when it exists"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nlet p = synthetic_pairs(t1, t1, translation=5.0, rotation=0.0, scale=0.0, shear=0.0);\nlet r = train(n, p, loss=ncc, epochs=2, steps=5, validation=synthetic_pairs(t1, t1, seed=9), validation_pairs=1);\nassert(r.steps == 10 && r.epochs.len() == 2 && r.stop == \"epochs\", \"two epochs of five steps\");\nassert(r.epochs[1].val_error_mm > 0.0, \"validated against the known transforms\");",
    },
    Help {
        name: "evaluate_net",
        domain: "nn",
        signature: "evaluate_net(net, pairs) -> map   (loss, dice, error_mm)",
        summary: "A network on held-out pairs: mean similarity loss, Dice of the labels, mean displacement error (mm, fixed foreground) against the known transforms",
        options: &[o("pairs", "all, or 4", "how many pairs"), o("metric", "ncc", "the similarity measure")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nlet e = evaluate_net(n, synthetic_pairs(t1, t1, translation=8.0, rotation=0.0, scale=0.0, shear=0.0), pairs=2);\nassert(e.error_mm > 1.0 && e.dice == (), \"an untrained network leaves the shifts; no labels, no Dice\");",
    },
    Help {
        name: "save_net",
        domain: "nn",
        signature: "save_net(net, path) -> path",
        summary: "Write the weights (safetensors) and the configuration (JSON beside them), atomically",
        options: &[],
        example: "let n = affine_net(input_size=16, channels=[4], hidden=4, seed=2, name=\"tiny\");\nsave_net(n, \"target/dsl_help_net.safetensors\");\nassert(exists(\"target/dsl_help_net.json\"), \"the configuration beside the weights\");",
    },
    Help {
        name: "load_net",
        domain: "nn",
        signature: "load_net(path) -> Network",
        summary: "Read a network written by save_net or train(checkpoint=...); it becomes the active network",
        options: &[],
        example: "let n = affine_net(input_size=16, channels=[4], hidden=4, seed=2, name=\"tiny\");\nsave_net(n, \"target/dsl_help_load.safetensors\");\nlet m = load_net(\"target/dsl_help_load.safetensors\");\nassert(m.name == \"tiny\" && m.params == n.params, \"round trip\");",
    },
    Help {
        name: "use_net",
        domain: "nn",
        signature: "use_net(net)",
        summary: "Make a network the active one, which net(m, f) uses",
        options: &[],
        example: "let a = affine_net(input_size=16, channels=[4], hidden=4, name=\"a\");\nlet b = unet(input_size=16, encoder=[4], decoder=[4], full_res=[4], name=\"b\");\nuse_net(a);\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nassert(net(t1, t1).stages[0].transform == \"affine_net:a\", \"the active network predicts\");",
    },
    Help {
        name: "net",
        domain: "nn",
        signature: "net(moving, fixed) -> RegState   (MOVING first)",
        summary: "The starting state of a registration from the active network's prediction (or model=): the affine network's transform, which iso can refine, or the U-Net's field",
        options: &[o("model", "the active network", "the network to use")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nlet s = net(t1, t1, model=n) |> iso(ncc, scales=1, iterations=[5]);\nassert(s.stages.len() == 2 && s.stages[0].transform == \"affine_net:affine_net\", \"the network's guess, then iso\");",
    },
];
