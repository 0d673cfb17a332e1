//! Optimization: gradient optimizers over candle variables, convergence tests, initial
//! alignments, and the multi-scale instance-specific optimization (ISO) runner of Chen et al. 2024 (PET/CT affine).
//!
//! | module | what |
//! |---|---|
//! | [`optimizer`] | Adam and SGD (Nesterov) on flat vectors ([`VecOptimizer`]; Adam's arithmetic once, [`AdamMoments`]) and their tensor twins for network weights ([`Optimizer`]), per-parameter scales |
//! | [`convergence`] | windowed-slope convergence test (linear levels), plateau rule (dense levels) |
//! | [`init`] | initial transforms: identity, grid centres, centres of mass |
//! | [`dense`] | multi-scale deformable registration: greedy field, SVF, B-spline; smoothing, regularizer |
//! | [`iso`] | multi-scale ISO of a linear transform: schedule, NaN guard, best-so-far, cancel flag |
//! | [`powell`](mod@powell) | Powell's derivative-free conjugate-direction method with Brent line searches |
//! | [`lbfgs`](mod@lbfgs) | L-BFGS (two-loop recursion) with a strong-Wolfe line search |
//! | [`minimize`] | the loops over flat f64 parameters every optimization but network training shares: first-order ([`VecOptimizer`]), L-BFGS, Powell; the [`Objective`] trait |
//! | [`level`] | the objectives of one linear ISO level: fused sampled points, or tensors (grid, jittered grid, random points); the level mask |
//! | [`search`] | a coarse search over rotations (FLIRT-style) before a linear registration: the capture range |
//! | [`stop`] | why an optimization ended ([`Stop`]) |
//! | [`objective`] | candle losses as flat-vector objectives (value, gradient); physical-shift scales |
//! | [`sampled`] | the fused sampled loss of a linear transform as an f64 objective (no tensors per evaluation) |
//!
//! [`powell()`](fn@powell) and [`lbfgs()`](fn@lbfgs) work on a flat `&[f64]` parameter vector with per-parameter scales (one unit
//! of search moves each parameter by its scale), a cancel flag checked before every evaluation, and a
//! non-finite guard that keeps the best point.

pub mod convergence;
pub mod dense;
pub mod groupwise;
pub mod init;
pub mod iso;
pub mod lbfgs;
pub mod level;
pub mod minimize;
pub mod objective;
pub mod optimizer;
pub mod powell;
pub(crate) mod progress;
pub mod sampled;
pub mod search;
pub mod stop;

pub use convergence::{Plateau, WindowedSlope};
pub use dense::{dense_transform, iso_dense, DenseModel, DenseOptions, DenseResult, Regularizer};
pub use iso::{
    iso_linear, iso_linear_pyramids, IsoOptimizer, IsoOptions, IsoResult, LevelReport, Polish, Sampling, Schedule,
    DEFAULT_POINTS,
};
pub use lbfgs::{lbfgs, LbfgsOptions, LbfgsResult};
pub use minimize::{first_order, lbfgs_run, powell_run, Eval, FirstOrderOptions, Objective, Run};
pub use objective::{flatten, physical_shift_scales, tensor_objective, tensor_value, unflatten};
pub use optimizer::{Adam, AdamMoments, AdamVec, Optimizer, Sgd, SgdVec, VecOptimizer};
pub use powell::{powell, PowellOptions, PowellResult};
pub use search::{rotation_search, RotationSearch, SearchReport};
pub use stop::{Criterion, Stop};
