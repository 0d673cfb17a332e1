//! Warp throughput: forward and forward+backward of the affine and DDF warp at 160x192x224 (x, y, z);
//! backward to the transform (registration) and, for the affine, to the image too.
//! Prints one JSON object per case on stdout. Run through `scripts/bench-warp.sh`, which also times
//! SimpleITK's resampler in the same run and reports the ratios.

mod util;

use candle_core::{Device, Tensor, Var};
use regsh::image::resample::Padding;
use regsh::image::Grid;
use regsh::ops::SampleMode;
use regsh::spatial::{warp_tensor, Ddf, Linear, LinearKind};

fn main() {
    let shape = [160usize, 192, 224];
    let reps: usize = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let g = Grid::axis_aligned(shape, [1.0; 3], [0.0; 3]).unwrap();
    let n = g.num_voxels();
    let [nx, ny, nz] = shape;
    let vals: Vec<f32> = (0..n).map(|i| (i as f32 * 0.618_034).fract()).collect();
    let moving = Tensor::from_vec(vals, (1, nz, ny, nx), &Device::Cpu).unwrap();
    // The same matrix, translation and centre as the SimpleITK side (tests/python/bench_sitk.py).
    let p = [1.02, 0.01, 0.0, 2.5, -0.01, 0.98, 0.02, -3.0, 0.0, -0.02, 1.01, 1.5];
    let params = Var::from_tensor(&Tensor::from_vec(p.map(|v| v as f32).to_vec(), 12, &Device::Cpu).unwrap()).unwrap();
    let aff = Linear::new(LinearKind::Matrix, params.as_tensor().clone(), g.centre()).unwrap();
    let field: Vec<f32> = (0..3 * n).map(|i| ((i as f32 * 0.377_1).fract() - 0.5) * 2.0).collect();
    let fvar = Var::from_tensor(&Tensor::from_vec(field, (3, nz, ny, nx), &Device::Cpu).unwrap()).unwrap();
    let ddf = Ddf::new(fvar.as_tensor().clone(), g.clone()).unwrap();
    let mvar = Var::from_tensor(&moving).unwrap();
    let threads = rayon::current_num_threads();
    let report = |case: &str, secs: f64| {
        println!(
            "{{\"case\": \"{case}\", \"seconds\": {secs:.4}, \"voxels_per_second\": {:.4e}, \"voxels\": {n}, \"threads\": {threads}}}",
            n as f64 / secs
        );
    };
    report(
        "affine_forward",
        util::median_seconds(reps, || {
            warp_tensor(&moving, &g, &aff, &g, SampleMode::Linear, Padding::Zero).unwrap();
        }),
    );
    // Registration case: gradient to the 12 parameters, the image a constant.
    report(
        "affine_forward_backward",
        util::median_seconds(reps, || {
            let out = warp_tensor(&moving, &g, &aff, &g, SampleMode::Linear, Padding::Zero).unwrap();
            out.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        }),
    );
    // Gradient to the image as well (a network's input path).
    report(
        "affine_forward_backward_image",
        util::median_seconds(reps, || {
            let out = warp_tensor(mvar.as_tensor(), &g, &aff, &g, SampleMode::Linear, Padding::Zero).unwrap();
            out.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        }),
    );
    report(
        "ddf_forward",
        util::median_seconds(reps, || {
            warp_tensor(&moving, &g, &ddf, &g, SampleMode::Linear, Padding::Zero).unwrap();
        }),
    );
    report(
        "ddf_forward_backward",
        util::median_seconds(reps, || {
            let out = warp_tensor(&moving, &g, &ddf, &g, SampleMode::Linear, Padding::Zero).unwrap();
            out.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        }),
    );
}
