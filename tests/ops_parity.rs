//! Fused kernels against their slow twins (forward values and gradients), and finite-difference checks.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::rand_vec;
use regsh::image::resample::Padding;
use regsh::ops::{affine_grid, affine_grid_slow, grid_sample, grid_sample_slow, SampleMode};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Points spread over and beyond a (7, 6, 5) image, never on voxel centres.
fn points(n: usize, seed: u64) -> Tensor {
    let r = rand_vec(3 * n, seed);
    let lim = [7.0f32, 6.0, 5.0];
    let v: Vec<f32> = r.iter().enumerate().map(|(i, u)| u * (lim[i % 3] + 2.0) - 1.5 + 0.013).collect();
    Tensor::from_vec(v, (n, 3), &Device::Cpu).unwrap()
}

fn image(c: usize, seed: u64) -> Tensor {
    Tensor::from_vec(rand_vec(c * 5 * 6 * 7, seed), (c, 5, 6, 7), &Device::Cpu).unwrap()
}

#[test]
fn grid_sample_matches_slow_twin_forward_and_backward() {
    for padding in [Padding::Zero, Padding::Border] {
        let img = Var::from_tensor(&image(2, 1)).unwrap();
        let pts = Var::from_tensor(&points(500, 2)).unwrap();
        let w = Tensor::from_vec(rand_vec(2 * 500, 3), (2, 500), &Device::Cpu).unwrap();
        let fast = grid_sample(&img, &pts, SampleMode::Linear, padding).unwrap();
        let slow = grid_sample_slow(&img, &pts, padding).unwrap();
        assert!(max_abs_diff(&fast, &slow) < 1e-6, "{padding:?} forward");
        let gf = (&fast * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = (&slow * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("image", img.as_tensor()), ("points", pts.as_tensor())] {
            let (a, b) = (gf.get(v).unwrap(), gs.get(v).unwrap());
            assert!(max_abs_diff(a, b) < 1e-5, "{padding:?} d/d{name}: {}", max_abs_diff(a, b));
        }
    }
}

#[test]
fn grid_sample_gradient_matches_finite_differences() {
    let img = image(1, 7);
    let pts = Var::from_tensor(&points(40, 8)).unwrap();
    let loss = |p: &Tensor| -> f64 {
        let o = grid_sample(&img, p, SampleMode::Linear, Padding::Zero).unwrap();
        o.sqr().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    };
    let g = {
        let o = grid_sample(&img, &pts, SampleMode::Linear, Padding::Zero).unwrap();
        o.sqr().unwrap().sum_all().unwrap().backward().unwrap()
    };
    let gp = g.get(pts.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let base = pts.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let h = 1e-3f32;
    for i in (0..base.len()).step_by(7) {
        let mut a = base.clone();
        let mut b = base.clone();
        a[i] += h;
        b[i] -= h;
        let ta = Tensor::from_vec(a, (40, 3), &Device::Cpu).unwrap();
        let tb = Tensor::from_vec(b, (40, 3), &Device::Cpu).unwrap();
        let fd = (loss(&ta) - loss(&tb)) / (2.0 * h as f64);
        assert!((fd - gp[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()), "coord {i}: fd {fd} vs {}", gp[i]);
    }
}

#[test]
fn grid_sample_nearest_picks_voxels_and_refuses_gradients() {
    let img = image(1, 11);
    let p = Tensor::from_vec(vec![2.4f32, 3.6, 1.2, -0.7, 0.0, 0.0], (2, 3), &Device::Cpu).unwrap();
    let out = grid_sample(&img, &p, SampleMode::Nearest, Padding::Zero)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = img.get(0).unwrap().get(1).unwrap().get(4).unwrap().get(2).unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(out, vec![want, 0.0]);
    let v = Var::from_tensor(&img).unwrap();
    let o = grid_sample(&v, &p, SampleMode::Nearest, Padding::Zero).unwrap();
    assert!(o.sum_all().unwrap().backward().is_err());
}

#[test]
fn affine_grid_matches_slow_twin() {
    let m = Var::from_tensor(&Tensor::from_vec(rand_vec(12, 5), (3, 4), &Device::Cpu).unwrap()).unwrap();
    let w = Tensor::from_vec(rand_vec(4 * 5 * 6 * 3, 6), (4, 5, 6, 3), &Device::Cpu).unwrap();
    let fast = affine_grid(&m, [6, 5, 4]).unwrap();
    let slow = affine_grid_slow(&m, [6, 5, 4]).unwrap();
    assert!(max_abs_diff(&fast, &slow) < 1e-5);
    let gf = (&fast * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = (&slow * &w).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_abs_diff(gf.get(m.as_tensor()).unwrap(), gs.get(m.as_tensor()).unwrap()) < 1e-3);
}

#[test]
fn fused_affine_warp_matches_slow_twin_forward_and_backward() {
    use regsh::ops::warp_affine;
    for (padding, border) in [(Padding::Zero, false), (Padding::Border, true)] {
        let img = Var::from_tensor(&image(2, 21)).unwrap();
        // Target 6x5x4 voxels mapped into and beyond the (7, 6, 5) image, away from voxel centres.
        let m = Var::from_tensor(
            &Tensor::from_vec(
                vec![1.1f32, 0.1, -0.05, -0.73, -0.08, 0.95, 0.12, 0.41, 0.03, -0.1, 1.2, -0.37],
                (3, 4),
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let w = Tensor::from_vec(rand_vec(2 * 120, 22), (2, 4, 5, 6), &Device::Cpu).unwrap();
        let fast = warp_affine(&img, &m, [6, 5, 4], border).unwrap();
        let pts = affine_grid_slow(&m, [6, 5, 4]).unwrap();
        let slow = grid_sample_slow(&img, &pts, padding).unwrap();
        assert!(max_abs_diff(&fast, &slow) < 1e-5, "{padding:?} forward");
        let gf = (&fast * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = (&slow * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(
            max_abs_diff(gf.get(img.as_tensor()).unwrap(), gs.get(img.as_tensor()).unwrap()) < 1e-5,
            "{padding:?} d/dimage"
        );
        let (a, b) = (gf.get(m.as_tensor()).unwrap(), gs.get(m.as_tensor()).unwrap());
        assert!(max_abs_diff(a, b) < 1e-3, "{padding:?} d/dmatrix {a} vs {b}");
    }
}

#[test]
fn fused_field_warp_matches_slow_twin_forward_and_backward() {
    use regsh::ops::warp_field;
    let img = Var::from_tensor(&image(1, 31)).unwrap();
    // A (3, 4, 5, 6) field of up to 1.5 mm; target voxel -> image voxel m; mm -> voxel r (2 mm voxels, rotated).
    let field = Var::from_tensor(
        &Tensor::from_vec(
            rand_vec(3 * 120, 32).iter().map(|v| (v - 0.5) * 3.0).collect::<Vec<f32>>(),
            (3, 4, 5, 6),
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let m = [1.0, 0.05, 0.0, 0.31, 0.0, 1.0, 0.02, 0.27, -0.03, 0.0, 1.0, 0.19];
    let r = [0.5, 0.01, 0.0, -0.01, 0.5, 0.02, 0.0, -0.02, 0.5];
    let w = Tensor::from_vec(rand_vec(120, 33), (1, 4, 5, 6), &Device::Cpu).unwrap();
    let fast = warp_field(&img, &field, m, r, false).unwrap();
    // Slow twin: points = m h + r u with candle ops.
    let mt = Tensor::from_vec(m.map(|v| v as f32).to_vec(), (3, 4), &Device::Cpu).unwrap();
    let rt = Tensor::from_vec(r.map(|v| v as f32).to_vec(), (3, 3), &Device::Cpu).unwrap();
    let u = field.as_tensor().permute((1, 2, 3, 0)).unwrap().reshape((120, 3)).unwrap();
    let pts = (affine_grid_slow(&mt, [6, 5, 4]).unwrap().reshape((120, 3)).unwrap()
        + u.matmul(&rt.t().unwrap()).unwrap())
    .unwrap();
    let slow = grid_sample_slow(&img, &pts.reshape((4, 5, 6, 3)).unwrap(), Padding::Zero).unwrap();
    assert!(max_abs_diff(&fast, &slow) < 1e-5, "forward");
    let gf = (&fast * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = (&slow * &w).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_abs_diff(gf.get(img.as_tensor()).unwrap(), gs.get(img.as_tensor()).unwrap()) < 1e-5, "d/dimage");
    assert!(max_abs_diff(gf.get(field.as_tensor()).unwrap(), gs.get(field.as_tensor()).unwrap()) < 1e-5, "d/dfield");
}

#[test]
fn local_filter_matches_conv1d_twin_forward_and_backward() {
    use regsh::image::smooth::gaussian_kernel;
    use regsh::ops::local_filter::{box_kernel, WINDOW_TRUNCATE};
    use regsh::ops::{local_filter, local_filter_slow};
    let t = Var::from_tensor(&image(2, 41)).unwrap();
    let w = Tensor::from_vec(rand_vec(2 * 210, 42), (2, 5, 6, 7), &Device::Cpu).unwrap();
    for ks in
        [[box_kernel(3), box_kernel(5), box_kernel(1)], [1.0, 0.5, 0.6].map(|s| gaussian_kernel(s, WINDOW_TRUNCATE))]
    {
        let fast = local_filter(&t, ks.clone()).unwrap();
        let slow = local_filter_slow(&t, ks.clone()).unwrap();
        assert!(max_abs_diff(&fast, &slow) < 1e-5);
        let gf = (&fast * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = (&slow * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_abs_diff(gf.get(t.as_tensor()).unwrap(), gs.get(t.as_tensor()).unwrap()) < 1e-5);
    }
    // A box of ones sums its window: the centre voxel of a constant 1 volume sees 3 * 5 * 1 voxels.
    let ones = Tensor::ones((1, 5, 6, 7), DType::F32, &Device::Cpu).unwrap();
    let s = local_filter(&ones, [box_kernel(3), box_kernel(5), box_kernel(1)]).unwrap();
    assert_eq!(s.get(0).unwrap().get(2).unwrap().get(3).unwrap().get(3).unwrap().to_scalar::<f32>().unwrap(), 15.0);
}

#[test]
fn parzen_kernels_match_dense_twins_with_patches_and_mask() {
    use regsh::ops::parzen::{
        parzen_joint, parzen_joint_slow, parzen_moments, parzen_moments_slow, Parzen, PatchLayout,
    };
    use std::sync::Arc;
    let shape = [7usize, 6, 5];
    let n = 210;
    let bins = 8;
    // Bin coordinates spread over [0, bins - 1], away from bin centres.
    let u = Var::from_tensor(
        &Tensor::from_vec(
            rand_vec(n, 51).iter().map(|v| v * 6.9 + 0.037).collect::<Vec<f32>>(),
            (5, 6, 7),
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let y = Var::from_tensor(
        &Tensor::from_vec(
            rand_vec(n, 52).iter().map(|v| v * 6.9 + 0.041).collect::<Vec<f32>>(),
            (5, 6, 7),
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let mask: Vec<f32> = rand_vec(n, 53).iter().map(|v| if *v > 0.2 { 1.0 } else { 0.0 }).collect();
    // Sigmas on both sides of the weight recurrence's fallback (0.25) and a wide kernel.
    let layouts = [
        (PatchLayout::global(shape), 0.5),
        (PatchLayout::new(shape, [4, 3, 3], [2, 1, 1]), 0.8),
        (PatchLayout::global(shape), 0.2),
        (PatchLayout::new(shape, [4, 3, 3], [0, 0, 0]), 2.5),
    ];
    for (layout, sigma) in layouts {
        let pz = Parzen { bins, sigma };
        let m = Some(Arc::new(mask.clone()));
        for joint in [false, true] {
            let (fast, slow) = if joint {
                (
                    parzen_joint(&u, &y, &layout, pz, m.clone()).unwrap(),
                    parzen_joint_slow(&u, &y, &layout, pz, m.clone()).unwrap(),
                )
            } else {
                (
                    parzen_moments(&u, &y, &layout, pz, m.clone()).unwrap(),
                    parzen_moments_slow(&u, &y, &layout, pz, m.clone()).unwrap(),
                )
            };
            assert_eq!(fast.dims(), slow.dims());
            assert!(max_abs_diff(&fast, &slow) < 1e-4, "joint {joint} forward: {}", max_abs_diff(&fast, &slow));
            let w = Tensor::from_vec(rand_vec(fast.elem_count(), 54), fast.dims(), &Device::Cpu).unwrap();
            let gf = (&fast * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gs = (&slow * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&u, &y] {
                let (a, b) = (gf.get(v.as_tensor()).unwrap(), gs.get(v.as_tensor()).unwrap());
                assert!(max_abs_diff(a, b) < 1e-3, "joint {joint} backward: {}", max_abs_diff(a, b));
            }
        }
    }
}

#[test]
fn border_gradient_is_zero_on_the_edge_voxel_as_pytorch() {
    // A ramp v = 10 + x along x; a point exactly on the last voxel with border padding: the clamp is
    // active there, so d/dx = 0 (PyTorch's clip_coordinates_set_grad), not -v (a corner read as 0).
    let ramp: Vec<f32> = (0..5 * 2 * 2).map(|i| 10.0 + (i % 5) as f32).collect();
    let img = Tensor::from_vec(ramp, (1, 2, 2, 5), &Device::Cpu).unwrap();
    for x in [4.0f32, 0.0, 5.5, -1.0] {
        let p = Var::from_tensor(&Tensor::from_vec(vec![x, 0.5, 0.5], (1, 3), &Device::Cpu).unwrap()).unwrap();
        for slow in [false, true] {
            let out = if slow {
                grid_sample_slow(&img, &p, Padding::Border)
            } else {
                grid_sample(&img, &p, SampleMode::Linear, Padding::Border)
            }
            .unwrap();
            let g = out.sum_all().unwrap().backward().unwrap();
            let d = g.get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(d[0], 0.0, "x = {x}, slow twin {slow}");
        }
    }
    // Inside, the derivative is the slope, 1.
    let p = Var::from_tensor(&Tensor::from_vec(vec![2.3f32, 0.5, 0.5], (1, 3), &Device::Cpu).unwrap()).unwrap();
    let g = grid_sample(&img, &p, SampleMode::Linear, Padding::Border).unwrap().sum_all().unwrap().backward().unwrap();
    assert!((g.get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] - 1.0).abs() < 1e-6);
}

mod point_metric {
    use super::*;
    use regsh::metrics::functional::point_metric_slow;
    use regsh::ops::parzen::Parzen;
    use regsh::ops::parzen::PatchLayout;
    use regsh::ops::point_metric;
    use regsh::ops::point_metric::{point_loss, MovingVolume, PatchPoints, PointMeasure, PointParzen, PointSamples};
    use std::sync::Arc;

    const SHAPE: [usize; 3] = [11, 10, 9];

    /// A smooth moving image (values about 0-100) with a little noise, x fastest.
    fn moving() -> Vec<f32> {
        let [nx, ny, nz] = SHAPE;
        let noise = rand_vec(nx * ny * nz, 41);
        (0..nx * ny * nz)
            .map(|i| {
                let (x, y, z) = ((i % nx) as f32, ((i / nx) % ny) as f32, (i / (nx * ny)) as f32);
                50.0 + 30.0 * (0.5 * x).sin() * (0.4 * y).cos() + 15.0 * (0.3 * z + 0.2 * x).cos() + 5.0 * noise[i]
            })
            .collect()
    }

    /// Points over and a little beyond the grid (some map outside), fixed values correlated with the
    /// moving image along the map.
    fn samples(n: usize, seed: u64) -> PointSamples {
        let r = rand_vec(4 * n, seed);
        let mut s = PointSamples::default();
        for i in 0..n {
            let p = [r[4 * i] * 11.0 - 0.5, r[4 * i + 1] * 10.0 - 0.5, r[4 * i + 2] * 9.0 - 0.5];
            s.points.extend_from_slice(&p);
            s.fixed.push(40.0 + 20.0 * (0.5 * p[0]).sin() + 10.0 * r[4 * i + 3]);
        }
        s
    }

    /// A map from fixed to moving voxel indices: a small rotation and shear, a shift.
    const A: [f64; 12] = [0.98, 0.05, -0.03, 0.4, -0.04, 1.02, 0.02, -0.3, 0.03, -0.02, 0.97, 0.25];

    fn measures() -> Vec<(&'static str, PointMeasure)> {
        let pp = PointParzen {
            parzen: Parzen { bins: 16, sigma: 0.5 },
            range_fixed: (30.0, 75.0),
            range_moving: (0.0, 110.0),
        };
        vec![
            ("ssd", PointMeasure::Mse),
            ("ncc", PointMeasure::Ncc),
            ("mi", PointMeasure::Mi(pp)),
            ("nmi", PointMeasure::Nmi(pp)),
            ("mi sigma 1", PointMeasure::Mi(PointParzen { parzen: Parzen { bins: 16, sigma: 1.0 }, ..pp })),
            ("mi sigma 0.2", PointMeasure::Mi(PointParzen { parzen: Parzen { bins: 16, sigma: 0.2 }, ..pp })),
            ("cr", PointMeasure::Cr(pp)),
            ("cr sigma 1", PointMeasure::Cr(PointParzen { parzen: Parzen { bins: 16, sigma: 1.0 }, ..pp })),
            (
                "cr-patch",
                PointMeasure::Patches(PatchPoints {
                    measure: Box::new(PointMeasure::Cr(pp)),
                    layouts: vec![
                        PatchLayout::new(SHAPE, [6, 5, 5], [0; 3]),
                        PatchLayout::new(SHAPE, [6, 5, 5], [3, 2, 2]),
                    ],
                }),
            ),
            (
                "mi-patch",
                PointMeasure::Patches(PatchPoints {
                    measure: Box::new(PointMeasure::Mi(pp)),
                    layouts: vec![PatchLayout::new(SHAPE, [6, 5, 5], [0; 3])],
                }),
            ),
        ]
    }

    #[test]
    fn point_metric_matches_slow_twin_value_and_gradient() {
        let mv = moving();
        let mt = Tensor::from_vec(mv.clone(), (1, SHAPE[2], SHAPE[1], SHAPE[0]), &Device::Cpu).unwrap();
        let s = Arc::new(samples(3000, 42));
        let a32: Vec<f32> = A.iter().map(|&v| v as f32).collect();
        for (name, m) in measures() {
            let a = Var::from_tensor(&Tensor::from_vec(a32.clone(), (3, 4), &Device::Cpu).unwrap()).unwrap();
            let fast = point_metric(a.as_tensor(), &m, s.clone(), &mt).unwrap();
            let slow = point_metric_slow(a.as_tensor(), &m, &s, &mt).unwrap();
            let (vf, vs) = (fast.to_scalar::<f32>().unwrap(), slow.to_scalar::<f32>().unwrap());
            assert!((vf - vs).abs() < 1e-4 * (1.0 + vs.abs()), "{name}: value {vf} vs slow twin {vs}");
            let gf =
                fast.backward().unwrap().get(a.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gs =
                slow.backward().unwrap().get(a.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = gs.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0, "{name}: zero gradient");
            for k in 0..12 {
                assert!((gf[k] - gs[k]).abs() < 2e-3 * scale, "{name}: dL/dA[{k}] {} vs slow twin {}", gf[k], gs[k]);
            }
            // Some points map outside and are left out.
            let r = point_loss(&m, &s, &MovingVolume { data: &mv, shape: SHAPE }, &A).unwrap();
            assert!(r.inside > 2000 && r.inside < 3000, "{name}: {} points inside", r.inside);
        }
    }

    #[test]
    fn dense_loss_grad_matches_the_metric_and_its_autograd_on_real_images() {
        // avg152 T2 against T1 (2 mm, 91 x 109 x 91), with and without the brain mask: the fused dense
        // form (the greedy levels' MI and NMI) against `Metric::loss` and autograd on the moving volume.
        use regsh::image::io::load;
        use regsh::metrics::{Metric, OptionValue};
        use regsh::ops::point_metric::dense_loss_grad;
        let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
        let t2 = load(common::data("avg152/avg152T2.nii")).unwrap();
        let brain = load(common::data("avg152/brainmask.nii")).unwrap();
        let mask_t = brain.data().gt(0.5f32).unwrap().to_dtype(DType::F32).unwrap();
        let mask = mask_t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (f, m) = (t1.to_vec_f32().unwrap(), t2.to_vec_f32().unwrap());
        for name in ["mi", "nmi"] {
            let mut metric = Metric::new(name).unwrap();
            let (sf, sm) = (t1.stats().unwrap(), t2.stats().unwrap());
            metric.set("range_fixed", OptionValue::Range(sf.min, sf.max)).unwrap();
            metric.set("range_moving", OptionValue::Range(sm.min, sm.max)).unwrap();
            let pm = metric.point_measure().unwrap();
            for masked in [false, true] {
                let mk = masked.then_some(&mask_t);
                let (loss, grad) = dense_loss_grad(&pm, &f, &m, masked.then_some(&mask[..])).unwrap();
                let mv = Var::from_tensor(t2.data()).unwrap();
                let slow = metric.loss(t1.data(), mv.as_tensor(), mk).unwrap();
                let vs = slow.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                assert!((loss - vs).abs() < 1e-5 * (1.0 + vs.abs()), "{name} masked {masked}: {loss} vs {vs}");
                let gs = slow.backward().unwrap().get(mv.as_tensor()).unwrap().flatten_all().unwrap();
                let gs = gs.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
                // Two differences, both measured here: voxels exactly at the range's lower end (the
                // background) get the one-sided derivative here and none through candle's clamp (about
                // 4 % of the largest entry unmasked); elsewhere the slow twin's entropies run in f32
                // (about 1 %). Relative L2 6e-3 unmasked, 2e-4 in the brain.
                let scale = gs.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = grad.iter().zip(&gs).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|x| (x as f64).powi(2)).sum::<f64>().sqrt();
                let rel = norm(&mut grad.iter().zip(&gs).map(|(x, y)| x - y)) / norm(&mut gs.iter().copied());
                let lo = m.iter().copied().fold(f32::INFINITY, f32::min);
                let worst_in = grad
                    .iter()
                    .zip(&gs)
                    .zip(&m)
                    .filter(|(_, v)| **v > lo)
                    .fold(0f32, |a, ((x, y), _)| a.max((x - y).abs()));
                eprintln!("{name} masked {masked}: loss {loss:.6}, gradient max diff {worst:.2e} of {scale:.2e}, relative L2 {rel:.2e}, above the minimum {worst_in:.2e}");
                assert!(
                    scale > 0.0 && worst < 1e-1 * scale && rel < 1e-2,
                    "{name} masked {masked}: gradient off by {worst} of {scale} (L2 {rel})"
                );
                if masked {
                    assert!(
                        grad.iter().zip(&mask).all(|(g, k)| *k != 0.0 || *g == 0.0),
                        "{name}: gradient outside the mask"
                    );
                }
            }
        }
        // Volumes of different lengths and patch measures are errors, not panics.
        let mut mi = Metric::new("mi").unwrap();
        mi.set("range_fixed", OptionValue::Range(0.0, 1.0)).unwrap();
        mi.set("range_moving", OptionValue::Range(0.0, 1.0)).unwrap();
        let pm = mi.point_measure().unwrap();
        assert!(dense_loss_grad(&pm, &f, &m[1..], None).is_err());
        assert!(dense_loss_grad(&pm, &f, &m, Some(&mask[1..])).is_err());
    }

    #[test]
    fn point_metric_gradient_matches_finite_differences() {
        let mv = moving();
        let vol = MovingVolume { data: &mv, shape: SHAPE };
        // Points that stay inside the moving image under the perturbations (a point crossing its border
        // leaves the sum: a jump, not a derivative).
        let mut s = samples(4000, 43);
        for (i, p) in s.points.iter_mut().enumerate() {
            let hi = [9.0, 8.0, 7.0][i % 3];
            *p = 1.0 + (*p + 0.5) / (hi + 3.0) * (hi - 1.0);
        }
        assert_eq!(point_loss(&PointMeasure::Ncc, &s, &vol, &A).unwrap().inside, 4000);
        for (name, m) in measures() {
            let r = point_loss(&m, &s, &vol, &A).unwrap();
            let scale = r.grad.iter().fold(0f64, |m, v| m.max(v.abs()));
            for k in 0..12 {
                // A step of about a ten-thousandth of a voxel at the far side of the grid (a thousandth
                // carries enough points across voxel faces, where trilinear sampling has kinks, to move a
                // patch measure's difference quotient by 1 %).
                let h = if k % 4 == 3 { 1e-4 } else { 1e-5 };
                let (mut ap, mut am) = (A, A);
                ap[k] += h;
                am[k] -= h;
                let fd = (point_loss(&m, &s, &vol, &ap).unwrap().loss - point_loss(&m, &s, &vol, &am).unwrap().loss)
                    / (2.0 * h);
                assert!(
                    (fd - r.grad[k]).abs() < 5e-3 * scale,
                    "{name}: dL/dA[{k}] {} vs finite difference {fd}",
                    r.grad[k]
                );
            }
        }
    }

    #[test]
    fn point_metric_knows_the_measures_extremes() {
        // Fixed values equal to the moving image at the same points: NCC -1, SSD 0, MI at its maximum
        // (above the MI of a shuffled pairing).
        let mv = moving();
        let vol = MovingVolume { data: &mv, shape: SHAPE };
        let id = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let mut s = samples(2000, 44);
        for i in 0..s.len() {
            let p = &s.points[3 * i..3 * i + 3];
            let q = [p[0].clamp(0.0, 10.0), p[1].clamp(0.0, 9.0), p[2].clamp(0.0, 8.0)];
            s.points[3 * i..3 * i + 3].copy_from_slice(&q);
        }
        let mt = Tensor::from_vec(mv.clone(), (1, 9, 10, 11), &Device::Cpu).unwrap();
        let pts = Tensor::from_slice(&s.points, (s.len(), 3), &Device::Cpu).unwrap();
        s.fixed = grid_sample(&mt, &pts, SampleMode::Linear, Padding::Zero)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let ncc = point_loss(&PointMeasure::Ncc, &s, &vol, &id).unwrap();
        assert!((ncc.loss + 1.0).abs() < 1e-6 && ncc.inside == 2000, "ncc {}", ncc.loss);
        assert!(point_loss(&PointMeasure::Mse, &s, &vol, &id).unwrap().loss < 1e-9);
        let pp = PointParzen {
            parzen: Parzen { bins: 16, sigma: 0.5 },
            range_fixed: (0.0, 110.0),
            range_moving: (0.0, 110.0),
        };
        let mi = point_loss(&PointMeasure::Mi(pp), &s, &vol, &id).unwrap().loss;
        let mut shuffled = s.clone();
        shuffled.fixed.rotate_left(777);
        let mi_off = point_loss(&PointMeasure::Mi(pp), &shuffled, &vol, &id).unwrap().loss;
        assert!(mi < mi_off - 0.5, "-MI aligned {mi} vs shuffled {mi_off}");
        // CR: near 1 where one image is a function of the other (narrow windows), near 0 when shuffled.
        let narrow = PointParzen { parzen: Parzen { bins: 64, sigma: 0.3 }, ..pp };
        let cr = point_loss(&PointMeasure::Cr(narrow), &s, &vol, &id).unwrap().loss;
        let cr_off = point_loss(&PointMeasure::Cr(narrow), &shuffled, &vol, &id).unwrap().loss;
        assert!(cr < -0.95 && cr_off > -0.1, "-CR aligned {cr}, shuffled {cr_off}");
        // No point inside: loss 0, no gradient.
        let away = [1.0, 0.0, 0.0, 100.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let r = point_loss(&PointMeasure::Ncc, &s, &vol, &away).unwrap();
        assert_eq!((r.loss, r.inside, r.grad), (0.0, 0, [0.0; 12]));
        // Bad inputs are errors, not panics.
        let bad = PointSamples { points: vec![0.0; 5], fixed: vec![0.0; 2] };
        assert!(point_loss(&PointMeasure::Ncc, &bad, &vol, &id).is_err());
    }
}

mod lncc {
    use super::*;
    use regsh::metrics::functional::{lncc_slow, Window};
    use regsh::ops::lncc::{lncc, lncc_loss_grad, LnccFixed};

    const SHAPE: [usize; 3] = [13, 11, 9];

    /// A smooth volume with noise (values about 20-120), x fastest; `phase` makes a related contrast.
    fn volume(seed: u64, phase: f32) -> Vec<f32> {
        let [nx, ny, nz] = SHAPE;
        let noise = rand_vec(nx * ny * nz, seed);
        (0..nx * ny * nz)
            .map(|i| {
                let (x, y, z) = ((i % nx) as f32, ((i / nx) % ny) as f32, (i / (nx * ny)) as f32);
                70.0 + 30.0 * (0.5 * x + phase).sin() * (0.4 * y).cos()
                    + 15.0 * (0.3 * z + 0.2 * x).cos()
                    + 8.0 * noise[i]
            })
            .collect()
    }

    fn tensor(v: &[f32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), (SHAPE[2], SHAPE[1], SHAPE[0]), &Device::Cpu).unwrap()
    }

    /// A mask leaving out a slab and a few voxels.
    fn mask() -> Vec<f32> {
        let r = rand_vec(SHAPE.iter().product(), 77);
        r.iter().enumerate().map(|(i, u)| if i % SHAPE[0] < 2 || *u < 0.1 { 0.0 } else { 1.0 }).collect()
    }

    fn windows() -> Vec<Window> {
        vec![Window::Box(3), Window::Box(5), Window::Box(9), Window::Gaussian(1.0)]
    }

    #[test]
    fn lncc_matches_slow_twin_value_and_gradient() {
        let (f, m, mk) = (volume(1, 0.0), volume(2, 0.7), mask());
        let (ft, mkt) = (tensor(&f), tensor(&mk));
        for w in windows() {
            let (fw, sw) = (w, w);
            for use_mask in [false, true] {
                let msk = use_mask.then_some(&mkt);
                let mv = Var::from_tensor(&tensor(&m)).unwrap();
                let fast = lncc(&ft, mv.as_tensor(), fw, msk).unwrap();
                let slow = lncc_slow(&ft, mv.as_tensor(), sw, msk).unwrap();
                let (vf, vs) = (fast.to_scalar::<f32>().unwrap(), slow.to_scalar::<f32>().unwrap());
                assert!(vs > 0.05 && vs < 0.95, "{fw:?}: a measure away from its bounds, got {vs}");
                assert!((vf - vs).abs() < 1e-5, "{fw:?} mask {use_mask}: value {vf} vs slow twin {vs}");
                let gf = fast.backward().unwrap().get(mv.as_tensor()).unwrap().flatten_all().unwrap();
                let gs = slow.backward().unwrap().get(mv.as_tensor()).unwrap().flatten_all().unwrap();
                let scale = gs.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                let d = max_abs_diff(&gf, &gs);
                assert!(scale > 0.0 && d < 1e-3 * scale, "{fw:?} mask {use_mask}: gradient off by {d} of {scale}");
                // The plain kernel returns the loss (-lncc) and its gradient.
                let fx = LnccFixed::new(&f, SHAPE, fw, use_mask.then_some(&mk[..])).unwrap();
                let r = lncc_loss_grad(&fx, &m, true).unwrap();
                assert!((r.loss + vs as f64).abs() < 1e-5);
                let gk = Tensor::from_vec(r.grad, gf.shape(), &Device::Cpu).unwrap();
                assert!(max_abs_diff(&gk, &gf.neg().unwrap()) < 1e-6 * scale.max(1.0));
            }
        }
    }

    #[test]
    fn lncc_gradient_matches_finite_differences() {
        let (f, m, mk) = (volume(3, 0.0), volume(4, 1.1), mask());
        for fw in windows() {
            let fx = LnccFixed::new(&f, SHAPE, fw, Some(&mk)).unwrap();
            let r = lncc_loss_grad(&fx, &m, true).unwrap();
            let scale = r.grad.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
            let h = 0.05f32;
            for i in (0..m.len()).step_by(37) {
                let (mut p, mut q) = (m.clone(), m.clone());
                p[i] += h;
                q[i] -= h;
                let lp = lncc_loss_grad(&fx, &p, false).unwrap().loss;
                let lq = lncc_loss_grad(&fx, &q, false).unwrap().loss;
                let fd = (lp - lq) / (2.0 * h as f64);
                assert!(
                    (fd - r.grad[i] as f64).abs() < 2e-2 * scale,
                    "{fw:?} voxel {i}: dL/dm {} vs finite difference {fd} (scale {scale})",
                    r.grad[i]
                );
            }
        }
    }

    #[test]
    fn lncc_of_an_image_with_itself_is_one() {
        let f = volume(5, 0.0);
        let fx = LnccFixed::new(&f, SHAPE, Window::Box(5), None).unwrap();
        let r = lncc_loss_grad(&fx, &f, true).unwrap();
        assert!((r.loss + 1.0).abs() < 1e-4, "loss {}", r.loss);
        // At the maximum the gradient is (nearly) zero.
        assert!(r.grad.iter().all(|g| g.abs() < 1e-4));
        // A flat moving image (every window's variance clamped at 0): LNCC 0 with a finite gradient,
        // as the slow twin.
        let flat = vec![42.0f32; f.len()];
        let r = lncc_loss_grad(&fx, &flat, true).unwrap();
        let slow = lncc_slow(&tensor(&f), &tensor(&flat), Window::Box(5), None).unwrap().to_scalar::<f32>().unwrap();
        assert!(r.loss.abs() < 1e-6 && slow.abs() < 1e-6, "flat: fused {} slow {slow}", -r.loss);
        assert!(r.grad.iter().all(|g| g.is_finite()));
    }
}
