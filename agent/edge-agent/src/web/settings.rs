//! `[web]`: the status page and its endpoints, and their checks.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Serve the page here: `127.0.0.1:8080` (this machine only) or `0.0.0.0:8080` (the
    /// network; set `auth` then). Off when unset.
    pub listen: Option<SocketAddr>,
    /// `none`, `basic` (the credentials file holds `user:password`) or `bearer` (it holds the
    /// token).
    pub auth: WebAuth,
    /// Where the credentials are. A relative path is read from systemd's
    /// `$CREDENTIALS_DIRECTORY` when set (`LoadCredential=web:/etc/edge-agent/web`, `"web"`).
    pub credentials_file: Option<PathBuf>,
    /// Frames per second, per pipeline, kept for open pages.
    pub frame_fps: f64,
    /// Frames wider than this are scaled down for the page.
    pub frame_width: u32,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings { listen: None, auth: WebAuth::None, credentials_file: None, frame_fps: 2.0, frame_width: 640 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebAuth {
    #[default]
    None,
    Basic,
    Bearer,
}

impl WebSettings {
    /// Every problem, with its path under `web.`.
    pub fn check(&self, problems: &mut Vec<(String, String)>) {
        let mut bad = |field: &str, msg: String| problems.push((format!("web.{field}"), msg));
        if self.auth != WebAuth::None && self.credentials_file.is_none() {
            bad("credentials_file", format!("auth = \"{}\" needs a credentials file", self.auth.as_str()));
        }
        if self.auth == WebAuth::None && self.credentials_file.is_some() {
            bad("auth", "a credentials file is set but auth is \"none\": say \"basic\" or \"bearer\"".into());
        }
        if !(self.frame_fps > 0.0 && self.frame_fps <= 30.0) {
            bad("frame_fps", format!("must be in (0, 30], got {}", self.frame_fps));
        }
        if !(64..=4096).contains(&self.frame_width) {
            bad("frame_width", format!("must be 64 to 4096 pixels, got {}", self.frame_width));
        }
    }
}

impl WebAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            WebAuth::None => "none",
            WebAuth::Basic => "basic",
            WebAuth::Bearer => "bearer",
        }
    }
}
