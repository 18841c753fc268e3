//! FFmpeg capability discovery ("skills"), shaped like datarhei Core's
//! `GET /api/v3/skills` so restreamer-ui can decide which encoders, filters,
//! devices and protocols to offer.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::Serialize;
use utoipa::ToSchema;

/// A single ffmpeg call must never hang the API (e.g. a wrapper script waiting on stdin).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the API reports about the ffmpeg binary (datarhei Skills schema).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Skills {
    pub ffmpeg: FfmpegInfo,
    /// Singular `filter` because that is the key datarhei clients read.
    pub filter: Vec<Named>,
    pub hwaccels: Vec<Named>,
    pub codecs: Codecs,
    pub devices: Devices,
    pub formats: Formats,
    pub protocols: Protocols,
}

/// Build information from `ffmpeg -version`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct FfmpegInfo {
    /// Plain `x.y.z` (distro suffix dropped) because the ui matches it against `^5.1.0 || ^6.1.0`;
    /// "" when unrecognised.
    pub version: String,
    pub compiler: String,
    pub configuration: String,
    pub libraries: Vec<Library>,
}

/// Versions keep ffmpeg's spacing (`57. 28.100`); a compiled/linked mismatch hints at a broken install.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Library {
    pub name: String,
    pub compiled: String,
    pub linked: String,
}

/// The `{id, name}` pair datarhei uses for filters, hwaccels, formats and protocols; `id` goes on
/// the command line, `name` repeats it where ffmpeg prints no description.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Named {
    pub id: String,
    pub name: String,
}

/// Codecs split by media type, as the ui offers them per stream kind (data codecs are useless there).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Codecs {
    pub audio: Vec<Codec>,
    pub video: Vec<Codec>,
    pub subtitle: Vec<Codec>,
}

/// A codec with the implementations that handle it; the ui picks `-c:v`/`-c:a` values from
/// `encoders`. Both lists serialize as `[]` rather than null so clients can iterate blindly.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Codec {
    pub id: String,
    pub name: String,
    pub encoders: Vec<String>,
    pub decoders: Vec<String>,
}

/// Device formats from `ffmpeg -devices`, split by direction.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Devices {
    pub demuxers: Vec<Device>,
    pub muxers: Vec<Device>,
}

/// A device format (e.g. `video4linux2,v4l2`); `devices` stays empty since we do not probe hardware.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub devices: Vec<HwDevice>,
}

/// One concrete device (e.g. `/dev/video0`); kept so the schema matches datarhei's.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct HwDevice {
    pub id: String,
    pub name: String,
    pub extra: String,
    pub media: String,
}

/// Container formats ffmpeg can read (`demuxers`) and write (`muxers`).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Formats {
    pub demuxers: Vec<Named>,
    pub muxers: Vec<Named>,
}

/// URL schemes ffmpeg can read from and write to.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Protocols {
    pub input: Vec<Named>,
    pub output: Vec<Named>,
}

/// Why skills could not be read; every message names the binary so a misconfigured
/// `ffmpeg.binary` is obvious from the log.
#[derive(Debug, thiserror::Error)]
pub enum SkillsError {
    /// Nothing at the path, or a bare name not found in `PATH`.
    #[error("ffmpeg binary {0} not found")]
    NotFound(PathBuf),
    /// The file exists but the OS refused to run it.
    #[error("ffmpeg binary {0} cannot be executed: {1}")]
    NotExecutable(PathBuf, #[source] std::io::Error),
    /// It ran but did not behave like ffmpeg (failed, or printed no version banner).
    #[error("{0} does not look like ffmpeg: {1}")]
    NotFfmpeg(PathBuf, String),
    /// A call hung past the per-call limit (seconds) and was killed.
    #[error("ffmpeg binary {0} did not answer `{1}` within {2} s")]
    Timeout(PathBuf, String, u64),
}

/// Runs the binary (with an EMPTY environment, like datarhei, and a timeout of ~10 s per call)
/// and parses every listing. The empty environment keeps the result independent of the server's
/// own locale and variables, exactly as processes are later started.
pub async fn detect(binary: &Path) -> Result<Skills, SkillsError> {
    let path = resolve(binary)?;
    let version = run(&path, "-version").await?;
    if !version.lines().any(|l| l.starts_with("ffmpeg version ")) {
        let why = "`-version` printed no `ffmpeg version` line".to_string();
        return Err(SkillsError::NotFfmpeg(path, why));
    }
    let (codecs, filters, formats, protocols, hwaccels, devices) = tokio::try_join!(
        run(&path, "-codecs"),
        run(&path, "-filters"),
        run(&path, "-formats"),
        run(&path, "-protocols"),
        run(&path, "-hwaccels"),
        run(&path, "-devices"),
    )?;
    Ok(Skills {
        ffmpeg: parse_version(&version),
        filter: parse_filters(&filters),
        hwaccels: parse_hwaccels(&hwaccels),
        codecs: parse_codecs(&codecs),
        devices: parse_devices(&devices),
        formats: parse_formats(&formats),
        protocols: parse_protocols(&protocols),
    })
}

/// The child gets an empty environment, so a bare name must be looked up in our own PATH.
fn resolve(binary: &Path) -> Result<PathBuf, SkillsError> {
    if binary.as_os_str().is_empty() || binary.to_string_lossy().contains('/') {
        return Ok(binary.to_path_buf());
    }
    let is_executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(binary))
        .find(|p| is_executable(p))
        .ok_or_else(|| SkillsError::NotFound(binary.to_path_buf()))
}

/// Returns stdout of `binary -hide_banner <arg>`; real ffmpeg exits 0 for every listing.
async fn run(path: &Path, arg: &str) -> Result<String, SkillsError> {
    let child = tokio::process::Command::new(path)
        .args(["-hide_banner", arg])
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true) // the timeout drops the future; the child must not outlive it
        .output();
    let output = match tokio::time::timeout(CALL_TIMEOUT, child).await {
        Err(_) => {
            let secs = CALL_TIMEOUT.as_secs();
            return Err(SkillsError::Timeout(path.into(), arg.into(), secs));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SkillsError::NotFound(path.into()))
        }
        Ok(Err(e)) => return Err(SkillsError::NotExecutable(path.into(), e)),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let why = format!("`{arg}` failed with {}", output.status);
        return Err(SkillsError::NotFfmpeg(path.into(), why));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// FFmpeg's listings are ASCII; the patterns use ASCII classes for small compiled regexes (see
/// `process::progress`).
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// Parses `ffmpeg -version`; an unknown version string yields "" instead of failing.
pub fn parse_version(text: &str) -> FfmpegInfo {
    static VERSION: LazyLock<Regex> =
        LazyLock::new(|| re(r"^ffmpeg version ([0-9]+\.[0-9]+(\.[0-9]+)?)"));
    static LIBRARY: LazyLock<Regex> = LazyLock::new(|| {
        re(
            r"^(lib[a-z]+)[[:space:]]+([0-9]+\.[[:space:]]*[0-9]+\.[[:space:]]*[0-9]+)[[:space:]]*/[[:space:]]*([0-9]+\.[[:space:]]*[0-9]+\.[[:space:]]*[0-9]+)",
        )
    });
    let mut info = FfmpegInfo::default();
    for line in text.lines() {
        if let Some(c) = VERSION.captures(line) {
            info.version = c[1].to_string();
            if c.get(2).is_none() {
                info.version.push_str(".0");
            }
        } else if let Some(rest) = line.strip_prefix("built with ") {
            info.compiler = rest.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("configuration: ") {
            info.configuration = rest.trim().to_string();
        } else if let Some(c) = LIBRARY.captures(line) {
            info.libraries.push(Library {
                name: c[1].to_string(),
                compiled: c[2].to_string(),
                linked: c[3].to_string(),
            });
        }
    }
    info
}

/// The legend of `-codecs`/`-formats`/`-devices` looks like data, so only lines after its `--` rule count.
fn after_rule(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("--"))
        .skip(1)
}

/// Parses `ffmpeg -codecs`; a D/E flag without an explicit list means the codec id is the implementation.
pub fn parse_codecs(text: &str) -> Codecs {
    static LINE: LazyLock<Regex> = LazyLock::new(|| {
        re(
            r"^[[:space:]]([D.])([E.])([VASDT])[I.][L.][S.][[:space:]]+([^[:space:]]+)[[:space:]]+(.*)$",
        )
    });
    static LIST: LazyLock<Regex> =
        LazyLock::new(|| re(r"[[:space:]]*\((decoders|encoders):([^)]*)\)"));
    let mut codecs = Codecs::default();
    for c in after_rule(text).filter_map(|l| LINE.captures(l)) {
        let id = c[4].to_string();
        let (mut decoders, mut encoders) = (None, None);
        for l in LIST.captures_iter(&c[5]) {
            let names = l[2].split_whitespace().map(String::from).collect();
            match &l[1] {
                "decoders" => decoders = Some(names),
                _ => encoders = Some(names),
            }
        }
        let implementations = |flag: &str, list: Option<Vec<String>>| match flag {
            "." => Vec::new(),
            _ => list.unwrap_or_else(|| vec![id.clone()]),
        };
        let codec = Codec {
            name: LIST.replace_all(&c[5], "").trim().to_string(),
            decoders: implementations(&c[1], decoders),
            encoders: implementations(&c[2], encoders),
            id,
        };
        match &c[3] {
            "V" => codecs.video.push(codec),
            "A" => codecs.audio.push(codec),
            "S" => codecs.subtitle.push(codec),
            _ => {}
        }
    }
    codecs
}

/// Parses `ffmpeg -filters`; the legend never matches because its flags are indented differently.
pub fn parse_filters(text: &str) -> Vec<Named> {
    static LINE: LazyLock<Regex> = LazyLock::new(|| {
        re(
            r"^[[:space:]][T.][S.][C.][[:space:]]+([^[:space:]]+)[[:space:]]+[AVN|]+->[AVN|]+[[:space:]]+(.*)$",
        )
    });
    text.lines()
        .filter_map(|l| LINE.captures(l))
        .map(|c| Named {
            id: c[1].to_string(),
            name: c[2].trim().to_string(),
        })
        .collect()
}

/// Shared by `-formats` and `-devices`: returns (demuxers, muxers); a `DE` entry lands in both.
fn split_by_direction<T: Clone>(text: &str, make: impl Fn(Named) -> T) -> (Vec<T>, Vec<T>) {
    static LINE: LazyLock<Regex> = LazyLock::new(|| {
        re(r"^[[:space:]]([D ])([E ])[[:space:]]+([^[:space:]]+)[[:space:]]*(.*)$")
    });
    let (mut demuxers, mut muxers) = (Vec::new(), Vec::new());
    for c in after_rule(text).filter_map(|l| LINE.captures(l)) {
        let entry = make(Named {
            id: c[3].to_string(),
            name: c[4].trim().to_string(),
        });
        if &c[2] == "E" {
            muxers.push(entry.clone());
        }
        if &c[1] == "D" {
            demuxers.push(entry);
        }
    }
    (demuxers, muxers)
}

/// Parses `ffmpeg -formats`; the id keeps ffmpeg's alias list (`mov,mp4,m4a,...`) like datarhei.
pub fn parse_formats(text: &str) -> Formats {
    let (demuxers, muxers) = split_by_direction(text, |n| n);
    Formats { demuxers, muxers }
}

/// Parses `ffmpeg -devices` without probing for concrete hardware.
pub fn parse_devices(text: &str) -> Devices {
    let (demuxers, muxers) = split_by_direction(text, |Named { id, name }| Device {
        id,
        name,
        devices: Vec::new(),
    });
    Devices { demuxers, muxers }
}

/// Names listed one per line under `header` until the next `Something:` header; ffmpeg prints no
/// descriptions for these, so `name` repeats `id`.
fn names_after(text: &str, header: &str) -> Vec<Named> {
    text.lines()
        .map(str::trim)
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.ends_with(':'))
        .filter(|l| !l.is_empty())
        .map(|id| Named {
            id: id.into(),
            name: id.into(),
        })
        .collect()
}

/// Parses `ffmpeg -protocols` (`Input:` and `Output:` sections).
pub fn parse_protocols(text: &str) -> Protocols {
    Protocols {
        input: names_after(text, "Input:"),
        output: names_after(text, "Output:"),
    }
}

/// Parses `ffmpeg -hwaccels`.
pub fn parse_hwaccels(text: &str) -> Vec<Named> {
    names_after(text, "Hardware acceleration methods:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    // Trimmed excerpts of real Debian 12 FFmpeg 5.1.9 output (legends partly kept on purpose).
    const VERSION: &str = "\
ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers
built with gcc 12 (Debian 12.2.0-14+deb12u1)
configuration: --prefix=/usr --extra-version=0+deb12u1 --toolchain=hardened --enable-gpl
libavutil      57. 28.100 / 57. 28.100
libavdevice    59.  7.100 / 59.  7.100
libavfilter     8. 44.100 /  8. 44.100
";
    const CODECS: &str = "\
Codecs:
 D..... = Decoding supported
 ..V... = Video codec
 .....S = Lossless compression
 -------
 D.VI.S 012v                 Uncompressed 4:2:2 10-bit
 .EVIL. a64_multi            Multicolor charset for Commodore 64 (encoders: a64multi )
 DEV.LS dirac                Dirac (encoders: vc2 )
 DEV.LS h264                 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (decoders: h264 h264_v4l2m2m h264_qsv h264_cuvid ) (encoders: libx264 libx264rgb h264_nvenc h264_omx h264_qsv h264_v4l2m2m h264_vaapi )
 DEAIL. aac                  AAC (Advanced Audio Coding) (decoders: aac aac_fixed )
 ..D... bin_data             binary data
 ..T... ttf                  TrueType font
 DES... ass                  ASS (Advanced SSA) subtitle (decoders: ssa ass ) (encoders: ssa ass )
";
    const FILTERS: &str = "\
Filters:
  T.. = Timeline support
  A = Audio input/output
  | = Source or sink filter
 ..C amix              N->A       Audio mixing.
 ..C scale             V->V       Scale the input video size and/or convert the image format.
 ... abuffer           |->A       Buffer audio frames, and make them accessible to the filterchain.
";
    const FORMATS: &str = "\
File formats:
 D. = Demuxing supported
 .E = Muxing supported
 --
 D  3dostr          3DO STR
  E 3g2             3GP2 (3GPP2 file format)
 DE flv             FLV (Flash Video)
 D  mov,mp4,m4a,3gp,3g2,mj2 QuickTime / MOV
";
    const DEVICES: &str = "\
Devices:
 D. = Demuxing supported
 .E = Muxing supported
 --
 DE alsa            ALSA audio output
  E caca            caca (color ASCII art) output device
 D  libcdio         \x20
 DE video4linux2,v4l2 Video4Linux2 output device
";

    /// Going through JSON also pins the wire shape clients see (e.g. `[]`, never null).
    fn json(value: impl Serialize) -> Value {
        serde_json::to_value(value).unwrap()
    }

    fn ids(list: &Value) -> Vec<&str> {
        let list = list.as_array().unwrap();
        list.iter().map(|v| v["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn version() {
        let info = json(parse_version(VERSION));
        assert_eq!(info["version"], "5.1.9");
        assert_eq!(info["compiler"], "gcc 12 (Debian 12.2.0-14+deb12u1)");
        assert_eq!(info["configuration"], VERSION.lines().nth(2).unwrap()[15..]);
        let lib = json!({"name": "libavdevice", "compiled": "59.  7.100", "linked": "59.  7.100"});
        assert_eq!(info["libraries"][1], lib);
        assert_eq!(info["libraries"][2]["linked"], "8. 44.100");
        let short = parse_version("ffmpeg version 6.1 Copyright (c) 2000-2023");
        assert_eq!(short.version, "6.1.0");
        assert_eq!(parse_version("ffmpeg version N-111-g0ab").version, "");
    }

    #[test]
    fn codecs() {
        let c = json(parse_codecs(CODECS));
        assert_eq!(ids(&c["video"]), ["012v", "a64_multi", "dirac", "h264"]);
        assert_eq!(ids(&c["audio"]), ["aac"]);
        assert_eq!(ids(&c["subtitle"]), ["ass"]);
        let v012 = json!({"id": "012v", "name": "Uncompressed 4:2:2 10-bit",
                          "encoders": [], "decoders": ["012v"]});
        assert_eq!(c["video"][0], v012);
        assert_eq!(c["video"][1]["decoders"], json!([]));
        assert_eq!(c["video"][2]["decoders"], json!(["dirac"]));
        assert_eq!(c["video"][2]["encoders"], json!(["vc2"]));
        let h264 = &c["video"][3];
        assert_eq!(h264["name"], "H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10");
        assert_eq!(h264["decoders"][3], "h264_cuvid");
        assert_eq!(h264["encoders"][0], "libx264");
        assert_eq!(c["audio"][0]["name"], "AAC (Advanced Audio Coding)");
        assert_eq!(c["audio"][0]["encoders"], json!(["aac"]));
    }

    #[test]
    fn filters_formats_devices() {
        let f = json(parse_filters(FILTERS));
        assert_eq!(ids(&f), ["amix", "scale", "abuffer"]);
        assert_eq!(f[0], json!({"id": "amix", "name": "Audio mixing."}));
        let f = json(parse_formats(FORMATS));
        assert_eq!(
            ids(&f["demuxers"]),
            ["3dostr", "flv", "mov,mp4,m4a,3gp,3g2,mj2"]
        );
        assert_eq!(ids(&f["muxers"]), ["3g2", "flv"]);
        assert_eq!(f["demuxers"][2]["name"], "QuickTime / MOV");
        let d = json(parse_devices(DEVICES));
        assert_eq!(
            ids(&d["demuxers"]),
            ["alsa", "libcdio", "video4linux2,v4l2"]
        );
        assert_eq!(ids(&d["muxers"]), ["alsa", "caca", "video4linux2,v4l2"]);
        let cdio = json!({"id": "libcdio", "name": "", "devices": []});
        assert_eq!(d["demuxers"][1], cdio);
    }

    #[test]
    fn protocols_and_hwaccels() {
        let p = json(parse_protocols(
            "Supported file protocols:\nInput:\n  file\n  srt\nOutput:\n  rtmp\n",
        ));
        assert_eq!(ids(&p["input"]), ["file", "srt"]);
        assert_eq!(p["output"], json!([{"id": "rtmp", "name": "rtmp"}]));
        let hw = parse_hwaccels("Hardware acceleration methods:\nvdpau\ncuda\n\n");
        assert_eq!(ids(&json(hw)), ["vdpau", "cuda"]);
    }

    #[tokio::test]
    async fn detect_real_ffmpeg() {
        for binary in ["/usr/bin/ffmpeg", "ffmpeg"] {
            let skills = detect(Path::new(binary)).await.unwrap();
            assert!(!skills.ffmpeg.version.is_empty());
            let h264 = skills.codecs.video.iter().find(|c| c.id == "h264").unwrap();
            assert!(h264.encoders.iter().any(|e| e == "libx264"));
            assert!(skills.protocols.input.iter().any(|p| p.id == "file"));
        }
    }

    #[tokio::test]
    async fn detect_rejects_missing_and_foreign_binaries() {
        for path in ["/nonexistent/ffmpeg", "no-such-ffmpeg-binary"] {
            let err = detect(Path::new(path)).await.unwrap_err();
            assert!(matches!(err, SkillsError::NotFound(_)) && err.to_string().contains(path));
        }
        for path in ["/bin/false", "/bin/true"] {
            let err = detect(Path::new(path)).await.unwrap_err();
            assert!(matches!(err, SkillsError::NotFfmpeg(..)) && err.to_string().contains(path));
        }
        let err = detect(Path::new("/etc/hostname")).await.unwrap_err();
        assert!(matches!(err, SkillsError::NotExecutable(..)), "{err}");
    }
}
