//! The Jacobian determinant field of a transform.

use nalgebra::Matrix3;
use rayon::prelude::*;

use super::Transform;
use crate::error::Result;
use crate::image::{Grid, Image};

/// `det(dT/dx)` at every voxel of `grid` (float32 image). For a linear transform it is the constant
/// determinant of its matrix; otherwise central differences of the displacement `T(x) - x` along the
/// voxel axes (one-sided at the border), mapped to world derivatives through the grid's direction and
/// spacing. `det <= 0` marks folding.
///
/// Errors: tensor errors from evaluating the transform.
pub fn jacobian_determinant(transform: &dyn Transform, grid: &Grid) -> Result<Image> {
    if let Some(m) = transform.linear_matrix()? {
        let d = m.fixed_view::<3, 3>(0, 0).determinant() as f32;
        return Image::full(d, 1, grid.clone());
    }
    let [nx, ny, nz] = grid.shape();
    let world = transform.world_points(grid)?.flatten_all()?.to_vec1::<f32>()?;
    let a = grid.voxel_to_world();
    let a3: Matrix3<f64> = a.fixed_view::<3, 3>(0, 0).into();
    let inv = a3.try_inverse().unwrap_or_else(Matrix3::identity);
    // Displacement in f64 (world minus the exact voxel centre), so large coordinates lose nothing.
    let disp = |i: usize, j: usize, k: usize| -> [f64; 3] {
        let o = 3 * ((k * ny + j) * nx + i);
        let p = [i as f64, j as f64, k as f64];
        let mut out = [0.0; 3];
        for r in 0..3 {
            let base = a[(r, 0)] * p[0] + a[(r, 1)] * p[1] + a[(r, 2)] * p[2] + a[(r, 3)];
            out[r] = world[o + r] as f64 - base;
        }
        out
    };
    let n = [nx, ny, nz];
    let mut out = vec![0f32; nx * ny * nz];
    out.par_chunks_mut(nx * ny).enumerate().for_each(|(k, slab)| {
        for j in 0..ny {
            for i in 0..nx {
                // Columns: d(displacement)/d(index) along i, j, k.
                let mut du = Matrix3::zeros();
                let idx = [i, j, k];
                for ax in 0..3 {
                    if n[ax] < 2 {
                        continue;
                    }
                    let (lo, hi) = (idx[ax].saturating_sub(1), (idx[ax] + 1).min(n[ax] - 1));
                    let mut a_idx = idx;
                    let mut b_idx = idx;
                    a_idx[ax] = lo;
                    b_idx[ax] = hi;
                    let (ua, ub) = (disp(a_idx[0], a_idx[1], a_idx[2]), disp(b_idx[0], b_idx[1], b_idx[2]));
                    let h = (hi - lo) as f64;
                    for r in 0..3 {
                        du[(r, ax)] = (ub[r] - ua[r]) / h;
                    }
                }
                let jac = Matrix3::identity() + du * inv;
                slab[j * nx + i] = jac.determinant() as f32;
            }
        }
    });
    Image::from_vec(out, 1, grid.clone())
}
