//! Similarity measures and regularizers: known answers, discrete references computed by numpy /
//! scikit-learn, finite-difference gradients, and translation / rotation sweeps on the real images.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor, Var};
use common::rand_vec;
use regsh::image::io::{load, save};
use regsh::image::resample::Padding;
use regsh::image::{Grid, Image};
use regsh::metrics::regularizers::{bending_energy, diffusion, folding, jacobian_det};
use regsh::metrics::{Metric, OptionValue};
use regsh::spatial::{warp_tensor, Linear, LinearKind};

fn vol(v: Vec<f32>, n: usize) -> Tensor {
    Tensor::from_vec(v, (n, n, n), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// A smooth 3-D test pattern on an n^3 grid.
fn blobs(n: usize, shift: f64) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * n * n);
    for k in 0..n {
        for j in 0..n {
            for i in 0..n {
                let (x, y, z) = (i as f64 / n as f64 - shift, j as f64 / n as f64, k as f64 / n as f64);
                let a = (-((x - 0.4).powi(2) + (y - 0.5).powi(2) + (z - 0.5).powi(2)) / 0.04).exp();
                let b = 0.7 * (-((x - 0.7).powi(2) + (y - 0.3).powi(2) + (z - 0.6).powi(2)) / 0.02).exp();
                v.push((a + b + 0.1 * (6.0 * x).sin() * (5.0 * y).cos()) as f32);
            }
        }
    }
    v
}

fn metric(name: &str, opts: &[(&str, OptionValue)]) -> Metric {
    let mut m = Metric::new(name).unwrap();
    for (k, v) in opts {
        m.set(k, v.clone()).unwrap();
    }
    m
}

#[test]
fn identical_images_give_the_known_answers() {
    let a = vol(blobs(24, 0.0), 24);
    assert_eq!(metric("ssd", &[]).value(&a, &a, None).unwrap(), 0.0);
    assert!((metric("ncc", &[]).loss(&a, &a, None).unwrap().to_scalar::<f32>().unwrap() + 1.0).abs() < 1e-5);
    let l = metric("lncc", &[]).value(&a, &a, None).unwrap();
    assert!((l - 1.0).abs() < 1e-3, "LNCC {l}");
    // Parzen measures reach their ideal as the kernel narrows: CR 1, NMI 2, MI = the image's entropy.
    // Quantize to bin centres so sigma 0.15 makes the windows exact indicators (neighbour weight e^-22).
    let q: Vec<f32> = blobs(24, 0.0).iter().map(|v| (v.clamp(0.0, 1.0) * 15.0).round()).collect();
    let qa = vol(q.clone(), 24);
    let narrow = [
        ("bins", OptionValue::Number(16.0)),
        ("sigma", OptionValue::Number(0.15)),
        ("range_fixed", OptionValue::Range(0.0, 15.0)),
        ("range_moving", OptionValue::Range(0.0, 15.0)),
    ];
    assert!((metric("cr", &narrow).value(&qa, &qa, None).unwrap() - 1.0).abs() < 1e-5);
    assert!((metric("nmi", &narrow).value(&qa, &qa, None).unwrap() - 2.0).abs() < 1e-5);
    let mut counts = [0f64; 16];
    q.iter().for_each(|v| counts[*v as usize] += 1.0);
    let h: f64 = counts.iter().filter(|c| **c > 0.0).map(|c| c / q.len() as f64).map(|p| -p * p.ln()).sum();
    let mi = metric("mi", &narrow).value(&qa, &qa, None).unwrap();
    assert!((mi - h).abs() < 1e-5, "MI {mi} vs entropy {h}");
    // Each voxel's Parzen weights sum to 1, at the edge bins as in the middle: three well separated
    // levels (10 %, 80 %, 10 %, two at the range's ends) give CR exactly 1 with the default kernel.
    let levels: Vec<f32> =
        (0..24 * 24 * 24).map(|i| [0.0, 15.0, 15.0, 15.0, 15.0, 15.0, 15.0, 15.0, 15.0, 31.0][i % 10]).collect();
    let lv = vol(levels, 24);
    let cr = metric("cr", &[]).value(&lv, &lv, None).unwrap();
    assert!((cr - 1.0).abs() < 1e-5, "CR of three levels {cr}");
    // Wider kernels smooth the histogram and lower MI below the entropy.
    let wide = metric("mi", &[("bins", OptionValue::Number(16.0)), ("sigma", OptionValue::Number(1.0))])
        .value(&qa, &qa, None)
        .unwrap();
    assert!(wide < h - 0.05, "{wide} vs {h}");
}

#[test]
fn independent_noise_gives_mi_and_cr_near_zero() {
    let n = 40;
    let (a, b) = (vol(rand_vec(n * n * n, 1), n), vol(rand_vec(n * n * n, 2), n));
    let mi = metric("mi", &[]).value(&a, &b, None).unwrap();
    let cr = metric("cr", &[]).value(&a, &b, None).unwrap();
    let nmi = metric("nmi", &[]).value(&a, &b, None).unwrap();
    assert!(mi < 0.01, "MI {mi}");
    assert!(cr < 0.01, "CR {cr}");
    assert!((nmi - 1.0).abs() < 0.01, "NMI {nmi}");
    // LNCC is insensitive to an intensity offset (centred, f32-safe) and stays in [0, 1]: independent
    // noise scores about 1 / 729 in 9^3 windows whatever the background level.
    for offset in [0.0, 1000.0] {
        let (ao, bo) = ((&a + offset).unwrap(), (&b + offset).unwrap());
        let l = metric("lncc", &[]).value(&ao, &bo, None).unwrap();
        assert!((0.0..0.01).contains(&l), "LNCC of noise at offset {offset}: {l}");
        let same = metric("lncc", &[]).value(&ao, &ao, None).unwrap();
        assert!((same - 1.0).abs() < 1e-3, "LNCC of identical images at offset {offset}: {same}");
    }
    // A deterministic function of the image (inverted contrast) gives CR near 1 and NCC -1.
    let inv = (1.0 - &a).unwrap();
    assert!(metric("cr", &[]).value(&a, &inv, None).unwrap() > 0.95);
    assert!((metric("ncc", &[]).value(&a, &inv, None).unwrap() + 1.0).abs() < 1e-5);
}

#[test]
fn parzen_measures_converge_to_numpy_and_sklearn_discrete_references_on_real_images() {
    let dir = tempfile::tempdir().unwrap();
    let bins = 24usize;
    let quantize = |img: &Image| -> Image {
        let v = img.to_vec_f32().unwrap();
        let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        let q: Vec<f32> = v.iter().map(|x| ((x - lo) / (hi - lo) * (bins - 1) as f32).round()).collect();
        Image::from_vec(q, 1, img.grid().clone()).unwrap()
    };
    let t1 = quantize(&load(common::data("avg152/avg152T1.nii")).unwrap());
    let t2 = quantize(&load(common::data("avg152/avg152T2.nii")).unwrap());
    let (pf, pm) = (dir.path().join("f.nii"), dir.path().join("m.nii"));
    save(&t1, &pf).unwrap();
    save(&t2, &pm).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/metric_ref.py");
    let out = Command::new(common::python()).arg(script).arg(&pf).arg(&pm).arg(bins.to_string()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let range = OptionValue::Range(0.0, (bins - 1) as f64);
    let mut errs = Vec::new();
    for sigma in [0.5, 0.3, 0.15] {
        let opts = [
            ("bins", OptionValue::Number(bins as f64)),
            ("sigma", OptionValue::Number(sigma)),
            ("range_fixed", range.clone()),
            ("range_moving", range.clone()),
        ];
        let mi = metric("mi", &opts).value(t1.data(), t2.data(), None).unwrap();
        let nmi = metric("nmi", &opts).value(t1.data(), t2.data(), None).unwrap();
        let cr = metric("cr", &opts).value(t1.data(), t2.data(), None).unwrap();
        let e = [
            (mi - r["mi"].as_f64().unwrap()).abs(),
            (nmi - r["nmi"].as_f64().unwrap()).abs(),
            (cr - r["cr"].as_f64().unwrap()).abs(),
        ];
        eprintln!("sigma {sigma}: |MI - sklearn| {:.2e}, |NMI - numpy| {:.2e}, |CR - Roche| {:.2e}", e[0], e[1], e[2]);
        errs.push(e);
    }
    // The error shrinks as the kernel narrows, and at sigma 0.15 bins the windows are indicators.
    for m in 0..3 {
        assert!(errs[0][m] > errs[1][m] && errs[1][m] > errs[2][m], "measure {m}: {errs:?}");
        assert!(errs[2][m] < 1e-5, "measure {m}: {errs:?}");
    }
}

#[test]
fn gradients_of_every_measure_match_finite_differences() {
    let n = 14;
    let f = vol(blobs(n, 0.0), n);
    let m0 = blobs(n, 0.05);
    let cases: Vec<Metric> = vec![
        metric("ssd", &[]),
        metric("ncc", &[]),
        metric("lncc", &[("window", OptionValue::Number(5.0))]),
        metric("lncc", &[("gaussian", OptionValue::Number(1.0))]),
        metric(
            "mi",
            &[
                ("bins", OptionValue::Number(16.0)),
                ("range_fixed", OptionValue::Range(-0.2, 1.3)),
                ("range_moving", OptionValue::Range(-0.2, 1.3)),
            ],
        ),
        metric(
            "nmi",
            &[
                ("bins", OptionValue::Number(16.0)),
                ("range_fixed", OptionValue::Range(-0.2, 1.3)),
                ("range_moving", OptionValue::Range(-0.2, 1.3)),
            ],
        ),
        metric(
            "cr",
            &[
                ("bins", OptionValue::Number(16.0)),
                ("range_fixed", OptionValue::Range(-0.2, 1.3)),
                ("range_moving", OptionValue::Range(-0.2, 1.3)),
            ],
        ),
        metric(
            "cr_patch",
            &[
                ("bins", OptionValue::Number(16.0)),
                ("patch", OptionValue::Number(6.0)),
                ("range_fixed", OptionValue::Range(-0.2, 1.3)),
                ("range_moving", OptionValue::Range(-0.2, 1.3)),
            ],
        ),
        metric(
            "mi_patch",
            &[
                ("bins", OptionValue::Number(16.0)),
                ("patch", OptionValue::Number(7.0)),
                ("range_fixed", OptionValue::Range(-0.2, 1.3)),
                ("range_moving", OptionValue::Range(-0.2, 1.3)),
            ],
        ),
    ];
    for met in cases {
        let mv = Var::from_tensor(&vol(m0.clone(), n)).unwrap();
        let g = met.loss(&f, &mv, None).unwrap().backward().unwrap();
        let grad = g.get(mv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gmax = grad.iter().fold(0f32, |a, b| a.max(b.abs())) as f64;
        assert!(gmax > 0.0, "{met}: zero gradient");
        for idx in [n * n * 7 + n * 6 + 5, n * n * 4 + n * 9 + 8, n * n * 10 + n * 3 + 2] {
            // A global measure moves by ~1e-6 for one voxel: steps of 0.01 keep f32 rounding small.
            let h = 1e-2f32;
            let eval = |d: f32| {
                let mut v = m0.clone();
                v[idx] += d;
                scalar(&met.loss(&f, &vol(v, n), None).unwrap())
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
            let tol = 0.05 * fd.abs() + 2e-3 * gmax;
            assert!(
                (fd - grad[idx] as f64).abs() < tol,
                "{met} voxel {idx}: fd {fd:.3e} vs autograd {:.3e}",
                grad[idx]
            );
        }
    }
}

#[test]
fn unknown_metric_and_option_names_get_suggestions() {
    let e = Metric::new("cr_patc").unwrap_err().to_string();
    assert!(e.contains("did you mean `cr_patch`"), "{e}");
    let mut m = Metric::new("mi").unwrap();
    let e = m.set("binz", OptionValue::Number(3.0)).unwrap_err().to_string();
    assert!(e.contains("did you mean `bins`"), "{e}");
    assert!(m.set("bins", OptionValue::Number(1.5)).is_err());
    assert_eq!(Metric::new("MSE").unwrap().name(), "ssd");
}

#[test]
fn regularizers_give_known_values() {
    // An oblique, left-handed grid (as avg152's LAS, rotated): world derivatives need the direction.
    let d = nalgebra::Rotation3::from_euler_angles(0.3, -0.2, 0.5).matrix()
        * nalgebra::Matrix3::from_diagonal(&nalgebra::Vector3::new(-1.0, 1.0, 1.0));
    let g = Grid::new([10, 9, 8], [2.0, 1.0, 0.5], [5.0, -3.0, 2.0], d).unwrap();
    let [nx, ny, nz] = g.shape();
    // A linear field u = A x (x in mm): constant gradient A, no curvature, det(I + A).
    let a = [[0.1, 0.02, 0.0], [0.0, -0.05, 0.03], [0.01, 0.0, 0.2]];
    let mut v = vec![0f32; 3 * nx * ny * nz];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let x = g.index_to_world([i as f64, j as f64, k as f64]);
                for c in 0..3 {
                    v[c * nx * ny * nz + (k * ny + j) * nx + i] =
                        (a[c][0] * x[0] + a[c][1] * x[1] + a[c][2] * x[2]) as f32;
                }
            }
        }
    }
    let u = Tensor::from_vec(v, (3, nz, ny, nx), &Device::Cpu).unwrap();
    let sp = g.spacing();
    let want: f64 = (0..3).map(|c| (0..3).map(|d| a[c][d] * a[c][d]).sum::<f64>()).sum::<f64>() / 3.0;
    assert!((scalar(&diffusion(&u, sp).unwrap()) - want).abs() < 1e-6);
    assert!(scalar(&bending_energy(&u, sp).unwrap()).abs() < 1e-6);
    let det = nalgebra::Matrix3::from_fn(|r, c| a[r][c] + if r == c { 1.0 } else { 0.0 }).determinant();
    let jd = jacobian_det(&u, &g).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(jd.iter().all(|d| (*d as f64 - det).abs() < 1e-5));
    assert_eq!(scalar(&folding(&u, &g).unwrap()), 0.0);
    // u = -2 x folds space (det = -1): the penalty is 1.
    let mut w = vec![0f32; 3 * nx * ny * nz];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let x = g.index_to_world([i as f64, j as f64, k as f64]);
                for c in 0..3 {
                    w[c * nx * ny * nz + (k * ny + j) * nx + i] = (-2.0 * x[c]) as f32;
                }
            }
        }
    }
    let uf = Tensor::from_vec(w, (3, nz, ny, nx), &Device::Cpu).unwrap();
    assert!((scalar(&folding(&uf, &g).unwrap()) - 1.0).abs() < 1e-5);
    // A quadratic field u_x = x^2 / 2 (world mm): its Hessian is diag(1, 0, 0).
    let mut q = vec![0f32; 3 * nx * ny * nz];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let x = g.index_to_world([i as f64, j as f64, k as f64]);
                q[(k * ny + j) * nx + i] = (0.5 * x[0] * x[0]) as f32;
            }
        }
    }
    let uq = Tensor::from_vec(q, (3, nz, ny, nx), &Device::Cpu).unwrap();
    // Bending energy is the squared Frobenius norm of the Hessian, invariant to the grid's rotation: 1.
    assert!((scalar(&bending_energy(&uq, sp).unwrap()) - 1.0).abs() < 1e-3);
    // Thin fields: a single slice has no z derivative; a single voxel has none at all.
    let thin = Grid::axis_aligned([6, 5, 1], [1.0; 3], [0.0; 3]).unwrap();
    let zero = Tensor::zeros((3, 1, 5, 6), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(scalar(&folding(&zero, &thin).unwrap()), 0.0);
    assert!(jacobian_det(&zero, &thin)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| *v == 1.0));
    let one = Tensor::zeros((3, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(scalar(&diffusion(&one, [1.0; 3]).unwrap()), 0.0);
}

/// Sweeps of a translation along each axis and a rotation about z, for T2 and PD against T1 (truth:
/// identity), every measure inside the avg152 brain mask: the optimum of each curve (argmax, argmin for
/// SSD) is tabulated and the curves are written as a PNG under target/test-output.
#[test]
fn multimodal_sweeps_peak_at_zero_for_mi_nmi_cr_but_not_ssd_ncc() {
    let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
    let g = t1.grid().clone();
    // Inside the brain, where T2 and PD contrast differs from T1's (the background would reward any
    // measure for aligning the head outline).
    let mask =
        regsh::image::ops::threshold(&load(common::data("avg152/brainmask.nii")).unwrap(), 0.5, f64::INFINITY).unwrap();
    let mask = mask.data().clone();
    let steps: Vec<f64> = (-4..=4).map(|s| s as f64 * 5.0).collect(); // mm / degrees
    let names = ["mi", "nmi", "cr", "cr_patch", "ssd", "ncc"];
    let mut table = Vec::new();
    let mut curves: Vec<(String, Vec<f64>)> = Vec::new();
    for modality in ["T2", "PD"] {
        let mov = load(common::data(&format!("avg152/avg152{modality}.nii"))).unwrap();
        let mets: Vec<Metric> = names.iter().map(|n| Metric::new(n).unwrap()).collect();
        for sweep in ["x", "y", "z", "rot_z"] {
            let mut vals = vec![Vec::new(); names.len()];
            for &s in &steps {
                let p = match sweep {
                    "x" => [s, 0.0, 0.0, 0.0, 0.0, 0.0],
                    "y" => [0.0, s, 0.0, 0.0, 0.0, 0.0],
                    "z" => [0.0, 0.0, s, 0.0, 0.0, 0.0],
                    _ => [0.0, 0.0, 0.0, 0.0, 0.0, s.to_radians()],
                };
                let t = Linear::from_params(LinearKind::Rigid, &p, g.centre()).unwrap();
                let w =
                    warp_tensor(mov.data(), mov.grid(), &t, &g, regsh::ops::SampleMode::Linear, Padding::Zero).unwrap();
                for (i, m) in mets.iter().enumerate() {
                    vals[i].push(m.value(t1.data(), &w, Some(&mask)).unwrap());
                }
            }
            for (i, name) in names.iter().enumerate() {
                let v = &vals[i];
                let best = if *name == "ssd" {
                    (0..v.len()).min_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
                } else {
                    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
                };
                table.push((modality, sweep, *name, steps[best]));
                curves.push((format!("{modality} {sweep} {name}"), v.clone()));
            }
        }
    }
    for (modality, sweep, name, best) in &table {
        eprintln!("{modality} {sweep:5} {name:8} best at {best:+}");
    }
    for (modality, sweep, name, best) in &table {
        if ["mi", "nmi", "cr", "cr_patch"].contains(name) {
            assert_eq!(*best, 0.0, "{name} on {modality} vs T1, sweep {sweep}, peaks at {best}");
        }
    }
    // SSD and NCC are the wrong tool for T2 vs T1: some sweep's optimum is away from zero.
    for name in ["ssd", "ncc"] {
        assert!(
            table.iter().any(|(m, _, n, b)| *m == "T2" && *n == name && *b != 0.0),
            "{name} peaks at zero on every T2 sweep"
        );
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&out).unwrap();
    plot_curves(&curves, &steps, &out.join("metric_sweeps.png"));
}

/// A small line plot: one panel per curve, each normalized to its own range, zero marked. Columns: mi,
/// nmi, cr, cr_patch, ssd, ncc; rows: T2 x, y, z, rot_z, then PD x, y, z, rot_z.
fn plot_curves(curves: &[(String, Vec<f64>)], steps: &[f64], path: &Path) {
    let (cols, pw, ph) = (6usize, 160u32, 90u32);
    let rows = curves.len().div_ceil(cols);
    let mut img = image::RgbImage::from_pixel(cols as u32 * pw, rows as u32 * ph, image::Rgb([255, 255, 255]));
    for (n, (_, v)) in curves.iter().enumerate() {
        let (ox, oy) = ((n % cols) as u32 * pw, (n / cols) as u32 * ph);
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        let px = |i: usize| ox + 10 + (i as f64 / (steps.len() - 1) as f64 * (pw - 20) as f64) as u32;
        let py = |x: f64| oy + ph - 10 - ((x - lo) / (hi - lo).max(1e-12) * (ph - 20) as f64) as u32;
        for y in oy + 5..oy + ph - 5 {
            img.put_pixel(px(steps.len() / 2), y, image::Rgb([200, 200, 200]));
        }
        for i in 0..v.len() - 1 {
            let (x0, y0, x1, y1) = (px(i) as f64, py(v[i]) as f64, px(i + 1) as f64, py(v[i + 1]) as f64);
            for t in 0..=100 {
                let t = t as f64 / 100.0;
                img.put_pixel((x0 + t * (x1 - x0)) as u32, (y0 + t * (y1 - y0)) as u32, image::Rgb([20, 60, 200]));
            }
        }
    }
    img.save(path).unwrap();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let n = 12;
    let a = vol(blobs(n, 0.0), n);
    let mut nan = blobs(n, 0.0);
    nan[5] = f32::NAN;
    let b = vol(nan, n);
    let empty = Tensor::zeros((n, n, n), DType::F32, &Device::Cpu).unwrap();
    for name in ["ssd", "ncc", "lncc", "mi", "nmi", "cr", "cr_patch", "mi_patch"] {
        let m = Metric::new(name).unwrap();
        let e = m.value(&a, &b, None).unwrap_err().to_string();
        assert!(e.contains("NaN or infinite"), "{name}: {e}");
        let e = m.value(&a, &a, Some(&empty)).unwrap_err().to_string();
        assert!(e.contains("mask is empty"), "{name}: {e}");
        let small = Tensor::zeros((n, n), DType::F32, &Device::Cpu).unwrap();
        assert!(m.value(&a, &small, None).is_err(), "{name}: shape mismatch accepted");
    }
    // Options that would need absurd memory are refused up front.
    let mut l = Metric::new("lncc").unwrap();
    assert!(l.set("gaussian", OptionValue::Number(1e12)).is_err());
    assert!(l.set("window", OptionValue::Number(1001.0)).is_err());
    let mut p = Metric::new("mi_patch").unwrap();
    p.set("bins", OptionValue::Number(1024.0)).unwrap();
    p.set("patch", OptionValue::Number(2.0)).unwrap();
    let e = p.value(&a, &a, None).unwrap_err().to_string();
    assert!(e.contains("too many"), "{e}");
}

#[test]
fn regularizer_gradients_match_finite_differences() {
    let d = nalgebra::Rotation3::from_euler_angles(0.1, 0.2, -0.3).matrix()
        * nalgebra::Matrix3::from_diagonal(&nalgebra::Vector3::new(-1.0, 1.0, 1.0));
    let g = Grid::new([7, 6, 5], [1.5, 1.0, 2.0], [0.0; 3], d).unwrap();
    let n = 3 * 7 * 6 * 5;
    // A smooth-ish field with some folding, so the folding penalty has a gradient too.
    let base: Vec<f32> = common::rand_vec(n, 77).iter().map(|v| (v - 0.5) * 6.0).collect();
    let sp = g.spacing();
    type Reg = Box<dyn Fn(&Tensor) -> Tensor>;
    let g2 = g.clone();
    let regs: Vec<(&str, Reg)> = vec![
        ("diffusion", Box::new(move |t: &Tensor| diffusion(t, sp).unwrap())),
        ("bending", Box::new(move |t: &Tensor| bending_energy(t, sp).unwrap())),
        ("folding", Box::new(move |t: &Tensor| folding(t, &g2).unwrap())),
    ];
    for (name, f) in regs {
        let v = Var::from_tensor(&Tensor::from_vec(base.clone(), (3, 5, 6, 7), &Device::Cpu).unwrap()).unwrap();
        let grads = f(v.as_tensor()).backward().unwrap();
        let gr = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(gr.iter().any(|x| *x != 0.0), "{name}: zero gradient");
        for idx in (0..n).step_by(37) {
            let h = 1e-2f32;
            let eval = |dlt: f32| {
                let mut b = base.clone();
                b[idx] += dlt;
                scalar(&f(&Tensor::from_vec(b, (3, 5, 6, 7), &Device::Cpu).unwrap()))
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
            // relu kinks in the folding penalty: allow a looser match there.
            let tol = if name == "folding" { 0.2 * fd.abs() + 1e-3 } else { 0.02 * fd.abs() + 1e-4 };
            assert!((fd - gr[idx] as f64).abs() < tol, "{name} entry {idx}: fd {fd} vs {}", gr[idx]);
        }
    }
}
