//! Helpers shared by the end-to-end tests: paths, brokers (in-process rumqttd, Debian's
//! mosquitto when installed) and an MQTT collector.
#![allow(dead_code, clippy::unwrap_used)]

pub mod blackhole;
pub mod browser;
pub mod http;
pub mod known;
pub mod speech;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

#[path = "../../../../tests/support.rs"]
mod support;
#[allow(unused_imports)]
pub use support::{fixture, fp32_references, models, root};

/// The agent binary as a command. Under `EDGE_AGENT_TEST_RUNNER` (e.g. `qemu-aarch64 -cpu
/// cortex-a76`, set by CI for the ARM test run) the binary is started through it, since an
/// ARM test binary cannot exec an ARM child without binfmt support on the host.
pub fn agent() -> Command {
    let bin = env!("CARGO_BIN_EXE_edge-agent");
    let runner = std::env::var("EDGE_AGENT_TEST_RUNNER").unwrap_or_default();
    let mut parts = runner.split_whitespace();
    let mut c = match parts.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(parts).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    // EDGE_TEST_LOG=info shows what the agents of a failing test were doing
    c.arg("--models-dir")
        .arg(models())
        .env("RUST_LOG", std::env::var("EDGE_TEST_LOG").unwrap_or_else(|_| "warn".into()));
    c
}

/// A broker on a free loopback port; the process (mosquitto) is killed on drop.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// rumqttd inside the test process.
pub fn rumqttd() -> Broker {
    let port = edge_broker::free_port().unwrap();
    edge_broker::start(port).unwrap();
    Broker { port, child: None, _dir: None }
}

pub fn mosquitto_path() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// Debian's mosquitto on a free loopback port, or None when it is not installed.
pub fn mosquitto() -> Option<Broker> {
    Mosquitto::start_with(None).map(Mosquitto::into_broker)
}

/// A mosquitto that tests can kill and start again on the same port, with persistence (saved
/// every second) so that durable subscriptions survive a `kill -9`, and optional extra config
/// lines (TLS listener, password file, ACL).
pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra: String,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start_with(extra: Option<&str>) -> Option<Mosquitto> {
        mosquitto_path()?;
        let mut m = Mosquitto {
            port: edge_broker::free_port().unwrap(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.unwrap_or("allow_anonymous true").to_string(),
            child: None,
        };
        m.start();
        Some(m)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        // started as root, mosquitto drops to its own user, which must be able to write its
        // database here: without this it logged "Permission denied" at every save, durable
        // sessions did not survive a kill, and the tests that kill it passed only when the
        // subscriber won the race to reconnect
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\npersistence true\npersistence_location {}/\nautosave_interval 1\n{}\n",
                self.port,
                self.dir.path().display(),
                self.extra
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new(mosquitto_path().unwrap())
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_port(self.port);
    }

    /// SIGKILL: no clean shutdown, no last words.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn into_broker(mut self) -> Broker {
        Broker {
            port: self.port,
            child: self.child.take(),
            _dir: Some(std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())),
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn wait_port(port: u16) {
    wait_port_within(port, Duration::from_secs(10));
}

/// Waits until something listens on `port` (an agent's web server opens once its models are
/// loaded: seconds on a busy machine).
pub fn wait_port_within(port: u16, limit: Duration) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < limit, "nothing listens on {port} after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("{}: not JSON: {e}", self.topic))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).to_string()
    }
}

/// Subscribes to `filter` and forwards every publish; returns once the subscription is acked.
pub fn subscribe(port: u16, client_id: &str, filter: &str) -> mpsc::Receiver<Message> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    subscribe_with(opts, filter)
}

/// A durable subscriber: a persistent session (clean_session off) at QoS 1, so the broker
/// queues what arrives while it is away, and it resubscribes after every reconnect.
pub fn subscribe_durable(port: u16, client_id: &str, filter: &str) -> mpsc::Receiver<Message> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    opts.set_clean_session(false);
    subscribe_with(opts, filter)
}

pub fn subscribe_with(opts: MqttOptions, filter: &str) -> mpsc::Receiver<Message> {
    let filter = filter.to_string();
    let (client, mut conn) = Client::new(opts, 64);
    let (tx, rx) = mpsc::channel();
    let (ack_tx, ack_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _client = client; // keep the client (and so the connection) alive
        for event in conn.iter() {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if _client.try_subscribe(filter.clone(), QoS::AtLeastOnce).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    ack_tx.send(()).ok();
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let m = Message { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain };
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    ack_rx.recv_timeout(Duration::from_secs(10)).expect("subscription acked");
    rx
}

/// Collects messages until `done` says so or `timeout` passes.
pub fn collect_until(
    rx: &mpsc::Receiver<Message>,
    timeout: Duration,
    mut done: impl FnMut(&Message) -> bool,
) -> Vec<Message> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(m) => {
                let stop = done(&m);
                out.push(m);
                if stop {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Runs a child to completion within `timeout`, returning (status, stdout, stderr). Both pipes
/// are read while the child runs: a child that prints more than a pipe holds (64 KiB) would
/// otherwise block on its next write and never end.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            pipe.read_to_end(&mut buf).ok();
            String::from_utf8_lossy(&buf).to_string()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            panic!("timed out; stderr:\n{}", stderr.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

pub fn iou(a: &[f64], b: &[f64]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let i = w * h;
    let area = |x: &[f64]| (x[2] - x[0]) * (x[3] - x[1]);
    i / (area(a) + area(b) - i)
}

/// The (label, score, box) list of a detections JSON object.
pub fn detections(v: &serde_json::Value) -> Vec<(String, f64, Vec<f64>)> {
    v["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["label"].as_str().unwrap().to_string(),
                d["score"].as_f64().unwrap(),
                d["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(),
            )
        })
        .collect()
}

/// Where [`config`] puts the state folder: [`write_config`] (or a test writing the config
/// into its own temporary folder, through [`with_state`]) puts it beside the config file, so
/// it goes when the test's folder does.
pub const STATE_DIR: &str = "{STATE_DIR}";

/// An agent config: one images pipeline per `(name, model, precision)` over the fixture
/// photos (`source_extra` adds source keys), a fresh state folder ([`STATE_DIR`]), and the
/// broker on `port`.
pub fn config(port: u16, device: &str, pipelines: &[(&str, &str, &str)], source_extra: &str) -> String {
    let images = root().join("tests/fixtures/images");
    let mut s = format!(
        "[agent]\ndevice_id = \"{device}\"\nstats_interval_secs = 0.5\nshutdown_timeout_secs = 15\n\
         state_dir = \"{STATE_DIR}\"\n\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nmax_backoff_secs = 1\n\n"
    );
    for (name, model, precision) in pipelines {
        s += &format!(
            "[pipelines.{name}]\nsource = {{ type = \"images\", path = \"{}\"{source_extra} }}\n\
             stages = [{{ type = \"detect\", model = \"{model}\", precision = \"{precision}\" }}]\n\n",
            images.display()
        );
    }
    s
}

/// Publishes one message (QoS 1) and waits for the broker's ack.
pub fn publish(port: u16, topic: &str, payload: &[u8]) {
    let mut opts = MqttOptions::new(format!("pub-{}", std::process::id()), "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 8);
    client.publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).unwrap();
    for event in conn.iter() {
        if let Ok(Event::Incoming(Packet::PubAck(_))) = event {
            break;
        }
        event.unwrap();
    }
    client.disconnect().ok();
}

/// A spawned agent that is killed if the test fails before it ends it.
pub struct Running(pub Child);

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        Running(cmd.spawn().unwrap())
    }

    /// `edge-agent run --config <path>`.
    pub fn agent(config: &Path) -> Running {
        let mut c = agent();
        c.arg("run").arg("--config").arg(config);
        Running::spawn(c)
    }
}

/// Runs the agent on `config` to its end (finite sources), with a subscriber to everything of
/// `device` started before it; returns what was published up to the agent's `offline`.
pub fn run_to_end(port: u16, device: &str, config: &Path) -> Vec<Message> {
    let rx = subscribe(port, &format!("watch-{device}"), &format!("edge-agent/{device}/#"));
    let mut cmd = agent();
    cmd.arg("run").arg("--config").arg(config);
    let (status, _, stderr) = run_with_timeout(cmd, Duration::from_secs(600));
    assert!(status.success(), "agent failed: {stderr}");
    collect_until(&rx, Duration::from_secs(20), |m| m.topic.ends_with("/status") && m.payload == b"offline")
}

/// Writes a config into a fresh folder; keep the folder alive while the agent runs.
pub fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, with_state(text, dir.path())).unwrap();
    (dir, path)
}

/// `text` with its [`STATE_DIR`] placeholder (if any) made `dir/state`.
pub fn with_state(text: &str, dir: &Path) -> String {
    text.replace(STATE_DIR, &dir.join("state").display().to_string())
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
}

/// Sends SIGTERM and waits (at most 30 s) for the process to exit.
pub fn sigterm(child: &mut Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
