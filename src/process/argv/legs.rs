//! The WebRTC legs appended to a process's command line: how FFmpeg hands a stream to the server.
//!
//! Default: one RTP leg carrying MPEG-TS (`rtp_mpegts`) to the stream's video port. TS carries
//! the codecs users feed (H.264, HEVC, MPEG-2, AAC, MP2/MP3, AC-3, Opus) with their parameters in
//! band and both media on one clock, so the server discovers the codecs from the stream. The leg
//! is a slave of FFmpeg's `tee` muxer with `onfail=ignore` and optional maps, so a leg FFmpeg
//! cannot produce, or a medium the source lacks, never fails the process or its other outputs.
//!
//! What each medium needs is decided from the codecs FFmpeg reported for the inputs
//! ([`InputCodecs`], remembered per definition by `process::discovery`) where they are known,
//! else by rules on `-f` and the address's extension: VP8/VP9 video (or a WebM/Ogg input) gets
//! one RTP leg per medium with an SDP file, since TS cannot carry it, with audio encoded to Opus;
//! raw frames and samples, and codecs no chain of the server takes (Vorbis, PCM, FLAC, E-AC-3,
//! AV1, …), are encoded once in FFmpeg with the encoder the transcode branch uses; the rest is
//! copied into TS. A medium the reported codecs show absent gets no leg.
//! docs/sources.md has the measurements behind this.

use std::path::Path;

use crate::model::process::{ProcessConfig, ProcessIo, WebRtcSettings};
use crate::model::transcode::TranscodeSettings;

use super::codecs::{handling, waits_for_publisher, Handling, InputCodecs, Selected};

/// How FFmpeg sends a process's media to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegFormat {
    /// One `rtp_mpegts` leg to the video port, demuxed by the server.
    MpegTs,
    /// One RTP leg per medium, described by the SDP file.
    PerMedium,
}

/// What the input feeding the legs holds, as far as the definition tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Coded media TS can carry (copied).
    Coded,
    /// WebM or Ogg: VP8/VP9/Vorbis/Theora possible.
    WebM,
    /// Raw video/audio: encoded for the stream.
    Raw,
}

/// Input formats that deliver raw frames or samples (lavfi, capture devices, raw demuxers).
const RAW_FORMATS: &[&str] = &[
    "lavfi",
    "rawvideo",
    "v4l2",
    "video4linux2",
    "x11grab",
    "kmsgrab",
    "fbdev",
    "gdigrab",
    "dshow",
    "avfoundation",
    "decklink",
    "alsa",
    "pulse",
    "jack",
    "oss",
    "sndio",
    "openal",
    "yuv4mpegpipe",
    "wav",
    "aiff",
    "flac",
    "s16le",
    "s16be",
    "s24le",
    "s32le",
    "f32le",
    "u8",
];
const RAW_EXTENSIONS: &[&str] = &["y4m", "yuv", "wav", "aif", "aiff", "flac"];
// Matroska in general usually holds H.264/HEVC/AAC/Opus, which TS carries; WebM and Ogg hold
// VP8/VP9/Vorbis/Theora, which it does not.
const WEBM_FORMATS: &[&str] = &["webm", "ogg"];
const WEBM_EXTENSIONS: &[&str] = &["webm", "weba", "ogg", "ogv", "oga"];

/// The FFmpeg encoders for raw sources: the counterpart of the transcode branch's choice.
#[derive(Debug, Clone, PartialEq)]
pub struct LegEncoding {
    /// The transcode branch's GStreamer video encoder (`x264enc`, `nvh264enc`, …), if any.
    pub video_encoder: Option<String>,
    /// Bitrates, key-frame distance.
    pub settings: TranscodeSettings,
}

/// Which input the legs read: the one the video map names (else the audio map's, else 0).
fn leg_input(settings: &WebRtcSettings) -> usize {
    [&settings.video_map, &settings.audio_map]
        .into_iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty() && *m != "none")
        .find_map(input_of)
        .unwrap_or(0)
}

/// Classifies the legs' input (the first, or the one the maps name) by the rules.
#[cfg(test)]
pub(super) fn source_kind(config: &ProcessConfig) -> SourceKind {
    config
        .input
        .get(leg_input(&config.webrtc))
        .map_or(SourceKind::Coded, input_kind)
}

/// Classifies an input by its `-f` option, else its address's extension.
fn input_kind(input: &ProcessIo) -> SourceKind {
    let format = input
        .options
        .windows(2)
        .rev()
        .find(|w| w[0] == "-f")
        .map(|w| w[1].to_ascii_lowercase());
    if let Some(format) = format {
        let names: Vec<&str> = format.split(',').collect();
        if names.iter().any(|n| RAW_FORMATS.contains(n)) {
            return SourceKind::Raw;
        }
        if names.iter().any(|n| WEBM_FORMATS.contains(n)) {
            return SourceKind::WebM;
        }
        return SourceKind::Coded;
    }
    let path = input.address.split(['?', '#']).next().unwrap_or("");
    let extension = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| !e.contains('/'))
        .unwrap_or_default();
    if RAW_EXTENSIONS.contains(&extension.as_str()) {
        SourceKind::Raw
    } else if WEBM_EXTENSIONS.contains(&extension.as_str()) {
        SourceKind::WebM
    } else {
        SourceKind::Coded
    }
}

/// The FFmpeg H.264 encoder for the transcode branch's GStreamer one: NVENC for NVENC; libx264
/// otherwise (VA-API in FFmpeg needs a hardware frames filter graph, not worth it for one
/// encode per stream), OpenH264 where the branch uses it.
fn ffmpeg_video_encoder(encoder: Option<&str>, settings: &TranscodeSettings) -> Vec<String> {
    let gop = settings.gop_frames().to_string();
    let kbps = format!("{}k", settings.video_bitrate_kbps);
    let mut args: Vec<&str> = match encoder.unwrap_or("") {
        e if e.starts_with("nv") => vec!["-c:v", "h264_nvenc", "-preset:v", "p1", "-tune:v", "ll"],
        "openh264enc" => vec!["-c:v", "libopenh264"],
        _ => vec![
            "-c:v",
            "libx264",
            "-preset:v",
            "veryfast",
            "-tune:v",
            "zerolatency",
        ],
    };
    args.extend([
        "-profile:v",
        "baseline",
        "-pix_fmt:v",
        "yuv420p",
        "-bf:v",
        "0",
        "-g:v",
        &gop,
        "-b:v",
        &kbps,
    ]);
    args.into_iter().map(str::to_string).collect()
}

fn opus(settings: &TranscodeSettings) -> Vec<String> {
    let kbps = format!("{}k", settings.audio_bitrate_kbps);
    [
        "-c:a", "libopus", "-b:a", &kbps, "-ar:a", "48000", "-ac:a", "2",
    ]
    .map(str::to_string)
    .into()
}

/// A leg's medium as the user mapped it.
#[derive(Debug, Clone, PartialEq)]
enum Map {
    /// `none`: the medium is left out.
    Off,
    /// Empty: FFmpeg's own choice.
    Auto,
    /// The user's `-map` value.
    User(String),
}

impl Map {
    fn of(user: &str) -> Map {
        match user.trim() {
            "none" => Map::Off,
            "" => Map::Auto,
            m => Map::User(m.to_string()),
        }
    }
}

/// One medium's leg: the maps it reads and what its codec needs; `handling` is `None` when the
/// reported codecs show the medium is not there (no leg, no map).
#[derive(Debug, Clone, PartialEq)]
struct Medium {
    maps: Vec<String>,
    handling: Option<Handling>,
}

/// The maps of a medium. FFmpeg's automatic stream selection does not apply to the `tee`
/// muxer, so the maps are explicit: without user maps, the first stream of the kind of every
/// input (the server serves the first of each kind it finds); with one, the other medium is the
/// first of its kind of the same input. Every map is optional (`?`): a stream that is not there
/// maps nothing instead of failing the process.
fn maps(map: &Map, other: &Map, medium: char, config: &ProcessConfig) -> Vec<(String, usize)> {
    let explicit = matches!(map, Map::User(_)) || matches!(other, Map::User(_));
    match map {
        Map::Off => Vec::new(),
        Map::Auto if explicit => {
            let input = leg_input(&config.webrtc);
            vec![(format!("{input}:{medium}:0?"), input)]
        }
        Map::Auto => (0..config.input.len().max(1))
            .map(|i| (format!("{i}:{medium}:0?"), i))
            .collect(),
        Map::User(m) => {
            let input = input_of(m).unwrap_or(0);
            let m = if m.ends_with('?') {
                m.clone()
            } else {
                format!("{m}?")
            };
            vec![(m, input)]
        }
    }
}

/// What the rules say a medium of an input needs when its codec is not known: raw inputs are
/// encoded, WebM/Ogg video gets its own leg and its audio (maybe Vorbis) is encoded to Opus.
/// WebM/Ogg video from an input that waits for a publisher is encoded into the TS leg instead:
/// its codecs are never discovered (a restart would drop the publisher), and a per-medium leg
/// fails FFmpeg, the process's other outputs with it, when the publisher sends no audio or no
/// video, which a TS leg with optional maps survives.
fn by_rules(config: &ProcessConfig, input: usize, medium: char) -> Handling {
    let io = config.input.get(input);
    match io.map_or(SourceKind::Coded, input_kind) {
        SourceKind::Raw => Handling::Encode,
        SourceKind::WebM if medium == 'v' && !io.is_some_and(waits_for_publisher) => {
            Handling::CopyPerMedium
        }
        SourceKind::WebM => Handling::Encode,
        SourceKind::Coded => Handling::Copy,
    }
}

/// A medium's leg from its maps, the reported codecs where they tell, else the rules. The
/// first stream the maps find decides whether video needs a leg of its own; any stream that
/// must be encoded has the medium encoded (output stream indices shift when an optional map
/// matches nothing, so codecs are set per medium).
fn medium(
    map: &Map,
    other: &Map,
    kind: char,
    config: &ProcessConfig,
    known: Option<&InputCodecs>,
) -> Option<Medium> {
    let chosen = maps(map, other, kind, config);
    if chosen.is_empty() {
        return None;
    }
    let found: Vec<Handling> = chosen
        .iter()
        .filter_map(
            |(m, input)| match known.map_or(Selected::Unknown, |k| k.select(m, kind)) {
                Selected::Absent => None,
                Selected::Codec(codec) => Some(handling(kind, codec)),
                Selected::Unknown => Some(by_rules(config, *input, kind)),
            },
        )
        .collect();
    let handling = match found.first() {
        None => None,
        Some(Handling::CopyPerMedium) => Some(Handling::CopyPerMedium),
        Some(_) if found.iter().any(|h| *h != Handling::Copy) => Some(Handling::Encode),
        Some(_) => Some(Handling::Copy),
    };
    Some(Medium {
        maps: chosen.into_iter().map(|(m, _)| m).collect(),
        handling,
    })
}

/// The leg format for a definition: a leg per medium only when the video is VP8/VP9 (reported,
/// or a WebM/Ogg input by the rules); everything else goes into the one TS leg.
pub fn leg_format(config: &ProcessConfig, known: Option<&InputCodecs>) -> LegFormat {
    leg_format_of(media(config, known).0.as_ref())
}

fn leg_format_of(video: Option<&Medium>) -> LegFormat {
    match video.and_then(|v| v.handling) {
        Some(Handling::CopyPerMedium) => LegFormat::PerMedium,
        _ => LegFormat::MpegTs,
    }
}

fn media(config: &ProcessConfig, known: Option<&InputCodecs>) -> (Option<Medium>, Option<Medium>) {
    let video = Map::of(&config.webrtc.video_map);
    let audio = Map::of(&config.webrtc.audio_map);
    (
        medium(&video, &audio, 'v', config, known),
        medium(&audio, &video, 'a', config, known),
    )
}

/// The maps and codecs of the TS leg: present media copied, or encoded where they must be.
fn mpegts_args(
    video: Option<Medium>,
    audio: Option<Medium>,
    encoding: &LegEncoding,
) -> Vec<String> {
    let mut maps = Vec::new();
    let mut codecs = Vec::new();
    for (medium, kind) in [(video, 'v'), (audio, 'a')] {
        let Some(Medium {
            maps: m,
            handling: Some(handling),
        }) = medium
        else {
            continue;
        };
        maps.extend(m.into_iter().flat_map(|m| ["-map".to_string(), m]));
        codecs.extend(match (handling, kind) {
            (Handling::Copy, _) => vec![format!("-c:{kind}"), "copy".to_string()],
            (_, 'v') => ffmpeg_video_encoder(encoding.video_encoder.as_deref(), &encoding.settings),
            (_, _) => opus(&encoding.settings),
        });
    }
    maps.extend(codecs);
    maps
}

/// The input a `-map` value names.
fn input_of(map: &str) -> Option<usize> {
    map.split(':')
        .next()
        .and_then(|i| i.trim_start_matches('-').parse().ok())
}

/// The legs FFmpeg sends to a stream's `(video, audio)` ports, chosen from the reported codecs
/// of the inputs where `known` has them, else by the rules.
pub fn webrtc_legs(
    config: &ProcessConfig,
    known: Option<&InputCodecs>,
    encoding: &LegEncoding,
    sdp_path: &Path,
    ports: (u16, u16),
) -> Vec<String> {
    let (video, audio) = media(config, known);
    let present = |m: &Option<Medium>| m.as_ref().is_some_and(|m| m.handling.is_some());
    if !present(&video) && !present(&audio) {
        return Vec::new();
    }
    match leg_format_of(video.as_ref()) {
        LegFormat::MpegTs => {
            let packets = ts_packets_per_datagram(video.as_ref(), known);
            let mut args = mpegts_args(video, audio, encoding);
            args.extend([
                "-f".to_string(),
                "tee".to_string(),
                format!(
                    "[f=rtp_mpegts:onfail=ignore]rtp://127.0.0.1:{}?pkt_size={}",
                    ports.0,
                    RTP_HEADER + TS_PACKET * packets
                ),
            ]);
            args
        }
        LegFormat::PerMedium => {
            let settings = &config.webrtc;
            // A medium the reported codecs show absent gets no leg: an `-f rtp` output without
            // a stream fails FFmpeg.
            let leg = |user: &str, m: &Option<Medium>| match present(m) {
                true => Map::of(user),
                false => Map::Off,
            };
            per_medium_legs(
                leg(&settings.video_map, &video),
                leg(&settings.audio_map, &audio),
                encoding,
                sdp_path,
                ports,
            )
        }
    }
}

const RTP_HEADER: usize = 12;
const TS_PACKET: usize = 188;
/// The fewest TS packets per datagram: FFmpeg's RTP muxer sends a datagram only once it is
/// full, so a small stream would otherwise wait for its packets.
const TS_PACKETS_MIN: usize = 7;
/// The most: 7908-byte datagrams, well within loopback's MTU and the stream's udpsrc buffers.
const TS_PACKETS_MAX: usize = 42;

/// How many TS packets one datagram of the TS leg carries: for copied video whose input's
/// bitrate FFmpeg reported (files), what the stream brings in about 16 ms, half a frame at 30
/// fps. tsdemux hands on a video frame only once the next one starts, and FFmpeg writes a frame
/// at once, so a datagram no larger than a frame delays nothing; a stream of 2.4 Mbit/s then
/// comes in 64 datagrams a second instead of 266, and each datagram is a wake-up and a trip
/// through the receiver (docs/performance.md, idle stream). Everything else keeps the small
/// datagrams: live inputs report no bitrate, and an encoder's bitrate is a ceiling that simple
/// pictures stay far below, where large datagrams would hold frames back.
fn ts_packets_per_datagram(video: Option<&Medium>, known: Option<&InputCodecs>) -> usize {
    let kbps = video.and_then(|v| match v.handling? {
        Handling::Copy => known?.bitrate_kbps(input_of(v.maps.first()?)?),
        Handling::Encode | Handling::CopyPerMedium => None,
    });
    // kbit/s × 16 ms = 2 bytes per kbit/s.
    kbps.map_or(TS_PACKETS_MIN, |kbps| {
        ((kbps * 2.0) as usize / TS_PACKET).clamp(TS_PACKETS_MIN, TS_PACKETS_MAX)
    })
}

/// The CNAME both per-medium legs put in their RTCP sender reports: the stream pairs the audio
/// and video RTP clocks by it.
const LEG_CNAME: &str = "streamcore-leg";

/// One RTP leg per medium with the SDP file the stream reads. Each leg sends RTCP sender reports
/// (to its RTP port + 1) mapping its random RTP timestamp base to wall-clock time, with one
/// CNAME: the stream's rtpbin puts audio and video on one timeline by them. Each run is a new
/// RTP source (FFmpeg's random SSRC), which the stream takes over from the previous one.
fn per_medium_legs(
    video: Map,
    audio: Map,
    encoding: &LegEncoding,
    sdp_path: &Path,
    ports: (u16, u16),
) -> Vec<String> {
    let mut args = vec![
        "-sdp_file".to_string(),
        sdp_path.to_string_lossy().into_owned(),
    ];
    // FFmpeg's RTP muxer packetizes VP9 only with -strict experimental (its RTP payload format
    // was a draft when the packetizer was written); without it the leg fails at its header.
    let copy_video = ["-c:v", "copy", "-strict", "experimental"]
        .map(str::to_string)
        .to_vec();
    let legs = [
        (video, "-an", copy_video, ports.0, 96),
        (audio, "-vn", opus(&encoding.settings), ports.1, 97),
    ];
    for (map, drop_other, codec, port, pt) in legs {
        match map {
            Map::Off => continue,
            Map::Auto => {}
            Map::User(m) => args.extend(["-map".to_string(), m]),
        }
        args.extend([drop_other, "-sn", "-dn"].map(str::to_string));
        args.extend(codec);
        args.extend(
            ["-f", "rtp", "-cname", LEG_CNAME]
                .map(str::to_string)
                .into_iter()
                .chain([
                    "-payload_type".to_string(),
                    pt.to_string(),
                    format!("rtp://127.0.0.1:{port}?pkt_size=1200"),
                ]),
        );
    }
    args
}
