//! A small OTLP/HTTP client (JSON encoding, as the OTLP specification defines it), so a test
//! controls exactly which attribute, event and body carries what.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};

/// Telemetry of one request per signal, all sharing one resource.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub resource: Vec<(String, String)>,
    /// Attributes of the span, the log record and the metric data point.
    pub attributes: Vec<(String, String)>,
    /// Attributes of the span's one event.
    pub event_attributes: Vec<(String, String)>,
    pub log_body: String,
    pub name: String,
}

fn kvs(pairs: &[(String, String)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": { "stringValue": v } }))
        .collect()
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand_byte())).collect()
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_nanos());
    h.finish() as u8
}

impl Batch {
    pub fn traces(&self) -> Value {
        let end = now_nanos();
        let start = end - 5_000_000;
        json!({ "resourceSpans": [{
            "resource": { "attributes": kvs(&self.resource) },
            "scopeSpans": [{
                "scope": { "name": "telemux-e2e" },
                "spans": [{
                    "traceId": random_hex(16),
                    "spanId": random_hex(8),
                    "name": self.name,
                    "kind": 2,
                    "startTimeUnixNano": start.to_string(),
                    "endTimeUnixNano": end.to_string(),
                    "attributes": kvs(&self.attributes),
                    "events": [{
                        "timeUnixNano": (start + 1_000_000).to_string(),
                        "name": format!("{}-event", self.name),
                        "attributes": kvs(&self.event_attributes),
                    }],
                    "status": { "code": 1 },
                }]
            }]
        }]})
    }

    pub fn logs(&self) -> Value {
        json!({ "resourceLogs": [{
            "resource": { "attributes": kvs(&self.resource) },
            "scopeLogs": [{
                "scope": { "name": "telemux-e2e" },
                "logRecords": [{
                    "timeUnixNano": now_nanos().to_string(),
                    "severityNumber": 9,
                    "severityText": "INFO",
                    "body": { "stringValue": self.log_body },
                    "attributes": kvs(&self.attributes),
                }]
            }]
        }]})
    }

    pub fn metrics(&self) -> Value {
        json!({ "resourceMetrics": [{
            "resource": { "attributes": kvs(&self.resource) },
            "scopeMetrics": [{
                "scope": { "name": "telemux-e2e" },
                "metrics": [{
                    "name": format!("{}.gauge", self.name),
                    "gauge": { "dataPoints": [{
                        "timeUnixNano": now_nanos().to_string(),
                        "asDouble": 42.0,
                        "attributes": kvs(&self.attributes),
                    }]}
                }]
            }]
        }]})
    }
}

/// Credentials a client presents (HTTP basic auth), if any.
#[derive(Clone, Debug)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl Credential {
    pub fn header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Sends one OTLP/HTTP JSON request; returns the HTTP status.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    signal: &str,
    credential: Option<&Credential>,
    body: &Value,
) -> u16 {
    let mut request = client
        .post(format!("{base}/v1/{signal}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(credential) = credential {
        request = request.header("authorization", credential.header());
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("sending {signal}: {e}"))
        .status()
        .as_u16()
}

/// Sends traces, logs and metrics; returns the three statuses.
pub async fn post_all(
    client: &reqwest::Client,
    base: &str,
    credential: Option<&Credential>,
    batch: &Batch,
) -> [u16; 3] {
    [
        post(client, base, "traces", credential, &batch.traces()).await,
        post(client, base, "logs", credential, &batch.logs()).await,
        post(client, base, "metrics", credential, &batch.metrics()).await,
    ]
}

/// `count` server spans, each with its own `seq` attribute `"{tag}-{i}"` for `i` in
/// `from..from + count`, so a test can tell exactly which arrived and how often.
pub fn numbered_spans(
    resource: &[(String, String)],
    tag: &str,
    from: usize,
    count: usize,
) -> Value {
    let end = now_nanos();
    let start = end - 5_000_000;
    let trace_id = random_hex(16);
    let spans: Vec<Value> = (from..from + count)
        .map(|i| {
            json!({
                "traceId": trace_id,
                "spanId": format!("{:016x}", i + 1),
                "name": format!("{tag}-operation"),
                "kind": 2,
                "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": end.to_string(),
                "attributes": kvs(&[("seq".to_owned(), format!("{tag}-{i}"))]),
                "status": { "code": 1 },
            })
        })
        .collect();
    json!({ "resourceSpans": [{
        "resource": { "attributes": kvs(resource) },
        "scopeSpans": [{ "scope": { "name": "telemux-e2e" }, "spans": spans }]
    }]})
}
