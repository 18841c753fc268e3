//! Every WebRTC session of the server, WHEP viewers and WHIP publishers alike, by resource id,
//! and the one API the HTTP layer uses on them: [`Media::offer`](super::Media::offer) makes one
//! (offer → answer and entity-tag), and a [`Session`] trickles, restarts ICE, closes, and reports
//! its state and transport figures. Nothing of GStreamer leaves this module: the HTTP layer gets
//! strings, numbers and errors.
//!
//! A session is owned by what it belongs to (a viewer by its [`Stream`](super::Stream), a
//! publisher by its [`Ingest`](super::ingest::Ingest)), which builds, reaps and tears it down;
//! the registry only indexes it (weakly) and forwards `close` to that owner.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use gstreamer as gst;
use serde::Serialize;
use utoipa::ToSchema;

use super::ice::{self, IceError};
use super::peer::{self, Direction, NegotiationError, PeerFlags, Tracks, Watchers};
use super::sdp::{advertise_public_ip, Offer};
use super::stats::{self, ViewerStats};
use crate::webrtc::sdpfrag::{self, Fragment};

/// What owns sessions and can end one.
pub(super) trait Owner: Send + Sync {
    /// Ends the session with this resource id (blocking). Returns whether it existed.
    fn remove(&self, resource: &str) -> bool;
}

/// One session, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionInfo {
    /// Resource id (the last segment of its session URL).
    pub id: String,
    /// `whep` (a viewer) or `whip` (a publisher).
    pub kind: &'static str,
    /// Peer connection state (`new`, `connecting`, `connected`, ...).
    pub state: String,
    /// Codecs sent (WHEP) or received (WHIP).
    pub codecs: Vec<String>,
    /// Seconds since the POST.
    pub age_seconds: u64,
}

/// ICE credentials that PATCH needs: ours (the entity-tag) and the peer's (a restart changes
/// them). Kept here so that neither reading the tag nor telling a trickle from a restart has to
/// wait for webrtcbin's lock.
#[derive(Default)]
struct Credentials {
    local_ufrag: String,
    remote: Option<(String, String)>,
}

/// A viewer or publisher: its webrtcbin and what the API reads of it.
pub struct Session {
    resource: String,
    process: String,
    direction: Direction,
    webrtcbin: gst::Element,
    flags: Arc<PeerFlags>,
    codecs: Vec<String>,
    created: Instant,
    credentials: Mutex<Credentials>,
    /// One ICE restart of this session at a time (two offers in flight would leave webrtcbin in
    /// have-remote-offer); an async lock, so a waiting PATCH holds no thread.
    restart: tokio::sync::Mutex<()>,
    owner: Weak<dyn Owner>,
    public_ip: Option<IpAddr>,
}

/// Why a PATCH (or a close) did nothing.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session is gone, or has no negotiated description.
    #[error("no such session")]
    Gone,
    /// The entity-tag changed meanwhile (a racing restart won).
    #[error("the entity-tag does not match")]
    Precondition,
    /// An ICE restart without both new credentials.
    #[error("{0}")]
    Malformed(&'static str),
    /// webrtcbin did not answer in time.
    #[error("webrtcbin did not answer {0} in time")]
    Timeout(&'static str),
    /// webrtcbin refused, or a blocking task failed.
    #[error("{0}")]
    Failed(String),
}

impl From<IceError> for SessionError {
    fn from(e: IceError) -> Self {
        match e {
            IceError::NoSession => SessionError::Gone,
            IceError::Timeout(what) => SessionError::Timeout(what),
            e => SessionError::Failed(e.to_string()),
        }
    }
}

/// What a PATCH did.
pub enum Patched {
    /// Candidates were added.
    Trickled,
    /// ICE restarted: the server's new credentials and candidates as an sdpfrag, and the new
    /// entity-tag.
    Restarted {
        /// `application/trickle-ice-sdpfrag` body.
        fragment: String,
        /// The new strong entity-tag, quoted.
        etag: String,
    },
}

impl Session {
    /// A session about to negotiate on `webrtcbin`, which becomes its own.
    pub(super) fn new(
        resource: String,
        process: &str,
        direction: Direction,
        codecs: Vec<String>,
        webrtcbin: gst::Element,
        ice: &super::IceConfig,
        owner: Weak<dyn Owner>,
    ) -> Session {
        Session {
            resource,
            process: process.to_string(),
            direction,
            webrtcbin,
            flags: Arc::new(PeerFlags::default()),
            codecs,
            created: Instant::now(),
            credentials: Mutex::default(),
            restart: tokio::sync::Mutex::new(()),
            owner,
            public_ip: ice.public_ip,
        }
    }

    pub(super) fn webrtcbin(&self) -> &gst::Element {
        &self.webrtcbin
    }

    pub(super) fn flags(&self) -> &Arc<PeerFlags> {
        &self.flags
    }

    /// Runs [`peer::negotiate`] on this session's webrtcbin in its direction, keeps the ICE
    /// credentials agreed on, and returns the answer.
    pub(super) fn negotiate(
        &self,
        offer: &Offer,
        ice: &super::IceConfig,
        tracks: &mut dyn Tracks,
        watchers: Watchers,
    ) -> Result<String, NegotiationError> {
        let negotiated = peer::negotiate(
            &self.webrtcbin,
            &self.flags,
            self.direction,
            offer,
            ice,
            tracks,
            watchers,
        )?;
        let mut credentials = self.lock();
        credentials.local_ufrag = negotiated.ufrag;
        credentials.remote = negotiated.remote;
        Ok(negotiated.answer)
    }

    fn lock(&self) -> MutexGuard<'_, Credentials> {
        self.credentials.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The one rule for a peer that is gone: its connection failed, closed or dropped, it never
    /// connected within `connect_timeout`, or it sent nothing (no consent check, no RTCP) for
    /// `consent_timeout` (RFC 7675 consent expiry).
    pub(super) fn is_stale(&self, connect_timeout: Duration, consent_timeout: Duration) -> bool {
        let flags = &self.flags;
        flags.dead.load(std::sync::atomic::Ordering::Relaxed)
            || (!flags.connected() && self.created.elapsed() > connect_timeout)
            || (flags.connected() && flags.silent_for() > consent_timeout)
            || matches!(flags.state_name(), "disconnected" | "failed" | "closed")
    }

    /// Resource id.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The process the session belongs to (its id when the session began).
    pub fn process(&self) -> &str {
        &self.process
    }

    /// Whether this is a WHEP viewer (else a WHIP publisher).
    pub fn is_viewer(&self) -> bool {
        self.direction == Direction::Send
    }

    /// The state for the API.
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.resource.clone(),
            kind: if self.is_viewer() { "whep" } else { "whip" },
            state: self.flags.state_name().to_string(),
            codecs: self.codecs.clone(),
            age_seconds: self.created.elapsed().as_secs(),
        }
    }

    /// The strong entity-tag of the ICE session: our ufrag, quoted. It changes with every
    /// restart, as RFC 9725 §4.3.2 requires.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.lock().local_ufrag)
    }

    /// Transport figures from webrtcbin's get-stats (blocking, bounded); zero when unreadable.
    pub fn stats_blocking(&self) -> ViewerStats {
        stats::collect(&self.webrtcbin).unwrap_or_default()
    }

    /// [`Self::stats_blocking`] off the async runtime.
    pub async fn stats(self: &Arc<Self>) -> ViewerStats {
        let session = self.clone();
        tokio::task::spawn_blocking(move || session.stats_blocking())
            .await
            .unwrap_or_default()
    }

    /// Ends the session through its owner. Returns whether it existed.
    pub async fn close(&self) -> bool {
        let Some(owner) = self.owner.upgrade() else {
            return false;
        };
        let resource = self.resource.clone();
        tokio::task::spawn_blocking(move || owner.remove(&resource))
            .await
            .unwrap_or(false)
    }

    /// A PATCH body: candidates to add, or (new peer credentials) an ICE restart as the
    /// answerer. `matches` is the If-Match rule; a restart checks it again under the session's
    /// restart lock, so two restarts racing on one tag never both win.
    pub async fn patch(
        self: &Arc<Self>,
        fragment: Fragment,
        matches: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Patched, SessionError> {
        let remote = self.lock().remote.clone().ok_or(SessionError::Gone)?;
        if !fragment.is_restart(&remote.0, &remote.1) {
            let session = self.clone();
            return blocking(move || ice::add_candidates(&session.webrtcbin, &fragment))
                .await
                .map(|_| Patched::Trickled);
        }
        let (Some(ufrag), Some(pwd)) = (fragment.ufrag.clone(), fragment.pwd.clone()) else {
            return Err(SessionError::Malformed(
                "an ICE restart needs both a=ice-ufrag and a=ice-pwd",
            ));
        };
        let _turn = self.restart.lock().await;
        if !matches(&self.etag()) {
            return Err(SessionError::Precondition);
        }
        let session = self.clone();
        let peer = (ufrag.clone(), pwd.clone());
        let mut local = blocking(move || {
            let local = ice::restart(&session.webrtcbin, &ufrag, &pwd)?;
            // Candidates that came with the restart belong to the new generation.
            let _ = ice::add_candidates(&session.webrtcbin, &fragment);
            Ok(local)
        })
        .await?;
        if let Some(public) = self.public_ip {
            advertise_public_ip(&mut local, public);
        }
        {
            let mut credentials = self.lock();
            if let Some((ufrag, _)) = ice::credentials(&local) {
                credentials.local_ufrag = ufrag;
            }
            credentials.remote = Some(peer);
        }
        Ok(Patched::Restarted {
            fragment: sdpfrag::render(&local),
            etag: self.etag(),
        })
    }
}

/// Runs an ICE step off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IceError> + Send + 'static,
) -> Result<T, SessionError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(SessionError::from),
        Err(e) => Err(SessionError::Failed(format!("a blocking task failed: {e}"))),
    }
}

/// The registry: resource id → session. Weak, so an owner dropping its session is enough for the
/// session to go; owners also remove what they end, so a closed session is never found again.
#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<String, Weak<Session>>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Weak<Session>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn insert(&self, session: &Arc<Session>) {
        let mut table = self.lock();
        table.retain(|_, s| s.strong_count() > 0);
        table.insert(session.resource.clone(), Arc::downgrade(session));
    }

    pub(super) fn remove(&self, resource: &str) {
        self.lock().remove(resource);
    }

    /// The session with this resource id if `owner` owns it.
    pub(super) fn owned(
        &self,
        resource: &str,
        owner: &Arc<impl Owner + 'static>,
    ) -> Option<Arc<Session>> {
        self.get(resource)
            .filter(|s| std::ptr::addr_eq(s.owner.as_ptr(), Arc::as_ptr(owner)))
    }

    /// The session with this resource id.
    pub fn get(&self, resource: &str) -> Option<Arc<Session>> {
        self.lock().get(resource).and_then(Weak::upgrade)
    }

    /// Every session, in resource order.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut out: Vec<Arc<Session>> = self.lock().values().filter_map(Weak::upgrade).collect();
        out.sort_by(|a, b| a.resource.cmp(&b.resource));
        out
    }
}

/// Why an offer got no session.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// No media has arrived yet (WHEP).
    #[error("no media is flowing yet")]
    NotReady,
    /// The stream's viewer cap is reached.
    #[error("this stream has the most viewers it may have")]
    StreamFull,
    /// The server-wide viewer cap is reached.
    #[error("the server has the most viewers it may have")]
    ServerFull,
    /// Another publisher is live, or negotiating (WHIP: one at a time).
    #[error("another publisher is live on this process")]
    Busy,
    /// The process stopped while the publisher negotiated.
    #[error("the input was closed while the publisher negotiated")]
    Closed,
    /// Nothing in the offer can carry what is sent or taken.
    #[error("{0}")]
    Codec(String),
    /// webrtcbin failed or did not answer in time.
    #[error(transparent)]
    Negotiation(#[from] NegotiationError),
    /// A file the session needs could not be written.
    #[error("{0}")]
    Io(String),
    /// The negotiation panicked (the panic is in the log).
    #[error("the negotiation failed: {0}")]
    Panicked(String),
}

/// A session made from an offer.
#[derive(Debug)]
pub struct Answered {
    /// Resource id.
    pub resource: String,
    /// The SDP answer.
    pub answer: String,
    /// Its strong entity-tag, quoted.
    pub etag: String,
    /// WHIP: what FFmpeg reads changed (another codec), so FFmpeg must restart to read it.
    pub media_changed: bool,
}
