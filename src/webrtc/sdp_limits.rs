//! Cheap limits on SDP text from clients, checked in one pass over the bytes before
//! gstreamer-sdp sees them.
//!
//! Two reasons. gstreamer-sdp's work grows with the square of a section's formats times its
//! attributes (each payload type's caps are found by scanning every attribute), so an 822 KB
//! offer with 10,000 rtpmap lines took six seconds to read. And GStreamer's parser copies each
//! token of a line (an attribute's key, an `m=` format, an `o=` field) into an 8192-byte stack
//! buffer and silently cuts it at 8191 bytes (`gst_sdp_parse_line` in gst-plugins-base's
//! `gstsdpmessage.c`), in the middle of a UTF-8 character if one straddles the cut; gstreamer-sdp
//! 0.25 then panics on `to_str().unwrap()` when the key is read (`sdp_attribute.rs`). A line
//! limit well below 8191 bytes means no token is ever cut.
//!
//! Every limit is several times what real clients send: a Chromium offer
//! (`tests/fixtures/chrome156-offer.sdp`) is 6 KB in 201 lines, its video section 34 formats
//! and about 150 attributes, its longest line 145 bytes; Firefox and OBS (libdatachannel) send
//! less.

/// Largest offer body (WHEP/WHIP POST): ten times a Chromium offer.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
/// Largest trickle or ICE-restart fragment (PATCH): a fragment carries credentials and
/// candidates, about 150 bytes each; a multi-homed host trickles a few dozen.
pub const MAX_FRAGMENT_BYTES: usize = 16 * 1024;
/// Longest line, in bytes. Browsers' longest lines (fmtp, candidates, fingerprints) are under
/// 200 bytes; the limit has to stay under the 8191 bytes at which GStreamer cuts tokens.
pub const MAX_LINE_BYTES: usize = 4096;
/// Most lines in an offer: ten times a Chromium offer.
pub const MAX_OFFER_LINES: usize = 2048;
/// Most lines in a fragment.
pub const MAX_FRAGMENT_LINES: usize = 512;
/// Most `m=` sections: WHEP/WHIP clients send one audio and one video section (plus at most a
/// data channel); more than one per kind is refused later anyway.
pub const MAX_MEDIA_SECTIONS: usize = 16;
/// Most formats on one `m=` line: RTP payload types are 7 bits, so no RTP section can name
/// more than 128 different ones.
pub const MAX_FORMATS_PER_MEDIA: usize = 128;
/// Most attributes in one section (or at session level): three times Chromium's video section.
pub const MAX_ATTRIBUTES_PER_SECTION: usize = 512;

// GStreamer cuts tokens at 8191 bytes; a line can never reach that.
const _: () = assert!(MAX_LINE_BYTES < 8191);

/// The limits for one kind of body.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body.
    pub max_bytes: usize,
    /// Most lines.
    pub max_lines: usize,
}

/// An offer (POST).
pub const OFFER: Limits = Limits {
    max_bytes: MAX_OFFER_BYTES,
    max_lines: MAX_OFFER_LINES,
};

/// A trickle-ice-sdpfrag (PATCH).
pub const FRAGMENT: Limits = Limits {
    max_bytes: MAX_FRAGMENT_BYTES,
    max_lines: MAX_FRAGMENT_LINES,
};

/// Why a body was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Over the size limit (413).
    #[error("the body has {0} bytes; at most {1} are taken")]
    TooLarge(usize, usize),
    /// Over another limit (400).
    #[error("{0}")]
    Exceeded(String),
}

/// Checks `text` against `limits` and the per-line and per-section limits, in one pass. Lines
/// are split where GStreamer splits them: at `\n`, `\r` and NUL.
pub fn check(text: &str, limits: Limits) -> Result<(), LimitError> {
    if text.len() > limits.max_bytes {
        return Err(LimitError::TooLarge(text.len(), limits.max_bytes));
    }
    let exceeded = |what: String| Err(LimitError::Exceeded(what));
    let mut lines = 0usize;
    let mut sections = 0usize;
    let mut attributes = 0usize;
    for (n, line) in text.split(['\n', '\r', '\0']).enumerate() {
        // GStreamer skips leading whitespace (g_ascii_isspace, which includes \v) on each line.
        let line = line.trim_start_matches(is_sdp_space);
        if line.is_empty() {
            continue;
        }
        lines += 1;
        if lines > limits.max_lines {
            return exceeded(format!("more than {} lines", limits.max_lines));
        }
        if line.len() > MAX_LINE_BYTES {
            return exceeded(format!(
                "line {} has {} bytes; at most {MAX_LINE_BYTES} are taken",
                n + 1,
                line.len()
            ));
        }
        if let Some(media) = line.strip_prefix("m=") {
            sections += 1;
            attributes = 0;
            if sections > MAX_MEDIA_SECTIONS {
                return exceeded(format!("more than {MAX_MEDIA_SECTIONS} m= sections"));
            }
            // m=<media> <port> <proto> <fmt> ...
            let formats = media.split(is_sdp_space).filter(|t| !t.is_empty()).count();
            if formats.saturating_sub(3) > MAX_FORMATS_PER_MEDIA {
                return exceeded(format!(
                    "m= section {sections} has more than {MAX_FORMATS_PER_MEDIA} formats"
                ));
            }
        } else if line.starts_with("a=") {
            attributes += 1;
            if attributes > MAX_ATTRIBUTES_PER_SECTION {
                return exceeded(format!(
                    "more than {MAX_ATTRIBUTES_PER_SECTION} attributes in one section"
                ));
            }
        }
    }
    Ok(())
}

/// GLib's `g_ascii_isspace`: Rust's ASCII whitespace plus vertical tab.
fn is_sdp_space(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0b'
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = include_str!("../../tests/fixtures/chrome156-offer.sdp");

    #[test]
    fn real_offers_pass() {
        assert_eq!(check(CHROME, OFFER), Ok(()));
    }

    #[test]
    fn each_limit_refuses() {
        let big = "a".repeat(MAX_OFFER_BYTES + 1);
        assert!(matches!(check(&big, OFFER), Err(LimitError::TooLarge(..))));
        let long_line = format!("v=0\r\na={}\r\n", "é".repeat(4500));
        assert!(matches!(
            check(&long_line, OFFER),
            Err(LimitError::Exceeded(_))
        ));
        // A line is cut by \r alone too, as GStreamer cuts it.
        let cr_lines = "a=x\r".repeat(MAX_OFFER_LINES + 1);
        assert!(check(&cr_lines, OFFER).is_err());
        let formats: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        let many = format!(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF {}\r\n",
            formats.join(" ")
        );
        assert!(check(&many, OFFER).is_err());
        let sections = "m=audio 9 RTP/AVP 0\r\n".repeat(MAX_MEDIA_SECTIONS + 1);
        assert!(check(&sections, OFFER).is_err());
        let attrs = format!(
            "m=audio 9 RTP/AVP 0\r\n{}",
            "a=rtpmap:0 PCMU/8000\r\n".repeat(MAX_ATTRIBUTES_PER_SECTION + 1)
        );
        assert!(check(&attrs, OFFER).is_err());
        // Spread over sections, the same attributes pass.
        let spread = "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n".repeat(16);
        assert_eq!(check(&spread, OFFER), Ok(()));
    }

    #[test]
    fn leading_whitespace_does_not_hide_an_m_line() {
        let formats: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        let hidden = format!(" \x0bm=video 9 X {}\r\n", formats.join(" "));
        assert!(check(&hidden, OFFER).is_err());
    }
}
