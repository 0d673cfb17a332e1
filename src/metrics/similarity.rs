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

use candle_core::Tensor;

use super::functional::{self as f, ParzenOptions, Window};
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
}

impl Metric {
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
            MetricKind::Mse | MetricKind::Ncc => &[],
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
        self.kind != MetricKind::Mse
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
        }
    }

    /// The window of LNCC (for the fused kernel, [`crate::ops::lncc`]); `None` for other measures.
    pub fn lncc_window(&self) -> Option<Window> {
        (self.kind == MetricKind::Lncc).then_some(self.window)
    }

    /// True for measures that need the image grid (LNCC windows, per-patch MI / CR); false for global
    /// measures, which can be evaluated on any set of sample points.
    pub fn is_local(&self) -> bool {
        matches!(self.kind, MetricKind::Lncc) || self.patch > 0
    }

    /// Whether the measure has a fused point-list form ([`Metric::point_measure`], once the Parzen
    /// ranges are set): global SSD, NCC, MI, NMI and CR.
    pub fn has_point_form(&self) -> bool {
        matches!(self.kind, MetricKind::Mse | MetricKind::Ncc | MetricKind::Mi | MetricKind::Nmi | MetricKind::Cr)
            && self.patch == 0
    }

    /// The fused point-list form of this measure ([`crate::ops::point_metric`]), for global SSD, NCC,
    /// MI, NMI and CR (not `shifted`, which has no meaning without patches); `None` for local and patch
    /// measures, and Parzen measures whose
    /// intensity ranges are not both set (see [`Metric::set`]).
    pub fn point_measure(&self) -> Option<crate::ops::point_metric::PointMeasure> {
        use crate::ops::point_metric::{PointMeasure, PointParzen};
        let parzen = || -> Option<PointParzen> {
            Some(PointParzen {
                parzen: crate::ops::parzen::Parzen { bins: self.parzen.bins, sigma: self.parzen.sigma },
                range_fixed: self.parzen.range_fixed?,
                range_moving: self.parzen.range_moving?,
            })
        };
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
        write!(fm, "{}", self.name)?;
        match self.kind {
            MetricKind::Mse | MetricKind::Ncc => Ok(()),
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
