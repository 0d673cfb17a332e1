//! The VoxelMorph-style U-Net of Wang et al. (unsupervised mono/multi-modal registration): a moving / fixed pair in, a dense displacement out.
//!
//! Architecture (VoxelMorph's `Unet` with strided convolutions, as Wang et al. describe): the `(N, 2, D, H,
//! W)` pair (channel 0 moving, 1 fixed) is the level-0 feature; encoder level `i` is a `3x3x3`
//! convolution of stride 2 (padding 1) to `encoder[i]` channels and a Leaky ReLU. The decoder, from the
//! coarsest level up, applies a `3x3x3` convolution (stride 1) to `decoder[i]` channels and a Leaky ReLU,
//! upsamples by 2 ([`UNetConfig::upsample`]) and concatenates the encoder feature of that resolution (skip
//! connection). Then `full_res` convolutions with Leaky ReLU at full resolution, and a last `3x3x3`
//! convolution to 3 channels whose weights start normal with std `final_init_std` (VoxelMorph: 1e-5) and
//! zero bias, so a new network predicts almost no displacement.
//!
//! Output: `(N, 3, D, H, W)`, the displacement **in voxels of the network grid**, components along x, y,
//! z (the W, H, D axes; channel 0 is x), the point `v` of the fixed grid sampling the moving image at `v
//! + u(v)` (fixed to moving, as every regsh transform). [`super::flow_to_world`] converts one sample to
//! regsh's `(3, Z, Y, X)` mm field on the network grid. D, H, W must be multiples of `2^levels`.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::weights::{load_network_file, save_network};
use super::{conv3d_layer, dims5, to_candle, Conv3d, Conv3dConfig, Dim3, LeakyRelu, Upsample3d, UpsampleMode};
use crate::error::{Error, Result};

fn default_unet_input() -> Dim3 {
    Dim3([64; 3])
}

/// The kind name of [`UNet`] in its JSON file.
pub const UNET_KIND: &str = "unet";

/// The configuration of a [`UNet`] (serialized beside its weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// The network grid `(D, H, W)` voxels a pair is resampled onto for registration (each a multiple of
    /// `2^levels`); [`UNet::predict`] itself takes any such size.
    #[serde(default = "default_unet_input")]
    pub input_size: Dim3,
    /// How the output becomes a transform: 0, a displacement field; `n > 0`, a stationary velocity
    /// field integrated by scaling and squaring with `n` squarings (diffeomorphic, Wang et al.'s option).
    #[serde(default)]
    pub integration_steps: usize,
    /// Input channels (2: moving and fixed).
    pub in_channels: usize,
    /// Output channels of the strided encoder convolutions, finest first (VoxelMorph: `[16, 32, 32, 32]`).
    pub encoder: Vec<usize>,
    /// Output channels of the decoder convolutions, coarsest first; as many as `encoder`
    /// (VoxelMorph: `[32, 32, 32, 32]`).
    pub decoder: Vec<usize>,
    /// Full-resolution convolutions after the decoder (VoxelMorph: `[32, 16, 16]`).
    pub full_res: Vec<usize>,
    /// How the decoder upsamples by 2.
    pub upsample: UpsampleMode,
    /// Negative slope of the Leaky ReLUs (0.2).
    pub slope: f64,
    /// Standard deviation of the displacement layer's weights at initialisation (1e-5).
    pub final_init_std: f64,
}

impl Default for UNetConfig {
    /// VoxelMorph's default widths, nearest upsampling, slope 0.2, final std 1e-5, a 64^3 grid, a
    /// displacement output.
    fn default() -> Self {
        UNetConfig {
            input_size: default_unet_input(),
            integration_steps: 0,
            in_channels: 2,
            encoder: vec![16, 32, 32, 32],
            decoder: vec![32, 32, 32, 32],
            full_res: vec![32, 16, 16],
            upsample: UpsampleMode::Nearest,
            slope: 0.2,
            final_init_std: 1e-5,
        }
    }
}

impl UNetConfig {
    /// Checks the configuration. Errors: [`Error::InvalidArgument`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::arg("unet config", why));
        if self.in_channels == 0 || self.encoder.is_empty() {
            return bad("in_channels and encoder must be non-empty".into());
        }
        if self.decoder.len() != self.encoder.len() {
            return bad(format!("{} decoder widths for {} encoder levels", self.decoder.len(), self.encoder.len()));
        }
        if [&self.encoder, &self.decoder, &self.full_res].iter().any(|v| v.contains(&0)) {
            return bad("channel widths must be positive".into());
        }
        let m = 1usize << self.levels().min(16);
        if self.input_size.0.iter().any(|&n| n == 0 || n % m != 0) {
            return bad(format!("input_size {:?} must be positive multiples of 2^levels = {m}", self.input_size.0));
        }
        if self.integration_steps > 20 {
            return bad(format!("integration_steps must be at most 20, got {}", self.integration_steps));
        }
        let std_ok = self.final_init_std.is_finite() && self.final_init_std > 0.0;
        if !self.slope.is_finite() || !std_ok {
            return bad(format!(
                "slope {} and final_init_std {} must be finite (std > 0)",
                self.slope, self.final_init_std
            ));
        }
        Ok(())
    }

    /// The number of resolution levels below full resolution; inputs must be multiples of `2^levels`.
    pub fn levels(&self) -> usize {
        self.encoder.len()
    }
}

/// The U-Net (see the module doc): a name, a [`UNetConfig`] and its weights in a `VarMap` (names
/// `enc{i}.*`, `dec{i}.*`, `full{i}.*`, `flow.*`, each with `weight` and `bias`).
pub struct UNet {
    name: String,
    config: UNetConfig,
    varmap: VarMap,
    encoder: Vec<Conv3d>,
    decoder: Vec<Conv3d>,
    full_res: Vec<Conv3d>,
    flow: Conv3d,
    up: Upsample3d,
    act: LeakyRelu,
}

impl UNet {
    /// A new, randomly initialised network (predicting almost no displacement) on `device`.
    ///
    /// Errors: an invalid configuration ([`UNetConfig::validate`]); the backend's.
    pub fn new(name: &str, config: UNetConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let same = Conv3dConfig::new(1, 1);
        // Channels of the feature at each level: level 0 is the input.
        let mut level_ch = vec![config.in_channels];
        level_ch.extend(&config.encoder);
        let mut encoder = vec![];
        for (i, &c) in config.encoder.iter().enumerate() {
            encoder.push(conv3d_layer(level_ch[i], c, 3, Conv3dConfig::new(2, 1), vb.pp(format!("enc{i}")))?);
        }
        let levels = config.levels();
        let mut decoder = vec![];
        let mut cin = level_ch[levels];
        for (i, &c) in config.decoder.iter().enumerate() {
            decoder.push(conv3d_layer(cin, c, 3, same, vb.pp(format!("dec{i}")))?);
            cin = c + level_ch[levels - 1 - i];
        }
        let mut full_res = vec![];
        for (i, &c) in config.full_res.iter().enumerate() {
            full_res.push(conv3d_layer(cin, c, 3, same, vb.pp(format!("full{i}")))?);
            cin = c;
        }
        let vf = vb.pp("flow");
        let w =
            vf.get_with_hints((3, cin, 3, 3, 3), "weight", Init::Randn { mean: 0.0, stdev: config.final_init_std })?;
        let b = vf.get_with_hints(3, "bias", Init::Const(0.0))?;
        let flow = Conv3d::new(w, Some(b), same);
        let up = Upsample3d::new(2, config.upsample);
        let act = LeakyRelu::new(config.slope)?;
        Ok(UNet { name: name.to_string(), config, varmap, encoder, decoder, full_res, flow, up, act })
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }
    /// The weights (train with `varmap().all_vars()`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The displacement `(N, 3, D, H, W)` in network-grid voxels (components x, y, z) of each pair `(N,
    /// in_channels, D, H, W)` f32. Differentiable in the weights and the input.
    ///
    /// Errors: [`Error::Shape`] for another channel count or a size not a multiple of `2^levels`; the
    /// backend's.
    pub fn predict(&self, pair: &Tensor) -> Result<Tensor> {
        let d = dims5("unet", "pair (N, C, D, H, W)", pair)?;
        let m = 1usize << self.config.levels();
        if d[1] != self.config.in_channels || d[2..].iter().any(|n| n % m != 0) {
            return Err(Error::Shape {
                op: "unet".into(),
                expected: format!("(N, {}, D, H, W) with D, H, W multiples of {m}", self.config.in_channels),
                actual: format!("{d:?}"),
            });
        }
        let mut skips = vec![pair.clone()];
        for conv in &self.encoder {
            let h = self.act.forward(&conv.forward(skips.last().unwrap_or(pair))?)?;
            skips.push(h);
        }
        let levels = self.config.levels();
        let mut h = skips[levels].clone();
        for (i, conv) in self.decoder.iter().enumerate() {
            h = self.up.forward(&self.act.forward(&conv.forward(&h)?)?)?;
            h = Tensor::cat(&[&h, &skips[levels - 1 - i]], 1)?;
        }
        for conv in &self.full_res {
            h = self.act.forward(&conv.forward(&h)?)?;
        }
        Ok(self.flow.forward(&h)?)
    }

    /// Saves the weights to `weights` (safetensors) and the name and configuration to the JSON beside it.
    /// Errors: as [`save_network`].
    pub fn save(&self, weights: &Path) -> Result<()> {
        save_network(weights, UNET_KIND, &self.name, &self.config, &self.varmap)
    }

    /// Loads a network saved by [`UNet::save`] onto `device`.
    ///
    /// Errors: as [`load_network_file`]; an invalid configuration; weights missing or of another shape.
    pub fn load(weights: &Path, device: &Device) -> Result<Self> {
        let (name, config) = load_network_file::<UNetConfig>(weights, UNET_KIND)?;
        let mut net = UNet::new(&name, config, device)?;
        net.varmap.load(weights)?;
        Ok(net)
    }
}

impl Module for UNet {
    /// [`UNet::predict`].
    fn forward(&self, pair: &Tensor) -> candle_core::Result<Tensor> {
        self.predict(pair).map_err(to_candle)
    }
}
