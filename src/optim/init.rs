//! Initial alignment of a moving image to a fixed one, as ANTs (`--initial-moving-transform`) and
//! SimpleITK (`CenteredTransformInitializer`) offer it.

use crate::error::{Error, Result};
use crate::image::Image;
use crate::names;
use crate::spatial::{Linear, LinearKind};

/// How to start a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// No translation; centre of rotation at the fixed grid's centre.
    Identity,
    /// Translate the fixed grid's centre onto the moving grid's centre (SimpleITK `GEOMETRY`).
    Centres,
    /// Translate the fixed image's intensity centre of mass onto the moving one's, rotating about the
    /// fixed centre of mass (SimpleITK `MOMENTS`, ANTs `[fixed, moving, 1]`).
    Moments,
}

impl Init {
    /// Parses `identity`, `centres` / `centers` / `geometry`, `moments` / `com` (with "did you mean").
    pub fn parse(name: &str) -> Result<Self> {
        names::lookup(
            "initialization",
            name,
            &[
                ("identity", Init::Identity),
                ("centres", Init::Centres),
                ("centers", Init::Centres),
                ("geometry", Init::Centres),
                ("moments", Init::Moments),
                ("com", Init::Moments),
            ],
        )
    }
}

/// The intensity centre of mass (world mm) of channel 0, weights `value - min` over finite voxels.
///
/// Errors: [`Error::InvalidArgument`] when the image is constant or has no finite voxel.
pub fn centre_of_mass(img: &Image) -> Result<[f64; 3]> {
    let v = img.channel(0)?.to_vec_f32()?;
    let min = v.iter().filter(|x| x.is_finite()).fold(f32::INFINITY, |a, b| a.min(*b));
    let [nx, ny, _] = img.grid().shape();
    let (mut s, mut acc) = (0f64, [0f64; 3]);
    for (n, &x) in v.iter().enumerate() {
        if !x.is_finite() {
            continue;
        }
        let w = (x - min) as f64;
        if w > 0.0 {
            s += w;
            acc[0] += w * (n % nx) as f64;
            acc[1] += w * ((n / nx) % ny) as f64;
            acc[2] += w * (n / (nx * ny)) as f64;
        }
    }
    if s == 0.0 {
        return Err(Error::arg("centre of mass", "the image is constant"));
    }
    Ok(img.grid().index_to_world([acc[0] / s, acc[1] / s, acc[2] / s]))
}

/// The identity of `kind` moved by `init`: translation from the fixed to the moving centre (grid or
/// centre of mass), centre of rotation at the fixed one.
///
/// Errors: as [`centre_of_mass`].
pub fn initial_transform(kind: LinearKind, fixed: &Image, moving: &Image, init: Init) -> Result<Linear> {
    let (cf, cm) = match init {
        Init::Identity => (fixed.grid().centre(), fixed.grid().centre()),
        Init::Centres => (fixed.grid().centre(), moving.grid().centre()),
        Init::Moments => (centre_of_mass(fixed)?, centre_of_mass(moving)?),
    };
    let mut p: Vec<f64> = kind.identity_params().iter().map(|&v| v as f64).collect();
    if kind == LinearKind::Matrix {
        p[3] = cm[0] - cf[0];
        p[7] = cm[1] - cf[1];
        p[11] = cm[2] - cf[2];
    } else {
        p[..3].copy_from_slice(&[cm[0] - cf[0], cm[1] - cf[1], cm[2] - cf[2]]);
    }
    Linear::from_params(kind, &p, cf)
}
