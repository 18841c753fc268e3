//! The `webrtc` collector, fed from the media layer's viewers.

use std::sync::Arc;
use std::time::Duration;

use super::Sessions;
use crate::media::Media;

/// How often the viewers' byte counters are read (each read asks every webrtcbin for stats).
const PERIOD: Duration = Duration::from_secs(2);

/// A WHEP viewer as the collector sees it.
pub struct Viewer {
    /// Its resource id.
    pub id: String,
    /// The process it watches.
    pub process: String,
    /// The client's address, when ICE has picked a pair.
    pub remote: String,
    /// Bytes sent to it.
    pub bytes_sent: u64,
}

/// The one place that asks the media layer for its viewers; blocks (webrtcbin stats).
pub fn viewers(media: &Media) -> Vec<Viewer> {
    media
        .sessions()
        .list()
        .into_iter()
        .filter(|session| session.is_viewer())
        .map(|session| {
            let stats = session.stats_blocking();
            Viewer {
                id: session.resource().to_string(),
                process: session.process().to_string(),
                remote: stats.remote_address.unwrap_or_default(),
                bytes_sent: stats.bytes_sent,
            }
        })
        .collect()
}

/// Keeps the `webrtc` collector in step with the viewers until the media engine is gone.
pub fn feed(sessions: &Arc<Sessions>, media: Option<&Arc<Media>>) {
    let Some(media) = media else {
        return;
    };
    if !sessions.enabled() {
        return;
    }
    let (sessions, media) = (Arc::downgrade(sessions), Arc::downgrade(media));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (Some(sessions), Some(media)) = (sessions.upgrade(), media.upgrade()) else {
                return;
            };
            let Ok(list) = tokio::task::spawn_blocking(move || viewers(&media)).await else {
                continue;
            };
            let collector = sessions.collector("webrtc");
            let gone: Vec<String> = collector
                .ids()
                .into_iter()
                .filter(|id| !list.iter().any(|v| &v.id == id))
                .collect();
            for id in gone {
                collector.unregister(&id);
            }
            for v in list {
                collector.register(&v.id, &v.process, &v.process, &v.remote, true);
                collector.counters(&v.id, 0, v.bytes_sent);
            }
        }
    });
}
