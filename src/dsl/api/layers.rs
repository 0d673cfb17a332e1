//! Networks from blocks in scripts: the `nn::` namespace of layer constructors (so `nn::conv3d` the
//! layer does not clash with `conv3d` the function on tensors, as in PyTorch's `nn.Conv3d` and
//! `F.conv3d`) and `nn::sequential`, which makes a [`Network::Sequential`] from them.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, FuncRegistration, Map, Module};

use crate::dsl::help::{o, Help};
use crate::dsl::options::{arg_error, num, numbers, type_of, whole, Opts, OrHost, RhaiResult};
use crate::dsl::value::NetValue;
use crate::dsl::Host;
use crate::nn::{Dim3, LayerSpec, Sequential, SequentialConfig, UpsampleMode};
use crate::train::Network;

/// A layer held by a script, before it joins a network.
#[derive(Clone, Debug)]
pub struct LayerValue(pub LayerSpec);

/// A size per axis `(D, H, W)` from one whole number or three.
fn dim3(d: &Dynamic, func: &str, what: &str) -> RhaiResult<Dim3> {
    let bad = || arg_error(func, format!("{what} takes one whole number or three [D, H, W], got {}", type_of(d)));
    let v = numbers(d).ok_or_else(bad)?;
    let v: Vec<usize> = v.into_iter().map(whole).collect::<Option<_>>().ok_or_else(bad)?;
    match v.as_slice() {
        [a] => Ok(Dim3([*a; 3])),
        [a, b, c] => Ok(Dim3([*a, *b, *c])),
        _ => Err(bad()),
    }
}

fn opt_dim3(o: &Opts, key: &str, default: usize) -> RhaiResult<Dim3> {
    match o.get(key) {
        Some(d) => dim3(d, o.func(), key),
        None => Ok(Dim3([default; 3])),
    }
}

fn count(d: &Dynamic, func: &str, what: &str) -> RhaiResult<usize> {
    num(d)
        .and_then(whole)
        .filter(|&n| n > 0)
        .ok_or_else(|| arg_error(func, format!("{what} must be a whole number >= 1, got {d}")))
}

fn layer(spec: LayerSpec) -> RhaiResult<LayerValue> {
    spec.validate().host()?;
    Ok(LayerValue(spec))
}

/// Registers `name` in `m` twice: with its positional arguments only, and with a trailing map of
/// keyword arguments (checked against the help entry `nn::name`).
macro_rules! layer_fn {
    ($m:expr, $name:literal, |$($arg:ident : $ty:ty),*| $o:ident => $body:expr) => {{
        FuncRegistration::new($name).set_into_module(&mut $m, move |$($arg: $ty),*| -> RhaiResult<LayerValue> {
            let $o = Opts::none(concat!("nn::", $name));
            $body
        });
        FuncRegistration::new($name).set_into_module(&mut $m, move |$($arg: $ty,)* map: Map| -> RhaiResult<LayerValue> {
            let $o = Opts::new(concat!("nn::", $name), map)?;
            $body
        });
    }};
}

fn sequential(host: &Host, layers: Array, o: &Opts) -> RhaiResult<NetValue> {
    let mut specs = Vec::with_capacity(layers.len());
    for (i, d) in layers.into_iter().enumerate() {
        match d.clone().try_cast::<LayerValue>() {
            Some(l) => specs.push(l.0),
            None => {
                return Err(arg_error(
                    "nn::sequential",
                    format!("item {i} is {}, not a layer (nn::conv3d(...), nn::relu(), ...)", type_of(&d)),
                ))
            }
        }
    }
    let seed = o.usize("seed")?.unwrap_or(0) as u64;
    let name = o.string("name")?.unwrap_or_else(|| "sequential".into());
    let net =
        Network::Sequential(Sequential::new(&name, SequentialConfig { layers: specs }, &host.device, seed).host()?);
    // Not made the active network: `net(m, f)` needs a registration network.
    Ok(Arc::new(net))
}

/// Registers the `Layer` type and the `nn::` namespace.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine
        .register_type_with_name::<LayerValue>("Layer")
        .register_fn("to_string", |l: &mut LayerValue| format!("nn::{}", l.0))
        .register_fn("to_debug", |l: &mut LayerValue| format!("nn::{}", l.0));
    let mut m = Module::new();
    layer_fn!(m, "conv3d", |cin: Dynamic, cout: Dynamic| o => layer(LayerSpec::Conv3d {
        in_channels: count(&cin, "nn::conv3d", "in_channels")?,
        out_channels: count(&cout, "nn::conv3d", "out_channels")?,
        kernel: opt_dim3(&o, "kernel", 3)?,
        stride: opt_dim3(&o, "stride", 1)?,
        padding: opt_dim3(&o, "padding", 0)?,
        bias: o.bool("bias")?.unwrap_or(true),
    }));
    layer_fn!(m, "linear", |fin: Dynamic, fout: Dynamic| o => layer(LayerSpec::Linear {
        in_features: count(&fin, "nn::linear", "in_features")?,
        out_features: count(&fout, "nn::linear", "out_features")?,
        bias: o.bool("bias")?.unwrap_or(true),
    }));
    layer_fn!(m, "relu", | | _o => layer(LayerSpec::Relu));
    layer_fn!(m, "sigmoid", | | _o => layer(LayerSpec::Sigmoid));
    layer_fn!(m, "tanh", | | _o => layer(LayerSpec::Tanh));
    layer_fn!(m, "flatten", | | _o => layer(LayerSpec::Flatten));
    layer_fn!(m, "global_avg_pool", | | _o => layer(LayerSpec::GlobalAvgPool));
    layer_fn!(m, "global_max_pool", | | _o => layer(LayerSpec::GlobalMaxPool));
    layer_fn!(m, "leaky_relu", | | _o => layer(LayerSpec::LeakyRelu { slope: 0.01 }));
    layer_fn!(m, "leaky_relu", |slope: Dynamic| _o => {
        let slope = num(&slope).ok_or_else(|| arg_error("nn::leaky_relu", "the slope must be a number"))?;
        layer(LayerSpec::LeakyRelu { slope })
    });
    layer_fn!(m, "dropout", | | _o => layer(LayerSpec::Dropout { p: 0.5 }));
    layer_fn!(m, "dropout", |p: Dynamic| _o => {
        let p = num(&p).ok_or_else(|| arg_error("nn::dropout", "p must be a number"))?;
        layer(LayerSpec::Dropout { p })
    });
    layer_fn!(m, "softmax", | | o => {
        let dim = match o.get("dim") {
            None => 1,
            Some(d) => num(d)
                .filter(|x| x.fract() == 0.0 && x.abs() < 64.0)
                .ok_or_else(|| arg_error("nn::softmax", format!("dim must be a whole number, got {d}")))? as i64,
        };
        layer(LayerSpec::Softmax { dim })
    });
    layer_fn!(m, "max_pool3d", |k: Dynamic| _o => layer(LayerSpec::MaxPool3d { kernel: dim3(&k, "nn::max_pool3d", "kernel")? }));
    layer_fn!(m, "avg_pool3d", |k: Dynamic| _o => layer(LayerSpec::AvgPool3d { kernel: dim3(&k, "nn::avg_pool3d", "kernel")? }));
    layer_fn!(m, "instance_norm", |c: Dynamic| o => layer(LayerSpec::InstanceNorm {
        channels: count(&c, "nn::instance_norm", "channels")?,
        affine: o.bool("affine")?.unwrap_or(false),
    }));
    layer_fn!(m, "group_norm", |g: Dynamic, c: Dynamic| _o => layer(LayerSpec::GroupNorm {
        groups: count(&g, "nn::group_norm", "groups")?,
        channels: count(&c, "nn::group_norm", "channels")?,
    }));
    layer_fn!(m, "upsample", |f: Dynamic| o => {
        let mode = match o.string("mode")?.as_deref().unwrap_or("nearest") {
            "nearest" => UpsampleMode::Nearest,
            "trilinear" | "linear" => UpsampleMode::Trilinear { align_corners: o.bool("align_corners")?.unwrap_or(false) },
            other => {
                let s = crate::names::suggest(other, ["nearest", "trilinear"]).unwrap_or_else(|| "nearest".into());
                return Err(arg_error("nn::upsample", format!("unknown mode `{other}`, did you mean `{s}`?")));
            }
        };
        layer(LayerSpec::Upsample { factor: dim3(&f, "nn::upsample", "factor")?, mode })
    });
    {
        let h = host.clone();
        FuncRegistration::new("sequential").set_into_module(&mut m, move |layers: Array| -> RhaiResult<NetValue> {
            sequential(&h, layers, &Opts::none("nn::sequential"))
        });
        let h = host.clone();
        FuncRegistration::new("sequential").set_into_module(
            &mut m,
            move |layers: Array, map: Map| -> RhaiResult<NetValue> {
                sequential(&h, layers, &Opts::new("nn::sequential", map)?)
            },
        );
    }
    engine.register_static_module("nn", m.into());
}

macro_rules! layer_help {
    ($name:literal, $sig:literal, $summary:literal, $opts:expr, $example:literal) => {
        Help { name: $name, domain: "nn", signature: $sig, summary: $summary, options: $opts, example: $example }
    };
}

/// The help of the `nn::` namespace (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    layer_help!(
        "nn::sequential",
        "nn::sequential([layer, ...]) -> Network",
        "A network of layers applied in turn (PyTorch's nn.Sequential): net.forward(x), net.weights (a map of its weight tensors by name), net.params (their count); train it with train(net, data, loss=|net, batch| ...); save_net / load_net keep its layers. Not a registration network: net(m, f) does not use it",
        &[
            o("seed", "0", "the initial weights (each layer's initialization) and the dropout masks are drawn from this seed"),
            o("name", "sequential", "the network's name"),
        ],
        "let n = nn::sequential([nn::conv3d(2, 4, kernel=3, stride=2, padding=1), nn::relu(), nn::global_avg_pool(), nn::linear(4, 2)], seed=1);\nlet y = n.forward(zeros([5, 2, 8, 8, 8]));\nassert(y.shape == [5, 2] && n.params == 2 * 4 * 27 + 4 + 4 * 2 + 2, \"(N, 2) out; 226 weights\");\nassert(n.weights.keys().len() == 4, \"conv and linear, weight and bias each\");"
    ),
    layer_help!(
        "nn::conv3d",
        "nn::conv3d(in_channels, out_channels) -> Layer",
        "A 3-D convolution layer (N, in, D, H, W) -> (N, out, oD, oH, oW), oD = (D + 2 padding - kernel) / stride + 1; PyTorch's initialization",
        &[
            o("kernel", "3", "kernel size, voxels (one, or [D, H, W])"),
            o("stride", "1", "stride, voxels"),
            o("padding", "0", "zeros added on each side, voxels"),
            o("bias", "true", "a learned bias per output channel"),
        ],
        "let n = nn::sequential([nn::conv3d(2, 16, kernel=5, stride=2)]);\nassert(n.forward(zeros([1, 2, 16, 16, 16])).shape == [1, 16, 6, 6, 6], \"(16 - 5) / 2 + 1 = 6\");"
    ),
    layer_help!(
        "nn::linear",
        "nn::linear(in_features, out_features) -> Layer",
        "A fully connected layer on the last axis (..., in) -> (..., out)",
        &[o("bias", "true", "a learned bias")],
        "let n = nn::sequential([nn::linear(3, 2, bias=false)]);\nassert(n.forward(ones([4, 3])).shape == [4, 2] && n.params == 6, \"no bias\");"
    ),
    layer_help!(
        "nn::relu",
        "nn::relu() -> Layer",
        "max(x, 0)",
        &[],
        "let n = nn::sequential([nn::relu()]);\nassert(n.forward(tensor([-1.0, 2.0])).to_array() == [0.0, 2.0], \"negatives to zero\");"
    ),
    layer_help!(
        "nn::leaky_relu",
        "nn::leaky_relu(); nn::leaky_relu(slope) -> Layer",
        "x where x > 0, slope * x elsewhere (slope 0.01 when not given; VoxelMorph uses 0.2)",
        &[],
        "let n = nn::sequential([nn::leaky_relu(0.2)]);\nassert(abs(n.forward(tensor([-1.0, 2.0])).to_array()[0] + 0.2) < 1e-6, \"-0.2\");"
    ),
    layer_help!(
        "nn::sigmoid",
        "nn::sigmoid() -> Layer",
        "1 / (1 + exp(-x))",
        &[],
        "let n = nn::sequential([nn::sigmoid()]);\nassert(n.forward(tensor([0.0])).item() == 0.5, \"sigmoid(0)\");"
    ),
    layer_help!(
        "nn::tanh",
        "nn::tanh() -> Layer",
        "tanh(x)",
        &[],
        "let n = nn::sequential([nn::tanh()]);\nassert(n.forward(tensor([0.0])).item() == 0.0, \"tanh(0)\");"
    ),
    layer_help!(
        "nn::softmax",
        "nn::softmax() -> Layer",
        "Softmax along an axis (the classes of (N, C) logits by default)",
        &[o("dim", "1", "the axis (negative: from the end)")],
        "let n = nn::sequential([nn::softmax(dim=-1)]);\nlet p = n.forward(tensor([[1.0, 1.0, 1.0, 1.0]]));\nassert(abs(p[0][0].item() - 0.25) < 1e-6, \"uniform\");"
    ),
    layer_help!(
        "nn::dropout",
        "nn::dropout(); nn::dropout(p) -> Layer",
        "While training (inside train), zeroes each value with probability p (0.5 when not given) and scales the others by 1 / (1 - p); the identity otherwise",
        &[],
        "let n = nn::sequential([nn::dropout(0.5)]);\nassert(n.forward(ones([10])).sum().item() == 10.0, \"outside training: the identity\");"
    ),
    layer_help!(
        "nn::max_pool3d",
        "nn::max_pool3d(kernel) -> Layer",
        "Max pooling over blocks of kernel voxels (stride = kernel; one size or [D, H, W])",
        &[],
        "let n = nn::sequential([nn::max_pool3d(2)]);\nassert(n.forward(zeros([1, 3, 4, 6, 8])).shape == [1, 3, 2, 3, 4], \"halved\");"
    ),
    layer_help!(
        "nn::avg_pool3d",
        "nn::avg_pool3d(kernel) -> Layer",
        "Average pooling over blocks of kernel voxels (stride = kernel; one size or [D, H, W])",
        &[],
        "let n = nn::sequential([nn::avg_pool3d([1, 2, 2])]);\nassert(n.forward(ones([1, 1, 2, 4, 4])).shape == [1, 1, 2, 2, 2], \"in-plane only\");"
    ),
    layer_help!(
        "nn::global_avg_pool",
        "nn::global_avg_pool() -> Layer",
        "The mean over D, H, W: (N, C, D, H, W) -> (N, C)",
        &[],
        "let n = nn::sequential([nn::global_avg_pool()]);\nassert(n.forward(ones([2, 3, 4, 4, 4])).shape == [2, 3], \"(N, C)\");"
    ),
    layer_help!(
        "nn::global_max_pool",
        "nn::global_max_pool() -> Layer",
        "The maximum over D, H, W: (N, C, D, H, W) -> (N, C)",
        &[],
        "let n = nn::sequential([nn::global_max_pool()]);\nassert(n.forward(arange(8).reshape([1, 1, 2, 2, 2])).item() == 7.0, \"the largest\");"
    ),
    layer_help!(
        "nn::flatten",
        "nn::flatten() -> Layer",
        "(N, ...) -> (N, F): every axis but the first as one",
        &[],
        "let n = nn::sequential([nn::flatten()]);\nassert(n.forward(zeros([2, 3, 4, 5, 6])).shape == [2, 360], \"3 * 4 * 5 * 6\");"
    ),
    layer_help!(
        "nn::instance_norm",
        "nn::instance_norm(channels) -> Layer",
        "Instance normalization: each channel of each sample to mean 0, variance 1 over D, H, W",
        &[o("affine", "false", "a learned scale and shift per channel")],
        "let n = nn::sequential([nn::instance_norm(2, affine=true)]);\nlet y = n.forward(randn([1, 2, 4, 4, 4], seed=3) * 5.0 + 2.0);\nassert(abs(y.mean().item()) < 1e-5 && n.params == 4, \"normalized; a scale and a shift per channel\");"
    ),
    layer_help!(
        "nn::group_norm",
        "nn::group_norm(groups, channels) -> Layer",
        "Group normalization (Wu & He 2018): channels in groups, each to mean 0, variance 1, then a learned scale and shift per channel",
        &[],
        "let n = nn::sequential([nn::group_norm(2, 4)]);\nassert(n.forward(randn([1, 4, 3, 3, 3], seed=1)).shape == [1, 4, 3, 3, 3] && n.params == 8, \"same shape\");"
    ),
    layer_help!(
        "nn::upsample",
        "nn::upsample(factor) -> Layer",
        "Upsampling by an integer factor per axis (one, or [D, H, W])",
        &[
            o("mode", "nearest", "nearest or trilinear"),
            o("align_corners", "false", "trilinear: PyTorch's align_corners"),
        ],
        "let n = nn::sequential([nn::upsample(2, mode=\"trilinear\")]);\nassert(n.forward(ones([1, 1, 2, 2, 2])).shape == [1, 1, 4, 4, 4], \"doubled\");"
    ),
];
