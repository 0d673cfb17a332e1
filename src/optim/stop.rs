//! Why an optimization ended: one enum for every loop (pyramid levels, L-BFGS, Powell, script
//! objectives, training), so callers compare variants instead of strings. `Display` gives the words the
//! reports (JSON, REPL, logs) show.

use serde::Serialize;

/// Which convergence test ended a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// The windowed-slope test ([`super::WindowedSlope`]): the loss stopped falling.
    Slope,
    /// The largest scaled gradient entry fell below its tolerance (L-BFGS).
    Gradient,
    /// An iteration lowered the objective by less than its relative tolerance.
    FChange,
    /// An iteration (or the line search's interval) moved the parameters by less than their tolerance.
    XChange,
    /// An accepted step moved no scaled coordinate by more than the step tolerance (L-BFGS).
    Step,
    /// A number of iterations in a row found no loss below the best (dense levels' patience).
    NoImprovement,
    /// The loss stopped paying ([`super::Plateau`]) and the step cooled down (dense levels).
    Plateau,
}

/// Why an optimization ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The iteration budget ran out (a level's iterations, an optimizer's most iterations).
    Iterations,
    /// The evaluation budget ran out.
    Evaluations,
    /// A convergence test held.
    Converged(Criterion),
    /// The cancel flag was set (Ctrl-C); the best state reached is kept.
    Cancelled,
    /// The loss (or its gradient) was not finite; the best finite state is kept.
    NonFinite,
    /// No sample point mapped inside the moving image.
    NoOverlap,
    /// The line search found no acceptable step (L-BFGS, after resetting its memory).
    LineSearchFailed,
    /// Training ran all its epochs.
    Epochs,
}

impl Stop {
    /// Whether the run was cancelled.
    pub fn is_cancelled(self) -> bool {
        self == Stop::Cancelled
    }

    /// Whether a convergence test ended the run.
    pub fn is_converged(self) -> bool {
        matches!(self, Stop::Converged(_))
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Iterations => "iterations",
            Stop::Evaluations => "max evaluations",
            Stop::Converged(Criterion::Slope) => "converged",
            Stop::Converged(Criterion::Gradient) => "converged (gradient)",
            Stop::Converged(Criterion::FChange) => "converged (f change)",
            Stop::Converged(Criterion::XChange) => "converged (x change)",
            Stop::Converged(Criterion::Step) => "converged (step)",
            Stop::Converged(Criterion::NoImprovement) => "converged (no improvement)",
            Stop::Converged(Criterion::Plateau) => "converged (plateau)",
            Stop::Cancelled => "cancelled",
            Stop::NonFinite => "non-finite loss",
            Stop::NoOverlap => "no overlap",
            Stop::LineSearchFailed => "line search failed",
            Stop::Epochs => "epochs",
        })
    }
}

/// Every stop reason, for reading its words back.
const ALL: [Stop; 14] = [
    Stop::Iterations,
    Stop::Evaluations,
    Stop::Converged(Criterion::Slope),
    Stop::Converged(Criterion::Gradient),
    Stop::Converged(Criterion::FChange),
    Stop::Converged(Criterion::XChange),
    Stop::Converged(Criterion::Step),
    Stop::Converged(Criterion::NoImprovement),
    Stop::Converged(Criterion::Plateau),
    Stop::Cancelled,
    Stop::NonFinite,
    Stop::NoOverlap,
    Stop::LineSearchFailed,
    Stop::Epochs,
];

impl std::str::FromStr for Stop {
    type Err = String;
    /// The reason `Display` writes as `s`. Errors: words that are no reason.
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter().find(|r| r.to_string() == s).ok_or_else(|| format!("unknown stop reason `{s}`"))
    }
}

/// Reports write the words of `Display`.
impl Serialize for Stop {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Saved reports (training state) are read back from the same words.
impl<'de> serde::Deserialize<'de> for Stop {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_json() {
        assert_eq!(Stop::Converged(Criterion::Gradient).to_string(), "converged (gradient)");
        assert_eq!(serde_json::to_string(&Stop::Cancelled).unwrap(), "\"cancelled\"");
        assert!(Stop::Converged(Criterion::Slope).is_converged() && !Stop::Iterations.is_converged());
        for r in ALL {
            assert_eq!(r.to_string().parse::<Stop>(), Ok(r));
        }
        assert_eq!(serde_json::from_str::<Stop>("\"non-finite loss\"").unwrap(), Stop::NonFinite);
    }
}
