//! Convergence tests on a run's losses: a windowed-slope test (as deepali's: fit a line to the last
//! `window` loss values and stop when its slope, relative to the loss magnitude, is below `tol` per
//! iteration), used by the linear levels; and the dense levels' plateau rule ([`Plateau`]: the loss
//! has stopped paying for the iterations, measured against the level's own fall).

/// Windowed-slope convergence state.
#[derive(Clone, Debug)]
pub struct WindowedSlope {
    window: usize,
    tol: f64,
    history: Vec<f64>,
}

impl WindowedSlope {
    /// A test over `window` (>= 2) iterations with relative slope tolerance `tol`.
    pub fn new(window: usize, tol: f64) -> Self {
        WindowedSlope { window: window.max(2), tol, history: Vec::new() }
    }

    /// Records a loss; returns true once the window is full and the fitted slope is flat enough.
    pub fn push(&mut self, loss: f64) -> bool {
        self.history.push(loss);
        if self.history.len() < self.window {
            return false;
        }
        let y = &self.history[self.history.len() - self.window..];
        let n = y.len() as f64;
        let xm = (n - 1.0) / 2.0;
        let ym = y.iter().sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, v) in y.iter().enumerate() {
            let dx = i as f64 - xm;
            sxy += dx * (v - ym);
            sxx += dx * dx;
        }
        let slope = sxy / sxx;
        (slope / ym.abs().max(1e-12)).abs() < self.tol
    }

    /// Clears the history (at a new pyramid level).
    pub fn reset(&mut self) {
        self.history.clear();
    }
}

/// The dense levels' stopping rule: the loss has stopped paying. After at least `window` iterations,
/// it holds when the loss fell over the last `window` iterations by at most `fraction` of its fall since
/// the level's first iteration: `L[i - window] - L[i] <= fraction (L[0] - L[i])` (a loss that has not
/// fallen at all, or rises, holds too). Scale-free: no tolerance in the measure's units, so one rule
/// serves MI (nats), LNCC and regularized sums alike. The dense levels then cool down (their step
/// decays to its smallest over `cooldown` iterations) and end; see [`super::dense`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Plateau {
    /// Iterations the recent fall is measured over (>= 1).
    pub window: usize,
    /// Largest share of the level's fall so far that the last `window` iterations may add (0-1).
    pub fraction: f64,
    /// Iterations of the cool-down after the rule holds (0: the level ends at once).
    pub cooldown: usize,
}

impl Default for Plateau {
    /// Window 10, fraction 5 %, cool-down 10: measured on the main job's MI levels and on known
    /// deformations with LNCC and MI (see [`super::DenseOptions::defaults`]).
    fn default() -> Self {
        Plateau { window: 10, fraction: 0.05, cooldown: 10 }
    }
}

impl Plateau {
    /// Whether the rule holds for `losses` (one per iteration so far, the level's first at index 0).
    /// False while there are `window` or fewer losses, or when the losses are not finite.
    pub fn holds(&self, losses: &[f64]) -> bool {
        let w = self.window.max(1);
        let n = losses.len();
        if n <= w {
            return false;
        }
        let (first, then, last) = (losses[0], losses[n - 1 - w], losses[n - 1]);
        if !(first.is_finite() && then.is_finite() && last.is_finite()) {
            return false;
        }
        then - last <= self.fraction * (first - last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_holds_when_the_recent_fall_is_a_small_share_of_the_levels_fall() {
        let p = Plateau { window: 2, fraction: 0.1, cooldown: 0 };
        // Falling by 1 per iteration: the last two iterations are 2/3 of the fall, never a plateau.
        let falling = [3.0, 2.0, 1.0, 0.0];
        assert!((1..=4).all(|n| !p.holds(&falling[..n])));
        // 10 -> 1 at once, then 0.05 per iteration: at index 3 the last two iterations fell 0.1 of 9.1
        // (1.1 %); not at index 2, where the window reaches back to the first loss (the whole fall).
        let fast_then_flat = [10.0, 1.0, 0.95, 0.9];
        assert!(!p.holds(&fast_then_flat[..3]));
        assert!(p.holds(&fast_then_flat));
        // Exactly at the fraction holds: fall 10 in all, 1 over the window.
        assert!(p.holds(&[10.0, 1.0, 0.5, 0.0]));
        assert!(!p.holds(&[10.0, 1.01, 0.5, 0.0]));
        // A flat loss and a rising one hold; non-finite losses never do.
        assert!(p.holds(&[1.0, 1.0, 1.0]));
        assert!(p.holds(&[1.0, 1.5, 2.0]));
        assert!(!p.holds(&[f64::NAN, 1.0, 0.5]));
    }

    #[test]
    fn flat_converges_and_falling_does_not() {
        let mut w = WindowedSlope::new(5, 1e-3);
        let falling: Vec<bool> = (0..5).map(|i| w.push(10.0 - i as f64)).collect();
        assert_eq!(falling, vec![false; 5]);
        let mut f = WindowedSlope::new(5, 1e-3);
        let c: Vec<bool> = (0..6).map(|i| f.push(1.0 + 1e-6 * i as f64)).collect();
        assert_eq!(c, vec![false, false, false, false, true, true]);
    }
}
