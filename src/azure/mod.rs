//! The operator's Azure edge: Application Insights components in Azure Resource Manager
//! (`Microsoft.Insights/components`, api-version 2020-02-02), behind the [`Components`] trait,
//! and the credentials that reach it.
//!
//! The reconciler sees only our types ([`ComponentId`], [`DesiredComponent`], [`Component`])
//! and [`AzureError`] classified by what to do next; the generated client of
//! `azure_mgmt_applicationinsights` stays inside [`arm`].

pub mod arm;
pub mod config;
pub mod credential;
pub mod error;
pub mod metered;
#[cfg(test)]
mod test_http;

use std::collections::BTreeMap;

pub use azure_core::auth::Secret;
use futures::future::BoxFuture;

pub use config::{AzureSettings, ConfigError, build_components_client};
pub use credential::{AzureCredential, CredentialSource};
pub use error::{AzureError, ErrorClass, parse_retry_after};

/// The ARM api-version of every component request.
pub const COMPONENTS_API_VERSION: &str = "2020-02-02";

/// Application Insights components in Azure Resource Manager.
///
/// Every call is a single request (plus a token request when needed): no retries, no
/// polling. The reconciler requeues by [`AzureError::class`] and `retry_after` instead.
pub trait Components: Send + Sync {
    /// The component, or `None` when ARM answers 404 (also for a missing resource group).
    fn get<'a>(
        &'a self,
        id: &'a ComponentId,
    ) -> BoxFuture<'a, Result<Option<Component>, AzureError>>;

    /// Creates or replaces the component (PUT) and returns what ARM answered. Read-only
    /// fields (connection string, keys, app id) are ARM's; `provisioning_state` may be other
    /// than `Succeeded`, in which case the caller should look again later.
    fn put<'a>(
        &'a self,
        id: &'a ComponentId,
        desired: &'a DesiredComponent,
    ) -> BoxFuture<'a, Result<Component, AzureError>>;

    /// Deletes the component. A component that does not exist (404) is `Ok`. `Ok` may also
    /// mean ARM accepted the deletion (202) and finishes it shortly: confirm with
    /// [`Components::get`] when it matters.
    fn delete<'a>(&'a self, id: &'a ComponentId) -> BoxFuture<'a, Result<(), AzureError>>;
}

/// Where a component lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentId {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
}

impl ComponentId {
    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Insights/components/{name}`.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Insights/components/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }

    /// Rejects segments that would change the request path (`/`, `..`): names come from
    /// tenants' specs, and the generated client pastes them into the URL as they are.
    pub fn validate(&self) -> Result<(), AzureError> {
        for (what, value) in [
            ("subscription id", &self.subscription_id),
            ("resource group", &self.resource_group),
            ("component name", &self.name),
        ] {
            let bad = value.is_empty()
                || value == "."
                || value == ".."
                || value
                    .chars()
                    .any(|c| matches!(c, '/' | '\\' | '?' | '#' | '%') || c.is_control());
            if bad {
                return Err(AzureError::InvalidSpec(format!(
                    "{what} {value:?} is not a valid Azure resource name segment"
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for ComponentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.resource_id())
    }
}

/// What telemux wants a component to be. `None` omits the field from the PUT body and
/// leaves it to Azure.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredComponent {
    /// Azure region, e.g. `westeurope`; cannot change after creation.
    pub location: String,
    /// `web`, `other`, ...
    pub kind: String,
    /// `Application_Type`: `web` or `other`; create-only.
    pub application_type: String,
    pub workspace_resource_id: Option<String>,
    pub retention_in_days: Option<i32>,
    /// `ApplicationInsights`, `ApplicationInsightsWithDiagnosticSettings` or `LogAnalytics`.
    pub ingestion_mode: Option<String>,
    pub sampling_percentage: Option<f64>,
    pub disable_local_auth: Option<bool>,
    /// The complete tag set (PUT replaces tags).
    pub tags: BTreeMap<String, String>,
}

/// A component as ARM reports it.
#[derive(Clone, PartialEq, Default)]
pub struct Component {
    /// ARM resource id as returned (the provider segment may be lowercased: compare ids
    /// case-insensitively).
    pub id: String,
    pub name: String,
    pub location: String,
    pub kind: String,
    pub etag: Option<String>,
    /// `Succeeded` once usable; may be absent on old components.
    pub provisioning_state: Option<String>,
    /// Ingestion credential for clients: treat as confidential (not in logs).
    pub connection_string: Option<String>,
    pub instrumentation_key: Option<String>,
    pub app_id: Option<String>,
    pub application_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub retention_in_days: Option<i32>,
    /// As ARM returns it, often lowercased: compare case-insensitively.
    pub workspace_resource_id: Option<String>,
    pub ingestion_mode: Option<String>,
    pub sampling_percentage: Option<f64>,
    pub disable_local_auth: Option<bool>,
}

impl Component {
    /// True once ARM reports `Succeeded` (or no state at all, as very old components do).
    pub fn is_provisioned(&self) -> bool {
        self.provisioning_state
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case("Succeeded"))
    }
}

/// Connection string and instrumentation key are redacted: components end up in logs.
impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Component")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("location", &self.location)
            .field("kind", &self.kind)
            .field("etag", &self.etag)
            .field("provisioning_state", &self.provisioning_state)
            .field("connection_string", &redacted(&self.connection_string))
            .field("instrumentation_key", &redacted(&self.instrumentation_key))
            .field("app_id", &self.app_id)
            .field("application_type", &self.application_type)
            .field("tags", &self.tags)
            .field("retention_in_days", &self.retention_in_days)
            .field("workspace_resource_id", &self.workspace_resource_id)
            .field("ingestion_mode", &self.ingestion_mode)
            .field("sampling_percentage", &self.sampling_percentage)
            .field("disable_local_auth", &self.disable_local_auth)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ComponentId {
        ComponentId {
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg-tenants".into(),
            name: "telemux-acme".into(),
        }
    }

    #[test]
    fn resource_id_and_validation() {
        assert_eq!(
            id().resource_id(),
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-tenants/providers/Microsoft.Insights/components/telemux-acme"
        );
        assert!(id().validate().is_ok());
        for name in ["", "..", "a/b", "a?b", "a#b", "a%2Fb", "a\nb"] {
            let bad = ComponentId {
                name: name.into(),
                ..id()
            };
            assert_eq!(
                bad.validate().err().map(|e| e.class()),
                Some(ErrorClass::InvalidSpec),
                "{name:?}"
            );
        }
    }

    #[test]
    fn component_debug_redacts_credentials() {
        let c = Component {
            connection_string: Some("InstrumentationKey=abc;IngestionEndpoint=x".into()),
            instrumentation_key: Some("abc".into()),
            provisioning_state: Some("succeeded".into()),
            ..Component::default()
        };
        let text = format!("{c:?}");
        assert!(!text.contains("abc"), "{text}");
        assert!(c.is_provisioned());
        assert!(
            !Component {
                provisioning_state: Some("Creating".into()),
                ..c
            }
            .is_provisioned()
        );
    }

    #[test]
    fn components_is_object_safe() {
        fn takes(_: std::sync::Arc<dyn Components>) {}
        let _ = takes;
    }
}
