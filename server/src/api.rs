//! The HTTP API as a dropshot API trait: the interface (from which `cargo xtask` builds the
//! OpenAPI document with no database) and, in `imp`, its implementation.

use dropshot::{
    Body, EmptyScanParams, HttpResponseAccepted, HttpResponseCreated, HttpResponseDeleted,
    HttpResponseHeaders, HttpResponseOk, PaginationParams, Path, Query, RequestContext, ResultsPage,
    TypedBody,
};
use http::Response;

use crate::after_auth::AfterAuth;
use crate::error::ApiError;
use crate::idempotency::IdempotencyKeyHeader;
use crate::model::{
    CreateUserExport, CreateWebhookEndpoint, DownloadLinkQuery, EndpointPath, Export, ExportAccepted,
    ExportPageSelector, ExportPath, Health, Lenient, Readiness, WebhookDeliveryList, WebhookEndpointList,
    WebhookEndpointWithSecret,
};

#[dropshot::api_description]
pub trait ExportsApi {
    type Context;

    /// Create a users export
    ///
    /// Validates the request, counts the matching users, records the export as `pending`,
    /// queues one job and answers 202. Needs the `exports:write` scope. With an
    /// `Idempotency-Key`, a retry gets the first answer again.
    #[endpoint {
        method = POST,
        path = "/api/v1/exports/users",
        operation_id = "createUserExport",
        tags = ["exports"],
    }]
    async fn create_user_export(
        rqctx: RequestContext<Self::Context>,
        idempotency_key: IdempotencyKeyHeader,
        body: AfterAuth<TypedBody<Lenient<CreateUserExport>>>,
    ) -> Result<HttpResponseHeaders<HttpResponseAccepted<ExportAccepted>>, ApiError>;

    /// List your exports
    ///
    /// The caller's own exports, newest first, a page at a time. Needs `exports:read`.
    #[endpoint {
        method = GET,
        path = "/api/v1/exports/users",
        operation_id = "listExports",
        tags = ["exports"],
    }]
    async fn list_exports(
        rqctx: RequestContext<Self::Context>,
        query: AfterAuth<Query<PaginationParams<EmptyScanParams, ExportPageSelector>>>,
    ) -> Result<HttpResponseOk<ResultsPage<Export>>, ApiError>;

    /// Get an export
    ///
    /// Status, progress, and a download link when done. Needs `exports:read`.
    #[endpoint {
        method = GET,
        path = "/api/v1/exports/users/{export_id}",
        operation_id = "getExport",
        tags = ["exports"],
    }]
    async fn get_export(
        rqctx: RequestContext<Self::Context>,
        path: Path<ExportPath>,
    ) -> Result<HttpResponseOk<Export>, ApiError>;

    /// Download an export's file
    ///
    /// Streams the finished file. Needs `exports:read`.
    #[endpoint {
        method = GET,
        path = "/api/v1/exports/users/{export_id}/download",
        operation_id = "downloadExport",
        tags = ["exports"],
    }]
    async fn download_export(
        rqctx: RequestContext<Self::Context>,
        path: Path<ExportPath>,
    ) -> Result<Response<Body>, ApiError>;

    /// Download a finished export through its link
    ///
    /// The target of `download_url` for files stored by the server itself: signed and
    /// short-lived, no API key.
    #[endpoint {
        method = GET,
        path = "/downloads/{export_id}",
        operation_id = "downloadByLink",
        tags = ["exports"],
    }]
    async fn download_by_link(
        rqctx: RequestContext<Self::Context>,
        path: Path<ExportPath>,
        query: Query<DownloadLinkQuery>,
    ) -> Result<Response<Body>, ApiError>;

    /// Cancel an export
    ///
    /// Stops a pending or processing export. Needs `exports:write`.
    #[endpoint {
        method = POST,
        path = "/api/v1/exports/users/{export_id}/cancel",
        operation_id = "cancelExport",
        tags = ["exports"],
    }]
    async fn cancel_export(
        rqctx: RequestContext<Self::Context>,
        path: Path<ExportPath>,
    ) -> Result<HttpResponseOk<Export>, ApiError>;

    /// Register a webhook endpoint
    ///
    /// Shows the endpoint's signing secret once. Needs `webhooks:manage`.
    #[endpoint {
        method = POST,
        path = "/api/v1/webhooks/endpoints",
        operation_id = "createWebhookEndpoint",
        tags = ["webhooks"],
    }]
    async fn create_webhook_endpoint(
        rqctx: RequestContext<Self::Context>,
        body: AfterAuth<TypedBody<Lenient<CreateWebhookEndpoint>>>,
    ) -> Result<HttpResponseCreated<WebhookEndpointWithSecret>, ApiError>;

    /// List your webhook endpoints
    ///
    /// Oldest first, without their secrets. Needs `webhooks:manage`.
    #[endpoint {
        method = GET,
        path = "/api/v1/webhooks/endpoints",
        operation_id = "listWebhookEndpoints",
        tags = ["webhooks"],
    }]
    async fn list_webhook_endpoints(
        rqctx: RequestContext<Self::Context>,
    ) -> Result<HttpResponseOk<WebhookEndpointList>, ApiError>;

    /// Delete a webhook endpoint
    ///
    /// It gets nothing more. Needs `webhooks:manage`.
    #[endpoint {
        method = DELETE,
        path = "/api/v1/webhooks/endpoints/{endpoint_id}",
        operation_id = "deleteWebhookEndpoint",
        tags = ["webhooks"],
    }]
    async fn delete_webhook_endpoint(
        rqctx: RequestContext<Self::Context>,
        path: Path<EndpointPath>,
    ) -> Result<HttpResponseDeleted, ApiError>;

    /// Rotate a webhook endpoint's signing secret
    ///
    /// Shows the new secret once. Needs `webhooks:manage`.
    #[endpoint {
        method = POST,
        path = "/api/v1/webhooks/endpoints/{endpoint_id}/rotate-secret",
        operation_id = "rotateWebhookSecret",
        tags = ["webhooks"],
    }]
    async fn rotate_webhook_secret(
        rqctx: RequestContext<Self::Context>,
        path: Path<EndpointPath>,
    ) -> Result<HttpResponseOk<WebhookEndpointWithSecret>, ApiError>;

    /// The endpoint's latest deliveries
    ///
    /// The 50 newest events sent to it, with their last attempts. Needs `webhooks:manage`.
    #[endpoint {
        method = GET,
        path = "/api/v1/webhooks/endpoints/{endpoint_id}/deliveries",
        operation_id = "listWebhookDeliveries",
        tags = ["webhooks"],
    }]
    async fn list_webhook_deliveries(
        rqctx: RequestContext<Self::Context>,
        path: Path<EndpointPath>,
    ) -> Result<HttpResponseOk<WebhookDeliveryList>, ApiError>;

    /// Liveness
    ///
    /// The process is up; touches no dependency.
    #[endpoint {
        method = GET,
        path = "/health/live",
        operation_id = "liveness",
        tags = ["health"],
    }]
    async fn liveness(rqctx: RequestContext<Self::Context>) -> Result<HttpResponseOk<Health>, ApiError>;

    /// Readiness
    ///
    /// PostgreSQL and Redis answer.
    #[endpoint {
        method = GET,
        path = "/health/ready",
        operation_id = "readiness",
        tags = ["health"],
    }]
    async fn readiness(rqctx: RequestContext<Self::Context>) -> Result<HttpResponseOk<Readiness>, ApiError>;

    /// Prometheus metrics
    ///
    /// The export jobs' metrics in Prometheus's text format.
    #[endpoint {
        method = GET,
        path = "/metrics",
        operation_id = "metrics",
        tags = ["monitoring"],
    }]
    async fn metrics(rqctx: RequestContext<Self::Context>) -> Result<Response<Body>, ApiError>;

    /// This contract, as YAML
    ///
    /// The OpenAPI document exactly as written.
    #[endpoint {
        method = GET,
        path = "/openapi.yaml",
        operation_id = "openApiYaml",
        tags = ["documentation"],
    }]
    async fn open_api_yaml(rqctx: RequestContext<Self::Context>) -> Result<Response<Body>, ApiError>;

    /// This contract, as JSON
    ///
    /// The same OpenAPI document, as JSON.
    #[endpoint {
        method = GET,
        path = "/openapi.json",
        operation_id = "openApiJson",
        tags = ["documentation"],
    }]
    async fn open_api_json(rqctx: RequestContext<Self::Context>) -> Result<Response<Body>, ApiError>;

    /// The API reference, as a page
    ///
    /// One self-contained HTML page rendered from the contract.
    #[endpoint {
        method = GET,
        path = "/docs",
        operation_id = "apiReference",
        tags = ["documentation"],
    }]
    async fn api_reference(rqctx: RequestContext<Self::Context>) -> Result<Response<Body>, ApiError>;
}

/// The API description without an implementation, for the OpenAPI document.
pub fn stub_description() -> dropshot::ApiDescription<dropshot::StubContext> {
    exports_api_mod::stub_api_description().expect("the API description is valid")
}

/// The OpenAPI document dropshot generates from the API trait (no database or Redis needed).
pub fn openapi_document() -> serde_json::Value {
    stub_description()
        .openapi("Exports API", semver::Version::new(1, 0, 0))
        .json()
        .expect("the OpenAPI document serialises")
}

pub mod imp {
    use std::time::Instant;

    use dropshot::{
        Body, EmptyScanParams, HttpResponseAccepted, HttpResponseCreated, HttpResponseDeleted,
        HttpResponseHeaders, HttpResponseOk, PaginationParams, Path, Query, RequestContext, ResultsPage,
        TypedBody, WhichPage,
    };
    use http::Response;

    use super::ExportsApi;
    use crate::after_auth::AfterAuth;
    use crate::app::{AppState, DEPENDENCY_RETRY_AFTER_SECONDS};
    use crate::auth::{self, Principal, SCOPE_READ, SCOPE_WEBHOOKS, SCOPE_WRITE};
    use crate::db::exports::{self, CancelOutcome, Created, Idempotent, NewExport};
    use crate::db::webhooks;
    use crate::error::{ApiError, ErrorDetail};
    use crate::idempotency::{self, IdempotencyKeyHeader};
    use crate::model::*;
    use crate::storage::LinkProblem;
    use crate::throughput::Rates;
    use bytes::Bytes;
    use exports_spec::errors;
    use exports_spec::webhook_url;
    use futures::{StreamExt, TryStreamExt};

    /// Largest page of `listExports`, also its default (dropshot's default when `limit` is absent).
    const MAX_PAGE_SIZE: u32 = 100;
    const READINESS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    /// Bounds of `Retry-After` when a user is at their limit of pending exports.
    const RETRY_AFTER_BOUNDS: (u64, u64) = (1, 3600);

    pub enum ExportsImpl {}

    /// What is wrong with the `limit` sent to `listExports`, if anything: checked before
    /// dropshot's extractor so that the issue quotes the value, as the mock's does.
    fn limit_problem(query: Option<&str>) -> Option<ErrorDetail> {
        let (_, text) = url::form_urlencoded::parse(query?.as_bytes()).find(|(name, _)| name == "limit")?;
        let sent = match text.parse::<i64>() {
            Ok(number) if (1..=i64::from(MAX_PAGE_SIZE)).contains(&number) => return None,
            Ok(number) => serde_json::Value::from(number),
            Err(_) => serde_json::Value::from(text.as_ref()),
        };
        Some(ErrorDetail::new(
            "limit",
            exports_spec::errors::issue::not_in_range(1, MAX_PAGE_SIZE.into(), &sent),
        ))
    }

    /// The request id: the edge's (an accepted incoming `X-Request-Id` or its own), else dropshot's.
    fn request_id(rqctx: &RequestContext<AppState>) -> String {
        rqctx
            .request
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| rqctx.request_id.clone())
    }

    /// Runs an operation for an authenticated caller holding `scope`: the time limit, the
    /// request id in errors, and the one log line per request.
    async fn authorized<T: SuccessStatus>(
        rqctx: &RequestContext<AppState>,
        operation: &'static str,
        scope: &'static str,
        run: impl AsyncFnOnce(&AppState, Principal) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let state = rqctx.context();
        let started = Instant::now();
        let request_id = request_id(rqctx);
        let mut user_id = None;
        let outcome = tokio::time::timeout(state.settings.request_timeout, async {
            let token = auth::bearer_token(rqctx.request.headers())?;
            state.rejected_keys.check(token)?;
            let client = state.database().await?;
            state.metrics.api_key_looked_up();
            let principal = auth::authenticate(&client, token).await.inspect_err(|error| {
                if error.status() == http::StatusCode::UNAUTHORIZED {
                    state.rejected_keys.remember(token);
                }
            })?;
            drop(client);
            user_id = Some(principal.user_id);
            principal.require(scope)?;
            run(state, principal).await
        })
        .await
        .unwrap_or_else(|_| Err(ApiError::timeout(state.settings.request_timeout.as_secs())));
        finish(outcome, &request_id, operation, user_id, started)
    }

    async fn public<T: SuccessStatus>(
        rqctx: &RequestContext<AppState>,
        operation: &'static str,
        run: impl AsyncFnOnce(&AppState) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let request_id = request_id(rqctx);
        let state = rqctx.context();
        let outcome = tokio::time::timeout(state.settings.request_timeout, run(state))
            .await
            .unwrap_or_else(|_| Err(ApiError::timeout(state.settings.request_timeout.as_secs())));
        finish(outcome, &request_id, operation, None, started)
    }

    /// The contract this server was built with.
    static SPEC: std::sync::LazyLock<exports_spec::Spec> =
        std::sync::LazyLock::new(exports_spec::Spec::bundled);

    /// The contract, as the mock serves its own (`Spec::served`).
    fn contract(path: &str) -> Result<FileResponse, ApiError> {
        let (media_type, body) = SPEC.served(path).ok_or_else(|| ApiError::not_found("Document"))?;
        Response::builder()
            .header(http::header::CONTENT_TYPE, media_type)
            .body(Body::with_content(body))
            .map(FileResponse)
            .map_err(ApiError::internal)
    }

    /// The status of a successful response, for the request log.
    trait SuccessStatus {
        fn status_code(&self) -> u16;
    }

    impl<T: dropshot::HttpCodedResponse> SuccessStatus for T {
        fn status_code(&self) -> u16 {
            T::STATUS_CODE.as_u16()
        }
    }

    /// A create's answer, and whether it is the replay of an earlier one.
    struct Accepted {
        answer: ExportAccepted,
        replayed: bool,
    }

    impl SuccessStatus for Accepted {
        fn status_code(&self) -> u16 {
            <HttpResponseAccepted<ExportAccepted> as dropshot::HttpCodedResponse>::STATUS_CODE.as_u16()
        }
    }

    impl From<Accepted> for HttpResponseHeaders<HttpResponseAccepted<ExportAccepted>> {
        fn from(Accepted { answer, replayed }: Accepted) -> Self {
            let mut response = HttpResponseHeaders::new_unnamed(HttpResponseAccepted(answer));
            if replayed {
                response.headers_mut().insert(
                    idempotency::REPLAYED_HEADER,
                    http::HeaderValue::from_static("true"),
                );
            }
            response
        }
    }

    /// A file download (a free-form response, which has no status of its own type).
    struct FileResponse(Response<Body>);

    impl SuccessStatus for FileResponse {
        fn status_code(&self) -> u16 {
            self.0.status().as_u16()
        }
    }

    fn finish<T: SuccessStatus>(
        outcome: Result<T, ApiError>,
        request_id: &str,
        operation: &'static str,
        user_id: Option<uuid::Uuid>,
        started: Instant,
    ) -> Result<T, ApiError> {
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let user_id = user_id.map(|id| id.to_string());
        match &outcome {
            Ok(response) => {
                let status = response.status_code();
                tracing::info!(request_id, operation, user_id, status, duration_ms, "request")
            }
            Err(error) if error.status().is_server_error() => tracing::error!(
                request_id, operation, user_id, status = error.status().as_u16(), duration_ms,
                error = %error, "request failed"
            ),
            Err(error) => tracing::info!(
                request_id, operation, user_id, status = error.status().as_u16(), duration_ms,
                code = %error.error.code, "request"
            ),
        }
        outcome.map_err(|error| error.with_request_id(request_id))
    }

    /// The file of a `done` export, streamed from storage; the errors of an export without one.
    async fn file_response(state: &AppState, row: &exports::ExportRow) -> Result<FileResponse, ApiError> {
        match row.status {
            ExportStatus::Pending
            | ExportStatus::Processing
            | ExportStatus::Failed
            | ExportStatus::Cancelled => Err(ApiError::of(
                dropshot::ErrorStatusCode::CONFLICT,
                errors::export_not_ready(row.status.as_str()),
            )),
            ExportStatus::Expired => Err(ApiError::of(
                dropshot::ErrorStatusCode::GONE,
                errors::export_expired(),
            )),
            ExportStatus::Done => {
                let key = row
                    .file_key
                    .as_deref()
                    .ok_or_else(|| ApiError::internal("a done export without a file"))?;
                let mut chunks = match state.storage.read(key).await {
                    Ok(chunks) => chunks,
                    Err(error) if is_not_found(&error) => {
                        // Deleted by the expiry sweep an instant ago.
                        return Err(ApiError::of(
                            dropshot::ErrorStatusCode::GONE,
                            errors::export_expired(),
                        ));
                    }
                    Err(error) => {
                        tracing::error!(error = %format!("{error:#}"), "file storage unreachable");
                        return Err(ApiError::unavailable(
                            vec![ErrorDetail::new("storage", "unreachable")],
                            DEPENDENCY_RETRY_AFTER_SECONDS,
                        ));
                    }
                };
                // The body is fed through a channel: the store's stream is not `Sync`, which
                // dropshot's body must be.
                let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
                tokio::spawn(async move {
                    while let Some(chunk) = chunks.next().await {
                        let chunk = chunk.map_err(std::io::Error::other);
                        if sender.send(chunk).await.is_err() {
                            break;
                        }
                    }
                });
                let frames = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
                    .map_ok(hyper::body::Frame::data);
                let mut response = Response::builder()
                    .header(http::header::CONTENT_TYPE, row.format.content_type())
                    .header(
                        http::header::CONTENT_DISPOSITION,
                        row.format.content_disposition(row.id),
                    );
                if let Some(size) = row.file_size_bytes {
                    response = response.header(http::header::CONTENT_LENGTH, size);
                }
                let response = response
                    .body(Body::wrap(http_body_util::StreamBody::new(frames)))
                    .map_err(ApiError::internal)?;
                Ok(FileResponse(response))
            }
        }
    }

    fn is_not_found(error: &anyhow::Error) -> bool {
        matches!(
            error.downcast_ref::<object_store::Error>(),
            Some(object_store::Error::NotFound { .. })
        )
    }

    /// The API view of an export, with a freshly minted download link when it is done.
    async fn export_view(
        state: &AppState,
        row: &exports::ExportRow,
        rates: &Rates,
    ) -> Result<Export, ApiError> {
        let mut export = row.to_api(rates);
        if let (ExportStatus::Done, Some(key)) = (row.status, row.file_key.as_deref()) {
            let link = state
                .storage
                .download_link(row.id, key, row.format, &state.public_url)
                .await
                .map_err(ApiError::internal)?;
            export.download_url = Some(link.url);
            export.download_expires_at = Some(link.expires_at);
        }
        Ok(export)
    }

    impl ExportsApi for ExportsImpl {
        type Context = AppState;

        async fn create_user_export(
            rqctx: RequestContext<AppState>,
            idempotency_key: IdempotencyKeyHeader,
            body: AfterAuth<TypedBody<Lenient<CreateUserExport>>>,
        ) -> Result<HttpResponseHeaders<HttpResponseAccepted<ExportAccepted>>, ApiError> {
            authorized(&rqctx, "createUserExport", SCOPE_WRITE, async |state, principal| {
                let body = body.extract(&rqctx).await?.into_inner();
                let (key, request) = match (idempotency_key.key(), validate_create_export(&body.value)) {
                    (Ok(key), Ok(request)) => (key, request),
                    (key, request) => {
                        let problems = key.err().into_iter().chain(request.err().into_iter().flatten());
                        return Err(ApiError::invalid_request(problems.collect()));
                    }
                };
                let filters = request.filters.clone().unwrap_or_default();
                let client = state.database().await?;
                let rows_total =
                    state.matching_users.count(&client, &filters).await.map_err(ApiError::internal)?;
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
                    .await
                    .map_err(ApiError::internal)?;
                drop(client);
                let replayed = match created {
                    Created::New => None,
                    Created::Replayed(first) => Some(first),
                    Created::KeyReused => {
                        return Err(ApiError::new(
                            dropshot::ErrorStatusCode::UNPROCESSABLE_ENTITY,
                            "idempotency_key_reused",
                            "This Idempotency-Key was used with a different request; use a fresh key for a new export.",
                        ))
                    }
                    Created::KeyInUse => {
                        return Err(ApiError::conflict(
                            "idempotency_key_in_use",
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
                            dropshot::ErrorStatusCode::TOO_MANY_REQUESTS,
                            "too_many_pending_exports",
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
                if let Err(error) = state.queue.enqueue(export_id).await {
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
            authorized(&rqctx, "listExports", SCOPE_READ, async |state, principal| {
                if let Some(problem) = limit_problem(rqctx.request.uri().query()) {
                    return Err(ApiError::invalid_request(vec![problem]));
                }
                let params = query.extract(&rqctx).await?.into_inner();
                let limit = rqctx.page_limit(&params).map_err(ApiError::from)?.get();
                let after = match &params.page {
                    WhichPage::First(_) => None,
                    WhichPage::Next(selector) => Some((selector.created_at, selector.id)),
                };
                let client = state.database().await?;
                let rows = exports::list(&client, principal.user_id, after, limit)
                    .await
                    .map_err(ApiError::internal)?;
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
            })
            .await
        }

        async fn get_export(
            rqctx: RequestContext<AppState>,
            path: Path<ExportPath>,
        ) -> Result<HttpResponseOk<Export>, ApiError> {
            let path = path.into_inner();
            authorized(&rqctx, "getExport", SCOPE_READ, async |state, principal| {
                let id = path.id().map_err(|d| ApiError::invalid_request(vec![d]))?;
                let client = state.database().await?;
                let row = exports::get(&client, principal.user_id, id)
                    .await
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::not_found("Export"))?;
                let rates = state.throughput.rates(&client).await;
                drop(client);
                Ok(HttpResponseOk(export_view(state, &row, &rates).await?))
            })
            .await
        }

        async fn download_export(
            rqctx: RequestContext<AppState>,
            path: Path<ExportPath>,
        ) -> Result<Response<Body>, ApiError> {
            let path = path.into_inner();
            authorized(&rqctx, "downloadExport", SCOPE_READ, async |state, principal| {
                let id = path.id().map_err(|d| ApiError::invalid_request(vec![d]))?;
                let client = state.database().await?;
                let row = exports::get(&client, principal.user_id, id)
                    .await
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::not_found("Export"))?;
                drop(client);
                file_response(state, &row).await
            })
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
                let id = path.id().map_err(|d| ApiError::invalid_request(vec![d]))?;
                let (expires, signature) = query.parts().map_err(ApiError::invalid_request)?;
                match state
                    .storage
                    .verify_served_link(id, expires, signature, chrono::Utc::now())
                {
                    Ok(()) => {}
                    Err(LinkProblem::BadSignature) => {
                        return Err(ApiError::of(
                            dropshot::ErrorStatusCode::FORBIDDEN,
                            errors::invalid_download_link(),
                        ))
                    }
                    Err(LinkProblem::Expired) => {
                        let at = chrono::DateTime::from_timestamp(expires, 0).unwrap_or_default();
                        return Err(ApiError::new(
                            dropshot::ErrorStatusCode::FORBIDDEN,
                            "download_link_expired",
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
                    .await
                    .map_err(ApiError::internal)?
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
                async |state, principal| {
                    let body = body.extract(&rqctx).await?.into_inner().value;
                    // The spec's schema checks the body, in the words the mock uses for it.
                    let schema = serde_json::json!({"$ref": "#/components/schemas/CreateWebhookEndpoint"});
                    let problems: Vec<ErrorDetail> = SPEC
                        .schema_problems(&schema, &body)
                        .into_iter()
                        .map(|p| p.detail("body"))
                        .collect();
                    if !problems.is_empty() {
                        return Err(ApiError::invalid_request(problems));
                    }
                    let request: CreateWebhookEndpoint = serde_json::from_value(body).map_err(|error| {
                        ApiError::invalid_request(vec![ErrorDetail::new("body", error.to_string())])
                    })?;
                    let url = webhook_url::check(&state.settings.webhook_urls, &request.url)
                        .await
                        .map_err(|issue| {
                            ApiError::of(
                                dropshot::ErrorStatusCode::UNPROCESSABLE_ENTITY,
                                errors::webhook_url_refused(&issue),
                            )
                        })?;
                    let event_types = exports_spec::webhooks::each_once(
                        request
                            .event_types
                            .unwrap_or_else(|| WebhookEventType::ALL.to_vec()),
                    );
                    let secret = exports_spec::webhooks::new_secret();
                    let client = state.database().await?;
                    let row =
                        webhooks::create(&client, principal.user_id, url.as_str(), &event_types, &secret)
                            .await
                            .map_err(ApiError::internal)?
                            .ok_or_else(|| {
                                ApiError::of(
                                    dropshot::ErrorStatusCode::CONFLICT,
                                    errors::too_many_webhook_endpoints(
                                        exports_spec::webhooks::MAX_ENDPOINTS_PER_USER,
                                    ),
                                )
                            })?;
                    Ok(HttpResponseCreated(row.to_api_with_secret()))
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
                async |state, principal| {
                    let client = state.database().await?;
                    let rows = webhooks::list(&client, principal.user_id)
                        .await
                        .map_err(ApiError::internal)?;
                    Ok(HttpResponseOk(WebhookEndpointList {
                        items: rows.iter().map(webhooks::EndpointRow::to_api).collect(),
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
                async |state, principal| {
                    let id = path.id().map_err(|d| ApiError::invalid_request(vec![d]))?;
                    let client = state.database().await?;
                    match webhooks::delete(&client, principal.user_id, id)
                        .await
                        .map_err(ApiError::internal)?
                    {
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
                async |state, principal| {
                    let id = path.id().map_err(|d| ApiError::invalid_request(vec![d]))?;
                    let client = state.database().await?;
                    webhooks::rotate_secret(
                        &client,
                        principal.user_id,
                        id,
                        &exports_spec::webhooks::new_secret(),
                    )
                    .await
                    .map_err(ApiError::internal)?
                    .map(|row| HttpResponseOk(row.to_api_with_secret()))
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
                async |state, principal| {
                    let id = path.id().map_err(|d| ApiError::invalid_request(vec![d]))?;
                    let client = state.database().await?;
                    webhooks::recent_deliveries(&client, principal.user_id, id)
                        .await
                        .map_err(ApiError::internal)?
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
            authorized(&rqctx, "cancelExport", SCOPE_WRITE, async |state, principal| {
                let id = path.id().map_err(|d| ApiError::invalid_request(vec![d]))?;
                let client = state.database().await?;
                match exports::cancel(&client, principal.user_id, id)
                    .await
                    .map_err(ApiError::internal)?
                {
                    CancelOutcome::Cancelled(row) => {
                        let rates = state.throughput.rates(&client).await;
                        Ok(HttpResponseOk(row.to_api(&rates)))
                    }
                    CancelOutcome::AlreadyFinished(status) => Err(ApiError::of(
                        dropshot::ErrorStatusCode::CONFLICT,
                        errors::export_finished(status.as_str()),
                    )),
                    CancelOutcome::NotFound => Err(ApiError::not_found("Export")),
                }
            })
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
                        dropshot::ErrorStatusCode::NOT_FOUND,
                        "not_found",
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
                // Anyone may ask, so the dependencies are asked at most once a second.
                let failing = state.readiness.get(unreachable_dependencies(state)).await;
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

    /// The dependencies that do not answer, each check bounded so that readiness answers
    /// quickly when one hangs.
    async fn unreachable_dependencies(state: &AppState) -> Vec<ErrorDetail> {
        let postgres = tokio::time::timeout(READINESS_CHECK_TIMEOUT, async {
            let client = state.pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok::<_, anyhow::Error>(())
        });
        let redis = tokio::time::timeout(READINESS_CHECK_TIMEOUT, state.queue.ping());
        let (postgres, redis) = tokio::join!(postgres, redis);
        let mut failing = Vec::new();
        for (name, outcome) in [("postgres", postgres), ("redis", redis)] {
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => format!("{error:#}"),
                Err(_) => "timed out".to_string(),
            };
            // The cause goes to the log; this endpoint needs no key, so it names no hosts.
            tracing::warn!(dependency = name, %error, "readiness check failed");
            failing.push(ErrorDetail::new(name, "unreachable"));
        }
        failing
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_describes_what_the_server_sends() {
        let document = super::openapi_document();
        let schemas = &document["components"]["schemas"];
        let rows = &schemas["ExportProgress"]["properties"]["rows_total"];
        assert_eq!(
            (rows["type"].as_str(), rows["format"].as_str()),
            (Some("integer"), Some("int64"))
        );
        assert_eq!(rows["minimum"], 0.0);
        let remaining = &schemas["ExportProgress"]["properties"]["estimated_seconds_remaining"];
        assert_eq!(remaining["nullable"], true);
        let url = &schemas["Export"]["properties"]["download_url"];
        assert_eq!(
            (url["format"].as_str(), url["nullable"].as_bool()),
            (Some("uri"), Some(true))
        );
        // Fields left out when empty are optional, not nullable.
        let filters = &schemas["UserExportFilters"]["properties"]["created_after"];
        assert!(filters.get("nullable").is_none(), "{filters}");
        let body =
            &document["paths"]["/api/v1/exports/users"]["post"]["requestBody"]["content"]["application/json"];
        assert_eq!(body["schema"]["$ref"], "#/components/schemas/CreateUserExport");
    }
}
