//! `telemux-azure-emulator`: serves the Azure emulators as a process, for collectors and manual
//! runs outside the Rust test harness. Logs one line per request to stdout.
//!
//! Always serves the ingestion emulator; with `--arm-listen` also the resource manager
//! emulator (and, as it needs one, an Entra ID emulator, on `--entra-listen` or any free
//! port); with `--entra-listen` alone only the Entra ID emulator besides ingestion. Components
//! the ARM emulator creates get connection strings pointing at this process's ingestion
//! emulator unless `--arm-ingestion-endpoint` says otherwise.

use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

use clap::Parser;
use telemux_testkit::arm::{ArmEmulator, ArmRequest};
use telemux_testkit::entra::{EntraEmulator, TokenRequest};
use telemux_testkit::ingestion::IngestionEmulator;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

#[derive(Parser)]
#[command(about = "Emulated Azure endpoints for telemux tests")]
struct Args {
    /// Where the Application Insights ingestion emulator listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    ingestion_listen: SocketAddr,
    /// Also serve the Azure Resource Manager emulator (Microsoft.Insights/components) here.
    #[arg(long)]
    arm_listen: Option<SocketAddr>,
    /// Also serve the Entra ID token emulator here (started anyway, on a free port, for
    /// `--arm-listen`).
    #[arg(long)]
    entra_listen: Option<SocketAddr>,
    /// `IngestionEndpoint` of the connection strings of components the ARM emulator creates
    /// (default: this process's ingestion emulator).
    #[arg(long)]
    arm_ingestion_endpoint: Option<String>,
    /// An Entra app accepting a client secret, `TENANT:CLIENT_ID:SECRET` (repeatable).
    #[arg(long, value_name = "TENANT:CLIENT_ID:SECRET")]
    entra_secret: Vec<String>,
    /// An Entra app accepting any federated assertion, `TENANT:CLIENT_ID` (repeatable).
    #[arg(long, value_name = "TENANT:CLIENT_ID")]
    entra_federated: Vec<String>,
    /// A managed identity the metadata endpoint issues tokens for, `TENANT:CLIENT_ID`
    /// (repeatable).
    #[arg(long, value_name = "TENANT:CLIENT_ID")]
    entra_managed_identity: Vec<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let ingestion = IngestionEmulator::start_on(args.ingestion_listen).await?;
    let mut requests = ingestion.subscribe();
    println!("ingestion listening on {}", ingestion.endpoint());

    let entra = match (args.entra_listen, args.arm_listen) {
        (Some(addr), _) => Some(EntraEmulator::start_on(addr).await?),
        (None, Some(_)) => Some(EntraEmulator::start().await?),
        (None, None) => None,
    };
    if let Some(entra) = &entra {
        configure_entra(entra, &args)?;
        println!("entra listening on {}", entra.endpoint());
    }
    let arm = match (&entra, args.arm_listen) {
        (Some(entra), Some(addr)) => {
            let arm = ArmEmulator::start_on(entra, addr).await?;
            let ingestion_endpoint = args
                .arm_ingestion_endpoint
                .clone()
                .unwrap_or_else(|| ingestion.endpoint());
            arm.set_ingestion_endpoint(Some(&ingestion_endpoint));
            println!("arm listening on {}", arm.endpoint());
            Some(arm)
        }
        _ => None,
    };
    let token_log = log_tokens(entra.as_ref().map(EntraEmulator::subscribe));
    let arm_log = log_arm(arm.as_ref().map(ArmEmulator::subscribe));

    let log = async {
        loop {
            match requests.recv().await {
                Ok(r) => {
                    let at =
                        r.at.duration_since(UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or_default();
                    let first_error = r.errors.first().map(|e| e.message.as_str()).unwrap_or("");
                    println!(
                        "{at:.3} POST {} ikeys={} items={} accepted={} status={} encoding={} retry_after={} {first_error}",
                        r.path,
                        r.ikeys.join(","),
                        r.items_received,
                        r.items_accepted,
                        r.status,
                        r.content_encoding.as_deref().unwrap_or("-"),
                        r.retry_after.as_deref().unwrap_or("-"),
                    );
                }
                Err(RecvError::Lagged(n)) => println!("(log fell behind; {n} requests not shown)"),
                Err(RecvError::Closed) => break,
            }
        }
    };
    tokio::select! {
        () = log => {}
        () = token_log => {}
        () = arm_log => {}
        () = shutdown_signal() => {}
    }
    if let Some(arm) = arm {
        arm.shutdown().await?;
    }
    if let Some(entra) = entra {
        entra.shutdown().await?;
    }
    ingestion.shutdown().await
}

/// Registers the apps and identities named on the command line.
fn configure_entra(entra: &EntraEmulator, args: &Args) -> std::io::Result<()> {
    let invalid = |flag: &str, value: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--{flag} {value:?}: expected colon-separated parts"),
        )
    };
    for value in &args.entra_secret {
        let mut parts = value.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(tenant), Some(client), Some(secret))
                if !tenant.is_empty() && !client.is_empty() =>
            {
                entra.allow_secret(tenant, client, secret);
            }
            _ => return Err(invalid("entra-secret", value)),
        }
    }
    for (flag, values) in [
        ("entra-federated", &args.entra_federated),
        ("entra-managed-identity", &args.entra_managed_identity),
    ] {
        for value in values {
            match value.split_once(':') {
                Some((tenant, client)) if !tenant.is_empty() && !client.is_empty() => {
                    if flag == "entra-federated" {
                        entra.allow_federated(tenant, client);
                    } else {
                        entra.allow_managed_identity(tenant, client);
                    }
                }
                _ => return Err(invalid(flag, value)),
            }
        }
    }
    Ok(())
}

fn secs(at: std::time::SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One line per token request; never ends if there is no Entra emulator.
async fn log_tokens(feed: Option<broadcast::Receiver<TokenRequest>>) {
    let Some(mut feed) = feed else {
        return std::future::pending().await;
    };
    loop {
        match feed.recv().await {
            Ok(r) => println!(
                "{:.3} TOKEN {} client={} scope={} status={} error={}",
                secs(r.at),
                r.path,
                r.client_id.as_deref().unwrap_or("-"),
                r.scope.as_deref().unwrap_or("-"),
                r.status,
                r.error_code
                    .map_or_else(|| "-".to_string(), |c| format!("AADSTS{c}")),
            ),
            Err(RecvError::Lagged(n)) => {
                println!("(log fell behind; {n} token requests not shown)")
            }
            Err(RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// One line per ARM request; never ends if there is no ARM emulator.
async fn log_arm(feed: Option<broadcast::Receiver<ArmRequest>>) {
    let Some(mut feed) = feed else {
        return std::future::pending().await;
    };
    loop {
        match feed.recv().await {
            Ok(r) => println!(
                "{:.3} {} {}{} status={} error={} client={}",
                secs(r.at),
                r.method,
                r.path,
                r.query
                    .as_deref()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default(),
                r.status,
                r.error_code.as_deref().unwrap_or("-"),
                r.client_id.as_deref().unwrap_or("-"),
            ),
            Err(RecvError::Lagged(n)) => println!("(log fell behind; {n} ARM requests not shown)"),
            Err(RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// Ctrl-C or SIGTERM (how test harnesses stop child processes).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
