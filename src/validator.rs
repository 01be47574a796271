//! Checks a rendered collector configuration with a real collector binary (`validate`) before
//! it is rolled out, in a [`PodDir`]. The binary sees placeholder files in place of the Secret's:
//! it resolves `${file:...}` references and builds every component, but no secret ever touches
//! the disk. The golden tests check their committed configurations the same way
//! ([`CollectorBinary::validate_pod_config`]).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::layout::SECRETS_DIR;
use crate::offline::{OfflineError, PodDir, collector_command, secret_files_read_by};
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

/// Longest collector message kept in a condition.
const MAX_MESSAGE: usize = 1000;

impl CollectorBinary {
    async fn check(&self, plan: &CollectorPlan) -> Verdict {
        let dir = match check_dir() {
            Ok(dir) => dir,
            Err(verdict) => return verdict,
        };
        let pod = PodDir::new(dir.path());
        let names: Vec<String> = plan.secret_files.keys().cloned().collect();
        match render_with_secrets_dir(plan, &pod.secrets_dir().to_string_lossy()) {
            Ok(rendered) => {
                self.check_in(pod, names, move |pod| pod.write_config(&rendered.yaml))
                    .await
            }
            Err(e) => unwritten(e),
        }
    }

    /// Checks a configuration rendered for the pod (a ConfigMap's, a golden file), its mount
    /// paths replaced by a temporary [`PodDir`]'s and a placeholder for each Secret file it
    /// reads.
    pub async fn validate_pod_config(&self, config: &str) -> Verdict {
        let dir = match check_dir() {
            Ok(dir) => dir,
            Err(verdict) => return verdict,
        };
        let names = secret_files_read_by(config);
        let config = config.to_owned();
        self.check_in(PodDir::new(dir.path()), names, move |pod| {
            pod.write_pod_config(&config)
        })
        .await
    }

    /// Writes placeholders for the Secret files `names` and, with `write_config`, the
    /// configuration into `pod`, then runs `validate` on it.
    async fn check_in<N>(
        &self,
        pod: PodDir,
        names: impl IntoIterator<Item = N> + Send + 'static,
        write_config: impl FnOnce(&PodDir) -> Result<PathBuf, OfflineError> + Send + 'static,
    ) -> Verdict
    where
        N: AsRef<str>,
    {
        let secrets = pod.secrets_dir();
        // Blocking file writes, off the reconcilers' threads.
        let written = tokio::task::spawn_blocking(move || {
            pod.write_placeholder_secret_files(names)?;
            write_config(&pod)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|written| written.map_err(|e| e.to_string()));
        let config_path = match written {
            Ok(path) => path,
            Err(e) => return unwritten(e),
        };
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

/// The temporary directory a configuration is checked in, removed when dropped.
fn check_dir() -> Result<tempfile::TempDir, Verdict> {
    tempfile::Builder::new()
        .prefix("telemux-validate-")
        .tempdir()
        .map_err(|e| Verdict::Unchecked(format!("cannot create a temporary directory: {e}")))
}

fn unwritten(e: impl std::fmt::Display) -> Verdict {
    Verdict::Unchecked(format!("cannot write the configuration to check: {e}"))
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
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let error = match lines.iter().position(|l| l.starts_with("Error:")) {
        // A decoding error goes on over several lines and names the offending key last; a log
        // line after it is not part of it.
        Some(at) => std::iter::once(lines[at].trim_start_matches("Error:").trim())
            .chain(
                lines[at + 1..]
                    .iter()
                    .copied()
                    .take_while(|l| !is_log_line(l)),
            )
            .collect::<Vec<_>>()
            .join(" "),
        None => output.trim().to_owned(),
    };
    let mut message = error.replace(secrets_dir, SECRETS_DIR);
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

/// Whether `line` starts with a timestamp, as the collector's log lines do (`2006/01/02 ...`
/// from Go's log, `2006-01-02T...` from its own logger).
fn is_log_line(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > 4 && bytes[..4].iter().all(u8::is_ascii_digit) && matches!(bytes[4], b'/' | b'-')
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

    /// The collector's answer to an unknown key, as `validate` prints it.
    #[test]
    fn keeps_the_lines_an_error_goes_on_over() {
        let output = "Error: failed to get config: cannot unmarshal the configuration: decoding failed due to the following error(s):\n\n'extensions' error reading configuration for \"health_check\": decoding failed due to the following error(s):\n\n'' decoding failed due to the following error(s):\n\n'healthcheck.Config' has invalid keys: no_such_key\n2026/11/22 12:00:00 collector server run finished with error\n";
        assert_eq!(
            collector_error(output, "/tmp/x"),
            "failed to get config: cannot unmarshal the configuration: decoding failed due to the following error(s): 'extensions' error reading configuration for \"health_check\": decoding failed due to the following error(s): '' decoding failed due to the following error(s): 'healthcheck.Config' has invalid keys: no_such_key"
        );
    }

    #[test]
    fn long_errors_are_cut() {
        let output = format!("Error: {}", "é".repeat(2 * MAX_MESSAGE));
        let message = collector_error(&output, "/tmp/x");
        assert!(message.len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
