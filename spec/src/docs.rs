//! `/docs`: a readable HTML reference of the API, rendered from the spec being served. One
//! self-contained page (inline styles, no scripts, nothing from a CDN), so it works offline:
//! the spec's Markdown rendered (pulldown-cmark, raw HTML shown as text), a navigation list,
//! each operation with its parameters, bodies, responses, examples and a ready `curl`, and
//! each schema as a table of its fields.

use crate::Spec;
use serde_json::Value;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Markdown as HTML. Raw HTML in the spec is shown as text, never passed through.
fn markdown(source: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser};
    let events = Parser::new_ext(source, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// A ready `curl` for an operation: its path with the example path parameters, the key when
/// it needs one, and the first example body.
fn curl(spec: &Spec, op: &crate::Operation, base_url: &str) -> String {
    let mut path = op.path.to_string();
    for parameter in spec
        .parameters(op)
        .into_iter()
        .filter(|p| text(p, "in") == "path")
    {
        if let Some(example) = parameter.get("example").and_then(Value::as_str) {
            path = path.replace(&format!("{{{}}}", text(parameter, "name")), example);
        }
    }
    let mut command = format!("curl -s -X {} '{base_url}{path}'", op.method);
    let public = op
        .definition
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|requirements| requirements.is_empty());
    if !public {
        command.push_str(" \\\n  -H \"Authorization: Bearer $KEY\"");
    }
    let body = op
        .definition
        .get("requestBody")
        .and_then(|b| spec.resolve(b).ok())
        .and_then(|b| first_example(spec, b.pointer("/content/application~1json")?));
    if let Some(body) = body {
        command.push_str(&format!(
            " \\\n  -H 'Content-Type: application/json' \\\n  -d '{}'",
            serde_json::to_string(&body).unwrap_or_default()
        ));
    }
    command
}

/// A schema's name as a link to its table, or its one-line summary.
fn schema_link(schema: &Value) -> String {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or(reference);
            format!("<a href=\"#schema-{0}\"><code>{0}</code></a>", escape(name))
        }
        None => escape(&schema_summary(schema)),
    }
}

fn text<'v>(value: &'v Value, key: &str) -> &'v str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A schema in one line: `string (uuid)`, `array of Export`, `ExportFormat`.
fn schema_summary(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference.rsplit('/').next().unwrap_or(reference).to_string();
    }
    let kind = text(schema, "type");
    let mut summary = match kind {
        "array" => format!(
            "array of {}",
            schema.get("items").map(schema_summary).unwrap_or_default()
        ),
        "" => "any".to_string(),
        other => other.to_string(),
    };
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        summary.push_str(&format!(" ({format})"));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            .collect();
        summary.push_str(&format!(": {}", values.join(" | ")));
    }
    if schema.get("nullable").and_then(Value::as_bool).unwrap_or(false) {
        summary.push_str(", nullable");
    }
    summary
}

fn pretty(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn first_example(spec: &Spec, media: &Value) -> Option<Value> {
    media.get("example").cloned().or_else(|| {
        let (_, first) = media.get("examples")?.as_object()?.iter().next()?;
        spec.resolve(first).ok()?.get("value").cloned()
    })
}

/// A request body's or response's media types, each with its schema and first example.
fn render_content(spec: &Spec, body: &Value, html: &mut String) {
    for (media_type, media) in body
        .get("content")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let schema = media.get("schema").map(schema_link).unwrap_or_default();
        html.push_str(&format!("<p><code>{}</code>: {}</p>", escape(media_type), schema));
        if let Some(example) = first_example(spec, media) {
            html.push_str(&format!("<pre>{}</pre>", escape(&pretty(&example))));
        }
    }
}

pub fn render(spec: &Spec) -> String {
    let document = spec.document();
    let info = &document["info"];
    let mut html = String::new();
    html.push_str(&format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}}\
         pre{{background:#f4f5f7;padding:.75rem;overflow:auto;white-space:pre-wrap}}\
         .op{{border-top:1px solid #d0d7de;padding-top:1rem;margin-top:2rem}}\
         .method{{font-weight:700;padding:.1rem .5rem;border-radius:4px;color:#fff;background:#57606a}}\
         .GET{{background:#0969da}}.POST{{background:#1a7f37}}.DELETE{{background:#cf222e}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left}}\
         nav a{{display:block}}code{{background:#f4f5f7;padding:0 .2rem}}pre code{{background:none;padding:0}}</style></head>\
         <body><h1>{title} <small>{version}</small></h1>{description}",
        title = escape(text(info, "title")),
        version = escape(text(info, "version")),
        description = markdown(text(info, "description")),
    ));
    let base_url = document
        .pointer("/servers/0/url")
        .and_then(Value::as_str)
        .unwrap_or("http://127.0.0.1:8080");
    let operations = spec.operations();
    html.push_str("<nav><h2>Operations</h2>");
    for op in &operations {
        html.push_str(&format!(
            "<a href=\"#{id}\">{method} {path}: {summary}</a>",
            id = escape(op.id),
            method = op.method,
            path = escape(op.path),
            summary = escape(text(op.definition, "summary"))
        ));
    }
    html.push_str("<h2>Schemas</h2>");
    for name in document
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, _)| name)
    {
        html.push_str(&format!("<a href=\"#schema-{0}\">{0}</a>", escape(name)));
    }
    html.push_str("</nav>");
    for op in &operations {
        html.push_str(&format!(
            "<section class=\"op\" id=\"{id}\"><h2><span class=\"method {method}\">{method}</span> <code>{path}</code></h2>\
             <p><strong>{summary}</strong> <code>{id}</code></p>{description}<pre><code>{curl}</code></pre>",
            id = escape(op.id),
            method = op.method,
            path = escape(op.path),
            summary = escape(text(op.definition, "summary")),
            description = markdown(text(op.definition, "description")),
            curl = escape(&curl(spec, op, base_url)),
        ));
        let parameters = spec.parameters(op);
        if !parameters.is_empty() {
            html.push_str("<h3>Parameters</h3><table><tr><th>name</th><th>in</th><th>required</th><th>schema</th><th>description</th></tr>");
            for parameter in parameters {
                html.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(text(parameter, "name")),
                    escape(text(parameter, "in")),
                    parameter
                        .get("required")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    parameter.get("schema").map(schema_link).unwrap_or_default(),
                    markdown(text(parameter, "description")),
                ));
            }
            html.push_str("</table>");
        }
        if let Some(body) = op
            .definition
            .get("requestBody")
            .and_then(|b| spec.resolve(b).ok())
        {
            html.push_str("<h3>Request body</h3>");
            render_content(spec, body, &mut html);
        }
        html.push_str("<h3>Responses</h3>");
        for (status, response) in op
            .definition
            .get("responses")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let Ok(response) = spec.resolve(response) else {
                continue;
            };
            html.push_str(&format!(
                "<h4>{}</h4>{}",
                escape(status),
                markdown(text(response, "description"))
            ));
            render_content(spec, response, &mut html);
        }
        html.push_str("</section>");
    }
    html.push_str("<section class=\"op\"><h2>Schemas</h2>");
    for (name, schema) in document
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        html.push_str(&format!(
            "<h3 id=\"schema-{0}\">{0}</h3>{1}",
            escape(name),
            markdown(text(schema, "description"))
        ));
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            html.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>");
            for (property, property_schema) in properties {
                html.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(property),
                    schema_link(property_schema),
                    if required.contains(&property.as_str()) {
                        "yes"
                    } else {
                        "no"
                    },
                    markdown(text(property_schema, "description"))
                ));
            }
            html.push_str("</table>");
        } else {
            html.push_str(&format!("<p>{}</p>", escape(&schema_summary(schema))));
        }
    }
    html.push_str("</section></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_operation_offline() {
        let spec = Spec::bundled();
        let html = render(&spec);
        for op in spec.operations() {
            assert!(html.contains(&format!("id=\"{}\"", op.id)), "{} missing", op.id);
        }
        assert!(html.contains("too_many_pending_exports"), "examples are shown");
        assert!(
            html.contains("<h2>Authentication</h2>"),
            "the Markdown is rendered"
        );
        assert!(
            html.contains("<table>") && html.contains("<th>Scope</th>"),
            "with its tables"
        );
        assert!(html.contains("curl -s -X POST"), "a curl per operation");
        assert!(
            html.contains("href=\"#schema-ExportFormat\""),
            "schemas are linked"
        );
        assert!(!html.contains("<script"), "no scripts");
        assert!(
            !html.contains("<link") && !html.contains("src=\"http"),
            "nothing loaded from elsewhere"
        );
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
