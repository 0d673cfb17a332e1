//! Regularizers of displacement / velocity fields `(3, Z, Y, X)` (mm), with derivatives taken along the
//! voxel axes and divided by the grid spacing (mm), so values are in physical units. Each returns a 0-d
//! tensor, differentiable in the field.

use std::sync::Arc;

use candle_core::Tensor;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::Grid;

/// A regularizer of displacement fields supplied from outside the library (one written in the DSL:
/// `regularizer(|field| ...)`).
pub trait CustomRegularizer: Send + Sync {
    /// The penalty of a displacement field `(3, Z, Y, X)` (mm; x, y, z components, x fastest) on `grid`,
    /// a one-element tensor differentiable in the field.
    ///
    /// Errors: the function's own (a script error is passed on as [`Error::Callback`]).
    fn value(&self, field: &Tensor, grid: &Grid) -> Result<Tensor>;
}

/// A [`CustomRegularizer`] with its name (it serializes and prints as its name).
#[derive(Clone)]
pub struct CustomTerm {
    /// The penalty.
    pub regularizer: Arc<dyn CustomRegularizer>,
    /// Its name in reports.
    pub name: String,
}

impl PartialEq for CustomTerm {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.regularizer), Arc::as_ptr(&other.regularizer))
    }
}

impl std::fmt::Debug for CustomTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomTerm({})", self.name)
    }
}

impl Serialize for CustomTerm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// The regularizer added to the similarity loss of a dense stage (or a network's training loss), each
/// term times its weight.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Regularizer {
    /// Mean squared first derivatives of the field (Wang et al., eq. 8; [`diffusion`]), times the weight.
    Diffusion(f64),
    /// Bending energy (1/mm^2; [`bending_energy`]), times the weight.
    Bending(f64),
    /// Folding penalty (mean `relu(-det J)`; [`folding`]), times the weight.
    Folding(f64),
    /// A regularizer supplied from outside, times the weight.
    Custom(CustomTerm, f64),
    /// The sum of several.
    Sum(Vec<Regularizer>),
}

impl Regularizer {
    /// Parses `diffusion:W` / `bending:W` / `folding:W` (`W` a non-negative weight, default 1; `none` for
    /// no regularizer).
    ///
    /// Errors: an unknown name (with "did you mean") or a bad weight.
    pub fn parse(spec: &str) -> Result<Option<Regularizer>> {
        let (name, w) = spec.split_once(':').unwrap_or((spec, "1"));
        let w: f64 = w
            .trim()
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| Error::arg("regularizer", format!("weight must be a number >= 0, got '{w}'")))?;
        crate::names::lookup(
            "regularizer",
            name.trim(),
            &[
                ("diffusion", Some(Regularizer::Diffusion(w))),
                ("bending", Some(Regularizer::Bending(w))),
                ("folding", Some(Regularizer::Folding(w))),
                ("none", None),
            ],
        )
    }

    /// The same regularizer with every weight times `w`.
    pub fn scaled(&self, w: f64) -> Regularizer {
        match self {
            Regularizer::Diffusion(a) => Regularizer::Diffusion(a * w),
            Regularizer::Bending(a) => Regularizer::Bending(a * w),
            Regularizer::Folding(a) => Regularizer::Folding(a * w),
            Regularizer::Custom(c, a) => Regularizer::Custom(c.clone(), a * w),
            Regularizer::Sum(v) => Regularizer::Sum(v.iter().map(|r| r.scaled(w)).collect()),
        }
    }

    /// `self + other`, flattening sums.
    pub fn plus(&self, other: &Regularizer) -> Regularizer {
        let mut v = Vec::new();
        for r in [self, other] {
            match r {
                Regularizer::Sum(terms) => v.extend(terms.iter().cloned()),
                r => v.push(r.clone()),
            }
        }
        Regularizer::Sum(v)
    }

    /// Whether any term has a non-zero weight.
    pub fn is_active(&self) -> bool {
        match self {
            Regularizer::Diffusion(w)
            | Regularizer::Bending(w)
            | Regularizer::Folding(w)
            | Regularizer::Custom(_, w) => *w != 0.0,
            Regularizer::Sum(v) => v.iter().any(Regularizer::is_active),
        }
    }

    /// The weighted penalty of the displacement field `u` `(3, Z, Y, X)` (mm) on `grid` (a one-element
    /// tensor, differentiable in `u`), or `None` when every weight is 0.
    ///
    /// Errors: a field of the wrong shape; tensor errors; a custom term's errors.
    pub fn term(&self, u: &Tensor, grid: &Grid) -> Result<Option<Tensor>> {
        let (value, w) = match self {
            _ if !self.is_active() => return Ok(None),
            Regularizer::Diffusion(w) => (diffusion(u, grid.spacing())?, *w),
            Regularizer::Bending(w) => (bending_energy(u, grid.spacing())?, *w),
            Regularizer::Folding(w) => (folding(u, grid)?, *w),
            Regularizer::Custom(c, w) => {
                let v = c.regularizer.value(u, grid)?;
                if v.elem_count() != 1 {
                    return Err(Error::Shape {
                        op: c.name.clone(),
                        expected: "a penalty with one element".into(),
                        actual: format!("a tensor of shape {:?}", v.dims()),
                    });
                }
                (v.reshape(())?.to_dtype(u.dtype())?, *w)
            }
            Regularizer::Sum(v) => {
                let mut total: Option<Tensor> = None;
                for r in v {
                    if let Some(t) = r.term(u, grid)? {
                        total = Some(match total {
                            None => t,
                            Some(s) => (s + t)?,
                        });
                    }
                }
                return Ok(total);
            }
        };
        Ok(Some((value * w)?))
    }
}

impl std::fmt::Display for Regularizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let weighted = |f: &mut std::fmt::Formatter<'_>, w: f64, name: &str| {
            if w == 1.0 {
                write!(f, "{name}")
            } else {
                write!(f, "{w} * {name}")
            }
        };
        match self {
            Regularizer::Diffusion(w) => weighted(f, *w, "diffusion"),
            Regularizer::Bending(w) => weighted(f, *w, "bending"),
            Regularizer::Folding(w) => weighted(f, *w, "folding"),
            Regularizer::Custom(c, w) => weighted(f, *w, &c.name),
            Regularizer::Sum(v) => {
                let parts: Vec<String> = v.iter().map(|r| r.to_string()).collect();
                write!(f, "{}", parts.join(" + "))
            }
        }
    }
}

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
