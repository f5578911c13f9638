//! The mock and the server say the same thing (issue 12, item 1; a first corpus): the same
//! requests, sent to the mock and to the real server, get the same status, `error.code`,
//! detail fields and `allowed` values, and both answers validate against the spec.

use std::collections::BTreeSet;

use exports_mock::{MockOptions, RunningMock};
use exports_spec::Spec;
use exports_tests::TestEnv;
use serde_json::Value;

/// A request of the corpus: method, path, whether it carries a valid key, and its body.
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    key: bool,
    body: Option<&'static str>,
}

const CORPUS: &[Case] = &[
    Case {
        name: "unknown format",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": "pdf"}"#),
    },
    Case {
        name: "unknown member",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": "csv", "colour": "red"}"#),
    },
    Case {
        name: "unknown filter status",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": "csv", "filters": {"status": "gone"}}"#),
    },
    Case {
        name: "unknown filter member",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": "csv", "filters": {"colour": "red"}}"#),
    },
    Case {
        name: "missing format",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{}"#),
    },
    Case {
        name: "no key",
        method: "POST",
        path: "/api/v1/exports/users",
        key: false,
        body: Some(r#"{"format": "csv"}"#),
    },
    Case {
        name: "no key on a read",
        method: "GET",
        path: "/api/v1/exports/users",
        key: false,
        body: None,
    },
    Case {
        name: "a limit of 0",
        method: "GET",
        path: "/api/v1/exports/users?limit=0",
        key: true,
        body: None,
    },
    Case {
        name: "a limit of 101",
        method: "GET",
        path: "/api/v1/exports/users?limit=101",
        key: true,
        body: None,
    },
    Case {
        name: "a page token never issued",
        method: "GET",
        path: "/api/v1/exports/users?page_token=garbage",
        key: true,
        body: None,
    },
    Case {
        name: "unknown path",
        method: "GET",
        path: "/api/v1/nothing-here",
        key: true,
        body: None,
    },
    Case {
        name: "health",
        method: "GET",
        path: "/health/live",
        key: false,
        body: None,
    },
    Case {
        name: "format of the wrong type",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": 7}"#),
    },
    Case {
        name: "an impossible date",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": "csv", "filters": {"created_after": "2025-02-30"}}"#),
    },
    Case {
        name: "filters of the wrong type",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": "csv", "filters": []}"#),
    },
    Case {
        name: "malformed JSON",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": "#),
    },
    Case {
        name: "a bad export id",
        method: "GET",
        path: "/api/v1/exports/users/not-a-uuid",
        key: true,
        body: None,
    },
    Case {
        name: "an unknown export",
        method: "GET",
        path: "/api/v1/exports/users/0b6f4a52-8d1e-4c4b-9a57-3e1f0c2d7a91",
        key: true,
        body: None,
    },
    Case {
        name: "a wrong method",
        method: "DELETE",
        path: "/api/v1/exports/users",
        key: true,
        body: None,
    },
    Case {
        name: "the contract",
        method: "GET",
        path: "/openapi.json",
        key: false,
        body: None,
    },
    Case {
        name: "a created export",
        method: "POST",
        path: "/api/v1/exports/users",
        key: true,
        body: Some(r#"{"format": "csv"}"#),
    },
];

/// What must agree: the status, the code, and each detail's field with its allowed values.
type Gist = (u16, Option<String>, BTreeSet<(String, Vec<String>)>);

fn gist(status: u16, body: &Value) -> Gist {
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
            (detail["field"].as_str().unwrap_or_default().to_string(), allowed)
        })
        .collect();
    (
        status,
        body["error"]["code"].as_str().map(str::to_string),
        details,
    )
}

async fn send(
    spec: &Spec,
    http: &reqwest::Client,
    base: &str,
    key: &str,
    case: &Case,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http.request(case.method.parse()?, format!("{base}{}", case.path));
    if case.key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = case.body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers: std::collections::BTreeMap<String, String> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let bytes = response.bytes().await?;
    let path = case.path.split('?').next().unwrap_or(case.path);
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // A path or method the spec does not have can only be held to the error envelope.
    let known = spec
        .operations()
        .iter()
        .any(|op| op.method == case.method && exports_spec::path_parameters(op.path, path).is_some());
    let checked = if known {
        spec.validate_response(case.method, path, status, &headers, &bytes)
    } else {
        spec.validate(
            &serde_json::json!({"$ref": "#/components/schemas/ErrorResponse"}),
            &body,
        )
    };
    if let Err(problems) = checked {
        anyhow::bail!(
            "{} {}: the answer breaks the spec: {problems:?}",
            case.method,
            case.path
        );
    }
    Ok((status, body))
}

#[tokio::test]
async fn the_mock_and_the_server_give_the_same_answers() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let spec = Spec::bundled();
    let mock = RunningMock::start(Spec::bundled(), "127.0.0.1:0".parse()?, MockOptions::default()).await?;
    let (server, mock_base) = (
        format!("http://{}", env.server_addr),
        format!("http://{}", mock.local_addr),
    );
    let http = reqwest::Client::new();
    let mut differences = Vec::new();
    for case in CORPUS {
        let (status, body) = send(&spec, &http, &server, &user.key, case).await?;
        let (mock_status, mock_body) = send(&spec, &http, &mock_base, &user.key, case).await?;
        let (ours, theirs) = (gist(status, &body), gist(mock_status, &mock_body));
        if ours != theirs {
            differences.push(format!("{}: server {ours:?}, mock {theirs:?}", case.name));
        }
    }
    mock.shutdown().await;
    assert!(
        differences.is_empty(),
        "the mock and the server differ:\n{}",
        differences.join("\n")
    );
    env.finish().await
}
