//! The command line (clap). Each subcommand is a thin call into the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use crate::error::Result;
use crate::image::io::{load, save_with, SaveOptions};
use crate::image::resample::Padding;
use crate::image::DataType;
use crate::info::ImageInfo;
use crate::spatial::io::load_transform;
use crate::spatial::{jacobian_determinant, warp, Composite, Transform, WarpInterpolation};

/// regsh: a scriptable registration shell for medical images.
#[derive(Parser, Debug)]
#[command(name = "regsh", version, about, long_about = None)]
pub struct Cli {
    /// Number of worker threads (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print an image's grid (shape, spacing, origin, direction, world affine), datatype and range.
    Info {
        /// Image files (.nii, .nii.gz, .hdr/.img).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Print JSON (one object per image; an array when several are given).
        #[arg(long)]
        json: bool,
    },
    /// Resample a moving image through transforms onto a reference grid, as antsApplyTransforms does.
    ///
    /// Transforms map reference (fixed) points to moving points. A fixed point passes through them in
    /// the order given: `-t A -t B` samples the moving image at B(A(x)). This is antsApplyTransforms'
    /// order: `-t 1Warp.nii.gz -t 0GenericAffine.mat` as ANTs writes them. `[file,1]` uses the inverse.
    /// Files: ITK `.tfm`/`.txt`, ANTs `.mat`, displacement fields `.nii`/`.nii.gz` (ITK/ANTs convention).
    Apply {
        /// The moving image.
        #[arg(short = 'i', long = "input")]
        input: PathBuf,
        /// The reference image whose grid the output takes.
        #[arg(short = 'r', long = "reference")]
        reference: PathBuf,
        /// A transform file (repeatable), in point order; none means identity.
        #[arg(short = 't', long = "transform")]
        transforms: Vec<String>,
        /// The output image.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// linear, nearest, or label (per-label linear weights, for label maps).
        #[arg(short = 'n', long, default_value = "linear")]
        interpolation: String,
        /// Outside the moving image: zero, or border (nearest edge value).
        #[arg(long, default_value = "zero")]
        padding: String,
        /// Output datatype (default: float32 for linear, the input's for nearest / label).
        #[arg(long)]
        dtype: Option<String>,
    },
    /// Measure the similarity of two images, like ANTs' MeasureImageSimilarity / NiftyReg's reg_measure.
    ///
    /// Image measures: ssd, ncc, lncc, mi, nmi, cr, cr_patch, mi_patch (options in brackets), ssim, psnr; e.g.
    /// `mi[bins=64,sigma=0.3]`, `cr_patch[patch=8,shifted=false]`, `lncc[window=5]`. Label measures (need
    /// --labels-fixed and --labels-moving): dice, hd95 (mm). When the grids differ, the moving image
    /// (linear) and its labels (nearest) are resampled onto the fixed grid first, and a note says so.
    Measure {
        /// The fixed image (its grid is where everything is compared).
        fixed: PathBuf,
        /// The moving image.
        moving: PathBuf,
        /// Only voxels where this image is non-zero count (for the image measures; ssim, psnr, dice and
        /// hd95 use the whole image).
        #[arg(long)]
        mask: Option<PathBuf>,
        /// Comma-separated measures (default: mi,nmi,cr,cr_patch,ncc,lncc,ssd, plus dice,hd95 with labels).
        #[arg(long)]
        metrics: Option<String>,
        /// Label map on the fixed grid (for dice, hd95).
        #[arg(long)]
        labels_fixed: Option<PathBuf>,
        /// Label map of the moving image (for dice, hd95).
        #[arg(long)]
        labels_moving: Option<PathBuf>,
        /// Print one JSON object keyed by measure name.
        #[arg(long)]
        json: bool,
    },
    /// Register a moving image to a fixed one (linear recipes for now): multi-scale instance-specific
    /// optimization over a Gaussian pyramid with Adam.
    ///
    /// Writes PREFIX_warped.nii.gz (moving on the fixed grid), PREFIX_affine.tfm (ITK, LPS; maps fixed to
    /// moving points, so `regsh apply -i MOVING -r FIXED -t PREFIX_affine.tfm` reproduces the warped
    /// image) and PREFIX_report.json (stages, per-level losses, iterations, seconds, threads).
    Register {
        #[arg(long)]
        fixed: PathBuf,
        #[arg(long)]
        moving: PathBuf,
        /// Only fixed voxels inside this mask count.
        #[arg(long)]
        fixed_mask: Option<PathBuf>,
        /// translation, rigid, similarity (rigid then similarity), affine (rigid then affine).
        #[arg(long, default_value = "affine")]
        transform: String,
        /// Similarity measure with options, e.g. `mi`, `cr_patch[patch=8]`, `ncc`.
        #[arg(long, default_value = "mi")]
        metric: String,
        /// Number of pyramid levels (factors 2^(scales-1) .. 1).
        #[arg(long, default_value_t = 4)]
        scales: usize,
        /// Iterations per level, coarse to fine (one value for all levels, or one per level).
        #[arg(long, value_delimiter = ',', default_values_t = vec![100usize, 60, 30, 15])]
        iterations: Vec<usize>,
        /// Adam learning rate (mm per step for translations); default 0.25 * factor + 0.25 per level.
        #[arg(long)]
        lr: Option<f64>,
        /// Initialization: identity, centres, moments.
        #[arg(long, default_value = "moments")]
        init: String,
        /// Output prefix.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a DSL script (`regsh run FILE [ARGS...]`, the script sees ARGS) or an expression
    /// (`regsh run -e 'EXPR' [ARGS...]`, whose value is printed).
    ///
    /// Errors are reported against the script's own text, and the exit status is 1.
    Run {
        /// Evaluate this expression instead of a file, and print its value.
        #[arg(short = 'e', long = "eval", value_name = "EXPR")]
        expr: Option<String>,
        /// The script file (with -e, the first argument).
        #[arg(required_unless_present = "expr")]
        file: Option<String>,
        /// Arguments for the script (the array ARGS).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write the Jacobian determinant of transforms on a reference grid (det <= 0 marks folding).
    Jacobian {
        /// A transform file (repeatable), in point order as for `apply`.
        #[arg(short = 't', long = "transform", required = true)]
        transforms: Vec<String>,
        /// The reference image whose grid the determinant is computed on.
        #[arg(short = 'r', long = "reference")]
        reference: PathBuf,
        /// The output image (float32).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

/// The composite of transform files in point order (the identity when there are none).
fn load_chain(specs: &[String]) -> Result<Arc<dyn Transform>> {
    let ts = specs.iter().map(|s| load_transform(s)).collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Composite::new(ts)))
}

/// `regsh run`: evaluates a file or an expression in a new session; a script error is rendered with
/// miette on stderr and the process exits with status 1.
fn run_script(expr: Option<String>, file: Option<String>, args: Vec<String>) {
    use std::io::IsTerminal;
    let fail = |e: &crate::diagnostics::ScriptError| -> ! {
        eprint!("{}", crate::diagnostics::render_terminal(e, std::io::stderr().is_terminal()));
        std::process::exit(1)
    };
    let mut session = crate::session::Session::new().unwrap_or_else(|e| fail(&e));
    match expr {
        Some(e) => {
            session.set_args(file.into_iter().chain(args).collect());
            let v = session.eval("<expr>", &e).unwrap_or_else(|e| fail(&e));
            if !v.is_unit() {
                println!("{}", crate::session::Session::display(&v));
            }
        }
        None => {
            session.set_args(args);
            let path = PathBuf::from(file.unwrap_or_default());
            let _ = session.eval_file(&path).unwrap_or_else(|e| fail(&e));
        }
    }
}

/// Runs a parsed command line, writing its output to stdout.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        // Fails only if a pool already exists; then the existing one is used.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global();
    }
    match cli.command {
        Command::Info { images, json } => {
            let infos = images.iter().map(|p| ImageInfo::read(p)).collect::<Result<Vec<_>>>()?;
            if json {
                let text = if infos.len() == 1 {
                    serde_json::to_string_pretty(&infos[0])
                } else {
                    serde_json::to_string_pretty(&infos)
                };
                println!("{}", text.unwrap_or_default());
            } else {
                for i in &infos {
                    println!("{i}");
                }
            }
        }
        Command::Apply { input, reference, transforms, output, interpolation, padding, dtype } => {
            let interp = WarpInterpolation::parse(&interpolation)?;
            let padding = Padding::parse(&padding)?;
            let dtype = dtype.map(|d| DataType::parse(&d)).transpose()?;
            let moving = load(&input)?;
            let fixed = load(&reference)?;
            let t = load_chain(&transforms)?;
            let out = warp(&moving, t.as_ref(), fixed.grid(), interp, padding)?;
            save_with(&out, &output, &SaveOptions { dtype, ..Default::default() })?;
        }
        Command::Measure { fixed, moving, mask, metrics, labels_fixed, labels_moving, json } => {
            crate::measure::run(&crate::measure::MeasureArgs {
                fixed,
                moving,
                mask,
                metrics,
                labels_fixed,
                labels_moving,
                json,
            })?;
        }
        Command::Register { fixed, moving, fixed_mask, transform, metric, scales, iterations, lr, init, out } => {
            let report = crate::register::run(&crate::register::RegisterArgs {
                fixed,
                moving,
                fixed_mask,
                transform,
                metric,
                scales,
                iterations,
                lr,
                init,
                out,
            })?;
            println!("{}", report.display());
        }
        Command::Run { expr, file, args } => run_script(expr, file, args),
        Command::Jacobian { transforms, reference, output } => {
            let fixed = load(&reference)?;
            let t = load_chain(&transforms)?;
            let j = jacobian_determinant(t.as_ref(), fixed.grid())?;
            let st = j.stats()?;
            let folded = j.to_vec_f32()?.iter().filter(|v| **v <= 0.0).count();
            tracing::info!("jacobian: min {} max {} mean {}, {folded} voxel(s) with det <= 0", st.min, st.max, st.mean);
            save_with(&j, &output, &SaveOptions::default())?;
        }
    }
    Ok(())
}
