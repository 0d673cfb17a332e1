//! The `regsh` binary: parses the command line and reports errors with miette.

use clap::Parser;

fn main() -> miette::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REGSH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = regsh::cli::Cli::parse();
    regsh::cli::run(cli).map_err(miette::Report::new)
}
