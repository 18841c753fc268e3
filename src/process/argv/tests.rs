use std::path::PathBuf;

use super::legs::{source_kind, SourceKind};
use super::*;
use crate::config::AccessList;
use crate::model::process::{ProcessIo, WebRtcSettings};
use crate::process::progress::ProbeIo;

/// A data directory with its public directory (`{diskfs}`) and the server's own `webrtc`
/// directory, and the rules for it with empty lists.
struct Fixture {
    _dir: tempfile::TempDir,
    disk: PathBuf,
    access: Access,
    servers: ServerTemplates,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().canonicalize().unwrap();
        let disk = data.join("public");
        std::fs::create_dir_all(&disk).unwrap();
        let access = Access::new(
            &data,
            &disk,
            vec!["webrtc".into()],
            &AccessList::default(),
            &AccessList::default(),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            disk,
            access,
            servers: ServerTemplates::default(),
        }
    }

    fn disk(&self) -> String {
        self.disk.to_string_lossy().into_owned()
    }

    fn resolve(&self, config: &ProcessConfig) -> Result<Resolved, String> {
        self.resolve_with(config, None, None, &no_process)
    }

    fn resolve_with(
        &self,
        config: &ProcessConfig,
        replacing: Option<&str>,
        whip: Option<WhipInput<'_>>,
        output_address: &dyn Fn(&str, &str) -> Result<String, ReferenceError>,
    ) -> Result<Resolved, String> {
        resolve(
            config,
            &Context {
                disk_dir: &self.disk,
                memfs_url: MEMFS,
                access: &self.access,
                replacing,
                whip,
                output_address,
                servers: &self.servers,
            },
        )
    }
}

/// What `{memfs}` stands for here.
const MEMFS: &str = "http://admin:pw@127.0.0.1:8080/memfs";

fn no_process(_: &str, _: &str) -> Result<String, ReferenceError> {
    Err(ReferenceError::UnknownProcess)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn io(id: &str, address: &str, options: &[&str]) -> ProcessIo {
    ProcessIo {
        id: id.into(),
        address: address.into(),
        options: strings(options),
        ..Default::default()
    }
}

fn process(id: &str, input: Vec<ProcessIo>, output: Vec<ProcessIo>) -> ProcessConfig {
    ProcessConfig {
        id: id.into(),
        input,
        output,
        ..Default::default()
    }
}

/// A definition with one network input and one output to `-`.
fn simple(input: &str) -> ProcessConfig {
    process(
        "cam",
        vec![io("in", input, &[])],
        vec![io("out", "-", &["-f", "null"])],
    )
}

/// restreamer-ui's HLS output: a tee whose options name `{memfs^:}` (colons escaped for the
/// tee's option parser) and whose address is `{memfs}`; the snapshot process reads `{memfs}`.
#[test]
fn memfs_placeholders_resolve_with_escaping() {
    let f = Fixture::new();
    let mut config = process(
        "ch",
        vec![io("in", "{fs:mem}/{processid}.m3u8", &[])],
        vec![io(
            "out",
            "[f=hls:hls_segment_filename={memfs^:}/{processid}_%04d.ts]{memfs}/{processid}.m3u8",
            &["-f", "tee", "-method", "PUT"],
        )],
    );
    config.options = strings(&["-loglevel", "info"]);
    let resolved = f.resolve(&config).unwrap();
    assert_eq!(resolved.inputs[0].address, format!("{MEMFS}/ch.m3u8"));
    let escaped = "http\\\\://admin\\\\:pw@127.0.0.1\\\\:8080/memfs";
    assert_eq!(
        resolved.outputs[0].address,
        format!("[f=hls:hls_segment_filename={escaped}/ch_%04d.ts]{MEMFS}/ch.m3u8")
    );
}

#[test]
fn placeholders_fill_addresses_options_and_io_ids() {
    let f = Fixture::new();
    let disk = f.disk();
    let mut config = process(
        "cam",
        vec![io(
            "in_{processid}",
            " rtmp://origin/{reference}/{inputid} ",
            &["-rw_timeout", "5000000"],
        )],
        vec![io(
            "{reference}",
            "{diskfs}/{processid}_{outputid}.m3u8",
            &["-hls_segment_filename", "{fs:disk}/{processid}_%d.ts"],
        )],
    );
    config.reference = "lobby".into();
    config.options = strings(&["-loglevel", "info", "-vstats_file", "{diskfs}/vstats"]);

    let resolved = f.resolve(&config).unwrap();

    let global = strings(&[
        "-loglevel",
        "info",
        "-vstats_file",
        &format!("{disk}/vstats"),
    ]);
    let input = strings(&["-rw_timeout", "5000000", "-i", "rtmp://origin/lobby/in_cam"]);
    let output = strings(&[
        "-hls_segment_filename",
        &format!("{disk}/cam_%d.ts"),
        &format!("{disk}/cam_lobby.m3u8"),
    ]);
    assert_eq!(resolved.argv, [&global[..], &input, &output].concat());
    assert_eq!(resolved.probe_argv, [&global[..], &input].concat());
    assert_eq!(resolved.inputs.len(), 1);
    assert_eq!(resolved.inputs[0].id, "in_cam");
    assert_eq!(resolved.inputs[0].address, "rtmp://origin/lobby/in_cam");
    assert_eq!(resolved.outputs.len(), 1);
    assert_eq!(resolved.outputs[0].id, "lobby");
    assert_eq!(
        resolved.outputs[0].address,
        format!("{disk}/cam_lobby.m3u8")
    );
}

#[test]
fn unknown_placeholders_stay_as_written() {
    let f = Fixture::new();
    let resolved = f.resolve(&simple("rtmp://origin/{nothing}")).unwrap();
    assert_eq!(resolved.inputs[0].address, "rtmp://origin/{nothing}");
}

#[test]
fn references_resolve_to_the_other_process_output() {
    let f = Fixture::new();
    let lookup = |pid: &str, oid: &str| match (pid, oid) {
        // A name with `:output=` in it: the reference splits at the last one.
        ("src:output=a", "hls") => Ok("rtmp://relay/src".to_string()),
        ("gone", _) => Err(ReferenceError::UnknownProcess),
        ("src:output=a", _) => Err(ReferenceError::UnknownOutput),
        ("broken", _) => Err(ReferenceError::Invalid),
        _ => panic!("unexpected lookup of {pid} {oid}"),
    };
    let resolved = f
        .resolve_with(&simple("#src:output=a:output=hls"), None, None, &lookup)
        .unwrap();
    assert_eq!(
        resolved.probe_argv,
        strings(&["-i", "rtmp://relay/src"]),
        "the referenced address, not the reference"
    );
    assert_eq!(resolved.inputs[0].address, "rtmp://relay/src");

    for (address, message) in [
        ("#gone:output=hls", "unknown referenced process 'gone'"),
        (
            "#src:output=a:output=dash",
            "unknown output 'dash' of process 'src:output=a'",
        ),
        ("#broken:output=hls", "process 'broken' is invalid"),
        ("#src", "invalid input reference '#src'"),
        // The lookup never sees a reference to the process itself.
        ("#cam:output=out", "a process cannot reference itself"),
        ("#old:output=out", "a process cannot reference itself"),
    ] {
        let error = f
            .resolve_with(&simple(address), Some("old"), None, &lookup)
            .unwrap_err();
        assert_eq!(error, message, "{address}");
    }
}

#[test]
fn a_referenced_address_is_not_checked_again() {
    // The access rules judged the address when the other process was stored.
    let f = Fixture::new();
    let lookup = |_: &str, _: &str| Ok("/srv/elsewhere/src.m3u8".to_string());
    let resolved = f
        .resolve_with(&simple("#src:output=hls"), None, None, &lookup)
        .unwrap();
    assert_eq!(resolved.inputs[0].address, "/srv/elsewhere/src.m3u8");
    assert!(f.resolve(&simple("/srv/elsewhere/src.m3u8")).is_err());
}

#[test]
fn the_whip_input_reads_the_ingest_sdp_over_udp() {
    let f = Fixture::new();
    // The SDP file lies among the server's own files, which no definition may name itself.
    let sdp = f.disk.parent().unwrap().join("webrtc/cam/whip.sdp");
    let sdp_text = sdp.to_string_lossy().into_owned();
    let mut config = simple("{whip}");
    config.input[0].options = strings(&["-fflags", "nobuffer"]);
    let whip = |read_timeout| {
        Some(WhipInput {
            sdp_path: &sdp,
            read_timeout,
        })
    };

    for (timeout, listen) in [
        (Some(Duration::from_secs(10)), "10"),
        // FFmpeg counts whole seconds; less than one would mean "wait forever".
        (Some(Duration::from_millis(300)), "1"),
        (None, "-1"),
    ] {
        let resolved = f
            .resolve_with(&config, None, whip(timeout), &no_process)
            .unwrap();
        let input = strings(&[
            "-fflags",
            "nobuffer",
            "-protocol_whitelist",
            "file,udp,rtp",
            "-listen_timeout",
            listen,
            "-i",
            &sdp_text,
        ]);
        assert_eq!(resolved.probe_argv, input, "{timeout:?}");
        assert_eq!(resolved.inputs[0].address, sdp_text);
    }

    assert_eq!(
        f.resolve(&config).unwrap_err(),
        "the WHIP input has no ports"
    );
    assert!(
        f.resolve(&simple(&sdp_text)).is_err(),
        "the same file named directly is refused"
    );
}

fn leg_config(address: &str, options: &[&str], video_map: &str, audio_map: &str) -> ProcessConfig {
    let mut config = simple(address);
    config.input[0].options = strings(options);
    config.webrtc = WebRtcSettings {
        enabled: true,
        video_map: video_map.into(),
        audio_map: audio_map.into(),
        ..Default::default()
    };
    config
}

fn legs_of(config: &ProcessConfig) -> Vec<String> {
    legs_known(config, None)
}

fn legs_known(config: &ProcessConfig, known: Option<&InputCodecs>) -> Vec<String> {
    let encoding = LegEncoding {
        video_encoder: Some("x264enc".into()),
        settings: crate::model::transcode::TranscodeSettings::default(),
    };
    webrtc_legs(
        config,
        known,
        &encoding,
        Path::new("/data/webrtc/cam/stream.sdp"),
        (40000, 40002),
    )
}

#[test]
fn coded_sources_get_one_optional_mpegts_leg_that_cannot_fail_the_process() {
    let tee = strings(&[
        "-f",
        "tee",
        "[f=rtp_mpegts:onfail=ignore]rtp://127.0.0.1:40000?pkt_size=1328",
    ]);
    let legs = |video: &str, audio: &str| {
        legs_of(&leg_config(
            "srt://0.0.0.0:9000?mode=listener",
            &[],
            video,
            audio,
        ))
    };
    // The first stream of each kind, optional: an absent medium is simply not there.
    assert_eq!(
        legs("", ""),
        [
            &strings(&["-map", "0:v:0?", "-map", "0:a:0?", "-c:v", "copy", "-c:a", "copy"])[..],
            &tee
        ]
        .concat()
    );
    assert_eq!(
        legs("none", ""),
        [&strings(&["-map", "0:a:0?", "-c:a", "copy"])[..], &tee].concat()
    );
    // The user's maps are kept, made optional; `none` drops the medium.
    assert_eq!(
        legs(" 1:v:1 ", "none"),
        [&strings(&["-map", "1:v:1?", "-c:v", "copy"])[..], &tee].concat()
    );
    assert_eq!(
        legs("none", "0:a?"),
        [&strings(&["-map", "0:a?", "-c:a", "copy"])[..], &tee].concat()
    );
    assert!(legs("none", "none").is_empty());
    // With one user map, the other medium is the first of its kind of the same input.
    assert_eq!(
        legs("1:v", "")[..4],
        strings(&["-map", "1:v?", "-map", "1:a:0?"])
    );
}

#[test]
fn raw_sources_are_encoded_once_for_the_leg() {
    for (address, options) in [
        ("testsrc2=size=640x360", &["-f", "lavfi"][..]),
        ("/dev/video0", &["-framerate", "30", "-f", "v4l2"][..]),
        ("{diskfs}/tone.wav", &[][..]),
    ] {
        let config = leg_config(address, options, "", "");
        assert_eq!(source_kind(&config), SourceKind::Raw, "{address}");
        let legs = legs_of(&config);
        let at = |codec: &str| legs.iter().position(|a| a == codec);
        assert_eq!(legs[at("-c:v").unwrap() + 1], "libx264", "{legs:?}");
        assert_eq!(legs[at("-c:a").unwrap() + 1], "libopus", "{legs:?}");
        assert!(at("copy").is_none(), "{legs:?}");
        assert_eq!(legs[legs.len() - 2], "tee");
    }
}

#[test]
fn every_input_offers_its_first_streams_and_raw_ones_are_encoded() {
    let mut config = leg_config("testsrc2", &["-f", "lavfi"], "", "");
    config.input.push(io("audio", "sine", &["-f", "lavfi"]));
    let legs = legs_of(&config);
    assert_eq!(
        legs[..8],
        strings(&["-map", "0:v:0?", "-map", "1:v:0?", "-map", "0:a:0?", "-map", "1:a:0?"])
    );
    assert!(legs.windows(2).any(|w| w == ["-c:v", "libx264"]));
    assert!(legs.windows(2).any(|w| w == ["-c:a", "libopus"]));
}

#[test]
fn webm_sources_get_per_medium_legs_with_opus_audio() {
    let config = leg_config("{diskfs}/clip.webm", &[], "", "");
    assert_eq!(source_kind(&config), SourceKind::WebM);
    let legs = legs_of(&config);
    let head = strings(&["-sdp_file", "/data/webrtc/cam/stream.sdp"]);
    let video = strings(&[
        "-an",
        "-sn",
        "-dn",
        "-c:v",
        "copy",
        "-strict",
        "experimental",
        "-f",
        "rtp",
        "-cname",
        "streamcore-leg",
        "-payload_type",
        "96",
        "rtp://127.0.0.1:40000?pkt_size=1200",
    ]);
    assert_eq!(legs[..2], head);
    assert_eq!(legs[2..2 + video.len()], video);
    assert!(legs.ends_with(&strings(&["rtp://127.0.0.1:40002?pkt_size=1200"])));
    assert!(legs.windows(2).any(|w| w == ["-c:a", "libopus"]));
    assert_eq!(
        source_kind(&leg_config("rtmp://x/live", &["-f", "webm"], "", "")),
        SourceKind::WebM
    );
    assert_eq!(
        source_kind(&leg_config("https://cdn/live.m3u8?x=a.webm", &[], "", "")),
        SourceKind::Coded
    );
}

/// A WebM input that waits for a publisher is never probed or restarted, and a per-medium leg
/// would fail FFmpeg (and the process's other outputs) when the publisher sends only one medium:
/// its video is encoded into the TS leg, whose optional maps survive a missing medium.
#[test]
fn webm_publisher_inputs_take_the_ts_leg_with_video_encoded() {
    let config = leg_config(
        "http://0.0.0.0:8088/in.webm",
        &["-listen", "1", "-f", "webm"],
        "",
        "",
    );
    assert_eq!(leg_format(&config, None), LegFormat::MpegTs);
    let legs = legs_of(&config);
    assert_eq!(legs[..4], strings(&["-map", "0:v:0?", "-map", "0:a:0?"]));
    assert!(legs.windows(2).any(|w| w == ["-c:v", "libx264"]));
    assert!(legs.windows(2).any(|w| w == ["-c:a", "libopus"]));
    assert!(!legs.iter().any(|a| a == "-sdp_file"));
}

#[test]
fn refusals_of_the_access_rules_are_the_message() {
    let f = Fixture::new();
    let mut global = simple("rtmp://origin/live");
    global.options = strings(&["-vstats_file", "/etc/vstats"]);
    let mut input_option = simple("rtmp://origin/live");
    input_option.input[0].options = strings(&["-vf", "movie=/etc/passwd"]);
    let mut output = simple("rtmp://origin/live");
    output.output[0].address = "{diskfs}/../../escape.mp4".into();

    let escape = format!(
        "output address '{}/../../escape.mp4' is not allowed: ",
        f.disk()
    );
    for (config, start) in [
        (global, "option -vstats_file '/etc/vstats' is not allowed: "),
        (
            input_option,
            "option -vf 'movie=/etc/passwd' is not allowed: ",
        ),
        (
            simple("/etc/shadow"),
            "input address '/etc/shadow' is not allowed: ",
        ),
        (output, escape.as_str()),
    ] {
        let error = f.resolve(&config).unwrap_err();
        assert!(error.starts_with(start), "{error}");
    }
    let error = f.resolve(&simple("/etc/shadow")).unwrap_err();
    assert!(
        error.contains("local files are read only inside the data directory"),
        "the rule is named: {error}"
    );
}

#[test]
fn malformed_definitions_are_refused_with_what_to_fix() {
    let f = Fixture::new();
    let with = |change: &dyn Fn(&mut ProcessConfig)| {
        let mut config = simple("rtmp://origin/live");
        change(&mut config);
        f.resolve(&config).unwrap_err()
    };
    assert_eq!(with(&|c| c.id = "  ".into()), "an empty ID is not allowed");
    assert!(with(&|c| c.id = "a/b".into()).starts_with("invalid process ID"));
    assert_eq!(
        with(&|c| c.output.clear()),
        "at least one input and one output need to be defined"
    );
    assert_eq!(
        with(&|c| c.input.push(io("in", "rtmp://other/live", &[]))),
        "the input ID 'in' is already in use"
    );
    assert_eq!(
        with(&|c| c.output[0].id = " ".into()),
        "an output ID must not be empty"
    );
    assert_eq!(
        with(&|c| c.input[0].address = " ".into()),
        "the address of input 'in' must not be empty"
    );
}

/// `{rtmp}` and `{srt}` as Core resolves them: addresses only, the section picks the SRT mode,
/// token and passphrase appended, `$processid` in parameters, and nothing while a server is off.
#[test]
fn server_placeholders_follow_core() {
    let mut f = Fixture::new();
    let rtmp = crate::config::RtmpConfig {
        enable: true,
        app: "/live".into(),
        token: "tok".into(),
        ..Default::default()
    };
    let srt = crate::config::SrtConfig {
        enable: true,
        address: "127.0.0.1:6001".into(),
        passphrase: "0123456789ab".into(),
        token: "t2".into(),
        ..Default::default()
    };
    f.servers = crate::ingest::templates(&rtmp, &srt);
    let config = process(
        "p1",
        vec![io("in", "{srt,name=cam,mode=publish}", &["{rtmp,name=x}"])],
        vec![
            io("out", "{rtmp,name=$processid.stream}", &[]),
            io("o2", "{srt,name=$outputid,latency=5000}", &[]),
        ],
    );
    let r = f.resolve(&config).unwrap();
    assert_eq!(
        r.inputs[0].address,
        "srt://127.0.0.1:6001?mode=caller&transtype=live&latency=20000&streamid=cam,mode:request,token:t2&passphrase=0123456789ab"
    );
    assert!(
        r.argv.contains(&"{rtmp,name=x}".to_string()),
        "options keep it"
    );
    assert_eq!(
        r.outputs[0].address,
        "rtmp://localhost:1935/live/p1.stream?token=tok"
    );
    assert_eq!(
        r.outputs[1].address,
        "srt://127.0.0.1:6001?mode=caller&transtype=live&latency=5000&streamid=o2,mode:publish,token:t2&passphrase=0123456789ab"
    );
    f.servers = ServerTemplates::default();
    let off = process(
        "p1",
        vec![io("in", "{rtmp,name=a}", &[])],
        vec![io("out", "-", &["-f", "null"])],
    );
    assert!(f.resolve(&off).unwrap_err().contains("must not be empty"));
}

/// What FFmpeg reports for inputs of `(kind, codec)` streams.
fn reported(inputs: &[&[(&str, &str)]]) -> InputCodecs {
    let streams: Vec<ProbeIo> = inputs
        .iter()
        .enumerate()
        .flat_map(|(i, streams)| {
            streams
                .iter()
                .enumerate()
                .map(move |(n, (kind, codec))| ProbeIo {
                    index: i as u64,
                    stream: n as u64,
                    r#type: kind.to_string(),
                    codec: codec.to_string(),
                    ..Default::default()
                })
        })
        .collect();
    InputCodecs::from_streams(&streams).unwrap()
}

fn has(legs: &[String], pair: [&str; 2]) -> bool {
    legs.windows(2).any(|w| w == pair)
}

#[test]
fn reported_codecs_decide_encode_or_copy_whatever_the_container() {
    // Raw video and PCM in NUT: the rules see a coded file and would copy them into TS.
    let nut = leg_config("{diskfs}/capture.nut", &[], "", "");
    assert!(has(&legs_of(&nut), ["-c:v", "copy"]));
    let known = reported(&[&[("video", "rawvideo"), ("audio", "pcm_s16le")]]);
    let legs = legs_known(&nut, Some(&known));
    assert_eq!(leg_format(&nut, Some(&known)), LegFormat::MpegTs);
    assert!(
        has(&legs, ["-c:v", "libx264"]) && has(&legs, ["-c:a", "libopus"]),
        "{legs:?}"
    );
    // H.264 + AAC in a file named .webm: copied into TS, not split per medium.
    let webm = leg_config("{diskfs}/h264.webm", &[], "", "");
    let known = reported(&[&[("video", "h264"), ("audio", "aac")]]);
    assert_eq!(leg_format(&webm, None), LegFormat::PerMedium);
    assert_eq!(leg_format(&webm, Some(&known)), LegFormat::MpegTs);
    assert_eq!(
        legs_known(&webm, Some(&known))[..8],
        strings(&["-map", "0:v:0?", "-map", "0:a:0?", "-c:v", "copy", "-c:a", "copy"])
    );
    // E-AC-3 has no chain on the server: encoded to Opus instead of listed as unsupported.
    let known = reported(&[&[("video", "h264"), ("audio", "eac3")]]);
    let legs = legs_known(&webm, Some(&known));
    assert!(has(&legs, ["-c:v", "copy"]) && has(&legs, ["-c:a", "libopus"]));
}

#[test]
fn vp8_and_vp9_get_their_own_legs_in_any_container() {
    let mkv = leg_config("https://cdn/vod/clip.mkv", &[], "", "");
    let known = reported(&[&[("video", "vp9"), ("audio", "opus")]]);
    assert_eq!(leg_format(&mkv, None), LegFormat::MpegTs);
    assert_eq!(leg_format(&mkv, Some(&known)), LegFormat::PerMedium);
    let legs = legs_known(&mkv, Some(&known));
    assert_eq!(legs[0], "-sdp_file");
    assert!(legs.contains(&"rtp://127.0.0.1:40000?pkt_size=1200".to_string()));
    assert!(legs.contains(&"rtp://127.0.0.1:40002?pkt_size=1200".to_string()));
    assert_eq!(
        legs,
        legs_of(&leg_config("{diskfs}/clip.webm", &[], "", ""))
    );
}

#[test]
fn a_medium_the_source_lacks_gets_no_leg() {
    // Video-only VP8: one RTP leg, no audio output that would fail FFmpeg for want of a stream.
    let webm = leg_config("{diskfs}/video.webm", &[], "", "");
    let legs = legs_known(&webm, Some(&reported(&[&[("video", "vp8")]])));
    assert_eq!(legs.iter().filter(|a| *a == "rtp").count(), 1, "{legs:?}");
    assert!(legs.contains(&"rtp://127.0.0.1:40000?pkt_size=1200".to_string()));
    assert!(!legs.iter().any(|a| a.contains("40002")), "{legs:?}");
    // Audio-only Vorbis or Opus: the TS leg, Vorbis encoded to Opus, Opus copied; no video map.
    let ogg = leg_config("{diskfs}/audio.ogg", &[], "", "");
    let tee = "[f=rtp_mpegts:onfail=ignore]rtp://127.0.0.1:40000?pkt_size=1328";
    let legs = legs_known(&ogg, Some(&reported(&[&[("audio", "vorbis")]])));
    assert_eq!(legs[..4], strings(&["-map", "0:a:0?", "-c:a", "libopus"]));
    assert_eq!(legs.last().unwrap(), tee);
    let legs = legs_known(&ogg, Some(&reported(&[&[("audio", "opus")]])));
    assert_eq!(
        legs,
        strings(&["-map", "0:a:0?", "-c:a", "copy", "-f", "tee", tee])
    );
    // Nothing to send: no legs at all.
    let none = reported(&[&[("subtitle", "webvtt")]]);
    assert!(legs_known(&ogg, Some(&none)).is_empty());
}

#[test]
fn maps_beyond_the_simple_grammar_fall_back_to_the_rules() {
    let known = reported(&[
        &[("video", "h264"), ("audio", "aac"), ("audio", "vorbis")],
        &[("video", "rawvideo")],
    ]);
    use super::codecs::Selected::*;
    let cases = [
        ("0", 'v', Codec("h264")),
        ("0", 'a', Codec("aac")),
        ("0:a:1?", 'a', Codec("vorbis")),
        ("0:2", 'a', Codec("vorbis")),
        ("1:v", 'v', Codec("rawvideo")),
        ("1:a:0?", 'a', Absent),
        ("0:a:5", 'a', Absent),
        ("2:v", 'v', Unknown),
        ("0:m:language:eng", 'a', Unknown),
        ("-0:a", 'a', Unknown),
        ("[out]", 'v', Unknown),
    ];
    for (map, medium, selected) in cases {
        assert_eq!(known.select(map, medium), selected, "{map}");
    }
    // The second audio stream (Vorbis) is encoded; an unparsable map keeps the rules (copy).
    let config = leg_config("{diskfs}/multi.mkv", &[], "", "0:a:1");
    assert!(has(&legs_known(&config, Some(&known)), ["-c:a", "libopus"]));
    let config = leg_config("{diskfs}/multi.mkv", &[], "", "0:m:language:eng");
    assert!(has(&legs_known(&config, Some(&known)), ["-c:a", "copy"]));
}

/// The TS leg's datagrams hold what copied video brings in about 16 ms where FFmpeg reported
/// the input's bitrate, between 7 and 42 TS packets; anything unknown or encoded keeps 7.
#[test]
fn ts_datagrams_grow_with_the_reported_bitrate_of_copied_video() {
    let file = leg_config("{diskfs}/clip.mkv", &["-re"], "", "");
    let with_bitrate = |kbps: f64, video: &str| {
        let streams = [("video", video), ("audio", "opus")].map(|(kind, codec)| ProbeIo {
            r#type: kind.into(),
            codec: codec.into(),
            input_bitrate_kbps: kbps,
            ..Default::default()
        });
        InputCodecs::from_streams(&streams).unwrap()
    };
    let size = |known: Option<&InputCodecs>| {
        let legs = legs_known(&file, known);
        let tee = legs.last().unwrap().clone();
        tee.rsplit_once("pkt_size=")
            .unwrap()
            .1
            .parse::<usize>()
            .unwrap()
    };
    let packets = |size: usize| (size - 12) as f64 / 188.0;
    assert_eq!(packets(size(Some(&with_bitrate(2409.0, "h264")))), 25.0);
    assert_eq!(packets(size(Some(&with_bitrate(300.0, "h264")))), 7.0);
    assert_eq!(packets(size(Some(&with_bitrate(20_000.0, "h264")))), 42.0);
    // Unknown (live) and encoded video: the small datagrams.
    assert_eq!(packets(size(Some(&with_bitrate(0.0, "h264")))), 7.0);
    assert_eq!(packets(size(None)), 7.0);
    assert_eq!(packets(size(Some(&with_bitrate(2409.0, "rawvideo")))), 7.0);
    // Per-stream figures add up where the input has none of its own.
    let streams = [("video", 1800.0), ("audio", 128.0)].map(|(kind, kbps)| ProbeIo {
        r#type: kind.into(),
        codec: if kind == "video" { "h264" } else { "aac" }.into(),
        bitrate_kbps: kbps,
        ..Default::default()
    });
    let summed = InputCodecs::from_streams(&streams).unwrap();
    assert_eq!(summed.bitrate_kbps(0), Some(1928.0));
    assert_eq!(packets(size(Some(&summed))), 20.0);
}
