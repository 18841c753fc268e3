//! ICE on a session's webrtcbin after the answer went out: trickled candidates, answerer-side ICE
//! restarts, and the credentials behind the entity-tag.
//!
//! Everything here blocks on webrtcbin promises (each bounded, see [`super::promise`]); callers
//! ([`super::session::Session::patch`]) run it off the async runtime, one restart per session at
//! a time.
//!
//! ICE restart with webrtcbin 1.22, as measured (see docs/webrtc.md): a second
//! set-remote-description with the viewer's offer carrying new credentials is accepted, but
//! create-answer reuses the old local ufrag/pwd, so the answer is given fresh ones before
//! set-local-description. webrtcbin then hands both pairs to libnice (`nice_agent_set_local/remote_
//! credentials`), so STUN checks are answered with the new credentials only. libnice's
//! `nice_agent_restart_stream` is never called by 1.22, so no regathering happens: the selected pair
//! keeps carrying media and the candidates stay the ones gathered for the first answer.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp::{SDPAttribute, SDPMessage, SDPMessageRef};
use gstreamer_webrtc::{WebRTCSDPType, WebRTCSessionDescription};

use crate::webrtc::sdpfrag::{Candidate, Fragment};

use super::promise::{self, PromiseError};

/// Why an ICE operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IceError {
    /// The viewer has no negotiated session (yet, or any more).
    #[error("the viewer has no negotiated session")]
    NoSession,
    /// webrtcbin refused a step.
    #[error("webrtcbin refused the ICE restart: {0}")]
    Refused(String),
    /// webrtcbin did not answer in time.
    #[error("webrtcbin did not answer {0} in time")]
    Timeout(&'static str),
}

impl From<PromiseError> for IceError {
    fn from(e: PromiseError) -> Self {
        match e {
            PromiseError::Timeout(what) => IceError::Timeout(what),
            refused => IceError::Refused(refused.to_string()),
        }
    }
}

/// The current local (answer) description.
pub fn local_description(webrtcbin: &gst::Element) -> Option<SDPMessage> {
    description(webrtcbin, "local-description")
}

/// The current remote (offer) description.
pub fn remote_description(webrtcbin: &gst::Element) -> Option<SDPMessage> {
    description(webrtcbin, "remote-description")
}

fn description(webrtcbin: &gst::Element, property: &str) -> Option<SDPMessage> {
    webrtcbin
        .property::<Option<WebRTCSessionDescription>>(property)
        .map(|d| d.sdp().to_owned())
}

/// The ICE ufrag and pwd of a description: media level first (where browsers and webrtcbin put
/// them), else session level.
pub fn credentials(sdp: &SDPMessageRef) -> Option<(String, String)> {
    let media = sdp.medias().find_map(|m| {
        Some((
            m.attribute_val("ice-ufrag")?.to_string(),
            m.attribute_val("ice-pwd")?.to_string(),
        ))
    });
    media.or_else(|| {
        Some((
            sdp.attribute_val("ice-ufrag")?.to_string(),
            sdp.attribute_val("ice-pwd")?.to_string(),
        ))
    })
}

/// The m-line index a fragment section refers to: by `mid` in the viewer's offer, else by
/// position (RFC 8840 §4.4 allows either).
pub fn mline_index(remote: &SDPMessageRef, mid: Option<&str>, position: usize) -> Option<u32> {
    match mid {
        Some(mid) => remote
            .medias()
            .position(|m| m.attribute_val("mid") == Some(mid))
            .map(|i| i as u32),
        None => (position < remote.medias_len() as usize).then_some(position as u32),
    }
}

/// Hands the usable candidates of a fragment to webrtcbin; unusable ones (mDNS names, TCP) and
/// ones for unknown sections are dropped silently. Returns how many were added.
pub fn add_candidates(webrtcbin: &gst::Element, fragment: &Fragment) -> Result<usize, IceError> {
    let remote = remote_description(webrtcbin).ok_or(IceError::NoSession)?;
    let mut added = 0;
    let mut add = |mline: u32, candidates: &[Candidate]| {
        for candidate in candidates.iter().filter(|c| c.usable()) {
            webrtcbin.emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate.line]);
            added += 1;
        }
    };
    add(0, &fragment.session_candidates);
    for (position, section) in fragment.media.iter().enumerate() {
        if let Some(mline) = mline_index(&remote, section.mid.as_deref(), position) {
            add(mline, &section.candidates);
        }
    }
    Ok(added)
}

/// Restarts the session's ICE as the answerer: the peer's offer again with its new credentials,
/// a new answer with fresh local credentials. Returns the new local description with the
/// candidates gathered for the first answer (the list is complete: nothing regathers).
pub fn restart(webrtcbin: &gst::Element, ufrag: &str, pwd: &str) -> Result<SDPMessage, IceError> {
    let (Some(remote), Some(local)) = (remote_description(webrtcbin), local_description(webrtcbin))
    else {
        return Err(IceError::NoSession);
    };
    renegotiate(webrtcbin, &remote, &local, ufrag, pwd)
}

fn renegotiate(
    webrtcbin: &gst::Element,
    remote: &SDPMessageRef,
    previous_local: &SDPMessageRef,
    ufrag: &str,
    pwd: &str,
) -> Result<SDPMessage, IceError> {
    // The old remote candidates belong to the old ICE generation; new ones come by trickle.
    let offer = with_credentials(remote, ufrag, pwd, true);
    let offer = WebRTCSessionDescription::new(WebRTCSDPType::Offer, offer);
    promise::call(webrtcbin, "set-remote-description", &offer)?;
    let reply = promise::call(webrtcbin, "create-answer", &None::<gst::Structure>)?;
    let answer = reply
        .and_then(|r| r.get::<WebRTCSessionDescription>("answer").ok())
        .ok_or_else(|| IceError::Refused("create-answer gave no answer".into()))?;
    // webrtcbin 1.22 answers with the credentials of its previous answer; a restart needs new ones.
    let (local_ufrag, local_pwd) = new_credentials();
    let answer = with_credentials(answer.sdp(), &local_ufrag, &local_pwd, true);
    let answer = WebRTCSessionDescription::new(WebRTCSDPType::Answer, answer);
    promise::call(webrtcbin, "set-local-description", &answer)?;
    let mut local = local_description(webrtcbin).ok_or(IceError::NoSession)?;
    copy_candidates(previous_local, &mut local);
    Ok(local)
}

/// Fresh ICE credentials: 16 and 32 characters of the ice-char alphabet (RFC 8839 asks for at
/// least 4 and 22), from the OS generator.
pub fn new_credentials() -> (String, String) {
    use rand::distributions::{Alphanumeric, DistString};
    let mut rng = rand::rngs::OsRng;
    (
        Alphanumeric.sample_string(&mut rng, 16),
        Alphanumeric.sample_string(&mut rng, 32),
    )
}

/// A copy of `sdp` with every ice-ufrag/ice-pwd replaced; optionally without candidates.
fn with_credentials(sdp: &SDPMessageRef, ufrag: &str, pwd: &str, strip: bool) -> SDPMessage {
    let mut out = sdp.to_owned();
    let replacement = |key: &str| match key {
        "ice-ufrag" => Some(SDPAttribute::new("ice-ufrag", Some(ufrag))),
        "ice-pwd" => Some(SDPAttribute::new("ice-pwd", Some(pwd))),
        _ => None,
    };
    let is_candidate = |key: &str| strip && (key == "candidate" || key == "end-of-candidates");
    for i in (0..out.attributes_len()).rev() {
        let Some(key) = out.attribute(i).map(|a| a.key().to_string()) else {
            continue;
        };
        if let Some(attr) = replacement(&key) {
            let _ = out.replace_attribute(i, attr);
        } else if is_candidate(&key) {
            let _ = out.remove_attribute(i);
        }
    }
    for media in out.medias_mut() {
        for i in (0..media.attributes_len()).rev() {
            let Some(key) = media.attribute(i).map(|a| a.key().to_string()) else {
                continue;
            };
            if let Some(attr) = replacement(&key) {
                let _ = media.replace_attribute(i, attr);
            } else if is_candidate(&key) {
                let _ = media.remove_attribute(i);
            }
        }
    }
    out
}

/// Puts the candidates of `from` into the same m-sections of `to`.
fn copy_candidates(from: &SDPMessageRef, to: &mut SDPMessage) {
    for (index, media) in to.medias_mut().enumerate() {
        let Some(source) = from.media(index as u32) else {
            continue;
        };
        for attr in source.attributes().filter(|a| a.key() == "candidate") {
            media.add_attribute("candidate", attr.value());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE v a\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=ice-ufrag:old\r\na=ice-pwd:oldoldoldoldoldoldoldold\r\n\
a=candidate:1 1 UDP 1 192.0.2.1 5000 typ host\r\na=end-of-candidates\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=ice-ufrag:old\r\na=ice-pwd:oldoldoldoldoldoldoldold\r\n";

    #[test]
    fn credentials_are_replaced_everywhere() {
        gst::init().unwrap();
        let sdp = SDPMessage::parse_buffer(OFFER.as_bytes()).unwrap();
        assert_eq!(
            credentials(&sdp),
            Some(("old".into(), "oldoldoldoldoldoldoldold".into()))
        );
        let new = with_credentials(&sdp, "nu", "nunununununununununununu", true);
        for m in new.medias() {
            assert_eq!(m.attribute_val("ice-ufrag"), Some("nu"));
            assert!(m.attributes().all(|a| a.key() != "candidate"));
        }
        assert_eq!(mline_index(&sdp, Some("a"), 0), Some(1));
        assert_eq!(mline_index(&sdp, None, 1), Some(1));
        assert_eq!(mline_index(&sdp, Some("x"), 0), None);
        assert_eq!(mline_index(&sdp, None, 2), None);
        let mut to = new.clone();
        copy_candidates(&sdp, &mut to);
        assert_eq!(
            to.media(0).unwrap().attribute_val("candidate"),
            Some("1 1 UDP 1 192.0.2.1 5000 typ host")
        );
    }

    #[test]
    fn generated_credentials_are_long_enough() {
        let (u, p) = new_credentials();
        assert_eq!((u.len(), p.len()), (16, 32));
        assert_ne!(new_credentials().0, u);
    }
}
