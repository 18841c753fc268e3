//! The `rtmp` and `srt` collectors, fed from the ingest servers' connections.

use std::sync::Arc;
use std::time::Duration;

use super::Sessions;
use crate::ingest::Ingest;

/// How often the connections' byte counters are read (a lock and two atomics each).
const PERIOD: Duration = Duration::from_secs(1);

/// Keeps the `rtmp` and `srt` collectors in step with the servers' connections until the
/// servers are gone. Core names a publisher `publish:<name>` and a reader `play:<name>`.
pub fn feed(sessions: &Arc<Sessions>, ingest: &Arc<Ingest>) {
    if !sessions.enabled() {
        return;
    }
    let (sessions, ingest) = (Arc::downgrade(sessions), Arc::downgrade(ingest));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (Some(sessions), Some(ingest)) = (sessions.upgrade(), ingest.upgrade()) else {
                return;
            };
            let open = ingest.sessions();
            for protocol in ["rtmp", "srt"] {
                let collector = sessions.collector(protocol);
                let ids: Vec<String> = open
                    .iter()
                    .filter(|s| s.protocol == protocol)
                    .map(|s| s.id.to_string())
                    .collect();
                for gone in collector.ids().into_iter().filter(|id| !ids.contains(id)) {
                    collector.unregister(&gone);
                }
                for session in open.iter().filter(|s| s.protocol == protocol) {
                    let id = session.id.to_string();
                    let verb = if session.role == "publish" {
                        "publish"
                    } else {
                        "play"
                    };
                    let local = format!("{verb}:{}", session.name);
                    let remote = session.remote.to_string();
                    collector.register(&id, &session.name, &local, &remote, true);
                    collector.counters(&id, session.bytes_rx, session.bytes_tx);
                }
            }
        }
    });
}
