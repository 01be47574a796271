//! A small client for Azurite (the real Azure Blob emulator): containers and blobs.
//!
//! [`Azurite`] runs the real `azurite-blob` (installed by `e2e/azurite/install-azurite.sh`)
//! on a free loopback port with in-memory storage and kills it when dropped. [`BlobClient`]
//! speaks the Blob REST API with Shared Key authorization, so it works against Azurite and
//! against a real storage account alike: create containers, upload, list and read blobs.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use sha2::Sha256;

/// Azurite's development storage account.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The well-known key of the development account, published in Azurite's README (not a
/// secret: every Azurite accepts it).
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// REST API version sent as `x-ms-version`; supported by Azurite 3.35 without
/// `--skipApiVersionCheck` and by the real service.
pub const API_VERSION: &str = "2021-12-02";

/// How long [`Azurite::start`] waits for the emulator to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Per-request timeout of [`BlobClient`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of [`Azurite`] and [`BlobClient`].
#[derive(Debug, thiserror::Error)]
pub enum AzuriteError {
    #[error("cannot start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "azurite-blob exited ({status}) before it answered; its log: {log}, ending:\n{log_tail}"
    )]
    Exited {
        status: ExitStatus,
        log: PathBuf,
        /// The last lines of the log.
        log_tail: String,
    },
    #[error("azurite-blob did not answer on {endpoint} within {timeout:?}; its log: {log}")]
    StartTimeout {
        endpoint: String,
        timeout: Duration,
        log: PathBuf,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid storage account settings: {0}")]
    Config(String),
    #[error("{method} {url}: {source}")]
    Http {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with an error status.
    #[error("{method} {url}: HTTP {status}, {code}: {message}")]
    Service {
        method: Method,
        url: String,
        status: StatusCode,
        /// The `x-ms-error-code` (e.g. `ContainerNotFound`), empty if none was sent.
        code: String,
        /// The `<Message>` of the error body, empty if none was sent.
        message: String,
    },
    #[error("{url}: unexpected response: {reason}")]
    Malformed { url: String, reason: String },
    #[error(
        "timed out after {timeout:?} waiting for {wanted} blob(s) in container {container}; found {found:?}"
    )]
    WaitTimeout {
        container: String,
        wanted: usize,
        timeout: Duration,
        found: Vec<String>,
    },
}

impl AzuriteError {
    /// The HTTP status of a [`AzuriteError::Service`] error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            AzuriteError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The storage error code (`x-ms-error-code`) of a [`AzuriteError::Service`] error.
    pub fn code(&self) -> Option<&str> {
        match self {
            AzuriteError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A running `azurite-blob` on `127.0.0.1:<free port>` with in-memory storage. Killed
/// when dropped; its log file is removed then too, unless the thread is panicking (a
/// failing test), in which case its path is printed.
pub struct Azurite {
    child: Child,
    port: u16,
    log: PathBuf,
    keep_log: bool,
    client: BlobClient,
}

impl std::fmt::Debug for Azurite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azurite")
            .field("pid", &self.child.id())
            .field("port", &self.port)
            .field("log", &self.log)
            .finish()
    }
}

impl Azurite {
    /// Starts `azurite_blob` (the `azurite-blob` executable; it needs `node` on PATH) and
    /// waits until it answers HTTP. Its output goes to a temporary log file, named in the
    /// error when it fails to start.
    pub async fn start(azurite_blob: &Path) -> Result<Azurite, AzuriteError> {
        // The free port is found by binding port 0 and closing it again, so another
        // process may take it before Azurite binds it: retry on EADDRINUSE.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(azurite_blob).await {
                Err(AzuriteError::Exited { log, log_tail, .. })
                    if attempt < 3 && log_tail.contains("EADDRINUSE") =>
                {
                    let _ = std::fs::remove_file(&log);
                }
                other => return other,
            }
        }
    }

    async fn start_once(azurite_blob: &Path) -> Result<Azurite, AzuriteError> {
        let port = crate::free_port().map_err(|source| AzuriteError::Io {
            context: "cannot find a free loopback port".into(),
            source,
        })?;
        let endpoint = format!("http://127.0.0.1:{port}/{DEV_ACCOUNT}");
        let client = BlobClient::new(&endpoint, DEV_ACCOUNT, DEV_ACCOUNT_KEY)?;
        let log = log_path(port);
        let log_file = File::create(&log).map_err(|source| AzuriteError::Io {
            context: format!("cannot create {}", log.display()),
            source,
        })?;
        let log_err = log_file.try_clone().map_err(|source| AzuriteError::Io {
            context: format!("cannot reopen {}", log.display()),
            source,
        })?;
        let child = Command::new(azurite_blob)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .args([
                // Nothing on disk (with it, no files are written to the working directory).
                "--inMemoryPersistence",
                // The collectors' Azure SDK may send a newer x-ms-version than this
                // Azurite knows.
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ])
            // Just in case a future version writes anything: never into the repository.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|source| {
                let _ = std::fs::remove_file(&log);
                AzuriteError::Spawn {
                    bin: azurite_blob.to_path_buf(),
                    source,
                }
            })?;
        // From here on, dropping `azurite` kills the process.
        let mut azurite = Azurite {
            child,
            port,
            log,
            keep_log: true,
            client,
        };
        // On error the process is killed, but its log is kept for the error message.
        azurite.wait_until_ready().await?;
        azurite.keep_log = false;
        Ok(azurite)
    }

    /// Polls until the blob endpoint answers any HTTP response (even 403: the port is
    /// served by Azurite then), or the process exits, or [`START_TIMEOUT`] passes.
    async fn wait_until_ready(&mut self) -> Result<(), AzuriteError> {
        let started = Instant::now();
        let probe = format!("{}?comp=list", self.blob_endpoint());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|source| AzuriteError::Http {
                method: Method::GET,
                url: probe.clone(),
                source,
            })?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(AzuriteError::Exited {
                    status,
                    log: self.log.clone(),
                    log_tail: log_tail(&self.log, 20),
                });
            }
            if http.get(&probe).send().await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(AzuriteError::StartTimeout {
                    endpoint: self.blob_endpoint(),
                    timeout: START_TIMEOUT,
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The loopback port Azurite's blob service listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file Azurite's stdout and stderr (its access log) go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1` (path-style, as Azurite serves it).
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    /// A connection string for the development account, as Azure SDKs (and the
    /// collector's azure_blob exporter with `auth.type: connection_string`) take it.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};BlobEndpoint={};",
            self.blob_endpoint()
        )
    }

    /// A client for the development account on this Azurite.
    pub fn client(&self) -> BlobClient {
        self.client.clone()
    }

    /// Kills Azurite now (dropping it does the same).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("azurite log kept: {}", self.log.display());
        } else if !self.keep_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn log_path(port: u16) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "telemux-azurite-{}-{}-{port}-{nanos}.log",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The last `lines` lines of a log file (empty if unreadable).
fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An Azure Blob client for one storage account, authorizing every request with Shared
/// Key. Works against Azurite (path-style endpoint `http://host:port/<account>`) and the
/// real service (`https://<account>.blob.core.windows.net`).
#[derive(Clone)]
pub struct BlobClient {
    endpoint: Url,
    account: String,
    key: Vec<u8>,
    http: reqwest::Client,
    page_size: Option<u32>,
}

impl std::fmt::Debug for BlobClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl BlobClient {
    /// A client for `account` at the blob service `endpoint`, with the account's base64
    /// key.
    pub fn new(endpoint: &str, account: &str, account_key: &str) -> Result<Self, AzuriteError> {
        let mut endpoint = Url::parse(endpoint)
            .map_err(|e| AzuriteError::Config(format!("blob endpoint {endpoint:?}: {e}")))?;
        if endpoint.cannot_be_a_base() || !matches!(endpoint.scheme(), "http" | "https") {
            return Err(AzuriteError::Config(format!(
                "blob endpoint {endpoint} is not an http(s) URL"
            )));
        }
        // Paths are appended segment by segment: no trailing slash, no query.
        let path = endpoint.path().trim_end_matches('/').to_owned();
        endpoint.set_path(&path);
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        if account.is_empty() {
            return Err(AzuriteError::Config("empty account name".into()));
        }
        let key = BASE64
            .decode(account_key.trim())
            .map_err(|e| AzuriteError::Config(format!("account key is not base64: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // Azurite (Node) closes a connection idle for 5 s; reusing one it is closing fails
            // the request with an incomplete message. Idle connections go well before that.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .map_err(|source| AzuriteError::Http {
                method: Method::GET,
                url: endpoint.to_string(),
                source,
            })?;
        Ok(BlobClient {
            endpoint,
            account: account.to_owned(),
            key,
            http,
            page_size: None,
        })
    }

    /// A client from a storage connection string (`AccountName`, `AccountKey`, and
    /// `BlobEndpoint`, or `DefaultEndpointsProtocol` + `EndpointSuffix`).
    pub fn from_connection_string(connection_string: &str) -> Result<Self, AzuriteError> {
        let mut fields = BTreeMap::new();
        for part in connection_string
            .split(';')
            .filter(|p| !p.trim().is_empty())
        {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                AzuriteError::Config(format!("connection string part without '=': {part:?}"))
            })?;
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let get = |k: &str| {
            fields
                .get(k)
                .cloned()
                .ok_or_else(|| AzuriteError::Config(format!("connection string has no {k}")))
        };
        let account = get("accountname")?;
        let key = get("accountkey")?;
        let endpoint = match fields.get("blobendpoint") {
            Some(e) => e.clone(),
            None => {
                let protocol = fields
                    .get("defaultendpointsprotocol")
                    .map_or("https", String::as_str);
                let suffix = fields
                    .get("endpointsuffix")
                    .map_or("core.windows.net", String::as_str);
                format!("{protocol}://{account}.blob.{suffix}")
            }
        };
        BlobClient::new(&endpoint, &account, &key)
    }

    /// The same client, listing at most `n` blobs per request (paging with markers).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = Some(n);
        self
    }

    /// The blob service endpoint, without trailing slash.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str().trim_end_matches('/')
    }

    /// The storage account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Creates a container (private access). An existing container is fine.
    pub async fn create_container(&self, name: &str) -> Result<(), AzuriteError> {
        let mut url = self.url(&[name])?;
        url.query_pairs_mut().append_pair("restype", "container");
        match self
            .send(Method::PUT, url, HeaderMap::new(), Vec::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.status() == Some(StatusCode::CONFLICT)
                    && e.code() == Some("ContainerAlreadyExists") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Uploads `body` as a block blob (Put Blob), replacing any blob of that name.
    pub async fn put_blob(
        &self,
        container: &str,
        name: &str,
        body: impl Into<Vec<u8>>,
        content_type: &str,
    ) -> Result<(), AzuriteError> {
        let url = self.blob_url(container, name)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-ms-blob-type"),
            HeaderValue::from_static("BlockBlob"),
        );
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_str(content_type)
                .map_err(|e| AzuriteError::Config(format!("content type {content_type:?}: {e}")))?,
        );
        self.send(Method::PUT, url, headers, body.into()).await?;
        Ok(())
    }

    /// Names of all blobs in a container, in the service's (lexicographic) order,
    /// following `NextMarker` over all pages.
    pub async fn list_blobs(&self, container: &str) -> Result<Vec<String>, AzuriteError> {
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut url = self.url(&[container])?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("restype", "container");
                q.append_pair("comp", "list");
                if let Some(n) = self.page_size {
                    q.append_pair("maxresults", &n.to_string());
                }
                if let Some(m) = &marker {
                    q.append_pair("marker", m);
                }
            }
            let shown = url.to_string();
            let body = self
                .send(Method::GET, url, HeaderMap::new(), Vec::new())
                .await?;
            let xml = String::from_utf8(body).map_err(|e| AzuriteError::Malformed {
                url: shown.clone(),
                reason: format!("blob list is not UTF-8: {e}"),
            })?;
            let page = parse_blob_list(&xml)
                .map_err(|reason| AzuriteError::Malformed { url: shown, reason })?;
            names.extend(page.names);
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => return Ok(names),
            }
        }
    }

    /// The content of a blob.
    pub async fn get_blob(&self, container: &str, name: &str) -> Result<Vec<u8>, AzuriteError> {
        let url = self.blob_url(container, name)?;
        self.send(Method::GET, url, HeaderMap::new(), Vec::new())
            .await
    }

    /// Polls [`BlobClient::list_blobs`] until the container holds at least `at_least`
    /// blobs, and returns their names; a missing container counts as empty.
    pub async fn wait_for_blobs(
        &self,
        container: &str,
        at_least: usize,
        timeout: Duration,
    ) -> Result<Vec<String>, AzuriteError> {
        let started = Instant::now();
        loop {
            let found = match self.list_blobs(container).await {
                Ok(names) => names,
                Err(e) if e.code() == Some("ContainerNotFound") => Vec::new(),
                Err(e) => return Err(e),
            };
            if found.len() >= at_least {
                return Ok(found);
            }
            if started.elapsed() > timeout {
                return Err(AzuriteError::WaitTimeout {
                    container: container.to_owned(),
                    wanted: at_least,
                    timeout,
                    found,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The endpoint with path segments appended (each percent-encoded).
    fn url(&self, segments: &[&str]) -> Result<Url, AzuriteError> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| AzuriteError::Config(format!("{} cannot have a path", self.endpoint)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// URL of a blob; `/` in a blob name stays a path separator (virtual directories).
    fn blob_url(&self, container: &str, name: &str) -> Result<Url, AzuriteError> {
        if name.is_empty() {
            return Err(AzuriteError::Config("empty blob name".into()));
        }
        let mut segments = vec![container];
        segments.extend(name.split('/'));
        self.url(&segments)
    }

    /// Sends a request authorized with Shared Key; returns the body of a 2xx response
    /// and turns anything else into [`AzuriteError::Service`].
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, AzuriteError> {
        let shown = url.to_string();
        let http_err = |source| AzuriteError::Http {
            method: method.clone(),
            url: shown.clone(),
            source,
        };
        let mut headers = headers;
        let date = httpdate::fmt_http_date(SystemTime::now());
        headers.insert(
            HeaderName::from_static("x-ms-date"),
            HeaderValue::from_str(&date)
                .map_err(|e| AzuriteError::Config(format!("date {date:?}: {e}")))?,
        );
        headers.insert(
            HeaderName::from_static("x-ms-version"),
            HeaderValue::from_static(API_VERSION),
        );
        // Sent explicitly (also 0), so the signed length is what goes on the wire.
        if method == Method::PUT || method == Method::POST || !body.is_empty() {
            headers.insert(
                reqwest::header::CONTENT_LENGTH,
                HeaderValue::from(body.len()),
            );
        }
        let to_sign = string_to_sign(&method, &url, &headers, &self.account);
        let signature = hmac_sha256_base64(&self.key, &to_sign)?;
        let authorization = format!("SharedKey {}:{signature}", self.account);
        headers.insert(
            reqwest::header::AUTHORIZATION,
            HeaderValue::from_str(&authorization)
                .map_err(|e| AzuriteError::Config(format!("authorization header: {e}")))?,
        );

        let mut request = self.http.request(method.clone(), url).headers(headers);
        if !body.is_empty() {
            request = request.body(body);
        }
        let response = request.send().await.map_err(http_err)?;
        let status = response.status();
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.map_err(http_err)?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let text = String::from_utf8_lossy(&bytes);
        let code = if code.is_empty() {
            xml_element_text(&text, "Code").unwrap_or_default()
        } else {
            code
        };
        // Azure appends "RequestId:..." and "Time:..." lines to the message.
        let message = xml_element_text(&text, "Message")
            .map(|m| m.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        Err(AzuriteError::Service {
            method,
            url: shown,
            status,
            code,
            message,
        })
    }
}

/// The Shared Key string-to-sign of a Blob service request (version 2009-09-19 and
/// later; "Authorize with Shared Key" in the Azure Storage REST reference):
///
/// ```text
/// VERB\nContent-Encoding\nContent-Language\nContent-Length\nContent-MD5\nContent-Type\n
/// Date\nIf-Modified-Since\nIf-Match\nIf-None-Match\nIf-Unmodified-Since\nRange\n
/// CanonicalizedHeaders CanonicalizedResource
/// ```
///
/// Content-Length is empty when 0 (version 2015-02-21 and later). CanonicalizedHeaders:
/// every `x-ms-*` header, name lower-cased, sorted by name, `name:value\n` with the value's
/// runs of whitespace folded to one space and trimmed. CanonicalizedResource:
/// `/<account><encoded URI path>`, then for each query parameter, sorted by lower-cased
/// name, `\n<name>:<decoded values, sorted, comma-separated>`.
fn string_to_sign(method: &Method, url: &Url, headers: &HeaderMap, account: &str) -> String {
    let header = |name: &str| -> String {
        let joined = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        if name == "content-length" && joined == "0" {
            String::new()
        } else {
            joined
        }
    };
    let mut s = String::new();
    s.push_str(method.as_str());
    s.push('\n');
    for name in [
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ] {
        s.push_str(&header(name));
        s.push('\n');
    }

    let mut ms_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str().to_ascii_lowercase();
        if name.starts_with("x-ms-") {
            let value = String::from_utf8_lossy(value.as_bytes());
            let folded = value.split_whitespace().collect::<Vec<_>>().join(" ");
            ms_headers.entry(name).or_default().push(folded);
        }
    }
    for (name, values) in &ms_headers {
        s.push_str(name);
        s.push(':');
        s.push_str(&values.join(","));
        s.push('\n');
    }

    s.push('/');
    s.push_str(account);
    s.push_str(url.path());
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        params
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for (name, mut values) in params {
        values.sort();
        s.push('\n');
        s.push_str(&name);
        s.push(':');
        s.push_str(&values.join(","));
    }
    s
}

fn hmac_sha256_base64(key: &[u8], message: &str) -> Result<String, AzuriteError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|e| AzuriteError::Config(format!("account key: {e}")))?;
    mac.update(message.as_bytes());
    Ok(BASE64.encode(mac.finalize().into_bytes()))
}

/// One page of a List Blobs response.
#[derive(Debug, PartialEq)]
struct BlobListPage {
    names: Vec<String>,
    next_marker: Option<String>,
}

/// Parses the names and the `NextMarker` out of a List Blobs response
/// (`<EnumerationResults><Blobs><Blob><Name>..</Name>..</Blob>..</Blobs><NextMarker/>`).
/// Names are XML-unescaped, and percent-decoded when marked `Encoded="true"`.
fn parse_blob_list(xml: &str) -> Result<BlobListPage, String> {
    if !xml.contains("<EnumerationResults") {
        return Err("no <EnumerationResults> element".into());
    }
    let mut names = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Blob>") {
        let after = &rest[start + "<Blob>".len()..];
        let end = after
            .find("</Blob>")
            .ok_or("a <Blob> element is not closed")?;
        let blob = &after[..end];
        let name_start = blob.find("<Name").ok_or("a <Blob> has no <Name>")?;
        let tag_and_rest = &blob[name_start + "<Name".len()..];
        let tag_end = tag_and_rest.find('>').ok_or("unterminated <Name> tag")?;
        let attributes = &tag_and_rest[..tag_end];
        let text_and_rest = &tag_and_rest[tag_end + 1..];
        let text_end = text_and_rest
            .find("</Name>")
            .ok_or("a <Name> element is not closed")?;
        let mut name = xml_unescape(&text_and_rest[..text_end])?;
        if attributes.contains("Encoded=\"true\"") {
            name = percent_decode(&name)?;
        }
        names.push(name);
        rest = &after[end + "</Blob>".len()..];
    }
    let next_marker = xml_element_text(xml, "NextMarker").filter(|m| !m.is_empty());
    Ok(BlobListPage { names, next_marker })
}

/// Unescaped text of the first `<tag>text</tag>` (None if absent or self-closing).
fn xml_element_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    xml_unescape(&xml[start..start + len]).ok()
}

fn xml_unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .ok_or_else(|| format!("unterminated entity in {s:?}"))?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{entity}; in {s:?}"))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| format!("percent-decoded name is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn string_to_sign_of_put_blob_on_the_emulator() {
        let url =
            Url::parse("http://127.0.0.1:10000/devstoreaccount1/traces/2025/01/a.json").unwrap();
        let h = headers(&[
            ("x-ms-version", "2021-12-02"),
            ("content-type", "application/json"),
            ("content-length", "11"),
            ("x-ms-date", "Fri, 24 Jan 2025 10:30:45 GMT"),
            ("x-ms-blob-type", "BlockBlob"),
        ]);
        assert_eq!(
            string_to_sign(&Method::PUT, &url, &h, "devstoreaccount1"),
            "PUT\n\n\n11\n\napplication/json\n\n\n\n\n\n\n\
             x-ms-blob-type:BlockBlob\n\
             x-ms-date:Fri, 24 Jan 2025 10:30:45 GMT\n\
             x-ms-version:2021-12-02\n\
             /devstoreaccount1/devstoreaccount1/traces/2025/01/a.json"
        );
    }

    #[test]
    fn string_to_sign_canonicalizes_query_and_zero_length() {
        // Query names lower-cased and sorted, values decoded; Content-Length 0 is empty;
        // header whitespace folded.
        let url =
            Url::parse("https://acct.blob.core.windows.net/c?restype=container&comp=list&marker=a%2Fb%20c&Include=metadata&include=snapshots")
                .unwrap();
        let h = headers(&[
            ("content-length", "0"),
            ("x-ms-meta-x", "  a   b "),
            ("X-MS-Date", "d"),
        ]);
        assert_eq!(
            string_to_sign(&Method::GET, &url, &h, "acct"),
            "GET\n\n\n\n\n\n\n\n\n\n\n\n\
             x-ms-date:d\nx-ms-meta-x:a b\n\
             /acct/c\ncomp:list\ninclude:metadata,snapshots\nmarker:a/b c\nrestype:container"
        );
    }

    #[test]
    fn signature_matches_openssl() {
        // The string-to-sign of the test above, signed independently:
        // printf '<string>' | openssl dgst -sha256 -mac HMAC -macopt hexkey:<key hex> -binary | base64
        let key = BASE64.decode(DEV_ACCOUNT_KEY).unwrap();
        let to_sign = "PUT\n\n\n11\n\napplication/json\n\n\n\n\n\n\n\
                       x-ms-blob-type:BlockBlob\n\
                       x-ms-date:Fri, 24 Jan 2025 10:30:45 GMT\n\
                       x-ms-version:2021-12-02\n\
                       /devstoreaccount1/devstoreaccount1/traces/2025/01/a.json";
        assert_eq!(
            hmac_sha256_base64(&key, to_sign).unwrap(),
            "h32eJ2AadMwn9ypliA3i7VIbr2PT9MaTyJhU5v0XPzg="
        );
        assert_eq!(
            hmac_sha256_base64(&key, "hello").unwrap(),
            "RZNkcjdiqwLn8Mmp35VHt1V5CCIG/zvduk6oPMOEU+s="
        );
    }

    #[test]
    fn parses_blob_lists() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c"><MaxResults>2</MaxResults><Blobs><Blob><Name>a&amp;b.json</Name><Properties><Content-Length>3</Content-Length></Properties></Blob><Blob><Name Encoded="true">x%2Fy%0A</Name><Properties/></Blob></Blobs><NextMarker>page2</NextMarker></EnumerationResults>"#;
        assert_eq!(
            parse_blob_list(xml).unwrap(),
            BlobListPage {
                names: vec!["a&b.json".into(), "x/y\n".into()],
                next_marker: Some("page2".into()),
            }
        );
        let last = r#"<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>"#;
        assert_eq!(
            parse_blob_list(last).unwrap(),
            BlobListPage {
                names: vec![],
                next_marker: None
            }
        );
        let empty_marker =
            r#"<EnumerationResults><Blobs></Blobs><NextMarker></NextMarker></EnumerationResults>"#;
        assert_eq!(parse_blob_list(empty_marker).unwrap().next_marker, None);
        assert!(parse_blob_list("<Error/>").is_err());
        assert!(parse_blob_list("<EnumerationResults><Blobs><Blob><Name>x").is_err());
    }

    #[test]
    fn unescapes_xml() {
        assert_eq!(
            xml_unescape("a&lt;&#62;&#x41;&quot;&apos;").unwrap(),
            "a<>A\"'"
        );
        assert!(xml_unescape("a&bogus;").is_err());
        assert!(xml_unescape("a&amp").is_err());
    }

    #[test]
    fn parses_connection_strings() {
        let c = BlobClient::from_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;"
        ))
        .unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(c.account(), "devstoreaccount1");
        let c = BlobClient::from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(c.endpoint(), "https://acct.blob.core.windows.net");
        assert!(BlobClient::from_connection_string("AccountName=a").is_err());
        assert!(BlobClient::new("http://x/y", "a", "not base64!").is_err());
    }

    #[test]
    fn blob_urls_keep_slashes_and_encode_the_rest() {
        let c = BlobClient::new("http://127.0.0.1:1/devstoreaccount1/", "a", "a2V5").unwrap();
        assert_eq!(
            c.blob_url("logs", "2025/01/24/logs_10 30#1.json")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:1/devstoreaccount1/logs/2025/01/24/logs_10%2030%231.json"
        );
    }
}
