//! The collector outside a pod. A [`PodDir`] is a directory that stands in for what Kubernetes
//! gives a collector pod: `secrets/` for the Secret's volume, `queue/` for the queue volume and
//! the configuration file beside them. The validator checks configurations in one, with
//! placeholder files in place of the Secret's ([`PodDir::write_placeholder_secret_files`]); the
//! test kit and benchmarks run the real collector in one, with [`prepare`].
//!
//! Outside a pod, two things differ. The mount paths of [`crate::layout`] do not exist, so a
//! configuration rendered for the pod has them replaced by the directory's. And processes share
//! the host's network, so [`LoopbackPorts`] moves every listener to a port of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::layout::{
    BLOB_CONNECTION_STRING_FILE, CONFIG_FILE, CONNECTION_STRING_ENV, HTPASSWD_FILE, QUEUE_DIR,
    SECRETS_DIR,
};

/// Why a [`PodDir`] could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Kubernetes refuses such Secret keys too; written as a file, it would escape the volume.
    #[error("{0:?} is not a file name a Secret volume can hold")]
    NotAFileName(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Whether a Secret key can be written as a file of the Secret's volume (and nowhere else).
pub fn is_secret_file_name(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name.starts_with(".."))
}

const PLACEHOLDER_CONNECTION_STRING: &str =
    "InstrumentationKey=00000000-0000-0000-0000-000000000000";
const PLACEHOLDER_STORAGE_CONNECTION_STRING: &str = "DefaultEndpointsProtocol=https;AccountName=placeholder;AccountKey=cGxhY2Vob2xkZXI=;EndpointSuffix=core.windows.net";

/// What stands in for the Secret file `name` when a configuration is only checked: content the
/// component reading it accepts, and no secret.
pub fn placeholder_secret_file(name: &str) -> &'static str {
    match name {
        HTPASSWD_FILE => "",
        BLOB_CONNECTION_STRING_FILE => PLACEHOLDER_STORAGE_CONNECTION_STRING,
        _ => PLACEHOLDER_CONNECTION_STRING,
    }
}

/// The Secret files a configuration rendered for the pod reads: each name that follows
/// `SECRETS_DIR/`. A name ends at the first character no Secret file name of
/// [`crate::layout`] holds (`}` of `${file:...}`, a quote, a line end).
pub fn secret_files_read_by(config: &str) -> BTreeSet<String> {
    let prefix = format!("{SECRETS_DIR}/");
    config
        .match_indices(&prefix)
        .filter_map(|(at, _)| {
            let rest = &config[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// A directory laid out like a collector pod's volumes.
#[derive(Debug, Clone)]
pub struct PodDir {
    root: PathBuf,
}

impl PodDir {
    pub fn new(root: &Path) -> Self {
        PodDir {
            root: root.to_owned(),
        }
    }

    /// Stands in for [`SECRETS_DIR`].
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// Stands in for [`QUEUE_DIR`]. Never removed here: like the pod's volume, it outlives
    /// the processes (and the Secrets) that use it.
    pub fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// The configuration the collector runs.
    pub fn config_file(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// Writes the Secret's `files` into [`Self::secrets_dir`]. A new Secret replaces the old one
    /// whole, as a re-mounted Secret volume does.
    pub fn write_secret_files<N, C>(
        &self,
        files: impl IntoIterator<Item = (N, C)>,
    ) -> Result<(), OfflineError>
    where
        N: AsRef<str>,
        C: AsRef<[u8]>,
    {
        let secrets = self.secrets_dir();
        if secrets.exists() {
            std::fs::remove_dir_all(&secrets)?;
        }
        std::fs::create_dir_all(&secrets)?;
        for (name, content) in files {
            let name = name.as_ref();
            if !is_secret_file_name(name) {
                return Err(OfflineError::NotAFileName(name.to_owned()));
            }
            std::fs::write(secrets.join(name), content)?;
        }
        Ok(())
    }

    /// Writes a placeholder ([`placeholder_secret_file`]) for each Secret file of `names`, in
    /// place of the Secret: enough for the collector to build every component, with no secret
    /// on the disk.
    pub fn write_placeholder_secret_files<N: AsRef<str>>(
        &self,
        names: impl IntoIterator<Item = N>,
    ) -> Result<(), OfflineError> {
        self.write_secret_files(names.into_iter().map(|name| {
            let placeholder = placeholder_secret_file(name.as_ref());
            (name, placeholder)
        }))
    }

    /// Writes a configuration that already names this directory's paths.
    pub fn write_config(&self, config: &str) -> Result<PathBuf, OfflineError> {
        let path = self.config_file();
        std::fs::write(&path, config)?;
        Ok(path)
    }

    /// Writes a configuration rendered for the pod (the ConfigMap's), its mount paths replaced
    /// by this directory's.
    pub fn write_pod_config(&self, config: &str) -> Result<PathBuf, OfflineError> {
        let config = config
            .replace(SECRETS_DIR, &self.secrets_dir().to_string_lossy())
            .replace(QUEUE_DIR, &self.queue_dir().to_string_lossy());
        self.write_config(&config)
    }
}

/// The loopback ports a collector outside a pod listens on instead of its pod's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackPorts {
    pub grpc: u16,
    pub http: u16,
    pub health: u16,
    pub metrics: u16,
}

impl LoopbackPorts {
    /// A configuration to merge after the rendered one: every listener the renderer configures
    /// (OTLP receiver, health check, own metrics) moves to these ports on 127.0.0.1.
    pub fn config(&self) -> String {
        let LoopbackPorts {
            grpc,
            http,
            health,
            metrics,
        } = self;
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
             extensions:\n  health_check:\n    endpoint: 127.0.0.1:{health}\n\
             service:\n  telemetry:\n    metrics:\n      readers:\n        - pull:\n            exporter:\n              prometheus:\n                host: 127.0.0.1\n                port: {metrics}\n"
        )
    }

    /// A configuration to merge after [`Self::config`]: the collector's own metrics listen on
    /// every address, as in a pod, so the operator can read them through an EndpointSlice
    /// naming this host's address (EndpointSlices refuse loopback).
    pub fn metrics_on_every_address_config(&self) -> String {
        format!(
            "service:\n  telemetry:\n    metrics:\n      readers:\n        - pull:\n            exporter:\n              prometheus:\n                host: 0.0.0.0\n                port: {}\n",
            self.metrics
        )
    }
}

/// Writes into `dir` what a pod gets from Kubernetes: the Secret's `files` (the volume mount),
/// the ConfigMap's `config` with its mount paths pointing into `dir` (`config.yaml`), and
/// `loopback.yaml` moving every listener to `ports`. Returns the collector's arguments
/// (`--config` for both files, in that order).
pub fn prepare(
    dir: &Path,
    config: &str,
    files: &BTreeMap<String, Vec<u8>>,
    ports: LoopbackPorts,
) -> Result<Vec<String>, OfflineError> {
    let pod = PodDir::new(dir);
    pod.write_secret_files(files)?;
    let config = pod.write_pod_config(config)?;
    let loopback = dir.join("loopback.yaml");
    std::fs::write(&loopback, ports.config())?;
    Ok([config, loopback]
        .iter()
        .map(|f| format!("--config=file:{}", f.display()))
        .collect())
}

/// A command running the collector `binary` without the connection string a shell may hold.
pub fn collector_command(binary: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command.env_remove(CONNECTION_STRING_ENV);
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{CollectorSources, plan_collector, render_collector_config};

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_new_secret_replaces_the_old_one_and_the_queue_stays() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodDir::new(dir.path());
        pod.write_secret_files(&files(&[("old", "1"), ("kept", "1")]))
            .unwrap();
        std::fs::create_dir_all(pod.queue_dir()).unwrap();
        std::fs::write(pod.queue_dir().join("item"), "queued").unwrap();
        pod.write_secret_files(&files(&[("kept", "2")])).unwrap();
        assert!(!pod.secrets_dir().join("old").exists());
        assert_eq!(
            std::fs::read_to_string(pod.secrets_dir().join("kept")).unwrap(),
            "2"
        );
        assert!(pod.queue_dir().join("item").exists());
    }

    #[test]
    fn secret_keys_that_are_not_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodDir::new(dir.path());
        for name in ["../x", "a/b", ""] {
            assert!(
                matches!(
                    pod.write_secret_files([(name, "x")]),
                    Err(OfflineError::NotAFileName(_))
                ),
                "{name:?}"
            );
        }
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn a_pod_config_points_at_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodDir::new(dir.path());
        let written = pod
            .write_pod_config(&format!(
                "a: ${{file:{SECRETS_DIR}/{}}}\nb: {QUEUE_DIR}\n",
                crate::layout::HTPASSWD_FILE
            ))
            .unwrap();
        assert_eq!(written, dir.path().join(CONFIG_FILE));
        assert_eq!(
            std::fs::read_to_string(written).unwrap(),
            format!(
                "a: ${{file:{}/htpasswd}}\nb: {}\n",
                pod.secrets_dir().display(),
                pod.queue_dir().display()
            )
        );
    }

    /// The names found in a rendered configuration are exactly the Secret's files, so the
    /// placeholders written for a configuration read as text are those a plan would give.
    #[test]
    fn the_secret_files_read_by_a_rendered_config_are_the_plans() {
        let tenant = |id: &str| {
            serde_json::json!({
                "name": id,
                "spec": {
                    "tenantId": id,
                    "regions": ["westeurope"],
                    "applicationInsights": { "existing": {
                        "connectionStringSecretRef": { "name": "s", "key": "k" } } }
                },
                "passwordHash": "$2y$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWb",
                "connectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000001"
            })
        };
        let sources: CollectorSources = serde_json::from_value(serde_json::json!({
            "spec": {
                "region": "westeurope",
                "platform": { "applicationInsights": {
                    "connectionStringSecretRef": { "name": "p", "key": "k" } } },
                "regionalStorage": { "azureBlob": {
                    "connectionStringSecretRef": { "name": "b", "key": "k" },
                    "containers": { "traces": "t" } } }
            },
            "platformPasswordHash": "$2y$04$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWu",
            "platformConnectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000099",
            "blobConnectionString": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=ZmFrZQ==;BlobEndpoint=http://127.0.0.1:1/a;",
            "tenants": [tenant("acme"), tenant("globex")]
        }))
        .unwrap();
        let plan = plan_collector(&sources).unwrap();
        let rendered = render_collector_config(&plan).unwrap();
        let read = secret_files_read_by(&rendered.yaml);
        assert_eq!(
            read.iter().collect::<Vec<_>>(),
            plan.secret_files.keys().collect::<Vec<_>>()
        );
        assert!(read.contains(BLOB_CONNECTION_STRING_FILE), "{read:?}");
        assert!(read.contains("tenant-globex.connection-string"), "{read:?}");
    }

    #[test]
    fn a_secret_file_name_ends_where_the_reference_does() {
        let config = format!(
            "a: ${{file:{SECRETS_DIR}/tenant-a.connection-string}}\nb:\n  file: {SECRETS_DIR}/htpasswd\nc: \"{SECRETS_DIR}/x_1\"\nd: {SECRETS_DIR}/\n"
        );
        assert_eq!(
            secret_files_read_by(&config)
                .into_iter()
                .collect::<Vec<_>>(),
            ["htpasswd", "tenant-a.connection-string", "x_1"]
        );
    }

    #[test]
    fn placeholders_name_no_secret_and_suit_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodDir::new(dir.path());
        pod.write_placeholder_secret_files([
            HTPASSWD_FILE,
            BLOB_CONNECTION_STRING_FILE,
            "tenant-a.connection-string",
        ])
        .unwrap();
        let read = |name: &str| std::fs::read_to_string(pod.secrets_dir().join(name)).unwrap();
        assert_eq!(read(HTPASSWD_FILE), "");
        assert!(read(BLOB_CONNECTION_STRING_FILE).starts_with("DefaultEndpointsProtocol="));
        assert!(read("tenant-a.connection-string").starts_with("InstrumentationKey="));
    }

    /// The loopback file must move listeners the renderer configures, at the paths it puts
    /// them: a renamed receiver or extension would otherwise be left on its pod port.
    #[test]
    fn the_loopback_config_overrides_only_what_the_renderer_configures() {
        let sources: CollectorSources = serde_json::from_value(serde_json::json!({
            "spec": { "region": "westeurope" }, "tenants": []
        }))
        .unwrap();
        let plan = plan_collector(&sources).unwrap();
        let rendered: serde_json::Value =
            serde_saphyr::from_str(&render_collector_config(&plan).unwrap().yaml).unwrap();
        let ports = LoopbackPorts {
            grpc: 1,
            http: 2,
            health: 3,
            metrics: 4,
        };
        let loopback: serde_json::Value = serde_saphyr::from_str(&ports.config()).unwrap();
        fn leaves(value: &serde_json::Value, path: String, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        leaves(v, format!("{path}/{k}"), out);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        leaves(v, format!("{path}/{i}"), out);
                    }
                }
                _ => out.push(path),
            }
        }
        let mut paths = Vec::new();
        leaves(&loopback, String::new(), &mut paths);
        assert_eq!(paths.len(), 5, "{paths:?}");
        for path in paths {
            assert!(
                rendered.pointer(&path).is_some(),
                "the rendered config has no {path}"
            );
        }
    }
}
