//! Similarity measures, regularizers and evaluation measures.
//!
//! | module | what |
//! |---|---|
//! | [`functional`] | stateless similarity maths: MSE, NCC, LNCC, Parzen MI / NMI, Parzen correlation ratio (global and per patch) |
//! | [`similarity`] | [`similarity::Metric`]: named measures with options and a loss, the registry with aliases |
//! | [`regularizers`] | diffusion, bending energy, folding penalty of displacement fields |
//! | [`evaluation`] | Dice, HD95, Jacobian statistics, SSIM, PSNR, TRE, mean displacement error (not differentiable) |

pub mod evaluation;
pub mod functional;
pub mod groupwise;
pub mod regularizers;
pub mod response;
pub mod similarity;

pub use similarity::{Metric, MetricKind, OptionValue};
