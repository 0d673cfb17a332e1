//! Script helpers: `exists`, `assert`, `help`.

use rhai::Engine;

use crate::dsl::help::Help;
use crate::dsl::options::{HostError, RhaiResult};

/// Registers the script helpers.
pub fn register(e: &mut Engine) {
    e.register_fn("exists", |path: &str| std::path::Path::new(path).exists());
    e.register_fn("assert", |c: bool| -> RhaiResult<()> {
        if c {
            Ok(())
        } else {
            Err(HostError::new("regsh::dsl::assert", "assertion failed").into_rhai())
        }
    });
    e.register_fn("assert", |c: bool, msg: &str| -> RhaiResult<()> {
        if c {
            Ok(())
        } else {
            Err(HostError::new("regsh::dsl::assert", format!("assertion failed: {msg}")).into_rhai())
        }
    });
    e.register_fn("help", |name: &str| -> RhaiResult<String> {
        match crate::dsl::help::help(name) {
            Some(h) => Ok(h.to_string()),
            None => {
                let s = crate::names::suggest(name, crate::dsl::help::names());
                let hint = s.map(|s| format!(", did you mean `{s}`?")).unwrap_or_default();
                Err(HostError::new("regsh::unknown_name", format!("no help for `{name}`{hint}")).into_rhai())
            }
        }
    });
}

/// The help of the script builtins (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    Help {
        name: "exists",
        domain: "script",
        signature: "exists(path) -> bool",
        summary: "Whether a file or directory exists",
        options: &[],
        example: "assert(exists(\"data/avg152/avg152T1.nii\"), \"the data is fetched\");\nassert(!exists(\"data/no_such_file.nii\"), \"and this is not there\");",
    },
    Help {
        name: "assert",
        domain: "script",
        signature: "assert(condition); assert(condition, message)",
        summary: "Stop the script with an error when the condition is false",
        options: &[],
        example: "assert(1 + 1 == 2, \"arithmetic\");",
    },
    Help {
        name: "help",
        domain: "script",
        signature: "help(name) -> string",
        summary: "The help of a builtin: signature, summary, keyword arguments, example",
        options: &[],
        example: "assert(help(\"smooth\").contains(\"sigma\"), \"documents its arguments\");",
    },
];
