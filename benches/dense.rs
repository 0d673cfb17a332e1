//! The cost of one greedy dense iteration (`register --transform syn`), part by part, on a level of
//! 111 x 129 x 107 voxels (1.53 M, ICBM 2009a at 2 mm): the field warp with its derivative, the fused
//! LNCC loss with its gradient (default window) and MI's (autograd on the warped image), the chain rule
//! to the field, the gradient's smoothing (sigma 3 voxels, 3 components), Adam's normalized step and the
//! field's smoothing (sigma 2.24 and 0.71 voxels: after a level's first and last step); then whole
//! levels of `iso_dense` (LNCC and MI, 10 iterations, no stopping rule) for the total per iteration.
//!
//! Prints one JSON object per part on stdout: seconds (median of REPS, default 5), ns per voxel, and
//! the part's bytes and flops per voxel (counted from the code: f32 streams read and written, and
//! multiply-adds x 2), from which `scripts/bench-dense.sh` states the roofline. Threads: rayon's
//! default (RAYON_NUM_THREADS).

mod util;

use candle_core::{DType, Device, Tensor, Var};
use regsh::image::{DataType, Grid, Image};
use regsh::metrics::{Metric, OptionValue};
use regsh::ops::lncc::{lncc_loss_grad, LnccFixed};
use regsh::ops::local_filter::{gaussian_smooth_volumes, WINDOW_TRUNCATE};
use regsh::ops::warp::warp_field_with_grad;
use regsh::optim::{iso_dense, AdamMoments, DenseModel, DenseOptions, Schedule};
use regsh::spatial::{Linear, LinearKind};

/// A smooth test volume: a sum of sines (values in [0, 1]).
fn volume(shape: [usize; 3], phase: f32) -> Vec<f32> {
    let [nx, ny, nz] = shape;
    let mut v = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let (x, y, z) = (i as f32 * 0.13, j as f32 * 0.11, k as f32 * 0.17);
                v.push(0.5 + 0.25 * (x + phase).sin() * (y - phase).cos() + 0.2 * (z + 0.5 * x).sin());
            }
        }
    }
    v
}

/// Taps of the Gaussian the dense stage smooths with (cut at `WINDOW_TRUNCATE` sigmas).
fn taps(sigma: f64) -> f64 {
    2.0 * (WINDOW_TRUNCATE * sigma).ceil() + 1.0
}

fn main() {
    let shape = [111usize, 129, 107];
    let [nx, ny, nz] = shape;
    let n = nx * ny * nz;
    let reps: usize = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let threads = rayon::current_num_threads();
    let report = |part: &str, secs: f64, bytes: f64, flops: f64| {
        println!(
            "{{\"part\": \"{part}\", \"seconds\": {secs:.5}, \"ns_per_voxel\": {:.2}, \"bytes_per_voxel\": {bytes:.0}, \"flops_per_voxel\": {flops:.0}, \"voxels\": {n}, \"threads\": {threads}}}",
            secs * 1e9 / n as f64
        );
    };
    // The machine's memory bandwidth (the roofline's slope): a parallel copy of 3 volumes.
    {
        use rayon::prelude::*;
        let src = vec![1f32; 3 * n];
        let mut dst = vec![0f32; 3 * n];
        let secs = util::median_seconds(reps, || {
            dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        });
        println!(
            "{{\"part\": \"memory bandwidth (copy)\", \"seconds\": {secs:.5}, \"gb_per_second\": {:.2}, \"threads\": {threads}}}",
            24.0 * n as f64 / secs / 1e9
        );
    }
    let fixed = volume(shape, 0.0);
    let moving = volume(shape, 0.3);
    // A field of up to about 2 mm, the identity map between the grids (2 mm voxels).
    let u: Vec<f32> = (0..3 * n).map(|i| ((i as f32 * 0.377_1).fract() - 0.5) * 4.0).collect();
    let m = [0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0].map(|v: f64| v * 2.0);
    let r = [0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.5];

    // Warp: reads the field (12 B) and 8 corners of the moving image (cached), writes the sample and
    // its derivative (16 B); trilinear weights and the 3-vector derivative about 60 flops.
    let (w, du) = warp_field_with_grad(&moving, shape, &u, shape, m, r).unwrap();
    report(
        "warp with derivative",
        util::median_seconds(reps, || {
            warp_field_with_grad(&moving, shape, &u, shape, m, r).unwrap();
        }),
        28.0 + 4.0,
        60.0,
    );

    let lncc = Metric::new("lncc").unwrap();
    let window = lncc.lncc_window().unwrap();
    let wtaps = window.kernel().len() as f64;
    let fx = LnccFixed::new(&fixed, shape, window, None).unwrap();
    // LNCC: 3 moving-side volumes filtered forward and 3 back (separable, `wtaps` per axis), plus the
    // pointwise terms; each filter pass reads and writes a volume per axis.
    report(
        "LNCC loss and gradient",
        util::median_seconds(reps, || {
            lncc_loss_grad(&fx, &w, true).unwrap();
        }),
        6.0 * 3.0 * 8.0 + 40.0,
        6.0 * 3.0 * 2.0 * wtaps + 40.0,
    );

    // MI (32 bins, sigma half a bin: windows of 5 bins a side): per pass two windows (about 30 flops
    // each), the joint's 25 products forward and 25 back; autograd on the warped image (the slow twin)
    // and the fused dense form.
    let g = Grid::axis_aligned(shape, [2.0; 3], [0.0; 3]).unwrap();
    let fixed_t = Tensor::from_vec(fixed.clone(), (1, nz, ny, nx), &Device::Cpu).unwrap();
    let fixed_img = Image::new(fixed_t.clone(), g.clone(), DataType::Float32).unwrap();
    let moving_img = Image::new(
        Tensor::from_vec(moving.clone(), (1, nz, ny, nx), &Device::Cpu).unwrap(),
        g.clone(),
        DataType::Float32,
    )
    .unwrap();
    // The dense stage fixes the intensity ranges once per registration (both volumes are in [0, 1]).
    let mut mi = Metric::new("mi").unwrap();
    mi.set("range_fixed", OptionValue::Range(0.0, 1.0)).unwrap();
    mi.set("range_moving", OptionValue::Range(0.0, 1.0)).unwrap();
    report(
        "MI loss and gradient (autograd, the slow twin)",
        util::median_seconds(reps, || {
            let wv = Var::from_tensor(&Tensor::from_slice(&w, (1, nz, ny, nx), &Device::Cpu).unwrap()).unwrap();
            let loss = mi.loss(&fixed_t, wv.as_tensor(), None).unwrap();
            let gr = loss.backward().unwrap();
            gr.get(wv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
        }),
        8.0 + 8.0,
        230.0,
    );

    let pm = mi.point_measure().unwrap();
    report(
        "MI loss and gradient (fused dense form)",
        util::median_seconds(reps, || {
            regsh::ops::point_metric::dense_loss_grad(&pm, &fixed, &w, None).unwrap();
        }),
        8.0 + 4.0,
        230.0,
    );

    let gw = lncc_loss_grad(&fx, &w, true).unwrap().grad;
    report(
        "chain rule to the field",
        util::median_seconds(reps, || {
            let mut gu = du.clone();
            for c in 0..3 {
                gu[c * n..(c + 1) * n].iter_mut().zip(&gw).for_each(|(d, g)| *d *= g);
            }
            std::hint::black_box(&gu);
        }),
        12.0 + 4.0 + 12.0,
        3.0,
    );

    // Separable smoothing of 3 volumes: per axis a read and a write of each volume.
    let smooth = |sigma: f64, name: &str| {
        report(
            name,
            util::median_seconds(reps, || {
                std::hint::black_box(gaussian_smooth_volumes(&u, shape, sigma));
            }),
            3.0 * 3.0 * 8.0,
            3.0 * 3.0 * 2.0 * taps(sigma),
        );
    };
    smooth(3.0, "gradient smoothing (sigma 3)");

    // Adam's moments and direction (reads g, m, v; writes m, v, dir), the largest vector, the update.
    let mut adam = AdamMoments::<f32>::new(3 * n);
    let mut dir = vec![0f32; 3 * n];
    let mut uu = u.clone();
    report(
        "Adam step (normalized)",
        util::median_seconds(reps, || {
            adam.direction(&u, &mut dir);
            let norm = dir[..n]
                .iter()
                .zip(&dir[n..2 * n])
                .zip(&dir[2 * n..])
                .map(|((a, b), c)| a * a + b * b + c * c)
                .fold(0f32, f32::max)
                .sqrt();
            let s = 0.1 / norm.max(1e-12);
            uu.iter_mut().zip(&dir).for_each(|(x, d)| *x -= d * s);
        }),
        3.0 * (4.0 * 4.0 + 3.0 * 4.0) + 12.0 + 24.0,
        3.0 * 12.0 + 6.0,
    );
    smooth(5f64.sqrt(), "field smoothing (sigma 2.24, first step)");
    smooth(0.5f64.sqrt(), "field smoothing (sigma 0.71, last step)");

    // Whole levels: 10 iterations on one level, no stopping rule, fused path.
    for name in ["lncc", "mi"] {
        let mut opts = DenseOptions::defaults(DenseModel::Greedy, Metric::new(name).unwrap(), &g).unwrap();
        opts.schedule = Schedule::new(1, &[10], 1.0).unwrap();
        opts.plateau = None;
        let id = Linear::identity(LinearKind::Affine, g.centre());
        let secs = util::median_seconds(reps.min(3), || {
            iso_dense(&fixed_img, &moving_img, &id, DenseModel::Greedy, &opts).unwrap();
        });
        report(&format!("whole iteration ({name}, iso_dense level / 10)"), secs / 10.0, f64::NAN, f64::NAN);
    }
}
