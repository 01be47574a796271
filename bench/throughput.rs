//! Throughput of the rendered pipeline through the real collector, with telemux's exporter
//! (`telemux_appinsights`) against the contrib `azure_monitor` exporter telemux rendered before.
//!
//! For 1, 100 and 1,000 tenants: render the collector configuration telemux would roll out and
//! run the real collector with it as a local process (its exporters pointed at the ingestion
//! emulator) in three variants (`support::Exporter`): as rendered (`telemux_appinsights`,
//! persistent queue), rewritten to `azure_monitor` + `batch` as telemux rendered it before, and
//! `telemux_appinsights` with an in-memory queue. Drive each with telemetrygen over OTLP/gRPC
//! with one tenant's credential for a fixed time, then wait until what the collector accepted
//! reached the emulator. The tenant is either the first or the last entry of the routing table:
//! the routing connector evaluates its table in order, so the last entry pays for every
//! condition before it.
//!
//! The variants run interleaved, in rounds of alternating order (new, old, new-mem, then
//! new-mem, old, new, ...), so that the load of a shared machine falls on each alike. Besides
//! spans/s, each row reports what the collector process itself spent per delivered span (CPU
//! time from /proc/<pid>/stat, write calls and bytes from /proc/<pid>/io): on a machine shared
//! with telemetrygen and the emulator, these are the figures that belong to the exporter alone.
//!
//! Run with `make bench-throughput` (`BENCH_TENANTS=1,100` for other tenant counts); figures go
//! to bench/RESULTS.md. Compare ratios within one run: these machines are shared.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use support::{Exporter, binary, ikey, render, tenant_id};
use telemux_testkit::collector::LocalCollector;
use telemux_testkit::ingestion::IngestionEmulator;

const RUN: Duration = Duration::from_secs(15);
const WORKERS: usize = 2;
const ROUNDS: usize = 3;
/// How long delivery may stall (nothing new arriving) before the rest counts as lost: longer than
/// azure_monitor's 10 s flush interval.
const STALL: Duration = Duration::from_secs(20);
/// Bound on waiting for delivery after the load stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(180);
/// Linux USER_HZ: the unit of utime and stime in /proc/<pid>/stat.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

struct Measured {
    seconds: f64,
    accepted: f64,
    refused: f64,
    delivered: usize,
    /// From the end of the load to the last envelope that arrived.
    drain: Duration,
    /// CPU time of the collector process from the start of the load to the end of delivery.
    cpu_seconds: f64,
    /// Bytes the collector passed to write(2) and friends (files and sockets alike) and the
    /// number of those calls, over the same time.
    written: Io,
    /// Requests the emulator accepted for the tenant, and their (compressed) body bytes.
    requests: usize,
    request_bytes: usize,
}

impl Measured {
    fn accepted_per_second(&self) -> f64 {
        self.accepted / self.seconds
    }

    /// Delivered envelopes per second of load: what arrived, over the time it was sent in.
    fn delivered_per_second(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }

    fn cpu_micros_per_span(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.delivered.max(1) as f64
    }

    fn written_bytes_per_span(&self) -> f64 {
        self.written.bytes / self.delivered.max(1) as f64
    }

    fn write_calls_per_thousand_spans(&self) -> f64 {
        self.written.calls * 1e3 / self.delivered.max(1) as f64
    }

    fn spans_per_request(&self) -> f64 {
        self.delivered as f64 / self.requests.max(1) as f64
    }

    fn request_bytes_per_span(&self) -> f64 {
        self.request_bytes as f64 / self.delivered.max(1) as f64
    }
}

#[derive(Debug, Clone, Copy)]
struct Io {
    bytes: f64,
    calls: f64,
}

/// `wchar` and `syscw` of /proc/<pid>/io (all threads).
fn written(pid: u32) -> Io {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/<pid>/io");
    let field = |key: &str| -> f64 {
        io.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/{pid}/io"))
    };
    Io {
        bytes: field("wchar"),
        calls: field("syscw"),
    }
}

/// utime + stime of `pid`, all threads, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // After the parenthesised command name: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / CLOCK_TICKS_PER_SECOND
}

/// Requests the emulator accepted with items of `tenant`, and their body bytes.
fn requests_for(ingestion: &IngestionEmulator, tenant: usize) -> (usize, usize) {
    let key = ikey(tenant);
    ingestion
        .requests()
        .iter()
        .filter(|r| r.items_accepted > 0 && r.ikeys.iter().any(|k| k.eq_ignore_ascii_case(&key)))
        .fold((0, 0), |(n, bytes), r| (n + 1, bytes + r.body_bytes))
}

async fn measure(
    collector: &LocalCollector,
    pid: u32,
    telemetrygen: &Path,
    ingestion: &IngestionEmulator,
    tenant: usize,
    password: &str,
) -> Measured {
    let accepted_before = collector
        .metric_sum("otelcol_receiver_accepted_spans", &[])
        .await;
    let refused_before = collector
        .metric_sum("otelcol_receiver_refused_spans", &[])
        .await;
    let delivered_before = ingestion.count_for(&ikey(tenant));
    let (requests_before, request_bytes_before) = requests_for(ingestion, tenant);
    let cpu_before = cpu_seconds(pid);
    let written_before = written(pid);
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{password}", tenant_id(tenant)));
    let started = Instant::now();
    let status = tokio::process::Command::new(telemetrygen)
        .args(["traces", "--otlp-insecure", "--rate", "0"])
        .arg(format!("--otlp-endpoint={}", collector.otlp_grpc))
        .arg(format!("--otlp-header=Authorization=\"Basic {auth}\""))
        .arg(format!("--duration={}s", RUN.as_secs()))
        .arg(format!("--workers={WORKERS}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("running telemetrygen");
    let load_ended = Instant::now();
    let seconds = (load_ended - started).as_secs_f64();
    assert!(status.success(), "telemetrygen failed: {status}");
    let accepted = collector
        .metric_sum("otelcol_receiver_accepted_spans", &[])
        .await
        - accepted_before;
    let refused = collector
        .metric_sum("otelcol_receiver_refused_spans", &[])
        .await
        - refused_before;
    // Delivery: wait until everything accepted reached the tenant's ingestion, or nothing new
    // arrived for STALL. A throughput that loses data is no throughput: "delivered" is what
    // arrived, whatever the exporter's own counters say.
    let mut delivered = 0;
    let mut last_arrival = load_ended;
    loop {
        let now = ingestion.count_for(&ikey(tenant)) - delivered_before;
        if now > delivered {
            delivered = now;
            last_arrival = Instant::now();
        }
        if delivered as f64 >= accepted
            || last_arrival.elapsed() > STALL
            || load_ended.elapsed() > DRAIN_LIMIT
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_seconds = cpu_seconds(pid) - cpu_before;
    let written_after = written(pid);
    let (requests, request_bytes) = requests_for(ingestion, tenant);
    Measured {
        seconds,
        accepted,
        refused,
        delivered,
        drain: last_arrival.saturating_duration_since(load_ended),
        cpu_seconds,
        written: Io {
            bytes: written_after.bytes - written_before.bytes,
            calls: written_after.calls - written_before.calls,
        },
        requests: requests - requests_before,
        request_bytes: request_bytes - request_bytes_before,
    }
}

struct Row {
    tenants: usize,
    sender: &'static str,
    exporter: Exporter,
    measured: Measured,
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0), |(s, n), v| (s + v, n + 1));
    sum / f64::from(n)
}

#[tokio::main]
async fn main() {
    let otelcol = binary("OTELCOL_BIN", "collector");
    let telemetrygen = binary("TELEMETRYGEN_BIN", "telemetrygen");
    let credential = telemux::credentials::issue_credential().expect("a credential");
    let tenant_counts: Vec<usize> = match std::env::var("BENCH_TENANTS") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("BENCH_TENANTS: a comma-separated list")
            })
            .collect(),
        Err(_) => vec![1, 100, 1_000],
    };

    println!(
        "| tenants | sending tenant | exporter | round | spans/s accepted | refused | accepted | delivered | spans/s delivered | drain | collector CPU µs/span | written B/span | write calls/1k spans | spans/request | request B/span |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for &tenants in &tenant_counts {
        let senders: &[(usize, &'static str)] = if tenants == 1 {
            &[(0, "only")]
        } else {
            &[(0, "first"), (tenants - 1, "last")]
        };
        for round in 1..=ROUNDS {
            let mut order = Exporter::ALL.to_vec();
            if round % 2 == 0 {
                order.reverse();
            }
            for exporter in order {
                let ingestion = IngestionEmulator::start().await.expect("the emulator");
                let (rendered, files) = render(tenants, &credential.bcrypt_hash, &|key| {
                    ingestion.connection_string(key)
                });
                let config = exporter.config(&rendered);
                let collector = LocalCollector::start(&otelcol, &config, &files).await;
                let pid = collector.pid().expect("the collector's pid");
                for &(tenant, sender) in senders {
                    let m = measure(
                        &collector,
                        pid,
                        &telemetrygen,
                        &ingestion,
                        tenant,
                        &credential.password,
                    )
                    .await;
                    println!(
                        "| {tenants} | {sender} | {} | {round} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.1} s | {:.1} | {:.0} | {:.1} | {:.0} | {:.0} |",
                        exporter.label(),
                        m.accepted_per_second(),
                        m.refused,
                        m.accepted,
                        m.delivered,
                        m.delivered_per_second(),
                        m.drain.as_secs_f64(),
                        m.cpu_micros_per_span(),
                        m.written_bytes_per_span(),
                        m.write_calls_per_thousand_spans(),
                        m.spans_per_request(),
                        m.request_bytes_per_span(),
                    );
                    rows.push(Row {
                        tenants,
                        sender,
                        exporter,
                        measured: m,
                    });
                }
                collector.stop().await;
                drop(ingestion);
            }
        }
    }

    println!();
    println!(
        "Means over {ROUNDS} rounds; \"vs old\" is the variant's figure over azure_monitor's (spans/s: > 1 is faster; CPU: > 1 is costlier)."
    );
    println!();
    println!(
        "| tenants | sending tenant | exporter | spans/s accepted | spans/s delivered (range) | delivered / accepted | drain | CPU µs/span | written B/span | write calls/1k spans | accepted vs old | delivered vs old | CPU vs old |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &tenants in &tenant_counts {
        for sender in ["only", "first", "last"] {
            let of = |exporter: Exporter| -> Vec<&Measured> {
                rows.iter()
                    .filter(|r| {
                        r.tenants == tenants && r.sender == sender && r.exporter == exporter
                    })
                    .map(|r| &r.measured)
                    .collect()
            };
            let old = of(Exporter::AzureMonitor);
            if old.is_empty() {
                continue;
            }
            let old_accepted = mean(old.iter().map(|m| m.accepted_per_second()));
            let old_delivered = mean(old.iter().map(|m| m.delivered_per_second()));
            let old_cpu = mean(old.iter().map(|m| m.cpu_micros_per_span()));
            for exporter in Exporter::ALL {
                let ms = of(exporter);
                let accepted = mean(ms.iter().map(|m| m.accepted_per_second()));
                let delivered = mean(ms.iter().map(|m| m.delivered_per_second()));
                let (lowest, highest) = ms
                    .iter()
                    .map(|m| m.delivered_per_second())
                    .fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
                let share = ms.iter().map(|m| m.delivered as f64).sum::<f64>()
                    / ms.iter().map(|m| m.accepted).sum::<f64>();
                let drain = mean(ms.iter().map(|m| m.drain.as_secs_f64()));
                let cpu = mean(ms.iter().map(|m| m.cpu_micros_per_span()));
                let bytes = mean(ms.iter().map(|m| m.written_bytes_per_span()));
                let calls = mean(ms.iter().map(|m| m.write_calls_per_thousand_spans()));
                println!(
                    "| {tenants} | {sender} | {} | {accepted:.0} | {delivered:.0} ({lowest:.0}–{highest:.0}) | {share:.3} | {drain:.1} s | {cpu:.1} | {bytes:.0} | {calls:.1} | {:.2} | {:.2} | {:.2} |",
                    exporter.label(),
                    accepted / old_accepted,
                    delivered / old_delivered,
                    cpu / old_cpu,
                );
            }
        }
    }
}
