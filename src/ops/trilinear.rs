//! The backward side of trilinear sampling ([`crate::image::trilinear`]): derivatives of samples with
//! respect to their points, and the scatter of upstream gradients into the sampled image.

pub(crate) use crate::image::trilinear::{
    corner_grad, corner_value, corners_fast, interior_span, sample, sample_interior, Corners, Shape3,
};

/// Derivative of the sampled value with respect to `p`, summed over channels with upstream weights
/// `g[c]`: `sum_c g[c] * d sample_c / dp`. `img` holds all channels, `nvox` apart.
#[inline]
pub(crate) fn grad_point(img: &[f32], nvox: usize, g: &[f32], c: &Corners) -> [f32; 3] {
    let mut d = [0f32; 3];
    for (ch, &gv) in g.iter().enumerate() {
        if gv == 0.0 {
            continue;
        }
        let im = &img[ch * nvox..];
        for k in 0..8 {
            if c.idx[k] != usize::MAX {
                let v = im[c.idx[k]] * gv;
                d[0] += c.dw[k][0] * v;
                d[1] += c.dw[k][1] * v;
                d[2] += c.dw[k][2] * v;
            }
        }
    }
    d
}

/// Adds `g[c] * weight` of each corner into a gradient image buffer (all channels, `nvox` apart).
#[inline]
pub(crate) fn scatter(buf: &mut [f32], nvox: usize, g: &[f32], c: &Corners) {
    for (ch, &gv) in g.iter().enumerate() {
        if gv == 0.0 {
            continue;
        }
        let b = &mut buf[ch * nvox..];
        for k in 0..8 {
            if c.idx[k] != usize::MAX {
                b[c.idx[k]] += c.w[k] * gv;
            }
        }
    }
}

/// The gradient of trilinear samples with respect to the sampled image `(C, nvox)`: sample `s` in `0..n`
/// lies at `point(s)` (voxel indices) with upstream gradient `g[ch * n + s]` for channel `ch`; each
/// adds `g * weight` to its 8 corners. One accumulation buffer per worker (at most 8), then summed.
pub(crate) fn image_grad(
    n: usize,
    c: usize,
    s: Shape3,
    border: bool,
    g: &[f32],
    point: impl Fn(usize) -> [f64; 3] + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let nvox = s[0] * s[1] * s[2];
    let parts = super::scatter_chunks(n);
    let per = n.div_ceil(parts);
    let bufs: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let mut buf = vec![0f32; c * nvox];
            let mut gb = vec![0f32; c];
            for i in part * per..((part + 1) * per).min(n) {
                for (ch, b) in gb.iter_mut().enumerate() {
                    *b = g[ch * n + i];
                }
                scatter(&mut buf, nvox, &gb, &corners_fast(point(i), s, border));
            }
            buf
        })
        .collect();
    reduce_buffers(bufs, c * nvox)
}

/// Sums per-worker buffers into one (parallel over the output).
pub(crate) fn reduce_buffers(bufs: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; len];
    const BLOCK: usize = 1 << 16;
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, o)| {
        for buf in &bufs {
            for (t, v) in o.iter_mut().enumerate() {
                *v += buf[b * BLOCK + t];
            }
        }
    });
    out
}
