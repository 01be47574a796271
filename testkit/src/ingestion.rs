//! Application Insights ingestion ("Breeze") emulator.
//!
//! Serves `POST /v2.1/track` and `POST /v2/track` the way the real service does for the Azure
//! Monitor exporters: gzip or plain bodies, newline-delimited JSON or a JSON array, per-item
//! validation with the service's error messages, the `itemsReceived/itemsAccepted/errors`
//! answer with 200/206/first-item status, and faults on demand per instrumentation key.
//! Only accepted envelopes are recorded: a rejected item was not delivered.
//!
//! When the emulator runs as a separate process (the `telemux-azure-emulator` binary), tests
//! reach its records and faults over HTTP under `/_emulator/` (not part of Breeze):
//! `GET /_emulator/envelopes[?ikey=K]`, `GET /_emulator/requests`, `DELETE /_emulator/records`,
//! `PUT /_emulator/faults/{ikey}` with `{"status":503,"retryAfterSeconds":5}` or
//! `{"rejectEvery":3,"status":500}`, and `DELETE /_emulator/faults/{ikey}`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::task::JoinHandle;

/// Breeze refuses items whose `time` is older than this (its error 103).
const MAX_ITEM_AGE: Duration = Duration::from_secs(48 * 3600);
/// Generous: the exporter sends up to 1024 items per request (gzip), and benchmarks may send more.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// A fault to inject for requests carrying a given instrumentation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer `code` for the whole request (e.g. 429, 503, 500, 408), accepting nothing. With
    /// `retry_after`, a `Retry-After` header carries now + that duration as an HTTP date, as
    /// Breeze does.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Accept every item of that key except every `reject_every`-th one (1-based, counted per
    /// request), which gets `code` in `errors`; the request is answered 206 (or, if nothing was
    /// accepted, with the first item's status, as Breeze does).
    PartialSuccess { reject_every: usize, code: u16 },
}

/// One accepted telemetry item.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub ikey: String,
    pub name: String,
    pub base_type: Option<String>,
    pub received_at: SystemTime,
    pub raw: Value,
}

impl Envelope {
    /// `data.baseData`, where the exporter puts the telemetry itself.
    pub fn base_data(&self) -> Option<&Value> {
        self.raw.pointer("/data/baseData")
    }

    /// A string in `data.baseData.properties` (attributes land there).
    pub fn property(&self, key: &str) -> Option<&str> {
        self.base_data()?.get("properties")?.get(key)?.as_str()
    }

    /// A string in `tags` (`ai.operation.id`, `ai.cloud.role`, ...).
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.raw.get("tags")?.get(key)?.as_str()
    }
}

/// One per-item error in a Breeze answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    pub index: usize,
    pub status_code: u16,
    pub message: String,
}

/// One `POST` the emulator answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub path: String,
    /// Distinct instrumentation keys of the request's items, in first-seen order.
    pub ikeys: Vec<String>,
    pub items_received: usize,
    pub items_accepted: usize,
    pub status: u16,
    pub errors: Vec<ItemError>,
    /// The `Retry-After` header sent, if any.
    pub retry_after: Option<String>,
    pub content_encoding: Option<String>,
    pub content_type: Option<String>,
    /// Size of the body as received (compressed, if it was).
    pub body_bytes: usize,
    pub at: SystemTime,
}

/// Errors of the emulator's own helpers (not of the emulated protocol).
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(
        "timed out after {waited:?} waiting for {wanted} envelopes for key {ikey:?}; have {have}"
    )]
    WaitTimeout {
        ikey: String,
        wanted: usize,
        have: usize,
        waited: Duration,
    },
}

/// Why a body could not be read as telemetry at all (the whole request is a 400).
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("unsupported Content-Encoding {0:?}")]
    Encoding(String),
    #[error("invalid gzip body: {0}")]
    Gzip(#[from] std::io::Error),
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Default)]
struct Recorded {
    envelopes: Vec<Envelope>,
    /// Accepted items per lowercased key, so counts need no scan.
    counts: HashMap<String, usize>,
    requests: Vec<RequestRecord>,
}

struct Shared {
    recorded: Mutex<Recorded>,
    /// Keyed by lowercased instrumentation key.
    faults: Mutex<HashMap<String, Fault>>,
    /// `None`: any well-formed key is valid. `Some`: only these (lowercased), like a service
    /// that knows which components exist.
    known_keys: Mutex<Option<HashSet<String>>>,
    arrived: Notify,
    events: broadcast::Sender<RequestRecord>,
}

/// Locks are only held for short, await-free sections; a panic while holding one cannot leave
/// the data half-updated in a way that matters to a test, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running emulator; stops when dropped or on [`IngestionEmulator::shutdown`].
pub struct IngestionEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl IngestionEmulator {
    /// Serves on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<IngestionEmulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<IngestionEmulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            recorded: Mutex::new(Recorded::default()),
            faults: Mutex::new(HashMap::new()),
            known_keys: Mutex::new(None),
            arrived: Notify::new(),
            events,
        });
        let app = Router::new()
            .route("/v2.1/track", post(track))
            .route("/v2/track", post(track))
            .route("/_emulator/envelopes", get(control_envelopes))
            .route("/_emulator/requests", get(control_requests))
            .route("/_emulator/records", axum::routing::delete(control_reset))
            .route(
                "/_emulator/faults/{ikey}",
                put(control_set_fault).delete(control_clear_fault),
            )
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Either an explicit stop or the handle being dropped ends the server.
                    let _ = stopped.await;
                })
                .await
        });
        Ok(IngestionEmulator {
            addr,
            shared,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/`, the form of a connection string's `IngestionEndpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn connection_string(&self, instrumentation_key: &str) -> String {
        format!(
            "InstrumentationKey={instrumentation_key};IngestionEndpoint={}",
            self.endpoint()
        )
    }

    /// Every accepted envelope so far, in arrival order.
    pub fn envelopes(&self) -> Vec<Envelope> {
        lock(&self.shared.recorded).envelopes.clone()
    }

    /// Accepted envelopes of one key (compared case-insensitively, as GUIDs are).
    pub fn envelopes_for(&self, instrumentation_key: &str) -> Vec<Envelope> {
        lock(&self.shared.recorded)
            .envelopes
            .iter()
            .filter(|e| e.ikey.eq_ignore_ascii_case(instrumentation_key))
            .cloned()
            .collect()
    }

    /// Number of accepted envelopes, without copying them (for benchmarks).
    pub fn count(&self) -> usize {
        lock(&self.shared.recorded).envelopes.len()
    }

    pub fn count_for(&self, instrumentation_key: &str) -> usize {
        lock(&self.shared.recorded)
            .counts
            .get(&instrumentation_key.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.recorded).requests.clone()
    }

    /// Forgets everything recorded (faults and known keys stay).
    pub fn reset(&self) {
        *lock(&self.shared.recorded) = Recorded::default();
    }

    /// Live feed of answered requests (for logging); slow readers lose old records.
    pub fn subscribe(&self) -> broadcast::Receiver<RequestRecord> {
        self.shared.events.subscribe()
    }

    pub fn set_fault(&self, instrumentation_key: &str, fault: Fault) {
        lock(&self.shared.faults).insert(instrumentation_key.to_ascii_lowercase(), fault);
    }

    pub fn clear_fault(&self, instrumentation_key: &str) {
        lock(&self.shared.faults).remove(&instrumentation_key.to_ascii_lowercase());
    }

    /// From now on only these keys are valid; others get "Invalid instrumentation key", as for a
    /// deleted or never-created component.
    pub fn accept_only<I, S>(&self, keys: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .map(|k| k.as_ref().to_ascii_lowercase())
            .collect();
        *lock(&self.shared.known_keys) = Some(keys);
    }

    /// Back to the default: any well-formed key is valid.
    pub fn accept_any(&self) {
        *lock(&self.shared.known_keys) = None;
    }

    /// Waits until at least `at_least` envelopes of `instrumentation_key` were accepted and
    /// returns them all.
    pub async fn wait_for_envelopes(
        &self,
        instrumentation_key: &str,
        at_least: usize,
        timeout: Duration,
    ) -> Result<Vec<Envelope>, EmulatorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so an arrival in between is not missed.
            let notified = self.shared.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let have = self.count_for(instrumentation_key);
            if have >= at_least {
                return Ok(self.envelopes_for(instrumentation_key));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(EmulatorError::WaitTimeout {
                    ikey: instrumentation_key.to_string(),
                    wanted: at_least,
                    have: self.count_for(instrumentation_key),
                    waited: timeout,
                });
            }
        }
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for IngestionEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Envelope {
    /// The control API's JSON form.
    fn to_json(&self) -> Value {
        json!({
            "ikey": self.ikey,
            "name": self.name,
            "baseType": self.base_type,
            "receivedAtMs": unix_millis(self.received_at),
            "raw": self.raw,
        })
    }
}

impl RequestRecord {
    fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "ikeys": self.ikeys,
            "itemsReceived": self.items_received,
            "itemsAccepted": self.items_accepted,
            "status": self.status,
            "errors": self.errors.iter().map(|e| json!({"index": e.index, "statusCode": e.status_code, "message": e.message})).collect::<Vec<_>>(),
            "retryAfter": self.retry_after,
            "contentEncoding": self.content_encoding,
            "contentType": self.content_type,
            "bodyBytes": self.body_bytes,
            "atMs": unix_millis(self.at),
        })
    }
}

fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

#[derive(serde::Deserialize)]
struct EnvelopeQuery {
    ikey: Option<String>,
}

async fn control_envelopes(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<EnvelopeQuery>,
) -> axum::Json<Value> {
    let recorded = lock(&shared.recorded);
    let list: Vec<Value> = recorded
        .envelopes
        .iter()
        .filter(|e| {
            q.ikey
                .as_deref()
                .is_none_or(|k| e.ikey.eq_ignore_ascii_case(k))
        })
        .map(Envelope::to_json)
        .collect();
    axum::Json(Value::Array(list))
}

async fn control_requests(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let recorded = lock(&shared.recorded);
    axum::Json(Value::Array(
        recorded
            .requests
            .iter()
            .map(RequestRecord::to_json)
            .collect(),
    ))
}

async fn control_reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    *lock(&shared.recorded) = Recorded::default();
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultSpec {
    status: u16,
    retry_after_seconds: Option<u64>,
    reject_every: Option<usize>,
}

async fn control_set_fault(
    State(shared): State<Arc<Shared>>,
    Path(ikey): Path<String>,
    axum::Json(spec): axum::Json<FaultSpec>,
) -> StatusCode {
    let fault = match spec.reject_every {
        Some(reject_every) => Fault::PartialSuccess {
            reject_every,
            code: spec.status,
        },
        None => Fault::Status {
            code: spec.status,
            retry_after: spec.retry_after_seconds.map(Duration::from_secs),
        },
    };
    lock(&shared.faults).insert(ikey.to_ascii_lowercase(), fault);
    StatusCode::NO_CONTENT
}

async fn control_clear_fault(
    State(shared): State<Arc<Shared>>,
    Path(ikey): Path<String>,
) -> StatusCode {
    lock(&shared.faults).remove(&ikey.to_ascii_lowercase());
    StatusCode::NO_CONTENT
}

/// Outcome of validating one item.
enum Item {
    Valid {
        ikey: String,
        name: String,
        base_type: Option<String>,
        raw: Value,
    },
    Invalid(ItemError),
}

async fn track(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = SystemTime::now();
    let content_encoding = header_str(&headers, header::CONTENT_ENCODING);
    let content_type = header_str(&headers, header::CONTENT_TYPE);
    let mut record = RequestRecord {
        path: uri.path().to_string(),
        ikeys: Vec::new(),
        items_received: 0,
        items_accepted: 0,
        status: 400,
        errors: Vec::new(),
        retry_after: None,
        content_encoding: content_encoding.clone(),
        content_type,
        body_bytes: body.len(),
        at: received_at,
    };

    let values = match decode_body(content_encoding.as_deref(), &body) {
        Ok(values) => values,
        Err(err) => {
            tracing::debug!(%err, "ingestion emulator: malformed body");
            let message = err.to_string();
            record.errors.push(ItemError {
                index: 0,
                status_code: 400,
                message: message.clone(),
            });
            finish(&shared, record, Vec::new());
            let body = json!({
                "itemsReceived": 0, "itemsAccepted": 0, "appId": null,
                "errors": [{"index": 0, "statusCode": 400, "message": message}],
            });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };

    let now = SystemTime::now();
    let items: Vec<Item> = {
        let known = lock(&shared.known_keys);
        values
            .into_iter()
            .enumerate()
            .map(|(index, raw)| validate(index, raw, now, known.as_ref()))
            .collect()
    };
    record.items_received = items.len();
    for item in &items {
        if let Item::Valid { ikey, .. } = item
            && !record.ikeys.iter().any(|k| k.eq_ignore_ascii_case(ikey))
        {
            record.ikeys.push(ikey.clone());
        }
    }

    // Faults are looked up once per request; the map is tiny.
    let faults: HashMap<String, Fault> = {
        let all = lock(&shared.faults);
        record
            .ikeys
            .iter()
            .filter_map(|k| {
                let k = k.to_ascii_lowercase();
                all.get(&k).map(|f| (k, f.clone()))
            })
            .collect()
    };

    // A whole-request status fault on any key of the request wins, as a throttled or failing
    // service answers the request, not single items.
    let status_fault =
        record
            .ikeys
            .iter()
            .find_map(|k| match faults.get(&k.to_ascii_lowercase()) {
                Some(Fault::Status { code, retry_after }) => Some((*code, *retry_after)),
                _ => None,
            });
    if let Some((code, retry_after)) = status_fault {
        return whole_request_fault(&shared, record, code, retry_after);
    }

    let mut accepted = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut seen_per_key: HashMap<String, usize> = HashMap::new();
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Item::Invalid(err) => errors.push(err),
            Item::Valid {
                ikey,
                name,
                base_type,
                raw,
            } => {
                let lower = ikey.to_ascii_lowercase();
                if let Some(Fault::PartialSuccess { reject_every, code }) = faults.get(&lower) {
                    let nth = seen_per_key.entry(lower).or_insert(0);
                    *nth += 1;
                    if *reject_every > 0 && nth.is_multiple_of(*reject_every) {
                        errors.push(ItemError {
                            index,
                            status_code: *code,
                            message: reason(*code).to_string(),
                        });
                        continue;
                    }
                }
                accepted.push(Envelope {
                    ikey,
                    name,
                    base_type,
                    received_at,
                    raw,
                });
            }
        }
    }

    record.items_accepted = accepted.len();
    record.status = if errors.is_empty() {
        200
    } else if accepted.is_empty() {
        // Breeze answers the first item's status when it accepted nothing.
        errors.first().map_or(400, |e| e.status_code)
    } else {
        206
    };
    let body = answer_body(record.items_received, record.items_accepted, &errors);
    record.errors = errors;
    let status = status_code(record.status);
    finish(&shared, record, accepted);
    (status, axum::Json(body)).into_response()
}

fn whole_request_fault(
    shared: &Shared,
    mut record: RequestRecord,
    code: u16,
    retry_after: Option<Duration>,
) -> Response {
    record.status = code;
    record.items_accepted = 0;
    // The published examples carry an empty message for whole-request failures.
    record.errors = (0..record.items_received)
        .map(|index| ItemError {
            index,
            status_code: code,
            message: String::new(),
        })
        .collect();
    let retry_after = retry_after.map(|d| httpdate::fmt_http_date(SystemTime::now() + d));
    record.retry_after = retry_after.clone();
    let body = answer_body(record.items_received, 0, &record.errors);
    finish(shared, record, Vec::new());
    let mut response = (status_code(code), axum::Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Stores the outcome and wakes waiters; the only place the recording lock is taken.
fn finish(shared: &Shared, record: RequestRecord, accepted: Vec<Envelope>) {
    tracing::debug!(
        path = %record.path, ikeys = ?record.ikeys, items = record.items_received,
        accepted = record.items_accepted, status = record.status,
        "ingestion emulator: request"
    );
    {
        let mut recorded = lock(&shared.recorded);
        for envelope in &accepted {
            *recorded
                .counts
                .entry(envelope.ikey.to_ascii_lowercase())
                .or_insert(0) += 1;
        }
        recorded.envelopes.extend(accepted);
        recorded.requests.push(record.clone());
    }
    // No subscribers is normal; the send error only says so.
    let _ = shared.events.send(record);
    shared.arrived.notify_waiters();
}

fn answer_body(received: usize, accepted: usize, errors: &[ItemError]) -> Value {
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| json!({"index": e.index, "statusCode": e.status_code, "message": e.message}))
        .collect();
    json!({
        "itemsReceived": received,
        "itemsAccepted": accepted,
        "appId": null,
        "errors": errors,
    })
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn reason(code: u16) -> &'static str {
    status_code(code).canonical_reason().unwrap_or("")
}

/// Gunzips if declared, then reads a JSON array or a stream of JSON values (ndjson).
fn decode_body(content_encoding: Option<&str>, body: &[u8]) -> Result<Vec<Value>, BodyError> {
    let inflated;
    let text: &[u8] = match content_encoding.map(|e| e.trim().to_ascii_lowercase()) {
        None => body,
        Some(e) if e.is_empty() || e == "identity" => body,
        Some(e) if e == "gzip" || e == "x-gzip" => {
            use std::io::Read;
            let mut out = Vec::with_capacity(body.len() * 8);
            flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out)?;
            inflated = out;
            &inflated
        }
        Some(e) if e == "deflate" => {
            use std::io::Read;
            let mut out = Vec::with_capacity(body.len() * 8);
            flate2::read::ZlibDecoder::new(body).read_to_end(&mut out)?;
            inflated = out;
            &inflated
        }
        Some(other) => return Err(BodyError::Encoding(other)),
    };
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return Ok(serde_json::from_slice::<Vec<Value>>(text)?);
    }
    // Newline-delimited JSON; the stream reader also copes with \r\n and blank lines.
    serde_json::Deserializer::from_slice(text)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(BodyError::from)
}

/// Checks one item the way Breeze does: required envelope fields first, then age, then key.
fn validate(
    index: usize,
    raw: Value,
    now: SystemTime,
    known_keys: Option<&HashSet<String>>,
) -> Item {
    let invalid = |message: String| {
        Item::Invalid(ItemError {
            index,
            status_code: 400,
            message,
        })
    };
    let field = |name: &str| {
        raw.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let Some(name) = field("name") else {
        return invalid(missing_field("name", raw.get("name")));
    };
    let Some(time) = field("time") else {
        return invalid(missing_field("time", raw.get("time")));
    };
    if let Some(at) = parse_rfc3339(&time)
        && let Ok(age) = now.duration_since(at)
        && age > MAX_ITEM_AGE
    {
        return invalid(format!(
            "103: Field 'time' on type 'Envelope' is older than the allowed min date. \
             Expected: now - {}ms, Actual: now - {}ms",
            MAX_ITEM_AGE.as_millis(),
            age.as_millis()
        ));
    }
    let ikey = field("iKey").unwrap_or_default();
    let known = known_keys.is_none_or(|keys| keys.contains(&ikey.to_ascii_lowercase()));
    if !is_guid(&ikey) || !known {
        return invalid("Invalid instrumentation key".to_string());
    }
    let base_type = raw
        .pointer("/data/baseType")
        .and_then(Value::as_str)
        .map(str::to_string);
    Item::Valid {
        ikey,
        name,
        base_type,
        raw,
    }
}

/// Breeze's message 109, with "Actual" describing what was there.
fn missing_field(field: &str, actual: Option<&Value>) -> String {
    let actual = match actual {
        None | Some(Value::Null) => "undefined".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    format!(
        "109: Field '{field}' on type 'Envelope' is required but missing or empty. \
         Expected: string, Actual: {actual}"
    )
}

/// A GUID as .NET's `Guid.TryParse` reads it: 32 hex digits, optionally dashed 8-4-4-4-12,
/// optionally in braces or parentheses.
fn is_guid(s: &str) -> bool {
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .or_else(|| s.strip_prefix('(').and_then(|r| r.strip_suffix(')')))
        .unwrap_or(s);
    let b = inner.as_bytes();
    match b.len() {
        32 => b.iter().all(u8::is_ascii_hexdigit),
        36 => b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        }),
        _ => false,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM|±HHMM]` (no zone means UTC). `None` if it is
/// not that shape; such items are let through rather than refused with an invented message.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut pos = 19;
    let mut nanos: i64 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let digits = &s[start..pos];
        if digits.is_empty() {
            return None;
        }
        let mut padded: String = digits.chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
    }
    let offset_secs = match b.get(pos) {
        None => 0,
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hh = num(pos + 1, 2)?;
            let mm = match b.len() - pos {
                6 if b[pos + 3] == b':' => num(pos + 4, 2)?,
                5 => num(pos + 3, 2)?,
                _ => return None,
            };
            let secs = hh * 3600 + mm * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    // A date that does not exist (February 30) is not that shape either.
    let date = time::Date::from_calendar_date(
        i32::try_from(year).ok()?,
        time::Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let days = (date - time::OffsetDateTime::UNIX_EPOCH.date()).whole_days();
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(nanos.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert!(is_guid("c1f83947-938c-5e2a-82ff-804be07647bc"));
        assert!(is_guid("C1F83947938C5E2A82FF804BE07647BC"));
        assert!(is_guid("{c1f83947-938c-5e2a-82ff-804be07647bc}"));
        assert!(!is_guid("not-a-key"));
        assert!(!is_guid(""));
        assert!(!is_guid("c1f83947-938c-5e2a-82ff-804be07647bz"));
    }

    #[test]
    fn times() {
        let t = |s| {
            parse_rfc3339(s)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis())
        };
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("2020-09-22T10:12:53.208-0700"), Some(1_600_794_773_208));
        assert_eq!(t("2020-09-22T17:12:53.208+00:00"), Some(1_600_794_773_208));
        assert_eq!(t("2020-09-22T17:12:53.208123456Z"), Some(1_600_794_773_208));
        assert_eq!(t("yesterday"), None);
    }
}
