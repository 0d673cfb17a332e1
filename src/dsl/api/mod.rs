//! The host API, one file per domain; each `register` adds its types and builtins to the engine.
//! Builtins here only convert values and options and call the library (numeric code knows nothing of
//! the DSL).

pub mod groupwise;
pub mod image;
pub mod layers;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod pipeline;
pub mod script;
pub mod spatial;
pub mod tensor;

use rhai::{Array, Dynamic};

/// Registers `name` twice: with its positional arguments only, and with a trailing map of keyword
/// arguments (checked against the help entry by [`super::options::Opts::new`]). `[cap]` clones a
/// captured value into each closure.
macro_rules! with_opts {
    ($engine:expr, [$cap:ident], $name:literal, |$($arg:ident : $ty:ty),*| $o:ident => $body:expr) => {{
        {
            let $cap = $cap.clone();
            $engine.register_fn($name, move |$($arg: $ty),*| -> $crate::dsl::options::RhaiResult<_> {
                let $o = $crate::dsl::options::Opts::none($name);
                $body
            });
        }
        {
            let $cap = $cap.clone();
            $engine.register_fn($name, move |$($arg: $ty,)* map: rhai::Map| -> $crate::dsl::options::RhaiResult<_> {
                let $o = $crate::dsl::options::Opts::new($name, map)?;
                $body
            });
        }
    }};
    ($engine:expr, $name:literal, |$($arg:ident : $ty:ty),*| $o:ident => $body:expr) => {{
        $engine.register_fn($name, move |$($arg: $ty),*| -> $crate::dsl::options::RhaiResult<_> {
            let $o = $crate::dsl::options::Opts::none($name);
            $body
        });
        $engine.register_fn($name, move |$($arg: $ty,)* map: rhai::Map| -> $crate::dsl::options::RhaiResult<_> {
            let $o = $crate::dsl::options::Opts::new($name, map)?;
            $body
        });
    }};
}
pub(crate) use with_opts;

/// Floats as a script array.
pub fn floats(v: impl IntoIterator<Item = f64>) -> Array {
    v.into_iter().map(Dynamic::from_float).collect()
}

/// Integers as a script array.
pub fn ints(v: impl IntoIterator<Item = usize>) -> Array {
    v.into_iter().map(|x| Dynamic::from_int(x as i64)).collect()
}

/// A matrix (rows) as an array of arrays.
pub fn rows<const C: usize>(m: impl IntoIterator<Item = [f64; C]>) -> Array {
    m.into_iter().map(|r| Dynamic::from_array(floats(r))).collect()
}
