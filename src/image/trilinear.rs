//! Trilinear sampling of one channel at a fractional voxel index, with the weights' derivatives: the one
//! trilinear interpolation of regsh, the inner loop of resampling ([`super::resample`]), pictures, and
//! the fused sampling, warp and point-measure kernels of [`crate::ops`]. An interior fast path reads the
//! 8 neighbours directly; points near or beyond the border take the general path (zero, constant or
//! border padding).

/// Voxel counts `[nx, ny, nz]` of a channel stored x fastest.
pub(crate) type Shape3 = [usize; 3];

/// What a trilinear sample takes beyond the image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Pad {
    /// Voxels outside have this value (0: zero padding).
    Value(f32),
    /// The point is clamped into the image (the border voxels repeat).
    Border,
}

/// The trilinear value at `p` (voxel indices x, y, z): the weighted sum of the 8 neighbours ([`corners`],
/// corners of weight 0 skipped); outside the image as `pad` says (a point with no
/// corner inside, or not finite, takes the padding value). The one trilinear interpolation of regsh
/// (resampling, pictures, the kernels' points near the border); [`sample`] adds an interior fast path.
#[inline]
pub(crate) fn sample_padded(img: &[f32], s: Shape3, p: [f64; 3], pad: Pad) -> f32 {
    let (border, value) = match pad {
        Pad::Border => (true, 0.0),
        Pad::Value(v) => (false, v),
    };
    // No corner inside (a point a voxel or more beyond the image, or not finite): the padding value,
    // without the corners. Resampling onto a wider grid (random affines with a margin, pictures, network
    // grids) puts most of its points here.
    if !border && !(0..3).all(|a| p[a] > -1.0 && p[a] < s[a] as f64) {
        return value;
    }
    let c = corners(p, s, border);
    if value != 0.0 && c.idx.iter().all(|&i| i == usize::MAX) {
        return value;
    }
    let mut acc = 0f32;
    for k in 0..8 {
        if c.w[k] == 0.0 {
            continue;
        }
        if c.idx[k] != usize::MAX {
            acc += c.w[k] * img[c.idx[k]];
        } else if value != 0.0 {
            acc += c.w[k] * value;
        }
    }
    acc
}

/// Value at `p` (voxel indices x, y, z); outside voxels count as zero (`border` false) or `p` is clamped
/// into the image (`border` true): [`sample_padded`], with a fast path for points whose 8 neighbours
/// are all inside ([`sample_interior`]).
#[inline(always)]
pub(crate) fn sample(img: &[f32], s: Shape3, p: [f64; 3], border: bool) -> f32 {
    let [nx, ny, nz] = s;
    // Interior fast path: all 8 neighbours inside. For p >= 0 truncation is floor (and, unlike `floor`,
    // needs no libm call on baseline x86-64).
    if p[0] >= 0.0
        && p[1] >= 0.0
        && p[2] >= 0.0
        && p[0] < (nx - 1) as f64
        && p[1] < (ny - 1) as f64
        && p[2] < (nz - 1) as f64
    {
        return sample_interior(img, nx, nx * ny, p);
    }
    sample_padded(img, s, p, if border { Pad::Border } else { Pad::Value(0.0) })
}

/// The range of `i` in `0..n` for which `p0 + i * dp` stays strictly inside `[0, lim)` on every axis
/// (the trilinear interior), shrunk by one step at each end so rounding can never put a point outside.
pub(crate) fn interior_span(p0: [f64; 3], dp: [f64; 3], lim: [f64; 3], n: usize) -> (usize, usize) {
    if p0.iter().chain(&dp).any(|v| !v.is_finite()) {
        return (0, 0);
    }
    let (mut lo, mut hi) = (0f64, n as f64);
    for a in 0..3 {
        if dp[a] == 0.0 {
            if !(p0[a] >= 0.0 && p0[a] < lim[a]) {
                return (0, 0);
            }
            continue;
        }
        // 0 <= p0 + i dp < lim
        let (t0, t1) = ((0.0 - p0[a]) / dp[a], (lim[a] - p0[a]) / dp[a]);
        let (a0, a1) = if dp[a] > 0.0 { (t0, t1) } else { (t1, t0) };
        lo = lo.max(a0.ceil() + 1.0);
        hi = hi.min(a1.floor() - 1.0);
    }
    if hi <= lo {
        return (0, 0);
    }
    (lo.max(0.0) as usize, (hi.max(0.0) as usize).min(n))
}

/// Interior trilinear sample without the padding checks: the caller guarantees all 8 neighbours exist
/// (see [`interior_span`]).
#[inline(always)]
pub(crate) fn sample_interior(img: &[f32], nx: usize, nxy: usize, p: [f64; 3]) -> f32 {
    // Floor and fraction in f64: an f32 rounding could carry a point onto the next voxel.
    let (x0, y0, z0) = (p[0] as usize, p[1] as usize, p[2] as usize);
    let (tx, ty, tz) = ((p[0] - x0 as f64) as f32, (p[1] - y0 as f64) as f32, (p[2] - z0 as f64) as f32);
    let i = z0 * nxy + y0 * nx + x0;
    let n = &img[i..=i + nxy + nx + 1];
    let c00 = n[0] + tx * (n[1] - n[0]);
    let c10 = n[nx] + tx * (n[nx + 1] - n[nx]);
    let c01 = n[nxy] + tx * (n[nxy + 1] - n[nxy]);
    let c11 = n[nxy + nx] + tx * (n[nxy + nx + 1] - n[nxy + nx]);
    let c0 = c00 + ty * (c10 - c00);
    let c1 = c01 + ty * (c11 - c01);
    c0 + tz * (c1 - c0)
}

/// Corner indices and weights of one trilinear sample, with the weights' derivatives.
pub(crate) struct Corners {
    /// Flat voxel index per corner, or `usize::MAX` when outside.
    pub idx: [usize; 8],
    /// Trilinear weight per corner.
    pub w: [f32; 8],
    /// d(weight)/d(x, y, z) per corner (0 along an axis where border padding clamped the point).
    pub dw: [[f32; 3]; 8],
}

/// The 8 corners of the trilinear sample at `p` (general path).
#[inline]
pub(crate) fn corners(p: [f64; 3], s: Shape3, border: bool) -> Corners {
    let [nx, ny, _] = s;
    let mut q = p;
    let mut live = [1f32; 3];
    let mut c = Corners { idx: [usize::MAX; 8], w: [0.0; 8], dw: [[0.0; 3]; 8] };
    if !(q[0].is_finite() && q[1].is_finite() && q[2].is_finite()) {
        return c;
    }
    if border {
        for a in 0..3 {
            let hi = (s[a] - 1) as f64;
            if q[a] <= 0.0 || q[a] >= hi {
                // Clamped (or on the clamp's edge): the sample does not move with this coordinate, as
                // PyTorch's `clip_coordinates_set_grad`.
                live[a] = 0.0;
                q[a] = q[a].clamp(0.0, hi);
            }
        }
    }
    let f0 = [q[0].floor(), q[1].floor(), q[2].floor()];
    let fr = [(q[0] - f0[0]) as f32, (q[1] - f0[1]) as f32, (q[2] - f0[2]) as f32];
    let i0 = [f0[0] as i64, f0[1] as i64, f0[2] as i64];
    for k in 0..8 {
        let o = [k & 1, (k >> 1) & 1, (k >> 2) & 1];
        let mut inside = true;
        let mut wa = [0f32; 3];
        let mut da = [0f32; 3];
        for a in 0..3 {
            let ix = i0[a] + o[a] as i64;
            inside &= ix >= 0 && ix < s[a] as i64;
            wa[a] = if o[a] == 1 { fr[a] } else { 1.0 - fr[a] };
            da[a] = if o[a] == 1 { live[a] } else { -live[a] };
        }
        if inside {
            let (x, y, z) =
                ((i0[0] + o[0] as i64) as usize, (i0[1] + o[1] as i64) as usize, (i0[2] + o[2] as i64) as usize);
            c.idx[k] = (z * ny + y) * nx + x;
        }
        c.w[k] = wa[0] * wa[1] * wa[2];
        c.dw[k] = [da[0] * wa[1] * wa[2], wa[0] * da[1] * wa[2], wa[0] * wa[1] * da[2]];
    }
    c
}

/// The 8 corners of the trilinear sample at `p`: an interior fast path (no padding logic), else
/// [`corners`].
#[inline(always)]
pub(crate) fn corners_fast(p: [f64; 3], s: Shape3, border: bool) -> Corners {
    let [nx, ny, nz] = s;
    // With border padding a point on the first voxel is on the clamp's edge (zero gradient): general path.
    let lo = if border { f64::MIN_POSITIVE } else { 0.0 };
    if p[0] >= lo
        && p[1] >= lo
        && p[2] >= lo
        && p[0] < (nx - 1) as f64
        && p[1] < (ny - 1) as f64
        && p[2] < (nz - 1) as f64
    {
        let (x0, y0, z0) = (p[0] as usize, p[1] as usize, p[2] as usize);
        let (tx, ty, tz) = ((p[0] - x0 as f64) as f32, (p[1] - y0 as f64) as f32, (p[2] - z0 as f64) as f32);
        let i = (z0 * ny + y0) * nx + x0;
        let nxy = nx * ny;
        let (ux, uy, uz) = (1.0 - tx, 1.0 - ty, 1.0 - tz);
        // Corner k: offsets (k & 1, k >> 1 & 1, k >> 2 & 1).
        let idx = [i, i + 1, i + nx, i + nx + 1, i + nxy, i + nxy + 1, i + nxy + nx, i + nxy + nx + 1];
        let w = [
            ux * uy * uz,
            tx * uy * uz,
            ux * ty * uz,
            tx * ty * uz,
            ux * uy * tz,
            tx * uy * tz,
            ux * ty * tz,
            tx * ty * tz,
        ];
        let dw = [
            [-uy * uz, -ux * uz, -ux * uy],
            [uy * uz, -tx * uz, -tx * uy],
            [-ty * uz, ux * uz, -ux * ty],
            [ty * uz, tx * uz, -tx * ty],
            [-uy * tz, -ux * tz, ux * uy],
            [uy * tz, -tx * tz, tx * uy],
            [-ty * tz, ux * tz, ux * ty],
            [ty * tz, tx * tz, tx * ty],
        ];
        return Corners { idx, w, dw };
    }
    corners(p, s, border)
}

/// `sum_k w_k img[idx_k]` over the corners inside: the value of the sample whose weights `c` holds (the
/// fused kernels' value, consistent with their derivatives, [`corner_grad`]).
#[inline(always)]
pub(crate) fn corner_value(img: &[f32], c: &Corners) -> f32 {
    let mut v = 0f32;
    for k in 0..8 {
        if c.idx[k] != usize::MAX {
            v += c.w[k] * img[c.idx[k]];
        }
    }
    v
}

/// `sum_k dw_k img[idx_k]`: the derivative of [`corner_value`] with respect to the point (per voxel).
#[inline(always)]
pub(crate) fn corner_grad(img: &[f32], c: &Corners) -> [f32; 3] {
    let mut g = [0f32; 3];
    for k in 0..8 {
        if c.idx[k] != usize::MAX {
            let iv = img[c.idx[k]];
            g[0] += c.dw[k][0] * iv;
            g[1] += c.dw[k][1] * iv;
            g[2] += c.dw[k][2] * iv;
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trilinear interpolation written out: the 8 neighbours, those outside the image taking `value`.
    fn reference(img: &[f32], s: Shape3, p: [f64; 3], value: f32) -> f32 {
        if !p.iter().all(|v| v.is_finite()) {
            return value;
        }
        let f = [p[0].floor(), p[1].floor(), p[2].floor()];
        let mut acc = 0f64;
        for k in 0..8 {
            let o = [k & 1, (k >> 1) & 1, (k >> 2) & 1];
            let mut w = 1f64;
            let mut idx = [0i64; 3];
            for a in 0..3 {
                let t = p[a] - f[a];
                w *= if o[a] == 1 { t } else { 1.0 - t };
                idx[a] = f[a] as i64 + o[a] as i64;
            }
            let inside = (0..3).all(|a| idx[a] >= 0 && idx[a] < s[a] as i64);
            let v = if inside {
                img[((idx[2] as usize * s[1]) + idx[1] as usize) * s[0] + idx[0] as usize] as f64
            } else {
                value as f64
            };
            acc += w * v;
        }
        acc as f32
    }

    #[test]
    fn padded_samples_match_the_written_out_interpolation_inside_at_and_beyond_the_border() {
        let s = [5, 4, 3];
        let img: Vec<f32> = (0..60).map(|i| ((i * 37) % 11) as f32 + 1.0).collect();
        // Interior, on the last voxel, within a voxel outside (partial), exactly a voxel outside and far.
        let coords = [-3.0, -1.0, -0.999, -0.5, 0.0, 0.3, 1.7, 2.0, 2.5, 3.999, 4.0, 4.5, 4.999, 5.0, 9.0];
        for value in [0f32, 2.5] {
            for &x in &coords {
                for &y in &[-1.0, -0.25, 0.5, 2.9, 3.5, 4.0] {
                    for &z in &[-0.5, 0.0, 1.5, 2.0, 2.75, 3.0] {
                        let p = [x, y, z];
                        let got = sample_padded(&img, s, p, Pad::Value(value));
                        let want = reference(&img, s, p, value);
                        assert!((got - want).abs() < 1e-5, "{p:?} pad {value}: {got} vs {want}");
                        if value == 0.0 {
                            assert!((sample(&img, s, p, false) - want).abs() < 1e-5, "{p:?}");
                        }
                    }
                }
            }
            assert_eq!(sample_padded(&img, s, [f64::NAN, 1.0, 1.0], Pad::Value(value)), value);
        }
    }
}
