//! [`Components`] on the generated client of `azure_mgmt_applicationinsights` 0.21
//! (`package-2022-06-15`, whose components operations use api-version 2020-02-02).
//!
//! The generated client builds the requests (paths, api-version, bearer token, PUT body);
//! azure_core's pipeline is set up so that the reconciler gets what it needs:
//! - no retries (`RetryOptions::none()`): the default policy retries 408/429/5xx for up to a
//!   minute inside one reconcile; the reconciler requeues instead;
//! - our own transport policy (reqwest over rustls/ring with the request timeout). It turns
//!   every non-2xx answer into an `ArmFailure` carrying status, ARM code and message and the
//!   parsed `Retry-After`: azure_core's own `HttpError` keeps the headers private, so
//!   `Retry-After` would be lost;
//! - `ConcealAuthorization`: azure_core 0.21's transport policy logs every request at debug
//!   level, and its `Headers` Debug prints the `Authorization` value (it redacts the others),
//!   so the bearer token is moved out of the request before that policy sees it.
//!
//! Responses are read into our [`Component`] from JSON directly rather than through the
//! generated model, which rejects components with a missing `kind` or `Application_Type` or
//! an unusual date, and so would make a single odd field block a tenant.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::models;
use azure_core::auth::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::headers::{AUTHORIZATION, Headers};
use azure_core::{
    Body, ClientOptions, Context, Policy, PolicyResult, Request, Response, RetryOptions,
    TransportOptions,
};
use azure_mgmt_applicationinsights::package_2022_06_15 as api;
use futures::future::BoxFuture;
use serde_json::Value;

use super::config::ConfigError;
use super::credential::AzureCredential;
use super::error::{ArmFailure, AzureError, describe_transport_error, parse_retry_after};
use super::{Component, ComponentId, Components, DesiredComponent};

/// The components client on the legacy generated crate.
pub struct ArmComponents {
    components: api::components::Client,
    credential: Arc<AzureCredential>,
}

impl ArmComponents {
    /// `endpoint` is used as it is: its path is replaced by the generated client (see
    /// [`AzureSettings::arm_url`](super::AzureSettings::arm_url)); plain http works.
    pub fn new(
        endpoint: azure_core::Url,
        credential: Arc<AzureCredential>,
        scope: String,
        request_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            // ARM does not redirect; one would only carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        let per_call: Vec<Arc<dyn Policy>> = vec![Arc::new(ConcealAuthorization)];
        let options = ClientOptions::new(TransportOptions::new_custom_policy(Arc::new(
            ArmTransport { http },
        )))
        .retry(RetryOptions::none())
        .per_call_policies(per_call);
        let token_credential: Arc<dyn TokenCredential> = credential.clone();
        let client = api::Client::new(endpoint, token_credential, vec![scope], options);
        Ok(ArmComponents {
            components: client.components_client(),
            credential,
        })
    }

    async fn get_component(&self, id: &ComponentId) -> Result<Option<Component>, AzureError> {
        id.validate()?;
        let sent = self
            .components
            .get(&id.resource_group, &id.subscription_id, &id.name)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let (_, body) = collect(response.into_raw_response()).await?;
                parse_component(&body).map(Some)
            }
            Err(error) => match examine(&error) {
                Examined::Arm(failure) if failure.status == 404 => Ok(None),
                examined => Err(self.fail(examined).await),
            },
        }
    }

    async fn put_component(
        &self,
        id: &ComponentId,
        desired: &DesiredComponent,
    ) -> Result<Component, AzureError> {
        id.validate()?;
        let body = component_model(desired);
        let sent = self
            .components
            .create_or_update(&id.resource_group, &id.subscription_id, &id.name, body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Err(self.fail(examine(&error)).await),
        };
        let (status, body) = collect(response.into_raw_response()).await?;
        // 200 and 201 carry the component; a 202 (long-running create, not seen from this
        // service but allowed by ARM) does not, and the generated client does not poll.
        if status != 202 && !body.iter().all(u8::is_ascii_whitespace) {
            return parse_component(&body);
        }
        match self.get_component(id).await? {
            Some(component) => Ok(component),
            None => Err(AzureError::Transient(format!(
                "ARM accepted component {} (HTTP {status}) but does not show it yet",
                id.name
            ))),
        }
    }

    async fn delete_component(&self, id: &ComponentId) -> Result<(), AzureError> {
        id.validate()?;
        let sent = self
            .components
            .delete(&id.resource_group, &id.subscription_id, &id.name)
            .send()
            .await;
        match sent {
            // 200 and 204 when gone, 202 when ARM finishes it shortly.
            Ok(_) => Ok(()),
            Err(error) => match examine(&error) {
                Examined::Arm(failure) if failure.status == 404 => Ok(()),
                examined => Err(self.fail(examined).await),
            },
        }
    }

    async fn fail(&self, examined: Examined) -> AzureError {
        match examined {
            Examined::Arm(failure) => {
                if failure.status == 401 {
                    // ARM rejected the token (expired, revoked, wrong audience): the next
                    // attempt must fetch a new one rather than reuse the cached one.
                    self.credential.clear().await;
                }
                failure.classify()
            }
            Examined::Other(error) => error,
        }
    }
}

impl Components for ArmComponents {
    fn get<'a>(
        &'a self,
        id: &'a ComponentId,
    ) -> BoxFuture<'a, Result<Option<Component>, AzureError>> {
        Box::pin(self.get_component(id))
    }

    fn put<'a>(
        &'a self,
        id: &'a ComponentId,
        desired: &'a DesiredComponent,
    ) -> BoxFuture<'a, Result<Component, AzureError>> {
        Box::pin(self.put_component(id, desired))
    }

    fn delete<'a>(&'a self, id: &'a ComponentId) -> BoxFuture<'a, Result<(), AzureError>> {
        Box::pin(self.delete_component(id))
    }
}

enum Examined {
    Arm(ArmFailure),
    Other(AzureError),
}

/// What an azure_core error from the pipeline is: an ARM answer our transport recorded, our
/// own classified error (credential, transport), or something of azure_core's.
fn examine(error: &azure_core::Error) -> Examined {
    if let Some(failure) = find_in_chain::<ArmFailure>(error) {
        return Examined::Arm(failure.clone());
    }
    if let Some(azure) = find_in_chain::<AzureError>(error) {
        return Examined::Other(azure.clone());
    }
    let text = error.to_string();
    Examined::Other(match error.kind() {
        ErrorKind::Io => AzureError::Transient(text),
        ErrorKind::Credential => AzureError::Authentication(text),
        _ => AzureError::Unexpected(text),
    })
}

fn find_in_chain<T: std::error::Error + 'static>(error: &azure_core::Error) -> Option<&T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

async fn collect(response: Response) -> Result<(u16, Vec<u8>), AzureError> {
    let (status, _, body) = response.deconstruct();
    let body = body
        .collect()
        .await
        .map_err(|e| AzureError::Transient(format!("reading ARM's answer: {e}")))?;
    Ok((u16::from(status), body.to_vec()))
}

/// The PUT body in the generated model.
fn component_model(desired: &DesiredComponent) -> models::ApplicationInsightsComponent {
    use models::application_insights_component_properties::{
        ApplicationType, FlowType, IngestionMode, RequestSource,
    };
    let mut resource = models::ComponentsResource::new(desired.location.clone());
    resource.tags = Some(Value::Object(
        desired
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    ));
    // The generated enums fall back to `UnknownValue` for strings they do not know, so values
    // newer than the crate pass through unchanged.
    let application_type =
        serde_json::from_value::<ApplicationType>(Value::String(desired.application_type.clone()))
            .unwrap_or(ApplicationType::UnknownValue(
                desired.application_type.clone(),
            ));
    let mut properties = models::ApplicationInsightsComponentProperties::new(application_type);
    // What the service expects from REST clients.
    properties.flow_type = Some(FlowType::Bluefield);
    properties.request_source = Some(RequestSource::Rest);
    properties.workspace_resource_id = desired.workspace_resource_id.clone();
    properties.retention_in_days = desired.retention_in_days.map(i64::from);
    properties.ingestion_mode = desired.ingestion_mode.as_ref().map(|mode| {
        serde_json::from_value::<IngestionMode>(Value::String(mode.clone()))
            .unwrap_or(IngestionMode::UnknownValue(mode.clone()))
    });
    properties.sampling_percentage = desired.sampling_percentage;
    properties.disable_local_auth = desired.disable_local_auth;
    let mut component = models::ApplicationInsightsComponent::new(resource, desired.kind.clone());
    component.properties = Some(properties);
    component
}

/// Reads a component from ARM's JSON, tolerating nulls, extra fields and `"tags": ""`.
fn parse_component(body: &[u8]) -> Result<Component, AzureError> {
    // Only the parser's position goes into the message: the body holds the connection string.
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        AzureError::Unexpected(format!(
            "ARM answered with a body that is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if !value.is_object() {
        return Err(AzureError::Unexpected(
            "ARM answered with a component that is not a JSON object".into(),
        ));
    }
    let props = value.get("properties").unwrap_or(&Value::Null);
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let tags = match value.get("tags") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    Ok(Component {
        id: text(&value, "id").unwrap_or_default(),
        name: text(&value, "name").unwrap_or_default(),
        location: text(&value, "location").unwrap_or_default(),
        kind: text(&value, "kind").unwrap_or_default(),
        etag: text(&value, "etag"),
        provisioning_state: text(props, "provisioningState")
            .or_else(|| text(props, "ProvisioningState")),
        connection_string: text(props, "ConnectionString"),
        instrumentation_key: text(props, "InstrumentationKey"),
        app_id: text(props, "AppId"),
        application_type: text(props, "Application_Type"),
        tags,
        retention_in_days: props
            .get("RetentionInDays")
            .and_then(Value::as_i64)
            .and_then(|d| i32::try_from(d).ok()),
        workspace_resource_id: text(props, "WorkspaceResourceId"),
        ingestion_mode: text(props, "IngestionMode"),
        sampling_percentage: props.get("SamplingPercentage").and_then(Value::as_f64),
        disable_local_auth: props.get("DisableLocalAuth").and_then(Value::as_bool),
    })
}

/// The bearer token, moved out of the request into the pipeline context.
struct ConcealedAuthorization(Secret);

const CONCEALED: &str = "[concealed]";

/// First in the pipeline: replaces the `Authorization` header with a placeholder and carries
/// the real value in the context to [`ArmTransport`], so the pipeline's debug log of the
/// request (azure_core 0.21 prints that header's value) shows no token.
#[derive(Debug)]
struct ConcealAuthorization;

#[async_trait::async_trait]
impl Policy for ConcealAuthorization {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::message(
                ErrorKind::Other,
                "pipeline has no transport",
            ));
        };
        match request.headers().get_optional_string(&AUTHORIZATION) {
            Some(value) if value != CONCEALED => {
                request.insert_header(AUTHORIZATION, CONCEALED);
                let mut ctx = ctx.clone();
                ctx.insert(ConcealedAuthorization(Secret::new(value)));
                first.send(&ctx, request, rest).await
            }
            _ => first.send(ctx, request, rest).await,
        }
    }
}

/// The last policy: sends the request with reqwest and records failures as [`ArmFailure`].
#[derive(Debug)]
struct ArmTransport {
    http: reqwest::Client,
}

#[async_trait::async_trait]
impl Policy for ArmTransport {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        _next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .map_err(|e| azure_core::Error::full(ErrorKind::Other, e, "unsupported method"))?;
        let mut outgoing = self.http.request(method, request.url().clone());
        for (name, value) in request.headers().iter() {
            if name.as_str() != AUTHORIZATION.as_str() {
                outgoing = outgoing.header(name.as_str(), value.as_str());
            }
        }
        if let Some(ConcealedAuthorization(token)) = ctx.get::<ConcealedAuthorization>() {
            let mut value =
                reqwest::header::HeaderValue::from_str(token.secret()).map_err(|_| {
                    azure_core::Error::message(ErrorKind::Credential, "token is not a header value")
                })?;
            value.set_sensitive(true);
            outgoing = outgoing.header(reqwest::header::AUTHORIZATION, value);
        }
        outgoing = match request.body() {
            Body::Bytes(bytes) => outgoing.body(bytes.clone()),
            #[allow(unreachable_patterns)]
            _ => {
                return Err(azure_core::Error::message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported",
                ));
            }
        };

        let response = outgoing.send().await.map_err(|e| {
            azure_core::Error::new(
                ErrorKind::Io,
                AzureError::Transient(describe_transport_error("ARM request", &e)),
            )
        })?;
        let status = response.status().as_u16();
        let mut headers = Headers::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(name.as_str().to_owned(), value.to_owned());
            }
        }
        let retry_after = headers
            .get_optional_str(&azure_core::headers::RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = response.bytes().await.map_err(|e| {
            azure_core::Error::new(
                ErrorKind::Io,
                AzureError::Transient(describe_transport_error("reading ARM's answer", &e)),
            )
        })?;
        let code = azure_core::StatusCode::try_from(status).ok();
        if !(200..300).contains(&status) {
            let failure = ArmFailure::from_response(status, &body, retry_after);
            let kind = match code {
                Some(code) => ErrorKind::http_response(code, failure.code.clone()),
                None => ErrorKind::Other,
            };
            return Err(azure_core::Error::new(kind, failure));
        }
        let Some(code) = code else {
            return Err(azure_core::Error::new(
                ErrorKind::Other,
                AzureError::Unexpected(format!("ARM answered with unknown status {status}")),
            ));
        };
        let stream = futures::stream::iter([Ok(body)]);
        Ok(Response::new(code, headers, Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::credential::CredentialSource;
    use super::super::error::ErrorClass;
    use super::super::test_http::{Canned, Recorded, TestServer};
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);
    const SCOPE: &str = "https://management.azure.com/.default";

    /// Azure's published GET example (trimmed), with the oddities the real service adds:
    /// `"tags": ""`, nulls and undocumented fields.
    const GET_BODY: &str = r#"{
      "id": "/subscriptions/subid/resourceGroups/my-resource-group/providers/Microsoft.Insights/components/my-component",
      "name": "my-component",
      "type": "Microsoft.Insights/components",
      "location": "South Central US",
      "tags": "",
      "kind": "web",
      "etag": "\"0b00ab1c-0000-0100-0000-6745a1b20000\"",
      "properties": {
        "Ver": "v2",
        "ApplicationId": "my-component",
        "AppId": "887f4bfd-b5fd-40d7-9fc3-123456789abc",
        "Application_Type": "web",
        "Flow_Type": "Bluefield",
        "Request_Source": "rest",
        "InstrumentationKey": "bc095013-3cf2-45ac-ab47-123456789abc",
        "CreationDate": "2017-01-24T01:05:38.5934061+00:00",
        "TenantId": "f438d567-7177-4fe1-a5e3-123456789abc",
        "HockeyAppId": null,
        "provisioningState": "Succeeded",
        "SamplingPercentage": 100.0,
        "RetentionInDays": 90,
        "Retention": "P90D",
        "WorkspaceResourceId": "/subscriptions/subid/resourcegroups/my-resource-group/providers/microsoft.operationalinsights/workspaces/my-workspace",
        "ConnectionString": "InstrumentationKey=bc095013-3cf2-45ac-ab47-123456789abc",
        "DisableIpMasking": false,
        "DisableLocalAuth": null,
        "IngestionMode": "LogAnalytics",
        "LinkedStorages": {"ServiceProfilerLinkedStorage": "/subscriptions/subid/x"}
      }
    }"#;

    fn id() -> ComponentId {
        ComponentId {
            subscription_id: "subid".into(),
            resource_group: "my-resource-group".into(),
            name: "my-component".into(),
        }
    }

    fn desired() -> DesiredComponent {
        DesiredComponent {
            location: "westeurope".into(),
            kind: "web".into(),
            application_type: "web".into(),
            workspace_resource_id: Some("/subscriptions/subid/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws".into()),
            retention_in_days: Some(30),
            ingestion_mode: Some("LogAnalytics".into()),
            sampling_percentage: Some(25.0),
            disable_local_auth: Some(true),
            tags: BTreeMap::from([("telemux-managed-by".into(), "telemux".into())]),
        }
    }

    fn is_token_request(req: &Recorded) -> bool {
        req.target.ends_with("/oauth2/v2.0/token")
    }

    /// One local server playing Entra (client secret) and ARM; `arm` answers the ARM part.
    async fn setup(
        arm: impl Fn(&Recorded) -> Canned + Send + Sync + 'static,
    ) -> (TestServer, ArmComponents) {
        let tokens = AtomicUsize::new(0);
        let server = TestServer::start(move |req| {
            if is_token_request(req) {
                let n = tokens.fetch_add(1, Ordering::SeqCst);
                return Canned::json(
                    200,
                    &format!(
                        r#"{{"token_type":"Bearer","expires_in":3599,"access_token":"token-{n}"}}"#
                    ),
                );
            }
            arm(req)
        })
        .await;
        let client = client_for(&server.url(), &server.url());
        (server, client)
    }

    fn client_for(authority: &str, arm: &str) -> ArmComponents {
        let source = CredentialSource::ClientSecret {
            tenant_id: "tenant".into(),
            client_id: "client".into(),
            client_secret: Secret::new("the-secret"),
        };
        let credential = Arc::new(AzureCredential::new(&source, authority, TIMEOUT).unwrap());
        ArmComponents::new(
            azure_core::Url::parse(arm).unwrap(),
            credential,
            SCOPE.into(),
            TIMEOUT,
        )
        .unwrap()
    }

    fn arm_requests(server: &TestServer) -> Vec<Recorded> {
        server
            .requests()
            .into_iter()
            .filter(|r| !is_token_request(r))
            .collect()
    }

    const PATH: &str = "/subscriptions/subid/resourceGroups/my-resource-group/providers/Microsoft.Insights/components/my-component?api-version=2020-02-02";

    fn not_found(code: &str) -> Canned {
        Canned::json(
            404,
            &format!(r#"{{"error":{{"code":"{code}","message":"not found"}}}}"#),
        )
    }

    #[tokio::test]
    async fn get_reads_a_component_over_plain_http() {
        let (server, client) = setup(|_| Canned::json(200, GET_BODY)).await;
        let component = client.get(&id()).await.unwrap().unwrap();
        assert_eq!(component.name, "my-component");
        assert_eq!(component.location, "South Central US");
        assert_eq!(component.kind, "web");
        assert_eq!(component.provisioning_state.as_deref(), Some("Succeeded"));
        assert_eq!(
            component.connection_string.as_deref(),
            Some("InstrumentationKey=bc095013-3cf2-45ac-ab47-123456789abc")
        );
        assert_eq!(
            component.app_id.as_deref(),
            Some("887f4bfd-b5fd-40d7-9fc3-123456789abc")
        );
        assert_eq!(component.retention_in_days, Some(90));
        assert_eq!(component.sampling_percentage, Some(100.0));
        assert_eq!(component.ingestion_mode.as_deref(), Some("LogAnalytics"));
        assert_eq!(component.disable_local_auth, None);
        assert!(component.tags.is_empty());
        assert!(component.is_provisioned());

        let requests = arm_requests(&server);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].target, PATH);
        // The real token reaches ARM; the placeholder never does.
        assert_eq!(requests[0].header("authorization"), Some("Bearer token-0"));
    }

    #[tokio::test]
    async fn get_of_a_missing_component_is_none() {
        let (_server, client) = setup(|_| not_found("ResourceNotFound")).await;
        assert_eq!(client.get(&id()).await, Ok(None));
        let (_server, client) = setup(|_| not_found("ResourceGroupNotFound")).await;
        assert_eq!(client.get(&id()).await, Ok(None));
    }

    #[tokio::test]
    async fn put_sends_the_desired_component() {
        let (server, client) = setup(|req| {
            assert_eq!(req.method, "PUT");
            Canned::json(201, GET_BODY)
        })
        .await;
        let component = client.put(&id(), &desired()).await.unwrap();
        assert_eq!(component.name, "my-component");

        let requests = arm_requests(&server);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].target, PATH);
        assert_eq!(requests[0].header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_str(&requests[0].body).unwrap();
        assert_eq!(body["location"], "westeurope");
        assert_eq!(body["kind"], "web");
        assert_eq!(body["tags"]["telemux-managed-by"], "telemux");
        let props = &body["properties"];
        assert_eq!(props["Application_Type"], "web");
        assert_eq!(props["Flow_Type"], "Bluefield");
        assert_eq!(props["Request_Source"], "rest");
        assert_eq!(
            props["WorkspaceResourceId"],
            "/subscriptions/subid/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws"
        );
        assert_eq!(props["RetentionInDays"], 30);
        assert_eq!(props["IngestionMode"], "LogAnalytics");
        assert_eq!(props["SamplingPercentage"], 25.0);
        assert_eq!(props["DisableLocalAuth"], true);
        // Read-only fields are not sent, except the two dates the generated model always
        // serializes (as null).
        for absent in [
            "AppId",
            "InstrumentationKey",
            "ConnectionString",
            "provisioningState",
        ] {
            assert!(props.get(absent).is_none(), "{absent}");
        }
        assert!(props["CreationDate"].is_null());
    }

    #[tokio::test]
    async fn put_answered_202_reads_the_component_back() {
        let (server, client) = setup(|req| match req.method.as_str() {
            "PUT" => Canned::json(202, "").header("Location", "http://127.0.0.1:1/op"),
            _ => Canned::json(200, GET_BODY),
        })
        .await;
        let component = client.put(&id(), &desired()).await.unwrap();
        assert_eq!(component.name, "my-component");
        let methods: Vec<String> = arm_requests(&server)
            .into_iter()
            .map(|r| r.method)
            .collect();
        assert_eq!(methods, ["PUT", "GET"]);
    }

    #[tokio::test]
    async fn delete_is_ok_when_done_accepted_or_absent() {
        for status in [200, 202, 204] {
            let (server, client) = setup(move |_| Canned::json(status, "")).await;
            assert_eq!(client.delete(&id()).await, Ok(()), "{status}");
            let requests = arm_requests(&server);
            assert_eq!(requests[0].method, "DELETE");
            assert_eq!(requests[0].target, PATH);
        }
        let (_server, client) = setup(|_| not_found("ResourceNotFound")).await;
        assert_eq!(client.delete(&id()).await, Ok(()));
    }

    #[tokio::test]
    async fn throttling_is_reported_once_with_retry_after() {
        let (server, client) = setup(|_| {
            Canned::json(
                429,
                r#"{"error":{"code":"SubscriptionRequestsThrottled","message":"Number of 'write' requests for subscription 'subid' actor 'x' exceeded."}}"#,
            )
            .header("Retry-After", "9")
        })
        .await;
        let err = client.put(&id(), &desired()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Throttled);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(9)));
        assert!(
            err.message().starts_with("SubscriptionRequestsThrottled: "),
            "{err}"
        );
        // azure_core's default policy would have retried; ours sends exactly one request.
        assert_eq!(arm_requests(&server).len(), 1);
    }

    #[tokio::test]
    async fn server_errors_are_transient_and_not_retried() {
        let (server, client) = setup(|_| Canned::json(503, "")).await;
        let err = client.get(&id()).await.unwrap_err();
        assert_eq!(err, AzureError::Transient("HTTP 503".into()));
        assert_eq!(arm_requests(&server).len(), 1);
        let (_server, client) = setup(|_| {
            Canned::json(
                500,
                r#"{"error":{"code":"InternalServerError","message":"boom"}}"#,
            )
        })
        .await;
        assert_eq!(
            client.delete(&id()).await,
            Err(AzureError::Transient(
                "InternalServerError: boom (HTTP 500)".into()
            ))
        );
    }

    #[tokio::test]
    async fn forbidden_and_invalid_spec() {
        let (_server, client) = setup(|_| {
            Canned::json(
                403,
                r#"{"error":{"code":"AuthorizationFailed","message":"The client does not have authorization to perform action 'Microsoft.Insights/components/write'."}}"#,
            )
        })
        .await;
        let err = client.put(&id(), &desired()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Forbidden);
        assert!(err.message().contains("AuthorizationFailed"));
        let (_server, client) = setup(|_| {
            Canned::json(
                400,
                r#"{"error":{"code":"InvalidResourceLocation","message":"The resource 'my-component' already exists in location 'southcentralus'."}}"#,
            )
        })
        .await;
        let err = client.put(&id(), &desired()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::InvalidSpec);
        let (_server, client) = setup(|_| not_found("ResourceGroupNotFound")).await;
        let err = client.put(&id(), &desired()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::InvalidSpec);
    }

    #[tokio::test]
    async fn arm_rejecting_the_token_clears_the_cache() {
        let (server, client) = setup(|req| {
            if req.header("authorization") == Some("Bearer token-0") {
                Canned::json(
                    401,
                    r#"{"error":{"code":"ExpiredAuthenticationToken","message":"The access token expiry UTC time is earlier than current UTC time."}}"#,
                )
            } else {
                Canned::json(200, GET_BODY)
            }
        })
        .await;
        let err = client.get(&id()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(client.get(&id()).await.unwrap().is_some());
        let tokens = server
            .requests()
            .iter()
            .filter(|r| is_token_request(r))
            .count();
        assert_eq!(tokens, 2);
    }

    #[tokio::test]
    async fn token_failure_is_authentication_and_reaches_no_arm() {
        let server = TestServer::start(|req| {
            if is_token_request(req) {
                Canned::json(
                    400,
                    r#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier 'client' was not found in the directory 'tenant'.\r\nTrace ID: x","error_codes":[700016]}"#,
                )
            } else {
                Canned::json(200, GET_BODY)
            }
        })
        .await;
        let client = client_for(&server.url(), &server.url());
        let err = client.get(&id()).await.unwrap_err();
        assert_eq!(
            err,
            AzureError::Authentication("AADSTS700016: Application with identifier 'client' was not found in the directory 'tenant'. (unauthorized_client, HTTP 400)".into())
        );
        assert!(arm_requests(&server).is_empty());
        assert!(!err.to_string().contains("the-secret"));
    }

    #[tokio::test]
    async fn timeouts_and_refused_connections_are_transient() {
        let tokens =
            TestServer::start(|_| Canned::json(200, r#"{"expires_in":3599,"access_token":"t"}"#))
                .await;
        // Accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                open.push(stream);
            }
        });
        let source = CredentialSource::ClientSecret {
            tenant_id: "tenant".into(),
            client_id: "client".into(),
            client_secret: Secret::new("s"),
        };
        let short = Duration::from_millis(300);
        let credential = Arc::new(AzureCredential::new(&source, &tokens.url(), TIMEOUT).unwrap());
        let client = ArmComponents::new(
            azure_core::Url::parse(&silent_url).unwrap(),
            credential.clone(),
            SCOPE.into(),
            short,
        )
        .unwrap();
        let err = client.get(&id()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(err.message().contains("timed out"), "{err}");
        hold.abort();

        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = ArmComponents::new(
            azure_core::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            credential,
            SCOPE.into(),
            TIMEOUT,
        )
        .unwrap();
        let err = client.delete(&id()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    }

    #[tokio::test]
    async fn invalid_ids_send_nothing() {
        let (server, client) = setup(|_| Canned::json(200, GET_BODY)).await;
        let bad = ComponentId {
            name: "../../x".into(),
            ..id()
        };
        assert_eq!(
            client.get(&bad).await.err().map(|e| e.class()),
            Some(ErrorClass::InvalidSpec)
        );
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn unreadable_component_is_unexpected_without_echoing_the_body() {
        let (_server, client) = setup(|_| {
            Canned::json(
                200,
                r#"{"properties":{"ConnectionString":"InstrumentationKey=sensitive"#,
            )
        })
        .await;
        let err = client.get(&id()).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Unexpected);
        assert!(!err.to_string().contains("sensitive"));
    }

    /// Records what the policies after [`ConcealAuthorization`] see.
    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<(String, Option<String>)>>);

    #[async_trait::async_trait]
    impl Policy for Recorder {
        async fn send(
            &self,
            ctx: &Context,
            request: &mut Request,
            _next: &[Arc<dyn Policy>],
        ) -> PolicyResult {
            let token = ctx
                .get::<ConcealedAuthorization>()
                .map(|c| c.0.secret().to_owned());
            self.0.lock().unwrap().push((format!("{request:?}"), token));
            Err(azure_core::Error::message(ErrorKind::Other, "recorded"))
        }
    }

    #[tokio::test]
    async fn the_token_is_out_of_sight_of_the_pipeline_logs() {
        // Why the policy exists: azure_core 0.21 prints this header's value in Debug.
        let mut headers = Headers::new();
        headers.insert(AUTHORIZATION, "Bearer sekrit");
        assert!(format!("{headers:?}").contains("sekrit"));

        let recorder = Arc::new(Recorder::default());
        let next: Vec<Arc<dyn Policy>> = vec![recorder.clone()];
        let mut request = Request::new(
            azure_core::Url::parse("http://127.0.0.1:1/x").unwrap(),
            azure_core::Method::Get,
        );
        request.insert_header(AUTHORIZATION, "Bearer sekrit");
        let _ = ConcealAuthorization
            .send(&Context::new(), &mut request, &next)
            .await;
        let seen = recorder.0.lock().unwrap();
        assert!(!seen[0].0.contains("sekrit"), "{}", seen[0].0);
        assert_eq!(seen[0].1.as_deref(), Some("Bearer sekrit"));
    }
}
