//! Proves the WHEP test client (`tests/common/whep.rs`) works without the streamcore server.
//!
//! An in-process sending webrtcbin (x264 or VP8 320x240@30 + Opus) plays the server's part: it
//! takes the client's offer, answers it with the payload types the client offered, and the client
//! must then decode real frames. If these tests fail, fix the client before blaming the server.
//!
//! `WHEP_PRINT_SDP=1 cargo test --test whep_client_selftest -- --nocapture` prints offer and answer.

#[path = "common/whep.rs"]
mod whep;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

use whep::{OfferOptions, Receiver};

/// The tests run one at a time: the teardown test counts this process's threads, and two
/// peer pairs at once on a 2-core machine would only make the timings noisier.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The answering side: a sending pipeline ending in webrtcbin.
struct Sender {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pipeline.state(gst::ClockTime::from_seconds(5));
    }
}

/// What the sender will send, read from the offer's rtpmap/fmtp through gst-sdp's caps mapping.
struct Formats {
    /// "H264" (preferred when offered with packetization-mode=1) or "VP8".
    video: &'static str,
    video_pt: i32,
    /// The offer's H.264 profile-level-id string.
    plid: String,
    opus_pt: i32,
}

fn offered_formats(offer: &gst_sdp::SDPMessageRef) -> Formats {
    let (mut h264, mut plid, mut vp8, mut opus) = (None, String::new(), None, None);
    for m in offer.medias() {
        for f in m.formats() {
            let Ok(pt) = f.parse::<i32>() else { continue };
            let Some(caps) = m.caps_from_media(pt) else {
                continue;
            };
            let s = caps.structure(0).unwrap();
            let enc = s.get::<&str>("encoding-name").unwrap_or("");
            if enc.eq_ignore_ascii_case("H264")
                && h264.is_none()
                && s.get::<&str>("packetization-mode").ok() == Some("1")
            {
                h264 = Some(pt);
                plid = s
                    .get::<&str>("profile-level-id")
                    .unwrap_or("42e01f")
                    .to_string();
            } else if enc.eq_ignore_ascii_case("VP8") && vp8.is_none() {
                vp8 = Some(pt);
            } else if enc.eq_ignore_ascii_case("OPUS") && opus.is_none() {
                opus = Some(pt);
            }
        }
    }
    let (video, video_pt) = match (h264, vp8) {
        (Some(pt), _) => ("H264", pt),
        (None, Some(pt)) => ("VP8", pt),
        _ => panic!("offer has neither H.264 packetization-mode=1 nor VP8"),
    };
    Formats {
        video,
        video_pt,
        plid,
        opus_pt: opus.expect("offer has Opus"),
    }
}

/// Builds the sender, applies `offer_sdp` as remote description and returns the complete answer
/// (gathering finished, candidates included: a WHEP server does not trickle).
fn answer(offer_sdp: &str) -> (Sender, String) {
    let offer = gst_sdp::SDPMessage::parse_buffer(offer_sdp.as_bytes()).expect("offer parses");
    let f = offered_formats(&offer);

    // The packets must carry the offer's PT (pt= on the payloader), and the caps reaching
    // webrtcbin must carry the offer's profile-level-id string: webrtcbin compares it as a
    // string, and rtph264pay announces the SPS's own spelling (here 42c015) instead.
    let video = match f.video {
        "H264" => format!(
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
             ! video/x-h264,profile=constrained-baseline \
             ! h264parse ! rtph264pay config-interval=-1 pt={} aggregate-mode=zero-latency \
             ! capssetter caps=\"application/x-rtp,profile-level-id=(string){}\"",
            f.video_pt, f.plid
        ),
        _ => format!(
            "vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt={}",
            f.video_pt
        ),
    };
    let desc = format!(
        "webrtcbin name=w bundle-policy=max-bundle \
         videotestsrc is-live=true pattern=ball \
           ! video/x-raw,width=320,height=240,framerate=30/1 ! {video} ! w. \
         audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample \
           ! opusenc ! rtpopuspay pt={} ! w.",
        f.opus_pt
    );
    let pipeline = gst::parse::launch(&desc)
        .expect("sender pipeline")
        .downcast::<gst::Pipeline>()
        .unwrap();
    let webrtc = pipeline.by_name("w").unwrap();
    // Guards the property path ice-agent → agent → upnp (see whep::disable_upnp).
    assert!(
        whep::disable_upnp(&webrtc),
        "could not disable libnice UPnP"
    );
    pipeline.set_state(gst::State::Playing).unwrap();

    // webrtcbin takes a transceiver's kind and codec from its sink pad caps; they must be there
    // before the offer is matched against the transceivers.
    let end = Instant::now() + Duration::from_secs(5);
    while !webrtc
        .sink_pads()
        .iter()
        .all(|p| p.current_caps().is_some())
    {
        assert!(Instant::now() < end, "sender caps never negotiated");
        std::thread::sleep(Duration::from_millis(10));
    }

    whep::answer_offer(&webrtc, offer);

    whep::wait_gathered(&webrtc, Duration::from_secs(10));
    // webrtcbin 1.22 puts the gathered candidates into its local description itself.
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .unwrap();
    let text = local.sdp().as_text().unwrap();
    (Sender { pipeline, webrtc }, text)
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

/// Offer → in-process answer → decode; returns the receiver (still connected) and the sender.
fn run(opts: OfferOptions, expect_video: &str) -> (Receiver, Sender) {
    let t0 = Instant::now();
    let (rx, offer) = Receiver::new(&opts);
    let t_offer = t0.elapsed();
    if std::env::var_os("WHEP_PRINT_SDP").is_some() {
        eprintln!("OFFER:\n{offer}");
    }
    if opts.strip_candidates {
        assert_eq!(
            candidates_in(&offer),
            0,
            "stripped offer has candidates:\n{offer}"
        );
        let cands = rx.local_candidates();
        assert!(!cands.is_empty(), "no local candidates gathered");
        // The form a trickle PATCH (RFC 8840 sdpfrag) needs after "a=".
        assert!(
            cands.iter().all(|(_, c)| c.starts_with("candidate:")),
            "{cands:?}"
        );
    } else {
        assert!(
            candidates_in(&offer) > 0,
            "offer has no candidates:\n{offer}"
        );
    }
    let (ufrag, pwd) = rx.ice_ufrag_pwd();
    assert!(!ufrag.is_empty() && !pwd.is_empty());

    let (tx, answer_sdp) = answer(&offer);
    if std::env::var_os("WHEP_PRINT_SDP").is_some() {
        eprintln!("ANSWER:\n{answer_sdp}");
    }
    assert!(
        candidates_in(&answer_sdp) > 0,
        "answer has no candidates:\n{answer_sdp}"
    );
    let t_answer = t0.elapsed();
    rx.set_answer(&answer_sdp).expect("set_answer");

    let ok = rx.wait_frames(30, Duration::from_secs(10));
    let t_frames = t0.elapsed();
    assert!(
        ok,
        "decoded only {} frames; state {}; errors {:?}\noffer:\n{offer}\nanswer:\n{answer_sdp}",
        rx.frames_decoded(),
        rx.connection_state(),
        rx.errors()
    );
    // Audio starts independently of video; give it a moment if it trails.
    let end = Instant::now() + Duration::from_secs(2);
    while rx.audio_samples() == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rx.resolution(), Some((320, 240)));
    assert!(
        rx.audio_samples() > 0,
        "no audio decoded; errors {:?}",
        rx.errors()
    );
    let codecs = rx.codecs();
    assert!(
        codecs.iter().any(|c| c == expect_video),
        "codecs {codecs:?}"
    );
    assert!(codecs.iter().any(|c| c == "OPUS"), "codecs {codecs:?}");
    assert_eq!(rx.connection_state(), "connected");
    eprintln!(
        "{expect_video} strip_candidates={}: offer ready {:?}, answer applied {:?}, first frame \
         {:?} after set_answer, 30 frames at {:?}, audio samples {}",
        opts.strip_candidates,
        t_offer,
        t_answer,
        rx.first_frame_after(),
        t_frames,
        rx.audio_samples(),
    );
    (rx, tx)
}

#[test]
fn receives_and_decodes_h264_and_opus() {
    let _g = serial();
    run(OfferOptions::default(), "H264");
}

#[test]
fn connects_without_candidates_in_offer() {
    let _g = serial();
    // The sender learns the client's address peer-reflexively from its connectivity checks.
    run(
        OfferOptions {
            strip_candidates: true,
            ..OfferOptions::default()
        },
        "H264",
    );
}

#[test]
fn receives_and_decodes_vp8() {
    let _g = serial();
    run(
        OfferOptions {
            video_codecs: vec!["VP8"],
            ..OfferOptions::default()
        },
        "VP8",
    );
}

/// The offer says what the options say, checked structurally.
#[test]
fn offer_shapes() {
    let _g = serial();
    let kinds = |opts: OfferOptions| -> Vec<(String, Vec<String>, Option<String>)> {
        let (_rx, offer) = Receiver::new(&opts);
        let msg = parse(&offer);
        msg.medias()
            .map(|m| {
                let encs = m
                    .formats()
                    .filter_map(|f| m.caps_from_media(f.parse().ok()?))
                    .filter_map(|c| {
                        Some(
                            c.structure(0)?
                                .get::<&str>("encoding-name")
                                .ok()?
                                .to_string(),
                        )
                    })
                    .collect();
                let dir = ["recvonly", "sendonly", "sendrecv", "inactive"]
                    .iter()
                    .find(|d| {
                        m.attribute_val(d).is_some() || m.attributes().any(|a| a.key() == **d)
                    })
                    .map(|d| d.to_string());
                (m.media().unwrap_or("").to_string(), encs, dir)
            })
            .collect()
    };
    let rv = Some("recvonly".to_string());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        kinds(OfferOptions::default()),
        vec![
            ("video".into(), s(&["H264", "VP8"]), rv.clone()),
            ("audio".into(), s(&["OPUS"]), rv.clone())
        ]
    );
    assert_eq!(
        kinds(OfferOptions {
            video: false,
            ..OfferOptions::default()
        }),
        vec![("audio".into(), s(&["OPUS"]), rv.clone())]
    );
    assert_eq!(
        kinds(OfferOptions {
            audio: false,
            video_codecs: vec!["VP8"],
            ..OfferOptions::default()
        }),
        vec![("video".into(), s(&["VP8"]), rv.clone())]
    );
    assert_eq!(
        kinds(OfferOptions {
            two_video_tracks: true,
            ..OfferOptions::default()
        }),
        vec![
            ("video".into(), s(&["H264", "VP8"]), rv.clone()),
            ("video".into(), s(&["H264", "VP8"]), rv.clone()),
            ("audio".into(), s(&["OPUS"]), rv.clone())
        ]
    );
    // Payload types are the documented, non-96/97 ones for H.264, so PT mapping bugs show.
    let (_rx, offer) = Receiver::new(&OfferOptions::default());
    let msg = parse(&offer);
    let video = msg.media(0).unwrap();
    assert_eq!(video.format(0), Some(whep::PT_H264.to_string().as_str()));
    assert!(msg.attribute_val("group").unwrap().starts_with("BUNDLE "));
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Dropping a Receiver finalizes its webrtcbin and gives its threads back: the signal handlers
/// hold no strong element references. A leak here would also hide server-side leak regressions
/// in tests that count threads.
#[test]
fn teardown_releases_webrtcbin_and_threads() {
    let _g = serial();
    // Warm-up cycle: GStreamer creates some process-wide threads on first use.
    drop(run(OfferOptions::default(), "H264"));
    std::thread::sleep(Duration::from_millis(300));
    let base = thread_count();
    for _ in 0..3 {
        let (rx, tx) = run(OfferOptions::default(), "H264");
        let weak = rx.webrtcbin().downgrade();
        let weak_tx = tx.webrtc.downgrade();
        let during = thread_count();
        drop(rx);
        drop(tx);
        let end = Instant::now() + Duration::from_secs(5);
        while weak.upgrade().is_some() || weak_tx.upgrade().is_some() {
            assert!(
                Instant::now() < end,
                "webrtcbin still alive after drop (receiver {}, sender {})",
                weak.upgrade().is_some(),
                weak_tx.upgrade().is_some()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "threads: base {base}, with a connected pair {during}, after drop {}",
            thread_count()
        );
    }
    let end = Instant::now() + Duration::from_secs(5);
    while thread_count() > base + 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        thread_count() <= base + 2,
        "threads grew from {base} to {} over 3 connect/drop cycles",
        thread_count()
    );
}
