//! `rtap`: the plugin author's command line.
//!
//! ```text
//! rtap new NAME --kind aggregator|detector [--path DIR]   a plugin crate that builds anywhere
//! rtap test [DIR]                                         its native tests (cargo test)
//! rtap build [DIR]                                        the component, checked as the host checks it
//! rtap run COMPONENT.wasm --input FILE|- [--config JSON]  that plugin alone over events, in the host's runtime
//! rtap deploy COMPONENT.wasm [--url URL] [--config JSON]  upload it to a running host, wait, show counters
//! rtap deploy COMPONENT.wasm --shadow                    run it beside the live version, compared, not emitted
//! rtap shadow NAME [--promote | --discard]                the shadow's comparison; make it live, or drop it
//! rtap plugins | config NAME JSON | rollback NAME | logs NAME [--follow]
//! ```
//!
//! Build, check and run use the host's own library (its runtime, file
//! source and pipeline), so what passes here passes there; the others talk
//! to a host's HTTP API (`--url`, `RTAP_URL`, default
//! `http://localhost:3000`; the admin token from `RTAP_ADMIN_TOKEN`).

mod build;
mod remote;
mod run;
mod scaffold;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The plugin author's loop: new → test → build → run → deploy → logs.
#[derive(Debug, Parser)]
#[command(
    name = "rtap",
    version,
    about = "The plugin author's command line: new, test, build, run, deploy (--shadow), shadow, plugins, config, rollback, logs"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a plugin crate: a working example, native tests, sample
    /// events and a README of the loop. It builds outside this repository.
    New {
        /// The plugin's name, `[a-z][a-z0-9-]*` (also the crate's).
        name: String,
        #[arg(long, value_enum)]
        kind: scaffold::Kind,
        /// Where the crate's folder is made (default: here).
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// The rtap-sdk crate it depends on (default: the one this rtap was
        /// built from).
        #[arg(long, env = "RTAP_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Run the crate's native tests (`cargo test`).
    Test {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build the component (adding the wasm32-wasip2 target if missing),
    /// check it as the host will, print its description and size, and its
    /// path as the last line.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run one plugin over events in the host's runtime; metrics, alerts,
    /// late events and dead letters on stdout (the same input gives the same
    /// lines), its log on stderr.
    Run {
        component: PathBuf,
        /// JSONL events, `-` for stdin.
        #[arg(long)]
        input: String,
        /// The plugin's config (a JSON object; default: its own).
        #[arg(long)]
        config: Option<String>,
        /// Watermark: bounded out-of-orderness of event time.
        #[arg(long, default_value = "2s")]
        out_of_orderness: rtap_host::config::HumanDuration,
    },
    /// Upload a component to a running host: shows what changes, waits for
    /// the swap, reports the first counters.
    Deploy {
        component: PathBuf,
        #[command(flatten)]
        host: remote::HostArgs,
        /// The config to run it with (a JSON object; default: the running
        /// one's, or the plugin's own).
        #[arg(long)]
        config: Option<String>,
        /// Start the new version from empty state (when its state schema
        /// differs and it cannot migrate).
        #[arg(long)]
        reset_state: bool,
        /// Run it as a shadow: beside the live version, on the same events,
        /// its outputs compared with the live ones instead of emitted (see
        /// `rtap shadow`).
        #[arg(long)]
        shadow: bool,
    },
    /// A shadow version's comparison with the live one; `--promote` makes
    /// it live, `--discard` drops it.
    Shadow {
        name: String,
        #[arg(long, conflicts_with = "discard")]
        promote: bool,
        #[arg(long)]
        discard: bool,
        /// How many differences to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[command(flatten)]
        host: remote::HostArgs,
    },
    /// The host's plugins: version, status, counters.
    Plugins {
        #[command(flatten)]
        host: remote::HostArgs,
    },
    /// Change a running plugin's config (code and state stay).
    Config {
        name: String,
        /// The new config, a JSON object.
        json: String,
        #[command(flatten)]
        host: remote::HostArgs,
    },
    /// Go back to a plugin's previous version.
    Rollback {
        name: String,
        #[command(flatten)]
        host: remote::HostArgs,
        /// Start from empty state (when the state schemas differ).
        #[arg(long)]
        reset_state: bool,
    },
    /// A plugin's log lines (`--follow`: and those that come).
    Logs {
        name: String,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        host: remote::HostArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Cmd::New {
            name,
            kind,
            path,
            sdk,
        } => scaffold::new(&name, kind, &path, sdk),
        Cmd::Test { dir } => build::test(&dir),
        Cmd::Build { dir } => build::build(&dir),
        Cmd::Run {
            component,
            input,
            config,
            out_of_orderness,
        } => run::run(&component, &input, config.as_deref(), out_of_orderness.0),
        Cmd::Deploy {
            component,
            host,
            config,
            reset_state,
            shadow,
        } => remote::deploy(&host, &component, config.as_deref(), reset_state, shadow),
        Cmd::Shadow {
            name,
            promote,
            discard,
            limit,
            host,
        } => remote::shadow(&host, &name, promote, discard, limit),
        Cmd::Plugins { host } => remote::plugins(&host),
        Cmd::Config { name, json, host } => remote::config(&host, &name, &json),
        Cmd::Rollback {
            name,
            host,
            reset_state,
        } => remote::rollback(&host, &name, reset_state),
        Cmd::Logs { name, follow, host } => remote::logs(&host, &name, follow),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parse `--config` text: a JSON object.
fn parse_config(text: &str) -> anyhow::Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("--config is not valid JSON: {e}"))?;
    anyhow::ensure!(v.is_object(), "--config must be a JSON object");
    Ok(v)
}
