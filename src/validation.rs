//! Checks of resource specs beyond what the CRD schema enforces at admission: the schema cannot
//! compile a regular expression, and objects written before a schema change were never checked.

use std::collections::BTreeSet;

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
    fn dns_labels() {
        for ok in ["a", "acme", "a-1", "0x"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
