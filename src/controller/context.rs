//! What every reconcile shares: the client, the watch caches, the settings and the little
//! memory telemux keeps between reconciles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};

use super::collector::check::{CachedValidator, CheckedShards, ShardKey};
use super::io::{SecretLookup, secret_value};
use super::provision::AzureComponents;
use super::retry::ProvisionTimings;
use crate::api::{RegionalCollector, TelemetryTenant};
use crate::pipeline::selection::{ListedCollector, Listing};

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub tenants: Store<TelemetryTenant>,
    pub collectors: Store<RegionalCollector>,
    /// Secrets telemux wrote (labelled managed-by=telemux), from a watch.
    pub managed_secrets: Store<Secret>,
    pub settings: Settings,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Checks configurations before rollout (when a collector binary is configured), once per
    /// configuration.
    pub validator: Option<CachedValidator>,
    /// Each shard's last checked configuration, by the fingerprint of its sources.
    pub checked_shards: CheckedShards,
    /// Config hash each shard was last rolled out with by this process.
    pub rollouts: Rollouts,
    /// Provisioned components verified in Azure recently.
    pub verified_components: VerifiedComponents,
    /// The records of which tenants each shard serves (`resources::collector::shard_record`).
    pub shard_records: Store<ConfigMap>,
    /// Shard assignments this process recorded, until `shard_records` shows them.
    pub unseen_assignments: UnseenAssignments,
    /// True once every cache holds its first full list.
    caches_synced: tokio::sync::watch::Receiver<bool>,
    /// Each collector's burst of triggers, for `Settings::collector_debounce`.
    pub collector_pacing: Pacing,
    /// Metadata of users' Secrets in scope (their resourceVersions; not telemux's own), from
    /// a watch.
    pub user_secrets: Store<PartialObjectMeta<Secret>>,
    /// Keys of users' Secrets read before, by resourceVersion.
    pub user_secret_values: UserSecretValues,
    /// Statuses written but perhaps not yet in the cache.
    pub sent_statuses: SentStatuses,
    /// Metadata of the collectors' children, from watches.
    pub children: ChildStores,
    /// What this process last applied to each child, and the version that left.
    pub applied_children: AppliedChildren,
    /// Each collector's status, indexed (`Listing`), for its current resourceVersion.
    pub listings: Listings,
}

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A collector reconciles once its triggers have been quiet this long, and at most ten
    /// times this long after the first: a burst of tenant changes becomes few renders and
    /// rollouts, and a burst of thousands of tenants, which never leaves a quiet moment, still
    /// makes progress.
    pub collector_debounce: Duration,
    /// How often objects are re-checked even when nothing changed (drift, lost events).
    pub resync: Duration,
    /// Collector binary whose `validate` checks every new configuration before rollout.
    pub collector_binary: Option<std::path::PathBuf>,
    /// Image of the collector pods of RegionalCollectors whose spec names no `image`.
    pub collector_image: String,
    /// Azure Resource Manager access, for tenants whose App Insights telemux provisions.
    pub azure: Option<AzureComponents>,
    pub provision_timings: ProvisionTimings,
    /// How the tenants' delivery figures are collected.
    pub delivery: crate::delivery::collect::DeliverySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            collector_debounce: Duration::from_secs(2),
            resync: Duration::from_secs(300),
            collector_binary: None,
            collector_image: crate::api::collector::DEFAULT_COLLECTOR_IMAGE.to_owned(),
            azure: None,
            provision_timings: ProvisionTimings::default(),
            delivery: crate::delivery::collect::DeliverySettings::default(),
        }
    }
}

/// The stores the controllers read from; filled by the watches in `crate::run`.
pub struct Stores {
    pub tenants: Store<TelemetryTenant>,
    pub collectors: Store<RegionalCollector>,
    pub managed_secrets: Store<Secret>,
    pub user_secrets: Store<PartialObjectMeta<Secret>>,
    pub shard_records: Store<ConfigMap>,
    /// True once every store above holds its first full list.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// Not awaited: a child missing from these is applied, which is always safe.
    pub children: ChildStores,
}

/// Metadata (resourceVersions) of the collectors' children the reconcile applies: with dozens
/// of shards, re-applying every shard's objects on each reconcile cost the API server a
/// full merge of hundreds of KiB of configuration per shard, for nothing.
#[derive(Clone)]
pub struct ChildStores {
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
}

impl ChildStores {
    /// A child's live resourceVersion, from its store.
    pub fn version<K>(
        store: &Store<PartialObjectMeta<K>>,
        namespace: &str,
        name: &str,
    ) -> Option<String>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        store
            .get(&ObjectRef::new(name).within(namespace))?
            .metadata
            .resource_version
            .clone()
    }
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        mut settings: Settings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let validator = settings.collector_binary.clone().map(|path| {
            CachedValidator::new(Arc::new(crate::validator::CollectorBinary {
                path,
                timeout: Duration::from_secs(30),
            }))
        });
        // Every ARM request is counted by operation and outcome.
        if let Some(azure) = settings.azure.take() {
            settings.azure = Some(AzureComponents(Arc::new(
                crate::azure::metered::MeteredComponents::new(azure.0, metrics.clone()),
            )));
        }
        let reporter = Reporter {
            controller: "telemux".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            tenants: stores.tenants,
            collectors: stores.collectors,
            managed_secrets: stores.managed_secrets,
            settings,
            metrics,
            validator,
            checked_shards: CheckedShards::default(),
            rollouts: Rollouts::default(),
            verified_components: VerifiedComponents::default(),
            shard_records: stores.shard_records,
            unseen_assignments: UnseenAssignments::default(),
            caches_synced: stores.synced,
            collector_pacing: Pacing::default(),
            user_secrets: stores.user_secrets,
            user_secret_values: UserSecretValues::default(),
            sent_statuses: SentStatuses::default(),
            children: stores.children,
            applied_children: AppliedChildren::default(),
            listings: Listings::default(),
        })
    }

    /// Waits until every cache a reconcile reads holds its first full list: a collector
    /// reconciled against an empty tenant cache would drop every shard and record. False
    /// only when the watches are gone (shutdown).
    pub async fn caches_ready(&self) -> bool {
        let mut synced = self.caches_synced.clone();
        synced.wait_for(|synced| *synced).await.is_ok()
    }

    /// A Secret telemux wrote, from the watch cache.
    pub fn managed_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.managed_secrets
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// A user's Secret's resourceVersion, from the metadata watch.
    pub fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.user_secrets
            .get(&ObjectRef::new(name).within(namespace))?
            .metadata
            .resource_version
            .clone()
    }

    /// A managed Secret's key, from the watch cache.
    pub fn managed_secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        secret_value(&*self.managed_secret(namespace, name)?, key)
    }
}

/// Each collector's [`Listing`] for the resourceVersion it was built from: built once per
/// status change, read by every tenant reconcile in between.
#[derive(Default)]
pub struct Listings(Mutex<HashMap<CollectorKey, VersionedListing>>);

/// A listing and the collector resourceVersion it was built from.
type VersionedListing = (Option<String>, Arc<Listing>);

/// A collector by namespace and name.
type CollectorKey = (Option<String>, String);

impl Listings {
    pub fn of(&self, collector: Arc<RegionalCollector>) -> ListedCollector {
        use kube::ResourceExt;
        let key = (collector.namespace(), collector.name_any());
        let version = collector.resource_version();
        let known = {
            let listings = self.0.lock().unwrap_or_else(|p| p.into_inner());
            listings
                .get(&key)
                .filter(|(v, _)| version.is_some() && *v == version)
                .map(|(_, listing)| listing.clone())
        };
        let listing = known.unwrap_or_else(|| {
            let listing = Arc::new(Listing::of(&collector));
            let mut listings = self.0.lock().unwrap_or_else(|p| p.into_inner());
            listings.insert(key, (version, listing.clone()));
            listing
        });
        ListedCollector { collector, listing }
    }
}

/// For each child (kind/namespace/name): a fingerprint of the object this process last
/// applied and the resourceVersion the API server answered with. While the watch still shows
/// that version, nobody has changed the child since, and the same apply would change nothing.
#[derive(Default)]
pub struct AppliedChildren(Mutex<HashMap<String, (u64, String)>>);

impl AppliedChildren {
    /// Whether `live_version` is what applying `fingerprint` last left.
    pub fn is_current(&self, key: &str, fingerprint: u64, live_version: Option<&str>) -> bool {
        let applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (applied.get(key), live_version) {
            (Some((f, version)), Some(live)) => *f == fingerprint && version == live,
            _ => false,
        }
    }

    pub fn record(&self, key: String, fingerprint: u64, version: Option<String>) {
        let mut applied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match version {
            Some(version) => applied.insert(key, (fingerprint, version)),
            None => applied.remove(&key),
        };
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// The config hash each shard was last rolled out with by this process, so a rollout is
/// announced once even when the status cache lags behind.
#[derive(Default)]
pub struct Rollouts(Mutex<HashMap<ShardKey, String>>);

impl Rollouts {
    /// Records that `key` now runs `hash`; true when that is news.
    pub fn note(&self, key: ShardKey, hash: &str) -> bool {
        let mut rolled_out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        rolled_out.insert(key, hash.to_owned()).as_deref() != Some(hash)
    }
}

/// When each provisioned tenant's component was last verified in Azure, and for which
/// generation: other reconciles of the tenant then need no ARM call.
#[derive(Default)]
pub struct VerifiedComponents(Mutex<HashMap<String, (i64, Instant)>>);

impl VerifiedComponents {
    /// Verified for this generation within `within`?
    pub fn fresh(&self, key: &str, generation: i64, within: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|(g, at)| *g == generation && at.elapsed() < within)
    }

    pub fn record(&self, key: String, generation: i64) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (generation, Instant::now()));
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Shard assignments this process recorded, until the records' cache shows them. Assigning
/// a tenant again because the cache lags behind could give it another shard.
#[derive(Default)]
pub struct UnseenAssignments(Mutex<HashMap<(String, String, String), u32>>);

impl UnseenAssignments {
    fn key(collector: &RegionalCollector, tenant: &str) -> (String, String, String) {
        use kube::ResourceExt;
        (
            collector.namespace().unwrap_or_default(),
            collector.name_any(),
            tenant.to_owned(),
        )
    }

    pub fn note(&self, collector: &RegionalCollector, tenant: &str, shard: u32) {
        let mut unseen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        unseen.insert(Self::key(collector, tenant), shard);
    }

    /// Adds to `recorded` (tenant → shard, from the cache) what this process recorded and the
    /// cache does not show yet, and forgets what it shows now.
    pub fn fill(
        &self,
        collector: &RegionalCollector,
        recorded: &mut std::collections::BTreeMap<String, u32>,
    ) {
        use kube::ResourceExt;
        let (namespace, name) = (
            collector.namespace().unwrap_or_default(),
            collector.name_any(),
        );
        let mut unseen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        unseen.retain(|(ns, c, tenant), shard| {
            if ns != &namespace || c != &name {
                return true;
            }
            if recorded.get(tenant) == Some(shard) {
                return false; // the cache caught up
            }
            recorded.entry(tenant.clone()).or_insert(*shard);
            true
        });
    }
}

/// What a key of a user's Secret held at a resourceVersion. The watch of users' Secrets
/// carries metadata only (their data is not telemux's to cache whole), so without this every
/// reconcile of a tenant would read its connection string's Secret again; now only a changed
/// Secret is read.
#[derive(Default)]
pub struct UserSecretValues(Mutex<HashMap<SecretKeyId, (String, SecretLookup)>>);

/// A key of a Secret: namespace, name, key.
type SecretKeyId = (String, String, String);

impl UserSecretValues {
    pub fn get(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        version: &str,
    ) -> Option<SecretLookup> {
        let values = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (seen, lookup) = values.get(&(namespace.into(), name.into(), key.into()))?;
        (seen == version).then(|| lookup.clone())
    }

    /// Remembers what the key held at `version`; `None` (the Secret is gone) forgets it.
    pub fn remember(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        read: Option<(String, SecretLookup)>,
    ) {
        let mut values = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let id = (namespace.to_owned(), name.to_owned(), key.to_owned());
        match read {
            Some(read) => values.insert(id, read),
            None => values.remove(&id),
        };
    }
}

/// How long a written status is assumed to be on its way into the cache.
const STATUS_IN_FLIGHT: Duration = Duration::from_secs(30);

/// The status last written for each object, with the resourceVersion it was decided from.
/// The write's own watch event and the object's other triggers often run the next reconcile
/// before the cache shows that status, and comparing with the cache alone would write it
/// again. A status is skipped only while the cache still shows the very version it was
/// decided from: any newer version is compared as usual.
#[derive(Default)]
pub struct SentStatuses(Mutex<HashMap<String, Sent>>);

struct Sent {
    from_version: String,
    fingerprint: u64,
    at: Instant,
}

impl SentStatuses {
    /// Was this status (`fingerprint`) written already, decided from `version`?
    pub fn already_sent(&self, key: &str, version: &str, fingerprint: u64) -> bool {
        let sent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sent.get(key).is_some_and(|s| {
            s.from_version == version
                && s.fingerprint == fingerprint
                && s.at.elapsed() < STATUS_IN_FLIGHT
        })
    }

    pub fn record(&self, key: String, version: String, fingerprint: u64) {
        let mut sent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Entries only matter until the cache catches up: drop old ones now and then.
        if sent.len() % 1024 == 1023 {
            sent.retain(|_, s| now.duration_since(s.at) < STATUS_IN_FLIGHT);
        }
        sent.insert(
            key,
            Sent {
                from_version: version,
                fingerprint,
                at: now,
            },
        );
    }
}

/// A debounce that cannot starve: a key runs once its triggers have been quiet for `quiet`,
/// or `quiet × MAX_DELAY_FACTOR` after the burst began, whichever comes first.
/// Every trigger calls [`Pacing::wait`] (a reconcile that returned a requeue is called again
/// at once on a new trigger, or by its timer when none came).
///
/// Triggers that arrive during a run are seen only when it ends ([`Pacing::finished`]); their
/// burst began while the run was going, so it counts from the run's start. Without that, a
/// burst of thousands of tenants, whose reconciles take a while, waited ten quiet periods
/// after each one.
#[derive(Default)]
pub struct Pacing(Mutex<PacingState>);

#[derive(Default)]
struct PacingState {
    bursts: HashMap<String, Burst>,
    /// When each key's last run started, and ended.
    runs: HashMap<String, (Instant, Option<Instant>)>,
}

/// How much longer than the quiet period a burst may delay its key.
pub const MAX_DELAY_FACTOR: u32 = 10;

struct Burst {
    first: Instant,
    last: Instant,
}

impl Pacing {
    /// `None` when `key` runs now (its burst is over); otherwise how long to wait.
    pub fn wait(&self, key: &str, quiet: Duration) -> Option<Duration> {
        self.wait_at(key, quiet, Instant::now())
    }

    /// The run that `wait` let go has ended.
    pub fn finished(&self, key: &str) {
        self.finished_at(key, Instant::now());
    }

    fn wait_at(&self, key: &str, quiet: Duration, now: Instant) -> Option<Duration> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let PacingState { bursts, runs } = &mut *state;
        let burst = bursts.entry(key.to_owned()).or_insert_with(|| {
            let first = match runs.get(key) {
                // Called right after a run: triggered while it ran.
                Some((started, Some(ended))) if now.duration_since(*ended) < quiet => *started,
                _ => now,
            };
            Burst { first, last: now }
        });
        let deadline = burst.first + quiet * MAX_DELAY_FACTOR;
        let new = burst.last == now;
        if (!new && now.duration_since(burst.last) >= quiet) || now >= deadline {
            bursts.remove(key);
            runs.insert(key.to_owned(), (now, None));
            return None;
        }
        burst.last = now;
        Some(quiet.min(deadline - now))
    }

    fn finished_at(&self, key: &str, now: Instant) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, ended @ None)) = state.runs.get_mut(key) {
            *ended = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(name: &str) -> RegionalCollector {
        let spec = serde_json::from_value(serde_json::json!({ "region": "westeurope" })).unwrap();
        let mut collector = RegionalCollector::new(name, spec);
        collector.metadata.namespace = Some("tenants".into());
        collector
    }

    #[test]
    fn an_assignment_the_cache_does_not_show_yet_is_filled_in_until_it_does() {
        let (eu, us) = (collector("eu"), collector("us"));
        let unseen = UnseenAssignments::default();
        unseen.note(&eu, "acme", 2);
        unseen.note(&us, "globex", 1);
        let mut recorded = std::collections::BTreeMap::new();
        unseen.fill(&eu, &mut recorded);
        assert_eq!(recorded, [("acme".to_owned(), 2)].into());
        // The cache shows it now: it is forgotten, and what the cache shows stands.
        unseen.fill(&eu, &mut recorded);
        let mut later = std::collections::BTreeMap::new();
        unseen.fill(&eu, &mut later);
        assert!(later.is_empty(), "{later:?}");
        let mut other = std::collections::BTreeMap::new();
        unseen.fill(&us, &mut other);
        assert_eq!(other, [("globex".to_owned(), 1)].into());
    }

    #[test]
    fn a_status_is_skipped_only_while_the_cache_shows_the_version_it_was_decided_from() {
        let sent = SentStatuses::default();
        sent.record("tenant/ns/acme".into(), "41".into(), 7);
        assert!(sent.already_sent("tenant/ns/acme", "41", 7));
        assert!(
            !sent.already_sent("tenant/ns/acme", "41", 8),
            "another status"
        );
        assert!(
            !sent.already_sent("tenant/ns/acme", "42", 7),
            "a newer version"
        );
        assert!(!sent.already_sent("tenant/ns/globex", "41", 7));
    }

    #[test]
    fn a_user_secret_is_remembered_for_its_version_only() {
        let values = UserSecretValues::default();
        let found = SecretLookup::Found("InstrumentationKey=x".into());
        values.remember("ns", "ai", "cs", Some(("5".into(), found.clone())));
        assert_eq!(values.get("ns", "ai", "cs", "5"), Some(found));
        assert_eq!(values.get("ns", "ai", "cs", "6"), None);
        assert_eq!(values.get("ns", "ai", "other", "5"), None);
        values.remember("ns", "ai", "cs", None);
        assert_eq!(values.get("ns", "ai", "cs", "5"), None);
    }

    #[test]
    fn a_burst_runs_once_quiet_or_at_its_deadline_never_later() {
        let pacing = Pacing::default();
        let quiet = Duration::from_millis(100);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            pacing.wait_at("eu", quiet, at(0)),
            Some(quiet),
            "the first trigger waits"
        );
        assert_eq!(
            pacing.wait_at("us", quiet, at(0)),
            Some(quiet),
            "keys are apart"
        );
        // A trigger every 50 ms keeps it waiting...
        for ms in (50..1000).step_by(50) {
            assert!(pacing.wait_at("eu", quiet, at(ms)).is_some(), "at {ms} ms");
        }
        // ...but not past ten quiet periods after the first.
        assert_eq!(pacing.wait_at("eu", quiet, at(1000)), None);
        // Quiet for a period: it runs.
        assert!(pacing.wait_at("us", quiet, at(0)).is_some());
        assert_eq!(pacing.wait_at("us", quiet, at(150)), None);
    }

    #[test]
    fn a_collectors_listing_is_built_once_per_status_version() {
        let listings = Listings::default();
        let mut eu = collector("eu");
        eu.metadata.resource_version = Some("1".into());
        eu.status =
            serde_json::from_value(serde_json::json!({ "routedTenants": ["acme"] })).unwrap();
        let first = listings.of(Arc::new(eu.clone()));
        assert!(first.listing.routes("acme"));
        let again = listings.of(Arc::new(eu.clone()));
        assert!(
            Arc::ptr_eq(&first.listing, &again.listing),
            "same version, same index"
        );
        eu.metadata.resource_version = Some("2".into());
        eu.status =
            serde_json::from_value(serde_json::json!({ "routedTenants": ["globex"] })).unwrap();
        let changed = listings.of(Arc::new(eu));
        assert!(!changed.listing.routes("acme") && changed.listing.routes("globex"));
    }

    #[test]
    fn a_child_is_current_only_at_the_version_our_last_apply_of_the_same_object_left() {
        let applied = AppliedChildren::default();
        let key = "ConfigMap/tenants/eu-collector";
        assert!(
            !applied.is_current(key, 1, Some("10")),
            "never applied here"
        );
        applied.record(key.into(), 1, Some("10".into()));
        assert!(applied.is_current(key, 1, Some("10")));
        assert!(!applied.is_current(key, 2, Some("10")), "another object");
        assert!(
            !applied.is_current(key, 1, Some("11")),
            "someone changed it"
        );
        assert!(
            !applied.is_current(key, 1, None),
            "deleted, or not seen yet"
        );
        applied.forget(key);
        assert!(!applied.is_current(key, 1, Some("10")));
    }

    #[test]
    fn a_burst_that_went_on_through_a_long_run_runs_again_at_once() {
        let pacing = Pacing::default();
        let quiet = Duration::from_millis(100);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(pacing.wait_at("eu", quiet, at(0)).is_some());
        assert_eq!(pacing.wait_at("eu", quiet, at(1000)), None, "runs at 1 s");
        // The run took 3 s and triggers came meanwhile: ten quiet periods have passed since
        // it began, so the next run is due at once.
        pacing.finished_at("eu", at(4000));
        assert_eq!(pacing.wait_at("eu", quiet, at(4001)), None);
        // After a short run, a trigger still waits for quiet (or the deadline from the run).
        pacing.finished_at("eu", at(4010));
        assert!(pacing.wait_at("eu", quiet, at(4050)).is_some());
        assert!(pacing.wait_at("eu", quiet, at(4100)).is_some());
        assert_eq!(
            pacing.wait_at("eu", quiet, at(4200)),
            None,
            "quiet for 100 ms"
        );
        pacing.finished_at("eu", at(4300));
        // Idle for long: a new trigger waits for quiet as a first one does.
        assert_eq!(pacing.wait_at("eu", quiet, at(60_000)), Some(quiet));
        assert_eq!(pacing.wait_at("eu", quiet, at(60_100)), None);
    }
}
