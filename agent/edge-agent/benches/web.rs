//! What an open status page costs the pipelines, measured in one run: the agent (in this
//! process, with an in-process broker) runs BlazeFace int8 as fast as it can over a bundled
//! photo, with `[web]` on; phases alternate between no page and an open page (the live stream
//! read as a browser reads it, and every announced frame fetched as a JPEG, one at a time).
//! Per phase: frames per second and the pipeline's own inference p50/p95; then the medians
//! of closed and open phases and their ratio, and the page's weight.
//! `cargo bench --bench web` (`EDGE_BENCH_PHASE_SECS`, default 20; `EDGE_BENCH_PHASES`, default 6)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One GET; the body.
fn get(port: u16, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |e| e + 4);
    raw.split_off(end)
}

/// frames_done, p50, p95 of the pipeline now.
fn stats(port: u16) -> (u64, f64, f64) {
    let v: serde_json::Value = serde_json::from_slice(&get(port, "/api/status")).expect("status JSON");
    let p = &v["health"]["pipelines"]["faces"];
    let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
    (p["frames_done"].as_u64().unwrap_or(0), f("inference_ms_p50"), f("inference_ms_p95"))
}

/// A page: reads the live stream and fetches each announced frame, until `stop`.
fn page(port: u16, stop: Arc<AtomicBool>, fetched: Arc<AtomicU64>, bytes: Arc<AtomicU64>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    write!(s, "GET /api/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").expect("request");
    let mut lines = BufReader::new(s);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        if lines.read_line(&mut line).is_err() {
            continue;
        }
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(data) else { continue };
        if msg["type"] == "frame" {
            let jpeg = get(port, &format!("/api/pipelines/faces/latest.jpg?seq={}", msg["seq"]));
            fetched.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(jpeg.len() as u64, Ordering::Relaxed);
        }
    }
}

fn main() {
    let phase = Duration::from_secs(env_or("EDGE_BENCH_PHASE_SECS", 20));
    let phases = env_or("EDGE_BENCH_PHASES", 6) as usize;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let broker = edge_broker::free_port().expect("port");
    edge_broker::start(broker).expect("broker");
    let web = edge_broker::free_port().expect("port");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "[agent]\ndevice_id = \"webbench\"\nstate_dir = \"{}\"\n[mqtt]\nport = {broker}\n\
         [web]\nlisten = \"127.0.0.1:{web}\"\n\
         [pipelines.faces]\nsource = {{ type = \"images\", path = \"{}\", loop = true }}\n\
         stages = [{{ type = \"detect\", model = \"blazeface\", precision = \"int8\" }}]\n\
         sinks = [{{ type = \"mqtt\", skip_empty = true }}]\n",
        dir.path().join("state").display(),
        root.join("tests/fixtures/images/grace_hopper.jpg").display()
    );
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, cfg).expect("config");
    let config = edge_agent::app::load_config(&path, Some(&root.join("models"))).expect("config");
    let rt = edge_agent::app::runtime().expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = std::thread::spawn(move || {
        rt.block_on(edge_agent::app::serve(config, async {
            stop_rx.await.ok();
        }))
    });
    // the model loads and warms up
    let started = Instant::now();
    while stats_or_none(web).is_none_or(|s| s.0 < 20) {
        assert!(started.elapsed() < Duration::from_secs(120), "the agent did not start");
        std::thread::sleep(Duration::from_millis(200));
    }

    println!("phase  page    frames/s  inference p50 ms  p95 ms  JPEGs fetched  kB per JPEG");
    let (mut closed, mut open) = (Vec::new(), Vec::new());
    for i in 0..phases {
        let is_open = i % 2 == 1;
        let stop = Arc::new(AtomicBool::new(false));
        let (fetched, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let reader = is_open.then(|| {
            let (s, f, b) = (stop.clone(), fetched.clone(), bytes.clone());
            std::thread::spawn(move || page(web, s, f, b))
        });
        // a second for the page to connect before the phase is timed
        std::thread::sleep(Duration::from_secs(1));
        let (f0, t0) = (stats(web).0, Instant::now());
        std::thread::sleep(phase);
        let ((f1, p50, p95), t1) = (stats(web), Instant::now());
        stop.store(true, Ordering::Relaxed);
        if let Some(r) = reader {
            r.join().expect("page thread");
        }
        let fps = (f1 - f0) as f64 / (t1 - t0).as_secs_f64();
        let n = fetched.load(Ordering::Relaxed);
        let kb = if n > 0 { bytes.load(Ordering::Relaxed) as f64 / n as f64 / 1024.0 } else { f64::NAN };
        let label = if is_open { "open" } else { "closed" };
        println!("{i:>5}  {label:<6}  {fps:>8.2}  {p50:>16.1}  {p95:>6.1}  {n:>13}  {kb:>11.1}");
        if is_open { &mut open } else { &mut closed }.push((fps, p50));
        // the grace period after a page's last request ends before the next closed phase
        std::thread::sleep(Duration::from_secs(if is_open { 11 } else { 0 }));
    }
    let m = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    let (fc, fo) = (m(&closed, |x| x.0), m(&open, |x| x.0));
    let (pc, po) = (m(&closed, |x| x.1), m(&open, |x| x.1));
    println!("\nmedian  closed {fc:.2} frames/s, p50 {pc:.1} ms;  open {fo:.2} frames/s, p50 {po:.1} ms");
    println!("open / closed: frames/s {:.3}, inference p50 {:.3}", fo / fc, po / pc);
    let weight: Vec<(String, usize)> =
        ["/", "/page.js", "/page.css"].iter().map(|p| (p.to_string(), get(web, p).len())).collect();
    let total: usize = weight.iter().map(|w| w.1).sum();
    println!("page weight: {total} bytes ({weight:?})");
    stop_tx.send(()).ok();
    agent.join().expect("agent thread").expect("agent");
}

fn stats_or_none(port: u16) -> Option<(u64, f64, f64)> {
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(stats(port))
}
