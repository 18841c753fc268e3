//! Which H.264 encoder the transcode branch uses, and which H.264/H.265 decoders, chosen once at
//! start-up from what the GStreamer registry offers (the tests that confirm them are in
//! `descriptions.rs`, the order in `select_checked`).
//!
//! Hardware first: a GPU encoder costs next to no CPU, x264 about 0.2 CPU-seconds per second for
//! 720p30. GStreamer registers the nvcodec and va elements only when their GPU and driver work,
//! so "present in the registry" already means "the hardware was found"; not that a session opens
//! on it, hence the start-up tests of encoders and GPU decoders.

use std::collections::BTreeSet;

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::TranscodeError;

/// Encoder families in preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EncoderFamily {
    /// NVIDIA NVENC through the nvcodec plugin.
    Cuda,
    /// VA-API (Intel, AMD) through the va plugin, or the older gstreamer-vaapi.
    Vaapi,
    /// x264, software.
    X264,
    /// Cisco's OpenH264, software.
    OpenH264,
}

impl EncoderFamily {
    /// Every family, preferred first.
    pub const ALL: [EncoderFamily; 4] = [
        EncoderFamily::Cuda,
        EncoderFamily::Vaapi,
        EncoderFamily::X264,
        EncoderFamily::OpenH264,
    ];

    /// The name used in `webrtc.encoder` and the skills endpoint.
    pub fn name(self) -> &'static str {
        match self {
            EncoderFamily::Cuda => "cuda",
            EncoderFamily::Vaapi => "vaapi",
            EncoderFamily::X264 => "x264",
            EncoderFamily::OpenH264 => "openh264",
        }
    }

    /// The family with that name (case-insensitive).
    pub fn from_name(name: &str) -> Option<EncoderFamily> {
        EncoderFamily::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Its encoder elements, preferred first. nvh264enc is the long-standing NVENC element;
    /// nvautogpuh264enc is the newer one (1.22+). vah264enc (va plugin) supersedes the
    /// gstreamer-vaapi vaapih264enc; vah264lpenc is the va plugin's low-power variant, the only
    /// H.264 encoder some drivers offer.
    pub fn elements(self) -> &'static [&'static str] {
        match self {
            EncoderFamily::Cuda => &["nvh264enc", "nvautogpuh264enc"],
            EncoderFamily::Vaapi => &["vah264enc", "vah264lpenc", "vaapih264enc"],
            EncoderFamily::X264 => &["x264enc"],
            EncoderFamily::OpenH264 => &["openh264enc"],
        }
    }

    /// Whether it encodes on a GPU.
    pub fn hardware(self) -> bool {
        matches!(self, EncoderFamily::Cuda | EncoderFamily::Vaapi)
    }

    /// The family an encoder element belongs to.
    pub fn of(element: &str) -> Option<EncoderFamily> {
        EncoderFamily::ALL
            .into_iter()
            .find(|f| f.elements().contains(&element))
    }

    /// Its hardware decoders for a codec, preferred first.
    fn hardware_decoders(self, codec: Codec) -> &'static [&'static str] {
        match (self, codec) {
            (EncoderFamily::Cuda, Codec::H264) => &["nvh264dec"],
            (EncoderFamily::Cuda, Codec::H265) => &["nvh265dec"],
            (EncoderFamily::Vaapi, Codec::H264) => &["vah264dec", "vaapih264dec"],
            (EncoderFamily::Vaapi, Codec::H265) => &["vah265dec", "vaapih265dec"],
            _ => &[],
        }
    }
}

/// A source codec the transcode branch decodes with a decoder chosen at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264/AVC.
    H264,
    /// H.265/HEVC.
    H265,
}

impl Codec {
    /// Both, in the order they are chosen.
    pub const ALL: [Codec; 2] = [Codec::H264, Codec::H265];

    /// The encoding name in SDP, which names its `decode-<encoding>.txt`.
    pub(super) fn encoding(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
        }
    }

    /// The RTP payloader that turns [`Codec::test_clip`] into what a stream receives.
    pub(super) fn payloader(self) -> &'static str {
        match self {
            Codec::H264 => "rtph264pay",
            Codec::H265 => "rtph265pay",
        }
    }

    /// The parser that splits [`Codec::test_clip`] into access units.
    pub(super) fn parser(self) -> &'static str {
        match self {
            Codec::H264 => "h264parse",
            Codec::H265 => "h265parse",
        }
    }

    /// Caps of [`Codec::test_clip`].
    pub(super) fn clip_caps(self) -> &'static str {
        match self {
            Codec::H264 => "video/x-h264,stream-format=byte-stream",
            Codec::H265 => "video/x-h265,stream-format=byte-stream",
        }
    }

    /// Four 320x240 frames (a key frame first) in Annex B, for a decoder's start-up test.
    /// 320x240 is above every hardware decoder's minimum size (NVDEC's for H.265 is 144x144).
    pub(super) fn test_clip(self) -> &'static [u8] {
        match self {
            Codec::H264 => include_bytes!("clips/test-320x240.h264"),
            Codec::H265 => include_bytes!("clips/test-320x240.h265"),
        }
    }
}

/// Every GPU decoder the server knows. Each gets a start-up test: the registry lists nvcodec and
/// va decoders whenever the driver loads, even where a decoding session cannot be opened later.
pub const HARDWARE_DECODERS: [&str; 6] = [
    "nvh264dec",
    "nvh265dec",
    "vah264dec",
    "vaapih264dec",
    "vah265dec",
    "vaapih265dec",
];

/// Whether a decoder runs on a GPU.
pub(super) fn hardware_decoder(element: &str) -> bool {
    HARDWARE_DECODERS.contains(&element)
}

/// The decoders to try for `codec` with an `encoder` of `family`, preferred first, each present
/// in the registry. The encoder's own hardware comes first. Then any other GPU decoder: a card can
/// decode without being able to encode (NVIDIA's data-centre parts such as the A100 and H100/H200
/// have NVDEC and no NVENC, so the encoder falls back to x264 while NVDEC still takes the decoding
/// off the CPU). A *forced* software encoder keeps the whole branch off the GPU, as asked. Software
/// decoders last; the caller falls back to decodebin when none is left.
pub(super) fn decoder_candidates(
    registry: &Registry,
    family: EncoderFamily,
    forced: bool,
    codec: Codec,
) -> Vec<&'static str> {
    let mut families = vec![family];
    if family.hardware() || !forced {
        families.extend(EncoderFamily::ALL.into_iter().filter(|f| *f != family));
    }
    families
        .into_iter()
        .filter(|f| f.hardware())
        .flat_map(|f| f.hardware_decoders(codec).iter().copied())
        .chain(software_decoders(codec).iter().copied())
        .filter(|d| registry.has(d))
        .collect()
}

/// Software decoders, after the hardware ones: FFmpeg's first, then the standalone libraries.
fn software_decoders(codec: Codec) -> &'static [&'static str] {
    match codec {
        Codec::H264 => &["avdec_h264", "openh264dec"],
        Codec::H265 => &["avdec_h265", "libde265dec"],
    }
}

/// The last resort when no decoder is present or passes its test: it takes parsed H.264/H.265.
pub(super) const FALLBACK_DECODER: &str = "decodebin";

/// The description file of an encoder element, in `pipelines/`.
pub fn description_file(element: &str) -> Option<&'static str> {
    Some(match element {
        "nvh264enc" => "video-cuda.txt",
        "nvautogpuh264enc" => "video-cuda-autogpu.txt",
        "vah264enc" => "video-vaapi.txt",
        "vah264lpenc" => "video-vaapi-lp.txt",
        "vaapih264enc" => "video-vaapi-legacy.txt",
        "x264enc" => "video-x264.txt",
        "openh264enc" => "video-openh264.txt",
        _ => return None,
    })
}

/// Every encoder element the server knows, preferred first.
pub fn all_encoder_elements() -> Vec<&'static str> {
    EncoderFamily::ALL
        .into_iter()
        .flat_map(|f| f.elements().iter().copied())
        .collect()
}

/// What the registry offers (injectable for tests): element factory names that exist.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    names: BTreeSet<String>,
}

impl Registry {
    /// Every element factory GStreamer knows (GStreamer must be initialised).
    pub fn from_gstreamer() -> Self {
        let names =
            gst::ElementFactory::factories_with_type(gst::ElementFactoryType::ANY, gst::Rank::NONE)
                .iter()
                .map(|f| f.name().to_string())
                .collect();
        Registry { names }
    }

    /// A registry with exactly these elements.
    #[cfg(test)]
    pub fn from_names(names: &[&str]) -> Self {
        Registry {
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// Whether the element exists.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// The registry of a GPU machine without an H.264 encoder (an A100, H100 or H200: nvcodec
/// registers NVDEC's decoders and no NVENC encoder), with the software elements.
#[cfg(test)]
pub const NVDEC_WITHOUT_NVENC: &[&str] = &[
    "nvh264dec",
    "nvh265dec",
    "x264enc",
    "avdec_h264",
    "avdec_h265",
    "opusenc",
];

/// The detected (or forced) choice, serialisable for the skills endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TranscodeCapabilities {
    /// Encoder element, e.g. `nvh264enc` or `x264enc`.
    pub video_encoder: String,
    /// Its family: `cuda`, `vaapi`, `x264` or `openh264`.
    pub family: String,
    /// Decoder for H.264 sources (packetization-mode 0, or force_transcode).
    pub h264_decoder: String,
    /// Decoder for H.265 sources.
    pub h265_decoder: String,
    /// Every H.264 encoder the server knows that this machine has, preferred first.
    pub available_encoders: Vec<String>,
    /// The Opus encoder for audio.
    pub opus_encoder: String,
    /// Whether `webrtc.encoder` forced the choice.
    pub forced: bool,
    /// Encoders and hardware decoders passed over because their start-up test failed, with the
    /// reason.
    pub skipped: Vec<String>,
}

impl TranscodeCapabilities {
    /// Uses `decoder` for sources in `codec`.
    pub(super) fn set_decoder(&mut self, codec: Codec, decoder: &str) {
        match codec {
            Codec::H264 => self.h264_decoder = decoder.to_string(),
            Codec::H265 => self.h265_decoder = decoder.to_string(),
        }
    }
}

/// Picks the encoder: the first available in preference order, or the one `forced` names (an
/// element such as `x264enc`, or a family such as `cuda`; empty or `auto` means automatic).
/// A forced encoder that is missing is an error naming it and what exists, never a fallback.
/// The server itself goes through [`super::select_checked`], which also tests the encoder.
#[cfg(test)]
pub fn select(
    registry: &Registry,
    forced: Option<&str>,
) -> Result<TranscodeCapabilities, TranscodeError> {
    let candidates = candidates(registry, forced)?;
    Ok(capabilities(
        registry,
        candidates[0],
        forced_value(forced).is_some(),
    ))
}

/// The forced encoder or family, if any (empty and `auto` mean automatic).
pub(super) fn forced_value(forced: Option<&str>) -> Option<&str> {
    forced
        .map(str::trim)
        .filter(|f| !f.is_empty() && !f.eq_ignore_ascii_case("auto"))
}

/// The encoders to try, preferred first; never empty.
pub(super) fn candidates(
    registry: &Registry,
    forced: Option<&str>,
) -> Result<Vec<&'static str>, TranscodeError> {
    if !registry.has("opusenc") {
        return Err(TranscodeError::NoOpus);
    }
    let available: Vec<&'static str> = all_encoder_elements()
        .into_iter()
        .filter(|e| registry.has(e))
        .collect();
    let available_text = if available.is_empty() {
        "none".to_string()
    } else {
        available.join(", ")
    };
    let Some(forced) = forced_value(forced) else {
        if available.is_empty() {
            return Err(TranscodeError::NoEncoder {
                looked_for: all_encoder_elements().join(", "),
            });
        }
        return Ok(available);
    };
    if let Some(family) = EncoderFamily::from_name(forced) {
        let found: Vec<&'static str> = family
            .elements()
            .iter()
            .copied()
            .filter(|e| registry.has(e))
            .collect();
        if found.is_empty() {
            return Err(TranscodeError::ForcedMissing {
                forced: forced.to_string(),
                reason: format!(
                    "no {} encoder is available ({} not found: not installed, or {})",
                    family.name(),
                    family.elements().join(", "),
                    if family.hardware() {
                        "the GPU or its driver is not visible to GStreamer"
                    } else {
                        "its plugin is missing"
                    }
                ),
                available: available_text,
            });
        }
        return Ok(found);
    }
    let known = all_encoder_elements();
    let Some(element) = known
        .iter()
        .copied()
        .find(|e| e.eq_ignore_ascii_case(forced))
    else {
        let families: Vec<&str> = EncoderFamily::ALL.iter().map(|f| f.name()).collect();
        return Err(TranscodeError::UnknownEncoder {
            forced: forced.to_string(),
            known: format!(
                "auto, a family ({}) or an element ({})",
                families.join(", "),
                known.join(", ")
            ),
        });
    };
    if !registry.has(element) {
        let hardware = EncoderFamily::of(element).is_some_and(EncoderFamily::hardware);
        return Err(TranscodeError::ForcedMissing {
            forced: forced.to_string(),
            reason: format!(
                "the GStreamer element {element} is not available (not installed{})",
                if hardware {
                    ", or the GPU or its driver is not visible to GStreamer"
                } else {
                    ""
                }
            ),
            available: available_text,
        });
    }
    Ok(vec![element])
}

/// The capabilities when `encoder` (present in `registry`) is used.
pub(super) fn capabilities(
    registry: &Registry,
    encoder: &str,
    forced: bool,
) -> TranscodeCapabilities {
    let family = EncoderFamily::of(encoder).expect("a known encoder element");
    let decoder = |codec: Codec| {
        decoder_candidates(registry, family, forced, codec)
            .first()
            .copied()
            .unwrap_or(FALLBACK_DECODER)
            .to_string()
    };
    TranscodeCapabilities {
        video_encoder: encoder.to_string(),
        family: family.name().to_string(),
        h264_decoder: decoder(Codec::H264),
        h265_decoder: decoder(Codec::H265),
        available_encoders: all_encoder_elements()
            .into_iter()
            .filter(|e| registry.has(e))
            .map(str::to_string)
            .collect(),
        opus_encoder: "opusenc".to_string(),
        forced,
        skipped: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERYTHING: &[&str] = &[
        "nvh264enc",
        "nvautogpuh264enc",
        "nvh264dec",
        "nvh265dec",
        "vah264enc",
        "vah264dec",
        "vah265dec",
        "x264enc",
        "openh264enc",
        "avdec_h264",
        "avdec_h265",
        "opusenc",
    ];

    #[test]
    fn all_present_picks_cuda_with_its_decoders() {
        let caps = select(&Registry::from_names(EVERYTHING), None).unwrap();
        assert_eq!(caps.video_encoder, "nvh264enc");
        assert_eq!(caps.family, "cuda");
        assert_eq!(caps.h264_decoder, "nvh264dec");
        assert_eq!(caps.h265_decoder, "nvh265dec");
        assert_eq!(caps.opus_encoder, "opusenc");
        assert!(!caps.forced);
        assert_eq!(
            caps.available_encoders,
            vec![
                "nvh264enc",
                "nvautogpuh264enc",
                "vah264enc",
                "x264enc",
                "openh264enc"
            ]
        );
    }

    #[test]
    fn preference_order_without_cuda() {
        let vaapi = select(
            &Registry::from_names(&["vah264enc", "x264enc", "vah264dec", "opusenc"]),
            None,
        )
        .unwrap();
        assert_eq!(
            (vaapi.video_encoder.as_str(), vaapi.family.as_str()),
            ("vah264enc", "vaapi")
        );
        assert_eq!(vaapi.h264_decoder, "vah264dec");
        // No VA H.265 decoder and no software one: decodebin is the last resort.
        assert_eq!(vaapi.h265_decoder, "decodebin");

        let cuda_new = select(
            &Registry::from_names(&["nvautogpuh264enc", "x264enc", "opusenc"]),
            None,
        )
        .unwrap();
        assert_eq!(cuda_new.video_encoder, "nvautogpuh264enc");

        let openh264 = select(
            &Registry::from_names(&["openh264enc", "openh264dec", "opusenc"]),
            None,
        )
        .unwrap();
        assert_eq!(openh264.video_encoder, "openh264enc");
        assert_eq!(openh264.h264_decoder, "openh264dec");
    }

    #[test]
    fn only_x264_picks_x264_with_software_decoders() {
        let caps = select(
            &Registry::from_names(&["x264enc", "avdec_h264", "avdec_h265", "opusenc"]),
            None,
        )
        .unwrap();
        assert_eq!(caps.video_encoder, "x264enc");
        assert_eq!(caps.family, "x264");
        assert_eq!(caps.h264_decoder, "avdec_h264");
        assert_eq!(caps.h265_decoder, "avdec_h265");
        assert_eq!(caps.available_encoders, vec!["x264enc"]);
    }

    #[test]
    fn forcing_x264_when_cuda_is_present() {
        let registry = Registry::from_names(EVERYTHING);
        for forced in ["x264enc", "X264ENC", " x264 "] {
            let caps = select(&registry, Some(forced)).unwrap();
            assert_eq!(caps.video_encoder, "x264enc", "{forced}");
            assert!(caps.forced);
            // Software encoder, software decoders: a forced software path stays off the GPU.
            assert_eq!(caps.h264_decoder, "avdec_h264");
        }
        for auto in ["", "auto", "AUTO"] {
            let caps = select(&registry, Some(auto)).unwrap();
            assert_eq!(caps.video_encoder, "nvh264enc");
            assert!(!caps.forced);
        }
        let family = select(&registry, Some("vaapi")).unwrap();
        assert_eq!(family.video_encoder, "vah264enc");
    }

    #[test]
    fn a_gpu_that_decodes_but_cannot_encode_still_decodes() {
        let registry = Registry::from_names(NVDEC_WITHOUT_NVENC);
        let caps = select(&registry, None).unwrap();
        assert_eq!(caps.video_encoder, "x264enc");
        assert_eq!(caps.h264_decoder, "nvh264dec");
        assert_eq!(caps.h265_decoder, "nvh265dec");
        assert_eq!(
            decoder_candidates(&registry, EncoderFamily::X264, false, Codec::H264),
            ["nvh264dec", "avdec_h264"]
        );
        // Forcing the software encoder keeps the branch off the GPU.
        let forced = select(&registry, Some("x264")).unwrap();
        assert_eq!(forced.h264_decoder, "avdec_h264");
        assert_eq!(forced.h265_decoder, "avdec_h265");
        // A GPU encoder's own decoders come before another GPU's.
        let both = Registry::from_names(&["vah264enc", "vah264dec", "nvh264dec", "opusenc"]);
        assert_eq!(
            decoder_candidates(&both, EncoderFamily::Vaapi, true, Codec::H264),
            ["vah264dec", "nvh264dec"]
        );
        assert!(HARDWARE_DECODERS.iter().all(|d| hardware_decoder(d)));
        assert!(!hardware_decoder("avdec_h264"));
    }

    #[test]
    fn forced_missing_is_an_error_naming_it_and_what_exists() {
        let registry = Registry::from_names(&["x264enc", "openh264enc", "opusenc"]);
        let err = select(&registry, Some("nvh264enc")).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, TranscodeError::ForcedMissing { .. }));
        assert!(text.contains("nvh264enc"), "{text}");
        assert!(text.contains("x264enc, openh264enc"), "{text}");
        assert!(text.contains("GPU"), "{text}");

        let text = select(&registry, Some("cuda")).unwrap_err().to_string();
        assert!(text.contains("nvh264enc, nvautogpuh264enc"), "{text}");

        let text = select(&Registry::from_names(&["opusenc"]), Some("x264enc"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("available here: none"), "{text}");

        let err = select(&registry, Some("h264_nvenc")).unwrap_err();
        assert!(matches!(err, TranscodeError::UnknownEncoder { .. }));
        assert!(err.to_string().contains("nvh264enc"), "{err}");
    }

    #[test]
    fn nothing_to_encode_with() {
        assert!(matches!(
            select(&Registry::from_names(&["opusenc", "avdec_h264"]), None),
            Err(TranscodeError::NoEncoder { .. })
        ));
        assert_eq!(
            select(&Registry::from_names(&["x264enc"]), None),
            Err(TranscodeError::NoOpus)
        );
    }

    #[test]
    fn every_encoder_has_a_description_and_a_family() {
        for element in all_encoder_elements() {
            assert!(description_file(element).is_some(), "{element}");
            assert!(EncoderFamily::of(element).is_some(), "{element}");
        }
        assert_eq!(EncoderFamily::from_name("CUDA"), Some(EncoderFamily::Cuda));
        assert!(EncoderFamily::Vaapi.hardware() && !EncoderFamily::X264.hardware());
    }

    #[test]
    fn the_real_registry_has_x264_here() {
        gst::init().unwrap();
        let registry = Registry::from_gstreamer();
        assert!(registry.has("videotestsrc"));
        assert!(registry.has("x264enc"));
        assert!(!registry.has("no-such-element"));
    }
}
