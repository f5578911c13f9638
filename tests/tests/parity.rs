//! The mock and the server say the same thing (issue 12, item 1): one corpus of requests,
//! sent in order to the mock and to the real server, gets the same status, `error.code`,
//! message, details (fields, issues, `allowed` values) and documented headers from both, and
//! both answers validate against the spec. Every documented answer of every operation is
//! reached by the corpus or listed in `LEFT_OUT` with the reason only state can produce it.

use std::collections::{BTreeMap, BTreeSet};

use exports_mock::{Clock, ManualClock, MockOptions, RunningMock};
use exports_spec::Spec;
use exports_tests::TestEnv;
use serde_json::Value;

/// The key a request of the corpus carries.
#[derive(Clone, Copy)]
enum Key {
    None,
    /// `exports:read` and `exports:write`.
    Writer,
    /// `exports:read` only.
    Reader,
    /// `exports:write` only.
    WriteOnly,
    /// `webhooks:manage` only.
    Webhooks,
    /// Of this service's form, but issued to nobody.
    Unknown,
    /// Not of this service's form.
    Garbage,
    /// Not a bearer token at all.
    Basic,
}

/// A request of the corpus. `{export}` in the path is the export the last create made on the
/// side it is sent to, `{endpoint}` the webhook endpoint the last registration made.
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    key: Key,
    headers: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    /// The body padded with spaces past the size limit both sides share.
    oversized: bool,
    /// Sent this many times (each answer compared).
    times: usize,
}

const fn case(name: &'static str, method: &'static str, path: &'static str) -> Case {
    Case {
        name,
        method,
        path,
        key: Key::Writer,
        headers: &[],
        body: None,
        oversized: false,
        times: 1,
    }
}

const fn with_body(name: &'static str, body: &'static str) -> Case {
    Case {
        body: Some(body),
        ..case(name, "POST", EXPORTS)
    }
}

const EXPORTS: &str = "/api/v1/exports/users";
const WEBHOOKS: &str = "/api/v1/webhooks/endpoints";
const UNKNOWN_ENDPOINT: &str = "/api/v1/webhooks/endpoints/6a1d3c5e-7b9f-4d2a-8c4e-1f3a5b7d9e0c";
const PUBLIC_HOOK: &str = r#"{"url": "https://93.184.215.14/hook"}"#;
const UNKNOWN_EXPORT: &str = "/api/v1/exports/users/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91";

const CORPUS: &[Case] = &[
    // Bodies a form can get wrong.
    with_body("unknown format", r#"{"format": "pdf"}"#),
    with_body("unknown member", r#"{"format": "csv", "colour": "red"}"#),
    with_body(
        "unknown filter status",
        r#"{"format": "csv", "filters": {"status": "gone"}}"#,
    ),
    with_body(
        "unknown filter member",
        r#"{"format": "csv", "filters": {"colour": "red"}}"#,
    ),
    with_body("missing format", r#"{}"#),
    with_body("format of the wrong type", r#"{"format": 7}"#),
    with_body(
        "an impossible date",
        r#"{"format": "csv", "filters": {"created_after": "2025-02-30"}}"#,
    ),
    with_body("filters of the wrong type", r#"{"format": "csv", "filters": []}"#),
    // Not nullable in the spec: once read as "no filters" by the server's own validator.
    with_body("null filters", r#"{"format": "csv", "filters": null}"#),
    with_body("a body that is not an object", r#"["csv"]"#),
    // The file's options (1.9).
    with_body("columns as a string", r#"{"format": "csv", "columns": "email"}"#),
    with_body("no columns", r#"{"format": "csv", "columns": []}"#),
    with_body(
        "a column twice",
        r#"{"format": "csv", "columns": ["email", "email"]}"#,
    ),
    with_body(
        "an unknown column",
        r#"{"format": "jsonl", "columns": ["email", "phone"]}"#,
    ),
    with_body("gzip with xlsx", r#"{"format": "xlsx", "compression": "gzip"}"#),
    with_body(
        "an unknown compression",
        r#"{"format": "csv", "compression": "zip"}"#,
    ),
    with_body("malformed JSON", r#"{"format": "#),
    Case {
        headers: &[("idempotency-key", "")],
        ..with_body("an empty idempotency key", r#"{"format": "csv"}"#)
    },
    // Keys.
    Case {
        key: Key::None,
        ..with_body("no key", r#"{"format": "csv"}"#)
    },
    Case {
        key: Key::None,
        ..case("no key on a read", "GET", EXPORTS)
    },
    Case {
        key: Key::Unknown,
        ..case("a key issued to nobody", "GET", EXPORTS)
    },
    Case {
        key: Key::Garbage,
        ..case("a key of another service", "GET", EXPORTS)
    },
    Case {
        key: Key::Basic,
        ..case("basic authentication", "GET", EXPORTS)
    },
    Case {
        key: Key::Reader,
        ..with_body("a read-only key creating", r#"{"format": "csv"}"#)
    },
    Case {
        key: Key::WriteOnly,
        ..case("a write-only key listing", "GET", EXPORTS)
    },
    Case {
        key: Key::WriteOnly,
        ..case("a write-only key reading", "GET", UNKNOWN_EXPORT)
    },
    Case {
        key: Key::WriteOnly,
        ..case(
            "a write-only key downloading",
            "GET",
            "/api/v1/exports/users/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91/download",
        )
    },
    Case {
        key: Key::None,
        ..case("no key on a get", "GET", UNKNOWN_EXPORT)
    },
    Case {
        key: Key::None,
        ..case(
            "no key on a download",
            "GET",
            "/api/v1/exports/users/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91/download",
        )
    },
    Case {
        key: Key::Unknown,
        ..case(
            "a key issued to nobody cancelling",
            "POST",
            "/api/v1/exports/users/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91/cancel",
        )
    },
    // Parameters.
    case("a limit of 0", "GET", "/api/v1/exports/users?limit=0"),
    case("a limit of 101", "GET", "/api/v1/exports/users?limit=101"),
    case(
        "a limit that is not a number",
        "GET",
        "/api/v1/exports/users?limit=ten",
    ),
    case(
        "a page token never issued",
        "GET",
        "/api/v1/exports/users?page_token=garbage",
    ),
    case("a bad export id", "GET", "/api/v1/exports/users/not-a-uuid"),
    // `format: uuid` is the hyphenated form: once taken as an id by the server.
    case(
        "an export id without hyphens",
        "GET",
        "/api/v1/exports/users/0b9a3a0e3f2a4c1e9d3b2a6c1f0e7d55",
    ),
    case(
        "download with a bad export id",
        "GET",
        "/api/v1/exports/users/not-a-uuid/download",
    ),
    case(
        "cancel with a bad export id",
        "POST",
        "/api/v1/exports/users/not-a-uuid/cancel",
    ),
    case("an unknown export", "GET", UNKNOWN_EXPORT),
    case(
        "download of an unknown export",
        "GET",
        "/api/v1/exports/users/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91/download",
    ),
    case(
        "cancel of an unknown export",
        "POST",
        "/api/v1/exports/users/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91/cancel",
    ),
    Case {
        key: Key::None,
        ..case(
            "a link without its signature",
            "GET",
            "/downloads/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91",
        )
    },
    Case {
        key: Key::None,
        ..case(
            "a link with a forged signature",
            "GET",
            "/downloads/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91?expires=4102444800&signature=00",
        )
    },
    // Routes, methods, the browser.
    case("unknown path", "GET", "/api/v1/nothing-here"),
    case("a wrong method", "DELETE", EXPORTS),
    Case {
        key: Key::None,
        headers: &[
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization, content-type"),
        ],
        ..case("a CORS preflight", "OPTIONS", EXPORTS)
    },
    Case {
        key: Key::None,
        ..case("liveness", "GET", "/health/live")
    },
    Case {
        key: Key::None,
        ..case("readiness", "GET", "/health/ready")
    },
    Case {
        key: Key::None,
        ..case("the contract", "GET", "/openapi.json")
    },
    Case {
        key: Key::None,
        ..case("the contract as written", "GET", "/openapi.yaml")
    },
    Case {
        key: Key::None,
        ..case("the reference", "GET", "/docs")
    },
    // An export's life, each side with its own.
    Case {
        headers: &[("idempotency-key", "parity-1")],
        ..with_body("a created export", r#"{"format": "csv"}"#)
    },
    Case {
        headers: &[("idempotency-key", "parity-1")],
        ..with_body("a replayed create", r#"{"format": "csv"}"#)
    },
    Case {
        headers: &[("idempotency-key", "parity-1")],
        ..with_body("a reused idempotency key", r#"{"format": "xlsx"}"#)
    },
    // Every column in the default order and no compression: the same request.
    Case {
        headers: &[("idempotency-key", "parity-1")],
        ..with_body(
            "a replay naming the defaults",
            r#"{"format": "csv", "columns": ["id", "email", "name", "status", "created_at"], "compression": "none"}"#,
        )
    },
    Case {
        headers: &[("idempotency-key", "parity-1")],
        ..with_body(
            "a key reused with other columns",
            r#"{"format": "csv", "columns": ["email"]}"#,
        )
    },
    with_body(
        "a gzipped JSON Lines export of chosen columns",
        r#"{"format": "jsonl", "columns": ["created_at", "email"], "compression": "gzip"}"#,
    ),
    case("a list", "GET", EXPORTS),
    case("a pending export", "GET", "/api/v1/exports/users/{export}"),
    case(
        "download of a pending export",
        "GET",
        "/api/v1/exports/users/{export}/download",
    ),
    Case {
        key: Key::Reader,
        ..case(
            "a read-only key cancelling",
            "POST",
            "/api/v1/exports/users/{export}/cancel",
        )
    },
    case("a cancel", "POST", "/api/v1/exports/users/{export}/cancel"),
    case("a second cancel", "POST", "/api/v1/exports/users/{export}/cancel"),
    case(
        "download of a cancelled export",
        "GET",
        "/api/v1/exports/users/{export}/download",
    ),
    Case {
        oversized: true,
        ..with_body("a body over the limit", r#"{"format": "csv"}"#)
    },
    // Webhook endpoints (what needs the mock to keep them is in LEFT_OUT).
    Case {
        key: Key::Webhooks,
        ..case("an endpoint without its url", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(r#"{}"#),
        ..case("an endpoint with an empty body", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(
            r#"{"url": "https://93.184.215.14/hook", "event_types": ["export.started"], "colour": 1}"#,
        ),
        ..case("an endpoint for an unknown event", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(r#"{"url": "https://93.184.215.14/hook", "event_types": []}"#),
        ..case("an endpoint for no event", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(r#"{"url": "https://93.184.215.14/hook"}"#),
        oversized: true,
        ..case("an endpoint body over the limit", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(r#"{"url": "https://93.184.215.14/hook", "event_types": ["export.done"]}"#),
        ..case("an endpoint registered", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        ..case("the endpoints", "GET", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "the endpoint's deliveries",
            "GET",
            "/api/v1/webhooks/endpoints/{endpoint}/deliveries",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "the endpoint's secret rotated",
            "POST",
            "/api/v1/webhooks/endpoints/{endpoint}/rotate-secret",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "the endpoint deleted",
            "DELETE",
            "/api/v1/webhooks/endpoints/{endpoint}",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "the deleted endpoint's deliveries",
            "GET",
            "/api/v1/webhooks/endpoints/{endpoint}/deliveries",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "the endpoint deleted again",
            "DELETE",
            "/api/v1/webhooks/endpoints/{endpoint}",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "the deleted endpoint's secret rotated",
            "POST",
            "/api/v1/webhooks/endpoints/{endpoint}/rotate-secret",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "an unknown endpoint's deliveries",
            "GET",
            "/api/v1/webhooks/endpoints/6a1d3c5e-7b9f-4d2a-8c4e-1f3a5b7d9e0c/deliveries",
        )
    },
    Case {
        key: Key::Webhooks,
        body: Some(r#"{"url": "ftp://93.184.215.14/hook"}"#),
        ..case("an endpoint that is not https", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(r#"{"url": "https://user:secret@93.184.215.14/hook"}"#),
        ..case("an endpoint with credentials", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(r#"{"url": "https://93.184.215.14/hook", "event_types": ["export.started"]}"#),
        ..case("an endpoint for an unknown event", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(PUBLIC_HOOK),
        times: 10,
        ..case("endpoints up to the limit", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Webhooks,
        body: Some(PUBLIC_HOOK),
        ..case("an endpoint past the limit", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Writer,
        ..case("an exports key listing endpoints", "GET", WEBHOOKS)
    },
    Case {
        key: Key::Writer,
        body: Some(r#"{"url": "https://93.184.215.14/hook"}"#),
        ..case("an exports key registering", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Writer,
        ..case("an exports key deleting", "DELETE", UNKNOWN_ENDPOINT)
    },
    Case {
        key: Key::Writer,
        ..case(
            "an exports key rotating",
            "POST",
            "/api/v1/webhooks/endpoints/6a1d3c5e-7b9f-4d2a-8c4e-1f3a5b7d9e0c/rotate-secret",
        )
    },
    Case {
        key: Key::None,
        ..case("no key on the endpoints", "GET", WEBHOOKS)
    },
    Case {
        key: Key::None,
        body: Some(r#"{"url": "https://93.184.215.14/hook"}"#),
        ..case("no key registering", "POST", WEBHOOKS)
    },
    Case {
        key: Key::Garbage,
        ..case("a foreign key deleting", "DELETE", UNKNOWN_ENDPOINT)
    },
    Case {
        key: Key::Basic,
        ..case(
            "basic authentication rotating",
            "POST",
            "/api/v1/webhooks/endpoints/6a1d3c5e-7b9f-4d2a-8c4e-1f3a5b7d9e0c/rotate-secret",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "delete with a bad endpoint id",
            "DELETE",
            "/api/v1/webhooks/endpoints/not-a-uuid",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "rotate with a bad endpoint id",
            "POST",
            "/api/v1/webhooks/endpoints/not-a-uuid/rotate-secret",
        )
    },
    Case {
        key: Key::Webhooks,
        ..case(
            "deliveries with a bad endpoint id",
            "GET",
            "/api/v1/webhooks/endpoints/not-a-uuid/deliveries",
        )
    },
    Case {
        key: Key::Reader,
        ..case(
            "an exports key reading deliveries",
            "GET",
            "/api/v1/webhooks/endpoints/6a1d3c5e-7b9f-4d2a-8c4e-1f3a5b7d9e0c/deliveries",
        )
    },
    Case {
        key: Key::None,
        ..case(
            "no key on deliveries",
            "GET",
            "/api/v1/webhooks/endpoints/6a1d3c5e-7b9f-4d2a-8c4e-1f3a5b7d9e0c/deliveries",
        )
    },
];

/// Documented answers no request of the corpus can get from both sides alike, and why.
const LEFT_OUT: &[(&str, u16, &str)] = &[
    (
        "createUserExport",
        409,
        "idempotency_key_in_use needs a create with the same key still running",
    ),
    (
        "createUserExport",
        429,
        "too_many_pending_exports needs the user's pending exports at the limit",
    ),
    (
        "downloadExport",
        200,
        "needs an export a worker finished (the mock's clock never moves here)",
    ),
    (
        "downloadExport",
        410,
        "needs a finished export whose file expired",
    ),
    (
        "downloadByLink",
        200,
        "needs a link the server signed for a finished export",
    ),
    (
        "downloadByLink",
        404,
        "needs a correctly signed link to an export that does not exist",
    ),
    (
        "downloadByLink",
        409,
        "needs a correctly signed link to an unfinished export",
    ),
    (
        "downloadByLink",
        410,
        "needs a correctly signed link to an expired export",
    ),
    (
        "metrics",
        200,
        "served on the metrics listener, which the test server does not start",
    ),
    ("metrics", 404, "the mock serves the spec's example instead"),
    ("metrics", 500, "a failure of the server's own"),
    ("readiness", 503, "needs PostgreSQL or Redis down"),
];

/// Every operation's 429 (too many failed authentications from one address), 500, 503 and 504
/// need the server's state or faults: a count of bad keys, a bug, a dependency down, a slow one.
const LEFT_OUT_EVERYWHERE: &[(u16, &str)] = &[
    (
        429,
        "too_many_failed_authentications needs 30 bad keys from the caller's address",
    ),
    (500, "a failure of the server's own"),
    (503, "needs PostgreSQL or Redis down"),
    (504, "needs a request past its time limit"),
];

/// The headers the spec documents or CORS needs; both sides must send the same values.
const COMPARED_HEADERS: &[&str] = &[
    "retry-after",
    "www-authenticate",
    "allow",
    "x-request-id",
    "idempotent-replayed",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
];

/// What must agree.
#[derive(Debug, PartialEq)]
struct Gist {
    status: u16,
    media_type: String,
    code: Option<String>,
    message: Option<String>,
    details: BTreeSet<(String, String, Vec<String>)>,
    headers: BTreeMap<&'static str, String>,
}

fn gist(status: u16, headers: &http::HeaderMap, body: &Value) -> Gist {
    let details = body["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|detail| {
            let mut allowed: Vec<String> = detail["allowed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|value| value.as_str().map(str::to_string))
                .collect();
            allowed.sort();
            let text = |name: &str| detail[name].as_str().unwrap_or_default().to_string();
            (text("field"), text("issue"), allowed)
        })
        .collect();
    let text = |value: &Value| value.as_str().map(str::to_string);
    Gist {
        status,
        media_type: headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(exports_spec::media_type)
            .unwrap_or_default(),
        code: text(&body["error"]["code"]),
        message: text(&body["error"]["message"]),
        details,
        // Several fields of one name are one list (RFC 9110, 5.3): dropshot sends `Allow` so.
        headers: COMPARED_HEADERS
            .iter()
            .filter(|name| headers.contains_key(**name))
            .map(|name| {
                let values: Vec<&str> = headers
                    .get_all(*name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (*name, values.join(", "))
            })
            .collect(),
    }
}

/// One side of the comparison: its address, keys and the export its last create made.
struct Side {
    base: String,
    writer: String,
    reader: String,
    write_only: String,
    webhooks: String,
    export: Option<String>,
    endpoint: Option<String>,
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
    /// The operation the spec routes the request to.
    operation: Option<String>,
}

async fn send(
    spec: &Spec,
    http: &reqwest::Client,
    side: &mut Side,
    number: usize,
    case: &Case,
) -> anyhow::Result<Answer> {
    let mut path = case.path.to_string();
    if path.contains("{export}") {
        let export = side.export.as_deref().unwrap_or("no-export-yet");
        path = path.replace("{export}", export);
    }
    if path.contains("{endpoint}") {
        let endpoint = side.endpoint.as_deref().unwrap_or("no-endpoint-yet");
        path = path.replace("{endpoint}", endpoint);
    }
    let mut request = http
        .request(case.method.parse()?, format!("{}{path}", side.base))
        .header("x-request-id", format!("parity-{number}"))
        .header("origin", "https://app.example");
    request = match case.key {
        Key::None => request,
        Key::Writer => request.bearer_auth(&side.writer),
        Key::Reader => request.bearer_auth(&side.reader),
        Key::WriteOnly => request.bearer_auth(&side.write_only),
        Key::Webhooks => request.bearer_auth(&side.webhooks),
        Key::Unknown => request.bearer_auth("exk_issuedtonobodyissuedtonobodyissuedtonobody1"),
        Key::Garbage => request.bearer_auth("garbage"),
        Key::Basic => request.basic_auth("user", Some("password")),
    };
    for (name, value) in case.headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = case.body {
        let padding = if case.oversized {
            exports_spec::errors::DEFAULT_MAX_BODY_BYTES
        } else {
            0
        };
        let body = format!("{body}{}", " ".repeat(padding));
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = path.split('?').next().unwrap_or(&path).to_string();
    let operation = spec
        .find_operation(case.method, &path)
        .map(|operation| operation.id.to_string());
    let header_map: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    // A path or method the spec does not have can only be held to the error envelope.
    let checked = match (&operation, case.method) {
        (Some(_), _) => spec.validate_response(case.method, &path, status, &header_map, &bytes),
        (None, "OPTIONS") => Ok(()),
        (None, _) => spec.validate(
            &serde_json::json!({"$ref": "#/components/schemas/ErrorResponse"}),
            &body,
        ),
    };
    if let Err(problems) = checked {
        anyhow::bail!(
            "{}: {} {path} breaks the spec: {problems:?}",
            side.base,
            case.method
        );
    }
    if status == 202 {
        side.export = body["export_id"].as_str().map(str::to_string);
    }
    if status == 201 {
        side.endpoint = body["endpoint_id"].as_str().map(str::to_string);
    }
    Ok(Answer {
        status,
        headers,
        body,
        operation,
    })
}

#[tokio::test]
async fn the_mock_and_the_server_give_the_same_answers() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|settings| settings.cors_allowed_origins = vec!["*".into()]).await?;
    let (writer, reader, write_only, webhooks) = (
        env.writer().await?,
        env.user(&["exports:read"]).await?,
        env.user(&["exports:write"]).await?,
        env.user(&["webhooks:manage"]).await?,
    );
    let spec = Spec::bundled();
    let keys = BTreeMap::from([
        (
            writer.key.clone(),
            vec!["exports:read".to_string(), "exports:write".to_string()],
        ),
        (reader.key.clone(), vec!["exports:read".to_string()]),
        (write_only.key.clone(), vec!["exports:write".to_string()]),
        (webhooks.key.clone(), vec!["webhooks:manage".to_string()]),
    ]);
    let options = MockOptions {
        keys: Some(keys),
        // The mock's exports stay where the server's (with no worker) stay: pending.
        clock: Clock::Manual(ManualClock::default()),
        ..MockOptions::default()
    };
    let mock = RunningMock::start(Spec::bundled(), "127.0.0.1:0".parse()?, options).await?;
    let mut server = Side {
        base: format!("http://{}", env.server_addr),
        writer: writer.key.clone(),
        reader: reader.key.clone(),
        write_only: write_only.key.clone(),
        webhooks: webhooks.key.clone(),
        export: None,
        endpoint: None,
    };
    let mut mocked = Side {
        base: format!("http://{}", mock.local_addr),
        writer: writer.key.clone(),
        reader: reader.key.clone(),
        write_only: write_only.key.clone(),
        webhooks: webhooks.key.clone(),
        export: None,
        endpoint: None,
    };
    let http = reqwest::Client::new();
    let mut differences = Vec::new();
    let mut reached = BTreeSet::new();
    let sent = CORPUS
        .iter()
        .flat_map(|case| std::iter::repeat_n(case, case.times));
    for (number, case) in sent.enumerate() {
        let ours = send(&spec, &http, &mut server, number, case).await?;
        let theirs = send(&spec, &http, &mut mocked, number, case).await?;
        let (ours_gist, theirs_gist) = (
            gist(ours.status, &ours.headers, &ours.body),
            gist(theirs.status, &theirs.headers, &theirs.body),
        );
        if ours_gist != theirs_gist {
            differences.push(format!(
                "{}:\n  server {ours_gist:?}\n  mock   {theirs_gist:?}",
                case.name
            ));
        }
        if let Some(operation) = ours.operation {
            reached.insert((operation, ours.status));
        }
    }
    mock.shutdown().await;
    assert!(
        differences.is_empty(),
        "the mock and the server differ:\n{}",
        differences.join("\n")
    );

    // Every documented answer is reached, or left out with its reason; nothing left out is reached.
    let mut unreached = Vec::new();
    for operation in spec.operations() {
        let statuses = operation.definition["responses"]
            .as_object()
            .into_iter()
            .flatten();
        for status in statuses.filter_map(|(status, _)| status.parse::<u16>().ok()) {
            let left_out = LEFT_OUT
                .iter()
                .any(|(id, left, _)| *id == operation.id && *left == status)
                || LEFT_OUT_EVERYWHERE.iter().any(|(left, _)| *left == status);
            let was_reached = reached.contains(&(operation.id.to_string(), status));
            if left_out == was_reached {
                unreached.push(format!(
                    "{} {status}: {}",
                    operation.id,
                    if was_reached {
                        "reached, but listed as left out"
                    } else {
                        "neither reached nor left out"
                    }
                ));
            }
        }
    }
    assert!(
        unreached.is_empty(),
        "the corpus does not cover the spec:\n{}",
        unreached.join("\n")
    );
    env.finish().await
}
