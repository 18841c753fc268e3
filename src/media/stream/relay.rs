//! The element between a TS leg's udpsrc and its tsdemux, which keeps a failed demux from
//! stopping the stream.
//!
//! tsdemux 1.22 fails for good on some damaged input: a loss of exactly 16 packets of one PID
//! (the 4-bit continuity counter cannot show it) leaves it parsing a cut Opus access unit
//! (`leg::tests::tsdemux_and_a_cut_opus_unit`). Its flow error goes back up to udpsrc, whose
//! task then stops: the stream and every viewer froze while FFmpeg went on sending. This element
//! hands buffers on unchanged and, when downstream fails, answers `Ok` upstream and tells its
//! owner, who gives the leg a fresh demux as for a restarted FFmpeg.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer::subclass::prelude::*;

/// The shortest time between two reports: a demux that fails on every datagram is rebuilt once
/// a second, not once a datagram.
const MIN_REPORT_INTERVAL: Duration = Duration::from_secs(1);

type OnError = Arc<dyn Fn() + Send + Sync>;

glib::wrapper! {
    /// See the module documentation.
    pub struct Relay(ObjectSubclass<imp::Relay>) @extends gst::Element, gst::Object;
}

impl Relay {
    /// A relay that calls `on_error` (on the streaming thread, outside downstream's chain
    /// function) when downstream returns a flow error.
    pub(super) fn new(on_error: impl Fn() + Send + Sync + 'static) -> Relay {
        let relay: Relay = glib::Object::new();
        let _ = relay.imp().on_error.set(Arc::new(on_error));
        relay
    }

    /// The pad the demux is linked to.
    pub(super) fn src_pad(&self) -> gst::Pad {
        self.imp().src.clone()
    }

    /// The pad udpsrc is linked to.
    #[cfg(test)]
    pub(super) fn sink_pad(&self) -> gst::Pad {
        self.imp().sink.clone()
    }
}

mod imp {
    use super::*;

    pub struct Relay {
        pub(super) sink: gst::Pad,
        pub(super) src: gst::Pad,
        pub(super) on_error: OnceLock<OnError>,
        last_report: Mutex<Option<Instant>>,
    }

    impl Relay {
        fn chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
            match self.src.push(buffer) {
                Err(gst::FlowError::Error) => {
                    let report = {
                        let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
                        let due = last.is_none_or(|at| at.elapsed() >= MIN_REPORT_INTERVAL);
                        if due {
                            *last = Some(Instant::now());
                        }
                        due
                    };
                    if let Some(on_error) = self.on_error.get().filter(|_| report) {
                        on_error();
                    }
                    Ok(gst::FlowSuccess::Ok)
                }
                other => other,
            }
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Relay {
        const NAME: &'static str = "StreamcoreLegRelay";
        type Type = super::Relay;
        type ParentType = gst::Element;

        fn with_class(klass: &Self::Class) -> Self {
            // Caps and allocation queries go through to the demux as if the pads were linked
            // directly; events and other queries take the default path to the other pad.
            let flags = gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION;
            let template = |name| klass.pad_template(name).expect("the relay's templates");
            let sink = gst::Pad::builder_from_template(&template("sink"))
                .chain_function(|_, parent, buffer| {
                    Relay::catch_panic_pad_function(
                        parent,
                        || Err(gst::FlowError::Error),
                        |relay| relay.chain(buffer),
                    )
                })
                .flags(flags)
                .build();
            let src = gst::Pad::builder_from_template(&template("src"))
                .flags(flags)
                .build();
            Relay {
                sink,
                src,
                on_error: OnceLock::new(),
                last_report: Mutex::new(None),
            }
        }
    }

    impl ObjectImpl for Relay {
        fn constructed(&self) {
            self.parent_constructed();
            let element = self.obj();
            element
                .add_pad(&self.sink)
                .expect("a new element takes its pads");
            element
                .add_pad(&self.src)
                .expect("a new element takes its pads");
        }
    }

    impl GstObjectImpl for Relay {}

    impl ElementImpl for Relay {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static METADATA: std::sync::LazyLock<gst::subclass::ElementMetadata> =
                std::sync::LazyLock::new(|| {
                    gst::subclass::ElementMetadata::new(
                        "TS leg relay",
                        "Generic",
                        "Passes buffers on; a downstream flow error is reported, not returned",
                        "streamcore",
                    )
                });
            Some(&METADATA)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: std::sync::LazyLock<Vec<gst::PadTemplate>> =
                std::sync::LazyLock::new(|| {
                    let always = |name, direction| {
                        let any = gst::Caps::new_any();
                        gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &any)
                            .expect("a static pad template")
                    };
                    vec![
                        always("sink", gst::PadDirection::Sink),
                        always("src", gst::PadDirection::Src),
                    ]
                });
            TEMPLATES.as_ref()
        }
    }
}
