//! Help metadata of every builtin: signature, one-line summary, keyword arguments with defaults and
//! units, and a runnable example (each example runs as a test, on the real data where it loads data,
//! and checks its result with `assert`). The keyword arguments listed here are the only ones a builtin
//! accepts ([`super::options::Opts`] checks them), so documentation and behaviour cannot drift apart.
//!
//! Front ends use [`help`] (`:help NAME`) and [`names`] (completion).

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

const fn o(name: &'static str, default: &'static str, doc: &'static str) -> Opt {
    Opt { name, default, doc }
}

const PARZEN: [Opt; 5] = [
    o("bins", "32", "histogram bins (integer, 2-1024)"),
    o("sigma", "0.5", "Parzen window width, in bin widths"),
    o("range_fixed", "min..max", "[lo, hi] intensities of the fixed image mapped onto the bins"),
    o("range_moving", "min..max", "[lo, hi] intensities of the moving image mapped onto the bins"),
    o("mask", "-", "image on the fixed grid: only non-zero voxels count"),
];
const PARZEN_PATCH: [Opt; 6] =
    [PARZEN[0], PARZEN[1], PARZEN[2], PARZEN[3], o("patch", "16", "patch side, voxels"), PARZEN[4]];
const CR_PATCH: [Opt; 7] = [
    PARZEN[0],
    PARZEN[1],
    PARZEN[2],
    PARZEN[3],
    o("patch", "16", "patch side, voxels"),
    o("shifted", "true", "add a second pass moved by half a patch"),
    PARZEN[4],
];
const LNCC: [Opt; 3] = [
    o("window", "9", "box window side, voxels (odd)"),
    o("gaussian", "-", "Gaussian window sigma, voxels (instead of the box)"),
    PARZEN[4],
];
const MASK_ONLY: [Opt; 1] = [PARZEN[4]];
const METRIC_OPTS: [Opt; 8] = [
    PARZEN[0],
    PARZEN[1],
    PARZEN[2],
    PARZEN[3],
    o("patch", "16", "patch side, voxels (patch measures)"),
    o("shifted", "true", "second pass moved by half a patch (cr_patch)"),
    o("window", "9", "box window side, voxels (lncc)"),
    o("gaussian", "-", "Gaussian window sigma, voxels (lncc)"),
];
const ISO_OPTS: [Opt; 19] = [
    o("metric", "mi", "similarity measure (a metric value or name)"),
    o("scales", "3", "pyramid levels, factors 2^(scales-1) .. 1"),
    o("iterations", "100,..,60,40", "iterations per level, coarse to fine (one number for all)"),
    o("sigmas", "factor/3", "Gaussian sigma per level, voxels of the full-resolution image"),
    o("lr", "0.25*factor+0.25", "Adam learning rate per level (one number for all), mm per step for translations"),
    o("optimizer", "adam()", "adam(lr=..) (its lr replaces the schedule's), lbfgs() or powell()"),
    o("schedule", "-", "a whole schedule(...) value instead of scales / iterations / sigmas / lr"),
    o(
        "transform",
        "the state's",
        "a linear kind to optimize, carrying the parameters over (rigid -> affine); or a dense model after \
         the linear part: syn (greedy field), svf, bspline (then iterations default 100,100,50 and lr is the \
         largest step in mm, default half a voxel)",
    ),
    o("mask", "-", "fixed-grid mask: only non-zero voxels count"),
    o("tolerance", "1e-5", "windowed-slope convergence tolerance (relative); 0 runs every iteration"),
    o("seed", "0", "seed of the random sample points (global measures)"),
    o("points", "5000", "random off-grid points per iteration (global measures; fresh each iteration)"),
    o("polish", "0", "points of a final L-BFGS refinement at full resolution (global measures); 0: none"),
    o("polish_iterations", "20", "most L-BFGS iterations of the final refinement"),
    o("grad_sigma", "3", "dense: Gaussian sigma (voxels) applied to each gradient"),
    o("field_sigma", "1", "dense: Gaussian sigma (voxels) applied to the field after each step"),
    o("regularizer", "none (bspline: bending:0.01)", "dense: diffusion:W, bending:W or none"),
    o("control_spacing", "10", "bspline: control point spacing, mm"),
    o("steps", "7", "svf: scaling-and-squaring steps"),
];

macro_rules! metric_help {
    ($name:literal, $summary:literal, $opts:expr, $example:literal) => {
        Help {
            name: $name,
            domain: "metrics",
            signature: concat!(
                $name,
                "(fixed, moving) -> float; ",
                $name,
                "(keyword arguments) -> Metric; bare `",
                $name,
                "` is the Metric value"
            ),
            summary: $summary,
            options: &$opts,
            example: $example,
        }
    };
}

/// Every builtin's help, by domain.
pub static HELP: &[Help] = &[
    // ---------------------------------------------------------------- image
    Help {
        name: "load",
        domain: "image",
        signature: "load(path) -> Image",
        summary: "Read a NIfTI image (.nii, .nii.gz, .hdr/.img); a session caches it by path and modification time",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(t1.shape == [91, 109, 91], \"avg152 is 91 x 109 x 91\");\nassert(t1.spacing == [2.0, 2.0, 2.0], \"2 mm voxels\");",
    },
    Help {
        name: "save",
        domain: "image",
        signature: "save(image, path)",
        summary: "Write an image as NIfTI (atomically; never over a loaded input unless overwrite=true)",
        options: &[
            o("dtype", "the image's", "datatype on disk: uint8, int16, float32, ..."),
            o("overwrite", "false", "allow replacing a file loaded as an input"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nsave(t1 * 0.5, \"target/dsl_help_save.nii.gz\", dtype=\"float32\");\nlet back = load(\"target/dsl_help_save.nii.gz\");\nassert(back.dtype == \"float32\", \"saved as float32\");\nassert(abs(back.max - t1.max * 0.5) < 1e-3, \"values kept\");",
    },
    Help {
        name: "info",
        domain: "image",
        signature: "info(image) -> map",
        summary: "Grid, datatype and value statistics of an image as a map (shape, spacing, origin, direction, orientation, dtype, channels, min, max, mean)",
        options: &[],
        example: "let i = info(load(\"data/avg152/avg152T1.nii\"));\nassert(i.shape == [91, 109, 91] && i.orientation == \"LAS\", \"grid\");\nassert(i.dtype == \"float32\" && i.min == 0.0 && i.max == 1.0, \"uint8 on disk, scaled to [0, 1] by the header\");",
    },
    Help {
        name: "resample",
        domain: "image",
        signature: "resample(image, onto) -> Image   (onto: an image or a grid)",
        summary: "Resample an image onto another grid through world space",
        options: &[
            o("interpolation", "linear", "linear or nearest"),
            o("padding", "zero", "outside the image: zero or border"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet small = resample(t1, t1.grid.downsampled(2.0));\nassert(small.shape == [46, 55, 46], \"half the voxels per axis\");\nassert(abs(small.spacing[0] - 2.0 * 91.0 / 46.0) < 1e-9, \"the same extent\");",
    },
    Help {
        name: "smooth",
        domain: "image",
        signature: "smooth(image, sigma) -> Image   (sigma: a number or [x, y, z])",
        summary: "Gaussian smoothing (separable, border replicated, cut at 4 sigma)",
        options: &[o("unit", "mm", "unit of sigma: mm or voxels")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet s = smooth(t1, 4.0);\nassert(abs(s.mean - t1.mean) < 0.01, \"smoothing keeps the mean\");\nassert(s.max < t1.max, \"and lowers the peaks\");",
    },
    Help {
        name: "normalize",
        domain: "image",
        signature: "normalize(image) -> Image",
        summary: "Intensity normalization: min-max to [0, 1], percentiles clipped to [0, 1], or z-score",
        options: &[
            o("method", "minmax", "minmax, percentile or zscore"),
            o("lo", "1", "lower percentile (0-100) for method=\"percentile\""),
            o("hi", "99", "upper percentile (0-100) for method=\"percentile\""),
            o("mask", "-", "statistics over the non-zero voxels of this image only"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = normalize(t1);\nassert(n.min == 0.0 && n.max == 1.0, \"min-max\");\nlet z = normalize(t1, method=\"zscore\");\nassert(abs(z.mean) < 1e-4, \"z-score has mean 0\");",
    },
    Help {
        name: "crop",
        domain: "image",
        signature: "crop(image, start, size) -> Image   (voxels, [x, y, z])",
        summary: "Crop to a box of voxels; kept voxels keep their world positions",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet c = crop(t1, [10, 20, 30], [40, 50, 20]);\nassert(c.shape == [40, 50, 20], \"box size\");\nassert(c.origin[1] == t1.origin[1] + 40.0, \"origin moved by 20 voxels of 2 mm along y\");",
    },
    Help {
        name: "pad",
        domain: "image",
        signature: "pad(image, before, after) -> Image; pad(image, both) -> Image   (voxels: a number or [x, y, z])",
        summary: "Pad with a constant; original voxels keep their world positions",
        options: &[o("value", "0", "the padding value")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet p = pad(t1, 2, [0, 1, 3], value=-1);\nassert(p.shape == [93, 112, 96], \"padded shape\");\nassert(p.min == -1.0, \"padding value\");",
    },
    Help {
        name: "threshold",
        domain: "image",
        signature: "threshold(image, lo, hi) -> Image",
        summary: "A 0 / 1 mask of the voxels with lo <= value <= hi (see also img > x)",
        options: &[],
        example: "let b = threshold(load(\"data/avg152/brainmask.nii\"), 0.5, 1e9);\nassert(b.max == 1.0 && b.min == 0.0, \"a mask\");\nassert(b.mean > 0.1 && b.mean < 0.5, \"the brain fills part of the box\");",
    },
    Help {
        name: "grid",
        domain: "image",
        signature: "grid(image) -> Grid   (also image.grid)",
        summary: "The image's grid: shape, spacing (mm), origin (mm), direction; grid.downsampled(f)",
        options: &[],
        example: "let g = grid(load(\"data/avg152/avg152T1.nii\"));\nassert(g.shape == [91, 109, 91] && g.spacing == [2.0, 2.0, 2.0], \"grid\");\nassert(g.direction[0][0] == -1.0, \"x runs right to left (LAS)\");",
    },
    Help {
        name: "operators",
        domain: "image",
        signature: "a + b, a - b, a * b, a / b, -a (images on one grid, or an image and a number); a > x, a >= x, a < x, a <= x -> mask",
        summary: "Voxel-wise arithmetic on images, and masks (0 / 1 uint8 images) from comparisons",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet d = t1 * 2.0 - t1;\nassert(d.max == t1.max && d.mean == t1.mean, \"2a - a = a\");\nlet m = t1 > 0.5;\nassert(m.max == 1.0 && m.dtype == \"uint8\", \"a mask\");\nassert(abs((t1 + 1).mean - t1.mean - 1.0) < 1e-4, \"plus a number\");",
    },
    // ---------------------------------------------------------------- spatial
    Help {
        name: "affine",
        domain: "spatial",
        signature: "affine() -> Transform; affine(params) -> Transform   (12 params: tx ty tz mm, rx ry rz rad, sx sy sz, hxy hxz hyz)",
        summary: "A 12-parameter affine x' = M (x - c) + c + t, M = shear * scale * Rz Ry Rx (identity without params)",
        options: &[
            o("centre", "[0, 0, 0]", "centre of rotation and scaling, mm"),
            o("about", "-", "an image or grid whose centre is the centre"),
        ],
        example: "let a = affine([1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0]);\nassert(a.matrix[0][0] == 2.0 && a.matrix[0][3] == 1.0, \"x scaled by 2, moved by 1 mm\");\nassert(a.params.len() == 12, \"12 parameters\");",
    },
    Help {
        name: "rigid",
        domain: "spatial",
        signature: "rigid(params) -> Transform   (tx ty tz mm, rx ry rz rad)",
        summary: "A rigid transform (translation and Euler rotations about the centre)",
        options: &[o("centre", "[0, 0, 0]", "centre of rotation, mm"), o("about", "-", "an image or grid whose centre is the centre")],
        example: "let r = rigid([0.0, 0.0, 0.0, 0.0, 0.0, PI() / 2.0]);\nassert(abs(r.matrix[1][0] - 1.0) < 1e-6, \"rz = 90 degrees maps x to y\");\nassert(abs(r.inverse().matrix[0][1] - 1.0) < 1e-6, \"its inverse maps y to x\");",
    },
    Help {
        name: "translation",
        domain: "spatial",
        signature: "translation([tx, ty, tz]) -> Transform   (mm)",
        summary: "A translation in world mm (fixed points to moving points)",
        options: &[],
        example: "let t = translation([1.0, -2.0, 3.0]);\nassert(t.params == [1.0, -2.0, 3.0], \"params\");\nassert(compose(t, t).matrix[1][3] == -4.0, \"twice\");",
    },
    Help {
        name: "svf",
        domain: "spatial",
        signature: "svf(onto) -> Transform   (onto: an image or grid)",
        summary: "A zero stationary velocity field on a grid, integrated by scaling and squaring (deformable stages come later)",
        options: &[o("steps", "7", "scaling-and-squaring steps")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet v = svf(t1);\nassert(v.kind == \"svf\", \"an svf\");\nassert(folding(v, t1) == 0.0, \"the zero field does not fold\");",
    },
    Help {
        name: "bspline",
        domain: "spatial",
        signature: "bspline(onto) -> Transform   (onto: an image or grid)",
        summary: "A zero cubic B-spline free-form deformation on a grid's control lattice",
        options: &[o("spacing", "10", "control-point spacing, mm (a number or [x, y, z])")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet b = bspline(t1, spacing=20.0);\nassert(b.kind == \"bspline\", \"a bspline\");\nassert(jacobian(b, t1).min == 1.0, \"identity: det J = 1\");",
    },
    Help {
        name: "load_transform",
        domain: "spatial",
        signature: "load_transform(path) -> Transform",
        summary: "Read an ITK .tfm/.txt, ANTs .mat or displacement-field .nii(.gz) transform; \"[path,1]\" inverts",
        options: &[],
        example: "let a = translation([1.0, 2.0, 3.0]);\nsave_transform(a, \"target/dsl_help_t.tfm\");\nlet b = load_transform(\"target/dsl_help_t.tfm\");\nassert(abs(b.matrix[2][3] - 3.0) < 1e-6, \"round trip\");",
    },
    Help {
        name: "save_transform",
        domain: "spatial",
        signature: "save_transform(transform, path)",
        summary: "Write a transform: linear as ITK .tfm / ANTs .mat (LPS on disk), dense as a displacement field .nii.gz",
        options: &[o("grid", "-", "an image or grid to sample a dense transform on (needed for .nii / .nii.gz)")],
        example: "let r = rigid([2.0, 0.0, 0.0, 0.1, 0.0, 0.0], centre=[10.0, 0.0, 0.0]);\nsave_transform(r, \"target/dsl_help_r.mat\");\nlet back = load_transform(\"target/dsl_help_r.mat\");\nassert(abs(back.matrix[1][1] - r.matrix[1][1]) < 1e-6, \"same matrix\");",
    },
    Help {
        name: "compose",
        domain: "spatial",
        signature: "compose(a, b) -> Transform   (also a.compose(b))",
        summary: "The transform applying a then b to points: x -> b(a(x)) (the order of `regsh apply -t a -t b`)",
        options: &[],
        example: "let s = affine([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]);\nlet t = translation([1.0, 0.0, 0.0]);\nassert(compose(t, s).matrix[0][3] == 2.0, \"scale after the shift\");\nassert(compose(s, t).matrix[0][3] == 1.0, \"shift after the scale\");",
    },
    Help {
        name: "inverse",
        domain: "spatial",
        signature: "inverse(transform) -> Transform   (also t.inverse())",
        summary: "The inverse transform (exact for linear ones, fixed-point iteration for dense fields)",
        options: &[],
        example: "let a = affine([1.0, 2.0, 3.0, 0.1, 0.2, 0.3, 1.1, 0.9, 1.0, 0.05, 0.0, 0.0]);\nlet i = compose(a, inverse(a)).matrix;\nassert(abs(i[0][0] - 1.0) < 1e-5 && abs(i[0][3]) < 1e-4 && abs(i[1][2]) < 1e-5, \"a then its inverse is the identity\");",
    },
    Help {
        name: "warp",
        domain: "spatial",
        signature: "warp(image, transform, onto) -> Image; warp(state) -> Image",
        summary: "Resample a moving image through a transform onto a grid; warp(state) gives a registration's warped moving image",
        options: &[
            o("interpolation", "linear", "linear, nearest or label"),
            o("padding", "zero", "outside the moving image: zero or border"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet w = warp(t1, translation([0.0, 4.0, 0.0]), t1);\nassert(w.value(45, 50, 45) == t1.value(45, 52, 45), \"4 mm along y is 2 voxels\");",
    },
    Help {
        name: "jacobian",
        domain: "spatial",
        signature: "jacobian(transform, onto) -> Image",
        summary: "The Jacobian determinant of a transform at the voxels of a grid (det <= 0 marks folding)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet a = affine([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.5, 0.0, 0.0, 0.0]);\nassert(abs(jacobian(a, t1).mean - 3.0) < 1e-5, \"det = 2 * 1 * 1.5\");",
    },
    Help {
        name: "folding",
        domain: "metrics",
        signature: "folding(transform, onto) -> float",
        summary: "Folding penalty: the mean over the grid of relu(-det J) (0 without folding)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(folding(rigid([1.0, 2.0, 3.0, 0.1, 0.2, 0.3]), t1) == 0.0, \"a rigid map does not fold\");\nlet flip = affine([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);\nassert(abs(folding(flip, t1) - 1.0) < 1e-5, \"a reflection folds everywhere\");",
    },
    // ---------------------------------------------------------------- metrics
    metric_help!(
        "mi",
        "Parzen-window mutual information (nats) of the fixed and moving images on one grid",
        PARZEN,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(mi(t1, t1) > mi(t1, t2), \"an image shares most information with itself\");\nassert(mi(t1, t2, bins=16) > 0.3, \"T1 and T2 are aligned\");\nassert(mi(bins=64).to_string() == \"mi(bins=64, sigma=0.5)\", \"a configured metric value\");"
    ),
    metric_help!(
        "nmi",
        "Normalized mutual information (H(F) + H(M)) / H(F, M), in [1, 2]",
        PARZEN,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet v = nmi(t1, t1);\nassert(v > 1.4 && v <= 2.0, \"in [1, 2], high for an image with itself\");\nassert(v > nmi(t1, load(\"data/avg152/avg152T2.nii\")), \"higher than with another modality\");"
    ),
    metric_help!(
        "cr",
        "Symmetric Parzen correlation ratio (eta(M|F) + eta(F|M)) / 2, in [0, 1]",
        PARZEN,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(cr(t1, t1) > 0.95, \"near 1 for an image with itself\");\nassert(cr(t1, t2) > cr(t1, warp(t2, translation([6.0, 0.0, 0.0]), t1)), \"misalignment lowers it\");"
    ),
    metric_help!(
        "cr_patch",
        "Mean of per-patch symmetric correlation ratios (two passes), in [0, 1]",
        CR_PATCH,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet v = cr_patch(t1, t2, patch=8);\nassert(v > 0.0 && v <= 1.0, \"in [0, 1]\");\nassert(cr_patch(t1, t1) > v, \"highest for identical images\");"
    ),
    metric_help!(
        "mi_patch",
        "Mean of per-patch Parzen mutual information (nats)",
        PARZEN_PATCH,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(mi_patch(t1, t1) > mi_patch(t1, t2), \"highest for identical images\");"
    ),
    metric_help!(
        "lncc",
        "Local normalized cross-correlation squared (VoxelMorph form), in [0, 1]",
        LNCC,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet same = lncc(t1, t1, window=5);\nassert(same > 0.6 && same <= 1.0, \"1 in windows with structure, 0 in the flat background\");\nassert(same > lncc(t1, load(\"data/avg152/avg152T2.nii\"), window=5), \"highest for identical images\");"
    ),
    metric_help!(
        "ncc",
        "Global normalized cross-correlation (Pearson), in [-1, 1]",
        MASK_ONLY,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(abs(ncc(t1, t1 * 2.0 + 5.0) - 1.0) < 1e-4, \"1 under a linear intensity map (f32 sums)\");\nassert(abs(ncc(t1, -t1) + 1.0) < 1e-4, \"-1 when inverted\");"
    ),
    metric_help!(
        "ssd",
        "Mean squared difference (also `mse`)",
        MASK_ONLY,
        "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(ssd(t1, t1) == 0.0, \"0 for identical images\");\nassert(abs(ssd(t1, t1 + 2.0) - 4.0) < 1e-4, \"a constant offset of 2 gives 4\");"
    ),
    Help {
        name: "metric",
        domain: "metrics",
        signature: "metric(name) -> Metric",
        summary: "A similarity measure by name (aliases, \"did you mean\") with options, to pass to iso / register",
        options: &METRIC_OPTS,
        example: "let m = metric(\"mi\", bins=48);\nassert(m.name == \"mi\" && m.to_string() == \"mi(bins=48, sigma=0.5)\", \"configured\");\nassert(metric(\"mse\").name == \"ssd\", \"an alias\");",
    },
    Help {
        name: "measure",
        domain: "metrics",
        signature: "measure(metric, fixed, moving) -> float   (also metric.measure(fixed, moving))",
        summary: "The value of a Metric value on two images on one grid",
        options: &MASK_ONLY,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nassert(measure(mi, t1, t2) == mi(t1, t2), \"the same measure\");\nassert(cr_patch.measure(t1, t1) == cr_patch(t1, t1), \"method form\");",
    },
    Help {
        name: "dice",
        domain: "metrics",
        signature: "dice(a, b) -> float   (label maps on one grid)",
        summary: "Mean Dice overlap over the labels present (or of masks above a threshold)",
        options: &[
            o("labels", "all non-zero", "the labels to score (a list of integers)"),
            o("threshold", "-", "score the masks a > threshold and b > threshold instead of labels"),
        ],
        example: "let wm = load(\"data/avg152/white.nii\");\nlet gm = load(\"data/avg152/grey.nii\");\nassert(dice(wm > 0.5, wm > 0.5) == 1.0, \"identical masks\");\nassert(dice(wm, gm, threshold=0.5) < 0.2, \"white and grey matter barely overlap\");",
    },
    Help {
        name: "hd95",
        domain: "metrics",
        signature: "hd95(a, b) -> float   (label maps on one grid; mm)",
        summary: "Mean over labels of the 95th percentile symmetric surface distance (medpy's HD95), mm",
        options: &[o("labels", "all non-zero", "the labels to score (a list of integers)")],
        example: "let b = threshold(load(\"data/avg152/brainmask.nii\"), 0.5, 1e9);\nassert(hd95(b, b) == 0.0, \"0 for identical masks\");\nlet moved = warp(b, translation([4.0, 0.0, 0.0]), b, interpolation=\"nearest\");\nassert(abs(hd95(b, moved) - 4.0) < 1e-6, \"a 4 mm shift\");",
    },
    Help {
        name: "ssim",
        domain: "metrics",
        signature: "ssim(a, b) -> float",
        summary: "Mean structural similarity (Gaussian window sigma 1.5 voxels, scikit-image's definition)",
        options: &[o("data_range", "max(a) - min(a)", "the intensity range R")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nassert(abs(ssim(t1, t1) - 1.0) < 1e-9, \"1 for identical images\");\nassert(ssim(t1, smooth(t1, 4.0), data_range=1.0) < 0.95, \"blurring lowers it\");",
    },
    Help {
        name: "psnr",
        domain: "metrics",
        signature: "psnr(reference, test) -> float   (dB)",
        summary: "Peak signal-to-noise ratio 10 log10(R^2 / MSE), dB",
        options: &[o("data_range", "max(reference) - min(reference)", "the intensity range R")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet v = psnr(t1, t1 + 0.01, data_range=1.0);\nassert(abs(v - 40.0) < 1e-3, \"R 1, MSE 1e-4: 40 dB\");",
    },
    Help {
        name: "displacement_error",
        domain: "metrics",
        signature: "displacement_error(a, b, onto) -> float   (mm)",
        summary: "Mean over the voxels of a grid of |a(x) - b(x)|: how far two transforms disagree, mm",
        options: &[o("mask", "-", "only the non-zero voxels of this image (on the grid)")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet e = displacement_error(translation([3.0, 4.0, 0.0]), affine(), t1);\nassert(abs(e - 5.0) < 1e-5, \"a 3-4-5 shift\");",
    },
    Help {
        name: "jacobian_stats",
        domain: "metrics",
        signature: "jacobian_stats(det) -> map   (det: a Jacobian determinant image)",
        summary: "Folding fraction, std of log det, min, max, mean of a Jacobian determinant image",
        options: &[o("mask", "-", "only the non-zero voxels of this image")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet s = jacobian_stats(jacobian(affine(), t1));\nassert(s.fraction_nonpositive == 0.0 && s.mean == 1.0, \"identity\");",
    },
    // ---------------------------------------------------------------- optim
    Help {
        name: "schedule",
        domain: "optim",
        signature: "schedule() -> Schedule",
        summary: "A multi-scale schedule: pyramid factors 2^(scales-1)..1, iterations, sigmas and learning rates per level",
        options: &[
            o("scales", "3", "pyramid levels (1-8)"),
            o("iterations", "100,..,60,40", "iterations per level, coarse to fine (one number for all)"),
            o("sigmas", "factor/3", "Gaussian sigma per level, voxels of the full-resolution image"),
            o("lr", "0.25*factor+0.25", "learning rate per level (one number for all), mm per step"),
        ],
        example: "let s = schedule(scales=3, iterations=[50, 20, 10], lr=0.5);\nassert(s.factors == [4.0, 2.0, 1.0] && s.iterations == [50, 20, 10], \"levels\");\nassert(s.lr == [0.5, 0.5, 0.5], \"one rate for all\");",
    },
    Help {
        name: "adam",
        domain: "optim",
        signature: "adam() -> Optimizer",
        summary: "The Adam optimizer for iso (optimizer=adam(lr=0.5)); its lr replaces the schedule's",
        options: &[o("lr", "the schedule's", "learning rate, mm per step for translations")],
        example: "let a = adam(lr=0.5);\nassert(a.lr == 0.5 && a.to_string() == \"adam(lr=0.5)\", \"configured\");",
    },
    Help {
        name: "lbfgs",
        domain: "optim",
        signature: "lbfgs() -> Optimizer",
        summary: "L-BFGS with a strong-Wolfe line search for iso (optimizer=lbfgs()): one fixed objective per level (points drawn once), iterations bound its iterations",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([3.0, -2.0, 1.0]), t1);\nlet r = init(moved, t1, transform=\"translation\", method=\"identity\") |> iso(ssd, scales=2, iterations=[20, 10], optimizer=lbfgs());\nassert(displacement_error(r.transform, translation([-3.0, 2.0, -1.0]), t1) < 0.3, \"the shift is recovered\");\nassert(lbfgs().name == \"lbfgs\", \"named\");",
    },
    Help {
        name: "powell",
        domain: "optim",
        signature: "powell() -> Optimizer",
        summary: "Powell's derivative-free method (Brent line searches) for iso (optimizer=powell()), as seed 003 uses for measures without gradients; iterations bound its sweeps",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([3.0, -2.0, 1.0]), t1);\nlet r = init(moved, t1, transform=\"translation\", method=\"identity\") |> iso(ssd, scales=2, iterations=[4, 2], optimizer=powell());\nassert(displacement_error(r.transform, translation([-3.0, 2.0, -1.0]), t1) < 0.3, \"the shift is recovered without a gradient\");",
    },
    Help {
        name: "seed",
        domain: "optim",
        signature: "seed(n)",
        summary: "Seed the random generators of the compute device (for reproducible stochastic steps)",
        options: &[],
        example: "seed(42);\nassert(true, \"seeded\");",
    },
    Help {
        name: "device",
        domain: "optim",
        signature: "device() -> string",
        summary: "The compute device: cpu, or cuda:0 when built with the cuda feature on a GPU machine",
        options: &[],
        example: "let d = device();\nassert(d == \"cpu\" || d == \"cuda:0\", \"a device name\");",
    },
    // ---------------------------------------------------------------- pipeline
    Help {
        name: "init",
        domain: "pipeline",
        signature: "init(moving, fixed) -> RegState   (MOVING first)",
        summary: "Start a registration: the identity of a transform kind moved by an initialization",
        options: &[
            o("transform", "affine", "translation, rigid, similarity, affine"),
            o("method", "moments", "identity, centres (grid centres) or moments (centres of mass)"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([-6.0, 0.0, 0.0]), t1);\nlet s = init(moved, t1, transform=\"rigid\");\nassert(s.transform.kind == \"rigid\" && s.stages.len() == 0, \"no stage run yet\");\nassert(abs(s.params[0] - 6.0) < 1.0, \"centres of mass give the shift: moved(x) = t1(x - 6), so T(x) = x + 6\");",
    },
    Help {
        name: "iso",
        domain: "pipeline",
        signature: "iso(state) -> RegState; iso(state, metric) -> RegState; iso(metric) -> Stage (apply later with |>)",
        summary: "Multi-scale instance-specific optimization of the state's transform (Adam over a Gaussian pyramid)",
        options: &ISO_OPTS,
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet moved = warp(t1, translation([3.0, -2.0, 0.0]), t1);\nlet r = init(moved, t1, transform=\"translation\", method=\"identity\") |> iso(ssd, scales=2, iterations=[40, 20]);\nassert(displacement_error(r.transform, translation([-3.0, 2.0, 0.0]), t1) < 0.3, \"moved(x) = t1(x + t): recovered T(x) = x - t\");\nassert(r.loss.len() == 2 && r.loss[1] < 1.0, \"one loss per level\");\nlet refine = iso(ssd, scales=1, iterations=[5]);\nassert(type_of(refine) == \"Stage\", \"without a state, a stage to apply later\");\nassert((r |> refine).stages.len() == 2, \"applied by |>\");",
    },
    Help {
        name: "register",
        domain: "pipeline",
        signature: "register(moving, fixed) -> RegState   (MOVING first)",
        summary: "A recipe: translation, rigid, similarity, affine (rigid then affine), or affine then a dense stage: syn (greedy field), svf, bspline",
        options: &[
            o("transform", "affine", "translation, rigid, similarity, affine, syn, svf, bspline"),
            o("metric", "mi", "similarity measure (a metric value or name); in a dense recipe the linear stages use mi when it is local (lncc, *_patch), a linear recipe uses it as given"),
            o("scales", "3", "pyramid levels of the linear stages"),
            o("iterations", "100,..,60,40", "iterations per level of the linear stages, coarse to fine"),
            o("lr", "0.25*factor+0.25", "learning rate of the linear stages (one number for all levels), mm per step"),
            o("points", "5000", "linear stages: random off-grid points per Adam iteration (global measures)"),
            o("polish", "50000", "linear: points of the final L-BFGS refinement of the last stage (global measures); 0: none"),
            o("polish_iterations", "20", "linear: most L-BFGS iterations of the final refinement"),
            o("seed", "0", "seed of the random sample points"),
            o("init", "moments", "identity, centres or moments"),
            o("mask", "-", "fixed-grid mask: only non-zero voxels count"),
            o("dense_iterations", "100,100,50", "iterations per level of the dense stage (factors 2^(n-1) .. 1)"),
            o("grad_sigma", "3", "dense: Gaussian sigma (voxels) applied to each gradient"),
            o("field_sigma", "1", "dense: Gaussian sigma (voxels) applied to the field after each step"),
            o("regularizer", "none (bspline: bending:0.01)", "dense: diffusion:W, bending:W or none"),
            o("control_spacing", "10", "bspline: control point spacing, mm"),
            o("seed", "0", "seed of the random sample points"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet r = register(t2, t1, transform=\"rigid\", metric=mi, scales=2, iterations=[20, 10]);\nassert(r.stages.len() == 1 && r.transform.kind == \"rigid\", \"one rigid stage\");\nassert(displacement_error(r.transform, affine(), t1) < 1.0, \"T2 and T1 are aligned already\");",
    },
    Help {
        name: "snapshot",
        domain: "pipeline",
        signature: "snapshot(state, path) -> path",
        summary: "Write a PNG: axial / coronal / sagittal slices of fixed, moving, warped, a fixed/warped checkerboard, and the loss curve of every pyramid level",
        options: &[o("edges", "false", "add a column with the fixed image's edges over the warped image")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet r = init(t2, t1, transform=\"rigid\") |> iso(mi, scales=2, iterations=[10, 5]);\nsnapshot(r, \"target/dsl_help_snapshot.png\");\nassert(exists(\"target/dsl_help_snapshot.png\"), \"the picture is written\");",
    },
    // ---------------------------------------------------------------- nn
    Help {
        name: "affine_net",
        domain: "nn",
        signature: "affine_net() -> Network",
        summary: "Seed 000's affine network: a CNN encoder of the moving / fixed pair on its input grid, pooled, MLP heads for 3 translations (mm), 3 rotations, 3 scales, 3 shears, bounded by tanh; starts at the identity. Becomes the active network",
        options: &[
            o("input_size", "64", "network grid voxels (one size, or [D, H, W]); the pair is resampled onto the fixed image's field of view"),
            o("channels", "[16, 32, 64, 64]", "output channels of the stride-2 convolutions"),
            o("hidden", "64", "hidden width of each MLP head"),
            o("max_translation", "40", "bound of the translations, mm"),
            o("max_rotation", "28.6", "bound of the rotations, degrees"),
            o("max_scale", "1.25", "scales lie in [1/max_scale, max_scale]"),
            o("max_shear", "0.2", "bound of the shears"),
            o("coordinates", "false", "append x, y, z coordinate channels (CoordConv)"),
            o("name", "affine_net", "the network's name"),
            o("seed", "-", "draw the initial weights reproducibly from this seed"),
        ],
        example: "let n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nassert(n.kind == \"affine_net\" && n.input_size == [16, 16, 16], \"configured\");\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nassert(displacement_error(net(t1, t1).transform, affine(), t1) < 0.5, \"a new network predicts about the identity\");",
    },
    Help {
        name: "unet",
        domain: "nn",
        signature: "unet() -> Network",
        summary: "Seed 001's VoxelMorph U-Net: strided-conv encoder, decoder with skip connections, Leaky ReLU; outputs a displacement field (mm, fixed to moving) or a velocity field integrated by scaling and squaring. Becomes the active network",
        options: &[
            o("input_size", "64", "network grid voxels (multiples of 2^levels)"),
            o("encoder", "[16, 32, 32, 32]", "channels of the stride-2 encoder convolutions"),
            o("decoder", "[32, 32, 32, 32]", "channels of the decoder convolutions, coarsest first"),
            o("full_res", "[32, 16, 16]", "channels of the full-resolution convolutions"),
            o("upsample", "nearest", "nearest or trilinear"),
            o("steps", "0", "0: a displacement; n: a stationary velocity field with n squarings"),
            o("name", "unet", "the network's name"),
            o("seed", "-", "draw the initial weights reproducibly from this seed"),
        ],
        example: "let n = unet(input_size=16, encoder=[4, 8], decoder=[8, 8], full_res=[4], seed=1);\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nassert(n.kind == \"unet\" && n.params > 1000, \"a U-Net\");\nassert(displacement_error(net(t1, t1).transform, affine(), t1) < 0.1, \"a new U-Net barely moves anything\");",
    },
    Help {
        name: "synthetic_pairs",
        domain: "nn",
        signature: "synthetic_pairs(fixed, moving) -> Pairs   (moving: an image or a list, aligned with fixed)",
        summary: "Training pairs made on the fly: a random affine or smooth deformation of an aligned moving image (its truth kept), an optional intensity augmentation; pair i comes from seed + i",
        options: &[
            o("deformation", "affine", "affine or smooth"),
            o("translation", "15", "affine: translations up to, mm"),
            o("rotation", "15", "affine: rotations up to, degrees"),
            o("scale", "0.1", "affine: scales in 1 +- scale"),
            o("shear", "0.05", "affine: shears up to"),
            o("margin", "0", "affine: voxels added on every side of the moving grid, so the moved image is not cropped"),
            o("max_mm", "5", "smooth: largest displacement in the foreground, mm"),
            o("sigma_mm", "10", "smooth: Gaussian smoothing of the noise, mm"),
            o("labels", "-", "a label map of fixed, carried to the moving side"),
            o("gamma", "0", "intensity: gamma in [1/(1+g), 1+g]"),
            o("contrast", "0", "intensity: scale in 1 +- c"),
            o("noise", "0", "intensity: Gaussian noise, fraction of the maximum"),
            o("seed", "0", "seed of the pairs"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet p = synthetic_pairs(t1, [t2], translation=10.0, rotation=0.0, scale=0.0, shear=0.0, seed=3);\nlet e = displacement_error(pair(p, 0).truth, affine(), t1);\nassert(p.len == -1 && e > 0.5 && e < 17.4, \"a random shift of up to 10 mm per axis\");",
    },
    Help {
        name: "pairs",
        domain: "nn",
        signature: "pairs([[moving, fixed], ...]) -> Pairs   (or [moving, fixed, moving_labels, fixed_labels])",
        summary: "Training or validation pairs from given images, used in turn",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet t2 = load(\"data/avg152/avg152T2.nii\");\nlet p = pairs([[t2, t1], [t1, t1]]);\nassert(p.len == 2 && pair(p, 3).moving.mean == t1.mean, \"pair 3 is the second one again\");",
    },
    Help {
        name: "pair",
        domain: "nn",
        signature: "pair(pairs, i) -> map   (moving, fixed, moving_labels, fixed_labels, truth)",
        summary: "Pair number i of a pair source (the truth is the known transform of a synthetic pair, fixed to moving)",
        options: &[],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet p = synthetic_pairs(t1, t1, translation=4.0, rotation=0.0, scale=0.0, shear=0.0);\nlet a = pair(p, 5);\nassert(warp(a.moving, a.truth, t1).value(45, 54, 45) - t1.value(45, 54, 45) < 0.05, \"the truth pulls the moving image back\");",
    },
    Help {
        name: "train",
        domain: "nn",
        signature: "train(net, pairs) -> map   (epochs: [..], steps, seconds, stop)",
        summary: "Unsupervised training: Adam on the weights, loss = a similarity measure of the warped pair on the network grid (plus a regularizer of dense fields); validation, checkpoints (safetensors + JSON) and resume; Ctrl-C stops after the step and writes the checkpoint",
        options: &[
            o("loss", "cr (affine_net) / mi (unet)", "the similarity measure"),
            o("regularizer", "none", "dense: diffusion:W or bending:W"),
            o("epochs", "10", "epochs to reach (a resumed run does the rest)"),
            o("steps", "100", "optimizer steps per epoch"),
            o("batch", "1", "pairs per step"),
            o("lr", "0.001", "Adam's learning rate"),
            o("schedule", "cosine", "cosine (to 5 %) or constant"),
            o("validation", "-", "held-out pairs evaluated after each epoch"),
            o("validation_pairs", "4", "how many"),
            o("checkpoint", "-", "weights path (.safetensors) written after each epoch"),
            o("resume", "false", "continue from the checkpoint when it exists"),
        ],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nlet p = synthetic_pairs(t1, t1, translation=5.0, rotation=0.0, scale=0.0, shear=0.0);\nlet r = train(n, p, loss=ncc, epochs=2, steps=5, validation=synthetic_pairs(t1, t1, seed=9), validation_pairs=1);\nassert(r.steps == 10 && r.epochs.len() == 2 && r.stop == \"epochs\", \"two epochs of five steps\");\nassert(r.epochs[1].val_error_mm > 0.0, \"validated against the known transforms\");",
    },
    Help {
        name: "evaluate_net",
        domain: "nn",
        signature: "evaluate_net(net, pairs) -> map   (loss, dice, error_mm)",
        summary: "A network on held-out pairs: mean similarity loss, Dice of the labels, mean displacement error (mm, fixed foreground) against the known transforms",
        options: &[o("pairs", "all, or 4", "how many pairs"), o("metric", "ncc", "the similarity measure")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nlet e = evaluate_net(n, synthetic_pairs(t1, t1, translation=8.0, rotation=0.0, scale=0.0, shear=0.0), pairs=2);\nassert(e.error_mm > 1.0 && e.dice == (), \"an untrained network leaves the shifts; no labels, no Dice\");",
    },
    Help {
        name: "save_net",
        domain: "nn",
        signature: "save_net(net, path) -> path",
        summary: "Write the weights (safetensors) and the configuration (JSON beside them), atomically",
        options: &[],
        example: "let n = affine_net(input_size=16, channels=[4], hidden=4, seed=2, name=\"tiny\");\nsave_net(n, \"target/dsl_help_net.safetensors\");\nassert(exists(\"target/dsl_help_net.json\"), \"the configuration beside the weights\");",
    },
    Help {
        name: "load_net",
        domain: "nn",
        signature: "load_net(path) -> Network",
        summary: "Read a network written by save_net or train(checkpoint=...); it becomes the active network",
        options: &[],
        example: "let n = affine_net(input_size=16, channels=[4], hidden=4, seed=2, name=\"tiny\");\nsave_net(n, \"target/dsl_help_load.safetensors\");\nlet m = load_net(\"target/dsl_help_load.safetensors\");\nassert(m.name == \"tiny\" && m.params == n.params, \"round trip\");",
    },
    Help {
        name: "use_net",
        domain: "nn",
        signature: "use_net(net)",
        summary: "Make a network the active one, which net(m, f) uses",
        options: &[],
        example: "let a = affine_net(input_size=16, channels=[4], hidden=4, name=\"a\");\nlet b = unet(input_size=16, encoder=[4], decoder=[4], full_res=[4], name=\"b\");\nuse_net(a);\nlet t1 = load(\"data/avg152/avg152T1.nii\");\nassert(net(t1, t1).stages[0].transform == \"affine_net:a\", \"the active network predicts\");",
    },
    Help {
        name: "net",
        domain: "nn",
        signature: "net(moving, fixed) -> RegState   (MOVING first)",
        summary: "The starting state of a registration from the active network's prediction (or model=): the affine network's transform, which iso can refine, or the U-Net's field",
        options: &[o("model", "the active network", "the network to use")],
        example: "let t1 = load(\"data/avg152/avg152T1.nii\");\nlet n = affine_net(input_size=16, channels=[4, 8], hidden=8, seed=1);\nlet s = net(t1, t1, model=n) |> iso(ncc, scales=1, iterations=[5]);\nassert(s.stages.len() == 2 && s.stages[0].transform == \"affine_net:affine_net\", \"the network's guess, then iso\");",
    },
    // ---------------------------------------------------------------- script
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
    // ---------------------------------------------------------------- stdlib
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

/// The help of builtin `name`.
pub fn help(name: &str) -> Option<&'static Help> {
    HELP.iter().find(|h| h.name == name)
}

/// Every documented name (builtins and stdlib recipes), for completion.
pub fn names() -> impl Iterator<Item = &'static str> {
    HELP.iter().map(|h| h.name)
}
