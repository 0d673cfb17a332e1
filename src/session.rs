//! A DSL session: the one evaluation path for REPL lines, script files, `-e` expressions and watched
//! files. It keeps variables (the scope) and script functions between evaluations, caches loaded
//! images by canonical path and modification time, holds the script's `ARGS`, and a cancel flag that
//! running scripts and `iso` check.
//!
//! A front end that reloads (watch) calls [`Session::compile`] first and [`Session::run`] only when
//! that succeeded, so a broken edit never replaces working definitions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, Scope, Variant, AST};

use crate::diagnostics::{self, ScriptError, SourceText};
use crate::dsl::{self, Host};

/// A compiled source, ready for [`Session::run`].
#[derive(Clone, Debug)]
pub struct Compiled {
    ast: AST,
    source: SourceText,
}

impl Compiled {
    /// The source record (name, original and rewritten text).
    pub fn source(&self) -> &SourceText {
        &self.source
    }
}

/// An evaluation session (see the module documentation).
pub struct Session {
    engine: Engine,
    host: Arc<Host>,
    scope: Scope<'static>,
    functions: AST,
    stdlib: Vec<SourceText>,
    sources: HashMap<String, SourceText>,
}

impl Session {
    /// A session with the standard engine ([`dsl::engine_with`]), an empty scope and `ARGS = []`.
    ///
    /// Errors: a stdlib file (embedded or from `REGSH_STDLIB`) that does not compile.
    pub fn new() -> Result<Self, Box<ScriptError>> {
        Self::with_host(Arc::new(Host::default()))
    }

    /// A session on an existing [`Host`]: its image cache and cancel flag are shared with whoever else
    /// holds it (`regsh watch` gives each run a fresh session on one host, so images stay cached).
    ///
    /// Errors: as [`Session::new`].
    pub fn with_host(host: Arc<Host>) -> Result<Self, Box<ScriptError>> {
        let (engine, stdlib) = dsl::engine_with(host.clone())?;
        let mut s =
            Session { engine, host, scope: Scope::new(), functions: AST::empty(), stdlib, sources: HashMap::new() };
        s.set_args(Vec::new());
        Ok(s)
    }

    /// Sets `ARGS`, the script's arguments (an array of strings).
    pub fn set_args(&mut self, args: Vec<String>) {
        let a: Array = args.into_iter().map(Dynamic::from).collect();
        self.scope.set_or_push("ARGS", a);
    }

    /// Sets (or defines) a variable of the scope.
    pub fn set_var<T: Variant + Clone>(&mut self, name: &str, value: T) {
        self.scope.set_or_push(name, value);
    }

    /// A variable of the scope, if defined and of type `T`.
    pub fn get_var<T: Variant + Clone>(&self, name: &str) -> Option<T> {
        self.scope.get_value::<T>(name)
    }

    /// The scope (variables kept between evaluations).
    pub fn scope(&self) -> &Scope<'static> {
        &self.scope
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The shared host state (image cache, cancel flag).
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// The cancel flag: set it (e.g. from a Ctrl-C handler) to stop the running evaluation; each
    /// evaluation clears it when it starts.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.host.cancel.clone()
    }

    /// Forgets every variable and script function (`ARGS` is kept) and empties the image cache.
    pub fn clear(&mut self) {
        let args = self.scope.get_value::<Array>("ARGS").unwrap_or_default();
        self.scope = Scope::new();
        self.scope.push("ARGS", args);
        self.functions = AST::empty();
        self.host.clear_cache();
    }

    /// The script functions defined so far, as `name(a, b)` signatures, sorted.
    pub fn functions(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.functions.iter_functions().map(|f| format!("{}({})", f.name, f.params.join(", "))).collect();
        v.sort();
        v
    }

    /// The variables of the scope: name, type (as scripts call it) and printed value, in definition order.
    /// A name defined twice (shadowed) is listed once, with its current value.
    pub fn variables(&self) -> Vec<(String, String, String)> {
        // `iter_raw` runs from the newest entry: the first of each name is its current value.
        let mut seen = std::collections::HashSet::new();
        let mut v: Vec<(String, String, String)> = self
            .scope
            .iter_raw()
            .filter(|(n, _, _)| seen.insert(n.to_string()))
            .map(|(n, _, v)| {
                let ty = dsl::value::dsl_type_name(v.type_name().rsplit("::").next().unwrap_or(""));
                (n.to_string(), ty.to_string(), dsl::value::display(v))
            })
            .collect();
        v.reverse();
        v
    }

    /// Names for completion and "did you mean": builtins and stdlib recipes, script functions, variables.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = dsl::help::names().map(String::from).collect();
        v.extend(self.functions.iter_functions().map(|f| f.name.to_string()));
        v.extend(self.scope.iter_raw().map(|(n, _, _)| n.to_string()));
        v.sort();
        v.dedup();
        v
    }

    /// Compiles `text` (named `name` in reports) without running it.
    ///
    /// Errors: pre-pass and syntax errors, as reports on the original text.
    pub fn compile(&self, name: &str, text: &str) -> Result<Compiled, Box<ScriptError>> {
        let (ast, source) = dsl::compile(&self.engine, &self.scope, name, text)?;
        Ok(Compiled { ast, source })
    }

    /// Runs a compiled source in this session: its functions join the session's (replacing those of
    /// the same name and arity), its top-level variables stay in the scope. A name defined again (a
    /// `let` line run twice, as REPL users do all day) replaces its old value, which is released, as in
    /// Python's REPL. Returns the value of the last statement.
    ///
    /// Errors: runtime errors as reports on the original text (innermost position in the user's code).
    pub fn run(&mut self, c: Compiled) -> Result<Dynamic, Box<ScriptError>> {
        self.host.cancel.store(false, Ordering::Relaxed);
        let merged = self.functions.merge(&c.ast);
        self.functions = merged.clone_functions_only();
        let result = self.engine.eval_ast_with_scope::<Dynamic>(&mut self.scope, &merged);
        self.drop_shadowed();
        let name = c.source.name.clone();
        self.sources.insert(name.clone(), c.source);
        result.map_err(|e| {
            let current = &self.sources[&name];
            let others: Vec<&SourceText> = self.stdlib.iter().chain(self.sources.values()).collect();
            Box::new(diagnostics::from_eval(&e, current, &others, &self.names()))
        })
    }

    /// Rebuilds the scope with only the newest entry of each name when a name was defined more than
    /// once: Rhai keeps a shadowed variable alive until its scope ends, and the session's scope never
    /// ends (re-running `let a = load(..)` 150 times kept 150 images).
    fn drop_shadowed(&mut self) {
        let mut seen = std::collections::HashSet::new();
        // `iter_raw` runs from the newest entry.
        let keep: Vec<(String, bool, Dynamic)> = self
            .scope
            .iter_raw()
            .filter(|(n, _, _)| seen.insert(n.to_string()))
            .map(|(n, c, v)| (n.to_string(), c, v.clone()))
            .collect();
        if keep.len() == self.scope.len() {
            return;
        }
        let mut scope = Scope::new();
        for (name, constant, value) in keep.into_iter().rev() {
            if constant {
                scope.push_constant_dynamic(name, value);
            } else {
                scope.push_dynamic(name, value);
            }
        }
        self.scope = scope;
    }

    /// Compiles and runs `text` (see [`Session::compile`], [`Session::run`]).
    ///
    /// Errors: as those.
    pub fn eval(&mut self, name: &str, text: &str) -> Result<Dynamic, Box<ScriptError>> {
        let c = self.compile(name, text)?;
        self.run(c)
    }

    /// Reads and evaluates a script file (named by its path in reports).
    ///
    /// Errors: an unreadable file; as [`Session::eval`].
    pub fn eval_file(&mut self, path: &Path) -> Result<Dynamic, Box<ScriptError>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Box::new(ScriptError::bare("regsh::io::os", format!("{}: {e}", path.display()))))?;
        self.eval(&path.display().to_string(), &text)
    }

    /// How a value prints (see [`dsl::value::display`]).
    pub fn display(value: &Dynamic) -> String {
        dsl::value::display(value)
    }
}
