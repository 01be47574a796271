//! Per-tenant delivery figures: what the collectors accepted, delivered, dropped (by reason)
//! and retried for each tenant, read from the collectors' own counters and kept in the
//! tenant's status.
//!
//! Pulled, not pushed: the leader reads every shard pod's Prometheus endpoint (the `metrics`
//! port of the shard's Service, found through its EndpointSlices) once per interval. A pull
//! needs nothing of the collectors but the endpoint they already serve, works the same for
//! any number of replicas and shards, and only the leader, which writes statuses anyway,
//! collects: a standby does nothing, so no two operators can count one item twice. What a
//! pod counted after its last read and before it stopped is not seen (at most one interval
//! of one pod); a terminating pod stays listed as serving while it drains and is still read.
//!
//! Counters are cumulative per collector process, which `target_info`'s
//! `service_instance_id` names. Figures grow by the difference between two reads of one
//! process, so a restarted process (a new id, or counters that went down) starts from zero
//! and nothing goes backwards; what each process had counted is kept with the figures
//! ([`crate::api::delivery::CountedInstance`]), so a new leader resumes where the last
//! status left off.
//!
//! - [`counters`]: a scrape's text → per-tenant series of one process (pure).
//! - [`ledger`]: a tenant's figures and what each process had counted (pure).
//! - [`verdict`]: the `Delivering` condition (pure).
//! - [`collect`]: the loop: find the pods, read them, write changed statuses.

pub mod collect;
pub mod counters;
pub mod ledger;
pub mod verdict;

use std::fmt;

/// At most this many codes per signal for drops, and for retries; further codes are added
/// to [`OTHER_CODE`], so a status stays bounded whatever a service answers.
pub const MAX_CODES: usize = 8;
/// Where the codes beyond [`MAX_CODES`] are counted.
pub const OTHER_CODE: &str = "OTHER";

/// What happened to items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The collector accepted them for the tenant (OpenTelemetry items).
    Accepted,
    /// App Insights accepted them.
    Delivered,
    /// Given up, with a code: a reason before export, an HTTP status, a client code.
    Dropped,
    /// A failed attempt that will be made again, with a code.
    Retried,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Delivered => "delivered",
            Outcome::Dropped => "dropped",
            Outcome::Retried => "retried",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Accepted,
            Outcome::Delivered,
            Outcome::Dropped,
            Outcome::Retried,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// The signals, in the order figures list them.
pub const SIGNALS: [&str; 3] = ["traces", "logs", "metrics"];

/// One counter series of one tenant: signal, outcome and (for drops and retries) code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub signal: String,
    pub outcome: Outcome,
    pub code: Option<String>,
}

impl Series {
    pub fn new(signal: &str, outcome: Outcome, code: Option<&str>) -> Series {
        Series {
            signal: signal.to_owned(),
            outcome,
            code: code.map(str::to_owned),
        }
    }

    /// The key of the series in a status's bookkeeping: `<signal>/<outcome>[/<code>]`.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// The series of a bookkeeping key; `None` for a key this version does not write.
    pub fn from_key(key: &str) -> Option<Series> {
        let mut parts = key.splitn(3, '/');
        let signal = parts.next().filter(|s| SIGNALS.contains(s))?;
        let outcome = Outcome::parse(parts.next()?)?;
        let code = parts.next();
        let coded = matches!(outcome, Outcome::Dropped | Outcome::Retried);
        (code.is_some() == coded).then(|| Series::new(signal, outcome, code))
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.signal, self.outcome.as_str())?;
        match &self.code {
            Some(code) => write!(f, "/{code}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keys_round_trip_and_refuse_what_this_version_does_not_write() {
        for series in [
            Series::new("traces", Outcome::Accepted, None),
            Series::new("logs", Outcome::Dropped, Some("400")),
            Series::new("metrics", Outcome::Retried, Some("CLIENT_EXCEPTION")),
        ] {
            assert_eq!(Series::from_key(&series.key()), Some(series));
        }
        for key in [
            "traces",
            "profiles/accepted",
            "traces/accepted/400",
            "traces/dropped",
            "traces/shipped",
        ] {
            assert_eq!(Series::from_key(key), None, "{key}");
        }
    }
}
