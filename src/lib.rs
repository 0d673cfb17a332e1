//! # regsh: a scriptable registration shell for medical images
//!
//! Layers import only downward: `image -> ops -> (spatial, metrics, nn) -> optim -> train -> pipeline`
//! `-> (snapshot, dsl) -> session -> (repl, watch) -> (register, measure, info, cli)`; `error`, `names`,
//! `outputs` and `device` serve every layer.
//!
//! | module | what |
//! |---|---|
//! | [`image`] | [`image::Grid`] (world <-> voxel <-> normalized), [`image::Image`] = `(C, Z, Y, X)` tensor + grid, NIfTI I/O, resampling, smoothing, pyramids, crop / pad / normalize / threshold / one-hot |
//! | [`ops`] | fused CPU kernels with hand-written backward passes and slow twins: sampling, warps, local filters, Parzen statistics |
//! | [`spatial`] | transforms in world mm (linear, DDF, SVF, B-spline, composite), inverses, Jacobians, the warp, ITK / ANTs files |
//! | [`metrics`] | similarity measures and their registry, regularizers, evaluation measures |
//! | [`nn`] | 3-D network blocks: fused conv3d / transposed conv3d (im2col + gemm, hand-written backward) with slow twins, pooling, upsampling, norms, activations, MLP heads |
//! | [`optim`] | the optimizer core on flat parameters (Adam, SGD, L-BFGS, Powell; one loop each), stop reasons, convergence, initialization, multi-scale ISO, dense levels |
//! | [`snapshot`] | PNG pictures of a registration: orthogonal slices, checkerboard, loss curves (`regsh snapshot`) |
//! | [`train`] | registration networks as transforms ([`train::Network`]), training pairs, unsupervised training with checkpoints |
//! | [`pipeline`] | Rhai-free registration pipelines: `RegState`, `init`, `iso`, `warp`, and the recipes (`register`): the one registration path of the CLI and the DSL |
//! | [`dsl`], [`session`], [`diagnostics`] | the Rhai DSL (keyword arguments, `\|>`, builtins, help, stdlib), the evaluation session, error reports |
//! | [`repl`], [`watch`] | the interactive shell (rustyline) and hot-reloaded recipes (notify) |
//! | [`register`], [`info`], [`measure`], [`cli`] | the command line: `regsh register` (arguments to [`pipeline::RegisterOptions`]), `info`, `measure` |
//! | [`error`], [`names`], [`outputs`], [`device`] | typed errors, lookup with "did you mean", output locations checked before the work, compute device |

pub mod cli;
pub mod device;
pub mod diagnostics;
pub mod dsl;
pub mod error;
pub mod image;
pub mod info;
pub mod measure;
pub mod metrics;
pub mod names;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod outputs;
pub mod pipeline;
pub mod plot;
pub mod register;
pub mod repl;
pub mod session;
pub mod snapshot;
pub mod spatial;
pub mod train;
pub mod watch;

pub use error::{Error, Result};
pub use image::{Grid, Image};
