//! FLV tag bodies as the RTMP server relays them: which ones a new reader needs first (metadata,
//! sequence headers, the current GOP) and which video tags are key frames. Bodies are passed on
//! untouched, so enhanced RTMP (HEVC, AV1, VP9 by FourCC) travels like H.264.

use std::sync::Arc;

use bytes::Bytes;
use rml_rtmp::sessions::StreamMetadata;
use rml_rtmp::time::RtmpTimestamp;

/// One relayed message.
#[derive(Clone)]
pub enum Media {
    Metadata(Arc<StreamMetadata>),
    Video(Bytes, RtmpTimestamp),
    Audio(Bytes, RtmpTimestamp),
}

/// The GOP kept for new readers is dropped past this many messages (a source without key frames
/// must not grow it without bound); readers then start at the next key frame.
const MAX_GOP: usize = 2000;

/// What a new reader gets before the live messages.
#[derive(Clone, Default)]
pub struct StartCache {
    pub metadata: Option<Arc<StreamMetadata>>,
    pub video_header: Option<Media>,
    pub audio_header: Option<Media>,
    /// From the last key frame on.
    pub gop: Vec<Media>,
}

impl StartCache {
    /// Keeps `media` if a new reader will need it.
    pub fn update(&mut self, media: &Media) {
        match media {
            Media::Metadata(m) => self.metadata = Some(m.clone()),
            Media::Video(data, _) if is_video_header(data) => {
                self.video_header = Some(media.clone());
            }
            Media::Video(data, _) if is_key_frame(data) => {
                self.gop.clear();
                self.gop.push(media.clone());
            }
            Media::Audio(data, _) if is_audio_header(data) => {
                self.audio_header = Some(media.clone());
            }
            _ if !self.gop.is_empty() => {
                if self.gop.len() >= MAX_GOP {
                    self.gop.clear();
                } else {
                    self.gop.push(media.clone());
                }
            }
            _ => {}
        }
    }

    /// The messages a new reader starts with, in order.
    pub fn start(&self) -> impl Iterator<Item = &Media> {
        self.video_header
            .iter()
            .chain(self.audio_header.iter())
            .chain(self.gop.iter())
    }
}

/// FLV video tag: frame type in bits 4-6 (1 = key frame) for legacy and enhanced RTMP alike.
pub fn is_key_frame(data: &[u8]) -> bool {
    data.first().is_some_and(|b| (b >> 4) & 0x07 == 1)
}

/// AVC/HEVC sequence header (legacy: codec 7/12 with packet type 0), or enhanced RTMP's
/// SequenceStart (IsExHeader bit set, packet type 0).
pub fn is_video_header(data: &[u8]) -> bool {
    match data {
        [b, ..] if b & 0x80 != 0 => b & 0x0f == 0,
        [b, 0, ..] => matches!(b & 0x0f, 7 | 12),
        _ => false,
    }
}

/// AAC sequence header: sound format 10, packet type 0.
pub fn is_audio_header(data: &[u8]) -> bool {
    matches!(data, [b, 0, ..] if b >> 4 == 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(b: &[u8]) -> Media {
        Media::Video(Bytes::copy_from_slice(b), RtmpTimestamp::new(0))
    }

    #[test]
    fn cache_holds_headers_and_the_gop_from_the_last_key_frame() {
        let mut cache = StartCache::default();
        cache.update(&video(&[0x27, 1])); // inter frame before any key frame: not kept
        assert!(cache.gop.is_empty());
        cache.update(&video(&[0x17, 0])); // AVC sequence header
        cache.update(&Media::Audio(
            Bytes::from_static(&[0xaf, 0]),
            RtmpTimestamp::new(0),
        ));
        cache.update(&video(&[0x17, 1])); // key frame
        cache.update(&video(&[0x27, 1]));
        cache.update(&Media::Audio(
            Bytes::from_static(&[0xaf, 1]),
            RtmpTimestamp::new(0),
        ));
        assert_eq!(cache.start().count(), 5);
        cache.update(&video(&[0x17, 1]));
        assert_eq!(cache.gop.len(), 1);
        assert!(is_video_header(&[0x90, 0x68])); // enhanced RTMP: key frame, SequenceStart
        assert!(!is_video_header(&[0x91, 0x68]));
        assert!(is_key_frame(&[0x91]));
    }
}
