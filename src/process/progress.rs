//! Turns the stderr of a stock FFmpeg run into the Core `Progress` and `Probe` schemas.
//!
//! Stock FFmpeg only prints totals on its stats line, so per-stream counters are derived
//! (see [`Parser::progress`]), and all rates are computed here from counter deltas because
//! Core clients expect a 30 s moving average rather than FFmpeg's own instantaneous values.

use std::collections::VecDeque;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Core averages rates over 30 s so a UI does not flicker on every stats line.
const RATE_WINDOW_SECS: f64 = 30.0;
/// One retained sample per second bounds memory to about 31 samples per counter.
const RATE_GRANULARITY_SECS: f64 = 1.0;

/// Identity of a configured input or output, by ffmpeg file index.
#[derive(Debug, Clone, Default)]
pub struct IoRef {
    /// Configured input/output id.
    pub id: String,
    /// Configured (resolved) address; the printed url is used when this is empty.
    pub address: String,
}

/// What a stderr line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A stats/progress line; not written to the log. `frames_advanced` is true when the total
    /// frame counter grew (used by stale detection; never true before the prelude is complete).
    Progress {
        /// Whether the run made progress since the previous stats line.
        frames_advanced: bool,
    },
    /// Any other line (goes to the process log).
    Log,
}

/// Progress of a running process (`ProcessState.progress`, contract §4.4).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Progress {
    /// One entry per input stream.
    pub inputs: Vec<ProgressIo>,
    /// One entry per output stream.
    pub outputs: Vec<ProgressIo>,
    /// Frames of the first output video stream, as printed by FFmpeg.
    pub frame: u64,
    /// Stock FFmpeg prints no packet count, so this mirrors `frame`.
    pub packet: u64,
    /// 30 s moving average of frames per second.
    pub fps: f64,
    /// Quantizer of the first output video stream.
    pub q: f64,
    /// Total output size in kB.
    pub size_kb: u64,
    /// Output timestamp in seconds.
    pub time: f64,
    /// 30 s moving average of the output bitrate (bit/s ÷ 1024).
    pub bitrate_kbit: f64,
    /// Processing speed relative to realtime.
    pub speed: f64,
    /// Dropped frames.
    pub drop: u64,
    /// Duplicated frames.
    pub dup: u64,
}

/// Minimum, maximum and average frame rate of a stream (only the patched FFmpeg reports it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Framerate {
    /// Lowest observed frame rate.
    pub min: f64,
    /// Highest observed frame rate.
    pub max: f64,
    /// Average frame rate.
    pub avg: f64,
}

/// Progress of one input or output stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ProgressIo {
    /// Id of the configured input/output at `index`.
    pub id: String,
    /// Address of the configured input/output at `index`.
    pub address: String,
    /// FFmpeg file index.
    pub index: u64,
    /// Stream index inside the file.
    pub stream: u64,
    /// Container format.
    pub format: String,
    /// "video", "audio", "subtitle", ...
    #[serde(rename = "type")]
    pub r#type: String,
    /// Codec name.
    pub codec: String,
    /// Encoder/decoder name, or "copy".
    pub coder: String,
    /// Frames processed.
    pub frame: u64,
    /// Key frames processed.
    pub keyframe: u64,
    /// Frame rate statistics.
    pub framerate: Framerate,
    /// 30 s moving average of frames per second.
    pub fps: f64,
    /// Packets processed.
    pub packet: u64,
    /// 30 s moving average of packets per second.
    pub pps: f64,
    /// Bytes processed ÷ 1024.
    pub size_kb: u64,
    /// 30 s moving average bitrate (bit/s ÷ 1024).
    pub bitrate_kbit: f64,
    /// Size of the codec extradata.
    pub extradata_size_bytes: u64,
    /// Video pixel format.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pix_fmt: String,
    /// Video quantizer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
    /// Video width.
    #[serde(skip_serializing_if = "is_zero")]
    pub width: u64,
    /// Video height.
    #[serde(skip_serializing_if = "is_zero")]
    pub height: u64,
    /// Audio sample rate.
    #[serde(skip_serializing_if = "is_zero")]
    pub sampling_hz: u64,
    /// Audio channel layout.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub layout: String,
    /// Audio channel count.
    #[serde(skip_serializing_if = "is_zero")]
    pub channels: u64,
    /// Playout statistics of the patched FFmpeg; always null with stock FFmpeg.
    #[schema(value_type = Option<Object>)]
    pub avstream: Option<serde_json::Value>,
}

/// Result of probing the inputs of a process (contract §4.6).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Probe {
    /// One entry per input stream.
    pub streams: Vec<ProbeIo>,
    /// Stderr lines that were not part of the input description.
    pub log: Vec<String>,
}

/// One probed input stream; every field is always serialized because clients require them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ProbeIo {
    /// Input url as printed by FFmpeg.
    pub url: String,
    /// Container format.
    pub format: String,
    /// FFmpeg file index.
    pub index: u64,
    /// Stream index inside the file.
    pub stream: u64,
    /// Stream language, "und" when unknown.
    pub language: String,
    /// "video", "audio", "subtitle", ...
    #[serde(rename = "type")]
    pub r#type: String,
    /// Codec name.
    pub codec: String,
    /// Decoder name (the codec name with stock FFmpeg).
    pub coder: String,
    /// Stream bitrate in kbit/s, 0 if not printed.
    pub bitrate_kbps: f64,
    /// Duration of the input file in seconds, 0 if unknown (live).
    pub duration_sec: f64,
    /// Frame rate (`fps`, falling back to `tbr`).
    pub fps: f64,
    /// Video pixel format.
    pub pix_fmt: String,
    /// Video width.
    pub width: u64,
    /// Video height.
    pub height: u64,
    /// Audio sample rate.
    pub sampling_hz: u64,
    /// Audio channel layout.
    pub layout: String,
    /// Audio channel count.
    pub channels: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

macro_rules! re {
    ($pat:expr) => {{
        static RE: OnceLock<Regex> = OnceLock::new();
        RE.get_or_init(|| Regex::new($pat).expect("static regex"))
    }};
}

/// Removes the `[info] ` tag that `-loglevel level+...` prepends, so the anchored patterns match.
fn strip_level(line: &str) -> &str {
    let line = line.trim_end_matches(['\r', '\n']);
    match re!(r"^\[(?:quiet|panic|fatal|error|warning|info|verbose|debug|trace)\] ").find(line) {
        Some(m) => &line[m.end()..],
        None => line,
    }
}

/// A counter sampled over time, from which a moving-average rate is derived.
#[derive(Debug, Default)]
struct Rate {
    samples: VecDeque<(f64, f64)>,
}

impl Rate {
    fn push(&mut self, t: f64, v: f64) {
        if !t.is_finite() || !v.is_finite() {
            return;
        }
        if self.samples.back().is_some_and(|&(lt, _)| t < lt) {
            // A clock going backwards would yield negative rates; start over instead.
            self.samples.clear();
        }
        let n = self.samples.len();
        // The newest sample stays "open" until it is a full granule after its predecessor.
        if n >= 2 && self.samples[n - 1].0 - self.samples[n - 2].0 < RATE_GRANULARITY_SECS {
            self.samples[n - 1] = (t, v);
        } else {
            self.samples.push_back((t, v));
        }
        while self.samples.len() > 2 && self.samples[0].0 < t - RATE_WINDOW_SECS {
            self.samples.pop_front();
        }
    }

    fn per_sec(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, v0)), Some(&(t1, v1))) if t1 > t0 => finite((v1 - v0).max(0.0) / (t1 - t0)),
            _ => 0.0,
        }
    }
}

/// A stream line of the prelude, independent of whether it describes an input or an output.
#[derive(Debug, Clone, Default)]
struct StreamInfo {
    file: u64,
    index: u64,
    language: String,
    kind: String,
    codec: String,
    pix_fmt: String,
    width: u64,
    height: u64,
    fps: f64,
    bitrate_kbps: f64,
    sampling_hz: u64,
    layout: String,
    channels: u64,
}

/// An `Input #N`/`Output #N` header.
#[derive(Debug, Clone, Default)]
struct FileInfo {
    index: u64,
    format: String,
    url: String,
    duration: f64,
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
struct Prelude {
    section: Section,
    in_files: Vec<FileInfo>,
    out_files: Vec<FileInfo>,
    in_streams: Vec<StreamInfo>,
    out_streams: Vec<StreamInfo>,
    /// (input file, stream, decoder) from mapping lines.
    decoders: Vec<(u64, u64, String)>,
    /// (output file, stream, encoder) from mapping lines; its length is the expected output count.
    encoders: Vec<(u64, u64, String)>,
    mapping_ended: bool,
}

impl Prelude {
    /// Output headers may come before or after the mapping (stream copy vs. encoding), so the
    /// prelude is complete once the mapping block ended and all mapped outputs were printed.
    fn complete(&self) -> bool {
        self.mapping_ended
            && !self.encoders.is_empty()
            && self.out_streams.len() >= self.encoders.len()
    }

    /// Returns true when `line` (level tag already stripped) belongs to the prelude.
    fn feed(&mut self, line: &str) -> bool {
        let indented = line.starts_with(' ');
        let t = line.trim();
        if self.section == Section::Mapping && !indented {
            self.mapping_ended = true;
            self.section = Section::None;
        }
        if let Some(c) = re!(r"^Input #(\d+), (.*), from '(.*)':$").captures(line) {
            self.section = Section::Input;
            self.in_files.push(file_info(&c));
            return true;
        }
        if let Some(c) = re!(r"^Output #(\d+), (.*), to '(.*)':$").captures(line) {
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
        if let Some(c) = re!(r"^Duration: (?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)").captures(t) {
            if let (Section::Input, Some(f)) = (self.section, self.in_files.last_mut()) {
                f.duration = num(c.get(1)) * 3600.0 + num(c.get(2)) * 60.0 + num(c.get(3));
            }
            return true;
        }
        let re = re!(r"^Stream #(\d+):(\d+)(?:\[[^\]]*\])?(?:\(([^)]*)\))?: (\w+): (.*)$");
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
        if let Some(c) = re!(r"^Stream #(\d+):(\d+) -> #(\d+):(\d+) \((.*)\)$").captures(t) {
            let (inf, ins) = (num(c.get(1)) as u64, num(c.get(2)) as u64);
            let (outf, outs) = (num(c.get(3)) as u64, num(c.get(4)) as u64);
            if &c[5] == "copy" {
                self.encoders.push((outf, outs, "copy".into()));
            } else if let Some(cc) =
                re!(r"^(\S+) \(([^)]*)\) -> (\S+) \(([^)]*)\)$").captures(&c[5])
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
        } else if let Some(c) = re!(r"-> Stream #(\d+):(\d+) \(([^()]*)\)$").captures(t) {
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
    }
}

/// Parses a number capture; anything unparsable counts as 0 because stderr is untrusted.
fn num(m: Option<regex::Match>) -> f64 {
    finite(
        m.and_then(|m| m.as_str().parse::<f64>().ok())
            .unwrap_or(0.0),
    )
}

/// NaN/infinity would serialize as JSON `null`, which clients reject for numbers.
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
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
    let unit_re = re!(r"^(\d+(?:\.\d+)?)(k?) (kb/s|fps|tbr|Hz)\b");
    let (dims_re, name_re) = (re!(r"^(\d+)x(\d+)\b"), re!(r"^[a-z0-9_]+$"));
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
            if let Some(c) = re!(r"^(\d+)(?:\.(\d+))?").captures(base) {
                (num(c.get(1)) + num(c.get(2))) as u64
            } else {
                0
            }
        }
    }
}

/// Totals from the most recent stats line.
#[derive(Debug, Default, Clone)]
struct Stats {
    frame: u64,
    qs: Vec<f64>,
    size_kb: u64,
    time: f64,
    speed: f64,
    drop: u64,
    dup: u64,
}

/// Parses the stats line's `key= value` pairs; missing or `N/A` values stay 0.
fn parse_stats(line: &str) -> (Stats, bool) {
    let mut st = Stats::default();
    let mut has_frame = false;
    for c in re!(r"(\w+)=\s*(\S+)").captures_iter(line) {
        let v = &c[2];
        let leading = |v: &str| {
            let end = v
                .find(|ch: char| !(ch.is_ascii_digit() || ".-+e".contains(ch)))
                .unwrap_or(v.len());
            finite(v[..end].parse::<f64>().unwrap_or(0.0))
        };
        match &c[1] {
            "frame" => {
                has_frame = true;
                st.frame = v.parse().unwrap_or(0);
            }
            "q" | "Lq" => st.qs.push(leading(v)),
            "size" | "Lsize" => {
                st.size_kb = v
                    .trim_end_matches(|ch: char| ch.is_alphabetic())
                    .parse()
                    .unwrap_or(0)
            }
            "time" => st.time = parse_time(v),
            "speed" => st.speed = leading(v),
            "drop" => st.drop = v.parse().unwrap_or(0),
            "dup" => st.dup = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    (st, has_frame)
}

/// `[-]HH:MM:SS.cc` to seconds; `N/A` and garbage yield 0.
fn parse_time(v: &str) -> f64 {
    match re!(r"^(-?)(\d+):(\d+):(\d+(?:\.\d+)?)$").captures(v) {
        Some(c) => {
            let secs = num(c.get(2)) * 3600.0 + num(c.get(3)) * 60.0 + num(c.get(4));
            if &c[1] == "-" {
                -secs
            } else {
                secs
            }
        }
        None => 0.0,
    }
}

/// Keeps API numbers short; Core prints at most three decimals.
fn round3(v: f64) -> f64 {
    let r = (v * 1000.0).round() / 1000.0;
    if r.is_finite() {
        r
    } else {
        finite(v)
    }
}

/// Parses the stderr of one ffmpeg run (one Parser per run).
pub struct Parser {
    inputs: Vec<IoRef>,
    outputs: Vec<IoRef>,
    prelude: Prelude,
    prelude_done: bool,
    stats: Stats,
    frames: Rate,
    size: Rate,
}

impl Parser {
    /// `inputs`/`outputs` are the configured IOs in ffmpeg file-index order.
    pub fn new(inputs: Vec<IoRef>, outputs: Vec<IoRef>) -> Self {
        Parser {
            inputs,
            outputs,
            prelude: Prelude::default(),
            prelude_done: false,
            stats: Stats::default(),
            frames: Rate::default(),
            size: Rate::default(),
        }
    }

    /// `now_secs` is a monotonic time in seconds (f64) injected for testability.
    pub fn parse_line(&mut self, line: &str, now_secs: f64) -> LineKind {
        let line = strip_level(line);
        if re!(r"^(?:frame=|L?size=)").is_match(line) {
            // The first stats line ends the prelude even if it looked incomplete to us.
            self.prelude_done = true;
            let (st, has_frame) = parse_stats(line);
            let advanced = if has_frame {
                st.frame > self.stats.frame
            } else {
                st.size_kb > self.stats.size_kb
            };
            self.frames.push(now_secs, st.frame as f64);
            self.size.push(now_secs, st.size_kb as f64);
            self.stats = st;
            return LineKind::Progress {
                frames_advanced: advanced,
            };
        }
        if !self.prelude_done {
            self.prelude.feed(line);
            self.prelude_done = self.prelude.complete();
        }
        LineKind::Log
    }

    /// True once the prelude (Input/Output/Stream mapping sections) has been seen completely
    /// (first stats line also ends it).
    pub fn prelude_done(&self) -> bool {
        self.prelude_done
    }

    /// Snapshot for the API (ProcessState.progress).
    ///
    /// Stock FFmpeg only reports totals, so: every output video stream gets the total frame
    /// count as frames and packets (and the total fps as fps/pps), the i-th output video stream
    /// gets the i-th `q=` value, and the first output stream carries the size and bitrate
    /// (FFmpeg's size is that of output file 0).
    /// Input stream counters stay 0. Streams are listed only once the prelude is done.
    pub fn progress(&self) -> Progress {
        let st = &self.stats;
        let fps = round3(self.frames.per_sec());
        let bitrate = round3(self.size.per_sec() * 8.0);
        let mut p = Progress {
            frame: st.frame,
            packet: st.frame,
            fps,
            q: st.qs.first().copied().unwrap_or(0.0),
            size_kb: st.size_kb,
            time: round3(st.time),
            bitrate_kbit: bitrate,
            speed: round3(st.speed),
            drop: st.drop,
            dup: st.dup,
            ..Default::default()
        };
        if !self.prelude_done {
            return p;
        }
        let pre = &self.prelude;
        p.inputs = pre
            .in_streams
            .iter()
            .map(|s| io_entry(s, &self.inputs, &pre.in_files, &pre.decoders))
            .collect();
        // Output headers are printed as muxers get ready (not in file order), while the stats
        // line lists q values in file/stream order and its size is that of output file 0.
        let mut outs: Vec<&StreamInfo> = pre.out_streams.iter().collect();
        outs.sort_by_key(|s| (s.file, s.index));
        let mut video_no = 0;
        for (i, s) in outs.into_iter().enumerate() {
            let mut io = io_entry(s, &self.outputs, &pre.out_files, &pre.encoders);
            if s.kind == "video" {
                (io.frame, io.packet, io.fps, io.pps) = (st.frame, st.frame, fps, fps);
                io.q = st.qs.get(video_no).copied();
                video_no += 1;
            }
            if i == 0 {
                (io.size_kb, io.bitrate_kbit) = (st.size_kb, bitrate);
            }
            p.outputs.push(io);
        }
        p
    }
}

fn io_entry(
    s: &StreamInfo,
    refs: &[IoRef],
    files: &[FileInfo],
    coders: &[(u64, u64, String)],
) -> ProgressIo {
    let file = files.iter().find(|f| f.index == s.file);
    let r = usize::try_from(s.file).ok().and_then(|i| refs.get(i));
    let address = match r {
        Some(r) if !r.address.is_empty() => r.address.clone(),
        _ => file.map(|f| f.url.clone()).unwrap_or_default(),
    };
    let coder = coders
        .iter()
        .find(|(f, i, c)| *f == s.file && *i == s.index && !c.is_empty())
        .map_or_else(|| s.codec.clone(), |(_, _, c)| c.clone());
    ProgressIo {
        id: r.map(|r| r.id.clone()).unwrap_or_default(),
        address,
        index: s.file,
        stream: s.index,
        format: file.map(|f| f.format.clone()).unwrap_or_default(),
        r#type: s.kind.clone(),
        codec: s.codec.clone(),
        coder,
        pix_fmt: s.pix_fmt.clone(),
        width: s.width,
        height: s.height,
        sampling_hz: s.sampling_hz,
        layout: s.layout.clone(),
        channels: s.channels,
        ..Default::default()
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
    let streams = pre
        .in_streams
        .iter()
        .map(|s| {
            let file = pre
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
            }
        })
        .collect();
    Probe { streams, log }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real FFmpeg 5.1.x stderr (Debian 12); stats lines are separated by '\r' like on the pipe.
    const TRANSCODE: &str = "Input #0, lavfi, from 'testsrc=size=320x240:rate=25':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 320x240 [SAR 1:1 DAR 4:3], 25 tbr, 25 tbn
Input #1, lavfi, from 'sine=frequency=440:sample_rate=48000':
  Duration: N/A, start: 0.000000, bitrate: 768 kb/s
  Stream #1:0: Audio: pcm_s16le, 48000 Hz, mono, s16, 768 kb/s
Stream mapping:
  Stream #0:0 -> #0:0 (rawvideo (native) -> h264 (libx264))
  Stream #1:0 -> #0:1 (pcm_s16le (native) -> aac (native))
Press [q] to stop, [?] for help
[libx264 @ 0x5622f5122b80] using SAR=1/1
Output #0, mpegts, to '/tmp/x.ts':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264, yuv444p(tv, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 90k tbn
    Metadata:
      encoder         : Lavc59.37.100 libx264
    Side data:
      cpb: bitrate max/min/avg: 0/0/0 buffer size: 0 vbv_delay: N/A
  Stream #0:1: Audio: aac (LC), 48000 Hz, mono, fltp, 69 kb/s
    Metadata:
      encoder         : Lavc59.37.100 aac
frame=    1 fps=0.0 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   13 fps=0.0 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   26 fps= 26 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   38 fps= 25 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   51 fps= 25 q=28.0 size=       6kB time=00:00:00.06 bitrate= 775.5kbits/s speed=0.0318x    \rframe=   63 fps= 25 q=28.0 size=      14kB time=00:00:00.55 bitrate= 206.1kbits/s speed=0.22x    \rframe=   75 fps= 25 q=28.0 size=      25kB time=00:00:02.19 bitrate=  93.8kbits/s speed=0.728x    \rframe=   75 fps= 25 q=-1.0 Lsize=      64kB time=00:00:03.00 bitrate= 173.0kbits/s speed=0.987x    
video:16kB audio:26kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 53.719635%
";

    const MULTI_OUTPUT_TAGGED: &str = "[info] Input #0, lavfi, from 'testsrc=size=320x240:rate=25':
[info]   Duration: N/A, start: 0.000000, bitrate: N/A
[info]   Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 320x240 [SAR 1:1 DAR 4:3], 25 tbr, 25 tbn
[info] Input #1, lavfi, from 'sine':
[info]   Duration: N/A, start: 0.000000, bitrate: 705 kb/s
[info]   Stream #1:0: Audio: pcm_s16le, 44100 Hz, mono, s16, 705 kb/s
[info] Stream mapping:
[info]   Stream #0:0 -> #0:0 (rawvideo (native) -> h264 (libx264))
[info]   Stream #1:0 -> #0:1 (pcm_s16le (native) -> aac (native))
[info]   Stream #0:0 -> #1:0 (rawvideo (native) -> mpeg4 (native))
[info] Output #1, null, to 'pipe:':
[info]   Metadata:
[info]     encoder         : Lavf59.27.100
[info]   Stream #1:0: Video: mpeg4, yuv420p(tv, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 200 kb/s, 25 fps, 25 tbn
[info]     Metadata:
[info]       encoder         : Lavc59.37.100 mpeg4
[info]     Side data:
[info]       cpb: bitrate max/min/avg: 0/0/200000 buffer size: 0 vbv_delay: N/A
[info] Output #0, mpegts, to '/tmp/o1.ts':
[info]   Metadata:
[info]     encoder         : Lavf59.27.100
[info]   Stream #0:0: Video: h264, yuv444p(tv, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 90k tbn
[info]     Metadata:
[info]       encoder         : Lavc59.37.100 libx264
[info]     Side data:
[info]       cpb: bitrate max/min/avg: 0/0/0 buffer size: 0 vbv_delay: N/A
[info]   Stream #0:1: Audio: aac (LC), 44100 Hz, mono, fltp, 69 kb/s
[info]     Metadata:
[info]       encoder         : Lavc59.37.100 aac
[info] frame=    1 fps=0.0 q=0.0 q=4.7 size=       0kB time=00:00:00.04 bitrate=   0.0kbits/s speed=5.98x    \r[info] frame=   25 fps=0.0 q=-1.0 Lq=1.6 size=      24kB time=00:00:01.02 bitrate= 192.8kbits/s speed=16.4x    
[info] video:54kB audio:9kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
";

    const FILTER_COMPLEX: &str = "Input #0, lavfi, from 'testsrc=size=320x240:rate=25':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 320x240 [SAR 1:1 DAR 4:3], 25 tbr, 25 tbn
Input #1, lavfi, from 'testsrc2=size=160x120:rate=25':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #1:0: Video: rawvideo (I420 / 0x30323449), yuv420p, 160x120 [SAR 1:1 DAR 4:3], 25 tbr, 25 tbn
Stream mapping:
  Stream #0:0 (rawvideo) -> overlay
  Stream #1:0 (rawvideo) -> overlay
  overlay:default -> Stream #0:0 (libx264)
Output #0, mpegts, to '/tmp/fc.ts':
  Stream #0:0: Video: h264, yuv420p(tv, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 90k tbn
frame=    1 fps=0.0 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   25 fps=0.0 q=-1.0 Lsize=      30kB time=00:00:00.88 bitrate= 275.2kbits/s speed=20.9x    
video:22kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 31.537090%
";

    const COPY_TWO_OUTPUTS: &str = "Input #0, mpegts, from '/tmp/x.ts':
  Duration: 00:00:03.02, start: 1.458667, bitrate: 172 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
Output #0, mpegts, to '/tmp/c1.ts':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 25 tbr, 90k tbn
  Stream #0:1: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
Output #1, null, to 'pipe:':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #1:0: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 25 tbr, 90k tbn
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
  Stream #0:1 -> #0:1 (copy)
  Stream #0:0 -> #1:0 (copy)
Press [q] to stop, [?] for help
frame=    1 fps=0.0 q=-1.0 q=-1.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=N/A    \rframe=   75 fps=0.0 q=-1.0 Lq=-1.0 size=      64kB time=00:00:03.02 bitrate= 171.8kbits/s speed=5.86e+03x    
video:32kB audio:27kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 8.058541%
";

    const AUDIO_ONLY: &str = "Input #0, mpegts, from '/tmp/x.ts':
  Duration: 00:00:03.02, start: 1.458667, bitrate: 172 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
Stream mapping:
  Stream #0:1 -> #0:0 (aac (native) -> mp3 (libmp3lame))
Press [q] to stop, [?] for help
Output #0, mp3, to '/tmp/a.mp3':
  Metadata:
    TSSE            : Lavf59.27.100
  Stream #0:0: Audio: mp3, 48000 Hz, mono, fltp
    Metadata:
      encoder         : Lavc59.37.100 libmp3lame
size=       0kB time=00:00:00.00 bitrate=N/A speed=N/A    \rsize=      24kB time=00:00:03.04 bitrate=  65.1kbits/s speed= 312x    
video:0kB audio:24kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 0.964355%
";

    const PROBE_TS: &str = "Input #0, mpegts, from '/tmp/x.ts':
  Duration: 00:00:03.02, start: 1.458667, bitrate: 172 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
At least one output file must be specified
";

    const PROBE_MKV: &str = "Input #0, matroska,webm, from '/tmp/l.mkv':
  Metadata:
    ENCODER         : Lavf59.27.100
  Duration: 00:00:03.03, start: 0.000000, bitrate: 119 kb/s
  Stream #0:0: Video: h264 (High 4:4:4 Predictive), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 1k tbn
    Metadata:
      DURATION        : 00:00:03.021000000
  Stream #0:1(eng): Audio: aac (LC), 48000 Hz, mono, fltp
    Metadata:
      DURATION        : 00:00:03.029000000
At least one output file must be specified
";

    /// Feeds `text` split like the supervisor does, one line every `dt` seconds.
    fn feed(p: &mut Parser, text: &str, dt: f64) -> Vec<LineKind> {
        let lines = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty());
        lines
            .enumerate()
            .map(|(i, l)| p.parse_line(l, i as f64 * dt))
            .collect()
    }

    fn refs(n: usize, prefix: &str) -> Vec<IoRef> {
        let io = |i| IoRef {
            id: format!("{prefix}{i}"),
            address: format!("addr-{prefix}{i}"),
        };
        (0..n).map(io).collect()
    }

    fn progress_lines(kinds: &[LineKind]) -> usize {
        kinds
            .iter()
            .filter(|k| matches!(k, LineKind::Progress { .. }))
            .count()
    }

    /// Feeds the lines before the first stats line, checking that they complete the prelude.
    fn feed_prelude(p: &mut Parser, text: &str) -> usize {
        let end = text.find("frame=").unwrap();
        let end = text[..end].rfind('\n').unwrap() + 1;
        assert!(progress_lines(&feed(p, &text[..end], 0.0)) == 0 && p.prelude_done());
        end
    }

    #[test]
    fn transcode() {
        let mut p = Parser::new(refs(2, "in"), refs(1, "out"));
        let end = feed_prelude(&mut p, TRANSCODE);
        assert_eq!(progress_lines(&feed(&mut p, &TRANSCODE[end..], 0.5)), 8);
        let pr = p.progress();
        assert_eq!(
            (pr.frame, pr.packet, pr.size_kb, pr.time, pr.q),
            (75, 75, 64, 3.0, -1.0)
        );
        assert!(pr.speed > 0.9 && pr.fps > 0.0 && pr.bitrate_kbit > 0.0);
        assert_eq!(pr.inputs.len(), 2);
        let v = &pr.inputs[0];
        assert_eq!(
            (v.id.as_str(), v.address.as_str(), v.format.as_str()),
            ("in0", "addr-in0", "lavfi")
        );
        assert_eq!(
            (v.r#type.as_str(), v.codec.as_str(), v.coder.as_str()),
            ("video", "rawvideo", "rawvideo")
        );
        assert_eq!(
            (v.pix_fmt.as_str(), v.width, v.height, v.frame),
            ("rgb24", 320, 240, 0)
        );
        let a = &pr.inputs[1];
        assert_eq!(
            (a.index, a.stream, a.id.as_str(), a.codec.as_str()),
            (1, 0, "in1", "pcm_s16le")
        );
        assert_eq!(
            (a.sampling_hz, a.layout.as_str(), a.channels),
            (48000, "mono", 1)
        );
        assert_eq!(pr.outputs.len(), 2);
        let ov = &pr.outputs[0];
        assert_eq!(
            (ov.id.as_str(), ov.codec.as_str(), ov.coder.as_str()),
            ("out0", "h264", "libx264")
        );
        assert_eq!(
            (ov.frame, ov.packet, ov.size_kb, ov.q),
            (75, 75, 64, Some(-1.0))
        );
        assert_eq!((ov.fps, ov.bitrate_kbit), (pr.fps, pr.bitrate_kbit));
        let oa = &pr.outputs[1];
        assert_eq!(
            (oa.r#type.as_str(), oa.codec.as_str(), oa.coder.as_str()),
            ("audio", "aac", "aac")
        );
        assert_eq!((oa.frame, oa.size_kb, oa.q), (0, 0, None));
    }

    #[test]
    fn level_tagged_outputs_out_of_order() {
        let mut p = Parser::new(refs(2, "in"), refs(2, "out"));
        let end = feed_prelude(&mut p, MULTI_OUTPUT_TAGGED);
        let kinds = feed(&mut p, &MULTI_OUTPUT_TAGGED[end..], 1.0);
        let advanced = LineKind::Progress {
            frames_advanced: true,
        };
        assert_eq!(kinds, [advanced, advanced, LineKind::Log]);
        let pr = p.progress();
        assert_eq!((pr.frame, pr.size_kb, pr.q, pr.speed), (25, 24, -1.0, 16.4));
        assert_eq!(pr.inputs[1].sampling_hz, 44100);
        let outs = pr.outputs.iter().map(|o| {
            (
                o.id.as_str(),
                o.stream,
                o.coder.as_str(),
                o.q,
                o.frame,
                o.size_kb,
            )
        });
        assert_eq!(
            outs.collect::<Vec<_>>(),
            [
                ("out0", 0, "libx264", Some(-1.0), 25, 24),
                ("out0", 1, "aac", None, 0, 0),
                ("out1", 0, "mpeg4", Some(1.6), 25, 0)
            ]
        );
    }

    #[test]
    fn filter_complex_mapping() {
        let mut p = Parser::new(refs(2, "in"), refs(1, "out"));
        let end = feed_prelude(&mut p, FILTER_COMPLEX);
        feed(&mut p, &FILTER_COMPLEX[end..], 1.0);
        let pr = p.progress();
        assert_eq!(
            (pr.inputs.len(), pr.inputs[1].pix_fmt.as_str()),
            (2, "yuv420p")
        );
        assert_eq!((pr.outputs[0].coder.as_str(), pr.frame), ("libx264", 25));
    }

    #[test]
    fn copy_to_two_outputs() {
        let mut p = Parser::new(refs(1, "in"), refs(2, "out"));
        let kinds = feed(&mut p, COPY_TWO_OUTPUTS, 0.5);
        assert_eq!(progress_lines(&kinds), 2);
        assert_eq!(kinds[0], LineKind::Log);
        let pr = p.progress();
        assert_eq!(pr.inputs.len(), 2);
        assert_eq!(
            pr.inputs[0].coder, "h264",
            "copy keeps the input's codec as coder"
        );
        let outs: Vec<_> = pr
            .outputs
            .iter()
            .map(|o| (o.id.as_str(), o.index, o.coder.as_str(), o.q))
            .collect();
        assert_eq!(
            outs,
            [
                ("out0", 0, "copy", Some(-1.0)),
                ("out0", 0, "copy", None),
                ("out1", 1, "copy", Some(-1.0))
            ]
        );
        assert_eq!(pr.outputs[2].address, "addr-out1");
        assert_eq!(pr.speed, 5860.0);

        // Outputs precede the mapping here, so the line after the mapping completes the prelude.
        let mut p = Parser::new(vec![], vec![]);
        let press = COPY_TWO_OUTPUTS.find("Press [q]").unwrap();
        feed(&mut p, &COPY_TWO_OUTPUTS[..press], 0.1);
        assert!(!p.prelude_done());
        p.parse_line("Press [q] to stop, [?] for help", 1.0);
        assert!(p.prelude_done());
        assert_eq!(
            p.progress().outputs[2].address,
            "pipe:",
            "falls back to the printed url"
        );
    }

    #[test]
    fn audio_only_uses_size_for_progress() {
        let mut p = Parser::new(refs(1, "in"), refs(1, "out"));
        let kinds = feed(&mut p, AUDIO_ONLY, 1.0);
        let adv = kinds.iter().filter_map(|k| match k {
            LineKind::Progress { frames_advanced } => Some(*frames_advanced),
            LineKind::Log => None,
        });
        assert_eq!(adv.collect::<Vec<_>>(), [false, true]);
        let pr = p.progress();
        let o = &pr.outputs[0];
        assert_eq!(
            (o.codec.as_str(), o.coder.as_str(), o.size_kb, o.frame),
            ("mp3", "libmp3lame", 24, 0)
        );
        assert_eq!(pr.inputs[1].coder, "aac");
        assert_eq!(pr.bitrate_kbit, 192.0, "24 kB in 1 s");
        assert_eq!((pr.time, pr.speed), (3.04, 312.0));
    }

    fn stats(frame: u64, size: u64) -> String {
        format!("frame={frame:5} fps= 25 q=28.0 size={size:8}kB time=00:00:01.00 bitrate= 100.0kbits/s speed=1x    ")
    }

    #[test]
    fn moving_average_rates() {
        let mut p = Parser::new(vec![], vec![]);
        assert_eq!((p.progress().fps, p.progress().bitrate_kbit), (0.0, 0.0));
        assert!(!p.prelude_done() && p.progress().outputs.is_empty());
        p.parse_line(&stats(0, 0), 10.0);
        assert_eq!(p.progress().fps, 0.0, "one sample has no rate");
        p.parse_line(&stats(5, 2), 10.2);
        assert_eq!(p.progress().fps, 25.0, "short history uses what exists");
        for i in 1..=120 {
            let t = i as f64 * 0.5;
            p.parse_line(&stats((t * 25.0) as u64, (t * 10.0) as u64), 10.0 + t);
        }
        let pr = p.progress();
        assert!((pr.fps - 25.0).abs() < 0.01, "fps {}", pr.fps);
        assert!(
            (pr.bitrate_kbit - 80.0).abs() < 0.01,
            "bitrate {}",
            pr.bitrate_kbit
        );
        assert!(p.frames.samples.len() <= 32);

        // A stall decays the average to 0 and never reports progress.
        for i in 1..=70 {
            let k = p.parse_line(&stats(1500, 600), 70.0 + i as f64 * 0.5);
            assert_eq!(
                k,
                LineKind::Progress {
                    frames_advanced: false
                }
            );
        }
        assert_eq!(p.progress().fps, 0.0);
        // A clock going backwards restarts the window instead of going negative.
        p.parse_line(&stats(1600, 700), 1.0);
        assert_eq!(p.progress().fps, 0.0);
    }

    #[test]
    fn stats_values() {
        let mut p = Parser::new(vec![], vec![]);
        let l = "[warning] frame=  100 fps= 25 q=28.0 size=N/A time=-00:00:01.50 bitrate=N/A dup=3 drop=7 speed=N/A";
        assert_eq!(
            p.parse_line(l, 0.0),
            LineKind::Progress {
                frames_advanced: true
            }
        );
        let pr = p.progress();
        assert_eq!(
            (pr.frame, pr.size_kb, pr.time, pr.dup, pr.drop, pr.speed),
            (100, 0, -1.5, 3, 7, 0.0)
        );
        p.parse_line("size=    1024KiB time=N/A bitrate=N/A speed=1.5x", 1.0);
        assert_eq!(
            (p.progress().size_kb, p.progress().time, p.progress().speed),
            (1024, 0.0, 1.5)
        );
        assert_eq!(parse_time("123:04:05.5"), 123.0 * 3600.0 + 245.5);
        let ch: Vec<_> = ["mono", "stereo", "5.1(side)", "7.1", "3 channels", "x"]
            .map(channels)
            .into();
        assert_eq!(ch, [1, 2, 6, 8, 3, 0]);
    }

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
    fn serialization_shape() {
        let mut p = Parser::new(refs(2, "in"), refs(1, "out"));
        feed(&mut p, TRANSCODE, 0.5);
        let j = serde_json::to_value(p.progress()).unwrap();
        let audio = &j["outputs"][1];
        assert_eq!(audio["type"], "audio");
        assert!(audio["avstream"].is_null() && audio.get("avstream").is_some());
        for k in ["pix_fmt", "q", "width", "height"] {
            assert!(audio.get(k).is_none(), "{k}");
        }
        assert_eq!(j["outputs"][0]["pix_fmt"], "yuv444p");
        assert!(j["outputs"][0].get("sampling_hz").is_none());
        assert_eq!(
            j["outputs"][0]["framerate"],
            serde_json::json!({"min": 0.0, "max": 0.0, "avg": 0.0})
        );

        let empty = serde_json::to_value(Progress::default()).unwrap();
        assert_eq!(
            (empty["inputs"].clone(), empty["outputs"].clone()),
            (serde_json::json!([]), serde_json::json!([]))
        );
        let probe = serde_json::to_value(Probe::default()).unwrap();
        assert_eq!(probe, serde_json::json!({"streams": [], "log": []}));
        let schema = serde_json::to_string(&<ProgressIo as utoipa::PartialSchema>::schema());
        assert!(schema.unwrap().contains("\"avstream\""));
        let io = serde_json::to_value(ProbeIo::default()).unwrap();
        assert_eq!(io.as_object().unwrap().len(), 17);
        assert!(io.get("type").is_some());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut lines: Vec<String> = vec![
            "frame=99999999999999999999999 fps=nan q=nan size=-5kB time=99:99:99.99 speed=infx drop=-1".into(),
            "size=1e400kB time=-:-:- speed=1e308x q=1e308".into(),
            "Input #99999999999999999999, x, from 'y':".into(),
            "  Stream #0:0: Video: ,,,,((((]]]], 99999999999999999999x5, 1e999 fps".into(),
            "  Stream #0:0(): Audio: , 99999999999999999999999 Hz".into(),
            "Stream mapping:".into(),
            "  Stream #0:0 -> #0:0 ((((".into(),
            "  Stream #0:0 -> #9:9 (a (b) -> c (d))".into(),
            "  overlay -> Stream #0:0 (libx264)".into(),
            "Output #0, , to '':".into(),
            "  Stream #0:0: Vidéo: ü, ñ, 320×240 ✓".into(),
            "[info] ".into(),
            "[libx264 @ 0x55] [info] frame I:1".into(),
            "x".repeat(1 << 20),
            format!("frame={}", "9".repeat(100_000)),
        ];
        for sample in [TRANSCODE, COPY_TWO_OUTPUTS, AUDIO_ONLY, PROBE_MKV] {
            for l in sample.split(['\r', '\n']) {
                let cut = (rnd() as usize) % (l.len() + 1);
                lines.push(
                    l.char_indices()
                        .take_while(|(i, _)| *i < cut)
                        .map(|(_, c)| c)
                        .collect(),
                );
            }
        }
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..rnd() % 200).map(|_| (rnd() % 256) as u8).collect();
            lines.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        let mut p = Parser::new(refs(1, "in"), vec![]);
        for (i, l) in lines.iter().enumerate() {
            p.parse_line(l, i as f64 * 0.01);
            let pr = p.progress();
            let floats = [pr.fps, pr.q, pr.time, pr.bitrate_kbit, pr.speed];
            assert!(floats.iter().all(|f| f.is_finite()), "line {i}: {floats:?}");
        }
        p.parse_line("frame=1", f64::NAN);
        serde_json::to_string(&p.progress()).unwrap();
        serde_json::to_string(&parse_probe(&lines.join("\n"))).unwrap();
    }
}
