//! Adapters from candle losses to the flat-vector objectives of [`lbfgs`](fn@super::lbfgs) and [`powell`](fn@super::powell),
//! and per-parameter scales from physical shifts.
//!
//! A parameter tensor of any shape and float dtype (F16, BF16, F32, F64) on any device is flattened
//! row-major into `Vec<f64>`; the adapters rebuild a tensor of the template's shape, dtype and device
//! from the flat values at each evaluation. The gradient comes from candle's `backward()` through a
//! [`Var`] made of those values.

use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};
use crate::image::Grid;
use crate::spatial::{Linear, Transform};

/// The values of `t` (any shape, any dtype) as a flat row-major `Vec<f64>`.
///
/// Errors: tensor errors.
pub fn flatten(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// A tensor of `template`'s shape, dtype and device holding `x` (row-major).
///
/// Errors: [`Error::Shape`] when `x` does not have one value per element of `template`; an integer
/// template dtype ([`Error::InvalidArgument`]); tensor errors.
pub fn unflatten(x: &[f64], template: &Tensor) -> Result<Tensor> {
    if x.len() != template.elem_count() {
        return Err(Error::Shape {
            op: "parameters".into(),
            expected: format!("{} values for a tensor of shape {:?}", template.elem_count(), template.dims()),
            actual: format!("{} values", x.len()),
        });
    }
    if !template.dtype().is_float() {
        return Err(Error::arg("parameters", format!("must be a float tensor, got {:?}", template.dtype())));
    }
    Ok(Tensor::from_slice(x, template.shape(), template.device())?.to_dtype(template.dtype())?)
}

/// The value of a loss tensor with a single element, as f64.
///
/// Errors: [`Error::Shape`] for a tensor of several (or no) elements.
pub(crate) fn scalar(loss: &Tensor) -> Result<f64> {
    if loss.elem_count() != 1 {
        return Err(Error::Shape {
            op: "objective".into(),
            expected: "a loss of one value".into(),
            actual: format!("{:?}", loss.dims()),
        });
    }
    Ok(loss.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0])
}

/// Wraps a differentiable candle loss as the objective of [`lbfgs`](fn@super::lbfgs): at each flat parameter
/// vector `x`, builds a [`Var`] of `template`'s shape, dtype and device, computes `f(var)` (a loss with
/// one element), and returns its value and its gradient with respect to the parameters (flattened
/// row-major, as f64) by `backward()`.
///
/// The returned closure errors with [`Error::Shape`] for an `x` of the wrong length or a loss with
/// several elements, with [`Error::InvalidArgument`] when no gradient reaches the parameters (the loss
/// does not depend on them, or the graph was detached), and with the errors of `f`.
pub fn tensor_objective<F>(template: &Tensor, mut f: F) -> impl FnMut(&[f64]) -> Result<(f64, Vec<f64>)>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    let template = template.detach();
    move |x: &[f64]| {
        let var = Var::from_tensor(&unflatten(x, &template)?)?;
        let loss = f(var.as_tensor())?;
        let value = scalar(&loss)?;
        let grads = loss.backward()?;
        let grad = grads.get(var.as_tensor()).ok_or_else(|| {
            Error::arg(
                "objective",
                "no gradient reached the parameters: the loss does not depend on them (or was detached)",
            )
        })?;
        Ok((value, flatten(grad)?))
    }
}

/// Wraps a candle loss evaluated forward only (no gradient) as the objective of [`powell`](fn@super::powell): at
/// each flat parameter vector, builds a tensor of `template`'s shape, dtype and device and returns the
/// value of `f` on it (a loss with one element).
///
/// The returned closure errors with [`Error::Shape`] for an `x` of the wrong length or a loss with
/// several elements, and with the errors of `f`.
pub fn tensor_value<F>(template: &Tensor, mut f: F) -> impl FnMut(&[f64]) -> Result<f64>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    let template = template.detach();
    move |x: &[f64]| scalar(&f(&unflatten(x, &template)?)?)
}

/// Per-parameter scales of a linear transform from physical shifts (as ITK's
/// `RegistrationParameterScalesFromPhysicalShift`): for each parameter, the largest displacement (mm) of
/// the corners of `grid` per unit change of that parameter about the transform's current value, and the
/// scale that makes one unit of search move those corners by `shift_mm`. With these scales a step of 1
/// in any parameter moves the image by about `shift_mm` at most, whether the parameter is in mm or
/// radians.
///
/// - Returns one scale per parameter (`shift_mm / (mm per unit)`), in the parameter order of the kind.
///
/// Errors: `shift_mm` not finite and > 0; a parameter that moves no corner (a degenerate grid);
/// tensor errors.
pub fn physical_shift_scales(transform: &Linear, grid: &Grid, shift_mm: f64) -> Result<Vec<f64>> {
    if !(shift_mm.is_finite() && shift_mm > 0.0) {
        return Err(Error::arg("physical_shift_scales", format!("shift must be > 0 mm, got {shift_mm}")));
    }
    let p0 = transform.param_values()?;
    let corners = grid.corners();
    let matrix = |p: &[f64]| -> Result<nalgebra::Matrix4<f64>> {
        let t = Linear::from_params(transform.kind(), p, transform.centre())?;
        t.linear_matrix()?.ok_or_else(|| Error::arg("physical_shift_scales", "not a linear transform"))
    };
    (0..p0.len())
        .map(|i| {
            // Central difference; the step is large enough for the f32 parameters, and the map is
            // (nearly) linear in each parameter over it.
            let h = 1e-3;
            let (mut plus, mut minus) = (p0.clone(), p0.clone());
            plus[i] += h;
            minus[i] -= h;
            let (mp, mm) = (matrix(&plus)?, matrix(&minus)?);
            let per_unit = corners
                .iter()
                .map(|c| {
                    let v = nalgebra::Vector4::new(c[0], c[1], c[2], 1.0);
                    ((mp - mm) * v).xyz().norm() / (2.0 * h)
                })
                .fold(0.0, f64::max);
            if per_unit.is_nan() || per_unit <= 1e-9 {
                return Err(Error::arg(
                    "physical_shift_scales",
                    format!("parameter {i} does not move the grid's corners"),
                ));
            }
            Ok(shift_mm / per_unit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spatial::LinearKind;
    use candle_core::Device;

    #[test]
    fn gradient_of_a_quadratic_in_any_shape_and_dtype() {
        // f(P) = sum(P^2 * w) over a (2, 3) parameter tensor: df/dP = 2 P w.
        for dtype in [DType::F32, DType::F64] {
            let template = Tensor::zeros((2, 3), dtype, &Device::Cpu).unwrap();
            let w = Tensor::arange(1f32, 7.0, &Device::Cpu).unwrap().reshape((2, 3)).unwrap().to_dtype(dtype).unwrap();
            let mut obj = tensor_objective(&template, |p: &Tensor| Ok(p.sqr()?.mul(&w)?.sum_all()?));
            let x = [1.0, -2.0, 0.5, 0.0, 3.0, -1.0];
            let (v, g) = obj(&x).unwrap();
            let want: f64 = x.iter().enumerate().map(|(i, a)| a * a * (i + 1) as f64).sum();
            assert!((v - want).abs() < 1e-5, "{dtype:?}: {v} vs {want}");
            for (i, (gi, a)) in g.iter().zip(x).enumerate() {
                assert!((gi - 2.0 * a * (i + 1) as f64).abs() < 1e-5, "{dtype:?}: grad {i} = {gi}");
            }
            let mut val = tensor_value(&template, |p: &Tensor| Ok(p.sqr()?.mul(&w)?.sum_all()?));
            assert!((val(&x).unwrap() - want).abs() < 1e-5);
            assert!(obj(&x[..5]).is_err());
        }
    }

    #[test]
    fn a_loss_without_the_parameters_is_an_error() {
        let template = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let mut obj = tensor_objective(&template, |p: &Tensor| Ok(p.detach().sum_all()?));
        assert!(obj(&[1.0, 2.0, 3.0]).is_err());
    }

    #[test]
    fn physical_shift_scales_of_a_rigid_transform() {
        // A cube of 101 voxels of 1 mm centred on the origin: corners at +-50.5 mm. A translation moves
        // every corner by 1 mm per mm; a rotation about x moves a corner by its distance from the x axis
        // (sqrt(2) * 50.5 mm) per radian.
        let grid = Grid::new([101, 101, 101], [1.0; 3], [-50.0; 3], nalgebra::Matrix3::identity()).unwrap();
        let t = Linear::identity(LinearKind::Rigid, [0.0; 3]);
        let s = physical_shift_scales(&t, &grid, 2.0).unwrap();
        for (i, want) in
            [2.0, 2.0, 2.0, 2.0 / (50.5 * 2f64.sqrt()), 2.0 / (50.5 * 2f64.sqrt()), 2.0 / (50.5 * 2f64.sqrt())]
                .iter()
                .enumerate()
        {
            assert!((s[i] - want).abs() < 1e-3 * want, "scale {i}: {} vs {want}", s[i]);
        }
    }
}
