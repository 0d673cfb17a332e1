//! Sampling an image at arbitrary points: the core of every warp.
//!
//! `image` is `(C, Z, Y, X)` f32; `points` is `(..., 3)` f32 holding fractional **voxel indices** `(x, y, z)`
//! of the image (not normalized coordinates); the result is `(C, ...)`. Trilinear is differentiable with
//! respect to the image and the points; nearest is not (it is for label maps).
//!
//! Padding: `Zero` treats voxels outside the image as 0 (PyTorch `grid_sample`, `padding_mode="zeros"`,
//! `align_corners=True` after conversion to voxel units); `Border` clamps the points into the image first
//! (so the gradient with respect to a coordinate that is clamped, or exactly on the first or last voxel,
//! is 0, as PyTorch's `clip_coordinates_set_grad`).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;
use super::trilinear::{corners_fast, grad_point, image_grad, sample};
use crate::image::resample::Padding;

/// Interpolation of [`grid_sample`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleMode {
    /// Trilinear (differentiable).
    Linear,
    /// Nearest voxel (not differentiable; for labels).
    Nearest,
}

#[derive(Clone, Copy, Debug)]
struct GridSample {
    mode: SampleMode,
    border: bool,
}

#[inline]
fn nearest_index(p: [f32; 3], shape: [usize; 3], border: bool) -> usize {
    let mut q = [p[0].round(), p[1].round(), p[2].round()];
    for a in 0..3 {
        let hi = (shape[a] - 1) as f32;
        if border {
            q[a] = q[a].clamp(0.0, hi);
        }
        if !(q[a] >= 0.0 && q[a] <= hi) {
            return usize::MAX;
        }
    }
    ((q[2] as usize * shape[1]) + q[1] as usize) * shape[0] + q[0] as usize
}

fn dims(image: &Layout, points: &Layout) -> Result<(usize, [usize; 3], usize, Vec<usize>)> {
    let d = image.shape().dims();
    if d.len() != 4 {
        candle_core::bail!("grid_sample: image must be (C, Z, Y, X), got {:?}", d);
    }
    let p = points.shape().dims();
    if p.last() != Some(&3) {
        candle_core::bail!("grid_sample: points must be (..., 3), got {:?}", p);
    }
    let lead = p[..p.len() - 1].to_vec();
    let n = lead.iter().product();
    Ok((d[0], [d[3], d[2], d[1]], n, lead))
}

impl CustomOp2 for GridSample {
    fn name(&self) -> &'static str {
        "grid-sample"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let img = f32_slice("grid_sample", s1, l1)?;
        let pts = f32_slice("grid_sample", s2, l2)?;
        let (c, shape, n, lead) = dims(l1, l2)?;
        let nvox = shape.iter().product::<usize>();
        let mut out = vec![0f32; c * n];
        const CHUNK: usize = 4096;
        out.par_chunks_mut(n).enumerate().for_each(|(ch, o)| {
            let im = &img[ch * nvox..(ch + 1) * nvox];
            o.par_chunks_mut(CHUNK).enumerate().for_each(|(b, oc)| {
                for (t, v) in oc.iter_mut().enumerate() {
                    let i = b * CHUNK + t;
                    let p = [pts[3 * i], pts[3 * i + 1], pts[3 * i + 2]];
                    *v = match self.mode {
                        SampleMode::Linear => sample(im, shape, [p[0] as f64, p[1] as f64, p[2] as f64], self.border),
                        SampleMode::Nearest => {
                            let j = nearest_index(p, shape, self.border);
                            if j == usize::MAX {
                                0.0
                            } else {
                                im[j]
                            }
                        }
                    };
                }
            });
        });
        let mut sh = vec![c];
        sh.extend(lead);
        Ok((CpuStorage::F32(out), Shape::from(sh)))
    }

    fn bwd(
        &self,
        image: &Tensor,
        points: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if self.mode == SampleMode::Nearest {
            candle_core::bail!("grid_sample: nearest interpolation has no gradient (use linear)");
        }
        let (c, z, y, x) = image.dims4()?;
        let shape = [x, y, z];
        let nvox = x * y * z;
        let img = image.flatten_all()?.to_vec1::<f32>()?;
        let pts = points.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let n = pts.len() / 3;
        let pt = |i: usize| [pts[3 * i] as f64, pts[3 * i + 1] as f64, pts[3 * i + 2] as f64];
        // Upstream gradient of point i for every channel, into a reused buffer.
        let gv = |i: usize, buf: &mut [f32]| {
            for (ch, b) in buf.iter_mut().enumerate() {
                *b = g[ch * n + i];
            }
        };
        // d out / d points: per point, summed over channels.
        let mut gp = vec![0f32; 3 * n];
        gp.par_chunks_mut(3 * 1024).enumerate().for_each(|(b, chunk)| {
            let mut gb = vec![0f32; c];
            for t in 0..chunk.len() / 3 {
                let i = b * 1024 + t;
                gv(i, &mut gb);
                let d = grad_point(&img, nvox, &gb, &corners_fast(pt(i), shape, self.border));
                chunk[3 * t..3 * t + 3].copy_from_slice(&d);
            }
        });
        let dev = image.device();
        let gp = Tensor::from_vec(gp, points.shape(), dev)?;
        // d out / d image: scatter-add of weights, one buffer per worker, then summed (skipped for a
        // constant image).
        if !image.track_op() {
            return Ok((None, Some(gp)));
        }
        let gi = Tensor::from_vec(image_grad(n, c, shape, self.border, &g, pt), image.shape(), dev)?;
        Ok((Some(gi), Some(gp)))
    }
}

fn check(image: &Tensor, points: &Tensor) -> Result<()> {
    if image.dtype() != DType::F32 || points.dtype() != DType::F32 {
        candle_core::bail!(
            "grid_sample: image and points must be f32, got {:?} and {:?}",
            image.dtype(),
            points.dtype()
        );
    }
    if image.rank() != 4 || points.dims().last() != Some(&3) {
        candle_core::bail!(
            "grid_sample: expected image (C, Z, Y, X) and points (..., 3), got {:?} and {:?}",
            image.dims(),
            points.dims()
        );
    }
    Ok(())
}

/// Samples `image` `(C, Z, Y, X)` at `points` `(..., 3)` (voxel indices x, y, z): returns `(C, ...)`.
/// Fused CPU kernel (rayon) with its own backward; on another device [`grid_sample_slow`] (nearest:
/// at the rounded points, without a gradient).
///
/// Errors: wrong ranks or element types (f32 only); a backward through `Nearest`.
pub fn grid_sample(image: &Tensor, points: &Tensor, mode: SampleMode, padding: Padding) -> Result<Tensor> {
    check(image, points)?;
    let border = match padding {
        Padding::Zero => false,
        Padding::Border => true,
        Padding::Value(_) => candle_core::bail!("grid_sample: constant padding other than zero is not supported"),
    };
    if !image.device().is_cpu() || !points.device().is_cpu() {
        return match mode {
            SampleMode::Linear => grid_sample_slow(image, points, padding),
            SampleMode::Nearest => grid_sample_slow(&image.detach(), &points.detach().round()?, padding),
        };
    }
    image.contiguous()?.apply_op2(&points.contiguous()?, GridSample { mode, border })
}

/// The slow twin of [`grid_sample`] (trilinear) built from differentiable candle ops (gathers of the 8
/// corners); for parity tests.
pub fn grid_sample_slow(image: &Tensor, points: &Tensor, padding: Padding) -> Result<Tensor> {
    check(image, points)?;
    let (c, z, y, x) = image.dims4()?;
    let lead: Vec<usize> = points.dims()[..points.rank() - 1].to_vec();
    let n: usize = lead.iter().product();
    let mut p = points.reshape((n, 3))?;
    let lim = [x, y, z];
    if padding == Padding::Border {
        // Clamp into the image; the gradient is 0 where clamped or on the edge (PyTorch's convention).
        let cols: Vec<Tensor> = (0..3)
            .map(|a| {
                let c = p.narrow(1, a, 1)?;
                let hi = (lim[a] - 1) as f32;
                let live = c.detach().gt(0f32)?.mul(&c.detach().lt(hi)?)?.to_dtype(DType::F32)?;
                let clamped = c.detach().clamp(0f32, hi)?;
                (c * &live)? + (clamped * (1.0 - &live)?)?
            })
            .collect::<Result<_>>()?;
        p = Tensor::cat(&cols, 1)?;
    }
    let p0 = p.detach().floor()?;
    let fr = (&p - &p0)?;
    let flat_img = image.reshape((c, x * y * z))?;
    let mut out = Tensor::zeros((c, n), DType::F32, image.device())?;
    for k in 0..8usize {
        let o = [k & 1, (k >> 1) & 1, (k >> 2) & 1];
        let mut w = Tensor::ones(n, DType::F32, image.device())?;
        let mut valid = Tensor::ones(n, DType::F32, image.device())?;
        let mut flat = Tensor::zeros(n, DType::F32, image.device())?;
        let strides = [1f64, x as f64, (x * y) as f64];
        for a in 0..3 {
            let fa = fr.narrow(1, a, 1)?.squeeze(1)?;
            let wa = if o[a] == 1 { fa } else { (1.0 - fa)? };
            w = (w * wa)?;
            let ia = (p0.narrow(1, a, 1)?.squeeze(1)? + o[a] as f64)?;
            valid = (valid * ia.ge(0f32)?.to_dtype(DType::F32)?)?;
            valid = (valid * ia.le((lim[a] - 1) as f32)?.to_dtype(DType::F32)?)?;
            flat = (flat + (ia.clamp(0f32, (lim[a] - 1) as f32)? * strides[a])?)?;
        }
        let idx = flat.to_dtype(DType::U32)?;
        let vals = flat_img.index_select(&idx, 1)?;
        out = (out + vals.broadcast_mul(&(w * valid)?.unsqueeze(0)?)?)?;
    }
    let mut sh = vec![c];
    sh.extend(lead);
    out.reshape(sh)
}
