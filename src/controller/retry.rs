//! How soon telemux looks again, by class of outcome: what happens when Azure Resource Manager
//! answers 429 (or 401, 403, 5xx, a timeout), when a spec is invalid, and when the API server
//! fails a request. Pure: the reconcilers and their error policies only ask.
//!
//! - ARM 429 `Throttled`: after ARM's `Retry-After` (seconds or an HTTP date, parsed by
//!   `crate::azure`), else `throttled`. Provisioning reports the wait in the condition
//!   (reason `Throttled`); a deletion keeps the finalizer and retries on the same schedule.
//! - 401/AADSTS `AuthenticationFailed` and 403 `Forbidden`: a person must fix the identity, so
//!   `slow`.
//! - Transient (5xx, timeouts, connection failures) and unexpected answers: `fast`.
//! - ARM refusing the spec (`InvalidSpec`): nothing is retried until the spec changes.
//! - API server failures: `KUBE_RETRY`.

use std::time::Duration;

use super::Error;
use crate::api::reasons::{self, Reason};
use crate::azure::AzureError;

/// How soon to look again, by class of outcome.
#[derive(Clone, Debug)]
pub struct ProvisionTimings {
    /// While Azure is still provisioning, and after transient failures.
    pub fast: Duration,
    /// After failures a person must fix (credentials, permissions).
    pub slow: Duration,
    /// When throttled without a Retry-After.
    pub throttled: Duration,
    /// Re-check a provisioned component for drift this often.
    pub drift: Duration,
}

impl Default for ProvisionTimings {
    fn default() -> Self {
        ProvisionTimings {
            fast: Duration::from_secs(10),
            slow: Duration::from_secs(300),
            throttled: Duration::from_secs(60),
            drift: Duration::from_secs(600),
        }
    }
}

/// After a failed API server request (conflict, timeout, a restarting apiserver).
pub const KUBE_RETRY: Duration = Duration::from_secs(5);

/// The condition reason for an Azure failure, and how soon to try again (`None`: wait for a
/// change of the spec).
pub fn azure_failure(error: &AzureError, timings: &ProvisionTimings) -> (Reason, Option<Duration>) {
    match error {
        AzureError::Authentication(_) => (reasons::AUTHENTICATION_FAILED, Some(timings.slow)),
        AzureError::Forbidden(_) => (reasons::FORBIDDEN, Some(timings.slow)),
        AzureError::Throttled { retry_after, .. } => (
            reasons::THROTTLED,
            Some(retry_after.unwrap_or(timings.throttled)),
        ),
        AzureError::InvalidSpec(_) => (reasons::INVALID_SPEC, None),
        AzureError::Transient(_) | AzureError::Unexpected(_) => {
            (reasons::AZURE_ERROR, Some(timings.fast))
        }
    }
}

/// How soon a reconcile that failed runs again. Azure failures (a deletion under throttling,
/// say) keep Azure's schedule; an invalid spec is retried slowly, in case Azure changes its mind.
pub fn after_error(error: &Error, timings: &ProvisionTimings) -> Duration {
    match error.cause() {
        Error::Azure(azure) => azure_failure(azure, timings).1.unwrap_or(timings.slow),
        _ => KUBE_RETRY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttled(retry_after: Option<u64>) -> AzureError {
        AzureError::Throttled {
            retry_after: retry_after.map(Duration::from_secs),
            message: String::new(),
        }
    }

    #[test]
    fn azure_failures_map_to_reasons_and_retry_classes() {
        let t = ProvisionTimings::default();
        assert_eq!(
            azure_failure(&throttled(Some(7)), &t),
            (reasons::THROTTLED, Some(Duration::from_secs(7)))
        );
        assert_eq!(
            azure_failure(&throttled(None), &t),
            (reasons::THROTTLED, Some(t.throttled))
        );
        assert_eq!(
            azure_failure(&AzureError::InvalidSpec("x".into()), &t),
            (reasons::INVALID_SPEC, None)
        );
        assert_eq!(
            azure_failure(&AzureError::Authentication("x".into()), &t),
            (reasons::AUTHENTICATION_FAILED, Some(t.slow))
        );
        assert_eq!(
            azure_failure(&AzureError::Forbidden("x".into()), &t),
            (reasons::FORBIDDEN, Some(t.slow))
        );
        assert_eq!(
            azure_failure(&AzureError::Transient("x".into()), &t),
            (reasons::AZURE_ERROR, Some(t.fast))
        );
    }

    /// A deletion that ARM throttles fails inside the finalizer helper: the retry must still
    /// wait for ARM's Retry-After, not hammer it every few seconds.
    #[test]
    fn a_throttled_deletion_is_retried_after_retry_after() {
        let t = ProvisionTimings::default();
        let cleanup = |e: AzureError| {
            Error::Finalizer(Box::new(kube::runtime::finalizer::Error::CleanupFailed(
                Error::Azure(e),
            )))
        };
        assert_eq!(
            after_error(&cleanup(throttled(Some(42))), &t),
            Duration::from_secs(42)
        );
        assert_eq!(after_error(&cleanup(throttled(None)), &t), t.throttled);
        assert_eq!(
            after_error(&cleanup(AzureError::Forbidden("x".into())), &t),
            t.slow
        );
        assert_eq!(
            after_error(&Error::MissingField("metadata.name"), &t),
            KUBE_RETRY
        );
    }
}
