//! 3-D pooling with kernel = stride (non-overlapping blocks), and global pooling, from differentiable
//! candle ops (a reshape of `(N, C, D, H, W)` into blocks, then a mean or max over the block axes).
//!
//! An axis whose size is not a multiple of the kernel drops its last `n % k` voxels, as PyTorch's
//! `avg_pool3d` / `max_pool3d` with `ceil_mode=False`.

use candle_core::{Module, Tensor};

use super::{dims5, to_candle, Dim3};
use crate::error::{Error, Result};

/// The input cropped to whole blocks and viewed as `(N, C, oD, kD, oH, kH, oW, kW)`.
fn blocks(op: &str, x: &Tensor, k: [usize; 3]) -> Result<Tensor> {
    let [n, c, d, h, w] = dims5(op, "input (N, C, D, H, W)", x)?;
    if k.contains(&0) {
        return Err(Error::arg(op, format!("kernel must be positive, got {k:?}")));
    }
    let sz = [d, h, w];
    if (0..3).any(|i| sz[i] < k[i]) {
        return Err(Error::arg(op, format!("kernel {k:?} larger than the input {sz:?}")));
    }
    let o = [d / k[0], h / k[1], w / k[2]];
    let mut t = x.clone();
    for i in 0..3 {
        if o[i] * k[i] != sz[i] {
            t = t.narrow(2 + i, 0, o[i] * k[i])?;
        }
    }
    Ok(t.contiguous()?.reshape(vec![n, c, o[0], k[0], o[1], k[1], o[2], k[2]])?)
}

/// Average pooling of `x` `(N, C, D, H, W)` over non-overlapping `kernel` blocks (stride = kernel):
/// `(N, C, D / kD, H / kH, W / kW)` (floor). Differentiable (each input of a block gets `1 / |block|` of
/// the block's gradient; cropped voxels get zero).
///
/// Errors: a non-5-D or empty input ([`Error::Shape`]); a zero kernel or one larger than the input
/// ([`Error::InvalidArgument`]).
pub fn avg_pool3d(x: &Tensor, kernel: impl Into<Dim3>) -> Result<Tensor> {
    let b = blocks("avg_pool3d", x, kernel.into().0)?;
    Ok(b.mean_keepdim(7)?.mean_keepdim(5)?.mean_keepdim(3)?.squeeze(7)?.squeeze(5)?.squeeze(3)?)
}

/// Max pooling of `x` `(N, C, D, H, W)` over non-overlapping `kernel` blocks (stride = kernel):
/// `(N, C, D / kD, H / kH, W / kW)` (floor). Differentiable: the block's gradient goes to its maximum
/// (to every tied maximum, candle's rule for `max`).
///
/// Errors: as [`avg_pool3d`].
pub fn max_pool3d(x: &Tensor, kernel: impl Into<Dim3>) -> Result<Tensor> {
    let b = blocks("max_pool3d", x, kernel.into().0)?;
    Ok(b.max_keepdim(7)?.max_keepdim(5)?.max_keepdim(3)?.squeeze(7)?.squeeze(5)?.squeeze(3)?)
}

/// Global average pooling: the mean over D, H, W of `x` `(N, C, D, H, W)`, as `(N, C)`.
///
/// Errors: a non-5-D or empty input ([`Error::Shape`]).
pub fn global_avg_pool3d(x: &Tensor) -> Result<Tensor> {
    let [n, c, ..] = dims5("global_avg_pool3d", "input (N, C, D, H, W)", x)?;
    Ok(x.reshape((n, c, ()))?.mean(2)?)
}

/// Global max pooling: the maximum over D, H, W of `x` `(N, C, D, H, W)`, as `(N, C)`.
///
/// Errors: a non-5-D or empty input ([`Error::Shape`]).
pub fn global_max_pool3d(x: &Tensor) -> Result<Tensor> {
    let [n, c, ..] = dims5("global_max_pool3d", "input (N, C, D, H, W)", x)?;
    Ok(x.contiguous()?.reshape((n, c, ()))?.max(2)?)
}

/// Which pooling a [`Pool3d`] layer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// [`avg_pool3d`] over blocks of the kernel.
    Avg,
    /// [`max_pool3d`] over blocks of the kernel.
    Max,
    /// [`global_avg_pool3d`]: `(N, C, D, H, W)` to `(N, C)` (the kernel is ignored).
    GlobalAvg,
    /// [`global_max_pool3d`]: `(N, C, D, H, W)` to `(N, C)` (the kernel is ignored).
    GlobalMax,
}

/// A pooling layer (no parameters): `kind` over `kernel` blocks (stride = kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool3d {
    /// Which pooling.
    pub kind: PoolKind,
    /// Block size (= stride) per axis `(D, H, W)`, voxels; unused by the global kinds.
    pub kernel: Dim3,
}

impl Pool3d {
    /// A pooling layer; `kernel` per axis `(D, H, W)` or uniform (unused by the global kinds).
    pub fn new(kind: PoolKind, kernel: impl Into<Dim3>) -> Self {
        Pool3d { kind, kernel: kernel.into() }
    }
}

impl Module for Pool3d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.kind {
            PoolKind::Avg => avg_pool3d(x, self.kernel),
            PoolKind::Max => max_pool3d(x, self.kernel),
            PoolKind::GlobalAvg => global_avg_pool3d(x),
            PoolKind::GlobalMax => global_max_pool3d(x),
        }
        .map_err(to_candle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn ramp(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::arange(0f32, n as f32, &Device::Cpu).unwrap().reshape(shape).unwrap()
    }

    #[test]
    fn pooling_known_answers() {
        // (1, 1, 2, 2, 4): values 0..16, z-major. Blocks of 2x2x2: voxels {0,1,4,5,8,9,12,13} and +2.
        let x = ramp(&[1, 1, 2, 2, 4]);
        let a = avg_pool3d(&x, 2).unwrap();
        assert_eq!(a.dims(), [1, 1, 1, 1, 2]);
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [6.5, 8.5]);
        let m = max_pool3d(&x, 2).unwrap();
        assert_eq!(m.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [13.0, 15.0]);
        // anisotropic kernel (1, 2, 2) and a cropped odd axis (W = 5 -> 2 blocks)
        let x = ramp(&[1, 2, 1, 2, 5]);
        let a = avg_pool3d(&x, [1, 2, 2]).unwrap();
        assert_eq!(a.dims(), [1, 2, 1, 1, 2]);
        // channel 0 block 0: {0, 1, 5, 6}; block 1: {2, 3, 7, 8}; channel 1 adds 10
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [3.0, 5.0, 13.0, 15.0]);
        let g = global_avg_pool3d(&x).unwrap();
        assert_eq!(g.to_vec2::<f32>().unwrap(), [vec![4.5, 14.5]]);
        let gm = global_max_pool3d(&x).unwrap();
        assert_eq!(gm.to_vec2::<f32>().unwrap(), [vec![9.0, 19.0]]);
        assert!(matches!(avg_pool3d(&x, 3), Err(Error::InvalidArgument { .. })));
        assert!(matches!(avg_pool3d(&x.squeeze(0).unwrap(), 1), Err(Error::Shape { .. })));
    }

    #[test]
    fn pooling_gradients_known_answers() {
        let x = Var::from_tensor(&ramp(&[1, 1, 2, 2, 5])).unwrap();
        // max: each block's gradient lands on its maximum
        let g = max_pool3d(&x, 2).unwrap().sum_all().unwrap().backward().unwrap();
        let gm = g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut want = vec![0f32; 20];
        // blocks cover x in 0..4 of each row; maxima at (z, y, x) = (1, 1, 1) and (1, 1, 3), flat 10z + 5y + x
        want[10 + 5 + 1] = 1.0;
        want[10 + 5 + 3] = 1.0;
        assert_eq!(gm, want);
        // avg: 1/8 on the covered voxels, 0 on the cropped column x = 4
        let g = avg_pool3d(&x, 2).unwrap().sum_all().unwrap().backward().unwrap();
        let ga = g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, v) in ga.iter().enumerate() {
            assert_eq!(*v, if i % 5 == 4 { 0.0 } else { 0.125 }, "voxel {i}");
        }
    }
}
