//! The RTMP server: rml_rtmp does the handshake and the chunk stream (sans-IO), this module the
//! sockets, the token and app rules, and the fan-out to readers (Core's rtmp/rtmp.go).

mod conn;
mod media;
mod path;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::hub::Hub;
use super::sessions::Sessions;
use crate::config::RtmpConfig;
use media::{Media, StartCache};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// From accept to a finished handshake.
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
    /// Binds `config.address` and serves in the background.
    pub async fn start(config: &RtmpConfig, sessions: Arc<Sessions>) -> anyhow::Result<Arc<Self>> {
        let address = crate::config::listen_address(&config.address)?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for RTMP on {address}: {e}"))?;
        if config.enable_tls {
            tracing::warn!(
                address = %config.address_tls,
                "rtmp.enable_tls is set, but streamcore has no TLS certificate: RTMPS is not served"
            );
        }
        let server = Arc::new(RtmpServer {
            task: super::ServerTask::default(),
            app: config.app.clone(),
            token: config.token.clone(),
            hub: Hub::new(),
            sessions,
            local: listener.local_addr()?,
        });
        tracing::info!(address = %server.local, "RTMP server listening");
        let task = tokio::spawn(accept_loop(server.clone(), listener));
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

async fn accept_loop(server: Arc<RtmpServer>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        connections.spawn(async move {
            if let Err(e) = conn::serve(&server, socket, remote).await {
                tracing::debug!(%remote, error = %e, "RTMP connection ended");
            }
            drop(permit);
        });
    }
}
