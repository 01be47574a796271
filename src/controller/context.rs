//! What every reconcile shares: the client, the watch caches, the settings and the little
//! memory telemux keeps between reconciles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};

use super::collector::check::CachedValidator;
use super::io::secret_value;
use super::provision::AzureComponents;
use super::retry::ProvisionTimings;
use crate::api::{RegionalCollector, TelemetryTenant};

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
    /// Config hash each collector was last rolled out with by this process.
    pub rollouts: Rollouts,
    /// Provisioned components verified in Azure recently.
    pub verified_components: VerifiedComponents,
    /// Shard assignments this process recorded, until the Secret cache shows them.
    pub shard_records: ShardRecords,
    /// Each collector's burst of triggers, for `Settings::collector_debounce`.
    pub collector_pacing: Pacing,
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
        }
    }
}

/// The stores the controllers read from; filled by the watches in `crate::run`.
pub struct Stores {
    pub tenants: Store<TelemetryTenant>,
    pub collectors: Store<RegionalCollector>,
    pub managed_secrets: Store<Secret>,
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
            rollouts: Rollouts::default(),
            verified_components: VerifiedComponents::default(),
            shard_records: ShardRecords::default(),
            collector_pacing: Pacing::default(),
        })
    }

    /// A managed Secret's key, from the watch cache.
    pub fn managed_secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let secret = self
            .managed_secrets
            .get(&ObjectRef::new(name).within(namespace))?;
        secret_value(&secret, key)
    }
}

/// The config hash each collector was last rolled out with by this process, so a rollout is
/// announced once even when the status cache lags behind.
#[derive(Default)]
pub struct Rollouts(Mutex<HashMap<String, String>>);

impl Rollouts {
    /// Records that `key` now runs `hash`; true when that is news.
    pub fn note(&self, key: String, hash: &str) -> bool {
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

/// Shard assignments this process recorded on tenants' Secrets. The Secret cache may not show
/// an annotation just written, and assigning that tenant again could move it: what was
/// recorded here fills in what the cache does not show yet.
#[derive(Default)]
pub struct ShardRecords(Mutex<HashMap<(String, String, String), u32>>);

impl ShardRecords {
    fn key(collector: &RegionalCollector, tenant: &str) -> (String, String, String) {
        use kube::ResourceExt;
        (
            collector.namespace().unwrap_or_default(),
            collector.name_any(),
            tenant.to_owned(),
        )
    }

    pub fn note(&self, collector: &RegionalCollector, tenant: &str, shard: u32) {
        let mut records = self.0.lock().unwrap_or_else(|p| p.into_inner());
        records.insert(Self::key(collector, tenant), shard);
    }

    /// Adds to `recorded` (tenant → shard, from the cache) what this process recorded and the
    /// cache does not show yet.
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
        let records = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for ((ns, c, tenant), shard) in records.iter() {
            if ns == &namespace && c == &name {
                recorded.entry(tenant.clone()).or_insert(*shard);
            }
        }
    }
}

/// A debounce that cannot starve: a key runs once its triggers have been quiet for `quiet`,
/// or `quiet × MAX_DELAY_FACTOR` after the first trigger of the burst, whichever comes first.
/// Every trigger calls [`Pacing::wait`] (a reconcile that returned a requeue is called again
/// at once on a new trigger, or by its timer when none came).
#[derive(Default)]
pub struct Pacing(Mutex<HashMap<String, Burst>>);

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

    fn wait_at(&self, key: &str, quiet: Duration, now: Instant) -> Option<Duration> {
        let mut bursts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(burst) = bursts.get_mut(key) else {
            bursts.insert(
                key.to_owned(),
                Burst {
                    first: now,
                    last: now,
                },
            );
            return Some(quiet);
        };
        let deadline = burst.first + quiet * MAX_DELAY_FACTOR;
        if now.duration_since(burst.last) >= quiet || now >= deadline {
            bursts.remove(key);
            return None;
        }
        burst.last = now;
        Some(quiet.min(deadline - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
