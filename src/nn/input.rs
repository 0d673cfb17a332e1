//! From a moving / fixed image pair to a network input on a fixed-size grid, and from a network's voxel
//! displacement back to world millimetres.

use candle_core::Tensor;

use super::Dim3;
use crate::error::{Error, Result};
use crate::image::ops::{normalize, Normalization};
use crate::image::resample::{resample, Interpolation, Padding};
use crate::image::{Grid, Image};

/// The network grid of a fixed image: its field of view (edge to edge, same centre and direction)
/// sampled with `size` voxels per axis `(D, H, W)` = (z, y, x).
///
/// Errors: a zero size ([`Error::InvalidGrid`]).
pub fn network_grid(fixed: &Grid, size: impl Into<Dim3>) -> Result<Grid> {
    let [d, h, w] = size.into().0;
    fixed.with_shape([w, h, d])
}

/// The network input of a pair: `(1, 2, D, H, W)` f32, channel 0 the moving image and channel 1 the fixed
/// image (VoxelMorph's order), each resampled trilinearly (zero outside) onto
/// [`network_grid`]`(fixed, size)` and mapped to [0, 1] by its own 1st-99th percentiles (clipped).
/// Returns the tensor and the network grid (world mm, the fixed image's space).
///
/// Errors: [`Error::InvalidArgument`] for a multi-channel image or one with no finite voxel; a zero size.
pub fn pair_input(moving: &Image, fixed: &Image, size: impl Into<Dim3>) -> Result<(Tensor, Grid)> {
    if moving.channels() != 1 || fixed.channels() != 1 {
        return Err(Error::arg(
            "network input",
            format!("single-channel images needed, got {} and {} channels", moving.channels(), fixed.channels()),
        ));
    }
    let grid = network_grid(fixed.grid(), size)?;
    let norm = Normalization::Percentile { lo: 1.0, hi: 99.0 };
    let prep = |im: &Image| -> Result<Tensor> {
        let r = resample(im, &grid, Interpolation::Linear, Padding::Zero)?;
        Ok(normalize(&r, norm, None)?.data().clone())
    };
    let t = Tensor::cat(&[prep(moving)?, prep(fixed)?], 0)?.unsqueeze(0)?;
    Ok((t, grid))
}

/// A displacement in voxels of `grid`, `(3, Z, Y, X)` with components along x, y, z (the W, H, D axes),
/// as world millimetres `(3, Z, Y, X)` (x, y, z, RAS; regsh's dense-field convention): `u_mm =
/// direction * diag(spacing) * u_vox` per voxel. Differentiable.
///
/// Errors: [`Error::Shape`] when `flow` is not `(3, Z, Y, X)` on `grid`'s shape.
pub fn flow_to_world(flow: &Tensor, grid: &Grid) -> Result<Tensor> {
    let [x, y, z] = grid.shape();
    if flow.dims() != [3, z, y, x] {
        return Err(Error::Shape {
            op: "flow_to_world".into(),
            expected: format!("(3, {z}, {y}, {x})"),
            actual: format!("{:?}", flow.dims()),
        });
    }
    let (dir, sp) = (grid.direction(), grid.spacing());
    let l: Vec<f32> = (0..9).map(|i| (dir[(i / 3, i % 3)] * sp[i % 3]) as f32).collect();
    let l = Tensor::from_vec(l, (3, 3), flow.device())?;
    Ok(l.matmul(&flow.reshape((3, ()))?)?.reshape((3, z, y, x))?)
}
