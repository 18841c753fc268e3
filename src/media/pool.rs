//! Viewers' webrtcbins, made before their offers arrive.
//!
//! Most of the CPU of a WHEP negotiation goes into what webrtcbin builds for its first
//! transport during set-remote-description: the ICE stream, the DTLS/SRTP elements and the RTP
//! session. None of that depends on the offer. So webrtcbins are prepared ahead: with one video
//! and one audio sendonly transceiver and, through a `create-offer` that is never sent, their
//! transport. They wait in READY outside any pipeline with three threads each: webrtcbin's
//! signalling thread, the ICE agent's and the transport's `nicesrc` (webrtcbin starts it with the
//! transport, to receive STUN); nothing streams. A viewer whose answer carries exactly one video
//! and one audio track takes one and sets the offer's formats on its transceivers; webrtcbin
//! pairs each offered m-line with the unassociated transceiver of its kind. Other viewers get a
//! new webrtcbin.
//!
//! The pool stays empty until a viewer asks, refills on its own thread once no viewer has asked
//! for a moment (so it never competes with a burst), and empties after a quiet hour.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_webrtc::WebRTCRTPTransceiverDirection;

use super::peer::{new_webrtcbin, request_sink, set_transceiver, NegotiationError};
use super::sdp::Kind;
use super::IceConfig;

/// No refill while viewers asked this recently: a burst is answered first.
const QUIET: Duration = Duration::from_millis(100);
/// Prepared webrtcbins are let go after this long without a viewer asking.
const IDLE_DRAIN: Duration = Duration::from_secs(3600);
/// The refill thread looks at the clock at least this often.
const TICK: Duration = Duration::from_secs(1);

/// A webrtcbin in READY with a video and an audio sendonly transceiver and their transport.
pub(super) struct Prepared {
    /// `None` once taken apart by [`Prepared::into_parts`].
    webrtcbin: Option<gst::Element>,
    /// The sink pads of the two transceivers, by kind.
    sinks: [(Kind, gst::Pad); 2],
}

impl Prepared {
    /// Builds one (blocking, bounded by webrtcbin's promise timeout).
    pub(super) fn new(ice: &IceConfig) -> Result<Prepared, NegotiationError> {
        let webrtcbin = new_webrtcbin(ice)?;
        // From here on a failure drops `prepared`, whose Drop puts webrtcbin back to NULL (left
        // in READY it would keep its threads).
        let prepared = Prepared {
            sinks: [
                (Kind::Video, sendonly_sink(&webrtcbin, Kind::Video)?),
                (Kind::Audio, sendonly_sink(&webrtcbin, Kind::Audio)?),
            ],
            webrtcbin: Some(webrtcbin),
        };
        let webrtcbin = prepared.webrtcbin.as_ref().expect("set just above");
        webrtcbin
            .set_state(gst::State::Ready)
            .map_err(|e| NegotiationError::Failed(e.to_string()))?;
        // The offer itself is thrown away: asking for it is what makes webrtcbin 1.22 build the
        // transport of the bundle's session 0, which the answer to a browser's offer reuses.
        super::promise::call(webrtcbin, "create-offer", &None::<gst::Structure>)?
            .filter(|reply| reply.has_field("offer"))
            .ok_or_else(|| NegotiationError::Failed("webrtcbin made no offer".into()))?;
        Ok(prepared)
    }

    /// The webrtcbin and its sink pads by kind, for a viewer to use.
    pub(super) fn into_parts(mut self) -> (gst::Element, [(Kind, gst::Pad); 2]) {
        let webrtcbin = self.webrtcbin.take().expect("taken apart only once");
        (webrtcbin, self.sinks.clone())
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(webrtcbin) = self.webrtcbin.take() {
            let _ = webrtcbin.set_state(gst::State::Null);
        }
    }
}

/// A sink pad whose transceiver sends media of `kind`. The caps are placeholders for
/// `create-offer`; the viewer's negotiation replaces them with the offer's format.
fn sendonly_sink(webrtcbin: &gst::Element, kind: Kind) -> Result<gst::Pad, NegotiationError> {
    let sink = request_sink(webrtcbin)?;
    let (encoding, clock_rate, payload) = match kind {
        Kind::Video => ("VP8", 90_000i32, 96i32),
        Kind::Audio => ("OPUS", 48_000, 111),
    };
    let caps = gst::Caps::builder("application/x-rtp")
        .field("media", kind.as_str())
        .field("encoding-name", encoding)
        .field("clock-rate", clock_rate)
        .field("payload", payload)
        .build();
    set_transceiver(&sink, WebRTCRTPTransceiverDirection::Sendonly, &caps)?;
    Ok(sink)
}

/// The prepared webrtcbins and the thread that keeps them topped up.
pub(super) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    size: usize,
    ice: IceConfig,
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    ready: Vec<Prepared>,
    /// When a viewer last asked; `None` until the first one (the pool stays empty till then).
    asked: Option<Instant>,
    /// Whether the refill thread runs.
    running: bool,
}

impl Pool {
    /// A pool of up to `size` prepared webrtcbins (0: none, every viewer gets a new one).
    pub(super) fn new(size: usize, ice: IceConfig) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                size,
                ice,
                state: Mutex::new(State {
                    ready: Vec::new(),
                    asked: None,
                    running: false,
                }),
                wake: Condvar::new(),
            }),
        }
    }

    /// A prepared webrtcbin for a viewer with exactly one video and one audio track, if one is
    /// ready. Every call counts as a viewer asking: it starts the refill thread the first time
    /// and holds refills back for a moment.
    pub(super) fn take(&self, kinds: &[Kind]) -> Option<Prepared> {
        if self.inner.size == 0 {
            return None;
        }
        let mut state = self.inner.lock();
        state.asked = Some(Instant::now());
        if !state.running {
            state.running = true;
            let weak = Arc::downgrade(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("viewer-pool".into())
                .spawn(move || refill(weak));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the viewer pool thread");
                state.running = false;
            }
        }
        let wanted =
            kinds.len() == 2 && kinds.contains(&Kind::Video) && kinds.contains(&Kind::Audio);
        let taken = if wanted { state.ready.pop() } else { None };
        self.inner.wake.notify_all();
        taken
    }

    /// How many are ready now.
    #[cfg(test)]
    pub(super) fn ready(&self) -> usize {
        self.inner.lock().ready.len()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The refill thread holds only a weak reference and ends at its next look; what is
        // ready goes back to NULL here.
        let ready = std::mem::take(&mut self.inner.lock().ready);
        drop(ready);
        self.inner.wake.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The refill loop: one webrtcbin at a time while the pool is short and viewers have been quiet
/// for [`QUIET`]; all of them let go after [`IDLE_DRAIN`]. Ends when the pool is dropped.
fn refill(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let mut state = inner.lock();
        let since = state.asked.map_or(Duration::MAX, |t| t.elapsed());
        if since > IDLE_DRAIN {
            let drained = std::mem::take(&mut state.ready);
            state.asked = None;
            state.running = false;
            drop(state);
            tracing::debug!(
                count = drained.len(),
                "viewer pool drained after a quiet hour"
            );
            return;
        }
        if state.ready.len() >= inner.size || since < QUIET {
            let wait = if since < QUIET { QUIET - since } else { TICK };
            let (state, _) = inner
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner());
            drop(state);
            continue;
        }
        drop(state);
        let ice = inner.ice.clone();
        // Not holding the pool alive while building: a dropped pool ends the loop next round.
        drop(inner);
        match Prepared::new(&ice) {
            Ok(prepared) => {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let mut state = inner.lock();
                state.ready.push(prepared);
                tracing::debug!(ready = state.ready.len(), "viewer pool: one prepared");
            }
            Err(e) => {
                tracing::warn!(error = %e, "viewer pool: cannot prepare a webrtcbin");
                std::thread::sleep(TICK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::peer::{negotiate, Direction, PeerFlags, Tracks, Watchers};
    use crate::media::sdp::{parse_offer, parse_source, select_format, Offer};

    const SOURCE: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nt=0 0\r\n\
m=video 40000 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1; profile-level-id=42C01E\r\n\
m=audio 40001 RTP/AVP 97\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:97 opus/48000/2\r\n";

    fn ice() -> IceConfig {
        IceConfig {
            interfaces: vec!["127.0.0.1".parse().unwrap()],
            gather_timeout: Duration::from_secs(5),
            ..IceConfig::default()
        }
    }

    fn chrome_offer() -> Offer {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/chrome156-offer.sdp"
        );
        parse_offer(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// What a viewer's plan does with a prepared webrtcbin: the offer's formats on the
    /// transceivers that exist.
    struct OnPrepared<'a> {
        pipeline: &'a gst::Pipeline,
        sinks: [(Kind, gst::Pad); 2],
        formats: Vec<(Kind, u32, gst::Caps)>,
    }

    impl Tracks for OnPrepared<'_> {
        fn start(&mut self, webrtcbin: &gst::Element) -> Result<(), NegotiationError> {
            self.pipeline.add(webrtcbin)?;
            Ok(webrtcbin.sync_state_with_parent()?)
        }

        fn add(
            &mut self,
            _: &gst::Element,
            direction: WebRTCRTPTransceiverDirection,
        ) -> Result<Vec<(u32, u8)>, NegotiationError> {
            let mut keep = Vec::new();
            for (kind, mline, caps) in &self.formats {
                let (_, pad) = self.sinks.iter().find(|(k, _)| k == kind).unwrap();
                set_transceiver(pad, direction, caps)?;
                let pt = caps.structure(0).unwrap().get::<i32>("payload").unwrap();
                keep.push((*mline, pt as u8));
            }
            Ok(keep)
        }
    }

    fn transports(webrtcbin: &gst::Element) -> usize {
        let bin = webrtcbin.downcast_ref::<gst::Bin>().unwrap();
        bin.iterate_elements()
            .into_iter()
            .flatten()
            .filter(|e| e.type_().name() == "TransportSendBin")
            .count()
    }

    /// The point of the pool: a browser's offer is answered on the transport built before it
    /// came (no second one), each m-line by the transceiver of its kind, with the offer's format.
    #[test]
    fn a_prepared_webrtcbin_answers_a_browser_offer_on_its_transport() {
        gst::init().unwrap();
        let offer = chrome_offer();
        let formats: Vec<(Kind, u32, gst::Caps)> = parse_source(SOURCE)
            .unwrap()
            .iter()
            .map(|source| {
                let offered = offer.track(source.kind).unwrap();
                let caps = select_format(source, offered).unwrap();
                (source.kind, offered.mline, caps)
            })
            .collect();
        let (webrtcbin, sinks) = Prepared::new(&ice()).unwrap().into_parts();
        assert_eq!(
            transports(&webrtcbin),
            1,
            "create-offer built the transport"
        );
        let pipeline = gst::Pipeline::new();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut tracks = OnPrepared {
            pipeline: &pipeline,
            sinks,
            formats: formats.clone(),
        };
        let negotiated = negotiate(
            &webrtcbin,
            &Arc::new(PeerFlags::default()),
            Direction::Send,
            &offer,
            &ice(),
            &mut tracks,
            Watchers {
                on_dead: Box::new(|| {}),
                on_connected: None,
            },
        );
        let transports_after = transports(&webrtcbin);
        pipeline.set_state(gst::State::Null).unwrap();
        let answer = negotiated.unwrap().answer;
        assert_eq!(transports_after, 1, "the answer reused the transport");
        let answer = gstreamer_sdp::SDPMessage::parse_buffer(answer.as_bytes()).unwrap();
        for (kind, mline, caps) in formats {
            let media = answer.media(mline).unwrap();
            assert_eq!(media.media(), Some(kind.as_str()));
            assert!(
                media.attribute_val("sendonly").is_some(),
                "{kind:?} not sendonly"
            );
            let pt = caps.structure(0).unwrap().get::<i32>("payload").unwrap();
            assert_eq!(media.format(0), Some(pt.to_string().as_str()), "{kind:?}");
        }
    }

    /// Empty until asked; then filled in the background; only a video-and-audio viewer takes one.
    #[test]
    fn the_pool_fills_once_asked_and_serves_video_and_audio_viewers() {
        gst::init().unwrap();
        let pool = Pool::new(2, ice());
        assert!(
            pool.take(&[Kind::Video, Kind::Audio]).is_none(),
            "empty at first"
        );
        // No event tells that a webrtcbin is ready: poll, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.ready() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(pool.ready(), 2);
        assert!(
            pool.take(&[Kind::Video]).is_none(),
            "video only makes its own"
        );
        assert!(
            pool.take(&[Kind::Audio]).is_none(),
            "audio only makes its own"
        );
        let taken = pool.take(&[Kind::Audio, Kind::Video]).expect("one ready");
        let (webrtcbin, sinks) = taken.into_parts();
        assert_eq!(webrtcbin.current_state(), gst::State::Ready);
        assert_eq!(sinks.map(|(kind, _)| kind), [Kind::Video, Kind::Audio]);
        webrtcbin.set_state(gst::State::Null).unwrap();
        assert_eq!(pool.ready(), 1);
    }
}
