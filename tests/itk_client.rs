//! A real client agrees: SimpleITK (installed by scripts/setup-python.sh) reads regsh's `.tfm`, `.mat`
//! and displacement-field files and resamples the real images the same way `regsh apply` does, and
//! regsh reads a `.tfm` SimpleITK wrote and resamples as SimpleITK does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use regsh::image::io::load;
use regsh::image::smooth::{smooth, SigmaUnit};
use regsh::image::Image;
use regsh::spatial::io::{save_displacement, save_transform};
use regsh::spatial::{Ddf, Linear, LinearKind};

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed:\n{}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sitk(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sitk_ref.py");
    run(Command::new(common::python()).arg(script).args(args));
}

fn regsh_apply(moving: &Path, reference: &Path, transforms: &[&Path], out: &Path) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_regsh"));
    c.args(["apply", "-i"]).arg(moving).arg("-r").arg(reference).arg("-o").arg(out);
    for t in transforms {
        c.arg("-t").arg(t);
    }
    run(&mut c);
}

/// Mean absolute difference of two images on the same grid, relative to the first one's range, over the
/// voxels whose sample point lies inside the moving image with all 8 interpolation corners (`inside` is 1
/// there). Outside that, the tools differ by design: ITK takes points up to half a voxel beyond the last
/// voxel centre as inside (edge value), while regsh, like PyTorch's `grid_sample` with zero padding, fades
/// to zero over that last voxel.
fn relative_mad(a: &Path, b: &Path, inside: &Path) -> f64 {
    let (a, b, m) = (load(a).unwrap(), load(b).unwrap(), load(inside).unwrap());
    assert!(a.grid().same_as(b.grid(), 1e-4), "grids differ: {} vs {}", a.grid(), b.grid());
    let (va, vb, vm) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), m.to_vec_f64().unwrap());
    let st = a.stats().unwrap();
    let idx: Vec<usize> = (0..va.len()).filter(|&i| vm[i] > 0.999).collect();
    assert!(idx.len() > va.len() / 2, "only {} of {} voxels sample inside the moving image", idx.len(), va.len());
    let mad = idx.iter().map(|&i| (va[i] - vb[i]).abs()).sum::<f64>() / idx.len() as f64;
    mad / (st.max - st.min)
}

/// The reference voxels whose sample point is inside the moving image: an all-ones moving image pushed
/// through the same transforms by `regsh apply`.
fn inside_mask(dir: &Path, moving: &Path, reference: &Path, transforms: &[&Path]) -> PathBuf {
    let ones = dir.join("ones.nii.gz");
    if !ones.exists() {
        let m = load(moving).unwrap();
        regsh::image::io::save(&Image::full(1.0, 1, m.grid().clone()).unwrap(), &ones).unwrap();
    }
    let out = dir.join("inside.nii.gz");
    regsh_apply(&ones, reference, transforms, &out);
    out
}

fn paths() -> (PathBuf, PathBuf) {
    (
        common::data("avg152/avg152T1.nii"),
        common::data("icbm152_2009a/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
    )
}

#[test]
fn simpleitk_reads_regsh_affine_files_and_resamples_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (moving, reference) = paths();
    let centre = load(&reference).unwrap().grid().centre();
    let t = Linear::from_params(
        LinearKind::Affine,
        &[5.0, -4.0, 3.0, 0.1, -0.05, 0.08, 1.05, 0.95, 1.02, 0.03, -0.02, 0.01],
        centre,
    )
    .unwrap();
    for name in ["a.tfm", "a.mat"] {
        let tf = dir.path().join(name);
        save_transform(&t, &tf, centre, None).unwrap();
        let (ours, theirs) =
            (dir.path().join(format!("regsh_{name}.nii.gz")), dir.path().join(format!("sitk_{name}.nii.gz")));
        regsh_apply(&moving, &reference, &[&tf], &ours);
        sitk(&[
            "resample",
            moving.to_str().unwrap(),
            reference.to_str().unwrap(),
            theirs.to_str().unwrap(),
            tf.to_str().unwrap(),
        ]);
        let inside = inside_mask(dir.path(), &moving, &reference, &[&tf]);
        let d = relative_mad(&ours, &theirs, &inside);
        eprintln!("{name}: mean |regsh - SimpleITK| = {d:.2e} of the range");
        assert!(d < 1e-3, "{name}: mean |regsh - SimpleITK| = {d} of the range");
        // And the transform really moved the image (the comparison is not between two copies of it).
        let identity = dir.path().join("identity.nii.gz");
        regsh_apply(&moving, &reference, &[], &identity);
        assert!(relative_mad(&ours, &identity, &inside) > 0.01);
    }
}

#[test]
fn regsh_reads_a_simpleitk_affine_and_resamples_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (moving, reference) = paths();
    let tf = dir.path().join("sitk.tfm");
    sitk(&["write-affine", tf.to_str().unwrap()]);
    let (ours, theirs) = (dir.path().join("regsh.nii.gz"), dir.path().join("sitk.nii.gz"));
    regsh_apply(&moving, &reference, &[&tf], &ours);
    sitk(&[
        "resample",
        moving.to_str().unwrap(),
        reference.to_str().unwrap(),
        theirs.to_str().unwrap(),
        tf.to_str().unwrap(),
    ]);
    let inside = inside_mask(dir.path(), &moving, &reference, &[&tf]);
    let d = relative_mad(&ours, &theirs, &inside);
    eprintln!("SimpleITK's .tfm: mean |regsh - SimpleITK| = {d:.2e} of the range");
    assert!(d < 1e-3, "mean |regsh - SimpleITK| = {d} of the range");
}

#[test]
fn simpleitk_reads_regsh_displacement_fields_and_composites_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let (moving, reference) = paths();
    let fixed = load(&reference).unwrap();
    // A smooth field of up to 4 mm on a 2 mm version of the reference grid.
    let g = fixed.grid().downsampled(2.0).unwrap();
    let [nx, ny, nz] = g.shape();
    let noise: Vec<f32> =
        (0..3 * g.num_voxels()).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * (1.0 + (i % 7) as f32)).collect();
    let s = smooth(&Image::from_vec(noise, 3, g.clone()).unwrap(), [4.0; 3], SigmaUnit::Voxels)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let max = s.iter().fold(0f32, |m, v| m.max(v.abs()));
    let field =
        Tensor::from_vec(s.iter().map(|v| v / max * 4.0).collect::<Vec<_>>(), (3, nz, ny, nx), &Device::Cpu).unwrap();
    let df = dir.path().join("warp.nii.gz");
    save_displacement(&Ddf::new(field, g).unwrap(), &df).unwrap();
    let centre = fixed.grid().centre();
    let aff = dir.path().join("aff.tfm");
    save_transform(
        &Linear::from_params(LinearKind::Rigid, &[3.0, 2.0, -1.0, 0.05, 0.1, -0.08], centre).unwrap(),
        &aff,
        centre,
        None,
    )
    .unwrap();
    for chain in [vec![df.as_path()], vec![df.as_path(), aff.as_path()], vec![aff.as_path(), df.as_path()]] {
        let (ours, theirs) = (dir.path().join("regsh.nii.gz"), dir.path().join("sitk.nii.gz"));
        regsh_apply(&moving, &reference, &chain, &ours);
        let mut args =
            vec!["resample", moving.to_str().unwrap(), reference.to_str().unwrap(), theirs.to_str().unwrap()];
        args.extend(chain.iter().map(|p| p.to_str().unwrap()));
        sitk(&args);
        let inside = inside_mask(dir.path(), &moving, &reference, &chain);
        let d = relative_mad(&ours, &theirs, &inside);
        eprintln!("{chain:?}: mean |regsh - SimpleITK| = {d:.2e} of the range");
        assert!(d < 1e-3, "{chain:?}: mean |regsh - SimpleITK| = {d} of the range");
        if chain.len() == 2 {
            // The order matters, and SimpleITK given the other order disagrees.
            let swapped = dir.path().join("sitk_swapped.nii.gz");
            let mut args =
                vec!["resample", moving.to_str().unwrap(), reference.to_str().unwrap(), swapped.to_str().unwrap()];
            args.extend(chain.iter().rev().map(|p| p.to_str().unwrap()));
            sitk(&args);
            let ds = relative_mad(&ours, &swapped, &inside);
            assert!(ds > 10.0 * d, "swapping the order changed little: {ds} vs {d}");
        }
    }
}
