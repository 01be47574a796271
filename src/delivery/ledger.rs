//! One tenant's figures, kept by the leader between reads of the collectors: totals since
//! creation, per-minute amounts for the recent window, and how much of each collector
//! process's counters the totals already hold.

use std::collections::{BTreeMap, VecDeque};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{MAX_CODES, OTHER_CODE, Outcome, SIGNALS, Series};
use crate::api::delivery::{
    CodeCount, CountedInstance, DeliveryFailure, DeliveryStatus, SignalFigures,
};

/// How far back `recent` looks.
pub const RECENT_WINDOW: SignedDuration = SignedDuration::from_secs(15 * 60);
/// A process not read for this long is gone (its pod replaced): its bookkeeping is dropped.
/// What it had counted stays in the totals.
pub const FORGET_INSTANCE_AFTER: SignedDuration = SignedDuration::from_secs(30 * 60);

type Counts = BTreeMap<Series, u64>;

/// What a tenant's figures came to, and when.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantLedger {
    totals: Counts,
    /// Per process: its counter values the totals hold, and when it was last read.
    counted: BTreeMap<String, (Timestamp, Counts)>,
    /// Amounts per minute (start of the minute), oldest first, for the recent window.
    minutes: VecDeque<(Timestamp, Counts)>,
    /// Since when this ledger has seen every change: the start of what `recent` can cover.
    since: Timestamp,
    last_success: Option<Timestamp>,
    last_failure: Option<(Timestamp, Outcome, String)>,
    /// Since when items have been coming without any delivered (for the grace period).
    undelivered_since: Option<Timestamp>,
}

impl TenantLedger {
    /// The ledger a status left (a new leader, or this one after a restart), as of `now`.
    pub fn resume(status: Option<&DeliveryStatus>, now: Timestamp) -> TenantLedger {
        let mut ledger = TenantLedger {
            since: now,
            ..TenantLedger::default()
        };
        let Some(status) = status else {
            return ledger;
        };
        for figures in &status.total {
            for (series, items) in series_of(figures) {
                ledger.totals.insert(series, items);
            }
        }
        for instance in &status.counted {
            let counts = instance
                .series
                .iter()
                .filter_map(|(key, v)| Some((Series::from_key(key)?, *v)))
                .collect();
            ledger
                .counted
                .insert(instance.instance.clone(), (now, counts));
        }
        ledger.last_success = status.last_success_time.as_ref().map(|t| t.0);
        ledger.last_failure = status.last_failure.as_ref().and_then(|f| {
            let outcome = match f.outcome.as_str() {
                "dropped" => Outcome::Dropped,
                "retried" => Outcome::Retried,
                _ => return None,
            };
            Some((f.time.0, outcome, f.code.clone()))
        });
        ledger
    }

    /// Takes in one read of one process's counters for this tenant and returns what they
    /// added. A process seen for the first time counted everything since it started; one
    /// whose counters went down restarted under the same name and starts over.
    pub fn record(&mut self, instance: &str, values: &Counts, now: Timestamp) -> Counts {
        let before = self.counted.get(instance).map(|(_, c)| c);
        let restarted = before.is_some_and(|b| {
            values
                .iter()
                .any(|(s, v)| !is_difference(s) && b.get(s) > Some(v))
        });
        let mut kept = values.clone();
        let added: Counts = values
            .iter()
            .filter_map(|(series, &value)| {
                let already = match before {
                    Some(b) if !restarted => b.get(series).copied().unwrap_or(0),
                    _ => 0,
                };
                // A difference of two counters read one after the other may dip by what was
                // in flight: it stays at its highest reading, so nothing is counted twice.
                if value < already {
                    kept.insert(series.clone(), already);
                }
                let added = value.saturating_sub(already);
                (added > 0).then(|| (series.clone(), added))
            })
            .collect();
        self.counted.insert(instance.to_owned(), (now, kept));
        self.add(&added, now);
        added
    }

    fn add(&mut self, added: &Counts, now: Timestamp) {
        if added.is_empty() {
            return;
        }
        for (series, items) in added {
            let series = bounded(&self.totals, series);
            *self.totals.entry(series).or_default() += items;
        }
        let minute = minute_of(now);
        match self.minutes.back_mut() {
            Some((start, counts)) if *start == minute => merge_into(counts, added),
            _ => self.minutes.push_back((minute, added.clone())),
        }
        // Sampled out is what the tenant asked for: neither a failure nor an item to deliver.
        let of = |outcome: Outcome| {
            added
                .iter()
                .filter(move |(s, _)| s.outcome == outcome && !is_difference(s))
        };
        let sum = |outcome: Outcome| of(outcome).map(|(_, n)| n).sum::<u64>();
        let sampled_out: u64 = added
            .iter()
            .filter(|(s, _)| is_difference(s))
            .map(|(_, n)| n)
            .sum();
        let to_deliver = sum(Outcome::Accepted).saturating_sub(sampled_out)
            + sum(Outcome::Dropped)
            + sum(Outcome::Retried);
        if of(Outcome::Delivered).next().is_some() {
            self.last_success = Some(now);
            self.undelivered_since = None;
        } else if to_deliver > 0 && self.undelivered_since.is_none() {
            self.undelivered_since = Some(now);
        }
        // The failure with the most items in this read (the first code of a tie).
        let failure = of(Outcome::Dropped)
            .chain(of(Outcome::Retried))
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)));
        if let Some((series, _)) = failure {
            let code = series.code.clone().unwrap_or_default();
            self.last_failure = Some((now, series.outcome, code));
        }
    }

    /// Drops the minutes the window no longer covers and the processes gone for long.
    pub fn age(&mut self, now: Timestamp) {
        let window_start = now - RECENT_WINDOW;
        while self
            .minutes
            .front()
            .is_some_and(|(start, _)| *start + SignedDuration::from_secs(60) <= window_start)
        {
            self.minutes.pop_front();
        }
        self.counted
            .retain(|_, (seen, _)| *seen + FORGET_INSTANCE_AFTER > now);
    }

    /// Amounts over the recent window.
    pub fn recent(&self) -> Counts {
        let mut recent = Counts::new();
        for (_, counts) in &self.minutes {
            for (series, items) in counts {
                let series = bounded(&recent, series);
                *recent.entry(series).or_default() += items;
            }
        }
        recent
    }

    pub fn last_success(&self) -> Option<Timestamp> {
        self.last_success
    }

    pub fn last_failure(&self) -> Option<(Timestamp, Outcome, &str)> {
        self.last_failure
            .as_ref()
            .map(|(t, o, c)| (*t, *o, c.as_str()))
    }

    /// Since when items have come and none was delivered; `None` while deliveries follow.
    pub fn undelivered_since(&self) -> Option<Timestamp> {
        self.undelivered_since
    }

    /// The status field, as of `now` (after [`Self::age`]).
    pub fn status(&self, now: Timestamp) -> DeliveryStatus {
        DeliveryStatus {
            last_success_time: self.last_success.map(Time),
            last_failure: self.last_failure.as_ref().map(|(t, o, c)| DeliveryFailure {
                time: Time(*t),
                outcome: o.as_str().to_owned(),
                code: c.clone(),
            }),
            total: figures(&self.totals),
            recent: figures(&self.recent()),
            recent_since: Some(Time(self.since.max(now - RECENT_WINDOW))),
            counted: self
                .counted
                .iter()
                .map(|(instance, (_, counts))| CountedInstance {
                    instance: instance.clone(),
                    series: counts.iter().map(|(s, v)| (s.key(), *v)).collect(),
                })
                .collect(),
        }
    }
}

/// Whether a series is the difference of two counters (sampled out: into the sampler minus
/// out of it) rather than a counter: it may dip between reads without a restart.
fn is_difference(series: &Series) -> bool {
    series.code.as_deref() == Some(crate::api::reasons::SAMPLED)
}

fn minute_of(t: Timestamp) -> Timestamp {
    let s = t.as_second();
    Timestamp::from_second(s - s.rem_euclid(60)).unwrap_or(t)
}

fn merge_into(counts: &mut Counts, added: &Counts) {
    for (series, items) in added {
        *counts.entry(series.clone()).or_default() += items;
    }
}

/// `series`, or its `OTHER` code when `counts` already holds [`MAX_CODES`] other codes for
/// its signal and outcome.
fn bounded(counts: &Counts, series: &Series) -> Series {
    if series.code.is_none() || counts.contains_key(series) {
        return series.clone();
    }
    let codes = counts
        .keys()
        .filter(|s| s.signal == series.signal && s.outcome == series.outcome)
        .count();
    if codes < MAX_CODES {
        series.clone()
    } else {
        Series::new(&series.signal, series.outcome, Some(OTHER_CODE))
    }
}

/// Per signal, in [`SIGNALS`] order; signals without any item are left out.
fn figures(counts: &Counts) -> Vec<SignalFigures> {
    SIGNALS
        .iter()
        .filter_map(|&signal| {
            let mut f = SignalFigures {
                signal: signal.to_owned(),
                ..SignalFigures::default()
            };
            for (series, &items) in counts.iter().filter(|(s, _)| s.signal == signal) {
                let code = || CodeCount {
                    code: series.code.clone().unwrap_or_default(),
                    items,
                };
                match series.outcome {
                    Outcome::Accepted => f.accepted += items,
                    Outcome::Delivered => f.delivered += items,
                    Outcome::Dropped => {
                        f.dropped += items;
                        f.dropped_by_reason.push(code());
                    }
                    Outcome::Retried => {
                        f.retried += items;
                        f.retried_by_code.push(code());
                    }
                }
            }
            (f != SignalFigures {
                signal: signal.to_owned(),
                ..SignalFigures::default()
            })
            .then_some(f)
        })
        .collect()
}

/// The series of one signal's figures (the inverse of [`figures`]).
fn series_of(f: &SignalFigures) -> Vec<(Series, u64)> {
    let mut series = vec![
        (Series::new(&f.signal, Outcome::Accepted, None), f.accepted),
        (
            Series::new(&f.signal, Outcome::Delivered, None),
            f.delivered,
        ),
    ];
    for c in &f.dropped_by_reason {
        series.push((
            Series::new(&f.signal, Outcome::Dropped, Some(&c.code)),
            c.items,
        ));
    }
    for c in &f.retried_by_code {
        series.push((
            Series::new(&f.signal, Outcome::Retried, Some(&c.code)),
            c.items,
        ));
    }
    series
        .into_iter()
        .filter(|(s, items)| *items > 0 && super::SIGNALS.contains(&s.signal.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn counts(pairs: &[(&str, u64)]) -> Counts {
        pairs
            .iter()
            .map(|(key, v)| (Series::from_key(key).unwrap(), *v))
            .collect()
    }

    fn total(ledger: &TenantLedger, signal: &str) -> SignalFigures {
        ledger
            .status(at(0))
            .total
            .into_iter()
            .find(|f| f.signal == signal)
            .unwrap_or_default()
    }

    #[test]
    fn two_processes_add_up_and_a_second_read_adds_only_the_difference() {
        let mut ledger = TenantLedger::resume(None, at(0));
        ledger.record(
            "pod-a",
            &counts(&[("traces/accepted", 10), ("traces/delivered", 8)]),
            at(1),
        );
        ledger.record(
            "pod-b",
            &counts(&[("traces/accepted", 5), ("traces/delivered", 5)]),
            at(1),
        );
        let added = ledger.record(
            "pod-a",
            &counts(&[("traces/accepted", 12), ("traces/delivered", 12)]),
            at(2),
        );
        assert_eq!(
            added,
            counts(&[("traces/accepted", 2), ("traces/delivered", 4)])
        );
        let traces = total(&ledger, "traces");
        assert_eq!((traces.accepted, traces.delivered), (17, 17));
    }

    #[test]
    fn a_restarted_process_starts_over_and_totals_never_go_back() {
        let mut ledger = TenantLedger::resume(None, at(0));
        ledger.record("pod-a", &counts(&[("traces/delivered", 100)]), at(1));
        // Same name, counters went down: it restarted and counted 3 since.
        ledger.record("pod-a", &counts(&[("traces/delivered", 3)]), at(2));
        // A new process (new instance id) counted 4.
        ledger.record("pod-a2", &counts(&[("traces/delivered", 4)]), at(3));
        assert_eq!(total(&ledger, "traces").delivered, 107);
    }

    #[test]
    fn a_new_leader_resumes_from_the_status_without_counting_twice_or_losing() {
        let mut old = TenantLedger::resume(None, at(0));
        old.record(
            "pod-a",
            &counts(&[("logs/accepted", 7), ("logs/retried/429", 2)]),
            at(1),
        );
        let status = old.status(at(1));
        let json = serde_json::to_value(&status).unwrap();
        let stored: DeliveryStatus = serde_json::from_value(json).unwrap();

        let mut new = TenantLedger::resume(Some(&stored), at(5));
        let added = new.record(
            "pod-a",
            &counts(&[("logs/accepted", 9), ("logs/retried/429", 2)]),
            at(6),
        );
        assert_eq!(added, counts(&[("logs/accepted", 2)]));
        let logs = total(&new, "logs");
        assert_eq!((logs.accepted, logs.retried), (9, 2));
        assert_eq!(
            logs.retried_by_code,
            [CodeCount {
                code: "429".into(),
                items: 2
            }]
        );
    }

    #[test]
    fn recent_covers_fifteen_minutes_and_the_oldest_minutes_leave_it() {
        let mut ledger = TenantLedger::resume(None, at(0));
        ledger.record("p", &counts(&[("traces/accepted", 4)]), at(10));
        ledger.record("p", &counts(&[("traces/accepted", 6)]), at(10 * 60));
        ledger.age(at(16 * 60));
        let status = ledger.status(at(16 * 60));
        assert_eq!(status.recent[0].accepted, 2);
        assert_eq!(status.total[0].accepted, 6);
        assert_eq!(status.recent_since, Some(Time(at(60))));
    }

    #[test]
    fn a_dip_of_the_sampled_out_difference_is_no_restart_and_counts_nothing_twice() {
        let mut ledger = TenantLedger::resume(None, at(0));
        let read = |accepted, sampled| {
            counts(&[
                ("traces/accepted", accepted),
                ("traces/dropped/Sampled", sampled),
            ])
        };
        ledger.record("p", &read(10, 5), at(1));
        // Read while two items were inside the sampler: 5 + 2.
        ledger.record("p", &read(12, 7), at(2));
        // Those two came out: the difference dips back to 5, no restart.
        let added = ledger.record("p", &read(12, 5), at(3));
        assert!(added.is_empty(), "{added:?}");
        ledger.record("p", &read(20, 9), at(4));
        let traces = total(&ledger, "traces");
        assert_eq!((traces.accepted, traces.dropped), (20, 9));
    }

    #[test]
    fn items_all_sampled_out_are_neither_undelivered_nor_a_failure() {
        let mut ledger = TenantLedger::resume(None, at(0));
        ledger.record(
            "p",
            &counts(&[("traces/accepted", 4), ("traces/dropped/Sampled", 4)]),
            at(1),
        );
        assert_eq!(ledger.undelivered_since(), None);
        assert_eq!(ledger.last_failure(), None);
    }

    #[test]
    fn codes_beyond_the_bound_are_counted_as_other() {
        let mut ledger = TenantLedger::resume(None, at(0));
        let many: Vec<(String, u64)> = (0..MAX_CODES + 3)
            .map(|i| (format!("traces/dropped/{}", 400 + i), 1))
            .collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        ledger.record("p", &counts(&many), at(1));
        let traces = total(&ledger, "traces");
        assert_eq!(traces.dropped, MAX_CODES as u64 + 3);
        assert_eq!(traces.dropped_by_reason.len(), MAX_CODES + 1);
        assert!(
            traces
                .dropped_by_reason
                .iter()
                .any(|c| c.code == OTHER_CODE && c.items == 3)
        );
    }

    #[test]
    fn successes_and_failures_are_timed_and_the_largest_failure_named() {
        let mut ledger = TenantLedger::resume(None, at(0));
        ledger.record(
            "p",
            &counts(&[("traces/accepted", 5), ("traces/retried/503", 2)]),
            at(1),
        );
        assert_eq!(ledger.undelivered_since(), Some(at(1)));
        ledger.record(
            "p",
            &counts(&[
                ("traces/accepted", 5),
                ("traces/retried/503", 3),
                ("traces/dropped/400", 4),
            ]),
            at(2),
        );
        assert_eq!(
            ledger.last_failure(),
            Some((at(2), Outcome::Dropped, "400"))
        );
        ledger.record(
            "p",
            &counts(&[
                ("traces/accepted", 5),
                ("traces/retried/503", 3),
                ("traces/dropped/400", 4),
                ("traces/delivered", 1),
            ]),
            at(3),
        );
        assert_eq!(ledger.last_success(), Some(at(3)));
        assert_eq!(ledger.undelivered_since(), None);
    }

    #[test]
    fn processes_gone_for_long_leave_the_bookkeeping_but_not_the_totals() {
        let mut ledger = TenantLedger::resume(None, at(0));
        ledger.record("old", &counts(&[("traces/delivered", 3)]), at(1));
        ledger.age(at(1) + FORGET_INSTANCE_AFTER);
        let status = ledger.status(at(1) + FORGET_INSTANCE_AFTER);
        assert!(status.counted.is_empty());
        assert_eq!(status.total[0].delivered, 3);
    }
}
