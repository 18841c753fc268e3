//! A track's chain as both leg formats build it: the passthrough or transcode description from
//! `pipelines/`, then the tee viewers hang off, with what the path needs at the tee (key-frame
//! requests to the encoder for a transcode, the current GOP for passthrough video).

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::media::gop::{self, GopCache};
use crate::media::keyframe;
use crate::media::sdp::SourceTrack;
use crate::media::transcode::{fit_video_sizes, Decision, KeyUnitLimiter, Vars};
use crate::media::{Shared, StreamOptions};

/// A chain added to a pipeline and playing.
pub(super) struct Chain {
    /// Where the track's RTP goes in.
    pub sink: gst::Pad,
    /// The tee viewers hang off; `None` for a medium that goes nowhere (a fakesink).
    pub tee: Option<gst::Element>,
    /// Passthrough video's current GOP, for joining viewers.
    pub gop: Option<Arc<GopCache>>,
}

/// Builds the decided chain for `source` in `pipeline`; unplayable media go into a fakesink
/// (still received, counted as flowing).
pub(super) fn build(
    pipeline: &gst::Pipeline,
    shared: &Shared,
    options: &StreamOptions,
    source: &SourceTrack,
    decision: &Decision,
) -> Result<Chain, String> {
    let Some(branch) = &decision.branch else {
        return Ok(Chain {
            sink: fakesink(pipeline)?,
            tee: None,
            gop: None,
        });
    };
    let pt = source
        .caps
        .structure(0)
        .and_then(|s| s.get::<i32>("payload").ok())
        .unwrap_or(96) as u8;
    let capabilities = shared.capabilities.as_ref();
    let vars = Vars::new(pt, rand::random::<u32>(), &options.transcode, capabilities);
    let description = shared
        .descriptions
        .render(branch, &vars)
        .map_err(|e| e.to_string())?;
    let bin = gst::parse::bin_from_description(&description, true).map_err(|e| e.to_string())?;
    // Resolution caps as exact even sizes keeping the aspect ratio (encoders refuse odd ones).
    fit_video_sizes(bin.upcast_ref());
    crate::media::aud::strip_in(bin.upcast_ref());
    pipeline
        .add(bin.upcast_ref::<gst::Element>())
        .map_err(|e| e.to_string())?;
    let (tee, gop) = tee(pipeline, shared, source, decision)?;
    bin.link(&tee).map_err(|e| e.to_string())?;
    bin.sync_state_with_parent().map_err(|e| e.to_string())?;
    Ok(Chain {
        sink: bin.static_pad("sink").ok_or("the chain has no sink")?,
        tee: Some(tee),
        gop,
    })
}

/// The tee viewers hang off, added to `pipeline` and playing, with what the decided path needs
/// at it; for a chain above, or for a front that already is the passthrough chain.
pub(super) fn tee(
    pipeline: &gst::Pipeline,
    shared: &Shared,
    source: &SourceTrack,
    decision: &Decision,
) -> Result<(gst::Element, Option<Arc<GopCache>>), String> {
    let tee = gst::ElementFactory::make("tee")
        .property("allow-not-linked", true)
        .build()
        .map_err(|e| e.to_string())?;
    pipeline.add(&tee).map_err(|e| e.to_string())?;
    let tee_sink = tee.static_pad("sink").ok_or("tee has no sink pad")?;
    let mut gop = None;
    if decision.path == "transcode" {
        // Joining viewers and browser PLIs ask the encoder for key frames; at most one per
        // interval reaches it.
        let limiter = Arc::new(KeyUnitLimiter::new(shared.config.key_unit_interval));
        limiter.install(&tee_sink);
    } else if let Some(key) = keyframe::detector(&source.encoding()) {
        // Passthrough video brings its last GOP to a joining viewer.
        gop = Some(GopCache::install(&tee_sink, key, gop::MAX_BYTES));
    }
    tee.sync_state_with_parent().map_err(|e| e.to_string())?;
    Ok((tee, gop))
}

/// A playing fakesink in `pipeline` for media that go nowhere; its sink pad.
pub(super) fn fakesink(pipeline: &gst::Pipeline) -> Result<gst::Pad, String> {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .map_err(|e| e.to_string())?;
    pipeline.add(&sink).map_err(|e| e.to_string())?;
    sink.sync_state_with_parent().map_err(|e| e.to_string())?;
    sink.static_pad("sink")
        .ok_or_else(|| "fakesink has no pad".to_string())
}
