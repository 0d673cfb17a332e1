//! 3-D upsampling from differentiable candle ops: nearest-neighbour by an integer factor (broadcast and
//! reshape) and trilinear to any size (one `index_select` pair and a weighted sum per axis).
//!
//! Trilinear sampling follows PyTorch's `interpolate(mode="trilinear")`: with `align_corners = true` the
//! first and last voxel centres of input and output coincide (`src = o (n_in - 1) / (n_out - 1)`); with
//! `align_corners = false` the volumes' outer edges coincide (`src = (o + 1/2) n_in / n_out - 1/2`,
//! clamped at 0 and `n_in - 1`, i.e. edge voxels repeat). regsh's normalized coordinates are the
//! `align_corners = true` kind.

use candle_core::{Device, Module, Tensor};

use super::{dims5, to_candle, Dim3};
use crate::error::{Error, Result};

/// Nearest-neighbour upsampling of `x` `(N, C, D, H, W)` by integer `factor` per axis: `(N, C, fD D, fH H,
/// fW W)`, each voxel repeated in an `fD x fH x fW` block (PyTorch's `mode="nearest"` with an integer
/// scale). Differentiable (a block's gradients sum into its voxel).
///
/// Errors: a non-5-D or empty input ([`Error::Shape`]); a zero factor ([`Error::InvalidArgument`]).
pub fn upsample_nearest3d(x: &Tensor, factor: impl Into<Dim3>) -> Result<Tensor> {
    let f = factor.into().0;
    let [n, c, d, h, w] = dims5("upsample_nearest3d", "input (N, C, D, H, W)", x)?;
    if f.contains(&0) {
        return Err(Error::arg("upsample_nearest3d", format!("factor must be positive, got {f:?}")));
    }
    let t = x.reshape(vec![n, c, d, 1, h, 1, w, 1])?.broadcast_as(vec![n, c, d, f[0], h, f[1], w, f[2]])?;
    Ok(t.contiguous()?.reshape((n, c, d * f[0], h * f[1], w * f[2]))?)
}

/// For each output index along one axis: the two input neighbours and the weight of the upper one.
fn linear_taps(n_in: usize, n_out: usize, align_corners: bool) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let (mut lo, mut hi, mut wt) = (vec![], vec![], vec![]);
    for o in 0..n_out {
        let src = if align_corners {
            if n_out > 1 {
                o as f64 * (n_in - 1) as f64 / (n_out - 1) as f64
            } else {
                0.0
            }
        } else {
            ((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0)
        };
        let src = src.min((n_in - 1) as f64);
        let l = src.floor() as usize;
        let h = (l + 1).min(n_in - 1);
        lo.push(l as u32);
        hi.push(h as u32);
        wt.push((src - l as f64) as f32);
    }
    (lo, hi, wt)
}

/// Linear interpolation of `t` along `dim` (2, 3 or 4 of a 5-D tensor) to `n_out` values.
fn resize_axis(t: &Tensor, dim: usize, n_out: usize, align_corners: bool, dev: &Device) -> Result<Tensor> {
    let n_in = t.dim(dim)?;
    if n_in == n_out {
        return Ok(t.clone());
    }
    let (lo, hi, wt) = linear_taps(n_in, n_out, align_corners);
    let t = t.contiguous()?; // index_select needs contiguous input
    let a = t.index_select(&Tensor::from_vec(lo, n_out, dev)?, dim)?;
    let b = t.index_select(&Tensor::from_vec(hi, n_out, dev)?, dim)?;
    let mut shape = vec![1usize; 5];
    shape[dim] = n_out;
    let w = Tensor::from_vec(wt, shape, dev)?;
    // a + w (b - a)
    Ok(a.broadcast_add(&(b - &a)?.broadcast_mul(&w)?)?)
}

/// Trilinear resizing of `x` `(N, C, D, H, W)` to `size` `(oD, oH, oW)` (separable: linear along W, then H,
/// then D), with `align_corners` as in PyTorch (see the module doc). Differentiable in `x` (index_select
/// has a backward).
///
/// Errors: a non-5-D or empty input ([`Error::Shape`]); a zero output size ([`Error::InvalidArgument`]).
pub fn upsample_trilinear3d(x: &Tensor, size: impl Into<Dim3>, align_corners: bool) -> Result<Tensor> {
    let s = size.into().0;
    dims5("upsample_trilinear3d", "input (N, C, D, H, W)", x)?;
    if s.contains(&0) {
        return Err(Error::arg("upsample_trilinear3d", format!("size must be positive, got {s:?}")));
    }
    let dev = x.device();
    let mut t = x.clone();
    for dim in [4, 3, 2] {
        t = resize_axis(&t, dim, s[dim - 2], align_corners, dev)?;
    }
    Ok(t)
}

/// How an [`Upsample3d`] layer interpolates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsampleMode {
    /// [`upsample_nearest3d`].
    Nearest,
    /// [`upsample_trilinear3d`] to `factor` times the input size, with `align_corners`.
    Trilinear {
        /// PyTorch's `align_corners` (see the module doc).
        align_corners: bool,
    },
}

/// An upsampling layer (no parameters): `(N, C, D, H, W)` to `(N, C, fD D, fH H, fW W)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upsample3d {
    /// Integer factor per axis `(D, H, W)`.
    pub factor: Dim3,
    /// Nearest or trilinear.
    pub mode: UpsampleMode,
}

impl Upsample3d {
    /// An upsampling layer by integer `factor` per axis `(D, H, W)` or uniform.
    pub fn new(factor: impl Into<Dim3>, mode: UpsampleMode) -> Self {
        Upsample3d { factor: factor.into(), mode }
    }
}

impl Module for Upsample3d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let f = self.factor.0;
        match self.mode {
            UpsampleMode::Nearest => upsample_nearest3d(x, f),
            UpsampleMode::Trilinear { align_corners } => {
                let d = x.dims();
                if d.len() != 5 {
                    return Err(to_candle(Error::Shape {
                        op: "upsample_trilinear3d".into(),
                        expected: "a 5-D input (N, C, D, H, W)".into(),
                        actual: format!("{d:?}"),
                    }));
                }
                upsample_trilinear3d(x, [d[2] * f[0], d[3] * f[1], d[4] * f[2]], align_corners)
            }
        }
        .map_err(to_candle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn nearest_repeats_each_voxel_in_a_block() {
        let x = t(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 1, 2, 2]);
        let u = upsample_nearest3d(&x, [2, 1, 2]).unwrap();
        assert_eq!(u.dims(), [1, 1, 2, 2, 4]);
        let row = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
        assert_eq!(flat(&u), [row, row].concat());
        // gradient: each voxel gets the sum of its block (4 copies)
        let v = Var::from_tensor(&x).unwrap();
        let g = upsample_nearest3d(&v, [2, 1, 2]).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(flat(g.get(&v).unwrap()), [4.0; 4]);
    }

    #[test]
    fn trilinear_matches_pytorch_formulas() {
        // one axis, [0, 1, 2] -> 6: align_corners=False gives PyTorch's [0, .25, .75, 1.25, 1.75, 2]
        let x = t(vec![0.0, 1.0, 2.0], &[1, 1, 1, 1, 3]);
        let u = upsample_trilinear3d(&x, [1, 1, 6], false).unwrap();
        assert_eq!(flat(&u), [0.0, 0.25, 0.75, 1.25, 1.75, 2.0]);
        // align_corners=True: 0..2 on 5 points is 0, .5, 1, 1.5, 2
        let u = upsample_trilinear3d(&x, [1, 1, 5], true).unwrap();
        assert_eq!(flat(&u), [0.0, 0.5, 1.0, 1.5, 2.0]);
        // a trilinear function f = 1 + x + 2y + 3z is reproduced exactly with align_corners
        let (d, h, w) = (3, 4, 2);
        let f = |z: f32, y: f32, x: f32| 1.0 + x + 2.0 * y + 3.0 * z;
        let mut v = vec![];
        for z in 0..d {
            for y in 0..h {
                for x in 0..w {
                    v.push(f(z as f32, y as f32, x as f32));
                }
            }
        }
        let u = upsample_trilinear3d(&t(v, &[1, 1, d, h, w]), [5, 7, 3], true).unwrap();
        let got = flat(&u);
        let mut i = 0;
        for z in 0..5 {
            for y in 0..7 {
                for x in 0..3 {
                    let want = f(z as f32 * 2.0 / 4.0, y as f32 * 3.0 / 6.0, x as f32 * 1.0 / 2.0);
                    assert!((got[i] - want).abs() < 1e-5, "({z}, {y}, {x}): {} vs {want}", got[i]);
                    i += 1;
                }
            }
        }
        assert!(matches!(upsample_trilinear3d(&x, [1, 0, 2], true), Err(Error::InvalidArgument { .. })));
    }

    #[test]
    fn trilinear_takes_a_non_contiguous_view() {
        // (1, 1, 1, 3, 2) viewed with the last two axes swapped is the (1, 1, 1, 2, 3) rows [0, 2, 4], [1, 3, 5]
        let x = t(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[1, 1, 1, 3, 2]).transpose(3, 4).unwrap();
        let u = upsample_trilinear3d(&x, [1, 2, 5], true).unwrap();
        assert_eq!(flat(&u), [0.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn trilinear_gradient_is_the_transpose_of_its_weights() {
        // d/dx of sum(u * r) for u = A x is A^T r; on one axis [a, b] -> 4 (align_corners=False) the rows
        // of A are [1, 0], [.75, .25], [.25, .75], [0, 1].
        let x = Var::from_tensor(&t(vec![3.0, -1.0], &[1, 1, 1, 1, 2])).unwrap();
        let r = t(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 1, 1, 4]);
        let u = upsample_trilinear3d(&x, [1, 1, 4], false).unwrap();
        let g = (u * r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(flat(g.get(&x).unwrap()), [1.0 + 1.5 + 0.75, 0.5 + 2.25 + 4.0]);
    }
}
