//! The sampled loss of a linear transform as a plain f64 objective: the parameters go to the world
//! matrix ([`linear_matrix_f64`]), the matrix to the fixed-voxel-to-moving-voxel map, and the fused
//! kernel [`point_loss`] evaluates a global measure at sample points with its gradient to the map, which
//! the chain rule carries back to the parameters. No tensor is built per evaluation, so an iteration
//! costs what the kernel costs (tens of nanoseconds per point), which is what lets [`super::iso_linear`]
//! run hundreds of iterations in well under a second.

use nalgebra::Matrix4;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::image::trilinear::sample;
use crate::image::{Grid, Image};
use crate::ops::point_metric::{point_loss, MovingVolume, PointMeasure, PointSamples};
use crate::spatial::{linear_matrix_f64, LinearKind};

/// The loss of a global measure between a fixed and a moving image (one pyramid level) as a function of
/// the parameters of a linear transform of `kind` about `centre` (fixed world points to moving world
/// points), evaluated at given fixed sample points.
#[derive(Clone, Debug)]
pub struct SampledObjective {
    measure: PointMeasure,
    moving: Vec<f32>,
    shape: [usize; 3],
    fixed_to_world: Matrix4<f64>,
    world_to_moving: Matrix4<f64>,
    kind: LinearKind,
    centre: [f64; 3],
}

impl SampledObjective {
    /// The objective of `measure` for points of `fixed_grid` and the (single-channel) `moving` image.
    ///
    /// Errors: a moving image with several channels; tensor errors.
    pub fn new(
        measure: PointMeasure,
        fixed_grid: &Grid,
        moving: &Image,
        kind: LinearKind,
        centre: [f64; 3],
    ) -> Result<Self> {
        if moving.channels() != 1 {
            return Err(Error::arg("sampled objective", "the moving image must have one channel"));
        }
        Ok(SampledObjective {
            measure,
            moving: moving.to_vec_f32()?,
            shape: moving.grid().shape(),
            fixed_to_world: fixed_grid.voxel_to_world(),
            world_to_moving: moving.grid().world_to_voxel(),
            kind,
            centre,
        })
    }

    /// The measure.
    pub fn measure(&self) -> &PointMeasure {
        &self.measure
    }

    /// The loss at `params` over `samples`, its gradient with respect to the parameters, and how many
    /// points mapped inside the moving image.
    ///
    /// Errors: a parameter count that is not the kind's; the kernel's errors ([`point_loss`]).
    pub fn eval(&self, params: &[f64], samples: &PointSamples) -> Result<(f64, Vec<f64>, usize)> {
        let (t, dt) = linear_matrix_f64(self.kind, params, self.centre)?;
        let a44 = self.world_to_moving * t * self.fixed_to_world;
        let a: [f64; 12] = std::array::from_fn(|k| a44[(k / 4, k % 4)]);
        let mv = MovingVolume { data: &self.moving, shape: self.shape };
        let r = point_loss(&self.measure, samples, &mv, &a).map_err(|e| Error::arg("sampled objective", e))?;
        // A = W T V, so dL/dT = W^T G V^T with G = dL/dA (bottom row 0).
        let mut g = Matrix4::zeros();
        for k in 0..12 {
            g[(k / 4, k % 4)] = r.grad[k];
        }
        let gt = self.world_to_moving.transpose() * g * self.fixed_to_world.transpose();
        let grad = dt.iter().map(|d| d.component_mul(&gt).sum()).collect();
        Ok((r.loss, grad, r.inside))
    }
}

/// Every voxel of `fixed` (inside `mask`, when given: non-zero values on the same grid) as sample points
/// with their values.
///
/// Errors: a mask of another size; an empty mask; tensor errors.
pub fn grid_samples(fixed: &Image, mask: Option<&[f32]>) -> Result<PointSamples> {
    let v = fixed.to_vec_f32()?;
    let [nx, ny, nz] = fixed.grid().shape();
    if let Some(m) = mask {
        if m.len() != v.len() {
            return Err(Error::Shape {
                op: "grid samples".into(),
                expected: format!("a mask of {} voxels", v.len()),
                actual: format!("{} voxels", m.len()),
            });
        }
    }
    let mut s = PointSamples::default();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let idx = (k * ny + j) * nx + i;
                if mask.is_some_and(|m| m[idx] == 0.0) {
                    continue;
                }
                s.points.extend_from_slice(&[i as f32, j as f32, k as f32]);
                s.fixed.push(v[idx]);
            }
        }
    }
    if s.is_empty() {
        return Err(Error::arg("grid samples", "the mask is empty"));
    }
    Ok(s)
}

/// The fixed image's values at `points` (voxel indices, `3 n` values), trilinear with border padding.
pub fn fixed_values(fixed: &[f32], shape: [usize; 3], points: &[f32]) -> Vec<f32> {
    points.par_chunks_exact(3).map(|p| sample(fixed, shape, [p[0] as f64, p[1] as f64, p[2] as f64], true)).collect()
}
