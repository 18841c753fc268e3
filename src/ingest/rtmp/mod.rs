//! The RTMP server: rml_rtmp does the handshake and the chunk stream (sans-IO), this module the
//! sockets, the token and app rules, and the fan-out to readers (Core's rtmp/rtmp.go). With
//! `rtmp.enable_tls` a second listener takes RTMPS (tokio-rustls) and hands the decrypted stream
//! to the same connection handler, rules and hub.

mod conn;
mod media;
mod path;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::{rustls, TlsAcceptor};

use super::hub::Hub;
use super::sessions::Sessions;
use crate::config::RtmpConfig;
use media::{Media, StartCache};

/// Connections served at once over both listeners; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// From accept to a finished handshake (for RTMPS, each of the TLS and the RTMP handshake).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// From the handshake to `publish` or `play`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// One write to a reader; a reader that takes longer is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running RTMP server.
pub struct RtmpServer {
    /// What serves it; stopped on reload.
    task: super::ServerTask,
    app: String,
    token: String,
    hub: Arc<Hub<Media, StartCache>>,
    sessions: Arc<Sessions>,
    local: SocketAddr,
}

impl RtmpServer {
    /// Binds `config.address`, and `config.address_tls` when `tls` (the certificate, present
    /// when `rtmp.enable_tls` is on) is given, and serves in the background.
    pub async fn start(
        config: &RtmpConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        sessions: Arc<Sessions>,
    ) -> anyhow::Result<Arc<Self>> {
        let listener = bind(&config.address, "RTMP").await?;
        let tls = match tls {
            Some(tls) => Some((
                bind(&config.address_tls, "RTMPS").await?,
                TlsAcceptor::from(tls),
            )),
            None => None,
        };
        let server = Arc::new(RtmpServer {
            task: super::ServerTask::default(),
            app: config.app.clone(),
            token: config.token.clone(),
            hub: Hub::new(),
            sessions,
            local: listener.local_addr()?,
        });
        tracing::info!(address = %server.local, "RTMP server listening");
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let plain = accept_loop(server.clone(), listener, None, permits.clone());
        let task = match tls {
            Some((listener, acceptor)) => {
                tracing::info!(address = %listener.local_addr()?, "RTMPS server listening");
                let tls = accept_loop(server.clone(), listener, Some(acceptor), permits);
                // One task for both, so stopping it closes both ports and every connection.
                tokio::spawn(async move {
                    tokio::join!(plain, tls);
                })
            }
            None => tokio::spawn(plain),
        };
        server.task.set(task);
        Ok(server)
    }

    /// Closes the listener and every connection, and waits until the port is free again.
    pub async fn stop(&self) {
        self.task.stop().await;
    }

    /// The names being published now (`GET /api/v3/rtmp`).
    pub fn channels(&self) -> Vec<String> {
        self.hub
            .channels()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect()
    }
}

async fn bind(address: &str, protocol: &str) -> anyhow::Result<TcpListener> {
    let address = crate::config::listen_address(address)?;
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for {protocol} on {address}: {e}"))
}

async fn accept_loop(
    server: Arc<RtmpServer>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    permits: Arc<Semaphore>,
) {
    // Owned here, so aborting this loop ends every connection with it.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (socket, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let server = server.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let served = match tls {
                None => conn::serve(&server, socket, remote).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(socket)).await {
                        Ok(Ok(socket)) => conn::serve(&server, socket, remote).await,
                        Ok(Err(e)) => Err(tls_refused(&server, e.to_string())),
                        Err(_) => Err(tls_refused(&server, "TLS handshake timed out".into())),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "RTMP connection ended");
            }
            drop(permit);
        });
    }
}

/// A client that did not finish the TLS handshake (garbage, plain RTMP on the RTMPS port, a
/// client that distrusts the certificate) is counted like other refusals.
fn tls_refused(server: &RtmpServer, why: String) -> anyhow::Error {
    server.sessions.refused("rtmp", "tls");
    anyhow::anyhow!("TLS handshake failed: {why}")
}
