//! The mock against the spec it serves: every operation, every documented status and every
//! named example conforms; bad requests get the spec's errors; new operations need no code.

use std::collections::BTreeMap;

use exports_mock::RunningMock;
use exports_spec::Spec;
use serde_json::{json, Value};

async fn start(spec: Spec) -> (RunningMock, String) {
    let mock = RunningMock::start(spec, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", mock.local_addr);
    (mock, base)
}

/// A request the operation accepts: path parameters and body from the spec's examples.
fn valid_request(spec: &Spec, op: &exports_spec::Operation) -> (String, Option<Value>) {
    let mut path = op.path.to_string();
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
        }
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
                    &op.method,
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
                if let Err(problems) = spec.validate_response(&op.method, &path, got, &headers, &bytes) {
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
    assert_eq!(headers["access-control-allow-origin"], "http://localhost:5173");
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
    assert_eq!(
        response_headers["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_ne!(response_headers["access-control-allow-origin"], "*");
    mock.shutdown().await;
}
