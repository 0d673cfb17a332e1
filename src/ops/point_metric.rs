//! A global similarity measure on a list of sample points, fused with the linear map of the points and
//! the trilinear sampling of the moving image, with its gradient with respect to the 12 entries of the
//! map: the inner loop of sampled linear registration (elastix's random-coordinate sampler).
//!
//! Inputs: sample points `x_i` as fractional **voxel indices** `(x, y, z)` of the fixed grid with the
//! fixed image's values `f_i` there; the moving image (one channel, x fastest); and the `(3, 4)` map
//! `A` (row-major `[M | b]`) from fixed voxel indices to moving voxel indices, `q_i = M x_i + b`. Each
//! point whose `q_i` lies inside the moving grid (`0 <= q <= n - 1` on every axis) counts with the
//! moving value `m_i` sampled there (trilinear); the others are left out (weight 0, as a mask).
//!
//! The loss (lower is better) of the measure over the counted points, as [`crate::metrics::Metric::loss`]
//! computes it on the same samples:
//!
//! | measure | loss |
//! |---|---|
//! | [`PointMeasure::Mse`] | `mean((f - m)^2)` |
//! | [`PointMeasure::Ncc`] | `-cov(f, m) / (sd(f) sd(m) + 1e-12)` |
//! | [`PointMeasure::Mi`] | `-(H(F) + H(M) - H(F, M))` of the Gaussian Parzen joint histogram (nats) |
//! | [`PointMeasure::Nmi`] | `-(H(F) + H(M)) / (H(F, M) + 1e-12)` |
//! | [`PointMeasure::Cr`] | `-(eta(M \| F) + eta(F \| M)) / 2`, the symmetric Parzen correlation ratio (Chen et al. 2024, eqs. 1-3) |
//!
//! The correlation ratio `eta(Y | X) = sum_k n_k (ybar_k - ybar)^2 / (var(Y) + 1e-8)` bins X with the
//! Parzen windows below (`n_k` the bin's share of the weight, `ybar_k` Y's weighted mean in bin `k`, with
//! the `1e-12` guards of [`crate::metrics::functional::correlation_ratio`]); an `eta` whose Y does not
//! vary (variance at most `1e-6` of its squared range over the counted points) counts 0, with no gradient.
//! There the slow twin differs: [`crate::metrics::functional::correlation_ratio`] takes the range over
//! all the samples (the ones outside too) and returns an error for a side that does not vary.
//!
//! The Parzen windows are those of [`super::parzen`]: intensities mapped linearly onto bin coordinates
//! (`range` onto `0 ..= bins - 1`, clamped, with zero derivative where clamped), Gaussian weights of
//! `sigma` bin widths truncated at `ceil(4 sigma)` and normalized per sample. Sums run in f64.
//!
//! Two passes over the points: the first samples the moving image (value and gradient) and accumulates
//! the measure's sums (moments or the joint histogram); the second accumulates `dL/dA = sum_i dL/dm_i *
//! grad m(q_i) [x_i, 1]^T`. [`point_loss`] returns both; [`point_metric`] wraps it as a candle op on the
//! `(3, 4)` map tensor with a backward, and [`point_metric_slow`] is its slow twin from differentiable
//! candle ops ([`super::grid_sample`] and the measures of [`crate::metrics::functional`]), which lives
//! beside those measures: [`crate::metrics::functional::point_metric_slow`].

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::parzen::{Parzen, ParzenKernel, PatchLayout};
use super::trilinear::corners_fast;

/// The measures [`point_loss`] fuses.
#[derive(Clone, Debug, PartialEq)]
pub enum PointMeasure {
    /// Mean squared difference.
    Mse,
    /// Global normalized cross-correlation (Pearson).
    Ncc,
    /// Parzen-window mutual information.
    Mi(PointParzen),
    /// Normalized mutual information `(H(F) + H(M)) / H(F, M)`.
    Nmi(PointParzen),
    /// Symmetric Parzen correlation ratio `(eta(M | F) + eta(F | M)) / 2` (Chen et al. 2024).
    Cr(PointParzen),
    /// One of the Parzen measures above per patch of the fixed grid, averaged over the patches (CR-patch
    /// and MI-patch of Chen et al. 2024 on sample points): see [`PatchPoints`].
    Patches(PatchPoints),
}

/// A Parzen measure ([`PointMeasure::Mi`], [`PointMeasure::Nmi`] or [`PointMeasure::Cr`]) evaluated per
/// patch of the fixed grid: each sample point belongs, in each layout, to the patch of its nearest
/// fixed voxel; the loss is the mean over the layouts of the mean over the patches that count of the
/// measure's loss on the patch's points. A patch counts when at least [`MIN_PATCH_POINTS`] of its points
/// map inside the moving image and, for CR, one side varies: its variance over the patch's points is
/// above `1e-6` of the squared width of the image's Parzen intensity range (the rule of the dense
/// [`crate::metrics::functional::correlation_ratio`], which takes the image's range; a side that does not
/// vary counts 0). Patches of constant intensity therefore add nothing, and patches cut by the moving
/// image's border see only their points inside it (no zero padding enters a patch's statistics). CR
/// bins each patch on its own intensity ranges (see `patch_term`: on the image's ranges its optimum
/// moves); MI and NMI use the image's.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchPoints {
    /// The measure of each patch.
    pub measure: Box<PointMeasure>,
    /// The patch grids of the fixed image (shape `(x, y, z)`: the grid the points are drawn on); CR-patch
    /// uses two, the second shifted by half a patch.
    pub layouts: Vec<PatchLayout>,
}

/// The fewest points inside the moving image for a patch to count in [`PatchPoints`]: below it a
/// patch's Parzen statistics are mostly noise.
pub const MIN_PATCH_POINTS: usize = 16;

/// Parzen windowing of [`PointMeasure::Mi`], [`PointMeasure::Nmi`] and [`PointMeasure::Cr`]: the kernel and the intensity
/// ranges `(lo, hi)` (with `hi > lo`) of the fixed and moving images mapped onto the bins.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointParzen {
    pub parzen: Parzen,
    pub range_fixed: (f64, f64),
    pub range_moving: (f64, f64),
}

impl PointParzen {
    /// The bin coordinate of intensity `v` of the moving (`moving`) or fixed image, and its derivative
    /// (0 where clamped).
    #[inline]
    fn bin(&self, v: f64, moving: bool) -> (f64, f64) {
        let (lo, hi) = if moving { self.range_moving } else { self.range_fixed };
        to_bin(v, lo, (self.parzen.bins - 1) as f64 / (hi - lo), self.parzen.bins)
    }
}

/// Sample points of the fixed image: `points` holds `n` voxel indices `(x, y, z)` (`3 n` values), `fixed`
/// the fixed image's value at each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PointSamples {
    pub points: Vec<f32>,
    pub fixed: Vec<f32>,
}

impl PointSamples {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.fixed.len()
    }
    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty()
    }
}

/// The moving image of [`point_loss`]: one channel, `data[(z * ny + y) * nx + x]`, `shape` `[nx, ny, nz]`.
#[derive(Clone, Copy, Debug)]
pub struct MovingVolume<'a> {
    pub data: &'a [f32],
    pub shape: [usize; 3],
}

/// The result of [`point_loss`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointLoss {
    /// The loss (see the module table).
    pub loss: f64,
    /// `dL/dA`, row-major like `A`.
    pub grad: [f64; 12],
    /// How many points mapped inside the moving image.
    pub inside: usize,
}

/// Points per parallel chunk.
const CHUNK: usize = 2048;

/// Per-point moving value and gradient (voxel units), and whether the point counts.
#[derive(Clone, Copy, Default)]
struct Sampled {
    m: f32,
    g: [f32; 3],
    inside: bool,
}

#[inline]
fn sample_one(mv: &MovingVolume, a: &[f64; 12], p: &[f32]) -> Sampled {
    let (x, y, z) = (p[0] as f64, p[1] as f64, p[2] as f64);
    let q = [
        a[0] * x + a[1] * y + a[2] * z + a[3],
        a[4] * x + a[5] * y + a[6] * z + a[7],
        a[8] * x + a[9] * y + a[10] * z + a[11],
    ];
    let [nx, ny, nz] = mv.shape;
    let inside = q[0] >= 0.0
        && q[1] >= 0.0
        && q[2] >= 0.0
        && q[0] <= (nx - 1) as f64
        && q[1] <= (ny - 1) as f64
        && q[2] <= (nz - 1) as f64;
    if !inside {
        return Sampled::default();
    }
    let c = corners_fast(q, mv.shape, false);
    let (mut m, mut g) = (0f32, [0f32; 3]);
    for k in 0..8 {
        if c.idx[k] != usize::MAX {
            let v = mv.data[c.idx[k]];
            m += c.w[k] * v;
            g[0] += c.dw[k][0] * v;
            g[1] += c.dw[k][1] * v;
            g[2] += c.dw[k][2] * v;
        }
    }
    Sampled { m, g, inside: true }
}

/// Bin coordinate of `v` and its derivative (0 where clamped).
#[inline]
fn to_bin(v: f64, lo: f64, s: f64, bins: usize) -> (f64, f64) {
    let u = (v - lo) * s;
    let top = (bins - 1) as f64;
    if u < 0.0 {
        (0.0, 0.0)
    } else if u > top {
        (top, 0.0)
    } else {
        (u, s)
    }
}

/// Checks the inputs; errors name the op.
fn check(samples: &PointSamples, mv: &MovingVolume, measure: &PointMeasure) -> std::result::Result<(), String> {
    if samples.points.len() != 3 * samples.fixed.len() {
        return Err(format!(
            "point_metric: {} point coordinates for {} fixed values (expected 3 per point)",
            samples.points.len(),
            samples.fixed.len()
        ));
    }
    let [nx, ny, nz] = mv.shape;
    if nx * ny * nz != mv.data.len() || mv.data.is_empty() {
        return Err(format!("point_metric: moving shape {:?} does not hold {} voxels", mv.shape, mv.data.len()));
    }
    if let PointMeasure::Patches(pm) = measure {
        if !matches!(*pm.measure, PointMeasure::Mi(_) | PointMeasure::Nmi(_) | PointMeasure::Cr(_)) {
            return Err(format!("point_metric: patches of {:?}, which is not a Parzen measure", pm.measure));
        }
        if pm.layouts.is_empty() || pm.layouts.iter().any(|l| l.shape.contains(&0)) {
            return Err("point_metric: patch measure without a patch layout".into());
        }
        return check(samples, mv, &pm.measure);
    }
    check_parzen(measure)
}

/// Checks the Parzen kernel and ranges of a global Parzen measure (others pass).
fn check_parzen(measure: &PointMeasure) -> std::result::Result<(), String> {
    if let PointMeasure::Mi(pp) | PointMeasure::Nmi(pp) | PointMeasure::Cr(pp) = measure {
        let ok = |r: (f64, f64)| r.0.is_finite() && r.1.is_finite() && r.1 > r.0;
        if pp.parzen.bins < 2 || pp.parzen.bins > 1024 || !(pp.parzen.sigma > 0.0 && pp.parzen.sigma <= 7.5) {
            return Err(format!("point_metric: bad Parzen kernel {:?}", pp.parzen));
        }
        if !ok(pp.range_fixed) || !ok(pp.range_moving) {
            return Err(format!(
                "point_metric: intensity ranges must have lo < hi, got {:?} and {:?}",
                pp.range_fixed, pp.range_moving
            ));
        }
    }
    Ok(())
}

/// Parzen weights of one fixed and one moving intensity (bins `lo..=hi` of each, weights and their
/// derivatives): scratch space reused from point to point.
struct Windows {
    wa: [f64; 64],
    da: [f64; 64],
    wb: [f64; 64],
    db: [f64; 64],
}

impl Windows {
    fn new() -> Self {
        Windows { wa: [0.0; 64], da: [0.0; 64], wb: [0.0; 64], db: [0.0; 64] }
    }
    /// The fixed intensity's window over the fixed bins: `(lo, hi)`, weights in `wa`.
    fn fixed(&mut self, kern: &ParzenKernel, u: f64) -> (usize, usize) {
        kern.weights(u, &mut self.wa, &mut self.da)
    }
    /// The moving intensity's window over the moving bins: `(lo, hi)`, weights in `wb`, derivatives in
    /// `db`.
    fn moving(&mut self, kern: &ParzenKernel, u: f64) -> (usize, usize) {
        kern.weights(u, &mut self.wb, &mut self.db)
    }
    /// The windows of a fixed intensity `f` and a moving one `m` over their bins.
    fn both(&mut self, kern: &ParzenKernel, pp: &PointParzen, f: f64, m: f64) -> ((usize, usize), (usize, usize)) {
        (self.fixed(kern, pp.bin(f, false).0), self.moving(kern, pp.bin(m, true).0))
    }
}

/// An accumulator of per-point sums, one per parallel chunk of points, merged at the end.
trait Sums: Send + Sized {
    /// Adds the counted point with fixed value `f` and moving value `m`.
    fn add(&mut self, f: f64, m: f64);
    /// The sums of two chunks together.
    fn merge(self, other: Self) -> Self;
}

/// Sums `S` over the points that map inside the moving image, chunk by chunk in parallel.
fn sum_points<S: Sums>(sampled: &[Sampled], fixed: &[f32], empty: impl Fn() -> S + Sync + Send) -> S {
    sampled
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(b, ch)| {
            let mut acc = empty();
            for (t, sp) in ch.iter().enumerate() {
                if sp.inside {
                    acc.add(fixed[b * CHUNK + t] as f64, sp.m as f64);
                }
            }
            acc
        })
        .reduce(&empty, S::merge)
}

/// The sums of SSD and NCC: count and the first and second moments of `f` and `m`.
#[derive(Clone, Copy, Default)]
struct MomentSums {
    count: f64,
    f: f64,
    m: f64,
    ff: f64,
    mm: f64,
    fm: f64,
    /// `sum (f - m)^2`.
    sq_diff: f64,
}

impl Sums for MomentSums {
    fn add(&mut self, f: f64, m: f64) {
        self.count += 1.0;
        self.f += f;
        self.m += m;
        self.ff += f * f;
        self.mm += m * m;
        self.fm += f * m;
        self.sq_diff += (f - m) * (f - m);
    }
    fn merge(self, o: Self) -> Self {
        MomentSums {
            count: self.count + o.count,
            f: self.f + o.f,
            m: self.m + o.m,
            ff: self.ff + o.ff,
            mm: self.mm + o.mm,
            fm: self.fm + o.fm,
            sq_diff: self.sq_diff + o.sq_diff,
        }
    }
}

/// The Gaussian Parzen joint histogram of MI and NMI (`bins x bins`, fixed along rows) and the count.
struct JointHistogram<'a> {
    pp: &'a PointParzen,
    kern: &'a ParzenKernel,
    joint: Vec<f64>,
    count: f64,
    win: Windows,
}

impl<'a> JointHistogram<'a> {
    fn new(pp: &'a PointParzen, kern: &'a ParzenKernel) -> Self {
        let bins = pp.parzen.bins;
        JointHistogram { pp, kern, joint: vec![0.0; bins * bins], count: 0.0, win: Windows::new() }
    }
}

impl Sums for JointHistogram<'_> {
    fn add(&mut self, f: f64, m: f64) {
        let bins = self.pp.parzen.bins;
        let ((la, ha), (lb, hb)) = self.win.both(self.kern, self.pp, f, m);
        if ha < la || hb < lb {
            return;
        }
        for k in la..=ha {
            let w = self.win.wa[k - la];
            let row = &mut self.joint[k * bins + lb..=k * bins + hb];
            row.iter_mut().zip(&self.win.wb).for_each(|(h, wb)| *h += w * wb);
        }
        self.count += 1.0;
    }
    fn merge(mut self, o: Self) -> Self {
        self.joint.iter_mut().zip(o.joint).for_each(|(p, q)| *p += q);
        self.count += o.count;
        self
    }
}

/// The sums of the symmetric correlation ratio: over the fixed image's bins the Parzen weight of `f`
/// and that weight times `m` (for `eta(M | F)`); over the moving image's bins the weight of `m` and that
/// weight times `f` (for `eta(F | M)`); the count, both images' sums and sums of squares, and their
/// ranges.
struct CrSums<'a> {
    pp: &'a PointParzen,
    kern: &'a ParzenKernel,
    fixed_w: Vec<f64>,
    fixed_wm: Vec<f64>,
    moving_w: Vec<f64>,
    moving_wf: Vec<f64>,
    count: f64,
    f: f64,
    ff: f64,
    m: f64,
    mm: f64,
    range_f: (f64, f64),
    range_m: (f64, f64),
    win: Windows,
}

impl<'a> CrSums<'a> {
    fn new(pp: &'a PointParzen, kern: &'a ParzenKernel) -> Self {
        let bins = pp.parzen.bins;
        let empty = (f64::INFINITY, f64::NEG_INFINITY);
        CrSums {
            pp,
            kern,
            fixed_w: vec![0.0; bins],
            fixed_wm: vec![0.0; bins],
            moving_w: vec![0.0; bins],
            moving_wf: vec![0.0; bins],
            count: 0.0,
            f: 0.0,
            ff: 0.0,
            m: 0.0,
            mm: 0.0,
            range_f: empty,
            range_m: empty,
            win: Windows::new(),
        }
    }
}

fn widen(r: (f64, f64), o: (f64, f64)) -> (f64, f64) {
    (r.0.min(o.0), r.1.max(o.1))
}

fn add_into(a: &mut [f64], b: &[f64]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

impl Sums for CrSums<'_> {
    fn add(&mut self, f: f64, m: f64) {
        let ((la, ha), (lb, hb)) = self.win.both(self.kern, self.pp, f, m);
        for k in la..=ha {
            self.fixed_w[k] += self.win.wa[k - la];
            self.fixed_wm[k] += self.win.wa[k - la] * m;
        }
        for l in lb..=hb {
            self.moving_w[l] += self.win.wb[l - lb];
            self.moving_wf[l] += self.win.wb[l - lb] * f;
        }
        self.count += 1.0;
        self.f += f;
        self.ff += f * f;
        self.m += m;
        self.mm += m * m;
        self.range_f = widen(self.range_f, (f, f));
        self.range_m = widen(self.range_m, (m, m));
    }
    fn merge(mut self, o: Self) -> Self {
        add_into(&mut self.fixed_w, &o.fixed_w);
        add_into(&mut self.fixed_wm, &o.fixed_wm);
        add_into(&mut self.moving_w, &o.moving_w);
        add_into(&mut self.moving_wf, &o.moving_wf);
        self.count += o.count;
        self.f += o.f;
        self.ff += o.ff;
        self.m += o.m;
        self.mm += o.mm;
        self.range_f = widen(self.range_f, o.range_f);
        self.range_m = widen(self.range_m, o.range_m);
        self
    }
}

/// The loss of `measure` from the first pass over the sampled points, how many counted, and what the
/// second pass needs to form `dL/dm_i`; `None` when no point counts (or the histogram is empty).
/// `spans`: the widths (fixed, moving) against which CR decides whether a side varies (`None`: the
/// counted points' own ranges). [`PointMeasure::Patches`] is [`patch_loss`]'s, which calls this per
/// patch (`None` here).
fn first_pass(
    measure: &PointMeasure,
    sampled: &[Sampled],
    fixed: &[f32],
    spans: Option<(f64, f64)>,
) -> Option<(f64, usize, Coef)> {
    match measure {
        PointMeasure::Patches(_) => None,
        PointMeasure::Mse | PointMeasure::Ncc => {
            let s = sum_points(sampled, fixed, MomentSums::default);
            if s.count == 0.0 {
                return None;
            }
            let cnt = s.count;
            if *measure == PointMeasure::Mse {
                return Some((s.sq_diff / cnt, cnt as usize, Coef::Mse { cnt }));
            }
            let (fbar, mbar) = (s.f / cnt, s.m / cnt);
            let cov = s.fm / cnt - fbar * mbar;
            let vf = (s.ff / cnt - fbar * fbar).max(0.0);
            let vm = (s.mm / cnt - mbar * mbar).max(0.0);
            let (sf, sm) = (vf.sqrt(), vm.sqrt());
            let d = sf * sm + 1e-12;
            // dncc/dm_i = (f_i - fbar) / (N d) - cov sf (m_i - mbar) / (N sm d^2).
            let a1 = 1.0 / (cnt * d);
            let a2 = if sm > 0.0 { cov * sf / (cnt * sm * d * d) } else { 0.0 };
            Some((-cov / d, cnt as usize, Coef::Ncc { fbar, mbar, a1, a2 }))
        }
        PointMeasure::Mi(pp) | PointMeasure::Nmi(pp) => {
            let kern = ParzenKernel::new(pp.parzen);
            let h = sum_points(sampled, fixed, || JointHistogram::new(pp, &kern));
            let total: f64 = h.joint.iter().sum();
            if h.count == 0.0 || total <= 1e-6 {
                return None;
            }
            let (loss, g) = parzen_loss_grad(&h.joint, pp.parzen.bins, matches!(measure, PointMeasure::Nmi(_)));
            Some((loss, h.count as usize, Coef::Parzen { pp: *pp, kern, g: Arc::new(g) }))
        }
        PointMeasure::Cr(pp) => {
            let kern = ParzenKernel::new(pp.parzen);
            let s = sum_points(sampled, fixed, || CrSums::new(pp, &kern));
            if s.count == 0.0 {
                return None;
            }
            let cnt = s.count;
            // eta(M | F): the fixed image's bins, Y = m; eta(F | M): the moving image's bins, Y = f.
            let span = |r: (f64, f64)| r.1 - r.0;
            let (span_f, span_m) = spans.unwrap_or((span(s.range_f), span(s.range_m)));
            let ym = CrSide::new(&s.fixed_w, &s.fixed_wm, cnt, s.m, s.mm, span_m);
            let yf = CrSide::new(&s.moving_w, &s.moving_wf, cnt, s.f, s.ff, span_f);
            let loss = -(ym.eta + yf.eta) / 2.0;
            Some((loss, cnt as usize, Coef::Cr { pp: *pp, kern, ym: Arc::new(ym), yf: Arc::new(yf), cnt }))
        }
    }
}

/// The loss of `measure` over the sample points mapped by `a` into the moving image, and its gradient
/// with respect to `a` (see the module documentation). With no point inside, the loss is 0 with a zero
/// gradient.
///
/// Errors: a point list whose length is not 3 per fixed value; a moving shape that does not match its
/// data; a Parzen kernel or range out of bounds.
pub fn point_loss(
    measure: &PointMeasure,
    samples: &PointSamples,
    moving: &MovingVolume,
    a: &[f64; 12],
) -> std::result::Result<PointLoss, String> {
    check(samples, moving, measure)?;
    let n = samples.len();
    let mut sampled = vec![Sampled::default(); n];
    sampled.par_chunks_mut(CHUNK).enumerate().for_each(|(b, out)| {
        for (t, s) in out.iter_mut().enumerate() {
            let i = b * CHUNK + t;
            *s = sample_one(moving, a, &samples.points[3 * i..3 * i + 3]);
        }
    });
    if let PointMeasure::Patches(pm) = measure {
        return Ok(patch_loss(pm, samples, &sampled));
    }
    let Some((loss, inside, coef)) = first_pass(measure, &sampled, &samples.fixed, None) else {
        return Ok(PointLoss { loss: 0.0, grad: [0.0; 12], inside: 0 });
    };
    // Second pass: dL/dA = sum_i c_i grad m(q_i) [x_i, 1]^T.
    let grad = sampled
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(b, ch)| grad_sum(&coef, samples, &sampled, b * CHUNK..b * CHUNK + ch.len()))
        .reduce(|| [0f64; 12], add12);
    Ok(PointLoss { loss, grad, inside })
}

/// The loss of a global `measure` between two volumes on the same voxels (`fixed` and `moving`, one
/// value per voxel, any order, e.g. a dense stage's fixed level and its warped moving image), counting
/// the voxels where `mask` (same length) is non-zero (all without one), and `dL/dm_v` for every voxel
/// (0 outside the mask): the two passes of [`point_loss`] with the voxels as the points and no sampling,
/// so the gradient reaches a displacement field through the warp's derivative. Equal to
/// [`crate::metrics::Metric::loss`] of the same measure on the volumes with a 0 / 1 mask up to f32
/// rounding (its slow twin; sums here run in f64). With no voxel counted the loss is 0 with a zero
/// gradient.
///
/// Errors: volumes or a mask of different lengths; a patch measure; a Parzen kernel or range out of
/// bounds.
pub fn dense_loss_grad(
    measure: &PointMeasure,
    fixed: &[f32],
    moving: &[f32],
    mask: Option<&[f32]>,
) -> std::result::Result<(f64, Vec<f32>), String> {
    let n = fixed.len();
    if moving.len() != n || mask.is_some_and(|m| m.len() != n) {
        return Err(format!(
            "dense_loss_grad: {n} fixed, {} moving and {} mask values (one each per voxel)",
            moving.len(),
            mask.map_or(n, |m| m.len())
        ));
    }
    if matches!(measure, PointMeasure::Patches(_)) {
        return Err("dense_loss_grad: a patch measure (global measures only)".into());
    }
    check_parzen(measure)?;
    let mut sampled = vec![Sampled::default(); n];
    sampled.par_chunks_mut(CHUNK).enumerate().for_each(|(b, out)| {
        for (t, s) in out.iter_mut().enumerate() {
            let v = b * CHUNK + t;
            *s = Sampled { m: moving[v], g: [0.0; 3], inside: mask.is_none_or(|m| m[v] != 0.0) };
        }
    });
    let Some((loss, _, coef)) = first_pass(measure, &sampled, fixed, None) else {
        return Ok((0.0, vec![0.0; n]));
    };
    let mut grad = vec![0f32; n];
    grad.par_chunks_mut(CHUNK).enumerate().for_each(|(b, out)| {
        let mut win = Windows::new();
        for (t, g) in out.iter_mut().enumerate() {
            let v = b * CHUNK + t;
            if sampled[v].inside {
                *g = coef.dl_dm(fixed[v] as f64, moving[v] as f64, &mut win) as f32;
            }
        }
    });
    Ok((loss, grad))
}

fn add12(x: [f64; 12], y: [f64; 12]) -> [f64; 12] {
    std::array::from_fn(|k| x[k] + y[k])
}

/// The second pass over the points `idx`: `sum_i dL/dm_i grad m(q_i) [x_i, 1]^T` (row-major `(3, 4)`).
fn grad_sum(coef: &Coef, samples: &PointSamples, sampled: &[Sampled], idx: impl Iterator<Item = usize>) -> [f64; 12] {
    let mut acc = [0f64; 12];
    let mut win = Windows::new();
    for i in idx {
        let sp = &sampled[i];
        if !sp.inside {
            continue;
        }
        let c = coef.dl_dm(samples.fixed[i] as f64, sp.m as f64, &mut win);
        add_point_grad(&mut acc, c, sp, &samples.points[3 * i..3 * i + 3]);
    }
    acc
}

/// Adds `c grad m(q) [x, 1]^T` of the point `p` (voxel indices) sampled as `sp` to `acc`.
#[inline]
fn add_point_grad(acc: &mut [f64; 12], c: f64, sp: &Sampled, p: &[f32]) {
    if c == 0.0 {
        return;
    }
    let xh = [p[0] as f64, p[1] as f64, p[2] as f64, 1.0];
    for r in 0..3 {
        let gr = c * sp.g[r] as f64;
        for (col, xv) in xh.iter().enumerate() {
            acc[4 * r + col] += gr * xv;
        }
    }
}

/// One patch's loss and `dL/dA` from its counted points `idx`; `None` when the patch does not count.
///
/// CR bins each patch on the patch's own intensity ranges (the smallest and largest fixed and moving
/// values of its points), so that the Parzen window is the same fraction of the intensities inside every
/// patch. With the image's global ranges a 16^3 patch spans only a few bins, and `eta(F | M)`, which bins
/// the moving intensities, grows when a transform spreads the moving values of a patch over more bins
/// whether or not it aligns the images: a brain registered onto an exact copy of itself ends at a 1 %
/// shrink (0.54 mm) on global bins, 0.004 mm on the patch's own (mean +- 3 standard deviations instead
/// of the extremes: 0.12 mm). The measure is unchanged by a linear rescaling of either image inside the
/// patch; the moving range follows the transform, and its derivative (through the points holding the
/// extremes) is part of the gradient.
fn patch_term(
    measure: &PointMeasure,
    spans: Option<(f64, f64)>,
    samples: &PointSamples,
    sampled: &[Sampled],
    idx: &[usize],
) -> Option<(f64, [f64; 12])> {
    let s: Vec<Sampled> = idx.iter().map(|&i| sampled[i]).collect();
    let f: Vec<f32> = idx.iter().map(|&i| samples.fixed[i]).collect();
    let PointMeasure::Cr(pp) = measure else {
        let (l, _, coef) = first_pass(measure, &s, &f, spans)?;
        return Some((l, grad_sum(&coef, samples, sampled, idx.iter().copied())));
    };
    let (span_f, span_m) = spans.unwrap_or((1.0, 1.0));
    let (mut lo_f, mut hi_f) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut lo_m, mut hi_m, mut at_lo, mut at_hi) = (f64::INFINITY, f64::NEG_INFINITY, 0, 0);
    for (k, (sp, &fv)) in s.iter().zip(&f).enumerate() {
        let (fv, m) = (fv as f64, sp.m as f64);
        lo_f = lo_f.min(fv);
        hi_f = hi_f.max(fv);
        if m < lo_m {
            (lo_m, at_lo) = (m, k);
        }
        if m > hi_m {
            (hi_m, at_hi) = (m, k);
        }
    }
    // A patch whose values (nearly) do not vary keeps a range of 1e-3 of the image's: one bin, held.
    let follows = hi_m - lo_m > 1e-6 * span_m;
    let own = PointParzen {
        parzen: pp.parzen,
        range_fixed: (lo_f, hi_f.max(lo_f + 1e-3 * span_f)),
        range_moving: if follows { (lo_m, hi_m) } else { (lo_m, lo_m + 1e-3 * span_m) },
    };
    let (l, _, coef) = first_pass(&PointMeasure::Cr(own), &s, &f, spans)?;
    if !coef.counts() {
        return None;
    }
    let mut g = grad_sum(&coef, samples, sampled, idx.iter().copied());
    if follows {
        // u_i = (m_i - lo) (B - 1) / (hi - lo): dL/dlo = c sum_i a_i (t_i - 1), dL/dhi = -c sum_i a_i t_i,
        // with a_i = dL/du_i, t_i = (m_i - lo) / (hi - lo), c = (B - 1) / (hi - lo).
        let (span, c) = (hi_m - lo_m, (pp.parzen.bins - 1) as f64 / (hi_m - lo_m));
        let mut win = Windows::new();
        let (mut sa, mut sat) = (0.0, 0.0);
        for (sp, &fv) in s.iter().zip(&f) {
            let a = coef.dl_du_moving(fv as f64, sp.m as f64, &mut win);
            sa += a;
            sat += a * (sp.m as f64 - lo_m) / span;
        }
        let point = |k: usize| &samples.points[3 * idx[k]..3 * idx[k] + 3];
        add_point_grad(&mut g, c * (sat - sa), &s[at_lo], point(at_lo));
        add_point_grad(&mut g, -c * sat, &s[at_hi], point(at_hi));
    }
    Some((l, g))
}

/// [`PointMeasure::Patches`] over the sampled points (see [`PatchPoints`]): per layout, the counted points
/// grouped by patch (a counting sort), each patch's loss and gradient by [`first_pass`] and
/// [`grad_sum`] on its points, in parallel over the patches, then the means.
fn patch_loss(pm: &PatchPoints, samples: &PointSamples, sampled: &[Sampled]) -> PointLoss {
    let inside = sampled.iter().filter(|s| s.inside).count();
    // CR decides whether a patch's side varies against the image's Parzen range, not the patch's.
    let spans = match &*pm.measure {
        PointMeasure::Cr(pp) => Some((pp.range_fixed.1 - pp.range_fixed.0, pp.range_moving.1 - pp.range_moving.0)),
        _ => None,
    };
    let (mut loss, mut grad) = (0.0, [0f64; 12]);
    for lay in &pm.layouts {
        let counts = lay.counts();
        let np = lay.num_patches();
        let ids: Vec<usize> = sampled
            .iter()
            .enumerate()
            .map(|(i, s)| if s.inside { lay.patch_of_point(&counts, &samples.points[3 * i..3 * i + 3]) } else { np })
            .collect();
        let mut start = vec![0usize; np + 2];
        for &p in ids.iter().filter(|&&p| p < np) {
            start[p + 2] += 1;
        }
        for p in 2..start.len() {
            start[p] += start[p - 1];
        }
        // start[p + 1] is now where patch p's points begin; filling moves it to where they end.
        let mut order = vec![0usize; inside];
        for (i, &p) in ids.iter().enumerate() {
            if p < np {
                order[start[p + 1]] = i;
                start[p + 1] += 1;
            }
        }
        let per: Vec<(f64, [f64; 12])> = (0..np)
            .into_par_iter()
            .filter_map(|p| {
                let idx = &order[start[p]..start[p + 1]];
                (idx.len() >= MIN_PATCH_POINTS).then(|| patch_term(&pm.measure, spans, samples, sampled, idx))?
            })
            .collect();
        if per.is_empty() {
            continue;
        }
        let w = 1.0 / (pm.layouts.len() * per.len()) as f64;
        for (l, g) in per {
            loss += w * l;
            grad.iter_mut().zip(g).for_each(|(a, b)| *a += w * b);
        }
    }
    PointLoss { loss, grad, inside }
}

/// What the second pass needs to form `dL/dm_i`.
enum Coef {
    Mse { cnt: f64 },
    Ncc { fbar: f64, mbar: f64, a1: f64, a2: f64 },
    Parzen { pp: PointParzen, kern: ParzenKernel, g: Arc<Vec<f64>> },
    Cr { pp: PointParzen, kern: ParzenKernel, ym: Arc<CrSide>, yf: Arc<CrSide>, cnt: f64 },
}

impl Coef {
    /// Whether the measure is defined on the points (CR: one side varies).
    fn counts(&self) -> bool {
        match self {
            Coef::Cr { ym, yf, .. } => ym.valid || yf.valid,
            _ => true,
        }
    }

    /// `dL / dm_i` of a counted point with fixed value `f` and moving value `m`.
    #[inline]
    fn dl_dm(&self, f: f64, m: f64, win: &mut Windows) -> f64 {
        match self {
            Coef::Mse { cnt } => -2.0 * (f - m) / cnt,
            Coef::Ncc { fbar, mbar, a1, a2 } => -((f - fbar) * a1 - (m - mbar) * a2),
            Coef::Parzen { pp, kern, g } => {
                let bins = pp.parzen.bins;
                let dub = pp.bin(m, true).1;
                if dub == 0.0 {
                    return 0.0;
                }
                let ((la, ha), (lb, hb)) = win.both(kern, pp, f, m);
                if ha < la || hb < lb {
                    return 0.0;
                }
                let mut s = 0.0;
                for k in la..=ha {
                    let row = &g[k * bins + lb..=k * bins + hb];
                    let r = row.iter().zip(&win.db).fold(0.0, |r, (gv, db)| r + gv * db);
                    s += win.wa[k - la] * r;
                }
                s * dub
            }
            Coef::Cr { pp, kern, ym, cnt, .. } => {
                // d eta(M | F) / dm_i: m_i enters the weighted sums of f_i's bins, the mean and the variance.
                let mut d1 = 0.0;
                if ym.valid {
                    let (la, ha) = win.fixed(kern, pp.bin(f, false).0);
                    let mut s1 = 0.0;
                    for k in la..=ha {
                        s1 += win.wa[k - la] * ym.g1[k];
                    }
                    let n = cnt + 1e-12;
                    d1 = (s1 + ym.dmean / n) / ym.den - ym.eta / ym.den * 2.0 * (m - ym.mean) / n;
                }
                // d eta(F | M) / dm_i: m_i moves its own Parzen weights over the moving image's bins.
                -d1 / 2.0 + self.dl_du_moving(f, m, win) * pp.bin(m, true).1
            }
        }
    }

    /// CR: the part of `dL / du_i` that comes through the moving intensity's bin coordinate `u_i` (its
    /// Parzen weights over the moving image's bins, in `eta(F | M)`), 0 where `u_i` is clamped; 0 for the
    /// other measures (unused there).
    #[inline]
    fn dl_du_moving(&self, f: f64, m: f64, win: &mut Windows) -> f64 {
        let Coef::Cr { pp, kern, yf, .. } = self else {
            return 0.0;
        };
        let (ub, dub) = pp.bin(m, true);
        if !yf.valid || dub == 0.0 {
            return 0.0;
        }
        let (lb, hb) = win.moving(kern, ub);
        let mut s2 = 0.0;
        for l in lb..=hb {
            s2 += win.db[l - lb] * (yf.g0[l] + yf.g1[l] * f);
        }
        -s2 / yf.den / 2.0
    }
}

/// One side `eta(Y | X)` of the correlation ratio from its sums: the Parzen weight `s0_k` of X's bins and
/// the weighted sums `s1_k` of Y, the count and Y's sum and sum of squares; with the derivatives of
/// `C = sum_k n_k (ybar_k - ybar)^2` that the second pass needs.
struct CrSide {
    eta: f64,
    /// Whether Y varies (else `eta` counts 0, with no gradient).
    valid: bool,
    mean: f64,
    /// `var(Y) + 1e-8`.
    den: f64,
    /// `dC / dybar`.
    dmean: f64,
    /// `dC / ds0_k` (all terms, the total weight's included).
    g0: Vec<f64>,
    /// `dC / ds1_k`.
    g1: Vec<f64>,
}

impl CrSide {
    fn new(s0: &[f64], s1: &[f64], cnt: f64, sy: f64, syy: f64, range: f64) -> Self {
        const E: f64 = 1e-12;
        let n = cnt + E;
        let mean = sy / n;
        let var = syy / n - mean * mean;
        let total = s0.iter().sum::<f64>() + E;
        let bins = s0.len();
        let (mut c, mut dmean) = (0.0, 0.0);
        let mut r = vec![0f64; bins];
        for k in 0..bins {
            r[k] = s1[k] / (s0[k] + E) - mean;
            let nk = s0[k] / total;
            c += nk * r[k] * r[k];
            dmean -= 2.0 * nk * r[k];
        }
        let g1: Vec<f64> = (0..bins).map(|k| 2.0 * s0[k] / total * r[k] / (s0[k] + E)).collect();
        let g0: Vec<f64> = (0..bins)
            .map(|k| {
                let q = s0[k] + E;
                r[k] * r[k] / total - 2.0 * s0[k] / total * r[k] * s1[k] / (q * q) - c / total
            })
            .collect();
        let scale = range.max(1e-12);
        let valid = var > 1e-6 * scale * scale;
        let den = var + 1e-8;
        CrSide { eta: if valid { c / den } else { 0.0 }, valid, mean, den, dmean, g0, g1 }
    }
}

/// The loss (`-MI`, or `-NMI` when `normalized`) of a joint histogram `(bins, bins)` (fixed along rows)
/// and its gradient with respect to each entry, with the `1e-12` guards of
/// [`crate::metrics::functional::mutual_information`].
fn parzen_loss_grad(j: &[f64], bins: usize, normalized: bool) -> (f64, Vec<f64>) {
    const E: f64 = 1e-12;
    let total: f64 = j.iter().sum();
    let t = total + E;
    let p: Vec<f64> = j.iter().map(|v| v / t).collect();
    let mut pa = vec![0f64; bins];
    let mut pb = vec![0f64; bins];
    for k in 0..bins {
        for l in 0..bins {
            pa[k] += p[k * bins + l];
            pb[l] += p[k * bins + l];
        }
    }
    let ent = |v: &[f64]| -> f64 { -v.iter().map(|q| q * (q + E).ln()).sum::<f64>() };
    // d(-q log(q + E))/dq
    let dent = |q: f64| -> f64 { -((q + E).ln() + q / (q + E)) };
    let (ha, hb, hab) = (ent(&pa), ent(&pb), ent(&p));
    let (da, db): (Vec<f64>, Vec<f64>) = (pa.iter().map(|&q| dent(q)).collect(), pb.iter().map(|&q| dent(q)).collect());
    // d(measure)/dp_kl
    let (measure, dm): (f64, Vec<f64>) = if normalized {
        let den = hab + E;
        let num = ha + hb;
        let g = (0..bins * bins)
            .map(|kl| {
                let (k, l) = (kl / bins, kl % bins);
                (da[k] + db[l]) / den - num * dent(p[kl]) / (den * den)
            })
            .collect();
        (num / den, g)
    } else {
        let g = (0..bins * bins)
            .map(|kl| {
                let (k, l) = (kl / bins, kl % bins);
                da[k] + db[l] - dent(p[kl])
            })
            .collect();
        (ha + hb - hab, g)
    };
    // p = J / (sum J + E): d/dJ_mn = (dm_mn - sum_kl dm_kl p_kl) / t; the loss is -measure.
    let c: f64 = dm.iter().zip(&p).map(|(g, q)| g * q).sum();
    (-measure, dm.iter().map(|g| -(g - c) / t).collect())
}

/// The candle op of [`point_metric`]: the loss of its `(3, 4)` input, with `dL/dA` kept from the
/// forward pass for the backward.
struct PointMetricOp {
    measure: PointMeasure,
    samples: Arc<PointSamples>,
    moving: Arc<Vec<f32>>,
    shape: [usize; 3],
    grad: Mutex<Option<[f64; 12]>>,
}

impl CustomOp1 for PointMetricOp {
    fn name(&self) -> &'static str {
        "point-metric"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let a = super::f32_slice("point_metric", s, l)?;
        if a.len() != 12 {
            candle_core::bail!("point_metric: the map must be (3, 4), got {:?}", l.shape());
        }
        let a: [f64; 12] = std::array::from_fn(|k| a[k] as f64);
        let mv = MovingVolume { data: &self.moving, shape: self.shape };
        let r = point_loss(&self.measure, &self.samples, &mv, &a).map_err(candle_core::Error::msg)?;
        if let Ok(mut g) = self.grad.lock() {
            *g = Some(r.grad);
        }
        Ok((CpuStorage::F32(vec![r.loss as f32]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = self.grad.lock().ok().and_then(|g| *g);
        let g = match g {
            Some(g) => g,
            None => candle_core::bail!("point_metric: backward before forward"),
        };
        let up = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0];
        let v: Vec<f32> = g.iter().map(|x| (x * up as f64) as f32).collect();
        Ok(Some(Tensor::from_vec(v, (3, 4), arg.device())?))
    }
}

/// The loss of `measure` (0-d f32 tensor) at the sample points mapped by `a` `(3, 4)` f32 (fixed voxel
/// indices to moving voxel indices, see the module documentation) into `moving` `(1, Z, Y, X)` or
/// `(Z, Y, X)` f32; differentiable with respect to `a` (not the images). CPU only.
///
/// Errors: a map that is not `(3, 4)` f32, a moving image of another rank or dtype, and the errors of
/// [`point_loss`].
pub fn point_metric(a: &Tensor, measure: &PointMeasure, samples: Arc<PointSamples>, moving: &Tensor) -> Result<Tensor> {
    if a.dims() != [3, 4] || a.dtype() != DType::F32 {
        candle_core::bail!("point_metric: the map must be (3, 4) f32, got {:?} {:?}", a.dims(), a.dtype());
    }
    let d = moving.dims();
    let (z, y, x) = match d {
        [1, z, y, x] | [z, y, x] => (*z, *y, *x),
        _ => candle_core::bail!("point_metric: moving must be (1, Z, Y, X) or (Z, Y, X), got {d:?}"),
    };
    if moving.dtype() != DType::F32 {
        candle_core::bail!("point_metric: moving must be f32, got {:?}", moving.dtype());
    }
    let data = Arc::new(moving.flatten_all()?.to_vec1::<f32>()?);
    let op =
        PointMetricOp { measure: measure.clone(), samples, moving: data, shape: [x, y, z], grad: Mutex::new(None) };
    // The kernel runs on the host (the images are copied there above); a map elsewhere goes through it.
    let host = crate::device::host();
    a.to_device(&host)?.contiguous()?.apply_op1(op)?.to_device(a.device())
}
