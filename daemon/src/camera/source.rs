//! Camera source strings to GStreamer pipeline descriptions.
//!
//! Every pipeline ends in the same tail: `videoconvert` to packed RGB, then an appsink that keeps
//! only the newest frame (`drop=true max-buffers=1`), so a slow model never makes GStreamer queue
//! frames. Live sources use `sync=false` (the source paces itself); a file clip uses `sync=true`
//! so it plays at its real rate instead of decoding as fast as the CPU allows.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    V4l2 {
        device: String,
    },
    Rtsp {
        url: String,
    },
    Libcamera {
        name: Option<String>,
    },
    /// Loops at end of stream.
    File {
        path: String,
    },
    TestSrc {
        pattern: Option<String>,
    },
    /// A user pipeline; it must contain an appsink (we use the one named `sink`, else the last).
    Gst {
        description: String,
    },
}

#[derive(Debug)]
pub struct SourceError(String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

impl Source {
    pub fn parse(s: &str) -> Result<Source, SourceError> {
        let s = s.trim();
        let bad = |m: String| Err(SourceError(m));
        if let Some(dev) = s.strip_prefix("v4l2://") {
            // Any absolute path: udev's stable names (/dev/v4l/by-id/…) are links to the node.
            if !dev.starts_with('/') {
                return bad(format!(
                    "{s:?}: expected an absolute device path, like v4l2:///dev/video0"
                ));
            }
            Ok(Source::V4l2 {
                device: dev.to_string(),
            })
        } else if s.starts_with("rtsp://") || s.starts_with("rtsps://") {
            if s.len() <= "rtsp://".len() {
                return bad(format!("{s:?}: no host"));
            }
            Ok(Source::Rtsp { url: s.to_string() })
        } else if let Some(rest) = s.strip_prefix("libcamera://") {
            let name = rest.trim_start_matches('/');
            Ok(Source::Libcamera {
                name: (!name.is_empty()).then(|| name.to_string()),
            })
        } else if s == "libcamera" {
            Ok(Source::Libcamera { name: None })
        } else if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return bad(format!(
                    "{s:?}: expected an absolute path, file:///path/to/clip.mp4"
                ));
            }
            Ok(Source::File {
                path: path.to_string(),
            })
        } else if s == "testsrc" || s.starts_with("testsrc://") || s.starts_with("testsrc:") {
            let pattern = s
                .trim_start_matches("testsrc")
                .trim_start_matches(':')
                .trim_start_matches("//")
                .to_string();
            if !pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return bad(format!(
                    "{s:?}: testsrc pattern must be a videotestsrc pattern name"
                ));
            }
            Ok(Source::TestSrc {
                pattern: (!pattern.is_empty()).then_some(pattern),
            })
        } else if let Some(desc) = s.strip_prefix("gst:") {
            if !desc.contains("appsink") {
                return bad(format!(
                    "{s:?}: a GStreamer description must end in an appsink"
                ));
            }
            Ok(Source::Gst {
                description: desc.trim().to_string(),
            })
        } else if s.contains("appsink") && s.contains('!') {
            Ok(Source::Gst {
                description: s.to_string(),
            })
        } else {
            bad(format!(
                "{s:?} is not a source: use v4l2:///dev/video0, rtsp://…, libcamera://, file:///clip.mp4, testsrc, or a GStreamer description ending in an appsink"
            ))
        }
    }

    /// Live sources restart on end of stream; a file loops.
    pub fn loops(&self) -> bool {
        matches!(self, Source::File { .. })
    }

    /// The GStreamer elements this source's pipeline uses, each with the Debian package that
    /// ships it, so that a missing plugin is named instead of failing as a parse error. A raw
    /// description is the user's own: GStreamer names what it lacks.
    pub fn elements(&self) -> Vec<(&'static str, &'static str)> {
        const BASE: &str = "gstreamer1.0-plugins-base";
        const GOOD: &str = "gstreamer1.0-plugins-good";
        let source: &[(&str, &str)] = match self {
            Source::V4l2 { .. } => &[("v4l2src", GOOD), ("decodebin", BASE)],
            Source::Rtsp { .. } => &[("rtspsrc", GOOD), ("decodebin", BASE)],
            Source::Libcamera { .. } => &[("libcamerasrc", "gstreamer1.0-libcamera")],
            Source::File { .. } => &[("filesrc", "libgstreamer1.0-0"), ("decodebin", BASE)],
            Source::TestSrc { .. } => &[("videotestsrc", BASE)],
            Source::Gst { .. } => return Vec::new(),
        };
        let tail = [
            ("videorate", BASE),
            ("videoconvert", BASE),
            ("appsink", BASE),
        ];
        source.iter().copied().chain(tail).collect()
    }

    /// The pipeline description; `max_rate` drops frames early so we convert only what we sample.
    pub fn pipeline(&self, max_rate: u32) -> String {
        let max_rate = max_rate.max(1);
        let tail = |sync: bool| {
            format!(
                "videorate drop-only=true max-rate={max_rate} ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink drop=true max-buffers=1 sync={sync} emit-signals=false"
            )
        };
        match self {
            Source::V4l2 { device } => format!(
                "v4l2src device={} ! decodebin ! {}",
                quote(device),
                tail(false)
            ),
            Source::Rtsp { url } => format!(
                "rtspsrc location={} latency=200 protocols=tcp ! decodebin ! {}",
                quote(url),
                tail(false)
            ),
            Source::Libcamera { name } => match name {
                Some(n) => format!("libcamerasrc camera-name={} ! {}", quote(n), tail(false)),
                None => format!("libcamerasrc ! {}", tail(false)),
            },
            Source::File { path } => format!(
                "filesrc location={} ! decodebin ! {}",
                quote(path),
                tail(true)
            ),
            Source::TestSrc { pattern } => format!(
                "videotestsrc is-live=true{} ! video/x-raw,width=640,height=480,framerate=10/1 ! {}",
                pattern
                    .as_ref()
                    .map(|p| format!(" pattern={p}"))
                    .unwrap_or_default(),
                tail(false)
            ),
            Source::Gst { description } => description.clone(),
        }
    }

    /// For logs and status: never shows RTSP credentials.
    pub fn redacted(&self) -> String {
        match self {
            Source::Rtsp { url } => redact_url(url),
            Source::V4l2 { device } => format!("v4l2://{device}"),
            Source::Libcamera { name } => format!("libcamera://{}", name.as_deref().unwrap_or("")),
            Source::File { path } => format!("file://{path}"),
            Source::TestSrc { pattern } => format!(
                "testsrc{}",
                pattern
                    .as_ref()
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default()
            ),
            Source::Gst { .. } => "gst pipeline".into(),
        }
    }
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Quotes a property value for `gst_parse_launch`.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            Source::parse("v4l2:///dev/video0").unwrap(),
            Source::V4l2 {
                device: "/dev/video0".into()
            }
        );
        assert!(Source::parse("v4l2://video0").is_err());
        assert_eq!(
            Source::parse("v4l2:///dev/v4l/by-id/usb-cam-video-index0").unwrap(),
            Source::V4l2 {
                device: "/dev/v4l/by-id/usb-cam-video-index0".into()
            }
        );
        assert_eq!(
            Source::parse("testsrc").unwrap(),
            Source::TestSrc { pattern: None }
        );
        assert_eq!(
            Source::parse("testsrc:ball").unwrap(),
            Source::TestSrc {
                pattern: Some("ball".into())
            }
        );
        assert!(Source::parse("file://relative.mp4").is_err());
        assert!(Source::parse("gst:videotestsrc ! fakesink").is_err());
        assert!(Source::parse("http://x").is_err());
        assert!(Source::parse("videotestsrc ! videoconvert ! appsink name=sink").is_ok());
    }

    #[test]
    fn redacts() {
        let s = Source::parse("rtsp://admin:secret@cam.lan:554/stream").unwrap();
        assert_eq!(s.redacted(), "rtsp://***@cam.lan:554/stream");
        assert!(!s.redacted().contains("secret"));
    }
}
