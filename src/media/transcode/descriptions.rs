//! The element chains as operators see them: gst-launch text in `pipelines/`, one file per branch
//! kind, with `{placeholder}`s filled in per track. The same files are compiled in, so a bare
//! start needs no directory; a directory overrides them file by file and may add
//! `decode-<encoding>.txt` files for more source codecs.
//!
//! File format: lines starting with `#` are comments; the other lines are joined with spaces.
//! A placeholder is `{name}` with a lower-case name from [`PLACEHOLDERS`]; other braces (caps
//! lists such as `{ I420, NV12 }`) are left alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::encoders::{self, Codec, TranscodeCapabilities};
use super::{BranchKind, TranscodeError};
use crate::model::transcode::TranscodeSettings;

/// Placeholders a description may use.
pub const PLACEHOLDERS: &[&str] = &[
    "pt",
    "ssrc",
    "bitrate_kbps",
    "bitrate_bps",
    "gop_frames",
    "max_width",
    "max_height",
    "max_fps",
    "audio_bitrate_kbps",
    "audio_bitrate_bps",
    "h264_decoder",
    "h265_decoder",
];

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../pipelines/", $name)))),*]
    };
}

/// The files of `pipelines/`, compiled in.
const BUILTIN: &[(&str, &str)] = builtin![
    "passthrough-h264.txt",
    "passthrough-vp8.txt",
    "passthrough-vp9.txt",
    "passthrough-opus.txt",
    "passthrough-pcmu.txt",
    "passthrough-pcma.txt",
    "decode-h264.txt",
    "decode-h265.txt",
    "decode-vp8.txt",
    "decode-vp9.txt",
    "decode-mp4v-es.txt",
    "decode-mpv.txt",
    "decode-mpeg4-generic.txt",
    "decode-mp4a-latm.txt",
    "decode-mpa.txt",
    "decode-ac3.txt",
    "decode-l16.txt",
    "decode-l24.txt",
    "decode-l8.txt",
    "decode-g722.txt",
    "decode-opus.txt",
    "decode-pcmu.txt",
    "decode-pcma.txt",
    "decode-any.txt",
    "video-cuda.txt",
    "video-cuda-autogpu.txt",
    "video-vaapi.txt",
    "video-vaapi-lp.txt",
    "video-vaapi-legacy.txt",
    "video-x264.txt",
    "video-openh264.txt",
    "audio-opus.txt",
];

const AUDIO: &str = "audio-opus.txt";
const DECODE_ANY: &str = "decode-any.txt";

/// Values for the placeholders of one track.
#[derive(Debug, Clone, PartialEq)]
pub struct Vars {
    /// RTP payload type the chain sends with.
    pub pt: u8,
    /// SSRC the chain sends with.
    pub ssrc: u32,
    /// The process's transcode settings.
    pub settings: TranscodeSettings,
    /// Element decoding H.264 (`{h264_decoder}`).
    pub h264_decoder: String,
    /// Element decoding H.265 (`{h265_decoder}`).
    pub h265_decoder: String,
}

impl Vars {
    /// Values for a track; the decoders come from the capabilities (software ones without).
    pub fn new(
        pt: u8,
        ssrc: u32,
        settings: &TranscodeSettings,
        capabilities: Option<&TranscodeCapabilities>,
    ) -> Vars {
        Vars {
            pt,
            ssrc,
            settings: settings.clone(),
            h264_decoder: capabilities.map_or("avdec_h264".into(), |c| c.h264_decoder.clone()),
            h265_decoder: capabilities.map_or("avdec_h265".into(), |c| c.h265_decoder.clone()),
        }
    }

    fn value(&self, name: &str) -> Option<String> {
        let s = &self.settings;
        Some(match name {
            "pt" => self.pt.to_string(),
            "ssrc" => self.ssrc.to_string(),
            "bitrate_kbps" => s.video_bitrate_kbps.to_string(),
            "bitrate_bps" => (u64::from(s.video_bitrate_kbps) * 1000).to_string(),
            "gop_frames" => s.gop_frames().to_string(),
            "max_width" => s.max_width.to_string(),
            "max_height" => s.max_height.to_string(),
            "max_fps" => s.max_fps.to_string(),
            "audio_bitrate_kbps" => s.audio_bitrate_kbps.to_string(),
            "audio_bitrate_bps" => (u64::from(s.audio_bitrate_kbps) * 1000).to_string(),
            "h264_decoder" => self.h264_decoder.clone(),
            "h265_decoder" => self.h265_decoder.clone(),
            _ => return None,
        })
    }
}

/// Fills `{name}` placeholders through `lookup`; returns the unknown name on failure.
fn substitute(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name = after.find('}').map(|end| &after[..end]);
        match name.filter(|n| is_placeholder_name(n)) {
            Some(name) => {
                out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_placeholder_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// One description: where it came from and its text without comments.
#[derive(Debug, Clone)]
struct Template {
    /// For messages: the path, or the file name with `(built in)`.
    origin: String,
    text: String,
    /// Compiled in, not from the operator's directory.
    builtin: bool,
}

impl Template {
    fn parse(origin: String, source: &str) -> Result<Template, TranscodeError> {
        let text = source
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ");
        let fail = |message: String| TranscodeError::Description {
            file: origin.clone(),
            message,
        };
        if text.is_empty() {
            return Err(fail("it has no elements, only comments".into()));
        }
        substitute(&text, |name| PLACEHOLDERS.contains(&name).then(String::new)).map_err(
            |name| {
                fail(format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS.join(", ")
                ))
            },
        )?;
        Ok(Template {
            origin,
            text,
            builtin: false,
        })
    }

    fn render(&self, vars: &Vars) -> String {
        substitute(&self.text, |name| vars.value(name))
            .expect("placeholders were checked when the file was read")
    }
}

/// Which file names the server reads; anything else ending in `.txt` is refused, so that a
/// misspelt override does not go unnoticed.
fn known_file(name: &str) -> bool {
    let stem_ok = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".txt"))
            .is_some_and(|enc| !enc.is_empty() && enc.chars().all(encoding_char))
    };
    stem_ok("passthrough-")
        || stem_ok("decode-")
        || name == AUDIO
        || encoders::all_encoder_elements()
            .into_iter()
            .any(|e| encoders::description_file(e) == Some(name))
}

fn encoding_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
}

/// `<prefix>-<encoding>.txt` for an SDP encoding name, if it can be a file name.
fn encoding_file(prefix: &str, encoding: &str) -> Option<String> {
    let lower = encoding.to_ascii_lowercase();
    (!lower.is_empty() && lower.chars().all(encoding_char)).then(|| format!("{prefix}-{lower}.txt"))
}

/// The pipeline descriptions in force.
#[derive(Debug, Clone)]
pub struct Descriptions {
    templates: BTreeMap<String, Template>,
    /// Files whose elements are not installed here, with the reason: their codec is not
    /// transcodable (logged at start-up), which is no reason to refuse to start.
    unavailable: BTreeMap<String, String>,
    directory: Option<PathBuf>,
}

impl Descriptions {
    /// The compiled-in descriptions, unchecked against GStreamer.
    pub fn builtin() -> Self {
        let templates = BUILTIN
            .iter()
            .map(|(name, text)| {
                let mut template = Template::parse(format!("{name} (built in)"), text)
                    .expect("the built-in descriptions are well-formed (unit-tested)");
                template.builtin = true;
                (name.to_string(), template)
            })
            .collect();
        Descriptions {
            templates,
            unavailable: BTreeMap::new(),
            directory: None,
        }
    }

    /// The built-in descriptions overridden by the `*.txt` files of `dir`, checked: every
    /// placeholder must be known, and every chain except the encoder ones (see
    /// [`Descriptions::check_encoder`]) must parse. A chain whose elements are not installed makes its
    /// codec unavailable ([`Descriptions::unavailable`]) unless it is a passthrough chain; any
    /// other problem is an error naming the file. GStreamer is initialised here.
    pub fn load(dir: Option<&Path>) -> Result<Self, TranscodeError> {
        let mut descriptions = Descriptions::load_unchecked(dir)?;
        descriptions.validate()?;
        Ok(descriptions)
    }

    /// [`Descriptions::load`] without parsing the chains, which loads every plugin they name:
    /// for a server whose chains were checked by [`super::isolated`] in a child process, with
    /// that check's [`Descriptions::unavailable`] handed to [`Descriptions::set_unavailable`].
    pub fn load_unchecked(dir: Option<&Path>) -> Result<Self, TranscodeError> {
        gst::init().map_err(|e| TranscodeError::Description {
            file: "(all)".into(),
            message: format!("cannot initialise GStreamer: {e}"),
        })?;
        let mut descriptions = Descriptions::builtin();
        if let Some(dir) = dir {
            descriptions.overlay(dir)?;
        }
        Ok(descriptions)
    }

    /// The unavailable chains as another process's [`Descriptions::load`] found them.
    pub fn set_unavailable(&mut self, unavailable: Vec<(String, String)>) {
        self.unavailable = unavailable.into_iter().collect();
    }

    fn overlay(&mut self, dir: &Path) -> Result<(), TranscodeError> {
        let io = |file: &Path, e: std::io::Error| TranscodeError::Description {
            file: file.display().to_string(),
            message: e.to_string(),
        };
        let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| io(dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".txt") {
                continue;
            }
            if !known_file(name) {
                return Err(TranscodeError::Description {
                    file: path.display().to_string(),
                    message: "not a description this server reads (passthrough-<encoding>.txt, \
                              decode-<encoding>.txt, audio-opus.txt or a video-*.txt of a known \
                              encoder; names in lower case)"
                        .into(),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let template = Template::parse(path.display().to_string(), &text)?;
            self.templates.insert(name.to_string(), template);
        }
        self.directory = Some(dir.to_path_buf());
        Ok(())
    }

    fn validate(&mut self) -> Result<(), TranscodeError> {
        // Decoders are chosen with the encoder; identity stands in for them here.
        let sample = Vars {
            h264_decoder: "identity".into(),
            h265_decoder: "identity".into(),
            ..Vars::new(96, 1, &TranscodeSettings::default(), None)
        };
        let mut unavailable = BTreeMap::new();
        for (name, template) in &self.templates {
            if name.starts_with("video-") {
                continue;
            }
            if let Err(error) = parse_chain(template, &template.render(&sample)) {
                match error {
                    ChainError::Missing(message) if !name.starts_with("passthrough-") => {
                        unavailable.insert(name.clone(), message);
                    }
                    ChainError::Missing(message) | ChainError::Bad(message) => {
                        return Err(TranscodeError::Description {
                            file: template.origin.clone(),
                            message,
                        })
                    }
                }
            }
        }
        self.unavailable = unavailable;
        Ok(())
    }

    /// Checks the chains that depend on the selected encoder: its `video-*.txt` and the H.264 and
    /// H.265 decode chains with the chosen decoders. Only the selected family is checked, so a
    /// VAAPI description need not parse on a machine without VAAPI. Any problem is an error.
    /// (The server runs the two halves apart, the decoders' after they are chosen.)
    #[cfg(test)]
    pub fn check(
        &self,
        capabilities: &TranscodeCapabilities,
        settings: &TranscodeSettings,
    ) -> Result<(), TranscodeError> {
        self.check_encoder(capabilities, settings)?;
        self.check_decoders(capabilities, settings)
    }

    /// Checks the selected encoder's `video-*.txt` alone (before its decoders are chosen).
    pub fn check_encoder(
        &self,
        capabilities: &TranscodeCapabilities,
        settings: &TranscodeSettings,
    ) -> Result<(), TranscodeError> {
        let file = encoders::description_file(&capabilities.video_encoder)
            .ok_or_else(|| TranscodeError::NoDescription(capabilities.video_encoder.clone()))?;
        self.check_files(capabilities, settings, &[file])
    }

    /// Checks the H.264 and H.265 decode chains with the decoders chosen.
    pub fn check_decoders(
        &self,
        capabilities: &TranscodeCapabilities,
        settings: &TranscodeSettings,
    ) -> Result<(), TranscodeError> {
        self.check_files(
            capabilities,
            settings,
            &["decode-h264.txt", "decode-h265.txt"],
        )
    }

    fn check_files(
        &self,
        capabilities: &TranscodeCapabilities,
        settings: &TranscodeSettings,
        files: &[&str],
    ) -> Result<(), TranscodeError> {
        let vars = Vars::new(96, 1, settings, Some(capabilities));
        for &file in files {
            let Some(template) = self.templates.get(file) else {
                return Err(TranscodeError::NoDescription(file.into()));
            };
            if let Err(ChainError::Missing(message) | ChainError::Bad(message)) =
                parse_chain(template, &template.render(&vars))
            {
                return Err(TranscodeError::Description {
                    file: template.origin.clone(),
                    message,
                });
            }
        }
        Ok(())
    }

    /// Encodes a short test clip through the selected encoder's chain: catches what parsing
    /// cannot, such as a GPU that is registered but cannot open an encoding session, or a driver
    /// without the constrained-baseline profile.
    pub fn probe(
        &self,
        capabilities: &TranscodeCapabilities,
        settings: &TranscodeSettings,
        timeout: Duration,
    ) -> Result<(), TranscodeError> {
        let encoder = &capabilities.video_encoder;
        let fail = |message: String| TranscodeError::Probe {
            encoder: encoder.clone(),
            message,
        };
        let chain = self.encoder_chain(encoder, &Vars::new(96, 1, settings, Some(capabilities)))?;
        let launch = format!(
            "videotestsrc num-buffers=10 pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 \
             ! {chain} ! fakesink name=sink sync=false async=false"
        );
        let pipeline = launch_pipeline(&launch).map_err(fail)?;
        let produced = run_counting(&pipeline, timeout).map_err(fail)?;
        if produced == 0 {
            return Err(fail("it produced no output".into()));
        }
        Ok(())
    }

    /// The start-up test of a hardware decoder: the codec's test clip, sent as RTP through the
    /// codec's decode chain (`decode-h26x.txt` with this decoder) and the selected encoder's chain,
    /// must come out as encoded frames. The whole branch is tested, so the decoder's output must
    /// also link to what follows it in a stream (a GPU decoder may offer its own memory first).
    pub fn probe_decoder(
        &self,
        codec: Codec,
        decoder: &str,
        capabilities: &TranscodeCapabilities,
        settings: &TranscodeSettings,
        timeout: Duration,
    ) -> Result<(), TranscodeError> {
        let fail = |message: String| TranscodeError::DecoderProbe {
            decoder: decoder.to_string(),
            message,
        };
        let mut with_decoder = capabilities.clone();
        with_decoder.set_decoder(codec, decoder);
        let vars = Vars::new(96, 1, settings, Some(&with_decoder));
        let launch = format!(
            "appsrc name=src format=bytes ! {parser} ! {payloader} pt=96 ! {decode} ! {encode} \
             ! fakesink name=sink sync=false async=false",
            parser = codec.parser(),
            payloader = codec.payloader(),
            decode = self.decode_chain(codec.encoding(), &vars)?,
            encode = self.encoder_chain(&capabilities.video_encoder, &vars)?,
        );
        let pipeline = launch_pipeline(&launch).map_err(fail)?;
        let src = pipeline.by_name("src").expect("the appsrc named above");
        let caps = gst::Caps::from_str(codec.clip_caps()).expect("valid caps");
        src.set_property("caps", &caps);
        // appsrc keeps what is pushed before PLAYING and hands it on once the pipeline runs.
        let clip = gst::Buffer::from_slice(codec.test_clip());
        let pushed = src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&clip]);
        let ended = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
        if pushed != gst::FlowReturn::Ok || ended != gst::FlowReturn::Ok {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(fail(format!("the test clip was refused ({pushed:?})")));
        }
        let produced = run_counting(&pipeline, timeout).map_err(fail)?;
        if produced == 0 {
            return Err(fail("it decoded nothing".into()));
        }
        Ok(())
    }

    /// The gst-launch chain (no udpsrc/jitterbuffer/tee) for one track.
    pub fn render(&self, kind: &BranchKind, vars: &Vars) -> Result<String, TranscodeError> {
        match kind {
            BranchKind::Passthrough { encoding } => {
                let file = encoding_file("passthrough", encoding)
                    .ok_or_else(|| TranscodeError::NoDescription(encoding.clone()))?;
                self.chain(&file, vars)
            }
            BranchKind::Video { source, encoder } => Ok(format!(
                "{} ! {}",
                self.decode_chain(source, vars)?,
                self.encoder_chain(encoder, vars)?
            )),
            BranchKind::Audio { source } => Ok(format!(
                "{} ! {}",
                self.decode_chain(source, vars)?,
                self.chain(AUDIO, vars)?
            )),
        }
    }

    /// Whether a passthrough chain exists for the encoding.
    pub fn has_passthrough(&self, encoding: &str) -> bool {
        encoding_file("passthrough", encoding).is_some_and(|f| self.usable(&f))
    }

    /// The decode file used for a source encoding: its own, else `decode-any.txt`; `None` when
    /// neither is usable here.
    pub fn decoder_file(&self, encoding: &str) -> Option<&str> {
        let own = encoding_file("decode", encoding).filter(|f| self.usable(f));
        let name = own.as_deref().unwrap_or(DECODE_ANY);
        self.usable(name)
            .then(|| self.templates.get_key_value(name).map(|(k, _)| k.as_str()))
            .flatten()
    }

    /// Files whose elements are missing on this machine, with the reason (for the start-up log).
    pub fn unavailable(&self) -> Vec<(String, String)> {
        self.unavailable
            .iter()
            .map(|(file, why)| (file.clone(), why.clone()))
            .collect()
    }

    /// Whether a file is the compiled-in one (not overridden from the directory).
    pub fn is_builtin(&self, file: &str) -> bool {
        self.templates.get(file).is_some_and(|t| t.builtin)
    }

    /// The directory that overrides the built-in files, if any.
    #[cfg(test)]
    pub fn directory(&self) -> Option<&Path> {
        self.directory.as_deref()
    }

    fn usable(&self, file: &str) -> bool {
        self.templates.contains_key(file) && !self.unavailable.contains_key(file)
    }

    fn chain(&self, file: &str, vars: &Vars) -> Result<String, TranscodeError> {
        if let Some(why) = self.unavailable.get(file) {
            return Err(TranscodeError::NoDescription(format!(
                "{file}: unusable here ({why})"
            )));
        }
        let template = self
            .templates
            .get(file)
            .ok_or_else(|| TranscodeError::NoDescription(file.to_string()))?;
        Ok(template.render(vars))
    }

    fn decode_chain(&self, encoding: &str, vars: &Vars) -> Result<String, TranscodeError> {
        let file = self
            .decoder_file(encoding)
            .ok_or_else(|| TranscodeError::NoDescription(format!("decoding {encoding}")))?;
        self.chain(file, vars)
    }

    /// The chain from decoded frames to RTP for an encoder element.
    pub(super) fn encoder_chain(
        &self,
        encoder: &str,
        vars: &Vars,
    ) -> Result<String, TranscodeError> {
        let file = encoders::description_file(encoder)
            .ok_or_else(|| TranscodeError::NoDescription(format!("encoder {encoder}")))?;
        self.chain(file, vars)
    }
}

enum ChainError {
    /// Elements not installed.
    Missing(String),
    /// Anything else: syntax, unknown property, bad value.
    Bad(String),
}

/// Parses a rendered chain the way the stream pipeline will, catching unknown elements,
/// properties and values.
fn parse_chain(template: &Template, chain: &str) -> Result<(), ChainError> {
    let mut context = gst::ParseContext::new();
    match gst::parse::bin_from_description_full(
        chain,
        true,
        Some(&mut context),
        gst::ParseFlags::FATAL_ERRORS,
    ) {
        Ok(_) => Ok(()),
        Err(e) => {
            let missing = context.missing_elements();
            if e.kind::<gst::ParseError>() == Some(gst::ParseError::NoSuchElement) {
                let names = if missing.is_empty() {
                    e.to_string()
                } else {
                    missing.join(", ")
                };
                Err(ChainError::Missing(format!(
                    "GStreamer element(s) not installed: {names}"
                )))
            } else {
                tracing::debug!(file = %template.origin, %chain, "description does not parse");
                Err(ChainError::Bad(format!("{e} (in: {chain})")))
            }
        }
    }
}

/// A test pipeline from gst-launch text.
fn launch_pipeline(launch: &str) -> Result<gst::Pipeline, String> {
    gst::parse::launch(launch)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".into())
}

/// Runs a test pipeline (sizes fitted as in a stream) to EOS and counts the buffers that reach
/// its element named `sink`; the pipeline is stopped in every case.
fn run_counting(pipeline: &gst::Pipeline, timeout: Duration) -> Result<usize, String> {
    super::fit_video_sizes(pipeline.upcast_ref());
    let count = Arc::new(AtomicUsize::new(0));
    if let Some(pad) = pipeline.by_name("sink").and_then(|s| s.static_pad("sink")) {
        let count = count.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            count.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }
    let result = run_to_eos(pipeline, timeout);
    let _ = pipeline.set_state(gst::State::Null);
    result.map(|()| count.load(Ordering::Relaxed))
}

/// Plays a pipeline until EOS; an error message or the timeout is a failure.
pub(super) fn run_to_eos(pipeline: &gst::Pipeline, timeout: Duration) -> Result<(), String> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| "the pipeline would not start".to_string())?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let timeout = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
    match bus.timed_pop_filtered(
        Some(timeout),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(err) => Err(format!(
                "{} ({})",
                err.error(),
                err.debug().map(|d| d.to_string()).unwrap_or_default()
            )),
            _ => Ok(()),
        },
        None => Err(format!("no end of stream within {timeout}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::new(96, 1234, &TranscodeSettings::default(), None)
    }

    #[test]
    fn placeholders_and_caps_lists() {
        let v = vars();
        assert_eq!(
            substitute("x pt={pt} f={ I420, NV12 } b={bitrate_kbps}", |n| v
                .value(n))
            .unwrap(),
            "x pt=96 f={ I420, NV12 } b=2000"
        );
        assert_eq!(substitute("{NV12} {", |n| v.value(n)).unwrap(), "{NV12} {");
        assert_eq!(
            substitute("a {bogus} b", |n| v.value(n)),
            Err("bogus".into())
        );
        for name in PLACEHOLDERS {
            assert!(v.value(name).is_some(), "{name}");
        }
        assert_eq!(v.value("bitrate_bps").unwrap(), "2000000");
        assert_eq!(v.value("audio_bitrate_bps").unwrap(), "96000");
        assert_eq!(v.value("gop_frames").unwrap(), "30");
    }

    #[test]
    fn comments_are_dropped_and_lines_joined() {
        let t = Template::parse(
            "t.txt".into(),
            "# one\n  rtpvp8depay\n\n   # two\n! rtpvp8pay pt={pt}\n",
        )
        .unwrap();
        assert_eq!(t.render(&vars()), "rtpvp8depay ! rtpvp8pay pt=96");
        let err = Template::parse("only.txt".into(), "# nothing\n").unwrap_err();
        assert!(err.to_string().contains("only.txt"), "{err}");
    }

    #[test]
    fn builtin_files_are_well_formed_and_all_known() {
        let d = Descriptions::builtin();
        assert_eq!(d.templates.len(), BUILTIN.len());
        for (name, _) in BUILTIN {
            assert!(known_file(name), "{name}");
        }
        for encoder in encoders::all_encoder_elements() {
            let file = encoders::description_file(encoder).unwrap();
            assert!(d.templates.contains_key(file), "{file}");
        }
        assert!(!known_file("video-x265.txt"));
        assert!(!known_file("decode-H264.txt"));
        assert!(!known_file("passthrough-.txt"));
    }

    /// The passthrough chains must stay exactly what stream.rs's normaliser() built.
    #[test]
    fn passthrough_chains_match_the_normaliser() {
        let d = Descriptions::builtin();
        let common = "pt=96 ssrc=1234 mtu=1200";
        let expected = [
            ("H264", format!("rtph264depay ! h264parse config-interval=-1 ! rtph264pay config-interval=-1 aggregate-mode=zero-latency {common}")),
            ("VP8", format!("rtpvp8depay ! rtpvp8pay picture-id-mode=15-bit {common}")),
            ("VP9", format!("rtpvp9depay ! rtpvp9pay picture-id-mode=15-bit {common}")),
            ("OPUS", format!("rtpopusdepay ! rtpopuspay {common}")),
            ("PCMU", format!("rtppcmudepay ! rtppcmupay {common}")),
            ("PCMA", format!("rtppcmadepay ! rtppcmapay {common}")),
        ];
        for (encoding, chain) in expected {
            let kind = BranchKind::Passthrough {
                encoding: encoding.into(),
            };
            assert_eq!(d.render(&kind, &vars()).unwrap(), chain, "{encoding}");
            assert!(d.has_passthrough(encoding));
        }
        assert!(!d.has_passthrough("H265"));
        assert!(d
            .render(
                &BranchKind::Passthrough {
                    encoding: "H265".into()
                },
                &vars()
            )
            .is_err());
    }

    #[test]
    fn decode_files_by_encoding_with_a_fallback() {
        let d = Descriptions::builtin();
        assert_eq!(
            d.decoder_file("MPEG4-GENERIC"),
            Some("decode-mpeg4-generic.txt")
        );
        assert_eq!(d.decoder_file("H265"), Some("decode-h265.txt"));
        assert_eq!(d.decoder_file("AV1"), Some("decode-any.txt"));
        assert_eq!(d.decoder_file("../x"), Some("decode-any.txt"));
        let video = BranchKind::Video {
            source: "H265".into(),
            encoder: "x264enc".into(),
        };
        let chain = d.render(&video, &vars()).unwrap();
        assert!(
            chain.starts_with("rtph265depay ! h265parse ! avdec_h265 ! queue "),
            "{chain}"
        );
        assert!(chain.contains("x264enc tune=zerolatency speed-preset=veryfast bitrate=2000 key-int-max=30 bframes=0"), "{chain}");
        assert!(chain.ends_with("pt=96 ssrc=1234 mtu=1200"), "{chain}");
    }
}
