//! Script helpers: `exists`, `assert`, `help`, `check_options`.

use rhai::{Engine, Map};

use crate::dsl::help::Help;
use crate::dsl::options::{HostError, Opts, RhaiResult};

/// Registers the script helpers.
pub fn register(e: &mut Engine) {
    // A builtin's error caught by `try { } catch (err) { }`: its message as a string, with its code and help.
    e.register_type_with_name::<HostError>("Error")
        .register_fn("to_string", |h: &mut HostError| h.message.clone())
        .register_fn("to_debug", |h: &mut HostError| format!("{}: {}", h.code, h.message))
        .register_get("message", |h: &mut HostError| h.message.clone())
        .register_get("code", |h: &mut HostError| h.code.clone())
        .register_get("help", |h: &mut HostError| h.help.clone().map_or(rhai::Dynamic::UNIT, rhai::Dynamic::from));
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
    e.register_fn("check_options", |name: &str, opts: Map| -> RhaiResult<Map> {
        let Some(h) = crate::dsl::help::help(name) else {
            return Err(
                HostError::new("regsh::unknown_name", format!("check_options: no help entry `{name}`")).into_rhai()
            );
        };
        Opts::new(h.name, opts.clone())?;
        Ok(opts)
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
        name: "check_options",
        domain: "script",
        signature: "check_options(name, opts) -> opts",
        summary: "For recipes written in the DSL (stdlib/*.rhai): refuse a keyword argument that the help entry `name` does not list, with \"did you mean\" and the valid ones, as the builtins do; returns the map",
        options: &[],
        example: "let o = check_options(\"smooth\", #{unit: \"voxels\"});\nassert(o.unit == \"voxels\", \"a listed option passes\");\nlet e = \"\";\ntry { check_options(\"smooth\", #{units: 1}); } catch (err) { e = `${err}`; }\nassert(e.contains(\"did you mean `unit`\"), \"an unknown one is refused with a suggestion (a caught error prints its message; err.code and err.help are there too)\");",
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
