//! `TelemetryTenant.status.delivery`: what the collectors did with a tenant's telemetry, as
//! their own counters say, collected by the operator (`crate::delivery`).
//!
//! Two units meet here. `accepted` and the drops before export (`Suspended`,
//! `RegionNotAllowed`) count OpenTelemetry items: spans, log records, metric data points.
//! `delivered`, `retried` and the other drops count Application Insights items (envelopes),
//! as App Insights itself and the Azure SDKs' statistics do; a span with exception events
//! becomes more than one envelope.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tenant's delivery figures. Bounded: per signal, at most
/// [`MAX_CODES`](crate::delivery::MAX_CODES) codes each for drops and retries; no per-item
/// detail.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// When App Insights last accepted an item of this tenant (to within one collection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// The most recent failure: the code of the largest count of dropped or retried items
    /// seen by the last collection that saw any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<DeliveryFailure>,
    /// Since the tenant was created (or since the figures began, for a tenant older than
    /// them), per signal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub total: Vec<SignalFigures>,
    /// Over the last 15 minutes (from `recentSince` when this operator has been collecting
    /// for less), per signal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<SignalFigures>,
    /// Start of the window `recent` covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_since: Option<Time>,
    /// Bookkeeping, not figures: per collector process (its `service.instance.id`), how much
    /// of each of its counters `total` already holds. A new leader resumes from here, so a
    /// restart of the operator neither loses nor counts twice what a process had counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted: Vec<CountedInstance>,
}

/// One signal's figures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignalFigures {
    /// `traces`, `logs` or `metrics`.
    pub signal: String,
    /// Items the collector accepted for the tenant (OpenTelemetry items).
    #[serde(default)]
    pub accepted: u64,
    /// Items App Insights accepted.
    #[serde(default)]
    pub delivered: u64,
    /// Items dropped, all reasons together.
    #[serde(default)]
    pub dropped: u64,
    /// Sending attempts that failed and were scheduled again, counted per item and attempt.
    #[serde(default)]
    pub retried: u64,
    /// Drops by reason: `Suspended`, `RegionNotAllowed`, an HTTP status App Insights refused
    /// items with (`400`, `402`, ...), `CLIENT_PERSISTENCE_CAPACITY` (the queue was full),
    /// `CLIENT_EXPIRED` (older than the exporter's max age), `CLIENT_EXCEPTION`,
    /// `CLIENT_TIMEOUT`. Redaction never drops an item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_by_reason: Vec<CodeCount>,
    /// Retries by code: an HTTP status (`429`, `500`, `503`, ...), `CLIENT_EXCEPTION` (the
    /// service could not be reached) or `CLIENT_TIMEOUT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried_by_code: Vec<CodeCount>,
}

/// A count of items for one code.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeCount {
    pub code: String,
    pub items: u64,
}

/// A failure to deliver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFailure {
    pub time: Time,
    /// `dropped` or `retried`.
    pub outcome: String,
    pub code: String,
}

/// How much of one collector process's counters the figures hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountedInstance {
    /// The process's `service.instance.id`.
    pub instance: String,
    /// Counter value per series (`<signal>/<outcome>[/<code>]`).
    pub series: BTreeMap<String, u64>,
}
