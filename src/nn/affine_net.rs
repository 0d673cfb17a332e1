//! The affine registration network of Chen et al. 2024 (PET/CT affine) with a CNN encoder in place of its Swin Transformer: a
//! moving / fixed pair on a fixed network grid in, the 12 affine parameters of regsh's `Linear`
//! convention out.
//!
//! Architecture: the `(N, 2, D, H, W)` pair (channel 0 moving, 1 fixed; see [`super::pair_input`]), with
//! three coordinate channels appended when `coordinates` is set (CoordConv),
//! passes through one `3x3x3` convolution of stride 2 (padding 1) and a Leaky ReLU per entry of
//! `channels`, then global average pooling to `(N, C)`, then four MLP heads (`C -> hidden -> 3`, as
//! TransMorph-affine's) for translation, rotation, scale and shear. Each head is bounded:
//!
//! | head | parameters | value |
//! |---|---|---|
//! | translation | `tx, ty, tz` (mm) | `max_translation_mm * tanh(h)` |
//! | rotation | `rx, ry, rz` (radians) | `max_rotation * tanh(h)` |
//! | scale | `sx, sy, sz` | `exp(ln(max_scale) * tanh(h))`, in `[1 / max_scale, max_scale]` |
//! | shear | `hxy, hxz, hyz` | `max_shear * tanh(h)` |
//!
//! The heads' last layers start with tiny weights (normal, `final_init_std`) and zero biases, so a new
//! network predicts the identity `[0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]` (translations within about 0.01
//! mm, the rest within 1e-4 with the default `final_init_std`) while every parameter still receives a
//! gradient. The parameters are `x' = M (x - c) + c + t` with `M = Sh S Rz Ry
//! Rx` about the centre `c` of the fixed image (= of the network grid), in the fixed image's world mm:
//! `spatial::Linear::new(LinearKind::Affine, params.get(0)?, fixed.grid().centre())`.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::weights::{load_network_file, save_network};
use super::{
    conv3d_layer, dims5, global_avg_pool3d, mlp_with_final_init, to_candle, Conv3d, Conv3dConfig, Dim3, LeakyRelu, Mlp,
};
use crate::error::{Error, Result};

/// The kind name of [`AffineNet`] in its JSON file.
pub const AFFINE_NET_KIND: &str = "affine_net";

/// The configuration of an [`AffineNet`] (serialized beside its weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AffineNetConfig {
    /// The network grid `(D, H, W)` voxels the pair is resampled onto (e.g. `[64, 64, 64]`).
    pub input_size: Dim3,
    /// Output channels of the strided encoder convolutions, one level each (e.g. `[16, 32, 64, 64]`).
    pub channels: Vec<usize>,
    /// Hidden width of each MLP head.
    pub hidden: usize,
    /// Bound of the translations, mm.
    pub max_translation_mm: f64,
    /// Bound of the rotations, radians.
    pub max_rotation: f64,
    /// Bound of the scales (> 1): each lies in `[1 / max_scale, max_scale]`.
    pub max_scale: f64,
    /// Bound of the shears.
    pub max_shear: f64,
    /// Negative slope of the Leaky ReLUs.
    pub slope: f64,
    /// Standard deviation of the heads' last-layer weights at initialisation.
    pub final_init_std: f64,
    /// Append three coordinate channels (x, y, z in [-1, 1] across the grid: CoordConv, Liu et al.
    /// 2018) to the pair, so the encoder, whose global pooling is otherwise blind to position, can
    /// regress where the images lie; the first convolution then sees 5 channels.
    #[serde(default)]
    pub coordinates: bool,
}

impl Default for AffineNetConfig {
    /// 64^3 grid, channels `[16, 32, 64, 64]`, hidden 64, bounds 40 mm / 0.5 rad / 1.25 / 0.2, slope 0.2,
    /// final-layer std 1e-4, no coordinate channels (they slowed learning of shifts here).
    fn default() -> Self {
        AffineNetConfig {
            input_size: Dim3([64; 3]),
            channels: vec![16, 32, 64, 64],
            hidden: 64,
            max_translation_mm: 40.0,
            max_rotation: 0.5,
            max_scale: 1.25,
            max_shear: 0.2,
            slope: 0.2,
            final_init_std: 1e-4,
            coordinates: false,
        }
    }
}

impl AffineNetConfig {
    /// Checks the configuration. Errors: [`Error::InvalidArgument`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::arg("affine_net config", why));
        if self.input_size.0.contains(&0) {
            return bad(format!("input_size must be positive, got {:?}", self.input_size.0));
        }
        if self.channels.is_empty() || self.channels.contains(&0) || self.hidden == 0 {
            return bad(format!(
                "channels {:?} and hidden {} must be positive and non-empty",
                self.channels, self.hidden
            ));
        }
        for (name, v) in [
            ("max_translation_mm", self.max_translation_mm),
            ("max_rotation", self.max_rotation),
            ("max_shear", self.max_shear),
            ("final_init_std", self.final_init_std),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be finite and > 0, got {v}"));
            }
        }
        if !(self.max_scale.is_finite() && self.max_scale > 1.0) {
            return bad(format!("max_scale must be finite and > 1, got {}", self.max_scale));
        }
        if !self.slope.is_finite() {
            return bad(format!("slope must be finite, got {}", self.slope));
        }
        Ok(())
    }
}

/// The affine network (see the module doc): a name, a [`AffineNetConfig`] and its weights in a
/// `VarMap` (names `enc{i}.weight`, `enc{i}.bias`, `{translation,rotation,scale,shear}.l{j}.{weight,bias}`).
pub struct AffineNet {
    name: String,
    config: AffineNetConfig,
    varmap: VarMap,
    encoder: Vec<Conv3d>,
    heads: [Mlp; 4],
    act: LeakyRelu,
}

impl AffineNet {
    /// A new, randomly initialised network (predicting about the identity) on `device`.
    ///
    /// Errors: an invalid configuration ([`AffineNetConfig::validate`]); the backend's.
    pub fn new(name: &str, config: AffineNetConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let mut encoder = Vec::with_capacity(config.channels.len());
        let mut cin = if config.coordinates { 5 } else { 2 };
        for (i, &c) in config.channels.iter().enumerate() {
            encoder.push(conv3d_layer(cin, c, 3, Conv3dConfig::new(2, 1), vb.pp(format!("enc{i}")))?);
            cin = c;
        }
        let init = Init::Randn { mean: 0.0, stdev: config.final_init_std };
        let head = |name: &str| mlp_with_final_init(&[cin, config.hidden, 3], config.slope, init, vb.pp(name));
        let heads = [head("translation")?, head("rotation")?, head("scale")?, head("shear")?];
        let act = LeakyRelu::new(config.slope)?;
        Ok(AffineNet { name: name.to_string(), config, varmap, encoder, heads, act })
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The configuration.
    pub fn config(&self) -> &AffineNetConfig {
        &self.config
    }
    /// The weights (train with `varmap().all_vars()`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The pooled encoder features `(N, C_last)` of a pair `(N, 2, D, H, W)`.
    fn features(&self, pair: &Tensor) -> Result<Tensor> {
        let d = dims5("affine_net", "pair (N, 2, D, H, W)", pair)?;
        let want = self.config.input_size.0;
        if d[1] != 2 || d[2..] != want[..] {
            return Err(Error::Shape {
                op: "affine_net".into(),
                expected: format!("(N, 2, {}, {}, {})", want[0], want[1], want[2]),
                actual: format!("{d:?}"),
            });
        }
        let mut h = if self.config.coordinates { coordinate_channels(pair)? } else { pair.clone() };
        for conv in &self.encoder {
            h = self.act.forward(&conv.forward(&h)?)?;
        }
        global_avg_pool3d(&h)
    }

    /// The 12 affine parameters `(N, 12)` of each pair `(N, 2, D, H, W)` (f32, on the network grid
    /// `input_size`): `[tx, ty, tz]` mm, `[rx, ry, rz]` radians, `[sx, sy, sz]`, `[hxy, hxz, hyz]`, about
    /// the fixed image's centre (see the module doc). Differentiable in the weights.
    ///
    /// Errors: [`Error::Shape`] for a pair of another shape; the backend's.
    pub fn predict(&self, pair: &Tensor) -> Result<Tensor> {
        let f = self.features(pair)?;
        let c = &self.config;
        let [t, r, s, h] = &self.heads;
        let t = (t.forward(&f)?.tanh()? * c.max_translation_mm)?;
        let r = (r.forward(&f)?.tanh()? * c.max_rotation)?;
        let s = (s.forward(&f)?.tanh()? * c.max_scale.ln())?.exp()?;
        let h = (h.forward(&f)?.tanh()? * c.max_shear)?;
        Ok(Tensor::cat(&[&t, &r, &s, &h], 1)?)
    }

    /// Saves the weights to `weights` (safetensors) and the name and configuration to the JSON beside it
    /// (see [`super::weights`]). Errors: as [`save_network`].
    pub fn save(&self, weights: &Path) -> Result<()> {
        save_network(weights, AFFINE_NET_KIND, &self.name, &self.config, &self.varmap)
    }

    /// Loads a network saved by [`AffineNet::save`] onto `device`.
    ///
    /// Errors: as [`load_network_file`]; an invalid configuration; weights missing or of another shape.
    pub fn load(weights: &Path, device: &Device) -> Result<Self> {
        let (name, config) = load_network_file::<AffineNetConfig>(weights, AFFINE_NET_KIND)?;
        let mut net = AffineNet::new(&name, config, device)?;
        net.varmap.load(weights)?;
        Ok(net)
    }
}

impl Module for AffineNet {
    /// [`AffineNet::predict`].
    fn forward(&self, pair: &Tensor) -> candle_core::Result<Tensor> {
        self.predict(pair).map_err(to_candle)
    }
}

/// `pair` `(N, C, D, H, W)` with three channels appended: the x (W), y (H) and z (D) voxel coordinates
/// mapped to [-1, 1] (0 for an axis of size 1).
fn coordinate_channels(pair: &Tensor) -> Result<Tensor> {
    let (n, _, d, h, w) = pair.dims5()?;
    let dev = pair.device();
    let axis = |len: usize| -> Result<Tensor> {
        let v: Vec<f32> =
            (0..len).map(|i| if len > 1 { 2.0 * i as f32 / (len - 1) as f32 - 1.0 } else { 0.0 }).collect();
        Ok(Tensor::from_vec(v, len, dev)?)
    };
    let x = axis(w)?.reshape((1, 1, 1, 1, w))?.broadcast_as((n, 1, d, h, w))?;
    let y = axis(h)?.reshape((1, 1, 1, h, 1))?.broadcast_as((n, 1, d, h, w))?;
    let z = axis(d)?.reshape((1, 1, d, 1, 1))?.broadcast_as((n, 1, d, h, w))?;
    Ok(Tensor::cat(&[pair, &x.contiguous()?, &y.contiguous()?, &z.contiguous()?], 1)?)
}
