//! `telemux-azure-emulator`: serves the Azure emulators as a process, for collectors and manual
//! runs outside the Rust test harness. Logs one line per ingestion request to stdout.

use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

use clap::Parser;
use telemux_testkit::ingestion::IngestionEmulator;
use tokio::sync::broadcast::error::RecvError;

#[derive(Parser)]
#[command(about = "Emulated Azure endpoints for telemux tests")]
struct Args {
    /// Where the Application Insights ingestion emulator listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    ingestion_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let ingestion = IngestionEmulator::start_on(args.ingestion_listen).await?;
    let mut requests = ingestion.subscribe();
    println!("ingestion listening on {}", ingestion.endpoint());

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
        () = shutdown_signal() => {}
    }
    ingestion.shutdown().await
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
