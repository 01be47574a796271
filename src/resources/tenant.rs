//! Objects owned by a TelemetryTenant: its ingestion credential and its connection string.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::{LABEL_COMPONENT, LABEL_NAME, LABEL_TENANT, labels, owner_reference};
use crate::api::TelemetryTenant;
use crate::api::tenant::TenantEndpoint;

/// Keys of the credential Secret.
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const BCRYPT_KEY: &str = "bcrypt";
/// Key of the connection-string Secret.
pub const CONNECTION_STRING_KEY: &str = "connection-string";

pub fn credentials_secret_name(tenant: &TelemetryTenant) -> String {
    format!("{}-ingestion-credentials", tenant.name_any())
}

pub fn connection_string_secret_name(tenant: &TelemetryTenant) -> String {
    format!("{}-appinsights", tenant.name_any())
}

fn tenant_secret(
    tenant: &TelemetryTenant,
    name: String,
    component: &str,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: tenant.namespace(),
            labels: Some(labels(&[
                (LABEL_NAME, "telemux"),
                (LABEL_COMPONENT, component),
                (LABEL_TENANT, &tenant.spec.tenant_id),
            ])),
            owner_references: owner_reference(tenant).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The tenant's ingestion credential: what its apps send (`username`, `password`), the bcrypt
/// hash collectors verify against, and where to send in each region
/// (`endpoint.<region>.grpc`, `endpoint.<region>.http`: its shard's Service).
pub fn credentials_secret(
    tenant: &TelemetryTenant,
    password: &str,
    bcrypt_hash: &str,
    endpoints: &[TenantEndpoint],
) -> Secret {
    let mut data = BTreeMap::from([
        (
            USERNAME_KEY.to_owned(),
            ByteString(tenant.spec.tenant_id.clone().into_bytes()),
        ),
        (
            PASSWORD_KEY.to_owned(),
            ByteString(password.as_bytes().to_vec()),
        ),
        (
            BCRYPT_KEY.to_owned(),
            ByteString(bcrypt_hash.as_bytes().to_vec()),
        ),
    ]);
    for endpoint in endpoints {
        let region = &endpoint.region;
        data.entry(format!("endpoint.{region}.grpc"))
            .or_insert_with(|| ByteString(endpoint.grpc.clone().into_bytes()));
        data.entry(format!("endpoint.{region}.http"))
            .or_insert_with(|| ByteString(endpoint.http.clone().into_bytes()));
    }
    tenant_secret(
        tenant,
        credentials_secret_name(tenant),
        "ingestion-credentials",
        data,
    )
}

/// The connection string the collectors deliver the tenant's telemetry with.
pub fn connection_string_secret(tenant: &TelemetryTenant, connection_string: &str) -> Secret {
    let data = BTreeMap::from([(
        CONNECTION_STRING_KEY.to_owned(),
        ByteString(connection_string.trim().as_bytes().to_vec()),
    )]);
    tenant_secret(
        tenant,
        connection_string_secret_name(tenant),
        "connection-string",
        data,
    )
}
