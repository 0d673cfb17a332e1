//! The command line (clap). Each subcommand is a thin call into the library.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};

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
    /// The subcommand; none starts the REPL.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
// Parsed once per process: the size of the `register` variant (many options) costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Register a moving image to a fixed one: linear stages by multi-scale instance-specific
    /// optimization (ISO) with Adam, then optionally a dense stage.
    ///
    /// Recipes: translation, rigid, similarity, affine (rigid then affine); syn (affine then a greedy
    /// displacement field, FireANTs-style; not ANTs' symmetric SyN), svf (affine then a stationary
    /// velocity field), bspline (affine then a cubic B-spline). Writes PREFIX_warped.nii.gz (moving on
    /// the fixed grid), PREFIX_affine.tfm (ITK, LPS; fixed to moving), for dense recipes
    /// PREFIX_warp.nii.gz (displacement field, ITK / ANTs convention, applied before the affine), and
    /// PREFIX_report.json (stages, per-level losses, iterations, seconds, threads, seed).
    /// `regsh apply -i MOVING -r FIXED [-t PREFIX_warp.nii.gz] -t PREFIX_affine.tfm` reproduces the
    /// warped image. Ctrl-C stops the optimization and writes what it has.
    Register(crate::register::RegisterArgs),
    /// Write a PNG picture of a registration: axial, coronal and sagittal slices (rows) of fixed, moving,
    /// warped and a fixed/warped checkerboard (columns), and the loss curve per pyramid level.
    ///
    /// All panels are sampled at the same world points (mm, RAS) on planes through --point (default: the
    /// fixed grid's centre), so moving shows where it lies before registration and warped after.
    /// Neurological convention: subject's left on the viewer's left (axial, coronal), anterior on the
    /// right (sagittal). Each image is windowed to the 1st-99th percentile of its non-zero voxels. The
    /// loss strip plots `stages[].levels[].losses` of a `regsh register` report, each level in its own
    /// colour and scaled to its own range.
    Snapshot {
        #[arg(long)]
        fixed: PathBuf,
        #[arg(long)]
        moving: PathBuf,
        /// The registered moving image (e.g. PREFIX_warped.nii.gz).
        #[arg(long)]
        warped: Option<PathBuf>,
        /// A `regsh register` report (PREFIX_report.json) whose per-level losses to plot.
        #[arg(long)]
        report: Option<PathBuf>,
        /// World point X,Y,Z (mm, RAS) the three planes pass through.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        point: Option<Vec<f64>>,
        /// Add a column with the fixed image's edges in red over the warped image.
        #[arg(long)]
        edges: bool,
        /// Checkerboard square size in mm.
        #[arg(long, default_value_t = 16.0)]
        checker: f64,
        /// The output PNG.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
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
    /// Run a training recipe: the same as `regsh run FILE [ARGS...]` (a recipe calls `train(...)`, which
    /// shows a progress bar, writes checkpoints and stops cleanly on Ctrl-C).
    Train {
        /// The training recipe (a DSL script).
        file: String,
        /// Arguments for the script (the array ARGS).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The interactive shell (also `regsh` alone): history, tab completion, `:help NAME`, `:functions`,
    /// `:vars`, `:load FILE`, `:time EXPR`, `:clear`, `:quit`.
    Repl {
        /// The history file (default: $REGSH_HISTORY, else ~/.regsh_history).
        #[arg(long)]
        history: Option<PathBuf>,
    },
    /// Run a DSL script, then run it again each time it is saved (Ctrl-C stops).
    ///
    /// Images the script loads stay cached (by path and modification time) between runs; a run with an
    /// error prints its report and keeps the state of the last good run; a save that leaves the file's
    /// content unchanged does not re-run.
    Watch {
        /// The script file.
        file: PathBuf,
        /// Arguments for the script (the array ARGS).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        /// Milliseconds the file must be quiet before a change runs.
        #[arg(long, default_value_t = 200)]
        debounce_ms: u64,
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
    // Ctrl-C stops the script cleanly: `iso` / `register` keep the best parameters, `train` writes its
    // checkpoint, then the script ends with a report.
    let cancel = session.cancel_flag();
    if ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed)).is_err() {
        tracing::debug!("Ctrl-C handler already installed");
    }
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

/// The REPL; a failure to start it is reported and the process exits with status 1.
fn repl(history: Option<PathBuf>) -> Result<()> {
    if let Err(e) = crate::repl::run(&crate::repl::ReplOptions { history }) {
        eprint!("{}", crate::diagnostics::render_terminal(&e, false));
        std::process::exit(1);
    }
    Ok(())
}

/// Runs a parsed command line, writing its output to stdout.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        // Fails only if a pool already exists; then the existing one is used.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global();
    }
    let Some(command) = cli.command else {
        return repl(None);
    };
    match command {
        Command::Repl { history } => return repl(history),
        Command::Watch { file, args, debounce_ms } => {
            use std::io::IsTerminal;
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            if ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).is_err() {
                tracing::debug!("Ctrl-C handler already installed");
            }
            let opts = crate::watch::WatchOptions {
                args,
                debounce: std::time::Duration::from_millis(debounce_ms),
                colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            };
            if let Err(e) = crate::watch::watch(&file, &opts, stop) {
                eprint!("{}", crate::diagnostics::render_terminal(&e, false));
                std::process::exit(1);
            }
        }
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
            let mut inputs = vec![input.as_path(), reference.as_path()];
            inputs.extend(transforms.iter().map(|t| std::path::Path::new(t.as_str())));
            crate::outputs::prepare(&[&output], &inputs)?;
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
        Command::Register(args) => {
            let cancel = Arc::new(AtomicBool::new(false));
            let flag = cancel.clone();
            // A second handler cannot be installed (e.g. in tests calling `run` twice): then Ctrl-C
            // keeps its default effect.
            if ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).is_err() {
                tracing::debug!("Ctrl-C handler already installed");
            }
            let (report, _) = crate::register::run(&args, Some(cancel.clone()))?;
            if cancel.load(Ordering::Relaxed) {
                eprintln!("cancelled: wrote the result reached so far");
            }
            println!("{}", report.display());
        }
        Command::Snapshot { fixed, moving, warped, report, point, edges, checker, output } => {
            let (w, h) = crate::snapshot::run(&crate::snapshot::SnapshotArgs {
                fixed,
                moving,
                warped,
                report,
                point,
                edges,
                checker_mm: checker,
                output: output.clone(),
            })?;
            tracing::info!("snapshot: {} ({w} x {h} pixels)", output.display());
        }
        Command::Run { expr, file, args } => run_script(expr, file, args),
        Command::Train { file, args } => run_script(None, Some(file), args),
        Command::Jacobian { transforms, reference, output } => {
            let mut inputs = vec![reference.as_path()];
            inputs.extend(transforms.iter().map(|t| std::path::Path::new(t.as_str())));
            crate::outputs::prepare(&[&output], &inputs)?;
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
