//! Activations from differentiable candle ops.

use candle_core::{Module, Tensor};

use crate::error::{Error, Result};

/// Leaky ReLU: `x` where `x > 0`, `slope * x` elsewhere, elementwise, any shape. Built with
/// `where_cond`, so the gradient is 1 for `x > 0` and `slope` for `x <= 0` (PyTorch's convention at 0).
///
/// Errors: the backend's (a non-float tensor).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    Ok(x.gt(0.0)?.where_cond(x, &(x * slope)?)?)
}

/// The Leaky ReLU layer (no parameters); VoxelMorph and Wang et al. use `slope = 0.2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakyRelu {
    /// The factor applied to non-positive inputs.
    pub slope: f64,
}

impl LeakyRelu {
    /// A Leaky ReLU with negative-side slope `slope` (finite; usually in `[0, 1)`).
    ///
    /// Errors: a non-finite slope.
    pub fn new(slope: f64) -> Result<Self> {
        if !slope.is_finite() {
            return Err(Error::arg("leaky_relu", format!("slope must be finite, got {slope}")));
        }
        Ok(LeakyRelu { slope })
    }
}

impl Default for LeakyRelu {
    /// Slope 0.2 (VoxelMorph).
    fn default() -> Self {
        LeakyRelu { slope: 0.2 }
    }
}

impl Module for LeakyRelu {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.gt(0.0)?.where_cond(x, &(x * self.slope)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn leaky_relu_values_and_gradients() {
        let x = Var::from_vec(vec![-2f32, -0.5, 0.0, 0.5, 3.0], 5, &Device::Cpu).unwrap();
        let y = LeakyRelu::default().forward(&x).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [-0.4, -0.1, 0.0, 0.5, 3.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec1::<f32>().unwrap(), [0.2, 0.2, 0.2, 1.0, 1.0]);
        assert_eq!(leaky_relu(&x, 0.1).unwrap().to_vec1::<f32>().unwrap()[0], -0.2);
        assert!(LeakyRelu::new(f64::NAN).is_err());
    }
}
