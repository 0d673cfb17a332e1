//! Evaluation measures of a registration result: overlap (Dice), surface distance (HD95), Jacobian
//! statistics, image similarity (SSIM, PSNR) and point / displacement errors (TRE, mean displacement
//! error).
//!
//! These are for reporting, not for optimizing: nothing here is differentiable. Every measure reads the
//! voxel values into `Vec<f64>` and computes in f64 (the transform-based ones evaluate the transform in
//! f32, as [`Transform`] does, and take differences in f64).
//!
//! Conventions shared by the functions below:
//!
//! - Images are `(C, Z, Y, X)` tensors, x fastest (see [`crate::image`]); flat voxel index
//!   `n = (k * ny + j) * nx + i` for voxel `(i, j, k)` along x, y, z.
//! - Two images compared voxel by voxel must be on the same grid: same shape and voxel-to-world affines
//!   equal within 1e-4 mm ([`Grid::same_as`]); otherwise the functions return [`Error::Shape`].
//! - Distances are in mm, from the grid's spacing along each voxel axis (the voxel-index distance
//!   transform with per-axis sampling that medpy's `voxelspacing` and MONAI's `spacing` use). This is the
//!   physical distance for any grid with orthogonal axes, oblique or not (a rotation does not change
//!   lengths); for a sheared grid, whose axes are not orthogonal, it ignores the shear.
//! - Label maps hold integer values (stored as floats); a non-integer or non-finite value is an
//!   [`Error::InvalidArgument`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::ops::percentile;
use crate::image::{Grid, Image};
use crate::spatial::Transform;

/// Tolerance (mm) on the voxel-to-world affines of two images compared voxel by voxel.
const GRID_TOL: f64 = 1e-4;

/// Per-label scores (Dice, HD95) and their mean.
#[derive(Debug, Clone, Serialize)]
pub struct LabelScores {
    /// Score of each evaluated label (integer label value -> score).
    pub per_label: BTreeMap<i64, f64>,
    /// Unweighted mean over the entries of `per_label`; NaN when `per_label` is empty.
    pub mean: f64,
}

impl LabelScores {
    fn from_map(per_label: BTreeMap<i64, f64>) -> Self {
        let mean =
            if per_label.is_empty() { f64::NAN } else { per_label.values().sum::<f64>() / per_label.len() as f64 };
        LabelScores { per_label, mean }
    }
}

/// Summary statistics of a Jacobian-determinant image (see [`jacobian_stats`]).
#[derive(Debug, Clone, Serialize)]
pub struct JacobianStats {
    /// Fraction (0 to 1) of the evaluated voxels with `det <= 0` (folding).
    pub fraction_nonpositive: f64,
    /// Population standard deviation (`ddof = 0`) of `ln(det)` over the evaluated voxels with `det > 0`;
    /// NaN when there is none.
    pub std_log_det: f64,
    /// Smallest determinant over the evaluated voxels.
    pub min: f64,
    /// Largest determinant over the evaluated voxels.
    pub max: f64,
    /// Mean determinant over the evaluated voxels.
    pub mean: f64,
}

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

/// `Error::Shape` unless `b` is on the grid of `a`.
fn check_same_grid(op: &str, a: &Grid, b: &Grid) -> Result<()> {
    if a.same_as(b, GRID_TOL) {
        Ok(())
    } else {
        Err(Error::Shape { op: op.into(), expected: format!("an image on the grid {a}"), actual: format!("{b}") })
    }
}

/// `Error::Shape` unless the image has exactly one channel.
fn check_single_channel(op: &str, image: &Image) -> Result<()> {
    if image.channels() == 1 {
        Ok(())
    } else {
        let [z, y, x] = image.grid().zyx();
        Err(Error::Shape {
            op: op.into(),
            expected: format!("a single-channel image (1, {z}, {y}, {x})"),
            actual: format!("{:?}", image.data().dims()),
        })
    }
}

/// The voxel values of a single-channel label map as integers.
fn label_values(op: &str, image: &Image) -> Result<Vec<i64>> {
    check_single_channel(op, image)?;
    let v = image.to_vec_f64()?;
    // Integers up to 2^53 are exact in f64.
    const LIMIT: f64 = 9_007_199_254_740_992.0;
    if let Some(bad) = v.par_iter().find_any(|x| !(x.is_finite() && x.fract() == 0.0 && x.abs() <= LIMIT)) {
        return Err(Error::arg(
            op,
            format!("a label map must hold integer values, found {bad}; use dice_threshold for probability maps"),
        ));
    }
    Ok(v.into_par_iter().map(|x| x as i64).collect())
}

/// The voxels of channel 0 of `mask` (on `grid`) that are non-zero and not NaN, or all voxels.
fn mask_values(op: &str, grid: &Grid, mask: Option<&Image>) -> Result<Option<Vec<bool>>> {
    let Some(m) = mask else { return Ok(None) };
    check_same_grid(op, grid, m.grid())?;
    let v = m.channel(0)?.to_vec_f64()?;
    let inside: Vec<bool> = v.par_iter().map(|&x| x != 0.0 && !x.is_nan()).collect();
    if !inside.iter().any(|&b| b) {
        return Err(Error::arg(op, "the mask has no non-zero voxel"));
    }
    Ok(Some(inside))
}

/// All values of an image in f64, with an [`Error::InvalidArgument`] for NaN or infinite ones.
fn finite_values(op: &str, image: &Image) -> Result<Vec<f64>> {
    let v = image.to_vec_f64()?;
    let bad = v.par_iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        return Err(Error::arg(op, format!("the image has {bad} NaN or infinite voxel(s); replace them first")));
    }
    Ok(v)
}

/// The labels to evaluate: the given ones (deduplicated, sorted), or every non-zero value in `a` or `b`.
fn labels_to_use(a: &[i64], b: &[i64], labels: Option<&[i64]>) -> Vec<i64> {
    if let Some(l) = labels {
        return l.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    }
    let set = |v: &[i64]| -> BTreeSet<i64> {
        v.par_chunks(1 << 16).map(|c| c.iter().copied().filter(|&x| x != 0).collect::<BTreeSet<i64>>()).reduce(
            BTreeSet::new,
            |mut x, y| {
                x.extend(y);
                x
            },
        )
    };
    let mut s = set(a);
    s.extend(set(b));
    s.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------------
// Dice
// ---------------------------------------------------------------------------------------------------

/// Dice overlap of two label maps, per label: `Dice = 2 |A ∩ B| / (|A| + |B|)` (Dice 1945; Sørensen
/// 1948), where `A` and `B` are the voxels holding the label in `a` and `b`.
///
/// - `a`, `b`: single-channel `(1, Z, Y, X)` label maps (integer values stored as floats) on the same
///   grid.
/// - `labels`: the labels to score; by default every non-zero value present in either image. A label
///   absent from both images gets no entry; a label present in only one scores 0.
/// - Returns the per-label Dice (dimensionless, 0 to 1) and their unweighted mean (NaN if no entry).
///
/// Errors: [`Error::Shape`] for images on different grids (1e-4 mm) or with more than one channel;
/// [`Error::InvalidArgument`] for a non-integer or non-finite voxel value.
pub fn dice(a: &Image, b: &Image, labels: Option<&[i64]>) -> Result<LabelScores> {
    check_same_grid("dice", a.grid(), b.grid())?;
    let va = label_values("dice", a)?;
    let vb = label_values("dice", b)?;
    let wanted = labels_to_use(&va, &vb, labels);
    let index: HashMap<i64, usize> = wanted.iter().enumerate().map(|(n, &l)| (l, n)).collect();
    let nl = wanted.len();
    // Counts per wanted label: |A|, |B|, |A ∩ B|.
    let counts = va
        .par_chunks(1 << 16)
        .zip(vb.par_chunks(1 << 16))
        .map(|(ca, cb)| {
            let mut c = vec![[0u64; 3]; nl];
            for (&x, &y) in ca.iter().zip(cb) {
                let ix = index.get(&x).copied();
                if let Some(n) = ix {
                    c[n][0] += 1;
                }
                if let Some(n) = index.get(&y).copied() {
                    c[n][1] += 1;
                    if x == y {
                        c[n][2] += 1;
                    }
                }
            }
            c
        })
        .reduce(
            || vec![[0u64; 3]; nl],
            |mut x, y| {
                for (p, q) in x.iter_mut().zip(y) {
                    for t in 0..3 {
                        p[t] += q[t];
                    }
                }
                x
            },
        );
    let mut per_label = BTreeMap::new();
    for (l, [na, nb, ni]) in wanted.iter().zip(counts) {
        if na + nb > 0 {
            per_label.insert(*l, 2.0 * ni as f64 / (na + nb) as f64);
        }
    }
    Ok(LabelScores::from_map(per_label))
}

/// Dice of two probability (or soft) maps binarized at `value >= threshold`: one Dice
/// `2 |A ∩ B| / (|A| + |B|)` over all voxels of all channels (NaN voxels are outside).
///
/// - `a`, `b`: `(C, Z, Y, X)` images on the same grid with the same `C`.
/// - Returns the Dice in 0 to 1, or NaN when both binarized maps are empty (undefined, as MONAI's
///   `DiceMetric(ignore_empty=True)` reports it).
///
/// Errors: [`Error::Shape`] for different grids or channel counts; [`Error::InvalidArgument`] for a
/// non-finite `threshold`.
pub fn dice_threshold(a: &Image, b: &Image, threshold: f64) -> Result<f64> {
    check_same_grid("dice_threshold", a.grid(), b.grid())?;
    if a.channels() != b.channels() {
        return Err(Error::Shape {
            op: "dice_threshold".into(),
            expected: format!("{} channel(s) like the first image", a.channels()),
            actual: format!("{} channel(s)", b.channels()),
        });
    }
    if !threshold.is_finite() {
        return Err(Error::arg("dice_threshold", format!("threshold must be finite, got {threshold}")));
    }
    let (va, vb) = (a.to_vec_f64()?, b.to_vec_f64()?);
    let [na, nb, ni] = va
        .par_iter()
        .zip(vb.par_iter())
        .map(|(&x, &y)| {
            let (p, q) = (x >= threshold, y >= threshold);
            [p as u64, q as u64, (p && q) as u64]
        })
        .reduce(|| [0; 3], |x, y| [x[0] + y[0], x[1] + y[1], x[2] + y[2]]);
    if na + nb == 0 {
        return Ok(f64::NAN);
    }
    Ok(2.0 * ni as f64 / (na + nb) as f64)
}

// ---------------------------------------------------------------------------------------------------
// Euclidean distance transform
// ---------------------------------------------------------------------------------------------------

/// Runs `f(scratch, input_line, output_line)` on every line of `data` (shape x, y, z; x fastest) along
/// `axis` (0 = x, 1 = y, 2 = z), in place, in parallel.
fn along_axis<S, F>(data: &mut [f64], shape: [usize; 3], axis: usize, f: F)
where
    S: Default + Send,
    F: Fn(&mut S, &[f64], &mut [f64]) + Sync,
{
    let [nx, ny, nz] = shape;
    match axis {
        0 => data.par_chunks_mut(nx).for_each_init(
            || (S::default(), vec![0.0; nx]),
            |(s, inb), line| {
                inb.copy_from_slice(line);
                f(s, inb, line);
            },
        ),
        1 => data.par_chunks_mut(nx * ny).for_each_init(
            || (S::default(), vec![0.0; ny], vec![0.0; ny]),
            |(s, inb, outb), slab| {
                for i in 0..nx {
                    for j in 0..ny {
                        inb[j] = slab[j * nx + i];
                    }
                    f(s, inb, outb);
                    for j in 0..ny {
                        slab[j * nx + i] = outb[j];
                    }
                }
            },
        ),
        _ => {
            // Lines along z are strided across slabs: each task computes the (z, x) plane of one y and
            // the planes are written back afterwards.
            let src: &[f64] = data;
            let planes: Vec<Vec<f64>> = (0..ny)
                .into_par_iter()
                .map_init(
                    || (S::default(), vec![0.0; nz], vec![0.0; nz]),
                    |(s, inb, outb), j| {
                        let mut plane = vec![0.0; nx * nz];
                        for i in 0..nx {
                            for k in 0..nz {
                                inb[k] = src[(k * ny + j) * nx + i];
                            }
                            f(s, inb, outb);
                            for k in 0..nz {
                                plane[k * nx + i] = outb[k];
                            }
                        }
                        plane
                    },
                )
                .collect();
            for (j, plane) in planes.iter().enumerate() {
                for k in 0..nz {
                    let o = (k * ny + j) * nx;
                    data[o..o + nx].copy_from_slice(&plane[k * nx..(k + 1) * nx]);
                }
            }
        }
    }
}

/// Scratch of the 1-D lower-envelope pass: parabola sites and their left boundaries.
#[derive(Default)]
struct Envelope {
    sites: Vec<usize>,
    bounds: Vec<f64>,
}

/// One 1-D pass of Felzenszwalb & Huttenlocher's squared distance transform with sample spacing `w`:
/// `out[p] = min_q (w (p - q))^2 + f[q]` over the finite `f[q]` (infinite when there is none).
fn edt_1d(env: &mut Envelope, f: &[f64], out: &mut [f64], w: f64) {
    let (v, z) = (&mut env.sites, &mut env.bounds);
    v.clear();
    z.clear();
    for (q, &fq) in f.iter().enumerate() {
        if !fq.is_finite() {
            continue;
        }
        let xq = w * q as f64;
        let hq = fq + xq * xq;
        loop {
            let Some(&p) = v.last() else {
                v.push(q);
                z.push(f64::NEG_INFINITY);
                break;
            };
            let xp = w * p as f64;
            let s = (hq - (f[p] + xp * xp)) / (2.0 * (xq - xp));
            if z.last().is_some_and(|&b| s <= b) {
                v.pop();
                z.pop();
                continue;
            }
            v.push(q);
            z.push(s);
            break;
        }
    }
    if v.is_empty() {
        out.fill(f64::INFINITY);
        return;
    }
    let mut k = 0;
    for (p, o) in out.iter_mut().enumerate() {
        let x = w * p as f64;
        while k + 1 < v.len() && z[k + 1] < x {
            k += 1;
        }
        let d = x - w * v[k] as f64;
        *o = d * d + f[v[k]];
    }
}

/// Squared Euclidean distance transform (mm²) of `mask`; see [`distance_transform`].
fn squared_edt(mask: &[bool], shape: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let mut g: Vec<f64> = mask.par_iter().map(|&m| if m { 0.0 } else { f64::INFINITY }).collect();
    for (axis, &w) in spacing.iter().enumerate() {
        along_axis::<Envelope, _>(&mut g, shape, axis, |env, f, out| edt_1d(env, f, out, w));
    }
    g
}

/// Exact Euclidean distance transform: for every voxel, the distance in mm to the nearest `true` voxel
/// of `mask` (0 on the mask itself), with anisotropic voxel spacing.
///
/// - `mask`: `shape[0] * shape[1] * shape[2]` flags in voxel order x fastest (`(k * ny + j) * nx + i`).
/// - `shape`: voxels along x, y, z; `spacing`: voxel size along x, y, z in mm (positive, finite).
/// - Returns the distances (mm) in the same order; every distance is `f64::INFINITY` when the mask is
///   empty.
///
/// Algorithm: the separable squared distance transform of Felzenszwalb & Huttenlocher, "Distance
/// Transforms of Sampled Functions", Theory of Computing 8 (2012), one lower-envelope-of-parabolas pass
/// per axis with the axis' spacing, then a square root. Exact up to rounding; it agrees with
/// `scipy.ndimage.distance_transform_edt(~mask, sampling=spacing)`.
///
/// Errors: [`Error::Shape`] when `mask.len()` is not the product of `shape`; [`Error::InvalidArgument`]
/// for a spacing that is not positive and finite.
pub fn distance_transform(mask: &[bool], shape: [usize; 3], spacing: [f64; 3]) -> Result<Vec<f64>> {
    let n: usize = shape.iter().product();
    if mask.len() != n {
        return Err(Error::Shape {
            op: "distance_transform".into(),
            expected: format!("{} x {} x {} = {n} mask values", shape[0], shape[1], shape[2]),
            actual: format!("{} values", mask.len()),
        });
    }
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::arg("distance_transform", format!("spacing must be positive and finite, got {spacing:?}")));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut g = squared_edt(mask, shape, spacing);
    g.par_iter_mut().for_each(|d| *d = d.sqrt());
    Ok(g)
}

// ---------------------------------------------------------------------------------------------------
// HD95
// ---------------------------------------------------------------------------------------------------

/// Inclusive voxel bounding box `[lo, hi]` along x, y, z.
#[derive(Clone, Copy, Debug)]
struct BBox {
    lo: [usize; 3],
    hi: [usize; 3],
}

impl BBox {
    fn point(p: [usize; 3]) -> Self {
        BBox { lo: p, hi: p }
    }
    fn add(&mut self, p: [usize; 3]) {
        for (a, &x) in p.iter().enumerate() {
            self.lo[a] = self.lo[a].min(x);
            self.hi[a] = self.hi[a].max(x);
        }
    }
    fn union(mut self, o: &BBox) -> Self {
        self.add(o.lo);
        self.add(o.hi);
        self
    }
    fn size(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.hi[a] - self.lo[a] + 1)
    }
}

/// Bounding boxes of every label of a label map (shape x, y, z), restricted to `wanted`.
fn label_boxes(v: &[i64], shape: [usize; 3], wanted: &BTreeSet<i64>) -> HashMap<i64, BBox> {
    let [nx, ny, _] = shape;
    v.par_chunks(nx * ny)
        .enumerate()
        .map(|(k, slab)| {
            let mut m: HashMap<i64, BBox> = HashMap::new();
            for (n, &l) in slab.iter().enumerate() {
                if wanted.contains(&l) {
                    let p = [n % nx, n / nx, k];
                    m.entry(l).and_modify(|b| b.add(p)).or_insert(BBox::point(p));
                }
            }
            m
        })
        .reduce(HashMap::new, |mut x, y| {
            for (l, b) in y {
                x.entry(l).and_modify(|a| *a = a.union(&b)).or_insert(b);
            }
            x
        })
}

/// Boundary voxels of a binary mask (shape x, y, z): mask voxels with at least one of their 6 face
/// neighbours outside the mask, voxels beyond the array counting as outside (medpy: `mask ^
/// binary_erosion(mask, 6-connectivity)`, border value 0).
fn surface(m: &[bool], shape: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = shape;
    let mut out = vec![false; m.len()];
    out.par_chunks_mut(nx * ny).enumerate().for_each(|(k, slab)| {
        for j in 0..ny {
            for i in 0..nx {
                let n = (k * ny + j) * nx + i;
                if !m[n] {
                    continue;
                }
                let inside = |di: isize, dj: isize, dk: isize| -> bool {
                    let (ii, jj, kk) = (i as isize + di, j as isize + dj, k as isize + dk);
                    if ii < 0 || jj < 0 || kk < 0 || ii >= nx as isize || jj >= ny as isize || kk >= nz as isize {
                        return false;
                    }
                    m[(kk as usize * ny + jj as usize) * nx + ii as usize]
                };
                let interior = inside(-1, 0, 0)
                    && inside(1, 0, 0)
                    && inside(0, -1, 0)
                    && inside(0, 1, 0)
                    && inside(0, 0, -1)
                    && inside(0, 0, 1);
                slab[j * nx + i] = !interior;
            }
        }
    });
    out
}

/// HD95 of one label inside its box: the 95th percentile of the union of both directed surface
/// distance sets.
fn hd95_in_box(va: &[i64], vb: &[i64], shape: [usize; 3], spacing: [f64; 3], label: i64, bx: &BBox) -> f64 {
    let [nx, ny, _] = shape;
    let s = bx.size();
    let mut ma = vec![false; s[0] * s[1] * s[2]];
    let mut mb = vec![false; ma.len()];
    for k in 0..s[2] {
        for j in 0..s[1] {
            let src = ((k + bx.lo[2]) * ny + j + bx.lo[1]) * nx + bx.lo[0];
            let dst = (k * s[1] + j) * s[0];
            for i in 0..s[0] {
                ma[dst + i] = va[src + i] == label;
                mb[dst + i] = vb[src + i] == label;
            }
        }
    }
    // The box holds every voxel of the label in both images, so a neighbour beyond the box is outside
    // the label (as one beyond the image is), and every surface voxel, the only features of the
    // distance transforms, lies inside it: the distances are those of the whole image.
    let (sa, sb) = (surface(&ma, s), surface(&mb, s));
    let (da, db) = (squared_edt(&sa, s, spacing), squared_edt(&sb, s, spacing));
    let mut d: Vec<f64> = Vec::new();
    d.extend(sa.iter().zip(&db).filter(|(&on, _)| on).map(|(_, &x)| x.sqrt()));
    d.extend(sb.iter().zip(&da).filter(|(&on, _)| on).map(|(_, &x)| x.sqrt()));
    percentile(&d, 95.0).unwrap_or(f64::NAN)
}

/// 95th-percentile Hausdorff distance (HD95, mm) of two label maps, per label, as medpy's
/// `medpy.metric.binary.hd95` defines it (`connectivity=1`, `voxelspacing` = the grid's spacing):
///
/// 1. the surface of a label is its boundary voxels: voxels of the label with at least one of their 6
///    face neighbours not in the label (voxels beyond the image count as not in the label, so label
///    voxels on the image border are surface voxels);
/// 2. the directed distances are, for each surface voxel of `a`, the Euclidean distance (mm) to the
///    nearest surface voxel of `b` (an exact distance transform of `b`'s surface, see
///    [`distance_transform`]), and the same from `b` to `a`;
/// 3. HD95 is the 95th percentile of the union of both sets, with numpy's default `'linear'`
///    interpolation (`np.percentile(np.hstack((d_ab, d_ba)), 95)`).
///
/// This is medpy's definition, not MONAI's: `monai.metrics.compute_hausdorff_distance(percentile=95)`
/// takes the 95th percentile of each directed set separately and reports the larger one.
///
/// - `a`, `b`: single-channel `(1, Z, Y, X)` label maps (integer values stored as floats) on the same
///   grid. Distances use the grid's spacing along each voxel axis; an oblique direction does not change
///   them.
/// - `labels`: the labels to score; by default every non-zero value present in either image.
/// - A label absent from either image is skipped (no entry; medpy raises there, MONAI reports NaN or
///   infinity), so `mean` is over the labels present in both.
///
/// Each label is computed on the bounding box of its voxels in both images (exactly equal to the
/// whole-image result), labels in parallel.
///
/// Errors: [`Error::Shape`] for images on different grids (1e-4 mm) or with more than one channel;
/// [`Error::InvalidArgument`] for a non-integer or non-finite voxel value.
pub fn hd95(a: &Image, b: &Image, labels: Option<&[i64]>) -> Result<LabelScores> {
    check_same_grid("hd95", a.grid(), b.grid())?;
    let va = label_values("hd95", a)?;
    let vb = label_values("hd95", b)?;
    let wanted: BTreeSet<i64> = labels_to_use(&va, &vb, labels).into_iter().collect();
    let shape = a.grid().shape();
    let spacing = a.grid().spacing();
    let (boxes_a, boxes_b) = (label_boxes(&va, shape, &wanted), label_boxes(&vb, shape, &wanted));
    let jobs: Vec<(i64, BBox)> = wanted
        .iter()
        .filter_map(|l| match (boxes_a.get(l), boxes_b.get(l)) {
            (Some(x), Some(y)) => Some((*l, x.union(y))),
            _ => None,
        })
        .collect();
    let per_label: BTreeMap<i64, f64> =
        jobs.par_iter().map(|(l, bx)| (*l, hd95_in_box(&va, &vb, shape, spacing, *l, bx))).collect();
    Ok(LabelScores::from_map(per_label))
}

// ---------------------------------------------------------------------------------------------------
// Jacobian statistics
// ---------------------------------------------------------------------------------------------------

/// Statistics of a Jacobian-determinant image (e.g. from [`crate::spatial::jacobian_determinant`]) over
/// its voxels, or over the voxels where channel 0 of `mask` is non-zero (and not NaN).
///
/// - `det`: single-channel `(1, Z, Y, X)` determinants (dimensionless).
/// - `fraction_nonpositive`: fraction of the evaluated voxels with `det <= 0` (the folding ratio
///   reported by Learn2Reg);
/// - `std_log_det`: population standard deviation of `ln(det)` over the evaluated voxels with `det > 0`
///   (Learn2Reg's "SDlogJ", Hering et al., IEEE TMI 2023; Learn2Reg clips `det` to `[1e-9, 1e9]`
///   instead, here non-positive voxels are left out and counted by `fraction_nonpositive`); NaN when
///   no evaluated voxel is positive;
/// - `min`, `max`, `mean`: of `det` over all evaluated voxels.
///
/// Errors: [`Error::Shape`] for a `det` with more than one channel or a mask on another grid (1e-4 mm);
/// [`Error::InvalidArgument`] for an empty mask or a NaN / infinite determinant among the evaluated
/// voxels.
pub fn jacobian_stats(det: &Image, mask: Option<&Image>) -> Result<JacobianStats> {
    check_single_channel("jacobian_stats", det)?;
    let v = det.to_vec_f64()?;
    let inside = mask_values("jacobian_stats", det.grid(), mask)?;
    let sel: Vec<f64> = match &inside {
        Some(m) => v.iter().zip(m).filter(|(_, &b)| b).map(|(&x, _)| x).collect(),
        None => v,
    };
    let bad = sel.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        return Err(Error::arg("jacobian_stats", format!("{bad} evaluated determinant(s) are NaN or infinite")));
    }
    let n = sel.len() as f64;
    let (mut min, mut max, mut sum, mut nonpos) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
    for &x in &sel {
        min = min.min(x);
        max = max.max(x);
        sum += x;
        if x <= 0.0 {
            nonpos += 1;
        }
    }
    let logs: Vec<f64> = sel.iter().filter(|&&x| x > 0.0).map(|x| x.ln()).collect();
    let std_log_det = if logs.is_empty() {
        f64::NAN
    } else {
        let m = logs.iter().sum::<f64>() / logs.len() as f64;
        (logs.iter().map(|l| (l - m) * (l - m)).sum::<f64>() / logs.len() as f64).sqrt()
    };
    Ok(JacobianStats { fraction_nonpositive: nonpos as f64 / n, std_log_det, min, max, mean: sum / n })
}

// ---------------------------------------------------------------------------------------------------
// SSIM and PSNR
// ---------------------------------------------------------------------------------------------------

/// SSIM constants and Gaussian window of Wang et al. (2004) as scikit-image uses them.
const SSIM_K1: f64 = 0.01;
const SSIM_K2: f64 = 0.03;
const SSIM_SIGMA: f64 = 1.5;
const SSIM_TRUNCATE: f64 = 3.5;

/// The normalized 1-D Gaussian of `scipy.ndimage.gaussian_filter` (`_gaussian_kernel1d`, order 0):
/// radius `int(truncate * sigma + 0.5)`, weights `exp(-x^2 / (2 sigma^2))` divided by their sum.
fn scipy_gaussian_kernel(sigma: f64, truncate: f64) -> Vec<f64> {
    crate::image::smooth::gaussian_taps(sigma, (truncate * sigma + 0.5) as usize)
}

/// Index into a line of length `n` under scipy.ndimage's `mode='reflect'` (half-sample symmetric:
/// `d c b a | a b c d | d c b a`), for any integer position.
fn reflect_index(p: i64, n: usize) -> usize {
    let n = n as i64;
    let m = p.rem_euclid(2 * n);
    (if m >= n { 2 * n - 1 - m } else { m }) as usize
}

/// `scipy.ndimage.gaussian_filter(x, sigma, truncate, mode='reflect')` of a volume (shape x, y, z):
/// the 1-D correlation with the kernel along each axis.
fn gaussian_reflect(data: &[f64], shape: [usize; 3], kernel: &[f64]) -> Vec<f64> {
    let r = (kernel.len() / 2) as i64;
    let mut g = data.to_vec();
    for axis in 0..3 {
        let n = shape[axis];
        along_axis::<Vec<f64>, _>(&mut g, shape, axis, |ext, f, out| {
            // The line extended by r samples on both sides.
            ext.clear();
            ext.extend((-r..n as i64 + r).map(|p| f[reflect_index(p, n)]));
            for (p, o) in out.iter_mut().enumerate() {
                *o = kernel.iter().zip(&ext[p..p + kernel.len()]).map(|(w, x)| w * x).sum();
            }
        });
    }
    g
}

/// Mean SSIM of one channel (volumes of shape x, y, z), as `skimage.metrics.structural_similarity`.
fn ssim_channel(x: &[f64], y: &[f64], shape: [usize; 3], range: f64) -> f64 {
    let kernel = scipy_gaussian_kernel(SSIM_SIGMA, SSIM_TRUNCATE);
    let filt = |v: &[f64]| gaussian_reflect(v, shape, &kernel);
    // The products are filtered one at a time so that only one of them is held at once.
    let (ux, uy) = (filt(x), filt(y));
    let uxx = filt(&x.par_iter().map(|a| a * a).collect::<Vec<f64>>());
    let uyy = filt(&y.par_iter().map(|a| a * a).collect::<Vec<f64>>());
    let uxy = filt(&x.par_iter().zip(y).map(|(a, b)| a * b).collect::<Vec<f64>>());
    let c1 = (SSIM_K1 * range).powi(2);
    let c2 = (SSIM_K2 * range).powi(2);
    let pad = kernel.len() / 2;
    let [nx, ny, nz] = shape;
    let sum: f64 = (pad..nz - pad)
        .into_par_iter()
        .map(|k| {
            let mut s = 0.0;
            for j in pad..ny - pad {
                for i in pad..nx - pad {
                    let n = (k * ny + j) * nx + i;
                    let (mx, my) = (ux[n], uy[n]);
                    let vx = uxx[n] - mx * mx;
                    let vy = uyy[n] - my * my;
                    let vxy = uxy[n] - mx * my;
                    let a1 = 2.0 * mx * my + c1;
                    let a2 = 2.0 * vxy + c2;
                    let b1 = mx * mx + my * my + c1;
                    let b2 = vx + vy + c2;
                    s += (a1 * a2) / (b1 * b2);
                }
            }
            s
        })
        .sum();
    sum / ((nx - 2 * pad) * (ny - 2 * pad) * (nz - 2 * pad)) as f64
}

/// The data range: given (positive, finite), or `max - min` of `values`.
fn data_range_of(op: &str, values: &[f64], given: Option<f64>) -> Result<f64> {
    let r = match given {
        Some(r) => r,
        None => {
            let (lo, hi) = values
                .par_iter()
                .fold(|| (f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)))
                .reduce(|| (f64::INFINITY, f64::NEG_INFINITY), |(a, b), (c, d)| (a.min(c), b.max(d)));
            hi - lo
        }
    };
    if !(r.is_finite() && r > 0.0) {
        return Err(Error::arg(
            op,
            format!("data range must be positive and finite, got {r} (a constant image?); pass data_range"),
        ));
    }
    Ok(r)
}

/// Mean structural similarity (SSIM) of two images, in 3-D, exactly as
/// `skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
/// use_sample_covariance=False, data_range=R)` computes it on float64 arrays (Wang, Bovik, Sheikh &
/// Simoncelli, "Image quality assessment: from error visibility to structural similarity", IEEE TIP 13,
/// 2004):
///
/// - local means, variances and covariance are Gaussian-weighted: `scipy.ndimage.gaussian_filter` with
///   `sigma = 1.5` voxels, `truncate = 3.5` (an 11-tap kernel, radius 5) and `mode='reflect'`
///   (half-sample symmetric extension), applied to `a`, `b`, `a²`, `b²`, `ab`; population (co)variances
///   `E[ab] - E[a] E[b]`;
/// - `SSIM = (2 μa μb + C1)(2 σab + C2) / ((μa² + μb² + C1)(σa² + σb² + C2))` per voxel, with
///   `C1 = (0.01 R)²`, `C2 = (0.03 R)²`;
/// - the mean is taken after cropping a border of `(win_size - 1) / 2 = 5` voxels from every side of
///   every axis (`win_size = 11`).
///
/// Sigma and the window are in voxels (not mm), as in scikit-image.
///
/// - `a`, `b`: `(C, Z, Y, X)` images on the same grid with the same `C`; channels are scored separately
///   and averaged (scikit-image's `channel_axis=0`).
/// - `data_range`: `R`; by default `max(a) - min(a)` over all channels (scikit-image has no default for
///   float images and raises, so pass the same value there).
/// - Returns the mean SSIM (dimensionless, at most 1).
///
/// Errors: [`Error::Shape`] for different grids (1e-4 mm) or channel counts; [`Error::InvalidArgument`]
/// for an axis shorter than 11 voxels, NaN / infinite voxels, or a data range that is not positive and
/// finite.
pub fn ssim(a: &Image, b: &Image, data_range: Option<f64>) -> Result<f64> {
    check_same_grid("ssim", a.grid(), b.grid())?;
    if a.channels() != b.channels() {
        return Err(Error::Shape {
            op: "ssim".into(),
            expected: format!("{} channel(s) like the first image", a.channels()),
            actual: format!("{} channel(s)", b.channels()),
        });
    }
    let shape = a.grid().shape();
    let win = 2 * (SSIM_TRUNCATE * SSIM_SIGMA + 0.5) as usize + 1;
    if shape.iter().any(|&n| n < win) {
        return Err(Error::arg(
            "ssim",
            format!("every axis needs at least {win} voxels (the SSIM window), got {shape:?}"),
        ));
    }
    let (va, vb) = (finite_values("ssim", a)?, finite_values("ssim", b)?);
    let range = data_range_of("ssim", &va, data_range)?;
    let n = a.grid().num_voxels();
    let c = a.channels();
    let total: f64 =
        (0..c).map(|ch| ssim_channel(&va[ch * n..(ch + 1) * n], &vb[ch * n..(ch + 1) * n], shape, range)).sum();
    Ok(total / c as f64)
}

/// Peak signal-to-noise ratio in dB, `10 log10(R² / MSE)` with `MSE` the mean of `(reference - test)²`
/// over all voxels of all channels, as `skimage.metrics.peak_signal_noise_ratio(reference, test,
/// data_range=R)`.
///
/// - `reference`, `test`: `(C, Z, Y, X)` images on the same grid with the same `C`.
/// - `data_range`: `R`; by default `max(reference) - min(reference)`. scikit-image's own default
///   depends on the array dtype (1 for float arrays with no negative value, 2 with negatives, and an
///   error for values beyond [-1, 1]), which says nothing about medical intensities; pass
///   `data_range=R` to scikit-image to compare.
/// - Returns the PSNR in dB; `f64::INFINITY` for identical images (MSE 0), as numpy gives.
///
/// Errors: [`Error::Shape`] for different grids (1e-4 mm) or channel counts; [`Error::InvalidArgument`]
/// for NaN / infinite voxels or a data range that is not positive and finite.
pub fn psnr(reference: &Image, test: &Image, data_range: Option<f64>) -> Result<f64> {
    check_same_grid("psnr", reference.grid(), test.grid())?;
    if reference.channels() != test.channels() {
        return Err(Error::Shape {
            op: "psnr".into(),
            expected: format!("{} channel(s) like the reference", reference.channels()),
            actual: format!("{} channel(s)", test.channels()),
        });
    }
    let (vr, vt) = (finite_values("psnr", reference)?, finite_values("psnr", test)?);
    let range = data_range_of("psnr", &vr, data_range)?;
    let sse: f64 = vr.par_iter().zip(vt.par_iter()).map(|(x, y)| (x - y) * (x - y)).sum();
    let mse = sse / vr.len() as f64;
    if mse == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(10.0 * (range * range / mse).log10())
}

// ---------------------------------------------------------------------------------------------------
// Point and displacement errors
// ---------------------------------------------------------------------------------------------------

/// Target registration error (Fitzpatrick, West & Maurer, IEEE TMI 17, 1998) per landmark:
/// `|T(p_fixed) - p_moving|` in mm, where `T` maps fixed-space to moving-space world points (regsh's
/// convention, see [`crate::spatial`]).
///
/// - `fixed_points`, `moving_points`: corresponding world points (mm, RAS), the same count `N`.
/// - `transform`: evaluated with [`Transform::map_points`] on an `(N, 3)` f32 tensor (so coordinates
///   carry f32 rounding, about 1e-5 mm at 100 mm); the differences are taken in f64.
/// - Returns the `N` errors in mm (empty for no landmark).
///
/// Errors: [`Error::Shape`] for different counts or a transform returning another shape;
/// [`Error::InvalidArgument`] for a non-finite coordinate; errors of the transform.
pub fn tre(fixed_points: &[[f64; 3]], moving_points: &[[f64; 3]], transform: &dyn Transform) -> Result<Vec<f64>> {
    if fixed_points.len() != moving_points.len() {
        return Err(Error::Shape {
            op: "tre".into(),
            expected: format!("{} moving points like the fixed points", fixed_points.len()),
            actual: format!("{} moving points", moving_points.len()),
        });
    }
    if fixed_points.iter().chain(moving_points).flatten().any(|x| !x.is_finite()) {
        return Err(Error::arg("tre", "landmark coordinates must be finite"));
    }
    let n = fixed_points.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let flat: Vec<f32> = fixed_points.iter().flat_map(|p| p.map(|x| x as f32)).collect();
    let mapped = transform.map_points(&Tensor::from_vec(flat, (n, 3), &crate::device::host())?)?;
    if mapped.dims() != [n, 3] {
        return Err(Error::Shape {
            op: "tre".into(),
            expected: format!("({n}, 3) mapped points"),
            actual: format!("{:?}", mapped.dims()),
        });
    }
    let m = mapped.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    Ok(m.iter()
        .zip(moving_points)
        .map(|(p, q)| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt())
        .collect())
}

/// Mean displacement error between two transforms: the mean over the voxel centres `x` of `grid`
/// (inside the mask, if given) of `|a(x) - b(x)|` in mm, with both transforms evaluated by
/// [`Transform::world_points`] (f32 world points, differences in f64). Comparing a registration with
/// a known ground-truth transform gives the usual "mean end-point error" of synthetic-deformation
/// experiments.
///
/// - `grid`: the evaluation grid (typically the fixed image's).
/// - `mask`: voxels where channel 0 is non-zero (and not NaN), on `grid`.
/// - Returns the mean error in mm.
///
/// Errors: [`Error::Shape`] for a mask on another grid (1e-4 mm) or a transform returning points of
/// another shape; [`Error::InvalidArgument`] for an empty mask; errors of the transforms.
pub fn mean_displacement_error(a: &dyn Transform, b: &dyn Transform, grid: &Grid, mask: Option<&Image>) -> Result<f64> {
    let inside = mask_values("mean_displacement_error", grid, mask)?;
    let [z, y, x] = grid.zyx();
    let points = |t: &dyn Transform| -> Result<Vec<f32>> {
        let p = t.world_points(grid)?;
        if p.dims() != [z, y, x, 3] {
            return Err(Error::Shape {
                op: "mean_displacement_error".into(),
                expected: format!("({z}, {y}, {x}, 3) world points from {}", t.name()),
                actual: format!("{:?}", p.dims()),
            });
        }
        Ok(p.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let (pa, pb) = (points(a)?, points(b)?);
    let (sum, count) = pa
        .par_chunks(3)
        .zip(pb.par_chunks(3))
        .enumerate()
        .filter(|(n, _)| inside.as_ref().is_none_or(|m| m[*n]))
        .map(|(_, (p, q))| {
            let d: f64 = (0..3).map(|c| (p[c] as f64 - q[c] as f64).powi(2)).sum();
            (d.sqrt(), 1usize)
        })
        .reduce(|| (0.0, 0), |(s, n), (t, m)| (s + t, n + m));
    Ok(sum / count as f64)
}
