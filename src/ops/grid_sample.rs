//! Sampling an image at arbitrary points: the core of every warp.
//!
//! `image` is `(C, Z, Y, X)` f32; `points` is `(..., 3)` f32 holding fractional **voxel indices** `(x, y, z)`
//! of the image (not normalized coordinates); the result is `(C, ...)`. Trilinear is differentiable with
//! respect to the image and the points; nearest is not (it is for label maps).
//!
//! Padding: `Zero` treats voxels outside the image as 0 (PyTorch `grid_sample`, `padding_mode="zeros"`,
//! `align_corners=True` after conversion to voxel units); `Border` clamps the points into the image first
//! (so the gradient with respect to a clamped coordinate is 0).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, scatter_chunks};
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

/// Corner indices and weights of one trilinear sample, with the per-axis derivative signs.
struct Corners {
    /// Flat voxel index per corner, or `usize::MAX` when outside.
    idx: [usize; 8],
    /// Trilinear weight per corner.
    w: [f32; 8],
    /// d(weight)/d(x, y, z) per corner.
    dw: [[f32; 3]; 8],
}

#[inline]
fn corners(p: [f32; 3], shape: [usize; 3], border: bool) -> Corners {
    let [nx, ny, nz] = shape;
    let n = [nx, ny, nz];
    let mut q = p;
    let mut live = [1f32; 3];
    if border {
        for a in 0..3 {
            let hi = (n[a] - 1) as f32;
            if q[a] < 0.0 || q[a] > hi {
                live[a] = 0.0; // clamped: the sample does not move with this coordinate
                q[a] = q[a].clamp(0.0, hi);
            }
        }
    }
    let f0 = [q[0].floor(), q[1].floor(), q[2].floor()];
    let fr = [q[0] - f0[0], q[1] - f0[1], q[2] - f0[2]];
    let i0 = [f0[0] as i64, f0[1] as i64, f0[2] as i64];
    let mut c = Corners { idx: [usize::MAX; 8], w: [0.0; 8], dw: [[0.0; 3]; 8] };
    if !(q[0].is_finite() && q[1].is_finite() && q[2].is_finite()) {
        return c;
    }
    for k in 0..8 {
        let o = [k & 1, (k >> 1) & 1, (k >> 2) & 1];
        let mut inside = true;
        let mut flat = 0usize;
        let mut wa = [0f32; 3];
        let mut da = [0f32; 3];
        for a in 0..3 {
            let ix = i0[a] + o[a] as i64;
            inside &= ix >= 0 && ix < n[a] as i64;
            wa[a] = if o[a] == 1 { fr[a] } else { 1.0 - fr[a] };
            da[a] = if o[a] == 1 { live[a] } else { -live[a] };
        }
        if inside {
            let (x, y, z) = ((i0[0] + o[0] as i64) as usize, (i0[1] + o[1] as i64) as usize, (i0[2] + o[2] as i64) as usize);
            flat = (z * ny + y) * nx + x;
        }
        c.idx[k] = if inside { flat } else { usize::MAX };
        c.w[k] = wa[0] * wa[1] * wa[2];
        c.dw[k] = [da[0] * wa[1] * wa[2], wa[0] * da[1] * wa[2], wa[0] * wa[1] * da[2]];
    }
    c
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
                        SampleMode::Linear => {
                            let cr = corners(p, shape, self.border);
                            let mut acc = 0f32;
                            for k in 0..8 {
                                if cr.idx[k] != usize::MAX && cr.w[k] != 0.0 {
                                    acc += cr.w[k] * im[cr.idx[k]];
                                }
                            }
                            acc
                        }
                        SampleMode::Nearest => {
                            let j = nearest_index(p, shape, self.border);
                            if j == usize::MAX { 0.0 } else { im[j] }
                        }
                    };
                }
            });
        });
        let mut sh = vec![c];
        sh.extend(lead);
        Ok((CpuStorage::F32(out), Shape::from(sh)))
    }

    fn bwd(&self, image: &Tensor, points: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
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
        // d out / d points: per point, sum over channels.
        let mut gp = vec![0f32; 3 * n];
        gp.par_chunks_mut(3 * 1024).enumerate().for_each(|(b, chunk)| {
            for t in 0..chunk.len() / 3 {
                let i = b * 1024 + t;
                let cr = corners([pts[3 * i], pts[3 * i + 1], pts[3 * i + 2]], shape, self.border);
                let mut d = [0f32; 3];
                for ch in 0..c {
                    let gv = g[ch * n + i];
                    if gv == 0.0 {
                        continue;
                    }
                    let im = &img[ch * nvox..(ch + 1) * nvox];
                    for k in 0..8 {
                        if cr.idx[k] != usize::MAX {
                            let v = im[cr.idx[k]] * gv;
                            d[0] += cr.dw[k][0] * v;
                            d[1] += cr.dw[k][1] * v;
                            d[2] += cr.dw[k][2] * v;
                        }
                    }
                }
                chunk[3 * t..3 * t + 3].copy_from_slice(&d);
            }
        });
        // d out / d image: scatter-add of weights, one buffer per worker, then summed.
        let parts = scatter_chunks(n);
        let per = n.div_ceil(parts);
        let bufs: Vec<Vec<f32>> = (0..parts)
            .into_par_iter()
            .map(|p| {
                let mut buf = vec![0f32; c * nvox];
                for i in p * per..((p + 1) * per).min(n) {
                    let cr = corners([pts[3 * i], pts[3 * i + 1], pts[3 * i + 2]], shape, self.border);
                    for ch in 0..c {
                        let gv = g[ch * n + i];
                        if gv == 0.0 {
                            continue;
                        }
                        for k in 0..8 {
                            if cr.idx[k] != usize::MAX {
                                buf[ch * nvox + cr.idx[k]] += cr.w[k] * gv;
                            }
                        }
                    }
                }
                buf
            })
            .collect();
        let mut gi = vec![0f32; c * nvox];
        gi.par_chunks_mut(65536).enumerate().for_each(|(b, o)| {
            for buf in &bufs {
                for (t, v) in o.iter_mut().enumerate() {
                    *v += buf[b * 65536 + t];
                }
            }
        });
        let dev = image.device();
        let gi = Tensor::from_vec(gi, image.shape(), dev)?;
        let gp = Tensor::from_vec(gp, points.shape(), dev)?;
        Ok((Some(gi), Some(gp)))
    }
}

fn check(image: &Tensor, points: &Tensor) -> Result<()> {
    if image.dtype() != DType::F32 || points.dtype() != DType::F32 {
        candle_core::bail!("grid_sample: image and points must be f32, got {:?} and {:?}", image.dtype(), points.dtype());
    }
    if image.rank() != 4 || points.dims().last() != Some(&3) {
        candle_core::bail!("grid_sample: expected image (C, Z, Y, X) and points (..., 3), got {:?} and {:?}", image.dims(), points.dims());
    }
    Ok(())
}

/// Samples `image` `(C, Z, Y, X)` at `points` `(..., 3)` (voxel indices x, y, z): returns `(C, ...)`.
/// Fused CPU kernel (rayon) with its own backward.
///
/// Errors: wrong ranks or element types (f32 only); a backward through `Nearest`.
pub fn grid_sample(image: &Tensor, points: &Tensor, mode: SampleMode, padding: Padding) -> Result<Tensor> {
    check(image, points)?;
    let border = match padding {
        Padding::Zero => false,
        Padding::Border => true,
        Padding::Value(_) => candle_core::bail!("grid_sample: constant padding other than zero is not supported"),
    };
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
        let cols: Vec<Tensor> = (0..3)
            .map(|a| p.narrow(1, a, 1)?.clamp(0f32, (lim[a] - 1) as f32))
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
