//! Azure failures, classified for the reconciler: what a person must fix, what fixes itself,
//! and when to come back. Messages carry service error codes and texts, never tokens, secrets
//! or raw response bodies.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Longest wait a `Retry-After` may ask for; a broken header must not park a tenant for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Longest service message kept (condition messages and events stay readable).
const MAX_MESSAGE_CHARS: usize = 600;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AzureError {
    /// The token endpoint refused us (Entra 400/401 with an AADSTS code, managed identity not
    /// assigned, unreadable federated token file), or ARM rejected the token.
    #[error("Azure authentication failed: {0}")]
    Authentication(String),
    /// ARM answered 403: the identity lacks a role assignment, or a policy forbids the request.
    #[error("Azure refused access: {0}")]
    Forbidden(String),
    /// 429 (or 503 with a `Retry-After`): come back after `retry_after` when the service said.
    #[error("Azure is throttling requests{}: {message}", RetryAfterSuffix(*retry_after))]
    Throttled {
        retry_after: Option<Duration>,
        message: String,
    },
    /// ARM refused the request itself (400, 409 other than a concurrent operation, a missing
    /// resource group on PUT): retrying the same spec cannot succeed.
    #[error("Azure rejected the component: {0}")]
    InvalidSpec(String),
    /// 5xx, timeouts, connection failures, a conflicting operation in progress.
    #[error("transient Azure failure: {0}")]
    Transient(String),
    /// Anything the classification does not know (odd statuses, unreadable success bodies).
    #[error("unexpected Azure response: {0}")]
    Unexpected(String),
}

/// The kind of an [`AzureError`], without its message (metric labels, match arms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Authentication,
    Forbidden,
    Throttled,
    InvalidSpec,
    Transient,
    Unexpected,
}

impl ErrorClass {
    /// A stable, snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Authentication => "authentication",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::Throttled => "throttled",
            ErrorClass::InvalidSpec => "invalid_spec",
            ErrorClass::Transient => "transient",
            ErrorClass::Unexpected => "unexpected",
        }
    }
}

impl AzureError {
    pub fn class(&self) -> ErrorClass {
        match self {
            AzureError::Authentication(_) => ErrorClass::Authentication,
            AzureError::Forbidden(_) => ErrorClass::Forbidden,
            AzureError::Throttled { .. } => ErrorClass::Throttled,
            AzureError::InvalidSpec(_) => ErrorClass::InvalidSpec,
            AzureError::Transient(_) => ErrorClass::Transient,
            AzureError::Unexpected(_) => ErrorClass::Unexpected,
        }
    }

    /// Label for failure metrics.
    pub fn metric_label(&self) -> &'static str {
        self.class().as_str()
    }

    /// True when trying again later can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AzureError::Throttled { .. } | AzureError::Transient(_) | AzureError::Unexpected(_)
        )
    }

    /// True when a person must act: credentials, role assignments or the spec.
    pub fn needs_intervention(&self) -> bool {
        matches!(
            self,
            AzureError::Authentication(_) | AzureError::Forbidden(_) | AzureError::InvalidSpec(_)
        )
    }

    /// How long the service asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AzureError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The message without the class prefix.
    pub fn message(&self) -> &str {
        match self {
            AzureError::Authentication(m)
            | AzureError::Forbidden(m)
            | AzureError::InvalidSpec(m)
            | AzureError::Transient(m)
            | AzureError::Unexpected(m)
            | AzureError::Throttled { message: m, .. } => m,
        }
    }
}

struct RetryAfterSuffix(Option<Duration>);

impl std::fmt::Display for RetryAfterSuffix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, " (retry after {}s)", d.as_secs()),
            None => Ok(()),
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (IMF-fixdate). A date in the
/// past means "now"; waits are capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at: SystemTime = azure_core::date::parse_rfc1123(value).ok()?.into();
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The error body ARM (and most Azure services) send: `{"error":{"code":..,"message":..}}`.
#[derive(Debug, Default, Deserialize)]
struct ArmErrorBody {
    #[serde(default, alias = "Error")]
    error: Option<ArmErrorDetail>,
    #[serde(default, alias = "Code")]
    code: Option<String>,
    #[serde(default, alias = "Message")]
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ArmErrorDetail {
    #[serde(default, alias = "Code")]
    code: Option<String>,
    #[serde(default, alias = "Message")]
    message: Option<String>,
}

/// A failed ARM response, before classification (which depends on the operation for 404).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.describe())]
pub(crate) struct ArmFailure {
    pub status: u16,
    pub code: Option<String>,
    pub message: Option<String>,
    pub retry_after: Option<Duration>,
}

impl ArmFailure {
    pub fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        // Bodies that are not ARM JSON (gateways, proxies) keep only their status.
        let parsed: ArmErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let (code, message) = match parsed.error {
            Some(detail) => (
                detail.code.or(parsed.code),
                detail.message.or(parsed.message),
            ),
            None => (parsed.code, parsed.message),
        };
        ArmFailure {
            status,
            code: code.filter(|c| !c.is_empty()),
            message: message.filter(|m| !m.is_empty()).map(|m| truncate(&m)),
            retry_after,
        }
    }

    /// `Code: message (HTTP 409)`.
    pub fn describe(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => format!("{code}: {message} (HTTP {})", self.status),
            (Some(code), None) => format!("{code} (HTTP {})", self.status),
            (None, Some(message)) => format!("{message} (HTTP {})", self.status),
            (None, None) => format!("HTTP {}", self.status),
        }
    }

    fn code_is(&self, wanted: &[&str]) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| wanted.iter().any(|w| c.eq_ignore_ascii_case(w)))
    }

    /// The class of this failure. 404 is `InvalidSpec` here (a missing resource group or
    /// subscription on PUT); GET and DELETE treat 404 as "absent" before calling this.
    pub fn classify(&self) -> AzureError {
        let text = self.describe();
        match self.status {
            // An expired or not-yet-valid token fixes itself with a fresh one (the client
            // clears the token cache on 401); anything else about the token needs a person.
            401 if self.code_is(&["ExpiredAuthenticationToken"]) => AzureError::Transient(text),
            401 => AzureError::Authentication(text),
            403 => AzureError::Forbidden(text),
            429 => AzureError::Throttled {
                retry_after: self.retry_after,
                message: text,
            },
            503 if self.retry_after.is_some() => AzureError::Throttled {
                retry_after: self.retry_after,
                message: text,
            },
            // Another operation on the same resource (or its group) is still running.
            409 if self.code_is(&[
                "AnotherOperationInProgress",
                "OperationInProgress",
                "ConflictingOperationInProgress",
                "ResourceGroupBeingDeleted",
            ]) =>
            {
                AzureError::Transient(text)
            }
            400 | 404 | 409 | 422 => AzureError::InvalidSpec(text),
            408 => AzureError::Transient(text),
            500..=599 => AzureError::Transient(text),
            _ => AzureError::Unexpected(text),
        }
    }
}

/// The error body of the Entra token endpoint and of the managed-identity endpoint.
#[derive(Debug, Default, Deserialize)]
struct TokenErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// Which token endpoint answered (their transient statuses differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenEndpoint {
    Entra,
    ManagedIdentity,
}

/// Classifies a failed token request: `AADSTS70021: No matching federated identity record
/// found ... (invalid_request, HTTP 400)`. Entra appends trace and correlation ids and a
/// timestamp to every description; they are dropped so repeated failures read the same.
pub(crate) fn classify_token_failure(
    endpoint: TokenEndpoint,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> AzureError {
    let parsed: TokenErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let description = parsed
        .error_description
        .as_deref()
        .map(first_sentence_block)
        .filter(|d| !d.is_empty());
    let description = match (description, parsed.error_codes.first()) {
        (Some(d), Some(code)) if !d.starts_with("AADSTS") => Some(format!("AADSTS{code}: {d}")),
        (None, Some(code)) => Some(format!("AADSTS{code}")),
        (d, _) => d.map(str::to_owned),
    };
    let text = match (description, parsed.error) {
        (Some(d), Some(e)) => format!("{d} ({e}, HTTP {status})"),
        (Some(d), None) => format!("{d} (HTTP {status})"),
        (None, Some(e)) => format!("{e} (HTTP {status})"),
        (None, None) => format!("token endpoint answered HTTP {status}"),
    };
    let text = truncate(&text);
    match (endpoint, status) {
        (_, 429) => AzureError::Throttled {
            retry_after,
            message: text,
        },
        (_, 408 | 500..=599) => AzureError::Transient(text),
        // The instance metadata service answers 404 and 410 while it is being updated.
        (TokenEndpoint::ManagedIdentity, 404 | 410) => AzureError::Transient(text),
        (_, 400..=499) => AzureError::Authentication(text),
        _ => AzureError::Unexpected(text),
    }
}

/// Entra descriptions read `AADSTS...: text.\r\nTrace ID: ...\r\nCorrelation ID: ...\r\n
/// Timestamp: ...`: keep what comes before the ids.
fn first_sentence_block(description: &str) -> &str {
    let cut = ["\r\n", "\n", " Trace ID:", "Trace ID:"]
        .iter()
        .filter_map(|marker| description.find(marker))
        .min()
        .unwrap_or(description.len());
    description[..cut].trim()
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Describes a failed HTTP exchange (connect, timeout, body) for a message: the error chain
/// without the URL, which reqwest would otherwise repeat.
pub(crate) fn describe_transport_error(what: &str, error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        format!("{what} timed out")
    } else if error.is_connect() {
        format!("{what}: could not connect")
    } else {
        format!("{what} failed")
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    truncate(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("17", now), Some(Duration::from_secs(17)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retry_after_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(
            parse_retry_after(date, at(784_111_777 - 30)),
            Some(Duration::from_secs(30))
        );
        // A date that has passed means "now".
        assert_eq!(
            parse_retry_after(date, at(784_111_777 + 5)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(date, at(784_111_777 - 86_400)),
            Some(MAX_RETRY_AFTER)
        );
        // Obsolete RFC 850 dates are not produced by Azure; not accepted.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", at(0)),
            None
        );
    }

    fn arm(status: u16, body: &str) -> AzureError {
        ArmFailure::from_response(status, body.as_bytes(), None).classify()
    }

    #[test]
    fn arm_errors_are_classified_by_status_and_code() {
        let body = r#"{"error":{"code":"AuthorizationFailed","message":"The client 'x' does not have authorization"}}"#;
        assert_eq!(
            arm(403, body),
            AzureError::Forbidden(
                "AuthorizationFailed: The client 'x' does not have authorization (HTTP 403)".into()
            )
        );
        let body = r#"{"error":{"code":"InvalidParameter","message":"Location is required"}}"#;
        assert_eq!(arm(400, body).class(), ErrorClass::InvalidSpec);
        let body = r#"{"error":{"code":"Conflict","message":"Location cannot change"}}"#;
        assert_eq!(arm(409, body).class(), ErrorClass::InvalidSpec);
        let body = r#"{"error":{"code":"AnotherOperationInProgress","message":"busy"}}"#;
        assert_eq!(arm(409, body).class(), ErrorClass::Transient);
        let body = r#"{"error":{"code":"ResourceGroupNotFound","message":"Resource group 'rg' could not be found."}}"#;
        assert_eq!(
            arm(404, body),
            AzureError::InvalidSpec(
                "ResourceGroupNotFound: Resource group 'rg' could not be found. (HTTP 404)".into()
            )
        );
        let body = r#"{"error":{"code":"InvalidAuthenticationToken","message":"bad audience"}}"#;
        assert_eq!(arm(401, body).class(), ErrorClass::Authentication);
        let body = r#"{"error":{"code":"ExpiredAuthenticationToken","message":"expired"}}"#;
        assert_eq!(arm(401, body).class(), ErrorClass::Transient);
        assert_eq!(arm(500, "").class(), ErrorClass::Transient);
        assert_eq!(arm(502, "<html>bad gateway</html>"), {
            AzureError::Transient("HTTP 502".into())
        });
        assert_eq!(arm(503, "{}").class(), ErrorClass::Transient);
        assert_eq!(arm(408, "").class(), ErrorClass::Transient);
        assert_eq!(arm(405, "").class(), ErrorClass::Unexpected);
        assert_eq!(arm(302, "").class(), ErrorClass::Unexpected);
    }

    #[test]
    fn arm_error_body_variants() {
        // Top-level code/message and PascalCase, as some resource providers send.
        let f = ArmFailure::from_response(400, br#"{"Code":"BadRequest","Message":"nope"}"#, None);
        assert_eq!(f.describe(), "BadRequest: nope (HTTP 400)");
        let f = ArmFailure::from_response(400, br#"{"error":{"code":"X"}}"#, None);
        assert_eq!(f.describe(), "X (HTTP 400)");
        let long = "m".repeat(2000);
        let f = ArmFailure::from_response(
            400,
            format!(r#"{{"error":{{"code":"X","message":"{long}"}}}}"#).as_bytes(),
            None,
        );
        assert!(f.describe().chars().count() < 700);
    }

    #[test]
    fn throttling_keeps_retry_after() {
        let body = r#"{"error":{"code":"SubscriptionRequestsThrottled","message":"Number of requests exceeded the limit"}}"#;
        let err = ArmFailure::from_response(429, body.as_bytes(), Some(Duration::from_secs(7)))
            .classify();
        assert_eq!(
            err,
            AzureError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
                message: "SubscriptionRequestsThrottled: Number of requests exceeded the limit (HTTP 429)".into()
            }
        );
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(err.is_retryable());
        assert_eq!(err.metric_label(), "throttled");
        assert!(err.to_string().contains("retry after 7s"));
        let err = ArmFailure::from_response(429, b"", None).classify();
        assert_eq!(err.retry_after(), None);
        assert_eq!(err.class(), ErrorClass::Throttled);
        // 503 that says when to come back is throttling too.
        let err = ArmFailure::from_response(503, b"", Some(Duration::from_secs(3))).classify();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn entra_errors_keep_the_aadsts_code_and_drop_ids() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range. Current time: 2026-11-22T10:00:00Z.\r\nTrace ID: 0e1f\r\nCorrelation ID: 9a8b\r\nTimestamp: 2026-11-22 10:00:00Z","error_codes":[700024],"timestamp":"2026-11-22 10:00:00Z","trace_id":"0e1f","correlation_id":"9a8b"}"#;
        let err = classify_token_failure(TokenEndpoint::Entra, 401, body.as_bytes(), None);
        assert_eq!(
            err,
            AzureError::Authentication(
                "AADSTS700024: Client assertion is not within its valid time range. Current time: 2026-11-22T10:00:00Z. (invalid_client, HTTP 401)".into()
            )
        );
        let body = r#"{"error":"invalid_request","error_description":"AADSTS70021: No matching federated identity record found for presented assertion. Trace ID: 1 Correlation ID: 2","error_codes":[70021]}"#;
        let err = classify_token_failure(TokenEndpoint::Entra, 400, body.as_bytes(), None);
        assert_eq!(
            err.message(),
            "AADSTS70021: No matching federated identity record found for presented assertion. (invalid_request, HTTP 400)"
        );
        // Code only in error_codes.
        let body = r#"{"error":"invalid_client","error_description":"Invalid client secret provided.","error_codes":[7000215]}"#;
        let err = classify_token_failure(TokenEndpoint::Entra, 401, body.as_bytes(), None);
        assert_eq!(
            err.message(),
            "AADSTS7000215: Invalid client secret provided. (invalid_client, HTTP 401)"
        );
        assert_eq!(
            classify_token_failure(TokenEndpoint::Entra, 400, b"not json", None),
            AzureError::Authentication("token endpoint answered HTTP 400".into())
        );
        assert_eq!(
            classify_token_failure(TokenEndpoint::Entra, 503, b"", None).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            classify_token_failure(TokenEndpoint::Entra, 429, b"", Some(Duration::from_secs(2)))
                .retry_after(),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn managed_identity_errors() {
        let body = r#"{"error":"invalid_request","error_description":"Identity not found"}"#;
        assert_eq!(
            classify_token_failure(TokenEndpoint::ManagedIdentity, 400, body.as_bytes(), None),
            AzureError::Authentication("Identity not found (invalid_request, HTTP 400)".into())
        );
        assert_eq!(
            classify_token_failure(TokenEndpoint::ManagedIdentity, 410, b"", None).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            classify_token_failure(TokenEndpoint::Entra, 404, b"", None).class(),
            ErrorClass::Authentication
        );
    }

    #[test]
    fn classes_and_helpers() {
        let e = AzureError::InvalidSpec("x".into());
        assert!(e.needs_intervention());
        assert!(!e.is_retryable());
        assert_eq!(e.message(), "x");
        assert_eq!(e.class().as_str(), "invalid_spec");
        assert_eq!(
            AzureError::Transient("t".into()).to_string(),
            "transient Azure failure: t"
        );
    }
}
