//! One stream = one GStreamer pipeline per WebRTC-enabled process: per track a front
//! (`rtp.rs`: `udpsrc → rtpbin` per RTP leg; `mpegts.rs`: `udpsrc → … → tsdemux → parse → pay`
//! for the TS leg), the chain (`chain.rs`: passthrough or transcode) and a tee, with viewers
//! hanging off the tees.
//!
//! The pipeline is kept across FFmpeg restarts (same ports, same payloaders, so sequence numbers
//! and timestamps continue); it is rebuilt only when the description of the media changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::gop::GopCache;
use super::peer::{self, Direction, Watchers};
use super::ports::PortPair;
use super::sdp::{parse_source, select_format, Kind, Offer, SourceTrack};
use super::session::{Answered, OfferError, Owner, Session};
use super::slots::{Slot, Slots};
use super::transcode::Decision;
use super::viewer::{self, TrackPlan, Viewer};
use super::Shared;

mod chain;
mod leg;
mod mpegts;
mod relay;
mod rtp;
mod timeline;
use crate::model::transcode::TranscodeSettings;

/// How a track reaches viewers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrackInfo {
    /// Video or audio.
    pub kind: Kind,
    /// Codec as FFmpeg sends it.
    pub codec: String,
    /// What viewers receive (H.264 or Opus after a transcode); absent when unsupported.
    pub output_codec: Option<String>,
    /// `passthrough`, `transcode`, or `unsupported`.
    pub path: String,
    /// Why that path.
    pub reason: String,
    /// Local port FFmpeg sends to.
    pub port: u16,
}

/// A stream's state for the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamInfo {
    /// Tracks described by FFmpeg's SDP; empty before it wrote one.
    pub tracks: Vec<TrackInfo>,
    /// Packets arrived within the last two seconds.
    pub flowing: bool,
    /// Viewers attached now.
    pub viewers: usize,
}

/// Per-process choices that shape the pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamOptions {
    /// FFmpeg sends one MPEG-TS leg to the video port (else one RTP leg per medium, with an SDP).
    pub mpegts: bool,
    /// Re-encode every medium, playable or not.
    pub force_transcode: bool,
    /// The process's transcode settings (server defaults with its overrides).
    pub transcode: TranscodeSettings,
}

/// One medium as the pipeline serves it.
struct Track {
    /// What FFmpeg sends.
    source: SourceTrack,
    /// What viewers receive (the source itself, or H.264 / Opus after a transcode).
    output: SourceTrack,
    /// The tee viewers hang off; `None` when the medium cannot be served.
    tee: Option<gst::Element>,
    /// How and why.
    decision: Decision,
    /// The current GOP of passthrough video, for joining viewers.
    gop: Option<Arc<GopCache>>,
}

struct Built {
    pipeline: gst::Pipeline,
    /// Filled at build from an SDP; by tsdemux's pads as they appear for a TS leg.
    tracks: Arc<Mutex<Vec<Track>>>,
    last_packet_ms: Arc<AtomicU64>,
    generation: u64,
    /// A TS leg's discovery of its media; `None` for RTP legs described by an SDP.
    discovery: Option<Arc<mpegts::Discovery>>,
}

impl Built {
    /// Logs the pipeline's errors and sets it playing.
    fn start(self, id: &str) -> Result<Built, String> {
        log_errors(&self.pipeline, id);
        self.pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| e.to_string())?;
        Ok(self)
    }

    fn tracks(&self) -> std::sync::MutexGuard<'_, Vec<Track>> {
        self.tracks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every medium the source carries has its track.
    fn ready(&self) -> bool {
        self.discovery.as_ref().is_none_or(|d| d.ready()) && !self.tracks().is_empty()
    }
}

struct Attached {
    viewer: Viewer,
    generation: u64,
    /// The viewer's slots under the stream's and the server's caps, given back when it goes.
    _slots: (Slot, Slot),
}

#[derive(Default)]
struct State {
    built: Option<Built>,
    options: StreamOptions,
    /// Options changed: rebuild even if FFmpeg's media did not.
    stale: bool,
    sdp_text: Option<String>,
    sdp_mtime: Option<SystemTime>,
    viewers: HashMap<String, Attached>,
    generation: u64,
}

struct Inner {
    id: String,
    ports: PortPair,
    sdp_path: PathBuf,
    shared: Arc<Shared>,
    /// The per-stream viewer cap.
    slots: Arc<Slots>,
    state: Mutex<State>,
    dead_tx: tokio::sync::mpsc::UnboundedSender<String>,
}

/// A WebRTC stream of one process. Dropping it stops the pipeline and drops its viewers.
pub struct Stream {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Stream {
    pub(super) fn new(
        id: &str,
        ports: PortPair,
        sdp_path: PathBuf,
        shared: Arc<Shared>,
        options: StreamOptions,
    ) -> Stream {
        let (dead_tx, dead_rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            id: id.to_string(),
            ports,
            sdp_path,
            slots: Slots::new(shared.config.max_viewers_per_stream),
            shared,
            state: Mutex::new(State {
                options,
                ..State::default()
            }),
            dead_tx,
        });
        tokio::spawn(watch(Arc::downgrade(&inner), dead_rx));
        Stream { inner }
    }

    /// Changes the per-process choices; the pipeline is rebuilt (viewers reconnect) if they
    /// differ from the current ones.
    pub fn set_options(&self, options: StreamOptions) {
        let mut state = self.inner.lock();
        if state.options != options {
            state.options = options;
            state.stale = true;
            state.sdp_mtime = None;
        }
    }

    /// Video and audio ports FFmpeg sends to.
    pub fn ports(&self) -> (u16, u16) {
        (self.inner.ports.video(), self.inner.ports.audio())
    }

    /// Where FFmpeg writes its SDP.
    pub fn sdp_path(&self) -> &Path {
        &self.inner.sdp_path
    }

    /// The state for the API.
    pub fn info(&self) -> StreamInfo {
        let state = self.inner.lock();
        let tracks = state
            .built
            .as_ref()
            .map(|b| b.tracks().iter().map(track_info).collect())
            .unwrap_or_default();
        StreamInfo {
            tracks,
            flowing: self.inner.flowing(&state),
            viewers: state.viewers.len(),
        }
    }

    /// Negotiates a new viewer (blocking: run it off the async runtime; the HTTP layer goes
    /// through [`super::Media::offer`]).
    pub(super) fn add_viewer(
        &self,
        offer: &Offer,
        on_connected: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<Answered, OfferError> {
        let inner = &self.inner;
        // Slots are taken before negotiating and held by guards: a failed or panicking
        // negotiation gives them back by unwinding, and concurrent POSTs never pass a cap.
        let (pipeline, plans, generation, stream_slot) = {
            let state = inner.lock();
            let Some(built) = state
                .built
                .as_ref()
                .filter(|b| inner.flowing(&state) && b.ready())
            else {
                return Err(OfferError::NotReady);
            };
            let slot = inner.slots.try_reserve().ok_or(OfferError::StreamFull)?;
            (
                built.pipeline.clone(),
                plan(built, offer)?,
                built.generation,
                slot,
            )
        };
        let server_slot = inner
            .shared
            .viewers
            .try_reserve()
            .ok_or(OfferError::ServerFull)?;
        let id = resource_id();
        let dead_tx = inner.dead_tx.clone();
        let dead_id = id.clone();
        let config = &inner.shared.config;
        let owner: Weak<Inner> = Arc::downgrade(inner);
        let kinds: Vec<Kind> = plans.iter().map(|t| t.source.kind).collect();
        let (webrtcbin, prepared) = match inner.shared.pool.take(&kinds) {
            Some(prepared) => {
                let (webrtcbin, sinks) = prepared.into_parts();
                (webrtcbin, Some(sinks))
            }
            None => (peer::new_webrtcbin(&config.ice)?, None),
        };
        let from_pool = prepared.is_some();
        let session = Arc::new(Session::new(
            id.clone(),
            &inner.id,
            Direction::Send,
            plans.iter().map(|t| t.source.encoding()).collect(),
            webrtcbin,
            &config.ice,
            owner,
        ));
        let mut viewer = viewer::create(
            &pipeline,
            session.clone(),
            offer,
            plans,
            prepared,
            config,
            Watchers {
                on_dead: Box::new(move || {
                    let _ = dead_tx.send(dead_id.clone());
                }),
                on_connected,
            },
        )?;
        let answer = viewer.answer.clone();
        let mut state = inner.lock();
        if state.generation != generation {
            // The pipeline was rebuilt while we negotiated: this viewer hangs off a dead one.
            drop(state);
            viewer.teardown(&pipeline);
            return Err(OfferError::NotReady);
        }
        tracing::info!(stream = %inner.id, viewer = %id, prepared = from_pool, "viewer added");
        inner.shared.sessions.insert(&session);
        state.viewers.insert(
            id.clone(),
            Attached {
                viewer,
                generation,
                _slots: (stream_slot, server_slot),
            },
        );
        Ok(Answered {
            resource: id,
            answer,
            etag: session.etag(),
            media_changed: false,
        })
    }

    /// Removes every viewer (blocking), e.g. when the process stops.
    pub fn close_viewers(&self) {
        self.inner.close_all();
    }

    /// This stream's viewer with this resource id.
    pub fn session(&self, resource: &str) -> Option<Arc<Session>> {
        self.inner.shared.sessions.owned(resource, &self.inner)
    }

    /// The attached viewers.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        let state = self.inner.lock();
        state
            .viewers
            .values()
            .map(|a| a.viewer.session.clone())
            .collect()
    }
}

fn track_info(track: &Track) -> TrackInfo {
    TrackInfo {
        kind: track.source.kind,
        codec: track.source.encoding(),
        output_codec: track.tee.as_ref().map(|_| track.output.encoding()),
        path: track.decision.path.to_string(),
        reason: track.decision.reason.clone(),
        port: track.source.port,
    }
}

/// Which of the stream's tracks the viewer gets, with its payload type. A track browsers cannot
/// play is left out (the viewer still gets the others); a playable track the viewer offered but
/// cannot decode refuses the viewer, since it asked for that medium.
fn plan(built: &Built, offer: &Offer) -> Result<Vec<TrackPlan>, OfferError> {
    let mut plans = Vec::new();
    let mut missing = Vec::new();
    let tracks = built.tracks();
    for track in tracks.iter() {
        let (Some(offered), Some(tee)) = (offer.track(track.output.kind), &track.tee) else {
            continue;
        };
        match select_format(&track.output, offered) {
            Some(caps) => plans.push(TrackPlan {
                mline: offered.mline,
                source: track.output.clone(),
                tee: tee.clone(),
                caps,
                transcoded: track.decision.path == "transcode",
                gop: track.gop.clone(),
            }),
            None => missing.push(track.output.encoding()),
        }
    }
    if !missing.is_empty() || plans.is_empty() {
        let stream: Vec<String> = tracks
            .iter()
            .map(|t| match t.tee {
                Some(_) => t.output.encoding(),
                None => format!("{} (not browser-playable)", t.source.encoding()),
            })
            .collect();
        let cannot = if missing.is_empty() {
            stream.join(", ")
        } else {
            missing.join(", ")
        };
        return Err(OfferError::Codec(format!(
            "the stream carries {}; the offer cannot receive {cannot}; it offers {}",
            stream.join(", "),
            offer.codec_names().join(", ")
        )));
    }
    Ok(plans)
}

pub(super) fn resource_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flowing(&self, state: &State) -> bool {
        state.built.as_ref().is_some_and(|b| {
            now_ms().saturating_sub(b.last_packet_ms.load(Ordering::Relaxed)) < 2000
        })
    }

    fn remove_viewer(&self, id: &str) -> bool {
        let (attached, pipeline) = {
            let mut state = self.lock();
            let Some(attached) = state.viewers.remove(id) else {
                return false;
            };
            self.shared.sessions.remove(id);
            let pipeline = state
                .built
                .as_ref()
                .filter(|b| b.generation == attached.generation)
                .map(|b| b.pipeline.clone());
            (attached, pipeline)
        };
        let mut viewer = attached.viewer;
        if let Some(pipeline) = pipeline {
            viewer.teardown(&pipeline);
        } else {
            let _ = viewer.session.webrtcbin().set_state(gst::State::Null);
        }
        tracing::info!(stream = %self.id, viewer = %id, "viewer removed");
        true
    }

    /// Reads FFmpeg's SDP when it changed and (re)builds the pipeline if the media changed; a TS
    /// leg's pipeline is built at once and rebuilt when options or the TS program change.
    fn refresh(&self) {
        if self.lock().options.mpegts {
            self.refresh_mpegts();
            return;
        }
        let mtime = std::fs::metadata(&self.sdp_path)
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_none() || mtime == self.lock().sdp_mtime {
            return;
        }
        let Ok(text) = std::fs::read_to_string(&self.sdp_path) else {
            return;
        };
        {
            let mut state = self.lock();
            state.sdp_mtime = mtime;
            if state.sdp_text.as_deref() == Some(text.as_str())
                && state.built.is_some()
                && !state.stale
            {
                return;
            }
        }
        let tracks = match parse_source(&text) {
            Ok(tracks) => tracks,
            Err(e) => {
                tracing::warn!(stream = %self.id, error = %e, "cannot read FFmpeg's SDP");
                return;
            }
        };
        let same_media = {
            let state = self.lock();
            !state.stale
                && state
                    .built
                    .as_ref()
                    .is_some_and(|b| b.tracks().iter().map(|t| &t.source).eq(tracks.iter()))
        };
        if same_media {
            self.lock().sdp_text = Some(text);
            return;
        }
        // The generation moves first: a negotiation finishing from here on sees it changed and
        // drops its viewer instead of joining a pipeline about to stop.
        let (generation, options) = {
            let mut state = self.lock();
            state.generation += 1;
            state.stale = false;
            (state.generation, state.options.clone())
        };
        self.stop_built();
        match rtp::build(
            &self.id,
            tracks,
            &self.ports,
            &self.shared,
            &options,
            generation,
        ) {
            Ok(built) => {
                tracing::info!(stream = %self.id, "stream pipeline running");
                let mut state = self.lock();
                state.built = Some(built);
                state.sdp_text = Some(text);
            }
            Err(e) => {
                tracing::error!(stream = %self.id, error = %e, "cannot build the stream pipeline")
            }
        }
    }

    fn refresh_mpegts(&self) {
        let (generation, options) = {
            let mut state = self.lock();
            if ts_current(&state) {
                return;
            }
            state.generation += 1;
            state.stale = false;
            (state.generation, state.options.clone())
        };
        self.stop_built();
        match mpegts::build(&self.id, &self.ports, &self.shared, &options, generation) {
            Ok(built) => {
                tracing::info!(stream = %self.id, "stream pipeline running (MPEG-TS leg)");
                let mut state = self.lock();
                state.built = Some(built);
                state.sdp_text = None;
            }
            Err(e) => {
                tracing::error!(stream = %self.id, error = %e, "cannot build the stream pipeline")
            }
        }
    }

    /// Closes every viewer and stops the pipeline they hung off (the generation has moved first).
    fn stop_built(&self) {
        self.close_all();
        let old = self.lock().built.take();
        if let Some(old) = old {
            let _ = old.pipeline.set_state(gst::State::Null);
        }
    }

    fn close_all(&self) {
        let ids: Vec<String> = self.lock().viewers.keys().cloned().collect();
        for id in ids {
            self.remove_viewer(&id);
        }
    }

    /// Whether a viewer is due to be reaped (flags only: cheap, never blocks).
    fn any_stale(&self) -> bool {
        let (timeout, consent) = (
            self.shared.config.connect_timeout,
            self.shared.config.consent_timeout,
        );
        self.lock()
            .viewers
            .values()
            .any(|a| a.viewer.session.is_stale(timeout, consent))
    }

    /// Whether [`Self::refresh`] would find nothing to do, known without touching the file
    /// system (a TS stream whose media has not changed); per-medium legs read FFmpeg's SDP file
    /// and are never settled here.
    fn settled(&self) -> bool {
        let state = self.lock();
        state.options.mpegts && ts_current(&state)
    }

    /// Viewers that never connected, whose connection died, or whose consent expired go.
    fn reap(&self) {
        let timeout = self.shared.config.connect_timeout;
        let consent = self.shared.config.consent_timeout;

        let stale: Vec<String> = self
            .lock()
            .viewers
            .iter()
            .filter(|(_, a)| a.viewer.session.is_stale(timeout, consent))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.remove_viewer(&id);
        }
    }
}

impl Owner for Inner {
    fn remove(&self, resource: &str) -> bool {
        self.remove_viewer(resource)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let viewers: Vec<Attached> = state.viewers.drain().map(|(_, a)| a).collect();
        for attached in &viewers {
            self.shared
                .sessions
                .remove(attached.viewer.session.resource());
        }
        if let Some(built) = state.built.take() {
            for mut attached in viewers {
                attached.viewer.teardown(&built.pipeline);
            }
            let _ = built.pipeline.set_state(gst::State::Null);
        }
    }
}

/// A TS stream's pipeline is built and its media have not changed under it.
fn ts_current(state: &State) -> bool {
    !state.stale
        && state
            .built
            .as_ref()
            .is_some_and(|b| b.discovery.as_ref().is_some_and(|d| !d.changed()))
}

async fn watch(inner: Weak<Inner>, mut dead: tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_reap = Instant::now();
    loop {
        tokio::select! {
            id = dead.recv() => {
                let Some(id) = id else { return };
                let Some(inner) = inner.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || inner.remove_viewer(&id)).await;
            }
            _ = tick.tick() => {
                let Some(strong) = inner.upgrade() else { return };
                let reap = last_reap.elapsed() >= Duration::from_secs(1);
                if reap {
                    last_reap = Instant::now();
                }
                // Most ticks find nothing to do; the checks read flags only, so they stay on the
                // runtime and a thread of the blocking pool is woken only for real work.
                let reap = reap && strong.any_stale();
                if !reap && strong.settled() {
                    continue;
                }
                let _ = tokio::task::spawn_blocking(move || {
                    strong.refresh();
                    if reap {
                        strong.reap();
                    }
                })
                .await;
            }
        }
    }
}

/// Pipeline errors go to the log (the bus is not watched otherwise).
fn log_errors(pipeline: &gst::Pipeline, id: &str) {
    if let Some(bus) = pipeline.bus() {
        let name = id.to_string();
        bus.set_sync_handler(move |_, msg| {
            if let gst::MessageView::Error(err) = msg.view() {
                tracing::error!(stream = %name, error = %err.error(), debug = ?err.debug(), "pipeline error");
            }
            gst::BusSyncReply::Drop
        });
    }
}
