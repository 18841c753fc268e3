//! SDP in and out of the media path, always through gstreamer-sdp: the description FFmpeg writes
//! for its RTP legs, the viewers' offers, and the answers we send back.

use std::net::IpAddr;

use gstreamer as gst;
use gstreamer_sdp::{SDPMediaRef, SDPMessage};

use crate::webrtc::sdp_limits::{self, LimitError};

/// Kind of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Video.
    Video,
    /// Audio.
    Audio,
}

impl Kind {
    /// The kind named by an SDP media type (`video`, `audio`).
    pub(crate) fn parse(media: &str) -> Option<Kind> {
        match media {
            "video" => Some(Kind::Video),
            "audio" => Some(Kind::Audio),
            _ => None,
        }
    }

    /// The SDP media name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Audio => "audio",
        }
    }
}

/// Why an SDP was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// Not parseable, or without usable media.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// More than one video or audio track.
    #[error("the offer has more than one {0} track")]
    TooManyTracks(&'static str),
    /// Larger than the body limit (413).
    #[error("the SDP is too large: {0}")]
    TooLarge(String),
    /// Over a line, section, format or attribute limit.
    #[error("the SDP is over a limit: {0}")]
    OverLimit(String),
}

impl From<LimitError> for SdpError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::TooLarge(..) => SdpError::TooLarge(e.to_string()),
            LimitError::Exceeded(what) => SdpError::OverLimit(what),
        }
    }
}

/// One RTP leg FFmpeg sends to us, as its SDP file describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTrack {
    /// Video or audio.
    pub kind: Kind,
    /// Local UDP port FFmpeg sends to.
    pub port: u16,
    /// RTP caps (media, payload, clock-rate, encoding-name and fmtp parameters).
    pub caps: gst::Caps,
}

impl SourceTrack {
    /// Upper-case encoding name, e.g. `H264`, `OPUS`.
    pub fn encoding(&self) -> String {
        caps_str(&self.caps, "encoding-name").to_ascii_uppercase()
    }

    /// Whether browsers can play this codec as it is (H.264 in packetization-mode 1, VP8, VP9,
    /// Opus, G.711).
    pub fn browser_playable(&self) -> bool {
        match self.encoding().as_str() {
            "H264" => caps_str(&self.caps, "packetization-mode") == "1",
            "VP8" | "VP9" | "OPUS" | "PCMU" | "PCMA" => true,
            _ => false,
        }
    }
}

fn caps_str(caps: &gst::Caps, field: &str) -> String {
    caps.structure(0)
        .and_then(|s| s.get::<String>(field).ok())
        .unwrap_or_default()
}

fn caps_i32(caps: &gst::Caps, field: &str) -> i32 {
    caps.structure(0)
        .and_then(|s| s.get::<i32>(field).ok())
        .unwrap_or(0)
}

fn parse(text: &str) -> Result<SDPMessage, SdpError> {
    if text.trim().is_empty() {
        return Err(SdpError::Malformed("empty body".into()));
    }
    if !text.trim_start().starts_with("v=") {
        return Err(SdpError::Malformed("an SDP starts with a v= line".into()));
    }
    SDPMessage::parse_buffer(text.as_bytes()).map_err(|e| SdpError::Malformed(e.to_string()))
}

/// Parses the SDP FFmpeg wrote with `-sdp_file`.
pub fn parse_source(text: &str) -> Result<Vec<SourceTrack>, SdpError> {
    let message = parse(text)?;
    let mut tracks = Vec::new();
    for media in message.medias() {
        let Some(kind) = media.media().and_then(Kind::parse) else {
            continue;
        };
        let Some(pt) = media.format(0).and_then(|f| f.parse::<i32>().ok()) else {
            return Err(SdpError::Malformed(
                "a media line without a payload type".into(),
            ));
        };
        let caps = rtp_caps(media, pt)
            .ok_or_else(|| SdpError::Malformed(format!("no rtpmap for payload {pt}")))?;
        let port =
            u16::try_from(media.port()).map_err(|_| SdpError::Malformed("bad port".into()))?;
        tracks.push(SourceTrack { kind, port, caps });
    }
    if tracks.is_empty() {
        return Err(SdpError::Malformed("no audio or video".into()));
    }
    Ok(tracks)
}

/// One media section of a viewer's offer.
#[derive(Debug, Clone)]
pub struct OfferTrack {
    /// Index of its m-line in the offer.
    pub mline: u32,
    /// Video or audio.
    pub kind: Kind,
    /// Payload types with their caps, in the viewer's order of preference.
    pub formats: Vec<(u8, gst::Caps)>,
}

/// A parsed viewer offer.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The whole message, handed to webrtcbin.
    pub message: SDPMessage,
    /// Its video and audio sections.
    pub tracks: Vec<OfferTrack>,
}

impl Offer {
    /// The section of the given kind, if offered.
    pub fn track(&self, kind: Kind) -> Option<&OfferTrack> {
        self.tracks.iter().find(|t| t.kind == kind)
    }

    /// Encoding names the viewer can receive, for error messages.
    pub fn codec_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tracks
            .iter()
            .flat_map(|t| {
                t.formats
                    .iter()
                    .map(|(_, c)| caps_str(c, "encoding-name").to_ascii_uppercase())
            })
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "RTX" | "RED" | "ULPFEC" | "FLEXFEC-03" | "TELEPHONE-EVENT" | "CN" | ""
                )
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Offer {
    /// The offer as webrtcbin should see it: each answered m-line keeps only the payload type we
    /// send, the others only their first one. Browser offers list thirty-odd video formats and
    /// webrtcbin looks each one up attribute by attribute, which made negotiation CPU-bound; an
    /// answer may carry any subset of the offered formats, so nothing is lost.
    pub fn restricted(&self, keep: &[(u32, u8)]) -> SDPMessage {
        let mut message = self.message.clone();
        for (mline, media) in message.medias_mut().enumerate() {
            let wanted = keep
                .iter()
                .find(|(m, _)| *m as usize == mline)
                .map(|(_, pt)| pt.to_string())
                .or_else(|| media.format(0).map(str::to_string));
            let Some(wanted) = wanted else { continue };
            for idx in (0..media.formats_len()).rev() {
                if media.format(idx) != Some(wanted.as_str()) {
                    let _ = media.remove_format(idx);
                }
            }
            for idx in (0..media.attributes_len()).rev() {
                let Some(attr) = media.attribute(idx) else {
                    continue;
                };
                let per_format = matches!(attr.key(), "rtpmap" | "fmtp" | "rtcp-fb");
                let format = attr.value().and_then(|v| v.split(' ').next()).unwrap_or("");
                if per_format && format != wanted && format != "*" {
                    let _ = media.remove_attribute(idx);
                }
            }
        }
        message
    }
}

/// The text of an offer body, when it is UTF-8 and within the [`sdp_limits`]: a single pass,
/// cheap enough to run on the async runtime before the (blocking) parse.
pub fn offer_text(body: &[u8]) -> Result<&str, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8".into()))?;
    sdp_limits::check(text, sdp_limits::OFFER)?;
    Ok(text)
}

/// Parses a viewer's or publisher's offer; more than one video or audio section is refused.
/// The [`sdp_limits`] are checked again here, so no caller can hand gstreamer-sdp an offer that
/// makes it slow or makes gstreamer-rs panic.
pub fn parse_offer(text: &str) -> Result<Offer, SdpError> {
    sdp_limits::check(text, sdp_limits::OFFER)?;
    let message = parse(text)?;
    let mut tracks: Vec<OfferTrack> = Vec::new();
    for (mline, media) in message.medias().enumerate() {
        let Some(kind) = media.media().and_then(Kind::parse) else {
            continue;
        };
        // Port 0 rejects a section, unless it is bundle-only (max-bundle offers do that).
        if media.port() == 0 && media.attribute_val("bundle-only").is_none() {
            continue;
        }
        if tracks.iter().any(|t| t.kind == kind) {
            return Err(SdpError::TooManyTracks(kind.as_str()));
        }
        tracks.push(OfferTrack {
            mline: mline as u32,
            kind,
            formats: formats(media),
        });
    }
    if tracks.is_empty() {
        return Err(SdpError::Malformed(
            "the offer has no audio or video section".into(),
        ));
    }
    if message
        .medias()
        .any(|m| m.attribute_val("ice-ufrag").is_none())
        && message.attribute_val("ice-ufrag").is_none()
    {
        return Err(SdpError::Malformed(
            "the offer has no ICE credentials".into(),
        ));
    }
    Ok(Offer { message, tracks })
}

fn formats(media: &SDPMediaRef) -> Vec<(u8, gst::Caps)> {
    media
        .formats()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(|pt| rtp_caps(media, pt as i32).map(|caps| (pt, caps)))
        .collect()
}

/// The `a=fmtp` parameters of one payload type, as written. Names that are not plain tokens are
/// skipped: they could not be caps field names, and offers are hostile input.
fn fmtp_params(media: &SDPMediaRef, pt: i32) -> Vec<(String, String)> {
    let pt = pt.to_string();
    let mut out = Vec::new();
    for n in 0..media.attributes_len() {
        let Some(value) = media.attribute_val_n("fmtp", n) else {
            break;
        };
        let Some((format, params)) = value.split_once(' ') else {
            continue;
        };
        if format != pt {
            continue;
        }
        for param in params.split(';') {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            let token = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if token && key.len() <= 64 && value.len() <= 512 {
                out.push((key, value.trim().to_string()));
            }
        }
    }
    out
}

/// The RTP caps of one payload type. gstreamer-sdp names them `application/x-unknown`; RTP
/// elements only take `application/x-rtp`, and encoding names compare upper-case.
fn rtp_caps(media: &SDPMediaRef, pt: i32) -> Option<gst::Caps> {
    let mut caps = media.caps_from_media(pt)?;
    {
        let s = caps.make_mut().structure_mut(0)?;
        s.set_name("application/x-rtp");
        if let Ok(name) = s.get::<String>("encoding-name") {
            s.set("encoding-name", name.to_ascii_uppercase());
        }
        if let Some(kind) = media.media() {
            s.set("media", kind);
        }
        // gstreamer-sdp rewrites H.264's profile-level-id into a `profile` name and drops
        // level-asymmetry-allowed; the answer has to repeat the offer's own spelling (browsers
        // compare profile-level-id as a string), so the raw fmtp parameters are put back.
        for (key, value) in fmtp_params(media, pt) {
            s.set(key.as_str(), value);
        }
    }
    Some(caps)
}

/// Picks the viewer's payload type for a source track: same codec and clock rate; for H.264
/// packetization-mode 1 and a profile that can decode the source. Returns the caps to put on the
/// viewer branch, carrying the viewer's payload type and parameters.
pub fn select_format(source: &SourceTrack, offer: &OfferTrack) -> Option<gst::Caps> {
    let encoding = source.encoding();
    let clock = caps_i32(&source.caps, "clock-rate");
    let mut best: Option<(u32, u8, &gst::Caps)> = None;
    for (pt, caps) in &offer.formats {
        if caps_str(caps, "encoding-name").to_ascii_uppercase() != encoding
            || caps_i32(caps, "clock-rate") != clock
        {
            continue;
        }
        let score = if encoding == "H264" {
            match h264_score(&source.caps, caps) {
                Some(score) => score,
                None => continue,
            }
        } else {
            1
        };
        if best.is_none_or(|(s, _, _)| score > s) {
            best = Some((score, *pt, caps));
        }
    }
    let (_, pt, caps) = best?;
    Some(branch_caps(source, pt, caps))
}

/// 0 = unusable. The profile_idc of the stream must be decodable with what the viewer offers;
/// an exact profile-level-id match scores highest, constrained baseline next.
fn h264_score(source: &gst::Caps, offered: &gst::Caps) -> Option<u32> {
    if caps_str(offered, "packetization-mode") != "1" {
        return None;
    }
    let src = caps_str(source, "profile-level-id").to_ascii_lowercase();
    let off = caps_str(offered, "profile-level-id").to_ascii_lowercase();
    if src.len() < 2 || off.len() < 2 {
        // Without a profile on either side, assume baseline, which every browser decodes.
        return Some(1);
    }
    if src == off {
        return Some(5);
    }
    let (sp, op) = (&src[..2], &off[..2]);
    let constrained =
        |id: &str| id.len() >= 4 && u8::from_str_radix(&id[2..4], 16).is_ok_and(|c| c & 0x40 != 0);
    if sp == op {
        // Baseline and constrained baseline share profile_idc 42; the constraint flag tells them
        // apart, and webrtcbin matches the stream's `profile` against the offer's.
        return Some(if constrained(&src) == constrained(&off) {
            4
        } else {
            3
        });
    }
    // A constrained-baseline stream (42 with constraint_set1) decodes on main and high decoders.
    let src_constrained =
        src.len() >= 4 && u8::from_str_radix(&src[2..4], 16).is_ok_and(|c| c & 0x40 != 0);
    if sp == "42" && src_constrained && (op == "4d" || op == "64") {
        return Some(2);
    }
    None
}

fn branch_caps(source: &SourceTrack, pt: u8, offered: &gst::Caps) -> gst::Caps {
    let offered = offered
        .structure(0)
        .expect("caps from media have a structure");
    let mut builder = gst::Structure::builder("application/x-rtp")
        .field("media", source.kind.as_str())
        .field("payload", pt as i32)
        .field("clock-rate", caps_i32(&source.caps, "clock-rate"))
        .field("encoding-name", source.encoding());
    // The answer must repeat the viewer's own fmtp spelling (browsers compare profile-level-id as a string).
    for field in [
        "packetization-mode",
        "profile-level-id",
        "profile",
        "level-asymmetry-allowed",
        "encoding-params",
        "sprop-stereo",
        "minptime",
        "useinbandfec",
    ] {
        if let Ok(v) = offered.get::<String>(field) {
            builder = builder.field(field, v);
        }
    }
    // Feedback the sender acts on: PLI reaches a transcoder as a key-unit request.
    for field in ["rtcp-fb-nack-pli", "rtcp-fb-ccm-fir"] {
        if offered.has_field(field) {
            builder = builder.field(field, true);
        }
    }
    gst::Caps::builder_full().structure(builder.build()).build()
}

/// Rewrites host candidates of an answer to advertise `public` (1:1 NAT): every candidate of the
/// same address family that is not loopback, since behind such a NAT the server's own addresses
/// are not reachable from outside. Loopback candidates stay, so local clients still connect.
pub fn advertise_public_ip(answer: &mut SDPMessage, public: IpAddr) {
    let public_text = public.to_string();
    for media in answer.medias_mut() {
        for idx in 0..media.attributes_len() {
            let Some(attr) = media.attribute(idx) else {
                continue;
            };
            if attr.key() != "candidate" {
                continue;
            }
            let Some(value) = attr.value() else { continue };
            let mut fields: Vec<String> = value.split(' ').map(str::to_string).collect();
            let replace = fields
                .get(4)
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|ip| !ip.is_loopback() && ip.is_ipv4() == public.is_ipv4());
            if replace {
                fields[4] = public_text.clone();
                let attribute =
                    gstreamer_sdp::SDPAttribute::new("candidate", Some(&fields.join(" ")));
                let _ = media.replace_attribute(idx, attribute);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\na=tool:libavformat 59.27.100\r\n\
m=video 40000 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\nb=AS:2000\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkAoD2wEQAAAwABAAADADwPFi5I,aMuDyyA=; profile-level-id=42C01E\r\n\
m=audio 40001 RTP/AVP 97\r\nc=IN IP4 127.0.0.1\r\nb=AS:64\r\na=rtpmap:97 opus/48000/2\r\na=fmtp:97 sprop-stereo=1\r\n";

    fn offer(video_fmts: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102 106 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n\
a=recvonly\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 {video_fmts}\r\na=rtcp-fb:102 nack pli\r\n\
a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:96 VP8/90000\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"
        )
    }

    fn init() {
        gst::init().unwrap();
    }

    #[test]
    fn ffmpeg_sdp_becomes_rtp_caps() {
        init();
        let tracks = parse_source(FFMPEG_SDP).unwrap();
        assert_eq!(tracks.len(), 2);
        assert_eq!((tracks[0].kind, tracks[0].port), (Kind::Video, 40000));
        assert_eq!(tracks[0].encoding(), "H264");
        assert!(tracks[0].browser_playable());
        assert_eq!(
            (tracks[1].kind, tracks[1].encoding().as_str()),
            (Kind::Audio, "OPUS")
        );
    }

    #[test]
    fn offer_selection_uses_viewer_payload_types() {
        init();
        let source = parse_source(FFMPEG_SDP).unwrap();
        let offer = parse_offer(&offer(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ))
        .unwrap();
        let video = select_format(&source[0], offer.track(Kind::Video).unwrap()).unwrap();
        let s = video.structure(0).unwrap();
        assert_eq!(s.get::<i32>("payload").unwrap(), 102);
        assert_eq!(s.get::<String>("profile-level-id").unwrap(), "42e01f");
        assert!(s.has_field("rtcp-fb-nack-pli"));
        let audio = select_format(&source[1], offer.track(Kind::Audio).unwrap()).unwrap();
        assert_eq!(
            audio.structure(0).unwrap().get::<i32>("payload").unwrap(),
            111
        );
        assert_eq!(offer.codec_names(), vec!["H264", "OPUS", "VP8"]);
    }

    #[test]
    fn constrained_baseline_stream_picks_the_constrained_offer() {
        init();
        let source = parse_source(FFMPEG_SDP).unwrap();
        // Chrome lists plain baseline (42001f) before constrained baseline (42e01f).
        let text = offer("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f").replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 102 106 96",
            "m=video 9 UDP/TLS/RTP/SAVPF 102 108 96",
        ) .replace(
            "a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
            "a=rtpmap:108 H264/90000\r\na=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        );
        let offer = parse_offer(&text).unwrap();
        let caps = select_format(&source[0], offer.track(Kind::Video).unwrap()).unwrap();
        let s = caps.structure(0).unwrap();
        assert_eq!(s.get::<i32>("payload").unwrap(), 108);
        assert_eq!(s.get::<String>("profile-level-id").unwrap(), "42e01f");
        assert_eq!(offer.track(Kind::Video).unwrap().mline, 0);
        assert_eq!(offer.track(Kind::Audio).unwrap().mline, 1);
    }

    #[test]
    fn incompatible_offers_select_nothing() {
        init();
        let source = parse_source(FFMPEG_SDP).unwrap();
        // Only packetization-mode 0 H.264 and VP8 left: nothing fits an H.264 mode-1 stream.
        let offer = parse_offer(&offer("packetization-mode=0;profile-level-id=42e01f")).unwrap();
        assert!(select_format(&source[0], offer.track(Kind::Video).unwrap()).is_none());
    }

    /// The attribute that made WHEP POSTs panic: a key of 2-byte characters longer than the
    /// 8191 bytes at which GStreamer's parser cuts a token, so the cut falls mid-character.
    fn cut_key_attribute() -> String {
        format!("a={}:x\r\n", "é".repeat(4200))
    }

    /// The library bug the line limit works around: gstreamer-sdp parses such an SDP, then
    /// panics when the attribute's key is read (`to_str().unwrap()` in `sdp_attribute.rs`).
    /// If this test fails, gstreamer-sdp no longer panics and the workaround may be revisited.
    #[test]
    fn gstreamer_sdp_panics_on_a_key_cut_mid_character() {
        init();
        let text = format!("v=0\r\n{}", cut_key_attribute());
        let message = SDPMessage::parse_buffer(text.as_bytes()).expect("GStreamer parses it");
        let key_len = std::panic::catch_unwind(|| message.attribute(0).map(|a| a.key().len()));
        assert!(
            key_len.is_err(),
            "gstreamer-sdp read the cut key: {key_len:?}"
        );
    }

    #[test]
    fn the_cut_key_offer_is_refused_before_gstreamer_sees_it() {
        init();
        let text = offer("packetization-mode=1").replace(
            "a=rtpmap:96 VP8/90000\r\n",
            &format!("a=rtpmap:96 VP8/90000\r\n{}", cut_key_attribute()),
        );
        assert!(matches!(parse_offer(&text), Err(SdpError::OverLimit(_))));
        assert!(matches!(
            offer_text(text.as_bytes()),
            Err(SdpError::OverLimit(_))
        ));
    }

    #[test]
    fn hostile_offers_are_errors_not_panics() {
        init();
        assert!(matches!(parse_offer(""), Err(SdpError::Malformed(_))));
        assert!(matches!(parse_offer("hello"), Err(SdpError::Malformed(_))));
        assert!(matches!(
            parse_offer("v=0\r\n"),
            Err(SdpError::Malformed(_))
        ));
        let two = offer("packetization-mode=1").replace("m=audio", "m=video");
        assert_eq!(
            parse_offer(&two).err(),
            Some(SdpError::TooManyTracks("video"))
        );
        let garbage: String = (0..5000)
            .map(|i| char::from(b' ' + (i * 7 % 90) as u8))
            .collect();
        let _ = parse_offer(&format!("v=0\r\n{garbage}"));
        let _ = parse_source(&format!("v=0\r\nm=video x\r\n{garbage}"));
    }
}
