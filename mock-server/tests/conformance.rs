//! The mock against the spec it serves: every operation, every documented status and every
//! named example conforms; bad requests get the spec's errors; new operations need no code.

use std::collections::BTreeMap;
use std::time::Duration;

use exports_mock::{Clock, ManualClock, MockOptions, RunningMock, SpecEdits};
use exports_spec::Spec;
use serde_json::{json, Value};

async fn start(spec: Spec) -> (RunningMock, String) {
    start_with(spec, MockOptions::default()).await
}

async fn start_with(spec: Spec, options: MockOptions) -> (RunningMock, String) {
    let mock = RunningMock::start(spec, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let base = format!("http://{}", mock.local_addr);
    (mock, base)
}

/// A request the operation accepts: path parameters and body from the spec's examples.
fn valid_request(spec: &Spec, op: &exports_spec::Operation) -> (String, Option<Value>) {
    let mut path = op.path.to_string();
    let mut query = Vec::new();
    for parameter in op
        .definition
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let parameter = spec.resolve(parameter).unwrap();
        if parameter["in"] == "path" {
            let example = parameter.get("example").and_then(Value::as_str).unwrap();
            path = path.replace(&format!("{{{}}}", parameter["name"].as_str().unwrap()), example);
        } else if parameter["in"] == "query" && parameter["required"] == true {
            let example = match &parameter["example"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            query.push(format!("{}={example}", parameter["name"].as_str().unwrap()));
        }
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let body = op.definition.get("requestBody").map(|body| {
        let media = &spec.resolve(body).unwrap()["content"]["application/json"];
        media.get("example").cloned().unwrap_or_else(|| {
            let first = media["examples"].as_object().unwrap().values().next().unwrap();
            spec.resolve(first).unwrap()["value"].clone()
        })
    });
    (path, body)
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    prefer: Option<String>,
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut request = http
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth("exk_any-key-works-with-the-mock");
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(prefer) = prefer {
        request = request.header("prefer", prefer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn every_status_and_example_conforms() {
    let spec = Spec::bundled();
    let (mock, base) = start(Spec::bundled()).await;
    let http = reqwest::Client::new();
    let mut checked = 0;
    for op in spec.operations() {
        let (path, body) = valid_request(&spec, &op);
        for (status, response) in op.definition["responses"].as_object().unwrap() {
            let response = spec.resolve(response).unwrap();
            let mut names: Vec<Option<String>> = vec![None];
            for media in response
                .get("content")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(_, m)| m)
            {
                names.extend(
                    media
                        .get("examples")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .map(|(n, _)| Some(n.clone())),
                );
            }
            for name in names {
                let prefer = match &name {
                    Some(name) => format!("code={status}, example={name}"),
                    None => format!("code={status}"),
                };
                let (got, headers, bytes) = send(
                    &http,
                    &base,
                    op.method,
                    &path,
                    body.as_ref(),
                    Some(prefer.clone()),
                )
                .await;
                assert_eq!(
                    got.to_string(),
                    *status,
                    "{} {prefer}: {}",
                    op.id,
                    String::from_utf8_lossy(&bytes)
                );
                if let Err(problems) = spec.validate_response(op.method, &path, got, &headers, &bytes) {
                    panic!("{} {prefer}: {problems:#?}", op.id);
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "only {checked} responses checked");
    mock.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_the_specs_errors() {
    let spec = Spec::bundled();
    let (mock, base) = start(Spec::bundled()).await;
    let http = reqwest::Client::new();
    let create = "/api/v1/exports/users";

    let bad = json!({"format": "pdf", "filters": {"created_after": "yesterday"}});
    let (status, headers, bytes) = send(&http, &base, "POST", create, Some(&bad), None).await;
    assert_eq!(status, 400);
    spec.validate_response("POST", create, status, &headers, &bytes)
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"format") && fields.contains(&"filters.created_after"),
        "{body}"
    );

    let (status, _, bytes) = send(&http, &base, "POST", create, Some(&json!({})), None).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&bytes).contains("\"field\":\"format\""));

    let (status, _, _) = send(
        &http,
        &base,
        "GET",
        "/api/v1/exports/users/not-a-uuid",
        None,
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = send(&http, &base, "GET", "/api/v1/exports/users?limit=0", None, None).await;
    assert_eq!(status, 400);

    let unauthenticated = http.get(format!("{base}{create}")).send().await.unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    assert_eq!(unauthenticated.headers()["www-authenticate"], "Bearer");

    let (status, _, bytes) = send(&http, &base, "GET", "/api/v1/nothing", None, None).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&bytes).contains("\"code\":\"not_found\""));
    let wrong = http.delete(format!("{base}{create}")).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 405);
    assert_eq!(wrong.headers()["allow"], "GET, POST");

    let (status, _, bytes) = send(&http, &base, "GET", create, None, Some("code=418".into())).await;
    assert_eq!(status, 500, "an undocumented status is a clear 500");
    assert!(String::from_utf8_lossy(&bytes).contains("documents no 418 response"));
    mock.shutdown().await;
}

#[tokio::test]
async fn a_new_operation_in_the_spec_is_served_without_code() {
    let mut document = Spec::bundled().document().clone();
    let operation = json!({
        "get": {
            "operationId": "getQuota",
            "summary": "Quota",
            "security": [],
            "responses": {"200": {"description": "ok", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"remaining": {"type": "integer"}}},
                "example": {"remaining": 7}
            }}}}
        }
    });
    document["paths"]
        .as_object_mut()
        .unwrap()
        .insert("/api/v1/quota".into(), operation);
    let (mock, base) = start(Spec::from_value(document).unwrap()).await;
    let body: Value = reqwest::get(format!("{base}/api/v1/quota"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"remaining": 7}));
    mock.shutdown().await;
}

#[tokio::test]
async fn a_browser_on_another_origin_passes_preflight() {
    let (mock, base) = start(Spec::bundled()).await;
    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{base}/api/v1/exports/users"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("idempotency-key"));
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let (_, response_headers, _) = {
        let response = http
            .get(format!("{base}/health/live"))
            .header("origin", "http://localhost:5173")
            .send()
            .await
            .unwrap();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
            .collect();
        (response.status(), headers, ())
    };
    // As the server's `dev` answers: a literal `*`, never credentials.
    let traced = http
        .get(format!("{base}/health/live"))
        .header("x-request-id", "trace-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        traced.headers()["x-request-id"],
        "trace-42.a_b",
        "an incoming id is kept, as by the server"
    );
    assert_eq!(response_headers["access-control-allow-origin"], "*");
    assert!(!response_headers.contains_key("access-control-allow-credentials"));
    assert!(response_headers["access-control-expose-headers"].contains("idempotent-replayed"));
    mock.shutdown().await;
}

/// Checks a live response against the spec and returns its JSON body.
async fn conforming(spec: &Spec, method: &str, path: &str, response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let headers: BTreeMap<String, String> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let bytes = response.bytes().await.unwrap();
    if let Err(problems) = spec.validate_response(method, path, status, &headers, &bytes) {
        panic!("{method} {path} {status}: {problems:#?}");
    }
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn exports_play_their_lifecycle() {
    let spec = Spec::bundled();
    // The export's time passes only when the test says so: no check races the machine.
    let clock = ManualClock::default();
    let options = MockOptions {
        speed: 10.0,
        clock: Clock::Manual(clock.clone()),
        ..MockOptions::default()
    };
    let (mock, base) = start_with(Spec::bundled(), options).await;
    let http = reqwest::Client::new();
    let (alice, bob) = ("Bearer alice", "Bearer bob");
    let create = "/api/v1/exports/users";
    let post = |who: &'static str, format: &str| {
        http.post(format!("{base}{create}"))
            .header("authorization", who)
            .json(&json!({"format": format, "filters": {"status": "inactive"}}))
            .send()
    };

    let (status, accepted) = conforming(&spec, "POST", create, post(alice, "csv").await.unwrap()).await;
    assert_eq!(status, 202);
    let id = accepted["export_id"].as_str().unwrap().to_string();
    let path = format!("{create}/{id}");
    let get = |who: &'static str, path: String| {
        http.get(format!("{base}{path}"))
            .header("authorization", who)
            .send()
    };

    let (status, export) = conforming(&spec, "GET", &path, get(alice, path.clone()).await.unwrap()).await;
    assert_eq!((status, export["status"].as_str()), (200, Some("pending")));
    assert_eq!(export["filters"], json!({"status": "inactive"}));
    let download = format!("{path}/download");
    let (status, early) = conforming(
        &spec,
        "GET",
        &download,
        get(alice, download.clone()).await.unwrap(),
    )
    .await;
    assert_eq!(status, 409, "{early}");
    let (status, _) = conforming(&spec, "GET", &path, get(bob, path.clone()).await.unwrap()).await;
    assert_eq!(status, 404, "another caller does not see it");

    let (_, listed) = conforming(
        &spec,
        "GET",
        create,
        get(alice, create.to_string()).await.unwrap(),
    )
    .await;
    assert_eq!(listed["items"][0]["export_id"], id.as_str());
    let (_, listed) = conforming(&spec, "GET", create, get(bob, create.to_string()).await.unwrap()).await;
    assert_eq!(listed["items"], json!([]));

    // The estimate is rounded up to whole seconds: a second short of it, the export still runs.
    let estimated = Duration::from_secs(accepted["estimated_seconds"].as_u64().unwrap());
    clock.advance(estimated - Duration::from_secs(1));
    let (_, export) = conforming(&spec, "GET", &path, get(alice, path.clone()).await.unwrap()).await;
    assert_eq!(export["status"], "processing");
    clock.advance(Duration::from_secs(1));
    let (_, export) = conforming(&spec, "GET", &path, get(alice, path.clone()).await.unwrap()).await;
    assert_eq!(export["status"], "done");
    assert_eq!(export["progress"]["percent"], 100.0);
    assert!(export["download_url"].as_str().unwrap().ends_with(&download));

    let file = get(alice, download.clone()).await.unwrap();
    assert_eq!(file.status().as_u16(), 200);
    assert_eq!(
        file.headers()["content-type"],
        "text/csv; charset=utf-8",
        "the server's"
    );
    assert!(file.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains(".csv"));
    let csv = file.text().await.unwrap();
    assert!(csv.starts_with("id,email,name,status,created_at"));
    assert!(
        csv.lines().skip(1).all(|line| line.contains(",inactive,")),
        "the filter applies: {csv}"
    );
    assert_eq!(
        csv.lines().count() as u64 - 1,
        export["progress"]["rows_total"].as_u64().unwrap()
    );

    let cancel = format!("{path}/cancel");
    let cancel_done = http
        .post(format!("{base}{cancel}"))
        .header("authorization", alice)
        .send()
        .await
        .unwrap();
    assert_eq!(conforming(&spec, "POST", &cancel, cancel_done).await.0, 409);

    let (_, second) = conforming(&spec, "POST", create, post(alice, "xlsx").await.unwrap()).await;
    let second_cancel = format!("{create}/{}/cancel", second["export_id"].as_str().unwrap());
    let cancelled = http
        .post(format!("{base}{second_cancel}"))
        .header("authorization", alice)
        .send()
        .await
        .unwrap();
    let (status, cancelled) = conforming(&spec, "POST", &second_cancel, cancelled).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")));
    mock.shutdown().await;
}

#[tokio::test]
async fn idempotent_creates_replay_as_on_the_server() {
    let spec = Spec::bundled();
    let (_mock, base) = start(Spec::bundled()).await;
    let http = reqwest::Client::new();
    let create = "/api/v1/exports/users";
    let post = |who: &'static str, key: &'static str, body: &'static str| {
        http.post(format!("{base}{create}"))
            .header("authorization", who)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let body = r#"{"format": "csv", "filters": {"status": "active", "created_after": "2020-01-01"}}"#;
    let first = post("Bearer alice", "k1", body).await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = conforming(&spec, "POST", create, first).await;
    assert_eq!(status, 202);

    // The same request (members reordered): the first answer, marked as a replay.
    let reordered = r#"{"filters": {"created_after": "2020-01-01", "status": "active"}, "format": "csv"}"#;
    let replay = post("Bearer alice", "k1", reordered).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        conforming(&spec, "POST", create, replay).await,
        (202, first.clone())
    );
    // A different request with the key: 422; another caller's equal key: a new export.
    let (status, reused) = conforming(
        &spec,
        "POST",
        create,
        post("Bearer alice", "k1", r#"{"format": "xlsx"}"#).await.unwrap(),
    )
    .await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let (status, bobs) = conforming(
        &spec,
        "POST",
        create,
        post("Bearer bob", "k1", body).await.unwrap(),
    )
    .await;
    assert_eq!(status, 202);
    assert_ne!(bobs["export_id"], first["export_id"]);
    // A malformed key: the spec's 400, before anything is remembered.
    let (status, bad) = conforming(
        &spec,
        "POST",
        create,
        post("Bearer alice", "", body).await.unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
}

#[tokio::test]
async fn named_keys_get_401_and_403_as_on_the_server() {
    let spec = Spec::bundled();
    let keys = BTreeMap::from([
        ("exk_reader".to_string(), vec!["exports:read".to_string()]),
        (
            "exk_writer".to_string(),
            vec!["exports:read".to_string(), "exports:write".to_string()],
        ),
    ]);
    let options = MockOptions {
        keys: Some(keys),
        ..MockOptions::default()
    };
    let (_mock, base) = start_with(Spec::bundled(), options).await;
    let http = reqwest::Client::new();
    let list = "/api/v1/exports/users";
    let create = |key: Option<&str>| {
        let request = http.post(format!("{base}{list}")).json(&json!({"format": "csv"}));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
        .send()
    };
    let (status, missing) = conforming(&spec, "POST", list, create(None).await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(missing["error"]["details"][0]["issue"], "is missing", "{missing}");
    let (status, unknown) = conforming(&spec, "POST", list, create(Some("exk_guess")).await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(unknown["error"]["details"][0]["issue"]
        .as_str()
        .unwrap()
        .contains("not a valid API key"));
    let (status, forbidden) =
        conforming(&spec, "POST", list, create(Some("exk_reader")).await.unwrap()).await;
    assert_eq!(
        (status, forbidden["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert!(
        forbidden["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exports:write"),
        "{forbidden}"
    );
    assert_eq!(
        conforming(&spec, "POST", list, create(Some("exk_writer")).await.unwrap())
            .await
            .0,
        202
    );
    let read = http
        .get(format!("{base}{list}"))
        .bearer_auth("exk_reader")
        .send()
        .await
        .unwrap();
    assert_eq!(conforming(&spec, "GET", list, read).await.0, 200);
}

#[tokio::test]
async fn xlsx_downloads_are_spreadsheets() {
    let clock = ManualClock::default();
    let options = MockOptions {
        clock: Clock::Manual(clock.clone()),
        ..MockOptions::default()
    };
    let (mock, base) = start_with(Spec::bundled(), options).await;
    let http = reqwest::Client::new();
    let accepted: Value = http
        .post(format!("{base}/api/v1/exports/users"))
        .bearer_auth("k")
        .json(&json!({"format": "xlsx"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(
        accepted["estimated_seconds"].as_u64().unwrap(),
    ));
    let url = format!(
        "{base}/api/v1/exports/users/{}/download",
        accepted["export_id"].as_str().unwrap()
    );
    let file = http.get(url).bearer_auth("k").send().await.unwrap();
    assert_eq!(file.status().as_u16(), 200);
    assert_eq!(
        file.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let bytes = file.bytes().await.unwrap();
    assert_eq!(&bytes[..2], b"PK");
    mock.shutdown().await;
}

#[tokio::test]
async fn stateless_mode_and_latency() {
    let spec = Spec::bundled();
    let options = MockOptions {
        stateful: false,
        ..MockOptions::default()
    };
    let (mock, base) = start_with(Spec::bundled(), options).await;
    let http = reqwest::Client::new();
    let create = "/api/v1/exports/users";
    let request = || {
        http.post(format!("{base}{create}"))
            .bearer_auth("k")
            .json(&json!({"format": "csv"}))
    };
    let (_, first) = conforming(&spec, "POST", create, request().send().await.unwrap()).await;
    let (_, second) = conforming(&spec, "POST", create, request().send().await.unwrap()).await;
    assert_eq!(first, second, "without state every answer is the spec's example");

    let started = std::time::Instant::now();
    let slow = request().header("prefer", "latency=300").send().await.unwrap();
    assert_eq!(slow.status().as_u16(), 202);
    assert!(started.elapsed() >= Duration::from_millis(300));
    mock.shutdown().await;
}

/// Waits until the mock has handled the edits `done` asks for; the bound only keeps a broken
/// watcher from hanging the suite, it is never what the test measures.
async fn wait_for_edits(mock: &RunningMock, done: impl FnMut(&SpecEdits) -> bool) -> SpecEdits {
    let mut edits = mock.spec_edits();
    tokio::time::timeout(Duration::from_secs(30), edits.wait_for(done))
        .await
        .expect("the watcher handled the edit within 30 s")
        .map(|handled| *handled)
        .expect("the watcher is running")
}

#[tokio::test]
async fn the_spec_file_is_watched_and_reloaded() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("openapi.yaml");
    std::fs::write(&path, exports_spec::OPENAPI_YAML).unwrap();
    let options = MockOptions {
        watch: Some(path.clone()),
        ..MockOptions::default()
    };
    let (mock, base) = start_with(Spec::load(&path).unwrap(), options).await;
    let status = |url: String| async move { reqwest::get(url).await.unwrap().status().as_u16() };
    assert_eq!(status(format!("{base}/health/alive")).await, 404);

    // A broken edit: rejected, and the last good spec keeps serving.
    std::fs::write(&path, "openapi: [this is not").unwrap();
    let edits = wait_for_edits(&mock, |edits| edits.rejected > 0).await;
    assert_eq!(edits.loaded, 0, "{edits:?}");
    assert_eq!(status(format!("{base}/health/live")).await, 200);

    // A good edit with a new operation: served without a restart.
    let renamed = exports_spec::OPENAPI_YAML.replace("/health/live:", "/health/alive:");
    std::fs::write(&path, renamed).unwrap();
    wait_for_edits(&mock, |edits| edits.loaded > 0).await;
    assert_eq!(status(format!("{base}/health/alive")).await, 200);
    assert_eq!(status(format!("{base}/health/live")).await, 404);
    mock.shutdown().await;
}

#[tokio::test]
async fn docs_page_renders_the_spec() {
    let (mock, base) = start(Spec::bundled()).await;
    let response = reqwest::get(format!("{base}/docs")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.contains("createUserExport") && html.contains("/api/v1/exports/users/{export_id}/cancel"));
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "self-contained, works offline"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn dynamic_data_conforms_and_follows_the_seed() {
    let spec = Spec::bundled();
    let http = reqwest::Client::new();
    let mut bodies = Vec::new();
    for seed in [1, 1, 2] {
        let (mock, base) = start_with(
            Spec::bundled(),
            MockOptions {
                seed,
                ..MockOptions::default()
            },
        )
        .await;
        let mut answers = Vec::new();
        for op in spec.operations() {
            let (path, body) = valid_request(&spec, &op);
            for (status, response) in op.definition["responses"].as_object().unwrap() {
                let json = spec
                    .resolve(response)
                    .unwrap()
                    .pointer("/content/application~1json")
                    .is_some();
                if !json {
                    continue;
                }
                let prefer = format!("code={status}, dynamic=true");
                let (got, headers, bytes) =
                    send(&http, &base, op.method, &path, body.as_ref(), Some(prefer)).await;
                assert_eq!(
                    got.to_string(),
                    *status,
                    "{}: {}",
                    op.id,
                    String::from_utf8_lossy(&bytes)
                );
                if let Err(problems) = spec.validate_response(op.method, &path, got, &headers, &bytes) {
                    panic!("{} {status} dynamic: {problems:#?}", op.id);
                }
                // The error envelope carries each request's own id; the rest is generated.
                let mut value: Value = serde_json::from_slice(&bytes).unwrap();
                if let Some(id) = value.pointer_mut("/error/request_id") {
                    *id = Value::Null;
                }
                answers.push(value);
            }
        }
        bodies.push(answers);
        mock.shutdown().await;
    }
    assert_eq!(bodies[0], bodies[1], "the same seed gives the same data");
    assert_ne!(bodies[0], bodies[2], "another seed gives other data");
}
