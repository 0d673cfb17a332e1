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
//! | [`powell`](mod@powell) | Powell's derivative-free conjugate-direction method with Brent line searches |
//! | [`lbfgs`](mod@lbfgs) | L-BFGS (two-loop recursion) with a strong-Wolfe line search |
//! | [`objective`] | candle losses as flat-vector objectives (value, gradient); physical-shift scales |
//! | [`sampled`] | the fused sampled loss of a linear transform as an f64 objective (no tensors per evaluation) |
//!
//! [`powell()`](fn@powell) and [`lbfgs()`](fn@lbfgs) work on a flat `&[f64]` parameter vector with per-parameter scales (one unit
//! of search moves each parameter by its scale), a cancel flag checked before every evaluation, and a
//! non-finite guard that keeps the best point.

pub mod convergence;
pub mod dense;
pub mod init;
pub mod iso;
pub mod lbfgs;
pub mod objective;
pub mod optimizer;
pub mod powell;
pub(crate) mod progress;
pub mod sampled;

pub use convergence::WindowedSlope;
pub use dense::{dense_transform, iso_dense, DenseModel, DenseOptions, DenseResult, Regularizer};
pub use iso::{
    iso_linear, iso_linear_pyramids, IsoOptimizer, IsoOptions, IsoResult, LevelReport, Polish, Sampling, Schedule,
    DEFAULT_POINTS,
};
pub use lbfgs::{lbfgs, LbfgsOptions, LbfgsResult};
pub use objective::{flatten, physical_shift_scales, tensor_objective, tensor_value, unflatten};
pub use optimizer::{Adam, AdamVec, Optimizer, Sgd};
pub use powell::{powell, PowellOptions, PowellResult};
