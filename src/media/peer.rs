//! What every webrtcbin peer of the server needs, viewers (WHEP) and publishers (WHIP) alike:
//! ICE settings, promise-based signalling without a GLib main loop, answering with all
//! candidates gathered, and the connection flags the reapers read.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_sdp::SDPMessage;
use gstreamer_webrtc::{
    WebRTCICEGatheringState, WebRTCPeerConnectionState, WebRTCRTPTransceiver,
    WebRTCRTPTransceiverDirection, WebRTCSDPType, WebRTCSessionDescription,
};

use super::ice::credentials;
use super::promise::{self, PromiseError};
use super::sdp::{advertise_public_ip, Offer};
use super::IceConfig;

/// Which way media flows on a session, seen from the server: viewers (WHEP) are sent to,
/// publishers (WHIP) are received from. The one thing that sets the two negotiations apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The server sends (a WHEP viewer).
    Send,
    /// The server receives (a WHIP publisher).
    Receive,
}

impl Direction {
    /// The direction of our transceivers.
    pub fn transceiver(self) -> WebRTCRTPTransceiverDirection {
        match self {
            Direction::Send => WebRTCRTPTransceiverDirection::Sendonly,
            Direction::Receive => WebRTCRTPTransceiverDirection::Recvonly,
        }
    }

    /// Whether an answered m-line carries media our way.
    fn answered(self, media: &gstreamer_sdp::SDPMediaRef) -> bool {
        let ours = match self {
            Direction::Send => "sendonly",
            Direction::Receive => "recvonly",
        };
        media.port() != 0
            && (media.attribute_val(ours).is_some() || media.attribute_val("sendrecv").is_some())
    }
}

/// What a viewer's and a publisher's negotiation do differently: how their webrtcbin starts,
/// how their transceivers are made, and what happens once the offer is in.
pub trait Tracks {
    /// Brings webrtcbin (and what it sits in) to PLAYING.
    fn start(&mut self, webrtcbin: &gst::Element) -> Result<(), NegotiationError>;
    /// Adds one transceiver per track, in m-line order, before the offer goes in (create-answer
    /// then pairs each offered m-line with ours). Returns the m-lines and payload types kept.
    fn add(
        &mut self,
        webrtcbin: &gst::Element,
        direction: WebRTCRTPTransceiverDirection,
    ) -> Result<Vec<(u32, u8)>, NegotiationError>;
    /// The remote description is set.
    fn remote_set(&mut self) -> Result<(), NegotiationError> {
        Ok(())
    }
}

/// The outcome of a negotiation.
pub struct Negotiated {
    /// The answer as sent, all candidates in it.
    pub answer: String,
    /// Our ICE ufrag (the session's entity-tag).
    pub ufrag: String,
    /// The peer's ICE ufrag and pwd (an ICE restart changes them).
    pub remote: Option<(String, String)>,
}

/// Hooks a negotiation installs on the connection state.
pub struct Watchers {
    /// Runs once (on a GStreamer thread) when the connection fails or closes.
    pub on_dead: Box<dyn Fn() + Send + Sync>,
    /// Runs once (on a GStreamer thread) when the connection is up.
    pub on_connected: Option<Box<dyn FnOnce() + Send>>,
}

/// The one negotiation of the server, viewers and publishers alike (blocking, each step
/// bounded): the offer restricted to the formats kept, set-remote-description, create-answer,
/// every kept m-line answered in `direction`, set-local-description, and the answer once ICE
/// gathering completes (the server does not trickle).
pub fn negotiate(
    webrtcbin: &gst::Element,
    flags: &Arc<PeerFlags>,
    direction: Direction,
    offer: &Offer,
    ice: &IceConfig,
    tracks: &mut dyn Tracks,
    watchers: Watchers,
) -> Result<Negotiated, NegotiationError> {
    let t0 = std::time::Instant::now();
    flags.touch();
    watch_connection(webrtcbin, flags.clone(), watchers);
    let gathered = watch_gathering(webrtcbin);
    tracks.start(webrtcbin)?;
    let t_play = t0.elapsed();
    let mut keep = tracks.add(webrtcbin, direction.transceiver())?;
    keep.sort_by_key(|(mline, _)| *mline);
    let remote = WebRTCSessionDescription::new(WebRTCSDPType::Offer, offer.restricted(&keep));
    let t_tracks = t0.elapsed();
    call(webrtcbin, "set-remote-description", &remote)?;
    let t_srd = t0.elapsed();
    tracks.remote_set()?;
    let answer = create_answer(webrtcbin)?;
    // Every track must have found its m-line. Applying an answer that left one of our
    // transceivers out would trip an assertion in webrtcbin and abort the process.
    let unanswered: Vec<u32> = keep
        .iter()
        .map(|(mline, _)| *mline)
        .filter(|mline| {
            !answer
                .sdp()
                .media(*mline)
                .is_some_and(|m| direction.answered(m))
        })
        .collect();
    if !unanswered.is_empty() {
        return Err(NegotiationError::Failed(format!(
            "webrtcbin could not answer the offer's m-lines {unanswered:?}"
        )));
    }
    let t_answer = t0.elapsed();
    call(webrtcbin, "set-local-description", &answer)?;
    let t_sld = t0.elapsed();
    let (answer, ufrag) = gathered_answer(webrtcbin, &gathered, ice)?;
    let remote = credentials(remote.sdp());
    tracing::debug!(?direction, ?t_play, ?t_tracks, ?t_srd, ?t_answer, ?t_sld, gathered = ?t0.elapsed(), "negotiation timing");
    watch_receive(webrtcbin, flags.clone());
    Ok(Negotiated {
        answer,
        ufrag,
        remote,
    })
}

/// Why webrtcbin could not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    /// ICE gathering did not finish in time.
    #[error("ICE gathering timed out")]
    GatherTimeout,
    /// webrtcbin refused something.
    #[error("negotiation failed: {0}")]
    Failed(String),
    /// webrtcbin did not answer a promise in time (see [`promise::PROMISE_TIMEOUT`]).
    #[error("webrtcbin did not answer {0} in time")]
    Timeout(&'static str),
}

impl From<PromiseError> for NegotiationError {
    fn from(e: PromiseError) -> Self {
        match e {
            PromiseError::Timeout(what) => NegotiationError::Timeout(what),
            refused => NegotiationError::Failed(refused.to_string()),
        }
    }
}

impl From<glib::BoolError> for NegotiationError {
    fn from(e: glib::BoolError) -> Self {
        NegotiationError::Failed(e.to_string())
    }
}

/// Connection progress shared with webrtcbin's callbacks.
#[derive(Default)]
pub struct PeerFlags {
    connected: AtomicBool,
    /// Milliseconds since the epoch of the last packet from the peer (STUN, DTLS, RTP, RTCP).
    last_rx_ms: AtomicU64,
    /// A `WebRTCPeerConnectionState` as u8, for the sessions API.
    state: AtomicU8,
    /// Set once a failure or close was seen.
    pub dead: AtomicBool,
}

impl PeerFlags {
    /// The peer connection state name.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            0 => "new",
            1 => "connecting",
            2 => "connected",
            3 => "disconnected",
            4 => "failed",
            _ => "closed",
        }
    }

    /// True once DTLS is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// How long the peer has sent nothing at all. Browsers send consent checks and RTCP every
    /// few seconds, so a long silence means the peer is gone (RFC 7675 consent expiry).
    pub fn silent_for(&self) -> Duration {
        let last = self.last_rx_ms.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(last))
    }

    /// Counts as "heard from the peer" now (negotiation start).
    pub fn touch(&self) {
        self.last_rx_ms.store(now_ms(), Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A webrtcbin with the server's ICE settings (max-bundle: browsers refuse anything else).
pub fn new_webrtcbin(ice: &IceConfig) -> Result<gst::Element, NegotiationError> {
    // An uninitialised GnuTLS backend can crash libnice's STUN code later. Set up before the
    // first ICE agent rather than at start: the backend (glib-networking's GnuTLS module,
    // GnuTLS, p11-kit, nettle and GMP) is 2.5 MiB of an idle server's memory.
    static TLS_BACKEND: std::sync::Once = std::sync::Once::new();
    TLS_BACKEND.call_once(|| {
        let _ = gio::TlsBackend::default();
    });
    let webrtcbin = gst::ElementFactory::make("webrtcbin")
        .property_from_str("bundle-policy", "max-bundle")
        .build()?;
    configure_ice(&webrtcbin, ice);
    super::funnel::install(&webrtcbin);
    // Sender reports map RTP to NTP from the media's running time (capture time). With send
    // time rtpsession adds the pipeline latency, which a stream pipeline fed by a live source
    // and joined by viewers never configures: every packet's time was unknown, the reports
    // extrapolated each medium from its last packet's arrival, and audio led video by 60–100 ms
    // behind the TS leg (tests/sources.rs lip_sync_*).
    if let Some(rtpbin) = webrtcbin
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("rtpbin"))
        .filter(|r| r.has_property("rtcp-sync-send-time"))
    {
        rtpbin.set_property("rtcp-sync-send-time", false);
        // Until its first sender report a receiver aligns the media by arrival, which puts
        // audio ahead (tsdemux hands out a video frame when the next one starts): the first
        // report within about half a second, not the default 2.5 s.
        if let Some(rtpbin) = rtpbin.downcast_ref::<gst::Bin>() {
            rtpbin.connect_element_added(|_, element| {
                if element.has_property("rtcp-min-interval") {
                    element.set_property("rtcp-min-interval", 1_000_000_000u64);
                }
            });
        }
    }
    Ok(webrtcbin)
}

/// A new sink pad of `webrtcbin` (which makes its transceiver).
pub fn request_sink(webrtcbin: &gst::Element) -> Result<gst::Pad, NegotiationError> {
    webrtcbin
        .request_pad_simple("sink_%u")
        .ok_or_else(|| NegotiationError::Failed("webrtcbin gave no sink pad".into()))
}

/// Sets the direction and the codec preferences of the transceiver behind a sink pad.
pub fn set_transceiver(
    sink: &gst::Pad,
    direction: WebRTCRTPTransceiverDirection,
    caps: &gst::Caps,
) -> Result<(), NegotiationError> {
    let transceiver = sink
        .property::<Option<WebRTCRTPTransceiver>>("transceiver")
        .ok_or_else(|| NegotiationError::Failed("webrtcbin pad without transceiver".into()))?;
    transceiver.set_property("direction", direction);
    transceiver.set_property("codec-preferences", caps);
    Ok(())
}

fn configure_ice(webrtcbin: &gst::Element, ice: &IceConfig) {
    if let Some(stun) = &ice.stun_server {
        webrtcbin.set_property("stun-server", stun);
    }
    for turn in &ice.turn_servers {
        let _ = webrtcbin.emit_by_name::<bool>("add-turn-server", &[turn]);
    }
    let agent = webrtcbin.property::<gst::Object>("ice-agent");
    if ice.min_port > 0 && ice.max_port >= ice.min_port {
        agent.set_property("min-rtp-port", ice.min_port as u32);
        agent.set_property("max-rtp-port", ice.max_port as u32);
    }
    // TCP candidates are useless to browsers here and double the gathering work.
    if agent.has_property("ice-tcp") {
        agent.set_property("ice-tcp", false);
    }
    if agent.has_property("agent") {
        let nice = agent.property::<glib::Object>("agent");
        // Debian's libnice waits ~200 ms for UPnP on every gathering.
        if nice.has_property("upnp") {
            nice.set_property("upnp", false);
        }
    }
    for ip in &ice.interfaces {
        let _ = agent.emit_by_name::<bool>("add-local-ip-address", &[&ip.to_string()]);
    }
}

/// A channel that receives once ICE gathering completes. Connect it before the local
/// description is set, or the notification can be missed.
fn watch_gathering(webrtcbin: &gst::Element) -> mpsc::Receiver<()> {
    let (gathered_tx, gathered_rx) = mpsc::channel();
    webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
        let state = bin.property::<WebRTCICEGatheringState>("ice-gathering-state");
        if state == WebRTCICEGatheringState::Complete {
            let _ = gathered_tx.send(());
        }
    });
    gathered_rx
}

/// Emits `set-remote-description` / `set-local-description` and waits (bounded) for the result.
fn call(
    webrtcbin: &gst::Element,
    signal: &'static str,
    desc: &WebRTCSessionDescription,
) -> Result<(), NegotiationError> {
    promise::call(webrtcbin, signal, desc)?;
    Ok(())
}

/// Asks webrtcbin for its answer to the remote offer (bounded).
fn create_answer(webrtcbin: &gst::Element) -> Result<WebRTCSessionDescription, NegotiationError> {
    promise::call(webrtcbin, "create-answer", &None::<gst::Structure>)?
        .and_then(|reply| reply.get::<WebRTCSessionDescription>("answer").ok())
        .ok_or_else(|| NegotiationError::Failed("webrtcbin gave no answer".into()))
}

/// Waits for gathering (all candidates go into the answer: the server does not trickle) and
/// returns the local description as sent, with the public address advertised when configured,
/// and its ICE ufrag.
fn gathered_answer(
    webrtcbin: &gst::Element,
    gathered: &mpsc::Receiver<()>,
    ice: &IceConfig,
) -> Result<(String, String), NegotiationError> {
    let already = webrtcbin.property::<WebRTCICEGatheringState>("ice-gathering-state")
        == WebRTCICEGatheringState::Complete;
    if !already && gathered.recv_timeout(ice.gather_timeout).is_err() {
        return Err(NegotiationError::GatherTimeout);
    }
    let local = webrtcbin
        .property::<Option<WebRTCSessionDescription>>("local-description")
        .ok_or_else(|| NegotiationError::Failed("no local description".into()))?;
    let mut sdp: SDPMessage = local.sdp().to_owned();
    if let Some(public) = ice.public_ip {
        advertise_public_ip(&mut sdp, public);
    }
    let (ufrag, _) = credentials(&sdp)
        .ok_or_else(|| NegotiationError::Failed("the answer has no ICE credentials".into()))?;
    Ok((sdp.as_text()?, ufrag))
}

/// Keeps `flags` up to date with the connection state and runs the watchers.
fn watch_connection(webrtcbin: &gst::Element, flags: Arc<PeerFlags>, watchers: Watchers) {
    let Watchers {
        on_dead,
        on_connected,
    } = watchers;
    let on_connected = std::sync::Mutex::new(on_connected);
    webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
        let state = bin.property::<WebRTCPeerConnectionState>("connection-state");
        let code = match state {
            WebRTCPeerConnectionState::New => 0,
            WebRTCPeerConnectionState::Connecting => 1,
            WebRTCPeerConnectionState::Connected => 2,
            WebRTCPeerConnectionState::Disconnected => 3,
            WebRTCPeerConnectionState::Failed => 4,
            _ => 5,
        };
        flags.state.store(code, Ordering::Relaxed);
        match state {
            WebRTCPeerConnectionState::Connected => {
                flags.connected.store(true, Ordering::Relaxed);
                let hook = on_connected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(hook) = hook {
                    hook();
                }
            }
            WebRTCPeerConnectionState::Failed | WebRTCPeerConnectionState::Closed
                if !flags.dead.swap(true, Ordering::Relaxed) =>
            {
                on_dead();
            }
            _ => {}
        }
    });
}

/// Notes every packet webrtcbin's ICE sources receive, for the consent check.
fn watch_receive(webrtcbin: &gst::Element, flags: Arc<PeerFlags>) {
    let Some(bin) = webrtcbin.downcast_ref::<gst::Bin>() else {
        return;
    };
    for element in bin.iterate_recurse().into_iter().flatten() {
        if element.factory().is_some_and(|f| f.name() == "nicesrc") {
            if let Some(pad) = element.static_pad("src") {
                let flags = flags.clone();
                pad.add_probe(
                    gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                    move |_, _| {
                        flags.touch();
                        gst::PadProbeReturn::Ok
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_webrtc::WebRTCSDPType;

    /// webrtcbin answers a bad call with a GError in the promise reply; what reaches a client is
    /// its message, never the pointer that the reply's Debug form shows.
    #[test]
    fn webrtcbin_errors_carry_their_message_not_a_pointer() {
        gst::init().unwrap();
        let webrtcbin = new_webrtcbin(&IceConfig::default()).unwrap();
        webrtcbin.set_state(gst::State::Ready).unwrap();
        let sdp =
            SDPMessage::parse_buffer(b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n").unwrap();
        // An answer with no offer before it: webrtcbin refuses it.
        let answer = WebRTCSessionDescription::new(WebRTCSDPType::Answer, sdp);
        let error = call(&webrtcbin, "set-remote-description", &answer)
            .expect_err("an answer without an offer is refused")
            .to_string();
        webrtcbin.set_state(gst::State::Null).unwrap();
        assert!(
            !error.contains("GError") && !error.contains("0x"),
            "{error}"
        );
        assert!(error.len() > "negotiation failed: ".len(), "{error}");
    }
}
