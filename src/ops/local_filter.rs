//! Separable local sums: a 3-D convolution of each `(Z, Y, X)` volume with the outer product of three
//! symmetric 1-D kernels, zero padding, output on the same grid ("same" convolution). With box kernels
//! of ones this is the local sum of LNCC's window; with Gaussian kernels, a Gaussian window.
//!
//! The operator is self-adjoint (symmetric kernels, zero padding), so its backward is the same filter
//! applied to the upstream gradient.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::f32_slice;
use crate::image::smooth::{convolve_axis_into, gaussian_kernel, AxisBorder};

/// The separable filter of [`local_filter`] on `nvol` volumes of `s` voxels (x, y, z) stored one after
/// another (x fastest): each axis whose kernel is not the single tap `[1]` is filtered in turn.
pub(crate) fn filter_volumes(data: &[f32], s: [usize; 3], kernels: &[Vec<f32>; 3]) -> Vec<f32> {
    filter_volumes_in(data.to_vec(), s, kernels)
}

/// [`filter_volumes`] on a buffer it takes over (and returns filtered): no copy of the input.
pub(crate) fn filter_volumes_in(mut d: Vec<f32>, s: [usize; 3], kernels: &[Vec<f32>; 3]) -> Vec<f32> {
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

/// Local windows (LNCC) and the dense stages' smoothing cut their Gaussians at this many sigmas.
pub const WINDOW_TRUNCATE: f64 = 3.0;

/// The window of LNCC (local sums of [`local_filter`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Window {
    /// A cube of `n` voxels per side (odd).
    Box(usize),
    /// A Gaussian of standard deviation `sigma` voxels (cut at [`WINDOW_TRUNCATE`] sigmas).
    Gaussian(f64),
}

impl Window {
    /// The window's 1-D kernel (applied along x, y and z).
    pub fn kernel(&self) -> Vec<f32> {
        match *self {
            Window::Box(n) => box_kernel(n),
            Window::Gaussian(s) => gaussian_kernel(s, WINDOW_TRUNCATE),
        }
    }
}

/// Gaussian smoothing of each `(Z, Y, X)` volume of `data` (`nvol` volumes of `shape` x, y, z one after
/// another) with `sigma` voxels, cut at [`WINDOW_TRUNCATE`] sigmas, zero padding: the dense stages'
/// smoothing of fields and gradients on plain volumes ([`gaussian_smooth`] on tensors). Identity for
/// `sigma <= 0`.
pub fn gaussian_smooth_volumes(data: &[f32], shape: [usize; 3], sigma: f64) -> Vec<f32> {
    if sigma.is_nan() || sigma <= 0.0 {
        return data.to_vec();
    }
    let k = gaussian_kernel(sigma, WINDOW_TRUNCATE);
    filter_volumes(data, shape, &[k.clone(), k.clone(), k])
}

/// [`gaussian_smooth_volumes`] of a `(..., Z, Y, X)` f32 tensor on any device (the fused filter on
/// the CPU, [`local_filter_slow`] elsewhere). Identity for `sigma <= 0`.
///
/// Errors: as [`local_filter`].
pub fn gaussian_smooth(t: &Tensor, sigma: f64) -> Result<Tensor> {
    if sigma.is_nan() || sigma <= 0.0 {
        return Ok(t.clone());
    }
    let k = gaussian_kernel(sigma, WINDOW_TRUNCATE);
    local_filter(t, [k.clone(), k.clone(), k])
}

/// Local filtering of a `(..., Z, Y, X)` f32 tensor with symmetric odd 1-D kernels along x, y, z (zero
/// padding, same size). Differentiable (the backward is the same filter). On a device other than the CPU:
/// [`local_filter_slow`].
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
    if !t.device().is_cpu() {
        return local_filter_slow(t, kernels);
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
