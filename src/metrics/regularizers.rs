//! Regularizers of displacement / velocity fields `(3, Z, Y, X)` (mm), with derivatives taken along the
//! voxel axes and divided by the grid spacing (mm), so values are in physical units. Each returns a 0-d
//! tensor, differentiable in the field.

use candle_core::Tensor;

use crate::error::Result;

/// Forward difference along tensor dim `d` (1 = z, 2 = y, 3 = x) divided by `h` mm.
fn diff(u: &Tensor, d: usize, h: f64) -> Result<Tensor> {
    let n = u.dim(d)?;
    Ok(((u.narrow(d, 1, n - 1)? - u.narrow(d, 0, n - 1)?)? / h)?)
}

/// Diffusion regularizer (seed `001` eq. 8; VoxelMorph's `Grad('l2')`): the mean over voxels of the squared
/// first derivatives of the field, summed over the three components and averaged over the three
/// directions. Units mm^2 / mm^2 (dimensionless). Axes of size 1 are skipped.
pub fn diffusion(field: &Tensor, spacing: [f64; 3]) -> Result<Tensor> {
    let mut terms = Vec::new();
    for (d, h) in [(3, spacing[0]), (2, spacing[1]), (1, spacing[2])] {
        if field.dim(d)? > 1 {
            terms.push(diff(field, d, h)?.sqr()?.sum(0)?.mean_all()?);
        }
    }
    let n = terms.len().max(1) as f64;
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

/// Jacobian determinant field `(Z-1, Y-1, X-1)` of `x -> x + u(x)` by forward differences, for a field on
/// an axis-aligned grid of `spacing` (direction cosines do not change the determinant). Differentiable.
pub fn jacobian_det(field: &Tensor, spacing: [f64; 3]) -> Result<Tensor> {
    let (_, z, y, x) = field.dims4()?;
    let crop = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(1, 0, z - 1)?.narrow(2, 0, y - 1)?.narrow(3, 0, x - 1)?) };
    // g[a][c]: d u_c / d x_a
    let mut g: Vec<Vec<Tensor>> = Vec::new();
    for (d, h) in [(3, spacing[0]), (2, spacing[1]), (1, spacing[2])] {
        let dd = crop(&diff(field, d, h)?.pad_with_zeros(d, 0, 1)?)?;
        g.push((0..3).map(|c| dd.get(c)).collect::<candle_core::Result<Vec<_>>>()?);
    }
    // J = I + du/dx; J[c][a] = delta + g[a][c]
    let j = |c: usize, a: usize| -> Result<Tensor> { Ok(if a == c { (&g[a][c] + 1.0)? } else { g[a][c].clone() }) };
    let (j00, j01, j02) = (j(0, 0)?, j(0, 1)?, j(0, 2)?);
    let (j10, j11, j12) = (j(1, 0)?, j(1, 1)?, j(1, 2)?);
    let (j20, j21, j22) = (j(2, 0)?, j(2, 1)?, j(2, 2)?);
    let t1 = (&j00 * ((&j11 * &j22)? - (&j12 * &j21)?)?)?;
    let t2 = (&j01 * ((&j10 * &j22)? - (&j12 * &j20)?)?)?;
    let t3 = (&j02 * ((&j10 * &j21)? - (&j11 * &j20)?)?)?;
    Ok(((t1 - t2)? + t3)?)
}

/// Folding penalty: the mean over voxels of `relu(-det J)`, zero for a field without folding.
pub fn folding(field: &Tensor, spacing: [f64; 3]) -> Result<Tensor> {
    Ok(jacobian_det(field, spacing)?.neg()?.relu()?.mean_all()?)
}
