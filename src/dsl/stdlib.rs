//! The standard library: recipes written in the DSL (`stdlib/*.rhai`), embedded at build time.
//!
//! A user overrides them with a directory named by the environment variable `REGSH_STDLIB`: a file
//! there with the name of an embedded one (e.g. `register.rhai`) replaces it, and any other `*.rhai`
//! file there is added. A script's own `fn` of the same name as a stdlib function also wins over it.

use crate::dsl::help::{o, Help};

/// The embedded files: (file name, text).
pub const EMBEDDED: [(&str, &str); 2] = [
    ("register.rhai", include_str!("../../stdlib/register.rhai")),
    ("evaluate.rhai", include_str!("../../stdlib/evaluate.rhai")),
];

/// The stdlib sources to load: (source name, text), embedded files replaced or extended by the
/// `*.rhai` files of `$REGSH_STDLIB` (sorted by name). Source names are `stdlib/NAME`, or the path of
/// a user file.
pub fn sources() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = EMBEDDED.iter().map(|(n, t)| (format!("stdlib/{n}"), t.to_string())).collect();
    let Some(dir) = std::env::var_os("REGSH_STDLIB") else { return out };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        tracing::warn!("REGSH_STDLIB={}: not a readable directory; using the embedded stdlib", dir.to_string_lossy());
        return out;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    files.sort();
    for p in files {
        let Ok(text) = std::fs::read_to_string(&p) else { continue };
        let file = p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let name = p.display().to_string();
        match out.iter_mut().find(|(n, _)| n.ends_with(&format!("/{file}"))) {
            Some(slot) => *slot = (name, text),
            None => out.push((name, text)),
        }
    }
    out
}

/// The help of the stdlib recipes (see [`crate::dsl::help`]).
pub static HELP: &[Help] = &[
    Help {
        name: "register_rigid",
        domain: "stdlib",
        signature: "register_rigid(moving, fixed) -> RegState   (stdlib/register.rhai)",
        summary: "Rigid registration with ANTs-like defaults (mi, 4 levels); keyword arguments go on to register",
        options: &[
            o("metric", "mi", "similarity measure"),
            o("scales", "4", "pyramid levels"),
            o("iterations", "[100, 60, 30, 15]", "iterations per level"),
            o("mask", "-", "fixed-grid mask"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet r = register_rigid(t2, t1, scales=2, iterations=[20, 10]);\nassert(r.transform.kind == \"rigid\", \"rigid\");\nassert(displacement_error(r.transform, affine(), t1) < 1.0, \"aligned already\");",
    },
    Help {
        name: "register_affine",
        domain: "stdlib",
        signature: "register_affine(moving, fixed) -> RegState   (stdlib/register.rhai)",
        summary: "Rigid then affine registration with ANTs-like defaults (mi, 4 levels); keyword arguments go on to register",
        options: &[
            o("metric", "mi", "similarity measure"),
            o("scales", "4", "pyramid levels"),
            o("iterations", "[100, 60, 30, 15]", "iterations per level"),
            o("mask", "-", "fixed-grid mask"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet r = register_affine(t2, t1, scales=2, iterations=[20, 10]);\nassert(r.stages.len() == 2 && r.transform.kind == \"affine\", \"rigid then affine\");\nassert(displacement_error(r.transform, affine(), t1) < 1.0, \"aligned already\");",
    },
    Help {
        name: "register_deformable",
        domain: "stdlib",
        signature: "register_deformable(moving, fixed) -> RegState   (stdlib/register.rhai)",
        summary: "Rigid, affine, then a greedy displacement field with ANTs-SyN-like defaults (lncc for the field, mi for the linear stages); pass metric=mi for multi-modal pairs; keyword arguments go on to register",
        options: &[
            o("metric", "lncc", "similarity measure of the dense stage"),
            o("scales", "4", "pyramid levels of the linear stages"),
            o("iterations", "[100, 60, 30, 15]", "iterations per level of the linear stages"),
            o("dense_iterations", "100,100,50", "iterations per level of the dense stage"),
            o("mask", "-", "fixed-grid mask"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([4.0, 0.0, 0.0]), t1);\nlet r = register_deformable(moved, t1, scales=2, iterations=[20, 10], dense_iterations=[10, 5]);\nassert(r.stages.len() == 3 && r.stages[2].transform == \"syn\", \"rigid, affine, then the field\");\nassert(displacement_error(r.transform, translation([-4.0, 0.0, 0.0]), t1) < 1.0, \"a 4 mm shift is undone to within a millimetre\");",
    },
    Help {
        name: "evaluate",
        domain: "stdlib",
        signature: "evaluate(state) -> map   (stdlib/evaluate.rhai)",
        summary: "Similarity of the warped moving image to the fixed one (mi, ncc, ssim) and the stage count",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet e = evaluate(init(t1, t1, method=\"identity\"));\nassert(abs(e.ncc - 1.0) < 1e-5 && e.stages == 0, \"identity on the same image\");",
    },
];
