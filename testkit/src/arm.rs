//! Azure Resource Manager emulator for `Microsoft.Insights/components` (Application Insights
//! components), api-version 2020-02-02.
//!
//! Serves, at the root (a client drops any path prefix of a custom endpoint),
//! `PUT|GET|PATCH|DELETE /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Insights/components/{name}`
//! and the lists per subscription and per resource group, the way the service answers:
//! bearer tokens checked against an [`EntraEmulator`]'s registry, ARM's error shape
//! `{"error":{"code":...,"message":...}}`, create/update with generated `AppId`,
//! `InstrumentationKey` and `ConnectionString` that later PUTs keep, an etag that changes on
//! every PUT, 200 then 404 on DELETE (204 for a missing component), the request-id and
//! rate-limit headers on every answer. Path segments and names compare case-insensitively.
//!
//! On demand: faults (throttling with `Retry-After`, 5xx, delays) for the next requests,
//! asynchronous provisioning (`Creating` for the next GETs), 201 on create, slow deletes,
//! forbidden subscriptions, subscriptions bound to a tenant, the lowercased provider some
//! answers carry.
//!
//! When the emulator runs as a separate process (the `telemux-azure-emulator` binary), tests
//! reach it over HTTP under `/_emulator/` (not part of ARM): `GET /_emulator/components`,
//! `PUT /_emulator/components/{s}/{rg}/{name}` with a PUT body (pre-creates one),
//! `GET /_emulator/requests`, `DELETE /_emulator/records`, `PUT /_emulator/fault` with
//! `{"status":429,"retryAfterSeconds":5,"times":2,"method":"PUT"}` or `{"delayMs":5000}`,
//! `DELETE /_emulator/fault`, and `PUT /_emulator/provisioning` with
//! `{"gets":3,"outcome":"Succeeded"}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use axum::http::Method;

use crate::entra::{
    EntraEmulator, IssuedToken, TokenRegistry, TokenStatus, compact_timestamp, iso_ticks,
    iso_ticks_offset, lock, new_guid, pause, serve,
};

/// The only api-version served.
pub const API_VERSION: &str = "2020-02-02";
const PROVIDER: &str = "Microsoft.Insights";
const RESOURCE_TYPE: &str = "Microsoft.Insights/components";
/// Token audiences ARM accepts (compared without trailing slashes, case-insensitively).
const AUDIENCES: [&str; 2] = [
    "https://management.azure.com",
    "https://management.core.windows.net",
];
const RETENTION_DAYS: [i64; 9] = [30, 60, 90, 120, 180, 270, 365, 550, 730];
/// Hourly budgets behind the `x-ms-ratelimit-remaining-*` headers (never enforced).
const READS_PER_HOUR: u64 = 12_000;
const WRITES_PER_HOUR: u64 = 1_200;
const DELETES_PER_HOUR: u64 = 15_000;

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this status instead of handling the request, in ARM's error shape: 429
    /// `SubscriptionRequestsThrottled` (always with `Retry-After`, 1 s if not given), 500
    /// `InternalServerError`, 502 `BadGateway`, 503 `ServiceUnavailable`, 504
    /// `GatewayTimeout`, others with the status's reason as code. With `retry_after`, a
    /// `Retry-After: <seconds>` header.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Wait this long, then handle the request normally (a PUT still takes effect, as a slow
    /// ARM call completes after the client gave up). Ends early when the emulator stops.
    Delay(Duration),
}

/// A fault for the next requests to the ARM API (not the `/_emulator/` control API). Faults
/// apply before authentication and validation, to any request of the API's paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Only requests with this method; `None`: any.
    pub method: Option<Method>,
    /// How many requests it applies to; `None`: until cleared.
    pub times: Option<usize>,
}

impl Fault {
    /// 429 `SubscriptionRequestsThrottled` with `Retry-After` (whole seconds).
    pub fn throttled(retry_after: Duration) -> Fault {
        Fault::status(429).retry_after(retry_after)
    }

    /// 500 `InternalServerError`.
    pub fn internal_error() -> Fault {
        Fault::status(500)
    }

    /// 503 `ServiceUnavailable`.
    pub fn unavailable() -> Fault {
        Fault::status(503)
    }

    pub fn status(code: u16) -> Fault {
        Fault {
            kind: FaultKind::Status {
                code,
                retry_after: None,
            },
            method: None,
            times: None,
        }
    }

    /// Hangs each matching request for `duration` before answering it normally.
    pub fn delay(duration: Duration) -> Fault {
        Fault {
            kind: FaultKind::Delay(duration),
            method: None,
            times: None,
        }
    }

    /// Adds `Retry-After` to a status fault (no effect on a delay).
    pub fn retry_after(mut self, after: Duration) -> Fault {
        if let FaultKind::Status { retry_after, .. } = &mut self.kind {
            *retry_after = Some(after);
        }
        self
    }

    pub fn times(mut self, n: usize) -> Fault {
        self.times = Some(n);
        self
    }

    pub fn only(mut self, method: Method) -> Fault {
        self.method = Some(method);
        self
    }
}

/// A stored component, as a GET would answer it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    /// The full resource JSON (`id`, `name`, `type`, `location`, `tags`, `kind`, `etag`,
    /// `properties`).
    pub resource: Value,
}

impl Component {
    pub fn id(&self) -> Option<&str> {
        self.resource.get("id")?.as_str()
    }

    /// `properties.<name>`.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.resource.get("properties")?.get(name)
    }

    fn property_str(&self, name: &str) -> Option<&str> {
        self.property(name)?.as_str()
    }

    pub fn app_id(&self) -> Option<&str> {
        self.property_str("AppId")
    }

    pub fn instrumentation_key(&self) -> Option<&str> {
        self.property_str("InstrumentationKey")
    }

    pub fn connection_string(&self) -> Option<&str> {
        self.property_str("ConnectionString")
    }

    pub fn provisioning_state(&self) -> Option<&str> {
        self.property_str("provisioningState")
    }

    pub fn etag(&self) -> Option<&str> {
        self.resource.get("etag")?.as_str()
    }

    pub fn location(&self) -> Option<&str> {
        self.resource.get("location")?.as_str()
    }

    pub fn kind(&self) -> Option<&str> {
        self.resource.get("kind")?.as_str()
    }

    pub fn tags(&self) -> Option<&Map<String, Value>> {
        self.resource.get("tags")?.as_object()
    }
}

/// One request to the ARM API the emulator answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    /// The body, if it was JSON.
    pub body: Option<Value>,
    pub status: u16,
    /// `error.code` of an error answer.
    pub error_code: Option<String>,
    /// The `appid` of the bearer token, when it was valid.
    pub client_id: Option<String>,
    /// The answer came from an injected status fault.
    pub faulted: bool,
    pub at: SystemTime,
}

/// Errors of the emulator's own helpers (not of the emulated protocol).
#[derive(Debug, thiserror::Error)]
pub enum ArmEmulatorError {
    /// What the service would have answered to the equivalent PUT.
    #[error("{status} {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
}

/// (lowercased subscription, resource group, name).
type Key = (String, String, String);

struct Stored {
    subscription_id: String,
    resource_group: String,
    name: String,
    /// The resource with its settled `provisioningState`.
    resource: Value,
    /// Identifies this instance: a delete finishing late must not remove a re-created one.
    instance: u64,
    /// `Some(n)`: still provisioning; n more GETs report `Creating`.
    pending_gets: Option<usize>,
    deleting: bool,
}

struct Config {
    faults: Vec<Fault>,
    provisioning_gets: usize,
    provisioning_outcome: String,
    create_status: u16,
    delete_delay: Duration,
    ingestion_endpoint: Option<String>,
    /// Lowercased subscription ids.
    forbidden: HashSet<String>,
    /// Lowercased subscription id → tenant.
    subscription_tenants: HashMap<String, String>,
    lowercase_provider: bool,
}

#[derive(Default)]
struct Store {
    components: BTreeMap<Key, Stored>,
    next_instance: u64,
}

#[derive(Default, Clone, Copy)]
struct Usage {
    reads: u64,
    writes: u64,
    deletes: u64,
}

#[derive(Default)]
struct Recorded {
    requests: Vec<ArmRequest>,
    /// Per lowercased subscription.
    usage: HashMap<String, Usage>,
}

struct Shared {
    config: Mutex<Config>,
    store: Mutex<Store>,
    recorded: Mutex<Recorded>,
    tokens: TokenRegistry,
    authority: String,
    events: broadcast::Sender<ArmRequest>,
    closing: watch::Receiver<bool>,
}

/// The running emulator; stops when dropped or on [`ArmEmulator::shutdown`].
pub struct ArmEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl ArmEmulator {
    /// Serves on 127.0.0.1 on a free port, accepting the tokens `entra` issues.
    pub async fn start(entra: &EntraEmulator) -> std::io::Result<ArmEmulator> {
        Self::start_on(entra, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(entra: &EntraEmulator, addr: SocketAddr) -> std::io::Result<ArmEmulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(4096);
        let (stop, closing) = watch::channel(false);
        let shared = Arc::new(Shared {
            config: Mutex::new(Config {
                faults: Vec::new(),
                provisioning_gets: 0,
                provisioning_outcome: "Succeeded".to_string(),
                create_status: 200,
                delete_delay: Duration::ZERO,
                ingestion_endpoint: None,
                forbidden: HashSet::new(),
                subscription_tenants: HashMap::new(),
                lowercase_provider: false,
            }),
            store: Mutex::new(Store::default()),
            recorded: Mutex::new(Recorded::default()),
            tokens: entra.tokens(),
            authority: entra.endpoint(),
            events,
            closing: closing.clone(),
        });
        let app = Router::new()
            .route("/_emulator/components", get(control_components))
            .route(
                "/_emulator/components/{subscription}/{group}/{name}",
                put(control_insert),
            )
            .route("/_emulator/requests", get(control_requests))
            .route("/_emulator/records", delete(control_reset))
            .route(
                "/_emulator/fault",
                put(control_set_fault).delete(control_clear_fault),
            )
            .route("/_emulator/provisioning", put(control_provisioning))
            .fallback(arm_api)
            .with_state(shared.clone());
        let server = tokio::spawn(serve(listener, app, closing));
        Ok(ArmEmulator {
            addr,
            shared,
            stop,
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash), the resource manager endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of one component, with the api-version.
    pub fn component_url(&self, subscription_id: &str, resource_group: &str, name: &str) -> String {
        format!(
            "{}{}?api-version={API_VERSION}",
            self.endpoint(),
            resource_id(subscription_id, resource_group, name, false)
        )
    }

    /// Every stored component (sorted by subscription, group, name), as GETs would answer
    /// them now; reading them does not advance asynchronous provisioning.
    pub fn components(&self) -> Vec<Component> {
        let lowercase = lock(&self.shared.config).lowercase_provider;
        lock(&self.shared.store)
            .components
            .values()
            .map(|s| s.to_component(lowercase))
            .collect()
    }

    pub fn component(
        &self,
        subscription_id: &str,
        resource_group: &str,
        name: &str,
    ) -> Option<Component> {
        let lowercase = lock(&self.shared.config).lowercase_provider;
        lock(&self.shared.store)
            .components
            .get(&key(subscription_id, resource_group, name))
            .map(|s| s.to_component(lowercase))
    }

    /// Pre-creates (or replaces) a component, as if an earlier PUT had created it: `body` is a
    /// PUT body, validated the same way. Unlike a PUT, read-only properties in it
    /// (`AppId`, `InstrumentationKey`, `ConnectionString`, `CreationDate`, `TenantId`,
    /// `provisioningState`) are kept, for adoption tests that need known values. It is
    /// provisioned at once.
    pub fn insert_component(
        &self,
        subscription_id: &str,
        resource_group: &str,
        name: &str,
        body: &Value,
    ) -> Result<Component, ArmEmulatorError> {
        insert(&self.shared, subscription_id, resource_group, name, body).map_err(|e| {
            ArmEmulatorError::Rejected {
                status: e.status,
                code: e.code.to_string(),
                message: e.message,
            }
        })
    }

    /// Removes a component at once, without a request.
    pub fn remove_component(
        &self,
        subscription_id: &str,
        resource_group: &str,
        name: &str,
    ) -> bool {
        lock(&self.shared.store)
            .components
            .remove(&key(subscription_id, resource_group, name))
            .is_some()
    }

    pub fn requests(&self) -> Vec<ArmRequest> {
        lock(&self.shared.recorded).requests.clone()
    }

    /// Number of requests answered with this method (any status).
    pub fn count(&self, method: Method) -> usize {
        lock(&self.shared.recorded)
            .requests
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// Forgets recorded requests (components, faults and settings stay).
    pub fn reset(&self) {
        *lock(&self.shared.recorded) = Recorded::default();
    }

    /// Live feed of answered requests (for logging); slow readers lose old records.
    pub fn subscribe(&self) -> broadcast::Receiver<ArmRequest> {
        self.shared.events.subscribe()
    }

    /// Replaces any faults with this one.
    pub fn set_fault(&self, fault: Fault) {
        let mut config = lock(&self.shared.config);
        config.faults.clear();
        config.faults.push(fault);
    }

    /// Adds a fault after the existing ones; the first that matches a request applies.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.shared.config).faults.push(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.config).faults.clear();
    }

    /// Components created from now on answer `provisioningState: "Creating"` to their PUT and
    /// to the next `gets` GETs, then the outcome (default `Succeeded`). 0 (the default):
    /// settled at once, as the service normally answers.
    pub fn set_provisioning_gets(&self, gets: usize) {
        lock(&self.shared.config).provisioning_gets = gets;
    }

    /// The state asynchronous provisioning ends in (`Succeeded`, or e.g. `Failed`).
    pub fn set_provisioning_outcome(&self, state: &str) {
        lock(&self.shared.config).provisioning_outcome = state.to_string();
    }

    /// Status of a creating PUT: 200 (default, as today's service) or 201 (as it answered for a
    /// while).
    pub fn set_create_status(&self, status: u16) {
        lock(&self.shared.config).create_status = if status == 201 { 201 } else { 200 };
    }

    /// How long a DELETE of an existing component takes (default none; the service takes
    /// seconds). Meanwhile GETs show it with `provisioningState: "Deleting"`.
    pub fn set_delete_delay(&self, delay: Duration) {
        lock(&self.shared.config).delete_delay = delay;
    }

    /// `IngestionEndpoint` of the connection strings of components created from now on
    /// (e.g. an `IngestionEmulator`'s endpoint); `None`: the regional
    /// `https://<location>-0.in.applicationinsights.azure.com/`.
    pub fn set_ingestion_endpoint(&self, endpoint: Option<&str>) {
        lock(&self.shared.config).ingestion_endpoint = endpoint.map(str::to_string);
    }

    /// Requests on this subscription get 403 `AuthorizationFailed`.
    pub fn forbid_subscription(&self, subscription_id: &str) {
        lock(&self.shared.config)
            .forbidden
            .insert(subscription_id.to_ascii_lowercase());
    }

    pub fn allow_subscription(&self, subscription_id: &str) {
        lock(&self.shared.config)
            .forbidden
            .remove(&subscription_id.to_ascii_lowercase());
    }

    /// The subscription belongs to `tenant`: tokens of another tenant get 401
    /// `InvalidAuthenticationTokenTenant`. Unbound subscriptions accept any tenant.
    pub fn bind_subscription(&self, subscription_id: &str, tenant: &str) {
        lock(&self.shared.config)
            .subscription_tenants
            .insert(subscription_id.to_ascii_lowercase(), tenant.to_string());
    }

    /// Answer ids and types with the provider lowercased (`microsoft.insights/components`), as
    /// the service sometimes does.
    pub fn set_lowercase_provider(&self, lowercase: bool) {
        lock(&self.shared.config).lowercase_provider = lowercase;
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        match self.server.take() {
            Some(server) => server.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for ArmEmulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn key(subscription_id: &str, resource_group: &str, name: &str) -> Key {
    (
        subscription_id.to_ascii_lowercase(),
        resource_group.to_ascii_lowercase(),
        name.to_ascii_lowercase(),
    )
}

fn resource_id(subscription_id: &str, resource_group: &str, name: &str, lowercase: bool) -> String {
    let provider = if lowercase {
        PROVIDER.to_ascii_lowercase()
    } else {
        PROVIDER.to_string()
    };
    format!(
        "/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/{provider}/components/{name}"
    )
}

impl Stored {
    fn state(&self) -> Option<&'static str> {
        if self.deleting {
            Some("Deleting")
        } else if self.pending_gets.is_some() {
            Some("Creating")
        } else {
            None
        }
    }

    fn render(&self, lowercase: bool) -> Value {
        let mut resource = self.resource.clone();
        if let Some(state) = self.state()
            && let Some(props) = resource
                .get_mut("properties")
                .and_then(Value::as_object_mut)
        {
            props.insert("provisioningState".into(), json!(state));
        }
        if lowercase && let Some(obj) = resource.as_object_mut() {
            obj.insert(
                "id".into(),
                json!(resource_id(
                    &self.subscription_id,
                    &self.resource_group,
                    &self.name,
                    true
                )),
            );
            obj.insert("type".into(), json!(RESOURCE_TYPE.to_ascii_lowercase()));
        }
        resource
    }

    fn to_component(&self, lowercase: bool) -> Component {
        Component {
            subscription_id: self.subscription_id.clone(),
            resource_group: self.resource_group.clone(),
            name: self.name.clone(),
            resource: self.render(lowercase),
        }
    }
}

/// An error answer in ARM's shape.
#[derive(Debug)]
struct ArmError {
    status: u16,
    code: &'static str,
    message: String,
}

impl ArmError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> ArmError {
        ArmError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_content(detail: impl std::fmt::Display) -> ArmError {
        ArmError::new(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{detail}'."),
        )
    }

    fn bad_request(message: impl Into<String>) -> ArmError {
        ArmError::new(400, "BadRequest", message)
    }

    fn missing(property: &str) -> ArmError {
        ArmError::bad_request(format!(
            "Value cannot be null.\r\nParameter name: '{property}' property must be specified"
        ))
    }
}

/// What to answer, before the common headers are added.
struct Answer {
    status: u16,
    body: Option<Value>,
    error_code: Option<String>,
    retry_after: Option<u64>,
    www_authenticate: Option<String>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: Some(body),
            error_code: None,
            retry_after: None,
            www_authenticate: None,
        }
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status,
            body: None,
            error_code: None,
            retry_after: None,
            www_authenticate: None,
        }
    }
}

impl From<ArmError> for Answer {
    fn from(e: ArmError) -> Answer {
        Answer {
            status: e.status,
            body: Some(json!({"error": {"code": e.code, "message": e.message}})),
            error_code: Some(e.code.to_string()),
            retry_after: None,
            www_authenticate: None,
        }
    }
}

/// The ARM paths served.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    List {
        subscription_id: String,
        resource_group: Option<String>,
    },
    Component {
        subscription_id: String,
        resource_group: String,
        name: String,
    },
}

impl Route {
    fn subscription_id(&self) -> &str {
        match self {
            Route::List {
                subscription_id, ..
            }
            | Route::Component {
                subscription_id, ..
            } => subscription_id,
        }
    }

    /// The authorization scope, as ARM names it in `AuthorizationFailed`.
    fn scope(&self) -> String {
        match self {
            Route::List {
                subscription_id,
                resource_group: None,
            } => format!("/subscriptions/{subscription_id}"),
            Route::List {
                subscription_id,
                resource_group: Some(rg),
            } => format!("/subscriptions/{subscription_id}/resourceGroups/{rg}"),
            Route::Component {
                subscription_id,
                resource_group,
                name,
            } => resource_id(subscription_id, resource_group, name, false),
        }
    }
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_route(path: &str) -> Option<Route> {
    let trimmed = path.strip_prefix('/')?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segments: Vec<String> = trimmed.split('/').map(percent_decode).collect();
    if segments.iter().any(String::is_empty) {
        return None;
    }
    let is = |i: usize, literal: &str| {
        segments
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(literal))
    };
    if !is(0, "subscriptions") {
        return None;
    }
    let subscription_id = segments.get(1)?.clone();
    let (resource_group, rest) = if is(2, "resourceGroups") {
        (Some(segments.get(3)?.clone()), 4)
    } else {
        (None, 2)
    };
    if !(is(rest, "providers") && is(rest + 1, PROVIDER) && is(rest + 2, "components")) {
        return None;
    }
    match (segments.len() - rest, resource_group) {
        (3, resource_group) => Some(Route::List {
            subscription_id,
            resource_group,
        }),
        (4, Some(resource_group)) => Some(Route::Component {
            subscription_id,
            resource_group,
            name: segments.get(rest + 3)?.clone(),
        }),
        _ => None,
    }
}

/// Takes the first fault matching `method`, counting it down.
fn take_fault(shared: &Shared, method: &Method) -> Option<FaultKind> {
    let mut config = lock(&shared.config);
    let index = config
        .faults
        .iter()
        .position(|f| f.method.as_ref().is_none_or(|m| m == method) && f.times != Some(0))?;
    let fault = &mut config.faults[index];
    let kind = fault.kind.clone();
    if let Some(n) = &mut fault.times {
        *n -= 1;
        if *n == 0 {
            config.faults.remove(index);
        }
    }
    Some(kind)
}

fn fault_answer(code: u16, retry_after: Option<Duration>, route: Option<&Route>) -> Answer {
    let now = SystemTime::now();
    let subscription = route.map_or("", Route::subscription_id);
    let retry_after = match (code, retry_after) {
        (_, Some(d)) => Some(d.as_secs().max(1)),
        (429, None) => Some(1),
        _ => None,
    };
    let error = match code {
        429 => ArmError::new(
            429,
            "SubscriptionRequestsThrottled",
            format!(
                "Number of requests for subscription '{subscription}' exceeded the limit. \
                 Please try again after '{}' seconds.",
                retry_after.unwrap_or(1)
            ),
        ),
        500 => ArmError::new(
            500,
            "InternalServerError",
            format!(
                "Encountered internal server error. Diagnostic information: timestamp '{}', \
                 subscription id '{subscription}', tracking id '{}', request correlation id \
                 '{}'.",
                compact_timestamp(now),
                new_guid(),
                new_guid()
            ),
        ),
        502 => ArmError::new(
            502,
            "BadGateway",
            "The gateway received an invalid response from 'Microsoft.Insights'.",
        ),
        503 => ArmError::new(
            503,
            "ServiceUnavailable",
            "The service is currently unavailable. Please try again later.",
        ),
        504 => ArmError::new(
            504,
            "GatewayTimeout",
            "The gateway did not receive a response from 'Microsoft.Insights' within the \
             specified time period.",
        ),
        other => {
            let reason = StatusCode::from_u16(other)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let code: String = reason.split_whitespace().collect();
            return Answer {
                status: other,
                body: Some(json!({"error": {"code": code, "message": reason}})),
                error_code: Some(code),
                retry_after,
                www_authenticate: None,
            };
        }
    };
    let mut answer = Answer::from(error);
    answer.retry_after = retry_after;
    answer
}

fn unauthorized(code: &'static str, message: String, description: &str, authority: &str) -> Answer {
    let mut answer = Answer::from(ArmError::new(401, code, message));
    answer.www_authenticate = Some(format!(
        "Bearer authorization_uri=\"{authority}/\", error=\"invalid_token\", \
         error_description=\"{description}\""
    ));
    answer
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<IssuedToken, Answer> {
    let authority = shared.authority.as_str();
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
            "The authentication failed because of missing 'Authorization' header.",
            authority,
        ));
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    });
    let Some(token) = token else {
        return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format."
                .into(),
            "The authentication failed because of invalid 'Authorization' header.",
            authority,
        ));
    };
    match shared.tokens.status(token) {
        TokenStatus::Unknown => Err(unauthorized(
            "InvalidAuthenticationToken",
            "The access token is invalid.".into(),
            "The access token is invalid.",
            authority,
        )),
        TokenStatus::Expired(t) => Err(unauthorized(
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                us_time(t.expires_at),
                us_time(SystemTime::now())
            ),
            "The access token has expired.",
            authority,
        )),
        TokenStatus::Valid(t) => {
            let audience = t.audience.trim_end_matches('/');
            if AUDIENCES.iter().any(|a| a.eq_ignore_ascii_case(audience)) {
                Ok(t)
            } else {
                Err(unauthorized(
                    "InvalidAuthenticationTokenAudience",
                    format!(
                        "The access token has been obtained for wrong audience or resource '{}'. \
                         It should exactly match with one of the allowed audiences \
                         'https://management.core.windows.net/','https://management.core.windows.net',\
                         'https://management.azure.com/','https://management.azure.com'.",
                        t.audience
                    ),
                    "The access token has been obtained for wrong audience or resource.",
                    authority,
                ))
            }
        }
    }
}

/// `6/4/2024 11:40:28 AM`, .NET's invariant form that ARM puts in token messages.
fn us_time(t: SystemTime) -> String {
    // Reuse the ISO form's fields rather than a second calendar routine.
    let iso = iso_ticks(t);
    let field = |from: usize, to: usize| {
        iso.get(from..to)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (year, month, day) = (field(0, 4), field(5, 7), field(8, 10));
    let (hour, minute, second) = (field(11, 13), field(14, 16), field(17, 19));
    let (h12, meridiem) = match hour {
        0 => (12, "AM"),
        1..=11 => (hour, "AM"),
        12 => (12, "PM"),
        _ => (hour - 12, "PM"),
    };
    format!("{month}/{day}/{year} {h12}:{minute:02}:{second:02} {meridiem}")
}

fn check_api_version(query: Option<&str>) -> Result<(), ArmError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let version = pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty());
    match version {
        None => Err(ArmError::new(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(API_VERSION) => Ok(()),
        Some(other) => Err(ArmError::new(
            400,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{other}' is invalid. The supported versions are '{API_VERSION}'."
            ),
        )),
    }
}

fn authorize(
    shared: &Shared,
    route: &Route,
    method: &Method,
    token: &IssuedToken,
) -> Result<(), Answer> {
    let subscription = route.subscription_id().to_ascii_lowercase();
    let (bound, forbidden) = {
        let config = lock(&shared.config);
        (
            config.subscription_tenants.get(&subscription).cloned(),
            config.forbidden.contains(&subscription),
        )
    };
    if let Some(tenant) = bound
        && !tenant.eq_ignore_ascii_case(&token.tenant)
    {
        return Err(unauthorized(
            "InvalidAuthenticationTokenTenant",
            format!(
                "The access token is from the wrong issuer 'https://sts.windows.net/{}/'. It must \
                 match the tenant 'https://sts.windows.net/{tenant}/' associated with this \
                 subscription. Please use the authority (URL) '{}/{tenant}' to get the token. \
                 Note, if the subscription is transferred to another tenant there is no impact \
                 to the services, but information about new tenant could take time to propagate \
                 (up to an hour). If you just transferred your subscription and see this error \
                 message, please try back later.",
                token.tenant, shared.authority
            ),
            "The access token is from the wrong issuer.",
            &shared.authority,
        ));
    }
    if forbidden {
        let action = match *method {
            Method::GET => "read",
            Method::DELETE => "delete",
            _ => "write",
        };
        return Err(ArmError::new(
            403,
            "AuthorizationFailed",
            format!(
                "The client '{}' with object id '{}' does not have authorization to perform \
                 action '{RESOURCE_TYPE}/{action}' over scope '{}' or the scope is invalid. If \
                 access was recently granted, please refresh your credentials.",
                token.client_id,
                token.object_id,
                route.scope()
            ),
        )
        .into());
    }
    Ok(())
}

async fn arm_api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = SystemTime::now();
    let path = uri.path().to_string();
    let route = parse_route(&path);
    let mut record = ArmRequest {
        method: method.clone(),
        path,
        query: uri.query().map(str::to_string),
        body: serde_json::from_slice(&body).ok(),
        status: 0,
        error_code: None,
        client_id: None,
        faulted: false,
        at,
    };
    // Handled in a task of its own, so a request whose client gave up (a timeout during a
    // delay fault) still completes, as an ARM operation does.
    let task = tokio::spawn(async move {
        let answer = handle(&shared, route.as_ref(), &headers, &body, &mut record).await;
        respond(&shared, &headers, route.as_ref(), record, answer)
    });
    task.await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn handle(
    shared: &Shared,
    route: Option<&Route>,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut ArmRequest,
) -> Answer {
    let method = record.method.clone();
    match take_fault(shared, &method) {
        Some(FaultKind::Status { code, retry_after }) => {
            record.faulted = true;
            return fault_answer(code, retry_after, route);
        }
        Some(FaultKind::Delay(duration)) => pause(&shared.closing, duration).await,
        None => {}
    }
    let token = match authenticate(shared, headers) {
        Ok(token) => token,
        Err(answer) => return answer,
    };
    record.client_id = Some(token.client_id.clone());
    let Some(route) = route else {
        return ArmError::new(
            404,
            "NotFound",
            format!(
                "No HTTP resource was found that matches the request URI '{}'.",
                record.path
            ),
        )
        .into();
    };
    if let Err(e) = check_api_version(record.query.as_deref()) {
        return e.into();
    }
    if let Err(answer) = authorize(shared, route, &method, &token) {
        return answer;
    }
    let not_allowed = || {
        Answer::from(ArmError::new(
            405,
            "MethodNotAllowed",
            format!("The requested resource does not support http method '{method}'."),
        ))
    };
    match route {
        Route::List {
            subscription_id,
            resource_group,
        } => {
            if method != Method::GET {
                return not_allowed();
            }
            list(shared, subscription_id, resource_group.as_deref())
        }
        Route::Component {
            subscription_id,
            resource_group,
            name,
        } => match method {
            Method::GET => get_component(shared, subscription_id, resource_group, name),
            Method::PUT => {
                put_component(shared, subscription_id, resource_group, name, body, &token)
                    .unwrap_or_else(Answer::from)
            }
            Method::PATCH => patch_component(shared, subscription_id, resource_group, name, body)
                .unwrap_or_else(Answer::from),
            Method::DELETE => delete_component(shared, subscription_id, resource_group, name).await,
            _ => not_allowed(),
        },
    }
}

/// Adds ARM's headers, records the request and builds the response.
fn respond(
    shared: &Shared,
    request_headers: &HeaderMap,
    route: Option<&Route>,
    mut record: ArmRequest,
    answer: Answer,
) -> Response {
    record.status = answer.status;
    record.error_code = answer.error_code.clone();
    let (budget, remaining) = {
        let mut recorded = lock(&shared.recorded);
        let spent = route.map(|r| {
            let usage = recorded
                .usage
                .entry(r.subscription_id().to_ascii_lowercase())
                .or_default();
            match record.method {
                Method::GET => {
                    usage.reads += 1;
                    ("reads", READS_PER_HOUR.saturating_sub(usage.reads))
                }
                Method::DELETE => {
                    usage.deletes += 1;
                    ("deletes", DELETES_PER_HOUR.saturating_sub(usage.deletes))
                }
                _ => {
                    usage.writes += 1;
                    ("writes", WRITES_PER_HOUR.saturating_sub(usage.writes))
                }
            }
        });
        recorded.requests.push(record.clone());
        match spent {
            Some((kind, left)) => (Some(kind), left),
            None => (None, 0),
        }
    };
    tracing::debug!(
        method = %record.method, path = %record.path, status = record.status,
        code = ?record.error_code, "arm emulator: request"
    );
    // No subscribers is normal; the send error only says so.
    let _ = shared.events.send(record);

    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match answer.body {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => (status, Body::empty()).into_response(),
    };
    let now = SystemTime::now();
    let request_id = new_guid();
    let correlation = request_headers
        .get("x-ms-correlation-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(new_guid, str::to_string);
    let headers = response.headers_mut();
    let mut set = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    };
    set("x-ms-request-id", &request_id);
    set("x-ms-correlation-request-id", &correlation);
    set(
        "x-ms-routing-request-id",
        &format!("EMULATOR:{}:{request_id}", compact_timestamp(now)),
    );
    if let Some(client) = request_headers
        .get("x-ms-client-request-id")
        .and_then(|v| v.to_str().ok())
    {
        set("x-ms-client-request-id", client);
    }
    if let Some(kind) = budget {
        set(
            &format!("x-ms-ratelimit-remaining-subscription-{kind}"),
            &remaining.to_string(),
        );
        set(
            &format!("x-ms-ratelimit-remaining-subscription-global-{kind}"),
            &remaining.to_string(),
        );
    }
    set("cache-control", "no-cache");
    set("pragma", "no-cache");
    set("expires", "-1");
    if let Some(after) = answer.retry_after {
        set("retry-after", &after.to_string());
    }
    if let Some(challenge) = &answer.www_authenticate {
        set("www-authenticate", challenge);
    }
    response
}

fn list(shared: &Shared, subscription_id: &str, resource_group: Option<&str>) -> Answer {
    let lowercase = lock(&shared.config).lowercase_provider;
    let sub = subscription_id.to_ascii_lowercase();
    let rg = resource_group.map(str::to_ascii_lowercase);
    let value: Vec<Value> = lock(&shared.store)
        .components
        .iter()
        .filter(|((s, g, _), _)| *s == sub && rg.as_ref().is_none_or(|rg| rg == g))
        .map(|(_, stored)| stored.render(lowercase))
        .collect();
    Answer::json(200, json!({"value": value, "nextLink": null}))
}

fn not_found(resource_group: &str, name: &str) -> ArmError {
    ArmError::new(
        404,
        "ResourceNotFound",
        format!(
            "The Resource '{RESOURCE_TYPE}/{name}' under resource group '{resource_group}' was \
             not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn get_component(
    shared: &Shared,
    subscription_id: &str,
    resource_group: &str,
    name: &str,
) -> Answer {
    let lowercase = lock(&shared.config).lowercase_provider;
    let mut store = lock(&shared.store);
    let Some(stored) = store
        .components
        .get_mut(&key(subscription_id, resource_group, name))
    else {
        return not_found(resource_group, name).into();
    };
    let body = stored.render(lowercase);
    // This GET was one of those that report "Creating".
    if let Some(left) = stored.pending_gets {
        stored.pending_gets = left.checked_sub(1).filter(|n| *n > 0);
    }
    Answer::json(200, body)
}

/// How a writable property is checked.
enum Kind {
    Bool,
    Text,
    Retention,
    Sampling,
    Choice(&'static [&'static str]),
    Workspace,
}

const WRITABLE: &[(&str, Kind)] = &[
    ("WorkspaceResourceId", Kind::Workspace),
    (
        "IngestionMode",
        Kind::Choice(&[
            "ApplicationInsights",
            "ApplicationInsightsWithDiagnosticSettings",
            "LogAnalytics",
        ]),
    ),
    ("RetentionInDays", Kind::Retention),
    ("DisableLocalAuth", Kind::Bool),
    ("SamplingPercentage", Kind::Sampling),
    (
        "publicNetworkAccessForIngestion",
        Kind::Choice(&["Enabled", "Disabled"]),
    ),
    (
        "publicNetworkAccessForQuery",
        Kind::Choice(&["Enabled", "Disabled"]),
    ),
    ("DisableIpMasking", Kind::Bool),
    ("ImmediatePurgeDataOn30Days", Kind::Bool),
    ("ForceCustomerStorageForProfiler", Kind::Bool),
    ("Flow_Type", Kind::Text),
    ("Request_Source", Kind::Text),
    ("HockeyAppId", Kind::Text),
];

/// Read-only properties a PUT may carry (ignored) and `insert_component` honours.
const SETTABLE_READ_ONLY: &[&str] = &[
    "AppId",
    "InstrumentationKey",
    "ConnectionString",
    "CreationDate",
    "TenantId",
    "provisioningState",
];

/// A validated PUT body.
struct PutSpec {
    location: String,
    kind: String,
    tags: Map<String, Value>,
    application_type: String,
    writable: Vec<(&'static str, Value)>,
    read_only: Vec<(&'static str, Value)>,
}

fn type_error(name: &str, value: &Value, expected: &str) -> ArmError {
    ArmError::bad_content(format!(
        "Error converting value {value} to type '{expected}'. Path 'properties.{name}'"
    ))
}

fn check_property(name: &'static str, kind: &Kind, value: &Value) -> Result<Value, ArmError> {
    match kind {
        Kind::Bool => value
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| type_error(name, value, "System.Boolean")),
        Kind::Text => value
            .as_str()
            .map(|s| json!(s))
            .ok_or_else(|| type_error(name, value, "System.String")),
        Kind::Retention => {
            let days = value
                .as_i64()
                .ok_or_else(|| type_error(name, value, "System.Int32"))?;
            if RETENTION_DAYS.contains(&days) {
                Ok(json!(days))
            } else {
                Err(ArmError::bad_request(format!(
                    "RetentionInDays value {days} is not valid. Valid values are 30, 60, 90, \
                     120, 180, 270, 365, 550 and 730."
                )))
            }
        }
        Kind::Sampling => {
            let pct = value
                .as_f64()
                .ok_or_else(|| type_error(name, value, "System.Double"))?;
            if pct > 0.0 && pct <= 100.0 {
                Ok(json!(pct))
            } else {
                Err(ArmError::bad_request(format!(
                    "SamplingPercentage value {pct} is not valid. It must be greater than 0 and \
                     at most 100."
                )))
            }
        }
        Kind::Choice(allowed) => {
            let s = value
                .as_str()
                .ok_or_else(|| type_error(name, value, "System.String"))?;
            allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(s))
                .map(|a| json!(a))
                .ok_or_else(|| {
                    ArmError::bad_request(format!(
                        "The value '{s}' is not valid for '{name}'. Allowed values: {}.",
                        allowed.join(", ")
                    ))
                })
        }
        Kind::Workspace => {
            let s = value
                .as_str()
                .ok_or_else(|| type_error(name, value, "System.String"))?;
            let lower = s.to_ascii_lowercase();
            if lower.starts_with("/subscriptions/")
                && lower.contains("/resourcegroups/")
                && lower.contains("/providers/microsoft.operationalinsights/workspaces/")
                && !lower.ends_with('/')
            {
                Ok(json!(s))
            } else {
                Err(ArmError::bad_request(format!(
                    "The WorkspaceResourceId '{s}' is not a valid Log Analytics workspace \
                     resource id."
                )))
            }
        }
    }
}

/// Validates a PUT body like the service: JSON object, `location`, `kind`, `properties` with
/// `Application_Type`, typed writable properties. Property names compare case-insensitively.
fn parse_put(body: &Value) -> Result<PutSpec, ArmError> {
    let Some(obj) = body.as_object() else {
        return Err(ArmError::bad_content(format!(
            "Cannot deserialize {body} into the resource definition."
        )));
    };
    let field = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    };
    let location = match field("location") {
        None => {
            return Err(ArmError::new(
                400,
                "LocationRequired",
                "The location property is required for this definition.",
            ));
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(ArmError::new(
                400,
                "LocationRequired",
                "The location property is required for this definition.",
            ));
        }
        Some(other) => return Err(ArmError::bad_content(format!("Invalid location {other}"))),
    };
    let kind = match field("kind") {
        None => return Err(ArmError::missing("kind")),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(ArmError::missing("kind")),
        Some(other) => return Err(ArmError::bad_content(format!("Invalid kind {other}"))),
    };
    let tags = match field("tags") {
        None => Map::new(),
        Some(Value::Object(tags)) => {
            if let Some((k, v)) = tags.iter().find(|(_, v)| !v.is_string()) {
                return Err(ArmError::bad_content(format!(
                    "Error converting value {v} to type 'System.String'. Path 'tags.{k}'"
                )));
            }
            tags.clone()
        }
        Some(other) => {
            return Err(ArmError::bad_content(format!(
                "Error converting value {other} to type 'Dictionary<string, string>'. Path 'tags'"
            )));
        }
    };
    let props = match field("properties") {
        None => return Err(ArmError::missing("properties")),
        Some(Value::Object(props)) => props,
        Some(other) => {
            return Err(ArmError::bad_content(format!(
                "Error converting value {other} to type 'ApplicationInsightsComponentProperties'. \
                 Path 'properties'"
            )));
        }
    };
    let prop = |name: &str| {
        props
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    };
    let application_type = match prop("Application_Type") {
        None => return Err(ArmError::missing("Application_Type")),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            t @ ("web" | "other") => t.to_string(),
            _ => {
                return Err(ArmError::bad_request(format!(
                    "The value '{s}' is not valid for 'Application_Type'. Allowed values: web, \
                     other."
                )));
            }
        },
        Some(other) => return Err(type_error("Application_Type", other, "System.String")),
    };
    let mut writable = Vec::new();
    for (name, kind) in WRITABLE {
        if let Some(value) = prop(name) {
            writable.push((*name, check_property(name, kind, value)?));
        }
    }
    let read_only = SETTABLE_READ_ONLY
        .iter()
        .filter_map(|name| prop(name).map(|v| (*name, v.clone())))
        .collect();
    Ok(PutSpec {
        location,
        kind,
        tags,
        application_type,
        writable,
        read_only,
    })
}

/// `South Central US` → `southcentralus`, how regions compare and appear in endpoints.
fn region(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn new_etag() -> String {
    let salt: u32 = rand::random();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "\"{salt:08x}-0000-0100-0000-{:08x}0000\"",
        secs & 0xffff_ffff
    )
}

fn connection_string(ikey: &str, app_id: &str, location: &str, ingestion: Option<&str>) -> String {
    let region = region(location);
    let ingestion = ingestion.map_or_else(
        || format!("https://{region}-0.in.applicationinsights.azure.com/"),
        str::to_string,
    );
    format!(
        "InstrumentationKey={ikey};IngestionEndpoint={ingestion};LiveEndpoint=https://{region}.livediagnostics.monitor.azure.com/;ApplicationId={app_id}"
    )
}

/// Keys and dates a new component gets.
struct Identity {
    app_id: String,
    instrumentation_key: String,
    connection_string: String,
    creation_date: String,
    tenant_id: String,
}

/// A new component's resource JSON, with every property the service answers (nulls for unset
/// ones, and its undocumented `Ver`, `Name`, `Retention`).
fn new_resource(
    subscription_id: &str,
    resource_group: &str,
    name: &str,
    spec: &PutSpec,
    identity: Identity,
    state: &str,
) -> Value {
    let mut resource = json!({
        "id": resource_id(subscription_id, resource_group, name, false),
        "name": name,
        "type": RESOURCE_TYPE,
        "location": spec.location,
        "tags": {},
        "kind": spec.kind,
        "etag": new_etag(),
        "properties": {
            "Ver": "v2",
            "ApplicationId": name,
            "AppId": identity.app_id,
            "Application_Type": spec.application_type,
            "Flow_Type": null,
            "Request_Source": null,
            "InstrumentationKey": identity.instrumentation_key,
            "ConnectionString": identity.connection_string,
            "Name": name,
            "CreationDate": identity.creation_date,
            "TenantId": identity.tenant_id,
            "HockeyAppId": null,
            "HockeyAppToken": null,
            "provisioningState": state,
            "SamplingPercentage": null,
            "RetentionInDays": 90,
            "Retention": "P90D",
            "DisableIpMasking": false,
            "ImmediatePurgeDataOn30Days": null,
            "WorkspaceResourceId": null,
            "LaMigrationDate": null,
            "PrivateLinkScopedResources": null,
            "IngestionMode": "LogAnalytics",
            "publicNetworkAccessForIngestion": "Enabled",
            "publicNetworkAccessForQuery": "Enabled",
            "DisableLocalAuth": false,
            "ForceCustomerStorageForProfiler": false,
        },
    });
    apply(&mut resource, spec);
    resource
}

/// Applies the mutable parts of a PUT: kind, tags, writable properties; a new etag.
fn apply(resource: &mut Value, spec: &PutSpec) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    obj.insert("kind".into(), json!(spec.kind));
    obj.insert("tags".into(), Value::Object(spec.tags.clone()));
    obj.insert("etag".into(), json!(new_etag()));
    if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, value) in &spec.writable {
            props.insert((*name).to_string(), value.clone());
            if *name == "RetentionInDays" {
                props.insert("Retention".into(), json!(format!("P{value}D")));
            }
        }
    }
}

fn location_changed(
    resource: &Value,
    name: &str,
    resource_group: &str,
    location: &str,
) -> Option<ArmError> {
    let current = resource
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("");
    (region(current) != region(location)).then(|| {
        ArmError::new(
            400,
            "InvalidResourceLocation",
            format!(
                "The resource '{name}' already exists in location '{}' in resource group \
                 '{resource_group}'. A resource with the same name cannot be created in location \
                 '{}'. Please select a new resource name.",
                region(current),
                region(location)
            ),
        )
    })
}

fn put_component(
    shared: &Shared,
    subscription_id: &str,
    resource_group: &str,
    name: &str,
    body: &[u8],
    token: &IssuedToken,
) -> Result<Answer, ArmError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ArmError::bad_content("The request content was empty"));
    }
    let value: Value = serde_json::from_slice(body).map_err(ArmError::bad_content)?;
    let spec = parse_put(&value)?;
    let (provisioning_gets, outcome, create_status, ingestion, lowercase) = {
        let config = lock(&shared.config);
        (
            config.provisioning_gets,
            config.provisioning_outcome.clone(),
            config.create_status,
            config.ingestion_endpoint.clone(),
            config.lowercase_provider,
        )
    };
    let mut store = lock(&shared.store);
    let k = key(subscription_id, resource_group, name);
    if let Some(stored) = store.components.get_mut(&k) {
        if let Some(err) = location_changed(
            &stored.resource,
            &stored.name,
            &stored.resource_group,
            &spec.location,
        ) {
            return Err(err);
        }
        let current_type = stored
            .resource
            .pointer("/properties/Application_Type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current_type.eq_ignore_ascii_case(&spec.application_type) {
            return Err(ArmError::bad_request(format!(
                "'Application_Type' cannot be changed from '{current_type}' to '{}' after the \
                 component was created.",
                spec.application_type
            )));
        }
        apply(&mut stored.resource, &spec);
        return Ok(Answer::json(200, stored.render(lowercase)));
    }
    let app_id = new_guid();
    let instrumentation_key = new_guid();
    let identity = Identity {
        connection_string: connection_string(
            &instrumentation_key,
            &app_id,
            &spec.location,
            ingestion.as_deref(),
        ),
        app_id,
        instrumentation_key,
        creation_date: iso_ticks_offset(SystemTime::now()),
        tenant_id: token.tenant.clone(),
    };
    let resource = new_resource(
        subscription_id,
        resource_group,
        name,
        &spec,
        identity,
        &outcome,
    );
    store.next_instance += 1;
    let stored = Stored {
        subscription_id: subscription_id.to_string(),
        resource_group: resource_group.to_string(),
        name: name.to_string(),
        resource,
        instance: store.next_instance,
        pending_gets: (provisioning_gets > 0).then_some(provisioning_gets),
        deleting: false,
    };
    let body = stored.render(lowercase);
    store.components.insert(k, stored);
    Ok(Answer::json(create_status, body))
}

fn insert(
    shared: &Shared,
    subscription_id: &str,
    resource_group: &str,
    name: &str,
    body: &Value,
) -> Result<Component, ArmError> {
    let spec = parse_put(body)?;
    let (ingestion, lowercase, bound_tenant) = {
        let config = lock(&shared.config);
        (
            config.ingestion_endpoint.clone(),
            config.lowercase_provider,
            config
                .subscription_tenants
                .get(&subscription_id.to_ascii_lowercase())
                .cloned(),
        )
    };
    let given = |name: &str| {
        spec.read_only
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string)
    };
    let app_id = given("AppId").unwrap_or_else(new_guid);
    let instrumentation_key = given("InstrumentationKey").unwrap_or_else(new_guid);
    let identity = Identity {
        connection_string: given("ConnectionString").unwrap_or_else(|| {
            connection_string(
                &instrumentation_key,
                &app_id,
                &spec.location,
                ingestion.as_deref(),
            )
        }),
        app_id,
        instrumentation_key,
        creation_date: given("CreationDate").unwrap_or_else(|| iso_ticks_offset(SystemTime::now())),
        tenant_id: given("TenantId")
            .or(bound_tenant)
            .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".to_string()),
    };
    let state = given("provisioningState").unwrap_or_else(|| "Succeeded".to_string());
    let resource = new_resource(
        subscription_id,
        resource_group,
        name,
        &spec,
        identity,
        &state,
    );
    let mut store = lock(&shared.store);
    store.next_instance += 1;
    let stored = Stored {
        subscription_id: subscription_id.to_string(),
        resource_group: resource_group.to_string(),
        name: name.to_string(),
        resource,
        instance: store.next_instance,
        pending_gets: None,
        deleting: false,
    };
    let component = stored.to_component(lowercase);
    store
        .components
        .insert(key(subscription_id, resource_group, name), stored);
    Ok(component)
}

/// `PATCH` (UpdateTags): `{"tags":{...}}` replaces the tags.
fn patch_component(
    shared: &Shared,
    subscription_id: &str,
    resource_group: &str,
    name: &str,
    body: &[u8],
) -> Result<Answer, ArmError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(ArmError::bad_content)?
    };
    let Some(obj) = value.as_object() else {
        return Err(ArmError::bad_content(format!(
            "Cannot deserialize {value} into 'TagsResource'."
        )));
    };
    let tags = match obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("tags"))
        .map(|(_, v)| v)
    {
        None | Some(Value::Null) => None,
        Some(Value::Object(tags)) => {
            if let Some((k, v)) = tags.iter().find(|(_, v)| !v.is_string()) {
                return Err(ArmError::bad_content(format!(
                    "Error converting value {v} to type 'System.String'. Path 'tags.{k}'"
                )));
            }
            Some(tags.clone())
        }
        Some(other) => {
            return Err(ArmError::bad_content(format!(
                "Error converting value {other} to type 'Dictionary<string, string>'. Path 'tags'"
            )));
        }
    };
    let lowercase = lock(&shared.config).lowercase_provider;
    let mut store = lock(&shared.store);
    let Some(stored) = store
        .components
        .get_mut(&key(subscription_id, resource_group, name))
    else {
        return Err(not_found(resource_group, name));
    };
    if let Some(obj) = stored.resource.as_object_mut() {
        if let Some(tags) = tags {
            obj.insert("tags".into(), Value::Object(tags));
        }
        obj.insert("etag".into(), json!(new_etag()));
    }
    Ok(Answer::json(200, stored.render(lowercase)))
}

async fn delete_component(
    shared: &Shared,
    subscription_id: &str,
    resource_group: &str,
    name: &str,
) -> Answer {
    let k = key(subscription_id, resource_group, name);
    let delay = lock(&shared.config).delete_delay;
    let instance = {
        let mut store = lock(&shared.store);
        match store.components.get_mut(&k) {
            None => return Answer::empty(204),
            Some(stored) => {
                stored.deleting = true;
                stored.instance
            }
        }
    };
    if !delay.is_zero() {
        pause(&shared.closing, delay).await;
    }
    let mut store = lock(&shared.store);
    if store
        .components
        .get(&k)
        .is_some_and(|s| s.instance == instance)
    {
        store.components.remove(&k);
    }
    Answer::empty(200)
}

fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl ArmRequest {
    /// The control API's JSON form.
    fn to_json(&self) -> Value {
        json!({
            "method": self.method.as_str(),
            "path": self.path,
            "query": self.query,
            "body": self.body,
            "status": self.status,
            "errorCode": self.error_code,
            "clientId": self.client_id,
            "faulted": self.faulted,
            "atMs": unix_millis(self.at),
        })
    }
}

impl Component {
    fn to_json(&self) -> Value {
        json!({
            "subscriptionId": self.subscription_id,
            "resourceGroup": self.resource_group,
            "name": self.name,
            "resource": self.resource,
        })
    }
}

async fn control_components(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let lowercase = lock(&shared.config).lowercase_provider;
    let store = lock(&shared.store);
    axum::Json(Value::Array(
        store
            .components
            .values()
            .map(|s| s.to_component(lowercase).to_json())
            .collect(),
    ))
}

async fn control_insert(
    State(shared): State<Arc<Shared>>,
    Path((subscription, group, name)): Path<(String, String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    match insert(&shared, &subscription, &group, &name, &body) {
        Ok(component) => (StatusCode::OK, axum::Json(component.resource)).into_response(),
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            (
                status,
                axum::Json(json!({"error": {"code": e.code, "message": e.message}})),
            )
                .into_response()
        }
    }
}

async fn control_requests(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let recorded = lock(&shared.recorded);
    axum::Json(Value::Array(
        recorded.requests.iter().map(ArmRequest::to_json).collect(),
    ))
}

async fn control_reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    *lock(&shared.recorded) = Recorded::default();
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultSpec {
    status: Option<u16>,
    retry_after_seconds: Option<u64>,
    delay_ms: Option<u64>,
    times: Option<usize>,
    method: Option<String>,
}

async fn control_set_fault(
    State(shared): State<Arc<Shared>>,
    axum::Json(spec): axum::Json<FaultSpec>,
) -> StatusCode {
    let mut fault = match (spec.status, spec.delay_ms) {
        (Some(code), None) => Fault::status(code),
        (None, Some(ms)) => Fault::delay(Duration::from_millis(ms)),
        _ => return StatusCode::BAD_REQUEST,
    };
    if let Some(s) = spec.retry_after_seconds {
        fault = fault.retry_after(Duration::from_secs(s));
    }
    if let Some(n) = spec.times {
        fault = fault.times(n);
    }
    if let Some(m) = spec.method {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => fault = fault.only(m),
            Err(_) => return StatusCode::BAD_REQUEST,
        }
    }
    let mut config = lock(&shared.config);
    config.faults.clear();
    config.faults.push(fault);
    StatusCode::NO_CONTENT
}

async fn control_clear_fault(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.config).faults.clear();
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisioningSpec {
    gets: usize,
    outcome: Option<String>,
}

async fn control_provisioning(
    State(shared): State<Arc<Shared>>,
    axum::Json(spec): axum::Json<ProvisioningSpec>,
) -> StatusCode {
    let mut config = lock(&shared.config);
    config.provisioning_gets = spec.gets;
    if let Some(outcome) = spec.outcome {
        config.provisioning_outcome = outcome;
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            parse_route(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/components/c"
            ),
            Some(Route::Component {
                subscription_id: "s".into(),
                resource_group: "rg".into(),
                name: "c".into()
            })
        );
        assert_eq!(
            parse_route(
                "/SUBSCRIPTIONS/s/resourcegroups/rg/providers/microsoft.insights/Components/c%28x%29"
            ),
            Some(Route::Component {
                subscription_id: "s".into(),
                resource_group: "rg".into(),
                name: "c(x)".into()
            })
        );
        assert_eq!(
            parse_route("/subscriptions/s/providers/Microsoft.Insights/components"),
            Some(Route::List {
                subscription_id: "s".into(),
                resource_group: None
            })
        );
        assert_eq!(
            parse_route(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/components/"
            ),
            Some(Route::List {
                subscription_id: "s".into(),
                resource_group: Some("rg".into())
            })
        );
        assert_eq!(
            parse_route("/subscriptions/s/providers/Microsoft.Insights/components/c"),
            None
        );
        assert_eq!(
            parse_route("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/c"),
            None
        );
        assert_eq!(parse_route("/"), None);
    }

    #[test]
    fn regions_and_connection_strings() {
        assert_eq!(region("South Central US"), "southcentralus");
        assert_eq!(
            connection_string("k", "a", "West Europe", None),
            "InstrumentationKey=k;IngestionEndpoint=https://westeurope-0.in.applicationinsights.azure.com/;LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/;ApplicationId=a"
        );
    }

    #[test]
    fn us_times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_600_794_773);
        assert_eq!(us_time(t), "9/22/2020 5:12:53 PM");
    }
}
