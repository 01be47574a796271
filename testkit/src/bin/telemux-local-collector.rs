//! `telemux-local-collector`: runs the real collector as a local process from the ConfigMap and
//! Secret the operator rendered (`kubectl get configmap|secret NAME -o json`), with the same two
//! adaptations the tests use ([`telemux::offline::prepare`]): the Secret's files are written to
//! `DIR/secrets` (the volume mount) and every listener moves to a loopback port.
//!
//! With `--otelcol` it then replaces itself with the collector (same pid, so a pid file taken
//! by the caller names the collector); without, it only writes the files and prints the
//! collector's arguments, one per line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use clap::Parser;
use serde_json::Value;
use telemux::layout::CONFIG_FILE;
use telemux::offline::{LoopbackPorts, collector_command, is_secret_file_name, prepare};

#[derive(Parser)]
#[command(about = "Run the real collector locally from the ConfigMap and Secret telemux rendered")]
struct Args {
    /// The collector's ConfigMap as JSON (`kubectl get configmap NAME -o json`).
    #[arg(long, value_name = "FILE")]
    config_map: PathBuf,
    /// The collector's Secret as JSON (`kubectl get secret NAME -o json`).
    #[arg(long, value_name = "FILE")]
    secret: PathBuf,
    /// Where to write the config files and the Secret's files (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// OTLP/gRPC port on 127.0.0.1 (default: a free port).
    #[arg(long)]
    grpc_port: Option<u16>,
    /// OTLP/HTTP port on 127.0.0.1 (default: a free port).
    #[arg(long)]
    http_port: Option<u16>,
    /// health_check port on 127.0.0.1 (default: a free port).
    #[arg(long)]
    health_port: Option<u16>,
    /// The collector's own Prometheus metrics port on 127.0.0.1 (default: a free port).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Serve the collector's own metrics on every address (as in a pod) instead of loopback,
    /// so that an EndpointSlice naming this host's address reaches them.
    #[arg(long)]
    metrics_on_every_address: bool,
    /// The collector binary to run; without it, only print its arguments.
    #[arg(long)]
    otelcol: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("telemux-local-collector: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let config_map = read_json(&args.config_map)?;
    let config = config_map
        .get("data")
        .and_then(|data| data.get(CONFIG_FILE))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{}: no data.\"{CONFIG_FILE}\"", args.config_map.display()))?;
    let files = secret_files(&read_json(&args.secret)?)
        .map_err(|e| format!("{}: {e}", args.secret.display()))?;

    let port = |p: Option<u16>| {
        p.map_or_else(
            || {
                telemux_testkit::free_port()
                    .map_err(|e| format!("finding a free loopback port: {e}"))
            },
            Ok,
        )
    };
    let ports = LoopbackPorts {
        grpc: port(args.grpc_port)?,
        http: port(args.http_port)?,
        health: port(args.health_port)?,
        metrics: port(args.metrics_port)?,
    };
    let mut collector_args = prepare(&args.dir, config, &files, ports)
        .map_err(|e| format!("writing into {}: {e}", args.dir.display()))?;
    if args.metrics_on_every_address {
        let file = args.dir.join("metrics-everywhere.yaml");
        std::fs::write(&file, ports.metrics_on_every_address_config())
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        collector_args.push(format!("--config=file:{}", file.display()));
    }

    let Some(otelcol) = args.otelcol else {
        for arg in &collector_args {
            println!("{arg}");
        }
        return Ok(());
    };
    eprintln!(
        "telemux-local-collector: OTLP gRPC 127.0.0.1:{}, OTLP HTTP 127.0.0.1:{}, health 127.0.0.1:{}, metrics 127.0.0.1:{}",
        ports.grpc, ports.http, ports.health, ports.metrics
    );
    exec(&otelcol, &collector_args)
}

#[cfg(unix)]
fn exec(otelcol: &Path, args: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    // Only returns on failure.
    let err = collector_command(otelcol).args(args).exec();
    Err(format!("running {}: {err}", otelcol.display()))
}

#[cfg(not(unix))]
fn exec(otelcol: &Path, args: &[String]) -> Result<(), String> {
    let status = collector_command(otelcol)
        .args(args)
        .status()
        .map_err(|e| format!("running {}: {e}", otelcol.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// The Secret's `data`, decoded: file name to content, as the volume mount writes them.
fn secret_files(secret: &Value) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let data = secret
        .get("data")
        .and_then(Value::as_object)
        .ok_or("no data")?;
    data.iter()
        .map(|(name, value)| {
            let encoded = value
                .as_str()
                .ok_or(format!("data.{name} is not a string"))?;
            let content = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("data.{name}: {e}"))?;
            if !is_secret_file_name(name) {
                return Err(format!("data.{name}: not a file name"));
            }
            Ok((name.clone(), content))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_the_secret_files_and_points_the_config_at_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, value: Value| {
            let path = dir.path().join(name);
            std::fs::write(&path, value.to_string()).unwrap();
            path
        };
        let config_map = write(
            "cm.json",
            json!({"data": {"config.yaml": "a: ${file:/etc/telemux/secrets/htpasswd}\n"}}),
        );
        let secret = write(
            "secret.json",
            json!({"data": {"htpasswd": base64::engine::general_purpose::STANDARD.encode("acme:$2b$hash")}}),
        );
        let out = dir.path().join("out");
        run(Args {
            config_map,
            secret,
            dir: out.clone(),
            grpc_port: Some(14317),
            http_port: Some(14318),
            health_port: None,
            metrics_port: Some(14888),
            metrics_on_every_address: true,
            otelcol: None,
        })
        .unwrap();
        let secrets = out.join("secrets");
        assert_eq!(
            std::fs::read_to_string(secrets.join("htpasswd")).unwrap(),
            "acme:$2b$hash"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("config.yaml")).unwrap(),
            format!("a: ${{file:{}/htpasswd}}\n", secrets.display())
        );
        let loopback = std::fs::read_to_string(out.join("loopback.yaml")).unwrap();
        assert!(loopback.contains("endpoint: 127.0.0.1:14317"), "{loopback}");
        assert!(loopback.contains("endpoint: 127.0.0.1:14318"), "{loopback}");
        // --metrics-on-every-address: the metrics listener merged last, on 0.0.0.0.
        let everywhere = std::fs::read_to_string(out.join("metrics-everywhere.yaml")).unwrap();
        assert!(everywhere.contains("host: 0.0.0.0") && everywhere.contains("port: 14888"));
    }

    #[test]
    fn refuses_secret_keys_that_are_not_file_names() {
        for name in ["../x", "a/b", ""] {
            let secret = json!({"data": {name: "eA=="}});
            assert!(secret_files(&secret).is_err(), "{name:?}");
        }
        assert!(secret_files(&json!({"data": {"x": "not base64!"}})).is_err());
        assert!(secret_files(&json!({})).is_err());
    }
}
