//! Command-line parsing and the commands. Errors become a message on stderr and an exit code.

mod commands;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs product backup, restore and maintenance procedures encoded as WebAssembly plugins.
#[derive(Parser, Debug)]
#[command(name = "hokan", version, about, long_about = None)]
pub struct Cli {
    /// Directory of plugin components (`<name>.wasm`).
    #[arg(
        long,
        global = true,
        env = "HOKAN_PLUGIN_DIR",
        default_value = "/usr/lib/hokan/plugins"
    )]
    pub plugin_dir: PathBuf,
    /// Directory of the compile cache [default: $XDG_CACHE_HOME/hokan or ~/.cache/hokan].
    #[arg(long, global = true, env = "HOKAN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// More diagnostics on stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the plugins in the plugin directory, or describe one.
    Plugins {
        /// Describe this plugin in full.
        name: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check policy files (or directories of them) and their jobs' plugins.
    Validate {
        /// Policy files or directories.
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
    /// Plan one operation of a job against the real directories (read-only) and print it.
    Plan {
        /// The policy file.
        policy: PathBuf,
        /// The job.
        #[arg(long)]
        job: String,
        /// The operation.
        #[arg(long)]
        op: String,
        /// The backup set to restore from [default: the newest].
        #[arg(long)]
        set: Option<String>,
        /// Print the versioned plan document (docs/plan-format.md) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line, runs the command, and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOKAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match commands::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
