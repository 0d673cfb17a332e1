//! Registration pipelines as plain values, independent of the DSL: a [`RegState`] (fixed and moving
//! images, the current transform, what each stage did) is built by [`init`], refined by stages such as
//! [`iso`], and turned into the warped moving image by [`warp`].
//!
//! Argument order follows the DSL: `init(moving, fixed)` takes the MOVING image first, as in
//! `init(m, f) |> iso(cr_patch, scales=5) |> warp`.
//!
//! | item | what |
//! |---|---|
//! | [`RegState`], [`StateTransform`] | the value that flows through a pipeline |
//! | [`init`], [`InitOptions`] | the starting transform (identity / centres / moments) of a kind |
//! | [`iso`], [`IsoStage`] | multi-scale instance-specific optimization of the current transform |
//! | [`iso_deformable`], [`DenseStage`] | a dense stage (greedy field, SVF, B-spline) after the linear part |
//! | [`net_init`] | the starting state from a registration network's prediction |
//! | [`register`], [`RegisterOptions`] | a whole recipe (`rigid`, `affine`, `syn`, ...) from `init` through its stages: the one registration path of the CLI and the DSL |
//! | [`warp`] | the moving image resampled through the transform onto the fixed grid |
//!
//! New stage kinds add a variant to [`StateTransform`] and a function here; [`StateTransform::to_transform`] is the one match over
//! transform kinds that the rest of the pipeline goes through.

pub mod recipes;
mod stages;
mod state;

pub use recipes::{
    default_iterations, default_lr, register, register_linear, register_linear_with, DenseSettings, RegisterOptions,
    RunControl,
};
pub use stages::{init, iso, iso_deformable, net_init, warp, DenseStage, InitOptions, IsoStage};
pub use state::{RegState, StageReport, StateTransform};
