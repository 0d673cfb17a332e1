//! Seed 001 at reduced scale: a VoxelMorph-style U-Net trained without supervision (similarity of the
//! warped pair + diffusion) on smooth random deformations of real brains, scored on held-out
//! deformations (other seeds) against the classical `syn` recipe on the same pairs.
//!
//! Run with `--nocapture` to see the tables (Dice of the labels before / after, SSIM, PSNR, MI, folding
//! fraction, displacement error against the truth, seconds per pair). The tests run one at a time (a
//! lock), so each one's timings are its own. About 3 minutes on 2 idle cores.

mod common;

use std::sync::Mutex;
use std::time::Instant;

use candle_core::{Device, Tensor};
use regsh::image::io::load;
use regsh::image::ops::{bounding_box, crop, normalize, threshold, Normalization};
use regsh::image::resample::{resample, Interpolation, Padding};
use regsh::image::smooth::{smooth, SigmaUnit};
use regsh::image::{Grid, Image};
use regsh::metrics::evaluation::{dice, jacobian_stats, mean_displacement_error, psnr, ssim};
use regsh::metrics::{Metric, OptionValue};
use regsh::nn::{UNet, UNetConfig};
use regsh::optim::Regularizer;
use regsh::spatial::{jacobian_determinant, warp, Linear, LinearKind, Transform, WarpInterpolation};
use regsh::train::{
    train, Deformation, IntensityAugmentation, Network, Pair, PairSource, SyntheticPairs, TrainOptions,
};

/// The tests of this file run one at a time, so their timings are their own.
static SERIAL: Mutex<()> = Mutex::new(());

/// The network grid (x, y, z voxels) over the brain's bounding box: about 3.5-3.9 mm voxels.
const SHAPE: [usize; 3] = [40, 48, 40];
/// Training steps (batch 1, a fresh synthetic pair each) of the two seed-001 networks.
const STEPS: usize = 300;
/// Held-out pairs (seed 1000 onwards; training uses seed 1).
const HELD_OUT: usize = 3;

/// The grid of `mask`'s bounding box (plus `margin` voxels) sampled with `shape` (x, y, z) voxels.
fn brain_grid(mask: &Image, margin: usize, shape: [usize; 3]) -> Grid {
    let (start, size) = bounding_box(mask, margin).unwrap().expect("a non-empty mask");
    crop(mask, start, size).unwrap().grid().with_shape(shape).unwrap()
}

/// `image` smoothed for `grid`'s spacing (0.4 of the downsampling factor, in voxels) and resampled
/// onto it.
fn onto(image: &Image, grid: &Grid) -> Image {
    let f = grid.spacing()[0] / image.grid().spacing()[0];
    let s = smooth(image, [0.4 * f; 3], SigmaUnit::Voxels).unwrap();
    resample(&s, grid, Interpolation::Linear, Padding::Zero).unwrap()
}

/// `im` mapped to [0, 1] by its 1st-99th percentiles (as the network sees it).
fn unit(im: &Image) -> Image {
    normalize(im, Normalization::Percentile { lo: 1.0, hi: 99.0 }, None).unwrap()
}

/// One registration problem: a fixed image with labels, moving images aligned with it, the loss and the
/// random deformations.
struct Task {
    name: &'static str,
    fixed: Image,
    moving: Vec<Image>,
    labels: Image,
    /// The network's similarity measure.
    metric: Metric,
    regularizer: Regularizer,
    /// The `syn` recipe's measures (dense stage, linear stages).
    syn_metrics: (&'static str, &'static str),
    deformation: Deformation,
    intensity: IntensityAugmentation,
}

/// Mono-modal (seed 001's LPBA40 case at small scale): Colin27 T1 (brain-extracted) with its AAL labels
/// (116 regions) on a grid of about 3.8 mm over the brain; LNCC with a 9-voxel (about 34 mm) window +
/// diffusion 0.3; smooth deformations of 12 mm at most (mean about 2.8 mm over the brain).
fn colin_mono() -> Task {
    let ch2 = load(common::data("colin27/ch2bet.nii.gz")).unwrap();
    let aal = load(common::data("colin27/aal.nii.gz")).unwrap();
    let g = brain_grid(&threshold(&ch2, 0.5, f64::INFINITY).unwrap(), 3, SHAPE);
    let fixed = onto(&ch2, &g);
    let labels = resample(&aal, &g, Interpolation::Nearest, Padding::Zero).unwrap();
    let mut metric = Metric::new("lncc").unwrap();
    metric.set("window", OptionValue::Number(9.0)).unwrap();
    Task {
        name: "mono-modal: Colin27 T1, AAL labels, LNCC + diffusion",
        moving: vec![fixed.clone()],
        fixed,
        labels,
        metric,
        regularizer: Regularizer::Diffusion(0.3),
        syn_metrics: ("lncc", "ncc"),
        deformation: Deformation::Smooth { max_mm: 12.0, sigma_mm: 20.0 },
        intensity: IntensityAugmentation::default(),
    }
}

/// avg152 T1 (normalized to [0, 1] by its 1st-99th percentiles) through a non-monotonic, T2-like
/// transfer function, piecewise linear through (0, 0), (0.33, 1), (0.74, 0.7), (0.92, 0.45), (1, 0.4):
/// background dark, CSF (T1 about 0.33 in the brain) bright, grey matter (0.74) 0.7, white matter (0.92)
/// 0.45 (the levels of avg152 T2). A second contrast that NCC cannot match but MI can, aligned with the
/// T1 by construction.
fn t2_like(t1: &Image) -> Image {
    let knots = [(0.0f32, 0.0f32), (0.33, 1.0), (0.74, 0.70), (0.92, 0.45), (1.0, 0.40)];
    let n = unit(t1);
    let v: Vec<f32> = n
        .to_vec_f32()
        .unwrap()
        .iter()
        .map(|&x| {
            let x = x.clamp(0.0, 1.0);
            let k = knots.windows(2).find(|w| x <= w[1].0).unwrap_or(&knots[3..5]);
            let ((x0, y0), (x1, y1)) = (k[0], k[1]);
            y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        })
        .collect();
    n.with_data(Tensor::from_vec(v, n.data().shape(), &Device::Cpu).unwrap()).unwrap()
}

/// Multi-modal (seed 001's IXI T1 / T2 case at small scale): a T2-like contrast moving onto avg152 T1
/// fixed, both brain-masked, on a grid of about 3.5 mm over the brain; grey / white matter labels (the
/// avg152 priors above 0.5: 1 grey, 2 white); Parzen MI (32 bins) + diffusion 3; smooth deformations of
/// 16 mm at most (mean about 2.7 mm), gamma / scale / noise augmentation of the moving image.
///
/// `real_t2`: the avg152 T2 itself as moving image. There MI's optimum is not the identity: `syn`
/// started on the undeformed avg152 T2 / T1 pair moves it by 1.8 mm on average (MI 1.17 -> 1.31 nats),
/// so no MI registration can recover a synthetic deformation of a few mm (see
/// [`avg152_t2_mi_optimum_is_not_the_identity`]); the T2-like contrast of the T1 has no such offset.
fn avg152_multi(real_t2: bool) -> Task {
    let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
    let mask = load(common::data("avg152/brainmask.nii")).unwrap();
    let g = brain_grid(&threshold(&mask, 0.5, f64::INFINITY).unwrap(), 2, SHAPE);
    let masked = |im: &Image| im.with_data(im.data().mul(mask.data()).unwrap()).unwrap();
    let fixed = onto(&masked(&t1), &g);
    let moving =
        if real_t2 { onto(&masked(&load(common::data("avg152/avg152T2.nii")).unwrap()), &g) } else { t2_like(&fixed) };
    let grey = threshold(&load(common::data("avg152/grey.nii")).unwrap(), 0.5, f64::INFINITY).unwrap();
    let white = threshold(&load(common::data("avg152/white.nii")).unwrap(), 0.5, f64::INFINITY).unwrap();
    let l = (grey.data() + (white.data() * 2.0).unwrap()).unwrap();
    let labels = resample(&grey.with_data(l).unwrap(), &g, Interpolation::Nearest, Padding::Zero).unwrap();
    Task {
        name: if real_t2 {
            "multi-modal: avg152 T2 -> T1, GM/WM labels, MI + diffusion"
        } else {
            "multi-modal: T2-like avg152 T1 -> T1, GM/WM labels, MI + diffusion"
        },
        fixed,
        moving: vec![moving],
        labels,
        metric: Metric::new("mi").unwrap(),
        regularizer: Regularizer::Diffusion(3.0),
        syn_metrics: ("mi", "mi"),
        deformation: Deformation::Smooth { max_mm: 16.0, sigma_mm: 20.0 },
        intensity: IntensityAugmentation { gamma: 0.2, scale: 0.1, noise: 0.01 },
    }
}

fn pairs(task: &Task, seed: u64) -> PairSource {
    PairSource::Synthetic(Box::new(SyntheticPairs {
        fixed: task.fixed.clone(),
        moving: task.moving.clone(),
        labels: Some(task.labels.clone()),
        deformation: task.deformation,
        intensity: task.intensity,
        seed,
        margin: 0,
    }))
}

/// The U-Net: 3 levels (encoder 8-16-16 with stride-2 convolutions, decoder 16-16-16), no extra
/// full-resolution layer (the flow layer reads the last decoder level and the input), 46 k parameters;
/// `integration_steps` squarings of an SVF (0: a displacement).
fn unet_config(integration_steps: usize) -> UNetConfig {
    UNetConfig {
        input_size: [SHAPE[2], SHAPE[1], SHAPE[0]].into(),
        integration_steps,
        encoder: vec![8, 16, 16],
        decoder: vec![16, 16, 16],
        full_res: vec![],
        ..Default::default()
    }
}

/// A U-Net (reseeded: a reproducible start) trained on `task`'s pairs (seed 1) for `steps` Adam steps
/// (learning rate 2e-3, cosine decay to 5 %); prints the time per step and the loss per quarter.
fn trained(task: &Task, integration_steps: usize, steps: usize) -> Network {
    let unet = UNet::new("seed001", unet_config(integration_steps), &Device::Cpu).unwrap();
    let net = Network::Dense { unet, steps: integration_steps };
    net.reseed(1).unwrap();
    let mut opts = TrainOptions::new(task.metric.clone(), 4, steps / 4, 2e-3);
    opts.regularizer = Some(task.regularizer.clone());
    let t0 = Instant::now();
    let r = train(&net, &pairs(task, 1), &opts).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let losses: Vec<String> = r.epochs.iter().map(|e| format!("{:.4}", e.train_loss)).collect();
    eprintln!(
        "{}: {} parameters, {} steps in {secs:.1} s ({:.3} s per step), loss per quarter {}",
        task.name,
        net.num_params(),
        r.steps,
        secs / r.steps as f64,
        losses.join(" ")
    );
    assert_eq!(r.stop, regsh::optim::Stop::Epochs);
    net
}

/// The scores of one registration of a pair (or their means).
#[derive(Clone, Copy, Debug, Default)]
struct Scores {
    /// Mean Dice of the labels before registration.
    dice_before: f64,
    dice_after: f64,
    /// SSIM and PSNR (dB) of the warped moving image against the fixed one, both in [0, 1].
    ssim: f64,
    psnr: f64,
    /// Parzen MI (32 bins over [0, 1], nats) of the same.
    mi: f64,
    /// Fraction of the fixed brain's voxels with det J <= 0.
    folding: f64,
    /// Mean distance (mm) over the fixed brain between the transform's points and the truth's.
    error_mm: f64,
    /// Registration (network: inference) seconds.
    seconds: f64,
}

/// The [`Scores`] of `t` on `pair`.
fn score(pair: &Pair, t: &dyn Transform, seconds: f64) -> Scores {
    let (ml, fl) = (pair.moving_labels.as_ref().unwrap(), pair.fixed_labels.as_ref().unwrap());
    let g = pair.fixed.grid();
    let wl = warp(ml, t, g, WarpInterpolation::Nearest, Padding::Zero).unwrap();
    let warped = unit(&warp(&pair.moving, t, g, WarpInterpolation::Linear, Padding::Zero).unwrap());
    let fixed = unit(&pair.fixed);
    let mut mi = Metric::new("mi").unwrap();
    mi.set("range_fixed", OptionValue::Range(0.0, 1.0)).unwrap();
    mi.set("range_moving", OptionValue::Range(0.0, 1.0)).unwrap();
    let brain = threshold(fl, 0.5, f64::INFINITY).unwrap();
    let det = jacobian_determinant(t, g).unwrap();
    Scores {
        dice_before: dice(fl, ml, None).unwrap().mean,
        dice_after: dice(fl, &wl, None).unwrap().mean,
        ssim: ssim(&fixed, &warped, Some(1.0)).unwrap(),
        psnr: psnr(&fixed, &warped, Some(1.0)).unwrap(),
        mi: mi.value(fixed.data(), warped.data(), None).unwrap(),
        folding: jacobian_stats(&det, Some(&brain)).unwrap().fraction_nonpositive,
        error_mm: mean_displacement_error(t, pair.truth.as_ref().unwrap().as_ref(), g, Some(&brain)).unwrap(),
        seconds,
    }
}

fn mean(rows: &[Scores]) -> Scores {
    let n = rows.len() as f64;
    let m = |f: fn(&Scores) -> f64| rows.iter().map(f).sum::<f64>() / n;
    Scores {
        dice_before: m(|s| s.dice_before),
        dice_after: m(|s| s.dice_after),
        ssim: m(|s| s.ssim),
        psnr: m(|s| s.psnr),
        mi: m(|s| s.mi),
        folding: m(|s| s.folding),
        error_mm: m(|s| s.error_mm),
        seconds: m(|s| s.seconds),
    }
}

/// Mean scores over the held-out pairs of `register` (which returns the transform), timed.
fn score_all(val: &PairSource, register: impl Fn(&Pair) -> std::sync::Arc<dyn Transform>) -> Scores {
    let rows: Vec<Scores> = (0..HELD_OUT as u64)
        .map(|i| {
            let p = val.pair(i).unwrap();
            let t0 = Instant::now();
            let t = register(&p);
            let secs = t0.elapsed().as_secs_f64();
            score(&p, t.as_ref(), secs)
        })
        .collect();
    mean(&rows)
}

/// The classical `syn` recipe (rigid + affine by ISO, then the greedy displacement field over 2 levels;
/// see `tests/register.rs`) with the task's measures.
fn syn(task: &Task, p: &Pair) -> std::sync::Arc<dyn Transform> {
    let opts = regsh::pipeline::RegisterOptions {
        recipe: "syn".into(),
        metric: regsh::metrics::Metric::parse(task.syn_metrics.0).unwrap(),
        linear_metric: Some(regsh::metrics::Metric::parse(task.syn_metrics.1).unwrap()),
        schedule: regsh::pipeline::recipes::linear_schedule(2, Some(&[30, 20]), None).unwrap(),
        init: regsh::optim::init::Init::Identity,
        control: regsh::pipeline::RunControl { seed: 1, ..Default::default() },
        dense: regsh::pipeline::DenseSettings { iterations: Some(vec![100, 50]), ..Default::default() },
        ..Default::default()
    };
    regsh::pipeline::register(&p.moving, &p.fixed, &opts).unwrap().transform()
}

fn print_table(title: &str, rows: &[(&str, Scores)]) {
    eprintln!("\n{title} ({HELD_OUT} held-out pairs, means)\n");
    eprintln!("| method | Dice before | Dice after | SSIM | PSNR dB | MI nats | det J <= 0 | error mm | seconds |");
    eprintln!("|---|---|---|---|---|---|---|---|---|");
    for (name, s) in rows {
        eprintln!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.2} | {:.3} | {:.5} | {:.2} | {:.3} |",
            s.dice_before, s.dice_after, s.ssim, s.psnr, s.mi, s.folding, s.error_mm, s.seconds
        );
    }
    eprintln!();
}

/// Results of one task: identity, the trained U-Net, `syn`, the truth.
struct Results {
    identity: Scores,
    unet: Scores,
    syn: Scores,
}

/// Trains the U-Net on `task` for `steps` and scores it, `syn`, the identity and the truth on the
/// held-out pairs.
fn run(task: &Task, steps: usize) -> Results {
    let net = trained(task, 0, steps);
    let val = pairs(task, 1000);
    let identity =
        score_all(&val, |p| std::sync::Arc::new(Linear::identity(LinearKind::Affine, p.fixed.grid().centre())));
    let truth = score_all(&val, |p| p.truth.clone().unwrap());
    let unet = score_all(&val, |p| net.predict(&p.moving, &p.fixed).unwrap().transform());
    let syn = score_all(&val, |p| syn(task, p));
    let title = format!("{}; U-Net: {steps} steps", task.name);
    print_table(
        &title,
        &[("identity", identity), ("U-Net (inference)", unet), ("syn (classical)", syn), ("truth", truth)],
    );
    Results { identity, unet, syn }
}

/// The shared checks: the U-Net and `syn` raise the Dice of the labels and do not fold.
fn check(r: &Results, dice_margin: f64) {
    let (u, s) = (&r.unet, &r.syn);
    assert!(u.dice_after > u.dice_before + dice_margin, "U-Net Dice {:.4} -> {:.4}", u.dice_before, u.dice_after);
    assert!(u.folding < 0.005, "U-Net folding {}", u.folding);
    assert!(s.dice_after > s.dice_before + 0.04, "syn Dice {:.4} -> {:.4}", s.dice_before, s.dice_after);
    assert!(s.folding < 0.005, "syn folding {}", s.folding);
}

#[test]
fn unet_lncc_mono_modal_beats_identity_on_held_out_deformations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run(&colin_mono(), STEPS);
    check(&r, 0.008);
    // Its field is closer to the truth than the identity is.
    assert!(
        r.unet.error_mm < 0.93 * r.identity.error_mm,
        "error {:.2} mm vs {:.2}",
        r.unet.error_mm,
        r.identity.error_mm
    );
}

#[test]
fn unet_mi_multi_modal_beats_identity_on_held_out_deformations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run(&avg152_multi(false), STEPS);
    check(&r, 0.004);
    assert!(r.unet.mi > r.identity.mi + 0.1, "MI {:.3} -> {:.3}", r.identity.mi, r.unet.mi);
}

#[test]
fn unet_svf_output_does_not_fold() {
    // The same U-Net predicting a stationary velocity field integrated by 7 squarings: a shorter
    // training on the mono-modal pairs still moves the labels the right way, and no voxel of the network
    // grid (brain or not) has det J <= 0.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let task = colin_mono();
    let net = trained(&task, 7, STEPS / 2);
    let val = pairs(&task, 1000);
    let mut rows = vec![];
    for i in 0..HELD_OUT as u64 {
        let p = val.pair(i).unwrap();
        let t = net.predict(&p.moving, &p.fixed).unwrap().transform();
        let det = jacobian_determinant(t.as_ref(), p.fixed.grid()).unwrap();
        let js = jacobian_stats(&det, None).unwrap();
        let s = score(&p, t.as_ref(), 0.0);
        eprintln!(
            "SVF U-Net, held-out pair {i}: Dice {:.3} -> {:.3}, det J in [{:.3}, {:.3}], error {:.2} mm",
            s.dice_before, s.dice_after, js.min, js.max, s.error_mm
        );
        assert_eq!(js.fraction_nonpositive, 0.0, "pair {i}: min det J {}", js.min);
        assert!(js.min > 0.0);
        rows.push(s);
    }
    let m = mean(&rows);
    assert!(m.dice_after > m.dice_before + 0.002, "mean Dice {:.4} -> {:.4}", m.dice_before, m.dice_after);
}

#[test]
#[ignore = "a longer training (1500 steps, about 8 minutes): what more steps buy"]
fn unet_lncc_mono_modal_longer_training() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run(&colin_mono(), 1500);
    check(&r, 0.02);
}

#[test]
#[ignore = "a finding, not a check: about a minute of syn runs"]
fn avg152_t2_mi_optimum_is_not_the_identity() {
    // The undeformed avg152 T2 / T1 pair (a synthetic deformation of 0.01 mm): `syn` with MI moves the
    // T2 by more than a millimetre on average and raises MI, so the identity is not MI's optimum for
    // these templates at this scale (why the multi-modal test uses a T2-like contrast of the T1).
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut task = avg152_multi(true);
    task.deformation = Deformation::Smooth { max_mm: 0.01, sigma_mm: 20.0 };
    task.intensity = IntensityAugmentation::default();
    let val = pairs(&task, 1000);
    let identity =
        score_all(&val, |p| std::sync::Arc::new(Linear::identity(LinearKind::Affine, p.fixed.grid().centre())));
    let s = score_all(&val, |p| syn(&task, p));
    print_table("undeformed avg152 T2 -> T1, syn with MI", &[("identity", identity), ("syn", s)]);
    assert!(s.error_mm > 1.0 && s.mi > identity.mi + 0.05, "{s:?}");
}

#[test]
fn training_pairs_are_the_pairs_without_their_truth() {
    // What `train` draws: the images and labels of `pair(k)`, with no truth (whose inverse costs).
    let src = pairs(&colin_mono(), 5);
    for k in 0..2 {
        let (a, b) = (src.pair(k).unwrap(), src.training_pair(k).unwrap());
        assert!(a.truth.is_some() && b.truth.is_none());
        assert_eq!(a.moving.to_vec_f32().unwrap(), b.moving.to_vec_f32().unwrap());
        assert_eq!(a.moving_labels.unwrap().to_vec_f32().unwrap(), b.moving_labels.unwrap().to_vec_f32().unwrap());
    }
    let list = PairSource::List(vec![src.pair(0).unwrap()]);
    assert!(list.training_pair(3).unwrap().truth.is_some(), "listed pairs come as they are");
}
