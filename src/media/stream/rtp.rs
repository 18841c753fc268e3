//! A stream fed by one RTP leg per medium (WebM/Ogg sources), described by FFmpeg's SDP: per
//! track `udpsrc (RTP) + udpsrc (RTCP) → rtpbin (rtpjitterbuffer) → <chain> → tee`.
//!
//! FFmpeg's RTP muxer gives each leg a random timestamp base, so the RTP timestamps alone do not
//! say which audio goes with which video. Its RTCP sender reports do (each maps its leg's RTP
//! clock to one NTP clock, both legs carrying the same CNAME): rtpbin pairs the legs by CNAME and
//! moves the jitter buffers' output (ts-offset) so both media leave on one timeline, which the
//! chains keep and the viewers' sender reports pass on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{chain, now_ms, Built, Track};
use crate::media::ports::PortPair;
use crate::media::sdp::SourceTrack;
use crate::media::transcode::decide;
use crate::media::{Shared, StreamOptions};

/// Builds and starts the pipeline of the tracks FFmpeg's SDP describes.
pub(super) fn build(
    id: &str,
    tracks: Vec<SourceTrack>,
    ports: &PortPair,
    shared: &Shared,
    options: &StreamOptions,
    generation: u64,
) -> Result<Built, String> {
    let pipeline = gst::Pipeline::with_name(&format!("stream-{id}"));
    let rtpbin = gst::ElementFactory::make("rtpbin")
        .property("latency", shared.config.jitter_latency_ms)
        // Sources of FFmpeg runs that ended go (see link_sources).
        .property("autoremove", true)
        .build()
        .map_err(|e| e.to_string())?;
    pipeline.add(&rtpbin).map_err(|e| e.to_string())?;
    let last_packet_ms = Arc::new(AtomicU64::new(0));
    let mut built_tracks = Vec::new();
    let mut sinks = Vec::new();
    for (session, source) in tracks.into_iter().enumerate() {
        let decision = decide(
            &source,
            options.force_transcode,
            &shared.descriptions,
            shared.capabilities.as_ref(),
        );
        tracing::info!(stream = %id, kind = ?source.kind, path = decision.path, reason = %decision.reason, "track");
        let chain = chain::build(&pipeline, shared, options, &source, &decision)?;
        let rtp = receiver(ports, source.port, &source.caps)?;
        let rtcp = receiver(
            ports,
            PortPair::rtcp(source.port),
            &gst::Caps::new_empty_simple("application/x-rtcp"),
        )?;
        pipeline
            .add_many([&rtp, &rtcp])
            .map_err(|e| e.to_string())?;
        rtp.link_pads(
            Some("src"),
            &rtpbin,
            Some(&format!("recv_rtp_sink_{session}")),
        )
        .map_err(|e| e.to_string())?;
        rtcp.link_pads(
            Some("src"),
            &rtpbin,
            Some(&format!("recv_rtcp_sink_{session}")),
        )
        .map_err(|e| e.to_string())?;
        let seen = last_packet_ms.clone();
        rtp.static_pad("src").ok_or("udpsrc has no pad")?.add_probe(
            gst::PadProbeType::BUFFER,
            move |_, _| {
                seen.store(now_ms(), Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            },
        );
        sinks.push(chain.sink);
        let output = decision.output_track(&source, &options.transcode);
        built_tracks.push(Track {
            source,
            output,
            tee: chain.tee,
            decision,
            gop: chain.gop,
        });
    }
    link_sources(&pipeline, &rtpbin, sinks, id);
    Built::start(
        Built {
            pipeline,
            tracks: Arc::new(Mutex::new(built_tracks)),
            last_packet_ms,
            generation,
            discovery: None,
        },
        id,
    )
}

/// A udpsrc on the stream's own bound socket for `port` (never left open for others); the TS
/// leg's front starts with one too.
pub(super) fn receiver(
    ports: &PortPair,
    port: u16,
    caps: &gst::Caps,
) -> Result<gst::Element, String> {
    let socket = ports
        .socket(port)
        .map_err(|e| format!("no socket for port {port}: {e}"))?;
    let socket =
        gio::Socket::from_fd(std::os::fd::OwnedFd::from(socket)).map_err(|e| e.to_string())?;
    // The sender is always the process's FFmpeg on loopback, and nothing downstream reads the
    // address: without it udpsrc no longer builds two GObjects (GInetAddress and
    // GInetSocketAddress) and a meta for every datagram.
    gst::ElementFactory::make("udpsrc")
        .property("socket", &socket)
        .property("caps", caps)
        .property("retrieve-sender-address", false)
        // An I-frame arrives as one burst; while the streaming thread serves viewers the
        // kernel holds it. The system's maximum caps it (Debian: 208 KiB).
        .property("buffer-size", 2i32 << 20)
        .build()
        .map_err(|e| e.to_string())
}

/// Links rtpbin's pads into the chains. rtpbin has one pad per session, SSRC and payload type,
/// and each FFmpeg run is a new SSRC (its RTP muxer picks one): the new run's pad takes the chain
/// over, the old one is drained into a fakesink until rtpbin times its source out. A new source
/// gets a fresh jitter buffer timed from its first packet. With the SSRC fixed per port, the
/// restarted run's jump in sequence numbers and timestamps made the old jitter buffer re-base
/// itself from a later packet ("big gap" handling), and audio played 80–120 ms late after a
/// restart until FFmpeg's next sender report about 5 s later.
fn link_sources(pipeline: &gst::Pipeline, rtpbin: &gst::Element, sinks: Vec<gst::Pad>, id: &str) {
    let drains: Arc<Mutex<HashMap<String, gst::Element>>> = Arc::default();
    let (name, weak, drained) = (id.to_string(), pipeline.downgrade(), drains.clone());
    rtpbin.connect_pad_added(move |_, pad| {
        let Some(session) = pad
            .name()
            .strip_prefix("recv_rtp_src_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<usize>().ok())
        else {
            return;
        };
        let Some(sink) = sinks.get(session) else {
            return;
        };
        if let Some(old) = sink.peer() {
            let _ = old.unlink(sink);
            let fake = weak.upgrade().and_then(|p| chain::fakesink(&p).ok());
            if let Some(fake) = fake {
                let _ = old.link(&fake);
                if let Some(element) = fake.parent_element() {
                    lock(&drained).insert(old.name().to_string(), element);
                }
            }
        }
        if let Err(e) = pad.link(sink) {
            tracing::warn!(stream = %name, pad = %pad.name(), error = ?e, "cannot link an RTP source");
        }
    });
    let weak = pipeline.downgrade();
    rtpbin.connect_pad_removed(move |_, pad| {
        let Some(element) = lock(&drains).remove(pad.name().as_str()) else {
            return;
        };
        let _ = element.set_state(gst::State::Null);
        if let Some(pipeline) = weak.upgrade() {
            let _ = pipeline.remove(&element);
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
