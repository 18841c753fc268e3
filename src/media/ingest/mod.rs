//! WHIP ingest: a process input `{whip}` reads RTP that a WebRTC publisher sends.
//!
//! Each such process has one [`Ingest`]: four loopback ports FFmpeg reads (video RTP on the
//! first, audio RTP on the third: FFmpeg binds RTP port + 1 for RTCP), the SDP file that tells
//! FFmpeg what arrives there, and at most one [`publisher::Publisher`] at a time. Publishers come
//! and go; FFmpeg keeps reading the same ports, and the packets it gets continue one RTP source
//! per medium (see [`continuity`]).

mod continuity;
pub mod formats;
mod publisher;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::peer::{Direction, Watchers};
use super::ports::{PortAllocator, PortQuad};
use super::sdp::Offer;
use super::session::{Answered, OfferError, Owner, Session, SessionInfo};
use super::Shared;
use continuity::Continuity;
use formats::{accept_offer, IngestMedia, FFMPEG_AUDIO_PT, FFMPEG_VIDEO_PT};
use publisher::{Publisher, Sink};

/// The WHIP side of a process, for the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IngestInfo {
    /// Loopback port of the video RTP FFmpeg reads.
    pub video_port: u16,
    /// Loopback port of the audio RTP FFmpeg reads.
    pub audio_port: u16,
    /// The SDP file FFmpeg reads.
    pub sdp: String,
    /// The publisher, when one is attached.
    pub publisher: Option<SessionInfo>,
}

struct State {
    publisher: Option<(String, Publisher)>,
    /// A POST is negotiating a publisher (without the lock); the slot is taken meanwhile.
    negotiating: bool,
    /// Bumped by every close, so a negotiation that spans one knows its publisher must go.
    epoch: u64,
    /// What the SDP file says now.
    media: IngestMedia,
}

struct Inner {
    id: String,
    ports: Mutex<PortQuad>,
    allocator: PortAllocator,
    sdp_path: PathBuf,
    shared: Arc<Shared>,
    state: Mutex<State>,
    video: Arc<Mutex<Continuity>>,
    audio: Arc<Mutex<Continuity>>,
    dead_tx: tokio::sync::mpsc::UnboundedSender<String>,
}

/// The WHIP input of one process. Dropping it tears the publisher down and frees the ports.
pub struct Ingest {
    inner: Arc<Inner>,
}

impl Ingest {
    pub(super) fn new(
        id: &str,
        ports: PortQuad,
        allocator: PortAllocator,
        sdp_path: PathBuf,
        shared: Arc<Shared>,
    ) -> std::io::Result<Ingest> {
        // Fixed per process (like the egress legs'), so the source FFmpeg sees never changes.
        let ssrc = 0x5d00_0000u32 | u32::from(ports.video());
        let (dead_tx, dead_rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            id: id.to_string(),
            sdp_path,
            shared,
            state: Mutex::new(State {
                publisher: None,
                negotiating: false,
                epoch: 0,
                media: IngestMedia::default(),
            }),
            video: Arc::new(Mutex::new(Continuity::new(ssrc, FFMPEG_VIDEO_PT))),
            audio: Arc::new(Mutex::new(Continuity::new(ssrc + 1, FFMPEG_AUDIO_PT))),
            ports: Mutex::new(ports),
            allocator,
            dead_tx,
        });
        inner.write_sdp(&IngestMedia::default())?;
        tokio::spawn(watch(Arc::downgrade(&inner), dead_rx));
        Ok(Ingest { inner })
    }

    /// The SDP file FFmpeg reads.
    pub fn sdp_path(&self) -> &Path {
        &self.inner.sdp_path
    }

    /// Negotiates a publisher (blocking: run it off the async runtime). A live publisher, or
    /// another negotiation in progress, makes this fail with [`OfferError::Busy`]; a publisher
    /// whose connection failed, never came up or went silent is replaced.
    ///
    /// The state lock is held only to reserve the slot and to install the result: a webrtcbin
    /// that hangs costs this POST its bounded wait, never the lock that PATCH, DELETE, the API's
    /// views and the reaper take.
    pub(super) fn publish(
        &self,
        offer: &Offer,
        on_connected: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<Answered, OfferError> {
        let inner = &self.inner;
        let accepted = accept_offer(offer).map_err(OfferError::Codec)?;
        let (reservation, stale) = inner.reserve()?;
        if let Some((resource, publisher)) = stale {
            tracing::info!(process = %inner.id, publisher = %resource, "replacing a stale publisher");
            // Dropped outside the lock: teardown waits for webrtcbin's threads.
            drop(publisher);
        }
        let resource = super::stream::resource_id();
        let dead_tx = inner.dead_tx.clone();
        let dead_id = resource.clone();
        let (video_port, audio_port) = inner.ports();
        let sinks = [
            Sink {
                port: video_port,
                continuity: inner.video.clone(),
            },
            Sink {
                port: audio_port,
                continuity: inner.audio.clone(),
            },
        ];
        let config = &inner.shared.config;
        let owner: Weak<Inner> = Arc::downgrade(inner);
        let codecs = accepted.iter().map(|a| a.codec.name().to_string());
        let session = Arc::new(Session::new(
            resource.clone(),
            &inner.id,
            Direction::Receive,
            codecs.collect(),
            super::peer::new_webrtcbin(&config.ice)?,
            &config.ice,
            owner,
        ));
        let publisher = Publisher::create(
            &format!("whip-{}", inner.id),
            session.clone(),
            offer,
            &accepted,
            sinks,
            &config.ice,
            config.jitter_latency_ms,
            Watchers {
                on_dead: Box::new(move || {
                    let _ = dead_tx.send(dead_id.clone());
                }),
                on_connected,
            },
        )?;
        let media = IngestMedia::of(&accepted);
        let mut state = inner.lock();
        if state.epoch != reservation.epoch {
            // The input was closed while this negotiated: the publisher must not outlive it.
            drop(state);
            drop(publisher);
            return Err(OfferError::Closed);
        }
        let media_changed = media != state.media;
        if media_changed {
            // Under the lock so that the file and `state.media` never disagree (a small file:
            // the lock is held for one write, not for a negotiation).
            inner.write_sdp(&media).map_err(|e| {
                OfferError::Io(format!("cannot write the SDP file for FFmpeg: {e}"))
            })?;
            state.media = media;
        }
        let answer = publisher.answer.clone();
        tracing::info!(process = %inner.id, publisher = %resource, codecs = ?session.info().codecs, media_changed, "publisher added");
        inner.shared.sessions.insert(&session);
        state.publisher = Some((resource.clone(), publisher));
        reservation.installed(&mut state);
        Ok(Answered {
            resource,
            answer,
            etag: session.etag(),
            media_changed,
        })
    }

    /// This input's publisher with this resource id.
    pub fn session(&self, resource: &str) -> Option<Arc<Session>> {
        self.inner.shared.sessions.owned(resource, &self.inner)
    }

    /// Ends whatever session there is (blocking), e.g. when the process stops.
    pub fn close(&self) {
        let taken = {
            let mut state = self.inner.lock();
            state.epoch += 1;
            state.publisher.take()
        };
        if let Some((resource, _publisher)) = taken {
            self.inner.shared.sessions.remove(&resource);
            tracing::info!(process = %self.inner.id, publisher = %resource, "publisher closed");
        }
    }

    /// FFmpeg is about to start: it binds the ports itself.
    pub fn release_ports(&self) {
        self.inner.lock_ports().release();
    }

    /// FFmpeg exited: the ports are held again until the next start. When another program took
    /// one meanwhile (FFmpeg then fails to bind it), the input moves to a free quad: the SDP file
    /// is rewritten (FFmpeg reads it on its next start) and the publisher's packets follow.
    pub fn hold_ports(&self) {
        let inner = &self.inner;
        let mut ports = inner.lock_ports();
        if ports.hold() {
            return;
        }
        let Some(fresh) = inner.allocator.allocate_quad() else {
            tracing::warn!(process = %inner.id, "a WHIP input port is taken and no other ports are free");
            return;
        };
        tracing::warn!(process = %inner.id, from = ports.video(), to = fresh.video(), "a WHIP input port was taken by another program; moving the input");
        *ports = fresh;
        let (video, audio) = (ports.video(), ports.audio());
        drop(ports);
        let mut state = inner.lock();
        if let Err(e) = inner.write_sdp(&state.media) {
            tracing::warn!(process = %inner.id, error = %e, "cannot rewrite the WHIP SDP file");
        }
        if let Some((_, publisher)) = state.publisher.as_mut() {
            publisher.retarget(video, audio);
        }
    }

    /// FFmpeg (re)started: it needs a key frame to begin with, and it binds its ports only after a
    /// moment, so the publisher is asked twice.
    pub fn ffmpeg_started(&self) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            for wait in [Duration::from_millis(300), Duration::from_millis(1000)] {
                tokio::time::sleep(wait).await;
                match inner.upgrade() {
                    Some(inner) => inner.request_key_frame(),
                    None => return,
                }
            }
        });
    }

    /// The state for the API.
    pub fn info(&self) -> IngestInfo {
        let (video_port, audio_port) = self.inner.ports();
        let state = self.inner.lock();
        IngestInfo {
            video_port,
            audio_port,
            sdp: self.inner.sdp_path.display().to_string(),
            publisher: state.publisher.as_ref().map(|(_, p)| p.session.info()),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_ports(&self) -> MutexGuard<'_, PortQuad> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ports(&self) -> (u16, u16) {
        let ports = self.lock_ports();
        (ports.video(), ports.audio())
    }

    /// Takes the publisher slot for a negotiation: `Busy` when a live publisher or another
    /// negotiation has it; a stale publisher is handed back to be dropped outside the lock.
    fn reserve(&self) -> Result<(Reservation<'_>, Option<(String, Publisher)>), OfferError> {
        let mut state = self.lock();
        if state.negotiating {
            return Err(OfferError::Busy);
        }
        if let Some((_, publisher)) = &state.publisher {
            if !self.is_stale(publisher) {
                return Err(OfferError::Busy);
            }
        }
        state.negotiating = true;
        let reservation = Reservation {
            inner: self,
            epoch: state.epoch,
            done: false,
        };
        let stale = state.publisher.take();
        if let Some((resource, _)) = &stale {
            self.shared.sessions.remove(resource);
        }
        Ok((reservation, stale))
    }

    fn is_stale(&self, publisher: &Publisher) -> bool {
        let config = &self.shared.config;
        publisher
            .session
            .is_stale(config.connect_timeout, config.consent_timeout)
    }

    fn remove(&self, resource: &str, why: &str) -> bool {
        let taken = {
            let mut state = self.lock();
            match &state.publisher {
                Some((id, _)) if id == resource => state.publisher.take(),
                _ => None,
            }
        };
        self.shared.sessions.remove(resource);
        // Dropped outside the lock: teardown waits for webrtcbin's threads.
        let found = taken.is_some();
        if found {
            tracing::info!(process = %self.id, publisher = %resource, why, "publisher removed");
        }
        found
    }

    /// Written next to the final name and renamed, so FFmpeg never reads half a file.
    fn write_sdp(&self, media: &IngestMedia) -> std::io::Result<()> {
        let (video, audio) = self.ports();
        let text = media.ffmpeg_sdp(&format!("streamcore WHIP {}", self.id), video, audio);
        let tmp = self.sdp_path.with_extension("sdp.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.sdp_path)
    }

    fn request_key_frame(&self) {
        // This runs on the async runtime: a lock someone holds (a retarget, an install) is skipped;
        // the next tick asks again.
        let Ok(state) = self.state.try_lock() else {
            return;
        };
        if let Some((_, publisher)) = state.publisher.as_ref() {
            if publisher.session.flags().connected() {
                let sent = publisher.request_key_frame();
                tracing::trace!(process = %self.id, sent, "asked the publisher for a key frame");
            }
        }
    }

    /// Takes a stale publisher out (to be dropped off the runtime), without waiting for the lock.
    fn take_stale(&self) -> Option<(String, Publisher)> {
        let mut state = self.state.try_lock().ok()?;
        let stale = state
            .publisher
            .as_ref()
            .is_some_and(|(_, p)| self.is_stale(p));
        let taken = stale.then(|| state.publisher.take()).flatten();
        if let Some((resource, _)) = &taken {
            self.shared.sessions.remove(resource);
        }
        taken
    }
}

/// The publisher slot, taken by one negotiation. Dropping it unfinished (an error, a timeout, a
/// panic unwinding) gives the slot back.
struct Reservation<'a> {
    inner: &'a Inner,
    epoch: u64,
    done: bool,
}

impl Reservation<'_> {
    /// The publisher is in the slot (the caller holds the lock).
    fn installed(mut self, state: &mut State) {
        state.negotiating = false;
        self.done = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.inner.lock().negotiating = false;
        }
    }
}

impl Owner for Inner {
    fn remove(&self, resource: &str) -> bool {
        Inner::remove(self, resource, "deleted")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some((resource, _)) = &state.publisher {
            self.shared.sessions.remove(resource);
        }
        let _ = std::fs::remove_file(&self.sdp_path);
    }
}

/// Removes publishers whose connection failed or went stale, and asks the live one for key
/// frames on the configured interval.
async fn watch(inner: Weak<Inner>, mut dead_rx: tokio::sync::mpsc::UnboundedReceiver<String>) {
    let interval = match inner.upgrade() {
        Some(inner) => inner.shared.config.whip_key_interval,
        None => return,
    };
    let mut reap = tokio::time::interval(Duration::from_secs(1));
    let mut key = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            dead = dead_rx.recv() => {
                let (Some(resource), Some(inner)) = (dead, inner.upgrade()) else { return };
                let _ = tokio::task::spawn_blocking(move || inner.remove(&resource, "connection failed")).await;
            }
            _ = reap.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                if let Some((resource, publisher)) = inner.take_stale() {
                    tracing::info!(process = %inner.id, publisher = %resource, "stale publisher removed");
                    let _ = tokio::task::spawn_blocking(move || drop(publisher)).await;
                }
            }
            _ = key.tick(), if interval.is_some() => {
                let Some(inner) = inner.upgrade() else { return };
                inner.request_key_frame();
            }
        }
    }
}
