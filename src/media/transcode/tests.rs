//! The rendered chains run through real GStreamer elements: x264enc, openh264enc, avdec_* and
//! opusenc are installed on the build machine; GPU encoders are not, so their files are only
//! checked for form here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::descriptions::run_to_eos;
use super::encoders::select;
use super::*;
use crate::media::sdp::parse_source;

const SDP_HEAD: &str =
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\na=tool:libavformat 59.27.100\r\n";

fn init() {
    gst::init().unwrap();
}

/// A track as FFmpeg's SDP describes it, through the same parser the stream uses.
fn track(media: &str) -> SourceTrack {
    parse_source(&format!("{SDP_HEAD}{media}"))
        .unwrap()
        .remove(0)
}

fn x264() -> TranscodeCapabilities {
    select(&Registry::from_gstreamer(), Some("x264enc")).unwrap()
}

#[derive(Default)]
struct Outcome {
    /// Buffers that reached the sink.
    buffers: usize,
    /// Caps at the sink.
    caps: Option<gst::Caps>,
    /// Caps the encoder was given.
    encoder_input: Option<gst::Caps>,
    /// Key frames out of the encoder.
    key_frames: usize,
}

/// Runs `source ! capssetter(caps of the SDP track) ! chain ! tee ! fakesink` to EOS, the way
/// the stream pipeline would see FFmpeg's packets. `during` runs on the test thread meanwhile.
fn run(
    source: &str,
    rtp_caps: Option<&gst::Caps>,
    chain: &str,
    limiter: Option<Arc<KeyUnitLimiter>>,
    during: impl FnOnce(&gst::Pipeline, &AtomicUsize) + Send,
) -> Outcome {
    init();
    let setter = if rtp_caps.is_some() {
        "capssetter name=sdp replace=true ! "
    } else {
        ""
    };
    let launch = format!("{source} ! {setter}{chain} ! tee name=t ! fakesink name=out sync=false");
    let pipeline = gst::parse::launch(&launch)
        .unwrap_or_else(|e| panic!("{e}: {launch}"))
        .downcast::<gst::Pipeline>()
        .unwrap();
    if let Some(caps) = rtp_caps {
        pipeline.by_name("sdp").unwrap().set_property("caps", caps);
    }
    fit_video_sizes(pipeline.upcast_ref());
    if let Some(limiter) = limiter {
        limiter.install(&pipeline.by_name("t").unwrap().static_pad("sink").unwrap());
    }
    let buffers = Arc::new(AtomicUsize::new(0));
    let sink_pad = pipeline.by_name("out").unwrap().static_pad("sink").unwrap();
    let counted = buffers.clone();
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        counted.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    let frames = Arc::new(AtomicUsize::new(0));
    let key_frames = Arc::new(AtomicUsize::new(0));
    let encoder = pipeline.iterate_recurse().into_iter().flatten().find(|e| {
        e.factory()
            .is_some_and(|f| f.klass().contains("Encoder/Video"))
    });
    if let Some(encoder) = &encoder {
        let (frames, keys) = (frames.clone(), key_frames.clone());
        encoder
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                    frames.fetch_add(1, Ordering::Relaxed);
                    if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        keys.fetch_add(1, Ordering::Relaxed);
                    }
                }
                gst::PadProbeReturn::Ok
            });
    }
    let result = std::thread::scope(|scope| {
        let runner = scope.spawn(|| run_to_eos(&pipeline, Duration::from_secs(60)));
        during(&pipeline, &frames);
        runner.join().unwrap()
    });
    let outcome = Outcome {
        buffers: buffers.load(Ordering::Relaxed),
        caps: sink_pad.current_caps(),
        encoder_input: encoder.and_then(|e| e.static_pad("sink")?.current_caps()),
        key_frames: key_frames.load(Ordering::Relaxed),
    };
    pipeline.set_state(gst::State::Null).unwrap();
    result.unwrap_or_else(|e| panic!("{e}\n{launch}"));
    outcome
}

fn field(caps: &gst::Caps, name: &str) -> String {
    let s = caps.structure(0).unwrap();
    s.get::<String>(name)
        .or_else(|_| s.get::<i32>(name).map(|v| v.to_string()))
        .unwrap_or_default()
}

/// H.264 from an RTP leg as a camera sends it (openh264: no frame rate in the SPS, so the decoded
/// frames carry none: videorate must not abort), portrait with an odd scaled width, through
/// the rendered x264 transcode chain.
#[test]
fn h264_rtp_leg_transcodes_to_constrained_baseline_with_x264() {
    init();
    let source = track(
        "m=video 40000 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 packetization-mode=0\r\n",
    );
    let descriptions = Descriptions::load(None).unwrap();
    let capabilities = x264();
    let decision = decide(&source, false, &descriptions, Some(&capabilities));
    assert_eq!(decision.path, "transcode", "{}", decision.reason);
    assert!(
        decision.reason.contains("packetization-mode 1"),
        "{}",
        decision.reason
    );
    let branch = decision.branch.unwrap();
    let chain = descriptions
        .render(
            &branch,
            &Vars::new(96, 1234, &TranscodeSettings::default(), Some(&capabilities)),
        )
        .unwrap();
    let outcome = run(
        "videotestsrc is-live=true num-buffers=45 pattern=ball \
         ! video/x-raw,width=540,height=960,framerate=30/1 ! openh264enc ! rtph264pay pt=96 mtu=1200",
        Some(&source.caps),
        &chain,
        None,
        |_, _| {},
    );
    assert!(outcome.buffers > 10, "{} RTP packets", outcome.buffers);
    let caps = outcome.caps.unwrap();
    assert_eq!(field(&caps, "encoding-name"), "H264");
    assert_eq!(field(&caps, "payload"), "96");
    let plid = field(&caps, "profile-level-id");
    let constraints = u8::from_str_radix(&plid[2..4], 16).unwrap();
    assert!(
        plid.starts_with("42") && constraints & 0x40 != 0,
        "constrained baseline expected, got {plid}"
    );
    let input = outcome.encoder_input.unwrap();
    assert_eq!(
        (field(&input, "width"), field(&input, "height")),
        ("404".to_string(), "720".to_string()),
        "540x960 fits 1280x720 as 405x720, made even"
    );
    assert!(outcome.key_frames >= 1);
}

/// AAC as FFmpeg sends it (MPEG4-GENERIC, config from the SDP) through the rendered Opus chain.
#[test]
fn aac_rtp_leg_transcodes_to_opus() {
    init();
    let source = track(
        "m=audio 40001 RTP/AVP 97\r\nc=IN IP4 127.0.0.1\r\nb=AS:128\r\n\
         a=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
         a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=1210\r\n",
    );
    let descriptions = Descriptions::load(None).unwrap();
    let decision = decide(&source, false, &descriptions, Some(&x264()));
    assert_eq!(decision.path, "transcode", "{}", decision.reason);
    assert_eq!(
        decision.branch,
        Some(BranchKind::Audio {
            source: "MPEG4-GENERIC".into()
        })
    );
    let chain = descriptions
        .render(
            decision.branch.as_ref().unwrap(),
            &Vars::new(111, 5678, &TranscodeSettings::default(), None),
        )
        .unwrap();
    assert!(
        chain.starts_with("rtpmp4gdepay ! aacparse ! avdec_aac ! audioconvert"),
        "{chain}"
    );
    let outcome = run(
        "audiotestsrc num-buffers=100 ! audio/x-raw,rate=44100,channels=2 ! avenc_aac ! rtpmp4gpay pt=97",
        Some(&source.caps),
        &chain,
        None,
        |_, _| {},
    );
    assert!(outcome.buffers > 20, "{} RTP packets", outcome.buffers);
    let caps = outcome.caps.unwrap();
    assert_eq!(field(&caps, "encoding-name"), "OPUS");
    assert_eq!(field(&caps, "clock-rate"), "48000");
    assert_eq!(field(&caps, "payload"), "111");
}

/// MP2 (what broadcast sources carry) arrives as MPA; mpg123 decodes every layer.
#[test]
fn mp2_rtp_leg_transcodes_to_opus() {
    init();
    let source =
        track("m=audio 40001 RTP/AVP 14\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:14 MPA/90000\r\n");
    let descriptions = Descriptions::load(None).unwrap();
    let chain = descriptions
        .render(
            &BranchKind::Audio {
                source: source.encoding(),
            },
            &Vars::new(111, 1, &TranscodeSettings::default(), None),
        )
        .unwrap();
    let outcome = run(
        "audiotestsrc num-buffers=60 ! avenc_mp2 ! rtpmpapay pt=14",
        Some(&source.caps),
        &chain,
        None,
        |_, _| {},
    );
    assert!(outcome.buffers > 10, "{} RTP packets", outcome.buffers);
    assert_eq!(field(&outcome.caps.unwrap(), "encoding-name"), "OPUS");
}

/// A burst of key-unit requests (five viewers joining at once) through the limiter: one IDR at
/// once, one merged IDR after the interval, nothing more.
#[test]
fn forced_key_units_are_rate_limited() {
    init();
    let descriptions = Descriptions::builtin();
    let settings = TranscodeSettings {
        // A 10 s GOP: every key frame after the first one is a forced one.
        gop_seconds: 10.0,
        ..TranscodeSettings::default()
    };
    let chain = descriptions
        .encoder_chain("x264enc", &Vars::new(96, 1, &settings, None))
        .unwrap();
    let limiter = Arc::new(KeyUnitLimiter::new(Duration::from_millis(500)));
    let sent = Mutex::new(Vec::new());
    let outcome = run(
        "videotestsrc is-live=true num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1",
        None,
        &chain,
        Some(limiter),
        |pipeline, frames| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while frames.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let pad = pipeline.by_name("out").unwrap().static_pad("sink").unwrap();
            for _ in 0..5 {
                sent.lock().unwrap().push(pad.push_event(force_key_unit_event()));
            }
        },
    );
    assert_eq!(sent.into_inner().unwrap().len(), 5);
    assert_eq!(
        outcome.key_frames, 3,
        "the first frame, one forced at once, one merged after 500 ms"
    );
}

#[test]
fn decisions_per_medium() {
    init();
    let descriptions = Descriptions::builtin();
    let capabilities = x264();
    let h264 = track(
        "m=video 40000 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 packetization-mode=1; profile-level-id=42C01E\r\n",
    );
    let h265 =
        track("m=video 40000 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 H265/90000\r\n");
    let pcmu = track("m=audio 40001 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:0 PCMU/8000\r\n");
    let ac3 =
        track("m=audio 40001 RTP/AVP 97\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:97 AC3/48000/2\r\n");

    let d = decide(&h264, false, &descriptions, Some(&capabilities));
    assert_eq!(d.path, "passthrough");
    assert_eq!(
        d.branch,
        Some(BranchKind::Passthrough {
            encoding: "H264".into()
        })
    );

    let d = decide(&h264, true, &descriptions, Some(&capabilities));
    assert_eq!(d.path, "transcode");
    assert!(d.reason.contains("force_transcode"), "{}", d.reason);
    assert!(d.reason.contains("x264enc"), "{}", d.reason);

    let d = decide(&h265, false, &descriptions, Some(&capabilities));
    assert_eq!(d.path, "transcode");
    assert_eq!(
        d.branch,
        Some(BranchKind::Video {
            source: "H265".into(),
            encoder: "x264enc".into()
        })
    );
    assert!(
        d.reason.contains("browsers cannot play H265"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("decode-h265.txt"), "{}", d.reason);

    let d = decide(&h265, false, &descriptions, None);
    assert_eq!((d.path, d.branch.is_none()), ("unsupported", true));
    assert!(
        d.reason.contains("transcoding is unavailable"),
        "{}",
        d.reason
    );

    // force_transcode without a transcoder still serves a playable codec, and says why.
    let d = decide(&pcmu, true, &descriptions, None);
    assert_eq!(d.path, "passthrough");
    assert!(
        d.reason.contains("force_transcode is set, but"),
        "{}",
        d.reason
    );

    let d = decide(&ac3, false, &descriptions, Some(&capabilities));
    assert_eq!(d.path, "transcode");
    assert!(
        d.reason.contains("Opus 48 kHz with opusenc"),
        "{}",
        d.reason
    );
}

#[test]
fn builtin_descriptions_load_and_parse_here() {
    let descriptions = Descriptions::load(None).unwrap();
    assert_eq!(
        descriptions.unavailable(),
        vec![],
        "every plugin is installed here"
    );
    assert!(descriptions.directory().is_none());
    descriptions
        .check(&x264(), &TranscodeSettings::default())
        .unwrap();
    let vars = Vars::new(96, 1, &TranscodeSettings::default(), None);
    for kind in [
        BranchKind::Video {
            source: "H264".into(),
            encoder: "x264enc".into(),
        },
        BranchKind::Video {
            source: "MPV".into(),
            encoder: "openh264enc".into(),
        },
        BranchKind::Audio {
            source: "AC3".into(),
        },
        BranchKind::Audio {
            source: "L16".into(),
        },
    ] {
        let chain = descriptions.render(&kind, &vars).unwrap();
        gst::parse::bin_from_description(&chain, true)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}: {chain}"));
    }
}

/// Only the selected family is checked: the VAAPI file cannot parse here (no vah264enc), which
/// is no problem until VAAPI is what was selected.
#[test]
fn only_the_selected_encoder_family_is_checked() {
    init();
    let descriptions = Descriptions::load(None).unwrap();
    let vaapi = encoders::capabilities(
        &Registry::from_names(&["vah264enc", "opusenc"]),
        "vah264enc",
        true,
    );
    let err = descriptions
        .check(&vaapi, &TranscodeSettings::default())
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("video-vaapi.txt"), "{text}");
    assert!(text.contains("vah264enc"), "{text}");
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn bad_descriptions_are_start_up_errors_naming_the_file() {
    init();
    let dir = dir_with(&[(
        "passthrough-vp8.txt",
        "# typo in a placeholder\nrtpvp8depay ! rtpvp8pay pt={payload_type} ssrc={ssrc}\n",
    )]);
    let text = Descriptions::load(Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(text.contains("passthrough-vp8.txt"), "{text}");
    assert!(text.contains("{payload_type}"), "{text}");

    let dir = dir_with(&[("passthrough-vp8.txt", "rtpvp8depay ! rtpvp8paay pt={pt}\n")]);
    let text = Descriptions::load(Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(text.contains("passthrough-vp8.txt"), "{text}");
    assert!(text.contains("rtpvp8paay"), "{text}");

    let dir = dir_with(&[(
        "audio-opus.txt",
        "audioconvert ! opusenc bitrat=1 ! rtpopuspay\n",
    )]);
    let text = Descriptions::load(Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("audio-opus.txt") && text.contains("bitrat"),
        "{text}"
    );

    let dir = dir_with(&[("video-x265.txt", "x265enc\n")]);
    let text = Descriptions::load(Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("video-x265.txt") && text.contains("not a description"),
        "{text}"
    );

    let text = Descriptions::load(Some(&dir.path().join("missing")))
        .unwrap_err()
        .to_string();
    assert!(text.contains("missing"), "{text}");

    // The encoder file is checked once its encoder is selected.
    let dir = dir_with(&[(
        "video-x264.txt",
        "videoconvert ! x264enc key-int-max={gop_frames} no-such-property=1 ! rtph264pay\n",
    )]);
    let descriptions = Descriptions::load(Some(dir.path())).unwrap();
    let text = descriptions
        .check(&x264(), &TranscodeSettings::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("video-x264.txt") && text.contains("no-such-property"),
        "{text}"
    );
}

#[test]
fn overrides_and_missing_decoders() {
    init();
    let dir = dir_with(&[
        // An operator's own decoder for a codec the built-ins leave to decodebin.
        ("decode-theora.txt", "rtptheoradepay ! theoradec\n"),
        // A decoder that is not installed: that codec is unavailable, the server still starts.
        ("decode-ac3.txt", "rtpac3depay ! a52dec_not_installed\n"),
    ]);
    let descriptions = Descriptions::load(Some(dir.path())).unwrap();
    assert_eq!(descriptions.directory(), Some(dir.path()));
    assert_eq!(
        descriptions.decoder_file("THEORA"),
        Some("decode-theora.txt")
    );
    let unavailable = descriptions.unavailable();
    assert_eq!(unavailable.len(), 1);
    assert_eq!(unavailable[0].0, "decode-ac3.txt");
    assert!(
        unavailable[0].1.contains("a52dec_not_installed"),
        "{unavailable:?}"
    );
    // AC-3 now goes through decodebin.
    assert_eq!(descriptions.decoder_file("AC3"), Some("decode-any.txt"));
}

#[test]
fn checked_selection_probes_and_skips_broken_encoders() {
    init();
    let registry = Registry::from_gstreamer();
    let descriptions = Descriptions::load(None).unwrap();
    let settings = TranscodeSettings::default();
    let caps = select_checked(&registry, None, &descriptions, &settings).unwrap();
    assert_eq!(caps.video_encoder, "x264enc");
    assert!(caps.skipped.is_empty());

    // An x264 chain that parses but cannot negotiate (4:4:4 intra is no 4:2:0 baseline).
    let broken = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/video-x264.txt"),
    )
    .unwrap()
    .replace("profile=constrained-baseline", "profile=high-4:4:4-intra");
    let dir = dir_with(&[("video-x264.txt", &broken)]);
    let descriptions = Descriptions::load(Some(dir.path())).unwrap();
    let caps = select_checked(&registry, None, &descriptions, &settings).unwrap();
    assert_eq!(caps.video_encoder, "openh264enc", "x264 skipped");
    assert_eq!(caps.skipped.len(), 1);
    assert!(caps.skipped[0].contains("x264enc"), "{:?}", caps.skipped);
    let err = select_checked(&registry, Some("x264enc"), &descriptions, &settings).unwrap_err();
    assert!(matches!(err, TranscodeError::Probe { .. }), "{err}");
}

#[test]
fn a_decoder_test_decodes_the_clip_into_the_encoder_chain() {
    init();
    let descriptions = Descriptions::load(None).unwrap();
    let settings = TranscodeSettings::default();
    let capabilities = x264();
    for (codec, decoder) in [(Codec::H264, "avdec_h264"), (Codec::H265, "avdec_h265")] {
        descriptions
            .probe_decoder(codec, decoder, &capabilities, &settings, PROBE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{decoder}: {e}"));
    }
    // A decoder that cannot take the clip fails its test, with the reason.
    let err = descriptions
        .probe_decoder(
            Codec::H265,
            "avdec_h264",
            &capabilities,
            &settings,
            PROBE_TIMEOUT,
        )
        .unwrap_err();
    assert!(
        matches!(&err, TranscodeError::DecoderProbe { decoder, .. } if decoder == "avdec_h264"),
        "{err}"
    );
}

#[test]
fn gpu_decoders_that_fail_their_test_are_passed_over_for_software() {
    init();
    // NVDEC's decoders as the registry of a GPU without NVENC lists them, but this machine cannot
    // create them: their test fails, and the software decoders take their place.
    let registry = Registry::from_names(encoders::NVDEC_WITHOUT_NVENC);
    let descriptions = Descriptions::load(None).unwrap();
    let settings = TranscodeSettings::default();
    let caps = select_checked(&registry, None, &descriptions, &settings).unwrap();
    assert_eq!(caps.video_encoder, "x264enc");
    assert_eq!(caps.h264_decoder, "avdec_h264");
    assert_eq!(caps.h265_decoder, "avdec_h265");
    assert_eq!(caps.skipped.len(), 2, "{:?}", caps.skipped);
    assert!(
        caps.skipped[0].starts_with("decoder nvh264dec failed its start-up test"),
        "{:?}",
        caps.skipped
    );
    assert!(
        caps.skipped[1].starts_with("decoder nvh265dec"),
        "{:?}",
        caps.skipped
    );
}

#[test]
fn transcoded_tracks_as_viewers_see_them() {
    init();
    let descriptions = Descriptions::builtin();
    let capabilities = x264();
    let h265 =
        track("m=video 40000 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 H265/90000\r\n");
    let decision = decide(&h265, false, &descriptions, Some(&capabilities));
    let settings = TranscodeSettings::default();
    let out = decision.output_track(&h265, &settings);
    assert_eq!((out.kind, out.port), (h265.kind, h265.port));
    assert_eq!(out.encoding(), "H264");
    assert!(out.browser_playable());
    assert_eq!(field(&out.caps, "profile-level-id"), "42e01f");
    assert_eq!(field(&out.caps, "payload"), "96");
    let full_hd = TranscodeSettings {
        max_width: 1920,
        max_height: 1080,
        ..settings.clone()
    };
    assert_eq!(
        field(
            &decision.output_track(&h265, &full_hd).caps,
            "profile-level-id"
        ),
        "42e028"
    );
    let fast = TranscodeSettings {
        max_fps: 60,
        ..full_hd
    };
    assert_eq!(
        field(
            &decision.output_track(&h265, &fast).caps,
            "profile-level-id"
        ),
        "42e02a"
    );

    let ac3 =
        track("m=audio 40001 RTP/AVP 97\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:97 AC3/48000/2\r\n");
    let out = decide(&ac3, false, &descriptions, Some(&capabilities)).output_track(&ac3, &settings);
    assert_eq!(
        (
            out.encoding().as_str(),
            field(&out.caps, "clock-rate").as_str()
        ),
        ("OPUS", "48000")
    );
    assert!(out.browser_playable());

    let opus =
        track("m=audio 40001 RTP/AVP 97\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:97 opus/48000/2\r\n");
    let passthrough = decide(&opus, false, &descriptions, Some(&capabilities));
    assert_eq!(passthrough.output_track(&opus, &settings), opus);
}

/// videorate's drop-only mode aborts the server on sources without a frame rate (see
/// video-x264.txt): no built-in chain may use it.
#[test]
fn no_builtin_chain_uses_videorate_drop_only() {
    let descriptions = Descriptions::builtin();
    let vars = Vars::new(96, 1, &TranscodeSettings::default(), None);
    for encoder in encoders::all_encoder_elements() {
        let chain = descriptions.encoder_chain(encoder, &vars).unwrap();
        assert!(!chain.contains("drop-only"), "{encoder}: {chain}");
        assert!(
            chain.contains("videorate max-rate=30"),
            "{encoder}: {chain}"
        );
        assert!(
            chain.contains("profile=constrained-baseline"),
            "{encoder}: {chain}"
        );
        assert!(
            chain.ends_with(
                "rtph264pay config-interval=-1 aggregate-mode=zero-latency pt=96 ssrc=1 mtu=1200"
            ),
            "{encoder}: {chain}"
        );
    }
}

/// A hardware encoder whose built-in description does not fit this machine (simulated: the
/// registry claims vah264enc, GStreamer has none) is passed over in automatic mode; forced, or
/// with the operator's own file, it is a start-up error.
#[test]
fn unfit_builtin_hardware_descriptions_are_passed_over_unless_forced() {
    init();
    let registry = Registry::from_names(&[
        "vah264enc",
        "x264enc",
        "avdec_h264",
        "avdec_h265",
        "opusenc",
    ]);
    let settings = TranscodeSettings::default();
    let builtin = Descriptions::load(None).unwrap();
    let caps = select_checked(&registry, None, &builtin, &settings).unwrap();
    assert_eq!(caps.video_encoder, "x264enc");
    assert_eq!(caps.skipped.len(), 1);
    assert!(
        caps.skipped[0].contains("video-vaapi.txt"),
        "{:?}",
        caps.skipped
    );

    let err = select_checked(&registry, Some("vaapi"), &builtin, &settings).unwrap_err();
    assert!(matches!(err, TranscodeError::Description { .. }), "{err}");

    let vaapi = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/video-vaapi.txt"),
    )
    .unwrap();
    let dir = dir_with(&[("video-vaapi.txt", &vaapi)]);
    let operator = Descriptions::load(Some(dir.path())).unwrap();
    assert!(!operator.is_builtin("video-vaapi.txt"));
    let err = select_checked(&registry, None, &operator, &settings).unwrap_err();
    assert!(err.to_string().contains("video-vaapi.txt"), "{err}");
}
