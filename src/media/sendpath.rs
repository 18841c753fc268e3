//! webrtcbin 1.22 puts two stages between each of its sink pads and the bundle funnel:
//! `clocksync sync=true` and an FEC bin (`rtpulpfecenc ! rtpredenc` behind two ghost pads).
//! A viewer's answer never carries ULPFEC or RED (the offer is cut down to one payload type per
//! m-line before webrtcbin sees it), so both encoders only pass packets on, and the clocksync
//! waits on the clock for packets whose time has always come (the stream is live, and the GOP
//! replay is in the past on purpose). That is five pad pushes and a clock wait per packet and
//! viewer for nothing. Once webrtcbin has linked a sending pad, its ghost pad is pointed past
//! both, at the funnel (or rtpbin) pad the FEC bin fed. webrtcbin keeps the unlinked elements
//! and sets their properties as before; nothing of it reads packets through them.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Points `pad`, a sending pad of webrtcbin, past the clocksync and the FEC bin when FEC and
/// RED are unused there. Returns whether it did; a pad webrtcbin has not linked yet, or whose
/// FEC or RED is in use, keeps its path.
pub fn shorten(pad: &gst::Pad) -> bool {
    shorten_pad(pad).is_some()
}

fn shorten_pad(pad: &gst::Pad) -> Option<()> {
    let ghost = pad.downcast_ref::<gst::GhostPad>()?;
    let clocksync = ghost
        .target()?
        .parent_element()
        .filter(|e| factory_is(e, "clocksync"))?;
    let fec = clocksync.static_pad("src")?.peer()?.parent_element()?;
    if !unused_fec(&fec) {
        return None;
    }
    let fec_src = fec.static_pad("src")?;
    let next = fec_src.peer()?;
    fec_src.unlink(&next).ok()?;
    if ghost.set_target(Some(&next)).is_err() {
        // Put it back as it was rather than leave the transceiver unlinked.
        let _ = fec_src.link(&next);
        return None;
    }
    Some(())
}

/// The FEC bin webrtcbin builds, with neither ULPFEC (pt 255) nor RED (pt 0) negotiated.
fn unused_fec(fec: &gst::Element) -> bool {
    let Some(bin) = fec.downcast_ref::<gst::Bin>() else {
        return false;
    };
    let children = bin.children();
    !children.is_empty()
        && children.iter().all(|e| {
            (factory_is(e, "rtpulpfecenc") && e.property::<u32>("pt") == 255)
                || (factory_is(e, "rtpredenc") && e.property::<i32>("pt") == 0)
        })
}

fn factory_is(element: &gst::Element, name: &str) -> bool {
    element.factory().is_some_and(|f| f.name() == name)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use gstreamer_webrtc::{WebRTCRTPTransceiver, WebRTCSDPType, WebRTCSessionDescription};

    use super::*;
    use crate::media::promise;

    fn description(reply: Option<gst::Structure>, field: &str) -> WebRTCSessionDescription {
        reply
            .and_then(|r| r.get::<WebRTCSessionDescription>(field).ok())
            .unwrap_or_else(|| panic!("webrtcbin gave no {field}"))
    }

    /// Packets that reached the receiving peer, counted while `for_how_long` passes.
    fn received_during(count: &AtomicU64, for_how_long: Duration) -> u64 {
        let before = count.load(Ordering::Relaxed);
        std::thread::sleep(for_how_long);
        count.load(Ordering::Relaxed) - before
    }

    /// webrtcbin 1.22 puts a clocksync and an FEC bin in front of a sending transceiver even
    /// when no FEC or RED is negotiated (this fails the day a release stops doing it, and the
    /// module can go); shortening its path leaves the peer receiving the same stream.
    #[test]
    fn the_unused_fec_bin_and_clocksync_are_passed_by_and_media_still_flows() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
             ! rtph264pay config-interval=-1 \
             ! application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000 \
             ! webrtcbin name=send bundle-policy=max-bundle \
             webrtcbin name=recv bundle-policy=max-bundle",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let send = pipeline.by_name("send").unwrap();
        let recv = pipeline.by_name("recv").unwrap();
        for (from, to) in [(&send, &recv), (&recv, &send)] {
            let to = to.downgrade();
            from.connect("on-ice-candidate", false, move |values| {
                let mline = values[1].get::<u32>().unwrap();
                let candidate = values[2].get::<String>().unwrap();
                if let Some(to) = to.upgrade() {
                    to.emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
                }
                None
            });
        }
        let packets = Arc::new(AtomicU64::new(0));
        let counted = packets.clone();
        recv.connect_pad_added(move |_, pad| {
            let counted = counted.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                counted.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Drop
            });
        });
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", "H264")
            .field("payload", 96i32)
            .field("clock-rate", 90000i32)
            .build();
        recv.emit_by_name::<WebRTCRTPTransceiver>(
            "add-transceiver",
            &[
                &gstreamer_webrtc::WebRTCRTPTransceiverDirection::Recvonly,
                &caps,
            ],
        );
        pipeline.set_state(gst::State::Playing).unwrap();

        // The receiver offers, the sender answers: a WHEP viewer and the server.
        let offer = description(
            promise::call(&recv, "create-offer", &None::<gst::Structure>).unwrap(),
            "offer",
        );
        promise::call(&recv, "set-local-description", &offer).unwrap();
        promise::call(&send, "set-remote-description", &offer).unwrap();
        let answer = description(
            promise::call(&send, "create-answer", &None::<gst::Structure>).unwrap(),
            "answer",
        );
        assert_eq!(answer.type_(), WebRTCSDPType::Answer);
        promise::call(&send, "set-local-description", &answer).unwrap();
        promise::call(&recv, "set-remote-description", &answer).unwrap();

        let deadline = Instant::now() + Duration::from_secs(20);
        while packets.load(Ordering::Relaxed) < 30 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(packets.load(Ordering::Relaxed) >= 30, "no media before");

        let sink = send.static_pad("sink_0").expect("the sending pad");
        let ghost = sink.downcast_ref::<gst::GhostPad>().unwrap();
        let before = ghost.target().and_then(|t| t.parent_element()).unwrap();
        assert_eq!(before.factory().unwrap().name(), "clocksync");
        assert!(shorten(&sink), "the path was not shortened");
        let after = ghost.target().and_then(|t| t.parent_element()).unwrap();
        assert_eq!(after.factory().unwrap().name(), "rtpfunnel");
        // A second call finds nothing to do.
        assert!(!shorten(&sink));

        let flowing = received_during(&packets, Duration::from_secs(1));
        pipeline.set_state(gst::State::Null).unwrap();
        // 30 frames a second of a small picture: at least one packet each.
        assert!(
            flowing >= 20,
            "{flowing} packets in a second after shortening"
        );
    }
}
