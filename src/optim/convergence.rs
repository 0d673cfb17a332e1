//! A windowed-slope convergence test (as deepali's): fit a line to the last `window` loss values and
//! stop when its slope, relative to the loss magnitude, is below `tol` per iteration.

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

#[cfg(test)]
mod tests {
    use super::*;

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
