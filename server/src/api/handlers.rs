//! The API's implementation: each operation of `api::ExportsApi`, run through `request`'s
//! wrappers (key, scope, time limit, log line).

use dropshot::{
    Body, EmptyScanParams, HttpResponseAccepted, HttpResponseCreated, HttpResponseDeleted,
    HttpResponseHeaders, HttpResponseOk, PaginationParams, Path, Query, RequestContext, ResultsPage,
    TypedBody, WhichPage,
};
use exports_spec::errors::{self, ErrorCode};
use exports_spec::webhook_url;
use http::Response;

use super::after_auth::AfterAuth;
use super::contract::ExportsApi;
use super::downloads::{export_view, file_response};
use super::error::{ApiError, ErrorDetail, DEPENDENCY_RETRY_AFTER_SECONDS};
use super::idempotency::{self, IdempotencyKeyHeader};
use super::params::*;
use super::readiness::{unreachable_dependencies, Health, HealthStatus, Readiness, ReadinessChecks};
use super::request::{authorized, public, Accepted, FileResponse, NoBody, SPEC};
use super::state::AppState;
use crate::db::exports::{self, CancelOutcome, Created, Idempotent, NewExport};
use crate::db::keys::{SCOPE_READ, SCOPE_WEBHOOKS, SCOPE_WRITE};
use crate::db::webhooks;
use crate::model::*;
use crate::storage::LinkProblem;
use crate::views;

/// Bounds of `Retry-After` when a user is at their limit of pending exports.
const RETRY_AFTER_BOUNDS: (u64, u64) = (1, 3600);

pub enum ExportsImpl {}

/// The contract, as the mock serves its own (`Spec::served`).
fn contract(path: &str) -> Result<FileResponse, ApiError> {
    let (media_type, body) = SPEC.served(path).ok_or_else(|| ApiError::not_found("Document"))?;
    Response::builder()
        .header(http::header::CONTENT_TYPE, media_type)
        .body(Body::with_content(body))
        .map(FileResponse)
        .map_err(ApiError::internal)
}

impl ExportsApi for ExportsImpl {
    type Context = AppState;

    async fn create_user_export(
        rqctx: RequestContext<AppState>,
        idempotency_key: IdempotencyKeyHeader,
        body: AfterAuth<TypedBody<Lenient<CreateUserExport>>>,
    ) -> Result<HttpResponseHeaders<HttpResponseAccepted<ExportAccepted>>, ApiError> {
        authorized(&rqctx, "createUserExport", SCOPE_WRITE, body, async |state, principal, request| {
            let key = idempotency_key.key().map_err(|d| ApiError::invalid_request(vec![d]))?;
            let filters = request.filters.clone().unwrap_or_default();
            let client = state.database().await?;
            let rows_total =
                state.matching_users.count(&client, &filters).await?;
            let rates = state.throughput.rates(&client).await;
            let answer = ExportAccepted {
                export_id: uuid::Uuid::new_v4(),
                status: ExportStatus::Pending,
                estimated_seconds: rates.seconds_for(request.format, rows_total),
            };
            let export = NewExport {
                id: answer.export_id,
                user_id: principal.user_id,
                request: &request,
                rows_total,
                limit: state.settings.max_pending_per_user,
            };
            let idempotent = key.map(|key| Idempotent {
                key,
                fingerprint: idempotency::fingerprint(&request),
                answer: &answer,
            });
            let created = exports::create(&client, export, idempotent)
                .await?;
            // Before the job is queued, so that its worker finds the trace to join.
            if let (Created::New, Some(origin)) = (&created, crate::telemetry::origin()) {
                if let Err(error) = exports::record_trace(&client, answer.export_id, &origin).await {
                    tracing::warn!(export_id = %answer.export_id, %error, "the export's trace was not recorded");
                }
            }
            drop(client);
            let replayed = match created {
                Created::New => None,
                Created::Replayed(first) => Some(first),
                Created::KeyReused => {
                    return Err(ApiError::new(
                        ErrorCode::IdempotencyKeyReused,
                        "This Idempotency-Key was used with a different request; use a fresh key for a new export.",
                    ))
                }
                Created::KeyInUse => {
                    return Err(ApiError::new(
                        ErrorCode::IdempotencyKeyInUse,
                        "A request with this Idempotency-Key is still being handled; retry a moment later.",
                    ))
                }
                Created::LimitReached(reached) => {
                    let soonest = reached
                        .active
                        .iter()
                        .map(|(format, rows_left)| rates.seconds_for(*format, *rows_left))
                        .min()
                        .unwrap_or(RETRY_AFTER_BOUNDS.0);
                    let retry_after = soonest.clamp(RETRY_AFTER_BOUNDS.0, RETRY_AFTER_BOUNDS.1);
                    return Err(ApiError::new(
                        ErrorCode::TooManyPendingExports,
                        format!(
                            "You already have {} pending exports, the limit per user; retry after {retry_after} seconds.",
                            reached.limit
                        ),
                    )
                    .with_retry_after(retry_after));
                }
            };
            if let Some(first) = replayed {
                return Ok(Accepted {
                    answer: first,
                    replayed: true,
                });
            }
            // The row is committed: if Redis fails now, the export stays pending and the
            // worker's sweeper re-queues it, so the request still succeeds.
            let export_id = answer.export_id;
            if let Err(error) = state.queue.enqueue(export_id, rows_total).await {
                tracing::warn!(%export_id, error = %format!("{error:#}"), "export recorded but not queued; the sweeper will queue it");
            }
            Ok(Accepted {
                answer,
                replayed: false,
            })
        })
        .await
        .map(Into::into)
    }

    async fn list_exports(
        rqctx: RequestContext<AppState>,
        query: AfterAuth<Query<PaginationParams<EmptyScanParams, ExportPageSelector>>>,
    ) -> Result<HttpResponseOk<ResultsPage<Export>>, ApiError> {
        authorized(
            &rqctx,
            "listExports",
            SCOPE_READ,
            NoBody,
            async |state, principal, ()| {
                let params = query.extract(&rqctx).await?.into_inner();
                let limit = rqctx.page_limit(&params).map_err(ApiError::from)?.get();
                let after = match &params.page {
                    WhichPage::First(_) => None,
                    WhichPage::Next(selector) => Some((selector.created_at, selector.id)),
                };
                let client = state.database().await?;
                let rows = exports::list(&client, principal.user_id, after, limit).await?;
                let rates = state.throughput.rates(&client).await;
                drop(client);
                let mut items = Vec::with_capacity(rows.len());
                for row in &rows {
                    items.push(export_view(state, row, &rates).await?);
                }
                // A short page is the last one: no token, so clients stop without an extra call.
                let full = items.len() == limit as usize;
                let mut page = ResultsPage::new(items, &EmptyScanParams {}, |export, _| ExportPageSelector {
                    created_at: export.created_at,
                    id: export.export_id,
                })
                .map_err(ApiError::from)?;
                if !full {
                    page.next_page = None;
                }
                Ok(HttpResponseOk(page))
            },
        )
        .await
    }

    async fn get_export(
        rqctx: RequestContext<AppState>,
        path: Path<ExportPath>,
    ) -> Result<HttpResponseOk<Export>, ApiError> {
        let path = path.into_inner();
        authorized(
            &rqctx,
            "getExport",
            SCOPE_READ,
            NoBody,
            async |state, principal, ()| {
                let id = path.id()?;
                let client = state.database().await?;
                let row = exports::get(&client, principal.user_id, id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("Export"))?;
                let rates = state.throughput.rates(&client).await;
                drop(client);
                Ok(HttpResponseOk(export_view(state, &row, &rates).await?))
            },
        )
        .await
    }

    async fn download_export(
        rqctx: RequestContext<AppState>,
        path: Path<ExportPath>,
    ) -> Result<Response<Body>, ApiError> {
        let path = path.into_inner();
        authorized(
            &rqctx,
            "downloadExport",
            SCOPE_READ,
            NoBody,
            async |state, principal, ()| {
                let id = path.id()?;
                let client = state.database().await?;
                let row = exports::get(&client, principal.user_id, id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("Export"))?;
                drop(client);
                file_response(state, &row).await
            },
        )
        .await
        .map(|FileResponse(response)| response)
    }

    async fn download_by_link(
        rqctx: RequestContext<AppState>,
        path: Path<ExportPath>,
        query: Query<DownloadLinkQuery>,
    ) -> Result<Response<Body>, ApiError> {
        let (path, query) = (path.into_inner(), query.into_inner());
        public(&rqctx, "downloadByLink", async |state| {
            let id = path.id()?;
            let (expires, signature) = query.parts()?;
            match state
                .storage
                .verify_served_link(id, expires, signature, chrono::Utc::now())
            {
                Ok(()) => {}
                Err(LinkProblem::BadSignature) => return Err(ApiError::of(errors::invalid_download_link())),
                Err(LinkProblem::Expired) => {
                    let at = chrono::DateTime::from_timestamp(expires, 0).unwrap_or_default();
                    return Err(ApiError::new(
                        ErrorCode::DownloadLinkExpired,
                        "This download link expired; get a fresh one from getExport.",
                    )
                    .with_details(vec![ErrorDetail::new(
                        "expires",
                        format!(
                            "the link expired at {}",
                            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ),
                    )]));
                }
            }
            let client = state.database().await?;
            let row = exports::get_whoever_owns(&client, id)
                .await?
                .ok_or_else(|| ApiError::not_found("Export"))?;
            drop(client);
            file_response(state, &row).await
        })
        .await
        .map(|FileResponse(response)| response)
    }

    async fn create_webhook_endpoint(
        rqctx: RequestContext<AppState>,
        body: AfterAuth<TypedBody<Lenient<CreateWebhookEndpoint>>>,
    ) -> Result<HttpResponseCreated<WebhookEndpointWithSecret>, ApiError> {
        authorized(
            &rqctx,
            "createWebhookEndpoint",
            SCOPE_WEBHOOKS,
            body,
            async |state, principal, request: CreateWebhookEndpoint| {
                let url = webhook_url::check(&state.settings.webhook_urls, &request.url)
                    .await
                    .map_err(|issue| ApiError::of(errors::webhook_url_refused(&issue)))?;
                let event_types = exports_spec::webhooks::each_once(
                    request
                        .event_types
                        .unwrap_or_else(|| WebhookEventType::ALL.to_vec()),
                );
                let secret = exports_spec::webhooks::new_secret();
                let client = state.database().await?;
                let row = webhooks::create(&client, principal.user_id, url.as_str(), &event_types, &secret)
                    .await?
                    .ok_or_else(|| {
                        ApiError::of(errors::too_many_webhook_endpoints(
                            exports_spec::webhooks::MAX_ENDPOINTS_PER_USER,
                        ))
                    })?;
                Ok(HttpResponseCreated(views::endpoint_with_secret(&row)))
            },
        )
        .await
    }

    async fn list_webhook_endpoints(
        rqctx: RequestContext<AppState>,
    ) -> Result<HttpResponseOk<WebhookEndpointList>, ApiError> {
        authorized(
            &rqctx,
            "listWebhookEndpoints",
            SCOPE_WEBHOOKS,
            NoBody,
            async |state, principal, ()| {
                let client = state.database().await?;
                let rows = webhooks::list(&client, principal.user_id).await?;
                Ok(HttpResponseOk(WebhookEndpointList {
                    items: rows.iter().map(views::endpoint).collect(),
                }))
            },
        )
        .await
    }

    async fn delete_webhook_endpoint(
        rqctx: RequestContext<AppState>,
        path: Path<EndpointPath>,
    ) -> Result<HttpResponseDeleted, ApiError> {
        let path = path.into_inner();
        authorized(
            &rqctx,
            "deleteWebhookEndpoint",
            SCOPE_WEBHOOKS,
            NoBody,
            async |state, principal, ()| {
                let id = path.id()?;
                let client = state.database().await?;
                match webhooks::delete(&client, principal.user_id, id).await? {
                    true => Ok(HttpResponseDeleted()),
                    false => Err(ApiError::not_found("Webhook endpoint")),
                }
            },
        )
        .await
    }

    async fn rotate_webhook_secret(
        rqctx: RequestContext<AppState>,
        path: Path<EndpointPath>,
    ) -> Result<HttpResponseOk<WebhookEndpointWithSecret>, ApiError> {
        let path = path.into_inner();
        authorized(
            &rqctx,
            "rotateWebhookSecret",
            SCOPE_WEBHOOKS,
            NoBody,
            async |state, principal, ()| {
                let id = path.id()?;
                let client = state.database().await?;
                webhooks::rotate_secret(
                    &client,
                    principal.user_id,
                    id,
                    &exports_spec::webhooks::new_secret(),
                )
                .await?
                .map(|row| HttpResponseOk(views::endpoint_with_secret(&row)))
                .ok_or_else(|| ApiError::not_found("Webhook endpoint"))
            },
        )
        .await
    }

    async fn list_webhook_deliveries(
        rqctx: RequestContext<AppState>,
        path: Path<EndpointPath>,
    ) -> Result<HttpResponseOk<WebhookDeliveryList>, ApiError> {
        let path = path.into_inner();
        authorized(
            &rqctx,
            "listWebhookDeliveries",
            SCOPE_WEBHOOKS,
            NoBody,
            async |state, principal, ()| {
                let id = path.id()?;
                let client = state.database().await?;
                webhooks::recent_deliveries(&client, principal.user_id, id)
                    .await?
                    .map(|items| HttpResponseOk(WebhookDeliveryList { items }))
                    .ok_or_else(|| ApiError::not_found("Webhook endpoint"))
            },
        )
        .await
    }

    async fn cancel_export(
        rqctx: RequestContext<AppState>,
        path: Path<ExportPath>,
    ) -> Result<HttpResponseOk<Export>, ApiError> {
        let path = path.into_inner();
        authorized(
            &rqctx,
            "cancelExport",
            SCOPE_WRITE,
            NoBody,
            async |state, principal, ()| {
                let id = path.id()?;
                let client = state.database().await?;
                match exports::cancel(&client, principal.user_id, id).await? {
                    CancelOutcome::Cancelled(row) => {
                        let rates = state.throughput.rates(&client).await;
                        Ok(HttpResponseOk(views::export(&row, &rates)))
                    }
                    CancelOutcome::AlreadyFinished(status) => {
                        Err(ApiError::of(errors::export_finished(status.as_str())))
                    }
                    CancelOutcome::NotFound => Err(ApiError::not_found("Export")),
                }
            },
        )
        .await
    }

    async fn liveness(rqctx: RequestContext<AppState>) -> Result<HttpResponseOk<Health>, ApiError> {
        public(&rqctx, "liveness", async |_| {
            Ok(HttpResponseOk(Health {
                status: HealthStatus::Ok,
            }))
        })
        .await
    }

    async fn open_api_yaml(rqctx: RequestContext<AppState>) -> Result<Response<Body>, ApiError> {
        public(&rqctx, "openApiYaml", async |_| contract("/openapi.yaml"))
            .await
            .map(|FileResponse(response)| response)
    }

    async fn open_api_json(rqctx: RequestContext<AppState>) -> Result<Response<Body>, ApiError> {
        public(&rqctx, "openApiJson", async |_| contract("/openapi.json"))
            .await
            .map(|FileResponse(response)| response)
    }

    async fn api_reference(rqctx: RequestContext<AppState>) -> Result<Response<Body>, ApiError> {
        public(&rqctx, "apiReference", async |_| contract("/docs"))
            .await
            .map(|FileResponse(response)| response)
    }

    async fn metrics(rqctx: RequestContext<AppState>) -> Result<Response<Body>, ApiError> {
        public(&rqctx, "metrics", async |state| {
            if state.settings.metrics_listen.is_some() {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    "Metrics are not served on this address.",
                ));
            }
            let text = state.metrics.render();
            Response::builder()
                .header(http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
                .body(Body::with_content(text))
                .map(FileResponse)
                .map_err(ApiError::internal)
        })
        .await
        .map(|FileResponse(response)| response)
    }

    async fn readiness(rqctx: RequestContext<AppState>) -> Result<HttpResponseOk<Readiness>, ApiError> {
        public(&rqctx, "readiness", async |state| {
            if state.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ApiError::shutting_down());
            }
            // Anyone may ask, so the dependencies are asked at most once a second.
            let failing = state
                .readiness
                .get_with((), unreachable_dependencies(state))
                .await;
            if !failing.is_empty() {
                return Err(ApiError::unavailable(failing, DEPENDENCY_RETRY_AFTER_SECONDS));
            }
            Ok(HttpResponseOk(Readiness {
                status: HealthStatus::Ok,
                checks: ReadinessChecks {
                    postgres: HealthStatus::Ok,
                    redis: HealthStatus::Ok,
                },
            }))
        })
        .await
    }
}
