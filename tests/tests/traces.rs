//! One trace per export: the API's request span and every attempt of the export's job, sent
//! over OTLP/HTTP to an endpoint the test runs itself, with their parents, links, attributes
//! and ids, across an API process and two worker processes.

use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use exports_client::types::ExportStatus;
use exports_tests::receiver::Receiver;
use exports_tests::{until, wait_for_export, ChildProcess, Setup, TestEnv};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_exports-server-under-test");
/// A generous upper bound for anything that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(60);

/// Sends `command`'s spans to the test's OTLP endpoint, batched for 50 ms at most.
fn traced(mut command: Command, otlp: &Receiver) -> Command {
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", otlp.addr))
        .env("OTEL_BSP_SCHEDULE_DELAY", "50");
    command
}

/// SIGTERM, and the process's clean exit, in which it sends its last spans.
async fn stop(mut process: ChildProcess, log: &std::path::Path) -> anyhow::Result<()> {
    process.terminate()?;
    let status = process
        .exited(PROMPTLY)
        .await
        .map_err(|error| error.context(std::fs::read_to_string(log).unwrap_or_default()))?;
    anyhow::ensure!(status.success(), "exit status {status}");
    Ok(())
}

/// A span as the endpoint received it, with its process's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&Value> {
        value_of(&self.span.attributes, key)
    }

    fn text(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            Value::StringValue(text) => Some(text),
            _ => None,
        }
    }

    fn number(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            Value::IntValue(number) => Some(*number),
            _ => None,
        }
    }

    fn failed(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|status| status.code == StatusCode::Error as i32)
    }
}

fn value_of<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

/// Reads what the endpoint got until `enough` holds of every span so far.
async fn spans_until(
    otlp: &mut Receiver,
    spans: &mut Vec<Received>,
    enough: impl Fn(&[Received]) -> bool,
) -> anyhow::Result<()> {
    while !enough(spans) {
        let request = otlp
            .next()
            .await
            .with_context(|| format!("spans so far: {spans:#?}"))?;
        let export = ExportTraceServiceRequest::decode(request.body)?;
        for resource_spans in export.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| match value_of(&resource.attributes, "service.name") {
                    Some(Value::StringValue(name)) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans.into_iter().map(|span| Received {
                    service: service.clone(),
                    span,
                }));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_export_is_one_trace_from_the_request_through_each_attempt() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup::default()).await?;
    env.seed_users(50).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);
    let mut otlp = Receiver::start(Vec::new()).await?;
    let logs = tempfile::tempdir()?;
    let log = |name: &str| logs.path().join(name);

    let mut serve = env.serve_command(BINARY, &log("serve.log"))?;
    serve.args(["--shutdown-grace-secs", "0"]);
    let serve = ChildProcess::spawn(traced(serve, &otlp))?;
    let address = exports_tests::api_address(&log("serve.log"), PROMPTLY).await?;
    let mut holding = env.worker_command(BINARY, &log("first.log"))?;
    holding.args(["--hold-after-rows", "1", "--job-grace-secs", "3600"]);
    let first = ChildProcess::spawn(traced(holding, &otlp))?;

    // The caller's own trace: the request joins it.
    let trace_id = Uuid::new_v4().simple().to_string();
    let caller_span = &Uuid::new_v4().simple().to_string()[..16];
    let created = reqwest::Client::new()
        .post(format!("http://{address}/api/v1/exports/users"))
        .bearer_auth(&alice.key)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&serde_json::json!({"format": "csv"}))
        .send()
        .await?;
    assert_eq!(created.status(), 202);
    let request_id = created.headers()["x-request-id"].to_str()?.to_string();
    let body: serde_json::Value = created.json().await?;
    let export_id: Uuid = body["export_id"].as_str().context("export_id")?.parse()?;

    // The first attempt is under way, held; stopped, it hands the export back.
    wait_for_export(&client, &export_id, PROMPTLY, |e| e.progress.rows_written > 0).await?;
    first.terminate()?;
    until(PROMPTLY, "the first worker stops taking jobs", async || {
        let logged = std::fs::read_to_string(log("first.log")).unwrap_or_default();
        Ok(logged.contains("shutting down: taking no new jobs"))
    })
    .await?;
    stop(first, &log("first.log")).await?; // the second signal: handed back now
    let second = ChildProcess::spawn(traced(env.worker_command(BINARY, &log("second.log"))?, &otlp))?;
    wait_for_export(&client, &export_id, PROMPTLY, |e| e.status == ExportStatus::Done).await?;
    stop(second, &log("second.log")).await?;
    stop(serve, &log("serve.log")).await?;

    let of_export = |received: &Received| received.text("exports.export_id") == Some(&export_id.to_string());
    let mut spans = Vec::new();
    spans_until(&mut otlp, &mut spans, |spans| {
        let attempts = spans
            .iter()
            .filter(|s| s.span.name == "export" && of_export(s))
            .count();
        let steps = spans
            .iter()
            .filter(|s| s.span.name.starts_with("export."))
            .count();
        let created = spans
            .iter()
            .any(|s| s.text("exports.request_id") == Some(&request_id) && s.service == "exports-api");
        attempts == 2 && steps >= 5 && created
    })
    .await?;
    let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();

    let request = spans
        .iter()
        .find(|s| s.service == "exports-api" && s.text("exports.request_id") == Some(&request_id))
        .context("the create's span")?;
    assert_eq!(request.span.name, "POST /api/v1/exports/users");
    assert_eq!(request.span.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.span.trace_id), trace_id, "the caller's trace");
    assert_eq!(hex(&request.span.parent_span_id), caller_span);
    assert_eq!(request.text("http.route"), Some("/api/v1/exports/users"));
    assert_eq!(request.number("http.response.status_code"), Some(202));
    assert_eq!(request.text("user.id"), Some(alice.id.to_string().as_str()));

    let mut attempts: Vec<&Received> = spans
        .iter()
        .filter(|s| s.span.name == "export" && of_export(s))
        .collect();
    attempts.sort_by_key(|s| s.span.start_time_unix_nano);
    let (handed_back, finished) = (attempts[0], attempts[1]);
    for attempt in [handed_back, finished] {
        assert_eq!(attempt.service, "exports-worker");
        assert_eq!(attempt.span.kind, SpanKind::Consumer as i32);
        assert_eq!(hex(&attempt.span.trace_id), trace_id, "one trace: {attempt:#?}");
        assert_eq!(
            attempt.span.parent_span_id, request.span.span_id,
            "a child of the create"
        );
        assert_eq!(attempt.text("exports.request_id"), Some(request_id.as_str()));
        assert_eq!(attempt.text("exports.format"), Some("csv"));
        assert_eq!(
            attempt.number("exports.attempt"),
            Some(1),
            "a handed-back attempt does not count"
        );
    }
    assert!(handed_back.failed(), "{handed_back:#?}");
    assert!(handed_back.span.links.is_empty());
    assert!(!finished.failed(), "{finished:#?}");
    let users = env.count("SELECT count(*) FROM users").await?;
    assert_eq!(finished.number("exports.rows"), Some(users));
    assert_eq!(finished.span.links.len(), 1, "linked to the first attempt");
    assert_eq!(hex(&finished.span.links[0].trace_id), trace_id);
    assert_eq!(finished.span.links[0].span_id, handed_back.span.span_id);

    let steps_of = |attempt: &Received| {
        let mut names: Vec<&str> = spans
            .iter()
            .filter(|s| s.span.parent_span_id == attempt.span.span_id)
            .inspect(|s| assert_eq!(hex(&s.span.trace_id), trace_id))
            .map(|s| s.span.name.as_str())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        steps_of(finished),
        ["export.file", "export.query", "export.upload"]
    );
    assert_eq!(
        steps_of(handed_back),
        ["export.file", "export.query"],
        "stopped before its upload"
    );
    env.finish().await
}
