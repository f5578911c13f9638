//! Extraction after authentication. dropshot runs an endpoint's extractors before its handler,
//! so a malformed body or query would get a `400` describing the API before the key is looked
//! at. `AfterAuth<E>` takes the request as it is and runs the extractor `E` only when the
//! handler asks, after `authorized` has checked the key; the OpenAPI document is still `E`'s.

use std::marker::PhantomData;

use dropshot::{
    ApiEndpointBodyContentType, ExclusiveExtractor, ExtractorMetadata, HttpError, RequestContext,
    ServerContext,
};

use super::error::ApiError;

pub struct AfterAuth<E> {
    request: hyper::Request<dropshot::Body>,
    _extractor: PhantomData<fn() -> E>,
}

#[async_trait::async_trait]
impl<E: ExclusiveExtractor + 'static> ExclusiveExtractor for AfterAuth<E> {
    async fn from_request<Context: ServerContext>(
        _rqctx: &RequestContext<Context>,
        request: hyper::Request<dropshot::Body>,
    ) -> Result<Self, HttpError> {
        Ok(Self {
            request,
            _extractor: PhantomData,
        })
    }

    fn metadata(body_content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        E::metadata(body_content_type)
    }
}

impl<E: ExclusiveExtractor> AfterAuth<E> {
    /// Runs the extractor; its error becomes the envelope's, as it would have been before
    /// the handler (`From<HttpError>`: field-level details, 413 for a body over the limit).
    pub async fn extract<Context: ServerContext>(
        self,
        rqctx: &RequestContext<Context>,
    ) -> Result<E, ApiError> {
        Ok(E::from_request(rqctx, self.request).await?)
    }
}
