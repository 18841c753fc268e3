//! Proves the WHIP test publisher (`tests/common/whip.rs`) works without the streamcore server.
//!
//! An in-process receiving webrtcbin plays the server's part: it answers the publisher's offer
//! with recvonly transceivers, counts the RTP it gets, and asks for key frames the way a server
//! does, with an upstream `GstForceKeyUnit` event on its video src pad, which its rtpsession
//! turns into RTCP PLI/FIR. If these tests fail, fix the client before blaming the server.
//!
//! `WHIP_PRINT_SDP=1 cargo test --test whip_client_selftest -- --nocapture` prints offer and
//! answer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

use common::whep;
use common::whip::{self, Publisher, PublisherOptions, PT_H264, PT_OPUS, PT_VP8};

/// The tests run one at a time: two peer pairs at once on a 2-core machine would only make the
/// timings noisier, and the teardown test counts threads.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bounded waits; on loopback everything here takes well under a second.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct RxStats {
    video_rtp: AtomicU64,
    audio_rtp: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Generation number bumped on every change, so waits need no polling.
    changed: (Mutex<u64>, Condvar),
}

impl RxStats {
    fn bump(&self) {
        let (m, cv) = &self.changed;
        *m.lock().unwrap() += 1;
        cv.notify_all();
    }
}

/// The answering side: a webrtcbin with recvonly transceivers that counts incoming RTP packets
/// per media on its src pads and drains them into fakesinks.
struct Receiver {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    stats: Arc<RxStats>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pipeline.state(gst::ClockTime::from_seconds(5));
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }
}

/// How the receiver is set up; `feedback: false` leaves PLI/FIR out of its codec preferences,
/// so its answer does not negotiate them.
#[derive(Clone, Copy)]
struct RxOptions {
    video: Option<&'static str>,
    audio: bool,
    feedback: bool,
}

impl Default for RxOptions {
    fn default() -> Self {
        RxOptions {
            video: Some("H264"),
            audio: true,
            feedback: true,
        }
    }
}

fn rx_video_caps(codec: &str, feedback: bool) -> gst::Caps {
    let mut b = gst::Structure::builder("application/x-rtp")
        .field("media", "video")
        .field("clock-rate", 90000i32);
    if feedback {
        b = b
            .field("rtcp-fb-nack-pli", true)
            .field("rtcp-fb-ccm-fir", true);
    }
    let s = match codec {
        "H264" => b
            .field("encoding-name", "H264")
            .field("payload", PT_H264)
            .field("packetization-mode", "1")
            .field("profile-level-id", "42e01f")
            .build(),
        _ => b
            .field("encoding-name", "VP8")
            .field("payload", PT_VP8)
            .build(),
    };
    gst::Caps::builder_full().structure(s).build()
}

fn rx_audio_caps() -> gst::Caps {
    gst::Caps::builder("application/x-rtp")
        .field("media", "audio")
        .field("encoding-name", "OPUS")
        .field("payload", PT_OPUS)
        .field("clock-rate", 48000i32)
        .field("encoding-params", "2")
        .build()
}

/// Drains a new webrtcbin src pad into a fakesink and counts its RTP packets by media.
fn on_rx_pad(pipeline: &gst::Pipeline, pad: &gst::Pad, st: &Arc<RxStats>) -> Result<(), String> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let video = caps
        .structure(0)
        .and_then(|s| s.get::<&str>("media").ok())
        .ok_or_else(|| format!("pad {} without media in caps {caps}", pad.name()))?
        == "video";
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .map_err(|e| e.to_string())?;
    pipeline.add(&sink).map_err(|e| e.to_string())?;
    sink.sync_state_with_parent().map_err(|e| e.to_string())?;
    pad.link(&sink.static_pad("sink").unwrap())
        .map_err(|e| format!("link {}: {e:?}", pad.name()))?;
    let st = st.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let c = if video { &st.video_rtp } else { &st.audio_rtp };
        c.fetch_add(1, Ordering::SeqCst);
        st.bump();
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

impl Receiver {
    /// Takes `offer_sdp`, returns the receiver and its complete answer (gathering finished,
    /// candidates included, as a WHIP server answers).
    fn answer(offer_sdp: &str, opts: RxOptions) -> (Receiver, String) {
        let stats = Arc::new(RxStats::default());
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .unwrap();
        assert!(whep::disable_upnp(&webrtc), "could not disable UPnP");
        pipeline.add(&webrtc).unwrap();
        {
            let st = stats.clone();
            pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
                if let gst::MessageView::Error(e) = msg.view() {
                    st.errors.lock().unwrap().push(format!(
                        "{:?}: {} ({:?})",
                        msg.src().map(|s| s.path_string()),
                        e.error(),
                        e.debug()
                    ));
                    st.bump();
                }
                gst::BusSyncReply::Drop
            });
        }
        {
            let st = stats.clone();
            let pipe = pipeline.downgrade();
            webrtc.connect_pad_added(move |_, pad| {
                if pad.direction() != gst::PadDirection::Src {
                    return;
                }
                if let Some(p) = pipe.upgrade() {
                    if let Err(e) = on_rx_pad(&p, pad, &st) {
                        st.errors.lock().unwrap().push(e);
                        st.bump();
                    }
                }
            });
        }
        {
            let st = stats.clone();
            webrtc.connect_notify(Some("ice-gathering-state"), move |_, _| st.bump());
        }
        let recvonly = gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly;
        if let Some(codec) = opts.video {
            let caps = rx_video_caps(codec, opts.feedback);
            webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&recvonly, &caps],
            );
        }
        if opts.audio {
            webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&recvonly, &rx_audio_caps()],
            );
        }
        pipeline.set_state(gst::State::Playing).unwrap();

        let offer = gst_sdp::SDPMessage::parse_buffer(offer_sdp.as_bytes()).expect("offer parses");
        whep::answer_offer(&webrtc, offer);
        let rx = Receiver {
            pipeline,
            webrtc,
            stats,
        };
        let w = rx.webrtc.clone();
        assert!(
            rx.wait(WAIT, || {
                w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
                    == gst_webrtc::WebRTCICEGatheringState::Complete
            }),
            "receiver ICE gathering did not complete"
        );
        // webrtcbin 1.22 puts the gathered candidates into its local description itself.
        let text = rx
            .webrtc
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .unwrap()
            .sdp()
            .as_text()
            .unwrap();
        (rx, text)
    }

    /// Waits until `pred` holds, re-checking on every counter/state change; `pred` runs with no
    /// lock held.
    fn wait(&self, timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + timeout;
        let (m, cv) = &self.stats.changed;
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
            let _ = cv.wait_timeout_while(g, end - now, |gen| *gen == seen);
        }
    }

    fn video_rtp(&self) -> u64 {
        self.stats.video_rtp.load(Ordering::SeqCst)
    }

    fn audio_rtp(&self) -> u64 {
        self.stats.audio_rtp.load(Ordering::SeqCst)
    }

    fn errors(&self) -> Vec<String> {
        self.stats.errors.lock().unwrap().clone()
    }

    /// The webrtcbin src pad that carries video.
    fn video_src_pad(&self) -> gst::Pad {
        self.webrtc
            .src_pads()
            .into_iter()
            .find(|p| {
                p.current_caps()
                    .and_then(|c| {
                        c.structure(0)
                            .map(|s| s.get::<&str>("media").ok() == Some("video"))
                    })
                    .unwrap_or(false)
            })
            .expect("receiver has a video src pad")
    }

    /// Asks the publisher for a key frame the way a server's pipeline does: an upstream
    /// force-key-unit event into webrtcbin's video src pad. Built by hand (gstreamer-video is
    /// not a dependency) with the fields gst_video_event_new_upstream_force_key_unit() sets;
    /// rtpptdemux and rtpssrcdemux add the `payload` and `ssrc` the rtpsession needs on the way
    /// up. Returns what send_event returned.
    fn request_key_unit(&self, all_headers: bool) -> bool {
        let ev = gst::event::CustomUpstream::new(
            gst::Structure::builder("GstForceKeyUnit")
                .field("running-time", u64::MAX)
                .field("all-headers", all_headers)
                .field("count", 0u32)
                .build(),
        );
        self.video_src_pad().send_event(ev)
    }
}

fn parse(sdp: &str) -> gst_sdp::SDPMessage {
    gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).expect("SDP parses")
}

fn candidates_in(sdp: &str) -> usize {
    parse(sdp)
        .medias()
        .map(|m| m.attributes().filter(|a| a.key() == "candidate").count())
        .sum()
}

fn print_sdp(label: &str, sdp: &str) {
    if std::env::var_os("WHIP_PRINT_SDP").is_some() {
        eprintln!("{label}:\n{sdp}");
    }
}

/// Offer → in-process answer → connected, with RTP of every offered kind arriving.
fn connect(opts: &PublisherOptions, rx_opts: RxOptions) -> (Publisher, Receiver) {
    connect_edited(opts, rx_opts, str::to_string)
}

/// [`connect`], with the offer passed through `edit` on its way to the receiver.
fn connect_edited(
    opts: &PublisherOptions,
    rx_opts: RxOptions,
    edit: impl Fn(&str) -> String,
) -> (Publisher, Receiver) {
    let t0 = Instant::now();
    let (p, offer) = Publisher::new(opts);
    let t_offer = t0.elapsed();
    let offer = edit(&offer);
    print_sdp("OFFER", &offer);
    let (rx, answer) = Receiver::answer(&offer, rx_opts);
    print_sdp("ANSWER", &answer);
    p.set_answer(&answer).expect("set_answer");
    assert!(
        p.wait_connected(WAIT),
        "publisher state {}; errors {:?} / {:?}\noffer:\n{offer}\nanswer:\n{answer}",
        p.connection_state(),
        p.errors(),
        rx.errors()
    );
    let t_connected = t0.elapsed();
    let want_video = opts.video.is_some();
    assert!(
        rx.wait(WAIT, || (!want_video || rx.video_rtp() > 0)
            && (!opts.audio || rx.audio_rtp() > 0)),
        "receiver got video {} / audio {} RTP packets; errors {:?} / {:?}",
        rx.video_rtp(),
        rx.audio_rtp(),
        p.errors(),
        rx.errors()
    );
    eprintln!(
        "{:?} audio={}: offer {t_offer:?}, connected {t_connected:?}, media {:?}",
        opts.video,
        opts.audio,
        t0.elapsed()
    );
    (p, rx)
}

/// The publisher's side of a key-frame request: the request reached the encoder as a
/// force-key-unit event and a key frame followed it.
fn assert_key_unit_answered(p: &Publisher, rx: &Receiver, all_headers: bool) {
    let (req0, kf0, pli0, fir0) = (
        p.key_unit_requests(),
        p.keyframes_sent(),
        p.plis_received(),
        p.firs_received(),
    );
    let handled = rx.request_key_unit(all_headers);
    let ok = p.wait_for(WAIT, |p| {
        p.key_unit_requests() > req0 && p.keyframes_sent() > kf0
    });
    assert!(
        ok,
        "all-headers={all_headers}: send_event returned {handled}; key-unit requests {req0} -> \
         {}, key frames {kf0} -> {}, PLI {pli0} -> {}, FIR {fir0} -> {}; errors {:?} / {:?}",
        p.key_unit_requests(),
        p.keyframes_sent(),
        p.plis_received(),
        p.firs_received(),
        p.errors(),
        rx.errors()
    );
    eprintln!(
        "all-headers={all_headers}: send_event {handled}, PLI {pli0} -> {}, FIR {fir0} -> {}, \
         encoder events {:?}",
        p.plis_received(),
        p.firs_received(),
        p.key_unit_request_events()
    );
}

#[test]
fn publishes_h264_and_opus() {
    let _g = serial();
    let (p, rx) = connect(&PublisherOptions::default(), RxOptions::default());
    assert_eq!(p.connection_state(), "connected");
    assert!(
        p.keyframes_sent() >= 1,
        "the stream starts with a key frame"
    );
    assert!(
        p.wait_for(WAIT, |p| p.rtp_packets_sent() > 0),
        "webrtcbin stats report no RTP sent"
    );
    assert!(rx.errors().is_empty(), "{:?}", rx.errors());
}

/// The mechanism a WHIP server uses to ask a publisher for a key frame, end to end: upstream
/// force-key-unit event on the receiving webrtcbin's src pad → RTCP PLI (all-headers=false) or
/// FIR (all-headers=true) → the sending rtpsession → force-key-unit at the encoder → key frame.
/// The GOP is far longer than the test, so only the request can explain the key frames.
#[test]
fn key_frame_requests_reach_the_encoder() {
    let _g = serial();
    let opts = PublisherOptions {
        key_int_max: 10000,
        ..PublisherOptions::default()
    };
    let (p, rx) = connect(&opts, RxOptions::default());
    assert!(p.wait_for(WAIT, |p| p.keyframes_sent() >= 1));
    assert_eq!(
        p.keyframes_sent(),
        1,
        "only the first frame is a key frame before anyone asks"
    );
    assert_eq!(
        p.key_unit_requests(),
        0,
        "{:?}",
        p.key_unit_request_events()
    );

    let pli0 = p.plis_received();
    assert_key_unit_answered(&p, &rx, false);
    assert!(p.plis_received() > pli0, "all-headers=false goes as PLI");

    let fir0 = p.firs_received();
    assert_key_unit_answered(&p, &rx, true);
    assert!(
        p.firs_received() > fir0,
        "all-headers=true goes as FIR when ccm fir is negotiated"
    );
}

/// Same with VP8 (rtpvp8pay and vp8enc take the path too).
#[test]
fn key_frame_requests_reach_the_vp8_encoder() {
    let _g = serial();
    let opts = PublisherOptions {
        video: Some("VP8"),
        key_int_max: 10000,
        ..PublisherOptions::default()
    };
    let rx_opts = RxOptions {
        video: Some("VP8"),
        ..RxOptions::default()
    };
    let (p, rx) = connect(&opts, rx_opts);
    assert!(p.wait_for(WAIT, |p| p.keyframes_sent() >= 1));
    assert_key_unit_answered(&p, &rx, false);
}

/// The answerer's codec preferences need no feedback fields: webrtcbin's answer keeps the
/// offer's `rtcp-fb` lines for fields the preferences leave out, and those negotiated lines are
/// what its rtpsession looks at.
#[test]
fn key_frame_request_with_feedback_only_in_the_offer() {
    let _g = serial();
    let opts = PublisherOptions {
        key_int_max: 10000,
        ..PublisherOptions::default()
    };
    let rx_opts = RxOptions {
        feedback: false,
        ..RxOptions::default()
    };
    let (p, rx) = connect(&opts, rx_opts);
    assert!(p.wait_for(WAIT, |p| p.keyframes_sent() >= 1));
    assert_key_unit_answered(&p, &rx, false);
}

/// Offer lines `a=rtcp-fb:` removed, as from a publisher that supports no feedback.
fn without_rtcp_fb(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| !l.starts_with("a=rtcp-fb:"))
        .collect()
}

/// Without `nack pli` / `ccm fir` negotiated, the receiving rtpsession has no way to ask and the
/// request must not reach the encoder: the negotiated feedback is part of the recipe.
#[test]
fn key_frame_request_needs_negotiated_feedback() {
    let _g = serial();
    let opts = PublisherOptions {
        key_int_max: 10000,
        ..PublisherOptions::default()
    };
    let rx_opts = RxOptions {
        feedback: false,
        ..RxOptions::default()
    };
    let (p, rx) = connect_edited(&opts, rx_opts, without_rtcp_fb);
    assert!(p.wait_for(WAIT, |p| p.keyframes_sent() >= 1));
    let handled = rx.request_key_unit(true);
    let handled2 = rx.request_key_unit(false);
    // An absence has no event to wait for: an RTCP round trip on loopback takes milliseconds.
    let arrived = p.wait_for(Duration::from_secs(2), |p| p.key_unit_requests() > 0);
    eprintln!(
        "without negotiated feedback: send_event {handled}/{handled2}, PLI {}, FIR {}, requests {}",
        p.plis_received(),
        p.firs_received(),
        p.key_unit_requests()
    );
    assert!(
        !arrived,
        "a key-unit request arrived without negotiated feedback: {:?}",
        p.key_unit_request_events()
    );
}

/// The offer looks like a browser's: sendonly, BUNDLE, the documented payload types, SSRCs, the
/// feedback and TWCC extension a server may rely on, H.264 packetization-mode=1.
#[test]
fn offer_shape() {
    let _g = serial();
    let (_p, offer) = Publisher::new(&PublisherOptions::default());
    print_sdp("OFFER", &offer);
    let msg = parse(&offer);
    assert!(msg.attribute_val("group").unwrap().starts_with("BUNDLE "));
    assert_eq!(msg.medias_len(), 2, "{offer}");
    let video = msg.media(0).unwrap();
    let audio = msg.media(1).unwrap();
    assert_eq!(video.media(), Some("video"));
    assert_eq!(audio.media(), Some("audio"));
    for m in [video, audio] {
        assert!(
            m.attributes().any(|a| a.key() == "sendonly"),
            "not sendonly:\n{offer}"
        );
        // Like a browser's: the SSRC is announced (webrtcbin takes it from the pad caps).
        assert!(
            m.attributes().any(|a| a.key() == "ssrc"),
            "no a=ssrc:\n{offer}"
        );
    }
    assert_eq!(video.format(0), Some(PT_H264.to_string().as_str()));
    assert_eq!(audio.format(0), Some(PT_OPUS.to_string().as_str()));
    let vals = |m: &gst_sdp::SDPMediaRef, k: &str| -> Vec<String> {
        m.attributes()
            .filter(|a| a.key() == k)
            .filter_map(|a| a.value().map(str::to_string))
            .collect()
    };
    let fb = vals(video, "rtcp-fb");
    for want in ["nack pli", "ccm fir", "nack", "transport-cc"] {
        assert!(
            fb.iter().any(|v| v == &format!("{PT_H264} {want}")),
            "no rtcp-fb {want}: {fb:?}"
        );
    }
    assert!(
        vals(video, "extmap")
            .iter()
            .any(|v| v.contains("transport-wide-cc")),
        "{offer}"
    );
    let fmtp = vals(video, "fmtp").join(";");
    assert!(fmtp.contains("packetization-mode=1"), "{fmtp}");
    assert!(fmtp.contains("profile-level-id=42e01f"), "{fmtp}");
    assert!(candidates_in(&offer) > 0, "{offer}");

    let (_p, offer) = Publisher::new(&PublisherOptions {
        video: None,
        ..PublisherOptions::default()
    });
    let msg = parse(&offer);
    assert_eq!(msg.medias_len(), 1, "{offer}");
    assert_eq!(msg.media(0).unwrap().media(), Some("audio"));

    let (_p, offer) = Publisher::new(&PublisherOptions {
        video: Some("VP8"),
        audio: false,
        ..PublisherOptions::default()
    });
    let msg = parse(&offer);
    assert_eq!(msg.medias_len(), 1, "{offer}");
    assert_eq!(
        msg.media(0).unwrap().format(0),
        Some(PT_VP8.to_string().as_str())
    );
}

/// A stripped offer has no candidates but the publisher still gathered them (for trickle), and
/// it still connects: the answerer learns the publisher's address peer-reflexively from the
/// publisher's connectivity checks, as a server must with OBS.
#[test]
fn strip_candidates_keeps_them_for_trickle() {
    let _g = serial();
    let opts = PublisherOptions {
        strip_candidates: true,
        ..PublisherOptions::default()
    };
    let (p, offer) = Publisher::new(&opts);
    assert_eq!(candidates_in(&offer), 0, "{offer}");
    assert!(!offer.contains("end-of-candidates"), "{offer}");
    let cands = p.local_candidates();
    assert!(!cands.is_empty(), "no local candidates gathered");
    assert!(
        cands.iter().all(|(_, c)| c.starts_with("candidate:")),
        "{cands:?}"
    );
    let (ufrag, pwd) = p.ice_ufrag_pwd();
    assert!(!ufrag.is_empty() && !pwd.is_empty());
    assert!(offer.contains(&format!("a=ice-ufrag:{ufrag}")));

    let (rx, answer) = Receiver::answer(&offer, RxOptions::default());
    p.set_answer(&answer).expect("set_answer");
    assert!(
        p.wait_connected(WAIT),
        "stripped offer did not connect: state {}",
        p.connection_state()
    );
    assert!(rx.wait(WAIT, || rx.video_rtp() > 0 && rx.audio_rtp() > 0));
}

/// Reads one HTTP/1.1 request (headers and Content-Length body) from a blocking stream.
fn read_request(stream: &std::net::TcpStream) -> (String, Vec<(String, String)>, String) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let request_line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse::<usize>().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (request_line, headers, String::from_utf8(body).unwrap())
}

/// `publish()` against a minimal WHIP endpoint (one blocking HTTP exchange on a thread, the
/// in-process receiver answering): request shape, relative Location resolved, ETag and split
/// Link headers returned, answer applied so that media flows. Then a refusal comes back as
/// `Err((status, body))`.
#[test]
fn publish_speaks_whip_http() {
    let _g = serial();
    // A runtime of its own, so the serialising guard is not held across its awaits.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(publish_against_minimal_endpoint());
}

async fn publish_against_minimal_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    type Seen = (String, Vec<(String, String)>);
    let server = std::thread::spawn(move || -> (Seen, Receiver) {
        let (mut s, _) = listener.accept().unwrap();
        let (req, headers, body) = read_request(&s);
        let (rx, answer) = Receiver::answer(&body, RxOptions::default());
        write!(
            s,
            "HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\n\
             Location: /whip/cam/res-1\r\nETag: \"abc\"\r\n\
             Link: <stun:127.0.0.1:3478>; rel=\"ice-server\", \
             <turn:127.0.0.1:3478?transport=udp>; rel=\"ice-server\"; username=\"u,1\"\r\n\
             Link: <turn:127.0.0.1:3478?transport=tcp>; rel=\"ice-server\"\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        // Refuse the next one.
        let (mut s, _) = listener.accept().unwrap();
        let _ = read_request(&s);
        let msg = "{\"code\":409}";
        write!(
            s,
            "HTTP/1.1 409 Conflict\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        )
        .unwrap();
        ((req, headers), rx)
    });
    let http = reqwest::Client::new();
    let published = whip::publish(
        &http,
        &base,
        "cam",
        Some("tok"),
        &PublisherOptions::default(),
    )
    .await
    .unwrap_or_else(|(s, b)| panic!("publish: {s} {b}"));
    let refused = whip::publish(&http, &base, "cam", None, &PublisherOptions::default()).await;
    let ((req, headers), rx) = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();

    assert_eq!(req, "POST /whip/cam HTTP/1.1");
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("content-type"), Some("application/sdp"));
    assert_eq!(header("authorization"), Some("Bearer tok"));
    assert_eq!(published.location, format!("{base}/whip/cam/res-1"));
    assert_eq!(published.etag.as_deref(), Some("\"abc\""));
    assert_eq!(
        published.links,
        vec![
            "<stun:127.0.0.1:3478>; rel=\"ice-server\"".to_string(),
            "<turn:127.0.0.1:3478?transport=udp>; rel=\"ice-server\"; username=\"u,1\"".into(),
            "<turn:127.0.0.1:3478?transport=tcp>; rel=\"ice-server\"".into(),
        ]
    );
    match refused {
        Err((status, body)) => {
            assert_eq!(status, reqwest::StatusCode::CONFLICT);
            assert_eq!(body, "{\"code\":409}");
        }
        Ok(_) => panic!("409 came back as Ok"),
    }

    let p = published.publisher;
    let ok = tokio::task::spawn_blocking(move || {
        let ok = p.wait_connected(WAIT) && rx.wait(WAIT, || rx.video_rtp() > 0);
        drop(rx);
        drop(p);
        ok
    })
    .await
    .unwrap();
    assert!(ok, "published session did not connect");
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Dropping a Publisher finalizes its webrtcbin and gives its threads back: no handler holds a
/// strong element reference. A leak here would hide server-side leaks in tests that count.
#[test]
fn teardown_releases_webrtcbin_and_threads() {
    let _g = serial();
    // Warm-up cycle: GStreamer creates some process-wide threads on first use.
    drop(connect(&PublisherOptions::default(), RxOptions::default()));
    let base = thread_count();
    for _ in 0..3 {
        let (p, rx) = connect(&PublisherOptions::default(), RxOptions::default());
        let (tx, finalized) = std::sync::mpsc::channel();
        let _notify = p.webrtcbin().add_weak_ref_notify(move || {
            let _ = tx.send(());
        });
        drop(p);
        drop(rx);
        assert!(
            finalized.recv_timeout(Duration::from_secs(5)).is_ok(),
            "publisher webrtcbin still alive 5 s after drop"
        );
    }
    // Thread exits after the joins are not observable as events; settle within a bound.
    let end = Instant::now() + Duration::from_secs(5);
    while thread_count() > base + 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        thread_count() <= base + 2,
        "threads grew from {base} to {} over 3 publish/drop cycles",
        thread_count()
    );
}
