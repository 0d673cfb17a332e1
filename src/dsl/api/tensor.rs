//! Tensors in scripts: creation, arithmetic with broadcasting, reductions, shape operations, indexing
//! and autograd (`grad`), on the session's device. What a researcher needs to write a new measure, loss
//! or objective in the DSL, as they would in PyTorch: names, broadcasting and the default unbiased
//! `std` / `var` follow `torch`.
//!
//! Tensors are f32 unless they come from f64 data. Gradients flow from tensors made with
//! `requires_grad=true` (or `.requires_grad()`), and from images warped by parameters under
//! optimization (inside `iso`, a measure written with `metric(|fixed, warped| ...)` is differentiated
//! through the warp).

use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use rhai::{Array, Dynamic, Engine};

/// Rhai's `a..b` and `a..=b` ranges.
type ExclusiveRange = std::ops::Range<i64>;
type InclusiveRange = std::ops::RangeInclusive<i64>;

use super::{ints, with_opts};
use crate::dsl::help::{o, Help};
use crate::dsl::options::{arg_error, num, type_of, Opts, OrHost, RhaiResult};
use crate::dsl::Host;
use crate::image::{DataType, Grid, Image};

/// A tensor held by a script (a candle tensor: shared, immutable; operations make new ones).
#[derive(Clone, Debug)]
pub struct TensorValue(pub Tensor);

impl std::fmt::Display for TensorValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.0;
        let dims = t.dims().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let grad = if t.is_variable() { ", requires_grad" } else { "" };
        let values = if t.elem_count() <= 12 {
            t.flatten_all().and_then(|v| v.to_dtype(DType::F64)).and_then(|v| v.to_vec1::<f64>()).ok()
        } else {
            None
        };
        match values {
            Some(v) => {
                let vals: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
                write!(f, "tensor([{}], shape [{dims}]{grad})", vals.join(", "))
            }
            _ => write!(f, "Tensor(shape [{dims}], {:?}{grad})", t.dtype()),
        }
    }
}

/// The mean cross-entropy of `softmax(logits)` (`(N, C)`) against class indices `(N)` (whole numbers
/// in `[0, C)`) or target probabilities `(N, C)`; differentiable in the logits.
fn cross_entropy(logits: &Tensor, target: &Tensor) -> RhaiResult<TensorValue> {
    let (n, c) = match logits.dims() {
        &[n, c] if n > 0 && c > 0 => (n, c),
        d => return Err(arg_error("cross_entropy", format!("the logits must be (N, C), got shape {d:?}"))),
    };
    let ls = th(candle_nn::ops::log_softmax(logits, 1))?;
    let per_sample = if target.dims() == [n, c] {
        th((target.to_dtype(ls.dtype()).and_then(|t| t * &ls)).and_then(|p| p.sum(1)))?
    } else if target.dims() == [n] {
        let v = th(target.to_dtype(DType::F64).and_then(|t| t.to_vec1::<f64>()))?;
        let mut idx = Vec::with_capacity(n);
        for (i, x) in v.iter().enumerate() {
            match crate::dsl::options::whole(*x) {
                Some(k) if k < c => idx.push(k as u32),
                _ => {
                    return Err(arg_error(
                        "cross_entropy",
                        format!("target {i} is {x}: class indices are whole numbers in [0, {c})"),
                    ))
                }
            }
        }
        let idx = th(Tensor::from_vec(idx, (n, 1), logits.device()))?;
        th(ls.gather(&idx, 1).and_then(|g| g.squeeze(1)))?
    } else {
        return Err(arg_error(
            "cross_entropy",
            format!(
                "the target must be class indices ({n}) or probabilities ({n}, {c}), got shape {:?}",
                target.dims()
            ),
        ));
    };
    tv(per_sample.mean_all().and_then(|m| m.neg()))
}

/// Library (candle) results as builtin results.
fn th<T>(r: candle_core::Result<T>) -> RhaiResult<T> {
    r.map_err(crate::Error::from).host()
}

fn tv(r: candle_core::Result<Tensor>) -> RhaiResult<TensorValue> {
    th(r).map(TensorValue)
}

/// The shape and row-major values (f64) of a number or a (nested, rectangular) array of numbers.
pub(crate) fn nested(d: &Dynamic, func: &str) -> RhaiResult<(Vec<usize>, Vec<f64>)> {
    let mut shape = Vec::new();
    let mut probe = d.clone();
    while let Some(a) = probe.clone().try_cast::<Array>() {
        shape.push(a.len());
        match a.into_iter().next() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut values = Vec::new();
    fill(d, &shape, 0, &mut values, func)?;
    Ok((shape, values))
}

fn fill(d: &Dynamic, shape: &[usize], depth: usize, out: &mut Vec<f64>, func: &str) -> RhaiResult<()> {
    if depth == shape.len() {
        let x = num(d).ok_or_else(|| arg_error(func, format!("expected a number, found {}", type_of(d))))?;
        out.push(x);
        return Ok(());
    }
    let a = d.clone().try_cast::<Array>().ok_or_else(|| {
        arg_error(
            func,
            format!("ragged array: expected an array of {} at depth {depth}, found {}", shape[depth], type_of(d)),
        )
    })?;
    if a.len() != shape[depth] {
        return Err(arg_error(
            func,
            format!("ragged array: {} elements at depth {depth} where the first has {}", a.len(), shape[depth]),
        ));
    }
    a.iter().try_for_each(|x| fill(x, shape, depth + 1, out, func))
}

/// A shape from an integer or an array of integers (`-1` allowed once in `reshape`).
fn shape_of(d: &Dynamic, func: &str) -> RhaiResult<Vec<i64>> {
    if let Ok(n) = d.as_int() {
        return Ok(vec![n]);
    }
    let a = d.clone().try_cast::<Array>().ok_or_else(|| {
        arg_error(func, format!("a shape is an integer or an array of integers, found {}", type_of(d)))
    })?;
    a.iter()
        .map(|x| x.as_int().map_err(|_| arg_error(func, format!("a shape holds integers, found {}", type_of(x)))))
        .collect()
}

/// The most elements a tensor made by a script may have (2^28: 1 GiB of f32, sixteen 256^3 volumes).
pub(crate) const MAX_ELEMENTS: usize = 1 << 28;

/// `n` elements, or an error when above [`MAX_ELEMENTS`] (or not representable).
fn element_count(dims: &[usize], func: &str) -> RhaiResult<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| arg_error(func, format!("shape {dims:?} has more than {MAX_ELEMENTS} elements")))
}

fn positive_shape(d: &Dynamic, func: &str) -> RhaiResult<Vec<usize>> {
    let dims = shape_of(d, func)?
        .into_iter()
        .map(|n| usize::try_from(n).map_err(|_| arg_error(func, format!("a size must be >= 0, got {n}"))))
        .collect::<RhaiResult<Vec<usize>>>()?;
    element_count(&dims, func)?;
    Ok(dims)
}

/// `start, start + step, ...` below `end` (above, for a negative step), counted in f64 (candle's
/// `arange_step` accumulates in f32 and stalls on long ranges).
fn arange(start: f64, end: f64, step: f64, dev: &candle_core::Device) -> RhaiResult<TensorValue> {
    if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
        return Err(arg_error("arange", "start, end and a non-zero step must be finite numbers"));
    }
    let n = ((end - start) / step).ceil().max(0.0);
    if n > MAX_ELEMENTS as f64 {
        return Err(arg_error("arange", format!("{n} values is more than {MAX_ELEMENTS}")));
    }
    let v: Vec<f32> = (0..n as usize).map(|i| (start + i as f64 * step) as f32).collect();
    let len = v.len();
    tv(Tensor::from_vec(v, len, dev))
}

/// A dimension index, negative counting from the end (as in PyTorch).
fn dim_of(t: &Tensor, d: i64, func: &str) -> RhaiResult<usize> {
    let r = t.rank() as i64;
    let k = if d < 0 { d + r } else { d };
    if k < 0 || k >= r.max(1) || (r == 0) {
        return Err(arg_error(
            func,
            format!("dim {d} is out of range for a tensor of rank {r} (shape {:?})", t.dims()),
        ));
    }
    Ok(k as usize)
}

/// The value of `x` as a tensor on `like`'s device and dtype.
fn scalar_like(x: f64, like: &Tensor) -> RhaiResult<Tensor> {
    th(Tensor::new(x, like.device()).and_then(|s| s.to_dtype(like.dtype())))
}

fn same_dtype(a: &Tensor, b: &Tensor) -> RhaiResult<Tensor> {
    if a.dtype() == b.dtype() {
        Ok(b.clone())
    } else {
        th(b.to_dtype(a.dtype()))
    }
}

fn binary(a: &Tensor, b: &Tensor, op: &str) -> RhaiResult<TensorValue> {
    let b = same_dtype(a, b)?;
    tv(match op {
        "+" => a.broadcast_add(&b),
        "-" => a.broadcast_sub(&b),
        "*" => a.broadcast_mul(&b),
        "/" => a.broadcast_div(&b),
        // A constant one-element exponent is an element-wise power (negative bases too, as torch);
        // otherwise exp(b ln a), for positive bases.
        "**" if b.elem_count() == 1 && !b.track_op() => b
            .flatten_all()
            .and_then(|v| v.to_dtype(DType::F64))
            .and_then(|v| v.to_vec1::<f64>())
            .and_then(|v| a.powf(v[0])),
        "**" => a.broadcast_pow(&b),
        ">" => a.broadcast_gt(&b).and_then(|m| m.to_dtype(a.dtype())),
        ">=" => a.broadcast_ge(&b).and_then(|m| m.to_dtype(a.dtype())),
        "<" => a.broadcast_lt(&b).and_then(|m| m.to_dtype(a.dtype())),
        "<=" => a.broadcast_le(&b).and_then(|m| m.to_dtype(a.dtype())),
        "==" => a.broadcast_eq(&b).and_then(|m| m.to_dtype(a.dtype())),
        _ => a.broadcast_ne(&b).and_then(|m| m.to_dtype(a.dtype())),
    })
}

/// `t op x` (`left`) or `x op t` for a number `x`.
fn with_number(t: &Tensor, x: f64, op: &str, left: bool) -> RhaiResult<TensorValue> {
    match (op, left) {
        ("+", _) => tv(t.affine(1.0, x)),
        ("*", _) => tv(t.affine(x, 0.0)),
        ("-", true) => tv(t.affine(1.0, -x)),
        ("-", false) => tv(t.affine(-1.0, x)),
        ("/", true) => tv(t.affine(1.0 / x, 0.0)),
        ("**", true) => tv(t.powf(x)),
        _ => {
            let s = scalar_like(x, t)?;
            if left {
                binary(t, &s, op)
            } else {
                binary(&s, t, op)
            }
        }
    }
}

fn reduce(t: &Tensor, what: &str, o: &Opts) -> RhaiResult<TensorValue> {
    let keep = o.bool("keepdim")?.unwrap_or(false);
    let unbiased = o.bool("unbiased")?.unwrap_or(true);
    let dim = match o.get("dim") {
        Some(d) => Some(dim_of(t, d.as_int().map_err(|_| arg_error(what, "dim must be an integer"))?, what)?),
        None => None,
    };
    if t.elem_count() == 0 {
        return Err(arg_error(what, format!("the tensor is empty (shape {:?})", t.dims())));
    }
    let (x, d) = match dim {
        Some(d) => (t.clone(), d),
        None => (th(t.flatten_all())?, 0),
    };
    let n = x.dims()[d];
    let r = match what {
        "sum" => x.sum_keepdim(d),
        "mean" => x.mean_keepdim(d),
        "max" => x.max_keepdim(d),
        "min" => x.min_keepdim(d),
        "variance" | "std" => {
            if unbiased && n < 2 {
                return Err(arg_error(what, "the unbiased estimate needs at least 2 values (unbiased=false for one)"));
            }
            let centred = th(x.broadcast_sub(&th(x.mean_keepdim(d))?))?;
            let v = th(centred.sqr().and_then(|s| s.sum_keepdim(d)))?;
            let v = th(v.affine(1.0 / (n as f64 - if unbiased { 1.0 } else { 0.0 }), 0.0))?;
            if what == "std" {
                v.sqrt()
            } else {
                Ok(v)
            }
        }
        _ => unreachable!("a reduction"),
    };
    let r = th(r)?;
    tv(match (dim, keep) {
        (None, _) => r.reshape(()),
        (Some(_), true) => Ok(r),
        (Some(d), false) => r.squeeze(d),
    })
}

/// The single value of a one-element tensor.
pub fn item(t: &Tensor) -> RhaiResult<f64> {
    if t.elem_count() != 1 {
        return Err(arg_error("item", format!("needs a tensor with one element, got shape {:?}", t.dims())));
    }
    th(t.flatten_all().and_then(|v| v.to_dtype(DType::F64)).and_then(|v| v.to_vec1::<f64>())).map(|v| v[0])
}

/// The values of `t` as nested arrays of floats (a float for a 0-d tensor).
pub(crate) fn to_array(t: &Tensor) -> RhaiResult<Dynamic> {
    let v = th(t.flatten_all().and_then(|v| v.to_dtype(DType::F64)).and_then(|v| v.to_vec1::<f64>()))?;
    fn build(v: &[f64], dims: &[usize]) -> Dynamic {
        match dims {
            [] => Dynamic::from_float(v[0]),
            [n, rest @ ..] => {
                let step = rest.iter().product::<usize>();
                (0..*n).map(|i| build(&v[i * step..(i + 1) * step], rest)).collect::<Array>().into()
            }
        }
    }
    Ok(build(&v, t.dims()))
}

/// The gradients of a one-element `loss` with respect to `wrt` (tensors made with `requires_grad`).
///
/// Errors: a loss with more than one element; a tensor the loss does not depend on (or that does not
/// require gradients).
pub fn grads(loss: &Tensor, wrt: &[Tensor]) -> RhaiResult<Vec<Tensor>> {
    if loss.elem_count() != 1 {
        return Err(arg_error("grad", format!("the loss must have one element, got shape {:?}", loss.dims())));
    }
    let g = th(loss.backward())?;
    wrt.iter()
        .enumerate()
        .map(|(i, w)| {
            g.get(w).cloned().ok_or_else(|| {
                arg_error(
                    "grad",
                    format!(
                        "tensor {i} (shape {:?}) gets no gradient: make it with requires_grad=true (or .requires_grad()) and compute the loss from it",
                        w.dims()
                    ),
                )
            })
        })
        .collect()
}

fn tensors(a: &Array, func: &str) -> RhaiResult<Vec<Tensor>> {
    a.iter()
        .enumerate()
        .map(|(i, d)| {
            d.clone()
                .try_cast::<TensorValue>()
                .map(|t| t.0)
                .ok_or_else(|| arg_error(func, format!("element {i} is {}, not a Tensor", type_of(d))))
        })
        .collect()
}

fn index(t: &Tensor, i: i64) -> RhaiResult<TensorValue> {
    let n = t.dims().first().copied().unwrap_or(0) as i64;
    let k = if i < 0 { i + n } else { i };
    if t.rank() == 0 || k < 0 || k >= n {
        return Err(arg_error("index", format!("index {i} is out of range for shape {:?}", t.dims())));
    }
    tv(t.get(k as usize))
}

fn slice(t: &Tensor, a: i64, b: i64) -> RhaiResult<TensorValue> {
    let n = t.dims().first().copied().unwrap_or(0) as i64;
    let fix = |x: i64| if x < 0 { (x + n).max(0) } else { x.min(n) };
    let (a, b) = (fix(a), fix(b));
    if t.rank() == 0 {
        return Err(arg_error("index", "a 0-d tensor cannot be sliced"));
    }
    tv(t.narrow(0, a as usize, (b - a).max(0) as usize))
}

/// `t` as f32 with at least the three volume axes `(..., Z, Y, X)`.
fn f32_volume(t: &Tensor, func: &str) -> RhaiResult<candle_core::Result<Tensor>> {
    if t.rank() < 3 {
        return Err(arg_error(func, format!("expects a volume (..., Z, Y, X), got shape {:?}", t.dims())));
    }
    Ok(t.to_dtype(DType::F32))
}

fn kernel(k: i64, func: &str) -> RhaiResult<usize> {
    usize::try_from(k)
        .ok()
        .filter(|k| *k > 0)
        .ok_or_else(|| arg_error(func, format!("must be a positive integer, got {k}")))
}

fn conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, o: &Opts) -> RhaiResult<TensorValue> {
    let stride = o.usize("stride")?.unwrap_or(1);
    let padding = o.usize("padding")?.unwrap_or(0);
    crate::nn::conv3d(x, w, b, stride, padding).host().map(TensorValue)
}

/// A 0-d zero of `like`'s dtype and device.
pub(crate) fn zero_like(like: &Tensor) -> RhaiResult<TensorValue> {
    tv(Tensor::zeros((), like.dtype(), like.device()))
}

/// A tensor marked for gradients (a copy of `t`'s values).
fn requires_grad(t: &Tensor) -> RhaiResult<TensorValue> {
    if !t.dtype().is_float() {
        return Err(arg_error("requires_grad", "only float tensors take gradients"));
    }
    th(Var::from_tensor(&t.detach())).map(|v| TensorValue(v.as_tensor().clone()))
}

/// Registers the tensor type and builtins.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine
        .register_type_with_name::<TensorValue>("Tensor")
        .register_get("shape", |t: &mut TensorValue| ints(t.0.dims().to_vec()))
        .register_get("dtype", |t: &mut TensorValue| format!("{:?}", t.0.dtype()).to_lowercase())
        .register_fn("to_string", |t: &mut TensorValue| t.to_string())
        .register_fn("to_debug", |t: &mut TensorValue| t.to_string())
        .register_fn("item", |t: TensorValue| item(&t.0))
        .register_fn("to_array", |t: TensorValue| to_array(&t.0))
        .register_fn("detach", |t: TensorValue| TensorValue(t.0.detach()))
        .register_fn("requires_grad", |t: TensorValue| requires_grad(&t.0))
        .register_indexer_get(|t: &mut TensorValue, i: i64| index(&t.0, i))
        .register_indexer_get(|t: &mut TensorValue, r: ExclusiveRange| slice(&t.0, r.start, r.end))
        .register_indexer_get(|t: &mut TensorValue, r: InclusiveRange| {
            slice(&t.0, *r.start(), r.end().saturating_add(1))
        });

    // Creation, on the session's device.
    let h = host.clone();
    with_opts!(engine, [h], "tensor", |values: Dynamic| o => {
        if let Some(t) = values.clone().try_cast::<TensorValue>() {
            return if o.bool("requires_grad")?.unwrap_or(false) { requires_grad(&t.0) } else { Ok(t) };
        }
        let (shape, v) = nested(&values, "tensor")?;
        let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        let t = th(Tensor::from_vec(v, shape, &h.device))?;
        if o.bool("requires_grad")?.unwrap_or(false) { requires_grad(&t) } else { Ok(TensorValue(t)) }
    });
    let h = host.clone();
    engine.register_fn("zeros", move |shape: Dynamic| -> RhaiResult<TensorValue> {
        tv(Tensor::zeros(positive_shape(&shape, "zeros")?, DType::F32, &h.device))
    });
    let h = host.clone();
    engine.register_fn("ones", move |shape: Dynamic| -> RhaiResult<TensorValue> {
        tv(Tensor::ones(positive_shape(&shape, "ones")?, DType::F32, &h.device))
    });
    let h = host.clone();
    with_opts!(engine, [h], "randn", |shape: Dynamic| o => {
        use rand::SeedableRng;
        let shape = positive_shape(&shape, "randn")?;
        let n: usize = shape.iter().product();
        let mut rng = rand::rngs::StdRng::seed_from_u64(o.usize("seed")?.unwrap_or(0) as u64);
        let v = crate::train::pairs::normals(&mut rng, n);
        tv(Tensor::from_vec(v, shape, &h.device))
    });
    let h = host.clone();
    with_opts!(engine, [h], "rand", |shape: Dynamic| o => {
        use rand::{Rng, SeedableRng};
        let shape = positive_shape(&shape, "rand")?;
        let n: usize = shape.iter().product();
        let mut rng = rand::rngs::StdRng::seed_from_u64(o.usize("seed")?.unwrap_or(0) as u64);
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..1.0f32)).collect();
        tv(Tensor::from_vec(v, shape, &h.device))
    });
    let h = host.clone();
    engine.register_fn("arange", move |end: Dynamic| -> RhaiResult<TensorValue> {
        let e = num(&end).ok_or_else(|| arg_error("arange", "end must be a number"))?;
        arange(0.0, e, 1.0, &h.device)
    });
    let h = host.clone();
    engine.register_fn("arange", move |start: Dynamic, end: Dynamic| -> RhaiResult<TensorValue> {
        let (s, e) = (num(&start), num(&end));
        let (Some(s), Some(e)) = (s, e) else { return Err(arg_error("arange", "start and end must be numbers")) };
        arange(s, e, 1.0, &h.device)
    });
    let h = host.clone();
    engine.register_fn("arange", move |start: Dynamic, end: Dynamic, step: Dynamic| -> RhaiResult<TensorValue> {
        let (Some(s), Some(e), Some(st)) = (num(&start), num(&end), num(&step)) else {
            return Err(arg_error("arange", "start, end and step must be numbers"));
        };
        arange(s, e, st, &h.device)
    });

    // Arithmetic and comparisons, with broadcasting and with numbers.
    for op in ["+", "-", "*", "/", "**", ">", ">=", "<", "<=", "==", "!="] {
        engine.register_fn(op, move |a: TensorValue, b: TensorValue| binary(&a.0, &b.0, op));
        engine.register_fn(op, move |a: TensorValue, x: f64| with_number(&a.0, x, op, true));
        engine.register_fn(op, move |a: TensorValue, x: i64| with_number(&a.0, x as f64, op, true));
        engine.register_fn(op, move |x: f64, a: TensorValue| with_number(&a.0, x, op, false));
        engine.register_fn(op, move |x: i64, a: TensorValue| with_number(&a.0, x as f64, op, false));
    }
    engine.register_fn("-", |a: TensorValue| tv(a.0.neg()));
    // An image with a tensor: its data (C, Z, Y, X) as a tensor.
    for op in ["+", "-", "*", "/", "**", ">", ">=", "<", "<=", "==", "!="] {
        engine.register_fn(op, move |a: Image, b: TensorValue| binary(a.data(), &b.0, op));
        engine.register_fn(op, move |a: TensorValue, b: Image| binary(&a.0, b.data(), op));
    }

    // Reductions (all elements, or along dim=).
    macro_rules! reductions {
        ($($name:literal),*) => {$(
            with_opts!(engine, $name, |t: TensorValue| o => reduce(&t.0, $name, &o));
        )*};
    }
    reductions!("sum", "mean", "max", "min", "std", "variance");

    // Element-wise functions.
    engine.register_fn("sqrt", |t: TensorValue| tv(t.0.sqrt()));
    engine.register_fn("exp", |t: TensorValue| tv(t.0.exp()));
    engine.register_fn("log", |t: TensorValue| tv(t.0.log()));
    engine.register_fn("abs", |t: TensorValue| tv(t.0.abs()));
    engine.register_fn("tanh", |t: TensorValue| tv(t.0.tanh()));
    engine.register_fn("relu", |t: TensorValue| tv(t.0.relu()));
    engine.register_fn("sigmoid", |t: TensorValue| tv(candle_nn::ops::sigmoid(&t.0)));
    engine.register_fn("pow", |t: TensorValue, e: f64| tv(t.0.powf(e)));
    engine.register_fn("pow", |t: TensorValue, e: i64| tv(t.0.powf(e as f64)));
    engine.register_fn("clamp", |t: TensorValue, lo: Dynamic, hi: Dynamic| -> RhaiResult<TensorValue> {
        let (Some(lo), Some(hi)) = (num(&lo), num(&hi)) else {
            return Err(arg_error("clamp", "the bounds must be numbers"));
        };
        if lo > hi {
            return Err(arg_error("clamp", format!("lo {lo} > hi {hi}")));
        }
        tv(t.0.clamp(lo, hi))
    });
    for (name, log) in [("softmax", false), ("log_softmax", true)] {
        let f = move |t: &Tensor, d: i64| -> RhaiResult<TensorValue> {
            let d = dim_of(t, d, name)?;
            tv(if log { candle_nn::ops::log_softmax(t, d) } else { candle_nn::ops::softmax(t, d) })
        };
        engine.register_fn(name, move |t: TensorValue| f(&t.0, -1));
        engine.register_fn(name, move |t: TensorValue, d: i64| f(&t.0, d));
    }

    engine.register_fn("cross_entropy", |logits: TensorValue, target: TensorValue| cross_entropy(&logits.0, &target.0));

    // Shapes.
    engine.register_fn("reshape", |t: TensorValue, shape: Dynamic| -> RhaiResult<TensorValue> {
        let s = shape_of(&shape, "reshape")?;
        let known = s.iter().filter(|&&x| x != -1).try_fold(1i64, |a, &x| a.checked_mul(x)).unwrap_or(-1);
        let n = t.0.elem_count() as i64;
        let free = s.iter().filter(|&&x| x == -1).count();
        if free > 1 || known < 0 || s.iter().any(|&x| x < -1) || (free == 1 && (known == 0 || n % known != 0)) {
            return Err(arg_error("reshape", format!("cannot reshape {:?} to {s:?}", t.0.dims())));
        }
        let dims: Vec<usize> = s.iter().map(|&x| if x == -1 { (n / known) as usize } else { x as usize }).collect();
        if dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(t.0.elem_count()) {
            return Err(arg_error("reshape", format!("cannot reshape {:?} ({n} elements) to {dims:?}", t.0.dims())));
        }
        tv(t.0.reshape(dims))
    });
    engine.register_fn("permute", |t: TensorValue, dims: Array| -> RhaiResult<TensorValue> {
        let d: Vec<usize> =
            dims.iter().map(|x| dim_of(&t.0, x.as_int().unwrap_or(i64::MAX), "permute")).collect::<RhaiResult<_>>()?;
        let mut sorted = d.clone();
        sorted.sort_unstable();
        if sorted != (0..t.0.rank()).collect::<Vec<_>>() {
            return Err(arg_error("permute", format!("{d:?} is not a permutation of the {} dims", t.0.rank())));
        }
        tv(t.0.permute(d).and_then(|p| p.contiguous()))
    });
    engine.register_fn("transpose", |t: TensorValue, a: i64, b: i64| -> RhaiResult<TensorValue> {
        let (a, b) = (dim_of(&t.0, a, "transpose")?, dim_of(&t.0, b, "transpose")?);
        tv(t.0.transpose(a, b).and_then(|p| p.contiguous()))
    });
    engine.register_fn("flatten", |t: TensorValue| tv(t.0.flatten_all()));
    engine.register_fn("unsqueeze", |t: TensorValue, d: i64| -> RhaiResult<TensorValue> {
        let r = t.0.rank() as i64 + 1;
        let k = if d < 0 { d + r } else { d };
        if !(0..r).contains(&k) {
            return Err(arg_error("unsqueeze", format!("dim {d} is out of range for a new rank {r}")));
        }
        tv(t.0.unsqueeze(k as usize))
    });
    engine.register_fn("squeeze", |t: TensorValue, d: i64| -> RhaiResult<TensorValue> {
        let k = dim_of(&t.0, d, "squeeze")?;
        tv(t.0.squeeze(k))
    });
    engine.register_fn("narrow", |t: TensorValue, d: i64, start: i64, len: i64| -> RhaiResult<TensorValue> {
        let k = dim_of(&t.0, d, "narrow")?;
        let n = t.0.dims()[k] as i64;
        if start < 0 || len < 0 || start.saturating_add(len) > n {
            return Err(arg_error(
                "narrow",
                format!("[{start}, {}) is outside dim {d} of size {n}", start.saturating_add(len)),
            ));
        }
        tv(t.0.narrow(k, start as usize, len as usize))
    });
    for (name, stack) in [("cat", false), ("stack", true)] {
        let f = move |a: &Array, d: i64| -> RhaiResult<TensorValue> {
            let ts = tensors(a, name)?;
            let Some(first) = ts.first() else { return Err(arg_error(name, "needs at least one tensor")) };
            let r = first.rank() as i64 + i64::from(stack);
            let k = if d < 0 { d + r } else { d };
            if !(0..r).contains(&k) {
                return Err(arg_error(name, format!("dim {d} is out of range for rank {r}")));
            }
            tv(if stack { Tensor::stack(&ts, k as usize) } else { Tensor::cat(&ts, k as usize) })
        };
        engine.register_fn(name, move |a: Array| f(&a, 0));
        engine.register_fn(name, move |a: Array, d: i64| f(&a, d));
    }
    engine.register_fn("matmul", |a: TensorValue, b: TensorValue| -> RhaiResult<TensorValue> {
        let b = same_dtype(&a.0, &b.0)?;
        tv(a.0.broadcast_matmul(&b))
    });

    // Local filters (scipy.ndimage's names) and the functional network blocks.
    engine.register_fn("uniform_filter", |t: TensorValue, size: i64| -> RhaiResult<TensorValue> {
        if size < 1 || size % 2 == 0 || size > 101 {
            return Err(arg_error("uniform_filter", format!("size must be odd, 1 to 101 voxels, got {size}")));
        }
        let k = vec![1.0 / size as f32; size as usize];
        tv(f32_volume(&t.0, "uniform_filter")?.map_err(candle_core::Error::wrap).and_then(|x| {
            crate::ops::local_filter::local_filter(&x, [k.clone(), k.clone(), k]).map_err(candle_core::Error::wrap)
        }))
    });
    engine.register_fn("gaussian_filter", |t: TensorValue, sigma: Dynamic| -> RhaiResult<TensorValue> {
        let s = num(&sigma).filter(|s| s.is_finite() && *s >= 0.0 && *s <= 30.0).ok_or_else(|| {
            arg_error("gaussian_filter", format!("sigma must be a number in [0, 30] voxels, got {}", type_of(&sigma)))
        })?;
        tv(f32_volume(&t.0, "gaussian_filter")?
            .map_err(candle_core::Error::wrap)
            .and_then(|x| crate::ops::local_filter::gaussian_smooth(&x, s).map_err(candle_core::Error::wrap)))
    });
    with_opts!(engine, "conv3d", |x: TensorValue, w: TensorValue| o => conv(&x.0, &w.0, None, &o));
    with_opts!(engine, "conv3d", |x: TensorValue, w: TensorValue, b: TensorValue| o => conv(&x.0, &w.0, Some(&b.0), &o));
    engine.register_fn("avg_pool3d", |x: TensorValue, k: i64| -> RhaiResult<TensorValue> {
        crate::nn::avg_pool3d(&x.0, kernel(k, "avg_pool3d")?).host().map(TensorValue)
    });
    engine.register_fn("max_pool3d", |x: TensorValue, k: i64| -> RhaiResult<TensorValue> {
        crate::nn::max_pool3d(&x.0, kernel(k, "max_pool3d")?).host().map(TensorValue)
    });
    with_opts!(engine, "upsample", |x: TensorValue, factor: i64| o => {
        let f = kernel(factor, "upsample")?;
        let d = x.0.dims();
        let grown: Vec<usize> = d.iter().enumerate().map(|(i, &n)| if i >= 2 { n.saturating_mul(f) } else { n }).collect();
        element_count(&grown, "upsample")?;
        match o.string("mode")?.as_deref().unwrap_or("nearest") {
            "nearest" => crate::nn::upsample::upsample_nearest3d(&x.0, f).host().map(TensorValue),
            "trilinear" => {
                let d = x.0.dims();
                if d.len() != 5 {
                    return Err(arg_error("upsample", format!("expects (N, C, D, H, W), got {d:?}")));
                }
                let size = [d[2] * f, d[3] * f, d[4] * f];
                element_count(&[d[0], d[1], size[0], size[1], size[2]], "upsample")?;
                crate::nn::upsample::upsample_trilinear3d(&x.0, size, false).host().map(TensorValue)
            }
            m => Err(arg_error("upsample", format!("mode is \"nearest\" or \"trilinear\", got \"{m}\""))),
        }
    });

    // Autograd.
    engine.register_fn("grad", |loss: TensorValue, wrt: Array| -> RhaiResult<Array> {
        Ok(grads(&loss.0, &tensors(&wrt, "grad")?)?.into_iter().map(|g| Dynamic::from(TensorValue(g))).collect())
    });
    engine.register_fn("grad", |loss: TensorValue, wrt: TensorValue| -> RhaiResult<TensorValue> {
        Ok(TensorValue(grads(&loss.0, &[wrt.0])?.remove(0)))
    });

    // Images and tensors.
    engine.register_get("tensor", |i: &mut Image| TensorValue(i.data().clone()));
    engine.register_fn("image", |t: TensorValue, grid: Dynamic| -> RhaiResult<Image> {
        let g: Grid = crate::dsl::options::grid_of(&grid).ok_or_else(|| {
            arg_error("image", format!("the second argument is an image or a grid, not {}", type_of(&grid)))
        })?;
        let data = if t.0.rank() == 3 { th(t.0.unsqueeze(0))? } else { t.0.clone() };
        let data = if data.dtype() == DType::F32 || data.dtype() == DType::F64 {
            data
        } else {
            th(data.to_dtype(DType::F32))?
        };
        Image::new(data, g, DataType::Float32).host()
    });
}

macro_rules! tensor_help {
    ($name:literal, $sig:literal, $summary:literal, $example:literal) => {
        tensor_help!($name, $sig, $summary, &[], $example)
    };
    ($name:literal, $sig:literal, $summary:literal, $opts:expr, $example:literal) => {
        Help { name: $name, domain: "tensor", signature: $sig, summary: $summary, options: $opts, example: $example }
    };
}

/// The keyword arguments of the tensor reductions.
pub(crate) const REDUCE: [crate::dsl::help::Opt; 2] = [
    o("dim", "all", "reduce along this dim (negative from the end)"),
    o("keepdim", "false", "keep the reduced dim with size 1"),
];
/// The keyword arguments of `std` and `var`.
pub(crate) const REDUCE_VAR: [crate::dsl::help::Opt; 3] = [
    REDUCE[0],
    REDUCE[1],
    o("unbiased", "true", "tensors: divide by n - 1 (PyTorch's default); false divides by n (images: always n)"),
];

/// The help of the tensor builtins (see [`crate::dsl::help`]). The reductions `sum`, `mean`, `max`,
/// `min`, `std` share their entries with the image reductions (`super::image::HELP`).
pub static HELP: &[Help] = &[
    tensor_help!(
        "tensor",
        "tensor(values) -> Tensor   (a number or a nested array; f32 on the session's device)",
        "A tensor from numbers (nested arrays give its shape); requires_grad=true makes it a leaf that grad() and minimize differentiate",
        &[o("requires_grad", "false", "track gradients to this tensor")],
        "let t = tensor([[1.0, 2.0], [3.0, 4.0]]);\nassert(t.shape == [2, 2] && t[1][0].item() == 3.0, \"shape and values\");\nassert((t * 2 + 1).sum().item() == 24.0, \"arithmetic with numbers\");"
    ),
    tensor_help!(
        "zeros",
        "zeros(shape) -> Tensor",
        "A tensor of zeros (shape: an integer or an array of integers)",
        "let z = zeros([2, 3]);\nassert(z.shape == [2, 3] && z.sum().item() == 0.0, \"zeros\");"
    ),
    tensor_help!(
        "ones",
        "ones(shape) -> Tensor",
        "A tensor of ones",
        "assert(ones(4).sum().item() == 4.0, \"four ones\");"
    ),
    tensor_help!(
        "randn",
        "randn(shape) -> Tensor",
        "Standard normal draws (Box-Muller), reproducible with seed=",
        &[o("seed", "0", "random seed")],
        "let r = randn([10000], seed=3);\nassert(abs(r.mean().item()) < 0.05 && abs(r.std().item() - 1.0) < 0.05, \"N(0, 1)\");\nassert(randn(3, seed=1).to_array() == randn(3, seed=1).to_array(), \"reproducible\");"
    ),
    tensor_help!(
        "rand",
        "rand(shape) -> Tensor",
        "Uniform draws in [0, 1) (PyTorch's torch.rand), reproducible with seed=; a + (b - a) * rand(n) draws from U(a, b)",
        &[o("seed", "0", "random seed")],
        "let r = rand([10000], seed=3);\nassert(r.min().item() >= 0.0 && r.max().item() < 1.0, \"in [0, 1)\");\nassert(abs(r.mean().item() - 0.5) < 0.02, \"mean 1/2\");\nassert(rand(3, seed=1).to_array() == rand(3, seed=1).to_array(), \"reproducible\");"
    ),
    tensor_help!(
        "arange",
        "arange(end); arange(start, end); arange(start, end, step) -> Tensor",
        "Evenly spaced values in [start, end)",
        "assert(arange(4).to_array() == [0.0, 1.0, 2.0, 3.0], \"0..4\");\nassert(arange(1, 2, 0.5).to_array() == [1.0, 1.5], \"a step\");"
    ),
    tensor_help!(
        "item",
        "t.item() -> float",
        "The value of a one-element tensor",
        "assert(tensor([2.5]).item() == 2.5, \"one value\");"
    ),
    tensor_help!(
        "to_array",
        "t.to_array() -> array   (nested as the shape)",
        "The values as (nested) arrays of floats",
        "assert(tensor([[1, 2], [3, 4]]).to_array() == [[1.0, 2.0], [3.0, 4.0]], \"nested\");"
    ),
    tensor_help!(
        "detach",
        "t.detach() -> Tensor",
        "The same values, cut from the gradient graph",
        "let x = tensor([1.0, 2.0], requires_grad=true);\nassert(x.detach().to_array() == [1.0, 2.0], \"same values\");"
    ),
    tensor_help!(
        "requires_grad",
        "t.requires_grad() -> Tensor",
        "A copy of the values that gradients flow to (a leaf for grad())",
        "let x = tensor([3.0]).requires_grad();\nassert(grad((x * x).sum(), x).item() == 6.0, \"d(x^2)/dx = 2x\");"
    ),
    tensor_help!(
        "variance",
        "variance(t) -> Tensor   (all elements, or along dim=; PyTorch's var, a reserved word in Rhai)",
        "Variance, unbiased (n - 1) as in PyTorch unless unbiased=false",
        &REDUCE_VAR,
        "let t = tensor([1.0, 2.0, 3.0, 4.0]);\nassert(abs(t.variance().item() - 5.0 / 3.0) < 1e-6, \"unbiased\");\nassert(abs(t.variance(unbiased=false).item() - 1.25) < 1e-6, \"population\");\nassert(tensor([[1, 3], [5, 9]]).variance(dim=1).to_array() == [2.0, 8.0], \"per row\");"
    ),
    tensor_help!(
        "sqrt",
        "sqrt(t) -> Tensor   (also exp, log, abs, tanh, relu, sigmoid element-wise)",
        "Element-wise square root",
        "assert(sqrt(tensor([4.0, 9.0])).to_array() == [2.0, 3.0], \"roots\");"
    ),
    tensor_help!("exp", "exp(t) -> Tensor", "Element-wise exponential", "assert(exp(tensor([0.0])).item() == 1.0, \"e^0\");"),
    tensor_help!("log", "log(t) -> Tensor", "Element-wise natural logarithm, as PyTorch (Rhai's log of a number is base 10; ln is the natural one)", "assert(log(tensor([1.0])).item() == 0.0, \"ln 1\");\nassert(abs(log(tensor([2.0])).item() - ln(2.0)) < 1e-6, \"natural\");"),
    tensor_help!("abs", "abs(t) -> Tensor", "Element-wise absolute value", "assert(abs(tensor([-2.0, 3.0])).to_array() == [2.0, 3.0], \"|x|\");"),
    tensor_help!("tanh", "tanh(t) -> Tensor", "Element-wise hyperbolic tangent", "assert(tanh(tensor([0.0])).item() == 0.0, \"tanh 0\");"),
    tensor_help!("relu", "relu(t) -> Tensor", "Element-wise max(x, 0)", "assert(relu(tensor([-1.0, 2.0])).to_array() == [0.0, 2.0], \"relu\");"),
    tensor_help!(
        "sigmoid",
        "sigmoid(t) -> Tensor",
        "Element-wise logistic function 1 / (1 + e^-x)",
        "assert(sigmoid(tensor([0.0])).item() == 0.5, \"half at 0\");"
    ),
    tensor_help!(
        "pow",
        "pow(t, e) -> Tensor   (also t ** e)",
        "Element-wise power",
        "assert(pow(tensor([3.0]), 2).item() == 9.0 && (tensor([2.0]) ** 3).item() == 8.0, \"powers\");"
    ),
    tensor_help!(
        "clamp",
        "clamp(t, lo, hi) -> Tensor",
        "Element-wise clamp to [lo, hi]",
        "assert(clamp(tensor([-1.0, 0.5, 2.0]), 0, 1).to_array() == [0.0, 0.5, 1.0], \"clamped\");"
    ),
    tensor_help!(
        "softmax",
        "softmax(t); softmax(t, dim) -> Tensor   (dim: last by default)",
        "exp(x) / sum(exp(x)) along a dim",
        "let p = softmax(tensor([1.0, 1.0]));\nassert(p.to_array() == [0.5, 0.5], \"uniform\");"
    ),
    tensor_help!(
        "log_softmax",
        "log_softmax(t); log_softmax(t, dim) -> Tensor",
        "log(softmax(x)) along a dim, computed stably (cross-entropy losses)",
        "let l = log_softmax(tensor([[0.0, 0.0]]), 1);\nassert(abs(l[0][0].item() + ln(2.0)) < 1e-6, \"ln(1/2)\");"
    ),
    tensor_help!(
        "cross_entropy",
        "cross_entropy(logits, target) -> Tensor   (logits (N, C); target: class indices (N) or probabilities (N, C))",
        "The mean cross-entropy of softmax(logits) against the target (PyTorch's F.cross_entropy): -mean over N of log softmax(logits)[n, target[n]], or of sum over C of target * log softmax(logits)",
        "let l = tensor([[0.0, 0.0], [10.0, -10.0]]);\nlet a = cross_entropy(l, tensor([1, 0]));\nassert(abs(a.item() - ln(2.0) / 2.0) < 1e-5, \"ln 2 for the undecided row, ~0 for the sure one\");\nassert(abs(cross_entropy(l, tensor([[0.0, 1.0], [1.0, 0.0]])).item() - a.item()) < 1e-6, \"one-hot targets agree\");"
    ),
    tensor_help!(
        "reshape",
        "reshape(t, shape) -> Tensor   (one -1 is inferred)",
        "The same values in another shape (row-major)",
        "assert(arange(6).reshape([2, -1]).shape == [2, 3], \"inferred\");"
    ),
    tensor_help!(
        "permute",
        "permute(t, dims) -> Tensor",
        "Reorders the dims",
        "assert(zeros([2, 3, 4]).permute([2, 0, 1]).shape == [4, 2, 3], \"permuted\");"
    ),
    tensor_help!(
        "transpose",
        "transpose(t, a, b) -> Tensor",
        "Swaps two dims",
        "assert(tensor([[1, 2, 3]]).transpose(0, 1).shape == [3, 1], \"swapped\");"
    ),
    tensor_help!(
        "flatten",
        "flatten(t) -> Tensor",
        "All values in one dim",
        "assert(zeros([2, 3]).flatten().shape == [6], \"flat\");"
    ),
    tensor_help!(
        "unsqueeze",
        "unsqueeze(t, dim) -> Tensor",
        "Inserts a dim of size 1",
        "assert(zeros(3).unsqueeze(0).shape == [1, 3], \"a new dim\");"
    ),
    tensor_help!(
        "squeeze",
        "squeeze(t, dim) -> Tensor",
        "Removes a dim of size 1",
        "assert(zeros([1, 3]).squeeze(0).shape == [3], \"removed\");"
    ),
    tensor_help!(
        "narrow",
        "narrow(t, dim, start, len) -> Tensor   (t[a..b] on the first dim)",
        "A contiguous slice along a dim",
        "let t = arange(10);\nassert(t.narrow(0, 2, 3).to_array() == [2.0, 3.0, 4.0] && t[2..5].to_array() == [2.0, 3.0, 4.0], \"slices\");"
    ),
    tensor_help!(
        "cat",
        "cat(tensors); cat(tensors, dim) -> Tensor",
        "Concatenates along an existing dim",
        "assert(cat([ones([2, 3]), zeros([1, 3])]).shape == [3, 3], \"rows added\");"
    ),
    tensor_help!(
        "stack",
        "stack(tensors); stack(tensors, dim) -> Tensor",
        "Stacks along a new dim",
        "assert(stack([ones(3), zeros(3)]).shape == [2, 3], \"a new first dim\");"
    ),
    tensor_help!(
        "matmul",
        "matmul(a, b) -> Tensor   (batched, broadcasting)",
        "Matrix product",
        "let a = tensor([[1.0, 2.0], [3.0, 4.0]]);\nassert(matmul(a, tensor([[1.0], [1.0]])).to_array() == [[3.0], [7.0]], \"row sums\");"
    ),
    tensor_help!(
        "uniform_filter",
        "uniform_filter(t, size) -> Tensor   (t: (..., Z, Y, X))",
        "Local mean over a size^3 box (odd size, voxels), zero padding, same shape: the windows of LNCC (scipy.ndimage.uniform_filter with mode constant)",
        "let t = ones([1, 5, 5, 5]);\nlet m = uniform_filter(t, 3);\nassert(m[0][2][2][2].item() == 1.0 && abs(m[0][0][0][0].item() - 8.0 / 27.0) < 1e-6, \"inside 1; a corner sees 8 of 27 voxels\");"
    ),
    tensor_help!(
        "gaussian_filter",
        "gaussian_filter(t, sigma) -> Tensor   (t: (..., Z, Y, X); sigma in voxels)",
        "Gaussian smoothing (cut at 3 sigma, zero padding, same shape), differentiable",
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet s = gaussian_filter(t1.tensor, 2.0);\nassert(s.shape == t1.tensor.shape && s.std().item() < t1.tensor.std().item(), \"smoother\");"
    ),
    tensor_help!(
        "conv3d",
        "conv3d(x, weight); conv3d(x, weight, bias) -> Tensor   (x (N, C_in, D, H, W), weight (C_out, C_in, kD, kH, kW), bias (C_out))",
        "3-D convolution (cross-correlation, as PyTorch's conv3d), differentiable in x, weight and bias",
        &[o("stride", "1", "step, voxels"), o("padding", "0", "zero padding on each side, voxels")],
        "let x = ones([1, 1, 4, 4, 4]);\nlet y = conv3d(x, ones([2, 1, 3, 3, 3]), tensor([0.0, 1.0]), padding=1);\nassert(y.shape == [1, 2, 4, 4, 4] && y[0][1][1][1][1].item() == 28.0, \"27 ones plus a bias of 1\");"
    ),
    tensor_help!(
        "avg_pool3d",
        "avg_pool3d(x, k) -> Tensor   (x (N, C, D, H, W); stride = k)",
        "Average pooling over non-overlapping k^3 blocks",
        "assert(avg_pool3d(arange(8).reshape([1, 1, 2, 2, 2]), 2).item() == 3.5, \"the mean of 0..8\");"
    ),
    tensor_help!(
        "max_pool3d",
        "max_pool3d(x, k) -> Tensor   (x (N, C, D, H, W); stride = k)",
        "Max pooling over non-overlapping k^3 blocks",
        "assert(max_pool3d(arange(8).reshape([1, 1, 2, 2, 2]), 2).item() == 7.0, \"the largest\");"
    ),
    tensor_help!(
        "upsample",
        "upsample(x, factor) -> Tensor   (x (N, C, D, H, W))",
        "Upsampling by an integer factor per axis (nearest, or trilinear as PyTorch with align_corners=false)",
        &[o("mode", "\"nearest\"", "\"nearest\" or \"trilinear\"")],
        "let x = arange(8).reshape([1, 1, 2, 2, 2]);\nassert(upsample(x, 2).shape == [1, 1, 4, 4, 4] && upsample(x, 2, mode=\"trilinear\").max().item() == 7.0, \"twice the size\");"
    ),
    tensor_help!(
        "grad",
        "grad(loss, tensors) -> array of Tensor;  grad(loss, t) -> Tensor",
        "Gradients of a one-element loss by reverse-mode autograd with respect to tensors made with requires_grad",
        "let x = tensor([1.0, 2.0], requires_grad=true);\nlet g = grad((x * x * 3).sum(), [x]);\nassert(g[0].to_array() == [6.0, 12.0], \"d(3x^2)/dx = 6x\");"
    ),
    tensor_help!(
        "image",
        "image(tensor, grid) -> Image   (tensor (C, Z, Y, X) or (Z, Y, X), x fastest; grid: a Grid or an image)",
        "An image from a tensor on a grid (physical space from the grid); the inverse of img.tensor",
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet d = t1.tensor;\nassert(d.shape == [1, 91, 109, 91], \"(C, Z, Y, X); t1.shape is (x, y, z)\");\nlet back = image(d * 2.0, t1.grid);\nassert(abs(back.mean - 2.0 * t1.mean) < 1e-3 && back.spacing == t1.spacing, \"same grid\");"
    ),
];
