//! Where an RTMP client publishes or plays, as Core's joy4 server sees it: the URL path built
//! from the connect `app` and the stream key (which FFmpeg sends with the URL's query), and the
//! token from `?token=` or, failing that, the last path element.

/// A stream key resolved against the server's token.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The channel name: `/<app>/<name>` without the token.
    pub path: String,
    /// The token the client gave, if any.
    pub token: Option<String>,
}

/// Core's `getToken` (rtmp/rtmp.go): the query's `token` wins; otherwise, when the server wants a
/// token, the last path element is the token and not part of the path.
pub fn target(app: &str, stream_key: &str, token_required: bool) -> Target {
    // FFmpeg sends `rtmp://host/cam?token=t` as app `cam?token=t` with an empty key, and
    // `rtmp://host/live/cam?token=t` as app `live`, key `cam?token=t`; joy4 joins both, drops
    // empty segments and reads the query, and so do we.
    let (app_path, app_query) = app.split_once('?').unwrap_or((app, ""));
    let (key_path, key_query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
    let segments: Vec<&str> = app_path
        .split('/')
        .chain(key_path.split('/'))
        .filter(|s| !s.is_empty())
        .collect();
    let path = format!("/{}", segments.join("/"));
    let path = path.as_str();
    let query = format!("{app_query}&{key_query}");
    let query_token = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty());
    if !token_required || query_token.is_some() {
        return Target {
            path: path.to_string(),
            token: query_token,
        };
    }
    match path.rsplit_once('/') {
        Some((rest, last)) if !last.is_empty() => Target {
            path: rest.to_string(),
            token: Some(last.to_string()),
        },
        _ => Target {
            path: path.to_string(),
            token: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str, token: Option<&str>) -> Target {
        Target {
            path: path.into(),
            token: token.map(Into::into),
        }
    }

    #[test]
    fn paths_and_tokens_as_core_reads_them() {
        assert_eq!(target("", "cam", false), t("/cam", None));
        assert_eq!(
            target("live", "cam.stream", false),
            t("/live/cam.stream", None)
        );
        assert_eq!(target("", "cam?token=abc", true), t("/cam", Some("abc")));
        assert_eq!(target("live", "cam/abc", true), t("/live/cam", Some("abc")));
        assert_eq!(target("", "cam", true), t("", Some("cam")));
        assert_eq!(target("", "cam?x=1", false), t("/cam", None));
        assert_eq!(target("", "", true), t("/", None));
        assert_eq!(target("cam", "", false), t("/cam", None));
        assert_eq!(target("cam?token=a", "", true), t("/cam", Some("a")));
    }
}
