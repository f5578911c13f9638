//! A request checked against its operation, by the server and the mock alike: its path, query
//! and header parameters and its body, each problem named by its field, in the words both send.

use std::collections::BTreeMap;

use http::header::{self, HeaderMap};
use serde_json::Value;

use crate::errors::{issue, ErrorDetail};
use crate::{Operation, Spec};

/// What a request sent that its operation's parameters and body describe.
pub struct Sent<'r, S> {
    /// The path parameters, as the operation's template matched them (`Spec::operations_at`).
    pub path_parameters: &'r BTreeMap<String, S>,
    /// The query string, undecoded (`a=1&b=2`).
    pub query: Option<&'r str>,
    pub headers: &'r HeaderMap,
    pub body: Body<'r>,
}

/// A request's body, as far as it has been read.
pub enum Body<'r> {
    /// As it arrived: its presence, media type and JSON syntax are checked too. `json` is the
    /// body parsed (`errors::parse_json`), when it is not empty.
    Raw {
        bytes: &'r [u8],
        json: Option<&'r Result<Value, String>>,
    },
    /// Already read as JSON: the reader checked its presence, media type and syntax (the
    /// server's extractor does).
    Json(&'r Value),
    /// Not read: only the parameters are checked.
    Unread,
}

impl Spec {
    /// Every problem with what a request sent to `operation`, parameters first, then the body.
    pub fn request_problems<S: AsRef<str>>(&self, operation: &Operation, sent: &Sent<S>) -> Vec<ErrorDetail> {
        let mut problems = self.parameter_problems(operation, sent);
        let Some(request_body) = operation
            .definition
            .get("requestBody")
            .and_then(|body| self.resolve(body).ok())
        else {
            return problems;
        };
        let json = match &sent.body {
            Body::Unread => return problems,
            Body::Json(value) => *value,
            Body::Raw { bytes, json } => {
                let required = request_body
                    .get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if bytes.is_empty() {
                    if required {
                        problems.push(ErrorDetail::new("body", issue::REQUIRED));
                    }
                    return problems;
                }
                let media_type = sent
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .map(crate::media_type)
                    .unwrap_or_default();
                if request_body
                    .get("content")
                    .and_then(|c| c.get(&media_type))
                    .is_none()
                {
                    problems.push(ErrorDetail::new(
                        "Content-Type",
                        format!("{media_type:?} is not a media type this operation accepts"),
                    ));
                    return problems;
                }
                if media_type != "application/json" {
                    return problems;
                }
                match json {
                    None => return problems,
                    Some(Err(issue)) => {
                        problems.push(ErrorDetail::new("body", issue.clone()));
                        return problems;
                    }
                    Some(Ok(value)) => value,
                }
            }
        };
        let schema = request_body
            .get("content")
            .and_then(|content| content.get("application/json"))
            .and_then(|media| media.get("schema"));
        if let Some(schema) = schema {
            for problem in self.schema_problems(schema, json) {
                problems.push(problem.detail("body"));
            }
        }
        problems
    }

    fn parameter_problems<S: AsRef<str>>(&self, operation: &Operation, sent: &Sent<S>) -> Vec<ErrorDetail> {
        let query: BTreeMap<String, String> = sent
            .query
            .map(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let mut problems = Vec::new();
        for parameter in self.parameters(operation) {
            let (Some(name), Some(location)) = (
                parameter.get("name").and_then(Value::as_str),
                parameter.get("in").and_then(Value::as_str),
            ) else {
                continue;
            };
            let value = match location {
                "path" => sent.path_parameters.get(name).map(|v| v.as_ref().to_string()),
                "query" => query.get(name).cloned(),
                // Bytes outside visible ASCII stay in (replaced), for the schema to refuse them.
                "header" => sent
                    .headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                _ => continue,
            };
            let required = parameter
                .get("required")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match (value, parameter.get("schema")) {
                (None, _) if required => problems.push(ErrorDetail::new(name, issue::REQUIRED)),
                (Some(text), Some(schema)) => {
                    let typed = self.typed_parameter(schema, &text);
                    for problem in self.schema_problems(schema, &typed) {
                        problems.push(problem.detail(name));
                    }
                }
                _ => {}
            }
        }
        problems
    }

    /// A query, path or header value as the JSON its schema describes.
    fn typed_parameter(&self, schema: &Value, text: &str) -> Value {
        let schema = self.resolve(schema).unwrap_or(schema);
        let parsed = match schema.get("type").and_then(Value::as_str) {
            Some("integer") => text.parse::<i64>().ok().map(Value::from),
            Some("number") => text.parse::<f64>().ok().map(Value::from),
            Some("boolean") => text.parse::<bool>().ok().map(Value::from),
            _ => None,
        };
        parsed.unwrap_or_else(|| Value::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The problems the spec finds with a `createUserExport` (with these headers) or a
    /// `getExport` of this id.
    fn create_problems(body: &Value, headers: &HeaderMap) -> Vec<ErrorDetail> {
        let spec = Spec::bundled();
        let operation = spec.find_operation("POST", "/api/v1/exports/users").unwrap();
        let sent = Sent::<&str> {
            path_parameters: &BTreeMap::new(),
            query: None,
            headers,
            body: Body::Json(body),
        };
        spec.request_problems(&operation, &sent)
    }

    fn fields(problems: &[ErrorDetail]) -> Vec<&str> {
        let mut fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        fields.sort();
        fields
    }

    #[test]
    fn a_create_is_checked_field_by_field_with_the_allowed_values() {
        let none = HeaderMap::new();
        let full =
            json!({"format": "xlsx", "filters": {"created_after": "2024-02-29", "status": "inactive"}});
        assert!(create_problems(&full, &none).is_empty());
        assert!(create_problems(&json!({"format": "csv"}), &none).is_empty());

        let problems = create_problems(
            &json!({
                "format": "pdf",
                "filters": {"created_after": "2024-02-30", "status": "banned", "age": 3},
                "extra": true
            }),
            &none,
        );
        assert_eq!(
            fields(&problems),
            [
                "extra",
                "filters.age",
                "filters.created_after",
                "filters.status",
                "format"
            ]
        );
        let allowed = |field: &str| {
            problems
                .iter()
                .find(|p| p.field == field)
                .unwrap()
                .allowed
                .clone()
        };
        assert_eq!(allowed("format").unwrap(), ["csv", "xlsx", "jsonl"]);
        assert_eq!(allowed("filters.status").unwrap(), ["active", "inactive"]);

        for (body, field) in [
            (json!([1]), "body"),
            (json!({}), "format"),
            (json!({"format": 7}), "format"),
            (json!({"format": "CSV"}), "format"),
            (json!({"format": "csv", "filters": "active"}), "filters"),
            // Not nullable: a null is refused, not read as left out.
            (json!({"format": "csv", "filters": null}), "filters"),
            (
                json!({"format": "csv", "filters": {"created_after": "2024-1-5"}}),
                "filters.created_after",
            ),
            (
                json!({"format": "csv", "filters": {"created_after": "2024-01-05T00:00:00Z"}}),
                "filters.created_after",
            ),
            (json!({"format": "csv", "columns": "email"}), "columns"),
            (json!({"format": "csv", "columns": []}), "columns"),
            (json!({"format": "csv", "columns": ["email", "email"]}), "columns"),
            (
                json!({"format": "csv", "columns": ["email", "phone"]}),
                "columns.1",
            ),
            (json!({"format": "csv", "compression": "zip"}), "compression"),
            (json!({"format": "xlsx", "compression": "gzip"}), "compression"),
            (json!({"format": "jsonl", "compression": null}), "compression"),
        ] {
            let problems = create_problems(&body, &none);
            assert_eq!(fields(&problems), [field], "{body}");
            if field.starts_with("columns") {
                let allowed = problems[0].allowed.clone().unwrap_or_default();
                assert_eq!(allowed, crate::files::USER_COLUMNS, "{body}");
            }
        }
        let chosen = json!({"format": "jsonl", "columns": ["created_at", "email"], "compression": "gzip"});
        assert!(create_problems(&chosen, &none).is_empty());
    }

    #[test]
    fn parameters_are_checked_with_the_body() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "".parse().unwrap());
        let problems = create_problems(&json!({"format": "pdf"}), &headers);
        assert_eq!(fields(&problems), ["Idempotency-Key", "format"]);

        let spec = Spec::bundled();
        let id_problems = |id: &str| {
            let path = format!("/api/v1/exports/users/{id}");
            let (operation, parameters) = spec
                .operations_at(&path)
                .into_iter()
                .find(|(operation, _)| operation.method == "GET")
                .unwrap();
            let sent = Sent {
                path_parameters: &parameters,
                query: None,
                headers: &HeaderMap::new(),
                body: Body::Unread,
            };
            fields(&spec.request_problems(&operation, &sent)).join(",")
        };
        assert_eq!(id_problems("0b9a3a0e-3f2a-4c1e-9d3b-2a6c1f0e7d55"), "");
        // The hyphenated form only, as the spec's `format: uuid` says.
        assert_eq!(id_problems("0b9a3a0e3f2a4c1e9d3b2a6c1f0e7d55"), "export_id");
        assert_eq!(id_problems("not-a-uuid"), "export_id");
    }
}
