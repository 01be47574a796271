//! Microsoft Entra ID token endpoint emulator (client credentials and managed identity).
//!
//! Serves `POST /{tenant}/oauth2/v2.0/token` the way the real security token service answers
//! confidential clients: `grant_type=client_credentials` with either a `client_secret` or a
//! federated `client_assertion` (the workload-identity token file), the
//! `{"token_type":"Bearer","expires_in":3599,...}` answer with `expires_in` as a JSON number,
//! and errors in the service's shape (`error`, `error_description` with the `AADSTS` code and
//! trace/correlation ids, `error_codes`, `timestamp`, `trace_id`, `correlation_id`,
//! `error_uri`). Federated assertions are not verified, only recorded, so a test can check
//! which content of a rotated token file the client presented.
//!
//! Also serves the managed-identity endpoint of the instance metadata service,
//! `GET /metadata/identity/oauth2/token?api-version=...&resource=...` with `Metadata: true`,
//! whose answer carries `expires_in`/`expires_on` as strings.
//!
//! Issued tokens go into a [`TokenRegistry`] that the resource manager emulator
//! (`crate::arm`) consults to authenticate its callers.
//!
//! When the emulator runs as a separate process (the `telemux-azure-emulator` binary), tests
//! configure and inspect it over HTTP under `/_emulator/` (not part of Entra ID):
//! `PUT /_emulator/apps` with `{"tenant":T,"clientId":C,"secret":S}` or
//! `{"tenant":T,"clientId":C,"federated":true}`, `PUT /_emulator/managed-identities` with
//! `{"tenant":T,"clientId":C}`, `GET /_emulator/assertions/{client_id}`,
//! `POST /_emulator/expired-assertions` with `{"assertion":A}`, `GET /_emulator/requests`,
//! `GET /_emulator/tokens`, `POST /_emulator/expire-tokens`, `PUT /_emulator/token-lifetime`
//! with `{"seconds":N}`, `PUT /_emulator/fault` with `{"status":503,"retryAfterSeconds":5,
//! "times":2}` or `{"hangMs":5000}`, and `DELETE /_emulator/fault`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// The only `client_assertion_type` the service accepts.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// What the service grants an app token for by default (seconds, as it answers).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);
/// Longest a fault or delay waits; longer asks are cut to this (a test never waits longer).
const MAX_PAUSE: Duration = Duration::from_secs(24 * 3600);

/// How a token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    ClientSecret,
    FederatedAssertion,
    ManagedIdentity,
    /// Minted by a test with [`EntraEmulator::issue_token`], without a request.
    Direct,
}

/// One access token the emulator handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    pub tenant: String,
    pub client_id: String,
    /// Object id of the client's service principal (stable per tenant and client).
    pub object_id: String,
    /// The `aud` claim: the scope without `/.default`, or the managed-identity `resource`.
    pub audience: String,
    pub grant: Grant,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

/// What a presented bearer token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStatus {
    Valid(IssuedToken),
    Expired(IssuedToken),
    /// Never issued here, or revoked.
    Unknown,
}

/// The tokens issued by an [`EntraEmulator`]; cheap to clone, shared with resource emulators.
#[derive(Clone, Default)]
pub struct TokenRegistry {
    tokens: Arc<Mutex<HashMap<String, IssuedToken>>>,
}

impl TokenRegistry {
    pub fn status(&self, access_token: &str) -> TokenStatus {
        let tokens = lock(&self.tokens);
        match tokens.get(access_token) {
            None => TokenStatus::Unknown,
            Some(t) if t.expires_at <= SystemTime::now() => TokenStatus::Expired(t.clone()),
            Some(t) => TokenStatus::Valid(t.clone()),
        }
    }

    pub fn is_valid(&self, access_token: &str) -> bool {
        matches!(self.status(access_token), TokenStatus::Valid(_))
    }

    /// Every token issued so far (valid or not), oldest first.
    pub fn all(&self) -> Vec<IssuedToken> {
        let mut all: Vec<IssuedToken> = lock(&self.tokens).values().cloned().collect();
        all.sort_by_key(|t| t.issued_at);
        all
    }

    fn insert(&self, token: IssuedToken) {
        lock(&self.tokens).insert(token.access_token.clone(), token);
    }

    fn expire_all(&self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for token in lock(&self.tokens).values_mut() {
            if token.expires_at > past {
                token.expires_at = past;
            }
        }
    }

    fn revoke(&self, access_token: &str) -> bool {
        lock(&self.tokens).remove(access_token).is_some()
    }
}

/// Which endpoint a request or fault concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpoint {
    /// `POST /{tenant}/oauth2/v2.0/token`
    V2,
    /// `GET /metadata/identity/oauth2/token`
    ManagedIdentity,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer this HTTP status instead of handling the request: 500 as `server_error`
    /// (AADSTS50000), 503 as `temporarily_unavailable` (AADSTS90033), 429 as
    /// `temporarily_unavailable` (AADSTS50196), others with the status's reason. With
    /// `retry_after`, a `Retry-After: <seconds>` header.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Wait this long, then handle the request normally (a slow or hung service, to provoke
    /// client timeouts). Ends early when the emulator stops.
    Hang(Duration),
}

/// A fault for the next requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// How many requests it applies to; `None`: until cleared.
    pub times: Option<usize>,
    /// Only requests to this endpoint; `None`: both.
    pub endpoint: Option<TokenEndpoint>,
}

impl Fault {
    pub fn status(code: u16) -> Fault {
        Fault {
            kind: FaultKind::Status {
                code,
                retry_after: None,
            },
            times: None,
            endpoint: None,
        }
    }

    pub fn hang(duration: Duration) -> Fault {
        Fault {
            kind: FaultKind::Hang(duration),
            times: None,
            endpoint: None,
        }
    }

    /// Adds `Retry-After` to a status fault (no effect on a hang).
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

    pub fn only(mut self, endpoint: TokenEndpoint) -> Fault {
        self.endpoint = Some(endpoint);
        self
    }
}

/// The client credential a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    None,
    Secret,
    Assertion,
}

/// One token request the emulator answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub endpoint: TokenEndpoint,
    pub path: String,
    /// The tenant of the path (v2.0 only).
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub grant_type: Option<String>,
    /// `scope` (v2.0) or `resource` (managed identity).
    pub scope: Option<String>,
    pub credential: Credential,
    pub status: u16,
    /// The `AADSTS` number of an error answer, if it had one.
    pub error_code: Option<u32>,
    /// The answer came from an injected fault.
    pub faulted: bool,
    pub at: SystemTime,
}

/// Errors of the emulator's own helpers (not of the emulated protocol).
#[derive(Debug, thiserror::Error)]
pub enum EntraEmulatorError {
    #[error("no app {client_id:?} is registered in tenant {tenant:?}")]
    UnknownClient { tenant: String, client_id: String },
}

struct App {
    client_id: String,
    secrets: Vec<String>,
    federated: bool,
}

struct ManagedIdentity {
    tenant: String,
    client_id: String,
}

struct Directory {
    /// Keyed by (lowercased tenant, lowercased client id).
    apps: HashMap<(String, String), App>,
    managed: Vec<ManagedIdentity>,
    expired_assertions: HashSet<String>,
    lifetime: Duration,
    faults: Vec<Fault>,
}

#[derive(Default)]
struct Recorded {
    requests: Vec<TokenRequest>,
    /// Keyed by lowercased client id.
    assertions: HashMap<String, Vec<String>>,
}

struct Shared {
    directory: Mutex<Directory>,
    recorded: Mutex<Recorded>,
    tokens: TokenRegistry,
    events: broadcast::Sender<TokenRequest>,
    closing: watch::Receiver<bool>,
    authority: String,
}

/// Locks are only held for short, await-free sections; a panic while holding one cannot leave
/// the data half-updated in a way that matters to a test, so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running emulator; stops when dropped or on [`EntraEmulator::shutdown`].
pub struct EntraEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl EntraEmulator {
    /// Serves on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<EntraEmulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<EntraEmulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(4096);
        let (stop, closing) = watch::channel(false);
        let shared = Arc::new(Shared {
            directory: Mutex::new(Directory {
                apps: HashMap::new(),
                managed: Vec::new(),
                expired_assertions: HashSet::new(),
                lifetime: DEFAULT_TOKEN_LIFETIME,
                faults: Vec::new(),
            }),
            recorded: Mutex::new(Recorded::default()),
            tokens: TokenRegistry::default(),
            events,
            closing: closing.clone(),
            authority: format!("http://{addr}"),
        });
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
            .route("/metadata/identity/oauth2/token", get(managed_identity))
            .route("/_emulator/apps", put(control_app))
            .route("/_emulator/managed-identities", put(control_managed))
            .route("/_emulator/assertions/{client_id}", get(control_assertions))
            .route(
                "/_emulator/expired-assertions",
                post(control_expire_assertion),
            )
            .route("/_emulator/requests", get(control_requests))
            .route("/_emulator/tokens", get(control_tokens))
            .route("/_emulator/expire-tokens", post(control_expire_tokens))
            .route("/_emulator/token-lifetime", put(control_lifetime))
            .route(
                "/_emulator/fault",
                put(control_set_fault).delete(control_clear_fault),
            )
            .with_state(shared.clone());
        let server = tokio::spawn(serve(listener, app, closing));
        Ok(EntraEmulator {
            addr,
            shared,
            stop,
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The authority host, `http://127.0.0.1:PORT` (no trailing slash), what
    /// `AZURE_AUTHORITY_HOST` would name.
    pub fn endpoint(&self) -> String {
        self.shared.authority.clone()
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.shared.authority)
    }

    /// The managed-identity endpoint, `{authority}/metadata/identity/oauth2/token`.
    pub fn managed_identity_url(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.shared.authority)
    }

    /// Registers an app (if new) in `tenant` and accepts `secret` for it; an app may have
    /// several secrets at once, as during a rotation.
    pub fn allow_secret(&self, tenant: &str, client_id: &str, secret: &str) {
        let mut dir = lock(&self.shared.directory);
        let app = dir
            .apps
            .entry(app_key(tenant, client_id))
            .or_insert_with(|| App {
                client_id: client_id.to_string(),
                secrets: Vec::new(),
                federated: false,
            });
        if !app.secrets.iter().any(|s| s == secret) {
            app.secrets.push(secret.to_string());
        }
    }

    /// Stops accepting `secret` (an expired or deleted client secret).
    pub fn remove_secret(&self, tenant: &str, client_id: &str, secret: &str) {
        if let Some(app) = lock(&self.shared.directory)
            .apps
            .get_mut(&app_key(tenant, client_id))
        {
            app.secrets.retain(|s| s != secret);
        }
    }

    /// Registers an app (if new) in `tenant` with a federated credential: any assertion is
    /// accepted (unless marked expired) and recorded.
    pub fn allow_federated(&self, tenant: &str, client_id: &str) {
        let mut dir = lock(&self.shared.directory);
        dir.apps
            .entry(app_key(tenant, client_id))
            .or_insert_with(|| App {
                client_id: client_id.to_string(),
                secrets: Vec::new(),
                federated: false,
            })
            .federated = true;
    }

    /// Deletes the app: its requests then get AADSTS700016.
    pub fn remove_app(&self, tenant: &str, client_id: &str) {
        lock(&self.shared.directory)
            .apps
            .remove(&app_key(tenant, client_id));
    }

    /// A managed identity the metadata endpoint hands tokens for. A request without
    /// `client_id` gets the first one registered (a machine with one identity).
    pub fn allow_managed_identity(&self, tenant: &str, client_id: &str) {
        let mut dir = lock(&self.shared.directory);
        if !dir
            .managed
            .iter()
            .any(|m| m.client_id.eq_ignore_ascii_case(client_id))
        {
            dir.managed.push(ManagedIdentity {
                tenant: tenant.to_string(),
                client_id: client_id.to_string(),
            });
        }
    }

    /// Every `client_assertion` presented for `client_id` (any tenant), in arrival order,
    /// whether or not it was accepted.
    pub fn assertions_seen(&self, client_id: &str) -> Vec<String> {
        lock(&self.shared.recorded)
            .assertions
            .get(&client_id.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// From now on this assertion value is refused with AADSTS700024 (not within its valid time
    /// range), as an expired projected token would be. A JWT assertion whose `exp` has passed
    /// is refused that way without being marked.
    pub fn expire_assertion(&self, assertion: &str) {
        lock(&self.shared.directory)
            .expired_assertions
            .insert(assertion.trim().to_string());
    }

    /// Lifetime of tokens issued from now on (`expires_in`); default 3599 s.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.shared.directory).lifetime = lifetime;
    }

    /// Every token issued so far expires now (resource emulators then refuse them).
    pub fn expire_tokens(&self) {
        self.shared.tokens.expire_all();
    }

    /// Forgets one token: resource emulators then treat it as never issued.
    pub fn revoke_token(&self, access_token: &str) -> bool {
        self.shared.tokens.revoke(access_token)
    }

    pub fn token_is_valid(&self, access_token: &str) -> bool {
        self.shared.tokens.is_valid(access_token)
    }

    pub fn token_status(&self, access_token: &str) -> TokenStatus {
        self.shared.tokens.status(access_token)
    }

    /// The registry resource emulators authenticate against.
    pub fn tokens(&self) -> TokenRegistry {
        self.shared.tokens.clone()
    }

    /// Every token issued so far, oldest first.
    pub fn issued(&self) -> Vec<IssuedToken> {
        self.shared.tokens.all()
    }

    /// Mints a token for a registered app without a request (for tests of other emulators).
    /// `audience` is the `aud`, e.g. `https://management.azure.com/`.
    pub fn issue_token(
        &self,
        tenant: &str,
        client_id: &str,
        audience: &str,
    ) -> Result<IssuedToken, EntraEmulatorError> {
        let known = lock(&self.shared.directory)
            .apps
            .get(&app_key(tenant, client_id))
            .map(|a| a.client_id.clone());
        let Some(client_id) = known else {
            return Err(EntraEmulatorError::UnknownClient {
                tenant: tenant.to_string(),
                client_id: client_id.to_string(),
            });
        };
        Ok(mint(
            &self.shared,
            tenant,
            &client_id,
            audience,
            Grant::Direct,
        ))
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.recorded).requests.clone()
    }

    /// Number of token requests answered (all endpoints, all outcomes).
    pub fn count(&self) -> usize {
        lock(&self.shared.recorded).requests.len()
    }

    /// Forgets recorded requests and assertions (apps, tokens and faults stay).
    pub fn reset(&self) {
        *lock(&self.shared.recorded) = Recorded::default();
    }

    /// Live feed of answered requests (for logging); slow readers lose old records.
    pub fn subscribe(&self) -> broadcast::Receiver<TokenRequest> {
        self.shared.events.subscribe()
    }

    /// Replaces any faults with this one.
    pub fn set_fault(&self, fault: Fault) {
        let mut dir = lock(&self.shared.directory);
        dir.faults.clear();
        dir.faults.push(fault);
    }

    /// Adds a fault after the existing ones; the first that matches a request applies.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.shared.directory).faults.push(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.directory).faults.clear();
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

impl Drop for EntraEmulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves until `closing` turns true (or its sender is dropped).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut closing: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = closing.wait_for(|c| *c).await;
        })
        .await
}

/// Sleeps for `duration`, or less if the emulator stops meanwhile (so a hung request never
/// keeps a shutdown waiting).
pub(crate) async fn pause(closing: &watch::Receiver<bool>, duration: Duration) {
    let mut closing = closing.clone();
    let stopped = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    tokio::select! {
        () = tokio::time::sleep(duration.min(MAX_PAUSE)) => {}
        () = stopped => {}
    }
}

fn app_key(tenant: &str, client_id: &str) -> (String, String) {
    (tenant.to_ascii_lowercase(), client_id.to_ascii_lowercase())
}

/// A random (version 4) GUID, lowercase and dashed.
pub(crate) fn new_guid() -> String {
    let v: u128 = rand::random();
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    guid_from(v)
}

fn guid_from(v: u128) -> String {
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A GUID derived from `seed` (stable object ids per client).
fn stable_guid(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    guid_from(u128::from_be_bytes(bytes))
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// Year, month, day, hour, minute, second and 100 ns ticks of a UTC time.
fn civil(t: SystemTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    let t = time::OffsetDateTime::from(t);
    (
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100,
    )
}

/// `2024-06-04 11:40:28Z`, the form of Entra's `timestamp`.
pub(crate) fn aad_timestamp(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// `2024-06-04T11:40:28.3451933Z` (.NET's round-trip form, UTC).
pub(crate) fn iso_ticks(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ticks) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ticks:07}Z")
}

/// `2017-01-24T01:05:38.5934061+00:00`, the form of a component's `CreationDate`.
pub(crate) fn iso_ticks_offset(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ticks) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ticks:07}+00:00")
}

/// `20240604T114028Z`, as in ARM's `x-ms-routing-request-id`.
pub(crate) fn compact_timestamp(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = civil(t);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Issues and registers a JWT-shaped (unsigned in substance) v1 app token.
fn mint(
    shared: &Shared,
    tenant: &str,
    client_id: &str,
    audience: &str,
    grant: Grant,
) -> IssuedToken {
    let lifetime = lock(&shared.directory).lifetime;
    let now = SystemTime::now();
    let expires_at = now + lifetime;
    let object_id = stable_guid(&format!(
        "{}/{}",
        tenant.to_ascii_lowercase(),
        client_id.to_ascii_lowercase()
    ));
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "telemux-emulator"});
    let claims = json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": unix_secs(now),
        "nbf": unix_secs(now),
        "exp": unix_secs(expires_at),
        "appid": client_id,
        "appidacr": if grant == Grant::ClientSecret { "1" } else { "2" },
        "idtyp": "app",
        "oid": object_id,
        "sub": object_id,
        "tid": tenant,
        "uti": new_guid(),
        "ver": "1.0",
    });
    let signature: [u8; 32] = rand::random();
    let access_token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    );
    let token = IssuedToken {
        access_token,
        tenant: tenant.to_string(),
        client_id: client_id.to_string(),
        object_id,
        audience: audience.to_string(),
        grant,
        issued_at: now,
        expires_at,
    };
    shared.tokens.insert(token.clone());
    token
}

/// The payload of a JWT, if `s` is shaped like one.
fn jwt_claims(s: &str) -> Option<Value> {
    let mut parts = s.trim().split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// An error the service would answer.
struct AadError {
    status: u16,
    error: &'static str,
    code: u32,
    /// Without the `AADSTSnnn: ` prefix and trace suffix.
    description: String,
}

impl AadError {
    fn new(status: u16, error: &'static str, code: u32, description: String) -> AadError {
        AadError {
            status,
            error,
            code,
            description,
        }
    }

    fn missing(field: &str) -> AadError {
        AadError::new(
            400,
            "invalid_request",
            900_144,
            format!("The request body must contain the following parameter: '{field}'."),
        )
    }
}

/// Takes the first fault matching `endpoint`, counting it down.
fn take_fault(shared: &Shared, endpoint: TokenEndpoint) -> Option<FaultKind> {
    let mut dir = lock(&shared.directory);
    let index = dir
        .faults
        .iter()
        .position(|f| f.endpoint.is_none_or(|e| e == endpoint) && f.times != Some(0))?;
    let fault = &mut dir.faults[index];
    let kind = fault.kind.clone();
    if let Some(n) = &mut fault.times {
        *n -= 1;
        if *n == 0 {
            dir.faults.remove(index);
        }
    }
    Some(kind)
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn insert_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// Stores the record and feeds subscribers.
fn finish(shared: &Shared, record: TokenRequest) {
    tracing::debug!(
        path = %record.path, client = ?record.client_id, status = record.status,
        code = ?record.error_code, "entra emulator: request"
    );
    lock(&shared.recorded).requests.push(record.clone());
    // No subscribers is normal; the send error only says so.
    let _ = shared.events.send(record);
}

/// The service's error answer, with fresh trace and correlation ids (the client's
/// `client-request-id` becomes the correlation id, as the service does).
fn aad_error_response(
    shared: &Shared,
    err: &AadError,
    client_request_id: Option<&str>,
) -> Response {
    let trace_id = new_guid();
    let correlation_id = client_request_id
        .map(str::to_string)
        .unwrap_or_else(new_guid);
    let timestamp = aad_timestamp(SystemTime::now());
    let body = json!({
        "error": err.error,
        "error_description": format!(
            "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
            err.code, err.description
        ),
        "error_codes": [err.code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("{}/error?code={}", shared.authority, err.code),
    });
    let mut response = (status_code(err.status), axum::Json(body)).into_response();
    insert_header(&mut response, "x-ms-request-id", &trace_id);
    if let Some(id) = client_request_id {
        insert_header(&mut response, "client-request-id", id);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    response
}

/// The answer to a status fault: the service's error shape for 5xx/429.
fn fault_error(code: u16) -> AadError {
    match code {
        500 => AadError::new(
            500,
            "server_error",
            50_000,
            "There was an error issuing a token or an issue with our sign-in service.".into(),
        ),
        503 => AadError::new(
            503,
            "temporarily_unavailable",
            90_033,
            "A transient error has occurred. Please try again.".into(),
        ),
        429 => AadError::new(
            429,
            "temporarily_unavailable",
            50_196,
            "The server terminated an operation because it encountered a client request loop."
                .into(),
        ),
        other => AadError::new(
            other,
            "server_error",
            50_000,
            status_code(other)
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
        ),
    }
}

async fn token_v2(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // In a task of its own, so a request whose client gave up (during a hang) is still
    // answered and recorded.
    tokio::spawn(token_v2_task(shared, tenant, headers, body))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn token_v2_task(
    shared: Arc<Shared>,
    tenant: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = SystemTime::now();
    // A body that is not a form reads as an empty one, so the first required field is missing,
    // as the service answers a JSON body.
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let client_request_id = header_string(&headers, "client-request-id");
    let client_id = field("client_id");
    let assertion = field("client_assertion");
    let secret = field("client_secret");
    let mut record = TokenRequest {
        endpoint: TokenEndpoint::V2,
        path: format!("/{tenant}/oauth2/v2.0/token"),
        tenant: Some(tenant.clone()),
        client_id: client_id.clone(),
        grant_type: field("grant_type"),
        scope: field("scope"),
        credential: if assertion.is_some() {
            Credential::Assertion
        } else if secret.is_some() {
            Credential::Secret
        } else {
            Credential::None
        },
        status: 200,
        error_code: None,
        faulted: false,
        at,
    };
    if let (Some(client), Some(assertion)) = (&client_id, &assertion) {
        lock(&shared.recorded)
            .assertions
            .entry(client.to_ascii_lowercase())
            .or_default()
            .push(assertion.clone());
    }

    match take_fault(&shared, TokenEndpoint::V2) {
        Some(FaultKind::Status { code, retry_after }) => {
            let err = fault_error(code);
            record.status = code;
            record.error_code = Some(err.code);
            record.faulted = true;
            finish(&shared, record);
            let mut response = aad_error_response(&shared, &err, client_request_id.as_deref());
            if let Some(after) = retry_after {
                insert_header(&mut response, "retry-after", &after.as_secs().to_string());
            }
            return response;
        }
        Some(FaultKind::Hang(duration)) => pause(&shared.closing, duration).await,
        None => {}
    }

    let outcome = grant_v2(
        &shared,
        &tenant,
        record.grant_type.as_deref(),
        client_id.as_deref(),
        record.scope.as_deref(),
        secret.as_deref(),
        field("client_assertion_type").as_deref(),
        assertion.as_deref(),
    );
    match outcome {
        Ok(token) => {
            finish(&shared, record);
            let lifetime = token
                .expires_at
                .duration_since(token.issued_at)
                .map_or(0, |d| d.as_secs());
            let body = json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token.access_token,
            });
            let mut response = (StatusCode::OK, axum::Json(body)).into_response();
            insert_header(&mut response, "x-ms-request-id", &new_guid());
            if let Some(id) = &client_request_id {
                insert_header(&mut response, "client-request-id", id);
            }
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, no-cache"),
            );
            response
        }
        Err(err) => {
            record.status = err.status;
            record.error_code = Some(err.code);
            finish(&shared, record);
            aad_error_response(&shared, &err, client_request_id.as_deref())
        }
    }
}

/// The client-credentials checks, in the service's order: request shape, tenant, app, then
/// the credential.
#[allow(clippy::too_many_arguments)]
fn grant_v2(
    shared: &Shared,
    tenant: &str,
    grant_type: Option<&str>,
    client_id: Option<&str>,
    scope: Option<&str>,
    secret: Option<&str>,
    assertion_type: Option<&str>,
    assertion: Option<&str>,
) -> Result<IssuedToken, AadError> {
    let grant_type = grant_type.ok_or_else(|| AadError::missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(AadError::new(
            400,
            "unsupported_grant_type",
            70_003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = client_id.ok_or_else(|| AadError::missing("client_id"))?;
    let scope = scope.ok_or_else(|| AadError::missing("scope"))?;
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let audience = match scopes.as_slice() {
        [one] if one.ends_with("/.default") => one.trim_end_matches(".default").to_string(),
        _ => {
            return Err(AadError::new(
                400,
                "invalid_scope",
                1_002_012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows \
                     must have a scope value with /.default suffixed to the resource identifier \
                     (application ID URI)."
                ),
            ));
        }
    };
    if assertion.is_some() && assertion_type.is_none() {
        return Err(AadError::missing("client_assertion_type"));
    }

    // Copy what is needed out of the directory; no lock is held while answering.
    let (tenant_known, app) = {
        let dir = lock(&shared.directory);
        let tenant_lower = tenant.to_ascii_lowercase();
        let known = dir.apps.keys().any(|(t, _)| *t == tenant_lower)
            || dir
                .managed
                .iter()
                .any(|m| m.tenant.eq_ignore_ascii_case(tenant));
        let app = dir
            .apps
            .get(&app_key(tenant, client_id))
            .map(|a| (a.client_id.clone(), a.secrets.clone(), a.federated));
        let expired = assertion.is_some_and(|a| dir.expired_assertions.contains(a.trim()));
        (known, app.map(|a| (a, expired)))
    };
    if !tenant_known {
        return Err(AadError::new(
            400,
            "invalid_request",
            90_002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud. Check with your subscription \
                 administrator, this may happen if there are no active subscriptions for the \
                 tenant."
            ),
        ));
    }
    let Some(((registered_id, secrets, federated), assertion_marked_expired)) = app else {
        return Err(AadError::new(
            400,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            ),
        ));
    };

    match (secret, assertion) {
        (_, Some(assertion)) => {
            if assertion_type != Some(CLIENT_ASSERTION_TYPE) {
                // Not a credential the service knows: as if none was sent.
                return Err(no_credential());
            }
            let claims = jwt_claims(assertion);
            let claim = |name: &str| {
                claims
                    .as_ref()
                    .and_then(|c| c.get(name))
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .unwrap_or_default()
            };
            if !federated {
                return Err(AadError::new(
                    400,
                    "invalid_request",
                    70_021,
                    format!(
                        "No matching federated identity record found for presented assertion. \
                         Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: \
                         '{}'.",
                        claim("iss"),
                        claim("sub"),
                        claim("aud")
                    ),
                ));
            }
            let now = SystemTime::now();
            let exp = claims
                .as_ref()
                .and_then(|c| c.get("exp"))
                .and_then(Value::as_u64);
            let nbf = claims
                .as_ref()
                .and_then(|c| c.get("nbf"))
                .and_then(Value::as_u64);
            let past_exp = exp.is_some_and(|e| e <= unix_secs(now));
            if assertion_marked_expired || past_exp {
                let at = |secs: Option<u64>, fallback: SystemTime| {
                    iso_ticks(secs.map_or(fallback, |s| UNIX_EPOCH + Duration::from_secs(s)))
                };
                return Err(AadError::new(
                    401,
                    "invalid_client",
                    700_024,
                    format!(
                        "Client assertion is not within its valid time range. Current time: {}, \
                         assertion valid from {}, expiry time of assertion {}. Review the \
                         documentation at \
                         https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                        iso_ticks(now),
                        at(nbf, now - Duration::from_secs(3600)),
                        at(exp, now - Duration::from_secs(1)),
                    ),
                ));
            }
            Ok(mint(
                shared,
                tenant,
                &registered_id,
                &audience,
                Grant::FederatedAssertion,
            ))
        }
        (Some(secret), None) => {
            if secrets.iter().any(|s| s == secret) {
                Ok(mint(
                    shared,
                    tenant,
                    &registered_id,
                    &audience,
                    Grant::ClientSecret,
                ))
            } else {
                Err(AadError::new(
                    401,
                    "invalid_client",
                    7_000_215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the \
                         request is the client secret value, not the client secret ID, for a \
                         secret added to app '{registered_id}'."
                    ),
                ))
            }
        }
        (None, None) => Err(no_credential()),
    }
}

fn no_credential() -> AadError {
    AadError::new(
        401,
        "invalid_client",
        7_000_218,
        "The request body must contain the following parameter: 'client_assertion' or \
         'client_secret'."
            .into(),
    )
}

/// The metadata service's error shape (no AADSTS codes there).
fn imds_error(status: u16, error: &str, description: &str) -> Response {
    (
        status_code(status),
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn managed_identity(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    tokio::spawn(managed_identity_task(shared, headers, query))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn managed_identity_task(
    shared: Arc<Shared>,
    headers: HeaderMap,
    query: HashMap<String, String>,
) -> Response {
    let at = SystemTime::now();
    let param = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let resource = param("resource");
    let requested_client = param("client_id");
    let mut record = TokenRequest {
        endpoint: TokenEndpoint::ManagedIdentity,
        path: "/metadata/identity/oauth2/token".to_string(),
        tenant: None,
        client_id: requested_client.clone(),
        grant_type: None,
        scope: resource.clone(),
        credential: Credential::None,
        status: 200,
        error_code: None,
        faulted: false,
        at,
    };

    match take_fault(&shared, TokenEndpoint::ManagedIdentity) {
        Some(FaultKind::Status { code, retry_after }) => {
            record.status = code;
            record.faulted = true;
            finish(&shared, record);
            let reason = status_code(code).canonical_reason().unwrap_or("Error");
            let mut response = imds_error(code, "unknown_error", reason);
            if let Some(after) = retry_after {
                insert_header(&mut response, "retry-after", &after.as_secs().to_string());
            }
            return response;
        }
        Some(FaultKind::Hang(duration)) => pause(&shared.closing, duration).await,
        None => {}
    }

    let fail = |mut record: TokenRequest, status: u16, error: &str, description: &str| {
        record.status = status;
        finish(&shared, record);
        imds_error(status, error, description)
    };
    let metadata = header_string(&headers, "metadata");
    if !metadata.is_some_and(|m| m.eq_ignore_ascii_case("true")) {
        return fail(
            record,
            400,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if param("api-version").is_none() {
        return fail(
            record,
            400,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = resource else {
        return fail(
            record,
            400,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let identity = {
        let dir = lock(&shared.directory);
        match &requested_client {
            Some(id) => dir
                .managed
                .iter()
                .find(|m| m.client_id.eq_ignore_ascii_case(id)),
            None => dir.managed.first(),
        }
        .map(|m| (m.tenant.clone(), m.client_id.clone()))
    };
    let Some((tenant, client_id)) = identity else {
        return fail(record, 400, "invalid_request", "Identity not found");
    };
    record.tenant = Some(tenant.clone());
    record.client_id = Some(client_id.clone());
    finish(&shared, record);
    let token = mint(
        &shared,
        &tenant,
        &client_id,
        &resource,
        Grant::ManagedIdentity,
    );
    let lifetime = token
        .expires_at
        .duration_since(token.issued_at)
        .map_or(0, |d| d.as_secs());
    // The metadata service answers numbers as strings.
    let body = json!({
        "access_token": token.access_token,
        "client_id": client_id,
        "expires_in": lifetime.to_string(),
        "expires_on": unix_secs(token.expires_at).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": unix_secs(token.issued_at).to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

impl TokenRequest {
    /// The control API's JSON form.
    fn to_json(&self) -> Value {
        json!({
            "endpoint": match self.endpoint {
                TokenEndpoint::V2 => "v2.0",
                TokenEndpoint::ManagedIdentity => "managedIdentity",
            },
            "path": self.path,
            "tenant": self.tenant,
            "clientId": self.client_id,
            "grantType": self.grant_type,
            "scope": self.scope,
            "credential": match self.credential {
                Credential::None => "none",
                Credential::Secret => "secret",
                Credential::Assertion => "assertion",
            },
            "status": self.status,
            "errorCode": self.error_code,
            "faulted": self.faulted,
            "atMs": unix_millis(self.at),
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppSpec {
    tenant: String,
    client_id: String,
    secret: Option<String>,
    #[serde(default)]
    federated: bool,
}

async fn control_app(
    State(shared): State<Arc<Shared>>,
    axum::Json(spec): axum::Json<AppSpec>,
) -> StatusCode {
    let mut dir = lock(&shared.directory);
    let app = dir
        .apps
        .entry(app_key(&spec.tenant, &spec.client_id))
        .or_insert_with(|| App {
            client_id: spec.client_id.clone(),
            secrets: Vec::new(),
            federated: false,
        });
    if let Some(secret) = spec.secret
        && !app.secrets.contains(&secret)
    {
        app.secrets.push(secret);
    }
    app.federated |= spec.federated;
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ManagedSpec {
    tenant: String,
    client_id: String,
}

async fn control_managed(
    State(shared): State<Arc<Shared>>,
    axum::Json(spec): axum::Json<ManagedSpec>,
) -> StatusCode {
    let mut dir = lock(&shared.directory);
    if !dir
        .managed
        .iter()
        .any(|m| m.client_id.eq_ignore_ascii_case(&spec.client_id))
    {
        dir.managed.push(ManagedIdentity {
            tenant: spec.tenant,
            client_id: spec.client_id,
        });
    }
    StatusCode::NO_CONTENT
}

async fn control_assertions(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
) -> axum::Json<Value> {
    let seen = lock(&shared.recorded)
        .assertions
        .get(&client_id.to_ascii_lowercase())
        .cloned()
        .unwrap_or_default();
    axum::Json(json!(seen))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionSpec {
    assertion: String,
}

async fn control_expire_assertion(
    State(shared): State<Arc<Shared>>,
    axum::Json(spec): axum::Json<AssertionSpec>,
) -> StatusCode {
    lock(&shared.directory)
        .expired_assertions
        .insert(spec.assertion.trim().to_string());
    StatusCode::NO_CONTENT
}

async fn control_requests(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let recorded = lock(&shared.recorded);
    axum::Json(Value::Array(
        recorded
            .requests
            .iter()
            .map(TokenRequest::to_json)
            .collect(),
    ))
}

async fn control_tokens(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let now = SystemTime::now();
    let list: Vec<Value> = shared
        .tokens
        .all()
        .into_iter()
        .map(|t| {
            json!({
                "accessToken": t.access_token,
                "tenant": t.tenant,
                "clientId": t.client_id,
                "audience": t.audience,
                "expiresOn": unix_secs(t.expires_at),
                "valid": t.expires_at > now,
            })
        })
        .collect();
    axum::Json(Value::Array(list))
}

async fn control_expire_tokens(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.tokens.expire_all();
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LifetimeSpec {
    seconds: u64,
}

async fn control_lifetime(
    State(shared): State<Arc<Shared>>,
    axum::Json(spec): axum::Json<LifetimeSpec>,
) -> StatusCode {
    lock(&shared.directory).lifetime = Duration::from_secs(spec.seconds);
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultSpec {
    status: Option<u16>,
    retry_after_seconds: Option<u64>,
    hang_ms: Option<u64>,
    times: Option<usize>,
}

async fn control_set_fault(
    State(shared): State<Arc<Shared>>,
    axum::Json(spec): axum::Json<FaultSpec>,
) -> StatusCode {
    let fault = match (spec.status, spec.hang_ms) {
        (Some(code), None) => Fault::status(code),
        (None, Some(ms)) => Fault::hang(Duration::from_millis(ms)),
        _ => return StatusCode::BAD_REQUEST,
    };
    let fault = match spec.retry_after_seconds {
        Some(s) => fault.retry_after(Duration::from_secs(s)),
        None => fault,
    };
    let fault = match spec.times {
        Some(n) => fault.times(n),
        None => fault,
    };
    let mut dir = lock(&shared.directory);
    dir.faults.clear();
    dir.faults.push(fault);
    StatusCode::NO_CONTENT
}

async fn control_clear_fault(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.directory).faults.clear();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_v4() {
        let g = new_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        assert!(matches!(&g[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(new_guid(), g);
        assert_eq!(stable_guid("x"), stable_guid("x"));
    }

    #[test]
    fn time_forms() {
        let t = UNIX_EPOCH + Duration::from_millis(1_600_794_773_208);
        assert_eq!(aad_timestamp(t), "2020-09-22 17:12:53Z");
        assert_eq!(iso_ticks(t), "2020-09-22T17:12:53.2080000Z");
        assert_eq!(iso_ticks_offset(t), "2020-09-22T17:12:53.2080000+00:00");
        assert_eq!(compact_timestamp(t), "20200922T171253Z");
    }

    #[test]
    fn jwt_payloads() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"exp":1,"sub":"system:serviceaccount:a:b"}"#);
        let claims = jwt_claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims["exp"], 1);
        assert!(jwt_claims("not-a-jwt").is_none());
    }
}
