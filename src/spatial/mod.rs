//! Spatial transforms in world millimetres, their composition, inverses and Jacobians, and the warp.
//!
//! **Direction.** Every transform maps points of the *fixed* (target, reference) space to points of the
//! *moving* (source) space, as ITK, ANTs and `grid_sample` do: warping pulls moving-image values back onto
//! the fixed grid, `warped(x) = moving(T(x))`. Files written by regsh (ITK `.tfm`, displacement fields)
//! follow the same convention, in ITK's LPS frame on disk.
//!
//! **Parameters as tensors.** Linear transforms hold their parameters in a candle tensor and dense ones
//! their field, so the same value can be optimized (wrap the tensor in a `Var`), held fixed, or predicted
//! by a network; everything from parameters to warped image is differentiable.
//!
//! | type | parameters |
//! |---|---|
//! | [`Linear`] | translation, rigid, similarity, 12-parameter affine (Chen et al. 2024), raw 3x4 matrix |
//! | [`Ddf`] | displacement field `(3, Z, Y, X)` in mm (x, y, z RAS components) on a grid |
//! | [`Svf`] | stationary velocity field, integrated by scaling and squaring |
//! | [`BSpline`] | cubic B-spline free-form deformation, control-point spacing in mm |
//! | [`Composite`] | a sequence, applied to points in order |

pub mod dense;
pub mod io;
pub mod jacobian;
pub mod linear;
pub mod warp;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use nalgebra::Matrix4;

pub use dense::{BSpline, Ddf, Svf};
pub use jacobian::jacobian_determinant;
pub use linear::{linear_matrix_f64, Linear, LinearKind};
pub use warp::{warp, warp_tensor, WarpInterpolation};

use crate::error::Result;
use crate::image::Grid;
use crate::ops::affine_grid;

/// A spatial transform: maps fixed-space world points (mm, RAS) to moving-space world points.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// Short name, e.g. `"affine"`, `"ddf"`.
    fn name(&self) -> String;

    /// Maps world points `(N, 3)` f32 mm to `(N, 3)`. Differentiable with respect to the parameters.
    fn map_points(&self, points: &Tensor) -> Result<Tensor>;

    /// `T(x)` for every voxel centre `x` of `grid`: `(Z, Y, X, 3)` world mm.
    fn world_points(&self, grid: &Grid) -> Result<Tensor> {
        let [nx, ny, nz] = grid.shape();
        let p = grid_points(grid, &crate::device::host())?.reshape((nx * ny * nz, 3))?;
        Ok(self.map_points(&p)?.reshape((nz, ny, nx, 3))?)
    }

    /// The world displacement `T(x) - x` `(3, Z, Y, X)` (mm, x y z components) at the voxel centres of
    /// `grid`. Differentiable with respect to the parameters.
    fn displacement_on(&self, grid: &Grid) -> Result<Tensor> {
        let world = self.world_points(grid)?;
        let base = grid_points(grid, world.device())?;
        Ok((world - base)?.permute((3, 0, 1, 2))?.contiguous()?)
    }

    /// The 4x4 world matrix when the transform is linear (a snapshot: not differentiable).
    fn linear_matrix(&self) -> Result<Option<Matrix4<f64>>> {
        Ok(None)
    }

    /// The world matrix as a differentiable `(3, 4)` tensor when the transform is linear.
    fn matrix_tensor(&self) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// The inverse transform: exact for linear maps, fixed-point iteration for a DDF, negated velocity
    /// for an SVF. Not differentiable.
    fn inverse(&self) -> Result<Arc<dyn Transform>>;
}

/// World positions `(Z, Y, X, 3)` (mm) of the voxel centres of `grid`.
pub fn grid_points(grid: &Grid, device: &Device) -> Result<Tensor> {
    let m = matrix34(&grid.voxel_to_world(), device)?;
    Ok(affine_grid(&m, grid.shape())?)
}

/// The top three rows of a 4x4 matrix as an f32 `(3, 4)` tensor.
pub fn matrix34(m: &Matrix4<f64>, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..3).flat_map(|r| (0..4).map(move |c| m[(r, c)] as f32)).collect();
    Ok(Tensor::from_vec(v, (3, 4), device)?)
}

/// A `(3, 4)` tensor as a 4x4 f64 matrix (bottom row 0 0 0 1).
pub fn matrix44_of(t: &Tensor) -> Result<Matrix4<f64>> {
    let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let mut m = Matrix4::identity();
    for r in 0..3 {
        for c in 0..4 {
            m[(r, c)] = v[4 * r + c];
        }
    }
    Ok(m)
}

/// Applies a `(3, 4)` matrix tensor to points `(N, 3)`: `points * A^T + b` (differentiable in both).
pub fn apply_matrix(m: &Tensor, points: &Tensor) -> Result<Tensor> {
    let a = m.narrow(1, 0, 3)?;
    let b = m.narrow(1, 3, 1)?.squeeze(1)?;
    Ok(points.matmul(&a.t()?)?.broadcast_add(&b)?)
}

/// A sequence of transforms applied to points in order: `T_n(...T_2(T_1(x)))`. This is the order of
/// `regsh apply -t T_1 -t T_2 ...` and of `antsApplyTransforms` (whose list, read left to right, is also
/// the order in which a fixed-space point passes through the transforms).
#[derive(Clone, Debug)]
pub struct Composite {
    /// The transforms, first applied first.
    pub transforms: Vec<Arc<dyn Transform>>,
}

impl Composite {
    /// A composite of `transforms`, applied to points in the given order.
    pub fn new(transforms: Vec<Arc<dyn Transform>>) -> Self {
        Composite { transforms }
    }
}

impl Transform for Composite {
    fn name(&self) -> String {
        let names: Vec<String> = self.transforms.iter().map(|t| t.name()).collect();
        format!("composite[{}]", names.join(", "))
    }

    fn map_points(&self, points: &Tensor) -> Result<Tensor> {
        let mut p = points.clone();
        for t in &self.transforms {
            p = t.map_points(&p)?;
        }
        Ok(p)
    }

    fn world_points(&self, grid: &Grid) -> Result<Tensor> {
        // The first transform may have a fast path on the grid (a dense field on its own grid).
        let Some((first, rest)) = self.transforms.split_first() else {
            return grid_points(grid, &crate::device::host());
        };
        let p = first.world_points(grid)?;
        if rest.is_empty() {
            return Ok(p);
        }
        let dims = p.dims().to_vec();
        let mut flat = p.reshape((p.elem_count() / 3, 3))?;
        for t in rest {
            flat = t.map_points(&flat)?;
        }
        Ok(flat.reshape(dims)?)
    }

    fn linear_matrix(&self) -> Result<Option<Matrix4<f64>>> {
        let mut m = Matrix4::identity();
        for t in &self.transforms {
            match t.linear_matrix()? {
                Some(a) => m = a * m,
                None => return Ok(None),
            }
        }
        Ok(Some(m))
    }

    fn matrix_tensor(&self) -> Result<Option<Tensor>> {
        let mut acc: Option<Tensor> = None;
        for t in &self.transforms {
            let Some(m) = t.matrix_tensor()? else { return Ok(None) };
            acc = Some(match acc {
                None => m,
                Some(prev) => compose34(&m, &prev)?,
            });
        }
        Ok(acc)
    }

    fn inverse(&self) -> Result<Arc<dyn Transform>> {
        let inv = self.transforms.iter().rev().map(|t| t.inverse()).collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Composite::new(inv)))
    }
}

/// `a ∘ b` for `(3, 4)` affine matrices: the map `x -> a(b(x))` (differentiable).
pub fn compose34(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (aa, ab) = (a.narrow(1, 0, 3)?, a.narrow(1, 3, 1)?);
    let (ba, bb) = (b.narrow(1, 0, 3)?, b.narrow(1, 3, 1)?);
    let m = aa.matmul(&ba)?;
    let t = (aa.matmul(&bb)? + ab)?;
    Ok(Tensor::cat(&[&m, &t], 1)?)
}
