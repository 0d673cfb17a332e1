//! Fused warp kernels: sample points computed on the fly and the image sampled in the same pass, with
//! hand-written backward passes. No `(Z, Y, X, 3)` point tensor is materialized.
//!
//! - [`warp_affine`]: `out(v) = I(M (i, j, k, 1))` for a `(3, 4)` voxel-to-voxel matrix `M` (target grid
//!   voxel to moving-image voxel); gradients to the image and to `M`.
//! - [`warp_field`]: `out(v) = I(M (i, j, k, 1) + R u(v))` for a displacement field `u` `(3, Z, Y, X)` in
//!   world mm on the target grid, `R` mapping mm to moving voxels; gradients to the image and to `u`.
//!
//! Both are trilinear; padding zero or border (see [`super::grid_sample`]). Slow twins: the same maps
//! built from [`super::affine_grid_slow`] / candle ops and [`super::grid_sample_slow`].

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;
use super::trilinear::{
    corner_grad, corner_value, corners_fast, grad_point, image_grad, interior_span, sample, sample_interior,
};

/// How sample points are formed.
#[derive(Clone, Copy, Debug)]
enum Points {
    /// `M h`, with `M` read from the second input.
    Affine,
    /// `M h + R u`, with `M` and `R` fixed and `u` the second input.
    Field { m: [f64; 12], r: [f64; 9] },
}

#[derive(Clone, Copy, Debug)]
struct Warp {
    /// Target grid size (x, y, z).
    out: [usize; 3],
    points: Points,
    border: bool,
}

impl Warp {
    /// The matrix for this call: the fixed one, or the second input's values.
    fn matrix(&self, second: &[f32]) -> [f64; 12] {
        match self.points {
            Points::Field { m, .. } => m,
            Points::Affine => std::array::from_fn(|i| second[i] as f64),
        }
    }

    /// Sample point of target voxel (i, j, k) with flat index `v`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the hot inner call: plain values, no struct to build
    fn point(
        &self,
        m: &[f64; 12],
        second: &[f32],
        nvox_out: usize,
        i: usize,
        j: usize,
        k: usize,
        v: usize,
    ) -> [f64; 3] {
        let h = [i as f64, j as f64, k as f64];
        if let Points::Field { r, .. } = self.points {
            let u = [second[v] as f64, second[nvox_out + v] as f64, second[2 * nvox_out + v] as f64];
            return field_point(m, &r, h, u);
        }
        let mut p = [0f64; 3];
        for r in 0..3 {
            p[r] = m[4 * r] * h[0] + m[4 * r + 1] * h[1] + m[4 * r + 2] * h[2] + m[4 * r + 3];
        }
        p
    }
}

impl CustomOp2 for Warp {
    fn name(&self) -> &'static str {
        "warp"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let img = f32_slice("warp", s1, l1)?;
        let second = f32_slice("warp", s2, l2)?;
        let (c, z, y, x) = l1.shape().dims4()?;
        let s = [x, y, z];
        let nvox = x * y * z;
        let [ox, oy, oz] = self.out;
        let nout = ox * oy * oz;
        let m = self.matrix(second);
        let mut out = vec![0f32; c * nout];
        out.par_chunks_mut(ox * oy).enumerate().for_each(|(ck, slab)| {
            let (ch, k) = (ck / oz, ck % oz);
            let im = &img[ch * nvox..(ch + 1) * nvox];
            match self.points {
                Points::Affine => {
                    // Along a row the point moves by the matrix's first column: p = p0 + i * dp. The span
                    // of the row whose samples are interior runs without any padding logic.
                    let dp = [m[0], m[4], m[8]];
                    let lim = [(s[0] - 1) as f64, (s[1] - 1) as f64, (s[2] - 1) as f64];
                    let (nxs, nxy) = (s[0], s[0] * s[1]);
                    for j in 0..oy {
                        let p0 = self.point(&m, second, nout, 0, j, k, 0);
                        let row = &mut slab[j * ox..(j + 1) * ox];
                        let at = |i: usize| {
                            let f = i as f64;
                            [p0[0] + f * dp[0], p0[1] + f * dp[1], p0[2] + f * dp[2]]
                        };
                        let (lo, hi) = interior_span(p0, dp, lim, ox);
                        for (i, o) in row.iter_mut().enumerate().take(lo) {
                            *o = sample(im, s, at(i), self.border);
                        }
                        for (i, o) in row.iter_mut().enumerate().take(hi).skip(lo) {
                            *o = sample_interior(im, nxs, nxy, at(i));
                        }
                        for (i, o) in row.iter_mut().enumerate().skip(hi.max(lo)) {
                            *o = sample(im, s, at(i), self.border);
                        }
                    }
                }
                Points::Field { .. } => {
                    // The value of the corner weights, as `warp_field_with_grad` computes it.
                    for j in 0..oy {
                        for i in 0..ox {
                            let v = (k * oy + j) * ox + i;
                            let p = self.point(&m, second, nout, i, j, k, v);
                            slab[j * ox + i] = corner_value(im, &corners_fast(p, s, self.border));
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((c, oz, oy, ox))))
    }

    fn bwd(
        &self,
        image: &Tensor,
        second: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (c, z, y, x) = image.dims4()?;
        let s = [x, y, z];
        let nvox = x * y * z;
        let [ox, oy, oz] = self.out;
        let nout = ox * oy * oz;
        let img = image.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let sec = second.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let m = self.matrix(&sec);
        // dL/dp at target voxel (i, j, k), summed over channels; `gb` is a reused per-worker buffer for the
        // voxel's upstream gradients (no allocation per voxel).
        let point_grad = |i: usize, j: usize, k: usize, gb: &mut [f32]| -> [f32; 3] {
            let v = (k * oy + j) * ox + i;
            for (ch, b) in gb.iter_mut().enumerate() {
                *b = g[ch * nout + v];
            }
            let p = self.point(&m, &sec, nout, i, j, k, v);
            grad_point(&img, nvox, gb, &corners_fast(p, s, self.border))
        };

        // Gradient with respect to the sample points, reduced to the second input.
        let grad_second = match self.points {
            Points::Affine => {
                let acc = (0..oz)
                    .into_par_iter()
                    .map(|k| {
                        let mut a = [0f64; 12];
                        let mut gb = vec![0f32; c];
                        for j in 0..oy {
                            for i in 0..ox {
                                let d = point_grad(i, j, k, &mut gb);
                                let h = [i as f64, j as f64, k as f64, 1.0];
                                for r in 0..3 {
                                    for col in 0..4 {
                                        a[4 * r + col] += d[r] as f64 * h[col];
                                    }
                                }
                            }
                        }
                        a
                    })
                    .reduce(
                        || [0f64; 12],
                        |mut a, b| {
                            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                            a
                        },
                    );
                Tensor::from_vec(acc.iter().map(|&v| v as f32).collect::<Vec<_>>(), (3, 4), image.device())?
            }
            Points::Field { r, .. } => {
                // dL/du = sum over channels of g_c R^T grad image_c, per voxel, as `warp_field_with_grad`
                // forms it (R^T of the image gradient, then the upstream gradient); channels of the
                // field are nout apart.
                let rf: [f32; 9] = std::array::from_fn(|i| r[i] as f32);
                let mut gf = vec![0f32; 3 * nout];
                let (g0, rest) = gf.split_at_mut(nout);
                let (g1, g2) = rest.split_at_mut(nout);
                g0.par_chunks_mut(ox * oy)
                    .zip(g1.par_chunks_mut(ox * oy))
                    .zip(g2.par_chunks_mut(ox * oy))
                    .enumerate()
                    .for_each(|(k, ((a0, a1), a2))| {
                        for j in 0..oy {
                            for i in 0..ox {
                                let v = (k * oy + j) * ox + i;
                                let t = j * ox + i;
                                let p = self.point(&m, &sec, nout, i, j, k, v);
                                let cs = corners_fast(p, s, self.border);
                                let mut d = [0f32; 3];
                                for ch in 0..c {
                                    let gv = g[ch * nout + v];
                                    if gv == 0.0 {
                                        continue;
                                    }
                                    let du = field_grad(&rf, corner_grad(&img[ch * nvox..], &cs));
                                    for (a, x) in d.iter_mut().enumerate() {
                                        *x += du[a] * gv;
                                    }
                                }
                                (a0[t], a1[t], a2[t]) = (d[0], d[1], d[2]);
                            }
                        }
                    });
                Tensor::from_vec(gf, second.shape(), image.device())?
            }
        };

        // Gradient with respect to the image: scatter-add, one buffer per worker. Skipped when the image
        // is a constant (the usual case in registration), which halves the cost of the backward pass.
        if !image.track_op() {
            return Ok((None, Some(grad_second)));
        }
        let gi = image_grad(nout, c, s, self.border, &g, |v| {
            let (i, j, k) = (v % ox, (v / ox) % oy, v / (ox * oy));
            self.point(&m, &sec, nout, i, j, k, v)
        });
        let gi = Tensor::from_vec(gi, image.shape(), image.device())?;
        Ok((Some(gi), Some(grad_second)))
    }
}

fn check_image(image: &Tensor) -> Result<()> {
    if image.dtype() != DType::F32 || image.rank() != 4 {
        candle_core::bail!("warp: image must be (C, Z, Y, X) f32, got {:?} {:?}", image.dims(), image.dtype());
    }
    Ok(())
}

/// `out(v) = image(M (i, j, k, 1))` on a target grid of `out` voxels (x, y, z): `(C, Z', Y', X')`.
/// `matrix` is `(3, 4)` f32, target voxel indices to image voxel indices. Differentiable in both. On a
/// device other than the CPU: [`super::affine_grid_slow`] then [`super::grid_sample_slow`].
pub fn warp_affine(image: &Tensor, matrix: &Tensor, out: [usize; 3], border: bool) -> Result<Tensor> {
    check_image(image)?;
    if matrix.dims() != [3, 4] || matrix.dtype() != DType::F32 {
        candle_core::bail!("warp_affine: matrix must be (3, 4) f32, got {:?}", matrix.dims());
    }
    if !image.device().is_cpu() {
        let points = super::affine_grid_slow(matrix, out)?;
        return super::grid_sample_slow(image, &points, padding_of(border));
    }
    image.contiguous()?.apply_op2(&matrix.contiguous()?, Warp { out, points: Points::Affine, border })
}

/// `out(v) = image(M (i, j, k, 1) + R u(v))` for a displacement `field` `(3, Z', Y', X')` (world mm, on the
/// target grid): `M` maps target voxel indices to image voxel indices (3x4 row-major), `R` world mm to
/// image voxel offsets (3x3 row-major). Differentiable in the image and the field. On a device other than
/// the CPU: the points from candle ops, then [`super::grid_sample_slow`].
pub fn warp_field(image: &Tensor, field: &Tensor, m: [f64; 12], r: [f64; 9], border: bool) -> Result<Tensor> {
    check_image(image)?;
    let d = field.dims();
    if d.len() != 4 || d[0] != 3 || field.dtype() != DType::F32 {
        candle_core::bail!("warp_field: field must be (3, Z, Y, X) f32, got {:?}", d);
    }
    let out = [d[3], d[2], d[1]];
    if !image.device().is_cpu() {
        let dev = image.device();
        let mt = Tensor::from_vec(m.map(|v| v as f32).to_vec(), (3, 4), dev)?;
        let rt = Tensor::from_vec(r.map(|v| v as f32).to_vec(), (3, 3), dev)?;
        // (Z, Y, X, 3) base points plus the displacement mapped to voxel offsets, R u.
        let disp = field.permute((1, 2, 3, 0))?.broadcast_matmul(&rt.t()?)?;
        let points = (super::affine_grid_slow(&mt, out)? + disp)?;
        return super::grid_sample_slow(image, &points, padding_of(border));
    }
    image.contiguous()?.apply_op2(&field.contiguous()?, Warp { out, points: Points::Field { m, r }, border })
}

/// The field warp of [`warp_field`] (one channel, zero padding) on plain slices, with the derivative
/// of each sample with respect to the displacement there: `out(v) = image(M h_v + R u(v))` and
/// `du(v) = R^T grad image(M h_v + R u(v))` (per mm of displacement), so that for any upstream
/// `g = dL/dout` the gradient of the field is `dL/du(v) = g(v) du(v)` (the backward of [`warp_field`]).
///
/// `image` is `shape` `[nx, ny, nz]` voxels, x fastest; `field` is `(3, Z', Y', X')` (x, y, z components,
/// mm) on the target grid of `out` `[nx', ny', nz']` voxels. Returns `out` (`Z' Y' X'` values) and `du`
/// (`(3, Z', Y', X')`, component-major like the field). Parallel over target z planes.
///
/// Errors: an image or field of another size.
pub fn warp_field_with_grad(
    image: &[f32],
    shape: [usize; 3],
    field: &[f32],
    out: [usize; 3],
    m: [f64; 12],
    r: [f64; 9],
) -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
    let [ox, oy, oz] = out;
    let nout = ox * oy * oz;
    if image.len() != shape.iter().product::<usize>() || image.is_empty() {
        return Err(format!("warp_field_with_grad: image of {} voxels for shape {shape:?}", image.len()));
    }
    if field.len() != 3 * nout {
        return Err(format!("warp_field_with_grad: field of {} values for 3 x {out:?}", field.len()));
    }
    let mut vals = vec![0f32; nout];
    let mut du = vec![0f32; 3 * nout];
    let (d0, rest) = du.split_at_mut(nout);
    let (d1, d2) = rest.split_at_mut(nout);
    let plane = ox * oy;
    if plane == 0 {
        return Ok((vals, du));
    }
    let rf: [f32; 9] = std::array::from_fn(|i| r[i] as f32);
    vals.par_chunks_mut(plane)
        .zip(d0.par_chunks_mut(plane))
        .zip(d1.par_chunks_mut(plane))
        .zip(d2.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(k, (((o, a0), a1), a2))| {
            for j in 0..oy {
                for i in 0..ox {
                    let t = j * ox + i;
                    let v = k * plane + t;
                    let h = [i as f64, j as f64, k as f64];
                    let u = [field[v] as f64, field[nout + v] as f64, field[2 * nout + v] as f64];
                    let c = corners_fast(field_point(&m, &r, h, u), shape, false);
                    o[t] = corner_value(image, &c);
                    [a0[t], a1[t], a2[t]] = field_grad(&rf, corner_grad(image, &c));
                }
            }
        });
    Ok((vals, du))
}

/// The padding of a `border` flag.
fn padding_of(border: bool) -> crate::image::resample::Padding {
    if border {
        crate::image::resample::Padding::Border
    } else {
        crate::image::resample::Padding::Zero
    }
}

/// The sample point `M h + R u` (moving voxels) of target voxel `h` with displacement `u` (mm), summed left
/// to right: the one formula of the field warp's forward, backward and fused kernels.
#[inline(always)]
fn field_point(m: &[f64; 12], r: &[f64; 9], h: [f64; 3], u: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|a| {
        m[4 * a] * h[0]
            + m[4 * a + 1] * h[1]
            + m[4 * a + 2] * h[2]
            + m[4 * a + 3]
            + r[3 * a] * u[0]
            + r[3 * a + 1] * u[1]
            + r[3 * a + 2] * u[2]
    })
}

/// `R^T g` in f32 (`rf`: `R` rounded to f32): the derivative of a sample with respect to the
/// displacement (mm) from its derivative `g` with respect to the point (moving voxels).
#[inline(always)]
fn field_grad(rf: &[f32; 9], g: [f32; 3]) -> [f32; 3] {
    [
        rf[0] * g[0] + rf[3] * g[1] + rf[6] * g[2],
        rf[1] * g[0] + rf[4] * g[1] + rf[7] * g[2],
        rf[2] * g[0] + rf[5] * g[1] + rf[8] * g[2],
    ]
}
