//! Which addresses and option values a process definition may hand to FFmpeg.
//!
//! FFmpeg opens whatever it is given with the server's rights, so a process definition is a
//! request to read and write files. The rules follow datarhei Core (`ffmpeg.access.input/output`
//! allow and block lists of regular expressions; file outputs only inside the storage directory)
//! and go further where Core leaves a hole: local inputs (paths, `file:`, `concat:`, `data:`,
//! devices, file-reading filters) must be inside the data directory too unless an allow rule names
//! them, and option values that FFmpeg treats as file names are held to the output rule. The OS
//! sandbox in [`super::sandbox`] is the second wall for what no list of options can foresee.

use std::path::{Component, Path, PathBuf};

use regex::Regex;

use crate::config::AccessList;

/// URL schemes FFmpeg reaches over the network. Anything else with a scheme (`file:`, `pipe:`,
/// `concat:`, `subfile:`, `data:`, `cache:`, `crypto:`, ...) reads or writes local state.
const NETWORK_SCHEMES: &[&str] = &[
    "http", "https", "rtmp", "rtmps", "rtmpt", "rtmpts", "rtmpe", "rtmpte", "rtsp", "rtsps", "srt",
    "udp", "tcp", "tls", "rtp", "srtp", "mms", "mmsh", "mmst", "rist", "ftp", "icecast", "gopher",
    "gophers", "sftp", "unix",
];

/// Options whose value FFmpeg opens as a file (for reading or writing).
const PATH_OPTIONS: &[&str] = &[
    "-i",
    "-sdp_file",
    "-vstats_file",
    "-passlogfile",
    "-attach",
    "-filter_script",
    "-filter_complex_script",
    "-progress",
    "-hls_segment_filename",
    "-hls_key_info_file",
    "-segment_list",
    "-key_info_file",
    "-stats_file",
    "-fontfile",
    "-textfile",
    "-dump_attachment",
];

/// Options whose value FFmpeg joins to the output's directory: plain file names only, so they
/// cannot climb out of it.
const NAME_OPTIONS: &[&str] = &[
    "-master_pl_name",
    "-hls_fmp4_init_filename",
    "-init_seg_name",
    "-media_seg_name",
];

/// Filter-graph options; their values are checked for filters that open files.
const GRAPH_OPTIONS: &[&str] = &["-vf", "-af", "-filter", "-filter_complex", "-lavfi"];

/// Demuxers whose "address" is a device or a graph, not a URL.
const DEVICE_FORMATS: &[&str] = &[
    "v4l2",
    "video4linux2",
    "alsa",
    "pulse",
    "x11grab",
    "fbdev",
    "kmsgrab",
    "decklink",
    "jack",
    "oss",
    "openal",
    "sndio",
    "dshow",
    "avfoundation",
    "gdigrab",
];

/// Filters that open files, load code or take remote commands, and filter options that name a file.
/// A graph that uses one needs an allow rule (see [`Access::check_graph`]).
const FILE_FILTERS: &str = r"(?i)(?:^|[\[\],;\s])(?:movie|amovie|subtitles|ass|sendcmd|asendcmd|lut3d|lut1d|haldclut|ladspa|lv2|frei0r|frei0r_src|sofalizer|arnndn|dnn_\w+|sr|derain|zmq|azmq|vidstabdetect|vidstabtransform|libvmaf|vmafmotion|coreimage|coreimagesrc|openclsrc|program_opencl|cover_rect|find_rect)(?:[=@,;\[\s]|$)|(?:^|[:=\s'])(?:filename|textfile|fontfile|file|stats_file|log_path|log_fname|model|result|input|path)\s*=";

/// A refused address or option, worded for the API's 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} '{value}' is not allowed: {rule}")]
pub struct Refused {
    /// What was looked at: `input address`, `output address` or `option -x`.
    pub kind: String,
    /// The value as given.
    pub value: String,
    /// The rule that refused it.
    pub rule: String,
}

/// Compiled allow and block lists for one direction.
#[derive(Debug, Clone, Default)]
struct Lists {
    allow: Vec<Regex>,
    block: Vec<Regex>,
}

impl Lists {
    fn compile(list: &AccessList, key: &str) -> anyhow::Result<Lists> {
        let compile = |patterns: &[String], which: &str| {
            patterns
                .iter()
                .map(|p| {
                    Regex::new(p).map_err(|e| {
                        anyhow::anyhow!(
                            "ffmpeg.access.{key}.{which}: invalid expression {p:?}: {e}"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
        };
        Ok(Lists {
            allow: compile(&list.allow, "allow")?,
            block: compile(&list.block, "block")?,
        })
    }

    fn allows(&self, value: &str) -> bool {
        self.allow.iter().any(|r| r.is_match(value))
    }

    fn blocks(&self, value: &str) -> bool {
        self.block.iter().any(|r| r.is_match(value))
    }

    /// Core's rule: a block match refuses; a non-empty allow list admits only its matches.
    /// `Ok(true)` when an allow rule named the value, which then skips the local-file rule.
    fn judge(&self, value: &str, key: &str) -> Result<bool, String> {
        if self.blocks(value) {
            return Err(format!("it matches ffmpeg.access.{key}.block"));
        }
        match (self.allow.is_empty(), self.allows(value)) {
            (true, _) => Ok(false),
            (false, true) => Ok(true),
            (false, false) => Err(format!("it matches no ffmpeg.access.{key}.allow rule")),
        }
    }
}

/// The rules for one server: its data directory and the configured lists.
#[derive(Debug, Clone)]
pub struct Access {
    data_dir: PathBuf,
    /// Where file outputs may go: the public directory (`{diskfs}`), the only one FFmpeg's
    /// account may write to.
    output_dir: PathBuf,
    /// Files and directories of the server itself that no process may touch.
    reserved: Vec<PathBuf>,
    input: Lists,
    output: Lists,
    file_filters: Regex,
    /// URL prefixes inside the server itself (the `/memfs` mount), admitted whatever the lists say.
    internal: Vec<String>,
}

/// Which direction an address goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

impl Access {
    /// Rules for `data_dir` (canonicalised here, so symlinks cannot widen it later) with the
    /// configured lists; `reserved` are the server's own files inside it.
    pub fn new(
        data_dir: &Path,
        output_dir: &Path,
        reserved: Vec<PathBuf>,
        input: &AccessList,
        output: &AccessList,
    ) -> anyhow::Result<Access> {
        let data_dir = data_dir.canonicalize()?;
        let output_dir = resolve(&data_dir, output_dir);
        Ok(Access {
            output_dir,
            reserved: reserved.iter().map(|p| resolve(&data_dir, p)).collect(),
            data_dir,
            input: Lists::compile(input, "input")?,
            output: Lists::compile(output, "output")?,
            file_filters: Regex::new(FILE_FILTERS).expect("valid filter expression"),
            internal: Vec::new(),
        })
    }

    /// Admits addresses under `base` (a URL of the server's own, such as `{memfs}`) as inputs
    /// and outputs, even where the allow lists do not name them or a block rule would refuse
    /// them.
    pub fn allow_internal(&mut self, base: &str) {
        self.internal
            .push(format!("{}/", base.trim_end_matches('/')));
    }

    /// A file under an internal prefix; `..`, queries and fragments could lead elsewhere.
    fn is_internal(&self, address: &str) -> bool {
        self.internal.iter().any(|base| {
            address
                .strip_prefix(base.as_str())
                .is_some_and(|rest| !rest.contains("..") && !rest.contains(['?', '#']))
        })
    }

    /// Checks an input's resolved address and its options.
    pub fn check_input(&self, address: &str, options: &[String]) -> Result<(), Refused> {
        self.check_options(options)?;
        let refuse = |rule: String| Refused {
            kind: "input address".into(),
            value: address.into(),
            rule,
        };
        if self.is_internal(address) || self.input.judge(address, "input").map_err(refuse)? {
            return Ok(());
        }
        match input_format(options) {
            Some("lavfi") => {
                return self.check_graph(address).map_err(|why| {
                    refuse(format!("{why} (allow it with ffmpeg.access.input.allow)"))
                })
            }
            Some(format) if DEVICE_FORMATS.contains(&format) => {
                return Err(refuse(format!(
                    "devices ({format}) are read only when ffmpeg.access.input.allow names them"
                )))
            }
            _ => {}
        }
        self.check_local(address, Direction::Input).map_err(refuse)
    }

    /// Checks an output's resolved address (each leg of a `tee` address) and its options.
    pub fn check_output(&self, address: &str, options: &[String]) -> Result<(), Refused> {
        self.check_options(options)?;
        for leg in tee_legs(address) {
            self.check_output_leg(address, leg)?;
        }
        Ok(())
    }

    fn check_output_leg(&self, whole: &str, leg: &str) -> Result<(), Refused> {
        let refuse = |rule: String| Refused {
            kind: "output address".into(),
            value: whole.into(),
            rule,
        };
        if self.is_internal(leg)
            || self.output.judge(leg, "output").map_err(refuse)?
            || matches!(leg, "-" | "pipe:" | "pipe:1" | "/dev/null")
        {
            return Ok(());
        }
        self.check_local(leg, Direction::Output).map_err(refuse)
    }

    /// Global options (before the inputs): the same option rules as per-input/output options.
    pub fn check_options(&self, options: &[String]) -> Result<(), Refused> {
        // The option whose value comes next; that value is never itself taken for an option.
        let mut pending: Option<(&str, OptionKind)> = None;
        for value in options {
            let Some((option, kind)) = pending.take() else {
                pending = option_kind(value).map(|kind| (value.as_str(), kind));
                continue;
            };
            let refuse = |rule: String| Refused {
                kind: format!("option {option}"),
                value: value.clone(),
                rule,
            };
            let allowed =
                || self.is_internal(value) || self.output.allows(value) || self.input.allows(value);
            match kind {
                OptionKind::Name if value.contains('/') || value.contains("..") => {
                    return Err(refuse(
                        "it is a file name next to the output, without '/' or '..'".into(),
                    ));
                }
                OptionKind::Path if !allowed() => {
                    self.check_local(value, Direction::Output)
                        .map_err(&refuse)?;
                }
                OptionKind::Graph if !allowed() => {
                    self.check_graph(value).map_err(&refuse)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A filter graph may not use filters that open files, load code or listen for commands.
    fn check_graph(&self, graph: &str) -> Result<(), String> {
        match self.file_filters.find(graph) {
            Some(m) => Err(format!(
                "filter graphs may not open files, load code or take remote commands (found '{}')",
                m.as_str()
                    .trim_matches(|c: char| !c.is_alphanumeric() && c != '_')
            )),
            None => Ok(()),
        }
    }

    /// A local address (path, `file:` URL, or anything with a scheme that is not a network
    /// protocol) must name a file inside the data directory that is not one of the server's own.
    fn check_local(&self, address: &str, direction: Direction) -> Result<(), String> {
        let key = direction.key();
        let path = match scheme(address) {
            Some(s) if NETWORK_SCHEMES.contains(&s.to_ascii_lowercase().as_str()) => {
                return Ok(())
            }
            Some(s) if s.eq_ignore_ascii_case("file") => file_url_path(&address[s.len() + 1..]),
            Some(s) => {
                return Err(format!(
                    "the {s}: protocol reaches local files or state; allow it with ffmpeg.access.{key}.allow"
                ))
            }
            None => address,
        };
        if path.is_empty() {
            return Err("an empty path".into());
        }
        let resolved = resolve(&self.data_dir, Path::new(path));
        let (root, what) = match direction {
            Direction::Input => (
                &self.data_dir,
                "local files are read only inside the data directory",
            ),
            Direction::Output => (
                &self.output_dir,
                "files are written only inside the public directory ({diskfs})",
            ),
        };
        if !resolved.starts_with(root) {
            return Err(format!(
                "{what} {} (allow others with ffmpeg.access.{key}.allow)",
                root.display()
            ));
        }
        if self.reserved.iter().any(|r| resolved.starts_with(r)) {
            return Err("it is one of the server's own files".into());
        }
        Ok(())
    }
}

/// The legs of a `tee` muxer address (`[opts]a|[opts]b`), options stripped; others are one leg.
fn tee_legs(address: &str) -> Vec<&str> {
    if !address.contains('|') && !address.starts_with('[') {
        return vec![address];
    }
    address
        .split('|')
        .map(|leg| {
            match leg
                .strip_prefix('[')
                .and_then(|r| r.find(']').map(|i| &r[i + 1..]))
            {
                Some(rest) => rest,
                None => leg,
            }
        })
        .collect()
}

/// `-f <format>` among an input's options.
fn input_format(options: &[String]) -> Option<&str> {
    options
        .windows(2)
        .rev()
        .find(|w| w[0] == "-f")
        .map(|w| w[1].as_str())
}

/// What an option's value is to FFmpeg, for the options whose values are checked.
#[derive(Debug, Clone, Copy)]
enum OptionKind {
    /// A file name joined to the output's directory ([`NAME_OPTIONS`]).
    Name,
    /// A path FFmpeg opens ([`PATH_OPTIONS`]).
    Path,
    /// A filter graph ([`GRAPH_OPTIONS`]).
    Graph,
}

fn option_kind(option: &str) -> Option<OptionKind> {
    if NAME_OPTIONS.contains(&option) {
        Some(OptionKind::Name)
    } else if PATH_OPTIONS.contains(&option) || option.starts_with("-dump_attachment") {
        Some(OptionKind::Path)
    } else if is_graph_option(option) {
        Some(OptionKind::Graph)
    } else {
        None
    }
}

fn is_graph_option(option: &str) -> bool {
    GRAPH_OPTIONS.contains(&option)
        || option.starts_with("-filter:")
        || option.starts_with("-vf:")
        || option.starts_with("-af:")
}

/// The URL scheme of an address: letters first, at least two characters (so `C:` is no scheme),
/// ended by `:`. FFmpeg also takes `proto,opts,:rest` (subfile), so `,` ends a scheme too.
fn scheme(address: &str) -> Option<&str> {
    let end = address.find([':', ','])?;
    let candidate = &address[..end];
    let mut chars = candidate.chars();
    let first = chars.next()?;
    (candidate.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(candidate)
}

/// The path of a `file:` URL body (`///abs`, `//localhost/abs`, `/abs` or `rel`).
fn file_url_path(rest: &str) -> &str {
    match rest.strip_prefix("//") {
        Some(authority_and_path) => match authority_and_path.find('/') {
            Some(i) => &authority_and_path[i..],
            None => "",
        },
        None => rest,
    }
}

/// `path` made absolute against `base`, `.` and `..` folded, and the longest prefix that exists
/// resolved through symlinks, so that neither `..` nor a link can lead out of the data directory.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut lexical = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    // Resolve the existing part through symlinks; the rest cannot contain links yet.
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    while !existing.as_os_str().is_empty() {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match existing.file_name() {
            Some(name) => rest.push(name.to_os_string()),
            None => break,
        }
        existing.pop();
    }
    lexical
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(input_allow: &[&str], output_block: &[&str]) -> (tempfile::TempDir, Access) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("public")).unwrap();
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let access = Access::new(
            dir.path(),
            &dir.path().join("public"),
            vec!["jwt_secret".into(), "webrtc".into()],
            &AccessList {
                allow: list(input_allow),
                block: vec![],
            },
            &AccessList {
                allow: vec![],
                block: list(output_block),
            },
        )
        .unwrap();
        (dir, access)
    }

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn outputs_stay_inside_the_data_directory() {
        let (dir, a) = access(&[], &[]);
        let public = dir.path().join("public/x.m3u8");
        assert!(a.check_output(public.to_str().unwrap(), &[]).is_ok());
        assert!(a.check_output("public/x.mp4", &[]).is_ok());
        assert!(a.check_output("x.mp4", &[]).is_err());
        assert!(a.check_output("-", &opts(&["-f", "null"])).is_ok());
        assert!(a.check_output("/dev/null", &[]).is_ok());
        assert!(a.check_output("rtmp://example.com/live/x", &[]).is_ok());
        for bad in [
            "/tmp/x/owned.txt",
            "file:///etc/cron.d/x",
            "file:/root/.ssh/authorized_keys",
            "public/../../escape.txt",
            "/dev/sda",
            "fd:3",
            "jwt_secret",
            "webrtc/a.sdp",
        ] {
            let e = a.check_output(bad, &[]).unwrap_err();
            assert_eq!(e.value, bad);
            assert_eq!(e.kind, "output address");
        }
        let tee = format!("[f=hls]{}|[f=flv]/tmp/x.flv", public.display());
        assert!(a.check_output(&tee, &opts(&["-f", "tee"])).is_err());
        let tee = format!("[f=hls]{}|[f=flv]rtmp://h/a/b", public.display());
        assert!(a.check_output(&tee, &opts(&["-f", "tee"])).is_ok());
    }

    #[test]
    fn symlinks_do_not_widen_the_data_directory() {
        let (dir, a) = access(&[], &[]);
        std::os::unix::fs::symlink("/etc", dir.path().join("public/etc")).unwrap();
        assert!(a.check_output("public/etc/cron.d/x", &[]).is_err());
        assert!(a.check_input("public/etc/shadow", &[]).is_err());
    }

    #[test]
    fn local_inputs_stay_inside_the_data_directory() {
        let (_dir, a) = access(&[], &[]);
        for bad in [
            "/etc/shadow",
            "file:///etc/shadow",
            "file://localhost/etc/shadow",
            "concat:/etc/passwd|/etc/shadow",
            "subfile,,start,0,end,0,,:/etc/shadow",
            "data:text/plain,hello",
            "pipe:0",
            "../jwt_secret",
            "jwt_secret",
        ] {
            assert!(a.check_input(bad, &[]).is_err(), "{bad}");
        }
        assert!(a.check_input("source.mkv", &[]).is_ok());
        assert!(a.check_input("rtsp://cam/stream", &[]).is_ok());
        assert!(a
            .check_input("/dev/video0", &opts(&["-f", "v4l2"]))
            .is_err());
        assert!(a.check_input("hw:0", &opts(&["-f", "alsa"])).is_err());
        let lavfi = opts(&["-f", "lavfi"]);
        assert!(a
            .check_input("testsrc=size=320x240:rate=25", &lavfi)
            .is_ok());
        for graph in [
            "movie=/etc/shadow",
            "amovie=/etc/shadow:f=u8",
            "testsrc,drawtext=textfile=/etc/shadow",
        ] {
            assert!(a.check_input(graph, &lavfi).is_err(), "{graph}");
        }
    }

    #[test]
    fn an_allow_rule_admits_devices_and_restricts_the_rest() {
        let (_dir, a) = access(&[r"^/dev/video\d$", r"^rtsp://"], &[]);
        assert!(a.check_input("/dev/video0", &opts(&["-f", "v4l2"])).is_ok());
        assert!(a.check_input("rtsp://cam/stream", &[]).is_ok());
        let e = a.check_input("rtmp://cam/stream", &[]).unwrap_err();
        assert!(e.rule.contains("ffmpeg.access.input.allow"), "{e}");
    }

    #[test]
    fn file_options_follow_the_output_rule() {
        let (_dir, a) = access(&[], &[]);
        for (option, value) in [
            ("-i", "/etc/shadow"),
            ("-sdp_file", "/tmp/x.sdp"),
            ("-vstats_file", "/etc/x"),
            ("-hls_segment_filename", "/var/www/x%d.ts"),
            ("-filter_complex", "movie=/etc/passwd[v]"),
            ("-vf", "drawtext=textfile=/etc/shadow"),
            ("-af", "ladspa=file=/tmp/evil.so"),
            ("-master_pl_name", "../../../etc/cron.d/x"),
        ] {
            let e = a.check_options(&opts(&["-y", option, value])).unwrap_err();
            assert_eq!(e.kind, format!("option {option}"));
        }
        assert!(a
            .check_options(&opts(&[
                "-vf",
                "scale=640:-2,format=yuv420p",
                "-hls_segment_filename",
                "public/x%d.ts",
                "-master_pl_name",
                "main.m3u8"
            ]))
            .is_ok());
    }

    #[test]
    fn the_servers_own_memfs_passes_any_list() {
        let (_dir, mut a) = access(&[r"^rtsp://"], &[r"^http://"]);
        let memfs = "http://admin:pw@127.0.0.1:8080/memfs";
        a.allow_internal(memfs);
        let hls = format!("{memfs}/ch.m3u8");
        assert!(a.check_output(&hls, &[]).is_ok());
        assert!(a.check_input(&hls, &[]).is_ok());
        let tee = format!("[f=hls]{hls}|[f=flv]rtmp://h/a/b");
        assert!(a.check_output(&tee, &opts(&["-f", "tee"])).is_ok());
        let segments = format!("{memfs}/ch_%04d.ts");
        assert!(a
            .check_options(&opts(&["-hls_segment_filename", &segments]))
            .is_ok());
        // Other URLs of the same server, or ones that climb out of the mount, are not internal.
        for other in [
            "http://admin:pw@127.0.0.1:8080/api/v3/process",
            "http://admin:pw@127.0.0.1:8080/memfs/../api/v3/process",
            "http://admin:pw@127.0.0.1:8080/memfsx/a",
            "http://127.0.0.1:8080/memfs/a",
        ] {
            assert!(a.check_output(other, &[]).is_err(), "{other}");
        }
    }

    #[test]
    fn lists_behave_like_cores() {
        let (_dir, a) = access(&[], &[r"^rtmp://evil"]);
        assert!(a.check_output("rtmp://evil/x", &[]).is_err());
        assert!(a.check_output("rtmp://good/x", &[]).is_ok());
        let (_dir, a) = access(&[r"^https://"], &[]);
        let e = a.check_input("rtmp://cam/x", &[]).unwrap_err();
        assert!(e.rule.contains("allow"), "{e}");
        assert!(a.check_input("https://cdn/x.m3u8", &[]).is_ok());
    }
}
