//! Image operations on small synthetic volumes with known answers: resampling in physical space,
//! smoothing, pyramids, crop / pad, normalization, thresholds, one-hot.

use nalgebra::{Matrix3, Rotation3, Vector3};
use regsh::image::ops::{
    bounding_box, crop, normalize, one_hot, pad, percentile, replace_non_finite, threshold, Normalization,
};
use regsh::image::resample::{resample, Interpolation, Padding};
use regsh::image::smooth::{gaussian_kernel, pyramid, smooth, SigmaUnit, TRUNCATE};
use regsh::image::{DataType, Grid, Image};

fn grid(shape: [usize; 3]) -> Grid {
    Grid::axis_aligned(shape, [1.0, 1.5, 2.0], [-3.0, 4.0, 10.0]).unwrap()
}

fn oblique(shape: [usize; 3], spacing: [f64; 3]) -> Grid {
    let r = Rotation3::from_euler_angles(0.2, -0.1, 0.3);
    let d: Matrix3<f64> = r.matrix() * Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, 1.0));
    Grid::new(shape, spacing, [12.0, -7.0, 3.0], d).unwrap()
}

fn ramp(g: &Grid) -> Image {
    // f(world) = 0.5 x - 0.25 y + 0.125 z + 3, sampled at voxel centres.
    let [nx, ny, nz] = g.shape();
    let mut v = Vec::with_capacity(g.num_voxels());
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let w = g.index_to_world([i as f64, j as f64, k as f64]);
                v.push((0.5 * w[0] - 0.25 * w[1] + 0.125 * w[2] + 3.0) as f32);
            }
        }
    }
    Image::from_vec(v, 1, g.clone()).unwrap()
}

fn seq(g: &Grid) -> Image {
    Image::from_vec((0..g.num_voxels()).map(|v| v as f32).collect(), 1, g.clone()).unwrap()
}

#[test]
fn identity_resample_returns_input_exactly() {
    let g = oblique([7, 6, 5], [2.0, 2.0, 3.0]);
    let img = seq(&g);
    for interp in [Interpolation::Linear, Interpolation::Nearest] {
        let out = resample(&img, &g, interp, Padding::Zero).unwrap();
        assert_eq!(out.to_vec_f32().unwrap(), img.to_vec_f32().unwrap(), "{interp:?}");
    }
}

#[test]
fn whole_voxel_shift_is_exact() {
    let g = grid([6, 5, 4]);
    let img = seq(&g);
    // The target grid starts 2 voxels further along x: target voxel i is source voxel i + 2.
    let o = g.index_to_world([2.0, 0.0, 0.0]);
    let t = Grid::axis_aligned(g.shape(), g.spacing(), o).unwrap();
    let out = resample(&img, &t, Interpolation::Linear, Padding::Zero).unwrap();
    for k in 0..4 {
        for j in 0..5 {
            for i in 0..6 {
                let want = if i + 2 < 6 { img.value_at(0, [i + 2, j, k]).unwrap() } else { 0.0 };
                assert_eq!(out.value_at(0, [i, j, k]).unwrap(), want, "voxel {i} {j} {k}");
            }
        }
    }
    let border = resample(&img, &t, Interpolation::Nearest, Padding::Border).unwrap();
    assert_eq!(border.value_at(0, [5, 0, 0]).unwrap(), img.value_at(0, [5, 0, 0]).unwrap());
}

#[test]
fn resampling_works_in_physical_space() {
    // A linear function of world position is reproduced exactly by trilinear interpolation, whatever
    // the two grids' orientation and spacing, at every target point inside the source.
    let src_grid = oblique([30, 28, 26], [2.0, 2.0, 3.0]);
    let src = ramp(&src_grid);
    let c = src_grid.centre();
    let tgt = Grid::axis_aligned([10, 9, 8], [1.3, 1.1, 0.9], [c[0] - 6.0, c[1] - 5.0, c[2] - 3.0]).unwrap();
    let out = resample(&src, &tgt, Interpolation::Linear, Padding::Zero).unwrap();
    let want = ramp(&tgt).to_vec_f32().unwrap();
    let got = out.to_vec_f32().unwrap();
    let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err < 1e-4, "max error {err}");
}

#[test]
fn nearest_keeps_labels_exactly_even_beyond_f32() {
    let g = grid([4, 3, 2]);
    let big = 2f64.powi(40) + 1.0;
    let vals: Vec<f64> = (0..24).map(|v| if v % 5 == 0 { big } else { v as f64 }).collect();
    let t = candle_core::Tensor::from_vec(vals.clone(), (1, 2, 3, 4), &candle_core::Device::Cpu).unwrap();
    let img = Image::new(t, g.clone(), DataType::Int32).unwrap();
    let fine = Grid::axis_aligned([8, 6, 4], [0.5, 0.75, 1.0], g.index_to_world([-0.25, -0.25, -0.25])).unwrap();
    let out = resample(&img, &fine, Interpolation::Nearest, Padding::Zero).unwrap();
    let got = out.to_vec_f64().unwrap();
    assert!(got.iter().all(|v| vals.contains(v)), "nearest made a new value");
    assert_eq!(out.value_at(0, [0, 0, 0]).unwrap(), big);
    assert_eq!(out.dtype(), DataType::Int32);
}

#[test]
fn smoothing_a_delta_gives_the_separable_gaussian() {
    let g = Grid::axis_aligned([21, 21, 21], [2.0, 1.0, 1.0], [0.0; 3]).unwrap();
    let mut v = vec![0f32; g.num_voxels()];
    v[(10 * 21 + 10) * 21 + 10] = 1.0;
    let img = Image::from_vec(v, 1, g).unwrap();
    // 2 mm along x (spacing 2) is 1 voxel; y and z 1.5 voxels.
    let out = smooth(&img, [2.0, 1.5, 1.5], SigmaUnit::Mm).unwrap();
    let (kx, ky) = (gaussian_kernel(1.0, TRUNCATE), gaussian_kernel(1.5, TRUNCATE));
    for (i, j, k) in [(10, 10, 10), (11, 10, 10), (12, 13, 9), (14, 10, 16)] {
        let want = kx[i + 4 - 10] * ky[j + 6 - 10] * ky[k + 6 - 10];
        let got = out.value_at(0, [i, j, k]).unwrap() as f32;
        assert!((got - want).abs() < 1e-7, "at {i} {j} {k}: {got} vs {want}");
    }
    let total: f32 = out.to_vec_f32().unwrap().iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "mass {total}");
}

#[test]
fn smoothing_keeps_a_constant_and_rejects_bad_sigma() {
    let img = Image::full(3.5, 2, grid([9, 8, 7])).unwrap();
    let out = smooth(&img, [1.0, 2.0, 3.0], SigmaUnit::Voxels).unwrap();
    assert!(out.to_vec_f32().unwrap().iter().all(|v| (v - 3.5).abs() < 1e-5));
    assert!(smooth(&img, [-1.0, 0.0, 0.0], SigmaUnit::Voxels).is_err());
}

#[test]
fn pyramid_keeps_world_extent() {
    let g = oblique([40, 36, 30], [1.0, 1.0, 1.2]);
    let img = ramp(&g);
    let levels = pyramid(&img, &[8.0, 4.0, 2.0, 1.0], None).unwrap();
    assert_eq!(
        levels.iter().map(|l| l.image.grid().shape()).collect::<Vec<_>>(),
        vec![[5, 5, 4], [10, 9, 8], [20, 18, 15], [40, 36, 30]]
    );
    for l in &levels {
        let lg = l.image.grid();
        for (a, b) in lg.corners().iter().zip(g.corners()) {
            assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9), "factor {}: {a:?} vs {b:?}", l.factor);
        }
    }
    // Smoothing and resampling keep a linear function: the 2x level still samples the ramp, away from
    // the border (where replication bends it).
    let l2 = &levels[2].image;
    let want = ramp(l2.grid());
    let (a, b) = (l2.value_at(0, [10, 9, 7]).unwrap(), want.value_at(0, [10, 9, 7]).unwrap());
    assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    assert!(pyramid(&img, &[1.0, 2.0], None).is_err());
    assert!(pyramid(&img, &[2.0, 1.0], Some(&[1.0])).is_err());
}

#[test]
fn crop_and_pad_keep_world_positions() {
    let g = oblique([8, 7, 6], [2.0, 2.0, 3.0]);
    let img = seq(&g);
    let c = crop(&img, [2, 1, 3], [4, 5, 2]).unwrap();
    assert_eq!(c.grid().shape(), [4, 5, 2]);
    let w0 = c.grid().index_to_world([0.0, 0.0, 0.0]);
    let w1 = g.index_to_world([2.0, 1.0, 3.0]);
    assert!(w0.iter().zip(w1).all(|(a, b)| (a - b).abs() < 1e-12));
    assert_eq!(c.value_at(0, [1, 2, 1]).unwrap(), img.value_at(0, [3, 3, 4]).unwrap());
    assert!(crop(&img, [6, 0, 0], [4, 1, 1]).is_err());

    let p = pad(&img, [1, 2, 0], [0, 1, 3], -1.0).unwrap();
    assert_eq!(p.grid().shape(), [9, 10, 9]);
    assert_eq!(p.value_at(0, [0, 0, 0]).unwrap(), -1.0);
    assert_eq!(p.value_at(0, [1, 2, 0]).unwrap(), img.value_at(0, [0, 0, 0]).unwrap());
    let back = crop(&p, [1, 2, 0], [8, 7, 6]).unwrap();
    assert_eq!(back.to_vec_f32().unwrap(), img.to_vec_f32().unwrap());
    assert!(back.grid().same_as(&g, 1e-9));
}

#[test]
fn normalizations_give_known_values() {
    let g = Grid::axis_aligned([100, 1, 1], [1.0; 3], [0.0; 3]).unwrap();
    let img = Image::from_vec((1..=100).map(|v| v as f32).collect(), 1, g.clone()).unwrap();
    let mm = normalize(&img, Normalization::MinMax, None).unwrap().to_vec_f32().unwrap();
    assert_eq!((mm[0], mm[99]), (0.0, 1.0));
    assert!((mm[50] - 50.0 / 99.0).abs() < 1e-6);
    // numpy.percentile(range(1, 101), [1, 99]) = [1.99, 99.01]
    let vals: Vec<f64> = (1..=100).map(|v| v as f64).collect();
    assert!((percentile(&vals, 1.0).unwrap() - 1.99).abs() < 1e-12);
    assert!((percentile(&vals, 99.0).unwrap() - 99.01).abs() < 1e-12);
    let p = normalize(&img, Normalization::Percentile { lo: 1.0, hi: 99.0 }, None).unwrap().to_vec_f32().unwrap();
    assert_eq!((p[0], p[99]), (0.0, 1.0));
    assert!((p[49] - ((50.0 - 1.99) / (99.01 - 1.99)) as f32).abs() < 1e-6);
    let z = normalize(&img, Normalization::ZScore, None).unwrap().to_vec_f32().unwrap();
    let mean: f32 = z.iter().sum::<f32>() / 100.0;
    let var: f32 = z.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 100.0;
    assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "mean {mean} var {var}");
    // With a mask, statistics come from the masked voxels only.
    let mask = Image::from_vec((1..=100).map(|v| if v <= 50 { 1.0 } else { 0.0 }).collect(), 1, g).unwrap();
    let m = normalize(&img, Normalization::MinMax, Some(&mask)).unwrap().to_vec_f32().unwrap();
    assert_eq!((m[0], m[49]), (0.0, 1.0));
    assert!(normalize(&img, Normalization::Percentile { lo: 90.0, hi: 10.0 }, None).is_err());
    assert!(Normalization::parse("zscroe").unwrap_err().to_string().contains("did you mean `zscore`"));
}

#[test]
fn non_finite_voxels_are_ignored_by_statistics_and_can_be_replaced() {
    let g = Grid::axis_aligned([5, 1, 1], [1.0; 3], [0.0; 3]).unwrap();
    let img = Image::from_vec(vec![0.0, f32::NAN, 10.0, f32::INFINITY, 5.0], 1, g).unwrap();
    let n = normalize(&img, Normalization::MinMax, None).unwrap().to_vec_f32().unwrap();
    assert_eq!(n[0], 0.0);
    assert_eq!(n[2], 1.0);
    assert_eq!(n[4], 0.5);
    assert!(n[1].is_nan());
    let r = replace_non_finite(&img, -1.0).unwrap().to_vec_f32().unwrap();
    assert_eq!(r, vec![0.0, -1.0, 10.0, -1.0, 5.0]);
    let t = threshold(&img, 5.0, f64::INFINITY).unwrap().to_vec_f32().unwrap();
    assert_eq!(t, vec![0.0, 0.0, 1.0, 1.0, 1.0]);
}

#[test]
fn one_hot_and_bounding_box() {
    let g = Grid::axis_aligned([4, 2, 1], [1.0; 3], [0.0; 3]).unwrap();
    let labels = Image::from_vec(vec![0.0, 3.0, 3.0, 7.0, 0.0, 0.0, 7.0, 0.0], 1, g.clone()).unwrap();
    let (oh, l) = one_hot(&labels, None).unwrap();
    assert_eq!(l, vec![0, 3, 7]);
    assert_eq!(oh.channels(), 3);
    assert_eq!(oh.channel(1).unwrap().to_vec_f32().unwrap(), vec![0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let (oh2, _) = one_hot(&labels, Some(&[7, 3])).unwrap();
    assert_eq!(oh2.channel(0).unwrap().to_vec_f32().unwrap(), vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    let frac = Image::from_vec(vec![0.5; 8], 1, g).unwrap();
    assert!(one_hot(&frac, None).is_err());
    let (start, size) = bounding_box(&labels, 0).unwrap().unwrap();
    assert_eq!((start, size), ([1, 0, 0], [3, 2, 1]));
}

#[test]
fn gradient_magnitude_of_a_ramp_is_its_slope_per_mm() {
    // value = 3 x + 4 y (voxel indices) on 2 mm x 0.5 mm x 1 mm voxels: slopes 1.5 and 8 per mm.
    let (nx, ny, nz) = (5, 4, 3);
    let v: Vec<f32> = (0..nx * ny * nz).map(|i| (3 * (i % nx) + 4 * ((i / nx) % ny)) as f32).collect();
    let g = regsh::image::Grid::axis_aligned([nx, ny, nz], [2.0, 0.5, 1.0], [0.0; 3]).unwrap();
    let im = regsh::image::Image::from_vec(v, 1, g).unwrap();
    let m = regsh::image::ops::gradient_magnitude(&im, 0.0).unwrap().to_vec_f64().unwrap();
    let want = (1.5f64 * 1.5 + 8.0 * 8.0).sqrt();
    assert!(m.iter().all(|x| (x - want).abs() < 1e-4), "{:?}", &m[..5]);
    assert!(regsh::image::ops::gradient_magnitude(&im, -1.0).is_err());
}
