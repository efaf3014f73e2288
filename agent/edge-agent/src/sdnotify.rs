//! systemd's notify protocol, spoken directly (a datagram to `$NOTIFY_SOCKET`): `READY=1`
//! once models are loaded and MQTT is connected or buffering, `WATCHDOG=1` keep-alives only
//! while the pipelines make progress, `STOPPING=1` when the stop begins. Without
//! `$NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
}

enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let s = s.to_string_lossy().to_string();
            let target = match s.strip_prefix('@') {
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                None => Target::Path(PathBuf::from(s)),
            };
            UnixDatagram::unbound().ok().map(|sock| (sock, target))
        });
        Notifier { socket }
    }

    /// Sends `state` (e.g. `READY=1`); failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some((sock, target)) = &self.socket else { return };
        let sent = match target {
            Target::Path(p) => sock.send_to(state.as_bytes(), p),
            Target::Abstract(name) => abstract_send(sock, name, state.as_bytes()),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, %state, "cannot notify systemd");
        }
    }

    /// The keep-alive period systemd asked for (half of `WatchdogSec=`), if any.
    pub fn watchdog_period() -> Option<Duration> {
        if let Some(pid) = std::env::var_os("WATCHDOG_PID")
            && pid.to_string_lossy() != std::process::id().to_string()
        {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(target_os = "linux")]
fn abstract_send(sock: &UnixDatagram, name: &[u8], data: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(data, &addr)
}

#[cfg(not(target_os = "linux"))]
fn abstract_send(_sock: &UnixDatagram, _name: &[u8], _data: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets are Linux-only"))
}

/// Whether the pipelines are making progress: every pipeline with frames waiting must have
/// finished one within the last `window` (systemd's whole `WatchdogSec`); an idle pipeline
/// (nothing waiting) is fine. One slow frame is not a stall; a window without any is.
pub struct Progress {
    window: Duration,
    last: Vec<(u64, std::time::Instant)>,
}

impl Progress {
    pub fn new(window: Duration) -> Progress {
        Progress { window, last: vec![] }
    }

    pub fn healthy(&mut self, snapshots: &[crate::stats::StatsSnapshot]) -> bool {
        let now = std::time::Instant::now();
        self.last.resize(snapshots.len(), (0, now));
        snapshots.iter().zip(self.last.iter_mut()).all(|(s, (done, since))| {
            // results count too: a speech pipeline whose transcription is behind blocks its
            // VAD (no block done) while Whisper still finishes utterances
            let finished = s.frames_done + s.errors + s.results;
            let waiting = s.frames_in > s.frames_done + s.dropped + s.errors;
            if finished > *done || !waiting {
                *since = now;
            }
            *done = finished;
            now.duration_since(*since) < self.window
        })
    }
}
