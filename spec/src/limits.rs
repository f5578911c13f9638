//! The limits on a request head that the spec documents for every path ("Request heads are
//! limited on every path"): past them the answer is `414 uri_too_long` or
//! `431 request_header_fields_too_large`, in the envelope. nginx's and Node's orders of
//! magnitude. Heads far past them never reach a handler: the listener refuses those itself
//! (`errors::refused_head`) and closes the connection.

use http::{Request, StatusCode};

use crate::errors::{ErrorBody, ErrorCode};

/// The longest request target, as sent (path and query).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// The most bytes of header fields, each counted as `name: value` and a line break.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most header fields. It leaves room below the 100 that dropshot's hyper takes for what
/// the server's edge adds (`X-Request-Id`).
pub const MAX_HEADER_FIELDS: usize = 96;

/// The refusal of a request head past the limits, if it is: its status and envelope.
pub fn oversized_head<B>(request: &Request<B>) -> Option<(StatusCode, ErrorBody)> {
    let target = request.uri().to_string().len();
    if target > MAX_TARGET_BYTES {
        let code = ErrorCode::UriTooLong;
        return Some((
            code.status(),
            ErrorBody::new(
                code,
                format!("The request target is {target} bytes long: the limit is {MAX_TARGET_BYTES}."),
            ),
        ));
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (headers.len() > MAX_HEADER_FIELDS || bytes > MAX_HEADER_BYTES).then(|| {
        let code = ErrorCode::RequestHeaderFieldsTooLarge;
        let message = format!(
            "The request has {} header fields of {bytes} bytes in all: the limits are {MAX_HEADER_FIELDS} fields and {MAX_HEADER_BYTES} bytes.",
            headers.len()
        );
        (code.status(), ErrorBody::new(code, message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_limited_in_fields_bytes_and_target() {
        let request = |fields: usize, value: usize, target: usize| {
            let mut builder = Request::get(format!("/{}", "a".repeat(target - 1)));
            for i in 0..fields {
                let value = if i == 0 { "v".repeat(value) } else { String::new() };
                builder = builder.header(format!("x-{i:03}"), value);
            }
            builder.body(()).unwrap()
        };
        let status = |request: Request<()>| oversized_head(&request).map(|(status, _)| status.as_u16());
        assert_eq!(status(request(MAX_HEADER_FIELDS, 0, 1)), None);
        assert_eq!(status(request(MAX_HEADER_FIELDS + 1, 0, 1)), Some(431));
        // One field: "x-000: " and a line break is 9 bytes beside its value.
        assert_eq!(status(request(1, MAX_HEADER_BYTES - 9, 1)), None);
        assert_eq!(status(request(1, MAX_HEADER_BYTES - 8, 1)), Some(431));
        assert_eq!(status(request(0, 0, MAX_TARGET_BYTES)), None);
        assert_eq!(status(request(0, 0, MAX_TARGET_BYTES + 1)), Some(414));
        let (_, body) = oversized_head(&request(0, 0, MAX_TARGET_BYTES + 1)).unwrap();
        assert_eq!(body.code, "uri_too_long");
        assert_eq!(
            body.message,
            "The request target is 8193 bytes long: the limit is 8192."
        );
    }
}
