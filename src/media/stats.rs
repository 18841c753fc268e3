//! A viewer's transport figures, read from webrtcbin's `get-stats` (a structure whose fields are
//! the RTCStats dictionaries of the W3C stats spec, one structure each).
//!
//! webrtcbin 1.22 quirks handled here: the ids of local and remote candidates are swapped (the
//! structure named `ice-candidate-local_*` has type `remote-candidate`), so the remote address is
//! found by type, not by id; and `kind`/`codec-id` of outbound streams can be wrong, so bytes and
//! packets are summed over all outbound streams instead of split by track.

use gstreamer as gst;
use gstreamer_webrtc::WebRTCStatsType;
use serde::Serialize;
use utoipa::ToSchema;

use super::ice::IceError;
use super::promise;

/// What the sessions API and the metrics show for one viewer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ViewerStats {
    /// `ip:port` of the remote candidate of the selected pair, when ICE has selected one.
    pub remote_address: Option<String>,
    /// RTP bytes sent to the viewer, all tracks.
    pub bytes_sent: u64,
    /// RTP packets sent to the viewer, all tracks.
    pub packets_sent: u64,
    /// Packets the viewer reported lost (RTCP receiver reports), all tracks.
    pub packets_lost: u64,
    /// Highest fraction lost in the last receiver reports, 0..1.
    pub fraction_lost: Option<f64>,
    /// Round-trip time from the receiver reports, in milliseconds (largest over tracks).
    pub rtt_ms: Option<f64>,
}

/// Reads the stats of one viewer (blocking, bounded by [`promise::timeout`]).
pub fn collect(webrtcbin: &gst::Element) -> Result<ViewerStats, IceError> {
    let reply = promise::call(webrtcbin, "get-stats", &None::<gst::Pad>)?
        .ok_or(IceError::Timeout("get-stats"))?;
    Ok(from_reply(&reply))
}

fn from_reply(reply: &gst::StructureRef) -> ViewerStats {
    let entries: Vec<gst::Structure> = reply
        .iter()
        .filter_map(|(_, value)| value.get::<gst::Structure>().ok())
        .collect();
    let kind = |s: &gst::Structure| s.get::<WebRTCStatsType>("type").ok();
    let mut stats = ViewerStats::default();
    let mut pair_ids: Vec<String> = Vec::new();
    let mut selected: Option<String> = None;
    for s in &entries {
        match kind(s) {
            Some(WebRTCStatsType::OutboundRtp) => {
                stats.bytes_sent += s.get::<u64>("bytes-sent").unwrap_or(0);
                stats.packets_sent += s.get::<u64>("packets-sent").unwrap_or(0);
            }
            Some(WebRTCStatsType::RemoteInboundRtp) => {
                // Negative means "not known yet" (no receiver report so far).
                stats.packets_lost += s.get::<i64>("packets-lost").unwrap_or(0).max(0) as u64;
                if let Ok(f) = s.get::<f64>("fraction-lost") {
                    stats.fraction_lost = Some(stats.fraction_lost.unwrap_or(0.0).max(f));
                }
                if let Ok(rtt) = s.get::<f64>("round-trip-time") {
                    let ms = rtt * 1000.0;
                    stats.rtt_ms = Some(stats.rtt_ms.unwrap_or(0.0).max(ms));
                }
            }
            Some(WebRTCStatsType::Transport) => {
                if let Ok(id) = s.get::<String>("selected-candidate-pair-id") {
                    selected = Some(id);
                }
            }
            Some(WebRTCStatsType::CandidatePair) => {
                if let Ok(id) = s.get::<String>("id") {
                    pair_ids.push(id);
                }
            }
            _ => {}
        }
    }
    let pair_id = selected.or_else(|| pair_ids.into_iter().next());
    let pair = pair_id.and_then(|id| {
        entries
            .iter()
            .find(|s| s.get::<String>("id").is_ok_and(|s| s == id))
    });
    if let Some(pair) = pair {
        let ends: Vec<String> = ["local-candidate-id", "remote-candidate-id"]
            .iter()
            .filter_map(|f| pair.get::<String>(*f).ok())
            .collect();
        stats.remote_address = entries
            .iter()
            .filter(|s| kind(s) == Some(WebRTCStatsType::RemoteCandidate))
            .find(|s| s.get::<String>("id").is_ok_and(|id| ends.contains(&id)))
            .and_then(|s| {
                let address = s.get::<String>("address").ok()?;
                let port = s.get::<u32>("port").ok()?;
                Some(if address.contains(':') {
                    format!("[{address}]:{port}")
                } else {
                    format!("{address}:{port}")
                })
            });
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_webrtcbin_122_shapes() {
        gst::init().unwrap();
        // Shapes as webrtcbin 1.22 reports them, including its swapped candidate ids.
        let entry = |name: &str, kind: WebRTCStatsType, fields: &[(&str, glib::SendValue)]| {
            let mut s = gst::Structure::builder(name)
                .field("type", kind)
                .field("id", name)
                .build();
            for (k, v) in fields {
                s.set_value(*k, v.clone());
            }
            s
        };
        use gstreamer::glib::{self, value::ToSendValue};
        let reply = gst::Structure::builder("application/x-webrtc-stats")
            .field(
                "out1",
                entry(
                    "out1",
                    WebRTCStatsType::OutboundRtp,
                    &[
                        ("bytes-sent", 1000u64.to_send_value()),
                        ("packets-sent", 10u64.to_send_value()),
                    ],
                ),
            )
            .field(
                "out2",
                entry(
                    "out2",
                    WebRTCStatsType::OutboundRtp,
                    &[
                        ("bytes-sent", 500u64.to_send_value()),
                        ("packets-sent", 5u64.to_send_value()),
                    ],
                ),
            )
            .field(
                "rin",
                entry(
                    "rin",
                    WebRTCStatsType::RemoteInboundRtp,
                    &[
                        ("packets-lost", (-1i64).to_send_value()),
                        ("fraction-lost", 0.25f64.to_send_value()),
                        ("round-trip-time", 0.002f64.to_send_value()),
                    ],
                ),
            )
            .field(
                "ice-candidate-local_1",
                entry(
                    "ice-candidate-local_1",
                    WebRTCStatsType::RemoteCandidate,
                    &[
                        ("address", "192.0.2.7".to_send_value()),
                        ("port", 5000u32.to_send_value()),
                    ],
                ),
            )
            .field(
                "ice-candidate-remote_1",
                entry(
                    "ice-candidate-remote_1",
                    WebRTCStatsType::LocalCandidate,
                    &[
                        ("address", "192.0.2.2".to_send_value()),
                        ("port", 6000u32.to_send_value()),
                    ],
                ),
            )
            .field(
                "pair",
                entry(
                    "pair",
                    WebRTCStatsType::CandidatePair,
                    &[
                        (
                            "local-candidate-id",
                            "ice-candidate-local_1".to_send_value(),
                        ),
                        (
                            "remote-candidate-id",
                            "ice-candidate-remote_1".to_send_value(),
                        ),
                    ],
                ),
            )
            .build();
        let stats = from_reply(&reply);
        assert_eq!(stats.bytes_sent, 1500);
        assert_eq!(stats.packets_sent, 15);
        assert_eq!(stats.packets_lost, 0);
        assert_eq!(stats.fraction_lost, Some(0.25));
        assert_eq!(stats.rtt_ms, Some(2.0));
        assert_eq!(stats.remote_address.as_deref(), Some("192.0.2.7:5000"));
    }
}
