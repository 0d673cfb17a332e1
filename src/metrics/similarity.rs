//! Similarity measures as values with names and options, found through one registry (aliases, "did you
//! mean"), so the DSL and the command line can pass them around.
//!
//! | name (aliases) | measure | loss (lower is better) | range of the measure |
//! |---|---|---|---|
//! | `ssd` (`mse`, `meansquares`) | mean squared difference | the measure | `[0, inf)`, 0 when identical |
//! | `ncc` | global normalized cross-correlation | `-ncc` | `[-1, 1]`, 1 when identical |
//! | `lncc` (`lcc`) | local NCC squared, mean over windows | `-lncc` | `[0, 1]` |
//! | `mi` | Parzen mutual information (nats) | `-mi` | `[0, H]` |
//! | `mi_patch` | mean of per-patch Parzen MI | `-mi_patch` | `[0, H]` |
//! | `nmi` | `(H(F) + H(M)) / H(F, M)` | `-nmi` | `[1, 2]` |
//! | `cr` | symmetric Parzen correlation ratio | `-cr` | `[0, 1]` |
//! | `cr_patch` | mean of per-patch symmetric CR, two passes | `-cr_patch` | `[0, 1]` |
//!
//! Options (with defaults): `bins` 32, `sigma` 0.5 (bin widths) for the Parzen measures; `patch` 16
//! (voxels) and `shifted` true for the patch measures; `window` 9 (voxels, box) or `gaussian` sigma for
//! LNCC; `range_fixed` / `range_moving` (intensity ranges mapped onto the bins; default: each image's
//! min and max).

use std::sync::Arc;

use candle_core::Tensor;

use super::functional::{self as f, ParzenOptions, Window};
use super::regularizers::Regularizer;
use crate::error::{Error, Result};
use crate::names;

/// The kinds of similarity measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Mse,
    Ncc,
    Lncc,
    Mi,
    MiPatch,
    Nmi,
    Cr,
    CrPatch,
    /// A measure supplied from outside the library ([`CustomMeasure`]: one written in the DSL).
    Custom,
    /// A weighted sum of the losses of other measures ([`Metric::weighted_sum`]).
    Sum,
}

/// A similarity measure supplied from outside the library, e.g. a function written in the DSL
/// (`metric(|fixed, warped| ...)`). It is evaluated on the full grid (tensor path; there is no fused
/// point form), and its gradient comes from autograd through whatever it computes.
pub trait CustomMeasure: Send + Sync {
    /// The measure of `fixed` and `moving`, two `(1, Z, Y, X)` f32 tensors on one grid (x fastest),
    /// with an optional mask of the same shape (non-zero inside): a tensor with one element,
    /// differentiable in both images.
    ///
    /// Errors: the function's own (a script error is passed on as [`Error::Callback`]); a result that
    /// is not one element.
    fn measure(&self, fixed: &Tensor, moving: &Tensor, mask: Option<&Tensor>) -> Result<Tensor>;
}

/// A [`CustomMeasure`] with what the registry needs to know of it.
#[derive(Clone)]
pub struct Custom {
    /// The measure.
    pub measure: Arc<dyn CustomMeasure>,
    /// Whether larger values mean better alignment (the loss is then the negated measure).
    pub higher_is_better: bool,
    /// Where it was defined (e.g. `recipe.rhai line 3`), for help and reports.
    pub source: String,
}

impl PartialEq for Custom {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.measure), Arc::as_ptr(&other.measure))
            && self.higher_is_better == other.higher_is_better
    }
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Custom({}, higher_is_better: {})", self.source, self.higher_is_better)
    }
}

/// Every name and alias the registry knows.
pub const METRIC_NAMES: [(&str, MetricKind); 12] = [
    ("ssd", MetricKind::Mse),
    ("mse", MetricKind::Mse),
    ("meansquares", MetricKind::Mse),
    ("ncc", MetricKind::Ncc),
    ("lncc", MetricKind::Lncc),
    ("lcc", MetricKind::Lncc),
    ("mi", MetricKind::Mi),
    ("mi_patch", MetricKind::MiPatch),
    ("nmi", MetricKind::Nmi),
    ("cr", MetricKind::Cr),
    ("cr_patch", MetricKind::CrPatch),
    ("correlation_ratio", MetricKind::Cr),
];

/// An option value.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    Number(f64),
    Bool(bool),
    Range(f64, f64),
}

/// A similarity measure with its options.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    kind: MetricKind,
    name: String,
    parzen: ParzenOptions,
    patch: usize,
    shifted: bool,
    window: Window,
    custom: Option<Custom>,
    /// The weighted terms of a [`MetricKind::Sum`].
    terms: Vec<(f64, Metric)>,
    /// A regularizer of the displacement field that dense stages add to the loss (`lncc + 0.1 * bending`).
    regularizer: Option<Regularizer>,
}

impl Metric {
    /// A measure supplied from outside the library, named `name` (any name; it is not entered in the
    /// registry). Its loss is the negated measure when `higher_is_better`, else the measure.
    pub fn custom(name: &str, custom: Custom) -> Self {
        Metric {
            kind: MetricKind::Custom,
            name: name.to_string(),
            parzen: ParzenOptions::default(),
            patch: 0,
            shifted: false,
            window: Window::Box(9),
            custom: Some(custom),
            terms: Vec::new(),
            regularizer: None,
        }
    }

    /// The measure whose loss is `sum_i w_i * loss_i` for the terms `(w_i, m_i)` (nested sums are
    /// flattened; equal measures' weights are added), so `0.5 * ncc + 0.5 * mi` in the DSL and `-m`
    /// (a weight of -1: the loss of `-ncc` is `ncc`). Its value, as `measure` reports it, is that loss
    /// (lower is better). Local when any term is (then evaluated on the grid, else at points).
    ///
    /// Errors: no terms; a weight that is not finite.
    pub fn weighted_sum(terms: Vec<(f64, Metric)>) -> Result<Self> {
        let mut flat: Vec<(f64, Metric)> = Vec::new();
        let mut regularizer: Option<Regularizer> = None;
        for (w, mut m) in terms {
            if !w.is_finite() {
                return Err(Error::arg("measure sum", format!("weight {w} of {m} is not finite")));
            }
            if let Some(r) = m.regularizer.take() {
                if w < 0.0 {
                    return Err(Error::arg(
                        "measure sum",
                        format!("{m} + {r} carries a regularizer, which cannot take a negative weight ({w}): negate the measure alone"),
                    ));
                }
                let r = r.scaled(w);
                regularizer = Some(match regularizer {
                    None => r,
                    Some(acc) => acc.plus(&r),
                });
            }
            let inner = if m.kind == MetricKind::Sum { m.terms.clone() } else { vec![(1.0, m)] };
            for (wi, mi) in inner {
                match flat.iter_mut().find(|(_, f)| *f == mi) {
                    Some((fw, _)) => *fw += w * wi,
                    None => flat.push((w * wi, mi)),
                }
            }
        }
        if flat.is_empty() {
            return Err(Error::arg("measure sum", "no terms"));
        }
        let mut m = Metric {
            kind: MetricKind::Sum,
            name: String::new(),
            parzen: ParzenOptions::default(),
            patch: 0,
            shifted: false,
            window: Window::Box(9),
            custom: None,
            terms: flat,
            regularizer: None,
        };
        m.name = m.to_string();
        m.regularizer = regularizer;
        Ok(m)
    }

    /// The same measure with `r` added to its regularizer (dense stages add the regularizer's penalty of
    /// the displacement field to the loss; linear stages refuse a measure that has one).
    pub fn with_regularizer(&self, r: &Regularizer) -> Metric {
        let mut m = self.clone();
        m.regularizer = Some(match &self.regularizer {
            None => r.clone(),
            Some(a) => a.plus(r),
        });
        m
    }

    /// The regularizer attached by [`Metric::with_regularizer`], if any.
    pub fn regularizer(&self) -> Option<&Regularizer> {
        self.regularizer.as_ref()
    }

    /// The same measure without a regularizer.
    pub fn without_regularizer(&self) -> Metric {
        let mut m = self.clone();
        m.regularizer = None;
        m
    }

    /// The weighted terms of a sum ([`Metric::weighted_sum`]); empty for any other measure.
    pub fn terms(&self) -> &[(f64, Metric)] {
        &self.terms
    }

    /// The same measure with `f` applied to each term of a sum, or to itself when it is not one.
    ///
    /// Errors: `f`'s.
    pub fn map_terms(&self, f: &mut dyn FnMut(&Metric) -> Result<Metric>) -> Result<Metric> {
        if self.kind != MetricKind::Sum {
            return f(self);
        }
        let terms = self.terms.iter().map(|(w, m)| Ok((*w, m.map_terms(f)?))).collect::<Result<Vec<_>>>()?;
        let mut m = Metric::weighted_sum(terms)?;
        m.regularizer = self.regularizer.clone();
        Ok(m)
    }

    /// The outside measure, for [`MetricKind::Custom`].
    pub fn as_custom(&self) -> Option<&Custom> {
        self.custom.as_ref()
    }

    /// The measure called `name` (or an alias) with default options.
    ///
    /// Errors: [`Error::UnknownName`] with the nearest name.
    pub fn new(name: &str) -> Result<Self> {
        let kind = names::lookup("metric", name, &METRIC_NAMES)?;
        let canonical = METRIC_NAMES.iter().find(|(_, k)| *k == kind).map(|(n, _)| *n).unwrap_or(name);
        Ok(Metric {
            kind,
            name: canonical.to_string(),
            parzen: ParzenOptions::default(),
            patch: if matches!(kind, MetricKind::CrPatch | MetricKind::MiPatch) { 16 } else { 0 },
            shifted: true,
            window: Window::Box(9),
            custom: None,
            terms: Vec::new(),
            regularizer: None,
        })
    }

    /// A measure from a spec `name[key=value,...]` (e.g. `mi[bins=64,sigma=0.3]`, `cr_patch[patch=8]`,
    /// `lncc[window=5]`), as the command line writes it. Values: numbers, `true` / `false`, or `lo:hi`
    /// ranges.
    ///
    /// Errors: unknown names or options (with suggestions), malformed values.
    pub fn parse(spec: &str) -> Result<Self> {
        let (name, opts) = match spec.split_once('[') {
            Some((n, rest)) => (
                n.trim(),
                rest.strip_suffix(']').ok_or_else(|| Error::arg("metric", format!("missing `]` in `{spec}`")))?,
            ),
            None => (spec.trim(), ""),
        };
        let mut m = Metric::new(name)?;
        for kv in opts.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| Error::arg("metric", format!("option `{kv}` is not key=value")))?;
            let v = v.trim();
            let value = if v.eq_ignore_ascii_case("true") {
                OptionValue::Bool(true)
            } else if v.eq_ignore_ascii_case("false") {
                OptionValue::Bool(false)
            } else if let Some((a, b)) = v.split_once(':') {
                let p = |x: &str| {
                    x.trim().parse::<f64>().map_err(|_| Error::arg("metric", format!("bad number `{x}` in `{kv}`")))
                };
                OptionValue::Range(p(a)?, p(b)?)
            } else {
                OptionValue::Number(v.parse().map_err(|_| Error::arg("metric", format!("bad value `{v}` in `{kv}`")))?)
            };
            m.set(k.trim(), value)?;
        }
        Ok(m)
    }

    /// The canonical name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The kind.
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    /// The option names this measure accepts.
    pub fn option_names(&self) -> &'static [&'static str] {
        match self.kind {
            MetricKind::Mse | MetricKind::Ncc | MetricKind::Custom | MetricKind::Sum => &[],
            MetricKind::Lncc => &["window", "gaussian"],
            MetricKind::Mi | MetricKind::Nmi | MetricKind::Cr => &["bins", "sigma", "range_fixed", "range_moving"],
            MetricKind::MiPatch => &["bins", "sigma", "range_fixed", "range_moving", "patch"],
            MetricKind::CrPatch => &["bins", "sigma", "range_fixed", "range_moving", "patch", "shifted"],
        }
    }

    /// Sets an option. Errors: [`Error::UnknownName`] (with the nearest valid option of this measure),
    /// [`Error::InvalidArgument`] for a value of the wrong type or range.
    pub fn set(&mut self, key: &str, value: OptionValue) -> Result<()> {
        let valid = self.option_names();
        if !valid.contains(&key) {
            return Err(Error::UnknownName {
                kind: format!("option of `{}`", self.name),
                name: key.into(),
                suggestion: names::suggest(key, valid.iter().copied()),
                valid: valid.iter().map(|s| s.to_string()).collect(),
            });
        }
        let bad = |why: &str| Error::arg(format!("{} option `{key}`", self.name), why.to_string());
        let num = |v: &OptionValue| match v {
            OptionValue::Number(x) if x.is_finite() => Ok(*x),
            _ => Err(bad("expected a number")),
        };
        match key {
            "bins" => {
                let b = num(&value)?;
                if !(2.0..=1024.0).contains(&b) || b.fract() != 0.0 {
                    return Err(bad("an integer between 2 and 1024"));
                }
                self.parzen.bins = b as usize;
            }
            "sigma" => {
                let s = num(&value)?;
                if !(s > 0.0 && s <= 7.5) {
                    return Err(bad("in (0, 7.5] bin widths"));
                }
                self.parzen.sigma = s;
            }
            "patch" => {
                let p = num(&value)?;
                if !(p >= 2.0 && p.fract() == 0.0) {
                    return Err(bad("an integer number of voxels >= 2"));
                }
                self.patch = p as usize;
            }
            "window" => {
                let w = num(&value)?;
                if !((1.0..=101.0).contains(&w) && w.fract() == 0.0 && (w as usize) % 2 == 1) {
                    return Err(bad("an odd number of voxels, at most 101"));
                }
                self.window = Window::Box(w as usize);
            }
            "gaussian" => {
                let s = num(&value)?;
                if !(s > 0.0 && s <= 30.0) {
                    return Err(bad("a sigma in (0, 30] voxels"));
                }
                self.window = Window::Gaussian(s);
            }
            "shifted" => match value {
                OptionValue::Bool(b) => self.shifted = b,
                _ => return Err(bad("true or false")),
            },
            "range_fixed" | "range_moving" => match value {
                OptionValue::Range(lo, hi) if hi > lo => {
                    if key == "range_fixed" {
                        self.parzen.range_fixed = Some((lo, hi));
                    } else {
                        self.parzen.range_moving = Some((lo, hi));
                    }
                }
                _ => return Err(bad("a range [lo, hi] with lo < hi")),
            },
            _ => unreachable!("checked against option_names"),
        }
        Ok(())
    }

    /// Whether the intensity range of the fixed (`true`) or moving image is set.
    pub fn has_range(&self, fixed: bool) -> bool {
        if fixed {
            self.parzen.range_fixed.is_some()
        } else {
            self.parzen.range_moving.is_some()
        }
    }

    /// Whether larger values of the measure mean better alignment.
    pub fn higher_is_better(&self) -> bool {
        match &self.custom {
            Some(c) => c.higher_is_better,
            None => !matches!(self.kind, MetricKind::Mse | MetricKind::Sum),
        }
    }

    /// The measure itself (0-d tensor), differentiable in both images. Inputs: `(Z, Y, X)` or
    /// `(1, Z, Y, X)` f32 on the same grid; mask of the same size (non-zero inside).
    ///
    /// Errors: [`Error::Shape`] for mismatched inputs; tensor errors.
    pub fn measure(&self, fixed: &Tensor, moving: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        // One check for every measure: finite inputs and a non-empty mask (else some would be NaN, some
        // silently 0, some an obscure error).
        for (what, t) in [("fixed", fixed), ("moving", moving)] {
            let s = t.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !s.is_finite() {
                return Err(Error::arg(
                    self.name.clone(),
                    format!("the {what} image has NaN or infinite voxels (replace them first)"),
                ));
            }
        }
        if let Some(m) = mask {
            if m.ne(0f32)?.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>()? == 0.0 {
                return Err(Error::arg(self.name.clone(), "the mask is empty"));
            }
        }
        match self.kind {
            MetricKind::Mse => f::mse(fixed, moving, mask),
            MetricKind::Ncc => f::ncc(fixed, moving, mask),
            MetricKind::Lncc => f::lncc(fixed, moving, self.window, mask),
            MetricKind::Mi | MetricKind::MiPatch => {
                f::mutual_information(fixed, moving, &self.parzen, self.patch, mask)
            }
            MetricKind::Nmi => f::normalized_mutual_information(fixed, moving, &self.parzen, self.patch, mask),
            MetricKind::Cr | MetricKind::CrPatch => {
                f::correlation_ratio(fixed, moving, &self.parzen, self.patch, self.shifted, mask)
            }
            MetricKind::Sum => {
                let mut total: Option<Tensor> = None;
                for (w, m) in &self.terms {
                    let l = (m.loss(fixed, moving, mask)? * *w)?;
                    total = Some(match total {
                        None => l,
                        Some(t) => (t + l)?,
                    });
                }
                total.ok_or_else(|| Error::arg(self.name.clone(), "a sum without terms"))
            }
            MetricKind::Custom => {
                let c = self.custom.as_ref().ok_or_else(|| Error::arg(self.name.clone(), "no measure attached"))?;
                let four =
                    |t: &Tensor| -> Result<Tensor> { Ok(if t.rank() == 3 { t.unsqueeze(0)? } else { t.clone() }) };
                let (fx, mv, mk) = (four(fixed)?, four(moving)?, mask.map(four).transpose()?);
                let v = c.measure.measure(&fx, &mv, mk.as_ref())?;
                if v.elem_count() != 1 {
                    return Err(Error::Shape {
                        op: self.name.clone(),
                        expected: "a measure with one element".into(),
                        actual: format!("a tensor of shape {:?}", v.dims()),
                    });
                }
                Ok(v.reshape(())?.to_dtype(fixed.dtype())?)
            }
        }
    }

    /// The window of LNCC (for the fused kernel, [`crate::ops::lncc`]); `None` for other measures.
    pub fn lncc_window(&self) -> Option<Window> {
        (self.kind == MetricKind::Lncc).then_some(self.window)
    }

    /// True for measures that need the image grid (LNCC windows, per-patch MI / CR, measures supplied from
    /// outside); false for global measures, which can be evaluated on any set of sample points.
    pub fn is_local(&self) -> bool {
        matches!(self.kind, MetricKind::Lncc | MetricKind::Custom)
            || self.patch > 0
            || self.terms.iter().any(|(_, m)| m.is_local())
    }

    /// Whether the measure has a fused point-list form ([`Metric::point_measure_on`], once the Parzen
    /// ranges are set): global SSD, NCC, MI, NMI and CR, and the patch measures (MI-patch, CR-patch).
    pub fn has_point_form(&self) -> bool {
        match self.kind {
            MetricKind::Mse | MetricKind::Ncc => self.patch == 0,
            MetricKind::Mi | MetricKind::Nmi | MetricKind::Cr | MetricKind::MiPatch | MetricKind::CrPatch => true,
            _ => false,
        }
    }

    /// The fused point-list form of this measure for sample points of a fixed grid of `shape` `(x, y, z)`
    /// voxels: [`Metric::point_measure`] for global measures; for patch measures (MI-patch, CR-patch:
    /// `patch > 0`) the same Parzen measure per patch of `patch` voxels of that grid
    /// ([`crate::ops::point_metric::PatchPoints`]), with a second patch grid shifted by half a patch
    /// when `shifted` (CR-patch, as [`crate::metrics::functional::correlation_ratio`]). `None` where
    /// [`Metric::point_measure`] gives none for the global measure.
    pub fn point_measure_on(&self, shape: [usize; 3]) -> Option<crate::ops::point_metric::PointMeasure> {
        use crate::ops::point_metric::{PatchPoints, PointMeasure};
        if self.patch == 0 {
            return self.point_measure();
        }
        let inner = match self.kind {
            MetricKind::MiPatch | MetricKind::Mi => PointMeasure::Mi(self.point_parzen()?),
            MetricKind::Nmi => PointMeasure::Nmi(self.point_parzen()?),
            MetricKind::CrPatch | MetricKind::Cr => PointMeasure::Cr(self.point_parzen()?),
            _ => return None,
        };
        let p = self.patch;
        let mut layouts = vec![crate::ops::parzen::PatchLayout::new(shape, [p; 3], [0; 3])];
        if self.shifted && matches!(self.kind, MetricKind::CrPatch | MetricKind::Cr) {
            layouts.push(crate::ops::parzen::PatchLayout::new(shape, [p; 3], [p / 2; 3]));
        }
        Some(PointMeasure::Patches(PatchPoints { measure: Box::new(inner), layouts }))
    }

    fn point_parzen(&self) -> Option<crate::ops::point_metric::PointParzen> {
        Some(crate::ops::point_metric::PointParzen {
            parzen: crate::ops::parzen::Parzen { bins: self.parzen.bins, sigma: self.parzen.sigma },
            range_fixed: self.parzen.range_fixed?,
            range_moving: self.parzen.range_moving?,
        })
    }

    /// The fused point-list form of this measure ([`crate::ops::point_metric`]), for global SSD, NCC,
    /// MI, NMI and CR (not `shifted`, which has no meaning without patches); `None` for local and patch
    /// measures, and Parzen measures whose
    /// intensity ranges are not both set (see [`Metric::set`]).
    pub fn point_measure(&self) -> Option<crate::ops::point_metric::PointMeasure> {
        use crate::ops::point_metric::PointMeasure;
        let parzen = || self.point_parzen();
        match self.kind {
            MetricKind::Mse => Some(PointMeasure::Mse),
            MetricKind::Ncc => Some(PointMeasure::Ncc),
            MetricKind::Mi if self.patch == 0 => parzen().map(PointMeasure::Mi),
            MetricKind::Nmi if self.patch == 0 => parzen().map(PointMeasure::Nmi),
            MetricKind::Cr if self.patch == 0 => parzen().map(PointMeasure::Cr),
            _ => None,
        }
    }

    /// The loss to minimize: the measure, negated where higher is better (see the module table).
    pub fn loss(&self, fixed: &Tensor, moving: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let m = self.measure(fixed, moving, mask)?;
        Ok(if self.higher_is_better() { m.neg()? } else { m })
    }

    /// The measure as a number.
    pub fn value(&self, fixed: &Tensor, moving: &Tensor, mask: Option<&Tensor>) -> Result<f64> {
        Ok(self.measure(fixed, moving, mask)?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind != MetricKind::Sum {
            write!(fm, "{}", self.name)?;
        }
        self.fmt_kind(fm)?;
        match &self.regularizer {
            Some(r) => write!(fm, " + {r}"),
            None => Ok(()),
        }
    }
}

impl Metric {
    /// The options (or the terms, for a sum) after the name, as [`Metric`]'s `Display` writes them.
    fn fmt_kind(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            MetricKind::Mse | MetricKind::Ncc => Ok(()),
            MetricKind::Custom => write!(fm, " (defined at {})", self.custom.as_ref().map_or("?", |c| &c.source)),
            MetricKind::Sum => {
                for (i, (w, m)) in self.terms.iter().enumerate() {
                    let sign = match (i, *w < 0.0) {
                        (0, false) => "",
                        (0, true) => "-",
                        (_, false) => " + ",
                        (_, true) => " - ",
                    };
                    let coef = if w.abs() == 1.0 { String::new() } else { format!("{} * ", w.abs()) };
                    let name = if m.kind == MetricKind::Custom { m.name.clone() } else { m.to_string() };
                    write!(fm, "{sign}{coef}{name}")?;
                }
                Ok(())
            }
            MetricKind::Lncc => write!(fm, "({:?})", self.window),
            _ => {
                write!(fm, "(bins={}, sigma={}", self.parzen.bins, self.parzen.sigma)?;
                if self.patch > 0 {
                    write!(fm, ", patch={}", self.patch)?;
                }
                write!(fm, ")")
            }
        }
    }
}
