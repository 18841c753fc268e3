//! A stream fed by one `rtp_mpegts` leg: `udpsrc → relay → tsdemux`, then per elementary
//! stream `parse → pay`, which yields the same RTP an RTP leg would bring, into the same chains
//! (the passthrough and transcode descriptions) and a tee. Where the codec has a passthrough
//! description, the front is that description after its depayloader, and passthrough needs no
//! chain behind it.
//!
//! Nothing is known before media arrives: tracks appear as tsdemux exposes its pads, each once
//! its payloader has seen the first buffer (caps then carry sprop-parameter-sets, profile and
//! config). Audio and video leave tsdemux timestamped from the one TS clock (PTS/PCR), so the RTP
//! timestamps and the viewers' RTCP sender reports map both media to the same time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::leg::{LegReceiver, Received};
use super::relay::Relay;
use super::timeline::Timeline;
use super::{chain, now_ms, Built, Track};
use crate::media::ports::PortPair;
use crate::media::sdp::{Kind, SourceTrack};
use crate::media::transcode::{decide, BranchKind, Decision, Vars};
use crate::media::{Shared, StreamOptions};

/// What tsdemux has exposed so far.
#[derive(Default)]
pub(super) struct Discovery {
    /// tsdemux said `no-more-pads`: every stream of the program is exposed.
    exposed: AtomicBool,
    /// Exposed streams whose track is not registered yet (waiting for their first buffer).
    pending: AtomicUsize,
    /// A new program after the first (an FFmpeg restart with other codecs): rebuild.
    changed: AtomicBool,
    /// The media that have a track (or one on its way): a second stream of a kind is drained.
    claimed: Mutex<Vec<Kind>>,
    /// The front of each medium with the caps name it takes: a restarted FFmpeg's identical
    /// program is linked into them, so viewers keep their chains.
    fronts: Mutex<Vec<(Kind, String, gst::Pad)>>,
    /// When `no-more-pads` came (ms since the epoch).
    exposed_at: std::sync::atomic::AtomicU64,
    /// The RTP of the leg: which FFmpeg run it comes from.
    leg: LegReceiver,
    /// The `tsdemux` of the current FFmpeg run.
    demux: Mutex<Option<gst::Element>>,
    /// Keeps running time continuous over FFmpeg runs.
    timeline: Arc<Timeline>,
}

/// How long viewers wait for a stream whose first buffer does not come (a medium that does not
/// negotiate) before they get the media that did.
const TRACK_WAIT_MS: u64 = 3000;

impl Discovery {
    /// Every exposed stream has its track: viewers get all media from the start.
    pub(super) fn ready(&self) -> bool {
        self.exposed.load(Ordering::Acquire)
            && (self.pending.load(Ordering::Acquire) == 0
                || now_ms().saturating_sub(self.exposed_at.load(Ordering::Acquire)) > TRACK_WAIT_MS)
    }

    /// The media changed under the pipeline.
    pub(super) fn changed(&self) -> bool {
        self.changed.load(Ordering::Acquire)
    }
}

/// How one elementary stream from tsdemux becomes the RTP the pipeline descriptions start from:
/// its parser, then its payloader; `encoding` is the RTP encoding name the payloader gives.
struct Front {
    kind: Kind,
    encoding: &'static str,
    parse: &'static str,
    pay: &'static str,
}

/// The front of an elementary stream, by the pad's caps.
fn front(caps: &gst::CapsRef) -> Option<Front> {
    let s = caps.structure(0)?;
    let version = s.get::<i32>("mpegversion").unwrap_or(0);
    let (kind, encoding, parse, pay) = match (s.name().as_str(), version) {
        ("video/x-h264", _) => (
            Kind::Video,
            "H264",
            "h264parse config-interval=-1",
            "rtph264pay config-interval=-1 aggregate-mode=zero-latency pt=96",
        ),
        ("video/x-h265", _) => (
            Kind::Video,
            "H265",
            "h265parse config-interval=-1",
            "rtph265pay config-interval=-1 pt=96",
        ),
        ("video/mpeg", 1 | 2) => (Kind::Video, "MPV", "mpegvideoparse", "rtpmpvpay pt=96"),
        ("video/mpeg", 4) => (
            Kind::Video,
            "MP4V-ES",
            "mpeg4videoparse",
            "rtpmp4vpay config-interval=-1 pt=96",
        ),
        ("audio/mpeg", 2 | 4) => (Kind::Audio, "MPEG4-GENERIC", "aacparse", "rtpmp4gpay pt=97"),
        ("audio/mpeg", 1) => (Kind::Audio, "MPA", "mpegaudioparse", "rtpmpapay pt=97"),
        ("audio/x-opus", _) => (Kind::Audio, "OPUS", "opusparse", "rtpopuspay pt=97"),
        ("audio/x-ac3", _) => (Kind::Audio, "AC3", "ac3parse", "rtpac3pay pt=97"),
        _ => return None,
    };
    Some(Front {
        kind,
        encoding,
        parse,
        pay,
    })
}

/// The rest of a chain description after its leading depayloader, if it starts with one.
fn after_depayloader(chain: &str) -> Option<&str> {
    let (first, rest) = chain.split_once(" ! ")?;
    let element = first.split_whitespace().next()?;
    (element.starts_with("rtp") && element.ends_with("depay")).then(|| rest.trim())
}

/// Builds and starts the pipeline of a TS stream; tracks are added as they are discovered.
pub(super) fn build(
    id: &str,
    ports: &PortPair,
    shared: &Arc<Shared>,
    options: &StreamOptions,
    generation: u64,
) -> Result<Built, String> {
    let port = ports.video();
    let pipeline = gst::Pipeline::with_name(&format!("stream-{id}"));
    // The RTP header comes off in the probe below, so udpsrc hands tsdemux plain TS.
    let caps = gst::Caps::builder("video/mpegts")
        .field("systemstream", true)
        .field("packetsize", 188i32)
        .build();
    let src = super::rtp::receiver(ports, port, &caps)?;
    // The leg's datagrams are up to 7908 bytes (process::argv::legs): received whole, without
    // udpsrc's 64 KiB overflow buffer for each one above its default MTU.
    src.set_property("mtu", 8192u32);
    pipeline.add(&src).map_err(|e| e.to_string())?;
    let last_packet_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = last_packet_ms.clone();

    let tracks: Arc<Mutex<Vec<Track>>> = Arc::default();
    let discovery = Arc::new(Discovery::default());
    let context = Arc::new_cyclic(|context: &std::sync::Weak<TrackContext>| {
        // A failed demux gets replaced instead of stopping udpsrc (see `relay`).
        let failed = context.clone();
        let relay = Relay::new(move || {
            if let Some(context) = failed.upgrade() {
                context.fresh_front("tsdemux failed on the leg's data");
            }
        });
        TrackContext {
            id: id.to_string(),
            port,
            pipeline: pipeline.downgrade(),
            shared: shared.clone(),
            options: options.clone(),
            tracks: tracks.clone(),
            discovery: discovery.clone(),
            relay,
        }
    });
    pipeline.add(&context.relay).map_err(|e| e.to_string())?;
    src.link(&context.relay).map_err(|e| e.to_string())?;
    context.new_front(&pipeline)?;
    let src_pad = src.static_pad("src").ok_or("udpsrc has no pad")?;
    // The leg's RTP header comes off here (see `leg`); a restarted FFmpeg is a new RTP sender
    // (SSRC) with a new TS timeline, and gets a new front.
    src_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        seen.store(now_ms(), Ordering::Relaxed);
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        match context.discovery.leg.take(buffer) {
            Received::Payload => gst::PadProbeReturn::Ok,
            Received::NewRun => {
                context.fresh_front("the restarted source");
                gst::PadProbeReturn::Ok
            }
            Received::NotRtp => gst::PadProbeReturn::Drop,
        }
    });

    Built::start(
        Built {
            pipeline,
            tracks,
            last_packet_ms,
            generation,
            discovery: Some(discovery),
        },
        id,
    )
}

/// What a pad-added callback needs to turn an exposed stream into a track.
struct TrackContext {
    id: String,
    port: u16,
    pipeline: gst::glib::WeakRef<gst::Pipeline>,
    shared: Arc<Shared>,
    options: StreamOptions,
    tracks: Arc<Mutex<Vec<Track>>>,
    discovery: Arc<Discovery>,
    /// Between udpsrc and the demux; each new demux is linked to its src pad.
    relay: Relay,
}

impl TrackContext {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Track>> {
        self.tracks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `relay ! tsdemux`, for the first FFmpeg run, a restarted one, or after a failed demux.
    ///
    /// No jitter buffer: the leg comes over loopback, which neither reorders nor delays, and
    /// tsdemux times the media from the TS's own clock. A jitter buffer here only moved every
    /// packet to a second thread, two context switches per packet for an idle stream.
    fn new_front(self: &Arc<Self>, pipeline: &gst::Pipeline) -> Result<(), String> {
        let demux = gst::ElementFactory::make("tsdemux")
            .build()
            .map_err(|e| e.to_string())?;
        pipeline.add(&demux).map_err(|e| e.to_string())?;
        let context = self.clone();
        demux.connect_pad_added(move |_, pad| context.exposed(pad));
        let done = self.discovery.clone();
        demux.connect_no_more_pads(move |_| {
            done.exposed_at.store(now_ms(), Ordering::Release);
            done.exposed.store(true, Ordering::Release);
        });
        demux.sync_state_with_parent().map_err(|e| e.to_string())?;
        let sink = demux.static_pad("sink").ok_or("no demuxer sink")?;
        self.relay
            .src_pad()
            .link(&sink)
            .map_err(|e| e.to_string())?;
        *self
            .discovery
            .demux
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(demux);
        Ok(())
    }

    /// A fresh demux for the leg, on the streaming thread. For a new SSRC (FFmpeg restarted):
    /// its TS (new PCR base, continuity, PTS) starts in a fresh front, where the old demux's
    /// state would carry the old timeline into it. For a failed demux: a new one picks the
    /// stream up at the next PAT/PMT and key frame; its tracks continue in their chains either
    /// way, with their viewers.
    fn fresh_front(self: &Arc<Self>, why: &str) {
        let Some(pipeline) = self.pipeline.upgrade() else {
            return;
        };
        let old = self
            .discovery
            .demux
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let src = self.relay.src_pad();
        if let Some(peer) = src.peer() {
            let _ = src.unlink(&peer);
        }
        if let Some(old) = old {
            let _ = old.set_state(gst::State::Null);
            let _ = pipeline.remove(&old);
        }
        self.discovery.timeline.new_run();
        match self.new_front(&pipeline) {
            Ok(()) => tracing::info!(stream = %self.id, %why, "a new TS front"),
            Err(e) => {
                tracing::warn!(stream = %self.id, %why, error = %e, "cannot build a TS front")
            }
        }
    }

    /// tsdemux exposed an elementary stream.
    fn exposed(self: &Arc<Self>, pad: &gst::Pad) {
        self.discovery.timeline.install(pad, self.pipeline.clone());
        if let Some(caps) = pad.current_caps() {
            self.with_caps(pad, &caps);
            return;
        }
        // No caps yet: decide on the caps event.
        self.discovery.pending.fetch_add(1, Ordering::AcqRel);
        let context = self.clone();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let gst::EventView::Caps(caps) = event.view() else {
                return gst::PadProbeReturn::Ok;
            };
            let caps = caps.caps_owned();
            context.with_caps(pad, &caps);
            context.discovery.pending.fetch_sub(1, Ordering::AcqRel);
            gst::PadProbeReturn::Remove
        });
    }

    /// An exposed stream with its caps: its front, then its track on the first buffer.
    fn with_caps(self: &Arc<Self>, pad: &gst::Pad, caps: &gst::Caps) {
        let Some(pipeline) = self.pipeline.upgrade() else {
            return;
        };
        let caps = caps.clone();
        if self.discovery.exposed.load(Ordering::Acquire) {
            // A second program (FFmpeg restarted): the same codec continues in its front, with
            // its viewers; anything else is a change of media and rebuilds the pipeline.
            if !self.relink(pad, &caps) {
                self.discovery.changed.store(true, Ordering::Release);
            }
            return;
        }
        let Some(front) = front(&caps) else {
            self.unsupported(&pipeline, pad, &caps);
            return;
        };
        let kind = front.kind;
        {
            let mut claimed = self
                .discovery
                .claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if claimed.contains(&kind) {
                // Viewers get one video and one audio track: the first of each kind.
                sink_into_fakesink(&pipeline, pad);
                return;
            }
            claimed.push(kind);
        }
        let (description, is_passthrough) = self.front_description(&front);
        let bin = match gst::parse::bin_from_description(&description, true) {
            Ok(bin) => bin,
            Err(e) => {
                tracing::warn!(stream = %self.id, error = %e, "cannot build a TS track front");
                self.unsupported(&pipeline, pad, &caps);
                return;
            }
        };
        crate::media::aud::strip_in(bin.upcast_ref());
        let linked = pipeline.add(&bin).is_ok()
            && bin.sync_state_with_parent().is_ok()
            && bin.static_pad("sink").is_some_and(|s| pad.link(&s).is_ok());
        let Some(out) = bin.static_pad("src").filter(|_| linked) else {
            tracing::warn!(stream = %self.id, "cannot link a TS track front");
            return;
        };
        if let Some(sink) = bin.static_pad("sink") {
            self.discovery
                .fronts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((kind, caps_name(&caps), sink));
        }
        self.discovery.pending.fetch_add(1, Ordering::AcqRel);
        let context = self.clone();
        // The payloader's caps are complete once it has seen data: build the chain then.
        out.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |out, _| {
                context.attach(kind, out, is_passthrough);
                context.discovery.pending.fetch_sub(1, Ordering::AcqRel);
                gst::PadProbeReturn::Remove
            },
        );
    }

    /// A front's description, and whether it already is the codec's passthrough chain.
    ///
    /// A passthrough description depayloads and payloads again; fed from tsdemux, its payloader
    /// can take the parsed stream itself. The front is then the description after its
    /// depayloader, and a passthrough decision links it straight to the tee: every packet is
    /// payloaded once. No queue after tsdemux either: nothing downstream blocks (viewers' sinks
    /// send without waiting), and a queue per medium cost two thread switches per packet.
    fn front_description(&self, front: &Front) -> (String, bool) {
        let shared = &self.shared;
        let pt = if front.kind == Kind::Video { 96 } else { 97 };
        let vars = Vars::new(
            pt,
            rand::random::<u32>(),
            &self.options.transcode,
            shared.capabilities.as_ref(),
        );
        let branch = BranchKind::Passthrough {
            encoding: front.encoding.to_string(),
        };
        let passthrough = shared
            .descriptions
            .has_passthrough(front.encoding)
            .then(|| shared.descriptions.render(&branch, &vars).ok())
            .flatten();
        if let Some(rest) = passthrough.as_deref().and_then(after_depayloader) {
            let parser = front.parse.split_whitespace().next();
            return if rest.split_whitespace().next() == parser {
                (rest.to_string(), true)
            } else {
                (format!("{} ! {rest}", front.parse), true)
            };
        }
        (format!("{} ! {}", front.parse, front.pay), false)
    }

    /// The payloaded elementary stream's first buffer: decide, build its chain and tee.
    /// `is_passthrough`: the front already is the passthrough chain.
    fn attach(&self, kind: Kind, out: &gst::Pad, is_passthrough: bool) {
        let Some(pipeline) = self.pipeline.upgrade() else {
            return;
        };
        let caps = out.current_caps().unwrap_or_else(|| out.query_caps(None));
        let source = SourceTrack {
            kind,
            port: self.port,
            caps,
        };
        let shared = &self.shared;
        let capabilities = shared.capabilities.as_ref();
        let mut decision = decide(
            &source,
            self.options.force_transcode,
            &shared.descriptions,
            capabilities,
        );
        tracing::info!(stream = %self.id, kind = ?kind, codec = %source.encoding(), path = decision.path, reason = %decision.reason, "track");
        let linked = if is_passthrough && decision.path == "passthrough" {
            chain::tee(&pipeline, shared, &source, &decision).and_then(|(tee, gop)| {
                let sink = tee.static_pad("sink").ok_or("tee has no sink pad")?;
                out.link(&sink).map_err(|e| e.to_string())?;
                Ok((Some(tee), gop))
            })
        } else {
            chain::build(&pipeline, shared, &self.options, &source, &decision).and_then(|c| {
                out.link(&c.sink).map_err(|e| e.to_string())?;
                Ok((c.tee, c.gop))
            })
        };
        let (tee, gop) = match linked {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(stream = %self.id, error = %e, "cannot build a track chain");
                decision = Decision {
                    branch: None,
                    path: "unsupported",
                    reason: format!("the chain for {} failed: {e}", source.encoding()),
                };
                sink_into_fakesink(&pipeline, out);
                (None, None)
            }
        };
        let output = decision.output_track(&source, &self.options.transcode);
        let mut tracks = self.lock();
        tracks.push(Track {
            source,
            output,
            tee,
            decision,
            gop,
        });
        tracks.sort_by_key(|t| t.source.kind != Kind::Video);
    }

    /// An elementary stream no chain takes: drained, and listed as unsupported when it is audio
    /// or video.
    fn unsupported(&self, pipeline: &gst::Pipeline, pad: &gst::Pad, caps: &gst::Caps) {
        sink_into_fakesink(pipeline, pad);
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let kind = match name.split('/').next() {
            Some("video") => Kind::Video,
            Some("audio") => Kind::Audio,
            _ => return,
        };
        {
            let mut claimed = self
                .discovery
                .claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if claimed.contains(&kind) {
                return;
            }
            claimed.push(kind);
        }
        let source = SourceTrack {
            kind,
            port: self.port,
            caps: gst::Caps::builder("application/x-rtp")
                .field("media", kind.as_str())
                .field("encoding-name", name.as_str())
                .build(),
        };
        tracing::warn!(stream = %self.id, codec = %name, "a medium no browser path exists for");
        self.lock().push(Track {
            output: source.clone(),
            source,
            tee: None,
            gop: None,
            decision: Decision {
                branch: None,
                path: "unsupported",
                reason: format!("the server has no depayload or decode path for {name} in MPEG-TS"),
            },
        });
    }
}

fn caps_name(caps: &gst::Caps) -> String {
    caps.structure(0)
        .map(|s| s.name().to_string())
        .unwrap_or_default()
}

impl TrackContext {
    /// Links a new program's stream into the existing front of the same codec.
    fn relink(&self, pad: &gst::Pad, caps: &gst::Caps) -> bool {
        let Some(Front { kind, .. }) = front(caps) else {
            return false;
        };
        let name = caps_name(caps);
        let fronts = self
            .discovery
            .fronts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some((_, _, sink)) = fronts.iter().find(|(k, n, _)| *k == kind && *n == name) else {
            return false;
        };
        if let Some(old) = sink.peer() {
            let _ = old.unlink(sink);
        }
        let linked = pad.link(sink).is_ok();
        tracing::info!(stream = %self.id, codec = %name, linked, "the restarted source continues in its track");
        linked
    }
}

fn sink_into_fakesink(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    if let Ok(sink) = chain::fakesink(pipeline) {
        let _ = pad.link(&sink);
    }
}

#[cfg(test)]
mod tests {
    use super::after_depayloader;

    #[test]
    fn a_chain_after_its_depayloader() {
        assert_eq!(
            after_depayloader("rtph264depay ! h264parse ! rtph264pay pt=96"),
            Some("h264parse ! rtph264pay pt=96")
        );
        assert_eq!(
            after_depayloader("rtpopusdepay ! rtpopuspay"),
            Some("rtpopuspay")
        );
        assert_eq!(after_depayloader("h264parse ! rtph264pay"), None);
        assert_eq!(after_depayloader("rtpopusdepay"), None);
    }
}
