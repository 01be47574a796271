//! Provisioning each tenant's Application Insights through Azure Resource Manager, against the
//! local control plane and emulators of ARM and the Entra ID token endpoint.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{Operator, TestNamespace, eventually, install_crds, names, plane_client};
use telemux::api::TelemetryTenant;
use telemux::azure::{AzureSettings, CredentialSource, build_components_client};
use telemux::controller::provision::AzureComponents;
use telemux::controller::retry::ProvisionTimings;
use telemux_testkit::arm::{ArmEmulator, Fault as ArmFault, Method};
use telemux_testkit::entra::{EntraEmulator, Fault as EntraFault};

const WAIT: Duration = Duration::from_secs(90);
const SUBSCRIPTION: &str = "5f1c5d1e-3b6a-4b8e-9a57-1f2a3b4c5d6e";
const RESOURCE_GROUP: &str = "telemetry";
const AZURE_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "0a1b2c3d-0000-4000-8000-00000000c11e";
const CLIENT_SECRET: &str = "the-operators-client-secret";

struct Env {
    ns: TestNamespace,
    operator: Operator,
    arm: ArmEmulator,
    entra: EntraEmulator,
}

fn components_client(arm: &ArmEmulator, entra: &EntraEmulator) -> AzureComponents {
    let mut settings = AzureSettings::new(CredentialSource::ClientSecret {
        tenant_id: AZURE_TENANT.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: telemux::azure::Secret::new(CLIENT_SECRET.to_owned()),
    });
    settings.arm_endpoint = arm.endpoint();
    settings.authority_host = entra.endpoint();
    // The emulator is reached on loopback, but tokens are for ARM's real audience.
    settings.token_scope = Some("https://management.azure.com/.default".to_owned());
    settings.request_timeout = Duration::from_secs(5);
    AzureComponents(build_components_client(&settings).expect("an Azure client"))
}

async fn setup(test: &str) -> Env {
    setup_with_drift_check(test, Duration::from_secs(600)).await
}

/// `drift`: how often a provisioned component is re-read from ARM.
async fn setup_with_drift_check(test: &str, drift: Duration) -> Env {
    support::captured_logs(); // start capturing before the operator logs anything
    let client = plane_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, test).await;
    let entra = EntraEmulator::start().await.expect("the Entra emulator");
    entra.allow_secret(AZURE_TENANT, CLIENT_ID, CLIENT_SECRET);
    let arm = ArmEmulator::start(&entra).await.expect("the ARM emulator");
    let mut settings = Operator::test_settings();
    settings.azure = Some(components_client(&arm, &entra));
    settings.provision_timings = ProvisionTimings {
        fast: Duration::from_secs(1),
        slow: Duration::from_secs(3),
        throttled: Duration::from_secs(2),
        drift,
    };
    let operator = Operator::start_with(&client, &ns.name, settings).await;
    Env {
        ns,
        operator,
        arm,
        entra,
    }
}

impl Env {
    async fn teardown(self) {
        self.operator.stop().await;
        self.ns.delete().await;
    }

    async fn tenant(&self, name: &str, provision: Value) {
        let mut p = json!({
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": RESOURCE_GROUP,
            "location": "westeurope",
        });
        if let (Some(p), Some(extra)) = (p.as_object_mut(), provision.as_object()) {
            p.extend(extra.clone());
        }
        let tenant: TelemetryTenant = serde_json::from_value(json!({
            "apiVersion": "telemux.io/v1alpha1", "kind": "TelemetryTenant",
            "metadata": { "name": name },
            "spec": { "tenantId": name, "regions": ["westeurope"],
                      "applicationInsights": { "provision": p } }
        }))
        .unwrap();
        self.ns
            .api::<TelemetryTenant>()
            .create(&PostParams::default(), &tenant)
            .await
            .unwrap();
    }

    fn component_name(&self, tenant: &str) -> String {
        format!("telemux-{}-{tenant}", self.ns.name)
    }

    /// ARM requests the operator's metrics counted (`telemux_azure_requests_total`).
    fn azure_requests(&self, operation: &'static str, outcome: &'static str) -> u64 {
        self.operator
            .metrics
            .azure_requests
            .get_or_create(&telemux::metrics::AzureLabels { operation, outcome })
            .get()
    }

    async fn condition(&self, tenant: &str, type_: &str) -> Option<(String, String, String)> {
        support::condition(&self.ns.api::<TelemetryTenant>(), tenant, type_).await
    }

    async fn wait_reason(&self, tenant: &str, status: &str, reason: &str) -> String {
        let api = self.ns.api::<TelemetryTenant>();
        let (_, message) = support::wait_condition(
            &api,
            tenant,
            "ApplicationInsightsReady",
            status,
            Some(reason),
            WAIT,
        )
        .await;
        message
    }

    async fn connection_string_secret(&self, tenant: &str) -> Option<String> {
        let secret = self
            .ns
            .api::<Secret>()
            .get_opt(&names::tenant_connection_string(tenant))
            .await
            .ok()??;
        let bytes = secret.data?.get("connection-string")?.0.clone();
        String::from_utf8(bytes).ok()
    }

    fn components_named(&self, tenant: &str) -> usize {
        let name = self.component_name(tenant).to_lowercase();
        self.arm
            .components()
            .iter()
            .filter(|c| c.name.to_lowercase() == name)
            .count()
    }

    /// Touches the tenant without changing its spec, to cause reconciles.
    async fn touch(&self, tenant: &str, n: u32) {
        let patch = json!({ "metadata": { "annotations": { "test/touch": n.to_string() } } });
        self.ns
            .api::<TelemetryTenant>()
            .patch(tenant, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_provisioned_component_feeds_the_collector_with_one_put_per_generation() {
    let env = setup("provision-create").await;
    env.ns.create_collector("westeurope", "westeurope").await;
    env.tenant("acme", json!({ "retentionInDays": 90 })).await;
    let message = env.wait_reason("acme", "True", "Provisioned").await;
    assert!(message.contains(&env.component_name("acme")), "{message}");

    let component = env
        .arm
        .component(SUBSCRIPTION, RESOURCE_GROUP, &env.component_name("acme"))
        .expect("the component exists in ARM");
    let expected = component.connection_string().unwrap().to_owned();
    assert_eq!(
        env.connection_string_secret("acme").await.as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(
        component.tags().unwrap()["telemux-managed-by"],
        json!("telemux")
    );
    // Routed by the region's collector, with the provisioned connection string.
    eventually("acme routed by the collector", WAIT, || async {
        let (s, ..) = env.condition("acme", "Routed").await?;
        (s == "True").then_some(())
    })
    .await;
    let status = env
        .ns
        .api::<TelemetryTenant>()
        .get("acme")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        status
            .application_insights_resource_id
            .as_deref()
            .is_some_and(|id| id.to_lowercase().contains(&env.component_name("acme")))
    );

    // Reconciles without a spec change issue no PUT.
    for n in 0..3 {
        env.touch("acme", n).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.arm.count(Method::PUT), 1, "one PUT for one generation");
    // The operator's metrics count the ARM requests the emulator saw.
    assert_eq!(env.azure_requests("put", "ok"), 1);
    assert_eq!(
        env.azure_requests("get", "ok") + env.azure_requests("get", "not_found"),
        env.arm.count(Method::GET) as u64
    );

    // A spec change is applied with one more PUT.
    let patch =
        json!({ "spec": { "applicationInsights": { "provision": { "retentionInDays": 180 } } } });
    env.ns
        .api::<TelemetryTenant>()
        .patch("acme", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually("retention applied in Azure", WAIT, || async {
        let c = env
            .arm
            .component(SUBSCRIPTION, RESOURCE_GROUP, &env.component_name("acme"))?;
        (c.property("RetentionInDays") == Some(&json!(180))).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.arm.count(Method::PUT), 2);
    assert_eq!(env.components_named("acme"), 1);

    // The connection string is in no ConfigMap, status, event or log line.
    let secret_text = expected;
    let logs = support::captured_logs();
    assert!(
        logs.contains("applying Application Insights component"),
        "the operator's logs are captured"
    );
    assert!(
        !logs.contains(&secret_text),
        "a connection string was logged"
    );
    let instrumentation_key = component.instrumentation_key().unwrap().to_owned();
    assert!(
        !logs.contains(&instrumentation_key),
        "an instrumentation key was logged"
    );
    let configmaps = env
        .ns
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let tenants = env
        .ns
        .api::<TelemetryTenant>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let events = env
        .ns
        .api::<CoreEvent>()
        .list(&ListParams::default())
        .await
        .unwrap();
    for text in [
        serde_json::to_string(&configmaps.items).unwrap(),
        serde_json::to_string(&tenants.items).unwrap(),
        serde_json::to_string(&events.items).unwrap(),
    ] {
        assert!(!text.contains(&secret_text));
    }
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn asynchronous_provisioning_ends_ready() {
    let env = setup("provision-async").await;
    env.arm.set_provisioning_gets(3);
    env.tenant("slow", json!({})).await;
    env.wait_reason("slow", "False", "Provisioning").await;
    env.wait_reason("slow", "True", "Provisioned").await;
    assert_eq!(env.components_named("slow"), 1);
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn deletion_policy_delete_removes_the_component_and_retain_keeps_it() {
    let env = setup("provision-delete").await;
    env.tenant("gone", json!({ "deletionPolicy": "Delete" }))
        .await;
    env.tenant("kept", json!({})).await;
    env.wait_reason("gone", "True", "Provisioned").await;
    env.wait_reason("kept", "True", "Provisioned").await;
    let api = env.ns.api::<TelemetryTenant>();
    for name in ["gone", "kept"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["gone", "kept"] {
        eventually(&format!("tenant {name} deleted"), WAIT, || async {
            api.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    assert_eq!(env.components_named("gone"), 0, "Delete deletes");
    assert_eq!(env.components_named("kept"), 1, "Retain keeps");
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn an_existing_component_is_adopted_not_duplicated() {
    let env = setup("provision-adopt").await;
    let name = env.component_name("legacy");
    env.arm
        .insert_component(
            SUBSCRIPTION,
            RESOURCE_GROUP,
            &name,
            &json!({ "location": "westeurope", "kind": "web",
                     "tags": { "owner": "platform-team" },
                     "properties": { "Application_Type": "web" } }),
        )
        .unwrap();
    let before = env
        .arm
        .component(SUBSCRIPTION, RESOURCE_GROUP, &name)
        .unwrap();
    env.tenant("legacy", json!({})).await;
    env.wait_reason("legacy", "True", "Provisioned").await;
    let after = env
        .arm
        .component(SUBSCRIPTION, RESOURCE_GROUP, &name)
        .unwrap();
    assert_eq!(env.components_named("legacy"), 1);
    assert_eq!(after.instrumentation_key(), before.instrumentation_key());
    let tags = after.tags().unwrap();
    assert_eq!(
        tags["owner"],
        json!("platform-team"),
        "others' tags are kept"
    );
    assert_eq!(tags["telemux-managed-by"], json!("telemux"));
    assert_eq!(
        env.connection_string_secret("legacy").await.as_deref(),
        before.connection_string()
    );
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn azure_faults_are_reported_and_recovered_from_without_duplicates() {
    let env = setup("provision-faults").await;
    // Throttled, with a Retry-After three times the operator's own fallback (2 s): the
    // operator must wait for ARM's, not its own.
    env.arm
        .set_fault(ArmFault::throttled(Duration::from_secs(6)));
    env.tenant("throttled", json!({})).await;
    let message = env.wait_reason("throttled", "False", "Throttled").await;
    assert!(!message.is_empty());
    let throttled_at = |env: &Env| {
        env.arm
            .requests()
            .into_iter()
            .filter(|r| r.status == 429 && r.path.ends_with("-throttled"))
            .map(|r| r.at)
            .collect::<Vec<_>>()
    };
    // The first answers come at once (the tenant's own writes re-trigger its reconcile); once
    // those settle, the retries are paced by Retry-After.
    let answers = eventually("four throttled answers", WAIT, || async {
        let at = throttled_at(&env);
        (at.len() >= 4).then_some(at)
    })
    .await;
    let waited = answers[3].duration_since(answers[2]).unwrap_or_default();
    assert!(
        waited >= Duration::from_millis(5500),
        "retried {waited:?} after a 429 with Retry-After 6 s"
    );
    env.arm.clear_faults();
    env.wait_reason("throttled", "True", "Provisioned").await;

    // 503 and 500.
    for code in [503u16, 500] {
        let name = format!("fault{code}");
        env.arm.set_fault(ArmFault::status(code));
        env.tenant(&name, json!({})).await;
        env.wait_reason(&name, "False", "AzureError").await;
        env.arm.clear_faults();
        env.wait_reason(&name, "True", "Provisioned").await;
    }

    // A timeout: ARM answers later than the client waits.
    env.arm
        .set_fault(ArmFault::delay(Duration::from_secs(8)).times(1));
    env.tenant("late", json!({})).await;
    env.wait_reason("late", "True", "Provisioned").await;

    // The token endpoint refuses the operator's credential: AuthenticationFailed, with Entra's
    // code. Expiring the issued tokens makes the next ARM call need a new one.
    env.entra.expire_tokens();
    env.entra
        .remove_secret(AZURE_TENANT, CLIENT_ID, CLIENT_SECRET);
    env.tenant("refused", json!({})).await;
    eventually(
        "refused: AuthenticationFailed with Entra's code",
        WAIT,
        || async {
            let (s, r, m) = env.condition("refused", "ApplicationInsightsReady").await?;
            (s == "False" && r == "AuthenticationFailed" && m.contains("AADSTS7000215"))
                .then_some(())
        },
    )
    .await;
    env.entra
        .allow_secret(AZURE_TENANT, CLIENT_ID, CLIENT_SECRET);
    env.wait_reason("refused", "True", "Provisioned").await;

    // The token endpoint fails (503): a transient Azure failure, retried.
    env.entra.expire_tokens();
    env.entra.set_fault(EntraFault::status(503));
    env.tenant("tokenless", json!({})).await;
    env.wait_reason("tokenless", "False", "AzureError").await;
    env.entra.clear_faults();
    env.wait_reason("tokenless", "True", "Provisioned").await;

    // Each failure class is counted in the operator's metrics.
    for outcome in ["throttled", "transient", "authentication"] {
        let failed = env.azure_requests("get", outcome) + env.azure_requests("put", outcome);
        assert!(failed >= 1, "no ARM request counted as {outcome}");
    }
    for name in [
        "throttled",
        "fault503",
        "fault500",
        "late",
        "refused",
        "tokenless",
    ] {
        assert_eq!(
            env.components_named(name),
            1,
            "{name}: exactly one component"
        );
    }
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_restart_between_put_and_status_converges_without_a_duplicate() {
    let env = setup("provision-restart").await;
    // What an operator killed right after its PUT leaves behind: the component exists, the
    // tenant has no status yet. A fresh operator must converge on that same component.
    let client = components_client(&env.arm, &env.entra);
    let tenant_name = "crashy";
    env.tenant(tenant_name, json!({})).await;
    env.wait_reason(tenant_name, "True", "Provisioned").await;
    let puts = env.arm.count(Method::PUT);
    let Env {
        ns,
        operator,
        arm,
        entra,
    } = env;
    operator.stop().await;
    let api = ns.api::<TelemetryTenant>();
    api.patch_status(
        tenant_name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "status": { "conditions": [], "applicationInsightsResourceId": null } }),
        ),
    )
    .await
    .unwrap();
    let mut settings = Operator::test_settings();
    settings.azure = Some(client);
    let operator = Operator::start_with(&ns.client, &ns.name, settings).await;
    let env = Env {
        ns,
        operator,
        arm,
        entra,
    };
    env.wait_reason(tenant_name, "True", "Provisioned").await;
    assert_eq!(env.components_named(tenant_name), 1);
    assert_eq!(
        env.arm.count(Method::PUT),
        puts,
        "nothing to change, nothing PUT"
    );
    env.teardown().await;
}

#[tokio::test]
#[cfg_attr(
    any(no_plane, no_helm),
    ignore = "needs the local plane and helm: TELEMUX_TEST_KUBECONFIG, HELM_BIN (make cluster-up helm)"
)]
async fn a_recreated_component_rolls_the_collector_with_its_new_connection_string() {
    let env = setup_with_drift_check("provision-rotate", Duration::from_secs(2)).await;
    env.ns.create_collector("westeurope", "westeurope").await;
    env.tenant("acme", json!({})).await;
    env.wait_reason("acme", "True", "Provisioned").await;
    // The connection string reaches pods through the Secret: its hash rolls them.
    let hash = || async {
        let workload = env
            .ns
            .api::<k8s_openapi::api::apps::v1::StatefulSet>()
            .get_opt(&names::workload("westeurope"))
            .await
            .ok()??;
        workload
            .spec?
            .template
            .metadata?
            .annotations?
            .remove("telemux.io/secret-hash")
    };
    let first = env.connection_string_secret("acme").await.unwrap();
    let before = eventually("the collector rolled out with acme", WAIT, || async {
        let (s, ..) = env.condition("acme", "Routed").await?;
        if s != "True" {
            return None;
        }
        hash().await
    })
    .await;

    // Someone deletes the component in Azure: telemux re-creates it (new instrumentation key)
    // and the collector rolls with the new connection string.
    let name = env.component_name("acme");
    assert!(
        env.arm
            .remove_component(SUBSCRIPTION, RESOURCE_GROUP, &name)
    );
    let second = eventually(
        "a new connection string in the tenant's Secret",
        WAIT,
        || async {
            let now = env.connection_string_secret("acme").await?;
            (now != first).then_some(now)
        },
    )
    .await;
    let recreated = env
        .arm
        .component(SUBSCRIPTION, RESOURCE_GROUP, &name)
        .unwrap();
    assert_eq!(recreated.connection_string(), Some(second.as_str()));
    eventually("the collector to roll", WAIT, || async {
        let now = hash().await?;
        (now != before).then_some(())
    })
    .await;
    assert_eq!(env.components_named("acme"), 1);
    env.teardown().await;
}
