//! Registration networks in scripts: `affine_net`, `unet`, training pairs (`pairs`,
//! `synthetic_pairs`, `pair`), `train`, `evaluate_net`, `load_net`, `save_net`, `use_net`, and
//! `net(m, f)`, the starting state of a pipeline from the active network's prediction.

use std::sync::Arc;

use candle_core::Tensor;
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext};

use super::metrics::ScriptFn;
use super::tensor::TensorValue;
use super::{floats, with_opts};
use crate::dsl::help::{o, Help};
use crate::dsl::options::{arg_error, type_of, Opts, OrHost, RhaiResult};
use crate::dsl::value::{net_string, pairs_string, NetValue, OptimizerValue, PairsValue, TransformValue};
use crate::dsl::Host;
use crate::image::Image;
use crate::metrics::similarity::Custom;
use crate::metrics::Metric;
use crate::nn::{AffineNet, AffineNetConfig, Dim3, UNet, UNetConfig, UpsampleMode};
use crate::pipeline::{self, RegState};
use crate::train::{
    self, AffineBounds, DeepMetric, Deformation, FitOptions, IntensityAugmentation, LrSchedule, Network, Pair,
    PairSource, PatchOptions, SyntheticPairs, TrainOptimizer, TrainOptions, Validation,
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

/// `fit`'s options from train's keyword arguments: epochs, steps (`default_steps` when not given),
/// optimizer= (or lr=), schedule=, checkpoint=, resume=, and Ctrl-C.
fn fit_options(host: &Host, o: &Opts, default_steps: usize) -> RhaiResult<FitOptions> {
    let mut f = FitOptions::new(o.usize("epochs")?.unwrap_or(10), o.usize("steps")?.unwrap_or(default_steps), 1e-3);
    let optimizer = o.typed::<OptimizerValue>("optimizer", "adam(...) or sgd(...)")?;
    match (&optimizer, o.f64("lr")?) {
        (Some(_), Some(_)) => {
            return Err(arg_error(
                "train",
                "optimizer= carries the learning rate (adam(lr=...)); give it there, not lr= too",
            ))
        }
        (None, Some(lr)) => f.lr = lr,
        _ => {}
    }
    if let Some(opt) = &optimizer {
        f.lr = opt.lr.unwrap_or(if opt.name == "sgd" { 0.01 } else { 1e-3 });
        f.weight_decay = opt.weight_decay;
        f.optimizer = match opt.name.as_str() {
            "adam" => TrainOptimizer::Adam,
            "sgd" => TrainOptimizer::Sgd { momentum: opt.momentum, nesterov: opt.nesterov },
            other => {
                return Err(arg_error(
                    "train",
                    format!("train steps with adam(...) or sgd(...), not {other}(): it needs a first-order optimizer"),
                ))
            }
        };
    }
    // With optimizer= the rate is constant unless a schedule is asked for (PyTorch's habit).
    let default_schedule = if optimizer.is_some() { "constant" } else { "cosine" };
    f.schedule = match o.string("schedule")?.as_deref().unwrap_or(default_schedule) {
        "cosine" => LrSchedule::Cosine { final_fraction: 0.05 },
        "constant" => LrSchedule::Constant,
        "exponential" => LrSchedule::Exponential { gamma: o.f64("gamma")?.unwrap_or(0.8) },
        other => {
            let s =
                crate::names::suggest(other, ["cosine", "constant", "exponential"]).unwrap_or_else(|| "cosine".into());
            return Err(arg_error("train", format!("unknown schedule `{other}`, did you mean `{s}`?")));
        }
    };
    if o.get("gamma").is_some() && !matches!(f.schedule, LrSchedule::Exponential { .. }) {
        return Err(arg_error("train", "gamma= is the decay of schedule=\"exponential\"; give that schedule too"));
    }
    f.checkpoint = o.string("checkpoint")?.map(std::path::PathBuf::from);
    f.resume = o.bool("resume")?.unwrap_or(false);
    f.cancel = Some(host.cancel.clone());
    Ok(f)
}

/// `train(net, pairs)` with a similarity measure as the loss (the unsupervised registration training).
fn train_pairs(host: &Host, net: &NetValue, pairs: &PairsValue, o: &Opts) -> RhaiResult<Map> {
    let loss = match o.metric("loss")? {
        Some(m) => m,
        None => Metric::new(if matches!(**net, Network::Affine(_)) { "cr" } else { "mi" }).host()?,
    };
    let mut t = TrainOptions::new(loss, 1, 1, 1e-3);
    t.fit = fit_options(host, o, 100)?;
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
    t.validation = o.typed::<PairsValue>("validation", "pairs, e.g. synthetic_pairs(...)")?.map(|p| (*p).clone());
    t.validation_pairs = o.usize("validation_pairs")?.unwrap_or(4);
    let r = train::train(net, pairs, &t).host()?;
    host.set_net(net.clone());
    Ok(report_map(&r))
}

/// Training samples given as an array of maps of tensors (images and numbers become tensors): the
/// tensors of each key in item order, their keys, and each key's shape.
struct Samples {
    keys: Vec<String>,
    items: Vec<Vec<Tensor>>,
}

impl Samples {
    fn new(list: &Array, host: &Host, what: &str) -> RhaiResult<Self> {
        let Some(first) = list.first() else {
            return Err(arg_error("train", format!("{what} is empty")));
        };
        let keys: Vec<String> = match first.read_lock::<Map>() {
            Some(m) => m.keys().map(|k| k.to_string()).collect(),
            None => {
                return Err(arg_error("train", format!("{what}: item 0 is {}, not a map of tensors", type_of(first))))
            }
        };
        if keys.is_empty() {
            return Err(arg_error("train", format!("{what}: item 0 is an empty map")));
        }
        let mut items = Vec::with_capacity(list.len());
        for (i, d) in list.iter().enumerate() {
            let Some(m) = d.read_lock::<Map>() else {
                return Err(arg_error("train", format!("{what}: item {i} is {}, not a map of tensors", type_of(d))));
            };
            let mine: Vec<String> = m.keys().map(|k| k.to_string()).collect();
            if mine != keys {
                return Err(arg_error("train", format!("{what}: item {i} has keys {mine:?}, item 0 has {keys:?}")));
            }
            let mut row = Vec::with_capacity(keys.len());
            for (k, v) in m.iter() {
                let t = if let Some(t) = v.clone().try_cast::<TensorValue>() {
                    t.0
                } else if let Some(img) = v.clone().try_cast::<Image>() {
                    img.data().clone()
                } else if let Some(x) = crate::dsl::options::num(v) {
                    Tensor::new(x as f32, &host.device).map_err(crate::Error::from).host()?
                } else if v.is_array() {
                    let (shape, values) = super::tensor::nested(v, "train")?;
                    let values: Vec<f32> = values.into_iter().map(|x| x as f32).collect();
                    Tensor::from_vec(values, shape, &host.device).map_err(crate::Error::from).host()?
                } else {
                    return Err(arg_error(
                        "train",
                        format!(
                            "{what}: item {i}, key `{k}` is {}: samples hold tensors, images or numbers",
                            type_of(v)
                        ),
                    ));
                };
                if let Some(first_row) = items.first() {
                    let f: &Vec<Tensor> = first_row;
                    let want = f[row.len()].dims();
                    if t.dims() != want {
                        return Err(arg_error(
                            "train",
                            format!("{what}: item {i}, key `{k}` has shape {:?}, item 0 has {want:?}", t.dims()),
                        ));
                    }
                }
                row.push(t.detach());
            }
            items.push(row);
        }
        Ok(Samples { keys, items })
    }

    /// The batch of items `idx`: each key's tensors stacked along a new first axis.
    fn batch(&self, idx: &[usize]) -> crate::Result<Map> {
        let mut m = Map::new();
        for (j, k) in self.keys.iter().enumerate() {
            let parts: Vec<&Tensor> = idx.iter().map(|&i| &self.items[i][j]).collect();
            let t = Tensor::stack(&parts, 0)?;
            m.insert(k.as_str().into(), Dynamic::from(TensorValue(t)));
        }
        Ok(m)
    }
}

/// The order of the samples in an epoch: a permutation drawn from `seed` and the epoch (Fisher-Yates),
/// or the given order.
fn epoch_order(n: usize, epoch: usize, seed: u64, shuffle: bool) -> Vec<usize> {
    use rand::{Rng, SeedableRng};
    let mut v: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        for i in (1..n).rev() {
            v.swap(i, rng.random_range(0..=i));
        }
    }
    v
}

/// The loss closure's value as a tensor, or a named error.
fn closure_loss(f: &ScriptFn, net: &NetValue, batch: Map) -> crate::Result<Tensor> {
    let out = f.call(vec![Dynamic::from(net.clone()), Dynamic::from_map(batch)])?;
    f.tensor(out, "loss")
}

/// `train(net, data, loss=|net, batch| ...)`: any network, a loss written in the script, on pairs or on
/// an array of samples.
fn train_closure(
    host: &Arc<Host>,
    ctx: &NativeCallContext,
    net: &NetValue,
    data: &Dynamic,
    f: FnPtr,
    o: &Opts,
) -> RhaiResult<Map> {
    for k in ["regularizer", "validation_pairs"] {
        if o.get(k).is_some() {
            return Err(arg_error(
                "train",
                format!("{k}= is for a similarity-measure loss; a loss closure computes its own terms"),
            ));
        }
    }
    let f = ScriptFn::new(ctx, host, f, "loss".into(), &[2], "a loss takes (net, batch)")?;
    let batch = o.usize("batch")?.unwrap_or(1);
    if batch == 0 {
        return Err(arg_error("train", "batch must be at least 1"));
    }
    let r = if let Some(pairs) = data.clone().try_cast::<PairsValue>() {
        if o.get("validation").is_some() || o.get("shuffle").is_some() || o.get("seed").is_some() {
            return Err(arg_error(
                "train",
                "validation=, seed= and shuffle= take an array of samples (pairs come in their own seeded order); with pairs, evaluate the network after training",
            ));
        }
        let opts = fit_options(host, o, 100)?;
        let mut step_loss = |step: usize| -> crate::Result<Tensor> {
            let mut acc: Option<Tensor> = None;
            for b in 0..batch {
                let p = pairs.training_pair((step * batch + b) as u64)?;
                let l = closure_loss(&f, net, pair_map(&p))?;
                acc = Some(match acc {
                    Some(a) => (a + l)?,
                    None => l,
                });
            }
            match acc {
                Some(l) => Ok((l / batch as f64)?),
                None => Err(crate::Error::arg("train", "empty batch")),
            }
        };
        train::fit(net, &opts, &mut step_loss, &mut || Ok(Validation::default())).host()?
    } else if let Some(list) = data.read_lock::<Array>().map(|a| a.clone()) {
        let samples = Samples::new(&list, host, "the training samples")?;
        let validation = match o.get("validation") {
            Some(v) => match v.read_lock::<Array>() {
                Some(a) => Some(Samples::new(&a, host, "validation")?),
                None => {
                    return Err(arg_error(
                        "train",
                        "validation= takes an array of samples (maps of tensors), as the data",
                    ))
                }
            },
            None => None,
        };
        let n = samples.items.len();
        let opts = fit_options(host, o, n.div_ceil(batch))?;
        let steps_per_epoch = opts.steps;
        let seed = o.usize("seed")?.unwrap_or(0) as u64;
        let shuffle = o.bool("shuffle")?.unwrap_or(true);
        let mut order: (usize, Vec<usize>) = (usize::MAX, Vec::new());
        let mut step_loss = |step: usize| -> crate::Result<Tensor> {
            // Step j of an epoch takes slice j of that epoch's order (the last one may be short, as
            // PyTorch's DataLoader); more steps than one pass wrap around the same order.
            let (epoch, j) = (step / steps_per_epoch, step % steps_per_epoch);
            if order.0 != epoch {
                order = (epoch, epoch_order(n, epoch, seed, shuffle));
            }
            let start = (j * batch) % n;
            let idx = &order.1[start..(start + batch).min(n)];
            closure_loss(&f, net, samples.batch(idx)?)
        };
        let mut validate = || -> crate::Result<Validation> {
            let Some(v) = &validation else { return Ok(Validation::default()) };
            let m = v.items.len();
            let mut sum = 0.0;
            for start in (0..m).step_by(batch) {
                let idx: Vec<usize> = (start..(start + batch).min(m)).collect();
                // The loss of a batch is its mean: weighted by the batch's size.
                let l = closure_loss(&f, net, v.batch(&idx)?)?;
                sum += crate::optim::objective::scalar(&l.detach())? * idx.len() as f64;
            }
            Ok(Validation { loss: Some(sum / m as f64), ..Validation::default() })
        };
        train::fit(net, &opts, &mut step_loss, &mut validate).host()?
    } else {
        return Err(arg_error(
            "train",
            format!(
                "the data is {}: give pairs(...) / synthetic_pairs(...) or an array of samples (maps of tensors)",
                type_of(data)
            ),
        ));
    };
    if net.is_registration() {
        host.set_net(net.clone());
    }
    Ok(report_map(&r))
}

/// `train(net, data, ...)`: dispatches on the loss (a measure or a closure) and the data.
fn train_impl(host: &Arc<Host>, ctx: &NativeCallContext, net: &NetValue, data: &Dynamic, o: &Opts) -> RhaiResult<Map> {
    if let Some(f) = o.get("loss").and_then(|d| d.clone().try_cast::<FnPtr>()) {
        return train_closure(host, ctx, net, data, f, o);
    }
    for k in ["seed", "shuffle"] {
        if o.get(k).is_some() {
            return Err(arg_error("train", format!("{k}= orders an array of samples, which a loss closure trains on")));
        }
    }
    match data.clone().try_cast::<PairsValue>() {
        Some(p) if net.is_registration() => train_pairs(host, net, &p, o),
        Some(_) => Err(arg_error(
            "train",
            format!("`{}` is a sequential network: train it with a loss closure, loss=|net, batch| ...", net.name()),
        )),
        None => Err(arg_error(
            "train",
            format!(
                "{} as data needs a loss closure, loss=|net, batch| ... (a similarity measure trains on pairs)",
                type_of(data)
            ),
        )),
    }
}

/// A patch side per image axis `[px, py, pz]` from `patch=` (one size or three).
fn patch_sides(o: &Opts, default: [usize; 3]) -> RhaiResult<[usize; 3]> {
    Ok(match o.counts("patch")? {
        None => default,
        Some(v) if v.len() == 1 => [v[0]; 3],
        Some(v) if v.len() == 3 => [v[0], v[1], v[2]],
        Some(v) => return Err(arg_error(o.func(), format!("patch takes one side or three [x, y, z], got {v:?}"))),
    })
}

/// `patch_pairs(fixed, moving)`: training samples for a deep similarity measure.
fn patch_pairs_impl(fixed: &Image, moving: &Image, o: &Opts) -> RhaiResult<Array> {
    let d = PatchOptions::default();
    let opts = PatchOptions {
        patch: patch_sides(o, d.patch)?,
        n: o.usize("n")?.unwrap_or(d.n),
        mask: o.image("mask")?,
        min_distance_mm: o.f64("min_distance")?.unwrap_or(d.min_distance_mm),
        seed: o.usize("seed")?.unwrap_or(0) as u64,
        flips: o.bool("flips")?.unwrap_or(false),
        rotations: o.bool("rotations")?.unwrap_or(false),
        dither_mm2: o.f64("dither")?.unwrap_or(0.0),
        draws: o.usize("draws")?.unwrap_or(1),
        level: o.f64("level")?.unwrap_or(1.0),
    };
    let pairs = train::patch_pairs(fixed, moving, &opts).host()?;
    Ok(pairs
        .into_iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("x".into(), Dynamic::from(TensorValue(p.input)));
            m.insert("label".into(), Dynamic::from_int(p.label as i64));
            m.insert("displacement".into(), floats(p.displacement).into());
            Dynamic::from_map(m)
        })
        .collect())
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
        .register_get("input_size", |n: &mut NetValue| match n.input_size() {
            Some(s) => Dynamic::from_array(s.0.iter().map(|&v| Dynamic::from_int(v as i64)).collect::<Array>()),
            None => Dynamic::UNIT,
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
    {
        let h = host.clone();
        engine.register_fn("train", move |ctx: NativeCallContext, net: NetValue, data: Dynamic| {
            train_impl(&h, &ctx, &net, &data, &Opts::none("train"))
        });
        let h = host.clone();
        engine.register_fn("train", move |ctx: NativeCallContext, net: NetValue, data: Dynamic, map: Map| {
            train_impl(&h, &ctx, &net, &data, &Opts::new("train", map)?)
        });
    }
    engine.register_fn("forward", |net: NetValue, x: TensorValue| -> RhaiResult<TensorValue> {
        net.forward_tensor(&x.0).host().map(TensorValue)
    });
    engine.register_get("weights", |n: &mut NetValue| {
        let mut m = Map::new();
        for (k, v) in n.named_vars() {
            m.insert(k.into(), Dynamic::from(TensorValue(v.as_tensor().clone())));
        }
        m
    });
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
            if n.is_registration() {
                host.set_net(n.clone());
            }
            Ok(n)
        });
    }
    engine.register_fn("save_net", |net: NetValue, path: &str| -> RhaiResult<String> {
        net.save(std::path::Path::new(path)).host()?;
        Ok(path.to_string())
    });
    {
        let host = host.clone();
        engine.register_fn("use_net", move |net: NetValue| -> RhaiResult<()> {
            if !net.is_registration() {
                return Err(arg_error(
                    "use_net",
                    format!(
                        "`{}` is a sequential network: net(m, f) needs a registration network (affine_net, unet)",
                        net.name()
                    ),
                ));
            }
            host.set_net(net);
            Ok(())
        });
    }
    with_opts!(engine, [host], "net", |m: Image, f: Image| o => net_state(&host, m, f, &o));
    with_opts!(engine, "patch_pairs", |fixed: Image, moving: Image| o => patch_pairs_impl(&fixed, &moving, &o));
    with_opts!(engine, "deep_metric", |net: NetValue| o => {
        let d = PatchOptions::default();
        let patch = patch_sides(&o, d.patch)?;
        let deep = DeepMetric::new(net.clone(), o.usize("patches")?.unwrap_or(64), patch, o.usize("seed")?.unwrap_or(0) as u64).host()?;
        let custom = Custom { measure: Arc::new(deep), higher_is_better: true, source: format!("deep_metric({})", net.name()) };
        Ok(Metric::custom("deep_metric", custom))
    });
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
        signature: "train(net, data) -> map   (epochs: [..], steps, seconds, stop, train_loss)",
        summary: "Training. With a similarity measure (loss=ncc, the default cr / mi) on pairs: unsupervised registration training of affine_net / unet, the measure of the warped pair on the network grid (plus a regularizer of dense fields). With a loss closure (loss=|net, batch| ..., returning a one-element tensor from net.forward(...)): any network; data is pairs (batch = the pair's map: moving, fixed, ...) or an array of samples, maps of tensors (batch = the same keys, stacked along a new first axis). Adam or SGD with weight decay, validation, checkpoints (safetensors + JSON) and resume; dropout is active during the steps only; Ctrl-C stops after the step and writes the checkpoint",
        options: &[
            o("loss", "cr (affine_net) / mi (unet)", "a similarity measure, or a closure |net, batch| -> Tensor"),
            o("regularizer", "none (the loss's, if it carries one)", "measure losses, dense: a Regularizer (0.1 * diffusion), or diffusion:W, bending:W, folding:W"),
            o("epochs", "10", "epochs to reach (a resumed run does the rest)"),
            o("steps", "100 (samples: one pass)", "optimizer steps per epoch"),
            o("batch", "1", "pairs or samples per step"),
            o("lr", "0.001", "Adam's learning rate (without optimizer=)"),
            o("optimizer", "adam(lr=0.001)", "adam(lr=, weight_decay=) (lr 0.001 by default) or sgd(lr=, momentum=, nesterov=, weight_decay=) (lr 0.01); replaces lr=; Adam's moments are checkpointed, SGD's velocity restarts on resume"),
            o("schedule", "cosine (constant with optimizer=)", "cosine (to 5 %), constant, or exponential (the rate times gamma^epoch)"),
            o("gamma", "0.8", "exponential: the decay per epoch"),
            o("validation", "-", "held-out pairs (measure losses: loss, Dice, error) or samples (closure losses, taken as batch means: their mean) after each epoch"),
            o("validation_pairs", "4", "how many held-out pairs"),
            o("seed", "0", "samples: the order of each epoch"),
            o("shuffle", "true", "samples: a new order each epoch"),
            o("checkpoint", "-", "weights path (.safetensors) written after each epoch"),
            o("resume", "false", "continue from the checkpoint when it exists"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nlet p = synthetic_pairs(t1, t1, translation=5.0, rotation=0.0, scale=0.0, shear=0.0);\nlet r = train(n, p, loss=ncc, epochs=2, steps=5, validation=synthetic_pairs(t1, t1, seed=9), validation_pairs=1);\nassert(r.steps == 10 && r.epochs.len() == 2 && r.stop == \"epochs\", \"two epochs of five steps\");\nassert(r.epochs[1].val_error_mm > 0.0, \"validated against the known transforms\");\n// a closure loss on samples: fit y = 2x + 1\nlet data = [];\nfor i in 0..8 { let x = i / 4.0; data.push(#{x: tensor([x]), y: tensor([2.0 * x + 1.0])}); }\nlet f = nn::sequential([nn::linear(1, 1)], seed=1);\nlet r = train(f, data, loss=|net, b| ((net.forward(b.x) - b.y) ** 2).mean(), optimizer=sgd(lr=0.1, momentum=0.5), epochs=60, batch=4);\nassert(r.steps == 120 && r.train_loss[59] < 1e-4, \"least squares\");\nassert(abs(f.forward(tensor([[1.0]])).item() - 3.0) < 0.01, \"2 * 1 + 1\");",
    },
    Help {
        name: "forward",
        domain: "nn",
        signature: "net.forward(x) -> Tensor",
        summary: "Runs a network on a tensor, differentiable in its weights: a sequential network's layers; the affine network's (N, 12) parameters or the U-Net's (N, 3, D, H, W) voxel displacement of a pair (N, 2, D, H, W) on its input grid",
        options: &[],
        example: "let n = nn::sequential([nn::flatten(), nn::linear(8, 3)], seed=2);\nlet x = ones([2, 1, 2, 2, 2]);\nlet y = n.forward(x);\nassert(y.shape == [2, 3], \"(N, 3)\");\nlet g = grad(y.sum(), n.weights.values());\nassert(g.len() == 2 && g[0].sum().item() == 6.0, \"d sum / d bias = N per output (keys in order: l1.bias, l1.weight)\");\nlet a = affine_net(input_size=16, channels=[4], hidden=4, seed=1);\nassert(a.forward(zeros([1, 2, 16, 16, 16])).shape == [1, 12], \"12 affine parameters\");",
    },
    Help {
        name: "patch_pairs",
        domain: "nn",
        signature: "patch_pairs(fixed, moving) -> [#{x, label, displacement}, ...]   (x: (2, pz, py, px) tensor)",
        summary: "Training samples for a learned similarity measure (Sedghi et al.): per position drawn in the fixed image, draws corresponding patch pairs (the moving image at the same world points plus a dithering shift d ~ N(0, dither I) mm, label 1) and one non-corresponding pair (at least min_distance mm away, label 0); intensities in [0, 1] by each image's range; for train with a closure loss",
        options: &[
            o("patch", "17", "patch side in voxels (one, or [x, y, z])"),
            o("n", "64", "positions"),
            o("mask", "-", "corresponding positions only where the mask holds at the patch centre"),
            o("min_distance", "10", "mm between the centres of a non-corresponding pair"),
            o("flips", "false", "symmetrization: the same random flips on both patches"),
            o("rotations", "false", "symmetrization: the same random 90-degree rotation on both patches"),
            o("dither", "0", "dithering variance sigma^2, mm^2"),
            o("draws", "1", "corresponding pairs (dithers) per position"),
            o("level", "1", "downsampling factor of both images (Gaussian pyramid)"),
            o("seed", "0", "seed of every draw"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet p = patch_pairs(t1, t2, patch=9, n=10, mask=t1 > 0.5, draws=2, dither=4.0, seed=1);\nassert(p.len() == 30 && p[0].x.shape == [2, 9, 9, 9], \"two dithered pairs and one non-corresponding pair per position\");\nassert(p[0].label == 1 && p[2].label == 0, \"labels\");",
    },
    Help {
        name: "deep_metric",
        domain: "nn",
        signature: "deep_metric(classifier) -> Metric",
        summary: "A learned similarity measure (Sedghi et al. eq. 2): the sum over patch positions of the classifier's log-likelihood ratio of registered (logit 1 - logit 0) for the fixed patch and the warped moving patch; positions drawn once per level from seed (inside mask=); usable by iso, register and measure, with Powell or by autograd through the warp",
        options: &[
            o("patches", "64", "patch positions"),
            o("patch", "17", "patch side in voxels (one, or [x, y, z]), as the classifier was trained"),
            o("seed", "0", "seed of the positions"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet c = nn::sequential([nn::conv3d(2, 4, kernel=3, stride=2), nn::relu(), nn::global_avg_pool(), nn::linear(4, 2)], seed=1);\nlet m = deep_metric(c, patches=8, patch=9);\nlet v = measure(m, t1, t1);\nassert(type_of(v) == \"f64\" && v == measure(m, t1, t1), \"a number, the same at the same positions\");",
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
