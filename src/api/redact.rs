//! Secrets out of the log: players that cannot send an Authorization header put their token in
//! the URL (`?token=`), and the request spans log URLs. Values of token-bearing query parameters
//! are replaced before anything is logged; headers are never logged.

use axum::http::{Request, Uri};
use tracing::Span;

/// Query parameters whose values are credentials.
const SECRET_PARAMS: &[&str] = &["token", "access_token", "refresh_token", "jwt"];

/// The path and query of `uri` with the values of [`SECRET_PARAMS`] replaced by `REDACTED`
/// (the query is decoded and encoded again, so `%74oken=` is caught as `token=`).
pub fn uri(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_string();
    };
    let pairs = form_urlencoded::parse(query.as_bytes()).map(|(name, value)| {
        let secret = SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str());
        let value = if secret { "REDACTED".into() } else { value };
        (name, value)
    });
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{path}?{query}")
}

/// The request span of the trace layer: tower-http's default fields (method, uri, version), the
/// URI redacted, and no headers.
pub fn request_span<B>(request: &Request<B>) -> Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %uri(request.uri()),
        version = ?request.version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(s: &str) -> String {
        uri(&s.parse::<Uri>().unwrap())
    }

    #[test]
    fn token_values_are_replaced() {
        assert_eq!(
            redact("/whep/cam?token=SECRET&x=1"),
            "/whep/cam?token=REDACTED&x=1"
        );
        assert_eq!(
            redact("/whep/cam?a=1&%74oken=SECRET"),
            "/whep/cam?a=1&token=REDACTED"
        );
        assert_eq!(redact("/x?TOKEN=SECRET"), "/x?TOKEN=REDACTED");
        assert_eq!(
            redact("/x?access_token=S&jwt=S"),
            "/x?access_token=REDACTED&jwt=REDACTED"
        );
        assert_eq!(redact("/x?tokenish=keep"), "/x?tokenish=keep");
        assert_eq!(redact("/x"), "/x");
        assert!(!redact("/x?token=SECRET&token=SECRET2").contains("SECRET"));
    }
}
