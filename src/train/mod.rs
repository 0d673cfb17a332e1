//! Registration networks as registration tools: a [`Network`] (Chen et al. 2024 (PET/CT affine)'s affine network or seed
//! `001`'s U-Net) predicts a world-space transform for any moving / fixed pair, and [`train`] fits its
//! weights without supervision (the loss is a similarity measure of the warped pair, plus a
//! regularizer for dense outputs).
//!
//! | module | what |
//! |---|---|
//! | [`pairs`] | pairs from files or made on the fly from real images (random affine / smooth deformation, intensity augmentation, seeded) |
//! | [`patches`] | patch pairs for a learned similarity measure and that measure, [`DeepMetric`] (Sedghi et al.) |
//! | this file | [`Network`] (prediction, loss), [`train`] on pairs and [`fit`] on any loss (Adam or SGD, weight decay, learning-rate schedule, validation, checkpoints, resume, Ctrl-C) |
//!
//! Inputs are resampled onto the network's grid (the fixed image's field of view at the network's
//! input size, [`crate::nn::pair_input`]), and the prediction is mapped back to the fixed image's world
//! millimetres: the affine network's 12 parameters are a [`Linear`] about the fixed image's centre (so
//! ISO can refine them), the U-Net's voxel displacement becomes a [`Ddf`] in mm on the network grid
//! (optionally integrated as a stationary velocity field by scaling and squaring). So a network works
//! on any input grid.
//!
//! A [`Network::Sequential`] (layers listed by a script, e.g. a patch classifier) is no registration
//! network: it has no prediction, and [`fit`] trains it on a loss its caller computes.

pub mod pairs;
pub mod patches;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::ops::{normalize, Normalization};
use crate::image::resample::Padding;
use crate::image::{Grid, Image};
use crate::metrics::evaluation::{dice, mean_displacement_error};
use crate::metrics::{Metric, OptionValue};
use crate::nn::{flow_to_world, pair_input, AffineNet, Dim3, Sequential, UNet};
use crate::ops::warp_field;
use crate::optim::{Adam, Optimizer, Regularizer, Sgd, Stop};
use crate::spatial::{warp, warp_tensor, Ddf, Linear, LinearKind, Svf, Transform, WarpInterpolation};
pub use pairs::{AffineBounds, Deformation, IntensityAugmentation, Pair, PairSource, SyntheticPairs};
pub use patches::{patch_pairs, DeepMetric, PatchOptions, PatchPair};

/// A registration network and how its output becomes a transform.
pub enum Network {
    /// The affine network of Chen et al. 2024: 12 parameters of a [`Linear`] (affine kind) about the fixed centre.
    Affine(AffineNet),
    /// The U-Net of Wang et al.: a dense displacement (`steps == 0`) or a stationary velocity field integrated
    /// with `steps` squarings (diffeomorphic).
    Dense { unet: UNet, steps: usize },
    /// Layers applied in turn ([`Sequential`]): no registration network (no [`Network::predict`]).
    Sequential(Sequential),
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Network({} {:?})", self.kind(), self.name())
    }
}

/// A network's prediction for one pair, in the fixed image's world mm (fixed points to moving points).
#[derive(Clone, Debug)]
pub enum Prediction {
    /// The affine network's transform.
    Linear(Linear),
    /// The U-Net's displacement field (mm, on the network grid; the identity outside it).
    Field(Ddf),
}

impl Prediction {
    /// The prediction as a transform.
    pub fn transform(&self) -> Arc<dyn Transform> {
        match self {
            Prediction::Linear(l) => Arc::new(l.clone()),
            Prediction::Field(d) => Arc::new(d.clone()),
        }
    }
}

/// One forward pass: the network grid, the normalized fixed image on it `(1, D, H, W)`, and the
/// normalized moving image warped onto it through the prediction (with its graph to the weights).
struct Forward {
    grid: Grid,
    fixed: Tensor,
    warped: Tensor,
    /// `(3, D, H, W)` mm field (dense networks), for the regularizer.
    field: Option<Tensor>,
}

/// Images mapped to [0, 1] by their 1st-99th percentiles (as the network input is).
fn unit_range(im: &Image) -> Result<Image> {
    normalize(im, Normalization::Percentile { lo: 1.0, hi: 99.0 }, None)
}

impl Network {
    /// The network's name.
    pub fn name(&self) -> &str {
        match self {
            Network::Affine(n) => n.name(),
            Network::Dense { unet, .. } => unet.name(),
            Network::Sequential(n) => n.name(),
        }
    }

    /// `affine_net`, `unet` or `sequential`.
    pub fn kind(&self) -> &'static str {
        match self {
            Network::Affine(_) => crate::nn::affine_net::AFFINE_NET_KIND,
            Network::Dense { .. } => crate::nn::unet::UNET_KIND,
            Network::Sequential(_) => crate::nn::sequential::SEQUENTIAL_KIND,
        }
    }

    /// Whether the network predicts transforms (the affine network and the U-Net).
    pub fn is_registration(&self) -> bool {
        !matches!(self, Network::Sequential(_))
    }

    /// The input grid size `(D, H, W)` voxels of a registration network (`None` for a sequential one,
    /// which takes any size its layers fit).
    pub fn input_size(&self) -> Option<Dim3> {
        match self {
            Network::Affine(n) => Some(n.config().input_size),
            Network::Dense { unet, .. } => Some(unet.config().input_size),
            Network::Sequential(_) => None,
        }
    }

    /// The input size of a registration network, or an error naming `op` for a sequential one.
    fn registration_input(&self, op: &str) -> Result<Dim3> {
        self.input_size().ok_or_else(|| {
            Error::arg(
                op.to_string(),
                format!(
                    "`{}` is a sequential network, not a registration network: it has no transform to predict (call its forward on tensors)",
                    self.name()
                ),
            )
        })
    }

    /// Runs the network on a tensor, differentiable in the weights: the affine network's `(N, 12)`
    /// parameters or the U-Net's `(N, 3, D, H, W)` voxel displacement of a pair `(N, 2, D, H, W)` on its
    /// input grid; a sequential network's layers on whatever they take.
    ///
    /// Errors: [`Error::Shape`] for an input the network does not take; the backend's.
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Network::Affine(n) => n.predict(x),
            Network::Dense { unet, .. } => unet.predict(x),
            Network::Sequential(n) => n.forward(x),
        }
    }

    /// Training mode (dropout active in a sequential network) or evaluation mode; the registration
    /// networks have no layer that differs.
    pub fn set_training(&self, on: bool) {
        if let Network::Sequential(n) = self {
            n.set_training(on);
        }
    }

    /// The trainable variables, sorted by name (the order optimizer checkpoints rely on).
    pub fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// The weights by name, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let vm = match self {
            Network::Affine(n) => n.varmap(),
            Network::Dense { unet, .. } => unet.varmap(),
            Network::Sequential(n) => n.varmap(),
        };
        let mut v: Vec<(String, Var)> = match vm.data().lock() {
            Ok(d) => d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Redraws every weight from a seeded generator with the mean and standard deviation its random
    /// initialization gave it (so constant biases stay constant and small final layers stay small):
    /// candle's CPU generator cannot be seeded, and this makes a network's start reproducible. A
    /// sequential network redraws from its layers' own initializations ([`Sequential::reseed`]).
    ///
    /// Errors: tensor errors.
    pub fn reseed(&self, seed: u64) -> Result<()> {
        use rand::SeedableRng;
        if let Network::Sequential(n) = self {
            // Its layers' own initializations.
            return n.reseed(seed);
        }
        for (i, (_, var)) in self.named_vars().iter().enumerate() {
            let t = var.as_tensor().to_dtype(DType::F64)?.flatten_all()?;
            let n = t.elem_count();
            let mean = t.mean_all()?.to_scalar::<f64>()?;
            let sd = if n > 1 {
                (t.broadcast_sub(&Tensor::new(mean, t.device())?)?.sqr()?.sum_all()?.to_scalar::<f64>()? / n as f64)
                    .sqrt()
            } else {
                0.0
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
            let z = pairs::normals(&mut rng, n);
            let v: Vec<f32> = z.iter().map(|z| (mean + sd * *z as f64) as f32).collect();
            var.set(&Tensor::from_vec(v, var.shape(), var.device())?.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// The number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Runs the network on a pair and warps the (normalized) moving image onto the network grid with
    /// the prediction, keeping the graph to the weights.
    fn forward(&self, moving: &Image, fixed: &Image) -> Result<Forward> {
        let (input, grid) = pair_input(moving, fixed, self.registration_input("registration network")?)?;
        let fixed_net = input.get(0)?.narrow(0, 1, 1)?;
        let m = unit_range(moving)?;
        match self {
            Network::Affine(net) => {
                let p = net.predict(&input)?.get(0)?;
                let t = Linear::new(LinearKind::Affine, p, fixed.grid().centre())?;
                let warped = warp_tensor(m.data(), m.grid(), &t, &grid, crate::ops::SampleMode::Linear, Padding::Zero)?;
                Ok(Forward { grid, fixed: fixed_net, warped, field: None })
            }
            Network::Dense { unet, steps } => {
                let flow = unet.predict(&input)?.get(0)?;
                let mut u = flow_to_world(&flow, &grid)?;
                if *steps > 0 {
                    u = Svf::new(u, grid.clone(), *steps)?.to_ddf()?.field().clone();
                }
                // Sample points in moving voxels: W2V_m (V2W_net i + u).
                let w2v = m.grid().world_to_voxel();
                let mm = w2v * grid.voxel_to_world();
                let mv: [f64; 12] = std::array::from_fn(|i| mm[(i / 4, i % 4)]);
                let r: [f64; 9] = std::array::from_fn(|i| w2v[(i / 3, i % 3)]);
                let warped = warp_field(&m.data().to_dtype(DType::F32)?, &u, mv, r, false)?;
                Ok(Forward { grid, fixed: fixed_net, warped, field: Some(u) })
            }
            Network::Sequential(_) => Err(Error::arg("train", "not a registration network")),
        }
    }

    /// The training loss of a pair: `metric`'s loss of the warped moving image against the fixed one on
    /// the network grid (both in [0, 1]), plus `regularizer` of the dense field. Returns the loss tensor
    /// (with its graph) and the similarity part's value.
    ///
    /// Errors: a sequential network; images with several channels; tensor errors.
    pub fn loss(&self, pair: &Pair, metric: &Metric, regularizer: Option<&Regularizer>) -> Result<(Tensor, f64)> {
        let f = self.forward(&pair.moving, &pair.fixed)?;
        let metric = unit_ranges(metric)?;
        let sim = metric.loss(&f.fixed, &f.warped, None)?;
        let sim_value = sim.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let term = match (regularizer, &f.field) {
            (Some(r), Some(u)) => r.term(u, &f.grid)?,
            _ => None,
        };
        let total = match term {
            Some(t) => (sim + t)?,
            None => sim,
        };
        Ok((total, sim_value))
    }

    /// The network's transform for a pair (no graph): see [`Prediction`].
    ///
    /// Errors: a sequential network; images with several channels; tensor errors.
    pub fn predict(&self, moving: &Image, fixed: &Image) -> Result<Prediction> {
        let (input, grid) = pair_input(moving, fixed, self.registration_input("net")?)?;
        Ok(match self {
            Network::Affine(net) => {
                let p = net.predict(&input)?.get(0)?.detach();
                Prediction::Linear(Linear::new(LinearKind::Affine, p, fixed.grid().centre())?)
            }
            Network::Dense { unet, steps } => {
                let flow = unet.predict(&input)?.get(0)?.detach();
                let mut u = flow_to_world(&flow, &grid)?;
                if *steps > 0 {
                    u = Svf::new(u, grid.clone(), *steps)?.to_ddf()?.field().clone();
                }
                Prediction::Field(Ddf::new(u, grid)?)
            }
            Network::Sequential(_) => return Err(Error::arg("net", "not a registration network")),
        })
    }

    /// Saves the weights (safetensors at `path`) and the configuration (JSON beside them).
    ///
    /// Errors: I/O errors (nothing is left half-written).
    pub fn save(&self, path: &Path) -> Result<()> {
        match self {
            Network::Affine(n) => n.save(path),
            Network::Dense { unet, .. } => unet.save(path),
            Network::Sequential(n) => n.save(path),
        }
    }

    /// Loads a network saved by [`Network::save`] (its kind read from the configuration).
    ///
    /// Errors: a missing or malformed file, an unknown kind, weights that do not fit the configuration.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let cfg = crate::nn::weights::config_path(path);
        let text = std::fs::read_to_string(&cfg).map_err(|e| Error::Io { path: cfg.clone(), source: e })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::arg("load_net", format!("{}: not a network configuration: {e}", cfg.display())))?;
        match v.get("kind").and_then(|k| k.as_str()) {
            Some(k) if k == crate::nn::affine_net::AFFINE_NET_KIND => {
                Ok(Network::Affine(AffineNet::load(path, device)?))
            }
            Some(k) if k == crate::nn::unet::UNET_KIND => {
                let unet = UNet::load(path, device)?;
                let steps = unet.config().integration_steps;
                Ok(Network::Dense { unet, steps })
            }
            Some(k) if k == crate::nn::sequential::SEQUENTIAL_KIND => {
                Ok(Network::Sequential(Sequential::load(path, device)?))
            }
            other => Err(Error::arg("load_net", format!("{}: unknown network kind {other:?}", cfg.display()))),
        }
    }
}

/// `metric` with the Parzen intensity ranges set to [0, 1] (the normalized images'), so the bins stay
/// put while the warped image changes.
fn unit_ranges(metric: &Metric) -> Result<Metric> {
    metric.map_terms(&mut unit_term_ranges)
}

fn unit_term_ranges(metric: &Metric) -> Result<Metric> {
    let mut m = metric.clone();
    if m.option_names().contains(&"range_fixed") {
        if !m.has_range(true) {
            m.set("range_fixed", OptionValue::Range(0.0, 1.0))?;
        }
        if !m.has_range(false) {
            m.set("range_moving", OptionValue::Range(0.0, 1.0))?;
        }
    }
    Ok(m)
}

/// How the learning rate changes over training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant,
    /// Cosine decay from the rate to `final_fraction` of it over all steps.
    Cosine { final_fraction: f64 },
    /// The rate times `gamma^epoch` (PyTorch's `ExponentialLR` stepped once per epoch; Sedghi et al.
    /// use 0.8).
    Exponential { gamma: f64 },
}

impl LrSchedule {
    /// The rate at `step` of `total`, with `steps_per_epoch` steps in an epoch.
    pub fn at(&self, lr: f64, step: usize, total: usize, steps_per_epoch: usize) -> f64 {
        match *self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine { final_fraction } => {
                let t = step as f64 / total.max(1) as f64;
                lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
            }
            LrSchedule::Exponential { gamma } => lr * gamma.powi((step / steps_per_epoch.max(1)) as i32),
        }
    }
}

/// The optimizer of [`fit`] (and [`train`]) on the weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrainOptimizer {
    /// Adam (Kingma & Ba 2015), betas (0.9, 0.999); its moments are checkpointed.
    Adam,
    /// SGD with momentum (heavy ball, or Nesterov); its velocity starts afresh on resume.
    Sgd { momentum: f64, nesterov: bool },
}

/// What any training needs, whatever its loss: steps, optimizer, schedule, checkpoints.
#[derive(Clone)]
pub struct FitOptions {
    /// Epochs to reach (counted from the start of training, so a resumed run does the rest).
    pub epochs: usize,
    /// Optimizer steps per epoch.
    pub steps: usize,
    /// The learning rate.
    pub lr: f64,
    /// Its schedule.
    pub schedule: LrSchedule,
    /// Adam or SGD.
    pub optimizer: TrainOptimizer,
    /// L2 weight decay λ: `λ w` joins each weight's gradient (PyTorch's `weight_decay` of Adam and SGD,
    /// the gradient of `λ/2 |w|²`); the reported losses leave it out.
    pub weight_decay: f64,
    /// Where checkpoints go after each epoch (weights at this path, configuration and training state
    /// beside it); `None`: no checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint's weights, optimizer state and epoch count when it exists.
    pub resume: bool,
    /// Set (e.g. by Ctrl-C) to stop after the current step; a checkpoint is written.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl FitOptions {
    /// `epochs` x `steps` of Adam at `lr` with a cosine decay to 5 %, no weight decay or checkpoint.
    pub fn new(epochs: usize, steps: usize, lr: f64) -> Self {
        FitOptions {
            epochs,
            steps,
            lr,
            schedule: LrSchedule::Cosine { final_fraction: 0.05 },
            optimizer: TrainOptimizer::Adam,
            weight_decay: 0.0,
            checkpoint: None,
            resume: false,
            cancel: None,
        }
    }
}

/// Options of [`train`]: the unsupervised registration loss and its pairs' handling, and [`FitOptions`].
#[derive(Clone)]
pub struct TrainOptions {
    /// The similarity measure whose loss is minimized (Chen et al. 2024: global CR or MI; Wang et al.: MI or LNCC).
    pub loss: Metric,
    /// The regularizer of dense outputs (Wang et al.: diffusion).
    pub regularizer: Option<Regularizer>,
    /// Pairs per step (their losses are averaged).
    pub batch: usize,
    /// Held-out pairs evaluated after each epoch (loss; Dice where both label maps exist; mean
    /// displacement error over the fixed foreground where the truth is known).
    pub validation: Option<PairSource>,
    /// How many validation pairs.
    pub validation_pairs: usize,
    /// Steps, optimizer, schedule, checkpoints.
    pub fit: FitOptions,
}

impl TrainOptions {
    /// `epochs` x `steps` with batch 1, Adam at `lr` with a cosine decay to 5 %, no validation or
    /// checkpoint.
    pub fn new(loss: Metric, epochs: usize, steps: usize, lr: f64) -> Self {
        TrainOptions {
            loss,
            regularizer: None,
            batch: 1,
            validation: None,
            validation_pairs: 4,
            fit: FitOptions::new(epochs, steps, lr),
        }
    }
}

/// One epoch's report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    /// Mean training loss (similarity plus regularizer) over the epoch's steps.
    pub train_loss: f64,
    /// Mean validation similarity loss.
    pub val_loss: Option<f64>,
    /// Mean Dice of the validation pairs' labels after registration.
    pub val_dice: Option<f64>,
    /// Mean displacement error (mm) of the validation pairs against their truth.
    pub val_error_mm: Option<f64>,
    /// The learning rate at the epoch's end.
    pub lr: f64,
    pub seconds: f64,
}

/// What [`train`] did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    /// Every epoch so far (a resumed run includes the earlier ones).
    pub epochs: Vec<EpochReport>,
    /// Optimizer steps taken, in all.
    pub steps: usize,
    pub seconds: f64,
    /// [`Stop::Epochs`], [`Stop::Cancelled`] or [`Stop::NonFinite`].
    pub stop: Stop,
}

/// Training state saved beside a checkpoint (`WEIGHTS.train.json`, Adam's moments in
/// `WEIGHTS.adam.safetensors`).
#[derive(Serialize, Deserialize)]
struct TrainState {
    report: TrainReport,
    adam_t: i32,
    /// `adam` or `sgd` (absent in checkpoints written before SGD existed: Adam).
    #[serde(default)]
    optimizer: Option<String>,
}

fn state_paths(weights: &Path) -> (PathBuf, PathBuf) {
    let s = weights.to_string_lossy();
    let stem = s.strip_suffix(".safetensors").unwrap_or(&s).to_string();
    (PathBuf::from(format!("{stem}.train.json")), PathBuf::from(format!("{stem}.adam.safetensors")))
}

/// The optimizer of a training run.
enum WeightOptimizer {
    Adam(Adam),
    Sgd(Sgd),
}

impl WeightOptimizer {
    fn new(opts: &FitOptions) -> Result<Self> {
        Ok(match opts.optimizer {
            TrainOptimizer::Adam => WeightOptimizer::Adam(Adam::new(opts.lr, vec![])),
            TrainOptimizer::Sgd { momentum, nesterov } => {
                WeightOptimizer::Sgd(Sgd::new(opts.lr, momentum, nesterov, vec![])?)
            }
        })
    }
    fn lr(&self) -> f64 {
        match self {
            WeightOptimizer::Adam(a) => a.lr,
            WeightOptimizer::Sgd(s) => s.lr,
        }
    }
    fn inner(&mut self) -> &mut dyn Optimizer {
        match self {
            WeightOptimizer::Adam(a) => a,
            WeightOptimizer::Sgd(s) => s,
        }
    }
}

fn save_checkpoint(net: &Network, path: &Path, report: &TrainReport, opt: &WeightOptimizer) -> Result<()> {
    net.save(path)?;
    let (json, moments) = state_paths(path);
    let mut t = 0;
    if matches!(opt, WeightOptimizer::Sgd(_)) && moments.exists() {
        // Moments of an earlier Adam run would be restored against this state.
        std::fs::remove_file(&moments).map_err(|e| Error::Io { path: moments.clone(), source: e })?;
    }
    if let WeightOptimizer::Adam(adam) = opt {
        let (step, tensors) = adam.moments();
        t = step;
        let mut named = std::collections::HashMap::new();
        for (i, m) in tensors.iter().enumerate() {
            if let Some((a, b)) = m {
                named.insert(format!("m{i}"), a.clone());
                named.insert(format!("v{i}"), b.clone());
            }
        }
        crate::nn::weights::write_atomically(&moments, |tmp| Ok(candle_core::safetensors::save(&named, tmp)?))?;
    }
    let text = serde_json::to_string_pretty(&TrainState {
        report: report.clone(),
        adam_t: t,
        optimizer: Some(match opt {
            WeightOptimizer::Adam(_) => "adam".into(),
            WeightOptimizer::Sgd(_) => "sgd".into(),
        }),
    })
    .map_err(|e| Error::arg("train", format!("cannot encode the training state: {e}")))?;
    crate::nn::weights::write_atomically(&json, |tmp| {
        std::fs::write(tmp, text.as_bytes()).map_err(|e| Error::Io { path: tmp.to_path_buf(), source: e })
    })
}

/// Loads a checkpoint's weights, Adam's moments (for Adam) and report into `net` / `opt`.
fn resume_from(net: &Network, path: &Path, opt: &mut WeightOptimizer) -> Result<Option<TrainReport>> {
    let (json, moments) = state_paths(path);
    if !path.exists() || !json.exists() {
        return Ok(None);
    }
    let device = net.vars().first().map(|v| v.device().clone()).unwrap_or_else(crate::device::host);
    let saved = Network::load(path, &device)?;
    let (mine, theirs) = (net.named_vars(), saved.named_vars());
    let names = |v: &[(String, Var)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let same_layers = match (net, &saved) {
        (Network::Sequential(a), Network::Sequential(b)) => a.config() == b.config(),
        _ => true,
    };
    if names(&mine) != names(&theirs) || !same_layers {
        return Err(Error::arg("train", format!("{}: the checkpoint is of another network", path.display())));
    }
    for ((_, dst), (_, src)) in mine.iter().zip(&theirs) {
        if dst.dims() != src.dims() {
            return Err(Error::arg(
                "train",
                format!("{}: the checkpoint's weights do not fit this network", path.display()),
            ));
        }
        dst.set(src.as_tensor())?;
    }
    let text = std::fs::read_to_string(&json).map_err(|e| Error::Io { path: json.clone(), source: e })?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| Error::arg("train", format!("{}: malformed training state: {e}", json.display())))?;
    let adam_wrote_it = state.optimizer.as_deref().is_none_or(|o| o == "adam");
    if let (true, true, WeightOptimizer::Adam(adam)) = (moments.exists(), adam_wrote_it, opt) {
        let m = candle_core::safetensors::load(&moments, &device)?;
        let n = net.vars().len();
        let restored: Vec<Option<(Tensor, Tensor)>> = (0..n)
            .map(|i| match (m.get(&format!("m{i}")), m.get(&format!("v{i}"))) {
                (Some(a), Some(b)) => Some((a.clone(), b.clone())),
                _ => None,
            })
            .collect();
        adam.restore(state.adam_t, restored);
    }
    Ok(Some(state.report))
}

/// Evaluates a network on held-out pairs: mean similarity loss, mean Dice of the labels (where both
/// label maps exist), mean displacement error over the fixed foreground (where the truth is known).
///
/// Errors: as [`Network::loss`] and [`Network::predict`].
pub fn evaluate(
    net: &Network,
    pairs: &PairSource,
    n: usize,
    metric: &Metric,
) -> Result<(f64, Option<f64>, Option<f64>)> {
    let (mut loss, mut dices, mut errors) = (0.0, Vec::new(), Vec::new());
    for i in 0..n {
        let p = pairs.pair(i as u64)?;
        let (_, sim) = net.loss(&p, metric, None)?;
        loss += sim;
        let t = net.predict(&p.moving, &p.fixed)?.transform();
        if let (Some(ml), Some(fl)) = (&p.moving_labels, &p.fixed_labels) {
            let w = warp(ml, t.as_ref(), fl.grid(), WarpInterpolation::Nearest, Padding::Zero)?;
            dices.push(dice(fl, &w, None)?.mean);
        }
        if let Some(truth) = &p.truth {
            let fg = crate::image::ops::threshold(&p.fixed, f64::MIN_POSITIVE, f64::INFINITY)?;
            errors.push(mean_displacement_error(t.as_ref(), truth.as_ref(), p.fixed.grid(), Some(&fg))?);
        }
    }
    let mean = |v: &[f64]| if v.is_empty() { None } else { Some(v.iter().sum::<f64>() / v.len() as f64) };
    Ok((loss / n.max(1) as f64, mean(&dices), mean(&errors)))
}

/// Trains `net` on `pairs` (see [`TrainOptions`]): the optimizer on the weights, pair `k` of the whole
/// run drawn as `pairs.training_pair(k)` (without the truth), `batch` pairs per step; after each epoch,
/// validation and a checkpoint (see [`fit`]).
///
/// Errors: a sequential network; zero batch; as [`fit`] and [`Network::loss`].
pub fn train(net: &Network, pairs: &PairSource, opts: &TrainOptions) -> Result<TrainReport> {
    net.registration_input("train")?;
    if opts.batch == 0 {
        return Err(Error::arg("train", "epochs, steps and batch must be at least 1"));
    }
    let mut step_loss = |step: usize| -> Result<Tensor> {
        let mut loss: Option<Tensor> = None;
        for b in 0..opts.batch {
            let k = (step * opts.batch + b) as u64;
            let (l, _) = net.loss(&pairs.training_pair(k)?, &opts.loss, opts.regularizer.as_ref())?;
            loss = Some(match loss {
                Some(acc) => (acc + l)?,
                None => l,
            });
        }
        match loss {
            Some(l) => Ok((l / opts.batch as f64)?),
            None => Err(Error::arg("train", "empty batch")),
        }
    };
    let mut validate = || -> Result<Validation> {
        match &opts.validation {
            Some(v) if opts.validation_pairs > 0 => {
                let (l, d, e) = evaluate(net, v, opts.validation_pairs, &opts.loss)?;
                Ok(Validation { loss: Some(l), dice: d, error_mm: e })
            }
            _ => Ok(Validation::default()),
        }
    };
    fit(net, &opts.fit, &mut step_loss, &mut validate)
}

/// What [`fit`]'s validation callback reports after an epoch (each `None` when not measured).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Validation {
    /// Mean loss on held-out data.
    pub loss: Option<f64>,
    /// Mean Dice.
    pub dice: Option<f64>,
    /// Mean displacement error, mm.
    pub error_mm: Option<f64>,
}

/// Trains `net`'s weights on a loss its caller computes: `step_loss(step)` returns the loss of step
/// `step` (counted over the whole run, from 0) as a one-element tensor with its graph to the weights;
/// the optimizer ([`FitOptions`]) steps on it, with the L2 weight decay added. After each epoch,
/// `validate()` and a checkpoint. The network is in training mode during the steps
/// ([`Network::set_training`]) and in evaluation mode during validation and after. A progress bar
/// (epoch, step, loss, time left) shows on a terminal. A non-finite loss stops training (the weights of
/// the last finite step are kept: the failing step is not applied); Ctrl-C ([`FitOptions::cancel`])
/// stops after the step and writes the checkpoint.
///
/// Errors: zero epochs or steps, a learning rate not > 0, a weight decay < 0, a momentum outside
/// `[0, 1)`; a loss that is not one element; a loss that gives no gradient to some weight (named);
/// those of the callbacks; checkpoint I/O.
pub fn fit(
    net: &Network,
    opts: &FitOptions,
    step_loss: &mut dyn FnMut(usize) -> Result<Tensor>,
    validate: &mut dyn FnMut() -> Result<Validation>,
) -> Result<TrainReport> {
    let r = fit_inner(net, opts, step_loss, validate);
    net.set_training(false);
    r
}

fn fit_inner(
    net: &Network,
    opts: &FitOptions,
    step_loss: &mut dyn FnMut(usize) -> Result<Tensor>,
    validate: &mut dyn FnMut() -> Result<Validation>,
) -> Result<TrainReport> {
    if opts.epochs == 0 || opts.steps == 0 {
        return Err(Error::arg("train", "epochs, steps and batch must be at least 1"));
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return Err(Error::arg("train", format!("the learning rate must be > 0, got {}", opts.lr)));
    }
    if !(opts.weight_decay.is_finite() && opts.weight_decay >= 0.0) {
        return Err(Error::arg("train", format!("weight_decay must be >= 0, got {}", opts.weight_decay)));
    }
    if let LrSchedule::Exponential { gamma } = opts.schedule {
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(Error::arg("train", format!("the decay factor must be > 0, got {gamma}")));
        }
    }
    if let Some(path) = &opts.checkpoint {
        // Checked before the first step, not after the first epoch.
        crate::outputs::make_room(path)?;
    }
    let named = net.named_vars();
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = WeightOptimizer::new(opts)?;
    let mut report = TrainReport { epochs: Vec::new(), steps: 0, seconds: 0.0, stop: Stop::Epochs };
    if opts.resume {
        if let Some(path) = &opts.checkpoint {
            if let Some(r) = resume_from(net, path, &mut opt)? {
                tracing::info!("train: resumed {} at epoch {} ({} steps)", path.display(), r.epochs.len(), r.steps);
                report = r;
                report.stop = Stop::Epochs;
            }
        }
    }
    let total = opts.epochs * opts.steps;
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}<{eta_precise}] {wide_bar} {pos}/{len} loss {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(report.steps as u64);
    let cancelled = || opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
    let mut checked_gradients = false;
    'epochs: for epoch in report.epochs.len()..opts.epochs {
        let t0 = Instant::now();
        bar.set_prefix(format!("{} epoch {}/{}", net.name(), epoch + 1, opts.epochs));
        let mut sum = 0.0;
        let mut done = 0;
        for _ in 0..opts.steps {
            if cancelled() {
                report.stop = Stop::Cancelled;
                break;
            }
            let lr = opts.schedule.at(opts.lr, report.steps, total, opts.steps);
            opt.inner().set_lr(lr);
            net.set_training(true);
            let loss = step_loss(report.steps)?;
            if loss.elem_count() != 1 {
                return Err(Error::Shape {
                    op: "train".into(),
                    expected: "a one-element loss".into(),
                    actual: format!("{:?}", loss.dims()),
                });
            }
            let loss = loss.flatten_all()?.get(0)?;
            let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !v.is_finite() {
                tracing::warn!("train: loss is {v} at step {}; stopping with the last finite weights", report.steps);
                report.stop = Stop::NonFinite;
                break 'epochs;
            }
            let mut grads = loss.backward()?;
            if !checked_gradients {
                let missing: Vec<&str> =
                    named.iter().filter(|(_, v)| grads.get(v.as_tensor()).is_none()).map(|(n, _)| n.as_str()).collect();
                if !missing.is_empty() {
                    return Err(Error::arg(
                        "train",
                        format!(
                            "the loss gives no gradient to {} of the network's {} weight tensors ({}): compute it from the network's output",
                            missing.len(),
                            named.len(),
                            missing.join(", ")
                        ),
                    ));
                }
                checked_gradients = true;
            }
            if opts.weight_decay > 0.0 {
                // L2 weight decay as PyTorch's: λ w joins each weight's gradient.
                for w in &vars {
                    if let Some(g) = grads.get(w.as_tensor()) {
                        let decayed = (g + (w.as_tensor().detach() * opts.weight_decay)?)?;
                        grads.insert(w.as_tensor(), decayed);
                    }
                }
            }
            opt.inner().step(&vars, &grads)?;
            report.steps += 1;
            sum += v;
            done += 1;
            bar.set_message(format!("{v:.5}"));
            bar.inc(1);
        }
        net.set_training(false);
        if done == 0 {
            break;
        }
        let val = validate()?;
        let er = EpochReport {
            epoch: epoch + 1,
            train_loss: sum / done as f64,
            val_loss: val.loss,
            val_dice: val.dice,
            val_error_mm: val.error_mm,
            lr: opt.lr(),
            seconds: t0.elapsed().as_secs_f64(),
        };
        tracing::info!("train: {er:?}");
        report.epochs.push(er);
        report.seconds += t0.elapsed().as_secs_f64();
        if let Some(path) = &opts.checkpoint {
            save_checkpoint(net, path, &report, &opt)?;
        }
        if report.stop.is_cancelled() {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(report)
}
