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
    /// Dry-run jobs in a modelled world, with faults injected, and check the safety invariants.
    ///
    /// Exit status: 0 every invariant held in every scenario; 1 bad input (policy, world,
    /// plugin); 2 bad command line; 3 a plugin refused to plan in the world; 4 an invariant broke.
    Simulate {
        /// Policy files or directories of them.
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Only this operation [default: every operation the job allows].
        #[arg(long)]
        op: Option<String>,
        /// The world fixture (docs/simulation.md) [default: worlds/<policy name>.toml beside
        /// each policy].
        #[arg(long, conflicts_with = "from_tree")]
        world: Option<PathBuf>,
        /// Model the world on a read-only scan of the jobs' real directories.
        #[arg(long)]
        from_tree: bool,
        /// Which failures to inject.
        #[arg(long, value_enum, default_value = "none")]
        faults: Faults,
        /// Print the versioned JSON report (docs/simulation.md) instead of text.
        #[arg(long)]
        json: bool,
        /// Also write JUnit XML here: one test case per scenario.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
}

/// Which failures `simulate` injects.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// Only the normal run.
    None,
    /// Also each step failing, timing out, and the host crashing right after it.
    EachStep,
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
