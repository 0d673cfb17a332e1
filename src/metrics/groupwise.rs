//! Groupwise similarity measures: how well N images of (possibly) different modalities agree at the
//! same points, as a loss on their intensities there, and the groupwise registration error (gRE).
//!
//! Every measure here works on an `(N, n)` f32 tensor `u` of the N images' intensities at n sample
//! points of the common space, each image's intensities mapped to `[0, 1]` (see
//! [`crate::optim::groupwise`]), and `(n,)` point weights `w` (1 where a point lies inside every image,
//! 0 elsewhere). The loss (lower is better) is differentiable with respect to `u`; the statistical
//! models behind X-CoReg and GMM are fitted in closed form (EM, detached) on each call and carried in a
//! [`GroupState`] from one iteration to the next.
//!
//! | name | measure | source |
//! |---|---|---|
//! | `xmetric` | X-metric: `sum_j I(U_j; Z)`, the mutual information of each image with a common latent anatomy Z of K classes, whose posteriors come from the images' class-conditional densities (EM) | Luo & Zhuang, X-CoReg (seed 004, eq. 5, Algorithm 1) |
//! | `ape` | accumulated pairwise estimates: `sum_{j<k} MI(U_j, U_k)` | Wachinger & Navab, TPAMI 2013 |
//! | `cte` | conditional template entropy: `sum_j H(U_j | T)`, T the first principal component of the standardised intensities | Polfliet et al., MedIA 2018 |
//! | `congealing` | the mean over points of the entropy of the N intensities at a point | Learned-Miller, TPAMI 2006 |
//! | `gmm` | the negative log-likelihood of the N-vectors of intensities under a K-component Gaussian mixture with full covariances (EM) | Orchard & Mann, TIP 2010 |
//!
//! Densities are Parzen-window estimates: each intensity spreads over `bins` bins in `[0, 1]` with a
//! Gaussian kernel of `sigma` bins, normalised per point.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::parzen::{parzen_joint, parzen_moments, Parzen, ParzenKernel, PatchLayout};
use crate::spatial::Transform;

/// Guards logarithms and divisions.
const EPS: f64 = 1e-10;
/// The smallest posterior class probability X-CoReg keeps (as the seed's code does), so no class dies.
const MIN_PROB: f64 = 1e-3;
/// EM iterations when a model is first fitted (then one per call).
const INIT_EM: usize = 10;
/// Variance floor of a GMM component (intensities in `[0, 1]`).
const GMM_VAR_FLOOR: f64 = 1e-4;

/// Which groupwise measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// X-metric (X-CoReg).
    XMetric,
    /// Accumulated pairwise estimates of MI.
    Ape,
    /// Conditional template entropy.
    Cte,
    /// Congealing (sum of voxelwise entropies).
    Congealing,
    /// Gaussian mixture model likelihood.
    Gmm,
}

/// The measures' names, as scripts write them.
pub const GROUP_METRICS: [&str; 5] = ["xmetric", "ape", "cte", "congealing", "gmm"];

/// A groupwise measure with its options.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMetric {
    /// Which measure.
    pub kind: GroupKind,
    /// Latent classes (X-CoReg) or mixture components (GMM), at least 1.
    pub classes: usize,
    /// Parzen bins in `[0, 1]`, at least 4 (not used by GMM).
    pub bins: usize,
    /// Parzen kernel sigma, in bins (> 0).
    pub sigma: f64,
}

impl GroupMetric {
    /// The measure `name` (one of [`GROUP_METRICS`]) with its defaults: 4 classes for X-CoReg, 3
    /// components for GMM, 32 bins of sigma 0.5 bin for Parzen estimates.
    ///
    /// Errors: [`Error::UnknownName`] for an unknown name (with "did you mean").
    pub fn new(name: &str) -> Result<Self> {
        let table = [
            ("xmetric", GroupKind::XMetric),
            ("xcoreg", GroupKind::XMetric),
            ("ape", GroupKind::Ape),
            ("cte", GroupKind::Cte),
            ("congealing", GroupKind::Congealing),
            ("gmm", GroupKind::Gmm),
        ];
        let kind = crate::names::lookup("groupwise measure", name, &table)?;
        let classes = if kind == GroupKind::Gmm { 3 } else { 4 };
        Ok(GroupMetric { kind, classes, bins: 32, sigma: 0.5 })
    }

    /// The measure's name.
    pub fn name(&self) -> &'static str {
        match self.kind {
            GroupKind::XMetric => "xmetric",
            GroupKind::Ape => "ape",
            GroupKind::Cte => "cte",
            GroupKind::Congealing => "congealing",
            GroupKind::Gmm => "gmm",
        }
    }

    /// The option names the measure takes.
    pub fn option_names(&self) -> &'static [&'static str] {
        match self.kind {
            GroupKind::XMetric => &["classes", "bins", "sigma"],
            GroupKind::Gmm => &["classes"],
            _ => &["bins", "sigma"],
        }
    }

    /// Checks the options. Errors: [`Error::InvalidArgument`] for classes 0 (or over 64), bins under 4
    /// (or over 256), a sigma that is not positive and finite.
    pub fn check(&self) -> Result<()> {
        if self.classes == 0 || self.classes > 64 {
            return Err(Error::arg(self.name(), format!("classes must be 1 to 64, got {}", self.classes)));
        }
        if self.bins < 4 || self.bins > 256 {
            return Err(Error::arg(self.name(), format!("bins must be 4 to 256, got {}", self.bins)));
        }
        // The Parzen kernels reach 4 sigma each side within a 64-bin buffer.
        if !(self.sigma.is_finite() && self.sigma > 0.0 && self.sigma <= 7.5) {
            return Err(Error::arg(self.name(), format!("sigma must be in (0, 7.5] bins, got {}", self.sigma)));
        }
        Ok(())
    }
}

impl std::fmt::Display for GroupMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            GroupKind::XMetric => write!(f, "xmetric(classes={}, bins={})", self.classes, self.bins),
            GroupKind::Gmm => write!(f, "gmm(classes={})", self.classes),
            _ => write!(f, "{}(bins={})", self.name(), self.bins),
        }
    }
}

/// The fitted model a stateful measure carries between calls.
#[derive(Clone, Debug, Default)]
pub enum GroupState {
    /// Nothing fitted yet (or a measure without a model).
    #[default]
    Empty,
    /// X-CoReg: mixing weights and each image's class-conditional intensity histograms.
    XMetric(XModel),
    /// GMM: weights `(K,)`, means `(K, N)` and covariances `(K, N, N)`, f64 on the host.
    Gmm { pi: Vec<f64>, mean: Vec<Vec<f64>>, cov: Vec<DMatrix<f64>> },
}

/// Parzen weights `(N, n, L)` of intensities `u` `(N, n)` in `[0, 1]` (any shape `(..., n)`): a
/// Gaussian of `sigma` bins about each of `bins` centres `l / (L - 1)`, cut at `ceil(4 sigma)` bins and
/// normalised over the bins per point, as the fused kernels of [`crate::ops::parzen`] weigh.
/// Differentiable in `u`.
///
/// Errors: tensor errors.
pub fn parzen_weights(u: &Tensor, bins: usize, sigma: f64) -> Result<Tensor> {
    let dev = u.device();
    let c = Tensor::arange(0u32, bins as u32, dev)?.to_dtype(DType::F32)?;
    let rank = u.rank();
    let mut shape = vec![1usize; rank];
    shape.push(bins);
    let c = c.reshape(shape)?;
    let d = (u.unsqueeze(rank)? * (bins as f64 - 1.0))?.broadcast_sub(&c)?; // bin widths
    let keep = d.detach().abs()?.le((4.0 * sigma).ceil())?.to_dtype(DType::F32)?;
    let k = ((d / sigma)?.sqr()? * -0.5)?.exp()?.mul(&keep)?;
    let s = (k.sum_keepdim(rank)? + EPS)?;
    Ok(k.broadcast_div(&s)?)
}

/// The kernel and the one global "patch" of n points for the fused Parzen histograms.
fn fused(metric: &GroupMetric, n: usize) -> (Parzen, PatchLayout) {
    (Parzen { bins: metric.bins, sigma: metric.sigma }, PatchLayout::global([n, 1, 1]))
}

/// Bin coordinates `u (L - 1)` of intensities in `[0, 1]`, contiguous f32.
fn to_bins(u: &Tensor, bins: usize) -> Result<Tensor> {
    Ok((u * (bins as f64 - 1.0))?.contiguous()?)
}

/// The Parzen joint distribution `(L, L)` of two intensity vectors `a`, `b` `(n,)` in `[0, 1]`, points
/// weighted by `w`; by the fused kernel [`parzen_joint`]. Differentiable in both.
fn pair_joint(metric: &GroupMetric, a: &Tensor, b: &Tensor, w: &Arc<Vec<f32>>) -> Result<Tensor> {
    let l = metric.bins;
    let (pz, lay) = fused(metric, a.elem_count());
    let h = parzen_joint(&to_bins(a, l)?, &to_bins(b, l)?, &lay, pz, Some(w.clone()))?;
    let joint = h.narrow(1, 0, l * l)?.reshape((l, l))?;
    let total = (joint.sum_all()?.detach() + EPS)?;
    Ok(joint.broadcast_div(&total)?)
}

/// The joint distribution `(K, L)` of soft classes `g` `(n, K)` (detached) and the Parzen bins of `u`
/// `(n,)`: `sum_x w_x g_xk W(u_x, l) / sum w`, one fused [`parzen_moments`] per class. Differentiable
/// in `u`.
fn class_joint(metric: &GroupMetric, u: &Tensor, g: &Tensor, w: &Arc<Vec<f32>>, wsum: f64) -> Result<Tensor> {
    let l = metric.bins;
    let (pz, lay) = fused(metric, u.elem_count());
    let ub = to_bins(u, l)?;
    let rows = (0..g.dim(1)?)
        .map(|k| {
            let y = g.narrow(1, k, 1)?.flatten_all()?.contiguous()?;
            Ok(parzen_moments(&ub, &y, &lay, pz, Some(w.clone()))?.narrow(1, l, l)?.squeeze(0)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((Tensor::stack(&rows, 0)? / wsum)?)
}

/// `-sum p log p` over every element of a distribution tensor.
fn entropy(p: &Tensor) -> Result<Tensor> {
    Ok((p * (p + EPS)?.log()?)?.sum_all()?.neg()?)
}

/// The mutual information of a joint distribution `(A, B)` (summing to 1).
fn mutual_information(joint: &Tensor) -> Result<Tensor> {
    let ha = entropy(&joint.sum(1)?)?;
    let hb = entropy(&joint.sum(0)?)?;
    Ok(((ha + hb)? - entropy(joint)?)?)
}

#[cfg(test)]
/// The weighted joint distribution `(A, B)` of per-point distributions `a` `(n, A)` and `b` `(n, B)`
/// with point weights `w` `(n,)`: `sum_x w_x a_x b_x^T / sum w`.
fn joint(a: &Tensor, b: &Tensor, w: &Tensor, wsum: f64) -> Result<Tensor> {
    let aw = a.broadcast_mul(&w.unsqueeze(1)?)?;
    Ok((aw.t()?.matmul(b)? / wsum)?)
}

/// The groupwise loss of `metric` (lower is better) for intensities `u` `(N, n)` in `[0, 1]` and point
/// weights `w` `(n,)`, updating the fitted model in `state` first (X-CoReg and GMM: one EM step; ten
/// when `state` is empty). Differentiable with respect to `u`.
///
/// - `xmetric`: `-sum_j I(U_j; Z)` (nats), Z's posteriors from the E-step (detached);
/// - `ape`: `-sum_{j<k} MI(U_j, U_k)`;
/// - `cte`: `sum_j H(U_j | T)`;
/// - `congealing`: the weighted mean over points of the entropy of the group's intensities there;
/// - `gmm`: the weighted mean negative log-likelihood of the points' intensity vectors.
///
/// Errors: `u` not `(N, n)` with N >= 2, `w` not `(n,)`, no point with weight, a measure whose options
/// fail [`GroupMetric::check`]; tensor errors.
pub fn group_loss(metric: &GroupMetric, u: &Tensor, w: &Tensor, state: &mut GroupState) -> Result<Tensor> {
    group_loss_with(metric, u, w, state, true)
}

/// [`group_loss`], with `update = false` holding a fitted model as it is (no EM step: X-CoReg's
/// posteriors come from the held model at `u`, GMM's parameters are kept), so that the loss is a fixed
/// function of `u` for line searches (L-BFGS). Without a fitted model it fits one as [`group_loss`]
/// does.
///
/// Errors: as [`group_loss`].
pub fn group_loss_with(
    metric: &GroupMetric,
    u: &Tensor,
    w: &Tensor,
    state: &mut GroupState,
    update: bool,
) -> Result<Tensor> {
    metric.check()?;
    let (n_img, n) = match u.dims() {
        [a, b] if *a >= 2 && *b > 0 => (*a, *b),
        d => {
            return Err(Error::Shape {
                op: format!("groupwise {}", metric.name()),
                expected: "(N, n) intensities of N >= 2 images at n points".into(),
                actual: format!("{d:?}"),
            })
        }
    };
    if w.dims() != [n] {
        return Err(Error::Shape {
            op: format!("groupwise {}", metric.name()),
            expected: format!("({n},) point weights"),
            actual: format!("{:?}", w.dims()),
        });
    }
    let u = u.to_dtype(DType::F32)?;
    let w = w.to_dtype(DType::F32)?.detach();
    let wsum = w.sum_all()?.to_scalar::<f32>()? as f64;
    if wsum <= 0.0 || wsum.is_nan() {
        return Err(Error::arg(
            format!("groupwise {}", metric.name()),
            "no sample point lies inside every image (do the images overlap?)",
        ));
    }
    match metric.kind {
        GroupKind::Ape => {
            let wv = Arc::new(w.to_vec1::<f32>()?);
            let mut total = Tensor::zeros((), DType::F32, u.device())?;
            for j in 0..n_img {
                for k in j + 1..n_img {
                    total = (total + mutual_information(&pair_joint(metric, &u.get(j)?, &u.get(k)?, &wv)?)?)?;
                }
            }
            Ok(total.neg()?)
        }
        GroupKind::Congealing => congealing_loss(metric, &u, &w, wsum),
        GroupKind::Cte => cte_with(metric, &u, &w, &CteTemplate::fit(&u, &w, wsum)?),
        GroupKind::XMetric => xmetric_loss(metric, &u, &w, wsum, n_img, state, update),
        GroupKind::Gmm => gmm_loss(metric, &u, &w, wsum, n_img, state, update),
    }
}

/// Congealing on the host: per point, the entropy `H_x = -sum_l p_l ln p_l` of the group's Parzen
/// histogram `p = (1/N) sum_j W_j(x, .)`, and its derivative
/// `dH_x / du_jx = -(1/N) sum_l (ln p_l + 1) dW_j(x, l) / du`; the loss is the weighted mean of `H_x`,
/// returned as a tensor whose gradient with respect to `u` is that derivative.
fn congealing_loss(metric: &GroupMetric, u: &Tensor, w: &Tensor, wsum: f64) -> Result<Tensor> {
    let rows = u.detach().to_vec2::<f32>()?;
    let wv = w.to_vec1::<f32>()?;
    let (n_img, l) = (rows.len(), metric.bins);
    let n = wv.len();
    let pz = ParzenKernel::new(Parzen { bins: l, sigma: metric.sigma });
    let scale = l as f64 - 1.0;
    let per_point: Vec<(f64, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map(|x| {
            if wv[x] == 0.0 {
                return (0.0, vec![0f32; n_img]);
            }
            let mut p = vec![0f64; l];
            let mut spans = Vec::with_capacity(n_img);
            for row in &rows {
                let (mut bw, mut dw) = ([0f64; 64], [0f64; 64]);
                let (lo, hi) = bin_weights(&pz, l, row[x], &mut bw, &mut dw);
                if hi >= lo {
                    for b in lo..=hi {
                        p[b] += bw[b - lo] / n_img as f64;
                    }
                }
                spans.push((lo, hi, dw));
            }
            let h: f64 = p.iter().filter(|&&v| v > 0.0).map(|&v| -v * v.ln()).sum();
            let g = spans
                .iter()
                .map(|(lo, hi, dw)| {
                    if hi < lo {
                        return 0f32;
                    }
                    let d: f64 = (*lo..=*hi).map(|b| -(p[b].max(EPS).ln() + 1.0) * dw[b - lo]).sum();
                    (d * scale / n_img as f64 * wv[x] as f64 / wsum) as f32
                })
                .collect();
            (h * wv[x] as f64, g)
        })
        .collect();
    let value = per_point.iter().map(|(h, _)| h).sum::<f64>() / wsum;
    let mut grad = vec![0f32; n_img * n];
    for (x, (_, g)) in per_point.iter().enumerate() {
        for j in 0..n_img {
            grad[j * n + x] = g[j];
        }
    }
    with_gradient(u, value, grad)
}

/// A 0-d tensor of value `value` whose gradient with respect to `u` is `grad` (same element order):
/// `sum(u * G) - detach(sum(u * G)) + value`, for losses whose derivative is worked out by hand.
fn with_gradient(u: &Tensor, value: f64, grad: Vec<f32>) -> Result<Tensor> {
    let g = Tensor::from_vec(grad, u.shape(), u.device())?;
    let lin = (u * g)?.sum_all()?;
    let offset = value - lin.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok(lin.affine(1.0, offset)?)
}

/// Weighted mean and standard deviation of each row of `u` `(N, n)` (host f64).
fn row_stats(u: &[Vec<f32>], w: &[f32], wsum: f64) -> Vec<(f64, f64)> {
    u.iter()
        .map(|row| {
            let m = row.iter().zip(w).map(|(&v, &wi)| v as f64 * wi as f64).sum::<f64>() / wsum;
            let var = row.iter().zip(w).map(|(&v, &wi)| (v as f64 - m).powi(2) * wi as f64).sum::<f64>() / wsum;
            (m, var.sqrt().max(1e-6))
        })
        .collect()
}

/// CTE's template as a fixed linear map of the intensities: `T = (sum_j coef_j u_j - lo) / span`, the
/// first principal component of the standardised intensities mapped to `[0, 1]` by its range over the
/// weighted points. Computed from the current intensities and then held (detached) for the gradient,
/// as the seed authors' code holds the standardisation.
#[derive(Clone, Debug)]
struct CteTemplate {
    coef: Vec<f32>,
    lo: f64,
    span: f64,
}

impl CteTemplate {
    fn fit(u: &Tensor, w: &Tensor, wsum: f64) -> Result<Self> {
        let rows: Vec<Vec<f32>> = u.detach().to_vec2::<f32>()?;
        let wv = w.to_vec1::<f32>()?;
        let (n_img, n) = (rows.len(), wv.len());
        let stats = row_stats(&rows, &wv, wsum);
        let mut a = DMatrix::<f64>::zeros(n_img, n_img);
        for j in 0..n_img {
            for k in j..n_img {
                let ((mj, sj), (mk, sk)) = (stats[j], stats[k]);
                let c = (0..n).map(|x| wv[x] as f64 * (rows[j][x] as f64 - mj) * (rows[k][x] as f64 - mk)).sum::<f64>()
                    / (wsum * sj * sk);
                a[(j, k)] = c;
                a[(k, j)] = c;
            }
        }
        let eig = SymmetricEigen::new(a);
        let top = eig.eigenvalues.imax();
        let mut e: Vec<f64> = eig.eigenvectors.column(top).iter().copied().collect();
        if e.iter().sum::<f64>() < 0.0 {
            e.iter_mut().for_each(|v| *v = -*v);
        }
        let coef: Vec<f32> = (0..n_img).map(|j| (e[j] / stats[j].1) as f32).collect();
        let t: Vec<f64> = (0..n)
            .filter(|&x| wv[x] > 0.0)
            .map(|x| (0..n_img).map(|j| coef[j] as f64 * rows[j][x] as f64).sum())
            .collect();
        let (lo, hi) = t.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        Ok(CteTemplate { coef, lo, span: if hi > lo { hi - lo } else { 1.0 } })
    }

    /// The template `(n,)` in `[0, 1]`, differentiable in `u`.
    fn apply(&self, u: &Tensor) -> Result<Tensor> {
        let c = Tensor::from_vec(self.coef.clone(), (1, self.coef.len()), u.device())?;
        Ok(((c.matmul(u)?.squeeze(0)? - self.lo)? / self.span)?.clamp(0f32, 1f32)?)
    }
}

/// CTE's loss `sum_j H(U_j | T)` for a given template.
fn cte_with(metric: &GroupMetric, u: &Tensor, w: &Tensor, template: &CteTemplate) -> Result<Tensor> {
    let t = template.apply(u)?;
    let wv = Arc::new(w.to_vec1::<f32>()?);
    let mut total = Tensor::zeros((), DType::F32, u.device())?;
    for j in 0..u.dim(0)? {
        let p = pair_joint(metric, &u.get(j)?, &t, &wv)?; // (U_j bins, T bins)
        total = (total + (entropy(&p)? - entropy(&p.sum(0)?)?)?)?;
    }
    Ok(total)
}

/// Initial soft classes `(n, K)` from the group's mean intensity: class k centred on the weighted
/// quantile `(k + 1/2) / K` of the mean, a Gaussian of the quantiles' spacing.
fn initial_posterior(u: &Tensor, w: &Tensor, k: usize) -> Result<Tensor> {
    let t = u.mean(0)?.detach(); // (n,)
    let tv = t.to_vec1::<f32>()?;
    let wv = w.to_vec1::<f32>()?;
    let mut inside: Vec<f32> = tv.iter().zip(&wv).filter(|(_, &wi)| wi > 0.0).map(|(&v, _)| v).collect();
    inside.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| inside[((p * (inside.len() - 1) as f64).round() as usize).min(inside.len() - 1)] as f64;
    let centres: Vec<f32> = (0..k).map(|c| q((c as f64 + 0.5) / k as f64) as f32).collect();
    let spread = ((q(0.99) - q(0.01)) / k as f64).max(1e-3) as f32;
    let c = Tensor::from_vec(centres, (1, k), u.device())?;
    let d = (t.unsqueeze(1)?.broadcast_sub(&c)? / spread as f64)?;
    Ok(candle_nn::ops::softmax((d.sqr()? * -0.5)?.as_ref(), D::Minus1)?)
}

/// X-CoReg's fitted model on the host: mixing weights `pi` `(K,)` and each image's class-conditional
/// Parzen histogram `cond[(j K + k) L + l] = P_j(l | k)`.
#[derive(Clone, Debug)]
pub struct XModel {
    pi: Vec<f64>,
    cond: Vec<f64>,
    images: usize,
}

/// Parzen weights of the intensity `v` in `[0, 1]` over `bins` bins: `(first bin, last bin)`, the
/// weights (and derivatives) from index 0.
#[inline]
fn bin_weights(pz: &ParzenKernel, bins: usize, v: f32, w: &mut [f64; 64], dw: &mut [f64; 64]) -> (usize, usize) {
    pz.weights(v as f64 * (bins as f64 - 1.0), w, dw)
}

/// X-CoReg's E-step on the host: `gamma_xk ∝ pi_k prod_j f_jk(x)`, `f_jk = sum_l W_j(x, l) P_j(l | k)`,
/// floored at [`MIN_PROB`] and renormalised; `(n K)` values, point-major.
fn xmetric_e_step(m: &XModel, u: &[Vec<f32>], metric: &GroupMetric) -> Vec<f32> {
    let (k, l) = (m.pi.len(), metric.bins);
    let pz = ParzenKernel::new(Parzen { bins: l, sigma: metric.sigma });
    let n = u.first().map_or(0, Vec::len);
    let log_pi: Vec<f64> = m.pi.iter().map(|p| (p + EPS).ln()).collect();
    (0..n)
        .into_par_iter()
        .flat_map_iter(|x| {
            let (mut w, mut dw) = ([0f64; 64], [0f64; 64]);
            let mut logit = log_pi.clone();
            for (j, row) in u.iter().enumerate() {
                let (lo, hi) = bin_weights(&pz, l, row[x], &mut w, &mut dw);
                for (c, lg) in logit.iter_mut().enumerate() {
                    let base = (j * k + c) * l;
                    let f: f64 = if hi >= lo { (lo..=hi).map(|b| w[b - lo] * m.cond[base + b]).sum() } else { 0.0 };
                    *lg += (f + EPS).ln();
                }
            }
            let top = logit.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logit.iter().map(|v| (v - top).exp()).collect();
            let s: f64 = e.iter().sum();
            let g: Vec<f64> = e.iter().map(|v| (v / s).max(MIN_PROB)).collect();
            let s2: f64 = g.iter().sum();
            g.into_iter().map(move |v| (v / s2) as f32)
        })
        .collect()
}

/// X-CoReg's M-step on the host: `pi_k = sum_x w_x gamma_xk / sum w` and
/// `P_j(l | k) = sum_x w_x gamma_xk W_j(x, l) / (pi_k sum w)`.
fn xmetric_m_step(g: &[f32], u: &[Vec<f32>], w: &[f32], wsum: f64, k: usize, metric: &GroupMetric) -> XModel {
    let (n_img, l) = (u.len(), metric.bins);
    let pz = ParzenKernel::new(Parzen { bins: l, sigma: metric.sigma });
    let size = k + n_img * k * l;
    let acc = (0..w.len())
        .into_par_iter()
        .fold(
            || vec![0f64; size],
            |mut acc, x| {
                let wx = w[x] as f64;
                if wx == 0.0 {
                    return acc;
                }
                let (mut bw, mut dw) = ([0f64; 64], [0f64; 64]);
                for c in 0..k {
                    acc[c] += wx * g[x * k + c] as f64;
                }
                for (j, row) in u.iter().enumerate() {
                    let (lo, hi) = bin_weights(&pz, l, row[x], &mut bw, &mut dw);
                    if hi < lo {
                        continue;
                    }
                    for c in 0..k {
                        let r = wx * g[x * k + c] as f64;
                        let base = k + (j * k + c) * l;
                        for b in lo..=hi {
                            acc[base + b] += r * bw[b - lo];
                        }
                    }
                }
                acc
            },
        )
        .reduce(
            || vec![0f64; size],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let pi: Vec<f64> = acc[..k].iter().map(|v| v / wsum).collect();
    let cond = (0..n_img * k * l).map(|i| acc[k + i] / wsum / (pi[(i / l) % k] + EPS)).collect();
    XModel { pi, cond, images: n_img }
}

fn xmetric_loss(
    metric: &GroupMetric,
    u: &Tensor,
    w: &Tensor,
    wsum: f64,
    n_img: usize,
    state: &mut GroupState,
    update: bool,
) -> Result<Tensor> {
    let k = metric.classes;
    let rows = u.detach().to_vec2::<f32>()?;
    let wv = w.to_vec1::<f32>()?;
    let (mut model, steps) = match state {
        GroupState::XMetric(m) if m.images == n_img && m.pi.len() == k && m.cond.len() == n_img * k * metric.bins => {
            if !update {
                let g = Tensor::from_vec(xmetric_e_step(m, &rows, metric), (wv.len(), k), u.device())?;
                return xmetric_value(metric, u, &g, w, wsum);
            }
            (m.clone(), 1)
        }
        _ => {
            let g0 = initial_posterior(u, w, k)?.flatten_all()?.to_vec1::<f32>()?;
            (xmetric_m_step(&g0, &rows, &wv, wsum, k, metric), INIT_EM)
        }
    };
    // Algorithm 1: the posteriors from the current model, the model (pi and the densities) from them,
    // and the gradient step with the posteriors held; a fresh model first iterates EM to settle.
    let mut g = xmetric_e_step(&model, &rows, metric);
    for _ in 1..steps {
        model = xmetric_m_step(&g, &rows, &wv, wsum, k, metric);
        g = xmetric_e_step(&model, &rows, metric);
    }
    *state = GroupState::XMetric(xmetric_m_step(&g, &rows, &wv, wsum, k, metric));
    let g = Tensor::from_vec(g, (rows.first().map_or(0, Vec::len), k), u.device())?;
    xmetric_value(metric, u, &g, w, wsum)
}

/// `-sum_j I(U_j; Z)` for posteriors `g` `(n, K)` (held), differentiable in `u`.
fn xmetric_value(metric: &GroupMetric, u: &Tensor, g: &Tensor, w: &Tensor, wsum: f64) -> Result<Tensor> {
    let wv = Arc::new(w.to_vec1::<f32>()?);
    let mut total = Tensor::zeros((), DType::F32, u.device())?;
    for j in 0..u.dim(0)? {
        total = (total + mutual_information(&class_joint(metric, &u.get(j)?, g, &wv, wsum)?)?)?;
    }
    Ok(total.neg()?)
}

/// The posterior class probabilities `(n, K)` of X-CoReg's fitted model at intensities `u` `(N, n)`
/// (the seed's posterior segmentation), or `None` when `state` holds no X-CoReg model for N images.
///
/// Errors: tensor errors.
pub fn xmetric_posterior(metric: &GroupMetric, u: &Tensor, state: &GroupState) -> Result<Option<Tensor>> {
    let GroupState::XMetric(m) = state else { return Ok(None) };
    if m.images != u.dim(0)? {
        return Ok(None);
    }
    let rows = u.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let g = xmetric_e_step(m, &rows, metric);
    Ok(Some(Tensor::from_vec(g, (u.dim(1)?, m.pi.len()), u.device())?))
}

/// Per-component log densities `(n, K)` of the points `x` `(n, N)` under a GMM (host parameters),
/// differentiable in `x`.
fn gmm_log_density(x: &Tensor, pi: &[f64], mean: &[Vec<f64>], cov: &[DMatrix<f64>]) -> Result<Tensor> {
    let dev = x.device();
    let dim = x.dim(1)?;
    let mut cols = Vec::with_capacity(pi.len());
    for k in 0..pi.len() {
        let c = &cov[k];
        let chol = c.clone().cholesky().ok_or_else(|| Error::arg("gmm", "a component's covariance is singular"))?;
        let inv = chol.inverse();
        let logdet = 2.0 * chol.l().diagonal().iter().map(|v| v.ln()).sum::<f64>();
        let mu = Tensor::from_vec(mean[k].iter().map(|&v| v as f32).collect::<Vec<_>>(), (1, dim), dev)?;
        let inv = Tensor::from_vec(inv.transpose().iter().map(|&v| v as f32).collect::<Vec<_>>(), (dim, dim), dev)?;
        let d = x.broadcast_sub(&mu)?;
        let q = (d.matmul(&inv)? * &d)?.sum(1)?;
        let constant = pi[k].max(EPS).ln() - 0.5 * logdet - 0.5 * dim as f64 * (2.0 * std::f64::consts::PI).ln();
        cols.push(((q * -0.5)? + constant)?);
    }
    Ok(Tensor::stack(&cols, 1)?)
}

/// GMM M-step on the host from posteriors `g` `(n, K)`, points `x` `(n, N)` and weights `w`.
fn gmm_m_step(g: &[Vec<f32>], x: &[Vec<f32>], w: &[f32], k: usize) -> (Vec<f64>, Vec<Vec<f64>>, Vec<DMatrix<f64>>) {
    let dim = x.first().map_or(0, Vec::len);
    let mut nk = vec![0f64; k];
    let mut mean = vec![vec![0f64; dim]; k];
    for ((gx, xx), &wx) in g.iter().zip(x).zip(w) {
        for c in 0..k {
            let r = gx[c] as f64 * wx as f64;
            nk[c] += r;
            for d in 0..dim {
                mean[c][d] += r * xx[d] as f64;
            }
        }
    }
    for c in 0..k {
        let s = nk[c].max(EPS);
        mean[c].iter_mut().for_each(|m| *m /= s);
    }
    let mut cov = vec![DMatrix::<f64>::zeros(dim, dim); k];
    for ((gx, xx), &wx) in g.iter().zip(x).zip(w) {
        for c in 0..k {
            let r = gx[c] as f64 * wx as f64;
            if r == 0.0 {
                continue;
            }
            for a in 0..dim {
                let da = xx[a] as f64 - mean[c][a];
                for b in 0..=a {
                    cov[c][(a, b)] += r * da * (xx[b] as f64 - mean[c][b]);
                }
            }
        }
    }
    let total: f64 = nk.iter().sum::<f64>().max(EPS);
    for c in 0..k {
        let s = nk[c].max(EPS);
        for a in 0..dim {
            for b in 0..=a {
                let v = cov[c][(a, b)] / s;
                cov[c][(a, b)] = v;
                cov[c][(b, a)] = v;
            }
            cov[c][(a, a)] += GMM_VAR_FLOOR;
        }
    }
    let pi = nk.iter().map(|v| (v / total).max(MIN_PROB)).collect();
    (pi, mean, cov)
}

fn gmm_loss(
    metric: &GroupMetric,
    u: &Tensor,
    w: &Tensor,
    wsum: f64,
    n_img: usize,
    state: &mut GroupState,
    update: bool,
) -> Result<Tensor> {
    let k = metric.classes;
    let x = u.t()?.contiguous()?; // (n, N)
    let xv = x.detach().to_vec2::<f32>()?;
    let wv = w.to_vec1::<f32>()?;
    let (mut pi, mut mean, mut cov, steps) = match state {
        GroupState::Gmm { pi, mean, cov } if pi.len() == k && mean.first().is_some_and(|m| m.len() == n_img) => {
            (pi.clone(), mean.clone(), cov.clone(), usize::from(update))
        }
        _ => {
            let g0 = initial_posterior(u, w, k)?.to_vec2::<f32>()?;
            let (pi, mean, cov) = gmm_m_step(&g0, &xv, &wv, k);
            (pi, mean, cov, INIT_EM)
        }
    };
    let detached = x.detach();
    for _ in 0..steps {
        let g = candle_nn::ops::softmax(&gmm_log_density(&detached, &pi, &mean, &cov)?, D::Minus1)?;
        (pi, mean, cov) = gmm_m_step(&g.to_vec2::<f32>()?, &xv, &wv, k);
    }
    let logp = gmm_log_density(&x, &pi, &mean, &cov)?; // (n, K)
    *state = GroupState::Gmm { pi, mean, cov };
    let m = logp.detach().max_keepdim(1)?;
    let lse = (logp.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m)?.squeeze(1)?;
    Ok(((lse * w)?.sum_all()? / (-wsum))?)
}

/// The groupwise registration error (gRE, mm) of estimated transforms against the truths that made
/// the group: image j was made as `moved_j(x) = original_j(A_j(x))`, transform j maps common-space
/// points to image j's points, so the group is aligned when `A_j(T_j(c))` is one point for every j. gRE
/// is the mean over pairs `j < k` of the mean over the points `c` (the voxel centres of `grid`, inside
/// `mask` when given: non-zero values, `(Z, Y, X)` on the grid) of `|A_j(T_j(c)) - A_k(T_k(c))|` (mm).
///
/// Errors: lists of different lengths or of fewer than two transforms, a mask of another size, an
/// empty mask; the transforms' errors.
pub fn gre(
    transforms: &[&dyn Transform],
    truths: &[&dyn Transform],
    grid: &crate::image::Grid,
    mask: Option<&[f32]>,
) -> Result<f64> {
    if transforms.len() != truths.len() || transforms.len() < 2 {
        return Err(Error::arg(
            "gre",
            format!(
                "one truth per transform and at least two of each, got {} transforms and {} truths",
                transforms.len(),
                truths.len()
            ),
        ));
    }
    let nv = grid.num_voxels();
    if let Some(m) = mask {
        if m.len() != nv {
            return Err(Error::Shape {
                op: "gre mask".into(),
                expected: format!("{nv} voxels"),
                actual: format!("{}", m.len()),
            });
        }
    }
    let keep: Vec<u32> = (0..nv as u32).filter(|&i| mask.is_none_or(|m| m[i as usize] != 0.0)).collect();
    if keep.is_empty() {
        return Err(Error::arg("gre", "the mask is empty"));
    }
    let dev = Device::Cpu;
    let all = crate::spatial::grid_points(grid, &dev)?.reshape((nv, 3))?;
    let idx = Tensor::from_vec(keep.clone(), keep.len(), &dev)?;
    let pts = all.index_select(&idx, 0)?;
    let mapped: Vec<Tensor> = transforms
        .iter()
        .zip(truths)
        .map(|(t, a)| Ok(a.map_points(&t.map_points(&pts)?.to_device(&dev)?)?.to_device(&dev)?))
        .collect::<Result<_>>()?;
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for j in 0..mapped.len() {
        for k in j + 1..mapped.len() {
            let d = (&mapped[j] - &mapped[k])?.sqr()?.sum(1)?.sqrt()?.to_dtype(DType::F64)?;
            sum += d.mean_all()?.to_scalar::<f64>()?;
            pairs += 1;
        }
    }
    Ok(sum / pairs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// N rows of smooth "tissue" intensities at n points: row j is a different monotone or
    /// non-monotone map of one latent label (multi-modal), plus a little noise.
    fn group(shift_last: usize) -> (Tensor, Tensor) {
        group_of(&[[0.1, 0.4, 0.7, 0.95], [0.9, 0.2, 0.5, 0.3], [0.3, 0.8, 0.1, 0.6]], shift_last)
    }

    /// One row per intensity map of the latent label, the last row's labels shifted by `shift_last`.
    fn group_of(maps: &[[f64; 4]], shift_last: usize) -> (Tensor, Tensor) {
        group_n(maps, shift_last, 3000, 0.02)
    }

    /// `group_of` at n points with uniform noise of width `noise`.
    fn group_n(maps: &[[f64; 4]], shift_last: usize, n: usize, spread: f64) -> (Tensor, Tensor) {
        let label = |x: usize| ((x as f64 * 0.37).sin() * 1.7 + 1.7).floor() as usize % 4;
        let mut v = Vec::new();
        for (j, m) in maps.iter().enumerate() {
            for x in 0..n {
                let xx = if j == maps.len() - 1 { x + shift_last } else { x };
                let noise = ((x * 7919 + j * 104729) % 1000) as f64 / 1000.0 - 0.5;
                v.push((m[label(xx)] + spread * noise).clamp(0.0, 1.0) as f32);
            }
        }
        let u = Tensor::from_vec(v, (3, n), &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        let w = Tensor::ones(n, DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        (u, w)
    }

    fn loss(name: &str, u: &Tensor, w: &Tensor) -> f64 {
        let m = GroupMetric::new(name).unwrap_or_else(|e| panic!("{e}"));
        let mut s = GroupState::Empty;
        let l = group_loss(&m, u, w, &mut s).unwrap_or_else(|e| panic!("{name}: {e}"));
        l.to_scalar::<f32>().unwrap_or_else(|e| panic!("{e}")) as f64
    }

    #[test]
    fn a_misaligned_member_worsens_every_measure() {
        let (aligned, w) = group(0);
        let (shifted, _) = group(3);
        // Congealing assumes one modality (equal intensities agree): test it on copies of one image.
        let one = [0.1, 0.4, 0.7, 0.95];
        let (mono, mono_shifted) = (group_of(&[one; 3], 0).0, group_of(&[one; 3], 3).0);
        for name in GROUP_METRICS {
            let (a, b) = if name == "congealing" {
                (loss(name, &mono, &w), loss(name, &mono_shifted, &w))
            } else {
                (loss(name, &aligned, &w), loss(name, &shifted, &w))
            };
            assert!(a.is_finite() && b.is_finite(), "{name}: finite");
            assert!(a < b - 1e-3, "{name}: aligned {a} below misaligned {b}");
        }
    }

    #[test]
    fn identical_images_give_the_extremum() {
        // N copies of one image: APE is N(N-1)/2 times the entropy H(U) (MI of a variable with itself),
        // congealing its smallest possible value for that Parzen width (every image in the same bins).
        let (u, w) = group(0);
        let row = u.get(0).unwrap_or_else(|e| panic!("{e}"));
        let same = Tensor::stack(&[&row, &row, &row], 0).unwrap_or_else(|e| panic!("{e}"));
        let m = GroupMetric::new("ape").unwrap_or_else(|e| panic!("{e}"));
        let p = parzen_weights(&row, m.bins, m.sigma).unwrap_or_else(|e| panic!("{e}"));
        let h = |t: Tensor| t.to_scalar::<f32>().unwrap_or_else(|e| panic!("{e}")) as f64;
        let marginal =
            h(entropy(&(p.sum(0).unwrap_or_else(|e| panic!("{e}")) / 3000.0).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}")));
        let joint_h =
            h(entropy(&joint(&p, &p, &w, 3000.0).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}")));
        let ape = loss("ape", &same, &w);
        assert!((ape + 3.0 * (2.0 * marginal - joint_h)).abs() < 1e-3, "APE of copies {ape} = -3 MI(U, U)");
        assert!(loss("ape", &u, &w) > ape, "APE of copies is below any other group's");
        for name in ["congealing", "cte", "xmetric", "gmm"] {
            assert!(loss(name, &same, &w) < loss(name, &u, &w), "{name}: copies score better than a multi-modal group");
        }
    }

    /// The loss with the fitted model (and X-CoReg's posteriors) held: what the gradient step of
    /// Algorithm 1 differentiates.
    fn frozen_loss(m: &GroupMetric, u: &Tensor, w: &Tensor, s: &GroupState, g: Option<&Tensor>) -> Result<Tensor> {
        match (m.kind, s, g) {
            (GroupKind::XMetric, _, Some(g)) => xmetric_value(m, u, g, w, u.dim(1)? as f64),
            (GroupKind::Gmm, GroupState::Gmm { pi, mean, cov }, _) => {
                let x = u.t()?.contiguous()?;
                let logp = gmm_log_density(&x, pi, mean, cov)?;
                let mx = logp.detach().max_keepdim(1)?;
                let lse = (logp.broadcast_sub(&mx)?.exp()?.sum_keepdim(1)?.log()? + mx)?.squeeze(1)?;
                Ok(((lse * w)?.sum_all()? / -(u.dim(1)? as f64))?)
            }
            _ => group_loss(m, u, w, &mut s.clone()),
        }
    }

    /// CTE with the template's map fitted to `fit_to` and held.
    fn frozen_cte(m: &GroupMetric, u: &Tensor, w: &Tensor, fit_to: &Tensor) -> Result<Tensor> {
        let n = u.dim(1)? as f64;
        cte_with(m, u, w, &CteTemplate::fit(fit_to, w, n)?)
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        // Few points, so that each point's share of the loss (and so the derivative) stands well above
        // the f32 rounding of the loss, spread over their classes' densities (points at a density's mode
        // have no gradient).
        let (u, w) = group_n(&[[0.1, 0.4, 0.7, 0.95], [0.9, 0.2, 0.5, 0.3], [0.3, 0.8, 0.1, 0.6]], 1, 400, 0.15);
        let n = u.dim(1)?;
        for name in GROUP_METRICS {
            let m = GroupMetric::new(name)?;
            // Fit the model once, then compare the gradient to central differences with it held.
            let mut s = GroupState::Empty;
            group_loss(&m, &u, &w, &mut s)?;
            let g = xmetric_posterior(&m, &u, &s)?;
            let var = candle_core::Var::from_tensor(&u)?;
            let eval = |t: &Tensor| -> Result<Tensor> {
                match m.kind {
                    GroupKind::Cte => frozen_cte(&m, t, &w, &u),
                    _ => frozen_loss(&m, t, &w, &s, g.as_ref()),
                }
            };
            let l = eval(var.as_tensor())?;
            let grads = l.backward()?;
            let an = grads.get(var.as_tensor()).ok_or_else(|| Error::arg(name, "no gradient"))?.to_vec2::<f32>()?;
            let base = u.to_vec2::<f32>()?;
            // Directional derivatives (every point of one image moved along a fixed pattern): large
            // enough to rise above f32 rounding, which single-point differences do not.
            for j in 0..3 {
                // Along the analytic gradient itself (largest change), plus a fixed pattern so a zero
                // gradient cannot pass by itself.
                let top = an[j].iter().fold(0f32, |a, g| a.max(g.abs())).max(1e-12);
                let dir: Vec<f32> =
                    (0..n).map(|x| an[j][x] / top + 0.1 * ((x as f32) * 0.37 + j as f32).sin()).collect();
                let h = 1e-3f32;
                let at = |d: f32| -> Result<f64> {
                    let mut b = base.clone();
                    b[j].iter_mut().zip(&dir).for_each(|(v, e)| *v += d * e);
                    let t = Tensor::from_vec(b.concat(), (3, n), &Device::Cpu)?;
                    Ok(eval(&t)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
                };
                let fd = (at(h)? - at(-h)?) / (2.0 * h as f64);
                let a: f64 = an[j].iter().zip(&dir).map(|(g, e)| *g as f64 * *e as f64).sum();
                assert!(
                    (fd - a).abs() <= 0.03 * fd.abs().max(a.abs()) + 1e-4,
                    "{name}, image {j}: analytic {a}, finite difference {fd}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn fused_xmetric_gradient_equals_the_dense_reference() -> Result<()> {
        // The fused Parzen moments against the same X-metric written with dense (N, n, L) weights and
        // candle's autograd: equal values and gradients up to the kernel's truncation at 4 sigma.
        let (u, w) = group(1);
        let m = GroupMetric::new("xmetric")?;
        let mut s = GroupState::Empty;
        group_loss(&m, &u, &w, &mut s)?;
        let g = xmetric_posterior(&m, &u, &s)?.ok_or_else(|| Error::arg("test", "no model"))?;
        let n = u.dim(1)? as f64;
        let var = candle_core::Var::from_tensor(&u)?;
        let fused = xmetric_value(&m, var.as_tensor(), &g, &w, n)?;
        let dense = {
            let wts = parzen_weights(var.as_tensor(), m.bins, m.sigma)?;
            let mut t = Tensor::zeros((), DType::F32, &Device::Cpu)?;
            for j in 0..3 {
                t = (t + mutual_information(&joint(&g, &wts.get(j)?, &w, n)?)?)?;
            }
            t.neg()?
        };
        let (a, b) = (fused.to_scalar::<f32>()?, dense.to_scalar::<f32>()?);
        assert!((a - b).abs() < 2e-3 * b.abs(), "values {a} and {b}");
        let ga = fused
            .backward()?
            .get(var.as_tensor())
            .ok_or_else(|| Error::arg("test", "no gradient"))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let gb = dense
            .backward()?
            .get(var.as_tensor())
            .ok_or_else(|| Error::arg("test", "no gradient"))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let top = gb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let worst = ga.iter().zip(&gb).fold(0f32, |a, (x, y)| a.max((x - y).abs()));

        assert!(top > 0.0 && worst < 0.01 * top, "largest gradient difference {worst} against largest gradient {top}");
        Ok(())
    }

    #[test]
    fn bad_options_and_shapes_are_errors() {
        let mut m = GroupMetric::new("xmetric").unwrap_or_else(|e| panic!("{e}"));
        m.classes = 0;
        let (u, w) = group(0);
        let e = group_loss(&m, &u, &w, &mut GroupState::Empty).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("classes"), "{e}");
        let mut wide = GroupMetric::new("congealing").unwrap_or_else(|e| panic!("{e}"));
        wide.sigma = 20.0;
        assert!(group_loss(&wide, &u, &w, &mut GroupState::Empty).is_err(), "a kernel wider than the bins' buffer");
        let e = GroupMetric::new("congealing_").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("congealing"), "did you mean: {e}");
        let one = u.narrow(0, 0, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(group_loss(
            &GroupMetric::new("ape").unwrap_or_else(|e| panic!("{e}")),
            &one,
            &w,
            &mut GroupState::Empty
        )
        .is_err());
        let zero = w.zeros_like().unwrap_or_else(|e| panic!("{e}"));
        assert!(group_loss(
            &GroupMetric::new("ape").unwrap_or_else(|e| panic!("{e}")),
            &u,
            &zero,
            &mut GroupState::Empty
        )
        .is_err());
    }
}
