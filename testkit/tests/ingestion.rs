//! The ingestion emulator answers like Breeze: bodies, validation, faults, per-key records.

use std::io::Write;
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use telemux_testkit::ingestion::{Fault, IngestionEmulator};

const KEY_A: &str = "c1f83947-938c-5e2a-82ff-804be07647bc";
const KEY_B: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// `time` as the collector's exporter writes it (RFC 3339, UTC).
fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

fn envelope(ikey: &str, message: &str) -> Value {
    json!({
        "ver": 1,
        "name": "Microsoft.ApplicationInsights.Message",
        "time": rfc3339(SystemTime::now()),
        "sampleRate": 100,
        "iKey": ikey,
        "tags": {"ai.cloud.role": "checkout", "ai.operation.id": "5b8efff798038103d269b633813fc60c"},
        "data": {"baseType": "MessageData", "baseData": {"ver": 2, "message": message, "properties": {"tenant.id": "a"}}},
    })
}

fn ndjson(items: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item).unwrap();
        out.push(b'\n');
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Posts like the collector's exporter: gzip ndjson to `v2.1/track`.
async fn post_gzip_ndjson(emu: &IngestionEmulator, items: &[Value]) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}v2.1/track", emu.endpoint()))
        .header("Content-Type", "application/x-json-stream")
        .header("Content-Encoding", "gzip")
        .body(gzip(&ndjson(items)))
        .send()
        .await
        .unwrap()
}

async fn answer(resp: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, resp.json().await.unwrap())
}

#[tokio::test]
async fn accepts_gzip_ndjson_like_the_collector_sends() {
    let emu = IngestionEmulator::start().await.unwrap();
    let items = [
        envelope(KEY_A, "one"),
        envelope(KEY_A, "two"),
        envelope(KEY_A, "three"),
    ];
    let (status, retry_after, body) = answer(post_gzip_ndjson(&emu, &items).await).await;
    assert_eq!(status, 200);
    assert_eq!(retry_after, None);
    assert_eq!(
        body,
        json!({"itemsReceived": 3, "itemsAccepted": 3, "appId": null, "errors": []})
    );

    let got = emu.envelopes_for(KEY_A);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].name, "Microsoft.ApplicationInsights.Message");
    assert_eq!(got[0].base_type.as_deref(), Some("MessageData"));
    assert_eq!(got[0].ikey, KEY_A);
    assert_eq!(got[2].raw["data"]["baseData"]["message"], "three");
    assert_eq!(got[1].property("tenant.id"), Some("a"));
    assert_eq!(got[1].tag("ai.cloud.role"), Some("checkout"));

    let requests = emu.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v2.1/track");
    assert_eq!(requests[0].ikeys, vec![KEY_A.to_string()]);
    assert_eq!(
        (
            requests[0].items_received,
            requests[0].items_accepted,
            requests[0].status
        ),
        (3, 3, 200)
    );
    assert_eq!(requests[0].content_encoding.as_deref(), Some("gzip"));
}

#[tokio::test]
async fn accepts_a_plain_json_array_on_v2() {
    let emu = IngestionEmulator::start().await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}v2/track", emu.endpoint()))
        .json(&json!([envelope(KEY_B, "x"), envelope(KEY_B, "y")]))
        .send()
        .await
        .unwrap();
    let (status, _, body) = answer(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body["itemsAccepted"], 2);
    assert_eq!(emu.count_for(KEY_B), 2);
    assert_eq!(emu.requests()[0].path, "/v2/track");
}

#[tokio::test]
async fn invalid_key_is_a_per_item_400() {
    let emu = IngestionEmulator::start().await.unwrap();
    let (status, _, body) = answer(
        post_gzip_ndjson(
            &emu,
            &[envelope("not-a-guid", "a"), envelope("not-a-guid", "b")],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"itemsReceived": 2, "itemsAccepted": 0, "appId": null, "errors": [
            {"index": 0, "statusCode": 400, "message": "Invalid instrumentation key"},
            {"index": 1, "statusCode": 400, "message": "Invalid instrumentation key"},
        ]})
    );
    assert!(emu.envelopes().is_empty());

    // Mixed with a valid item: 206, only the valid one delivered.
    let (status, _, body) =
        answer(post_gzip_ndjson(&emu, &[envelope(KEY_A, "ok"), envelope("", "bad")]).await).await;
    assert_eq!(status, 206);
    assert_eq!(body["itemsAccepted"], 1);
    assert_eq!(body["errors"][0]["index"], 1);
    assert_eq!(emu.envelopes().len(), 1);
}

#[tokio::test]
async fn unknown_keys_are_invalid_when_restricted() {
    let emu = IngestionEmulator::start().await.unwrap();
    emu.accept_only([KEY_A]);
    let (status, _, body) = answer(post_gzip_ndjson(&emu, &[envelope(KEY_B, "x")]).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["message"], "Invalid instrumentation key");
    emu.accept_any();
    let (status, _, _) = answer(post_gzip_ndjson(&emu, &[envelope(KEY_B, "x")]).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn missing_time_or_name_uses_the_service_messages() {
    let emu = IngestionEmulator::start().await.unwrap();
    let mut no_time = envelope(KEY_A, "a");
    no_time.as_object_mut().unwrap().remove("time");
    let (status, _, body) = answer(post_gzip_ndjson(&emu, &[no_time]).await).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"itemsReceived": 1, "itemsAccepted": 0, "appId": null, "errors": [{
            "index": 0, "statusCode": 400,
            "message": "109: Field 'time' on type 'Envelope' is required but missing or empty. Expected: string, Actual: undefined",
        }]})
    );

    let mut no_name = envelope(KEY_A, "a");
    no_name["name"] = json!("");
    let (status, _, body) = answer(post_gzip_ndjson(&emu, &[no_name]).await).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("109: Field 'name' on type 'Envelope' is required")
    );
    assert!(emu.envelopes().is_empty());
}

#[tokio::test]
async fn items_older_than_48_hours_are_refused() {
    let emu = IngestionEmulator::start().await.unwrap();
    let mut old = envelope(KEY_A, "old");
    old["time"] = json!(rfc3339(SystemTime::now() - Duration::from_secs(49 * 3600)));
    let (status, _, body) =
        answer(post_gzip_ndjson(&emu, &[old, envelope(KEY_A, "new")]).await).await;
    assert_eq!(status, 206);
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("103: Field 'time' on type 'Envelope' is older than the allowed min date. Expected: now - 172800000ms, Actual: now - "),
        "{message}"
    );
    assert_eq!(emu.envelopes()[0].raw["data"]["baseData"]["message"], "new");
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let emu = IngestionEmulator::start().await.unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}v2.1/track", emu.endpoint());
    let bad_gzip = client
        .post(&url)
        .header("Content-Encoding", "gzip")
        .body(b"{\"not\":\"gzip\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(bad_gzip.status().as_u16(), 400);
    let bad_json = client
        .post(&url)
        .header("Content-Type", "application/x-json-stream")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status().as_u16(), 400);
    assert_eq!(emu.requests().len(), 2);
    assert!(emu.envelopes().is_empty());
}

#[tokio::test]
async fn throttling_429_carries_an_http_date_retry_after() {
    let emu = IngestionEmulator::start().await.unwrap();
    emu.set_fault(
        KEY_A,
        Fault::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(30)),
        },
    );
    let before = SystemTime::now();
    let (status, retry_after, body) =
        answer(post_gzip_ndjson(&emu, &[envelope(KEY_A, "a"), envelope(KEY_A, "b")]).await).await;
    assert_eq!(status, 429);
    let at = httpdate::parse_http_date(&retry_after.expect("Retry-After")).unwrap();
    let ahead = at.duration_since(before).unwrap();
    assert!(
        ahead >= Duration::from_secs(28) && ahead <= Duration::from_secs(31),
        "{ahead:?}"
    );
    assert_eq!(
        body,
        json!({"itemsReceived": 2, "itemsAccepted": 0, "appId": null, "errors": [
            {"index": 0, "statusCode": 429, "message": ""},
            {"index": 1, "statusCode": 429, "message": ""},
        ]})
    );
    assert!(emu.envelopes().is_empty());
    assert_eq!(emu.requests()[0].status, 429);

    emu.clear_fault(KEY_A);
    let (status, _, _) = answer(post_gzip_ndjson(&emu, &[envelope(KEY_A, "a")]).await).await;
    assert_eq!(status, 200);
    assert_eq!(emu.count_for(KEY_A), 1);
}

#[tokio::test]
async fn unavailable_503_without_retry_after() {
    let emu = IngestionEmulator::start().await.unwrap();
    emu.set_fault(
        KEY_A,
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    let (status, retry_after, body) =
        answer(post_gzip_ndjson(&emu, &[envelope(KEY_A, "a")]).await).await;
    assert_eq!((status, retry_after), (503, None));
    assert_eq!(body["errors"][0]["statusCode"], 503);
    assert_eq!(emu.count(), 0);
}

#[tokio::test]
async fn partial_success_rejects_every_nth_item() {
    let emu = IngestionEmulator::start().await.unwrap();
    emu.set_fault(
        KEY_A,
        Fault::PartialSuccess {
            reject_every: 2,
            code: 500,
        },
    );
    let items: Vec<Value> = (0..5).map(|i| envelope(KEY_A, &format!("m{i}"))).collect();
    let (status, _, body) = answer(post_gzip_ndjson(&emu, &items).await).await;
    assert_eq!(status, 206);
    assert_eq!(
        body,
        json!({"itemsReceived": 5, "itemsAccepted": 3, "appId": null, "errors": [
            {"index": 1, "statusCode": 500, "message": "Internal Server Error"},
            {"index": 3, "statusCode": 500, "message": "Internal Server Error"},
        ]})
    );
    let delivered: Vec<Value> = emu
        .envelopes_for(KEY_A)
        .iter()
        .map(|e| e.raw["data"]["baseData"]["message"].clone())
        .collect();
    assert_eq!(delivered, vec![json!("m0"), json!("m2"), json!("m4")]);

    // Rejecting everything: the HTTP status is the first item's.
    emu.set_fault(
        KEY_A,
        Fault::PartialSuccess {
            reject_every: 1,
            code: 500,
        },
    );
    let (status, _, body) = answer(post_gzip_ndjson(&emu, &items[..2]).await).await;
    assert_eq!(status, 500);
    assert_eq!(body["itemsAccepted"], 0);
}

#[tokio::test]
async fn faults_and_records_are_per_key() {
    let emu = IngestionEmulator::start().await.unwrap();
    emu.set_fault(
        KEY_A,
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    );
    let (a, _, _) = answer(post_gzip_ndjson(&emu, &[envelope(KEY_A, "a")]).await).await;
    let (b, _, _) =
        answer(post_gzip_ndjson(&emu, &[envelope(KEY_B, "b1"), envelope(KEY_B, "b2")]).await).await;
    assert_eq!((a, b), (503, 200));
    assert!(emu.envelopes_for(KEY_A).is_empty());
    assert_eq!(emu.envelopes_for(KEY_B).len(), 2);
    // Keys are GUIDs: case does not matter.
    assert_eq!(emu.envelopes_for(&KEY_B.to_uppercase()).len(), 2);
    assert_eq!(emu.count(), 2);

    emu.clear_fault(KEY_A);
    post_gzip_ndjson(&emu, &[envelope(KEY_A, "a")]).await;
    assert_eq!(emu.count_for(KEY_A), 1);
    assert_eq!(
        emu.envelopes()
            .iter()
            .map(|e| e.ikey.as_str())
            .collect::<Vec<_>>(),
        vec![KEY_B, KEY_B, KEY_A]
    );
    let statuses: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 200, 200]);
}

#[tokio::test]
async fn wait_for_envelopes_wakes_on_arrival_and_times_out() {
    let emu = IngestionEmulator::start().await.unwrap();
    let endpoint = emu.endpoint();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reqwest::Client::new()
            .post(format!("{endpoint}v2.1/track"))
            .body(ndjson(&[envelope(KEY_A, "late")]))
            .send()
            .await
            .unwrap()
            .status()
    });
    let got = emu
        .wait_for_envelopes(KEY_A, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(sender.await.unwrap().as_u16(), 200);
    assert!(
        emu.wait_for_envelopes(KEY_B, 1, Duration::from_millis(50))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn control_api_sets_faults_and_lists_records() {
    let emu = IngestionEmulator::start().await.unwrap();
    let client = reqwest::Client::new();
    let control = format!("{}_emulator", emu.endpoint());
    let put = client
        .put(format!("{control}/faults/{KEY_A}"))
        .json(&json!({"status": 429, "retryAfterSeconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204);
    let (status, retry_after, _) =
        answer(post_gzip_ndjson(&emu, &[envelope(KEY_A, "a")]).await).await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some());

    client
        .delete(format!("{control}/faults/{KEY_A}"))
        .send()
        .await
        .unwrap();
    post_gzip_ndjson(&emu, &[envelope(KEY_A, "a"), envelope(KEY_B, "b")]).await;
    let listed: Value = client
        .get(format!("{control}/envelopes?ikey={KEY_B}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["baseType"], "MessageData");
    let requests: Value = client
        .get(format!("{control}/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests[0]["status"], 429);
    assert_eq!(requests[1]["itemsAccepted"], 2);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let emu = IngestionEmulator::start().await.unwrap();
    let url = format!("{}v2.1/track", emu.endpoint());
    emu.shutdown().await.unwrap();
    let result = reqwest::Client::new()
        .post(url)
        .body(ndjson(&[envelope(KEY_A, "a")]))
        .send()
        .await;
    assert!(result.is_err());
}

/// Enough headroom for the throughput benchmark: many concurrent requests of many items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_concurrent_load() {
    let emu = IngestionEmulator::start().await.unwrap();
    let items: Vec<Value> = (0..500)
        .map(|i| envelope(KEY_A, &format!("m{i}")))
        .collect();
    let body = gzip(&ndjson(&items));
    let client = reqwest::Client::new();
    let url = format!("{}v2.1/track", emu.endpoint());
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("Content-Encoding", "gzip")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let elapsed = started.elapsed();
    assert_eq!(emu.count_for(KEY_A), 20_000);
    // Debug builds on a 2-core box do this in well under a second; 10 s means something broke.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}
