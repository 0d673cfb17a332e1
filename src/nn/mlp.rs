//! Fully connected heads: candle_nn's `Linear` (re-exported) and a multi-layer perceptron of them with
//! Leaky ReLU between layers.

use candle_core::{Module, Tensor};
pub use candle_nn::{linear, Linear};
use candle_nn::{Init, VarBuilder};

use super::activation::LeakyRelu;
use crate::error::{Error, Result};

/// A multi-layer perceptron `(N, dims[0]) -> (N, dims[last])`: `Linear` layers `l0, l1, ...` with a
/// Leaky ReLU after every layer but the last (which is linear, so a head can be scaled or bounded by
/// its caller).
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    act: LeakyRelu,
}

impl Mlp {
    /// The layers, input side first: weight `(out, in)`, bias `(out)`.
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = self.act.forward(&h)?;
            }
        }
        Ok(h)
    }
}

/// An [`Mlp`] with layer widths `dims` (at least two: input and output), parameters `l{i}.weight` /
/// `l{i}.bias` under `vb` (candle_nn's `linear` initialisation), Leaky ReLU slope `slope` between layers.
///
/// Errors: fewer than two widths, a zero width, a non-finite slope; the backend's.
pub fn mlp(dims: &[usize], slope: f64, vb: VarBuilder) -> Result<Mlp> {
    if dims.len() < 2 || dims.contains(&0) {
        return Err(Error::arg("mlp", format!("need at least two positive widths, got {dims:?}")));
    }
    let act = LeakyRelu::new(slope)?;
    let layers = dims
        .windows(2)
        .enumerate()
        .map(|(i, w)| linear(w[0], w[1], vb.pp(format!("l{i}"))))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Mlp { layers, act })
}

/// An [`Mlp`] as [`mlp`], but with the last layer's weight drawn from `final_init` and its bias zero, so a
/// head can start at (or near) a chosen output: with a tiny `final_init` every output starts at about
/// 0 while gradients still reach every layer (an all-zero last layer would block them at the first step).
///
/// Errors: as [`mlp`].
pub fn mlp_with_final_init(dims: &[usize], slope: f64, final_init: Init, vb: VarBuilder) -> Result<Mlp> {
    if dims.len() < 2 || dims.contains(&0) {
        return Err(Error::arg("mlp", format!("need at least two positive widths, got {dims:?}")));
    }
    let act = LeakyRelu::new(slope)?;
    let last = dims.len() - 2;
    let mut layers = Vec::with_capacity(last + 1);
    for (i, w) in dims.windows(2).enumerate() {
        let vbi = vb.pp(format!("l{i}"));
        layers.push(if i == last {
            let weight = vbi.get_with_hints((w[1], w[0]), "weight", final_init)?;
            let bias = vbi.get_with_hints(w[1], "bias", Init::Const(0.0))?;
            Linear::new(weight, Some(bias))
        } else {
            linear(w[0], w[1], vbi)?
        });
    }
    Ok(Mlp { layers, act })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn mlp_is_linear_after_the_last_layer() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = mlp(&[3, 4, 2], 0.2, vb).unwrap();
        assert_eq!(m.layers().len(), 2);
        assert_eq!(vm.all_vars().len(), 4);
        // set weights by hand: l0 = identity-like (4x3) with bias -1, l1 sums
        let set = |name: &str, v: Vec<f32>, shape: &[usize]| {
            vm.data().lock().unwrap()[name].set(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap();
        };
        set("l0.weight", vec![1., 0., 0., 0., 1., 0., 0., 0., 1., 0., 0., 0.], &[4, 3]);
        set("l0.bias", vec![-1.0; 4], &[4]);
        set("l1.weight", vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, -2.0], &[2, 4]);
        set("l1.bias", vec![0.0, 0.5], &[2]);
        let x = Tensor::from_vec(vec![3f32, 0.0, 1.0], (1, 3), &Device::Cpu).unwrap();
        // hidden: [2, -1, 0, -1] -> leaky [2, -0.2, 0, -0.2]; out: [1.6, 0.4 + 0.5]
        let y = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!((y[0][0] - 1.6).abs() < 1e-6 && (y[0][1] - 0.9).abs() < 1e-6, "{y:?}");
        assert!(mlp(&[3], 0.2, VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err());
    }
}
