//! Headless Chromium for the browser tests, driven over the Chrome DevTools Protocol.
//!
//! [`Chromium::launch`] starts the system browser (`/usr/bin/chromium`, or
//! `$STREAMCORE_TEST_CHROMIUM`) itself rather than through chromiumoxide's launcher, so that it
//! controls the parts that matter in CI: a fresh profile per browser, its own process group
//! (killed as a whole on drop), and the browser's stderr kept for diagnostics. chromiumoxide then
//! connects to the DevTools WebSocket the browser announces. The crate is used without its
//! `fetcher` feature, so it never downloads a browser.
//!
//! A missing browser is a failure, not a skip: CI installs Debian's `chromium` package.
//!
//! Include it with `#[path = "common/chromium.rs"] mod chromium;`. When a test panics, dropping
//! the [`Chromium`] prints the browser's stderr tail and the pages' console and log output.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::log::{EnableParams as LogEnableParams, EventEntryAdded};
use chromiumoxide::cdp::browser_protocol::network::{
    EventLoadingFailed, EventRequestWillBeSent, EventResponseReceived,
};
use chromiumoxide::cdp::js_protocol::runtime::{EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::{Browser, Page};
use futures_util::StreamExt;
use serde_json::Value;

/// Where CI installs the browser (Debian's `chromium` package).
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// Flags for a headless browser in a sandboxed CI running as root. The background-networking
/// flags matter: without internet access, refused connections to Google services pile up.
/// Chrome's mDNS obfuscation of host candidates is never switched off here
/// (`--disable-features=WebRtcHideLocalIpsWithMdns`), but see [`FAKE_MEDIA_UI`].
pub const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0",
];

/// Auto-accepts camera/microphone prompts. Chrome treats that as granted media permission and
/// then gathers host candidates with their real IP addresses instead of `<uuid>.local` names
/// (checked with Chromium 156), so a browser launched with it does not behave like a real
/// viewer's. [`Chromium::launch`] adds it; [`Chromium::launch_like_a_viewer`] does not.
pub const FAKE_MEDIA_UI: &str = "--use-fake-ui-for-media-stream";

/// How long the browser may take to announce its DevTools endpoint.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines kept from stderr and from the pages (the oldest are dropped beyond this).
const MAX_LINES: usize = 2000;

type Lines = Arc<Mutex<Vec<String>>>;

/// One HTTP exchange of a page, from the DevTools Network domain (which chromiumoxide enables
/// on every page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// Request method.
    pub method: String,
    /// Full request URL.
    pub url: String,
    /// Response status; `None` when the request failed without one (see `failure`).
    pub status: Option<i64>,
    /// Why the request got no response (`net::ERR_CONNECTION_REFUSED`, …).
    pub failure: Option<String>,
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.status, &self.failure) {
            (Some(status), _) => write!(f, "{} {} -> {status}", self.method, self.url),
            (None, Some(why)) => write!(f, "{} {} -> {why}", self.method, self.url),
            (None, None) => write!(f, "{} {} -> ?", self.method, self.url),
        }
    }
}

/// Every answered or failed request of the pages opened with [`Chromium::open`].
pub type Exchanges = Arc<Mutex<Vec<Exchange>>>;

/// Method and URL of a request.
type Sent = (String, String);
/// Status, or why there was none.
type Outcome = (Option<i64>, Option<String>);

fn exchange((method, url): Sent, (status, failure): Outcome) -> Exchange {
    Exchange {
        method,
        url,
        status,
        failure,
    }
}

/// The exchange of a request whose outcome arrived, or `None` (the outcome kept in `outcomes`)
/// while its request is not known yet.
fn settle(
    requests: &HashMap<String, Sent>,
    outcomes: &mut HashMap<String, Outcome>,
    id: &str,
    outcome: Outcome,
) -> Option<Exchange> {
    match requests.get(id) {
        Some(sent) => Some(exchange(sent.clone(), outcome)),
        None => {
            outcomes.insert(id.to_string(), outcome);
            None
        }
    }
}

enum NetEvent {
    Request(Arc<EventRequestWillBeSent>),
    Response(Arc<EventResponseReceived>),
    Failed(Arc<EventLoadingFailed>),
}

fn push_exchange(log: &Exchanges, exchange: Exchange) {
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() >= MAX_LINES {
        log.remove(0);
    }
    log.push(exchange);
}

fn push(lines: &Lines, line: String) {
    let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
    if l.len() >= MAX_LINES {
        l.remove(0);
    }
    l.push(line);
}

/// A running headless browser. Killed (its whole process group) on drop.
pub struct Chromium {
    child: Child,
    /// The DevTools client.
    pub browser: Browser,
    /// Everything the browser printed to stderr.
    pub stderr: Lines,
    /// Console messages, uncaught exceptions and log entries (failed loads, …) of the pages.
    pub console: Lines,
    /// The pages' HTTP exchanges, in the order their outcome arrived.
    pub network: Exchanges,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    // Declared last: removed after the browser is dead (fields drop after `Drop::drop`).
    profile: tempfile::TempDir,
}

impl Chromium {
    /// The browser executable: `$STREAMCORE_TEST_CHROMIUM` or `/usr/bin/chromium`. Panics with
    /// an explanation when it is not there.
    pub fn executable() -> String {
        let exe = std::env::var("STREAMCORE_TEST_CHROMIUM")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_CHROMIUM.to_string());
        if !std::path::Path::new(&exe).is_file() {
            eprintln!(
                "SKIP NOT ALLOWED: the browser tests need Chromium at {exe}, which does not \
                 exist. Install Debian's `chromium` package (CI does), or point \
                 STREAMCORE_TEST_CHROMIUM at a Chromium binary."
            );
            panic!("Chromium not found at {exe}");
        }
        exe
    }

    /// Starts a headless browser on a fresh profile and connects to it ([`FLAGS`] and
    /// [`FAKE_MEDIA_UI`]).
    pub async fn launch() -> Chromium {
        Self::launch_with(&[FAKE_MEDIA_UI]).await
    }

    /// Like [`Chromium::launch`] without [`FAKE_MEDIA_UI`]: a page that never asked for the
    /// camera, like a real viewer's, so host candidates are mDNS names.
    pub async fn launch_like_a_viewer() -> Chromium {
        Self::launch_with(&[]).await
    }

    /// A browser with [`FLAGS`] and `extra`.
    pub async fn launch_with(extra: &[&str]) -> Chromium {
        let exe = Self::executable();
        let profile = tempfile::Builder::new()
            .prefix("streamcore-chromium-")
            .tempdir()
            .expect("profile dir");
        let mut cmd = Command::new(&exe);
        cmd.args(FLAGS)
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so Drop kills renderers, GPU and utility processes too.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));

        let stderr: Lines = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        {
            let pipe = child.stderr.take().unwrap();
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(ws.trim().to_string());
                        }
                    }
                    push(&sink, line);
                }
                // EOF: the browser is gone; a pending `rx` now fails instead of timing out.
            });
        }

        let ws = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(ws)) => ws,
            outcome => {
                let why = match outcome {
                    Ok(Err(_)) => format!("exited ({:?})", child.wait().ok()),
                    _ => format!("announced no DevTools endpoint within {START_TIMEOUT:?}"),
                };
                kill_group(&mut child);
                panic!(
                    "{exe} {why}; stderr:\n{}",
                    stderr.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
                );
            }
        };

        let (browser, mut handler) = match Browser::connect(ws.clone()).await {
            Ok(pair) => pair,
            Err(e) => {
                kill_group(&mut child);
                panic!("cannot connect to {ws}: {e}");
            }
        };
        let console: Lines = Arc::default();
        let errors = console.clone();
        // The handler drives the connection; it must be polled for anything to happen. Errors
        // (e.g. an event of a newer protocol than the crate knows) are recorded, not fatal.
        let drive = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    push(&errors, format!("[cdp] {e}"));
                }
            }
        });
        Chromium {
            child,
            browser,
            stderr,
            console,
            network: Arc::default(),
            tasks: vec![drive],
            profile,
        }
    }

    /// Opens a new tab, starts recording its console and log output, then navigates to `url`
    /// (returning once it has loaded).
    pub async fn open(&mut self, url: &str) -> Page {
        self.open_with(url, None).await
    }

    /// [`Chromium::open`], with `script` run in every document of the page before its own
    /// scripts (`Page.addScriptToEvaluateOnNewDocument`).
    pub async fn open_with(&mut self, url: &str, script: Option<&str>) -> Page {
        let page = self
            .browser
            .new_page("about:blank")
            .await
            .expect("new page");
        self.record(&page).await;
        self.record_network(&page).await;
        if let Some(script) = script {
            page.evaluate_on_new_document(script)
                .await
                .expect("addScriptToEvaluateOnNewDocument");
        }
        page.goto(url)
            .await
            .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
        page
    }

    async fn record(&mut self, page: &Page) {
        page.execute(LogEnableParams::default())
            .await
            .expect("Log.enable");
        let mut console = page
            .event_listener::<EventConsoleApiCalled>()
            .await
            .expect("console listener");
        let sink = self.console.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(e) = console.next().await {
                let args: Vec<String> = e
                    .args
                    .iter()
                    .map(|a| match (&a.value, &a.description) {
                        (Some(Value::String(s)), _) => s.clone(),
                        (Some(v), _) => v.to_string(),
                        (None, Some(d)) => d.clone(),
                        (None, None) => format!("<{:?}>", a.r#type),
                    })
                    .collect();
                push(
                    &sink,
                    format!("[console.{:?}] {}", e.r#type, args.join(" ")),
                );
            }
        }));
        let mut exceptions = page
            .event_listener::<EventExceptionThrown>()
            .await
            .expect("exception listener");
        let sink = self.console.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(e) = exceptions.next().await {
                let d = &e.exception_details;
                let what = d
                    .exception
                    .as_ref()
                    .and_then(|x| x.description.clone())
                    .unwrap_or_default();
                push(&sink, format!("[exception] {} {what}", d.text));
            }
        }));
        let mut log = page
            .event_listener::<EventEntryAdded>()
            .await
            .expect("log listener");
        let sink = self.console.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(e) = log.next().await {
                let entry = &e.entry;
                push(
                    &sink,
                    format!(
                        "[log.{:?}] {} {}",
                        entry.level,
                        entry.text,
                        entry.url.as_deref().unwrap_or("")
                    ),
                );
            }
        }));
    }

    async fn record_network(&mut self, page: &Page) {
        let requests = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .expect("request listener")
            .map(NetEvent::Request);
        let responses = page
            .event_listener::<EventResponseReceived>()
            .await
            .expect("response listener")
            .map(NetEvent::Response);
        let failures = page
            .event_listener::<EventLoadingFailed>()
            .await
            .expect("loading-failed listener")
            .map(NetEvent::Failed);
        let sink = self.network.clone();
        // One task, so a request's method is known before its outcome is recorded.
        self.tasks.push(tokio::spawn(async move {
            let mut events = futures_util::stream::select(
                requests,
                futures_util::stream::select(responses, failures),
            );
            // The listeners are separate channels, so an outcome may arrive before its request:
            // it waits in `outcomes` until the request names it.
            let mut requests = HashMap::new();
            let mut outcomes = HashMap::new();
            while let Some(event) = events.next().await {
                let (id, outcome) = match event {
                    NetEvent::Request(e) => {
                        let id = e.request_id.inner().clone();
                        let sent = (e.request.method.clone(), e.request.url.clone());
                        match outcomes.remove(&id) {
                            Some(outcome) => {
                                push_exchange(&sink, exchange(sent, outcome));
                            }
                            None => {
                                requests.insert(id, sent);
                            }
                        }
                        continue;
                    }
                    NetEvent::Response(e) => {
                        (e.request_id.clone(), (Some(e.response.status), None))
                    }
                    NetEvent::Failed(e) => {
                        (e.request_id.clone(), (None, Some(e.error_text.clone())))
                    }
                };
                if let Some(x) = settle(&requests, &mut outcomes, id.inner(), outcome) {
                    push_exchange(&sink, x);
                }
            }
        }));
    }

    /// Browser stderr tail and page output, for failure messages.
    pub fn diagnostics(&self) -> String {
        let tail = |lines: &Lines, n: usize| {
            let l = lines.lock().unwrap_or_else(|e| e.into_inner());
            l[l.len().saturating_sub(n)..].join("\n")
        };
        let network = {
            let n = self.network.lock().unwrap_or_else(|e| e.into_inner());
            n[n.len().saturating_sub(100)..]
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "--- chromium stderr (tail) ---\n{}\n--- page console/log ---\n{}\n--- page requests (tail) ---\n{network}",
            tail(&self.stderr, 80),
            tail(&self.console, 200)
        )
    }

    /// Browser pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        kill_group(&mut self.child);
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

fn kill_group(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
}

/// `window.<global>` of the page as JSON (the pages keep their state there for automated tests),
/// `Null` while the script has not set it.
pub async fn page_value(page: &Page, global: &str) -> Value {
    let json: String = page
        .evaluate(format!("JSON.stringify(window.{global} ?? null)"))
        .await
        .unwrap_or_else(|e| panic!("evaluate window.{global}: {e}"))
        .into_value()
        .expect("a string");
    serde_json::from_str(&json).expect("JSON")
}

/// `window.streamcore` of the player page.
pub async fn page_state(page: &Page) -> Value {
    page_value(page, "streamcore").await
}

/// Polls `window.<global>` until `pred` holds; panics with the last state after `timeout`, or at
/// once when `alive` says the server died (a crash would otherwise only show as a timeout, with
/// the page retrying against a closed port).
pub async fn wait_page(
    page: &Page,
    global: &str,
    timeout: Duration,
    what: &str,
    alive: impl Fn() -> bool,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let state = page_value(page, global).await;
        if pred(&state) {
            return state;
        }
        assert!(
            alive(),
            "the server died while waiting for {what}; page: {state:#}"
        );
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; page: {state:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
