//! What the API allows a browser on another origin, said once for the server's edge and the
//! mock: an app built against the mock must find the same rules on the server. Keys travel
//! in the `Authorization` header, never in cookies, so credentials are never allowed, and an
//! origin allowed as "any" is answered with a literal `*`.

/// `Access-Control-Allow-Methods` of a preflight.
pub const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// `Access-Control-Allow-Headers` of a preflight: the request headers the API reads.
pub const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id";
/// `Access-Control-Expose-Headers`: the response headers a page may read.
pub const EXPOSE_HEADERS: &str = "x-request-id, retry-after, content-disposition, idempotent-replayed";
/// `Access-Control-Max-Age` of a preflight, in seconds.
pub const MAX_AGE: &str = "600";
