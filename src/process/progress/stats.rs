//! The parser of one run's stderr: the prelude until it is complete, then the stats lines
//! (`frame= … size= … time= … speed=`), whose counters become moving-average rates.

use std::collections::VecDeque;
use std::sync::Arc;

use super::prelude::{FileInfo, Prelude, StreamInfo};
use super::types::{ProbeIo, Progress, ProgressIo};
use super::{finite, num, round3, strip_level};

/// Core averages rates over 30 s so a UI does not flicker on every stats line.
const RATE_WINDOW_SECS: f64 = 30.0;
/// One retained sample per second bounds memory to about 31 samples per counter.
const RATE_GRANULARITY_SECS: f64 = 1.0;

/// Bytes an output wrote so far, counted outside FFmpeg.
pub type ByteCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

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

/// Totals from the most recent stats line.
#[derive(Debug, Default, Clone)]
struct Stats {
    frame: u64,
    qs: Vec<f64>,
    size_kb: u64,
    /// False for `size=N/A` (a tee, HLS, segment or null output: no single file has a size).
    size_known: bool,
    time: f64,
    speed: f64,
    drop: u64,
    dup: u64,
}

/// Parses the stats line's `key= value` pairs; missing or `N/A` values stay 0.
fn parse_stats(line: &str) -> (Stats, bool) {
    let mut st = Stats::default();
    let mut has_frame = false;
    for c in re!(r"([[:word:]]+)=[[:space:]]*([^[:space:]]+)").captures_iter(line) {
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
                let number = v.trim_end_matches(|ch: char| ch.is_alphabetic()).parse();
                st.size_known = number.is_ok();
                st.size_kb = number.unwrap_or(0);
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
    match re!(r"^(-?)([0-9]+):([0-9]+):([0-9]+(?:\.[0-9]+)?)$").captures(v) {
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

/// Parses the stderr of one ffmpeg run (one Parser per run).
pub struct Parser {
    inputs: Vec<IoRef>,
    outputs: Vec<IoRef>,
    prelude: Prelude,
    prelude_done: bool,
    stats: Stats,
    frames: Rate,
    size: Rate,
    /// Bytes written outside FFmpeg's view, and the count when this run started.
    written: Option<(ByteCounter, u64)>,
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
            written: None,
        }
    }

    /// Counts `written` (from now on) as the output size when FFmpeg prints none.
    pub fn with_written(mut self, written: Option<ByteCounter>) -> Self {
        self.written = written.map(|count| {
            let start = count();
            (count, start)
        });
        self
    }

    /// `now_secs` is a monotonic time in seconds (f64) injected for testability.
    pub fn parse_line(&mut self, line: &str, now_secs: f64) -> LineKind {
        let line = strip_level(line);
        if re!(r"^(?:frame=|L?size=)").is_match(line) {
            // The first stats line ends the prelude even if it looked incomplete to us.
            self.prelude_done = true;
            let (mut st, has_frame) = parse_stats(line);
            if let (false, Some((count, start))) = (st.size_known, &self.written) {
                st.size_kb = count().saturating_sub(*start) / 1024;
            }
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

    /// The input streams FFmpeg reported, once all inputs were printed (`None` before).
    pub fn reported_inputs(&self) -> Option<Vec<ProbeIo>> {
        self.prelude.inputs(self.inputs.len().max(1))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::progress::parse_probe;

    /// FFmpeg 5.1 with a tee (or HLS) output prints `size=N/A`; the bytes counted outside give
    /// the size and the bitrate.
    #[test]
    fn sizes_come_from_outside_when_ffmpeg_has_none() {
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(5000));
        let counter = bytes.clone();
        let mut p =
            Parser::new(refs(1, "in"), refs(1, "out")).with_written(Some(Arc::new(move || {
                counter.load(std::sync::atomic::Ordering::Relaxed)
            })));
        let lines = [
            "[info] frame=   25 fps= 25 q=17.0 size=N/A time=00:00:01.00 bitrate=N/A speed=   1x    ",
            "[info] frame=   50 fps= 25 q=17.0 size=N/A time=00:00:02.00 bitrate=N/A speed=   1x    ",
        ];
        p.parse_line(lines[0], 1.0);
        bytes.fetch_add(128 * 1024, std::sync::atomic::Ordering::Relaxed);
        p.parse_line(lines[1], 2.0);
        let pr = p.progress();
        assert_eq!(pr.size_kb, 128);
        assert_eq!(pr.bitrate_kbit, 1024.0);
        // A size FFmpeg knows wins.
        p.parse_line("frame=   75 fps= 25 q=17.0 size=      64kB time=00:00:03.00 bitrate= 174.8kbits/s speed=1x", 3.0);
        assert_eq!(p.progress().size_kb, 64);
    }
    use crate::process::progress::samples::*;

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
