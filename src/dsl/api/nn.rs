//! Registration networks in scripts: `affine_net`, `unet`, training pairs (`pairs`,
//! `synthetic_pairs`, `pair`), `train`, `evaluate_net`, `load_net`, `save_net`, `use_net`, and
//! `net(m, f)`, the starting state of a pipeline from the active network's prediction.

use std::sync::Arc;

use candle_core::Device;
use rhai::{Array, Dynamic, Engine, Map};

use super::{floats, with_opts};
use crate::dsl::options::{arg_error, Opts, OrHost, RhaiResult};
use crate::dsl::value::TransformValue;
use crate::dsl::Host;
use crate::image::Image;
use crate::metrics::Metric;
use crate::nn::{AffineNet, AffineNetConfig, Dim3, UNet, UNetConfig, UpsampleMode};
use crate::pipeline::{self, RegState};
use crate::train::{
    self, AffineBounds, Deformation, IntensityAugmentation, LrSchedule, Network, Pair, PairSource, SyntheticPairs,
    TrainOptions,
};

/// A network held by a script (shared: training changes its weights in place).
pub type NetValue = Arc<Network>;
/// A source of training pairs held by a script.
pub type PairsValue = Arc<PairSource>;

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
    let net = AffineNet::new(&name, cfg, &Device::Cpu).host()?;
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
    let net = UNet::new(&name, cfg, &Device::Cpu).host()?;
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
    m.insert("stop".into(), r.stop.clone().into());
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
    if let Some(r) = o.string("regularizer")? {
        t.regularizer = crate::register::parse_regularizer(&r).host_key("regularizer")?;
    }
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
            let n = Arc::new(Network::load(std::path::Path::new(path), &Device::Cpu).host()?);
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

/// How a network prints.
pub fn net_string(n: &Network) -> String {
    let s = n.input_size().0;
    format!("Network({} \"{}\", input {}x{}x{}, {} parameters)", n.kind(), n.name(), s[0], s[1], s[2], n.num_params())
}

/// How a pair source prints.
pub fn pairs_string(p: &PairSource) -> String {
    match p {
        PairSource::List(v) => format!("Pairs({} pairs)", v.len()),
        PairSource::Synthetic(s) => {
            let what = match s.deformation {
                Deformation::Affine(_) => "random affines",
                Deformation::Smooth { .. } => "smooth deformations",
            };
            format!("Pairs({what} of {} moving image(s), seed {})", s.moving.len(), s.seed)
        }
    }
}
