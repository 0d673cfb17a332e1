//! Multi-scale instance-specific optimization (ISO, seed `000` Algorithm 1): the parameters of a
//! transform are refined by gradient descent on a similarity loss over a coarse-to-fine image pyramid,
//! carried from each level to the next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use super::convergence::WindowedSlope;
use super::optimizer::{Adam, Optimizer};
use crate::error::{Error, Result};
use crate::image::resample::{resample, Interpolation, Padding};
use crate::image::smooth::pyramid;
use crate::image::Image;
use crate::metrics::{Metric, OptionValue};
use crate::ops::SampleMode;
use crate::spatial::{warp_tensor, Linear, LinearKind};

/// A pyramid schedule: per level, the downsampling factor, iterations, Gaussian sigma (voxels of the
/// full-resolution image; `None`: factor / 3) and learning rate (mm per step for translations; it decays
/// linearly to a tenth over the level's iterations).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schedule {
    pub factors: Vec<f64>,
    pub iterations: Vec<usize>,
    pub sigmas: Option<Vec<f64>>,
    pub lr: Vec<f64>,
}

impl Schedule {
    /// `scales` levels with factors `2^(scales-1), ..., 2, 1`, `iterations` per level and one learning
    /// rate for all. Errors: `scales` 0, or an iteration list of another length.
    pub fn new(scales: usize, iterations: &[usize], lr: f64) -> Result<Self> {
        if scales == 0 || scales > 8 {
            return Err(Error::arg("schedule", format!("scales must be 1 to 8, got {scales}")));
        }
        let factors: Vec<f64> = (0..scales).rev().map(|l| 2f64.powi(l as i32)).collect();
        let iterations = match iterations.len() {
            1 => vec![iterations[0]; scales],
            n if n == scales => iterations.to_vec(),
            n => return Err(Error::arg("schedule", format!("{n} iteration counts for {scales} levels"))),
        };
        let s = Schedule { factors, iterations, sigmas: None, lr: vec![lr; scales] };
        s.check()?;
        Ok(s)
    }

    /// Checks the lists agree and factors do not increase. Errors: [`Error::InvalidArgument`].
    pub fn check(&self) -> Result<()> {
        let n = self.factors.len();
        if n == 0
            || self.iterations.len() != n
            || self.lr.len() != n
            || self.sigmas.as_ref().is_some_and(|s| s.len() != n)
        {
            return Err(Error::arg("schedule", "factors, iterations, sigmas and lr must have one entry per level"));
        }
        if self.factors.windows(2).any(|w| w[1] > w[0]) || self.factors.iter().any(|f| *f < 1.0) {
            return Err(Error::arg(
                "schedule",
                format!("factors must be >= 1 and not increase, got {:?}", self.factors),
            ));
        }
        Ok(())
    }
}

/// Options of [`iso_linear`].
#[derive(Clone)]
pub struct IsoOptions {
    pub schedule: Schedule,
    pub metric: Metric,
    /// Only fixed voxels inside this mask (non-zero, on the fixed grid) count.
    pub fixed_mask: Option<Image>,
    /// Windowed-slope convergence: window (iterations) and relative slope tolerance.
    pub convergence: (usize, f64),
    /// Set to true (e.g. by Ctrl-C) to stop; the best parameters so far are kept.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What happened at one pyramid level.
#[derive(Clone, Debug, Serialize)]
pub struct LevelReport {
    pub factor: f64,
    pub iterations: usize,
    pub final_loss: f64,
    pub best_loss: f64,
    pub seconds: f64,
    pub losses: Vec<f64>,
    /// Why the level ended: `iterations`, `converged`, `non-finite loss`, `cancelled`.
    pub stop: String,
}

/// The result of [`iso_linear`].
#[derive(Clone, Debug)]
pub struct IsoResult {
    pub transform: Linear,
    pub levels: Vec<LevelReport>,
    pub seconds: f64,
}

/// Per-parameter step scales of a linear kind: 1 for translations (mm); `1 / radius` for rotations,
/// scales and shears, so a unit step moves points at the image's radius by about 1 mm.
fn param_scales(kind: LinearKind, radius: f64) -> Tensor {
    let n = kind.num_params();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let translation = match kind {
                LinearKind::Matrix => i % 4 == 3,
                _ => i < 3,
            };
            if translation {
                1.0
            } else {
                (1.0 / radius) as f32
            }
        })
        .collect();
    // Infallible: the vector has n entries.
    Tensor::from_vec(v, n, &Device::Cpu).unwrap_or_else(|_| unreachable!())
}

/// Fills the Parzen measures' intensity ranges from the full-resolution images (unless set), so the
/// bins do not move as the warped image changes.
fn fix_ranges(metric: &Metric, fixed: &Image, moving: &Image) -> Result<Metric> {
    let mut m = metric.clone();
    if m.option_names().contains(&"range_fixed") {
        let (f, mv) = (fixed.stats()?, moving.stats()?);
        if !m.has_range(true) && f.max > f.min {
            m.set("range_fixed", OptionValue::Range(f.min, f.max))?;
        }
        if !m.has_range(false) && mv.max > mv.min {
            m.set("range_moving", OptionValue::Range(mv.min, mv.max))?;
        }
    }
    Ok(m)
}

/// Multi-scale ISO of a linear transform (any kind) mapping `fixed` world points to `moving` ones,
/// starting from `init`, with Adam over the pyramid of `opts.schedule`. At each level both images are
/// smoothed and resampled to the level's grid, the moving one warped onto the fixed one, and the loss
/// of `opts.metric` minimized; parameters carry over between levels. A non-finite loss stops the level
/// (reported) and keeps the best parameters so far.
///
/// Errors: an invalid schedule; images with several channels; tensor errors.
pub fn iso_linear(fixed: &Image, moving: &Image, init: &Linear, opts: &IsoOptions) -> Result<IsoResult> {
    opts.schedule.check()?;
    if fixed.channels() != 1 || moving.channels() != 1 {
        return Err(Error::arg("iso", "fixed and moving must have one channel each"));
    }
    let start = Instant::now();
    let metric = fix_ranges(&opts.metric, fixed, moving)?;
    let s = &opts.schedule;
    let fpyr = pyramid(fixed, &s.factors, s.sigmas.as_deref())?;
    let mpyr = pyramid(moving, &s.factors, s.sigmas.as_deref())?;
    let radius = {
        let c = fixed.grid().corners();
        let ctr = fixed.grid().centre();
        c.iter()
            .map(|p| ((p[0] - ctr[0]).powi(2) + (p[1] - ctr[1]).powi(2) + (p[2] - ctr[2]).powi(2)).sqrt())
            .fold(0.0, f64::max)
            / 2.0
    };
    let var = Var::from_tensor(&init.params().detach())?;
    let mut opt = Adam::new(s.lr[0], vec![Some(param_scales(init.kind(), radius.max(1.0)))]);
    let mut best = (f64::INFINITY, var.as_tensor().detach().copy()?);
    let mut levels = Vec::new();
    for (l, (fl, ml)) in fpyr.iter().zip(&mpyr).enumerate() {
        let t0 = Instant::now();
        opt.reset();
        let mask = match &opts.fixed_mask {
            Some(m) => Some(resample(m, fl.image.grid(), Interpolation::Nearest, Padding::Zero)?.data().clone()),
            None => None,
        };
        let mut conv = WindowedSlope::new(opts.convergence.0, opts.convergence.1);
        let (mut losses, mut stop) = (Vec::new(), "iterations".to_string());
        // Each level judges its own loss (the pyramid changes the loss's scale): best of this level.
        best.0 = f64::INFINITY;
        let iters = s.iterations[l];
        for it in 0..iters {
            // Linear decay to a tenth of the level's rate: large early steps, a fine finish.
            opt.set_lr(s.lr[l] * (1.0 - 0.9 * it as f64 / iters.max(1) as f64));
            if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                stop = "cancelled".into();
                break;
            }
            let t = init.with_params(var.as_tensor().clone())?;
            let warped =
                warp_tensor(ml.image.data(), ml.image.grid(), &t, fl.image.grid(), SampleMode::Linear, Padding::Zero)?;
            let loss = metric.loss(fl.image.data(), &warped, mask.as_ref())?;
            let lv = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !lv.is_finite() {
                stop = "non-finite loss".into();
                tracing::warn!("iso level {l}: loss is {lv}; keeping the best parameters");
                break;
            }
            losses.push(lv);
            if lv < best.0 {
                best = (lv, var.as_tensor().detach().copy()?);
            }
            if conv.push(lv) {
                stop = "converged".into();
                break;
            }
            let grads = loss.backward()?;
            opt.step(std::slice::from_ref(&var), &grads)?;
        }
        // Carry the best parameters of this level on.
        var.set(&best.1)?;
        tracing::info!(
            "iso level {l} (factor {}): {} iterations, best loss {:.6}, {stop}",
            s.factors[l],
            losses.len(),
            best.0
        );
        levels.push(LevelReport {
            factor: s.factors[l],
            iterations: losses.len(),
            final_loss: losses.last().copied().unwrap_or(f64::NAN),
            best_loss: best.0,
            seconds: t0.elapsed().as_secs_f64(),
            losses,
            stop: stop.clone(),
        });
        if stop == "cancelled" {
            break;
        }
    }
    Ok(IsoResult { transform: init.with_params(best.1)?, levels, seconds: start.elapsed().as_secs_f64() })
}
