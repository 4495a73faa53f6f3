//! One running GStreamer pipeline: start it, pull the newest RGB frame, watch the bus.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::Frame;
use super::source::Source;

/// What the bus said.
pub enum BusEvent {
    Error(String),
    Eos,
}

pub struct Running {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    bus: gst::Bus,
}

pub fn init() -> anyhow::Result<()> {
    gst::init().context("initialising GStreamer")
}

/// The first element `source` needs that GStreamer does not have, as an error that says which
/// package to install.
pub fn check_elements(source: &Source) -> anyhow::Result<()> {
    match source
        .elements()
        .into_iter()
        .find(|(element, _)| gst::ElementFactory::find(element).is_none())
    {
        Some((element, package)) => Err(anyhow!(
            "{} needs the GStreamer element {element}, which is not installed (Debian package {package})",
            source.redacted()
        )),
        None => Ok(()),
    }
}

impl Running {
    pub fn start(source: &Source, max_rate: u32) -> anyhow::Result<Running> {
        Running::start_with(source, max_rate, true)
    }

    /// A pipeline whose appsink keeps every frame, holding the pipeline back until it is
    /// pulled (replaying a clip frame by frame, as `lookout bench --camera` does).
    pub fn start_every_frame(source: &Source) -> anyhow::Result<Running> {
        Running::start_with(source, 1, false)
    }

    fn start_with(source: &Source, max_rate: u32, newest_only: bool) -> anyhow::Result<Running> {
        check_elements(source)?;
        let description = source.pipeline(max_rate);
        let element = gst::parse::launch(&description)
            .map_err(|e| anyhow!("building the GStreamer pipeline: {e}"))?;
        let pipeline = match element.downcast::<gst::Pipeline>() {
            Ok(p) => p,
            Err(element) => {
                let p = gst::Pipeline::new();
                p.add(&element)?;
                p
            }
        };
        let sink = find_appsink(&pipeline).ok_or_else(|| anyhow!("the pipeline has no appsink"))?;
        // Forced here too, so a raw user pipeline gets the same newest-frame-only behaviour; the
        // caps make negotiation fail loudly if it cannot produce RGB.
        sink.set_caps(Some(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .build(),
        ));
        sink.set_drop(newest_only);
        sink.set_max_buffers(if newest_only { 1 } else { 4 });
        let bus = pipeline
            .bus()
            .ok_or_else(|| anyhow!("the pipeline has no bus"))?;
        let running = Running {
            pipeline,
            sink,
            bus,
        };
        if running.pipeline.set_state(gst::State::Playing).is_err() {
            let detail = match running.poll_bus(Duration::from_millis(200)) {
                Some(BusEvent::Error(e)) => e,
                _ => "state change failed".into(),
            };
            return Err(anyhow!("starting the pipeline: {detail}"));
        }
        Ok(running)
    }

    /// Waits up to `timeout` for an error or end of stream; other messages are dropped.
    pub fn poll_bus(&self, timeout: Duration) -> Option<BusEvent> {
        // Not `timed_pop_filtered`: gstreamer-rs 0.25 returns before popping anything when the
        // timeout is zero, and the supervisor polls with a zero timeout whenever a sample is
        // due, so a source that never delivers a frame would never have its error read.
        let deadline = Instant::now() + timeout;
        let msg = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .bus
                .timed_pop(gst::ClockTime::from_nseconds(remaining.as_nanos() as u64))?;
            if matches!(msg.type_(), gst::MessageType::Error | gst::MessageType::Eos) {
                break msg;
            }
        };
        match msg.view() {
            gst::MessageView::Error(e) => {
                let src = e.src().map(|s| s.name().to_string()).unwrap_or_default();
                let reason = error_reason(&e.error().to_string(), e.debug().as_deref());
                Some(BusEvent::Error(format!("{src}: {reason}")))
            }
            gst::MessageView::Eos(_) => Some(BusEvent::Eos),
            _ => None,
        }
    }

    /// The newest frame, waiting up to `timeout`. `Ok(None)` means no frame in time.
    pub fn pull(&self, timeout: Duration) -> anyhow::Result<Option<Frame>> {
        let Some(sample) = self
            .sink
            .try_pull_sample(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64))
        else {
            return Ok(None);
        };
        to_frame(&sample).map(Some)
    }

    pub fn is_eos(&self) -> bool {
        self.sink.is_eos()
    }

    /// Back to the start (file sources loop).
    pub fn rewind(&self) -> anyhow::Result<()> {
        self.pipeline
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                gst::ClockTime::ZERO,
            )
            .map_err(|e| anyhow!("rewinding: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn find_appsink(pipeline: &gst::Pipeline) -> Option<gst_app::AppSink> {
    if let Some(sink) = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
    {
        return Some(sink);
    }
    pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(|e| e.ok())
        .find_map(|e| e.downcast::<gst_app::AppSink>().ok())
}

/// Copies the sample into packed RGB, dropping the row padding GStreamer may add.
fn to_frame(sample: &gst::Sample) -> anyhow::Result<Frame> {
    let caps = sample.caps().ok_or_else(|| anyhow!("frame without caps"))?;
    let info =
        gst_video::VideoInfo::from_caps(caps).map_err(|_| anyhow!("unexpected caps {caps}"))?;
    if info.format() != gst_video::VideoFormat::Rgb {
        return Err(anyhow!(
            "the pipeline delivers {:?}, not RGB",
            info.format()
        ));
    }
    let buffer = sample
        .buffer()
        .ok_or_else(|| anyhow!("frame without data"))?;
    let map = buffer
        .map_readable()
        .map_err(|_| anyhow!("cannot read the frame"))?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = info.stride()[0] as usize;
    let offset = info.offset()[0];
    let row = w * 3;
    if w == 0 || h == 0 || stride < row || map.len() < offset + stride * (h - 1) + row {
        return Err(anyhow!(
            "frame of {} bytes is too small for {w}x{h}",
            map.len()
        ));
    }
    let mut rgb = Vec::with_capacity(row * h);
    for y in 0..h {
        let start = offset + y * stride;
        rgb.extend_from_slice(&map[start..start + row]);
    }
    Ok(Frame {
        width: w as u32,
        height: h as u32,
        rgb: Arc::new(rgb),
        captured: SystemTime::now(),
    })
}

/// An error message for people: GStreamer's message plus the detail of its debug text, which is
/// `file.c(line): function (): /pipeline/element:` then the detail (`system error: No such
/// file or directory`, the server's reply, …). The source location is dropped.
fn error_reason(message: &str, debug: Option<&str>) -> String {
    let mut lines = debug.unwrap_or_default().lines().map(str::trim).peekable();
    if lines
        .peek()
        .is_some_and(|first| first.ends_with(':') && first.contains("): "))
    {
        lines.next();
    }
    let detail: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    if detail.is_empty() {
        message.to_string()
    } else {
        format!("{message} ({})", detail.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::error_reason;

    #[test]
    fn error_reasons_keep_the_detail_not_the_source_location() {
        let open = "../sys/v4l2/v4l2_calls.c(622): gst_v4l2_open (): /GstPipeline:pipeline1/GstV4l2Src:v4l2src1:\nsystem error: No such file or directory";
        assert_eq!(
            error_reason(
                "Could not open device '/dev/video0' for reading and writing.",
                Some(open)
            ),
            "Could not open device '/dev/video0' for reading and writing. (system error: No such file or directory)"
        );
        let location_only = "../sys/v4l2/gstv4l2src.c(1374): gst_v4l2src_create (): /GstPipeline:pipeline0/GstV4l2Src:v4l2src0:";
        assert_eq!(
            error_reason("Failed to allocate a buffer", Some(location_only)),
            "Failed to allocate a buffer"
        );
        assert_eq!(error_reason("Internal error", None), "Internal error");
        assert_eq!(
            error_reason("Not found", Some("plain detail")),
            "Not found (plain detail)"
        );
    }
}
