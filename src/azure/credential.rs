//! Access tokens for Azure Resource Manager, fetched by telemux itself.
//!
//! Implements azure_core 0.21's [`TokenCredential`] for three sources: workload identity (a
//! federated service-account token exchanged at Entra ID), a client secret, and a managed
//! identity through the instance metadata service. azure_identity's workload-identity
//! credential is not used: it reads the federated token file once, and Kubernetes rotates that
//! file, so long-running pods then fail with AADSTS700024. It also refuses plain-http
//! authority hosts, which the emulators in tests are.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use azure_core::auth::{AccessToken, Secret, TokenCredential};
use serde::Deserialize;

use super::error::{
    AzureError, TokenEndpoint, classify_token_failure, describe_transport_error, parse_retry_after,
};

/// Environment variables the workload identity webhook injects.
pub const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";
pub const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// Public-cloud Entra ID.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The assertion type of a federated (workload identity) client assertion.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const IMDS_API_VERSION: &str = "2018-02-01";

/// Refresh a cached token this long before it expires (at most half its lifetime), so a token
/// never expires between being handed out and reaching ARM.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Where the operator's Azure identity comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSource {
    /// Workload identity: the projected service-account token in `token_file` is exchanged
    /// for an access token. The file is re-read for every token request (it is rotated).
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
        /// Overrides [`AzureSettings::authority_host`](super::AzureSettings) (the webhook's
        /// `AZURE_AUTHORITY_HOST`).
        authority_host: Option<String>,
    },
    /// An app registration's client secret (read from a Kubernetes Secret by the caller).
    ClientSecret {
        tenant_id: String,
        client_id: String,
        client_secret: Secret,
    },
    /// A managed identity of the node, through the instance metadata service at `endpoint`.
    /// `client_id` picks a user-assigned identity; `None` uses the system-assigned one.
    ManagedIdentity {
        endpoint: String,
        client_id: Option<String>,
    },
}

/// What is missing or wrong in the credential configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialConfigError {
    #[error("environment variable {0} is not set (is the workload identity webhook enabled?)")]
    MissingEnv(&'static str),
    #[error("{what} is not a valid URL: {value}")]
    InvalidUrl { what: &'static str, value: String },
    #[error("could not build the HTTP client for token requests: {0}")]
    HttpClient(String),
}

impl CredentialSource {
    /// Workload identity configured from the webhook's environment variables.
    pub fn workload_identity_from_env() -> Result<Self, CredentialConfigError> {
        Self::workload_identity_from(|name| std::env::var(name).ok())
    }

    /// Workload identity from `lookup` (an environment, or a test's map). Empty values count
    /// as unset.
    pub fn workload_identity_from(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CredentialConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        Ok(CredentialSource::WorkloadIdentity {
            tenant_id: get(ENV_TENANT_ID)
                .ok_or(CredentialConfigError::MissingEnv(ENV_TENANT_ID))?,
            client_id: get(ENV_CLIENT_ID)
                .ok_or(CredentialConfigError::MissingEnv(ENV_CLIENT_ID))?,
            token_file: get(ENV_FEDERATED_TOKEN_FILE)
                .map(PathBuf::from)
                .ok_or(CredentialConfigError::MissingEnv(ENV_FEDERATED_TOKEN_FILE))?,
            authority_host: get(ENV_AUTHORITY_HOST),
        })
    }

    /// The system-assigned (or, with a client id, a user-assigned) managed identity at the
    /// default metadata endpoint.
    pub fn managed_identity(client_id: Option<String>) -> Self {
        CredentialSource::ManagedIdentity {
            endpoint: DEFAULT_IMDS_ENDPOINT.to_owned(),
            client_id,
        }
    }
}

/// How a token request authenticates.
enum Grant {
    FederatedTokenFile(PathBuf),
    ClientSecret(Secret),
}

enum Source {
    Entra {
        token_url: String,
        client_id: String,
        grant: Grant,
    },
    ManagedIdentity {
        token_url: String,
        client_id: Option<String>,
    },
}

/// A [`TokenCredential`] for ARM that caches tokens per scope until shortly before expiry.
pub struct AzureCredential {
    source: Source,
    http: reqwest::Client,
    /// Held across a token request, so concurrent reconciles wait for one fetch instead of
    /// each asking Entra.
    cache: tokio::sync::Mutex<TokenCache>,
}

impl std::fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.source {
            Source::Entra {
                grant: Grant::FederatedTokenFile(_),
                ..
            } => "WorkloadIdentity",
            Source::Entra {
                grant: Grant::ClientSecret(_),
                ..
            } => "ClientSecret",
            Source::ManagedIdentity { .. } => "ManagedIdentity",
        };
        f.debug_struct("AzureCredential")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl AzureCredential {
    /// A credential for `source`; Entra requests go to `authority_host` unless the source
    /// names its own. Plain http is accepted (emulators in tests).
    pub fn new(
        source: &CredentialSource,
        authority_host: &str,
        request_timeout: Duration,
    ) -> Result<Self, CredentialConfigError> {
        let mut http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            // A redirect would re-send the form (secret or assertion) somewhere else.
            .redirect(reqwest::redirect::Policy::none());
        let source = match source {
            CredentialSource::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
                authority_host: own_host,
            } => Source::Entra {
                token_url: entra_token_url(
                    own_host.as_deref().unwrap_or(authority_host),
                    tenant_id,
                )?,
                client_id: client_id.clone(),
                grant: Grant::FederatedTokenFile(token_file.clone()),
            },
            CredentialSource::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
            } => Source::Entra {
                token_url: entra_token_url(authority_host, tenant_id)?,
                client_id: client_id.clone(),
                grant: Grant::ClientSecret(client_secret.clone()),
            },
            CredentialSource::ManagedIdentity {
                endpoint,
                client_id,
            } => {
                // The metadata service is link-local: a cluster-wide HTTPS_PROXY must not
                // carry the request away.
                http = http.no_proxy();
                let base = parse_http_url("managed identity endpoint", endpoint)?;
                Source::ManagedIdentity {
                    token_url: format!(
                        "{}/metadata/identity/oauth2/token",
                        base.as_str().trim_end_matches('/')
                    ),
                    client_id: client_id.clone(),
                }
            }
        };
        let http = http
            .build()
            .map_err(|e| CredentialConfigError::HttpClient(e.to_string()))?;
        Ok(AzureCredential {
            source,
            http,
            cache: tokio::sync::Mutex::new(TokenCache::default()),
        })
    }

    /// A token for `scope` (e.g. `https://management.azure.com/.default`), from the cache
    /// while it is fresh.
    pub async fn token(&self, scope: &str) -> Result<AccessToken, AzureError> {
        let mut cache = self.cache.lock().await;
        if let Some(token) = cache.get(scope, SystemTime::now()) {
            return Ok(token);
        }
        let requested_at = SystemTime::now();
        let fetched = self.fetch(scope).await?;
        let token = cache.insert(scope, fetched, requested_at);
        Ok(token)
    }

    /// Forgets every cached token (after ARM rejected one).
    pub async fn clear(&self) {
        self.cache.lock().await.clear();
    }

    async fn fetch(&self, scope: &str) -> Result<FetchedToken, AzureError> {
        match &self.source {
            Source::Entra {
                token_url,
                client_id,
                grant,
            } => {
                let mut form: Vec<(&str, String)> = vec![
                    ("client_id", client_id.clone()),
                    ("scope", scope.to_owned()),
                    ("grant_type", "client_credentials".to_owned()),
                ];
                match grant {
                    Grant::ClientSecret(secret) => {
                        form.push(("client_secret", secret.secret().to_owned()));
                    }
                    Grant::FederatedTokenFile(path) => {
                        // Read on every request: the kubelet rotates the projected token.
                        let assertion = read_federated_token(path).await?;
                        form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()));
                        form.push(("client_assertion", assertion));
                    }
                }
                let request = self.http.post(token_url).form(&form);
                self.exchange(request, TokenEndpoint::Entra).await
            }
            Source::ManagedIdentity {
                token_url,
                client_id,
            } => {
                let mut query: Vec<(&str, &str)> = vec![
                    ("api-version", IMDS_API_VERSION),
                    ("resource", scope_to_resource(scope)),
                ];
                if let Some(client_id) = client_id {
                    query.push(("client_id", client_id));
                }
                let request = self
                    .http
                    .get(token_url)
                    .query(&query)
                    .header("Metadata", "true");
                self.exchange(request, TokenEndpoint::ManagedIdentity).await
            }
        }
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        endpoint: TokenEndpoint,
    ) -> Result<FetchedToken, AzureError> {
        let response = request
            .send()
            .await
            .map_err(|e| AzureError::Transient(describe_transport_error("token request", &e)))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = response.bytes().await.map_err(|e| {
            AzureError::Transient(describe_transport_error("reading the token response", &e))
        })?;
        if !(200..300).contains(&status) {
            return Err(classify_token_failure(endpoint, status, &body, retry_after));
        }
        // Never put parser messages or body text into the error: the body holds the token.
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            AzureError::Unexpected(format!(
                "token endpoint answered HTTP {status} with an unreadable body"
            ))
        })?;
        parsed.into_fetched(SystemTime::now())
    }
}

#[async_trait::async_trait]
impl TokenCredential for AzureCredential {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        // Entra takes one resource's scopes, space-separated; ARM asks for exactly one.
        let scope = scopes.join(" ");
        self.token(&scope)
            .await
            .map_err(|e| azure_core::Error::new(azure_core::error::ErrorKind::Credential, e))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        self.clear().await;
        Ok(())
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token`.
fn entra_token_url(authority_host: &str, tenant_id: &str) -> Result<String, CredentialConfigError> {
    let base = parse_http_url("authority host", authority_host)?;
    let tenant = tenant_id.trim();
    if tenant.is_empty() || tenant.contains(['/', '?', '#']) {
        return Err(CredentialConfigError::InvalidUrl {
            what: "tenant id",
            value: tenant_id.to_owned(),
        });
    }
    Ok(format!(
        "{}/{tenant}/oauth2/v2.0/token",
        base.as_str().trim_end_matches('/')
    ))
}

fn parse_http_url(what: &'static str, value: &str) -> Result<reqwest::Url, CredentialConfigError> {
    let invalid = || CredentialConfigError::InvalidUrl {
        what,
        value: value.to_owned(),
    };
    let url = reqwest::Url::parse(value.trim()).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
        return Err(invalid());
    }
    Ok(url)
}

/// `https://management.azure.com/.default` -> `https://management.azure.com/`: the metadata
/// service takes a resource, not a scope.
fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix(".default").unwrap_or(scope)
}

async fn read_federated_token(path: &PathBuf) -> Result<String, AzureError> {
    let content = tokio::fs::read_to_string(path).await.map_err(|e| {
        AzureError::Authentication(format!(
            "cannot read the federated token file {}: {e}",
            path.display()
        ))
    })?;
    let assertion = content.trim();
    if assertion.is_empty() {
        return Err(AzureError::Authentication(format!(
            "the federated token file {} is empty",
            path.display()
        )));
    }
    Ok(assertion.to_owned())
}

/// The token endpoints' success body. Entra v2.0 sends `expires_in` as a number; the metadata
/// service sends `expires_in` and `expires_on` (epoch seconds) as strings.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<NumberOrString>,
    #[serde(default)]
    expires_on: Option<NumberOrString>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    String(String),
}

impl NumberOrString {
    fn seconds(&self) -> Option<u64> {
        match self {
            NumberOrString::Number(n) => Some(*n),
            NumberOrString::String(s) => s.trim().parse().ok(),
        }
    }
}

struct FetchedToken {
    token: Secret,
    lifetime: Duration,
}

impl TokenResponse {
    fn into_fetched(self, now: SystemTime) -> Result<FetchedToken, AzureError> {
        if self.access_token.is_empty() {
            return Err(AzureError::Unexpected(
                "token endpoint answered without an access token".into(),
            ));
        }
        // The relative lifetime is immune to clock skew; the absolute one is the fallback.
        let lifetime = match (&self.expires_in, &self.expires_on) {
            (Some(expires_in), _) if expires_in.seconds().is_some() => {
                expires_in.seconds().map(Duration::from_secs)
            }
            (_, Some(expires_on)) => expires_on.seconds().map(|epoch| {
                (SystemTime::UNIX_EPOCH + Duration::from_secs(epoch))
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO)
            }),
            _ => None,
        };
        let lifetime = lifetime.ok_or_else(|| {
            AzureError::Unexpected("token endpoint answered without an expiry".into())
        })?;
        Ok(FetchedToken {
            token: Secret::new(self.access_token),
            lifetime,
        })
    }
}

struct CachedToken {
    token: Secret,
    expires_at: SystemTime,
    refresh_at: SystemTime,
}

/// Tokens by scope; pure, with the time passed in.
#[derive(Default)]
struct TokenCache {
    entries: HashMap<String, CachedToken>,
}

impl TokenCache {
    fn get(&self, scope: &str, now: SystemTime) -> Option<AccessToken> {
        let entry = self.entries.get(scope)?;
        (now < entry.refresh_at).then(|| access_token(&entry.token, entry.expires_at))
    }

    /// Stores a token whose lifetime counts from `requested_at` (before the request went
    /// out, so the cache never believes a token lives longer than it does).
    fn insert(
        &mut self,
        scope: &str,
        fetched: FetchedToken,
        requested_at: SystemTime,
    ) -> AccessToken {
        let expires_at = requested_at + fetched.lifetime;
        let margin = REFRESH_MARGIN.min(fetched.lifetime / 2);
        let refresh_at = expires_at - margin;
        let token = access_token(&fetched.token, expires_at);
        self.entries.insert(
            scope.to_owned(),
            CachedToken {
                token: fetched.token,
                expires_at,
                refresh_at,
            },
        );
        token
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

fn access_token(token: &Secret, expires_at: SystemTime) -> AccessToken {
    AccessToken::new(token.clone(), time::OffsetDateTime::from(expires_at))
}

#[cfg(test)]
mod tests {
    use super::super::test_http::{Canned, TestServer};
    use super::*;
    use crate::azure::error::ErrorClass;

    const ARM_SCOPE: &str = "https://management.azure.com/.default";
    const TIMEOUT: Duration = Duration::from_secs(5);

    fn fetched(token: &str, lifetime_secs: u64) -> FetchedToken {
        FetchedToken {
            token: Secret::new(token.to_owned()),
            lifetime: Duration::from_secs(lifetime_secs),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn cache_serves_until_shortly_before_expiry() {
        let mut cache = TokenCache::default();
        let handed = cache.insert(ARM_SCOPE, fetched("t1", 3599), at(0));
        assert_eq!(handed.token.secret(), "t1");
        assert_eq!(handed.expires_on, time::OffsetDateTime::from(at(3599)));
        assert_eq!(
            cache.get(ARM_SCOPE, at(0)).map(|t| t.token),
            Some(Secret::new("t1"))
        );
        assert!(cache.get(ARM_SCOPE, at(3599 - 301)).is_some());
        // Five minutes before expiry it is refreshed.
        assert!(cache.get(ARM_SCOPE, at(3599 - 300)).is_none());
        assert!(cache.get(ARM_SCOPE, at(4000)).is_none());
        // Another scope has its own entry.
        assert!(cache.get("https://other/.default", at(0)).is_none());
        cache.clear();
        assert!(cache.get(ARM_SCOPE, at(0)).is_none());
    }

    #[test]
    fn short_tokens_refresh_at_half_life() {
        let mut cache = TokenCache::default();
        cache.insert(ARM_SCOPE, fetched("short", 60), at(0));
        assert!(cache.get(ARM_SCOPE, at(29)).is_some());
        assert!(cache.get(ARM_SCOPE, at(30)).is_none());
        cache.insert(ARM_SCOPE, fetched("zero", 0), at(0));
        assert!(cache.get(ARM_SCOPE, at(0)).is_none());
    }

    #[test]
    fn token_responses_of_both_endpoints() {
        let now = at(0);
        let entra: TokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"abc"}"#,
        )
        .unwrap();
        let f = entra.into_fetched(now).unwrap();
        assert_eq!(f.lifetime, Duration::from_secs(3599));
        let imds: TokenResponse = serde_json::from_str(&format!(
            r#"{{"access_token":"abc","expires_in":"86399","expires_on":"{}","resource":"https://management.azure.com/","token_type":"Bearer"}}"#,
            1_800_000_000u64 + 86_399
        ))
        .unwrap();
        assert_eq!(
            imds.into_fetched(now).unwrap().lifetime,
            Duration::from_secs(86399)
        );
        let only_on: TokenResponse = serde_json::from_str(&format!(
            r#"{{"access_token":"abc","expires_on":"{}"}}"#,
            1_800_000_000u64 + 600
        ))
        .unwrap();
        assert_eq!(
            only_on.into_fetched(now).unwrap().lifetime,
            Duration::from_secs(600)
        );
        let none: TokenResponse = serde_json::from_str(r#"{"access_token":"abc"}"#).unwrap();
        assert_eq!(
            none.into_fetched(now).err().map(|e| e.class()),
            Some(ErrorClass::Unexpected)
        );
    }

    #[test]
    fn workload_identity_from_environment() {
        let env = |name: &str| match name {
            ENV_TENANT_ID => Some("tenant".to_owned()),
            ENV_CLIENT_ID => Some("client".to_owned()),
            ENV_FEDERATED_TOKEN_FILE => {
                Some("/var/run/secrets/azure/tokens/azure-identity-token".to_owned())
            }
            ENV_AUTHORITY_HOST => Some("https://login.microsoftonline.com/".to_owned()),
            _ => None,
        };
        assert_eq!(
            CredentialSource::workload_identity_from(env),
            Ok(CredentialSource::WorkloadIdentity {
                tenant_id: "tenant".into(),
                client_id: "client".into(),
                token_file: "/var/run/secrets/azure/tokens/azure-identity-token".into(),
                authority_host: Some("https://login.microsoftonline.com/".into()),
            })
        );
        let missing = |name: &str| (name == ENV_TENANT_ID).then(|| "t".to_owned());
        assert_eq!(
            CredentialSource::workload_identity_from(missing),
            Err(CredentialConfigError::MissingEnv(ENV_CLIENT_ID))
        );
    }

    #[test]
    fn token_urls() {
        assert_eq!(
            entra_token_url("https://login.microsoftonline.com/", "t1").unwrap(),
            "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
        );
        assert_eq!(
            entra_token_url("http://127.0.0.1:8080", "t1").unwrap(),
            "http://127.0.0.1:8080/t1/oauth2/v2.0/token"
        );
        assert!(entra_token_url("login.microsoftonline.com", "t1").is_err());
        assert!(entra_token_url("https://login.microsoftonline.com", "a/b").is_err());
        assert_eq!(
            scope_to_resource(ARM_SCOPE),
            "https://management.azure.com/"
        );
    }

    fn entra_ok(token: &str, expires_in: u64) -> Canned {
        Canned::json(
            200,
            &format!(
                r#"{{"token_type":"Bearer","expires_in":{expires_in},"ext_expires_in":{expires_in},"access_token":"{token}"}}"#
            ),
        )
    }

    #[tokio::test]
    async fn workload_identity_rereads_the_token_file_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("azure-identity-token");
        std::fs::write(&file, "assertion-one\n").unwrap();
        let server = TestServer::start(|req| {
            // Each request gets its own token; expires_in 0 disables caching for the second
            // scope below.
            let n = req.index;
            if req.body.contains("scope=short") {
                entra_ok(&format!("token-{n}"), 0)
            } else {
                entra_ok(&format!("token-{n}"), 3599)
            }
        })
        .await;
        let source = CredentialSource::WorkloadIdentity {
            tenant_id: "my-tenant".into(),
            client_id: "my-client".into(),
            token_file: file.clone(),
            authority_host: Some(server.url()),
        };
        let credential = AzureCredential::new(&source, DEFAULT_AUTHORITY_HOST, TIMEOUT).unwrap();

        let first = credential.get_token(&[ARM_SCOPE]).await.unwrap();
        assert_eq!(first.token.secret(), "token-0");
        // Cached: no second request.
        let again = credential.get_token(&[ARM_SCOPE]).await.unwrap();
        assert_eq!(again.token.secret(), "token-0");
        assert_eq!(server.requests().len(), 1);

        let req = &server.requests()[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/my-tenant/oauth2/v2.0/token");
        let form = req.form();
        assert_eq!(form["client_id"], "my-client");
        assert_eq!(form["scope"], ARM_SCOPE);
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_assertion_type"], CLIENT_ASSERTION_TYPE);
        assert_eq!(form["client_assertion"], "assertion-one");
        assert!(!form.contains_key("client_secret"));

        // The kubelet rotates the file; the next token request presents the new content.
        std::fs::write(&file, "assertion-two").unwrap();
        credential.clear_cache().await.unwrap();
        let rotated = credential.get_token(&[ARM_SCOPE]).await.unwrap();
        assert_eq!(rotated.token.secret(), "token-1");
        assert_eq!(
            server.requests()[1].form()["client_assertion"],
            "assertion-two"
        );

        // Tokens that expire at once are fetched every time, re-reading the file each time.
        std::fs::write(&file, "assertion-three").unwrap();
        credential.get_token(&["short"]).await.unwrap();
        std::fs::write(&file, "assertion-four").unwrap();
        credential.get_token(&["short"]).await.unwrap();
        let requests = server.requests();
        assert_eq!(requests.len(), 4);
        assert_eq!(requests[2].form()["client_assertion"], "assertion-three");
        assert_eq!(requests[3].form()["client_assertion"], "assertion-four");
    }

    #[tokio::test]
    async fn workload_identity_without_token_file() {
        let source = CredentialSource::WorkloadIdentity {
            tenant_id: "t".into(),
            client_id: "c".into(),
            token_file: "/nonexistent/telemux/token".into(),
            authority_host: None,
        };
        let credential = AzureCredential::new(&source, "http://127.0.0.1:9", TIMEOUT).unwrap();
        let err = credential.token(ARM_SCOPE).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Authentication);
        assert!(
            err.message().contains("/nonexistent/telemux/token"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn client_secret_errors_map_to_authentication_without_the_secret() {
        let server = TestServer::start(|_| {
            Canned::json(
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.\r\nTrace ID: a\r\nCorrelation ID: b\r\nTimestamp: 2026-11-22 10:00:00Z","error_codes":[7000215],"trace_id":"a","correlation_id":"b"}"#,
            )
        })
        .await;
        let source = CredentialSource::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s3cr3t-value"),
        };
        let credential = AzureCredential::new(&source, &server.url(), TIMEOUT).unwrap();
        let err = credential.token(ARM_SCOPE).await.unwrap_err();
        assert_eq!(
            err,
            AzureError::Authentication("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value. (invalid_client, HTTP 401)".into())
        );
        assert!(!err.to_string().contains("s3cr3t"));
        assert!(!format!("{credential:?}").contains("s3cr3t"));
        let form = server.requests()[0].form();
        assert_eq!(form["client_secret"], "s3cr3t-value");
        assert!(!form.contains_key("client_assertion"));
        // Through azure_core's trait the classification survives for the ARM client.
        let core_err = credential.get_token(&[ARM_SCOPE]).await.unwrap_err();
        assert_eq!(
            core_err.downcast_ref::<AzureError>().map(|e| e.class()),
            Some(ErrorClass::Authentication)
        );
    }

    #[tokio::test]
    async fn throttled_and_unavailable_token_endpoint() {
        let server = TestServer::start(|req| match req.index {
            0 => Canned::json(429, "{}").header("Retry-After", "12"),
            1 => Canned::json(503, ""),
            // Success without a readable body: the error must not echo it.
            _ => Canned::json(200, r#"{"access_token": 42, "secret-ish": "eyJ0"}"#),
        })
        .await;
        let source = CredentialSource::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Secret::new("x"),
        };
        let credential = AzureCredential::new(&source, &server.url(), TIMEOUT).unwrap();
        let err = credential.token(ARM_SCOPE).await.unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));
        let err = credential.token(ARM_SCOPE).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient);
        let err = credential.token(ARM_SCOPE).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Unexpected);
        assert!(!err.to_string().contains("eyJ0"));
    }

    #[tokio::test]
    async fn unreachable_token_endpoint_is_transient() {
        // Bind and drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let source = CredentialSource::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Secret::new("x"),
        };
        let credential =
            AzureCredential::new(&source, &format!("http://127.0.0.1:{port}"), TIMEOUT).unwrap();
        let err = credential.token(ARM_SCOPE).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    }

    #[tokio::test]
    async fn managed_identity_uses_the_metadata_endpoint() {
        let server = TestServer::start(|_| {
            Canned::json(
                200,
                r#"{"access_token":"mi-token","client_id":"c","expires_in":"86399","expires_on":"1900000000","ext_expires_in":"86399","not_before":"1","resource":"https://management.azure.com/","token_type":"Bearer"}"#,
            )
        })
        .await;
        let source = CredentialSource::ManagedIdentity {
            endpoint: server.url(),
            client_id: Some("user-assigned".into()),
        };
        let credential = AzureCredential::new(&source, DEFAULT_AUTHORITY_HOST, TIMEOUT).unwrap();
        let token = credential.token(ARM_SCOPE).await.unwrap();
        assert_eq!(token.token.secret(), "mi-token");
        credential.token(ARM_SCOPE).await.unwrap();
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(
            requests[0].target,
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id=user-assigned"
        );
        assert_eq!(requests[0].header("metadata"), Some("true"));
    }
}
