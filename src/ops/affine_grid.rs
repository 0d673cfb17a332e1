//! Sample points of an affine map on a grid: `points[k, j, i] = M * (i, j, k, 1)` for a `(3, 4)` matrix `M`.
//!
//! This is the displacement-to-sample-point step of a linear warp, fused: it never materializes the
//! `(N, 4)` homogeneous index grid, and its backward reduces the upstream gradient straight to the 12
//! matrix entries (`dL/dM = sum_n g_n (i, j, k, 1)^T`).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;

#[derive(Clone, Copy, Debug)]
struct AffineGrid {
    /// Grid size along x, y, z.
    shape: [usize; 3],
}

impl CustomOp1 for AffineGrid {
    fn name(&self) -> &'static str {
        "affine-grid"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let m = f32_slice("affine_grid", s, l)?;
        if m.len() != 12 {
            candle_core::bail!("affine_grid: matrix must be (3, 4), got {:?}", l.shape().dims());
        }
        let m: Vec<f64> = m.iter().map(|&v| v as f64).collect();
        let [nx, ny, nz] = self.shape;
        let mut out = vec![0f32; 3 * nx * ny * nz];
        out.par_chunks_mut(3 * nx * ny).enumerate().for_each(|(k, slab)| {
            for j in 0..ny {
                for i in 0..nx {
                    let h = [i as f64, j as f64, k as f64];
                    let o = 3 * (j * nx + i);
                    for r in 0..3 {
                        slab[o + r] =
                            (m[4 * r] * h[0] + m[4 * r + 1] * h[1] + m[4 * r + 2] * h[2] + m[4 * r + 3]) as f32;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((nz, ny, nx, 3))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let [nx, ny, nz] = self.shape;
        let acc = (0..nz)
            .into_par_iter()
            .map(|k| {
                let mut a = [0f64; 12];
                for j in 0..ny {
                    for i in 0..nx {
                        let h = [i as f64, j as f64, k as f64, 1.0];
                        let o = 3 * ((k * ny + j) * nx + i);
                        for r in 0..3 {
                            let gv = g[o + r] as f64;
                            for c in 0..4 {
                                a[4 * r + c] += gv * h[c];
                            }
                        }
                    }
                }
                a
            })
            .reduce(
                || [0f64; 12],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                    a
                },
            );
        let v: Vec<f32> = acc.iter().map(|&x| x as f32).collect();
        Ok(Some(Tensor::from_vec(v, (3, 4), arg.device())?))
    }
}

/// Points `(Z, Y, X, 3)` = `matrix (3, 4) * (i, j, k, 1)` for every voxel of a grid of `shape` (x, y, z).
/// Differentiable with respect to `matrix`.
///
/// On a device other than the CPU this is [`affine_grid_slow`].
///
/// Errors: a matrix that is not `(3, 4)` f32.
pub fn affine_grid(matrix: &Tensor, shape: [usize; 3]) -> Result<Tensor> {
    if matrix.dims() != [3, 4] || matrix.dtype() != DType::F32 {
        candle_core::bail!("affine_grid: matrix must be (3, 4) f32, got {:?} {:?}", matrix.dims(), matrix.dtype());
    }
    if !matrix.device().is_cpu() {
        return affine_grid_slow(matrix, shape);
    }
    matrix.contiguous()?.apply_op1(AffineGrid { shape })
}

/// Homogeneous voxel indices `(N, 4)` of a grid of `shape` (x fastest), f32.
pub fn index_grid(shape: [usize; 3], device: &Device) -> Result<Tensor> {
    let [nx, ny, nz] = shape;
    let mut v = Vec::with_capacity(4 * nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                v.extend_from_slice(&[i as f32, j as f32, k as f32, 1.0]);
            }
        }
    }
    Tensor::from_vec(v, (nx * ny * nz, 4), device)
}

/// The slow twin of [`affine_grid`]: a matmul of the homogeneous index grid with the matrix.
pub fn affine_grid_slow(matrix: &Tensor, shape: [usize; 3]) -> Result<Tensor> {
    let [nx, ny, nz] = shape;
    let h = index_grid(shape, matrix.device())?;
    h.matmul(&matrix.t()?)?.reshape((nz, ny, nx, 3))
}
