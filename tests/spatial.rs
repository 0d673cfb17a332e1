//! Transforms and the warp: known answers, inverses, Jacobians, gradients by finite differences, and the
//! transform files (ITK `.tfm`, ANTs `.mat`, displacement fields).

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use common::rand_vec;
use nalgebra::{Matrix3, Rotation3, Vector3};
use regsh::image::resample::Padding;
use regsh::image::smooth::{smooth, SigmaUnit};
use regsh::image::{Grid, Image};
use regsh::spatial::io::{
    load_displacement, load_transform, read_itk_tfm, save_displacement, save_transform, write_ants_mat,
    write_itk_affine,
};
use regsh::spatial::{
    grid_points, jacobian_determinant, warp, warp_tensor, BSpline, Composite, Ddf, Linear, LinearKind, Svf, Transform,
    WarpInterpolation,
};

fn oblique(shape: [usize; 3], spacing: [f64; 3]) -> Grid {
    let r = Rotation3::from_euler_angles(0.2, -0.1, 0.3);
    let d: Matrix3<f64> = r.matrix() * Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, 1.0));
    Grid::new(shape, spacing, [12.0, -7.0, 3.0], d).unwrap()
}

/// A smooth test image: a sum of Gaussian blobs, so interpolation gradients are informative.
fn blobs(g: &Grid) -> Image {
    let [nx, ny, nz] = g.shape();
    let mut v = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let (x, y, z) = (i as f64 / nx as f64, j as f64 / ny as f64, k as f64 / nz as f64);
                let b1 = (-((x - 0.4).powi(2) + (y - 0.5).powi(2) + (z - 0.5).powi(2)) / 0.05).exp();
                let b2 = 0.6 * (-((x - 0.7).powi(2) + (y - 0.3).powi(2) + (z - 0.6).powi(2)) / 0.02).exp();
                v.push((b1 + b2) as f32);
            }
        }
    }
    Image::from_vec(v, 1, g.clone()).unwrap()
}

#[test]
fn identity_warp_returns_the_input_exactly() {
    let g = oblique([9, 8, 7], [2.0, 2.0, 3.0]);
    let img = blobs(&g);
    for kind in
        [LinearKind::Translation, LinearKind::Rigid, LinearKind::Similarity, LinearKind::Affine, LinearKind::Matrix]
    {
        let t = Linear::identity(kind, g.centre());
        let out = warp(&img, &t, &g, WarpInterpolation::Linear, Padding::Zero).unwrap();
        assert_eq!(out.to_vec_f32().unwrap(), img.to_vec_f32().unwrap(), "{kind:?}");
    }
    let zero = Ddf::zeros(g.clone()).unwrap();
    let out = warp(&img, &zero, &g, WarpInterpolation::Linear, Padding::Zero).unwrap();
    assert_eq!(out.to_vec_f32().unwrap(), img.to_vec_f32().unwrap(), "zero DDF");
}

#[test]
fn whole_voxel_translation_shifts_exactly() {
    let g = Grid::axis_aligned([8, 7, 6], [1.0, 1.5, 2.0], [-3.0, 4.0, 10.0]).unwrap();
    let img = blobs(&g);
    // T(x) = x + (2 mm, 3 mm, -2 mm): warped[i, j, k] = moving[i + 2, j + 2, k - 1].
    let t = Linear::translation([2.0, 3.0, -2.0]);
    let out = warp(&img, &t, &g, WarpInterpolation::Linear, Padding::Zero).unwrap();
    for k in 1..6 {
        for j in 0..5 {
            for i in 0..6 {
                assert_eq!(out.value_at(0, [i, j, k]).unwrap(), img.value_at(0, [i + 2, j + 2, k - 1]).unwrap());
            }
        }
    }
    assert_eq!(out.value_at(0, [7, 0, 1]).unwrap(), 0.0, "zero padding outside");
}

#[test]
fn affine_parameters_and_matrix_convert_both_ways() {
    let p = [3.0, -2.0, 5.0, 0.1, -0.2, 0.15, 1.1, 0.9, 1.05, 0.05, -0.03, 0.02];
    let c = [10.0, -20.0, 30.0];
    let t = Linear::from_params(LinearKind::Affine, &p, c).unwrap();
    let m = t.linear_matrix().unwrap().unwrap();
    // The centre moves by the translation only.
    let cm = m * nalgebra::Vector4::new(c[0], c[1], c[2], 1.0);
    assert!((cm[0] - 13.0).abs() < 1e-5 && (cm[1] + 22.0).abs() < 1e-5 && (cm[2] - 35.0).abs() < 1e-5);
    let back = Linear::from_matrix(LinearKind::Affine, &m, c).unwrap().param_values().unwrap();
    for (a, b) in p.iter().zip(&back) {
        assert!((a - b).abs() < 1e-5, "{p:?} vs {back:?}");
    }
    // Rotation about z by 90 degrees maps x to y.
    let r = Linear::from_params(LinearKind::Rigid, &[0.0, 0.0, 0.0, 0.0, 0.0, std::f64::consts::FRAC_PI_2], [0.0; 3])
        .unwrap();
    let rm = r.linear_matrix().unwrap().unwrap();
    assert!((rm[(1, 0)] - 1.0).abs() < 1e-6 && rm[(0, 0)].abs() < 1e-6);
    // A rigid kind refuses a sheared matrix.
    assert!(Linear::from_matrix(LinearKind::Rigid, &m, c).is_err());
}

#[test]
fn linear_composed_with_inverse_is_identity() {
    let t = Linear::from_params(
        LinearKind::Affine,
        &[3.0, -2.0, 5.0, 0.1, -0.2, 0.15, 1.1, 0.9, 1.05, 0.05, -0.03, 0.02],
        [1.0, 2.0, 3.0],
    )
    .unwrap();
    let comp = Composite::new(vec![Arc::new(t.clone()), t.inverse().unwrap()]);
    let pts = Tensor::from_vec(
        rand_vec(300, 1).iter().map(|v| v * 200.0 - 100.0).collect::<Vec<f32>>(),
        (100, 3),
        &Device::Cpu,
    )
    .unwrap();
    let back = comp.map_points(&pts).unwrap();
    let err = (back - &pts).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(err < 1e-4, "max error {err} mm");
    // In f64 the matrices compose to the identity to 1e-5.
    let m = comp.linear_matrix().unwrap().unwrap();
    assert!((m - nalgebra::Matrix4::identity()).abs().max() < 1e-5);
}

fn smooth_field(g: &Grid, amplitude: f32, seed: u64) -> Tensor {
    let [nx, ny, nz] = g.shape();
    let noise: Vec<f32> = rand_vec(3 * g.num_voxels(), seed).iter().map(|v| v - 0.5).collect();
    let img = Image::from_vec(noise, 3, g.clone()).unwrap();
    let s = smooth(&img, [3.0; 3], SigmaUnit::Voxels).unwrap().to_vec_f32().unwrap();
    let max = s.iter().fold(0f32, |m, v| m.max(v.abs()));
    Tensor::from_vec(s.iter().map(|v| v / max * amplitude).collect::<Vec<_>>(), (3, nz, ny, nx), &Device::Cpu).unwrap()
}

#[test]
fn ddf_composed_with_its_inverse_is_identity() {
    let g = Grid::axis_aligned([24, 24, 24], [2.0; 3], [0.0; 3]).unwrap();
    let ddf = Ddf::new(smooth_field(&g, 3.0, 3), g.clone()).unwrap();
    let inv = ddf.inverse().unwrap();
    let comp = Composite::new(vec![inv, Arc::new(ddf)]);
    // Interior points (the field is clamped beyond the border).
    let inner = Grid::axis_aligned([12, 12, 12], [2.0; 3], [12.0; 3]).unwrap();
    let p = grid_points(&inner, &Device::Cpu).unwrap().reshape((12 * 12 * 12, 3)).unwrap();
    let err = (comp.map_points(&p).unwrap() - &p).unwrap().sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
    let mean = err.mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(mean < 0.05, "mean error {mean} mm");
}

#[test]
fn svf_of_a_constant_velocity_is_the_translation() {
    let g = Grid::axis_aligned([10, 9, 8], [1.5; 3], [0.0; 3]).unwrap();
    let v = [0.7f32, -0.4, 0.25];
    let [nx, ny, nz] = g.shape();
    let mut data = Vec::new();
    for c in v {
        data.extend(std::iter::repeat_n(c, nx * ny * nz));
    }
    let vel = Tensor::from_vec(data, (3, nz, ny, nx), &Device::Cpu).unwrap();
    let svf = Svf::new(vel, g.clone(), 7).unwrap();
    let u = svf.to_ddf().unwrap().field().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (c, want) in v.iter().enumerate() {
        let got = &u[c * nx * ny * nz..(c + 1) * nx * ny * nz];
        assert!(got.iter().all(|x| (x - want).abs() < 1e-5), "component {c}");
    }
    // Its inverse (negated velocity) undoes it.
    let inv = svf.inverse().unwrap();
    let p = Tensor::from_vec(vec![5.0f32, 6.0, 4.0], (1, 3), &Device::Cpu).unwrap();
    let q = inv.map_points(&svf.map_points(&p).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    assert!((q[0][0] - 5.0).abs() < 1e-4 && (q[0][1] - 6.0).abs() < 1e-4 && (q[0][2] - 4.0).abs() < 1e-4);
}

#[test]
fn jacobian_of_a_scaling_is_its_determinant() {
    let g = oblique([12, 11, 10], [2.0, 2.0, 3.0]);
    let s = Linear::from_params(
        LinearKind::Affine,
        &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.1, 0.9, 1.2, 0.0, 0.0, 0.0],
        g.centre(),
    )
    .unwrap();
    let j = jacobian_determinant(&s, &g).unwrap().to_vec_f32().unwrap();
    assert!(j.iter().all(|v| (v - 1.188).abs() < 1e-5));
    // The same map as a displacement field: finite differences of a linear field are exact.
    let world = s.world_points(&g).unwrap();
    let base = grid_points(&g, &Device::Cpu).unwrap();
    let field = (world - base).unwrap().permute((3, 0, 1, 2)).unwrap().contiguous().unwrap();
    let ddf = Ddf::new(field, g.clone()).unwrap();
    let jd = jacobian_determinant(&ddf, &g).unwrap().to_vec_f32().unwrap();
    let worst = jd.iter().map(|v| (v - 1.188).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-4, "worst {worst}");
}

#[test]
fn bspline_reproduces_constants_and_zero() {
    let g = Grid::axis_aligned([20, 18, 16], [1.0, 1.0, 1.5], [0.0; 3]).unwrap();
    let b = BSpline::zeros(g.clone(), [5.0, 5.0, 6.0]).unwrap();
    assert_eq!(BSpline::control_shape(&g, [5.0, 5.0, 6.0]), [7, 7, 7]);
    let u = b.to_ddf().unwrap().field().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(u, 0.0);
    // Constant coefficients: the cubic B-spline basis sums to one, so the field is that constant.
    let c = b.coeffs().ones_like().unwrap().affine(2.5, 0.0).unwrap();
    let f = b.with_coeffs(c).unwrap().to_ddf().unwrap().field().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(f.iter().all(|v| (v - 2.5).abs() < 1e-5));
}

/// Sum of squared differences between a warped image and a target, as f64.
fn ssd(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn warp_gradient_wrt_the_12_affine_parameters_matches_finite_differences() {
    let g = Grid::axis_aligned([14, 13, 12], [2.0; 3], [-13.0, -12.0, -11.0]).unwrap();
    let moving = blobs(&g);
    let target = blobs(&g).data().affine(0.9, 0.05).unwrap();
    let p0 = [0.7, -0.4, 0.3, 0.05, -0.04, 0.03, 1.03, 0.98, 1.02, 0.02, -0.01, 0.015];
    let var = Var::from_tensor(&Tensor::from_vec(p0.map(|v| v as f32).to_vec(), 12, &Device::Cpu).unwrap()).unwrap();
    let t = Linear::new(LinearKind::Affine, var.as_tensor().clone(), g.centre()).unwrap();
    let out = warp_tensor(moving.data(), &g, &t, &g, regsh::ops::SampleMode::Linear, Padding::Zero).unwrap();
    let grads = (&out - &target).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let gp = grads.get(var.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    for i in 0..12 {
        let h = if i < 3 { 1e-2 } else { 1e-3 };
        let eval = |d: f64| {
            let mut p = p0;
            p[i] += d;
            let t = Linear::from_params(LinearKind::Affine, &p, g.centre()).unwrap();
            ssd(
                &warp_tensor(moving.data(), &g, &t, &g, regsh::ops::SampleMode::Linear, Padding::Zero).unwrap(),
                &target,
            )
        };
        let fd = (eval(h) - eval(-h)) / (2.0 * h);
        assert!((fd - gp[i] as f64).abs() < 0.02 * fd.abs().max(0.05), "param {i}: fd {fd} vs autograd {}", gp[i]);
    }
}

#[test]
fn warp_gradient_wrt_ddf_and_image_matches_finite_differences() {
    let g = Grid::axis_aligned([10, 9, 8], [2.0, 2.0, 2.5], [0.0; 3]).unwrap();
    let moving = blobs(&g);
    let target = blobs(&g).data().affine(1.1, -0.02).unwrap();
    let f0 = smooth_field(&g, 1.3, 9);
    let fvar = Var::from_tensor(&f0).unwrap();
    let mvar = Var::from_tensor(moving.data()).unwrap();
    let ddf = Ddf::new(fvar.as_tensor().clone(), g.clone()).unwrap();
    let out = warp_tensor(mvar.as_tensor(), &g, &ddf, &g, regsh::ops::SampleMode::Linear, Padding::Zero).unwrap();
    let grads = (&out - &target).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let gf = grads.get(fvar.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let gm = grads.get(mvar.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let base = f0.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let dims = f0.dims().to_vec();
    for i in (0..base.len()).step_by(97) {
        let h = 1e-2f32;
        let eval = |d: f32| {
            let mut v = base.clone();
            v[i] += d;
            let d = Ddf::new(Tensor::from_vec(v, dims.clone(), &Device::Cpu).unwrap(), g.clone()).unwrap();
            ssd(
                &warp_tensor(moving.data(), &g, &d, &g, regsh::ops::SampleMode::Linear, Padding::Zero).unwrap(),
                &target,
            )
        };
        let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
        assert!((fd - gf[i] as f64).abs() < 0.02 * fd.abs().max(0.05), "field entry {i}: fd {fd} vs {}", gf[i]);
    }
    let mbase = moving.to_vec_f32().unwrap();
    for i in (0..mbase.len()).step_by(53) {
        let h = 1e-2f32;
        let eval = |d: f32| {
            let mut v = mbase.clone();
            v[i] += d;
            let m = Tensor::from_vec(v, moving.data().dims(), &Device::Cpu).unwrap();
            ssd(&warp_tensor(&m, &g, &ddf, &g, regsh::ops::SampleMode::Linear, Padding::Zero).unwrap(), &target)
        };
        let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
        assert!((fd - gm[i] as f64).abs() < 0.02 * fd.abs().max(0.05), "image voxel {i}: fd {fd} vs {}", gm[i]);
    }
}

#[test]
fn label_warps_keep_label_values() {
    let g = Grid::axis_aligned([12, 12, 12], [1.0; 3], [0.0; 3]).unwrap();
    let v: Vec<f32> = (0..g.num_voxels()).map(|n| [0.0, 3.0, 7.0][(n / 144 + n % 12 / 5) % 3]).collect();
    let labels = Image::from_vec(v, 1, g.clone()).unwrap().with_dtype(regsh::image::DataType::Uint8);
    let t = Linear::from_params(LinearKind::Rigid, &[0.3, -0.6, 0.2, 0.1, 0.0, 0.05], g.centre()).unwrap();
    for interp in [WarpInterpolation::Nearest, WarpInterpolation::LabelLinear] {
        let out = warp(&labels, &t, &g, interp, Padding::Zero).unwrap();
        assert_eq!(out.dtype(), regsh::image::DataType::Uint8);
        assert!(out.to_vec_f32().unwrap().iter().all(|x| [0.0, 3.0, 7.0].contains(x)), "{interp:?}");
    }
}

#[test]
fn itk_and_ants_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = [10.0, -20.0, 30.0];
    let t = Linear::from_params(
        LinearKind::Affine,
        &[3.0, -2.0, 5.0, 0.1, -0.2, 0.15, 1.1, 0.9, 1.05, 0.05, -0.03, 0.02],
        c,
    )
    .unwrap();
    let m = t.linear_matrix().unwrap().unwrap();
    for name in ["a.tfm", "a.txt", "a.mat"] {
        let p = dir.path().join(name);
        if name.ends_with(".mat") {
            write_ants_mat(&p, &m, c).unwrap();
        } else {
            write_itk_affine(&p, &m, c).unwrap();
        }
        let back = load_transform(p.to_str().unwrap()).unwrap().linear_matrix().unwrap().unwrap();
        assert!((back - m).abs().max() < 1e-12, "{name}");
        let inv = load_transform(&format!("[{},1]", p.display())).unwrap().linear_matrix().unwrap().unwrap();
        assert!((inv * m - nalgebra::Matrix4::identity()).abs().max() < 1e-5, "{name} inverse");
    }
    // The text has ITK's LPS convention: a RAS translation of +3 mm in x is -3 mm in LPS.
    let p = dir.path().join("t.tfm");
    save_transform(&Linear::translation([3.0, 4.0, 5.0]), &p, [0.0; 3], None).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("Parameters: 1.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 1.0 -3.0 -4.0 5.0"), "{text}");
    assert!(text.starts_with("#Insight Transform File V1.0"));
}

#[test]
fn itk_files_written_by_others_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("euler.tfm");
    // Euler3D, 90 degrees about z, translation 1 mm in LPS x, centre 0 (as SimpleITK writes it).
    std::fs::write(&p, "#Insight Transform File V1.0\n#Transform 0\nTransform: Euler3DTransform_double_3_3\nParameters: 0 0 1.5707963267948966 1 0 0\nFixedParameters: 0 0 0 0\n").unwrap();
    let m = read_itk_tfm(&p).unwrap().linear_matrix().unwrap().unwrap();
    // LPS: x' = Rz(90) x + (1, 0, 0). RAS point (1, 0, 0) is LPS (-1, 0, 0) -> (1, -1, 0) LPS -> RAS (-1, 1, 0).
    let q = m * nalgebra::Vector4::new(1.0, 0.0, 0.0, 1.0);
    assert!((q[0] + 1.0).abs() < 1e-9 && (q[1] - 1.0).abs() < 1e-9 && q[2].abs() < 1e-9, "{q}");
    // ScaleVersor3D: ITK's matrix is the rotation plus (scale - 1) on the diagonal, not R * S. 90 degrees
    // about z, scales (2, 1, 1): LPS (1, 0, 0) -> (1, 1, 0); in RAS (-1, 0, 0) -> (-1, -1, 0).
    let s45 = std::f64::consts::FRAC_PI_4.sin();
    let text = format!("#Insight Transform File V1.0\nTransform: ScaleVersor3DTransform_double_3_3\nParameters: 0 0 {s45} 0 0 0 2 1 1\nFixedParameters: 0 0 0\n");
    std::fs::write(&p, text).unwrap();
    let m = read_itk_tfm(&p).unwrap().linear_matrix().unwrap().unwrap();
    let q = m * nalgebra::Vector4::new(-1.0, 0.0, 0.0, 1.0);
    assert!((q[0] + 1.0).abs() < 1e-9 && (q[1] + 1.0).abs() < 1e-9 && q[2].abs() < 1e-9, "{q}");
    // Non-finite parameters are refused, not applied.
    let text = "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 nan 0 0\nFixedParameters: 0 0 0\n";
    std::fs::write(&p, text).unwrap();
    assert!(read_itk_tfm(&p).unwrap_err().to_string().contains("non-finite"));
    std::fs::write(&p, "#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\nParameters: 1\n")
        .unwrap();
    assert!(read_itk_tfm(&p).unwrap_err().to_string().contains("unsupported ITK transform type"));
    std::fs::write(&p, "hello").unwrap();
    assert!(read_itk_tfm(&p).is_err());
}

#[test]
fn displacement_field_files_round_trip_in_lps() {
    let dir = tempfile::tempdir().unwrap();
    let g = oblique([6, 5, 4], [2.0, 2.0, 3.0]);
    let ddf = Ddf::new(smooth_field(&g, 2.0, 4), g.clone()).unwrap();
    let p = dir.path().join("warp.nii.gz");
    save_displacement(&ddf, &p).unwrap();
    let (img, meta) = regsh::image::io::load_with_meta(&p).unwrap();
    assert_eq!(meta.dims, vec![6, 5, 4, 1, 3]);
    assert_eq!(meta.intent_code, 1007);
    // On disk the x and y components are negated (LPS).
    let raw = img.to_vec_f32().unwrap();
    let ras = ddf.field().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(raw[0], -ras[0]);
    assert_eq!(raw[2 * 120], ras[2 * 120]);
    let back = load_displacement(&p).unwrap();
    assert_eq!(back.field().flatten_all().unwrap().to_vec1::<f32>().unwrap(), ras);
    assert!(back.grid().same_as(&g, 1e-5));
}

#[test]
fn label_warps_give_background_outside_and_keep_large_labels_exact() {
    let g = Grid::axis_aligned([8, 8, 8], [1.0; 3], [0.0; 3]).unwrap();
    let big = 16_777_217.0f64; // 2^24 + 1: not representable in f32
    let vals: Vec<f64> = (0..512).map(|n| if n % 8 < 4 { 5.0 } else { big }).collect();
    let t = Tensor::from_vec(vals, (1, 8, 8, 8), &Device::Cpu).unwrap();
    let labels = Image::new(t, g.clone(), regsh::image::DataType::Int32).unwrap();
    // Shifted by 20 mm: every sample is outside the label map.
    let away = Linear::translation([20.0, 0.0, 0.0]);
    for interp in [WarpInterpolation::Nearest, WarpInterpolation::LabelLinear] {
        let out = warp(&labels, &away, &g, interp, Padding::Zero).unwrap();
        assert!(out.to_vec_f64().unwrap().iter().all(|v| *v == 0.0), "{interp:?} outside");
        let same = warp(&labels, &Linear::translation([0.0; 3]), &g, interp, Padding::Zero).unwrap();
        assert_eq!(same.to_vec_f64().unwrap(), labels.to_vec_f64().unwrap(), "{interp:?} identity");
    }
}

#[test]
fn linear_matrix_f64_matches_the_tensor_matrix_and_its_derivatives() {
    // Every kind: the f64 matrix equals `Linear::matrix` (f32), and each derivative matrix equals central
    // differences of the f64 matrix.
    let centre = [3.0, -7.0, 12.0];
    let cases: [(LinearKind, Vec<f64>); 5] = [
        (LinearKind::Translation, vec![1.5, -2.0, 0.7]),
        (LinearKind::Rigid, vec![1.5, -2.0, 0.7, 0.2, -0.15, 0.3]),
        (LinearKind::Similarity, vec![1.5, -2.0, 0.7, 0.2, -0.15, 0.3, 1.08]),
        (LinearKind::Affine, vec![1.5, -2.0, 0.7, 0.2, -0.15, 0.3, 1.08, 0.93, 1.02, 0.04, -0.03, 0.05]),
        (LinearKind::Matrix, vec![1.1, 0.1, -0.05, 2.0, 0.02, 0.95, 0.1, -1.0, 0.0, -0.1, 1.05, 0.5]),
    ];
    for (kind, p) in cases {
        let (m, dm) = regsh::spatial::linear_matrix_f64(kind, &p, centre).unwrap();
        let t = Linear::from_params(kind, &p, centre).unwrap().linear_matrix().unwrap().unwrap();
        assert!((m - t).abs().max() < 1e-5 * (1.0 + t.abs().max()), "{kind:?}: {m} vs {t}");
        assert_eq!(dm.len(), kind.num_params());
        for (i, d) in dm.iter().enumerate() {
            let h = 1e-6;
            let (mut a, mut b) = (p.clone(), p.clone());
            a[i] += h;
            b[i] -= h;
            let fd = (regsh::spatial::linear_matrix_f64(kind, &a, centre).unwrap().0
                - regsh::spatial::linear_matrix_f64(kind, &b, centre).unwrap().0)
                / (2.0 * h);
            assert!((d - fd).abs().max() < 1e-6, "{kind:?} d/dp{i}: {d} vs {fd}");
        }
    }
    assert!(regsh::spatial::linear_matrix_f64(LinearKind::Rigid, &[0.0; 5], centre).is_err());
}
