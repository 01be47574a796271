//! The telemux operator binary.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use telemux::controller::Settings;
use telemux::run::{Scope, run};

#[derive(Parser)]
#[command(
    version,
    about = "Per-tenant, redacted, region-bound telemetry pipelines for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Write the CustomResourceDefinitions as YAML files into a directory (`make crds`).
    Crds {
        /// Output directory.
        #[arg(long, default_value = "crds")]
        dir: std::path::PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Serve only this namespace instead of the whole cluster.
    #[arg(long, env = "TELEMUX_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "TELEMUX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Coalesce collector reconciles triggered within this many milliseconds.
    #[arg(long, env = "TELEMUX_COLLECTOR_DEBOUNCE_MS", default_value_t = 2000)]
    collector_debounce_ms: u64,
    /// OpenTelemetry Collector binary whose `validate` command checks every new collector
    /// configuration before it is rolled out (the operator image ships one). Without it,
    /// configurations are rolled out unchecked and ConfigValid says so.
    #[arg(long, env = "TELEMUX_COLLECTOR_BINARY")]
    collector_binary: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler at start-up");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

fn write_crds(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    for (name, yaml) in telemux::api::crd_files()? {
        std::fs::write(dir.join(&name), yaml)?;
        println!("wrote {}", dir.join(name).display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { dir } => match write_crds(&dir) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("telemux crds: {error}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_logging(args.log_format);
            let client = match kube::Client::try_default().await {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!(%error, "cannot reach the Kubernetes API (check KUBECONFIG)");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let scope = args.namespace.map(Scope::Namespace).unwrap_or_default();
            let settings = Settings {
                collector_debounce: Duration::from_millis(args.collector_debounce_ms),
                collector_binary: args.collector_binary,
                ..Settings::default()
            };
            let metrics = std::sync::Arc::new(telemux::metrics::Metrics::default());
            run(client, scope, settings, metrics, shutdown_signal()).await;
            std::process::ExitCode::SUCCESS
        }
    }
}
