//! Checks of resource specs beyond what the CRD schema enforces at admission: the schema cannot
//! compile a regular expression, and objects written before a schema change were never checked.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::api::collector::RegionalCollectorSpec;
use crate::api::tenant::TelemetryTenantSpec;

/// Why a spec cannot be served. The message names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub message: String,
}

fn problem(message: impl Into<String>) -> SpecError {
    SpecError {
        message: message.into(),
    }
}

/// Largest compiled program a user's pattern may produce, so one tenant cannot make every
/// collector of its region slow.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Compiles a redaction pattern. The collector uses Go's RE2; Rust's `regex` accepts the same
/// core syntax and, like RE2, refuses look-around and back-references. The real collector's
/// own check remains the final word.
fn check_patterns(field: &str, patterns: &[String]) -> Result<(), SpecError> {
    for (index, pattern) in patterns.iter().enumerate() {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let detail = match e {
                    regex::Error::Syntax(s) => {
                        s.lines().last().unwrap_or_default().trim().to_owned()
                    }
                    regex::Error::CompiledTooBig(_) => "the pattern is too large".to_owned(),
                    other => other.to_string(),
                };
                problem(format!(
                    "{field}[{index}] {pattern:?} is not a valid regular expression: {detail}"
                ))
            })?;
    }
    Ok(())
}

/// A duration as Go's `time.ParseDuration` (how the collector reads its durations) reads it,
/// restricted to what the CRD's pattern admits: one or more unsigned decimal numbers, each
/// with a unit (`h`, `m`, `s`, `ms`, `us`, `ns`): `15m`, `1h30m`, `1.5h`, `90s`. `None` for
/// anything else, or beyond what a `Duration` of whole nanoseconds up to `u64::MAX` holds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    const UNITS: [(&str, u128); 6] = [
        ("ns", 1),
        ("us", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60 * 1_000_000_000),
        ("h", 3_600 * 1_000_000_000),
    ];
    let mut rest = text;
    let mut nanos: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let whole_len = digits(rest);
        if whole_len == 0 {
            return None;
        }
        let whole = &rest[..whole_len];
        rest = &rest[whole_len..];
        let mut fraction = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let fraction_len = digits(after_dot);
            if fraction_len == 0 {
                return None;
            }
            fraction = &after_dot[..fraction_len];
            rest = &after_dot[fraction_len..];
        }
        let unit_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        let (_, scale) = UNITS.iter().find(|(unit, _)| *unit == &rest[..unit_len])?;
        rest = &rest[unit_len..];
        // Go keeps at most nanosecond precision; so do we (digits past it are dropped).
        let whole: u128 = whole.parse().ok()?;
        let mut part = whole.checked_mul(*scale)?;
        let mut denominator: u128 = 1;
        let mut numerator: u128 = 0;
        for digit in fraction.bytes().take(18) {
            numerator = numerator * 10 + u128::from(digit - b'0');
            denominator *= 10;
        }
        part = part.checked_add(numerator * scale / denominator)?;
        nanos = nanos.checked_add(part)?;
    }
    let nanos = u64::try_from(nanos).ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The bounds of `deliveryReportInterval`: the exporter's own minimum, and once a day.
pub const MIN_DELIVERY_REPORT_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_DELIVERY_REPORT_INTERVAL: Duration = Duration::from_secs(24 * 3600);

fn check_delivery_report_interval(interval: &str) -> Result<(), SpecError> {
    let parsed = parse_duration(interval).ok_or_else(|| {
        problem(format!(
            "deliveryReportInterval {interval:?} is not a duration such as 15m, 1h30m or 90s"
        ))
    })?;
    if !(MIN_DELIVERY_REPORT_INTERVAL..=MAX_DELIVERY_REPORT_INTERVAL).contains(&parsed) {
        return Err(problem(format!(
            "deliveryReportInterval {interval:?} must be at least 1s and at most 24h"
        )));
    }
    Ok(())
}

pub fn validate_tenant_spec(spec: &TelemetryTenantSpec) -> Result<(), SpecError> {
    if !is_dns_label(&spec.tenant_id) {
        return Err(problem(format!(
            "tenantId {:?} is not a DNS label",
            spec.tenant_id
        )));
    }
    if spec.regions.is_empty() {
        return Err(problem("regions must list at least one region"));
    }
    let mut seen = BTreeSet::new();
    for region in &spec.regions {
        if !is_dns_label(region) {
            return Err(problem(format!("region {region:?} is not a DNS label")));
        }
        if !seen.insert(region) {
            return Err(problem(format!("region {region:?} is listed twice")));
        }
    }
    let ai = &spec.application_insights;
    if ai.provision.is_some() == ai.existing.is_some() {
        return Err(problem(
            "set exactly one of applicationInsights.provision or applicationInsights.existing",
        ));
    }
    if let Some(sampling) = &spec.sampling
        && !(sampling.percentage > 0.0 && sampling.percentage <= 100.0)
    {
        return Err(problem(
            "sampling.percentage must be greater than 0 and at most 100",
        ));
    }
    if let Some(redaction) = &spec.redaction {
        check_patterns("redaction.blockedValues", &redaction.blocked_values)?;
        check_patterns(
            "redaction.blockedKeyPatterns",
            &redaction.blocked_key_patterns,
        )?;
    }
    Ok(())
}

pub fn validate_collector_spec(spec: &RegionalCollectorSpec) -> Result<(), SpecError> {
    if !is_dns_label(&spec.region) {
        return Err(problem(format!(
            "region {:?} is not a DNS label",
            spec.region
        )));
    }
    if spec.ports.grpc == spec.ports.http {
        return Err(problem("ports.grpc and ports.http must differ"));
    }
    if let Some(autoscaling) = &spec.autoscaling
        && autoscaling.min_replicas > autoscaling.max_replicas
    {
        return Err(problem(
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ));
    }
    check_patterns("redaction.blockedValues", &spec.redaction.blocked_values)?;
    check_patterns(
        "redaction.blockedKeyPatterns",
        &spec.redaction.blocked_key_patterns,
    )?;
    check_delivery_report_interval(&spec.delivery_report_interval)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tenant::TenantRedaction;

    fn tenant() -> TelemetryTenantSpec {
        serde_json::from_value(serde_json::json!({
            "tenantId": "acme",
            "regions": ["westeurope"],
            "applicationInsights": {"existing": {"connectionStringSecretRef": {"name": "s", "key": "k"}}}
        }))
        .unwrap()
    }

    #[test]
    fn a_minimal_tenant_is_valid() {
        assert_eq!(validate_tenant_spec(&tenant()), Ok(()));
    }

    #[test]
    fn bad_patterns_are_named_with_their_field_and_index() {
        let mut spec = tenant();
        spec.redaction = Some(TenantRedaction {
            blocked_values: vec!["ok".into(), "(unclosed".into()],
            blocked_key_patterns: vec![],
        });
        let err = validate_tenant_spec(&spec).unwrap_err();
        assert!(
            err.message
                .starts_with(r#"redaction.blockedValues[1] "(unclosed" is not a valid"#),
            "{err}"
        );
    }

    #[test]
    fn look_around_is_refused_as_re2_would() {
        let mut spec = tenant();
        spec.redaction = Some(TenantRedaction {
            blocked_values: vec![],
            blocked_key_patterns: vec!["(?=secret)".into()],
        });
        assert!(validate_tenant_spec(&spec).is_err());
    }

    #[test]
    fn schema_level_rules_hold_even_without_the_schema() {
        let mut spec = tenant();
        spec.tenant_id = "Not_A_Label".into();
        assert!(validate_tenant_spec(&spec).is_err());
        let mut spec = tenant();
        spec.regions = vec!["a".into(), "a".into()];
        assert!(
            validate_tenant_spec(&spec)
                .unwrap_err()
                .message
                .contains("twice")
        );
        let mut spec = tenant();
        spec.regions.clear();
        assert!(validate_tenant_spec(&spec).is_err());
    }

    #[test]
    fn durations_read_as_go_reads_them() {
        let secs = Duration::from_secs;
        for (text, expected) in [
            ("15m", secs(900)),
            ("1h30m", secs(5400)),
            ("1.5h", secs(5400)),
            ("90s", secs(90)),
            ("1s500ms", Duration::from_millis(1500)),
            ("24h", secs(86_400)),
            ("0s", secs(0)),
            ("2us", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse_duration(text), Some(expected), "{text}");
        }
        for bad in [
            "",
            "15",
            "m",
            "15 m",
            " 15m",
            "15M",
            "-1s",
            "+1s",
            "1.s",
            ".5h",
            "1d",
            "1h-",
            "15m ",
            "1e3s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_delivery_report_interval_is_a_duration_from_1s_to_24h() {
        let collector = |interval: &str| -> RegionalCollectorSpec {
            serde_json::from_value(serde_json::json!({
                "region": "westeurope", "deliveryReportInterval": interval
            }))
            .unwrap()
        };
        let default: RegionalCollectorSpec =
            serde_json::from_value(serde_json::json!({ "region": "westeurope" })).unwrap();
        assert_eq!(default.delivery_report_interval, "15m");
        assert_eq!(validate_collector_spec(&default), Ok(()));
        for ok in ["1s", "15m", "1h30m", "24h", "23h59m60s"] {
            assert_eq!(validate_collector_spec(&collector(ok)), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("999ms", "must be at least 1s and at most 24h"),
            ("0s", "must be at least 1s and at most 24h"),
            ("24h1ns", "must be at least 1s and at most 24h"),
            ("2d", "is not a duration"),
            ("fifteen minutes", "is not a duration"),
        ] {
            let message = validate_collector_spec(&collector(bad))
                .unwrap_err()
                .message;
            assert!(
                message.starts_with(&format!("deliveryReportInterval {bad:?} ")),
                "{message}"
            );
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "acme", "a-1", "0x"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
