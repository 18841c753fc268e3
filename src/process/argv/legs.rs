//! The WebRTC legs appended to a process's command line: how FFmpeg hands a stream to the server.
//!
//! Default: one RTP leg carrying MPEG-TS (`rtp_mpegts`) to the stream's video port. TS carries
//! the codecs users feed (H.264, HEVC, MPEG-2, AAC, MP2/MP3, AC-3, Opus) with their parameters in
//! band and both media on one clock, so nothing has to be known when the argv is written: the
//! server discovers the codecs from the stream (RTMP/SRT listeners, `{whip}` included). The leg
//! is a slave of FFmpeg's `tee` muxer with `onfail=ignore` and optional maps, so a leg FFmpeg
//! cannot produce, or a medium the source lacks, never fails the process or its other outputs.
//!
//! WebM and Ogg inputs may hold VP8, VP9 and Vorbis, which TS cannot carry: they keep one RTP
//! leg per medium with an SDP file, audio encoded to Opus (Vorbis has no browser path). Raw
//! inputs (lavfi, capture devices, rawvideo, PCM) are encoded once in FFmpeg for the stream,
//! with the encoder the transcode branch uses, instead of sending raw video over loopback.
//! docs/sources.md has the measurements behind this.

use std::path::Path;

use crate::model::process::{ProcessConfig, ProcessIo, WebRtcSettings};
use crate::model::transcode::TranscodeSettings;

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

/// Classifies the legs' input (the first, or the one the maps name).
pub fn source_kind(config: &ProcessConfig) -> SourceKind {
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

/// The leg format for a source.
pub fn leg_format(kind: SourceKind) -> LegFormat {
    match kind {
        SourceKind::WebM => LegFormat::PerMedium,
        SourceKind::Coded | SourceKind::Raw => LegFormat::MpegTs,
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

/// The maps and codecs of the TS leg. FFmpeg's automatic stream selection does not apply to the
/// `tee` muxer, so the maps are explicit: without user maps, the first video and the first audio
/// stream of every input (the server serves the first of each kind it finds); with one, the
/// other medium is the first of its kind of the same input. Every map is optional (`?`): a
/// stream that is not there maps nothing instead of failing the process. Streams of raw inputs
/// are encoded, the others copied.
fn mpegts_args(
    video: &Map,
    audio: &Map,
    config: &ProcessConfig,
    encoding: &LegEncoding,
) -> Vec<String> {
    let inputs = config.input.len().max(1);
    let explicit = matches!(video, Map::User(_)) || matches!(audio, Map::User(_));
    let mut maps = Vec::new();
    let mut codecs = Vec::new();
    for (map, medium) in [(video, 'v'), (audio, 'a')] {
        let chosen: Vec<(String, usize)> = match map {
            Map::Off => continue,
            Map::Auto if explicit => {
                let input = leg_input(&config.webrtc);
                vec![(format!("{input}:{medium}:0?"), input)]
            }
            Map::Auto => (0..inputs)
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
        };
        // Output stream indices shift when an optional map matches nothing, so codecs are set
        // per medium: encoded when any input it may come from is raw.
        let mut raw = false;
        for (map, input) in chosen {
            maps.extend(["-map".to_string(), map]);
            raw |= config
                .input
                .get(input)
                .is_some_and(|i| input_kind(i) == SourceKind::Raw);
        }
        codecs.extend(match (raw, medium) {
            (false, _) => vec![format!("-c:{medium}"), "copy".to_string()],
            (true, 'v') => {
                ffmpeg_video_encoder(encoding.video_encoder.as_deref(), &encoding.settings)
            }
            (true, _) => opus(&encoding.settings),
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

/// The legs FFmpeg sends to a stream's `(video, audio)` ports.
pub fn webrtc_legs(
    config: &ProcessConfig,
    encoding: &LegEncoding,
    sdp_path: &Path,
    ports: (u16, u16),
) -> Vec<String> {
    let settings = &config.webrtc;
    let kind = source_kind(config);
    let video = Map::of(&settings.video_map);
    let audio = Map::of(&settings.audio_map);
    if video == Map::Off && audio == Map::Off {
        return Vec::new();
    }
    match leg_format(kind) {
        LegFormat::MpegTs => {
            let mut args = mpegts_args(&video, &audio, config, encoding);
            args.extend([
                "-f".to_string(),
                "tee".to_string(),
                format!(
                    "[f=rtp_mpegts:onfail=ignore]rtp://127.0.0.1:{}?pkt_size=1316",
                    ports.0
                ),
            ]);
            args
        }
        LegFormat::PerMedium => per_medium_legs(video, audio, encoding, sdp_path, ports),
    }
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
