//! The SRT server (Core's srt/srt.go on srt-tokio): one listener socket, stream ids decide per
//! caller whether it publishes or reads which resource, a passphrase (when set) must match, and
//! the MPEG-TS payload is relayed packet by packet.

mod streamid;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use srt_protocol::settings::KeySettings;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::Passphrase;
use srt_tokio::{ConnectionRequest, SrtListener, SrtSocket};
use subtle::ConstantTimeEq;

use super::hub::Hub;
use super::sessions::Sessions;
use crate::config::SrtConfig;
use streamid::StreamInfo;

type Packet = (Instant, Bytes);

/// The running SRT server.
pub struct SrtServer {
    /// What serves it; stopped on reload.
    task: super::ServerTask,
    passphrase: String,
    token: String,
    hub: Arc<Hub<Packet, ()>>,
    sessions: Arc<Sessions>,
}

/// Live channels as `GET /api/v3/srt` shows them: resource, publisher id, reader ids.
pub type Channels = Vec<(String, u64, Vec<u64>)>;

enum Role {
    Publish,
    Read,
}

impl SrtServer {
    /// Binds `config.address` and serves in the background.
    pub async fn start(config: &SrtConfig, sessions: Arc<Sessions>) -> anyhow::Result<Arc<Self>> {
        let address = crate::config::listen_address(&config.address)?;
        let server = Arc::new(SrtServer {
            task: super::ServerTask::default(),
            passphrase: config.passphrase.clone(),
            token: config.token.clone(),
            hub: Hub::new(),
            sessions,
        });
        let bound = bind(address).await?;
        tracing::info!(%address, "SRT server listening");
        let task = tokio::spawn(supervise(server.clone(), address, bound));
        server.task.set(task);
        Ok(server)
    }

    /// Closes the listener and every connection, and waits until the port is free again.
    pub async fn stop(&self) {
        self.task.stop().await;
    }

    pub fn channels(&self) -> Channels {
        self.hub.channels()
    }

    /// Core's `handleConnect`: the role for this caller, or why it is refused.
    fn decide(
        &self,
        request: &ConnectionRequest,
    ) -> Result<(Role, StreamInfo), (&'static str, ServerRejectReason)> {
        let info = streamid::parse(request.stream_id().map_or("", |s| s.as_str()));
        if info.resource.is_empty() {
            return Err(("no resource", ServerRejectReason::BadRequest));
        }
        // Whether the caller encrypts is not known here: libsrt leaves the handshake's key size
        // at 0 and only sends key material. srt-protocol refuses an unencrypted caller when a
        // passphrase is set (UNSECURE) and a wrong passphrase (BADSECRET) when we accept.
        let role = match info.mode.as_str() {
            "publish" => Role::Publish,
            "request" => Role::Read,
            _ => return Err(("mode", ServerRejectReason::BadMode)),
        };
        if !self.token.is_empty() && !bool::from(info.token.as_bytes().ct_eq(self.token.as_bytes()))
        {
            return Err(("token", ServerRejectReason::Forbidden));
        }
        match role {
            Role::Publish if self.hub.is_live(&info.resource) => {
                Err(("conflict", ServerRejectReason::Conflict))
            }
            Role::Read if !self.hub.is_live(&info.resource) => {
                Err(("not found", ServerRejectReason::Notfound))
            }
            _ => Ok((role, info)),
        }
    }

    fn key_settings(&self, request: &ConnectionRequest) -> Option<KeySettings> {
        let passphrase = Passphrase::try_from(self.passphrase.clone()).ok()?;
        Some(KeySettings {
            // The caller's key length (0 from FFmpeg: the key material decides), so the two
            // cannot differ, which srt-protocol does not handle (`unimplemented!`).
            key_size: request.key_size(),
            passphrase,
        })
    }
}

async fn bind(address: SocketAddr) -> anyhow::Result<(SrtListener, srt_tokio::SrtIncoming)> {
    SrtListener::builder()
        .bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for SRT on {address}: {e}"))
}

/// Serves the listener; if it ever stops (a panic inside srt-protocol on a hostile packet ends
/// its task), binds again so one bad packet cannot end the service.
async fn supervise(
    server: Arc<SrtServer>,
    address: SocketAddr,
    mut bound: (SrtListener, srt_tokio::SrtIncoming),
) {
    // Owned here, so aborting the supervisor ends every connection with it.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (_listener, mut incoming) = bound;
        while let Some(request) = incoming.incoming().next().await {
            while connections.try_join_next().is_some() {}
            let server = server.clone();
            connections.spawn(async move { handle(server, request).await });
        }
        tracing::error!(%address, "SRT listener stopped; binding again");
        bound = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match bind(address).await {
                Ok(b) => break b,
                Err(e) => tracing::error!(error = %e, "SRT rebind failed"),
            }
        };
    }
}

async fn handle(server: Arc<SrtServer>, request: ConnectionRequest) {
    let remote = request.remote();
    let (role, info) = match server.decide(&request) {
        Ok(decision) => decision,
        Err((reason, code)) => {
            tracing::warn!(%remote, reason, "SRT connection refused");
            server.sessions.refused("srt", reason);
            let _ = request.reject(RejectReason::Server(code)).await;
            return;
        }
    };
    let key = server.key_settings(&request);
    let id = server.sessions.next_id();
    let name = info.resource;
    match role {
        Role::Publish => {
            // Claimed before the handshake ends, so two callers cannot both win the name.
            let Some(publisher) = server.hub.publish(&name, id) else {
                server.sessions.refused("srt", "conflict");
                let _ = request
                    .reject(RejectReason::Server(ServerRejectReason::Conflict))
                    .await;
                return;
            };
            let Some(mut socket) = accept(&server, request, key, remote).await else {
                return;
            };
            let session = server.sessions.open(id, "srt", "publish", &name, remote);
            tracing::info!(%remote, name, "SRT publish started");
            while let Some(Ok(packet)) = socket.next().await {
                session.received(packet.1.len());
                let dropped = publisher.send(packet, |_, _| {});
                if !dropped.is_empty() {
                    tracing::info!(readers = ?dropped, "SRT readers dropped: too slow");
                }
            }
            tracing::info!(%remote, name, "SRT publish ended");
        }
        Role::Read => {
            let Some(mut socket) = accept(&server, request, key, remote).await else {
                return;
            };
            let Some(mut subscription) = server.hub.subscribe(&name, id) else {
                let _ = socket.close().await;
                return;
            };
            let session = server.sessions.open(id, "srt", "read", &name, remote);
            tracing::info!(%remote, name, "SRT read started");
            loop {
                tokio::select! {
                    packet = subscription.queue.recv() => {
                        let Some((_, payload)) = packet else { break };
                        let len = payload.len();
                        // Stamped now: the publisher's instants can predate this socket, and
                        // the reader's TSBPD would hold such packets.
                        if socket.send((Instant::now(), payload)).await.is_err() {
                            break;
                        }
                        session.sent(len);
                    }
                    // A reader sends nothing; its stream ends when the connection does.
                    incoming = socket.next() => if incoming.is_none() { break },
                }
            }
            let _ = socket.close().await;
            tracing::info!(%remote, name, "SRT read ended");
        }
    }
}

/// Finishes the handshake. A passphrase mismatch fails here: srt-protocol answers BADSECRET to
/// a wrong one, and UNSECURE to a caller that encrypts when we have none or does not when we do.
async fn accept(
    server: &SrtServer,
    request: ConnectionRequest,
    key: Option<KeySettings>,
    remote: SocketAddr,
) -> Option<SrtSocket> {
    match request.accept(key).await {
        Ok(socket) => Some(socket),
        Err(e) => {
            tracing::warn!(%remote, error = %e, "SRT handshake failed (passphrase mismatch?)");
            server.sessions.refused("srt", "handshake");
            None
        }
    }
}
