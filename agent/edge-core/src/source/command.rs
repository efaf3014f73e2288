//! Frames from a program's standard output (ffmpeg, GStreamer's `gst-launch-1.0`, the Pi's
//! `rpicam-vid`, anything that writes raw video or MJPEG). The program is a child of the agent:
//! its stdout is cut into frames on a reader thread; frames are decoded on the source's own
//! thread (never the inference thread), timed; its stderr is logged at a bounded rate; it is
//! killed when the source is dropped (a stop, a stall, a restart). A child that exits, writes
//! something that is not frames of the declared format, or goes quiet for `stall` is an error:
//! the pipeline's supervisor restarts it with backoff and counts it, as for an unplugged camera.
//! If the agent itself is killed, the child's next write fails (its pipe has no reader) and it
//! ends; under systemd the whole cgroup is stopped anyway.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::stream::{Splitter, StreamError, StreamFormat};
use super::{Frame, FrameSource, SourceError};

/// Lines of a child's stderr logged per [`LOG_WINDOW`]; the rest are counted.
const LOG_LINES: usize = 10;
const LOG_WINDOW: Duration = Duration::from_secs(60);
/// The child's last stderr lines, quoted when it exits.
const LAST_LINES: usize = 3;
/// Extra time for the first frame: connecting, probing the stream and waiting for a key frame
/// take ffmpeg several seconds on a normal camera.
const FIRST_FRAME_GRACE: Duration = Duration::from_secs(10);

/// A program and how to read it.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub format: StreamFormat,
    /// No frame for this long: the child is stuck (a frozen stream); it is restarted. The first
    /// frame gets [`FIRST_FRAME_GRACE`] more.
    pub stall: Duration,
    /// How frames and log lines name the source (never a URL with a password in it).
    pub label: String,
}

pub struct CommandSource {
    spec: CommandSpec,
    child: Child,
    frames: Receiver<Result<Vec<u8>, StreamError>>,
    last_lines: Arc<Mutex<VecDeque<String>>>,
    /// the stderr reader: done once the child's stderr closes
    log_reader: std::thread::JoinHandle<()>,
    last_frame: Instant,
    delivered: bool,
}

impl CommandSpec {
    /// The program can be started: it is found on `PATH` (or is a path to a file).
    pub fn probe(&self) -> Result<(), SourceError> {
        find_program(&self.program).map(|_| ()).ok_or_else(|| {
            SourceError::Command(format!("{}: program {:?} not found on PATH", self.label, self.program))
        })
    }
}

/// Where `program` is: itself when it has a slash, else the first match on `PATH`.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(program)).find(|p| p.is_file())
}

impl CommandSource {
    pub fn open(spec: &CommandSpec) -> Result<CommandSource, SourceError> {
        let err = |m: String| SourceError::Command(format!("{}: {m}", spec.label));
        let mut child = Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("starting {}: {e}", spec.program)))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            child.kill().ok();
            child.wait().ok();
            return Err(err("no pipes to the child".into()));
        };
        // two frames in flight: the reader cuts the next while this thread decodes one
        let (tx, frames) = sync_channel(2);
        let format = spec.format.clone();
        std::thread::Builder::new()
            .name("cmd-read".into())
            .spawn(move || read_frames(Splitter::new(stdout, format), &tx))
            .map_err(|e| err(format!("starting its reader: {e}")))?;
        let last_lines = Arc::new(Mutex::new(VecDeque::with_capacity(LAST_LINES)));
        let (lines, label) = (last_lines.clone(), spec.label.clone());
        let log_reader = std::thread::Builder::new()
            .name("cmd-log".into())
            .spawn(move || log_stderr(stderr, &label, &lines))
            .map_err(|e| err(format!("starting its log reader: {e}")))?;
        tracing::info!(source = %spec.label, program = %spec.program, pid = child.id(), "started");
        Ok(CommandSource {
            spec: spec.clone(),
            child,
            frames,
            last_lines,
            log_reader,
            last_frame: Instant::now(),
            delivered: false,
        })
    }

    /// Why the child stopped delivering: its exit status and last words.
    fn ended(&mut self, why: &str) -> SourceError {
        // the reader ends when stdout closes, usually because the child exited: give it a moment
        let started = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if started.elapsed() < Duration::from_millis(500) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => break "still running (killed)".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        // its last words may still be in the pipe when the exit is seen (under qemu the test's
        // "bad news" was missed): read them while stderr closes, for a bounded time (a
        // grandchild may hold it open)
        let reading = Instant::now();
        while !self.log_reader.is_finished() && reading.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let last: Vec<String> = self.last_lines.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let said = if last.is_empty() { String::new() } else { format!("; it said: {}", last.join(" / ")) };
        SourceError::Command(format!("{}: {why} ({}: {status}){said}", self.spec.label, self.spec.program))
    }
}

impl Drop for CommandSource {
    fn drop(&mut self) {
        // already gone is fine
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl FrameSource for CommandSource {
    fn next_frame(&mut self, cancel: &CancellationToken) -> Result<Option<Frame>, SourceError> {
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            match self.frames.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(bytes)) => {
                    let captured = SystemTime::now();
                    let started = Instant::now();
                    let image = self.spec.format.decode(bytes).map_err(|e| self.ended(&e.to_string()))?;
                    self.last_frame = Instant::now();
                    self.delivered = true;
                    return Ok(Some(Frame {
                        id: 0,
                        source: self.spec.label.clone(),
                        captured,
                        image: Arc::new(image),
                        decode: started.elapsed(),
                    }));
                }
                Ok(Err(e)) => return Err(self.ended(&e.to_string())),
                Err(RecvTimeoutError::Timeout) => {
                    let limit = if self.delivered { self.spec.stall } else { self.spec.stall + FIRST_FRAME_GRACE };
                    if self.last_frame.elapsed() >= limit {
                        let why = format!("no frame for {:.1} s", limit.as_secs_f64());
                        return Err(self.ended(&why));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.ended("its output ended")),
            }
        }
    }
}

/// The reader thread: frames until the stream ends or the source is gone.
fn read_frames<R: std::io::Read>(mut splitter: Splitter<R>, tx: &SyncSender<Result<Vec<u8>, StreamError>>) {
    let mut reported = 0;
    loop {
        if splitter.skipped > reported {
            tracing::warn!(
                bytes = splitter.skipped - reported,
                "bytes that were not a JPEG skipped in the child's output"
            );
            reported = splitter.skipped;
        }
        match splitter.next_frame() {
            Ok(Some(frame)) => {
                if tx.send(Ok(frame)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                // the receiver may be gone already
                tx.send(Err(e)).ok();
                return;
            }
        }
    }
}

/// Logs the child's stderr: at most [`LOG_LINES`] lines a minute, then a count of the rest.
fn log_stderr(stderr: std::process::ChildStderr, label: &str, last: &Mutex<VecDeque<String>>) {
    let mut window = Instant::now();
    let (mut logged, mut suppressed) = (0usize, 0usize);
    let mut reader = BufReader::new(stderr);
    loop {
        // a line is read 4 KiB at most: a child writing without newlines cannot grow this buffer
        let mut raw = Vec::new();
        match (&mut reader).take(4096).read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw).trim().chars().take(400).collect::<String>();
        if line.is_empty() {
            continue;
        }
        if window.elapsed() >= LOG_WINDOW {
            if suppressed > 0 {
                tracing::warn!(source = %label, suppressed, "child's stderr lines not logged in the last minute");
            }
            (window, logged, suppressed) = (Instant::now(), 0, 0);
        }
        if logged < LOG_LINES {
            tracing::warn!(source = %label, "child: {line}");
            logged += 1;
        } else {
            suppressed += 1;
        }
        let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == LAST_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, format: StreamFormat, stall: Duration) -> CommandSpec {
        CommandSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            format,
            stall,
            label: "test".into(),
        }
    }

    const RAW: StreamFormat =
        StreamFormat::Rawvideo { width: 2, height: 2, pix_fmt: super::super::stream::PixelFormat::Rgb24 };

    #[test]
    fn raw_frames_from_a_program_then_its_exit_is_an_error_with_its_last_words() {
        // three 2x2 RGB frames (12 bytes each), a line on stderr, then exit 3
        let spec = sh("head -c 36 /dev/zero; echo 'bad news' >&2; exit 3", RAW, Duration::from_secs(5));
        let mut s = CommandSource::open(&spec).unwrap();
        let cancel = CancellationToken::new();
        for _ in 0..3 {
            let f = s.next_frame(&cancel).unwrap().unwrap();
            assert_eq!(f.image.dimensions(), (2, 2));
        }
        let err = s.next_frame(&cancel).unwrap_err().to_string();
        assert!(err.contains("exit status: 3") && err.contains("bad news"), "{err}");
    }

    #[test]
    fn a_program_that_goes_quiet_is_stalled_and_killed() {
        let spec = sh("head -c 12 /dev/zero; exec sleep 30", RAW, Duration::from_millis(400));
        let mut s = CommandSource::open(&spec).unwrap();
        let cancel = CancellationToken::new();
        assert!(s.next_frame(&cancel).unwrap().is_some());
        let started = Instant::now();
        let err = s.next_frame(&cancel).unwrap_err().to_string();
        assert!(err.contains("no frame for 0.4 s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let pid = s.child.id();
        drop(s);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the child outlived its source");
    }

    #[test]
    fn a_truncated_frame_and_a_missing_program_are_errors() {
        let spec = sh("head -c 20 /dev/zero", RAW, Duration::from_secs(5));
        let mut s = CommandSource::open(&spec).unwrap();
        let cancel = CancellationToken::new();
        assert!(s.next_frame(&cancel).unwrap().is_some());
        let err = s.next_frame(&cancel).unwrap_err().to_string();
        assert!(err.contains("ended inside a frame (8 of 12 bytes)"), "{err}");
        let missing = CommandSpec { program: "no-such-program-here".into(), ..spec };
        assert!(missing.probe().unwrap_err().to_string().contains("not found on PATH"));
        match CommandSource::open(&missing) {
            Err(_) => {}
            // under an emulator (qemu-user) a failed exec can look like a child that exits at once
            Ok(mut s) => assert!(s.next_frame(&cancel).is_err()),
        }
    }

    #[test]
    fn cancel_ends_the_source_and_the_child() {
        let spec = sh("exec sleep 30", RAW, Duration::from_secs(60));
        let mut s = CommandSource::open(&spec).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(s.next_frame(&cancel).unwrap().is_none());
    }
}
