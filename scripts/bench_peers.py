"""regsh against ANTsPy and SimpleITK on the same registrations, in one run (driven by bench-peers.sh).

Cases (fixed seed; every image, transform and label map made here with SimpleITK):

- affine-mono: ICBM 2009a T1 resampled to 2 mm is fixed; each moving image is the fixed one moved by a
  random affine T (rotations up to 15 degrees, translations up to 15 mm, scales 0.9-1.1, shears up to 0.05,
  about the image centre): moving(y) = fixed(T^-1(y)), so T maps fixed points to moving points.
  regsh: `register --transform affine --metric ncc`; ANTs: `Affine` (defaults); SimpleITK: see sitk_affine.
- affine-multi: avg152 T2 moved by a random affine is moving, avg152 T1 fixed (2 mm); regsh `--metric mi`,
  ANTs `Affine` with aff_metric="mattes".
- deformable: Colin27 T1 at 2 mm is fixed; D is Gaussian-smoothed white noise (sigma 10 mm, periodic, largest length 5 mm)
  and T(x) = x + D(x); the moving image is the fixed one resampled through T^-1 (SimpleITK's iterative
  inverse). ANTs `SyN` (defaults) and `regsh register --transform syn --metric lncc` (printed as "not
  available" while the binary does not accept it).

Measures, per tool: wall seconds of the registration alone (regsh: the whole `regsh register` process,
loading and writing included; ANTs: `ants.registration` on images already in memory; SimpleITK:
`Execute`); the mean displacement error |T_rec(x) - T(x)| in mm over the brain mask (ICBM: GM + WM > 0.5;
avg152: brainmask > 0.5; Colin27: AAL label > 0), from each tool's written transform read by SimpleITK;
Dice: for the affine cases the mean over GM and WM (thresholded at 0.5) of the moving-space maps warped by
T_rec vs by T; for the deformable case the mean Dice over the AAL labels of the moving-space labels
warped by T_rec (nearest) vs the fixed labels, and the same before registration ("none").

Output: a Markdown table (means over the N trials) on stdout and in --out.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import SimpleITK as sitk

try:
    import ants
except ImportError as e:  # the venv is made by bench-peers.sh
    sys.exit(f"bench_peers: ANTsPy is missing ({e}); run scripts/bench-peers.sh")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("REGSH_DATA", os.path.join(REPO, "data"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def resample_to_spacing(img, spacing, interp=sitk.sitkLinear):
    """The same field of view (edge to edge) on a grid of `spacing` mm."""
    size = [int(round(n * s / spacing)) for n, s in zip(img.GetSize(), img.GetSpacing())]
    d = np.array(img.GetDirection()).reshape(3, 3)
    edge = np.array(img.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))
    origin = edge + d @ np.array([spacing / 2.0] * 3)
    return sitk.Resample(img, size, sitk.Transform(), interp, origin.tolist(), [spacing] * 3, img.GetDirection(), 0.0,
                         sitk.sitkFloat32)


def random_affine(rng, centre):
    """A random affine about `centre` (LPS mm): M = Sh * S * R, translations up to 15 mm."""
    a = np.deg2rad(rng.uniform(-15, 15, 3))
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    s = np.diag(rng.uniform(0.9, 1.1, 3))
    h = rng.uniform(-0.05, 0.05, 3)
    sh = np.array([[1, h[0], h[1]], [0, 1, h[2]], [0, 0, 1]])
    t = sitk.AffineTransform(3)
    t.SetCenter(list(centre))
    t.SetMatrix((sh @ s @ rz @ ry @ rx).ravel().tolist())
    t.SetTranslation(rng.uniform(-15, 15, 3).tolist())
    return t


def grid_centre(img):
    return img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in img.GetSize()])


def displacement(tx, ref):
    """T(x) - x at the voxels of `ref`, as a (Z, Y, X, 3) array (LPS mm)."""
    f = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, ref.GetSize(), ref.GetOrigin(),
                                          ref.GetSpacing(), ref.GetDirection())
    return sitk.GetArrayFromImage(f)


def displacement_error(t_rec, t_true_disp, ref, mask):
    d = displacement(t_rec, ref) - t_true_disp
    return float(np.linalg.norm(d, axis=-1)[mask].mean())


def dice(a, b):
    s = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / s) if s else 1.0


def warp(img, ref, tx, interp=sitk.sitkLinear):
    return sitk.Resample(img, ref, tx, interp, 0.0)


def read_field_transform(path):
    f = sitk.Cast(sitk.ReadImage(path), sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(f)


def chain(paths_in_point_order):
    """The transform a point goes through in the order given (antsApplyTransforms' `-t A -t B`: B(A(x)))."""
    txs = []
    for p in paths_in_point_order:
        txs.append(read_field_transform(p) if p.endswith((".nii", ".nii.gz")) else sitk.ReadTransform(p))
    if len(txs) == 1:
        return txs[0]
    # SimpleITK's CompositeTransform applies its list last-first to a point.
    comp = sitk.CompositeTransform(txs[::-1])
    x = [1.0, -2.0, 3.0]
    y = x
    for t in txs:
        y = t.TransformPoint(y)
    assert np.allclose(comp.TransformPoint(x), y, atol=1e-6), "composite order"
    return comp


def run_regsh(args, fixed_path, moving_path, prefix, transform, metric, extra=()):
    cmd = [args.regsh, "--threads", str(args.threads), "register", "--fixed", fixed_path, "--moving", moving_path,
           "--transform", transform, "--metric", metric, "--out", prefix, *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        return None, secs, last.strip().lstrip("×x! ").strip()
    return prefix, secs, None


def sitk_affine(fixed, moving, seed):
    """SimpleITK: Mattes MI (50 bins, 20 % random samples), regular-step gradient descent (step 1 mm, 200
    iterations per level, scales from physical shift), 3 levels (shrink 4/2/1, smoothing 2/1/0 voxels),
    an affine transform started by the moments initializer (centres of mass)."""
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(0.2, seed)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=200,
                                               relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel([4, 2, 1])
    r.SetSmoothingSigmasPerLevel([2, 1, 0])
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    r.SetInitialTransform(init, inPlace=False)
    t0 = time.perf_counter()
    tx = r.Execute(fixed, moving)
    return tx, time.perf_counter() - t0


def affine_case(args, name, fixed, moving_src, mask, tissues, regsh_metric, ants_metric, rng, work):
    """Returns {tool: [(seconds, error, dice) or None per trial]}, and notes."""
    out = {"regsh": [], "ANTs": [], "SimpleITK": []}
    notes = []
    fixed_path = os.path.join(work, f"{name}_fixed.nii.gz")
    sitk.WriteImage(fixed, fixed_path)
    fixed_ants = ants.image_read(fixed_path)
    for trial in range(args.n):
        t_true = random_affine(rng, grid_centre(fixed))
        inv = t_true.GetInverse()
        moving = warp(moving_src, fixed, inv)
        moving_path = os.path.join(work, f"{name}_moving{trial}.nii.gz")
        sitk.WriteImage(moving, moving_path)
        true_disp = displacement(t_true, fixed)
        # Tissue maps in moving space, and warped back by the true transform.
        tissues_moving = [warp(t, fixed, inv) for t in tissues]
        truth = [sitk.GetArrayFromImage(warp(t, fixed, t_true)) > 0.5 for t in tissues_moving]

        def score(t_rec):
            err = displacement_error(t_rec, true_disp, fixed, mask)
            d = np.mean([dice(sitk.GetArrayFromImage(warp(t, fixed, t_rec)) > 0.5, tr)
                         for t, tr in zip(tissues_moving, truth)])
            return err, float(d)

        prefix, secs, why = run_regsh(args, fixed_path, moving_path, os.path.join(work, f"{name}{trial}_regsh"),
                                      "affine", regsh_metric)
        if prefix is None:
            out["regsh"].append(None)
            notes.append(f"regsh ({name}): {why}")
        else:
            out["regsh"].append((secs,) + score(sitk.ReadTransform(prefix + "_affine.tfm")))
        moving_ants = ants.image_read(moving_path)
        t0 = time.perf_counter()
        reg = ants.registration(fixed_ants, moving_ants, type_of_transform="Affine", aff_metric=ants_metric,
                                outprefix=os.path.join(work, f"{name}{trial}_ants_"))
        secs = time.perf_counter() - t0
        out["ANTs"].append((secs,) + score(chain(reg["fwdtransforms"])))
        tx, secs = sitk_affine(fixed, moving, args.seed + trial)
        out["SimpleITK"].append((secs,) + score(tx))
        for tool in out:
            log(f"{name} trial {trial} {tool}: {out[tool][-1]}")
    return out, notes


def smooth_field(rng, ref, sigma_mm=10.0, max_mm=5.0):
    """Gaussian-smoothed white noise on `ref`'s grid (each component, sigma `sigma_mm`, periodic boundary so
    the field's statistics are the same everywhere), scaled so its longest vector is `max_mm` (LPS mm)."""
    from scipy.ndimage import gaussian_filter

    shape = sitk.GetArrayViewFromImage(ref).shape
    sigma = [sigma_mm / s for s in ref.GetSpacing()[::-1]]
    d = np.stack([gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap") for _ in range(3)], axis=-1)
    d *= max_mm / np.linalg.norm(d, axis=-1).max()
    f = sitk.GetImageFromArray(d, isVector=True)
    f.CopyInformation(ref)
    return sitk.Cast(f, sitk.sitkVectorFloat64)


def label_dice(a, b, labels):
    return float(np.mean([dice(a == l, b == l) for l in labels]))


def deformable_case(args, fixed, labels, rng, work):
    out = {"none": [], "regsh": [], "regsh (40,20,0)": [], "ANTs": []}
    notes = []
    field = smooth_field(rng, fixed)
    true_disp = sitk.GetArrayFromImage(field)
    t_true = sitk.DisplacementFieldTransform(sitk.Image(field))
    inv_field = sitk.InvertDisplacementField(sitk.Image(field), maximumNumberOfIterations=100,
                                             maxErrorToleranceThreshold=0.01, meanErrorToleranceThreshold=1e-4,
                                             enforceBoundaryCondition=True)
    t_inv = sitk.DisplacementFieldTransform(inv_field)
    moving = warp(fixed, fixed, t_inv)
    labels_moving = warp(labels, fixed, t_inv, sitk.sitkNearestNeighbor)
    lab_fixed = sitk.GetArrayFromImage(labels)
    mask = lab_fixed > 0
    ids = [int(v) for v in np.unique(lab_fixed) if v != 0]
    # How well the true transform itself does (nearest-neighbour labels through T^-1 then T).
    truth_dice = label_dice(sitk.GetArrayFromImage(warp(labels_moving, fixed, t_true, sitk.sitkNearestNeighbor)),
                            lab_fixed, ids)
    notes.append(f"deformable: largest true displacement {np.linalg.norm(true_disp, axis=-1).max():.2f} mm, "
                 f"mean over the brain {np.linalg.norm(true_disp, axis=-1)[mask].mean():.2f} mm; "
                 f"AAL Dice through the true transform {truth_dice:.3f}")
    fixed_path = os.path.join(work, "deform_fixed.nii.gz")
    moving_path = os.path.join(work, "deform_moving.nii.gz")
    sitk.WriteImage(fixed, fixed_path)
    sitk.WriteImage(moving, moving_path)
    before = label_dice(sitk.GetArrayFromImage(labels_moving), lab_fixed, ids)
    out["none"].append((None, float(np.linalg.norm(true_disp, axis=-1)[mask].mean()), before))

    def score(t_rec):
        err = displacement_error(t_rec, true_disp, fixed, mask)
        warped = sitk.GetArrayFromImage(warp(labels_moving, fixed, t_rec, sitk.sitkNearestNeighbor))
        return err, label_dice(warped, lab_fixed, ids)

    # Two regsh runs: its defaults (dense levels 4, 2, 1 mm-factor with 100, 100, 50 iterations) and the
    # iteration budget of ANTsPy's SyN defaults (40, 20, 0: nothing at full resolution).
    for tool, extra in (("regsh", ()), ("regsh (40,20,0)", ("--dense-iterations", "40,20,0"))):
        name = "deform_" + tool.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "_")
        prefix, secs, why = run_regsh(args, fixed_path, moving_path, os.path.join(work, name), "syn", "lncc", extra)
        warp_file = None if prefix is None else prefix + "_warp.nii.gz"
        if prefix is None or not os.path.exists(warp_file):
            out.setdefault(tool, []).append(None)
            msg = f"{tool}: not available (deformable: {why or 'no PREFIX_warp.nii.gz written'})"
            log(msg)
            notes.append(msg)
        else:
            out.setdefault(tool, []).append((secs,) + score(chain([warp_file, prefix + "_affine.tfm"])))
    t0 = time.perf_counter()
    reg = ants.registration(ants.image_read(fixed_path), ants.image_read(moving_path), type_of_transform="SyN",
                            outprefix=os.path.join(work, "deform_ants_"))
    secs = time.perf_counter() - t0
    out["ANTs"].append((secs,) + score(chain(reg["fwdtransforms"])))
    for tool in out:
        log(f"deformable {tool}: {out[tool][-1]}")
    return out, notes


def rows_of(case, results):
    ants_s = [r[0] for r in results.get("ANTs", []) if r is not None]
    ants_mean = float(np.mean(ants_s)) if ants_s else None
    rows = []
    for tool, rs in results.items():
        ok = [r for r in rs if r is not None]
        if not ok:
            rows.append((case, tool, "not available", "-", "-", "-"))
            continue
        secs = [r[0] for r in ok if r[0] is not None]
        s = float(np.mean(secs)) if secs else None
        ratio = f"{s / ants_mean:.2f}" if s is not None and ants_mean else "-"
        rows.append((case, tool, f"{s:.2f}" if s is not None else "-", ratio,
                     f"{np.mean([r[1] for r in ok]):.3f}", f"{np.mean([r[2] for r in ok]):.4f}"))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regsh", required=True, help="the regsh binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=3, help="random affines per affine case")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--cases", default="affine-mono,affine-multi,deformable")
    ap.add_argument("--work", default=os.path.join(REPO, "target", "bench-peers-work"))
    ap.add_argument("--out", default=os.path.join(REPO, "target", "bench-peers.md"))
    args = ap.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    ants.config._random_seed = args.seed  # passed to antsRegistration as --random-seed
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    rng = np.random.default_rng(args.seed)
    cases = args.cases.split(",")
    rows, notes = [], []

    if "affine-mono" in cases:
        icbm = os.path.join(DATA, "icbm152_2009a")
        t1 = resample_to_spacing(sitk.ReadImage(os.path.join(icbm, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
                                                sitk.sitkFloat32), 2.0)
        tissues = [warp(sitk.ReadImage(os.path.join(icbm, f"mni_icbm152_{t}_tal_nlin_sym_09a_converted.nii.gz"),
                                       sitk.sitkFloat32), t1, sitk.Transform()) for t in ("gm", "wm")]
        mask = (sitk.GetArrayFromImage(tissues[0]) + sitk.GetArrayFromImage(tissues[1])) > 0.5
        res, n = affine_case(args, "mono", t1, t1, mask, tissues, "ncc", "mattes", rng, args.work)
        rows += rows_of("affine mono (ICBM T1, ncc)", res)
        notes += n

    if "affine-multi" in cases:
        avg = os.path.join(DATA, "avg152")
        rd = lambda f: sitk.ReadImage(os.path.join(avg, f), sitk.sitkFloat32)  # noqa: E731
        t1, t2 = rd("avg152T1.nii"), rd("avg152T2.nii")
        tissues = [rd("grey.nii"), rd("white.nii")]
        mask = sitk.GetArrayFromImage(rd("brainmask.nii")) > 0.5
        res, n = affine_case(args, "multi", t1, t2, mask, tissues, "mi", "mattes", rng, args.work)
        rows += rows_of("affine multi (avg152 T2 -> T1, mi)", res)
        notes += n

    if "deformable" in cases:
        col = os.path.join(DATA, "colin27")
        t1 = resample_to_spacing(sitk.ReadImage(os.path.join(col, "ch2.nii.gz"), sitk.sitkFloat32), 2.0)
        labels = warp(sitk.ReadImage(os.path.join(col, "aal.nii.gz")), t1, sitk.Transform(), sitk.sitkNearestNeighbor)
        labels = sitk.Cast(labels, sitk.sitkInt32)
        res, n = deformable_case(args, t1, labels, rng, args.work)
        rows += rows_of("deformable (Colin27 T1, lncc)", res)
        notes += n

    head = ["case", "tool", "seconds", "ratio to ANTs", "displacement error mm", "Dice"]
    lines = [f"Threads: {args.threads}; affine trials: {args.n}; seed {args.seed}; regsh {args.regsh}; "
             f"ANTsPy {ants.__version__}; SimpleITK {sitk.Version.VersionString()}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    meta = {"rows": rows, "notes": notes}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
