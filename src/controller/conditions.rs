//! Condition bookkeeping shared by both reconcilers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as a reconciler decides it; the transition time is filled in by `merge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl Decided {
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Decided {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == Status::True
    }
}

/// Builds the new condition list, keeping each condition's `lastTransitionTime` unless its
/// status changed, so that an unchanged state produces an identical status (and no write).
pub fn merge(
    previous: &[Condition],
    decided: Vec<Decided>,
    generation: Option<i64>,
) -> Vec<Condition> {
    let now = Time(Timestamp::now());
    decided
        .into_iter()
        .map(|d| {
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == d.status.as_str())
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: d.status.as_str().to_owned(),
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// `Ready` from the other conditions: true when all are true, else false with the reason and
/// message of the first that is not.
pub fn ready(others: &[Decided], ready_reason: &str, ready_message: &str) -> Decided {
    match others.iter().find(|c| c.status != Status::True) {
        None => Decided::new(
            crate::api::condition_types::READY,
            Status::True,
            ready_reason,
            ready_message,
        ),
        Some(blocking) => Decided::new(
            crate::api::condition_types::READY,
            Status::False,
            blocking.reason.clone(),
            format!("{}: {}", blocking.type_, blocking.message),
        ),
    }
}

/// The next condition list of a resource: `decided`, with `Ready` summarising those for which
/// `blocks` holds, merged into `previous` (transition times kept where nothing changed).
pub fn with_ready(
    previous: &[Condition],
    mut decided: Vec<Decided>,
    blocks: impl Fn(&Decided) -> bool,
    ready_message: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let blocking: Vec<Decided> = decided.iter().filter(|d| blocks(d)).cloned().collect();
    decided.push(ready(
        &blocking,
        crate::api::reasons::READY.name,
        ready_message,
    ));
    merge(previous, decided, generation)
}

/// A status's content, whatever its conditions' transition times: a status decided again
/// from a cache that lags behind the last write differs from it only in those.
pub fn fingerprint(status: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(conditions) = value.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for condition in conditions.iter_mut().filter_map(|c| c.as_object_mut()) {
            condition.remove("lastTransitionTime");
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Did a condition of this type change status or reason (worth an event)?
pub fn transitioned(previous: &[Condition], next: &Condition) -> bool {
    !previous
        .iter()
        .any(|c| c.type_ == next.type_ && c.status == next.status && c.reason == next.reason)
}

/// The conditions worth a Warning event: those that just turned to a reason asking for action.
/// `Ready` only repeats another condition, so it is never announced itself.
pub fn warnings<'a>(previous: &[Condition], next: &'a [Condition]) -> Vec<&'a Condition> {
    next.iter()
        .filter(|c| {
            c.status != Status::True.as_str() && c.type_ != crate::api::condition_types::READY
        })
        .filter(|c| crate::api::reasons::kind_of(&c.reason).is_warning())
        .filter(|c| transitioned(previous, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_ignores_transition_times_only() {
        let at = |t: &str| {
            serde_json::json!({ "conditions": [
            { "type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": t }
        ], "observedGeneration": 2 })
        };
        assert_eq!(
            fingerprint(&at("2026-12-02T10:00:00Z")),
            fingerprint(&at("2026-12-02T11:00:00Z"))
        );
        let mut other = at("2026-12-02T10:00:00Z");
        other["observedGeneration"] = 3.into();
        assert_ne!(
            fingerprint(&at("2026-12-02T10:00:00Z")),
            fingerprint(&other)
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let first = merge(
            &[],
            vec![Decided::new("Ready", Status::True, "Ready", "ok")],
            Some(1),
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = merge(
            &first,
            vec![Decided::new("Ready", Status::True, "Ready", "ok")],
            Some(1),
        );
        assert_eq!(first, second);
        let third = merge(
            &second,
            vec![Decided::new("Ready", Status::False, "Broken", "no")],
            Some(2),
        );
        assert_ne!(third[0].last_transition_time, first[0].last_transition_time);
        assert!(transitioned(&second, &third[0]));
    }

    #[test]
    fn ready_names_the_first_blocking_condition() {
        let ready = ready(
            &[
                Decided::new("A", Status::True, "Fine", ""),
                Decided::new("B", Status::False, "SecretNotFound", "Secret x not found"),
            ],
            "Ready",
            "all good",
        );
        assert_eq!(ready.status, Status::False);
        assert_eq!(ready.reason, "SecretNotFound");
        assert_eq!(ready.message, "B: Secret x not found");
    }

    /// Waiting (Provisioning, Pending, Throttled) is normal and announced by no Warning; a
    /// reason asking for action is announced once, when the condition turns to it.
    #[test]
    fn only_transitions_to_reasons_asking_for_action_are_warnings() {
        let decide = |reason: &str| {
            vec![
                Decided::new("ApplicationInsightsReady", Status::False, reason, "m"),
                Decided::new("Ready", Status::False, reason, "m"),
            ]
        };
        let provisioning = merge(&[], decide("Provisioning"), Some(1));
        assert!(warnings(&[], &provisioning).is_empty());
        let throttled = merge(&provisioning, decide("Throttled"), Some(1));
        assert!(warnings(&provisioning, &throttled).is_empty());
        let forbidden = merge(&throttled, decide("Forbidden"), Some(1));
        let announced: Vec<&str> = warnings(&throttled, &forbidden)
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(announced, ["ApplicationInsightsReady"]);
        assert!(
            warnings(&forbidden, &forbidden).is_empty(),
            "announced once"
        );
    }
}
