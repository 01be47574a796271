//! The real collector as a local process, running exactly the ConfigMap and Secret the operator
//! wrote, in a directory laid out like its pod ([`telemux::offline`]): the Secret's files are
//! written where its volume would be mounted, the queue volume is a directory beside them that
//! outlives the process (as the pod's volume outlives its container), and a second config file
//! moves every listener to a free loopback port (a pod has its own network namespace, a process
//! does not). The `telemux-local-collector` binary prepares the same directory to run the
//! collector outside the tests (`make demo`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use telemux::offline::{LoopbackPorts, PodDir, collector_command, prepare};

use crate::cgroup::MemoryCgroup;
use crate::free_port;

/// How long a SIGTERM'd collector may take to flush its queues to disk and exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

pub struct LocalCollector {
    pub otlp_http: String,
    pub otlp_grpc: String,
    metrics_url: String,
    health_url: String,
    log: PathBuf,
    binary: PathBuf,
    ports: LoopbackPorts,
    args: Vec<String>,
    child: tokio::process::Child,
    /// The memory cgroup every process of this collector runs in, if any. Declared after
    /// `child`, so that a dropped collector's process is killed before the cgroup is removed.
    cgroup: Option<MemoryCgroup>,
    /// Starts of the collector process so far (restarts included), for log file names.
    starts: usize,
    dir: tempfile::TempDir,
}

/// Four free loopback ports.
pub fn free_loopback_ports() -> std::io::Result<LoopbackPorts> {
    Ok(LoopbackPorts {
        grpc: free_port()?,
        http: free_port()?,
        health: free_port()?,
        metrics: free_port()?,
    })
}

impl LocalCollector {
    /// Starts `binary` with the rendered `config` and the Secret's `files`, and waits until its
    /// health check answers.
    pub async fn start(binary: &Path, config: &str, files: &BTreeMap<String, Vec<u8>>) -> Self {
        Self::start_with(binary, config, files, None, false).await
    }

    /// Like [`Self::start`], but the collector's own metrics listen on every address, as in a
    /// pod, so that the operator can read them through an EndpointSlice naming this host's
    /// address ([`crate::host_address`]; loopback is refused there). [`Self::metrics_port`]
    /// says where.
    pub async fn start_serving_metrics(
        binary: &Path,
        config: &str,
        files: &BTreeMap<String, Vec<u8>>,
    ) -> Self {
        Self::start_with(binary, config, files, None, true).await
    }

    /// The port the collector serves its own metrics on.
    pub fn metrics_port(&self) -> u16 {
        self.ports.metrics
    }

    /// Like [`Self::start`], but the collector runs in a memory cgroup of its own limited to
    /// `limit_bytes`, as in a container with that memory limit: it joins the cgroup before it
    /// executes (so its memory_limiter reads the limit at start), and so does every process of
    /// a restart or rollout. `Err` says why no usable memory cgroup could be made here; the
    /// collector is then not started.
    pub async fn start_in_cgroup(
        binary: &Path,
        config: &str,
        files: &BTreeMap<String, Vec<u8>>,
        limit_bytes: u64,
    ) -> Result<Self, String> {
        let cgroup = MemoryCgroup::create(limit_bytes)?;
        Ok(Self::start_with(binary, config, files, Some(cgroup), false).await)
    }

    async fn start_with(
        binary: &Path,
        config: &str,
        files: &BTreeMap<String, Vec<u8>>,
        cgroup: Option<MemoryCgroup>,
        metrics_on_every_address: bool,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("telemux-collector-")
            .tempdir()
            .expect("a temporary directory");
        let ports = free_loopback_ports().expect("free loopback ports");
        let mut args =
            prepare(dir.path(), config, files, ports).expect("writing the collector's files");
        if metrics_on_every_address {
            let file = dir.path().join("metrics-everywhere.yaml");
            std::fs::write(&file, ports.metrics_on_every_address_config())
                .expect("writing the metrics listener's config");
            args.push(format!("--config=file:{}", file.display()));
        }
        let log = dir.path().join("collector.log");
        let child = spawn(binary, &args, &log, cgroup.as_ref());
        let mut collector = LocalCollector {
            otlp_http: format!("http://127.0.0.1:{}", ports.http),
            otlp_grpc: format!("127.0.0.1:{}", ports.grpc),
            metrics_url: format!("http://127.0.0.1:{}/metrics", ports.metrics),
            health_url: format!("http://127.0.0.1:{}/", ports.health),
            log,
            binary: binary.to_owned(),
            ports,
            args,
            child,
            cgroup,
            starts: 1,
            dir,
        };
        collector.wait_healthy().await;
        collector
    }

    /// The memory cgroup the collector runs in (see [`Self::start_in_cgroup`]).
    pub fn cgroup(&self) -> Option<&MemoryCgroup> {
        self.cgroup.as_ref()
    }

    /// The id of the current collector process, for readings of `/proc/<pid>`; `None` once it
    /// has been waited for.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// How the current collector process ended, or `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .try_wait()
            .expect("polling the collector process")
    }

    /// The directory standing in for the pod's queue volume.
    pub fn queue_dir(&self) -> PathBuf {
        PodDir::new(self.dir.path()).queue_dir()
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the collector exited ({status}):\n{}", self.log_text());
            }
            let healthy = client
                .get(&self.health_url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("the collector never became healthy:\n{}", self.log_text());
            }
            // Fine enough for the benchmarks' startup times (tenths of a second).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM, as the kubelet does to a pod being replaced, and waits for a clean exit
    /// (the collector shuts its pipelines down and its queues keep what was not delivered).
    pub async fn terminate(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid, which has not been reaped (id() is Some).
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to the collector");
        match tokio::time::timeout(SHUTDOWN_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => assert!(
                status.success(),
                "the collector exited with {status} on SIGTERM:\n{}",
                self.log_text()
            ),
            Ok(Err(e)) => panic!("waiting for the collector: {e}"),
            Err(_) => panic!(
                "the collector did not exit within {SHUTDOWN_GRACE:?} of SIGTERM:\n{}",
                self.log_text()
            ),
        }
    }

    /// SIGTERM, then a new process on the same queue volume, Secret and ports: a container
    /// restart.
    pub async fn restart(&mut self) {
        self.terminate().await;
        self.respawn().await;
    }

    /// SIGTERM, then a new process with a new `config` and Secret `files` on the same queue
    /// volume and ports: what a rollout does to one collector pod of a StatefulSet.
    pub async fn roll_to(&mut self, config: &str, files: &BTreeMap<String, Vec<u8>>) {
        self.terminate().await;
        self.args = prepare(self.dir.path(), config, files, self.ports)
            .expect("writing the collector's files");
        self.respawn().await;
    }

    async fn respawn(&mut self) {
        self.starts += 1;
        self.log = self
            .dir
            .path()
            .join(format!("collector.{}.log", self.starts));
        self.child = spawn(&self.binary, &self.args, &self.log, self.cgroup.as_ref());
        self.wait_healthy().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The collector's own metrics (Prometheus text).
    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .expect("scraping the collector's metrics")
            .text()
            .await
            .unwrap()
    }

    /// Sum of every sample of `metric` whose labels contain all of `labels` (`key="value"`).
    pub async fn metric_sum(&self, metric: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (up to 30 s) until [`Self::metric_sum`] reaches `at_least`; panics otherwise.
    pub async fn wait_metric_at_least(&self, metric: &str, labels: &[&str], at_least: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let sum = self.metric_sum(metric, labels).await;
            if sum >= at_least {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let family = metric.trim_end_matches("_total");
                let samples: Vec<String> = self
                    .metrics()
                    .await
                    .lines()
                    .filter(|l| l.contains(family))
                    .map(str::to_owned)
                    .collect();
                panic!(
                    "collector metric {metric}{labels:?} is {sum}, expected >= {at_least}; samples:\n{}",
                    samples.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn spawn(
    binary: &Path,
    args: &[String],
    log: &Path,
    cgroup: Option<&MemoryCgroup>,
) -> tokio::process::Child {
    let out = std::fs::File::create(log).expect("creating the collector's log");
    let mut command = tokio::process::Command::from(collector_command(binary));
    command
        .args(args)
        .stdout(Stdio::from(out.try_clone().expect("a log file handle")))
        .stderr(Stdio::from(out))
        .kill_on_drop(true);
    if let Some(cgroup) = cgroup {
        let hook = cgroup
            .pre_exec_hook()
            .unwrap_or_else(|e| panic!("opening {}/cgroup.procs: {e}", cgroup.path().display()));
        // SAFETY: the hook only calls getpid and write on a file opened beforehand, which are
        // async-signal-safe, and allocates nothing (see `MemoryCgroup::pre_exec_hook`).
        unsafe { command.pre_exec(hook) };
    }
    command.spawn().expect("starting the collector")
}
