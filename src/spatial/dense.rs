//! Dense transforms: displacement fields (DDF), stationary velocity fields (SVF) and cubic B-spline
//! free-form deformations. Fields are `(3, Z, Y, X)` f32 tensors of world displacements in mm (x, y, z
//! components, RAS) on a [`Grid`]; the map is `x -> x + u(x)`.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::{grid_points, matrix34, Transform};
use crate::error::{Error, Result};
use crate::image::resample::Padding;
use crate::image::Grid;
use crate::ops::{affine_grid, grid_sample, SampleMode};

fn check_field(op: &str, field: &Tensor, grid: &Grid) -> Result<Tensor> {
    let [z, y, x] = grid.zyx();
    if field.dims() != [3, z, y, x] {
        return Err(Error::Shape {
            op: op.into(),
            expected: format!("(3, {z}, {y}, {x})"),
            actual: format!("{:?}", field.dims()),
        });
    }
    Ok(if field.dtype() == DType::F32 { field.clone() } else { field.to_dtype(DType::F32)? })
}

/// Voxel coordinates `(Z, Y, X, 3)` of `grid` of the points `x + u(x)` for a field `u` `(3, Z, Y, X)` on
/// that grid (differentiable in `u`).
fn displaced_voxel_points(field: &Tensor, grid: &Grid) -> Result<Tensor> {
    let w2v = grid.world_to_voxel();
    let ident = matrix34(&nalgebra::Matrix4::identity(), field.device())?;
    let base = affine_grid(&ident, grid.shape())?;
    let r = matrix34(&w2v, field.device())?.narrow(1, 0, 3)?;
    let u = field.permute((1, 2, 3, 0))?; // (Z, Y, X, 3)
    Ok((base + u.broadcast_matmul(&r.t()?)?)?)
}

/// Samples a `(3, Z, Y, X)` field on `grid` at world points `(N, 3)`: `(N, 3)`. Outside the field's grid
/// the displacement falls to zero (identity), as ITK's `DisplacementFieldTransform` does.
fn sample_field(field: &Tensor, grid: &Grid, points: &Tensor) -> Result<Tensor> {
    sample_field_padded(field, grid, points, Padding::Zero)
}

/// [`sample_field`] with a choice of padding beyond the grid (`Border`: the nearest node's vector).
fn sample_field_padded(field: &Tensor, grid: &Grid, points: &Tensor, padding: Padding) -> Result<Tensor> {
    let m = matrix34(&grid.world_to_voxel(), points.device())?;
    let vox = super::apply_matrix(&m, points)?;
    Ok(grid_sample(field, &vox, SampleMode::Linear, padding)?.t()?)
}

/// A displacement field: `x -> x + u(x)`, `u` in mm on a grid (trilinear between nodes, zero beyond).
#[derive(Clone, Debug)]
pub struct Ddf {
    field: Tensor,
    grid: Grid,
}

impl Ddf {
    /// A DDF from a `(3, Z, Y, X)` field on `grid`. Errors: [`Error::Shape`].
    pub fn new(field: Tensor, grid: Grid) -> Result<Self> {
        let field = check_field("Ddf::new", &field, &grid)?;
        Ok(Ddf { field, grid })
    }
    /// The zero displacement on `grid`.
    pub fn zeros(grid: Grid) -> Result<Self> {
        Ddf::zeros_on(grid, &crate::device::host())
    }
    /// The zero displacement on `grid`, on `device`.
    pub fn zeros_on(grid: Grid, device: &Device) -> Result<Self> {
        let [z, y, x] = grid.zyx();
        Ddf::new(Tensor::zeros((3, z, y, x), DType::F32, device)?, grid)
    }
    /// The field `(3, Z, Y, X)` in mm.
    pub fn field(&self) -> &Tensor {
        &self.field
    }
    /// The grid the field lives on.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }
    /// The same grid with another field (e.g. a `Var`). Errors: [`Error::Shape`].
    pub fn with_field(&self, field: Tensor) -> Result<Self> {
        Ddf::new(field, self.grid.clone())
    }

    /// The inverse by fixed-point iteration `v <- -u(x + v(x))` on the same grid, until the largest
    /// update is below `tol` mm or after `max_iter` iterations. Converges where the map is invertible
    /// (Jacobian positive, displacement gradients below 1). The iteration samples `u` with border
    /// padding: the forward map jumps to the identity beyond the grid, which has no inverse there, and
    /// a point `x + v` just outside would make the iteration oscillate by the border's displacement.
    pub fn invert(&self, max_iter: usize, tol: f64) -> Result<Ddf> {
        let [nx, ny, nz] = self.grid.shape();
        let n = nx * ny * nz;
        let dev = self.field.device();
        let base = grid_points(&self.grid, dev)?.reshape((n, 3))?;
        let u = self.field.detach();
        let mut v = Tensor::zeros((n, 3), DType::F32, dev)?;
        let mut change = f64::INFINITY;
        for _ in 0..max_iter {
            let next = sample_field_padded(&u, &self.grid, &(&base + &v)?, Padding::Border)?.neg()?;
            change = (&next - &v)?.abs()?.max_all()?.to_scalar::<f32>()? as f64;
            v = next;
            if change < tol {
                break;
            }
        }
        if change >= tol {
            tracing::warn!("DDF inverse: not converged after {max_iter} iterations (last update {change:.3e} mm); the field may fold");
        }
        let field = v.t()?.reshape((3, nz, ny, nx))?.contiguous()?;
        Ddf::new(field, self.grid.clone())
    }
}

impl Transform for Ddf {
    fn name(&self) -> String {
        "ddf".into()
    }
    fn map_points(&self, points: &Tensor) -> Result<Tensor> {
        let points = points.to_device(self.field.device())?;
        Ok((&points + sample_field(&self.field, &self.grid, &points)?)?)
    }
    fn world_points(&self, grid: &Grid) -> Result<Tensor> {
        if grid.same_as(&self.grid, 1e-6) {
            return Ok((grid_points(grid, self.field.device())? + self.field.permute((1, 2, 3, 0))?)?);
        }
        let [nx, ny, nz] = grid.shape();
        let p = grid_points(grid, self.field.device())?.reshape((nx * ny * nz, 3))?;
        Ok(self.map_points(&p)?.reshape((nz, ny, nx, 3))?)
    }
    fn displacement_on(&self, grid: &Grid) -> Result<Tensor> {
        if grid.same_as(&self.grid, 1e-6) {
            return Ok(self.field.clone());
        }
        let world = self.world_points(grid)?;
        Ok((world - grid_points(grid, self.field.device())?)?.permute((3, 0, 1, 2))?.contiguous()?)
    }
    fn inverse(&self) -> Result<Arc<dyn Transform>> {
        Ok(Arc::new(self.invert(50, 1e-4)?))
    }
}

/// A stationary velocity field, exponentiated by scaling and squaring: `u = v / 2^steps`, then `steps`
/// times `u <- u + u(x + u(x))` (Arsigny et al. 2006), with border padding inside the integration (where
/// VoxelMorph's `VecInt` pads with zeros).
#[derive(Clone, Debug)]
pub struct Svf {
    velocity: Tensor,
    grid: Grid,
    steps: usize,
}

impl Svf {
    /// An SVF from a `(3, Z, Y, X)` velocity in mm on `grid`, integrated in `steps` squarings (7 is
    /// VoxelMorph's default). Errors: [`Error::Shape`].
    pub fn new(velocity: Tensor, grid: Grid, steps: usize) -> Result<Self> {
        let velocity = check_field("Svf::new", &velocity, &grid)?;
        Ok(Svf { velocity, grid, steps })
    }
    /// The velocity `(3, Z, Y, X)`.
    pub fn velocity(&self) -> &Tensor {
        &self.velocity
    }
    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }
    /// The number of squarings.
    pub fn steps(&self) -> usize {
        self.steps
    }
    /// The same grid and steps with another velocity. Errors: [`Error::Shape`].
    pub fn with_velocity(&self, v: Tensor) -> Result<Self> {
        Svf::new(v, self.grid.clone(), self.steps)
    }

    /// The displacement `exp(v) - id` on the grid (differentiable in the velocity).
    pub fn to_ddf(&self) -> Result<Ddf> {
        let mut u = (&self.velocity / 2f64.powi(self.steps as i32))?;
        for _ in 0..self.steps {
            let p = displaced_voxel_points(&u, &self.grid)?;
            let moved = grid_sample(&u, &p, SampleMode::Linear, Padding::Border)?;
            u = (u + moved)?;
        }
        Ddf::new(u, self.grid.clone())
    }
}

/// `Transform` for a dense model that evaluates through its displacement field (`to_ddf`); `$inverse`
/// maps `self` to the inverse transform.
macro_rules! transform_via_ddf {
    ($t:ty, $name:literal, $inverse:expr) => {
        impl Transform for $t {
            fn name(&self) -> String {
                $name.into()
            }
            fn map_points(&self, points: &Tensor) -> Result<Tensor> {
                self.to_ddf()?.map_points(points)
            }
            fn world_points(&self, grid: &Grid) -> Result<Tensor> {
                self.to_ddf()?.world_points(grid)
            }
            fn displacement_on(&self, grid: &Grid) -> Result<Tensor> {
                self.to_ddf()?.displacement_on(grid)
            }
            fn inverse(&self) -> Result<Arc<dyn Transform>> {
                let f: fn(&$t) -> Result<Arc<dyn Transform>> = $inverse;
                f(self)
            }
        }
    };
}

transform_via_ddf!(Svf, "svf", |s| Ok(Arc::new(Svf::new(s.velocity.neg()?.detach(), s.grid.clone(), s.steps)?)));

/// A cubic B-spline free-form deformation (Rueckert et al. 1999): control points every
/// `control_spacing` mm along the grid's axes, one extra ring outside (so `ceil((n - 1) / r) + 3`
/// control points per axis, `r` = control spacing in voxels), coefficients `(3, Cz, Cy, Cx)` in mm.
/// The dense field is the tensor product of the 1-D cubic B-spline bases (three matmuls, so it is
/// differentiable in the coefficients).
#[derive(Clone, Debug)]
pub struct BSpline {
    coeffs: Tensor,
    grid: Grid,
    control_spacing: [f64; 3],
}

impl BSpline {
    /// Number of control points per axis (x, y, z) for `grid` and `control_spacing` mm.
    pub fn control_shape(grid: &Grid, control_spacing: [f64; 3]) -> [usize; 3] {
        let sh = grid.shape();
        let sp = grid.spacing();
        [0, 1, 2].map(|a| {
            let r = control_spacing[a] / sp[a];
            ((sh[a] as f64 - 1.0) / r).ceil().max(0.0) as usize + 3
        })
    }

    /// Zero coefficients. Errors: [`Error::InvalidArgument`] for a control spacing not positive.
    pub fn zeros(grid: Grid, control_spacing: [f64; 3]) -> Result<Self> {
        if control_spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::arg("bspline", format!("control spacing must be positive, got {control_spacing:?}")));
        }
        let [cx, cy, cz] = BSpline::control_shape(&grid, control_spacing);
        let coeffs = Tensor::zeros((3, cz, cy, cx), DType::F32, &crate::device::host())?;
        Ok(BSpline { coeffs, grid, control_spacing })
    }

    /// The same control grid with other coefficients `(3, Cz, Cy, Cx)`. Errors: [`Error::Shape`].
    pub fn with_coeffs(&self, coeffs: Tensor) -> Result<Self> {
        if coeffs.dims() != self.coeffs.dims() {
            return Err(Error::Shape {
                op: "BSpline".into(),
                expected: format!("{:?}", self.coeffs.dims()),
                actual: format!("{:?}", coeffs.dims()),
            });
        }
        Ok(BSpline { coeffs, grid: self.grid.clone(), control_spacing: self.control_spacing })
    }

    /// The coefficients `(3, Cz, Cy, Cx)` in mm.
    pub fn coeffs(&self) -> &Tensor {
        &self.coeffs
    }

    /// The `(n, C)` cubic B-spline basis matrix of axis `a` at the positions `pos[i]` (voxel indices of
    /// the control grid's own image grid along that axis).
    fn basis_at(&self, a: usize, pos: &[f64]) -> Result<Tensor> {
        let n = pos.len();
        let c = BSpline::control_shape(&self.grid, self.control_spacing)[a];
        let r = self.control_spacing[a] / self.grid.spacing()[a];
        let mut b = vec![0f32; n * c];
        for (i, p) in pos.iter().enumerate() {
            let t = p / r + 1.0;
            let j = t.floor();
            let u = t - j;
            let w = [
                (1.0 - u).powi(3) / 6.0,
                (3.0 * u.powi(3) - 6.0 * u * u + 4.0) / 6.0,
                (-3.0 * u.powi(3) + 3.0 * u * u + 3.0 * u + 1.0) / 6.0,
                u.powi(3) / 6.0,
            ];
            for (k, wk) in w.iter().enumerate() {
                let col = j as i64 - 1 + k as i64;
                if col >= 0 && (col as usize) < c {
                    b[i * c + col as usize] = *wk as f32;
                }
            }
        }
        Ok(Tensor::from_vec(b, (n, c), self.coeffs.device())?)
    }

    /// The dense displacement on the grid (differentiable in the coefficients).
    pub fn to_ddf(&self) -> Result<Ddf> {
        self.to_ddf_on(&self.grid.clone())
    }

    /// The dense displacement `(3, Z, Y, X)` evaluated at the voxel centres of `grid`, which must have
    /// the control grid's image grid's direction (so each of its axes maps to one axis of the lattice),
    /// e.g. a pyramid level of it: the same lattice then serves every level. Differentiable in the
    /// coefficients.
    ///
    /// Errors: [`Error::InvalidArgument`] for a grid with another direction.
    pub fn to_ddf_on(&self, grid: &Grid) -> Result<Ddf> {
        if (grid.direction() - self.grid.direction()).abs().max() > 1e-9 {
            return Err(Error::arg("bspline", "the evaluation grid must have the control grid's direction"));
        }
        // Voxel i of `grid` along axis a sits at index s_a * i + o_a of the lattice's image grid.
        let m = self.grid.world_to_voxel() * grid.voxel_to_world();
        let [nx, ny, nz] = grid.shape();
        let pos = |a: usize, n: usize| (0..n).map(|i| m[(a, a)] * i as f64 + m[(a, 3)]).collect::<Vec<_>>();
        let (_, cz, cy, cx) = self.coeffs.dims4()?;
        let (bx, by, bz) =
            (self.basis_at(0, &pos(0, nx))?, self.basis_at(1, &pos(1, ny))?, self.basis_at(2, &pos(2, nz))?);
        let t1 = self.coeffs.reshape((3 * cz * cy, cx))?.matmul(&bx.t()?)?.reshape((3, cz, cy, nx))?;
        let t2 = by.broadcast_matmul(&t1)?; // (3, cz, ny, nx)
        let t3 = bz.broadcast_matmul(&t2.reshape((3, cz, ny * nx))?)?; // (3, nz, ny*nx)
        Ddf::new(t3.reshape((3, nz, ny, nx))?, grid.clone())
    }
}

transform_via_ddf!(BSpline, "bspline", |b| Ok(Arc::new(b.to_ddf()?.invert(50, 1e-4)?)));
