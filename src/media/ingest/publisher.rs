//! One WHIP publisher: a pipeline of its own with a receiving webrtcbin whose RTP goes, rewritten
//! onto the process's continuous sources, to the loopback ports FFmpeg reads.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtp::RTPBuffer;
use gstreamer_webrtc::{WebRTCRTPTransceiver, WebRTCRTPTransceiverDirection};

use super::continuity::{Continuity, Verdict};
use super::formats::Accepted;
use crate::media::peer::{self, NegotiationError, Watchers};
use crate::media::sdp::{Kind, Offer};
use crate::media::session::Session;
use crate::media::IceConfig;

/// Where one medium goes: FFmpeg's port and the rewriting state that outlives publishers.
#[derive(Clone)]
pub struct Sink {
    /// Loopback port FFmpeg reads.
    pub port: u16,
    /// Shared with every publisher of the process.
    pub continuity: Arc<Mutex<Continuity>>,
}

/// A udpsink towards FFmpeg and the medium it carries.
type UdpSinkRef = (Kind, glib::WeakRef<gst::Element>);

/// A live publisher.
pub struct Publisher {
    pipeline: gst::Pipeline,
    /// Its session (webrtcbin, flags, what the API reads).
    pub session: Arc<Session>,
    /// The answer sent.
    pub answer: String,
    /// webrtcbin's video source pad, once the publisher's video arrives.
    video_pad: Arc<Mutex<Option<glib::WeakRef<gst::Pad>>>>,
    /// The udpsinks towards FFmpeg, by medium.
    udpsinks: Arc<Mutex<Vec<UdpSinkRef>>>,
}

impl Publisher {
    /// Builds the pipeline, negotiates, and returns once all candidates are gathered.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        name: &str,
        session: Arc<Session>,
        offer: &Offer,
        accepted: &[Accepted],
        sinks: [Sink; 2],
        ice: &IceConfig,
        jitter_latency_ms: u32,
        watchers: Watchers,
    ) -> Result<Publisher, NegotiationError> {
        let pipeline = gst::Pipeline::with_name(name);
        let webrtcbin = session.webrtcbin().clone();
        webrtcbin.set_property("latency", jitter_latency_ms);
        pipeline.add(&webrtcbin)?;
        let mut publisher = Publisher {
            pipeline,
            session: session.clone(),
            answer: String::new(),
            video_pad: Arc::default(),
            udpsinks: Arc::default(),
        };
        let [video, audio] = sinks;
        for (kind, sink) in [(Kind::Video, &video), (Kind::Audio, &audio)] {
            if let Some(a) = accepted.iter().find(|a| a.kind == kind) {
                sink.continuity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .begin(a.codec.clock_rate());
            }
        }
        publisher.forward_pads(video, audio);
        // On failure the publisher is dropped here, which tears its pipeline down.
        let mut plan = Plan {
            pipeline: &publisher.pipeline,
            accepted,
        };
        publisher.answer = session.negotiate(offer, ice, &mut plan, watchers)?;
        Ok(publisher)
    }

    /// Links every source pad webrtcbin adds to a udpsink towards FFmpeg, through the rewriter.
    fn forward_pads(&self, video: Sink, audio: Sink) {
        let pipeline = self.pipeline.downgrade();
        let video_pad = self.video_pad.clone();
        let udpsinks = self.udpsinks.clone();
        self.session.webrtcbin().connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            let kind = pad
                .current_caps()
                .or_else(|| Some(pad.query_caps(None)))
                .and_then(|caps| {
                    caps.structure(0)
                        .and_then(|s| s.get::<String>("media").ok())
                })
                .and_then(|media| Kind::parse(&media));
            let sink = match kind {
                Some(Kind::Video) => {
                    *video_pad.lock().unwrap_or_else(|e| e.into_inner()) = Some(pad.downgrade());
                    video.clone()
                }
                Some(Kind::Audio) => audio.clone(),
                None => {
                    tracing::warn!(pad = %pad.name(), "publisher pad of unknown media: dropped");
                    return;
                }
            };
            match link_to_ffmpeg(&pipeline, pad, sink) {
                Ok(udpsink) => udpsinks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(kind.map(|k| (k, udpsink.downgrade()))),
                Err(e) => tracing::warn!(error = %e, "cannot forward a publisher track to FFmpeg"),
            }
            // The publisher's first key frame went out before DTLS was up and is lost: ask for
            // one as soon as its video arrives, so FFmpeg can start at once.
            if kind == Some(Kind::Video) {
                let sent = pad.send_event(crate::media::transcode::force_key_unit_event());
                tracing::debug!(sent, "asked a new publisher for a key frame");
            }
        });
    }

    /// Asks the publisher for a key frame: upstream force-key-unit on webrtcbin's video pad, which
    /// its RTP session sends as RTCP PLI (or FIR). Returns whether a video pad was there.
    pub fn request_key_frame(&self) -> bool {
        let pad = self
            .video_pad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|w| w.upgrade());
        match pad {
            Some(pad) => pad.send_event(crate::media::transcode::force_key_unit_event()),
            None => false,
        }
    }

    /// Sends to other FFmpeg ports from now on (the input moved).
    pub fn retarget(&self, video: u16, audio: u16) {
        for (kind, sink) in self
            .udpsinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Some(sink) = sink.upgrade() {
                let port = if *kind == Kind::Video { video } else { audio };
                sink.set_property("port", i32::from(port));
            }
        }
    }
}

/// A publisher's side of [`peer::negotiate`]: a pipeline of its own, a transceiver per accepted
/// format.
struct Plan<'a> {
    pipeline: &'a gst::Pipeline,
    accepted: &'a [Accepted],
}

impl peer::Tracks for Plan<'_> {
    fn start(&mut self, _webrtcbin: &gst::Element) -> Result<(), NegotiationError> {
        self.pipeline.set_state(gst::State::Playing).map_err(|e| {
            NegotiationError::Failed(format!("the publisher pipeline does not start: {e}"))
        })?;
        Ok(())
    }

    /// Each transceiver is limited to the one format accepted: webrtcbin then answers exactly
    /// those, with the feedback (PLI, FIR, NACK, transport-wide CC) their caps carry.
    fn add(
        &mut self,
        webrtcbin: &gst::Element,
        direction: WebRTCRTPTransceiverDirection,
    ) -> Result<Vec<(u32, u8)>, NegotiationError> {
        let mut sorted: Vec<&Accepted> = self.accepted.iter().collect();
        sorted.sort_by_key(|a| a.mline);
        for a in &sorted {
            let _transceiver = webrtcbin
                .emit_by_name::<WebRTCRTPTransceiver>("add-transceiver", &[&direction, &a.caps]);
        }
        Ok(sorted.iter().map(|a| (a.mline, a.pt)).collect())
    }
}

impl Drop for Publisher {
    /// Stops the pipeline and waits for it, which joins webrtcbin's threads.
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pipeline.state(gst::ClockTime::from_seconds(5));
    }
}

fn link_to_ffmpeg(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    sink: Sink,
) -> Result<gst::Element, String> {
    let udpsink = gst::ElementFactory::make("udpsink")
        .property("host", "127.0.0.1")
        .property("port", i32::from(sink.port))
        .property("sync", false)
        .property("async", false)
        .build()
        .map_err(|e| e.to_string())?;
    pipeline.add(&udpsink).map_err(|e| e.to_string())?;
    udpsink
        .sync_state_with_parent()
        .map_err(|e| e.to_string())?;
    let sink_pad = udpsink
        .static_pad("sink")
        .ok_or("udpsink has no sink pad")?;
    let continuity = sink.continuity;
    sink_pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let mut state = continuity.lock().unwrap_or_else(|e| e.into_inner());
            match info.data.as_mut() {
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let verdict = rewrite(&mut state, buffer);
                    if verdict == Verdict::Drop {
                        // Handled: the binding drops the buffer. Drop made GStreamer 1.22 unref
                        // the probe's data pointer after the binding had taken it (a CRITICAL).
                        return gst::PadProbeReturn::Handled;
                    }
                }
                Some(gst::PadProbeData::BufferList(list)) => {
                    list.make_mut().foreach_mut(|mut buffer, _| {
                        let keep = rewrite(&mut state, &mut buffer) == Verdict::Send;
                        std::ops::ControlFlow::Continue(keep.then_some(buffer))
                    });
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    pad.link(&sink_pad).map_err(|e| e.to_string())?;
    Ok(udpsink)
}

fn rewrite(state: &mut Continuity, buffer: &mut gst::Buffer) -> Verdict {
    match RTPBuffer::from_buffer_writable(buffer.make_mut()) {
        Ok(mut rtp) => state.rewrite(&mut rtp),
        Err(_) => Verdict::Drop,
    }
}
