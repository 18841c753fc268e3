//! What a WHIP publisher may send and what FFmpeg is told it gets: the answer accepts H.264
//! (packetization-mode 1), then VP8, for video and Opus for audio, and the SDP file FFmpeg reads
//! describes exactly the negotiated codecs on fixed payload types.

use gstreamer as gst;
use gstreamer_sdp::{SDPMedia, SDPMessage};

use crate::media::sdp::{Kind, Offer, OfferTrack};

/// Transport-wide congestion control: browsers adapt their bitrate to its feedback and publish
/// at a low resolution without it.
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Payload type of the video RTP sent to FFmpeg, whatever the publisher used.
pub const FFMPEG_VIDEO_PT: u8 = 96;
/// Payload type of the audio RTP sent to FFmpeg.
pub const FFMPEG_AUDIO_PT: u8 = 97;

/// A codec taken from publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264, packetization-mode 1.
    H264,
    /// VP8.
    Vp8,
    /// Opus, 48 kHz stereo.
    Opus,
}

impl Codec {
    /// The RTP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
            Codec::Opus => "OPUS",
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48000,
            _ => 90000,
        }
    }
}

/// One accepted track of an offer.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Its m-line in the offer.
    pub mline: u32,
    /// Video or audio.
    pub kind: Kind,
    /// The codec chosen.
    pub codec: Codec,
    /// The publisher's payload type for it.
    pub pt: u8,
    /// The `a=fmtp` parameters FFmpeg is told about (H.264's packetization mode).
    pub fmtp: String,
    /// Caps for the recvonly transceiver: the offer's format with the feedback we want.
    pub caps: gst::Caps,
}

/// What FFmpeg reads: codec and fmtp per medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestMedia {
    /// Video codec and fmtp, when video is published.
    pub video: Option<(Codec, String)>,
    /// Audio codec, when audio is published.
    pub audio: Option<Codec>,
}

impl Default for IngestMedia {
    /// H.264 + Opus: what FFmpeg is told before anyone published, the common case.
    fn default() -> Self {
        IngestMedia {
            video: Some((Codec::H264, "packetization-mode=1".into())),
            audio: Some(Codec::Opus),
        }
    }
}

impl IngestMedia {
    /// The media a set of accepted tracks makes.
    pub fn of(accepted: &[Accepted]) -> IngestMedia {
        IngestMedia {
            video: accepted
                .iter()
                .find(|a| a.kind == Kind::Video)
                .map(|a| (a.codec, a.fmtp.clone())),
            audio: accepted
                .iter()
                .find(|a| a.kind == Kind::Audio)
                .map(|a| a.codec),
        }
    }

    /// The SDP file for FFmpeg: RTP on loopback, video on `video_port`, audio on `audio_port`.
    pub fn ffmpeg_sdp(&self, name: &str, video_port: u16, audio_port: u16) -> String {
        // The session part is parsed rather than built: gst_sdp_message_add_time with no repeat
        // times leaves an empty array that gst_sdp_message_as_text then reads past (a crash).
        let session = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
        let mut message =
            SDPMessage::parse_buffer(session.as_bytes()).expect("a constant, valid SDP");
        message.set_session_name(name);
        let tracks = [
            (self.video.clone(), "video", video_port, FFMPEG_VIDEO_PT),
            (
                self.audio.map(|c| (c, String::new())),
                "audio",
                audio_port,
                FFMPEG_AUDIO_PT,
            ),
        ];
        for (track, kind, port, pt) in tracks {
            let Some((codec, fmtp)) = track else { continue };
            let mut media = SDPMedia::new();
            media.set_media(kind);
            media.set_port_info(u32::from(port), 1);
            media.set_proto("RTP/AVP");
            media.add_format(&pt.to_string());
            let rtpmap = match codec {
                Codec::Opus => format!("{pt} opus/48000/2"),
                other => format!("{pt} {}/{}", other.name(), other.clock_rate()),
            };
            media.add_attribute("rtpmap", Some(&rtpmap));
            if !fmtp.is_empty() {
                media.add_attribute("fmtp", Some(&format!("{pt} {fmtp}")));
            }
            message.add_media(media);
        }
        message.as_text().unwrap_or_default()
    }
}

fn field(caps: &gst::Caps, name: &str) -> String {
    caps.structure(0)
        .and_then(|s| s.get::<String>(name).ok())
        .unwrap_or_default()
}

fn clock_rate(caps: &gst::Caps) -> i32 {
    caps.structure(0)
        .and_then(|s| s.get::<i32>("clock-rate").ok())
        .unwrap_or(0)
}

/// Score of an offered format; higher is preferred, `None` is unusable. Any H.264 in
/// packetization-mode 1 beats VP8 (FFmpeg copies H.264 into more containers); among H.264,
/// constrained baseline (what browsers encode in hardware) comes first.
fn score(kind: Kind, caps: &gst::Caps) -> Option<(u32, Codec)> {
    let name = field(caps, "encoding-name").to_ascii_uppercase();
    match (kind, name.as_str()) {
        (Kind::Video, "H264") if clock_rate(caps) == 90000 => {
            if field(caps, "packetization-mode") != "1" {
                return None;
            }
            let profile = field(caps, "profile-level-id").to_ascii_lowercase();
            let constrained = profile.len() == 6
                && profile.starts_with("42")
                && u8::from_str_radix(&profile[2..4], 16).is_ok_and(|c| c & 0x40 != 0);
            Some((if constrained { 3 } else { 2 }, Codec::H264))
        }
        (Kind::Video, "VP8") if clock_rate(caps) == 90000 => Some((1, Codec::Vp8)),
        (Kind::Audio, "OPUS") if clock_rate(caps) == 48000 => Some((1, Codec::Opus)),
        _ => None,
    }
}

/// The extmap id the publisher gave transport-wide CC on this m-line.
fn twcc_id(offer: &Offer, mline: u32) -> Option<u32> {
    let media = offer.message.media(mline)?;
    (0..media.attributes_len())
        .filter_map(|i| media.attribute(i))
        .filter(|a| a.key() == "extmap")
        .filter_map(|a| a.value())
        .find_map(|v| {
            let (id, rest) = v.split_once(' ')?;
            let uri = rest.split_whitespace().next()?;
            let id = id.split('/').next()?.parse::<u32>().ok()?;
            (uri == TWCC_URI && (1..=14).contains(&id)).then_some(id)
        })
}

fn accept(offer: &Offer, track: &OfferTrack) -> Option<Accepted> {
    let mut best: Option<(u32, Codec, u8, &gst::Caps)> = None;
    for (pt, caps) in &track.formats {
        if let Some((s, codec)) = score(track.kind, caps) {
            if best.is_none_or(|(b, ..)| s > b) {
                best = Some((s, codec, *pt, caps));
            }
        }
    }
    let (_, codec, pt, offered) = best?;
    let mut builder = gst::Structure::builder("application/x-rtp")
        .field("media", track.kind.as_str())
        .field("payload", i32::from(pt))
        .field("clock-rate", codec.clock_rate() as i32)
        .field("encoding-name", codec.name())
        .field("rtcp-fb-nack", true)
        .field("rtcp-fb-transport-cc", true);
    let mut fmtp = Vec::new();
    if track.kind == Kind::Video {
        builder = builder
            .field("rtcp-fb-nack-pli", true)
            .field("rtcp-fb-ccm-fir", true);
    }
    let offered = offered.structure(0)?;
    // The answer repeats the publisher's own fmtp spelling.
    for name in [
        "packetization-mode",
        "profile-level-id",
        "level-asymmetry-allowed",
        "encoding-params",
        "minptime",
        "useinbandfec",
        "sprop-stereo",
        "stereo",
    ] {
        if let Ok(value) = offered.get::<String>(name) {
            // FFmpeg reads the profile from the SPS; naming it here would restart FFmpeg for
            // every publisher that spells it differently.
            if codec == Codec::H264 && name == "packetization-mode" {
                fmtp.push(format!("{name}={value}"));
            }
            builder = builder.field(name, value);
        }
    }
    if let Some(id) = twcc_id(offer, track.mline) {
        builder = builder.field(format!("extmap-{id}").as_str(), TWCC_URI);
    }
    fmtp.sort();
    Some(Accepted {
        mline: track.mline,
        kind: track.kind,
        codec,
        pt,
        fmtp: fmtp.join(";"),
        caps: gst::Caps::builder_full().structure(builder.build()).build(),
    })
}

/// The tracks of an offer this server accepts, or why it accepts none of some track (every
/// offered audio and video track must be acceptable: a half-accepted offer would publish
/// something other than what the sender thinks).
pub fn accept_offer(offer: &Offer) -> Result<Vec<Accepted>, String> {
    let mut out = Vec::new();
    for track in &offer.tracks {
        match accept(offer, track) {
            Some(accepted) => out.push(accepted),
            None => {
                return Err(format!(
                    "the server takes H264 (packetization-mode=1) or VP8 video and OPUS audio; \
                     the offer's {} track has {}",
                    track.kind.as_str(),
                    offer.codec_names().join(", ")
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp::parse_offer;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:u\r\na=ice-pwd:pppppppppppppppppppppp\r\n\
a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=sendonly\r\na=rtcp-mux\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 127\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=ice-ufrag:u\r\na=ice-pwd:pppppppppppppppppppppp\r\n\
a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=sendonly\r\na=rtcp-mux\r\n\
a=extmap:5 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:127 H264/90000\r\na=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n";

    #[test]
    fn prefers_h264_mode_1_then_vp8_and_keeps_twcc() {
        let offer = parse_offer(OFFER).unwrap();
        let accepted = accept_offer(&offer).unwrap();
        let video = accepted.iter().find(|a| a.kind == Kind::Video).unwrap();
        assert_eq!((video.codec, video.pt, video.mline), (Codec::H264, 102, 1));
        assert_eq!(video.fmtp, "packetization-mode=1");
        assert_eq!(IngestMedia::of(&accepted), IngestMedia::default());
        let s = video.caps.structure(0).unwrap();
        assert_eq!(s.get::<String>("extmap-5").unwrap(), TWCC_URI);
        assert!(s.get::<bool>("rtcp-fb-nack-pli").unwrap());
        let audio = accepted.iter().find(|a| a.kind == Kind::Audio).unwrap();
        assert_eq!((audio.codec, audio.pt), (Codec::Opus, 111));

        let vp8_only = OFFER.replace("96 102 127", "96");
        let accepted = accept_offer(&parse_offer(&vp8_only).unwrap()).unwrap();
        assert_eq!(accepted[1].codec, Codec::Vp8);
    }

    #[test]
    fn refuses_what_ffmpeg_would_not_get() {
        let vp9 = OFFER
            .replace("96 102 127", "98")
            .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:98 VP9/90000");
        let err = accept_offer(&parse_offer(&vp9).unwrap()).unwrap_err();
        assert!(err.contains("video") && err.contains("VP9"), "{err}");
    }

    #[test]
    fn ffmpeg_sdp_describes_the_negotiated_media() {
        // Run alone, no other test has initialised GStreamer.
        gstreamer::init().unwrap();
        let offer = parse_offer(OFFER).unwrap();
        let media = IngestMedia::of(&accept_offer(&offer).unwrap());
        let sdp = media.ffmpeg_sdp("whip cam", 5000, 5002);
        let parsed = SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        let video = parsed.media(0).unwrap();
        assert_eq!((video.media(), video.port()), (Some("video"), 5000));
        assert_eq!(video.attribute_val("rtpmap"), Some("96 H264/90000"));
        assert_eq!(video.attribute_val("fmtp"), Some("96 packetization-mode=1"));
        let audio = parsed.media(1).unwrap();
        assert_eq!(audio.port(), 5002);
        assert_eq!(audio.attribute_val("rtpmap"), Some("97 opus/48000/2"));
        assert_eq!(parsed.connection().unwrap().address(), Some("127.0.0.1"));
        let audio_only = IngestMedia {
            video: None,
            audio: Some(Codec::Opus),
        };
        assert_eq!(
            SDPMessage::parse_buffer(audio_only.ffmpeg_sdp("a", 1, 3).as_bytes())
                .unwrap()
                .medias_len(),
            1
        );
    }
}
