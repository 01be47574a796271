//! The telemux operator binary.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use telemux::controller::Settings;
use telemux::leader::{LeaseSettings, run_while_leader};
use telemux::run::{Scope, run};
use telemux::server::{Health, Readiness};
use telemux::telemetry::LogFormat;

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
    Run(Box<RunArgs>),
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
    /// Log format (`RUST_LOG` sets the levels; default `info,kube=warn`).
    #[arg(long, env = "TELEMUX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Where `/metrics`, `/livez` and `/readyz` are served.
    #[arg(
        long,
        env = "TELEMUX_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_bind_address: std::net::SocketAddr,
    /// Export the operator's own traces (a span per reconcile) over OTLP/HTTP to this base
    /// URL, e.g. `http://otel-collector:4318` (`/v1/traces` is appended).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    leader_election: LeaderElectionArgs,
    /// A collector reconciles once its triggers have been quiet this many milliseconds, and at
    /// most ten times as long after the first of a burst.
    #[arg(long, env = "TELEMUX_COLLECTOR_DEBOUNCE_MS", default_value_t = 2000)]
    collector_debounce_ms: u64,
    /// OpenTelemetry Collector binary whose `validate` command checks every new collector
    /// configuration before it is rolled out (the operator image ships one). Without it,
    /// configurations are rolled out unchecked and ConfigValid says so.
    #[arg(long, env = "TELEMUX_COLLECTOR_BINARY")]
    collector_binary: Option<std::path::PathBuf>,
    /// Image of the collector pods of RegionalCollectors whose spec sets no `image`: the
    /// telemux collector distribution (Dockerfile.collector), the same build as
    /// `--collector-binary`. It must carry telemux's `telemux_appinsights` exporter.
    #[arg(
        long,
        env = "TELEMUX_COLLECTOR_IMAGE",
        default_value = telemux::api::collector::DEFAULT_COLLECTOR_IMAGE,
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    collector_image: String,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    azure: AzureArgs,
}

/// How the leader collects the tenants' delivery figures from the collector pods.
#[derive(clap::Args)]
struct DeliveryArgs {
    /// Seconds between two reads of every collector pod's counters (`status.delivery`).
    #[arg(long, env = "TELEMUX_DELIVERY_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    delivery_interval: u64,
    /// Seconds a tenant's items may go undelivered before its `Delivering` condition turns
    /// False.
    #[arg(long, env = "TELEMUX_DELIVERY_GRACE", default_value_t = 300)]
    delivery_grace: u64,
    /// Also count items per tenant in `telemux_tenant_items_total` (a series per tenant,
    /// signal, outcome and code: about 10 per active tenant).
    #[arg(long, env = "TELEMUX_TENANT_DELIVERY_METRICS")]
    tenant_delivery_metrics: bool,
}

/// Several replicas elect one leader on a Lease; only the leader reconciles.
#[derive(clap::Args)]
struct LeaderElectionArgs {
    /// Hold a Lease while reconciling, so that of several replicas only one ever writes.
    #[arg(long, env = "TELEMUX_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "telemux-leader")]
    leader_election_lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,
    /// Seconds a leader that stops renewing keeps the Lease: the longest a takeover waits.
    #[arg(long, default_value_t = 15)]
    leader_election_lease_duration: u64,
    /// The leader renews this many seconds before its Lease would expire.
    #[arg(long, default_value_t = 5)]
    leader_election_renew_before: u64,
}

/// How telemux reaches Azure Resource Manager to provision tenants' Application Insights.
#[derive(clap::Args)]
struct AzureArgs {
    /// Which identity to use. `auto`: workload identity when its webhook's variables are set,
    /// else none (tenants with `provision` then report AuthenticationFailed).
    #[arg(long, env = "TELEMUX_AZURE_CREDENTIAL", value_enum, default_value_t = AzureCredentialKind::Auto)]
    azure_credential: AzureCredentialKind,
    /// Resource Manager endpoint (sovereign clouds).
    #[arg(
        long,
        env = "TELEMUX_AZURE_ARM_ENDPOINT",
        default_value = "https://management.azure.com"
    )]
    azure_arm_endpoint: String,
    /// Entra ID authority host (sovereign clouds).
    #[arg(
        long,
        env = "AZURE_AUTHORITY_HOST",
        default_value = "https://login.microsoftonline.com"
    )]
    azure_authority_host: String,
    /// Entra tenant of the app registration (client-secret).
    #[arg(long, env = "AZURE_TENANT_ID")]
    azure_tenant_id: Option<String>,
    /// App registration / user-assigned identity client id.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    azure_client_id: Option<String>,
    /// File holding the app registration's client secret (a mounted Secret).
    #[arg(long, env = "TELEMUX_AZURE_CLIENT_SECRET_FILE")]
    azure_client_secret_file: Option<std::path::PathBuf>,
    /// Instance metadata endpoint for managed identity.
    #[arg(
        long,
        env = "TELEMUX_AZURE_IMDS_ENDPOINT",
        default_value = "http://169.254.169.254"
    )]
    azure_imds_endpoint: String,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum AzureCredentialKind {
    Auto,
    None,
    WorkloadIdentity,
    ClientSecret,
    ManagedIdentity,
}

/// The ARM client from the flags; `Ok(None)` when no Azure identity is configured.
fn azure_components(
    args: &AzureArgs,
) -> Result<Option<telemux::controller::provision::AzureComponents>, String> {
    use telemux::azure::{AzureSettings, CredentialSource, Secret, build_components_client};
    let workload_identity_env = std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some();
    let source = match args.azure_credential {
        AzureCredentialKind::None => return Ok(None),
        AzureCredentialKind::Auto if !workload_identity_env => return Ok(None),
        AzureCredentialKind::Auto | AzureCredentialKind::WorkloadIdentity => {
            CredentialSource::workload_identity_from_env().map_err(|e| e.to_string())?
        }
        AzureCredentialKind::ClientSecret => {
            let need = |v: &Option<String>, name: &str| {
                v.clone()
                    .ok_or(format!("--azure-credential client-secret needs {name}"))
            };
            let file = args
                .azure_client_secret_file
                .as_ref()
                .ok_or("--azure-credential client-secret needs --azure-client-secret-file")?;
            let secret = std::fs::read_to_string(file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            CredentialSource::ClientSecret {
                tenant_id: need(&args.azure_tenant_id, "--azure-tenant-id")?,
                client_id: need(&args.azure_client_id, "--azure-client-id")?,
                client_secret: Secret::new(secret.trim().to_owned()),
            }
        }
        AzureCredentialKind::ManagedIdentity => CredentialSource::ManagedIdentity {
            endpoint: args.azure_imds_endpoint.clone(),
            client_id: args.azure_client_id.clone(),
        },
    };
    let mut settings = AzureSettings::new(source);
    settings.arm_endpoint = args.azure_arm_endpoint.clone();
    settings.authority_host = args.azure_authority_host.clone();
    build_components_client(&settings)
        .map(|client| Some(telemux::controller::provision::AzureComponents(client)))
        .map_err(|e| e.to_string())
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
        Command::Run(args) => run_operator(*args).await,
    }
}

async fn run_operator(args: RunArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    use std::sync::Arc;
    let _telemetry = match telemux::telemetry::init(args.log_format, args.otlp_endpoint.as_deref())
    {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("telemux run: {error}");
            return ExitCode::FAILURE;
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot reach the Kubernetes API (check KUBECONFIG)");
            return ExitCode::FAILURE;
        }
    };
    let azure = match azure_components(&args.azure) {
        Ok(azure) => azure,
        Err(error) => {
            tracing::error!(%error, "invalid Azure configuration");
            return ExitCode::FAILURE;
        }
    };
    if azure.is_none() {
        tracing::info!(
            "no Azure identity configured: applicationInsights.provision is unavailable"
        );
    }
    let metrics = Arc::new(telemux::metrics::Metrics::default());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let health = Arc::new(Health::default());
    let listener = match telemux::server::bind(args.metrics_bind_address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, address = %args.metrics_bind_address, "cannot serve metrics and probes");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    let server = tokio::spawn(telemux::server::serve(
        listener,
        Arc::new(registry),
        health.clone(),
        shutdown.clone(),
    ));
    tracing::info!(address = %args.metrics_bind_address, "serving /metrics, /livez and /readyz");

    let lease_namespace = args
        .leader_election
        .leader_election_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let scope = args.namespace.map(Scope::Namespace).unwrap_or_default();
    let settings = Settings {
        collector_debounce: Duration::from_millis(args.collector_debounce_ms),
        collector_binary: args.collector_binary,
        collector_image: args.collector_image,
        azure,
        delivery: telemux::delivery::collect::DeliverySettings {
            interval: Duration::from_secs(args.delivery.delivery_interval),
            grace: Duration::from_secs(args.delivery.delivery_grace),
            per_tenant_metrics: args.delivery.tenant_delivery_metrics,
            ..Default::default()
        },
        ..Settings::default()
    };
    let election = &args.leader_election;
    let outcome = if election.leader_elect {
        let identity = election
            .leader_election_identity
            .clone()
            .unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "telemux".into());
                format!("{host}-{}", std::process::id())
            });
        let lease = LeaseSettings {
            name: election.leader_election_lease_name.clone(),
            duration: Duration::from_secs(election.leader_election_lease_duration),
            renew_before: Duration::from_secs(election.leader_election_renew_before),
            ..LeaseSettings::new(lease_namespace, identity)
        };
        run_while_leader(
            client.clone(),
            lease,
            &metrics,
            shutdown.clone(),
            || health.set(Readiness::Standby),
            |stop| {
                // Leading now: not ready again until the controllers' caches are synced.
                health.set(Readiness::Starting);
                run(
                    client,
                    scope,
                    settings,
                    metrics.clone(),
                    health.clone(),
                    stop,
                )
            },
        )
        .await
    } else {
        metrics.leader.set(1);
        run(
            client,
            scope,
            settings,
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        )
        .await;
        Ok(())
    };
    health.set(Readiness::Stopping);
    server.abort();
    match outcome {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "exiting");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    fn collector_image(args: &[&str]) -> Result<String, clap::Error> {
        let cli = Cli::try_parse_from(["telemux", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(run) => Ok(run.collector_image),
            Command::Crds { .. } => unreachable!("parsed `run`"),
        }
    }

    #[test]
    fn collector_image_defaults_to_the_telemux_distribution_and_can_be_set() {
        Cli::command().debug_assert();
        // The environment's TELEMUX_COLLECTOR_IMAGE would be the default: not under test.
        if std::env::var_os("TELEMUX_COLLECTOR_IMAGE").is_none() {
            assert_eq!(
                collector_image(&[]).unwrap(),
                telemux::api::collector::DEFAULT_COLLECTOR_IMAGE
            );
        }
        assert_eq!(
            collector_image(&["--collector-image=registry.example/telemux-otelcol:1"]).unwrap(),
            "registry.example/telemux-otelcol:1"
        );
        assert!(collector_image(&["--collector-image="]).is_err());
    }
}
