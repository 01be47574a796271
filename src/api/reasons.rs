//! Every reason telemux puts in a condition or an event, once. Reasons are a user-facing API:
//! people alert on them and README's "Reading conditions" documents each (a test keeps the two
//! in step). Each is tagged with what it asks of the reader, which decides whether a condition
//! turning to it is announced as a Warning event.

/// What a reason asks of whoever reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// All is well, or the state is the one asked for (e.g. suspended): nothing to do.
    Fine,
    /// telemux, Kubernetes or Azure is working on it and it resolves by itself.
    Wait,
    /// Someone must change something (a spec, a Secret, a permission): a Warning event.
    Act,
}

impl Kind {
    /// Events of reasons that ask for action are Warnings; the rest are Normal.
    pub fn is_warning(self) -> bool {
        self == Kind::Act
    }
}

/// A reason and its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub name: &'static str,
    pub kind: Kind,
}

impl Reason {
    const fn new(name: &'static str, kind: Kind) -> Self {
        Reason { name, kind }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.name.to_owned()
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

use Kind::{Act, Fine, Wait};

// Both resources.
pub const READY: Reason = Reason::new("Ready", Fine);
pub const INVALID_SPEC: Reason = Reason::new("InvalidSpec", Act);
pub const INVALID_CONNECTION_STRING: Reason = Reason::new("InvalidConnectionString", Act);
pub const CREDENTIAL_ISSUED: Reason = Reason::new("CredentialIssued", Fine);

// Tenant: CredentialsReady.
pub const ISSUED: Reason = Reason::new("Issued", Fine);

// Tenant: ApplicationInsightsReady.
pub const CONNECTION_STRING_RESOLVED: Reason = Reason::new("ConnectionStringResolved", Fine);
pub const SECRET_NOT_FOUND: Reason = Reason::new("SecretNotFound", Act);
pub const SECRET_KEY_NOT_FOUND: Reason = Reason::new("SecretKeyNotFound", Act);
pub const PROVISIONING: Reason = Reason::new("Provisioning", Wait);
pub const PROVISIONED: Reason = Reason::new("Provisioned", Fine);
pub const AUTHENTICATION_FAILED: Reason = Reason::new("AuthenticationFailed", Act);
pub const FORBIDDEN: Reason = Reason::new("Forbidden", Act);
pub const THROTTLED: Reason = Reason::new("Throttled", Wait);
pub const AZURE_ERROR: Reason = Reason::new("AzureError", Wait);

// Tenant: Routed (its own, and the collectors' verdicts on it).
pub const ROUTED: Reason = Reason::new("Routed", Fine);
pub const NO_COLLECTOR_IN_REGION: Reason = Reason::new("NoCollectorInRegion", Act);
pub const PENDING: Reason = Reason::new("Pending", Wait);
pub const CREDENTIALS_PENDING: Reason = Reason::new("CredentialsPending", Wait);
pub const CONNECTION_STRING_PENDING: Reason = Reason::new("ConnectionStringPending", Wait);
pub const DUPLICATE_TENANT_ID: Reason = Reason::new("DuplicateTenantId", Act);
pub const CONFIG_REJECTED: Reason = Reason::new("ConfigRejected", Act);
pub const SUSPENDED: Reason = Reason::new("Suspended", Fine);
pub const REGION_NOT_ALLOWED: Reason = Reason::new("RegionNotAllowed", Act);

// Tenant: events of its component's deletion policy.
pub const APPLICATION_INSIGHTS_RETAINED: Reason = Reason::new("ApplicationInsightsRetained", Fine);
pub const APPLICATION_INSIGHTS_DELETED: Reason = Reason::new("ApplicationInsightsDeleted", Fine);
pub const APPLICATION_INSIGHTS_DELETE_FAILED: Reason =
    Reason::new("ApplicationInsightsDeleteFailed", Act);

// Collector: ConfigValid.
pub const VALIDATED: Reason = Reason::new("Validated", Fine);
pub const NOT_VALIDATED: Reason = Reason::new("NotValidated", Fine);
pub const VALIDATOR_UNAVAILABLE: Reason = Reason::new("ValidatorUnavailable", Act);
pub const CONFIG_TOO_LARGE: Reason = Reason::new("ConfigTooLarge", Act);
pub const STORAGE_SECRET_MISSING: Reason = Reason::new("StorageSecretMissing", Act);
pub const PLATFORM_SECRET_MISSING: Reason = Reason::new("PlatformSecretMissing", Act);
pub const PLATFORM_CREDENTIALS_PENDING: Reason = Reason::new("PlatformCredentialsPending", Wait);

// Collector: Available.
pub const MINIMUM_REPLICAS_AVAILABLE: Reason = Reason::new("MinimumReplicasAvailable", Fine);
pub const ROLLING_OUT: Reason = Reason::new("RollingOut", Wait);
pub const SCALED_TO_ZERO: Reason = Reason::new("ScaledToZero", Fine);
pub const NOT_ROLLED_OUT: Reason = Reason::new("NotRolledOut", Wait);

// Collector: events.
pub const CONFIG_RENDERED: Reason = Reason::new("ConfigRendered", Fine);
pub const QUEUE_MEMORY_BUDGET_EXCEEDED: Reason = Reason::new("QueueMemoryBudgetExceeded", Act);

// Tenant, `Delivering` (from the collectors' counters).
pub const DELIVERED: Reason = Reason::new("Delivered", Fine);
pub const NO_TELEMETRY: Reason = Reason::new("NoTelemetry", Fine);
pub const REJECTED: Reason = Reason::new("Rejected", Act);
pub const QUEUE_FULL: Reason = Reason::new("QueueFull", Act);
pub const EXPIRED: Reason = Reason::new("Expired", Act);
pub const INGESTION_UNAVAILABLE: Reason = Reason::new("IngestionUnavailable", Wait);
/// A drop's reason, like `Suspended` and `RegionNotAllowed`: items of a signal the tenant's
/// `spec.signals` turns off, dropped (and counted) by the collector as the tenant asked.
/// A drop code, not a condition reason: what a tenant's own sampler left out.
pub const SAMPLED: &str = "Sampled";
pub const SIGNAL_DISABLED: Reason = Reason::new("SignalDisabled", Fine);

/// Every reason, for lookups and the README check.
pub const ALL: &[Reason] = &[
    READY,
    INVALID_SPEC,
    INVALID_CONNECTION_STRING,
    CREDENTIAL_ISSUED,
    ISSUED,
    CONNECTION_STRING_RESOLVED,
    SECRET_NOT_FOUND,
    SECRET_KEY_NOT_FOUND,
    PROVISIONING,
    PROVISIONED,
    AUTHENTICATION_FAILED,
    FORBIDDEN,
    THROTTLED,
    AZURE_ERROR,
    ROUTED,
    NO_COLLECTOR_IN_REGION,
    PENDING,
    CREDENTIALS_PENDING,
    CONNECTION_STRING_PENDING,
    DUPLICATE_TENANT_ID,
    CONFIG_REJECTED,
    SUSPENDED,
    REGION_NOT_ALLOWED,
    APPLICATION_INSIGHTS_RETAINED,
    APPLICATION_INSIGHTS_DELETED,
    APPLICATION_INSIGHTS_DELETE_FAILED,
    VALIDATED,
    NOT_VALIDATED,
    VALIDATOR_UNAVAILABLE,
    CONFIG_TOO_LARGE,
    STORAGE_SECRET_MISSING,
    PLATFORM_SECRET_MISSING,
    PLATFORM_CREDENTIALS_PENDING,
    MINIMUM_REPLICAS_AVAILABLE,
    ROLLING_OUT,
    SCALED_TO_ZERO,
    NOT_ROLLED_OUT,
    CONFIG_RENDERED,
    QUEUE_MEMORY_BUDGET_EXCEEDED,
    DELIVERED,
    NO_TELEMETRY,
    REJECTED,
    QUEUE_FULL,
    EXPIRED,
    INGESTION_UNAVAILABLE,
    SIGNAL_DISABLED,
];

/// The tag of a reason found in a stored condition. A name telemux does not know (written by
/// an older version) asks for action, so it is announced rather than hidden.
/// A collector's verdict that only says the tenant is not ready for it yet (its credential or
/// connection string is still to come): the tenant's own conditions say the same, first hand.
pub fn is_tenant_pending(name: &str) -> bool {
    name == CREDENTIALS_PENDING.name || name == CONNECTION_STRING_PENDING.name
}

pub fn kind_of(name: &str) -> Kind {
    ALL.iter().find(|r| r.name == name).map_or(Act, |r| r.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once() {
        let mut names: Vec<&str> = ALL.iter().map(|r| r.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a reason is listed twice");
    }

    #[test]
    fn waits_are_not_actions() {
        assert_eq!(kind_of("Provisioning"), Wait);
        assert_eq!(kind_of("CredentialsPending"), Wait);
        assert_eq!(kind_of("SecretNotFound"), Act);
        assert_eq!(kind_of("SomethingFromAnOlderVersion"), Act);
    }

    /// README's "Reading conditions" is where users look a reason up: every reason telemux
    /// can report has a row there, and every row names a reason telemux reports.
    #[test]
    fn the_readme_documents_every_reason() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Reading conditions")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        // The backticked names in each table's "reason" column.
        let mut documented = std::collections::BTreeSet::new();
        let mut column = None;
        for line in section.lines() {
            if !line.starts_with('|') {
                column = None;
                continue;
            }
            let cells: Vec<&str> = line.split('|').collect();
            match column {
                None => column = cells.iter().position(|c| c.trim().ends_with("reason")),
                Some(i) => documented.extend(
                    cells
                        .get(i)
                        .into_iter()
                        .flat_map(|c| c.split('`').skip(1).step_by(2)),
                ),
            }
        }
        let missing: Vec<&str> = ALL
            .iter()
            .map(|r| r.name)
            .filter(|n| !documented.contains(n))
            .collect();
        assert!(missing.is_empty(), "README lacks reasons {missing:?}");
        let unknown: Vec<&&str> = documented
            .iter()
            .filter(|d| !ALL.iter().any(|r| r.name == **d))
            .collect();
        assert!(
            unknown.is_empty(),
            "README documents unknown reasons {unknown:?}"
        );
    }
}
