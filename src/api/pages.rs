//! The built-in browser player: `/player/{id}` plays one stream over WHEP, `/player/` lists the
//! streams (from `GET /whep`), `/player.js` is the player's script; `/publish/{id}` and `/publish.js`
//! are the WHIP publish page, `/webrtc.js` the helpers both pages share. All are compiled in.

use axum::http::header;
use axum::response::{Html, IntoResponse};

const PLAYER_HTML: &str = include_str!("pages/player.html");
const INDEX_HTML: &str = include_str!("pages/index.html");
const PLAYER_JS: &str = include_str!("pages/player.js");
const PUBLISH_HTML: &str = include_str!("pages/publish.html");
const PUBLISH_JS: &str = include_str!("pages/publish.js");
const WEBRTC_JS: &str = include_str!("pages/webrtc.js");

/// `GET /player/{id}`: the player page; the script reads the stream id from the URL.
#[utoipa::path(get, path = "/player/{id}", tag = "pages", params(("id" = String, Path)), 
    responses((status = 200, description = "the player page", body = String, content_type = "text/html")))]
pub async fn player() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PLAYER_HTML))
}

/// `GET /player/` and `GET /player`: the list of WebRTC streams.
#[utoipa::path(get, path = "/player", tag = "pages", 
    responses((status = 200, description = "the list of WebRTC streams (also at `/player/`)", body = String, content_type = "text/html")))]
pub async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML))
}

/// `GET /player.js`: the player's script.
#[utoipa::path(get, path = "/player.js", tag = "pages", 
    responses((status = 200, description = "the player's script", body = String, content_type = "text/javascript")))]
pub async fn player_js() -> impl IntoResponse {
    script(PLAYER_JS)
}

/// `GET /publish/{id}`: the WHIP publish page; the script reads the process id from the URL.
#[utoipa::path(get, path = "/publish/{id}", tag = "pages", params(("id" = String, Path)), 
    responses((status = 200, description = "the WHIP publish page", body = String, content_type = "text/html")))]
pub async fn publish() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PUBLISH_HTML))
}

/// `GET /publish.js`: the publish page's script.
#[utoipa::path(get, path = "/publish.js", tag = "pages", 
    responses((status = 200, description = "the publish page's script", body = String, content_type = "text/javascript")))]
pub async fn publish_js() -> impl IntoResponse {
    script(PUBLISH_JS)
}

/// `GET /webrtc.js`: helpers both pages load before their own script.
#[utoipa::path(get, path = "/webrtc.js", tag = "pages", 
    responses((status = 200, description = "helpers both pages load", body = String, content_type = "text/javascript")))]
pub async fn webrtc_js() -> impl IntoResponse {
    script(WEBRTC_JS)
}

fn script(text: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
}
