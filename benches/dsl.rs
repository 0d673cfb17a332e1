//! Measures written in the DSL against the built-in tensor (not fused) path: a script NCC and a script
//! LNCC (box window of 9 voxels, the built-in's form: VoxelMorph's with windows normalized at the border
//! and its guard) beside `functional::ncc` and `functional::lncc_slow`
//! on avg152 T1 / T2 at 2 mm (91x109x91), forward + backward (gradient to the moving image), median of
//! REPS runs, one process, alternating script and built-in. `scripts/bench-dsl.sh` runs it and prints the
//! ratios. Output: one JSON line per measure.

mod util;

use candle_core::{Tensor, Var};
use regsh::diagnostics::render;
use regsh::image::io::load;
use regsh::metrics::functional::{lncc_slow, ncc, Window};
use regsh::metrics::Metric;
use regsh::session::Session;

const SCRIPT_NCC: &str = "metric(|f, w| {
    let a = f - f.mean();
    let b = w - w.mean();
    (a * b).mean() / sqrt((a * a).mean() * (b * b).mean())
}, name=\"script_ncc\")";

const SCRIPT_LNCC: &str = "metric(|f, w| {
    let a = f - f.mean();
    let b = w - w.mean();
    let n = uniform_filter(ones(a.shape), 9);
    let ma = uniform_filter(a, 9) / n;
    let mb = uniform_filter(b, 9) / n;
    let cross = uniform_filter(a * b, 9) / n - ma * mb;
    let va = relu(uniform_filter(a * a, 9) / n - ma * ma);
    let vb = relu(uniform_filter(b * b, 9) / n - mb * mb);
    let eps = 1e-5 / (729.0 * 729.0) + 1e-6 * (a * a).mean().detach() * (b * b).mean().detach();
    clamp(cross * cross / (va * vb + eps), 0.0, 1.0).mean()
}, name=\"script_lncc\")";

fn main() {
    let reps: usize = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let data = std::env::var("REGSH_DATA").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/data").into());
    let fixed = load(format!("{data}/avg152/avg152T1.nii")).expect("run scripts/fetch-data.sh").data().clone();
    let moving = Var::from_tensor(load(format!("{data}/avg152/avg152T2.nii")).expect("avg152 T2").data()).unwrap();
    let mut s = Session::new().unwrap_or_else(|e| panic!("{}", render(&e, false, 100)));
    let mut script = |text: &str| -> Metric {
        s.eval("bench", text).unwrap_or_else(|e| panic!("{}", render(&e, false, 100))).try_cast::<Metric>().unwrap()
    };
    let (sncc, slncc) = (script(SCRIPT_NCC), script(SCRIPT_LNCC));
    type Builtin = fn(&Tensor, &Tensor) -> regsh::Result<Tensor>;
    let cases: [(&str, Metric, Builtin); 2] =
        [("ncc", sncc, |f, m| ncc(f, m, None)), ("lncc", slncc, |f, m| lncc_slow(f, m, Window::Box(9), None))];
    for (name, metric, builtin) in cases {
        let run_script = || {
            metric.measure(&fixed, &moving, None).unwrap().backward().unwrap();
        };
        let run_builtin = || {
            builtin(&fixed, &moving).unwrap().backward().unwrap();
        };
        // Alternate, so drift in the machine's speed falls on both.
        let (mut ts, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(1) {
            ts.push(util::median_seconds(1, run_script));
            tb.push(util::median_seconds(1, run_builtin));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (vs, vb) = (
            metric.measure(&fixed, moving.as_tensor(), None).unwrap().to_scalar::<f32>().unwrap(),
            builtin(&fixed, moving.as_tensor()).unwrap().to_scalar::<f32>().unwrap(),
        );
        let (ms, mb) = (median(ts), median(tb));
        println!(
            "{{\"measure\": \"{name}\", \"voxels\": {}, \"script_s\": {ms:.4}, \"builtin_s\": {mb:.4}, \"ratio\": {:.3}, \"script_value\": {vs:.6}, \"builtin_value\": {vb:.6}, \"threads\": {}}}",
            fixed.elem_count(),
            ms / mb,
            rayon::current_num_threads()
        );
    }
}
