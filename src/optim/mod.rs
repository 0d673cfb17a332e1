//! Optimization: gradient optimizers over candle variables, a windowed-slope convergence test, initial
//! alignments, and the multi-scale instance-specific optimization (ISO) runner of seed `000`.
//!
//! | module | what |
//! |---|---|
//! | [`optimizer`] | Adam, SGD with (Nesterov) momentum, per-parameter scales |
//! | [`convergence`] | windowed-slope convergence test |
//! | [`init`] | initial transforms: identity, grid centres, centres of mass |
//! | [`dense`] | multi-scale deformable registration: greedy field, SVF, B-spline; smoothing, regularizer |
//! | [`iso`] | multi-scale ISO of a linear transform: schedule, NaN guard, best-so-far, cancel flag |

pub mod convergence;
pub mod dense;
pub mod init;
pub mod iso;
pub mod optimizer;

pub use convergence::WindowedSlope;
pub use dense::{dense_transform, iso_dense, DenseModel, DenseOptions, DenseResult, Regularizer};
pub use iso::{iso_linear, IsoOptions, IsoResult, LevelReport, Sampling, Schedule};
pub use optimizer::{Adam, Optimizer, Sgd};
