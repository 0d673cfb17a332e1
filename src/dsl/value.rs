//! Host values that scripts hold, beyond the library's own types (`Image`, `Grid`, `Metric`,
//! `Schedule`, `RegState`, which are registered as they are), and how every value prints.

use std::sync::Arc;

use rhai::{Array, Dynamic, Map};

use crate::image::{Grid, Image};
use crate::metrics::Metric;
use crate::nn::Dim3;
use crate::optim::Schedule;
use crate::pipeline::RegState;
use crate::spatial::{Linear, Transform};
use crate::train::{Deformation, Network, PairSource};

/// A transform held by a script: any [`Transform`], with its [`Linear`] form when it is one (for
/// `params`, and for saving about its own centre).
#[derive(Clone, Debug)]
pub struct TransformValue {
    /// The transform (fixed points to moving points, mm).
    pub inner: Arc<dyn Transform>,
    /// The linear transform itself, when it is one.
    pub linear: Option<Linear>,
}

impl TransformValue {
    /// A linear transform.
    pub fn linear(l: Linear) -> Self {
        TransformValue { inner: Arc::new(l.clone()), linear: Some(l) }
    }
    /// Any transform.
    pub fn other(t: Arc<dyn Transform>) -> Self {
        TransformValue { inner: t, linear: None }
    }
}

impl std::fmt::Display for TransformValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.linear {
            Some(l) => {
                let p = l.param_values().unwrap_or_default();
                let p: Vec<String> = p.iter().map(|v| format!("{v:.4}")).collect();
                let c = l.centre();
                write!(
                    f,
                    "Transform({}, params [{}], centre [{:.2}, {:.2}, {:.2}])",
                    l.kind().name(),
                    p.join(", "),
                    c[0],
                    c[1],
                    c[2]
                )
            }
            None => write!(f, "Transform({})", self.inner.name()),
        }
    }
}

/// An optimizer value: a choice for `iso` (`adam(lr=0.5)`: the learning rate replaces the schedule's,
/// in mm per step) and the optimizer of `opt.minimize(f, x0)` (a raw step on the parameters).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct OptimizerValue {
    /// The optimizer's name (`adam`, `sgd`, `lbfgs`, `powell`).
    pub name: String,
    /// Learning rate, if set.
    pub lr: Option<f64>,
    /// SGD's momentum (0: none).
    pub momentum: f64,
    /// SGD's Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient (`weight_decay * x`, as PyTorch's Adam and SGD do); 0: none.
    pub weight_decay: f64,
}

impl std::fmt::Display for OptimizerValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut args = Vec::new();
        if let Some(lr) = self.lr {
            args.push(format!("lr={lr}"));
        }
        if self.momentum != 0.0 {
            args.push(format!("momentum={}", self.momentum));
        }
        if self.nesterov {
            args.push("nesterov=true".to_string());
        }
        if self.weight_decay != 0.0 {
            args.push(format!("weight_decay={}", self.weight_decay));
        }
        write!(f, "{}({})", self.name, args.join(", "))
    }
}

/// A network held by a script (shared: training changes its weights in place).
pub type NetValue = Arc<Network>;
/// A source of training pairs held by a script.
pub type PairsValue = Arc<PairSource>;

/// How a network prints.
pub fn net_string(n: &Network) -> String {
    match (n, n.input_size()) {
        (_, Some(Dim3(s))) => format!(
            "Network({} \"{}\", input {}x{}x{}, {} parameters)",
            n.kind(),
            n.name(),
            s[0],
            s[1],
            s[2],
            n.num_params()
        ),
        (Network::Sequential(q), None) => {
            let layers: Vec<String> = q.config().layers.iter().map(|l| format!("nn::{l}")).collect();
            format!("Network(sequential \"{}\", [{}], {} parameters)", n.name(), layers.join(", "), n.num_params())
        }
        _ => format!("Network({} \"{}\", {} parameters)", n.kind(), n.name(), n.num_params()),
    }
}

/// How a pair source prints.
pub fn pairs_string(p: &PairSource) -> String {
    match p {
        PairSource::List(v) => format!("Pairs({} pairs)", v.len()),
        PairSource::Synthetic(s) => {
            let what = match s.deformation {
                Deformation::Affine(_) => "random affines",
                Deformation::Smooth { .. } => "smooth deformations",
            };
            format!("Pairs({what} of {} moving image(s), seed {})", s.moving.len(), s.seed)
        }
    }
}

/// A stage to apply later: `let refine = iso(cr_patch, scales=5); init(m, f) |> refine`. Holds the
/// measure and the keyword arguments of an `iso` call without its state; `|>` applies it.
#[derive(Clone, Debug)]
pub struct StageValue {
    /// The measure (`None`: `iso`'s default, or a `metric=` option).
    pub metric: Option<Metric>,
    /// The keyword arguments, checked when the stage is made.
    pub options: Map,
}

impl std::fmt::Display for StageValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self.metric.iter().map(|m| m.to_string()).collect();
        parts.extend(self.options.iter().map(|(k, v)| format!("{k}={}", display(v))));
        write!(f, "Stage(iso({}))", parts.join(", "))
    }
}

/// The script-facing name of a host type (from its Rust name).
pub fn dsl_type_name(rust: &str) -> &str {
    match rust.trim_end_matches('>') {
        "Network" => "Network",
        "PairSource" => "Pairs",
        "TransformValue" => "Transform",
        "OptimizerValue" => "Optimizer",
        "HostError" => "Error",
        "StageValue" => "Stage",
        "ImmutableString" => "string",
        "f64" => "float",
        "i64" => "int",
        other => other,
    }
}

/// How a value prints in the REPL and for `regsh run -e`: host values by their `Display`, arrays and
/// maps element by element, floats with up to 6 significant decimals.
pub fn display(d: &Dynamic) -> String {
    if let Some(x) = d.clone().try_cast::<Image>() {
        return x.to_string();
    }
    if let Some(x) = d.clone().try_cast::<Grid>() {
        return x.to_string();
    }
    if let Some(x) = d.clone().try_cast::<TransformValue>() {
        return x.to_string();
    }
    if let Some(x) = d.clone().try_cast::<Metric>() {
        return format!("Metric({x})");
    }
    if let Some(x) = d.clone().try_cast::<Schedule>() {
        return schedule_string(&x);
    }
    if let Some(x) = d.clone().try_cast::<RegState>() {
        return x.to_string();
    }
    if let Some(x) = d.clone().try_cast::<OptimizerValue>() {
        return x.to_string();
    }
    if let Some(x) = d.clone().try_cast::<StageValue>() {
        return x.to_string();
    }
    if let Some(x) = d.clone().try_cast::<NetValue>() {
        return net_string(&x);
    }
    if let Some(x) = d.clone().try_cast::<PairsValue>() {
        return pairs_string(&x);
    }
    if let Ok(f) = d.as_float() {
        return float_string(f);
    }
    if let Some(a) = d.clone().try_cast::<Array>() {
        let parts: Vec<String> = a.iter().map(display).collect();
        return format!("[{}]", parts.join(", "));
    }
    if let Some(m) = d.clone().try_cast::<Map>() {
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {}", display(v))).collect();
        return format!("#{{{}}}", parts.join(", "));
    }
    if d.is_string() {
        return d.to_string();
    }
    d.to_string()
}

/// A float printed compactly (at most 6 decimals, no trailing zeros).
pub fn float_string(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e15 {
        return format!("{f:.1}");
    }
    if !f.is_finite() || (f != 0.0 && (f.abs() < 1e-4 || f.abs() >= 1e9)) {
        return format!("{f:e}");
    }
    let s = format!("{f:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A schedule printed as `Schedule(factors [4, 2, 1], iterations [...], lr [...])`.
pub fn schedule_string(s: &Schedule) -> String {
    let f: Vec<String> = s.factors.iter().map(|v| float_string(*v)).collect();
    let l: Vec<String> = s.lr.iter().map(|v| float_string(*v)).collect();
    format!("Schedule(factors [{}], iterations {:?}, lr [{}])", f.join(", "), s.iterations, l.join(", "))
}
