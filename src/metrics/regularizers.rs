//! Regularizers of displacement / velocity fields `(3, Z, Y, X)` (mm), with derivatives taken along the
//! voxel axes and divided by the grid spacing (mm), so values are in physical units. Each returns a 0-d
//! tensor, differentiable in the field.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::image::Grid;

/// Forward difference along tensor dim `d` (1 = z, 2 = y, 3 = x) divided by `h` mm.
fn diff(u: &Tensor, d: usize, h: f64) -> Result<Tensor> {
    let n = u.dim(d)?;
    Ok(((u.narrow(d, 1, n - 1)? - u.narrow(d, 0, n - 1)?)? / h)?)
}

/// Diffusion regularizer (Wang et al., eq. 8): the mean over voxels of the squared first derivatives of the
/// field, summed over the three components and averaged over the directions (VoxelMorph's `Grad('l2')`
/// averages over components too: this is 3 times its value). Dimensionless. Axes of size 1 are skipped;
/// a field with none left gives 0. Derivatives along voxel axes: exact for any orthogonal direction
/// matrix, as the measure is rotation invariant.
pub fn diffusion(field: &Tensor, spacing: [f64; 3]) -> Result<Tensor> {
    let mut terms = Vec::new();
    for (d, h) in [(3, spacing[0]), (2, spacing[1]), (1, spacing[2])] {
        if field.dim(d)? > 1 {
            terms.push(diff(field, d, h)?.sqr()?.sum(0)?.mean_all()?);
        }
    }
    if terms.is_empty() {
        return Ok(Tensor::new(0f32, field.device())?);
    }
    let n = terms.len() as f64;
    Ok((Tensor::stack(&terms, 0)?.sum_all()? / n)?)
}

/// Bending energy (Rueckert et al. 1999): the mean over voxels of the squared second derivatives
/// `u_xx^2 + u_yy^2 + u_zz^2 + 2 (u_xy^2 + u_xz^2 + u_yz^2)`, summed over components, by central second
/// differences of forward differences. Units 1/mm^2.
pub fn bending_energy(field: &Tensor, spacing: [f64; 3]) -> Result<Tensor> {
    let axes = [(3, spacing[0]), (2, spacing[1]), (1, spacing[2])];
    let mut total: Option<Tensor> = None;
    for (a, &(da, ha)) in axes.iter().enumerate() {
        if field.dim(da)? < 3 {
            continue;
        }
        let first = diff(field, da, ha)?;
        for &(db, hb) in axes.iter().skip(a) {
            if field.dim(db)? < 2 || (db == da && first.dim(db)? < 2) {
                continue;
            }
            let second = diff(&first, db, hb)?;
            let w = if db == da { 1.0 } else { 2.0 };
            let t = (second.sqr()?.sum(0)?.mean_all()? * w)?;
            total = Some(match total {
                None => t,
                Some(s) => (s + t)?,
            });
        }
    }
    match total {
        Some(t) => Ok(t),
        None => Ok(Tensor::new(0f32, field.device())?),
    }
}

/// Jacobian determinant field `(Z', Y', X')` of `x -> x + u(x)` for a field `(3, Z, Y, X)` (mm, world
/// components) on `grid`, by forward differences along the voxel axes mapped to world derivatives through
/// the grid's direction and spacing (`du/dx = du/dijk * A^-1`). Axes of size 1 contribute no derivative
/// and are not cropped; other axes lose their last voxel. Differentiable. `det <= 0` marks folding.
///
/// Errors: a field that is not `(3, Z, Y, X)` on the grid.
pub fn jacobian_det(field: &Tensor, grid: &Grid) -> Result<Tensor> {
    let (c3, z, y, x) = field.dims4()?;
    let [gz, gy, gx] = grid.zyx();
    if c3 != 3 || (z, y, x) != (gz, gy, gx) {
        return Err(Error::Shape {
            op: "jacobian_det".into(),
            expected: format!("(3, {gz}, {gy}, {gx})"),
            actual: format!("{:?}", field.dims()),
        });
    }
    let keep = |n: usize| if n > 1 { n - 1 } else { 1 };
    let (kz, ky, kx) = (keep(z), keep(y), keep(x));
    let crop = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(1, 0, kz)?.narrow(2, 0, ky)?.narrow(3, 0, kx)?) };
    // d[a][c] = d u_c / d index_a (a = x, y, z), on the cropped grid; zero along axes of size 1.
    let mut d: Vec<Vec<Tensor>> = Vec::new();
    for (dim, n) in [(3, x), (2, y), (1, z)] {
        let dd =
            if n > 1 { crop(&diff(field, dim, 1.0)?.pad_with_zeros(dim, 0, 1)?)? } else { crop(&field.zeros_like()?)? };
        d.push((0..3).map(|c| dd.get(c)).collect::<candle_core::Result<Vec<_>>>()?);
    }
    let a = grid.voxel_to_world();
    let a3 = nalgebra::Matrix3::from_fn(|r, c| a[(r, c)]);
    let inv = a3.try_inverse().ok_or_else(|| Error::InvalidGrid("singular grid matrix".into()))?;
    // J[c][w] = delta + sum_a d[a][c] * inv[a][w]
    let j = |c: usize, w: usize| -> Result<Tensor> {
        let mut t = ((&d[0][c] * inv[(0, w)])? + (&d[1][c] * inv[(1, w)])?)?;
        t = (t + (&d[2][c] * inv[(2, w)])?)?;
        Ok(if c == w { (t + 1.0)? } else { t })
    };
    let (j00, j01, j02) = (j(0, 0)?, j(0, 1)?, j(0, 2)?);
    let (j10, j11, j12) = (j(1, 0)?, j(1, 1)?, j(1, 2)?);
    let (j20, j21, j22) = (j(2, 0)?, j(2, 1)?, j(2, 2)?);
    let t1 = (&j00 * ((&j11 * &j22)? - (&j12 * &j21)?)?)?;
    let t2 = (&j01 * ((&j10 * &j22)? - (&j12 * &j20)?)?)?;
    let t3 = (&j02 * ((&j10 * &j21)? - (&j11 * &j20)?)?)?;
    Ok(((t1 - t2)? + t3)?)
}

/// Folding penalty: the mean over voxels of `relu(-det J)` ([`jacobian_det`]), zero for a field without
/// folding. Errors: as [`jacobian_det`].
pub fn folding(field: &Tensor, grid: &Grid) -> Result<Tensor> {
    Ok(jacobian_det(field, grid)?.neg()?.relu()?.mean_all()?)
}
