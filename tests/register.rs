//! Registration on the real images with known affines and a known smooth deformation: the recovered
//! transform is compared with the truth by the mean displacement error over the brain, the Dice of
//! tissue maps / labels, and (deformable) the Jacobian determinant.

mod common;

use regsh::image::io::load;
use regsh::image::ops::threshold;
use regsh::image::resample::{resample, Interpolation, Padding};
use regsh::image::Image;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use regsh::image::{DataType, Grid};
use regsh::metrics::evaluation::{dice, jacobian_stats, mean_displacement_error};
use regsh::metrics::Metric;
use regsh::optim::init::Init;
use regsh::optim::{Criterion, Schedule, Stop};
use regsh::pipeline::recipes::{default_lr, register_linear, stages};
use regsh::spatial::{warp, Composite, Ddf, Linear, LinearKind, Transform, WarpInterpolation};

/// A random affine within the issue's bounds (rotations up to 15 degrees, translations up to 15 mm,
/// scales 0.9-1.1, shears up to 0.05), from a seeded sequence.
fn random_affine(seed: u64, centre: [f64; 3]) -> Linear {
    let r = common::rand_vec(12, seed);
    let u = |i: usize| 2.0 * r[i] as f64 - 1.0;
    let p = [
        15.0 * u(0),
        15.0 * u(1),
        15.0 * u(2),
        15f64.to_radians() * u(3),
        15f64.to_radians() * u(4),
        15f64.to_radians() * u(5),
        1.0 + 0.1 * u(6),
        1.0 + 0.1 * u(7),
        1.0 + 0.1 * u(8),
        0.05 * u(9),
        0.05 * u(10),
        0.05 * u(11),
    ];
    Linear::from_params(LinearKind::Affine, &p, centre).unwrap()
}

/// ICBM 2009a T1 at 2 mm, its brain mask (GM + WM probability above 0.5), and its GM and WM maps
/// (probability above 0.5, as labels 1 / 2 of one map) at 2 mm.
fn icbm_2mm() -> (Image, Image, Image) {
    let t1 = load(common::data("icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    let g = t1.grid().downsampled(2.0).unwrap();
    let gm = load(common::data("icbm152_2009a/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    let wm = load(common::data("icbm152_2009a/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).unwrap();
    let brain = gm.with_data((gm.data() + wm.data()).unwrap()).unwrap();
    let f = regsh::image::smooth::smooth(&t1, [0.85; 3], regsh::image::smooth::SigmaUnit::Voxels).unwrap();
    let fixed = resample(&f, &g, Interpolation::Linear, Padding::Zero).unwrap();
    let mask =
        threshold(&resample(&brain, &g, Interpolation::Linear, Padding::Zero).unwrap(), 127.5, f64::INFINITY).unwrap();
    let gm2 =
        threshold(&resample(&gm, &g, Interpolation::Linear, Padding::Zero).unwrap(), 127.5, f64::INFINITY).unwrap();
    let wm2 =
        threshold(&resample(&wm, &g, Interpolation::Linear, Padding::Zero).unwrap(), 127.5, f64::INFINITY).unwrap();
    let tissue = gm2.with_data((gm2.data() + (wm2.data() * 2.0).unwrap()).unwrap()).unwrap();
    (fixed, mask, tissue)
}

/// Mean Dice of GM and WM between the fixed tissue map and the moving one pulled back through `t`
/// (each tissue's indicator warped linearly, the largest wins).
fn tissue_dice(fixed_tissue: &Image, moving_tissue: &Image, t: &dyn Transform) -> f64 {
    let w = warp(moving_tissue, t, fixed_tissue.grid(), WarpInterpolation::LabelLinear, Padding::Zero).unwrap();
    dice(fixed_tissue, &w, Some(&[1, 2])).unwrap().mean
}

#[test]
fn known_affines_are_recovered_mono_modal() {
    // Ten random affines; each moving image (T1 and its tissue map) is the fixed one pulled back
    // through the inverse, so the truth is known exactly.
    let (fixed, mask, tissue) = icbm_2mm();
    let g = fixed.grid().clone();
    let metric = Metric::new("ncc").unwrap();
    let mut schedule = Schedule::new(4, &[100, 60, 40, 40], 1.0).unwrap();
    schedule.lr = default_lr(&schedule.factors);
    let mut worst: (f64, f64) = (0.0, 0.0);
    for seed in 1u64..=10 {
        let truth = random_affine(seed, g.centre());
        // moving(T(x)) = fixed(x): the moving image is the fixed one pulled back through T^-1.
        let inv = truth.inverse().unwrap();
        let moving = warp(&fixed, inv.as_ref(), &g, WarpInterpolation::Linear, Padding::Zero).unwrap();
        let moving_tissue = warp(&tissue, inv.as_ref(), &g, WarpInterpolation::LabelLinear, Padding::Zero).unwrap();
        let before =
            mean_displacement_error(&Linear::identity(LinearKind::Affine, g.centre()), &truth, &g, Some(&mask))
                .unwrap();
        let t0 = std::time::Instant::now();
        let (est, _) =
            register_linear(&fixed, &moving, &stages("affine").unwrap(), &metric, &schedule, Init::Moments, None)
                .unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let err = mean_displacement_error(&est, &truth, &g, Some(&mask)).unwrap();
        let (d_est, d_true) =
            (tissue_dice(&tissue, &moving_tissue, &est), tissue_dice(&tissue, &moving_tissue, &truth));
        eprintln!(
            "seed {seed:2}: error {before:5.2} mm -> {err:.3} mm, GM/WM Dice {d_est:.4} (true transform {d_true:.4}) \
             in {secs:.1} s"
        );
        // Adam on random points alone stops at about 0.2 mm (its noise); the L-BFGS polish of the
        // default recipe reaches about 0.015 mm (ANTs' `Affine`: about 0.05 mm on this set-up).
        assert!(err < 0.05, "seed {seed}: error {err} mm");
        assert!(d_est > d_true - 0.001, "seed {seed}: Dice {d_est} vs {d_true} with the true transform");
        worst = (worst.0.max(err), worst.1.max(d_true - d_est));
    }
    eprintln!("worst error {:.3} mm, worst Dice gap {:.4}", worst.0, worst.1);
}

/// Rigid then affine with the measure `name`; `cr_patch` refines the result of global `cr` (as seed 000
/// refines a first estimate with ISO on CR-patch: patches alone have a narrow capture range).
fn register_multi(fixed: &Image, moving: &Image, name: &str, schedule: &Schedule) -> Linear {
    let affine = stages("affine").unwrap();
    let global = if name == "cr_patch" { "cr" } else { name };
    let met = regsh::metrics::Metric::parse(global).unwrap();
    let (est, _) = register_linear(fixed, moving, &affine, &met, schedule, Init::Moments, None).unwrap();
    if name != "cr_patch" {
        return est;
    }
    let mut fine = Schedule::new(2, &[40, 30], 1.0).unwrap();
    fine.lr = default_lr(&fine.factors);
    let opts = regsh::optim::IsoOptions {
        schedule: fine,
        metric: regsh::metrics::Metric::parse("cr_patch").unwrap(),
        fixed_mask: None,
        convergence: (10, 1e-5),
        cancel: None,
        sampling: regsh::optim::Sampling::Jittered,
        seed: 0,
        optimizer: regsh::optim::IsoOptimizer::Adam,
        polish: None,
    };
    regsh::optim::iso_linear(fixed, moving, &est, &opts).unwrap().transform
}

#[test]
fn known_affines_are_recovered_multi_modal() {
    // avg152 T2 / PD (moving) against T1 (fixed), ten random affines, four measures. The templates'
    // own optimum is not the identity: every measure, and SimpleITK's Mattes MI from the identity
    // (0.62 mm PD, 0.89 mm T2), put T2 / PD about 1 % longer in z than T1 (0.5-0.7 mm over the brain).
    // So the recovery of each known affine is judged against `truth o T0`, with T0 the registration of
    // the unmoved pair by the same measure (what the method can be asked to recover), and the moving
    // image is the template moved by the affine on a grid 16 voxels wider on every side, so that no part
    // of the head leaves it: the templates fill their field of view, and a known affine that pushes part
    // of the head out of the moving grid changes what the measure sees, hence where its optimum lies
    // (on the template's own grid the mean error against `truth o T0` is 0.37-0.46 mm with MI and NMI
    // but 0.56-0.66 mm with CR and CR-patch, whose optimum moves with the cropped part: see the README).
    // The error against the identity-based truth is reported too.
    let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
    let g = t1.grid().clone();
    let mask = threshold(&load(common::data("avg152/brainmask.nii")).unwrap(), 0.5, f64::INFINITY).unwrap();
    let mut schedule = Schedule::new(3, &[100, 60, 40], 1.0).unwrap();
    schedule.lr = default_lr(&schedule.factors);
    let mut means = Vec::new();
    let mut table = vec![
        "| moving | measure | relative error mean / max (mm) | absolute error mean / max (mm) | s per case |"
            .to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    let [nx, ny, nz] = g.shape();
    let wide = g.sub_grid([-16; 3], [nx + 32, ny + 32, nz + 32]).unwrap();
    for modality in ["T2", "PD"] {
        let template = load(common::data(&format!("avg152/avg152{modality}.nii"))).unwrap();
        // The unmoved template on the wide grid (its voxels copied, zero around them).
        let identity = Linear::identity(LinearKind::Affine, g.centre());
        let raw = warp(&template, &identity, &wide, WarpInterpolation::Linear, Padding::Zero).unwrap();
        for name in ["mi", "nmi", "cr", "cr_patch"] {
            let run = |moving: &Image| -> Linear { register_multi(&t1, moving, name, &schedule) };
            let t0 = run(&raw);
            let (mut rel, mut abs, mut secs) = (Vec::new(), Vec::new(), 0.0);
            for seed in 1u64..=10 {
                let truth = random_affine(100 + seed, g.centre());
                let moving =
                    warp(&template, truth.inverse().unwrap().as_ref(), &wide, WarpInterpolation::Linear, Padding::Zero)
                        .unwrap();
                let start = std::time::Instant::now();
                let est = run(&moving);
                secs += start.elapsed().as_secs_f64();
                let expected = Composite::new(vec![Arc::new(t0.clone()), Arc::new(truth.clone())]);
                let r = mean_displacement_error(&est, &expected, &g, Some(&mask)).unwrap();
                let a = mean_displacement_error(&est, &truth, &g, Some(&mask)).unwrap();
                eprintln!("{modality} {name} seed {seed}: relative {r:.3} mm, absolute {a:.3} mm");
                // Every case within 0.5 mm (the issue asks it of the mean; measured: 0.07-0.29 mm in the worst
                // case of each measure).
                assert!(r < 0.5, "{modality} with {name}, seed {seed}: error {r} mm against truth o T0");
                rel.push(r);
                abs.push(a);
            }
            let stat = |v: &[f64]| (v.iter().sum::<f64>() / v.len() as f64, v.iter().copied().fold(0.0, f64::max));
            let ((rm, rx), (am, ax)) = (stat(&rel), stat(&abs));
            table.push(format!("| {modality} | {name} | {rm:.3} / {rx:.3} | {am:.3} / {ax:.3} | {:.1} |", secs / 10.0));
            means.push((format!("{modality} {name}"), rm, am));
        }
    }
    eprintln!("{}", table.join("\n"));
    for (case, rm, am) in means {
        // Measured means: 0.07-0.25 mm against `truth o T0`, 0.44-0.92 mm against the truth (T0's own offset).
        assert!(rm < 0.35, "{case}: mean error {rm} mm over the ten affines (against truth o T0)");
        assert!(am < 1.1, "{case}: mean error {am} mm over the ten affines (against the truth)");
    }
}

/// A smooth random displacement field on `g`: white noise smoothed with a 10 mm Gaussian, scaled so
/// that its largest vector inside `mask` is 5 mm (the smoothing renormalizes at the border, where fewer
/// samples are averaged, so the border holds the largest vectors of the whole grid).
fn smooth_random_field(g: &Grid, mask: &Image, seed: u64) -> Ddf {
    let [z, y, x] = g.zyx();
    let n: Vec<f32> = common::rand_vec(3 * z * y * x, seed).iter().map(|v| 2.0 * v - 1.0).collect();
    let noise =
        Image::new(Tensor::from_vec(n, (3, z, y, x), &Device::Cpu).unwrap(), g.clone(), DataType::Float32).unwrap();
    let sm = regsh::image::smooth::smooth(&noise, [10.0; 3], regsh::image::smooth::SigmaUnit::Mm).unwrap();
    let norm = sm.data().sqr().unwrap().sum_keepdim(0).unwrap().sqrt().unwrap().mul(mask.data()).unwrap();
    let mx = norm.max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    Ddf::new((sm.data() * (5.0 / mx)).unwrap(), g.clone()).unwrap()
}

#[test]
fn known_smooth_deformation_is_recovered() {
    // Colin27 (brain) at 2 mm moved by a known smooth field; `syn` (affine, then the greedy field) with
    // LNCC brings the AAL labels close to where the true inverse puts them, without folding.
    let ch2 = load(common::data("colin27/ch2bet.nii.gz")).unwrap();
    let aal = load(common::data("colin27/aal.nii.gz")).unwrap();
    let g = ch2.grid().downsampled(2.0).unwrap();
    let smoothed = regsh::image::smooth::smooth(&ch2, [0.85; 3], regsh::image::smooth::SigmaUnit::Voxels).unwrap();
    let fixed = resample(&smoothed, &g, Interpolation::Linear, Padding::Zero).unwrap();
    let labels = resample(&aal, &g, Interpolation::Nearest, Padding::Zero).unwrap();
    let brain = threshold(&labels, 0.5, f64::INFINITY).unwrap();
    let truth = smooth_random_field(&g, &brain, 7);
    // moving(x) = fixed(x + w(x)); the registration must find (approximately) the inverse of x + w(x).
    let moving = warp(&fixed, &truth, &g, WarpInterpolation::Linear, Padding::Zero).unwrap();
    let moving_labels = warp(&labels, &truth, &g, WarpInterpolation::Nearest, Padding::Zero).unwrap();
    let inv = truth.inverse().unwrap();
    let id = Linear::identity(LinearKind::Affine, g.centre());
    let mean_disp = mean_displacement_error(&id, &truth, &g, Some(&brain)).unwrap();
    let dice_of = |t: &dyn Transform| {
        let w = warp(&moving_labels, t, &g, WarpInterpolation::Nearest, Padding::Zero).unwrap();
        dice(&labels, &w, None).unwrap().mean
    };
    let (before, ideal) = (dice_of(&id), dice_of(inv.as_ref()));
    let opts = regsh::pipeline::RegisterOptions {
        recipe: "syn".into(),
        metric: Metric::new("lncc").unwrap(),
        linear_metric: Some(Metric::new("ncc").unwrap()),
        schedule: regsh::pipeline::recipes::linear_schedule(3, Some(&[60, 40, 20]), None).unwrap(),
        init: Init::Identity,
        control: regsh::pipeline::RunControl { seed: 1, ..Default::default() },
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let reg = regsh::pipeline::register(&moving, &fixed, &opts).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let t = reg.transform();
    let after = dice_of(t.as_ref());
    let err = mean_displacement_error(t.as_ref(), inv.as_ref(), &g, Some(&brain)).unwrap();
    let det = regsh::spatial::jacobian_determinant(t.as_ref(), &g).unwrap();
    let js = jacobian_stats(&det, Some(&brain)).unwrap();
    eprintln!(
        "smooth field (max 5 mm, mean {mean_disp:.2} mm over the brain): AAL Dice {before:.4} -> {after:.4} \
         (true inverse {ideal:.4}), error {err:.3} mm, det <= 0: {:.5}, min det {:.3}, {secs:.1} s",
        js.fraction_nonpositive, js.min
    );
    assert!(after > before + 0.5 * (ideal - before), "Dice {after} not past halfway from {before} to {ideal}");
    assert!(after > ideal - 0.04, "Dice {after} vs {ideal} with the true inverse");
    assert!(err < 0.5 * mean_disp, "error {err} mm of {mean_disp} mm");
    assert!(js.fraction_nonpositive < 0.001, "folding: {}", js.fraction_nonpositive);
}

#[test]
fn register_command_writes_outputs_that_apply_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = common::data("avg152/avg152T1.nii");
    let t2 = common::data("avg152/avg152T2.nii");
    let prefix = dir.path().join("t2_to_t1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regsh"))
        .args(["register", "--fixed", t1.to_str().unwrap(), "--moving", t2.to_str().unwrap(), "--transform", "rigid"])
        .args(["--metric", "mi", "--scales", "2", "--iterations", "20,10", "--out", prefix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("t2_to_t1_report.json")).unwrap()).unwrap();
    assert_eq!(report["stages"][0]["levels"].as_array().unwrap().len(), 2);
    assert!(report["stages"][0]["levels"][1]["iterations"].as_u64().unwrap() > 0);
    // T2 and T1 are aligned already: the rigid result stays within a voxel of the identity.
    let t = regsh::spatial::io::load_transform(dir.path().join("t2_to_t1_affine.tfm").to_str().unwrap()).unwrap();
    let g = load(&t1).unwrap().grid().clone();
    let id = Linear::identity(LinearKind::Rigid, g.centre());
    assert!(mean_displacement_error(t.as_ref(), &id, &g, None).unwrap() < 1.0);
    // `regsh apply` with the written transform reproduces the warped image.
    let again = dir.path().join("again.nii.gz");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regsh"))
        .args(["apply", "-i", t2.to_str().unwrap(), "-r", t1.to_str().unwrap(), "-t"])
        .arg(dir.path().join("t2_to_t1_affine.tfm"))
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (
        load(&again).unwrap().to_vec_f32().unwrap(),
        load(dir.path().join("t2_to_t1_warped.nii.gz")).unwrap().to_vec_f32().unwrap(),
    );
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-4, "apply differs from the registration's warped image by {worst}");
}

#[test]
fn deformable_register_command_writes_a_field_that_apply_reproduces() {
    // `regsh register --transform syn` writes PREFIX_warp.nii.gz (ITK / ANTs displacement) and
    // PREFIX_affine.tfm; `regsh apply -t warp -t affine` reproduces PREFIX_warped.nii.gz.
    let dir = tempfile::tempdir().unwrap();
    let t1 = common::data("avg152/avg152T1.nii");
    let t2 = common::data("avg152/avg152T2.nii");
    let prefix = dir.path().join("syn");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regsh"))
        .args(["register", "--fixed", t1.to_str().unwrap(), "--moving", t2.to_str().unwrap(), "--transform", "syn"])
        .args(["--metric", "mi", "--scales", "2", "--iterations", "20,10", "--dense-iterations", "10,5"])
        .args(["--seed", "3", "--out", prefix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("syn_report.json")).unwrap()).unwrap();
    let stages: Vec<&str> =
        report["stages"].as_array().unwrap().iter().map(|s| s["transform"].as_str().unwrap()).collect();
    assert_eq!(stages, ["rigid", "affine", "syn"]);
    assert_eq!(report["seed"].as_u64(), Some(3));
    assert_eq!(report["stages"][2]["levels"].as_array().unwrap().len(), 2);
    let field = dir.path().join("syn_warp.nii.gz");
    let again = dir.path().join("again.nii.gz");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regsh"))
        .args(["apply", "-i", t2.to_str().unwrap(), "-r", t1.to_str().unwrap(), "-t"])
        .arg(&field)
        .arg("-t")
        .arg(dir.path().join("syn_affine.tfm"))
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (
        load(&again).unwrap().to_vec_f32().unwrap(),
        load(dir.path().join("syn_warped.nii.gz")).unwrap().to_vec_f32().unwrap(),
    );
    // The field file holds the field at float32 on the fixed grid: equal to float rounding.
    let range = b.iter().copied().fold(0.0f32, f32::max);
    let mad = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    assert!(mad < 1e-4 * range, "apply differs from the registration's warped image by {mad} on average");
    // The dense stage moved something: the field is not zero.
    let u = load(&field).unwrap();
    assert!(u.data().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.05);
}

#[test]
fn fused_greedy_levels_match_the_tensor_path() {
    // The fused greedy level (field warp with its derivative, fused LNCC or autograd on the warped image,
    // smoothing and the normalized Adam step on plain volumes) against its slow twin, the tensor path with
    // autograd over the warp: the same iterations up to rounding, on Colin27 at 4 mm moved by a known
    // smooth field, with LNCC and a mask, and with MI plus diffusion.
    use regsh::optim::{iso_dense, DenseModel, DenseOptions, Regularizer};
    let ch2 = load(common::data("colin27/ch2bet.nii.gz")).unwrap();
    let g = ch2.grid().downsampled(4.0).unwrap();
    let smoothed = regsh::image::smooth::smooth(&ch2, [1.7; 3], regsh::image::smooth::SigmaUnit::Voxels).unwrap();
    let fixed = resample(&smoothed, &g, Interpolation::Linear, Padding::Zero).unwrap();
    let brain = threshold(&fixed, 1.0, f64::INFINITY).unwrap();
    let truth = smooth_random_field(&g, &brain, 11);
    let moving = warp(&fixed, &truth, &g, WarpInterpolation::Linear, Padding::Zero).unwrap();
    let id = Linear::identity(LinearKind::Affine, g.centre());
    let diffusion = Some(Regularizer::Diffusion(0.5));
    let cases =
        [("lncc", None, true), ("lncc", diffusion.clone(), false), ("mi", None, false), ("mi", diffusion, false)];
    for (name, reg, masked) in cases {
        let mut opts = DenseOptions::defaults(DenseModel::Greedy, Metric::new(name).unwrap(), &g).unwrap();
        opts.schedule = Schedule::new(2, &[8, 6], 1.0).unwrap();
        opts.schedule.lr = vec![2.0, 1.0];
        // A short plateau window and cool-down, so that the two paths must also agree on where a level
        // starts to cool down and stops.
        opts.plateau = Some(regsh::optim::Plateau { window: 2, fraction: 0.3, cooldown: 2 });
        opts.regularizer = reg.clone();
        opts.fixed_mask = masked.then(|| brain.clone());
        let fast = iso_dense(&fixed, &moving, &id, DenseModel::Greedy, &opts).unwrap();
        opts.fused = false;
        let slow = iso_dense(&fixed, &moving, &id, DenseModel::Greedy, &opts).unwrap();
        assert_eq!(fast.levels.len(), 2);
        for (a, b) in fast.levels.iter().zip(&slow.levels) {
            assert_eq!(a.losses.len(), b.losses.len(), "{name}: iterations");
            for (x, y) in a.losses.iter().zip(&b.losses) {
                assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{name}: loss {x} vs tensor path {y}");
            }
        }
        let (fa, sa) = (fast.field.field(), slow.field.field());
        let mean = (fa - sa).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        let moved = fast.field.field().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let diff = (fa - sa).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        eprintln!("{name} {reg:?}: field up to {moved:.3} mm, fused vs tensor path {diff:.2e} mm (mean {mean:.2e})");
        assert!(moved > 1.0, "{name}: the field moved ({moved} mm)");
        // Adam's direction m / sqrt(v) is scale-free, so rounding in the regularizer's tiny background
        // gradients moves a few voxels by a full step, which the field smoothing (up to 2.2 voxels after
        // a level's first step) spreads: up to about 0.07 mm here, a mean of 5e-4 mm (1e-5 mm at most
        // without a regularizer).
        let (max_bound, mean_bound) = if reg.is_some() { (1e-1, 1e-3) } else { (1e-4, 1e-5) };
        assert!(
            diff < max_bound && mean < mean_bound,
            "{name} {reg:?}: fused and tensor fields differ by {diff} mm (mean {mean} mm)"
        );
        // Both paths stop where the other does, and the plateau rule's cool-down ran in at least one level.
        let stops = |r: &regsh::optim::DenseResult| r.levels.iter().map(|l| l.stop).collect::<Vec<_>>();
        assert_eq!(stops(&fast), stops(&slow), "{name}: stop reasons");
        assert!(stops(&fast).contains(&Stop::Converged(Criterion::Plateau)), "{name}: {:?}", stops(&fast));
        let l0 = &fast.levels[0].losses;
        assert!(l0[l0.len() - 1] < l0[0], "{name}: the first level's loss falls ({} -> {})", l0[0], l0[l0.len() - 1]);
    }
}

#[test]
fn a_linear_recipe_uses_a_local_metric_as_given_and_a_dense_one_aligns_with_mi_first() {
    // `--transform rigid --metric lncc` runs LNCC in the rigid stage (as ANTs' `-t Rigid -m CC`); with
    // `syn` the linear stages before the field use MI unless `--linear-metric` names another.
    let dir = tempfile::tempdir().unwrap();
    let t1 = common::data("avg152/avg152T1.nii");
    let run = |transform: &str, extra: &[&str]| -> serde_json::Value {
        let prefix = dir.path().join(transform);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_regsh"))
            .args(["register", "--fixed", t1.to_str().unwrap(), "--moving", t1.to_str().unwrap()])
            .args(["--transform", transform, "--metric", "lncc", "--scales", "1", "--iterations", "2"])
            .args(["--polish", "0", "--dense-iterations", "1", "--out", prefix.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report = dir.path().join(format!("{transform}_report.json"));
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
    };
    let name = |r: &serde_json::Value| r["linear_metric"].as_str().unwrap().to_string();
    let rigid = name(&run("rigid", &[]));
    assert!(rigid.starts_with("lncc"), "rigid: {rigid}");
    assert!(name(&run("syn", &[])).starts_with("mi"));
    assert!(name(&run("affine", &["--linear-metric", "ncc"])).starts_with("ncc"));
}

#[test]
fn a_small_fixed_mask_survives_coarse_levels_and_a_mask_off_the_image_is_an_error() {
    use regsh::optim::iso::level_mask;
    let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
    let g = t1.grid().clone();
    let [z, y, x] = g.zyx();
    // A 3x3x3-voxel (6 mm) cube off the coarse grid's sample positions.
    let mut v = vec![0f32; z * y * x];
    for k in 40..43 {
        for j in 51..54 {
            for i in 45..48 {
                v[(k * y + j) * x + i] = 1.0;
            }
        }
    }
    let mask =
        Image::new(Tensor::from_vec(v, (1, z, y, x), &Device::Cpu).unwrap(), g.clone(), DataType::Float32).unwrap();
    let coarse = g.downsampled(8.0).unwrap();
    let count = |t: &Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap();
    let near = resample(&mask, &coarse, Interpolation::Nearest, Padding::Zero).unwrap();
    assert_eq!(count(near.data()), 0.0, "nearest resampling loses the cube at factor 8 (the case under test)");
    let m = level_mask(&mask, &coarse).unwrap();
    assert!(count(&m) >= 1.0 && count(&m) <= 8.0, "the level keeps the voxels around the cube: {}", count(&m));
    // At full resolution the mask is itself.
    assert_eq!(count(&level_mask(&mask, &g).unwrap()), 27.0);
    // A mask whose grid lies a metre away: a clear error, not an empty measure.
    let far = Grid::new(g.shape(), g.spacing(), [1000.0, 1000.0, 1000.0], g.direction()).unwrap();
    let off = Image::new(mask.data().clone(), far, DataType::Float32).unwrap();
    let e = level_mask(&off, &coarse).unwrap_err().to_string();
    assert!(e.contains("outside the fixed image"), "{e}");
}

#[test]
fn cr_patch_on_sample_points_recovers_a_copy_and_known_rigid_motions() {
    // CR-patch on the fused sampled path (`iso(cr_patch, points=20000, polish=50000)`: random points
    // grouped by patch, Adam over five levels, then the L-BFGS polish): ICBM 2009a T1 at 2 mm registered onto an
    // exact copy of itself (on a grid 16 voxels wider), and onto itself moved by known rigid motions. On
    // the image's global Parzen bins the copy ended at a 1 % shrink (0.54 mm); on each patch's own range
    // 0.004 mm (measured here; the rigid motions 0.05-0.06 mm).
    let (fixed, mask, _) = icbm_2mm();
    let g = fixed.grid().clone();
    let [nx, ny, nz] = g.shape();
    let wide = g.sub_grid([-16; 3], [nx + 32, ny + 32, nz + 32]).unwrap();
    let metric = Metric::parse("cr_patch").unwrap();
    let mut schedule = Schedule::new(5, &[100, 100, 100, 60, 40], 1.0).unwrap();
    schedule.lr = default_lr(&schedule.factors);
    let opts = regsh::optim::IsoOptions {
        schedule,
        metric: metric.clone(),
        fixed_mask: None,
        convergence: (10, 1e-5),
        cancel: None,
        sampling: regsh::optim::Sampling::Random(regsh::optim::iso::DEFAULT_PATCH_POINTS),
        seed: 0,
        optimizer: regsh::optim::IsoOptimizer::Adam,
        polish: Some(regsh::optim::Polish::default()),
    };
    let deg = 1f64.to_radians();
    for (case, p, tol) in [
        ("copy", [0.0; 6], 0.02),
        ("rigid 1", [8.0, -6.0, 4.0, 6.0 * deg, -4.0 * deg, 5.0 * deg], 0.2),
        ("rigid 2", [-5.0, 9.0, -7.0, -7.0 * deg, 5.0 * deg, 3.0 * deg], 0.2),
    ] {
        let truth = Linear::from_params(LinearKind::Rigid, &p, g.centre()).unwrap();
        let moving =
            warp(&fixed, truth.inverse().unwrap().as_ref(), &wide, WarpInterpolation::Linear, Padding::Zero).unwrap();
        let init = regsh::optim::init::initial_transform(LinearKind::Affine, &fixed, &moving, Init::Moments).unwrap();
        let t0 = std::time::Instant::now();
        let r = regsh::optim::iso_linear(&fixed, &moving, &init, &opts).unwrap();
        let err = mean_displacement_error(&r.transform, &truth, &g, Some(&mask)).unwrap();
        eprintln!("cr_patch, {case}: error {err:.3} mm in {:.1} s", t0.elapsed().as_secs_f64());
        assert!(err < tol, "cr_patch, {case}: error {err} mm (at most {tol})");
    }
}

#[test]
fn rotation_search_recovers_a_tilted_full_head_that_the_moments_start_misses() {
    // Colin27's full head (ch2, 1 mm, skull and neck) moved by a rigid motion of 16, 29 and -21 degrees
    // about x, y and z, registered (affine, Parzen MI, the default recipe) onto ICBM 2009a's T1 at 2 mm:
    // from the centres of mass alone gradient descent settles in a wrong pose (brain-mask Dice 0.673 when
    // measured); the rotation search (`--init search`) starts it in the right basin (0.930, as unmoved).
    let (fixed, mask, _) = icbm_2mm();
    let ch2 = load(common::data("colin27/ch2.nii.gz")).unwrap();
    let bet = threshold(&load(common::data("colin27/ch2bet.nii.gz")).unwrap(), 0.5, f64::INFINITY).unwrap();
    let p = [-2.47, 1.68, 3.61, 0.2736, 0.5115, -0.3700];
    let motion = Linear::from_params(LinearKind::Rigid, &p, ch2.grid().centre()).unwrap();
    let head = warp(&ch2, &motion, ch2.grid(), WarpInterpolation::Linear, Padding::Zero).unwrap();
    let brain = warp(&bet, &motion, ch2.grid(), WarpInterpolation::Nearest, Padding::Zero).unwrap();
    let brain_dice = |init: Init| -> f64 {
        let opts = regsh::pipeline::RegisterOptions { recipe: "affine".into(), init, ..Default::default() };
        let t0 = std::time::Instant::now();
        let r = regsh::pipeline::register(&head, &fixed, &opts).unwrap();
        let w = warp(&brain, r.transform().as_ref(), fixed.grid(), WarpInterpolation::Nearest, Padding::Zero).unwrap();
        let d = dice(&mask, &w, Some(&[1])).unwrap().mean;
        eprintln!("init {init:?}: brain-mask Dice {d:.4} in {:.1} s", t0.elapsed().as_secs_f64());
        d
    };
    let (moments, search) = (brain_dice(Init::Moments), brain_dice(Init::Search));
    assert!(search > 0.92, "the search's brain-mask Dice {search} (moments alone: {moments})");
    assert!(search >= moments - 0.002, "the search {search} against moments alone {moments}");
}
