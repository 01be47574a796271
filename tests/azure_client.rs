//! telemux's App Insights components client against the testkit's emulators of Azure
//! Resource Manager and the Entra ID token endpoint, over plain http on loopback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use telemux::azure::{
    AzureError, AzureSettings, ComponentId, Components, CredentialSource, DesiredComponent,
    ErrorClass, Secret, build_components_client,
};
use telemux_testkit::arm::{ArmEmulator, Fault, Method};
use telemux_testkit::entra::EntraEmulator;

const SUBSCRIPTION: &str = "5f1c5d1e-3b6a-4b8e-9a57-1f2a3b4c5d6e";
const RESOURCE_GROUP: &str = "telemetry";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "0a1b2c3d-0000-4000-8000-00000000c11e";
const CLIENT_SECRET: &str = "the-operators-client-secret";

struct Azure {
    entra: EntraEmulator,
    arm: ArmEmulator,
}

impl Azure {
    async fn start() -> Azure {
        let entra = EntraEmulator::start().await.expect("the Entra emulator");
        entra.allow_secret(TENANT, CLIENT_ID, CLIENT_SECRET);
        let arm = ArmEmulator::start(&entra).await.expect("the ARM emulator");
        Azure { entra, arm }
    }

    fn settings(&self, credential: CredentialSource) -> AzureSettings {
        AzureSettings {
            arm_endpoint: self.arm.endpoint(),
            authority_host: self.entra.endpoint(),
            request_timeout: Duration::from_secs(5),
            // Loopback address, real audience.
            token_scope: Some("https://management.azure.com/.default".to_owned()),
            ..AzureSettings::new(credential)
        }
    }

    fn client(&self) -> Arc<dyn Components> {
        self.client_with_secret(CLIENT_SECRET)
    }

    fn client_with_secret(&self, secret: &str) -> Arc<dyn Components> {
        let settings = self.settings(CredentialSource::ClientSecret {
            tenant_id: TENANT.to_owned(),
            client_id: CLIENT_ID.to_owned(),
            client_secret: Secret::new(secret.to_owned()),
        });
        build_components_client(&settings).expect("a components client")
    }
}

fn id(name: &str) -> ComponentId {
    ComponentId {
        subscription_id: SUBSCRIPTION.to_owned(),
        resource_group: RESOURCE_GROUP.to_owned(),
        name: name.to_owned(),
    }
}

fn desired() -> DesiredComponent {
    DesiredComponent {
        location: "westeurope".to_owned(),
        kind: "web".to_owned(),
        application_type: "web".to_owned(),
        workspace_resource_id: Some(format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.OperationalInsights/workspaces/tenants"
        )),
        retention_in_days: Some(90),
        ingestion_mode: Some("LogAnalytics".to_owned()),
        sampling_percentage: None,
        disable_local_auth: Some(false),
        tags: BTreeMap::from([("telemux-managed-by".to_owned(), "telemux".to_owned())]),
    }
}

#[tokio::test]
async fn create_get_update_delete() {
    let azure = Azure::start().await;
    let client = azure.client();
    let id = id("telemux-acme");

    assert_eq!(client.get(&id).await, Ok(None));

    let created = client.put(&id, &desired()).await.expect("create");
    assert!(created.is_provisioned(), "{created:?}");
    assert!(
        created.id.eq_ignore_ascii_case(&id.resource_id()),
        "{}",
        created.id
    );
    assert_eq!(created.location, "westeurope");
    assert_eq!(created.retention_in_days, Some(90));
    assert_eq!(
        created.tags.get("telemux-managed-by").map(String::as_str),
        Some("telemux")
    );
    let connection_string = created
        .connection_string
        .clone()
        .expect("a connection string");
    assert!(
        connection_string.contains("InstrumentationKey="),
        "{connection_string}"
    );
    let app_id = created.app_id.clone().expect("an AppId");

    let fetched = client.get(&id).await.expect("get").expect("the component");
    assert_eq!(fetched.app_id.as_deref(), Some(app_id.as_str()));
    assert_eq!(
        fetched.connection_string.as_deref(),
        Some(connection_string.as_str())
    );

    let mut changed = desired();
    changed.retention_in_days = Some(30);
    changed
        .tags
        .insert("telemux-tenant".to_owned(), "team-a.acme".to_owned());
    let updated = client.put(&id, &changed).await.expect("update");
    assert_eq!(updated.retention_in_days, Some(30));
    assert_eq!(updated.app_id.as_deref(), Some(app_id.as_str()));
    assert_eq!(updated.tags.len(), 2);
    assert_ne!(updated.etag, created.etag);

    client.delete(&id).await.expect("delete");
    assert_eq!(client.get(&id).await, Ok(None));
    // Deleting what is gone is fine.
    client.delete(&id).await.expect("delete again");
    assert!(azure.arm.components().is_empty());
    // One token served every call.
    assert_eq!(azure.entra.count(), 1);
}

#[tokio::test]
async fn created_with_201_and_still_provisioning() {
    let azure = Azure::start().await;
    azure.arm.set_create_status(201);
    azure.arm.set_provisioning_gets(1);
    let client = azure.client();
    let id = id("telemux-slow");
    let created = client.put(&id, &desired()).await.expect("create");
    assert!(!created.is_provisioned(), "{created:?}");
    let first = client.get(&id).await.unwrap().unwrap();
    assert!(!first.is_provisioned());
    let settled = client.get(&id).await.unwrap().unwrap();
    assert!(settled.is_provisioned(), "{settled:?}");
}

#[tokio::test]
async fn throttling_reports_retry_after_without_retrying() {
    let azure = Azure::start().await;
    let client = azure.client();
    azure
        .arm
        .set_fault(Fault::throttled(Duration::from_secs(7)).times(1));
    let err = client.get(&id("telemux-acme")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(
        err.message().contains("SubscriptionRequestsThrottled"),
        "{err}"
    );
    assert_eq!(azure.arm.count(Method::GET), 1);
    // The fault is spent: the next call goes through.
    assert_eq!(client.get(&id("telemux-acme")).await, Ok(None));
}

#[tokio::test]
async fn server_errors_are_transient_and_not_retried() {
    let azure = Azure::start().await;
    let client = azure.client();
    azure.arm.set_fault(Fault::unavailable().times(5));
    let err = client
        .put(&id("telemux-acme"), &desired())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(azure.arm.count(Method::PUT), 1);
}

#[tokio::test]
async fn refused_secret_is_an_authentication_failure() {
    let azure = Azure::start().await;
    let client = azure.client_with_secret("not-the-secret");
    let err = client.get(&id("telemux-acme")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Authentication, "{err}");
    assert!(err.message().contains("AADSTS"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"));
    assert!(azure.arm.requests().is_empty());
}

#[tokio::test]
async fn forbidden_subscription_and_invalid_spec() {
    let azure = Azure::start().await;
    let client = azure.client();
    azure.arm.forbid_subscription(SUBSCRIPTION);
    let err = client
        .put(&id("telemux-acme"), &desired())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Forbidden, "{err}");
    azure.arm.allow_subscription(SUBSCRIPTION);

    let mut bad = desired();
    bad.retention_in_days = Some(45);
    let err = client.put(&id("telemux-acme"), &bad).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidSpec, "{err}");

    client
        .put(&id("telemux-acme"), &desired())
        .await
        .expect("create");
    let mut moved = desired();
    moved.location = "eastus".to_owned();
    let err = client.put(&id("telemux-acme"), &moved).await.unwrap_err();
    assert!(matches!(err, AzureError::InvalidSpec(_)), "{err}");
}

#[tokio::test]
async fn workload_identity_presents_the_rotated_token_file() {
    let azure = Azure::start().await;
    azure.entra.allow_federated(TENANT, CLIENT_ID);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, "projected-token-1\n").unwrap();
    let settings = azure.settings(CredentialSource::WorkloadIdentity {
        tenant_id: TENANT.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        token_file: file.clone(),
        authority_host: None,
    });
    let client = build_components_client(&settings).unwrap();
    assert_eq!(client.get(&id("telemux-acme")).await, Ok(None));

    // The kubelet rotates the file; the access token expires.
    std::fs::write(&file, "projected-token-2\n").unwrap();
    azure.entra.expire_tokens();
    // ARM refuses the cached token once (the client then forgets it) ...
    let err = client.get(&id("telemux-acme")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    // ... and the next call exchanges the new file content.
    assert_eq!(client.get(&id("telemux-acme")).await, Ok(None));
    assert_eq!(
        azure.entra.assertions_seen(CLIENT_ID),
        ["projected-token-1", "projected-token-2"]
    );
}
