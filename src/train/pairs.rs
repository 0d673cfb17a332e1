//! Training and evaluation pairs: moving / fixed images (and label maps) read from files, or made on
//! the fly from real images by a known random affine or smooth deformation and an intensity
//! augmentation, reproducibly from a seed.
//!
//! A synthetic pair is built from a `fixed` image and a `moving` image that are already aligned (for
//! instance avg152 T1 and T2, which share one grid and anatomy): a random transform `T` (fixed points to
//! moving points) is drawn, and the moving image becomes `moving ∘ T⁻¹` (resampled on its own grid), so
//! that `T` is the registration's true answer. For a smooth deformation the moving image is
//! `moving(x + w(x))` and the truth is the inverse of `x + w(x)` (fixed-point iteration).

use std::sync::Arc;

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::resample::Padding;
use crate::image::smooth::{smooth, SigmaUnit};
use crate::image::{DataType, Grid, Image};
use crate::spatial::{warp, Ddf, Linear, LinearKind, Transform, WarpInterpolation};

/// One registration pair. Transforms map fixed world points (mm) to moving ones.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The moving image (resampled onto the fixed grid by a registration).
    pub moving: Image,
    /// The fixed image.
    pub fixed: Image,
    /// A label map of the moving image, if any (integer labels, 0 = background).
    pub moving_labels: Option<Image>,
    /// The fixed image's label map, if any.
    pub fixed_labels: Option<Image>,
    /// The true transform, when the pair is synthetic.
    pub truth: Option<Arc<dyn Transform>>,
}

/// Bounds of a random affine (each parameter uniform in `[-bound, bound]` about the identity).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AffineBounds {
    /// Translation, mm.
    pub translation: f64,
    /// Rotation about each axis, degrees.
    pub rotation_deg: f64,
    /// Scale offset (scales in `1 ± scale`).
    pub scale: f64,
    /// Shear.
    pub shear: f64,
}

impl Default for AffineBounds {
    /// The bounds of the known-affine tests (tests/register.rs): 15 mm, 15 degrees, scales 0.9-1.1, shears 0.05.
    fn default() -> Self {
        AffineBounds { translation: 15.0, rotation_deg: 15.0, scale: 0.1, shear: 0.05 }
    }
}

/// A random deformation of a synthetic pair.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Deformation {
    /// A 12-parameter affine ([`Linear`], `M = Sh S Rz Ry Rx` about the fixed grid's centre).
    Affine(AffineBounds),
    /// A smooth displacement: white noise smoothed by a Gaussian of `sigma_mm`, scaled so its largest
    /// vector inside the fixed image's foreground (values above 0) is `max_mm`.
    Smooth { max_mm: f64, sigma_mm: f64 },
}

/// Intensity augmentation of the moving image: `I' = a * (I / max)^gamma * max + noise`, with `gamma`
/// log-uniform in `[1 / (1 + gamma), 1 + gamma]`, `a` uniform in `[1 - scale, 1 + scale]` and Gaussian
/// noise of `noise` times the image's maximum. All zero: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntensityAugmentation {
    pub gamma: f64,
    pub scale: f64,
    pub noise: f64,
}

/// Synthetic pairs from aligned real images (see the module documentation).
#[derive(Clone, Debug)]
pub struct SyntheticPairs {
    /// The fixed image.
    pub fixed: Image,
    /// Moving images aligned with `fixed` (one is drawn per pair; e.g. T2 and PD for multi-modal pairs).
    pub moving: Vec<Image>,
    /// Label map of `fixed` (carried to the moving side through the same deformation), if any.
    pub labels: Option<Image>,
    /// The random deformation.
    pub deformation: Deformation,
    /// The intensity augmentation of the moving image.
    pub intensity: IntensityAugmentation,
    /// Pair `i` is drawn from the seed `seed + i`.
    pub seed: u64,
    /// Affine pairs: voxels added on every side of the moving image's grid, so that a random affine
    /// does not push part of the image out of it (templates fill their field of view; a cropped moving
    /// image changes what a measure sees, hence where its optimum lies). 0: the moving image's own grid.
    pub margin: usize,
}

/// `g` with `margin` voxels more on every side (the same voxel positions inside).
fn widened(g: &Grid, margin: usize) -> Result<Grid> {
    if margin == 0 {
        return Ok(g.clone());
    }
    let m = margin as i64;
    g.sub_grid([-m; 3], g.shape().map(|n| n + 2 * margin))
}

/// A random affine within `b`, about `centre`, from `rng`.
pub fn random_affine(rng: &mut impl Rng, b: &AffineBounds, centre: [f64; 3]) -> Result<Linear> {
    let mut u = |s: f64| if s > 0.0 { rng.random_range(-s..=s) } else { 0.0 };
    let r = b.rotation_deg.to_radians();
    let p = [
        u(b.translation),
        u(b.translation),
        u(b.translation),
        u(r),
        u(r),
        u(r),
        1.0 + u(b.scale),
        1.0 + u(b.scale),
        1.0 + u(b.scale),
        u(b.shear),
        u(b.shear),
        u(b.shear),
    ];
    Linear::from_params(LinearKind::Affine, &p, centre)
}

/// Standard normal samples (Box-Muller).
pub(crate) fn normals(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| normal(rng) as f32).collect()
}

/// One standard normal draw (Box-Muller).
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A smooth random displacement field `(3, Z, Y, X)` in mm on `fixed`'s grid: Gaussian noise smoothed by
/// `sigma_mm`, scaled so its largest vector where `fixed > 0` is `max_mm`, every vector clipped to
/// `max_mm` (longer ones arise at the grid's border).
///
/// Errors: `max_mm` or `sigma_mm` not finite and > 0; an image without foreground; tensor errors.
pub fn random_smooth_field(rng: &mut impl Rng, fixed: &Image, max_mm: f64, sigma_mm: f64) -> Result<Ddf> {
    if !(max_mm.is_finite() && max_mm > 0.0 && sigma_mm.is_finite() && sigma_mm > 0.0) {
        return Err(Error::arg("random_smooth_field", format!("max {max_mm} mm and sigma {sigma_mm} mm must be > 0")));
    }
    let g = fixed.grid().clone();
    let [z, y, x] = g.zyx();
    let noise = Tensor::from_vec(normals(rng, 3 * z * y * x), (3, z, y, x), fixed.data().device())?;
    let sm = smooth(&Image::new(noise, g.clone(), DataType::Float32)?, [sigma_mm; 3], SigmaUnit::Mm)?;
    let fg = fixed.data().narrow(0, 0, 1)?.gt(0f64)?.to_dtype(candle_core::DType::F32)?;
    let norm = sm.data().sqr()?.sum_keepdim(0)?.sqrt()?.mul(&fg)?;
    let mx = norm.max_all()?.to_scalar::<f32>()? as f64;
    if mx <= 0.0 {
        return Err(Error::arg("random_smooth_field", "the fixed image has no foreground (no value above 0)"));
    }
    // Smoothing renormalizes at the grid's border, where fewer samples are averaged, so vectors there
    // can be several times longer than in the foreground: clip every vector to `max_mm`.
    let field = (sm.data() * (max_mm / mx))?;
    let len = field.sqr()?.sum_keepdim(0)?.sqrt()?.maximum(max_mm)?;
    let clip = (len.recip()? * max_mm)?;
    Ddf::new(field.broadcast_mul(&clip)?, g)
}

/// Applies `aug` to `image` (see [`IntensityAugmentation`]).
///
/// Errors: tensor errors.
pub fn augment_intensity(rng: &mut impl Rng, image: &Image, aug: &IntensityAugmentation) -> Result<Image> {
    if aug.gamma <= 0.0 && aug.scale <= 0.0 && aug.noise <= 0.0 {
        return Ok(image.clone());
    }
    let mx = image.stats()?.max;
    if mx <= 0.0 {
        return Ok(image.clone());
    }
    let g = if aug.gamma > 0.0 {
        let l = (1.0 + aug.gamma).ln();
        rng.random_range(-l..=l).exp()
    } else {
        1.0
    };
    let a = if aug.scale > 0.0 { 1.0 + rng.random_range(-aug.scale..=aug.scale) } else { 1.0 };
    let d = image.data().to_dtype(candle_core::DType::F32)?.relu()?;
    let mut out = ((d / mx)?.powf(g)? * (a * mx))?;
    if aug.noise > 0.0 {
        let n = Tensor::from_vec(normals(rng, out.elem_count()), out.shape(), out.device())?;
        out = (out + (n * (aug.noise * mx))?)?;
    }
    image.with_data(out)
}

impl SyntheticPairs {
    /// Pair number `index` (the same pair for the same seed and index), with its truth.
    ///
    /// Errors: no moving image; as [`random_affine`], [`random_smooth_field`] and the warp.
    pub fn pair(&self, index: u64) -> Result<Pair> {
        self.make(index, true)
    }

    /// Pair number `index` without its truth (`truth: None`; the images are those of
    /// [`SyntheticPairs::pair`]): a smooth deformation's truth is the inverse of its field (a
    /// fixed-point iteration that costs more than making the pair), which training does not need.
    ///
    /// Errors: as [`SyntheticPairs::pair`].
    pub fn pair_without_truth(&self, index: u64) -> Result<Pair> {
        self.make(index, false)
    }

    fn make(&self, index: u64, with_truth: bool) -> Result<Pair> {
        if self.moving.is_empty() {
            return Err(Error::arg("pairs", "no moving image to make pairs from"));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9).wrapping_add(index));
        let base = &self.moving[rng.random_range(0..self.moving.len())];
        let g = self.fixed.grid();
        let (moving, moving_labels, truth): (Image, Option<Image>, Option<Arc<dyn Transform>>) = match self.deformation
        {
            Deformation::Affine(b) => {
                let t = random_affine(&mut rng, &b, g.centre())?;
                let inv = t.inverse()?;
                let m = warp(
                    base,
                    inv.as_ref(),
                    &widened(base.grid(), self.margin)?,
                    WarpInterpolation::Linear,
                    Padding::Zero,
                )?;
                let l = match &self.labels {
                    Some(l) => Some(warp(
                        l,
                        inv.as_ref(),
                        &widened(l.grid(), self.margin)?,
                        WarpInterpolation::Nearest,
                        Padding::Zero,
                    )?),
                    None => None,
                };
                (m, l, Some(Arc::new(t)))
            }
            Deformation::Smooth { max_mm, sigma_mm } => {
                let w = random_smooth_field(&mut rng, &self.fixed, max_mm, sigma_mm)?;
                let m = warp(base, &w, g, WarpInterpolation::Linear, Padding::Zero)?;
                let l = match &self.labels {
                    Some(l) => Some(warp(l, &w, g, WarpInterpolation::Nearest, Padding::Zero)?),
                    None => None,
                };
                (m, l, if with_truth { Some(w.inverse()?) } else { None })
            }
        };
        let moving = augment_intensity(&mut rng, &moving, &self.intensity)?;
        Ok(Pair { moving, fixed: self.fixed.clone(), moving_labels, fixed_labels: self.labels.clone(), truth })
    }
}

/// Where training pairs come from.
#[derive(Clone, Debug)]
pub enum PairSource {
    /// Given pairs (e.g. read from files), used in turn.
    List(Vec<Pair>),
    /// Pairs made on the fly.
    Synthetic(Box<SyntheticPairs>),
}

impl PairSource {
    /// Pair number `index`: the list's `index mod len`-th, or a fresh synthetic pair.
    ///
    /// Errors: an empty list; as [`SyntheticPairs::pair`].
    pub fn pair(&self, index: u64) -> Result<Pair> {
        match self {
            PairSource::List(v) if v.is_empty() => Err(Error::arg("pairs", "the list of pairs is empty")),
            PairSource::List(v) => Ok(v[(index % v.len() as u64) as usize].clone()),
            PairSource::Synthetic(s) => s.pair(index),
        }
    }

    /// Pair number `index` for a training step: as [`PairSource::pair`], but a synthetic pair comes
    /// without its truth ([`SyntheticPairs::pair_without_truth`]).
    ///
    /// Errors: as [`PairSource::pair`].
    pub fn training_pair(&self, index: u64) -> Result<Pair> {
        match self {
            PairSource::Synthetic(s) => s.pair_without_truth(index),
            other => other.pair(index),
        }
    }

    /// The number of distinct pairs (`None`: unbounded).
    pub fn len(&self) -> Option<usize> {
        match self {
            PairSource::List(v) => Some(v.len()),
            PairSource::Synthetic(_) => None,
        }
    }

    /// Whether the source is an empty list.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}
