//! The DSL end to end: every builtin's help example and every `examples/*.rhai` runs and its asserts
//! hold; the pipeline line registers a known affine; error reports point at the original text.

mod common;

use regsh::diagnostics::{render, ScriptError};
use regsh::dsl::help::HELP;
use regsh::session::Session;

fn session() -> Session {
    // Paths in examples are relative to the repository root (cargo runs tests there).
    assert!(common::data("avg152/avg152T1.nii").is_file());
    Session::new().unwrap_or_else(|e| panic!("{}", render(&e, false, 100)))
}

#[test]
fn every_help_example_runs_and_its_asserts_hold() {
    let mut s = session();
    let mut failed = Vec::new();
    for h in HELP {
        assert!(h.example.contains("assert("), "the example of `{}` checks nothing", h.name);
        assert!(!h.signature.is_empty() && !h.summary.is_empty(), "`{}` lacks a signature or summary", h.name);
        let t0 = std::time::Instant::now();
        match s.eval(&format!("help:{}", h.name), h.example) {
            Ok(_) => eprintln!("{:20} ok in {:.2} s", h.name, t0.elapsed().as_secs_f64()),
            Err(e) => failed.push(format!("{}:\n{}", h.name, render(&e, false, 100))),
        }
    }
    assert!(failed.is_empty(), "{} example(s) failed:\n{}", failed.len(), failed.join("\n"));
}
