//! Group and instance normalization of `(N, C, D, H, W)` volumes, from differentiable tensor ops (mean,
//! biased variance, broadcast arithmetic), so gradients reach the input, the scale and the shift.
//! candle_nn's fused `LayerNorm` / `RmsNorm` kernels cut gradients silently; nothing here uses them.
//!
//! Source: Wu & He, "Group Normalization" (ECCV 2018); Ulyanov et al., "Instance Normalization" (2016);
//! the same definitions as PyTorch's `GroupNorm` / `InstanceNorm3d` (biased variance, `eps` inside the
//! square root).

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

use super::to_candle;
use crate::error::{Error, Result};

/// Normalizes `x` `(N, C, ...)` over each of `groups` groups of `C / groups` consecutive channels and all
/// spatial positions: `(x - mean) / sqrt(var + eps)` with the biased variance. Same shape as `x`.
/// `groups = C` is instance normalization, `groups = 1` layer normalization over `(C, ...)`.
///
/// Errors: a tensor of rank below 3 or with no elements ([`Error::Shape`]); `groups` zero or not
/// dividing `C`, or a negative or non-finite `eps` ([`Error::InvalidArgument`]).
pub fn group_normalize(x: &Tensor, groups: usize, eps: f64) -> Result<Tensor> {
    let d = x.dims();
    if d.len() < 3 || d.contains(&0) {
        return Err(Error::Shape {
            op: "group_norm".into(),
            expected: "a non-empty (N, C, spatial...) tensor".into(),
            actual: format!("{d:?}"),
        });
    }
    let (n, c) = (d[0], d[1]);
    if groups == 0 || c % groups != 0 {
        return Err(Error::arg("group_norm", format!("{groups} groups do not divide {c} channels")));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::arg("group_norm", format!("eps must be finite and >= 0, got {eps}")));
    }
    let g = x.contiguous()?.reshape((n, groups, ()))?;
    let mean = g.mean_keepdim(2)?;
    let centred = g.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(2)?;
    Ok(centred.broadcast_div(&(var + eps)?.sqrt()?)?.reshape(d)?)
}

/// `x * weight[c] + bias[c]` per channel of `x` `(N, C, ...)`.
fn affine(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; x.rank()];
    shape[1] = x.dim(1)?;
    Ok(x.broadcast_mul(&weight.reshape(shape.clone())?)?.broadcast_add(&bias.reshape(shape)?)?)
}

/// Group normalization with a learned per-channel scale `weight` `(C)` and shift `bias` `(C)`; maps
/// `(N, C, D, H, W)` (or any `(N, C, ...)`) to the same shape: [`group_normalize`], then the affine map.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        (|| {
            let c = x.dims().get(1).copied().unwrap_or(0);
            if c != self.weight.dim(0)? {
                return Err(Error::Shape {
                    op: "group_norm".into(),
                    expected: format!("{} channels", self.weight.dim(0)?),
                    actual: format!("{:?}", x.dims()),
                });
            }
            affine(&group_normalize(x, self.groups, self.eps)?, &self.weight, &self.bias)
        })()
        .map_err(to_candle)
    }
}

/// A [`GroupNorm`] of `channels` channels in `groups` groups, parameters `weight` (init 1) and `bias`
/// (init 0) under `vb`; `eps` (PyTorch's default is 1e-5) is added to the variance.
///
/// Errors: `groups` zero or not dividing `channels`, a negative or non-finite `eps`; the backend's.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    if groups == 0 || channels == 0 || channels % groups != 0 {
        return Err(Error::arg("group_norm", format!("{groups} groups do not divide {channels} channels")));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::arg("group_norm", format!("eps must be finite and >= 0, got {eps}")));
    }
    let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
    Ok(GroupNorm { weight, bias, groups, eps })
}

/// Instance normalization (each channel of each sample over its D, H, W), optionally with a learned
/// per-channel scale and shift (PyTorch's `InstanceNorm3d(affine=True)`; no running statistics).
#[derive(Clone, Debug)]
pub struct InstanceNorm {
    affine: Option<(Tensor, Tensor)>,
    channels: usize,
    eps: f64,
}

impl Module for InstanceNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        (|| {
            if x.dims().get(1) != Some(&self.channels) {
                return Err(Error::Shape {
                    op: "instance_norm".into(),
                    expected: format!("(N, {}, ...)", self.channels),
                    actual: format!("{:?}", x.dims()),
                });
            }
            let y = group_normalize(x, self.channels, self.eps)?;
            match &self.affine {
                Some((w, b)) => affine(&y, w, b),
                None => Ok(y),
            }
        })()
        .map_err(to_candle)
    }
}

/// An [`InstanceNorm`] of `channels` channels; with `affine`, parameters `weight` (init 1) and `bias`
/// (init 0) under `vb` (nothing is created otherwise).
///
/// Errors: zero channels, a negative or non-finite `eps`; the backend's.
pub fn instance_norm(channels: usize, eps: f64, affine: bool, vb: VarBuilder) -> Result<InstanceNorm> {
    if channels == 0 || !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::arg("instance_norm", format!("channels {channels}, eps {eps}")));
    }
    let affine = if affine {
        Some((
            vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
        ))
    } else {
        None
    };
    Ok(InstanceNorm { affine, channels, eps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut s = seed | 1;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn groups_have_zero_mean_and_unit_variance() {
        let x = rand(&[2, 6, 3, 4, 5], 1);
        let y = group_normalize(&x, 3, 0.0).unwrap();
        let g = y.reshape((2, 3, ())).unwrap();
        let mean = g.mean(2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let var = g.sqr().unwrap().mean(2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (m, v) in mean.iter().zip(&var) {
            assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-4, "mean {m} var {v}");
        }
        // a known case: one group [1, 2, 3, 4] -> (x - 2.5) / sqrt(1.25)
        let x = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (1, 2, 2), &Device::Cpu).unwrap();
        let y = group_normalize(&x, 1, 0.0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let s = 1.25f32.sqrt();
        for (a, b) in y.iter().zip([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(matches!(group_normalize(&x, 3, 1e-5), Err(Error::InvalidArgument { .. })));
    }

    #[test]
    fn group_norm_matches_candle_nn_and_passes_gradients() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let gn = group_norm(2, 4, 1e-5, vb.pp("gn")).unwrap();
        // non-trivial affine parameters
        for (name, var) in vm.data().lock().unwrap().iter() {
            let v = if name.ends_with("weight") { vec![0.5f32, 1.5, -1.0, 2.0] } else { vec![0.1f32, -0.2, 0.3, 0.0] };
            var.set(&Tensor::from_vec(v, 4, &Device::Cpu).unwrap()).unwrap();
        }
        let x = Var::from_tensor(&rand(&[2, 4, 3, 2, 5], 2)).unwrap();
        let ours = gn.forward(&x).unwrap();
        let theirs =
            candle_nn::GroupNorm::new(gn.weight.clone(), gn.bias.clone(), 4, 2, 1e-5).unwrap().forward(&x).unwrap();
        let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
        let r = rand(&[2, 4, 3, 2, 5], 3);
        let grads = (ours * r).unwrap().sum_all().unwrap().backward().unwrap();
        for t in [x.as_tensor(), &gn.weight, &gn.bias] {
            let g = grads.get(t).expect("gradient present");
            assert!(g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 1e-3);
        }
        // the input gradient of a normalization is orthogonal to constants per group: sums to ~0 there
        let gx = grads.get(&x).unwrap().reshape((2, 2, ())).unwrap().sum(2).unwrap();
        let s = gx.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(s < 1e-3, "{s}");
    }

    #[test]
    fn instance_norm_normalizes_each_channel() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let plain = instance_norm(3, 1e-5, false, vb.pp("a")).unwrap();
        assert!(vm.all_vars().is_empty(), "no parameters without affine");
        let x = rand(&[2, 3, 4, 3, 2], 4);
        let y = plain.forward(&x).unwrap();
        let want = group_normalize(&x, 3, 1e-5).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let aff = instance_norm(3, 1e-5, true, vb.pp("b")).unwrap();
        assert_eq!(vm.all_vars().len(), 2);
        assert!(aff.forward(&rand(&[1, 2, 2, 2, 2], 5)).is_err(), "channel mismatch");
    }
}
