//! Images in physical space: [`Grid`], [`Image`], NIfTI I/O and the grid-aware image operations.
//!
//! **Layout, once for all of regsh:** an image's data is a candle tensor of shape `(C, Z, Y, X)` on the
//! CPU, x fastest (the order of the NIfTI file on disk, so loading is a plain copy). `C` is the number of
//! channels (the 4th and higher NIfTI dimensions flattened; 1 for an ordinary volume). The element type is
//! `F32`, except where `F32` would change a stored value (float64 files with values f32 cannot hold, or
//! integers beyond 2^24): those load as `F64`, so label maps and round trips keep exact values.

pub mod dtype;
pub mod grid;
pub mod io;
pub mod ops;
pub mod resample;
pub mod smooth;
pub(crate) mod trilinear;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

pub use dtype::DataType;
pub use grid::Grid;

use crate::error::{Error, Result};

/// An image: a `(C, Z, Y, X)` tensor on its [`Grid`] in world space.
#[derive(Clone, Debug)]
pub struct Image {
    data: Tensor,
    grid: Grid,
    dtype: DataType,
}

/// Summary statistics of an image's finite voxels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    /// Smallest finite value (NaN if there is none).
    pub min: f64,
    /// Largest finite value (NaN if there is none).
    pub max: f64,
    /// Mean of the finite values (NaN if there is none).
    pub mean: f64,
    /// Number of NaN or infinite voxels (all channels).
    pub non_finite: usize,
}

impl Image {
    /// An image from a `(C, Z, Y, X)` tensor (F32 or F64) and its grid. `dtype` is the datatype it saves
    /// as by default.
    ///
    /// Errors: [`Error::Shape`] when the tensor is not 4-D or its `(Z, Y, X)` is not the grid's;
    /// [`Error::InvalidArgument`] for an element type other than F32 / F64.
    pub fn new(data: Tensor, grid: Grid, dtype: DataType) -> Result<Self> {
        let dims = data.dims();
        let [z, y, x] = grid.zyx();
        if dims.len() != 4 || dims[1..] != [z, y, x] || dims[0] == 0 {
            return Err(Error::Shape {
                op: "Image::new".into(),
                expected: format!("(C, {z}, {y}, {x})"),
                actual: format!("{dims:?}"),
            });
        }
        if !matches!(data.dtype(), DType::F32 | DType::F64) {
            return Err(Error::arg(
                "Image::new",
                format!("tensor element type must be f32 or f64, got {:?}", data.dtype()),
            ));
        }
        Ok(Image { data, grid, dtype })
    }

    /// A float32 image from values in `(C, Z, Y, X)` order (x fastest), in host memory.
    ///
    /// Errors: [`Error::Shape`] when `values.len()` is not `channels * grid.num_voxels()`.
    pub fn from_vec(values: Vec<f32>, channels: usize, grid: Grid) -> Result<Self> {
        Image::from_vec_on(values, channels, grid, &crate::device::host())
    }

    /// [`Image::from_vec`] on `device` (an operation computed on the host returns its result on the
    /// device of its input).
    ///
    /// Errors: as [`Image::from_vec`].
    pub fn from_vec_on(values: Vec<f32>, channels: usize, grid: Grid, device: &Device) -> Result<Self> {
        let [z, y, x] = grid.zyx();
        if values.len() != channels * grid.num_voxels() || channels == 0 {
            return Err(Error::Shape {
                op: "Image::from_vec".into(),
                expected: format!("{channels} x {z} x {y} x {x} = {} values", channels * grid.num_voxels()),
                actual: format!("{} values", values.len()),
            });
        }
        let t = Tensor::from_vec(values, (channels, z, y, x), device)?;
        Image::new(t, grid, DataType::Float32)
    }

    /// An image of constant `value` on `grid`.
    pub fn full(value: f32, channels: usize, grid: Grid) -> Result<Self> {
        Image::from_vec(vec![value; channels * grid.num_voxels()], channels, grid)
    }

    /// The same image on `device` (no copy when it is there already).
    ///
    /// Errors: tensor errors (a device the build does not support).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Image { data: self.data.to_device(device)?, grid: self.grid.clone(), dtype: self.dtype })
    }

    /// The `(C, Z, Y, X)` tensor.
    pub fn data(&self) -> &Tensor {
        &self.data
    }
    /// The grid in world space.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }
    /// The datatype the image saves as by default (the file's, for a loaded image whose values it
    /// holds exactly; float32 after any operation that makes non-integer values).
    pub fn dtype(&self) -> DataType {
        self.dtype
    }
    /// Number of channels `C`.
    pub fn channels(&self) -> usize {
        self.data.dims()[0]
    }

    /// The same image with another default save datatype.
    pub fn with_dtype(mut self, dtype: DataType) -> Self {
        self.dtype = dtype;
        self
    }

    /// A new image on the same grid with other data of the same `(C', Z, Y, X)` layout (float32 default
    /// save type). Errors: [`Error::Shape`].
    pub fn with_data(&self, data: Tensor) -> Result<Image> {
        Image::new(data, self.grid.clone(), DataType::Float32)
    }

    /// All voxel values as f32 in `(C, Z, Y, X)` order.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(self.data.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// All voxel values as f64 in `(C, Z, Y, X)` order (exact for F64 images).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(self.data.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    }

    /// Value of channel `c` at voxel `(i, j, k)` (x, y, z indices).
    ///
    /// Errors: [`Error::InvalidArgument`] for an index outside the image.
    pub fn value_at(&self, c: usize, ijk: [usize; 3]) -> Result<f64> {
        let [nx, ny, nz] = self.grid.shape();
        if c >= self.channels() || ijk[0] >= nx || ijk[1] >= ny || ijk[2] >= nz {
            return Err(Error::arg(
                "value_at",
                format!("index {c}, {ijk:?} outside ({}, {nx}, {ny}, {nz})", self.channels()),
            ));
        }
        let v = self.data.get(c)?.get(ijk[2])?.get(ijk[1])?.get(ijk[0])?;
        Ok(v.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// Min, max and mean over finite voxels, and the count of NaN / infinite voxels.
    pub fn stats(&self) -> Result<Stats> {
        Ok(stats_of(&self.to_vec_f64()?))
    }

    /// Channel `c` as a single-channel image. Errors: [`Error::InvalidArgument`].
    pub fn channel(&self, c: usize) -> Result<Image> {
        if c >= self.channels() {
            return Err(Error::arg("channel", format!("channel {c} of an image with {} channels", self.channels())));
        }
        Image::new(self.data.narrow(0, c, 1)?, self.grid.clone(), self.dtype)
    }
}

/// Statistics over the finite values of a slice.
pub fn stats_of(values: &[f64]) -> Stats {
    let (mut min, mut max, mut sum, mut n, mut bad) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize, 0usize);
    for &v in values {
        if v.is_finite() {
            min = min.min(v);
            max = max.max(v);
            sum += v;
            n += 1;
        } else {
            bad += 1;
        }
    }
    if n == 0 {
        return Stats { min: f64::NAN, max: f64::NAN, mean: f64::NAN, non_finite: bad };
    }
    Stats { min, max, mean: sum / n as f64, non_finite: bad }
}

impl std::fmt::Display for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({} channel(s), {}, {})", self.channels(), self.dtype, self.grid)
    }
}
