//! The regsh DSL: Rhai with keyword arguments, the `|>` pipe, bare metric and stage names as values,
//! and the host API of images, transforms, metrics, optimizers and registration pipelines.
//!
//! [`engine_with`] is the one engine factory every front end (run, REPL, watch) and every test uses,
//! through [`crate::session::Session`]. Source text goes through [`prepass::rewrite`] before Rhai
//! compiles it ([`compile`]), and errors are mapped back onto the original text by
//! [`crate::diagnostics`].
//!
//! | module | what |
//! |---|---|
//! | [`prepass`] | keyword arguments and `\|>` by a rewrite of Rhai's token stream, with an offset map |
//! | [`api`] | the builtins, one file per domain (`image`, `spatial`, `metrics`, `optim`, `pipeline`, `nn`) |
//! | [`options`] | keyword-argument maps and value conversions; [`options::HostError`] |
//! | [`value`] | script-side host values (`Transform`, `Optimizer`) and how every value prints |
//! | [`help`] | the help table: signature, summary, options, runnable example of every builtin |
//! | [`stdlib`] | recipes written in the DSL (`stdlib/*.rhai`), overridable with `REGSH_STDLIB` |

pub mod api;
pub mod help;
pub mod options;
pub mod prepass;
pub mod stdlib;
pub mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use rhai::{Dynamic, Engine, FnPtr, Module, NativeCallContext, Scope, AST};

use crate::diagnostics::{ScriptError, SourceText};
use crate::error::Result;
use crate::image::Image;
use options::RhaiResult;

/// Precedence of `|>`: below every built-in operator (`||` is 30), so `a + b |> f` pipes `a + b`.
pub const PIPE_PRECEDENCE: u8 = 5;

/// State shared by the builtins of one engine: the compute device, the image cache, the cancel flag, the
/// active network.
#[derive(Debug)]
pub struct Host {
    /// The device every image is loaded onto and every network created on ([`crate::device::default_device`],
    /// chosen once).
    pub device: candle_core::Device,
    /// Loaded images by canonical path, with the file's modification time when loaded.
    cache: Mutex<HashMap<PathBuf, (Option<SystemTime>, Image)>>,
    /// Set (e.g. by Ctrl-C) to stop a running script: Rhai stops at its next operation, `iso` after
    /// its current iteration (keeping the best parameters).
    pub cancel: Arc<AtomicBool>,
    /// Images read from disk by [`Host::load`] (cache misses), since the host was made.
    pub disk_loads: AtomicUsize,
    /// Images [`Host::load`] returned from the cache.
    pub cache_hits: AtomicUsize,
    /// The active registration network (`net(m, f)` uses it): the last one made, loaded, trained or
    /// passed to `use_net`.
    active_net: Mutex<Option<Arc<crate::train::Network>>>,
}

impl Default for Host {
    fn default() -> Self {
        Host::on(crate::device::default_device())
    }
}

impl Host {
    /// A host computing on `device`.
    pub fn on(device: candle_core::Device) -> Self {
        Host {
            device,
            cache: Mutex::default(),
            cancel: Arc::default(),
            disk_loads: AtomicUsize::default(),
            cache_hits: AtomicUsize::default(),
            active_net: Mutex::default(),
        }
    }

    /// Loads an image, from the cache when the file (canonical path) has not been modified since.
    /// A `.hdr` / `.img` pair is keyed by the header's path and time.
    ///
    /// Errors: as [`crate::image::io::load`].
    pub fn load(&self, path: &str) -> Result<Image> {
        let p = Path::new(path);
        let Ok(canon) = std::fs::canonicalize(p) else {
            return crate::image::io::load(p)?.to_device(&self.device);
        };
        let mtime = std::fs::metadata(&canon).and_then(|m| m.modified()).ok();
        if let Ok(cache) = self.cache.lock() {
            if let Some((t, img)) = cache.get(&canon) {
                if *t == mtime && mtime.is_some() {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(img.clone());
                }
            }
        }
        let img = crate::image::io::load(&canon)?.to_device(&self.device)?;
        self.disk_loads.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(canon, (mtime, img.clone()));
        }
        Ok(img)
    }

    /// Makes `net` the active network.
    pub fn set_net(&self, net: Arc<crate::train::Network>) {
        if let Ok(mut n) = self.active_net.lock() {
            *n = Some(net);
        }
    }

    /// The active network, if any.
    pub fn net(&self) -> Option<Arc<crate::train::Network>> {
        self.active_net.lock().ok().and_then(|n| n.clone())
    }

    /// Number of cached images.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Empties the image cache.
    pub fn clear_cache(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Seeds the compute device's random generator (a no-op where the backend has none).
    pub fn seed(&self, n: u64) {
        let _ = self.device.set_seed(n);
    }
}

/// `x |> f`: calls the function value `f` (a closure, `Fn("name")`, or a bare builtin name) with `x`.
fn pipe(ctx: NativeCallContext, x: Dynamic, f: FnPtr) -> RhaiResult<Dynamic> {
    f.call_within_context(&ctx, (x,))
}

/// Names that are values when written bare: each metric (a `Metric`), the regularizers `diffusion` and
/// `bending` (a `Regularizer`), and every builtin (a function value, so `x |> warp` applies it).
fn bare_names() -> &'static HashMap<&'static str, Dynamic> {
    static NAMES: OnceLock<HashMap<&'static str, Dynamic>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut m = HashMap::new();
        for name in help::names() {
            if let Ok(f) = FnPtr::new(name) {
                m.insert(name, Dynamic::from(f));
            }
        }
        for name in api::metrics::METRICS {
            if let Ok(metric) = crate::metrics::Metric::new(name) {
                m.insert(name, Dynamic::from(metric));
            }
        }
        use crate::metrics::regularizers::Regularizer;
        m.insert("diffusion", Dynamic::from(Regularizer::Diffusion(1.0)));
        m.insert("bending", Dynamic::from(Regularizer::Bending(1.0)));
        m
    })
}

/// The variable resolver of bare names: a variable of the script (local, global, or one a closure
/// captures) always wins; otherwise a builtin name is its value. (A resolver rather than constants of
/// a global module: Rhai's optimizer would substitute those even where a `for` variable shadows them,
/// and closures could not capture them.)
#[allow(deprecated)]
fn resolve_bare(name: &str, index: usize, ctx: rhai::EvalContext) -> RhaiResult<Option<Dynamic>> {
    if index > 0 || ctx.scope().contains(name) {
        return Ok(None);
    }
    Ok(bare_names().get(name).cloned())
}

/// The engine with every builtin but without the stdlib (which is compiled with it).
pub fn base_engine(host: Arc<Host>) -> Engine {
    let mut e = Engine::new();
    // Deep pipelines of closures nest calls; leave room.
    e.set_max_call_levels(256);
    // Rhai's release-build nesting limits in every build (its debug builds halve them), so a script
    // that parses under `cargo run --release` parses in tests and debug builds too.
    e.set_max_expr_depths(64, 32);
    e.register_custom_operator("|>", PIPE_PRECEDENCE).unwrap_or_else(|_| unreachable!("`|>` is a reserved symbol"));
    e.register_fn("|>", pipe);
    api::image::register(&mut e, &host);
    api::spatial::register(&mut e);
    api::metrics::register(&mut e, &host);
    api::groupwise::register(&mut e, &host);
    api::optim::register(&mut e, &host);
    api::pipeline::register(&mut e, &host);
    api::nn::register(&mut e, &host);
    api::layers::register(&mut e, &host);
    api::script::register(&mut e);
    api::tensor::register(&mut e, &host);
    #[allow(deprecated)] // `on_var` is marked volatile, not deprecated
    e.on_var(resolve_bare);
    let cancel = host.cancel.clone();
    e.on_progress(move |_| if cancel.load(Ordering::Relaxed) { Some(Dynamic::from("cancelled")) } else { None });
    e.set_default_tag(Dynamic::UNIT);
    e
}

/// Compiles `text` (named `name` in errors) after the pre-pass. Returns the AST (its source set to
/// `name`) and the source record the diagnostics need.
///
/// Errors: pre-pass and syntax errors as reports on the original text.
pub fn compile(
    engine: &Engine,
    scope: &Scope,
    name: &str,
    text: &str,
) -> std::result::Result<(AST, SourceText), Box<ScriptError>> {
    let rewritten = prepass::rewrite(engine, text);
    let (rw_text, map, prepass_err) = match rewritten {
        Ok(r) => (r.text, r.map, None),
        Err(e) => (text.to_string(), prepass::OffsetMap::identity(text.len()), Some(e)),
    };
    let src = SourceText::new(name, text, rw_text, map);
    if let Some(e) = prepass_err {
        return Err(Box::new(crate::diagnostics::from_prepass(&src, &e)));
    }
    let mut ast = engine
        .compile_with_scope(scope, &src.rewritten)
        .map_err(|e| Box::new(crate::diagnostics::from_parse(&src, &e)))?;
    ast.set_source(name);
    Ok((ast, src))
}

/// The one engine factory: every builtin, plus the stdlib recipes (embedded, or overridden from
/// `REGSH_STDLIB`, see [`stdlib`]) as a global module. Returns the engine and the stdlib sources (for
/// error reports that point into them).
///
/// Errors: a stdlib file that does not compile or run.
pub fn engine_with(host: Arc<Host>) -> std::result::Result<(Engine, Vec<SourceText>), Box<ScriptError>> {
    let mut engine = base_engine(host);
    let mut sources = Vec::new();
    let mut module = Module::new();
    for (name, text) in stdlib::sources() {
        let (ast, src) = compile(&engine, &Scope::new(), &name, &text)?;
        let m = Module::eval_ast_as_new(Scope::new(), &ast, &engine)
            .map_err(|e| Box::new(crate::diagnostics::from_eval(&e, &src, &[], &[])))?;
        module.combine(m);
        sources.push(src);
    }
    engine.register_global_module(module.into());
    Ok((engine, sources))
}

/// An engine with its own [`Host`] (see [`engine_with`]).
///
/// Errors: as [`engine_with`].
pub fn engine() -> std::result::Result<Engine, Box<ScriptError>> {
    engine_with(Arc::new(Host::default())).map(|(e, _)| e)
}
