//! Network cost on the CPU: the fused `conv3d` against its slow twin at `1x16x64^3` (forward, and
//! forward + backward to the input and the weights), then a training step (loss forward + backward +
//! Adam) and an inference (`Network::predict`) of the U-Net and the affine network at the sizes
//! `tests/learn_unet.rs` and `tests/train.rs` train them at. Prints a Markdown table (median seconds of
//! `REPS` runs after a warm-up; `RAYON_NUM_THREADS` sets the threads); `scripts/bench-nn.sh` runs it.
//! `cargo bench --bench nn -- conv` (or `unet`, `affine`) runs one part.

mod util;

use candle_core::{Device, Tensor, Var};
use regsh::image::io::load;
use regsh::image::ops::{bounding_box, crop, threshold};
use regsh::image::resample::{resample, Interpolation, Padding};
use regsh::image::smooth::{smooth, SigmaUnit};
use regsh::image::Image;
use regsh::metrics::{Metric, OptionValue};
use regsh::nn::{conv3d, conv3d_slow, AffineNet, AffineNetConfig, UNet, UNetConfig};
use regsh::optim::{Adam, Optimizer, Regularizer};
use regsh::train::{AffineBounds, Deformation, IntensityAugmentation, Network, Pair, PairSource, SyntheticPairs};

type Row = (String, f64, Option<f64>);

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// conv3d at (1, 16, 64, 64, 64) with 16 3x3x3 filters, padding 1: fast and slow, fwd and fwd+bwd.
fn conv_rows(reps: usize) -> Vec<Row> {
    let x = Var::from_tensor(&seeded(&[1, 16, 64, 64, 64], 1)).expect("var");
    let w = Var::from_tensor(&(seeded(&[16, 16, 3, 3, 3], 2) * 0.1).expect("scale")).expect("var");
    let b = Var::from_tensor(&seeded(&[16], 3)).expect("var");
    let mut rows = vec![];
    type Conv = fn(&Tensor, &Tensor, Option<&Tensor>, [usize; 3], [usize; 3]) -> regsh::error::Result<Tensor>;
    let fast: Conv = |x, w, b, s, p| conv3d(x, w, b, s, p);
    let slow: Conv = |x, w, b, s, p| conv3d_slow(x, w, b, s, p);
    let mut times = vec![];
    for (name, f) in [("fast", fast), ("slow", slow)] {
        let fwd = util::median_seconds(reps, || {
            f(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), [1; 3], [1; 3]).expect("conv");
        });
        let bwd = util::median_seconds(reps, || {
            let y = f(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), [1; 3], [1; 3]).expect("conv");
            y.sqr().and_then(|s| s.sum_all()).and_then(|l| l.backward()).expect("backward");
        });
        times.push((fwd, bwd));
        rows.push((format!("conv3d {name}, 1x16x64^3 -> 16, forward"), fwd, None));
        rows.push((format!("conv3d {name}, forward + backward (input, weight, bias)"), bwd, None));
    }
    rows[2].2 = Some(times[1].0 / times[0].0);
    rows[3].2 = Some(times[1].1 / times[0].1);
    rows
}

fn data_dir() -> String {
    std::env::var("REGSH_DATA").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/data").into())
}

/// One training step (loss, backward, Adam) and one inference of `net` on `pair`, and the time to
/// make a pair.
fn net_rows(
    label: &str,
    net: &Network,
    pairs: &PairSource,
    metric: &Metric,
    reg: Option<Regularizer>,
    reps: usize,
) -> Vec<Row> {
    let pair: Pair = pairs.training_pair(0).expect("pair");
    let vars = net.vars();
    let mut adam = Adam::new(1e-4, vec![]);
    let step = util::median_seconds(reps, || {
        let (l, _) = net.loss(&pair, metric, reg.as_ref()).expect("loss");
        let g = l.backward().expect("backward");
        adam.step(&vars, &g).expect("adam");
    });
    let fwd = util::median_seconds(reps, || {
        net.loss(&pair, metric, reg.as_ref()).expect("loss");
    });
    let infer = util::median_seconds(reps, || {
        net.predict(&pair.moving, &pair.fixed).expect("predict");
    });
    let mut k = 0u64;
    let make = util::median_seconds(reps, || {
        k += 1;
        pairs.training_pair(k).expect("pair");
    });
    let [d, h, w] = net.input_size().map(|s| s.0).unwrap_or_default();
    let size = format!("{d}x{h}x{w}, {} parameters", net.num_params());
    vec![
        (format!("{label} ({size}): training step (loss + backward + Adam)"), step, None),
        (format!("{label}: loss forward only"), fwd, None),
        (format!("{label}: inference (predict: resample, network, transform)"), infer, None),
        (format!("{label}: making one synthetic training pair"), make, None),
    ]
}

/// The U-Net of `tests/learn_unet.rs`: Colin27 over its brain box at 40x48x40 (about 3.8 mm), LNCC
/// (window 9) + diffusion, smooth deformations of 12 mm at most; as a displacement and as an SVF.
fn unet_rows(reps: usize) -> Vec<Row> {
    let ch2 = load(format!("{}/colin27/ch2bet.nii.gz", data_dir())).expect("run scripts/fetch-data.sh");
    let mask = threshold(&ch2, 0.5, f64::INFINITY).expect("mask");
    let (start, size) = bounding_box(&mask, 3).expect("box").expect("brain");
    let g = crop(&mask, start, size).expect("crop").grid().with_shape([40, 48, 40]).expect("grid");
    let s = smooth(&ch2, [0.4 * g.spacing()[0]; 3], SigmaUnit::Voxels).expect("smooth");
    let fixed = resample(&s, &g, Interpolation::Linear, Padding::Zero).expect("resample");
    let pairs = PairSource::Synthetic(Box::new(SyntheticPairs {
        fixed: fixed.clone(),
        moving: vec![fixed],
        labels: None,
        deformation: Deformation::Smooth { max_mm: 12.0, sigma_mm: 20.0 },
        intensity: IntensityAugmentation::default(),
        seed: 1,
        margin: 0,
    }));
    let mut lncc = Metric::new("lncc").expect("lncc");
    lncc.set("window", OptionValue::Number(9.0)).expect("window");
    let mut rows = vec![];
    for (label, steps) in [("U-Net", 0), ("U-Net SVF (7 squarings)", 7)] {
        let cfg = UNetConfig {
            input_size: [40, 48, 40].into(),
            integration_steps: steps,
            encoder: vec![8, 16, 16],
            decoder: vec![16, 16, 16],
            full_res: vec![],
            ..Default::default()
        };
        let net = Network::Dense { unet: UNet::new("bench", cfg, &Device::Cpu).expect("unet"), steps };
        net.reseed(1).expect("reseed");
        let mut r = net_rows(label, &net, &pairs, &lncc, Some(Regularizer::Diffusion(0.3)), reps);
        if steps > 0 {
            r.truncate(3);
        }
        rows.extend(r);
    }
    rows
}

/// The affine network of `tests/train.rs`: avg152 T1 at 4 mm, 32^3 input, channels 8-16-16, NCC.
fn affine_rows(reps: usize) -> Vec<Row> {
    let t1 = load(format!("{}/avg152/avg152T1.nii", data_dir())).expect("run scripts/fetch-data.sh");
    let g = t1.grid().downsampled(2.0).expect("grid");
    let t1: Image = resample(&t1, &g, Interpolation::Linear, Padding::Zero).expect("resample");
    let pairs = PairSource::Synthetic(Box::new(SyntheticPairs {
        fixed: t1.clone(),
        moving: vec![t1],
        labels: None,
        deformation: Deformation::Affine(AffineBounds::default()),
        intensity: IntensityAugmentation::default(),
        seed: 1,
        margin: 0,
    }));
    let cfg =
        AffineNetConfig { input_size: [32; 3].into(), channels: vec![8, 16, 16], hidden: 32, ..Default::default() };
    let net = Network::Affine(AffineNet::new("bench", cfg, &Device::Cpu).expect("affine net"));
    net.reseed(1).expect("reseed");
    net_rows("AffineNet", &net, &pairs, &Metric::new("ncc").expect("ncc"), None, reps)
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let reps: usize = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let want = |s: &str| only.as_deref().is_none_or(|o| o == s);
    let mut rows = vec![];
    if want("conv") {
        rows.extend(conv_rows(reps));
    }
    if want("unet") {
        rows.extend(unet_rows(reps));
    }
    if want("affine") {
        rows.extend(affine_rows(reps));
    }
    println!("| case | seconds | slow / fast |\n|---|---|---|");
    for (name, s, ratio) in rows {
        let r = ratio.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into());
        println!("| {name} | {s:.4} | {r} |");
    }
    println!("\n{reps} repetitions (median), {} threads", rayon::current_num_threads());
}
