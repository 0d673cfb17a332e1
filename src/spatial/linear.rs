//! Linear (affine-family) transforms about a centre, with parameters in a tensor.
//!
//! Every kind maps a world point `x` (mm) to `x' = M (x - c) + c + t`, where `c` is the centre (by default
//! the fixed image's centre) and
//!
//! `M = Sh * S * R`, `R = Rz(rz) * Ry(ry) * Rx(rx)` (rotations in radians about the world x, y, z axes,
//! x applied first), `S = diag(sx, sy, sz)`, `Sh = [[1, hxy, hxz], [0, 1, hyz], [0, 0, 1]]`.
//!
//! This is the 12-parameter form of Chen et al. 2024 (PET/CT affine) (3 translations, 3 rotations, 3 scalings, 3 shears), in the
//! order TransMorph-affine composes them (shear, scale, then rotation applied first to the point).
//!
//! | kind | parameter vector |
//! |---|---|
//! | `Translation` | `[tx, ty, tz]` mm |
//! | `Rigid` | `[tx, ty, tz, rx, ry, rz]` |
//! | `Similarity` | `[tx, ty, tz, rx, ry, rz, s]` (isotropic scale) |
//! | `Affine` | `[tx, ty, tz, rx, ry, rz, sx, sy, sz, hxy, hxz, hyz]` |
//! | `Matrix` | the 12 entries of `[M | t]`, row-major (`x' = M (x - c) + c + t`) |

use std::sync::Arc;

use candle_core::{DType, Tensor};
use nalgebra::{Matrix3, Matrix4, Vector3};

use super::{apply_matrix, matrix34, matrix44_of, Transform};
use crate::error::{Error, Result};
use crate::names;

/// The kinds of linear transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearKind {
    Translation,
    Rigid,
    Similarity,
    Affine,
    Matrix,
}

impl LinearKind {
    /// Number of parameters.
    pub fn num_params(self) -> usize {
        match self {
            LinearKind::Translation => 3,
            LinearKind::Rigid => 6,
            LinearKind::Similarity => 7,
            LinearKind::Affine | LinearKind::Matrix => 12,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            LinearKind::Translation => "translation",
            LinearKind::Rigid => "rigid",
            LinearKind::Similarity => "similarity",
            LinearKind::Affine => "affine",
            LinearKind::Matrix => "matrix",
        }
    }

    /// Parses a kind name (with "did you mean").
    pub fn parse(name: &str) -> Result<Self> {
        names::lookup(
            "linear transform",
            name,
            &[
                ("translation", LinearKind::Translation),
                ("rigid", LinearKind::Rigid),
                ("euler", LinearKind::Rigid),
                ("similarity", LinearKind::Similarity),
                ("affine", LinearKind::Affine),
                ("matrix", LinearKind::Matrix),
            ],
        )
    }

    /// The identity parameters.
    pub fn identity_params(self) -> Vec<f32> {
        match self {
            LinearKind::Translation => vec![0.0; 3],
            LinearKind::Rigid => vec![0.0; 6],
            LinearKind::Similarity => vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            LinearKind::Affine => vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
            LinearKind::Matrix => vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        }
    }
}

/// A linear transform about a centre. See the module documentation for the parameterization.
#[derive(Clone, Debug)]
pub struct Linear {
    kind: LinearKind,
    /// `(n,)` f32 parameters; may be a `Var`'s tensor, so gradients reach it.
    params: Tensor,
    /// Centre of rotation / scaling in world mm.
    centre: [f64; 3],
}

impl Linear {
    /// A transform of `kind` from a parameter tensor `(n,)`.
    ///
    /// Errors: [`Error::Shape`] when the tensor is not `(n,)` for the kind; a non-f32 tensor.
    pub fn new(kind: LinearKind, params: Tensor, centre: [f64; 3]) -> Result<Self> {
        if params.dims() != [kind.num_params()] {
            return Err(Error::Shape {
                op: format!("{} transform", kind.name()),
                expected: format!("({},)", kind.num_params()),
                actual: format!("{:?}", params.dims()),
            });
        }
        let params = if params.dtype() == DType::F32 { params } else { params.to_dtype(DType::F32)? };
        if centre.iter().any(|c| !c.is_finite()) {
            return Err(Error::arg(
                format!("{} transform", kind.name()),
                format!("centre must be finite, got {centre:?}"),
            ));
        }
        Ok(Linear { kind, params, centre })
    }

    /// The identity of `kind` about `centre`.
    pub fn identity(kind: LinearKind, centre: [f64; 3]) -> Self {
        let p = kind.identity_params();
        let n = p.len();
        // Infallible: the vector has the kind's length.
        let t = Tensor::from_vec(p, n, &crate::device::host()).unwrap_or_else(|_| unreachable!());
        Linear { kind, params: t, centre }
    }

    /// A transform of `kind` from parameter values. Errors: a wrong count; a non-finite (or absurdly large)
    /// value.
    pub fn from_params(kind: LinearKind, params: &[f64], centre: [f64; 3]) -> Result<Self> {
        if let Some(v) = params.iter().find(|v| !v.is_finite() || v.abs() > 1e12) {
            return Err(Error::arg(
                format!("{} transform", kind.name()),
                format!("parameter {v} is not a finite value"),
            ));
        }
        let v: Vec<f32> = params.iter().map(|&x| x as f32).collect();
        let n = v.len();
        Linear::new(kind, Tensor::from_vec(v, n, &crate::device::host())?, centre)
    }

    /// A pure translation by `t` mm.
    pub fn translation(t: [f64; 3]) -> Self {
        // Infallible: three values.
        Linear::from_params(LinearKind::Translation, &t, [0.0; 3]).unwrap_or_else(|_| unreachable!())
    }

    /// The kind.
    pub fn kind(&self) -> LinearKind {
        self.kind
    }
    /// The parameter tensor `(n,)`.
    pub fn params(&self) -> &Tensor {
        &self.params
    }
    /// The centre (mm).
    pub fn centre(&self) -> [f64; 3] {
        self.centre
    }
    /// The parameter values.
    pub fn param_values(&self) -> Result<Vec<f64>> {
        Ok(self.params.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    /// The same transform with other parameters (e.g. a `Var` being optimized). Errors: as [`Linear::new`].
    pub fn with_params(&self, params: Tensor) -> Result<Self> {
        Linear::new(self.kind, params, self.centre)
    }

    /// The parameters carried into `kind` (a prefix of the 12-parameter form, identity for the rest; a
    /// similarity's one scale on all three axes of an affine), about the same centre: a rigid result
    /// promoted to affine, or the rigid part of an affine. Not for [`LinearKind::Matrix`], whose
    /// parameters are matrix entries.
    ///
    /// Errors: as [`Linear::from_params`].
    pub fn with_kind(&self, kind: LinearKind) -> Result<Self> {
        let p = self.param_values()?;
        let mut q: Vec<f64> = kind.identity_params().iter().map(|&v| v as f64).collect();
        let keep = p.len().min(q.len());
        q[..keep].copy_from_slice(&p[..keep]);
        if self.kind == LinearKind::Similarity && kind == LinearKind::Affine {
            q[6..9].copy_from_slice(&[p[6]; 3]);
        }
        Linear::from_params(kind, &q, self.centre)
    }

    /// The differentiable `(3, 4)` world matrix `[M | c + t - M c]`.
    pub fn matrix(&self) -> Result<Tensor> {
        let dev = self.params.device();
        let p = &self.params;
        let s = |i: usize| p.narrow(0, i, 1);
        let zero = Tensor::zeros(1, DType::F32, dev)?;
        let one = Tensor::ones(1, DType::F32, dev)?;
        let t = p.narrow(0, 0, 3)?.reshape((3, 1))?;
        let m = match self.kind {
            LinearKind::Translation => Tensor::eye(3, DType::F32, dev)?,
            LinearKind::Matrix => {
                let a = p.reshape((3, 4))?;
                let c = Tensor::from_vec(self.centre.map(|v| v as f32).to_vec(), (3, 1), dev)?;
                let m = a.narrow(1, 0, 3)?;
                let tt = a.narrow(1, 3, 1)?;
                let off = ((&c + tt)? - m.matmul(&c)?)?;
                return Ok(Tensor::cat(&[&m, &off], 1)?);
            }
            _ => {
                let (rx, ry, rz) = (s(3)?, s(4)?, s(5)?);
                let (cx, sx) = (rx.cos()?, rx.sin()?);
                let (cy, sy) = (ry.cos()?, ry.sin()?);
                let (cz, sz) = (rz.cos()?, rz.sin()?);
                let mat3 = |e: [&Tensor; 9]| -> Result<Tensor> { Ok(Tensor::cat(&e, 0)?.reshape((3, 3))?) };
                let nsx = sx.neg()?;
                let nsy = sy.neg()?;
                let nsz = sz.neg()?;
                let rot_x = mat3([&one, &zero, &zero, &zero, &cx, &nsx, &zero, &sx, &cx])?;
                let rot_y = mat3([&cy, &zero, &sy, &zero, &one, &zero, &nsy, &zero, &cy])?;
                let rot_z = mat3([&cz, &nsz, &zero, &sz, &cz, &zero, &zero, &zero, &one])?;
                let r = rot_z.matmul(&rot_y)?.matmul(&rot_x)?;
                match self.kind {
                    LinearKind::Rigid => r,
                    LinearKind::Similarity => r.broadcast_mul(&s(6)?)?,
                    _ => {
                        let (scx, scy, scz) = (s(6)?, s(7)?, s(8)?);
                        let (hxy, hxz, hyz) = (s(9)?, s(10)?, s(11)?);
                        let sc = mat3([&scx, &zero, &zero, &zero, &scy, &zero, &zero, &zero, &scz])?;
                        let sh = mat3([&one, &hxy, &hxz, &zero, &one, &hyz, &zero, &zero, &one])?;
                        sh.matmul(&sc)?.matmul(&r)?
                    }
                }
            }
        };
        let c = Tensor::from_vec(self.centre.map(|v| v as f32).to_vec(), (3, 1), dev)?;
        let off = ((&c + t)? - m.matmul(&c)?)?;
        Ok(Tensor::cat(&[&m, &off], 1)?)
    }

    /// The transform of `kind` about `centre` equal to the 4x4 world matrix `m`.
    ///
    /// `Affine` decomposes `M = Sh S R` (an upper-triangular factor by Cholesky of `M M^T`, then Euler
    /// angles of `R`; a reflection gives a negative `sx`); `Matrix` stores it as it is; the other kinds
    /// accept only matrices they can represent (within 1e-6).
    ///
    /// Errors: [`Error::InvalidArgument`] for a singular matrix or one the kind cannot represent.
    pub fn from_matrix(kind: LinearKind, m: &Matrix4<f64>, centre: [f64; 3]) -> Result<Self> {
        if m.iter().any(|v| !v.is_finite()) {
            return Err(Error::arg("linear transform", "the matrix has non-finite entries"));
        }
        let a: Matrix3<f64> = m.fixed_view::<3, 3>(0, 0).into();
        let b = Vector3::new(m[(0, 3)], m[(1, 3)], m[(2, 3)]);
        let c = Vector3::from(centre);
        let t = b - c + a * c;
        if kind == LinearKind::Matrix {
            let mut p = Vec::with_capacity(12);
            for r in 0..3 {
                p.extend_from_slice(&[a[(r, 0)], a[(r, 1)], a[(r, 2)], t[r]]);
            }
            return Linear::from_params(kind, &p, centre);
        }
        let params = decompose(&a).ok_or_else(|| Error::arg("linear transform", "the matrix is singular"))?;
        let mut p = vec![t[0], t[1], t[2]];
        p.extend_from_slice(&params);
        let aff = Linear::from_params(LinearKind::Affine, &p, centre)?;
        let reduced = match kind {
            LinearKind::Affine => return Ok(aff),
            LinearKind::Translation => p[..3].to_vec(),
            LinearKind::Rigid => p[..6].to_vec(),
            LinearKind::Similarity => {
                let mut q = p[..6].to_vec();
                q.push(p[6]);
                q
            }
            LinearKind::Matrix => unreachable!(),
        };
        let out = Linear::from_params(kind, &reduced, centre)?;
        let back = out.linear_matrix()?.unwrap_or_else(Matrix4::identity);
        if (back - m).iter().any(|d| d.abs() > 1e-6 * (1.0 + m.abs().max())) {
            return Err(Error::arg("linear transform", format!("the matrix is not a {} transform", kind.name())));
        }
        Ok(out)
    }
}

/// `[rx, ry, rz, sx, sy, sz, hxy, hxz, hyz]` with `A = Sh S Rz Ry Rx`; `None` when `A` is singular.
fn decompose(a: &Matrix3<f64>) -> Option<[f64; 9]> {
    // A A^T = U U^T with U = Sh S upper triangular: Cholesky of the reversed matrix gives it.
    let g = a * a.transpose();
    let p = Matrix3::new(0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0);
    let l = (p * g * p).cholesky()?.l();
    let mut u = p * l * p;
    let mut r = u.try_inverse()? * a;
    if r.determinant() < 0.0 {
        // A reflection: carry it in sx.
        let f = Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, 1.0));
        u *= f;
        r = f * r;
    }
    let s = [u[(0, 0)], u[(1, 1)], u[(2, 2)]];
    let (hxy, hxz, hyz) = (u[(0, 1)] / s[1], u[(0, 2)] / s[2], u[(1, 2)] / s[2]);
    // R = Rz Ry Rx: R[2][0] = -sin(ry), R[2][1] = cos(ry) sin(rx), R[2][2] = cos(ry) cos(rx),
    // R[1][0] = sin(rz) cos(ry), R[0][0] = cos(rz) cos(ry).
    let ry = (-r[(2, 0)]).clamp(-1.0, 1.0).asin();
    let rx = r[(2, 1)].atan2(r[(2, 2)]);
    let rz = r[(1, 0)].atan2(r[(0, 0)]);
    Some([rx, ry, rz, s[0], s[1], s[2], hxy, hxz, hyz])
}

impl Transform for Linear {
    fn name(&self) -> String {
        self.kind.name().into()
    }

    fn map_points(&self, points: &Tensor) -> Result<Tensor> {
        apply_matrix(&self.matrix()?.to_device(points.device())?, points)
    }

    fn linear_matrix(&self) -> Result<Option<Matrix4<f64>>> {
        Ok(Some(matrix44_of(&self.matrix()?)?))
    }

    fn matrix_tensor(&self) -> Result<Option<Tensor>> {
        Ok(Some(self.matrix()?))
    }

    fn inverse(&self) -> Result<Arc<dyn Transform>> {
        let m = matrix44_of(&self.matrix()?)?;
        let inv = m.try_inverse().ok_or_else(|| Error::arg("inverse", "the linear transform is singular"))?;
        let kind = if self.kind == LinearKind::Affine { LinearKind::Matrix } else { self.kind };
        let out = Linear::from_matrix(kind, &inv, self.centre)
            .or_else(|_| Linear::from_matrix(LinearKind::Matrix, &inv, self.centre))?;
        Ok(Arc::new(out))
    }
}

/// A linear transform straight from a 4x4 world matrix (kind `Matrix`, centre 0).
pub fn from_world_matrix(m: &Matrix4<f64>) -> Result<Linear> {
    Linear::from_matrix(LinearKind::Matrix, m, [0.0; 3])
}

/// The `(3, 4)` tensor of a 4x4 matrix (re-exported for callers that build matrices by hand).
pub fn tensor_of(m: &Matrix4<f64>) -> Result<Tensor> {
    matrix34(m, &crate::device::host())
}

/// The 4x4 world matrix of a linear transform of `kind` with parameters `params` about `centre` (see the
/// module documentation), in f64, and its derivative with respect to each parameter (one 4x4 matrix
/// per parameter, bottom row 0): what [`Linear::matrix`] computes, without tensors, for optimizers that
/// keep the parameters in f64.
///
/// Errors: [`Error::Shape`] for a parameter count that is not the kind's.
pub fn linear_matrix_f64(
    kind: LinearKind,
    params: &[f64],
    centre: [f64; 3],
) -> Result<(Matrix4<f64>, Vec<Matrix4<f64>>)> {
    if params.len() != kind.num_params() {
        return Err(Error::Shape {
            op: format!("{} transform", kind.name()),
            expected: format!("({},)", kind.num_params()),
            actual: format!("({},)", params.len()),
        });
    }
    let c = Vector3::from(centre);
    // dM / dp for every parameter (zero for translations), then the full matrix.
    let zero = Matrix3::zeros();
    let (m, dm): (Matrix3<f64>, Vec<Matrix3<f64>>) = match kind {
        LinearKind::Translation => (Matrix3::identity(), vec![zero; 3]),
        LinearKind::Matrix => {
            let m = Matrix3::from_fn(|r, col| params[4 * r + col]);
            let dm = (0..12)
                .map(|i| {
                    let (r, col) = (i / 4, i % 4);
                    let mut d = zero;
                    if col < 3 {
                        d[(r, col)] = 1.0;
                    }
                    d
                })
                .collect();
            (m, dm)
        }
        _ => {
            let (rx, ry, rz) = (params[3], params[4], params[5]);
            let (cx, sx, cy, sy, cz, sz) = (rx.cos(), rx.sin(), ry.cos(), ry.sin(), rz.cos(), rz.sin());
            let mx = Matrix3::new(1.0, 0.0, 0.0, 0.0, cx, -sx, 0.0, sx, cx);
            let my = Matrix3::new(cy, 0.0, sy, 0.0, 1.0, 0.0, -sy, 0.0, cy);
            let mz = Matrix3::new(cz, -sz, 0.0, sz, cz, 0.0, 0.0, 0.0, 1.0);
            let dx = Matrix3::new(0.0, 0.0, 0.0, 0.0, -sx, -cx, 0.0, cx, -sx);
            let dy = Matrix3::new(-sy, 0.0, cy, 0.0, 0.0, 0.0, -cy, 0.0, -sy);
            let dz = Matrix3::new(-sz, -cz, 0.0, cz, -sz, 0.0, 0.0, 0.0, 0.0);
            let r = mz * my * mx;
            let dr = [mz * my * dx, mz * dy * mx, dz * my * mx];
            match kind {
                LinearKind::Rigid => (r, vec![zero, zero, zero, dr[0], dr[1], dr[2]]),
                LinearKind::Similarity => {
                    let s = params[6];
                    (r * s, vec![zero, zero, zero, dr[0] * s, dr[1] * s, dr[2] * s, r])
                }
                _ => {
                    let sc = Matrix3::from_diagonal(&Vector3::new(params[6], params[7], params[8]));
                    let sh = Matrix3::new(1.0, params[9], params[10], 0.0, 1.0, params[11], 0.0, 0.0, 1.0);
                    let unit = |r: usize, col: usize| {
                        let mut d = zero;
                        d[(r, col)] = 1.0;
                        d
                    };
                    let mut dm = vec![zero, zero, zero];
                    dm.extend(dr.iter().map(|d| sh * sc * d));
                    dm.extend((0..3).map(|a| sh * unit(a, a) * r));
                    dm.extend([(0, 1), (0, 2), (1, 2)].map(|(i, j)| unit(i, j) * sc * r));
                    (sh * sc * r, dm)
                }
            }
        }
    };
    let t = match kind {
        LinearKind::Matrix => Vector3::new(params[3], params[7], params[11]),
        _ => Vector3::new(params[0], params[1], params[2]),
    };
    let full = |m: &Matrix3<f64>, off: &Vector3<f64>, bottom: f64| {
        let mut out = Matrix4::zeros();
        out.fixed_view_mut::<3, 3>(0, 0).copy_from(m);
        out.fixed_view_mut::<3, 1>(0, 3).copy_from(off);
        out[(3, 3)] = bottom;
        out
    };
    let value = full(&m, &(c + t - m * c), 1.0);
    let grads = dm
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let is_t = match kind {
                LinearKind::Matrix => i % 4 == 3,
                _ => i < 3,
            };
            let mut off = -(d * c);
            if is_t {
                off[if kind == LinearKind::Matrix { i / 4 } else { i }] += 1.0;
            }
            full(d, &off, 0.0)
        })
        .collect();
    Ok((value, grads))
}
