//! A network built from a list of layers, PyTorch's `nn.Sequential`: what a script builds with
//! `nn::sequential([nn::conv3d(2, 16, kernel=5, stride=2), nn::leaky_relu(0.2), ...])` when it needs a
//! network that is not one of the registration networks (a patch classifier for a learned similarity
//! measure, Sedghi et al.; a feature extractor; a small regressor).
//!
//! Each layer is a serde [`LayerSpec`], so a network saves as its weights (safetensors, names
//! `l{i}.weight`, `l{i}.bias` for layer `i`) and its list of layers (JSON beside them, kind
//! [`SEQUENTIAL_KIND`]) through [`super::weights`], and loads back to the same outputs.
//!
//! Volumes are `(N, C, D, H, W)` as everywhere in [`crate::nn`]; vectors `(N, F)`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::weights::{load_network_file, save_network};
use super::{
    conv3d_layer, global_avg_pool3d, global_max_pool3d, group_norm, instance_norm, leaky_relu, Conv3d, Conv3dConfig,
    Dim3, GroupNorm, InstanceNorm, Linear, Pool3d, PoolKind, Upsample3d, UpsampleMode,
};
use crate::error::{Error, Result};

/// The `kind` of a sequential network in its JSON file.
pub const SEQUENTIAL_KIND: &str = "sequential";

/// One layer of a [`Sequential`] network, with its sizes (the parameters live in the network's
/// `VarMap`). Shapes: volumes `(N, C, D, H, W)`, vectors `(N, F)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "layer", rename_all = "snake_case")]
pub enum LayerSpec {
    /// A 3-D convolution ([`super::conv3d`]) `(N, in, D, H, W) -> (N, out, oD, oH, oW)`, PyTorch's
    /// initialization; kernel, stride and zero padding in voxels per axis `(D, H, W)`.
    Conv3d { in_channels: usize, out_channels: usize, kernel: Dim3, stride: Dim3, padding: Dim3, bias: bool },
    /// A fully connected layer on the last axis `(..., in) -> (..., out)` (candle_nn's initialization).
    Linear { in_features: usize, out_features: usize, bias: bool },
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, `slope * x` elsewhere.
    LeakyRelu { slope: f64 },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Softmax along `dim` (negative: from the end).
    Softmax { dim: i64 },
    /// Dropout: while training, each value is zeroed with probability `p` and the others scaled by
    /// `1 / (1 - p)`; the identity otherwise (PyTorch's inverted dropout).
    Dropout { p: f64 },
    /// Max pooling over blocks of `kernel` (stride = kernel).
    MaxPool3d { kernel: Dim3 },
    /// Average pooling over blocks of `kernel` (stride = kernel).
    AvgPool3d { kernel: Dim3 },
    /// The mean over D, H, W: `(N, C, D, H, W) -> (N, C)`.
    GlobalAvgPool,
    /// The maximum over D, H, W: `(N, C, D, H, W) -> (N, C)`.
    GlobalMaxPool,
    /// `(N, ...) -> (N, F)`.
    Flatten,
    /// Instance normalization of each channel, with a learned scale and shift when `affine`.
    InstanceNorm { channels: usize, affine: bool },
    /// Group normalization (Wu & He 2018) with a learned per-channel scale and shift.
    GroupNorm { groups: usize, channels: usize },
    /// Upsampling by an integer factor per axis `(D, H, W)`, nearest or trilinear.
    Upsample { factor: Dim3, mode: UpsampleMode },
}

fn dim3_text(d: &Dim3) -> String {
    let [a, b, c] = d.0;
    if a == b && b == c {
        a.to_string()
    } else {
        format!("[{a}, {b}, {c}]")
    }
}

impl std::fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use LayerSpec::*;
        match self {
            Conv3d { in_channels, out_channels, kernel, stride, padding, bias } => {
                write!(f, "conv3d({in_channels}, {out_channels}, kernel={}", dim3_text(kernel))?;
                if stride.0 != [1; 3] {
                    write!(f, ", stride={}", dim3_text(stride))?;
                }
                if padding.0 != [0; 3] {
                    write!(f, ", padding={}", dim3_text(padding))?;
                }
                if !bias {
                    write!(f, ", bias=false")?;
                }
                write!(f, ")")
            }
            Linear { in_features, out_features, bias } => {
                write!(f, "linear({in_features}, {out_features}{})", if *bias { "" } else { ", bias=false" })
            }
            Relu => write!(f, "relu()"),
            LeakyRelu { slope } => write!(f, "leaky_relu({slope})"),
            Sigmoid => write!(f, "sigmoid()"),
            Tanh => write!(f, "tanh()"),
            Softmax { dim } => write!(f, "softmax(dim={dim})"),
            Dropout { p } => write!(f, "dropout({p})"),
            MaxPool3d { kernel } => write!(f, "max_pool3d({})", dim3_text(kernel)),
            AvgPool3d { kernel } => write!(f, "avg_pool3d({})", dim3_text(kernel)),
            GlobalAvgPool => write!(f, "global_avg_pool()"),
            GlobalMaxPool => write!(f, "global_max_pool()"),
            Flatten => write!(f, "flatten()"),
            InstanceNorm { channels, affine } => write!(f, "instance_norm({channels}, affine={affine})"),
            GroupNorm { groups, channels } => write!(f, "group_norm({groups}, {channels})"),
            Upsample { factor, mode } => {
                let m = match mode {
                    UpsampleMode::Nearest => "nearest",
                    UpsampleMode::Trilinear { .. } => "trilinear",
                };
                write!(f, "upsample({}, mode=\"{m}\")", dim3_text(factor))
            }
        }
    }
}

impl LayerSpec {
    /// Checks the sizes and constants.
    ///
    /// Errors: [`Error::InvalidArgument`] for a zero size or count, a dropout probability outside
    /// `[0, 1)`, a non-finite slope, channels not divisible by the groups.
    pub fn validate(&self) -> Result<()> {
        use LayerSpec::*;
        let bad = |msg: String| Err(Error::arg(format!("nn::{self}"), msg));
        match self {
            Conv3d { in_channels, out_channels, kernel, stride, .. }
                if *in_channels == 0 || *out_channels == 0 || kernel.0.contains(&0) || stride.0.contains(&0) =>
            {
                return bad("channels, kernel and stride must be at least 1".into());
            }
            Linear { in_features, out_features, .. } if *in_features == 0 || *out_features == 0 => {
                return bad("the sizes must be at least 1".into());
            }
            LeakyRelu { slope } if !slope.is_finite() => return bad(format!("the slope must be finite, got {slope}")),
            Dropout { p } if !(0.0..1.0).contains(p) => return bad(format!("p must be in [0, 1), got {p}")),
            MaxPool3d { kernel } | AvgPool3d { kernel } if kernel.0.contains(&0) => {
                return bad("the kernel must be at least 1".into());
            }
            InstanceNorm { channels: 0, .. } => return bad("channels must be at least 1".into()),
            GroupNorm { groups, channels } if *groups == 0 || *channels == 0 || channels % groups != 0 => {
                return bad(format!("{channels} channels do not split into {groups} groups"));
            }
            Upsample { factor, .. } if factor.0.contains(&0) => return bad("the factor must be at least 1".into()),
            _ => {}
        }
        Ok(())
    }
}

/// The configuration of a [`Sequential`] network: its layers, input side first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequentialConfig {
    pub layers: Vec<LayerSpec>,
}

/// An initial weight distribution.
#[derive(Clone, Copy)]
enum Draw {
    /// Uniform in `+-bound`.
    Uniform(f64),
    /// Normal with mean 0 and this standard deviation (Box-Muller).
    Normal(f64),
}

impl Draw {
    fn sample(self, r: &mut ChaCha8Rng) -> f64 {
        match self {
            Draw::Uniform(b) => r.random_range(-b..=b),
            Draw::Normal(sd) => {
                let (u1, u2): (f64, f64) = (r.random_range(f64::EPSILON..1.0), r.random());
                sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            }
        }
    }
}

/// A layer with its parameters.
enum Built {
    Conv(Conv3d),
    Linear(Linear),
    Instance(InstanceNorm),
    Group(GroupNorm),
    /// A layer without parameters, applied from its spec.
    Plain,
}

/// A network of layers applied in turn (see the module doc). Dropout is active only in training mode
/// ([`Sequential::set_training`]), with masks drawn from a generator seeded at construction.
pub struct Sequential {
    name: String,
    config: SequentialConfig,
    varmap: VarMap,
    layers: Vec<Built>,
    training: AtomicBool,
    rng: Mutex<ChaCha8Rng>,
}

impl Sequential {
    /// A new network of `config`'s layers with fresh weights on `device` drawn from `seed` (see
    /// [`Sequential::reseed`]).
    ///
    /// Errors: no layers; an invalid layer ([`LayerSpec::validate`]); the backend's.
    pub fn new(name: &str, config: SequentialConfig, device: &Device, seed: u64) -> Result<Self> {
        if config.layers.is_empty() {
            return Err(Error::arg("nn::sequential", "a network needs at least one layer"));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let mut layers = Vec::with_capacity(config.layers.len());
        for (i, spec) in config.layers.iter().enumerate() {
            spec.validate()?;
            let vb = vb.pp(format!("l{i}"));
            layers.push(match spec {
                LayerSpec::Conv3d { in_channels, out_channels, kernel, stride, padding, bias } => {
                    let cfg = Conv3dConfig { stride: *stride, padding: *padding, bias: *bias };
                    Built::Conv(conv3d_layer(*in_channels, *out_channels, *kernel, cfg, vb)?)
                }
                LayerSpec::Linear { in_features, out_features, bias } => Built::Linear(if *bias {
                    candle_nn::linear(*in_features, *out_features, vb)?
                } else {
                    candle_nn::linear_no_bias(*in_features, *out_features, vb)?
                }),
                LayerSpec::InstanceNorm { channels, affine } => {
                    Built::Instance(instance_norm(*channels, 1e-5, *affine, vb)?)
                }
                LayerSpec::GroupNorm { groups, channels } => Built::Group(group_norm(*groups, *channels, 1e-5, vb)?),
                _ => Built::Plain,
            });
        }
        let net = Sequential {
            name: name.to_string(),
            config,
            varmap,
            layers,
            training: AtomicBool::new(false),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        };
        net.reseed(seed)?;
        Ok(net)
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The configuration (its layers).
    pub fn config(&self) -> &SequentialConfig {
        &self.config
    }
    /// The weights.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }
    /// Training mode (dropout active) or evaluation mode (the default).
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }
    /// Whether dropout is active.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
    /// Redraws every weight from a generator seeded by `seed` with its layer's initialization
    /// (convolutions: uniform in `+-1 / sqrt(C_in k_D k_H k_W)`, PyTorch's; linear layers: weight normal
    /// with standard deviation `sqrt(2 / in)`, bias uniform in `+-1 / sqrt(in)`, candle_nn's;
    /// normalizations keep scale 1 and shift 0), and reseeds the dropout masks: a network made with a
    /// seed starts the same on every run (candle's own generator cannot be seeded).
    ///
    /// Errors: the backend's.
    pub fn reseed(&self, seed: u64) -> Result<()> {
        let vars =
            self.varmap.data().lock().map_err(|_| Error::arg("nn::sequential", "weights lock poisoned"))?.clone();
        for (i, spec) in self.config.layers.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
            // The weight's distribution (uniform bound or normal standard deviation) and the bias's bound.
            let (weight, bias) = match spec {
                LayerSpec::Conv3d { in_channels, kernel, .. } => {
                    let b = 1.0 / ((in_channels * kernel.0.iter().product::<usize>()) as f64).sqrt();
                    (Draw::Uniform(b), b)
                }
                LayerSpec::Linear { in_features, .. } => {
                    (Draw::Normal((2.0 / *in_features as f64).sqrt()), 1.0 / (*in_features as f64).sqrt())
                }
                _ => continue,
            };
            for (name, d) in [("weight", weight), ("bias", Draw::Uniform(bias))] {
                let Some(var) = vars.get(&format!("l{i}.{name}")) else { continue };
                let v: Vec<f32> = (0..var.elem_count()).map(|_| d.sample(&mut rng) as f32).collect();
                var.set(&Tensor::from_vec(v, var.shape(), var.device())?.to_dtype(var.dtype())?)?;
            }
        }
        if let Ok(mut r) = self.rng.lock() {
            *r = ChaCha8Rng::seed_from_u64(seed);
        }
        Ok(())
    }

    /// Runs the layers on `x`, differentiable in the weights and in `x`.
    ///
    /// Errors: [`Error::Shape`] naming the layer (its index and spec) when `x` does not fit it (a
    /// convolution's channels, a linear layer's features, a volume layer given a non-5-D tensor); the
    /// backend's, with the layer named.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (spec, layer)) in self.config.layers.iter().zip(&self.layers).enumerate() {
            h = self.layer(i, spec, layer, &h).map_err(|e| match e {
                Error::Shape { .. } | Error::InvalidArgument { .. } => e,
                other => Error::arg(format!("layer {i}, nn::{spec}"), other.to_string()),
            })?;
        }
        Ok(h)
    }

    fn layer(&self, i: usize, spec: &LayerSpec, layer: &Built, h: &Tensor) -> Result<Tensor> {
        let shape_err = |expected: String| Error::Shape {
            op: format!("layer {i}, nn::{spec}"),
            expected,
            actual: format!("{:?}", h.dims()),
        };
        let volume = || -> Result<()> {
            if h.rank() != 5 {
                return Err(shape_err("a volume (N, C, D, H, W)".into()));
            }
            Ok(())
        };
        Ok(match (spec, layer) {
            (LayerSpec::Conv3d { in_channels, .. }, Built::Conv(c)) => {
                if h.rank() != 5 || h.dims()[1] != *in_channels {
                    return Err(shape_err(format!("(N, {in_channels}, D, H, W)")));
                }
                c.forward(h)?
            }
            (LayerSpec::Linear { in_features, .. }, Built::Linear(l)) => {
                let d = h.dims();
                if d.len() < 2 || d[d.len() - 1] != *in_features {
                    return Err(shape_err(format!("(N, ..., {in_features})")));
                }
                let lead = &d[..d.len() - 1];
                let y = l.forward(&h.reshape(((), *in_features))?)?;
                let mut out = lead.to_vec();
                out.push(y.dim(1)?);
                y.reshape(out)?
            }
            (LayerSpec::Relu, _) => h.relu()?,
            (LayerSpec::LeakyRelu { slope }, _) => leaky_relu(h, *slope)?,
            (LayerSpec::Sigmoid, _) => candle_nn::ops::sigmoid(h)?,
            (LayerSpec::Tanh, _) => h.tanh()?,
            (LayerSpec::Softmax { dim }, _) => {
                let r = h.rank() as i64;
                let d = if *dim < 0 { r + dim } else { *dim };
                if !(0..r).contains(&d) {
                    return Err(shape_err(format!("a tensor with axis {dim}")));
                }
                candle_nn::ops::softmax(h, d as usize)?
            }
            (LayerSpec::Dropout { p }, _) => {
                if !self.is_training() || *p == 0.0 {
                    h.clone()
                } else {
                    let keep = 1.0 - p;
                    let n = h.elem_count();
                    let mask: Vec<f32> = {
                        let mut rng =
                            self.rng.lock().map_err(|_| Error::arg("nn::dropout", "generator lock poisoned"))?;
                        (0..n).map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect()
                    };
                    let mask = Tensor::from_vec(mask, h.dims(), h.device())?.to_dtype(h.dtype())?;
                    (h * mask)?
                }
            }
            (LayerSpec::MaxPool3d { kernel }, _) => {
                volume()?;
                Pool3d::new(PoolKind::Max, *kernel).forward(h)?
            }
            (LayerSpec::AvgPool3d { kernel }, _) => {
                volume()?;
                Pool3d::new(PoolKind::Avg, *kernel).forward(h)?
            }
            (LayerSpec::GlobalAvgPool, _) => {
                volume()?;
                global_avg_pool3d(h)?
            }
            (LayerSpec::GlobalMaxPool, _) => {
                volume()?;
                global_max_pool3d(h)?
            }
            (LayerSpec::Flatten, _) => {
                if h.rank() < 1 {
                    return Err(shape_err("(N, ...)".into()));
                }
                h.flatten_from(1)?
            }
            (LayerSpec::InstanceNorm { channels, .. }, Built::Instance(n)) => {
                if h.rank() < 3 || h.dims()[1] != *channels {
                    return Err(shape_err(format!("(N, {channels}, D, H, W)")));
                }
                n.forward(h)?
            }
            (LayerSpec::GroupNorm { channels, .. }, Built::Group(n)) => {
                if h.rank() < 3 || h.dims()[1] != *channels {
                    return Err(shape_err(format!("(N, {channels}, D, H, W)")));
                }
                n.forward(h)?
            }
            (LayerSpec::Upsample { factor, mode }, _) => {
                volume()?;
                Upsample3d::new(*factor, *mode).forward(h)?
            }
            (spec, _) => {
                return Err(Error::arg("nn::sequential", format!("layer {i} ({spec}) was built as another kind")))
            }
        })
    }

    /// Saves the weights (safetensors at `weights`) and the layers (JSON beside them).
    ///
    /// Errors: as [`save_network`].
    pub fn save(&self, weights: &std::path::Path) -> Result<()> {
        save_network(weights, SEQUENTIAL_KIND, &self.name, &self.config, &self.varmap)
    }

    /// Loads a network written by [`Sequential::save`] onto `device`.
    ///
    /// Errors: as [`load_network_file`]; an invalid layer list; weights missing or of another shape.
    pub fn load(weights: &std::path::Path, device: &Device) -> Result<Self> {
        let (name, config) = load_network_file::<SequentialConfig>(weights, SEQUENTIAL_KIND)?;
        let mut net = Sequential::new(&name, config, device, 0)?;
        net.varmap.load(weights)?;
        Ok(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SequentialConfig {
        SequentialConfig {
            layers: vec![
                LayerSpec::Conv3d {
                    in_channels: 2,
                    out_channels: 4,
                    kernel: Dim3([3; 3]),
                    stride: Dim3([2; 3]),
                    padding: Dim3([1; 3]),
                    bias: true,
                },
                LayerSpec::LeakyRelu { slope: 0.2 },
                LayerSpec::Dropout { p: 0.5 },
                LayerSpec::GlobalAvgPool,
                LayerSpec::Flatten,
                LayerSpec::Linear { in_features: 4, out_features: 2, bias: true },
                LayerSpec::Softmax { dim: -1 },
            ],
        }
    }

    #[test]
    fn forward_shapes_softmax_and_dropout_modes() {
        let net = Sequential::new("t", spec(), &Device::Cpu, 3).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 2, 8, 8, 8), &Device::Cpu).unwrap();
        let y = net.forward(&x).unwrap();
        assert_eq!(y.dims(), [3, 2]);
        for row in y.to_vec2::<f32>().unwrap() {
            assert!((row[0] + row[1] - 1.0).abs() < 1e-6, "softmax rows sum to 1: {row:?}");
        }
        // evaluation mode: deterministic; training mode: dropout changes the output
        let y2 = net.forward(&x).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), y2.to_vec2::<f32>().unwrap());
        net.set_training(true);
        let y3 = net.forward(&x).unwrap();
        assert_ne!(y.to_vec2::<f32>().unwrap(), y3.to_vec2::<f32>().unwrap());
        // four weight tensors: l0 conv (weight, bias), l5 linear (weight, bias)
        assert_eq!(net.varmap().all_vars().len(), 4);
    }

    #[test]
    fn shape_errors_name_the_layer() {
        let net = Sequential::new("t", spec(), &Device::Cpu, 0).unwrap();
        let x = Tensor::zeros((1, 3, 8, 8, 8), DType::F32, &Device::Cpu).unwrap();
        match net.forward(&x) {
            Err(Error::Shape { op, expected, .. }) => {
                assert!(op.contains("layer 0") && op.contains("conv3d(2, 4"), "{op}");
                assert_eq!(expected, "(N, 2, D, H, W)");
            }
            other => panic!("{other:?}"),
        }
        let bad = SequentialConfig { layers: vec![LayerSpec::Dropout { p: 1.0 }] };
        assert!(matches!(Sequential::new("b", bad, &Device::Cpu, 0), Err(Error::InvalidArgument { .. })));
        let empty = SequentialConfig { layers: vec![] };
        assert!(Sequential::new("e", empty, &Device::Cpu, 0).is_err());
    }

    #[test]
    fn save_and_load_give_the_same_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq.safetensors");
        let net = Sequential::new("round", spec(), &Device::Cpu, 0).unwrap();
        net.save(&path).unwrap();
        let back = Sequential::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.name(), "round");
        assert_eq!(back.config(), net.config());
        let x = Tensor::randn(0f32, 1.0, (2, 2, 6, 6, 6), &Device::Cpu).unwrap();
        let (a, b) = (net.forward(&x).unwrap(), back.forward(&x).unwrap());
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn a_seed_gives_the_same_weights_and_the_initialization_bounds_hold() {
        let a = Sequential::new("a", spec(), &Device::Cpu, 5).unwrap();
        let b = Sequential::new("b", spec(), &Device::Cpu, 5).unwrap();
        let c = Sequential::new("c", spec(), &Device::Cpu, 6).unwrap();
        let w = |n: &Sequential, k: &str| {
            n.varmap().data().lock().unwrap()[k].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(w(&a, "l0.weight"), w(&b, "l0.weight"));
        assert_ne!(w(&a, "l0.weight"), w(&c, "l0.weight"));
        // conv: uniform in +-1/sqrt(2 * 27)
        let bound = 1.0 / 54f32.sqrt();
        assert!(w(&a, "l0.weight").iter().chain(&w(&a, "l0.bias")).all(|v| v.abs() <= bound));
        // linear bias: uniform in +-1/sqrt(4) = 0.5
        assert!(w(&a, "l5.bias").iter().all(|v| v.abs() <= 0.5));
    }
}
