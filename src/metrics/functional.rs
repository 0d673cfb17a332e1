//! Stateless similarity maths on tensors. Inputs are the fixed and the (warped) moving image on the same
//! grid, `(Z, Y, X)` or `(1, Z, Y, X)` f32, and an optional mask of the same size (non-zero = inside).
//! Every function returns a 0-d f32 tensor of the measure itself (not a loss), differentiable with
//! respect to both images.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::ops::local_filter;
pub use crate::ops::local_filter::Window;
use crate::ops::parzen::{parzen_joint, parzen_moments, Parzen, PatchLayout};

/// Guards divisions.
const EPS: f64 = 1e-8;

/// The `(Z, Y, X)` dims of an image tensor, checking the two agree.
pub fn zyx_of(fixed: &Tensor, moving: &Tensor) -> Result<[usize; 3]> {
    let f = fixed.dims();
    let strip = |d: &[usize]| -> Option<[usize; 3]> {
        match d {
            [z, y, x] | [1, z, y, x] => Some([*z, *y, *x]),
            _ => None,
        }
    };
    match (strip(f), strip(moving.dims())) {
        (Some(a), Some(b)) if a == b => Ok(a),
        _ => Err(Error::Shape {
            op: "similarity".into(),
            expected: "fixed and moving of one shape, (Z, Y, X) or (1, Z, Y, X)".into(),
            actual: format!("{:?} and {:?}", fixed.dims(), moving.dims()),
        }),
    }
}

fn flat(t: &Tensor) -> Result<Tensor> {
    let t = if t.dtype() == DType::F32 { t.clone() } else { t.to_dtype(DType::F32)? };
    Ok(t.flatten_all()?)
}

/// Mask as flat f32 weights (1 inside), or `None`. Errors: a mask of another size.
fn mask_weights(mask: Option<&Tensor>, n: usize) -> Result<Option<Tensor>> {
    let Some(m) = mask else { return Ok(None) };
    if m.elem_count() != n {
        return Err(Error::Shape {
            op: "similarity mask".into(),
            expected: format!("{n} voxels"),
            actual: format!("{:?}", m.dims()),
        });
    }
    Ok(Some(flat(m)?.ne(0f32)?.to_dtype(DType::F32)?.detach()))
}

/// Weighted mean of a flat tensor.
fn wmean(v: &Tensor, w: &Option<Tensor>) -> Result<Tensor> {
    Ok(match w {
        None => v.mean_all()?,
        Some(w) => ((v * w)?.sum_all()? / (w.sum_all()?.to_scalar::<f32>()? as f64).max(1.0))?,
    })
}

/// Mean squared difference `mean((f - m)^2)` over the mask (ANTs' MeanSquares). Range `[0, inf)`, 0 for
/// identical images.
pub fn mse(fixed: &Tensor, moving: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    zyx_of(fixed, moving)?;
    let (f, m) = (flat(fixed)?, flat(moving)?);
    let w = mask_weights(mask, f.elem_count())?;
    wmean(&(f - m)?.sqr()?, &w)
}

/// Global normalized cross-correlation (Pearson) over the mask, in `[-1, 1]`; 1 for identical images.
pub fn ncc(fixed: &Tensor, moving: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    zyx_of(fixed, moving)?;
    let (f, m) = (flat(fixed)?, flat(moving)?);
    let w = mask_weights(mask, f.elem_count())?;
    let fc = f.broadcast_sub(&wmean(&f, &w)?)?;
    let mc = m.broadcast_sub(&wmean(&m, &w)?)?;
    let cov = wmean(&(&fc * &mc)?, &w)?;
    let sd = (wmean(&fc.sqr()?, &w)?.sqrt()? * wmean(&mc.sqr()?, &w)?.sqrt()?)?;
    Ok((cov / (sd + 1e-12)?)?)
}

/// Local normalized cross-correlation, VoxelMorph / MONAI form: in each window,
/// `cc = cov(f, m)^2 / (var(f) var(m) + eps)`, then the mean of `cc` over the mask. Range `[0, 1]`, 1 for
/// identical images (where both vary locally). Windows are zero-padded at the border. The guard `eps` is
/// `1e-5 / n^2 + 1e-6 var(f) var(m)` (global variances), and `cc` is capped at 1.
///
/// On the CPU with a constant fixed image (the registration case) this runs the fused kernel
/// [`crate::ops::lncc::lncc`] (differentiable in the moving image); otherwise, or when the fixed image
/// needs a gradient too, [`lncc_slow`].
///
/// Errors: shapes that differ or are not `(Z, Y, X)` / `(1, Z, Y, X)`; a mask of another size; an empty
/// mask (the fused kernel; [`crate::metrics::Metric::measure`] refuses one for every measure).
pub fn lncc(fixed: &Tensor, moving: &Tensor, window: Window, mask: Option<&Tensor>) -> Result<Tensor> {
    zyx_of(fixed, moving)?;
    if fixed.track_op() || !fixed.device().is_cpu() || !moving.device().is_cpu() {
        return lncc_slow(fixed, moving, window, mask);
    }
    let mask = mask_weights(mask, fixed.elem_count())?;
    Ok(crate::ops::lncc::lncc(fixed, moving, window, mask.as_ref())?)
}

/// [`lncc`] from differentiable tensor ops (in both images): the slow twin of the fused kernel.
pub fn lncc_slow(fixed: &Tensor, moving: &Tensor, window: Window, mask: Option<&Tensor>) -> Result<Tensor> {
    let [z, y, x] = zyx_of(fixed, moving)?;
    let kern = window.kernel();
    let kernels = [kern.clone(), kern.clone(), kern.clone()];
    // Centred on the global means (f32 keeps the precision of E[f^2] - E[f]^2 near 0), and each window
    // normalized by how much of it lies inside the image (no bias from the zero padding at the border).
    let (f, m) = (flat(fixed)?.reshape((z, y, x))?, flat(moving)?.reshape((z, y, x))?);
    let f = f.broadcast_sub(&f.mean_all()?)?;
    let m = m.broadcast_sub(&m.mean_all()?)?;
    let count = local_filter(&Tensor::ones((z, y, x), DType::F32, f.device())?, kernels.clone())?;
    let lf = |t: &Tensor| -> Result<Tensor> { Ok((local_filter(t, kernels.clone())? / &count)?) };
    let (mf, mm) = (lf(&f)?, lf(&m)?);
    let cross = (lf(&(&f * &m)?)? - (&mf * &mm)?)?;
    let vf = (lf(&f.sqr()?)? - mf.sqr()?)?.relu()?;
    let vm = (lf(&m.sqr()?)? - mm.sqr()?)?.relu()?;
    // VoxelMorph's 1e-5 guards sums over the window; on means it becomes 1e-5 / n^2, with n the window's
    // (effective) number of voxels. That alone is not enough in f32: in a window where one image is flat
    // (background), rounding leaves a covariance of ~1e-4 while the variances are ~0, and an optimizer
    // learns to make such windows (cc in the thousands). So the guard also scales with the images'
    // global variances (1e-6 of their product: windows a thousand times flatter than the image count as
    // flat), and cc is capped at 1, its bound by Cauchy-Schwarz.
    let n_eff = (kern.iter().sum::<f32>().powi(2) / kern.iter().map(|w| w * w).sum::<f32>()).powi(3) as f64;
    let global = |t: &Tensor| -> Result<f64> { Ok(t.sqr()?.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    let eps = 1e-5 / (n_eff * n_eff) + 1e-6 * global(&f.detach())? * global(&m.detach())?;
    let cc = (cross.sqr()? / ((vf * vm)? + eps)?)?.clamp(0f32, 1f32)?;
    let w = mask_weights(mask, z * y * x)?;
    wmean(&cc.flatten_all()?, &w)
}

/// Options of the Parzen-window measures.
#[derive(Clone, Debug, PartialEq)]
pub struct ParzenOptions {
    /// Number of bins (default 32).
    pub bins: usize,
    /// Gaussian kernel standard deviation in bin widths (default 0.5, MONAI's `sigma_ratio`).
    pub sigma: f64,
    /// Intensity range of the fixed image mapped onto the bins; `None`: its min and max (inside the mask).
    pub range_fixed: Option<(f64, f64)>,
    /// Intensity range of the moving image; `None`: its min and max.
    pub range_moving: Option<(f64, f64)>,
}

impl Default for ParzenOptions {
    fn default() -> Self {
        ParzenOptions { bins: 32, sigma: 0.5, range_fixed: None, range_moving: None }
    }
}

/// Bin coordinates `(v - lo) / (hi - lo) * (bins - 1)`, clamped to the bins (differentiable inside).
fn to_bins(v: &Tensor, range: Option<(f64, f64)>, bins: usize, mask: &Option<Vec<f32>>) -> Result<Tensor> {
    let (lo, hi) = match range {
        Some(r) => r,
        None => {
            let vals = v.flatten_all()?.to_vec1::<f32>()?;
            let it =
                vals.iter().enumerate().filter(|(i, x)| x.is_finite() && mask.as_ref().is_none_or(|m| m[*i] != 0.0));
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for (_, &x) in it {
                lo = lo.min(x as f64);
                hi = hi.max(x as f64);
            }
            if !lo.is_finite() {
                return Err(Error::arg("parzen", "no finite voxel inside the mask"));
            }
            (lo, hi)
        }
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let u = ((v - lo)? * ((bins - 1) as f64 / span))?;
    Ok(u.clamp(0f32, (bins - 1) as f32)?)
}

fn mask_vec(mask: Option<&Tensor>, n: usize) -> Result<Option<Vec<f32>>> {
    Ok(match mask_weights(mask, n)? {
        Some(w) => Some(w.to_vec1::<f32>()?),
        None => None,
    })
}

/// Patch layout for patch size `patch` voxels (0: global) and offset.
pub fn layout(shape_zyx: [usize; 3], patch: usize, offset: usize) -> PatchLayout {
    let shape = [shape_zyx[2], shape_zyx[1], shape_zyx[0]];
    if patch == 0 {
        PatchLayout::global(shape)
    } else {
        PatchLayout::new(shape, [patch; 3], [offset; 3])
    }
}

/// Per-patch mutual information and entropies `(P,)` each, plus the patch weights (1 where the patch
/// holds samples), from the Parzen joint histogram.
fn joint_entropies(
    fixed: &Tensor,
    moving: &Tensor,
    opts: &ParzenOptions,
    lay: &PatchLayout,
    mask: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let n = fixed.elem_count();
    let mv = mask_vec(mask, n)?;
    let a = to_bins(&flat(fixed)?, opts.range_fixed, opts.bins, &mv)?;
    let b = to_bins(&flat(moving)?, opts.range_moving, opts.bins, &mv)?;
    let pz = Parzen { bins: opts.bins, sigma: opts.sigma };
    let h = parzen_joint(&a, &b, lay, pz, mv.map(Arc::new))?;
    let bb = opts.bins * opts.bins;
    let joint = h.narrow(1, 0, bb)?.reshape((h.dim(0)?, opts.bins, opts.bins))?;
    let total = joint.sum_keepdim((1, 2))?;
    let valid = total.flatten_all()?.gt(1e-6)?.to_dtype(DType::F32)?.detach();
    let p = joint.broadcast_div(&(total + 1e-12)?)?;
    let pa = p.sum(2)?; // (P, B) fixed marginal
    let pb = p.sum(1)?; // (P, B) moving marginal
    let ent = |q: &Tensor, dims: Vec<usize>| -> Result<Tensor> {
        let t = (q * (q + 1e-12)?.log()?)?;
        let mut s = t;
        for d in dims.into_iter().rev() {
            s = s.sum(d)?;
        }
        Ok(s.neg()?)
    };
    let hab = ent(&p, vec![1, 2])?;
    let ha = ent(&pa, vec![1])?;
    let hb = ent(&pb, vec![1])?;
    Ok((ha, hb, hab, valid))
}

fn patch_mean(v: &Tensor, valid: &Tensor) -> Result<Tensor> {
    let n = valid.sum_all()?.to_scalar::<f32>()?;
    if n == 0.0 {
        return Err(Error::arg("similarity", "no patch holds any voxel inside the mask"));
    }
    Ok(((v * valid)?.sum_all()? / n as f64)?)
}

/// Mutual information (nats) with Gaussian Parzen windowing (Wang et al., eqs. 3-6), global (`patch` 0) or
/// the mean over patches of `patch` voxels. `MI = H(F) + H(M) - H(F, M)` of the normalized joint
/// histogram; 0 for independent images, the entropy of the image for identical ones (as sigma -> 0).
pub fn mutual_information(
    fixed: &Tensor,
    moving: &Tensor,
    opts: &ParzenOptions,
    patch: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let zyx = zyx_of(fixed, moving)?;
    let (ha, hb, hab, valid) = joint_entropies(fixed, moving, opts, &layout(zyx, patch, 0), mask)?;
    patch_mean(&((ha + hb)? - hab)?, &valid)
}

/// Normalized mutual information `(H(F) + H(M)) / H(F, M)` (Studholme et al. 1999), in `[1, 2]`; 2 for
/// identical images (as sigma -> 0), 1 for independent ones.
pub fn normalized_mutual_information(
    fixed: &Tensor,
    moving: &Tensor,
    opts: &ParzenOptions,
    patch: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let zyx = zyx_of(fixed, moving)?;
    let (ha, hb, hab, valid) = joint_entropies(fixed, moving, opts, &layout(zyx, patch, 0), mask)?;
    patch_mean(&((ha + hb)? / (hab + 1e-12)?)?, &valid)
}

/// Per-patch correlation ratio `eta(Y | X)` (Chen et al. 2024, eqs. 1-3) and patch weights: X binned with
/// Parzen windows, Y's conditional means per bin. Patches where Y is constant get weight 0.
fn eta(
    x: &Tensor,
    y: &Tensor,
    range_x: Option<(f64, f64)>,
    opts: &ParzenOptions,
    lay: &PatchLayout,
    mv: &Option<Vec<f32>>,
) -> Result<(Tensor, Tensor)> {
    let u = to_bins(x, range_x, opts.bins, mv)?;
    let pz = Parzen { bins: opts.bins, sigma: opts.sigma };
    let mo = parzen_moments(&u, y, lay, pz, mv.clone().map(Arc::new))?;
    let b = opts.bins;
    let s0 = mo.narrow(1, 0, b)?;
    let s1 = mo.narrow(1, b, b)?;
    let n = mo.narrow(1, 2 * b, 1)?;
    let sy = mo.narrow(1, 2 * b + 1, 1)?;
    let syy = mo.narrow(1, 2 * b + 2, 1)?;
    let nn = (&n + 1e-12)?;
    let mean = (&sy / &nn)?;
    let var = ((&syy / &nn)? - mean.sqr()?)?;
    let ybar_k = (&s1 / (&s0 + 1e-12)?)?;
    let nk = s0.broadcast_div(&(s0.sum_keepdim(1)? + 1e-12)?)?;
    let cond = (nk * ybar_k.broadcast_sub(&mean)?.sqr()?)?.sum_keepdim(1)?;
    let eta = (cond / (&var + EPS)?)?.flatten_all()?;
    // Weight: patches with samples and non-constant Y (relative to the global scale of Y).
    let scale = {
        let yv = y.flatten_all()?;
        (yv.max(0)?.to_scalar::<f32>()? - yv.min(0)?.to_scalar::<f32>()?).max(1e-12) as f64
    };
    let valid = n
        .flatten_all()?
        .gt(0.5)?
        .to_dtype(DType::F32)?
        .mul(&var.flatten_all()?.gt(1e-6 * scale * scale)?.to_dtype(DType::F32)?)?
        .detach();
    Ok((eta, valid))
}

/// Symmetric correlation ratio `(eta(M | F) + eta(F | M)) / 2` with Gaussian Parzen windowing (seed
/// `000`), global (`patch` 0) or the mean over patches of `patch` voxels; with `shifted`, also over the
/// patch grid moved by half a patch (the authors' code), both passes averaged. Range `[0, 1]`: 1 when one
/// image is a function of the other (as sigma -> 0), near 0 for independent images.
pub fn correlation_ratio(
    fixed: &Tensor,
    moving: &Tensor,
    opts: &ParzenOptions,
    patch: usize,
    shifted: bool,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let zyx = zyx_of(fixed, moving)?;
    let (f, m) = (flat(fixed)?, flat(moving)?);
    let mv = mask_vec(mask, f.elem_count())?;
    let offsets: Vec<usize> = if patch > 0 && shifted { vec![0, patch / 2] } else { vec![0] };
    let mut total: Option<Tensor> = None;
    for off in &offsets {
        let lay = layout(zyx, patch, *off);
        let (e1, v1) = eta(&f, &m, opts.range_fixed, opts, &lay, &mv)?;
        let (e2, v2) = eta(&m, &f, opts.range_moving, opts, &lay, &mv)?;
        let s = ((patch_mean(&e1, &v1)? + patch_mean(&e2, &v2)?)? * 0.5)?;
        total = Some(match total {
            None => s,
            Some(t) => (t + s)?,
        });
    }
    let t = total.ok_or_else(|| Error::arg("correlation_ratio", "no pass"))?;
    Ok((t / offsets.len() as f64)?)
}

/// The loss of the symmetric CR of the samples `g` (all inside the moving image `(1, Z, Y, X)`) with each
/// image's intensities mapped onto the bins by their own smallest and largest values there (the moving
/// ones by a differentiable min / max), as [`crate::ops::point_metric::PatchPoints`] does per patch.
fn cr_on_own_ranges(
    a: &Tensor,
    pp: &crate::ops::point_metric::PointParzen,
    g: &crate::ops::point_metric::PointSamples,
    moving: &Tensor,
) -> Result<Tensor> {
    let dev = moving.device();
    let n = g.len();
    let pts = Tensor::from_slice(&g.points, (n, 3), dev)?;
    let q = pts.matmul(&a.narrow(1, 0, 3)?.t()?)?.broadcast_add(&a.narrow(1, 3, 1)?.squeeze(1)?)?;
    let m = crate::ops::grid_sample(moving, &q, crate::ops::SampleMode::Linear, crate::image::resample::Padding::Zero)?
        .flatten_all()?;
    let unit = |t: &Tensor| -> Result<Tensor> {
        let (lo, hi) = (t.min_keepdim(0)?, t.max_keepdim(0)?);
        Ok(t.broadcast_sub(&lo)?.broadcast_div(&(hi - &lo)?)?.reshape((1, 1, 1, n))?)
    };
    let f = Tensor::from_slice(&g.fixed, n, dev)?;
    let opts = ParzenOptions {
        bins: pp.parzen.bins,
        sigma: pp.parzen.sigma,
        range_fixed: Some((0.0, 1.0)),
        range_moving: Some((0.0, 1.0)),
    };
    Ok(correlation_ratio(&unit(&f)?, &unit(&m)?, &opts, 0, false, None)?.neg()?)
}

/// The slow twin of the fused point measure [`crate::ops::point_metric`], from differentiable candle ops:
/// the points mapped by `a` `(3, 4)` (fixed voxel indices to moving voxel indices) with a matrix
/// product, the moving image `(1, Z, Y, X)` or `(Z, Y, X)` sampled there by
/// [`crate::ops::grid_sample`] (zero padding), the points outside the moving image masked out, and the
/// loss of the measures of this module on the `(1, 1, 1, n)` samples. Differentiable in `a`.
///
/// Errors: tensor errors (a map that is not `(3, 4)`, a moving image of another rank).
pub fn point_metric_slow(
    a: &Tensor,
    measure: &crate::ops::point_metric::PointMeasure,
    samples: &crate::ops::point_metric::PointSamples,
    moving: &Tensor,
) -> Result<Tensor> {
    use crate::ops::point_metric::{PointMeasure, PointParzen, MIN_PATCH_POINTS};
    use crate::ops::{grid_sample, SampleMode};
    let n = samples.len();
    let dev = moving.device();
    let moving = match moving.rank() {
        3 => moving.unsqueeze(0)?,
        _ => moving.clone(),
    };
    let (_, z, y, x) = moving.dims4()?;
    if let PointMeasure::Patches(pm) = measure {
        // Each patch's points inside the moving image (nearest voxel) as a sample list of its own,
        // measured by the global slow twin (CR on the patch's own intensity ranges, the moving one
        // differentiably); the patches with at least MIN_PATCH_POINTS points averaged, then
        // the layouts.
        let av = a.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let inside = |p: &[f32]| {
            (0..3).all(|r| {
                let q =
                    av[4 * r] * p[0] as f64 + av[4 * r + 1] * p[1] as f64 + av[4 * r + 2] * p[2] as f64 + av[4 * r + 3];
                q >= 0.0 && q <= [x, y, z][r] as f64 - 1.0
            })
        };
        let mut total: Option<Tensor> = None;
        for lay in &pm.layouts {
            let counts = lay.counts();
            let mut groups = vec![crate::ops::point_metric::PointSamples::default(); lay.num_patches()];
            for i in (0..n).filter(|&i| inside(&samples.points[3 * i..3 * i + 3])) {
                let p = &samples.points[3 * i..3 * i + 3];
                let g = &mut groups[lay.patch_of_point(&counts, p)];
                g.points.extend_from_slice(p);
                g.fixed.push(samples.fixed[i]);
            }
            let mut sum: Option<Tensor> = None;
            let mut counted = 0usize;
            for g in groups {
                if g.len() < MIN_PATCH_POINTS {
                    continue;
                }
                let l = match &*pm.measure {
                    PointMeasure::Cr(pp) => cr_on_own_ranges(a, pp, &g, &moving)?,
                    other => point_metric_slow(a, other, &g, &moving)?,
                };
                counted += 1;
                sum = Some(match sum {
                    None => l,
                    Some(t) => (t + l)?,
                });
            }
            if let Some(sm) = sum {
                let l = (sm / (counted * pm.layouts.len()) as f64)?;
                total = Some(match total {
                    None => l,
                    Some(t) => (t + l)?,
                });
            }
        }
        return Ok(total.unwrap_or(Tensor::zeros((), DType::F32, dev)?));
    }
    let pts = Tensor::from_slice(&samples.points, (n, 3), dev)?;
    let q = pts.matmul(&a.narrow(1, 0, 3)?.t()?)?.broadcast_add(&a.narrow(1, 3, 1)?.squeeze(1)?)?;
    let hi = Tensor::new(&[x as f32 - 1.0, y as f32 - 1.0, z as f32 - 1.0], dev)?;
    let d = q.detach();
    let inside = d.ge(0f32)?.to_dtype(DType::F32)?.mul(&d.broadcast_le(&hi)?.to_dtype(DType::F32)?)?;
    let inside = inside.min_keepdim(1)?.reshape((1, 1, 1, n))?;
    let m =
        grid_sample(&moving, &q, SampleMode::Linear, crate::image::resample::Padding::Zero)?.reshape((1, 1, 1, n))?;
    let fv = Tensor::from_slice(&samples.fixed, (1, 1, 1, n), dev)?;
    let po = |pp: &PointParzen| ParzenOptions {
        bins: pp.parzen.bins,
        sigma: pp.parzen.sigma,
        range_fixed: Some(pp.range_fixed),
        range_moving: Some(pp.range_moving),
    };
    Ok(match measure {
        PointMeasure::Mse => mse(&fv, &m, Some(&inside))?,
        PointMeasure::Ncc => ncc(&fv, &m, Some(&inside))?.neg()?,
        PointMeasure::Mi(pp) => mutual_information(&fv, &m, &po(pp), 0, Some(&inside))?.neg()?,
        PointMeasure::Nmi(pp) => normalized_mutual_information(&fv, &m, &po(pp), 0, Some(&inside))?.neg()?,
        PointMeasure::Cr(pp) => correlation_ratio(&fv, &m, &po(pp), 0, false, Some(&inside))?.neg()?,
        PointMeasure::Patches(_) => return Err(Error::arg("point_metric_slow", "nested patch measures")),
    })
}
