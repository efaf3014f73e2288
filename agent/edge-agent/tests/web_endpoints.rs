//! The web endpoints behind the page, as scripts and attackers meet them: a bearer token is
//! required when configured; `/metrics` parses with a Prometheus parser and carries the
//! agent's figures; `/api/status`, `/api/events` and the latest frame (a real JPEG of the
//! photo, the same size) answer; unknown paths are 404; oversized and slow requests are cut
//! off; connections beyond the bound are closed at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::http::{get, send};
use common::{fixture, wait_port_within};

const TOKEN: &str = "0123456789abcdef-test-token";

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

fn start(dir: &std::path::Path) -> (common::Broker, common::Running, u16) {
    let broker = common::rumqttd();
    let web = edge_broker::free_port().unwrap();
    let credentials = dir.join("web-token");
    std::fs::write(&credentials, format!("{TOKEN}\n")).unwrap();
    let cfg = format!(
        "[agent]\ndevice_id = \"endpoints\"\nstats_interval_secs = 1\nstate_dir = \"{}\"\n\
         [mqtt]\nport = {}\n[web]\nlisten = \"127.0.0.1:{web}\"\nauth = \"bearer\"\ncredentials_file = \"{}\"\n\
         [pipelines.faces]\nsource = {{ type = \"images\", path = \"{}\", fps = 4, loop = true }}\n\
         stages = [{{ type = \"detect\", model = \"blazeface\" }}]\n",
        dir.join("state").display(),
        broker.port,
        credentials.display(),
        fixture("grace_hopper.jpg").display()
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, cfg).unwrap();
    let agent = common::Running::agent(&path);
    wait_port_within(web, Duration::from_secs(180));
    (broker, agent, web)
}

/// Waits until `f` gives a value, at most a minute.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn endpoints_need_the_token_serve_real_data_and_bound_what_clients_can_do() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, _agent, port) = start(dir.path());
    let a = auth();
    let with = [a.as_str()];

    // auth: nothing without the token, a challenge that names the scheme
    for path in ["/", "/api/status", "/metrics", "/api/pipelines/faces/latest.jpg", "/nope"] {
        let r = get(port, path, &[]);
        assert_eq!(r.status, 401, "{path} without a token");
        assert!(r.headers["www-authenticate"].starts_with("Bearer"), "{:?}", r.headers);
        assert_eq!(get(port, path, &["Authorization: Bearer wrong-token-of-some-length"]).status, 401);
    }
    let page = get(port, "/", &with);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<script src=\"page.js\">"));
    assert!(page.headers["content-security-policy"].contains("default-src 'none'"));
    assert_eq!(get(port, "/page.js", &with).status, 200);

    // 404s
    assert_eq!(get(port, "/nope", &with).status, 404);
    assert_eq!(get(port, "/api/pipelines/nope/latest.jpg", &with).status, 404);
    // read-only: nothing but GET (and HEAD) is routed
    let post = send(
        port,
        format!("POST /api/status HTTP/1.1\r\nHost: x\r\n{a}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(post.unwrap().status, 405);

    // /metrics through a Prometheus text parser, with the pipeline's figures
    let done = eventually("frames through BlazeFace in /metrics", || {
        let r = get(port, "/metrics", &with);
        assert_eq!(r.status, 200);
        let text = r.text();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == "edge_agent_frames_done_total" && s.labels.get("pipeline") == Some("faces"))?;
        let v = match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{other:?}"),
        };
        (v >= 2.0).then_some((text, scrape))
    });
    let (text, scrape) = done;
    assert!(text.contains("# TYPE edge_agent_frames_done counter"), "{text}");
    for name in [
        "edge_agent_uptime_seconds",
        "edge_agent_broker_connected",
        "edge_agent_inference_ms_p50",
        "edge_agent_outbox_messages",
    ] {
        assert!(scrape.samples.iter().any(|s| s.metric == name), "{name} missing:\n{text}");
    }

    // status and events
    let status = get(port, "/api/status", &with).json();
    assert_eq!(status["schema"], "edge-agent.page-status.v1");
    assert!(status["health"]["pipelines"]["faces"]["frames_done"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(status["pipelines"]["faces"]["last_result"]["detections"][0]["label"], "face", "{status}");
    let events = eventually("listed events", || {
        let e = get(port, "/api/events?limit=2", &with).json();
        (!e.as_array().unwrap().is_empty()).then_some(e)
    });
    assert!(events.as_array().unwrap().len() <= 2);
    assert_eq!(events[0]["type"], "event");
    assert_eq!(events[0]["data"]["pipeline"], "faces");

    // the latest frame: kept once asked for, a JPEG of the photo's size, with its result
    let jpeg = eventually("a frame", || {
        let r = get(port, "/api/pipelines/faces/latest.jpg", &with);
        if r.status == 503 {
            assert_eq!(r.headers["retry-after"], "1");
            return None;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        Some(r)
    });
    assert_eq!(jpeg.headers["content-type"], "image/jpeg");
    let seq: u64 = jpeg.headers["x-frame-seq"].parse().unwrap();
    let image = image::load_from_memory_with_format(&jpeg.body, image::ImageFormat::Jpeg).unwrap();
    let photo = image::open(fixture("grace_hopper.jpg")).unwrap();
    assert_eq!((image.width(), image.height()), (photo.width(), photo.height()));
    let latest = get(port, &format!("/api/pipelines/faces/latest?seq={seq}"), &with).json();
    assert_eq!(latest["seq"], seq);
    assert_eq!(latest["result"]["detections"][0]["label"], "face", "{latest}");

    // an oversized request head is refused, not served
    let big = format!("GET /api/status HTTP/1.1\r\nHost: x\r\n{a}\r\nX-Pad: {}\r\n\r\n", "a".repeat(32 << 10));
    match send(port, big.as_bytes()) {
        Ok(r) => assert_eq!(r.status, 431, "{}", r.text()),
        Err(e) => eprintln!("oversized request: connection closed ({e})"),
    }

    // a request head that never ends is cut off
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    slow.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).ok();
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(15), "a slow request held a connection {waited:?}");
    assert!(!String::from_utf8_lossy(&rest).contains(" 200 "), "a slow request was served");
    println!("slow request cut after {waited:?}");

    // connections beyond the bound are closed at once; freed ones are reusable
    let held: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    match send(port, format!("GET /api/status HTTP/1.1\r\nHost: x\r\n{a}\r\nConnection: close\r\n\r\n").as_bytes()) {
        Ok(r) => panic!("a 17th connection was served: {}", r.status),
        Err(e) => println!("17th connection refused: {e}"),
    }
    drop(held);
    let again = eventually("a connection after the others closed", || {
        send(port, format!("GET /api/status HTTP/1.1\r\nHost: x\r\n{a}\r\nConnection: close\r\n\r\n").as_bytes()).ok()
    });
    assert_eq!(again.status, 200);
}

#[test]
fn a_bad_credentials_file_stops_the_agent_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[agent]\ndevice_id = \"badauth\"\nstate_dir = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\nauth = \"basic\"\n\
         credentials_file = \"{}\"\n[pipelines.p]\nsource = {{ type = \"images\", path = \"{}\" }}\n\
         stages = [{{ type = \"detect\", model = \"blazeface\" }}]\n",
        dir.path().join("state").display(),
        dir.path().join("missing").display(),
        fixture("grace_hopper.jpg").display()
    );
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = common::agent();
    cmd.arg("run").arg("--config").arg(&path);
    let (status, _, stderr) = common::run_with_timeout(cmd, Duration::from_secs(120));
    assert!(!status.success());
    assert!(stderr.contains("web.credentials_file") && stderr.contains("missing"), "{stderr}");

    // and the checks name the field when auth has no file
    std::fs::write(&path, "[web]\nlisten = \"127.0.0.1:0\"\nauth = \"bearer\"\nframe_fps = 0\n").unwrap();
    let mut cmd = common::agent();
    cmd.arg("validate").arg("--config").arg(&path);
    let (status, _, stderr) = common::run_with_timeout(cmd, Duration::from_secs(60));
    assert!(!status.success());
    assert!(stderr.contains("web.credentials_file") && stderr.contains("web.frame_fps"), "{stderr}");
}
