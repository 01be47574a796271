//! Proves the local control plane is the real thing: workloads become Available on kwok's
//! nodes, volume claims are provisioned, the garbage collector runs, and the server is the minor the operator compiles for.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use support::{TestNamespace, eventually, plane_client};

#[tokio::test]
#[cfg_attr(
    no_plane,
    ignore = "needs the local plane: TELEMUX_TEST_KUBECONFIG (make cluster-up)"
)]
async fn server_version_matches_the_compiled_k8s_openapi_minor() {
    let client = plane_client().await;
    let info = client.apiserver_version().await.unwrap();
    let compiled = k8s_openapi::k8s_if_1_33! { "33" };
    assert_eq!(info.major, "1");
    assert_eq!(
        info.minor.trim_end_matches('+'),
        compiled,
        "server is {}",
        info.git_version
    );
}

#[tokio::test]
#[cfg_attr(
    no_plane,
    ignore = "needs the local plane: TELEMUX_TEST_KUBECONFIG (make cluster-up)"
)]
async fn deployments_become_available_on_kwok_nodes() {
    let client = plane_client().await;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let ready = nodes
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    assert!(
        ready >= 2,
        "expected at least two Ready nodes, found {ready}"
    );

    let ns = TestNamespace::create(&client, "deployment-available").await;
    let deployments: Api<Deployment> = ns.api();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.k8s.io/pause:3.10" }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    eventually(
        "the Deployment to become Available with 2 ready replicas",
        Duration::from_secs(90),
        || {
            let deployments = deployments.clone();
            async move {
                let status = deployments.get("web").await.ok()?.status?;
                let available = status
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True");
                (available && status.ready_replicas == Some(2)).then_some(())
            }
        },
    )
    .await;
    ns.delete().await;
}

/// The collector is a StatefulSet whose pods each claim a queue volume: claims must be
/// provisioned and bound for its pods to be scheduled at all.
#[tokio::test]
#[cfg_attr(
    no_plane,
    ignore = "needs the local plane: TELEMUX_TEST_KUBECONFIG (make cluster-up)"
)]
async fn statefulsets_with_volume_claims_become_ready() {
    let client = plane_client().await;
    let ns = TestNamespace::create(&client, "statefulset-ready").await;
    let sets: Api<StatefulSet> = ns.api();
    let set: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "queue" },
        "spec": {
            "replicas": 2,
            "serviceName": "queue",
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": { "app": "queue" } },
            "template": {
                "metadata": { "labels": { "app": "queue" } },
                "spec": { "containers": [{
                    "name": "queue", "image": "registry.k8s.io/pause:3.10",
                    "volumeMounts": [{ "name": "data", "mountPath": "/data" }]
                }] }
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "1Gi" } }
                }
            }]
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    eventually(
        "the StatefulSet's 2 pods Ready on bound claims",
        Duration::from_secs(90),
        || {
            let sets = sets.clone();
            async move {
                let status = sets.get("queue").await.ok()?.status?;
                (status.ready_replicas == Some(2)).then_some(())
            }
        },
    )
    .await;
    let claims: Api<PersistentVolumeClaim> = ns.api();
    for ordinal in 0..2 {
        let claim = claims.get(&format!("data-queue-{ordinal}")).await.unwrap();
        let phase = claim.status.and_then(|s| s.phase);
        assert_eq!(phase.as_deref(), Some("Bound"), "claim of pod {ordinal}");
    }
    ns.delete().await;
}

#[tokio::test]
#[cfg_attr(
    no_plane,
    ignore = "needs the local plane: TELEMUX_TEST_KUBECONFIG (make cluster-up)"
)]
async fn garbage_collector_removes_dependents_of_a_deleted_owner() {
    let client = plane_client().await;
    let ns = TestNamespace::create(&client, "garbage-collection").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let owner = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dependent = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: "owner".into(),
                    uid: owner.metadata.uid.clone().unwrap(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".into(), "v".into())])),
        ..Default::default()
    };
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the garbage collector to delete the dependent ConfigMap",
        Duration::from_secs(60),
        || {
            let config_maps = config_maps.clone();
            async move {
                config_maps
                    .get_opt("dependent")
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    ns.delete().await;
}
