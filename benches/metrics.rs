//! Similarity-measure cost at full resolution (ICBM 2009a, 197x233x189): forward and forward+backward
//! (gradient to the moving image) time, and the extra peak memory each measure needs. One measure per
//! process (`cargo bench --bench metrics -- NAME`), so the peak-memory reading is that measure's own;
//! `scripts/bench-metrics.sh` runs them all and prints ratios against SSD measured in the same run.

mod util;

use candle_core::Var;
use regsh::image::io::load;
use regsh::metrics::Metric;

/// A field of /proc/self/status in kB.
fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let name = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_else(|| "ssd".into());
    let reps: usize = std::env::var("REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let data = std::env::var("REGSH_DATA").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/data").into());
    let t1 = load(format!("{data}/icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
        .expect("run scripts/fetch-data.sh");
    let fixed = t1.data().clone();
    // A second contrast: the inverted T1, as moving.
    let moving = Var::from_tensor(&(255.0 - &fixed).unwrap()).unwrap();
    let metric = Metric::new(&name).expect("metric name");
    let base = status_kb("VmHWM:");
    let fwd = util::median_seconds(reps, || {
        metric.loss(&fixed, &moving, None).unwrap();
    });
    let bwd = util::median_seconds(reps, || {
        metric.loss(&fixed, &moving, None).unwrap().backward().unwrap();
    });
    let peak = status_kb("VmHWM:").saturating_sub(base);
    println!(
        "{{\"metric\": \"{}\", \"voxels\": {}, \"forward_s\": {fwd:.4}, \"forward_backward_s\": {bwd:.4}, \"extra_peak_mib\": {:.1}, \"threads\": {}}}",
        metric,
        fixed.elem_count(),
        peak as f64 / 1024.0,
        rayon::current_num_threads()
    );
}
