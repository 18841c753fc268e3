//! What FFmpeg reported about a process's inputs (a probe, or a run's input prelude), and what
//! each codec needs on its way to a viewer: copied into the MPEG-TS leg, copied into its own RTP
//! leg (VP8/VP9, which TS cannot carry), or encoded once by FFmpeg (raw frames and samples, and
//! every codec no chain of the server takes).

use crate::model::process::ProcessIo;
use crate::process::progress::ProbeIo;

use super::WHIP_ADDRESS;

/// The streams of each input, in FFmpeg's order: `(kind, codec)` as the prelude names them
/// (`video`/`audio`, `h264`/`rawvideo`/`pcm_s16le`/…), and each input's bitrate where FFmpeg
/// knew it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputCodecs {
    streams: Vec<Vec<(String, String)>>,
    /// kbit/s per input, 0 when unknown (live inputs).
    bitrates_kbps: Vec<f64>,
}

/// How one medium reaches the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Copied into the MPEG-TS leg.
    Copy,
    /// Copied into a leg of its own (VP8, VP9).
    CopyPerMedium,
    /// Encoded by FFmpeg (H.264 or Opus).
    Encode,
}

/// What a leg's map selects of an input, as far as the reported codecs tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected<'a> {
    /// The input was not reported, or the map is beyond this simple grammar.
    Unknown,
    /// The map matches nothing: the medium is not there.
    Absent,
    /// The codec of the stream it matches.
    Codec(&'a str),
}

impl InputCodecs {
    /// From the streams of a probe or a run's prelude; `None` when FFmpeg reported no input
    /// (a failed open, or a log level that hides the prelude), which leaves the rules in force.
    pub fn from_streams(streams: &[ProbeIo]) -> Option<InputCodecs> {
        let mut inputs: Vec<Vec<(String, String)>> = Vec::new();
        let mut bitrates_kbps: Vec<f64> = Vec::new();
        for s in streams {
            let file = usize::try_from(s.index).ok()?;
            if file > 64 {
                return None;
            }
            if inputs.len() <= file {
                inputs.resize(file + 1, Vec::new());
                bitrates_kbps.resize(file + 1, 0.0);
            }
            inputs[file].push((s.r#type.clone(), s.codec.clone()));
            // The input's own figure, else what its streams add up to (those that say).
            bitrates_kbps[file] = match s.input_bitrate_kbps {
                whole if whole > 0.0 => whole,
                _ if s.bitrate_kbps > 0.0 => bitrates_kbps[file] + s.bitrate_kbps,
                _ => bitrates_kbps[file],
            };
        }
        (!inputs.is_empty()).then_some(InputCodecs {
            streams: inputs,
            bitrates_kbps,
        })
    }

    /// What an input carries per second (kbit/s), if FFmpeg said.
    pub fn bitrate_kbps(&self, input: usize) -> Option<f64> {
        self.bitrates_kbps.get(input).copied().filter(|b| *b > 0.0)
    }

    /// The stream a `-map` value (`I`, `I:v`, `I:v:N`, `I:a:N`, `I:N`, with or without `?`) picks
    /// for `medium` (`'v'` or `'a'`); anything else (negative maps, metadata or program
    /// specifiers, filter labels) is unknown.
    pub fn select(&self, map: &str, medium: char) -> Selected<'_> {
        let map = map.trim().trim_end_matches('?');
        let mut parts = map.split(':');
        let Some(streams) = parts
            .next()
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| self.streams.get(i))
        else {
            return Selected::Unknown;
        };
        let rest: Vec<&str> = parts.collect();
        let nth_of = |kind: &str, n: usize| {
            streams
                .iter()
                .filter(|(k, _)| k == kind)
                .nth(n)
                .map_or(Selected::Absent, |(_, c)| Selected::Codec(c))
        };
        let kind_of = |t: &str| match t {
            "v" | "V" => Some("video"),
            "a" => Some("audio"),
            _ => None,
        };
        match rest[..] {
            [] => nth_of(if medium == 'v' { "video" } else { "audio" }, 0),
            [t] => match (kind_of(t), t.parse::<usize>()) {
                (Some(kind), _) => nth_of(kind, 0),
                (None, Ok(n)) => streams
                    .get(n)
                    .map_or(Selected::Absent, |(_, c)| Selected::Codec(c)),
                _ => Selected::Unknown,
            },
            [t, n] => match (kind_of(t), n.parse::<usize>()) {
                (Some(kind), Ok(n)) => nth_of(kind, n),
                _ => Selected::Unknown,
            },
            _ => Selected::Unknown,
        }
    }
}

/// Video codecs the MPEG-TS leg carries and the server's chains take (docs/sources.md).
const TS_VIDEO: &[&str] = &["h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4"];
/// Video codecs TS cannot carry that FFmpeg packetizes in RTP and browsers decode.
const RTP_VIDEO: &[&str] = &["vp8", "vp9"];
/// Audio codecs the TS leg carries and the server's chains take.
const TS_AUDIO: &[&str] = &["aac", "mp2", "mp3", "ac3", "opus"];

/// What a video or audio codec needs.
pub fn handling(medium: char, codec: &str) -> Handling {
    let (copy, own) = if medium == 'v' {
        (TS_VIDEO, RTP_VIDEO)
    } else {
        (TS_AUDIO, &[][..])
    };
    if copy.contains(&codec) {
        Handling::Copy
    } else if own.contains(&codec) {
        Handling::CopyPerMedium
    } else {
        Handling::Encode
    }
}

/// An input whose codecs exist only once a publisher connects to it.
pub fn waits_for_publisher(io: &ProcessIo) -> bool {
    let address = io.address.trim();
    let option = |name: &str, on: &dyn Fn(&str) -> bool| {
        io.options.windows(2).any(|w| w[0] == name && on(&w[1]))
    };
    let query = address.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str, on: &dyn Fn(&str) -> bool| {
        query.split('&').any(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, "1"));
            k == name && on(v)
        })
    };
    address == WHIP_ADDRESS
        || address.contains("{rtmp")
        || address.contains("{srt")
        || option("-listen", &|v| v != "0")
        || option("-rtsp_flags", &|v| v.contains("listen"))
        || option("-mode", &|v| v == "listener")
        || param("listen", &|v| v != "0")
        || param("mode", &|v| v == "listener")
}
