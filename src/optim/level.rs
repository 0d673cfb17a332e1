//! The objectives of one pyramid level of linear ISO ([`super::iso`]): the loss of a similarity measure
//! between the fixed image and the moving image mapped through a linear transform, as a function of the
//! transform's flat parameters ([`Objective`]).
//!
//! | objective | measures | points | gradient |
//! |---|---|---|---|
//! | [`FusedLevel`] | global SSD, NCC, MI, NMI, CR ([`Metric::point_measure`]) | fresh random points per iteration, one fixed draw, or every voxel | the fused kernel [`crate::ops::point_metric`] (no tensor per evaluation) |
//! | [`TensorLevel`] | any (local measures, script measures, global ones without a fused form) | the level's grid (jittered per iteration, or fixed), or random points | candle autograd through the warp |
//!
//! Also the fixed mask on a level's grid ([`level_mask`]) and the random point sampler.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::minimize::{Eval, Objective};
use super::objective::{flatten, unflatten};
use super::sampled::{fixed_values, grid_samples, SampledObjective};
use crate::error::{Error, Result};
use crate::image::resample::{resample, Interpolation, Padding};
use crate::image::{Grid, Image};
use crate::metrics::Metric;
use crate::ops::point_metric::PointSamples;
use crate::ops::{grid_sample, SampleMode};
use crate::spatial::{apply_matrix, matrix34, warp_tensor, Linear, Transform};

/// A fixed mask (non-zero inside) on a pyramid level's `grid`: `(1, Z, Y, X)` f32, 1 inside. Nearest
/// resampling, as ITK evaluates a mask at a point; where that leaves no voxel (a small mask on a coarse
/// level), the mask spread by a Gaussian of half the level's spacing (mm) and sampled there counts
/// where it reaches half its peak (the level voxels nearest the region), so the level still sees it.
///
/// Errors: a mask with no voxel on `grid` even so (it lies outside the fixed image's field of view);
/// resampling errors.
pub fn level_mask(mask: &Image, grid: &Grid) -> Result<Tensor> {
    let inside = |t: &Tensor| -> Result<f32> { Ok(t.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
    let near = resample(mask, grid, Interpolation::Nearest, Padding::Zero)?.data().ne(0f32)?.to_dtype(DType::F32)?;
    if inside(&near)? > 0.0 {
        return Ok(near);
    }
    // The mask spread over a level voxel (a Gaussian of half the level's spacing), then sampled.
    let ones =
        Image::new(mask.data().ne(0f32)?.to_dtype(DType::F32)?, mask.grid().clone(), crate::image::DataType::Float32)?;
    let sig = grid.spacing().map(|s| 0.5 * s);
    let spread = crate::image::smooth::smooth(&ones, sig, crate::image::smooth::SigmaUnit::Mm)?;
    let level = resample(&spread, grid, Interpolation::Linear, Padding::Zero)?;
    let top = level.data().max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if top > 0.0 {
        return Ok(level.data().ge(0.5 * top)?.to_dtype(DType::F32)?);
    }
    Err(Error::arg(
        "fixed mask",
        format!(
            "no voxel of the mask falls on the level grid of {:?} voxels ({:?} mm): the mask lies outside the fixed image",
            grid.shape(),
            grid.spacing()
        ),
    ))
}

/// Random sample points of a level: voxel indices drawn uniformly from the grid (or from the non-zero
/// voxels of a mask) with a uniform jitter of up to half a voxel per axis, clamped to the grid.
pub(crate) struct PointSampler {
    rng: ChaCha8Rng,
    /// Flat voxel indices to draw from; `None`: every voxel (drawn directly, no lookup).
    candidates: Option<Vec<u32>>,
    /// How many voxels `candidates` holds (all of the grid's when `None`).
    count: usize,
    shape: [usize; 3],
    n: usize,
}

impl PointSampler {
    /// `n` points per draw from `grid` (inside `mask`, `(1, Z, Y, X)` on the grid, when given).
    ///
    /// Errors: an empty mask; tensor errors.
    pub(crate) fn new(grid: &Grid, mask: Option<&Tensor>, n: usize, seed: u64) -> Result<Self> {
        let [x, y, z] = grid.shape();
        let candidates: Option<Vec<u32>> = match mask {
            Some(m) => Some(
                m.flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(i, _)| i as u32)
                    .collect(),
            ),
            None => None,
        };
        let count = candidates.as_ref().map_or(x * y * z, Vec::len);
        if count == 0 {
            return Err(Error::arg("iso", "the fixed mask is empty at this pyramid level"));
        }
        Ok(PointSampler { rng: ChaCha8Rng::seed_from_u64(seed), candidates, count, shape: [x, y, z], n })
    }

    /// `n` voxel coordinates (x, y, z) of the fixed grid, `3 n` values.
    pub(crate) fn draw_points(&mut self) -> Vec<f32> {
        let [x, y, z] = self.shape;
        let mut v = Vec::with_capacity(3 * self.n);
        for _ in 0..self.n {
            let r = self.rng.random_range(0..self.count);
            let i = self.candidates.as_ref().map_or(r, |c| c[r] as usize);
            let idx = [i % x, (i / x) % y, i / (x * y)];
            for (a, &c) in idx.iter().enumerate() {
                let hi = [x, y, z][a] as f32 - 1.0;
                let j: f32 = self.rng.random_range(-0.5f32..0.5);
                v.push((c as f32 + j).clamp(0.0, hi));
            }
        }
        v
    }

    /// `(n, 3)` f32 voxel coordinates (x, y, z) of the fixed grid, on `device`.
    fn draw(&mut self, device: &Device) -> Result<Tensor> {
        let v = self.draw_points();
        Ok(Tensor::from_vec(v, (self.n, 3), device)?)
    }

    /// Fresh sample points with the fixed image's values there (trilinear, border padding).
    pub(crate) fn draw_samples(&mut self, fixed: &[f32]) -> PointSamples {
        let points = self.draw_points();
        let fixed = fixed_values(fixed, self.shape, &points);
        PointSamples { points, fixed }
    }
}

/// Which points a level's objective sees.
pub(crate) enum Points {
    /// Every voxel of the level's grid (inside the mask).
    Grid,
    /// `n` fresh random points before every iteration ([`Objective::redraw`]).
    Fresh(PointSampler),
    /// One draw of random points, kept for the level (L-BFGS and Powell need a fixed objective).
    Once(PointSampler),
    /// The grid moved by a fresh random offset of up to half a voxel per axis before every iteration
    /// (local measures; both images interpolated there). The generator is seeded per level.
    Jittered(ChaCha8Rng),
}

/// A level's objective on the fused path: a global measure at sample points through
/// [`SampledObjective`] (value and gradient in f64, no tensors).
pub(crate) struct FusedLevel {
    obj: SampledObjective,
    fixed: Vec<f32>,
    sampler: Option<PointSampler>,
    samples: PointSamples,
}

impl FusedLevel {
    /// The objective of `metric` (with a point form: [`Metric::point_measure`]) for `fixed` and
    /// `moving` at one level, from `init`'s kind and centre; `points` other than [`Points::Jittered`];
    /// `mask` `(1, Z, Y, X)` on the fixed grid.
    ///
    /// Errors: a measure without a point form; an empty mask; tensor errors.
    pub(crate) fn new(
        metric: &Metric,
        fixed: &Image,
        moving: &Image,
        init: &Linear,
        points: Points,
        mask: Option<&Tensor>,
    ) -> Result<Self> {
        let measure = metric
            .point_measure_on(fixed.grid().shape())
            .ok_or_else(|| Error::arg("iso", format!("{metric} has no fused point form")))?;
        let obj = SampledObjective::new(measure, fixed.grid(), moving, init.kind(), init.centre())?;
        let fdata = fixed.to_vec_f32()?;
        let (sampler, samples) = match points {
            Points::Fresh(s) => (Some(s), PointSamples::default()),
            Points::Once(mut s) => {
                let samples = s.draw_samples(&fdata);
                (None, samples)
            }
            Points::Grid | Points::Jittered(_) => {
                let m = mask.map(|m| m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
                (None, grid_samples(fixed, m.as_deref())?)
            }
        };
        Ok(FusedLevel { obj, fixed: fdata, sampler, samples })
    }

    /// The number of sample points of a draw.
    pub(crate) fn points(&self) -> usize {
        self.sampler.as_ref().map_or(self.samples.len(), |s| s.n)
    }
}

impl Objective for FusedLevel {
    fn eval(&mut self, x: &[f64]) -> Result<Eval> {
        let (loss, grad, inside) = self.obj.eval(x, &self.samples)?;
        Ok(Eval { loss, grad, overlap: inside > 0 })
    }
    fn redraw(&mut self) -> Result<()> {
        if let Some(s) = self.sampler.as_mut() {
            self.samples = s.draw_samples(&self.fixed);
        }
        Ok(())
    }
    fn noisy(&self) -> bool {
        self.sampler.is_some()
    }
}

/// A level's objective on the tensor path: the moving image warped through the transform (fused warp,
/// autograd to the parameters) onto the level's grid, or sampled at random points, and the measure's
/// loss on it.
pub(crate) struct TensorLevel<'a> {
    metric: &'a Metric,
    fixed: &'a Image,
    moving: &'a Image,
    init: &'a Linear,
    /// The fixed mask on the level's grid (`(1, Z, Y, X)`), and the full-resolution one (re-sampled
    /// onto each jittered grid).
    mask: Option<Tensor>,
    full_mask: Option<&'a Image>,
    points: Points,
    /// The current points: random fixed voxel coordinates `(n, 3)`, or a jittered grid with the fixed
    /// image and mask resampled there.
    drawn: Option<Tensor>,
    jittered: Option<(Grid, Tensor, Option<Tensor>)>,
}

impl<'a> TensorLevel<'a> {
    /// The objective of `metric` for `fixed` and `moving` at one level, with `init`'s kind and centre.
    /// `mask` is the level's mask, `full_mask` the fixed mask it came from (for jittered grids).
    ///
    /// Errors: tensor errors of the first draw.
    pub(crate) fn new(
        metric: &'a Metric,
        fixed: &'a Image,
        moving: &'a Image,
        init: &'a Linear,
        points: Points,
        mask: Option<Tensor>,
        full_mask: Option<&'a Image>,
    ) -> Result<Self> {
        let mut t = TensorLevel { metric, fixed, moving, init, mask, full_mask, points, drawn: None, jittered: None };
        if let Points::Once(s) = &mut t.points {
            t.drawn = Some(s.draw(fixed.data().device())?);
        }
        Ok(t)
    }

    /// The loss at the parameter tensor `p` (with or without a graph to it).
    fn loss_at(&self, p: &Tensor) -> Result<Tensor> {
        let t = self.init.with_params(p.clone())?;
        if let Some(pts) = &self.drawn {
            return sampled_loss(self.metric, self.fixed, self.moving, &t, pts);
        }
        let (grid, fdata, fmask) = match &self.jittered {
            Some((g, f, m)) => (g, f, m.as_ref()),
            None => (self.fixed.grid(), self.fixed.data(), self.mask.as_ref()),
        };
        let warped = warp_tensor(self.moving.data(), self.moving.grid(), &t, grid, SampleMode::Linear, Padding::Zero)?;
        self.metric.loss(fdata, &warped, fmask)
    }

    /// The parameters `x` as a tensor like `init`'s.
    fn params(&self, x: &[f64]) -> Result<Tensor> {
        unflatten(x, self.init.params())
    }
}

impl Objective for TensorLevel<'_> {
    fn eval(&mut self, x: &[f64]) -> Result<Eval> {
        let var = Var::from_tensor(&self.params(x)?)?;
        let loss = self.loss_at(var.as_tensor())?;
        let lv = scalar(&loss)?;
        let grads = loss.backward()?;
        let grad = match grads.get(var.as_tensor()) {
            Some(g) => flatten(g)?,
            None => vec![0.0; x.len()],
        };
        Ok(Eval { loss: lv, grad, overlap: true })
    }
    fn value(&mut self, x: &[f64]) -> Result<f64> {
        scalar(&self.loss_at(&self.params(x)?)?)
    }
    fn redraw(&mut self) -> Result<()> {
        let dev = self.fixed.data().device().clone();
        match &mut self.points {
            Points::Fresh(s) => self.drawn = Some(s.draw(&dev)?),
            Points::Jittered(rng) => {
                let off: [f64; 3] = std::array::from_fn(|_| rng.random_range(-0.5..0.5));
                let g = self.fixed.grid();
                let g2 = Grid::new(g.shape(), g.spacing(), g.index_to_world(off), g.direction())?;
                let f2 = resample(self.fixed, &g2, Interpolation::Linear, Padding::Border)?;
                let m2 = self.full_mask.map(|m| level_mask(m, &g2)).transpose()?;
                self.jittered = Some((g2, f2.data().clone(), m2));
            }
            Points::Grid | Points::Once(_) => {}
        }
        Ok(())
    }
    fn noisy(&self) -> bool {
        matches!(self.points, Points::Fresh(_) | Points::Jittered(_))
    }
}

/// A one-element loss as f64.
fn scalar(loss: &Tensor) -> Result<f64> {
    Ok(loss.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?.first().copied().unwrap_or(f64::NAN))
}

/// The loss at random points: fixed and moving are sampled at the same (mapped) points; points whose
/// image lies outside the moving grid are masked out.
fn sampled_loss(metric: &Metric, fixed: &Image, moving: &Image, t: &dyn Transform, fvox: &Tensor) -> Result<Tensor> {
    let n = fvox.dim(0)?;
    let dev = fvox.device();
    let fvals = grid_sample(fixed.data(), fvox, SampleMode::Linear, Padding::Border)?.reshape((1, 1, 1, n))?;
    let world = apply_matrix(&matrix34(&fixed.grid().voxel_to_world(), dev)?, fvox)?;
    let mvox = apply_matrix(&matrix34(&moving.grid().world_to_voxel(), dev)?, &t.map_points(&world)?)?;
    let [mx, my, mz] = moving.grid().shape();
    let hi = Tensor::new(&[mx as f32 - 1.0, my as f32 - 1.0, mz as f32 - 1.0], dev)?;
    let d = mvox.detach();
    let inside = d.ge(0f32)?.to_dtype(DType::F32)?.mul(&d.broadcast_le(&hi)?.to_dtype(DType::F32)?)?;
    let inside = inside.min_keepdim(1)?.reshape((1, 1, 1, n))?;
    let mvals = grid_sample(moving.data(), &mvox, SampleMode::Linear, Padding::Zero)?.reshape((1, 1, 1, n))?;
    metric.loss(&fvals, &mvals, Some(&inside))
}
