//! The command line (clap). Each subcommand is a thin call into the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Result;
use crate::info::ImageInfo;

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
    }
    Ok(())
}
