//! The `regsh` binary: `info` in text and JSON on real data, help, and clean errors.

mod common;

use std::process::Command;

fn regsh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_regsh")).args(args).output().expect("run regsh")
}

#[test]
fn info_json_on_real_data_has_nibabels_geometry() {
    let path = common::data("avg152/avg152T1.nii");
    let out = regsh(&["info", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["shape"], serde_json::json!([91, 109, 91]));
    assert_eq!(v["spacing"], serde_json::json!([2.0, 2.0, 2.0]));
    assert_eq!(v["dtype"], "uint8");
    assert_eq!(v["orientation"], "LAS");
    assert_eq!(
        v["affine"],
        serde_json::json!([[-2.0, 0.0, 0.0, 90.0], [0.0, 2.0, 0.0, -126.0], [0.0, 0.0, 2.0, -72.0], [0.0, 0.0, 0.0, 1.0]])
    );
    assert_eq!(v["min"], 0.0);
    assert!((v["max"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(v["non_finite"], 0);
}

#[test]
fn info_text_and_several_files() {
    let a = common::data("colin27/aal.nii.gz");
    let b = common::data("ct_brain/ct_brain_atlas_1mm.nii.gz");
    let out = regsh(&["info", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("181 x 217 x 181") && text.contains("202 x 202 x 179"), "{text}");
    assert!(text.contains("int16") && text.contains("range        [-30, 385]"), "{text}");
    let json = regsh(&["info", "--json", a.to_str().unwrap(), b.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v.as_array().map(|a| a.len()), Some(2));
}

#[test]
fn help_lists_the_subcommands() {
    let out = regsh(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("info"), "{text}");
}

#[test]
fn errors_are_reported_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.nii");
    std::fs::write(&bad, b"not an image at all").unwrap();
    for (path, needle) in [("/no/such/file.nii.gz", "no such file"), (bad.to_str().unwrap(), "truncated header")] {
        let out = regsh(&["info", path]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
