//! Response functions of similarity measures: the measure of a fixed image against the moving image moved
//! step by step along one rigid degree of freedom (Sedghi et al., "Semi-Supervised Deep Metrics for
//! Image Registration", Fig. 2; the capture-range plots of Pluim et al.). A well-behaved measure has one
//! maximum at the true alignment and falls off smoothly on both sides.

use candle_core::Tensor;

use crate::image::resample::Padding;
use crate::image::Image;
use crate::metrics::Metric;
use crate::spatial::linear::{Linear, LinearKind};
use crate::spatial::warp::{warp, WarpInterpolation};
use crate::{Error, Result};

/// The degree of freedom a response sweeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepAxis {
    /// A translation along world axis 0, 1 or 2 (x, y, z; RAS), steps in mm.
    Translation(usize),
    /// A rotation about world axis 0, 1 or 2 through the fixed grid's centre, steps in degrees.
    Rotation(usize),
}

impl SweepAxis {
    /// `"x"`, `"y"`, `"z"` (translations) or `"rx"`, `"ry"`, `"rz"` (rotations).
    ///
    /// Errors: [`Error::InvalidArgument`] for another name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "x" => SweepAxis::Translation(0),
            "y" => SweepAxis::Translation(1),
            "z" => SweepAxis::Translation(2),
            "rx" => SweepAxis::Rotation(0),
            "ry" => SweepAxis::Rotation(1),
            "rz" => SweepAxis::Rotation(2),
            _ => {
                return Err(Error::arg(
                    "response",
                    format!("axis {s:?}: one of x, y, z (translations, mm) or rx, ry, rz (rotations, degrees)"),
                ))
            }
        })
    }

    /// The unit of the steps: `"mm"` or `"degrees"`.
    pub fn unit(&self) -> &'static str {
        match self {
            SweepAxis::Translation(_) => "mm",
            SweepAxis::Rotation(_) => "degrees",
        }
    }

    /// The rigid transform of one step `s` about `centre` (mm, world).
    pub fn transform(&self, s: f64, centre: [f64; 3]) -> Result<Linear> {
        let mut p = [0.0; 6];
        match *self {
            SweepAxis::Translation(a) => p[a] = s,
            SweepAxis::Rotation(a) => p[3 + a] = s.to_radians(),
        }
        Linear::from_params(LinearKind::Rigid, &p, centre)
    }
}

/// The steps `lo, lo + step, ..., hi` (the last one included when it falls on the lattice, to 1e-9).
///
/// Errors: [`Error::InvalidArgument`] for a step that is not positive and finite, `lo > hi`, or more than
/// 100 000 steps.
pub fn steps(lo: f64, hi: f64, step: f64) -> Result<Vec<f64>> {
    if !(step.is_finite() && step > 0.0 && lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(Error::arg(
            "response",
            format!("range [{lo}, {hi}] with step {step}: need lo <= hi and a positive step"),
        ));
    }
    let n = ((hi - lo) / step + 1e-9).floor() as usize + 1;
    if n > 100_000 {
        return Err(Error::arg("response", format!("{n} steps: at most 100000")));
    }
    Ok((0..n).map(|k| lo + k as f64 * step).collect())
}

/// The value of `metric` (its [`Metric::value`]: the measure for a single built-in or custom measure,
/// the loss for a weighted combination; [`Metric::higher_is_better`] says which way is better) of `fixed` against `moving` moved by each of `steps` along `axis`:
/// `out[k] = metric(fixed, moving ∘ T_k)` on the fixed grid, with `T_k` the rigid transform of step `k`
/// (so `moving` is sampled at `T_k(x)`: a moving image made as `fixed ∘ A`, with `A` a translation by
/// `+8 mm`, responds best at `-8`, the shift that undoes `A`). Channel 0 of both images; linear interpolation, zero outside `moving`.
///
/// Errors: the metric's own (e.g. a deep metric's patch larger than the image); tensor errors.
pub fn response(
    metric: &Metric,
    fixed: &Image,
    moving: &Image,
    axis: SweepAxis,
    steps: &[f64],
    mask: Option<&Tensor>,
) -> Result<Vec<f64>> {
    let f = fixed.channel(0)?.data().clone();
    let m = moving.channel(0)?;
    let centre = fixed.grid().centre();
    steps
        .iter()
        .map(|&s| {
            let t = axis.transform(s, centre)?;
            let w = warp(&m, &t, fixed.grid(), WarpInterpolation::Linear, Padding::Zero)?;
            metric.value(&f, w.data(), mask)
        })
        .collect()
}

/// The step of the best finite value: the largest when `higher_is_better` (MI, NCC, a deep metric), the
/// smallest otherwise (SSD, a weighted combination's loss); the first one on ties; `None` when no value
/// is finite.
pub fn peak(steps: &[f64], values: &[f64], higher_is_better: bool) -> Option<f64> {
    let sign = if higher_is_better { 1.0 } else { -1.0 };
    steps
        .iter()
        .zip(values)
        .filter(|(_, v)| v.is_finite())
        .fold(None, |best: Option<(f64, f64)>, (&s, &v)| match best {
            Some((_, b)) if b >= sign * v => best,
            _ => Some((s, sign * v)),
        })
        .map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;
    use candle_core::Device;

    #[test]
    fn an_image_against_itself_moved_by_a_known_shift_peaks_at_that_shift() {
        // A smooth blob at (x, y, z) = (14, 10, 10) mm on a 2 mm grid; moving = fixed sampled at x + 6.
        let (nx, ny, nz) = (20, 12, 12);
        let g = Grid::axis_aligned([nx, ny, nz], [2.0; 3], [0.0; 3]).unwrap();
        let blob = |shift: f64| -> Image {
            let v: Vec<f32> = (0..nz * ny * nx)
                .map(|i| {
                    let (x, y, z) = ((i % nx) as f64 * 2.0, ((i / nx) % ny) as f64 * 2.0, (i / (nx * ny)) as f64 * 2.0);
                    (-((x + shift - 14.0).powi(2) + (y - 10.0).powi(2) + (z - 10.0).powi(2)) / 40.0).exp() as f32
                })
                .collect();
            Image::new(
                Tensor::from_vec(v, (1, nz, ny, nx), &Device::Cpu).unwrap(),
                g.clone(),
                crate::image::DataType::Float32,
            )
            .unwrap()
        };
        let (fixed, moving) = (blob(0.0), blob(-6.0));
        let ncc = Metric::new("ncc").unwrap();
        let s = steps(-10.0, 10.0, 2.0).unwrap();
        assert_eq!(s.len(), 11);
        let r = response(&ncc, &fixed, &moving, SweepAxis::parse("x").unwrap(), &s, None).unwrap();
        assert_eq!(peak(&s, &r, true), Some(6.0), "{r:?}");
        // SSD is best where it is smallest.
        let ssd = Metric::new("ssd").unwrap();
        let r2 = response(&ssd, &fixed, &moving, SweepAxis::Translation(0), &s, None).unwrap();
        assert_eq!(peak(&s, &r2, ssd.higher_is_better()), Some(6.0), "{r2:?}");
        assert!((r[8] - 1.0).abs() < 1e-4, "the moving image moved back is the fixed one: {}", r[8]);
        // Across the sweep axis nothing moves the blob's x, so a y sweep peaks at 0.
        let ry = response(&ncc, &fixed, &fixed, SweepAxis::Translation(1), &s, None).unwrap();
        assert_eq!(peak(&s, &ry, true), Some(0.0));
        assert!(SweepAxis::parse("w").is_err() && steps(1.0, 0.0, 1.0).is_err() && steps(0.0, 1.0, 0.0).is_err());
        let rot = SweepAxis::parse("rz").unwrap().transform(90.0, [0.0; 3]).unwrap();
        let m = rot.matrix().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec2::<f64>().unwrap();
        assert!(m[0][0].abs() < 1e-6 && (m[1][0] - 1.0).abs() < 1e-6, "rz turns x towards y: {m:?}");
    }
}
