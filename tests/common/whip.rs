//! A real WebRTC publisher for the WHIP ingest integration tests (RFC 9725).
//!
//! [`Publisher`] is one GStreamer pipeline: live test video (x264 or VP8) and Opus audio into a
//! `webrtcbin` with sendonly transceivers. It counts what matters for an ingest server: the
//! key-frame requests that reached the encoder (the server's RTCP PLI/FIR, turned into upstream
//! `GstForceKeyUnit` events by the sending `rtpsession`) and the key frames produced in reply.
//! [`post_offer`] and [`publish`] are the WHIP HTTP side (POST `application/sdp`, `201 Created`
//! with `Location`, `ETag`, `Link`).
//!
//! Same conventions as the WHEP receiver in `whep.rs`, whose helpers it reuses: no GLib main loop
//! (webrtcbin replies through `gst::Promise`s on its own thread), Chrome-like payload types, UPnP
//! off, and every callback runs on a GStreamer thread.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_webrtc as gst_webrtc;

use super::whep::{
    apply_answer, audio_caps, gathered_offer, init, pc_state_string, peer_webrtcbin, stat_sum,
    video_caps, PeerSignals,
};
pub use super::whep::{PT_H264, PT_OPUS, PT_VP8};

/// How long `Publisher::new` waits for the encoders' first caps; tens of milliseconds here.
const CAPS_TIMEOUT: Duration = Duration::from_secs(5);

/// RTCP payload-specific feedback (RFC 4585) and its PLI / FIR message types, as the sending
/// rtpsession's `on-feedback-rtcp` signal reports them.
const RTCP_PSFB: u32 = 206;
const PSFB_PLI: u32 = 1;
const PSFB_FIR: u32 = 4;

/// What [`Publisher::new`] sends and offers.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Video codec: "H264" (constrained baseline, packetization-mode=1, PT [`PT_H264`]), "VP8"
    /// (PT [`PT_VP8`]) or `None` for an audio-only publisher.
    pub video: Option<&'static str>,
    /// Send Opus (PT [`PT_OPUS`]).
    pub audio: bool,
    /// Send an offer with no `a=candidate` lines, like OBS or a browser with mDNS candidates: the
    /// server must learn the address peer-reflexively, or from a trickle PATCH built from
    /// [`Publisher::local_candidates`].
    pub strip_candidates: bool,
    /// Encoder GOP in frames. Set it far above the test's duration to prove that a key frame
    /// was produced because the server asked for one, not because the GOP ended.
    pub key_int_max: u32,
    /// Video width.
    pub width: i32,
    /// Video height.
    pub height: i32,
    /// Video frames per second.
    pub fps: i32,
}

impl Default for PublisherOptions {
    /// H.264 320x240@30 with a 2 s GOP, Opus, candidates in the offer.
    fn default() -> Self {
        PublisherOptions {
            video: Some("H264"),
            audio: true,
            strip_candidates: false,
            key_int_max: 60,
            width: 320,
            height: 240,
            fps: 30,
        }
    }
}

/// Counters written from GStreamer threads and read by the test thread.
#[derive(Default)]
struct Stats {
    key_unit_requests: AtomicU64,
    key_unit_events: Mutex<Vec<String>>,
    keyframes: AtomicU64,
    video_frames: AtomicU64,
    plis: AtomicU64,
    firs: AtomicU64,
    peer: Arc<PeerSignals>,
    /// A generation number bumped on every counter or state change, so that a waiter can sleep
    /// until something happened instead of polling.
    changed: (Mutex<u64>, Condvar),
}

impl Stats {
    fn error(&self, e: String) {
        self.peer.errors.lock().unwrap().push(e);
        self.bump();
    }

    fn bump(&self) {
        let (m, cv) = &self.changed;
        *m.lock().unwrap() += 1;
        cv.notify_all();
    }

    /// Waits until `pred` holds, re-checking after every [`Stats::bump`]. The predicate runs
    /// with no lock held: it may read webrtcbin properties, whose notify handlers bump.
    fn wait_until(&self, timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + timeout;
        let (m, cv) = &self.changed;
        loop {
            let seen = *m.lock().unwrap();
            if pred() {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            let g = m.lock().unwrap();
            let _ = cv
                .wait_timeout_while(g, end - now, |gen| *gen == seen)
                .unwrap();
        }
    }
}

/// A sending WebRTC peer (GStreamer webrtcbin, sendonly transceivers) with live test media.
///
/// Dropping it sets the pipeline to NULL and waits, which joins webrtcbin's threads (and lets the
/// server see the publisher leave through ICE consent / DTLS close).
pub struct Publisher {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    stats: Arc<Stats>,
    ufrag: String,
    pwd: String,
}

/// The encode-and-payload part of the video branch (the encoder is named `venc`).
fn video_branch(opts: &PublisherOptions, codec: &str) -> String {
    let src = format!(
        "videotestsrc is-live=true pattern=ball \
         ! video/x-raw,width={},height={},framerate={}/1 ! videoconvert",
        opts.width, opts.height, opts.fps
    );
    match codec.to_ascii_uppercase().as_str() {
        // rtph264pay announces the SPS's own profile-level-id spelling (42c0xx), and webrtcbin
        // compares it with the transceiver's codec preferences as a string: capssetter makes the
        // sink caps say what the offer says.
        "H264" => format!(
            "{src} ! x264enc name=venc tune=zerolatency speed-preset=ultrafast key-int-max={k} \
             bframes=0 ! video/x-h264,profile=constrained-baseline \
             ! rtph264pay pt={pt} config-interval=-1 aggregate-mode=zero-latency \
             ! capssetter caps=\"application/x-rtp,profile-level-id=(string)42e01f\" \
             ! capsfilter caps=application/x-rtp,payload={pt}",
            k = opts.key_int_max,
            pt = PT_H264
        ),
        "VP8" => format!(
            "{src} ! vp8enc name=venc deadline=1 keyframe-max-dist={k} \
             ! rtpvp8pay pt={pt} ! capsfilter caps=application/x-rtp,payload={pt}",
            k = opts.key_int_max,
            pt = PT_VP8
        ),
        other => panic!("PublisherOptions::video: unsupported codec {other}"),
    }
}

fn audio_branch() -> String {
    format!(
        "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc \
         ! rtpopuspay pt={pt} ! capsfilter caps=application/x-rtp,payload={pt}",
        pt = PT_OPUS
    )
}

/// Adds one source branch to the pipeline and links it to a new webrtcbin sink pad whose
/// transceiver is made sendonly with `prefs` as codec preferences. Requesting the pad ourselves
/// (instead of `! webrtcbin.` in a launch line) is what gives us that transceiver to configure
/// before the offer is made.
fn add_branch(
    pipeline: &gst::Pipeline,
    webrtc: &gst::Element,
    desc: &str,
    prefs: &gst::Caps,
) -> gst::Bin {
    let bin = gst::parse::bin_from_description(desc, true)
        .unwrap_or_else(|e| panic!("publisher branch `{desc}`: {e}"));
    pipeline.add(&bin).unwrap();
    let sinkpad = webrtc
        .request_pad_simple("sink_%u")
        .expect("webrtcbin sink pad");
    let trans = sinkpad.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
    trans.set_direction(gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly);
    trans.set_codec_preferences(Some(prefs));
    bin.static_pad("src")
        .expect("branch has a ghost src pad")
        .link(&sinkpad)
        .unwrap_or_else(|e| panic!("link `{desc}` to webrtcbin: {e:?}"));
    bin
}

/// Counts, on the video encoder's src pad, the upstream force-key-unit events that reach it and
/// the key frames it produces.
fn watch_encoder(enc: &gst::Element, stats: &Arc<Stats>) {
    let pad = enc.static_pad("src").expect("encoder src pad");
    let st = stats.clone();
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        if let Some(ev) = info.event() {
            if let Some(s) = ev.structure().filter(|s| s.name() == "GstForceKeyUnit") {
                st.key_unit_events.lock().unwrap().push(s.to_string());
                st.key_unit_requests.fetch_add(1, Ordering::SeqCst);
                st.bump();
            }
        }
        gst::PadProbeReturn::Ok
    });
    let st = stats.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buf) = info.buffer() {
            st.video_frames.fetch_add(1, Ordering::SeqCst);
            if !buf.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                st.keyframes.fetch_add(1, Ordering::SeqCst);
            }
            st.bump();
        }
        gst::PadProbeReturn::Ok
    });
}

/// Counts RTCP PLI/FIR as the sending rtpsession receives them (before it decides whether to
/// turn them into key-unit requests), to tell "the server sent none" from "it got lost here".
fn watch_rtcp_feedback(session_element: &gst::Element, stats: &Arc<Stats>) {
    if session_element.find_property("internal-session").is_none() {
        return;
    }
    let session = session_element.property::<gst::glib::Object>("internal-session");
    let st = stats.clone();
    session.connect("on-feedback-rtcp", false, move |vals| {
        let typ = vals.get(1).and_then(|v| v.get::<u32>().ok()).unwrap_or(0);
        let fbtype = vals.get(2).and_then(|v| v.get::<u32>().ok()).unwrap_or(0);
        match (typ, fbtype) {
            (RTCP_PSFB, PSFB_PLI) => {
                st.plis.fetch_add(1, Ordering::SeqCst);
                st.bump();
            }
            (RTCP_PSFB, PSFB_FIR) => {
                st.firs.fetch_add(1, Ordering::SeqCst);
                st.bump();
            }
            _ => {}
        }
        None
    });
}

impl Publisher {
    /// Builds and starts the pipeline and returns it with its SDP offer text: ICE gathering
    /// complete and all candidates in it, or none of them with `strip_candidates` (they are
    /// still gathered, see [`Publisher::local_candidates`]).
    ///
    /// Blocks the calling thread for the gathering (milliseconds on loopback).
    pub fn new(opts: &PublisherOptions) -> (Publisher, String) {
        init();
        assert!(
            opts.video.is_some() || opts.audio,
            "PublisherOptions: neither video nor audio"
        );
        let stats = Arc::new(Stats::default());
        let pipeline = gst::Pipeline::new();
        let st = stats.clone();
        let webrtc = peer_webrtcbin(&pipeline, &stats.peer, move || st.bump());
        // Handlers capture only the stats (see peer_webrtcbin).
        {
            let st = stats.clone();
            webrtc.connect_notify(Some("connection-state"), move |_, _| st.bump());
        }
        // rtpbin creates its rtpsession when webrtcbin sets up the transport, after this
        // function has returned; catching it as it is added is the only hook.
        {
            let st = stats.clone();
            webrtc
                .downcast_ref::<gst::Bin>()
                .expect("webrtcbin is a bin")
                .connect_deep_element_added(move |_, _, element| {
                    if element.factory().is_some_and(|f| f.name() == "rtpsession") {
                        watch_rtcp_feedback(element, &st);
                    }
                });
        }

        // m-line order: video first, then audio, like a browser's addTrack order.
        if let Some(codec) = opts.video {
            let bin = add_branch(
                &pipeline,
                &webrtc,
                &video_branch(opts, codec),
                &video_caps(&[codec]),
            );
            watch_encoder(&bin.by_name("venc").expect("venc"), &stats);
        }
        if opts.audio {
            add_branch(&pipeline, &webrtc, &audio_branch(), &audio_caps());
        }

        // webrtcbin writes a transceiver's a=ssrc/msid lines from its sink pad caps, and a
        // browser's offer always has them: wait for the first caps (the encoder's first frame).
        for pad in webrtc.sink_pads() {
            let st = stats.clone();
            pad.connect_notify(Some("caps"), move |_, _| st.bump());
        }
        pipeline
            .set_state(gst::State::Playing)
            .expect("publisher pipeline to PLAYING");
        let negotiated = stats.wait_until(CAPS_TIMEOUT, || {
            webrtc
                .sink_pads()
                .iter()
                .all(|p| p.current_caps().is_some())
        });
        if !negotiated {
            stats.error("webrtcbin sink pads got no caps in time".into());
        }

        let (text, ufrag, pwd) = gathered_offer(&webrtc, &stats.peer, opts.strip_candidates);
        (
            Publisher {
                pipeline,
                webrtc,
                stats,
                ufrag,
                pwd,
            },
            text,
        )
    }

    /// Applies the server's SDP answer.
    pub fn set_answer(&self, sdp: &str) -> Result<(), String> {
        apply_answer(&self.webrtc, sdp)
    }

    /// webrtcbin connection state as a string ("new","connecting","connected","failed",...).
    pub fn connection_state(&self) -> String {
        pc_state_string(self.pc_state())
    }

    fn pc_state(&self) -> gst_webrtc::WebRTCPeerConnectionState {
        self.webrtc
            .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
    }

    /// Waits until the connection is up (ICE and DTLS done). Returns false on timeout, and
    /// early once the connection has failed or closed, since it cannot come back from those.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        use gst_webrtc::WebRTCPeerConnectionState as S;
        let mut connected = false;
        self.wait_for(timeout, |p| match p.pc_state() {
            S::Connected => {
                connected = true;
                true
            }
            S::Failed | S::Closed => true,
            _ => false,
        });
        connected
    }

    /// Waits until `pred` holds, re-checking it whenever a counter or the connection state
    /// changes (no polling); returns whether it held before `timeout`. `pred` runs without any
    /// lock held, so it may call any method of the publisher.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Publisher) -> bool) -> bool {
        self.stats.wait_until(timeout, || pred(self))
    }

    /// Upstream `GstForceKeyUnit` events that reached the video encoder. The sending
    /// rtpsession turns every RTCP PLI/FIR it accepts into one, so this is how a test proves
    /// that the server asked for a key frame.
    pub fn key_unit_requests(&self) -> u64 {
        self.stats.key_unit_requests.load(Ordering::SeqCst)
    }

    /// The structures of the events counted by [`Publisher::key_unit_requests`], for
    /// assertion messages (`all-headers=true` comes from a FIR, false from a PLI).
    pub fn key_unit_request_events(&self) -> Vec<String> {
        self.stats.key_unit_events.lock().unwrap().clone()
    }

    /// Key frames the video encoder produced (buffers without DELTA_UNIT on its src pad).
    pub fn keyframes_sent(&self) -> u64 {
        self.stats.keyframes.load(Ordering::SeqCst)
    }

    /// Encoded video frames so far.
    pub fn video_frames_sent(&self) -> u64 {
        self.stats.video_frames.load(Ordering::SeqCst)
    }

    /// RTCP PLI messages the sending rtpsession received.
    pub fn plis_received(&self) -> u64 {
        self.stats.plis.load(Ordering::SeqCst)
    }

    /// RTCP FIR messages the sending rtpsession received.
    pub fn firs_received(&self) -> u64 {
        self.stats.firs.load(Ordering::SeqCst)
    }

    /// RTP packets sent over all streams, from webrtcbin's outbound-rtp statistics (what left
    /// through DTLS-SRTP, not what the payloaders produced). Blocks on a webrtcbin promise.
    pub fn rtp_packets_sent(&self) -> u64 {
        stat_sum(
            &self.webrtc,
            gst_webrtc::WebRTCStatsType::OutboundRtp,
            "packets-sent",
        )
        .unwrap_or(0)
    }

    /// Local ICE candidates gathered, as (mline index, "candidate:..." line), for trickle
    /// PATCH tests.
    pub fn local_candidates(&self) -> Vec<(u32, String)> {
        self.stats.peer.candidates.lock().unwrap().clone()
    }

    /// This peer's ICE credentials (from the offer), for building PATCH sdpfrags.
    pub fn ice_ufrag_pwd(&self) -> (String, String) {
        (self.ufrag.clone(), self.pwd.clone())
    }

    /// Errors and warnings posted on the pipeline bus, for assertion messages.
    pub fn errors(&self) -> Vec<String> {
        self.stats.peer.errors.lock().unwrap().clone()
    }

    /// The webrtcbin element, for tests that need something this API does not expose.
    pub fn webrtcbin(&self) -> &gst::Element {
        &self.webrtc
    }
}

impl Drop for Publisher {
    /// Sets the pipeline to NULL and waits for it, so webrtcbin's ICE/DTLS threads are gone
    /// before the test goes on.
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pipeline.state(gst::ClockTime::from_seconds(5));
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }
}

/// A publisher whose offer the server accepted (`201 Created`) and whose answer is applied.
pub struct Published {
    /// The connecting (soon connected) publisher.
    pub publisher: Publisher,
    /// The WHIP session URL (`Location` resolved against the endpoint URL), for PATCH/DELETE.
    pub location: String,
    /// The `ETag` header, for `If-Match` on PATCH.
    pub etag: Option<String>,
    /// `Link` header entries, one per link (e.g. `<stun:...>; rel="ice-server"`).
    pub links: Vec<String>,
}

/// POSTs an SDP offer to a WHIP endpoint and returns the response as it came, so tests can
/// check status and headers of refusals too.
pub async fn post_offer(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    offer: &str,
) -> reqwest::Response {
    let mut req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(offer.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("POST offer")
}

/// Splits `Link` header values into single links; commas inside `<...>` or quotes (a TURN
/// URL's query, a quoted credential) do not separate links.
fn split_links(values: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        let (mut angle, mut quote, mut cur) = (false, false, String::new());
        for c in v.chars() {
            match c {
                '<' if !quote => angle = true,
                '>' if !quote => angle = false,
                '"' if !angle => quote = !quote,
                ',' if !angle && !quote => {
                    out.push(cur.trim().to_string());
                    cur.clear();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        if !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
        }
    }
    out
}

/// Creates a [`Publisher`], POSTs its offer to `{base_url}/whip/{id}` and applies the answer.
///
/// Any status but 201 comes back as `Err((status, body))`. A 201 that is unusable (no
/// `Location`, an answer webrtcbin rejects) comes back as `Err((201, reason))`, so a test that
/// expected success prints why. Does not wait for the connection: see
/// [`Publisher::wait_connected`].
pub async fn publish(
    http: &reqwest::Client,
    base_url: &str,
    id: &str,
    token: Option<&str>,
    opts: &PublisherOptions,
) -> Result<Published, (reqwest::StatusCode, String)> {
    let url = format!("{}/whip/{id}", base_url.trim_end_matches('/'));
    // Gathering and the answer's promise block; keep them off the async worker threads.
    let o = opts.clone();
    let (publisher, offer) = tokio::task::spawn_blocking(move || Publisher::new(&o))
        .await
        .expect("Publisher::new panicked");
    let resp = post_offer(http, &url, token, &offer).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        return Err((status, body));
    }
    let Some(location) = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err((status, "201 without Location".into()));
    };
    let location = reqwest::Url::parse(&url)
        .and_then(|u| u.join(location))
        .map_err(|e| {
            (
                status,
                format!("Location {location:?} does not resolve: {e}"),
            )
        })?
        .to_string();
    let etag = headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let link_values: Vec<&str> = headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let links = split_links(&link_values);
    let (publisher, applied) = tokio::task::spawn_blocking(move || {
        let r = publisher.set_answer(&body);
        (
            publisher,
            r.map_err(|e| format!("{e}\nanswer was:\n{body}")),
        )
    })
    .await
    .expect("set_answer panicked");
    if let Err(e) = applied {
        return Err((status, format!("set_answer failed: {e}")));
    }
    Ok(Published {
        publisher,
        location,
        etag,
        links,
    })
}
