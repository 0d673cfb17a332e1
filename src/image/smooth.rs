//! Gaussian smoothing and the downsampling pyramid.

use rayon::prelude::*;

use super::resample::{resample, Interpolation, Padding};
use super::{Grid, Image};
use crate::error::{Error, Result};

/// Units of a Gaussian sigma.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigmaUnit {
    /// Millimetres (divided by each axis' spacing).
    Mm,
    /// Voxels of the image being smoothed.
    Voxels,
}

/// Image smoothing cuts its kernel at this many sigmas (as scipy's `gaussian_filter`, `truncate=4`).
pub const TRUNCATE: f64 = 4.0;

/// The taps `exp(-x^2 / (2 sigma^2))` of a Gaussian of `sigma` voxels for `x` in `-radius..=radius`,
/// divided by their sum (f64): the one Gaussian window of regsh. How far it reaches is the caller's
/// rule ([`gaussian_kernel`]: `ceil(truncate * sigma)`; SSIM: scipy's `int(truncate * sigma + 0.5)`).
pub fn gaussian_taps(sigma: f64, radius: usize) -> Vec<f64> {
    let r = radius as i64;
    let w: Vec<f64> = (-r..=r).map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp()).collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// Normalized 1-D Gaussian kernel (f32) of standard deviation `sigma` voxels, radius
/// `ceil(truncate * sigma)`: `truncate` [`TRUNCATE`] (4) for image smoothing, 3 for LNCC's Gaussian
/// window and the dense stages' gradient and field smoothing. A `sigma` of 0 or less gives the identity
/// `[1]`.
pub fn gaussian_kernel(sigma: f64, truncate: f64) -> Vec<f32> {
    if sigma.is_nan() || sigma <= 0.0 {
        return vec![1.0];
    }
    gaussian_taps(sigma, (truncate * sigma).ceil() as usize).into_iter().map(|v| v as f32).collect()
}

/// Gaussian smoothing with standard deviation `sigma` per axis (x, y, z) in `unit`; a sigma of 0 leaves
/// that axis alone. Separable; the border is replicated (zero-flux Neumann, as ITK does), so a
/// constant image stays constant. NaN voxels spread to their neighbours: replace them first
/// (see [`super::ops::replace_non_finite`]).
///
/// Errors: [`Error::InvalidArgument`] for a negative or non-finite sigma.
///
/// ```
/// use regsh::image::{smooth::{smooth, SigmaUnit}, Grid, Image};
/// let g = Grid::axis_aligned([8, 8, 8], [2.0, 2.0, 2.0], [0.0; 3]).unwrap();
/// let img = Image::full(5.0, 1, g).unwrap();
/// let s = smooth(&img, [3.0; 3], SigmaUnit::Mm).unwrap();
/// assert!((s.stats().unwrap().mean - 5.0).abs() < 1e-5); // a constant stays constant
/// ```
pub fn smooth(image: &Image, sigma: [f64; 3], unit: SigmaUnit) -> Result<Image> {
    if sigma.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(Error::arg("smooth", format!("sigma must be finite and >= 0, got {sigma:?}")));
    }
    let sp = image.grid().spacing();
    let sv = match unit {
        SigmaUnit::Mm => [sigma[0] / sp[0], sigma[1] / sp[1], sigma[2] / sp[2]],
        SigmaUnit::Voxels => sigma,
    };
    let shape = image.grid().shape();
    let mut data = image.to_vec_f32()?;
    for (axis, &s) in sv.iter().enumerate() {
        if s > 0.0 && shape[axis] > 1 {
            data = convolve_axis(&data, shape, axis, &gaussian_kernel(s, TRUNCATE));
        }
    }
    Image::from_vec_on(data, image.channels(), image.grid().clone(), image.data().device())
}

/// Convolves `(C, Z, Y, X)` data along one axis (0 = x, 1 = y, 2 = z) with a centred odd kernel,
/// replicating the border. See [`convolve_axis_into`].
fn convolve_axis(src: &[f32], shape: [usize; 3], axis: usize, kernel: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    convolve_axis_into(src, &mut out, shape, axis, kernel, AxisBorder::Replicate);
    out
}

/// What [`convolve_axis_into`] takes beyond the ends of the axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AxisBorder {
    /// The end voxel, repeated (zero-flux, as ITK smooths: a constant stays constant).
    Replicate,
    /// Zeros: those taps are left out (the local sums of LNCC windows; a self-adjoint filter).
    Zero,
}

/// Convolves volumes of `shape` voxels (x, y, z), stored one after another (x fastest), along one axis
/// (0 = x, 1 = y, 2 = z) with a centred odd kernel, into `out` (same length, overwritten), with
/// `border` beyond the axis' ends.
///
/// Every output voxel sums `kernel[q] * src[pos + q - r]` in kernel order. Parallel over output
/// (volume, z) planes. Along y whole rows and along z whole planes are combined (the inner loop is
/// contiguous and vectorizes); along x the bounds are checked only near the row's ends.
pub(crate) fn convolve_axis_into(
    src: &[f32],
    out: &mut [f32],
    shape: [usize; 3],
    axis: usize,
    kernel: &[f32],
    border: AxisBorder,
) {
    // One copy of the loops per border, so the border test is resolved at compile time.
    match border {
        AxisBorder::Replicate => convolve_axis_with::<true>(src, out, shape, axis, kernel),
        AxisBorder::Zero => convolve_axis_with::<false>(src, out, shape, axis, kernel),
    }
}

fn convolve_axis_with<const REPLICATE: bool>(
    src: &[f32],
    out: &mut [f32],
    shape: [usize; 3],
    axis: usize,
    kernel: &[f32],
) {
    let [nx, ny, nz] = shape;
    let plane = nx * ny;
    if plane == 0 || nz == 0 {
        return;
    }
    let r = kernel.len() / 2;
    // The source index of tap `q` at `pos` on an axis of `n`, or `None` for a zero-padded tap.
    let source = |pos: usize, q: usize, n: usize| -> Option<usize> {
        let t = pos + q;
        if REPLICATE {
            Some(t.saturating_sub(r).min(n - 1))
        } else {
            (t >= r && t - r < n).then(|| t - r)
        }
    };
    out.par_chunks_mut(plane).enumerate().for_each(|(ck, dst)| {
        let (c, k) = (ck / nz, ck % nz);
        let vol = &src[c * plane * nz..(c + 1) * plane * nz];
        match axis {
            0 => {
                // Tap by tap over the whole row (a loop that vectorizes, as along y and z); each output
                // still sums its taps in kernel order, so the result is that of a dot product per output.
                for j in 0..ny {
                    let row = &vol[k * plane + j * nx..][..nx];
                    let d = &mut dst[j * nx..(j + 1) * nx];
                    d.fill(0.0);
                    for (q, &w) in kernel.iter().enumerate() {
                        // Outputs whose source `i + q - r` lies on the row: `lo..hi`.
                        let lo = r.saturating_sub(q).min(nx);
                        let hi = (nx + r).saturating_sub(q).min(nx);
                        if lo < hi {
                            let s0 = lo + q - r;
                            for (o, v) in d[lo..hi].iter_mut().zip(&row[s0..s0 + (hi - lo)]) {
                                *o += w * v;
                            }
                        }
                        if REPLICATE {
                            for i in (0..lo).chain(hi..nx) {
                                if let Some(t) = source(i, q, nx) {
                                    d[i] += w * row[t];
                                }
                            }
                        }
                    }
                }
            }
            1 => {
                dst.fill(0.0);
                for j in 0..ny {
                    let d = &mut dst[j * nx..(j + 1) * nx];
                    for (q, w) in kernel.iter().enumerate() {
                        let Some(jj) = source(j, q, ny) else { continue };
                        let row = &vol[k * plane + jj * nx..][..nx];
                        for (o, v) in d.iter_mut().zip(row) {
                            *o += w * v;
                        }
                    }
                }
            }
            _ => {
                // Whole planes combined: one long contiguous loop per tap.
                dst.fill(0.0);
                for (q, w) in kernel.iter().enumerate() {
                    let Some(kk) = source(k, q, nz) else { continue };
                    for (o, v) in dst.iter_mut().zip(&vol[kk * plane..][..plane]) {
                        *o += w * v;
                    }
                }
            }
        }
    });
}

/// Default anti-aliasing sigma (voxels of the finer image) before downsampling by `factor`: `factor / 3`
/// (scikit-image's `pyramid_reduce` choice, `2 * factor / 6`); 0 at factor 1.
pub fn default_pyramid_sigma(factor: f64) -> f64 {
    if factor <= 1.0 {
        0.0
    } else {
        factor / 3.0
    }
}

/// One level of a pyramid.
#[derive(Clone, Debug)]
pub struct PyramidLevel {
    /// Downsampling factor relative to the input.
    pub factor: f64,
    /// Gaussian sigma used (voxels of the input).
    pub sigma: f64,
    /// The level's image: same world extent and centre, `round(n / factor)` voxels per axis.
    pub image: Image,
}

/// A downsampling pyramid: for each factor (e.g. `[16, 8, 4, 2, 1]`, non-increasing, each >= 1), the image
/// smoothed with `sigmas[l]` voxels (default [`default_pyramid_sigma`]) and resampled trilinearly onto
/// [`Grid::downsampled`]. Each level keeps the world extent and centre of the input.
///
/// Errors: [`Error::InvalidArgument`] for an empty or increasing factor list, a factor below 1, or a
/// `sigmas` list of another length.
pub fn pyramid(image: &Image, factors: &[f64], sigmas: Option<&[f64]>) -> Result<Vec<PyramidLevel>> {
    if factors.is_empty() {
        return Err(Error::arg("pyramid", "no factors given"));
    }
    if factors.windows(2).any(|w| w[1] > w[0]) {
        return Err(Error::arg("pyramid", format!("factors must not increase (coarse to fine), got {factors:?}")));
    }
    if let Some(s) = sigmas {
        if s.len() != factors.len() {
            return Err(Error::arg("pyramid", format!("{} sigmas for {} factors", s.len(), factors.len())));
        }
    }
    factors
        .iter()
        .enumerate()
        .map(|(l, &f)| {
            let grid: Grid = image.grid().downsampled(f)?;
            let sigma = sigmas.map(|s| s[l]).unwrap_or_else(|| default_pyramid_sigma(f));
            let smoothed = if sigma > 0.0 { smooth(image, [sigma; 3], SigmaUnit::Voxels)? } else { image.clone() };
            let level =
                if f == 1.0 { smoothed } else { resample(&smoothed, &grid, Interpolation::Linear, Padding::Border)? };
            Ok(PyramidLevel { factor: f, sigma, image: level })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_normalized_and_symmetric() {
        let k = gaussian_kernel(1.5, TRUNCATE);
        assert_eq!(k.len(), 2 * 6 + 1);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(k[0], k[k.len() - 1]);
    }
}
