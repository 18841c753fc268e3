//! One RTMP connection: handshake, then publish or play.

use std::net::SocketAddr;
use std::sync::Arc;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};

use super::media::{is_key_frame, is_video_header, Media, StartCache};
use super::path::{target, Target};
use super::{RtmpServer, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, REQUEST_TIMEOUT, WRITE_TIMEOUT};
use crate::ingest::hub::Publisher;
use crate::ingest::sessions::SessionGuard;

/// Messages written to a reader per wake-up, so a backlog goes out in few system calls.
const BATCH: usize = 64;

enum Role {
    Pending,
    Publishing {
        publisher: Publisher<Media, StartCache>,
        session: SessionGuard,
    },
    Playing {
        stream_id: u32,
        key_seen: bool,
        session: SessionGuard,
    },
}

struct Conn<'a> {
    server: &'a Arc<RtmpServer>,
    session: ServerSession,
    id: u64,
    remote: SocketAddr,
    role: Role,
    /// Bytes to write before the next read.
    out: Vec<u8>,
    /// A reader's queue, handed to the loop once `play` is accepted.
    queue: Option<mpsc::Receiver<Media>>,
    /// Refused or finished: flush and close.
    closing: bool,
}

/// Serves one connection, plain TCP or the stream of a finished TLS handshake.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Arc<RtmpServer>,
    mut socket: S,
    remote: SocketAddr,
) -> anyhow::Result<()> {
    let accepted = Instant::now();
    let remaining = timeout(HANDSHAKE_TIMEOUT, handshake(&mut socket))
        .await
        .map_err(|_| anyhow::anyhow!("handshake timed out"))??;
    let (session, initial) =
        ServerSession::new(ServerSessionConfig::new()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut c = Conn {
        server,
        session,
        id: server.sessions.next_id(),
        remote,
        role: Role::Pending,
        out: Vec::new(),
        queue: None,
        closing: false,
    };
    c.results(initial)?;
    c.input(&remaining)?;
    let mut queue: Option<mpsc::Receiver<Media>> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        c.flush(&mut socket).await?;
        if c.closing {
            return Ok(());
        }
        if let Some(q) = c.queue.take() {
            queue = Some(q);
        }
        let playing = matches!(c.role, Role::Playing { .. });
        let publishing = matches!(c.role, Role::Publishing { .. });
        let read = match queue.as_mut() {
            Some(queue) if playing => {
                tokio::select! {
                    n = socket.read(&mut buf) => n?,
                    media = queue.recv() => {
                        c.play_batch(media, queue)?;
                        continue;
                    }
                }
            }
            _ if publishing => timeout(IDLE_TIMEOUT, socket.read(&mut buf))
                .await
                .map_err(|_| anyhow::anyhow!("publisher idle"))??,
            _ => timeout_at(
                accepted + HANDSHAKE_TIMEOUT + REQUEST_TIMEOUT,
                socket.read(&mut buf),
            )
            .await
            .map_err(|_| anyhow::anyhow!("no publish or play in time"))??,
        };
        if read == 0 {
            return Ok(());
        }
        if let Role::Publishing { session, .. } = &c.role {
            session.received(read);
        }
        c.input(&buf[..read])?;
    }
}

/// Runs the server side of the handshake; returns the bytes that followed it.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut S) -> anyhow::Result<Vec<u8>> {
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            anyhow::bail!("closed during the handshake");
        }
        match handshake
            .process_bytes(&buf[..n])
            .map_err(|e| anyhow::anyhow!("bad handshake: {e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                write(socket, &response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                write(socket, &response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// Writes and flushes: TLS keeps written bytes in its buffer until flushed (a no-op on TCP).
async fn write<S: AsyncWrite + Unpin>(socket: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    socket.write_all(bytes).await?;
    socket.flush().await
}

impl Conn<'_> {
    fn input(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let results = self
            .session
            .handle_input(bytes)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.results(results)
    }

    fn results(&mut self, results: Vec<ServerSessionResult>) -> anyhow::Result<()> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.out.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => self.event(event)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn event(&mut self, event: ServerSessionEvent) -> anyhow::Result<()> {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                let results = self
                    .session
                    .accept_request(request_id)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                self.results(results)?;
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => self.publish(request_id, &app_name, &stream_key)?,
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => self.play_request(request_id, &app_name, &stream_key, stream_id)?,
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                self.relay(Media::Metadata(Arc::new(metadata)))
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.relay(Media::Video(data, timestamp)),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.relay(Media::Audio(data, timestamp)),
            ServerSessionEvent::PublishStreamFinished { .. }
            | ServerSessionEvent::PlayStreamFinished { .. } => self.closing = true,
            _ => {}
        }
        Ok(())
    }

    /// The channel path if the client's token is right; otherwise refuses the request.
    fn authorize(
        &mut self,
        request_id: u32,
        app: &str,
        key: &str,
    ) -> anyhow::Result<Option<String>> {
        let token = &self.server.token;
        let Target { path, token: given } = target(app, key, !token.is_empty());
        let ok = token.is_empty()
            || given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
        if ok {
            return Ok(Some(path));
        }
        self.refuse(request_id, &path, "token", "NetStream.Publish.Unauthorized")?;
        Ok(None)
    }

    fn refuse(
        &mut self,
        request_id: u32,
        path: &str,
        reason: &str,
        code: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(remote = %self.remote, path, reason, "RTMP request refused");
        self.server.sessions.refused("rtmp", reason);
        let results = self
            .session
            .reject_request(request_id, code, reason)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.results(results)?;
        self.closing = true;
        Ok(())
    }

    fn publish(&mut self, request_id: u32, app: &str, key: &str) -> anyhow::Result<()> {
        if !matches!(self.role, Role::Pending) {
            return self.refuse(request_id, "", "state", "NetStream.Publish.BadName");
        }
        let Some(path) = self.authorize(request_id, app, key)? else {
            return Ok(());
        };
        if !path.starts_with(&self.server.app) {
            return self.refuse(request_id, &path, "app", "NetStream.Publish.BadName");
        }
        let Some(publisher) = self.server.hub.publish(&path, self.id) else {
            return self.refuse(request_id, &path, "conflict", "NetStream.Publish.BadName");
        };
        let results = self
            .session
            .accept_request(request_id)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let session = self
            .server
            .sessions
            .open(self.id, "rtmp", "publish", &path, self.remote);
        tracing::info!(remote = %self.remote, path, "RTMP publish started");
        self.role = Role::Publishing { publisher, session };
        self.results(results)
    }

    fn relay(&mut self, media: Media) {
        if let Role::Publishing { publisher, .. } = &self.role {
            let dropped = publisher.send(media, StartCache::update);
            if !dropped.is_empty() {
                tracing::info!(readers = ?dropped, "RTMP readers dropped: too slow");
            }
        }
    }

    fn play_request(
        &mut self,
        request_id: u32,
        app: &str,
        key: &str,
        stream_id: u32,
    ) -> anyhow::Result<()> {
        if !matches!(self.role, Role::Pending) {
            return self.refuse(request_id, "", "state", "NetStream.Play.Failed");
        }
        let Some(path) = self.authorize(request_id, app, key)? else {
            return Ok(());
        };
        let Some(subscription) = self.server.hub.subscribe(&path, self.id) else {
            return self.refuse(
                request_id,
                &path,
                "not found",
                "NetStream.Play.StreamNotFound",
            );
        };
        let results = self
            .session
            .accept_request(request_id)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.results(results)?;
        let session = self
            .server
            .sessions
            .open(self.id, "rtmp", "read", &path, self.remote);
        tracing::info!(remote = %self.remote, path, "RTMP play started");
        let cache = subscription.cache;
        self.role = Role::Playing {
            stream_id,
            key_seen: !cache.gop.is_empty(),
            session,
        };
        if let Some(metadata) = &cache.metadata {
            self.play(Media::Metadata(metadata.clone()))?;
        }
        for media in cache.start() {
            self.play(media.clone())?;
        }
        self.queue = Some(subscription.queue);
        Ok(())
    }

    /// Writes `first` and whatever else is queued, up to a batch; the end of the queue (the
    /// publisher left, or this reader was too slow) ends the connection.
    fn play_batch(
        &mut self,
        first: Option<Media>,
        queue: &mut mpsc::Receiver<Media>,
    ) -> anyhow::Result<()> {
        let Some(first) = first else {
            self.closing = true;
            return Ok(());
        };
        self.play(first)?;
        for _ in 1..BATCH {
            match queue.try_recv() {
                Ok(media) => self.play(media)?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn play(&mut self, media: Media) -> anyhow::Result<()> {
        let Role::Playing {
            stream_id,
            key_seen,
            ..
        } = &mut self.role
        else {
            return Ok(());
        };
        let packet = match media {
            Media::Metadata(m) => self.session.send_metadata(*stream_id, &m),
            Media::Video(data, ts) => {
                // A reader that joined without a cached GOP starts at the next key frame.
                if !*key_seen && !is_video_header(&data) {
                    if !is_key_frame(&data) {
                        return Ok(());
                    }
                    *key_seen = true;
                }
                self.session.send_video_data(*stream_id, data, ts, false)
            }
            Media::Audio(data, ts) => self.session.send_audio_data(*stream_id, data, ts, false),
        }
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.out.extend_from_slice(&packet.bytes);
        Ok(())
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, socket: &mut S) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        timeout(WRITE_TIMEOUT, write(socket, &self.out))
            .await
            .map_err(|_| anyhow::anyhow!("write timed out"))??;
        if let Role::Playing { session, .. } = &self.role {
            session.sent(self.out.len());
        }
        self.out.clear();
        Ok(())
    }
}
