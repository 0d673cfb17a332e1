//! 3-D convolution: the fused CPU op [`conv3d`] (im2col + `gemm`, hand-written backward to the input,
//! the weight and the bias), its slow twin [`conv3d_slow`] from candle's `conv2d`, and the layer
//! [`Conv3d`].
//!
//! Layout as PyTorch's `torch.nn.functional.conv3d` (cross-correlation, no kernel flip): input `(N, C_in,
//! D, H, W)`, weight `(C_out, C_in, kD, kH, kW)`, bias `(C_out)`, output `(N, C_out, oD, oH, oW)` with
//! `o = (n + 2 p - k) / s + 1` (floor) per axis. For a regsh image `(C, Z, Y, X)`, D, H, W are z, y, x.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Module, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::im2col::{self, Geom};
use super::{dims5, to_candle, Dim3};
use crate::error::{Error, Result};
use crate::ops::f32_slice;

/// The fused convolution as a candle custom op: `(x, w)` or `(x, w, b)`.
#[derive(Clone, Copy, Debug)]
struct ConvOp {
    geom: Geom,
}

impl ConvOp {
    fn run(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let mut y = im2col::forward(x, w, g)?;
        if let Some(b) = b {
            im2col::add_bias(&mut y, b, g.vout());
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.cout, g.out[0], g.out[1], g.out[2]))))
    }

    /// Gradients to `x`, `w` and (when asked) the bias.
    fn grads(&self, x: &Tensor, w: &Tensor, grad: &Tensor, bias: bool) -> candle_core::Result<[Option<Tensor>; 3]> {
        let g = &self.geom;
        let xv = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let wv = w.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gy = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gx = im2col::backward_data(&gy, &wv, g)?;
        let gw = im2col::backward_weight(&xv, &gy, g)?;
        let dev = x.device();
        let gb =
            if bias { Some(Tensor::from_vec(im2col::channel_sums(&gy, g.cout, g.vout()), g.cout, dev)?) } else { None };
        Ok([Some(Tensor::from_vec(gx, x.shape(), dev)?), Some(Tensor::from_vec(gw, w.shape(), dev)?), gb])
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "conv3d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(f32_slice("conv3d", s1, l1)?, f32_slice("conv3d", s2, l2)?, None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let [gx, gw, _] = self.grads(x, w, grad, false)?;
        Ok((gx, gw))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "conv3d"
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
        let b = f32_slice("conv3d", s3, l3)?;
        self.run(f32_slice("conv3d", s1, l1)?, f32_slice("conv3d", s2, l2)?, Some(b))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [gx, gw, gb] = self.grads(x, w, grad, true)?;
        Ok((gx, gw, gb))
    }
}

/// Checks the dtypes and shapes of a convolution's operands: `x` `(N, C_in, D, H, W)` and `w` `(C_out,
/// C_in / groups, kD, kH, kW)` f32 (groups = 1 here), bias `(C_out)`; returns `(x dims, w dims)`.
pub(crate) fn check_operands(
    op: &str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    bias_len: impl Fn(&[usize; 5]) -> usize,
    w_cin: impl Fn(&[usize; 5]) -> usize,
) -> Result<([usize; 5], [usize; 5])> {
    for (name, t) in [("input", Some(x)), ("weight", Some(w)), ("bias", b)] {
        if let Some(t) = t {
            if t.dtype() != DType::F32 {
                return Err(Error::arg(op, format!("{name} must be f32, got {:?}", t.dtype())));
            }
        }
    }
    let xd = dims5(op, "input (N, C, D, H, W)", x)?;
    let wd = dims5(op, "weight (C_out, C_in, kD, kH, kW)", w)?;
    if w_cin(&wd) != xd[1] {
        return Err(Error::Shape {
            op: op.into(),
            expected: format!("input with {} channels (the weight's)", w_cin(&wd)),
            actual: format!("{:?}", xd),
        });
    }
    if let Some(b) = b {
        let n = bias_len(&wd);
        if b.dims() != [n] {
            return Err(Error::Shape {
                op: op.into(),
                expected: format!("bias ({n})"),
                actual: format!("{:?}", b.dims()),
            });
        }
    }
    if wd[2..].contains(&0) {
        return Err(Error::arg(op, format!("kernel size must be positive, got {:?}", &wd[2..])));
    }
    Ok((xd, wd))
}

/// The output size of a convolution along each axis, `(n + 2 p - k) / s + 1`, with its checks.
fn conv_out(op: &str, inp: [usize; 3], k: [usize; 3], s: [usize; 3], p: [usize; 3]) -> Result<[usize; 3]> {
    if s.contains(&0) {
        return Err(Error::arg(op, format!("stride must be positive, got {s:?}")));
    }
    let mut out = [0; 3];
    for i in 0..3 {
        let padded = p[i]
            .checked_mul(2)
            .and_then(|q| q.checked_add(inp[i]))
            .ok_or_else(|| Error::arg(op, format!("padding {p:?} is too large")))?;
        if padded < k[i] {
            return Err(Error::arg(
                op,
                format!("kernel {:?} larger than the padded input {:?} (padding {:?})", k, inp, p),
            ));
        }
        out[i] = (padded - k[i]) / s[i] + 1;
    }
    Ok(out)
}

/// 3-D convolution (cross-correlation, as PyTorch's `conv3d`) of `x` `(N, C_in, D, H, W)` f32 with `w`
/// `(C_out, C_in, kD, kH, kW)` and an optional bias `(C_out)`, zero padding `padding` voxels on both sides
/// of each axis, step `stride`; both per axis `(D, H, W)` or uniform. Returns `(N, C_out, oD, oH, oW)`,
/// `o = (n + 2 p - k) / s + 1` (floor).
///
/// On the CPU this is one fused op (im2col over chunks of output rows, then `gemm`; parallel over the
/// rayon pool) with a hand-written backward giving gradients to `x`, `w` and `b` (see `src/nn/im2col.rs`).
/// On other devices (CUDA) it falls back to [`conv3d_slow`], which runs on candle's own `conv2d`.
///
/// Errors: operands not f32 or not 5-D, channel or bias mismatch ([`Error::Shape`]), a zero stride or
/// kernel, or a kernel larger than the padded input ([`Error::InvalidArgument`]).
///
/// Source: im2col convolution as in Caffe / PyTorch's CPU `slow_conv3d`; the parity with [`conv3d_slow`]
/// and with a 7-loop reference is tested in `tests/nn.rs`.
pub fn conv3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: impl Into<Dim3>,
    padding: impl Into<Dim3>,
) -> Result<Tensor> {
    let (s, p) = (stride.into().0, padding.into().0);
    let (xd, wd) = check_operands("conv3d", x, w, b, |wd| wd[0], |wd| wd[1])?;
    let k = [wd[2], wd[3], wd[4]];
    let inp = [xd[2], xd[3], xd[4]];
    let out = conv_out("conv3d", inp, k, s, p)?;
    if !x.device().is_cpu() {
        return conv3d_slow(x, w, b, s, p);
    }
    let geom = Geom { n: xd[0], cin: xd[1], cout: wd[0], inp, k, s, p, out };
    let op = ConvOp { geom };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    Ok(match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op)?,
        None => x.apply_op2(&w, op)?,
    })
}

/// Every `s`-th index `start, start + s, ...` (`n` of them), as a u32 tensor for `index_select`.
pub(crate) fn strided_index(start: usize, s: usize, n: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<u32> = (0..n).map(|i| (start + i * s) as u32).collect();
    Ok(Tensor::from_vec(v, n, dev)?)
}

/// The slow twin of [`conv3d`], built from differentiable candle ops: zero padding with
/// `pad_with_zeros`, then for each kernel depth `a` the depth slab `x[:, :, a + sD * od]` (an
/// `index_select`) folded into the batch and convolved in 2-D (`conv2d`) with `w[:, :, a]`; the slabs'
/// results are summed. Same arguments, result and errors as [`conv3d`]; autograd gives its gradients.
/// Runs on any device candle's `conv2d` runs on.
pub fn conv3d_slow(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: impl Into<Dim3>,
    padding: impl Into<Dim3>,
) -> Result<Tensor> {
    let (s, p) = (stride.into().0, padding.into().0);
    let (xd, wd) = check_operands("conv3d", x, w, b, |wd| wd[0], |wd| wd[1])?;
    let k = [wd[2], wd[3], wd[4]];
    let out = conv_out("conv3d", [xd[2], xd[3], xd[4]], k, s, p)?;
    let (n, c, co) = (xd[0], xd[1], wd[0]);
    // index_select needs contiguous input
    let xp =
        x.contiguous()?.pad_with_zeros(2, p[0], p[0])?.pad_with_zeros(3, p[1], p[1])?.pad_with_zeros(4, p[2], p[2])?;
    let (hp, wp) = (xd[3] + 2 * p[1], xd[4] + 2 * p[2]);
    let dev = x.device();
    let mut acc: Option<Tensor> = None;
    for a in 0..k[0] {
        let slab = xp.index_select(&strided_index(a, s[0], out[0], dev)?, 2)?;
        let slab = slab.permute((0, 2, 1, 3, 4))?.contiguous()?.reshape((n * out[0], c, hp, wp))?;
        let wa = w.narrow(2, a, 1)?.squeeze(2)?.contiguous()?;
        let y = if s[1] == s[2] {
            slab.conv2d(&wa, 0, s[1], 1, 1)?
        } else {
            let full = slab.conv2d(&wa, 0, 1, 1, 1)?;
            full.index_select(&strided_index(0, s[1], out[1], dev)?, 2)?
                .index_select(&strided_index(0, s[2], out[2], dev)?, 3)?
        };
        let y = y.reshape((n, out[0], co, out[1], out[2]))?.permute((0, 2, 1, 3, 4))?;
        acc = Some(match acc {
            None => y,
            Some(t) => (t + y)?,
        });
    }
    let y = acc.ok_or_else(|| Error::arg("conv3d", "empty kernel"))?.contiguous()?;
    Ok(match b {
        Some(b) => y.broadcast_add(&b.reshape((1, co, 1, 1, 1))?)?,
        None => y,
    })
}

/// Options of a [`Conv3d`] layer: stride and zero padding per axis `(D, H, W)` in voxels, and whether it
/// has a bias. Default: stride 1, padding 0, bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv3dConfig {
    /// Step between output samples per axis `(D, H, W)`, voxels (>= 1).
    pub stride: Dim3,
    /// Zeros added on both sides of each axis `(D, H, W)`, voxels.
    pub padding: Dim3,
    /// Whether the layer has a bias `(C_out)`.
    pub bias: bool,
}

impl Default for Conv3dConfig {
    fn default() -> Self {
        Conv3dConfig { stride: Dim3([1; 3]), padding: Dim3([0; 3]), bias: true }
    }
}

impl Conv3dConfig {
    /// Uniform stride and padding, with a bias.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv3dConfig { stride: Dim3([stride; 3]), padding: Dim3([padding; 3]), bias: true }
    }
}

/// A 3-D convolution layer: weight `(C_out, C_in, kD, kH, kW)`, optional bias `(C_out)`; maps `(N, C_in,
/// D, H, W)` to `(N, C_out, oD, oH, oW)` through [`conv3d`].
#[derive(Clone, Debug)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv3dConfig,
}

impl Conv3d {
    /// A layer from given tensors. Errors: as [`conv3d`]'s operand checks (checked at the first call).
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv3dConfig) -> Self {
        Conv3d { weight, bias, config }
    }
    /// The weight `(C_out, C_in, kD, kH, kW)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// The bias `(C_out)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// The layer's options.
    pub fn config(&self) -> &Conv3dConfig {
        &self.config
    }
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        conv3d(x, &self.weight, self.bias.as_ref(), self.config.stride, self.config.padding).map_err(to_candle)
    }
}

/// A [`Conv3d`] layer with its parameters `weight` and `bias` under `vb`, initialised as PyTorch's
/// `Conv3d` (uniform in `+-1 / sqrt(C_in * kD * kH * kW)`, weight and bias).
///
/// Errors: a zero channel count or kernel size; the backend's (a stored tensor of another shape).
pub fn conv3d_layer(
    in_channels: usize,
    out_channels: usize,
    kernel: impl Into<Dim3>,
    config: Conv3dConfig,
    vb: VarBuilder,
) -> Result<Conv3d> {
    let k = kernel.into().0;
    if in_channels == 0 || out_channels == 0 || k.contains(&0) {
        return Err(Error::arg("conv3d_layer", format!("channels {in_channels} -> {out_channels}, kernel {k:?}")));
    }
    let bound = 1.0 / ((in_channels * k.iter().product::<usize>()) as f64).sqrt();
    let init = Init::Uniform { lo: -bound, up: bound };
    let weight = vb.get_with_hints((out_channels, in_channels, k[0], k[1], k[2]), "weight", init)?;
    let bias = if config.bias { Some(vb.get_with_hints(out_channels, "bias", init)?) } else { None };
    Ok(Conv3d { weight, bias, config })
}
