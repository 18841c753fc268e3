//! The prelude FFmpeg prints before it runs: `Input #N`/`Output #N` headers with their stream
//! lines, and the `Stream mapping:` block. The run parser reads it to name the streams of its
//! progress; a probe run prints nothing else, so [`parse_probe`] is this grammar alone.

use super::types::{Probe, ProbeIo};
use super::{num, round3, strip_level};

/// A stream line of the prelude, independent of whether it describes an input or an output.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamInfo {
    pub(super) file: u64,
    pub(super) index: u64,
    pub(super) language: String,
    pub(super) kind: String,
    pub(super) codec: String,
    pub(super) pix_fmt: String,
    pub(super) width: u64,
    pub(super) height: u64,
    pub(super) fps: f64,
    pub(super) bitrate_kbps: f64,
    pub(super) sampling_hz: u64,
    pub(super) layout: String,
    pub(super) channels: u64,
}

/// An `Input #N`/`Output #N` header.
#[derive(Debug, Clone, Default)]
pub(super) struct FileInfo {
    pub(super) index: u64,
    pub(super) format: String,
    pub(super) url: String,
    pub(super) duration: f64,
    pub(super) bitrate_kbps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Section {
    #[default]
    None,
    Input,
    Output,
    Mapping,
}

/// Collects the Input/Output/Stream mapping sections; shared by progress and probe parsing.
#[derive(Debug, Default)]
pub(super) struct Prelude {
    section: Section,
    pub(super) in_files: Vec<FileInfo>,
    pub(super) out_files: Vec<FileInfo>,
    pub(super) in_streams: Vec<StreamInfo>,
    pub(super) out_streams: Vec<StreamInfo>,
    /// (input file, stream, decoder) from mapping lines.
    pub(super) decoders: Vec<(u64, u64, String)>,
    /// (output file, stream, encoder) from mapping lines; its length is the expected output count.
    pub(super) encoders: Vec<(u64, u64, String)>,
    mapping_ended: bool,
    /// An `Input #N` section is still being printed (its stream lines may follow).
    input_open: bool,
}

impl Prelude {
    /// Output headers may come before or after the mapping (stream copy vs. encoding), so the
    /// prelude is complete once the mapping block ended and all mapped outputs were printed.
    pub(super) fn complete(&self) -> bool {
        self.mapping_ended
            && !self.encoders.is_empty()
            && self.out_streams.len() >= self.encoders.len()
    }

    /// The streams of the inputs once `count` inputs were printed and the last one's section
    /// ended (by an output header, the mapping, or any other line, such as an output's error).
    pub(super) fn inputs(&self, count: usize) -> Option<Vec<ProbeIo>> {
        (self.in_files.len() >= count && !self.input_open).then(|| self.probe_streams())
    }

    /// The input streams in the Probe schema.
    fn probe_streams(&self) -> Vec<ProbeIo> {
        self.in_streams
            .iter()
            .map(|s| {
                let file = self
                    .in_files
                    .iter()
                    .find(|f| f.index == s.file)
                    .cloned()
                    .unwrap_or_default();
                ProbeIo {
                    url: file.url,
                    format: file.format,
                    index: s.file,
                    stream: s.index,
                    language: s.language.clone(),
                    r#type: s.kind.clone(),
                    codec: s.codec.clone(),
                    coder: s.codec.clone(),
                    bitrate_kbps: s.bitrate_kbps,
                    duration_sec: round3(file.duration),
                    fps: round3(s.fps),
                    pix_fmt: s.pix_fmt.clone(),
                    width: s.width,
                    height: s.height,
                    sampling_hz: s.sampling_hz,
                    layout: s.layout.clone(),
                    channels: s.channels,
                    input_bitrate_kbps: file.bitrate_kbps,
                }
            })
            .collect()
    }

    /// Returns true when `line` (level tag already stripped) belongs to the prelude.
    pub(super) fn feed(&mut self, line: &str) -> bool {
        let indented = line.starts_with(' ');
        let t = line.trim();
        if self.section == Section::Mapping && !indented {
            self.mapping_ended = true;
            self.section = Section::None;
        }
        if let Some(c) = re!(r"^Input #([0-9]+), (.*), from '(.*)':$").captures(line) {
            self.section = Section::Input;
            self.input_open = true;
            self.in_files.push(file_info(&c));
            return true;
        }
        if !indented {
            self.input_open = false;
        }
        if let Some(c) = re!(r"^Output #([0-9]+), (.*), to '(.*)':$").captures(line) {
            self.section = Section::Output;
            self.out_files.push(file_info(&c));
            return true;
        }
        if t == "Stream mapping:" {
            self.section = Section::Mapping;
            return true;
        }
        match self.section {
            Section::Mapping => {
                self.feed_mapping(t);
                true
            }
            Section::Input | Section::Output if indented => self.feed_file_line(t),
            _ => false,
        }
    }

    fn feed_file_line(&mut self, t: &str) -> bool {
        if let Some(c) =
            re!(r"^Duration: (?:([0-9]+):([0-9]+):([0-9]+(?:\.[0-9]+)?)|N/A)").captures(t)
        {
            if let (Section::Input, Some(f)) = (self.section, self.in_files.last_mut()) {
                f.duration = num(c.get(1)) * 3600.0 + num(c.get(2)) * 60.0 + num(c.get(3));
                if let Some(b) = re!(r"bitrate: ([0-9]+(?:\.[0-9]+)?) kb/s").captures(t) {
                    f.bitrate_kbps = num(b.get(1));
                }
            }
            return true;
        }
        let re =
            re!(r"^Stream #([0-9]+):([0-9]+)(?:\[[^\]]*\])?(?:\(([^)]*)\))?: ([[:word:]]+): (.*)$");
        let Some(c) = re.captures(t) else {
            return false;
        };
        let info = parse_stream(
            num(c.get(1)) as u64,
            num(c.get(2)) as u64,
            c.get(3).map_or("", |m| m.as_str()),
            &c[4],
            &c[5],
        );
        if self.section == Section::Input {
            self.in_streams.push(info);
        } else {
            self.out_streams.push(info);
        }
        true
    }

    fn feed_mapping(&mut self, t: &str) {
        if let Some(c) =
            re!(r"^Stream #([0-9]+):([0-9]+) -> #([0-9]+):([0-9]+) \((.*)\)$").captures(t)
        {
            let (inf, ins) = (num(c.get(1)) as u64, num(c.get(2)) as u64);
            let (outf, outs) = (num(c.get(3)) as u64, num(c.get(4)) as u64);
            if &c[5] == "copy" {
                self.encoders.push((outf, outs, "copy".into()));
            } else if let Some(cc) =
                re!(r"^([^[:space:]]+) \(([^)]*)\) -> ([^[:space:]]+) \(([^)]*)\)$").captures(&c[5])
            {
                // "native" means FFmpeg's built-in coder, which carries the codec's name.
                let pick = |codec: &str, coder: &str| {
                    if coder == "native" { codec } else { coder }.to_string()
                };
                self.decoders.push((inf, ins, pick(&cc[1], &cc[2])));
                self.encoders.push((outf, outs, pick(&cc[3], &cc[4])));
            } else {
                self.encoders.push((outf, outs, String::new()));
            }
        } else if let Some(c) = re!(r"-> Stream #([0-9]+):([0-9]+) \(([^()]*)\)$").captures(t) {
            // Output of a filter graph: "overlay -> Stream #0:0 (libx264)".
            self.encoders
                .push((num(c.get(1)) as u64, num(c.get(2)) as u64, c[3].to_string()));
        }
    }
}

fn file_info(c: &regex::Captures) -> FileInfo {
    FileInfo {
        index: num(c.get(1)) as u64,
        format: c[2].to_string(),
        url: c[3].to_string(),
        duration: 0.0,
        bitrate_kbps: 0.0,
    }
}

/// Splits on commas that are not inside parentheses/brackets, e.g. `yuv420p(tv, bt709)`.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth <= 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(s[start..].trim());
    parts
}

fn parse_stream(file: u64, index: u64, lang: &str, kind: &str, rest: &str) -> StreamInfo {
    let parts = split_top_level(rest);
    let mut s = StreamInfo {
        file,
        index,
        language: if lang.is_empty() {
            "und".into()
        } else {
            lang.into()
        },
        kind: kind.to_ascii_lowercase(),
        codec: parts
            .first()
            .and_then(|p| p.split_whitespace().next())
            .unwrap_or("")
            .to_string(),
        ..Default::default()
    };
    let unit_re = re!(r"^([0-9]+(?:\.[0-9]+)?)(k?) (kb/s|fps|tbr|Hz)(?-u:\b)");
    let (dims_re, name_re) = (re!(r"^([0-9]+)x([0-9]+)(?-u:\b)"), re!(r"^[a-z0-9_]+$"));
    let (mut fps, mut tbr) = (0.0, 0.0);
    for (i, part) in parts.iter().enumerate().skip(1) {
        if let Some(c) = unit_re.captures(part) {
            let v = num(c.get(1)) * if &c[2] == "k" { 1000.0 } else { 1.0 };
            match &c[3] {
                "kb/s" => s.bitrate_kbps = v,
                "fps" => fps = v,
                "tbr" => tbr = v,
                _ => {
                    s.sampling_hz = v as u64;
                    s.layout = parts.get(i + 1).unwrap_or(&"").to_string();
                    s.channels = channels(&s.layout);
                }
            }
        } else if s.kind == "video" {
            if let Some(c) = dims_re.captures(part) {
                (s.width, s.height) = (num(c.get(1)) as u64, num(c.get(2)) as u64);
            } else if i == 1 {
                let name = part.split('(').next().unwrap_or("");
                if name_re.is_match(name) {
                    s.pix_fmt = name.to_string();
                }
            }
        }
    }
    s.fps = if fps > 0.0 { fps } else { tbr };
    s
}

/// Channel count of an FFmpeg layout name such as "stereo", "5.1(side)" or "3 channels".
fn channels(layout: &str) -> u64 {
    let base = layout.split('(').next().unwrap_or("").trim();
    match base {
        "mono" => 1,
        "stereo" | "downmix" => 2,
        "quad" => 4,
        "hexagonal" => 6,
        "octagonal" => 8,
        _ => {
            if let Some(c) = re!(r"^([0-9]+)(?:\.([0-9]+))?").captures(base) {
                (num(c.get(1)) + num(c.get(2))) as u64
            } else {
                0
            }
        }
    }
}

/// Parses the stderr of a probe run (`ffmpeg [opts] -i a [-i b]`, no outputs) into the Probe
/// schema; `url` is the address printed by ffmpeg.
pub fn parse_probe(stderr: &str) -> Probe {
    let mut pre = Prelude::default();
    let mut log = Vec::new();
    for raw in stderr.split(['\r', '\n']) {
        if raw.trim().is_empty() {
            continue;
        }
        if !pre.feed(strip_level(raw)) {
            log.push(raw.to_string());
        }
    }
    let streams = pre.probe_streams();
    Probe { streams, log }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::progress::samples::{MULTI_OUTPUT_TAGGED, PROBE_MKV, PROBE_TS};

    #[test]
    fn probe_streams() {
        let pr = parse_probe(PROBE_TS);
        assert_eq!(pr.streams.len(), 2);
        let v = &pr.streams[0];
        assert_eq!(
            (v.url.as_str(), v.format.as_str(), v.language.as_str()),
            ("/tmp/x.ts", "mpegts", "und")
        );
        assert_eq!(
            (v.r#type.as_str(), v.codec.as_str(), v.coder.as_str()),
            ("video", "h264", "h264")
        );
        assert_eq!(
            (v.pix_fmt.as_str(), v.width, v.height, v.fps),
            ("yuv444p", 320, 240, 25.0)
        );
        assert_eq!((v.duration_sec, v.bitrate_kbps), (3.02, 0.0));
        let a = &pr.streams[1];
        assert_eq!(
            (a.index, a.stream, a.codec.as_str(), a.bitrate_kbps),
            (0, 1, "aac", 72.0)
        );
        assert_eq!(
            (a.sampling_hz, a.layout.as_str(), a.channels, a.width),
            (48000, "mono", 1, 0)
        );
        assert!(pr
            .log
            .contains(&"At least one output file must be specified".to_string()));
        assert!(!pr
            .log
            .iter()
            .any(|l| l.contains("Stream #") || l.contains("Input #")));

        let mkv = parse_probe(PROBE_MKV);
        assert_eq!(mkv.streams[0].format, "matroska,webm");
        assert_eq!(
            (
                mkv.streams[1].language.as_str(),
                mkv.streams[1].duration_sec
            ),
            ("eng", 3.03)
        );

        // Two inputs with level tags; lavfi prints no fps, so tbr is used.
        let prelude =
            &MULTI_OUTPUT_TAGGED[..MULTI_OUTPUT_TAGGED.find("[info] Stream mapping").unwrap()];
        let two = parse_probe(prelude);
        let s: Vec<_> = two
            .streams
            .iter()
            .map(|s| (s.index, s.r#type.as_str(), s.fps, !s.url.is_empty()))
            .collect();
        assert_eq!(s, [(0, "video", 25.0, true), (1, "audio", 0.0, true)]);
        assert_eq!(two.streams[1].bitrate_kbps, 705.0);
    }

    #[test]
    fn inputs_are_reported_once_their_section_ended() {
        let mut pre = Prelude::default();
        for line in [
            "Input #0, ogg, from 'a.ogg':",
            "  Duration: 00:00:02.00, start: 0.004833, bitrate: 30 kb/s",
            "  Stream #0:0: Audio: vorbis, 48000 Hz, mono, fltp, 80 kb/s",
            "    Metadata:",
            "      encoder         : Lavc59.37.100 libvorbis",
            // Opening the second input may log before its header.
            "[hls @ 0x55] Opening 'seg0.ts' for reading",
            "Input #1, hls, from 'b.m3u8':",
            "  Stream #1:0: Video: h264 (Main), yuv420p, 320x240, 25 fps",
        ] {
            pre.feed(line);
            assert!(pre.inputs(2).is_none(), "{line}");
        }
        // An output's error ends the section as an output header would.
        pre.feed("Output file #1 does not contain any stream");
        let streams = pre.inputs(2).unwrap();
        let s: Vec<_> = streams
            .iter()
            .map(|s| (s.index, s.r#type.as_str(), s.codec.as_str()))
            .collect();
        assert_eq!(s, [(0, "audio", "vorbis"), (1, "video", "h264")]);
        // The whole input's bitrate where its Duration line has one (not a live HLS input).
        let bitrates: Vec<_> = streams.iter().map(|s| s.input_bitrate_kbps).collect();
        assert_eq!(bitrates, [30.0, 0.0]);
    }

    #[test]
    fn channel_counts_of_layouts() {
        let ch: Vec<_> = ["mono", "stereo", "5.1(side)", "7.1", "3 channels", "x"]
            .map(channels)
            .into();
        assert_eq!(ch, [1, 2, 6, 8, 3, 0]);
    }
}
