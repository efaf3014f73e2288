//! The sources decoded by a child program: `rtsp` (IP cameras), `libcamera` (the Pi's CSI
//! cameras) and `command` (any program writing raw video or MJPEG), their settings, their
//! checks (every problem with its path) and how each becomes edge-core's `CommandSpec`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use edge_core::source::command::CommandSpec;
use edge_core::source::programs::{self, Rtsp, RtspTransport, StreamBackend};
use edge_core::source::stream::StreamFormat;

/// `source = { type = "rtsp", url = "rtsp://cam.lan/stream1", … }`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspSource {
    pub url: String,
    #[serde(default)]
    pub transport: RtspTransport,
    /// A file holding `user:password` (relative: from `$CREDENTIALS_DIRECTORY` when set).
    pub credentials_file: Option<PathBuf>,
    /// Frames per second to sample; unset: every frame.
    pub fps: Option<f64>,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    /// Seconds without a frame after which the stream is lost (and reconnected).
    #[serde(default = "default_stall")]
    pub stall_secs: f64,
    #[serde(default)]
    pub backend: StreamBackend,
    pub hwaccel: Option<String>,
    pub decoder: Option<String>,
}

/// `source = { type = "libcamera", camera = 0, width = 1280, height = 720, fps = 10 }`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibcameraSource {
    #[serde(default)]
    pub camera: u32,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default = "default_stall")]
    pub stall_secs: f64,
    /// The capture program: `rpicam-vid` (Bookworm), `libcamera-vid` (Bullseye).
    #[serde(default = "default_rpicam")]
    pub program: String,
}

/// `source = { type = "command", command = ["ffmpeg", …, "-"], format = { type = "mjpeg" } }`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSource {
    /// The program and its arguments (no shell: wrap in `["sh", "-c", "…"]` for one).
    pub command: Vec<String>,
    pub format: StreamFormat,
    #[serde(default = "default_stall")]
    pub stall_secs: f64,
}

fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_fps() -> u32 {
    10
}
fn default_stall() -> f64 {
    10.0
}
fn default_rpicam() -> String {
    "rpicam-vid".into()
}

type Problems = Vec<(String, String)>;

fn check_size(path: &str, width: u32, height: u32, problems: &mut Problems) {
    if let Err(e) = (StreamFormat::Rawvideo { width, height, pix_fmt: Default::default() }).check() {
        problems.push((format!("{path}.width"), e));
    }
}

fn check_stall(path: &str, stall: f64, problems: &mut Problems) {
    if !(stall > 0.0 && stall <= 3600.0) {
        problems.push((format!("{path}.stall_secs"), format!("must be in (0, 3600], got {stall}")));
    }
}

impl RtspSource {
    pub fn check(&self, path: &str, problems: &mut Problems) {
        if !(self.url.starts_with("rtsp://") || self.url.starts_with("rtsps://")) {
            problems.push((format!("{path}.url"), "must start with rtsp:// or rtsps://".into()));
        }
        if self.url.chars().any(char::is_whitespace) {
            problems.push((format!("{path}.url"), "must not contain spaces".into()));
        }
        if let Some(fps) = self.fps
            && !(fps > 0.0 && fps <= 120.0)
        {
            problems.push((format!("{path}.fps"), format!("must be in (0, 120], got {fps}")));
        }
        check_size(path, self.width, self.height, problems);
        check_stall(path, self.stall_secs, problems);
        for (key, v) in [("hwaccel", &self.hwaccel), ("decoder", &self.decoder)] {
            if v.as_ref()
                .is_some_and(|v| v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            {
                problems.push((format!("{path}.{key}"), "a decoder name: letters, digits, '_' and '-'".into()));
            }
        }
    }

    /// The decoding child; reads the credentials file.
    pub fn spec(&self) -> Result<CommandSpec, String> {
        let credentials = match &self.credentials_file {
            None => None,
            Some(f) => {
                let file = crate::mqtt::credential_path(f);
                let text = std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
                let (user, pass) = text
                    .trim_end_matches(['\r', '\n'])
                    .split_once(':')
                    .ok_or_else(|| format!("{}: expected one line user:password", file.display()))?;
                Some((user.to_string(), pass.to_string()))
            }
        };
        Ok(Rtsp {
            url: self.url.clone(),
            transport: self.transport,
            credentials,
            fps: self.fps,
            width: self.width,
            height: self.height,
            stall: Duration::from_secs_f64(self.stall_secs),
            backend: self.backend,
            hwaccel: self.hwaccel.clone(),
            decoder: self.decoder.clone(),
        }
        .spec())
    }
}

impl LibcameraSource {
    pub fn check(&self, path: &str, problems: &mut Problems) {
        check_size(path, self.width, self.height, problems);
        check_stall(path, self.stall_secs, problems);
        if !(1..=120).contains(&self.fps) {
            problems.push((format!("{path}.fps"), format!("must be 1 to 120, got {}", self.fps)));
        }
    }

    pub fn spec(&self) -> CommandSpec {
        let stall = Duration::from_secs_f64(self.stall_secs);
        programs::libcamera(&self.program, self.camera, self.width, self.height, self.fps, stall)
    }
}

impl CommandSource {
    pub fn check(&self, path: &str, problems: &mut Problems) {
        if self.command.first().is_none_or(|p| p.trim().is_empty()) {
            problems.push((format!("{path}.command"), "needs the program to run, then its arguments".into()));
        }
        if let Err(e) = self.format.check() {
            problems.push((format!("{path}.format"), e));
        }
        check_stall(path, self.stall_secs, problems);
    }

    pub fn spec(&self) -> CommandSpec {
        let program = self.command.first().cloned().unwrap_or_default();
        CommandSpec {
            label: format!("command {program}"),
            program,
            args: self.command.iter().skip(1).cloned().collect(),
            format: self.format.clone(),
            stall: Duration::from_secs_f64(self.stall_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_key_is_named() {
        let r: RtspSource =
            toml::from_str("url = 'http://x'\nfps = 0\nwidth = 0\nstall_secs = -1\ndecoder = 'a b'\nhwaccel = 'cuda'")
                .unwrap();
        let mut p = Vec::new();
        r.check("pipelines.cam.source", &mut p);
        let paths: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pipelines.cam.source.url",
                "pipelines.cam.source.fps",
                "pipelines.cam.source.width",
                "pipelines.cam.source.stall_secs",
                "pipelines.cam.source.decoder"
            ]
        );
        let c: CommandSource =
            toml::from_str("command = []\nformat = { type = 'rawvideo', width = 0, height = 2 }").unwrap();
        let mut p = Vec::new();
        c.check("s", &mut p);
        assert_eq!(p.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["s.command", "s.format"]);
    }

    #[test]
    fn credentials_come_from_their_file_and_stay_out_of_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cam");
        std::fs::write(&f, "viewer:s3cr3t\n").unwrap();
        let r = RtspSource {
            url: "rtsp://cam.lan/s".into(),
            transport: RtspTransport::Tcp,
            credentials_file: Some(f),
            fps: None,
            width: 640,
            height: 360,
            stall_secs: 5.0,
            backend: StreamBackend::Ffmpeg,
            hwaccel: None,
            decoder: None,
        };
        let spec = r.spec().unwrap();
        assert!(spec.args.contains(&"rtsp://viewer:s3cr3t@cam.lan/s".to_string()), "{:?}", spec.args);
        assert!(!spec.label.contains("s3cr3t"));
        let missing = RtspSource { credentials_file: Some(dir.path().join("nope")), ..r };
        assert!(missing.spec().unwrap_err().contains("nope"));
    }
}
