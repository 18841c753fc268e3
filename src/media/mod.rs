//! The media path: GStreamer pipelines that take FFmpeg's RTP legs and serve them to WebRTC viewers.
//!
//! [`Media`] owns the GStreamer setup, the UDP port range and the viewer budget; every
//! WebRTC-enabled process gets one [`Stream`].

mod aud;
mod catchup;
mod funnel;
mod gop;
mod ice;
pub mod ingest;
mod keyframe;
mod peer;
mod pool;
mod ports;
pub mod promise;
pub mod sdp;
mod sendpath;
mod session;
mod slots;
mod stats;
mod stream;
pub mod transcode;
mod viewer;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gstreamer as gst;
use gstreamer::prelude::*;

pub use peer::NegotiationError;
pub use session::{Answered, OfferError, Patched, Session, SessionError, Sessions};
pub use stats::ViewerStats;
pub use stream::{Stream, StreamInfo, StreamOptions};

/// ICE settings for every viewer.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// Lowest UDP port for ICE; 0 leaves the choice to the OS.
    pub min_port: u16,
    /// Highest UDP port for ICE.
    pub max_port: u16,
    /// Address advertised instead of private host addresses (1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// Local addresses to gather host candidates on; empty means all.
    pub interfaces: Vec<IpAddr>,
    /// `stun://host:port` for server-reflexive candidates.
    pub stun_server: Option<String>,
    /// `turn://user:pass@host:port` URIs for relay candidates.
    pub turn_servers: Vec<String>,
    /// Longest wait for ICE gathering before a POST fails with 504.
    pub gather_timeout: Duration,
}

/// Media settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// rtpjitterbuffer latency of the RTP legs.
    pub jitter_latency_ms: u32,
    /// Packets a per-viewer leaky queue holds; 0 means no queue in the branch.
    pub viewer_queue_buffers: u32,
    /// Viewers' webrtcbins kept prepared before their offers arrive (see `pool.rs`).
    pub viewer_pool: usize,
    /// Viewers per stream.
    pub max_viewers_per_stream: usize,
    /// Viewers in all.
    pub max_viewers_total: usize,
    /// A viewer that has not connected after this long is removed.
    pub connect_timeout: Duration,
    /// A connected viewer that sent nothing (no consent check, no RTCP) for this long is removed.
    pub consent_timeout: Duration,
    /// Loopback port range for FFmpeg's RTP legs.
    pub rtp_port_min: u16,
    /// Upper end of that range.
    pub rtp_port_max: u16,
    /// ICE settings.
    pub ice: IceConfig,
    /// Forced encoder (`auto` or empty for the registry's best).
    pub encoder: String,
    /// Pipeline descriptions directory; `None` for the built-in ones.
    pub pipelines_dir: Option<PathBuf>,
    /// Default transcode settings.
    pub transcode: crate::model::transcode::TranscodeSettings,
    /// Least time between forced key frames per stream.
    pub key_unit_interval: Duration,
    /// How often a WHIP publisher is asked for a key frame; `None` only on FFmpeg starts.
    pub whip_key_interval: Option<Duration>,
    /// FFmpeg's read timeout on a WHIP input; `None` waits forever.
    pub whip_read_timeout: Option<Duration>,
}

pub(crate) struct Shared {
    config: MediaConfig,
    descriptions: transcode::Descriptions,
    /// `None` when this server cannot transcode (no encoder, no Opus encoder).
    capabilities: Option<transcode::TranscodeCapabilities>,
    /// The server-wide viewer cap; each attached viewer holds one slot.
    viewers: Arc<slots::Slots>,
    negotiations: tokio::sync::Semaphore,
    /// Viewers' webrtcbins prepared ahead.
    pool: pool::Pool,
    /// Every session, viewers and publishers, by resource id.
    sessions: session::Sessions,
}

/// What an offer is for: the viewers of a stream (WHEP) or the input of a process (WHIP).
pub enum Endpoint {
    /// Watch this stream.
    Viewers(Arc<Stream>),
    /// Publish to this input.
    Publisher(Arc<ingest::Ingest>),
}

impl Endpoint {
    /// This endpoint's session with this resource id.
    pub fn session(&self, resource: &str) -> Option<Arc<Session>> {
        match self {
            Endpoint::Viewers(stream) => stream.session(resource),
            Endpoint::Publisher(ingest) => ingest.session(resource),
        }
    }
}

/// Negotiations running at once, per CPU. Much of a negotiation is a hand-over between the
/// calling thread and webrtcbin's own: with one per CPU a burst of 50 POSTs left the CPUs idle in
/// between (p50 61–92 ms with prepared webrtcbins against 52–72 ms with four per CPU, 41–81 ms
/// with two; without prepared webrtcbins 85–140 against 76–126 ms; docs/performance.md).
const NEGOTIATIONS_PER_CPU: usize = 4;

/// The media engine.
pub struct Media {
    shared: Arc<Shared>,
    ports: ports::PortAllocator,
    sdp_dir: PathBuf,
}

/// GStreamer elements the media path cannot work without.
const REQUIRED: &[&str] = &[
    "udpsrc",
    "rtpjitterbuffer",
    "tee",
    "queue",
    "webrtcbin",
    "rtph264depay",
    "rtph264pay",
    "h264parse",
    "rtpopusdepay",
    "rtpopuspay",
    "dtlsdec",
    "nicesrc",
];

impl Media {
    /// Initialises GStreamer, checks the plugins, and prepares what the first viewer would
    /// otherwise wait for. SDP files go to `sdp_dir`.
    pub fn start(config: MediaConfig, sdp_dir: PathBuf) -> anyhow::Result<Media> {
        gst::init().context("cannot initialise GStreamer")?;
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|name| gst::ElementFactory::find(name).is_none())
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "GStreamer elements missing: {} (install the GStreamer plugins)",
                missing.join(", ")
            );
        }
        promise::init();
        // The first dtlsdec generates the process-wide DTLS certificate (an RSA key: slow).
        let dtls = gst::ElementFactory::make("dtlsdec")
            .build()
            .context("dtlsdec")?;
        let _pem: Option<String> = dtls.property("pem");
        std::fs::create_dir_all(&sdp_dir)
            .with_context(|| format!("cannot create {}", sdp_dir.display()))?;
        let request = transcode::isolated::Request {
            forced: Some(config.encoder.clone()),
            pipelines_dir: config.pipelines_dir.clone(),
            settings: config.transcode.clone(),
        };
        let report = request.select();
        let mut descriptions =
            transcode::Descriptions::load_unchecked(config.pipelines_dir.as_deref())
                .context("bad pipeline description")?;
        descriptions.set_unavailable(report.unavailable);
        for (file, why) in descriptions.unavailable() {
            tracing::warn!(%file, %why, "pipeline description unavailable");
        }
        let capabilities = match report.outcome {
            transcode::isolated::Outcome::Selected(caps) => {
                tracing::info!(
                    encoder = %caps.video_encoder,
                    family = %caps.family,
                    h264_decoder = %caps.h264_decoder,
                    h265_decoder = %caps.h265_decoder,
                    forced = caps.forced,
                    skipped = ?caps.skipped,
                    "transcode encoder selected"
                );
                Some(caps)
            }
            transcode::isolated::Outcome::Fatal(e) => {
                return Err(anyhow::anyhow!(e)).context("cannot set up transcoding")
            }
            transcode::isolated::Outcome::Unavailable(e) => {
                tracing::warn!(error = %e, "no usable H.264 encoder: streams are passed through only");
                None
            }
        };
        Ok(Media {
            ports: ports::PortAllocator::new(config.rtp_port_min, config.rtp_port_max),
            shared: Arc::new(Shared {
                viewers: slots::Slots::new(config.max_viewers_total),
                // More prepared than may ever watch would only hold threads.
                pool: pool::Pool::new(
                    config.viewer_pool.min(config.max_viewers_total),
                    config.ice.clone(),
                ),
                config,
                descriptions,
                capabilities,
                negotiations: tokio::sync::Semaphore::new(
                    NEGOTIATIONS_PER_CPU
                        * std::thread::available_parallelism().map_or(2, |n| n.get()),
                ),
                sessions: session::Sessions::default(),
            }),
            sdp_dir,
        })
    }

    /// What transcoding this server can do, for the skills endpoint.
    pub fn capabilities(&self) -> Option<&transcode::TranscodeCapabilities> {
        self.shared.capabilities.as_ref()
    }

    /// A stream for a process: allocates its port pair and SDP path. `None` when the range is full.
    pub fn create_stream(&self, process_id: &str, options: StreamOptions) -> Option<Stream> {
        let ports = self.ports.allocate()?;
        let path = self
            .sdp_dir
            .join(format!("{}-{}.sdp", file_name(process_id), ports.video()));
        let _ = std::fs::remove_file(&path);
        Some(Stream::new(
            process_id,
            ports,
            path,
            self.shared.clone(),
            options,
        ))
    }

    /// The WHIP input of a process: four loopback ports and FFmpeg's SDP file. `None` when the
    /// port range is full or the file cannot be written.
    pub fn create_ingest(&self, process_id: &str) -> Option<ingest::Ingest> {
        let ports = self.ports.allocate_quad()?;
        let path = self.sdp_dir.join(format!(
            "{}-whip-{}.sdp",
            file_name(process_id),
            ports.video()
        ));
        match ingest::Ingest::new(
            process_id,
            ports,
            self.ports.clone(),
            path,
            self.shared.clone(),
        ) {
            Ok(ingest) => Some(ingest),
            Err(e) => {
                tracing::warn!(process = %process_id, error = %e, "cannot write the WHIP SDP file");
                None
            }
        }
    }

    /// A new session from an offer: a viewer of the stream or the publisher of the input.
    /// Negotiations are CPU work: a burst of them run a few at a time
    /// ([`NEGOTIATIONS_PER_CPU`], first come first served), which answers most of the burst
    /// quickly; each runs off the async runtime
    /// and every webrtcbin step in it is bounded. `on_connected` runs once the peer connects.
    pub async fn offer(
        &self,
        endpoint: Endpoint,
        offer: sdp::Offer,
        on_connected: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<Answered, OfferError> {
        let _turn = self
            .shared
            .negotiations
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let negotiated = tokio::task::spawn_blocking(move || match endpoint {
            Endpoint::Viewers(stream) => stream.add_viewer(&offer, on_connected),
            Endpoint::Publisher(ingest) => ingest.publish(&offer, on_connected),
        })
        .await;
        negotiated.unwrap_or_else(|e| Err(OfferError::Panicked(panic_text(e))))
    }

    /// The session registry.
    pub fn sessions(&self) -> &Sessions {
        &self.shared.sessions
    }

    /// The settings in force.
    pub fn config(&self) -> &MediaConfig {
        &self.shared.config
    }
}

/// A process id as a file name: anything but `[A-Za-z0-9_-]` becomes `_`.
fn file_name(process_id: &str) -> String {
    process_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What a failed blocking task says: a panic's message (for the log, never for clients).
pub fn panic_text(error: tokio::task::JoinError) -> String {
    let why = match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    };
    why
}
