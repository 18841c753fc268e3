//! The resolution cap as an exact size. The descriptions say `videoscale ! ... !
//! video/x-raw,width=[16,1280],height=[16,720]`, which reads well, but videoscale then picks an
//! odd size for some sources (1080x1920 portrait becomes 405x720) and 4:2:0 encoders refuse odd
//! sizes: x264enc fails to initialise. So the server narrows the range to the exact size once the
//! source's size is known: the largest that fits the cap, keeps the displayed aspect ratio, is
//! even, and is never larger than the source.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Elements between a videoscale and its capsfilter that are looked through (videoconvert, ...).
const MAX_HOPS: usize = 4;

/// Installs the exact-size fitting on every `videoscale` in `bin` whose output reaches a
/// capsfilter with a width/height range (through at most a few one-in-one-out elements). Call it
/// once on a stream pipeline after parsing it; chains without videoscale (passthrough) are left
/// alone. Returns how many were installed.
pub fn fit_video_sizes(bin: &gst::Bin) -> usize {
    let mut installed = 0;
    for element in bin.iterate_recurse().into_iter().flatten() {
        if element.factory().is_none_or(|f| f.name() != "videoscale") {
            continue;
        }
        let Some(filter) = downstream_capsfilter(&element) else {
            continue;
        };
        let template = filter.property::<Option<gst::Caps>>("caps");
        let Some(limits) = template.as_ref().and_then(Limits::from_caps) else {
            continue;
        };
        let Some(sink) = element.static_pad("sink") else {
            continue;
        };
        let template = template.expect("limits came from it");
        let filter = filter.downgrade();
        sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let gst::EventView::Caps(caps) = event.view() else {
                return gst::PadProbeReturn::Ok;
            };
            // Set before videoscale sees the new input caps, so its negotiation finds the exact
            // size downstream.
            if let (Some(filter), Some(caps)) =
                (filter.upgrade(), exact(&template, &limits, caps.caps()))
            {
                filter.set_property("caps", &caps);
            }
            gst::PadProbeReturn::Ok
        });
        installed += 1;
    }
    installed
}

fn downstream_capsfilter(element: &gst::Element) -> Option<gst::Element> {
    let mut pad = element.static_pad("src")?.peer()?;
    for _ in 0..MAX_HOPS {
        let next = pad.parent_element()?;
        if next.factory().is_some_and(|f| f.name() == "capsfilter") {
            return Some(next);
        }
        if next.src_pads().len() != 1 || next.sink_pads().len() != 1 {
            return None;
        }
        pad = next.static_pad("src")?.peer()?;
    }
    None
}

/// The width and height ranges of the capsfilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    min_width: u32,
    max_width: u32,
    min_height: u32,
    max_height: u32,
}

impl Limits {
    fn from_caps(caps: &gst::Caps) -> Option<Limits> {
        let s = caps.structure(0)?;
        let range = |field: &str| -> Option<(u32, u32)> {
            let value = s.value(field).ok()?;
            if let Ok(range) = value.get::<gst::IntRange<i32>>() {
                Some((range.min().max(1) as u32, range.max().max(1) as u32))
            } else {
                value
                    .get::<i32>()
                    .ok()
                    .map(|v| (v.max(1) as u32, v.max(1) as u32))
            }
        };
        let (min_width, max_width) = range("width")?;
        let (min_height, max_height) = range("height")?;
        // A fixed size needs no fitting.
        (min_width != max_width || min_height != max_height).then_some(Limits {
            min_width,
            max_width,
            min_height,
            max_height,
        })
    }
}

/// The capsfilter's caps with the exact size for a source of `input` caps.
fn exact(template: &gst::Caps, limits: &Limits, input: &gst::CapsRef) -> Option<gst::Caps> {
    let s = input.structure(0)?;
    let width = s.get::<i32>("width").ok()?;
    let height = s.get::<i32>("height").ok()?;
    let par = s
        .get::<gst::Fraction>("pixel-aspect-ratio")
        .unwrap_or(gst::Fraction::new(1, 1));
    let (w, h) = fit(
        width.max(1) as u32,
        height.max(1) as u32,
        (par.numer().max(1) as u32, par.denom().max(1) as u32),
        limits,
    );
    let mut caps = template.clone();
    {
        let caps = caps.make_mut();
        for s in caps.iter_mut() {
            s.set("width", w as i32);
            s.set("height", h as i32);
        }
    }
    Some(caps)
}

/// The largest even size within `limits` with the source's displayed aspect ratio (square
/// pixels), never upscaling.
fn fit(width: u32, height: u32, par: (u32, u32), limits: &Limits) -> (u32, u32) {
    let display_width = f64::from(width) * f64::from(par.0) / f64::from(par.1);
    let height = f64::from(height);
    let scale = (f64::from(limits.max_width) / display_width)
        .min(f64::from(limits.max_height) / height)
        .min(1.0);
    let even = |v: f64, min: u32, max: u32| {
        let v = (v.floor() as u32) & !1;
        v.clamp((min + 1) & !1, max & !1)
    };
    (
        even(display_width * scale, limits.min_width, limits.max_width),
        even(height * scale, limits.min_height, limits.max_height),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Limits = Limits {
        min_width: 16,
        max_width: 1280,
        min_height: 16,
        max_height: 720,
    };

    #[test]
    fn sizes_fit_even_and_keep_the_aspect_ratio() {
        assert_eq!(fit(1920, 1080, (1, 1), &CAP), (1280, 720));
        assert_eq!(fit(1080, 1920, (1, 1), &CAP), (404, 720));
        assert_eq!(fit(640, 360, (1, 1), &CAP), (640, 360), "never upscaled");
        assert_eq!(fit(854, 481, (1, 1), &CAP), (854, 480), "odd made even");
        assert_eq!(
            fit(1440, 1080, (4, 3), &CAP),
            (1280, 720),
            "anamorphic to square pixels"
        );
        assert_eq!(fit(480, 576, (4, 3), &CAP), (640, 576));
        assert_eq!(fit(720, 576, (16, 15), &CAP), (768, 576));
        assert_eq!(fit(3840, 2160, (1, 1), &CAP), (1280, 720));
        assert_eq!(
            fit(4000, 10, (1, 1), &CAP),
            (1280, 16),
            "clamped to the minimum"
        );
    }

    #[test]
    fn limits_come_from_ranges_only() {
        gst::init().unwrap();
        let caps: gst::Caps = "video/x-raw,format=I420,width=[16,1280],height=[16,720]"
            .parse()
            .unwrap();
        assert_eq!(Limits::from_caps(&caps), Some(CAP));
        let fixed: gst::Caps = "video/x-raw,width=640,height=360".parse().unwrap();
        assert_eq!(Limits::from_caps(&fixed), None);
        let none: gst::Caps = "video/x-raw,format=I420".parse().unwrap();
        assert_eq!(Limits::from_caps(&none), None);

        let input: gst::Caps = "video/x-raw,width=1080,height=1920,pixel-aspect-ratio=1/1"
            .parse()
            .unwrap();
        let out = exact(&caps, &CAP, &input).unwrap();
        let s = out.structure(0).unwrap();
        assert_eq!(s.get::<i32>("width").unwrap(), 404);
        assert_eq!(s.get::<i32>("height").unwrap(), 720);
        assert_eq!(s.get::<&str>("format").unwrap(), "I420");
    }
}
