//! Progress of the optimization loops: one indicatif bar per pyramid level on stderr (level,
//! iteration, loss, elapsed time). indicatif draws nothing when stderr is not a terminal, so logs, pipes
//! and tests stay quiet.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `iterations` steps of level `level` (0-based) of `levels` of the stage `stage`.
pub(crate) fn level_bar(stage: &str, level: usize, levels: usize, iterations: usize) -> ProgressBar {
    let bar = ProgressBar::new(iterations as u64);
    // The template is a constant and valid; fall back to the default style if indicatif disagrees.
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} loss {msg}") {
        bar.set_style(style);
    }
    bar.set_prefix(format!("{stage} level {}/{levels}", level + 1));
    bar
}

/// Records one iteration's loss on the bar.
pub(crate) fn tick(bar: &ProgressBar, loss: f64) {
    bar.set_message(format!("{loss:.6}"));
    bar.inc(1);
}
