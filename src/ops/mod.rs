//! Fused tensor kernels as candle custom ops, each with a hand-written backward and a slow twin built from
//! differentiable candle ops (used by the parity tests).
//!
//! | op | fast | slow twin |
//! |---|---|---|
//! | sampling an image at points (trilinear / nearest) | [`grid_sample`] | [`grid_sample_slow`] |
//! | sample points of an affine map on a grid | [`affine_grid`] | [`affine_grid_slow`] |
//! | affine warp (points and sampling fused) | [`warp_affine`] | [`affine_grid_slow`] + [`grid_sample_slow`] |
//! | displacement-field warp (fused) | [`warp_field`] | candle ops + [`grid_sample_slow`] |
//! | separable local sums (LNCC windows) | [`local_filter`] | [`local_filter_slow`] (conv1d) |
//! | local normalized cross-correlation with its gradient to the moving image | [`lncc::lncc`] ([`lncc::lncc_loss_grad`]) | [`crate::metrics::functional::lncc_slow`] |
//! | Parzen-window moments and joint histograms (CR, MI), global or per patch | [`parzen::parzen_moments`], [`parzen::parzen_joint`] | [`parzen::parzen_moments_slow`], [`parzen::parzen_joint_slow`] |
//! | a global measure (SSD, NCC, MI, NMI, CR) on a point list through a linear map, with its gradient to the map | [`point_metric`] ([`point_metric::point_loss`]) | [`crate::metrics::functional::point_metric_slow`] |

pub mod affine_grid;
pub mod grid_sample;
pub mod lncc;
pub mod local_filter;
pub mod parzen;
pub mod point_metric;
pub(crate) mod trilinear;
pub mod warp;

pub use affine_grid::{affine_grid, affine_grid_slow};
pub use grid_sample::{grid_sample, grid_sample_slow, SampleMode};
pub use local_filter::{local_filter, local_filter_slow};
pub use point_metric::point_metric;
pub use warp::{warp_affine, warp_field};

use candle_core::{CpuStorage, Layout, Result};

/// The contiguous f32 slice behind a storage + layout, or an error naming the op.
pub(crate) fn f32_slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// How many accumulation buffers a scatter-add backward uses: one per worker thread, at most 8.
pub(crate) fn scatter_chunks(n: usize) -> usize {
    rayon::current_num_threads().clamp(1, 8).min(n.max(1))
}
