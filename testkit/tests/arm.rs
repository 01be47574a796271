//! The resource manager and Entra ID emulators answer like the services: token flows and their
//! errors, component create/update/get/list/delete, provisioning, faults, authentication.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use telemux_testkit::arm::{self, ArmEmulator, Method};
use telemux_testkit::entra::{self, CLIENT_ASSERTION_TYPE, EntraEmulator, TokenEndpoint};

const TENANT: &str = "3f6a1c0e-5b7d-4e2a-9c1f-0d8e7b6a5c4d";
const OTHER_TENANT: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const CLIENT: &str = "6c1b2d3e-4f50-4617-8293-a4b5c6d7e8f9";
const SECRET: &str = "Xy8Q~emulated.secret-value_1";
const FEDERATED_CLIENT: &str = "0d1e2f30-4152-4637-8849-5a6b7c8d9e0f";
const MI_CLIENT: &str = "5e6f7081-92a3-44b5-86c7-d8e9f0a1b2c3";
const SUB: &str = "11111111-2222-4333-8444-555555555555";
const OTHER_SUB: &str = "66666666-7777-4888-8999-aaaaaaaaaaaa";
const RG: &str = "telemux-rg";
const ARM_SCOPE: &str = "https://management.azure.com/.default";

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn start() -> (EntraEmulator, ArmEmulator) {
    let entra = EntraEmulator::start().await.unwrap();
    entra.allow_secret(TENANT, CLIENT, SECRET);
    entra.allow_federated(TENANT, FEDERATED_CLIENT);
    entra.allow_managed_identity(TENANT, MI_CLIENT);
    let arm = ArmEmulator::start(&entra).await.unwrap();
    (entra, arm)
}

/// Posts a token request form; answers (status, headers, body).
async fn token_request(
    entra: &EntraEmulator,
    tenant: &str,
    form: &[(&str, &str)],
) -> (u16, HeaderMap, Value) {
    let resp = http()
        .post(entra.token_url(tenant))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap();
    (status, headers, body)
}

async fn secret_token(entra: &EntraEmulator) -> String {
    let (status, _, body) = token_request(
        entra,
        TENANT,
        &[
            ("client_id", CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, HeaderMap, Value) {
    let mut req = http().request(method, url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, headers, body)
}

fn component_body(location: &str) -> Value {
    json!({
        "location": location,
        "kind": "web",
        "properties": {
            "Application_Type": "web",
            "Flow_Type": "Bluefield",
            "Request_Source": "rest",
            "WorkspaceResourceId": format!("/subscriptions/{SUB}/resourcegroups/{RG}/providers/microsoft.operationalinsights/workspaces/ws"),
        },
    })
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A JWT-shaped assertion like a projected service-account token.
fn assertion(exp: u64, serial: u32) -> String {
    let claims = json!({
        "aud": ["api://AzureADTokenExchange"],
        "iss": "https://oidc.example.test/cluster",
        "sub": "system:serviceaccount:telemux:operator",
        "exp": exp,
        "nbf": exp.saturating_sub(3600),
        "jti": serial,
    });
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_aad_error(status: u16, body: &Value, want_status: u16, error: &str, code: u64) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("Trace ID: "), "{description}");
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    assert!(is_guid(body["trace_id"].as_str().unwrap()));
}

#[tokio::test]
async fn client_secret_tokens_and_errors() {
    let (entra, _arm) = start().await;
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], json!(3599), "a JSON number");
    assert_eq!(body["ext_expires_in"], json!(3599));
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");
    assert!(entra.token_is_valid(token));
    let issued = entra.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].client_id, CLIENT);
    assert_eq!(issued[0].tenant, TENANT);
    assert_eq!(issued[0].audience, "https://management.azure.com/");
    assert_eq!(issued[0].grant, entra::Grant::ClientSecret);

    // A wrong secret, with the caller's client-request-id as correlation id.
    let resp = http()
        .post(entra.token_url(TENANT))
        .header("client-request-id", "c0ffee00-0000-4000-8000-000000000001")
        .form(&[
            ("client_id", CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", "the-secret-id-not-its-value"),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_aad_error(status, &body, 401, "invalid_client", 7_000_215);
    assert_eq!(
        body["correlation_id"],
        "c0ffee00-0000-4000-8000-000000000001"
    );
    assert!(
        body["error_uri"]
            .as_str()
            .unwrap()
            .ends_with("/error?code=7000215")
    );

    let base = |extra: &[(&'static str, &'static str)]| {
        let mut form = vec![
            ("client_id", CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
        ];
        form.extend_from_slice(extra);
        form
    };
    // Unknown app in a known tenant.
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", "deadbeef-0000-4000-8000-000000000000"),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_aad_error(status, &body, 400, "unauthorized_client", 700_016);
    // Unknown tenant.
    let (status, _, body) =
        token_request(&entra, OTHER_TENANT, &base(&[("client_secret", SECRET)])).await;
    assert_aad_error(status, &body, 400, "invalid_request", 90_002);
    // Missing fields.
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[("client_id", CLIENT), ("client_secret", SECRET)],
    )
    .await;
    assert_aad_error(status, &body, 400, "invalid_request", 900_144);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("'grant_type'")
    );
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", CLIENT),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_aad_error(status, &body, 400, "invalid_request", 900_144);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("'scope'")
    );
    // A JSON body is not a form: grant_type is missing.
    let resp = http()
        .post(entra.token_url(TENANT))
        .json(&json!({"client_id": CLIENT, "grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_aad_error(status, &body, 400, "invalid_request", 900_144);
    // No credential at all.
    let (status, _, body) = token_request(&entra, TENANT, &base(&[])).await;
    assert_aad_error(status, &body, 401, "invalid_client", 7_000_218);
    // Other grant types and scopes without /.default.
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "password"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_aad_error(status, &body, 400, "unsupported_grant_type", 70_003);
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", CLIENT),
            ("scope", "https://management.azure.com/user_impersonation"),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_aad_error(status, &body, 400, "invalid_scope", 1_002_012);

    // A rotated secret: both work until the old one is removed.
    entra.allow_secret(TENANT, CLIENT, "new-secret");
    let (status, _, _) =
        token_request(&entra, TENANT, &base(&[("client_secret", "new-secret")])).await;
    assert_eq!(status, 200);
    entra.remove_secret(TENANT, CLIENT, SECRET);
    let (status, _, _) = token_request(&entra, TENANT, &base(&[("client_secret", SECRET)])).await;
    assert_eq!(status, 401);

    let requests = entra.requests();
    assert_eq!(requests.len(), entra.count());
    assert_eq!(requests[0].status, 200);
    assert_eq!(requests[0].credential, entra::Credential::Secret);
    assert_eq!(requests[1].error_code, Some(7_000_215));
}

#[tokio::test]
async fn federated_assertions_are_recorded_and_can_expire() {
    let (entra, _arm) = start().await;
    let exp = now_secs() + 3600;
    let first = assertion(exp, 1);
    let rotated = assertion(exp + 60, 2);
    for a in [&first, &rotated] {
        let (status, _, body) = token_request(
            &entra,
            TENANT,
            &[
                ("client_id", FEDERATED_CLIENT),
                ("scope", ARM_SCOPE),
                ("grant_type", "client_credentials"),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", a),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(entra.token_is_valid(body["access_token"].as_str().unwrap()));
    }
    assert_eq!(
        entra.assertions_seen(FEDERATED_CLIENT),
        vec![first.clone(), rotated.clone()]
    );
    assert_eq!(entra.issued()[1].grant, entra::Grant::FederatedAssertion);

    let with_assertion = |a: &str| {
        vec![
            ("client_id", FEDERATED_CLIENT.to_string()),
            ("scope", ARM_SCOPE.to_string()),
            ("grant_type", "client_credentials".to_string()),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_string()),
            ("client_assertion", a.to_string()),
        ]
    };
    let post = |form: Vec<(&'static str, String)>| {
        let url = entra.token_url(TENANT);
        async move {
            let resp = http().post(url).form(&form).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };

    // Marked expired (the old content of a rotated file).
    entra.expire_assertion(&first);
    let (status, body) = post(with_assertion(&first)).await;
    assert_aad_error(status, &body, 401, "invalid_client", 700_024);
    // A JWT whose exp has passed is refused without being marked.
    let stale = assertion(now_secs() - 10, 3);
    let (status, body) = post(with_assertion(&stale)).await;
    assert_aad_error(status, &body, 401, "invalid_client", 700_024);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Client assertion is not within its valid time range")
    );
    // Every assertion presented was recorded, accepted or not.
    assert_eq!(entra.assertions_seen(FEDERATED_CLIENT).len(), 4);
    assert_eq!(
        entra
            .assertions_seen(&FEDERATED_CLIENT.to_ascii_uppercase())
            .len(),
        4,
        "client ids compare case-insensitively"
    );

    // An app without a federated credential.
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &rotated),
        ],
    )
    .await;
    assert_aad_error(status, &body, 400, "invalid_request", 70_021);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("system:serviceaccount:telemux:operator")
    );
    // An assertion without its type.
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", FEDERATED_CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_assertion", &rotated),
        ],
    )
    .await;
    assert_aad_error(status, &body, 400, "invalid_request", 900_144);
    // A federated app does not take secrets.
    let (status, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", FEDERATED_CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_aad_error(status, &body, 401, "invalid_client", 7_000_215);
}

#[tokio::test]
async fn managed_identity_endpoint() {
    let (entra, arm) = start().await;
    let url = entra.managed_identity_url();
    let query = [
        ("api-version", "2018-02-01"),
        ("resource", "https://management.azure.com/"),
    ];
    let resp = http()
        .get(&url)
        .header("Metadata", "true")
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://management.azure.com/");
    assert_eq!(body["expires_in"], "3599", "a string here");
    let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(expires_on.abs_diff(now_secs() + 3599) < 10);
    assert_eq!(body["client_id"], MI_CLIENT);
    let token = body["access_token"].as_str().unwrap();
    assert!(entra.token_is_valid(token));
    // The token works on ARM.
    let (status, _, _) = call(
        reqwest::Method::GET,
        &format!(
            "{}/subscriptions/{SUB}/providers/Microsoft.Insights/components?api-version=2020-02-02",
            arm.endpoint()
        ),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Without the Metadata header.
    let resp = http().get(&url).query(&query).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    // Without resource.
    let resp = http()
        .get(&url)
        .header("Metadata", "true")
        .query(&[("api-version", "2018-02-01")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // An identity the machine does not have.
    let resp = http()
        .get(&url)
        .header("Metadata", "true")
        .query(&query)
        .query(&[("client_id", CLIENT)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error_description"], "Identity not found");
    let requests = entra.requests();
    assert_eq!(requests[0].endpoint, TokenEndpoint::ManagedIdentity);
    assert_eq!(requests.len(), 4);
}

#[tokio::test]
async fn entra_faults() {
    let (entra, _arm) = start().await;
    let form = [
        ("client_id", CLIENT),
        ("scope", ARM_SCOPE),
        ("grant_type", "client_credentials"),
        ("client_secret", SECRET),
    ];
    entra.set_fault(
        entra::Fault::status(503)
            .retry_after(Duration::from_secs(7))
            .times(1),
    );
    let (status, headers, body) = token_request(&entra, TENANT, &form).await;
    assert_aad_error(status, &body, 503, "temporarily_unavailable", 90_033);
    assert_eq!(headers["retry-after"], "7");
    let (status, _, _) = token_request(&entra, TENANT, &form).await;
    assert_eq!(status, 200, "the fault applied once");

    entra.set_fault(entra::Fault::status(500));
    for _ in 0..2 {
        let (status, _, body) = token_request(&entra, TENANT, &form).await;
        assert_aad_error(status, &body, 500, "server_error", 50_000);
    }
    entra.clear_faults();

    // A hang provokes the client's timeout; the emulator answers later.
    entra.set_fault(entra::Fault::hang(Duration::from_secs(3)).times(1));
    let err = http()
        .post(entra.token_url(TENANT))
        .form(&form)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");

    // A fault for the managed-identity endpoint only.
    entra.set_fault(entra::Fault::status(500).only(TokenEndpoint::ManagedIdentity));
    let (status, _, _) = token_request(&entra, TENANT, &form).await;
    assert_eq!(status, 200);
    let resp = http()
        .get(entra.managed_identity_url())
        .header("Metadata", "true")
        .query(&[
            ("api-version", "2018-02-01"),
            ("resource", "https://management.azure.com/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    assert!(entra.requests().iter().any(|r| r.faulted));
}

#[tokio::test]
async fn create_update_and_idempotent_put() {
    let (entra, arm) = start().await;
    let token = secret_token(&entra).await;
    let url = arm.component_url(SUB, RG, "tenant-a");
    let (status, headers, created) = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(&component_body("South Central US")),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        created["id"],
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Insights/components/tenant-a"
        )
    );
    assert_eq!(created["name"], "tenant-a");
    assert_eq!(created["type"], "Microsoft.Insights/components");
    assert_eq!(created["location"], "South Central US");
    assert_eq!(created["kind"], "web");
    assert_eq!(created["tags"], json!({}));
    let props = &created["properties"];
    let app_id = props["AppId"].as_str().unwrap().to_string();
    let ikey = props["InstrumentationKey"].as_str().unwrap().to_string();
    assert!(is_guid(&app_id) && is_guid(&ikey));
    assert_eq!(props["ApplicationId"], "tenant-a");
    assert_eq!(props["Name"], "tenant-a");
    assert_eq!(props["Application_Type"], "web");
    assert_eq!(props["Flow_Type"], "Bluefield");
    assert_eq!(props["Request_Source"], "rest");
    assert_eq!(props["TenantId"], TENANT);
    assert_eq!(props["provisioningState"], "Succeeded");
    assert_eq!(props["IngestionMode"], "LogAnalytics");
    assert_eq!(props["RetentionInDays"], 90);
    assert_eq!(props["Retention"], "P90D");
    assert_eq!(props["Ver"], "v2");
    assert_eq!(props["publicNetworkAccessForIngestion"], "Enabled");
    assert_eq!(props["DisableLocalAuth"], false);
    assert!(props["SamplingPercentage"].is_null());
    assert!(
        props["WorkspaceResourceId"]
            .as_str()
            .unwrap()
            .ends_with("/workspaces/ws")
    );
    assert_eq!(
        props["ConnectionString"],
        format!(
            "InstrumentationKey={ikey};IngestionEndpoint=https://southcentralus-0.in.applicationinsights.azure.com/;LiveEndpoint=https://southcentralus.livediagnostics.monitor.azure.com/;ApplicationId={app_id}"
        )
    );
    let creation = props["CreationDate"].as_str().unwrap().to_string();
    assert!(creation.ends_with("+00:00"), "{creation}");
    let etag = created["etag"].as_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    for h in [
        "x-ms-request-id",
        "x-ms-correlation-request-id",
        "x-ms-ratelimit-remaining-subscription-writes",
        "x-ms-ratelimit-remaining-subscription-global-writes",
    ] {
        assert!(headers.contains_key(h), "{h}");
    }

    // The same PUT again: 200, a new etag, the same identity.
    let (status, _, again) = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(&component_body("South Central US")),
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(again["etag"], created["etag"]);
    assert_eq!(again["properties"]["AppId"], app_id.as_str());
    assert_eq!(again["properties"]["InstrumentationKey"], ikey.as_str());
    assert_eq!(again["properties"]["CreationDate"], creation.as_str());

    // An update of writable properties and tags; read-only ones in the body are ignored. The
    // region may be written differently.
    let update = json!({
        "location": "southcentralus",
        "kind": "other",
        "tags": {"telemux.io/tenant": "a"},
        "properties": {
            "application_type": "WEB",
            "RetentionInDays": 30,
            "DisableLocalAuth": true,
            "SamplingPercentage": 50,
            "publicNetworkAccessForQuery": "disabled",
            "IngestionMode": "LogAnalytics",
            "DisableIpMasking": true,
            "InstrumentationKey": "00000000-0000-0000-0000-000000000000",
        },
    });
    let (status, _, updated) = call(reqwest::Method::PUT, &url, Some(&token), Some(&update)).await;
    assert_eq!(status, 200, "{updated}");
    let props = &updated["properties"];
    assert_eq!(props["InstrumentationKey"], ikey.as_str());
    assert_eq!(props["RetentionInDays"], 30);
    assert_eq!(props["Retention"], "P30D");
    assert_eq!(props["DisableLocalAuth"], true);
    assert_eq!(props["SamplingPercentage"], 50.0);
    assert_eq!(props["publicNetworkAccessForQuery"], "Disabled");
    assert_eq!(props["DisableIpMasking"], true);
    assert_eq!(updated["kind"], "other");
    assert_eq!(updated["tags"], json!({"telemux.io/tenant": "a"}));
    assert_eq!(updated["location"], "South Central US", "location stays");
    let stored = arm.component(SUB, RG, "TENANT-A").unwrap();
    assert_eq!(stored.instrumentation_key(), Some(ikey.as_str()));
    assert_eq!(stored.etag(), updated["etag"].as_str());

    // What the service refuses.
    let refusals = [
        (
            json!({"location": "West Europe", "kind": "web", "properties": {"Application_Type": "web"}}),
            "InvalidResourceLocation",
        ),
        (
            json!({"location": "South Central US", "kind": "web", "properties": {"Application_Type": "other"}}),
            "BadRequest",
        ),
        (
            json!({"kind": "web", "properties": {"Application_Type": "web"}}),
            "LocationRequired",
        ),
        (
            json!({"location": "South Central US", "properties": {"Application_Type": "web"}}),
            "BadRequest",
        ),
        (
            json!({"location": "South Central US", "kind": "web"}),
            "BadRequest",
        ),
        (
            json!({"location": "South Central US", "kind": "web", "properties": {}}),
            "BadRequest",
        ),
        (
            json!({"location": "South Central US", "kind": "web", "properties": {"Application_Type": "web", "RetentionInDays": 31}}),
            "BadRequest",
        ),
        (
            json!({"location": "South Central US", "kind": "web", "properties": {"Application_Type": "web", "DisableLocalAuth": "yes"}}),
            "InvalidRequestContent",
        ),
        (
            json!({"location": "South Central US", "kind": "web", "properties": {"Application_Type": "web", "IngestionMode": "Classic"}}),
            "BadRequest",
        ),
        (
            json!({"location": "South Central US", "kind": "web", "tags": {"n": 1}, "properties": {"Application_Type": "web"}}),
            "InvalidRequestContent",
        ),
    ];
    for (body, code) in refusals {
        let (status, _, answer) = call(reqwest::Method::PUT, &url, Some(&token), Some(&body)).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(error_code(&answer), code, "{body} -> {answer}");
        assert!(answer["error"]["message"].is_string());
    }
    let resp = http()
        .put(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&answer), "InvalidRequestContent");
    // A new component without Application_Type is refused too, and not created.
    let (status, _, _) = call(
        reqwest::Method::PUT,
        &arm.component_url(SUB, RG, "never"),
        Some(&token),
        Some(&json!({"location": "westus2", "kind": "web", "properties": {}})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(arm.component(SUB, RG, "never").is_none());
    assert_eq!(arm.components().len(), 1);

    // Tags only (PATCH).
    let (status, _, patched) = call(
        reqwest::Method::PATCH,
        &url,
        Some(&token),
        Some(&json!({"tags": {"Color": "AzureBlue"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["tags"], json!({"Color": "AzureBlue"}));
    assert_eq!(patched["properties"]["RetentionInDays"], 30);
    let (status, _, answer) = call(
        reqwest::Method::PATCH,
        &arm.component_url(SUB, RG, "missing"),
        Some(&token),
        Some(&json!({"tags": {}})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&answer), "ResourceNotFound");
}

#[tokio::test]
async fn create_status_and_ingestion_endpoint_are_configurable() {
    let (entra, arm) = start().await;
    let ingestion = telemux_testkit::ingestion::IngestionEmulator::start()
        .await
        .unwrap();
    arm.set_create_status(201);
    arm.set_ingestion_endpoint(Some(&ingestion.endpoint()));
    let token = secret_token(&entra).await;
    let url = arm.component_url(SUB, RG, "c1");
    let (status, _, body) = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(&component_body("westeurope")),
    )
    .await;
    assert_eq!(status, 201);
    let cs = body["properties"]["ConnectionString"].as_str().unwrap();
    assert!(
        cs.contains(&format!("IngestionEndpoint={};", ingestion.endpoint())),
        "{cs}"
    );
    assert!(cs.contains("LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/"));
    // Updates stay 200.
    let (status, _, _) = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(&component_body("westeurope")),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn get_list_and_delete() {
    let (entra, arm) = start().await;
    let token = secret_token(&entra).await;
    for (sub, rg, name) in [
        (SUB, RG, "b"),
        (SUB, RG, "a"),
        (SUB, "other-rg", "c"),
        (OTHER_SUB, RG, "d"),
    ] {
        let (status, _, _) = call(
            reqwest::Method::PUT,
            &arm.component_url(sub, rg, name),
            Some(&token),
            Some(&component_body("westus2")),
        )
        .await;
        assert_eq!(status, 200);
    }
    let list_url = |rg: Option<&str>| match rg {
        Some(rg) => format!(
            "{}/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Insights/components?api-version=2020-02-02",
            arm.endpoint()
        ),
        None => format!(
            "{}/subscriptions/{SUB}/providers/Microsoft.Insights/components?api-version=2020-02-02",
            arm.endpoint()
        ),
    };
    let (status, headers, all) =
        call(reqwest::Method::GET, &list_url(None), Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(all["nextLink"].is_null() && all.get("nextLink").is_some());
    let names: Vec<&str> = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c", "a", "b"], "sorted by group, then name");
    assert!(headers.contains_key("x-ms-ratelimit-remaining-subscription-reads"));
    let (status, _, in_rg) = call(
        reqwest::Method::GET,
        &list_url(Some(RG)),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(in_rg["value"].as_array().unwrap().len(), 2);
    assert_eq!(in_rg["value"][0]["name"], "a", "sorted by name");

    let url = arm.component_url(SUB, RG, "a");
    let (status, _, got) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "a");

    let (status, _, body) = call(reqwest::Method::DELETE, &url, Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(body.is_null(), "empty body");
    let (status, headers, body) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "ResourceNotFound");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Microsoft.Insights/components/a")
    );
    assert!(headers.contains_key("x-ms-request-id"));
    let (status, _, body) = call(reqwest::Method::DELETE, &url, Some(&token), None).await;
    assert_eq!(status, 204);
    assert!(body.is_null());
    assert_eq!(arm.count(Method::DELETE), 2);

    // A slow delete: the component shows "Deleting" meanwhile.
    arm.set_delete_delay(Duration::from_millis(600));
    let url_b = arm.component_url(SUB, RG, "b");
    let token2 = token.clone();
    let deleting = tokio::spawn(async move {
        call(reqwest::Method::DELETE, &url_b, Some(&token2), None)
            .await
            .0
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, _, got) = call(
        reqwest::Method::GET,
        &arm.component_url(SUB, RG, "b"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got["properties"]["provisioningState"], "Deleting");
    assert_eq!(deleting.await.unwrap(), 200);
    assert!(arm.component(SUB, RG, "b").is_none());
}

#[tokio::test]
async fn asynchronous_provisioning() {
    let (entra, arm) = start().await;
    let token = secret_token(&entra).await;
    arm.set_provisioning_gets(2);
    let url = arm.component_url(SUB, RG, "slow");
    let (status, _, created) = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(&component_body("eastus")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(created["properties"]["provisioningState"], "Creating");
    // Inspection does not advance it.
    assert_eq!(arm.components()[0].provisioning_state(), Some("Creating"));
    let mut states = Vec::new();
    for _ in 0..4 {
        let (_, _, got) = call(reqwest::Method::GET, &url, Some(&token), None).await;
        states.push(
            got["properties"]["provisioningState"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(states, ["Creating", "Creating", "Succeeded", "Succeeded"]);

    // An outcome other than success.
    arm.set_provisioning_gets(1);
    arm.set_provisioning_outcome("Failed");
    let url = arm.component_url(SUB, RG, "broken");
    let (_, _, created) = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(&component_body("eastus")),
    )
    .await;
    assert_eq!(created["properties"]["provisioningState"], "Creating");
    let (_, _, first) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    let (_, _, second) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(first["properties"]["provisioningState"], "Creating");
    assert_eq!(second["properties"]["provisioningState"], "Failed");
}

#[tokio::test]
async fn arm_faults() {
    let (entra, arm) = start().await;
    let token = secret_token(&entra).await;
    let url = arm.component_url(SUB, RG, "f");
    // Throttling, twice, then through.
    arm.set_fault(arm::Fault::throttled(Duration::from_secs(17)).times(2));
    for _ in 0..2 {
        let (status, headers, body) = call(reqwest::Method::GET, &url, Some(&token), None).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "17");
        assert_eq!(error_code(&body), "SubscriptionRequestsThrottled");
        assert!(headers.contains_key("x-ms-request-id"));
        assert!(headers.contains_key("x-ms-correlation-request-id"));
    }
    let (status, _, _) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(
        status, 404,
        "fault used up; the component does not exist yet"
    );

    // Only PUTs fail; GETs pass.
    arm.set_fault(arm::Fault::internal_error().only(Method::PUT));
    let body = component_body("eastus");
    let (status, _, answer) = call(reqwest::Method::PUT, &url, Some(&token), Some(&body)).await;
    assert_eq!(status, 500);
    assert_eq!(error_code(&answer), "InternalServerError");
    let (status, _, _) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 404);
    let (status, _, _) = call(reqwest::Method::PUT, &url, Some(&token), Some(&body)).await;
    assert_eq!(status, 500, "until cleared");
    arm.clear_faults();
    assert!(
        arm.component(SUB, RG, "f").is_none(),
        "faulted PUTs had no effect"
    );

    arm.set_fault(
        arm::Fault::unavailable()
            .retry_after(Duration::from_secs(3))
            .times(1),
    );
    let (status, headers, answer) =
        call(reqwest::Method::PUT, &url, Some(&token), Some(&body)).await;
    assert_eq!(status, 503);
    assert_eq!(error_code(&answer), "ServiceUnavailable");
    assert_eq!(headers["retry-after"], "3");

    // A delay provokes the client's timeout; the PUT still takes effect afterwards.
    arm.set_fault(arm::Fault::delay(Duration::from_millis(700)).times(1));
    let err = http()
        .put(&url)
        .bearer_auth(&token)
        .json(&body)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let mut created = false;
    for _ in 0..40 {
        if arm.component(SUB, RG, "f").is_some() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(created, "the delayed PUT completed");

    let faulted: Vec<u16> = arm
        .requests()
        .iter()
        .filter(|r| r.faulted)
        .map(|r| r.status)
        .collect();
    assert_eq!(faulted, [429, 429, 500, 500, 503]);
}

#[tokio::test]
async fn authentication_and_authorization() {
    let (entra, arm) = start().await;
    let url = arm.component_url(SUB, RG, "x");

    let (status, headers, body) = call(reqwest::Method::GET, &url, None, None).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "AuthenticationFailed");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    assert!(headers.contains_key("x-ms-request-id"));

    let resp = http()
        .get(&url)
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&body), "AuthenticationFailed");

    let (status, _, body) = call(reqwest::Method::GET, &url, Some("not-a-token"), None).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "InvalidAuthenticationToken");

    let token = secret_token(&entra).await;
    let (status, _, _) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 404);
    assert_eq!(
        arm.requests().last().unwrap().client_id.as_deref(),
        Some(CLIENT)
    );

    // A token for another resource.
    let (_, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", CLIENT),
            ("scope", "https://monitor.azure.com/.default"),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    let other = body["access_token"].as_str().unwrap();
    let (status, _, body) = call(reqwest::Method::GET, &url, Some(other), None).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "InvalidAuthenticationTokenAudience");

    // A forbidden subscription.
    arm.forbid_subscription(SUB);
    let (status, _, body) = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(&component_body("eastus")),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(error_code(&body), "AuthorizationFailed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Microsoft.Insights/components/write"),
        "{message}"
    );
    assert!(message.contains(CLIENT));
    arm.allow_subscription(SUB);

    // A subscription of another tenant.
    arm.bind_subscription(SUB, OTHER_TENANT);
    let (status, _, body) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "InvalidAuthenticationTokenTenant");
    arm.bind_subscription(SUB, TENANT);
    let (status, _, _) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 404);

    // Expired and revoked tokens.
    entra.expire_tokens();
    assert!(!entra.token_is_valid(&token));
    let (status, _, body) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "ExpiredAuthenticationToken");
    let fresh = secret_token(&entra).await;
    assert!(entra.revoke_token(&fresh));
    let (status, _, body) = call(reqwest::Method::GET, &url, Some(&fresh), None).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "InvalidAuthenticationToken");

    // Short-lived tokens.
    entra.set_token_lifetime(Duration::from_secs(1));
    let (_, _, body) = token_request(
        &entra,
        TENANT,
        &[
            ("client_id", CLIENT),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_eq!(body["expires_in"], 1);
    let short = body["access_token"].as_str().unwrap().to_string();
    assert!(entra.token_is_valid(&short));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!entra.token_is_valid(&short));
}

#[tokio::test]
async fn api_versions_and_paths() {
    let (entra, arm) = start().await;
    let token = secret_token(&entra).await;
    let base = format!(
        "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Insights/components/Mixed-Case",
        arm.endpoint()
    );
    let (status, _, body) = call(reqwest::Method::GET, &base, Some(&token), None).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "MissingApiVersionParameter");
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{base}?api-version=2015-05-01"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "InvalidApiVersionParameter");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'2015-05-01'")
    );

    let (status, _, _) = call(
        reqwest::Method::PUT,
        &format!("{base}?api-version=2020-02-02"),
        Some(&token),
        Some(&component_body("eastus")),
    )
    .await;
    assert_eq!(status, 200);
    // Other casings of the path segments and of the name reach the same component.
    let lower = format!(
        "{}/subscriptions/{SUB}/resourcegroups/{}/providers/microsoft.insights/components/mixed-case?api-version=2020-02-02",
        arm.endpoint(),
        RG.to_ascii_uppercase()
    );
    let (status, _, got) = call(reqwest::Method::GET, &lower, Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "Mixed-Case", "the name as created");
    let (status, _, got) = call(
        reqwest::Method::PUT,
        &lower,
        Some(&token),
        Some(&component_body("eastus")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        arm.components().len(),
        1,
        "an update, not a second component"
    );
    assert_eq!(got["name"], "Mixed-Case");

    // The provider lowercased in answers, as the service sometimes does.
    arm.set_lowercase_provider(true);
    let (_, _, got) = call(reqwest::Method::GET, &lower, Some(&token), None).await;
    assert_eq!(got["type"], "microsoft.insights/components");
    assert!(
        got["id"]
            .as_str()
            .unwrap()
            .contains("/providers/microsoft.insights/components/Mixed-Case")
    );

    // Paths that are not served.
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!(
            "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/sites/x?api-version=2020-02-02",
            arm.endpoint()
        ),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "NotFound");
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{base}?api-version=2020-02-02"),
        Some(&token),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(error_code(&body), "MethodNotAllowed");

    // The correlation id the client sends comes back.
    let resp = http()
        .get(format!("{base}?api-version=2020-02-02"))
        .bearer_auth(&token)
        .header(
            "x-ms-correlation-request-id",
            "11112222-3333-4444-8555-666677778888",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-ms-correlation-request-id"],
        "11112222-3333-4444-8555-666677778888"
    );
}

#[tokio::test]
async fn pre_inserted_components_and_records() {
    let (entra, arm) = start().await;
    let known_key = "8b1c6a5f-2e3d-4c7b-9a8e-1f0d2c3b4a59";
    let inserted = arm
        .insert_component(
            SUB,
            RG,
            "adopted",
            &json!({
                "location": "West Europe",
                "kind": "web",
                "tags": {"owner": "someone-else"},
                "properties": {
                    "Application_Type": "web",
                    "InstrumentationKey": known_key,
                    "CreationDate": "2021-03-04T05:06:07.1234567+00:00",
                },
            }),
        )
        .unwrap();
    assert_eq!(inserted.instrumentation_key(), Some(known_key));
    assert_eq!(inserted.provisioning_state(), Some("Succeeded"));
    assert!(
        inserted
            .connection_string()
            .unwrap()
            .starts_with(&format!("InstrumentationKey={known_key};"))
    );
    assert!(matches!(
        arm.insert_component(SUB, RG, "bad", &json!({"kind": "web"})),
        Err(arm::ArmEmulatorError::Rejected { status: 400, .. })
    ));

    let token = secret_token(&entra).await;
    let url = arm.component_url(SUB, RG, "adopted");
    let (status, _, got) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["properties"]["InstrumentationKey"], known_key);
    assert_eq!(got["tags"], json!({"owner": "someone-else"}));
    let body = component_body("westeurope");
    let (status, _, updated) = call(reqwest::Method::PUT, &url, Some(&token), Some(&body)).await;
    assert_eq!(status, 200);
    assert_eq!(updated["properties"]["InstrumentationKey"], known_key);
    assert_eq!(
        updated["properties"]["CreationDate"],
        "2021-03-04T05:06:07.1234567+00:00"
    );

    let components = arm.components();
    assert_eq!(components.len(), 1);
    assert_eq!(components[0].name, "adopted");
    assert_eq!(
        components[0].resource["properties"]["Application_Type"],
        "web"
    );

    let requests = arm.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(requests[1].method, Method::PUT);
    assert_eq!(requests[1].status, 200);
    assert_eq!(
        requests[1].path,
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Insights/components/adopted"
        )
    );
    assert_eq!(requests[1].query.as_deref(), Some("api-version=2020-02-02"));
    assert_eq!(requests[1].body.as_ref(), Some(&body));
    assert_eq!(arm.count(Method::PUT), 1);
    assert_eq!(arm.count(Method::GET), 1);
    assert!(arm.remove_component(SUB, RG, "adopted"));
    arm.reset();
    assert!(arm.requests().is_empty());
}

#[tokio::test]
async fn control_api_for_the_binary() {
    let (entra, arm) = start().await;
    // Entra: register an app, then fetch a token with it.
    let resp = http()
        .put(format!("{}/_emulator/apps", entra.endpoint()))
        .json(&json!({"tenant": OTHER_TENANT, "clientId": "c-2", "secret": "s-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (status, _, body) = token_request(
        &entra,
        OTHER_TENANT,
        &[
            ("client_id", "c-2"),
            ("scope", ARM_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", "s-2"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().unwrap().to_string();
    let requests: Value = http()
        .get(format!("{}/_emulator/requests", entra.endpoint()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests[0]["clientId"], "c-2");

    // ARM: a fault set over HTTP, and components listed over HTTP.
    let resp = http()
        .put(format!("{}/_emulator/fault", arm.endpoint()))
        .json(&json!({"status": 429, "retryAfterSeconds": 2, "times": 1, "method": "put"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let url = arm.component_url(SUB, RG, "via-http");
    let body = component_body("eastus");
    let (status, headers, _) = call(reqwest::Method::PUT, &url, Some(&token), Some(&body)).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2");
    let (status, _, _) = call(reqwest::Method::PUT, &url, Some(&token), Some(&body)).await;
    assert_eq!(status, 200);
    let listed: Value = http()
        .get(format!("{}/_emulator/components", arm.endpoint()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["name"], "via-http");
    assert_eq!(
        listed[0]["resource"]["properties"]["TenantId"],
        OTHER_TENANT
    );
}
