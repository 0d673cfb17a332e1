//! Evaluation measures (`regsh::metrics::evaluation`): known answers on synthetic images, and agreement
//! with independent references (numpy / scipy / scikit-image, `tests/python/eval_ref.py`, run with the
//! environment of scripts/setup-python.sh) on the real data.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use nalgebra::Matrix3;
use regsh::error::Error;
use regsh::image::io::load;
use regsh::image::resample::{resample, Interpolation, Padding};
use regsh::image::smooth::{smooth, SigmaUnit};
use regsh::image::{Grid, Image};
use regsh::metrics::evaluation::{
    dice, dice_threshold, distance_transform, hd95, jacobian_stats, mean_displacement_error, psnr, ssim, tre,
};
use regsh::spatial::{Linear, LinearKind};
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------------
// Python reference
// ------------------------------------------------------------------------------------------------

/// Runs `eval_ref.py command spec` and parses its JSON output.
fn reference(dir: &Path, command: &str, spec: Value) -> Value {
    let spec_path = dir.join(format!("{command}-spec.json"));
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/eval_ref.py");
    let out = Command::new(common::python()).arg(script).arg(command).arg(&spec_path).output().expect("spawn python");
    assert!(
        out.status.success(),
        "eval_ref.py {command} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from eval_ref.py")
}

/// Writes channel 0 of an image as raw little-endian f64 in (Z, Y, X) order.
fn write_raw(dir: &Path, name: &str, image: &Image) -> String {
    let v = image.channel(0).unwrap().to_vec_f64().unwrap();
    let path = dir.join(name);
    std::fs::write(&path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    path.to_string_lossy().into_owned()
}

/// Writes channel 0 of a label map as raw little-endian i32 in (Z, Y, X) order (numpy dtype `<i4`).
fn write_raw_labels(dir: &Path, name: &str, image: &Image) -> String {
    let v = image.channel(0).unwrap().to_vec_f64().unwrap();
    assert!(v.iter().all(|x| x.fract() == 0.0 && x.abs() < 2e9));
    let path = dir.join(name);
    std::fs::write(&path, v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    path.to_string_lossy().into_owned()
}

/// The (z, y, x) shape and spacing of a grid, as numpy sees the tensor.
fn zyx_shape_spacing(g: &Grid) -> (Vec<usize>, Vec<f64>) {
    let s = g.spacing();
    (g.zyx().to_vec(), vec![s[2], s[1], s[0]])
}

/// `{"label": value}` from the reference as a map.
fn per_label(v: &Value) -> BTreeMap<i64, f64> {
    v["per_label"]
        .as_object()
        .expect("per_label object")
        .iter()
        .map(|(k, x)| (k.parse().unwrap(), x.as_f64().unwrap()))
        .collect()
}

fn max_abs_diff(a: &BTreeMap<i64, f64>, b: &BTreeMap<i64, f64>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "label sets differ");
    a.iter().map(|(l, x)| (x - b[l]).abs()).fold(0.0, f64::max)
}

// ------------------------------------------------------------------------------------------------
// Synthetic images
// ------------------------------------------------------------------------------------------------

fn grid(shape: [usize; 3], spacing: [f64; 3]) -> Grid {
    Grid::axis_aligned(shape, spacing, [0.0; 3]).unwrap()
}

/// A label map with `label` on the voxel boxes `[lo, hi)` (later boxes overwrite earlier ones).
fn boxes(g: &Grid, items: &[(i64, [usize; 3], [usize; 3])]) -> Image {
    let [nx, ny, nz] = g.shape();
    let mut v = vec![0f32; nx * ny * nz];
    for &(l, lo, hi) in items {
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    v[(k * ny + j) * nx + i] = l as f32;
                }
            }
        }
    }
    Image::from_vec(v, 1, g.clone()).unwrap()
}

/// A deterministic pseudo-random generator (64-bit LCG, top bits).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A label map of `n` overlapping ellipsoids with pseudo-random centres and radii (voxels), plus
/// scattered single-voxel noise of the same labels, so that surfaces are irregular.
fn ellipsoids(g: &Grid, n: usize, seed: u64) -> Image {
    let [nx, ny, nz] = g.shape();
    let mut r = Lcg(seed);
    let mut v = vec![0f32; nx * ny * nz];
    for l in 1..=n {
        let c = [r.next() * nx as f64, r.next() * ny as f64, r.next() * nz as f64];
        let rad = [2.0 + 6.0 * r.next(), 2.0 + 6.0 * r.next(), 2.0 + 6.0 * r.next()];
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let d = (i as f64 - c[0]).powi(2) / rad[0].powi(2)
                        + (j as f64 - c[1]).powi(2) / rad[1].powi(2)
                        + (k as f64 - c[2]).powi(2) / rad[2].powi(2);
                    if d <= 1.0 {
                        v[(k * ny + j) * nx + i] = l as f32;
                    }
                }
            }
        }
    }
    for _ in 0..(nx * ny * nz / 200) {
        let idx = (r.next() * v.len() as f64) as usize;
        v[idx] = (1.0 + r.next() * n as f64).floor() as f32;
    }
    Image::from_vec(v, 1, g.clone()).unwrap()
}

// ------------------------------------------------------------------------------------------------
// Known answers
// ------------------------------------------------------------------------------------------------

#[test]
fn identical_label_maps_score_dice_one_and_hd95_zero() {
    let g = grid([20, 18, 16], [1.0, 1.5, 2.0]);
    // Label 3 touches the image border.
    let a = boxes(&g, &[(1, [2, 2, 2], [8, 9, 7]), (2, [10, 3, 4], [15, 12, 10]), (3, [0, 0, 10], [20, 5, 16])]);
    let d = dice(&a, &a, None).unwrap();
    assert_eq!(d.per_label.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(d.per_label.values().all(|&x| x == 1.0));
    assert_eq!(d.mean, 1.0);
    let h = hd95(&a, &a, None).unwrap();
    assert_eq!(h.per_label.len(), 3);
    assert!(h.per_label.values().all(|&x| x == 0.0), "{:?}", h.per_label);
    assert_eq!(h.mean, 0.0);
    assert_eq!(dice_threshold(&a, &a, 0.5).unwrap(), 1.0);
}

#[test]
fn dice_of_two_cubes_is_the_hand_computed_overlap() {
    let g = grid([16, 12, 12], [1.0; 3]);
    // 6^3 = 216 voxels each; B is A shifted by 2 voxels along x: overlap 4 * 6 * 6 = 144.
    let a = boxes(&g, &[(5, [2, 2, 2], [8, 8, 8]), (7, [12, 0, 0], [14, 2, 2])]);
    let b = boxes(&g, &[(5, [4, 2, 2], [10, 8, 8]), (9, [0, 10, 10], [1, 11, 11])]);
    let d = dice(&a, &b, None).unwrap();
    assert_eq!(d.per_label[&5], 2.0 * 144.0 / 432.0);
    assert_eq!(d.per_label[&5], 2.0 / 3.0);
    // A label in only one image scores 0; the mean is over the three labels.
    assert_eq!(d.per_label[&7], 0.0);
    assert_eq!(d.per_label[&9], 0.0);
    assert_eq!(d.mean, (2.0 / 3.0) / 3.0);
    // Explicit labels: a label absent from both gets no entry; background can be scored.
    let d = dice(&a, &b, Some(&[5, 42, 0])).unwrap();
    assert_eq!(d.per_label.keys().copied().collect::<Vec<_>>(), vec![0, 5]);
    let nb = (16 * 12 * 12 - 216 - 8) as f64; // background voxels of a
    let nb_b = (16 * 12 * 12 - 216 - 1) as f64;
    let both = (16 * 12 * 12 - (216 + 72) - 8 - 1) as f64; // outside both cubes and both small boxes
    assert_eq!(d.per_label[&0], 2.0 * both / (nb + nb_b));
    // HD95 skips labels present in only one image.
    let h = hd95(&a, &b, None).unwrap();
    assert_eq!(h.per_label.keys().copied().collect::<Vec<_>>(), vec![5]);
    // The same cubes as probability maps.
    let pa = boxes(&g, &[(1, [2, 2, 2], [8, 8, 8])]);
    let pb = boxes(&g, &[(1, [4, 2, 2], [10, 8, 8])]);
    let pb = Image::from_vec(pb.to_vec_f32().unwrap().iter().map(|x| 0.75 * x).collect(), 1, g.clone()).unwrap();
    assert_eq!(dice_threshold(&pa, &pb, 0.75).unwrap(), 2.0 / 3.0);
    assert_eq!(dice_threshold(&pa, &pb, 0.8).unwrap(), 0.0);
    assert!(dice_threshold(&pa, &pb, 2.0).unwrap().is_nan(), "both empty: undefined");
}

#[test]
fn hd95_of_single_voxels_is_their_anisotropic_distance() {
    let sp = [2.0, 1.0, 3.0];
    let g = grid([10, 10, 10], sp);
    let a = boxes(&g, &[(4, [1, 2, 3], [2, 3, 4])]);
    let b = boxes(&g, &[(4, [4, 6, 3], [5, 7, 4])]);
    let h = hd95(&a, &b, None).unwrap();
    let expect = ((3.0 * sp[0]).powi(2) + (4.0 * sp[1]).powi(2)).sqrt();
    assert!((h.per_label[&4] - expect).abs() < 1e-12, "{} vs {expect}", h.per_label[&4]);
}

#[test]
fn distance_transform_of_a_single_voxel_is_analytic() {
    let shape = [7, 6, 5];
    let sp = [0.5, 2.0, 1.5];
    let p = [2usize, 3, 1];
    let n = shape.iter().product::<usize>();
    let mut mask = vec![false; n];
    mask[(p[2] * shape[1] + p[1]) * shape[0] + p[0]] = true;
    let d = distance_transform(&mask, shape, sp).unwrap();
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let e = [i, j, k]
                    .iter()
                    .zip(p)
                    .zip(sp)
                    .map(|((&x, y), s)| ((x as f64 - y as f64) * s).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let got = d[(k * shape[1] + j) * shape[0] + i];
                assert!((got - e).abs() < 1e-12, "({i}, {j}, {k}): {got} vs {e}");
            }
        }
    }
    // Empty mask: infinitely far.
    assert!(distance_transform(&vec![false; n], shape, sp).unwrap().iter().all(|x| x.is_infinite()));
    // Bad arguments are errors, not panics.
    assert!(matches!(distance_transform(&mask[1..], shape, sp), Err(Error::Shape { .. })));
    assert!(matches!(distance_transform(&mask, shape, [1.0, 0.0, 1.0]), Err(Error::InvalidArgument { .. })));
}

#[test]
fn distance_transform_matches_brute_force_and_scipy() {
    let shape = [23, 17, 13];
    let sp = [0.7, 1.3, 2.1];
    let mut r = Lcg(7);
    let mask: Vec<bool> = (0..shape.iter().product::<usize>()).map(|_| r.next() < 0.01).collect();
    let pts: Vec<[usize; 3]> = (0..mask.len())
        .filter(|&n| mask[n])
        .map(|n| [n % shape[0], (n / shape[0]) % shape[1], n / (shape[0] * shape[1])])
        .collect();
    assert!(pts.len() > 20);
    let d = distance_transform(&mask, shape, sp).unwrap();
    let mut worst = 0f64;
    for (n, &got) in d.iter().enumerate() {
        let q = [n % shape[0], (n / shape[0]) % shape[1], n / (shape[0] * shape[1])];
        let e = pts
            .iter()
            .map(|p| (0..3).map(|a| ((p[a] as f64 - q[a] as f64) * sp[a]).powi(2)).sum::<f64>())
            .fold(f64::INFINITY, f64::min)
            .sqrt();
        worst = worst.max((got - e).abs());
    }
    assert!(worst < 1e-12, "brute force: max |diff| {worst:e}");
    // scipy.ndimage.distance_transform_edt(~mask, sampling)
    let dir = tempfile::tempdir().unwrap();
    let g = grid(shape, sp);
    let img = Image::from_vec(mask.iter().map(|&m| m as u8 as f32).collect(), 1, g.clone()).unwrap();
    let (zyx, spz) = zyx_shape_spacing(&g);
    let out = dir.path().join("edt.raw");
    reference(
        dir.path(),
        "edt",
        json!({"mask": write_raw(dir.path(), "mask.raw", &img), "shape": zyx, "spacing": spz, "out": out}),
    );
    let bytes = std::fs::read(&out).unwrap();
    let s: Vec<f64> = bytes.chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
    let worst = d.iter().zip(&s).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("EDT vs scipy: max |diff| {worst:e} mm");
    assert!(worst < 1e-12, "scipy: max |diff| {worst:e}");
}

#[test]
fn jacobian_stats_of_known_images() {
    let g = grid([4, 3, 2], [1.0; 3]);
    let c = jacobian_stats(&Image::full(2.0, 1, g.clone()).unwrap(), None).unwrap();
    assert_eq!((c.fraction_nonpositive, c.std_log_det, c.min, c.max, c.mean), (0.0, 0.0, 2.0, 2.0, 2.0));
    // Inside the mask: -1, 0, 1, e, e^2 (logs of the positive ones 0, 1, 2: population std sqrt(2/3)).
    let e = std::f64::consts::E;
    let mut v = vec![100f32; 24];
    let mut m = vec![0f32; 24];
    for (n, x) in [-1.0, 0.0, 1.0, e, e * e].iter().enumerate() {
        v[3 * n] = *x as f32;
        m[3 * n] = 1.0;
    }
    let det = Image::from_vec(v.clone(), 1, g.clone()).unwrap();
    let mask = Image::from_vec(m, 1, g.clone()).unwrap();
    let s = jacobian_stats(&det, Some(&mask)).unwrap();
    let vals: Vec<f64> = [-1.0, 0.0, 1.0, e, e * e].iter().map(|x| *x as f32 as f64).collect();
    assert_eq!(s.fraction_nonpositive, 2.0 / 5.0);
    assert!((s.std_log_det - (2.0f64 / 3.0).sqrt()).abs() < 1e-6, "{}", s.std_log_det);
    assert_eq!((s.min, s.max), (-1.0, vals[4]));
    assert!((s.mean - vals.iter().sum::<f64>() / 5.0).abs() < 1e-12);
    // Errors: empty mask, mask on another grid, non-finite determinant.
    let empty = Image::full(0.0, 1, g.clone()).unwrap();
    assert!(matches!(jacobian_stats(&det, Some(&empty)), Err(Error::InvalidArgument { .. })));
    let other = Image::full(1.0, 1, grid([4, 3, 2], [2.0; 3])).unwrap();
    assert!(matches!(jacobian_stats(&det, Some(&other)), Err(Error::Shape { .. })));
    v[1] = f32::NAN;
    let bad = Image::from_vec(v, 1, g).unwrap();
    assert!(matches!(jacobian_stats(&bad, None), Err(Error::InvalidArgument { .. })));
    assert!(jacobian_stats(&bad, Some(&mask)).is_ok(), "the NaN voxel is outside the mask");
}

#[test]
fn tre_and_mean_displacement_error_of_a_translation() {
    let t = [1.0, 2.0, 2.0]; // length 3 mm
    let tr = Linear::translation(t);
    let fixed = [[0.0, 0.0, 0.0], [10.5, -20.25, 33.0], [-90.0, 120.0, -60.0]];
    let moved: Vec<[f64; 3]> = fixed.iter().map(|p| [p[0] + t[0], p[1] + t[1], p[2] + t[2]]).collect();
    let exact = tre(&fixed, &moved, &tr).unwrap();
    assert!(exact.iter().all(|&e| e < 1e-5), "{exact:?}");
    let unmoved = tre(&fixed, &fixed, &tr).unwrap();
    assert!(unmoved.iter().all(|&e| (e - 3.0).abs() < 1e-5), "{unmoved:?}");
    assert!(tre(&[], &[], &tr).unwrap().is_empty());
    assert!(matches!(tre(&fixed, &moved[..2], &tr), Err(Error::Shape { .. })));
    assert!(matches!(tre(&[[f64::NAN, 0.0, 0.0]], &[[0.0; 3]], &tr), Err(Error::InvalidArgument { .. })));

    let g = Grid::new(
        [12, 10, 8],
        [1.5, 1.0, 2.0],
        [-10.0, 5.0, 3.0],
        Matrix3::new(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    )
    .unwrap();
    let id = Linear::identity(LinearKind::Affine, g.centre());
    let mde = mean_displacement_error(&tr, &id, &g, None).unwrap();
    assert!((mde - 3.0).abs() < 1e-5, "{mde}");
    let mask = boxes(&g, &[(1, [0, 0, 0], [3, 3, 3])]);
    let mde = mean_displacement_error(&id, &tr, &g, Some(&mask)).unwrap();
    assert!((mde - 3.0).abs() < 1e-5, "{mde}");
    assert_eq!(mean_displacement_error(&tr, &tr, &g, None).unwrap(), 0.0);
    let wrong = Image::full(1.0, 1, grid([12, 10, 8], [1.0; 3])).unwrap();
    assert!(matches!(mean_displacement_error(&tr, &id, &g, Some(&wrong)), Err(Error::Shape { .. })));
}

#[test]
fn bad_inputs_are_errors() {
    let g = grid([12, 12, 12], [1.0; 3]);
    let a = boxes(&g, &[(1, [2, 2, 2], [5, 5, 5])]);
    let other = boxes(&grid([12, 12, 12], [1.0, 1.0, 1.001]), &[(1, [2, 2, 2], [5, 5, 5])]);
    assert!(matches!(dice(&a, &other, None), Err(Error::Shape { .. })));
    assert!(matches!(hd95(&a, &other, None), Err(Error::Shape { .. })));
    assert!(matches!(ssim(&a, &other, None), Err(Error::Shape { .. })));
    assert!(matches!(psnr(&a, &other, None), Err(Error::Shape { .. })));
    assert!(matches!(dice_threshold(&a, &other, 0.5), Err(Error::Shape { .. })));
    // Within 1e-4 mm is the same grid.
    let near =
        boxes(&Grid::axis_aligned([12, 12, 12], [1.0; 3], [5e-5, 0.0, 0.0]).unwrap(), &[(1, [2, 2, 2], [5, 5, 5])]);
    assert_eq!(dice(&a, &near, None).unwrap().mean, 1.0);
    let soft = Image::full(0.5, 1, g.clone()).unwrap();
    assert!(matches!(dice(&a, &soft, None), Err(Error::InvalidArgument { .. })));
    assert!(matches!(hd95(&soft, &a, None), Err(Error::InvalidArgument { .. })));
    let two = Image::from_vec(vec![1.0; 2 * 12 * 12 * 12], 2, g.clone()).unwrap();
    assert!(matches!(dice(&two, &two, None), Err(Error::Shape { .. })));
    // SSIM needs 11 voxels along every axis; a constant reference has no data range.
    let small = Image::full(1.0, 1, grid([10, 12, 12], [1.0; 3])).unwrap();
    assert!(matches!(ssim(&small, &small, Some(1.0)), Err(Error::InvalidArgument { .. })));
    assert!(matches!(ssim(&soft, &a, None), Err(Error::InvalidArgument { .. })));
    assert!(matches!(psnr(&soft, &a, None), Err(Error::InvalidArgument { .. })));
    assert!(matches!(psnr(&a, &soft, Some(f64::NAN)), Err(Error::InvalidArgument { .. })));
    let mut v = vec![0f32; 12 * 12 * 12];
    v[5] = f32::INFINITY;
    let inf = Image::from_vec(v, 1, g).unwrap();
    assert!(matches!(ssim(&a, &inf, Some(1.0)), Err(Error::InvalidArgument { .. })));
    // Identical images: SSIM 1, PSNR infinite.
    assert!((ssim(&a, &a, None).unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(psnr(&a, &a, None).unwrap(), f64::INFINITY);
}

// ------------------------------------------------------------------------------------------------
// Agreement with the Python references
// ------------------------------------------------------------------------------------------------

#[test]
fn synthetic_labels_match_medpy_hd95_and_dice() {
    // Anisotropic spacing on an oblique grid (distances use the spacing along the voxel axes), labels
    // touching the border, scattered noise voxels; the reference runs on the whole volume here.
    let dir = tempfile::tempdir().unwrap();
    let rot = nalgebra::Rotation3::from_euler_angles(0.2, -0.1, 0.3).into_inner();
    let g = Grid::new([40, 36, 30], [0.8, 1.3, 2.1], [3.0, -7.0, 11.0], rot).unwrap();
    let a = ellipsoids(&g, 6, 1);
    let b = ellipsoids(&g, 7, 2);
    let (zyx, spz) = zyx_shape_spacing(&g);
    let spec = json!({"a": write_raw(dir.path(), "a.raw", &a), "b": write_raw(dir.path(), "b.raw", &b),
                      "shape": zyx, "spacing": spz, "full": true});
    let r = reference(dir.path(), "labels", spec);
    let d = dice(&a, &b, None).unwrap();
    let dr = per_label(&r["dice"]);
    assert_eq!(d.per_label.len(), 7);
    let dd = max_abs_diff(&d.per_label, &dr);
    let h = hd95(&a, &b, None).unwrap();
    let hr = per_label(&r["hd95"]);
    assert_eq!(h.per_label.len(), 6, "label 7 is only in b");
    let hd = max_abs_diff(&h.per_label, &hr);
    eprintln!("synthetic: Dice max |diff| {dd:e}, HD95 max |diff| {hd:e} mm; HD95 {:?}", h.per_label);
    assert!(dd <= 1e-12 && hd <= 1e-9, "Dice {dd:e}, HD95 {hd:e}");
    assert!(h.per_label.values().all(|&x| x > 0.0));
}

#[test]
fn aal_labels_under_a_shift_match_python() {
    let dir = tempfile::tempdir().unwrap();
    let aal = load(common::data("colin27/aal.nii.gz")).unwrap();
    let g = aal.grid().clone();
    // The same labels moved by a few voxels: the map placed on a grid shifted by t mm, sampled back onto
    // the original grid with nearest-neighbour interpolation.
    let t = [2.6, -1.7, 3.2];
    let o = g.origin();
    let shifted_grid =
        Grid::new(g.shape(), g.spacing(), [o[0] + t[0], o[1] + t[1], o[2] + t[2]], g.direction()).unwrap();
    let moved = Image::new(aal.data().clone(), shifted_grid, aal.dtype()).unwrap();
    let b = resample(&moved, &g, Interpolation::Nearest, Padding::Zero).unwrap();
    assert!(b.grid().same_as(&g, 1e-9));

    let t0 = Instant::now();
    let d = dice(&aal, &b, None).unwrap();
    let t_dice = t0.elapsed();
    let t0 = Instant::now();
    let h = hd95(&aal, &b, None).unwrap();
    let t_hd = t0.elapsed();
    assert_eq!(d.per_label.len(), 116);
    assert_eq!(h.per_label.len(), 116);
    assert!(d.mean > 0.5 && d.mean < 0.95, "mean Dice {}", d.mean);
    assert!(h.mean > 1.0 && h.mean < 10.0, "mean HD95 {}", h.mean);

    let (zyx, spz) = zyx_shape_spacing(&g);
    let spec = json!({"a": write_raw_labels(dir.path(), "a.raw", &aal), "b": write_raw_labels(dir.path(), "b.raw", &b),
                      "dtype": "<i4", "shape": zyx, "spacing": spz});
    let t0 = Instant::now();
    let r = reference(dir.path(), "labels", spec);
    let t_py = t0.elapsed();
    let (dr, hr) = (per_label(&r["dice"]), per_label(&r["hd95"]));
    let (dd, hd) = (max_abs_diff(&d.per_label, &dr), max_abs_diff(&h.per_label, &hr));
    eprintln!(
        "AAL (116 labels), shift {t:?} mm: mean Dice {:.6}, mean HD95 {:.6} mm; vs Python: Dice max |diff| {dd:e}, \
         HD95 max |diff| {hd:e} mm; regsh dice {t_dice:.2?}, hd95 {t_hd:.2?}, Python {t_py:.2?}",
        d.mean, h.mean
    );
    assert!(dd <= 1e-12, "Dice max |diff| {dd:e}");
    assert!(hd <= 1e-6, "HD95 max |diff| {hd:e}");
}

#[test]
fn ssim_and_psnr_of_avg152_match_skimage() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
    let t2 = load(common::data("avg152/avg152T2.nii")).unwrap();
    let smoothed = smooth(&t1, [3.0; 3], SigmaUnit::Mm).unwrap();
    let (zyx, _) = zyx_shape_spacing(t1.grid());
    let p1 = write_raw(dir.path(), "t1.raw", &t1);
    let p2 = write_raw(dir.path(), "t2.raw", &t2);
    let ps = write_raw(dir.path(), "smoothed.raw", &smoothed);
    // (name, image, data range): the default (max - min of T1), and an explicit one.
    let cases = [("T2", &t2, &p2, None), ("smoothed T1", &smoothed, &ps, None), ("T2", &t2, &p2, Some(2.0))];
    let pairs: Vec<Value> = cases.iter().map(|(_, _, p, r)| json!({"a": p1, "b": p, "data_range": r})).collect();
    let t0 = Instant::now();
    let refs = reference(dir.path(), "similarity", json!({"shape": zyx, "pairs": pairs}));
    let t_py = t0.elapsed();
    let (mut ws, mut wp) = (0f64, 0f64);
    for (n, (name, other, _, range)) in cases.iter().enumerate() {
        let t0 = Instant::now();
        let s = ssim(&t1, other, *range).unwrap();
        let p = psnr(&t1, other, *range).unwrap();
        let t_rs = t0.elapsed();
        let r = &refs["pairs"][n];
        let (sr, pr) = (r["ssim"].as_f64().unwrap(), r["psnr"].as_f64().unwrap());
        eprintln!(
            "avg152 T1 vs {name}, data range {:?}: SSIM {s:.9} (skimage {sr:.9}, |diff| {:e}), PSNR {p:.9} dB \
             (skimage {pr:.9}, |diff| {:e}); regsh {t_rs:.2?}",
            r["data_range"].as_f64().unwrap(),
            (s - sr).abs(),
            (p - pr).abs()
        );
        ws = ws.max((s - sr).abs());
        wp = wp.max((p - pr).abs());
    }
    eprintln!("skimage (3 pairs, with start-up) {t_py:.2?}");
    assert!(ws < 1e-6, "SSIM max |diff| {ws:e}");
    assert!(wp < 1e-6, "PSNR max |diff| {wp:e} dB");
    // T1 is closer to its smoothed self than to T2.
    assert!(ssim(&t1, &smoothed, None).unwrap() > ssim(&t1, &t2, None).unwrap());
    assert!(psnr(&t1, &smoothed, None).unwrap() > psnr(&t1, &t2, None).unwrap());
}
