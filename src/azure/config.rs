//! How telemux reaches Azure: endpoints, identity, timeouts.

use std::sync::Arc;
use std::time::Duration;

use super::Components;
use super::arm::ArmComponents;
use super::credential::{AzureCredential, CredentialConfigError, CredentialSource};

/// Public-cloud Resource Manager.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
pub use super::credential::DEFAULT_AUTHORITY_HOST;
/// ARM answers DELETE only after several seconds; 30 s leaves room without stalling a
/// reconcile worker for long.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct AzureSettings {
    /// Resource Manager, e.g. `https://management.azure.com`,
    /// `https://management.usgovcloudapi.net`, or `http://127.0.0.1:PORT` in tests. Must
    /// have no path: the generated client replaces it.
    pub arm_endpoint: String,
    /// Entra ID, e.g. `https://login.microsoftonline.com`; a workload identity's own
    /// `AZURE_AUTHORITY_HOST` wins.
    pub authority_host: String,
    pub credential: CredentialSource,
    /// Per HTTP request (ARM and token endpoints), connecting included.
    pub request_timeout: Duration,
    /// The token scope for ARM; `None` means `<arm_endpoint>/.default`. Set it when ARM is
    /// reached through an address other than its audience (emulators, private endpoints).
    pub token_scope: Option<String>,
}

impl AzureSettings {
    /// Public cloud with the given identity.
    pub fn new(credential: CredentialSource) -> Self {
        AzureSettings {
            arm_endpoint: DEFAULT_ARM_ENDPOINT.to_owned(),
            authority_host: DEFAULT_AUTHORITY_HOST.to_owned(),
            credential,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            token_scope: None,
        }
    }

    /// The scope tokens are requested for.
    pub fn scope(&self) -> String {
        self.token_scope.clone().unwrap_or_else(|| {
            format!(
                "{}/.default",
                self.arm_endpoint.trim().trim_end_matches('/')
            )
        })
    }

    /// The ARM endpoint, checked: http(s), no path, query or fragment.
    pub fn arm_url(&self) -> Result<azure_core::Url, ConfigError> {
        let invalid = |why: &'static str| ConfigError::ArmEndpoint {
            value: self.arm_endpoint.clone(),
            why,
        };
        let url =
            azure_core::Url::parse(self.arm_endpoint.trim()).map_err(|_| invalid("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("not http or https"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            // azure_mgmt_applicationinsights sets the whole path of every request URL, so a
            // path prefix (a gateway) would silently be dropped.
            return Err(invalid("has a path, query or fragment"));
        }
        Ok(url)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("ARM endpoint {value:?} is unusable: {why}")]
    ArmEndpoint { value: String, why: &'static str },
    #[error(transparent)]
    Credential(#[from] CredentialConfigError),
    #[error("could not build the HTTP client for ARM: {0}")]
    HttpClient(String),
}

/// The components client for `settings`: the generated ARM client over rustls, with retries
/// off and our credential.
pub fn build_components_client(
    settings: &AzureSettings,
) -> Result<Arc<dyn Components>, ConfigError> {
    let credential = Arc::new(AzureCredential::new(
        &settings.credential,
        &settings.authority_host,
        settings.request_timeout,
    )?);
    let client = ArmComponents::new(
        settings.arm_url()?,
        credential,
        settings.scope(),
        settings.request_timeout,
    )?;
    Ok(Arc::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str) -> AzureSettings {
        AzureSettings {
            arm_endpoint: endpoint.into(),
            ..AzureSettings::new(CredentialSource::managed_identity(None))
        }
    }

    #[test]
    fn scope_follows_the_endpoint() {
        assert_eq!(
            settings("https://management.azure.com/").scope(),
            "https://management.azure.com/.default"
        );
        assert_eq!(
            settings("https://management.chinacloudapi.cn").scope(),
            "https://management.chinacloudapi.cn/.default"
        );
        let pinned = AzureSettings {
            token_scope: Some("https://management.azure.com/.default".into()),
            ..settings("http://127.0.0.1:8443")
        };
        assert_eq!(pinned.scope(), "https://management.azure.com/.default");
    }

    #[test]
    fn arm_endpoint_checks() {
        assert!(settings("http://127.0.0.1:8080").arm_url().is_ok());
        assert!(
            settings("https://management.usgovcloudapi.net/")
                .arm_url()
                .is_ok()
        );
        for bad in [
            "management.azure.com",
            "ftp://x",
            "https://gw.example/arm",
            "https://x/?a=b",
        ] {
            assert!(settings(bad).arm_url().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn builds_for_every_credential_kind() {
        let kinds = [
            CredentialSource::managed_identity(Some("c".into())),
            CredentialSource::ClientSecret {
                tenant_id: "t".into(),
                client_id: "c".into(),
                client_secret: super::super::Secret::new("s"),
            },
            CredentialSource::WorkloadIdentity {
                tenant_id: "t".into(),
                client_id: "c".into(),
                token_file: "/tmp/none".into(),
                authority_host: Some("http://127.0.0.1:1".into()),
            },
        ];
        for credential in kinds {
            assert!(build_components_client(&AzureSettings::new(credential)).is_ok());
        }
        let bad = AzureSettings {
            authority_host: "nope".into(),
            ..AzureSettings::new(CredentialSource::ClientSecret {
                tenant_id: "t".into(),
                client_id: "c".into(),
                client_secret: super::super::Secret::new("s"),
            })
        };
        assert!(matches!(
            build_components_client(&bad),
            Err(ConfigError::Credential(_))
        ));
    }
}
