//! Grid-consistent image operations: crop, pad, intensity normalization, thresholds, one-hot labels.
//!
//! Statistics (min, max, percentiles, mean, standard deviation) are taken over finite voxels only, so a
//! few NaN or infinite voxels do not poison a whole image; [`replace_non_finite`] removes them.

use candle_core::{DType, Tensor};

use super::{stats_of, DataType, Image};
use crate::error::{Error, Result};
use crate::names;

/// Crops to voxels `start .. start + size` along x, y, z. The grid moves with it: every kept voxel has the
/// same world position as before. Values and datatype are kept.
///
/// Errors: [`Error::InvalidArgument`] when the box is empty or leaves the image.
pub fn crop(image: &Image, start: [usize; 3], size: [usize; 3]) -> Result<Image> {
    let shape = image.grid().shape();
    for a in 0..3 {
        if size[a] == 0 || start[a] + size[a] > shape[a] {
            return Err(Error::arg(
                "crop",
                format!("box start {start:?} size {size:?} does not fit in the image of shape {shape:?}"),
            ));
        }
    }
    let d = image.data().narrow(3, start[0], size[0])?.narrow(2, start[1], size[1])?.narrow(1, start[2], size[2])?;
    let grid = image.grid().sub_grid(start.map(|s| s as i64), size)?;
    Image::new(d.contiguous()?, grid, image.dtype())
}

/// Pads with `before` and `after` voxels along x, y, z, filled with `value`. Every original voxel keeps
/// its world position (the origin moves outward).
///
/// Errors: only tensor-backend errors.
pub fn pad(image: &Image, before: [usize; 3], after: [usize; 3], value: f64) -> Result<Image> {
    let mut d = image.data().clone();
    // Tensor axes 3, 2, 1 are x, y, z.
    for (a, dim) in [(0, 3), (1, 2), (2, 1)] {
        if before[a] == 0 && after[a] == 0 {
            continue;
        }
        let mut parts = Vec::new();
        let mut shape = d.dims().to_vec();
        if before[a] > 0 {
            shape[dim] = before[a];
            parts.push(Tensor::full(value, shape.clone(), d.device())?.to_dtype(d.dtype())?);
        }
        parts.push(d.clone());
        if after[a] > 0 {
            shape[dim] = after[a];
            parts.push(Tensor::full(value, shape, d.device())?.to_dtype(d.dtype())?);
        }
        d = Tensor::cat(&parts, dim)?;
    }
    let shape = image.grid().shape();
    let size = [0, 1, 2].map(|a| shape[a] + before[a] + after[a]);
    let grid = image.grid().sub_grid(before.map(|b| -(b as i64)), size)?;
    Image::new(d, grid, image.dtype())
}

/// The smallest box `(start, size)` in voxels (x, y, z) holding every voxel of channel 0 that is
/// non-zero, grown by `margin` voxels and clipped to the image; `None` when no voxel is non-zero.
pub fn bounding_box(mask: &Image, margin: usize) -> Result<Option<([usize; 3], [usize; 3])>> {
    let v = mask.channel(0)?.to_vec_f32()?;
    let [nx, ny, _] = mask.grid().shape();
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for (n, &x) in v.iter().enumerate() {
        if x != 0.0 && !x.is_nan() {
            let ijk = [n % nx, (n / nx) % ny, n / (nx * ny)];
            for a in 0..3 {
                lo[a] = lo[a].min(ijk[a]);
                hi[a] = hi[a].max(ijk[a]);
            }
        }
    }
    if lo[0] == usize::MAX {
        return Ok(None);
    }
    let shape = mask.grid().shape();
    let start = [0, 1, 2].map(|a| lo[a].saturating_sub(margin));
    let end = [0, 1, 2].map(|a| (hi[a] + margin).min(shape[a] - 1));
    Ok(Some((start, [0, 1, 2].map(|a| end[a] - start[a] + 1))))
}

/// Intensity normalizations, as ANTs / MONAI / nnU-Net offer them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Normalization {
    /// Linear map of [min, max] to [0, 1].
    MinMax,
    /// Clip to the `lo` and `hi` percentiles (0-100, linear interpolation between ranks as numpy), then
    /// map that range to [0, 1].
    Percentile { lo: f64, hi: f64 },
    /// Subtract the mean, divide by the standard deviation.
    ZScore,
}

impl Normalization {
    /// Parses `minmax`, `percentile` (1st-99th by default), `zscore` (with "did you mean").
    pub fn parse(name: &str) -> Result<Self> {
        names::lookup(
            "normalization",
            name,
            &[
                ("minmax", Normalization::MinMax),
                ("percentile", Normalization::Percentile { lo: 1.0, hi: 99.0 }),
                ("zscore", Normalization::ZScore),
            ],
        )
    }
}

/// The `q`-th percentile (0-100) of the finite values, numpy's default (linear) interpolation.
/// `None` when there is no finite value.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let pos = (q.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, a, rest) = v.select_nth_unstable_by(lo, f64::total_cmp);
    let a = *a;
    if frac == 0.0 || rest.is_empty() {
        return Some(a);
    }
    let b = rest.iter().copied().fold(f64::INFINITY, f64::min);
    Some(a + frac * (b - a))
}

/// Normalizes intensities (all channels together). Statistics come from the finite voxels inside `mask`
/// (non-zero voxels of its channel 0, on the same grid) or from all finite voxels; the map is applied
/// everywhere. NaN stays NaN. The result is float32.
///
/// Errors: [`Error::Shape`] for a mask on another grid; [`Error::InvalidArgument`] for percentiles out of
/// order or no finite voxel to take statistics from.
pub fn normalize(image: &Image, method: Normalization, mask: Option<&Image>) -> Result<Image> {
    let values = image.to_vec_f64()?;
    let sample: Vec<f64> = match mask {
        Some(m) => {
            if !m.grid().same_as(image.grid(), 1e-6) {
                return Err(Error::Shape {
                    op: "normalize".into(),
                    expected: format!("a mask on the image grid {}", image.grid()),
                    actual: format!("{}", m.grid()),
                });
            }
            let mv = m.channel(0)?.to_vec_f32()?;
            let n = mv.len();
            values.iter().enumerate().filter(|(i, _)| mv[i % n] != 0.0).map(|(_, v)| *v).collect()
        }
        None => values.clone(),
    };
    let st = stats_of(&sample);
    if st.min.is_nan() {
        return Err(Error::arg("normalize", "no finite voxel to take statistics from"));
    }
    let (shift, scale, clip) = match method {
        Normalization::MinMax => (st.min, st.max - st.min, None),
        Normalization::Percentile { lo, hi } => {
            if !(0.0..=100.0).contains(&lo) || !(0.0..=100.0).contains(&hi) || lo >= hi {
                return Err(Error::arg(
                    "normalize",
                    format!("percentiles must satisfy 0 <= lo < hi <= 100, got {lo}, {hi}"),
                ));
            }
            let a = percentile(&sample, lo).unwrap_or(st.min);
            let b = percentile(&sample, hi).unwrap_or(st.max);
            (a, b - a, Some((a, b)))
        }
        Normalization::ZScore => {
            let fin: Vec<f64> = sample.iter().copied().filter(|v| v.is_finite()).collect();
            let var = fin.iter().map(|v| (v - st.mean).powi(2)).sum::<f64>() / fin.len() as f64;
            (st.mean, var.sqrt(), None)
        }
    };
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let out: Vec<f32> = values
        .iter()
        .map(|&v| {
            let v = match clip {
                Some((a, b)) if v.is_finite() => v.clamp(a, b),
                _ => v,
            };
            ((v - shift) / scale) as f32
        })
        .collect();
    Image::from_vec_on(out, image.channels(), image.grid().clone(), image.data().device())
}

/// Replaces NaN and infinite voxels by `value`; other voxels are unchanged.
pub fn replace_non_finite(image: &Image, value: f64) -> Result<Image> {
    let d = image.data();
    let max = if d.dtype() == DType::F32 { f32::MAX as f64 } else { f64::MAX };
    let finite = d.eq(d)?.mul(&d.abs()?.le(max)?)?; // NaN != NaN; inf > MAX
    let fill = Tensor::full(value, d.dims(), d.device())?.to_dtype(d.dtype())?;
    let zeroed = finite.where_cond(d, &fill)?;
    Image::new(zeroed, image.grid().clone(), image.dtype())
}

/// A mask (uint8 values 0 / 1) of the voxels with `lo <= value <= hi` (either bound may be infinite).
/// NaN voxels are outside.
pub fn threshold(image: &Image, lo: f64, hi: f64) -> Result<Image> {
    let d = image.data();
    let m = d.ge(lo)?.mul(&d.le(hi)?)?.to_dtype(DType::F32)?;
    Image::new(m, image.grid().clone(), DataType::Uint8)
}

/// The gradient magnitude `|∇I|` in intensity per mm of a single-channel image, after a Gaussian of
/// `sigma_mm` (0: none): central differences inside, one-sided at the borders (numpy's `gradient`),
/// divided by each axis' spacing (the direction matrix is a rotation, so the magnitude is that of the
/// world gradient). Sedghi et al. register T2 against the gradient magnitude of T1 (seed 003, exp. 3).
///
/// Errors: [`Error::Shape`] for a multi-channel image; a negative or non-finite sigma.
pub fn gradient_magnitude(image: &Image, sigma_mm: f64) -> Result<Image> {
    if image.channels() != 1 {
        return Err(Error::Shape {
            op: "gradient_magnitude".into(),
            expected: "one channel".into(),
            actual: format!("{} channels", image.channels()),
        });
    }
    if !(sigma_mm.is_finite() && sigma_mm >= 0.0) {
        return Err(Error::arg("gradient_magnitude", format!("sigma must be >= 0 mm, got {sigma_mm}")));
    }
    let smoothed = if sigma_mm > 0.0 {
        super::smooth::smooth(image, [sigma_mm; 3], super::smooth::SigmaUnit::Mm)?
    } else {
        image.clone()
    };
    let v = smoothed.to_vec_f64()?;
    let [nx, ny, nz] = image.grid().shape();
    let sp = image.grid().spacing();
    let at = |x: usize, y: usize, z: usize| v[(z * ny + y) * nx + x];
    // d/d(axis) at index i of n along it, from the values at i - 1, i, i + 1 (numpy's gradient).
    let diff = |i: usize, n: usize, get: &dyn Fn(usize) -> f64, h: f64| -> f64 {
        if n < 2 {
            0.0
        } else if i == 0 {
            (get(1) - get(0)) / h
        } else if i == n - 1 {
            (get(n - 1) - get(n - 2)) / h
        } else {
            (get(i + 1) - get(i - 1)) / (2.0 * h)
        }
    };
    let mut out = Vec::with_capacity(v.len());
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let gx = diff(x, nx, &|k| at(k, y, z), sp[0]);
                let gy = diff(y, ny, &|k| at(x, k, z), sp[1]);
                let gz = diff(z, nz, &|k| at(x, y, k), sp[2]);
                out.push((gx * gx + gy * gy + gz * gz).sqrt() as f32);
            }
        }
    }
    Image::from_vec_on(out, 1, image.grid().clone(), image.data().device())
}

/// One-hot encoding of a single-channel label map: channel `n` is 1 where the label is `labels[n]`.
/// `labels` defaults to the sorted distinct values present (background included).
///
/// Errors: [`Error::Shape`] for a multi-channel input; [`Error::InvalidArgument`] for non-integer or
/// non-finite values, or more than 1024 labels.
pub fn one_hot(image: &Image, labels: Option<&[i64]>) -> Result<(Image, Vec<i64>)> {
    if image.channels() != 1 {
        return Err(Error::Shape {
            op: "one_hot".into(),
            expected: "1 channel".into(),
            actual: format!("{} channels", image.channels()),
        });
    }
    let v = image.to_vec_f64()?;
    if let Some(bad) = v.iter().find(|x| !x.is_finite() || x.fract() != 0.0) {
        return Err(Error::arg("one_hot", format!("label maps hold integers; found {bad}")));
    }
    let labels: Vec<i64> = match labels {
        Some(l) => l.to_vec(),
        None => {
            let mut l: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            l.sort_unstable();
            l.dedup();
            l
        }
    };
    if labels.is_empty() || labels.len() > 1024 {
        return Err(Error::arg("one_hot", format!("{} labels (between 1 and 1024 are supported)", labels.len())));
    }
    let channel: std::collections::HashMap<i64, usize> = labels.iter().enumerate().map(|(c, &l)| (l, c)).collect();
    let n = v.len();
    let mut out = vec![0f32; labels.len() * n];
    for (i, &x) in v.iter().enumerate() {
        if let Some(&c) = channel.get(&(x as i64)) {
            out[c * n + i] = 1.0;
        }
    }
    let oh = Image::from_vec_on(out, labels.len(), image.grid().clone(), image.data().device())?;
    Ok((oh.with_dtype(DataType::Uint8), labels))
}
