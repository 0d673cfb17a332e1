//! Seed 000 at reduced scale (CPU): an affine network trained without supervision with global MI and
//! with global CR on random affines of avg152 T2 / PD (moving) against T1 (fixed), then refined by
//! multi-scale ISO with the patch version of the training measure (MI-patch, CR-patch: the paper trains
//! with the global measures and refines with the local ones); against no registration and classical
//! affine registration, on held-out pairs. The table of the paper's Table I (Dice of GM / WM, mean
//! displacement error) is printed.
//!
//! `REGSH_SEED000_STEPS` (default 300) and `REGSH_SEED000_EPOCHS` (default 10) scale the training.

mod common;

use candle_core::Device;
use regsh::image::io::load;
use regsh::image::ops::threshold;
use regsh::image::resample::Padding;
use regsh::image::Image;
use regsh::metrics::evaluation::{dice, mean_displacement_error};
use regsh::metrics::Metric;
use regsh::nn::{AffineNet, AffineNetConfig};
use regsh::optim::init::Init;
use regsh::optim::{iso_linear, IsoOptimizer, IsoOptions, Sampling, Schedule};
use regsh::pipeline::recipes::{default_lr, register_linear, stages};
use regsh::spatial::{warp, Linear, LinearKind, Transform, WarpInterpolation};
use regsh::train::{
    train, AffineBounds, Deformation, IntensityAugmentation, LrSchedule, Network, Pair, PairSource, Prediction,
    SyntheticPairs, TrainOptions,
};

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Data {
    t1: Image,
    moving: Vec<Image>,
    /// T1 and the moving images smoothed and resampled to 4 mm: training pairs (the network sees a
    /// 32^3 grid of about 6 mm voxels; 4 mm pairs train 8 times faster than 2 mm ones).
    t1_4mm: Image,
    moving_4mm: Vec<Image>,
    /// GM = 1, WM = 2 on the T1 grid (avg152's tissue priors above 0.5).
    tissue: Image,
    brain: Image,
}

fn data() -> Data {
    let t1 = load(common::data("avg152/avg152T1.nii")).unwrap();
    let moving: Vec<Image> =
        ["T2", "PD"].iter().map(|m| load(common::data(&format!("avg152/avg152{m}.nii"))).unwrap()).collect();
    let gm = threshold(&load(common::data("avg152/grey.nii")).unwrap(), 0.5, f64::INFINITY).unwrap();
    let wm = threshold(&load(common::data("avg152/white.nii")).unwrap(), 0.5, f64::INFINITY).unwrap();
    // Where both exceed 0.5 (none at these priors) WM wins.
    let t = (gm.data() + (wm.data() * 2.0).unwrap()).unwrap().clamp(0f32, 2f32).unwrap();
    let tissue = gm.with_data(t).unwrap();
    let brain = threshold(&load(common::data("avg152/brainmask.nii")).unwrap(), 0.5, f64::INFINITY).unwrap();
    let g4 = t1.grid().downsampled(2.0).unwrap();
    let coarse = |im: &Image| {
        let s = regsh::image::smooth::smooth(im, [0.85; 3], regsh::image::smooth::SigmaUnit::Voxels).unwrap();
        regsh::image::resample::resample(&s, &g4, regsh::image::resample::Interpolation::Linear, Padding::Zero).unwrap()
    };
    let (t1_4mm, moving_4mm) = (coarse(&t1), moving.iter().map(coarse).collect());
    Data { t1, moving, t1_4mm, moving_4mm, tissue, brain }
}

/// Random affines of T2 / PD against T1: at 2 mm with the tissue labels (held out), or at 4 mm
/// without (training).
fn source(d: &Data, seed: u64, training: bool) -> PairSource {
    PairSource::Synthetic(Box::new(SyntheticPairs {
        fixed: if training { d.t1_4mm.clone() } else { d.t1.clone() },
        moving: if training { d.moving_4mm.clone() } else { d.moving.clone() },
        labels: if training { None } else { Some(d.tissue.clone()) },
        deformation: Deformation::Affine(AffineBounds::default()),
        intensity: IntensityAugmentation { gamma: 0.2, scale: 0.1, noise: 0.0 },
        seed,
        // 32 mm around the moving grid: the templates fill their field of view, and a random affine that
        // crops the head changes where a measure's optimum lies (see tests/register.rs).
        margin: if training { 8 } else { 16 },
    }))
}

fn trained(d: &Data, loss: &str) -> Network {
    let cfg =
        AffineNetConfig { input_size: [32; 3].into(), channels: vec![8, 16, 32, 32], hidden: 32, ..Default::default() };
    let net = Network::Affine(AffineNet::new(loss, cfg, &Device::Cpu).unwrap());
    net.reseed(7).unwrap();
    let mut opts = TrainOptions::new(
        Metric::new(loss).unwrap(),
        env("REGSH_SEED000_EPOCHS", 10),
        env("REGSH_SEED000_STEPS", 300),
        1e-3,
    );
    opts.fit.schedule = LrSchedule::Cosine { final_fraction: 0.1 };
    let t0 = std::time::Instant::now();
    let r = train(&net, &source(d, 1, true), &opts).unwrap();
    let losses: Vec<String> = r.epochs.iter().map(|e| format!("{:.4}", e.train_loss)).collect();
    eprintln!("{loss}: {} steps in {:.0} s, epoch losses {losses:?}", r.steps, t0.elapsed().as_secs_f64());
    net
}

/// ISO of a linear transform with `metric` over 3 levels (random points for global measures, the
/// jittered grid for patch measures).
fn iso(pair: &Pair, start: &Linear, metric: &str) -> Linear {
    let mut schedule = Schedule::new(3, &[60, 40, 20], 1.0).unwrap();
    schedule.lr = default_lr(&schedule.factors);
    let m = Metric::new(metric).unwrap();
    let opts = IsoOptions {
        schedule,
        sampling: Sampling::default_for(&m),
        metric: m,
        fixed_mask: None,
        convergence: (10, 1e-5),
        cancel: None,
        seed: 0,
        optimizer: IsoOptimizer::Adam,
        polish: None,
    };
    iso_linear(&pair.fixed, &pair.moving, start, &opts).unwrap().transform
}

/// Mean Dice of GM and WM, and the mean displacement error over the brain (mm).
fn score(d: &Data, pair: &Pair, t: &dyn Transform) -> (f64, f64) {
    let ml = pair.moving_labels.as_ref().unwrap();
    let w = warp(ml, t, d.t1.grid(), WarpInterpolation::Nearest, Padding::Zero).unwrap();
    let dc = dice(&d.tissue, &w, Some(&[1, 2])).unwrap().mean;
    let err = mean_displacement_error(t, pair.truth.as_ref().unwrap().as_ref(), d.t1.grid(), Some(&d.brain)).unwrap();
    (dc, err)
}

#[test]
fn seed000_network_then_iso_beats_the_network_alone() {
    let d = data();
    let held_out = source(&d, 10_000, false);
    let n = 6;
    let pairs: Vec<Pair> = (0..n).map(|i| held_out.pair(i).unwrap()).collect();
    let rows = [
        "no registration",
        "network (MI)",
        "network (MI) + ISO (MI-patch)",
        "network (CR)",
        "network (CR) + ISO (CR-patch)",
        "classical affine (MI)",
    ];
    let mut sum = vec![(0.0, 0.0); rows.len()];
    let mut add = |row: usize, s: (f64, f64)| {
        sum[row].0 += s.0 / n as f64;
        sum[row].1 += s.1 / n as f64;
    };
    let id = Linear::identity(LinearKind::Affine, d.t1.grid().centre());
    for p in &pairs {
        add(0, score(&d, p, &id));
    }
    for (k, loss) in ["mi", "cr"].iter().enumerate() {
        let net = trained(&d, loss);
        for p in &pairs {
            let Prediction::Linear(guess) = net.predict(&p.moving, &p.fixed).unwrap() else { unreachable!() };
            add(1 + 2 * k, score(&d, p, &guess));
            // As the paper: trained with the global measure, refined with its patch version.
            let refined = iso(p, &guess, &format!("{loss}_patch"));
            add(2 + 2 * k, score(&d, p, &refined));
        }
    }
    let mut schedule = Schedule::new(3, &[100, 60, 40], 1.0).unwrap();
    schedule.lr = default_lr(&schedule.factors);
    for p in &pairs {
        let (t, _) = register_linear(
            &p.fixed,
            &p.moving,
            &stages("affine").unwrap(),
            &Metric::new("mi").unwrap(),
            &schedule,
            Init::Moments,
            None,
        )
        .unwrap();
        add(5, score(&d, p, &t));
    }
    let mut table =
        vec!["| method | Dice (GM, WM) | mean displacement error (mm) |".to_string(), "|---|---|---|".to_string()];
    for (r, (dc, e)) in rows.iter().zip(&sum) {
        table.push(format!("| {r} | {dc:.4} | {e:.3} |"));
    }
    eprintln!("seed 000 at reduced scale, {n} held-out pairs:\n{}", table.join("\n"));
    let err = |r: usize| sum[r].1;
    assert!(err(1) < 0.8 * err(0) && err(3) < 0.8 * err(0), "the networks learn to move towards the truth: {sum:?}");
    assert!(err(2) < 0.25 * err(1) && err(4) < 0.25 * err(3), "ISO refines the networks' guesses: {sum:?}");
    assert!(err(2) < 1.0 && err(4) < 1.0, "network + ISO lands within a millimetre: {sum:?}");
    assert!(sum[2].0 > sum[1].0 + 0.1 && sum[4].0 > sum[3].0 + 0.1, "and so do the tissue overlaps: {sum:?}");
    // CR no worse than MI after ISO (measured: 0.595 mm against 0.592, Dice 0.9576 against 0.9572): within
    // 0.05 mm and 0.005 Dice, as the networks themselves differ from run to run (training is not
    // bit-reproducible) while ISO lands on the measure's optimum.
    assert!(err(4) < err(2) + 0.05, "CR + ISO no worse than MI + ISO in error: {sum:?}");
    assert!(sum[4].0 > sum[2].0 - 0.005, "CR + ISO no worse than MI + ISO in Dice: {sum:?}");
}
