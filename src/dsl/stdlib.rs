//! The standard library: recipes written in the DSL (`stdlib/*.rhai`), embedded at build time.
//!
//! A user overrides them with a directory named by the environment variable `REGSH_STDLIB`: a file
//! there with the name of an embedded one (e.g. `register.rhai`) replaces it, and any other `*.rhai`
//! file there is added. A script's own `fn` of the same name as a stdlib function also wins over it.

use crate::dsl::help::{o, Help};

/// The embedded files: (file name, text).
pub const EMBEDDED: [(&str, &str); 4] = [
    ("register.rhai", include_str!("../../stdlib/register.rhai")),
    ("evaluate.rhai", include_str!("../../stdlib/evaluate.rhai")),
    ("deep_metric.rhai", include_str!("../../stdlib/deep_metric.rhai")),
    ("groupwise.rhai", include_str!("../../stdlib/groupwise.rhai")),
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
    Help {
        name: "deep_metric_net",
        domain: "stdlib",
        signature: "deep_metric_net() -> Network   (stdlib/deep_metric.rhai)",
        summary: "Sedghi et al.'s patch classifier: (N, 2, pz, py, px) pairs (fixed, moving) to (N, 2) logits (not registered, registered); three stride-2 convolutions (filter 5, 3, 3; Leaky ReLU 0.1, where the paper does not say: with plain ReLU these small networks died to a constant output at Adam's 0.01), global max pooling, dropout, a dense layer. For deep_metric and train_deep_metric",
        options: &[
            o("width", "16", "channels of the first convolution (then 2x and 4x)"),
            o("dropout", "0.5", "drop rate before the dense layer"),
            o("seed", "0", "seed of the initial weights"),
            o("name", "deep_metric_net", "the network's name"),
        ],
        example: "let n = deep_metric_net(width=4, seed=1);\nassert(n.forward(zeros([3, 2, 17, 17, 17])).shape == [3, 2], \"two logits per pair\");\nassert(n.forward(zeros([1, 2, 9, 9, 9])).shape == [1, 2], \"any patch side\");",
    },
    Help {
        name: "deep_metric_register",
        domain: "stdlib",
        signature: "deep_metric_register(net, moving, fixed) -> #{transform, loss, seconds}   (MOVING first; stdlib/deep_metric.rhai)",
        summary: "Rigid registration with a trained deep metric by Powell's method on one pyramid level (Sedghi et al.'s registration), starting from init= and returning the whole transform",
        options: &[
            o("level", "1", "downsampling factor of both images (as the network was trained)"),
            o("patch", "17", "patch side, voxels of the level"),
            o("patches", "64", "patch positions summed (drawn once, kept while Powell runs)"),
            o("seed", "0", "seed of the positions"),
            o("mask", "-", "fixed-grid mask: the patches' centres lie inside"),
            o("init", "identity", "the starting transform"),
            o("iterations", "4", "Powell sweeps"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = deep_metric_net(width=4, seed=1);\nlet r = deep_metric_register(n, t1, t1, level=4, patch=9, patches=8, iterations=1);\nassert(r.transform.matrix.len() == 4 && r.seconds > 0.0, \"a rigid transform\");",
    },
    Help {
        name: "train_deep_metric",
        domain: "stdlib",
        signature: "train_deep_metric(fixed_list, moving_list) -> #{nets, transforms, seconds}   (stdlib/deep_metric.rhai)",
        summary: "Multi-shot training of deep metrics from misaligned pairs (Sedghi et al. Fig. 1): per stage [l, s2], patch pairs downsampled by l, dithered with variance s2 mm^2, flipped and rotated; a new deep_metric_net trained with cross-entropy (Adam 0.01, weight decay 0.01, x0.8 per epoch); then every training pair re-registered with it (deep_metric_register) before the next stage",
        options: &[
            o("stages", "[[4, 100], [2, 25], [2, 15], [1, 8]]", "[downsampling, dither variance mm^2] per stage (the paper's F1..F4 at 1 mm)"),
            o("patch", "17", "patch side, voxels of each level"),
            o("n", "1000", "patch positions per pair and stage"),
            o("draws", "1", "dithered draws per position"),
            o("min_distance", "10", "mm between the two patches of a non-corresponding pair"),
            o("flips", "true", "random flips of both patches"),
            o("rotations", "true", "random 90-degree rotations of both patches"),
            o("masks", "-", "one fixed-grid mask per pair: where training patches lie (the paper's anatomy restriction)"),
            o("registration_masks", "masks", "one fixed-grid mask per pair for the re-registrations"),
            o("width", "16", "channels of the networks' first convolution"),
            o("epochs", "10", "epochs per stage"),
            o("batch", "64", "pairs per step"),
            o("lr", "0.01", "Adam's learning rate"),
            o("gamma", "0.8", "learning-rate decay per epoch"),
            o("weight_decay", "0.01", "L2 weight decay"),
            o("patches", "64", "patch positions of the re-registrations"),
            o("iterations", "4", "Powell sweeps of the re-registrations"),
            o("register_last", "false", "re-register the pairs with the last stage too"),
            o("seed", "0", "seed of patches, weights and batches"),
            o("out", "-", "path prefix: stage k saved as PREFIX_Fk.safetensors (+ .json)"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet moved = warp(t2, translation([4.0, 0.0, 0.0]), t1);\nlet r = train_deep_metric([t1], [moved], stages=[[4, 25], [2, 8]], patch=9, n=40, width=4, epochs=1, patches=8, iterations=1, out=\"target/help_deep\");\nassert(r.nets.len() == 2 && r.transforms.len() == 1, \"two stages, one pair\");\nassert(exists(\"target/help_deep_F2.safetensors\"), \"each stage saved\");",
    },
    Help {
        name: "random_rigid",
        domain: "stdlib",
        signature: "random_rigid(n, about) -> [Transform; n]   (stdlib/deep_metric.rhai)",
        summary: "n random rigid misregistrations about the centre of an image or grid: translations of magnitude U(a, b) mm per axis with random signs, rotations U(-r, r) rad per axis (Sedghi et al.'s experiments)",
        options: &[
            o("translation", "[1, 20]", "[a, b]: magnitudes of the translations, mm"),
            o("rotation", "0.2", "r: largest rotation per axis, radians"),
            o("seed", "0", "random seed"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet ts = random_rigid(5, t1, translation=[1.0, 5.0], rotation=0.1, seed=2);\nassert(ts.len() == 5 && ts[0].kind == \"rigid\", \"five rigid transforms\");\nlet p = ts[0].params;\nassert(abs(p[0]) >= 1.0 && abs(p[0]) <= 5.0 && abs(p[3]) <= 0.1, \"in range\");",
    },
    Help {
        name: "move_group",
        domain: "stdlib",
        signature: "move_group(images, truths) -> [Image]   (stdlib/groupwise.rhai)",
        summary: "A test group for groupwise registration: each image moved by its own transform, moved_j(x) = images[j](truths[j](x)), on its own grid (Luo & Zhuang's experiments)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet moved = move_group([t1, t2], [affine(), translation([2.0, 0.0, 0.0])]);\nassert(moved.len() == 2 && ssd(moved[0], t1) == 0.0, \"the identity leaves an image as it was\");",
    },
    Help {
        name: "random_group_motion",
        domain: "stdlib",
        signature: "random_group_motion(n, about) -> [Transform; n]   (stdlib/groupwise.rhai)",
        summary: "n random rigid transforms about the centre of an image or grid, translations U(-t, t) mm and rotations U(-r, r) rad per axis: the misalignments of the seed's rigid groupwise experiment",
        options: &[
            o("translation", "20", "t: largest translation per axis, mm"),
            o("rotation", "0.2", "r: largest rotation per axis, radians"),
            o("seed", "0", "random seed"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet ts = random_group_motion(4, t1, seed=3);\nassert(ts.len() == 4 && ts[0].kind == \"rigid\", \"four rigid transforms\");\nassert(ts.all(|t| abs(t.params[0]) <= 20.0 && abs(t.params[5]) <= 0.2), \"in range\");",
    },
    Help {
        name: "group_errors",
        domain: "stdlib",
        signature: "group_errors(transforms, truths, grid) -> #{gre, none, floor}   (mm; stdlib/groupwise.rhai)",
        summary: "The errors of a groupwise result on a group made by move_group(originals, truths): gRE against the truth, the gRE of the identity (before registration), and with floor= the gRE against the transforms that align the unmoved originals (their own misalignment taken out)",
        options: &[
            o("floor", "-", "one transform per image: a groupwise result on the unmoved originals"),
            o("mask", "-", "only the voxels where this image (on the grid) is non-zero"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet truths = [translation([3.0, 0.0, 0.0]), translation([-3.0, 0.0, 0.0])];\nlet e = group_errors([inverse(truths[0]), inverse(truths[1])], truths, t1);\nassert(e.gre < 1e-4 && abs(e.none - 6.0) < 1e-4, \"exact estimates; 6 mm apart before\");\nlet f = group_errors([affine(), affine()], truths, t1, floor=truths);\nassert(f.floor < 1e-4, \"the floor itself\");",
    },
    Help {
        name: "rigid_errors",
        domain: "stdlib",
        signature: "rigid_errors(estimate, truth, about) -> #{translation, norm, rotation}   (stdlib/deep_metric.rhai)",
        summary: "The rigid residual of a registration of moving = warp(original, truth, fixed): x -> truth(estimate(x)), its |tx|, |ty|, |tz| at the centre of `about` (mm), their norm and |rx|, |ry|, |rz| (degrees; Sedghi et al.'s Table 1 columns)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet a = rigid([3.0, 0.0, -4.0, 0.0, 0.0, 0.1], about=t1);\nlet e = rigid_errors(affine(), a, t1);\nassert(abs(e.norm - 5.0) < 1e-4 && abs(e.rotation[2] - 5.7296) < 1e-3, \"an unregistered pair keeps its misregistration\");\nassert(rigid_errors(a.inverse(), a, t1).norm < 1e-4, \"the exact inverse leaves nothing\");",
    },
];
