//! Errors raised by builtins, and the parsing of keyword-argument maps and positional values.
//!
//! Every option key of a builtin is checked against its help entry ([`super::help`]), so the keys a
//! function accepts, its documentation and its "did you mean" suggestions come from one table.

use rhai::{Array, Dynamic, EvalAltResult, Map, Position};

use super::help;
use super::value::TransformValue;
use crate::image::{Grid, Image};
use crate::metrics::Metric;

/// The result of a builtin.
pub type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// An error raised by a builtin: clonable, so it travels through Rhai as the value of a runtime error
/// and becomes a report at the script boundary ([`crate::diagnostics`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HostError {
    /// A `miette` code, e.g. `regsh::io::not_found` (library errors keep theirs).
    pub code: String,
    /// The message.
    pub message: String,
    /// A help line, if any.
    pub help: Option<String>,
    /// The keyword argument the error is about, if any (the report then points at it).
    pub key: Option<String>,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::Error> for HostError {
    fn from(e: crate::Error) -> Self {
        use miette::Diagnostic;
        HostError {
            code: e.code().map(|c| c.to_string()).unwrap_or_else(|| "regsh::error".into()),
            message: e.to_string(),
            help: e.help().map(|h| h.to_string()).or_else(|| match &e {
                crate::Error::UnknownName { valid, .. } if !valid.is_empty() => {
                    Some(format!("valid: {}", valid.join(", ")))
                }
                _ => None,
            }),
            key: None,
        }
    }
}

impl HostError {
    /// A new error with a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        HostError { code: code.into(), message: message.into(), help: None, key: None }
    }
    /// The same error, about keyword argument `key`.
    pub fn at_key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        self
    }
    /// The same error with a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    /// As a Rhai runtime error (Rhai fills in the call's position).
    pub fn into_rhai(self) -> Box<EvalAltResult> {
        EvalAltResult::ErrorRuntime(Dynamic::from(self), Position::NONE).into()
    }
}

/// Library results as builtin results.
pub trait OrHost<T> {
    /// Converts the error into a [`HostError`] runtime error.
    fn host(self) -> RhaiResult<T>;
    /// Converts the error into a [`HostError`] about keyword argument `key`.
    fn host_key(self, key: &str) -> RhaiResult<T>;
}

impl<T> OrHost<T> for crate::Result<T> {
    fn host(self) -> RhaiResult<T> {
        self.map_err(|e| match e {
            // A script function's own error goes back to the script as it was raised (its position
            // points into the function's text).
            crate::Error::Callback(b) => match b.downcast::<EvalAltResult>() {
                Ok(e) => e,
                Err(b) => HostError::from(crate::Error::Callback(b)).into_rhai(),
            },
            e => HostError::from(e).into_rhai(),
        })
    }
    fn host_key(self, key: &str) -> RhaiResult<T> {
        self.map_err(|e| HostError::from(e).at_key(key).into_rhai())
    }
}

/// A script function's error, to pass through the library unchanged ([`crate::Error::Callback`]);
/// [`OrHost::host`] gives it back to the script as it was raised.
pub(crate) fn callback(e: Box<EvalAltResult>) -> crate::Error {
    crate::Error::Callback(e)
}

/// An argument error of builtin `func`.
pub fn arg_error(func: &str, message: impl std::fmt::Display) -> Box<EvalAltResult> {
    HostError::new("regsh::dsl::argument", format!("{func}: {message}")).into_rhai()
}

/// A short description of a value's type for error messages.
pub fn type_of(d: &Dynamic) -> String {
    if d.is_int() {
        "an integer".into()
    } else if d.is_float() {
        "a number".into()
    } else if d.is_string() {
        format!("a string ({d:?})")
    } else if d.is_bool() {
        "a bool".into()
    } else if d.is_array() {
        "an array".into()
    } else if d.is_map() {
        "a map".into()
    } else if d.is_unit() {
        "()".into()
    } else {
        let t = d.type_name();
        let short = t.rsplit("::").next().unwrap_or(t);
        format!("a {}", super::value::dsl_type_name(short))
    }
}

/// A number (integer or float) as f64.
pub fn num(d: &Dynamic) -> Option<f64> {
    if let Ok(i) = d.as_int() {
        Some(i as f64)
    } else {
        d.as_float().ok()
    }
}

/// A number, or a list of three, as `[x, y, z]`.
pub fn vec3(d: &Dynamic) -> Option<[f64; 3]> {
    if let Some(v) = num(d) {
        return Some([v; 3]);
    }
    let a = d.clone().try_cast::<Array>()?;
    if a.len() != 3 {
        return None;
    }
    let v: Vec<f64> = a.iter().filter_map(num).collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

/// A list of numbers (or one number) as a vector.
pub fn numbers(d: &Dynamic) -> Option<Vec<f64>> {
    if let Some(v) = num(d) {
        return Some(vec![v]);
    }
    let a = d.clone().try_cast::<Array>()?;
    let v: Vec<f64> = a.iter().filter_map(num).collect();
    (v.len() == a.len()).then_some(v)
}

/// A non-negative whole number.
pub fn whole(v: f64) -> Option<usize> {
    (v >= 0.0 && v.fract() == 0.0 && v < 1e15).then_some(v as usize)
}

/// A grid from an image or a grid value.
pub fn grid_of(d: &Dynamic) -> Option<Grid> {
    if let Some(i) = d.clone().try_cast::<Image>() {
        return Some(i.grid().clone());
    }
    d.clone().try_cast::<Grid>()
}

/// The keyword arguments of one call of a builtin.
pub struct Opts {
    func: &'static str,
    map: Map,
}

impl Opts {
    /// Checks the keys of `map` against the options of `func`'s help entry. Errors: an unknown key,
    /// with "did you mean" and the list of valid keys.
    pub fn new(func: &'static str, map: Map) -> RhaiResult<Self> {
        let valid: Vec<&str> = help::help(func).map(|h| h.options.iter().map(|o| o.name).collect()).unwrap_or_default();
        for k in map.keys() {
            if !valid.contains(&k.as_str()) {
                let suggestion = crate::names::suggest(k, valid.iter().copied());
                let hint = suggestion.as_ref().map(|s| format!(", did you mean `{s}`?")).unwrap_or_default();
                let list = if valid.is_empty() { "none".to_string() } else { valid.join(", ") };
                return Err(HostError::new(
                    "regsh::unknown_name",
                    format!("unknown keyword argument `{k}` of `{func}`{hint}"),
                )
                .with_help(format!("keyword arguments of {func}: {list}"))
                .at_key(k)
                .into_rhai());
            }
        }
        Ok(Opts { func, map })
    }

    /// No keyword arguments.
    pub fn none(func: &'static str) -> Self {
        Opts { func, map: Map::new() }
    }

    /// The raw value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&Dynamic> {
        self.map.get(key)
    }

    fn wrong(&self, key: &str, want: &str, got: &Dynamic) -> Box<EvalAltResult> {
        HostError::new(
            "regsh::dsl::option_type",
            format!("keyword argument `{key}` of `{}` must be {want}, got {}", self.func, type_of(got)),
        )
        .at_key(key)
        .into_rhai()
    }

    /// A number.
    pub fn f64(&self, key: &str) -> RhaiResult<Option<f64>> {
        self.get(key).map(|d| num(d).ok_or_else(|| self.wrong(key, "a number", d))).transpose()
    }

    /// A whole number >= 0.
    pub fn usize(&self, key: &str) -> RhaiResult<Option<usize>> {
        self.get(key)
            .map(|d| num(d).and_then(whole).ok_or_else(|| self.wrong(key, "a whole number >= 0", d)))
            .transpose()
    }

    /// true or false.
    pub fn bool(&self, key: &str) -> RhaiResult<Option<bool>> {
        self.get(key).map(|d| d.as_bool().map_err(|_| self.wrong(key, "true or false", d))).transpose()
    }

    /// A string.
    pub fn string(&self, key: &str) -> RhaiResult<Option<String>> {
        self.get(key).map(|d| d.clone().into_string().map_err(|_| self.wrong(key, "a string", d))).transpose()
    }

    /// A number or a list of numbers.
    pub fn numbers(&self, key: &str) -> RhaiResult<Option<Vec<f64>>> {
        self.get(key).map(|d| numbers(d).ok_or_else(|| self.wrong(key, "a number or a list of numbers", d))).transpose()
    }

    /// A whole number or a list of them.
    pub fn counts(&self, key: &str) -> RhaiResult<Option<Vec<usize>>> {
        self.get(key)
            .map(|d| {
                numbers(d)
                    .and_then(|v| v.into_iter().map(whole).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| self.wrong(key, "a whole number or a list of them", d))
            })
            .transpose()
    }

    /// A number or three numbers `[x, y, z]`.
    pub fn vec3(&self, key: &str) -> RhaiResult<Option<[f64; 3]>> {
        self.get(key).map(|d| vec3(d).ok_or_else(|| self.wrong(key, "a number or [x, y, z]", d))).transpose()
    }

    /// An image.
    pub fn image(&self, key: &str) -> RhaiResult<Option<Image>> {
        self.get(key).map(|d| d.clone().try_cast::<Image>().ok_or_else(|| self.wrong(key, "an image", d))).transpose()
    }

    /// A grid, or an image whose grid is meant.
    pub fn grid(&self, key: &str) -> RhaiResult<Option<Grid>> {
        self.get(key).map(|d| grid_of(d).ok_or_else(|| self.wrong(key, "an image or a grid", d))).transpose()
    }

    /// A transform.
    pub fn transform(&self, key: &str) -> RhaiResult<Option<TransformValue>> {
        self.get(key)
            .map(|d| d.clone().try_cast::<TransformValue>().ok_or_else(|| self.wrong(key, "a transform", d)))
            .transpose()
    }

    /// A metric value (`mi`, `cr_patch(patch=8)`) or a metric name (`"mi"`).
    pub fn metric(&self, key: &str) -> RhaiResult<Option<Metric>> {
        let Some(d) = self.get(key) else { return Ok(None) };
        if let Some(m) = d.clone().try_cast::<Metric>() {
            return Ok(Some(m));
        }
        if let Ok(s) = d.clone().into_string() {
            return Metric::new(&s).host_key(key).map(Some);
        }
        Err(self.wrong(key, "a metric (e.g. mi, cr_patch) or a metric name", d))
    }

    /// A value of a host type `T` (described as `what`).
    pub fn typed<T: Clone + Send + Sync + 'static>(&self, key: &str, what: &str) -> RhaiResult<Option<T>> {
        self.get(key).map(|d| d.clone().try_cast::<T>().ok_or_else(|| self.wrong(key, what, d))).transpose()
    }

    /// The function the options belong to.
    pub fn func(&self) -> &'static str {
        self.func
    }
}
