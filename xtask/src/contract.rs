//! The contract gate: the OpenAPI document dropshot builds from the server's API trait,
//! compared by meaning with the hand-written `spec/openapi.yaml` (`cargo xtask spec check`),
//! and the spec's own rules (`cargo xtask spec lint`).
//!
//! The comparison knows which side may be wider: in a request the server may accept more than
//! the spec allows (a warning) but never less; in a response it must never send more than the
//! spec allows. What dropshot cannot express (specific 4xx codes, response headers, free-form
//! bodies) is reported as verified at runtime, naming the test that covers it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use exports_spec::{escape, Spec};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The server breaks the contract.
    Drift,
    /// Allowed, but worth knowing (the server accepts more than documented, ...).
    Warning,
    /// Not visible in the generated document; covered by an end-to-end test instead.
    Runtime,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub severity: Severity,
    pub operation: String,
    pub spec_pointer: String,
    pub server_pointer: String,
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Drift => "drift",
            Severity::Warning => "warning",
            Severity::Runtime => "verified at runtime",
        };
        write!(
            f,
            "{label}: {}: {}\n    spec:   {}\n    server: {}",
            self.operation,
            self.reason,
            or_dash(&self.spec_pointer),
            or_dash(&self.server_pointer)
        )
    }
}

fn or_dash(pointer: &str) -> &str {
    if pointer.is_empty() {
        "-"
    } else {
        pointer
    }
}

/// Which way data flows, which decides which side may be wider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server: the server must accept at least what the spec allows.
    Request,
    /// Server to client: the server must send at most what the spec allows.
    Response,
}

/// The end-to-end tests that cover what the generated document cannot show. Every response
/// the tests receive is also validated against the spec by the harness (tests/src/lib.rs).
const RUNTIME_COVERAGE: &[(&str, &str)] = &[
    (
        "400",
        "tests/tests/errors.rs::malformed_bodies_are_400s_and_write_nothing",
    ),
    (
        "401",
        "tests/tests/errors.rs::missing_garbage_and_revoked_keys_get_401",
    ),
    ("403", "tests/tests/errors.rs::keys_without_the_scope_get_403"),
    (
        "404",
        "tests/tests/exports.rs::exports_are_private_to_their_owner",
    ),
    (
        "409",
        "tests/tests/exports.rs::cancelled_and_finished_exports_free_the_limit",
    ),
    (
        "410",
        "tests/tests/exports.rs::cancelled_and_finished_exports_free_the_limit",
    ),
    ("413", "tests/tests/errors.rs::huge_bodies_get_413"),
    (
        "422",
        "tests/tests/idempotency.rs::a_different_request_with_the_same_key_gets_422",
    ),
    (
        "429",
        "tests/tests/exports.rs::pending_limit_gives_429_with_retry_after",
    ),
    ("500", "server/src/api/error.rs::internal_errors_hide_their_cause"),
    (
        "503",
        "tests/tests/edge.rs::an_unreachable_database_is_a_503_with_retry_after",
    ),
    ("504", "tests/tests/errors.rs::slow_requests_get_504"),
    (
        "header X-Request-Id",
        "tests/tests/edge.rs::request_ids_are_honoured_or_generated",
    ),
    (
        "header Retry-After",
        "tests/tests/exports.rs::pending_limit_gives_429_with_retry_after",
    ),
    (
        "header Idempotent-Replayed",
        "tests/tests/idempotency.rs::a_replay_gets_the_first_answer_and_writes_nothing",
    ),
    (
        "header WWW-Authenticate",
        "tests/tests/errors.rs::missing_garbage_and_revoked_keys_get_401",
    ),
];

fn runtime_test(key: &str) -> Option<&'static str> {
    RUNTIME_COVERAGE
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, test)| *test)
}

/// What is compared with what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The server's generated document against the spec (`spec check`).
    ServerAgainstSpec,
    /// A new spec against an old one, from a client's point of view (`spec diff`): anything
    /// an existing client relies on that the new spec removes or narrows is breaking.
    NewAgainstOld,
}

pub fn check(spec: &Spec, server: &Spec) -> Vec<Finding> {
    compare(spec, server, Mode::ServerAgainstSpec)
}

/// Breaking changes from `old` to `new` (reported as `Drift`; warnings are left out).
pub fn diff(old: &Spec, new: &Spec) -> Vec<Finding> {
    let mut breaking = compare(old, new, Mode::NewAgainstOld);
    breaking.retain(|finding| finding.severity == Severity::Drift);
    for finding in &mut breaking {
        // The comparison speaks of "the spec" and "the server"; here they are two versions.
        finding.reason = finding
            .reason
            .replace("on the server", "in the new version")
            .replace("in the spec", "in the old version")
            .replace("by the server", "by the new version")
            .replace("by the spec", "by the old version")
            .replace("the server", "the new version")
            .replace("the spec", "the old version")
            .replace("spec's", "old version's");
    }
    breaking
}

/// Whether `info.version`'s major number went up from `old` to `new` (breaking changes are
/// then announced, and allowed).
pub fn major_raised(old: &Spec, new: &Spec) -> bool {
    let major = |spec: &Spec| -> Option<u64> {
        let version = spec.document().pointer("/info/version")?.as_str()?;
        version.trim_start_matches('v').split('.').next()?.parse().ok()
    };
    matches!((major(old), major(new)), (Some(old), Some(new)) if new > old)
}

fn compare(spec: &Spec, server: &Spec, mode: Mode) -> Vec<Finding> {
    let mut checker = Checker {
        spec,
        server,
        mode,
        findings: Vec::new(),
    };
    checker.run();
    let mut findings = checker.findings;
    findings.sort();
    findings.dedup();
    findings
}

/// Between versions, `spec` is the old document and `server` the new one.
struct Checker<'a> {
    spec: &'a Spec,
    server: &'a Spec,
    mode: Mode,
    findings: Vec<Finding>,
}

/// A schema and where it stands in its document.
#[derive(Clone, Copy)]
struct At<'a> {
    value: &'a Value,
    pointer: &'a str,
}

impl<'a> Checker<'a> {
    /// Something the spec has and the other side lacks, where lacking it is allowed of a
    /// server but breaks clients when a new version drops it.
    fn removal(&self) -> Severity {
        match self.mode {
            Mode::ServerAgainstSpec => Severity::Warning,
            Mode::NewAgainstOld => Severity::Drift,
        }
    }

    fn report(&mut self, severity: Severity, operation: &str, spec: &str, server: &str, reason: String) {
        if self.mode == Mode::NewAgainstOld && severity == Severity::Runtime {
            return; // Both sides are specs: nothing is left to runtime.
        }
        self.findings.push(Finding {
            severity,
            operation: operation.to_string(),
            spec_pointer: spec.to_string(),
            server_pointer: server.to_string(),
            reason,
        });
    }

    fn run(&mut self) {
        let key = |method: &str, path: &str| format!("{method} {path}");
        let spec_operations: BTreeMap<String, _> = self
            .spec
            .operations()
            .into_iter()
            .map(|op| (key(op.method, op.path), op))
            .collect();
        let server_operations: BTreeMap<String, _> = self
            .server
            .operations()
            .into_iter()
            .map(|op| (key(op.method, op.path), op))
            .collect();

        for (name, operation) in &spec_operations {
            let pointer = format!(
                "/paths/{}/{}",
                escape(operation.path),
                operation.method.to_lowercase()
            );
            let Some(served) = server_operations.get(name) else {
                self.report(
                    Severity::Drift,
                    name,
                    &pointer,
                    "",
                    "the server does not serve this operation".into(),
                );
                continue;
            };
            let label = format!("{} ({name})", operation.id);
            let server_pointer = format!("/paths/{}/{}", escape(served.path), served.method.to_lowercase());
            if operation.id != served.id {
                self.report(
                    Severity::Drift,
                    &label,
                    &format!("{pointer}/operationId"),
                    &format!("{server_pointer}/operationId"),
                    format!(
                        "operationId {:?} on the server, {:?} in the spec",
                        served.id, operation.id
                    ),
                );
            }
            let spec_op = At {
                value: operation.definition,
                pointer: &pointer,
            };
            let server_op = At {
                value: served.definition,
                pointer: &server_pointer,
            };
            self.parameters(&label, spec_op, server_op);
            self.request_body(&label, spec_op, server_op);
            self.responses(&label, spec_op, server_op);
            let paginated = |op: &Value| op.get("x-dropshot-pagination").is_some();
            if paginated(operation.definition) != paginated(served.definition) {
                self.report(
                    Severity::Warning,
                    &label,
                    &pointer,
                    &server_pointer,
                    "x-dropshot-pagination differs, so generated clients differ in their page helpers".into(),
                );
            }
        }
        for name in server_operations
            .keys()
            .filter(|name| !spec_operations.contains_key(*name))
        {
            if self.mode == Mode::NewAgainstOld {
                break; // A new operation breaks no existing client.
            }
            let operation = &server_operations[name];
            let pointer = format!(
                "/paths/{}/{}",
                escape(operation.path),
                operation.method.to_lowercase()
            );
            self.report(
                Severity::Drift,
                name,
                "",
                &pointer,
                "the server serves an operation the spec does not have".into(),
            );
        }
    }

    fn parameters(&mut self, operation: &str, spec_op: At, server_op: At) {
        let spec_parameters = parameters(self.spec, spec_op);
        let server_parameters = parameters(self.server, server_op);
        let required = |p: &Value| p.get("required").and_then(Value::as_bool).unwrap_or(false);

        for ((location, name), (spec_pointer, spec_parameter)) in &spec_parameters {
            match server_parameters.get(&(location.clone(), name.clone())) {
                None => {
                    let severity = if required(spec_parameter) || location == "path" {
                        Severity::Drift
                    } else {
                        self.removal()
                    };
                    self.report(
                        severity,
                        operation,
                        spec_pointer,
                        server_op.pointer,
                        format!(
                            "{location} parameter {name:?} is in the spec but the server does not read it"
                        ),
                    );
                }
                Some((server_pointer, server_parameter)) => {
                    if required(server_parameter) && !required(spec_parameter) {
                        self.report(
                            Severity::Drift,
                            operation,
                            spec_pointer,
                            server_pointer,
                            format!("{location} parameter {name:?} is optional in the spec but required by the server"),
                        );
                    }
                    if let (Some(spec_schema), Some(server_schema)) =
                        (spec_parameter.get("schema"), server_parameter.get("schema"))
                    {
                        let spec_at = format!("{spec_pointer}/schema");
                        let server_at = format!("{server_pointer}/schema");
                        self.schema(
                            operation,
                            At {
                                value: spec_schema,
                                pointer: &spec_at,
                            },
                            At {
                                value: server_schema,
                                pointer: &server_at,
                            },
                            Direction::Request,
                            0,
                        );
                    }
                }
            }
        }
        for ((location, name), (server_pointer, server_parameter)) in &server_parameters {
            if spec_parameters.contains_key(&(location.clone(), name.clone())) {
                continue;
            }
            let (severity, reason) = if required(server_parameter) {
                (
                    Severity::Drift,
                    format!("the server requires {location} parameter {name:?}, which the spec lacks"),
                )
            } else {
                (
                    Severity::Warning,
                    format!("the server accepts {location} parameter {name:?}, which the spec lacks"),
                )
            };
            self.report(severity, operation, spec_op.pointer, server_pointer, reason);
        }
    }

    fn request_body(&mut self, operation: &str, spec_op: At, server_op: At) {
        let spec_body = spec_op
            .value
            .get("requestBody")
            .and_then(|b| self.spec.resolve(b).ok());
        let server_body = server_op
            .value
            .get("requestBody")
            .and_then(|b| self.server.resolve(b).ok());
        let spec_pointer = format!("{}/requestBody", spec_op.pointer);
        let server_pointer = format!("{}/requestBody", server_op.pointer);
        let required = |b: &Value| b.get("required").and_then(Value::as_bool).unwrap_or(false);
        match (spec_body, server_body) {
            (None, None) => {}
            (Some(_), None) => self.report(
                Severity::Drift,
                operation,
                &spec_pointer,
                server_op.pointer,
                "the spec documents a request body the server does not read".into(),
            ),
            (None, Some(body)) => {
                let severity = if required(body) {
                    Severity::Drift
                } else {
                    Severity::Warning
                };
                self.report(
                    severity,
                    operation,
                    spec_op.pointer,
                    &server_pointer,
                    "the server reads a request body the spec does not document".into(),
                );
            }
            (Some(spec_body), Some(server_body)) => {
                if required(server_body) && !required(spec_body) {
                    self.report(
                        Severity::Drift,
                        operation,
                        &spec_pointer,
                        &server_pointer,
                        "the body is optional in the spec but required by the server".into(),
                    );
                }
                self.content(
                    operation,
                    At {
                        value: spec_body,
                        pointer: &spec_pointer,
                    },
                    At {
                        value: server_body,
                        pointer: &server_pointer,
                    },
                    Direction::Request,
                );
            }
        }
    }

    /// Media types and their schemas. A server that documents a free-form body (`*/*`, any
    /// schema) is checked at runtime instead.
    fn content(&mut self, operation: &str, spec: At, server: At, direction: Direction) {
        let spec_media = entries(spec.value, "content");
        let server_media = entries(server.value, "content");
        if server_media.contains_key("*/*") {
            let listed = spec_media.keys().cloned().collect::<Vec<_>>().join(", ");
            self.report(
                Severity::Runtime,
                operation,
                spec.pointer,
                server.pointer,
                format!("dropshot documents a free-form body; the media types ({listed}) are checked by the test harness on every response"),
            );
            return;
        }
        for (media_type, spec_media_type) in &spec_media {
            let spec_at = format!("{}/content/{}/schema", spec.pointer, escape(media_type));
            let Some(server_media_type) = server_media.get(media_type) else {
                let (severity, reason) = match direction {
                    Direction::Request => (
                        Severity::Drift,
                        format!("the server does not accept {media_type}"),
                    ),
                    Direction::Response => (self.removal(), format!("the server never sends {media_type}")),
                };
                self.report(severity, operation, &spec_at, server.pointer, reason);
                continue;
            };
            let server_at = format!("{}/content/{}/schema", server.pointer, escape(media_type));
            if let (Some(spec_schema), Some(server_schema)) =
                (spec_media_type.get("schema"), server_media_type.get("schema"))
            {
                self.schema(
                    operation,
                    At {
                        value: spec_schema,
                        pointer: &spec_at,
                    },
                    At {
                        value: server_schema,
                        pointer: &server_at,
                    },
                    direction,
                    0,
                );
            }
        }
        for media_type in server_media.keys().filter(|m| !spec_media.contains_key(*m)) {
            let server_at = format!("{}/content/{}", server.pointer, escape(media_type));
            let (severity, reason) = match direction {
                Direction::Request => (Severity::Warning, format!("the server also accepts {media_type}")),
                Direction::Response => (
                    Severity::Drift,
                    format!("the server sends {media_type}, which the spec does not list"),
                ),
            };
            self.report(severity, operation, spec.pointer, &server_at, reason);
        }
    }

    fn responses(&mut self, operation: &str, spec_op: At, server_op: At) {
        let spec_responses = entries(spec_op.value, "responses");
        let server_responses = entries(server_op.value, "responses");
        let pointer = |op: At, status: &str| format!("{}/responses/{status}", op.pointer);

        // Success: dropshot declares exactly one status, or `default` for a free-form response.
        let spec_success: BTreeSet<&String> = spec_responses.keys().filter(|s| s.starts_with('2')).collect();
        let server_success: Vec<&String> = server_responses
            .keys()
            .filter(|s| s.starts_with('2') || s.as_str() == "default")
            .collect();
        for status in &server_success {
            let server_at = pointer(server_op, status);
            let Ok(server_response) = self.server.resolve(server_responses[status.as_str()]) else {
                continue;
            };
            if status.as_str() == "default" {
                let statuses = spec_success
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.report(
                    Severity::Runtime,
                    operation,
                    &pointer(spec_op, statuses.as_str()),
                    &server_at,
                    format!("a free-form response: its status ({statuses}), media types and headers are checked by the test harness on every response"),
                );
                continue;
            }
            match spec_responses.get(status.as_str()).map(|r| self.spec.resolve(r)) {
                Some(Ok(spec_response)) => {
                    let spec_at = pointer(spec_op, status);
                    self.content(
                        operation,
                        At {
                            value: spec_response,
                            pointer: &spec_at,
                        },
                        At {
                            value: server_response,
                            pointer: &server_at,
                        },
                        Direction::Response,
                    );
                    self.headers(operation, spec_response, &spec_at, &server_at);
                }
                _ => self.report(
                    Severity::Drift,
                    operation,
                    &format!("{}/responses", spec_op.pointer),
                    &server_at,
                    format!("the server answers {status}, which the spec does not document"),
                ),
            }
        }
        for status in spec_success.iter().filter(|s| !server_success.contains(s)) {
            if server_success.iter().any(|s| s.as_str() == "default") {
                continue;
            }
            self.report(
                Severity::Drift,
                operation,
                &pointer(spec_op, status),
                &format!("{}/responses", server_op.pointer),
                format!("the spec documents success {status}, which the server never answers"),
            );
        }

        // Errors: dropshot documents the ranges 4XX and 5XX with one schema.
        for (status, spec_response) in spec_responses
            .iter()
            .filter(|(s, _)| s.starts_with('4') || s.starts_with('5'))
        {
            let range = format!("{}XX", &status[..1]);
            let spec_at = pointer(spec_op, status);
            let Ok(spec_response) = self.spec.resolve(spec_response) else {
                continue;
            };
            if self.mode == Mode::NewAgainstOld {
                // Specific statuses on both sides: compare those kept; adding or dropping an
                // error status changes no client type (progenitor shares one error type).
                if let Some(Ok(new_response)) = server_responses
                    .get(status.as_str())
                    .map(|r| self.server.resolve(r))
                {
                    let server_at = pointer(server_op, status);
                    self.content(
                        operation,
                        At {
                            value: spec_response,
                            pointer: &spec_at,
                        },
                        At {
                            value: new_response,
                            pointer: &server_at,
                        },
                        Direction::Response,
                    );
                }
                continue;
            }
            if server_responses.contains_key("default") {
                // dropshot documents only `default` for a free-form (download) response.
                let reason = match runtime_test(status) {
                    Some(test) => format!("status {status} beside a free-form response: {test}"),
                    None => format!("status {status} beside a free-form response: checked by the harness when a test meets it"),
                };
                self.report(
                    Severity::Runtime,
                    operation,
                    &spec_at,
                    &pointer(server_op, "default"),
                    reason,
                );
                continue;
            }
            match server_responses
                .get(status.as_str())
                .or_else(|| server_responses.get(&range))
            {
                None => self.report(
                    Severity::Drift,
                    operation,
                    &spec_at,
                    &format!("{}/responses", server_op.pointer),
                    format!("the spec documents {status}, but the server documents no {range} response"),
                ),
                Some(server_response) => {
                    let server_at = pointer(
                        server_op,
                        if server_responses.contains_key(status.as_str()) {
                            status
                        } else {
                            &range
                        },
                    );
                    let Ok(server_response) = self.server.resolve(server_response) else {
                        continue;
                    };
                    self.content(
                        operation,
                        At {
                            value: spec_response,
                            pointer: &spec_at,
                        },
                        At {
                            value: server_response,
                            pointer: &server_at,
                        },
                        Direction::Response,
                    );
                    if !server_responses.contains_key(status.as_str()) {
                        let reason = match runtime_test(status) {
                            Some(test) => format!("status {status} within dropshot's {range}: {test}"),
                            None => format!("status {status} within dropshot's {range}: no test names it; the harness checks it if a test meets it"),
                        };
                        self.report(Severity::Runtime, operation, &spec_at, &server_at, reason);
                    }
                    self.headers(operation, spec_response, &spec_at, &server_at);
                }
            }
        }
    }

    /// Response headers: dropshot documents none for these responses, so each one the spec
    /// documents is checked at runtime.
    fn headers(&mut self, operation: &str, spec_response: &Value, spec_at: &str, server_at: &str) {
        for name in spec_response
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            let reason = match runtime_test(&format!("header {name}")) {
                Some(test) => format!("header {name}: {test}"),
                None => format!("header {name}: no test names it; the harness checks it on every response"),
            };
            let header_at = format!("{spec_at}/headers/{}", escape(name));
            self.report(Severity::Runtime, operation, &header_at, server_at, reason);
        }
    }

    /// Follows references and unwraps a lone `allOf` (how schemars marks a nullable reference),
    /// keeping `nullable` from the wrapper.
    fn normalise<'b>(document: &'b Spec, at: At<'b>, pointer: &mut String) -> (&'b Value, bool) {
        let mut value = at.value;
        let mut nullable = false;
        for _ in 0..16 {
            nullable |= value.get("nullable").and_then(Value::as_bool).unwrap_or(false);
            if let Some(reference) = value.get("$ref").and_then(Value::as_str) {
                *pointer = reference.trim_start_matches('#').to_string();
                match document.resolve(value) {
                    Ok(target) => value = target,
                    Err(_) => break,
                }
            } else if let Some([only]) = value.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                *pointer = format!("{pointer}/allOf/0");
                value = only;
            } else {
                break;
            }
        }
        (value, nullable)
    }

    fn schema(&mut self, operation: &str, spec: At, server: At, direction: Direction, depth: usize) {
        if depth > 24 {
            return;
        }
        let mut spec_pointer = spec.pointer.to_string();
        let mut server_pointer = server.pointer.to_string();
        let (spec_schema, spec_nullable) = Self::normalise(self.spec, spec, &mut spec_pointer);
        let (server_schema, server_nullable) = Self::normalise(self.server, server, &mut server_pointer);
        let report = |checker: &mut Self, severity, reason: String| {
            checker.report(severity, operation, &spec_pointer, &server_pointer, reason)
        };

        if server_schema
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "description" || k == "title"))
        {
            return report(
                self,
                Severity::Runtime,
                "the server documents any JSON here; the harness validates it".into(),
            );
        }
        match (direction, spec_nullable, server_nullable) {
            (Direction::Response, false, true) => report(
                self,
                Severity::Drift,
                "the server may send null; the spec does not allow it".into(),
            ),
            (Direction::Request, true, false) => report(
                self,
                Severity::Drift,
                "the spec allows null; the server rejects it".into(),
            ),
            (Direction::Request, false, true) => {
                report(self, Severity::Warning, "the server also accepts null".into())
            }
            _ => {}
        }

        let text = |schema: &Value, key: &str| schema.get(key).and_then(Value::as_str).map(str::to_string);
        let (spec_type, server_type) = (text(spec_schema, "type"), text(server_schema, "type"));
        if spec_type != server_type {
            return report(
                self,
                Severity::Drift,
                format!(
                    "type {} in the spec, {} on the server",
                    show(&spec_type),
                    show(&server_type)
                ),
            );
        }
        let (spec_format, server_format) = (text(spec_schema, "format"), text(server_schema, "format"));
        if spec_format != server_format {
            report(
                self,
                Severity::Drift,
                format!(
                    "format {} in the spec, {} on the server",
                    show(&spec_format),
                    show(&server_format)
                ),
            );
        }
        self.enumeration(
            operation,
            spec_schema,
            server_schema,
            direction,
            &spec_pointer,
            &server_pointer,
        );
        self.bounds(
            operation,
            spec_schema,
            server_schema,
            direction,
            &spec_pointer,
            &server_pointer,
        );

        if let (Some(spec_items), Some(server_items)) = (spec_schema.get("items"), server_schema.get("items"))
        {
            let (spec_at, server_at) = (format!("{spec_pointer}/items"), format!("{server_pointer}/items"));
            self.schema(
                operation,
                At {
                    value: spec_items,
                    pointer: &spec_at,
                },
                At {
                    value: server_items,
                    pointer: &server_at,
                },
                direction,
                depth + 1,
            );
        }
        if spec_schema.get("properties").is_some() || server_schema.get("properties").is_some() {
            self.object(
                operation,
                spec_schema,
                server_schema,
                direction,
                &spec_pointer,
                &server_pointer,
                depth,
            );
        }
    }

    fn enumeration(
        &mut self,
        operation: &str,
        spec: &Value,
        server: &Value,
        direction: Direction,
        spec_at: &str,
        server_at: &str,
    ) {
        let values = |schema: &Value| -> Option<BTreeSet<String>> {
            schema
                .get("enum")
                .and_then(Value::as_array)
                .map(|v| v.iter().map(Value::to_string).collect())
        };
        let (spec_values, server_values) = (values(spec), values(server));
        let missing = |from: &Option<BTreeSet<String>>, of: &Option<BTreeSet<String>>| -> Vec<String> {
            match (from, of) {
                (Some(from), Some(of)) => of.difference(from).cloned().collect(),
                (Some(_), None) => vec!["any value".to_string()],
                _ => Vec::new(),
            }
        };
        match direction {
            Direction::Response => {
                let extra = missing(&spec_values, &server_values);
                if !extra.is_empty() {
                    let reason = format!("the server may send {}, not in the spec's enum", extra.join(", "));
                    self.report(Severity::Drift, operation, spec_at, server_at, reason);
                }
            }
            Direction::Request => {
                let rejected = missing(&server_values, &spec_values);
                if !rejected.is_empty() {
                    let reason = format!(
                        "the server rejects {}, which the spec allows",
                        rejected.join(", ")
                    );
                    self.report(Severity::Drift, operation, spec_at, server_at, reason);
                }
                let extra = missing(&spec_values, &server_values);
                if !extra.is_empty() && server_values.is_some() {
                    let reason = format!("the server also accepts {}", extra.join(", "));
                    self.report(Severity::Warning, operation, spec_at, server_at, reason);
                }
            }
        }
    }

    /// Numeric and length bounds: in a response the server's range must lie within the spec's;
    /// in a request the spec's within the server's.
    fn bounds(
        &mut self,
        operation: &str,
        spec: &Value,
        server: &Value,
        direction: Direction,
        spec_at: &str,
        server_at: &str,
    ) {
        for (key, lower) in [
            ("minimum", true),
            ("maximum", false),
            ("minLength", true),
            ("maxLength", false),
        ] {
            let (spec_bound, server_bound) = (
                spec.get(key).and_then(Value::as_f64),
                server.get(key).and_then(Value::as_f64),
            );
            // `a` must be at least as tight as `b`.
            let (tight, loose) = match direction {
                Direction::Response => (server_bound, spec_bound),
                Direction::Request => (spec_bound, server_bound),
            };
            let violated = match (tight, loose) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(t), Some(l)) => {
                    if lower {
                        t < l
                    } else {
                        t > l
                    }
                }
            };
            if violated {
                let (severity, reason) = match direction {
                    Direction::Response => (Severity::Drift, format!("{key} {} in the spec, {} on the server: the server may send values outside the spec's range", num(spec_bound), num(server_bound))),
                    Direction::Request => (Severity::Drift, format!("{key} {} in the spec, {} on the server: the server rejects values the spec allows", num(spec_bound), num(server_bound))),
                };
                self.report(severity, operation, spec_at, server_at, reason);
            } else if direction == Direction::Request && spec_bound.is_some() && spec_bound != server_bound {
                self.report(
                    Severity::Warning,
                    operation,
                    spec_at,
                    server_at,
                    format!(
                        "{key} {} in the spec, {} on the server: the server accepts more",
                        num(spec_bound),
                        num(server_bound)
                    ),
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn object(
        &mut self,
        operation: &str,
        spec: &Value,
        server: &Value,
        direction: Direction,
        spec_pointer: &str,
        server_pointer: &str,
        depth: usize,
    ) {
        let closed = |schema: &Value| schema.get("additionalProperties") == Some(&Value::Bool(false));
        let (spec_properties, server_properties) =
            (entries(spec, "properties"), entries(server, "properties"));
        let (spec_required, server_required) = (required(spec), required(server));
        let at = |pointer: &str, name: &str| format!("{pointer}/properties/{}", escape(name));

        for (name, spec_property) in &spec_properties {
            match server_properties.get(name) {
                Some(server_property) => {
                    let (spec_at, server_at) = (at(spec_pointer, name), at(server_pointer, name));
                    match direction {
                        Direction::Response
                            if spec_required.contains(name) && !server_required.contains(name) =>
                        {
                            self.report(
                                Severity::Drift,
                                operation,
                                &spec_at,
                                &server_at,
                                format!("{name:?} is required by the spec; the server may omit it"),
                            )
                        }
                        Direction::Request
                            if server_required.contains(name) && !spec_required.contains(name) =>
                        {
                            self.report(
                                Severity::Drift,
                                operation,
                                &spec_at,
                                &server_at,
                                format!("{name:?} is optional in the spec; the server requires it"),
                            )
                        }
                        _ => {}
                    }
                    self.schema(
                        operation,
                        At {
                            value: spec_property,
                            pointer: &spec_at,
                        },
                        At {
                            value: server_property,
                            pointer: &server_at,
                        },
                        direction,
                        depth + 1,
                    );
                }
                None => {
                    let spec_at = at(spec_pointer, name);
                    let (severity, reason) = match direction {
                        Direction::Response if spec_required.contains(name) => (
                            Severity::Drift,
                            format!("the spec requires {name:?}; the server never sends it"),
                        ),
                        Direction::Response => (
                            self.removal(),
                            format!("the spec documents {name:?}; the server never sends it"),
                        ),
                        Direction::Request if closed(server) => (
                            Severity::Drift,
                            format!("the server rejects {name:?}, which the spec allows"),
                        ),
                        Direction::Request => (self.removal(), format!("the server ignores {name:?}")),
                    };
                    self.report(severity, operation, &spec_at, server_pointer, reason);
                }
            }
        }
        for name in server_properties
            .keys()
            .filter(|n| !spec_properties.contains_key(*n))
        {
            let server_at = at(server_pointer, name);
            let (severity, reason) = match direction {
                Direction::Response if closed(spec) => (
                    Severity::Drift,
                    format!("the server sends {name:?}, which the spec's closed object forbids"),
                ),
                Direction::Response => (
                    Severity::Warning,
                    format!("the server sends {name:?}, which the spec does not document"),
                ),
                Direction::Request if server_required.contains(name) => (
                    Severity::Drift,
                    format!("the server requires {name:?}, which the spec does not have"),
                ),
                Direction::Request => (
                    Severity::Warning,
                    format!("the server accepts {name:?}, which the spec does not document"),
                ),
            };
            self.report(severity, operation, spec_pointer, &server_at, reason);
        }
    }
}

/// The members of an object-valued field (`properties`, `responses`, `content`) by name.
fn entries<'v>(value: &'v Value, key: &str) -> BTreeMap<String, &'v Value> {
    value
        .get(key)
        .and_then(Value::as_object)
        .map(|members| members.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default()
}

type Parameters<'v> = BTreeMap<(String, String), (String, &'v Value)>;

/// An operation's parameters by (location, name), with where each stands.
fn parameters<'v>(document: &'v Spec, op: At<'v>) -> Parameters<'v> {
    op.value
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, parameter)| {
            let parameter = document.resolve(parameter).ok()?;
            let location = parameter.get("in")?.as_str()?.to_string();
            let name = parameter.get("name")?.as_str()?.to_string();
            Some((
                (location, name),
                (format!("{}/parameters/{index}", op.pointer), parameter),
            ))
        })
        .collect()
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn show(value: &Option<String>) -> String {
    value
        .as_deref()
        .map_or("(none)".to_string(), |v| format!("{v:?}"))
}

fn num(value: Option<f64>) -> String {
    value.map_or("(none)".to_string(), |v| v.to_string())
}

fn check_example(
    spec: &Spec,
    operation: &str,
    pointer: &str,
    schema: &Value,
    example: &Value,
    problems: &mut Vec<String>,
) {
    let binary = spec.resolve(schema).is_ok_and(|s| s["format"] == "binary");
    if binary && example.is_string() {
        return;
    }
    if let Err(errors) = spec.validate(schema, example) {
        problems.push(format!(
            "{operation}: example {pointer} does not match its schema: {}",
            errors.join("; ")
        ));
    }
}

fn walk_examples(spec: &Spec, node: &Value, pointer: String, problems: &mut Vec<String>) {
    match node {
        Value::Object(object) => {
            if let Some(example) = object.get("example") {
                let schema_like = ["type", "$ref", "properties", "enum", "allOf", "oneOf", "anyOf"]
                    .iter()
                    .any(|key| object.contains_key(*key));
                let at = format!("{pointer}/example");
                if let Some(schema) = object.get("schema") {
                    check_example(spec, "spec", &at, schema, example, problems);
                } else if schema_like {
                    check_example(spec, "spec", &at, node, example, problems);
                }
            }
            for (key, child) in object {
                if key != "example" && key != "examples" {
                    walk_examples(spec, child, format!("{pointer}/{}", escape(key)), problems);
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                walk_examples(spec, child, format!("{pointer}/{index}"), problems);
            }
        }
        _ => {}
    }
}

/// The spec's own rules: every operation has an `operationId` and a summary, every response
/// an example, every 4xx/5xx the error envelope, and every example matches its schema.
pub fn lint(spec: &Spec) -> Vec<String> {
    let mut problems = Vec::new();
    const ENVELOPE: &str = "#/components/schemas/ErrorResponse";
    for operation in spec.operations() {
        let name = format!("{} {}", operation.method, operation.path);
        let pointer = format!(
            "/paths/{}/{}",
            escape(operation.path),
            operation.method.to_lowercase()
        );
        if operation.id.is_empty() {
            problems.push(format!("{name}: no operationId ({pointer})"));
        }
        if operation
            .definition
            .get("summary")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{name}: no summary ({pointer})"));
        }
        let responses = operation.definition.get("responses").and_then(Value::as_object);
        if responses.is_none_or(|r| r.is_empty()) {
            problems.push(format!("{name}: no responses ({pointer}/responses)"));
        }
        for (status, response) in responses.into_iter().flatten() {
            let at = format!("{pointer}/responses/{status}");
            let Ok(response) = spec.resolve(response) else {
                problems.push(format!("{name}: unresolvable response ({at})"));
                continue;
            };
            let content = response.get("content").and_then(Value::as_object);
            let has_example = content.into_iter().flatten().any(|(_, media)| {
                media.get("example").is_some()
                    || media
                        .get("examples")
                        .and_then(Value::as_object)
                        .is_some_and(|e| !e.is_empty())
            });
            // A response without a body (`204`) has nothing to show.
            if !has_example && content.is_some() {
                problems.push(format!("{name}: response {status} has no example ({at})"));
            }
            if status.starts_with('4') || status.starts_with('5') {
                let schema = response
                    .pointer("/content/application~1json/schema/$ref")
                    .and_then(Value::as_str);
                if schema != Some(ENVELOPE) {
                    problems.push(format!(
                        "{name}: error response {status} is not the error envelope {ENVELOPE} ({at})"
                    ));
                }
            }
        }
    }
    // Named examples of request and response bodies.
    for (operation, pointer, schema, example) in spec.examples() {
        if pointer.contains("/examples/") {
            check_example(spec, &operation, &pointer, schema, &example, &mut problems);
        }
    }
    // Every single `example` anywhere: of a media type, parameter or header (against its
    // `schema`), or of a schema itself.
    walk_examples(spec, spec.document(), String::new(), &mut problems);
    // The error codes the spec documents are exactly exports_spec::errors::ErrorCode's.
    problems.extend(exports_spec::errors::code_differences(spec));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server() -> Spec {
        Spec::from_value(exports_server::api::openapi_document()).unwrap()
    }

    fn spec_value() -> Value {
        Spec::bundled().document().clone()
    }

    fn drift(spec: Value) -> Vec<Finding> {
        check(&Spec::from_value(spec).unwrap(), &server())
            .into_iter()
            .filter(|f| f.severity == Severity::Drift)
            .collect()
    }

    fn at<'v>(spec: &'v mut Value, pointer: &str) -> &'v mut Value {
        spec.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer}"))
    }

    /// `createUserExport` answers 201 instead of 202: a changed success status.
    fn create_answers_201(spec: &mut Value) {
        let responses = at(spec, "/paths/~1api~1v1~1exports~1users/post/responses")
            .as_object_mut()
            .unwrap();
        let accepted = responses.remove("202").unwrap();
        responses.insert("201".into(), accepted);
    }

    #[test]
    fn the_spec_and_the_server_agree() {
        let findings = drift(spec_value());
        assert!(
            findings.is_empty(),
            "{}",
            findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(lint(&Spec::bundled()).is_empty());
    }

    /// Each mutation of the spec is a contract the server no longer meets.
    #[test]
    fn mutations_of_the_spec_are_drift() {
        let export = "/components/schemas/Export";
        let list = "/paths/~1api~1v1~1exports~1users/get";
        type Mutation = Box<dyn Fn(&mut Value)>;
        let mutations: Vec<(&str, Mutation)> = vec![
            (
                "drop an enum value the server sends",
                Box::new(|s| *at(s, "/components/schemas/ExportFormat/enum") = json!(["csv"])),
            ),
            (
                "change a property's type",
                Box::new(|s| {
                    *at(
                        s,
                        "/components/schemas/ExportAccepted/properties/estimated_seconds/type",
                    ) = json!("string")
                }),
            ),
            (
                "change a format",
                Box::new(|s| {
                    *at(
                        s,
                        "/components/schemas/ExportAccepted/properties/export_id/format",
                    ) = json!("date-time")
                }),
            ),
            (
                "make a nullable property non-null",
                Box::new(move |s| {
                    at(s, &format!("{export}/properties/download_url"))
                        .as_object_mut()
                        .unwrap()
                        .remove("nullable");
                }),
            ),
            (
                "require a property the server may omit",
                Box::new(|s| {
                    let filters = at(s, "/components/schemas/UserExportFilters")
                        .as_object_mut()
                        .unwrap();
                    filters.insert("required".into(), json!(["status"]));
                }),
            ),
            (
                "add a required query parameter",
                Box::new(move |s| {
                    at(s, &format!("{list}/parameters")).as_array_mut().unwrap().push(json!({"in": "query", "name": "owner", "required": true, "schema": {"type": "string"}}));
                }),
            ),
            ("change the success status", Box::new(create_answers_201)),
            (
                "rename a path parameter",
                Box::new(|s| {
                    let paths = at(s, "/paths").as_object_mut().unwrap();
                    let item = paths.remove("/api/v1/exports/users/{export_id}").unwrap();
                    paths.insert("/api/v1/exports/users/{id}".into(), item);
                }),
            ),
            (
                "remove an operation the server serves",
                Box::new(|s| {
                    at(s, "/paths/~1health~1live")
                        .as_object_mut()
                        .unwrap()
                        .remove("get");
                }),
            ),
            (
                "narrow a response range",
                Box::new(|s| {
                    *at(s, "/components/schemas/ExportProgress/properties/percent/maximum") = json!(50);
                }),
            ),
            (
                "allow a request value the server rejects",
                Box::new(|s| *at(s, "/components/schemas/ExportFormat/enum") = json!(["csv", "xlsx", "pdf"])),
            ),
            (
                "drop the error schema's request id",
                Box::new(|s| {
                    at(s, "/components/schemas/ErrorBody/properties")
                        .as_object_mut()
                        .unwrap()
                        .remove("request_id");
                    at(s, "/components/schemas/ErrorBody/required")
                        .as_array_mut()
                        .unwrap()
                        .retain(|v| v != "request_id");
                    at(s, "/components/schemas/ErrorBody")
                        .as_object_mut()
                        .unwrap()
                        .insert("additionalProperties".into(), json!(false));
                }),
            ),
        ];
        for (name, mutate) in mutations {
            let mut spec = spec_value();
            mutate(&mut spec);
            assert!(!drift(spec).is_empty(), "not caught: {name}");
        }
    }

    #[test]
    fn benign_differences_are_not_drift() {
        let mut spec = spec_value();
        // Descriptions, key order and schema names do not matter.
        *at(&mut spec, "/paths/~1health~1live/get/description") = json!("Anything at all.");
        let schemas = at(&mut spec, "/components/schemas").as_object_mut().unwrap();
        let health = schemas.remove("Health").unwrap();
        schemas.insert("LivenessBody".into(), health);
        let text = serde_json::to_string(&spec).unwrap().replace(
            "#/components/schemas/Health\"",
            "#/components/schemas/LivenessBody\"",
        );
        assert!(drift(serde_json::from_str(&text).unwrap()).is_empty());
    }

    #[test]
    fn findings_name_both_sides() {
        let mut spec = spec_value();
        *at(
            &mut spec,
            "/components/schemas/ExportAccepted/properties/estimated_seconds/type",
        ) = json!("string");
        let finding = drift(spec).into_iter().next().unwrap();
        assert_eq!(finding.operation, "createUserExport (POST /api/v1/exports/users)");
        assert_eq!(
            finding.spec_pointer,
            "/components/schemas/ExportAccepted/properties/estimated_seconds"
        );
        assert_eq!(
            finding.server_pointer,
            "/components/schemas/ExportAccepted/properties/estimated_seconds"
        );
        assert!(finding.reason.contains("type"), "{}", finding.reason);
    }

    fn breaking(new: Value) -> Vec<Finding> {
        diff(&Spec::bundled(), &Spec::from_value(new).unwrap())
    }

    /// Each change breaks a client generated from the old spec.
    #[test]
    fn breaking_changes_are_caught() {
        type Change = Box<dyn Fn(&mut Value)>;
        let changes: Vec<(&str, Change)> = vec![
            (
                "remove a response property",
                Box::new(|s| {
                    at(s, "/components/schemas/Export/properties")
                        .as_object_mut()
                        .unwrap()
                        .remove("error_message");
                }),
            ),
            (
                "add a required request property",
                Box::new(|s| {
                    at(s, "/components/schemas/CreateUserExport/properties")
                        .as_object_mut()
                        .unwrap()
                        .insert("reason".into(), json!({"type": "string"}));
                    *at(s, "/components/schemas/CreateUserExport/required") = json!(["format", "reason"]);
                }),
            ),
            (
                "make an optional parameter required",
                Box::new(|s| {
                    *at(s, "/components/parameters/Limit/required") = json!(true);
                }),
            ),
            (
                "drop an enum value accepted in requests",
                Box::new(|s| *at(s, "/components/schemas/UserStatus/enum") = json!(["active"])),
            ),
            (
                "add an enum value to a response",
                Box::new(|s| {
                    at(s, "/components/schemas/ExportStatus/enum")
                        .as_array_mut()
                        .unwrap()
                        .push(json!("queued"));
                }),
            ),
            (
                "change a type",
                Box::new(|s| {
                    *at(s, "/components/schemas/ExportProgress/properties/rows_total/type") = json!("string")
                }),
            ),
            ("change a success status", Box::new(create_answers_201)),
            (
                "remove an operation",
                Box::new(|s| {
                    at(s, "/paths/~1api~1v1~1exports~1users~1{export_id}~1cancel")
                        .as_object_mut()
                        .unwrap()
                        .remove("post");
                }),
            ),
            (
                "make a response property optional",
                Box::new(|s| {
                    at(s, "/components/schemas/Export/required")
                        .as_array_mut()
                        .unwrap()
                        .retain(|v| v != "status");
                }),
            ),
            (
                "make a response property nullable",
                Box::new(|s| {
                    at(
                        s,
                        "/components/schemas/ExportAccepted/properties/estimated_seconds",
                    )
                    .as_object_mut()
                    .unwrap()
                    .insert("nullable".into(), json!(true));
                }),
            ),
            (
                "narrow a request range",
                Box::new(|s| *at(s, "/components/parameters/Limit/schema/maximum") = json!(10)),
            ),
            (
                "remove an optional query parameter",
                Box::new(|s| {
                    at(s, "/paths/~1api~1v1~1exports~1users/get/parameters")
                        .as_array_mut()
                        .unwrap()
                        .remove(1);
                }),
            ),
        ];
        for (name, change) in changes {
            let mut spec = spec_value();
            change(&mut spec);
            assert!(!breaking(spec).is_empty(), "not caught: {name}");
        }
    }

    #[test]
    fn compatible_changes_are_not_breaking() {
        let mut spec = spec_value();
        // A new optional property of a request-only object, a new operation, a wider limit.
        // (The same property on UserExportFilters would break: responses carry that closed
        // object too, and clients generated from it reject unknown fields.)
        at(&mut spec, "/components/schemas/CreateUserExport/properties")
            .as_object_mut()
            .unwrap()
            .insert("note".into(), json!({"type": "string"}));
        let ping = json!({"get": {"operationId": "ping", "summary": "Ping", "responses": {"204": {"description": "pong"}}}});
        at(&mut spec, "/paths")
            .as_object_mut()
            .unwrap()
            .insert("/ping".into(), ping);
        *at(&mut spec, "/components/parameters/Limit/schema/maximum") = json!(1000);
        at(&mut spec, "/components/schemas/UserStatus/enum")
            .as_array_mut()
            .unwrap()
            .push(json!("suspended"));
        let changes = breaking(spec.clone());
        // A new enum value is compatible in requests but reaches clients in responses.
        assert!(
            changes.iter().all(|c| c.reason.contains("suspended")),
            "{changes:?}"
        );
        at(&mut spec, "/components/schemas/UserStatus/enum")
            .as_array_mut()
            .unwrap()
            .pop();
        assert!(breaking(spec).is_empty());
        assert!(breaking(spec_value()).is_empty());
    }

    #[test]
    fn a_new_major_version_announces_breaking_changes() {
        let old = Spec::bundled();
        let mut next = spec_value();
        *at(&mut next, "/info/version") = json!("2.0.0");
        assert!(major_raised(&old, &Spec::from_value(next.clone()).unwrap()));
        *at(&mut next, "/info/version") = json!("1.9.0");
        assert!(!major_raised(&old, &Spec::from_value(next).unwrap()));
    }

    #[test]
    fn lint_finds_missing_examples_summaries_and_bad_examples() {
        let mut spec = spec_value();
        at(&mut spec, "/paths/~1health~1live/get")
            .as_object_mut()
            .unwrap()
            .remove("summary");
        at(&mut spec, "/paths/~1health~1live/get")
            .as_object_mut()
            .unwrap()
            .remove("operationId");
        let accepted = at(
            &mut spec,
            "/paths/~1api~1v1~1exports~1users/post/responses/202/content/application~1json",
        );
        accepted.as_object_mut().unwrap().remove("example");
        accepted.as_object_mut().unwrap().remove("examples");
        *at(&mut spec, "/components/schemas/ExportStatus/example") = json!("nope");
        *at(&mut spec, "/components/schemas/Health/properties/status/enum") = json!(["fine"]);
        let problems = lint(&Spec::from_value(spec).unwrap()).join("\n");
        assert!(
            problems.contains("GET /health/live: no operationId"),
            "{problems}"
        );
        assert!(problems.contains("GET /health/live: no summary"), "{problems}");
        assert!(problems.contains("response 202 has no example"), "{problems}");
        assert!(
            problems.contains(
                "/paths/~1health~1live/get/responses/200/content/application~1json/example does not match"
            ),
            "a response example that no longer matches: {problems}"
        );
        assert!(
            problems.contains("/components/schemas/ExportStatus/example does not match"),
            "a schema example that does not match: {problems}"
        );
    }

    /// xtask/fixtures/contract: hand-made pairs of documents with the expected verdict.
    #[test]
    fn fixture_pairs_get_their_verdicts() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contract");
        let mut cases = 0;
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let case: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let spec = Spec::from_value(case["spec"].clone()).unwrap();
            let server = Spec::from_value(case["server"].clone()).unwrap();
            let findings = check(&spec, &server);
            let drift = findings.iter().any(|f| f.severity == Severity::Drift);
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let listed = findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(drift, case["verdict"] == "drift", "{name}:\n{listed}");
            let expect = case["expect"].as_str().unwrap();
            assert!(
                findings.iter().any(|f| f.reason.contains(expect)) || expect.is_empty(),
                "{name}: no finding says {expect:?}:\n{listed}"
            );
            if expect.is_empty() {
                assert!(
                    findings.iter().all(|f| f.severity == Severity::Runtime),
                    "{name}:\n{listed}"
                );
            }
            cases += 1;
        }
        assert!(cases >= 12, "only {cases} fixtures");
    }

    #[test]
    fn runtime_coverage_names_real_tests() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for (what, test) in RUNTIME_COVERAGE {
            let (file, function) = test.split_once("::").unwrap();
            let source = std::fs::read_to_string(root.join(file)).unwrap();
            assert!(
                source.contains(&format!("fn {function}(")),
                "{what}: no {function} in {file}"
            );
        }
    }
}
