//! The accept loop: `axum::serve` plus what it lacks against hostile clients.
//!
//! `axum::serve` sets no header-read timeout and no connection cap, so sockets that send half a
//! request and wait (slowloris) pile up until the process runs out of file descriptors. Here
//! every connection is served by hyper-util's auto builder with a timer, so HTTP/1 request
//! heads must arrive within the header-read timeout, and bodies within the body-read timeout.
//! The [`connections::Connections`] table caps the number of connections, closes idle ones and
//! makes room under pressure; the answers hyper writes itself for unparsable requests get JSON
//! bodies. Graceful shutdown works as in axum: stop accepting, let every connection finish its
//! requests, then return.

mod bodies;
pub mod connections;
mod linger;
mod parse_errors;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use connections::{Close, Connection, Connections};

/// Limits of the accept loop.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest wait for a complete request head (and for a new connection's first request).
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Longest wait for a whole request body after its head.
    pub body_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for open connections to
/// finish their requests. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let table = Connections::new(
        limits.max_connections,
        limits.header_read_timeout,
        limits.idle_timeout,
    );
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // FFmpeg's HTTP client (HLS to `/memfs` with `-method PUT`) sends a whole segment and
        // closes its side at once; without half-close hyper drops such a request at the FIN,
        // before the handler has read the body.
        .half_close(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    // Connections hold the receiver of `stop` (told to finish) and of `done`'s channel (so the
    // loop can wait for them all), as axum does.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::default();
    loop {
        // Shutdown first: a reload is told before its answer is written, so a client that sends
        // its next request at once must find the old loop gone and wait in the backlog for the
        // new one. Accepted here, the connection would be closed by the graceful shutdown before
        // its request was read, and the client would get no answer at all.
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    backoff.failed(e).await;
                    continue;
                }
            },
        };
        backoff.reset();
        let Some(connection) = table.admit() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection cap reached and every connection busy; closing the new one");
            continue;
        };
        let task = ConnectionTask {
            builder: builder.clone(),
            router: router.clone(),
            connection,
            peer,
            body_timeout: limits.body_timeout,
            stop: stop_rx.clone(),
            _done: done_rx.clone(),
        };
        tokio::spawn(task.run(stream));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    tracing::debug!(open = table.open(), "waiting for connections to finish");
    done_tx.closed().await;
}

struct ConnectionTask {
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    connection: Connection,
    peer: SocketAddr,
    body_timeout: Duration,
    stop: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
}

impl ConnectionTask {
    async fn run(mut self, stream: TcpStream) {
        let connection = Arc::new(self.connection);
        let (router, peer, tracker) = (self.router, self.peer, connection.clone());
        let body_timeout = self.body_timeout;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = tracker.busy();
            let (parts, body) = request.into_parts();
            let (body, body_end) = bodies::Deadline::new(body, body_timeout);
            let mut request = Request::from_parts(parts, Body::new(body));
            request.extensions_mut().insert(ConnectInfo(peer));
            let http1 = request.version() <= Version::HTTP_11;
            let response = router.clone().oneshot(request);
            async move {
                let mut response = response.await?;
                // Answered before the body was read (a 413 on its Content-Length): hyper will
                // close the connection after this response, so the client must hear it now.
                // Without the header a client still sending the body keeps the connection in its
                // pool and sends the next request into a socket that is closing.
                if http1 && !body_end.reached() {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(
                    response.map(|body| Body::new(bodies::Tracked::new(body, busy))),
                )
            }
        });
        let (socket, linger) = linger::Lingering::new(stream, connection.clone());
        let socket = parse_errors::ErrorBodies::new(socket, connection.clone());
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(socket), service);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    match result {
                        Ok(()) => linger.arm(),
                        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                    }
                    return;
                }
                why = connection.closed() => {
                    match why {
                        Close::Evicted => tracing::debug!(%peer, "closed an idle connection to make room"),
                        Close::Idle => tracing::debug!(%peer, "closed an idle connection"),
                    }
                    return;
                }
                _ = self.stop.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Accept failures: a connection that died in the backlog is skipped; anything else (EMFILE,
/// ENFILE, ENOBUFS) would fail again at once, so the loop sleeps, doubling up to a second, and
/// logs once per streak instead of once per spin.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    async fn failed(&mut self, error: std::io::Error) {
        use std::io::ErrorKind::*;
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
        ) {
            return;
        }
        let delay = match self.delay {
            None => {
                tracing::error!(%error, "accept failed; backing off until it works again");
                Self::FIRST
            }
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }

    fn reset(&mut self) {
        if self.delay.take().is_some() {
            tracing::info!("accepting connections again");
        }
    }
}
