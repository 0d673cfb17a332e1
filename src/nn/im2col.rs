//! CPU kernels of the 3-D convolutions: im2col / col2im over chunks of output rows and a bounds-checked
//! wrapper of the `gemm` crate's matrix multiply (the one candle's CPU matmul uses).
//!
//! Notation, per sample: the convolution input is `x` `(C_in, D, H, W)`, the output `y` `(C_out, oD, oH,
//! oW)`, the weight `w` `(C_out, K)` with `K = C_in * kD * kH * kW`, row `r = ((c * kD + a) * kH + b) *
//! kW + e`. The column matrix of a chunk of output positions `p` is `cols[r, p] = x[c, od * sD + a - pD,
//! oh * sH + b - pH, ow * sW + e - pW]` (zero outside), so `y = w . cols`. The three kernels:
//!
//! - [`forward`]: `y = w . im2col(x)` (the convolution);
//! - [`backward_data`]: `x' = col2im(w^T . y')` (its adjoint: the input gradient, or a transposed
//!   convolution);
//! - [`backward_weight`]: `w' = y' . im2col(x)^T` (the weight gradient).
//!
//! Chunks are whole output rows `(od, oh)` and hold about [`CHUNK_FLOATS`] column entries, so the column
//! buffer stays small (a 1x16x64^3 input with k = 3 would need 450 MB at once). im2col is parallel over
//! the rows `r`, col2im over the input channels (each channel owns its rows and its output volume, so no
//! two workers write the same value), and the matrix multiplies are parallel inside `gemm`.

use candle_core::Result;
use rayon::prelude::*;

/// Target size of one chunk's column buffer, in f32 values (8 MiB).
const CHUNK_FLOATS: usize = 1 << 21;

/// The geometry of one 3-D convolution (axis order D, H, W = z, y, x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub inp: [usize; 3],
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
    pub out: [usize; 3],
}

impl Geom {
    /// Voxels of one input channel.
    pub fn vin(&self) -> usize {
        self.inp.iter().product()
    }
    /// Voxels of one output channel.
    pub fn vout(&self) -> usize {
        self.out.iter().product()
    }
    /// Rows of the column matrix, `C_in * kD * kH * kW`.
    pub fn krows(&self) -> usize {
        self.cin * self.k.iter().product::<usize>()
    }
    /// Output rows `(od, oh)` per chunk: at least one.
    fn rows_per_chunk(&self) -> usize {
        (CHUNK_FLOATS / (self.krows() * self.out[2]).max(1)).max(1)
    }
    /// The chunks `[q0, q1)` of flattened output rows `q = od * oH + oh`.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> {
        let rows = self.out[0] * self.out[1];
        let step = self.rows_per_chunk();
        (0..rows).step_by(step).map(move |q0| (q0, (q0 + step).min(rows)))
    }
}

/// The output positions `o` in `0..n_out` whose input index `o * s + off` lies in `0..n_in`, as `[lo, hi)`.
fn valid_range(n_out: usize, s: usize, off: isize, n_in: usize) -> (usize, usize) {
    let s = s as isize;
    let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
    let last = n_in as isize - 1 - off;
    let hi = if last < 0 { 0 } else { last / s + 1 };
    let lo = (lo as usize).min(n_out);
    (lo, (hi as usize).min(n_out).max(lo))
}

/// Splits a column-matrix row `r` into `(c, a, b, e)`.
#[inline]
fn split_row(r: usize, k: [usize; 3]) -> (usize, usize, usize, usize) {
    let e = r % k[2];
    let b = (r / k[2]) % k[1];
    let a = (r / (k[2] * k[1])) % k[0];
    let c = r / (k[2] * k[1] * k[0]);
    (c, a, b, e)
}

/// The input index `o * s + t - p` along one axis, or `None` outside `0..n`.
#[inline]
fn input_index(o: usize, s: usize, t: usize, p: usize, n: usize) -> Option<usize> {
    let i = (o * s + t) as isize - p as isize;
    (i >= 0 && (i as usize) < n).then_some(i as usize)
}

/// Fills `cols` `(K, (q1 - q0) * oW)` from one sample `x` `(C_in, D, H, W)`.
fn im2col(x: &[f32], g: &Geom, q0: usize, q1: usize, cols: &mut [f32]) {
    let [_, h, w] = g.inp;
    let [_, oh_n, ow_n] = g.out;
    let pc = (q1 - q0) * ow_n;
    let vin = g.vin();
    cols[..g.krows() * pc].par_chunks_mut(pc).enumerate().for_each(|(r, row)| {
        let (c, a, b, e) = split_row(r, g.k);
        let xc = &x[c * vin..(c + 1) * vin];
        let (lo, hi) = valid_range(ow_n, g.s[2], e as isize - g.p[2] as isize, w);
        for q in q0..q1 {
            let dst = &mut row[(q - q0) * ow_n..(q - q0 + 1) * ow_n];
            let (od, oh) = (q / oh_n, q % oh_n);
            let (Some(id), Some(ih)) =
                (input_index(od, g.s[0], a, g.p[0], g.inp[0]), input_index(oh, g.s[1], b, g.p[1], h))
            else {
                dst.fill(0.0);
                continue;
            };
            let src = &xc[(id * h + ih) * w..(id * h + ih + 1) * w];
            dst[..lo].fill(0.0);
            dst[hi..].fill(0.0);
            if lo >= hi {
                continue;
            }
            // The input column of output `lo`: non-negative by the choice of `lo`.
            let start = lo * g.s[2] + e - g.p[2];
            if g.s[2] == 1 {
                dst[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
            } else {
                for (o, d) in dst[lo..hi].iter_mut().enumerate() {
                    *d = src[start + o * g.s[2]];
                }
            }
        }
    });
}

/// Fills `rows` `((q1 - q0) * oW, K)` with the transpose of [`im2col`]'s matrix: row `p`, column `r`.
/// `gemm` runs the weight gradient's long reduction over `p` about four times faster from this layout.
fn im2row(x: &[f32], g: &Geom, q0: usize, q1: usize, rows: &mut [f32]) {
    let [_, h, w] = g.inp;
    let [_, oh_n, ow_n] = g.out;
    let kr = g.krows();
    let vin = g.vin();
    let [kd, kh, kw] = g.k;
    rows[..(q1 - q0) * ow_n * kr].par_chunks_mut(ow_n * kr).enumerate().for_each(|(qi, block)| {
        let q = q0 + qi;
        let (od, oh) = (q / oh_n, q % oh_n);
        for c in 0..g.cin {
            let xc = &x[c * vin..(c + 1) * vin];
            for a in 0..kd {
                let id = input_index(od, g.s[0], a, g.p[0], g.inp[0]);
                for b in 0..kh {
                    let ih = input_index(oh, g.s[1], b, g.p[1], h);
                    let r0 = ((c * kd + a) * kh + b) * kw;
                    let (Some(id), Some(ih)) = (id, ih) else {
                        for ow in 0..ow_n {
                            block[ow * kr + r0..ow * kr + r0 + kw].fill(0.0);
                        }
                        continue;
                    };
                    let src = &xc[(id * h + ih) * w..(id * h + ih + 1) * w];
                    for ow in 0..ow_n {
                        let dst = &mut block[ow * kr + r0..ow * kr + r0 + kw];
                        let first = (ow * g.s[2]) as isize - g.p[2] as isize;
                        if first >= 0 && first as usize + kw <= w {
                            dst.copy_from_slice(&src[first as usize..first as usize + kw]);
                        } else {
                            for (e, d) in dst.iter_mut().enumerate() {
                                *d = input_index(ow, g.s[2], e, g.p[2], w).map_or(0.0, |i| src[i]);
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Adds `cols` `(K, (q1 - q0) * oW)` into one sample `x` `(C_in, D, H, W)` (the adjoint of [`im2col`]).
fn col2im(cols: &[f32], g: &Geom, q0: usize, q1: usize, x: &mut [f32]) {
    let [_, h, w] = g.inp;
    let [_, oh_n, ow_n] = g.out;
    let pc = (q1 - q0) * ow_n;
    let kvol: usize = g.k.iter().product();
    x.par_chunks_mut(g.vin()).zip(cols[..g.krows() * pc].par_chunks(kvol * pc)).for_each(|(xc, cc)| {
        for (rk, row) in cc.chunks(pc).enumerate() {
            let (_, a, b, e) = split_row(rk, g.k);
            let (lo, hi) = valid_range(ow_n, g.s[2], e as isize - g.p[2] as isize, w);
            if lo >= hi {
                continue;
            }
            for q in q0..q1 {
                let (od, oh) = (q / oh_n, q % oh_n);
                let (Some(id), Some(ih)) =
                    (input_index(od, g.s[0], a, g.p[0], g.inp[0]), input_index(oh, g.s[1], b, g.p[1], h))
                else {
                    continue;
                };
                let src = &row[(q - q0) * ow_n..(q - q0 + 1) * ow_n];
                let dst = &mut xc[(id * h + ih) * w..(id * h + ih + 1) * w];
                let start = lo * g.s[2] + e - g.p[2];
                if g.s[2] == 1 {
                    dst[start..start + (hi - lo)].iter_mut().zip(&src[lo..hi]).for_each(|(d, v)| *d += v);
                } else {
                    for (o, v) in src[lo..hi].iter().enumerate() {
                        dst[start + o * g.s[2]] += v;
                    }
                }
            }
        }
    });
}

/// The number of elements a strided `(rows, cols)` matrix spans.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// A strided view of an f32 matrix: `data[i * rs + j * cs]` is element `(i, j)`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// `dst (m, n) = [dst +] lhs (m, k) . rhs (k, n)` with arbitrary strides, through the `gemm` crate
/// (parallel over the rayon pool). Every view is checked to lie inside its slice, so the unsafe call
/// cannot read or write out of bounds; `dst` cannot alias the inputs (a `&mut` borrow).
///
/// Errors: a view that does not fit its slice.
#[allow(clippy::too_many_arguments)] // a matrix multiply: sizes, destination and two operands
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) -> Result<()> {
    if span(m, n, dst_rs, dst_cs) > dst.len()
        || span(m, k, lhs.rs, lhs.cs) > lhs.data.len()
        || span(k, n, rhs.rs, rhs.cs) > rhs.data.len()
    {
        candle_core::bail!("conv3d: matrix view out of bounds (internal error)");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_rs + j * dst_cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the three views were checked above to lie inside their slices; `dst` is an exclusive
    // borrow, so it aliases neither input; strides fit `isize` because the spans fit in slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// The convolution `y = w . im2col(x)` (no bias): `x` `(N, C_in, D, H, W)`, `w` `(C_out, K)`, returns `y`
/// `(N, C_out, oD, oH, oW)`, all contiguous f32.
pub(crate) fn forward(x: &[f32], w: &[f32], g: &Geom) -> Result<Vec<f32>> {
    let (vin, vout, kr) = (g.vin(), g.vout(), g.krows());
    let mut y = vec![0f32; g.n * g.cout * vout];
    let mut cols = vec![0f32; kr * g.rows_per_chunk().min(g.out[0] * g.out[1]) * g.out[2]];
    for n in 0..g.n {
        let xn = &x[n * g.cin * vin..(n + 1) * g.cin * vin];
        let yn = &mut y[n * g.cout * vout..(n + 1) * g.cout * vout];
        for (q0, q1) in g.chunks() {
            let pc = (q1 - q0) * g.out[2];
            im2col(xn, g, q0, q1, &mut cols);
            let off = q0 * g.out[2];
            sgemm(
                g.cout,
                pc,
                kr,
                &mut yn[off..],
                vout,
                1,
                false,
                Mat { data: w, rs: kr, cs: 1 },
                Mat { data: &cols, rs: pc, cs: 1 },
            )?;
        }
    }
    Ok(y)
}

/// The adjoint of [`forward`] in `x`: `x' = col2im(w^T . y')` for `y'` `(N, C_out, oD, oH, oW)`; returns
/// `(N, C_in, D, H, W)`. This is the input gradient of a convolution and the forward of a transposed one.
pub(crate) fn backward_data(gy: &[f32], w: &[f32], g: &Geom) -> Result<Vec<f32>> {
    let (vin, vout, kr) = (g.vin(), g.vout(), g.krows());
    let mut gx = vec![0f32; g.n * g.cin * vin];
    let mut cols = vec![0f32; kr * g.rows_per_chunk().min(g.out[0] * g.out[1]) * g.out[2]];
    for n in 0..g.n {
        let gyn = &gy[n * g.cout * vout..(n + 1) * g.cout * vout];
        let gxn = &mut gx[n * g.cin * vin..(n + 1) * g.cin * vin];
        for (q0, q1) in g.chunks() {
            let pc = (q1 - q0) * g.out[2];
            let off = q0 * g.out[2];
            sgemm(
                kr,
                pc,
                g.cout,
                &mut cols,
                pc,
                1,
                false,
                Mat { data: w, rs: 1, cs: kr },
                Mat { data: &gyn[off..], rs: vout, cs: 1 },
            )?;
            col2im(&cols, g, q0, q1, gxn);
        }
    }
    Ok(gx)
}

/// The weight gradient `w' = sum_n y'_n . im2col(x_n)^T`, `(C_out, K)` (the transposed columns built
/// directly by [`im2row`]).
pub(crate) fn backward_weight(x: &[f32], gy: &[f32], g: &Geom) -> Result<Vec<f32>> {
    let (vin, vout, kr) = (g.vin(), g.vout(), g.krows());
    let mut gw = vec![0f32; g.cout * kr];
    let mut cols = vec![0f32; kr * g.rows_per_chunk().min(g.out[0] * g.out[1]) * g.out[2]];
    for n in 0..g.n {
        let xn = &x[n * g.cin * vin..(n + 1) * g.cin * vin];
        let gyn = &gy[n * g.cout * vout..(n + 1) * g.cout * vout];
        for (q0, q1) in g.chunks() {
            let pc = (q1 - q0) * g.out[2];
            im2row(xn, g, q0, q1, &mut cols);
            let off = q0 * g.out[2];
            sgemm(
                g.cout,
                kr,
                pc,
                &mut gw,
                kr,
                1,
                true,
                Mat { data: &gyn[off..], rs: vout, cs: 1 },
                Mat { data: &cols, rs: kr, cs: 1 },
            )?;
        }
    }
    Ok(gw)
}

/// Adds `b[c]` to every value of channel `c` of `y` `(N, C, V)`.
pub(crate) fn add_bias(y: &mut [f32], b: &[f32], vol: usize) {
    let c = b.len();
    y.par_chunks_mut(vol).enumerate().for_each(|(nc, ch)| {
        let v = b[nc % c];
        ch.iter_mut().for_each(|o| *o += v);
    });
}

/// Per-channel sums of `g` `(N, C, V)`: the bias gradient.
pub(crate) fn channel_sums(g: &[f32], c: usize, vol: usize) -> Vec<f32> {
    let per: Vec<f64> = g.par_chunks(vol).map(|ch| ch.iter().map(|&v| v as f64).sum()).collect();
    let mut out = vec![0f64; c];
    for (nc, s) in per.iter().enumerate() {
        out[nc % c] += s;
    }
    out.iter().map(|&v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_known_answers() {
        // 5 outputs, stride 1, offset -1 (padding 1, tap 0), 5 inputs: output 0 reads index -1.
        assert_eq!(valid_range(5, 1, -1, 5), (1, 5));
        // offset +1 (padding 1, tap 2): output 4 reads index 5.
        assert_eq!(valid_range(5, 1, 1, 5), (0, 4));
        // stride 2, offset -1, 7 inputs, 4 outputs: indices -1, 1, 3, 5.
        assert_eq!(valid_range(4, 2, -1, 7), (1, 4));
        // nothing valid.
        assert_eq!(valid_range(3, 1, 10, 5), (0, 0));
    }

    #[test]
    fn im2row_is_the_transpose_of_im2col() {
        // padding, stride 2 on the last axis, an anisotropic kernel; output rows 3..7 of 4 x 3.
        let g =
            Geom { n: 1, cin: 2, cout: 1, inp: [5, 4, 7], k: [3, 2, 3], s: [1, 1, 2], p: [1, 1, 1], out: [5, 5, 4] };
        let x: Vec<f32> = (0..2 * 5 * 4 * 7).map(|i| i as f32 + 1.0).collect();
        let (kr, pc) = (g.krows(), 4 * g.out[2]);
        let (mut cols, mut rows) = (vec![-1f32; kr * pc], vec![-1f32; kr * pc]);
        im2col(&x, &g, 3, 7, &mut cols);
        im2row(&x, &g, 3, 7, &mut rows);
        for r in 0..kr {
            for p in 0..pc {
                assert_eq!(cols[r * pc + p], rows[p * kr + r], "r {r} p {p}");
            }
        }
        // output row q = 3 is (od, oh) = (0, 3); tap (c, a, b, e) = (1, 1, 0, 2) at ow = 1 reads
        // x[1, 0 + 1 - 1, 3 + 0 - 1, 1 * 2 + 2 - 1] = x[1, 0, 2, 3]; tap a = 0 reads depth -1 (zero).
        let r = ((3 + 1) * 2) * 3 + 2;
        assert_eq!(cols[r * pc + 1], x[140 + 2 * 7 + 3]);
        assert_eq!(cols[(3 * 2 * 3 + 2) * pc + 1], 0.0);
        assert!(cols.iter().all(|&v| v >= 0.0), "every entry written");
    }

    #[test]
    fn sgemm_matches_a_hand_product_with_strides() {
        // lhs (2, 3) row-major, rhs (3, 2) given transposed (column-major), dst accumulates onto ones.
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs_t = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5]; // rhs = [[1, 2], [0, 1], [-1, 0.5]]
        let mut dst = [1.0f32; 4];
        sgemm(2, 2, 3, &mut dst, 2, 1, true, Mat { data: &lhs, rs: 3, cs: 1 }, Mat { data: &rhs_t, rs: 1, cs: 3 })
            .unwrap();
        // [[1 - 3, 2 + 2 + 1.5], [4 - 6, 8 + 5 + 3]] + 1
        assert_eq!(dst, [-1.0, 6.5, -1.0, 17.0]);
        let mut small = [0f32; 3];
        assert!(sgemm(
            2,
            2,
            3,
            &mut small,
            2,
            1,
            false,
            Mat { data: &lhs, rs: 3, cs: 1 },
            Mat { data: &rhs_t, rs: 1, cs: 3 }
        )
        .is_err());
    }
}
