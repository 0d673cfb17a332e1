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
        serde_json::json!([
            [-2.0, 0.0, 0.0, 90.0],
            [0.0, 2.0, 0.0, -126.0],
            [0.0, 0.0, 2.0, -72.0],
            [0.0, 0.0, 0.0, 1.0]
        ])
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

#[test]
fn apply_and_jacobian_on_real_data() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = common::data("avg152/avg152T1.nii");
    let labels = common::data("colin27/aal.nii.gz");
    // A scaling by (1.1, 0.9, 1.2) about the origin, as an ITK file.
    let tfm = dir.path().join("s.tfm");
    std::fs::write(&tfm, "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: 1.1 0 0 0 0.9 0 0 0 1.2 0 0 0\nFixedParameters: 0 0 0\n").unwrap();
    let jac = dir.path().join("jac.nii.gz");
    let out =
        regsh(&["jacobian", "-t", tfm.to_str().unwrap(), "-r", fixed.to_str().unwrap(), "-o", jac.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j = regsh::image::io::load(&jac).unwrap().stats().unwrap();
    assert!((j.min - 1.188).abs() < 1e-6 && (j.max - 1.188).abs() < 1e-6, "{j:?}");
    // Labels through `apply` with label interpolation stay labels, on the reference grid.
    let warped = dir.path().join("aal_2mm.nii.gz");
    let out = regsh(&[
        "apply",
        "-i",
        labels.to_str().unwrap(),
        "-r",
        fixed.to_str().unwrap(),
        "-t",
        tfm.to_str().unwrap(),
        "-o",
        warped.to_str().unwrap(),
        "--interpolation",
        "label",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (img, meta) = regsh::image::io::load_with_meta(&warped).unwrap();
    assert_eq!(meta.dims, vec![91, 109, 91]);
    assert_eq!(meta.disk_dtype, regsh::image::DataType::Uint8);
    assert!(img.to_vec_f64().unwrap().iter().all(|v| v.fract() == 0.0 && *v <= 116.0));
    // A typo in an option gets a suggestion.
    let out = regsh(&[
        "apply",
        "-i",
        labels.to_str().unwrap(),
        "-r",
        fixed.to_str().unwrap(),
        "-o",
        warped.to_str().unwrap(),
        "-n",
        "neares",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `nearest`"));
}

#[test]
fn measure_reports_image_and_label_measures_as_json() {
    let t1 = common::data("avg152/avg152T1.nii");
    let t2 = common::data("avg152/avg152T2.nii");
    let aal = common::data("colin27/aal.nii.gz");
    let out = regsh(&[
        "measure",
        t1.to_str().unwrap(),
        t2.to_str().unwrap(),
        "--metrics",
        "mi[bins=16],nmi,cr,cr_patch[patch=8],ncc,lncc[window=5],ssd,ssim,psnr",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["mi", "nmi", "cr", "cr_patch", "ncc", "lncc", "ssd", "ssim", "psnr"] {
        assert!(v[k].is_number(), "{k} missing in {v}");
    }
    // The same measures as the library computes.
    let (a, b) = (regsh::image::io::load(&t1).unwrap(), regsh::image::io::load(&t2).unwrap());
    let mut mi = regsh::metrics::Metric::new("mi").unwrap();
    mi.set("bins", regsh::metrics::OptionValue::Number(16.0)).unwrap();
    assert!((v["mi"].as_f64().unwrap() - mi.value(a.data(), b.data(), None).unwrap()).abs() < 1e-6);
    assert!(v["nmi"].as_f64().unwrap() > 1.0 && v["nmi"].as_f64().unwrap() < 2.0);
    // Labels on another grid: resampled onto the fixed grid with a note; identical maps score 1 and 0.
    let out = regsh(&[
        "measure",
        t1.to_str().unwrap(),
        aal.to_str().unwrap(),
        "--labels-fixed",
        aal.to_str().unwrap(),
        "--labels-moving",
        aal.to_str().unwrap(),
        "--metrics",
        "dice,hd95,ssd",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resampled onto the fixed grid"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dice"]["mean"], 1.0);
    assert_eq!(v["hd95"]["mean"], 0.0);
    assert_eq!(v["dice"]["1"], 1.0);
    assert!(v["dice"].as_object().unwrap().len() > 100);
    // Typos get suggestions; label measures without labels are refused.
    let bad = regsh(&["measure", t1.to_str().unwrap(), t2.to_str().unwrap(), "--metrics", "cr_pach"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean `cr_patch`"));
    let bad = regsh(&["measure", t1.to_str().unwrap(), t2.to_str().unwrap(), "--metrics", "mi[binz=3]"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean `bins`"));
    let bad = regsh(&["measure", t1.to_str().unwrap(), t2.to_str().unwrap(), "--metrics", "dice"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("needs --labels-fixed"));
}

#[test]
fn outputs_into_missing_directories_are_made_and_bad_ones_refused_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = common::data("avg152/avg152T1.nii");
    let t2 = common::data("avg152/avg152T2.nii");
    let (t1s, t2s) = (t1.to_str().unwrap(), t2.to_str().unwrap());
    // `register --out` into directories that do not exist yet: made, and every output written there.
    let prefix = dir.path().join("new/sub/t2_to_t1");
    let out = regsh(&["register", "--fixed", t1s, "--moving", t2s, "--transform", "rigid", "--metric", "mi"]);
    assert!(!out.status.success(), "--out is required");
    let out = regsh(&[
        "register",
        "--fixed",
        t1s,
        "--moving",
        t2s,
        "--transform",
        "rigid",
        "--metric",
        "mi",
        "--scales",
        "1",
        "--iterations",
        "5",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for suffix in ["_warped.nii.gz", "_affine.tfm", "_report.json"] {
        assert!(dir.path().join(format!("new/sub/t2_to_t1{suffix}")).is_file(), "{suffix}");
    }
    // A parent that is a file is refused before anything is loaded: the missing moving image is not
    // reported, the output location is.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let bad_prefix = file.join("r");
    let out = regsh(&[
        "register",
        "--fixed",
        t1s,
        "--moving",
        "/no/such/moving.nii",
        "--transform",
        "rigid",
        "--out",
        bad_prefix.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plain") && err.contains("not a directory") && !err.contains("no such file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // `apply -o` onto its own input is refused, and the input is left as it was.
    let copy = dir.path().join("t1.nii");
    std::fs::copy(&t1, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let tfm = dir.path().join("new/sub/t2_to_t1_affine.tfm");
    let out = regsh(&[
        "apply",
        "-i",
        copy.to_str().unwrap(),
        "-r",
        t1s,
        "-t",
        tfm.to_str().unwrap(),
        "-o",
        copy.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite an input"));
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    // `jacobian -o` and DSL `save` into a missing directory: made.
    let jac = dir.path().join("j/k/jac.nii.gz");
    let out = regsh(&["jacobian", "-t", tfm.to_str().unwrap(), "-r", t1s, "-o", jac.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(jac.is_file());
    let saved = dir.path().join("d/e/t1.nii.gz");
    let expr = format!("save(load(\"{t1s}\"), \"{}\")", saved.display());
    let out = regsh(&["run", "-e", &expr]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (regsh::image::io::load(&t1).unwrap(), regsh::image::io::load(&saved).unwrap());
    assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "the saved copy holds the input's voxels");
}
