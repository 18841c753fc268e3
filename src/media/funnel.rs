//! webrtcbin bundles a peer's media through one `rtpfunnel`, which, every time the input that
//! pushes changes, sends that input's segment and custom sticky events again. With audio and
//! video interleaved that is about sixty switches a second per viewer, and each carries a segment
//! and webrtcbin's `GstWebRtcBinUpdateTos` event through every element down to the socket
//! (rtpbin, the retransmission sender, the SRTP encoder, nicesink); at nicesink webrtcbin answers
//! every `UpdateTos` by looking up the transceiver and setting the sockets' TOS again. Events that
//! already went through change nothing downstream, so they stop at the funnel. GStreamer's
//! gstrtpfunnel.c still forwards on every switch (1.22 to main).

use std::sync::Mutex;

use gstreamer as gst;
use gstreamer::prelude::*;

/// Custom sticky events remembered at most; more (never seen: one per transceiver and priority
/// change) start the memory over, which only lets some through again.
const REMEMBERED: usize = 16;

/// Makes `webrtcbin`'s funnel, once it adds one (at negotiation), skip repeated events.
pub fn install(webrtcbin: &gst::Element) {
    let Some(bin) = webrtcbin.downcast_ref::<gst::Bin>() else {
        return;
    };
    bin.connect_element_added(|_, element| {
        if element.factory().is_some_and(|f| f.name() == "rtpfunnel") {
            if let Some(src) = element.static_pad("src") {
                skip_repeated_events(&src);
            }
        }
    });
}

/// What already left the funnel since the last flush.
#[derive(Default)]
struct Sent {
    segment: Option<gst::Segment>,
    /// The custom sticky events themselves: kept alive, so a pointer is never reused for a new
    /// event (a transceiver's new priority comes as a new event and goes through).
    custom: Vec<gst::Event>,
}

/// Stops on `pad` a segment equal to the last one that left it, and a custom sticky event that
/// already left it. They end handled: GStreamer marks them received (a dropped sticky event
/// would be retried before every buffer). A flush forgets everything: downstream then needs
/// them again.
fn skip_repeated_events(pad: &gst::Pad) {
    let sent = Mutex::new(Sent::default());
    pad.add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::EVENT_FLUSH,
        move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
            match event.view() {
                gst::EventView::Segment(segment) => {
                    if sent.segment.as_ref() == Some(segment.segment()) {
                        return gst::PadProbeReturn::Handled;
                    }
                    sent.segment = Some(segment.segment().clone());
                }
                gst::EventView::CustomDownstreamSticky(_) => {
                    if sent.custom.iter().any(|e| e.as_ptr() == event.as_ptr()) {
                        return gst::PadProbeReturn::Handled;
                    }
                    if sent.custom.len() >= REMEMBERED {
                        sent.custom.clear();
                    }
                    sent.custom.push(event.clone());
                }
                gst::EventView::FlushStop(_) => *sent = Sent::default(),
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_rtp::prelude::*;
    use gstreamer_rtp::RTPBuffer;

    /// Our own source pad linked into a request pad of `funnel`, with its stream started.
    fn input(funnel: &gst::Element, ssrc: u32) -> gst::Pad {
        let src = gst::Pad::builder(gst::PadDirection::Src).build();
        src.set_active(true).unwrap();
        let sink = funnel.request_pad_simple("sink_%u").unwrap();
        src.link(&sink).unwrap();
        assert!(src.push_event(gst::event::StreamStart::new(&format!("s{ssrc}"))));
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("clock-rate", 90000i32)
            .field("ssrc", ssrc)
            .build();
        assert!(src.push_event(gst::event::Caps::new(&caps)));
        src
    }

    fn packet(ssrc: u32, seq: u16) -> gst::Buffer {
        let mut buffer = gst::Buffer::new_rtp_with_sizes(4, 0, 0).unwrap();
        {
            let mut rtp = RTPBuffer::from_buffer_writable(buffer.get_mut().unwrap()).unwrap();
            rtp.set_ssrc(ssrc);
            rtp.set_seq(seq);
        }
        buffer
    }

    fn tos(mid: &str) -> gst::Event {
        gst::event::CustomDownstreamSticky::new(
            gst::Structure::builder("GstWebRtcBinUpdateTos")
                .field("mid", mid)
                .build(),
        )
    }

    /// What reaches the funnel's peer: the names of the events, in order.
    /// The pad is returned to keep it alive: a link does not hold its peer.
    fn output(funnel: &gst::Element) -> (gst::Pad, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = gst::Pad::builder(gst::PadDirection::Sink)
            .chain_function(|_, _, _| Ok(gst::FlowSuccess::Ok))
            .event_function({
                let seen = seen.clone();
                move |_, _, event| {
                    let name = match event.view() {
                        gst::EventView::CustomDownstreamSticky(e) => {
                            e.structure().unwrap().get::<String>("mid").unwrap()
                        }
                        _ => format!("{:?}", event.type_()),
                    };
                    seen.lock().unwrap().push(name);
                    true
                }
            })
            .build();
        sink.set_active(true).unwrap();
        funnel.static_pad("src").unwrap().link(&sink).unwrap();
        (sink, seen)
    }

    /// A playing rtpfunnel (with the probe when `probe`) whose two inputs each sent a segment
    /// and a TOS event, then pushed 20 packets each, alternating.
    struct Switching {
        funnel: gst::Element,
        video: gst::Pad,
        audio: gst::Pad,
        _sink: gst::Pad,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Switching {
        fn new(probe: bool) -> Switching {
            gst::init().unwrap();
            let funnel = gst::ElementFactory::make("rtpfunnel").build().unwrap();
            if probe {
                super::skip_repeated_events(&funnel.static_pad("src").unwrap());
            }
            let (_sink, seen) = output(&funnel);
            funnel.set_state(gst::State::Playing).unwrap();
            let (video, audio) = (input(&funnel, 1), input(&funnel, 2));
            let segment = gst::FormattedSegment::<gst::ClockTime>::new();
            for (pad, mid) in [(&video, "0"), (&audio, "1")] {
                assert!(pad.push_event(gst::event::Segment::new(&segment)));
                assert!(pad.push_event(tos(mid)));
            }
            for seq in 0..20u16 {
                video.push(packet(1, seq)).unwrap();
                audio.push(packet(2, seq)).unwrap();
            }
            Switching {
                funnel,
                video,
                audio,
                _sink,
                seen,
            }
        }

        fn count(&self, name: &str) -> usize {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|n| *n == name)
                .count()
        }
    }

    impl Drop for Switching {
        fn drop(&mut self) {
            let _ = self.funnel.set_state(gst::State::Null);
        }
    }

    #[test]
    fn the_funnel_sends_repeated_events_once() {
        let f = Switching::new(true);
        assert_eq!(f.count("Segment"), 1, "{:?}", f.seen.lock().unwrap());
        assert_eq!((f.count("0"), f.count("1")), (1, 1));
        // Segments that differ go through at every switch; a transceiver's new event at once.
        let mut later = gst::FormattedSegment::<gst::ClockTime>::new();
        later.set_base(gst::ClockTime::from_seconds(5));
        assert!(f.audio.push_event(gst::event::Segment::new(&later)));
        assert!(f.audio.push_event(tos("1")));
        assert_eq!((f.count("0"), f.count("1")), (1, 2));
        f.video.push(packet(1, 99)).unwrap();
        f.audio.push(packet(2, 99)).unwrap();
        f.video.push(packet(1, 100)).unwrap();
        assert_eq!(f.count("Segment"), 3, "{:?}", f.seen.lock().unwrap());
    }

    #[test]
    fn a_flush_lets_the_same_segment_through_again() {
        gst::init().unwrap();
        let src = gst::Pad::builder(gst::PadDirection::Src).build();
        let identity = gst::ElementFactory::make("identity").build().unwrap();
        let (_sink, seen) = output(&identity);
        identity.set_state(gst::State::Playing).unwrap();
        src.link(&identity.static_pad("sink").unwrap()).unwrap();
        src.set_active(true).unwrap();
        super::skip_repeated_events(&src);
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        assert!(src.push_event(gst::event::StreamStart::new("s")));
        assert!(src.push_event(gst::event::Caps::new(&gst::Caps::new_empty_simple("x/y"))));
        assert!(src.push_event(gst::event::Segment::new(&segment)));
        assert!(src.push_event(gst::event::Segment::new(&segment)));
        src.push(gst::Buffer::new()).unwrap();
        let count = || {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|n| *n == "Segment")
                .count()
        };
        assert_eq!(count(), 1);
        assert!(src.push_event(gst::event::FlushStart::new()));
        assert!(src.push_event(gst::event::FlushStop::new(true)));
        assert!(src.push_event(gst::event::Segment::new(&segment)));
        src.push(gst::Buffer::new()).unwrap();
        assert_eq!(count(), 2, "{:?}", seen.lock().unwrap());
        identity.set_state(gst::State::Null).unwrap();
    }

    /// Without the probe, rtpfunnel repeats them on every switch: what the probe is for. When a
    /// GStreamer release stops doing that, this fails and the probe can go.
    #[test]
    fn rtpfunnel_repeats_events_on_every_switch() {
        let f = Switching::new(false);
        assert!(f.count("Segment") >= 39, "{:?}", f.seen.lock().unwrap());
        assert!(f.count("0") >= 19 && f.count("1") >= 19);
    }
}
