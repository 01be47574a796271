//! The `Delivering` condition of a tenant, from its ledger.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::Outcome;
use super::ledger::TenantLedger;
use crate::api::condition_types::DELIVERING;
use crate::api::reasons::{self, Reason};
use crate::controller::conditions::{Decided, Status};

/// `Delivering`, as of `now`:
/// - no item in the recent window: Unknown, `NoTelemetry`;
/// - nothing recent was delivered and some was dropped before export: False, `Suspended`,
///   `RegionNotAllowed` or `SignalDisabled`;
/// - items have come for `grace` without one delivered: False, with the reason of the last
///   failure (`Throttled`, `Rejected`, `QueueFull`, `Expired`, `IngestionUnavailable`);
/// - items have come for less than `grace` without one delivered: Unknown, `Pending`;
/// - else True, `Delivered`.
pub fn delivering(ledger: &TenantLedger, now: Timestamp, grace: SignedDuration) -> Decided {
    let recent = ledger.recent();
    let items = |outcome: Outcome| -> u64 {
        recent
            .iter()
            .filter(|(s, _)| s.outcome == outcome)
            .map(|(_, n)| n)
            .sum()
    };
    let decided =
        |status, reason: Reason, message: String| Decided::new(DELIVERING, status, reason, message);
    if recent.is_empty() {
        return decided(
            Status::Unknown,
            reasons::NO_TELEMETRY,
            "no telemetry in the last 15 minutes".into(),
        );
    }
    let excluded = [
        reasons::SUSPENDED,
        reasons::REGION_NOT_ALLOWED,
        reasons::SIGNAL_DISABLED,
    ]
    .into_iter()
    .find(|r| {
        recent
            .iter()
            .any(|(s, _)| s.outcome == Outcome::Dropped && s.code.as_deref() == Some(r.name))
    });
    if let Some(reason) = excluded.filter(|_| items(Outcome::Delivered) == 0) {
        return decided(
            Status::False,
            reason,
            format!(
                "{} items dropped by the collector in the last 15 minutes",
                items(Outcome::Dropped)
            ),
        );
    }
    match ledger.undelivered_since() {
        Some(since) if now.duration_since(since) >= grace => {
            let (reason, code) = match ledger.last_failure() {
                Some((_, _, code)) => (reason_of(code), code.to_owned()),
                // Accepted, neither delivered nor failed: waiting in the queue all along.
                None => (reasons::INGESTION_UNAVAILABLE, "none".to_owned()),
            };
            decided(
                Status::False,
                reason,
                format!(
                    "nothing delivered for {}s; last failure code {code}; {} items dropped and {} retried in the last 15 minutes",
                    now.duration_since(since).as_secs(),
                    items(Outcome::Dropped),
                    items(Outcome::Retried)
                ),
            )
        }
        Some(_) if ledger.last_success().is_none() => decided(
            Status::Unknown,
            reasons::PENDING,
            "telemetry accepted; none delivered yet".into(),
        ),
        _ => decided(
            Status::True,
            reasons::DELIVERED,
            format!(
                "{} items delivered in the last 15 minutes",
                items(Outcome::Delivered)
            ),
        ),
    }
}

/// The reason a failure code stands for.
pub fn reason_of(code: &str) -> Reason {
    match code {
        // Too many requests, over the daily quota (402), or Breeze's 439.
        "429" | "439" | "402" => reasons::THROTTLED,
        "CLIENT_PERSISTENCE_CAPACITY" => reasons::QUEUE_FULL,
        "CLIENT_EXPIRED" => reasons::EXPIRED,
        // Dropped before export (only with deliveries of other signals around).
        c if c == reasons::SUSPENDED.name => reasons::SUSPENDED,
        c if c == reasons::REGION_NOT_ALLOWED.name => reasons::REGION_NOT_ALLOWED,
        c if c == reasons::SIGNAL_DISABLED.name => reasons::SIGNAL_DISABLED,
        c if c.len() == 3 && c.starts_with('4') && c != "408" => reasons::REJECTED,
        _ => reasons::INGESTION_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Series;
    use std::collections::BTreeMap;

    const GRACE: SignedDuration = SignedDuration::from_secs(60);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn read(ledger: &mut TenantLedger, pairs: &[(&str, u64)], t: i64) {
        let counts: BTreeMap<Series, u64> = pairs
            .iter()
            .map(|(k, v)| (Series::from_key(k).unwrap(), *v))
            .collect();
        ledger.record("p", &counts, at(t));
    }

    fn reason(ledger: &TenantLedger, t: i64) -> (Status, String) {
        let d = delivering(ledger, at(t), GRACE);
        (d.status, d.reason)
    }

    #[test]
    fn no_items_is_unknown() {
        let ledger = TenantLedger::resume(None, at(0));
        assert_eq!(reason(&ledger, 1), (Status::Unknown, "NoTelemetry".into()));
    }

    #[test]
    fn throttling_is_pending_within_the_grace_and_throttled_after_it() {
        let mut ledger = TenantLedger::resume(None, at(0));
        read(
            &mut ledger,
            &[("traces/accepted", 5), ("traces/retried/429", 5)],
            1,
        );
        assert_eq!(reason(&ledger, 30), (Status::Unknown, "Pending".into()));
        assert_eq!(reason(&ledger, 61), (Status::False, "Throttled".into()));
        read(
            &mut ledger,
            &[
                ("traces/accepted", 5),
                ("traces/retried/429", 5),
                ("traces/delivered", 5),
            ],
            70,
        );
        assert_eq!(reason(&ledger, 71), (Status::True, "Delivered".into()));
    }

    #[test]
    fn after_a_success_failures_turn_false_only_after_the_grace() {
        let mut ledger = TenantLedger::resume(None, at(0));
        read(
            &mut ledger,
            &[("logs/accepted", 1), ("logs/delivered", 1)],
            1,
        );
        read(
            &mut ledger,
            &[
                ("logs/accepted", 9),
                ("logs/delivered", 1),
                ("logs/dropped/400", 8),
            ],
            10,
        );
        assert_eq!(reason(&ledger, 20), (Status::True, "Delivered".into()));
        assert_eq!(reason(&ledger, 71), (Status::False, "Rejected".into()));
    }

    #[test]
    fn a_suspended_tenant_reads_suspended() {
        let mut ledger = TenantLedger::resume(None, at(0));
        read(&mut ledger, &[("traces/dropped/Suspended", 3)], 1);
        assert_eq!(reason(&ledger, 2), (Status::False, "Suspended".into()));
    }

    #[test]
    fn codes_name_their_reason() {
        for (code, reason) in [
            ("429", "Throttled"),
            ("439", "Throttled"),
            ("402", "Throttled"),
            ("400", "Rejected"),
            ("403", "Rejected"),
            ("408", "IngestionUnavailable"),
            ("503", "IngestionUnavailable"),
            ("CLIENT_EXCEPTION", "IngestionUnavailable"),
            ("CLIENT_TIMEOUT", "IngestionUnavailable"),
            ("CLIENT_PERSISTENCE_CAPACITY", "QueueFull"),
            ("CLIENT_EXPIRED", "Expired"),
            ("Suspended", "Suspended"),
            ("SignalDisabled", "SignalDisabled"),
        ] {
            assert_eq!(reason_of(code).name, reason, "{code}");
        }
    }
}
