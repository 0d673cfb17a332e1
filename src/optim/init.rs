//! Initial alignment of a moving image to a fixed one, as ANTs (`--initial-moving-transform`) and
//! SimpleITK (`CenteredTransformInitializer`) offer it.

use crate::error::{Error, Result};
use crate::image::Image;
use crate::names;
use crate::spatial::{Linear, LinearKind};
use rayon::prelude::*;

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
    /// [`Init::Moments`], then a coarse search over rotations by the registration's measure
    /// ([`crate::optim::search::rotation_search`], FSL FLIRT-style): for heads tilted by up to about 30
    /// degrees and full heads onto brain-only templates. [`initial_transform`] alone gives the moments
    /// start; the search runs where the measure is known (the linear recipes, the pipeline's `init`).
    Search,
}

impl Init {
    /// Parses `identity`, `centres` / `centers` / `geometry`, `moments` / `com`, `search` (with "did you
    /// mean").
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
                ("search", Init::Search),
            ],
        )
    }
}

/// The intensity centre of mass (world mm) of channel 0, weights `value - min` over finite voxels.
///
/// Errors: [`Error::InvalidArgument`] when the image is constant or has no finite voxel.
pub fn centre_of_mass(img: &Image) -> Result<[f64; 3]> {
    let v = img.channel(0)?.to_vec_f32()?;
    let min = v.par_iter().copied().filter(|x| x.is_finite()).reduce(|| f32::INFINITY, f32::min);
    let [nx, ny, _] = img.grid().shape();
    // Per z plane: the weight and the weighted x, y, z index sums (f64), then summed in plane order.
    let planes: Vec<[f64; 4]> = v
        .par_chunks(nx * ny)
        .enumerate()
        .map(|(k, plane)| {
            let mut a = [0f64; 4];
            for (j, row) in plane.chunks(nx).enumerate() {
                let (mut s, mut sx) = (0f64, 0f64);
                for (i, &x) in row.iter().enumerate() {
                    let w = (x - min) as f64;
                    // NaN and infinite voxels have no weight (`w > 0` is false for NaN).
                    if w > 0.0 && w.is_finite() {
                        s += w;
                        sx += w * i as f64;
                    }
                }
                a[0] += s;
                a[1] += sx;
                a[2] += s * j as f64;
            }
            a[3] = a[0] * k as f64;
            a
        })
        .collect();
    let (s, acc) =
        planes.iter().fold((0f64, [0f64; 3]), |(s, c), a| (s + a[0], [c[0] + a[1], c[1] + a[2], c[2] + a[3]]));
    if s == 0.0 {
        return Err(Error::arg("centre of mass", "the image is constant"));
    }
    Ok(img.grid().index_to_world([acc[0] / s, acc[1] / s, acc[2] / s]))
}

/// The identity of `kind` moved by `init`: translation from the fixed to the moving centre (grid or
/// centre of mass), centre of rotation at the fixed one. [`Init::Search`] gives the centres of mass
/// here (its rotation search needs the measure: [`crate::optim::search::rotation_search`]).
///
/// Errors: as [`centre_of_mass`].
pub fn initial_transform(kind: LinearKind, fixed: &Image, moving: &Image, init: Init) -> Result<Linear> {
    let (cf, cm) = match init {
        Init::Identity => (fixed.grid().centre(), fixed.grid().centre()),
        Init::Centres => (fixed.grid().centre(), moving.grid().centre()),
        Init::Moments | Init::Search => (centre_of_mass(fixed)?, centre_of_mass(moving)?),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;

    #[test]
    fn centre_of_mass_of_two_points_and_a_background() {
        // Background 1 (the minimum: no weight), voxel (2, 1, 3) of weight 3 and (6, 4, 0) of weight 1,
        // a NaN that counts for nothing; world = origin + spacing * index.
        let shape = [8, 5, 4];
        let mut v = vec![1f32; 8 * 5 * 4];
        v[2 + 8 * (1 + 5 * 3)] = 4.0;
        v[6 + 8 * 4] = 2.0;
        v[7] = f32::NAN;
        let g = Grid::axis_aligned(shape, [2.0, 1.0, 3.0], [-10.0, 5.0, 1.0]).unwrap();
        let img = Image::from_vec(v, 1, g).unwrap();
        let c = centre_of_mass(&img).unwrap();
        let idx = [(3.0 * 2.0 + 6.0) / 4.0, (3.0 * 1.0 + 4.0) / 4.0, (3.0 * 3.0 + 0.0) / 4.0];
        let want = [-10.0 + 2.0 * idx[0], 5.0 + idx[1], 1.0 + 3.0 * idx[2]];
        for a in 0..3 {
            assert!((c[a] - want[a]).abs() < 1e-9, "{c:?} vs {want:?}");
        }
        let flat = Image::from_vec(vec![2f32; 8 * 5 * 4], 1, img.grid().clone()).unwrap();
        assert!(centre_of_mass(&flat).is_err());
    }
}
