//! The WebRTC legs of one process definition, chosen for each run from the codecs FFmpeg
//! reported for its inputs, and the memory of those reports.
//!
//! The codecs come from FFmpeg itself, in the sandbox and with the options the process runs
//! with, so nothing reads what the process could not: from the input prelude every run prints
//! (`Input #0, nut, …` / `Stream #0:0: Video: rawvideo …`), and before the first run of a
//! definition whose inputs are all local regular files, from a bounded probe (`ffmpeg <global
//! options> <inputs>`, the `GET …/probe` command), which opens nothing twice that could notice.
//! Network pulls (HTTP/HLS, RTSP, UDP, `#id:output=` references) are not probed: a second
//! connection costs a camera or origin a session; their first run reports the codecs, and when
//! the legs it started with do not fit them, it is restarted once with legs that do. What was
//! reported is remembered per process, keyed by the global options and inputs, so later runs
//! start right and a changed input is discovered again.
//!
//! Inputs that wait for a publisher (`-listen`, listener modes, `{rtmp}`/`{srt}`, `{whip}`) are
//! neither probed nor restarted: their codecs exist only once a publisher is connected, and a
//! restart would drop it. They keep the rules (and RTMP/SRT-in-TS carry only TS codecs anyway).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};

use super::argv::{self, waits_for_publisher, InputCodecs, LegEncoding, LegFormat};
use super::progress::{IoRef, ProbeIo};
use super::runner::Legs;
use crate::media::{Stream, StreamOptions};
use crate::model::process::{ProcessConfig, ProcessIo};

/// What determines the streams FFmpeg reports: the global options and the inputs.
type Key = (Vec<String>, Vec<ProcessIo>);

fn key(config: &ProcessConfig) -> Key {
    (config.options.clone(), config.input.clone())
}

/// The codecs FFmpeg last reported for each process's inputs.
#[derive(Default)]
pub struct CodecMemory(Mutex<HashMap<String, (Key, InputCodecs)>>);

impl CodecMemory {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Key, InputCodecs)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The codecs reported for this definition's inputs, if they did not change since.
    pub fn get(&self, config: &ProcessConfig) -> Option<InputCodecs> {
        let map = self.map();
        let (k, codecs) = map.get(&config.id)?;
        (*k == key(config)).then(|| codecs.clone())
    }

    fn put(&self, config: &ProcessConfig, codecs: InputCodecs) {
        self.map().insert(config.id.clone(), (key(config), codecs));
    }

    /// Drops what was reported for a deleted process.
    pub fn forget(&self, id: &str) {
        self.map().remove(id);
    }
}

/// The legs of one definition (the runner asks for them before each run).
pub struct WebRtcLegs {
    config: ProcessConfig,
    memory: std::sync::Arc<CodecMemory>,
    encoding: LegEncoding,
    sdp_path: PathBuf,
    ports: (u16, u16),
    stream: Weak<Stream>,
    options: StreamOptions,
    /// Resolved addresses of the inputs.
    inputs: Vec<IoRef>,
    /// An input waits for a publisher: the rules only.
    fixed: bool,
    /// The last run was restarted for its legs; the next report does not restart again.
    restarted: AtomicBool,
}

/// What [`WebRtcLegs`] is made of.
pub struct LegsOf<'a> {
    /// The definition.
    pub config: &'a ProcessConfig,
    /// Its inputs with resolved addresses.
    pub inputs: &'a [IoRef],
    /// What discovery found so far.
    pub memory: std::sync::Arc<CodecMemory>,
    /// Encoders for what must be encoded.
    pub encoding: LegEncoding,
    /// The stream the legs feed.
    pub stream: &'a std::sync::Arc<Stream>,
    /// The stream's options for this definition.
    pub options: StreamOptions,
}

impl WebRtcLegs {
    /// The legs of `of.config`.
    pub fn new(of: LegsOf<'_>) -> WebRtcLegs {
        WebRtcLegs {
            fixed: of.config.input.iter().any(waits_for_publisher),
            config: of.config.clone(),
            memory: of.memory,
            encoding: of.encoding,
            sdp_path: of.stream.sdp_path().to_path_buf(),
            ports: of.stream.ports(),
            stream: std::sync::Arc::downgrade(of.stream),
            options: of.options,
            inputs: of.inputs.to_vec(),
            restarted: AtomicBool::new(false),
        }
    }

    fn known(&self) -> Option<InputCodecs> {
        if self.fixed {
            return None;
        }
        self.memory.get(&self.config)
    }
}

impl Legs for WebRtcLegs {
    fn args(&self) -> Vec<String> {
        argv::webrtc_legs(
            &self.config,
            self.known().as_ref(),
            &self.encoding,
            &self.sdp_path,
            self.ports,
        )
    }

    fn start(&self) -> Vec<String> {
        let known = self.known();
        if let Some(stream) = self.stream.upgrade() {
            let format = argv::leg_format(&self.config, known.as_ref());
            stream.set_options(StreamOptions {
                mpegts: format == LegFormat::MpegTs,
                ..self.options.clone()
            });
        }
        self.args()
    }

    fn wants_probe(&self) -> bool {
        !self.fixed && self.known().is_none() && self.inputs.iter().all(|i| local_file(&i.address))
    }

    fn discovered(&self, streams: &[ProbeIo], used: &[String]) -> bool {
        if self.fixed {
            return false;
        }
        let Some(codecs) = InputCodecs::from_streams(streams) else {
            return false;
        };
        self.memory.put(&self.config, codecs);
        if used.is_empty() || same_but_datagram_size(&self.args(), used) {
            self.restarted.store(false, Ordering::Relaxed);
            return false;
        }
        // At most one restart in a row: a source whose codecs change from run to run keeps the
        // legs of its last report for the next run instead of restarting forever.
        if self.restarted.swap(false, Ordering::Relaxed) {
            return false;
        }
        self.restarted.store(true, Ordering::Relaxed);
        true
    }
}

/// Two command lines that differ at most in the datagram size of a leg: a size learnt from a
/// run's report (a network pull's bitrate) is not worth restarting the run for.
fn same_but_datagram_size(a: &[String], b: &[String]) -> bool {
    fn without_size(arg: &str) -> &str {
        arg.split_once("?pkt_size=").map_or(arg, |(leg, _)| leg)
    }
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| without_size(a) == without_size(b))
}

/// A regular file on this machine (not a device, FIFO or socket, which a probe would read
/// from): the one kind of input a probe opens without anyone noticing. Touches the file
/// system: called off the async workers.
fn local_file(address: &str) -> bool {
    let path = address.strip_prefix("file:").unwrap_or(address);
    path.starts_with('/')
        && !["/dev/", "/proc/", "/sys/"]
            .iter()
            .any(|p| path.starts_with(p))
        && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(address: &str, options: &[&str]) -> ProcessIo {
        ProcessIo {
            address: address.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn inputs_that_wait_for_a_publisher_are_never_restarted() {
        for (address, options) in [
            ("rtmp://0.0.0.0:1935/live/x", &["-listen", "1"][..]),
            ("rtsp://0.0.0.0:8554/live", &["-rtsp_flags", "listen"][..]),
            ("srt://0.0.0.0:9000?mode=listener", &[][..]),
            ("tcp://0.0.0.0:9000?listen", &[][..]),
            (
                "http://0.0.0.0:8080/in.webm",
                &["-listen", "1", "-f", "webm"][..],
            ),
            ("{rtmp,name=x}", &[][..]),
            ("{srt,name=x,mode=request}", &[][..]),
            ("{whip}", &[][..]),
        ] {
            assert!(waits_for_publisher(&io(address, options)), "{address}");
        }
        for (address, options) in [
            ("rtmp://cdn/live/x", &[][..]),
            ("srt://cdn:9000?mode=caller", &[][..]),
            ("udp://127.0.0.1:9000?overrun_nonfatal=1", &[][..]),
            ("https://cdn/x.m3u8?listen=0", &[][..]),
            ("/data/clip.nut", &["-re"][..]),
        ] {
            assert!(!waits_for_publisher(&io(address, options)), "{address}");
        }
    }

    #[test]
    fn a_new_datagram_size_alone_restarts_nothing() {
        let leg = |size: u32| {
            vec![
                "-map".to_string(),
                "0:v:0?".to_string(),
                format!("[f=rtp_mpegts:onfail=ignore]rtp://127.0.0.1:40000?pkt_size={size}"),
            ]
        };
        assert!(same_but_datagram_size(&leg(1328), &leg(4712)));
        let mut other_map = leg(1328);
        other_map[1] = "0:v:1?".to_string();
        assert!(!same_but_datagram_size(&leg(1328), &other_map));
        assert!(!same_but_datagram_size(&leg(1328), &leg(1328)[..2]));
    }

    #[test]
    fn only_regular_local_files_are_probed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.nut");
        std::fs::write(&file, b"x").unwrap();
        let file = file.to_string_lossy().into_owned();
        assert!(local_file(&file));
        assert!(local_file(&format!("file:{file}")));
        for address in [
            dir.path().to_string_lossy().as_ref(),
            "/dev/video0",
            "/dev/stdin",
            "/proc/self/fd/0",
            "testsrc2=size=320x240",
            "hw:0",
            "https://cdn/clip.nut",
            "-",
            "/nonexistent/clip.nut",
        ] {
            assert!(!local_file(address), "{address}");
        }
    }
}
