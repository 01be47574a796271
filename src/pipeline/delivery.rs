//! How much each tenant's exporter may queue, on disk and in memory.
//!
//! Every tenant has its own `telemux_appinsights` exporter (one instance per signal), whose
//! sending queue lives on the collector's queue volume (`file_storage`), bounded in bytes by the
//! tenant's tier. A queue that is full refuses new data to that tenant's clients only (a
//! retryable error), rather than dropping the oldest: what the collector acknowledged stays a
//! promise. On disk, a backlog costs no memory; what an exporter holds in memory is the batch
//! being assembled and the batches in flight, `(consumers + 1) × batch`. Those must all fit
//! below the memory_limiter's soft limit, or one tenant's outage would make the limiter refuse
//! every tenant: so the batch size is derived from the collector's memory limit and the number
//! of exporters it runs. Likewise on disk: the queues share one volume per pod, and a full
//! volume would refuse every tenant, so when the tiers' queues add up to more than the volume
//! holds, all of them are scaled down by one factor.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::tenant::Tier;

/// memory_limiter's `limit_percentage` and `spike_limit_percentage`: it refuses data above
/// `limit - spike` (60 % of the container's memory limit).
pub const MEMORY_LIMIT_PERCENTAGE: u64 = 80;
pub const MEMORY_SPIKE_PERCENTAGE: u64 = 20;
/// The share of the soft limit that exporters' in-memory batches may use; the rest is for the
/// receivers and processors.
const QUEUE_SHARE_OF_SOFT_LIMIT_PERCENT: u64 = 50;
/// Queue consumers per exporter instance: batches in flight (or in retry) at once.
pub const QUEUE_CONSUMERS: u64 = 2;
/// A batch above this gains little (Breeze accepts large requests, but a 1 MiB gzip body
/// already carries thousands of items).
const MAX_BATCH_BYTES: u64 = 1024 * 1024;
/// Below this a batch is mostly per-request overhead. Small enough that every collector a
/// ConfigMap can describe (about 650 tenants, bench/RESULTS.md) fits a 1 GiB limit.
const MIN_BATCH_BYTES: u64 = 16 * 1024;
/// The collector's memory limit when the spec sets none (the Deployment's default limit).
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;

impl Tier {
    /// Bytes one exporter instance (one signal) of the tenant may hold on the queue volume
    /// while its App Insights is slow or unreachable.
    pub fn queue_bytes(self) -> u64 {
        const MIB: u64 = 1024 * 1024;
        match self {
            Tier::Free => 16 * MIB,
            Tier::Standard => 64 * MIB,
            Tier::Premium => 256 * MIB,
        }
    }
}

/// Below this a queue cannot hold even a few batches.
const MIN_QUEUE_BYTES: u64 = 4 * 1024 * 1024;
/// The share of the queue volume the queues may fill; the rest is for bbolt's own overhead.
const DISK_SHARE_PERCENT: u64 = 80;
/// The queue volume's size when the spec sets none.
pub const DEFAULT_QUEUE_VOLUME_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// The queue settings of every exporter of one collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBudget {
    /// Largest batch one exporter instance assembles, in bytes of envelopes.
    pub batch_bytes: u64,
    /// Bytes that exporters may hold in memory at worst, summed over all of them.
    pub in_memory_bytes: u64,
    /// memory_limiter's soft limit, for comparison.
    pub soft_limit_bytes: u64,
    /// False when even the smallest batch cannot keep every exporter below the soft limit:
    /// too many tenants for the collector's memory (sharding is the answer).
    pub fits: bool,
    /// Parts per million of its tier's queue that each exporter gets on disk (1,000,000: all).
    pub disk_share_ppm: u64,
}

impl QueueBudget {
    /// The on-disk queue of one exporter instance of a tenant of `tier`.
    pub fn queue_bytes(&self, tier: Tier) -> u64 {
        let scaled = u128::from(tier.queue_bytes()) * u128::from(self.disk_share_ppm) / 1_000_000;
        u64::try_from(scaled)
            .unwrap_or(u64::MAX)
            .max(MIN_QUEUE_BYTES)
    }
}

/// Splits the exporters' share of the queue volume over their tiers' queues: each gets its
/// tier's queue when all fit, else the same fraction of it. Compaction writes a copy of one
/// queue file beside it, so the largest queue is kept free as well.
pub fn disk_share_ppm(volume_bytes: u64, tiers: &[Tier]) -> u64 {
    let wanted: u64 = tiers.iter().map(|t| t.queue_bytes()).sum();
    let largest = tiers.iter().map(|t| t.queue_bytes()).max().unwrap_or(0);
    let usable = (volume_bytes / 100 * DISK_SHARE_PERCENT).saturating_sub(largest);
    if wanted == 0 || usable >= wanted {
        return 1_000_000;
    }
    // usable < wanted here, so this is below 1,000,000; u128 keeps the product exact.
    (u128::from(usable) * 1_000_000 / u128::from(wanted)) as u64
}

/// The queue budget of a collector whose exporters serve `tiers` (one entry per exporter
/// instance, i.e. per exporter and signal).
pub fn collector_queue_budget(
    memory_limit_bytes: u64,
    volume_bytes: u64,
    tiers: &[Tier],
) -> QueueBudget {
    QueueBudget {
        disk_share_ppm: disk_share_ppm(volume_bytes, tiers),
        ..queue_budget(memory_limit_bytes, tiers.len() as u64)
    }
}

/// Splits the exporters' share of the soft limit over `exporter_instances`.
pub fn queue_budget(memory_limit_bytes: u64, exporter_instances: u64) -> QueueBudget {
    let soft_limit_bytes =
        memory_limit_bytes / 100 * (MEMORY_LIMIT_PERCENTAGE - MEMORY_SPIKE_PERCENTAGE);
    let share = soft_limit_bytes / 100 * QUEUE_SHARE_OF_SOFT_LIMIT_PERCENT;
    let per_batch = share / ((QUEUE_CONSUMERS + 1) * exporter_instances.max(1));
    let batch_bytes = per_batch.clamp(MIN_BATCH_BYTES, MAX_BATCH_BYTES);
    let in_memory_bytes = batch_bytes * (QUEUE_CONSUMERS + 1) * exporter_instances;
    QueueBudget {
        batch_bytes,
        in_memory_bytes,
        soft_limit_bytes,
        fits: in_memory_bytes <= share,
        disk_share_ppm: 1_000_000,
    }
}

/// Bytes of a quantity field, or the default when unset.
pub fn quantity_bytes(
    quantity: &Quantity,
    field: &'static str,
) -> Result<u64, InvalidMemoryQuantity> {
    parse_memory_quantity(&quantity.0).ok_or_else(|| InvalidMemoryQuantity {
        field,
        value: quantity.0.clone(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} is not a quantity of bytes (e.g. 1Gi, 512Mi, 2G)")]
pub struct InvalidMemoryQuantity {
    pub field: &'static str,
    pub value: String,
}

/// The collector container's memory limit in bytes: its limit, else its request, else the
/// default limit the Deployment gets.
pub fn memory_limit_bytes(
    resources: Option<&ResourceRequirements>,
) -> Result<u64, InvalidMemoryQuantity> {
    let limit = resources.and_then(|r| r.limits.as_ref()?.get("memory"));
    let request = resources.and_then(|r| r.requests.as_ref()?.get("memory"));
    match (limit, request) {
        (Some(q), _) => quantity_bytes(q, "resources.limits.memory"),
        (None, Some(q)) => quantity_bytes(q, "resources.requests.memory"),
        (None, None) => Ok(DEFAULT_MEMORY_LIMIT_BYTES),
    }
}

/// Parses a Kubernetes quantity as whole bytes: a decimal number with an optional binary
/// (Ki, Mi, Gi, Ti, Pi, Ei) or decimal (k, M, G, T, P, E) suffix, or an exponent (`1e9`).
/// k8s-openapi keeps quantities as strings and the crates that parse them are unmaintained,
/// so this is the small part telemux needs. Fractions of a byte round up, as the API server's
/// canonical form does.
pub fn parse_memory_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "m" => 1e-3,
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let bytes = (value * multiplier).ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes <= u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn quantities_parse_as_the_api_server_reads_them() {
        assert_eq!(parse_memory_quantity("1Gi"), Some(1024 * MIB));
        assert_eq!(parse_memory_quantity("512Mi"), Some(512 * MIB));
        assert_eq!(parse_memory_quantity("1.5Gi"), Some(1536 * MIB));
        assert_eq!(parse_memory_quantity("2G"), Some(2_000_000_000));
        assert_eq!(parse_memory_quantity("128974848"), Some(128_974_848));
        assert_eq!(parse_memory_quantity("129e6"), Some(129_000_000));
        assert_eq!(parse_memory_quantity("123k"), Some(123_000));
        assert_eq!(parse_memory_quantity("1500m"), Some(2));
        for bad in ["", "Gi", "1Gb", "one", "-1Gi", ".", "1e"] {
            assert_eq!(parse_memory_quantity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_limit_wins_then_the_request_then_the_default() {
        let resources = |limit: Option<&str>, request: Option<&str>| ResourceRequirements {
            limits: limit.map(|l| BTreeMap::from([("memory".into(), Quantity(l.into()))])),
            requests: request.map(|r| BTreeMap::from([("memory".into(), Quantity(r.into()))])),
            ..ResourceRequirements::default()
        };
        assert_eq!(
            memory_limit_bytes(Some(&resources(Some("2Gi"), Some("1Gi")))),
            Ok(2048 * MIB)
        );
        assert_eq!(
            memory_limit_bytes(Some(&resources(None, Some("768Mi")))),
            Ok(768 * MIB)
        );
        assert_eq!(memory_limit_bytes(None), Ok(DEFAULT_MEMORY_LIMIT_BYTES));
        assert_eq!(
            memory_limit_bytes(Some(&resources(Some("lots"), None))),
            Err(InvalidMemoryQuantity {
                field: "resources.limits.memory",
                value: "lots".into()
            })
        );
    }

    #[test]
    fn exporters_stay_below_their_share_of_the_soft_limit() {
        for limit in [256 * MIB, 1024 * MIB, 4096 * MIB] {
            for instances in [1, 3, 30, 300, 1500] {
                let budget = queue_budget(limit, instances);
                assert!(budget.batch_bytes >= MIN_BATCH_BYTES);
                assert!(budget.batch_bytes <= MAX_BATCH_BYTES);
                if budget.fits {
                    assert!(budget.in_memory_bytes * 2 <= budget.soft_limit_bytes);
                }
            }
        }
    }

    #[test]
    fn few_exporters_get_full_batches_and_many_get_smaller_ones() {
        let small = queue_budget(1024 * MIB, 3);
        assert_eq!(small.batch_bytes, MAX_BATCH_BYTES);
        assert!(small.fits);
        let hundred_tenants = queue_budget(1024 * MIB, 300);
        assert!(hundred_tenants.batch_bytes < MAX_BATCH_BYTES);
        assert!(hundred_tenants.fits);
        // 750 tenants (more than a ConfigMap holds) with every signal still fit 1 GiB...
        assert!(queue_budget(1024 * MIB, 2250).fits);
        // ... 3,500 do not, even at the smallest batch.
        let too_many = queue_budget(1024 * MIB, 10_500);
        assert_eq!(too_many.batch_bytes, MIN_BATCH_BYTES);
        assert!(!too_many.fits);
    }

    #[test]
    fn queues_that_fit_the_volume_keep_their_tier_size() {
        let tiers = [Tier::Standard; 30];
        let budget = collector_queue_budget(1024 * MIB, DEFAULT_QUEUE_VOLUME_BYTES, &tiers);
        assert_eq!(budget.disk_share_ppm, 1_000_000);
        assert_eq!(
            budget.queue_bytes(Tier::Standard),
            Tier::Standard.queue_bytes()
        );
    }

    #[test]
    fn queues_that_overflow_the_volume_shrink_alike_and_fit() {
        // 100 standard tenants with three signals want 300 × 64 MiB = 18.75 GiB of 10 GiB.
        let mut tiers = vec![Tier::Standard; 300];
        tiers.extend([Tier::Premium; 3]);
        let volume = DEFAULT_QUEUE_VOLUME_BYTES;
        let budget = collector_queue_budget(1024 * MIB, volume, &tiers);
        assert!(budget.disk_share_ppm < 1_000_000);
        let total: u64 = tiers.iter().map(|t| budget.queue_bytes(*t)).sum();
        let largest = budget.queue_bytes(Tier::Premium);
        assert!(total + largest <= volume, "{total} + {largest} > {volume}");
        // The tiers keep their order.
        assert!(budget.queue_bytes(Tier::Standard) < budget.queue_bytes(Tier::Premium));
    }

    #[test]
    fn a_higher_tier_queues_more() {
        assert!(Tier::Free.queue_bytes() < Tier::Standard.queue_bytes());
        assert!(Tier::Standard.queue_bytes() < Tier::Premium.queue_bytes());
    }
}
