//! Transposed 3-D convolution (the adjoint of [`super::conv3d`] in its input, "deconvolution"): the fused
//! CPU op [`conv_transpose3d`], its slow twin [`conv_transpose3d_slow`] (zero insertion, padding and a
//! [`super::conv3d_slow`] with the flipped kernel) and the layer [`ConvTranspose3d`].
//!
//! Layout as PyTorch's `torch.nn.functional.conv_transpose3d` (groups 1, dilation 1): input `(N, C_in, D,
//! H, W)`, weight `(C_in, C_out, kD, kH, kW)`, bias `(C_out)`, output `(N, C_out, oD, oH, oW)` with
//! `o = (n - 1) s - 2 p + k + output_padding` per axis. With `k = 2, s = 2, p = 0` (or `k = 4, s = 2,
//! p = 1`) it doubles each axis.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Module, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::conv::{check_operands, conv3d_slow};
use super::im2col::{self, Geom};
use super::{to_candle, Dim3};
use crate::error::{Error, Result};
use crate::ops::f32_slice;

/// The fused transposed convolution: `(y, w)` or `(y, w, b)`, where `geom` is the geometry of the
/// convolution it is the adjoint of (`cin` = this op's output channels, `inp` its output size).
#[derive(Clone, Copy, Debug)]
struct ConvTransposeOp {
    geom: Geom,
}

impl ConvTransposeOp {
    fn run(&self, y: &[f32], w: &[f32], b: Option<&[f32]>) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let mut z = im2col::backward_data(y, w, g)?;
        if let Some(b) = b {
            im2col::add_bias(&mut z, b, g.vin());
        }
        Ok((CpuStorage::F32(z), Shape::from((g.n, g.cin, g.inp[0], g.inp[1], g.inp[2]))))
    }

    fn grads(&self, y: &Tensor, w: &Tensor, grad: &Tensor, bias: bool) -> candle_core::Result<[Option<Tensor>; 3]> {
        let g = &self.geom;
        let yv = y.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let wv = w.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gz = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        // z = col2im(w^T y): dL/dy = w . im2col(dL/dz) (a convolution), dL/dw = y . im2col(dL/dz)^T.
        let gy = im2col::forward(&gz, &wv, g)?;
        let gw = im2col::backward_weight(&gz, &yv, g)?;
        let dev = y.device();
        let gb =
            if bias { Some(Tensor::from_vec(im2col::channel_sums(&gz, g.cin, g.vin()), g.cin, dev)?) } else { None };
        Ok([Some(Tensor::from_vec(gy, y.shape(), dev)?), Some(Tensor::from_vec(gw, w.shape(), dev)?), gb])
    }
}

impl CustomOp2 for ConvTransposeOp {
    fn name(&self) -> &'static str {
        "conv-transpose3d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(f32_slice("conv_transpose3d", s1, l1)?, f32_slice("conv_transpose3d", s2, l2)?, None)
    }
    fn bwd(
        &self,
        y: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let [gy, gw, _] = self.grads(y, w, grad, false)?;
        Ok((gy, gw))
    }
}

impl CustomOp3 for ConvTransposeOp {
    fn name(&self) -> &'static str {
        "conv-transpose3d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let b = f32_slice("conv_transpose3d", s3, l3)?;
        self.run(f32_slice("conv_transpose3d", s1, l1)?, f32_slice("conv_transpose3d", s2, l2)?, Some(b))
    }
    fn bwd(
        &self,
        y: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [gy, gw, gb] = self.grads(y, w, grad, true)?;
        Ok((gy, gw, gb))
    }
}

/// The output size `(n - 1) s - 2 p + k + output_padding` per axis, with its checks.
fn transpose_out(inp: [usize; 3], k: [usize; 3], s: [usize; 3], p: [usize; 3], op: [usize; 3]) -> Result<[usize; 3]> {
    let name = "conv_transpose3d";
    if s.contains(&0) {
        return Err(Error::arg(name, format!("stride must be positive, got {s:?}")));
    }
    let mut out = [0; 3];
    for i in 0..3 {
        if op[i] >= s[i] {
            return Err(Error::arg(name, format!("output_padding {op:?} must be smaller than the stride {s:?}")));
        }
        let full = (inp[i] - 1).checked_mul(s[i]).and_then(|v| v.checked_add(k[i] + op[i]));
        let o = match (full, p[i].checked_mul(2)) {
            (Some(f), Some(pp)) if f <= isize::MAX as usize && pp <= isize::MAX as usize => f as isize - pp as isize,
            _ => return Err(Error::arg(name, format!("stride {s:?} or padding {p:?} is too large"))),
        };
        if o <= 0 {
            return Err(Error::arg(name, format!("padding {p:?} leaves no output for input {inp:?}, kernel {k:?}")));
        }
        out[i] = o as usize;
    }
    Ok(out)
}

/// Transposed 3-D convolution (as PyTorch's `conv_transpose3d`, groups 1) of `x` `(N, C_in, D, H, W)` f32
/// with `w` `(C_in, C_out, kD, kH, kW)` and an optional bias `(C_out)`; `stride`, `padding` and
/// `output_padding` per axis `(D, H, W)` or uniform. Returns `(N, C_out, oD, oH, oW)`, with
/// `o = (n - 1) s - 2 p + k + output_padding`. It is the adjoint (in its input) of `conv3d` with the same
/// weight, stride and padding.
///
/// On the CPU one fused op (col2im of `w^T x`, see `src/nn/im2col.rs`) with a hand-written backward to
/// `x`, `w` and `b`; on other devices the fallback [`conv_transpose3d_slow`].
///
/// Errors: operands not f32 or not 5-D, channel or bias mismatch ([`Error::Shape`]), a zero stride or
/// kernel, `output_padding >= stride`, or a padding that leaves no output ([`Error::InvalidArgument`]).
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: impl Into<Dim3>,
    padding: impl Into<Dim3>,
    output_padding: impl Into<Dim3>,
) -> Result<Tensor> {
    let (s, p, op) = (stride.into().0, padding.into().0, output_padding.into().0);
    let (xd, wd) = check_operands("conv_transpose3d", x, w, b, |wd| wd[1], |wd| wd[0])?;
    let k = [wd[2], wd[3], wd[4]];
    let inp = [xd[2], xd[3], xd[4]];
    let out = transpose_out(inp, k, s, p, op)?;
    if !x.device().is_cpu() {
        return conv_transpose3d_slow(x, w, b, s, p, op);
    }
    // The convolution this is the adjoint of: from the output (its input) to x (its output).
    let geom = Geom { n: xd[0], cin: wd[1], cout: wd[0], inp: out, k, s, p, out: inp };
    let op = ConvTransposeOp { geom };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    Ok(match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op)?,
        None => x.apply_op2(&w, op)?,
    })
}

/// Inserts `s - 1` zeros between neighbours along `dim`: `n` values become `(n - 1) s + 1`.
fn dilate(t: &Tensor, dim: usize, s: usize) -> Result<Tensor> {
    if s == 1 {
        return Ok(t.clone());
    }
    let mut d = t.dims().to_vec();
    let n = d[dim];
    let v = t.unsqueeze(dim + 1)?;
    let mut zd = v.dims().to_vec();
    zd[dim + 1] = s - 1;
    let z = Tensor::zeros(zd, t.dtype(), t.device())?;
    d[dim] = n * s;
    Ok(Tensor::cat(&[&v, &z], dim + 1)?.reshape(d)?.narrow(dim, 0, (n - 1) * s + 1)?)
}

/// Pads `lo` / `hi` zeros on `dim`, or crops where they are negative.
fn pad_or_crop(t: &Tensor, dim: usize, lo: isize, hi: isize) -> Result<Tensor> {
    let mut t = t.pad_with_zeros(dim, lo.max(0) as usize, hi.max(0) as usize)?;
    let n = t.dim(dim)?;
    let (cl, ch) = ((-lo).max(0) as usize, (-hi).max(0) as usize);
    if cl + ch > 0 {
        t = t.narrow(dim, cl, n - cl - ch)?;
    }
    Ok(t)
}

/// The slow twin of [`conv_transpose3d`] from differentiable candle ops: the input with `s - 1` zeros
/// inserted between neighbours, `k - 1 - p` zeros padded on each side (plus `output_padding` at the end),
/// then [`conv3d_slow`] with stride 1 and the weight transposed to `(C_out, C_in, k...)` and flipped in
/// all three spatial axes. Same arguments, result and errors as [`conv_transpose3d`].
pub fn conv_transpose3d_slow(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: impl Into<Dim3>,
    padding: impl Into<Dim3>,
    output_padding: impl Into<Dim3>,
) -> Result<Tensor> {
    let (s, p, op) = (stride.into().0, padding.into().0, output_padding.into().0);
    let (xd, wd) = check_operands("conv_transpose3d", x, w, b, |wd| wd[1], |wd| wd[0])?;
    let k = [wd[2], wd[3], wd[4]];
    transpose_out([xd[2], xd[3], xd[4]], k, s, p, op)?;
    let mut t = x.clone();
    for i in 0..3 {
        t = dilate(&t, 2 + i, s[i])?;
        let lo = k[i] as isize - 1 - p[i] as isize;
        t = pad_or_crop(&t, 2 + i, lo, lo + op[i] as isize)?;
    }
    let mut wf = w.transpose(0, 1)?.contiguous()?;
    for (i, &kk) in k.iter().enumerate() {
        let rev: Vec<u32> = (0..kk as u32).rev().collect();
        wf = wf.index_select(&Tensor::from_vec(rev, kk, w.device())?, 2 + i)?;
    }
    conv3d_slow(&t, &wf, b, 1, 0)
}

/// Options of a [`ConvTranspose3d`] layer: stride, padding and output padding per axis `(D, H, W)` in
/// voxels, and whether it has a bias. Default: stride 2, padding 0, output padding 0, bias (with a
/// kernel of 2 this doubles each axis).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvTranspose3dConfig {
    /// Upsampling step per axis `(D, H, W)`, voxels (>= 1).
    pub stride: Dim3,
    /// Voxels removed from both sides of each axis of the full output `(D, H, W)`.
    pub padding: Dim3,
    /// Voxels added at the end of each axis `(D, H, W)` (< stride), to reach sizes the floor of a
    /// strided convolution maps to the same input size.
    pub output_padding: Dim3,
    /// Whether the layer has a bias `(C_out)`.
    pub bias: bool,
}

impl Default for ConvTranspose3dConfig {
    fn default() -> Self {
        ConvTranspose3dConfig { stride: Dim3([2; 3]), padding: Dim3([0; 3]), output_padding: Dim3([0; 3]), bias: true }
    }
}

/// A transposed 3-D convolution layer: weight `(C_in, C_out, kD, kH, kW)`, optional bias `(C_out)`;
/// maps `(N, C_in, D, H, W)` to `(N, C_out, oD, oH, oW)` through [`conv_transpose3d`].
#[derive(Clone, Debug)]
pub struct ConvTranspose3d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: ConvTranspose3dConfig,
}

impl ConvTranspose3d {
    /// The weight `(C_in, C_out, kD, kH, kW)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// The bias `(C_out)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for ConvTranspose3d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        conv_transpose3d(x, &self.weight, self.bias.as_ref(), c.stride, c.padding, c.output_padding).map_err(to_candle)
    }
}

/// A [`ConvTranspose3d`] layer with parameters `weight` and `bias` under `vb`, initialised as PyTorch's
/// `ConvTranspose3d` (uniform in `+-1 / sqrt(C_out * kD * kH * kW)`).
///
/// Errors: a zero channel count or kernel size; the backend's (a stored tensor of another shape).
pub fn conv_transpose3d_layer(
    in_channels: usize,
    out_channels: usize,
    kernel: impl Into<Dim3>,
    config: ConvTranspose3dConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose3d> {
    let k = kernel.into().0;
    if in_channels == 0 || out_channels == 0 || k.contains(&0) {
        return Err(Error::arg(
            "conv_transpose3d_layer",
            format!("channels {in_channels} -> {out_channels}, kernel {k:?}"),
        ));
    }
    let bound = 1.0 / ((out_channels * k.iter().product::<usize>()) as f64).sqrt();
    let init = Init::Uniform { lo: -bound, up: bound };
    let weight = vb.get_with_hints((in_channels, out_channels, k[0], k[1], k[2]), "weight", init)?;
    let bias = if config.bias { Some(vb.get_with_hints(out_channels, "bias", init)?) } else { None };
    Ok(ConvTranspose3d { weight, bias, config })
}
