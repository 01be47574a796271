//! Checks a rendered collector configuration with a real collector binary (`validate`) before
//! it is rolled out, in a [`PodDir`]. The binary sees placeholder files in place of the Secret's:
//! it resolves `${file:...}` references and builds every component, but no secret ever touches
//! the disk.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::layout::{BLOB_CONNECTION_STRING_FILE, HTPASSWD_FILE, SECRETS_DIR};
use crate::offline::{PodDir, collector_command};
use crate::pipeline::CollectorPlan;
use crate::pipeline::render::render_with_secrets_dir;

/// What a validator concluded about a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// The collector refused it; its own words.
    Rejected(String),
    /// It could not be checked (binary missing, crashed, timed out).
    Unchecked(String),
}

/// A seam for tests and for other ways of checking a configuration.
pub trait ConfigValidator: Send + Sync {
    fn validate<'a>(
        &'a self,
        plan: &'a CollectorPlan,
    ) -> Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;
    /// What does the checking, for condition messages.
    fn describe(&self) -> String;
}

/// The collector binary's `validate` command.
pub struct CollectorBinary {
    pub path: PathBuf,
    pub timeout: Duration,
}

const PLACEHOLDER_CONNECTION_STRING: &str =
    "InstrumentationKey=00000000-0000-0000-0000-000000000000";
const PLACEHOLDER_STORAGE_CONNECTION_STRING: &str = "DefaultEndpointsProtocol=https;AccountName=placeholder;AccountKey=cGxhY2Vob2xkZXI=;EndpointSuffix=core.windows.net";
/// Longest collector message kept in a condition.
const MAX_MESSAGE: usize = 1000;

impl CollectorBinary {
    async fn check(&self, plan: &CollectorPlan) -> Verdict {
        let dir = match tempfile::Builder::new()
            .prefix("telemux-validate-")
            .tempdir()
        {
            Ok(dir) => dir,
            Err(e) => {
                return Verdict::Unchecked(format!("cannot create a temporary directory: {e}"));
            }
        };
        let pod = PodDir::new(dir.path());
        let secrets = pod.secrets_dir();
        let config_path = pod.config_file();
        let placeholders: Vec<(String, &str)> = plan
            .secret_files
            .keys()
            .map(|name| {
                let placeholder = match name.as_str() {
                    HTPASSWD_FILE => "",
                    BLOB_CONNECTION_STRING_FILE => PLACEHOLDER_STORAGE_CONNECTION_STRING,
                    _ => PLACEHOLDER_CONNECTION_STRING,
                };
                (name.clone(), placeholder)
            })
            .collect();
        let written = match render_with_secrets_dir(plan, &secrets.to_string_lossy()) {
            // Blocking file writes, off the reconcilers' threads.
            Ok(rendered) => tokio::task::spawn_blocking(move || {
                pod.write_secret_files(placeholders)?;
                pod.write_config(&rendered.yaml).map(drop)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|written| written.map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            return Verdict::Unchecked(format!("cannot write the configuration to check: {e}"));
        }
        let run = tokio::process::Command::from(collector_command(&self.path))
            .arg("validate")
            .arg(format!("--config={}", config_path.display()))
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(self.timeout, run).await {
            Err(_) => Verdict::Unchecked(format!(
                "{} validate did not finish within {:?}",
                self.path.display(),
                self.timeout
            )),
            Ok(Err(e)) => Verdict::Unchecked(format!("cannot run {}: {e}", self.path.display())),
            Ok(Ok(output)) if output.status.success() => Verdict::Valid,
            Ok(Ok(output)) => {
                let text = String::from_utf8_lossy(&output.stderr).into_owned()
                    + &String::from_utf8_lossy(&output.stdout);
                Verdict::Rejected(collector_error(&text, &secrets.to_string_lossy()))
            }
        }
    }
}

impl ConfigValidator for CollectorBinary {
    fn validate<'a>(
        &'a self,
        plan: &'a CollectorPlan,
    ) -> Pin<Box<dyn Future<Output = Verdict> + Send + 'a>> {
        Box::pin(self.check(plan))
    }

    fn describe(&self) -> String {
        format!("{} validate", self.path.display())
    }
}

/// The collector's error, without its log noise or our temporary paths.
fn collector_error(output: &str, secrets_dir: &str) -> String {
    let line = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("Error:"))
        .map(str::trim)
        .unwrap_or_else(|| output.trim());
    let mut message = line.replace(secrets_dir, SECRETS_DIR);
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_collectors_error_line() {
        let output = "2026-11-22T01:00:00Z info something\nError: failed to build pipelines: error parsing regexp: `\\p{Emoji}`\n2026/11/22 collector server run finished with error";
        assert_eq!(
            collector_error(output, "/tmp/x"),
            "failed to build pipelines: error parsing regexp: `\\p{Emoji}`"
        );
    }

    #[test]
    fn long_errors_are_cut() {
        let output = format!("Error: {}", "é".repeat(2 * MAX_MESSAGE));
        let message = collector_error(&output, "/tmp/x");
        assert!(message.len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
