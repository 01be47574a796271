//! Everything the tenant reconcile reads, in one place, into plain data.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::decide::{CredentialAction, credential};
use crate::api::condition_types::APPLICATION_INSIGHTS_READY;
use crate::api::reasons;
use crate::api::{SecretKeyRef, TelemetryTenant};
use crate::controller::io::{SecretLookup, read_secret, read_user_secret_key, secret_value};
use crate::controller::{Context, Result};
use crate::pipeline::selection::ListedCollector;
use crate::pipeline::shards::ShardIndex;
use crate::resources::collector::recorded_shard;
use crate::resources::tenant::{
    BCRYPT_KEY, CONNECTION_STRING_KEY, PASSWORD_KEY, USERNAME_KEY, connection_string_secret_name,
    credentials_secret_name,
};

/// A credential as stored in its Secret (any key may be missing or tampered with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredCredential {
    pub user: Option<String>,
    pub password: Option<String>,
    pub hash: Option<String>,
}

/// Where the tenant's connection string comes from, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedSource {
    /// `applicationInsights.existing`: the user's Secret, read from the API.
    Existing {
        reference: SecretKeyRef,
        lookup: SecretLookup,
    },
    /// `applicationInsights.provision`, but telemux has no Azure credential.
    ProvisionWithoutAzure,
    /// `applicationInsights.provision`.
    Provision {
        /// This process verified the component in Azure for this generation, recently.
        verified_recently: bool,
        /// The message of a stored `Provisioned` condition.
        previous_provisioned: Option<String>,
        /// The tenant's connection string Secret exists (watch cache).
        secret_present: bool,
    },
    /// Neither (validation refuses such a spec; kept so decisions stay total).
    Missing,
}

/// What the tenant reconcile knows before it decides.
#[derive(Debug, Clone)]
pub struct ObservedTenant {
    pub credential: StoredCredential,
    /// The credentials Secret as read (to skip an apply that would change nothing).
    pub credential_secret: CredentialSecret,
    pub source: ObservedSource,
    /// A connection string Secret written earlier exists (it stays in use while the source
    /// is broken).
    pub connection_secret_present: bool,
    /// The tenant's connection string Secret, from the watch cache.
    pub connection_secret: Option<Arc<Secret>>,
    /// The collectors of the tenant's namespace, by name, with their statuses indexed.
    pub collectors: Vec<ListedCollector>,
    /// The tenant's shard of each collector that assigned it one (by collector name), from
    /// the shard records.
    pub recorded_shards: BTreeMap<String, ShardIndex>,
}

/// Key of a tenant in the verified-components memory.
pub fn verified_key(tenant: &TelemetryTenant) -> String {
    format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    )
}

pub async fn observe(tenant: &TelemetryTenant, ctx: &Context) -> Result<ObservedTenant> {
    let namespace = tenant.namespace().unwrap_or_default();
    let credential_secret = read_credential_secret(tenant, ctx, &namespace).await?;
    let credential = credential_secret
        .secret()
        .map(|s| stored_credential(s))
        .unwrap_or_default();
    let connection_secret = ctx.managed_secret(&namespace, &connection_string_secret_name(tenant));
    let connection_secret_present = connection_secret
        .as_deref()
        .and_then(|s| secret_value(s, CONNECTION_STRING_KEY))
        .is_some();
    let source = observe_source(tenant, ctx, &namespace, connection_secret_present).await?;
    let mut collectors: Vec<_> = ctx
        .collectors
        .state()
        .into_iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
        .map(|c| ctx.listings.of(c))
        .collect();
    collectors.sort_by_key(|c| c.name_any());
    let records: Vec<_> = ctx
        .shard_records
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    let recorded_shards = collectors
        .iter()
        .filter_map(|c| {
            let records = records.iter().map(|r| &**r);
            let shard = recorded_shard(records, &c.name_any(), &tenant.name_any())?;
            Some((c.name_any(), shard))
        })
        .collect();
    Ok(ObservedTenant {
        credential,
        credential_secret,
        source,
        connection_secret_present,
        connection_secret,
        collectors,
        recorded_shards,
    })
}

/// The credentials Secret from the watch cache when it holds an intact credential; from the
/// API when it holds a broken one, since a lagging cache must never cause a re-issue. (The
/// cache only moves forward: once it shows an intact credential, no older one comes back.)
/// When the cache holds none, nothing is read: the Secret is then created, which the API server
/// refuses if one the cache has not shown yet exists (`CredentialSecret::NotCached`).
async fn read_credential_secret(
    tenant: &TelemetryTenant,
    ctx: &Context,
    namespace: &str,
) -> Result<CredentialSecret> {
    let name = credentials_secret_name(tenant);
    let Some(cached) = ctx.managed_secret(namespace, &name) else {
        return Ok(CredentialSecret::NotCached);
    };
    let user = Some(tenant.spec.tenant_id.as_str());
    if let CredentialAction::Keep { .. } = credential(&stored_credential(&cached), user) {
        return Ok(CredentialSecret::Read(Some(cached)));
    }
    let read = read_secret(&ctx.client, namespace, &name).await?;
    Ok(CredentialSecret::Read(read.map(Arc::new)))
}

/// The credentials Secret as observed.
#[derive(Debug, Clone)]
pub enum CredentialSecret {
    /// From the cache (intact) or the API; `None`: it does not exist.
    Read(Option<Arc<Secret>>),
    /// The cache holds none, and the API was not asked.
    NotCached,
}

impl CredentialSecret {
    pub fn secret(&self) -> Option<&Arc<Secret>> {
        match self {
            CredentialSecret::Read(secret) => secret.as_ref(),
            CredentialSecret::NotCached => None,
        }
    }
}

pub fn stored_credential(secret: &Secret) -> StoredCredential {
    StoredCredential {
        user: secret_value(secret, USERNAME_KEY),
        password: secret_value(secret, PASSWORD_KEY),
        hash: secret_value(secret, BCRYPT_KEY),
    }
}

async fn observe_source(
    tenant: &TelemetryTenant,
    ctx: &Context,
    namespace: &str,
    secret_present: bool,
) -> Result<ObservedSource> {
    let ai = &tenant.spec.application_insights;
    if let Some(existing) = &ai.existing {
        let reference = existing.connection_string_secret_ref.clone();
        let lookup = read_user_secret_key(ctx, namespace, &reference.name, &reference.key).await?;
        return Ok(ObservedSource::Existing { reference, lookup });
    }
    if ai.provision.is_none() {
        return Ok(ObservedSource::Missing);
    }
    if ctx.settings.azure.is_none() {
        return Ok(ObservedSource::ProvisionWithoutAzure);
    }
    let verified_recently = ctx.verified_components.fresh(
        &verified_key(tenant),
        tenant.metadata.generation.unwrap_or_default(),
        ctx.settings.provision_timings.drift,
    );
    let previous_provisioned = tenant.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| {
                c.type_ == APPLICATION_INSIGHTS_READY && c.reason == reasons::PROVISIONED.name
            })
            .map(|c| c.message.clone())
    });
    Ok(ObservedSource::Provision {
        verified_recently,
        previous_provisioned,
        secret_present,
    })
}
