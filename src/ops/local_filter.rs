//! Separable local sums: a 3-D convolution of each `(Z, Y, X)` volume with the outer product of three
//! symmetric 1-D kernels, zero padding, output on the same grid ("same" convolution). With box kernels
//! of ones this is the local sum of LNCC's window; with Gaussian kernels, a Gaussian window.
//!
//! The operator is self-adjoint (symmetric kernels, zero padding), so its backward is the same filter
//! applied to the upstream gradient.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::f32_slice;
use crate::image::smooth::{convolve_axis_into, AxisBorder};

/// The separable filter of [`local_filter`] on `nvol` volumes of `s` voxels (x, y, z) stored one after
/// another (x fastest): each axis whose kernel is not the single tap `[1]` is filtered in turn.
pub(crate) fn filter_volumes(data: &[f32], s: [usize; 3], kernels: &[Vec<f32>; 3]) -> Vec<f32> {
    let mut d = data.to_vec();
    let mut tmp = vec![0f32; d.len()];
    for (axis, k) in kernels.iter().enumerate() {
        if k.len() > 1 || k.first() != Some(&1.0) {
            convolve_axis_into(&d, &mut tmp, s, axis, k, AxisBorder::Zero);
            std::mem::swap(&mut d, &mut tmp);
        }
    }
    d
}

#[derive(Clone, Debug)]
struct LocalFilter {
    /// 1-D kernels along x, y, z; odd length, symmetric.
    kernels: [Vec<f32>; 3],
}

impl LocalFilter {
    fn run(&self, data: &[f32], s: [usize; 3]) -> Vec<f32> {
        filter_volumes(data, s, &self.kernels)
    }
}

fn zyx(l: &Layout) -> Result<[usize; 3]> {
    let d = l.shape().dims();
    if d.len() < 3 {
        candle_core::bail!("local_filter: input must end in (Z, Y, X), got {:?}", d);
    }
    let n = d.len();
    Ok([d[n - 1], d[n - 2], d[n - 3]])
}

impl CustomOp1 for LocalFilter {
    fn name(&self) -> &'static str {
        "local-filter"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let data = f32_slice("local_filter", s, l)?;
        let out = self.run(data, zyx(l)?);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let d = arg.dims();
        let n = d.len();
        let out = self.run(&g, [d[n - 1], d[n - 2], d[n - 3]]);
        Ok(Some(Tensor::from_vec(out, arg.shape(), arg.device())?))
    }
}

/// Box kernel of `w` ones (w odd).
pub fn box_kernel(w: usize) -> Vec<f32> {
    vec![1.0; w.max(1) | 1]
}

/// Gaussian kernel of standard deviation `sigma` voxels, radius `ceil(3 sigma)`, normalized to sum 1.
pub fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let r = (3.0 * sigma).ceil() as i64;
    let w: Vec<f64> = (-r..=r).map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp()).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| (v / s) as f32).collect()
}

/// Local filtering of a `(..., Z, Y, X)` f32 tensor with symmetric odd 1-D kernels along x, y, z (zero
/// padding, same size). Differentiable (the backward is the same filter).
///
/// Errors: a tensor of rank below 3 or not f32; an even or asymmetric kernel.
pub fn local_filter(t: &Tensor, kernels: [Vec<f32>; 3]) -> Result<Tensor> {
    if t.dtype() != DType::F32 {
        candle_core::bail!("local_filter: f32 only, got {:?}", t.dtype());
    }
    for k in &kernels {
        let sym = k.iter().zip(k.iter().rev()).all(|(a, b)| a == b);
        if k.len() % 2 == 0 || !sym {
            candle_core::bail!("local_filter: kernels must be odd and symmetric");
        }
    }
    t.contiguous()?.apply_op1(LocalFilter { kernels })
}

/// The slow twin of [`local_filter`], from candle's `conv1d` along each axis (kernels no longer than
/// the axis they filter).
pub fn local_filter_slow(t: &Tensor, kernels: [Vec<f32>; 3]) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let n = dims.len();
    let (z, y, x) = (dims[n - 3], dims[n - 2], dims[n - 1]);
    let lead: usize = dims[..n - 3].iter().product();
    let mut v = t.reshape((lead, z, y, x))?;
    // Axis order in the 4-D view: x = 3, y = 2, z = 1. Move the axis last, conv1d, move back.
    for (axis, k) in kernels.iter().enumerate() {
        let dim = 3 - axis;
        let moved = v.transpose(dim, 3)?.contiguous()?;
        let md = moved.dims().to_vec();
        let len = md[3];
        let rows = moved.reshape((md[0] * md[1] * md[2], 1, len))?;
        let kt = Tensor::from_vec(k.clone(), (1, 1, k.len()), t.device())?;
        let conv = rows.conv1d(&kt, k.len() / 2, 1, 1, 1)?;
        v = conv.reshape((md[0], md[1], md[2], len))?.transpose(dim, 3)?.contiguous()?;
    }
    v.reshape(dims)
}
