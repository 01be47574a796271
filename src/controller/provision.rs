//! A tenant's own Application Insights component, provisioned through Azure Resource Manager:
//! created, adopted, updated and (by policy) deleted. The desired component is a pure function
//! of the tenant; Azure is reached only through [`Components`].

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::TelemetryTenant;
use crate::api::tenant::ProvisionSpec;
use crate::azure::{AzureError, Component, ComponentId, Components, DesiredComponent};

/// The Azure Resource Manager client the reconciler uses.
#[derive(Clone)]
pub struct AzureComponents(pub std::sync::Arc<dyn Components>);

impl std::fmt::Debug for AzureComponents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AzureComponents")
    }
}

/// Finalizer on tenants whose component telemux provisions: deletion waits for the policy.
pub const FINALIZER: &str = "telemux.io/application-insights";
/// Tags marking what telemux manages (Azure tag names cannot contain `/`).
pub const MANAGED_BY_TAG: &str = "telemux-managed-by";
pub const TENANT_TAG: &str = "telemux-tenant";

/// The component's name: the spec's, or one derived from namespace and tenant id (both DNS
/// labels, so the result is a valid component name of at most 135 characters).
pub fn component_name(tenant: &TelemetryTenant, provision: &ProvisionSpec) -> String {
    provision.name.clone().unwrap_or_else(|| {
        format!(
            "telemux-{}-{}",
            tenant.namespace().unwrap_or_default(),
            tenant.spec.tenant_id
        )
    })
}

pub fn component_id(tenant: &TelemetryTenant, provision: &ProvisionSpec) -> ComponentId {
    ComponentId {
        subscription_id: provision.subscription_id.clone(),
        resource_group: provision.resource_group.clone(),
        name: component_name(tenant, provision),
    }
}

fn managed_tags(tenant: &TelemetryTenant) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_TAG.to_owned(), "telemux".to_owned()),
        (
            TENANT_TAG.to_owned(),
            format!(
                "{}.{}",
                tenant.namespace().unwrap_or_default(),
                tenant.spec.tenant_id
            ),
        ),
    ])
}

/// What the component should look like. Tags that others put on an adopted component are kept.
pub fn desired_component(
    tenant: &TelemetryTenant,
    provision: &ProvisionSpec,
    current: Option<&Component>,
) -> DesiredComponent {
    let mut tags = current.map(|c| c.tags.clone()).unwrap_or_default();
    tags.extend(managed_tags(tenant));
    DesiredComponent {
        location: provision.location.clone(),
        kind: "web".to_owned(),
        application_type: "web".to_owned(),
        workspace_resource_id: provision.workspace_resource_id.clone(),
        retention_in_days: provision.retention_in_days,
        ingestion_mode: provision.ingestion_mode.map(|m| m.as_str().to_owned()),
        sampling_percentage: tenant.spec.sampling.as_ref().map(|s| s.percentage),
        disable_local_auth: provision.disable_local_auth,
        tags,
    }
}

/// Whether `current` differs from `desired` in anything telemux manages. Unset desired
/// fields are Azure's to choose.
pub fn needs_update(current: &Component, desired: &DesiredComponent) -> bool {
    fn differs<T: PartialEq>(want: &Option<T>, have: &Option<T>) -> bool {
        want.is_some() && want != have
    }
    let tags_differ = desired
        .tags
        .iter()
        .any(|(k, v)| current.tags.get(k) != Some(v));
    tags_differ
        || differs(&desired.retention_in_days, &current.retention_in_days)
        || desired.workspace_resource_id.as_ref().is_some_and(|want| {
            // ARM answers resource ids lowercased in places; they compare case-insensitively.
            !current
                .workspace_resource_id
                .as_ref()
                .is_some_and(|have| have.eq_ignore_ascii_case(want))
        })
        || differs(&desired.ingestion_mode, &current.ingestion_mode)
        || differs(&desired.sampling_percentage, &current.sampling_percentage)
        || differs(&desired.disable_local_auth, &current.disable_local_auth)
}

/// Where provisioning stands.
#[derive(Debug)]
pub enum Provisioned {
    /// The component exists and is ready; its connection string is known.
    Ready {
        resource_id: String,
        connection_string: String,
    },
    /// Azure is still working on it.
    InProgress { resource_id: String, state: String },
}

/// Brings the component to the desired state: GET, then PUT only when it is missing or
/// differs, so a PUT is issued once per change and a restart between PUT and status write
/// converges on the same, single component.
pub async fn ensure_component(
    components: &dyn Components,
    tenant: &TelemetryTenant,
    provision: &ProvisionSpec,
) -> Result<Provisioned, AzureError> {
    let id = component_id(tenant, provision);
    let current = components.get(&id).await?;
    if let Some(current) = &current
        && !current.location.eq_ignore_ascii_case(&provision.location)
    {
        return Err(AzureError::InvalidSpec(format!(
            "component {} already exists in {}; its location cannot change to {}",
            id.name, current.location, provision.location
        )));
    }
    let desired = desired_component(tenant, provision, current.as_ref());
    let component = match current {
        Some(current) if !needs_update(&current, &desired) => current,
        existing => {
            tracing::info!(
                component = %id.name,
                adopt = existing.as_ref().is_some_and(|c| !c.tags.contains_key(MANAGED_BY_TAG)),
                create = existing.is_none(),
                "applying Application Insights component"
            );
            components.put(&id, &desired).await?
        }
    };
    let resource_id = if component.id.is_empty() {
        id.resource_id()
    } else {
        component.id.clone()
    };
    let succeeded = component
        .provisioning_state
        .as_deref()
        .is_none_or(|s| s.eq_ignore_ascii_case("Succeeded"));
    match (&component.connection_string, succeeded) {
        (Some(cs), true) if !cs.is_empty() => Ok(Provisioned::Ready {
            resource_id,
            connection_string: cs.clone(),
        }),
        _ => Ok(Provisioned::InProgress {
            resource_id,
            state: component
                .provisioning_state
                .clone()
                .unwrap_or_else(|| "Unknown".to_owned()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(provision: serde_json::Value) -> (TelemetryTenant, ProvisionSpec) {
        let mut tenant: TelemetryTenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "TelemetryTenant",
            "metadata": { "name": "acme", "namespace": "saas" },
            "spec": { "tenantId": "acme", "regions": ["westeurope"],
                      "applicationInsights": { "provision": provision } }
        }))
        .unwrap();
        tenant.metadata.namespace = Some("saas".into());
        let spec = tenant.spec.application_insights.provision.clone().unwrap();
        (tenant, spec)
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "subscriptionId": "5f1c5d1e-3b6a-4b8e-9a57-1f2a3b4c5d6e",
            "resourceGroup": "rg", "location": "westeurope", "retentionInDays": 90,
            "workspaceResourceId": "/subscriptions/x/resourceGroups/RG/providers/Microsoft.OperationalInsights/workspaces/w"
        })
    }

    fn as_current(desired: &DesiredComponent) -> Component {
        Component {
            id: String::new(),
            name: "telemux-saas-acme".into(),
            location: desired.location.clone(),
            kind: desired.kind.clone(),
            etag: None,
            provisioning_state: Some("Succeeded".into()),
            connection_string: None,
            instrumentation_key: None,
            app_id: None,
            application_type: Some("web".into()),
            tags: desired.tags.clone(),
            retention_in_days: desired.retention_in_days,
            workspace_resource_id: desired.workspace_resource_id.clone(),
            ingestion_mode: desired.ingestion_mode.clone(),
            sampling_percentage: desired.sampling_percentage,
            disable_local_auth: desired.disable_local_auth,
        }
    }

    #[test]
    fn names_are_derived_from_namespace_and_tenant_unless_given() {
        let (t, p) = tenant(base());
        assert_eq!(component_name(&t, &p), "telemux-saas-acme");
        let mut named = base();
        named["name"] = "legacy-ai".into();
        let (t, p) = tenant(named);
        assert_eq!(component_name(&t, &p), "legacy-ai");
    }

    #[test]
    fn an_unchanged_component_needs_no_put_even_with_lowercased_ids_and_foreign_tags() {
        let (t, p) = tenant(base());
        let desired = desired_component(&t, &p, None);
        let mut current = as_current(&desired);
        current.workspace_resource_id = current.workspace_resource_id.map(|w| w.to_lowercase());
        current.tags.insert("owner".into(), "platform".into());
        assert!(!needs_update(
            &current,
            &desired_component(&t, &p, Some(&current))
        ));
    }

    #[test]
    fn spec_changes_and_missing_tags_need_a_put_keeping_foreign_tags() {
        let (t, p) = tenant(base());
        let desired = desired_component(&t, &p, None);
        let mut current = as_current(&desired);
        current.retention_in_days = Some(30);
        assert!(needs_update(&current, &desired));
        let mut adopted = as_current(&desired);
        adopted.tags = BTreeMap::from([("owner".into(), "platform".into())]);
        let desired = desired_component(&t, &p, Some(&adopted));
        assert!(needs_update(&adopted, &desired));
        assert_eq!(desired.tags["owner"], "platform");
        assert_eq!(desired.tags[MANAGED_BY_TAG], "telemux");
    }
}
