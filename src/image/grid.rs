//! `Grid`: the sampling grid of an image in physical space, and every coordinate conversion.
//!
//! Conventions (used everywhere in regsh):
//! - **Voxel indices** `(i, j, k)` address the x, y, z axes of the NIfTI file (x fastest on disk). A voxel
//!   index names the voxel *centre*.
//! - **World** coordinates are millimetres in the NIfTI / scanner RAS+ frame (x to the Right, y Anterior,
//!   z Superior), as given by the NIfTI sform or qform. ITK and ANTs use LPS: see
//!   [`RAS_TO_LPS`] where a file format needs it.
//! - **Normalized** coordinates `(u, v, w)` in `[-1, 1]` per axis, ordered x, y, z, with -1 and +1 at the
//!   centres of the first and last voxels (PyTorch `grid_sample` with `align_corners=True`, as deepali and
//!   FireANTs use). An axis of size 1 maps its single voxel to 0.
//!
//! The voxel-to-world matrix is `A = [D * diag(spacing) | origin]`, where the columns of the 3x3 direction
//! matrix `D` are the unit world directions of the voxel axes. For an affine with shear the columns are not
//! orthogonal; they are kept as they are, so the file's affine is reproduced exactly.

use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};
use serde::Serialize;

use crate::error::{Error, Result};

/// Flips x and y: maps RAS+ world points to ITK's LPS+ and back (it is its own inverse).
pub const RAS_TO_LPS: [f64; 3] = [-1.0, -1.0, 1.0];

/// The sampling grid of an image: shape, spacing, origin and direction, all in world millimetres.
///
/// ```
/// use nalgebra::Matrix4;
/// use regsh::image::Grid;
/// // avg152's LAS 2 mm grid: x index runs to the Left.
/// let a = Matrix4::new(-2.0, 0.0, 0.0, 90.0, 0.0, 2.0, 0.0, -126.0, 0.0, 0.0, 2.0, -72.0, 0.0, 0.0, 0.0, 1.0);
/// let g = Grid::from_affine([91, 109, 91], &a).unwrap();
/// assert_eq!(g.orientation(), "LAS");
/// assert_eq!(g.index_to_world([45.0, 54.0, 45.0]), [0.0, -18.0, 18.0]);
/// assert_eq!(g.downsampled(2.0).unwrap().shape(), [46, 55, 46]);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Grid {
    /// Number of voxels along x, y, z (NIfTI order).
    shape: [usize; 3],
    /// Voxel size along x, y, z in mm (positive).
    spacing: [f64; 3],
    /// World position (mm, RAS+) of the centre of voxel (0, 0, 0).
    origin: [f64; 3],
    /// Direction cosines: column `a` is the unit world direction of voxel axis `a`.
    #[serde(serialize_with = "ser_matrix3")]
    direction: Matrix3<f64>,
}

fn ser_matrix3<S: serde::Serializer>(m: &Matrix3<f64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    let rows: Vec<[f64; 3]> = (0..3).map(|r| [m[(r, 0)], m[(r, 1)], m[(r, 2)]]).collect();
    rows.serialize(s)
}

impl Grid {
    /// A grid from its parts. `direction` columns must be unit-length directions of the x, y, z voxel
    /// axes; they are renormalized, and must be linearly independent.
    ///
    /// Errors: [`Error::InvalidGrid`] on a zero dimension, a spacing that is not positive and finite, or a
    /// singular or non-finite direction matrix.
    pub fn new(shape: [usize; 3], spacing: [f64; 3], origin: [f64; 3], direction: Matrix3<f64>) -> Result<Self> {
        if shape.contains(&0) {
            return Err(Error::InvalidGrid(format!("zero dimension in shape {shape:?}")));
        }
        if spacing.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(Error::InvalidGrid(format!("spacing must be positive and finite, got {spacing:?}")));
        }
        if origin.iter().any(|o| !o.is_finite()) {
            return Err(Error::InvalidGrid(format!("origin must be finite, got {origin:?}")));
        }
        let mut d = direction;
        for c in 0..3 {
            let n = d.column(c).norm();
            if !(n.is_finite() && n > 0.0) {
                return Err(Error::InvalidGrid(format!("direction column {c} is zero or not finite")));
            }
            d.set_column(c, &(d.column(c) / n));
        }
        if d.determinant().abs() < 1e-8 {
            return Err(Error::InvalidGrid("direction matrix is singular (axes not independent)".into()));
        }
        Ok(Grid { shape, spacing, origin, direction: d })
    }

    /// An axis-aligned RAS grid (identity direction).
    pub fn axis_aligned(shape: [usize; 3], spacing: [f64; 3], origin: [f64; 3]) -> Result<Self> {
        Grid::new(shape, spacing, origin, Matrix3::identity())
    }

    /// A grid from a 4x4 voxel-to-world matrix (e.g. a NIfTI sform). Spacing is the length of each
    /// column of the 3x3 part, direction its normalized columns, origin the translation.
    ///
    /// Errors: [`Error::InvalidGrid`] when the matrix is singular, not finite, or its last row is not
    /// `[0, 0, 0, 1]`.
    pub fn from_affine(shape: [usize; 3], affine: &Matrix4<f64>) -> Result<Self> {
        if affine.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidGrid("affine has non-finite entries".into()));
        }
        let last = affine.row(3);
        if (last[0], last[1], last[2], last[3]) != (0.0, 0.0, 0.0, 1.0) {
            return Err(Error::InvalidGrid(format!("affine last row must be [0, 0, 0, 1], got {last}")));
        }
        let m: Matrix3<f64> = affine.fixed_view::<3, 3>(0, 0).into();
        let mut spacing = [0.0; 3];
        for (c, s) in spacing.iter_mut().enumerate() {
            *s = m.column(c).norm();
        }
        if spacing.contains(&0.0) {
            return Err(Error::InvalidGrid(format!("affine has a zero column (spacing {spacing:?})")));
        }
        let origin = [affine[(0, 3)], affine[(1, 3)], affine[(2, 3)]];
        Grid::new(shape, spacing, origin, m)
    }

    /// Number of voxels along x, y, z.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    /// Voxel size along x, y, z in mm.
    pub fn spacing(&self) -> [f64; 3] {
        self.spacing
    }
    /// World position (mm) of the centre of voxel (0, 0, 0).
    pub fn origin(&self) -> [f64; 3] {
        self.origin
    }
    /// Direction cosines (columns: world directions of the x, y, z voxel axes).
    pub fn direction(&self) -> Matrix3<f64> {
        self.direction
    }
    /// Total number of voxels.
    pub fn num_voxels(&self) -> usize {
        self.shape.iter().product()
    }
    /// Tensor shape `(Z, Y, X)` of one channel on this grid.
    pub fn zyx(&self) -> [usize; 3] {
        [self.shape[2], self.shape[1], self.shape[0]]
    }

    /// The 4x4 voxel-to-world matrix (voxel indices to RAS mm).
    pub fn voxel_to_world(&self) -> Matrix4<f64> {
        let m = self.direction * Matrix3::from_diagonal(&Vector3::from(self.spacing));
        let mut a = Matrix4::identity();
        a.fixed_view_mut::<3, 3>(0, 0).copy_from(&m);
        a[(0, 3)] = self.origin[0];
        a[(1, 3)] = self.origin[1];
        a[(2, 3)] = self.origin[2];
        a
    }

    /// The 4x4 world-to-voxel matrix, inverse of [`Grid::voxel_to_world`].
    pub fn world_to_voxel(&self) -> Matrix4<f64> {
        // Invertible by construction (positive spacing, non-singular direction).
        self.voxel_to_world().try_inverse().unwrap_or_else(Matrix4::identity)
    }

    /// The 4x4 matrix from voxel indices to normalized `[-1, 1]` coordinates (align_corners=True).
    pub fn voxel_to_normalized(&self) -> Matrix4<f64> {
        let mut a = Matrix4::identity();
        for ax in 0..3 {
            let n = self.shape[ax];
            if n > 1 {
                a[(ax, ax)] = 2.0 / (n as f64 - 1.0);
                a[(ax, 3)] = -1.0;
            } else {
                a[(ax, ax)] = 0.0;
                a[(ax, 3)] = 0.0;
            }
        }
        a
    }

    /// The 4x4 matrix from normalized coordinates to voxel indices. Along an axis of size 1 every
    /// normalized value maps to index 0.
    pub fn normalized_to_voxel(&self) -> Matrix4<f64> {
        let mut a = Matrix4::identity();
        for ax in 0..3 {
            let n = self.shape[ax];
            if n > 1 {
                a[(ax, ax)] = (n as f64 - 1.0) / 2.0;
                a[(ax, 3)] = (n as f64 - 1.0) / 2.0;
            } else {
                a[(ax, ax)] = 0.0;
                a[(ax, 3)] = 0.0;
            }
        }
        a
    }

    /// The 4x4 matrix from world mm to normalized coordinates.
    pub fn world_to_normalized(&self) -> Matrix4<f64> {
        self.voxel_to_normalized() * self.world_to_voxel()
    }

    /// The 4x4 matrix from normalized coordinates to world mm.
    pub fn normalized_to_world(&self) -> Matrix4<f64> {
        self.voxel_to_world() * self.normalized_to_voxel()
    }

    /// World position (mm) of a (possibly fractional) voxel index.
    pub fn index_to_world(&self, ijk: [f64; 3]) -> [f64; 3] {
        apply(&self.voxel_to_world(), ijk)
    }

    /// Fractional voxel index of a world position (mm).
    pub fn world_to_index(&self, xyz: [f64; 3]) -> [f64; 3] {
        apply(&self.world_to_voxel(), xyz)
    }

    /// World position (mm) of the grid's centre (midpoint of the first and last voxel centres).
    pub fn centre(&self) -> [f64; 3] {
        self.index_to_world([0, 1, 2].map(|a| (self.shape[a] as f64 - 1.0) / 2.0))
    }

    /// The world positions (mm) of the 8 outer corners of the field of view (voxel edges, not centres).
    pub fn corners(&self) -> [[f64; 3]; 8] {
        let mut out = [[0.0; 3]; 8];
        for (c, o) in out.iter_mut().enumerate() {
            let ijk = [0, 1, 2].map(|a| if c >> a & 1 == 1 { self.shape[a] as f64 - 0.5 } else { -0.5 });
            *o = self.index_to_world(ijk);
        }
        out
    }

    /// Orientation codes as nibabel's `aff2axcodes` gives them, e.g. `"RAS"`, `"LAS"`, `"LSA"`: for each
    /// voxel axis, the world direction in which its index increases.
    pub fn orientation(&self) -> String {
        (0..3)
            .map(|c| {
                let col = self.direction.column(c);
                let w = (0..3).max_by(|&a, &b| col[a].abs().total_cmp(&col[b].abs())).unwrap_or(c);
                let pos = col[w] >= 0.0;
                match (w, pos) {
                    (0, true) => 'R',
                    (0, false) => 'L',
                    (1, true) => 'A',
                    (1, false) => 'P',
                    (2, true) => 'S',
                    _ => 'I',
                }
            })
            .collect()
    }

    /// The same field of view sampled with `shape` voxels: spacing becomes `spacing * old / new` so that
    /// the world extent (edge to edge) and the centre are kept exactly; direction is unchanged.
    ///
    /// Errors: [`Error::InvalidGrid`] for a zero dimension.
    pub fn with_shape(&self, shape: [usize; 3]) -> Result<Grid> {
        let spacing = [0, 1, 2].map(|a| self.spacing[a] * self.shape[a] as f64 / shape[a].max(1) as f64);
        // The first voxel centre sits half a (new) voxel inside the unchanged first edge.
        let edge_idx = [-0.5, -0.5, -0.5];
        let edge = self.index_to_world(edge_idx);
        let shift = self.direction * Vector3::from([0, 1, 2].map(|a| spacing[a] / 2.0));
        let origin = [edge[0] + shift[0], edge[1] + shift[1], edge[2] + shift[2]];
        Grid::new(shape, spacing, origin, self.direction)
    }

    /// The grid of a pyramid level downsampled by `factor`: `max(1, round(n / factor))` voxels per axis,
    /// keeping extent and centre (see [`Grid::with_shape`]). `factor` 1 returns the grid itself.
    ///
    /// Errors: [`Error::InvalidArgument`] when `factor` is not finite and >= 1.
    pub fn downsampled(&self, factor: f64) -> Result<Grid> {
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(Error::arg("downsample", format!("factor must be >= 1, got {factor}")));
        }
        if factor == 1.0 {
            return Ok(self.clone());
        }
        self.with_shape(self.shape.map(|n| ((n as f64 / factor).round() as usize).max(1)))
    }

    /// The sub-grid of voxels `start .. start + size` (voxel indices along x, y, z), the same physical
    /// points. `start` may be negative (a grid extending beyond this one, as padding makes).
    ///
    /// Errors: [`Error::InvalidGrid`] for a zero size.
    pub fn sub_grid(&self, start: [i64; 3], size: [usize; 3]) -> Result<Grid> {
        let o = self.index_to_world(start.map(|s| s as f64));
        Grid::new(size, self.spacing, o, self.direction)
    }

    /// Whether two grids sample the same points (shape equal, affines equal within `tol` mm).
    pub fn same_as(&self, other: &Grid, tol: f64) -> bool {
        self.shape == other.shape && (self.voxel_to_world() - other.voxel_to_world()).iter().all(|d| d.abs() <= tol)
    }

    /// Rows of the voxel-to-world matrix, row-major (as `regsh info --json` prints it).
    pub fn affine_rows(&self) -> [[f64; 4]; 4] {
        let a = self.voxel_to_world();
        [0, 1, 2, 3].map(|r| [a[(r, 0)], a[(r, 1)], a[(r, 2)], a[(r, 3)]])
    }
}

/// Applies a 4x4 homogeneous matrix to a 3-D point.
pub fn apply(m: &Matrix4<f64>, p: [f64; 3]) -> [f64; 3] {
    let v = m * Vector4::new(p[0], p[1], p[2], 1.0);
    [v[0], v[1], v[2]]
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [nx, ny, nz] = self.shape;
        let [sx, sy, sz] = self.spacing;
        let [ox, oy, oz] = self.origin;
        write!(
            f,
            "Grid({nx}x{ny}x{nz}, spacing {sx:.4}x{sy:.4}x{sz:.4} mm, origin ({ox:.3}, {oy:.3}, {oz:.3}) mm, {})",
            self.orientation()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [f64; 3], b: [f64; 3], tol: f64) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    /// LSA, 2x2x3 mm: x index goes Left, y index Superior, z index Anterior.
    fn lsa() -> Grid {
        #[rustfmt::skip]
        let a = Matrix4::new(
            -2.0, 0.0, 0.0, 90.0,
            0.0, 0.0, 3.0, -100.0,
            0.0, 2.0, 0.0, -80.0,
            0.0, 0.0, 0.0, 1.0);
        Grid::from_affine([10, 12, 14], &a).unwrap()
    }

    #[test]
    fn affine_round_trip_and_orientation() {
        let g = lsa();
        assert_eq!(g.spacing(), [2.0, 2.0, 3.0]);
        assert_eq!(g.origin(), [90.0, -100.0, -80.0]);
        assert_eq!(g.orientation(), "LSA");
        // Voxel (1, 2, 3): x = 90 - 2, y = -100 + 3*3, z = -80 + 2*2.
        assert_eq!(g.index_to_world([1.0, 2.0, 3.0]), [88.0, -91.0, -76.0]);
        assert!(close(g.world_to_index([88.0, -91.0, -76.0]), [1.0, 2.0, 3.0], 1e-12));
    }

    #[test]
    fn normalized_coordinates() {
        let g = lsa();
        let n = g.voxel_to_normalized();
        assert!(close(apply(&n, [0.0, 0.0, 0.0]), [-1.0; 3], 1e-12));
        assert!(close(apply(&n, [9.0, 11.0, 13.0]), [1.0; 3], 1e-12));
        let back = g.normalized_to_world() * g.world_to_normalized();
        assert!((back - Matrix4::identity()).iter().all(|d| d.abs() < 1e-12));
        let single = Grid::axis_aligned([1, 5, 5], [1.0; 3], [0.0; 3]).unwrap();
        assert_eq!(apply(&single.voxel_to_normalized(), [0.0, 2.0, 4.0]), [0.0, 0.0, 1.0]);
    }

    #[test]
    fn downsampling_keeps_extent_and_centre() {
        let g = lsa();
        for f in [2.0, 3.0, 4.0, 16.0] {
            let d = g.downsampled(f).unwrap();
            assert!(close(d.centre(), g.centre(), 1e-9), "centre at factor {f}");
            for (a, b) in d.corners().iter().zip(g.corners()) {
                assert!(close(*a, b, 1e-9), "corner at factor {f}: {a:?} vs {b:?}");
            }
        }
        assert_eq!(g.downsampled(2.0).unwrap().shape(), [5, 6, 7]);
        assert!(g.downsampled(0.5).is_err());
    }

    #[test]
    fn invalid_grids_are_errors() {
        assert!(Grid::axis_aligned([0, 1, 1], [1.0; 3], [0.0; 3]).is_err());
        assert!(Grid::axis_aligned([1, 1, 1], [1.0, -1.0, 1.0], [0.0; 3]).is_err());
        assert!(Grid::axis_aligned([1, 1, 1], [1.0, f64::NAN, 1.0], [0.0; 3]).is_err());
        let mut sing = Matrix4::identity();
        sing[(1, 1)] = 0.0;
        assert!(Grid::from_affine([2, 2, 2], &sing).is_err());
    }

    #[test]
    fn sheared_affine_is_reproduced() {
        #[rustfmt::skip]
        let a = Matrix4::new(
            1.0, 0.2, 0.0, 1.0,
            0.0, 1.0, 0.1, 2.0,
            0.0, 0.0, 2.0, 3.0,
            0.0, 0.0, 0.0, 1.0);
        let g = Grid::from_affine([4, 4, 4], &a).unwrap();
        assert!((g.voxel_to_world() - a).iter().all(|d| d.abs() < 1e-12));
    }
}
