//! Local normalized cross-correlation (LNCC) fused: the window sums, the per-window correlation and its
//! exact gradient with respect to the moving image in a few passes over plain `f32` volumes, with no
//! tensor per intermediate. The measure is exactly [`crate::metrics::functional::lncc_slow`]'s (the
//! VoxelMorph / MONAI form with regsh's guards), which is this op's slow twin.
//!
//! Volumes are one channel, `(Z, Y, X)`, x fastest, `shape` `[nx, ny, nz]`. With `F` the separable
//! window filter (box or Gaussian, zero padding; [`super::local_filter`]) and `n = F(1)` the part of
//! each window inside the image, on images centred by their global means (`f`, `m`):
//!
//! ```text
//! mf = F(f) / n, mm = F(m) / n, cross = F(f m) / n - mf mm,
//! vf = relu(F(f^2) / n - mf^2), vm = relu(F(m^2) / n - mm^2),
//! cc = clamp(cross^2 / (vf vm + eps), 0, 1),  lncc = mean of cc over the mask,
//! eps = 1e-5 / n_eff^2 + 1e-6 mean(f^2) mean(m^2)   (held constant in the gradient)
//! ```
//!
//! The loss is `-lncc`. Its gradient follows from `F` being self-adjoint: with per-window coefficients
//! `a = dL/dcross / n`, `c = dL/dvm / n`, `b = -(a mf + 2 c mm)`, the derivative with respect to the
//! moving voxel `j` is `f_j F(a)_j + F(b)_j + 2 m_j F(c)_j` (then minus its mean, the derivative of the
//! centring, which is zero up to rounding). The fixed image's terms (`F(f)`, `F(f^2)`, `n`) are computed
//! once per fixed image ([`LnccFixed`]); an evaluation costs three filtered volumes forward and three
//! backward.

use rayon::prelude::*;

use super::local_filter::Window;
use super::local_filter::{filter_volumes, filter_volumes_in};

/// The fixed image's side of [`lncc_loss_grad`], computed once: the centred image, its local means and
/// variances, the window's inside part `n`, the mask and the constants of the guard.
#[derive(Clone, Debug)]
pub struct LnccFixed {
    shape: [usize; 3],
    kernels: [Vec<f32>; 3],
    f: Vec<f32>,
    mf: Vec<f32>,
    vf: Vec<f32>,
    count: Vec<f32>,
    /// 1 / (number of voxels counted), per voxel (0 outside the mask).
    weight: Vec<f32>,
    f2: f64,
    n_eff: f64,
}

impl LnccFixed {
    /// The fixed side for `fixed` (`shape` `[nx, ny, nz]`, x fastest) with `window` and an optional mask
    /// (non-zero inside, same size).
    ///
    /// Errors: a volume or mask of another size; an empty volume; an empty mask.
    pub fn new(fixed: &[f32], shape: [usize; 3], window: Window, mask: Option<&[f32]>) -> Result<Self, String> {
        let nv = shape.iter().product::<usize>();
        if nv == 0 || fixed.len() != nv {
            return Err(format!("lncc: fixed image of {} voxels for shape {shape:?}", fixed.len()));
        }
        let k = window.kernel();
        let kernels = [k.clone(), k.clone(), k.clone()];
        let mean = fixed.iter().map(|&v| v as f64).sum::<f64>() / nv as f64;
        let f: Vec<f32> = fixed.iter().map(|&v| v - mean as f32).collect();
        let f2 = f.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / nv as f64;
        let count = filter_volumes(&vec![1f32; nv], shape, &kernels);
        let mut two = Vec::with_capacity(2 * nv);
        two.extend_from_slice(&f);
        two.extend(f.iter().map(|v| v * v));
        let s = filter_volumes(&two, shape, &kernels);
        let mf: Vec<f32> = s[..nv].iter().zip(&count).map(|(a, n)| a / n).collect();
        let vf: Vec<f32> = s[nv..].iter().zip(&count).zip(&mf).map(|((a, n), m)| (a / n - m * m).max(0.0)).collect();
        let weight = match mask {
            Some(m) => {
                if m.len() != nv {
                    return Err(format!("lncc: mask of {} voxels for an image of {nv}", m.len()));
                }
                let inside = m.iter().filter(|v| **v != 0.0).count();
                if inside == 0 {
                    return Err("lncc: the mask is empty".into());
                }
                let w = 1.0 / inside as f32;
                m.iter().map(|v| if *v != 0.0 { w } else { 0.0 }).collect()
            }
            None => vec![1.0 / nv as f32; nv],
        };
        let n_eff = (k.iter().sum::<f32>().powi(2) / k.iter().map(|w| w * w).sum::<f32>()).powi(3) as f64;
        Ok(LnccFixed { shape, kernels, f, mf, vf, count, weight, f2, n_eff })
    }

    /// The grid shape `[nx, ny, nz]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
}

/// The result of [`lncc_loss_grad`].
#[derive(Clone, Debug)]
pub struct LnccLoss {
    /// `-lncc`.
    pub loss: f64,
    /// `dL/dm` per moving voxel (empty unless asked for).
    pub grad: Vec<f32>,
}

/// The LNCC loss `-lncc` of `moving` (on the fixed grid, `shape` voxels) against the fixed side `fx`,
/// and, with `grad`, its gradient with respect to every moving voxel (see the module documentation).
///
/// Errors: a moving volume of another size.
pub fn lncc_loss_grad(fx: &LnccFixed, moving: &[f32], grad: bool) -> Result<LnccLoss, String> {
    let nv = fx.f.len();
    if moving.len() != nv {
        return Err(format!("lncc: moving image of {} voxels for {nv}", moving.len()));
    }
    let mean = chunked_sum(moving, |v| v as f64) / nv as f64;
    let m: Vec<f32> = moving.par_iter().map(|&v| v - mean as f32).collect();
    let m2 = chunked_sum(&m, |v| (v as f64) * (v as f64)) / nv as f64;
    let eps = (1e-5 / (fx.n_eff * fx.n_eff) + 1e-6 * fx.f2 * m2) as f32;
    // F(m), F(m^2), F(f m) in one buffer.
    let mut three = vec![0f32; 3 * nv];
    {
        let (a, rest) = three.split_at_mut(nv);
        let (b, c) = rest.split_at_mut(nv);
        a.par_iter_mut().zip(b.par_iter_mut()).zip(c.par_iter_mut()).enumerate().for_each(|(i, ((a, b), c))| {
            let v = m[i];
            *a = v;
            *b = v * v;
            *c = fx.f[i] * v;
        });
    }
    let s = filter_volumes_in(three, fx.shape, &fx.kernels);
    let (sm, rest) = s.split_at(nv);
    let (smm, sfm) = rest.split_at(nv);
    // Per window: cc, and (for the gradient) the coefficients a, b, c of F(f m), F(m), F(m^2).
    const CH: usize = 4096;
    let mut coef = if grad { vec![0f32; 3 * nv] } else { Vec::new() };
    let window = |i: usize| -> (f64, [f32; 3]) {
        let n = fx.count[i];
        let (mf, vf) = (fx.mf[i], fx.vf[i]);
        let mm = sm[i] / n;
        let cross = sfm[i] / n - mf * mm;
        let vm_raw = smm[i] / n - mm * mm;
        let vm = vm_raw.max(0.0);
        let d = vf * vm + eps;
        let raw = cross * cross / d;
        let w = fx.weight[i];
        if w == 0.0 {
            return (0.0, [0.0; 3]);
        }
        let cc = raw.clamp(0.0, 1.0);
        if !grad || raw > 1.0 {
            return (w as f64 * cc as f64, [0.0; 3]);
        }
        // L = -sum w cc: dL/dcross = -w 2 cross / d, dL/dvm = w cross^2 vf / d^2 (0 where relu clamps).
        let dcross = -w * 2.0 * cross / d;
        let dvm = if vm_raw > 0.0 { w * raw * vf / d } else { 0.0 };
        let a = dcross / n;
        let c = dvm / n;
        let b = -(a * mf + 2.0 * c * mm);
        (w as f64 * cc as f64, [a, b, c])
    };
    let lncc: f64 = if grad {
        let (ca, rest) = coef.split_at_mut(nv);
        let (cb, cc) = rest.split_at_mut(nv);
        ca.par_chunks_mut(CH)
            .zip(cb.par_chunks_mut(CH))
            .zip(cc.par_chunks_mut(CH))
            .enumerate()
            .map(|(ch, ((a, b), c))| {
                let mut acc = 0f64;
                for t in 0..a.len() {
                    let (v, k) = window(ch * CH + t);
                    acc += v;
                    a[t] = k[0];
                    b[t] = k[1];
                    c[t] = k[2];
                }
                acc
            })
            .sum()
    } else {
        (0..nv).into_par_iter().with_min_len(CH).map(|i| window(i).0).sum()
    };
    if !grad {
        return Ok(LnccLoss { loss: -lncc, grad: Vec::new() });
    }
    let back = filter_volumes_in(coef, fx.shape, &fx.kernels);
    let (fa, rest) = back.split_at(nv);
    let (fb, fc) = rest.split_at(nv);
    let mut g = vec![0f32; nv];
    g.par_iter_mut().enumerate().for_each(|(i, o)| *o = fx.f[i] * fa[i] + fb[i] + 2.0 * m[i] * fc[i]);
    // The centring m = moving - mean(moving): subtract the mean derivative (zero up to rounding).
    let gm = (chunked_sum(&g, |v| v as f64) / nv as f64) as f32;
    g.par_iter_mut().for_each(|v| *v -= gm);
    Ok(LnccLoss { loss: -lncc, grad: g })
}

/// The sum of `f(v)` over `v` in f64, in parallel over fixed chunks added in order (the same result on
/// any number of threads).
fn chunked_sum(v: &[f32], f: impl Fn(f32) -> f64 + Sync) -> f64 {
    let parts: Vec<f64> = v.par_chunks(1 << 16).map(|c| c.iter().map(|&x| f(x)).sum::<f64>()).collect();
    parts.iter().sum()
}

/// The candle op of [`lncc`]: the measure of its (moving) input, with the gradient kept from the forward
/// pass for the backward.
struct LnccOp {
    fixed: LnccFixed,
    want_grad: bool,
    grad: std::sync::Mutex<Option<Vec<f32>>>,
}

impl candle_core::CustomOp1 for LnccOp {
    fn name(&self) -> &'static str {
        "lncc"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let m = super::f32_slice("lncc", s, l)?;
        let r = lncc_loss_grad(&self.fixed, m, self.want_grad).map_err(candle_core::Error::msg)?;
        if self.want_grad {
            if let Ok(mut g) = self.grad.lock() {
                // The op returns the measure (-loss): its gradient is the loss's, negated.
                *g = Some(r.grad.iter().map(|v| -v).collect());
            }
        }
        Ok((candle_core::CpuStorage::F32(vec![-r.loss as f32]), candle_core::Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &candle_core::Tensor,
        _res: &candle_core::Tensor,
        grad: &candle_core::Tensor,
    ) -> candle_core::Result<Option<candle_core::Tensor>> {
        let g = self.grad.lock().ok().and_then(|mut g| g.take());
        let Some(g) = g else { candle_core::bail!("lncc: backward before forward") };
        let up = grad.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0];
        let v: Vec<f32> = g.iter().map(|x| x * up).collect();
        Ok(Some(candle_core::Tensor::from_vec(v, arg.shape(), arg.device())?))
    }
}

/// The LNCC measure (0-d f32 tensor, in `[0, 1]`) of `moving` against `fixed`, both `(Z, Y, X)` or
/// `(1, Z, Y, X)` f32 on one CPU grid, with an optional mask of the same size (non-zero inside), by the
/// fused kernel [`lncc_loss_grad`]; differentiable with respect to `moving` only (the fixed image is
/// treated as a constant). Slow twin: [`crate::metrics::functional::lncc_slow`].
///
/// Errors: shapes that disagree; an empty mask; tensor errors.
pub fn lncc(
    fixed: &candle_core::Tensor,
    moving: &candle_core::Tensor,
    window: Window,
    mask: Option<&candle_core::Tensor>,
) -> candle_core::Result<candle_core::Tensor> {
    let zyx = |d: &[usize]| -> Option<[usize; 3]> {
        match d {
            [z, y, x] | [1, z, y, x] => Some([*x, *y, *z]),
            _ => None,
        }
    };
    let (Some(s), Some(s2)) = (zyx(fixed.dims()), zyx(moving.dims())) else {
        candle_core::bail!(
            "lncc: fixed {:?} and moving {:?} must be (Z, Y, X) or (1, Z, Y, X)",
            fixed.dims(),
            moving.dims()
        )
    };
    if s != s2 {
        candle_core::bail!("lncc: fixed {:?} and moving {:?} differ", fixed.dims(), moving.dims());
    }
    let f32v = |t: &candle_core::Tensor| -> candle_core::Result<Vec<f32>> {
        t.detach().to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()
    };
    let fv = f32v(fixed)?;
    let mv = mask.map(f32v).transpose()?;
    let fx = LnccFixed::new(&fv, s, window, mv.as_deref()).map_err(candle_core::Error::msg)?;
    let op = LnccOp { fixed: fx, want_grad: moving.track_op(), grad: std::sync::Mutex::new(None) };
    moving.to_dtype(candle_core::DType::F32)?.flatten_all()?.apply_op1(op)
}
