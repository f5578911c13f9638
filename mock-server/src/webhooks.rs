//! The webhook endpoints of the stateful mode and their deliveries, so that a team can build
//! its receiver before the backend exists: when a mock export finishes or is cancelled, each
//! endpoint its owner registered for that event gets it, signed, sent and tried again as the
//! server does (`exports_spec::webhooks`), and `listWebhookDeliveries` shows the attempts.
//! Unlike the server's default, `http` and private addresses are allowed, as in its `dev`:
//! the mock runs beside the receivers under development.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use exports_spec::errors;
use exports_spec::webhook_url::{self, UrlPolicy};
use exports_spec::webhooks::{self, Attempt, Event, Retries, EVENT_TYPES};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::outcome::Outcome;

/// Deleted endpoints kept per caller, for their deliveries (the oldest are forgotten first).
const KEPT_DELETED: usize = 10;

pub struct Webhooks {
    /// By caller (bearer token), oldest first.
    endpoints: Mutex<HashMap<String, Vec<Endpoint>>>,
    /// Made on the first delivery: a mock that delivers nothing keeps no TLS roots in memory.
    http: OnceLock<Result<reqwest::Client, String>>,
    policy: UrlPolicy,
    retries: Retries,
    /// Stops deliveries waiting to be tried again when the mock shuts down.
    stopped: watch::Receiver<bool>,
}

struct Endpoint {
    id: Uuid,
    url: String,
    event_types: Vec<String>,
    created_at: DateTime<Utc>,
    secret: String,
    deleted: bool,
    /// Newest first, at most `webhooks::RECENT_DELIVERIES`.
    deliveries: VecDeque<Delivery>,
    /// Attempts still to fail without being sent (the sandbox's `/__mock/failing-deliveries`).
    failing: u32,
}

impl Endpoint {
    fn view(&self) -> Value {
        json!({
            "endpoint_id": self.id,
            "url": self.url,
            "event_types": self.event_types,
            "created_at": self.created_at.to_rfc3339(),
        })
    }

    fn view_with_secret(&self) -> Value {
        let mut view = self.view();
        view["secret"] = Value::from(self.secret.as_str());
        view
    }
}

struct Delivery {
    id: Uuid,
    event_type: &'static str,
    occurred_at: DateTime<Utc>,
    status: &'static str,
    attempts: u32,
    last_attempt_at: Option<DateTime<Utc>>,
    last_response_status: Option<u16>,
    last_error: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
}

impl Delivery {
    fn view(&self) -> Value {
        json!({
            "delivery_id": self.id,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.to_rfc3339(),
            "status": self.status,
            "attempts": self.attempts,
            "last_attempt_at": self.last_attempt_at.map(|t| t.to_rfc3339()),
            "last_response_status": self.last_response_status,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at.map(|t| t.to_rfc3339()),
        })
    }
}

/// The webhook operations' part of a request.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub operation_id: &'a str,
    pub owner: &'a str,
    pub endpoint_id: Option<&'a str>,
    /// Checked against the spec already.
    pub body: Option<&'a Value>,
}

/// The operationId of the create, the one operation that looks up no endpoint.
const CREATE: &str = "createWebhookEndpoint";

/// The webhooks operations on the caller's endpoints.
#[derive(Clone, Copy)]
enum OnEndpoints {
    List,
    Delete,
    Rotate,
    Deliveries,
}

impl OnEndpoints {
    fn of(operation_id: &str) -> Option<Self> {
        Some(match operation_id {
            "listWebhookEndpoints" => Self::List,
            "deleteWebhookEndpoint" => Self::Delete,
            "rotateWebhookSecret" => Self::Rotate,
            "listWebhookDeliveries" => Self::Deliveries,
            _ => return None,
        })
    }
}

fn not_found() -> Outcome {
    Outcome::Error(404, errors::not_found("Webhook endpoint"))
}

impl Webhooks {
    /// Whether `handle` answers this operation.
    pub fn answers(operation_id: &str) -> bool {
        operation_id == CREATE || OnEndpoints::of(operation_id).is_some()
    }

    pub fn new(retries: Retries, stopped: watch::Receiver<bool>) -> Self {
        Self {
            endpoints: Mutex::default(),
            http: OnceLock::new(),
            policy: UrlPolicy {
                allow_private: true,
                ..UrlPolicy::default()
            },
            retries,
            stopped,
        }
    }

    fn http(&self) -> Result<&reqwest::Client, String> {
        let user_agent = concat!("exports-mock-webhooks/", env!("CARGO_PKG_VERSION"));
        self.http
            .get_or_init(|| webhooks::client(&self.policy, user_agent).map_err(|error| format!("{error:#}")))
            .as_ref()
            .map_err(|error| format!("no HTTP client: {error}"))
    }

    /// Handles the webhook operations by their operationId; `None` for any other operation.
    pub async fn handle(&self, call: &Call<'_>) -> Option<Outcome> {
        let Call {
            operation_id,
            owner,
            endpoint_id,
            body,
        } = *call;
        if operation_id == CREATE {
            return Some(self.create(owner, body?).await);
        }
        let operation = OnEndpoints::of(operation_id)?;
        let endpoint_id = endpoint_id.and_then(|id| Uuid::parse_str(id).ok());
        let mut endpoints = self.endpoints.lock().expect("webhooks lock");
        let mine = endpoints.entry(owner.to_string()).or_default();
        let found = mine.iter_mut().find(|e| Some(e.id) == endpoint_id);
        Some(match operation {
            OnEndpoints::List => {
                let items: Vec<Value> = mine.iter().filter(|e| !e.deleted).map(Endpoint::view).collect();
                Outcome::Json(200, json!({ "items": items }))
            }
            OnEndpoints::Delete => match found {
                Some(endpoint) if !endpoint.deleted => {
                    endpoint.deleted = true;
                    let deleted = mine.iter().filter(|e| e.deleted).count();
                    if deleted > KEPT_DELETED {
                        let oldest = mine.iter().position(|e| e.deleted).expect("counted");
                        mine.remove(oldest);
                    }
                    Outcome::NoContent
                }
                _ => not_found(),
            },
            OnEndpoints::Rotate => match found {
                Some(endpoint) if !endpoint.deleted => {
                    endpoint.secret = webhooks::new_secret();
                    Outcome::Json(200, endpoint.view_with_secret())
                }
                _ => not_found(),
            },
            // A deleted endpoint's last deliveries still explain what happened, as on the server.
            OnEndpoints::Deliveries => match found {
                Some(endpoint) => {
                    let items: Vec<Value> = endpoint.deliveries.iter().map(Delivery::view).collect();
                    Outcome::Json(200, json!({ "items": items }))
                }
                None => not_found(),
            },
        })
    }

    async fn create(&self, owner: &str, body: &Value) -> Outcome {
        let url = body.get("url").and_then(Value::as_str).unwrap_or_default();
        let url = match webhook_url::check(&self.policy, url).await {
            Ok(url) => url,
            Err(issue) => return Outcome::Error(422, errors::webhook_url_refused(&issue)),
        };
        let asked: Vec<&str> = match body.get("event_types").and_then(Value::as_array) {
            Some(asked) => asked.iter().filter_map(Value::as_str).collect(),
            None => EVENT_TYPES.to_vec(),
        };
        let event_types: Vec<String> = webhooks::each_once(asked).into_iter().map(String::from).collect();
        let mut endpoints = self.endpoints.lock().expect("webhooks lock");
        let mine = endpoints.entry(owner.to_string()).or_default();
        if mine.iter().filter(|e| !e.deleted).count() >= webhooks::MAX_ENDPOINTS_PER_USER {
            return Outcome::Error(
                409,
                errors::too_many_webhook_endpoints(webhooks::MAX_ENDPOINTS_PER_USER),
            );
        }
        let endpoint = Endpoint {
            id: Uuid::new_v4(),
            url: url.to_string(),
            event_types,
            created_at: Utc::now(),
            secret: webhooks::new_secret(),
            deleted: false,
            deliveries: VecDeque::new(),
            failing: 0,
        };
        let view = endpoint.view_with_secret();
        mine.push(endpoint);
        Outcome::Json(201, view)
    }

    /// Sends the event to each endpoint of `owner` registered for it, each delivery tried until
    /// it is taken, given up, or its endpoint deleted. The export is rendered only when some
    /// endpoint takes the event.
    pub fn announce(
        self: &Arc<Self>,
        owner: &str,
        event_type: &'static str,
        occurred_at: DateTime<Utc>,
        export: impl FnOnce() -> Value,
    ) {
        let mut endpoints = self.endpoints.lock().expect("webhooks lock");
        let mut takers = endpoints
            .get_mut(owner)
            .into_iter()
            .flatten()
            .filter(|e| !e.deleted && e.event_types.iter().any(|t| t == event_type))
            .peekable();
        if takers.peek().is_none() {
            return;
        }
        let body = Arc::new(webhooks::event_body(event_type, occurred_at, &export()));
        for endpoint in takers {
            let delivery = Delivery {
                id: Uuid::new_v4(),
                event_type,
                occurred_at,
                status: "pending",
                attempts: 0,
                last_attempt_at: None,
                last_response_status: None,
                last_error: None,
                delivered_at: None,
            };
            let target = Target {
                owner: owner.to_string(),
                endpoint_id: endpoint.id,
                delivery_id: delivery.id,
            };
            endpoint.deliveries.push_front(delivery);
            endpoint.deliveries.truncate(webhooks::RECENT_DELIVERIES);
            tokio::spawn(self.clone().deliver(target, body.clone()));
        }
    }

    async fn deliver(self: Arc<Self>, target: Target, body: Arc<Vec<u8>>) {
        let started = Instant::now();
        let id = target.delivery_id.to_string();
        let mut stopped = self.stopped.clone();
        for attempt in 1.. {
            // The endpoint as it is now: a rotated secret signs the next attempt.
            let failed = |error: String| Attempt::Failed { status: None, error };
            let outcome = match (self.endpoint(&target), self.http()) {
                _ if self.fails_on_purpose(&target) => failed(SANDBOX_FAILURE.to_string()),
                (Some((url, secret)), Ok(http)) => {
                    let event = Event { id: &id, body: &body };
                    webhooks::attempt(http, &self.policy, &url, &secret, &event).await
                }
                (None, _) => failed("the endpoint was deleted".to_string()),
                (_, Err(error)) => failed(error),
            };
            let retry_in = match &outcome {
                Attempt::Delivered(_) => None,
                Attempt::Failed { .. } if self.endpoint(&target).is_none() => None,
                Attempt::Failed { .. } => self.retries.after(attempt, started.elapsed()),
            };
            tracing::info!(delivery_id = %target.delivery_id, endpoint_id = %target.endpoint_id, attempt, outcome = ?outcome, retry_in_ms = retry_in.map(|d| d.as_millis() as u64), "webhook attempt");
            if !self.record(&target, attempt, outcome, retry_in.is_some()) {
                return;
            }
            let Some(retry_in) = retry_in else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = stopped.changed() => return,
            }
        }
    }

    /// Makes the next `count` attempts to deliver to the endpoint `endpoint_id` fail without
    /// being sent (the sandbox); false when no endpoint has that id.
    pub fn fail_next(&self, endpoint_id: Uuid, count: u32) -> bool {
        let mut endpoints = self.endpoints.lock().expect("webhooks lock");
        let endpoint = (endpoints.values_mut().flatten()).find(|e| e.id == endpoint_id && !e.deleted);
        match endpoint {
            Some(endpoint) => {
                endpoint.failing += count;
                true
            }
            None => false,
        }
    }

    /// Whether this attempt is one the sandbox asked to fail (counting it).
    fn fails_on_purpose(&self, target: &Target) -> bool {
        let mut endpoints = self.endpoints.lock().expect("webhooks lock");
        let endpoint =
            (endpoints.get_mut(&target.owner).into_iter().flatten()).find(|e| e.id == target.endpoint_id);
        match endpoint {
            Some(endpoint) if endpoint.failing > 0 => {
                endpoint.failing -= 1;
                true
            }
            _ => false,
        }
    }

    /// Forgets every endpoint and its deliveries (the sandbox's reset); a delivery under way
    /// is not tried again.
    pub fn reset(&self) {
        self.endpoints.lock().expect("webhooks lock").clear();
    }

    /// The URL and secret of the delivery's endpoint, unless it was deleted.
    fn endpoint(&self, target: &Target) -> Option<(String, String)> {
        let endpoints = self.endpoints.lock().expect("webhooks lock");
        endpoints
            .get(&target.owner)?
            .iter()
            .find(|e| e.id == target.endpoint_id && !e.deleted)
            .map(|e| (e.url.clone(), e.secret.clone()))
    }

    /// Records an attempt; false when the delivery is no longer kept (pushed out by newer
    /// ones, or its endpoint forgotten), and so not tried again.
    fn record(&self, target: &Target, attempt: u32, outcome: Attempt, again: bool) -> bool {
        let mut endpoints = self.endpoints.lock().expect("webhooks lock");
        let Some(delivery) = endpoints
            .get_mut(&target.owner)
            .and_then(|mine| mine.iter_mut().find(|e| e.id == target.endpoint_id))
            .and_then(|endpoint| {
                endpoint
                    .deliveries
                    .iter_mut()
                    .find(|d| d.id == target.delivery_id)
            })
        else {
            return false;
        };
        let now = Utc::now();
        delivery.attempts = attempt;
        delivery.last_attempt_at = Some(now);
        match outcome {
            Attempt::Delivered(status) => {
                delivery.status = "delivered";
                delivery.last_response_status = Some(status);
                delivery.last_error = None;
                delivery.delivered_at = Some(now);
            }
            Attempt::Failed { status, error } => {
                delivery.status = if again { "pending" } else { "failed" };
                delivery.last_response_status = status;
                delivery.last_error = Some(error);
            }
        }
        true
    }
}

/// The error of an attempt the sandbox made fail.
const SANDBOX_FAILURE: &str = "failed on purpose by the mock's sandbox (/__mock/failing-deliveries)";

/// One delivery, by where it is kept.
struct Target {
    owner: String,
    endpoint_id: Uuid,
    delivery_id: Uuid,
}
