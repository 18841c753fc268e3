//! What tests/sources.rs needs around a source: fixture clips of every common codec pair encoded
//! once per test binary with the real FFmpeg, feeders that play a live sender (an FFmpeg pushing
//! RTMP/SRT/RTSP/UDP, a GStreamer RTSP camera), a WHEP connect that reports instead of panicking,
//! and the checks that a process's own output keeps making progress.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::media::{clip, encode};
use super::whep::{self, OfferOptions, Receiver};
use super::TestServer;

/// Length of every fixture clip; inputs loop it (`-stream_loop -1`).
const CLIP_SECONDS: u32 = 4;

/// The fixture clips, encoded once per test binary in a directory of their own (link one into a
/// server's data directory with `media::shared_into`).
pub fn fixture(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir").keep());
    // Rows start concurrently; one encoder at a time keeps two rows from writing one file.
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    make_fixture(dir, name)
}

fn make_fixture(dir: &Path, name: &str) -> PathBuf {
    let s = CLIP_SECONDS;
    let x264 = "-c:v libx264 -preset veryfast -pix_fmt yuv420p -g 30";
    match name {
        "h264_high_aac.mp4" => clip(
            dir,
            name,
            "640x360",
            s,
            &format!("{x264} -profile:v high -bf 3 -c:a aac -b:a 96k"),
        ),
        "h264_opus.mkv" => clip(
            dir,
            name,
            "320x240",
            s,
            &format!("{x264} -profile:v main -c:a libopus -b:a 64k"),
        ),
        "hevc_aac.mp4" => clip(
            dir,
            name,
            "320x240",
            s,
            "-c:v libx265 -preset ultrafast -x265-params log-level=error -g 30 -pix_fmt yuv420p \
             -tag:v hvc1 -c:a aac",
        ),
        "vp8_vorbis.webm" => clip(
            dir,
            name,
            "320x240",
            s,
            "-c:v libvpx -deadline realtime -cpu-used 8 -b:v 500k -g 30 -c:a libvorbis",
        ),
        "vp9_opus.webm" => clip(
            dir,
            name,
            "320x240",
            s,
            "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 500k -g 30 -c:a libopus",
        ),
        // Broadcast TS: MPEG-2 video in CIF with MPEG-1 layer II audio.
        "mpeg2_mp2.ts" => clip(
            dir,
            name,
            "352x288",
            s,
            "-c:v mpeg2video -b:v 1M -g 15 -c:a mp2 -b:a 128k -f mpegts",
        ),
        "aac_only.m4a" => clip(dir, name, "320x240", s, "-vn -c:a aac -b:a 96k"),
        "mp3_only.mp3" => clip(dir, name, "320x240", s, "-vn -c:a libmp3lame -b:a 128k"),
        "video_only.mp4" => clip(
            dir,
            name,
            "320x240",
            s,
            &format!("{x264} -profile:v baseline -bf 0 -an"),
        ),
        // Codecs in containers the old extension rules misread (issue 10): raw video and PCM in
        // NUT (a capture recorded as is), VP9 in Matroska, H.264 + AAC in Matroska named .webm.
        "rawvideo_pcm.nut" => clip(
            dir,
            name,
            "320x240",
            2,
            "-c:v rawvideo -pix_fmt yuv420p -c:a pcm_s16le -ac 1",
        ),
        "vp9_opus.mkv" => clip(
            dir,
            name,
            "320x240",
            s,
            "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 500k -g 30 -c:a libopus",
        ),
        "h264_aac_matroska.webm" => clip(
            dir,
            name,
            "320x240",
            s,
            &format!("{x264} -profile:v main -c:a aac -b:a 96k -f matroska"),
        ),
        // WebM/Ogg with one medium: a per-medium leg for the missing one would fail FFmpeg.
        "vp8_only.webm" => clip(
            dir,
            name,
            "320x240",
            s,
            "-an -c:v libvpx -deadline realtime -cpu-used 8 -b:v 500k -g 30",
        ),
        "vorbis_only.ogg" => clip(dir, name, "320x240", s, "-vn -c:a libvorbis"),
        "opus_only.webm" => clip(dir, name, "320x240", s, "-vn -c:a libopus -b:a 64k"),
        // What the live senders push: H.264 constrained baseline + AAC, as encoders send it.
        "live.mp4" => clip(
            dir,
            name,
            "320x240",
            s,
            &format!("{x264} -profile:v baseline -bf 0 -c:a aac -b:a 96k"),
        ),
        // A capture device's output, as FFmpeg reads a raw capture: headerless I420 frames and
        // headerless PCM, two inputs with their formats given (2 s; 320x240 I420 is 3.5 MB/s).
        "raw.yuv" => clip(
            dir,
            name,
            "320x240",
            2,
            "-an -c:v rawvideo -pix_fmt yuv420p -f rawvideo",
        ),
        "raw.pcm" => clip(
            dir,
            name,
            "320x240",
            2,
            "-vn -c:a pcm_s16le -ar 48000 -ac 1 -f s16le",
        ),
        "lipsync.mkv" => lipsync_clip(dir, name, 0, 4, H264_OPUS),
        // WebM takes the per-medium RTP legs; Vorbis is encoded to Opus by the leg.
        "lipsync.webm" => lipsync_clip(dir, name, 0, 4, VP8_VORBIS),
        // For the meter's self-test, played once (not looped): in sync, and with the tone 100 ms
        // after the flash.
        "lipsync_12s.mkv" => lipsync_clip(dir, name, 0, 12, H264_OPUS),
        "lipsync_late100_12s.mkv" => lipsync_clip(dir, name, 100, 12, H264_OPUS),
        other => panic!("no fixture {other}"),
    }
}

/// H.264 constrained baseline (1 s GOP) + Opus.
const H264_OPUS: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-profile:v",
    "baseline",
    "-bf",
    "0",
    "-g",
    "30",
    "-c:a",
    "libopus",
    "-b:a",
    "96k",
];
/// VP8 (1 s GOP) + Vorbis, as a WebM file.
const VP8_VORBIS: &[&str] = &[
    "-c:v",
    "libvpx",
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-b:v",
    "500k",
    "-g",
    "30",
    "-c:a",
    "libvorbis",
    "-b:a",
    "96k",
];

/// The lip-sync source: black 320x240 at 30 fps with a white frame for the first 100 ms of every
/// second, and a 1 kHz tone for exactly those 100 ms (silence otherwise; `audio_late_ms` later
/// for the meter's self-test), encoded with `codecs`. Flash and beep start on the same instant: a
/// frame boundary (t = k s at 30 fps) and a sample boundary.
fn lipsync_clip(
    dir: &Path,
    name: &str,
    audio_late_ms: u32,
    seconds: u32,
    codecs: &[&str],
) -> PathBuf {
    let seconds = seconds.to_string();
    let tone = format!(
        "aevalsrc='if(lt(mod(t-{late}\\,1)\\,0.1)\\,0.5*sin(2*PI*1000*t)\\,0)':s=48000:c=stereo",
        late = audio_late_ms as f64 / 1000.0
    );
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=320x240:r=30,format=yuv420p,\
         drawbox=c=white:t=fill:enable='lt(mod(t\\,1)\\,0.1)'",
        "-f",
        "lavfi",
        "-i",
        &tone,
        "-t",
        &seconds,
    ];
    args.extend_from_slice(codecs);
    encode(dir, name, &args)
}

/// A free loopback TCP port (bound and released; the OS hands out ports round-robin).
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A free loopback UDP port.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// A live sender: a command run again and again (a pusher whose listener is not up yet exits, as
/// a real encoder retrying would) until the feeder is dropped.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    /// Runs `program args` until dropped, 300 ms between runs.
    pub fn start(program: &str, args: Vec<String>) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let (s, c, program) = (stop.clone(), child.clone(), program.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let spawned = Command::new(&program)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn feeder");
                *c.lock().unwrap() = Some(spawned);
                loop {
                    let mut guard = c.lock().unwrap();
                    match guard.as_mut().map(|ch| ch.try_wait()) {
                        Some(Ok(None)) => {}
                        _ => break,
                    }
                    drop(guard);
                    if s.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Feeder {
            stop,
            child,
            thread: Some(thread),
        }
    }

    /// An FFmpeg playing `file` in real time, looped, with `output` arguments (format and URL).
    pub fn ffmpeg(file: &Path, output: &[&str]) -> Feeder {
        let mut args: Vec<String> = [
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(file.to_string_lossy().into_owned());
        args.extend(["-c", "copy"].iter().map(|s| s.to_string()));
        args.extend(output.iter().map(|s| s.to_string()));
        Feeder::start("ffmpeg", args)
    }

    /// An RTSP camera stand-in (gst-rtsp-server): `rtsp://127.0.0.1:{port}/cam` serves live
    /// 320x240 25 fps H.264 + AAC, as IP cameras do.
    pub fn rtsp_camera(port: u16) -> Feeder {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rtsp_camera.py");
        Feeder::start(
            // The system interpreter: PyGObject comes from Debian's python3-gi.
            "/usr/bin/python3",
            vec![script.to_string_lossy().into_owned(), port.to_string()],
        )
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The thread may have spawned a last child between the take and its stop check.
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// POSTs an offer until the stream accepts viewers (409 + Retry-After means "no media yet"),
/// within `timeout`; the error says what the server answered last.
pub async fn try_connect(
    server: &TestServer,
    id: &str,
    opts: &OfferOptions,
    timeout: Duration,
) -> Result<Receiver, String> {
    let url = server.url(&format!("/whep/{id}"));
    let deadline = Instant::now() + timeout;
    loop {
        let o = opts.clone();
        let (rx, offer) = tokio::task::spawn_blocking(move || Receiver::new(&o))
            .await
            .unwrap();
        let (status, _, body) = whep::post_offer(&server.http, &url, None, &offer).await;
        if status == reqwest::StatusCode::CREATED {
            rx.set_answer(&body)
                .map_err(|e| format!("answer not applied: {e}"))?;
            return Ok(rx);
        }
        if status != reqwest::StatusCode::CONFLICT || Instant::now() >= deadline {
            return Err(format!("WHEP POST answered {status}: {}", body.trim()));
        }
        drop(rx);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls `pred` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a process's own output shows that it is making progress.
#[derive(Debug, Clone)]
pub enum OwnOutput {
    /// `progress.frame` (the first output's video frames) grows.
    Frames,
    /// The file `public/{name}` grows.
    File(String),
    /// The HLS playlist `public/{name}.m3u8` names ever newer segments.
    Hls(String),
}

impl OwnOutput {
    /// A number that grows while the output makes progress.
    pub async fn sample(&self, server: &TestServer, id: &str) -> u64 {
        let public = server.data_dir.join("public");
        match self {
            OwnOutput::Frames => server.state(id).await["progress"]["frame"]
                .as_u64()
                .unwrap_or(0),
            OwnOutput::File(name) => std::fs::metadata(public.join(name))
                .map(|m| m.len())
                .unwrap_or(0),
            OwnOutput::Hls(name) => {
                std::fs::read_to_string(public.join(format!("{name}.m3u8")))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    // +1 so that a playlist at sequence 0 counts as more than none.
                    .map_or(0, |n| n + 1)
            }
        }
    }

    /// What it measures, for the report.
    pub fn describe(&self) -> String {
        match self {
            OwnOutput::Frames => "progress.frame".into(),
            OwnOutput::File(name) => format!("size of {name}"),
            OwnOutput::Hls(name) => format!("media sequence of {name}.m3u8"),
        }
    }
}

/// `kind codec→output path` for each track of `GET /api/v3/process/{id}/webrtc`.
pub fn paths(info: &Value) -> String {
    let Some(tracks) = info["tracks"].as_array() else {
        return format!("? ({info})");
    };
    if tracks.is_empty() {
        return "no tracks".into();
    }
    tracks
        .iter()
        .map(|t| {
            let codec = t["codec"].as_str().unwrap_or("?");
            let out = t["output_codec"].as_str().unwrap_or("-");
            let path = t["path"].as_str().unwrap_or("?");
            let kind = t["kind"].as_str().unwrap_or("?");
            let mut s = if codec.eq_ignore_ascii_case(out) {
                format!("{kind} {codec} {path}")
            } else {
                format!("{kind} {codec}→{out} {path}")
            };
            if path == "unsupported" {
                s += &format!(" ({})", t["reason"].as_str().unwrap_or(""));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(w, h)` scaled down to fit `max` keeping the aspect ratio, with even sides (what a transcode
/// branch capped at `max` delivers).
pub fn fit(size: (i32, i32), max: (i32, i32)) -> (i32, i32) {
    let (w, h) = size;
    if w <= max.0 && h <= max.1 {
        return size;
    }
    let scale = f64::min(max.0 as f64 / w as f64, max.1 as f64 / h as f64);
    let even = |v: f64| ((v / 2.0).round() as i32) * 2;
    (even(w as f64 * scale), even(h as f64 * scale))
}
