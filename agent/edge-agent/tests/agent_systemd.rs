//! The systemd notify protocol, for real: the agent is started with `NOTIFY_SOCKET` pointing
//! at a datagram socket this test owns. READY=1 after start-up, WATCHDOG=1 keep-alives while
//! the pipelines make progress, none while a pipeline is stalled, STOPPING=1 on SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Running, agent, fixture};

fn listen(dir: &std::path::Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    (sock, path)
}

/// Datagrams received within `window`.
fn receive(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut out = vec![];
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    out
}

fn wait_for(sock: &UnixDatagram, what: &str, within: Duration) -> Vec<String> {
    let end = Instant::now() + within;
    let mut seen = vec![];
    while Instant::now() < end {
        let got = receive(sock, Duration::from_millis(200));
        let done = got.iter().any(|m| m.contains(what));
        seen.extend(got);
        if done {
            return seen;
        }
    }
    panic!("no {what} within {within:?}; got {seen:?}");
}

fn start(dir: &std::path::Path, socket: &std::path::Path, pipeline: &str) -> Running {
    let broker = edge_broker::free_port().unwrap();
    edge_broker::start(broker).unwrap();
    let cfg = format!(
        "[agent]\ndevice_id = \"sd\"\nstate_dir = \"{}\"\n[mqtt]\nport = {broker}\n{pipeline}",
        dir.join("state").display()
    );
    std::fs::write(dir.join("agent.toml"), cfg).unwrap();
    let mut c = agent();
    c.arg("run").arg("--config").arg(dir.join("agent.toml"));
    c.env("NOTIFY_SOCKET", socket).env("WATCHDOG_USEC", "400000");
    Running::spawn(c)
}

#[test]
fn ready_keepalives_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = listen(dir.path());
    let pipeline = format!(
        "[pipelines.cam]\nsource = {{ type = \"images\", path = \"{}\", fps = 5, loop = true }}\n\
         stages = [{{ type = \"detect\", model = \"blazeface\" }}]\n",
        fixture("chelsea.jpg").display()
    );
    let mut child = start(dir.path(), &path, &pipeline);
    let first = wait_for(&sock, "READY=1", Duration::from_secs(120));
    assert!(first.iter().any(|m| m.contains("STATUS=running 1 pipeline(s)")), "{first:?}");
    let pings = receive(&sock, Duration::from_secs(3)).iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 8, "a healthy agent pings every 200 ms: {pings} in 3 s");
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    wait_for(&sock, "STOPPING=1", Duration::from_secs(10));
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_stalled_pipeline_gets_no_keepalives() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = listen(dir.path());
    // a frame that takes seconds: 4000x4000 cut into an 8x8 grid, fp32
    let big = dir.path().join("big.png");
    let photo = image::open(fixture("coffee.jpg")).unwrap().to_rgb8();
    image::imageops::resize(&photo, 4000, 4000, image::imageops::FilterType::Nearest).save(&big).unwrap();
    let pipeline = format!(
        "[pipelines.slow]\nsource = {{ type = \"images\", path = \"{}\", fps = 5, loop = true }}\n\
         stages = [{{ type = \"detect\", model = \"nanodet\", precision = \"fp32\", tiling = {{ grid = {{ cols = 8, rows = 8, overlap = 0.1 }} }} }}]\n",
        big.display()
    );
    let _child = start(dir.path(), &path, &pipeline);
    wait_for(&sock, "READY=1", Duration::from_secs(120));
    // frames are now waiting on inference; on a busy machine the first one may come late
    std::thread::sleep(Duration::from_millis(1500));
    // the keep-alives sent before the stall was seen are still queued on the socket
    receive(&sock, Duration::from_millis(50));
    let pings = receive(&sock, Duration::from_secs(2)).iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings <= 1, "a stalled pipeline must not be kept alive: {pings} pings in 2 s");
}

#[test]
fn a_listening_audio_pipeline_keeps_the_watchdog_fed_through_silence_and_speech() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = listen(dir.path());
    // real-time audio: silence, a sentence (transcribed meanwhile), silence; no result for seconds
    let wav = common::root().join("tests/fixtures/audio/silence-speech-silence.wav");
    let pipeline = format!(
        "[pipelines.mic]\nsource = {{ type = \"wav\", path = \"{}\", realtime = true, loop = true }}\n\
         stages = [{{ type = \"vad\" }}, {{ type = \"transcribe\" }}]\n",
        wav.display()
    );
    let _child = start(dir.path(), &path, &pipeline);
    wait_for(&sock, "READY=1", Duration::from_secs(120));
    let pings = receive(&sock, Duration::from_secs(6)).iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 20, "listening is progress, silent or not: {pings} pings in 6 s");
}
