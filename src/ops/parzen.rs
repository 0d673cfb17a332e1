//! Gaussian Parzen-window statistics for the information-theoretic measures, accumulated in one pass
//! without a voxels-by-bins matrix, globally or per patch, with hand-written backward passes.
//!
//! Inputs are **bin coordinates**: an intensity mapped linearly so that bin centres sit at 0, 1, ...,
//! `bins - 1` (the caller does the mapping with differentiable tensor ops). Each voxel contributes to bin
//! `k` the weight `w(k, u) = exp(-(u - k)^2 / (2 sigma^2))` (sigma in bin widths), truncated to
//! `|u - k| <= ceil(4 sigma)`, then normalized so each voxel's weights sum to 1 (as MONAI does; the
//! Gaussian's own constant of Chen et al. 2024 eq. 2 and Wang et al. eq. 5 cancels in every measure).
//!
//! - [`parzen_moments`] (correlation ratio, Chen et al. 2024, eqs. 1-3): per patch, `S0_k = sum_i m_i w(k, u_i)`,
//!   `S1_k = sum_i m_i w(k, u_i) y_i`, then `n = sum m_i`, `sum m_i y_i`, `sum m_i y_i^2`.
//! - [`parzen_joint`] (mutual information, Wang et al., eqs. 4-6): per patch, the joint histogram
//!   `J_kl = sum_i m_i w(k, a_i) w(l, b_i)`, then `n`.
//!
//! `m_i` is an optional fixed mask (0 / 1 or weights).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;

/// How a `(Z, Y, X)` volume is cut into patches: patch `p` holds voxels with
/// `((i + offset_x) / patch_x, (j + offset_y) / patch_y, (k + offset_z) / patch_z)` equal to its index.
/// The global layout is one patch covering the volume.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchLayout {
    /// Volume size (x, y, z).
    pub shape: [usize; 3],
    /// Patch size in voxels (x, y, z).
    pub patch: [usize; 3],
    /// Shift of the patch grid in voxels (e.g. half a patch for the second pass of patch-based CR).
    pub offset: [usize; 3],
}

impl PatchLayout {
    /// One patch covering the volume.
    pub fn global(shape: [usize; 3]) -> Self {
        PatchLayout { shape, patch: shape, offset: [0; 3] }
    }
    /// Patches of `patch` voxels shifted by `offset`; a patch size is at least 1 and at most the volume.
    pub fn new(shape: [usize; 3], patch: [usize; 3], offset: [usize; 3]) -> Self {
        let patch = [0, 1, 2].map(|a| patch[a].clamp(1, shape[a].max(1)));
        let offset = [0, 1, 2].map(|a| offset[a] % patch[a]);
        PatchLayout { shape, patch, offset }
    }
    /// Patches per axis (x, y, z).
    pub fn counts(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| (self.shape[a] + self.offset[a]).div_ceil(self.patch[a]))
    }
    /// Total number of patches.
    pub fn num_patches(&self) -> usize {
        self.counts().iter().product()
    }
    /// The patch holding the point `p` (voxel indices `(x, y, z)`): the patch of its nearest voxel
    /// (clamped to the volume), with `counts` = [`PatchLayout::counts`].
    #[inline]
    pub fn patch_of_point(&self, counts: &[usize; 3], p: &[f32]) -> usize {
        let v: [usize; 3] = std::array::from_fn(|a| (p[a].round().max(0.0) as usize).min(self.shape[a] - 1));
        self.patch_of(counts, v[0], v[1], v[2])
    }
    #[inline]
    fn patch_of(&self, c: &[usize; 3], i: usize, j: usize, k: usize) -> usize {
        let px = (i + self.offset[0]) / self.patch[0];
        let py = (j + self.offset[1]) / self.patch[1];
        let pz = (k + self.offset[2]) / self.patch[2];
        (pz * c[1] + py) * c[0] + px
    }
}

/// Kernel parameters: number of bins and sigma in bin widths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Parzen {
    pub bins: usize,
    pub sigma: f64,
}

impl Parzen {
    fn radius(&self) -> f64 {
        (4.0 * self.sigma).ceil()
    }
    /// Bins `lo..=hi` within the truncated kernel of `u`.
    #[inline]
    fn span(&self, u: f64) -> (usize, usize) {
        let r = self.radius();
        let lo = (u - r).ceil().max(0.0);
        let hi = (u + r).floor().min(self.bins as f64 - 1.0);
        if !(u.is_finite()) || hi < lo {
            return (1, 0);
        }
        (lo as usize, hi as usize)
    }
    /// Weight and its derivative with respect to `u`.
    #[inline]
    fn w(&self, k: usize, u: f64) -> (f64, f64) {
        let d = u - k as f64;
        let w = (-0.5 * d * d / (self.sigma * self.sigma)).exp();
        (w, -d / (self.sigma * self.sigma) * w)
    }

    /// The normalized weights `w_k / sum_j w_j` of `u` over its span and their derivatives with respect
    /// to `u`, into `w` and `dw` indexed from `lo`; returns `(lo, hi)` (empty when `hi < lo`). Each voxel
    /// so contributes a total weight of exactly 1, at the edge bins as in the middle (MONAI normalizes
    /// the same way).
    #[inline]
    pub(crate) fn weights(&self, u: f64, w: &mut [f64; 64], dw: &mut [f64; 64]) -> (usize, usize) {
        let (lo, hi) = self.span(u);
        if hi < lo {
            return (lo, hi);
        }
        let (mut sw, mut sd) = (0.0, 0.0);
        for k in lo..=hi {
            let (a, b) = self.w(k, u);
            w[k - lo] = a;
            dw[k - lo] = b;
            sw += a;
            sd += b;
        }
        if sw <= 0.0 {
            return (1, 0);
        }
        for k in 0..=hi - lo {
            dw[k] = (dw[k] - w[k] / sw * sd) / sw;
            w[k] /= sw;
        }
        (lo, hi)
    }
}

/// The Parzen kernel of [`Parzen`] with its constants worked out once (shared by the kernels here and
/// [`super::point_metric`]): radius `ceil(4 sigma)`, `1 / sigma^2` and the
/// recurrence factor `exp(-1 / sigma^2)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ParzenKernel {
    parzen: Parzen,
    radius: f64,
    is2: f64,
    decay: f64,
}

impl ParzenKernel {
    pub(crate) fn new(parzen: Parzen) -> Self {
        let is2 = 1.0 / (parzen.sigma * parzen.sigma);
        // The weight arrays hold 64 bins: the callers cap sigma (7.5 bin widths) so the span fits.
        debug_assert!(2.0 * (4.0 * parzen.sigma).ceil() < 64.0, "Parzen sigma {} too wide", parzen.sigma);
        ParzenKernel { parzen, radius: (4.0 * parzen.sigma).ceil(), is2, decay: (-is2).exp() }
    }

    /// The normalized truncated Gaussian weights of `u` (in `[0, bins - 1]`) and their derivatives, as
    /// [`Parzen::weights`] computes them, with two exponentials instead of one per bin:
    /// `w_{k+1} = w_k q_k`, `q_{k+1} = q_k exp(-1 / sigma^2)`. Kernels narrower than 0.25 bin widths
    /// (where the recurrence could overflow) take [`Parzen::weights`].
    #[inline(always)]
    pub(crate) fn weights(&self, u: f64, w: &mut [f64; 64], dw: &mut [f64; 64]) -> (usize, usize) {
        if self.parzen.sigma < 0.25 || !u.is_finite() || u < 0.0 {
            return self.parzen.weights(u, w, dw);
        }
        // ceil(u - r) and floor(u + r) by truncation (no libm call): u + r > 0.
        let x = u - self.radius;
        let t = x as i64;
        let lo = if (t as f64) < x { t + 1 } else { t }.max(0) as usize;
        let hi = ((u + self.radius) as usize).min(self.parzen.bins - 1);
        if hi < lo {
            return (1, 0);
        }
        let is2 = self.is2;
        let d0 = u - lo as f64;
        let mut wk = (-0.5 * d0 * d0 * is2).exp();
        let mut q = ((d0 - 0.5) * is2).exp();
        let (mut sw, mut sd) = (0.0, 0.0);
        for k in 0..=hi - lo {
            let d = d0 - k as f64;
            w[k] = wk;
            dw[k] = -d * is2 * wk;
            sw += wk;
            sd += dw[k];
            wk *= q;
            q *= self.decay;
        }
        if sw <= 0.0 {
            return (1, 0);
        }
        let inv = 1.0 / sw;
        for k in 0..=hi - lo {
            dw[k] = (dw[k] - w[k] * inv * sd) * inv;
            w[k] *= inv;
        }
        (lo, hi)
    }
}

#[derive(Clone, Debug)]
struct Moments {
    layout: PatchLayout,
    parzen: Parzen,
    mask: Option<Arc<Vec<f32>>>,
}

#[derive(Clone, Debug)]
struct Joint {
    layout: PatchLayout,
    parzen: Parzen,
    mask: Option<Arc<Vec<f32>>>,
}

fn mask_at(mask: &Option<Arc<Vec<f32>>>, v: usize) -> f64 {
    mask.as_ref().map(|m| m[v] as f64).unwrap_or(1.0)
}

/// Sums per-slab accumulators of `width` entries per patch (f64), in parallel over z.
fn accumulate(layout: &PatchLayout, width: usize, f: impl Fn(&mut [f64], usize) + Sync) -> Vec<f64> {
    let [nx, ny, nz] = layout.shape;
    let c = layout.counts();
    let p = layout.num_patches();
    (0..nz)
        .into_par_iter()
        .fold(
            || vec![0f64; p * width],
            |mut acc, k| {
                for j in 0..ny {
                    for i in 0..nx {
                        let v = (k * ny + j) * nx + i;
                        let patch = layout.patch_of(&c, i, j, k);
                        f(&mut acc[patch * width..(patch + 1) * width], v);
                    }
                }
                acc
            },
        )
        .reduce(
            || vec![0f64; p * width],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// The backward passes' common loop: for every voxel `v` inside the mask, `f(v, g_patch)` gives the
/// gradients of the two inputs before the mask weight, where `g_patch` is the upstream gradient of the
/// voxel's patch (`width` entries). Parallel over z slabs; masked-out voxels get 0.
fn voxel_grads(
    layout: &PatchLayout,
    mask: &Option<Arc<Vec<f32>>>,
    g: &[f32],
    width: usize,
    f: impl Fn(usize, &[f32]) -> (f64, f64) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let [nx, ny, nz] = layout.shape;
    let c = layout.counts();
    let mut ga = vec![0f32; nx * ny * nz];
    let mut gb = vec![0f32; nx * ny * nz];
    ga.par_chunks_mut(nx * ny).zip(gb.par_chunks_mut(nx * ny)).enumerate().for_each(|(k, (da, db))| {
        for j in 0..ny {
            for i in 0..nx {
                let v = (k * ny + j) * nx + i;
                let m = mask_at(mask, v);
                if m == 0.0 {
                    continue;
                }
                let gp = &g[layout.patch_of(&c, i, j, k) * width..][..width];
                let (a, b) = f(v, gp);
                da[j * nx + i] = (m * a) as f32;
                db[j * nx + i] = (m * b) as f32;
            }
        }
    });
    (ga, gb)
}

fn check_same(op: &str, l1: &Layout, l2: &Layout, layout: &PatchLayout) -> Result<()> {
    let n: usize = layout.shape.iter().product();
    if l1.shape().elem_count() != n || l2.shape().elem_count() != n {
        candle_core::bail!(
            "{op}: inputs must hold {n} voxels ({:?}), got {:?} and {:?}",
            layout.shape,
            l1.shape(),
            l2.shape()
        );
    }
    Ok(())
}

impl CustomOp2 for Moments {
    fn name(&self) -> &'static str {
        "parzen-moments"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        check_same("parzen_moments", l1, l2, &self.layout)?;
        let u = f32_slice("parzen_moments", s1, l1)?;
        let y = f32_slice("parzen_moments", s2, l2)?;
        let b = self.parzen.bins;
        let width = 2 * b + 3;
        let kern = ParzenKernel::new(self.parzen);
        let acc = accumulate(&self.layout, width, |a, v| {
            let m = mask_at(&self.mask, v);
            if m == 0.0 {
                return;
            }
            let (uv, yv) = (u[v] as f64, y[v] as f64);
            let (mut w, mut dw) = ([0f64; 64], [0f64; 64]);
            let (lo, hi) = kern.weights(uv, &mut w, &mut dw);
            for k in lo..=hi {
                let wk = w[k - lo] * m;
                a[k] += wk;
                a[b + k] += wk * yv;
            }
            a[2 * b] += m;
            a[2 * b + 1] += m * yv;
            a[2 * b + 2] += m * yv * yv;
        });
        let p = self.layout.num_patches();
        Ok((CpuStorage::F32(acc.iter().map(|&v| v as f32).collect()), Shape::from((p, width))))
    }
    fn bwd(&self, u: &Tensor, y: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let uv = u.flatten_all()?.to_vec1::<f32>()?;
        let yv = y.flatten_all()?.to_vec1::<f32>()?;
        let b = self.parzen.bins;
        let width = 2 * b + 3;
        let kern = ParzenKernel::new(self.parzen);
        let (gu, gy) = voxel_grads(&self.layout, &self.mask, &g, width, |v, gp| {
            let (x, yy) = (uv[v] as f64, yv[v] as f64);
            let (mut w, mut dw) = ([0f64; 64], [0f64; 64]);
            let (lo, hi) = kern.weights(x, &mut w, &mut dw);
            let (mut a, mut by) = (0f64, 0f64);
            for kk in lo..=hi {
                a += dw[kk - lo] * (gp[kk] as f64 + gp[b + kk] as f64 * yy);
                by += w[kk - lo] * gp[b + kk] as f64;
            }
            (a, by + gp[2 * b + 1] as f64 + 2.0 * yy * gp[2 * b + 2] as f64)
        });
        Ok((Some(Tensor::from_vec(gu, u.shape(), u.device())?), Some(Tensor::from_vec(gy, y.shape(), y.device())?)))
    }
}

impl CustomOp2 for Joint {
    fn name(&self) -> &'static str {
        "parzen-joint"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        check_same("parzen_joint", l1, l2, &self.layout)?;
        let a = f32_slice("parzen_joint", s1, l1)?;
        let bb = f32_slice("parzen_joint", s2, l2)?;
        let b = self.parzen.bins;
        let width = b * b + 1;
        let kern = ParzenKernel::new(self.parzen);
        let acc = accumulate(&self.layout, width, |h, v| {
            let m = mask_at(&self.mask, v);
            if m == 0.0 {
                return;
            }
            let (av, bv) = (a[v] as f64, bb[v] as f64);
            let (mut wa_, mut dwa) = ([0f64; 64], [0f64; 64]);
            let (mut wb, mut dwb) = ([0f64; 64], [0f64; 64]);
            let (alo, ahi) = kern.weights(av, &mut wa_, &mut dwa);
            let (blo, bhi) = kern.weights(bv, &mut wb, &mut dwb);
            for k in alo..=ahi {
                let wa = wa_[k - alo] * m;
                let row = &mut h[k * b..(k + 1) * b];
                for l in blo..=bhi {
                    row[l] += wa * wb[l - blo];
                }
            }
            h[b * b] += m;
        });
        let p = self.layout.num_patches();
        Ok((CpuStorage::F32(acc.iter().map(|&v| v as f32).collect()), Shape::from((p, width))))
    }
    fn bwd(&self, a: &Tensor, bt: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let av = a.flatten_all()?.to_vec1::<f32>()?;
        let bv = bt.flatten_all()?.to_vec1::<f32>()?;
        let b = self.parzen.bins;
        let width = b * b + 1;
        let kern = ParzenKernel::new(self.parzen);
        let (ga, gb) = voxel_grads(&self.layout, &self.mask, &g, width, |v, gp| {
            let (mut wa, mut dwa) = ([0f64; 64], [0f64; 64]);
            let (mut wb, mut dwb) = ([0f64; 64], [0f64; 64]);
            let (alo, ahi) = kern.weights(av[v] as f64, &mut wa, &mut dwa);
            let (blo, bhi) = kern.weights(bv[v] as f64, &mut wb, &mut dwb);
            let (mut sa, mut sb) = (0f64, 0f64);
            for kk in alo..=ahi {
                let row = &gp[kk * b..(kk + 1) * b];
                let (mut r0, mut r1) = (0f64, 0f64);
                for l in blo..=bhi {
                    let gkl = row[l] as f64;
                    r0 += gkl * wb[l - blo];
                    r1 += gkl * dwb[l - blo];
                }
                sa += dwa[kk - alo] * r0;
                sb += wa[kk - alo] * r1;
            }
            (sa, sb)
        });
        Ok((Some(Tensor::from_vec(ga, a.shape(), a.device())?), Some(Tensor::from_vec(gb, bt.shape(), bt.device())?)))
    }
}

fn check_inputs(
    op: &str,
    u: &Tensor,
    y: &Tensor,
    layout: &PatchLayout,
    parzen: &Parzen,
    mask: &Option<Arc<Vec<f32>>>,
) -> Result<()> {
    let n: usize = layout.shape.iter().product();
    if u.dtype() != DType::F32 || y.dtype() != DType::F32 {
        candle_core::bail!("{op}: f32 inputs only");
    }
    if u.elem_count() != n || y.elem_count() != n {
        candle_core::bail!("{op}: inputs must hold {n} voxels, got {:?} and {:?}", u.dims(), y.dims());
    }
    if let Some(m) = mask {
        if m.len() != n {
            candle_core::bail!("{op}: mask has {} voxels, expected {n}", m.len());
        }
    }
    // Per-worker accumulators hold patches x bins^2 (joint) or patches x 2 bins values: bounded.
    let width = if op == "parzen_joint" { parzen.bins * parzen.bins + 1 } else { 2 * parzen.bins + 3 };
    if layout.num_patches().saturating_mul(width) > 1 << 24 {
        candle_core::bail!(
            "{op}: {} patches x {width} statistics is too many (at most 2^24): use larger patches or fewer bins",
            layout.num_patches()
        );
    }
    // The kernel span must fit the fixed per-voxel buffer (at most 64 bins within 4 sigma on each side).
    if !(parzen.bins >= 2 && parzen.sigma > 0.0 && 2.0 * parzen.radius() + 1.0 <= 64.0) {
        candle_core::bail!(
            "{op}: need bins >= 2 and 0 < sigma <= 7.5 bins, got {} bins, sigma {}",
            parzen.bins,
            parzen.sigma
        );
    }
    Ok(())
}

/// Per-patch Parzen moments `(P, 2 bins + 3)`: `[S0_0..S0_{B-1}, S1_0..S1_{B-1}, n, sum y, sum y^2]` of bin
/// coordinates `u` and values `y` (both `Z*Y*X` voxels, x fastest). Differentiable in `u` and `y`. On a
/// device other than the CPU: [`parzen_moments_slow`] (a dense voxels-by-bins matrix).
///
/// Errors: sizes that do not match the layout or mask; f32 only; `bins < 2`; `sigma` outside (0, 7.5].
pub fn parzen_moments(
    u: &Tensor,
    y: &Tensor,
    layout: &PatchLayout,
    parzen: Parzen,
    mask: Option<Arc<Vec<f32>>>,
) -> Result<Tensor> {
    check_inputs("parzen_moments", u, y, layout, &parzen, &mask)?;
    if !u.device().is_cpu() {
        return parzen_moments_slow(u, y, layout, parzen, mask);
    }
    u.contiguous()?.apply_op2(&y.contiguous()?, Moments { layout: layout.clone(), parzen, mask })
}

/// Per-patch Parzen joint histograms `(P, bins^2 + 1)`: `J` row-major (`a` bins along rows) then `n`, of
/// bin coordinates `a` and `b`. Differentiable in both.
///
/// Errors: as [`parzen_moments`].
pub fn parzen_joint(
    a: &Tensor,
    b: &Tensor,
    layout: &PatchLayout,
    parzen: Parzen,
    mask: Option<Arc<Vec<f32>>>,
) -> Result<Tensor> {
    check_inputs("parzen_joint", a, b, layout, &parzen, &mask)?;
    if !a.device().is_cpu() {
        return parzen_joint_slow(a, b, layout, parzen, mask);
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, Joint { layout: layout.clone(), parzen, mask })
}

/// Dense truncated Parzen weights `(N, bins)` of bin coordinates `u` `(N,)`, from candle ops.
fn dense_weights(u: &Tensor, parzen: Parzen) -> Result<Tensor> {
    let centres = Tensor::arange(0f32, parzen.bins as f32, u.device())?;
    let d = u.unsqueeze(1)?.broadcast_sub(&centres.unsqueeze(0)?)?;
    let w = (d.sqr()? * (-0.5 / (parzen.sigma * parzen.sigma)))?.exp()?;
    let keep = d.detach().abs()?.le(parzen.radius())?.to_dtype(DType::F32)?;
    let w = (w * keep)?;
    w.broadcast_div(&w.sum_keepdim(1)?)
}

/// Per-voxel patch masks `(P, N)` (times the optional mask), for the slow twins.
fn patch_masks(layout: &PatchLayout, mask: &Option<Arc<Vec<f32>>>, dev: &candle_core::Device) -> Result<Tensor> {
    let [nx, ny, nz] = layout.shape;
    let c = layout.counts();
    let p = layout.num_patches();
    let n = nx * ny * nz;
    let mut m = vec![0f32; p * n];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = (k * ny + j) * nx + i;
                m[layout.patch_of(&c, i, j, k) * n + v] = mask.as_ref().map(|mm| mm[v]).unwrap_or(1.0);
            }
        }
    }
    Tensor::from_vec(m, (p, n), dev)
}

/// The slow twin of [`parzen_moments`]: a dense voxels-by-bins weight matrix (small inputs only).
pub fn parzen_moments_slow(
    u: &Tensor,
    y: &Tensor,
    layout: &PatchLayout,
    parzen: Parzen,
    mask: Option<Arc<Vec<f32>>>,
) -> Result<Tensor> {
    let n = u.elem_count();
    let (u, y) = (u.reshape(n)?, y.reshape(n)?);
    let w = dense_weights(&u, parzen)?; // (N, B)
    let pm = patch_masks(layout, &mask, u.device())?; // (P, N)
    let s0 = pm.matmul(&w)?;
    let s1 = pm.broadcast_mul(&y.unsqueeze(0)?)?.matmul(&w)?;
    let cnt = pm.sum_keepdim(1)?;
    let sy = pm.matmul(&y.unsqueeze(1)?)?;
    let syy = pm.matmul(&y.sqr()?.unsqueeze(1)?)?;
    Tensor::cat(&[&s0, &s1, &cnt, &sy, &syy], 1)
}

/// The slow twin of [`parzen_joint`].
pub fn parzen_joint_slow(
    a: &Tensor,
    b: &Tensor,
    layout: &PatchLayout,
    parzen: Parzen,
    mask: Option<Arc<Vec<f32>>>,
) -> Result<Tensor> {
    let n = a.elem_count();
    let (wa, wb) = (dense_weights(&a.reshape(n)?, parzen)?, dense_weights(&b.reshape(n)?, parzen)?);
    let pm = patch_masks(layout, &mask, a.device())?; // (P, N)
    let p = pm.dim(0)?;
    let mut rows = Vec::with_capacity(p);
    for q in 0..p {
        let mq = pm.get(q)?.unsqueeze(1)?; // (N, 1)
        let j = wa.broadcast_mul(&mq)?.t()?.matmul(&wb)?; // (B, B)
        let cnt = mq.sum_all()?.reshape(1)?;
        rows.push(Tensor::cat(&[&j.flatten_all()?, &cnt], 0)?);
    }
    Tensor::stack(&rows, 0)
}
