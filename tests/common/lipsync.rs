//! A WebRTC viewer that measures lip sync: a receiving `webrtcbin` (whose rtpbin lines audio and
//! video up by the RTCP sender reports of one CNAME, as browsers do) decodes both media and notes
//! the running time at which each white flash appears in the video and each tone starts in the
//! audio. Against a source that flashes and beeps on the same instant (`sources::fixture
//! ("lipsync.mkv")`), the distance between a flash and its beep is the A/V offset a player would
//! show.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_webrtc as gst_webrtc;

use super::whep::{self, OfferOptions, PeerSignals};

/// Mean luma above which a frame counts as the white flash (black is 16, white 235).
const WHITE_LUMA: u64 = 128;
/// Sample magnitude above which the tone is on (the tone's peak is half of full scale).
const TONE_THRESHOLD: i32 = i16::MAX as i32 / 10;
/// Quiet this long ends a tone (a 1 kHz sine crosses zero every 0.5 ms, so a few quiet samples
/// mean nothing).
const TONE_GAP: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Marks {
    peer: Arc<PeerSignals>,
    /// Running times (ns) of the first white frame of each flash.
    flashes: Mutex<Vec<i64>>,
    /// Running times (ns) of the first loud sample of each tone.
    beeps: Mutex<Vec<i64>>,
    white: AtomicBool,
    tone: AtomicBool,
    quiet_samples: AtomicU64,
    frames: AtomicU64,
    audio_samples: AtomicU64,
}

/// The measuring viewer. Dropping it stops its pipeline.
pub struct LipSyncReceiver {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    marks: Arc<Marks>,
}

impl LipSyncReceiver {
    /// Builds the viewer (H.264 + Opus, recvonly) and returns it with its offer.
    pub fn new() -> (LipSyncReceiver, String) {
        whep::init();
        let marks = Arc::new(Marks::default());
        let pipeline = gst::Pipeline::new();
        let webrtc = whep::peer_webrtcbin(&pipeline, &marks.peer, || {});
        webrtc.set_property("latency", 200u32);
        let (m, weak) = (marks.clone(), pipeline.downgrade());
        webrtc.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            if let Some(p) = weak.upgrade() {
                if let Err(e) = link(&p, pad, &m) {
                    m.peer.errors.lock().unwrap().push(e);
                }
            }
        });
        let recvonly = gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly;
        let opts = OfferOptions::default();
        for caps in [whep::video_caps(&opts.video_codecs), whep::audio_caps()] {
            webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&recvonly, &caps],
            );
        }
        pipeline.set_state(gst::State::Playing).unwrap();
        let (offer, _, _) = whep::gathered_offer(&webrtc, &marks.peer, false);
        (
            LipSyncReceiver {
                pipeline,
                webrtc,
                marks,
            },
            offer,
        )
    }

    /// Applies the server's answer.
    pub fn set_answer(&self, sdp: &str) -> Result<(), String> {
        whep::apply_answer(&self.webrtc, sdp)
    }

    /// Running times of the flashes seen so far.
    pub fn flashes(&self) -> Vec<i64> {
        self.marks.flashes.lock().unwrap().clone()
    }

    /// Running times of the tone onsets heard so far.
    pub fn beeps(&self) -> Vec<i64> {
        self.marks.beeps.lock().unwrap().clone()
    }

    /// Decoded video frames and audio samples so far.
    pub fn decoded(&self) -> (u64, u64) {
        (
            self.marks.frames.load(Ordering::SeqCst),
            self.marks.audio_samples.load(Ordering::SeqCst),
        )
    }

    /// Bus errors and wiring problems.
    pub fn errors(&self) -> Vec<String> {
        self.marks.peer.errors.lock().unwrap().clone()
    }

    /// Waits until `n` flashes later than `from` (running time, ns) have a measured offset;
    /// returns the offsets in ms (audio minus video: positive means the beep comes late).
    pub fn wait_offsets(&self, from: i64, n: usize, timeout: Duration) -> Vec<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let offsets = offsets_ms(&self.flashes(), &self.beeps(), from);
            if offsets.len() >= n || Instant::now() >= deadline {
                return offsets;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LipSyncReceiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let _ = self.pipeline.state(gst::ClockTime::from_seconds(5));
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }
}

/// For each flash at or after `from` that has a beep on either side of it (so the nearest one is
/// known), the offset to the nearest beep in ms. Flashes are a second apart, so the nearest beep
/// is the flash's own as long as the offset is under half a second.
pub fn offsets_ms(flashes: &[i64], beeps: &[i64], from: i64) -> Vec<f64> {
    flashes
        .iter()
        .filter(|&&f| f >= from)
        // The flash's own beep is known once a later one was heard.
        .filter(|&&f| beeps.iter().any(|&b| b > f + 500_000_000))
        .filter_map(|&f| {
            beeps
                .iter()
                .min_by_key(|&&b| (b - f).abs())
                .map(|&b| (b - f) as f64 / 1e6)
        })
        .collect()
}

/// Median and largest magnitude of `offsets`, for reports.
pub fn summary(offsets: &[f64]) -> (f64, f64) {
    let mut sorted = offsets.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    let worst = offsets.iter().fold(0.0f64, |m, o| m.max(o.abs()));
    (median, worst)
}

fn running_time(pad: &gst::Pad, pts: gst::ClockTime) -> Option<i64> {
    let ev = pad.sticky_event::<gst::event::Segment>(0)?;
    let seg = ev.segment().downcast_ref::<gst::ClockTime>()?.clone();
    seg.to_running_time(pts).map(|t| t.nseconds() as i64)
}

fn link(pipeline: &gst::Pipeline, pad: &gst::Pad, marks: &Arc<Marks>) -> Result<(), String> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let enc = caps
        .structure(0)
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    let names: &[&str] = match enc.as_str() {
        "H264" => &["rtph264depay", "avdec_h264"],
        "VP8" => &["rtpvp8depay", "vp8dec"],
        "OPUS" => &["rtpopusdepay", "opusdec"],
        other => return Err(format!("unexpected encoding {other:?}")),
    };
    let video = enc != "OPUS";
    let mut chain = Vec::new();
    for n in names {
        let e = gst::ElementFactory::make(n)
            .build()
            .map_err(|e| format!("{n}: {e}"))?;
        if e.find_property("request-keyframe").is_some() {
            e.set_property("request-keyframe", true);
        }
        chain.push(e);
    }
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .map_err(|e| e.to_string())?;
    chain.push(sink.clone());
    let refs: Vec<&gst::Element> = chain.iter().collect();
    pipeline.add_many(&refs).map_err(|e| e.to_string())?;
    gst::Element::link_many(&refs).map_err(|e| e.to_string())?;
    for e in &chain {
        e.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    pad.link(&chain[0].static_pad("sink").unwrap())
        .map_err(|e| format!("{e:?}"))?;
    let m = marks.clone();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(buf) = info.buffer() {
                if video {
                    on_frame(&m, pad, buf);
                } else {
                    on_audio(&m, pad, buf);
                }
            }
            gst::PadProbeReturn::Ok
        });
    Ok(())
}

/// Notes the first white frame of each flash. The flash fills the whole frame, so the start of
/// the Y plane tells black from white whatever the stride.
fn on_frame(m: &Marks, pad: &gst::Pad, buf: &gst::BufferRef) {
    m.frames.fetch_add(1, Ordering::SeqCst);
    let (Some(pts), Ok(map)) = (buf.pts(), buf.map_readable()) else {
        return;
    };
    let luma = &map[..map.len().min(4096)];
    let mean = luma.iter().map(|&v| v as u64).sum::<u64>() / luma.len().max(1) as u64;
    let white = mean > WHITE_LUMA;
    if white && !m.white.swap(true, Ordering::SeqCst) {
        if let Some(t) = running_time(pad, pts) {
            m.flashes.lock().unwrap().push(t);
        }
    } else if !white {
        m.white.store(false, Ordering::SeqCst);
    }
}

/// Notes the first loud sample of each tone (opusdec gives interleaved S16LE).
fn on_audio(m: &Marks, pad: &gst::Pad, buf: &gst::BufferRef) {
    let caps = pad.current_caps();
    let Some(s) = caps.as_ref().and_then(|c| c.structure(0)) else {
        return;
    };
    let channels = s.get::<i32>("channels").unwrap_or(1).max(1) as usize;
    let rate = s.get::<i32>("rate").unwrap_or(48000).max(1) as u64;
    if s.get::<&str>("format").ok() != Some("S16LE") {
        m.peer
            .errors
            .lock()
            .unwrap()
            .push(format!("audio format {s} is not S16LE"));
        return;
    }
    let (Some(pts), Ok(map)) = (buf.pts(), buf.map_readable()) else {
        return;
    };
    let gap = TONE_GAP.as_nanos() as u64 * rate / 1_000_000_000;
    let frames = map.len() / (2 * channels);
    m.audio_samples.fetch_add(frames as u64, Ordering::SeqCst);
    for i in 0..frames {
        let at = i * 2 * channels;
        let v = i16::from_le_bytes([map[at], map[at + 1]]) as i32;
        if v.abs() > TONE_THRESHOLD {
            m.quiet_samples.store(0, Ordering::SeqCst);
            if !m.tone.swap(true, Ordering::SeqCst) {
                let offset = gst::ClockTime::from_nseconds(i as u64 * 1_000_000_000 / rate);
                if let Some(t) = running_time(pad, pts + offset) {
                    m.beeps.lock().unwrap().push(t);
                }
            }
        } else if m.quiet_samples.fetch_add(1, Ordering::SeqCst) + 1 >= gap {
            m.tone.store(false, Ordering::SeqCst);
        }
    }
}

/// The sending side of the meter's self-test, without streamcore: `file` (a lip-sync clip, H.264
/// and Opus in Matroska) played in real time into a sending webrtcbin, whose RTCP sender reports
/// map both RTP clocks from one pipeline clock. Answers `offer` (from [`LipSyncReceiver::new`])
/// and returns the pipeline with the complete answer. Blocks for the gathering.
pub fn file_sender(file: &std::path::Path, offer: &str) -> (gst::Pipeline, String) {
    whep::init();
    let desc = format!(
        "webrtcbin name=w bundle-policy=max-bundle \
         filesrc location={} ! matroskademux name=d \
         d.video_0 ! queue ! h264parse ! clocksync \
           ! rtph264pay config-interval=-1 pt={} aggregate-mode=zero-latency \
           ! capssetter caps=\"application/x-rtp,profile-level-id=(string)42e01f\" ! w. \
         d.audio_0 ! queue ! opusparse ! clocksync ! rtpopuspay pt={} ! w.",
        file.display(),
        whep::PT_H264,
        whep::PT_OPUS
    );
    let pipeline = gst::parse::launch(&desc)
        .expect("sender pipeline")
        .downcast::<gst::Pipeline>()
        .unwrap();
    let webrtc = pipeline.by_name("w").unwrap();
    whep::disable_upnp(&webrtc);
    // Sender reports map RTP time to NTP time by the packets' capture time (their PTS), not by
    // when a loaded machine got round to sending them.
    let rtpbin = webrtc
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("rtpbin"))
        .expect("webrtcbin's rtpbin");
    rtpbin.set_property("rtcp-sync-send-time", false);
    // As the server does for its viewers (src/media/peer.rs): the first sender report within
    // about half a second, not the default 2.5 s. Until it arrives the receiver lines the media
    // up by arrival, and a loaded machine then read the in-sync clip ~20 ms off for four of the
    // five pairs.
    if let Some(rtpbin) = rtpbin.downcast_ref::<gst::Bin>() {
        rtpbin.connect_element_added(|_, element| {
            if element.has_property("rtcp-min-interval") {
                element.set_property("rtcp-min-interval", 1_000_000_000u64);
            }
        });
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    // webrtcbin matches the offer against transceivers made from its sink pads' caps.
    let end = Instant::now() + Duration::from_secs(10);
    while webrtc.sink_pads().len() < 2
        || !webrtc
            .sink_pads()
            .iter()
            .all(|p| p.current_caps().is_some())
    {
        assert!(Instant::now() < end, "sender caps never negotiated");
        std::thread::sleep(Duration::from_millis(10));
    }
    let offer = gstreamer_sdp::SDPMessage::parse_buffer(offer.as_bytes()).expect("offer parses");
    whep::answer_offer(&webrtc, offer);
    whep::wait_gathered(&webrtc, Duration::from_secs(10));
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .unwrap();
    let answer = local.sdp().as_text().unwrap();
    (pipeline, answer)
}
