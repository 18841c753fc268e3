#[path = "common/whep.rs"]
mod whep;
use std::time::{Duration, Instant};
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use whep::{OfferOptions, Receiver};
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

    let offer_desc =
        gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
    whep::call_with_promise(&webrtc, "set-remote-description", offer_desc.to_value())
        .expect("sender set-remote-description");
    let reply =
        whep::call_with_promise(&webrtc, "create-answer", None::<gst::Structure>.to_value())
            .expect("create-answer")
            .expect("create-answer reply");
    let ans = reply
        .get::<gst_webrtc::WebRTCSessionDescription>("answer")
        .expect("answer in reply");
    whep::call_with_promise(&webrtc, "set-local-description", ans.to_value())
        .expect("sender set-local-description");

    let end = Instant::now() + Duration::from_secs(10);
    while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
        != gst_webrtc::WebRTCICEGatheringState::Complete
    {
        assert!(Instant::now() < end, "sender ICE gathering never completed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // webrtcbin 1.22 puts the gathered candidates into its local description itself.
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .unwrap();
    let text = local.sdp().as_text().unwrap();
    (Sender { pipeline, webrtc }, text)
}


fn set_creds(sdp: &gst_sdp::SDPMessageRef, ufrag: &str, pwd: &str, strip: bool) -> gst_sdp::SDPMessage {
    let mut out = sdp.to_owned();
    for m in out.medias_mut() {
        for i in (0..m.attributes_len()).rev() {
            let key = m.attribute(i).unwrap().key().to_string();
            match key.as_str() {
                "ice-ufrag" => { m.replace_attribute(i, gst_sdp::SDPAttribute::new("ice-ufrag", Some(ufrag))).unwrap(); }
                "ice-pwd" => { m.replace_attribute(i, gst_sdp::SDPAttribute::new("ice-pwd", Some(pwd))).unwrap(); }
                "candidate" | "end-of-candidates" if strip => { m.remove_attribute(i).unwrap(); }
                _ => {}
            }
        }
    }
    out
}

fn ufrag_of(sdp: &gst_sdp::SDPMessageRef) -> String {
    sdp.medias().find_map(|m| m.attribute_val("ice-ufrag")).unwrap_or("").to_string()
}

fn desc(w: &gst::Element, p: &str) -> gst_sdp::SDPMessage {
    w.property::<Option<gst_webrtc::WebRTCSessionDescription>>(p).unwrap().sdp().to_owned()
}

#[test]
fn restart() {
    let (rx, offer) = Receiver::new(&OfferOptions { strip_candidates: std::env::var("STRIP").is_ok(), ..OfferOptions::default() });
    let (tx, answer) = answer(&offer);
    rx.set_answer(&answer).unwrap();
    assert!(rx.wait_frames(30, Duration::from_secs(10)));
    eprintln!("=== connected, frames {}", rx.frames_decoded());
    let cw = rx.webrtcbin().clone();
    let sw = tx.webrtc.clone();

    // client re-offer
    let reply = whep::call_with_promise(&cw, "create-offer", None::<gst::Structure>.to_value()).unwrap().unwrap();
    let offer2 = reply.get::<gst_webrtc::WebRTCSessionDescription>("offer").unwrap();
    eprintln!("=== client offer2 ufrag {} (old {})", ufrag_of(offer2.sdp()), rx.ice_ufrag_pwd().0);
    let offer2m = set_creds(offer2.sdp(), "cnew", "cnewpassword0123456789ab", false);
    let o = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer2m.clone());
    whep::call_with_promise(&cw, "set-local-description", o.to_value()).unwrap();
    eprintln!("=== client local now {}", ufrag_of(&desc(&cw, "local-description")));

    // server
    let old_local = ufrag_of(&desc(&sw, "local-description"));
    let remote = set_creds(&desc(&sw, "remote-description"), "cnew", "cnewpassword0123456789ab", false);
    let r = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, remote);
    whep::call_with_promise(&sw, "set-remote-description", r.to_value()).unwrap();
    let reply = whep::call_with_promise(&sw, "create-answer", None::<gst::Structure>.to_value()).unwrap().unwrap();
    let ans2 = reply.get::<gst_webrtc::WebRTCSessionDescription>("answer").unwrap();
    eprintln!("=== server answer2 ufrag {} (old {old_local})", ufrag_of(ans2.sdp()));
    let munge = std::env::var("MUNGE").is_ok();
    let ans2m = if munge { set_creds(ans2.sdp(), "snew", "snewpassword0123456789ab", false) } else { ans2.sdp().to_owned() };
    let a = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, ans2m);
    whep::call_with_promise(&sw, "set-local-description", a.to_value()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("=== NICE server local creds {:?}; client local creds {:?}", nice_local_creds(&sw), nice_local_creds(&cw));
    let local = desc(&sw, "local-description");
    eprintln!("=== server local after: {}", local.as_text().unwrap());
    eprintln!("=== gathering {:?} signaling {:?}", sw.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state"), sw.property::<gst_webrtc::WebRTCSignalingState>("signaling-state"));
    let a = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, local);
    whep::call_with_promise(&cw, "set-remote-description", a.to_value()).unwrap();
    if std::env::var("STRIP").is_ok() {
        for (m, c) in rx.local_candidates() {
            eprintln!("=== trickle to server {m} {c}");
            sw.emit_by_name::<()>("add-ice-candidate", &[&m, &c]);
        }
    }
    let f0 = rx.frames_decoded();
    let ok = rx.wait_frames(f0 + 90, Duration::from_secs(10));
    eprintln!("=== after restart frames {} ok {ok} state {} errors {:?}", rx.frames_decoded(), rx.connection_state(), rx.errors());
    std::thread::sleep(Duration::from_secs(std::env::var("HOLD").ok().and_then(|v| v.parse().ok()).unwrap_or(1)));
    let reply = whep::call_with_promise(&sw, "get-stats", None::<gst::Pad>.to_value()).unwrap().unwrap();
    for (name, v) in reply.iter() {
        if let Ok(st) = v.get::<gst::Structure>() { eprintln!("=== STAT {name}: {st}"); }
    }
    if std::env::var("KICK").is_ok() {
        let _ = tx.pipeline.set_state(gst::State::Null);
        let f = rx.frames_decoded();
        for _ in 0..20 { std::thread::sleep(Duration::from_millis(500)); eprintln!("=== after kick frames {} state {}", rx.frames_decoded() - f, rx.connection_state()); }
    }
    eprintln!("=== end frames {} state {}", rx.frames_decoded(), rx.connection_state());
}

extern "C" {
    fn dlopen(name: *const std::ffi::c_char, flags: i32) -> *mut std::ffi::c_void;
    fn dlsym(h: *mut std::ffi::c_void, name: *const std::ffi::c_char) -> *mut std::ffi::c_void;
}

pub fn nice_local_creds(w: &gst::Element) -> (String, String) {
    use gst::glib::translate::ToGlibPtr;
    let ice = w.property::<gst::glib::Object>("ice-agent");
    let agent = ice.property::<gst::glib::Object>("agent");
    unsafe {
        let h = dlopen(c"libnice.so.10".as_ptr(), 1);
        assert!(!h.is_null());
        let f = dlsym(h, c"nice_agent_get_local_credentials".as_ptr());
        let f: extern "C" fn(*mut gst::glib::gobject_ffi::GObject, u32, *mut *mut std::ffi::c_char, *mut *mut std::ffi::c_char) -> i32 = std::mem::transmute(f);
        let mut u = std::ptr::null_mut();
        let mut p = std::ptr::null_mut();
        let ok = f(agent.to_glib_none().0, 1, &mut u, &mut p);
        assert!(ok != 0);
        (std::ffi::CStr::from_ptr(u).to_string_lossy().into(), std::ffi::CStr::from_ptr(p).to_string_lossy().into())
    }
}
