//! WebRTC egress end to end: FFmpeg → RTP legs → GStreamer stream pipeline → WHEP → a real
//! webrtcbin viewer in this process that decodes what it receives.

mod common;

use std::time::{Duration, Instant};

use common::media::{broken_offers, connect_when_ready, make_source, webrtc_process};
use common::whep::{self, OfferOptions};
use common::{settled_counts, TestServer};
use gstreamer::prelude::*;

#[tokio::test]
async fn viewer_decodes_video_and_audio() {
    let server = TestServer::start().await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("cam", &source)).await;
    let (rx, resource, etag) = connect_when_ready(&server, "cam", &OfferOptions::default()).await;
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    if !rx.wait_frames(30, Duration::from_secs(15)) {
        eprintln!(
            "sessions: {}",
            server.get("/api/v3/webrtc/sessions").await.1
        );
        eprintln!(
            "stream: {}",
            server.get("/api/v3/process/cam/webrtc").await.1
        );
        eprintln!("{}", server.log.lock().unwrap().join("\n"));
    }
    assert_decodes_video_and_audio(&rx, 1).await;
    let codecs = rx.codecs();
    assert!(
        codecs.iter().any(|c| c == "H264") && codecs.iter().any(|c| c == "OPUS"),
        "{codecs:?}"
    );
    let res = server.http.delete(&resource).send().await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let res = server.http.delete(&resource).send().await.unwrap();
    assert_eq!(
        res.status(),
        reqwest::StatusCode::OK,
        "DELETE is idempotent"
    );
}

#[tokio::test]
async fn ten_viewers_survive_an_ffmpeg_restart() {
    let server = TestServer::start().await;
    let _log = common::ServerLogOnPanic(&server);
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("multi", &source)).await;
    let mut viewers = Vec::new();
    for _ in 0..10 {
        viewers.push(connect_when_ready(&server, "multi", &OfferOptions::default()).await);
    }
    for (rx, _, _) in &viewers {
        assert!(
            rx.wait_frames(15, Duration::from_secs(20)),
            "a viewer decoded {} frames",
            rx.frames_decoded()
        );
    }

    // Kill FFmpeg; with reconnect it comes back on the same ports and the same pipeline.
    let ffmpeg = server.ffmpeg_children();
    assert_eq!(ffmpeg.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ffmpeg[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The event is a new FFmpeg child: with instant start the first run may still read
    // `running` with runtime 0 when it is killed, so the process state cannot tell the runs apart.
    let before: Vec<u64> = viewers
        .iter()
        .map(|(rx, _, _)| rx.frames_decoded())
        .collect();
    common::sources::wait_until(Duration::from_secs(15), || {
        let now = server.ffmpeg_children();
        !now.is_empty() && now != ffmpeg
    })
    .await;
    server
        .wait_state("multi", Duration::from_secs(15), |s| s["exec"] == "running")
        .await;
    let restarted = server.ffmpeg_children();
    assert_eq!(restarted.len(), 1);
    assert_ne!(restarted, ffmpeg);
    // Every viewer decodes new frames without a new POST.
    for ((rx, _, _), start) in viewers.iter().zip(before) {
        assert!(
            rx.wait_frames(start + 30, Duration::from_secs(20)),
            "a viewer stalled after the restart at {} frames (was {start})",
            rx.frames_decoded()
        );
    }
}

/// Viewers after the first get a webrtcbin prepared before their offer (`webrtc.viewer_pool`):
/// its transceivers and transport were made ahead, and each viewer still decodes video and audio
/// of its own.
#[tokio::test]
async fn viewers_on_prepared_webrtcbins_decode_video_and_audio() {
    let server = TestServer::start_with(&[
        ("STREAMCORE_WEBRTC_VIEWER_POOL", "2"),
        ("STREAMCORE_LOG", "info,streamcore::media::pool=debug"),
    ])
    .await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("pool", &source)).await;
    let (first, first_resource, _) =
        connect_when_ready(&server, "pool", &OfferOptions::default()).await;
    let id = |resource: &str| resource.rsplit('/').next().unwrap().to_string();
    // The log line comes before the answer, but the test reads the server's log on a thread
    // of its own: it may arrive after the answer does.
    const WAIT: Duration = Duration::from_secs(5);
    assert!(
        server
            .wait_logged(
                &format!("viewer={} prepared=false", id(&first_resource)),
                WAIT
            )
            .await,
        "the pool is empty until a viewer asks"
    );
    assert!(
        server
            .wait_logged("viewer pool: one prepared ready=2", Duration::from_secs(20))
            .await,
        "the pool never filled"
    );
    let mut viewers = Vec::new();
    for _ in 0..2 {
        let (rx, resource, _) = whep::connect(
            &server.http,
            &server.url("/whep/pool"),
            None,
            &OfferOptions::default(),
        )
        .await;
        assert!(
            server
                .wait_logged(&format!("viewer={} prepared=true", id(&resource)), WAIT)
                .await,
            "viewer {resource} did not get a prepared webrtcbin"
        );
        viewers.push(rx);
    }
    for rx in viewers.iter().chain([&first]) {
        rx.wait_frames(30, Duration::from_secs(15));
        assert_decodes_video_and_audio(rx, 4800).await;
    }
}

/// At least 30 frames of the 640x360 source decoded, and `samples` of audio within 5 s.
async fn assert_decodes_video_and_audio(rx: &whep::Receiver, samples: u64) {
    assert!(
        rx.frames_decoded() >= 30,
        "frames: {} state {} errors {:?}",
        rx.frames_decoded(),
        rx.connection_state(),
        rx.errors()
    );
    assert_eq!(rx.resolution(), Some((640, 360)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx.audio_samples() < samples && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rx.audio_samples() >= samples,
        "audio: {}",
        rx.audio_samples()
    );
}

#[tokio::test]
async fn viewer_cycles_leak_no_threads_or_fds() {
    let server = TestServer::start().await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("cycles", &source)).await;
    // Warm up: the first viewer creates process-wide things (DTLS context, thread pools).
    let (rx, resource, _) = connect_when_ready(&server, "cycles", &OfferOptions::default()).await;
    assert!(rx.wait_frames(5, Duration::from_secs(20)));
    assert_eq!(
        server.http.delete(&resource).send().await.unwrap().status(),
        reqwest::StatusCode::OK
    );
    drop(rx);
    let baseline = settled_counts(server.pid(), None).await;
    for cycle in 0..30 {
        let (rx, resource, _) =
            connect_when_ready(&server, "cycles", &OfferOptions::default()).await;
        assert!(
            rx.wait_frames(2, Duration::from_secs(20)),
            "cycle {cycle}: no frames"
        );
        assert_eq!(
            server.http.delete(&resource).send().await.unwrap().status(),
            reqwest::StatusCode::OK
        );
        drop(rx);
    }
    let after = settled_counts(server.pid(), Some(baseline)).await;
    common::assert_no_growth(server.pid(), after, baseline, "30 cycles");
}

/// Makes a viewer vanish without a DELETE: everything it would send is dropped, as if its network
/// went away. The server must notice the silence (consent expiry) and remove the viewer.
#[tokio::test]
async fn silent_viewer_is_removed() {
    let server =
        TestServer::start_with(&[("STREAMCORE_WEBRTC_CONSENT_TIMEOUT_SECONDS", "3")]).await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("gone", &source)).await;
    let (rx, resource, _) = connect_when_ready(&server, "gone", &OfferOptions::default()).await;
    assert!(rx.wait_frames(10, Duration::from_secs(20)));
    let bin = rx.webrtcbin().clone().downcast::<gstreamer::Bin>().unwrap();
    for element in bin.iterate_recurse().into_iter().flatten() {
        if element.factory().is_some_and(|f| f.name() == "nicesink") {
            element.static_pad("sink").unwrap().add_probe(
                gstreamer::PadProbeType::BUFFER | gstreamer::PadProbeType::BUFFER_LIST,
                // Handled, not Drop: with Drop GStreamer 1.22 can unref the probe's data after the
                // binding took it (a GStreamer-CRITICAL in this process); Handled lets the binding
                // free it, as the server's own gate does.
                |_, _| gstreamer::PadProbeReturn::Handled,
            );
        }
    }
    let silenced = Instant::now();
    let id = resource.rsplit('/').next().unwrap().to_string();
    let removed = format!("viewer removed stream=gone viewer={id}");
    // The server logs the removal; that line is the event this test waits for.
    assert!(
        server.wait_logged(&removed, Duration::from_secs(15)).await,
        "silent viewer was never removed; server log:\n{}",
        server.log.lock().unwrap().join("\n")
    );
    let took = silenced.elapsed();
    assert!(
        // The last packet before the silence may predate the probe by a moment, hence 2 s, not 3.
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "removed after {took:?}"
    );
}

/// A real Chromium 156 offer (it lists plain baseline H.264 before constrained baseline) used to
/// make webrtcbin abort the whole server. Each POST must get an answer that binds our H.264 track
/// to the constrained-baseline payload, and the server must stay up.
#[tokio::test]
async fn chromium_offers_get_constrained_baseline_and_never_crash_the_server() {
    let server = TestServer::start().await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("chrome", &source)).await;
    // Wait for media with a real viewer first.
    let (rx, resource, _) = connect_when_ready(&server, "chrome", &OfferOptions::default()).await;
    drop(rx);
    server.http.delete(&resource).send().await.unwrap();
    let offer = std::fs::read_to_string("tests/fixtures/chrome156-offer.sdp").unwrap();
    for round in 0..20 {
        let (status, headers, answer) =
            whep::post_offer(&server.http, &server.url("/whep/chrome"), None, &offer).await;
        assert_eq!(
            status,
            reqwest::StatusCode::CREATED,
            "round {round}: {answer}"
        );
        let message = gstreamer_sdp::SDPMessage::parse_buffer(answer.as_bytes()).unwrap();
        let video = message
            .medias()
            .find(|m| m.media() == Some("video"))
            .unwrap();
        assert_eq!(
            video.formats().collect::<Vec<_>>(),
            vec!["108"],
            "round {round}"
        );
        assert!(video.attribute_val("sendonly").is_some());
        let fmtp = video.attribute_val("fmtp").unwrap_or_default();
        assert!(
            fmtp.contains("profile-level-id=42e01f"),
            "round {round}: {fmtp}"
        );
        let location = headers
            .get(reqwest::header::LOCATION)
            .unwrap()
            .to_str()
            .unwrap();
        let res = server
            .http
            .delete(server.url(location))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::OK);
    }
    assert_eq!(server.get("/ping").await.0, reqwest::StatusCode::OK);
}

/// The answer the client applied, read back from its webrtcbin.
fn applied_answer(rx: &whep::Receiver) -> String {
    rx.webrtcbin()
        .property::<gstreamer_webrtc::WebRTCSessionDescription>("remote-description")
        .sdp()
        .as_text()
        .unwrap()
}

/// Candidate IPv4 addresses and ports of an SDP answer.
fn answer_candidates(answer: &str) -> Vec<(String, u16)> {
    let message = gstreamer_sdp::SDPMessage::parse_buffer(answer.as_bytes()).unwrap();
    let mut out = Vec::new();
    for media in message.medias() {
        for idx in 0..media.attributes_len() {
            let attr = media.attribute(idx).unwrap();
            if attr.key() == "candidate" {
                let fields: Vec<&str> = attr.value().unwrap_or_default().split(' ').collect();
                if fields[4].parse::<std::net::Ipv4Addr>().is_ok() {
                    out.push((fields[4].to_string(), fields[5].parse().unwrap()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn ice_port_range_and_public_ip_are_advertised() {
    let server = TestServer::start_with(&[
        ("STREAMCORE_WEBRTC_ICE_PORT_MIN", "46000"),
        ("STREAMCORE_WEBRTC_ICE_PORT_MAX", "46099"),
        ("STREAMCORE_WEBRTC_PUBLIC_IP", "203.0.113.7"),
    ])
    .await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("nat", &source)).await;
    let (rx, _, _) = connect_when_ready(&server, "nat", &OfferOptions::default()).await;
    let answer = applied_answer(&rx);
    let candidates = answer_candidates(&answer);
    assert!(!candidates.is_empty(), "{answer}");
    for (address, port) in &candidates {
        assert_eq!(address, "203.0.113.7", "{answer}");
        assert!(
            (46000..=46099).contains(port),
            "port {port} outside the range"
        );
    }
    // The server reaches the client through its own checks, so media still flows.
    assert!(rx.wait_frames(10, Duration::from_secs(20)));
}

#[tokio::test]
async fn ice_gathers_on_the_configured_interfaces_only() {
    // This machine's own non-loopback IPv4 address, as a client's gathering finds it.
    let (probe, offer) =
        tokio::task::spawn_blocking(|| whep::Receiver::new(&OfferOptions::default()))
            .await
            .unwrap();
    drop(probe);
    let Some((address, _)) = answer_candidates(&offer)
        .into_iter()
        .find(|(a, _)| a != "127.0.0.1")
    else {
        panic!("no non-loopback IPv4 address to test with:\n{offer}");
    };
    let server =
        TestServer::start_with(&[("STREAMCORE_WEBRTC_INTERFACES", address.as_str())]).await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("iface", &source)).await;
    let (rx, _, _) = connect_when_ready(&server, "iface", &OfferOptions::default()).await;
    let answer = applied_answer(&rx);
    let candidates = answer_candidates(&answer);
    assert!(!candidates.is_empty(), "{answer}");
    assert!(candidates.iter().all(|(a, _)| *a == address), "{answer}");
    // No IPv6 candidates either: only the configured address is used.
    assert!(
        !answer.contains(" typ host") || answer.matches("a=candidate").count() == candidates.len(),
        "{answer}"
    );
    assert!(rx.wait_frames(10, Duration::from_secs(20)));
}

/// Offers that parse as SDP but are wrong in ways a hostile or broken client could send: the
/// server must answer each with a status (never crash or hang), and keep serving real viewers.
#[tokio::test]
async fn hostile_offers_never_take_the_server_down() {
    let server = TestServer::start().await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("hostile", &source)).await;
    let (rx, _, _) = connect_when_ready(&server, "hostile", &OfferOptions::default()).await;
    assert!(rx.wait_frames(5, Duration::from_secs(20)));
    let offer = std::fs::read_to_string("tests/fixtures/chrome156-offer.sdp").unwrap();
    let many_formats = {
        let pts: Vec<String> = (35..128).map(|p| p.to_string()).collect();
        offer.replacen(
            "m=video 9 UDP/TLS/RTP/SAVPF ",
            &format!("m=video 9 UDP/TLS/RTP/SAVPF {} ", pts.join(" ")),
            1,
        )
    };
    let mut cases = broken_offers(&offer, "recvonly", "sendonly");
    cases.push(("unknown formats", many_formats));
    let url = server.url("/whep/hostile");
    for (name, sdp) in cases {
        let (status, _, body) = whep::post_offer(&server.http, &url, None, &sdp).await;
        assert!(
            status.is_client_error() || status.is_success(),
            "{name}: {status} {body}"
        );
        assert_eq!(
            server.get("/ping").await.0,
            reqwest::StatusCode::OK,
            "server gone after {name}"
        );
    }
    let frames = rx.frames_decoded();
    assert!(
        rx.wait_frames(frames + 10, Duration::from_secs(10)),
        "the real viewer stalled"
    );
}
