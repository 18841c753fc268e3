//! A WHEP/WHIP POST body, through what the handlers do with it: the pre-checks
//! (`offer_text`: UTF-8 and the SDP limits), gstreamer-sdp's parse (`parse_offer`), and what the
//! server then reads out of the offer (codec matching against FFmpeg's tracks, the restricted
//! offer handed to webrtcbin, the WHIP codec choice). Any panic is a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcore::fuzzing::{accept_offer, offer_text, parse_offer, parse_source, select_format};

/// What FFmpeg describes for a typical H.264 + Opus stream.
const SOURCE: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\n\
m=video 40000 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1; profile-level-id=42C01E\r\n\
m=audio 40001 RTP/AVP 97\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:97 opus/48000/2\r\n";

fuzz_target!(|data: &[u8]| {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| gstreamer::init().expect("GStreamer initialises"));
    let Ok(text) = offer_text(data) else { return };
    let Ok(offer) = parse_offer(text) else { return };
    let _ = offer.codec_names();
    let sources = parse_source(SOURCE).expect("the source SDP parses");
    let mut keep = Vec::new();
    for source in &sources {
        if let Some(track) = offer.track(source.kind) {
            if let Some(caps) = select_format(source, track) {
                let pt = caps
                    .structure(0)
                    .and_then(|s| s.get::<i32>("payload").ok())
                    .unwrap_or(0);
                keep.push((track.mline, pt as u8));
            }
        }
    }
    let restricted = offer.restricted(&keep);
    let _ = restricted.as_text();
    let _ = accept_offer(&offer);
});
