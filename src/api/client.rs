//! Who is asking: whether a request comes from this machine, and whether a browser sent it on
//! behalf of another site.
//!
//! With no credentials configured the control API answers only this machine (docs/security.md).
//! "This machine" means both a loopback peer address and a loopback `Host`: a page on another
//! site that rebinds its DNS name to 127.0.0.1 reaches us from a loopback peer, but with its own
//! name in `Host` and `Origin`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

/// What the server knows about the client of a request.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// Loopback peer and loopback `Host`.
    pub local: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client {
            local: is_local(&parts.extensions, &parts.headers),
        })
    }
}

/// A loopback peer that named a loopback host. A request whose peer is unknown is not local.
pub fn is_local(extensions: &axum::http::Extensions, headers: &HeaderMap) -> bool {
    let peer_is_loopback = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| is_loopback(peer.ip()));
    peer_is_loopback
        && headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(host_is_loopback)
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `localhost`, `*.localhost` or a loopback address, with or without a port.
fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// Whether a browser sent the request from a page of another site than the one it names in
/// `Host`, and that site is not one of `allowed` (`http.cors_origins`). Requests without `Origin`
/// (curl, FFmpeg, server-side clients) are not cross-site.
pub fn is_foreign_origin(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return false;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let own = origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
    !own
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn local(peer: &str, host: Option<&str>) -> bool {
        let mut extensions = axum::http::Extensions::new();
        extensions.insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        is_local(&extensions, &headers)
    }

    #[test]
    fn loopback_peer_and_host() {
        assert!(local("127.0.0.1:5000", Some("localhost:8080")));
        assert!(local("127.0.0.1:5000", Some("127.0.0.1:8080")));
        assert!(local("[::1]:5000", Some("[::1]:8080")));
        assert!(local("[::ffff:127.0.0.1]:5000", Some("localhost")));
        assert!(!local("192.168.1.20:5000", Some("localhost:8080")));
        assert!(!local("127.0.0.1:5000", Some("evil.example:8080")));
        assert!(!local("127.0.0.1:5000", None));
        assert!(!is_local(&axum::http::Extensions::new(), &HeaderMap::new()));
    }

    #[test]
    fn foreign_origins() {
        let headers = |origin: &str, host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            h
        };
        let none: Vec<String> = vec![];
        assert!(!is_foreign_origin(
            &headers("http://localhost:8080", "localhost:8080"),
            &none
        ));
        assert!(is_foreign_origin(
            &headers("http://evil.example", "localhost:8080"),
            &none
        ));
        let allowed = vec!["http://ui.example".to_string()];
        assert!(!is_foreign_origin(
            &headers("http://ui.example", "localhost:8080"),
            &allowed
        ));
        assert!(!is_foreign_origin(&HeaderMap::new(), &none));
    }
}
