//! The help machinery: each builtin's signature, one-line summary, keyword arguments with defaults and
//! units, and a runnable example (each example runs as a test, on the real data where it loads data,
//! and checks its result with `assert`). The entries themselves live beside the code that registers
//! the builtins (`HELP` in each [`super::api`] module, the stdlib recipes' in [`super::stdlib`]), as
//! nushell keeps a command's signature and examples on the command. The keyword arguments listed in an
//! entry are the only ones the builtin accepts ([`super::options::Opts`] checks them), so documentation
//! and behaviour cannot drift apart; a test checks that every function the engine registers has an
//! entry and every entry names a registered function.
//!
//! Front ends use [`help`] (`:help NAME`), [`names`] (completion) and [`all`] (the index by domain).

/// A keyword argument of a builtin.
#[derive(Clone, Copy, Debug)]
pub struct Opt {
    /// The keyword.
    pub name: &'static str,
    /// The default, as written in a script (`-` when there is none).
    pub default: &'static str,
    /// What it does, with units.
    pub doc: &'static str,
}

/// The help entry of a builtin.
#[derive(Clone, Copy, Debug)]
pub struct Help {
    /// The name scripts call it by.
    pub name: &'static str,
    /// The domain (`image`, `spatial`, `metrics`, `optim`, `pipeline`, `script`, `stdlib`).
    pub domain: &'static str,
    /// Positional signature(s), e.g. `smooth(image, sigma) -> Image`.
    pub signature: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Keyword arguments.
    pub options: &'static [Opt],
    /// A runnable example ending in `assert(...)` checks.
    pub example: &'static str,
}

impl Help {
    /// Whether the entry documents a topic (e.g. `operators`) rather than a function of its name.
    pub fn is_topic(&self) -> bool {
        !self.signature.contains(&format!("{}(", self.name))
    }
}

impl std::fmt::Display for Help {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}\n    {}", self.signature, self.summary)?;
        if !self.options.is_empty() {
            writeln!(f, "keyword arguments:")?;
            for o in self.options {
                writeln!(f, "    {:<14} {:<10} {}", o.name, o.default, o.doc)?;
            }
        }
        write!(f, "example:\n    {}", self.example.replace('\n', "\n    "))
    }
}

/// A keyword argument: name, default (as written in a script, `-` for none), what it does with units.
pub(crate) const fn o(name: &'static str, default: &'static str, doc: &'static str) -> Opt {
    Opt { name, default, doc }
}

/// Every entry: the builtins of each domain, then the stdlib recipes.
pub fn all() -> impl Iterator<Item = &'static Help> {
    use super::api;
    [
        api::image::HELP,
        api::spatial::HELP,
        api::metrics::HELP,
        api::groupwise::HELP,
        api::optim::HELP,
        api::pipeline::HELP,
        api::nn::HELP,
        api::layers::HELP,
        api::script::HELP,
        api::tensor::HELP,
        super::stdlib::HELP,
    ]
    .into_iter()
    .flatten()
}

/// The help of builtin `name`.
pub fn help(name: &str) -> Option<&'static Help> {
    all().find(|h| h.name == name)
}

/// Every documented name (builtins and stdlib recipes), for completion.
pub fn names() -> impl Iterator<Item = &'static str> {
    all().map(|h| h.name)
}
