//! The warp: resampling a moving image through a transform onto a target grid, differentiable with
//! respect to the image and the transform.

use candle_core::{DType, Device, Tensor};

use super::{matrix34, matrix44_of, Transform};
use crate::error::{Error, Result};
use crate::image::ops::one_hot;
use crate::image::resample::{gather_nearest, snap, Padding};
use crate::image::{DataType, Grid, Image};
use crate::names;
use crate::ops::{affine_grid, grid_sample, warp_affine, warp_field, SampleMode};

/// Interpolation of [`warp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarpInterpolation {
    /// Trilinear, for intensities (differentiable).
    Linear,
    /// Nearest voxel, for label maps.
    Nearest,
    /// Label maps: each label's indicator is warped trilinearly and the label with the largest
    /// interpolated weight wins (smoother boundaries than nearest; ANTs' `GenericLabel` idea).
    LabelLinear,
}

impl WarpInterpolation {
    /// Parses `linear`, `nearest` (`nn`), `label` / `label_linear` (with "did you mean").
    pub fn parse(name: &str) -> Result<Self> {
        names::lookup(
            "interpolation",
            name,
            &[
                ("linear", WarpInterpolation::Linear),
                ("trilinear", WarpInterpolation::Linear),
                ("nearest", WarpInterpolation::Nearest),
                ("nn", WarpInterpolation::Nearest),
                ("label", WarpInterpolation::LabelLinear),
                ("label_linear", WarpInterpolation::LabelLinear),
                ("genericlabel", WarpInterpolation::LabelLinear),
            ],
        )
    }
}

/// Sample points `(Z, Y, X, 3)` in the moving image's voxel coordinates for every voxel of `onto`.
///
/// Values are computed exactly where they can be (the grids' matrices in f64, snapped to integers when
/// within 1e-9, so an identity or whole-voxel shift samples voxel centres exactly); gradients flow
/// through the transform's tensors.
pub fn sample_points(moving_grid: &Grid, transform: &dyn Transform, onto: &Grid) -> Result<Tensor> {
    sample_points_on(moving_grid, transform, onto, &crate::device::host())
}

/// [`sample_points`] on `dev` (the device of the image to be sampled).
fn sample_points_on(moving_grid: &Grid, transform: &dyn Transform, onto: &Grid, dev: &Device) -> Result<Tensor> {
    let w2v = moving_grid.world_to_voxel();
    let v2w = onto.voxel_to_world();
    if let Some(m) = transform.matrix_tensor()? {
        let m = m.to_device(dev)?;
        let exact = matrix34(&snap(w2v * matrix44_of(&m)? * v2w), dev)?;
        // Same value as `exact`, gradient of the f32 product.
        let c32 = super::compose34(&super::compose34(&matrix34(&w2v, dev)?, &m)?, &matrix34(&v2w, dev)?)?;
        let combined = (exact + (&c32 - c32.detach())?)?;
        return Ok(affine_grid(&combined, onto.shape())?);
    }
    let world = transform.world_points(onto)?.to_device(dev)?;
    let base = super::grid_points(onto, dev)?;
    let disp = (world - base)?;
    let r = matrix34(&w2v, dev)?.narrow(1, 0, 3)?;
    let exact = affine_grid(&matrix34(&snap(w2v * v2w), dev)?, onto.shape())?;
    Ok((exact + disp.broadcast_matmul(&r.t()?)?)?)
}

/// Warps a moving `(C, Z, Y, X)` f32 tensor on `moving_grid` through `transform` onto `onto`:
/// `out(x) = moving(T(x))`, `(C, Z', Y', X')`. Differentiable in `moving` and the transform (linear mode).
///
/// Linear transforms go through the fused [`warp_affine`] kernel, dense ones through [`warp_field`]
/// (sample points formed on the fly from the displacement on `onto`); nearest goes through
/// [`grid_sample`]. The voxel-to-voxel matrices are formed in f64 and snapped (see
/// [`crate::image::resample::snap`]), so an identity or whole-voxel shift samples voxel centres exactly.
///
/// Errors: [`Error::InvalidArgument`] for constant padding other than zero; tensor errors.
pub fn warp_tensor(
    moving: &Tensor,
    moving_grid: &Grid,
    transform: &dyn Transform,
    onto: &Grid,
    mode: SampleMode,
    padding: Padding,
) -> Result<Tensor> {
    let m = if moving.dtype() == DType::F32 { moving.clone() } else { moving.to_dtype(DType::F32)? };
    let border = match padding {
        Padding::Zero => false,
        Padding::Border => true,
        Padding::Value(_) => return Err(Error::arg("warp", "padding must be zero or border")),
    };
    let dev = m.device();
    if mode == SampleMode::Nearest {
        let pts = sample_points_on(moving_grid, transform, onto, dev)?;
        return Ok(grid_sample(&m, &pts, mode, padding)?);
    }
    let w2v = moving_grid.world_to_voxel();
    let v2w = onto.voxel_to_world();
    if let Some(a) = transform.matrix_tensor()? {
        let a = a.to_device(dev)?;
        let exact = matrix34(&snap(w2v * matrix44_of(&a)? * v2w), dev)?;
        // Same value as `exact`, gradient of the f32 product.
        let c32 = super::compose34(&super::compose34(&matrix34(&w2v, dev)?, &a)?, &matrix34(&v2w, dev)?)?;
        let combined = (exact + (&c32 - c32.detach())?)?;
        return Ok(warp_affine(&m, &combined, onto.shape(), border)?);
    }
    let u = transform.displacement_on(onto)?.to_device(dev)?;
    let base = snap(w2v * v2w);
    let mvox: [f64; 12] = std::array::from_fn(|i| base[(i / 4, i % 4)]);
    let r: [f64; 9] = std::array::from_fn(|i| w2v[(i / 3, i % 3)]);
    Ok(warp_field(&m, &u, mvox, r, border)?)
}

/// Warps an image through `transform` onto `onto` (usually the fixed image's grid).
///
/// Linear output is float32; nearest and label-linear keep label values and the datatype.
/// Errors: [`Error::InvalidArgument`] for label interpolation of a multi-channel or non-integer image;
/// tensor errors.
pub fn warp(
    moving: &Image,
    transform: &dyn Transform,
    onto: &Grid,
    interp: WarpInterpolation,
    padding: Padding,
) -> Result<Image> {
    match interp {
        WarpInterpolation::Linear => {
            let t = warp_tensor(moving.data(), moving.grid(), transform, onto, SampleMode::Linear, padding)?;
            Image::new(t, onto.clone(), DataType::Float32)
        }
        WarpInterpolation::Nearest => {
            // Gathered in the image's own element type, so labels beyond 2^24 stay exact.
            let pts = sample_points(moving.grid(), transform, onto)?.flatten_all()?.to_vec1::<f32>()?;
            gather_nearest(moving, onto, padding, |v| [pts[3 * v] as f64, pts[3 * v + 1] as f64, pts[3 * v + 2] as f64])
        }
        WarpInterpolation::LabelLinear => {
            if moving.channels() != 1 {
                return Err(Error::arg("warp", "label interpolation needs a single-channel label map"));
            }
            let (oh, labels) = one_hot(moving, None)?;
            let w = warp_tensor(oh.data(), moving.grid(), transform, onto, SampleMode::Linear, padding)?;
            let best = w.max_keepdim(0)?.flatten_all()?.to_vec1::<f32>()?;
            let arg = w.argmax_keepdim(0)?.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
            // Where no label reaches the point (outside the moving image) the output is background 0.
            let vals: Vec<f64> =
                arg.iter().zip(&best).map(|(&i, &b)| if b > 0.0 { labels[i as usize] as f64 } else { 0.0 }).collect();
            let exact_f32 = vals.iter().all(|v| v.abs() <= 16_777_216.0);
            let [z, y, x] = onto.zyx();
            let dev = moving.data().device();
            let t = if exact_f32 {
                Tensor::from_vec(vals.iter().map(|&v| v as f32).collect::<Vec<_>>(), (1, z, y, x), dev)?
            } else {
                Tensor::from_vec(vals, (1, z, y, x), dev)?
            };
            Image::new(t, onto.clone(), moving.dtype())
        }
    }
}
