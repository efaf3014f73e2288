//! The programs that decode cameras the agent does not read itself: IP cameras over RTSP
//! (ffmpeg, or GStreamer where its hardware decoders are the way, as on a Jetson) and the
//! Raspberry Pi's CSI cameras (`rpicam-vid`, libcamera's own tool). Each becomes a
//! [`CommandSpec`]: the argument list, the frame format it writes, and a label without secrets.
//!
//! Decoding in a child process is deliberate (as Frigate does with ffmpeg): the agent stays one
//! small binary, a decoder crash on a broken stream ends a child and not the agent, and the
//! board's hardware decoders are reached through the tools its vendor supports.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::command::CommandSpec;
use super::stream::{PixelFormat, StreamFormat};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    /// RTP interleaved in the RTSP connection: works through NAT and loses nothing.
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamBackend {
    /// `ffmpeg` (with `hwaccel`/`decoder` for hardware decoding, e.g. `h264_v4l2m2m` on a Pi 4).
    #[default]
    Ffmpeg,
    /// `gst-launch-1.0` with `decodebin`, which picks the board's decoder by rank
    /// (`v4l2h264dec` on a Pi, `nvv4l2decoder` on a Jetson, `avdec_h264` elsewhere).
    Gstreamer,
}

/// An RTSP camera and how to decode it.
#[derive(Debug, Clone)]
pub struct Rtsp {
    pub url: String,
    pub transport: RtspTransport,
    /// User and password, kept out of the label and the logs.
    pub credentials: Option<(String, String)>,
    /// Frames per second to sample; unset: every frame the camera sends.
    pub fps: Option<f64>,
    /// Every frame is scaled to this size (letterboxed when the stream's aspect differs).
    pub width: u32,
    pub height: u32,
    pub stall: Duration,
    pub backend: StreamBackend,
    /// ffmpeg's `-hwaccel` (e.g. `auto`, `cuda`, `vaapi`).
    pub hwaccel: Option<String>,
    /// ffmpeg's decoder (`-c:v`, e.g. `h264_v4l2m2m`), or a GStreamer decoder element in place
    /// of `decodebin`'s choice (e.g. `nvv4l2decoder`).
    pub decoder: Option<String>,
}

/// `rtsp://user:pass@host/…` written as `rtsp://host/…` for labels and logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let slash = if rest.contains('/') { "/" } else { "" };
            format!("{scheme}://{host}{slash}{path}")
        }
        None => url.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Rtsp {
    /// The URL with the credentials in it (for ffmpeg, which takes them no other way).
    fn url_with_credentials(&self) -> String {
        match (&self.credentials, self.url.split_once("://")) {
            (Some((user, pass)), Some((scheme, rest))) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                format!("{scheme}://{}:{}@{host}", encode(user), encode(pass))
            }
            _ => self.url.clone(),
        }
    }

    pub fn spec(&self) -> CommandSpec {
        let format = StreamFormat::Rawvideo { width: self.width, height: self.height, pix_fmt: PixelFormat::Rgb24 };
        let label = format!("rtsp {}", redact(&self.url));
        let (program, args) = match self.backend {
            StreamBackend::Ffmpeg => ("ffmpeg", self.ffmpeg_args()),
            StreamBackend::Gstreamer => ("gst-launch-1.0", self.gstreamer_args()),
        };
        CommandSpec { program: program.into(), args, format, stall: self.stall, label }
    }

    fn ffmpeg_args(&self) -> Vec<String> {
        let (w, h) = (self.width, self.height);
        let mut a: Vec<String> = ["-hide_banner", "-loglevel", "error", "-nostdin"].map(String::from).to_vec();
        let transport = match self.transport {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        };
        a.extend(["-rtsp_transport".into(), transport.into()]);
        if let Some(hw) = &self.hwaccel {
            a.extend(["-hwaccel".into(), hw.clone()]);
        }
        if let Some(d) = &self.decoder {
            a.extend(["-c:v".into(), d.clone()]);
        }
        a.extend(["-i".into(), self.url_with_credentials(), "-an".into(), "-sn".into(), "-dn".into()]);
        let mut filters = Vec::new();
        if let Some(fps) = self.fps {
            filters.push(format!("fps={fps}"));
        }
        filters.push(format!("scale={w}:{h}:force_original_aspect_ratio=decrease"));
        filters.push(format!("pad={w}:{h}:(ow-iw)/2:(oh-ih)/2"));
        a.extend(["-vf".into(), filters.join(",")]);
        a.extend(["-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"].map(String::from));
        a
    }

    fn gstreamer_args(&self) -> Vec<String> {
        let mut a: Vec<String> =
            vec!["-q".into(), "rtspsrc".into(), format!("location={}", self.url), "latency=200".into()];
        a.push(
            match self.transport {
                RtspTransport::Tcp => "protocols=tcp",
                RtspTransport::Udp => "protocols=udp",
            }
            .into(),
        );
        if let Some((user, pass)) = &self.credentials {
            a.extend([format!("user-id={user}"), format!("user-pw={pass}")]);
        }
        a.push("!".into());
        match &self.decoder {
            Some(d) => a.extend(["rtph264depay".into(), "!".into(), "h264parse".into(), "!".into(), d.clone()]),
            None => a.push("decodebin".into()),
        }
        a.extend(["!", "videoconvert", "!", "videoscale", "add-borders=true"].map(String::from));
        let mut caps =
            format!("video/x-raw,format=RGB,width={},height={},pixel-aspect-ratio=1/1", self.width, self.height);
        if let Some(fps) = self.fps {
            a.extend(["!".into(), "videorate".into(), "drop-only=true".into()]);
            caps += &format!(",framerate={}/1000", (fps * 1000.0).round() as u64);
        }
        a.extend(["!".into(), caps, "!".into(), "fdsink".into(), "fd=1".into(), "sync=false".into()]);
        a
    }
}

/// A Raspberry Pi CSI camera through `rpicam-vid` (`libcamera-vid` on older Raspberry Pi OS),
/// which encodes MJPEG with the Pi's ISP and writes it to stdout.
pub fn libcamera(program: &str, camera: u32, width: u32, height: u32, fps: u32, stall: Duration) -> CommandSpec {
    let args = [
        "--camera",
        &camera.to_string(),
        "--width",
        &width.to_string(),
        "--height",
        &height.to_string(),
        "--framerate",
        &fps.to_string(),
        "--codec",
        "mjpeg",
        "--timeout",
        "0",
        "--nopreview",
        "--flush",
        "--output",
        "-",
    ]
    .map(String::from)
    .to_vec();
    CommandSpec {
        program: program.into(),
        args,
        format: StreamFormat::Mjpeg,
        stall,
        label: format!("libcamera {camera}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtsp(backend: StreamBackend) -> Rtsp {
        Rtsp {
            url: "rtsp://old:secret@cam.lan:554/stream1".into(),
            transport: RtspTransport::Tcp,
            credentials: Some(("admin".into(), "p@ss word".into())),
            fps: Some(5.0),
            width: 640,
            height: 360,
            stall: Duration::from_secs(10),
            backend,
            hwaccel: None,
            decoder: Some("h264_v4l2m2m".into()),
        }
    }

    #[test]
    fn ffmpeg_gets_the_credentials_the_label_does_not() {
        let spec = rtsp(StreamBackend::Ffmpeg).spec();
        assert_eq!(spec.program, "ffmpeg");
        assert_eq!(spec.label, "rtsp rtsp://cam.lan:554/stream1");
        let args = spec.args.join(" ");
        assert!(args.contains("-i rtsp://admin:p%40ss%20word@cam.lan:554/stream1"), "{args}");
        assert!(args.contains("-rtsp_transport tcp -c:v h264_v4l2m2m -i"), "{args}");
        assert!(args.contains("fps=5,scale=640:360:force_original_aspect_ratio=decrease,pad=640:360"), "{args}");
        assert!(args.ends_with("-pix_fmt rgb24 -f rawvideo pipe:1"), "{args}");
        assert_eq!(spec.format, StreamFormat::Rawvideo { width: 640, height: 360, pix_fmt: PixelFormat::Rgb24 });
    }

    #[test]
    fn gstreamer_pipeline_ends_in_rgb_on_stdout() {
        let spec = rtsp(StreamBackend::Gstreamer).spec();
        assert_eq!(spec.program, "gst-launch-1.0");
        let args = spec.args.join(" ");
        assert!(args.starts_with("-q rtspsrc location=rtsp://old:secret@cam.lan:554/stream1"), "{args}");
        assert!(args.contains("user-id=admin user-pw=p@ss word ! rtph264depay ! h264parse ! h264_v4l2m2m"), "{args}");
        assert!(args.ends_with("video/x-raw,format=RGB,width=640,height=360,pixel-aspect-ratio=1/1,framerate=5000/1000 ! fdsink fd=1 sync=false"), "{args}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("rtsp://u:p@h/x/y"), "rtsp://h/x/y");
        assert_eq!(redact("rtsp://h:554"), "rtsp://h:554");
        assert_eq!(redact("rtsp://a@b@h/s"), "rtsp://h/s");
    }
}
