//! `application/trickle-ice-sdpfrag` (RFC 8840) bodies: trickled candidates and ICE restarts.
//!
//! A fragment is a run of SDP `a=` and `m=` lines without a session header. It is parsed by
//! gstreamer-sdp after prefixing a minimal session header, so the SDP grammar (and not ad-hoc
//! string splitting) decides which attribute belongs to which media section.

use std::net::IpAddr;

use gstreamer_sdp::{SDPMessage, SDPMessageRef};

use super::sdp_limits;

/// The media type of a fragment.
pub const CONTENT_TYPE: &str = "application/trickle-ice-sdpfrag";

/// Lines that make a fragment parse as a whole SDP message.
const SESSION_HEADER: &str = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

/// Why a fragment was refused (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed sdpfrag: {0}")]
pub struct Malformed(pub String);

/// One `a=candidate` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The attribute as webrtcbin's `add-ice-candidate` takes it: `candidate:...`.
    pub line: String,
    /// Transport, lower case (`udp`, `tcp`).
    pub transport: String,
    /// Connection address (an IP, or an mDNS `.local` name).
    pub address: String,
    /// Port.
    pub port: u16,
}

impl Candidate {
    fn parse(value: &str) -> Result<Candidate, Malformed> {
        let bad = || Malformed(format!("bad candidate {value:?}"));
        let fields: Vec<&str> = value.split_ascii_whitespace().collect();
        // foundation component transport priority address port "typ" type [extensions]
        if fields.len() < 8 || fields[6] != "typ" {
            return Err(bad());
        }
        fields[1].parse::<u16>().map_err(|_| bad())?;
        fields[3].parse::<u32>().map_err(|_| bad())?;
        let port = fields[5].parse::<u16>().map_err(|_| bad())?;
        Ok(Candidate {
            line: format!("candidate:{}", fields.join(" ")),
            transport: fields[2].to_ascii_lowercase(),
            address: fields[4].to_string(),
            port,
        })
    }

    /// Whether webrtcbin/libnice can use it: UDP to an IP address. libnice cannot resolve mDNS
    /// `.local` names (webrtcbin 1.22 even asserts on some), and we gather no TCP candidates, so
    /// both are dropped; RFC 9725 says to drop unsupported candidates silently.
    pub fn usable(&self) -> bool {
        self.transport == "udp" && self.address.parse::<IpAddr>().is_ok()
    }
}

/// One `m=` section of a fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaFragment {
    /// `a=mid`, when given.
    pub mid: Option<String>,
    /// Its candidates, in order.
    pub candidates: Vec<Candidate>,
}

/// A parsed fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// `a=ice-ufrag` (session or media level; all must agree under BUNDLE).
    pub ufrag: Option<String>,
    /// `a=ice-pwd`.
    pub pwd: Option<String>,
    /// The `m=` sections in fragment order.
    pub media: Vec<MediaFragment>,
    /// Candidates given before any `m=` line; they are taken for the first media section.
    pub session_candidates: Vec<Candidate>,
}

impl Fragment {
    /// Whether the fragment names ICE credentials different from `current` (the remote
    /// credentials in force): that makes it an ICE restart, not a trickle.
    pub fn is_restart(&self, current_ufrag: &str, current_pwd: &str) -> bool {
        self.ufrag.as_deref().is_some_and(|u| u != current_ufrag)
            || self.pwd.as_deref().is_some_and(|p| p != current_pwd)
    }
}

/// Parses a fragment body. The [`sdp_limits`] for fragments are
/// checked first, so gstreamer-sdp never sees a line it would cut (see there).
pub fn parse(body: &str) -> Result<Fragment, Malformed> {
    sdp_limits::check(body, sdp_limits::FRAGMENT).map_err(|e| Malformed(e.to_string()))?;
    let lines: Vec<&str> = body
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return Err(Malformed("empty fragment".into()));
    }
    // RFC 8840 fragments carry only attribute and media lines; anything else (a session header,
    // a stray v=, free text) means the client sent something that is not a fragment.
    if let Some(line) = lines
        .iter()
        .find(|l| !(l.starts_with("a=") || l.starts_with("m=")))
    {
        return Err(Malformed(format!("unexpected line {line:?}")));
    }
    let text = format!("{SESSION_HEADER}{}\r\n", lines.join("\r\n"));
    let message =
        SDPMessage::parse_buffer(text.as_bytes()).map_err(|e| Malformed(e.to_string()))?;

    let mut fragment = Fragment::default();
    let mut credentials = Credentials::default();
    for attr in message.attributes() {
        credentials.take(attr.key(), attr.value())?;
        if attr.key() == "candidate" {
            fragment
                .session_candidates
                .push(Candidate::parse(attr.value().unwrap_or(""))?);
        }
    }
    for media in message.medias() {
        if media.media().is_none_or(str::is_empty) || media.proto().is_none_or(str::is_empty) {
            return Err(Malformed("an m= line without media or protocol".into()));
        }
        let mut section = MediaFragment {
            mid: media.attribute_val("mid").map(str::to_string),
            candidates: Vec::new(),
        };
        for attr in media.attributes() {
            credentials.take(attr.key(), attr.value())?;
            if attr.key() == "candidate" {
                section
                    .candidates
                    .push(Candidate::parse(attr.value().unwrap_or(""))?);
            }
        }
        fragment.media.push(section);
    }
    fragment.ufrag = credentials.ufrag;
    fragment.pwd = credentials.pwd;
    Ok(fragment)
}

#[derive(Default)]
struct Credentials {
    ufrag: Option<String>,
    pwd: Option<String>,
}

impl Credentials {
    /// Keeps the first ufrag/pwd; a second, different one is an error (BUNDLE shares one ICE
    /// session, so a fragment cannot restart half of it).
    fn take(&mut self, key: &str, value: Option<&str>) -> Result<(), Malformed> {
        let slot = match key {
            "ice-ufrag" => &mut self.ufrag,
            "ice-pwd" => &mut self.pwd,
            _ => return Ok(()),
        };
        let value = value.unwrap_or("").trim();
        if value.is_empty() {
            return Err(Malformed(format!("empty a={key}")));
        }
        match slot {
            Some(existing) if existing != value => {
                Err(Malformed(format!("conflicting a={key} values")))
            }
            Some(_) => Ok(()),
            None => {
                *slot = Some(value.to_string());
                Ok(())
            }
        }
    }
}

/// Renders the ICE part of a local description as a fragment (the body of a 200 answer to an
/// ICE restart): session `ice-options`/`ice-lite`/`group`, then per `m=` section its `mid`,
/// credentials and candidates.
pub fn render(local: &SDPMessageRef) -> String {
    let mut out = String::new();
    for attr in local.attributes() {
        if matches!(attr.key(), "ice-options" | "ice-lite" | "group") {
            push_attr(&mut out, attr.key(), attr.value());
        }
    }
    for media in local.medias() {
        let formats: Vec<&str> = media.formats().collect();
        out.push_str(&format!(
            "m={} {} {} {}\r\n",
            media.media().unwrap_or("application"),
            media.port(),
            media.proto().unwrap_or("UDP/TLS/RTP/SAVPF"),
            formats.join(" ")
        ));
        let mut candidates = 0;
        for attr in media.attributes() {
            match attr.key() {
                "mid" | "ice-ufrag" | "ice-pwd" | "ice-options" => {
                    push_attr(&mut out, attr.key(), attr.value())
                }
                "candidate" => {
                    candidates += 1;
                    push_attr(&mut out, attr.key(), attr.value());
                }
                _ => {}
            }
        }
        // The server gathers everything before it answers: the list is complete.
        if candidates > 0 {
            out.push_str("a=end-of-candidates\r\n");
        }
    }
    out
}

fn push_attr(out: &mut String, key: &str, value: Option<&str>) {
    match value {
        Some(v) => out.push_str(&format!("a={key}:{v}\r\n")),
        None => out.push_str(&format!("a={key}\r\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        gstreamer::init().unwrap();
    }

    const TRICKLE: &str = "a=ice-options:trickle\r\na=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
a=candidate:1 1 UDP 2130706431 192.0.2.1 5000 typ host\r\n\
a=candidate:2 1 udp 2130706431 4b6a1e6c-3a1b-4d7e-9d0e-0123456789ab.local 5001 typ host\r\n\
a=candidate:3 1 TCP 1015021823 192.0.2.1 9 typ host tcptype active\r\n\
a=end-of-candidates\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n";

    #[test]
    fn trickle_fragment_parses_by_section() {
        init();
        let f = parse(TRICKLE).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.media.len(), 2);
        assert_eq!(f.media[0].mid.as_deref(), Some("0"));
        assert_eq!(f.media[1].mid.as_deref(), Some("1"));
        let usable: Vec<bool> = f.media[0]
            .candidates
            .iter()
            .map(Candidate::usable)
            .collect();
        assert_eq!(usable, vec![true, false, false]);
        assert_eq!(
            f.media[0].candidates[0].line,
            "candidate:1 1 UDP 2130706431 192.0.2.1 5000 typ host"
        );
        assert!(!f.is_restart("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1"));
        assert!(f.is_restart("old", "P2uYro0UCOQ4zxjKXaWCBui1"));
    }

    #[test]
    fn session_level_credentials_and_candidates() {
        init();
        let f = parse("a=ice-ufrag:abcd\na=ice-pwd:0123456789012345678901\na=candidate:1 1 udp 1 10.0.0.1 9 typ host\n").unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("abcd"));
        assert!(f.media.is_empty());
        assert_eq!(f.session_candidates.len(), 1);
    }

    #[test]
    fn malformed_fragments_are_refused() {
        init();
        for body in [
            "",
            "  \r\n",
            "hello",
            "v=0\r\na=ice-ufrag:x",
            "a=candidate:garbage",
            "a=candidate:1 1 udp x 10.0.0.1 9 typ host",
            "a=ice-ufrag:a\r\nm=video 9 X 1\r\na=ice-ufrag:b",
            "a=ice-ufrag:",
        ] {
            assert!(parse(body).is_err(), "{body:?} was accepted");
        }
    }

    #[test]
    fn render_keeps_ice_lines_only() {
        init();
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-options:trickle\r\na=group:BUNDLE video0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:video0\r\na=ice-ufrag:new\r\na=ice-pwd:newpwd\r\n\
a=rtpmap:102 H264/90000\r\na=candidate:1 1 UDP 2015363327 192.0.2.2 40000 typ host\r\n";
        let msg = SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        let frag = render(&msg);
        assert_eq!(
            frag,
            "a=ice-options:trickle\r\na=group:BUNDLE video0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
a=mid:video0\r\na=ice-ufrag:new\r\na=ice-pwd:newpwd\r\n\
a=candidate:1 1 UDP 2015363327 192.0.2.2 40000 typ host\r\na=end-of-candidates\r\n"
        );
        let back = parse(&frag).unwrap();
        assert_eq!(back.ufrag.as_deref(), Some("new"));
        assert_eq!(back.media[0].candidates.len(), 1);
    }
}
