//! datarhei's own web UI, restreamer-ui 1.14.0 built from its repository without changes, served
//! from the server's public directory (`<data dir>/public/ui/`) and driven in headless Chromium
//! the way a new user would: log in, create a channel from a network source with the wizard's
//! defaults, start it, watch its player play, open the System settings.
//!
//! The UI build comes from `tests/fixtures/restreamer-ui/` (see its README.md for where it comes
//! from and how to rebuild it) or from `$STREAMCORE_TEST_RESTREAMER_UI`. Needs Chromium like the
//! other browser tests. Run with `cargo test --test restreamer_ui -- --test-threads=1`.

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromium::{Chromium, Exchange};
use chromiumoxide::Page;
use common::{ServerLogOnPanic, TestServer, PASS, USER};
use serde_json::{json, Value};

/// How long one UI step (a page change, a probe, a save) may take.
const STEP: Duration = Duration::from_secs(30);
/// From "Connect" to a playing player: FFmpeg starts, writes the first HLS segments to memfs,
/// video.js loads the playlist and buffers.
const PLAYING: Duration = Duration::from_secs(60);

/// The UI's build: `$STREAMCORE_TEST_RESTREAMER_UI` or the fixture.
fn ui_build() -> PathBuf {
    let dir = std::env::var("STREAMCORE_TEST_RESTREAMER_UI")
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/restreamer-ui/build")
        });
    assert!(
        dir.join("index.html").is_file(),
        "no restreamer-ui build at {} (see tests/fixtures/restreamer-ui/README.md)",
        dir.display()
    );
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Installs the UI where the server serves it: `<data dir>/public/ui/`.
fn install_ui(server: &TestServer) {
    copy_tree(&ui_build(), &server.data_dir.join("public/ui"));
}

/// The network source for the wizard: an MP4 file on this server's HTTP, as any web server
/// offers one, long enough to outlast the test (the channel reads it in real time).
///
/// Not a live HLS or MPEG-TS source: those carry no bitrates, and with the wizard's default
/// (copy the H.264 and AAC streams) FFmpeg then writes a master playlist without its
/// `#EXT-X-STREAM-INF` line ("Bandwidth info not available"), which no player can play. That
/// is FFmpeg's doing and happens with datarhei Core too.
fn http_mp4_source(server: &TestServer) -> String {
    common::media::clip(
        &server.data_dir.join("public"),
        "network-source.mp4",
        "320x180",
        150,
        "-c:v libx264 -preset ultrafast -profile:v baseline -pix_fmt yuv420p -g 30 -bf 0 \
         -c:a aac -b:a 64k -movflags +faststart",
    );
    server.url("/network-source.mp4")
}

/// Runs before the UI's own scripts: failed API calls go to the console with what was sent and
/// what came back, so a failure message shows why the server refused something.
const FETCH_LOG: &str = r#"
const fetch0 = window.fetch;
window.fetch = async (url, options) => {
    const res = await fetch0(url, options);
    if (!res.ok && String(url).includes("/api/")) {
        const body = await res.clone().text().catch(() => "");
        const sent = options && typeof options.body === "string" ? options.body : "";
        console.warn(`[fetch] ${(options && options.method) || "GET"} ${url} -> ${res.status} ${body} <- ${sent.slice(0, 4000)}`);
    }
    return res;
};
"#;

/// Helpers every UI script below can use. The UI is React with MUI: inputs take a value through
/// the native setter plus an `input` event (React ignores a plain assignment), buttons a click.
const PRELUDE: &str = r#"
const visible = (e) => e && e.offsetParent !== null;
const byText = (selector, text) => [...document.querySelectorAll(selector)]
    .find((e) => visible(e) && e.textContent.trim() === text);
const click = (selector, text) => {
    const e = byText(selector, text);
    if (!e || e.disabled) return false;
    e.click();
    return true;
};
const type = (selector, value) => {
    const e = document.querySelector(selector);
    if (!visible(e)) return false;
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(e, value);
    e.dispatchEvent(new Event("input", { bubbles: true }));
    return true;
};
const has = (text) => document.body.innerText.includes(text);
"#;

/// The value of `expr` (run after [`PRELUDE`]) as JSON, or why it could not be evaluated.
async fn try_js(page: &Page, expr: &str) -> Result<Value, String> {
    // Elements found by a helper come back as `true` (they do not serialise).
    let script = format!(
        "(() => {{ {PRELUDE}; const v = ({expr}); return JSON.stringify(v instanceof Node ? true : v ?? null); }})()"
    );
    let json: String = page
        .evaluate(script)
        .await
        .map_err(|e| e.to_string())?
        .into_value()
        .expect("a string");
    Ok(serde_json::from_str(&json).expect("JSON"))
}

/// [`try_js`] on a page that is not navigating.
async fn js(page: &Page, expr: &str) -> Value {
    try_js(page, expr)
        .await
        .unwrap_or_else(|e| panic!("evaluate {expr}: {e}"))
}

/// What the user sees, for failure messages.
async fn screen(page: &Page) -> String {
    let text = js(page, "location.hash + '\\n' + document.body.innerText").await;
    text.as_str().unwrap_or_default().to_string()
}

/// Evaluates `expr` until it is truthy (the UI has no event for "rendered"; polling the DOM is
/// how a test observes it) and returns its value; panics with the screen after `timeout`.
async fn until(
    server: &TestServer,
    page: &Page,
    timeout: Duration,
    what: &str,
    expr: &str,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        // While the page reloads itself there is no document to ask; that is "not yet".
        let value = try_js(page, expr).await.unwrap_or(Value::Null);
        if !matches!(value, Value::Null | Value::Bool(false))
            && value != json!(0)
            && value != json!("")
        {
            return value;
        }
        assert!(server.alive(), "the server died while waiting for {what}");
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; the screen:\n{}",
                screen(page).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks the button labelled `label` once it is there and enabled.
async fn press(server: &TestServer, page: &Page, label: &str) {
    let expr = format!("click('button', {})", json!(label));
    until(server, page, STEP, &format!("the {label:?} button"), &expr).await;
}

/// Requests to the server that it answered 404, 405 or 5xx.
fn bad_answers(chrome: &Chromium, server: &TestServer) -> Vec<Exchange> {
    chrome
        .network
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.url.starts_with(&server.base))
        .filter(|x| matches!(x.status, Some(404 | 405 | 500..=599)))
        .cloned()
        .collect()
}

/// Fails on every 404/405/5xx of the server that is not in [`expected_by_the_ui`].
fn assert_only_core_answers(chrome: &Chromium, server: &TestServer) {
    let bad: Vec<String> = bad_answers(chrome, server)
        .iter()
        .filter(|x| !expected_by_the_ui(x, &server.base))
        .map(|x| x.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "the UI got these answers Core would not give:\n{}",
        bad.join("\n")
    );
}

/// 404s that datarhei Core gives the same way, for things the UI looks for before they exist:
/// saving tries `PUT /api/v3/process/{id}` and creates the process with `POST` on 404; before a
/// probe it deletes a leftover probe process; a channel's page asks for the state and metadata
/// of a channel not saved yet; the first start looks for its metadata and for player files;
/// saving deletes playersite files that were never written; the poster image is asked for before
/// the snapshot process has written one. And the UI polls `/api/v3/rtmp` and `/api/v3/srt`,
/// which Core (like streamcore) only routes while its RTMP/SRT server is on; both are off here.
fn expected_by_the_ui(x: &Exchange, base: &str) -> bool {
    let path = x.url.strip_prefix(base).unwrap_or(&x.url);
    let path = path.split('?').next().unwrap_or(path).replace("%3A", ":");
    let Some(process) = path.strip_prefix("/api/v3/process/restreamer-ui:") else {
        return x.status == Some(404)
            && match x.method.as_str() {
                "GET" => {
                    path == "/api/v3/metadata/restreamer-ui"
                        || path.starts_with("/memfs/") && path.ends_with(".jpg")
                        || path == "/api/v3/rtmp"
                        || path == "/api/v3/srt"
                }
                "HEAD" | "DELETE" => path.starts_with("/api/v3/fs/disk/"),
                _ => false,
            };
    };
    x.status == Some(404)
        && match x.method.as_str() {
            "PUT" => !process.contains('/'),
            "DELETE" => process.ends_with("_probe"),
            "GET" => process.ends_with("/state") || process.ends_with("/metadata/restreamer-ui"),
            _ => false,
        }
}

/// Logs in with the form, as a user would.
async fn log_in(server: &TestServer, page: &Page, user: &str, password: &str) {
    until(
        server,
        page,
        STEP,
        "the login form",
        "visible(document.querySelector('#username'))",
    )
    .await;
    let expr = format!(
        "type('#username', {}) && type('#password', {})",
        json!(user),
        json!(password)
    );
    assert_eq!(js(page, &expr).await, json!(true), "{}", screen(page).await);
    let expr = "(() => { const b = document.querySelector('button[name=login_local]'); b.click(); return true; })()";
    js(page, expr).await;
}

/// The wizard with a network source and every default: Welcome → "Network source" → address →
/// probe → video profile → audio → metadata → license → save. Returns the channel id.
async fn create_channel(server: &TestServer, page: &Page, source: &str) -> String {
    press(server, page, "Next: Video setup").await;
    until(server, page, STEP, "the source types", "has('Video setup')").await;
    let expr = "(() => { const b = [...document.querySelectorAll('button')].find((e) => visible(e) && e.textContent.trim() === 'Network source'); if (!b) return false; b.click(); return true; })()";
    until(server, page, STEP, "the network source button", expr).await;
    let address = format!(
        "type('input[placeholder=\"rtsp://ip:port/path\"]', {})",
        json!(source)
    );
    until(server, page, STEP, "the address field", &address).await;
    press(server, page, "Next").await;
    until(
        server,
        page,
        STEP,
        "the probe's result",
        "has('The video source is compatible') || has('Failed to verify the source')",
    )
    .await;
    assert!(
        js(page, "has('The video source is compatible')").await == json!(true),
        "the probe failed; the screen:\n{}",
        screen(page).await
    );
    press(server, page, "Next").await;
    until(server, page, STEP, "the audio setup", "has('Audio setup')").await;
    press(server, page, "Next").await;
    until(
        server,
        page,
        STEP,
        "the metadata step",
        "has('Briefly describe what the audience will see')",
    )
    .await;
    press(server, page, "Next").await;
    until(
        server,
        page,
        STEP,
        "the license step",
        "byText('button', 'Save')",
    )
    .await;
    press(server, page, "Save").await;
    let hash = until(
        server,
        page,
        STEP,
        "the channel page after saving",
        "/^#\\/[0-9a-f-]{36}$/.test(location.hash) && location.hash",
    )
    .await;
    hash.as_str().unwrap()[2..].to_string()
}

/// Opens the header's menu (its second round button) and picks `entry`.
async fn menu(server: &TestServer, page: &Page, entry: &str) {
    let open = "(() => { const f = [...document.querySelectorAll('.headerFab, .headerFabHighlight')]; if (f.length < 2) return false; f[1].click(); return true; })()";
    until(server, page, STEP, "the menu button", open).await;
    let pick = format!("click('li', {})", json!(entry));
    until(
        server,
        page,
        STEP,
        &format!("the {entry:?} menu entry"),
        &pick,
    )
    .await;
}

/// The player's `<video>`: its current time, once it has one.
async fn video_time(page: &Page) -> f64 {
    js(
        page,
        "(() => { const v = document.querySelector('video'); return v ? v.currentTime : -1; })()",
    )
    .await
    .as_f64()
    .unwrap_or(-1.0)
}

/// Log in, create a channel from a network source with the wizard's defaults, start it, see the
/// player play, open Settings; no request of the UI that Core would answer gets a 404/405/5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restreamer_ui_main_flow() {
    let started = Instant::now();
    let mut server = TestServer::start_with_auth(&[]).await;
    server.login().await;
    let _log = ServerLogOnPanic(&server);
    install_ui(&server);
    let source = http_mp4_source(&server);

    let mut chrome = Chromium::launch_like_a_viewer().await;
    let page = chrome.open_with(&server.url("/ui/"), Some(FETCH_LOG)).await;

    // A wrong password keeps the login form.
    log_in(&server, &page, USER, "not-the-password").await;
    until(
        &server,
        &page,
        STEP,
        "the failed login's notice",
        "has('Login failed')",
    )
    .await;
    log_in(&server, &page, USER, PASS).await;
    until(
        &server,
        &page,
        STEP,
        "the welcome page",
        "byText('button', 'Next: Video setup')",
    )
    .await;

    let channel = create_channel(&server, &page, &source).await;
    eprintln!("channel {channel} saved after {:?}", started.elapsed());

    // Start it, unless the saved channel is already on its way.
    let expr =
        "click('button', 'Connect') || has('Connecting ...') || byText('button', 'Disconnect')";
    until(&server, &page, STEP, "the Connect button", expr).await;
    until(
        &server,
        &page,
        PLAYING,
        "a playing player",
        "(() => { const v = document.querySelector('video'); return v && v.currentTime > 1 && !v.paused; })()",
    )
    .await;
    let first = video_time(&page).await;
    let deadline = Instant::now() + STEP;
    while video_time(&page).await < first + 2.0 {
        assert!(
            Instant::now() < deadline,
            "the player stopped at {first}s; the screen:\n{}",
            screen(&page).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("playing after {:?}", started.elapsed());

    // The public player the UI wrote names this server, not `http:///`.
    let (status, oembed) = server
        .get(&format!("/channels/{channel}/oembed.json"))
        .await;
    assert_eq!(status.as_u16(), 200, "oembed.json: {oembed}");
    assert_eq!(
        oembed["author_url"],
        json!(server.url(&format!("/{channel}.html"))),
        "{oembed:#}"
    );
    let player = server.get_text(&format!("/{channel}.html")).await;
    assert!(!player.contains("http:///"), "{player}");
    // The channel's FFmpeg metadata names it too (`-metadata title=<oembed URL>`).
    let (status, config) = server
        .get(&format!(
            "/api/v3/process/restreamer-ui:ingest:{channel}/config"
        ))
        .await;
    assert_eq!(status.as_u16(), 200, "{config}");
    assert!(!config.to_string().contains("http:///"), "{config:#}");

    // A reload keeps the session (the stored tokens) and comes back to the running channel.
    page.reload().await.expect("reload");
    until(
        &server,
        &page,
        STEP,
        "the channel page after a reload",
        "byText('button', 'Disconnect')",
    )
    .await;

    // Settings: the System entry of the menu opens the config, not "Unable to load the config.".
    menu(&server, &page, "System").await;
    let settings = until(
        &server,
        &page,
        STEP,
        "the settings page",
        "(has('Unable to load the config.') && 'error') || (byText('button', 'General') && 'general')",
    )
    .await;
    assert_eq!(settings, json!("general"), "{}", screen(&page).await);

    menu(&server, &page, "Logout").await;
    until(
        &server,
        &page,
        STEP,
        "the login form after logging out",
        "visible(document.querySelector('#username'))",
    )
    .await;

    assert_only_core_answers(&chrome, &server);
    eprintln!("restreamer-ui main flow took {:?}", started.elapsed());
}

/// The auth-off first run: the UI asks for a user, writes it with `PUT /api/v3/config`, has the
/// server reload, waits for the new `created_at`, logs in and lands on the channel setup. From
/// then on the API wants a login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restreamer_ui_registration_turns_auth_on() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    install_ui(&server);
    let (status, _) = server.get("/api/v3/process").await;
    assert_eq!(status.as_u16(), 200, "auth is off to begin with");

    let mut chrome = Chromium::launch_like_a_viewer().await;
    let page = chrome.open_with(&server.url("/ui/"), Some(FETCH_LOG)).await;
    until(
        &server,
        &page,
        STEP,
        "the registration form",
        "has('User registration') && visible(document.querySelector('#password_confirm'))",
    )
    .await;
    let expr = format!(
        "type('#username', {user}) && type('#password', {pass}) && type('#password_confirm', {pass})",
        user = json!("owner"),
        pass = json!("a-new-password"),
    );
    assert_eq!(
        js(&page, &expr).await,
        json!(true),
        "{}",
        screen(&page).await
    );
    press(&server, &page, "Register user").await;
    // The UI reloads itself once the restarted API answers and it has logged in.
    let outcome = until(
        &server,
        &page,
        Duration::from_secs(60),
        "the channel setup after registering",
        "(has('There was an error resetting the password') && 'config refused')
            || (has('Restarting the application failed') && 'reload refused')
            || (byText('button', 'Next: Video setup') && 'registered')",
    )
    .await;
    assert_eq!(outcome, json!("registered"), "{}", screen(&page).await);

    let (status, body) = server.get("/api/v3/process").await;
    assert_eq!(status.as_u16(), 401, "auth is on now: {body}");
    let res = server
        .http
        .post(server.url("/api/login"))
        .json(&json!({"username": "owner", "password": "a-new-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "the registered user logs in");
    assert_only_core_answers(&chrome, &server);
}
