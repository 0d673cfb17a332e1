//! 3-D neural-network building blocks on candle tensors (CPU fused ops with hand-written backward passes,
//! each with a slow twin from differentiable candle ops).
//!
//! Every volume tensor is `(N, C, D, H, W)`: batch, channels, then depth, height, width. For a regsh image
//! `(C, Z, Y, X)` (x fastest) that is `image.unsqueeze(0)`, so D, H, W are z, y, x. Sizes, strides and
//! paddings are given per axis in that order ([`Dim3`]) or as one number for all three.
//!
//! | block | fast | slow twin / how | layer (`Module`) |
//! |---|---|---|---|
//! | convolution | [`conv3d`] (im2col + gemm, `CustomOp2/3`) | [`conv3d_slow`] (`conv2d` per kernel depth) | [`Conv3d`], [`conv3d_layer`] |
//! | transposed convolution | [`conv_transpose3d`] (col2im) | [`conv_transpose3d_slow`] (zero insertion + flipped kernel) | [`ConvTranspose3d`], [`conv_transpose3d_layer`] |
//! | pooling (kernel = stride), global pooling | [`avg_pool3d`], [`max_pool3d`], [`global_avg_pool3d`], [`global_max_pool3d`] | reshape + mean / max | [`Pool3d`] |
//! | upsampling | [`upsample_nearest3d`] (integer factor), [`upsample_trilinear3d`] (any size, `align_corners`) | broadcast + reshape; `index_select` | [`Upsample3d`] |
//! | normalization | [`group_normalize`] | mean / variance ops | [`GroupNorm`] ([`group_norm`]), [`InstanceNorm`] ([`instance_norm`]) |
//! | activation | [`leaky_relu`] | `relu` | [`LeakyRelu`] |
//! | fully connected | candle_nn's [`Linear`] | | [`Mlp`] ([`mlp()`]) |
//!
//! Networks (Rhai-free; each a name, a serde configuration and weights in a `VarMap`, saved as
//! safetensors with the configuration as JSON beside them, see [`weights`]):
//!
//! | network | in | out |
//! |---|---|---|
//! | [`AffineNet`] (Chen et al. 2024, CNN encoder) | pair `(N, 2, D, H, W)` on a fixed grid | `(N, 12)` affine parameters, regsh's `Linear` convention |
//! | [`UNet`] (Wang et al., VoxelMorph) | pair `(N, 2, D, H, W)` | `(N, 3, D, H, W)` displacement in network-grid voxels |
//! | [`Sequential`] (PyTorch's `nn.Sequential` of [`LayerSpec`]s) | what its first layer takes | what its last layer gives |
//!
//! [`pair_input`] resamples a moving / fixed pair onto a network grid; [`flow_to_world`] turns a voxel
//! displacement into regsh's mm field.
//!
//! Off the CPU (the `cuda` feature with a GPU) the fused ops fall back to their slow twins, which run on
//! candle's own `conv2d`.
//!
//! This layer imports only `image`, `ops`, `error` and candle (no `spatial`, `dsl` or `pipeline`).

pub mod activation;
pub mod affine_net;
pub mod conv;
pub mod conv_transpose;
pub(crate) mod im2col;
pub mod input;
pub mod mlp;
pub mod norm;
pub mod pool;
pub mod sequential;
pub mod unet;
pub mod upsample;
pub mod weights;

pub use activation::{leaky_relu, LeakyRelu};
pub use affine_net::{AffineNet, AffineNetConfig};

pub use conv::{conv3d, conv3d_layer, conv3d_slow, Conv3d, Conv3dConfig};
pub use conv_transpose::{
    conv_transpose3d, conv_transpose3d_layer, conv_transpose3d_slow, ConvTranspose3d, ConvTranspose3dConfig,
};
pub use input::{flow_to_world, network_grid, pair_input};
pub use mlp::{linear, mlp, mlp_with_final_init, Linear, Mlp};
pub use norm::{group_norm, group_normalize, instance_norm, GroupNorm, InstanceNorm};
pub use pool::{avg_pool3d, global_avg_pool3d, global_max_pool3d, max_pool3d, Pool3d, PoolKind};
pub use sequential::{LayerSpec, Sequential, SequentialConfig};
pub use unet::{UNet, UNetConfig};
pub use upsample::{upsample_nearest3d, upsample_trilinear3d, Upsample3d, UpsampleMode};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A size, stride or padding per spatial axis `(D, H, W)` (= z, y, x of a regsh image), in voxels. From
/// one `usize` (the same on every axis), an array or a tuple. Serializes as `[d, h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dim3(pub [usize; 3]);

impl From<usize> for Dim3 {
    fn from(v: usize) -> Self {
        Dim3([v; 3])
    }
}

impl From<[usize; 3]> for Dim3 {
    fn from(v: [usize; 3]) -> Self {
        Dim3(v)
    }
}

impl From<(usize, usize, usize)> for Dim3 {
    fn from((d, h, w): (usize, usize, usize)) -> Self {
        Dim3([d, h, w])
    }
}

/// The five dimensions of a 5-D tensor with no zero-sized axis, or [`Error::Shape`] naming `what`.
pub(crate) fn dims5(op: &str, what: &str, t: &Tensor) -> Result<[usize; 5]> {
    match t.dims() {
        &[a, b, c, d, e] if ![a, b, c, d, e].contains(&0) => Ok([a, b, c, d, e]),
        d => Err(Error::Shape { op: op.into(), expected: format!("a non-empty 5-D {what}"), actual: format!("{d:?}") }),
    }
}

/// A regsh error as a candle error (for `Module::forward`): a backend error as itself, others wrapped.
pub(crate) fn to_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Tensor(t) => t,
        other => candle_core::Error::wrap(other),
    }
}
