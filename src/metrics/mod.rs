//! Similarity measures, regularizers and evaluation measures.
//!
//! | module | what |
//! |---|---|
//! | [`evaluation`] | Dice, HD95, Jacobian statistics, SSIM, PSNR, TRE, mean displacement error (not differentiable) |

pub mod evaluation;
