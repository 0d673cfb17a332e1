//! Resampling an image onto another grid through physical space.
//!
//! Every target voxel centre is mapped to world mm by the target grid, then to a fractional voxel index
//! of the source by the source grid (`M = source.world_to_voxel * target.voxel_to_world`), and the
//! source is interpolated there. Out-of-field samples follow [`Padding`]. This is the non-differentiable
//! image operation; the differentiable warp through a transform lives in `spatial`.

use candle_core::Tensor;
use nalgebra::Matrix4;
use rayon::prelude::*;

use super::trilinear::{sample, sample_padded, Pad};
use super::{Grid, Image};
use crate::error::Result;
use crate::names;

/// Interpolation of voxel values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Trilinear: for intensities.
    Linear,
    /// Nearest voxel: for label maps and masks (values are copied exactly, whatever their type).
    Nearest,
}

impl Interpolation {
    /// Parses `linear` / `trilinear` / `nearest` / `nn` (with "did you mean").
    pub fn parse(name: &str) -> Result<Self> {
        names::lookup(
            "interpolation",
            name,
            &[
                ("linear", Interpolation::Linear),
                ("trilinear", Interpolation::Linear),
                ("nearest", Interpolation::Nearest),
                ("nn", Interpolation::Nearest),
            ],
        )
    }
}

/// What a sample outside the source field of view gets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    /// Zero outside. For trilinear, corners outside the image count as zero (PyTorch `grid_sample`
    /// `padding_mode="zeros"`), so values fade to zero over the last voxel.
    Zero,
    /// The nearest border voxel's value (coordinates clamped into the image).
    Border,
    /// A constant value outside (corners outside count as this value).
    Value(f32),
}

impl Padding {
    /// Parses `zero` / `zeros` / `border` (with "did you mean").
    pub fn parse(name: &str) -> Result<Self> {
        names::lookup(
            "padding",
            name,
            &[("zero", Padding::Zero), ("zeros", Padding::Zero), ("border", Padding::Border)],
        )
    }
}

/// Resamples `image` onto `target` (all channels) in physical space.
///
/// Linear output is float32; nearest output keeps the values and datatype of the input.
/// Errors: only tensor-backend errors.
pub fn resample(image: &Image, target: &Grid, interp: Interpolation, padding: Padding) -> Result<Image> {
    let m = snap(image.grid().world_to_voxel() * target.voxel_to_world());
    match interp {
        Interpolation::Linear => {
            let src = image.to_vec_f32()?;
            let out = trilinear(&src, image.channels(), image.grid().shape(), &m, target.shape(), padding);
            Image::from_vec_on(out, image.channels(), target.clone(), image.data().device())
        }
        Interpolation::Nearest => nearest(image, target, &m, padding),
    }
}

/// Rounds entries of a voxel-to-voxel matrix that are within 1e-9 of an integer, so that grids which
/// coincide up to floating-point noise (the same grid, a shift by whole voxels) sample voxel centres
/// exactly instead of blending in a 1e-15 share of a neighbour.
pub(crate) fn snap(mut m: Matrix4<f64>) -> Matrix4<f64> {
    for v in m.iter_mut() {
        if (*v - v.round()).abs() < 1e-9 {
            *v = v.round();
        }
    }
    m
}

/// Trilinear sampling of `src` (`(C, Z, Y, X)` on a grid of `shape` x, y, z) at `M * ijk` for every voxel of
/// a target of `out_shape`, with [`super::trilinear`]'s sampler.
pub(crate) fn trilinear(
    src: &[f32],
    channels: usize,
    shape: [usize; 3],
    m: &Matrix4<f64>,
    out_shape: [usize; 3],
    padding: Padding,
) -> Vec<f32> {
    let nvox = shape[0] * shape[1] * shape[2];
    let [ox, oy, oz] = out_shape;
    let mut out = vec![0f32; channels * ox * oy * oz];
    out.par_chunks_mut(ox * oy).enumerate().for_each(|(cz, slab)| {
        let (c, k) = (cz / oz, cz % oz);
        let img = &src[c * nvox..(c + 1) * nvox];
        for j in 0..oy {
            // Row start and step: the map is affine, so walk along x by adding a column.
            let (kf, jf) = (k as f64, j as f64);
            let base = [
                m[(0, 1)] * jf + m[(0, 2)] * kf + m[(0, 3)],
                m[(1, 1)] * jf + m[(1, 2)] * kf + m[(1, 3)],
                m[(2, 1)] * jf + m[(2, 2)] * kf + m[(2, 3)],
            ];
            for i in 0..ox {
                let f = i as f64;
                let p = [base[0] + m[(0, 0)] * f, base[1] + m[(1, 0)] * f, base[2] + m[(2, 0)] * f];
                slab[j * ox + i] = match padding {
                    Padding::Zero => sample(img, shape, p, false),
                    Padding::Border => sample(img, shape, p, true),
                    Padding::Value(v) => sample_padded(img, shape, p, Pad::Value(v)),
                };
            }
        }
    });
    out
}

/// Nearest-neighbour resampling by gathering source voxels: exact copies of values, any element type.
fn nearest(image: &Image, target: &Grid, m: &Matrix4<f64>, padding: Padding) -> Result<Image> {
    let [ox, oy, _] = target.shape();
    gather_nearest(image, target, padding, |flat| {
        let (i, j, k) = (flat % ox, (flat / ox) % oy, flat / (ox * oy));
        super::grid::apply(m, [i as f64, j as f64, k as f64])
    })
}

/// Nearest-neighbour sampling of `image` at `point(v)` (fractional voxel indices of `image`) for every
/// voxel `v` of `target`, by gathering: values are copied exactly, in the image's own element type
/// (labels beyond 2^24 stay exact). Outside: the padding value (zero, border clamp, or a constant).
pub(crate) fn gather_nearest(
    image: &Image,
    target: &Grid,
    padding: Padding,
    point: impl Fn(usize) -> [f64; 3] + Sync,
) -> Result<Image> {
    let [nx, ny, nz] = image.grid().shape();
    let [ox, oy, oz] = target.shape();
    let nvox = nx * ny * nz;
    // Index nvox is an extra element holding the padding value.
    let idx: Vec<u32> = (0..ox * oy * oz)
        .into_par_iter()
        .map(|flat| {
            let p = point(flat);
            let mut q = [p[0].round(), p[1].round(), p[2].round()];
            let lim = [nx as f64 - 1.0, ny as f64 - 1.0, nz as f64 - 1.0];
            if padding == Padding::Border {
                q = [q[0].clamp(0.0, lim[0]), q[1].clamp(0.0, lim[1]), q[2].clamp(0.0, lim[2])];
            }
            if q.iter().zip(lim).any(|(v, l)| !(*v >= 0.0 && *v <= l)) {
                nvox as u32
            } else {
                ((q[2] as usize * ny + q[1] as usize) * nx + q[0] as usize) as u32
            }
        })
        .collect();
    let dev = image.data().device().clone();
    let idx = Tensor::from_vec(idx, ox * oy * oz, &dev)?;
    let pad = match padding {
        Padding::Value(v) => v as f64,
        _ => 0.0,
    };
    let c = image.channels();
    let flat = image.data().reshape((c, nvox))?;
    let padcol = Tensor::full(pad, (c, 1), &dev)?.to_dtype(image.data().dtype())?;
    let src = Tensor::cat(&[&flat, &padcol], 1)?;
    let out = src.index_select(&idx, 1)?.reshape((c, oz, oy, ox))?;
    Image::new(out, target.clone(), image.dtype())
}
