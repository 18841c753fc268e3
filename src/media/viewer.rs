//! One WHEP viewer: a `[queue →] webrtcbin` branch per track, hung off the stream's tees.
//!
//! Everything here blocks (promises, ICE gathering), so callers run it off the async runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_rtp::RTPBuffer;
use gstreamer_webrtc::WebRTCRTPTransceiverDirection;

use super::catchup::{self, CatchUp};
use super::gop::GopCache;
use super::keyframe;
use super::peer::{self, NegotiationError, PeerFlags, Watchers};
use super::sdp::{Kind, Offer, SourceTrack};
use super::sendpath;
use super::session::Session;
use super::MediaConfig;

/// A negotiation step failed.
type ViewerError = NegotiationError;

/// What a branch of one track needs.
pub struct TrackPlan {
    /// Index of the offer's m-line this track answers.
    pub mline: u32,
    /// The stream's track.
    pub source: SourceTrack,
    /// The tee to hang the branch on.
    pub tee: gst::Element,
    /// Caps with the viewer's payload type.
    pub caps: gst::Caps,
    /// The track is re-encoded here, so a key frame can be asked for when the viewer connects.
    pub transcoded: bool,
    /// The stream's current GOP, to start the viewer at once on passthrough video.
    pub gop: Option<Arc<GopCache>>,
}

struct Branch {
    tee: gst::Element,
    tee_pad: gst::Pad,
    /// The pad the tee pad links to: the queue's when there is one, else webrtcbin's.
    head: gst::Pad,
    elements: Vec<gst::Element>,
}

/// A connected (or connecting) viewer.
pub struct Viewer {
    /// Its session (webrtcbin, flags, what the API reads).
    pub session: Arc<Session>,
    /// The answer we sent.
    pub answer: String,
    branches: Vec<Branch>,
}

/// Builds the viewer inside `pipeline`, negotiates, and returns once all candidates are gathered.
/// `prepared` are the sink pads by kind of a webrtcbin from the [`super::pool`], whose
/// transceivers exist already; without them each track asks webrtcbin for a new one.
pub fn create(
    pipeline: &gst::Pipeline,
    session: Arc<Session>,
    offer: &Offer,
    tracks: Vec<TrackPlan>,
    prepared: Option<[(Kind, gst::Pad); 2]>,
    config: &MediaConfig,
    watchers: Watchers,
) -> Result<Viewer, ViewerError> {
    let viewer = Viewer {
        session,
        answer: String::new(),
        branches: Vec::new(),
    };
    // Until negotiation succeeds the viewer belongs to this guard, which tears it down on an
    // error and on a panic alike (unwinding drops it), so no webrtcbin threads or sockets stay:
    // a prepared webrtcbin is in READY already, before it is even in the pipeline.
    let mut unfinished = Unfinished {
        pipeline,
        viewer: Some(viewer),
    };
    let viewer = unfinished.viewer.as_mut().expect("set just above");
    pipeline.add(viewer.session.webrtcbin())?;
    let session = viewer.session.clone();
    let mut plan = Plan {
        pipeline,
        viewer,
        tracks,
        prepared,
        queue_buffers: config.viewer_queue_buffers,
    };
    let answer = session.negotiate(offer, &config.ice, &mut plan, watchers)?;
    let mut viewer = unfinished.viewer.take().expect("taken only here");
    viewer.answer = answer;
    Ok(viewer)
}

/// A viewer whose negotiation has not finished.
struct Unfinished<'a> {
    pipeline: &'a gst::Pipeline,
    viewer: Option<Viewer>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(mut viewer) = self.viewer.take() {
            viewer.teardown(self.pipeline);
        }
    }
}

use gstreamer::glib;

/// A viewer's side of [`peer::negotiate`]: a branch per track off the stream's tees.
struct Plan<'a> {
    pipeline: &'a gst::Pipeline,
    viewer: &'a mut Viewer,
    tracks: Vec<TrackPlan>,
    prepared: Option<[(Kind, gst::Pad); 2]>,
    queue_buffers: u32,
}

impl peer::Tracks for Plan<'_> {
    fn start(&mut self, webrtcbin: &gst::Element) -> Result<(), NegotiationError> {
        Ok(webrtcbin.sync_state_with_parent()?)
    }

    /// One transceiver per track, its codec preferences being exactly the offer's format. If
    /// webrtcbin were left to match pads to m-lines by the caps that flow, a mismatch (baseline
    /// vs constrained baseline) leaves a transceiver without a transport, and webrtcbin 1.22
    /// aborts the whole process on that.
    fn add(
        &mut self,
        webrtcbin: &gst::Element,
        direction: WebRTCRTPTransceiverDirection,
    ) -> Result<Vec<(u32, u8)>, NegotiationError> {
        let mut tracks = std::mem::take(&mut self.tracks);
        tracks.sort_by_key(|t| t.mline);
        let mut keep = Vec::new();
        for track in tracks {
            let prepared = self.prepared.as_ref().and_then(|sinks| {
                sinks
                    .iter()
                    .find(|(kind, _)| *kind == track.source.kind)
                    .map(|(_, pad)| pad.clone())
            });
            let sink = match prepared {
                Some(pad) => pad,
                None => peer::request_sink(webrtcbin)?,
            };
            peer::set_transceiver(&sink, direction, &track.caps)?;
            self.viewer.branches.push(branch(
                self.pipeline,
                &track,
                &sink,
                self.queue_buffers,
                self.viewer.session.flags().clone(),
            )?);
            let pt = track
                .caps
                .structure(0)
                .and_then(|s| s.get::<i32>("payload").ok());
            if let Some(pt) = pt {
                keep.push((track.mline, pt as u8));
            }
        }
        Ok(keep)
    }

    /// The branches start and join their tees once webrtcbin knows the offer.
    fn remote_set(&mut self) -> Result<(), NegotiationError> {
        for branch in &self.viewer.branches {
            for element in branch.elements.iter().rev() {
                element.sync_state_with_parent()?;
            }
            branch
                .tee_pad
                .link(&branch.head)
                .map_err(|e| ViewerError::Failed(e.to_string()))?;
        }
        Ok(())
    }
}

/// `tee → [queue →] sink`: the tee pad itself (or the queue) carries the viewer's caps and gate,
/// so a packet reaches webrtcbin through no element of its own and buffer lists stay lists.
fn branch(
    pipeline: &gst::Pipeline,
    track: &TrackPlan,
    sink: &gst::Pad,
    queue_buffers: u32,
    flags: Arc<PeerFlags>,
) -> Result<Branch, ViewerError> {
    let neg = |e: glib::BoolError| ViewerError::Failed(e.to_string());
    let tee_pad = track
        .tee
        .request_pad_simple("src_%u")
        .ok_or_else(|| ViewerError::Failed("tee gave no src pad".into()))?;
    let mut elements = Vec::new();
    // A queue gives the viewer its own streaming thread. Nothing downstream blocks (nicesink
    // sends without waiting), so by default the tee's thread pushes straight into webrtcbin and
    // each viewer costs two threads fewer.
    let (head, gated) = if queue_buffers > 0 {
        let queue = gst::ElementFactory::make("queue")
            .property("max-size-buffers", queue_buffers)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .property_from_str("leaky", "downstream")
            .property("silent", true)
            .build()
            .map_err(neg)?;
        pipeline.add(&queue).map_err(neg)?;
        let src = queue.static_pad("src").expect("queue has a src pad");
        src.link(sink)
            .map_err(|e| ViewerError::Failed(e.to_string()))?;
        let head = queue.static_pad("sink").expect("queue has a sink pad");
        elements.push(queue);
        (head, src)
    } else {
        (sink.clone(), tee_pad.clone())
    };
    install_caps(&tee_pad, track.caps.clone());
    let pt = track
        .caps
        .structure(0)
        .and_then(|s| s.get::<i32>("payload").ok())
        .unwrap_or(96) as u8;
    install_gate(
        &gated,
        &tee_pad,
        sink,
        keyframe::detector(&track.source.encoding()),
        pt,
        flags,
        track.transcoded,
        track.gop.clone(),
    );
    Ok(Branch {
        tee: track.tee.clone(),
        tee_pad,
        head,
        elements,
    })
}

/// What a `capssetter` did, without an element in the packets' path: the stream's caps event
/// reaches the viewer with its payload type and format fields, and caps queries from upstream
/// are not narrowed by this viewer (the payloader would otherwise adopt one viewer's payload
/// type, or find none that suits every viewer).
fn install_caps(tee_pad: &gst::Pad, ours: gst::Caps) {
    tee_pad.add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::QUERY_DOWNSTREAM,
        move |_, info| {
            match info.data.as_mut() {
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Caps(caps) = event.view() {
                        let merged = merged_caps(caps.caps(), &ours);
                        *event = gst::event::Caps::builder(&merged)
                            .seqnum(event.seqnum())
                            .build();
                    }
                }
                Some(gst::PadProbeData::Query(query)) => match query.view_mut() {
                    gst::QueryViewMut::Caps(q) => {
                        let any = gst::Caps::new_any();
                        let result = q.filter().map(|f| f.to_owned()).unwrap_or(any);
                        q.set_result(&result);
                        return gst::PadProbeReturn::Handled;
                    }
                    gst::QueryViewMut::AcceptCaps(q) => {
                        q.set_result(true);
                        return gst::PadProbeReturn::Handled;
                    }
                    _ => {}
                },
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// The incoming caps with every field of `ours` set on them (capssetter's `join` + merge).
fn merged_caps(incoming: &gst::CapsRef, ours: &gst::Caps) -> gst::Caps {
    let mut out = incoming.to_owned();
    if let (Some(target), Some(fields)) = (out.make_mut().structure_mut(0), ours.structure(0)) {
        if target.name() == fields.name() {
            for (name, value) in fields.iter() {
                target.set_value(name, value.clone());
            }
        }
    }
    out
}

/// Drops everything until DTLS is up (webrtcbin would drop it anyway, after paying for it), then
/// for video until a key frame so the decoder starts clean, and rewrites the payload type to the
/// viewer's. Payloaders push buffer lists, so both buffers and lists pass through here.
/// With a GOP cache the gate opens on any packet: the cached frames that lead up to it go first,
/// paced from a thread of their own ([`catchup`]) that goes on up to the live edge.
/// When it opens, webrtcbin has long linked its `sink` (caps reach it on the first push after
/// the branch is linked, DTLS takes longer), and no packet has gone down the branch yet: the
/// moment to shorten webrtcbin's send path ([`sendpath`]), before any thread pushes there.
#[allow(clippy::too_many_arguments)]
fn install_gate(
    pad: &gst::Pad,
    tee_pad: &gst::Pad,
    sink: &gst::Pad,
    key: Option<fn(&[u8]) -> bool>,
    pt: u8,
    flags: Arc<PeerFlags>,
    request_key: bool,
    gop: Option<Arc<GopCache>>,
) {
    let started = AtomicBool::new(key.is_none());
    // Instant start on a transcoded stream: once connected and waiting, ask the encoder for a key
    // frame (the stream's limiter merges the requests of many joining viewers).
    let upstream = tee_pad.downgrade();
    let asked = AtomicBool::new(!request_key);
    let ask = move || {
        if !asked.swap(true, Ordering::Relaxed) {
            if let Some(pad) = upstream.upgrade() {
                // An upstream event sent into the tee's src pad goes on to the encoder.
                let sent = pad.send_event(crate::media::transcode::force_key_unit_event());
                tracing::debug!(sent, "asked the encoder for a key frame");
            }
        }
    };
    let is_key = move |buffer: &gst::BufferRef| {
        RTPBuffer::from_buffer_readable(buffer)
            .ok()
            .is_some_and(|rtp| rtp.payload().is_ok_and(|p| key.is_some_and(|k| k(p))))
    };
    // Dropped buffers are returned as Handled (the binding frees them): with Drop, GStreamer
    // 1.22 can unref the probe's data pointer after the binding took it.
    let sink = sink.downgrade();
    let shortened = AtomicBool::new(false);
    // Set once the viewer starts from the cached GOP: live packets pass again once it is sent.
    let catching_up: OnceLock<Arc<CatchUp>> = OnceLock::new();
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |pad, info| {
            // The catch-up's own slices, rewritten already.
            if catchup::pushing() {
                return gst::PadProbeReturn::Ok;
            }
            if !flags.connected() {
                return gst::PadProbeReturn::Handled;
            }
            if !shortened.swap(true, Ordering::Relaxed) {
                if let Some(sink) = sink.upgrade() {
                    let done = sendpath::shorten(&sink);
                    tracing::debug!(pad = %sink.name(), shortened = done, "viewer send path");
                }
            }
            if let (false, Some(gop)) = (started.load(Ordering::Relaxed), &gop) {
                let first = match info.data.as_ref() {
                    Some(gst::PadProbeData::Buffer(buffer)) => Some(buffer.as_ref()),
                    Some(gst::PadProbeData::BufferList(list)) => list.get(0),
                    _ => None,
                };
                if let Some(c) = first.and_then(|b| CatchUp::start(pad, gop, b, pt)) {
                    tracing::debug!("viewer starts from the cached GOP");
                    started.store(true, Ordering::Relaxed);
                    let _ = catching_up.set(c);
                }
            }
            match info.data.as_mut() {
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    if !started.load(Ordering::Relaxed) {
                        if !is_key(buffer) {
                            ask();
                            return gst::PadProbeReturn::Handled;
                        }
                        started.store(true, Ordering::Relaxed);
                    }
                    if catching_up.get().is_some_and(|c| !c.admit_buffer(buffer)) {
                        return gst::PadProbeReturn::Handled;
                    }
                    set_payload_type(buffer, pt);
                }
                Some(gst::PadProbeData::BufferList(list)) => {
                    if !started.load(Ordering::Relaxed) {
                        let Some(first_key) = list.iter().position(&is_key) else {
                            ask();
                            return gst::PadProbeReturn::Handled;
                        };
                        started.store(true, Ordering::Relaxed);
                        if first_key > 0 {
                            list.make_mut().remove(0..first_key);
                        }
                    }
                    if catching_up.get().is_some_and(|c| !c.admit_list(list)) {
                        return gst::PadProbeReturn::Handled;
                    }
                    if list.iter().any(|b| payload_type(b) != Some(pt)) {
                        list.make_mut().foreach_mut(|mut buffer, _| {
                            set_payload_type(&mut buffer, pt);
                            std::ops::ControlFlow::Continue(Some(buffer))
                        });
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

fn payload_type(buffer: &gst::BufferRef) -> Option<u8> {
    RTPBuffer::from_buffer_readable(buffer)
        .ok()
        .map(|rtp| rtp.payload_type())
}

/// Rewrites the RTP payload type; copies the packet only when the tee shares it and it differs.
fn set_payload_type(buffer: &mut gst::Buffer, pt: u8) {
    if payload_type(buffer) == Some(pt) {
        return;
    }
    if let Ok(mut rtp) = RTPBuffer::from_buffer_writable(buffer.make_mut()) {
        rtp.set_payload_type(pt);
    }
}

impl Viewer {
    /// Detaches the branches from the tees (at an idle point of each tee pad), then shuts the
    /// viewer's elements down and removes them so webrtcbin finalises and joins its threads.
    pub fn teardown(&mut self, pipeline: &gst::Pipeline) {
        for branch in self.branches.drain(..) {
            let (done_tx, done_rx) = mpsc::channel::<()>();
            let tee = branch.tee.clone();
            let sink = Some(branch.head.clone());
            branch
                .tee_pad
                .add_probe(gst::PadProbeType::IDLE, move |pad, _| {
                    if let Some(sink) = &sink {
                        let _ = pad.unlink(sink);
                    }
                    tee.release_request_pad(pad);
                    let _ = done_tx.send(());
                    gst::PadProbeReturn::Remove
                });
            // The IDLE probe fires at once when the pad is idle, else between two buffers.
            if done_rx.recv_timeout(Duration::from_secs(2)).is_err() {
                tracing::warn!("tee pad never went idle; releasing it anyway");
                branch.tee.release_request_pad(&branch.tee_pad);
            }
            for element in &branch.elements {
                let _ = element.set_state(gst::State::Null);
                let _ = pipeline.remove(element);
            }
        }
        let webrtcbin = self.session.webrtcbin();
        let _ = webrtcbin.set_state(gst::State::Null);
        let _ = webrtcbin.state(gst::ClockTime::from_seconds(5));
        let _ = pipeline.remove(webrtcbin);
    }
}
