//! The interactive shell (`regsh`, `regsh repl`): rustyline line editing with a history file, tab
//! completion, multi-line input while brackets are open, and `:commands`. Every line goes through the
//! one evaluation path, [`crate::session::Session`]; a script error prints its miette report and the
//! session goes on with its variables intact. Ctrl-C at the prompt clears the line; during an
//! evaluation it cancels that evaluation (Rhai stops at its next operation, `iso` / `register` after
//! their current iteration), not the REPL.
//!
//! Only this module knows rustyline.

mod helper;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rustyline::error::ReadlineError;
use rustyline::{CompletionType, Config, Editor};

pub use helper::{complete_names, open_string, ReplHelper};

use crate::diagnostics::{render_terminal, ScriptError};
use crate::session::Session;

/// The REPL's commands and their one-line help.
pub const COMMANDS: &[(&str, &str)] = &[
    (":help", ":help [NAME]   the help of a builtin (signature, options, example), or the list of builtins"),
    (":functions", ":functions     builtins by domain, and the functions this session defined"),
    (":vars", ":vars          the session's variables, their types and values"),
    (":load", ":load FILE     run a script file in this session (its variables and functions stay)"),
    (":time", ":time EXPR     evaluate EXPR and print how long it took"),
    (":clear", ":clear         forget every variable and function, empty the image cache"),
    (":quit", ":quit          leave (also :q, Ctrl-D)"),
];

/// Options of [`run`].
#[derive(Clone, Debug, Default)]
pub struct ReplOptions {
    /// The history file (default: `$REGSH_HISTORY`, else `~/.regsh_history`; none when neither is known).
    pub history: Option<PathBuf>,
}

/// The history file [`run`] uses by default.
pub fn default_history() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REGSH_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".regsh_history"))
}

/// What a command line asks the REPL loop to do.
enum Step {
    Continue,
    Quit,
}

/// The REPL state besides the editor: the session and how errors render.
struct Repl {
    session: Session,
    colour: bool,
    line_no: usize,
}

impl Repl {
    /// `:help NAME` for a variable holding a measure or regularizer made in the session (one written in
    /// the DSL, a combination): what it is and where it was defined; `None` for other names.
    fn value_help(&self, name: &str) -> Option<String> {
        use crate::metrics::regularizers::Regularizer;
        use crate::metrics::{Metric, MetricKind};
        if let Some(m) = self.session.get_var::<Metric>(name) {
            let what = match (m.kind(), m.as_custom()) {
                (MetricKind::Custom, Some(c)) => format!(
                    "a measure written in the DSL, named \"{}\", defined at {}; its loss is {}",
                    m.name(),
                    c.source,
                    if c.higher_is_better {
                        "minus its value (higher is better)"
                    } else {
                        "its value (lower is better)"
                    }
                ),
                (MetricKind::Sum, _) => {
                    "a combination of measures; its value and loss are the weighted sum of the terms' losses".into()
                }
                _ => format!("the measure `{}` (`:help {}` for its options)", m.name(), m.name()),
            };
            return Some(format!(
                "{name} = {m}\n    {what}\n    use it as iso({name}), register(m, f, metric={name}), measure({name}, fixed, moving)"
            ));
        }
        if matches!(name, "diffusion" | "bending") && self.session.get_var::<Regularizer>(name).is_none() {
            // The bare regularizer values are documented with `regularizer`.
            return crate::dsl::help::help("regularizer")
                .map(|h| format!("{name}: a Regularizer value, see regularizer\n{h}"));
        }
        self.session.get_var::<Regularizer>(name).map(|r| {
            format!("{name} = {r}\n    a regularizer of the displacement field: add it to a measure for the dense stages (metric=lncc + {name}), or penalty({name}, field, grid)")
        })
    }

    fn report(&self, e: &ScriptError) {
        eprint!("{}", render_terminal(e, self.colour));
        let _ = std::io::stderr().flush();
    }

    /// Evaluates one input in the session and prints its value (nothing for `()`).
    fn eval(&mut self, text: &str) {
        self.line_no += 1;
        let name = format!("<repl:{}>", self.line_no);
        match self.session.eval(&name, text) {
            Ok(v) if v.is_unit() => {}
            Ok(v) => println!("{}", Session::display(&v)),
            Err(e) => self.report(&e),
        }
        if self.session.cancel_flag().swap(false, Ordering::Relaxed) {
            println!("(cancelled)");
        }
    }

    fn command(&mut self, line: &str) -> Step {
        let line = line.trim();
        let (cmd, rest) = line.split_once(char::is_whitespace).map(|(c, r)| (c, r.trim())).unwrap_or((line, ""));
        match cmd {
            ":q" | ":quit" | ":exit" => return Step::Quit,
            ":help" | ":h" if rest.is_empty() => {
                println!("commands:");
                for (_, h) in COMMANDS {
                    println!("  {h}");
                }
                println!("builtins (`:help NAME` for one):");
                print_builtins();
            }
            ":help" | ":h" if self.value_help(rest).is_some() => {
                println!("{}", self.value_help(rest).unwrap_or_default());
            }
            ":help" | ":h" => match crate::dsl::help::help(rest) {
                Some(h) => println!("{h}"),
                None => {
                    let hint = crate::names::suggest(rest, crate::dsl::help::names())
                        .map(|s| format!(", did you mean `{s}`?"))
                        .unwrap_or_default();
                    eprintln!("no help for `{rest}`{hint}");
                }
            },
            ":functions" | ":fns" => {
                print_builtins();
                let f = self.session.functions();
                if !f.is_empty() {
                    println!("defined in this session:\n  {}", f.join("\n  "));
                }
            }
            ":vars" => {
                for (n, ty, v) in self.session.variables() {
                    let v = if v.chars().count() > 100 {
                        format!("{}...", v.chars().take(100).collect::<String>())
                    } else {
                        v
                    };
                    println!("{n}: {ty} = {v}");
                }
            }
            ":load" if !rest.is_empty() => {
                let path = PathBuf::from(rest.trim_matches('"'));
                match self.session.eval_file(&path) {
                    Ok(v) if !v.is_unit() => println!("{}", Session::display(&v)),
                    Ok(_) => println!("loaded {}", path.display()),
                    Err(e) => self.report(&e),
                }
            }
            ":time" if !rest.is_empty() => {
                let t0 = Instant::now();
                self.eval(rest);
                println!("time: {:.3} s", t0.elapsed().as_secs_f64());
            }
            ":clear" => {
                self.session.clear();
                println!("cleared: no variables, no functions, no cached images");
            }
            _ => {
                let names: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
                let hint =
                    crate::names::suggest(cmd, names).map(|s| format!(", did you mean `{s}`?")).unwrap_or_default();
                if matches!(cmd, ":load" | ":time") {
                    eprintln!("{cmd} needs an argument (`:help` lists the commands)");
                } else {
                    eprintln!("unknown command `{cmd}`{hint}");
                }
            }
        }
        Step::Continue
    }
}

/// Prints the builtins grouped by domain.
fn print_builtins() {
    let mut domains: Vec<&str> = crate::dsl::help::all().map(|h| h.domain).collect();
    domains.dedup();
    let mut seen = Vec::new();
    for d in domains {
        if seen.contains(&d) {
            continue;
        }
        seen.push(d);
        let names: Vec<&str> = crate::dsl::help::all().filter(|h| h.domain == d).map(|h| h.name).collect();
        println!("  {d:9} {}", names.join(" "));
    }
}

/// Runs the REPL until `:quit` or Ctrl-D.
///
/// Errors: the terminal cannot be set up (rustyline), or the session cannot start (a stdlib file that
/// does not compile, reported as a script error).
pub fn run(opts: &ReplOptions) -> Result<(), Box<ScriptError>> {
    let session = Session::new()?;
    let cancel = session.cancel_flag();
    // Ctrl-C while an evaluation runs (the terminal is in cooked mode then) cancels it; at the prompt
    // rustyline reads the key itself.
    if ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed)).is_err() {
        tracing::debug!("Ctrl-C handler already installed");
    }
    let config = Config::builder().completion_type(CompletionType::List).auto_add_history(false).build();
    let term_err = |e: ReadlineError| Box::new(ScriptError::bare("regsh::repl::terminal", e.to_string()));
    let mut rl: Editor<ReplHelper, rustyline::history::DefaultHistory> =
        Editor::with_config(config).map_err(term_err)?;
    rl.set_helper(Some(ReplHelper::new(session.names())));
    let history = opts.history.clone().or_else(default_history);
    if let Some(h) = &history {
        // A missing history file is the first session's normal state.
        let _ = rl.load_history(h);
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut repl = Repl { session, colour, line_no: 0 };
    println!("regsh {}: `:help` for commands and builtins, `:quit` to leave", env!("CARGO_PKG_VERSION"));
    loop {
        match rl.readline("regsh> ") {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = rl.add_history_entry(line.as_str());
                let step = if line.trim_start().starts_with(':') {
                    repl.command(&line)
                } else {
                    repl.eval(&line);
                    Step::Continue
                };
                if let Some(h) = rl.helper_mut() {
                    h.names = repl.session.names();
                }
                if let Step::Quit = step {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(term_err(e)),
        }
    }
    if let Some(h) = &history {
        if let Err(e) = rl.save_history(h) {
            tracing::warn!("could not save the history to {}: {e}", h.display());
        }
    }
    Ok(())
}
