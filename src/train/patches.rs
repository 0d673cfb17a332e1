//! Patch pairs for learning a similarity measure, and that measure (Sedghi et al., "Semi-Supervised
//! Deep Metrics for Image Registration", seed 003): a 2-channel classifier is trained on pairs of
//! patches of a fixed and a moving image that correspond (the same world positions, label 1) or do not
//! (positions at least `min_distance` mm apart, label 0); its log-likelihood ratio of "registered",
//! summed over patches, is then a registration measure ([`DeepMetric`], paper eq. 2).
//!
//! Patch tensors are `(2, pz, py, px)`: channel 0 the fixed patch, channel 1 the moving one, then
//! z, y, x (x fastest), as a regsh image's data. Patch sides are given per image axis `[px, py, pz]`
//! (voxels), as `img.shape` is. Intensities are mapped to [0, 1] by each image's minimum and maximum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Network;
use crate::error::{Error, Result};
use crate::image::ops::{normalize, Normalization};
use crate::image::resample::Padding;
use crate::image::smooth::pyramid;
use crate::image::Image;
use crate::metrics::similarity::CustomMeasure;
use crate::spatial::{warp, Linear, WarpInterpolation};

/// Options of [`patch_pairs`].
#[derive(Clone, Debug)]
pub struct PatchOptions {
    /// Patch side per image axis `[px, py, pz]`, voxels (of the level's grid).
    pub patch: [usize; 3],
    /// Positions drawn: each gives `draws` corresponding pairs and one non-corresponding pair.
    pub n: usize,
    /// Corresponding positions only where this mask (on any grid; non-zero inside) holds at the patch
    /// centre (the paper's restriction to the anatomy).
    pub mask: Option<Image>,
    /// The least distance, mm, between the fixed and the moving patch centres of a non-corresponding
    /// pair.
    pub min_distance_mm: f64,
    /// Seed of every draw.
    pub seed: u64,
    /// Symmetrization: the same random flip per axis applied to both patches of a pair.
    pub flips: bool,
    /// Symmetrization: the same random 90-degree rotation (in a plane of equal patch sides) applied to
    /// both patches.
    pub rotations: bool,
    /// Dithering: the moving patch of a corresponding pair is sampled at `x + d`, `d ~ N(0, σ² I)`
    /// (world mm), with this σ² in mm²; 0: none.
    pub dither_mm2: f64,
    /// Corresponding pairs per position (each with its own `d`).
    pub draws: usize,
    /// Both images downsampled by this factor first (Gaussian, sigma proportional to the factor, as the
    /// registration pyramid); 1: none.
    pub level: f64,
}

impl Default for PatchOptions {
    /// 17^3 patches, 64 positions, 10 mm apart, no symmetrization or dithering, one draw, full resolution.
    fn default() -> Self {
        PatchOptions {
            patch: [17; 3],
            n: 64,
            mask: None,
            min_distance_mm: 10.0,
            seed: 0,
            flips: false,
            rotations: false,
            dither_mm2: 0.0,
            draws: 1,
            level: 1.0,
        }
    }
}

/// One training sample of [`patch_pairs`].
#[derive(Clone, Debug)]
pub struct PatchPair {
    /// `(2, pz, py, px)`: fixed patch, moving patch, intensities in [0, 1].
    pub input: Tensor,
    /// 1: the patches correspond; 0: they do not.
    pub label: u8,
    /// The fixed patch's first voxel `[x, y, z]` on the level's fixed grid.
    pub fixed_start: [usize; 3],
    /// The moving patch's first voxel on the same grid (its points are sampled in the moving image).
    pub moving_start: [usize; 3],
    /// The dithering displacement `d` applied to the moving patch, mm (zero for non-corresponding pairs).
    pub displacement: [f64; 3],
}

/// The first voxels `[x, y, z]` (each axis `0..=room`) of the patches whose centre (`start + half`)
/// lies where `mask` (values of a `shape` grid, x fastest) is non-zero; an error naming `op` when none.
fn starts_inside(
    mask: &[f64],
    shape: [usize; 3],
    room: [usize; 3],
    half: [usize; 3],
    op: &str,
) -> Result<Vec<[usize; 3]>> {
    let mut c = Vec::new();
    for z in 0..=room[2] {
        for y in 0..=room[1] {
            for x in 0..=room[0] {
                if mask[((z + half[2]) * shape[1] + y + half[1]) * shape[0] + x + half[0]] != 0.0 {
                    c.push([x, y, z]);
                }
            }
        }
    }
    if c.is_empty() {
        return Err(Error::arg(op.to_string(), "the mask holds no voxel where a patch fits (empty, or off the image)"));
    }
    Ok(c)
}

/// The patch's first voxels `[x, y, z]` at which it fits in `shape`, one axis at a time: `0..=n - p`.
fn check_fits(shape: [usize; 3], patch: [usize; 3], what: &str) -> Result<[usize; 3]> {
    if patch.contains(&0) {
        return Err(Error::arg(what.to_string(), format!("the patch sides must be at least 1, got {patch:?}")));
    }
    let mut room = [0; 3];
    for a in 0..3 {
        if patch[a] > shape[a] {
            return Err(Error::arg(
                what.to_string(),
                format!("a patch of {patch:?} voxels does not fit an image of {shape:?} voxels"),
            ));
        }
        room[a] = shape[a] - patch[a];
    }
    Ok(room)
}

/// The patch at first voxel `s` `[x, y, z]` of a `(C, Z, Y, X)` tensor: `(C, pz, py, px)`.
fn crop(t: &Tensor, s: [usize; 3], p: [usize; 3]) -> Result<Tensor> {
    Ok(t.narrow(1, s[2], p[2])?.narrow(2, s[1], p[1])?.narrow(3, s[0], p[0])?)
}

fn reversed(t: &Tensor, dim: usize) -> Result<Tensor> {
    let n = t.dim(dim)?;
    let idx = Tensor::from_vec((0..n as u32).rev().collect::<Vec<_>>(), n, t.device())?;
    Ok(t.contiguous()?.index_select(&idx, dim)?)
}

/// The same random flips and 90-degree rotation applied to every channel of a `(C, Z, Y, X)` patch.
fn symmetrize(t: &Tensor, flips: bool, rotations: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let mut t = t.clone();
    if flips {
        for dim in 1..4 {
            if rng.random_bool(0.5) {
                t = reversed(&t, dim)?;
            }
        }
    }
    if rotations {
        let planes: Vec<(usize, usize)> =
            [(1, 2), (1, 3), (2, 3)].into_iter().filter(|&(a, b)| t.dim(a).ok() == t.dim(b).ok()).collect();
        if !planes.is_empty() {
            let (a, b) = planes[rng.random_range(0..planes.len())];
            for _ in 0..rng.random_range(0..4) {
                // A quarter turn in the (a, b) plane: transpose, then reverse the new a axis.
                t = reversed(&t.transpose(a, b)?, a)?;
            }
        }
    }
    Ok(t.contiguous()?)
}

/// Pairs of patches of `fixed` and `moving` for training a deep similarity measure (see the module doc
/// and [`PatchOptions`]): for each of `n` positions drawn in the fixed image (inside the mask), `draws`
/// corresponding pairs (the moving image sampled trilinearly at the fixed patch's world points, plus
/// the dithering displacement) and one non-corresponding pair (the moving patch at a uniformly drawn
/// position at least `min_distance_mm` away). The moving image may be on any grid.
///
/// Errors: a patch larger than the (level's) image or with a zero side; `n` or `draws` zero; a mask
/// without a voxel where a patch fits; a negative or non-finite dither, distance or a level below 1;
/// no position far enough for a non-corresponding pair; images with several channels.
pub fn patch_pairs(fixed: &Image, moving: &Image, o: &PatchOptions) -> Result<Vec<PatchPair>> {
    const OP: &str = "patch_pairs";
    if o.n == 0 || o.draws == 0 {
        return Err(Error::arg(OP, "n and draws must be at least 1"));
    }
    if !(o.dither_mm2.is_finite() && o.dither_mm2 >= 0.0) {
        return Err(Error::arg(OP, format!("dither is a variance in mm², >= 0, got {}", o.dither_mm2)));
    }
    if !(o.min_distance_mm.is_finite() && o.min_distance_mm >= 0.0) {
        return Err(Error::arg(OP, format!("min_distance must be >= 0 mm, got {}", o.min_distance_mm)));
    }
    if !(o.level.is_finite() && o.level >= 1.0) {
        return Err(Error::arg(OP, format!("level must be >= 1, got {}", o.level)));
    }
    let level = |im: &Image| -> Result<Image> {
        let im = if o.level > 1.0 { pyramid(im, &[o.level], None)?.remove(0).image } else { im.clone() };
        normalize(&im, Normalization::MinMax, None)
    };
    let (f, m) = (level(fixed)?, level(moving)?);
    if f.channels() != 1 || m.channels() != 1 {
        return Err(Error::arg(OP, "the images must have one channel"));
    }
    let grid = f.grid().clone();
    let shape = grid.shape();
    let room = check_fits(shape, o.patch, OP)?;
    let p = o.patch;
    let half = p.map(|s| (s - 1) / 2);
    // Candidate first voxels of corresponding patches: inside the mask at the centre, or anywhere.
    let candidates: Option<Vec<[usize; 3]>> = match &o.mask {
        Some(mask) => {
            let on = warp(mask, &Linear::translation([0.0; 3]), &grid, WarpInterpolation::Nearest, Padding::Zero)?;
            Some(starts_inside(&on.to_vec_f64()?, shape, room, half, OP)?)
        }
        None => None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let anywhere = |rng: &mut ChaCha8Rng| -> [usize; 3] { std::array::from_fn(|a| rng.random_range(0..=room[a])) };
    let world = |s: [usize; 3]| grid.index_to_world(std::array::from_fn(|a| (s[a] + half[a]) as f64));
    let fdata = f.data().to_dtype(DType::F32)?;
    let sigma = o.dither_mm2.sqrt();
    let mut out = Vec::with_capacity(o.n * (o.draws + 1));
    for _ in 0..o.n {
        let s = match &candidates {
            Some(c) => c[rng.random_range(0..c.len())],
            None => anywhere(&mut rng),
        };
        let fp = crop(&fdata, s, p)?;
        let sub = grid.sub_grid([s[0] as i64, s[1] as i64, s[2] as i64], p)?;
        for _ in 0..o.draws {
            let d: [f64; 3] =
                if sigma > 0.0 { std::array::from_fn(|_| sigma * super::pairs::normal(&mut rng)) } else { [0.0; 3] };
            let mp = warp(&m, &Linear::translation(d), &sub, WarpInterpolation::Linear, Padding::Zero)?;
            let pair = Tensor::cat(&[&fp, &mp.data().to_dtype(DType::F32)?], 0)?;
            let input = symmetrize(&pair, o.flips, o.rotations, &mut rng)?;
            out.push(PatchPair { input, label: 1, fixed_start: s, moving_start: s, displacement: d });
        }
        // A non-corresponding position, far enough from this one.
        let c = world(s);
        let far = (0..10_000).map(|_| anywhere(&mut rng)).find(|q| {
            let w = world(*q);
            (0..3).map(|a| (w[a] - c[a]).powi(2)).sum::<f64>().sqrt() >= o.min_distance_mm
        });
        let Some(q) = far else {
            return Err(Error::arg(
                OP,
                format!(
                    "no patch position lies {} mm from another in this image: lower min_distance",
                    o.min_distance_mm
                ),
            ));
        };
        let sub = grid.sub_grid([q[0] as i64, q[1] as i64, q[2] as i64], p)?;
        let mp = warp(&m, &Linear::translation([0.0; 3]), &sub, WarpInterpolation::Linear, Padding::Zero)?;
        let pair = Tensor::cat(&[&fp, &mp.data().to_dtype(DType::F32)?], 0)?;
        let input = symmetrize(&pair, o.flips, o.rotations, &mut rng)?;
        out.push(PatchPair { input, label: 0, fixed_start: s, moving_start: q, displacement: [0.0; 3] });
    }
    Ok(out)
}

/// A grid shape `[x, y, z]` and a hash of a mask's values (0: no mask).
type PositionKey = ([usize; 3], u64);

/// A learned similarity measure (Sedghi et al. eq. 2): the sum, over `patches` positions of the fixed
/// image, of the classifier's pre-softmax log-likelihood ratio of "registered" (logit 1 minus logit 0)
/// for the pair (fixed patch, warped moving patch). Higher is better. The positions are drawn from
/// `seed` once per grid size (so once per registration level, and fixed while an optimizer runs:
/// Powell's line searches need a deterministic objective), inside the mask when one is given. Each
/// image is mapped to [0, 1] by its minimum and maximum (held constant for the gradient, which flows
/// through the patches to the warp); [`patch_pairs`] maps the unwarped images the same way, so the
/// two agree while the warped image keeps its range (a background of 0, as MR has, padded with 0):
/// an image with a raised minimum or content that leaves the field of view shifts the range.
pub struct DeepMetric {
    net: Arc<Network>,
    patches: usize,
    patch: [usize; 3],
    seed: u64,
    /// Positions by grid shape and mask (a hash of its values; 0 without one).
    positions: Mutex<HashMap<PositionKey, Vec<[usize; 3]>>>,
}

impl DeepMetric {
    /// The measure of a classifier `net` taking `(N, 2, pz, py, px)` pairs to `(N, 2)` logits.
    ///
    /// Errors: zero patches or a zero patch side; a sequential network whose first layer is a
    /// convolution that does not take 2 channels (other networks fail at their first use, with the
    /// layer named).
    pub fn new(net: Arc<Network>, patches: usize, patch: [usize; 3], seed: u64) -> Result<Self> {
        if patches == 0 || patch.contains(&0) {
            return Err(Error::arg("deep_metric", "patches and the patch sides must be at least 1"));
        }
        if let Network::Sequential(s) = net.as_ref() {
            if let Some(crate::nn::LayerSpec::Conv3d { in_channels, .. }) = s.config().layers.first() {
                if *in_channels != 2 {
                    return Err(Error::arg(
                        "deep_metric",
                        format!("the network's first convolution takes {in_channels} channels; a patch pair is 2 (fixed, moving)"),
                    ));
                }
            }
        }
        Ok(DeepMetric { net, patches, patch, seed, positions: Mutex::new(HashMap::new()) })
    }

    /// The patch positions (first voxels `[x, y, z]`) for a `(1, Z, Y, X)` image and mask.
    fn positions(&self, zyx: [usize; 3], mask: Option<&Tensor>) -> Result<Vec<[usize; 3]>> {
        let shape = [zyx[2], zyx[1], zyx[0]];
        let mask_values = match mask {
            Some(m) => Some(m.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        let key = (
            shape,
            mask_values.as_ref().map_or(0, |v| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                v.iter().for_each(|x| x.to_bits().hash(&mut h));
                h.finish() | 1
            }),
        );
        let mut cache = self.positions.lock().map_err(|_| Error::arg("deep_metric", "lock poisoned"))?;
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let room = check_fits(shape, self.patch, "deep_metric")?;
        let half = self.patch.map(|s| (s - 1) / 2);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let inside: Option<Vec<[usize; 3]>> = match &mask_values {
            Some(v) => {
                let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                Some(starts_inside(&v, shape, room, half, "deep_metric")?)
            }
            None => None,
        };
        let p: Vec<[usize; 3]> = (0..self.patches)
            .map(|_| match &inside {
                Some(c) => c[rng.random_range(0..c.len())],
                None => std::array::from_fn(|a| rng.random_range(0..=room[a])),
            })
            .collect();
        cache.insert(key, p.clone());
        Ok(p)
    }
}

/// `t` mapped to [0, 1] by its minimum and maximum (constants for the gradient).
fn unit(t: &Tensor) -> Result<Tensor> {
    let d = t.detach();
    let lo = d.min_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let hi = d.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let span = if hi > lo { hi - lo } else { 1.0 };
    Ok(t.affine(1.0 / span, -lo / span)?)
}

impl CustomMeasure for DeepMetric {
    fn measure(&self, fixed: &Tensor, moving: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let zyx = match fixed.dims() {
            &[1, z, y, x] => [z, y, x],
            d => {
                return Err(Error::Shape {
                    op: "deep_metric".into(),
                    expected: "(1, Z, Y, X) images".into(),
                    actual: format!("{d:?}"),
                })
            }
        };
        let positions = self.positions(zyx, mask)?;
        let (f, m) = (unit(&fixed.to_dtype(DType::F32)?)?, unit(&moving.to_dtype(DType::F32)?)?);
        let pairs = positions
            .iter()
            .map(|&s| Ok(Tensor::cat(&[&crop(&f, s, self.patch)?, &crop(&m, s, self.patch)?], 0)?))
            .collect::<Result<Vec<_>>>()?;
        let logits = self.net.forward_tensor(&Tensor::stack(&pairs, 0)?)?;
        if logits.dims() != [positions.len(), 2] {
            return Err(Error::Shape {
                op: "deep_metric".into(),
                expected: format!("({}, 2) logits (not registered, registered) from the network", positions.len()),
                actual: format!("{:?}", logits.dims()),
            });
        }
        Ok((logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.sum_all()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;
    use candle_core::Device;

    fn ramp() -> Image {
        // value = x + 10 y + 100 z on a 12 x 10 x 8 grid, 2 mm voxels
        let (nx, ny, nz) = (12, 10, 8);
        let v: Vec<f32> =
            (0..nz * ny * nx).map(|i| ((i % nx) + 10 * ((i / nx) % ny) + 100 * (i / (nx * ny))) as f32).collect();
        let t = Tensor::from_vec(v, (1, nz, ny, nx), &Device::Cpu).unwrap();
        let g = Grid::axis_aligned([nx, ny, nz], [2.0; 3], [0.0; 3]).unwrap();
        Image::new(t, g, crate::image::DataType::Float32).unwrap()
    }

    #[test]
    fn corresponding_patches_hold_the_same_points_and_flips_apply_to_both() {
        let im = ramp();
        let o = PatchOptions { patch: [5, 4, 3], n: 20, min_distance_mm: 6.0, ..PatchOptions::default() };
        let pairs = patch_pairs(&im, &im, &o).unwrap();
        assert_eq!(pairs.len(), 40);
        for p in &pairs {
            assert_eq!(p.input.dims(), [2, 3, 4, 5]);
            let (a, b) = (p.input.get(0).unwrap(), p.input.get(1).unwrap());
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            if p.label == 1 {
                assert!(diff < 1e-6, "the same image at the same points: {diff}");
            } else {
                let d: f64 = (0..3).map(|k| (2.0 * (p.fixed_start[k] as f64 - p.moving_start[k] as f64)).powi(2)).sum();
                assert!(d.sqrt() >= 6.0 && diff > 0.0, "non-corresponding: {} mm apart", d.sqrt());
            }
        }
        // Flips reverse an axis of both channels alike: a corresponding pair stays equal channel to
        // channel, and some patch differs from its unflipped self.
        let f = patch_pairs(&im, &im, &PatchOptions { flips: true, rotations: false, ..o.clone() }).unwrap();
        let mut flipped = 0;
        for (p, q) in pairs.iter().zip(&f) {
            if p.label == 1 {
                let (a, b) = (q.input.get(0).unwrap(), q.input.get(1).unwrap());
                assert!((a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-6);
            }
            let d = (&p.input - &q.input).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            flipped += (d > 0.0) as usize;
        }
        assert!(flipped > 10, "{flipped} of 40 patches flipped");
        // A quarter turn in the (y, x) plane of a square patch: values move, the set stays.
        let r = patch_pairs(&im, &im, &PatchOptions { patch: [4, 4, 3], rotations: true, ..o.clone() }).unwrap();
        assert!(r.iter().all(|p| p.input.dims() == [2, 3, 4, 4]));
    }

    #[test]
    fn dither_displacements_have_the_asked_variance_and_shift_the_moving_patch() {
        let im = ramp();
        let o = PatchOptions { patch: [3, 3, 3], n: 200, draws: 5, dither_mm2: 4.0, ..PatchOptions::default() };
        let pairs = patch_pairs(&im, &im, &o).unwrap();
        let d: Vec<f64> = pairs.iter().filter(|p| p.label == 1).flat_map(|p| p.displacement).collect();
        assert_eq!(d.len(), 3 * 1000);
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64;
        assert!(mean.abs() < 0.15 && (var - 4.0).abs() < 0.4, "mean {mean}, variance {var} (want 0, 4)");
        // On a linear ramp the moving patch is shifted by d / 2 mm voxels: x by d_x / 2 (x + 10 y + 100 z,
        // minmax-scaled), where the displaced points stay inside the image.
        let span = 11.0 + 90.0 + 700.0;
        let mut checked = 0;
        for p in pairs.iter().filter(|p| p.label == 1).take(200) {
            let inside = (0..3).all(|a| {
                let lo = p.fixed_start[a] as f64 + p.displacement[a] / 2.0;
                lo >= 0.0 && lo + 2.0 <= [11.0, 9.0, 7.0][a]
            });
            if !inside {
                continue;
            }
            let want = (p.displacement[0] + 10.0 * p.displacement[1] + 100.0 * p.displacement[2]) / 2.0 / span;
            let got = (p.input.get(1).unwrap() - p.input.get(0).unwrap())
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            assert!((got - want).abs() < 1e-4, "shift {got} vs {want}");
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} pairs inside");
    }

    #[test]
    fn bad_input_is_named() {
        let im = ramp();
        let big = PatchOptions { patch: [13, 4, 4], ..PatchOptions::default() };
        assert!(patch_pairs(&im, &im, &big).unwrap_err().to_string().contains("does not fit"));
        let empty = PatchOptions {
            patch: [3; 3],
            mask: Some(crate::image::ops::threshold(&im, 1e9, 1e10).unwrap()),
            ..PatchOptions::default()
        };
        assert!(patch_pairs(&im, &im, &empty).unwrap_err().to_string().contains("mask holds no voxel"));
        let far = PatchOptions { patch: [3; 3], min_distance_mm: 1e3, ..PatchOptions::default() };
        assert!(patch_pairs(&im, &im, &far).unwrap_err().to_string().contains("lower min_distance"));
    }
}
