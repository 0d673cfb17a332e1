//! Groupwise registration of N images by linear transforms (rigid, similarity, affine): one transform
//! per image from a common space, found together by minimizing a groupwise measure
//! ([`crate::metrics::groupwise`]) of the images' intensities at random points of the common grid, over
//! the ISO pyramid, with Adam.
//!
//! Transform j maps common-space world points (mm) to image j's world points, the convention of
//! pairwise transforms (fixed points to moving points), so `warp(images[j], transforms[j], grid)` brings
//! image j into the common space. The group does not drift: the parameters are projected so that their
//! mean over the group is the identity's (`p_j = x_j - mean_i x_i + id`, gradient `g_j - mean_i g_i`),
//! Learned-Miller's and Luo's constraint on the mean transform. Per iteration, each image is sampled
//! at its own transform of the points (trilinear, value and spatial gradient on the host); the measure's
//! loss and its gradient with respect to the intensities come from candle's autograd, and the chain rule
//! to each image's parameters is done in f64, as in [`super::sampled`]. A point counts only where it
//! falls inside every image. Intensities are mapped to `[0, 1]` by each image's 0.5th and 99.5th
//! percentiles (the Parzen bins do not move as the transforms change).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use nalgebra::Matrix4;
use rayon::prelude::*;

use super::init::{centre_of_mass, Init};
use super::iso::{registration_lbfgs, LevelReport, Polish, Schedule};
use super::level::PointSampler;
use super::minimize::{first_order, lbfgs_run, Eval, FirstOrderOptions, Objective};
use super::optimizer::AdamVec;
use crate::error::{Error, Result};
use crate::image::smooth::{pyramid, PyramidLevel};
use crate::image::trilinear::{corner_grad, corner_value, corners};
use crate::image::{Grid, Image};
use crate::metrics::groupwise::{group_loss_with, xmetric_posterior, GroupKind, GroupMetric, GroupState};
use crate::spatial::{linear_matrix_f64, Linear, LinearKind};

/// Options of [`groupwise_linear`].
#[derive(Clone, Debug)]
pub struct GroupwiseOptions {
    /// The transforms' kind (rigid, similarity, affine; translation).
    pub kind: LinearKind,
    /// Pyramid factors, iterations and learning rates (mm per step at the first iteration of a level,
    /// decayed linearly to a tenth; rotations and scales step by lr divided by the grid's half-radius).
    pub schedule: Schedule,
    /// Random points of the common grid drawn fresh for every iteration (all voxels of a smaller level).
    pub points: usize,
    /// Seed of the point draws.
    pub seed: u64,
    /// Checked before every iteration; when set, stop and return the transforms reached.
    pub cancel: Option<Arc<AtomicBool>>,
    /// How the transforms start: [`Init::Identity`] (the images' world coordinates as they are), or
    /// each image translated by its grid centre's ([`Init::Centres`]) or intensity centre of mass's
    /// ([`Init::Moments`]) offset from the group's mean, the common grid moved to centre on that mean.
    pub init: Init,
    /// A final L-BFGS refinement at the finest level on one fixed draw of points, the measure's model
    /// (X-CoReg, GMM) refitted there and then held (Adam's last iterates carry the noise of their
    /// point draws); `None`: none.
    pub polish: Option<Polish>,
}

/// What [`groupwise_linear`] found.
#[derive(Clone, Debug)]
pub struct GroupwiseResult {
    /// One transform per image, common-space world points to the image's (mm), about the common grid's
    /// centre; their parameters average to the identity's.
    pub transforms: Vec<Linear>,
    /// The common grid.
    pub grid: Grid,
    /// One report per pyramid level (losses per iteration).
    pub levels: Vec<LevelReport>,
    /// The final refinement's report (losses per evaluation), when it ran.
    pub polish: Option<LevelReport>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// X-CoReg's posterior segmentation on the common grid, one channel per class `(K, Z, Y, X)`
    /// (probabilities summing to 1 per voxel); `None` for the other measures.
    pub posterior: Option<Image>,
}

impl GroupwiseResult {
    /// Whether the run was cancelled (Ctrl-C).
    pub fn cancelled(&self) -> bool {
        self.levels.last().is_some_and(|r| r.stop.is_cancelled())
            || self.polish.as_ref().is_some_and(|r| r.stop.is_cancelled())
    }
}

/// One image at one pyramid level, as the objective samples it.
struct Member {
    data: Vec<f32>,
    shape: [usize; 3],
    world_to_voxel: Matrix4<f64>,
    /// Intensity range mapped to `[0, 1]`.
    lo: f64,
    hi: f64,
}

impl Member {
    fn new(image: &Image, range: (f64, f64)) -> Result<Self> {
        Ok(Member {
            data: image.to_vec_f32()?,
            shape: image.grid().shape(),
            world_to_voxel: image.grid().world_to_voxel(),
            lo: range.0,
            hi: range.1,
        })
    }

    /// Normalised intensity, its derivative with respect to the voxel position, and whether the
    /// point lies inside the image, at each common-grid voxel point `q` (3 values per point) mapped by
    /// `a` (common voxel to this image's voxel).
    fn sample(&self, a: &Matrix4<f64>, q: &[f32]) -> (Vec<f32>, Vec<[f32; 3]>, Vec<bool>) {
        let scale = 1.0 / (self.hi - self.lo);
        let lim = self.shape.map(|n| n as f64 - 1.0);
        let out: Vec<(f32, [f32; 3], bool)> = q
            .par_chunks_exact(3)
            .map(|p| {
                let (x, y, z) = (p[0] as f64, p[1] as f64, p[2] as f64);
                let m = [0, 1, 2].map(|r| a[(r, 0)] * x + a[(r, 1)] * y + a[(r, 2)] * z + a[(r, 3)]);
                let inside = (0..3).all(|k| m[k] >= 0.0 && m[k] <= lim[k]);
                if !inside {
                    return (0.0, [0.0; 3], false);
                }
                let c = corners(m, self.shape, true);
                let v = (corner_value(&self.data, &c) as f64 - self.lo) * scale;
                if !(0.0..=1.0).contains(&v) {
                    return (v.clamp(0.0, 1.0) as f32, [0.0; 3], true);
                }
                let g = corner_grad(&self.data, &c).map(|d| (d as f64 * scale) as f32);
                (v as f32, g, true)
            })
            .collect();
        let mut u = Vec::with_capacity(out.len());
        let mut g = Vec::with_capacity(out.len());
        let mut inside = Vec::with_capacity(out.len());
        for (v, d, i) in out {
            u.push(v);
            g.push(d);
            inside.push(i);
        }
        (u, g, inside)
    }
}

/// The 0.5th and 99.5th percentiles of an image's voxels (min and max when they coincide).
///
/// Errors: a non-finite voxel; a constant image.
fn intensity_range(image: &Image, which: usize) -> Result<(f64, f64)> {
    let mut v = image.to_vec_f32()?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::arg("groupwise", format!("image {which} has NaN or infinite voxels")));
    }
    let n = v.len();
    let mut at = |p: f64| -> f64 {
        let k = ((p * (n - 1) as f64).round() as usize).min(n - 1);
        *v.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1 as f64
    };
    let (lo, hi) = (at(0.005), at(0.995));
    if hi > lo {
        return Ok((lo, hi));
    }
    let (mn, mx) = (at(0.0), at(1.0));
    if mx > mn {
        Ok((mn, mx))
    } else {
        Err(Error::arg("groupwise", format!("image {which} is constant ({mn}): nothing to register")))
    }
}

/// The parameters with the group's mean moved to the identity's: `x_j - mean_i x_i + id`.
fn project(x: &[f64], n_img: usize, id: &[f64]) -> Vec<f64> {
    let p = id.len();
    let mean: Vec<f64> = (0..p).map(|k| (0..n_img).map(|j| x[j * p + k]).sum::<f64>() / n_img as f64).collect();
    x.iter().enumerate().map(|(i, v)| v - mean[i % p] + id[i % p]).collect()
}

/// Points (3 values each) in the order of the voxels they fall in, z slowest: neighbouring points then
/// read neighbouring memory in every image (the transforms are near each other), several times faster
/// than a random order on volumes larger than the caches.
fn sorted(points: Vec<f32>) -> Vec<f32> {
    let mut p: Vec<[f32; 3]> = points.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    p.sort_unstable_by(|a, b| {
        let key = |q: &[f32; 3]| (q[2] as i64, q[1] as i64, q[0]);
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.cmp(&kb.1)).then(ka.2.total_cmp(&kb.2))
    });
    p.concat()
}

/// The objective of one pyramid level.
struct GroupLevel<'a> {
    metric: &'a GroupMetric,
    members: Vec<Member>,
    common_to_world: Matrix4<f64>,
    kind: LinearKind,
    centre: [f64; 3],
    identity: Vec<f64>,
    sampler: PointSampler,
    points: Vec<f32>,
    state: &'a mut GroupState,
    device: Device,
    /// Evaluations so far, and the sum and count of the iterates from `average_from` on (Polyak
    /// averaging: the mean of the last iterates of a noisy objective is closer to its optimum than any
    /// one of them).
    evals: usize,
    average_from: usize,
    sum: Vec<f64>,
    count: usize,
    /// Refit the model at every evaluation (Adam), or hold it (the polish's line searches).
    update: bool,
}

impl GroupLevel<'_> {
    fn n_img(&self) -> usize {
        self.members.len()
    }
}

/// What every level's objective of one run shares.
struct Shared<'a> {
    metric: &'a GroupMetric,
    pyramids: &'a [Vec<PyramidLevel>],
    ranges: &'a [(f64, f64)],
    kind: LinearKind,
    centre: [f64; 3],
    identity: &'a [f64],
}

impl Shared<'_> {
    /// The objective of pyramid level `l` on the level's common grid `common`, `n` points per draw from
    /// `seed`, the iterates from `average_from` on averaged.
    fn level<'s>(
        &'s self,
        l: usize,
        common: &Grid,
        n: usize,
        seed: u64,
        state: &'s mut GroupState,
        average_from: usize,
    ) -> Result<GroupLevel<'s>> {
        let members = self
            .pyramids
            .iter()
            .zip(self.ranges)
            .map(|(p, &r)| Member::new(&p[l].image, r))
            .collect::<Result<Vec<_>>>()?;
        let mut sampler = PointSampler::new(common, None, n, seed)?;
        let points = sorted(sampler.draw_points());
        Ok(GroupLevel {
            metric: self.metric,
            members,
            common_to_world: common.voxel_to_world(),
            kind: self.kind,
            centre: self.centre,
            identity: self.identity.to_vec(),
            sampler,
            points,
            state,
            device: Device::Cpu,
            evals: 0,
            average_from,
            sum: Vec::new(),
            count: 0,
            update: true,
        })
    }
}

impl Objective for GroupLevel<'_> {
    fn eval(&mut self, x: &[f64]) -> Result<Eval> {
        let n_img = self.n_img();
        let np = self.identity.len();
        if self.evals >= self.average_from {
            if self.sum.len() != x.len() {
                self.sum = vec![0.0; x.len()];
            }
            self.sum.iter_mut().zip(x).for_each(|(s, v)| *s += v);
            self.count += 1;
        }
        self.evals += 1;
        let p = project(x, n_img, &self.identity);
        let n = self.points.len() / 3;
        let mut u = Vec::with_capacity(n_img * n);
        let mut grads = Vec::with_capacity(n_img);
        let mut inside = vec![true; n];
        let mut maps = Vec::with_capacity(n_img);
        for (j, m) in self.members.iter().enumerate() {
            let (t, dt) = linear_matrix_f64(self.kind, &p[j * np..(j + 1) * np], self.centre)?;
            let a = m.world_to_voxel * t * self.common_to_world;
            let (uj, gj, ij) = m.sample(&a, &self.points);
            u.extend(uj);
            grads.push(gj);
            inside.iter_mut().zip(ij).for_each(|(a, b)| *a &= b);
            maps.push(dt);
        }
        let count = inside.iter().filter(|&&i| i).count();
        if count == 0 {
            return Ok(Eval { loss: f64::NAN, grad: vec![0.0; x.len()], overlap: false });
        }
        let w: Vec<f32> = inside.iter().map(|&i| if i { 1.0 } else { 0.0 }).collect();
        let var = Var::from_tensor(&Tensor::from_vec(u, (n_img, n), &self.device)?)?;
        let wt = Tensor::from_vec(w, n, &self.device)?;
        let loss = group_loss_with(self.metric, var.as_tensor(), &wt, self.state, self.update)?;
        let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let g = loss.backward()?;
        let du = match g.get(var.as_tensor()) {
            Some(d) => d.to_vec2::<f32>()?,
            None => vec![vec![0f32; n]; n_img],
        };
        let mut grad = Vec::with_capacity(x.len());
        for (j, m) in self.members.iter().enumerate() {
            // dL/dA_j (3x4) = sum_x dL/du_jx * du/dvoxel (x) [q_x, 1]; then A = W T V.
            let acc = (0..n)
                .into_par_iter()
                .fold(
                    || [0f64; 12],
                    |mut acc, i| {
                        let s = du[j][i] as f64;
                        if s != 0.0 {
                            let q = [
                                self.points[3 * i] as f64,
                                self.points[3 * i + 1] as f64,
                                self.points[3 * i + 2] as f64,
                                1.0,
                            ];
                            for r in 0..3 {
                                let gr = s * grads[j][i][r] as f64;
                                for c in 0..4 {
                                    acc[4 * r + c] += gr * q[c];
                                }
                            }
                        }
                        acc
                    },
                )
                .reduce(
                    || [0f64; 12],
                    |mut a, b| {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                        a
                    },
                );
            let mut ga = Matrix4::zeros();
            for k in 0..12 {
                ga[(k / 4, k % 4)] = acc[k];
            }
            let gt = m.world_to_voxel.transpose() * ga * self.common_to_world.transpose();
            grad.extend(maps[j].iter().map(|d| d.component_mul(&gt).sum()));
        }
        // The gradient with respect to x through the projection: each parameter's mean removed.
        let gp = project(&grad, n_img, &vec![0.0; np]);
        Ok(Eval { loss: lv, grad: gp, overlap: true })
    }

    fn redraw(&mut self) -> Result<()> {
        self.points = sorted(self.sampler.draw_points());
        Ok(())
    }

    fn noisy(&self) -> bool {
        self.update
    }
}

/// Registers `images` (N >= 2, one channel each, any grids) groupwise onto a common space on `grid`
/// (moved to centre on the group's mean centre unless `opts.init` is the identity) with linear
/// transforms of `opts.kind`, minimizing `metric` over the pyramid of `opts.schedule` with
/// Adam (fresh random points every iteration; the last iterate of each level carries on). With
/// `xmetric`, the fitted model gives the posterior segmentation on `grid` at the end.
///
/// Errors: fewer than two images; [`Init::Search`] (pairwise only); an image with several channels, NaN
/// or infinite voxels, or constant; a measure whose options are invalid; an invalid schedule; images
/// that share no point with the common grid (the first level's loss sees no point inside every image);
/// tensor errors.
pub fn groupwise_linear(
    images: &[Image],
    grid: &Grid,
    metric: &GroupMetric,
    opts: &GroupwiseOptions,
) -> Result<GroupwiseResult> {
    let start = Instant::now();
    if images.len() < 2 {
        return Err(Error::arg("groupwise", format!("a group needs at least two images, got {}", images.len())));
    }
    metric.check()?;
    opts.schedule.check()?;
    if opts.points < 100 {
        return Err(Error::arg("groupwise", format!("points must be at least 100, got {}", opts.points)));
    }
    for (j, im) in images.iter().enumerate() {
        if im.channels() != 1 {
            return Err(Error::arg("groupwise", format!("image {j} has {} channels; one is needed", im.channels())));
        }
    }
    let ranges = images.iter().enumerate().map(|(j, im)| intensity_range(im, j)).collect::<Result<Vec<_>>>()?;
    let s = &opts.schedule;
    let pyramids = images.iter().map(|im| pyramid(im, &s.factors, s.sigmas.as_deref())).collect::<Result<Vec<_>>>()?;
    let n_img = images.len();
    let identity: Vec<f64> = opts.kind.identity_params().iter().map(|&v| v as f64).collect();
    let mut x: Vec<f64> = identity.iter().cycle().take(n_img * identity.len()).copied().collect();
    if opts.init == Init::Search {
        let why = "a rotation search against one fixed image is for pairwise registration; use moments";
        return Err(Error::arg("groupwise", format!("init=\"search\": {why}")));
    }
    let moved_grid;
    let grid = match opts.init {
        Init::Identity => grid,
        init => {
            let centres = images
                .iter()
                .map(|im| if init == Init::Centres { Ok(im.grid().centre()) } else { centre_of_mass(im) })
                .collect::<Result<Vec<_>>>()?;
            let mean: [f64; 3] = std::array::from_fn(|a| centres.iter().map(|c| c[a]).sum::<f64>() / n_img as f64);
            let np = identity.len();
            let slots = if opts.kind == LinearKind::Matrix { [3, 7, 11] } else { [0, 1, 2] };
            for (j, c) in centres.iter().enumerate() {
                for a in 0..3 {
                    x[j * np + slots[a]] += c[a] - mean[a];
                }
            }
            let gc = grid.centre();
            let o = grid.origin();
            moved_grid = Grid::new(
                grid.shape(),
                grid.spacing(),
                std::array::from_fn(|a| o[a] + mean[a] - gc[a]),
                grid.direction(),
            )?;
            &moved_grid
        }
    };
    let centre = grid.centre();
    let radius = {
        let c = grid.corners();
        c.iter().map(|p| (0..3).map(|k| (p[k] - centre[k]).powi(2)).sum::<f64>().sqrt()).fold(0.0, f64::max) / 2.0
    };
    let scales: Vec<f64> = super::iso::param_scales(opts.kind, radius.max(1.0)).repeat(n_img);
    let mut state = GroupState::Empty;
    let mut levels = Vec::new();
    let shared = Shared { metric, pyramids: &pyramids, ranges: &ranges, kind: opts.kind, centre, identity: &identity };
    for (l, &factor) in s.factors.iter().enumerate() {
        let t0 = Instant::now();
        let common = grid.downsampled(factor)?;
        let n = opts.points.min(common.num_voxels());
        let average_from = s.iterations[l] - s.iterations[l] / 3;
        let mut obj = shared.level(l, &common, n, opts.seed.wrapping_add(l as u64), &mut state, average_from)?;
        let iters = s.iterations[l];
        let bar = super::progress::level_bar(&format!("groupwise {}", metric.name()), l, s.factors.len(), iters);
        let o = FirstOrderOptions {
            iterations: iters,
            lr: s.lr[l],
            decay: true,
            convergence: None,
            cancel: opts.cancel.clone(),
        };
        let mut adam = AdamVec::new(s.lr[l], scales.clone());
        let run = first_order(&mut adam, &mut obj, &x, &o, &mut |lv| super::progress::tick(&bar, lv))?;
        bar.finish_and_clear();
        if l == 0 && run.losses.is_empty() && !run.stop.is_cancelled() && iters > 0 {
            return Err(Error::arg("groupwise", "the images share no point with the common grid"));
        }
        x.clone_from(&run.x);
        if obj.count > 0 && !run.stop.is_cancelled() && run.x.iter().all(|v| v.is_finite()) {
            x = obj.sum.iter().map(|s| s / obj.count as f64).collect();
        }
        tracing::info!(
            "groupwise level {l} (factor {factor}): {} iterations in {:.2} s, best loss {:.6}, {}",
            run.losses.len(),
            t0.elapsed().as_secs_f64(),
            run.best,
            run.stop
        );
        levels.push(LevelReport::of_run(factor, run, t0.elapsed().as_secs_f64(), true));
        if levels.last().is_some_and(|r| r.stop.is_cancelled()) {
            break;
        }
    }
    let cancelled = levels.last().is_some_and(|r| r.stop.is_cancelled());
    let mut polish_report = None;
    if let (Some(po), false, Some(&factor)) = (opts.polish, cancelled, s.factors.last()) {
        let t0 = Instant::now();
        let l = s.factors.len() - 1;
        let common = grid.downsampled(factor)?;
        let n = po.points.min(common.num_voxels());
        let mut obj = shared.level(l, &common, n, opts.seed.wrapping_add(2000), &mut state, usize::MAX)?;
        // Refit the model on these points at the transforms reached, then hold it.
        for _ in 0..5 {
            obj.eval(&x)?;
        }
        obj.update = false;
        let run = lbfgs_run(&mut obj, &x, &registration_lbfgs(&scales, po.iterations, opts.cancel.clone()))?;
        tracing::info!(
            "groupwise polish: {} evaluations in {:.2} s, loss {:.6} -> {:.6}, {}",
            run.losses.len(),
            t0.elapsed().as_secs_f64(),
            run.losses.first().copied().unwrap_or(f64::NAN),
            run.best,
            run.stop
        );
        if run.x.iter().all(|v| v.is_finite()) {
            x.clone_from(&run.x);
        }
        polish_report = Some(LevelReport::of_run(factor, run, t0.elapsed().as_secs_f64(), false));
    }
    let p = project(&x, n_img, &identity);
    let np = identity.len();
    let transforms = (0..n_img)
        .map(|j| Linear::from_params(opts.kind, &p[j * np..(j + 1) * np], centre))
        .collect::<Result<Vec<_>>>()?;
    let posterior = match metric.kind {
        GroupKind::XMetric => posterior_image(images, &ranges, &transforms, grid, metric, &state)?,
        _ => None,
    };
    Ok(GroupwiseResult {
        transforms,
        grid: grid.clone(),
        levels,
        polish: polish_report,
        seconds: start.elapsed().as_secs_f64(),
        posterior,
    })
}

/// X-CoReg's posterior `(K, Z, Y, X)` at every voxel of `grid` (the full-resolution images at their
/// final transforms); voxels outside any image get the mixing weights' posterior of what lies there.
fn posterior_image(
    images: &[Image],
    ranges: &[(f64, f64)],
    transforms: &[Linear],
    grid: &Grid,
    metric: &GroupMetric,
    state: &GroupState,
) -> Result<Option<Image>> {
    let [nx, ny, nz] = grid.shape();
    let nv = nx * ny * nz;
    let members = images.iter().zip(ranges).map(|(im, &r)| Member::new(im, r)).collect::<Result<Vec<_>>>()?;
    let v2w = grid.voxel_to_world();
    let k = metric.classes;
    let mut out = vec![0f32; k * nv];
    const CHUNK: usize = 1 << 16;
    let mut start = 0;
    while start < nv {
        let end = (start + CHUNK).min(nv);
        let q: Vec<f32> =
            (start..end).flat_map(|i| [(i % nx) as f32, ((i / nx) % ny) as f32, (i / (nx * ny)) as f32]).collect();
        let mut u = Vec::with_capacity(members.len() * (end - start));
        for (m, t) in members.iter().zip(transforms) {
            let (tm, _) = linear_matrix_f64(t.kind(), &t.param_values()?, t.centre())?;
            u.extend(m.sample(&(m.world_to_voxel * tm * v2w), &q).0);
        }
        let u = Tensor::from_vec(u, (members.len(), end - start), &Device::Cpu)?;
        let Some(g) = xmetric_posterior(metric, &u, state)? else { return Ok(None) };
        let g = g.to_vec2::<f32>()?;
        for (i, row) in g.iter().enumerate() {
            for c in 0..k {
                out[c * nv + start + i] = row[c];
            }
        }
        start = end;
    }
    Ok(Some(Image::from_vec(out, k, grid.clone())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob image of 24^3 voxels of 2 mm with two tissues, a modality given by `(a, b)` intensities,
    /// shifted by `shift` mm along x.
    fn blob(a: f32, b: f32, shift: f64) -> Image {
        let g = Grid::axis_aligned([24, 24, 24], [2.0; 3], [-23.0; 3]).unwrap_or_else(|e| panic!("{e}"));
        let mut v = Vec::with_capacity(24 * 24 * 24);
        for z in 0..24 {
            for y in 0..24 {
                for x in 0..24 {
                    let p = [-23.0 + 2.0 * x as f64 - shift, -23.0 + 2.0 * y as f64, -23.0 + 2.0 * z as f64];
                    let r = (p[0] * p[0] / 1.2 + p[1] * p[1] + p[2] * p[2] * 1.3).sqrt();
                    let inner = ((p[0] - 4.0).powi(2) + (p[1] + 3.0).powi(2) + p[2].powi(2)).sqrt();
                    let t = if inner < 7.0 {
                        b
                    } else if r < 16.0 {
                        a
                    } else {
                        0.0
                    };
                    v.push(t);
                }
            }
        }
        Image::from_vec(v, 1, g).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_shifted_member_is_brought_back_and_the_mean_stays_put() -> Result<()> {
        // Three "modalities"; the third moved by +6 mm in x. With the mean constrained to the identity,
        // the transforms' x translations end near (-2, -2, +4): relative motion 6 mm, mean 0.
        let images = vec![blob(1.0, 0.3, 0.0), blob(0.2, 1.0, 0.0), blob(0.5, 0.1, 6.0)];
        let grid = images[0].grid().clone();
        for name in ["xmetric", "ape"] {
            let metric = GroupMetric::new(name)?;
            let opts = GroupwiseOptions {
                kind: LinearKind::Translation,
                schedule: Schedule::new(2, &[60, 40], 1.0)?,
                points: 4000,
                seed: 1,
                cancel: None,
                init: Init::Identity,
                polish: None,
            };
            let r = groupwise_linear(&images, &grid, &metric, &opts)?;
            let t: Vec<Vec<f64>> = r.transforms.iter().map(|t| t.param_values()).collect::<Result<_>>()?;
            let mean_x = t.iter().map(|p| p[0]).sum::<f64>() / 3.0;
            assert!(mean_x.abs() < 1e-6, "{name}: the mean translation stays 0, got {mean_x}");
            let rel = t[2][0] - (t[0][0] + t[1][0]) / 2.0;
            assert!((rel - 6.0).abs() < 0.5, "{name}: relative x translation {rel} mm, expected 6 ({t:?})");
            assert!((t[0][0] - t[1][0]).abs() < 0.5, "{name}: the aligned pair stays together ({t:?})");
            if name == "xmetric" {
                let post = r.posterior.as_ref().ok_or_else(|| Error::arg("test", "no posterior"))?;
                assert_eq!(post.channels(), 4);
                let sum = post.data().sum(0)?.mean_all()?.to_scalar::<f32>()?;
                assert!((sum - 1.0).abs() < 1e-3, "posteriors sum to 1 per voxel: {sum}");
            }
        }
        Ok(())
    }

    #[test]
    fn moments_start_a_group_whose_world_coordinates_are_far_apart() -> Result<()> {
        // The second image is the first's contrast-changed copy on a grid 80 mm away (another scanner's
        // origin): its content sits 80 mm along x from the first's.
        let a = blob(1.0, 0.3, 0.0);
        let b0 = blob(0.2, 1.0, 0.0);
        let g = a.grid();
        let far =
            Grid::new(g.shape(), g.spacing(), [g.origin()[0] + 80.0, g.origin()[1], g.origin()[2]], g.direction())?;
        let b = Image::from_vec(b0.to_vec_f32()?, 1, far)?;
        let mut opts = GroupwiseOptions {
            kind: LinearKind::Rigid,
            schedule: Schedule::new(2, &[40, 20], 1.0)?,
            points: 3000,
            seed: 0,
            cancel: None,
            init: Init::Identity,
            polish: None,
        };
        let m = GroupMetric::new("ape")?;
        let e = groupwise_linear(&[a.clone(), b.clone()], a.grid(), &m, &opts).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("share no point"), "no overlap from the world coordinates");
        opts.init = Init::Moments;
        let r = groupwise_linear(&[a.clone(), b], a.grid(), &m, &opts)?;
        let (t0, t1) = (r.transforms[0].param_values()?, r.transforms[1].param_values()?);
        assert!((t1[0] - t0[0] - 80.0).abs() < 0.5, "relative x translation {} mm, expected 80", t1[0] - t0[0]);
        assert!((r.grid.centre()[0] - (a.grid().centre()[0] + 40.0)).abs() < 1.0, "the common grid sits between them");
        Ok(())
    }

    #[test]
    fn a_cancel_returns_what_was_reached_and_says_so() -> Result<()> {
        let images = vec![blob(1.0, 0.3, 0.0), blob(0.2, 1.0, 3.0)];
        let cancel = Arc::new(AtomicBool::new(true));
        let opts = GroupwiseOptions {
            kind: LinearKind::Rigid,
            schedule: Schedule::new(2, &[20, 10], 1.0)?,
            points: 1000,
            seed: 0,
            cancel: Some(cancel),
            init: Init::Identity,
            polish: Some(Polish { points: 2000, iterations: 5 }),
        };
        let r = groupwise_linear(&images, images[0].grid(), &GroupMetric::new("ape")?, &opts)?;
        assert!(r.cancelled() && r.levels.len() == 1 && r.polish.is_none(), "stopped at the first level, no polish");
        for t in &r.transforms {
            assert!(t.param_values()?.iter().all(|v| *v == 0.0), "nothing reached: the identity");
        }
        Ok(())
    }

    #[test]
    fn bad_groups_are_errors() -> Result<()> {
        let a = blob(1.0, 0.3, 0.0);
        let opts = GroupwiseOptions {
            kind: LinearKind::Rigid,
            schedule: Schedule::new(1, &[5], 1.0)?,
            points: 1000,
            seed: 0,
            cancel: None,
            init: Init::Moments,
            polish: None,
        };
        let m = GroupMetric::new("xmetric")?;
        let e = groupwise_linear(std::slice::from_ref(&a), a.grid(), &m, &opts).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("at least two"));
        let mut v = a.to_vec_f32()?;
        v[100] = f32::NAN;
        let nan = Image::from_vec(v, 1, a.grid().clone())?;
        let e = groupwise_linear(&[a.clone(), nan], a.grid(), &m, &opts).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("image 1 has NaN"));
        let constant = Image::from_vec(vec![2.0; 24 * 24 * 24], 1, a.grid().clone())?;
        let e = groupwise_linear(&[a.clone(), constant], a.grid(), &m, &opts).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("constant"));
        Ok(())
    }
}
