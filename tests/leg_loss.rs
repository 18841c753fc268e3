//! A damaged TS leg does not stop the stream. FFmpeg's leg goes through a UDP relay of the
//! test's own (FFmpeg is a wrapper that sends it there), which drops 16 packets of the Opus PID
//! in a row from the middle of a PES: the continuity counter wraps and cannot show the loss, and
//! tsdemux 1.22 fails on the cut access unit. Before, that stopped the stream's udpsrc for good
//! while FFmpeg went on sending; now the leg gets a fresh demux and the viewer plays on.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::media::{connect_when_ready, shared_into, source, webrtc_process};
use common::sources::wait_until;
use common::whep::OfferOptions;
use common::{ServerLogOnPanic, TestServer};

const TS_PACKET: usize = 188;
const RTP_HEADER: usize = 12;
/// Packets of one PID lost in a row that its 4-bit continuity counter cannot show.
const UNSEEN_LOSS: usize = 16;

/// An FFmpeg that sends its `rtp_mpegts` leg to `relay_port` and leaves the stream's own port
/// in `port_file`.
fn wrapper(relay_port: u16, port_file: &Path) -> String {
    format!(
        r#"#!/usr/bin/env python3
import os, re, sys
args = []
for arg in sys.argv[1:]:
    leg = re.search(r"rtp://127\.0\.0\.1:(\d+)\?", arg)
    if leg and "rtp_mpegts" in arg:
        with open({port_file:?}, "w") as f:
            f.write(leg.group(1))
        arg = arg.replace(leg.group(0), "rtp://127.0.0.1:{relay_port}?")
    args.append(arg)
os.execvp("ffmpeg", ["ffmpeg"] + args)
"#,
        port_file = port_file.to_str().unwrap(),
    )
}

/// What the test tells the relay, and what it learns from it.
#[derive(Default)]
struct Cut {
    /// Make cuts, one a second, until told to stop.
    armed: AtomicBool,
    /// Cuts made.
    made: AtomicU64,
    /// Datagrams forwarded.
    forwarded: AtomicU64,
}

/// Forwards the leg from `socket` to the stream's port (read from `port_file`), cutting the
/// audio while armed. Runs until `stop`.
///
/// Not every such cut fails tsdemux: whether it does depends on where the loss ends in the PES
/// it resumes in (about four in five did), so the relay cuts again a second later until the
/// test has seen the failure it is about.
fn relay(socket: UdpSocket, port_file: PathBuf, cut: Arc<Cut>, stop: Arc<AtomicBool>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = vec![0u8; 65536];
    let mut audio_pid = None;
    let mut to_drop = UNSEEN_LOSS;
    let mut last_cut: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
        else {
            continue;
        };
        let datagram = &buf[..n];
        // FFmpeg's rtp_mpegts header: 12 bytes, no CSRCs, no extension.
        assert_eq!(
            datagram[0], 0x80,
            "an RTP header without CSRCs or extension"
        );
        let mut kept = datagram[..RTP_HEADER].to_vec();
        for packet in datagram[RTP_HEADER..].chunks(TS_PACKET) {
            let pid = u16::from_be_bytes([packet[1] & 0x1f, packet[2]]);
            let starts_pes = packet[1] & 0x40 != 0;
            let payload = match packet[3] & 0x20 != 0 {
                true => packet.get(5 + usize::from(packet[4])..).unwrap_or(&[]),
                false => &packet[4..],
            };
            // FFmpeg muxes Opus as private stream 1.
            if starts_pes && payload.starts_with(&[0, 0, 1, 0xbd]) {
                audio_pid = Some(pid);
            }
            let audio = audio_pid == Some(pid);
            let due = last_cut.is_none_or(|at| at.elapsed() > Duration::from_secs(1));
            // A loss from inside a PES (the one whose remains tsdemux parses), 16 packets long.
            let cutting = audio
                && cut.armed.load(Ordering::Relaxed)
                && (to_drop < UNSEEN_LOSS || (due && !starts_pes));
            if cutting {
                to_drop -= 1;
                if to_drop == 0 {
                    to_drop = UNSEEN_LOSS;
                    last_cut = Some(Instant::now());
                    cut.made.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            kept.extend_from_slice(packet);
        }
        if kept.len() > RTP_HEADER {
            let _ = out.send_to(&kept, ("127.0.0.1", port));
            cut.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_lost_audio_packets_do_not_stop_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay_port = socket.local_addr().unwrap().port();
    let port_file = dir.path().join("leg-port");
    let (cut, stop) = (Arc::new(Cut::default()), Arc::new(AtomicBool::new(false)));
    let relaying = {
        let (port_file, cut, stop) = (port_file.clone(), cut.clone(), stop.clone());
        std::thread::spawn(move || relay(socket, port_file, cut, stop))
    };
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(stop.clone());

    let ffmpeg = dir.path().join("ffmpeg-via-relay");
    let server =
        TestServer::start_with_ffmpeg_script(&ffmpeg, &wrapper(relay_port, &port_file)).await;
    let _log = ServerLogOnPanic(&server);
    // H.264 + Opus, copied into the leg.
    let file = shared_into(&server, source());
    server.create(webrtc_process("cut", &file)).await;
    let (rx, _, _) = connect_when_ready(&server, "cut", &OfferOptions::default()).await;
    assert!(
        wait_until(Duration::from_secs(15), || rx.frames_decoded() >= 30
            && rx.audio_samples() >= 48_000)
        .await,
        "the viewer plays before the cut: {} frames, {} samples",
        rx.frames_decoded(),
        rx.audio_samples()
    );

    cut.armed.store(true, Ordering::Relaxed);
    let failed = server
        .wait_logged("tsdemux failed on the leg's data", Duration::from_secs(15))
        .await;
    cut.armed.store(false, Ordering::Relaxed);
    assert!(
        failed,
        "no cut failed the demux (the case this test is about): {} cuts, {} datagrams forwarded",
        cut.made.load(Ordering::Relaxed),
        cut.forwarded.load(Ordering::Relaxed)
    );
    eprintln!(
        "tsdemux failed after {} cuts",
        cut.made.load(Ordering::Relaxed)
    );
    let (frames, samples) = (rx.frames_decoded(), rx.audio_samples());
    let cut_at = Instant::now();
    let played_on = wait_until(Duration::from_secs(10), || {
        rx.frames_decoded() >= frames + 60 && rx.audio_samples() >= samples + 96_000
    })
    .await;
    assert!(
        played_on,
        "after the cut the viewer got {} frames and {} samples in {:?}",
        rx.frames_decoded() - frames,
        rx.audio_samples() - samples,
        cut_at.elapsed()
    );
    assert_eq!(server.state("cut").await["exec"], "running");
    stop.store(true, Ordering::Relaxed);
    relaying.join().unwrap();
}
