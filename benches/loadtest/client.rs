//! A lean WHEP viewer for load: webrtcbin → rtph264depay → fakesink. It counts access units
//! instead of decoding them, so one machine can hold a hundred viewers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp::SDPMessage;
use gstreamer_webrtc::{
    WebRTCICEGatheringState, WebRTCRTPTransceiverDirection, WebRTCSDPType, WebRTCSessionDescription,
};

/// One viewer.
pub struct Viewer {
    pipeline: gst::Pipeline,
    /// Video access units received.
    pub frames: Arc<AtomicU64>,
    /// When the first one arrived.
    pub first_frame: Arc<Mutex<Option<Instant>>>,
    /// WHEP resource URL, once posted.
    pub resource: Option<String>,
}

impl Viewer {
    /// Builds the receiver and returns it with a complete offer (all candidates gathered).
    pub fn new() -> (Viewer, String) {
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .expect("webrtcbin");
        let agent = webrtc.property::<gst::Object>("ice-agent");
        if agent.has_property("agent") {
            let nice = agent.property::<gst::glib::Object>("agent");
            if nice.has_property("upnp") {
                nice.set_property("upnp", false);
            }
        }
        pipeline.add(&webrtc).unwrap();
        for caps in [
            "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,packetization-mode=(string)1,profile-level-id=(string)42e01f",
            "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2",
        ] {
            let caps = gst::Caps::from_str(caps).unwrap();
            webrtc.emit_by_name::<gstreamer_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&WebRTCRTPTransceiverDirection::Recvonly, &caps],
            );
        }
        let frames = Arc::new(AtomicU64::new(0));
        let first_frame = Arc::new(Mutex::new(None));
        let pipeline_weak = pipeline.downgrade();
        let (counter, first) = (frames.clone(), first_frame.clone());
        webrtc.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else {
                return;
            };
            let is_video = pad
                .current_caps()
                .and_then(|c| c.structure(0).and_then(|s| s.get::<String>("media").ok()))
                .is_some_and(|m| m == "video");
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
                .unwrap();
            if is_video {
                let depay = gst::ElementFactory::make("rtph264depay").build().unwrap();
                pipeline.add_many([&depay, &sink]).unwrap();
                depay.link(&sink).unwrap();
                let (counter, first) = (counter.clone(), first.clone());
                depay.static_pad("src").unwrap().add_probe(
                    gst::PadProbeType::BUFFER,
                    move |_, _| {
                        if counter.fetch_add(1, Ordering::Relaxed) == 0 {
                            *first.lock().unwrap() = Some(Instant::now());
                        }
                        gst::PadProbeReturn::Ok
                    },
                );
                pad.link(&depay.static_pad("sink").unwrap()).unwrap();
                depay.sync_state_with_parent().unwrap();
            } else {
                pipeline.add(&sink).unwrap();
                pad.link(&sink.static_pad("sink").unwrap()).unwrap();
            }
            sink.sync_state_with_parent().unwrap();
        });
        let (tx, rx) = mpsc::channel();
        webrtc.connect_notify(Some("ice-gathering-state"), move |w, _| {
            if w.property::<WebRTCICEGatheringState>("ice-gathering-state")
                == WebRTCICEGatheringState::Complete
            {
                let _ = tx.send(());
            }
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let promise = gst::Promise::new();
        webrtc.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        promise.wait();
        let offer = promise
            .get_reply()
            .and_then(|r| {
                r.value("offer")
                    .ok()
                    .and_then(|v| v.get::<WebRTCSessionDescription>().ok())
            })
            .expect("offer");
        let promise = gst::Promise::new();
        webrtc.emit_by_name::<()>("set-local-description", &[&offer, &promise]);
        promise.wait();
        let _ = rx.recv_timeout(Duration::from_secs(10));
        let local = webrtc.property::<WebRTCSessionDescription>("local-description");
        let sdp = local.sdp().as_text().unwrap();
        (
            Viewer {
                pipeline,
                frames,
                first_frame,
                resource: None,
            },
            sdp,
        )
    }

    /// Applies the server's answer.
    pub fn answer(&self, sdp: &str) -> Result<(), String> {
        let message = SDPMessage::parse_buffer(sdp.as_bytes()).map_err(|e| e.to_string())?;
        let webrtc = self
            .pipeline
            .children()
            .into_iter()
            .find(|e| e.factory().is_some_and(|f| f.name() == "webrtcbin"))
            .unwrap();
        let promise = gst::Promise::new();
        webrtc.emit_by_name::<()>(
            "set-remote-description",
            &[
                &WebRTCSessionDescription::new(WebRTCSDPType::Answer, message),
                &promise,
            ],
        );
        promise.wait();
        Ok(())
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

use std::str::FromStr;
