//! The HTTP API as a dropshot API trait: the interface, from which `cargo xtask` builds the
//! OpenAPI document with no database. Its implementation is `handlers`.

use dropshot::{
    Body, EmptyScanParams, HttpResponseAccepted, HttpResponseCreated, HttpResponseDeleted,
    HttpResponseHeaders, HttpResponseOk, PaginationParams, Path, Query, RequestContext, ResultsPage,
    TypedBody,
};
use http::Response;

use super::after_auth::AfterAuth;
use super::error::ApiError;
use super::idempotency::IdempotencyKeyHeader;
use super::params::{DownloadLinkQuery, EndpointPath, ExportPageSelector, ExportPath, Lenient};
use super::readiness::{Health, Readiness};
use crate::model::{
    CreateUserExport, CreateWebhookEndpoint, Export, ExportAccepted, WebhookDeliveryList,
    WebhookEndpointList, WebhookEndpointWithSecret,
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
fn stub_description() -> dropshot::ApiDescription<dropshot::StubContext> {
    exports_api_mod::stub_api_description().expect("the API description is valid")
}

/// The OpenAPI document dropshot generates from the API trait (no database or Redis needed).
pub fn openapi_document() -> serde_json::Value {
    stub_description()
        .openapi("Exports API", semver::Version::new(1, 0, 0))
        .json()
        .expect("the OpenAPI document serialises")
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
