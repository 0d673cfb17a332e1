//! # regsh: a scriptable registration shell for medical images
//!
//! Layers import only downward: `image -> (ops, spatial, metrics, nn) -> optim -> pipeline -> dsl ->
//! session -> repl, watch, cli`. This crate currently holds the foundation:
//!
//! | module | what |
//! |---|---|
//! | [`image`] | [`image::Grid`] (world <-> voxel <-> normalized), [`image::Image`] = `(C, Z, Y, X)` tensor + grid, NIfTI I/O, resampling, smoothing, pyramids, crop / pad / normalize / threshold / one-hot |
//! | [`info`] | the image summary printed by `regsh info` |
//! | [`error`] | typed, coded errors ([`error::Error`]) |
//! | [`names`] | lookup by name with "did you mean" |
//! | [`device`] | compute device choice (CPU; CUDA with the `cuda` feature) |

pub mod cli;
pub mod device;
pub mod error;
pub mod image;
pub mod info;
pub mod measure;
pub mod metrics;
pub mod names;

pub use error::{Error, Result};
pub use image::{Grid, Image};
pub mod ops;
pub mod optim;
pub mod register;
pub mod spatial;
