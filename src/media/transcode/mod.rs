//! The transcode branch: a medium browsers cannot play (or every medium of a process with
//! `force_transcode`) is decoded and re-encoded before the stream's tee, video to H.264
//! constrained baseline and audio to Opus 48 kHz, once per stream however many viewers watch.
//!
//! - [`encoders`]: which H.264 encoder this machine has, chosen once at start-up from the
//!   GStreamer registry (`webrtc.encoder` can force one), and the H.264/H.265 decoders: GPU ones
//!   first, the encoder's own before any other, each tested before it is used.
//! - [`descriptions`]: the element chains, kept as gst-launch text in `pipelines/` so operators
//!   can read and adjust them, with the same files compiled in as defaults.
//! - [`keyframes`]: instant start for joining viewers (a forced key unit) without letting a crowd
//!   of joins or browser PLIs turn the stream into key frames only.
//! - [`sizes`]: the resolution cap as an exact even size that keeps the aspect ratio.
//!
//! Start-up, in order: [`Descriptions::load`], [`select_checked`] (which runs
//! [`Descriptions::check_encoder`], the encoder test, the GPU decoders' tests and
//! [`Descriptions::check_decoders`]), then per track [`decide`] and
//! [`Descriptions::render`]; after the stream pipeline is parsed, [`fit_video_sizes`] on it and a
//! [`KeyUnitLimiter`] on the tee of a transcoded video track.

pub mod descriptions;
pub mod encoders;
pub mod isolated;
pub mod keyframes;
pub mod sizes;

#[cfg(test)]
mod tests;

use std::time::Duration;

use gstreamer as gst;

use super::sdp::{Kind, SourceTrack};
use crate::model::transcode::{InvalidSettings, TranscodeSettings};

pub use descriptions::{Descriptions, Vars};
pub use encoders::{Codec, EncoderFamily, Registry, TranscodeCapabilities};
pub use keyframes::{force_key_unit_event, KeyUnitLimiter};
pub use sizes::fit_video_sizes;

/// Why transcoding cannot be set up as configured. Every message names what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// `webrtc.encoder` names an encoder or family this machine does not have.
    #[error(
        "webrtc.encoder = {forced:?}: {reason}; H.264 encoders available here: {available} \
         (check with gst-inspect-1.0, see docs/hardware.md)"
    )]
    ForcedMissing {
        /// The configured value.
        forced: String,
        /// What is missing.
        reason: String,
        /// What exists instead, comma-separated, or `none`.
        available: String,
    },
    /// `webrtc.encoder` is neither an encoder element nor a family the server knows.
    #[error("webrtc.encoder = {forced:?} is not a known encoder; use {known}")]
    UnknownEncoder {
        /// The configured value.
        forced: String,
        /// What it may be.
        known: String,
    },
    /// No H.264 encoder at all.
    #[error(
        "no H.264 encoder found (looked for {looked_for}); install gstreamer1.0-plugins-ugly \
         (x264enc) or gstreamer1.0-plugins-bad (openh264enc), or see docs/hardware.md for GPUs"
    )]
    NoEncoder {
        /// The elements looked for, comma-separated.
        looked_for: String,
    },
    /// No Opus encoder.
    #[error("no Opus encoder (opusenc) found; install gstreamer1.0-plugins-base with libopus")]
    NoOpus,
    /// A pipeline description is unusable.
    #[error("pipeline description {file}: {message}")]
    Description {
        /// The file, e.g. `pipelines/video-x264.txt` or `video-x264.txt (built in)`.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// No description exists for what was asked.
    #[error("no pipeline description for {0}")]
    NoDescription(String),
    /// A transcode setting is out of range.
    #[error(transparent)]
    Settings(#[from] InvalidSettings),
    /// A hardware decoder is registered but could not decode a test clip.
    #[error("decoder {decoder} failed its start-up test: {message}")]
    DecoderProbe {
        /// The decoder element.
        decoder: String,
        /// What went wrong.
        message: String,
    },
    /// The encoder is registered but could not encode a test clip.
    #[error("encoder {encoder} failed its start-up test: {message}")]
    Probe {
        /// The encoder element.
        encoder: String,
        /// What went wrong.
        message: String,
    },
}

/// What a track's chain between jitterbuffer and tee does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchKind {
    /// Depayload and payload again (`passthrough-<encoding>.txt`).
    Passthrough {
        /// Encoding name as in the SDP, e.g. `H264`.
        encoding: String,
    },
    /// Decode (`decode-<source>.txt`) and re-encode to H.264 with `encoder`
    /// (its `video-*.txt`).
    Video {
        /// Encoding name of the source, e.g. `H265`.
        source: String,
        /// Encoder element, e.g. `x264enc`.
        encoder: String,
    },
    /// Decode (`decode-<source>.txt`) and re-encode to Opus (`audio-opus.txt`).
    Audio {
        /// Encoding name of the source, e.g. `MPEG4-GENERIC`.
        source: String,
    },
}

/// How one medium reaches viewers, and why: the process state / WebRTC info shows `path` and
/// `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The chain to build; `None` when the medium cannot be served.
    pub branch: Option<BranchKind>,
    /// `passthrough`, `transcode` or `unsupported`.
    pub path: &'static str,
    /// Why, in words for operators.
    pub reason: String,
}

impl Decision {
    /// The track as viewers receive it, for matching their offers and for the key-frame gate:
    /// the source itself for passthrough; H.264 constrained baseline (`42e0xx`, the level from
    /// the resolution and frame-rate caps) or Opus 48 kHz stereo for a transcode. Same port and
    /// payload type as the source.
    pub fn output_track(&self, source: &SourceTrack, settings: &TranscodeSettings) -> SourceTrack {
        let pt = source
            .caps
            .structure(0)
            .and_then(|s| s.get::<i32>("payload").ok())
            .unwrap_or(96);
        let caps = match &self.branch {
            Some(BranchKind::Video { .. }) => gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("payload", pt)
                .field("clock-rate", 90000i32)
                .field("encoding-name", "H264")
                .field("packetization-mode", "1")
                .field(
                    "profile-level-id",
                    format!("42e0{:02x}", h264_level(settings)),
                )
                .build(),
            Some(BranchKind::Audio { .. }) => gst::Caps::builder("application/x-rtp")
                .field("media", "audio")
                .field("payload", pt)
                .field("clock-rate", 48000i32)
                .field("encoding-name", "OPUS")
                .field("encoding-params", "2")
                .build(),
            Some(BranchKind::Passthrough { .. }) | None => return source.clone(),
        };
        SourceTrack {
            kind: source.kind,
            port: source.port,
            caps,
        }
    }
}

/// The lowest H.264 level (level_idc) that covers the size and rate caps, at least 3.1, which
/// browsers offer by default (Table A-1: max frame size and macroblock rate).
fn h264_level(settings: &TranscodeSettings) -> u8 {
    const LEVELS: [(u8, u64, u64); 7] = [
        (31, 3600, 108_000),
        (32, 5120, 216_000),
        (40, 8192, 245_760),
        (42, 8704, 522_240),
        (50, 22080, 589_824),
        (51, 36864, 983_040),
        (52, 36864, 2_073_600),
    ];
    let frame =
        u64::from(settings.max_width.div_ceil(16)) * u64::from(settings.max_height.div_ceil(16));
    let rate = frame * u64::from(settings.max_fps);
    LEVELS
        .iter()
        .find(|(_, max_frame, max_rate)| frame <= *max_frame && rate <= *max_rate)
        .map_or(52, |(level, _, _)| *level)
}

/// Decides per medium from FFmpeg's SDP: a browser-playable codec passes through unless
/// `force_transcode`; anything else goes through the transcode branch when this server can
/// transcode (`capabilities` is `None` when it cannot) and has a decode description for it.
pub fn decide(
    track: &SourceTrack,
    force_transcode: bool,
    descriptions: &Descriptions,
    capabilities: Option<&TranscodeCapabilities>,
) -> Decision {
    let encoding = track.encoding();
    let playable = track.browser_playable() && descriptions.has_passthrough(&encoding);
    let passthrough = |reason: String| Decision {
        branch: Some(BranchKind::Passthrough {
            encoding: encoding.clone(),
        }),
        path: "passthrough",
        reason,
    };
    if playable && !force_transcode {
        return passthrough(format!("browsers play {encoding} as it is"));
    }
    let why = if force_transcode {
        "force_transcode is set".to_string()
    } else if encoding == "H264" {
        // Browsers only take packetization-mode 1 (FU-A/STAP-A); mode 0 is one NAL per packet.
        "browsers take H.264 only in packetization-mode 1".to_string()
    } else if encoding.is_empty() {
        "the SDP names no encoding".to_string()
    } else {
        format!("browsers cannot play {encoding}")
    };
    let unusable = |problem: String| {
        if playable {
            passthrough(format!("{why}, but {problem}; passed through as it is"))
        } else {
            Decision {
                branch: None,
                path: "unsupported",
                reason: format!("{why}, and {problem}"),
            }
        }
    };
    let Some(capabilities) = capabilities else {
        return unusable(
            "transcoding is unavailable on this server (see the webrtc section of \
             GET /api/v3/skills)"
                .to_string(),
        );
    };
    let Some(decoder) = descriptions.decoder_file(&encoding) else {
        return unusable(format!(
            "there is no usable decode description for {encoding} (add pipelines/decode-{}.txt)",
            encoding.to_ascii_lowercase()
        ));
    };
    let (branch, target) = match track.kind {
        Kind::Video => (
            BranchKind::Video {
                source: encoding.clone(),
                encoder: capabilities.video_encoder.clone(),
            },
            format!(
                "H.264 constrained baseline with {}",
                capabilities.video_encoder
            ),
        ),
        Kind::Audio => (
            BranchKind::Audio {
                source: encoding.clone(),
            },
            format!("Opus 48 kHz with {}", capabilities.opus_encoder),
        ),
    };
    Decision {
        branch: Some(branch),
        path: "transcode",
        reason: format!("{why}: decoded ({decoder}) and re-encoded to {target}"),
    }
}

/// Picks the decoder per codec for the selected encoder ([`encoders::decoder_candidates`]):
/// each hardware decoder must decode a test clip into the encoder's chain first; one that fails
/// is passed over (recorded in `skipped`) for the next. Software decoders are taken as they are.
fn choose_decoders(
    registry: &Registry,
    capabilities: &mut TranscodeCapabilities,
    descriptions: &Descriptions,
    settings: &TranscodeSettings,
) {
    let family = EncoderFamily::of(&capabilities.video_encoder).expect("a known encoder element");
    for codec in Codec::ALL {
        let mut chosen = encoders::FALLBACK_DECODER;
        for decoder in encoders::decoder_candidates(registry, family, capabilities.forced, codec) {
            if !encoders::hardware_decoder(decoder) {
                chosen = decoder;
                break;
            }
            match descriptions.probe_decoder(codec, decoder, capabilities, settings, PROBE_TIMEOUT)
            {
                Ok(()) => {
                    chosen = decoder;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%decoder, %error, "decoder passed over");
                    capabilities.skipped.push(error.to_string());
                }
            }
        }
        capabilities.set_decoder(codec, chosen);
    }
}

/// How long the start-up test of an encoder may take (hardware encoders open their device).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The encoder choice (`encoders::candidates`), then the checks that need GStreamer: the selected
/// encoder's description must parse ([`Descriptions::check_encoder`]) and the encoder must encode
/// a short test clip ([`Descriptions::probe`]); then its decoders ([`choose_decoders`]), whose
/// decode chains must parse ([`Descriptions::check_decoders`]). An automatically chosen encoder that fails its test is passed over
/// for the next one (recorded in `skipped`, for the skills endpoint); so is a hardware encoder
/// whose *built-in* description does not fit this machine's driver (a property or mode the driver
/// lacks). A forced encoder that fails, and any description an operator wrote that does not
/// parse, is an error.
pub fn select_checked(
    registry: &Registry,
    forced: Option<&str>,
    descriptions: &Descriptions,
    settings: &TranscodeSettings,
) -> Result<TranscodeCapabilities, TranscodeError> {
    settings.validate()?;
    let is_forced = encoders::forced_value(forced).is_some();
    let candidates = encoders::candidates(registry, forced)?;
    let mut skipped = Vec::new();
    let mut last_error = None;
    for encoder in &candidates {
        let mut capabilities = encoders::capabilities(registry, encoder, is_forced);
        let result = descriptions
            .check_encoder(&capabilities, settings)
            .and_then(|()| descriptions.probe(&capabilities, settings, PROBE_TIMEOUT));
        let error = match result {
            Ok(()) => {
                capabilities.skipped = skipped;
                choose_decoders(registry, &mut capabilities, descriptions, settings);
                // The decode chains with the decoders chosen: an operator's file that does not
                // parse stops the start, as for the encoder's.
                descriptions.check_decoders(&capabilities, settings)?;
                return Ok(capabilities);
            }
            Err(error) => error,
        };
        if let TranscodeError::Description { .. } = error {
            let hardware = EncoderFamily::of(encoder).is_some_and(EncoderFamily::hardware);
            let builtin = encoders::description_file(encoder)
                .is_some_and(|file| descriptions.is_builtin(file));
            if is_forced || !hardware || !builtin {
                return Err(error);
            }
        }
        tracing::warn!(encoder = %encoder, error = %error, "encoder passed over");
        skipped.push(error.to_string());
        last_error = Some(error);
    }
    Err(last_error.unwrap_or(TranscodeError::NoEncoder {
        looked_for: encoders::all_encoder_elements().join(", "),
    }))
}
