//! Memory per tenant of an idle collector, with telemux's exporter (`telemux_appinsights`)
//! against the contrib `azure_monitor` exporter telemux rendered before.
//!
//! For 1, 100 and 500 tenants and each exporter variant (`support::Exporter`): render the
//! collector configuration telemux would roll out, start the real collector on it as a local
//! process (testkit's `LocalCollector`), wait until it is healthy, leave it idle, then read its
//! resident set size (VmRSS in /proc/<pid>/status) and count the files it holds open in its
//! queue directory.
//! The cost of one tenant is (RSS − RSS at 1 tenant) / (tenants − 1). Each configuration runs
//! twice, the second round in the opposite order.
//!
//! Run with `make bench-memory`; figures go to bench/RESULTS.md.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Exporter, binary, render};
use telemux_testkit::collector::LocalCollector;
use telemux_testkit::ingestion::IngestionEmulator;

/// How long the collector sits idle after it reports healthy, before its RSS is read.
const IDLE: Duration = Duration::from_secs(10);

/// How many times each configuration is measured, rounds in opposite orders.
const ROUNDS: usize = 2;

struct Idle {
    startup: Duration,
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    queue_files_open: usize,
    queue_bytes: u64,
}

/// `key:   <n> kB` of /proc/<pid>/status.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

/// Open file descriptors of `pid` that point into `dir`.
fn open_files_under(pid: u32, dir: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// Total size of the files in `dir` (not recursive; the queue directory is flat).
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

async fn idle(otelcol: &Path, config: &str, files: &BTreeMap<String, Vec<u8>>) -> Idle {
    let started = Instant::now();
    let collector = LocalCollector::start(otelcol, config, files).await;
    let startup = started.elapsed();
    tokio::time::sleep(IDLE).await;
    let pid = collector.pid().expect("the collector's pid");
    let queue = collector.queue_dir();
    let measured = Idle {
        startup,
        rss_kib: status_kib(pid, "VmRSS"),
        anon_kib: status_kib(pid, "RssAnon"),
        file_kib: status_kib(pid, "RssFile"),
        queue_files_open: open_files_under(pid, &queue),
        queue_bytes: bytes_under(&queue),
    };
    collector.stop().await;
    measured
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0), |(s, n), v| (s + v, n + 1));
    sum / f64::from(n)
}

const TENANTS: [usize; 3] = [1, 100, 500];

/// The configurations of one tenant count.
struct Configs {
    tenants: usize,
    /// Size of the configuration as rendered.
    rendered_bytes: usize,
    variants: Vec<(Exporter, String)>,
    files: BTreeMap<String, Vec<u8>>,
}

#[tokio::main]
async fn main() {
    let otelcol = binary("OTELCOL_BIN", "collector");
    let credential = telemux::credentials::issue_credential().expect("a credential");
    // Idle: nothing is sent, but the exporters point at a live endpoint all the same.
    let ingestion = IngestionEmulator::start().await.expect("the emulator");
    let configs: Vec<Configs> = TENANTS
        .iter()
        .map(|&tenants| {
            let (rendered, files) = render(tenants, &credential.bcrypt_hash, &|key| {
                ingestion.connection_string(key)
            });
            let variants = Exporter::ALL
                .iter()
                .map(|&e| (e, e.config(&rendered)))
                .collect();
            Configs {
                tenants,
                rendered_bytes: rendered.len(),
                variants,
                files,
            }
        })
        .collect();

    println!(
        "| tenants | exporter | round | startup | RSS | anon | file | queue files open | queue dir |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut measured: Vec<(usize, Exporter, Idle)> = Vec::new();
    for round in 1..=ROUNDS {
        let mut order: Vec<(usize, Exporter)> = configs
            .iter()
            .flat_map(|c| c.variants.iter().map(|(e, _)| (c.tenants, *e)))
            .collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for (tenants, exporter) in order {
            let c = configs.iter().find(|c| c.tenants == tenants).unwrap();
            let config = &c.variants.iter().find(|v| v.0 == exporter).unwrap().1;
            let m = idle(&otelcol, config, &c.files).await;
            println!(
                "| {tenants} | {} | {round} | {:.1} s | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {:.1} MiB |",
                exporter.label(),
                m.startup.as_secs_f64(),
                mib(m.rss_kib as f64),
                mib(m.anon_kib as f64),
                mib(m.file_kib as f64),
                m.queue_files_open,
                mib(m.queue_bytes as f64 / 1024.0),
            );
            measured.push((tenants, exporter, m));
        }
    }

    println!();
    println!(
        "Means over {ROUNDS} rounds. Per added tenant: (RSS − RSS at 1 tenant) / (tenants − 1)."
    );
    println!();
    println!(
        "| tenants | exporter | config | startup | RSS | RSS / tenants | per added tenant | anon per added tenant | queue files open | queue dir | RSS vs azure_monitor |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let avg = |tenants: usize, exporter: Exporter, f: &dyn Fn(&Idle) -> f64| {
        mean(
            measured
                .iter()
                .filter(|(n, e, _)| *n == tenants && *e == exporter)
                .map(|(_, _, m)| f(m)),
        )
    };
    for c in &configs {
        let tenants = c.tenants;
        for exporter in Exporter::ALL {
            let rss = avg(tenants, exporter, &|m| mib(m.rss_kib as f64));
            let anon = avg(tenants, exporter, &|m| mib(m.anon_kib as f64));
            let (per_tenant, anon_per_tenant) = if tenants > 1 {
                let base = avg(1, exporter, &|m| mib(m.rss_kib as f64));
                let anon_base = avg(1, exporter, &|m| mib(m.anon_kib as f64));
                let added = (tenants - 1) as f64;
                (
                    format!("{:.2} MiB", (rss - base) / added),
                    format!("{:.2} MiB", (anon - anon_base) / added),
                )
            } else {
                ("(baseline)".to_owned(), "(baseline)".to_owned())
            };
            let old = avg(tenants, Exporter::AzureMonitor, &|m| mib(m.rss_kib as f64));
            println!(
                "| {tenants} | {} | {:.2} MiB | {:.1} s | {rss:.1} MiB | {:.2} MiB | {per_tenant} | {anon_per_tenant} | {:.0} | {:.1} MiB | {:.2} |",
                exporter.label(),
                c.rendered_bytes as f64 / (1024.0 * 1024.0),
                avg(tenants, exporter, &|m| m.startup.as_secs_f64()),
                rss / tenants as f64,
                avg(tenants, exporter, &|m| m.queue_files_open as f64),
                avg(tenants, exporter, &|m| mib(m.queue_bytes as f64 / 1024.0)),
                rss / old,
            );
        }
    }
}
