//! A real WebRTC viewer for the WHEP integration tests.
//!
//! [`Receiver`] is a GStreamer `webrtcbin` with recvonly transceivers that decodes what it receives
//! and counts it, so a test can assert that real, decodable media arrived (not just that HTTP
//! answered). [`post_offer`] and [`connect`] are the WHEP HTTP side (draft-ietf-wish-whep-03: POST
//! `application/sdp`, `201 Created` with `Location`, optional `ETag`).
//!
//! Include it with `#[path = "common/whep.rs"] mod whep;` or as a submodule of `tests/common`.
//! It only needs the `gstreamer*`, `reqwest` and `tokio` crates.
//!
//! No GLib main loop is run: `webrtcbin` answers its action signals through `gst::Promise`s on its
//! own thread, and every callback here runs on a GStreamer thread, so blocking `Promise::wait()`
//! is enough.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

/// RTP payload types this client offers. They are deliberately not 96/97 so a server that
/// forwards its source's payload types unchanged (instead of the ones the viewer offered) fails
/// the tests. They follow Chrome's usual numbering.
pub const PT_H264: i32 = 102;
/// Payload type offered for H.264 Main (`video_codecs` "H264-MAIN").
pub const PT_H264_MAIN: i32 = 104;
/// Payload type offered for H.264 High (`video_codecs` "H264-HIGH").
pub const PT_H264_HIGH: i32 = 106;
/// Payload type offered for VP8.
pub const PT_VP8: i32 = 96;
/// Payload type offered for VP9 (`video_codecs` "VP9").
pub const PT_VP9: i32 = 98;
/// Payload type offered for Opus.
pub const PT_OPUS: i32 = 111;
/// Transport-wide congestion control header extension, offered like browsers do (id 3).
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Receive jitter-buffer latency (webrtcbin `latency`, default 200 ms). A browser's adaptive
/// buffer starts at tens of ms; the default would add a constant 200 ms to every
/// `first_frame_after` (measured: 358 ms with 200, 151 ms with 50, 106 ms with 0 against the
/// in-process sender). 0 is not used: under CPU load late packets would be declared lost.
pub const RECEIVER_LATENCY_MS: u32 = 50;

/// How long `Receiver::new` waits for ICE gathering; on loopback it takes ~2 ms (~200 ms more
/// if libnice's UPnP probe could not be disabled).
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the offer made by [`Receiver::new`] contains.
#[derive(Debug, Clone)]
pub struct OfferOptions {
    /// Add a recvonly video m-line.
    pub video: bool,
    /// Add a recvonly audio m-line (Opus 48000/2).
    pub audio: bool,
    /// Send an offer with no `a=candidate` lines: the server must then learn the client's address
    /// peer-reflexively from its connectivity checks (as with OBS or browsers' mDNS candidates).
    /// The client still gathers (see [`Receiver::local_candidates`]) so a test can trickle them
    /// with PATCH afterwards.
    pub strip_candidates: bool,
    /// Video codecs offered, in order of preference: "H264" (packetization-mode=1,
    /// profile-level-id=42e01f, PT [`PT_H264`]), "H264-MAIN" (4d001f), "H264-HIGH" (64001f),
    /// "VP8" (PT [`PT_VP8`]) and/or "VP9" (PT [`PT_VP9`]).
    pub video_codecs: Vec<&'static str>,
    /// Offer two video m-lines (the server must refuse with 422/400: one video track at most).
    pub two_video_tracks: bool,
}

impl Default for OfferOptions {
    /// Video (H264, then VP8) and audio, candidates included, one video track.
    fn default() -> Self {
        OfferOptions {
            video: true,
            audio: true,
            strip_candidates: false,
            video_codecs: vec!["H264", "VP8"],
            two_video_tracks: false,
        }
    }
}

/// Counters written from GStreamer streaming threads and read by the test thread.
#[derive(Default)]
struct Stats {
    frames: AtomicU64,
    audio_samples: AtomicU64,
    resolution: Mutex<Option<(i32, i32)>>,
    codecs: Mutex<Vec<String>>,
    answer_at: Mutex<Option<Instant>>,
    first_frame: Mutex<Option<Duration>>,
    peer: Arc<PeerSignals>,
}

/// A receiving WebRTC peer (GStreamer webrtcbin, recvonly transceivers) that decodes what it gets.
///
/// Dropping it sets the pipeline to NULL and waits, which joins webrtcbin's threads.
pub struct Receiver {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    stats: Arc<Stats>,
    ufrag: String,
    pwd: String,
    created: Instant,
}

/// What every test peer hears from its webrtcbin: its ICE candidates, the errors and warnings on
/// its pipeline's bus, and the end of ICE gathering.
#[derive(Default)]
pub struct PeerSignals {
    /// (m-line index, "candidate:..." line), as `on-ice-candidate` reported them.
    pub candidates: Mutex<Vec<(u32, String)>>,
    /// Bus errors and warnings, for assertion messages.
    pub errors: Mutex<Vec<String>>,
    /// Set once webrtcbin reports ICE gathering complete.
    gathered: (Mutex<bool>, Condvar),
}

/// A max-bundle webrtcbin (what browsers do and WHIP/WHEP require; UPnP off) added to
/// `pipeline`, reporting into `signals`. `on_error` runs after each bus error or warning is
/// recorded. No stun-server: on loopback host candidates are enough.
///
/// The handlers capture only `signals`: a strong element reference in a handler of that element
/// would keep webrtcbin (and its threads) alive after the peer is dropped.
pub fn peer_webrtcbin(
    pipeline: &gst::Pipeline,
    signals: &Arc<PeerSignals>,
    on_error: impl Fn() + Send + Sync + 'static,
) -> gst::Element {
    let webrtc = gst::ElementFactory::make("webrtcbin")
        .property_from_str("bundle-policy", "max-bundle")
        .build()
        .expect("webrtcbin (gst-plugins-bad) missing");
    disable_upnp(&webrtc);
    pipeline.add(&webrtc).unwrap();
    // Errors end up in `errors` instead of piling up on an unwatched bus.
    let sig = signals.clone();
    pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
        let src = || {
            msg.src()
                .map(|s| s.path_string().to_string())
                .unwrap_or_default()
        };
        let line = match msg.view() {
            gst::MessageView::Error(e) => {
                Some(format!("{}: {} ({:?})", src(), e.error(), e.debug()))
            }
            gst::MessageView::Warning(w) => Some(format!("warning {}: {}", src(), w.error())),
            _ => None,
        };
        if let Some(line) = line {
            sig.errors.lock().unwrap().push(line);
            on_error();
        }
        gst::BusSyncReply::Drop
    });
    let sig = signals.clone();
    webrtc.connect("on-ice-candidate", false, move |vals| {
        let mline = vals[1].get::<u32>().unwrap_or(0);
        if let Ok(c) = vals[2].get::<String>() {
            sig.candidates.lock().unwrap().push((mline, c));
        }
        None
    });
    let sig = signals.clone();
    webrtc.connect_notify(Some("ice-gathering-state"), move |w, _| {
        let s = w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
        if s == gst_webrtc::WebRTCICEGatheringState::Complete {
            let (m, cv) = &sig.gathered;
            *m.lock().unwrap() = true;
            cv.notify_all();
        }
    });
    webrtc
}

/// Creates and applies the local offer, waits for ICE gathering, and returns (offer text, ufrag,
/// pwd). With `strip_candidates` the candidates are left out of the text only: they stay in
/// `signals` for trickle tests. Blocks for the gathering (milliseconds on loopback).
pub fn gathered_offer(
    webrtc: &gst::Element,
    signals: &PeerSignals,
    strip: bool,
) -> (String, String, String) {
    let reply = call_with_promise(webrtc, "create-offer", None::<gst::Structure>.to_value())
        .expect("create-offer")
        .expect("create-offer: empty reply");
    let offer = reply
        .get::<gst_webrtc::WebRTCSessionDescription>("offer")
        .expect("create-offer: no offer in reply");
    call_with_promise(webrtc, "set-local-description", offer.to_value())
        .expect("set-local-description");
    {
        let (m, cv) = &signals.gathered;
        let g = m.lock().unwrap();
        let (g, _) = cv
            .wait_timeout_while(g, GATHER_TIMEOUT, |done| !*done)
            .unwrap();
        if !*g {
            signals
                .errors
                .lock()
                .unwrap()
                .push("ICE gathering did not complete in time".into());
        }
    }
    // webrtcbin adds gathered candidates to its local description; fall back to the ones
    // seen through on-ice-candidate if this version did not.
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .expect("local-description after set-local-description");
    let mut msg = local.sdp().to_owned();
    if count_candidates(&msg) == 0 {
        for (mline, c) in signals.candidates.lock().unwrap().iter() {
            let value = c.strip_prefix("a=").unwrap_or(c);
            let value = value.strip_prefix("candidate:").unwrap_or(value);
            if let Some(m) = msg.media_mut(*mline) {
                m.add_attribute("candidate", Some(value));
            }
        }
    }
    if strip {
        msg = strip_candidates(&msg);
    }
    let ufrag = sdp_attr(&msg, "ice-ufrag").unwrap_or_default();
    let pwd = sdp_attr(&msg, "ice-pwd").unwrap_or_default();
    (msg.as_text().expect("offer as text"), ufrag, pwd)
}

/// Waits until `webrtc` has gathered its ICE candidates (an answering peer's complete answer);
/// panics after `timeout`.
pub fn wait_gathered(webrtc: &gst::Element, timeout: Duration) {
    let end = Instant::now() + timeout;
    while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
        != gst_webrtc::WebRTCICEGatheringState::Complete
    {
        assert!(Instant::now() < end, "ICE gathering never completed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Applies a server's SDP answer as the remote description.
pub fn apply_answer(webrtc: &gst::Element, answer_sdp: &str) -> Result<(), String> {
    let msg = gst_sdp::SDPMessage::parse_buffer(answer_sdp.as_bytes())
        .map_err(|e| format!("answer does not parse as SDP: {e}"))?;
    if msg.medias_len() == 0 {
        return Err("answer has no m= sections".into());
    }
    let desc = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, msg);
    call_with_promise(webrtc, "set-remote-description", desc.to_value()).map(|_| ())
}

/// Plays the answering side in-process (the client self-tests): applies `offer`, creates and
/// applies the answer, and returns it.
pub fn answer_offer(
    webrtc: &gst::Element,
    offer: gst_sdp::SDPMessage,
) -> gst_webrtc::WebRTCSessionDescription {
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
    call_with_promise(webrtc, "set-remote-description", offer.to_value())
        .expect("answerer set-remote-description");
    let reply = call_with_promise(webrtc, "create-answer", None::<gst::Structure>.to_value())
        .expect("create-answer")
        .expect("create-answer reply");
    let answer = reply
        .get::<gst_webrtc::WebRTCSessionDescription>("answer")
        .expect("answer in reply");
    call_with_promise(webrtc, "set-local-description", answer.to_value())
        .expect("answerer set-local-description");
    answer
}

static INIT: Once = Once::new();

/// Initialises GStreamer once per process (and warms the DTLS certificate).
/// One field of webrtcbin's statistics of one type, summed over its streams; `None` when the
/// statistics promise failed. Blocks on the promise.
pub fn stat_sum<T>(
    webrtc: &gst::Element,
    kind: gst_webrtc::WebRTCStatsType,
    field: &str,
) -> Option<T>
where
    T: for<'a> gst::glib::value::FromValue<'a> + std::iter::Sum + 'static,
{
    let reply = call_with_promise(webrtc, "get-stats", None::<gst::Pad>.to_value()).ok()??;
    Some(
        reply
            .iter()
            .filter_map(|(_, v)| v.get::<gst::Structure>().ok())
            .filter(|s| s.get::<gst_webrtc::WebRTCStatsType>("type").ok() == Some(kind))
            .filter_map(|s| s.get::<T>(field).ok())
            .sum(),
    )
}

pub fn init() {
    INIT.call_once(|| {
        gst::init().expect("gst::init");
        // The dtls plugin generates one RSA key + self-signed certificate per process, lazily,
        // when the first DTLS element is created (80-300 ms here). Pay for it now, so that the
        // first Receiver::new (and the connect time a test measures) does not include it.
        let _ = gst::ElementFactory::make("dtlsdec").build();
    });
}

/// Turns off UPnP port mapping on a webrtcbin's libnice agent.
///
/// Debian's libnice is built with gupnp-igd, and every gathering then waits for a UPnP
/// discovery timeout (~200 ms) before it completes. The NiceAgent is reachable through
/// webrtcbin's `ice-agent` (a GstWebRTCNice) and its `agent` property; `upnp` is a plain
/// read/write property of NiceAgent. Returns whether it could be set.
pub fn disable_upnp(webrtc: &gst::Element) -> bool {
    if webrtc.find_property("ice-agent").is_none() {
        return false;
    }
    let ice = webrtc.property::<gst::glib::Object>("ice-agent");
    if ice.find_property("agent").is_none() {
        return false;
    }
    let agent = ice.property::<gst::glib::Object>("agent");
    if agent.find_property("upnp").is_none() {
        return false;
    }
    agent.set_property("upnp", false);
    true
}

/// Emits a webrtcbin action signal whose arguments end with a promise, and waits for the reply.
/// Errors come back as an `error` field in the reply (webrtcbin >= 1.18), not as a failed promise.
pub fn call_with_promise(
    webrtc: &gst::Element,
    signal: &str,
    arg: gst::glib::Value,
) -> Result<Option<gst::Structure>, String> {
    let promise = gst::Promise::new();
    webrtc.emit_by_name_with_values(signal, &[arg, promise.to_value()]);
    match promise.wait() {
        gst::PromiseResult::Replied => {}
        other => return Err(format!("{signal}: promise {other:?}")),
    }
    let reply = promise.get_reply().map(|s| s.to_owned());
    if let Some(r) = &reply {
        if let Ok(err) = r.get::<gst::glib::Error>("error") {
            return Err(format!("{signal}: {err}"));
        }
    }
    Ok(reply)
}

/// The codec-preferences caps for the video transceiver: one structure per offered codec.
pub fn video_caps(codecs: &[&str]) -> gst::Caps {
    let mut caps = gst::Caps::new_empty();
    let caps_mut = caps.get_mut().unwrap();
    for c in codecs {
        let b = gst::Structure::builder("application/x-rtp")
            .field("media", "video")
            .field("clock-rate", 90000i32)
            // Offer feedback like a browser does, so a server that wants keyframe requests
            // or NACKs sees them negotiated.
            .field("rtcp-fb-nack", true)
            .field("rtcp-fb-nack-pli", true)
            .field("rtcp-fb-ccm-fir", true)
            .field("rtcp-fb-transport-cc", true)
            .field("extmap-3", TWCC_URI);
        let s = match c.to_ascii_uppercase().as_str() {
            "H264" => b
                .field("encoding-name", "H264")
                .field("payload", PT_H264)
                .field("packetization-mode", "1")
                .field("profile-level-id", "42e01f")
                .field("level-asymmetry-allowed", "1")
                .build(),
            // Main and High as Chrome offers them besides constrained baseline, each on a
            // payload type of its own (a browser-like viewer in tests/sources.rs).
            "H264-MAIN" | "H264-HIGH" => b
                .field("encoding-name", "H264")
                .field(
                    "payload",
                    if c.ends_with("MAIN") {
                        PT_H264_MAIN
                    } else {
                        PT_H264_HIGH
                    },
                )
                .field("packetization-mode", "1")
                .field(
                    "profile-level-id",
                    if c.ends_with("MAIN") {
                        "4d001f"
                    } else {
                        "64001f"
                    },
                )
                .field("level-asymmetry-allowed", "1")
                .build(),
            "VP8" => b
                .field("encoding-name", "VP8")
                .field("payload", PT_VP8)
                .build(),
            "VP9" => b
                .field("encoding-name", "VP9")
                .field("payload", PT_VP9)
                .build(),
            other => {
                panic!("unsupported video codec {other} (H264, H264-MAIN, H264-HIGH, VP8, VP9)")
            }
        };
        caps_mut.append_structure(s);
    }
    caps
}

/// The codec-preferences caps for the audio transceiver: Opus 48000/2, as browsers offer it.
pub fn audio_caps() -> gst::Caps {
    gst::Caps::builder("application/x-rtp")
        .field("media", "audio")
        .field("encoding-name", "OPUS")
        .field("payload", PT_OPUS)
        .field("clock-rate", 48000i32)
        .field("encoding-params", "2")
        .field("minptime", "10")
        .field("useinbandfec", "1")
        .field("rtcp-fb-transport-cc", true)
        .field("extmap-3", TWCC_URI)
        .build()
}

/// Bytes per sample of one channel for a raw audio format name (opusdec gives S16LE).
fn sample_bytes(format: &str) -> u64 {
    match format {
        "U8" | "S8" => 1,
        f if f.starts_with("S16") || f.starts_with("U16") => 2,
        f if f.starts_with("S24") || f.starts_with("U24") => 3,
        f if f.starts_with("F64") => 8,
        _ => 4,
    }
}

/// A peer connection state as the W3C names it.
pub fn pc_state_string(s: gst_webrtc::WebRTCPeerConnectionState) -> String {
    use gst_webrtc::WebRTCPeerConnectionState as S;
    match s {
        S::New => "new",
        S::Connecting => "connecting",
        S::Connected => "connected",
        S::Disconnected => "disconnected",
        S::Failed => "failed",
        S::Closed => "closed",
        _ => "unknown",
    }
    .to_string()
}

/// Number of `a=candidate` attributes over all m-lines.
pub fn count_candidates(msg: &gst_sdp::SDPMessageRef) -> usize {
    msg.medias()
        .map(|m| m.attributes().filter(|a| a.key() == "candidate").count())
        .sum()
}

/// Copy of `msg` without `a=candidate` / `a=end-of-candidates` (session or media level).
pub fn strip_candidates(msg: &gst_sdp::SDPMessageRef) -> gst_sdp::SDPMessage {
    let mut out = msg.to_owned();
    let is_cand = |k: &str| k == "candidate" || k == "end-of-candidates";
    for i in (0..out.attributes_len()).rev() {
        if out.attribute(i).is_some_and(|a| is_cand(a.key())) {
            out.remove_attribute(i).expect("remove session attribute");
        }
    }
    for m in out.medias_mut() {
        for i in (0..m.attributes_len()).rev() {
            if m.attribute(i).is_some_and(|a| is_cand(a.key())) {
                m.remove_attribute(i).expect("remove media attribute");
            }
        }
    }
    out
}

/// First `key` attribute at media level, else at session level.
pub fn sdp_attr(msg: &gst_sdp::SDPMessageRef, key: &str) -> Option<String> {
    msg.medias()
        .find_map(|m| m.attribute_val(key))
        .or_else(|| msg.attribute_val(key))
        .map(str::to_string)
}

/// Links a new webrtcbin src pad to depayloader → decoder → fakesink and counts what comes out.
/// Runs on a streaming thread, where a panic would abort the test process: problems are recorded
/// in `errors()` instead.
fn on_incoming_pad(pipeline: &gst::Pipeline, pad: &gst::Pad, stats: &Arc<Stats>) {
    if let Err(e) = link_incoming_pad(pipeline, pad, stats) {
        stats.peer.errors.lock().unwrap().push(e);
    }
}

fn link_incoming_pad(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    stats: &Arc<Stats>,
) -> Result<(), String> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let s = caps
        .structure(0)
        .ok_or_else(|| format!("pad {} without caps", pad.name()))?;
    let enc = s
        .get::<&str>("encoding-name")
        .unwrap_or("")
        .to_ascii_uppercase();
    stats.codecs.lock().unwrap().push(enc.clone());
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|e| format!("element {name}: {e}"))
    };
    let (depay, dec, is_video) = match enc.as_str() {
        "H264" => ("rtph264depay", "avdec_h264", true),
        "VP8" => ("rtpvp8depay", "vp8dec", true),
        "VP9" => ("rtpvp9depay", "vp9dec", true),
        "OPUS" => ("rtpopusdepay", "opusdec", false),
        // Still drain it into a fakesink so webrtcbin does not stall on an unlinked pad.
        _ => ("", "", false),
    };
    let mut chain = Vec::new();
    if !depay.is_empty() {
        let d = make(depay)?;
        // Ask the sender for a keyframe (RTCP PLI/FIR) when decoding cannot start, and do not
        // hand the decoder a stream that starts mid-GOP: what a browser does.
        if d.find_property("request-keyframe").is_some() {
            d.set_property("request-keyframe", true);
        }
        if d.find_property("wait-for-keyframe").is_some() {
            d.set_property("wait-for-keyframe", true);
        }
        chain.push(d);
        chain.push(make(dec)?);
    }
    // async=false: a sink added to a PLAYING pipeline must not start a new async preroll of the
    // whole pipeline. sync=false: count frames as soon as they are decoded.
    let sink = make("fakesink")?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    chain.push(sink.clone());
    let refs: Vec<&gst::Element> = chain.iter().collect();
    pipeline
        .add_many(&refs)
        .map_err(|e| format!("add {enc} branch: {e}"))?;
    gst::Element::link_many(&refs).map_err(|e| format!("link {enc} branch: {e}"))?;
    for e in &chain {
        e.sync_state_with_parent()
            .map_err(|err| format!("{enc} branch {} to PLAYING: {err}", e.name()))?;
    }
    let sinkpad = chain[0]
        .static_pad("sink")
        .expect("elements have a sink pad");
    pad.link(&sinkpad)
        .map_err(|e| format!("link {enc} pad: {e:?}"))?;
    if depay.is_empty() {
        return Err(format!("unexpected incoming encoding {enc:?} (discarded)"));
    }
    let st = stats.clone();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buf) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let caps = pad.current_caps();
            let s = caps.as_ref().and_then(|c| c.structure(0));
            if is_video {
                if st.frames.fetch_add(1, Ordering::SeqCst) == 0 {
                    if let Some(t) = *st.answer_at.lock().unwrap() {
                        *st.first_frame.lock().unwrap() = Some(t.elapsed());
                    }
                }
                if let Some(s) = s {
                    if let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) {
                        *st.resolution.lock().unwrap() = Some((w, h));
                    }
                }
            } else if let Some(s) = s {
                let ch = s.get::<i32>("channels").unwrap_or(1).max(1) as u64;
                let bps = sample_bytes(s.get::<&str>("format").unwrap_or("S16LE"));
                st.audio_samples
                    .fetch_add(buf.size() as u64 / (ch * bps), Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
    Ok(())
}

impl Receiver {
    /// Builds the pipeline and returns it with its SDP offer text (ICE gathering complete unless
    /// strip_candidates).
    ///
    /// Gathering is awaited in both cases, so [`Receiver::local_candidates`] is complete when this
    /// returns; with `strip_candidates` the candidates are only left out of the returned text.
    /// Blocks the calling thread for the gathering (milliseconds on loopback).
    pub fn new(opts: &OfferOptions) -> (Receiver, String) {
        init();
        let created = Instant::now();
        let stats = Arc::new(Stats::default());
        let pipeline = gst::Pipeline::new();
        let webrtc = peer_webrtcbin(&pipeline, &stats.peer, || {});
        webrtc.set_property("latency", RECEIVER_LATENCY_MS);
        // The pad handler captures the stats and a weak pipeline ref only (see peer_webrtcbin).
        {
            let st = stats.clone();
            let pipe_weak = pipeline.downgrade();
            webrtc.connect_pad_added(move |_, pad| {
                if pad.direction() != gst::PadDirection::Src {
                    return;
                }
                if let Some(p) = pipe_weak.upgrade() {
                    on_incoming_pad(&p, pad, &st);
                }
            });
        }

        let recvonly = gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly;
        if opts.video {
            let n = if opts.two_video_tracks { 2 } else { 1 };
            for _ in 0..n {
                let caps = video_caps(&opts.video_codecs);
                webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                    "add-transceiver",
                    &[&recvonly, &caps],
                );
            }
        }
        if opts.audio {
            webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&recvonly, &audio_caps()],
            );
        }

        pipeline
            .set_state(gst::State::Playing)
            .expect("receiver pipeline to PLAYING");

        let (text, ufrag, pwd) = gathered_offer(&webrtc, &stats.peer, opts.strip_candidates);
        (
            Receiver {
                pipeline,
                webrtc,
                stats,
                ufrag,
                pwd,
                created,
            },
            text,
        )
    }

    /// Applies the server's SDP answer.
    pub fn set_answer(&self, answer_sdp: &str) -> Result<(), String> {
        *self.stats.answer_at.lock().unwrap() = Some(Instant::now());
        apply_answer(&self.webrtc, answer_sdp)
    }

    /// Local ICE candidates gathered so far as (mline index, "candidate:..." line), for trickle
    /// PATCH tests.
    pub fn local_candidates(&self) -> Vec<(u32, String)> {
        self.stats.peer.candidates.lock().unwrap().clone()
    }

    /// This peer's ICE credentials (from the offer), for building PATCH sdpfrags.
    pub fn ice_ufrag_pwd(&self) -> (String, String) {
        (self.ufrag.clone(), self.pwd.clone())
    }

    /// Decoded video frames so far.
    pub fn frames_decoded(&self) -> u64 {
        self.stats.frames.load(Ordering::SeqCst)
    }

    /// RTP packets lost on the way in, over all streams (sequence numbers never received,
    /// from webrtcbin's inbound-rtp statistics); -1 without statistics. Blocks on a promise.
    pub fn packets_lost(&self) -> i64 {
        stat_sum(
            &self.webrtc,
            gst_webrtc::WebRTCStatsType::InboundRtp,
            "packets-lost",
        )
        .unwrap_or(-1)
    }

    /// Width and height of the last decoded video frame.
    pub fn resolution(&self) -> Option<(i32, i32)> {
        *self.stats.resolution.lock().unwrap()
    }

    /// Decoded audio samples (per channel) so far.
    pub fn audio_samples(&self) -> u64 {
        self.stats.audio_samples.load(Ordering::SeqCst)
    }

    /// Time from `set_answer` to the first decoded video frame (includes ICE + DTLS, the wait for a
    /// keyframe and [`RECEIVER_LATENCY_MS`]).
    pub fn first_frame_after(&self) -> Option<Duration> {
        *self.stats.first_frame.lock().unwrap()
    }

    /// Time since `Receiver::new` started.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Negotiated video/audio encoding names seen on the incoming pads (e.g. "H264", "OPUS").
    pub fn codecs(&self) -> Vec<String> {
        self.stats.codecs.lock().unwrap().clone()
    }

    /// webrtcbin connection state as a string ("new","connecting","connected","failed",...).
    pub fn connection_state(&self) -> String {
        pc_state_string(
            self.webrtc
                .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state"),
        )
    }

    /// Errors and warnings posted on the pipeline bus, plus wiring problems; for assertion
    /// messages.
    pub fn errors(&self) -> Vec<String> {
        self.stats.peer.errors.lock().unwrap().clone()
    }

    /// Waits (polling every 50 ms) until frames_decoded() >= n or the timeout passes; returns
    /// whether it happened. Blocks the thread: fine in tests whose server is another process.
    pub fn wait_frames(&self, n: u64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.frames_decoded() >= n {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The webrtcbin element, for tests that need something this API does not expose.
    pub fn webrtcbin(&self) -> &gst::Element {
        &self.webrtc
    }
}

impl Drop for Receiver {
    /// Sets the pipeline to NULL and waits for it, so webrtcbin's ICE/DTLS threads are gone
    /// (and the server sees the viewer leave) before the test goes on.
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pipeline.state(gst::ClockTime::from_seconds(5));
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }
}

/// HTTP side: POST the offer to a WHEP endpoint and return (status, headers, body).
pub async fn post_offer(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    sdp: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(sdp.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("POST offer");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    (status, headers, body)
}

/// Convenience: Receiver::new + post_offer + set_answer; panics with the server's body on a
/// non-201. Returns the receiver and the absolute resource URL (Location resolved against url)
/// and ETag (empty if the server sent none).
pub async fn connect(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    opts: &OfferOptions,
) -> (Receiver, String, String) {
    // Gathering blocks; keep it off the async worker thread.
    let o = opts.clone();
    let (rx, offer) = tokio::task::spawn_blocking(move || Receiver::new(&o))
        .await
        .expect("Receiver::new panicked");
    let (status, headers, body) = post_offer(http, url, token, &offer).await;
    assert_eq!(
        status,
        reqwest::StatusCode::CREATED,
        "WHEP POST {url} answered {status}: {body}"
    );
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("201 without Location");
    let resource = reqwest::Url::parse(url)
        .and_then(|u| u.join(location))
        .expect("Location resolves against the endpoint URL")
        .to_string();
    let etag = headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Err(e) = rx.set_answer(&body) {
        panic!("set_answer failed: {e}\nanswer was:\n{body}");
    }
    (rx, resource, etag)
}
