//! `spec/openapi.yaml` as data: load it, resolve its local `$ref`s, and validate JSON against
//! its OpenAPI 3.0 schemas (`nullable`, formats). The tests validate live responses with it;
//! xtask compares and lints with it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use crate::errors::issue;

/// The contract, as committed beside this crate.
pub mod auth;
pub mod backoff;
pub mod cors;
pub mod docs;
pub mod errors;
pub mod files;
pub mod headers;
pub mod limits;
pub mod request;
pub mod request_id;
pub mod request_path;
#[cfg(feature = "schemars")]
pub mod schema;
pub mod webhook_url;
pub mod webhooks;

pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// A random (version 4) UUID from the thread's generator: no system call per request, as
/// `Uuid::new_v4` makes one.
pub fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// The operation keys of a path item, with their methods as sent.
const METHODS: [(&str, &str); 8] = [
    ("get", "GET"),
    ("put", "PUT"),
    ("post", "POST"),
    ("delete", "DELETE"),
    ("options", "OPTIONS"),
    ("head", "HEAD"),
    ("patch", "PATCH"),
    ("trace", "TRACE"),
];

/// One way a value breaks a schema (`Spec::schema_problems`), in the words of
/// `errors::issue` where it has them.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaProblem {
    /// JSON pointer in the value.
    pub pointer: String,
    pub message: String,
    /// The values the schema allows there, for an enumeration or an unknown member.
    pub allowed: Option<Vec<String>>,
}

impl SchemaProblem {
    /// The problem as the envelope's detail: the member's dotted name, or `whole` (`body`, a
    /// parameter's name) for the value as a whole.
    pub fn detail(self, whole: &str) -> errors::ErrorDetail {
        let field = if self.pointer.is_empty() {
            whole.to_string()
        } else {
            self.pointer
                .split('/')
                .skip(1)
                .map(|part| part.replace("~1", "/").replace("~0", "~"))
                .collect::<Vec<_>>()
                .join(".")
        };
        errors::ErrorDetail {
            field,
            issue: self.message,
            allowed: self.allowed,
        }
    }
}

/// An enumeration's values as the details' `allowed` names them: strings as they are.
fn value_names(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect()
}

/// The bounds of an integer schema that has both.
fn bounds(schema: Option<&Value>) -> Option<(i64, i64)> {
    let schema = schema?;
    (schema.get("type")? == "integer").then_some(())?;
    Some((schema.get("minimum")?.as_i64()?, schema.get("maximum")?.as_i64()?))
}

/// The length bounds and pattern of a string schema that has all three.
fn text_form(schema: Option<&Value>) -> Option<(u64, u64, &str)> {
    let schema = schema?;
    Some((
        schema.get("minLength")?.as_u64()?,
        schema.get("maxLength")?.as_u64()?,
        schema.get("pattern")?.as_str()?,
    ))
}

/// A schema's type as `errors::issue::not_of_type` words it.
fn type_in_words(schema: Option<&Value>) -> Option<&'static str> {
    Some(match schema?.get("type")?.as_str()? {
        "object" => "an object",
        "array" => "an array",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        _ => return None,
    })
}

pub struct Spec {
    document: Value,
    /// The YAML the document was read from, when it was read from YAML: served as written.
    source: Option<String>,
    /// Compiled validators by schema: compiling translates every component schema, far too
    /// slow to repeat for each request a mock server validates. A schema that is only a
    /// `$ref` is found by its reference (`#/…`), any other by its JSON text (`{…}`).
    validators: RwLock<HashMap<String, Arc<jsonschema::Validator>>>,
    /// Every path template, split, with its methods, in document order: found once, not at
    /// each request a mock server routes.
    templates: Vec<PathTemplate>,
}

/// A `paths` key split at its slashes, and its operations' methods (lower case, as keys).
#[derive(Debug)]
struct PathTemplate {
    template: String,
    segments: Vec<Segment>,
    methods: Vec<&'static str>,
}

#[derive(Debug)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Parameter(String),
}

impl PathTemplate {
    fn new(template: &str, item: &Value) -> Self {
        let segments = template
            .split('/')
            .map(
                |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) => Segment::Parameter(name.to_string()),
                    None => Segment::Literal(part.to_string()),
                },
            )
            .collect();
        let methods = METHODS
            .iter()
            .filter(|(method, _)| item.get(*method).is_some())
            .map(|(method, _)| *method)
            .collect();
        Self {
            template: template.to_string(),
            segments,
            methods,
        }
    }

    /// The path parameters (as sent, not percent-decoded) of a concrete path, split by
    /// [`split_path`], that this template matches.
    fn parameters<'p>(&self, path: &[&'p str]) -> Option<BTreeMap<String, &'p str>> {
        if path.len() != self.segments.len() {
            return None;
        }
        let mut parameters = BTreeMap::new();
        for (segment, part) in self.segments.iter().zip(path) {
            match segment {
                Segment::Parameter(name) if !part.is_empty() => {
                    parameters.insert(name.clone(), *part);
                }
                Segment::Literal(literal) if literal == part => {}
                _ => return None,
            }
        }
        Some(parameters)
    }
}

/// A concrete path's segments, a trailing slash ignored.
fn split_path(path: &str) -> Vec<&str> {
    path.trim_end_matches('/').split('/').collect()
}

/// One operation: `GET /api/v1/exports/users/{export_id}` and its definition.
#[derive(Debug, Clone)]
pub struct Operation<'a> {
    pub id: &'a str,
    /// Upper case, as on the wire.
    pub method: &'static str,
    pub path: &'a str,
    pub definition: &'a Value,
}

/// A response's body as [`Spec::validate_operation_response`] checks it: as sent, or, for a
/// JSON body about to be sent, the value before it is written (not parsed back).
#[derive(Debug, Clone, Copy)]
pub enum ResponseBody<'b> {
    Bytes(&'b [u8]),
    Json(&'b Value),
}

impl std::fmt::Display for ResponseBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(bytes) => write!(f, "{} bytes", bytes.len()),
            Self::Json(_) => write!(f, "a JSON body"),
        }
    }
}

impl Spec {
    pub fn bundled() -> Self {
        Self::parse(OPENAPI_YAML).expect("the bundled spec parses")
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn parse(yaml: &str) -> Result<Self> {
        let mut spec = Self::from_value(serde_yaml_ng::from_str(yaml)?)?;
        spec.source = Some(yaml.to_string());
        Ok(spec)
    }

    /// Any OpenAPI 3.0 document as JSON, such as the one dropshot generates.
    pub fn from_value(document: Value) -> Result<Self> {
        if !document
            .get("openapi")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("3.0"))
        {
            bail!("not an OpenAPI 3.0 document");
        }
        let templates = document
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(template, item)| PathTemplate::new(template, item))
            .collect();
        Ok(Self {
            document,
            source: None,
            validators: RwLock::default(),
            templates,
        })
    }

    pub fn document(&self) -> &Value {
        &self.document
    }

    /// An operation's parameters, references followed.
    pub fn parameters<'s>(&'s self, operation: &Operation<'s>) -> Vec<&'s Value> {
        operation
            .definition
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|parameter| self.resolve(parameter).ok())
            .collect()
    }

    /// What the contract's own paths serve, on the server and the mock alike:
    /// `/openapi.yaml` (the document as written), `/openapi.json` (the same document as
    /// JSON) and `/docs` (the reference page). The media type and the body.
    pub fn served(&self, path: &str) -> Option<(&'static str, Vec<u8>)> {
        match path {
            "/openapi.yaml" => {
                let yaml = match &self.source {
                    Some(source) => source.clone(),
                    None => serde_yaml_ng::to_string(&self.document).ok()?,
                };
                Some(("application/yaml", yaml.into_bytes()))
            }
            "/openapi.json" => Some((
                "application/json",
                serde_json::to_vec_pretty(&self.document).expect("JSON serialises"),
            )),
            "/docs" => Some(("text/html; charset=utf-8", docs::render(self).into_bytes())),
            _ => None,
        }
    }

    /// Follows local `$ref`s (`#/components/...`) until a value that is not a reference.
    pub fn resolve<'a>(&'a self, mut value: &'a Value) -> Result<&'a Value> {
        for _ in 0..32 {
            match value.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let pointer = reference
                        .strip_prefix('#')
                        .ok_or_else(|| anyhow!("only local references are supported: {reference}"))?;
                    value = pointer_into(&self.document, pointer)
                        .ok_or_else(|| anyhow!("dangling reference {reference}"))?;
                }
                None => return Ok(value),
            }
        }
        bail!("reference cycle")
    }

    pub fn operations(&self) -> Vec<Operation<'_>> {
        self.templates
            .iter()
            .flat_map(|template| template.methods.iter().map(move |method| (template, method)))
            .filter_map(|(template, method)| self.operation(&template.template, method))
            .collect()
    }

    /// The operations whose path template `path` matches (`{param}` matches one non-empty
    /// segment), with its path parameters (as sent, not percent-decoded).
    pub fn operations_at<'s, 'p>(&'s self, path: &'p str) -> Vec<(Operation<'s>, BTreeMap<String, &'p str>)> {
        let path = split_path(path);
        let mut found = Vec::new();
        for template in &self.templates {
            let Some(parameters) = template.parameters(&path) else {
                continue;
            };
            for method in &template.methods {
                if let Some(operation) = self.operation(&template.template, method) {
                    found.push((operation, parameters.clone()));
                }
            }
        }
        found
    }

    fn operation(&self, path: &str, method: &str) -> Option<Operation<'_>> {
        let (path, item) = self.document.get("paths")?.as_object()?.get_key_value(path)?;
        let definition = item.get(method)?;
        let (_, wire) = METHODS.iter().find(|(key, _)| *key == method)?;
        Some(Operation {
            id: definition
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or(""),
            method: wire,
            path,
            definition,
        })
    }

    /// Every example of a response or request body, with its schema and where it stands:
    /// (operation id, JSON pointer of the example, schema, example value).
    pub fn examples(&self) -> Vec<(String, String, &Value, Value)> {
        let mut found = Vec::new();
        for operation in self.operations() {
            let base = format!(
                "/paths/{}/{}",
                escape(operation.path),
                operation.method.to_lowercase()
            );
            let mut bodies: Vec<(String, &Value)> = Vec::new();
            if let Some(body) = operation.definition.get("requestBody") {
                bodies.push((format!("{base}/requestBody"), body));
            }
            for (status, response) in operation.definition["responses"]
                .as_object()
                .into_iter()
                .flatten()
            {
                bodies.push((format!("{base}/responses/{status}"), response));
            }
            for (pointer, body) in bodies {
                let Ok(body) = self.resolve(body) else { continue };
                for (media_type, media) in body
                    .get("content")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let Some(schema) = media.get("schema") else {
                        continue;
                    };
                    let at = format!("{pointer}/content/{}", escape(media_type));
                    if let Some(example) = media.get("example") {
                        found.push((
                            operation.id.to_string(),
                            format!("{at}/example"),
                            schema,
                            example.clone(),
                        ));
                    }
                    for (name, example) in media
                        .get("examples")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        let value = self.resolve(example).ok().and_then(|e| e.get("value")).cloned();
                        if let Some(value) = value {
                            found.push((
                                operation.id.to_string(),
                                format!("{at}/examples/{name}"),
                                schema,
                                value,
                            ));
                        }
                    }
                }
            }
        }
        found
    }

    /// The operation serving a concrete request path.
    pub fn find_operation(&self, method: &str, path: &str) -> Option<Operation<'_>> {
        self.operations_at(path)
            .into_iter()
            .map(|(operation, _)| operation)
            .find(|operation| operation.method.eq_ignore_ascii_case(method))
    }

    /// The documented response of an operation for a status: exact, then `4XX`, then `default`.
    pub fn response_for<'a>(&'a self, operation: &Operation<'a>, status: u16) -> Option<&'a Value> {
        let responses = operation.definition.get("responses")?;
        let range = format!("{}XX", status / 100);
        [status.to_string(), range, "default".to_string()]
            .iter()
            .find_map(|key| responses.get(key))
            .and_then(|response| self.resolve(response).ok())
    }

    /// Checks a value against an OpenAPI schema of this document.
    pub fn validate(&self, schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
        let errors: Vec<String> = self
            .schema_errors(schema, instance)
            .into_iter()
            .map(|(pointer, message)| format!("at {pointer:?}: {message}"))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Every way a value breaks an OpenAPI schema: (JSON pointer in the value, message).
    pub fn schema_errors(&self, schema: &Value, instance: &Value) -> Vec<(String, String)> {
        self.schema_problems(schema, instance)
            .into_iter()
            .map(|problem| (problem.pointer, problem.message))
            .collect()
    }

    /// Every way a value breaks an OpenAPI schema, as a form needs it: a member the schema
    /// does not know is one problem of its own ("is not a known field", as the server says),
    /// and a problem with an enumeration or an unknown member carries the `allowed` values.
    pub fn schema_problems(&self, schema: &Value, instance: &Value) -> Vec<SchemaProblem> {
        use jsonschema::error::ValidationErrorKind as Kind;
        let validator = match self.validator(schema) {
            Ok(validator) => validator,
            Err(error) => {
                return vec![SchemaProblem {
                    pointer: String::new(),
                    message: error,
                    allowed: None,
                }]
            }
        };
        // Most values are valid, and checking is much cheaper than collecting errors.
        if validator.is_valid(instance) {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for error in validator.iter_errors(instance) {
            let pointer = error.instance_path().as_str().to_string();
            let got = instance.pointer(&pointer).unwrap_or(&Value::Null);
            let at = self.schema_at(schema, &pointer);
            let problem = |message: String| SchemaProblem {
                pointer: pointer.clone(),
                message,
                allowed: None,
            };
            match error.kind() {
                Kind::AdditionalProperties { unexpected } => {
                    let known = self.member_names(schema, &pointer);
                    for name in unexpected {
                        problems.push(SchemaProblem {
                            pointer: format!("{pointer}/{}", escape(name)),
                            message: issue::UNKNOWN_FIELD.to_string(),
                            allowed: known.clone(),
                        });
                    }
                }
                // The missing member itself, with its values when it is an enumeration, so
                // that a form can offer them.
                Kind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    let pointer = format!("{pointer}/{}", escape(name));
                    problems.push(SchemaProblem {
                        allowed: self.enum_values(schema, &pointer),
                        pointer,
                        message: issue::REQUIRED.to_string(),
                    });
                }
                Kind::Enum { options } => {
                    let names = value_names(options.as_array().map(Vec::as_slice).unwrap_or_default());
                    problems.push(SchemaProblem {
                        message: issue::not_one_of(&names, got),
                        allowed: Some(names),
                        ..problem(String::new())
                    });
                }
                // A list of an enumeration's values (`columns`): said as a whole, once, with
                // the values it may hold.
                Kind::Type { .. } | Kind::MinItems { .. } | Kind::MaxItems { .. } | Kind::UniqueItems
                    if self.listed_values(at).is_some() =>
                {
                    let names = self.listed_values(at).expect("checked");
                    let message = issue::not_a_list_of(&names, got);
                    if !problems.iter().any(|p: &SchemaProblem| p.pointer == pointer) {
                        problems.push(SchemaProblem {
                            allowed: Some(names),
                            ..problem(message)
                        });
                    }
                }
                Kind::Type { .. } | Kind::Minimum { .. } | Kind::Maximum { .. } if bounds(at).is_some() => {
                    let (minimum, maximum) = bounds(at).expect("checked");
                    problems.push(problem(issue::not_in_range(minimum, maximum, got)));
                }
                Kind::Type { .. } if type_in_words(at).is_some() => {
                    problems.push(problem(issue::not_of_type(
                        type_in_words(at).expect("checked"),
                        got,
                    )));
                }
                Kind::MinLength { .. } | Kind::MaxLength { .. } | Kind::Pattern { .. }
                    if text_form(at).is_some() =>
                {
                    let (min_length, max_length, pattern) = text_form(at).expect("checked");
                    let message = issue::not_text_of_form(min_length, max_length, pattern);
                    if !problems
                        .iter()
                        .any(|p: &SchemaProblem| p.pointer == pointer && p.message == message)
                    {
                        problems.push(problem(message));
                    }
                }
                // A combination the spec refuses (`not`), said on the member its `x-field`
                // names, in the words of its `x-issue`, with the values that member may take.
                Kind::Not { schema: refused } if refused.get("x-field").is_some() => {
                    let field = refused["x-field"].as_str().unwrap_or_default();
                    let member = format!("{pointer}/{}", escape(field));
                    let got = instance.pointer(&member).unwrap_or(&Value::Null);
                    let words = refused
                        .get("x-issue")
                        .and_then(Value::as_str)
                        .unwrap_or("is refused here");
                    let refused_values: Vec<&str> = refused
                        .pointer(&format!("/properties/{}/enum", escape(field)))
                        .and_then(Value::as_array)
                        .map(|values| values.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let allowed = self.enum_values(schema, &member).map(|values| {
                        values
                            .into_iter()
                            .filter(|value| !refused_values.contains(&value.as_str()))
                            .collect()
                    });
                    problems.push(SchemaProblem {
                        pointer: member,
                        message: format!("{words}, got {got}"),
                        allowed,
                    });
                }
                Kind::Format { format } if format == "date" => problems.push(problem(issue::not_a_date(got))),
                Kind::Format { format } if format == "uuid" => problems.push(problem(issue::not_a_uuid(got))),
                _ => problems.push(problem(error.to_string())),
            }
        }
        // One problem per member, as the server reports it: a value of the wrong type for an
        // enumeration breaks both `type` and `enum`; the one with the allowed values says it all.
        let enumerations: Vec<String> = problems
            .iter()
            .filter(|problem| problem.allowed.is_some())
            .map(|problem| problem.pointer.clone())
            .collect();
        problems.retain(|problem| problem.allowed.is_some() || !enumerations.contains(&problem.pointer));
        problems
    }

    /// The schema of the member at `pointer` in an instance of `schema`, references followed.
    fn schema_at<'s>(&'s self, schema: &'s Value, pointer: &str) -> Option<&'s Value> {
        let mut at = self.resolve(schema).ok()?;
        for segment in pointer.split('/').skip(1) {
            let segment = segment.replace("~1", "/").replace("~0", "~");
            at = self.resolve(at.get("properties")?.get(&segment)?).ok()?;
            // schemars wraps a nullable reference in a lone `allOf`.
            if let Some([only]) = at.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                at = self.resolve(only).ok()?;
            }
        }
        Some(at)
    }

    /// The member names the object schema at `pointer` declares.
    fn member_names(&self, schema: &Value, pointer: &str) -> Option<Vec<String>> {
        Some(
            self.schema_at(schema, pointer)?
                .get("properties")?
                .as_object()?
                .keys()
                .cloned()
                .collect(),
        )
    }

    /// The values a list of an enumeration's values may hold, when `schema` is one.
    fn listed_values(&self, schema: Option<&Value>) -> Option<Vec<String>> {
        let schema = schema?;
        (schema.get("type")? == "array").then_some(())?;
        let items = self.resolve(schema.get("items")?).ok()?;
        Some(value_names(items.get("enum")?.as_array()?))
    }

    /// The values an enumeration at `pointer` allows.
    fn enum_values(&self, schema: &Value, pointer: &str) -> Option<Vec<String>> {
        Some(value_names(
            self.schema_at(schema, pointer)?.get("enum")?.as_array()?,
        ))
    }

    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let reference = schema
            .as_object()
            .filter(|members| members.len() == 1)
            .and_then(|members| members.get("$ref")?.as_str());
        let text;
        let key = match reference {
            Some(reference) => reference,
            None => {
                text = schema.to_string();
                &text
            }
        };
        if let Some(validator) = self.validators.read().expect("validators lock").get(key) {
            return Ok(validator.clone());
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&self.json_schema_root(schema))
            .map_err(|error| format!("the schema does not compile: {error}"))?;
        let validator = Arc::new(validator);
        self.validators
            .write()
            .expect("validators lock")
            .insert(key.to_string(), validator.clone());
        Ok(validator)
    }

    /// A JSON Schema (2020-12) whose root is `schema` and which carries every component schema,
    /// translated from OpenAPI 3.0's dialect, so `#/components/schemas/X` references resolve.
    fn json_schema_root(&self, schema: &Value) -> Value {
        let mut root = match to_json_schema(schema) {
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("allOf".into(), Value::Array(vec![other]));
                map
            }
        };
        let schemas = self
            .document
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .map(|schemas| {
                schemas
                    .iter()
                    .map(|(name, s)| (name.clone(), to_json_schema(s)))
                    .collect::<Map<_, _>>()
            })
            .unwrap_or_default();
        root.insert("components".into(), serde_json::json!({ "schemas": schemas }));
        Value::Object(root)
    }

    /// Validates one live response: the status is documented for the operation, the media
    /// type is one it declares, required headers are present, and a JSON body matches the schema.
    pub fn validate_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(), Vec<String>> {
        let operation = self
            .find_operation(method, path)
            .ok_or_else(|| vec![format!("{method} {path} is not an operation of the spec")])?;
        self.validate_operation_response(&operation, path, status, headers, ResponseBody::Bytes(body))
    }

    /// [`Spec::validate_response`] for an operation already found.
    pub fn validate_operation_response(
        &self,
        operation: &Operation,
        path: &str,
        status: u16,
        headers: &BTreeMap<String, String>,
        body: ResponseBody,
    ) -> Result<(), Vec<String>> {
        let method = operation.method;
        // Written out only when there is a problem to report.
        let context =
            std::fmt::from_fn(|f| write!(f, "{} ({method} {path}) answered {status}", operation.id));
        let response = self
            .response_for(operation, status)
            .ok_or_else(|| vec![format!("{context}: status not documented")])?;
        let mut problems = Vec::new();

        for (name, header) in response
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let Ok(header) = self.resolve(header) else {
                continue;
            };
            let required = header.get("required").and_then(Value::as_bool).unwrap_or(false);
            match headers.get(&name.to_ascii_lowercase()) {
                None if required => problems.push(format!("{context}: required header {name} is missing")),
                None => {}
                Some(value) => {
                    if let Some(schema) = header.get("schema") {
                        let typed = header_value(self.resolve(schema).unwrap_or(schema), value);
                        if let Err(errors) = self.validate(schema, &typed) {
                            problems.extend(
                                errors
                                    .into_iter()
                                    .map(|e| format!("{context}: header {name} {e}")),
                            );
                        }
                    }
                }
            }
        }

        let content = response.get("content").and_then(Value::as_object);
        match content {
            None if matches!(body, ResponseBody::Bytes([])) => {}
            None => problems.push(format!("{context}: the spec documents no body, got {body}")),
            Some(content) => {
                let media_type = headers
                    .get("content-type")
                    .map(|value| media_type(value))
                    .unwrap_or_default();
                match content.get(&media_type) {
                    None => problems.push(format!(
                        "{context}: media type {media_type:?} is not one of {:?}",
                        content.keys().collect::<Vec<_>>()
                    )),
                    Some(media) if media_type == "application/json" => {
                        let parsed;
                        let value = match body {
                            ResponseBody::Json(value) => Ok(value),
                            ResponseBody::Bytes(bytes) => match serde_json::from_slice::<Value>(bytes) {
                                Ok(value) => {
                                    parsed = value;
                                    Ok(&parsed)
                                }
                                Err(error) => Err(error),
                            },
                        };
                        match value {
                            Err(error) => problems.push(format!("{context}: body is not JSON: {error}")),
                            Ok(value) => {
                                if let Some(schema) = media.get("schema") {
                                    if let Err(errors) = self.validate(schema, value) {
                                        problems.extend(
                                            errors.into_iter().map(|e| format!("{context}: body {e}")),
                                        );
                                    }
                                }
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// `Value::pointer`, without its two allocations per token when a token has nothing escaped:
/// references are resolved several times per request the mock answers.
fn pointer_into<'v>(mut value: &'v Value, pointer: &str) -> Option<&'v Value> {
    if pointer.is_empty() {
        return Some(value);
    }
    for token in pointer.strip_prefix('/')?.split('/') {
        let token: std::borrow::Cow<str> = if token.contains('~') {
            token.replace("~1", "/").replace("~0", "~").into()
        } else {
            token.into()
        };
        value = match value {
            Value::Object(map) => map.get(token.as_ref())?,
            Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// The media type of a `Content-Type` value, without parameters, in lower case.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A JSON pointer token: `~` and `/` escaped.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A header's text as the JSON value its schema describes (headers are all text on the wire).
fn header_value(schema: &Value, text: &str) -> Value {
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(text)),
        Some("number") => text
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(text)),
        _ => Value::from(text),
    }
}

/// Translates an OpenAPI 3.0 schema into JSON Schema 2020-12: `nullable: true` admits null,
/// and OpenAPI-only keywords are dropped.
pub fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let nullable = map.get("nullable").and_then(Value::as_bool).unwrap_or(false);
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "nullable" | "example" | "examples" | "discriminator" | "xml" | "externalDocs"
                    | "deprecated" | "readOnly" | "writeOnly" => {}
                    "properties" | "patternProperties" => {
                        let translated = value
                            .as_object()
                            .map(|props| {
                                props
                                    .iter()
                                    .map(|(k, v)| (k.clone(), to_json_schema(v)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        out.insert(key.clone(), Value::Object(translated));
                    }
                    "items" | "additionalProperties" | "not" => {
                        out.insert(key.clone(), to_json_schema(value));
                    }
                    "allOf" | "anyOf" | "oneOf" => {
                        let translated = value
                            .as_array()
                            .map(|all| all.iter().map(to_json_schema).collect())
                            .unwrap_or_default();
                        out.insert(key.clone(), Value::Array(translated));
                    }
                    _ => {
                        out.insert(key.clone(), value.clone());
                    }
                }
            }
            if nullable {
                if let Some(Value::String(ty)) = out.get("type").cloned() {
                    out.insert("type".into(), serde_json::json!([ty, "null"]));
                }
                if let Some(Value::Array(values)) = out.get_mut("enum") {
                    values.push(Value::Null);
                }
                if out.contains_key("$ref") || out.contains_key("allOf") {
                    let inner = Value::Object(std::mem::take(&mut out));
                    out.insert("anyOf".into(), serde_json::json!([inner, {"type": "null"}]));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_resolve_as_serde_json_resolves_them() {
        let document = serde_json::json!({"paths": {"/a/{b}": {"get": [1, 2]}}, "t~x": 3, "": 4});
        for pointer in [
            "",
            "/paths",
            "/paths/~1a~1{b}/get/1",
            "/t~0x",
            "/",
            "/paths/x",
            "/paths/~1a~1{b}/get/9",
            "nope",
        ] {
            assert_eq!(
                pointer_into(&document, pointer),
                document.pointer(pointer),
                "{pointer:?}"
            );
        }
    }
    use serde_json::json;

    #[test]
    fn finds_operations_by_concrete_path() {
        let spec = Spec::bundled();
        let id = "1c4f6a2e-9b1d-4e8f-a6b3-2d7c9e0f1a2b";
        assert_eq!(
            spec.find_operation("GET", &format!("/api/v1/exports/users/{id}"))
                .unwrap()
                .id,
            "getExport"
        );
        assert_eq!(
            spec.find_operation("POST", "/api/v1/exports/users").unwrap().id,
            "createUserExport"
        );
        assert_eq!(
            spec.find_operation("GET", "/api/v1/exports/users").unwrap().id,
            "listExports"
        );
        assert!(spec.find_operation("DELETE", "/api/v1/exports/users").is_none());
        assert!(spec.find_operation("GET", "/nowhere").is_none());
    }

    #[test]
    fn nullable_admits_null_only_where_declared() {
        let spec = Spec::bundled();
        let schema = json!({"$ref": "#/components/schemas/ExportProgress"});
        let good =
            json!({"rows_written": 1, "rows_total": 2, "percent": 50.0, "estimated_seconds_remaining": null});
        assert!(spec.validate(&schema, &good).is_ok());
        let bad = json!({"rows_written": null, "rows_total": 2, "percent": 50.0});
        assert!(spec.validate(&schema, &bad).is_err());
    }

    #[test]
    fn formats_and_closed_objects_are_enforced() {
        let spec = Spec::bundled();
        let schema = json!({"$ref": "#/components/schemas/ExportAccepted"});
        let good = json!({"export_id": "1c4f6a2e-9b1d-4e8f-a6b3-2d7c9e0f1a2b", "status": "pending", "estimated_seconds": 3});
        assert!(spec.validate(&schema, &good).is_ok());
        let mut bad_uuid = good.clone();
        bad_uuid["export_id"] = json!("nope");
        assert!(spec.validate(&schema, &bad_uuid).is_err());
        let filters = json!({"$ref": "#/components/schemas/UserExportFilters"});
        assert!(spec
            .validate(&filters, &json!({"created_after": "2024-01-01"}))
            .is_ok());
        assert!(spec
            .validate(&filters, &json!({"created_after": "2024-01-32"}))
            .is_err());
        assert!(spec.validate(&filters, &json!({"surprise": 1})).is_err());
    }

    #[test]
    fn validates_responses_with_headers() {
        let spec = Spec::bundled();
        let body = br#"{"error":{"code":"too_many_pending_exports","message":"m","details":[],"request_id":"r","retry_after_seconds":3}}"#;
        let mut headers = BTreeMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("x-request-id".to_string(), "r".to_string()),
        ]);
        let missing = spec
            .validate_response("POST", "/api/v1/exports/users", 429, &headers, body)
            .unwrap_err();
        assert!(missing.iter().any(|p| p.contains("Retry-After")), "{missing:?}");
        headers.insert("retry-after".into(), "3".into());
        spec.validate_response("POST", "/api/v1/exports/users", 429, &headers, body)
            .unwrap();
        let undocumented = spec
            .validate_response("POST", "/api/v1/exports/users", 418, &headers, body)
            .unwrap_err();
        assert!(undocumented[0].contains("not documented"));
    }

    #[test]
    fn every_example_matches_its_schema() {
        let spec = Spec::bundled();
        let examples = spec.examples();
        assert!(examples.len() > 20, "only {} examples", examples.len());
        for (operation, pointer, schema, example) in examples {
            let binary = spec.resolve(schema).unwrap()["format"] == "binary";
            if binary && example.is_string() {
                continue;
            }
            spec.validate(schema, &example)
                .unwrap_or_else(|e| panic!("{operation} {pointer}: {e:?}"));
        }
    }
}
